//! The fault campaign's crash tests: a kill -9 loop under load that also kills
//! start-ups in the middle of recovery, and a power-cut model that drops or tears the
//! writes a crash would not have kept (the shim and its model: tests/faults/).
//!
//! Their random choices come from one seed, printed, so a failure can be replayed:
//! `LOWKEY_FAULTS_SEED=<seed> cargo test --test it crash`.

use crate::campaign::{Acked, Load, Tally, long_mode, rounds};
use crate::helpers::{Reap, wait_for};
use crate::support::*;
use nix::sys::signal::Signal;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Pseudo-random choices from a printed seed (xorshift64*).
struct Rng(u64);

impl Rng {
    /// Seeded from `LOWKEY_FAULTS_SEED`, or from the clock; prints the seed.
    fn from_env(test: &str) -> Rng {
        let seed = match std::env::var("LOWKEY_FAULTS_SEED") {
            Ok(s) => s.parse().unwrap_or_else(|_| {
                panic!("LOWKEY_FAULTS_SEED={s:?} is not a number; give an integer such as 42")
            }),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
        };
        println!("faults {test}: seed {seed} (replay with LOWKEY_FAULTS_SEED={seed})");
        Rng::new(seed)
    }

    fn new(seed: u64) -> Rng {
        // Zero is xorshift's one fixed point.
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A duration in `from..to`, to the millisecond.
    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

/// Kills every agent still running `script` (left behind by a killed daemon: under
/// systemd its cgroup would go with it) and waits until they are gone. Agents lead
/// their own process groups, so their children go too.
fn reap_agents(script: &str) {
    let running = || -> Vec<i32> {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        procs
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                is_alive(*pid)
                    && cmdline
                        .split(|b| *b == 0)
                        .any(|arg| arg == script.as_bytes())
            })
            .collect()
    };
    Reap(running()).kill();
    wait_for("the killed daemon's agents to be gone", || {
        running().is_empty().then_some(())
    });
}

/// A home whose source `hook` runs a quick agent, two at a time, which takes half a
/// second instead while the file `slow` exists in the test folder: a slow agent keeps
/// events pending when the daemon is killed. Returns the home and the agent's path.
fn home_with_agent() -> (Home, String) {
    let home = Home::new();
    let slow = home.dir.path().join("slow");
    let agent = home.script(
        "agent.sh",
        &format!(
            "cat >/dev/null\nif [ -e '{}' ]; then sleep 0.5; fi\necho ok",
            slow.display()
        ),
    );
    let project = home.project("proj");
    home.write_config(&json!({
        "apiKey": KEY,
        "agents": { "bot": { "command": [agent], "timeoutSec": 30, "maxConcurrent": 2 } },
        "webhooks": { "hook": { "project": project, "agent": "bot" } }
    }));
    (home, agent)
}

/// How long the final start may go without finishing one more event before the
/// events still missing count as lost.
const PATIENCE_IDLE: Duration = Duration::from_secs(10);

/// The queue folder's files and their sizes: what a start-up changes, step by step.
fn queue_state(home: &Home) -> Vec<(PathBuf, u64)> {
    let mut files: Vec<(PathBuf, u64)> = std::fs::read_dir(home.root().join("queue"))
        .map(|dir| {
            dir.filter_map(|e| {
                let e = e.ok()?;
                Some((e.path(), e.metadata().ok()?.len()))
            })
            .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Starts `lowkey serve` and kills it with -9 right after the `nth` change it makes to
/// the queue folder (a segment made, written or deleted), which is inside start-up
/// recovery; or, where the start-up makes fewer changes, once it has been up a while.
/// Returns whether the kill came at the `nth` change.
fn kill_start_up(home: &Home, nth: usize) -> bool {
    let mut last = queue_state(home);
    let mut child = home
        .command(&["serve", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn lowkey serve");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut changes = 0;
    // A busy poll: the window between two steps of recovery can be well under a
    // millisecond, and the kill must land inside it.
    while changes < nth && Instant::now() < deadline {
        let now = queue_state(home);
        if now != last {
            changes += 1;
            last = now;
        }
    }
    let _ = child.kill();
    child.wait().expect("wait for the killed lowkey");
    changes == nth
}

#[test]
fn a_kill_9_loop_under_load_loses_and_repeats_nothing() {
    let mut rng = Rng::from_env("kill-9 loop");
    let (home, agent) = home_with_agent();
    let slow = home.dir.path().join("slow");
    let addr: Arc<Mutex<Option<String>>> = Arc::default();
    let to = addr.clone();
    let load = Load::start(2, "hook", move || to.lock().unwrap().clone());
    let (mut under_load, mut in_recovery, mut missed) = (0, 0, 0);
    std::fs::write(&slow, b"").unwrap();
    for round in 0..rounds(6, 50) {
        if round % 2 == 0 {
            // Under load; the agent is slow, so the next start has work to recover.
            let daemon = home.serve();
            *addr.lock().unwrap() = daemon.addr.clone();
            std::thread::sleep(rng.millis(100, 700));
            daemon.signal(Signal::SIGKILL);
            *addr.lock().unwrap() = None;
            assert_eq!(daemon.wait_exit(), None, "killed by the signal");
            under_load += 1;
        } else {
            // Kills at each of the first three steps of start-up recovery, in a
            // random order; each start recovers what the one before it left. The
            // second step (a segment written, the old ones not yet deleted) comes
            // twice: the poll can miss its window.
            let mut steps = vec![1, 2, 2, 3];
            for i in (1..steps.len()).rev() {
                steps.swap(i, rng.below(i as u64 + 1) as usize);
            }
            for nth in steps {
                if kill_start_up(&home, nth) {
                    in_recovery += 1;
                } else {
                    missed += 1;
                }
            }
        }
        reap_agents(&agent);
    }
    let (acked, others) = load.stop();
    println!(
        "faults kill-9 loop: {under_load} kills under load, {in_recovery} at a step of recovery, {missed} after start-up; other answers {others:?}"
    );
    assert!(!acked.is_empty(), "no webhook was acknowledged: {others:?}");

    std::fs::remove_file(&slow).unwrap();
    let _daemon = home.serve();
    Tally::settle(&home, &acked, PATIENCE_IDLE).check("kill-9 loop");
}

/// Sends `agent` the events of two sources: `hook`, to one fixed session (`inbox`), and
/// `fresh`, to a new session each.
fn with_two_sources(home: &Home, agent: &str) {
    let project = home.project("proj");
    home.write_config(&json!({
        "apiKey": KEY,
        "agents": { "bot": { "command": [agent], "timeoutSec": 30, "maxConcurrent": 2 } },
        "webhooks": {
            "hook": { "project": project, "agent": "bot", "target": "inbox" },
            "fresh": { "project": project, "agent": "bot", "target": "new_session" }
        }
    }));
}

/// Stops the loads; returns every event they got acknowledged.
fn stop_loads(loads: impl IntoIterator<Item = Load>, name: &str) -> Vec<Acked> {
    let mut acked = Vec::new();
    for load in loads {
        let (a, others) = load.stop();
        println!(
            "faults {name}: {} acknowledged, other answers {others:?}",
            a.len()
        );
        acked.extend(a);
    }
    acked
}

/// Session files catch up at once, and a crash at any point of it is made whole: kill -9
/// at random points while events flow to one fixed session and to a `new_session`
/// source, whose messages the session writer files while runs are slow; after the
/// restarts, every acknowledged event has exactly one message line and one result.
#[test]
fn a_kill_9_loop_while_messages_are_filed_loses_and_repeats_no_line() {
    let mut rng = Rng::from_env("kill-9 filing");
    let (home, agent) = home_with_agent();
    with_two_sources(&home, &agent);
    let slow = home.dir.path().join("slow");
    std::fs::write(&slow, b"").unwrap();
    let addr: Arc<Mutex<Option<String>>> = Arc::default();
    let loads = ["hook", "fresh"].map(|source| {
        let to = addr.clone();
        Load::start(2, source, move || to.lock().unwrap().clone())
    });
    for _ in 0..rounds(6, 40) {
        let daemon = home.serve();
        *addr.lock().unwrap() = daemon.addr.clone();
        std::thread::sleep(rng.millis(100, 900));
        daemon.signal(Signal::SIGKILL);
        *addr.lock().unwrap() = None;
        assert_eq!(daemon.wait_exit(), None, "killed by the signal");
        reap_agents(&agent);
    }
    let acked = stop_loads(loads, "kill-9 filing");
    assert!(
        acked.iter().any(|(s, _)| s == "inbox") && acked.iter().any(|(s, _)| s != "inbox"),
        "both sources got events through"
    );

    std::fs::remove_file(&slow).unwrap();
    let _daemon = home.serve();
    Tally::settle(&home, &acked, PATIENCE_IDLE).check("kill-9 filing");
}

/// A backlog far beyond dispatch's window (lowered with `LOWKEY_WINDOW` to 8 runs)
/// drains through reads back from the queue, at start-up too: kill -9 at random points
/// of the drain loses nothing and runs nothing twice.
#[test]
fn a_kill_9_loop_while_a_backlog_drains_loses_and_repeats_nothing() {
    let mut rng = Rng::from_env("kill-9 backlog");
    let (home, agent) = home_with_agent();
    with_two_sources(&home, &agent);
    let serve = || {
        let mut cmd = home.command(&["serve", "--listen", "127.0.0.1:0"]);
        cmd.env("LOWKEY_WINDOW", "8,4,2");
        Daemon::spawn(cmd)
    };
    // The backlog: posted while the agent is slow, so nearly all of it waits.
    let slow = home.dir.path().join("slow");
    std::fs::write(&slow, b"").unwrap();
    let daemon = serve();
    let to = daemon.addr.clone();
    let loads = ["hook", "fresh"].map(|source| {
        let to = to.clone();
        Load::start(2, source, move || to.clone())
    });
    std::thread::sleep(Duration::from_millis(700));
    let acked = stop_loads(loads, "kill-9 backlog");
    daemon.signal(Signal::SIGKILL);
    assert_eq!(daemon.wait_exit(), None, "killed by the signal");
    reap_agents(&agent);

    // The drain, killed again and again: each start reads back what waits.
    std::fs::remove_file(&slow).unwrap();
    let mut most_waiting = 0;
    for _ in 0..rounds(6, 40) {
        let daemon = serve();
        std::thread::sleep(rng.millis(20, 400));
        daemon.signal(Signal::SIGKILL);
        assert_eq!(daemon.wait_exit(), None, "killed by the signal");
        most_waiting = most_waiting.max(recovered(&daemon.log_text()));
        reap_agents(&agent);
    }
    assert!(
        most_waiting > 8,
        "a start-up found more events than the window holds ({most_waiting} at most)"
    );
    let _daemon = serve();
    Tally::settle(&home, &acked, PATIENCE_IDLE).check("kill-9 backlog");
}

/// How many unfinished runs a start-up's log says it recovered.
fn recovered(log: &str) -> usize {
    log.lines()
        .filter_map(|line| {
            let rest = &line[line.find("recovered ")? + "recovered ".len()..];
            rest.split(' ').next()?.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// What the replay did to one write made since its file's last sync.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
    Kept,
    Dropped,
    /// Per 512-byte sector of the write (aligned in the file): what it holds.
    Torn(Vec<Sector>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Sector {
    New,
    Old,
    /// Neither: a sector whose write was cut off holds noise.
    Damaged,
}

const SECTOR: u64 = 512;

/// One write in the undo log.
struct Write {
    path: PathBuf,
    /// Where its record starts in the log.
    at: usize,
    offset: u64,
    old_size: u64,
    len: u64,
    old: Vec<u8>,
}

/// What `replay` did, per file, newest write first.
type Replayed = Vec<(PathBuf, Vec<(u64, u64, Fate)>)>;

/// Reads the shim's undo log (format: tests/faults/powercut.c). A last record cut off
/// by the kill is left out: the shim writes a record before its write begins.
fn read_undo_log(log: &Path) -> (Vec<Write>, Vec<(PathBuf, usize)>) {
    let bytes = std::fs::read(log).unwrap_or_default();
    let (mut writes, mut syncs) = (Vec::new(), Vec::new());
    let mut at = 0;
    let u64_at = |i: usize| u64::from_ne_bytes(bytes[i..i + 8].try_into().unwrap());
    while at + 8 <= bytes.len() {
        let len = u64_at(at) as usize;
        if at + len > bytes.len() {
            break;
        }
        let kind = bytes[at + 8];
        let path_len = u32::from_ne_bytes(bytes[at + 9..at + 13].try_into().unwrap()) as usize;
        let path = PathBuf::from(
            String::from_utf8_lossy(&bytes[at + 13..at + 13 + path_len]).into_owned(),
        );
        let rest = at + 13 + path_len;
        match kind {
            b'W' => {
                let old_len = u64_at(rest + 24) as usize;
                writes.push(Write {
                    path,
                    at,
                    offset: u64_at(rest),
                    old_size: u64_at(rest + 8),
                    len: u64_at(rest + 16),
                    old: bytes[rest + 32..rest + 32 + old_len].to_vec(),
                });
            }
            b'S' => syncs.push((path, u64_at(rest) as usize)),
            other => panic!(
                "undo log {}: record kind {other} at byte {at}",
                log.display()
            ),
        }
        at += len;
    }
    (writes, syncs)
}

/// Puts every file the log names into a state a power cut could have left: the writes
/// made since the file's last sync are undone newest first, each kept, dropped (its
/// old bytes and the old size back) or torn (each of its sectors new, old or noise),
/// as `rng` chooses. A byte that a later kept write decided keeps that write's value.
fn replay(log: &Path, rng: &mut Rng) -> Replayed {
    let (writes, syncs) = read_undo_log(log);
    let mut files: Vec<PathBuf> = writes.iter().map(|w| w.path.clone()).collect();
    files.sort();
    files.dedup();
    let mut replayed = Vec::new();
    for path in files {
        // A sync of no path is a `syncfs`, of every file.
        let covered = syncs
            .iter()
            .filter(|(p, _)| *p == path || p.as_os_str().is_empty())
            .map(|(_, upto)| *upto)
            .max()
            .unwrap_or(0);
        let unsynced: Vec<&Write> = writes
            .iter()
            .filter(|w| w.path == path && w.at >= covered)
            .collect();
        // Renamed or deleted since (directory operations are not modelled).
        let Ok(mut data) = std::fs::read(&path) else {
            continue;
        };
        let Some(first) = unsynced.first() else {
            continue;
        };
        let mut size = first.old_size;
        let mut decided = vec![false; data.len()];
        let mut fates = Vec::new();
        for w in unsynced.iter().rev() {
            let (start, end) = (w.offset as usize, (w.offset + w.len) as usize);
            if data.len() < end {
                data.resize(end, 0);
                decided.resize(end, false);
            }
            // The bytes before the write (zeros past the old end), where no later
            // write decided them.
            let restore = |from: usize, to: usize, data: &mut [u8], decided: &[bool]| {
                for i in from..to {
                    if !decided[i] {
                        data[i] = w.old.get(i - start).copied().unwrap_or(0);
                    }
                }
            };
            let fate = match rng.below(3) {
                0 => {
                    decided[start..end].fill(true);
                    Fate::Kept
                }
                1 => {
                    restore(start, end, &mut data, &decided);
                    Fate::Dropped
                }
                _ => {
                    let mut sectors = Vec::new();
                    let mut from = start;
                    while from < end {
                        let to = ((from as u64 / SECTOR + 1) * SECTOR).min(end as u64) as usize;
                        let sector =
                            [Sector::New, Sector::Old, Sector::Damaged][rng.below(3) as usize];
                        match sector {
                            Sector::New => {}
                            Sector::Old => restore(from, to, &mut data, &decided),
                            Sector::Damaged => {
                                for i in from..to {
                                    if !decided[i] {
                                        data[i] = rng.next() as u8;
                                    }
                                }
                            }
                        }
                        if sector != Sector::Old {
                            decided[from..to].fill(true);
                        }
                        sectors.push(sector);
                        from = to;
                    }
                    Fate::Torn(sectors)
                }
            };
            if fate != Fate::Dropped {
                size = size.max(w.offset + w.len);
            }
            fates.push((w.offset, w.len, fate));
        }
        data.truncate(size as usize);
        std::fs::write(&path, &data).unwrap();
        replayed.push((path, fates));
    }
    replayed
}

/// Compiles the shim into `dir`; returns the library's path.
fn build_shim(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/faults/powercut.c");
    let lib = dir.join("powercut.so");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(&source)
        .arg("-ldl")
        .output()
        .expect("run cc (tests/setup installs gcc)");
    assert!(
        out.status.success(),
        "cc {}: {}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}

/// Runs `cmd` under the shim, recording writes to files under `watched` in `log`.
fn under_shim(cmd: &mut Command, lib: &Path, watched: &Path, log: &Path) {
    cmd.env("LD_PRELOAD", lib)
        .env("POWERCUT_DIR", watched.canonicalize().unwrap())
        .env("POWERCUT_LOG", log);
}

#[test]
fn the_power_cut_model_keeps_synced_writes_and_drops_or_tears_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = build_shim(tmp.path());
    let watched = tmp.path().join("watched");
    std::fs::create_dir(&watched).unwrap();
    let file = watched.join("f");
    let log = tmp.path().join("undo.log");
    let page = 4096;
    for (name, byte) in [("a", b'a'), ("b", b'b'), ("c", b'c')] {
        std::fs::write(tmp.path().join(name), vec![byte; 2 * page]).unwrap();
    }
    // Two synced pages of `a`; then, unsynced, the second overwritten with `b` through
    // O_DIRECT (the way lowkey writes its queue), and a third page of `c` appended.
    for args in [
        "if=a of=watched/f bs=8192 count=1 conv=fsync",
        "if=b of=watched/f bs=4096 count=1 seek=1 conv=notrunc oflag=direct",
        "if=c of=watched/f bs=4096 count=1 seek=2 conv=notrunc",
    ] {
        let mut dd = Command::new("dd");
        dd.args(args.split(' ')).current_dir(tmp.path());
        under_shim(&mut dd, &lib, &watched, &log);
        let out = dd.output().expect("run dd");
        assert!(out.status.success(), "dd {args}: {out:?}");
    }
    let written = std::fs::read(&file).unwrap();
    assert_eq!(written.len(), 3 * page);

    // Each seed's replay, checked against what its fates say, until every fate has
    // been seen for both unsynced writes.
    let mut seen = Vec::new();
    for seed in 0..200 {
        std::fs::write(&file, &written).unwrap();
        let replayed = replay(&log, &mut Rng::new(seed));
        assert_eq!(replayed.len(), 1, "only the watched file: {replayed:?}");
        let fates = &replayed[0].1;
        assert_eq!(
            fates.iter().map(|(o, l, _)| (*o, *l)).collect::<Vec<_>>(),
            vec![(8192, 4096), (4096, 4096)],
            "the two unsynced writes, newest first; the synced one is not undone"
        );
        let after = std::fs::read(&file).unwrap();
        assert!(
            after[..page].iter().all(|b| *b == b'a'),
            "synced data is kept"
        );
        let check = |range: std::ops::Range<usize>, fate: &Fate, new: u8, old: Option<u8>| {
            let sectors = match fate {
                Fate::Kept => vec![Sector::New; 8],
                Fate::Dropped => vec![Sector::Old; 8],
                Fate::Torn(s) => s.clone(),
            };
            for (n, sector) in sectors.iter().enumerate() {
                let at = range.start + n * SECTOR as usize;
                let Some(bytes) = after.get(at..at + SECTOR as usize) else {
                    assert_eq!(old, None, "only an append is cut off");
                    continue;
                };
                match sector {
                    Sector::New => assert!(bytes.iter().all(|b| *b == new), "{fate:?}"),
                    Sector::Old => assert!(
                        bytes.iter().all(|b| Some(*b) == old.or(Some(0))),
                        "{fate:?}"
                    ),
                    Sector::Damaged => assert!(bytes.iter().any(|b| *b != new), "{fate:?}"),
                }
            }
        };
        check(page..2 * page, &fates[1].2, b'b', Some(b'a'));
        check(2 * page..3 * page, &fates[0].2, b'c', None);
        if fates[0].2 == Fate::Dropped {
            assert_eq!(
                after.len(),
                2 * page,
                "a dropped append leaves the old size"
            );
        }
        for (_, _, fate) in fates {
            let kind = std::mem::discriminant(fate);
            if !seen.contains(&kind) {
                seen.push(kind);
            }
        }
        if seen.len() == 3 && seed > 20 {
            break;
        }
    }
    assert_eq!(seen.len(), 3, "kept, dropped and torn all happened");
}

#[test]
fn a_power_cut_under_load_loses_and_repeats_nothing() {
    let mut rng = Rng::from_env("power cut");
    let tmp = tempfile::tempdir().unwrap();
    let lib = build_shim(tmp.path());
    let (mut kept, mut dropped, mut torn) = (0, 0, 0);
    for round in 1..=rounds(3, 30) {
        let (home, agent) = home_with_agent();
        let log = home.dir.path().join("undo.log");
        let mut cmd = home.command(&["serve", "--listen", "127.0.0.1:0"]);
        std::fs::create_dir_all(home.root()).unwrap();
        under_shim(&mut cmd, &lib, &home.root(), &log);
        let daemon = Daemon::spawn(cmd);
        let to = daemon.addr.clone();
        let load = Load::start(if long_mode() { 4 } else { 2 }, "hook", move || to.clone());
        std::thread::sleep(rng.millis(200, 1000));
        daemon.signal(Signal::SIGKILL);
        assert_eq!(daemon.wait_exit(), None, "killed by the signal");
        let (acked, others) = load.stop();
        reap_agents(&agent);

        let replayed = replay(&log, &mut rng);
        let mut counts = (0, 0, 0);
        for (path, fates) in &replayed {
            for (offset, len, fate) in fates {
                match fate {
                    Fate::Kept => counts.0 += 1,
                    Fate::Dropped => counts.1 += 1,
                    Fate::Torn(_) => counts.2 += 1,
                }
                if path.starts_with(home.root().join("queue")) {
                    println!(
                        "faults power cut, round {round}: {} bytes {offset}..{}: {fate:?}",
                        path.display(),
                        offset + len
                    );
                }
            }
        }
        println!(
            "faults power cut, round {round}: unsynced writes kept {}, dropped {}, torn {}; other answers {others:?}",
            counts.0, counts.1, counts.2
        );
        kept += counts.0;
        dropped += counts.1;
        torn += counts.2;

        let _daemon = home.serve();
        Tally::settle(&home, &acked, PATIENCE_IDLE).check(&format!("power cut, round {round}"));
    }
    println!("faults power cut: unsynced writes kept {kept}, dropped {dropped}, torn {torn}");
}
