//! Bad configs (README.md, Configure): `lowkey check` and `lowkey serve` both refuse
//! them with exit 78 and a message that names the key and the fix.

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
fn a_source_without_a_project_is_refused() {
    let home = Home::new();
    let mut c = base(&home);
    c["webhooks"]["hook"]
        .as_object_mut()
        .unwrap()
        .remove("project");
    home.write_config(&c);
    assert_refused(&home, &["webhooks.hook.project", "missing"]);
}

#[test]
fn a_project_that_does_not_exist_is_refused() {
    let home = Home::new();
    let mut c = base(&home);
    let gone = home.dir.path().join("no-such-project");
    c["webhooks"]["hook"]["project"] = json!(gone);
    home.write_config(&c);
    assert_refused(
        &home,
        &[
            "webhooks.hook.project",
            &gone.display().to_string(),
            "does not exist",
        ],
    );
}

#[test]
fn an_undefined_agent_is_refused_with_a_suggestion_when_close() {
    let home = Home::new();
    let mut c = base(&home);
    c["webhooks"]["hook"]["agent"] = json!("bto");
    home.write_config(&c);
    assert_refused(
        &home,
        &["webhooks.hook.agent", "\"bto\"", "did you mean \"bot\""],
    );

    // Far from any name: the message lists the defined agents instead.
    c["webhooks"]["hook"]["agent"] = json!("kubernetes-operator");
    home.write_config(&c);
    let said = assert_refused(
        &home,
        &["webhooks.hook.agent", "kubernetes-operator", "bot"],
    );
    assert!(!said.contains("did you mean"), "{said}");
}

#[test]
fn a_source_name_that_is_not_path_safe_is_refused() {
    let home = Home::new();
    let mut c = base(&home);
    let source = c["webhooks"]["hook"].clone();
    c["webhooks"]["../escape"] = source;
    home.write_config(&c);
    assert_refused(&home, &["webhooks.../escape", "not a valid source name"]);
}

#[test]
fn a_target_that_is_not_a_path_safe_session_id_is_refused() {
    let home = Home::new();
    let mut c = base(&home);
    c["webhooks"]["hook"]["target"] = json!("../../config");
    home.write_config(&c);
    assert_refused(
        &home,
        &[
            "webhooks.hook.target",
            "../../config",
            "not a valid session id",
        ],
    );
}

#[test]
fn a_misspelt_key_in_a_source_names_it_and_suggests_the_right_one() {
    let home = Home::new();
    let mut c = base(&home);
    let project = c["webhooks"]["hook"]["project"].take();
    c["webhooks"]["hook"]
        .as_object_mut()
        .unwrap()
        .remove("project");
    c["webhooks"]["hook"]["projcet"] = project;
    home.write_config(&c);
    let said = assert_refused(&home, &["webhooks.hook.projcet", "did you mean `project`"]);
    assert_eq!(
        said.matches("error:").count(),
        1,
        "one mistake, one error:\n{said}"
    );
}

#[test]
fn a_misspelt_key_in_an_agent_names_it_and_suggests_the_right_one() {
    let home = Home::new();
    let mut c = base(&home);
    c["agents"]["bot"]
        .as_object_mut()
        .unwrap()
        .remove("timeoutSec");
    c["agents"]["bot"]["timeout_sec"] = json!(30);
    home.write_config(&c);
    assert_refused(
        &home,
        &["agents.bot.timeout_sec", "did you mean `timeoutSec`"],
    );
}

#[test]
fn an_agent_with_a_bad_field_is_reported_at_that_field_only() {
    let home = Home::new();
    let mut c = base(&home);
    c["agents"]["bot"]["timeoutSec"] = json!(0);
    c["defaultAgent"] = json!("bot");
    home.write_config(&c);
    let said = assert_refused(&home, &["agents.bot.timeoutSec", "at least 1 second"]);
    assert!(
        !said.contains("not defined"),
        "the source and defaultAgent name an agent that is defined:\n{said}"
    );
}

#[test]
fn a_rate_limit_or_dedup_window_that_cannot_work_is_refused() {
    // A rate of 0 never refills, a burst under 1 never holds a whole token, and a
    // window of 10^15 hours overflows the clock.
    let home = Home::new();
    let mut c = base(&home);
    c["webhooks"]["hook"]["rateLimit"] = json!({ "perSecond": 0, "burst": 0.5 });
    c["webhooks"]["hook"]["dedupHours"] = json!(1_000_000_000_000_000u64);
    home.write_config(&c);
    assert_refused(
        &home,
        &[
            "webhooks.hook.rateLimit.perSecond",
            "use a number above 0",
            "webhooks.hook.rateLimit.burst",
            "use at least 1",
            "webhooks.hook.dedupHours",
            "use at most 87600 hours",
        ],
    );
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
fn invalid_json_names_the_line_and_column() {
    let home = Home::new();
    let c = base(&home);
    // Line 3 lacks a comma after its value: the parser stops at line 4, column 3.
    let text = format!(
        "{{\n  \"apiKey\": \"{KEY}\",\n  \"agents\": {}\n  \"webhooks\": {}\n}}\n",
        c["agents"], c["webhooks"]
    );
    home.write_config_text(&text);
    let said = assert_refused(&home, &["config.json:4:3"]);
    assert!(said.contains("JSON"), "{said}");
}

#[test]
fn every_problem_is_listed_in_one_run() {
    let home = Home::new();
    let mut c = base(&home);
    let source = c["webhooks"]["hook"].clone();
    c["agents"]["bot"]["timeout_sec"] = json!(30);
    c["webhooks"]["hook"]["agent"] = json!("bto");
    c["webhooks"]["second"] = source.clone();
    c["webhooks"]["second"]["target"] = json!("no spaces allowed");
    c["webhooks"]["third"] = json!({ "agent": "bot" });
    c["webhooks"]["bad name"] = source;
    c["somethingElse"] = json!(true);
    home.write_config(&c);
    let said = assert_refused(
        &home,
        &[
            "agents.bot.timeout_sec",
            "webhooks.hook.agent",
            "webhooks.second.target",
            "webhooks.third.project",
            "webhooks.bad name",
        ],
    );
    assert!(
        said.contains("somethingElse"),
        "the warning is listed too:\n{said}"
    );
    assert!(said.contains("5 errors"), "a count of the errors:\n{said}");
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
fn the_example_api_key_is_refused_by_check_and_serve() {
    let home = Home::new();
    let mut c = base(&home);
    c["apiKey"] = json!("lk_replace_me_with_the_key_from_lowkey_init");
    home.write_config(&c);
    let said = assert_refused(
        &home,
        &[
            "apiKey: is the example's placeholder",
            "openssl rand -hex 32",
        ],
    );
    assert!(!said.contains("lk_replace_me"), "{said}");
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
