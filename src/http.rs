//! The HTTP surface: `POST /api/webhook/<source>` and `GET /api/health`.
//!
//! A webhook is checked in this order, cheapest and least revealing first: method, API
//! key, source, body size, UTF-8, JSON. Only then is it stored, and the 202 goes out
//! only after the store says the event is on disk.

use crate::activity::Activity;
use crate::config::Config;
use crate::log::id;
use crate::session;
use crate::store::{Event, Store};
use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How much of the payload goes into the message, in Unicode characters.
pub const MESSAGE_CHARS: usize = 2000;
/// A body must arrive within this long, so a slow sender cannot hold a request open.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// After an error, up to this much of an unread body is read and dropped before the
/// answer, so the client sees the answer instead of a connection reset.
const DRAIN_BYTES: usize = 4 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Every 401 has this body, whatever failed, so a caller learns nothing about sources.
const UNAUTHORIZED: &str = "unauthorized: send the box API key as `Authorization: Bearer <apiKey>`";

/// Shared by every connection.
pub struct App {
    pub config: Arc<ArcSwap<Config>>,
    pub store: Store,
    pub activity: Arc<Activity>,
    ids: Mutex<ulid::Generator>,
}

impl App {
    pub fn new(config: Arc<ArcSwap<Config>>, store: Store, activity: Arc<Activity>) -> App {
        App {
            config,
            store,
            activity,
            ids: Mutex::new(ulid::Generator::new()),
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

/// Builds the agent's message: `Webhook from <source>: <payload>`, with the payload cut
/// after `MESSAGE_CHARS` characters (never inside one) and a visible note when cut.
pub fn message(source: &str, body: &str) -> (String, bool) {
    match body.char_indices().nth(MESSAGE_CHARS) {
        None => (format!("Webhook from {source}: {body}"), false),
        Some((cut, _)) => {
            let total = body.chars().count();
            (
                format!(
                    "Webhook from {source}: {}\n[payload trimmed: showing the first {MESSAGE_CHARS} of {total} characters; the full body is in the session file]",
                    &body[..cut]
                ),
                true,
            )
        }
    }
}

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

fn with_header(mut res: HttpResponse, name: header::HeaderName, value: &'static str) -> HttpResponse {
    res.headers_mut().insert(name, HeaderValue::from_static(value));
    res
}

pub async fn handle(app: &App, req: Request<Incoming>, remote: &str) -> HttpResponse {
    let path = req.uri().path().to_owned();
    if path == "/api/health" {
        return match *req.method() {
            Method::GET | Method::HEAD => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
            _ => {
                drain(req.into_body()).await;
                with_header(
                    json_error(StatusCode::METHOD_NOT_ALLOWED, "use GET on /api/health"),
                    header::ALLOW,
                    "GET, HEAD",
                )
            }
        };
    }
    let Some(source) = path.strip_prefix("/api/webhook/") else {
        drain(req.into_body()).await;
        return json_error(
            StatusCode::NOT_FOUND,
            "no such endpoint; webhooks go to POST /api/webhook/<source>",
        );
    };
    let source = source.to_owned();
    if req.method() != Method::POST {
        drain(req.into_body()).await;
        return with_header(
            json_error(StatusCode::METHOD_NOT_ALLOWED, "webhooks must be sent with POST"),
            header::ALLOW,
            "POST",
        );
    }
    let started = Instant::now();
    let res = webhook(app, req, &source, remote).await;
    let status = res.status().as_u16();
    let duration_ms = started.elapsed().as_millis() as u64;
    if !res.status().is_success() {
        tracing::warn!(
            message_id = id::REJECTED,
            webhook_source = %source,
            http_status = status,
            remote_addr = %remote,
            duration_ms,
            "webhook rejected"
        );
    }
    res
}

async fn webhook(app: &App, req: Request<Incoming>, source_name: &str, remote: &str) -> HttpResponse {
    // One config for the whole request, even if a reload swaps it meanwhile.
    let config = app.config.load_full();
    let (parts, body) = req.into_parts();

    if !authorized(&config, &parts.headers) {
        drain(body).await;
        return with_header(
            json_error(StatusCode::UNAUTHORIZED, UNAUTHORIZED),
            header::WWW_AUTHENTICATE,
            "Bearer realm=\"lowkey\"",
        );
    }
    let Some(source) = config.sources.get(source_name) else {
        drain(body).await;
        return json_error(
            StatusCode::NOT_FOUND,
            &format!("no source \"{source_name}\" in the config; add it under `webhooks` and reload"),
        );
    };

    let too_large = || {
        with_header(
            json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "body is larger than maxBodyBytes ({} bytes); send less, or raise maxBodyBytes in the config",
                    config.max_body_bytes
                ),
            ),
            header::CONNECTION,
            "close",
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.max_body_bytes as u64) {
        drain(body).await;
        return too_large();
    }
    let bytes = match read_body(body, config.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => return too_large(),
        Err(BodyError::TimedOut) => {
            return with_header(
                json_error(StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time"),
                header::CONNECTION,
                "close",
            );
        }
        Err(BodyError::Read(e)) => {
            return json_error(StatusCode::BAD_REQUEST, &format!("cannot read the body: {e}"));
        }
    };
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "body is not UTF-8: invalid byte at offset {}; send a UTF-8 JSON body",
                    e.valid_up_to()
                ),
            );
        }
    };
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return json_error(StatusCode::BAD_REQUEST, &format!("body is not valid JSON: {e}"));
    }

    let event_id = app.new_id();
    let session_id = match &source.target {
        crate::config::Target::NewSession => app.new_id(),
        crate::config::Target::Session(id) => id.clone(),
    };
    let (text_message, trimmed) = message(source_name, text);
    let event = Event {
        id: event_id.clone(),
        session: session_id.clone(),
        source: source_name.to_owned(),
        agent: source.agent.clone(),
        project: source.project.clone(),
        at: session::timestamp(SystemTime::now()),
        text: text_message,
        body: text.to_owned(),
        trimmed,
    };
    if let Err(e) = app.store.ingest(event).await {
        tracing::error!(webhook_source = %source_name, error = %e, "cannot store the event; answering 503");
        return with_header(
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot store the event right now; retry later",
            ),
            header::RETRY_AFTER,
            "30",
        );
    }
    app.activity.event_accepted(source_name);
    tracing::info!(
        message_id = id::ACCEPTED,
        webhook_source = %source_name,
        session_id = %session_id,
        event_id = %event_id,
        agent = %source.agent,
        project = %source.project.display(),
        http_status = 202u16,
        remote_addr = %remote,
        bytes = bytes.len(),
        "webhook accepted"
    );
    json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "session": session_id, "event": event_id }),
    )
}

/// Checks `Authorization: Bearer <apiKey>` in constant time.
fn authorized(config: &Config, headers: &http::HeaderMap) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let token = match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &value[7..],
        _ => return false,
    };
    config.api_key.matches(token.trim_ascii())
}

enum BodyError {
    TooLarge,
    TimedOut,
    Read(hyper::Error),
}

/// Reads the whole body, refusing past `limit` bytes; a body over the limit is drained
/// (boundedly) so the 413 reaches the client.
async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    let read = async {
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(BodyError::Read)?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(BodyError::TooLarge);
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    };
    let result = tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .unwrap_or(Err(BodyError::TimedOut));
    if matches!(result, Err(BodyError::TooLarge)) {
        drain(body).await;
    }
    result
}

/// Reads and drops what is left of a body, within a byte and time bound.
async fn drain(mut body: Incoming) {
    if body.is_end_stream() {
        return;
    }
    let read = async {
        let mut seen = 0;
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen += data.len();
                if seen > DRAIN_BYTES {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, read).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_payload_is_whole() {
        let (text, trimmed) = message("stripe", "{\"a\":1}");
        assert_eq!(text, "Webhook from stripe: {\"a\":1}");
        assert!(!trimmed);
    }

    #[test]
    fn cut_never_splits_a_character() {
        let body = "é".repeat(MESSAGE_CHARS + 1);
        let (text, trimmed) = message("s", &body);
        assert!(trimmed);
        let payload = text.strip_prefix("Webhook from s: ").unwrap();
        let shown: String = payload.chars().take_while(|c| *c == 'é').collect();
        assert_eq!(shown.chars().count(), MESSAGE_CHARS);
        assert!(payload.contains("of 2001 characters"));
    }

    #[test]
    fn exactly_the_limit_is_not_trimmed() {
        let body = "🦀".repeat(MESSAGE_CHARS);
        let (text, trimmed) = message("s", &body);
        assert!(!trimmed);
        assert!(text.ends_with('🦀'));
    }
}
