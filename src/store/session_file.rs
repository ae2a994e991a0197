//! Appends to session files. A session file is written by its session's run, on the
//! blocking pool, never by the writer thread: dispatch runs one event at a time per
//! session, and recovery repairs sessions before dispatch starts, so each file has one
//! writer at a time and needs no lock.

use super::{Event, Home, StoreError, io_err, sync_dir};
use crate::session::{self, Header, Line, Run, RunStatus};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};

/// Appends `lines` to their session; with `sync`, the file and its folder are synced
/// before it returns.
pub(super) fn write_session(
    home: &Home,
    header: &Header,
    lines: &[Line],
    sync: bool,
) -> Result<(), StoreError> {
    let file = append_session(home, header, &session::encode(lines))?;
    if sync {
        let path = home.session_file(&header.id);
        file.sync_data().map_err(io_err(&path))?;
        // The file may be new: its name must be durable too.
        let dir = home.sessions();
        sync_dir(&dir).map_err(io_err(&dir))?;
    }
    Ok(())
}

/// Appends bytes to a session file, creating it (0600, with its header line) on
/// first use. A torn last line from a crash is ended first, so it stays one bad
/// line that readers skip instead of corrupting the next one. Returns the file.
pub(super) fn append_session(
    home: &Home,
    header: &Header,
    bytes: &[u8],
) -> Result<File, StoreError> {
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
