//! `agents`: each agent's command (and whether it will start where lowkey runs it), its
//! environment, timeout, `maxConcurrent` and `onFinish` (checked in `finish.rs`).

use super::validate::{Validator, describe, kind, suggest};
use super::{Agent, DEFAULT_MAX_CONCURRENT, DEFAULT_TIMEOUT_SEC, MAX_SOURCE_LEN, OnFinish};
use crate::session::is_path_safe_id;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The PATH lowkey and its agents get under the shipped units. The units set none, so
/// it is systemd's built-in default for services (this is Debian 12's, which
/// `systemd-path search-binaries-default` prints). A per-user unit gets the user
/// manager's PATH, which systemd sets to the same default unless `environment.d` or
/// `systemctl --user set-environment` changes it.
pub const UNITS_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(super) const AGENT_KEYS: &[&str] =
    &["command", "timeoutSec", "maxConcurrent", "env", "onFinish"];

/// Where agent commands are looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// On lowkey's own PATH, which its agents inherit: what `serve` runs them with.
    Own,
    /// On [`UNITS_PATH`], as the service will: for `lowkey check`, whose PATH is the
    /// shell's. A command found only on the shell's PATH is a warning naming its
    /// absolute path.
    Units,
}

/// An agent's keys, each of the type it needs.
struct RawAgent {
    command: Vec<String>,
    timeout_sec: Option<u64>,
    max_concurrent: Option<u64>,
    env: BTreeMap<String, String>,
    on_finish: Option<Arc<OnFinish>>,
}

/// What a search for an agent's program found.
enum Found {
    Runnable(PathBuf),
    /// A file of that name, but not one this user may execute.
    NotExecutable(PathBuf),
    Nothing,
}

impl Validator {
    pub(super) fn agents(&mut self, value: Option<&Value>) -> BTreeMap<String, Arc<Agent>> {
        let mut agents = BTreeMap::new();
        let Some(value) = value else {
            return agents;
        };
        let Some(obj) = value.as_object() else {
            self.expected(
                "agents",
                "an object of agent name → { \"command\": [...] }",
                value,
            );
            return agents;
        };
        for (name, value) in obj {
            let key = format!("agents.{name}");
            if !is_path_safe_id(name, MAX_SOURCE_LEN) {
                self.error(&key, "not a valid agent name; use letters, digits, '-', '_' and '.' (not first), up to 64 characters");
            }
            let Some(fields) = value.as_object() else {
                self.expected(
                    &key,
                    "an object such as { \"command\": [\"claude\", \"-p\"] }",
                    value,
                );
                continue;
            };
            let suggested = self.unknown_keys(&key, fields, AGENT_KEYS);
            let Some(raw) = self.raw_agent(&key, fields, &suggested) else {
                continue;
            };
            if let Some(agent) = self.agent(&key, name, raw) {
                agents.insert(name.clone(), Arc::new(agent));
            }
        }
        agents
    }

    /// Reads an agent's keys, reporting every one of the wrong type.
    fn raw_agent(
        &mut self,
        key: &str,
        fields: &Map<String, Value>,
        suggested: &[String],
    ) -> Option<RawAgent> {
        let command = self.command(key, fields, suggested);
        let timeout_sec = self.optional(
            key,
            fields,
            "timeoutSec",
            "a whole number of seconds, such as 1800",
            Value::as_u64,
        );
        let max_concurrent = self.optional(
            key,
            fields,
            "maxConcurrent",
            "a whole number of runs at once, such as 2",
            Value::as_u64,
        );
        let env = self.env(&format!("{key}.env"), fields.get("env"));
        let on_finish = self.on_finish(key, fields.get("onFinish"));
        Some(RawAgent {
            command: command?,
            timeout_sec: timeout_sec?,
            max_concurrent: max_concurrent?,
            env: env?,
            on_finish: on_finish?,
        })
    }

    /// The `command` of the agent at `agent` (a key such as `agents.bot`).
    fn command(
        &mut self,
        agent: &str,
        fields: &Map<String, Value>,
        suggested: &[String],
    ) -> Option<Vec<String>> {
        match fields.get("command") {
            None | Some(Value::Null) => {
                self.missing(
                    agent,
                    "command",
                    suggested,
                    "give the agent's argv, e.g. [\"claude\", \"-p\"]",
                );
                None
            }
            Some(value) => self.argv(
                &format!("{agent}.command"),
                value,
                "the agent's argv, a list of strings such as [\"claude\", \"-p\"]",
            ),
        }
    }

    /// An argv at `key`, which `needs` describes: a list of strings, not a command line.
    pub(super) fn argv(&mut self, key: &str, value: &Value, needs: &str) -> Option<Vec<String>> {
        match value {
            Value::Array(items) => {
                let mut argv = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(arg) => argv.push(arg.clone()),
                        other => self.expected(
                            &format!("{key}[{i}]"),
                            "a string (each argument is one string)",
                            other,
                        ),
                    }
                }
                (argv.len() == items.len()).then_some(argv)
            }
            // A command line written as one string: lowkey runs no shell to split it.
            Value::String(line) => {
                let argv: Vec<String> = line
                    .split_whitespace()
                    .map(|arg| Value::from(arg).to_string())
                    .collect();
                self.error(
                    key,
                    format!(
                        "expected {needs}; got {}: no shell splits it, so write [{}]",
                        describe(value),
                        argv.join(", ")
                    ),
                );
                None
            }
            other => {
                self.expected(key, needs, other);
                None
            }
        }
    }

    /// An agent's extra environment. Values are not quoted back: they may be tokens.
    fn env(&mut self, key: &str, value: Option<&Value>) -> Option<BTreeMap<String, String>> {
        let vars = match value {
            None | Some(Value::Null) => return Some(BTreeMap::new()),
            Some(Value::Object(vars)) => vars,
            Some(other) => {
                self.expected(
                    key,
                    "an object of variable name → value, such as {\"LEVEL\": \"warn\"}",
                    other,
                );
                return None;
            }
        };
        let mut env = BTreeMap::new();
        for (name, value) in vars {
            match value {
                Value::String(text) => {
                    env.insert(name.clone(), text.clone());
                }
                Value::Number(_) | Value::Bool(_) => self.error(
                    format!("{key}.{name}"),
                    format!(
                        "expected a string; got {}: put the value in double quotes",
                        kind(value)
                    ),
                ),
                other => self.error(
                    format!("{key}.{name}"),
                    format!("expected a string; got {}", kind(other)),
                ),
            }
        }
        (env.len() == vars.len()).then_some(env)
    }

    fn agent(&mut self, key: &str, name: &str, raw: RawAgent) -> Option<Agent> {
        let mut ok = self.runnable(
            key,
            &raw.command,
            &raw.env,
            "the agent's argv, e.g. [\"claude\", \"-p\"]",
        );
        let timeout = raw.timeout_sec.unwrap_or(DEFAULT_TIMEOUT_SEC);
        if timeout == 0 {
            self.error(format!("{key}.timeoutSec"), "must be at least 1 second");
            ok = false;
        }
        let max_concurrent = raw.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT as u64);
        if max_concurrent == 0 {
            self.error(format!("{key}.maxConcurrent"), "must be at least 1");
            ok = false;
        }
        let env = raw.env;
        for var in env.keys() {
            if var.is_empty() || var.contains(['=', '\0']) {
                self.error(
                    format!("{key}.env.{var}"),
                    "not a valid environment variable name",
                );
                ok = false;
            } else if var.starts_with("LOWKEY_") {
                self.error(
                    format!("{key}.env.{var}"),
                    "LOWKEY_* variables are set by lowkey for each run; choose another name",
                );
                ok = false;
            }
        }
        ok.then(|| Agent {
            name: name.to_owned(),
            command: raw.command,
            timeout: Duration::from_secs(timeout),
            max_concurrent: max_concurrent as usize,
            env,
            on_finish: raw.on_finish,
        })
    }

    /// Checks the `command` of `key` (an agent, or an `onFinish`): an error when it
    /// cannot be run at all, a warning when it will not be found where lowkey runs it.
    /// `env` is what it runs with (its `PATH`, if set, is where it is looked for); `what`
    /// says what the command should be, for an empty one.
    pub(super) fn runnable(
        &mut self,
        key: &str,
        argv: &[String],
        env: &BTreeMap<String, String>,
        what: &str,
    ) -> bool {
        match argv.first() {
            None => {
                self.error(format!("{key}.command"), format!("is empty; give {what}"));
                false
            }
            Some(program) if program.contains('/') && !program.starts_with('/') => {
                self.error(
                    format!("{key}.command"),
                    format!("\"{program}\" is a relative path; give an absolute path or a program name found on PATH"),
                );
                false
            }
            Some(program) => {
                self.program(key, program, env);
                true
            }
        }
    }

    /// Warns when an agent's program will not start where lowkey runs it. Only a
    /// warning: the same file is right for `lowkey serve` in a shell, or under a unit
    /// whose drop-in sets `Environment=PATH=`, which `lowkey check` cannot see; and
    /// every other source keeps working meanwhile.
    fn program(&mut self, key: &str, program: &str, env: &BTreeMap<String, String>) {
        let (path, on) = match env.get("PATH") {
            Some(path) => (OsString::from(path), format!("{key}.env.PATH ({path})")),
            None if self.lookup == Lookup::Units => (
                OsString::from(UNITS_PATH),
                format!("the PATH systemd gives lowkey's units ({UNITS_PATH})"),
            ),
            None => (
                self.own_path.clone(),
                format!("lowkey's PATH ({})", self.own_path.to_string_lossy()),
            ),
        };
        let key = format!("{key}.command");
        match find_program(program, &path) {
            Found::Runnable(_) => {}
            Found::NotExecutable(file) => self.warn(
                key,
                format!(
                    "{f} is not executable, so runs will fail; run chmod +x {f}",
                    f = file.display()
                ),
            ),
            Found::Nothing if program.contains('/') => self.warn(
                key,
                format!(
                    "\"{program}\" does not exist, so runs will fail until it is installed there"
                ),
            ),
            Found::Nothing => {
                let own = match self.lookup {
                    Lookup::Units => "your PATH",
                    Lookup::Own => "lowkey's own PATH",
                };
                let elsewhere = match find_program(program, &self.own_path) {
                    Found::Runnable(file) if path != self.own_path => Some(file),
                    _ => None,
                };
                let message = match elsewhere {
                    Some(file) => format!(
                        "\"{program}\" is not on {on}, so runs will fail; {own} has it at {}: use {}",
                        file.display(),
                        Value::from(file.to_string_lossy())
                    ),
                    None => format!(
                        "\"{program}\" is not on {on}, so runs will fail; install it there, or give its absolute path"
                    ),
                };
                self.warn(key, message);
            }
        }
    }
}

pub(super) fn agent_hint(name: &str, agents: &[&str]) -> String {
    if agents.is_empty() {
        return "define one under `agents`".to_owned();
    }
    match suggest(name, agents) {
        Some(s) if !name.is_empty() => format!("did you mean \"{s}\"?"),
        _ => format!("defined agents: {}", agents.join(", ")),
    }
}

/// Looks `program` up as execvp(3) does: a name with a `/` is taken as it is, any
/// other name is looked for in each directory of `path` in turn, and the first file this
/// user may execute is the one that runs.
fn find_program(program: &str, path: &OsStr) -> Found {
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(program)]
    } else {
        std::env::split_paths(path)
            .filter(|dir| !dir.as_os_str().is_empty())
            .map(|dir| dir.join(program))
            .collect()
    };
    let mut not_executable = None;
    for file in candidates.into_iter().filter(|f| f.is_file()) {
        if nix::unistd::access(&file, nix::unistd::AccessFlags::X_OK).is_ok() {
            return Found::Runnable(file);
        }
        not_executable.get_or_insert(file);
    }
    not_executable.map_or(Found::Nothing, Found::NotExecutable)
}
