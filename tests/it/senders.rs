//! Real senders for the signature, dedup, template and limit tests: each scheme's
//! official signing library (tests/signers) running as a child process, the deliveries
//! it signs, and a daemon with one source per scheme and auth mode.
//!
//! The signers are the libraries senders themselves use (`standardwebhooks`, `stripe`,
//! `slack-sdk`, `twilio`, `@octokit/webhooks-methods`, `@shopify/shopify-api`), so a
//! test passing means lowkey agrees with them, not merely with its own `sign`. `tests/setup` installs them (the Python
//! ones into the virtual environment `tests/signers/.venv`).

use crate::support::*;
use base64::Engine as _;
use serde_json::{Map, Value, json};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// The signing schemes lowkey verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    StandardWebhooks,
    Stripe,
    Github,
    Slack,
    Shopify,
    /// The generic `hmac-sha256`, configured as `X-Body-Signature: v1=<base64>`.
    Hmac,
    /// Twilio signs the URL as well as the body, so it is not one of the zoo's (`ALL`):
    /// its deliveries are made by [`sign_twilio`] (forms.rs).
    Twilio,
}

impl Scheme {
    /// The schemes of the zoo's sources, whose deliveries need only a body and a secret.
    pub const ALL: [Scheme; 6] = [
        Scheme::StandardWebhooks,
        Scheme::Stripe,
        Scheme::Github,
        Scheme::Slack,
        Scheme::Shopify,
        Scheme::Hmac,
    ];

    /// Every scheme with a signer.
    const SIGNED: [Scheme; 7] = [
        Scheme::StandardWebhooks,
        Scheme::Stripe,
        Scheme::Github,
        Scheme::Slack,
        Scheme::Shopify,
        Scheme::Hmac,
        Scheme::Twilio,
    ];

    /// The `verify` value in the config.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::StandardWebhooks => "standard-webhooks",
            Scheme::Stripe => "stripe",
            Scheme::Github => "github",
            Scheme::Slack => "slack",
            Scheme::Shopify => "shopify",
            Scheme::Hmac => "hmac-sha256",
            Scheme::Twilio => "twilio",
        }
    }

    pub fn has_timestamp(self) -> bool {
        matches!(
            self,
            Scheme::StandardWebhooks | Scheme::Stripe | Scheme::Slack
        )
    }

    /// The headers the signature depends on; a request missing any one must fail.
    pub fn signed_headers(self) -> &'static [&'static str] {
        match self {
            Scheme::StandardWebhooks => &["webhook-id", "webhook-timestamp", "webhook-signature"],
            Scheme::Stripe => &["Stripe-Signature"],
            Scheme::Github => &["X-Hub-Signature-256"],
            Scheme::Slack => &["X-Slack-Request-Timestamp", "X-Slack-Signature"],
            Scheme::Shopify => &["X-Shopify-Hmac-Sha256"],
            Scheme::Hmac => &["X-Body-Signature"],
            Scheme::Twilio => &["X-Twilio-Signature"],
        }
    }

    /// Secret number `n`, shaped like the ones the sender hands out.
    pub fn secret(self, n: u8) -> String {
        match self {
            Scheme::StandardWebhooks => format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode([n; 24])
            ),
            // Stripe's secrets start with `whsec_` too, but are used as they are.
            Scheme::Stripe => format!("whsec_stripe_{n}_4eC39HqLyjWDarjtT1zdp7dc"),
            Scheme::Github => format!("It's a Secret to Everybody #{n}"),
            Scheme::Slack => format!("8f742231b10e8888abcd99yyyzzz85a{n}"),
            Scheme::Shopify => format!("shpss_4f1d6a2c9b7e{n}"),
            Scheme::Hmac => format!("uptime-monitor-secret-{n}"),
            // An Auth Token: 32 hex digits.
            Scheme::Twilio => format!("9f3c2b1a8e7d6c5b4a39281706f5e4d{n}"),
        }
    }

    /// A body this sender would send for delivery `id`. Stripe and Slack carry the id in
    /// the body, the others in a header. Every body holds `"amount":100` (for tampering;
    /// Twilio's form, `amount=100`) and non-ASCII text, so signatures are checked over
    /// UTF-8 bytes.
    pub fn body(self, id: &str) -> String {
        match self {
            Scheme::Stripe => format!(
                r#"{{"id":"{id}","object":"event","type":"invoice.paid","data":{{"object":{{"amount":100,"customer_name":"Zoë ☕"}}}}}}"#
            ),
            Scheme::Slack => format!(
                r#"{{"type":"event_callback","event_id":"{id}","team_id":"T061EG9R6","event":{{"type":"app_mention","text":"<@U0LAN0Z89> ☕","amount":100}}}}"#
            ),
            Scheme::Github => format!(
                r#"{{"action":"opened","number":7,"pull_request":{{"number":7,"title":"Fix the café ☕ page"}},"amount":100,"delivery":"{id}"}}"#
            ),
            Scheme::StandardWebhooks => format!(
                r#"{{"type":"invoice.paid","data":{{"amount":100,"customer":"Zoë ☕"}},"delivery":"{id}"}}"#
            ),
            Scheme::Shopify => format!(
                r#"{{"id":820982911946154508,"email":"zoe@example.com","note":"Zoë ☕","amount":100,"delivery":"{id}"}}"#
            ),
            Scheme::Hmac => {
                format!(r#"{{"monitor":"api ☕","status":"down","amount":100,"delivery":"{id}"}}"#)
            }
            Scheme::Twilio => format!(
                "AccountSid=AC0123456789abcdef0123456789abcdef&Body=Zo%C3%AB+%E2%98%95&From=%2B15005550006&To=%2B15005550001&MessageSid=SM{id}&amount=100"
            ),
        }
    }

    /// The program and script (in tests/signers) that sign for this scheme.
    fn signer(self) -> (String, &'static str) {
        let python = python();
        match self {
            Scheme::StandardWebhooks => (python, "standardwebhooks_sign.py"),
            Scheme::Stripe => (python, "stripe_sign.py"),
            Scheme::Github => ("node".into(), "github_sign.mjs"),
            Scheme::Slack => (python, "slack_sign.py"),
            Scheme::Shopify => ("node".into(), "shopify_sign.mjs"),
            Scheme::Hmac => (python, "hmac_sign.py"),
            Scheme::Twilio => (python, "twilio_sign.py"),
        }
    }

    fn index(self) -> usize {
        Scheme::SIGNED.iter().position(|s| *s == self).unwrap()
    }
}

/// One signer script, kept running for the whole test binary: it answers one JSON line
/// per request, so the suite pays for one interpreter per scheme instead of one per
/// signature. It exits when the test binary does (its stdin closes).
struct Signer {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

fn start_signer(scheme: Scheme) -> Signer {
    let (program, script) = scheme.signer();
    let mut child = Command::new(&program)
        .arg(format!("{SIGNERS_DIR}/{script}"))
        .current_dir(SIGNERS_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} {script}: {e}; {INSTALL}"));
    Signer {
        stdin: child.stdin.take().unwrap(),
        stdout: BufReader::new(child.stdout.take().unwrap()),
        _child: child,
    }
}

pub const SIGNERS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/signers");

const INSTALL: &str = "install the signing libraries with `tests/setup` (as root; it puts the Python ones in tests/signers/.venv and runs `npm ci` in tests/signers)";

/// The Python the signing libraries were installed for: `LOWKEY_TEST_PYTHON` when set,
/// else the virtual environment `tests/setup` makes, else `python3` from PATH (for
/// libraries installed by other means).
pub fn python() -> String {
    if let Ok(python) = std::env::var("LOWKEY_TEST_PYTHON") {
        return python;
    }
    let venv = format!("{SIGNERS_DIR}/.venv/bin/python3");
    if std::path::Path::new(&venv).exists() {
        venv
    } else {
        "python3".into()
    }
}

/// The headers `scheme`'s official library attaches when it signs `body` with `secret`
/// at `timestamp` as delivery `id`, in the order it gives them.
pub fn sign(
    scheme: Scheme,
    secret: &str,
    body: &str,
    timestamp: i64,
    id: &str,
) -> Vec<(String, String)> {
    let request = json!({ "secret": secret, "body": body, "timestamp": timestamp, "id": id });
    ask_signer(scheme, &request)
}

/// The headers Twilio's `RequestValidator` makes for `body` posted to `url` (its query
/// included, Twilio's `bodySHA256` for a JSON body too) with Auth Token `secret`.
pub fn sign_twilio(secret: &str, body: &str, url: &str, id: &str) -> Vec<(String, String)> {
    let request = json!({ "secret": secret, "body": body, "url": url, "id": id });
    ask_signer(Scheme::Twilio, &request)
}

/// One request to `scheme`'s signer, and its answer: the headers to send.
fn ask_signer(scheme: Scheme, request: &Value) -> Vec<(String, String)> {
    static SIGNERS: [OnceLock<Mutex<Signer>>; 7] = [const { OnceLock::new() }; 7];
    let signer = SIGNERS[scheme.index()].get_or_init(|| Mutex::new(start_signer(scheme)));
    // A test that panicked mid-request poisons the lock; the protocol is still in step
    // because every request writes and reads exactly one line.
    let mut signer = signer.lock().unwrap_or_else(|e| e.into_inner());
    writeln!(signer.stdin, "{request}")
        .and_then(|()| signer.stdin.flush())
        .unwrap_or_else(|e| panic!("{} signer is gone ({e}); {INSTALL}", scheme.name()));
    let mut line = String::new();
    let n = signer.stdout.read_line(&mut line).unwrap();
    assert!(
        n > 0,
        "{} signer exited (its error is above); {INSTALL}",
        scheme.name()
    );
    let headers: Map<String, Value> = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("{} signer printed {line:?}: {e}", scheme.name()));
    headers
        .into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap().to_owned()))
        .collect()
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A delivery id no other delivery in this test binary has.
pub fn unique_id(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A client address of its own (IPv6 documentation range, only ever a header value),
/// sent as `X-Forwarded-For` through the trusted loopback proxy.
pub fn fresh_client() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!("2001:db8::{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A request as a sender makes it: headers and the exact body text.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Delivery {
    pub fn unsigned(body: impl Into<String>) -> Delivery {
        Delivery {
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into(),
        }
    }

    /// `body` signed by `scheme`'s official library.
    pub fn signed(
        scheme: Scheme,
        secret: &str,
        body: impl Into<String>,
        timestamp: i64,
        id: &str,
    ) -> Delivery {
        let mut d = Delivery::unsigned(body);
        d.headers
            .extend(sign(scheme, secret, &d.body, timestamp, id));
        d
    }

    /// A fresh delivery of scheme's usual body, signed now with secret number `n`.
    pub fn fresh(scheme: Scheme, n: u8) -> Delivery {
        let id = unique_id("msg");
        Delivery::signed(scheme, &scheme.secret(n), scheme.body(&id), now(), &id)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name` (replacing any value it had).
    pub fn with(self, name: &str, value: &str) -> Delivery {
        let mut d = self.without(name);
        d.headers.push((name.to_owned(), value.to_owned()));
        d
    }

    pub fn without(mut self, name: &str) -> Delivery {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    /// With `Authorization: Bearer <the box key>`.
    pub fn with_key(self) -> Delivery {
        self.with("Authorization", &format!("Bearer {KEY}"))
    }

    pub fn with_body(mut self, body: impl Into<String>) -> Delivery {
        self.body = body.into();
        self
    }

    /// As if from `client`, forwarded by the trusted proxy on 127.0.0.1.
    pub fn forwarded_for(self, client: &str) -> Delivery {
        self.with("X-Forwarded-For", client)
    }
}

/// Who must authenticate at a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// The default: the API key, plus the signature when a secret is configured.
    Key,
    /// `"auth": "signature"`: only the signature.
    Signature,
}

/// The zoo's source for a scheme and auth mode: `stripe-key`, `stripe-sig`, ...
pub fn source_name(scheme: Scheme, auth: Auth) -> String {
    let suffix = match auth {
        Auth::Key => "key",
        Auth::Signature => "sig",
    };
    format!("{}-{suffix}", scheme.name())
}

/// The zoo's source with no signature: the API key alone.
pub const PLAIN: &str = "plain";

/// The URL a Twilio source is reached at from outside (`publicUrl`): a proxy in front
/// of lowkey maps it to `/api/webhook/<source>`.
pub const TWILIO_URL: &str = "https://hooks.example.com/twilio";

/// A source's config for `scheme` with the given secret (a string, a list for
/// `secrets`, or a `{"file"|"credential": ...}` object).
pub fn source_config(scheme: Scheme, auth: Auth, project: &str, secret: Value) -> Value {
    let mut source = json!({ "project": project, "verify": scheme.name() });
    let key = if secret.is_array() {
        "secrets"
    } else {
        "secret"
    };
    source[key] = secret;
    if auth == Auth::Signature {
        source["auth"] = json!("signature");
    }
    if scheme == Scheme::Twilio {
        source["publicUrl"] = json!(TWILIO_URL);
    }
    if scheme == Scheme::Hmac {
        source["signatureHeader"] = json!("X-Body-Signature");
        source["signatureEncoding"] = json!("base64");
        source["signaturePrefix"] = json!("v1=");
    }
    source
}

/// A home whose config has an agent that answers `ok`, the source `plain`, and for
/// every scheme a `-key` and a `-sig` source signed with the scheme's secret 1. The
/// loopback proxy is trusted, so tests can speak as many clients (`X-Forwarded-For`).
pub struct Zoo {
    pub home: Home,
    pub daemon: Daemon,
}

impl Zoo {
    pub fn start() -> Zoo {
        Zoo::start_with(|_, _| {}, &[])
    }

    /// Lets `edit` change the config (given the home, for paths) and sets `env` for the
    /// daemon, then starts it.
    pub fn start_with(edit: impl FnOnce(&mut Value, &Home), env: &[(&str, &str)]) -> Zoo {
        let home = Zoo::home(edit);
        let daemon = serve_with_env(&home, env);
        Zoo { home, daemon }
    }

    /// The zoo's home, with its config written (changed by `edit`), and no daemon.
    pub fn home(edit: impl FnOnce(&mut Value, &Home)) -> Home {
        let home = Home::new();
        let agent = home.script("agent.sh", "cat >/dev/null; echo ok");
        let project = home.project("proj");
        let mut sources = Map::new();
        sources.insert(PLAIN.into(), json!({ "project": project }));
        for scheme in Scheme::ALL {
            for auth in [Auth::Key, Auth::Signature] {
                sources.insert(
                    source_name(scheme, auth),
                    source_config(scheme, auth, &project, json!(scheme.secret(1))),
                );
            }
        }
        let mut config = json!({
            "apiKey": KEY,
            "defaultAgent": "bot",
            "agents": { "bot": { "command": [agent], "timeoutSec": 30, "maxConcurrent": 4 } },
            "trustedProxies": ["127.0.0.1"],
            "webhooks": sources,
        });
        edit(&mut config, &home);
        home.write_config(&config);
        home
    }

    /// Posts `delivery` to `source`. Unless it names a client, it comes from a fresh
    /// one, so tests that fail authentication on purpose never trip the per-address
    /// throttle (limits.rs tests that throttle).
    pub fn post(&self, source: &str, delivery: &Delivery) -> Answer {
        deliver(&self.daemon, source, delivery)
    }

    /// Posts and expects 202; returns (session, event).
    #[track_caller]
    pub fn accept(&self, source: &str, delivery: &Delivery) -> (String, String) {
        let answer = self.post(source, delivery);
        assert_eq!(
            answer.status, 202,
            "{source} refused {delivery:#?}: {answer:?}"
        );
        let v = answer.json();
        (
            v["session"].as_str().unwrap().to_owned(),
            v["event"].as_str().unwrap().to_owned(),
        )
    }

    /// The 401 a caller without the key gets: every 401 must look exactly like it.
    #[track_caller]
    pub fn no_key_401(&self) -> Answer {
        let answer = self.post(PLAIN, &Delivery::unsigned(r#"{"a":1}"#));
        assert_eq!(answer.status, 401, "{answer:?}");
        answer
    }

    /// Kills the daemon with SIGKILL and starts a new one on the same home.
    pub fn kill_and_restart(&mut self) {
        self.daemon.signal(nix::sys::signal::Signal::SIGKILL);
        assert_eq!(self.daemon.wait_exit(), None, "SIGKILL ends lowkey");
        self.daemon = self.home.serve();
    }
}

/// `lowkey serve` on a free port with extra environment.
pub fn serve_with_env(home: &Home, env: &[(&str, &str)]) -> Daemon {
    let mut cmd = home.command(&["serve", "--listen", "127.0.0.1:0"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Daemon::spawn(cmd)
}

/// Posts `delivery` to `source`, from a fresh forwarded client unless it names one.
pub fn deliver(daemon: &Daemon, source: &str, delivery: &Delivery) -> Answer {
    deliver_at(daemon, &format!("/api/webhook/{source}"), delivery)
}

/// Posts `delivery` to `path` (with a query, say), as [`deliver`] does.
pub fn deliver_at(daemon: &Daemon, path: &str, delivery: &Delivery) -> Answer {
    let client = fresh_client();
    let mut headers: Vec<(&str, &str)> = delivery
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    if delivery.header("X-Forwarded-For").is_none() {
        headers.push(("X-Forwarded-For", &client));
    }
    request(
        "POST",
        &daemon.url(path),
        &headers,
        delivery.body.as_bytes(),
    )
}

/// Asserts that `answer` is the standard 401: same status, body and challenge as `reference`.
#[track_caller]
pub fn assert_same_401(answer: &Answer, reference: &Answer, what: &str) {
    assert_eq!(answer.status, 401, "{what}: {answer:?}");
    assert_eq!(answer.body, reference.body, "{what}: the 401 body differs");
    assert_eq!(
        answer.header("WWW-Authenticate"),
        reference.header("WWW-Authenticate"),
        "{what}: the 401 challenge differs"
    );
}

/// The events of a session's user messages, in order.
pub fn user_events(home: &Home, session: &str) -> Vec<String> {
    home.session(session)
        .iter()
        .filter(|l| l["type"] == "message" && l["role"] == "user")
        .map(|l| l["event"].as_str().unwrap().to_owned())
        .collect()
}

/// How many times a run of `event` started, by the session file.
pub fn runs_started(home: &Home, session: &str, event: &str) -> usize {
    home.session(session)
        .iter()
        .filter(|l| l["type"] == "run" && l["event"] == event && l["status"] == "started")
        .count()
}
