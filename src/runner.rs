//! One agent run: a child process in its own process group, fed the message on stdin.
//! `onFinish` commands (`finish.rs`) run the same way.

use crate::config::Agent;
use crate::log::escape;
use crate::session::{self, Line, Message, Role, Run, RunStatus};
use crate::store::{Event, Home};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::sync::watch;

/// How long a process group gets between TERM and KILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long the output pipes of an ended run are still read.
const PIPE_GRACE: Duration = Duration::from_secs(1);
/// The agent's reply kept in the session; the rest of stdout is read and dropped.
const MAX_REPLY_BYTES: usize = 1024 * 1024;
/// The part of an agent's stderr line that is logged; the rest of the line is read and
/// dropped, so an agent that never ends a line cannot make lowkey hold all it writes.
const MAX_STDERR_LINE: usize = 16 * 1024;

/// Variables lowkey received from systemd; an agent must not act on them.
const SYSTEMD_VARS: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// How a run ended, as recorded in the session and the log.
#[derive(Debug)]
pub struct Outcome {
    pub status: RunStatus,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub duration: Duration,
    pub reply: String,
    pub error: Option<String>,
}

enum End {
    Exited(std::io::Result<ExitStatus>),
    TimedOut,
    Stopped,
}

impl Outcome {
    pub fn new(status: RunStatus) -> Outcome {
        Outcome {
            status,
            exit_code: None,
            signal: None,
            duration: Duration::ZERO,
            reply: String::new(),
            error: None,
        }
    }

    /// The session lines that record this outcome: the agent's reply, then the run's end.
    pub fn lines(&self, event: &Event) -> Vec<Line> {
        let run = Run {
            exit_code: self.exit_code,
            signal: self.signal,
            duration_ms: Some(self.duration.as_millis() as u64),
            error: self.error.clone(),
            ..Run::new(&event.id, self.status, &event.agent)
        };
        let mut lines = Vec::new();
        if !self.reply.is_empty() {
            lines.push(Line::Message(Message {
                role: Role::Agent,
                text: self.reply.clone(),
                event: event.id.clone(),
                source: None,
                at: run.at.clone(),
                body: None,
                trimmed: false,
                rerun_of: None,
            }));
        }
        lines.push(Line::Run(run));
        lines
    }
}

/// What a process is, for its stderr lines in the log.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Agent,
    OnFinish,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Agent => "agent",
            Kind::OnFinish => "onFinish",
        }
    }
}

/// A started process: an agent, or an `onFinish` command.
pub struct Started {
    child: Child,
    pid: u32,
    started: Instant,
    timeout: Duration,
    kind: Kind,
}

impl Started {
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// Starts the agent, with its own environment on top of [`command`]'s.
pub fn spawn(home: &Home, agent: &Agent, event: &Event) -> std::io::Result<Started> {
    let mut cmd = command(&agent.command, home, event);
    cmd.envs(&agent.env);
    start(cmd, agent.timeout, Kind::Agent)
}

/// A process for `event`: argv without a shell, cwd the project, the `LOWKEY_*`
/// environment, piped stdio, in a new process group so a timeout can end its children
/// too.
pub fn command(argv: &[String], home: &Home, event: &Event) -> Command {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(&event.project)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for var in SYSTEMD_VARS {
        cmd.env_remove(var);
    }
    cmd.env("LOWKEY_SESSION_ID", &event.session)
        .env("LOWKEY_SESSION_FILE", home.session_file(&event.session))
        .env("LOWKEY_SOURCE", &event.source)
        .env("LOWKEY_EVENT_ID", &event.id)
        .env("LOWKEY_PROJECT", &event.project)
        .env("LOWKEY_AGENT", &event.agent);
    cmd
}

/// Spawns `cmd` (from [`command`]), to be ended after `timeout`.
pub fn start(mut cmd: Command, timeout: Duration, kind: Kind) -> std::io::Result<Started> {
    let started = Instant::now();
    let child = cmd.spawn()?;
    let pid = child.id().expect("a child that was just spawned has a pid");
    Ok(Started {
        child,
        pid,
        started,
        timeout,
        kind,
    })
}

/// Feeds `message` (the event's `text()`, or an `onFinish` command's reply) to stdin,
/// collects the reply, logs stderr, and waits for the end, the timeout, or lowkey's
/// shutdown (`stop` turning true), whichever comes first.
pub async fn wait(
    mut run: Started,
    event: &Event,
    message: String,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let mut stdin = run.child.stdin.take().expect("stdin is piped");
    let mut stdout = run.child.stdout.take().expect("stdout is piped");
    let mut stderr = run.child.stderr.take().expect("stderr is piped");
    tokio::spawn(async move {
        // An agent that exits without reading its stdin is fine: ignore EPIPE.
        let _ = stdin.write_all(message.as_bytes()).await;
    });
    let (session_id, event_id, agent_name) =
        (event.session.clone(), event.id.clone(), event.agent.clone());
    let kind = run.kind.name();
    let mut log_stderr = tokio::spawn(async move {
        let log = |line: String| {
            tracing::info!(
                session_id = %session_id,
                event_id = %event_id,
                agent = %agent_name,
                "{kind} stderr: {line}"
            );
        };
        let mut line = StderrLine::default();
        let mut chunk = [0u8; 8192];
        while let Ok(n @ 1..) = stderr.read(&mut chunk).await {
            let mut rest = &chunk[..n];
            while let Some(end) = rest.iter().position(|&b| b == b'\n') {
                line.push(&rest[..end]);
                log(line.take());
                rest = &rest[end + 1..];
            }
            line.push(rest);
        }
        if !line.is_empty() {
            log(line.take());
        }
    });
    // The reply is collected by its own task, so that a background child still
    // holding stdout cannot keep the run open after the agent itself has exited.
    let reply = Arc::new(Mutex::new(Vec::new()));
    let mut read_reply = tokio::spawn({
        let reply = reply.clone();
        async move {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                let mut reply = reply.lock().expect("reply lock");
                let room = MAX_REPLY_BYTES.saturating_sub(reply.len());
                reply.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    });
    let pgid = Pid::from_raw(run.pid as i32);
    let stopped = async {
        // Without a sender nothing will stop the run: it ends on its own.
        if stop.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let end = {
        tokio::select! {
            status = run.child.wait() => End::Exited(status),
            () = tokio::time::sleep(run.timeout) => End::TimedOut,
            () = stopped => End::Stopped,
        }
    };
    let mut outcome = match end {
        End::Exited(status) => from_status(status),
        End::TimedOut => {
            end_group(&mut run.child, pgid).await;
            Outcome {
                error: Some(format!(
                    "ran past timeoutSec ({}s); its process group was ended",
                    run.timeout.as_secs()
                )),
                ..Outcome::new(RunStatus::TimedOut)
            }
        }
        End::Stopped => {
            end_group(&mut run.child, pgid).await;
            Outcome {
                error: Some(session::INTERRUPTED.into()),
                ..Outcome::new(RunStatus::Interrupted)
            }
        }
    };
    outcome.duration = run.started.elapsed();
    // The last output may still be in the pipes; a grandchild that kept them open does
    // not get to hold the run open for long.
    let deadline = tokio::time::Instant::now() + PIPE_GRACE;
    for task in [&mut read_reply, &mut log_stderr] {
        if tokio::time::timeout_at(deadline, &mut *task).await.is_err() {
            task.abort();
        }
    }
    outcome.reply = reply_text(std::mem::take(&mut *reply.lock().expect("reply lock")));
    outcome
}

/// The agent's stderr line being read: its first [`MAX_STDERR_LINE`] bytes, and how
/// many more it had.
#[derive(Default)]
struct StderrLine {
    kept: Vec<u8>,
    dropped: usize,
}

impl StderrLine {
    fn push(&mut self, bytes: &[u8]) {
        let room = MAX_STDERR_LINE.saturating_sub(self.kept.len());
        let kept = bytes.len().min(room);
        self.kept.extend_from_slice(&bytes[..kept]);
        self.dropped += bytes.len() - kept;
    }

    fn is_empty(&self) -> bool {
        self.kept.is_empty() && self.dropped == 0
    }

    /// The line as it is logged, escaped, with a note of what was cut; starts the next.
    fn take(&mut self) -> String {
        let mut kept = std::mem::take(&mut self.kept);
        let mut dropped = std::mem::take(&mut self.dropped);
        if dropped > 0 {
            // Cut on a character boundary: a character split by the limit goes too.
            let end = char_boundary(&kept);
            dropped += kept.len() - end;
            kept.truncate(end);
        } else if kept.last() == Some(&b'\r') {
            kept.pop();
        }
        let text = escape(&String::from_utf8_lossy(&kept)).into_owned();
        match dropped {
            0 => text,
            n => format!("{text} [cut: {n} more bytes]"),
        }
    }
}

/// Where `bytes` end, less the start of a UTF-8 character they hold only part of.
fn char_boundary(bytes: &[u8]) -> usize {
    // A character has at most 3 bytes after its first one.
    for start in (bytes.len().saturating_sub(3)..bytes.len()).rev() {
        let len = match bytes[start] {
            0x80..=0xbf => continue,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => 1,
        };
        return if start + len > bytes.len() {
            start
        } else {
            bytes.len()
        };
    }
    bytes.len()
}

/// TERM to the whole group, KILL after the grace period (or at once once the leader is
/// gone, for children that ignored TERM).
async fn end_group(child: &mut Child, pgid: Pid) {
    let _ = killpg(pgid, Signal::SIGTERM);
    let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = child.wait().await;
}

fn from_status(status: std::io::Result<ExitStatus>) -> Outcome {
    let mut outcome = Outcome::new(RunStatus::Failed);
    match status {
        Ok(s) => {
            outcome.exit_code = s.code();
            outcome.signal = s.signal();
            if s.success() {
                outcome.status = RunStatus::Finished;
            }
        }
        Err(e) => outcome.error = Some(format!("cannot wait for the agent: {e}")),
    }
    outcome
}

fn reply_text(bytes: Vec<u8>) -> String {
    let text = String::from_utf8_lossy(&bytes);
    text.trim_end_matches(['\n', '\r']).to_owned()
}

/// The outcome of a run of `program` that could not even start.
pub fn spawn_failed(program: &str, error: &std::io::Error) -> Outcome {
    Outcome {
        error: Some(format!("cannot start {program:?}: {error}")),
        ..Outcome::new(RunStatus::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logged(parts: &[&[u8]]) -> String {
        let mut line = StderrLine::default();
        for part in parts {
            line.push(part);
        }
        line.take()
    }

    #[test]
    fn a_stderr_line_is_logged_escaped_and_cut_on_a_character() {
        assert_eq!(logged(&[b"plain"]), "plain");
        assert_eq!(logged(&[b"crlf\r"]), "crlf");
        assert_eq!(logged(&[b"a\rFORGED\x1b[2K"]), "a\\rFORGED\\u{1b}[2K");
        assert_eq!(logged(&[b"bad \xff utf-8"]), "bad \u{fffd} utf-8");
        let x = vec![b'x'; MAX_STDERR_LINE - 2];
        // A 4-byte character the limit splits goes whole, and counts as cut.
        assert_eq!(
            logged(&[&x, "🦀".as_bytes(), b"tail"]),
            format!("{} [cut: 8 more bytes]", "x".repeat(MAX_STDERR_LINE - 2))
        );
        let x = vec![b'x'; MAX_STDERR_LINE - 4];
        assert_eq!(
            logged(&[&x, "🦀".as_bytes(), b"tail"]),
            format!("{}🦀 [cut: 4 more bytes]", "x".repeat(MAX_STDERR_LINE - 4))
        );
        // The next line starts afresh.
        let mut line = StderrLine::default();
        line.push(&vec![b'y'; MAX_STDERR_LINE + 1]);
        line.take();
        assert!(line.is_empty());
        line.push(b"next");
        assert_eq!(line.take(), "next");
    }
}
