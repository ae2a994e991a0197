//! `onFinish` (README.md, "After a run: onFinish"): after a run's result is recorded,
//! a command gets the outcome in `LOWKEY_*` and the reply on stdin, in the project; a
//! URL gets a POST signed with Standard Webhooks, checked here by the spec's own Python
//! library (`tests/signers/finish_receiver.py`), over HTTP and HTTPS. What goes wrong
//! with it is logged and changes nothing else.

use crate::helpers::*;
use crate::senders::{SIGNERS_DIR, python};
use crate::support::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The secret the POSTs are signed with: `whsec_` and the base64 of the key.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// An onFinish script that writes its environment, cwd and stdin to
/// `<out>/<tag>-<event>` (whole, by a rename) and then runs `then`.
fn recorder(home: &Home, tag: &str, then: &str) -> String {
    let out = out_dir(home);
    home.script(
        &format!("finish-{tag}.sh"),
        &format!(
            r#"f="{out}/{tag}-$LOWKEY_EVENT_ID"
{{ env | grep '^LOWKEY_' | sort; echo "PWD=$(pwd)"; echo "STDIN=$(cat)"; }} > "$f.tmp"
mv "$f.tmp" "$f"
{then}"#,
            out = out.display()
        ),
    )
}

/// What a recorder wrote for `event`, once it has: variable → value.
fn recorded(home: &Home, tag: &str, event: &str) -> BTreeMap<String, String> {
    let path = out_dir(home).join(format!("{tag}-{event}"));
    let text = wait_for(&format!("{}", path.display()), || {
        std::fs::read_to_string(&path).ok()
    });
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The final run record of `event` in its session.
fn run_status(home: &Home, session: &str, event: &str) -> String {
    home.session(session)
        .iter()
        .filter(|l| l["type"] == "run" && l["event"] == event && l["status"] != "started")
        .map(|l| l["status"].as_str().unwrap().to_owned())
        .next_back()
        .unwrap_or_else(|| panic!("no run record of {event}"))
}

#[test]
fn a_command_gets_the_outcome_in_its_environment_and_the_reply_on_stdin() {
    let home = Home::new();
    let agent = home.script(
        "agent.sh",
        r#"msg=$(cat)
case "$msg" in
*fail*) echo "could not ☕"; exit 3 ;;
*slow*) exec sleep 60 ;;
esac
echo "pong ☕"
echo "second line""#,
    );
    let project = home.project("proj");
    let notify = recorder(&home, "cmd", "");
    home.write_config(&json!({
        "apiKey": KEY,
        "agents": { "bot": {
            "command": [agent], "timeoutSec": 1,
            "onFinish": { "command": [notify] },
        } },
        "webhooks": { "hook": { "project": project, "agent": "bot" } }
    }));
    let daemon = home.serve();

    let (session, event) = accept(&daemon, "hook", r#"{"ping":1}"#);
    let got = recorded(&home, "cmd", &event);
    assert_eq!(got["LOWKEY_STATUS"], "ok", "{got:?}");
    assert_eq!(got["LOWKEY_EXIT_CODE"], "0");
    assert!(got["LOWKEY_DURATION_MS"].parse::<u64>().is_ok(), "{got:?}");
    assert_eq!(got["LOWKEY_SESSION_ID"], session);
    assert_eq!(got["LOWKEY_EVENT_ID"], event);
    assert_eq!(got["LOWKEY_SOURCE"], "hook");
    assert_eq!(got["LOWKEY_AGENT"], "bot");
    assert_eq!(got["LOWKEY_PROJECT"], project);
    assert_eq!(got["PWD"], project);
    // The reply as the session records it: both lines, the last newline trimmed.
    assert_eq!(got["STDIN"], "pong ☕");
    let session_file = PathBuf::from(&got["LOWKEY_SESSION_FILE"]);
    let transcript = std::fs::read_to_string(&session_file).unwrap();
    assert!(
        transcript.contains("second line") && transcript.contains(r#""status":"finished""#),
        "the run's result is in {} before onFinish runs:\n{transcript}",
        session_file.display()
    );

    let (_, failed) = accept(&daemon, "hook", r#"{"please":"fail"}"#);
    let got = recorded(&home, "cmd", &failed);
    assert_eq!(got["LOWKEY_STATUS"], "failed", "{got:?}");
    assert_eq!(got["LOWKEY_EXIT_CODE"], "3");
    assert_eq!(got["STDIN"], "could not ☕");

    let (_, slow) = accept(&daemon, "hook", r#"{"be":"slow"}"#);
    let got = recorded(&home, "cmd", &slow);
    assert_eq!(got["LOWKEY_STATUS"], "timed_out", "{got:?}");
    assert_eq!(
        got["LOWKEY_EXIT_CODE"], "",
        "no exit code: the run was ended"
    );
}

#[test]
fn a_sources_on_finish_wins_over_its_agents() {
    let home = Home::with_agent("cat >/dev/null; echo done");
    let project = home.project("proj");
    let mut config: Value = serde_json::from_str(&read_text(&home.config_path())).unwrap();
    config["agents"]["bot"]["onFinish"] = json!({ "command": [recorder(&home, "agent", "")] });
    config["webhooks"]["own"] = json!({
        "project": project, "agent": "bot",
        "onFinish": { "command": [recorder(&home, "source", "")] },
    });
    home.write_config(&config);
    let daemon = home.serve();

    let (_, own) = accept(&daemon, "own", "{}");
    let (_, plain) = accept(&daemon, "hook", "{}");
    assert_eq!(recorded(&home, "source", &own)["LOWKEY_SOURCE"], "own");
    assert_eq!(recorded(&home, "agent", &plain)["LOWKEY_SOURCE"], "hook");
    // A stop waits for the notifications in flight, so any other would be there now.
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(), Some(0));
    let out = out_dir(&home);
    assert!(
        !out.join(format!("agent-{own}")).exists(),
        "the agent's ran too"
    );
    assert!(!out.join(format!("source-{plain}")).exists());
}

#[test]
fn a_failing_or_hanging_on_finish_is_logged_and_changes_nothing_else() {
    let home = Home::with_agent("cat >/dev/null; echo done");
    let project = home.project("proj");
    let gate = Gate::new(&home, "gate");
    let mut config: Value = serde_json::from_str(&read_text(&home.config_path())).unwrap();
    config["agents"]["bot"]["maxConcurrent"] = json!(1);
    let source = |command: String, timeout: u64| {
        json!({
            "project": project, "agent": "bot", "target": "shared",
            "onFinish": { "command": [command], "timeoutSec": timeout },
        })
    };
    config["webhooks"]["fails"] = source(
        home.script("fails.sh", "echo 'no route to the phone' >&2; exit 7"),
        30,
    );
    config["webhooks"]["hangs"] = source(home.script("hangs.sh", "exec sleep 60"), 1);
    config["webhooks"]["waits"] = source(recorder(&home, "waits", &gate.wait_sh()), 30);
    config["webhooks"]["missing"] = source("/nonexistent/notify".into(), 30);
    home.write_config(&config);
    let daemon = home.serve();
    let failed = |event: &str, why: &str| {
        let tag = format!("event_id={event}");
        daemon.wait_log(&format!("onFinish of {event} failing: {why}"), |l| {
            l.contains("WARN") && l.contains(&tag) && l.contains(why)
        })
    };

    let (session, fails) = accept(&daemon, "fails", "{}");
    let line = failed(&fails, "exited with status 7");
    assert!(line.contains("webhook_source=fails"), "{line}");
    daemon.wait_log("the onFinish command's stderr", |l| {
        l.contains("onFinish stderr: no route to the phone")
    });
    let (_, hangs) = accept(&daemon, "hangs", "{}");
    failed(&hangs, "ran past timeoutSec (1s)");
    let (_, missing) = accept(&daemon, "missing", "{}");
    failed(&missing, "cannot start");

    // An onFinish still running holds neither the agent's only slot nor the session:
    // the next event runs while it waits.
    let (_, waits) = accept(&daemon, "waits", "{}");
    recorded(&home, "waits", &waits);
    let (_, next) = accept(&daemon, "hook", "{}");
    let (_, after) = accept(&daemon, "fails", "{}");
    daemon.wait_run_end(&next);
    daemon.wait_run_end(&after);
    gate.open();
    for event in [&fails, &hangs, &missing, &waits, &after] {
        assert_eq!(run_status(&home, &session, event), "finished", "{event}");
    }
    let lines = home.session(&session);
    assert_eq!(
        of_type(&lines, "run").len(),
        2 * 5,
        "a start and an end per run, nothing more:\n{lines:#?}"
    );
}

#[test]
fn a_stop_gives_an_on_finish_in_flight_a_short_while_then_ends_it() {
    let home = Home::with_agent("cat >/dev/null; echo done");
    let mut config: Value = serde_json::from_str(&read_text(&home.config_path())).unwrap();
    let hangs = recorder(&home, "hangs", "echo $$ > \"$f.pid\"; exec sleep 60");
    config["agents"]["bot"]["onFinish"] = json!({ "command": [hangs] });
    home.write_config(&config);
    let daemon = home.serve();
    let (_, event) = accept(&daemon, "hook", "{}");
    recorded(&home, "hangs", &event);
    let pid_file = out_dir(&home).join(format!("hangs-{event}.pid"));
    let pid: i32 = wait_for("the onFinish's pid", || {
        read_text(&pid_file).trim().parse().ok()
    });
    let _reap = Reap(vec![pid]);

    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(), Some(0));
    let tag = format!("event_id={event}");
    assert_eq!(
        daemon.count_log(|l| l.contains(&tag) && l.contains("dropped: lowkey is stopping")),
        1,
        "{}",
        daemon.log_text()
    );
    assert!(!is_alive(pid), "the onFinish command outlived lowkey");
}

/// `finish_receiver.py`, running until dropped; it answers the first `fail` POSTs 503.
struct Receiver {
    _process: Killed,
    port: u16,
    out: PathBuf,
}

impl Receiver {
    fn start(home: &Home, fail: usize, tls: Option<(&Path, &Path)>) -> Receiver {
        let out = out_dir(home).join(format!("received-{}", tls.is_some()));
        let mut cmd = Command::new(python());
        cmd.arg(format!("{SIGNERS_DIR}/finish_receiver.py"))
            .arg(&out)
            .arg(SECRET)
            .args(["--fail", &fail.to_string()])
            .stdout(Stdio::piped());
        if let Some((cert, key)) = tls {
            cmd.arg("--tls").arg(cert).arg(key);
        }
        let mut child = cmd.spawn().expect("run finish_receiver.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!("finish_receiver.py did not start (is tests/setup done?): {line:?}")
        });
        Receiver {
            _process: Killed(child),
            port,
            out,
        }
    }

    /// The first `n` requests it got.
    fn received(&self, n: usize) -> Vec<Value> {
        wait_for(&format!("{n} POSTs to the receiver"), || {
            let lines: Vec<Value> = read_text(&self.out)
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            (lines.len() >= n).then_some(lines)
        })
    }
}

/// A config whose agent replies "pong" and posts to `url`.
fn posting(home: &Home, url: &str) {
    let agent = home.script("agent.sh", "cat >/dev/null; echo pong");
    let project = home.project("proj");
    home.write_config(&json!({
        "apiKey": KEY,
        "agents": { "bot": { "command": [agent] } },
        "webhooks": { "hook": {
            "project": project, "agent": "bot",
            "onFinish": { "url": url, "secret": SECRET },
        } }
    }));
}

#[test]
fn a_post_is_signed_with_standard_webhooks_and_tried_again_after_a_503() {
    let home = Home::new();
    let receiver = Receiver::start(&home, 1, None);
    posting(
        &home,
        &format!("http://127.0.0.1:{}/notify?topic=runs", receiver.port),
    );
    let daemon = home.serve();
    let (session, event) = accept(&daemon, "hook", "{}");

    let got = receiver.received(2);
    assert_eq!(got[0]["status"], 503);
    assert_eq!(got[1]["status"], 204);
    for request in &got {
        assert_eq!(request["verified"], true, "{request:#}");
        assert_eq!(request["headers"]["content-type"], "application/json");
    }
    // One notification: the same webhook-id on each attempt, signed anew.
    assert_eq!(
        got[0]["headers"]["webhook-id"],
        got[1]["headers"]["webhook-id"]
    );
    let body: Value = serde_json::from_str(got[1]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["type"], "run.finished");
    let data = &body["data"];
    assert_eq!(data["status"], "ok");
    assert_eq!(data["exitCode"], 0);
    assert!(data["durationMs"].is_u64());
    assert_eq!(data["event"], event.as_str());
    assert_eq!(data["session"], session.as_str());
    assert_eq!(data["source"], "hook");
    assert_eq!(data["agent"], "bot");
    assert_eq!(data["reply"], "pong");
    assert!(Path::new(data["sessionFile"].as_str().unwrap()).exists());
    assert!(body["text"].as_str().unwrap().contains("pong"), "{body:#}");
    assert_eq!(run_status(&home, &session, &event), "finished");
}

/// A CA, and a certificate it signed for 127.0.0.1: (CA file, cert, key).
fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (tests/setup installs it)");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509", "-days", "2", "-subj", "/CN=lowkey test CA"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem"],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign"],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req", "-subj", "/CN=127.0.0.1"][..],
            &ec,
            &["-keyout", "srv.key", "-out", "srv.csr"],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("srv.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "srv.ext",
        "-out",
        "srv.pem",
    ]);
    (dir.join("ca.pem"), dir.join("srv.pem"), dir.join("srv.key"))
}

#[test]
fn a_post_over_https_trusts_the_system_cas_and_ssl_cert_file() {
    let home = Home::new();
    let (ca, cert, key) = test_ca(&out_dir(&home));
    let receiver = Receiver::start(&home, 0, Some((&cert, &key)));
    posting(
        &home,
        &format!("https://127.0.0.1:{}/notify", receiver.port),
    );

    // Without the test CA, the receiver's certificate is refused.
    let untrusting = Daemon::spawn({
        let mut cmd = home.command(&["serve", "--listen", "127.0.0.1:0"]);
        cmd.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
        cmd
    });
    let (_, refused) = accept(&untrusting, "hook", "{}");
    let tag = format!("event_id={refused}");
    let line = untrusting.wait_log("the POST refusing the certificate", |l| {
        l.contains(&tag) && l.contains("onFinish POST to 127.0.0.1 failed")
    });
    assert!(line.to_lowercase().contains("certificate"), "{line}");
    assert!(read_text(&receiver.out).is_empty(), "nothing was posted");
    drop(untrusting);

    let mut cmd = home.command(&["serve", "--listen", "127.0.0.1:0"]);
    cmd.env("SSL_CERT_FILE", &ca).env_remove("SSL_CERT_DIR");
    let daemon = Daemon::spawn(cmd);
    let (_, event) = accept(&daemon, "hook", "{}");
    let got = receiver.received(1);
    assert_eq!(got[0]["verified"], true, "{:#}", got[0]);
    let body: Value = serde_json::from_str(got[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["data"]["event"], event.as_str());
}

#[test]
fn check_names_each_bad_on_finish_and_its_fix() {
    let home = Home::with_agent("cat");
    let mut config: Value = serde_json::from_str(&read_text(&home.config_path())).unwrap();
    config["agents"]["bot"]["onFinish"] = json!({ "url": "https://ntfy.sh/runs" });
    config["webhooks"]["hook"]["onFinish"] = json!({ "url": "ntfy.sh/runs", "secret": SECRET });
    config["webhooks"]["other"] = json!({
        "project": home.project("proj"), "agent": "bot",
        "onFinish": { "command": ["lowkey-no-such-notifier"] },
    });
    home.write_config(&config);
    let check = home.run(&["check"]);
    assert_eq!(check.code, 78, "{check:?}");
    for expected in [
        "error: agents.bot.onFinish.secret: missing",
        "error: webhooks.hook.onFinish.url: is not an http:// or https:// URL",
        "warning: webhooks.other.onFinish.command: \"lowkey-no-such-notifier\" is not on the PATH systemd gives",
    ] {
        assert!(
            check.stdout.contains(expected),
            "no {expected:?} in:\n{}",
            check.stdout
        );
    }
    assert!(
        !check.stdout.contains(&SECRET[6..]),
        "the secret is not shown"
    );
}
