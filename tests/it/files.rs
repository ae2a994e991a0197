//! The state folder (README.md, Files): what `lowkey init` and `lowkey serve` create,
//! its permissions, and the session transcript format people `cat` and `jq`.

use crate::helpers::*;
use crate::support::*;
use serde_json::json;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

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

/// Runs the shell command line `line`, a `lowkey serve` as a person types it (with no
/// `--listen`), in a network namespace of its own: its default address, 127.0.0.1:7433,
/// is free there whatever else runs on this machine. `unshare` and `sh` exec, so the
/// daemon keeps the pid this command gets.
fn serve_in_own_network(home: &Home, line: &str, cwd: &Path, path: &str) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--net",
        "sh",
        "-c",
        r#"ip link set lo up && eval "exec $0""#,
        line,
    ])
    .current_dir(cwd);
    home_env(home, &mut cmd);
    cmd.env("PATH", path);
    cmd
}

/// Runs a shell command line in the network namespace of the daemon `pid`, as a person
/// in a second terminal would.
fn run_beside(pid: i32, home: &Home, line: &str, cwd: &Path, path: &str) -> Output {
    let mut cmd = Command::new("nsenter");
    cmd.args(["--target", &pid.to_string(), "--net", "sh", "-c", line])
        .current_dir(cwd);
    home_env(home, &mut cmd);
    let out = cmd
        .env("PATH", path)
        .output()
        .expect("nsenter (util-linux) runs");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The system PATH: no `lowkey` on it (unless one is installed), and `ip` for the
/// network namespace.
const SYSTEM_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// The one line of `text` that starts (after indentation) with `prefix`.
fn hinted_line<'a>(text: &'a str, prefix: &str) -> &'a str {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.trim())
        .filter(|l| l.starts_with(prefix))
        .collect();
    assert_eq!(lines.len(), 1, "one line starting {prefix:?} in:\n{text}");
    lines[0]
}

/// Checks that `lowkey send`'s output shows the daemon accepted the webhook: the status
/// line, then the ids. Returns the session id.
fn sent(out: &Output) -> String {
    assert_eq!(out.code, 0, "{out:?}");
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("202"), "the status line first: {out:?}");
    let body: serde_json::Value = serde_json::from_str(lines.next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the body is JSON ({e}): {out:?}"));
    body["session"].as_str().unwrap().to_owned()
}

#[test]
fn serve_at_a_terminal_prints_the_key_and_commands_that_work_from_there() {
    // As after `cargo run -- serve` in the repository: the binary is not on PATH, so
    // the hint names it by its path from the working directory.
    let home = Home::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let terminal = nix::pty::openpty(None, None).expect("a pseudo-terminal");
    let line = format!("'{}' serve", lowkey_bin());
    let mut daemon = Killed(
        serve_in_own_network(&home, &line, repo, SYSTEM_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(terminal.slave))
            .spawn()
            .expect("spawn lowkey serve"),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let mut screen = std::fs::File::from(terminal.master);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // Ends with EIO once the daemon, the last holder of the terminal, is gone.
        while let Ok(n @ 1..) = screen.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + PATIENCE;
    while !String::from_utf8_lossy(&seen).contains("listening on") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(bytes) => seen.extend(bytes),
            Err(_) => panic!(
                "no \"listening on\" at the terminal; it shows:\n{}",
                String::from_utf8_lossy(&seen)
            ),
        }
        if let Ok(Some(status)) = daemon.0.try_wait() {
            panic!(
                "lowkey serve ended ({status}); the terminal shows:\n{}",
                String::from_utf8_lossy(&seen)
            );
        }
    }
    let screen = String::from_utf8_lossy(&seen).replace("\r\n", "\n");

    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.config_path()).unwrap()).unwrap();
    let key = config["apiKey"].as_str().unwrap();
    assert_eq!(
        hinted_line(&screen, "lk_"),
        key,
        "the key is shown to the person at the terminal"
    );
    assert!(
        screen.contains(&home.config_path().display().to_string()),
        "says where the key is kept: {screen}"
    );
    let bin = Path::new(lowkey_bin());
    let lowkey = match bin.strip_prefix(repo) {
        Ok(rest) => format!("./{}", rest.display()),
        Err(_) => bin.display().to_string(),
    };
    let send = hinted_line(&screen, &format!("{lowkey} send"));
    assert_eq!(send, format!("{lowkey} send demo"), "{screen}");

    // Typed as shown, from the same folder, each command works.
    let pid = daemon.0.id() as i32;
    let session = sent(&run_beside(pid, &home, send, repo, SYSTEM_PATH));
    let list = run_beside(
        pid,
        &home,
        &format!("{lowkey} sessions list"),
        repo,
        SYSTEM_PATH,
    );
    assert_eq!(list.code, 0, "{list:?}");
    assert!(list.stdout.contains(&session), "{list:?}");
    let show = hinted_line(&screen, &format!("{lowkey} sessions show"));
    let show = run_beside(pid, &home, show, repo, SYSTEM_PATH);
    assert_eq!(show.code, 0, "{show:?}");
    assert!(show.stdout.contains("webhook from demo"), "{show:?}");
}

#[test]
fn serve_without_a_terminal_logs_where_the_key_is_and_a_send_command_that_works() {
    // Under a supervisor, or with stderr in a file: the key stays out of the log, which
    // says where it is and how to send a test webhook. Here the binary is the `lowkey`
    // on PATH, so the hint says just `lowkey`.
    let home = Home::new();
    let bin_dir = Path::new(lowkey_bin()).parent().unwrap();
    let path = format!("{}:{SYSTEM_PATH}", bin_dir.display());
    let cwd = home.project("elsewhere");
    let cwd = Path::new(&cwd);
    let daemon = Daemon::spawn(serve_in_own_network(&home, "lowkey serve", cwd, &path));
    assert!(daemon.addr.is_some(), "log:\n{}", daemon.log_text());
    let hint = daemon.wait_log("with the first-webhook hint", |l| l.contains("send demo"));
    assert!(
        hint.contains(&format!(
            "the API key is in {}",
            home.config_path().display()
        )),
        "{hint}"
    );
    let send = hint
        .split('`')
        .find(|part| part.contains("send demo"))
        .unwrap();
    assert_eq!(send, "lowkey send demo", "{hint}");
    let key = std::fs::read_to_string(home.config_path()).unwrap();
    let key: serde_json::Value = serde_json::from_str(&key).unwrap();
    let key = key["apiKey"].as_str().unwrap();

    let session = sent(&run_beside(daemon.pid, &home, send, cwd, &path));
    assert!(
        !daemon.log_text().contains(key),
        "the key reached a log that is not a terminal:\n{}",
        daemon.log_text()
    );
    let list = run_beside(daemon.pid, &home, "lowkey sessions list", cwd, &path);
    assert!(list.stdout.contains(&session), "{list:?}");
}

/// The Quickstart section of README.md: its commands (the lines of its code blocks
/// that run `cargo` or the built binary) and the rest of its code lines (sample output).
fn quickstart() -> (Vec<String>, Vec<String>) {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Quickstart\n"))
        .expect("README.md has a Quickstart section");
    section
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .map(str::to_owned)
        .partition(|l| l.starts_with("cargo ") || l.starts_with("./target/release/lowkey "))
}

#[test]
fn the_readme_quickstart_works_as_written() {
    let (commands, samples) = quickstart();
    let bin = format!("'{}'", lowkey_bin());
    // The test binary is a debug build; everything else is the README's own text.
    let built = |line: &str| {
        line.replace("cargo run --release --", &bin)
            .replace("./target/release/lowkey", &bin)
    };
    let words: Vec<String> = commands
        .iter()
        .map(|c| built(c).replacen(&bin, "lowkey", 1))
        .collect();
    let [serve, send, list, show] = &commands[..] else {
        panic!("the Quickstart runs serve, send, sessions list, sessions show: {words:?}");
    };
    assert_eq!(
        words,
        [
            "lowkey serve",
            "lowkey send demo",
            "lowkey sessions list",
            "lowkey sessions show latest",
        ]
    );
    assert_eq!(
        samples
            .iter()
            .find(|s| !s.starts_with("KEY=") && !s.starts_with("curl")),
        Some(&"202".to_owned()),
        "the Quickstart shows what `send` prints, the status first: {samples:?}"
    );

    let home = Home::new();
    let cwd = home.project("repo");
    let cwd = Path::new(&cwd);
    let daemon = Daemon::spawn(serve_in_own_network(&home, &built(serve), cwd, SYSTEM_PATH));
    assert_eq!(
        daemon.addr.as_deref(),
        Some("127.0.0.1:7433"),
        "the address the Quickstart sends to; log:\n{}",
        daemon.log_text()
    );
    let out = run_beside(daemon.pid, &home, &built(send), cwd, SYSTEM_PATH);
    let session = sent(&out);
    let event = out.stdout.lines().nth(1).unwrap();
    let event: serde_json::Value = serde_json::from_str(event).unwrap();
    daemon.wait_run_end(event["event"].as_str().unwrap());

    let listed = run_beside(daemon.pid, &home, &built(list), cwd, SYSTEM_PATH);
    assert_eq!(listed.code, 0, "{listed:?}");
    assert!(listed.stdout.contains(&session), "{listed:?}");
    let shown = run_beside(daemon.pid, &home, &built(show), cwd, SYSTEM_PATH);
    assert_eq!(shown.code, 0, "{shown:?}");
    assert!(
        shown.stdout.contains("Hello from the demo agent"),
        "the agent's answer: {shown:?}"
    );
}
