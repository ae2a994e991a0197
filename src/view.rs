//! `lowkey sessions list|show` and `lowkey events`: sessions and events as people read
//! them.
//!
//! An accepted event is in the queue before its message is in its session file (the
//! session writer files it just after the 202, or the next start does after a crash),
//! so all of them read the queue too.
//!
//! `show` and `rerun` take what git and journalctl users type: a whole id, a unique
//! prefix of one (and `show`, `latest`).

use crate::session::{self, Line, Role, Run, RunStatus};
use crate::store::{self, Event, Home};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// One row of `sessions list`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub id: String,
    pub source: String,
    pub agent: String,
    pub project: String,
    /// The state of the session's latest event: `queued`, `running`, `answered`,
    /// `failed`, `timed_out`, or `empty`.
    pub status: &'static str,
    pub events: usize,
    pub created: String,
    /// When anything last happened in the session; the list is sorted on it.
    pub updated: String,
}

/// Queued events by session.
fn queued_by_session(home: &Home) -> io::Result<BTreeMap<String, Vec<Event>>> {
    let mut by_session: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    for event in store::queued(home)? {
        by_session
            .entry(event.session.clone())
            .or_default()
            .push(event);
    }
    Ok(by_session)
}

/// A session's lines: its file, then the queued events its file does not show yet.
fn merge(file: Vec<Line>, queued: Vec<Event>) -> Vec<Line> {
    if queued.is_empty() {
        return file;
    }
    let shown: HashSet<String> = file
        .iter()
        .filter_map(|l| match l {
            Line::Message(m) if m.role == Role::User => Some(m.event.clone()),
            _ => None,
        })
        .collect();
    let mut lines = file;
    for event in queued.into_iter().filter(|e| !shown.contains(&e.id)) {
        if lines.is_empty() {
            lines.push(Line::Session(event.header()));
        }
        lines.push(event.message());
    }
    lines
}

/// One session's transcript, or `None` when there is no such session.
///
/// The queue is read before the file: an event that leaves the queue in between has its
/// message in the file by then, while the other order could miss it in both.
pub fn transcript(home: &Home, id: &str) -> io::Result<Option<Vec<Line>>> {
    let queued: Vec<Event> = store::queued(home)?
        .into_iter()
        .filter(|e| e.session == id)
        .collect();
    let file = match session::read(&home.session_file(id)) {
        Ok(lines) => Some(lines),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if file.is_none() && queued.is_empty() {
        return Ok(None);
    }
    Ok(Some(merge(file.unwrap_or_default(), queued)))
}

/// What `sessions show` names the most recently active session by.
pub const LATEST: &str = "latest";

/// The session `sessions show` was asked for.
pub enum Found {
    /// The one session meant: its transcript.
    Session(Vec<Line>),
    /// No session has that id, nor an id that starts with it.
    Nothing,
    /// [`LATEST`] was asked for, and there are no sessions.
    NoSessions,
    /// The ids of several sessions start with it: those, newest activity first.
    Ambiguous(Vec<Summary>),
}

/// Finds the session `wanted` names. A session whose id is exactly `wanted` always
/// wins, so a fixed session name (`"target": "ops-thread"`, or even `"latest"`) is
/// never taken for a prefix of a longer one. Otherwise [`LATEST`] is the most recently
/// active session (the first of [`list`]), and anything else is a prefix of the id of
/// exactly one session, in any case, since ULIDs are read the same in either.
pub fn find(home: &Home, wanted: &str) -> io::Result<Found> {
    if let Some(lines) = transcript(home, wanted)? {
        return Ok(Found::Session(lines));
    }
    let rows = if wanted == LATEST {
        let mut rows = list(home)?;
        if rows.is_empty() {
            return Ok(Found::NoSessions);
        }
        rows.truncate(1);
        rows
    } else {
        summaries(home, |id| {
            id.get(..wanted.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(wanted))
        })?
    };
    match rows.as_slice() {
        [] => Ok(Found::Nothing),
        // A session deleted since it was listed is not there any more.
        [row] => Ok(transcript(home, &row.id)?.map_or(Found::Nothing, Found::Session)),
        _ => Ok(Found::Ambiguous(rows)),
    }
}

/// Summarises every session, newest activity first.
pub fn list(home: &Home) -> io::Result<Vec<Summary>> {
    summaries(home, |_| true)
}

/// Summarises the sessions whose id is `wanted`, newest activity first; the files of
/// the others are not read.
fn summaries(home: &Home, wanted: impl Fn(&str) -> bool) -> io::Result<Vec<Summary>> {
    let mut queued = queued_by_session(home)?;
    queued.retain(|id, _| wanted(id));
    let mut rows = Vec::new();
    for (id, path) in session_files(home)? {
        if !wanted(&id) {
            continue;
        }
        let Some(lines) = read_if_there(&path)? else {
            continue;
        };
        let pending = queued.remove(&id).unwrap_or_default();
        rows.push(summarise(&id, &merge(lines, pending)));
    }
    for (id, events) in queued {
        rows.push(summarise(&id, &merge(Vec::new(), events)));
    }
    rows.sort_by(|a, b| b.updated.cmp(&a.updated).then_with(|| b.id.cmp(&a.id)));
    Ok(rows)
}

/// The session files, each with the id it holds.
fn session_files(home: &Home) -> io::Result<Vec<(String, PathBuf)>> {
    let entries = match std::fs::read_dir(home.sessions()) {
        Ok(entries) => entries.collect::<Result<Vec<_>, _>>()?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok(entries
        .into_iter()
        .filter_map(|entry| {
            let path = entry.path();
            let id = path
                .file_name()?
                .to_str()
                .and_then(session::id_of_file_name)?
                .to_owned();
            Some((id, path))
        })
        .collect())
}

/// A session file's lines; `None` for a session deleted while listing, which is simply
/// not listed.
fn read_if_there(path: &std::path::Path) -> io::Result<Option<Vec<Line>>> {
    match session::read(path) {
        Ok(lines) => Ok(Some(lines)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn summarise(id: &str, lines: &[Line]) -> Summary {
    let mut row = Summary {
        id: id.to_owned(),
        source: String::new(),
        agent: String::new(),
        project: String::new(),
        status: "empty",
        events: 0,
        created: String::new(),
        updated: String::new(),
    };
    let mut last_event = None;
    let mut runs: HashMap<&str, RunStatus> = HashMap::new();
    for line in lines {
        let at = match line {
            Line::Session(h) => {
                row.source.clone_from(&h.source);
                row.agent.clone_from(&h.agent);
                row.project = h.project.display().to_string();
                row.created.clone_from(&h.created);
                &h.created
            }
            Line::Message(m) => {
                if m.role == Role::User {
                    row.events += 1;
                    last_event = Some(m.event.as_str());
                }
                &m.at
            }
            Line::Run(r) => {
                runs.insert(&r.event, r.status);
                &r.at
            }
        };
        if *at > row.updated {
            row.updated.clone_from(at);
        }
    }
    if let Some(event) = last_event {
        row.status = match runs.get(event) {
            None | Some(RunStatus::Interrupted) => "queued",
            Some(RunStatus::Started) => "running",
            Some(RunStatus::Finished) => "answered",
            Some(RunStatus::Failed) => "failed",
            Some(RunStatus::TimedOut) => "timed_out",
        };
    }
    row
}

/// One row of `lowkey events`: an event and what became of it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRow {
    pub event: String,
    pub source: String,
    /// When lowkey accepted it (RFC 3339, UTC); the list is sorted on it.
    pub at: String,
    /// Its latest run's outcome: `queued` (accepted, no run yet), `running`, `ok`,
    /// `failed`, `timed_out`, or `interrupted` (lowkey stopped mid-run; it runs again).
    pub outcome: &'static str,
    /// A failed run's exit code, or the signal that ended it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub session: String,
    /// The event a rerun runs again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<String>,
}

impl EventRow {
    /// The outcome for people: `failed (exit 3)`, `timed out`.
    pub fn outcome_label(&self) -> String {
        match (self.exit_code, self.signal) {
            (Some(code), _) => format!("{} (exit {code})", self.outcome),
            (None, Some(sig)) => format!("{} (signal {sig})", self.outcome),
            (None, None) => self.outcome.replace('_', " "),
        }
    }
}

/// How far a file's mtime may lag behind the `at` of an event it holds. Every line
/// about an event is written after its `at` was taken, but the kernel stamps files
/// from a coarse clock (a tick behind at most).
const MTIME_SLACK: Duration = Duration::from_secs(1);

/// The events `wanted` takes, newest first (by `at`, then id), at most `limit`.
///
/// Session files are read newest first by mtime, and no further once `limit` events
/// are certain: an event's `at` is never later than its file's mtime, so a file last
/// written before the `limit`-th newest event so far holds none newer. A `new_session`
/// source makes a file per event; this keeps `lowkey events` from reading them all.
pub fn events(
    home: &Home,
    wanted: impl Fn(&EventRow) -> bool,
    limit: Option<usize>,
) -> io::Result<Vec<EventRow>> {
    // The queue before the files, as in `transcript`. Of a long backlog only the
    // newest `limit` events it takes can be listed, so only those are kept.
    let mut kept = Vec::new();
    store::each_queued(home, |event| {
        let mut row = Vec::new();
        event_rows(&event.session, &[event.message()], &wanted, &mut row);
        if row.is_empty() {
            return;
        }
        kept.push(event);
        if let Some(limit) = limit.filter(|limit| kept.len() >= limit.saturating_mul(2)) {
            keep_newest(&mut kept, limit, |e| (&e.at, &e.id));
        }
    })?;
    let mut queued: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    for event in kept {
        queued.entry(event.session.clone()).or_default().push(event);
    }
    let mut files = Vec::new();
    for (id, path) in session_files(home)? {
        match std::fs::metadata(&path).and_then(|m| m.modified()) {
            Ok(modified) => files.push((modified, id, path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    files.sort_by_key(|(modified, ..)| std::cmp::Reverse(*modified));
    let mut rows: Vec<EventRow> = Vec::new();
    for (modified, id, path) in files {
        if let Some(limit) = limit {
            keep_newest(&mut rows, limit, |r| (&r.at, &r.event));
            let oldest_kept = limit
                .checked_sub(1)
                .and_then(|last| rows.get(last))
                .and_then(|row| humantime::parse_rfc3339(&row.at).ok());
            if oldest_kept.is_some_and(|at| modified + MTIME_SLACK < at) {
                break;
            }
        }
        let Some(lines) = read_if_there(&path)? else {
            continue;
        };
        let pending = queued.remove(&id).unwrap_or_default();
        event_rows(&id, &merge(lines, pending), &wanted, &mut rows);
    }
    // Sessions with queued events whose files were not read: either there is no file
    // yet, or it was last written before these events were accepted.
    for (id, events) in queued {
        event_rows(&id, &merge(Vec::new(), events), &wanted, &mut rows);
    }
    keep_newest(&mut rows, limit.unwrap_or(usize::MAX), |r| {
        (&r.at, &r.event)
    });
    Ok(rows)
}

/// Sorts `items` newest first by `at`, then id (ULIDs grow with time), and keeps the
/// first `limit`.
fn keep_newest<T>(items: &mut Vec<T>, limit: usize, at_and_id: impl Fn(&T) -> (&str, &str)) {
    items.sort_by(|a, b| at_and_id(b).cmp(&at_and_id(a)));
    items.truncate(limit);
}

/// The rows of one session's events that `wanted` takes.
fn event_rows(
    session: &str,
    lines: &[Line],
    wanted: &impl Fn(&EventRow) -> bool,
    rows: &mut Vec<EventRow>,
) {
    let mut created_by = "";
    let mut latest_run: HashMap<&str, &Run> = HashMap::new();
    for line in lines {
        match line {
            Line::Session(h) => created_by = &h.source,
            Line::Run(r) => {
                latest_run.insert(&r.event, r);
            }
            Line::Message(_) => {}
        }
    }
    for line in lines {
        let Line::Message(m) = line else { continue };
        if m.role != Role::User {
            continue;
        }
        let run = latest_run.get(m.event.as_str());
        let failed = run.filter(|r| r.status == RunStatus::Failed);
        let row = EventRow {
            event: m.event.clone(),
            source: m.source.as_deref().unwrap_or(created_by).to_owned(),
            at: m.at.clone(),
            outcome: match run.map(|r| r.status) {
                None => "queued",
                Some(RunStatus::Started) => "running",
                Some(RunStatus::Finished) => "ok",
                Some(RunStatus::Failed) => "failed",
                Some(RunStatus::TimedOut) => "timed_out",
                Some(RunStatus::Interrupted) => "interrupted",
            },
            exit_code: failed.and_then(|r| r.exit_code),
            signal: failed.and_then(|r| r.signal),
            session: session.to_owned(),
            rerun_of: m.rerun_of.clone(),
        };
        if wanted(&row) {
            rows.push(row);
        }
    }
}

/// The event `lowkey rerun` was asked for.
pub enum FoundEvent {
    Event(EventRow),
    /// No event has that id, nor an id that starts with it.
    Nothing,
    /// The ids of several events start with it: those, newest first.
    Ambiguous(Vec<EventRow>),
}

/// Finds the event whose id is `wanted`, or starts with it (in any case, as ULIDs read
/// the same in either). Every session is read: a prefix says nothing of when.
pub fn find_event(home: &Home, wanted: &str) -> io::Result<FoundEvent> {
    let mut rows = events(
        home,
        |row| {
            row.event
                .get(..wanted.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(wanted))
        },
        None,
    )?;
    if let Some(exact) = rows.iter().position(|row| row.event == wanted) {
        return Ok(FoundEvent::Event(rows.swap_remove(exact)));
    }
    match rows.len() {
        0 => Ok(FoundEvent::Nothing),
        1 => Ok(FoundEvent::Event(rows.remove(0))),
        _ => Ok(FoundEvent::Ambiguous(rows)),
    }
}

pub fn render_events(rows: &[EventRow]) -> String {
    let mut out = String::new();
    let width =
        |f: fn(&EventRow) -> usize, min: usize| rows.iter().map(f).max().unwrap_or(min).max(min);
    let event_w = width(|r| r.event.len(), 5);
    let source_w = width(|r| r.source.len(), 6);
    let at_w = width(|r| r.at.len(), 8);
    let outcome_w = width(|r| r.outcome_label().len(), 7);
    let session_w = width(|r| r.session.len(), 7);
    let _ = writeln!(
        out,
        "{:event_w$}  {:source_w$}  {:at_w$}  {:outcome_w$}  {:session_w$}  RERUN OF",
        "EVENT", "SOURCE", "RECEIVED", "OUTCOME", "SESSION"
    );
    for r in rows {
        let line = format!(
            "{:event_w$}  {:source_w$}  {:at_w$}  {:outcome_w$}  {:session_w$}  {}",
            r.event,
            r.source,
            r.at,
            r.outcome_label(),
            r.session,
            r.rerun_of.as_deref().unwrap_or("")
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

pub fn render_list(rows: &[Summary]) -> String {
    let mut out = String::new();
    let width = rows.iter().map(|r| r.id.len()).max().unwrap_or(2).max(2);
    let source_w = rows
        .iter()
        .map(|r| r.source.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let agent_w = rows.iter().map(|r| r.agent.len()).max().unwrap_or(5).max(5);
    let _ = writeln!(
        out,
        "{:width$}  {:source_w$}  {:agent_w$}  {:9}  UPDATED",
        "ID", "SOURCE", "AGENT", "STATUS"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:width$}  {:source_w$}  {:agent_w$}  {:9}  {}",
            r.id, r.source, r.agent, r.status, r.updated
        );
    }
    out
}

/// A session as a readable transcript.
pub fn render_show(lines: &[Line]) -> String {
    let mut out = String::new();
    for line in lines {
        match line {
            Line::Session(h) => {
                let _ = writeln!(out, "session {}", h.id);
                let _ = writeln!(
                    out,
                    "  source {} · agent {} · project {}",
                    h.source,
                    h.agent,
                    h.project.display()
                );
                let _ = writeln!(out, "  created {}", h.created);
            }
            Line::Message(m) => {
                let who = match m.role {
                    Role::User => format!(
                        "webhook from {} (event {})",
                        m.source.as_deref().unwrap_or("?"),
                        m.event
                    ),
                    Role::Agent => "agent".to_owned(),
                };
                let _ = writeln!(out, "\n[{}] {who}:", m.at);
                for text_line in m.text.lines() {
                    let _ = writeln!(out, "  {text_line}");
                }
            }
            Line::Run(r) => {
                let mut detail = match r.status {
                    RunStatus::Started => format!("run of {} started", r.agent),
                    status => format!("run {}", status.label()),
                };
                if let Some(pid) = r.pid {
                    let _ = write!(detail, " (pid {pid})");
                }
                if let Some(code) = r.exit_code {
                    let _ = write!(detail, ", exit {code}");
                }
                if let Some(sig) = r.signal {
                    let _ = write!(detail, ", signal {sig}");
                }
                if let Some(ms) = r.duration_ms {
                    let _ = write!(detail, ", {:.1}s", ms as f64 / 1000.0);
                }
                if let Some(e) = &r.error {
                    let _ = write!(detail, ": {e}");
                }
                let _ = writeln!(out, "[{}] {detail}", r.at);
            }
        }
    }
    out
}
