//! Test support: a temp `LOWKEY_HOME` with a config and agent scripts, and the real
//! `lowkey` binary running on it, with its log lines captured so tests can wait for
//! events instead of sleeping.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const KEY: &str = "lk_test_key_0123456789abcdef";
/// How long a test waits for something that should happen in milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub fn lowkey_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lowkey")
}

/// A throw-away state folder and the directories tests put projects and scripts in.
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Home {
        Home {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A home whose config has one agent running `script` and one source `hook`.
    pub fn with_agent(script: &str) -> Home {
        let home = Home::new();
        let agent = home.script("agent.sh", script);
        let project = home.project("proj");
        home.write_config(&json!({
            "apiKey": KEY,
            "agents": { "bot": { "command": [agent], "timeoutSec": 30, "maxConcurrent": 4 } },
            "webhooks": { "hook": { "project": project, "agent": "bot" } }
        }));
        home
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn config_path(&self) -> PathBuf {
        self.root().join("config.json")
    }

    pub fn sessions(&self) -> PathBuf {
        self.root().join("sessions")
    }

    pub fn write_config(&self, config: &Value) {
        self.write_config_text(&serde_json::to_string_pretty(config).unwrap());
    }

    /// Writes the config mode 0600, as `lowkey init` does: readable by others, the key
    /// in it would be a warning.
    pub fn write_config_text(&self, text: &str) {
        std::fs::create_dir_all(self.root()).unwrap();
        std::fs::write(self.config_path(), text).unwrap();
        std::fs::set_permissions(self.config_path(), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }

    /// An executable `#!/bin/sh` script outside the state folder.
    pub fn script(&self, name: &str, body: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_string_lossy().into_owned()
    }

    pub fn project(&self, name: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path.to_string_lossy().into_owned()
    }

    /// Runs a lowkey subcommand to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.command(args).output().expect("run lowkey");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(lowkey_bin());
        cmd.args(args)
            .env("LOWKEY_HOME", self.root())
            .env("LOWKEY_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("JOURNAL_STREAM");
        cmd
    }

    /// Starts `lowkey serve` on a free loopback port and waits until it listens.
    pub fn serve(&self) -> Daemon {
        Daemon::spawn(self.command(&["serve", "--listen", "127.0.0.1:0"]))
    }

    /// Reads a session transcript as JSON values, one per line.
    /// A session as `lowkey sessions show --json` gives it: the session file, plus the
    /// events still queued for it (whose messages the daemon may not have filed yet).
    pub fn session(&self, id: &str) -> Vec<Value> {
        let out = self.run(&["sessions", "show", id, "--json"]);
        assert_eq!(out.code, 0, "sessions show {id}: {out:?}");
        serde_json::from_str(&out.stdout).unwrap()
    }
}

#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Log lines of a running daemon, shared with the thread that reads its stderr.
#[derive(Default)]
struct Log {
    lines: Mutex<(Vec<String>, bool)>,
    grew: Condvar,
}

/// A running `lowkey serve`. Killed (SIGKILL) when dropped.
pub struct Daemon {
    pub pid: i32,
    /// The exit code once the process has ended (`None` inside: killed by a signal).
    exit: Arc<(Mutex<Option<Option<i32>>>, Condvar)>,
    /// `127.0.0.1:PORT` when it bound a TCP port itself.
    pub addr: Option<String>,
    log: Arc<Log>,
}

impl Daemon {
    /// Spawns the command with stderr captured; when it binds a port itself, waits for
    /// the "listening on" line and records the address.
    pub fn spawn(mut cmd: Command) -> Daemon {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child: Child = cmd.spawn().expect("spawn lowkey serve");
        let stderr = child.stderr.take().unwrap();
        let pid = child.id() as i32;
        let exit = Arc::new((Mutex::new(None), Condvar::new()));
        let waiter = exit.clone();
        std::thread::spawn(move || {
            let code = child.wait().ok().and_then(|s| s.code());
            *waiter.0.lock().unwrap() = Some(code);
            waiter.1.notify_all();
        });
        let log = Arc::new(Log::default());
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("LOWKEY_TEST_ECHO").is_some() {
                    eprintln!("lowkey| {line}");
                }
                sink.lines.lock().unwrap().0.push(line);
                sink.grew.notify_all();
            }
            sink.lines.lock().unwrap().1 = true;
            sink.grew.notify_all();
        });
        let mut daemon = Daemon {
            pid,
            exit,
            addr: None,
            log,
        };
        if let Some(line) =
            daemon.try_wait_log(|l| l.contains("listening on http://") || l.contains("started"))
        {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                daemon.addr = Some(rest.split_whitespace().next().unwrap().to_owned());
            }
        }
        daemon
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.addr.as_ref().expect("daemon bound a TCP port")
        )
    }

    /// Waits for a log line matching `pred` (counting lines already seen), or panics.
    pub fn wait_log(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        match self.try_wait_log(&pred) {
            Some(line) => line,
            None => panic!(
                "no log line {what} within {PATIENCE:?}; log:\n{}",
                self.log_text()
            ),
        }
    }

    fn try_wait_log(&self, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + PATIENCE;
        let mut guard = self.log.lines.lock().unwrap();
        loop {
            if let Some(line) = guard.0.iter().find(|l| pred(l)) {
                return Some(line.clone());
            }
            let now = Instant::now();
            if guard.1 || now >= deadline {
                return None;
            }
            guard = self.log.grew.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// How many log lines match `pred` by now.
    pub fn count_log(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.log
            .lines
            .lock()
            .unwrap()
            .0
            .iter()
            .filter(|l| pred(l))
            .count()
    }

    /// Waits until `n` lines match `pred`.
    pub fn wait_log_count(&self, what: &str, n: usize, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        let mut guard = self.log.lines.lock().unwrap();
        loop {
            if guard.0.iter().filter(|l| pred(l)).count() >= n {
                return;
            }
            let now = Instant::now();
            if guard.1 || now >= deadline {
                drop(guard);
                panic!("fewer than {n} log lines {what}; log:\n{}", self.log_text());
            }
            guard = self.log.grew.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// Waits until lowkey's stderr has been read to its end (it closes at exit).
    pub fn wait_log_end(&self) {
        let guard = self.log.lines.lock().unwrap();
        let (guard, _) = self
            .log
            .grew
            .wait_timeout_while(guard, PATIENCE, |lines| !lines.1)
            .unwrap();
        assert!(guard.1, "lowkey's stderr did not close");
    }

    pub fn log_text(&self) -> String {
        self.log.lines.lock().unwrap().0.join("\n")
    }

    /// Waits for the run of `event` to end and returns its log line.
    pub fn wait_run_end(&self, event: &str) -> String {
        let tag = format!("event_id={event}");
        self.wait_log(&format!("ending the run of {event}"), |l| {
            l.contains(&tag)
                && (l.contains("run finished")
                    || l.contains("run failed")
                    || l.contains("run timed out")
                    || l.contains("run interrupted"))
        })
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), sig).unwrap();
    }

    /// Waits for the process to exit, within PATIENCE, and returns its exit code
    /// (`None` when a signal ended it).
    pub fn wait_exit(&self) -> Option<i32> {
        let (lock, cond) = &*self.exit;
        let guard = lock.lock().unwrap();
        let (guard, _) = cond
            .wait_timeout_while(guard, PATIENCE, |e| e.is_none())
            .unwrap();
        match *guard {
            Some(code) => code,
            None => panic!("lowkey did not exit; log:\n{}", self.log_text()),
        }
    }

    /// Waits up to `limit` for lowkey to exit on its own; returns whether it did.
    pub fn exits_within(&self, limit: Duration) -> bool {
        let (lock, cond) = &*self.exit;
        let guard = lock.lock().unwrap();
        let (guard, _) = cond
            .wait_timeout_while(guard, limit, |e| e.is_none())
            .unwrap();
        guard.is_some()
    }

    pub fn has_exited(&self) -> bool {
        self.exit.0.lock().unwrap().is_some()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.has_exited() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = self.wait_exit();
        }
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends a request; any status is an answer, not an error.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    let mut req = ureq::request(method, url).timeout(PATIENCE);
    for (name, value) in headers {
        req = req.set(name, value);
    }
    let res = match req.send_bytes(body) {
        Ok(res) => res,
        Err(ureq::Error::Status(_, res)) => res,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = res.status();
    let headers = res
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = res.header(&n).unwrap_or_default().to_owned();
            (n, v)
        })
        .collect();
    let body = res.into_string().unwrap_or_default();
    Answer {
        status,
        headers,
        body,
    }
}

/// `POST /api/webhook/<source>` with the test key.
pub fn post(daemon: &Daemon, source: &str, body: &str) -> Answer {
    request(
        "POST",
        &daemon.url(&format!("/api/webhook/{source}")),
        &[
            ("Authorization", &format!("Bearer {KEY}")),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
}

/// Posts and expects a 202; returns (session, event).
pub fn accept(daemon: &Daemon, source: &str, body: &str) -> (String, String) {
    let answer = post(daemon, source, body);
    assert_eq!(answer.status, 202, "expected 202, got {answer:?}");
    let v = answer.json();
    (
        v["session"].as_str().unwrap().to_owned(),
        v["event"].as_str().unwrap().to_owned(),
    )
}

pub fn is_alive(pid: i32) -> bool {
    // Signal 0 checks existence; a zombie (exited, not yet reaped) counts as gone.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .trim_start()
        .chars()
        .next();
    !stat.is_empty() && state != Some('Z')
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().mode() & 0o777
}
