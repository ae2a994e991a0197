//! Helpers the core tests share on top of `support`: waiting on files with a deadline,
//! gates that hold an agent run open until the test lets it go, a raw HTTP client for
//! what `ureq` cannot send (chunked bodies), and checks of the error-body contract.
//!
//! They live in their own module instead of `support.rs` so that branches which extend
//! `support.rs` merge without touching each other.

use crate::support::{Answer, Daemon, Home, KEY, PATIENCE};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How often `wait_for` looks again. This is a poll interval, not a synchronisation: the
/// condition itself is what the test waits for, under a deadline.
const POLL: Duration = Duration::from_millis(20);

/// Polls `probe` until it returns `Some`, or panics after `PATIENCE` naming `what`.
pub fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("waited {PATIENCE:?} for {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// A file's text, or "" while it does not exist yet.
pub fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A folder outside the state folder where agent scripts leave what they saw.
/// The daemon found no unfinished work in the queue when it started.
pub fn assert_nothing_recovered(daemon: &Daemon) {
    assert_eq!(
        daemon.count_log(|l| l.contains("recovered")),
        0,
        "{}",
        daemon.log_text()
    );
}

/// Gives `cmd` the environment `Home::command` gives lowkey (this state folder, nothing
/// of systemd's), for a wrapper (a shell, `strace`, `unshare`, ...) that runs lowkey.
pub fn home_env(home: &Home, cmd: &mut Command) {
    for (key, value) in home.command(&[]).get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
}

/// A figure in KiB from `/proc/<pid>/status`, by its field name (`VmRSS`, `VmHWM`, ...).
pub fn proc_status_kib(pid: i32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

pub fn out_dir(home: &Home) -> PathBuf {
    let dir = home.dir.path().join("out");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A file agent scripts wait for before they go on, so a test can hold runs open and
/// release them when it chooses. Opened on drop too, so a failing test leaves no agent
/// waiting; the wait in the script is also bounded (about a minute).
pub struct Gate {
    path: PathBuf,
}

impl Gate {
    pub fn new(home: &Home, name: &str) -> Gate {
        Gate {
            path: home.dir.path().join(name),
        }
    }

    /// Shell that blocks until the gate is open.
    pub fn wait_sh(&self) -> String {
        wait_file_sh(&self.path.display().to_string())
    }

    pub fn open(&self) {
        std::fs::write(&self.path, b"").unwrap();
    }

    /// Closes an opened gate again: runs that start from now on wait.
    pub fn close(&self) {
        std::fs::remove_file(&self.path).unwrap();
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, b"");
    }
}

/// Shell that blocks until `path` (a shell word, expanded by the script) exists, for
/// at most about a minute, or until the folder it would be in is gone (the test ended
/// and removed its temp dir), so no agent outlives its test for long.
pub fn wait_file_sh(path: &str) -> String {
    let dir = path.rsplit_once('/').map_or(".", |(dir, _)| dir);
    format!(
        r#"i=0; while [ ! -e "{path}" ] && [ -d "{dir}" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done"#
    )
}

/// Process groups an agent may leave behind (by their leaders' pids): `kill` ends them,
/// and so does a failing test, so no stray `sleep 1000` outlives it. A passing test's
/// processes are gone already and their pids may be reused, so a drop without a panic
/// leaves them alone.
pub struct Reap(pub Vec<i32>);

impl Reap {
    pub fn kill(&self) {
        for pid in &self.0 {
            let pid = nix::unistd::Pid::from_raw(*pid);
            let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Drop for Reap {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.kill();
        }
    }
}

/// A child process killed (SIGKILL) and reaped when dropped, so one a test started
/// does not outlive it, whether the test passes or fails first.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Checks an error answer's body is JSON `{"error": "<text>"}` (and nothing else) sent
/// as JSON, and returns the text.
pub fn error_text(answer: &Answer) -> String {
    let content_type = answer.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "error body not labelled JSON: {answer:?}"
    );
    let v = answer.json();
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("error body is not an object: {answer:?}"));
    assert_eq!(obj.len(), 1, "error body has more than `error`: {answer:?}");
    obj["error"]
        .as_str()
        .unwrap_or_else(|| panic!("`error` is not a string: {answer:?}"))
        .to_owned()
}

/// `POST /api/webhook/<source>` with the test key and the given extra headers.
pub fn post_with(daemon: &Daemon, source: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let auth = format!("Bearer {KEY}");
    let mut all = vec![("Authorization", auth.as_str())];
    all.extend_from_slice(headers);
    crate::support::request(
        "POST",
        &daemon.url(&format!("/api/webhook/{source}")),
        &all,
        body,
    )
}

/// A raw HTTP/1.1 exchange as a plain client does it: writes `head` and all of `body`
/// (from another thread, so a server that answers early cannot deadlock the test), and
/// reads the answer to the end. Returns the status and the whole response text, or the
/// first error: a connection reset shows up either while writing (the server closed with
/// the body unread) or while reading.
pub fn raw_exchange(addr: &str, head: String, body: Vec<u8>) -> std::io::Result<(u16, String)> {
    raw_exchange_paced(addr, head, vec![body], Duration::ZERO)
}

/// Like `raw_exchange`, for a sender that streams its body: it writes `pieces` one by
/// one with `pace` between them, as a slow uplink does. The pause is the client's
/// behaviour under test, not a wait for the daemon: a server that answers and closes
/// before the body is all there makes the next write fail.
pub fn raw_exchange_paced(
    addr: &str,
    head: String,
    pieces: Vec<Vec<u8>>,
    pace: Duration,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    let mut writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        writer.write_all(head.as_bytes())?;
        for piece in pieces {
            std::thread::sleep(pace);
            writer.write_all(&piece)?;
        }
        writer.flush()
    });
    let mut response = Vec::new();
    let read = stream.read_to_end(&mut response);
    let written = sender.join().expect("writer thread");
    written.map_err(|e| std::io::Error::new(e.kind(), format!("writing the request: {e}")))?;
    read.map_err(|e| std::io::Error::new(e.kind(), format!("reading the answer: {e}")))?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    Ok((status, text))
}

/// A body in HTTP/1.1 chunked encoding, in chunks of `chunk` bytes.
pub fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    chunked_pieces(body, chunk).concat()
}

/// The chunks of a chunked body, one write each; the last carries the final `0` chunk.
pub fn chunked_pieces(body: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = body
        .chunks(chunk)
        .map(|part| {
            let mut piece = format!("{:x}\r\n", part.len()).into_bytes();
            piece.extend_from_slice(part);
            piece.extend_from_slice(b"\r\n");
            piece
        })
        .collect();
    match out.last_mut() {
        Some(last) => last.extend_from_slice(b"0\r\n\r\n"),
        None => out.push(b"0\r\n\r\n".to_vec()),
    }
    out
}

/// The lines of a session file whose `type` is `kind`.
pub fn of_type<'a>(lines: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    lines.iter().filter(|l| l["type"] == kind).collect()
}

/// A compact picture of a session's records for assertions:
/// `session`, `user <event>`, `agent <event>`, `run <status> <event>`.
pub fn shape(lines: &[serde_json::Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| match l["type"].as_str().unwrap_or("?") {
            "session" => "session".to_owned(),
            "message" => format!(
                "{} {}",
                l["role"].as_str().unwrap_or("?"),
                l["event"].as_str().unwrap_or("?")
            ),
            "run" => format!(
                "run {} {}",
                l["status"].as_str().unwrap_or("?"),
                l["event"].as_str().unwrap_or("?")
            ),
            other => other.to_owned(),
        })
        .collect()
}
