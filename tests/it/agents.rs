//! How an agent is run (the `agents.<name>` rows of README.md's config table): its
//! directory, stdin, environment, reply, stderr, and the timeout that ends its whole
//! process group.

use crate::helpers::*;
use crate::support::*;
use nix::sys::signal::Signal;
use serde_json::json;
use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;

#[test]
fn an_agent_runs_in_the_project_with_the_message_and_the_lowkey_environment() {
    let home = Home::new();
    let out = out_dir(&home);
    let o = out.display();
    let agent = home.script(
        "agent.sh",
        &format!(
            r#"echo "diagnostic for the journal" >&2
pwd -P > "{o}/cwd"
cat > "{o}/stdin"
env > "{o}/env"
echo "reply from $LOWKEY_AGENT"
echo "second line""#
        ),
    );
    let project = home.project("billing");
    home.write_config(&json!({
        "apiKey": KEY,
        "agents": { "bot": {
            "command": [agent],
            "timeoutSec": 30,
            "env": { "GREETING": "hello world", "TRIAGE_LEVEL": "warn" }
        } },
        "webhooks": { "stripe": { "project": project, "agent": "bot" } }
    }));
    // As under systemd: lowkey has a NOTIFY_SOCKET (a real one, so notifications work),
    // which must not reach the agent.
    let notify_path = home.dir.path().join("notify.sock");
    let _notify = UnixDatagram::bind(&notify_path).unwrap();
    let mut cmd = home.command(&["serve", "--listen", "127.0.0.1:0"]);
    cmd.env("NOTIFY_SOCKET", &notify_path);
    let daemon = Daemon::spawn(cmd);

    let body = r#"{"type":"invoice.paid"}"#;
    let (session, event) = accept(&daemon, "stripe", body);
    let end = daemon.wait_run_end(&event);
    assert!(end.contains("run finished"), "{end}");

    let cwd = read_text(&out.join("cwd"));
    assert_eq!(
        std::path::Path::new(cwd.trim_end()),
        std::fs::canonicalize(&project).unwrap(),
        "the agent's working directory is the project"
    );
    assert_eq!(
        read_text(&out.join("stdin")),
        format!("Webhook from stripe: {body}")
    );

    let env: HashMap<String, String> = read_text(&out.join("env"))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let session_file = home.sessions().join(format!("{session}.jsonl"));
    let expected = [
        ("LOWKEY_SESSION_ID", session.as_str()),
        ("LOWKEY_SESSION_FILE", &session_file.display().to_string()),
        ("LOWKEY_SOURCE", "stripe"),
        ("LOWKEY_EVENT_ID", event.as_str()),
        ("LOWKEY_PROJECT", project.as_str()),
        ("LOWKEY_AGENT", "bot"),
        ("GREETING", "hello world"),
        ("TRIAGE_LEVEL", "warn"),
    ];
    for (name, value) in expected {
        assert_eq!(
            env.get(name).map(String::as_str),
            Some(value),
            "{name} in the agent's environment"
        );
    }
    assert!(
        !env.contains_key("NOTIFY_SOCKET"),
        "NOTIFY_SOCKET reached the agent"
    );
    assert!(
        env.contains_key("PATH"),
        "the agent inherits the ordinary environment"
    );
    // LOWKEY_SESSION_FILE is the file the session really is in.
    assert!(std::path::Path::new(&env["LOWKEY_SESSION_FILE"]).is_file());

    let lines = home.session(&session);
    let replies: Vec<_> = of_type(&lines, "message")
        .into_iter()
        .filter(|l| l["role"] == "agent")
        .collect();
    assert_eq!(replies.len(), 1, "{lines:#?}");
    assert_eq!(replies[0]["text"], "reply from bot\nsecond line");
    assert_eq!(replies[0]["event"], event.as_str());

    let tag = format!("session_id={session}");
    let line = daemon.wait_log("with the agent's stderr", |l| {
        l.contains("diagnostic for the journal")
    });
    assert!(
        line.contains(&tag),
        "stderr line not tagged with the session: {line}"
    );
    assert!(!read_text(&out.join("stdin")).is_empty());
}

#[test]
fn every_stderr_line_of_a_quick_agent_reaches_the_log() {
    // Agents that write a burst to stderr (less than a pipe buffer, so they never block)
    // and exit at once: the log must get every line, not only those lowkey happened to
    // read before it noticed the exit. Several runs at once make a lost line likely if
    // the tail of stderr is not drained.
    let home = Home::with_agent(
        r#"cat >/dev/null
seq 1 300 | sed "s/^/noise $LOWKEY_EVENT_ID /" >&2
echo done"#,
    );
    let daemon = home.serve();
    let events: Vec<(String, String)> = (0..8).map(|_| accept(&daemon, "hook", "{}")).collect();
    for (session, event) in &events {
        let end = daemon.wait_run_end(event);
        assert!(end.contains("run finished"), "{end}");
        let tag = format!("session_id={session}");
        let noise = format!("noise {event} ");
        daemon.wait_log_count(&format!("of stderr of {event} (300 expected)"), 300, |l| {
            l.contains(&noise) && l.contains(&tag)
        });
    }
}

#[test]
fn a_huge_stderr_line_is_cut_and_lowkey_stays_small() {
    // 64 MiB with no newline, an "é" across the 16 KiB cut, then an ordinary line.
    let home = Home::with_agent(
        r#"cat >/dev/null
printf '%16383s' '' | tr ' ' x >&2
printf '\303\251' >&2
head -c 67108864 /dev/zero | tr '\0' y >&2
printf '\nthe next line\n' >&2
echo done"#,
    );
    let daemon = home.serve();
    let (session, event) = accept(&daemon, "hook", "{}");
    let end = daemon.wait_run_end(&event);
    assert!(end.contains("run finished"), "{end}");
    let tag = format!("session_id={session}");
    // The whole é goes with the cut: the log never shows half a character.
    let cut = format!(
        "agent stderr: {} [cut: {} more bytes]",
        "x".repeat(16383),
        2 + 67108864
    );
    let line = daemon.wait_log("with the cut line", |l| {
        l.contains(&tag) && l.contains("[cut: ")
    });
    assert!(
        line.contains(&format!("{cut} {tag}")),
        "{}",
        &line[line.len().saturating_sub(200)..]
    );
    let next = format!("agent stderr: the next line {tag}");
    daemon.wait_log("with the line after the cut one", |l| l.contains(&next));
    let lines = home.session(&session);
    assert!(
        lines
            .iter()
            .any(|l| l["role"] == "agent" && l["text"] == "done"),
        "{lines:#?}"
    );
    // lowkey held a few KiB of the line at a time, never the line itself.
    let peak_kib = proc_status_kib(daemon.pid, "VmHWM");
    eprintln!("lowkey's peak RSS with a 64 MiB stderr line: {peak_kib} KiB");
    assert!(peak_kib < 64 * 1024, "peak RSS {peak_kib} KiB");
}

#[test]
fn a_timeout_ends_the_agents_whole_process_group() {
    let home = Home::new();
    let out = out_dir(&home);
    let o = out.display();
    // A grandchild that dies on TERM, one that ignores TERM (so only KILL ends it), and
    // the agent itself blocking well past its timeout.
    let agent = home.script(
        "agent.sh",
        &format!(
            r#"cat >/dev/null
sleep 1000 &
echo $! > "{o}/grandchild.pid"
sh -c 'trap "" TERM; exec sleep 1001' &
echo $! > "{o}/stubborn.pid"
echo $$ > "{o}/agent.pid"
sleep 1002"#
        ),
    );
    let project = home.project("proj");
    home.write_config(&json!({
        "apiKey": KEY,
        "agents": { "slow": { "command": [agent], "timeoutSec": 1 } },
        "webhooks": { "hook": { "project": project, "agent": "slow" } }
    }));
    let daemon = home.serve();
    let (session, event) = accept(&daemon, "hook", "{}");
    let pid_of = |name: &str| -> i32 {
        wait_for(&format!("{name} pid"), || {
            read_text(&out.join(name)).trim().parse().ok()
        })
    };
    let pids: Vec<i32> = ["grandchild.pid", "stubborn.pid", "agent.pid"]
        .iter()
        .map(|n| pid_of(n))
        .collect();
    let _reap = Reap(pids.clone());

    let end = daemon.wait_run_end(&event);
    assert!(
        end.contains("timed out") || end.contains("timed_out"),
        "{end}"
    );
    let lines = home.session(&session);
    let last = of_type(&lines, "run").last().cloned().cloned().unwrap();
    assert_eq!(last["status"], "timed_out", "{lines:#?}");
    assert!(
        last["error"]
            .as_str()
            .unwrap_or_default()
            .contains("timeoutSec"),
        "{last}"
    );

    for (pid, what) in pids.iter().zip([
        "the grandchild",
        "the grandchild that ignores TERM",
        "the agent",
    ]) {
        wait_for(&format!("{what} (pid {pid}) to be gone"), || {
            (!is_alive(*pid)).then_some(())
        });
    }
}

#[test]
fn the_run_ends_when_the_agent_exits_even_if_a_background_child_keeps_stdout() {
    // An agent that leaves a helper running in the background (`some-server &`, as
    // agents that start tool servers do) and exits 0 has finished: its reply is what it
    // wrote, and the run must not wait for the helper to close the inherited stdout
    // until timeoutSec ends it as timed out.
    let home = Home::new();
    let out = out_dir(&home);
    let agent = home.script(
        "agent.sh",
        &format!(
            r#"cat >/dev/null
sleep 60 &
echo $! > "{o}/helper.pid"
echo "work done"
exit 0"#,
            o = out.display()
        ),
    );
    let project = home.project("proj");
    home.write_config(&json!({
        "apiKey": KEY,
        "agents": { "bot": { "command": [agent], "timeoutSec": 5 } },
        "webhooks": { "hook": { "project": project, "agent": "bot" } }
    }));
    let daemon = home.serve();
    let (session, event) = accept(&daemon, "hook", "{}");
    let helper: i32 = wait_for("the helper's pid", || {
        read_text(&out.join("helper.pid")).trim().parse().ok()
    });
    let _reap = Reap(vec![helper]);
    let end = daemon.wait_run_end(&event);
    let lines = home.session(&session);
    assert!(end.contains("run finished"), "{end}\n{lines:#?}");
    let last = of_type(&lines, "run").last().cloned().cloned().unwrap();
    assert_eq!(last["status"], "finished", "{lines:#?}");
    assert_eq!(last["exitCode"], 0, "{lines:#?}");
    let reply = of_type(&lines, "message")
        .into_iter()
        .find(|l| l["role"] == "agent")
        .cloned();
    assert_eq!(
        reply.map(|r| r["text"].clone()),
        Some(json!("work done")),
        "{lines:#?}"
    );
}

#[test]
fn an_agent_that_cannot_start_fails_its_run_with_the_reason() {
    let home = Home::new();
    let project = home.project("proj");
    let missing = home.dir.path().join("no-such-agent");
    home.write_config(&json!({
        "apiKey": KEY,
        "agents": { "bot": { "command": [missing], "timeoutSec": 5 } },
        "webhooks": { "hook": { "project": project, "agent": "bot" } }
    }));
    // Only a warning for `check`: PATH under systemd may differ.
    let check = home.run(&["check"]);
    assert_eq!(check.code, 0, "{check:?}");
    assert!(check.stdout.contains("agents.bot.command"), "{check:?}");

    let daemon = home.serve();
    let (session, event) = accept(&daemon, "hook", "{}");
    let end = daemon.wait_run_end(&event);
    assert!(end.contains("run failed"), "{end}");
    let lines = home.session(&session);
    let last = of_type(&lines, "run").last().cloned().cloned().unwrap();
    assert_eq!(last["status"], "failed", "{lines:#?}");
    let error = last["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("no-such-agent"),
        "the reason names the command: {error}"
    );
    // A failed run is final: it is not retried at the next start.
    daemon.signal(Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(), Some(0));
    drop(daemon);
    let daemon = home.serve();
    assert_nothing_recovered(&daemon);
}
