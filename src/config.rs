//! The box config, `$LOWKEY_HOME/config.json`: parsed strictly, then validated.
//!
//! Parsing turns the JSON text into values; validation walks every key and collects every
//! problem it finds, each naming its key and the fix, so `lowkey check` can print them all
//! at once instead of making the user fix one error per run.

use crate::secret::Secret;
use crate::signature::{self, Encoding, GenericHmac, Scheme, SchemeKind};
use crate::template::Template;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7433";
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
pub const DEFAULT_TIMEOUT_SEC: u64 = 1800;
pub const DEFAULT_MAX_CONCURRENT: usize = 1;
pub const DEFAULT_TOLERANCE_SEC: u64 = 300;
pub const DEFAULT_DEDUP_HOURS: u64 = 72;
/// Ten years; more would overflow the time a delivery id is remembered until.
const MAX_DEDUP_HOURS: u64 = 10 * 365 * 24;
/// The `target` that makes a fresh session per event.
pub const NEW_SESSION: &str = "new_session";

const TOP_KEYS: &[&str] = &[
    "apiKey",
    "listen",
    "defaultAgent",
    "agents",
    "webhooks",
    "maxBodyBytes",
    "idleExitSec",
    "trustedProxies",
];
const AGENT_KEYS: &[&str] = &["command", "timeoutSec", "maxConcurrent", "env"];
const SOURCE_KEYS: &[&str] = &[
    "project",
    "agent",
    "target",
    "auth",
    "verify",
    "secret",
    "secrets",
    "toleranceSec",
    "dedupHours",
    "rateLimit",
    "signatureHeader",
    "signatureEncoding",
    "signaturePrefix",
];

/// A validated config. Everything in it has been checked; the server never re-validates.
#[derive(Debug)]
pub struct Config {
    pub api_key: Secret,
    /// Used only when systemd passed no sockets.
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    /// Exit after this long without work, only when socket-activated.
    pub idle_exit: Option<Duration>,
    pub agents: BTreeMap<String, Arc<Agent>>,
    pub sources: BTreeMap<String, Source>,
    /// Peers whose `X-Forwarded-For` is believed when counting auth failures.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// True only for [`Config::unusable`]: every webhook gets 503 and no run starts.
    pub unusable: bool,
}

#[derive(Debug)]
pub struct Agent {
    pub name: String,
    /// argv; run without a shell.
    pub command: Vec<String>,
    pub timeout: Duration,
    /// How many runs of this agent may be in flight at once, across all sessions.
    pub max_concurrent: usize,
    pub env: BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct Source {
    pub project: PathBuf,
    /// Resolved agent name (the source's own, or `defaultAgent`); always in `agents`.
    pub agent: String,
    pub target: Target,
    /// Whether the API key is required; a configured signature is always required.
    pub auth: Auth,
    pub verify: Option<Verify>,
    /// How long delivery ids are remembered.
    pub dedup: Duration,
    pub rate_limit: Option<RateLimit>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    NewSession,
    Session(String),
    /// A session id filled from the payload; see `template`.
    Template(Template),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <apiKey>` is required (the default).
    Key,
    /// Only the signature is checked: for senders that cannot send the key.
    Signature,
}

/// A source's signature check.
pub struct Verify {
    pub scheme: Scheme,
    /// Key bytes of every configured secret; any one verifies (rotation).
    pub keys: Vec<Vec<u8>>,
    /// Replay window, both directions, for schemes that sign a timestamp.
    pub tolerance_sec: u64,
}

impl fmt::Debug for Verify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verify")
            .field("scheme", &self.scheme.name())
            .field("keys", &format_args!("[{} redacted]", self.keys.len()))
            .field("tolerance_sec", &self.tolerance_sec)
            .finish()
    }
}

/// A token bucket: `per_second` tokens refill each second, up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One thing wrong with the config: where (a dotted key path) and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: not valid JSON: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{} is not a valid config:\n{}", path.display(), list(problems))]
    Invalid {
        path: PathBuf,
        /// Errors and warnings together, in file order.
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// What lowkey serves with while the config file is unusable under socket
    /// activation: no sources, no agents, and a key no request can carry (a header
    /// value holds no line break). Requests are answered 503 before the key is looked
    /// at; this only keeps the daemon up until a reload.
    pub fn unusable() -> Config {
        Config {
            api_key: Secret::new("unusable\n"),
            listen: DEFAULT_LISTEN.parse().expect("the default address parses"),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            idle_exit: None,
            agents: BTreeMap::new(),
            sources: BTreeMap::new(),
            trusted_proxies: Vec::new(),
            unusable: true,
        }
    }
}

/// A config that passed validation, with the warnings it still deserves.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Problem>,
}

/// Where lowkey keeps its state: `$LOWKEY_HOME`, else `~/.lowkey`.
pub fn default_home() -> PathBuf {
    if let Some(home) = std::env::var_os("LOWKEY_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    home_dir().join(".lowkey")
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<Loaded, ConfigError> {
    let root: Value = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let mut v = Validator::default();
    let config = v.config(&root);
    let has_error = v.problems.iter().any(|p| p.severity == Severity::Error);
    match config {
        Some(config) if !has_error => Ok(Loaded {
            config,
            warnings: v.problems,
        }),
        _ => Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems: v.problems,
        }),
    }
}

/// Source names and session ids become file names, so they are kept to a safe alphabet:
/// an ASCII letter or digit first, then letters, digits, `-`, `_` and `.`.
pub fn is_path_safe_id(id: &str, max_len: usize) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && id.len() <= max_len
        && chars.all(is_id_char)
}

/// A character allowed in names and session ids after the first (which must be a
/// letter or digit).
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

pub const MAX_SOURCE_LEN: usize = 64;
pub const MAX_SESSION_ID_LEN: usize = 128;

/// The known key closest to a misspelt one, if any is close enough to be what was meant.
pub fn suggest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    let fold = |s: &str| {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-'))
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    let folded = fold(unknown);
    known
        .iter()
        .map(|k| {
            let d = if fold(k) == folded {
                0
            } else {
                strsim::damerau_levenshtein(&folded, &fold(k))
            };
            (d, *k)
        })
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAgent {
    command: Vec<String>,
    timeout_sec: Option<u64>,
    max_concurrent: Option<u64>,
    env: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSource {
    project: Option<String>,
    agent: Option<String>,
    target: Option<String>,
    auth: Option<String>,
    verify: Option<String>,
    tolerance_sec: Option<u64>,
    dedup_hours: Option<u64>,
    rate_limit: Option<RawRateLimit>,
    signature_header: Option<String>,
    signature_encoding: Option<String>,
    signature_prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRateLimit {
    per_second: f64,
    burst: Option<f64>,
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            severity: Severity::Error,
            key: key.into(),
            message: message.into(),
        });
    }

    fn warn(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            severity: Severity::Warning,
            key: key.into(),
            message: message.into(),
        });
    }

    /// Deserializes one part of the config, reporting a type error under its full key.
    fn typed<T: serde::de::DeserializeOwned>(&mut self, key: &str, value: &Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let inner = e.path().to_string();
                let key = if inner == "." {
                    key.to_owned()
                } else {
                    format!("{key}.{inner}")
                };
                self.error(key, e.into_inner().to_string());
                None
            }
        }
    }

    /// Reports keys not in `known` as errors with a suggestion; returns the suggestions
    /// made, so a "missing key" error is not reported twice for one typo.
    fn unknown_keys(
        &mut self,
        prefix: &str,
        obj: &Map<String, Value>,
        known: &[&str],
    ) -> Vec<String> {
        let mut suggested = Vec::new();
        for key in obj.keys().filter(|k| !known.contains(&k.as_str())) {
            let hint = match suggest(key, known) {
                Some(s) => {
                    suggested.push(s.to_owned());
                    format!("did you mean `{s}`?")
                }
                None => format!("known keys: {}", known.join(", ")),
            };
            self.error(format!("{prefix}.{key}"), format!("unknown key; {hint}"));
        }
        suggested
    }

    fn config(&mut self, root: &Value) -> Option<Config> {
        let Some(obj) = root.as_object() else {
            self.error("(top level)", "the config must be a JSON object `{ ... }`");
            return None;
        };
        for key in obj.keys().filter(|k| !TOP_KEYS.contains(&k.as_str())) {
            // Other box components share this file, so a foreign key is only a warning.
            let hint = match suggest(key, TOP_KEYS) {
                Some(k) => format!("not a lowkey key (did you mean `{k}`?); ignored"),
                None => "not a lowkey key; ignored".to_owned(),
            };
            self.warn(key.as_str(), hint);
        }

        let api_key = self.api_key(obj.get("apiKey"));
        let listen = self.listen(obj.get("listen"));
        let max_body_bytes = self.max_body_bytes(obj.get("maxBodyBytes"));
        let idle_exit = self.idle_exit(obj.get("idleExitSec"));
        let agents = self.agents(obj.get("agents"));
        // Names are checked against every agent declared, so an agent with a bad field
        // is reported once, at that field, and not again wherever it is named.
        let declared: Vec<&str> = obj
            .get("agents")
            .and_then(Value::as_object)
            .map_or_else(Vec::new, |o| o.keys().map(String::as_str).collect());
        let default_agent = match obj.get("defaultAgent") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => {
                if !declared.contains(&name.as_str()) {
                    let hint = agent_hint(name, &declared);
                    self.error(
                        "defaultAgent",
                        format!("agent \"{name}\" is not defined under `agents`; {hint}"),
                    );
                }
                Some(name.clone())
            }
            Some(other) => {
                self.error(
                    "defaultAgent",
                    format!("must be an agent name (a string), not {other}"),
                );
                None
            }
        };
        let sources = self.sources(obj.get("webhooks"), &declared, default_agent.as_deref());
        let trusted_proxies = self.trusted_proxies(obj.get("trustedProxies"));

        Some(Config {
            api_key: api_key?,
            listen: listen?,
            max_body_bytes: max_body_bytes?,
            idle_exit: idle_exit?,
            agents,
            sources,
            trusted_proxies: trusted_proxies?,
            unusable: false,
        })
    }

    fn trusted_proxies(&mut self, value: Option<&Value>) -> Option<Vec<std::net::IpAddr>> {
        let Some(value) = value else {
            return Some(Vec::new());
        };
        let Some(items) = value.as_array() else {
            self.error(
                "trustedProxies",
                "must be a list of IP addresses, e.g. [\"127.0.0.1\"]",
            );
            return None;
        };
        let mut ips = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str().and_then(|s| s.parse().ok()) {
                Some(ip) => ips.push(ip),
                None => {
                    self.error(format!("trustedProxies[{i}]"), format!("{item} is not an IP address; list the proxies' addresses, e.g. \"127.0.0.1\""));
                    return None;
                }
            }
        }
        Some(ips)
    }

    fn api_key(&mut self, value: Option<&Value>) -> Option<Secret> {
        let Some(value) = value else {
            self.error(
                "apiKey",
                "missing; run `lowkey init` to create a config with a fresh key, or add \"apiKey\"",
            );
            return None;
        };
        let key = self.secret("apiKey", value)?;
        if key.expose().len() < 16 {
            self.warn(
                "apiKey",
                "shorter than 16 characters; `lowkey init` draws a strong one",
            );
        }
        Some(key)
    }

    /// A secret is given inline, or as `{"file": PATH}`, or as `{"credential": NAME}` read
    /// from systemd's `$CREDENTIALS_DIRECTORY` (`LoadCredential=`), so it need not sit in
    /// the JSON.
    fn secret(&mut self, key: &str, value: &Value) -> Option<Secret> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
        };
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Object(obj) if obj.len() == 1 && obj.contains_key("file") => {
                let Some(file) = obj["file"].as_str() else {
                    self.error(format!("{key}.file"), "must be a path string");
                    return None;
                };
                match read(Path::new(file)) {
                    Ok(s) => s,
                    Err(e) => {
                        self.error(format!("{key}.file"), format!("cannot read {file}: {e}"));
                        return None;
                    }
                }
            }
            Value::Object(obj) if obj.len() == 1 && obj.contains_key("credential") => {
                let Some(name) = obj["credential"].as_str() else {
                    self.error(
                        format!("{key}.credential"),
                        "must be a credential name string",
                    );
                    return None;
                };
                let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
                    self.error(
                        format!("{key}.credential"),
                        format!("credential \"{name}\" needs $CREDENTIALS_DIRECTORY; run under systemd with LoadCredential={name}:PATH"),
                    );
                    return None;
                };
                match read(&Path::new(&dir).join(name)) {
                    Ok(s) => s,
                    Err(e) => {
                        self.error(
                            format!("{key}.credential"),
                            format!("cannot read credential \"{name}\": {e}"),
                        );
                        return None;
                    }
                }
            }
            _ => {
                self.error(
                    key,
                    "must be a string, {\"file\": \"/path\"} or {\"credential\": \"name\"}",
                );
                return None;
            }
        };
        if text.is_empty() {
            self.error(key, "is empty");
            return None;
        }
        Some(Secret::new(text))
    }

    fn listen(&mut self, value: Option<&Value>) -> Option<SocketAddr> {
        let text = match value {
            None => DEFAULT_LISTEN,
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                self.error(
                    "listen",
                    format!("must be a string such as \"{DEFAULT_LISTEN}\", not {other}"),
                );
                return None;
            }
        };
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    "listen",
                    format!("\"{text}\" is not an IP address with a port; use e.g. \"{DEFAULT_LISTEN}\" or \"[::1]:7433\""),
                );
                None
            }
        }
    }

    fn max_body_bytes(&mut self, value: Option<&Value>) -> Option<usize> {
        match value {
            None => Some(DEFAULT_MAX_BODY_BYTES),
            Some(v) => {
                match v.as_u64() {
                    Some(n) if n > 0 && n <= 64 * 1024 * 1024 => Some(n as usize),
                    _ => {
                        self.error("maxBodyBytes", format!("must be a whole number of bytes from 1 to 67108864 (64 MiB), not {v}"));
                        None
                    }
                }
            }
        }
    }

    fn idle_exit(&mut self, value: Option<&Value>) -> Option<Option<Duration>> {
        match value {
            None | Some(Value::Null) => Some(None),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Some(Some(Duration::from_secs(n))),
                _ => {
                    self.error("idleExitSec", format!("must be a whole number of seconds above 0, not {v}; leave it out to never exit"));
                    None
                }
            },
        }
    }

    fn agents(&mut self, value: Option<&Value>) -> BTreeMap<String, Arc<Agent>> {
        let mut agents = BTreeMap::new();
        let Some(value) = value else {
            return agents;
        };
        let Some(obj) = value.as_object() else {
            self.error(
                "agents",
                "must be an object of agent name → { \"command\": [...] }",
            );
            return agents;
        };
        for (name, value) in obj {
            let key = format!("agents.{name}");
            if !is_path_safe_id(name, MAX_SOURCE_LEN) {
                self.error(&key, "not a valid agent name; use letters, digits, '-', '_' and '.' (not first), up to 64 characters");
            }
            let Some(fields) = value.as_object() else {
                self.error(
                    &key,
                    "must be an object like { \"command\": [\"claude\", \"-p\"] }",
                );
                continue;
            };
            self.unknown_keys(&key, fields, AGENT_KEYS);
            if !fields.contains_key("command") {
                self.error(
                    format!("{key}.command"),
                    "missing; give the agent's argv, e.g. [\"claude\", \"-p\"]",
                );
                continue;
            }
            // Unknown keys were reported above; deserializing ignores them.
            let Some(raw) = self.typed::<RawAgent>(&key, value) else {
                continue;
            };
            if let Some(agent) = self.agent(&key, name, raw) {
                agents.insert(name.clone(), Arc::new(agent));
            }
        }
        agents
    }

    fn agent(&mut self, key: &str, name: &str, raw: RawAgent) -> Option<Agent> {
        let mut ok = true;
        match raw.command.first() {
            None => {
                self.error(
                    format!("{key}.command"),
                    "is empty; give the agent's argv, e.g. [\"claude\", \"-p\"]",
                );
                ok = false;
            }
            Some(program) if program.contains('/') && !program.starts_with('/') => {
                self.error(
                    format!("{key}.command"),
                    format!("\"{program}\" is a relative path; give an absolute path or a program name found on PATH"),
                );
                ok = false;
            }
            Some(program) if !program_exists(program) => {
                // A warning only: PATH under systemd may differ from the shell's.
                self.warn(
                    format!("{key}.command"),
                    format!("\"{program}\" is not found (PATH or file); runs will fail until it is installed"),
                );
            }
            Some(_) => {}
        }
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
        let env = raw.env.unwrap_or_default();
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
        })
    }

    /// How long a source's delivery ids are remembered.
    fn dedup(&mut self, key: &str, hours: Option<u64>) -> Option<Duration> {
        let hours = hours.unwrap_or(DEFAULT_DEDUP_HOURS);
        if hours > MAX_DEDUP_HOURS {
            self.error(
                format!("{key}.dedupHours"),
                format!("{hours} is too long; use at most {MAX_DEDUP_HOURS} hours (ten years)"),
            );
            return None;
        }
        Some(Duration::from_secs(hours * 3600))
    }

    /// A source's token bucket. A rate of 0 would never refill, and a burst under 1
    /// would never hold the token a request takes.
    fn rate_limit(&mut self, key: &str, raw: RawRateLimit) -> Option<RateLimit> {
        let mut ok = true;
        if !(raw.per_second.is_finite() && raw.per_second > 0.0) {
            self.error(
                format!("{key}.rateLimit.perSecond"),
                format!(
                    "{} is not a rate; use a number above 0, e.g. 5 for five webhooks a second",
                    raw.per_second
                ),
            );
            ok = false;
        }
        let burst = raw.burst.unwrap_or(raw.per_second.max(1.0));
        if !(burst.is_finite() && burst >= 1.0) {
            self.error(
                format!("{key}.rateLimit.burst"),
                format!("{burst} is too small; use at least 1, the number of webhooks that may come at once"),
            );
            ok = false;
        }
        ok.then_some(RateLimit {
            per_second: raw.per_second,
            burst,
        })
    }

    fn sources(
        &mut self,
        value: Option<&Value>,
        agents: &[&str],
        default_agent: Option<&str>,
    ) -> BTreeMap<String, Source> {
        let mut sources = BTreeMap::new();
        let Some(value) = value else {
            return sources;
        };
        let Some(obj) = value.as_object() else {
            self.error(
                "webhooks",
                "must be an object of source name → { \"project\": ... }",
            );
            return sources;
        };
        for (name, value) in obj {
            let key = format!("webhooks.{name}");
            let mut ok = true;
            if !is_path_safe_id(name, MAX_SOURCE_LEN) {
                self.error(&key, "not a valid source name; use letters, digits, '-', '_' and '.' (not first), up to 64 characters");
                ok = false;
            }
            let Some(fields) = value.as_object() else {
                self.error(
                    &key,
                    "must be an object like { \"project\": \"/home/you/project\" }",
                );
                continue;
            };
            let suggested = self.unknown_keys(&key, fields, SOURCE_KEYS);
            // Unknown keys were reported above, and the secrets are read by
            // `security`; deserializing ignores both.
            let Some(raw) = self.typed::<RawSource>(&key, value) else {
                continue;
            };
            let project = match raw.project.as_deref() {
                None => {
                    if !suggested.iter().any(|s| s == "project") {
                        self.error(
                            format!("{key}.project"),
                            "missing; every source needs the project directory its agent works in",
                        );
                    }
                    None
                }
                Some(p) => self.project(&format!("{key}.project"), p),
            };
            let agent = match raw.agent.as_deref().or(default_agent) {
                None => {
                    self.error(
                        format!("{key}.agent"),
                        format!("no agent given and no `defaultAgent` set; add \"agent\": \"<name>\" ({})", agent_hint("", agents)),
                    );
                    None
                }
                Some(a) if !agents.contains(&a) => {
                    // An undefined defaultAgent is reported once, at `defaultAgent`.
                    if raw.agent.is_some() {
                        let hint = agent_hint(a, agents);
                        self.error(
                            format!("{key}.agent"),
                            format!("agent \"{a}\" is not defined under `agents`; {hint}"),
                        );
                    }
                    None
                }
                Some(a) => Some(a.to_owned()),
            };
            let target = match raw.target.as_deref() {
                None | Some(NEW_SESSION) => Some(Target::NewSession),
                Some(id) if is_path_safe_id(id, MAX_SESSION_ID_LEN) => {
                    Some(Target::Session(id.to_owned()))
                }
                Some(text) => match Template::parse(text) {
                    Ok(Some(template)) => Some(Target::Template(template)),
                    Ok(None) => {
                        self.error(
                            format!("{key}.target"),
                            format!("\"{text}\" is not a valid session id; use \"new_session\", letters, digits, '-', '_' and '.' (not first) up to 128 characters, or a template like \"gh-pr-{{{{pull_request.number}}}}\""),
                        );
                        None
                    }
                    Err(e) => {
                        self.error(format!("{key}.target"), e);
                        None
                    }
                },
            };
            let security = self.security(&key, fields, &raw, name);
            let dedup = self.dedup(&key, raw.dedup_hours);
            let rate_limit = match raw.rate_limit {
                None => Some(None),
                Some(r) => self.rate_limit(&key, r).map(Some),
            };
            if let (
                true,
                Some(project),
                Some(agent),
                Some(target),
                Some((auth, verify)),
                Some(dedup),
                Some(rate_limit),
            ) = (ok, project, agent, target, security, dedup, rate_limit)
            {
                sources.insert(
                    name.clone(),
                    Source {
                        project,
                        agent,
                        target,
                        auth,
                        verify,
                        dedup,
                        rate_limit,
                    },
                );
            }
        }
        sources
    }

    /// Reports the keys that only `hmac-sha256` reads; true when there are none.
    fn no_generic_keys(&mut self, key: &str, fields: &Map<String, Value>) -> bool {
        let mut none = true;
        for k in ["signatureHeader", "signatureEncoding", "signaturePrefix"] {
            if fields.contains_key(k) {
                self.error(
                    format!("{key}.{k}"),
                    "only applies with \"verify\": \"hmac-sha256\"",
                );
                none = false;
            }
        }
        none
    }

    /// `auth`, `verify`, secrets and the scheme's options, checked together because
    /// each constrains the others.
    fn security(
        &mut self,
        key: &str,
        fields: &Map<String, Value>,
        raw: &RawSource,
        name: &str,
    ) -> Option<(Auth, Option<Verify>)> {
        let mut ok = true;
        let auth = match raw.auth.as_deref() {
            None | Some("key") => Auth::Key,
            Some("signature") => Auth::Signature,
            Some(other) => {
                self.error(format!("{key}.auth"), format!("\"{other}\" is not an auth mode; use \"key\" (the default: the API key is required) or \"signature\" (only the signature)"));
                return None;
            }
        };
        // `secret` and each item of `secrets`, with the key that names it.
        let given: Vec<(String, &Value)> = match (fields.get("secret"), fields.get("secrets")) {
            (Some(_), Some(_)) => {
                self.error(format!("{key}.secrets"), "give either `secret` or `secrets`, not both; put every secret in `secrets` while rotating");
                ok = false;
                Vec::new()
            }
            (Some(one), None) => vec![(format!("{key}.secret"), one)],
            (None, Some(Value::Array(list))) if !list.is_empty() => list
                .iter()
                .enumerate()
                .map(|(i, item)| (format!("{key}.secrets[{i}]"), item))
                .collect(),
            (None, Some(_)) => {
                self.error(
                    format!("{key}.secrets"),
                    "must be a non-empty list of secrets",
                );
                ok = false;
                Vec::new()
            }
            (None, None) => Vec::new(),
        };
        let mut secrets = Vec::new();
        for (k, value) in given {
            match self.secret(&k, value) {
                Some(s) => secrets.push((k, s)),
                None => ok = false,
            }
        }
        let Some(scheme_name) = raw.verify.as_deref() else {
            if fields.contains_key("secret") || fields.contains_key("secrets") {
                self.error(format!("{key}.verify"), format!("a secret is set but no `verify` scheme says how to check it; add \"verify\": one of {}", scheme_names()));
                return None;
            }
            if auth == Auth::Signature {
                self.error(format!("{key}.auth"), "\"signature\" needs `verify` and `secret`; without them anyone could call this source");
                return None;
            }
            ok &= self.no_generic_keys(key, fields);
            if raw.tolerance_sec.is_some() {
                self.warn(
                    format!("{key}.toleranceSec"),
                    "has no effect without `verify`",
                );
            }
            return ok.then_some((auth, None));
        };
        let kind: SchemeKind = match scheme_name.parse() {
            Ok(kind) => kind,
            Err(_) => {
                let names: Vec<&str> = SchemeKind::ALL.iter().map(|k| k.name()).collect();
                let hint = match suggest(scheme_name, &names) {
                    Some(s) => format!("did you mean \"{s}\"?"),
                    None => format!("use one of {}", scheme_names()),
                };
                self.error(
                    format!("{key}.verify"),
                    format!("\"{scheme_name}\" is not a signature scheme; {hint}"),
                );
                return None;
            }
        };
        let scheme = match kind {
            SchemeKind::StandardWebhooks => Scheme::StandardWebhooks,
            SchemeKind::Stripe => Scheme::Stripe,
            SchemeKind::Github => Scheme::Github,
            SchemeKind::Slack => Scheme::Slack,
            SchemeKind::HmacSha256 => {
                let header = match raw
                    .signature_header
                    .as_deref()
                    .map(http::HeaderName::try_from)
                {
                    Some(Ok(h)) => Some(h),
                    Some(Err(_)) => {
                        self.error(
                            format!("{key}.signatureHeader"),
                            "is not a valid HTTP header name",
                        );
                        None
                    }
                    None => {
                        self.error(format!("{key}.signatureHeader"), "missing; hmac-sha256 needs the name of the header that carries the signature, e.g. \"X-Signature\"");
                        None
                    }
                };
                let encoding = match raw
                    .signature_encoding
                    .as_deref()
                    .map(str::parse::<Encoding>)
                {
                    None => Some(Encoding::Hex),
                    Some(Ok(e)) => Some(e),
                    Some(Err(_)) => {
                        self.error(
                            format!("{key}.signatureEncoding"),
                            "must be \"hex\" or \"base64\"",
                        );
                        None
                    }
                };
                Scheme::HmacSha256(GenericHmac {
                    header: header?,
                    encoding: encoding?,
                    prefix: raw.signature_prefix.clone().unwrap_or_default(),
                })
            }
        };
        if kind != SchemeKind::HmacSha256 {
            ok &= self.no_generic_keys(key, fields);
        }
        if secrets.is_empty() {
            if ok {
                self.error(format!("{key}.secret"), format!("missing; `verify` {scheme_name} needs the signing secret the sender gave you"));
            }
            return None;
        }
        let mut keys = Vec::new();
        for (k, secret) in &secrets {
            match signature::key_from_secret(&scheme, secret.expose()) {
                Ok(bytes) => keys.push(bytes),
                Err(e) => {
                    self.error(k.as_str(), e.to_string());
                    ok = false;
                }
            }
        }
        if raw.tolerance_sec.is_some() && !kind.has_timestamp() {
            self.warn(
                format!("{key}.toleranceSec"),
                format!("has no effect: {scheme_name} signs no timestamp"),
            );
        }
        if auth == Auth::Key && kind.cannot_send_custom_headers() {
            self.warn(
                format!("{key}.auth"),
                format!("{scheme_name} cannot send the `Authorization` header, so every delivery to \"{name}\" will get 401; set \"auth\": \"signature\""),
            );
        }
        ok.then(|| {
            (
                auth,
                Some(Verify {
                    scheme,
                    keys,
                    tolerance_sec: raw.tolerance_sec.unwrap_or(DEFAULT_TOLERANCE_SEC),
                }),
            )
        })
    }

    fn project(&mut self, key: &str, text: &str) -> Option<PathBuf> {
        let path = match text.strip_prefix("~/") {
            Some(rest) => home_dir().join(rest),
            None => PathBuf::from(text),
        };
        if !path.is_absolute() {
            self.error(
                key,
                format!("\"{text}\" is relative; give an absolute path (or one starting with ~/)"),
            );
            return None;
        }
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => Some(path),
            Ok(_) => {
                self.error(
                    key,
                    format!("\"{text}\" is not a directory; point it at the project directory"),
                );
                None
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.error(
                    key,
                    format!("\"{text}\" does not exist; create the directory or fix the path"),
                );
                None
            }
            Err(e) => {
                self.error(key, format!("cannot open \"{text}\": {e}"));
                None
            }
        }
    }
}

fn agent_hint(name: &str, agents: &[&str]) -> String {
    if agents.is_empty() {
        return "define one under `agents`".to_owned();
    }
    match suggest(name, agents) {
        Some(s) if !name.is_empty() => format!("did you mean \"{s}\"?"),
        _ => format!("defined agents: {}", agents.join(", ")),
    }
}

fn scheme_names() -> String {
    SchemeKind::ALL
        .iter()
        .map(|k| format!("\"{}\"", k.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys() {
        assert_eq!(suggest("projct", SOURCE_KEYS), Some("project"));
        assert_eq!(suggest("timeout_sec", AGENT_KEYS), Some("timeoutSec"));
        assert_eq!(suggest("Agent", SOURCE_KEYS), Some("agent"));
        assert_eq!(suggest("colour", SOURCE_KEYS), None);
    }

    #[test]
    fn path_safe_ids() {
        assert!(is_path_safe_id("stripe", 64));
        assert!(is_path_safe_id("gh-pr_12.v2", 64));
        assert!(!is_path_safe_id("", 64));
        assert!(!is_path_safe_id(".hidden", 64));
        assert!(!is_path_safe_id("a/b", 64));
        assert!(!is_path_safe_id("..", 64));
        assert!(!is_path_safe_id("naïve", 64));
        assert!(!is_path_safe_id(&"a".repeat(65), 64));
    }
}
