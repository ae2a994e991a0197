//! Durable storage: the write-ahead queue and the session files.
//!
//! One writer thread owns the queue. Requests reach it over a channel and it handles
//! them in batches: everything waiting when it wakes shares one `fdatasync` of the
//! queue file (group commit), so durable ingest costs one fsync per batch, not one per
//! request. Nothing else runs on that thread, so each batch waits only for the sync
//! before it. A session file is written by its session's run, on the blocking pool:
//! dispatch runs one event at a time per session, so it has one writer at a time.
//!
//! The queue (`$LOWKEY_HOME/queue/*.wal`) is the inbox and the source of truth for work
//! not yet done: an `accepted` record is written and synced before the sender gets its
//! 202, and a `done` record is written only after the run's result is synced into the
//! session file. Ingest creates no file; a run writes its event's message into the
//! session when it starts (`Job` holds only the record's place in the queue, so a long
//! backlog stays small in memory). Start-up reads only the queue, which holds pending
//! work, so it does not grow with the number of sessions.

use crate::session::{self, Header, Line, Message, Role, Run, RunStatus, encode_json};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

/// A queue segment is closed and a new one started past this size.
const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Past this much of a segment, a zero-filled spare is made for the next one.
const SPARE_AT: u64 = SEGMENT_BYTES / 2;
/// Queue writes are whole pages at page offsets (see `write_queue`).
const PAGE: u64 = 4096;
/// A queue write larger than this goes to the disk in pieces of this size.
const WRITE_CHUNK: usize = 1024 * 1024;
/// At most this many requests share one sync; bounds the latency of the batch.
const MAX_BATCH: usize = 1024;

/// The state folder's layout.
#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }

    pub fn sessions(&self) -> PathBuf {
        self.root.join("sessions")
    }

    pub fn queue(&self) -> PathBuf {
        self.root.join("queue")
    }

    /// Delivery ids seen recently, for dropping senders' retries.
    pub fn deliveries(&self) -> PathBuf {
        self.root.join("deliveries.jsonl")
    }

    pub fn session_file(&self, id: &str) -> PathBuf {
        self.sessions().join(session::file_name(id))
    }

    /// Creates the folders lowkey writes to, each 0700.
    pub fn create_dirs(&self) -> io::Result<()> {
        for dir in [self.root.clone(), self.sessions(), self.queue()] {
            DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        }
        Ok(())
    }
}

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
    /// The body exactly as received; the agent's message is made from it (`text`).
    pub body: String,
    /// The sender's delivery id, when it sent one; repeats within `dedup_until` are
    /// answered as duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    /// Until when (Unix seconds) the delivery id is remembered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_until: Option<u64>,
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

/// Where an accepted record sits in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Location {
    seq: u64,
    offset: u64,
    len: usize,
}

/// A queued run. It holds only where its event is in the queue, not the event, so a
/// backlog of many thousands of events costs little memory; the run reads its event
/// back when it starts (`Store::load`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub event: String,
    pub session: String,
    pub agent: String,
    /// The session already shows the event's message (a run cut short before a restart).
    pub materialized: bool,
    location: Location,
}

/// A remembered delivery, one line of `deliveries.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Seen {
    source: String,
    id: String,
    session: String,
    event: String,
    until: u64,
}

impl Seen {
    /// The event's delivery, when it has a delivery id to remember.
    fn of(event: &Event) -> Option<Seen> {
        Some(Seen::new(
            event,
            event.delivery.as_deref()?,
            event.dedup_until?,
        ))
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

impl Event {
    fn job(&self, location: Location, materialized: bool) -> Job {
        Job {
            event: self.id.clone(),
            session: self.session.clone(),
            agent: self.agent.clone(),
            materialized,
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

    /// `Webhook from <source>: <payload>`, the message handed to the agent, and
    /// whether the payload in it was trimmed.
    pub fn text(&self) -> (String, bool) {
        session::webhook_message(&self.source, &self.body)
    }

    /// The event's message line in its session.
    pub fn message(&self) -> Line {
        let (text, trimmed) = self.text();
        self.message_line(text, trimmed)
    }

    /// The message line, from a `text()` already made.
    pub fn message_line(&self, text: String, trimmed: bool) -> Line {
        Line::Message(Message {
            role: Role::User,
            text,
            event: self.id.clone(),
            source: Some(self.source.clone()),
            at: self.at.clone(),
            body: Some(self.body.clone()),
            trimmed,
        })
    }
}

/// A queue record as read back.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum Record {
    Accepted(Box<Event>),
    Done(String),
    /// The event's result could not be synced into its session: whatever final run
    /// record its session shows from before this mark may not be on disk, so the event
    /// runs again (see `Marks::trusted_final`).
    Rerun(String),
}

/// A queue record as written: the same JSON as `Record`, without copying the event.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
enum RecordRef<'a> {
    Accepted(&'a Event),
    Done(&'a str),
    Rerun(&'a str),
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

type Reply = oneshot::Sender<Result<(), StoreError>>;
type IngestReply = oneshot::Sender<Result<Ingested, StoreError>>;

enum Command {
    /// Make the event durable, then hand it to dispatch; or, when its delivery id was
    /// seen, answer with the first delivery's ids.
    Ingest(Box<Event>, IngestReply),
    /// Mark the event done in the queue; its result is already synced in its session.
    /// The number is the segment holding its `accepted` record.
    Done(String, u64, Reply),
    /// Mark that the event's result did not reach the disk; it stays pending.
    Rerun(String, Reply),
}

/// A handle to the writer thread. Cheap to clone; the thread ends when the last
/// handle is dropped, after finishing what it was given.
#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Command>,
    home: Home,
}

/// Joins the writer thread.
pub struct WriterThread(thread::JoinHandle<()>);

impl WriterThread {
    pub fn join(self) {
        let _ = self.0.join();
    }
}

/// What start-up found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Accepted events whose run did not finish, in acceptance order; already sent to
    /// the dispatch channel.
    pub pending: usize,
    /// Events whose result was in their session but whose `done` mark was lost.
    pub completed: usize,
}

impl Store {
    /// Opens the store, recovers pending work and starts the writer thread. Every
    /// accepted event (recovered or new) is sent to `jobs`, as a `Job`, once durable,
    /// in acceptance order; the events of one batch go together.
    pub fn open(
        home: &Home,
        jobs: tokio_mpsc::UnboundedSender<Vec<Job>>,
    ) -> Result<(Store, WriterThread, Recovery), StoreError> {
        home.create_dirs().map_err(io_err(&home.root))?;
        let (writer, recovery) = Writer::recover(home, jobs)?;
        let (tx, rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("lowkey-store".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(&home.root))?;
        Ok((
            Store {
                tx,
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

    /// Returns once the event is on disk (only then may the sender get a 2xx), or at
    /// once when it repeats a delivery already accepted. Every ingest passes through
    /// one thread, so of two racing copies of a delivery exactly one is accepted.
    pub async fn ingest(&self, event: Event) -> Result<Ingested, StoreError> {
        self.call(|r| Command::Ingest(Box::new(event), r)).await
    }

    /// Appends lines to the event's session without waiting for them to reach the disk.
    /// Only the session's run calls this (dispatch runs one at a time per session), so
    /// session files need no lock and their writes stay off the writer thread.
    pub async fn append(&self, event: &Event, lines: Vec<Line>) -> Result<(), StoreError> {
        self.write_session(event, lines, false).await
    }

    async fn write_session(
        &self,
        event: &Event,
        lines: Vec<Line>,
        sync: bool,
    ) -> Result<(), StoreError> {
        let home = self.home.clone();
        let header = event.header();
        tokio::task::spawn_blocking(move || {
            let file = append_session(&home, &header, &session::encode(&lines))?;
            if sync {
                let path = home.session_file(&header.id);
                file.sync_data().map_err(io_err(&path))?;
                // The file may be new: its name must be durable too.
                let dir = home.sessions();
                sync_dir(&dir).map_err(io_err(&dir))?;
            }
            Ok(())
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }

    /// Reads a queued run's event back from the queue.
    pub async fn load(&self, job: &Job) -> Result<Event, StoreError> {
        let path = segment_path(&self.home.queue(), job.location.seq);
        let Location { offset, len, .. } = job.location;
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            File::open(&path)
                .and_then(|f| f.read_exact_at(&mut buf, offset))
                .map_err(io_err(&path))?;
            match serde_json::from_slice::<Record>(&buf) {
                Ok(Record::Accepted(event)) => Ok(*event),
                _ => Err(StoreError::Corrupt { path, offset }),
            }
        })
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

struct Segment {
    seq: u64,
    path: PathBuf,
    file: File,
    /// Where the records written so far end. The next batch starts at the first page
    /// boundary at or after it, so no write ever covers an acknowledged record. A
    /// segment made from a spare is longer, the rest of it zeros.
    len: u64,
}

impl Segment {
    /// Where the next batch goes: the page after the last record's.
    fn next_batch(&self) -> u64 {
        self.len.next_multiple_of(PAGE)
    }
}

/// The zero-filled file for the next segment, made ahead by a short-lived thread.
///
/// A sync after overwriting blocks that are already allocated and on disk writes only
/// those blocks; after an append it must also write the file's new size and block map.
/// On this kind of disk that is about 100 µs a sync instead of 170 µs, and the sync
/// is what every batch of requests waits for.
struct Spares {
    path: PathBuf,
    /// The spare being made, or made and not taken yet.
    coming: Option<mpsc::Receiver<io::Result<()>>>,
}

impl Spares {
    fn new(queue: &Path) -> Spares {
        let path = spare_path(queue);
        // Left by a stop while it was being made.
        let _ = fs::remove_file(&path);
        Spares { path, coming: None }
    }

    /// Starts making a spare unless one is coming already.
    fn ask(&mut self) {
        if self.coming.is_some() {
            return;
        }
        let (made, coming) = mpsc::channel();
        let path = self.path.clone();
        // If the thread cannot start, `made` is dropped with it and `take` says so.
        let _ = thread::Builder::new()
            .name("lowkey-spare".into())
            .spawn(move || made.send(make_spare(&path)));
        self.coming = Some(coming);
    }

    /// Whether a spare is ready at `spare_path`; the caller takes it.
    fn take(&mut self) -> bool {
        let Some(coming) = &self.coming else {
            return false;
        };
        let made = match coming.try_recv() {
            Err(mpsc::TryRecvError::Empty) => return false,
            Ok(made) => made,
            Err(mpsc::TryRecvError::Disconnected) => {
                Err(io::Error::other("its thread did not start"))
            }
        };
        self.coming = None;
        match made {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "cannot make a spare queue segment; the next one grows as it is written");
                false
            }
        }
    }
}

fn spare_path(queue: &Path) -> PathBuf {
    queue.join("spare.tmp")
}

/// Opens `path` with `O_DIRECT` where the filesystem allows it, so that writes skip
/// the page cache, and without it where the filesystem refuses (`EINVAL`).
fn open_direct(options: &OpenOptions, path: &Path) -> io::Result<File> {
    match options
        .clone()
        .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => options.open(path),
        other => other,
    }
}

/// Writes a segment's worth of zeros to `path` and syncs it, bypassing the page cache
/// where the filesystem allows: copying 16 MiB through the cache costs more CPU than
/// the syncs it saves.
fn make_spare(path: &Path) -> io::Result<()> {
    let file = open_direct(
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600),
        path,
    )?;
    let mut zeros = PageBuf::default();
    let chunk = zeros.pages(WRITE_CHUNK);
    for _ in 0..SEGMENT_BYTES / WRITE_CHUNK as u64 {
        (&file).write_all(chunk)?;
    }
    file.sync_all()
}

/// A buffer whose pages start at a page-aligned address, as `O_DIRECT` writes need.
#[derive(Default)]
struct PageBuf {
    raw: Vec<u8>,
}

impl PageBuf {
    /// The first `len` bytes (a multiple of the page size) from an aligned address. They
    /// hold whatever was written last; fresh memory is zeros.
    fn pages(&mut self, len: usize) -> &mut [u8] {
        let page = PAGE as usize;
        debug_assert!(len % page == 0);
        if self.raw.len() < len + page {
            // Zeroed by the allocator: pages never written take no memory.
            self.raw = vec![0; len + page];
        }
        let start = self.raw.as_ptr().align_offset(page);
        &mut self.raw[start..start + len]
    }
}

struct Writer {
    home: Home,
    /// The segment batches are appended to. `None` after it could not be made (a full
    /// disk at start-up, say): each batch tries again, and gets 503 until it can.
    segment: Option<Segment>,
    /// The number the next segment takes.
    next_seq: u64,
    spares: Spares,
    /// Where queue writes are laid out.
    pages: PageBuf,
    /// Live events per segment. A segment is deleted once it and every older one
    /// hold no live event: a later segment may hold `done` marks for older ones.
    segment_live: BTreeMap<u64, usize>,
    /// Remembered deliveries by `source\0id`, and the file they are appended to.
    deliveries: HashMap<String, Seen>,
    deliveries_file: File,
    /// The deliveries file lacks ids that only the queue holds (its rewrite at start-up
    /// failed): no segment is deleted until a rewrite works.
    deliveries_stale: bool,
    /// Lines in the deliveries file; it is rewritten when mostly expired.
    deliveries_lines: usize,
    jobs: tokio_mpsc::UnboundedSender<Vec<Job>>,
}

impl Writer {
    /// Reads the queue, puts the sessions of pending events right, and sends their jobs
    /// to `jobs`, each pointing at its record where it is. Start-up rewrites no queue
    /// record: a crash at any point of it leaves the queue as it was, and a full disk
    /// does not stop the daemon from starting (it answers 503 until there is room).
    fn recover(
        home: &Home,
        jobs: tokio_mpsc::UnboundedSender<Vec<Job>>,
    ) -> Result<(Writer, Recovery), StoreError> {
        let queue = home.queue();
        let mut read = read_queue(&queue).map_err(io_err(&queue))?;
        let now = session::unix_now();
        let mut deliveries: HashMap<String, Seen> = HashMap::new();
        if let Ok(bytes) = fs::read(home.deliveries()) {
            for raw in bytes.split(|b| *b == b'\n') {
                if let Ok(seen) = serde_json::from_slice::<Seen>(raw) {
                    deliveries.insert(seen.key(), seen);
                }
            }
        }
        // The queue records are the durable copy of deliveries the deliveries file may
        // not have reached before a crash.
        for seen in read.accepted.iter().filter_map(|(e, _)| Seen::of(e)) {
            deliveries.insert(seen.key(), seen);
        }
        deliveries.retain(|_, seen| seen.until > now);
        let (deliveries_file, deliveries_stale) = match write_deliveries(home, &deliveries) {
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
        let mut writer = Writer {
            home: home.clone(),
            segment: None,
            next_seq: read.segments.last().map_or(1, |(s, _)| s + 1),
            spares: Spares::new(&queue),
            pages: PageBuf::default(),
            segment_live: BTreeMap::new(),
            deliveries_lines: deliveries.len(),
            deliveries,
            deliveries_file,
            deliveries_stale,
            jobs,
        };
        // The old segments stay until their events are done, like any other.
        for (seq, _) in &read.segments {
            writer.segment_live.insert(*seq, 0);
        }

        let mut recovery = Recovery::default();
        let mut jobs = Vec::new();
        let mut completed = Vec::new();
        let mut sessions = HashMap::new();
        for (event, location, rerun) in read.pending() {
            match writer.repair(&event, rerun, &mut sessions) {
                None => completed.push(event.id),
                Some(materialized) => {
                    *writer.segment_live.entry(location.seq).or_default() += 1;
                    jobs.push(event.job(location, materialized));
                }
            }
        }
        recovery.pending = jobs.len();
        recovery.completed = completed.len();
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
        if !jobs.is_empty() {
            let _ = writer.jobs.send(jobs);
        }
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
        &mut self,
        event: &Event,
        rerun: bool,
        sessions: &mut HashMap<String, HashMap<String, Marks>>,
    ) -> Option<bool> {
        if !sessions.contains_key(&event.session) {
            let path = self.home.session_file(&event.session);
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
            if let Err(e) = append_session(&self.home, &event.header(), &session::encode(&[line])) {
                tracing::warn!(session_id = %event.session, event_id = %event.id, error = %e, "cannot put the recovered event's session right");
            }
        }
        (!trusted).then_some(marks.message)
    }

    fn run(mut self, rx: mpsc::Receiver<Command>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            self.process(batch);
        }
    }

    fn process(&mut self, batch: Vec<Command>) {
        let mut ingests = Vec::new();
        let mut done = Vec::new();
        let mut reruns = Vec::new();
        // Copies of a delivery first claimed in this very batch: they are answered as
        // duplicates only once that claim is on disk, and get 503 with it otherwise.
        let mut copies = Vec::new();
        let mut claimed = HashSet::new();
        // The new claims, as lines for the deliveries file once the batch is durable.
        let mut seen_lines = Vec::new();
        let now = session::unix_now();
        for cmd in batch {
            match cmd {
                Command::Ingest(e, r) => {
                    if let (Some(id), Some(until)) = (&e.delivery, e.dedup_until) {
                        let key = delivery_key(&e.source, id);
                        match self.deliveries.get(&key) {
                            Some(first) if first.until > now => {
                                let answer = Ingested::Duplicate {
                                    session: first.session.clone(),
                                    event: first.event.clone(),
                                };
                                if claimed.contains(&key) {
                                    copies.push((answer, r));
                                } else {
                                    let _ = r.send(Ok(answer));
                                }
                                continue;
                            }
                            _ => {
                                let seen = Seen::new(&e, id, until);
                                encode_json(&mut seen_lines, &seen);
                                self.deliveries.insert(key.clone(), seen);
                                claimed.insert(key);
                            }
                        }
                    }
                    ingests.push((e, r));
                }
                Command::Done(id, seq, r) => done.push((id, Some(seq), r)),
                Command::Rerun(id, r) => reruns.push((id, r)),
            }
        }

        // 1. One append and one sync of the queue for every record in the batch.
        let (mut records, spans) = encode_accepted(ingests.iter().map(|(e, _)| &**e));
        for (id, _, _) in &done {
            encode_json(&mut records, &RecordRef::Done(id));
        }
        for (id, _) in &reruns {
            encode_json(&mut records, &RecordRef::Rerun(id));
        }
        // Marks that a run's result could not be synced answer like `done` marks, but
        // leave their events live.
        done.extend(reruns.into_iter().map(|(id, r)| (id, None, r)));
        let (seq, base) = match self.write_queue(&records) {
            Ok(at) => at,
            Err(e) => {
                tracing::error!(error = %e, "cannot write the queue; answering 503");
                for key in &claimed {
                    self.deliveries.remove(key);
                }
                for (_, reply) in ingests {
                    let _ = reply.send(Err(e.copy()));
                }
                for (_, reply) in copies {
                    let _ = reply.send(Err(e.copy()));
                }
                for (_, _, reply) in done {
                    let _ = reply.send(Err(e.copy()));
                }
                return;
            }
        };
        for (answer, reply) in copies {
            let _ = reply.send(Ok(answer));
        }
        for (_, segment, reply) in done {
            if let Some(n) = segment.and_then(|s| self.segment_live.get_mut(&s)) {
                *n = n.saturating_sub(1);
            }
            let _ = reply.send(Ok(()));
        }

        // 2. Accepted events go on to dispatch; a run writes its event's message into
        // the session when it starts, so ingest creates no file. Delivery ids are
        // durable in the queue; the deliveries file is synced before any queue segment
        // is deleted.
        self.deliveries_lines += claimed.len();
        if let Err(e) = (&self.deliveries_file).write_all(&seen_lines) {
            tracing::error!(error = %e, "cannot append to the deliveries file");
        }
        if !ingests.is_empty() {
            *self.segment_live.entry(seq).or_default() += ingests.len();
        }
        let mut jobs = Vec::with_capacity(ingests.len());
        let mut replies = Vec::with_capacity(ingests.len());
        for ((event, reply), (start, len)) in ingests.into_iter().zip(spans) {
            let location = Location {
                seq,
                offset: base + start as u64,
                len,
            };
            jobs.push(event.job(location, false));
            replies.push(reply);
        }
        if !jobs.is_empty() {
            let _ = self.jobs.send(jobs);
        }
        for reply in replies {
            let _ = reply.send(Ok(Ingested::Accepted));
        }
        self.maintain_segments();
        self.maintain_deliveries();
    }

    /// Appends the records as one batch and syncs it; returns the segment and the offset
    /// the batch starts at.
    ///
    /// A batch starts on a fresh page: it is written as whole pages (the records, then
    /// zeros to the end of the last page), which is what `O_DIRECT` takes, and no write
    /// ever covers a page holding records already acknowledged, so a torn or failed
    /// write can only damage the batch it carries, whose senders have no answer yet.
    ///
    /// On failure the segment is cut back to its last good record and that is synced, so
    /// a half-written batch that was answered 503 is never run. When even that fails, the
    /// segment is given up: the next batch starts a new one. An empty segment given up is
    /// deleted and its number used again, so failing batches leave no files behind.
    fn write_queue(&mut self, records: &[u8]) -> Result<(u64, u64), StoreError> {
        let seg = match &mut self.segment {
            Some(seg) => seg,
            None => {
                let seg = Segment::create(&self.home.queue(), self.next_seq, false)?;
                self.next_seq = seg.seq + 1;
                self.segment_live.entry(seg.seq).or_insert(0);
                self.segment.insert(seg)
            }
        };
        let start = seg.next_batch();
        if records.is_empty() {
            return Ok((seg.seq, start));
        }
        let mut offset = start;
        let mut rest = records;
        let mut write = || -> io::Result<()> {
            let buf = self.pages.pages(WRITE_CHUNK);
            while !rest.is_empty() {
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                rest = &rest[n..];
                let end = n.next_multiple_of(PAGE as usize);
                buf[n..end].fill(0);
                seg.write_at(&buf[..end], offset)?;
                offset += n as u64;
            }
            seg.file.sync_data()
        };
        match write().map_err(io_err(&seg.path)) {
            Ok(()) => {
                seg.len = start + records.len() as u64;
                Ok((seg.seq, start))
            }
            Err(e) => {
                let cut = seg
                    .file
                    .set_len(seg.len)
                    .and_then(|()| seg.file.sync_data());
                if let Err(cut) = cut {
                    tracing::error!(path = %seg.path.display(), error = %cut, "cannot cut a failed batch off the queue segment; starting a new one");
                    if seg.len == 0 {
                        let _ = fs::remove_file(&seg.path);
                        self.segment_live.remove(&seg.seq);
                        self.next_seq = seg.seq;
                    }
                    self.segment = None;
                }
                Err(e)
            }
        }
    }

    /// Starts a new segment when the current one is full, and deletes the oldest
    /// segments once no live event is left in them.
    fn maintain_segments(&mut self) {
        let current = self.segment.as_ref().map(|seg| (seg.seq, seg.len));
        if current.is_some_and(|(_, len)| len >= SPARE_AT) {
            self.spares.ask();
        }
        if current.is_some_and(|(_, len)| len >= SEGMENT_BYTES) {
            let spare = self.spares.take();
            match Segment::create(&self.home.queue(), self.next_seq, spare) {
                Ok(next) => {
                    self.next_seq = next.seq + 1;
                    self.segment_live.entry(next.seq).or_insert(0);
                    self.segment = Some(next);
                }
                Err(e) => tracing::error!(error = %e, "cannot start a new queue segment"),
            }
        }
        let current = self.segment.as_ref().map(|seg| seg.seq);
        let finished: Vec<u64> = self
            .segment_live
            .iter()
            .take_while(|&(&seq, &n)| n == 0 && Some(seq) != current)
            .map(|(&seq, _)| seq)
            .collect();
        if finished.is_empty() {
            return;
        }
        // A segment holds the durable copy of its delivery ids until the deliveries
        // file has them on disk.
        if self.deliveries_stale {
            match write_deliveries(&self.home, &self.deliveries) {
                Ok(file) => {
                    self.deliveries_file = file;
                    self.deliveries_lines = self.deliveries.len();
                    self.deliveries_stale = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot rewrite the deliveries file; keeping queue segments");
                    return;
                }
            }
        }
        if let Err(e) = self.deliveries_file.sync_data() {
            tracing::error!(error = %e, "cannot sync the deliveries file; keeping queue segments");
            return;
        }
        for seq in finished {
            self.segment_live.remove(&seq);
            let path = segment_path(&self.home.queue(), seq);
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete a finished queue segment");
            }
        }
    }

    /// Rewrites the deliveries file without expired ids once they are most of it.
    fn maintain_deliveries(&mut self) {
        if self.deliveries_lines < 2 * self.deliveries.len() + 10_000 {
            return;
        }
        let now = session::unix_now();
        self.deliveries.retain(|_, seen| seen.until > now);
        match write_deliveries(&self.home, &self.deliveries) {
            Ok(file) => {
                self.deliveries_file = file;
                self.deliveries_lines = self.deliveries.len();
            }
            Err(e) => tracing::error!(error = %e, "cannot compact the deliveries file"),
        }
    }
}

/// Appends bytes to a session file, creating it (0600, with its header line) on
/// first use. A torn last line from a crash is ended first, so it stays one bad
/// line that readers skip instead of corrupting the next one. Returns the file.
fn append_session(home: &Home, header: &Header, bytes: &[u8]) -> Result<File, StoreError> {
    let path = home.session_file(&header.id);
    let mut buf = Vec::with_capacity(bytes.len() + 256);
    let file = match OpenOptions::new().read(true).append(true).open(&path) {
        Ok(file) => {
            let len = file.metadata().map_err(io_err(&path))?.len();
            let mut last = [0u8; 1];
            if len > 0
                && file.read_at(&mut last, len - 1).map_err(io_err(&path))? == 1
                && last[0] != b'\n'
            {
                buf.push(b'\n');
            }
            file
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let file = OpenOptions::new()
                .append(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io_err(&path))?;
            buf.extend(session::encode(&[Line::Session(header.clone())]));
            file
        }
        Err(e) => return Err(io_err(&path)(e)),
    };
    buf.extend_from_slice(bytes);
    (&file).write_all(&buf).map_err(io_err(&path))?;
    Ok(file)
}

impl Segment {
    /// Writes `buf` at `offset`. A filesystem may take `O_DIRECT` when the file is
    /// opened and still refuse the write (`EINVAL`) when its blocks are larger than a
    /// page; the file is then reopened to go through the page cache, and the write
    /// tried once more.
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        match self.file.write_all_at(buf, offset) {
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                self.file = OpenOptions::new().write(true).open(&self.path)?;
                self.file.write_all_at(buf, offset)
            }
            other => other,
        }
    }

    /// A new, empty segment: the spare put in place when there is one, else a new file.
    fn create(queue: &Path, seq: u64, spare: bool) -> Result<Segment, StoreError> {
        let path = segment_path(queue, seq);
        let mut options = OpenOptions::new();
        options.write(true);
        if spare {
            fs::rename(spare_path(queue), &path).map_err(io_err(&path))?;
        } else {
            options.create(true).truncate(true).mode(0o600);
        }
        let file = open_direct(&options, &path).map_err(io_err(&path))?;
        sync_dir(queue).map_err(io_err(queue))?;
        Ok(Segment {
            seq,
            path,
            file,
            len: 0,
        })
    }
}

/// The record that marks a run as cut short, when its session shows one started (lowkey
/// stopped during it) or a result that is not to be trusted (it may not be on disk).
fn interruption(event: &Event, last: Option<RunStatus>) -> Option<Line> {
    let why = match last {
        Some(RunStatus::Started) => Some(session::INTERRUPTED),
        Some(status) if status.is_final() => Some(session::UNSYNCED),
        _ => None,
    };
    Some(Line::Run(Run {
        error: Some(why?.into()),
        ..Run::new(&event.id, RunStatus::Interrupted, &event.agent)
    }))
}

fn segment_path(queue: &Path, seq: u64) -> PathBuf {
    queue.join(format!("{seq:016}.wal"))
}

/// Encodes `accepted` records, with where each sits in the bytes (start, length).
fn encode_accepted<'a>(events: impl Iterator<Item = &'a Event>) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut records = Vec::new();
    let mut spans = Vec::new();
    for event in events {
        let start = records.len();
        encode_json(&mut records, &RecordRef::Accepted(event));
        spans.push((start, records.len() - start));
    }
    (records, spans)
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
        // Batches start on page boundaries, so zeros may stand between records, and a
        // segment made from a spare ends in zeros. A torn record was never
        // acknowledged (its batch's sync had not returned), so skipping it loses
        // nothing.
        let mut offset = 0;
        for raw in bytes.split(|b| *b == b'\n') {
            let start = offset + raw.iter().take_while(|b| **b == 0).count();
            offset += raw.len() + 1;
            let record = &bytes[start..offset - 1];
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

/// Makes a folder's entries (new or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches of awkward sizes: within a page, exactly a page, across pages, and larger
    /// than one write piece. Each byte says which batch it is from.
    fn batches() -> Vec<Vec<u8>> {
        let page = PAGE as usize;
        [
            1,
            page - 1,
            1,
            page,
            page + 904,
            3 * WRITE_CHUNK + 7,
            10,
            2 * page - 1,
            2,
        ]
        .iter()
        .enumerate()
        .map(|(i, &len)| vec![b'a' + i as u8; len])
        .collect()
    }

    fn segment(writer: &Writer) -> &Segment {
        writer.segment.as_ref().expect("a current segment")
    }

    /// Writes the batches one `write_queue` at a time and checks that each starts on a
    /// page of its own, that the batches before it are still there byte for byte, and
    /// that only zeros stand between and after them.
    fn check_written_as_given(writer: &mut Writer) {
        let mut expected = Vec::new();
        for batch in batches() {
            let (seq, at) = writer.write_queue(&batch).unwrap();
            assert_eq!(seq, segment(writer).seq);
            assert_eq!(at % PAGE, 0, "a batch starts on a fresh page");
            assert!(at >= expected.len() as u64, "and never over an earlier one");
            expected.resize(at as usize, 0);
            expected.extend_from_slice(&batch);
            assert_eq!(segment(writer).len, expected.len() as u64);
            let file = fs::read(&segment(writer).path).unwrap();
            assert_eq!(
                file[..expected.len()],
                expected[..],
                "every batch, in place"
            );
            assert!(
                file[expected.len()..].iter().all(|b| *b == 0),
                "only zeros after the records"
            );
        }
    }

    fn empty_home() -> (tempfile::TempDir, Home) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        home.create_dirs().unwrap();
        (dir, home)
    }

    /// An event of session `s`, without a delivery id.
    fn event(id: &str) -> Event {
        Event {
            id: id.into(),
            session: "s".into(),
            source: "hook".into(),
            agent: "bot".into(),
            project: "/".into(),
            at: session::now(),
            body: "{}".into(),
            delivery: None,
            dedup_until: None,
        }
    }

    fn wal_files(home: &Home) -> usize {
        fs::read_dir(home.queue())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("wal".as_ref()))
            .count()
    }

    #[test]
    fn queue_writes_of_any_size_read_back_as_written() {
        let (_dir, home) = empty_home();
        let (jobs, mut pending) = tokio_mpsc::unbounded_channel();
        let (mut writer, _) = Writer::recover(&home, jobs).unwrap();
        assert!(pending.try_recv().is_err(), "nothing to recover");
        check_written_as_given(&mut writer);
    }

    #[test]
    fn a_write_the_filesystem_refuses_unbuffered_goes_through_the_page_cache() {
        let (_dir, home) = empty_home();
        let (mut writer, _) = Writer::recover(&home, tokio_mpsc::unbounded_channel().0).unwrap();
        // O_DIRECT refuses a buffer that is not aligned, like a disk with big blocks.
        let mut pages = PageBuf::default();
        let aligned = pages.pages(2 * PAGE as usize);
        aligned.fill(b'x');
        let misaligned = &aligned[1..1 + PAGE as usize];
        let seg = writer.segment.as_mut().unwrap();
        seg.write_at(misaligned, 0).unwrap();
        assert_eq!(fs::read(&seg.path).unwrap(), misaligned);
        // And the batches after it are written as usual.
        seg.len = PAGE;
        writer.write_queue(b"{}\n").unwrap();
        let file = fs::read(&segment(&writer).path).unwrap();
        assert_eq!(&file[..PAGE as usize + 3], [misaligned, b"{}\n"].concat());
    }

    #[test]
    fn queue_writes_into_a_spare_read_back_as_written() {
        let (_dir, home) = empty_home();
        let (mut writer, _) = Writer::recover(&home, tokio_mpsc::unbounded_channel().0).unwrap();
        make_spare(&spare_path(&home.queue())).unwrap();
        let seq = segment(&writer).seq + 1;
        writer.segment = Some(Segment::create(&home.queue(), seq, true).unwrap());
        assert_eq!(
            fs::metadata(&segment(&writer).path).unwrap().len(),
            SEGMENT_BYTES,
            "the spare's zeros are in place"
        );
        check_written_as_given(&mut writer);
    }

    #[test]
    fn failing_batches_leave_no_segment_files_behind() {
        let (_dir, home) = empty_home();
        let (mut writer, _) = Writer::recover(&home, tokio_mpsc::unbounded_channel().0).unwrap();
        assert_eq!(wal_files(&home), 1);
        // A file the writer cannot write, nor cut back: like a disk that fails every
        // write and every sync.
        for _ in 0..50 {
            let seg = writer.segment.as_mut().unwrap();
            seg.file = File::open(&seg.path).unwrap();
            assert!(writer.write_queue(b"{}\n").is_err());
            // The next batch makes its segment again.
            writer.write_queue(b"").unwrap();
        }
        assert_eq!(
            wal_files(&home),
            1,
            "one segment, however many batches failed"
        );
        // And once writes work again, batches land.
        let (_, at) = writer.write_queue(b"{}\n").unwrap();
        assert_eq!(at, 0);
    }

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
        let (_writer, recovery) = Writer::recover(&home, jobs).unwrap();
        assert_eq!(recovery.pending, 1);
        let jobs = pending.try_recv().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].event, event.id);
        assert_eq!(jobs[0].location.seq, 1, "the first copy runs");
    }

    /// An event of the source `hook` carrying the sender's delivery id `delivery`,
    /// remembered until `until` (Unix seconds).
    fn delivered(id: &str, delivery: &str, until: u64) -> Event {
        Event {
            delivery: Some(delivery.into()),
            dedup_until: Some(until),
            ..event(id)
        }
    }

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
        let (mut writer, _) = Writer::recover(&home, tokio_mpsc::unbounded_channel().0).unwrap();
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
        let (mut writer, _) = Writer::recover(&home, tokio_mpsc::unbounded_channel().0).unwrap();
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
        let (mut writer, _) = Writer::recover(&home, tokio_mpsc::unbounded_channel().0).unwrap();
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
