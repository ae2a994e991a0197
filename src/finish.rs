//! `onFinish`: after a run's result is in its session, tell the owner what happened, by
//! a command (the reply on its stdin, the outcome in `LOWKEY_*`) and/or a POST signed
//! with Standard Webhooks.
//!
//! Each notification is a task of its own, outside dispatch's slots: it never holds
//! the agent's `maxConcurrent`, delays the session's next run, or touches the event's
//! records. Whatever goes wrong is logged (`FINISH_FAILED`) and that is all. POSTs are
//! tried a few times on connection errors, 429 and 5xx, in memory only: a stop drops
//! what is still in flight after [`DRAIN`], with a line for each, and past
//! [`MAX_IN_FLIGHT`] a new one is dropped at once.

use crate::config::{Config, FinishCommand, FinishPost, OnFinish};
use crate::log::id;
use crate::runner::{self, Kind, Outcome};
use crate::session::{RunStatus, first_chars};
use crate::signature::{self, Scheme};
use crate::store::{Event, Home};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OnceCell, watch};
use tokio::task::JoinSet;

/// How long notifications in flight get at a stop, once the runs have ended: within
/// the units' `TimeoutStopSec=30s` with the request drain (10 s) and the runs' TERM
/// grace (5 s) before it; a command still running then gets TERM, then KILL.
pub const DRAIN: Duration = Duration::from_secs(3);
/// Attempts of one POST, and the wait before each retry.
const RETRIES: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(5)];
/// The most notifications in flight at once: each holds its run's reply (up to 1 MiB),
/// so a flood of runs towards a receiver that hangs must not hold them all.
const MAX_IN_FLIGHT: usize = 64;
/// The most of the reply a POST carries, in characters: chat services cut or refuse
/// long messages, and the whole reply is in the session file.
const POST_REPLY_CHARS: usize = 4000;
/// The most of the reply the summary line (`text`) carries.
const SUMMARY_REPLY_CHARS: usize = 300;

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The notifications in flight, and what they share.
pub struct Notifier {
    home: Home,
    tasks: Mutex<JoinSet<()>>,
    /// Turns true when [`DRAIN`] has run out at a stop.
    stop: watch::Sender<bool>,
    /// Made at the first POST: loading the system's CA certificates costs a start-up
    /// that posts nothing.
    client: OnceCell<Result<HttpsClient, String>>,
}

/// What a notification says: the run's outcome, and where to read more.
struct Notice {
    event: Event,
    status: &'static str,
    exit_code: Option<i32>,
    duration_ms: u64,
    reply: String,
    at: String,
}

impl Notifier {
    pub fn new(home: Home) -> Arc<Notifier> {
        Arc::new(Notifier {
            home,
            tasks: Mutex::new(JoinSet::new()),
            stop: watch::channel(false).0,
            client: OnceCell::new(),
        })
    }

    /// Starts the `onFinish` for a run whose final result is recorded: the event's
    /// source's, else its agent's, as the config is now. It takes the run's event and
    /// outcome, which the run is done with, so the reply is not copied.
    pub fn notify(self: &Arc<Self>, config: &Config, event: Event, outcome: Outcome) {
        let on_finish = config
            .sources
            .get(&event.source)
            .and_then(|s| s.on_finish.clone())
            .or_else(|| config.agents.get(&event.agent)?.on_finish.clone());
        let Some(on_finish) = on_finish else {
            return;
        };
        let mut tasks = self.tasks.lock().expect("notifier lock");
        // Reap the ended ones, so the set holds only what is in flight.
        while tasks.try_join_next().is_some() {}
        if tasks.len() >= MAX_IN_FLIGHT {
            failed(
                &event,
                None,
                None,
                format_args!(
                    "onFinish dropped: {MAX_IN_FLIGHT} notifications are in flight already"
                ),
            );
            return;
        }
        // What a notification keeps of its event: not the body, which may be large.
        let event = Event {
            body: String::new(),
            message: None,
            message_trimmed: false,
            ..event
        };
        let notice = Notice {
            event,
            status: match outcome.status {
                RunStatus::Finished => "ok",
                RunStatus::TimedOut => "timed_out",
                _ => "failed",
            },
            exit_code: outcome.exit_code,
            duration_ms: outcome.duration.as_millis() as u64,
            reply: outcome.reply,
            at: crate::session::now(),
        };
        let this = self.clone();
        tasks.spawn(async move { this.send(&on_finish, &notice).await });
    }

    /// At a stop: waits up to [`DRAIN`] for the notifications in flight, then ends the
    /// rest (each logs that it was dropped).
    pub async fn drain(&self) {
        let mut tasks = std::mem::take(&mut *self.tasks.lock().expect("notifier lock"));
        let all = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN, all).await.is_err() {
            self.stop.send_replace(true);
            while tasks.join_next().await.is_some() {}
        }
    }

    async fn send(&self, on_finish: &OnFinish, notice: &Notice) {
        let command = async {
            if let Some(command) = &on_finish.command {
                self.run(command, notice).await;
            }
        };
        let post = async {
            if let Some(post) = &on_finish.post {
                self.post(post, notice).await;
            }
        };
        tokio::join!(command, post);
    }

    /// Runs the command as an agent runs: the reply on stdin, stderr logged, its
    /// process group ended at its timeout or when a stop's [`DRAIN`] runs out.
    async fn run(&self, command: &FinishCommand, notice: &Notice) {
        let event = &notice.event;
        let mut cmd = runner::command(&command.argv, &self.home, event);
        cmd.env("LOWKEY_STATUS", notice.status)
            .env(
                "LOWKEY_EXIT_CODE",
                notice.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            )
            .env("LOWKEY_DURATION_MS", notice.duration_ms.to_string());
        let outcome = match runner::start(cmd, command.timeout, Kind::OnFinish) {
            Err(e) => runner::spawn_failed(&command.argv[0], &e),
            Ok(started) => {
                runner::wait(started, event, notice.reply.clone(), self.stop.subscribe()).await
            }
        };
        let why = match outcome.status {
            RunStatus::Finished => return,
            RunStatus::Interrupted => "dropped: lowkey is stopping".to_owned(),
            _ => match (&outcome.error, outcome.exit_code, outcome.signal) {
                (Some(error), _, _) => error.clone(),
                (None, Some(code), _) => format!("exited with status {code}"),
                (None, None, Some(signal)) => format!("killed by signal {signal}"),
                (None, None, None) => "failed".to_owned(),
            },
        };
        failed(
            event,
            Some("command"),
            None,
            format_args!("onFinish command {:?} {why}", command.argv[0]),
        );
    }

    /// POSTs the notice, signed, trying again on what may pass: a connection error, a
    /// timeout, 429 or 5xx. Only the URL's host is logged: a chat webhook's path is its
    /// token.
    async fn post(&self, post: &FinishPost, notice: &Notice) {
        let event = &notice.event;
        let host = post.url.host().unwrap_or_default();
        let body = Bytes::from(self.payload(notice).to_string());
        let message_id = format!("msg_{}", ulid::Ulid::new());
        let mut stop = self.stop.subscribe();
        let mut waits = RETRIES.iter();
        let why = loop {
            let attempt = async {
                let client = self.client().await?;
                let request = self.request(post, &body, &message_id)?;
                match tokio::time::timeout(post.timeout, client.request(request)).await {
                    Err(_) => Err(Failure::Again(format!(
                        "got no answer within {}s (timeoutSec)",
                        post.timeout.as_secs()
                    ))),
                    Ok(Err(e)) => Err(Failure::Again(format!("cannot POST: {}", chain(&e)))),
                    Ok(Ok(answer)) => judge(answer.status()),
                }
            };
            let failure = tokio::select! {
                result = attempt => match result {
                    Ok(()) => return,
                    Err(failure) => failure,
                },
                _ = stop.wait_for(|s| *s) => break "dropped: lowkey is stopping".to_owned(),
            };
            match (failure, waits.next()) {
                (Failure::Again(why), Some(wait)) => {
                    tracing::debug!(event_id = %event.id, "onFinish POST to {host}: {why}; trying again in {}s", wait.as_secs());
                    tokio::select! {
                        () = tokio::time::sleep(*wait) => {}
                        _ = stop.wait_for(|s| *s) => break format!("{why}; dropped: lowkey is stopping"),
                    }
                }
                (Failure::Again(why), None) => {
                    break format!("{why}, after {} attempts", RETRIES.len() + 1);
                }
                (Failure::Final(why), _) => break why,
            }
        };
        failed(
            event,
            Some("url"),
            Some(host),
            format_args!("onFinish POST to {host} failed: {why}"),
        );
    }

    async fn client(&self) -> Result<&HttpsClient, Failure> {
        let client = self
            .client
            .get_or_init(|| async {
                // Reading the CA files is blocking work.
                tokio::task::spawn_blocking(|| {
                    let connector = hyper_rustls::HttpsConnectorBuilder::new()
                        .with_native_roots()
                        .map_err(|e| {
                            format!("cannot load the system's CA certificates ({e}); install ca-certificates, or point SSL_CERT_FILE at a bundle")
                        })?
                        .https_or_http()
                        .enable_http1()
                        .build();
                    Ok(Client::builder(TokioExecutor::new()).build(connector))
                })
                .await
                .unwrap_or_else(|e| Err(format!("cannot set up HTTPS: {e}")))
            })
            .await;
        client.as_ref().map_err(|e| Failure::Final(e.clone()))
    }

    /// One attempt's request: signed now, under the notification's one `webhook-id`.
    fn request(
        &self,
        post: &FinishPost,
        body: &Bytes,
        message_id: &str,
    ) -> Result<Request<Full<Bytes>>, Failure> {
        let now = crate::session::unix_now() as i64;
        let signed = signature::sign(&Scheme::StandardWebhooks, &post.key, body, now, message_id)
            .map_err(|e| Failure::Final(format!("cannot sign: {e}")))?;
        let mut request = Request::post(post.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("lowkey/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in signed.headers {
            request = request.header(name, value);
        }
        Ok(request
            .body(Full::new(body.clone()))
            .expect("a request built from valid parts"))
    }

    /// The body of a POST: Standard Webhooks' `type`, `timestamp` and `data`, and a
    /// one-line summary as `text` (Slack, Mattermost, Google Chat) and `content`
    /// (Discord), so a chat's incoming webhook shows something readable as it is.
    fn payload(&self, notice: &Notice) -> serde_json::Value {
        let event = &notice.event;
        let (reply, reply_trimmed) = first_chars(&notice.reply, POST_REPLY_CHARS);
        let summary = {
            let (short, trimmed) = first_chars(&notice.reply, SUMMARY_REPLY_CHARS);
            let status = match notice.status {
                "timed_out" => "timed out",
                other => other,
            };
            let mut text = format!(
                "lowkey: {} run {status} ({} s) on a webhook from {}",
                event.agent,
                notice.duration_ms.div_ceil(100) as f64 / 10.0,
                event.source
            );
            if !short.is_empty() {
                text.push_str(": ");
                text.extend(short.chars().map(|c| if c.is_control() { ' ' } else { c }));
                if trimmed {
                    text.push('…');
                }
            }
            text
        };
        serde_json::json!({
            "type": "run.finished",
            "timestamp": notice.at,
            "text": summary,
            "content": summary,
            "data": {
                "status": notice.status,
                "exitCode": notice.exit_code,
                "durationMs": notice.duration_ms,
                "event": event.id,
                "session": event.session,
                "sessionFile": self.home.session_file(&event.session),
                "source": event.source,
                "agent": event.agent,
                "project": event.project,
                "reply": reply,
                "replyTrimmed": reply_trimmed,
            },
        })
    }
}

/// Why an attempt failed, and whether another may pass.
enum Failure {
    Again(String),
    Final(String),
}

/// 2xx is done; 429 and 5xx may pass later; anything else will not.
fn judge(status: StatusCode) -> Result<(), Failure> {
    let why = || format!("answered HTTP {status}");
    match status.as_u16() {
        200..=299 => Ok(()),
        429 | 500..=599 => Err(Failure::Again(why())),
        _ => Err(Failure::Final(why())),
    }
}

/// An error and its causes, on one line: hyper's own message says little
/// ("client error (Connect)") without the TLS or socket error under it.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// The one warning a notification that did not get through leaves: which of the
/// event's `onFinish` failed (`command` or `url`, unless it never started), and the
/// host a POST went to.
fn failed(event: &Event, on_finish: Option<&str>, host: Option<&str>, why: fmt::Arguments) {
    tracing::warn!(
        message_id = id::FINISH_FAILED,
        webhook_source = %event.source,
        session_id = %event.session,
        event_id = %event.id,
        agent = %event.agent,
        on_finish,
        host,
        "{why}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flood_of_notifications_holds_at_most_so_many_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = serde_json::json!({
            "apiKey": "lk_right",
            "agents": { "bot": {
                "command": ["cat"],
                "onFinish": { "command": ["sleep", "60"] },
            } },
            "webhooks": { "hook": { "project": "/tmp", "agent": "bot" } },
        });
        let config = crate::config::from_json(&config);
        let notifier = Notifier::new(Home::new(dir.path()));
        for n in 0..MAX_IN_FLIGHT + 3 {
            let event = Event {
                session: format!("s{n}"),
                project: "/tmp".into(),
                fresh: true,
                ..crate::store::testing::event(&format!("e{n}"))
            };
            notifier.notify(&config, event, Outcome::new(RunStatus::Finished));
        }
        assert_eq!(notifier.tasks.lock().unwrap().len(), MAX_IN_FLIGHT);
        // As a stop does: the commands would sleep a minute; this ends them.
        notifier.drain().await;
    }

    #[test]
    fn retries_only_what_may_pass_later() {
        let again = |code: u16| {
            matches!(
                judge(StatusCode::from_u16(code).unwrap()),
                Err(Failure::Again(_))
            )
        };
        assert!(judge(StatusCode::OK).is_ok() && judge(StatusCode::NO_CONTENT).is_ok());
        assert!(again(429) && again(500) && again(503));
        assert!(!again(400) && !again(401) && !again(404) && !again(410));
        assert!(matches!(
            judge(StatusCode::NOT_FOUND),
            Err(Failure::Final(_))
        ));
    }
}
