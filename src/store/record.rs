//! The queue's records: one JSON object a line, as written and as read back.
//!
//! A segment holds batches of records, each batch starting on a fresh page (see
//! `Writer::write_queue`), so zeros may stand between records.

use super::Event;
use crate::session::encode_json;
use crate::window::Position;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};

/// How much of a segment is read at a time.
const READ_BYTES: usize = 64 * 1024;

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
/// the newline, as `Records` gives it back).
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

/// How every `accepted` record starts: `encode_json` writes an event's fields in the
/// order `Event` declares them, its id first.
const ACCEPTED_ID: &[u8] = br#"{"accepted":{"id":""#;

/// Whether a record is an `accepted` one, as lowkey writes them.
pub(super) fn is_accepted(record: &[u8]) -> bool {
    record.starts_with(br#"{"accepted":"#)
}

/// The event id of an `accepted` record as lowkey writes it, read from its start
/// without parsing the rest (the body); `None` for any other record, or an id with an
/// escape in it, which only a parser reads right.
pub(super) fn accepted_id(record: &[u8]) -> Option<&str> {
    let rest = record.strip_prefix(ACCEPTED_ID)?;
    let id = &rest[..rest.iter().position(|b| *b == b'"')?];
    if id.contains(&b'\\') {
        return None;
    }
    std::str::from_utf8(id).ok()
}

/// Whether an `accepted` record as lowkey writes it holds a delivery id to remember
/// (`dedupUntil`, which comes only with one), read from its end without parsing the
/// rest: the fields after the body are `delivery` (a string), `dedupUntil` (a number)
/// and `fresh` (only ever `true`), each left out when unset. `None` when the record
/// does not end that way: a parser decides.
pub(super) fn remembers_delivery(record: &[u8]) -> Option<bool> {
    let rest = record.strip_suffix(b"}}")?;
    let rest = rest.strip_suffix(br#","fresh":true"#).unwrap_or(rest);
    match rest.last()? {
        b'"' => Some(false),
        b'0'..=b'9' => Some(true),
        _ => None,
    }
}

/// A segment's records from a given offset, unparsed, each with the offset it starts
/// at; read a piece at a time, so a segment of any size costs one buffer and the
/// longest record.
///
/// Batches start on page boundaries, so zeros may stand between records, and a
/// segment made from a spare ends in zeros. A torn record was never acknowledged (its
/// batch's sync had not returned), so the reader skips it and loses nothing.
pub(super) struct Records {
    reader: BufReader<io::Take<File>>,
    /// The file offset `reader` is at.
    offset: u64,
    /// The record being read.
    line: Vec<u8>,
}

impl Records {
    /// The records from `start`, reading no further than `stop`.
    pub(super) fn open(mut file: File, start: u64, stop: u64) -> io::Result<Records> {
        file.seek(SeekFrom::Start(start))?;
        Ok(Records {
            reader: BufReader::with_capacity(READ_BYTES, file.take(stop.saturating_sub(start))),
            offset: start,
            line: Vec::new(),
        })
    }

    /// The next record and the offset it starts at, without its newline.
    ///
    /// Zeros stand between batches (and fill a spare to its end); they are skipped
    /// without being kept. A record never holds a zero byte (JSON escapes it), so one
    /// that meets a zero before its newline is torn: it is passed over up to its
    /// newline.
    pub(super) fn next(&mut self) -> io::Result<Option<(u64, &[u8])>> {
        loop {
            if !self.skip_zeros()? {
                return Ok(None);
            }
            let start = self.offset;
            self.line.clear();
            if self.take_until_newline(true)? {
                // Torn: drop the rest of it too.
                self.take_until_newline(false)?;
                continue;
            }
            return Ok(Some((start, &self.line)));
        }
    }

    /// Skips zeros; returns whether there is more to read.
    fn skip_zeros(&mut self) -> io::Result<bool> {
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok(false);
            }
            let zeros = buf.iter().take_while(|b| **b == 0).count();
            let more = zeros < buf.len();
            self.consume(zeros);
            if more {
                return Ok(true);
            }
        }
    }

    /// Reads up to the next newline (consumed, not kept) or the end, keeping the bytes
    /// when `keep`; stops early at a zero byte when keeping, and says so.
    fn take_until_newline(&mut self, keep: bool) -> io::Result<bool> {
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok(false);
            }
            let end = if keep {
                memchr::memchr2(b'\n', 0, buf)
            } else {
                memchr::memchr(b'\n', buf)
            };
            let n = end.unwrap_or(buf.len());
            if keep {
                self.line.extend_from_slice(&buf[..n]);
            }
            match end.map(|i| buf[i]) {
                None => self.consume(n),
                Some(b'\n') => {
                    self.consume(n + 1);
                    return Ok(false);
                }
                Some(_) => {
                    self.consume(n);
                    return Ok(true);
                }
            }
        }
    }

    fn consume(&mut self, n: usize) {
        self.reader.consume(n);
        self.offset += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{delivered, event};

    /// The id and the delivery are read from the ends of a record as `encode_json`
    /// writes it, whatever the body holds: a change to `Event`'s fields or their order
    /// that would mislead those readers fails here.
    #[test]
    fn an_accepted_record_is_read_from_its_ends_as_a_parser_reads_it() {
        let tricky = r#"{"id":"x","dedupUntil":1,"delivery":"d","fresh":true}"#;
        let events = [
            event("01PLAIN"),
            Event {
                body: tricky.into(),
                ..event("01TRICKY")
            },
            Event {
                fresh: true,
                body: tricky.into(),
                ..event("01FRESH")
            },
            delivered("01DELIVERED", "evt_1", 1_900_000_000),
            Event {
                fresh: true,
                ..delivered("01BOTH", "evt_2", 7)
            },
            // A delivery id with no time to remember it by is not remembered.
            Event {
                delivery: Some("evt_3".into()),
                ..event("01UNTIMED")
            },
        ];
        for e in &events {
            let mut record = Vec::new();
            encode_json(&mut record, &RecordRef::Accepted(e));
            let record = record.strip_suffix(b"\n").unwrap();
            assert!(is_accepted(record));
            assert_eq!(accepted_id(record), Some(e.id.as_str()));
            let remembers = e.delivery.is_some() && e.dedup_until.is_some();
            assert_eq!(remembers_delivery(record), Some(remembers), "{}", e.id);
        }
        let mut done = Vec::new();
        encode_json(&mut done, &RecordRef::Done("01PLAIN"));
        assert!(!is_accepted(&done));
        assert_eq!(accepted_id(&done), None);
        // An escaped id is left to the parser.
        assert_eq!(
            accepted_id(br#"{"accepted":{"id":"a\"b","session":"s"}}"#),
            None
        );
    }
}
