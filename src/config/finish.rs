//! `onFinish`, an agent's or a source's: a command (checked like an agent's) and/or a
//! URL to POST to, signed with Standard Webhooks under its `whsec_` secret.

use super::validate::{Validator, describe};
use super::{
    DEFAULT_FINISH_COMMAND_SEC, DEFAULT_FINISH_POST_SEC, FinishCommand, FinishPost, OnFinish,
};
use crate::signature::{Scheme, key_from_secret};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub(super) const ON_FINISH_KEYS: &[&str] = &["command", "url", "secret", "timeoutSec"];

/// What `onFinish` holds, for messages about its type.
const NEEDS: &str = "an object such as {\"command\": [\"/usr/local/bin/notify\"]} or {\"url\": \"https://...\", \"secret\": \"whsec_...\"}";

impl Validator {
    /// The `onFinish` of `owner` (`agents.bot`, `webhooks.stripe`): `Some(None)` when it
    /// has none, `None` when it is wrong (every problem reported).
    pub(super) fn on_finish(
        &mut self,
        owner: &str,
        value: Option<&Value>,
    ) -> Option<Option<Arc<OnFinish>>> {
        let key = &format!("{owner}.onFinish");
        let fields = match value {
            None | Some(Value::Null) => return Some(None),
            Some(Value::Object(fields)) => fields,
            Some(other) => {
                self.expected(key, NEEDS, other);
                return None;
            }
        };
        let suggested = self.unknown_keys(key, fields, ON_FINISH_KEYS);
        let timeout = self.optional(
            key,
            fields,
            "timeoutSec",
            "a whole number of seconds, such as 30",
            Value::as_u64,
        )?;
        if timeout == Some(0) {
            self.error(format!("{key}.timeoutSec"), "must be at least 1 second");
            return None;
        }
        let command = match fields.get("command") {
            None | Some(Value::Null) => Some(None),
            Some(value) => self
                .argv(
                    &format!("{key}.command"),
                    value,
                    "an argv, a list of strings such as [\"/usr/local/bin/notify\"]",
                )
                .filter(|argv| {
                    // It runs with lowkey's environment, not the agent's `env`.
                    self.runnable(
                        key,
                        argv,
                        &BTreeMap::new(),
                        "an argv, e.g. [\"/usr/local/bin/notify\"]",
                    )
                })
                .map(|argv| {
                    Some(FinishCommand {
                        argv,
                        timeout: Duration::from_secs(timeout.unwrap_or(DEFAULT_FINISH_COMMAND_SEC)),
                    })
                }),
        };
        let post = self.finish_post(key, fields, timeout);
        let (command, post) = (command?, post?);
        // A misspelt `command` or `url` was reported with its suggestion already.
        let misspelt = suggested.iter().any(|s| s == "command" || s == "url");
        if command.is_none() && post.is_none() {
            if !misspelt {
                self.error(
                    key,
                    "has neither `command` nor `url`; give a command to run, or a URL to POST to with its `secret`, or remove `onFinish`",
                );
            }
            return None;
        }
        Some(Some(Arc::new(OnFinish { command, post })))
    }

    /// The `url` and `secret` of the `onFinish` at `key`: both or neither.
    fn finish_post(
        &mut self,
        key: &str,
        fields: &serde_json::Map<String, Value>,
        timeout: Option<u64>,
    ) -> Option<Option<FinishPost>> {
        let secret = fields.get("secret").filter(|v| !v.is_null());
        let url = match fields.get("url") {
            None | Some(Value::Null) => {
                if secret.is_some() {
                    self.error(
                        format!("{key}.secret"),
                        "is only used to sign the POST to `url`; add the `url`, or remove the secret",
                    );
                    return None;
                }
                return Some(None);
            }
            Some(Value::String(url)) => self.finish_url(&format!("{key}.url"), url),
            Some(other) => {
                self.expected(
                    &format!("{key}.url"),
                    "an http:// or https:// URL, such as \"https://ntfy.sh/your-topic\"",
                    other,
                );
                None
            }
        };
        let key_bytes = match secret {
            None => {
                self.error(
                    format!("{key}.secret"),
                    "missing; a `url` needs the `whsec_` secret its POSTs are signed with (Standard Webhooks), e.g. {\"file\": \"/etc/lowkey/notify.secret\"}",
                );
                None
            }
            Some(value) => {
                let key = format!("{key}.secret");
                self.secret(&key, value).and_then(|secret| {
                    key_from_secret(&Scheme::StandardWebhooks, secret.expose())
                        .map_err(|e| self.error(&key, e.to_string()))
                        .ok()
                })
            }
        };
        Some(Some(FinishPost {
            url: url?,
            key: key_bytes?,
            timeout: Duration::from_secs(timeout.unwrap_or(DEFAULT_FINISH_POST_SEC)),
        }))
    }

    /// An `onFinish` URL: http or https, with a host. Only its scheme is quoted back: the
    /// rest of a chat webhook's URL is its token.
    fn finish_url(&mut self, key: &str, text: &str) -> Option<http::Uri> {
        let fix = "give the whole address to POST to, such as \"https://ntfy.sh/your-topic\"";
        let not_a_url = format!("is not an http:// or https:// URL; {fix}");
        let Ok(url) = text.parse::<http::Uri>() else {
            self.error(key, not_a_url);
            return None;
        };
        match (url.scheme_str(), url.host()) {
            (Some("http" | "https"), Some(host)) if !host.is_empty() => Some(url),
            (Some(scheme @ ("http" | "https")), _) => {
                self.error(key, format!("has no host after {scheme}://; {fix}"));
                None
            }
            (Some(scheme), _) => {
                self.error(
                    key,
                    format!(
                        "uses {}, which lowkey cannot POST to; use http:// or https://",
                        describe(&Value::from(format!("{scheme}://")))
                    ),
                );
                None
            }
            (None, _) => {
                self.error(key, not_a_url);
                None
            }
        }
    }
}
