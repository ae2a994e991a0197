//! The box config, `$LOWKEY_HOME/config.json`: parsed strictly, then validated.
//!
//! Parsing turns the JSON text into values; validation walks every key and collects every
//! problem it finds, each naming its key and the fix, so `lowkey check` can print them all
//! at once instead of making the user fix one error per run.

use crate::secret::Secret;
use crate::signature::{self, Encoding, GenericHmac, Scheme, SchemeKind};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod template;

pub use template::Template;

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
/// The PATH lowkey and its agents get under the shipped units. The units set none, so
/// it is systemd's built-in default for services (this is Debian 12's, which
/// `systemd-path search-binaries-default` prints). A per-user unit gets the user
/// manager's PATH, which systemd sets to the same default unless `environment.d` or
/// `systemctl --user set-environment` changes it.
pub const UNITS_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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
const RATE_LIMIT_KEYS: &[&str] = &["perSecond", "burst"];
/// Marks of a value copied from an example instead of filled in, compared after
/// folding case and dropping `_` and `-`: the shipped example config's secrets say
/// `replace_me`, and the README's key is `lk_…`.
const PLACEHOLDER_MARKS: &[&str] = &["replaceme", "changeme", "…"];

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
    #[error("{} is not a valid config: {}", path.display(), one_line(problems))]
    Invalid {
        path: PathBuf,
        /// Errors and warnings together, in file order.
        problems: Vec<Problem>,
    },
}

/// Every problem on one line, for a log line or a status: numbered when there are
/// several, since their messages hold `;` and `,` themselves. The warnings stay in, in
/// file order: a misspelt top-level key, only a warning, can be why a key is missing.
fn one_line(problems: &[Problem]) -> String {
    if let [one] = problems {
        return format!("{}: {}", one.key, one.message);
    }
    let count =
        |severity, name: &str| match problems.iter().filter(|p| p.severity == severity).count() {
            0 => None,
            1 => Some(format!("1 {name}")),
            n => Some(format!("{n} {name}s")),
        };
    let counts: Vec<String> = [
        count(Severity::Error, "error"),
        count(Severity::Warning, "warning"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let each: Vec<String> = problems
        .iter()
        .enumerate()
        .map(|(i, p)| format!("({}) {p}", i + 1))
        .collect();
    format!("{}: {}", counts.join(", "), each.join(" "))
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

pub fn load(path: &Path, lookup: Lookup) -> Result<Loaded, ConfigError> {
    let (text, mode) = read_with_mode(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut v = Validator::new(lookup);
    v.file_mode = Some((path.to_owned(), mode));
    v.parse(path, &text)
}

/// Parses and validates config text that did not come from a file (so its mode is not
/// judged), as `load` does.
pub fn parse(path: &Path, text: &str, lookup: Lookup) -> Result<Loaded, ConfigError> {
    Validator::new(lookup).parse(path, text)
}

/// serde_json's message without the position it appends (the error names it already),
/// and with the fix for the mistakes people make writing JSON by hand.
fn syntax_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text);
    let hint = match message {
        "trailing comma" => "; JSON allows no comma after the last item: remove it",
        "key must be a string" => "; JSON keys are in double quotes, like \"apiKey\"",
        m if m.starts_with("EOF while parsing") => {
            "; the file ends too early: a closing } or ] or a quote is missing"
        }
        _ => "",
    };
    format!("{message}{hint}")
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

/// An agent's keys, each of the type it needs.
struct RawAgent {
    command: Vec<String>,
    timeout_sec: Option<u64>,
    max_concurrent: Option<u64>,
    env: BTreeMap<String, String>,
}

/// A source's keys, each of the type it needs; the secrets are read by `security`.
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

struct RawRateLimit {
    per_second: f64,
    burst: Option<f64>,
}

/// What a search for an agent's program found.
enum Found {
    Runnable(PathBuf),
    /// A file of that name, but not one this user may execute.
    NotExecutable(PathBuf),
    Nothing,
}

struct Validator {
    problems: Vec<Problem>,
    /// Where agent commands are looked for, unless an agent sets its own `PATH`.
    lookup: Lookup,
    /// lowkey's own PATH.
    own_path: OsString,
    /// The config file and its mode, when it was read from disk.
    file_mode: Option<(PathBuf, u32)>,
    /// The first key whose secret is written in the config itself.
    inline_secret: Option<String>,
}

impl Validator {
    fn new(lookup: Lookup) -> Validator {
        Validator {
            problems: Vec::new(),
            lookup,
            own_path: std::env::var_os("PATH").unwrap_or_default(),
            file_mode: None,
            inline_secret: None,
        }
    }

    /// Parses the config's text and validates it.
    fn parse(mut self, path: &Path, text: &str) -> Result<Loaded, ConfigError> {
        let root: Value = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message: syntax_message(&e),
        })?;
        let config = self.config(&root);
        let has_error = self.problems.iter().any(|p| p.severity == Severity::Error);
        match config {
            Some(config) if !has_error => Ok(Loaded {
                config,
                warnings: self.problems,
            }),
            _ => Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems: self.problems,
            }),
        }
    }

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

    /// Reports a value of the wrong type: what the key needs, and what it got.
    fn expected(&mut self, key: &str, needs: &str, got: &Value) {
        self.error(key, format!("expected {needs}; got {}", describe(got)));
    }

    /// The optional key `name` of the object at `key`, read with `get` (such as
    /// `Value::as_u64`): `Some(None)` when it is absent or null, `None` when `get`
    /// refuses it (reported under `key.name`).
    fn optional<T>(
        &mut self,
        key: &str,
        fields: &Map<String, Value>,
        name: &str,
        needs: &str,
        get: impl Fn(&Value) -> Option<T>,
    ) -> Option<Option<T>> {
        match fields.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(v) => match get(v) {
                Some(t) => Some(Some(t)),
                None => {
                    self.expected(&format!("{key}.{name}"), needs, v);
                    None
                }
            },
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

    /// Reports the required key `name` of the object at `key` as missing, unless
    /// `unknown_keys` already suggested it for a misspelt key.
    fn missing(&mut self, key: &str, name: &str, suggested: &[String], fix: &str) {
        if !suggested.iter().any(|s| s == name) {
            self.error(format!("{key}.{name}"), format!("missing; {fix}"));
        }
    }

    fn config(&mut self, root: &Value) -> Option<Config> {
        let Some(obj) = root.as_object() else {
            self.expected("(top level)", "a JSON object `{ ... }`", root);
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
                self.expected("defaultAgent", "the name of an agent under `agents`", other);
                None
            }
        };
        let sources = self.sources(obj.get("webhooks"), &declared, default_agent.as_deref());
        let trusted_proxies = self.trusted_proxies(obj.get("trustedProxies"));
        self.config_file_mode();

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

    /// A secret written in the config is only as private as the file.
    fn config_file_mode(&mut self) {
        let (Some((path, mode)), Some(key)) = (&self.file_mode, &self.inline_secret) else {
            return;
        };
        let Some(mode) = readable_by_others(*mode) else {
            return;
        };
        let what = if key == "apiKey" {
            "the API key"
        } else {
            "this signing secret"
        };
        let message = format!(
            "{path} can be read by other users (mode {mode}) and holds {what}; run chmod 600 {path}",
            path = path.display(),
        );
        self.warn(key.clone(), message);
    }

    fn trusted_proxies(&mut self, value: Option<&Value>) -> Option<Vec<std::net::IpAddr>> {
        let Some(value) = value else {
            return Some(Vec::new());
        };
        let Some(items) = value.as_array() else {
            self.expected(
                "trustedProxies",
                "a list of IP addresses, such as [\"127.0.0.1\"]",
                value,
            );
            return None;
        };
        let mut ips = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str().and_then(|s| s.parse().ok()) {
                Some(ip) => ips.push(ip),
                None => {
                    self.expected(
                        &format!("trustedProxies[{i}]"),
                        "a proxy's IP address, such as \"127.0.0.1\"",
                        item,
                    );
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
        if is_placeholder(key.expose()) {
            // Anyone who has read the example could call every source.
            self.error(
                "apiKey",
                "is the example's placeholder, which anyone can read; put a fresh key in its place, such as the output of `openssl rand -hex 32` (or move this config aside and run `lowkey init`, which writes one with a fresh key)",
            );
            return None;
        }
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
            read_with_mode(path)
                .map(|(text, mode)| (text.trim_end_matches(['\n', '\r']).to_owned(), mode))
        };
        let text = match value {
            Value::String(s) => {
                self.inline_secret.get_or_insert_with(|| key.to_owned());
                s.clone()
            }
            Value::Object(obj) if obj.len() == 1 && obj.contains_key("file") => {
                let Some(file) = obj["file"].as_str() else {
                    self.expected(&format!("{key}.file"), "a path string", &obj["file"]);
                    return None;
                };
                match read(Path::new(file)) {
                    Ok((text, mode)) => {
                        if let Some(mode) = readable_by_others(mode) {
                            self.warn(
                                format!("{key}.file"),
                                format!(
                                    "{file} can be read by other users (mode {mode}); run chmod 600 {file}"
                                ),
                            );
                        }
                        text
                    }
                    Err(e) => {
                        self.error(format!("{key}.file"), format!("cannot read {file}: {e}"));
                        return None;
                    }
                }
            }
            Value::Object(obj) if obj.len() == 1 && obj.contains_key("credential") => {
                let Some(name) = obj["credential"].as_str() else {
                    self.expected(
                        &format!("{key}.credential"),
                        "a credential name (a string)",
                        &obj["credential"],
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
                // systemd keeps credentials private to the service.
                match read(&Path::new(&dir).join(name)) {
                    Ok((text, _)) => text,
                    Err(e) => {
                        self.error(
                            format!("{key}.credential"),
                            format!("cannot read credential \"{name}\": {e}"),
                        );
                        return None;
                    }
                }
            }
            // Not quoted back: it may be the secret itself.
            other => {
                self.error(
                    key,
                    format!("expected a string, {{\"file\": \"/path\"}} or {{\"credential\": \"name\"}}; got {}", kind(other)),
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
                self.expected(
                    "listen",
                    &format!("an IP address with a port, such as \"{DEFAULT_LISTEN}\""),
                    other,
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
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 && n <= 64 * 1024 * 1024 => Some(n as usize),
                _ => {
                    self.expected(
                        "maxBodyBytes",
                        "a whole number of bytes from 1 to 67108864 (64 MiB), such as 1048576",
                        v,
                    );
                    None
                }
            },
        }
    }

    fn idle_exit(&mut self, value: Option<&Value>) -> Option<Option<Duration>> {
        match value {
            None | Some(Value::Null) => Some(None),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Some(Some(Duration::from_secs(n))),
                _ => {
                    self.expected(
                        "idleExitSec",
                        "a whole number of seconds above 0, such as 900 (or no idleExitSec, to never exit)",
                        v,
                    );
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
        Some(RawAgent {
            command: command?,
            timeout_sec: timeout_sec?,
            max_concurrent: max_concurrent?,
            env: env?,
        })
    }

    /// The `command` of the agent at `agent` (a key such as `agents.bot`).
    fn command(
        &mut self,
        agent: &str,
        fields: &Map<String, Value>,
        suggested: &[String],
    ) -> Option<Vec<String>> {
        const NEEDS: &str = "the agent's argv, a list of strings such as [\"claude\", \"-p\"]";
        let key = &format!("{agent}.command");
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
            Some(Value::Array(items)) => {
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
            Some(Value::String(line)) => {
                let argv: Vec<String> = line
                    .split_whitespace()
                    .map(|arg| Value::from(arg).to_string())
                    .collect();
                self.error(
                    key,
                    format!(
                        "expected {NEEDS}; got {}: no shell splits it, so write [{}]",
                        describe(&Value::String(line.clone())),
                        argv.join(", ")
                    ),
                );
                None
            }
            Some(other) => {
                self.expected(key, NEEDS, other);
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
            Some(program) => self.program(key, program, &raw.env),
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
        })
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

    /// Reads a source's keys but the secrets, reporting every one of the wrong type.
    fn raw_source(&mut self, key: &str, fields: &Map<String, Value>) -> Option<RawSource> {
        let text = |v: &mut Self, name: &str, needs: &str| {
            v.optional(key, fields, name, needs, |v| v.as_str().map(str::to_owned))
        };
        let number = |v: &mut Self, name: &str, needs: &str| {
            v.optional(key, fields, name, needs, Value::as_u64)
        };
        let project = text(
            self,
            "project",
            "the project directory, such as \"/home/you/project\"",
        );
        let agent = text(self, "agent", "the name of an agent under `agents`");
        let target = text(
            self,
            "target",
            "\"new_session\", a session id, or a template such as \"gh-pr-{{pull_request.number}}\"",
        );
        let auth = text(self, "auth", "\"key\" or \"signature\"");
        let verify = text(
            self,
            "verify",
            &format!("a signature scheme: {}", scheme_names()),
        );
        let signature_header = text(
            self,
            "signatureHeader",
            "a header name, such as \"X-Signature\"",
        );
        let signature_encoding = text(self, "signatureEncoding", "\"hex\" or \"base64\"");
        let signature_prefix = text(
            self,
            "signaturePrefix",
            "the text before the signature, such as \"sha256=\"",
        );
        let tolerance_sec = number(
            self,
            "toleranceSec",
            "a whole number of seconds, such as 300",
        );
        let dedup_hours = number(self, "dedupHours", "a whole number of hours, such as 72");
        let rate_limit = self.raw_rate_limit(&format!("{key}.rateLimit"), fields.get("rateLimit"));
        Some(RawSource {
            project: project?,
            agent: agent?,
            target: target?,
            auth: auth?,
            verify: verify?,
            tolerance_sec: tolerance_sec?,
            dedup_hours: dedup_hours?,
            rate_limit: rate_limit?,
            signature_header: signature_header?,
            signature_encoding: signature_encoding?,
            signature_prefix: signature_prefix?,
        })
    }

    fn raw_rate_limit(&mut self, key: &str, value: Option<&Value>) -> Option<Option<RawRateLimit>> {
        let fields = match value {
            None | Some(Value::Null) => return Some(None),
            Some(Value::Object(fields)) => fields,
            Some(other) => {
                self.expected(
                    key,
                    "an object such as {\"perSecond\": 5, \"burst\": 10}",
                    other,
                );
                return None;
            }
        };
        let suggested = self.unknown_keys(key, fields, RATE_LIMIT_KEYS);
        let per_second = self.optional(
            key,
            fields,
            "perSecond",
            "a number of webhooks a second, such as 5",
            Value::as_f64,
        );
        let burst = self.optional(
            key,
            fields,
            "burst",
            "a number of webhooks, such as 10",
            Value::as_f64,
        );
        let Some(per_second) = per_second? else {
            self.missing(
                key,
                "perSecond",
                &suggested,
                "give the rate, e.g. 5 for five webhooks a second",
            );
            return None;
        };
        Some(Some(RawRateLimit {
            per_second,
            burst: burst?,
        }))
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
            self.expected(
                "webhooks",
                "an object of source name → { \"project\": ... }",
                value,
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
                self.expected(
                    &key,
                    "an object such as { \"project\": \"/home/you/project\" }",
                    value,
                );
                continue;
            };
            let suggested = self.unknown_keys(&key, fields, SOURCE_KEYS);
            let Some(raw) = self.raw_source(&key, fields) else {
                continue;
            };
            let project = match raw.project.as_deref() {
                None => {
                    self.missing(
                        &key,
                        "project",
                        &suggested,
                        "every source needs the project directory its agent works in",
                    );
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
            // Not quoted back: it may hold a secret.
            (None, Some(other)) => {
                self.error(
                    format!("{key}.secrets"),
                    format!(
                        "expected a non-empty list of secrets, such as [\"new\", \"old\"]; got {}",
                        match other {
                            Value::Array(_) => "an empty list",
                            other => kind(other),
                        }
                    ),
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
            // Its key would verify nothing but forgeries, so it is left out.
            if is_placeholder(secret.expose()) {
                if auth == Auth::Signature {
                    // The signature is this source's only guard, and the example is public.
                    self.error(k.as_str(), format!("is the example's placeholder, and \"{name}\" takes the signature alone, so anyone who has read the example could send it webhooks; put the signing secret the sender gave you in its place"));
                    ok = false;
                } else {
                    self.warn(k.as_str(), format!("is the example's placeholder, so every signed delivery to \"{name}\" will get 401; put the signing secret the sender gave you in its place"));
                }
                continue;
            }
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

/// A file's text and its mode, both from the one open file.
fn read_with_mode(path: &Path) -> std::io::Result<(String, u32)> {
    let mut file = std::fs::File::open(path)?;
    let mode = file.metadata()?.permissions().mode();
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok((text, mode))
}

/// The mode as `chmod` writes it (`0644`), when it lets other users read the file.
fn readable_by_others(mode: u32) -> Option<String> {
    (mode & 0o044 != 0).then(|| format!("{:04o}", mode & 0o7777))
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

/// What a JSON value is, for "got ..." in a message.
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A value as a message quotes it back: its kind, and its text when it is a scalar
/// (cut short). Never used for secrets.
fn describe(value: &Value) -> String {
    const LONGEST: usize = 40;
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(text) if text.chars().count() > LONGEST => {
            let cut: String = text.chars().take(LONGEST).collect();
            format!("the string {}…", Value::String(cut))
        }
        Value::String(text) => format!("the string {}", Value::String(text.clone())),
        other => kind(other).to_owned(),
    }
}

/// True for a value copied from an example and never filled in.
fn is_placeholder(text: &str) -> bool {
    let folded: String = text
        .chars()
        .filter(|c| !matches!(c, '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect();
    PLACEHOLDER_MARKS.iter().any(|mark| folded.contains(mark))
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

    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;

    const KEY: &str = "lk_test_key_0123456789abcdef";

    /// A valid config: agent `bot`, source `hook`.
    fn base() -> Value {
        json!({
            "apiKey": KEY,
            "agents": { "bot": { "command": ["/bin/sh"] } },
            "webhooks": { "hook": { "project": "/", "agent": "bot" } }
        })
    }

    /// Sets the value at a JSON pointer such as `/agents/bot/timeoutSec`, creating it.
    fn set(config: &mut Value, pointer: &str, value: Value) {
        let (parent, last) = pointer.rsplit_once('/').unwrap();
        let parent = config
            .pointer_mut(parent)
            .unwrap_or_else(|| panic!("{pointer}"));
        parent
            .as_object_mut()
            .unwrap()
            .insert(last.to_owned(), value);
    }

    /// Every problem `lowkey check` finds, with `own_path` as the shell's PATH.
    fn check_with(config: &Value, own_path: &str) -> Vec<Problem> {
        let v = Validator {
            own_path: own_path.into(),
            ..Validator::new(Lookup::Units)
        };
        match v.parse(Path::new("config.json"), &config.to_string()) {
            Ok(loaded) => loaded.warnings,
            Err(ConfigError::Invalid { problems, .. }) => problems,
            Err(e) => panic!("{e}"),
        }
    }

    fn check(config: &Value) -> Vec<Problem> {
        check_with(config, "")
    }

    fn errors(problems: &[Problem]) -> Vec<&Problem> {
        problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .collect()
    }

    #[test]
    fn the_base_config_is_valid() {
        assert_eq!(check(&base()), vec![]);
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key_what_it_needs_and_what_it_got() {
        for (pointer, value, key, message) in [
            (
                "/agents/bot/timeoutSec",
                json!("sixty"),
                "agents.bot.timeoutSec",
                "expected a whole number of seconds, such as 1800; got the string \"sixty\"",
            ),
            (
                "/agents/bot/timeoutSec",
                json!(-5),
                "agents.bot.timeoutSec",
                "got the number -5",
            ),
            (
                "/agents/bot/maxConcurrent",
                json!(1.5),
                "agents.bot.maxConcurrent",
                "expected a whole number of runs at once, such as 2; got the number 1.5",
            ),
            (
                "/agents/bot/command",
                json!("claude -p"),
                "agents.bot.command",
                "got the string \"claude -p\": no shell splits it, so write [\"claude\", \"-p\"]",
            ),
            (
                "/agents/bot/command",
                json!({}),
                "agents.bot.command",
                "expected the agent's argv, a list of strings such as [\"claude\", \"-p\"]; got an object",
            ),
            (
                "/agents/bot/command",
                json!(["/bin/sh", true]),
                "agents.bot.command[1]",
                "expected a string (each argument is one string); got true",
            ),
            (
                "/agents/bot/env",
                json!(["A=1"]),
                "agents.bot.env",
                "expected an object of variable name → value",
            ),
            (
                "/agents/bot/env",
                json!({ "DEBUG": true }),
                "agents.bot.env.DEBUG",
                "expected a string; got a boolean: put the value in double quotes",
            ),
            (
                "/agents/bot",
                json!(["/bin/sh"]),
                "agents.bot",
                "expected an object such as { \"command\": [\"claude\", \"-p\"] }; got a list",
            ),
            (
                "/webhooks/hook/project",
                json!(5),
                "webhooks.hook.project",
                "expected the project directory, such as \"/home/you/project\"; got the number 5",
            ),
            (
                "/webhooks/hook/agent",
                json!(true),
                "webhooks.hook.agent",
                "expected the name of an agent under `agents`; got true",
            ),
            (
                "/webhooks/hook/target",
                json!(["a"]),
                "webhooks.hook.target",
                "got a list",
            ),
            (
                "/webhooks/hook/auth",
                json!(1),
                "webhooks.hook.auth",
                "expected \"key\" or \"signature\"; got the number 1",
            ),
            (
                "/webhooks/hook/verify",
                json!(false),
                "webhooks.hook.verify",
                "expected a signature scheme: \"standard-webhooks\"",
            ),
            (
                "/webhooks/hook/signatureHeader",
                json!(5),
                "webhooks.hook.signatureHeader",
                "expected a header name",
            ),
            (
                "/webhooks/hook/signatureEncoding",
                json!(16),
                "webhooks.hook.signatureEncoding",
                "expected \"hex\" or \"base64\"; got the number 16",
            ),
            (
                "/webhooks/hook/signaturePrefix",
                json!({}),
                "webhooks.hook.signaturePrefix",
                "got an object",
            ),
            (
                "/webhooks/hook/toleranceSec",
                json!("5m"),
                "webhooks.hook.toleranceSec",
                "expected a whole number of seconds, such as 300; got the string \"5m\"",
            ),
            (
                "/webhooks/hook/dedupHours",
                json!(1.5),
                "webhooks.hook.dedupHours",
                "expected a whole number of hours, such as 72; got the number 1.5",
            ),
            (
                "/webhooks/hook/rateLimit",
                json!(5),
                "webhooks.hook.rateLimit",
                "expected an object such as {\"perSecond\": 5, \"burst\": 10}; got the number 5",
            ),
            (
                "/webhooks/hook/rateLimit",
                json!({ "perSecond": "fast" }),
                "webhooks.hook.rateLimit.perSecond",
                "expected a number of webhooks a second, such as 5; got the string \"fast\"",
            ),
            (
                "/webhooks/hook/rateLimit",
                json!({ "perSecond": 1, "burst": [] }),
                "webhooks.hook.rateLimit.burst",
                "got a list",
            ),
            (
                "/webhooks/hook/rateLimit",
                json!({ "burst": 2 }),
                "webhooks.hook.rateLimit.perSecond",
                "missing; give the rate",
            ),
            (
                "/webhooks/hook/rateLimit",
                json!({ "perSecond": 1, "bursts": 2 }),
                "webhooks.hook.rateLimit.bursts",
                "did you mean `burst`?",
            ),
            (
                "/webhooks/hook",
                json!("/srv/project"),
                "webhooks.hook",
                "got the string \"/srv/project\"",
            ),
            ("/webhooks", json!(true), "webhooks", "got true"),
            (
                "/listen",
                json!(7433),
                "listen",
                "expected an IP address with a port, such as \"127.0.0.1:7433\"; got the number 7433",
            ),
            (
                "/maxBodyBytes",
                json!("1M"),
                "maxBodyBytes",
                "got the string \"1M\"",
            ),
            (
                "/maxBodyBytes",
                json!(0),
                "maxBodyBytes",
                "from 1 to 67108864 (64 MiB), such as 1048576; got the number 0",
            ),
            (
                "/idleExitSec",
                json!(true),
                "idleExitSec",
                "expected a whole number of seconds above 0, such as 900 (or no idleExitSec, to never exit); got true",
            ),
            (
                "/trustedProxies",
                json!("127.0.0.1"),
                "trustedProxies",
                "expected a list of IP addresses, such as [\"127.0.0.1\"]; got the string \"127.0.0.1\"",
            ),
            (
                "/trustedProxies",
                json!(["localhost"]),
                "trustedProxies[0]",
                "got the string \"localhost\"",
            ),
            (
                "/defaultAgent",
                json!(5),
                "defaultAgent",
                "got the number 5",
            ),
            (
                "/agents/bot/timeoutSec",
                json!("x".repeat(100)),
                "agents.bot.timeoutSec",
                &format!("\"{}\"…", "x".repeat(40)),
            ),
        ] {
            let mut config = base();
            set(&mut config, pointer, value.clone());
            let problems = check(&config);
            let errors = errors(&problems);
            assert_eq!(errors.len(), 1, "{pointer} = {value}: {problems:#?}");
            assert_eq!(errors[0].key, key, "{pointer} = {value}");
            assert!(
                errors[0].message.contains(message),
                "{pointer} = {value}: {}",
                errors[0].message
            );
        }
    }

    #[test]
    fn every_type_error_of_one_agent_or_source_is_reported() {
        let mut config = base();
        set(&mut config, "/agents/bot/timeoutSec", json!("sixty"));
        set(&mut config, "/agents/bot/maxConcurrent", json!("two"));
        set(&mut config, "/webhooks/hook/toleranceSec", json!("5m"));
        set(&mut config, "/webhooks/hook/dedupHours", json!("3d"));
        let keys: Vec<String> = check(&config).into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "agents.bot.timeoutSec",
                "agents.bot.maxConcurrent",
                "webhooks.hook.toleranceSec",
                "webhooks.hook.dedupHours"
            ]
        );
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_not_quoted_back() {
        for (pointer, value, key) in [
            ("/apiKey", json!(98765432123456789u64), "apiKey"),
            (
                "/webhooks/hook/secrets",
                json!(98765432123456789u64),
                "webhooks.hook.secrets",
            ),
            (
                "/agents/bot/env",
                json!({ "TOKEN": 98765432123456789u64 }),
                "agents.bot.env.TOKEN",
            ),
        ] {
            let mut config = base();
            set(&mut config, "/webhooks/hook/verify", json!("github"));
            set(&mut config, "/webhooks/hook/secret", json!("a-real-secret"));
            if key == "webhooks.hook.secrets" {
                config["webhooks"]["hook"]
                    .as_object_mut()
                    .unwrap()
                    .remove("secret");
            }
            set(&mut config, pointer, value);
            let problems = check(&config);
            let error = errors(&problems)
                .into_iter()
                .find(|p| p.key == key)
                .unwrap_or_else(|| panic!("{key}: {problems:#?}"));
            assert!(error.message.contains("got a number"), "{error}");
            assert!(!error.message.contains("98765"), "{error}");
        }
    }

    #[test]
    fn a_placeholder_api_key_is_an_error() {
        for placeholder in [
            "lk_replace_me_with_the_key_from_lowkey_init",
            "lk_…",
            "CHANGE-ME-0123456789abcdef",
        ] {
            let mut config = base();
            config["apiKey"] = json!(placeholder);
            let problems = check(&config);
            assert_eq!(errors(&problems).len(), 1, "{placeholder}: {problems:#?}");
            let p = &problems[0];
            assert_eq!(p.key, "apiKey");
            assert!(p.message.contains("placeholder"), "{p}");
            assert!(p.message.contains("openssl rand -hex 32"), "{p}");
        }
    }

    #[test]
    fn a_placeholder_signing_secret_is_an_error_only_where_it_is_the_only_guard() {
        for (scheme, secret) in [
            ("stripe", "whsec_replace_me_with_the_stripe_endpoint_secret"),
            ("standard-webhooks", "whsec_replace_me_with_the_secret"),
            ("github", "replace_me_new_github_secret"),
        ] {
            let mut config = base();
            set(&mut config, "/webhooks/hook/verify", json!(scheme));
            set(
                &mut config,
                "/webhooks/hook/secrets",
                json!(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", secret]),
            );
            set(&mut config, "/webhooks/hook/auth", json!("signature"));
            let problems = check(&config);
            assert_eq!(problems.len(), 1, "{scheme}: {problems:#?}");
            assert_eq!(problems[0].severity, Severity::Error);
            assert_eq!(problems[0].key, "webhooks.hook.secrets[1]");
            assert!(
                problems[0]
                    .message
                    .contains("anyone who has read the example")
            );

            // With the API key required too, it only makes real deliveries fail.
            set(&mut config, "/webhooks/hook/auth", json!("key"));
            let problems = check(&config);
            let warnings: Vec<&Problem> = problems
                .iter()
                .filter(|p| p.severity == Severity::Warning)
                .collect();
            assert_eq!(errors(&problems), Vec::<&Problem>::new(), "{scheme}");
            assert!(
                warnings
                    .iter()
                    .any(|p| p.key == "webhooks.hook.secrets[1]" && p.message.contains("401")),
                "{scheme}: {problems:#?}"
            );
        }
    }

    #[test]
    fn problems_read_on_one_line_numbered_when_there_are_several() {
        let mut config = base();
        set(&mut config, "/agents/bot/timeoutSec", json!("sixty"));
        let one = Validator::new(Lookup::Own)
            .parse(Path::new("/c.json"), &config.to_string())
            .unwrap_err()
            .to_string();
        assert_eq!(
            one,
            "/c.json is not a valid config: agents.bot.timeoutSec: expected a whole number of seconds, such as 1800; got the string \"sixty\""
        );
        set(&mut config, "/webhooks/hook/agent", json!("bto"));
        set(&mut config, "/dashboard", json!(true));
        let two = Validator::new(Lookup::Own)
            .parse(Path::new("/c.json"), &config.to_string())
            .unwrap_err()
            .to_string();
        assert!(!two.contains('\n'), "{two}");
        assert!(
            two.starts_with("/c.json is not a valid config: 2 errors, 1 warning: (1) warning: dashboard: not a lowkey key; ignored (2) error: agents.bot.timeoutSec: expected"),
            "{two}"
        );
        assert!(
            two.contains(
                "; got the string \"sixty\" (3) error: webhooks.hook.agent: agent \"bto\""
            ),
            "{two}"
        );
    }

    #[test]
    fn a_json_syntax_error_says_where_once_and_how_to_fix_it() {
        for (text, location, message) in [
            (
                "{\"apiKey\": \"k\",}",
                "c.json:1:16:",
                "not valid JSON: trailing comma; JSON allows no comma after the last item: remove it",
            ),
            (
                "{apiKey: 1}",
                "c.json:1:2:",
                "not valid JSON: key must be a string; JSON keys are in double quotes",
            ),
            (
                "{\"apiKey\": ",
                "c.json:1:11:",
                "not valid JSON: EOF while parsing a value; the file ends too early",
            ),
        ] {
            let said = Validator::new(Lookup::Own)
                .parse(Path::new("c.json"), text)
                .unwrap_err()
                .to_string();
            assert!(said.starts_with(location), "{said}");
            assert!(said.contains(message), "{said}");
            assert!(!said.contains("line"), "the position is given once: {said}");
        }
    }

    /// A directory with an executable `agent-x` and a non-executable `plain`.
    fn bin() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, mode) in [("agent-x", 0o755), ("plain", 0o644)] {
            let file = dir.path().join(name);
            std::fs::write(&file, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        dir
    }

    #[test]
    fn check_looks_commands_up_on_the_units_path_and_names_the_one_the_shell_finds() {
        let bin = bin();
        let shell_path = format!("{}:/usr/bin", bin.path().display());
        let mut config = base();
        set(&mut config, "/agents/bot/command", json!(["agent-x", "-p"]));
        let problems = check_with(&config, &shell_path);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        let p = &problems[0];
        assert_eq!(
            (p.severity, p.key.as_str()),
            (Severity::Warning, "agents.bot.command")
        );
        let found = bin.path().join("agent-x");
        assert_eq!(
            p.message,
            format!(
                "\"agent-x\" is not on the PATH systemd gives lowkey's units ({UNITS_PATH}), so runs will fail; your PATH has it at {f}: use \"{f}\"",
                f = found.display()
            )
        );

        // Nowhere at all.
        let problems = check_with(&config, "/usr/bin");
        assert!(
            problems[0]
                .message
                .contains("install it there, or give its absolute path"),
            "{problems:#?}"
        );

        // `serve` looks on its own PATH, which is what its agents get.
        let own = Validator {
            own_path: shell_path.clone().into(),
            ..Validator::new(Lookup::Own)
        };
        let loaded = own.parse(Path::new("c.json"), &config.to_string()).unwrap();
        assert_eq!(loaded.warnings, vec![]);

        // An agent's own PATH is where it is looked for.
        set(
            &mut config,
            "/agents/bot/env",
            json!({ "PATH": bin.path() }),
        );
        assert_eq!(check_with(&config, "/usr/bin"), vec![]);
        set(
            &mut config,
            "/agents/bot/env",
            json!({ "PATH": "/usr/bin" }),
        );
        let problems = check_with(&config, &shell_path);
        assert!(
            problems[0]
                .message
                .contains("is not on agents.bot.env.PATH (/usr/bin)"),
            "{problems:#?}"
        );
        assert!(
            problems[0]
                .message
                .contains(&format!("use \"{}\"", found.display())),
            "{problems:#?}"
        );
    }

    #[test]
    fn a_command_that_is_not_executable_is_a_warning_with_the_fix() {
        let bin = bin();
        let plain = bin.path().join("plain");
        for (command, path) in [
            (plain.display().to_string(), String::new()),
            ("plain".to_owned(), bin.path().display().to_string()),
        ] {
            let mut config = base();
            set(&mut config, "/agents/bot/command", json!([command]));
            set(&mut config, "/agents/bot/env", json!({ "PATH": path }));
            let problems = check(&config);
            assert_eq!(problems.len(), 1, "{problems:#?}");
            assert_eq!(problems[0].severity, Severity::Warning);
            assert_eq!(
                problems[0].message,
                format!(
                    "{p} is not executable, so runs will fail; run chmod +x {p}",
                    p = plain.display()
                )
            );
        }
    }

    #[test]
    fn a_readable_config_or_secret_file_holding_a_secret_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        let warnings = |path: &Path| load(path, Lookup::Own).unwrap().warnings;

        let inline = write("inline.json", &base().to_string(), 0o644);
        let problems = warnings(&inline);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].key, "apiKey");
        assert_eq!(
            problems[0].message,
            format!(
                "{p} can be read by other users (mode 0644) and holds the API key; run chmod 600 {p}",
                p = inline.display()
            )
        );
        std::fs::set_permissions(&inline, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(warnings(&inline), vec![]);

        // The key in a file of its own: that file's mode is what counts.
        let key = write("key", KEY, 0o640);
        let mut config = base();
        config["apiKey"] = json!({ "file": key });
        let by_file = write("by-file.json", &config.to_string(), 0o644);
        let problems = warnings(&by_file);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].key, "apiKey.file");
        assert!(
            problems[0].message.contains("(mode 0640); run chmod 600"),
            "{problems:#?}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(warnings(&by_file), vec![]);
    }
}
