//! systemd behaviour without systemd: sockets passed the way systemd passes them, a
//! captured `NOTIFY_SOCKET`, signals, and a standalone journald.

use crate::support::*;
use nix::sys::signal::Signal;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};

/// Starts `lowkey serve` the way systemd does: `listeners` as fds 3, 4, ... with
/// `LISTEN_FDS`/`LISTEN_PID`/`LISTEN_FDNAMES`, and every variable in `pid_vars` (such as
/// `WATCHDOG_PID`) set to lowkey's own pid. The shell's `exec` keeps its pid, which is
/// how `$$` becomes lowkey's pid without unsafe code in the test.
fn spawn_as_systemd(
    home: &Home,
    listeners: &[(&dyn AsFd, &str)],
    pid_vars: &[&str],
    args: &[&str],
    env: &[(&str, String)],
) -> Daemon {
    let dups: Vec<_> = listeners
        .iter()
        .map(|(fd, _)| nix::unistd::dup(fd).expect("dup a listener"))
        .collect();
    let mut assignments = String::new();
    if !listeners.is_empty() {
        let names: Vec<&str> = listeners.iter().map(|(_, n)| *n).collect();
        assignments = format!(
            "LISTEN_PID=$$ LISTEN_FDS={} LISTEN_FDNAMES={} ",
            listeners.len(),
            names.join(":")
        );
    }
    for var in pid_vars {
        assignments.push_str(&format!("{var}=$$ "));
    }
    let mut redirects = String::new();
    for (i, fd) in dups.iter().enumerate() {
        let raw = fd.as_raw_fd();
        redirects.push_str(&format!(" {}<&{raw} {raw}<&-", 3 + i));
    }
    let script = format!(
        "{assignments}exec \"$0\" serve {}{redirects}",
        args.join(" ")
    );
    let cmd = home.command(&[]);
    let mut bash = Command::new("/bin/bash");
    bash.arg("-c").arg(script).arg(cmd.get_program());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => bash.env(k, v),
            None => bash.env_remove(k),
        };
    }
    for (k, v) in env {
        bash.env(k, v);
    }
    let daemon = Daemon::spawn(bash);
    drop(dups);
    daemon
}

fn spawn_activated(home: &Home, listeners: &[(&dyn AsFd, &str)], env: &[(&str, String)]) -> Daemon {
    spawn_as_systemd(home, listeners, &[], &[], env)
}

/// A datagram socket standing in for systemd's notify socket.
pub struct Notify {
    path: std::path::PathBuf,
    messages: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Notify {
    pub fn new(home: &Home) -> Notify {
        let path = home.dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let messages = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                sink.0
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                sink.1.notify_all();
            }
        });
        Notify { path, messages }
    }

    pub fn env(&self) -> (&'static str, String) {
        ("NOTIFY_SOCKET", self.path.to_string_lossy().into_owned())
    }

    /// Waits until `n` messages satisfy `pred`.
    pub fn wait(&self, what: &str, n: usize, pred: impl Fn(&str) -> bool) {
        let (lock, cond) = &*self.messages;
        let guard = lock.lock().unwrap();
        let (guard, _) = cond
            .wait_timeout_while(guard, PATIENCE, |m| {
                m.iter().filter(|m| pred(m)).count() < n
            })
            .unwrap();
        assert!(
            guard.iter().filter(|m| pred(m)).count() >= n,
            "no {what}; got {guard:#?}"
        );
    }

    fn all(&self) -> Vec<String> {
        self.messages.0.lock().unwrap().clone()
    }
}

fn has_line(message: &str, line: &str) -> bool {
    message.lines().any(|l| l == line)
}

/// One HTTP/1.1 request written by hand over a unix socket (ureq speaks only TCP).
fn post_unix(path: &std::path::Path, source: &str, body: &str) -> String {
    let mut s = UnixStream::connect(path).unwrap();
    write!(
        s,
        "POST /api/webhook/{source} HTTP/1.1\r\nHost: lowkey\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

/// Sends a webhook's headers with `Expect: 100-continue` and returns once lowkey asks
/// for the body: by then it has authenticated the request and taken its config.
fn start_request(addr: &str, source: &str, body_len: usize) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /api/webhook/{source} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {body_len}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "connection closed before 100 Continue"
        );
        seen.push(byte[0]);
    }
    assert!(
        seen.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    s
}

fn finish_request(mut s: std::net::TcpStream, body: &str) -> String {
    s.write_all(body.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn serves_every_passed_socket_tcp_v4_v6_and_unix() {
    let home = Home::with_agent("cat >/dev/null");
    let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let v6 = TcpListener::bind("[::1]:0").ok();
    let unix_path = home.dir.path().join("lowkey.sock");
    let unix = UnixListener::bind(&unix_path).unwrap();
    let mut passed: Vec<(&dyn AsFd, &str)> = vec![(&v4, "http"), (&unix, "local")];
    if let Some(v6) = &v6 {
        passed.push((v6, "http6"));
    }
    let mut daemon = spawn_activated(&home, &passed, &[]);
    daemon.wait_log("started", |l| l.contains("started"));
    for name in ["http", "local"] {
        daemon.wait_log(&format!("socket {name} logged"), |l| {
            l.contains("serving socket passed by systemd") && l.contains(&format!("fd_name={name}"))
        });
    }

    daemon.addr = Some(v4.local_addr().unwrap().to_string());
    let (session, _) = accept(&daemon, "hook", r#"{"via":"tcp"}"#);
    assert!(
        home.session(&session)
            .iter()
            .any(|l| l["body"] == r#"{"via":"tcp"}"#)
    );

    let answer = post_unix(&unix_path, "hook", r#"{"via":"unix"}"#);
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");

    if let Some(v6) = &v6 {
        daemon.addr = Some(v6.local_addr().unwrap().to_string());
        accept(&daemon, "hook", r#"{"via":"tcp6"}"#);
    }
    // lowkey did not bind anything itself.
    assert_eq!(
        daemon.count_log(|l| l.contains("listening on")),
        0,
        "{}",
        daemon.log_text()
    );
}

#[test]
fn notify_sequence_is_ready_reloading_ready_stopping_with_watchdog_pings() {
    let home = Home::with_agent("cat >/dev/null");
    let notify = Notify::new(&home);
    let daemon = spawn_as_systemd(
        &home,
        &[],
        &["WATCHDOG_PID"],
        &["--listen", "127.0.0.1:0"],
        &[notify.env(), ("WATCHDOG_USEC", "200000".into())],
    );

    notify.wait("READY=1", 1, |m| has_line(m, "READY=1"));
    notify.wait("watchdog pings", 2, |m| has_line(m, "WATCHDOG=1"));
    daemon.signal(Signal::SIGHUP);
    notify.wait("READY=1 after the reload", 2, |m| has_line(m, "READY=1"));
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(), Some(0));

    let all = notify.all();
    let sequence: Vec<&String> = all
        .iter()
        .filter(|m| {
            !m.lines()
                .all(|l| l.starts_with("STATUS=") || l == "WATCHDOG=1")
        })
        .collect();
    assert_eq!(sequence.len(), 4, "{all:#?}");
    assert!(has_line(sequence[0], "READY=1"));
    assert!(
        sequence[0]
            .lines()
            .any(|l| l.starts_with("STATUS=1 source")),
        "{all:#?}"
    );
    assert!(has_line(sequence[1], "RELOADING=1"));
    let usec = sequence[1]
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC in the same message as RELOADING=1");
    assert!(usec.parse::<u64>().unwrap() > 0);
    assert!(has_line(sequence[2], "READY=1"));
    assert!(has_line(sequence[3], "STOPPING=1"));
}

#[test]
fn status_line_says_sources_runs_and_last_event() {
    let home = Home::with_agent("cat >/dev/null; echo ok");
    let notify = Notify::new(&home);
    let mut cmd = home.command(&["serve", "--listen", "127.0.0.1:0"]);
    let (k, v) = notify.env();
    cmd.env(k, v);
    let daemon = Daemon::spawn(cmd);
    let (_, event) = accept(&daemon, "hook", "{}");
    daemon.wait_run_end(&event);
    notify.wait("a STATUS naming the last source", 1, |m| {
        m.lines()
            .any(|l| l.starts_with("STATUS=") && l.contains("last: hook"))
    });
}

#[test]
fn reload_applies_at_once_and_a_broken_config_keeps_the_old_one() {
    let home = Home::with_agent("cat >/dev/null");
    let project = home.project("proj");
    let agent = home.dir.path().join("agent.sh");
    let notify = Notify::new(&home);
    let mut cmd = home.command(&["serve", "--listen", "127.0.0.1:0"]);
    let (k, v) = notify.env();
    cmd.env(k, v);
    let daemon = Daemon::spawn(cmd);
    let pid = daemon.pid;
    assert_eq!(post(&daemon, "added", "{}").status, 404);

    // A request whose headers arrived before the reload finishes with the old config.
    let in_flight = start_request(daemon.addr.as_ref().unwrap(), "hook", 13);

    home.write_config(&json!({
        "apiKey": KEY,
        "agents": { "bot": { "command": [agent] } },
        "webhooks": { "added": { "project": project, "agent": "bot" } }
    }));
    daemon.signal(Signal::SIGHUP);
    daemon.wait_log("config reloaded", |l| l.contains("config reloaded"));
    accept(&daemon, "added", "{}");
    assert_eq!(
        post(&daemon, "hook", "{}").status,
        404,
        "a removed source answers 404 at once"
    );

    let answer = finish_request(in_flight, r#"{"late":true}"#);
    assert!(
        answer.starts_with("HTTP/1.1 202"),
        "the in-flight request used its own config: {answer}"
    );

    home.write_config_text("{ \"apiKey\": ");
    daemon.signal(Signal::SIGHUP);
    let line = daemon.wait_log("reload failed", |l| l.contains("config reload failed"));
    assert!(line.contains("ERROR"), "logged at error priority: {line}");
    assert!(line.contains("not valid JSON"), "{line}");
    notify.wait("the failure in STATUS", 1, |m| m.contains("RELOAD FAILED"));
    accept(&daemon, "added", "{}");
    assert!(!daemon.has_exited());
    assert_eq!(daemon.pid, pid);
}

#[test]
fn sigterm_drains_requests_ends_agents_and_leaves_runs_for_the_next_start() {
    let home = Home::new();
    let marker = home.dir.path().join("second-time");
    // The first time, the agent hangs; after a restart it answers.
    let agent = home.script(
        "agent.sh",
        &format!(
            "if [ -e {m} ]; then cat >/dev/null; echo done; exit 0; fi\ntouch {m}\necho blocking >&2\nexec sleep 1000",
            m = marker.display()
        ),
    );
    let project = home.project("proj");
    home.write_config(&json!({
        "apiKey": KEY,
        "agents": { "bot": { "command": [agent] } },
        "webhooks": { "hook": { "project": project, "agent": "bot" } }
    }));
    let daemon = home.serve();
    let (session, event) = accept(&daemon, "hook", "{}");
    let started = daemon.wait_log("the run started", |l| l.contains("run started"));
    let agent_pid: i32 = started
        .split("pid=")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    daemon.wait_log("the agent blocking", |l| {
        l.contains("agent stderr: blocking")
    });

    let in_flight = start_request(daemon.addr.as_ref().unwrap(), "hook", 2);
    daemon.signal(Signal::SIGTERM);
    daemon.wait_log("shutdown begun", |l| l.contains("shutting down"));
    let answer = finish_request(in_flight, "{}");
    assert!(
        answer.starts_with("HTTP/1.1 202"),
        "the in-flight request finished: {answer}"
    );
    assert_eq!(daemon.wait_exit(), Some(0), "{}", daemon.log_text());
    assert!(!is_alive(agent_pid), "the running agent was ended");
    let lines = home.session(&session);
    assert!(
        lines
            .iter()
            .any(|l| l["type"] == "run" && l["status"] == "interrupted"),
        "{lines:#?}"
    );
    drop(daemon);

    let daemon = home.serve();
    daemon.wait_run_end(&event);
    let lines = home.session(&session);
    assert!(
        lines
            .iter()
            .any(|l| l["role"] == "agent" && l["text"] == "done"),
        "the run happened after the restart: {lines:#?}"
    );
}

#[test]
fn sigterm_closes_a_request_still_open_after_the_drain() {
    let home = Home::with_agent("cat >/dev/null; echo ok");
    let daemon = home.serve();
    // Headers sent, the body never comes.
    let mut stuck = start_request(daemon.addr.as_ref().unwrap(), "hook", 100);
    daemon.signal(Signal::SIGTERM);
    daemon.wait_log("the drain given up", |l| {
        l.contains("requests still open after") && l.contains("closing them")
    });
    stuck
        .set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    let mut answer = String::new();
    stuck.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "", "closed without an answer");
    assert_eq!(daemon.wait_exit(), Some(0), "{}", daemon.log_text());
}

#[test]
fn idle_exit_only_when_socket_activated_and_nothing_is_lost() {
    let home = Home::with_agent("cat >/dev/null; echo ok");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.config_path()).unwrap()).unwrap();
    config["idleExitSec"] = json!(1);
    home.write_config(&config);

    // Not socket-activated: the setting is ignored, with a word in the log.
    let bound = home.serve();
    bound.wait_log("idleExitSec ignored", |l| {
        l.contains("idleExitSec is ignored")
    });
    drop(bound);

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let first = spawn_activated(&home, &[(&listener, "http")], &[]);
    assert_eq!(first.wait_exit(), Some(0), "{}", first.log_text());
    assert!(first.log_text().contains("idle for 1s"));

    // The socket outlives lowkey (systemd holds it): a webhook sent now waits in its
    // backlog and is served by the next start.
    let sender = std::thread::spawn({
        let addr = addr.clone();
        move || {
            request(
                "POST",
                &format!("http://{addr}/api/webhook/hook"),
                &[("Authorization", &format!("Bearer {KEY}"))],
                b"{\"while\":\"stopped\"}",
            )
        }
    });
    let second = spawn_activated(&home, &[(&listener, "http")], &[]);
    let answer = sender.join().unwrap();
    assert_eq!(answer.status, 202, "{answer:?}");
    let event = answer.json()["event"].as_str().unwrap().to_owned();
    second.wait_run_end(&event);
}

#[test]
fn a_broken_config_under_socket_activation_answers_503_until_a_reload_fixes_it() {
    let home = Home::with_agent("cat >/dev/null; echo fixed");
    let good = std::fs::read(home.config_path()).unwrap();
    // An event accepted earlier, still waiting for its run.
    let daemon = home.serve();
    let (session, event) = {
        let answer = post(&daemon, "hook", "{\"early\":true}");
        assert_eq!(answer.status, 202);
        let v = answer.json();
        (
            v["session"].as_str().unwrap().to_owned(),
            v["event"].as_str().unwrap().to_owned(),
        )
    };
    daemon.wait_run_end(&event);
    drop(daemon);

    home.write_config_text(
        "{ \"apiKey\": \"lk_x\", \"webhooks\": { \"hook\": { \"projcet\": \"/\" } } }",
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let notify = Notify::new(&home);
    let mut daemon = spawn_activated(&home, &[(&listener, "http")], &[notify.env()]);
    daemon.addr = Some(listener.local_addr().unwrap().to_string());
    daemon.wait_log("the unusable config logged", |l| {
        l.contains("config is unusable")
    });
    notify.wait("READY=1 with the reason", 1, |m| {
        has_line(m, "READY=1") && m.contains("CONFIG UNUSABLE")
    });

    // Anyone, with or without the key, gets a retryable 503 that names no source.
    let answer = post(&daemon, "hook", "{}");
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(answer.header("retry-after").is_some());
    assert!(!answer.body.contains("projcet"), "{}", answer.body);
    assert!(!daemon.has_exited());

    std::fs::write(home.config_path(), &good).unwrap();
    daemon.signal(Signal::SIGHUP);
    daemon.wait_log("config reloaded", |l| l.contains("config reloaded"));
    let (later_session, later) = accept(&daemon, "hook", "{\"later\":true}");
    daemon.wait_run_end(&later);
    assert!(
        home.session(&later_session)
            .iter()
            .any(|l| l["text"] == "fixed")
    );
    assert!(home.session(&session).iter().any(|l| l["role"] == "agent"));
}
