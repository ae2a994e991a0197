//! Start-up: reading the queue back, putting the sessions of pending events right, and
//! handing their runs to dispatch.
//!
//! Start-up rewrites no queue record: each recovered job points at its record where it
//! is, so a crash at any point of it leaves the queue as it was, and a full disk does
//! not stop the daemon from starting (it answers 503 until there is room). It reads the
//! queue, which holds pending work, and only the session files of pending events, so it
//! does not grow with the number of sessions.

use super::dedup::Deliveries;
use super::record::{self, Location, Record, RecordRef};
use super::session_file::{append_session, interruption};
use super::writer::Writer;
use super::{Event, Home, Job, Recovery, StoreError, io_err};
use crate::session::{self, Line, Role, RunStatus, encode_json};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use tokio::sync::mpsc as tokio_mpsc;

/// Reads the queue, puts the sessions of pending events right, and sends their jobs to
/// `jobs`, each pointing at its record where it is; returns the writer, ready to run.
pub(super) fn recover(
    home: &Home,
    jobs: tokio_mpsc::UnboundedSender<Vec<Job>>,
) -> Result<(Writer, Recovery), StoreError> {
    let queue = home.queue();
    let mut read = read_queue(&queue).map_err(io_err(&queue))?;
    let deliveries = Deliveries::load(home, &read.accepted)?;
    let mut writer = Writer::new(home, &read.segments, deliveries, jobs);

    let mut recovery = Recovery::default();
    let mut jobs = Vec::new();
    let mut completed = Vec::new();
    let mut sessions = HashMap::new();
    for (event, location, rerun) in read.pending() {
        match repair(home, &event, rerun, &mut sessions) {
            None => completed.push(event.id),
            Some(materialized) => {
                writer.add_live(location.seq, 1);
                jobs.push(event.job(location, materialized));
            }
        }
    }
    recovery.pending = jobs.len();
    recovery.completed = completed.len();
    recovery.done = read.done.drain().chain(completed.iter().cloned()).collect();
    // The first write makes the new segment. The `done` marks are for events whose
    // results are in their sessions already; without them the next start would only
    // find that out again.
    let mut records = Vec::new();
    for id in &completed {
        encode_json(&mut records, &RecordRef::Done(id));
    }
    if let Err(e) = writer.write_queue(&records) {
        tracing::error!(error = %e, "cannot write the queue; webhooks get 503 until it can be written");
    }
    writer.dispatch(jobs);
    writer.maintain_segments();
    Ok((writer, recovery))
}

/// Puts a pending event's session right after a crash: a run cut short gets an
/// `interrupted` record, and so does a result that may not be on disk; a result whose
/// message was lost gets its message back. Returns `None` when the session holds the
/// run's final result (only the `done` mark was lost), else whether it shows the
/// message. `sessions` caches what each file read
/// says of its events, so a session with many pending events is read and scanned
/// once, not once per event. A session that cannot be read, or a record that cannot
/// be written, is only logged: the event runs again either way (at least once), and
/// lowkey stays up to answer senders.
fn repair(
    home: &Home,
    event: &Event,
    rerun: bool,
    sessions: &mut HashMap<String, HashMap<String, Marks>>,
) -> Option<bool> {
    if !sessions.contains_key(&event.session) {
        let path = home.session_file(&event.session);
        let lines = match session::read(&path) {
            Ok(lines) => lines,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::error!(session_id = %event.session, error = %e, "cannot read a session to recover its events; they run again");
                Vec::new()
            }
        };
        let mut marks: HashMap<String, Marks> = HashMap::new();
        for line in lines {
            match line {
                Line::Message(m) if m.role == Role::User => {
                    marks.entry(m.event).or_default().message = true
                }
                Line::Run(r) => marks.entry(r.event).or_default().saw(r.status),
                _ => {}
            }
        }
        sessions.insert(event.session.clone(), marks);
    }
    let marks = sessions[&event.session]
        .get(&event.id)
        .copied()
        .unwrap_or_default();
    let trusted = marks.trusted_final(rerun);
    let line = if trusted {
        // After a power cut, the run's result can be on disk while its message,
        // written before it and never synced on its own, is not: the session gets
        // the message back from the queue record.
        (!marks.message).then(|| event.message())
    } else {
        interruption(event, marks.last)
    };
    if let Some(line) = line {
        if let Err(e) = append_session(home, &event.header(), &session::encode(&[line])) {
            tracing::warn!(session_id = %event.session, event_id = %event.id, error = %e, "cannot put the recovered event's session right");
        }
    }
    (!trusted).then_some(marks.message)
}

/// What a session file says of one of its events.
#[derive(Debug, Clone, Copy, Default)]
struct Marks {
    /// Its user message is there.
    message: bool,
    /// The status of its last run record.
    last: Option<RunStatus>,
    /// A final run record came after an `interrupted` one: the run that followed an
    /// interruption (or a result that may not be on disk) got as far as its end.
    final_after_interruption: bool,
}

impl Marks {
    fn saw(&mut self, status: RunStatus) {
        self.last = Some(status);
        match status {
            RunStatus::Interrupted => self.final_after_interruption = false,
            s if s.is_final() => self.final_after_interruption = true,
            _ => {}
        }
    }

    /// Whether the session shows the event's run as ended for good. For an event whose
    /// result once failed to sync (`rerun`), only a final record after the note that
    /// it runs again counts: the one before it may have been read back from memory.
    fn trusted_final(&self, rerun: bool) -> bool {
        self.last.is_some_and(RunStatus::is_final) && (!rerun || self.final_after_interruption)
    }
}

/// What the queue folder holds.
struct QueueContents {
    /// Segment files, oldest first.
    segments: Vec<(u64, PathBuf)>,
    /// Every `accepted` record, once per event, in acceptance order, with where it is.
    accepted: Vec<(Event, Location)>,
    /// Every event marked done.
    done: HashSet<String>,
    /// Every event whose result did not reach the disk.
    rerun: HashSet<String>,
}

impl QueueContents {
    /// Takes the accepted events not marked done, in acceptance order, with where each
    /// is and whether its result once failed to sync.
    fn pending(&mut self) -> impl Iterator<Item = (Event, Location, bool)> + '_ {
        let (done, rerun) = (&self.done, &self.rerun);
        self.accepted
            .drain(..)
            .filter(|(e, _)| !done.contains(&e.id))
            .map(|(e, location)| {
                let again = rerun.contains(&e.id);
                (e, location, again)
            })
    }
}

fn read_queue(queue: &Path) -> io::Result<QueueContents> {
    let mut segments: Vec<(u64, PathBuf)> = fs::read_dir(queue)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            let seq = path
                .file_name()?
                .to_str()?
                .strip_suffix(".wal")?
                .parse()
                .ok()?;
            Some((seq, path))
        })
        .collect();
    segments.sort();
    let mut contents = QueueContents {
        segments: Vec::new(),
        accepted: Vec::new(),
        done: HashSet::new(),
        rerun: HashSet::new(),
    };
    let mut ids = HashSet::new();
    for (seq, path) in segments.drain(..) {
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            // Deleted by the daemon while another process reads the queue.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for (start, record) in record::records(&bytes) {
            match serde_json::from_slice::<Record>(record) {
                // An event is run once even if its record is in the queue twice (a copy
                // left by an older lowkey's start-up compaction cut short by a crash).
                Ok(Record::Accepted(event)) if ids.insert(event.id.clone()) => {
                    let location = Location {
                        seq,
                        offset: start as u64,
                        len: record.len(),
                    };
                    contents.accepted.push((*event, location));
                }
                Ok(Record::Accepted(_)) => {}
                Ok(Record::Done(id)) => {
                    contents.done.insert(id);
                }
                Ok(Record::Rerun(id)) => {
                    contents.rerun.insert(id);
                }
                Err(_) => {}
            }
        }
        contents.segments.push((seq, path));
    }
    Ok(contents)
}

/// Accepted events whose runs have not finished, in acceptance order, read from the
/// queue while the daemon may be writing it (for `lowkey sessions`).
pub fn queued(home: &Home) -> io::Result<Vec<Event>> {
    let mut contents = match read_queue(&home.queue()) {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(contents.pending().map(|(event, _, _)| event).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::segment::segment_path;
    use crate::store::testing::{empty_home, event};

    #[test]
    fn an_event_recorded_twice_in_the_queue_is_pending_once() {
        let (_dir, home) = empty_home();
        let event = event("01EVENT");
        // What a crash between writing a copy and deleting the original leaves.
        let mut record = Vec::new();
        encode_json(&mut record, &RecordRef::Accepted(&event));
        for seq in [1, 2] {
            fs::write(segment_path(&home.queue(), seq), &record).unwrap();
        }
        assert_eq!(queued(&home).unwrap(), vec![event.clone()]);
        let (jobs, mut pending) = tokio_mpsc::unbounded_channel();
        let (_writer, recovery) = recover(&home, jobs).unwrap();
        assert_eq!(recovery.pending, 1);
        let jobs = pending.try_recv().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].event, event.id);
        assert_eq!(jobs[0].location.seq, 1, "the first copy runs");
    }
}
