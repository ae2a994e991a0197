//! The box config, `$LOWKEY_HOME/config.json`: parsed strictly, then validated.
//!
//! Parsing turns the JSON text into values; validation walks every key and collects every
//! problem it finds, each naming its key and the fix, so `lowkey check` can print them all
//! at once instead of making the user fix one error per run.
//!
//! How the files fit:
//! - `types.rs`: what a validated config holds ([`Config`], [`Agent`], [`Source`], ...)
//!   and the defaults of its keys.
//! - `parse.rs`: [`load`] and [`parse()`], the entry points: the file, JSON syntax errors,
//!   and the [`Problem`]s of a config that does not validate ([`ConfigError`]).
//! - `validate.rs`: the `Validator`, which collects the problems, its helpers for keys of
//!   the wrong type, unknown or missing, and the walk over the top-level keys that hands
//!   each area its part:
//!   - `agents.rs`: `agents`: commands (looked up on the PATH they will run with), env,
//!     timeouts and `maxConcurrent`;
//!   - `sources.rs`: `webhooks`: project, agent, target, dedup and rate limit;
//!   - `filters.rs`: a source's `events`, `eventHeader` and `match`, and the filters
//!     that could never match;
//!   - `security.rs`: `apiKey`, placeholders copied from the example, a readable config
//!     file, `trustedProxies`, and a source's `auth`, `verify` and secrets;
//!   - `secrets.rs`: where a secret is read from: inline, a file, or a systemd credential;
//!   - `finish.rs`: `onFinish`, an agent's or a source's: its command and its signed POST.
//! - `template.rs`: `target` templates, which fill a session id from the payload.

mod agents;
mod filters;
mod finish;
mod parse;
mod secrets;
mod security;
mod sources;
mod template;
mod types;
mod validate;

#[cfg(test)]
mod tests;

pub use agents::{Lookup, UNITS_PATH};
#[cfg(test)]
pub(crate) use parse::from_json;
pub use parse::{ConfigError, Loaded, Problem, Severity, load, parse};
pub use template::{FieldPath, Template};
pub use types::{
    Agent, Auth, Config, DEFAULT_DEDUP_HOURS, DEFAULT_FINISH_COMMAND_SEC, DEFAULT_FINISH_POST_SEC,
    DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONCURRENT, DEFAULT_TIMEOUT_SEC,
    DEFAULT_TOLERANCE_SEC, FinishCommand, FinishPost, MAX_SOURCE_LEN, NEW_SESSION, OnFinish,
    RateLimit, Source, Target, Verify,
};
pub(crate) use validate::kind;

use std::path::PathBuf;

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
