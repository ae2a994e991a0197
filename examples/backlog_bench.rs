//! The driver of `bench/backlog.sh` (issue #14): the parts that need precise timing.
//!
//! ```text
//! backlog_bench serve --lowkey BIN --home DIR --notify SOCK --out FILE --log FILE [--timeout-s 120]
//! backlog_bench lag   --addr ADDR --key KEY --source SRC --session-file FILE
//!                     [--rate 1000 | --rate 0] [--connections 64] [--duration-s 10]
//!                     [--bound-s 5] [--body-bytes 1024]
//! backlog_bench fill  --addr ADDR --key KEY --source SRC --count N
//!                     [--connections 32] [--body-bytes 1024] [--timeout-s 300]
//! backlog_bench count --lowkey BIN --home DIR [--timeout-s 600]
//! ```
//!
//! - `serve` binds a unix datagram socket, starts `lowkey serve` on a free loopback port
//!   with `NOTIFY_SOCKET` pointing at it, and writes `pid=… addr=… ready_us=…` (the time
//!   from the spawn to `READY=1`) to `--out` once READY=1 arrives, or `error=…`. It then
//!   stays lowkey's parent until lowkey exits, so the script can stop lowkey by its pid
//!   and wait for this process.
//! - `lag` POSTs events, open loop at `--rate` per second (each request at its scheduled
//!   time, on a pool of keep-alive connections) or closed loop with `--rate 0` (every
//!   connection as fast as lowkey answers), for `--duration-s`. It notes when each 202
//!   arrived, keyed by the event id in its body, while a thread tails the session file
//!   (reading appended bytes every millisecond) and notes when each event's user message
//!   line appeared. After the last 202 it waits until every event's line is there, or
//!   `--bound-s` has passed, and prints one `BENCH lag …` line: events accepted, how many
//!   lines appeared within the bound of their 202, and p50, p99 and max of the lag (`-1`
//!   when that percentile is not within the bound).
//! - `fill` POSTs until exactly `--count` events were accepted (closed loop), and prints
//!   `BENCH fill …`.
//! - `count` runs `lowkey sessions list --json` (session files merged with the queue) and
//!   prints `BENCH count sessions=… events=…`.
//!
//! Everything is bounded in time; any failure prints `backlog_bench: …` and exits 1.

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Error = String;

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let Some(cmd) = argv.next() else {
        eprintln!("usage: backlog_bench serve|lag|fill|count --key value ... (see the source)");
        return ExitCode::from(2);
    };
    let args = match Args::parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("backlog_bench: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cmd.as_str() {
        "serve" => serve(&args),
        "lag" => runtime().and_then(|rt| rt.block_on(lag(&args))),
        "fill" => runtime().and_then(|rt| rt.block_on(fill(&args))),
        "count" => count(&args),
        other => Err(format!("unknown command {other}")),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("backlog_bench {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    // Two workers, like wrk -t2 in bench/ingest.sh.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

struct Args(HashMap<String, String>);

impl Args {
    fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, Error> {
        let mut map = HashMap::new();
        while let Some(flag) = argv.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --flag, got {flag}"))?;
            let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
            map.insert(name.to_owned(), value);
        }
        Ok(Args(map))
    }

    fn str(&self, name: &str) -> Result<&str, Error> {
        self.0
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("--{name} is required"))
    }

    fn num(&self, name: &str, default: f64) -> Result<f64, Error> {
        match self.0.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .ok_or_else(|| format!("--{name}: not a number: {v}")),
        }
    }
}

// --- serve: start lowkey and time READY=1 -----------------------------------------------

fn serve(a: &Args) -> Result<ExitCode, Error> {
    let lowkey = a.str("lowkey")?;
    let home = a.str("home")?;
    let notify = PathBuf::from(a.str("notify")?);
    let out = PathBuf::from(a.str("out")?);
    let log_path = a.str("log")?;
    let timeout = Duration::from_secs_f64(a.num("timeout-s", 120.0)?);

    let _ = std::fs::remove_file(&notify);
    let sock = UnixDatagram::bind(&notify).map_err(|e| format!("bind {notify:?}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .map_err(|e| e.to_string())?;
    // A free loopback port; if another program takes it meanwhile, lowkey exits before
    // READY and the script tries again.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(log_path)
        .map_err(|e| format!("{log_path}: {e}"))?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;

    let t0 = Instant::now();
    let mut child = Command::new(lowkey)
        .args(["serve", "--listen", &addr])
        .env("LOWKEY_HOME", home)
        .env("NOTIFY_SOCKET", &notify)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("cannot start {lowkey}: {e}"))?;
    let pid = child.id();
    let mut buf = vec![0u8; 8192];
    let outcome = loop {
        match sock.recv(&mut buf) {
            Ok(n) if buf[..n].split(|&b| b == b'\n').any(|l| l == b"READY=1") => {
                break Ok(t0.elapsed());
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => break Err(format!("notify socket: {e}")),
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("lowkey exited before READY=1 ({status})"));
        }
        if t0.elapsed() >= timeout {
            break Err(format!("no READY=1 within {}s", timeout.as_secs()));
        }
    };
    // lowkey's later notifications (STATUS=) now fail, which it ignores.
    drop(sock);
    let _ = std::fs::remove_file(&notify);
    match outcome {
        Ok(ready) => {
            write_atomically(
                &out,
                &format!("pid={pid} addr={addr} ready_us={}\n", ready.as_micros()),
            )?;
            // Stay the parent until lowkey exits (the script sends it SIGTERM).
            let status = child.wait().map_err(|e| e.to_string())?;
            Ok(if status.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Err(e) => {
            if child.try_wait().ok().flatten().is_none() {
                terminate(&mut child);
            }
            write_atomically(&out, &format!("error={e}\n"))?;
            Ok(ExitCode::FAILURE)
        }
    }
}

fn terminate(child: &mut std::process::Child) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn write_atomically(path: &Path, text: &str) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{path:?}: {e}"))
}

// --- the HTTP side ------------------------------------------------------------------------

/// Where and what to POST.
struct Target {
    addr: String,
    path: String,
    auth: String,
    body: Bytes,
}

impl Target {
    fn from_args(a: &Args) -> Result<Target, Error> {
        let body_bytes = a.num("body-bytes", 1024.0)? as usize;
        Ok(Target {
            addr: a.str("addr")?.to_owned(),
            path: format!("/api/webhook/{}", a.str("source")?),
            auth: format!("Bearer {}", a.str("key")?),
            body: Bytes::from(make_body(body_bytes)),
        })
    }
}

/// A ~1 KiB JSON body shaped like a payment provider's event (bench/ingest.sh's).
fn make_body(size: usize) -> String {
    let head = r#"{"id":"evt_1PbenchAbCdEfGhIjKlMnOp","object":"event","type":"invoice.paid","created":1718000000,"livemode":false,"data":{"object":{"id":"in_1PbenchQrStUvWx","customer":"cus_Qbench123","amount_due":4200,"amount_paid":4200,"currency":"eur","status":"paid","lines":[{"id":"il_1","amount":4200,"description":"Pro plan","quantity":1}],"description":""#;
    let tail = r#""}}}"#;
    let pad = size.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad))
}

enum Outcome {
    /// A 202, with its event id.
    Accepted(String),
    /// Any other answer.
    Status(u16),
    /// No answer: connection failure or timeout.
    Failed,
}

/// One keep-alive connection, made again after a failure.
struct Conn {
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    async fn connect(t: &Target) -> Option<SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(&t.addr).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Some(sender)
    }

    async fn post(&mut self, t: &Target) -> Outcome {
        match tokio::time::timeout(Duration::from_secs(10), self.exchange(t)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                self.sender = None;
                Outcome::Failed
            }
        }
    }

    async fn exchange(&mut self, t: &Target) -> Outcome {
        if self.sender.is_none() {
            self.sender = Conn::connect(t).await;
        }
        let Some(sender) = self.sender.as_mut() else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            return Outcome::Failed;
        };
        if sender.ready().await.is_err() {
            self.sender = None;
            return Outcome::Failed;
        }
        let req = Request::post(&t.path)
            .header(header::HOST, &t.addr)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, &t.auth)
            .body(Full::new(t.body.clone()))
            .expect("a valid request");
        let res = match sender.send_request(req).await {
            Ok(res) => res,
            Err(_) => {
                self.sender = None;
                return Outcome::Failed;
            }
        };
        let status = res.status();
        let body = match res.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                self.sender = None;
                return Outcome::Failed;
            }
        };
        if status != StatusCode::ACCEPTED {
            return Outcome::Status(status.as_u16());
        }
        // {"session":"…","event":"…"}
        match serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("event")?.as_str().map(str::to_owned))
        {
            Some(id) => Outcome::Accepted(id),
            None => Outcome::Status(202),
        }
    }
}

/// What one connection task saw.
#[derive(Default)]
struct Tally {
    acks: Vec<(String, Instant)>,
    accepted: u64,
    other: HashMap<u16, u64>,
    failed: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Tally {
    fn note(&mut self, outcome: Outcome, keep_ids: bool) {
        let now = Instant::now();
        match outcome {
            Outcome::Accepted(id) => {
                self.accepted += 1;
                if keep_ids {
                    self.acks.push((id, now));
                }
                self.last = Some(now);
            }
            Outcome::Status(s) => *self.other.entry(s).or_default() += 1,
            Outcome::Failed => self.failed += 1,
        }
    }

    fn merge(&mut self, other: Tally) {
        self.acks.extend(other.acks);
        self.accepted += other.accepted;
        for (s, n) in other.other {
            *self.other.entry(s).or_default() += n;
        }
        self.failed += other.failed;
        self.first = match (self.first, other.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last = match (self.last, other.last) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    fn non202(&self) -> u64 {
        self.other.values().sum()
    }

    fn statuses(&self) -> String {
        if self.other.is_empty() {
            return "none".into();
        }
        let mut v: Vec<_> = self.other.iter().collect();
        v.sort();
        v.iter()
            .map(|(s, n)| format!("{s}x{n}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn secs(&self) -> f64 {
        match (self.first, self.last) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        }
    }
}

// --- lag: 202 → session line ---------------------------------------------------------------

async fn lag(a: &Args) -> Result<ExitCode, Error> {
    let target = Arc::new(Target::from_args(a)?);
    let session_file = PathBuf::from(a.str("session-file")?);
    let rate = a.num("rate", 1000.0)?;
    let connections = a.num("connections", if rate > 0.0 { 64.0 } else { 32.0 })? as usize;
    let duration = Duration::from_secs_f64(a.num("duration-s", 10.0)?);
    let bound = Duration::from_secs_f64(a.num("bound-s", 5.0)?);
    if connections == 0 {
        return Err("--connections must be at least 1".into());
    }

    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tailer = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || tail(&session_file, &seen, &stop))
    };

    // Connect first, so the load starts on open connections.
    let mut conns = Vec::new();
    for _ in 0..connections {
        let sender = Conn::connect(&target).await;
        if sender.is_none() {
            stop.store(true, Ordering::Relaxed);
            return Err(format!("cannot connect to {}", target.addr));
        }
        conns.push(Conn { sender });
    }
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + duration;
    let total = if rate > 0.0 {
        (rate * duration.as_secs_f64()).round() as u64
    } else {
        u64::MAX
    };
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for mut conn in conns {
        let (target, next) = (target.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            loop {
                let when = if rate > 0.0 {
                    // Open loop: slot i goes out at start + i / rate, whatever came before.
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    start + Duration::from_secs_f64(i as f64 / rate)
                } else {
                    start
                };
                tokio::time::sleep_until(when.into()).await;
                if Instant::now() >= end && rate == 0.0 {
                    break;
                }
                tally.first.get_or_insert_with(Instant::now);
                let outcome = conn.post(&target).await;
                tally.note(outcome, true);
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for t in tasks {
        tally.merge(t.await.map_err(|e| e.to_string())?);
    }

    // Wait for every accepted event's line, at most `bound` after the last 202.
    let acks: HashMap<String, Instant> = tally.acks.drain(..).collect();
    let deadline = tally.last.unwrap_or_else(Instant::now) + bound;
    loop {
        let all = {
            let seen = seen.lock().expect("seen");
            seen.len() >= acks.len() && acks.keys().all(|id| seen.contains_key(id))
        };
        if all || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let tail_result = tailer.join().map_err(|_| "the tail thread panicked")?;
    tail_result?;

    let seen = seen.lock().expect("seen");
    let mut lags: Vec<Option<Duration>> = acks
        .iter()
        .map(|(id, acked)| {
            let at = seen.get(id)?;
            // A line read before its 202 arrived has no lag.
            let lag = at.saturating_duration_since(*acked);
            (lag <= bound).then_some(lag)
        })
        .collect();
    // Missing lines sort last (None > Some in this order).
    lags.sort_by(|x, y| match (x, y) {
        (Some(a), Some(b)) => a.cmp(b),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    let within = lags.iter().filter(|l| l.is_some()).count();
    let pct = |p: f64| -> i64 {
        if lags.is_empty() {
            return -1;
        }
        let idx = ((p * lags.len() as f64).ceil() as usize).clamp(1, lags.len()) - 1;
        lags[idx].map_or(-1, |d| d.as_micros() as i64)
    };
    let max = lags
        .iter()
        .rev()
        .find_map(|l| *l)
        .map_or(-1, |d| d.as_micros() as i64);
    let unknown = seen.keys().filter(|id| !acks.contains_key(*id)).count();
    let secs = tally.secs();
    println!(
        "BENCH lag accepted={} non202={} statuses={} failed={} secs={:.3} rate={:.0} within={} missing={} p50_us={} p99_us={} max_us={} lines_without_202={}",
        tally.accepted,
        tally.non202(),
        tally.statuses(),
        tally.failed,
        secs,
        if secs > 0.0 {
            tally.accepted as f64 / secs
        } else {
            0.0
        },
        within,
        acks.len() - within,
        pct(0.50),
        pct(0.99),
        max,
        unknown,
    );
    Ok(ExitCode::SUCCESS)
}

/// Tails `path` (which may not exist yet) until `stop`, noting when each user message
/// line's event first appeared.
fn tail(
    path: &Path,
    seen: &Mutex<HashMap<String, Instant>>,
    stop: &AtomicBool,
) -> Result<(), Error> {
    let mut file = None;
    let mut buf = vec![0u8; 1 << 20];
    let mut pending: Vec<u8> = Vec::new();
    let poll = Duration::from_millis(1);
    while !stop.load(Ordering::Relaxed) {
        let Some(f) = file.as_mut() else {
            match std::fs::File::open(path) {
                Ok(f) => file = Some(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::thread::sleep(poll),
                Err(e) => return Err(format!("{path:?}: {e}")),
            }
            continue;
        };
        let n = f.read(&mut buf).map_err(|e| format!("{path:?}: {e}"))?;
        if n == 0 {
            std::thread::sleep(poll);
            continue;
        }
        let now = Instant::now();
        pending.extend_from_slice(&buf[..n]);
        let mut found = Vec::new();
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|&b| b == b'\n') {
            if let Some(id) = user_message_event(&pending[start..start + pos]) {
                found.push(id);
            }
            start += pos + 1;
        }
        pending.drain(..start);
        if !found.is_empty() {
            let mut seen = seen.lock().expect("seen");
            for id in found {
                seen.entry(id).or_insert(now);
            }
        }
    }
    Ok(())
}

/// The event id of a `{"type":"message","role":"user",…,"event":"…"}` line. Inside a
/// JSON string every `"` is escaped, so these byte sequences can only be the line's own
/// keys and values.
fn user_message_event(line: &[u8]) -> Option<String> {
    if find(line, br#""type":"message""#).is_none() || find(line, br#""role":"user""#).is_none() {
        return None;
    }
    let key = br#""event":""#;
    let at = find(line, key)? + key.len();
    let len = line[at..].iter().position(|&b| b == b'"')?;
    String::from_utf8(line[at..at + len].to_vec()).ok()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// --- fill: a backlog of exactly N events ---------------------------------------------------

async fn fill(a: &Args) -> Result<ExitCode, Error> {
    let target = Arc::new(Target::from_args(a)?);
    let count = a.num("count", 0.0)? as u64;
    let connections = (a.num("connections", 32.0)? as usize).max(1);
    let timeout = Duration::from_secs_f64(a.num("timeout-s", 300.0)?);
    let deadline = Instant::now() + timeout;
    // Slots handed out; a slot whose request was not accepted goes back.
    let issued = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    const MAX_FAILURES: u64 = 1000;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (target, issued, failures) = (target.clone(), issued.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn { sender: None };
            let mut tally = Tally::default();
            loop {
                if issued.fetch_add(1, Ordering::Relaxed) >= count {
                    break;
                }
                if Instant::now() >= deadline || failures.load(Ordering::Relaxed) >= MAX_FAILURES {
                    break;
                }
                tally.first.get_or_insert_with(Instant::now);
                let outcome = conn.post(&target).await;
                if !matches!(outcome, Outcome::Accepted(_)) {
                    issued.fetch_sub(1, Ordering::Relaxed);
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                tally.note(outcome, false);
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for t in tasks {
        tally.merge(t.await.map_err(|e| e.to_string())?);
    }
    let secs = tally.secs();
    println!(
        "BENCH fill accepted={} non202={} statuses={} failed={} secs={:.3} rate={:.0}",
        tally.accepted,
        tally.non202(),
        tally.statuses(),
        tally.failed,
        secs,
        if secs > 0.0 {
            tally.accepted as f64 / secs
        } else {
            0.0
        }
    );
    if tally.accepted != count {
        return Err(format!(
            "{} of {count} events accepted (stopped after {} failures or {}s)",
            tally.accepted,
            failures.load(Ordering::Relaxed),
            timeout.as_secs()
        ));
    }
    Ok(ExitCode::SUCCESS)
}

// --- count: what is on disk ------------------------------------------------------------------

#[derive(serde::Deserialize)]
struct Row {
    id: String,
    events: u64,
}

fn count(a: &Args) -> Result<ExitCode, Error> {
    let lowkey = a.str("lowkey")?;
    let home = a.str("home")?;
    let timeout = Duration::from_secs_f64(a.num("timeout-s", 600.0)?);
    let mut child = Command::new(lowkey)
        .args(["sessions", "list", "--json"])
        .env("LOWKEY_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {lowkey}: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        stdout.read_to_end(&mut text).map(|_| text)
    });
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if t0.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("sessions list took over {}s", timeout.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = reader
        .join()
        .map_err(|_| "reader panicked")?
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("sessions list failed: {status}"));
    }
    let rows: Vec<Row> =
        serde_json::from_slice(&text).map_err(|e| format!("sessions list --json: {e}"))?;
    let ids: HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    println!(
        "BENCH count sessions={} distinct={} events={} secs={:.1}",
        rows.len(),
        ids.len(),
        rows.iter().map(|r| r.events).sum::<u64>(),
        t0.elapsed().as_secs_f64()
    );
    let _ = std::io::stdout().flush();
    Ok(ExitCode::SUCCESS)
}
