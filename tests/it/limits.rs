//! 429s: a source's opt-in `rateLimit`, and the throttle on an address that keeps
//! failing authentication. Every request reaches lowkey from 127.0.0.1; distinct
//! clients are simulated the way a reverse proxy reports them, with `X-Forwarded-For`
//! from a proxy listed in `trustedProxies`.

use crate::senders::*;
use crate::support::*;
use serde_json::json;

#[track_caller]
fn assert_429(answer: &Answer, what: &str) {
    assert_eq!(answer.status, 429, "{what}: {answer:?}");
    let wait: u64 = answer
        .header("Retry-After")
        .unwrap_or_else(|| panic!("{what}: no Retry-After: {answer:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{what}: Retry-After is not whole seconds ({e})"));
    assert!(wait >= 1, "{what}: Retry-After {wait}");
    assert!(answer.json()["error"].is_string(), "{what}: {answer:?}");
}

#[test]
fn a_source_rate_limit_answers_429_once_the_burst_is_used() {
    let zoo = Zoo::start_with(
        |config, home| {
            let project = home.project("proj");
            // A token back every ~17 minutes: nothing refills while the test runs.
            let limit = json!({ "perSecond": 0.001, "burst": 3 });
            let mut gh = source_config(
                Scheme::Github,
                Auth::Signature,
                &project,
                json!(Scheme::Github.secret(1)),
            );
            gh["rateLimit"] = limit.clone();
            config["webhooks"]["gh-limited"] = gh;
            config["webhooks"]["limited"] = json!({ "project": project, "rateLimit": limit });
        },
        &[],
    );
    let reference = zoo.no_key_401();
    let github = Scheme::Github;

    // Requests that fail authentication spend none of the sender's budget.
    for _ in 0..3 {
        let answer = zoo.post("gh-limited", &Delivery::fresh(github, 9));
        assert_same_401(&answer, &reference, "wrong signature");
    }
    for _ in 0..3 {
        zoo.accept("gh-limited", &Delivery::fresh(github, 1));
    }
    assert_429(
        &zoo.post("gh-limited", &Delivery::fresh(github, 1)),
        "gh-limited past its burst",
    );
    // Past the limit, a caller without the signature still learns nothing but 401.
    let answer = zoo.post("gh-limited", &Delivery::fresh(github, 9));
    assert_same_401(&answer, &reference, "wrong signature past the limit");

    let body = Delivery::unsigned(r#"{"status":"down"}"#).with_key();
    for _ in 0..3 {
        zoo.accept("limited", &body);
    }
    assert_429(&zoo.post("limited", &body), "limited past its burst");
    let answer = zoo.post("limited", &Delivery::unsigned(r#"{"status":"down"}"#));
    assert_same_401(&answer, &reference, "no key past the limit");

    // Buckets are per source, and sources without `rateLimit` are never throttled.
    for _ in 0..10 {
        zoo.accept(
            &source_name(github, Auth::Signature),
            &Delivery::fresh(github, 1),
        );
        zoo.accept(PLAIN, &body);
    }
}

#[track_caller]
fn assert_tarpit_429(answer: &Answer, what: &str) {
    assert_429(answer, what);
    assert_eq!(
        answer.header("Connection"),
        Some("close"),
        "{what}: a blocked address's failure must cost it its connection: {answer:?}"
    );
}

/// Fails authentication ten times from `client` (every kind of failure), which blocks it.
fn block(zoo: &Zoo, client: &str) {
    let reference = zoo.no_key_401();
    let stripe = Scheme::Stripe;
    let sig_source = source_name(stripe, Auth::Signature);
    let failures = [
        (PLAIN, Delivery::unsigned(r#"{"a":1}"#)),
        (
            PLAIN,
            Delivery::unsigned(r#"{"a":1}"#).with("Authorization", "Bearer lk_guess"),
        ),
        ("nosuch", Delivery::unsigned(r#"{"a":1}"#)),
        (sig_source.as_str(), Delivery::fresh(stripe, 9)),
    ];
    for i in 0..10 {
        let (source, d) = &failures[i % failures.len()];
        let answer = zoo.post(source, &d.clone().forwarded_for(client));
        assert_same_401(&answer, &reference, &format!("failure {}", i + 1));
    }
}

#[test]
fn an_address_that_keeps_failing_auth_gets_429_for_its_failures_only() {
    let zoo = Zoo::start();
    let reference = zoo.no_key_401();
    let attacker = "203.0.113.7";
    let neighbour = "198.51.100.9";
    let stripe = Scheme::Stripe;
    let sig_source = source_name(stripe, Auth::Signature);
    block(&zoo, attacker);
    // Now that address's failures get 429, whatever failed ...
    let d = Delivery::unsigned(r#"{"a":1}"#).forwarded_for(attacker);
    assert_tarpit_429(&zoo.post(PLAIN, &d), "no key from the attacker");
    assert_tarpit_429(
        &zoo.post("nosuch", &d),
        "an unknown source from the attacker",
    );
    let bad = Delivery::fresh(stripe, 9).forwarded_for(attacker);
    assert_tarpit_429(
        &zoo.post(&sig_source, &bad),
        "a bad signature from the attacker",
    );
    // ... but valid auth from it still passes: it may be a proxy many senders share.
    zoo.accept(PLAIN, &d.with_key());
    zoo.accept(
        &sig_source,
        &Delivery::fresh(stripe, 1).forwarded_for(attacker),
    );

    // Another address is not punished for it: valid requests pass, and its own
    // failures are still plain 401s.
    let d = Delivery::unsigned(r#"{"a":1}"#)
        .with_key()
        .forwarded_for(neighbour);
    zoo.accept(PLAIN, &d);
    zoo.accept(
        &sig_source,
        &Delivery::fresh(stripe, 1).forwarded_for(neighbour),
    );
    let d = Delivery::unsigned(r#"{"a":1}"#).forwarded_for(neighbour);
    assert_same_401(&zoo.post(PLAIN, &d), &reference, "the neighbour's failure");
}

/// lowkey behind a reverse proxy that is not in `trustedProxies`: every request, the
/// attacker's and the senders', comes from 127.0.0.1.
fn behind_an_untrusted_proxy() -> Zoo {
    Zoo::start_with(
        |config, _| {
            config.as_object_mut().unwrap().remove("trustedProxies");
        },
        &[],
    )
}

#[test]
fn the_right_key_passes_after_ten_wrong_ones_from_the_same_address() {
    let zoo = behind_an_untrusted_proxy();
    let wrong = Delivery::unsigned(r#"{"a":1}"#).with("Authorization", "Bearer lk_guess");
    for i in 0..10 {
        let answer = zoo.post(PLAIN, &wrong);
        assert_eq!(answer.status, 401, "wrong key {}: {answer:?}", i + 1);
    }
    assert_tarpit_429(&zoo.post(PLAIN, &wrong), "an eleventh wrong key");
    zoo.accept(PLAIN, &Delivery::unsigned(r#"{"a":1}"#).with_key());
}

#[test]
fn a_valid_signature_passes_after_ten_failures_from_the_same_address() {
    let zoo = behind_an_untrusted_proxy();
    let github = Scheme::Github;
    let source = source_name(github, Auth::Signature);
    for i in 0..10 {
        let answer = zoo.post(&source, &Delivery::fresh(github, 9));
        assert_eq!(answer.status, 401, "bad signature {}: {answer:?}", i + 1);
    }
    zoo.accept(&source, &Delivery::fresh(github, 1));
}

#[test]
fn a_wrong_key_from_a_blocked_address_waits_for_its_429_and_keeps_the_block() {
    let zoo = Zoo::start();
    let attacker = "203.0.113.8";
    block(&zoo, attacker);
    let wrong = Delivery::unsigned(r#"{"a":1}"#)
        .with("Authorization", "Bearer lk_guess")
        .forwarded_for(attacker);
    for n in 1..=3 {
        let started = std::time::Instant::now();
        let answer = zoo.post(PLAIN, &wrong);
        let took = started.elapsed();
        assert_tarpit_429(&answer, &format!("wrong key {n} while blocked"));
        // Each guess is held for a second, so guessing on costs time as well as a
        // connection.
        assert!(
            took >= std::time::Duration::from_millis(950),
            "wrong key {n} while blocked was answered after only {took:?}"
        );
        // Failing again keeps the address blocked for the whole period.
        let wait: u64 = answer.header("Retry-After").unwrap().parse().unwrap();
        assert!(wait >= 59, "Retry-After {wait} after failure {n}");
    }
    // The block stays in force: ten failures were not needed again.
    assert_tarpit_429(
        &zoo.post(PLAIN, &Delivery::unsigned("{}").forwarded_for(attacker)),
        "no key from the still-blocked address",
    );
    // Its failures are counted, not logged one by one: only the block itself is.
    let daemon = &zoo.daemon;
    assert_eq!(
        daemon.count_log(|l| l.contains("webhook rejected") && l.contains("http_status=429")),
        0,
        "{}",
        daemon.log_text()
    );
    assert_eq!(
        daemon.count_log(|l| l.contains("too many failed authentications")),
        1,
        "{}",
        daemon.log_text()
    );
}

#[test]
fn the_tarpit_holds_at_most_eight_answers_for_one_address() {
    let zoo = Zoo::start_with(|_, _| {}, &[("LOWKEY_LOG", "info,lowkey=debug")]);
    let attacker = "203.0.113.9";
    block(&zoo, attacker);
    let wrong = Delivery::unsigned(r#"{"a":1}"#)
        .with("Authorization", "Bearer lk_guess")
        .forwarded_for(attacker);
    let held = |l: &str| l.contains("from a blocked address") && l.contains("tarpit=true");
    let daemon = &zoo.daemon;
    std::thread::scope(|s| {
        let waiting: Vec<_> = (0..8)
            .map(|_| s.spawn(|| zoo.post(PLAIN, &wrong)))
            .collect();
        daemon.wait_log_count("holding eight answers", 8, held);
        // The ninth is answered at once instead of holding one more connection.
        let answer = zoo.post(PLAIN, &wrong);
        assert_tarpit_429(&answer, "the ninth guess");
        daemon.wait_log("the ninth guess, not held", |l| {
            l.contains("from a blocked address") && l.contains("tarpit=false")
        });
        for t in waiting {
            assert_tarpit_429(&t.join().unwrap(), "a held guess");
        }
    });
    assert_eq!(daemon.count_log(held), 8, "{}", daemon.log_text());
}

#[test]
fn forwarded_addresses_count_only_from_trusted_proxies() {
    let zoo = behind_an_untrusted_proxy();
    let reference = zoo.no_key_401();
    // 127.0.0.1 is no trusted proxy here, so whatever address a caller claims, the
    // failures are its own: the first (above) and nine more make ten.
    for _ in 0..9 {
        let answer = zoo.post(PLAIN, &Delivery::unsigned("{}"));
        assert_same_401(&answer, &reference, "a failure claiming a fresh address");
    }
    let d = Delivery::unsigned("{}").forwarded_for("198.51.100.10");
    assert_tarpit_429(&zoo.post(PLAIN, &d), "claiming another address");
}
