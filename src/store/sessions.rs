//! The session writer thread (`lowkey-sessions`): the only writer of session files
//! while lowkey runs.
//!
//! The queue writer hands it each batch of accepted events once the batch is durable and
//! answered. It appends each event's user message to its session (the lines of one
//! session in one write per batch, the file created 0600 with its header on first use),
//! and only then hands the events' jobs to dispatch, in queue order: dispatch never sees
//! an event whose message is not in its file, so a run's records always come after its
//! message. A run's records and its reply come here too (`Command::Append`), so the
//! lines of one session are never written by two threads and each stays whole.
//!
//! About once a second while there is work, it makes what it wrote durable with one
//! `syncfs`, then tells the queue writer the place in the queue before which every
//! message is filed and synced (its watermark). The queue writer records it as a
//! `filed` mark, and start-up reads no session file for the events before it, save those
//! whose run started. A failed sync is never trusted: the watermark stays, and what was
//! written since the last good sync is written again, at the same offsets, before the
//! next try.
//!
//! A message that cannot be written (a full disk) is logged and tried again after 1 s,
//! doubling up to 30 s; nothing written is written twice, and ingest goes on: the
//! queue holds the events, and what is kept here for them is bounded: bodies
//! (`BODY_BUDGET`; past that, an event's body is read back from the queue) and events
//! (`HELD_MAX`; past that, the queue writer only says where a batch is, and the events
//! are read back from the queue, `READ_BACK` at a time).
//!
//! At start-up it is handed the pending events after the last `filed` mark the same
//! way, to check: each round reads their sessions once, and writes only the messages
//! missing (see `Message::Check`).

use super::recovery::{self, Marks};
use super::session_file::{append_session, rewrite};
use super::{Event, Home, Job, Passed, StoreError, io_err, read_event, scan, sync_dir, writer};
use crate::session::{self, Header, Line};
use crate::window::{Cursor, Position, Refill};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

/// At most this many bytes of bodies wait in memory for the session writer; past it the
/// queue writer sends jobs alone, and their events are read back from the queue.
const BODY_BUDGET: usize = 8 * 1024 * 1024;
/// At most about this many events wait in memory for the session writer (when it falls
/// behind: a flood of `new_session` events makes a file each); past it the queue writer
/// hands it the rest as places in the queue to read back (`Command::OnDisk`).
pub(super) const HELD_MAX: usize = 4_096;
/// How many events one read back from the queue takes.
const READ_BACK: usize = 1024;
/// One round of filing writes the messages of at most about this many bytes, so the
/// lines made ready for it stay small in memory however far the writer is behind.
const ROUND_BYTES: usize = 1024 * 1024;
/// How long what was written may wait for its sync.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// Past this much written and not yet synced, the sync comes at once: it is kept in
/// memory until then, to be written again if the sync fails, so this bounds that
/// memory (at saturation, a sync every few hundred milliseconds).
const UNSYNCED_MAX: usize = 8 * 1024 * 1024;
/// How long a stop goes on filing messages before it leaves the rest to the next start.
const STOP_FILING: Duration = Duration::from_secs(2);
/// How long the writer waits after a failed write or sync, at first and at most.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

pub(super) type Reply = oneshot::Sender<Result<(), StoreError>>;

pub(super) enum Command {
    /// Accepted events, in queue order: their messages go into their sessions, then
    /// their jobs to dispatch.
    File(Vec<Accepted>),
    /// Accepted events left in the queue, read back when the writer comes to them.
    OnDisk(OnDisk),
    /// A run's lines, for its session; with `sync`, the file and the sessions folder are
    /// synced before the reply.
    Append {
        header: Header,
        lines: Vec<Line>,
        sync: bool,
        reply: Reply,
    },
}

/// Accepted events left in the queue, from `from` up to `to` (the `accepted` records of
/// one batch, or those after the `filed` watermark at start-up). With `check`
/// (start-up's), the reading passes over those records, and each event's session is
/// read first, as its message may be there already.
pub(super) struct OnDisk {
    pub(super) from: Position,
    pub(super) to: Position,
    pub(super) check: Option<Arc<Passed>>,
}

/// What waits for the session writer, in queue order.
enum Waiting {
    Held(Accepted),
    OnDisk(OnDisk),
}

/// An accepted event on its way to dispatch.
pub(super) struct Accepted {
    pub(super) job: Job,
    pub(super) message: Message,
}

/// What an accepted event's session still needs.
pub(super) enum Message {
    /// Its message line, from the event held here.
    Write(Box<Event>),
    /// Its message line, from the event read back from the queue (`BODY_BUDGET`).
    ReadBack,
    /// Its message line, read back from the queue, unless its session shows it
    /// already: it was after the `filed` watermark at start-up.
    Check,
}

/// The bytes of bodies, and the events, on their way to the session writer.
#[derive(Clone, Default)]
pub(super) struct Budget {
    bytes: Arc<AtomicUsize>,
    events: Arc<AtomicUsize>,
}

impl Budget {
    /// Whether `n` more events may be held for the session writer (`HELD_MAX`).
    pub(super) fn has_room(&self, n: usize) -> bool {
        self.events.load(Ordering::Acquire) + n <= HELD_MAX
    }

    /// `n` events are on their way to the session writer, or read back by it.
    pub(super) fn hold(&self, n: usize) {
        self.events.fetch_add(n, Ordering::AcqRel);
    }

    /// How an event goes to the session writer: with its body while the budget allows,
    /// else to be read back.
    pub(super) fn message(&self, event: Box<Event>) -> Message {
        let n = held_bytes(&event);
        let taken = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + n <= BODY_BUDGET).then_some(used + n)
            });
        match taken {
            Ok(_) => Message::Write(event),
            Err(_) => Message::ReadBack,
        }
    }

    /// An event held has gone on to dispatch.
    fn give_back(&self, message: &Message) {
        if let Message::Write(event) = message {
            self.bytes.fetch_sub(held_bytes(event), Ordering::AcqRel);
        }
        self.events.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What an event held for its message costs the budget: its body, and a message filled
/// from a template (cut, so small beside the body).
fn held_bytes(event: &Event) -> usize {
    event.body.len() + event.message.as_ref().map_or(0, String::len)
}

pub(super) struct SessionWriter {
    home: Home,
    /// The sessions folder, open for `syncfs` from the start, so that a write-back error
    /// from any time after it is reported to the next sync.
    dir: File,
    jobs: tokio_mpsc::UnboundedSender<Vec<Job>>,
    /// Where the watermark goes. Weak: the queue writer ends when the last `Store` is
    /// dropped, and then joins this thread.
    queue: tokio_mpsc::WeakUnboundedSender<writer::Command>,
    budget: Budget,
    /// Accepted events whose messages are not in their sessions yet, in queue order.
    waiting: VecDeque<Waiting>,
    /// What dispatch's reads of the queue pass over, once start-up has handed events
    /// to check: events found finished are added to it.
    passed: Option<Arc<Passed>>,
    /// The end of the last accepted event handed in.
    seen: Option<Position>,
    /// The watermark last told to the queue writer.
    filed: Option<Position>,
    /// What was written since the last good sync, per session: where it starts in the
    /// file and the bytes, to write again if the sync fails.
    unsynced: HashMap<String, (u64, Vec<u8>)>,
    unsynced_bytes: usize,
    /// When the first write since the last good sync was made.
    dirty_since: Option<Instant>,
    /// The last sync failed: nothing new is filed until a sync succeeds.
    sync_failed: bool,
    /// After a failed write or sync, when to try again; and the wait after that.
    retry_at: Option<Instant>,
    wait: Duration,
}

impl SessionWriter {
    pub(super) fn new(
        home: &Home,
        jobs: tokio_mpsc::UnboundedSender<Vec<Job>>,
        queue: tokio_mpsc::WeakUnboundedSender<writer::Command>,
        budget: Budget,
    ) -> Result<SessionWriter, StoreError> {
        let sessions = home.sessions();
        let dir = File::open(&sessions).map_err(io_err(&sessions))?;
        Ok(SessionWriter {
            home: home.clone(),
            dir,
            jobs,
            queue,
            budget,
            waiting: VecDeque::new(),
            passed: None,
            seen: None,
            filed: None,
            unsynced: HashMap::new(),
            unsynced_bytes: 0,
            dirty_since: None,
            sync_failed: false,
            retry_at: None,
            wait: RETRY_FIRST,
        })
    }

    /// Runs until every sender is gone; then tries once more to file what waits, syncs,
    /// and returns the last watermark, for the queue writer to record as it stops.
    pub(super) fn run(mut self, rx: mpsc::Receiver<Command>) -> Option<Position> {
        loop {
            let first = match self.deadline() {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            match first {
                Ok(cmd) => {
                    self.take(cmd);
                    while let Ok(cmd) = rx.try_recv() {
                        self.take(cmd);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.work();
        }
        // Stopping: one last try, without waiting out a backoff, and for a while only
        // (far behind, filing all could outlast systemd's stop timeout). What is still
        // not filed stays after the watermark, and the next start files it.
        self.retry_at = None;
        if self.sync_failed {
            self.sync();
        }
        if !self.sync_failed {
            let until = Instant::now() + STOP_FILING;
            while !self.waiting.is_empty() && self.retry_at.is_none() && Instant::now() < until {
                self.file();
            }
            self.sync();
        }
        self.filed
    }

    /// When to wake without a command: to try again after a failure, or to sync.
    fn deadline(&self) -> Option<Instant> {
        if self.retry_at.is_none() && !self.sync_failed && !self.waiting.is_empty() {
            // More than one round was waiting: the next one now, after any commands.
            return Some(Instant::now());
        }
        self.retry_at
            .or_else(|| self.dirty_since.map(|at| at + SYNC_EVERY))
    }

    fn take(&mut self, cmd: Command) {
        match cmd {
            Command::File(accepted) => {
                if let Some(last) = accepted.last() {
                    self.seen = Some(last.job.location.end());
                }
                self.waiting.extend(accepted.into_iter().map(Waiting::Held));
            }
            Command::OnDisk(span) => {
                self.seen = self.seen.max(Some(span.to));
                if span.check.is_some() {
                    self.passed.clone_from(&span.check);
                }
                // Two batches in a row, in one segment, read back as one: nothing but
                // their marks and the zeros between batches lies between them.
                match self.waiting.back_mut() {
                    Some(Waiting::OnDisk(last))
                        if last.check.is_none()
                            && span.check.is_none()
                            && last.to.seq == span.to.seq =>
                    {
                        last.to = span.to;
                    }
                    _ => self.waiting.push_back(Waiting::OnDisk(span)),
                }
            }
            Command::Append {
                header,
                lines,
                sync,
                reply,
            } => {
                let _ = reply.send(self.append(&header, &lines, sync));
            }
        }
    }

    /// Files what waits and syncs when it is time, unless a failure's backoff is on.
    fn work(&mut self) {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        self.retry_at = None;
        if self.sync_failed {
            self.sync();
            if self.sync_failed {
                return;
            }
        }
        self.file();
        let due = self
            .dirty_since
            .is_some_and(|at| at.elapsed() >= SYNC_EVERY);
        if due || self.unsynced_bytes >= UNSYNCED_MAX {
            self.sync();
        }
    }

    /// A run's lines, appended to its session; with `sync`, made durable.
    fn append(&mut self, header: &Header, lines: &[Line], sync: bool) -> Result<(), StoreError> {
        let appended = append_session(&self.home, header, &session::encode(lines))?;
        let file = appended.file;
        self.wrote(&header.id, appended.offset, appended.bytes);
        if sync {
            // Its own sync, not the next `syncfs`: the `done` mark waits for it.
            let path = self.home.session_file(&header.id);
            if self.sync_failed {
                // The failed `syncfs` may have dropped this session's message, which
                // the `done` mark would then keep start-up from ever putting back.
                if let Some((offset, bytes)) = self.unsynced.get(&header.id) {
                    rewrite(&self.home, &header.id, *offset, bytes).map_err(io_err(&path))?;
                }
            }
            file.sync_data().map_err(io_err(&path))?;
            // The file may be new: its name must be durable too.
            let dir = self.home.sessions();
            sync_dir(&dir).map_err(io_err(&dir))?;
        }
        Ok(())
    }

    /// Notes bytes written at `offset` of a session, for the next sync.
    fn wrote(&mut self, session: &str, offset: u64, bytes: Vec<u8>) {
        self.dirty_since.get_or_insert_with(Instant::now);
        self.unsynced_bytes += bytes.len();
        match self.unsynced.get_mut(session) {
            // Appends since the last sync follow each other.
            Some((_, written)) => written.extend_from_slice(&bytes),
            None => {
                self.unsynced.insert(session.to_owned(), (offset, bytes));
            }
        }
    }

    /// Writes the messages of the events waiting (a round of them, `ROUND_BYTES`), one
    /// write per session, then hands on the jobs of those whose messages are in, in
    /// queue order. A session that cannot be
    /// written keeps its events waiting, and everything is tried again after a backoff.
    fn file(&mut self) {
        if let Err(e) = self.read_back() {
            tracing::error!(
                error = %e,
                "cannot read accepted events back from the queue to file their messages; trying again in {}s",
                self.wait.as_secs()
            );
            self.back_off();
            return;
        }
        if self.waiting.is_empty() {
            return;
        }
        // Per session, in the order they first come: its header and lines.
        let mut order: Vec<String> = Vec::new();
        // The first session that could not be written (or whose event could not be read
        // back from the queue), and why.
        let mut failed = None;
        let mut groups: HashMap<String, Option<(Header, Vec<u8>)>> = HashMap::new();
        let shown = self.shown();
        // Events to check whose sessions show their runs' final results: only their
        // `done` marks were lost, and they do not run again.
        let mut done = HashSet::new();
        // How many of the events waiting this round takes, and the bytes of their lines.
        let (mut taken, mut round_bytes) = (0, 0);
        for waiting in &self.waiting {
            let Waiting::Held(accepted) = waiting else {
                break;
            };
            if round_bytes >= ROUND_BYTES || taken == READ_BACK {
                break;
            }
            taken += 1;
            // What the event's session shows of it; an event to check may have its
            // message there, and more (a queue from an older lowkey, without `started`
            // marks, may hold runs cut short or finished).
            let marks = match &accepted.message {
                Message::Check => shown.get(&accepted.job.event).copied().unwrap_or_default(),
                _ => Marks::default(),
            };
            if marks.message_only() {
                continue;
            }
            let event = match &accepted.message {
                Message::Write(event) => Ok(Cow::Borrowed(event.as_ref())),
                Message::ReadBack | Message::Check => {
                    read_event(&self.home, &accepted.job.location).map(Cow::Owned)
                }
            };
            let session = &accepted.job.session;
            if !groups.contains_key(session) {
                order.push(session.clone());
            }
            let group = groups.entry(session.clone()).or_insert_with(|| {
                event
                    .as_ref()
                    .ok()
                    .map(|event| (event.header(), Vec::new()))
            });
            match event {
                Ok(event) => {
                    let (lines, finished) = recovery::repair_lines(&event, false, marks);
                    if finished {
                        done.insert(accepted.job.event.clone());
                    }
                    if let Some((_, bytes)) = group {
                        let before = bytes.len();
                        for line in &lines {
                            session::encode_json(bytes, line);
                        }
                        round_bytes += bytes.len() - before;
                    }
                }
                Err(e) => {
                    failed.get_or_insert((session.clone(), e));
                    *group = None;
                }
            }
        }

        for session in order {
            let Some(Some((header, bytes))) = groups.get(&session) else {
                continue;
            };
            // Events to check whose sessions lacked nothing.
            if bytes.is_empty() {
                continue;
            }
            match append_session(&self.home, header, bytes) {
                Ok(appended) => self.wrote(&session, appended.offset, appended.bytes),
                Err(e) => {
                    failed.get_or_insert((session.clone(), e));
                    groups.insert(session, None);
                }
            }
        }

        let mut jobs = Vec::with_capacity(taken);
        let mut finished = Vec::new();
        let mut still = self.waiting.split_off(taken);
        for waiting in self.waiting.drain(..).rev() {
            // A round takes only events held (it stops at the first to read back).
            let Waiting::Held(accepted) = waiting else {
                still.push_front(waiting);
                continue;
            };
            if matches!(groups.get(&accepted.job.session), Some(None)) {
                still.push_front(Waiting::Held(accepted));
                continue;
            }
            self.budget.give_back(&accepted.message);
            if done.contains(&accepted.job.event) {
                finished.push(accepted.job);
            } else {
                jobs.push(accepted.job);
            }
        }
        jobs.reverse();
        self.waiting = still;
        // Before any job after them goes on, so dispatch never reads them back.
        for job in finished {
            self.mark_done(job);
        }
        // Events whose messages were found in place (`Message::Check`) may be in the page
        // cache only: the next sync covers them before the watermark passes them.
        self.dirty_since.get_or_insert_with(Instant::now);
        if !jobs.is_empty() {
            let _ = self.jobs.send(jobs);
        }
        if let Some((session, e)) = failed {
            tracing::error!(
                session_id = %session,
                error = %e,
                waiting = self.waiting.len(),
                "cannot write accepted events' messages into their sessions; trying again in {}s",
                self.wait.as_secs()
            );
            self.back_off();
        } else {
            self.wait = RETRY_FIRST;
        }
    }

    /// Where the watermark may go once what was written so far is synced: before the
    /// first event still waiting, or after the last one handed in.
    fn filed_upto(&self) -> Option<Position> {
        match self.waiting.front() {
            Some(Waiting::Held(accepted)) => Some(accepted.job.location.start()),
            Some(Waiting::OnDisk(span)) => Some(span.from),
            None => self.seen,
        }
    }

    /// Has the queue writer mark done an event whose session shows its run's final
    /// result (its `done` mark was lost in a crash), and dispatch's reads of the queue
    /// pass over it: it must not run again, also when it is read back from there.
    fn mark_done(&self, job: Job) {
        if let Some(passed) = &self.passed {
            passed.finish(&job.event);
        }
        tracing::info!(session_id = %job.session, event_id = %job.event, "the run finished before the last stop; marked done");
        if let Some(queue) = self.queue.upgrade() {
            let seq = job.location.seq;
            let _ = queue.send(writer::Command::Done(job.event, seq, oneshot::channel().0));
        }
    }

    /// What the sessions show of the events a round can take (`READ_BACK`) that
    /// start-up left to check: each session is read once.
    fn shown(&self) -> HashMap<String, Marks> {
        // Only start-up hands events to check (and leaves `passed` with them).
        if self.passed.is_none() {
            return HashMap::new();
        }
        let mut check: HashMap<&str, HashSet<&str>> = HashMap::new();
        for waiting in self.waiting.iter().take(READ_BACK) {
            match waiting {
                Waiting::Held(a) if matches!(a.message, Message::Check) => {
                    check
                        .entry(&a.job.session)
                        .or_default()
                        .insert(&a.job.event);
                }
                Waiting::Held(_) => {}
                Waiting::OnDisk(_) => break,
            }
        }
        check
            .iter()
            .flat_map(|(session, ids)| recovery::read_marks(&self.home, session, ids))
            .collect()
    }

    /// When the first events waiting are in the queue only, reads the next of them
    /// back (their ids, sessions and agents; each body is read when its message is
    /// written).
    fn read_back(&mut self) -> Result<(), StoreError> {
        let Some(Waiting::OnDisk(span)) = self.waiting.front() else {
            return Ok(());
        };
        let refill = Refill {
            cursor: Cursor::Global,
            from: span.from,
            to: span.to,
            limit: READ_BACK,
        };
        let check = span.check.clone();
        let none = Passed::default();
        let passed = check.as_deref().unwrap_or(&none);
        let (jobs, stopped) = scan::scan(&self.home.queue(), &refill, passed)?;
        match self.waiting.front_mut() {
            Some(Waiting::OnDisk(span)) if stopped < span.to => span.from = stopped,
            _ => {
                self.waiting.pop_front();
            }
        }
        self.budget.hold(jobs.len());
        for job in jobs.into_iter().rev() {
            let message = if check.is_some() {
                Message::Check
            } else {
                Message::ReadBack
            };
            self.waiting
                .push_front(Waiting::Held(Accepted { job, message }));
        }
        Ok(())
    }

    /// Makes what was written durable with one `syncfs` of the sessions' filesystem, then
    /// moves the watermark and tells the queue writer.
    ///
    /// Why `syncfs` rather than `fdatasync` per file and one of the folder: a batch can
    /// touch thousands of files (a `new_session` source makes one per event), and one
    /// call flushes them all, with their new names, letting the disk take the writes
    /// together, where a sync per file would cost a disk flush each, on this one thread
    /// that the session lines of every event wait for. Since Linux 5.8 `syncfs` reports
    /// a write-back error of any file of the filesystem since the folder was opened.
    /// It also syncs other files of the same filesystem: the queue bypasses the page
    /// cache, so lowkey's own share of that is small.
    ///
    /// After a failed sync, the kernel may have dropped the pages it could not write
    /// while readers still see them: everything written since the last good sync is
    /// written again at the same offsets (the same bytes, so a reader sees no change)
    /// before the next try, and the watermark stays where it was until one succeeds.
    fn sync(&mut self) {
        if self.dirty_since.is_none() && !self.sync_failed {
            return;
        }
        let upto = self.filed_upto();
        let result = if self.sync_failed {
            self.rewrite_unsynced()
        } else {
            Ok(())
        }
        .and_then(|()| {
            let dir = self.home.sessions();
            nix::unistd::syncfs(&self.dir).map_err(|e| io_err(&dir)(std::io::Error::from(e)))
        });
        match result {
            Ok(()) => {
                // Not `clear`, which would keep the room of the busiest second.
                self.unsynced = HashMap::new();
                self.unsynced_bytes = 0;
                self.dirty_since = None;
                self.sync_failed = false;
                if upto > self.filed {
                    self.filed = upto;
                    if let (Some(position), Some(queue)) = (upto, self.queue.upgrade()) {
                        let _ = queue.send(writer::Command::Filed(position));
                    }
                }
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "cannot sync the session files; what was written since the last sync is written again and synced in {}s",
                    self.wait.as_secs()
                );
                self.sync_failed = true;
                self.back_off();
            }
        }
    }

    fn rewrite_unsynced(&self) -> Result<(), StoreError> {
        for (session, (offset, bytes)) in &self.unsynced {
            rewrite(&self.home, session, *offset, bytes)
                .map_err(io_err(&self.home.session_file(session)))?;
        }
        Ok(())
    }

    fn back_off(&mut self) {
        self.retry_at = Some(Instant::now() + self.wait);
        self.wait = (self.wait * 2).min(RETRY_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::{Location, encode_accepted};
    use crate::store::segment::segment_path;
    use crate::store::testing::{empty_home, event};

    #[test]
    fn bodies_past_the_budget_are_left_to_be_read_back() {
        let budget = Budget::default();
        let big = || {
            Box::new(Event {
                body: "x".repeat(BODY_BUDGET / 2 + 1),
                ..event("01BIG")
            })
        };
        let first = budget.message(big());
        assert!(matches!(first, Message::Write(_)));
        assert!(matches!(budget.message(big()), Message::ReadBack));
        budget.hold(1);
        budget.give_back(&first);
        assert!(matches!(budget.message(big()), Message::Write(_)));
    }

    /// An event handed on without its body is read back from the queue; its job goes
    /// on only once its message is in its session, and the watermark passes it once
    /// that is synced.
    #[test]
    fn an_event_without_its_body_is_read_back_and_filed_before_its_job_goes_on() {
        let (_dir, home) = empty_home();
        let e = event("01E");
        let (bytes, spans) = encode_accepted([&e].into_iter());
        std::fs::write(segment_path(&home.queue(), 1), &bytes).unwrap();
        let location = Location {
            seq: 1,
            offset: 0,
            len: spans[0].1,
        };
        let (jobs_tx, mut jobs) = tokio_mpsc::unbounded_channel();
        let (queue_tx, mut queue) = tokio_mpsc::unbounded_channel();
        let writer =
            SessionWriter::new(&home, jobs_tx, queue_tx.downgrade(), Budget::default()).unwrap();
        let (tx, rx) = mpsc::channel();
        let accepted = Accepted {
            job: e.job(location),
            message: Message::ReadBack,
        };
        tx.send(Command::File(vec![accepted])).unwrap();
        let thread = std::thread::spawn(move || writer.run(rx));

        assert_eq!(jobs.blocking_recv().unwrap(), vec![e.job(location)]);
        let lines = session::read(&home.session_file(&e.session)).unwrap();
        assert_eq!(lines, [Line::Session(e.header()), e.message()]);
        drop(tx);
        assert_eq!(thread.join().unwrap(), Some(location.end()));
        assert!(
            matches!(queue.try_recv(), Ok(writer::Command::Filed(p)) if p == location.end()),
            "the queue writer is told the watermark"
        );
    }

    /// While the session writer is far behind, the queue writer tells it only where the
    /// events are; it reads them back and files each once, in queue order.
    #[test]
    fn events_past_the_held_limit_are_read_back_from_the_queue_in_order() {
        let (_dir, home) = empty_home();
        let budget = Budget::default();
        let (sessions_tx, sessions_rx) = mpsc::channel();
        let (mut queue_writer, _) =
            crate::store::recovery::recover(&home, sessions_tx, &budget).unwrap();
        // Room for three more: the first batch is held, the next two are left on disk.
        budget.hold(HELD_MAX - 3);
        let events: Vec<Event> = (0..7)
            .map(|n| Event {
                session: if n % 2 == 0 {
                    "even".into()
                } else {
                    format!("odd-{n}")
                },
                ..event(&format!("01E{n}"))
            })
            .collect();
        for batch in [&events[0..2], &events[2..4], &events[4..7]] {
            let ingests = batch
                .iter()
                .map(|e| writer::Command::Ingest(Box::new(e.clone()), oneshot::channel().0))
                .collect();
            queue_writer.process(ingests);
        }
        drop(queue_writer);
        let handed: Vec<Command> = sessions_rx.try_iter().collect();
        assert!(
            matches!(
                handed[..],
                [Command::File(_), Command::OnDisk(_), Command::OnDisk(_)]
            ),
            "one batch held, two left on disk"
        );

        let (jobs_tx, mut jobs_rx) = tokio_mpsc::unbounded_channel();
        let (queue_tx, _queue) = tokio_mpsc::unbounded_channel();
        let writer = SessionWriter::new(&home, jobs_tx, queue_tx.downgrade(), budget.clone());
        let (tx, rx) = mpsc::channel();
        for command in handed {
            tx.send(command).unwrap();
        }
        drop(tx);
        writer.unwrap().run(rx);
        let mut jobs = Vec::new();
        while let Ok(batch) = jobs_rx.try_recv() {
            jobs.extend(batch.into_iter().map(|j| j.event));
        }
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(jobs, ids);
        for e in &events {
            let lines = session::read(&home.session_file(&e.session)).unwrap();
            let mine = lines.iter().filter(|l| **l == e.message()).count();
            assert_eq!(mine, 1, "{} filed once", e.id);
        }
        assert!(budget.has_room(3), "every event held was given back");
    }
}
