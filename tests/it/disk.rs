//! The disk side of the fault campaign: lowkey killed at chosen system calls (by
//! `strace -e inject`), in start-up recovery and at work, and its writes and syncs
//! failing with ENOSPC or EIO (by libfiu's `fiu-run` and `fiu-ctrl`, and a full tmpfs).
//! After each fault, a normal start must run every acknowledged event exactly once,
//! and no refused one.

use crate::campaign::*;
use crate::helpers::*;
use crate::recovery::{home_with_gated_agent, runs};
use crate::support::*;
use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Events queued before each crash in recovery; the first one's run is cut short.
fn pending() -> usize {
    rounds(5, 20)
}

/// What an agent is told to do at start: its events' runs end at once.
const QUICK_AGENT: &str = "cat >/dev/null; echo ok";

/// Crash points in start-up recovery, in the order lowkey reaches them: a path
/// (relative to the home; `{session}` is the session of the run the crash cut short)
/// and the `strace` injections, where `{n}` is the occurrence of the call on that path.
/// Recovery finds segment 1 holding only events whose results are in their sessions but
/// whose `done` marks were lost, and segment 2 holding pending events; it marks the first
/// done in a new segment 3, then deletes segment 1.
const RECOVERY_POINTS: &[(&str, &[&str])] = &[
    ("deliveries.jsonl.tmp", &["openat:signal=KILL:when={n}"]),
    ("deliveries.jsonl.tmp", &["fdatasync:signal=KILL:when={n}"]),
    ("deliveries.jsonl.tmp", &["rename:signal=KILL:when={n}"]),
    ("", &["fsync:signal=KILL:when={n}"]),
    ("sessions/{session}.jsonl", &["write:signal=KILL:when={n}"]),
    (
        "queue/0000000000000003.wal",
        &["openat:signal=KILL:when={n}"],
    ),
    ("queue", &["fsync:signal=KILL:when={n}"]),
    (
        "queue/0000000000000003.wal",
        &["pwrite64:signal=KILL:when={n}"],
    ),
    (
        "queue/0000000000000003.wal",
        &["fdatasync:signal=KILL:when={n}"],
    ),
    // The `done` marks are on disk; the segment they cancel is being deleted.
    (
        "queue/0000000000000001.wal",
        &["unlink:error=EIO:signal=KILL:when={n}"],
    ),
    // The queue write fails and lowkey cuts the segment back.
    (
        "queue/0000000000000003.wal",
        &[
            "pwrite64:error=EIO:when={n}",
            "ftruncate:signal=KILL:when={n}",
        ],
    ),
];

/// An `strace` command line that follows every thread and injects `injects` into the
/// calls on `path` only.
fn strace_args(path: &Path, injects: &[String]) -> Vec<String> {
    let calls: Vec<&str> = injects
        .iter()
        .map(|i| i.split(':').next().unwrap())
        .collect();
    let mut args: Vec<String> = ["strace", "-f", "-qq", "-o", "/dev/null", "-P"]
        .map(String::from)
        .to_vec();
    args.push(path.to_string_lossy().into_owned());
    args.push("-e".into());
    args.push(format!("trace={}", calls.join(",")));
    for inject in injects {
        args.push("-e".into());
        args.push(format!("inject={inject}"));
    }
    args
}

/// Kills the agents every run so far started (their pids are in `out/runs`): a
/// daemon killed with -9 leaves them waiting at the gate.
fn reap_runs(out: &Path) {
    Reap(runs(out).into_iter().map(|(_, pid)| pid).collect()).kill();
}

/// Leaves a queue as recovery meets it after crashes (see `RECOVERY_POINTS`), starts
/// lowkey under `strace` with the point's injections, then starts it normally and lets
/// the runs finish. Returns the tally, and whether the injection fired (lowkey died or
/// gave up before it listened, or died in the work start-up leaves for right after).
fn crash_in_recovery(path: &str, injects: &[&str], n: usize) -> (Tally, bool) {
    let (home, gate, out) = home_with_gated_agent(2, "new_session");
    let queue = home.root().join("queue");
    let segment = |seq: u64| queue.join(format!("{seq:016}.wal"));

    // Segment 1: events that ran to the end, whose `done` marks are then taken out.
    gate.open();
    let daemon = home.serve();
    let mut acked: Vec<Acked> = (0..3)
        .map(|i| accept(&daemon, "hook", &format!(r#"{{"done":{i}}}"#)))
        .collect();
    for (_, event) in &acked {
        daemon.wait_run_end(event);
    }
    daemon.signal(Signal::SIGTERM);
    daemon.wait_exit();
    drop(daemon);
    let finished = std::fs::read(segment(1)).unwrap();
    let lines = finished.split_inclusive(|b| *b == b'\n');
    let accepted: Vec<u8> = lines
        .filter(|l| l.starts_with(b"{\"accepted\""))
        .flatten()
        .copied()
        .collect();
    std::fs::remove_file(segment(1)).unwrap();

    // Segment 2: events queued behind a run cut short by kill -9. With the queue empty,
    // lowkey writes them to segment 1, which then moves up.
    gate.close();
    let daemon = home.serve();
    let pending: Vec<Acked> = (0..pending())
        .map(|i| accept(&daemon, "hook", &format!(r#"{{"n":{i}}}"#)))
        .collect();
    let (cut, _) = wait_for("the first pending run to start", || {
        runs(&out)
            .into_iter()
            .find(|(e, _)| pending.iter().any(|(_, p)| p == e))
    });
    let session = pending.iter().find(|(_, e)| *e == cut).unwrap().0.clone();
    daemon.wait_log("with the start of the run", |l| {
        l.contains("run started") && l.contains(&cut)
    });
    daemon.signal(Signal::SIGKILL);
    daemon.wait_exit();
    reap_runs(&out);
    drop(daemon);
    std::fs::rename(segment(1), segment(2)).unwrap();
    std::fs::write(segment(1), accepted).unwrap();
    acked.extend(pending);

    let path = home.root().join(path.replace("{session}", &session));
    let injects: Vec<String> = injects
        .iter()
        .map(|i| i.replace("{n}", &n.to_string()))
        .collect();
    let args = strace_args(&path, &injects);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let traced = serve_under(&home, &args);
    // Start-up leaves some of its work to the session writer, right after it listens
    // (marking done the events whose results are in their sessions): a kill there
    // comes within a moment.
    let fired = traced.addr.is_none() || traced.exits_within(Duration::from_secs(5));
    if !fired {
        // A tracee outlives a killed strace: kill lowkey itself.
        let children = format!("/proc/{0}/task/{0}/children", traced.pid);
        for pid in read_text(Path::new(&children)).split_whitespace() {
            let pid = nix::unistd::Pid::from_raw(pid.parse().unwrap());
            nix::sys::signal::kill(pid, Signal::SIGKILL).unwrap();
        }
    }
    traced.wait_exit();
    reap_runs(&out);
    drop(traced);

    gate.open();
    let daemon = home.serve();
    assert!(
        daemon.addr.is_some(),
        "lowkey does not start after a crash at {injects:?} on {}; log:\n{}",
        path.display(),
        daemon.log_text()
    );
    (Tally::settle(&home, &acked, PATIENCE), fired)
}

/// A kill at any system call of start-up recovery and compaction loses nothing and
/// runs nothing twice (defect: a kill between writing the compacted segment and
/// deleting the old one left every pending event in both, and each ran twice).
#[test]
fn a_crash_anywhere_in_recovery_loses_nothing_and_runs_nothing_twice() {
    let started = Instant::now();
    let mut total = Tally::default();
    let mut failed = Vec::new();
    let mut unreached = Vec::new();
    let (mut fired, mut tried) = (0, 0);
    for (path, injects) in RECOVERY_POINTS {
        // The short mode takes each point's first occurrence; the long mode every
        // occurrence until one is not reached any more.
        for n in 1..=rounds(1, 4) {
            let (tally, reached) = crash_in_recovery(path, injects, n);
            tried += 1;
            let name = format!("recovery {} on {path:?}", injects.join("+"))
                .replace("{n}", &n.to_string());
            println!(
                "{}{}",
                tally.line(&name),
                if reached { "" } else { " (not reached)" }
            );
            if !tally.is_clean() {
                failed.push(name.clone());
            }
            total.merge(tally);
            if !reached {
                if n == 1 {
                    unreached.push(name);
                }
                break;
            }
            fired += 1;
        }
    }
    println!(
        "faults strace recovery: {fired} of {tried} crash points reached in {:?}",
        started.elapsed()
    );
    assert!(
        failed.is_empty(),
        "{}; failing crash points: {failed:#?}",
        total.line("strace recovery")
    );
    assert!(
        unreached.is_empty(),
        "lowkey no longer makes these calls in recovery; update the table: {unreached:#?}"
    );
    total.check("strace recovery");
}

/// `strace` attached to a running lowkey (every thread), killing it at the `n`th call
/// of `call` on `path`. Returns once it is attached.
fn attach_strace(pid: i32, path: &Path, call: &str, n: usize) -> Child {
    let path = path.to_str().expect("a UTF-8 path");
    let trace = format!("trace={call}");
    let inject = format!("inject={call}:signal=KILL:when={n}");
    strace(pid, &["-P", path, "-e", &trace, "-e", &inject])
}

/// `strace -f` attached to a running lowkey with `args` (what to trace and inject).
/// Returns once it is attached.
pub(crate) fn strace(pid: i32, args: &[&str]) -> Child {
    let mut strace = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "-p", &pid.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace (tests/setup installs it)");
    let mut lines = BufReader::new(strace.stderr.take().unwrap()).lines();
    let attached = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(attached.contains("attached"), "strace: {attached}");
    // Keeps reading, so strace never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    strace
}

/// A kill at a queue write or sync under load loses no acknowledged event and runs
/// none twice.
#[test]
fn a_crash_at_a_queue_write_under_load_loses_nothing() {
    let started = Instant::now();
    let home = Home::with_agent(QUICK_AGENT);
    let mut daemon = home.serve();
    let addr = Arc::new(Mutex::new(daemon.addr.clone()));
    let to = addr.clone();
    let load = Load::start(4, "hook", move || to.lock().unwrap().clone());
    let points: Vec<(&str, usize)> = (0..rounds(1, 5))
        .flat_map(|round| [("pwrite64", 10 + 7 * round), ("fdatasync", 12 + 5 * round)])
        .collect();
    for (call, n) in points {
        daemon.wait_log_count("of accepted webhooks", 20, |l| {
            l.contains("webhook accepted")
        });
        let segment = segment_files(&home).pop().expect("a queue segment");
        let mut strace = attach_strace(daemon.pid, &segment, call, n);
        assert_eq!(daemon.wait_exit(), None, "killed at {call} #{n}");
        let _ = strace.wait();
        *addr.lock().unwrap() = None;
        drop(daemon);
        daemon = home.serve();
        *addr.lock().unwrap() = daemon.addr.clone();
    }
    daemon.wait_log_count("of accepted webhooks", 20, |l| {
        l.contains("webhook accepted")
    });
    let (acked, _) = load.stop();
    let tally = Tally::settle(&home, &acked, 3 * PATIENCE);
    println!("faults strace under load: {:?}", started.elapsed());
    tally.check("strace under load");
}

/// A kill while a run's result is made durable (the session file's sync, the sessions
/// folder's sync, the queue's `done` mark): the event ends with one final result.
#[test]
fn a_crash_while_a_run_finishes_loses_nothing_and_runs_nothing_twice() {
    let mut total = Tally::default();
    for (what, call) in [
        ("session", "fdatasync"),
        ("sessions", "fsync"),
        ("queue", "pwrite64"),
    ] {
        let (home, gate, out) = home_with_gated_agent(1, "new_session");
        let daemon = home.serve();
        let acked: Vec<Acked> = (0..3)
            .map(|i| accept(&daemon, "hook", &format!(r#"{{"n":{i}}}"#)))
            .collect();
        let (first, _) = wait_for("the first run to start", || runs(&out).first().cloned());
        let session = &acked.iter().find(|(_, e)| *e == first).unwrap().0;
        let path = match what {
            "session" => home.sessions().join(format!("{session}.jsonl")),
            "sessions" => home.sessions(),
            _ => segment_files(&home).pop().unwrap(),
        };
        let mut strace = attach_strace(daemon.pid, &path, call, 1);
        gate.open();
        assert_eq!(daemon.wait_exit(), None, "killed at {call} on {what}");
        let _ = strace.wait();
        reap_runs(&out);
        drop(daemon);
        let _daemon = home.serve();
        let tally = Tally::settle(&home, &acked, PATIENCE);
        println!("{}", tally.line(&format!("strace {call} of {what}")));
        total.merge(tally);
    }
    total.check("strace run finish");
}

/// Runs a libfiu remote control command in the daemon (started by `fiu-run`).
fn fiu(daemon: &Daemon, command: &str) {
    let out = Command::new("fiu-ctrl")
        .args(["-c", command, &daemon.pid.to_string()])
        .output()
        .expect("fiu-ctrl (tests/setup installs fiu-utils)");
    assert!(out.status.success(), "fiu-ctrl -c {command:?}: {out:?}");
}

/// `lowkey serve` with libfiu's POSIX failure points, off until `fiu` turns them on.
fn serve_with_fiu(home: &Home) -> Daemon {
    let daemon = serve_under(home, &["fiu-run", "-x"]);
    assert!(daemon.addr.is_some(), "{}", daemon.log_text());
    daemon
}

/// libfiu's POSIX wrappers set `errno` to a failure point's `failinfo`.
const ENOSPC: i32 = 28;
const EIO: i32 = 5;

/// A posted webhook's answer while the queue cannot be written: 503 with Retry-After.
#[track_caller]
fn assert_refused(daemon: &Daemon, what: &str) {
    let answer = post(daemon, "hook", r#"{"probe":"refused"}"#);
    assert_eq!(answer.status, 503, "{what}: {answer:?}");
    assert!(answer.header("Retry-After").is_some(), "{what}: {answer:?}");
}

/// Waits until a webhook is accepted again; returns its ids.
fn accepted_again(daemon: &Daemon, what: &str) -> Acked {
    wait_for(what, || {
        let answer = post(daemon, "hook", r#"{"probe":"again"}"#);
        (answer.status == 202).then(|| acked_ids(&answer.body))
    })
}

/// Under load, queue writes fail with ENOSPC, then queue syncs with EIO: lowkey
/// answers 503 with Retry-After meanwhile (never a 2xx for an event it did not keep),
/// takes webhooks again once the disk is back, keeps few queue segments (defect: each
/// failed batch left an empty segment file behind), and after a restart every
/// acknowledged event has run once and no refused one has run.
#[test]
fn failing_queue_writes_and_syncs_answer_503_and_lose_nothing() {
    let started = Instant::now();
    let home = Home::with_agent(QUICK_AGENT);
    let daemon = serve_with_fiu(&home);
    let addr = daemon.addr.clone();
    let load = Load::start(4, "hook", move || addr.clone());
    let mut acked = Vec::new();
    let mut failures = 0;
    for (point, errno) in [
        ("posix/io/rw/pwrite", ENOSPC),
        ("posix/io/sync/fdatasync", EIO),
    ] {
        let accepted = daemon.count_log(|l| l.contains("webhook accepted"));
        daemon.wait_log_count("of accepted webhooks", accepted + 20, |l| {
            l.contains("webhook accepted")
        });
        fiu(&daemon, &format!("enable name={point},failinfo={errno}"));
        failures += rounds(30, 300);
        daemon.wait_log_count("of failed queue writes", failures, |l| {
            l.contains("cannot write the queue")
        });
        assert_refused(&daemon, point);
        fiu(&daemon, &format!("disable name={point}"));
        acked.push(accepted_again(
            &daemon,
            &format!("a 202 after {point} works again"),
        ));
    }
    let (sent, others) = load.stop();
    acked.extend(sent);
    println!("faults libfiu: answers other than 202: {others:?}");
    // Once the runs have ended, lowkey can delete the segments that hold only
    // finished events; a segment without any record holds nothing at all.
    Tally::settle(&home, &acked, 3 * PATIENCE);
    let segments = segment_files(&home);
    let empty: Vec<&PathBuf> = segments
        .iter()
        .filter(|p| !read_text(p).contains('{'))
        .collect();
    println!(
        "faults libfiu: {} queue segment files, {} of them empty, after {failures} failed batches",
        segments.len(),
        empty.len()
    );
    assert!(
        empty.len() <= 1,
        "the queue keeps {} segment files without a record: {empty:#?}",
        empty.len()
    );

    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(), Some(0), "{}", daemon.log_text());
    drop(daemon);
    let daemon = home.serve();
    let mut tally = Tally::settle(&home, &acked, PATIENCE);
    // A run whose result lowkey could not sync (the EIO on fdatasync hits session
    // files too) says it runs again at the next start: a second result is the promise
    // kept, not a duplicate.
    let log = daemon.log_text();
    tally.duplicated.retain(|e| !log.contains(e));
    assert_eq!(
        ran_unacked(&home, &acked),
        Vec::<String>::new(),
        "refused events ran"
    );
    println!("faults libfiu: {:?}", started.elapsed());
    tally.check("libfiu enospc+eio");
}

/// With events queued and the disk still full, lowkey starts, answers 503 with
/// Retry-After, and once there is room again it accepts webhooks and runs the queued
/// events (defect: start-up compaction failed and lowkey exited 74, so systemd
/// refused senders instead).
#[test]
fn a_restart_on_a_full_disk_answers_503_and_resumes_when_space_returns() {
    let (home, gate, out) = home_with_gated_agent(1, "new_session");
    let daemon = home.serve();
    let mut acked: Vec<Acked> = (0..pending())
        .map(|i| accept(&daemon, "hook", &format!(r#"{{"n":{i}}}"#)))
        .collect();
    wait_for("the first run to start", || runs(&out).first().cloned());
    daemon.signal(Signal::SIGKILL);
    daemon.wait_exit();
    reap_runs(&out);
    drop(daemon);

    let daemon = serve_with_a_full_queue(&home);
    assert!(
        daemon.addr.is_some(),
        "lowkey must start on a full disk with events queued; it exited {:?}; log:\n{}",
        daemon.wait_exit(),
        daemon.log_text()
    );
    assert_refused(&daemon, "the disk is full");
    std::fs::remove_file(queue_filler(&daemon, &home)).unwrap();
    acked.push(accepted_again(&daemon, "a 202 once there is room"));
    gate.open();
    Tally::settle(&home, &acked, PATIENCE).check("full disk restart");
}

/// The fsync of a run's result fails ("fsyncgate"): what was written is in the page
/// cache only, and may never reach the disk. lowkey says the run "runs again at the
/// next start"; it must, instead of trusting the unsynced result it reads back.
fn a_run_whose_result_did_not_sync_runs_again(point: &str) {
    let (home, gate, out) = home_with_gated_agent(1, "new_session");
    let daemon = serve_with_fiu(&home);
    let (session, event) = accept(&daemon, "hook", r#"{"n":1}"#);
    let (_, pid) = wait_for("the run to start", || runs(&out).first().cloned());
    let _reap = Reap(vec![pid]);
    fiu(&daemon, &format!("enable name={point},failinfo={EIO}"));
    gate.open();
    daemon.wait_log("about the result that did not sync", |l| {
        l.contains("runs again at the next start") && l.contains(&event)
    });
    fiu(&daemon, &format!("disable name={point}"));
    daemon.signal(Signal::SIGKILL);
    daemon.wait_exit();
    drop(daemon);

    let daemon = home.serve();
    let end = daemon.wait_run_end(&event);
    assert!(end.contains("run finished"), "{end}");
    assert_eq!(runs(&out).len(), 2, "the agent ran again");
    let lines = home.session(&session);
    let shape = shape(&lines);
    assert_eq!(
        shape[shape.len() - 3..],
        [
            format!("run started {event}"),
            format!("agent {event}"),
            format!("run finished {event}"),
        ],
        "the session ends with the second run: {lines:#?}"
    );
    assert_eq!(
        shape
            .iter()
            .filter(|l| l.starts_with("run started"))
            .count(),
        2,
        "{lines:#?}"
    );
}

#[test]
fn a_run_whose_session_file_did_not_sync_runs_again_at_the_next_start() {
    a_run_whose_result_did_not_sync_runs_again("posix/io/sync/fdatasync");
}

#[test]
fn a_run_whose_sessions_folder_did_not_sync_runs_again_at_the_next_start() {
    a_run_whose_result_did_not_sync_runs_again("posix/io/sync/fsync");
}
