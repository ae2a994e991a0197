//! The HTTP surface: `POST /api/webhook/<source>`, `POST /api/events/<event>/rerun`
//! and `GET /api/health`, and the server that accepts their connections.
//!
//! A webhook is checked in this order: method, API key, body size (the body is read
//! whole, for every caller, before anything about the source is answered), source,
//! signature (over the raw bytes), `enabled`, UTF-8, JSON or a form, a sender's
//! challenge, the source's filters, its rate limit. Only then is it stored (where a
//! repeated delivery is caught), and the 202 goes out only after the store says the
//! event is on disk.
//!
//! - `server.rs`: the accept loops, with the connection cap and the graceful stop.
//! - this file: routing, and the JSON answers.
//! - `webhook.rs`: the pipeline a webhook passes through, one function per check.
//! - `rerun.rs`: running an event again (`lowkey rerun`), as a new event of its session.
//! - `reject.rs`: answering a refused webhook (or rerun request). A caller without valid auth learns
//!   nothing about which sources exist: every failed authentication gets the same 401
//!   at the same time after its body was read.
//! - `auth.rs`: the client's address, the API key, the throttle on failing addresses.
//! - `body.rs`: reading a body under the size and time limits, and draining one.
//! - `rate.rs`: the per-source rate limit.

mod auth;
mod body;
mod rate;
mod reject;
mod rerun;
pub mod server;
mod webhook;

pub use auth::Peer;

use crate::activity::Activity;
use crate::config::Config;
use crate::store::Store;
use arc_swap::ArcSwap;
use auth::AuthThrottle;
use body::Unread;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use rate::SourceLimits;
use std::sync::{Arc, Mutex};

/// Shared by every connection.
pub struct App {
    /// While it is `Config::unusable`, every webhook gets 503.
    pub config: Arc<ArcSwap<Config>>,
    pub store: Store,
    pub activity: Arc<Activity>,
    ids: Mutex<ulid::Generator>,
    source_limits: SourceLimits,
    auth_throttle: AuthThrottle,
}

impl App {
    pub fn new(config: Arc<ArcSwap<Config>>, store: Store, activity: Arc<Activity>) -> App {
        App {
            config,
            store,
            activity,
            ids: Mutex::new(ulid::Generator::new()),
            source_limits: SourceLimits::default(),
            auth_throttle: AuthThrottle::default(),
        }
    }

    /// A new time-ordered, path-safe id (a ULID; monotonic within a millisecond).
    fn new_id(&self) -> String {
        let mut ids = self.ids.lock().expect("id generator lock");
        match ids.generate() {
            Ok(id) => id.to_string(),
            // The generator overflows only after 2^80 ids in one millisecond.
            Err(_) => ulid::Ulid::new().to_string(),
        }
    }
}

pub type HttpResponse = Response<Full<Bytes>>;

fn json_error(status: StatusCode, message: &str) -> HttpResponse {
    json(status, &serde_json::json!({ "error": message }))
}

fn json(status: StatusCode, value: &serde_json::Value) -> HttpResponse {
    let mut body = serde_json::to_vec(value).expect("a JSON value serializes");
    body.push(b'\n');
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn with_header(
    mut res: HttpResponse,
    name: header::HeaderName,
    value: &'static str,
) -> HttpResponse {
    res.headers_mut()
        .insert(name, HeaderValue::from_static(value));
    res
}

/// Answers one request. An answer that refuses the request also closes its connection:
/// a refused request may have been framed differently from how lowkey read it (a chunk
/// extension or a header that a proxy in front reads another way, to smuggle a second
/// request in its body), so nothing more is read from that connection.
pub async fn handle(app: &App, req: Request<Incoming>, peer: Peer) -> HttpResponse {
    let mut res = route(app, req, peer).await;
    if !res.status().is_success() {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

async fn route(app: &App, req: Request<Incoming>, peer: Peer) -> HttpResponse {
    let (parts, body) = req.into_parts();
    let body = Unread::new(body);
    let path = parts.uri.path();
    if path == "/api/health" {
        return match parts.method {
            Method::GET | Method::HEAD => {
                json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
            }
            _ => not_allowed(body, "use GET on /api/health", "GET, HEAD").await,
        };
    }
    if let Some(event) = path
        .strip_prefix("/api/events/")
        .and_then(|rest| rest.strip_suffix("/rerun"))
    {
        if parts.method != Method::POST {
            return not_allowed(body, "use POST on /api/events/<event>/rerun", "POST").await;
        }
        return rerun::rerun(app, &parts, body, event, peer).await;
    }
    let Some(source) = path.strip_prefix("/api/webhook/") else {
        body.drain().await;
        return json_error(
            StatusCode::NOT_FOUND,
            "no such endpoint; webhooks go to POST /api/webhook/<source>",
        );
    };
    if parts.method != Method::POST {
        return not_allowed(body, "webhooks must be sent with POST", "POST").await;
    }
    webhook::webhook(app, &parts, body, source, peer).await
}

/// `405`, with the methods the path takes in `Allow`, once the body is drained.
async fn not_allowed(body: Unread, message: &str, allow: &'static str) -> HttpResponse {
    body.drain().await;
    with_header(
        json_error(StatusCode::METHOD_NOT_ALLOWED, message),
        header::ALLOW,
        allow,
    )
}

/// A config with the API key `lk_right`, and sources with `secrets` each.
#[cfg(test)]
fn test_config(secrets: &[usize]) -> Config {
    let mut sources = serde_json::Map::new();
    sources.insert("plain".into(), serde_json::json!({ "project": "/tmp" }));
    for (n, count) in secrets.iter().enumerate() {
        let secrets: Vec<String> = (0..*count).map(|k| format!("secret-{n}-{k}")).collect();
        sources.insert(
            format!("signed-{n}"),
            serde_json::json!({ "project": "/tmp", "verify": "github", "secrets": secrets }),
        );
    }
    let text = serde_json::json!({
        "apiKey": "lk_right",
        "agents": { "bot": { "command": ["/bin/true"] } },
        "defaultAgent": "bot",
        "webhooks": sources,
    });
    crate::config::from_json(&text)
}
