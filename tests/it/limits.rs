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

#[test]
fn an_address_that_keeps_failing_auth_gets_429_and_others_do_not() {
    let zoo = Zoo::start();
    let reference = zoo.no_key_401();
    let attacker = "203.0.113.7";
    let neighbour = "198.51.100.9";
    let stripe = Scheme::Stripe;
    let sig_source = source_name(stripe, Auth::Signature);
    // Ten failures of every kind within the minute: no key, a wrong key, an unknown
    // source, a wrong signature.
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
        let answer = zoo.post(source, &d.clone().forwarded_for(attacker));
        assert_same_401(&answer, &reference, &format!("failure {}", i + 1));
    }
    // Now that address is refused before anything is checked, valid auth or not.
    let d = Delivery::unsigned(r#"{"a":1}"#).forwarded_for(attacker);
    assert_429(&zoo.post(PLAIN, &d), "no key from the attacker");
    assert_429(&zoo.post(PLAIN, &d.with_key()), "the key from the attacker");
    let d = Delivery::fresh(stripe, 1).forwarded_for(attacker);
    assert_429(&zoo.post(&sig_source, &d), "a signature from the attacker");

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

#[test]
fn forwarded_addresses_count_only_from_trusted_proxies() {
    let zoo = Zoo::start_with(
        |config, _| {
            config.as_object_mut().unwrap().remove("trustedProxies");
        },
        &[],
    );
    let reference = zoo.no_key_401();
    // 127.0.0.1 is no trusted proxy here, so whatever address a caller claims, the
    // failures are its own: the first (above) and nine more make ten.
    for _ in 0..9 {
        let answer = zoo.post(PLAIN, &Delivery::unsigned("{}"));
        assert_same_401(&answer, &reference, "a failure claiming a fresh address");
    }
    let d = Delivery::unsigned("{}")
        .with_key()
        .forwarded_for("198.51.100.10");
    assert_429(&zoo.post(PLAIN, &d), "claiming another address");
}
