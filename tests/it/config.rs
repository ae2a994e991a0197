//! Bad configs (README.md, Configure): `lowkey check` and `lowkey serve` both refuse
//! them with exit 78 and a message that names the key and the fix.
//!
//! What each bad config says is tested in-process, as a table of the parser's cases
//! (`src/config/tests.rs`). These are the cases that need the binary: the exit codes and
//! where `check` and `serve` print, a config with only warnings that still serves, files
//! on disk and their modes, the PATH the process runs with, and a reload.

use crate::support::*;
use serde_json::{Value, json};

/// A valid config: agent `bot`, source `hook`.
fn base(home: &Home) -> Value {
    let agent = home.script("agent.sh", "cat >/dev/null; echo ok");
    let project = home.project("proj");
    json!({
        "apiKey": KEY,
        "agents": { "bot": { "command": [agent], "timeoutSec": 30 } },
        "webhooks": { "hook": { "project": project, "agent": "bot" } }
    })
}

/// Runs `lowkey serve` to its end (it must not start) and returns (exit code, log).
fn serve_refuses(home: &Home) -> (Option<i32>, String) {
    let daemon = home.serve();
    assert!(
        daemon.addr.is_none(),
        "lowkey served a bad config; log:\n{}",
        daemon.log_text()
    );
    (daemon.wait_exit(), daemon.log_text())
}

/// Both `check` and `serve` refuse the config with exit 78, and both messages contain
/// every one of `expected`.
fn assert_refused(home: &Home, expected: &[&str]) -> String {
    let check = home.run(&["check"]);
    assert_eq!(check.code, 78, "lowkey check: {check:?}");
    let said = format!("{}{}", check.stdout, check.stderr);
    for e in expected {
        assert!(said.contains(e), "lowkey check does not say {e:?}:\n{said}");
    }
    let (code, log) = serve_refuses(home);
    assert_eq!(code, Some(78), "lowkey serve exit code; log:\n{log}");
    for e in expected {
        assert!(log.contains(e), "lowkey serve does not say {e:?}:\n{log}");
    }
    said
}

#[test]
fn an_unknown_top_level_key_is_only_a_warning() {
    let home = Home::new();
    let mut c = base(&home);
    c["dashboard"] = json!({ "theme": "dark" });
    home.write_config(&c);
    let check = home.run(&["check"]);
    assert_eq!(check.code, 0, "{check:?}");
    assert!(
        check.stdout.contains("warning") && check.stdout.contains("dashboard"),
        "{check:?}"
    );
    assert!(!check.stdout.contains("error"), "{check:?}");

    let daemon = home.serve();
    assert!(
        daemon.addr.is_some(),
        "serve refused a config with a foreign key:\n{}",
        daemon.log_text()
    );
    let (_, event) = accept(&daemon, "hook", "{}");
    assert!(daemon.wait_run_end(&event).contains("run finished"));
}

#[test]
fn a_missing_config_is_refused_by_check() {
    let home = Home::new();
    let check = home.run(&["check"]);
    assert_eq!(check.code, 78, "{check:?}");
    let said = format!("{}{}", check.stdout, check.stderr);
    assert!(
        said.contains("config.json") && said.contains("lowkey init"),
        "{said}"
    );
}

#[test]
fn a_value_of_the_wrong_type_names_the_key_what_it_needs_and_what_it_got() {
    let home = Home::new();
    let mut c = base(&home);
    c["agents"]["bot"]["timeoutSec"] = json!("sixty");
    home.write_config(&c);
    assert_refused(
        &home,
        &[
            "agents.bot.timeoutSec: expected a whole number of seconds, such as 1800; got the string \"sixty\"",
        ],
    );
}

#[test]
fn a_trailing_comma_is_located_once_with_the_fix() {
    let home = Home::new();
    home.write_config_text(&format!("{{\n  \"apiKey\": \"{KEY}\",\n}}\n"));
    let said = assert_refused(
        &home,
        &[
            "config.json:3:1: not valid JSON: trailing comma; JSON allows no comma after the last item: remove it",
        ],
    );
    assert!(!said.contains("at line"), "{said}");
}

#[test]
fn a_config_other_users_can_read_holding_the_key_is_a_warning_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    home.write_config(&base(&home));
    let path = home.config_path();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let check = home.run(&["check"]);
    assert_eq!(check.code, 0, "{check:?}");
    let p = path.display();
    assert!(
        check.stdout.contains(&format!("warning: apiKey: {p} can be read by other users (mode 0644) and holds the API key; run chmod 600 {p}")),
        "{check:?}"
    );

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let check = home.run(&["check"]);
    assert!(!check.stdout.contains("warning:"), "{check:?}");
}

#[test]
fn check_looks_agents_up_on_the_path_of_the_units_and_names_the_fix() {
    let home = Home::new();
    let bin = home.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let agent = home.script("bin/lowkey-test-agent", "cat >/dev/null; echo ok");
    let mut c = base(&home);
    c["agents"]["bot"]["command"] = json!(["lowkey-test-agent"]);
    home.write_config(&c);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    // The shell finds it; the service would not.
    let out = home
        .command(&["check"])
        .env("PATH", &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let expected = format!(
        "warning: agents.bot.command: \"lowkey-test-agent\" is not on the PATH systemd gives lowkey's units (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin), so runs will fail; your PATH has it at {agent}: use \"{agent}\""
    );
    assert!(stdout.contains(&expected), "{stdout}");

    // `serve` started from that shell gives its agents its own PATH, so it runs.
    let mut serve = home.command(&["serve", "--listen", "127.0.0.1:0"]);
    serve.env("PATH", &path);
    let daemon = Daemon::spawn(serve);
    let (_, event) = accept(&daemon, "hook", "{}");
    assert!(daemon.wait_run_end(&event).contains("run finished"));

    // The fix it names silences it.
    c["agents"]["bot"]["command"] = json!([agent]);
    home.write_config(&c);
    let check = home.run(&["check"]);
    assert_eq!(check.code, 0, "{check:?}");
    assert!(!check.stdout.contains("warning:"), "{check:?}");
}

#[test]
fn a_failed_reload_is_logged_on_one_line_naming_every_error() {
    let home = Home::new();
    let mut c = base(&home);
    home.write_config(&c);
    let daemon = home.serve();
    c["agents"]["bot"]["timeoutSec"] = json!("sixty");
    c["webhooks"]["hook"]["agent"] = json!("bto");
    home.write_config(&c);
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    let line = daemon.wait_log("reload failed", |l| l.contains("config reload failed"));
    assert!(
        line.contains(&format!(
            "config reload failed; the old config stays in force: {} is not a valid config: 2 errors: (1) error: agents.bot.timeoutSec: expected a whole number of seconds, such as 1800; got the string \"sixty\" (2) error: webhooks.hook.agent: agent \"bto\" is not defined under `agents`; did you mean \"bot\"?",
            home.config_path().display()
        )),
        "{line}"
    );
    assert!(!line.ends_with(' '), "{line:?}");
    // Every line of the log is a whole log line, starting with its time.
    let log = daemon.log_text();
    assert!(
        log.lines()
            .all(|l| l.starts_with(|c: char| c.is_ascii_digit())),
        "{log}"
    );
    // The old config still serves.
    accept(&daemon, "hook", "{}");
}

#[test]
fn a_bad_lowkey_window_stops_serve_with_the_variable_named() {
    let home = Home::new();
    home.write_config(&base(&home));
    for bad in ["lots", "8,16,2", "8,4"] {
        let out = home
            .command(&["serve", "--listen", "127.0.0.1:0"])
            .env("LOWKEY_WINDOW", bad)
            .output()
            .expect("run lowkey serve");
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{bad}: {said}");
        assert!(
            said.contains(&format!("LOWKEY_WINDOW=\"{bad}\"")) && said.contains("16384,4096,32"),
            "{bad}: {said}"
        );
    }
}
