//! Durable storage: the write-ahead queue and the session files.
//!
//! Two threads write, each the only writer of its files. The queue writer
//! (`writer.rs`, `lowkey-store`) owns the queue. Requests reach it over a channel and it
//! handles them in batches: everything waiting when it wakes shares one `fdatasync` of
//! the queue file (group commit), so durable ingest costs one fsync per batch, not one
//! per request. The session writer (`sessions.rs`, `lowkey-sessions`) owns the session
//! files: the queue writer hands it each batch of accepted events once answered, it
//! appends their messages to their sessions and only then hands their jobs to dispatch;
//! runs send it their records and replies.
//!
//! The queue (`$LOWKEY_HOME/queue/*.wal`) is the inbox and the source of truth for work
//! not yet done: an `accepted` record is written and synced before the sender gets its
//! 202, a `started` mark before a run's agent is spawned, and a `done` mark only after
//! the run's result is synced into the session file. The session writer syncs what it
//! wrote about once a second and tells the queue writer how far every message is filed,
//! which it records as a `filed` mark; start-up reads a session file only for pending
//! events that started a run (or whose result did not sync), and leaves those after the
//! last `filed` mark to the session writer to check, so it does not grow with the number
//! of sessions. Start-up holds no pending event, and dispatch a bounded window of jobs
//! (`Job` holds only the record's place in the queue); the rest wait in the queue and
//! are read back when there is room (`scan.rs`), so a long backlog stays small in
//! memory.
//!
//! The files, in the order a request meets them:
//!
//! - `mod.rs` (this file): the `Store` handle and what it trades in (`Event`, `Job`,
//!   `Ingested`, `StoreError`, `Recovery`).
//! - `home.rs`: `Home`, where each file lives under `$LOWKEY_HOME`.
//! - `writer.rs`: the writer thread; each batch is claimed, written and synced once,
//!   then answered.
//! - `dedup.rs`: the delivery ids seen recently (`deliveries.jsonl`), checked and
//!   claimed by the writer thread.
//! - `record.rs`: the queue's records, as written and as read back.
//! - `segment.rs`: the segment files, their page-aligned writes, and the zero-filled
//!   spares the next segment is made from.
//! - `sessions.rs`: the session writer thread; the `filed` watermark.
//! - `session_file.rs`: appends to session files.
//! - `scan.rs`: reading waiting events back from the queue, for dispatch's bounded
//!   window.
//! - `recovery.rs`: start-up, which reads the queue back, repairs the sessions of
//!   pending events and leaves their runs in the queue for dispatch (before the
//!   `filed` watermark) or the session writer (after it) to read back.
//!
//! The durability rules, in brief: a 2xx goes out only once its `accepted` record is
//! synced; a batch starts on a fresh page, so no write covers a record already
//! acknowledged; a failed batch is cut off its segment before the 503s go out; a failed
//! sync is never trusted (a `rerun` mark makes the event run again); and a segment is
//! deleted only from the oldest end, once the deliveries file holds its ids on disk.

mod dedup;
mod home;
mod record;
mod recovery;
mod scan;
mod segment;
mod session_file;
mod sessions;
#[cfg(test)]
pub(crate) mod testing;
mod writer;

pub use home::Home;
pub use recovery::{each_queued, queued};

use crate::session::{self, Header, Line, Message, Role, Run, RunStatus};
use crate::window::{Position, Refill, Waiting};
use record::{Location, Record};
use segment::segment_path;
use serde::{Deserialize, Serialize};
use sessions::{Budget, SessionWriter};
use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use tokio::sync::{mpsc as tokio_mpsc, oneshot};
use writer::Command;

/// An accepted webhook event: what the queue records and what a run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: String,
    pub session: String,
    pub source: String,
    pub agent: String,
    pub project: PathBuf,
    pub at: String,
    /// The body exactly as received; the agent's message is made from it (`text`)
    /// unless `message` says otherwise.
    pub body: String,
    /// The agent's message when it is not the default `Webhook from <source>: <payload>`
    /// (a source's `message` template, filled in and cut when the event was accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Whether `message` was cut (it then ends with a note saying so).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub message_trimmed: bool,
    /// The sender's delivery id, when it sent one; repeats within `dedup_until` are
    /// answered as duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    /// Until when (Unix seconds) the delivery id is remembered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_until: Option<u64>,
    /// Its session was made for it alone (`new_session`), so its run has no order to
    /// keep with any other event's (see `window`). Records from before it read as
    /// `false`, which only costs them that freedom.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh: bool,
    /// The event this one runs again (`lowkey rerun`): same session, source and body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<String>,
}

/// What became of an ingested event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    Accepted,
    /// The same delivery was accepted before: its session and event.
    Duplicate {
        session: String,
        event: String,
    },
}

/// A queued run. It holds only where its event is in the queue, not the event; the run
/// reads its event back when it starts (`Store::load`). Its message is in its session
/// already. Dispatch holds a bounded window of them; the rest wait on disk and are read
/// back (`Store::scan`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub event: String,
    pub session: String,
    pub agent: String,
    /// `Event::fresh`.
    pub fresh: bool,
    location: Location,
}

impl Waiting for Job {
    fn position(&self) -> Position {
        self.location.start()
    }

    fn end(&self) -> Position {
        self.location.end()
    }

    fn session(&self) -> &str {
        &self.session
    }

    fn agent(&self) -> &str {
        &self.agent
    }

    fn fresh(&self) -> bool {
        self.fresh
    }
}

impl Event {
    fn job(&self, location: Location) -> Job {
        Job {
            event: self.id.clone(),
            session: self.session.clone(),
            agent: self.agent.clone(),
            fresh: self.fresh,
            location,
        }
    }

    /// The session's first line, when this event creates the session.
    pub fn header(&self) -> Header {
        Header {
            id: self.session.clone(),
            source: self.source.clone(),
            project: self.project.clone(),
            agent: self.agent.clone(),
            created: self.at.clone(),
        }
    }

    /// The message handed to the agent (`message`, or `Webhook from <source>:
    /// <payload>`), and whether it was trimmed.
    pub fn text(&self) -> (String, bool) {
        match &self.message {
            Some(text) => (text.clone(), self.message_trimmed),
            None => session::webhook_message(&self.source, &self.body),
        }
    }

    /// The event's message line in its session.
    pub fn message(&self) -> Line {
        let (text, trimmed) = self.text();
        Line::Message(Message {
            role: Role::User,
            text,
            event: self.id.clone(),
            source: Some(self.source.clone()),
            at: self.at.clone(),
            body: Some(self.body.clone()),
            trimmed,
            rerun_of: self.rerun_of.clone(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} does not hold the queued event at byte {offset}", path.display())]
    Corrupt { path: PathBuf, offset: u64 },
    #[error("the store has shut down")]
    Closed,
}

impl StoreError {
    /// The same error again, for each of the requests one failed write answers.
    fn copy(&self) -> StoreError {
        match self {
            StoreError::Io { path, source } => StoreError::Io {
                path: path.clone(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            StoreError::Corrupt { path, offset } => StoreError::Corrupt {
                path: path.clone(),
                offset: *offset,
            },
            StoreError::Closed => StoreError::Closed,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A handle to the writer threads. Cheap to clone; the threads end when the last
/// handle is dropped, after finishing what they were given.
#[derive(Clone)]
pub struct Store {
    tx: tokio_mpsc::UnboundedSender<Command>,
    sessions: mpsc::Sender<sessions::Command>,
    home: Home,
}

/// Joins the queue writer thread, which joins the session writer's.
pub struct WriterThread(thread::JoinHandle<()>);

impl WriterThread {
    pub fn join(self) {
        let _ = self.0.join();
    }
}

/// What start-up found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Accepted events whose run did not finish: those in `backlog`, and those sent on
    /// to the session writer (and from it to the jobs channel).
    pub pending: usize,
    /// Events whose result was in their session but whose `done` mark was lost.
    pub completed: usize,
    /// The pending events left in the queue for dispatch to read back.
    pub backlog: Backlog,
}

/// The pending events start-up leaves in the queue for dispatch's window to read back
/// (`Store::scan`), rather than sending them over the jobs channel: those from `start`
/// up to `end`, where the channel's take over. Their messages are filed.
#[derive(Debug, Default)]
pub struct Backlog {
    pub start: Position,
    pub end: Position,
    /// How many events wait there.
    pub waiting: usize,
    pub passed: Arc<Passed>,
}

impl Backlog {
    /// Counts a pending event left in the queue, starting at `position` (before `end`).
    fn add(&mut self, position: Position) {
        self.start = self.start.min(position);
        self.waiting += 1;
    }
}

/// The records in the queue that reads of waiting events pass over.
#[derive(Debug, Default)]
pub struct Passed {
    /// Events done before this start whose `accepted` records may still be in the
    /// queue. (Events done since were in the window, which never reads one twice.)
    done: HashSet<String>,
    /// Second copies of an event's `accepted` record, left by an older lowkey's
    /// start-up compaction cut short by a crash.
    copies: HashSet<Position>,
    /// Events the session writer found finished after this start (their sessions show
    /// final results; see `sessions::Message::Check`), before it hands on any event
    /// after them.
    finished: Mutex<HashSet<String>>,
}

impl Passed {
    fn holds(&self, event: &str, position: Position) -> bool {
        self.done.contains(event)
            || self.copies.contains(&position)
            || self.finished.lock().is_ok_and(|f| f.contains(event))
    }

    /// An event found finished after this start: reads of waiting events pass over it.
    fn finish(&self, event: &str) {
        if let Ok(mut finished) = self.finished.lock() {
            finished.insert(event.to_owned());
        }
    }
}

impl Store {
    /// Opens the store, recovers pending work and starts the writer threads. Every
    /// accepted event (recovered or new) is sent to `jobs`, as a `Job`, once durable and
    /// its message is in its session, in acceptance order; the events of one batch go
    /// together.
    pub fn open(
        home: &Home,
        jobs: tokio_mpsc::UnboundedSender<Vec<Job>>,
    ) -> Result<(Store, WriterThread, Recovery), StoreError> {
        home.create_dirs().map_err(io_err(&home.root))?;
        let budget = Budget::default();
        let (sessions_tx, sessions_rx) = mpsc::channel();
        let (mut writer, recovery) = recovery::recover(home, sessions_tx.clone(), &budget)?;
        let (tx, rx) = tokio_mpsc::unbounded_channel();
        let session_writer = SessionWriter::new(home, jobs, tx.downgrade(), budget)?;
        let sessions_thread = thread::Builder::new()
            .name("lowkey-sessions".into())
            .spawn(move || session_writer.run(sessions_rx))
            .map_err(io_err(&home.root))?;
        writer.session_thread = Some(sessions_thread);
        let thread = thread::Builder::new()
            .name("lowkey-store".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(&home.root))?;
        Ok((
            Store {
                tx,
                sessions: sessions_tx,
                home: home.clone(),
            },
            WriterThread(thread),
            recovery,
        ))
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Where its files are.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// Returns once the event is on disk (only then may the sender get a 2xx), or at
    /// once when it repeats a delivery already accepted. Every ingest passes through
    /// one thread, so of two racing copies of a delivery exactly one is accepted.
    pub async fn ingest(&self, event: Event) -> Result<Ingested, StoreError> {
        self.call(|r| Command::Ingest(Box::new(event), r)).await
    }

    /// Marks in the queue, synced, that the event's run starts: start-up then reads its
    /// session back to see how far the run got. Called before the agent is spawned and
    /// before any of the run's records is written.
    pub async fn started(&self, event: &Event) -> Result<(), StoreError> {
        self.call(|r| Command::Started(event.id.clone(), r)).await
    }

    /// Appends lines to the event's session without waiting for them to reach the disk.
    /// The session writer writes them, between the messages of events accepted since.
    pub async fn append(&self, event: &Event, lines: Vec<Line>) -> Result<(), StoreError> {
        self.write_session(event, lines, false).await
    }

    async fn write_session(
        &self,
        event: &Event,
        lines: Vec<Line>,
        sync: bool,
    ) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        let append = sessions::Command::Append {
            header: event.header(),
            lines,
            sync,
            reply,
        };
        self.sessions.send(append).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Reads a queued run's event back from the queue.
    pub async fn load(&self, job: &Job) -> Result<Event, StoreError> {
        let home = self.home.clone();
        let location = job.location;
        tokio::task::spawn_blocking(move || read_event(&home, &location))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Reads waiting events back from the queue for dispatch's window: those `refill`
    /// wants, in queue order, passing over those in `passed`, and where the read
    /// stopped (see `Window::refilled`). Their messages are filed: dispatch reads back
    /// only events it was sent (the session writer sends none before its message is in
    /// its file) and those start-up left before the `filed` watermark (`Backlog`).
    pub async fn scan(
        &self,
        refill: &Refill,
        passed: Arc<Passed>,
    ) -> Result<(Vec<Job>, Position), StoreError> {
        let queue = self.home.queue();
        let refill = refill.clone();
        tokio::task::spawn_blocking(move || scan::scan(&queue, &refill, &passed))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Records a run's final result: appends it to the session, syncs the session file
    /// and its folder, then marks the event done in the queue. The session's part runs
    /// on the blocking pool, so finishing runs never delays ingest.
    ///
    /// When the session part fails, the result may sit in the page cache without being on
    /// disk (a failed `fsync` does not keep the data for a later one), where the next
    /// start would read it back and take the run as done. So the event is not marked
    /// done: the session gets a note that the run happens again, and the queue a
    /// `rerun` mark, which makes recovery distrust the unsynced result even when that
    /// note could not be written either.
    pub async fn finish(
        &self,
        job: &Job,
        event: &Event,
        lines: Vec<Line>,
    ) -> Result<(), StoreError> {
        if let Err(e) = self.write_session(event, lines, true).await {
            let note = Line::Run(Run {
                error: Some(session::UNSYNCED.into()),
                ..Run::new(&event.id, RunStatus::Interrupted, &event.agent)
            });
            let _ = self.append(event, vec![note]).await;
            if let Err(mark) = self.call(|r| Command::Rerun(event.id.clone(), r)).await {
                tracing::error!(event_id = %event.id, error = %mark, "cannot mark the event to run again in the queue");
            }
            return Err(e);
        }
        self.call(|r| Command::Done(event.id.clone(), job.location.seq, r))
            .await
    }
}

/// Reads an accepted event back from where its record is in the queue.
fn read_event(home: &Home, location: &Location) -> Result<Event, StoreError> {
    let path = segment_path(&home.queue(), location.seq);
    let Location { offset, len, .. } = *location;
    let mut buf = vec![0u8; len];
    File::open(&path)
        .and_then(|f| f.read_exact_at(&mut buf, offset))
        .map_err(io_err(&path))?;
    match serde_json::from_slice::<Record>(&buf) {
        Ok(Record::Accepted(event)) => Ok(*event),
        _ => Err(StoreError::Corrupt { path, offset }),
    }
}

/// Makes a folder's entries (new or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
