//! The queue's records: one JSON object a line, as written and as read back.
//!
//! A segment holds batches of records, each batch starting on a fresh page (see
//! `Writer::write_queue`), so zeros may stand between records.

use super::Event;
use crate::session::encode_json;
use crate::window::Position;
use serde::{Deserialize, Serialize};

/// Where an accepted record sits in the queue: its bytes, without the newline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Location {
    pub(super) seq: u64,
    pub(super) offset: u64,
    pub(super) len: usize,
}

impl Location {
    /// Where the record starts.
    pub(super) fn start(&self) -> Position {
        Position {
            seq: self.seq,
            offset: self.offset,
        }
    }

    /// Where the record's newline is: past the record, before the next one.
    pub(super) fn end(&self) -> Position {
        Position {
            seq: self.seq,
            offset: self.offset + self.len as u64,
        }
    }
}

/// A queue record as read back.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum Record {
    Accepted(Box<Event>),
    Done(String),
    /// The event's result could not be synced into its session: whatever final run
    /// record its session shows from before this mark may not be on disk, so the event
    /// runs again (see `Marks::trusted_final`).
    Rerun(String),
    /// The event's run is about to start: its session may hold run records, so start-up
    /// reads it back (see `recovery`).
    Started(String),
    /// Every event whose `accepted` record starts before this place has its message in
    /// its session file, synced (the session writer's watermark, `sessions.rs`). Start-up
    /// reads no session for an event before it unless the event has a `started` or
    /// `rerun` mark.
    Filed(Position),
}

/// A queue record as written: the same JSON as `Record`, without copying the event.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum RecordRef<'a> {
    Accepted(&'a Event),
    Done(&'a str),
    Rerun(&'a str),
    Started(&'a str),
    Filed(Position),
}

/// Encodes `accepted` records, with where each sits in the bytes (start, length without
/// the newline, as `records` gives it back).
pub(super) fn encode_accepted<'a>(
    events: impl Iterator<Item = &'a Event>,
) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut records = Vec::new();
    let mut spans = Vec::new();
    for event in events {
        let start = records.len();
        encode_json(&mut records, &RecordRef::Accepted(event));
        // `encode_json` ends each record with its newline.
        spans.push((start, records.len() - 1 - start));
    }
    (records, spans)
}

/// The records in a segment's bytes, unparsed, each with the offset it starts at.
///
/// Batches start on page boundaries, so zeros may stand between records, and a
/// segment made from a spare ends in zeros. A torn record was never acknowledged (its
/// batch's sync had not returned), so the reader skips what does not parse and loses
/// nothing.
pub(super) fn records(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut offset = 0;
    bytes.split(|b| *b == b'\n').map(move |raw| {
        let start = offset + raw.iter().take_while(|b| **b == 0).count();
        offset += raw.len() + 1;
        (start, &bytes[start..offset - 1])
    })
}
