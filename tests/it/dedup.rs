//! Senders retry; lowkey answers a delivery it has already accepted with the first
//! answer's ids and never runs the agent for it twice. Ids come from where each sender
//! puts them: `webhook-id`, `X-GitHub-Delivery`, Stripe's body `id`, Slack's body
//! `event_id`, and `Idempotency-Key` for everyone else.
//!
//! Every source here keeps its events in one session, so a later delivery (the
//! sentinel) runs only after anything accepted before it: once the sentinel's run has
//! ended, a second run of the duplicate would already be in the session.

use crate::campaign::{fill_queue, serve_with_a_small_queue};
use crate::senders::*;
use crate::support::*;
use serde_json::json;
use std::sync::Barrier;

/// A zoo whose every source routes to the session `thread-<source>`.
fn threaded_zoo() -> Zoo {
    Zoo::start_with(
        |config, _| {
            let sources = config["webhooks"].as_object_mut().unwrap();
            for (name, source) in sources.iter_mut() {
                source["target"] = json!(format!("thread-{name}"));
            }
        },
        &[],
    )
}

/// One source's delivery and its retry, as that sender retries.
struct Case {
    source: String,
    scheme: Option<Scheme>,
    auth: Auth,
    first: Delivery,
    retry: Delivery,
}

impl Case {
    /// A delivery to `scheme`'s `auth` source (`None`: the plain source, with an
    /// `Idempotency-Key`) carrying the delivery id `id`.
    fn new(scheme: Option<Scheme>, auth: Auth, id: &str) -> Case {
        let Some(scheme) = scheme else {
            let first = Delivery::unsigned(r#"{"check":"disk","status":"full"}"#)
                .with("Idempotency-Key", id)
                .with_key();
            return Case {
                source: PLAIN.into(),
                scheme: None,
                auth: Auth::Key,
                retry: first.clone(),
                first,
            };
        };
        let body = scheme.body(id);
        let secret = scheme.secret(1);
        let first = Delivery::signed(scheme, &secret, body.clone(), now(), id);
        // A retry is signed again, at its own time; only the delivery id stays.
        let mut retry = Delivery::signed(scheme, &secret, body, now() + 1, id);
        if scheme == Scheme::Slack {
            retry = retry
                .with("X-Slack-Retry-Num", "1")
                .with("X-Slack-Retry-Reason", "http_timeout");
        }
        let (first, retry) = match auth {
            Auth::Key => (first.with_key(), retry.with_key()),
            Auth::Signature => (first, retry),
        };
        Case {
            source: source_name(scheme, auth),
            scheme: Some(scheme),
            auth,
            first,
            retry,
        }
    }

    /// Every place a delivery id comes from, each on its own source.
    fn every_kind() -> Vec<Case> {
        let mut cases: Vec<Case> = Scheme::ALL
            .into_iter()
            .map(|s| Case::new(Some(s), Auth::Signature, &unique_id("dup")))
            .collect();
        cases.push(Case::new(None, Auth::Key, &unique_id("dup")));
        cases
    }

    /// A different delivery to the same source.
    fn sentinel(&self) -> Delivery {
        Case::new(self.scheme, self.auth, &unique_id("sentinel")).first
    }
}

#[track_caller]
fn assert_duplicate(answer: &Answer, session: &str, event: &str, what: &str) {
    assert_eq!(answer.status, 200, "{what}: {answer:?}");
    assert_eq!(
        answer.json(),
        json!({ "session": session, "event": event, "duplicate": true }),
        "{what}"
    );
}

/// Waits for the sentinel's run, then checks the session holds exactly the first
/// delivery and the sentinel, and the first ran once.
#[track_caller]
fn assert_ran_once(zoo: &Zoo, session: &str, event: &str, sentinel: &str) {
    zoo.daemon.wait_run_end(sentinel);
    assert_eq!(
        user_events(&zoo.home, session),
        [event, sentinel],
        "session {session}"
    );
    assert_eq!(
        runs_started(&zoo.home, session, event),
        1,
        "{event}: {:#?}",
        zoo.home.session(session)
    );
}

#[test]
fn a_repeated_delivery_gets_the_first_ids_and_no_second_run() {
    let zoo = threaded_zoo();
    let mut accepted = Vec::new();
    for case in Case::every_kind() {
        let (session, event) = zoo.accept(&case.source, &case.first);
        assert_eq!(session, format!("thread-{}", case.source));
        let answer = zoo.post(&case.source, &case.retry);
        assert_duplicate(&answer, &session, &event, &case.source);
        // The very same request again, too.
        let answer = zoo.post(&case.source, &case.first);
        assert_duplicate(&answer, &session, &event, &case.source);
        let (_, sentinel) = zoo.accept(&case.source, &case.sentinel());
        accepted.push((session, event, sentinel));
    }
    for (session, event, sentinel) in &accepted {
        assert_ran_once(&zoo, session, event, sentinel);
        let finished = zoo
            .daemon
            .count_log(|l| l.contains("run finished") && l.contains(&format!("event_id={event}")));
        assert_eq!(finished, 1, "{event}: {}", zoo.daemon.log_text());
    }
    assert_eq!(
        zoo.daemon.count_log(|l| l.contains("webhook accepted")),
        accepted.len() * 2,
        "only firsts and sentinels are accepted"
    );
}

#[test]
fn delivery_ids_are_remembered_per_source() {
    let zoo = threaded_zoo();
    let id = unique_id("shared");
    let pairs = [
        (
            Some(Scheme::Stripe),
            Auth::Signature,
            Some(Scheme::Stripe),
            Auth::Key,
        ),
        (
            Some(Scheme::Github),
            Auth::Signature,
            Some(Scheme::Github),
            Auth::Key,
        ),
        (
            Some(Scheme::StandardWebhooks),
            Auth::Signature,
            Some(Scheme::Slack),
            Auth::Signature,
        ),
        (None, Auth::Key, Some(Scheme::Hmac), Auth::Signature),
    ];
    for (scheme_a, auth_a, scheme_b, auth_b) in pairs {
        let a = Case::new(scheme_a, auth_a, &id);
        let b = Case::new(scheme_b, auth_b, &id);
        let (session_a, event_a) = zoo.accept(&a.source, &a.first);
        let (session_b, event_b) = zoo.accept(&b.source, &b.first);
        assert_ne!(event_a, event_b);
        assert_duplicate(
            &zoo.post(&a.source, &a.retry),
            &session_a,
            &event_a,
            &a.source,
        );
        assert_duplicate(
            &zoo.post(&b.source, &b.retry),
            &session_b,
            &event_b,
            &b.source,
        );
    }
}

#[test]
fn a_delivery_accepted_before_kill_9_is_a_duplicate_after_restart() {
    let mut zoo = threaded_zoo();
    // Deliveries whose runs are over (only the remembered ids know them), then
    // deliveries the kill comes right after (their runs may still be pending).
    let done = Case::every_kind();
    let mut accepted: Vec<_> = done
        .iter()
        .map(|case| zoo.accept(&case.source, &case.first))
        .collect();
    for (_, event) in &accepted {
        zoo.daemon.wait_run_end(event);
    }
    let pending = Case::every_kind();
    accepted.extend(
        pending
            .iter()
            .map(|case| zoo.accept(&case.source, &case.first)),
    );
    let cases: Vec<&Case> = done.iter().chain(&pending).collect();
    // Twice: the first start-up compacts the queue, the second finds the ids only in
    // what the first one kept.
    for restart in 1..=2 {
        zoo.kill_and_restart();
        for (case, (session, event)) in cases.iter().zip(&accepted) {
            let answer = zoo.post(&case.source, &case.retry);
            let what = format!("{} after restart {restart}", case.source);
            assert_duplicate(&answer, session, event, &what);
        }
    }
    assert_eq!(mode(&zoo.home.root().join("deliveries.jsonl")), 0o600);
    for (case, (session, _)) in done.iter().zip(&accepted) {
        let (_, sentinel) = zoo.accept(&case.source, &case.sentinel());
        zoo.daemon.wait_run_end(&sentinel);
        // The first may have run before a kill, or again after it (interrupted);
        // either way the retries added nothing.
        let firsts: Vec<&str> = accepted
            .iter()
            .filter(|(s, _)| s == session)
            .map(|(_, e)| e.as_str())
            .collect();
        assert_eq!(
            user_events(&zoo.home, session),
            [firsts[0], firsts[1], &sentinel]
        );
    }
}

#[test]
fn a_delivery_is_new_again_once_its_dedup_hours_have_passed() {
    let mut zoo = Zoo::start_with(
        |config, _| config["webhooks"][PLAIN]["dedupHours"] = json!(1),
        &[],
    );
    let case = Case::new(None, Auth::Key, &unique_id("window"));
    let (session, event) = zoo.accept(&case.source, &case.first);
    let answer = zoo.post(&case.source, &case.retry);
    assert_duplicate(&answer, &session, &event, "a retry within the hour");
    zoo.daemon.wait_run_end(&event);
    // An hour and a minute later by lowkey's clock (libfaketime moves it), the id is
    // forgotten: the same delivery is a new event.
    zoo.daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(zoo.daemon.wait_exit(), Some(0), "{}", zoo.daemon.log_text());
    zoo.daemon = serve_with_env(
        &zoo.home,
        &[
            (
                "LD_PRELOAD",
                "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
            ),
            ("FAKETIME", "+61m"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let (_, again) = zoo.accept(&case.source, &case.retry);
    assert_ne!(again, event, "the retry an hour later is a new event");
}

#[test]
fn concurrent_copies_of_a_delivery_are_accepted_once() {
    const COPIES: usize = 16;
    let zoo = threaded_zoo();
    for scheme in [Scheme::Github, Scheme::Stripe] {
        let case = Case::new(Some(scheme), Auth::Signature, &unique_id("race"));
        let start = Barrier::new(COPIES);
        let answers: Vec<Answer> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..COPIES)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        zoo.post(&case.source, &case.first)
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let firsts: Vec<&Answer> = answers.iter().filter(|a| a.status == 202).collect();
        assert_eq!(firsts.len(), 1, "{scheme:?}: {answers:#?}");
        let first = firsts[0].json();
        let (session, event) = (
            first["session"].as_str().unwrap(),
            first["event"].as_str().unwrap(),
        );
        for answer in answers.iter().filter(|a| a.status != 202) {
            assert_duplicate(answer, session, event, &format!("{scheme:?} copy"));
        }
        let (_, sentinel) = zoo.accept(&case.source, &case.sentinel());
        assert_ran_once(&zoo, session, event, &sentinel);
    }
}

/// "Never a 2xx for an event that is not on disk", also for the copies of a delivery
/// that arrive together: when the first copy cannot be stored, no copy may be told it
/// is a duplicate of it (the sender would stop retrying an event lowkey never kept).
#[test]
fn copies_of_a_delivery_get_no_2xx_while_the_queue_cannot_be_written() {
    const COPIES: usize = 16;
    let home = Zoo::home(|_, _| {});
    let daemon = serve_with_a_small_queue(&home);
    let filler = fill_queue(&daemon, &home);
    let case = Case::new(None, Auth::Key, &unique_id("full"));
    let start = Barrier::new(COPIES);
    let answers: Vec<Answer> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..COPIES)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    deliver(&daemon, &case.source, &case.first)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert!(
        answers
            .iter()
            .all(|a| a.status == 503 && a.header("Retry-After").is_some()),
        "with the queue full every copy must get 503, got {statuses:?}: {answers:#?}"
    );
    // Once there is room again, the sender's next retry is a new delivery, not a
    // duplicate of one that was never stored.
    std::fs::remove_file(&filler).unwrap();
    let answer = deliver(&daemon, &case.source, &case.retry);
    assert_eq!(answer.status, 202, "{answer:?}");
}
