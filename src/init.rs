//! `lowkey init`: a fresh state folder with a working starter config.
//!
//! The starter setup works with nothing else installed: a demo agent that is a few lines
//! of `/bin/sh`, and a demo source whose project is a folder under `LOWKEY_HOME`.

use crate::secret::{Secret, generate_api_key};
use crate::store::Home;
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

/// How to send the first webhook, for people reading a terminal.
pub fn first_webhook_hint(api_key: &Secret, listen: &str) -> String {
    format!(
        "Your API key (keep it secret; it is also in the config file):\n\n    export KEY={key}\n\nSend a first webhook:\n\n    curl -H \"Authorization: Bearer $KEY\" -d '{{\"hello\":\"world\"}}' http://{listen}/api/webhook/demo\n\nthen read what the demo agent answered with `lowkey sessions list` and `lowkey sessions show <id>`.",
        key = api_key.expose(),
    )
}
