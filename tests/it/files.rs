//! The state folder (README.md, Files): what `lowkey init` and `lowkey serve` create,
//! its permissions, and the session transcript format people `cat` and `jq`.

use crate::helpers::*;
use crate::support::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

/// The `lk_...` word in `text`.
fn printed_key(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c == '=' || c == '"' || c == '\'')
        .find(|w| w.starts_with("lk_"))
        .unwrap_or_else(|| panic!("no lk_ key printed: {text}"))
        .to_owned()
}

#[test]
fn init_creates_a_private_home_and_config_and_prints_the_key_once() {
    let home = Home::new();
    assert!(!home.root().exists());
    let out = home.run(&["init"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(mode(&home.root()), 0o700, "the state folder");
    assert_eq!(mode(&home.config_path()), 0o600, "the config");

    let key = printed_key(&out.stdout);
    assert!(key.len() > 3 + 16, "a strong key: {key}");
    assert_eq!(
        out.stdout.matches(&key).count(),
        1,
        "the key is printed once: {}",
        out.stdout
    );
    assert!(!out.stderr.contains(&key), "{}", out.stderr);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.config_path()).unwrap()).unwrap();
    assert_eq!(
        config["apiKey"],
        key.as_str(),
        "the printed key is the config's"
    );

    // Two inits draw different keys.
    let other = Home::new();
    let out2 = other.run(&["init"]);
    assert_eq!(out2.code, 0, "{out2:?}");
    assert_ne!(printed_key(&out2.stdout), key);

    // What init wrote is a valid config.
    let check = home.run(&["check"]);
    assert_eq!(check.code, 0, "{check:?}");
}

#[test]
fn init_makes_an_existing_state_folder_private() {
    // `mkdir ~/.lowkey` before `lowkey init` (or a folder a dotfiles repo made) is
    // common; init still makes the state folder 0700, as README.md's Files table and its
    // own output say.
    let home = Home::new();
    std::fs::create_dir_all(home.root()).unwrap();
    std::fs::set_permissions(home.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = home.run(&["init"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("(mode 0700)"), "{out:?}");
    assert_eq!(
        format!("{:o}", mode(&home.root())),
        "700",
        "init printed \"(mode 0700)\" for the state folder: {}",
        out.stdout.lines().next().unwrap_or_default()
    );
}

#[test]
fn init_never_overwrites_a_config() {
    let home = Home::new();
    let text = "{\n  \"apiKey\": \"lk_mine_do_not_touch_123456\"\n}\n";
    home.write_config_text(text);
    let out = home.run(&["init"]);
    assert_eq!(out.code, 73, "{out:?}");
    assert!(out.stderr.contains("already exists"), "{out:?}");
    assert!(
        out.stderr
            .contains(&home.config_path().display().to_string()),
        "names the file: {out:?}"
    );
    assert_eq!(
        std::fs::read_to_string(home.config_path()).unwrap(),
        text,
        "config unchanged"
    );
    assert!(!out.stdout.contains("lk_"), "no key printed: {out:?}");
}

#[test]
fn state_files_are_private_and_a_session_is_json_lines_in_order() {
    let home = Home::new();
    assert_eq!(home.run(&["init"]).code, 0);
    let agent = home.script("agent.sh", "cat >/dev/null; echo 'all good'");
    let project = home.project("proj");
    home.write_config(&json!({
        "apiKey": KEY,
        "agents": { "bot": { "command": [agent], "timeoutSec": 30 } },
        "webhooks": { "hook": { "project": project, "agent": "bot" } }
    }));
    let daemon = home.serve();
    let (session, event) = accept(&daemon, "hook", r#"{"n":1}"#);
    daemon.wait_run_end(&event);

    assert_eq!(mode(&home.root()), 0o700, "$LOWKEY_HOME");
    assert_eq!(mode(&home.sessions()), 0o700, "sessions/");
    assert_eq!(mode(&home.root().join("queue")), 0o700, "queue/");
    let file = home.sessions().join(format!("{session}.jsonl"));
    assert_eq!(mode(&file), 0o600, "the session file");
    for entry in std::fs::read_dir(home.root().join("queue")).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "queue file {}", path.display());
    }
    let names: Vec<String> = std::fs::read_dir(home.sessions())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![format!("{session}.jsonl")]);

    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.ends_with('\n'), "every line is ended");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(
        shape(&lines),
        vec![
            "session".to_owned(),
            format!("user {event}"),
            format!("run started {event}"),
            format!("agent {event}"),
            format!("run finished {event}"),
        ],
        "{text}"
    );
    let header = &lines[0];
    assert_eq!(header["id"], session.as_str());
    assert_eq!(header["project"], project.as_str());
    assert_eq!(header["agent"], "bot");
    assert!(header["created"].is_string(), "{header}");
    let user = &lines[1];
    assert_eq!(user["text"], r#"Webhook from hook: {"n":1}"#);
    assert_eq!(user["source"], "hook");
    assert_eq!(user["body"], r#"{"n":1}"#);
    assert!(user["at"].is_string(), "{user}");
    assert!(
        lines[2]["pid"].is_u64(),
        "a started run records the pid: {}",
        lines[2]
    );
    assert_eq!(lines[3]["text"], "all good");
    let finished = &lines[4];
    assert_eq!(finished["exitCode"], 0, "{finished}");
    assert!(finished["durationMs"].is_u64(), "{finished}");
    assert_eq!(finished["agent"], "bot");
}

#[test]
fn serve_without_a_config_creates_a_working_starter_setup() {
    let home = Home::new();
    assert!(!home.config_path().exists());
    let daemon = home.serve();
    assert!(
        daemon.addr.is_some(),
        "the starter setup serves; log:\n{}",
        daemon.log_text()
    );
    assert_eq!(mode(&home.root()), 0o700);
    assert_eq!(mode(&home.config_path()), 0o600);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.config_path()).unwrap()).unwrap();
    let key = config["apiKey"].as_str().unwrap().to_owned();
    assert!(key.starts_with("lk_"), "{key}");
    assert!(
        !daemon.log_text().contains(&key),
        "the key reached a log that is not a terminal:\n{}",
        daemon.log_text()
    );

    let answer = request(
        "POST",
        &daemon.url("/api/webhook/demo"),
        &[("Authorization", &format!("Bearer {key}"))],
        br#"{"hello":"world"}"#,
    );
    assert_eq!(answer.status, 202, "{answer:?}");
    let session = answer.json()["session"].as_str().unwrap().to_owned();
    let event = answer.json()["event"].as_str().unwrap().to_owned();
    let end = daemon.wait_run_end(&event);
    assert!(end.contains("run finished"), "{end}");
    let lines = home.session(&session);
    let reply = of_type(&lines, "message")
        .into_iter()
        .find(|l| l["role"] == "agent")
        .unwrap_or_else(|| panic!("the demo agent did not answer: {lines:#?}"));
    let text = reply["text"].as_str().unwrap();
    assert!(text.contains("demo agent"), "{text}");
    assert!(
        text.contains(r#"Webhook from demo: {"hello":"world"}"#),
        "the demo agent echoes the message: {text}"
    );
    assert!(!daemon.log_text().contains(&key));

    // The starter config passes `lowkey check`.
    let check = home.run(&["check"]);
    assert_eq!(check.code, 0, "{check:?}");
}
