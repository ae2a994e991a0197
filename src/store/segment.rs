//! Queue segment files (`queue/<seq>.wal`): making them, writing pages into them, and
//! the zero-filled spares the next one is made from.

use super::{StoreError, io_err, sync_dir};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;

/// A queue segment is closed and a new one started past this size.
pub(super) const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Past this much of a segment, a zero-filled spare is made for the next one.
pub(super) const SPARE_AT: u64 = SEGMENT_BYTES / 2;
/// Queue writes are whole pages at page offsets (see `write_queue`).
pub(super) const PAGE: u64 = 4096;
/// A queue write larger than this goes to the disk in pieces of this size.
pub(super) const WRITE_CHUNK: usize = 1024 * 1024;

pub(super) struct Segment {
    pub(super) seq: u64,
    pub(super) path: PathBuf,
    pub(super) file: File,
    /// Where the records written so far end. The next batch starts at the first page
    /// boundary at or after it, so no write ever covers an acknowledged record. A
    /// segment made from a spare is longer, the rest of it zeros.
    pub(super) len: u64,
}

impl Segment {
    /// Where the next batch goes: the page after the last record's.
    pub(super) fn next_batch(&self) -> u64 {
        self.len.next_multiple_of(PAGE)
    }

    /// Writes `buf` at `offset`. A filesystem may take `O_DIRECT` when the file is
    /// opened and still refuse the write (`EINVAL`) when its blocks are larger than a
    /// page; the file is then reopened to go through the page cache, and the write
    /// tried once more.
    pub(super) fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        match self.file.write_all_at(buf, offset) {
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                self.file = OpenOptions::new().write(true).open(&self.path)?;
                self.file.write_all_at(buf, offset)
            }
            other => other,
        }
    }

    /// A new, empty segment: the spare put in place when there is one, else a new file.
    pub(super) fn create(queue: &Path, seq: u64, spare: bool) -> Result<Segment, StoreError> {
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

pub(super) fn segment_path(queue: &Path, seq: u64) -> PathBuf {
    queue.join(format!("{seq:016}.wal"))
}

/// The zero-filled file for the next segment, made ahead by a short-lived thread.
///
/// A sync after overwriting blocks that are already allocated and on disk writes only
/// those blocks; after an append it must also write the file's new size and block map.
/// On this kind of disk that is about 100 µs a sync instead of 170 µs, and the sync
/// is what every batch of requests waits for.
pub(super) struct Spares {
    path: PathBuf,
    /// The spare being made, or made and not taken yet.
    coming: Option<mpsc::Receiver<io::Result<()>>>,
}

impl Spares {
    pub(super) fn new(queue: &Path) -> Spares {
        let path = spare_path(queue);
        // Left by a stop while it was being made.
        let _ = fs::remove_file(&path);
        Spares { path, coming: None }
    }

    /// Starts making a spare unless one is coming already.
    pub(super) fn ask(&mut self) {
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
    pub(super) fn take(&mut self) -> bool {
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

pub(super) fn spare_path(queue: &Path) -> PathBuf {
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
pub(super) fn make_spare(path: &Path) -> io::Result<()> {
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
pub(super) struct PageBuf {
    raw: Vec<u8>,
}

impl PageBuf {
    /// The first `len` bytes (a multiple of the page size) from an aligned address. They
    /// hold whatever was written last; fresh memory is zeros.
    pub(super) fn pages(&mut self, len: usize) -> &mut [u8] {
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
