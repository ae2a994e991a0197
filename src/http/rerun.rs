//! `POST /api/events/<event>/rerun` (`lowkey rerun`): runs an event's agent again, as a
//! new event in the same session with the same source and body.
//!
//! The new event goes through the same durable ingest as a webhook (`Store::ingest`),
//! so the 202 means it is in the queue, and everything the queue promises (order in
//! its session, recovery, at-least-once) holds for it unchanged. It carries no delivery
//! id, so it is never taken for a duplicate, and `rerunOf` names the original, in the
//! queue and on its message line.
//!
//! The body names the event's session (`{"session": "<id>"}`; the CLI finds it with
//! `view::find_event`), so the daemon reads that one session file, not all of them.
//! The API key is checked as for a webhook, and a caller without it gets the same 401,
//! through the same [`Reject`] and the same throttle, before anything is read.

use super::auth::{self, Peer};
use super::body::Unread;
use super::reject::{Reject, Unauthenticated};
use super::webhook::Webhook;
use super::{App, HttpResponse, json, json_error};
use crate::config::Config;
use crate::log::{Outside, id};
use crate::session::{self, Line, Role};
use crate::store::{Event, Home};
use http::StatusCode;
use http::request::Parts;
use serde::Deserialize;
use std::io;
use std::time::Instant;

/// What the caller sends.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RerunRequest {
    /// The session the event is in.
    session: String,
}

/// Answers one rerun request for `event` (as the path names it).
pub(super) async fn rerun(
    app: &App,
    parts: &Parts,
    mut body: Unread,
    event: &str,
    peer: Peer,
) -> HttpResponse {
    let config = app.config.load_full();
    let request = Webhook {
        app,
        config: &config,
        headers: &parts.headers,
        query: None,
        source: "",
        rerun: Some(event),
        peer,
        started: Instant::now(),
    };
    match accept(&request, &mut body, event).await {
        Ok(answer) => answer,
        Err(Refused::Reject(reject)) => reject.answer(&request, body).await,
        Err(Refused::Answer(status, message)) => {
            tracing::warn!(
                event_id = %Outside(event),
                http_status = status.as_u16(),
                reason = %Outside(&message),
                remote_addr = %peer,
                "rerun refused: {}",
                Outside(&message)
            );
            json_error(status, &message)
        }
    }
}

/// Why a rerun request is refused: as a webhook would be (the config, the body's
/// limits, the key, the store), or, once the caller has the key, for a reason it may
/// read.
enum Refused {
    Reject(Reject),
    Answer(StatusCode, String),
}

impl From<Reject> for Refused {
    fn from(reject: Reject) -> Refused {
        Refused::Reject(reject)
    }
}

async fn accept(
    request: &Webhook<'_>,
    body: &mut Unread,
    event: &str,
) -> Result<HttpResponse, Refused> {
    let config = request.config;
    if config.unusable {
        return Err(Reject::Unusable.into());
    }
    let key = auth::authorized(config, request.headers);
    let body = body
        .read(request.headers, config.max_body_bytes, key.is_ok())
        .await
        .map_err(Reject::Body)?;
    key.map_err(|key| Reject::Unauthenticated {
        failed: Unauthenticated::Key(key),
        read: body.read,
    })?;
    let RerunRequest { session } = serde_json::from_slice(&body.bytes).map_err(|e| {
        Refused::Answer(
            StatusCode::BAD_REQUEST,
            format!(
                "the body must be the JSON object {{\"session\": \"<the event's session id>\"}}: {e}"
            ),
        )
    })?;
    if !session::is_path_safe_id(&session, session::MAX_SESSION_ID_LEN) {
        return Err(Refused::Answer(
            StatusCode::BAD_REQUEST,
            format!("\"{session}\" is not a session id; `lowkey events` prints each event's"),
        ));
    }
    let app = request.app;
    let home = app.store.home().clone();
    let (event_id, session_id) = (event.to_owned(), session.clone());
    let original = tokio::task::spawn_blocking(move || original(&home, &session_id, &event_id))
        .await
        .map_err(|_| Reject::NotStored)?;
    let original = original?;
    let rerun = again(app, config, original)?;
    let (new_id, source, agent) = (rerun.id.clone(), rerun.source.clone(), rerun.agent.clone());
    match app.store.ingest(rerun).await {
        // It has no delivery id, so it is never a duplicate: always accepted.
        Ok(_) => {}
        Err(e) => {
            tracing::error!(event_id = %Outside(event), error = %e, "cannot store the rerun; answering 503");
            return Err(Reject::NotStored.into());
        }
    }
    app.activity.event_accepted(&source);
    tracing::info!(
        message_id = id::RERUN,
        webhook_source = %source,
        session_id = %session,
        event_id = %new_id,
        rerun_of = %event,
        agent = %agent,
        http_status = 202u16,
        remote_addr = %request.peer,
        "rerun accepted"
    );
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "session": session, "event": new_id, "rerunOf": event }),
    ))
}

/// What the session file says of the event to run again.
struct Original {
    event: String,
    session: String,
    source: String,
    body: String,
    /// Its message, when it was not the default one, and whether it was cut.
    message: Option<(String, bool)>,
    /// The agent of its last run.
    agent: String,
    /// The session's project, for a source no longer in the config.
    project: std::path::PathBuf,
}

/// Reads `event`'s message line, and its last run, from `session`'s file, one line at a
/// time (a long-lived session may be large). Only an event whose run has finished is run
/// again: one still waiting or running will run anyway, and a rerun of it could start
/// before it.
fn original(home: &Home, session: &str, event: &str) -> Result<Original, Refused> {
    let not_found = |what: String| {
        Refused::Answer(
            StatusCode::NOT_FOUND,
            format!("{what}; `lowkey events` prints the events and their sessions"),
        )
    };
    let mut header = None;
    let mut message = None;
    let mut last_run = None;
    let read = session::each(&home.session_file(session), |line| match line {
        Line::Session(h) => header = Some(h),
        Line::Message(m) if m.role == Role::User && m.event == event => message = Some(m),
        Line::Run(r) if r.event == event => last_run = Some(r),
        _ => {}
    });
    match read {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(not_found(format!("no session \"{session}\"")));
        }
        Err(e) => {
            return Err(Refused::Answer(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read session \"{session}\": {e}"),
            ));
        }
    }
    let (Some(header), Some(message)) = (header, message) else {
        return Err(not_found(format!(
            "no event \"{event}\" in session \"{session}\" (an event just accepted is filed a moment later)"
        )));
    };
    let Some(run) = last_run.filter(|r| r.status.is_final()) else {
        return Err(Refused::Answer(
            StatusCode::CONFLICT,
            format!(
                "event \"{event}\" has not finished its run yet; rerun it once it has (`lowkey events` shows its outcome)"
            ),
        ));
    };
    let source = message.source.unwrap_or(header.source);
    let Some(body) = message.body else {
        return Err(Refused::Answer(
            StatusCode::CONFLICT,
            format!(
                "event \"{event}\" in session \"{session}\" has no body on its message line to run again"
            ),
        ));
    };
    let (default, _) = session::webhook_message(&source, &body);
    Ok(Original {
        event: event.to_owned(),
        session: session.to_owned(),
        message: (message.text != default).then_some((message.text, message.trimmed)),
        source,
        body,
        agent: run.agent,
        project: header.project,
    })
}

/// The new event that runs `original` again: with the agent that ran it, as the config
/// has it now, in its source's project (a session may be shared by sources with other
/// projects; the session's own is used only for a source no longer in the config).
fn again(app: &App, config: &Config, original: Original) -> Result<Event, Refused> {
    if !config.agents.contains_key(&original.agent) {
        return Err(Refused::Answer(
            StatusCode::CONFLICT,
            format!(
                "agent \"{}\", which runs event \"{}\", is no longer in the config; add it back under `agents` and reload (`systemctl reload`), or send the payload again with `lowkey send`",
                original.agent, original.event
            ),
        ));
    }
    let project = config
        .sources
        .get(&original.source)
        .map_or(original.project, |source| source.project.clone());
    let (message, message_trimmed) = original
        .message
        .map_or((None, false), |(text, trimmed)| (Some(text), trimmed));
    Ok(Event {
        id: app.new_id(),
        session: original.session,
        source: original.source,
        agent: original.agent,
        project,
        at: session::now(),
        body: original.body,
        message,
        message_trimmed,
        delivery: None,
        dedup_until: None,
        // The session is not its alone: it runs in order with the session's others.
        fresh: false,
        rerun_of: Some(original.event),
    })
}
