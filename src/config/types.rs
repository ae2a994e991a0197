//! What a validated config holds, and the defaults of the keys a config may leave out.

use super::Template;
use crate::filter::Filters;
use crate::secret::Secret;
use crate::signature::Scheme;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7433";
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
pub const DEFAULT_TIMEOUT_SEC: u64 = 1800;
pub const DEFAULT_MAX_CONCURRENT: usize = 1;
/// How long an `onFinish` command may run, and how long each attempt of its POST may take.
pub const DEFAULT_FINISH_COMMAND_SEC: u64 = 30;
pub const DEFAULT_FINISH_POST_SEC: u64 = 10;
pub const DEFAULT_TOLERANCE_SEC: u64 = 300;
pub const DEFAULT_DEDUP_HOURS: u64 = 72;
/// The `target` that makes a fresh session per event.
pub const NEW_SESSION: &str = "new_session";
/// The longest source or agent name, in bytes.
pub const MAX_SOURCE_LEN: usize = 64;

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
    /// What runs after each of its runs, unless the event's source has its own.
    pub on_finish: Option<Arc<OnFinish>>,
}

/// `onFinish`: what tells the owner a run finished. Either or both.
#[derive(Debug)]
pub struct OnFinish {
    pub command: Option<FinishCommand>,
    pub post: Option<FinishPost>,
}

#[derive(Debug)]
pub struct FinishCommand {
    /// argv; run without a shell.
    pub argv: Vec<String>,
    pub timeout: Duration,
}

/// A POST signed with Standard Webhooks.
pub struct FinishPost {
    /// `http` or `https`, with a host. Slack's and Discord's carry their token in the
    /// path, so only its host is ever logged.
    pub url: http::Uri,
    /// The key bytes of the `whsec_` secret.
    pub key: Vec<u8>,
    /// For each attempt.
    pub timeout: Duration,
}

impl fmt::Debug for FinishPost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FinishPost")
            .field("host", &self.url.host())
            .field("key", &"[redacted]")
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug)]
pub struct Source {
    pub project: PathBuf,
    /// Resolved agent name (the source's own, or `defaultAgent`); always in `agents`.
    pub agent: String,
    pub target: Target,
    /// The agent's message, filled from the payload; `None` for the default one.
    pub message: Option<Template>,
    /// Whether the API key is required; a configured signature is always required.
    pub auth: Auth,
    pub verify: Option<Verify>,
    /// How long delivery ids are remembered.
    pub dedup: Duration,
    pub rate_limit: Option<RateLimit>,
    /// `enabled: false` answers 410 and stores nothing.
    pub enabled: bool,
    /// `events` and `match`: a delivery they leave out is answered 200 and dropped.
    pub filters: Filters,
    /// What runs after each run of its events; it wins over the agent's.
    pub on_finish: Option<Arc<OnFinish>>,
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
