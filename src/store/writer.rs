//! The writer thread: the only writer of the queue.
//!
//! Requests reach it over a channel and it handles them in batches: everything waiting
//! when it wakes shares one `fdatasync` of the queue file (group commit), so durable
//! ingest costs one fsync per batch, not one per request. Each batch goes through three
//! steps: `claim` (check and claim delivery ids, encode the records), `write_queue`
//! (one write and one sync of them all) and `answer` (or `refuse` when the write
//! failed). Nothing else runs on this thread, so each batch waits only for the sync
//! before it: once a batch is answered, its events go to the session writer
//! (`sessions.rs`), which writes their messages into their sessions and hands them on to
//! dispatch; while it is far behind (`sessions::HELD_MAX`), only where the batch is.

use super::dedup::{Claim, Deliveries};
use super::record::{Location, RecordRef, encode_accepted};
use super::segment::{
    PAGE, PageBuf, SEGMENT_BYTES, SPARE_AT, Segment, Spares, WRITE_CHUNK, segment_path,
};
use super::sessions::{self, Accepted, Budget};
use super::{Event, Home, Ingested, StoreError, io_err};
use crate::session::{self, encode_json};
use crate::window::Position;
use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

/// At most this many requests share one sync; bounds the latency of the batch.
pub(super) const MAX_BATCH: usize = 1024;

pub(super) type Reply = oneshot::Sender<Result<(), StoreError>>;
pub(super) type IngestReply = oneshot::Sender<Result<Ingested, StoreError>>;

pub(super) enum Command {
    /// Make the event durable, then hand it to dispatch; or, when its delivery id was
    /// seen, answer with the first delivery's ids.
    Ingest(Box<Event>, IngestReply),
    /// Mark the event done in the queue; its result is already synced in its session.
    /// The number is the segment holding its `accepted` record.
    Done(String, u64, Reply),
    /// Mark that the event's result did not reach the disk; it stays pending.
    Rerun(String, Reply),
    /// Mark that the event's run starts, before its agent is spawned.
    Started(String, Reply),
    /// The session writer's watermark: record it with the next batch. It needs no sync of
    /// its own: a mark lost in a crash only makes start-up read more sessions.
    Filed(Position),
}

pub(super) struct Writer {
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
    /// Remembered delivery ids, and the file they are appended to.
    deliveries: Deliveries,
    /// Where accepted events go once answered; `None` once the writer stops.
    sessions: Option<mpsc::Sender<sessions::Command>>,
    /// The session writer's thread, joined when this one stops.
    pub(super) session_thread: Option<JoinHandle<Option<Position>>>,
    budget: Budget,
    /// The watermark to record with the next batch, and the last one recorded.
    filed: Option<Position>,
    filed_recorded: Option<Position>,
}

/// A batch once claimed: its records, encoded for one write, and the requests waiting
/// on them.
struct Batch {
    /// The `accepted` records, then the `done`, `rerun`, `started` and `filed` marks.
    records: Vec<u8>,
    /// The events to accept, and where each one's record sits in `records`.
    ingests: Vec<(Box<Event>, IngestReply)>,
    spans: Vec<(usize, usize)>,
    /// `done` marks with the segment of their event's record; `rerun` and `started`
    /// marks without one.
    marks: Vec<(String, Option<u64>, Reply)>,
    /// Copies of a delivery first claimed in this very batch: they are answered as
    /// duplicates only once that claim is on disk, and get 503 with it otherwise.
    copies: Vec<(Ingested, IngestReply)>,
    /// The delivery ids this batch claims.
    claimed: HashSet<String>,
    /// The new claims, as lines for the deliveries file once the batch is durable.
    seen_lines: Vec<u8>,
}

impl Writer {
    /// A writer over the queue's `segments`; its first write makes a new segment after
    /// them. They stay until their events are done, like any other.
    pub(super) fn new(
        home: &Home,
        segments: &[(u64, PathBuf)],
        deliveries: Deliveries,
        sessions: mpsc::Sender<sessions::Command>,
        budget: Budget,
    ) -> Writer {
        Writer {
            home: home.clone(),
            segment: None,
            next_seq: segments.last().map_or(1, |(s, _)| s + 1),
            spares: Spares::new(&home.queue()),
            pages: PageBuf::default(),
            segment_live: segments.iter().map(|(seq, _)| (*seq, 0)).collect(),
            deliveries,
            sessions: Some(sessions),
            session_thread: None,
            budget,
            filed: None,
            filed_recorded: None,
        }
    }

    /// Counts `n` more live events in segment `seq`.
    pub(super) fn add_live(&mut self, seq: u64, n: usize) {
        *self.segment_live.entry(seq).or_default() += n;
    }

    /// Hands accepted events to the session writer, one batch together.
    pub(super) fn hand_over(&self, accepted: Vec<Accepted>) {
        if accepted.is_empty() {
            return;
        }
        self.budget.hold(accepted.len());
        self.send_sessions(sessions::Command::File(accepted));
    }

    pub(super) fn send_sessions(&self, command: sessions::Command) {
        let sent = self
            .sessions
            .as_ref()
            .is_some_and(|s| s.send(command).is_ok());
        if !sent {
            tracing::error!(
                "the session writer has stopped; accepted events run at the next start"
            );
        }
    }

    /// Handles batches until the last `Store` is dropped; then stops the session writer
    /// and records its last watermark, so that the next start reads no session it need not.
    pub(super) fn run(mut self, mut rx: tokio_mpsc::UnboundedReceiver<Command>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            self.process(batch);
        }
        self.sessions = None;
        let last = self.session_thread.take().and_then(|t| t.join().ok());
        if let Some(position) = last.flatten() {
            self.process(vec![Command::Filed(position)]);
        }
    }

    /// Handles one batch: claims it, writes and syncs the queue once for every record
    /// in it, then answers every request in it (or refuses them all when the write
    /// failed). Maintenance comes after the answers, so it never delays them.
    pub(super) fn process(&mut self, commands: Vec<Command>) {
        let batch = self.claim(commands);
        match self.write_queue(&batch.records) {
            Ok((seq, base)) => {
                self.answer(batch, seq, base);
                self.maintain_segments();
                self.deliveries.maintain(&self.home);
            }
            Err(e) => self.refuse(batch, e),
        }
    }

    /// Sorts the batch's requests, answers repeated deliveries at once, claims the new
    /// delivery ids, and encodes the records to write.
    fn claim(&mut self, commands: Vec<Command>) -> Batch {
        let mut ingests = Vec::new();
        let mut done = Vec::new();
        let mut reruns = Vec::new();
        let mut started = Vec::new();
        let mut copies = Vec::new();
        let mut claimed = HashSet::new();
        let mut seen_lines = Vec::new();
        let now = session::unix_now();
        for cmd in commands {
            match cmd {
                Command::Ingest(e, r) => {
                    match self.deliveries.claim(&e, now, &mut seen_lines) {
                        Claim::Duplicate(key, answer) => {
                            if claimed.contains(&key) {
                                copies.push((answer, r));
                            } else {
                                let _ = r.send(Ok(answer));
                            }
                            continue;
                        }
                        Claim::New(key) => {
                            claimed.insert(key);
                        }
                        Claim::Untracked => {}
                    }
                    ingests.push((e, r));
                }
                Command::Done(id, seq, r) => done.push((id, Some(seq), r)),
                Command::Rerun(id, r) => reruns.push((id, r)),
                Command::Started(id, r) => started.push((id, r)),
                Command::Filed(position) => {
                    if self.filed.is_none_or(|p| p < position) {
                        self.filed = Some(position);
                    }
                }
            }
        }

        let (mut records, spans) = encode_accepted(ingests.iter().map(|(e, _)| &**e));
        for (id, _, _) in &done {
            encode_json(&mut records, &RecordRef::Done(id));
        }
        for (id, _) in &reruns {
            encode_json(&mut records, &RecordRef::Rerun(id));
        }
        for (id, _) in &started {
            encode_json(&mut records, &RecordRef::Started(id));
        }
        if let Some(position) = self.filed.filter(|p| Some(*p) > self.filed_recorded) {
            encode_json(&mut records, &RecordRef::Filed(position));
        }
        // The other marks answer like `done` marks, but leave their events live.
        done.extend(
            reruns
                .into_iter()
                .chain(started)
                .map(|(id, r)| (id, None, r)),
        );
        Batch {
            records,
            ingests,
            spans,
            marks: done,
            copies,
            claimed,
            seen_lines,
        }
    }

    /// Answers a batch whose records are durable, in segment `seq` from offset `base`.
    fn answer(&mut self, batch: Batch, seq: u64, base: u64) {
        for (answer, reply) in batch.copies {
            let _ = reply.send(Ok(answer));
        }
        for (_, segment, reply) in batch.marks {
            if let Some(n) = segment.and_then(|s| self.segment_live.get_mut(&s)) {
                *n = n.saturating_sub(1);
            }
            let _ = reply.send(Ok(()));
        }
        self.filed_recorded = self.filed_recorded.max(self.filed);

        // Delivery ids are durable in the queue; the deliveries file is synced before any
        // queue segment is deleted.
        self.deliveries
            .append(&batch.seen_lines, batch.claimed.len());
        if !batch.ingests.is_empty() {
            self.add_live(seq, batch.ingests.len());
        }
        let locations: Vec<Location> = batch
            .spans
            .iter()
            .map(|(start, len)| Location {
                seq,
                offset: base + *start as u64,
                len: *len,
            })
            .collect();
        let (events, replies): (Vec<_>, Vec<_>) = batch.ingests.into_iter().unzip();
        for reply in replies {
            let _ = reply.send(Ok(Ingested::Accepted));
        }
        // Off the senders' path: they have their answers. Ingest creates no file; the
        // session writer writes the messages. While it is far behind, it is only told
        // where the events are, and reads them back from the queue.
        let (Some(first), Some(last)) = (locations.first(), locations.last()) else {
            return;
        };
        if !self.budget.has_room(locations.len()) {
            let on_disk = sessions::Command::OnDisk(sessions::OnDisk {
                from: first.start(),
                to: last.end(),
                check: None,
            });
            self.send_sessions(on_disk);
            return;
        }
        let accepted = events
            .into_iter()
            .zip(locations)
            .map(|(event, location)| Accepted {
                job: event.job(location),
                message: self.budget.message(event),
            })
            .collect();
        self.hand_over(accepted);
    }

    /// Answers every request of a batch that did not reach the disk with the error, and
    /// forgets the delivery ids it claimed.
    fn refuse(&mut self, batch: Batch, e: StoreError) {
        tracing::error!(error = %e, "cannot write the queue; answering 503");
        self.deliveries.forget(batch.claimed.iter());
        for (_, reply) in batch.ingests {
            let _ = reply.send(Err(e.copy()));
        }
        for (_, reply) in batch.copies {
            let _ = reply.send(Err(e.copy()));
        }
        for (_, _, reply) in batch.marks {
            let _ = reply.send(Err(e.copy()));
        }
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
    pub(super) fn write_queue(&mut self, records: &[u8]) -> Result<(u64, u64), StoreError> {
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
    pub(super) fn maintain_segments(&mut self) {
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
                    // The older segments may go, and the last `filed` mark with them:
                    // the new one gets it again with its first batch.
                    self.filed_recorded = None;
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
        if !self.deliveries.make_durable(&self.home) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::recovery::recover;
    use crate::store::segment::{make_spare, spare_path};
    use crate::store::testing::{empty_home, recover_quietly};
    use std::fs::File;

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

    fn wal_files(home: &Home) -> usize {
        fs::read_dir(home.queue())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("wal".as_ref()))
            .count()
    }

    #[test]
    fn queue_writes_of_any_size_read_back_as_written() {
        let (_dir, home) = empty_home();
        let (sessions, handed) = std::sync::mpsc::channel();
        let (mut writer, _) = recover(&home, sessions, &Default::default()).unwrap();
        assert!(handed.try_recv().is_err(), "nothing to recover");
        check_written_as_given(&mut writer);
    }

    #[test]
    fn a_write_the_filesystem_refuses_unbuffered_goes_through_the_page_cache() {
        let (_dir, home) = empty_home();
        let (mut writer, _) = recover_quietly(&home).unwrap();
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
        let (mut writer, _) = recover_quietly(&home).unwrap();
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
        let (mut writer, _) = recover_quietly(&home).unwrap();
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
}
