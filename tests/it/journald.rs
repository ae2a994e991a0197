//! Logging to a real journald: a standalone journald in a private mount namespace
//! (`journald-ns.sh`), lowkey logging to it natively, and `journalctl` reading the
//! structured fields back.

use crate::helpers::{Killed, home_env, raw_exchange};
use crate::support::*;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

const ACCEPTED: &str = "5dda1ec3169b429c91133c78eabaf6d2";
const REJECTED: &str = "55dbe028ef1b4db4afe7f9eba95ee5fb";
const RUN_STARTED: &str = "f93d789644284721aa17e59698fa9a5a";
const RUN_FINISHED: &str = "3acb75bd5a64442e8748c3eaf91512c8";
const RUN_FAILED: &str = "37b77799b2b24964bd9a2d6effdff155";
const CONFIG_RELOADED: &str = "c2289f244615408ab838bfbc419b6ba2";
const RELOAD_FAILED: &str = "939826ba95024687ad7e9427fec1ca33";
const STARTED: &str = "acc440a9d0364a34963633ad6b51e167";
const STOPPING: &str = "ef99f7cfc2904fc192ab92f30f5680c9";
const RERUN: &str = "7f3a87c862044a2ba873ff8c53558664";
const IGNORED: &str = "7d65efd79b094851b19d5f8055a64748";
const FINISH_FAILED: &str = "3b699a9c1f62445d98776f54e7c38a50";

const SOURCE_SECRET: &str = "gh_source_secret_do_not_log";
const WRONG_KEY: &str = "lk_wrong_key_do_not_log_either";
/// An onFinish URL's path (a chat webhook's token) and its secret.
const URL_TOKEN: &str = "T0K3N_url_path_do_not_log";
const FINISH_SECRET: &str = "whsec_ZG9fbm90X2xvZ190aGlzX29uZV9laXRoZXI";

/// A one-shot HTTP server on loopback that answers its one request 404, as a chat
/// service answers a webhook URL it does not know.
fn answers_404() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap() == 1 {
            head.push(byte[0]);
        }
        let _ = std::io::Write::write_all(
            &mut conn,
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
    });
    format!("http://{addr}")
}

/// The namespace holder: journald runs inside it until this is dropped.
struct Journal {
    holder: Child,
}

impl Journal {
    fn start(home: &Home) -> Journal {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/journald-ns.sh");
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", script])
            .arg(home.dir.path())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("unshare (util-linux) runs; the test needs root for a private mount namespace");
        let mut line = String::new();
        BufReader::new(holder.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "journald did not come up in the namespace"
        );
        Journal { holder }
    }

    /// A command run inside the namespace.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args([
            "--mount",
            "--target",
            &self.holder.id().to_string(),
            "--",
            program,
        ]);
        cmd
    }

    /// Every entry matching `filters`, as journalctl's JSON.
    fn entries(&self, filters: &[&str]) -> Vec<Value> {
        let out = self
            .command("journalctl")
            .args(["--no-pager", "-o", "json"])
            .args(filters)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits for an entry matching `filters` by following the journal.
    fn wait_for(&self, filters: &[&str]) -> Value {
        let mut follow = self
            .command("journalctl")
            .args(["--no-pager", "-o", "json", "--follow"])
            .args(filters)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = follow.stdout.take().unwrap();
        std::thread::spawn(move || {
            if let Some(Ok(line)) = BufReader::new(stdout).lines().next() {
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(PATIENCE);
        let _ = follow.kill();
        let _ = follow.wait();
        serde_json::from_str(&line.unwrap_or_else(|_| panic!("no journal entry {filters:?}")))
            .unwrap()
    }

    /// Everything in the journal, in journald's export format (all fields, verbatim).
    fn export(&self) -> String {
        let out = self
            .command("journalctl")
            .args(["--no-pager", "-o", "export"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.holder.id() as i32),
            Signal::SIGKILL,
        );
        let _ = self.holder.wait();
    }
}

fn field<'a>(entry: &'a Value, name: &str) -> &'a str {
    entry[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {entry:#}"))
}

/// Starts `lowkey serve` inside the journal's namespace on a socket passed as systemd
/// does, with its stderr a pipe whose identity goes into `JOURNAL_STREAM`, as systemd
/// sets it for a service whose output is connected to the journal. Returns the process,
/// its base URL, and what it wrote to stderr once it has exited.
fn serve_into(journal: &Journal, home: &Home) -> (Killed, String, JoinHandle<String>) {
    let (read_end, write_end): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    let stat = nix::sys::stat::fstat(&write_end).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let fd = nix::unistd::dup(&listener).unwrap();
    let raw = fd.as_raw_fd();
    let mut cmd = journal.command("/bin/bash");
    cmd.arg("-c")
        .arg(format!(
            "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http exec \"$0\" serve 3<&{raw} {raw}<&-"
        ))
        .arg(lowkey_bin());
    home_env(home, &mut cmd);
    cmd.env("JOURNAL_STREAM", format!("{}:{}", stat.st_dev, stat.st_ino))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(write_end));
    let lowkey = Killed(cmd.spawn().unwrap());
    // The parent's copies of the pipe's write end must go, or the reader never ends.
    drop(cmd);
    drop(fd);
    let stderr = std::thread::spawn(move || {
        let mut f = std::fs::File::from(read_end);
        let mut s = String::new();
        let _ = f.read_to_string(&mut s);
        s
    });
    let base = format!("http://{}", listener.local_addr().unwrap());
    (lowkey, base, stderr)
}

#[test]
fn journald_gets_structured_fields_and_never_a_secret() {
    let home = Home::new();
    let agent = home.script(
        "agent.sh",
        "cat >/dev/null; echo 'agent says hi' >&2; echo answered",
    );
    let project = home.project("proj");
    home.write_config(&json!({
        "apiKey": KEY,
        "agents": { "bot": { "command": [agent] } },
        "webhooks": {
            "hook": { "project": project, "agent": "bot", "onFinish": {
                "command": [home.script("notify.sh", "exit 5")],
                "url": format!("{}/services/{URL_TOKEN}", answers_404()),
                "secret": FINISH_SECRET,
            } },
            "gh": { "project": project, "agent": "bot", "verify": "github", "secret": SOURCE_SECRET, "auth": "signature" },
            "gh": { "project": project, "agent": "bot", "verify": "github", "secret": SOURCE_SECRET, "auth": "signature" },
            "opened": { "project": project, "agent": "bot", "match": { "action": "opened" } }
        }
    }));
    let journal = Journal::start(&home);
    let (lowkey, base, stderr_reader) = serve_into(&journal, &home);

    let started = journal.wait_for(&[&format!("MESSAGE_ID={STARTED}")]);
    assert_eq!(field(&started, "SYSLOG_IDENTIFIER"), "lowkey");

    let answer = request(
        "POST",
        &format!("{base}/api/webhook/hook"),
        &[("Authorization", &format!("Bearer {KEY}"))],
        b"{\"n\":1}",
    );
    assert_eq!(answer.status, 202);
    let event = answer.json()["event"].as_str().unwrap().to_owned();
    let session = answer.json()["session"].as_str().unwrap().to_owned();
    let wrong = request(
        "POST",
        &format!("{base}/api/webhook/hook"),
        &[("Authorization", &format!("Bearer {WRONG_KEY}"))],
        b"{}",
    );
    assert_eq!(wrong.status, 401);
    let forged = request(
        "POST",
        &format!("{base}/api/webhook/gh"),
        &[("X-Hub-Signature-256", "sha256=00")],
        b"{}",
    );
    assert_eq!(forged.status, 401);

    let finished = journal.wait_for(&[
        &format!("MESSAGE_ID={RUN_FINISHED}"),
        &format!("EVENT_ID={event}"),
    ]);
    for (name, value) in [
        ("WEBHOOK_SOURCE", "hook"),
        ("SESSION_ID", session.as_str()),
        ("AGENT", "bot"),
        ("PROJECT", project.as_str()),
        ("EXIT_STATUS", "0"),
    ] {
        assert_eq!(field(&finished, name), value, "{finished:#}");
    }
    assert!(field(&finished, "DURATION_MS").parse::<u64>().is_ok());

    // A rerun (`lowkey rerun`) has its own line, naming the new event and the original.
    let rerun = request(
        "POST",
        &format!("{base}/api/events/{event}/rerun"),
        &[("Authorization", &format!("Bearer {KEY}"))],
        json!({ "session": session }).to_string().as_bytes(),
    );
    assert_eq!(rerun.status, 202, "{rerun:?}");
    let again = rerun.json()["event"].as_str().unwrap().to_owned();
    let rerun_line =
        journal.wait_for(&[&format!("MESSAGE_ID={RERUN}"), &format!("EVENT_ID={again}")]);
    for (name, value) in [
        ("RERUN_OF", event.as_str()),
        ("SESSION_ID", session.as_str()),
        ("WEBHOOK_SOURCE", "hook"),
        ("AGENT", "bot"),
        ("HTTP_STATUS", "202"),
    ] {
        assert_eq!(field(&rerun_line, name), value, "{rerun_line:#}");
    }
    // A failed onFinish is a warning with the event's fields, its URL's host only.
    let failed = |kind: &str| {
        journal.wait_for(&[
            &format!("MESSAGE_ID={FINISH_FAILED}"),
            &format!("ON_FINISH={kind}"),
        ])
    };
    let (command, post) = (failed("command"), failed("url"));
    for entry in [&command, &post] {
        assert_eq!(field(entry, "EVENT_ID"), event);
        assert_eq!(field(entry, "SESSION_ID"), session);
        assert_eq!(field(entry, "WEBHOOK_SOURCE"), "hook");
        assert_eq!(field(entry, "PRIORITY"), "4");
    }
    assert!(field(&command, "MESSAGE").contains("exited with status 5"));
    assert_eq!(field(&post, "HOST"), "127.0.0.1");
    assert!(field(&post, "MESSAGE").contains("404"), "{post:#}");

    // `journalctl WEBHOOK_SOURCE=hook` finds the accepted line with its fields.
    let by_source = journal.entries(&["WEBHOOK_SOURCE=hook"]);
    let accepted = by_source
        .iter()
        .find(|e| e["MESSAGE_ID"] == ACCEPTED)
        .unwrap_or_else(|| panic!("no accepted line: {by_source:#?}"));
    assert_eq!(field(accepted, "HTTP_STATUS"), "202");
    assert_eq!(field(accepted, "EVENT_ID"), event);
    assert!(field(accepted, "REMOTE_ADDR").starts_with("127.0.0.1:"));
    // tracing-journald maps INFO to notice (5); warnings are 4, errors 3.
    assert_eq!(field(accepted, "PRIORITY"), "5");
    assert!(by_source.iter().any(|e| e["MESSAGE_ID"] == RUN_STARTED));
    // Each rejection says why in `REASON`, never with the key that was sent.
    let rejected = journal.entries(&[&format!("MESSAGE_ID={REJECTED}")]);
    assert!(
        rejected.iter().any(|e| e["HTTP_STATUS"] == "401"
            && e["WEBHOOK_SOURCE"] == "hook"
            && e["REASON"] == "wrong API key"),
        "{rejected:#?}"
    );
    assert!(
        rejected.iter().any(|e| {
            e["HTTP_STATUS"] == "401"
                && e["WEBHOOK_SOURCE"] == "gh"
                && e["REASON"].as_str().is_some_and(|r| {
                    r.starts_with("signature: ") && r.contains("x-hub-signature-256")
                })
        }),
        "{rejected:#?}"
    );

    // A delivery the filters leave out: its own MESSAGE_ID, with the reason.
    let left_out = request(
        "POST",
        &format!("{base}/api/webhook/opened"),
        &[("Authorization", &format!("Bearer {KEY}"))],
        b"{\"action\":\"closed\"}",
    );
    assert_eq!(left_out.status, 200);
    let ignored = journal.wait_for(&[&format!("MESSAGE_ID={IGNORED}")]);
    assert_eq!(field(&ignored, "WEBHOOK_SOURCE"), "opened");
    assert_eq!(field(&ignored, "HTTP_STATUS"), "200");
    assert_eq!(
        field(&ignored, "REASON"),
        "action is \"closed\", not \"opened\" (webhooks.opened.match.action)"
    );
    assert_eq!(field(&ignored, "PRIORITY"), "5");

    // The agent's stderr is in the journal, tagged with its session.
    let agent_lines = journal.entries(&[&format!("SESSION_ID={session}")]);
    assert!(
        agent_lines.iter().any(|e| e["MESSAGE"]
            .as_str()
            .is_some_and(|m| m.contains("agent says hi"))),
        "{agent_lines:#?}"
    );

    // Reloads, good and bad.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(lowkey.0.id() as i32),
        Signal::SIGHUP,
    )
    .unwrap();
    journal.wait_for(&[&format!("MESSAGE_ID={CONFIG_RELOADED}")]);
    home.write_config_text("{ broken");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(lowkey.0.id() as i32),
        Signal::SIGHUP,
    )
    .unwrap();
    let failed = journal.wait_for(&[&format!("MESSAGE_ID={RELOAD_FAILED}")]);
    assert_eq!(
        field(&failed, "PRIORITY"),
        "3",
        "a failed reload is logged at error priority"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(lowkey.0.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let mut lowkey = lowkey;
    assert!(lowkey.0.wait().unwrap().success());
    journal.wait_for(&[&format!("MESSAGE_ID={STOPPING}")]);
    assert!(
        journal
            .entries(&[&format!("MESSAGE_ID={RUN_FAILED}")])
            .is_empty()
    );

    // Not one secret in any field of any entry: not the API key, not a wrong key a
    // caller sent, not a source secret, not an Authorization header.
    let everything = journal.export();
    assert!(
        everything.contains("WEBHOOK_SOURCE=hook"),
        "the export is not empty"
    );
    for secret in [
        KEY,
        WRONG_KEY,
        SOURCE_SECRET,
        "Bearer",
        URL_TOKEN,
        FINISH_SECRET,
    ] {
        assert!(!everything.contains(secret), "{secret} reached the journal");
    }
    // Under the journal, nothing goes to stderr.
    assert_eq!(stderr_reader.join().unwrap(), "");
}

#[test]
fn journald_gets_outside_text_escaped() {
    let home = Home::new();
    let agent = home.script(
        "agent.sh",
        r#"cat >/dev/null; printf 'a\rFORGED \302\205FORGED \342\200\250FORGED \033[2K\\back\n' >&2"#,
    );
    let project = home.project("proj");
    home.write_config(&json!({
        "apiKey": KEY,
        "agents": { "bot": { "command": [agent] } },
        "webhooks": { "hook": { "project": project, "agent": "bot" } }
    }));
    let journal = Journal::start(&home);
    let (lowkey, base, _stderr) = serve_into(&journal, &home);
    journal.wait_for(&[&format!("MESSAGE_ID={STARTED}")]);

    // A source name in raw bytes, without a key.
    let head = "POST /api/webhook/q\u{85}FORGED\u{2028}FORGED HTTP/1.1\r\nHost: lowkey\r\n\
                Content-Length: 2\r\nConnection: close\r\n\r\n";
    let addr = base.trim_start_matches("http://");
    let (status, answer) = raw_exchange(addr, head.into(), b"{}".to_vec()).unwrap();
    assert_eq!(status, 401, "{answer}");
    let rejected = journal.wait_for(&[&format!("MESSAGE_ID={REJECTED}")]);
    assert_eq!(
        field(&rejected, "WEBHOOK_SOURCE"),
        "q\\u{85}FORGED\\u{2028}FORGED"
    );

    // An agent's stderr.
    let answer = request(
        "POST",
        &format!("{base}/api/webhook/hook"),
        &[("Authorization", &format!("Bearer {KEY}"))],
        b"{}",
    );
    assert_eq!(answer.status, 202);
    let event = answer.json()["event"].as_str().unwrap().to_owned();
    journal.wait_for(&[
        &format!("MESSAGE_ID={RUN_FINISHED}"),
        &format!("EVENT_ID={event}"),
    ]);
    let lines = journal.entries(&[&format!("EVENT_ID={event}")]);
    assert!(
        lines.iter().any(|e| e["MESSAGE"]
            == "agent stderr: a\\rFORGED \\u{85}FORGED \\u{2028}FORGED \\u{1b}[2K\\\\back"),
        "{lines:#?}"
    );

    // A config whose keys hold controls, reloaded.
    home.write_config_text(&format!(
        r#"{{"apiKey": "{KEY}", "x\u2028y": 1, "agents": {{}}, "webhooks": {{"a\u0085\u001b[2Kb": {{}}}}}}"#
    ));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(lowkey.0.id() as i32),
        Signal::SIGHUP,
    )
    .unwrap();
    let failed = journal.wait_for(&[&format!("MESSAGE_ID={RELOAD_FAILED}")]);
    let message = field(&failed, "MESSAGE");
    assert!(message.contains("x\\u{2028}y"), "{message}");
    assert!(
        message.contains("webhooks.a\\u{85}\\u{1b}[2Kb"),
        "{message}"
    );

    // Not one field of lowkey's holds a raw control: journalctl shows such a field as
    // an array of bytes instead of a string.
    for entry in journal.entries(&["SYSLOG_IDENTIFIER=lowkey"]) {
        for (name, value) in entry.as_object().unwrap() {
            let text = value
                .as_str()
                .unwrap_or_else(|| panic!("{name} is not text: {entry:#}"));
            assert!(
                !text.chars().any(|c| c.is_control()
                    || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}')),
                "{name}={text:?}"
            );
        }
    }
}
