//! Durable dedup: the delivery ids seen recently, so that a sender's retry of a
//! delivery already accepted is answered as a duplicate instead of running again.
//!
//! An id is durable in its event's `accepted` record as soon as the batch is synced;
//! it is also appended to `deliveries.jsonl`, which is synced before any queue segment
//! holding ids is deleted, so ids outlive their segments and survive restarts.

use super::record::Head;
use super::{Event, Home, Ingested, StoreError, io_err, sync_dir};
use crate::session::{self, encode_json};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

/// A remembered delivery, one line of `deliveries.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Seen {
    source: String,
    id: String,
    session: String,
    event: String,
    until: u64,
}

impl Seen {
    /// The delivery an `accepted` record holds, when it has a delivery id to remember.
    pub(super) fn of(head: &Head) -> Option<Seen> {
        Some(Seen {
            source: head.source.clone().into_owned(),
            id: head.delivery.clone()?.into_owned(),
            session: head.session.clone().into_owned(),
            event: head.id.clone().into_owned(),
            until: head.dedup_until?,
        })
    }

    /// The event's delivery `id`, remembered until `until`.
    fn new(event: &Event, id: &str, until: u64) -> Seen {
        Seen {
            source: event.source.clone(),
            id: id.to_owned(),
            session: event.session.clone(),
            event: event.id.clone(),
            until,
        }
    }

    fn key(&self) -> String {
        delivery_key(&self.source, &self.id)
    }
}

fn delivery_key(source: &str, id: &str) -> String {
    format!("{source}\0{id}")
}

/// What the remembered deliveries say of an event about to be accepted.
pub(super) enum Claim {
    /// It carries no delivery id.
    Untracked,
    /// Its delivery id is new, or forgotten: it is claimed now, under this key.
    New(String),
    /// It repeats a delivery claimed before, under this key; the answer names the
    /// first delivery's session and event.
    Duplicate(String, Ingested),
}

/// The remembered deliveries and the file they are appended to. Only the writer thread
/// holds them, so checking and claiming an id is one step.
pub(super) struct Deliveries {
    /// Remembered deliveries by `source\0id`.
    seen: HashMap<String, Seen>,
    file: File,
    /// The deliveries file lacks ids that only the queue holds (its rewrite at start-up
    /// failed): no segment is deleted until a rewrite works.
    stale: bool,
    /// Lines in the deliveries file; it is rewritten when mostly expired.
    lines: usize,
}

impl Deliveries {
    /// Reads the deliveries file, adds the deliveries of the `accepted` records read from
    /// the queue (`queued`), drops the expired ones and rewrites the file with the rest.
    pub(super) fn load(home: &Home, queued: Vec<Seen>) -> Result<Deliveries, StoreError> {
        let now = session::unix_now();
        let mut seen: HashMap<String, Seen> = HashMap::new();
        if let Ok(bytes) = fs::read(home.deliveries()) {
            for raw in bytes.split(|b| *b == b'\n') {
                if let Ok(one) = serde_json::from_slice::<Seen>(raw) {
                    seen.insert(one.key(), one);
                }
            }
        }
        // The queue records are the durable copy of deliveries the deliveries file may
        // not have reached before a crash.
        for one in queued {
            seen.insert(one.key(), one);
        }
        seen.retain(|_, one| one.until > now);
        let (file, stale) = match write_deliveries(home, &seen) {
            Ok(file) => (file, false),
            // Appended to as it is until it can be rewritten; the queue segments hold the
            // ids it lacks until then.
            Err(e) => {
                tracing::warn!(error = %e, "cannot rewrite the deliveries file; appending to it as it is");
                let path = home.deliveries();
                let file = OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(io_err(&path))?;
                (file, true)
            }
        };
        Ok(Deliveries {
            lines: seen.len(),
            seen,
            file,
            stale,
        })
    }

    /// Checks the event's delivery id and, unless it was seen before `now`'s window
    /// ran out, claims it: remembers it, and encodes its line for the deliveries file
    /// into `lines` (written with `append` once the batch is durable).
    pub(super) fn claim(&mut self, event: &Event, now: u64, lines: &mut Vec<u8>) -> Claim {
        let (Some(id), Some(until)) = (&event.delivery, event.dedup_until) else {
            return Claim::Untracked;
        };
        let key = delivery_key(&event.source, id);
        match self.seen.get(&key) {
            Some(first) if first.until > now => {
                let answer = Ingested::Duplicate {
                    session: first.session.clone(),
                    event: first.event.clone(),
                };
                Claim::Duplicate(key, answer)
            }
            _ => {
                let seen = Seen::new(event, id, until);
                encode_json(lines, &seen);
                self.seen.insert(key.clone(), seen);
                Claim::New(key)
            }
        }
    }

    /// Drops claims whose batch did not reach the disk.
    pub(super) fn forget<'a>(&mut self, keys: impl Iterator<Item = &'a String>) {
        for key in keys {
            self.seen.remove(key);
        }
    }

    /// Appends the lines of `count` claims now durable in the queue, without syncing:
    /// `make_durable` syncs them before a segment holding them goes.
    pub(super) fn append(&mut self, lines: &[u8], count: usize) {
        if let Err(e) = (&self.file).write_all(lines) {
            tracing::error!(error = %e, "cannot append to the deliveries file");
        }
        self.lines += count;
    }

    /// Makes every remembered id durable in the deliveries file, so that queue segments
    /// may be deleted; false when it cannot, and they must stay.
    pub(super) fn make_durable(&mut self, home: &Home) -> bool {
        // A segment holds the durable copy of its delivery ids until the deliveries
        // file has them on disk.
        if self.stale {
            match write_deliveries(home, &self.seen) {
                Ok(file) => {
                    self.file = file;
                    self.lines = self.seen.len();
                    self.stale = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot rewrite the deliveries file; keeping queue segments");
                    return false;
                }
            }
        }
        if let Err(e) = self.file.sync_data() {
            tracing::error!(error = %e, "cannot sync the deliveries file; keeping queue segments");
            return false;
        }
        true
    }

    /// Rewrites the deliveries file without expired ids once they are most of it.
    pub(super) fn maintain(&mut self, home: &Home) {
        if self.lines < 2 * self.seen.len() + 10_000 {
            return;
        }
        let now = session::unix_now();
        self.seen.retain(|_, seen| seen.until > now);
        match write_deliveries(home, &self.seen) {
            Ok(file) => {
                self.file = file;
                self.lines = self.seen.len();
            }
            Err(e) => tracing::error!(error = %e, "cannot compact the deliveries file"),
        }
    }
}

/// Writes the remembered deliveries to a fresh file, synced, and puts it in place
/// atomically; returns it open for appending.
fn write_deliveries(home: &Home, deliveries: &HashMap<String, Seen>) -> Result<File, StoreError> {
    let path = home.deliveries();
    let tmp = path.with_extension("jsonl.tmp");
    let mut bytes = Vec::new();
    for seen in deliveries.values() {
        encode_json(&mut bytes, seen);
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    (&file)
        .write_all(&bytes)
        .and_then(|()| file.sync_data())
        .map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(&home.root).map_err(io_err(&home.root))?;
    OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(io_err(&path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::RecordRef;
    use crate::store::segment::segment_path;
    use crate::store::testing::{delivered, empty_home, recover_quietly};
    use crate::store::writer::{Command, MAX_BATCH, Writer};
    use tokio::sync::oneshot;

    /// Ingests `events` as one batch and returns the answers, in order.
    fn ingest(writer: &mut Writer, events: Vec<Event>) -> Vec<Ingested> {
        let (batch, mut answers): (Vec<_>, Vec<_>) = events
            .into_iter()
            .map(|event| {
                let (reply, answer) = oneshot::channel();
                (Command::Ingest(Box::new(event), reply), answer)
            })
            .unzip();
        writer.process(batch);
        answers
            .iter_mut()
            .map(|answer| answer.try_recv().unwrap().unwrap())
            .collect()
    }

    fn deliveries_lines(home: &Home) -> usize {
        fs::read(home.deliveries())
            .unwrap()
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .count()
    }

    #[test]
    fn a_delivery_only_the_queue_holds_is_a_duplicate_after_a_restart() {
        let (_dir, home) = empty_home();
        let later = session::unix_now() + 3600;
        // What a crash right after the queue write leaves: the record is on disk, the
        // line of the deliveries file is not.
        let mut records = Vec::new();
        for (id, delivery) in [("01FIRST", "d-1"), ("01OTHER", "d-2")] {
            encode_json(
                &mut records,
                &RecordRef::Accepted(&delivered(id, delivery, later)),
            );
        }
        fs::write(segment_path(&home.queue(), 1), &records).unwrap();
        let (mut writer, _) = recover_quietly(&home).unwrap();
        assert_eq!(
            ingest(
                &mut writer,
                vec![
                    delivered("01RETRY", "d-1", later),
                    delivered("01NEW", "d-3", later)
                ]
            ),
            [
                Ingested::Duplicate {
                    session: "s".into(),
                    event: "01FIRST".into()
                },
                Ingested::Accepted
            ]
        );
    }

    #[test]
    fn a_delivery_id_is_forgotten_once_its_time_is_up() {
        let (_dir, home) = empty_home();
        let (mut writer, _) = recover_quietly(&home).unwrap();
        let past = session::unix_now() - 1;
        assert_eq!(
            ingest(&mut writer, vec![delivered("01FIRST", "d-1", past)]),
            [Ingested::Accepted]
        );
        // A retry after the window is a new delivery, and a retry of it within its own
        // window is its duplicate.
        let later = session::unix_now() + 3600;
        assert_eq!(
            ingest(
                &mut writer,
                vec![
                    delivered("01AGAIN", "d-1", later),
                    delivered("01RETRY", "d-1", later)
                ]
            ),
            [
                Ingested::Accepted,
                Ingested::Duplicate {
                    session: "s".into(),
                    event: "01AGAIN".into()
                }
            ]
        );
    }

    #[test]
    fn expired_delivery_ids_do_not_pile_up_in_the_deliveries_file() {
        let (_dir, home) = empty_home();
        let (mut writer, _) = recover_quietly(&home).unwrap();
        // Each batch claims the same ids again once they expire, one line each; the
        // file is rewritten once most of it is expired (10,000 lines and more).
        let past = session::unix_now() - 1;
        let mut written = 0;
        for batch in 0..12 {
            let events = (0..MAX_BATCH)
                .map(|n| delivered(&format!("01E{batch}-{n}"), &format!("d-{n}"), past))
                .collect();
            assert!(
                ingest(&mut writer, events)
                    .iter()
                    .all(|answer| *answer == Ingested::Accepted)
            );
            written += MAX_BATCH;
        }
        assert!(written > 2 * MAX_BATCH + 10_000);
        assert_eq!(
            deliveries_lines(&home),
            0,
            "every id in the file had expired"
        );
    }
}
