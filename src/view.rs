//! `lowkey sessions list|show`: sessions as people read them.
//!
//! An accepted event is in the queue before its message is in its session file (the
//! session writer files it just after the 202, or the next start does after a crash),
//! so both read the queue too.
//!
//! `show` takes what git and journalctl users type: a whole id, a unique prefix of one,
//! or `latest`.

use crate::session::{self, Line, Role, RunStatus};
use crate::store::{self, Event, Home};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io;

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
    let entries = match std::fs::read_dir(home.sessions()) {
        Ok(entries) => entries.collect::<Result<Vec<_>, _>>()?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut rows = Vec::new();
    for entry in entries {
        let path = entry.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(session::id_of_file_name)
            .filter(|id| wanted(id))
        else {
            continue;
        };
        let lines = match session::read(&path) {
            Ok(lines) => lines,
            // A session deleted while listing is simply not listed.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let pending = queued.remove(id).unwrap_or_default();
        rows.push(summarise(id, &merge(lines, pending)));
    }
    for (id, events) in queued {
        rows.push(summarise(&id, &merge(Vec::new(), events)));
    }
    rows.sort_by(|a, b| b.updated.cmp(&a.updated).then_with(|| b.id.cmp(&a.id)));
    Ok(rows)
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
