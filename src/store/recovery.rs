//! Start-up: reading the queue back, putting the sessions of pending events right, and
//! leaving their runs in the queue for dispatch or the session writer to read back.
//!
//! Start-up rewrites no queue record: each recovered job points at its record where it
//! is, so a crash at any point of it leaves the queue as it was, and a full disk does
//! not stop the daemon from starting (it answers 503 until there is room). It reads the
//! queue, which holds pending work, and only the session files of pending events whose
//! run started (a `started` mark) or whose result did not sync (a `rerun` mark), to
//! mark a run cut short or see that only the `done` mark was lost. Each file is read
//! once, from its end back to the first message of the events looked for.
//!
//! It holds no pending event: those before the last `filed` mark (their messages are
//! filed) are left in the queue for dispatch's window to read back (`Backlog`); those
//! after it, whose messages may not be in their sessions, for the session writer to
//! read back and check (`sessions::Message::Check`). A queue with no `filed` mark at
//! all (an older lowkey's, or one that crashed before its first) has every pending
//! event checked so. Start-up with a million pending events costs the memory of a few.

use super::dedup::{Deliveries, Seen};
use super::record::{self, Head, Location, Record, RecordRef, Records};
use super::session_file::{append_session, interruption};
use super::sessions::{self, Budget};
use super::writer::Writer;
use super::{Backlog, Event, Home, Passed, Recovery, StoreError, io_err};
use crate::session::{self, Line, Role, RunStatus, encode_json};
use crate::window::Position;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

/// Reads the queue, puts the sessions of pending events whose runs started right,
/// leaves the pending events before the `filed` watermark in the queue for dispatch to
/// read back (the `Backlog`), and tells the session writer (`sessions`) where those
/// after it are: it reads them back, writes the messages still missing and hands the
/// jobs on to dispatch, in queue order. Returns the queue writer, ready to run.
///
/// The queue is read twice, a piece at a time, so start-up costs the same memory
/// whatever the backlog: first its marks, then its `accepted` records, each read only
/// as far as `Head` (the body is checked, not kept) unless its run started.
pub(super) fn recover(
    home: &Home,
    sessions: mpsc::Sender<sessions::Command>,
    budget: &Budget,
) -> Result<(Writer, Recovery), StoreError> {
    let queue = home.queue();
    let mut marks = QueueMarks::read(&queue).map_err(io_err(&queue))?;
    let mut read = read_pending(&mut marks).map_err(io_err(&queue))?;
    let deliveries = Deliveries::load(home, read.seen)?;
    let mut writer = Writer::new(home, &marks.segments, deliveries, sessions, budget.clone());
    let mut backlog = read.backlog;
    for (seq, n) in read.live {
        writer.add_live(seq, n);
    }

    // The events whose runs started, per session: their sessions are read.
    let mut wanted: HashMap<&str, HashSet<&str>> = HashMap::new();
    for p in &read.checked {
        wanted
            .entry(&p.event.session)
            .or_default()
            .insert(&p.event.id);
    }
    let found: HashMap<&str, HashMap<String, Marks>> = wanted
        .iter()
        .map(|(session, ids)| (*session, read_marks(home, session, ids)))
        .collect();

    let mut completed = Vec::new();
    let mut after = read.after;
    for p in &read.checked {
        let event = &p.event;
        let found = found[event.session.as_str()]
            .get(&event.id)
            .copied()
            .unwrap_or_default();
        if repair(home, event, p.rerun, found) {
            completed.push(event.id.as_str());
            if p.location.start() >= backlog.end {
                after.waiting -= 1;
            }
            continue;
        }
        writer.add_live(p.location.seq, 1);
        if p.location.start() < backlog.end {
            backlog.add(p.location.start());
        }
    }
    read.passed
        .done
        .extend(completed.iter().map(|id| (*id).to_owned()));
    let passed = Arc::new(read.passed);
    backlog.passed = passed.clone();
    let recovery = Recovery {
        pending: backlog.waiting + after.waiting,
        completed: completed.len(),
        backlog,
    };
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
    // The events after the watermark go through the session writer, which reads them
    // back, puts in the messages their sessions lack, and hands them on to dispatch.
    if let Some(span) = after.span {
        writer.send_sessions(sessions::Command::OnDisk(sessions::OnDisk {
            from: span.0,
            to: span.1,
            check: Some(passed),
        }));
    }
    writer.maintain_segments();
    Ok((writer, recovery))
}

/// A pending event whose session start-up reads, whole.
struct Pending {
    event: Event,
    location: Location,
    /// Its result once failed to sync.
    rerun: bool,
}

/// Puts the session of a pending event whose run started right after a crash: a run
/// cut short gets an `interrupted` record, and so does a result that may not be on
/// disk; a message that was lost is put back first. Returns whether the session holds
/// the run's final result (only the `done` mark was lost). A record that cannot be
/// written is only logged: the event runs again either way (at least once), and
/// lowkey stays up to answer senders.
fn repair(home: &Home, event: &Event, rerun: bool, marks: Marks) -> bool {
    let (lines, trusted) = repair_lines(event, rerun, marks);
    if !lines.is_empty() {
        if let Err(e) = append_session(home, &event.header(), &session::encode(&lines)) {
            tracing::warn!(session_id = %event.session, event_id = %event.id, error = %e, "cannot put the recovered event's session right");
        }
    }
    trusted
}

/// The lines an event's session lacks after a crash, given what it shows (`marks`),
/// and whether it holds the run's final result (see `repair`).
pub(super) fn repair_lines(event: &Event, rerun: bool, marks: Marks) -> (Vec<Line>, bool) {
    let trusted = marks.trusted_final(rerun);
    let mut lines = Vec::new();
    // After a power cut, the run's result can be on disk while its message, written
    // before it and never synced on its own, is not: the session gets the message back
    // from the queue record.
    if !marks.message {
        lines.push(event.message());
    }
    if !trusted {
        lines.extend(interruption(event, marks.last));
    }
    (lines, trusted)
}

/// What a session file says of the events `ids`. It is read from its end, back to the
/// first line where the messages of all of them have been seen: an event's lines all
/// come after its message, so nothing of them is before. (When one is missing, the
/// whole file is read.) A session that cannot be read is only logged: its events run
/// again.
pub(super) fn read_marks(
    home: &Home,
    session: &str,
    ids: &HashSet<&str>,
) -> HashMap<String, Marks> {
    let path = home.session_file(session);
    let mut marks: HashMap<String, Marks> = HashMap::new();
    let mut unseen = ids.len();
    let read = backward_lines(&path, |raw| {
        let Ok(line) = serde_json::from_slice::<Line>(raw) else {
            return true;
        };
        let (event, run) = match &line {
            Line::Message(m) if m.role == Role::User => (&m.event, None),
            Line::Run(r) => (&r.event, Some(r.status)),
            _ => return true,
        };
        if !ids.contains(event.as_str()) {
            return true;
        }
        let m = marks.entry(event.clone()).or_default();
        match run {
            Some(status) => m.saw_before(status),
            None if !m.message => {
                m.message = true;
                unseen -= 1;
            }
            None => {}
        }
        unseen > 0
    });
    match read {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::error!(session_id = %session, error = %e, "cannot read a session to recover its events; they run again");
        }
    }
    marks
}

/// Calls `each` with the lines of a file from the last to the first (a last line may
/// lack its `\n`), until it returns `false`. Reads the file in pieces from its end, so a
/// long session costs only the part looked at.
fn backward_lines(path: &Path, mut each: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
    const PIECE: u64 = 64 * 1024;
    let file = File::open(path)?;
    let mut end = file.metadata()?.len();
    // The bytes of the line that runs into the piece before.
    let mut carry: Vec<u8> = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(PIECE);
        let mut piece = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut piece, start)?;
        piece.extend_from_slice(&carry);
        let mut lines = piece.rsplit(|b| *b == b'\n');
        // The first piece's first line is whole; any other's may go on in the one before.
        let first = if start > 0 { lines.next_back() } else { None };
        for line in lines {
            if !line.is_empty() && !each(line) {
                return Ok(());
            }
        }
        carry = first.map(<[u8]>::to_vec).unwrap_or_default();
        end = start;
    }
    Ok(())
}

/// What a session file says of one of its events.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Marks {
    /// Its user message is there.
    message: bool,
    /// The status of its last run record.
    last: Option<RunStatus>,
    /// A final run record came after an `interrupted` one: the run that followed an
    /// interruption (or a result that may not be on disk) got as far as its end.
    final_after_interruption: bool,
    /// `final_after_interruption` is known: the reading has met a record that sets it.
    decided: bool,
}

impl Marks {
    /// The session shows the event's message and no run of it: nothing to put right.
    pub(super) fn message_only(&self) -> bool {
        self.message && self.last.is_none()
    }

    /// A run record met going backwards: one before all those seen so far.
    fn saw_before(&mut self, status: RunStatus) {
        if self.last.is_none() {
            self.last = Some(status);
        }
        // Whether the last of the `interrupted` and final records is a final one.
        if !self.decided && (status == RunStatus::Interrupted || status.is_final()) {
            self.final_after_interruption = status.is_final();
            self.decided = true;
        }
    }

    /// Whether the session shows the event's run as ended for good. For an event whose
    /// result once failed to sync (`rerun`), only a final record after the note that
    /// it runs again counts: the one before it may have been read back from memory.
    fn trusted_final(&self, rerun: bool) -> bool {
        self.last.is_some_and(RunStatus::is_final) && (!rerun || self.final_after_interruption)
    }
}

/// The queue's marks: the first of the two reads of it.
struct QueueMarks {
    /// Segment files, oldest first.
    segments: Vec<(u64, PathBuf)>,
    /// Segments without a `filed` mark: an older lowkey's, which may hold a second
    /// copy of a record, or ones written before the first watermark.
    unmarked: HashSet<u64>,
    /// Every event marked done.
    done: HashSet<String>,
    /// Every event whose result did not reach the disk.
    rerun: HashSet<String>,
    /// Every event whose run started.
    started: HashSet<String>,
    /// The furthest `filed` mark.
    filed: Option<Position>,
}

impl QueueMarks {
    fn read(queue: &Path) -> io::Result<QueueMarks> {
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
        let found = in_parallel(&segments, |_, path| {
            let mut found = Vec::new();
            let read = each_record(path, |_, record| {
                if !record::is_accepted(record)
                    && let Ok(mark) = serde_json::from_slice::<Record>(record)
                {
                    found.push(mark);
                }
            });
            match read {
                Ok(()) => Ok(Some(found)),
                // Deleted by the daemon while another process reads the queue.
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        let mut marks = QueueMarks {
            segments: Vec::new(),
            unmarked: HashSet::new(),
            done: HashSet::new(),
            rerun: HashSet::new(),
            started: HashSet::new(),
            filed: None,
        };
        for ((seq, path), found) in segments.into_iter().zip(found) {
            let Some(found) = found else {
                continue;
            };
            let mut filed = false;
            for mark in found {
                match mark {
                    Record::Done(id) => {
                        marks.done.insert(id);
                    }
                    Record::Rerun(id) => {
                        marks.rerun.insert(id);
                    }
                    Record::Started(id) => {
                        marks.started.insert(id);
                    }
                    Record::Filed(position) => {
                        filed = true;
                        marks.filed = marks.filed.max(Some(position));
                    }
                    Record::Accepted(_) => {}
                }
            }
            if !filed {
                marks.unmarked.insert(seq);
            }
            marks.segments.push((seq, path));
        }
        Ok(marks)
    }
}

/// How many threads read the segments at start-up: parsing the records costs about as
/// much as reading them, and two reads at once keep a disk busier.
const READERS: usize = 2;

/// `read` of every segment, by `READERS` threads at once; the results in the segments'
/// order. The first error stops it.
fn in_parallel<T: Send>(
    segments: &[(u64, PathBuf)],
    read: impl Fn(u64, &Path) -> io::Result<T> + Sync,
) -> io::Result<Vec<T>> {
    let next = AtomicUsize::new(0);
    let found: Vec<io::Result<Vec<(usize, T)>>> = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((seq, path)) = segments.get(i) else {
                            return Ok(mine);
                        };
                        mine.push((i, read(*seq, path)?));
                    }
                })
            })
            .collect();
        readers
            .into_iter()
            .map(|r| r.join().expect("a queue reader thread"))
            .collect()
    });
    let mut all = Vec::with_capacity(segments.len());
    for mine in found {
        all.extend(mine?);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

/// Calls `each` with every record of a segment file and the offset it starts at.
fn each_record(path: &Path, mut each: impl FnMut(u64, &[u8])) -> io::Result<()> {
    let mut records = Records::open(File::open(path)?, 0, u64::MAX)?;
    while let Some((offset, record)) = records.next()? {
        each(offset, record);
    }
    Ok(())
}

/// Where the second copies of `accepted` records are: an event is run once even if its
/// record is in the queue twice (a copy left by an older lowkey's start-up compaction
/// cut short by a crash). Only segments without a `filed` mark can hold one, so only
/// those are read.
fn copies_in(marks: &QueueMarks) -> io::Result<HashSet<Position>> {
    let mut ids = HashSet::new();
    let mut copies = HashSet::new();
    for (seq, path) in marks
        .segments
        .iter()
        .filter(|(seq, _)| marks.unmarked.contains(seq))
    {
        let read = each_record(path, |offset, record| {
            if let Some(head) = record::head(record)
                && !ids.insert(head.id.to_string())
            {
                copies.insert(Position { seq: *seq, offset });
            }
        });
        match read {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(copies)
}

/// Calls `each` with the `accepted` records of a segment (done or not), in queue
/// order, with where each is and its `Head`, passing over `copies`. A record that does
/// not parse was torn and never acknowledged: it is passed over too. A segment that is
/// gone (deleted while another process reads the queue) holds none.
fn each_accepted(
    seq: u64,
    path: &Path,
    copies: &HashSet<Position>,
    mut each: impl FnMut(Location, &Head, &[u8]),
) -> io::Result<()> {
    let read = each_record(path, |offset, record| {
        let Some(head) = record::head(record) else {
            return;
        };
        let location = Location {
            seq,
            offset,
            len: record.len(),
        };
        if !copies.contains(&location.start()) {
            each(location, &head, record);
        }
    });
    match read {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        read => read,
    }
}

/// What the second read of the queue found.
#[derive(Default)]
struct PendingRead {
    /// The deliveries the `accepted` records hold, for dedup.
    seen: Vec<Seen>,
    /// Per segment, how many pending events in `backlog` it holds.
    live: HashMap<u64, usize>,
    /// The pending events whose runs started (or whose results did not sync), whole,
    /// in queue order: start-up reads their sessions.
    checked: Vec<Pending>,
    /// The pending events before the watermark, not counting those in `checked`.
    backlog: Backlog,
    /// The pending events after it (the `filed` watermark), `checked` ones too.
    after: Stretch,
    /// What reads of the queue pass over.
    passed: Passed,
}

/// Pending events in a stretch of the queue: from the start of the first to the end of
/// the last, and how many.
#[derive(Default)]
struct Stretch {
    span: Option<(Position, Position)>,
    waiting: usize,
}

impl Stretch {
    /// Adds `n` events from `from` up to `to`, after those already in.
    fn add(&mut self, from: Position, to: Position, n: usize) {
        self.span.get_or_insert((from, to)).1 = to;
        self.waiting += n;
    }

    /// Adds the events of the stretch after this one.
    fn extend(&mut self, next: Stretch) {
        if let Some((from, to)) = next.span {
            self.add(from, to, next.waiting);
        }
    }
}

/// What the second read found in one segment.
#[derive(Default)]
struct SegmentRead {
    seen: Vec<Seen>,
    /// Its pending events, not counting those in `checked`.
    live: usize,
    checked: Vec<Pending>,
    /// Its pending events before the watermark, not counting those in `checked`.
    backlog: Stretch,
    /// Its pending events after the watermark, `checked` ones too.
    after: Stretch,
}

/// The second read of the queue: the pending events, put together in queue order from
/// what each segment holds.
fn read_pending(marks: &mut QueueMarks) -> io::Result<PendingRead> {
    let copies = copies_in(marks)?;
    let parts = in_parallel(&marks.segments, |seq, path| {
        read_segment(marks, &copies, seq, path)
    })?;

    let mut read = PendingRead::default();
    let mut backlog = Stretch::default();
    for ((seq, _), part) in marks.segments.iter().zip(parts) {
        read.seen.extend(part.seen);
        read.live.insert(*seq, part.live);
        read.checked.extend(part.checked);
        backlog.extend(part.backlog);
        read.after.extend(part.after);
    }
    // Events before the watermark are filed: dispatch reads them back from the queue.
    let end = marks.filed.unwrap_or_default();
    read.backlog.start = backlog.span.map_or(end, |(first, _)| first);
    read.backlog.end = end;
    read.backlog.waiting = backlog.waiting;
    read.passed.done = std::mem::take(&mut marks.done);
    read.passed.copies = copies;
    Ok(read)
}

/// The second read of one segment (see `read_pending`).
fn read_segment(
    marks: &QueueMarks,
    copies: &HashSet<Position>,
    seq: u64,
    path: &Path,
) -> io::Result<SegmentRead> {
    let end = marks.filed.unwrap_or_default();
    let mut read = SegmentRead::default();
    each_accepted(seq, path, copies, |location, head, record| {
        read.seen.extend(Seen::of(head));
        let id = head.id.as_ref();
        if marks.done.contains(id) {
            return;
        }
        let (started, rerun) = (marks.started.contains(id), marks.rerun.contains(id));
        if location.start() >= end {
            read.after.add(location.start(), location.end(), 1);
        }
        if !started && !rerun {
            read.live += 1;
            if location.start() < end {
                read.backlog.add(location.start(), location.end(), 1);
            }
            return;
        }
        // Parsed whole: start-up reads its session.
        if let Ok(Record::Accepted(event)) = serde_json::from_slice::<Record>(record) {
            read.checked.push(Pending {
                event: *event,
                location,
                rerun,
            });
        }
    })?;
    Ok(read)
}

/// Accepted events whose runs have not finished, in acceptance order, read from the
/// queue while the daemon may be writing it (for `lowkey sessions`).
pub fn queued(home: &Home) -> io::Result<Vec<Event>> {
    let mut events = Vec::new();
    each_queued(home, |event| events.push(event))?;
    Ok(events)
}

/// Hands each of [`queued`]'s events to `f` as it is read, so a reader that keeps only
/// some (`lowkey events`) holds no more than those, however long the backlog.
pub fn each_queued(home: &Home, mut f: impl FnMut(Event)) -> io::Result<()> {
    let marks = match QueueMarks::read(&home.queue()) {
        Ok(marks) => marks,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let copies = copies_in(&marks)?;
    for (seq, path) in &marks.segments {
        each_accepted(*seq, path, &copies, |_, head, record| {
            if marks.done.contains(head.id.as_ref()) {
                return;
            }
            if let Ok(Record::Accepted(event)) = serde_json::from_slice(record) {
                f(*event);
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Run;
    use crate::store::Job;
    use crate::store::segment::segment_path;
    use crate::store::sessions::SessionWriter;
    use crate::store::testing::{empty_home, event};

    /// Recovers `home`; returns what it handed to the session writer.
    fn recovered(home: &Home) -> (Recovery, Vec<Job>) {
        let (sessions, handed) = mpsc::channel();
        let (writer, recovery) = recover(home, sessions, &Budget::default()).unwrap();
        // What start-up handed the session writer, filed as it files it.
        drop(writer);
        let (jobs_tx, mut jobs_rx) = tokio::sync::mpsc::unbounded_channel();
        let (queue_tx, _queue) = tokio::sync::mpsc::unbounded_channel();
        SessionWriter::new(home, jobs_tx, queue_tx.downgrade(), Budget::default())
            .unwrap()
            .run(handed);
        let mut jobs = Vec::new();
        while let Ok(batch) = jobs_rx.try_recv() {
            jobs.extend(batch);
        }
        (recovery, jobs)
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
        let (recovery, jobs) = recovered(&home);
        assert_eq!(recovery.pending, 1);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].event, event.id);
        assert_eq!(jobs[0].location.seq, 1, "the first copy runs");
        // And a read of waiting events back from the queue passes over the copy.
        let copy = Position { seq: 2, offset: 0 };
        assert!(recovery.backlog.passed.holds("another", copy));
        assert!(
            !recovery
                .backlog
                .passed
                .holds("another", Position { seq: 1, offset: 0 })
        );
    }

    /// Before the `filed` mark, only an event whose run started has its session read;
    /// after it, every event's is (by the session writer), a message found there is not
    /// written again, and a run found finished (its `started` and `done` marks lost, as
    /// in an older lowkey's queue) is not run again, nor read back by dispatch.
    #[test]
    fn sessions_are_read_for_started_runs_and_events_after_the_watermark() {
        let (_dir, home) = empty_home();
        let [filed, started, after, missing, finished] =
            ["01A", "01B", "01C", "01D", "01E"].map(|id| Event {
                session: id.into(),
                ..event(id)
            });
        let mut queue = Vec::new();
        let (_, spans) =
            encode_accepted_into(&mut queue, [&filed, &started, &after, &missing, &finished]);
        encode_json(&mut queue, &RecordRef::Started(&started.id));
        let watermark = Position {
            seq: 1,
            offset: spans[2].0 as u64,
        };
        encode_json(&mut queue, &RecordRef::Filed(watermark));
        fs::write(segment_path(&home.queue(), 1), &queue).unwrap();
        let run = |e: &Event| Line::Run(Run::new(&e.id, RunStatus::Started, &e.agent));
        // `filed`'s session lacks its message: no one reads it, as the mark says it is
        // there. `after`'s holds its message.
        for (e, lines) in [
            (&filed, vec![run(&filed)]),
            (&started, vec![started.message(), run(&started)]),
            (&after, vec![after.message()]),
            (
                &finished,
                vec![
                    finished.message(),
                    Line::Run(Run::new(&finished.id, RunStatus::Finished, &finished.agent)),
                ],
            ),
        ] {
            append_session(&home, &e.header(), &session::encode(&lines)).unwrap();
        }

        let (recovery, jobs) = recovered(&home);
        assert_eq!(recovery.pending, 5);
        // The two before the watermark wait in the queue for dispatch to read back.
        let backlog = &recovery.backlog;
        assert_eq!(backlog.waiting, 2);
        assert_eq!(
            (backlog.start, backlog.end),
            (Position { seq: 1, offset: 0 }, watermark)
        );
        // The two after it go through the session writer, which checks their sessions.
        let ids: Vec<&str> = jobs.iter().map(|j| j.event.as_str()).collect();
        assert_eq!(ids, ["01C", "01D"]);
        let at = Position {
            seq: 1,
            offset: spans[4].0 as u64,
        };
        assert!(backlog.passed.holds("01E", at), "01E is passed over");
        let lines = |e: &Event| session::read(&home.session_file(&e.session)).unwrap();
        assert_eq!(
            lines(&filed).len(),
            2,
            "not read, so not marked interrupted"
        );
        assert!(
            matches!(lines(&started).last(), Some(Line::Run(r)) if r.status == RunStatus::Interrupted),
            "the run cut short is marked"
        );
        assert_eq!(lines(&after).len(), 2, "its message is not written twice");
        assert_eq!(
            lines(&missing),
            [Line::Session(missing.header()), missing.message()]
        );
    }

    fn encode_accepted_into<'a>(
        out: &mut Vec<u8>,
        events: impl IntoIterator<Item = &'a Event>,
    ) -> (usize, Vec<(usize, usize)>) {
        let (bytes, spans) = record::encode_accepted(events.into_iter());
        out.extend_from_slice(&bytes);
        (bytes.len(), spans)
    }

    /// The backward reader gives every line, last first, whatever their lengths against
    /// its pieces, and stops when told.
    #[test]
    fn a_file_read_backwards_gives_every_line_last_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let lines: Vec<Vec<u8>> = [10, 70_000, 1, 65_535, 65_536, 3, 200_000, 7]
            .iter()
            .enumerate()
            .map(|(i, &n)| vec![b'a' + i as u8; n])
            .collect();
        for torn_end in [false, true] {
            let mut bytes = lines.join(&b'\n');
            if !torn_end {
                bytes.push(b'\n');
            }
            fs::write(&path, &bytes).unwrap();
            let mut seen = Vec::new();
            backward_lines(&path, |l| {
                seen.push(l.to_vec());
                true
            })
            .unwrap();
            seen.reverse();
            assert_eq!(seen, lines);
            let mut n = 0;
            backward_lines(&path, |_| {
                n += 1;
                n < 3
            })
            .unwrap();
            assert_eq!(n, 3, "it stops when told");
        }
    }

    /// Read backwards, a session says what reading it forwards would: the last run
    /// record, and whether a final one follows the last interruption.
    #[test]
    fn marks_read_backwards_match_the_order_of_the_records() {
        use RunStatus::*;
        let (_dir, home) = empty_home();
        let e = event("01E");
        for (records, last, final_after) in [
            (vec![], None, false),
            (vec![Started], Some(Started), false),
            (vec![Started, Finished], Some(Finished), true),
            (vec![Finished, Interrupted], Some(Interrupted), false),
            (
                vec![Finished, Interrupted, Started, Failed],
                Some(Failed),
                true,
            ),
            (vec![Failed, Interrupted, Started], Some(Started), false),
        ] {
            let path = home.session_file(&e.session);
            let _ = fs::remove_file(&path);
            let mut lines = vec![e.message()];
            lines.extend(
                records
                    .iter()
                    .map(|s| Line::Run(Run::new(&e.id, *s, "bot"))),
            );
            append_session(&home, &e.header(), &session::encode(&lines)).unwrap();
            let marks = read_marks(&home, &e.session, &HashSet::from([e.id.as_str()]))[&e.id];
            assert!(marks.message);
            assert_eq!(marks.last, last, "{records:?}");
            assert_eq!(marks.final_after_interruption, final_after, "{records:?}");
        }
    }
}
