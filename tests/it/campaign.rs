//! The fault campaign's bookkeeping, shared by its tests: a load that records which
//! events lowkey acknowledged, and a tally of what became of them once the fault is
//! over. Every campaign test prints its tally as one line,
//! `faults <name>: acked A, found F, lost L, duplicated D`, and fails on any loss or
//! duplicate.
//!
//! `LOWKEY_FAULTS=long` selects the long mode: more rounds and more load, for the
//! figures; the README's test command runs the short mode.

use crate::helpers::home_env;
use crate::support::{Daemon, Home, KEY};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Whether the campaign runs in its long mode.
pub fn long_mode() -> bool {
    std::env::var("LOWKEY_FAULTS").is_ok_and(|v| v == "long")
}

/// `short` in the short mode, `long` in the long one.
pub fn rounds(short: usize, long: usize) -> usize {
    if long_mode() { long } else { short }
}

/// An acknowledged event: (session, event).
pub type Acked = (String, String);

/// Posts one webhook with the test key over a fresh connection. `Err` when no HTTP
/// answer came (the daemon is down or was killed mid-request): such an event was never
/// acknowledged.
pub fn try_post(addr: &str, source: &str, body: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "POST /api/webhook/{source} HTTP/1.1\r\nHost: lowkey\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| e.to_string())?;
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {answer:?}"))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The session and event of a 202's body.
pub fn acked_ids(body: &str) -> Acked {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (
        v["session"].as_str().unwrap().to_owned(),
        v["event"].as_str().unwrap().to_owned(),
    )
}

/// Senders posting webhooks to `source` until stopped, each recording the events that
/// got a 202. A refused connection or a cut-off answer is not an error: the daemon may
/// be down on purpose. Every answer other than 202 is counted by status.
pub struct Load {
    stop: Arc<AtomicBool>,
    senders: Vec<JoinHandle<Sent>>,
}

/// What senders got: the acknowledged events, and how many answers of each other status.
pub type Sent = (Vec<Acked>, HashMap<u16, usize>);

impl Load {
    /// Starts `senders` threads posting to the address `addr()` gives at each attempt
    /// (it may change across restarts; `None` while there is no daemon to send to).
    pub fn start(
        senders: usize,
        source: &str,
        addr: impl Fn() -> Option<String> + Send + Sync + 'static,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let addr = Arc::new(addr);
        let senders = (0..senders)
            .map(|n| {
                let (stop, addr, source) = (stop.clone(), addr.clone(), source.to_owned());
                std::thread::spawn(move || {
                    let mut acked = Vec::new();
                    let mut others = HashMap::new();
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        i += 1;
                        let Some(to) = addr() else {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        };
                        let body = format!(r#"{{"sender":{n},"n":{i}}}"#);
                        match try_post(&to, &source, &body) {
                            Ok((202, body)) => acked.push(acked_ids(&body)),
                            Ok((status, _)) => *others.entry(status).or_default() += 1,
                            Err(_) => std::thread::sleep(Duration::from_millis(2)),
                        }
                    }
                    (acked, others)
                })
            })
            .collect();
        Load { stop, senders }
    }

    /// Stops the senders; returns every acknowledged event and the other answers.
    pub fn stop(self) -> Sent {
        self.stop.store(true, Ordering::SeqCst);
        let mut acked = Vec::new();
        let mut others = HashMap::new();
        for sender in self.senders {
            let (a, o) = sender.join().expect("a sender thread");
            acked.extend(a);
            for (status, n) in o {
                *others.entry(status).or_default() += n;
            }
        }
        (acked, others)
    }
}

/// What became of the acknowledged events, read from their session files.
#[derive(Debug, Default)]
pub struct Tally {
    pub acked: usize,
    /// Acknowledged events whose session holds their message and one final run record.
    pub found: usize,
    /// Acknowledged events whose session lacks their message or a final run record.
    pub lost: Vec<String>,
    /// Events with more than one user message line or more than one final run record.
    pub duplicated: Vec<String>,
}

impl Tally {
    /// Reads the session files of `home` as they are now.
    pub fn read(home: &Home, acked: &[Acked]) -> Tally {
        // Per event: user message lines, final run records.
        let mut seen: HashMap<String, (usize, usize)> = HashMap::new();
        let mut files: Vec<&str> = acked.iter().map(|(s, _)| s.as_str()).collect();
        files.sort_unstable();
        files.dedup();
        for session in files {
            let path = home.sessions().join(format!("{session}.jsonl"));
            // Bytes, not text: a crash can leave noise in a file, and each line that
            // is not JSON is skipped on its own, as lowkey's reader does.
            let bytes = std::fs::read(&path).unwrap_or_default();
            for line in bytes.split(|b| *b == b'\n') {
                let Ok(v) = serde_json::from_slice::<Value>(line) else {
                    continue;
                };
                let Some(event) = v["event"].as_str() else {
                    continue;
                };
                let entry = seen.entry(event.to_owned()).or_default();
                match (v["type"].as_str(), v["role"].as_str(), v["status"].as_str()) {
                    (Some("message"), Some("user"), _) => entry.0 += 1,
                    (Some("run"), _, Some("finished" | "failed" | "timed_out")) => entry.1 += 1,
                    _ => {}
                }
            }
        }
        let mut tally = Tally {
            acked: acked.len(),
            ..Tally::default()
        };
        for (_, event) in acked {
            let (messages, finals) = seen.get(event).copied().unwrap_or_default();
            if messages > 1 || finals > 1 {
                tally.duplicated.push(event.clone());
            }
            if messages == 0 || finals == 0 {
                tally.lost.push(event.clone());
            } else if messages == 1 && finals == 1 {
                tally.found += 1;
            }
        }
        tally
    }

    /// Reads the session files until every acknowledged event has a final run record,
    /// or `patience` passes without one more event getting there, and returns the last
    /// reading. A long backlog that keeps moving is waited for; a stalled one is not.
    pub fn settle(home: &Home, acked: &[Acked], patience: Duration) -> Tally {
        let mut deadline = Instant::now() + patience;
        let mut lost = usize::MAX;
        loop {
            let tally = Tally::read(home, acked);
            if tally.lost.len() < lost {
                lost = tally.lost.len();
                deadline = Instant::now() + patience;
            }
            if tally.lost.is_empty() || Instant::now() >= deadline {
                return tally;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Prints the campaign line and fails on any loss or duplicate.
    pub fn check(&self, name: &str) {
        println!("{}", self.line(name));
        assert!(
            self.is_clean(),
            "{}; lost: {:?}; duplicated: {:?}",
            self.line(name),
            self.lost,
            self.duplicated
        );
    }

    /// Adds another tally's counts and events to this one.
    pub fn merge(&mut self, other: Tally) {
        self.acked += other.acked;
        self.found += other.found;
        self.lost.extend(other.lost);
        self.duplicated.extend(other.duplicated);
    }

    /// Whether nothing was lost or duplicated.
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty() && self.duplicated.is_empty()
    }

    /// The campaign line: `faults <name>: acked A, found F, lost L, duplicated D`.
    pub fn line(&self, name: &str) -> String {
        format!(
            "faults {name}: acked {}, found {}, lost {}, duplicated {}",
            self.acked,
            self.found,
            self.lost.len(),
            self.duplicated.len()
        )
    }
}

/// Events that have a user message in some session of `home` but were never answered
/// 202: lowkey ran an event it had refused (a 503 must mean "not kept").
pub fn ran_unacked(home: &Home, acked: &[Acked]) -> Vec<String> {
    let acked: HashSet<&str> = acked.iter().map(|(_, e)| e.as_str()).collect();
    let mut unacked = Vec::new();
    for entry in std::fs::read_dir(home.sessions()).into_iter().flatten() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v["type"] == "message" && v["role"] == "user" {
                let event = v["event"].as_str().unwrap_or_default();
                if !acked.contains(event) {
                    unacked.push(event.to_owned());
                }
            }
        }
    }
    unacked
}

/// The queue's segment files (`queue/*.wal`), oldest first.
pub fn segment_files(home: &Home) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(home.root().join("queue"))
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    files.sort();
    files
}

/// `lowkey serve` on a free loopback port, started through `wrapper`: a program and
/// its arguments that end by running the command after them, as `strace -o ... ` or
/// `fiu-run -x` do. Its environment is the one `Home::command` gives lowkey.
pub fn serve_under(home: &Home, wrapper: &[&str]) -> Daemon {
    let plain = home.command(&["serve", "--listen", "127.0.0.1:0"]);
    let mut cmd = Command::new(wrapper[0]);
    cmd.args(&wrapper[1..])
        .arg(plain.get_program())
        .args(plain.get_args());
    home_env(home, &mut cmd);
    Daemon::spawn(cmd)
}

/// Mounts a small tmpfs on the queue folder, in the private mount namespace of
/// `unshare`, with whatever the folder held copied in; `$0` is the queue folder, and
/// the command follows.
const SMALL_QUEUE: &str = r#"stash=$(mktemp -d) && cp -a "$0"/. "$stash" && mount -t tmpfs -o size=256k,mode=700 tmpfs "$0" && cp -a "$stash"/. "$0" && rm -rf "$stash""#;

/// `lowkey serve` in a private mount namespace whose queue folder is a small tmpfs, so
/// a test can fill it (through `/proc/<pid>/root`) and make queue writes fail with
/// ENOSPC. `unshare` and `sh` exec, so the daemon keeps the pid they started with.
pub fn serve_with_a_small_queue(home: &Home) -> Daemon {
    let daemon = serve_in_a_small_queue(home, "");
    assert!(
        daemon.addr.is_some(),
        "lowkey did not start under unshare (the test needs root for a private mount namespace); log:\n{}",
        daemon.log_text()
    );
    daemon
}

/// Like `serve_with_a_small_queue`, with the tmpfs filled up (by `queue_filler`)
/// before lowkey starts, and the events already queued in it. The daemon may have
/// exited: that is for the caller to judge.
pub fn serve_with_a_full_queue(home: &Home) -> Daemon {
    serve_in_a_small_queue(
        home,
        r#" && { dd if=/dev/zero of="$0/filler" bs=4k 2>/dev/null || true; }"#,
    )
}

fn serve_in_a_small_queue(home: &Home, then: &str) -> Daemon {
    let queue = home.root().join("queue");
    std::fs::create_dir_all(&queue).unwrap();
    let script = format!(r#"{SMALL_QUEUE}{then} && exec "$@""#);
    let queue = queue.to_string_lossy();
    serve_under(
        home,
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            &queue,
        ],
    )
}

/// The file that fills the queue tmpfs of a daemon from `serve_with_a_small_queue`,
/// seen from outside its mount namespace.
pub fn queue_filler(daemon: &Daemon, home: &Home) -> PathBuf {
    let queue = home.root().join("queue");
    std::path::Path::new(&format!("/proc/{}/root", daemon.pid))
        .join(queue.strip_prefix("/").unwrap())
        .join("filler")
}

/// Fills the daemon's queue tmpfs; returns the filler's path for freeing it again.
pub fn fill_queue(daemon: &Daemon, home: &Home) -> PathBuf {
    let filler = queue_filler(daemon, home);
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        if let Err(e) = file.write_all(&chunk) {
            assert_eq!(e.raw_os_error(), Some(nix::libc::ENOSPC), "{e}");
            break;
        }
    }
    filler
}
