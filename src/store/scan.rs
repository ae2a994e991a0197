//! Reading waiting events back from the queue, for dispatch's window (`window.rs`).
//!
//! Dispatch holds only a bounded window of waiting runs; the rest stay in the queue, and
//! each is read back once, when the window has room for it (`Refill`). A read goes
//! through the segments in order, a piece at a time, so it costs a buffer and the
//! events it keeps, whatever the size of the queue; and it parses each `accepted`
//! record only as far as `record::Head`, keeping what the window decides on (id,
//! session, agent, fresh) and checking the body without copying it.

use super::record::{self, Head, Location, Records};
use super::segment::segment_path;
use super::{Job, Passed, StoreError, io_err};
use crate::window::{Position, Refill, Waiting};
use std::fs::File;
use std::io;
use std::path::Path;

/// A record found, before the read decides to keep it.
struct Found<'a> {
    head: Head<'a>,
    location: Location,
}

impl Waiting for Found<'_> {
    fn position(&self) -> Position {
        self.location.start()
    }

    fn end(&self) -> Position {
        self.location.end()
    }

    fn session(&self) -> &str {
        &self.head.session
    }

    fn agent(&self) -> &str {
        &self.head.agent
    }

    fn fresh(&self) -> bool {
        self.head.fresh
    }
}

/// The events `refill` wants, in queue order, from `refill.from` up to `refill.to`, and
/// at most `refill.limit` of them; with where the read stopped: the end of the last
/// event when it found `limit`, else `refill.to`. The records in `passed` are passed
/// over. A segment that is gone was finished and deleted: nothing in it waits.
pub(super) fn scan(
    queue: &Path,
    refill: &Refill,
    passed: &Passed,
) -> Result<(Vec<Job>, Position), StoreError> {
    let mut jobs = Vec::new();
    for seq in refill.from.seq..=refill.to.seq {
        let path = segment_path(queue, seq);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&path)(e)),
        };
        let start = if seq == refill.from.seq {
            refill.from.offset
        } else {
            0
        };
        // A record that starts before `to` ends at `to` at the latest, newline included.
        let stop = if seq == refill.to.seq {
            refill.to.offset + 1
        } else {
            u64::MAX
        };
        let mut records = Records::open(file, start, stop).map_err(io_err(&path))?;
        while let Some((offset, bytes)) = records.next().map_err(io_err(&path))? {
            let location = Location {
                seq,
                offset,
                len: bytes.len(),
            };
            if location.start() >= refill.to {
                break;
            }
            let Some(head) = record::head(bytes) else {
                continue;
            };
            let found = Found { head, location };
            if !refill.wants(&found) || passed.holds(&found.head.id, location.start()) {
                continue;
            }
            jobs.push(Job {
                event: found.head.id.into_owned(),
                session: found.head.session.into_owned(),
                agent: found.head.agent.into_owned(),
                fresh: found.head.fresh,
                location,
            });
            if jobs.len() == refill.limit {
                return Ok((jobs, location.end()));
            }
        }
    }
    Ok((jobs, refill.to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::encode_json;
    use crate::store::Event;
    use crate::store::record::RecordRef;
    use crate::store::recovery::recover;
    use crate::store::sessions;
    use crate::store::testing::{empty_home, event};
    use crate::store::writer::Command;
    use crate::window::Cursor;
    use std::fs;
    use tokio::sync::oneshot;

    /// Events of sessions `a` and `b` (agent `bot`) and `fresh` ones of agents `bot`
    /// and `other`, mixed.
    fn events() -> Vec<Event> {
        (0..24)
            .map(|n| {
                let mut e = event(&format!("E{n:02}"));
                e.body = "x".repeat(n * 700);
                match n % 4 {
                    0 => e.session = "a".into(),
                    1 => e.session = "b".into(),
                    k => {
                        e.session = format!("fresh-{n}");
                        e.fresh = true;
                        e.agent = if k == 2 { "bot" } else { "other" }.into();
                    }
                }
                e
            })
            .collect()
    }

    /// Files the events through the writer in batches of five, with a `done` mark for
    /// every seventh; returns the jobs the writer handed to dispatch, in order.
    fn filed(home: &crate::store::Home) -> Vec<Job> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (mut writer, _) = recover(home, tx, &Default::default()).unwrap();
        for batch in events().chunks(5) {
            let mut commands: Vec<Command> = batch
                .iter()
                .map(|e| Command::Ingest(Box::new(e.clone()), oneshot::channel().0))
                .collect();
            commands.extend(
                batch
                    .iter()
                    .filter(|e| e.id.ends_with('7'))
                    .map(|e| Command::Done(e.id.clone(), 1, oneshot::channel().0)),
            );
            writer.process(commands);
        }
        let jobs = handed(&rx);
        assert_eq!(jobs.len(), 24);
        jobs
    }

    /// The jobs handed to the session writer so far, in order.
    fn handed(rx: &std::sync::mpsc::Receiver<sessions::Command>) -> Vec<Job> {
        let mut jobs = Vec::new();
        while let Ok(command) = rx.try_recv() {
            if let sessions::Command::File(accepted) = command {
                jobs.extend(accepted.into_iter().map(|a| a.job));
            }
        }
        jobs
    }

    fn read(home: &crate::store::Home, refill: &Refill, done: &[&str]) -> (Vec<Job>, Position) {
        let passed = Passed {
            done: done.iter().map(|id| id.to_string()).collect(),
            ..Passed::default()
        };
        scan(&home.queue(), refill, &passed).unwrap()
    }

    fn refill(cursor: Cursor, from: Position, to: Position, limit: usize) -> Refill {
        Refill {
            cursor,
            from,
            to,
            limit,
        }
    }

    #[test]
    fn a_read_finds_the_jobs_the_writer_handed_on() {
        let (_dir, home) = empty_home();
        let jobs = filed(&home);
        let end = jobs.last().unwrap().end();
        let all = refill(Cursor::Global, Position::default(), end, usize::MAX);
        assert_eq!(read(&home, &all, &[]), (jobs.clone(), end));
        // Done before this start: passed over.
        let (found, _) = read(&home, &all, &["E03", "E17"]);
        let kept: Vec<&Job> = jobs
            .iter()
            .filter(|j| j.event != "E03" && j.event != "E17")
            .collect();
        assert_eq!(found.iter().collect::<Vec<_>>(), kept);
    }

    #[test]
    fn a_read_stops_at_its_limit_and_at_its_bounds() {
        let (_dir, home) = empty_home();
        let jobs = filed(&home);
        let end = jobs.last().unwrap().end();
        // The limit: it stops after the last event it takes.
        let first = refill(Cursor::Global, Position::default(), end, 7);
        assert_eq!(
            read(&home, &first, &[]),
            (jobs[..7].to_vec(), jobs[6].end())
        );
        // From there (a record's end) to a record's start: the ones between.
        let middle = refill(Cursor::Global, jobs[6].end(), jobs[15].position(), 100);
        assert_eq!(
            read(&home, &middle, &[]),
            (jobs[7..15].to_vec(), jobs[15].position())
        );
        // From a record's start, taking it.
        let from = refill(Cursor::Global, jobs[15].position(), end, 100);
        assert_eq!(read(&home, &from, &[]).0, jobs[15..].to_vec());
    }

    #[test]
    fn a_read_for_a_cursor_finds_only_its_events() {
        let (_dir, home) = empty_home();
        let jobs = filed(&home);
        let end = jobs.last().unwrap().end();
        let of = |f: &dyn Fn(&Job) -> bool| jobs.iter().filter(|j| f(j)).cloned().collect();
        let session = refill(Cursor::Session("b".into()), Position::default(), end, 100);
        let expected: Vec<Job> = of(&|j| j.session == "b");
        assert_eq!(expected.len(), 6);
        assert_eq!(read(&home, &session, &[]), (expected, end));
        // An agent's cursor is for its fresh events only: `bot` has session `a` too.
        let agent = refill(Cursor::Agent("bot".into()), Position::default(), end, 2);
        let expected: Vec<Job> = of(&|j| j.fresh && j.agent == "bot");
        assert_eq!(
            read(&home, &agent, &[]),
            (expected[..2].to_vec(), expected[1].end())
        );
    }

    #[test]
    fn a_read_finds_the_records_recovery_counts() {
        let (_dir, home) = empty_home();
        let record = |id: &str| {
            let mut bytes = Vec::new();
            encode_json(&mut bytes, &RecordRef::Accepted(&event(id)));
            bytes
        };
        let queue = home.queue();
        // Segment 1: records, the zeros between batches, and a segment's end in zeros.
        let mut one = record("A");
        one.resize(4096, 0);
        one.extend(record("B"));
        one.resize(3 * 4096, 0);
        fs::write(segment_path(&queue, 1), &one).unwrap();
        // Segment 2 was finished and deleted. Segment 3: a torn record (the zeros a
        // power cut left in it) with a whole one after it on the same line, which
        // recovery refuses as one; then a record without its newline at the end.
        let mut three = record("C");
        three.extend(&record("torn")[..20]);
        three.extend([0; 100]);
        three.extend(record("D"));
        three.extend(record("E").strip_suffix(b"\n").unwrap());
        fs::write(segment_path(&queue, 3), &three).unwrap();

        let (tx, _rx) = std::sync::mpsc::channel();
        let (_, recovery) = recover(&home, tx, &Default::default()).unwrap();
        assert_eq!(recovery.pending, 4, "recovery counts A, B, C and E");
        let end = Position {
            seq: 3,
            offset: three.len() as u64,
        };
        let all = refill(Cursor::Global, Position::default(), end, 100);
        let (found, stopped) = read(&home, &all, &[]);
        let ids: Vec<&str> = found.iter().map(|j| j.event.as_str()).collect();
        assert_eq!((ids, stopped), (vec!["A", "B", "C", "E"], end));
    }
}
