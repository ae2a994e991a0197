//! Refusing a webhook: every stage of the pipeline that says no returns a [`Reject`],
//! and [`Reject::answer`] is the one place a refusal is answered.
//!
//! A caller without valid auth must learn nothing about which sources exist, and
//! `"auth": "signature"` sources read the body before they can tell. So every failed
//! authentication is one variant, [`Reject::Unauthenticated`], whose only answers are
//! the one 401 (or 429 once its address is blocked), at a time fixed from when its body
//! was read: an unknown source, a key source without the key and a signature source
//! with a bad signature give the same status, headers, body and timing. Why it failed
//! goes only to the log.

use super::auth::{self, Failure};
use super::body::{BODY_TIMEOUT, BodyError, Read, Unread};
use super::webhook::Webhook;
use super::{HttpResponse, json_error, with_header};
use crate::config::{Config, RateLimit};
use crate::log::{Outside, id};
use crate::signature::VerifyError;
use http::StatusCode;
use http::header::{self, HeaderValue};
use std::fmt;
use std::time::{Duration, Instant};

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

/// Why a webhook is refused. Its [`fmt::Display`] is the reason, for the log alone:
/// only the answer leaves lowkey, so the reason can be as specific as the owner needs.
/// Building one formats nothing; that waits until it is answered.
pub(super) enum Reject {
    /// The config is unusable: the sender retries later, when the owner may have fixed
    /// the file. The reason stays in the log: it names sources, which callers must not
    /// learn.
    Unusable,
    /// The body could not be read whole within the limits; the same answer for every
    /// caller, authenticated or not.
    Body(BodyError),
    /// A failed authentication, once its body was read.
    Unauthenticated {
        failed: Unauthenticated,
        read: Read,
    },
    /// A caller with the key named a source the config does not have.
    UnknownSource,
    /// The source is there but `enabled: false`: 410, on which Standard Webhooks
    /// senders stop sending.
    Disabled,
    NotUtf8 {
        valid_up_to: usize,
    },
    /// Neither JSON nor a form; why not, as each.
    Unreadable {
        json: serde_json::Error,
        form: crate::form::FormError,
    },
    OverRateLimit {
        wait: Duration,
        limit: RateLimit,
    },
    /// The store could not take the event; it logged why.
    NotStored,
}

/// What failed authentication, for the log.
pub(super) enum Unauthenticated {
    /// The source exists and takes the API key, which did not pass.
    Key(&'static str),
    /// There is no such source, and the API key did not pass either.
    UnknownSource(&'static str),
    Signature(VerifyError),
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reject::Unusable => f.write_str("the config is unusable; fix it and reload"),
            Reject::Body(BodyError::TooLarge {
                declared: Some(length),
                limit,
            }) => write!(f, "Content-Length {length} is over maxBodyBytes ({limit})"),
            Reject::Body(BodyError::TooLarge {
                declared: None,
                limit,
            }) => write!(f, "body is over maxBodyBytes ({limit})"),
            Reject::Body(BodyError::TimedOut) => write!(
                f,
                "body timed out: not whole after {} s",
                BODY_TIMEOUT.as_secs()
            ),
            Reject::Body(BodyError::Read(e)) => write!(f, "cannot read the body: {e}"),
            Reject::Unauthenticated { failed, .. } => match failed {
                Unauthenticated::Key(key) => f.write_str(key),
                Unauthenticated::UnknownSource(key) => write!(f, "unknown source, and {key}"),
                Unauthenticated::Signature(e) => write!(f, "signature: {e}"),
            },
            Reject::UnknownSource => f.write_str("unknown source"),
            Reject::Disabled => f.write_str("source disabled (enabled: false)"),
            Reject::NotUtf8 { valid_up_to } => write!(
                f,
                "body is not UTF-8: invalid byte at offset {valid_up_to}; send UTF-8 JSON or a form"
            ),
            Reject::Unreadable { json, form } => write!(
                f,
                "body is neither JSON nor a form: as JSON, {json}; as a form (application/x-www-form-urlencoded), {form}"
            ),
            Reject::OverRateLimit { limit, .. } => write!(
                f,
                "rate limit: over rateLimit ({}/s, burst {})",
                limit.per_second, limit.burst
            ),
            Reject::NotStored => f.write_str("cannot store the event"),
        }
    }
}

impl Reject {
    /// Answers the refused `webhook`: drains what is left of its body, answers a failed
    /// authentication through [`refuse`], and logs the reason on the "webhook rejected"
    /// line (except for a failure from a blocked address: the throttle counts those
    /// instead of each getting a line).
    pub(super) async fn answer(self, webhook: &Webhook<'_>, body: Unread) -> HttpResponse {
        body.drain().await;
        let source = webhook.source;
        let answer = match &self {
            Reject::Unauthenticated { read, .. } => match refuse(webhook, *read, &self).await {
                None => unauthorized(),
                Some(wait) => {
                    return too_many(
                        "too many failed authentications from this address; retry later",
                        wait,
                    );
                }
            },
            Reject::Unusable => with_header(
                json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "lowkey's config is unusable, so nothing is accepted until the box owner fixes it and reloads; retry later",
                ),
                header::RETRY_AFTER,
                "60",
            ),
            Reject::Body(BodyError::TooLarge { limit, .. }) => json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "body is larger than maxBodyBytes ({limit} bytes); send less, or raise maxBodyBytes in the config"
                ),
            ),
            Reject::Body(BodyError::TimedOut) => json_error(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time",
            ),
            Reject::UnknownSource => json_error(
                StatusCode::NOT_FOUND,
                &format!(
                    "no source \"{source}\" in the config; add it under `webhooks` and reload"
                ),
            ),
            Reject::Disabled => json_error(
                StatusCode::GONE,
                &format!(
                    "source \"{source}\" is disabled; set webhooks.{source}.enabled to true and reload to take its webhooks again"
                ),
            ),
            // These answers say why in the words the log uses.
            Reject::Body(BodyError::Read(_))
            | Reject::NotUtf8 { .. }
            | Reject::Unreadable { .. } => json_error(StatusCode::BAD_REQUEST, &self.to_string()),
            Reject::OverRateLimit { wait, .. } => too_many(
                &format!("source \"{source}\" is over its rateLimit; retry later"),
                *wait,
            ),
            Reject::NotStored => with_header(
                json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot store the event right now; retry later",
                ),
                header::RETRY_AFTER,
                "30",
            ),
        };
        let reason = Outside(&self);
        match webhook.rerun {
            None => tracing::warn!(
                message_id = id::REJECTED,
                webhook_source = %Outside(webhook.source),
                http_status = answer.status().as_u16(),
                reason = %reason,
                remote_addr = %webhook.peer,
                duration_ms = webhook.started.elapsed().as_millis() as u64,
                "webhook rejected: {reason}"
            ),
            Some(event) => tracing::warn!(
                message_id = id::REJECTED,
                event_id = %Outside(event),
                http_status = answer.status().as_u16(),
                reason = %reason,
                remote_addr = %webhook.peer,
                duration_ms = webhook.started.elapsed().as_millis() as u64,
                "rerun request rejected: {reason}"
            ),
        }
        answer
    }
}

/// Counts a failed authentication and waits until it may be answered: with the one 401
/// (`None`), or 429 with `Retry-After: wait` once the caller's address is blocked
/// (`Some(wait)`; see [`auth::AuthThrottle`]). Whatever failed, the answer goes out at
/// the same time after the body was read: [`refusal_time`], or
/// [`auth::TARPIT_DELAY`] for a blocked address while the tarpit has room.
async fn refuse(webhook: &Webhook<'_>, read: Read, reason: &Reject) -> Option<Duration> {
    let mut answer_at = refusal_time(webhook.config, read);
    let Some(ip) = auth::client_ip(webhook.config, webhook.peer, webhook.headers) else {
        tokio::time::sleep_until(answer_at.into()).await;
        return None;
    };
    let failed = webhook.app.auth_throttle.failed(ip);
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
            None
        }
        Failure::Blocked { wait, held } => {
            tracing::debug!(
                remote_addr = %ip,
                webhook_source = %Outside(webhook.source),
                reason = %Outside(reason),
                tarpit = held.is_some(),
                "failed authentication from a blocked address"
            );
            if held.is_some() {
                answer_at = answer_at.max(read.at + auth::TARPIT_DELAY);
            }
            tokio::time::sleep_until(answer_at.into()).await;
            drop(held);
            Some(wait)
        }
    }
}

/// When [`refuse`] answers, unless the tarpit holds the answer longer: as late as
/// checking a signature over the body with the most secrets any source has could end.
fn refusal_time(config: &Config, read: Read) -> Instant {
    let secrets = config
        .sources
        .values()
        .filter_map(|s| s.verify.as_ref())
        .map(|v| v.keys.len() as u64)
        .max()
        .unwrap_or(0);
    let hmac_bound = Duration::from_nanos(read.len as u64 * secrets * HMAC_NANOS_PER_BYTE);
    read.at + REFUSAL_DELAY + hmac_bound
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
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after(wait)));
    res
}

/// `Retry-After` in whole seconds, at least 1.
fn retry_after(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_waits_as_long_as_checking_the_body_with_the_most_secrets_could() {
        let read_at = Instant::now();
        let read = Read {
            at: read_at,
            len: 1000,
        };
        let config = super::super::test_config;
        let bound = |secrets: u64| Duration::from_nanos(1000 * secrets * HMAC_NANOS_PER_BYTE);
        assert_eq!(refusal_time(&config(&[]), read), read_at + REFUSAL_DELAY);
        assert_eq!(
            refusal_time(&config(&[1, 3, 2]), read),
            read_at + REFUSAL_DELAY + bound(3)
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_never_zero() {
        assert_eq!(retry_after(Duration::ZERO), 1);
        assert_eq!(retry_after(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after(auth::BLOCK_FOR), 60);
    }
}
