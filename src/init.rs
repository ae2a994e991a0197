//! `lowkey init`: a fresh state folder with a working starter config.
//!
//! The starter setup works with nothing else installed: a demo agent that is a few lines
//! of `/bin/sh`, and a demo source whose project is a folder under `LOWKEY_HOME`.

use crate::secret::{Secret, generate_api_key};
use crate::store::Home;
use std::ffi::OsStr;
use std::fs::{DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The demo agent: reads the message on stdin and answers on stdout.
const DEMO_AGENT: &str = r#"msg=$(cat); printf 'Hello from the demo agent, working in %s.\nYou sent: %.300s\nTo put a real agent to work, set agents.demo.command in the config, e.g. ["claude", "-p"].\n' "$PWD" "$msg""#;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{} already exists; lowkey init never overwrites a config (edit it, or move it away first)", .0.display())]
    Exists(PathBuf),
    #[error("cannot create {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot draw a random API key from the OS: {0}")]
    Random(getrandom::Error),
}

/// What `init` made.
#[derive(Debug)]
pub struct Created {
    pub config: PathBuf,
    pub api_key: Secret,
}

/// Creates `home` (0700), its demo project, and `config` (0600) holding a fresh API
/// key. Refuses to touch an existing config.
pub fn init(home: &Home, config: &Path) -> Result<Created, InitError> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| InitError::Io { path, source }
    };
    if config.exists() {
        return Err(InitError::Exists(config.to_owned()));
    }
    home.create_dirs().map_err(io_err(&home.root))?;
    // An existing folder is made private too: it will hold the key and the sessions.
    std::fs::set_permissions(&home.root, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err(&home.root))?;
    let project = home.root.join("demo");
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&project)
        .map_err(io_err(&project))?;
    if let Some(parent) = config.parent() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io_err(parent))?;
    }

    let api_key = generate_api_key().map_err(InitError::Random)?;
    let text = starter_config(&api_key, &project);
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(config)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(InitError::Exists(config.to_owned()));
        }
        Err(e) => return Err(io_err(config)(e)),
    };
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_err(config))?;
    if let Some(parent) = config.parent() {
        crate::store::sync_dir(parent).map_err(io_err(parent))?;
    }
    Ok(Created {
        config: config.to_owned(),
        api_key,
    })
}

fn starter_config(api_key: &Secret, project: &Path) -> String {
    let s = |v: &str| serde_json::to_string(v).expect("a string serializes");
    format!(
        r#"{{
  "apiKey": {key},
  "listen": {listen},
  "defaultAgent": "demo",
  "agents": {{
    "demo": {{
      "command": ["/bin/sh", "-c", {agent}],
      "timeoutSec": 60,
      "maxConcurrent": 2
    }}
  }},
  "webhooks": {{
    "demo": {{
      "project": {project},
      "agent": "demo",
      "target": {target}
    }}
  }}
}}
"#,
        key = s(api_key.expose()),
        listen = s(crate::config::DEFAULT_LISTEN),
        target = s(crate::config::NEW_SESSION),
        agent = s(DEMO_AGENT),
        project = s(&project.to_string_lossy()),
    )
}

/// How to send the first webhook, for a person at a terminal: the key (which senders
/// other than `lowkey send` need), then the commands to try. `send_url` is the daemon's
/// URL when it is not the config's `listen` (`serve --listen`).
pub fn first_webhook_hint(api_key: &Secret, config: &Path, send_url: Option<&str>) -> String {
    let lowkey = command_name();
    format!(
        "Your API key (keep it secret; it is also in {config}; senders put it in an \
         `Authorization: Bearer` header):\n\n    {key}\n\n\
         Send a test webhook to the demo source; it prints the answer, 202 and the new \
         session's id:\n\n    {send}\n\n\
         then read what the demo agent answered:\n\n    \
         {lowkey} sessions list\n    {lowkey} sessions show latest",
        config = config.display(),
        key = api_key.expose(),
        send = send_command(&lowkey, send_url),
    )
}

/// The same hint for a log (journald, a file, a pipe): never the key itself, only where
/// it is.
pub fn first_webhook_log_hint(config: &Path, send_url: Option<&str>) -> String {
    let lowkey = command_name();
    format!(
        "the API key is in {config}; send a test webhook with `{send}`, then read the demo \
         agent's answer with `{lowkey} sessions list` and `{lowkey} sessions show latest`",
        config = config.display(),
        send = send_command(&lowkey, send_url),
    )
}

fn send_command(lowkey: &str, url: Option<&str>) -> String {
    match url {
        Some(url) => format!("{lowkey} send demo --url {url}"),
        None => format!("{lowkey} send demo"),
    }
}

/// How the person who started this binary runs it again from their shell: `lowkey`
/// when that is the `lowkey` their PATH finds, else its path (relative when it is below
/// the working directory, as `./target/release/lowkey` is after `cargo run`).
fn command_name() -> String {
    match std::env::current_exe() {
        Ok(exe) => command_for(
            &exe,
            std::env::current_dir().ok().as_deref(),
            std::env::var_os("PATH").as_deref(),
        ),
        Err(_) => "lowkey".to_owned(),
    }
}

fn command_for(exe: &Path, cwd: Option<&Path>, path_var: Option<&OsStr>) -> String {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    // The shell runs the first executable `lowkey` on PATH, whichever binary it is.
    let found = path_var.and_then(|path| {
        std::env::split_paths(path)
            .map(|dir| dir.join("lowkey"))
            .find(|candidate| {
                candidate
                    .metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    });
    if found.is_some_and(|found| same(&found, exe)) {
        return "lowkey".to_owned();
    }
    let exe = exe.canonicalize().unwrap_or_else(|_| exe.to_owned());
    let shown = cwd
        .and_then(|cwd| cwd.canonicalize().ok())
        .and_then(|cwd| {
            exe.strip_prefix(cwd)
                .ok()
                .map(|rest| Path::new(".").join(rest))
        })
        .unwrap_or(exe);
    shell_word(&shown.to_string_lossy())
}

/// `text` as one shell word: as it is when nothing in it is special to the shell, else
/// single-quoted.
fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:@%,=".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executable(path: &Path) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn the_hint_names_lowkey_only_when_path_finds_this_binary() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let built = root.join("repo/target/release");
        let installed = root.join("bin");
        std::fs::create_dir_all(&built).unwrap();
        std::fs::create_dir_all(&installed).unwrap();
        let exe = built.join("lowkey");
        executable(&exe);
        executable(&installed.join("lowkey"));
        let path = |dirs: &[&Path]| std::env::join_paths(dirs).unwrap();

        // After `cargo run` in the repository: the build's path, relative.
        assert_eq!(
            command_for(&exe, Some(&root.join("repo")), Some(&path(&[&installed]))),
            "./target/release/lowkey"
        );
        // Elsewhere: the absolute path, since another `lowkey` comes first on PATH.
        assert_eq!(
            command_for(&exe, Some(&installed), Some(&path(&[&installed, &built]))),
            format!("{}", exe.display())
        );
        // This binary is the one PATH finds.
        assert_eq!(
            command_for(&exe, Some(&root), Some(&path(&[&built, &installed]))),
            "lowkey"
        );
        // A path the shell would split is quoted.
        let odd = root.join("my builds");
        std::fs::create_dir_all(&odd).unwrap();
        executable(&odd.join("lowkey"));
        assert_eq!(
            command_for(&odd.join("lowkey"), None, None),
            format!("'{}/my builds/lowkey'", root.display())
        );
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
