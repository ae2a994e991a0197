//! `webhooks`: each source's project, agent, target, message, dedup window, rate limit,
//! `enabled` and `onFinish` (checked in `finish.rs`). Its `auth`, `verify` and secrets
//! are checked in `security.rs`, its `events`, `eventHeader` and `match` in `filters.rs`.

use super::agents::agent_hint;
use super::security::scheme_names;
use super::validate::Validator;
use super::{
    DEFAULT_DEDUP_HOURS, MAX_SOURCE_LEN, NEW_SESSION, OnFinish, RateLimit, Source, Target,
    Template, home_dir,
};
use crate::session::{MAX_SESSION_ID_LEN, is_path_safe_id};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Ten years; more would overflow the time a delivery id is remembered until.
const MAX_DEDUP_HOURS: u64 = 10 * 365 * 24;
pub(super) const SOURCE_KEYS: &[&str] = &[
    "project",
    "agent",
    "target",
    "message",
    "auth",
    "verify",
    "secret",
    "secrets",
    "toleranceSec",
    "dedupHours",
    "rateLimit",
    "enabled",
    "events",
    "eventHeader",
    "match",
    "onFinish",
    "signatureHeader",
    "signatureEncoding",
    "signaturePrefix",
    "publicUrl",
];
const RATE_LIMIT_KEYS: &[&str] = &["perSecond", "burst"];

/// A source's keys, each of the type it needs; the secrets are read by `security`.
pub(super) struct RawSource {
    project: Option<String>,
    agent: Option<String>,
    target: Option<String>,
    message: Option<String>,
    pub(super) auth: Option<String>,
    pub(super) verify: Option<String>,
    pub(super) tolerance_sec: Option<u64>,
    dedup_hours: Option<u64>,
    rate_limit: Option<RawRateLimit>,
    enabled: Option<bool>,
    on_finish: Option<Arc<OnFinish>>,
    pub(super) signature_header: Option<String>,
    pub(super) signature_encoding: Option<String>,
    pub(super) signature_prefix: Option<String>,
    pub(super) public_url: Option<String>,
}

struct RawRateLimit {
    per_second: f64,
    burst: Option<f64>,
}

impl Validator {
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
        let message = text(
            self,
            "message",
            "the agent's message, such as \"Stripe: {{type}} for {{data.object.amount}}\"",
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
        let public_url = text(
            self,
            "publicUrl",
            "the URL the sender posts to, such as \"https://hooks.example.com/api/webhook/twilio\"",
        );
        let tolerance_sec = number(
            self,
            "toleranceSec",
            "a whole number of seconds, such as 300",
        );
        let dedup_hours = number(self, "dedupHours", "a whole number of hours, such as 72");
        let rate_limit = self.raw_rate_limit(&format!("{key}.rateLimit"), fields.get("rateLimit"));
        let enabled = self.optional(key, fields, "enabled", "true or false", Value::as_bool);
        let on_finish = self.on_finish(key, fields.get("onFinish"));
        Some(RawSource {
            project: project?,
            agent: agent?,
            target: target?,
            message: message?,
            auth: auth?,
            verify: verify?,
            tolerance_sec: tolerance_sec?,
            dedup_hours: dedup_hours?,
            rate_limit: rate_limit?,
            enabled: enabled?,
            on_finish: on_finish?,
            signature_header: signature_header?,
            signature_encoding: signature_encoding?,
            signature_prefix: signature_prefix?,
            public_url: public_url?,
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

    pub(super) fn sources(
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
            let message = match raw.message.as_deref() {
                None => Some(None),
                Some(text) if text.trim().is_empty() => {
                    self.error(
                        format!("{key}.message"),
                        "an empty message; remove the key for the default one (\"Webhook from <source>: <payload>\")",
                    );
                    None
                }
                Some(text) => match Template::message(text) {
                    Ok(template) => Some(Some(template)),
                    Err(e) => {
                        self.error(format!("{key}.message"), e);
                        None
                    }
                },
            };
            let security = self.security(&key, fields, &raw, name);
            let filters = self.filters(&key, fields, raw.verify.as_deref());
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
                Some(message),
                Some((auth, verify)),
                Some(dedup),
                Some(rate_limit),
                Some(filters),
            ) = (
                ok, project, agent, target, message, security, dedup, rate_limit, filters,
            ) {
                sources.insert(
                    name.clone(),
                    Source {
                        project,
                        agent,
                        target,
                        message,
                        auth,
                        verify,
                        dedup,
                        rate_limit,
                        enabled: raw.enabled.unwrap_or(true),
                        filters,
                        on_finish: raw.on_finish,
                    },
                );
            }
        }
        sources
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
