//! The `Validator`: it collects every problem with its key path, and holds the helpers
//! each area's checks share (a value of the wrong type, an optional key, unknown and
//! missing keys). The walk over the top-level keys is here too, with the server's own
//! keys (`listen`, `maxBodyBytes`, `idleExitSec`); each other area's checks are
//! `impl Validator` blocks in its own file.

use super::agents::{Lookup, agent_hint};
use super::parse::{Problem, Severity};
use super::{Config, DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES};
use crate::session::first_chars;
use serde_json::{Map, Value};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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

/// Walks a parsed config, building the [`Config`] and collecting every problem on the
/// way; a problem does not stop the walk.
pub(super) struct Validator {
    pub(super) problems: Vec<Problem>,
    /// Where agent commands are looked for, unless an agent sets its own `PATH`.
    pub(super) lookup: Lookup,
    /// lowkey's own PATH.
    pub(super) own_path: OsString,
    /// The config file and its mode, when it was read from disk.
    pub(super) file_mode: Option<(PathBuf, u32)>,
    /// The first key whose secret is written in the config itself.
    pub(super) inline_secret: Option<String>,
}

impl Validator {
    pub(super) fn new(lookup: Lookup) -> Validator {
        Validator {
            problems: Vec::new(),
            lookup,
            own_path: std::env::var_os("PATH").unwrap_or_default(),
            file_mode: None,
            inline_secret: None,
        }
    }

    pub(super) fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            severity: Severity::Error,
            key: key.into(),
            message: message.into(),
        });
    }

    pub(super) fn warn(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            severity: Severity::Warning,
            key: key.into(),
            message: message.into(),
        });
    }

    /// Reports a value of the wrong type: what the key needs, and what it got.
    pub(super) fn expected(&mut self, key: &str, needs: &str, got: &Value) {
        self.error(key, format!("expected {needs}; got {}", describe(got)));
    }

    /// The optional key `name` of the object at `key`, read with `get` (such as
    /// `Value::as_u64`): `Some(None)` when it is absent or null, `None` when `get`
    /// refuses it (reported under `key.name`).
    pub(super) fn optional<T>(
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
    pub(super) fn unknown_keys(
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
    pub(super) fn missing(&mut self, key: &str, name: &str, suggested: &[String], fix: &str) {
        if !suggested.iter().any(|s| s == name) {
            self.error(format!("{key}.{name}"), format!("missing; {fix}"));
        }
    }

    pub(super) fn config(&mut self, root: &Value) -> Option<Config> {
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
}

/// The known key closest to a misspelt one, if any is close enough to be what was meant.
pub(super) fn suggest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
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

/// What a JSON value is, for "got ..." in a message (and in a filter's reason).
pub(crate) fn kind(value: &Value) -> &'static str {
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
pub(super) fn describe(value: &Value) -> String {
    const LONGEST: usize = 40;
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(text) => match first_chars(text, LONGEST) {
            (shown, true) => format!("the string {}…", Value::String(shown.to_owned())),
            (_, false) => format!("the string {value}"),
        },
        other => kind(other).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::agents::AGENT_KEYS;
    use super::super::sources::SOURCE_KEYS;
    use super::suggest;

    #[test]
    fn suggests_close_keys() {
        assert_eq!(suggest("projct", SOURCE_KEYS), Some("project"));
        assert_eq!(suggest("timeout_sec", AGENT_KEYS), Some("timeoutSec"));
        assert_eq!(suggest("Agent", SOURCE_KEYS), Some("agent"));
        assert_eq!(suggest("colour", SOURCE_KEYS), None);
    }
}
