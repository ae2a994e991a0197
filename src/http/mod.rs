//! The HTTP surface: `POST /api/webhook/<source>` and `GET /api/health`.
//!
//! A webhook is checked in this order: method, API key, body size (the body is read
//! whole, for every caller, before anything about the source is answered), source,
//! signature (over the raw bytes), UTF-8, JSON, the source's rate limit. Only then is
//! it stored (where a repeated delivery is caught), and the 202 goes out only after the
//! store says the event is on disk.
//!
//! A caller without valid auth must learn nothing about which sources exist, and
//! `"auth": "signature"` sources read the body before they can tell. So every caller's
//! body is read under the same limits (size, time, drain), and every failed
//! authentication is answered by [`refuse`] at a time fixed from when the body was
//! read: an unknown source, a key source without the key and a signature source with a
//! bad signature give the same status, headers, body and timing.

use crate::activity::Activity;
use crate::config::{Auth, Config, Target};
use crate::limits::{self, AuthThrottle, Failure, SourceLimits};
use crate::log::{Outside, id};
use crate::session;
use crate::signature;
use crate::store::{Event, Ingested, Store};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A body must arrive within this long, so a slow sender cannot hold a request open.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// After an error, up to this much of an unread body is read and dropped before the
/// answer, so the client sees the answer instead of a connection reset.
const DRAIN_BYTES: usize = 4 * 1024 * 1024;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Every 401 has this body, whatever failed, so a caller learns nothing about sources.
const UNAUTHORIZED: &str = "unauthorized: send the box API key as `Authorization: Bearer <apiKey>`";
/// A failed authentication is answered this long after its body was read, plus
/// [`HMAC_NANOS_PER_BYTE`] per body byte and signing secret, so that checking a
/// signature (a signature source) and checking nothing (an unknown source) take the
/// same time as seen from outside.
const REFUSAL_DELAY: Duration = Duration::from_millis(2);
/// A generous bound on the time HMAC-SHA256 takes per byte: 50 MB/s, several times
/// slower than SHA-256 in software without SHA extensions.
const HMAC_NANOS_PER_BYTE: u64 = 20;

/// A refused webhook: the answer the caller gets, and why, for the log alone. Only the
/// answer leaves lowkey, so the reason can be as specific as the owner needs while
/// every unauthenticated caller still gets the same answer.
struct Rejected {
    answer: HttpResponse,
    /// Logged on the "webhook rejected" line. `None` for a failure from a blocked
    /// address: the throttle counts those instead of each getting a line.
    reason: Option<String>,
}

fn rejected(answer: HttpResponse, reason: impl Into<String>) -> Rejected {
    Rejected {
        answer,
        reason: Some(reason.into()),
    }
}

/// A refusal whose answer says why in the words the log uses.
fn refusal(status: StatusCode, message: String) -> Rejected {
    rejected(json_error(status, &message), message)
}

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

/// Who is on the other end of a connection: its address, `None` for unix-socket peers.
/// Logs show it as `ip:port`, or `unix`.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<SocketAddr>);

impl Peer {
    fn ip(&self) -> Option<IpAddr> {
        self.0.map(|addr| addr.ip().to_canonical())
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("unix"),
        }
    }
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
    let path = req.uri().path().to_owned();
    if path == "/api/health" {
        return match *req.method() {
            Method::GET | Method::HEAD => {
                json(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
            }
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
            json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "webhooks must be sent with POST",
            ),
            header::ALLOW,
            "POST",
        );
    }
    let started = Instant::now();
    match webhook(app, req, &source, peer).await {
        Ok(res) => res,
        Err(Rejected { answer, reason }) => {
            if let Some(reason) = reason {
                let reason = Outside(&reason);
                tracing::warn!(
                    message_id = id::REJECTED,
                    webhook_source = %Outside(&source),
                    http_status = answer.status().as_u16(),
                    reason = %reason,
                    remote_addr = %peer,
                    duration_ms = started.elapsed().as_millis() as u64,
                    "webhook rejected: {reason}"
                );
            }
            answer
        }
    }
}

/// The client a request came from: the socket's peer, or, behind a proxy listed in
/// `trustedProxies`, the address that proxy says it forwarded for.
fn client_ip(config: &Config, peer: Option<IpAddr>, headers: &http::HeaderMap) -> Option<IpAddr> {
    let peer = peer?;
    if !config.trusted_proxies.contains(&peer) {
        return Some(peer);
    }
    // The rightmost address no trusted proxy vouches for is the client.
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !config.trusted_proxies.contains(ip))
            .unwrap_or(peer),
    )
}

fn unauthorized() -> HttpResponse {
    with_header(
        json_error(StatusCode::UNAUTHORIZED, UNAUTHORIZED),
        header::WWW_AUTHENTICATE,
        "Bearer realm=\"lowkey\"",
    )
}

fn too_many(message: &str, wait: Duration) -> HttpResponse {
    let mut res = json_error(StatusCode::TOO_MANY_REQUESTS, message);
    res.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(limits::retry_after(wait)),
    );
    res
}

/// A request that failed authentication, for [`refuse`].
struct Refused<'a> {
    client: Option<IpAddr>,
    source_name: &'a str,
    /// When its body had been read.
    read_at: Instant,
    len: usize,
}

/// Answers a failed authentication: the one 401, or 429 once the caller's address is
/// blocked (see [`AuthThrottle`]). Whatever failed, the answer goes out at the same
/// time after the body was read: [`REFUSAL_DELAY`] plus a bound on checking a signature
/// of this length with every configured secret, or [`limits::TARPIT_DELAY`] for a
/// blocked address while the tarpit has room. `reason`, what failed, goes only to the
/// log.
async fn refuse(app: &App, config: &Config, refused: Refused<'_>, reason: String) -> Rejected {
    let mut answer_at = refusal_time(config, &refused);
    let Some(ip) = refused.client else {
        tokio::time::sleep_until(answer_at.into()).await;
        return rejected(unauthorized(), reason);
    };
    let failed = app.auth_throttle.failed(ip);
    if let Some(count) = failed.unreported {
        tracing::warn!(
            remote_addr = %ip,
            failures = count,
            "{count} more failed authentications from this blocked address, answered 429"
        );
    }
    match failed.failure {
        Failure::Refused { blocks } => {
            if blocks {
                tracing::warn!(
                    remote_addr = %ip,
                    "too many failed authentications from this address; its failures now get 429, counted instead of logged, until it stops failing for 60 s; valid requests from it still pass"
                );
            }
            tokio::time::sleep_until(answer_at.into()).await;
            rejected(unauthorized(), reason)
        }
        Failure::Blocked { wait, held } => {
            tracing::debug!(
                remote_addr = %ip,
                webhook_source = %Outside(refused.source_name),
                reason = %Outside(&reason),
                tarpit = held.is_some(),
                "failed authentication from a blocked address"
            );
            if held.is_some() {
                answer_at = answer_at.max(refused.read_at + limits::TARPIT_DELAY);
            }
            tokio::time::sleep_until(answer_at.into()).await;
            drop(held);
            Rejected {
                answer: too_many(
                    "too many failed authentications from this address; retry later",
                    wait,
                ),
                reason: None,
            }
        }
    }
}

/// When [`refuse`] answers, unless the tarpit holds the answer longer: as late as
/// checking a signature over the body with the most secrets any source has could end.
fn refusal_time(config: &Config, refused: &Refused<'_>) -> Instant {
    let secrets = config
        .sources
        .values()
        .filter_map(|s| s.verify.as_ref())
        .map(|v| v.keys.len() as u64)
        .max()
        .unwrap_or(0);
    let hmac_bound = Duration::from_nanos(refused.len as u64 * secrets * HMAC_NANOS_PER_BYTE);
    refused.read_at + REFUSAL_DELAY + hmac_bound
}

/// The answer to a body that could not be read whole within the limits; the same for
/// every caller, authenticated or not.
fn body_error(config: &Config, e: BodyError) -> Rejected {
    let limit = config.max_body_bytes;
    match e {
        BodyError::TooLarge { declared } => rejected(
            json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "body is larger than maxBodyBytes ({limit} bytes); send less, or raise maxBodyBytes in the config"
                ),
            ),
            match declared {
                Some(length) => format!("Content-Length {length} is over maxBodyBytes ({limit})"),
                None => format!("body is over maxBodyBytes ({limit})"),
            },
        ),
        BodyError::TimedOut => rejected(
            json_error(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time",
            ),
            format!(
                "body timed out: not whole after {} s",
                BODY_TIMEOUT.as_secs()
            ),
        ),
        BodyError::Read(e) => refusal(
            StatusCode::BAD_REQUEST,
            format!("cannot read the body: {e}"),
        ),
    }
}

async fn webhook(
    app: &App,
    req: Request<Incoming>,
    source_name: &str,
    peer: Peer,
) -> Result<HttpResponse, Rejected> {
    // One config for the whole request, even if a reload swaps it meanwhile.
    let config = app.config.load_full();
    let (parts, body) = req.into_parts();
    if config.unusable {
        // The sender retries later; by then the owner may have fixed the file.
        // The reason stays in the log: it names sources, which callers must not learn.
        drain(body).await;
        return Err(rejected(
            with_header(
                json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "lowkey's config is unusable, so nothing is accepted until the box owner fixes it and reloads; retry later",
                ),
                header::RETRY_AFTER,
                "60",
            ),
            "the config is unusable; fix it and reload",
        ));
    }
    let client = client_ip(&config, peer.ip(), &parts.headers);
    let key = authorized(&config, &parts.headers);
    let key_ok = key.is_ok();
    // The source this caller may still reach: with the key any source, without it only
    // one on `"auth": "signature"`, whose signature is checked once the body is read.
    let reachable = config
        .sources
        .get(source_name)
        .filter(|s| key_ok || s.auth == Auth::Signature);

    // Every caller's body is read under the same limits before anything else is
    // decided, so an unauthenticated caller gets the same 413 or 408 wherever it posts.
    // Only a body something may still accept is kept; the rest is counted and dropped.
    let (bytes, len) = match read_body(
        &parts.headers,
        body,
        config.max_body_bytes,
        reachable.is_some(),
    )
    .await
    {
        Ok(read) => read,
        Err(e) => return Err(body_error(&config, e)),
    };
    let read_at = Instant::now();
    let refused = Refused {
        client,
        source_name,
        read_at,
        len,
    };
    let Some(source) = reachable else {
        let reason = match key {
            Ok(()) => {
                return Err(rejected(
                    json_error(
                        StatusCode::NOT_FOUND,
                        &format!(
                            "no source \"{source_name}\" in the config; add it under `webhooks` and reload"
                        ),
                    ),
                    "unknown source",
                ));
            }
            Err(key) if config.sources.contains_key(source_name) => key.to_owned(),
            Err(key) => format!("unknown source, and {key}"),
        };
        return Err(refuse(app, &config, refused, reason).await);
    };

    // The signature is checked over the raw bytes, before anything is parsed, so an
    // unauthenticated caller learns nothing about what the body should look like.
    if let Some(verify) = &source.verify {
        let checked = signature::verify(
            &verify.scheme,
            &verify.keys,
            &parts.headers,
            &bytes,
            session::unix_now() as i64,
            verify.tolerance_sec,
        );
        if let Err(e) = checked {
            return Err(refuse(app, &config, refused, format!("signature: {e}")).await);
        }
    }

    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                format!(
                    "body is not UTF-8: invalid byte at offset {}; send a UTF-8 JSON body",
                    e.utf8_error().valid_up_to()
                ),
            ));
        }
    };
    // The parsed tree is built only for sources that read the payload (Slack and Stripe
    // ids, target templates); every other body is only checked.
    let reads_payload = matches!(source.target, Target::Template(_))
        || source
            .verify
            .as_ref()
            .is_some_and(|v| v.scheme.kind().reads_body());
    let parsed = if reads_payload {
        serde_json::from_str::<serde_json::Value>(&text)
    } else {
        serde_json::from_str::<serde::de::IgnoredAny>(&text).map(|_| serde_json::Value::Null)
    };
    let payload = match parsed {
        Ok(v) => v,
        Err(e) => {
            return Err(refusal(
                StatusCode::BAD_REQUEST,
                format!("body is not valid JSON: {e}"),
            ));
        }
    };

    if let Some(answer) = source
        .verify
        .as_ref()
        .and_then(|v| signature::challenge(&v.scheme, &payload))
    {
        return Ok(json(StatusCode::OK, &answer));
    }

    if let Some(limit) = &source.rate_limit {
        if let Err(wait) = app.source_limits.take(source_name, limit) {
            return Err(rejected(
                too_many(
                    &format!("source \"{source_name}\" is over its rateLimit; retry later"),
                    wait,
                ),
                format!(
                    "rate limit: over rateLimit ({}/s, burst {})",
                    limit.per_second, limit.burst
                ),
            ));
        }
    }

    let delivery = source
        .verify
        .as_ref()
        .and_then(|v| signature::delivery_id(&v.scheme, &parts.headers, &payload))
        .or_else(|| {
            parts
                .headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        });
    let event_id = app.new_id();
    let session_id = match &source.target {
        Target::NewSession => app.new_id(),
        Target::Session(id) => id.clone(),
        Target::Template(template) => template.render(&payload).unwrap_or_else(|| {
            tracing::info!(webhook_source = %source_name, "the payload does not fill the target template; starting a new session");
            app.new_id()
        }),
    };
    let size = text.len();
    let event = Event {
        id: event_id.clone(),
        session: session_id.clone(),
        source: source_name.to_owned(),
        agent: source.agent.clone(),
        project: source.project.clone(),
        at: session::now(),
        body: text,
        dedup_until: delivery
            .as_ref()
            .map(|_| session::unix_now() + source.dedup.as_secs()),
        delivery,
    };
    match app.store.ingest(event).await {
        Ok(Ingested::Accepted) => {}
        Ok(Ingested::Duplicate { session, event }) => {
            tracing::info!(
                webhook_source = %source_name,
                session_id = %session,
                event_id = %event,
                http_status = 200u16,
                remote_addr = %peer,
                "duplicate delivery; answered with the first one's ids"
            );
            return Ok(json(
                StatusCode::OK,
                &serde_json::json!({ "session": session, "event": event, "duplicate": true }),
            ));
        }
        Err(e) => {
            tracing::error!(webhook_source = %source_name, error = %e, "cannot store the event; answering 503");
            return Err(rejected(
                with_header(
                    json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "cannot store the event right now; retry later",
                    ),
                    header::RETRY_AFTER,
                    "30",
                ),
                "cannot store the event",
            ));
        }
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
        remote_addr = %peer,
        bytes = size,
        "webhook accepted"
    );
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "session": session_id, "event": event_id }),
    ))
}

/// Checks `Authorization: Bearer <apiKey>` in constant time. The error says what was
/// wrong, for the log; it never holds what was sent.
fn authorized(config: &Config, headers: &http::HeaderMap) -> Result<(), &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err("no Authorization header");
    };
    let value = value.as_bytes();
    let token = match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &value[7..],
        _ => return Err("Authorization is not a Bearer token"),
    };
    if config.api_key.matches(token.trim_ascii()) {
        Ok(())
    } else {
        Err("wrong API key")
    }
}

enum BodyError {
    /// With the `Content-Length` that declared it too large, if that is how it was.
    TooLarge {
        declared: Option<u64>,
    },
    TimedOut,
    Read(hyper::Error),
}

/// Reads the whole body, refusing past `limit` bytes (declared or sent) and after
/// [`BODY_TIMEOUT`]; a body over the limit is drained (boundedly) so the 413 reaches the
/// client. Returns the bytes and their count; unless `keep`, the bytes are only counted
/// and dropped.
async fn read_body(
    headers: &http::HeaderMap,
    mut body: Incoming,
    limit: usize,
    keep: bool,
) -> Result<(Vec<u8>, usize), BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        drain(body).await;
        return Err(BodyError::TooLarge { declared });
    }
    let read = async {
        let mut buf = Vec::new();
        let mut len = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(BodyError::Read)?;
            if let Ok(data) = frame.into_data() {
                len += data.len();
                if len > limit {
                    return Err(BodyError::TooLarge { declared: None });
                }
                if keep {
                    buf.extend_from_slice(&data);
                }
            }
        }
        Ok((buf, len))
    };
    let result = tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .unwrap_or(Err(BodyError::TimedOut));
    if matches!(result, Err(BodyError::TooLarge { .. })) {
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
    use std::path::Path;

    /// A config with the API key `lk_right`, and sources with `secrets` each.
    fn config(secrets: &[usize]) -> Config {
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
        crate::config::parse(
            Path::new("config.json"),
            &text.to_string(),
            crate::config::Lookup::Own,
        )
        .map(|loaded| loaded.config)
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_refusal_waits_as_long_as_checking_the_body_with_the_most_secrets_could() {
        let read_at = Instant::now();
        let refused = Refused {
            client: None,
            source_name: "nosuch",
            read_at,
            len: 1000,
        };
        let bound = |secrets: u64| Duration::from_nanos(1000 * secrets * HMAC_NANOS_PER_BYTE);
        assert_eq!(
            refusal_time(&config(&[]), &refused),
            read_at + REFUSAL_DELAY
        );
        assert_eq!(
            refusal_time(&config(&[1, 3, 2]), &refused),
            read_at + REFUSAL_DELAY + bound(3)
        );
    }

    #[test]
    fn only_a_bearer_token_with_the_api_key_is_authorized() {
        let config = config(&[]);
        let check = |value: Option<&str>| {
            let mut headers = http::HeaderMap::new();
            if let Some(value) = value {
                headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            }
            authorized(&config, &headers)
        };
        assert_eq!(check(Some("Bearer lk_right")), Ok(()));
        // The scheme is case-insensitive and space around the key does not count.
        assert_eq!(check(Some("bEARER  lk_right ")), Ok(()));
        assert_eq!(check(None), Err("no Authorization header"));
        assert_eq!(check(Some("Bearer lk_wrong")), Err("wrong API key"));
        // Another scheme of the same length, with the right key, is not a bearer token.
        let other = Err("Authorization is not a Bearer token");
        assert_eq!(check(Some("Apikey lk_right")), other);
        assert_eq!(check(Some("Bearer")), other);
    }
}
