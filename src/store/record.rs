//! The queue's records: one JSON object a line, as written and as read back.
//!
//! A segment holds batches of records, each batch starting on a fresh page (see
//! `Writer::write_queue`), so zeros may stand between records.

use super::Event;
use crate::session::encode_json;
use crate::window::Position;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
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

/// Whether a record is an `accepted` one (the marks never start so).
pub(super) fn is_accepted(record: &[u8]) -> bool {
    record.starts_with(br#"{"accepted":"#)
}

/// An `accepted` record's event, only as far as start-up and the readers of waiting
/// events need it. It parses exactly when the whole `Event` would: every field is
/// checked, but the body, the project and the time are not kept, and the strings that
/// are borrow from the record where they can.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Head<'a> {
    #[serde(borrow)]
    pub(super) id: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) session: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) source: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) agent: Cow<'a, str>,
    #[serde(rename = "project")]
    _project: Text,
    #[serde(rename = "at")]
    _at: Text,
    #[serde(rename = "body")]
    _body: Text,
    #[serde(rename = "message", default)]
    _message: Option<Text>,
    #[serde(rename = "messageTrimmed", default)]
    _message_trimmed: bool,
    #[serde(borrow, default)]
    pub(super) delivery: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) dedup_until: Option<u64>,
    #[serde(default)]
    pub(super) fresh: bool,
    #[serde(rename = "rerunOf", default)]
    _rerun_of: Option<Text>,
}

/// `Head` of an `accepted` record; `None` for a mark, or a record that does not parse
/// (torn, never acknowledged).
pub(super) fn head(record: &[u8]) -> Option<Head<'_>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    enum Accepted<'a> {
        #[serde(borrow)]
        Accepted(Head<'a>),
    }
    if !is_accepted(record) {
        return None;
    }
    match serde_json::from_slice(record) {
        Ok(Accepted::Accepted(head)) => Some(head),
        Err(_) => None,
    }
}

/// A JSON string, checked and not kept: passed over as any value is (its escapes
/// checked, not decoded), then seen to be a string.
struct Text;

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        let raw = <&serde_json::value::RawValue>::deserialize(d)?;
        if raw.get().starts_with('"') {
            Ok(Text)
        } else {
            Err(serde::de::Error::custom("expected a string"))
        }
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

    /// `head` takes exactly the records the whole `Event` parser takes, whatever
    /// field is damaged: a record one reader counts is never one another refuses.
    #[test]
    fn a_head_parses_exactly_when_the_event_does() {
        let events = [
            event("01PLAIN"),
            Event {
                fresh: true,
                body: r#"{"id":"x","dedupUntil":1,"fresh":true}"#.into(),
                message: Some("Stripe: \"x\"".into()),
                message_trimmed: true,
                rerun_of: Some("01PLAIN".into()),
                ..delivered("01ALL", "evt_\"1", 7)
            },
        ];
        for e in &events {
            let mut record = Vec::new();
            encode_json(&mut record, &RecordRef::Accepted(e));
            let record = record.strip_suffix(b"\n").unwrap();
            let h = head(record).unwrap();
            assert_eq!(
                (&*h.id, &*h.session, &*h.agent),
                (&*e.id, &*e.session, &*e.agent)
            );
            assert_eq!(
                (h.delivery.as_deref(), h.dedup_until),
                (e.delivery.as_deref(), e.dedup_until)
            );
            assert_eq!(h.fresh, e.fresh);
            let text = std::str::from_utf8(record).unwrap();
            let damaged = [
                text.replace(r#""body":"#, r#""body":1,"x":"#),
                text.replace(r#""project":"/""#, r#""project":null"#),
                text.replace(r#""message":"#, r#""message":2,"y":"#),
                text.replace(r#""messageTrimmed":true"#, r#""messageTrimmed":"yes""#),
                text.replace(r#","at":"#, r#","at":["#),
                text.replace(r#""session":"s","#, ""),
                text.replacen('}', "", 1),
                text[..text.len() / 2].to_owned(),
                text.replace(r#""source":"hook""#, r#""source":"hook","source":"x""#),
                text.replace(r#""rerunOf":"01PLAIN""#, r#""rerunOf":7"#),
                text.replace(r#","at":"#, r#","rerunOf":{},"at":"#),
            ];
            for bad in damaged {
                let whole = serde_json::from_str::<Record>(&bad).is_ok();
                assert_eq!(head(bad.as_bytes()).is_some(), whole, "{bad}");
            }
        }
        let mut done = Vec::new();
        encode_json(&mut done, &RecordRef::Done("01PLAIN"));
        assert!(head(&done).is_none());
    }
}
