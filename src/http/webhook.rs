//! `POST /api/webhook/<source>`: the pipeline a webhook passes through, one stage per
//! check, in the auth order of ARCHITECTURE.md. Each stage passes the webhook on or
//! refuses it with a [`Reject`], and [`accept`] chains them; no stage answers a refusal
//! itself (see `reject.rs`).

use super::auth::{self, Peer};
use super::body::{Body, Read, Unread};
use super::reject::{Reject, Unauthenticated};
use super::{App, HttpResponse, json};
use crate::config::{Auth, Config, Source, Target};
use crate::form;
use crate::log::{Outside, id};
use crate::session;
use crate::signature;
use crate::store::{Event, Ingested};
use http::request::Parts;
use http::{HeaderMap, StatusCode};
use std::time::Instant;

/// A webhook on its way through the pipeline: what its stages, and its refusal, read.
pub(super) struct Webhook<'a> {
    pub(super) app: &'a App,
    /// One config for the whole request, even if a reload swaps it meanwhile.
    pub(super) config: &'a Config,
    pub(super) headers: &'a HeaderMap,
    /// The request target's query, which Twilio's signature covers.
    pub(super) query: Option<&'a str>,
    /// The source named in the path, as sent ("" for a rerun request, which names none).
    pub(super) source: &'a str,
    /// The event a rerun request names (`rerun.rs`), which shares the key check, the
    /// 401 and the throttle with webhooks; `None` for a webhook.
    pub(super) rerun: Option<&'a str>,
    pub(super) peer: Peer,
    /// When it was routed here, for the log's `duration_ms`.
    pub(super) started: Instant,
}

/// Answers one webhook to `source`.
pub(super) async fn webhook(
    app: &App,
    parts: &Parts,
    mut body: Unread,
    source: &str,
    peer: Peer,
) -> HttpResponse {
    let started = Instant::now();
    let config = app.config.load_full();
    let webhook = Webhook {
        app,
        config: &config,
        headers: &parts.headers,
        query: parts.uri.query(),
        source,
        rerun: None,
        peer,
        started,
    };
    match accept(&webhook, &mut body).await {
        Ok(answer) => answer,
        Err(reject) => reject.answer(&webhook, body).await,
    }
}

/// The pipeline. Only once every check has passed is the event stored (where a repeated
/// delivery is caught), and the 202 goes out only after the store says it is on disk.
async fn accept(webhook: &Webhook<'_>, body: &mut Unread) -> Result<HttpResponse, Reject> {
    usable(webhook.config)?;
    let (key, reachable) = key(webhook);
    let body = read_body(webhook, body, reachable.is_some()).await?;
    let source = source(webhook, key, reachable, body.read)?;
    signed(webhook, source, &body)?;
    enabled(source)?;
    let text = utf8(body.bytes)?;
    let payload = payload(source, &text)?;
    if let Some(answer) = challenge(source, &payload) {
        return Ok(answer);
    }
    if let Some(answer) = ignored(webhook, source, &payload) {
        return Ok(answer);
    }
    rate_limit(webhook, source)?;
    store(webhook, source, text, &payload).await
}

/// A source with `enabled: false` takes nothing, once its caller proved it may post
/// there (the key or the signature): others learn nothing of it.
fn enabled(source: &Source) -> Result<(), Reject> {
    if source.enabled {
        Ok(())
    } else {
        Err(Reject::Disabled)
    }
}

/// While the config is `unusable`, every webhook gets 503.
fn usable(config: &Config) -> Result<(), Reject> {
    if config.unusable {
        return Err(Reject::Unusable);
    }
    Ok(())
}

/// Checks the API key, and finds the source this caller may still reach: with the key
/// any source, without it only one on `"auth": "signature"`, whose signature is checked
/// once the body is read. Nothing is refused yet: a caller without the key must not
/// learn which sources exist before its body is read.
fn key<'a>(webhook: &Webhook<'a>) -> (Result<(), &'static str>, Option<&'a Source>) {
    let key = auth::authorized(webhook.config, webhook.headers);
    let key_ok = key.is_ok();
    let reachable = webhook
        .config
        .sources
        .get(webhook.source)
        .filter(|s| key_ok || s.auth == Auth::Signature);
    (key, reachable)
}

/// Every caller's body is read under the same limits before anything else is decided,
/// so an unauthenticated caller gets the same 413 or 408 wherever it posts. Only a body
/// something may still accept is kept; the rest is counted and dropped.
async fn read_body(webhook: &Webhook<'_>, body: &mut Unread, keep: bool) -> Result<Body, Reject> {
    body.read(webhook.headers, webhook.config.max_body_bytes, keep)
        .await
        .map_err(Reject::Body)
}

/// The source, once the body is read; a caller that can reach none is refused, with a
/// 404 only if it has the key.
fn source<'a>(
    webhook: &Webhook<'a>,
    key: Result<(), &'static str>,
    reachable: Option<&'a Source>,
    read: Read,
) -> Result<&'a Source, Reject> {
    if let Some(source) = reachable {
        return Ok(source);
    }
    let failed = match key {
        Ok(()) => return Err(Reject::UnknownSource),
        Err(key) if webhook.config.sources.contains_key(webhook.source) => {
            Unauthenticated::Key(key)
        }
        Err(key) => Unauthenticated::UnknownSource(key),
    };
    Err(Reject::Unauthenticated { failed, read })
}

/// The signature is checked over the raw bytes, before anything is parsed, so an
/// unauthenticated caller learns nothing about what the body should look like.
fn signed(webhook: &Webhook<'_>, source: &Source, body: &Body) -> Result<(), Reject> {
    let Some(verify) = &source.verify else {
        return Ok(());
    };
    let request = signature::Request {
        headers: webhook.headers,
        query: webhook.query,
        body: &body.bytes,
    };
    match signature::verify(
        &verify.scheme,
        &verify.keys,
        request,
        session::unix_now() as i64,
        verify.tolerance_sec,
    ) {
        Ok(_) => Ok(()),
        Err(e) => Err(Reject::Unauthenticated {
            failed: Unauthenticated::Signature(e),
            read: body.read,
        }),
    }
}

fn utf8(bytes: Vec<u8>) -> Result<String, Reject> {
    String::from_utf8(bytes).map_err(|e| Reject::NotUtf8 {
        valid_up_to: e.utf8_error().valid_up_to(),
    })
}

/// Checks that the body is JSON or, failing that, a form (`form.rs` has the rule), which
/// is read as a JSON object. The tree is built only for sources that read the payload
/// (Slack and Stripe ids, target and message templates, filters); every other body is
/// only checked.
fn payload(source: &Source, text: &str) -> Result<serde_json::Value, Reject> {
    let reads_payload = matches!(source.target, Target::Template(_))
        || source.message.is_some()
        || source.filters.reads_payload()
        || source
            .verify
            .as_ref()
            .is_some_and(|v| v.scheme.kind().reads_body());
    let json = if reads_payload {
        serde_json::from_str::<serde_json::Value>(text)
    } else {
        serde_json::from_str::<serde::de::IgnoredAny>(text).map(|_| serde_json::Value::Null)
    };
    let json = match json {
        Ok(payload) => return Ok(payload),
        Err(json) => json,
    };
    match form::parse(text) {
        Ok(fields) if reads_payload => Ok(form::to_object(fields)),
        Ok(_) => Ok(serde_json::Value::Null),
        Err(form) => Err(Reject::Unreadable { json, form }),
    }
}

/// A sender's check that the endpoint is its own (Slack's `url_verification`), answered
/// here once its signature has passed; it is not an event.
fn challenge(source: &Source, payload: &serde_json::Value) -> Option<HttpResponse> {
    let verify = source.verify.as_ref()?;
    signature::challenge(&verify.scheme, payload).map(|answer| json(StatusCode::OK, &answer))
}

/// A delivery the source's `events` or `match` leave out: answered 200, so the sender
/// does not retry it, and dropped. It is not stored (no queue record, session line or
/// dedup entry) and does not count against the source's rate; the log line keeps why.
fn ignored(
    webhook: &Webhook<'_>,
    source: &Source,
    payload: &serde_json::Value,
) -> Option<HttpResponse> {
    let reason = source
        .filters
        .admit(webhook.source, webhook.headers, payload)
        .err()?;
    webhook.app.activity.event_ignored();
    tracing::info!(
        message_id = id::IGNORED,
        webhook_source = %webhook.source,
        http_status = 200u16,
        reason = %Outside(&reason),
        remote_addr = %webhook.peer,
        "webhook ignored: {}",
        Outside(&reason)
    );
    Some(json(
        StatusCode::OK,
        &serde_json::json!({ "ignored": true, "reason": reason }),
    ))
}

fn rate_limit(webhook: &Webhook<'_>, source: &Source) -> Result<(), Reject> {
    let Some(limit) = &source.rate_limit else {
        return Ok(());
    };
    webhook
        .app
        .source_limits
        .take(webhook.source, limit)
        .map_err(|wait| Reject::OverRateLimit {
            wait,
            limit: *limit,
        })
}

/// Stores the event and answers 202, or, for a repeated delivery, 200 with the first
/// one's ids.
async fn store(
    webhook: &Webhook<'_>,
    source: &Source,
    text: String,
    payload: &serde_json::Value,
) -> Result<HttpResponse, Reject> {
    let (app, source_name, peer) = (webhook.app, webhook.source, webhook.peer);
    let delivery = source
        .verify
        .as_ref()
        .and_then(|v| signature::delivery_id(&v.scheme, webhook.headers, payload))
        .or_else(|| {
            webhook
                .headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        });
    let event_id = app.new_id();
    // `fresh`: the session is made for this event alone.
    let (session_id, fresh) = match &source.target {
        Target::NewSession => (app.new_id(), true),
        Target::Session(id) => (id.clone(), false),
        Target::Template(template) => match template.render(payload) {
            Some(id) => (id, false),
            None => {
                tracing::info!(webhook_source = %source_name, "the payload does not fill the target template; starting a new session");
                (app.new_id(), true)
            }
        },
    };
    // Cut here, so the queue never holds more of it than the agent will read.
    let (message, message_trimmed) = source
        .message
        .as_ref()
        .and_then(|template| {
            let message = template.fill(payload);
            if message.is_none() {
                tracing::info!(webhook_source = %source_name, "the payload does not fill the message template; the agent gets the default message");
            }
            message
        })
        .map_or((None, false), |text| {
            let (text, trimmed) = session::templated_message(&text);
            (Some(text), trimmed)
        });
    let size = text.len();
    let event = Event {
        id: event_id.clone(),
        session: session_id.clone(),
        source: source_name.to_owned(),
        agent: source.agent.clone(),
        project: source.project.clone(),
        at: session::now(),
        body: text,
        message,
        message_trimmed,
        dedup_until: delivery
            .as_ref()
            .map(|_| session::unix_now() + source.dedup.as_secs()),
        delivery,
        fresh,
        rerun_of: None,
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
            return Err(Reject::NotStored);
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
