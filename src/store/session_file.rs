//! Appends to session files. Only the session writer thread (`sessions.rs`) appends to
//! them while lowkey runs, and recovery before that thread starts, so each file has one
//! writer at a time and needs no lock.

use super::{Event, Home, StoreError, io_err};
use crate::session::{self, Header, Line, Run, RunStatus};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};

/// An append that reached the file (not yet its disk).
pub(super) struct Appended {
    pub(super) file: File,
    /// Where the bytes start in the file.
    pub(super) offset: u64,
    /// What was written: the bytes given, after the header of a new file or the end of a
    /// torn last line.
    pub(super) bytes: Vec<u8>,
}

/// Appends bytes to a session file, creating it (0600, with its header line) on first
/// use, in one write. A torn last line from a crash is ended first, so it stays one bad
/// line that readers skip instead of corrupting the next one. A write that fails part
/// way is cut off again, so a full disk leaves no torn line behind.
pub(super) fn append_session(
    home: &Home,
    header: &Header,
    bytes: &[u8],
) -> Result<Appended, StoreError> {
    let path = home.session_file(&header.id);
    let mut buf = Vec::with_capacity(bytes.len() + 256);
    let (file, offset) = match OpenOptions::new().read(true).append(true).open(&path) {
        Ok(file) => {
            let len = file.metadata().map_err(io_err(&path))?.len();
            let mut last = [0u8; 1];
            if len > 0
                && file.read_at(&mut last, len - 1).map_err(io_err(&path))? == 1
                && last[0] != b'\n'
            {
                buf.push(b'\n');
            }
            (file, len)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let file = OpenOptions::new()
                .append(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io_err(&path))?;
            buf.extend(session::encode(&[Line::Session(header.clone())]));
            (file, 0)
        }
        Err(e) => return Err(io_err(&path)(e)),
    };
    buf.extend_from_slice(bytes);
    if let Err(e) = (&file).write_all(&buf) {
        // If even this fails, the next append ends the torn line.
        let _ = file.set_len(offset);
        return Err(io_err(&path)(e));
    }
    Ok(Appended {
        file,
        offset,
        bytes: buf,
    })
}

/// Writes `bytes` again at `offset` of a session file, as they were written before a
/// sync that failed (after which the kernel may have dropped them, while still showing
/// them to readers).
pub(super) fn rewrite(home: &Home, session: &str, offset: u64, bytes: &[u8]) -> io::Result<()> {
    // Not `O_APPEND`, which would put the bytes at the end whatever the offset.
    let file = OpenOptions::new()
        .write(true)
        .open(home.session_file(session))?;
    file.write_all_at(bytes, offset)
}

/// The record that marks a run as cut short, when its session shows one started (lowkey
/// stopped during it) or a result that is not to be trusted (it may not be on disk).
pub(super) fn interruption(event: &Event, last: Option<RunStatus>) -> Option<Line> {
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
