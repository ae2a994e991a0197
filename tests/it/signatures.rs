//! Per-source signatures, checked against the senders' own signing libraries: what is
//! accepted, what gets 401 (always the same 401), rotation, secrets kept out of the JSON,
//! `lowkey check` on secrets, who has to authenticate, `lowkey send`, Slack's URL
//! check, and a table of every source kind against every way to (not) authenticate.

use crate::senders::*;
use crate::support::*;
use serde_json::json;

#[test]
fn official_library_signatures_are_accepted_in_both_auth_modes() {
    let zoo = Zoo::start();
    for scheme in Scheme::ALL {
        // "auth": "signature": the signature alone.
        let d = Delivery::fresh(scheme, 1);
        let (session, event) = zoo.accept(&source_name(scheme, Auth::Signature), &d);
        let lines = zoo.home.session(&session);
        assert!(
            lines
                .iter()
                .any(|l| l["event"] == event && l["body"] == d.body.as_str()),
            "{scheme:?}: the body is not kept byte for byte: {lines:#?}"
        );
        // The default auth: the key, and the signature on top.
        let d = Delivery::fresh(scheme, 1).with_key();
        zoo.accept(&source_name(scheme, Auth::Key), &d);
    }
}

#[test]
fn forged_stale_or_incomplete_signatures_get_the_no_key_401() {
    // Beside the zoo's sources (default window, 300 s), a `-tight` one per timestamped
    // scheme with `"toleranceSec": 30`.
    let zoo = Zoo::start_with(
        |config, home| {
            let project = home.project("proj");
            for scheme in Scheme::ALL.into_iter().filter(|s| s.has_timestamp()) {
                let secret = json!(scheme.secret(1));
                let mut source = source_config(scheme, Auth::Signature, &project, secret);
                source["toleranceSec"] = json!(30);
                config["webhooks"][format!("{}-tight", scheme.name())] = source;
            }
        },
        &[],
    );
    let reference = zoo.no_key_401();
    // Outside the default 300 s window by a margin no slow test run closes.
    let (old, future) = (now() - 400, now() + 400);
    for scheme in Scheme::ALL {
        let secret = scheme.secret(1);
        let id = unique_id("forged");
        let body = scheme.body(&id);
        let good = Delivery::signed(scheme, &secret, body.clone(), now(), &id);
        let mut cases = vec![
            (
                "tampered body".to_owned(),
                good.clone()
                    .with_body(body.replace(r#""amount":100"#, r#""amount":100000"#)),
            ),
            (
                "wrong secret".to_owned(),
                Delivery::signed(scheme, &scheme.secret(9), body.clone(), now(), &id),
            ),
        ];
        for header in scheme.signed_headers() {
            cases.push((format!("missing {header}"), good.clone().without(header)));
        }
        if scheme.has_timestamp() {
            let ts = good.header(timestamp_header(scheme)).unwrap();
            let tampered = match scheme {
                Scheme::Stripe => {
                    let (t, rest) = ts.strip_prefix("t=").unwrap().split_once(',').unwrap();
                    format!("t={},{rest}", t.parse::<i64>().unwrap() - 1)
                }
                _ => (ts.parse::<i64>().unwrap() - 1).to_string(),
            };
            cases.push((
                "tampered timestamp".into(),
                good.clone().with(timestamp_header(scheme), &tampered),
            ));
            cases.push((
                "timestamp past the window".into(),
                Delivery::signed(scheme, &secret, body.clone(), old, &id),
            ));
            cases.push((
                "timestamp in the future past the window".into(),
                Delivery::signed(scheme, &secret, body.clone(), future, &id),
            ));
        }
        if scheme == Scheme::StandardWebhooks {
            cases.push((
                "tampered webhook-id".into(),
                good.clone().with("webhook-id", "msg_someone_else"),
            ));
        }
        for (what, forged) in &cases {
            for auth in [Auth::Signature, Auth::Key] {
                let forged = match auth {
                    Auth::Key => forged.clone().with_key(),
                    Auth::Signature => forged.clone(),
                };
                let answer = zoo.post(&source_name(scheme, auth), &forged);
                assert_same_401(&answer, &reference, &format!("{scheme:?} {auth:?}: {what}"));
            }
        }
        // The same delivery untouched, and one signed well inside the window both ways,
        // are accepted: the 401s above are the tampering's doing.
        zoo.accept(&source_name(scheme, Auth::Signature), &good);
        if scheme.has_timestamp() {
            let tight = format!("{}-tight", scheme.name());
            for ts in [now() - 200, now() + 200] {
                let id = unique_id("edge");
                let d = Delivery::signed(scheme, &secret, scheme.body(&id), ts, &id);
                zoo.accept(&source_name(scheme, Auth::Signature), &d);
                // Outside a source's own, narrower `toleranceSec`.
                let answer = zoo.post(&tight, &d);
                assert_same_401(&answer, &reference, &format!("{tight}: {ts} vs now"));
            }
            zoo.accept(&tight, &Delivery::fresh(scheme, 1));
        }
    }
}

/// The header carrying the signed timestamp (Stripe's is inside its signature header).
fn timestamp_header(scheme: Scheme) -> &'static str {
    match scheme {
        Scheme::StandardWebhooks => "webhook-timestamp",
        Scheme::Stripe => "Stripe-Signature",
        Scheme::Slack => "X-Slack-Request-Timestamp",
        Scheme::Github | Scheme::Shopify | Scheme::Hmac | Scheme::Twilio => {
            unreachable!("{scheme:?} signs no timestamp")
        }
    }
}

#[test]
fn during_rotation_the_old_and_the_new_secret_both_verify() {
    let zoo = Zoo::start_with(
        |config, home| {
            let project = home.project("proj");
            for scheme in Scheme::ALL {
                config["webhooks"][format!("{}-rot", scheme.name())] = source_config(
                    scheme,
                    Auth::Signature,
                    &project,
                    json!([scheme.secret(1), scheme.secret(2)]),
                );
            }
        },
        &[],
    );
    let reference = zoo.no_key_401();
    for scheme in Scheme::ALL {
        let source = format!("{}-rot", scheme.name());
        zoo.accept(&source, &Delivery::fresh(scheme, 1));
        zoo.accept(&source, &Delivery::fresh(scheme, 2));
        let answer = zoo.post(&source, &Delivery::fresh(scheme, 3));
        assert_same_401(&answer, &reference, &format!("{scheme:?}: a third secret"));
    }
}

#[test]
fn secrets_come_from_a_file_or_a_systemd_credential() {
    let credentials = tempfile::tempdir().unwrap();
    let dir = credentials.path().to_str().unwrap().to_owned();
    let zoo = Zoo::start_with(
        |config, home| {
            let project = home.project("proj");
            for scheme in Scheme::ALL {
                // Written the way `echo "$SECRET" > file` and systemd-creds leave them.
                let file = home.dir.path().join(format!("{}.secret", scheme.name()));
                std::fs::write(&file, format!("{}\n", scheme.secret(4))).unwrap();
                config["webhooks"][format!("{}-file", scheme.name())] =
                    source_config(scheme, Auth::Signature, &project, json!({ "file": file }));
                let name = format!("{}-secret", scheme.name());
                std::fs::write(credentials.path().join(&name), scheme.secret(5)).unwrap();
                config["webhooks"][format!("{}-cred", scheme.name())] = source_config(
                    scheme,
                    Auth::Signature,
                    &project,
                    json!({ "credential": name }),
                );
            }
        },
        &[("CREDENTIALS_DIRECTORY", &dir)],
    );
    let reference = zoo.no_key_401();
    for scheme in Scheme::ALL {
        for (source, right, wrong) in [("file", 4, 5), ("cred", 5, 4)] {
            let source = format!("{}-{source}", scheme.name());
            zoo.accept(&source, &Delivery::fresh(scheme, right));
            let answer = zoo.post(&source, &Delivery::fresh(scheme, wrong));
            assert_same_401(&answer, &reference, &format!("{source}: the other secret"));
        }
    }

    // `lowkey check` outside systemd has no credentials, and says which key needs one.
    let out = zoo.home.run(&["check"]);
    assert_eq!(out.code, 78, "{out:?}");
    assert!(
        out.stdout
            .contains("error: webhooks.stripe-cred.secret.credential:")
            && out.stdout.contains("CREDENTIALS_DIRECTORY"),
        "{out:?}"
    );
    // ... and only that: the secret it could not read is not also reported missing.
    assert!(
        !out.stdout.contains("webhooks.stripe-cred.secret: missing"),
        "{out:?}"
    );
    let out = zoo
        .home
        .command(&["check"])
        .env("CREDENTIALS_DIRECTORY", &dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn check_rejects_malformed_secrets_and_warns_about_key_auth_for_hosted_senders() {
    let home = Home::new();
    let project = home.project("proj");
    let agent = home.script("agent.sh", "cat >/dev/null");
    let not_base64 = "whsec_not*base64!";
    let file = home.dir.path().join("sw.secret");
    std::fs::write(&file, format!("{not_base64}\n")).unwrap();
    let config = |webhooks: serde_json::Value| {
        json!({
            "apiKey": KEY,
            "defaultAgent": "bot",
            "agents": { "bot": { "command": [agent] } },
            "webhooks": webhooks,
        })
    };
    let sig = Auth::Signature;
    home.write_config(&config(json!({
        "sw": source_config(Scheme::StandardWebhooks, sig, &project, json!(not_base64)),
        "sw-list": source_config(
            Scheme::StandardWebhooks, sig, &project,
            json!([Scheme::StandardWebhooks.secret(1), not_base64]),
        ),
        "sw-file": source_config(Scheme::StandardWebhooks, sig, &project, json!({ "file": file })),
        // Stripe's secrets look the same but are used as they are: no error.
        "stripe": source_config(Scheme::Stripe, sig, &project, json!(not_base64)),
    })));
    let out = home.run(&["check"]);
    assert_eq!(out.code, 78, "{out:?}");
    for key in [
        "webhooks.sw.secret",
        "webhooks.sw-list.secrets[1]",
        "webhooks.sw-file.secret",
    ] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("error: {key}:")))
            .unwrap_or_else(|| panic!("no error naming {key}: {out:?}"));
        assert!(line.contains("base64"), "{line}");
    }
    assert!(!out.stdout.contains("webhooks.stripe"), "{out:?}");
    assert!(
        !out.stdout.contains("not*base64") && !out.stderr.contains("not*base64"),
        "a secret was printed: {out:?}"
    );
    assert!(out.stdout.contains("3 errors"), "{out:?}");

    // Hosted senders cannot send the key, so leaving them on `auth: key` is a warning;
    // senders that can (or that use the key alone) get none.
    let mut webhooks = serde_json::Map::new();
    for scheme in Scheme::ALL {
        for auth in [Auth::Key, Auth::Signature] {
            webhooks.insert(
                source_name(scheme, auth),
                source_config(scheme, auth, &project, json!(scheme.secret(1))),
            );
        }
    }
    webhooks.insert(PLAIN.into(), json!({ "project": project }));
    home.write_config(&config(webhooks.into()));
    let out = home.run(&["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    let warned: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    let keys: Vec<&str> = warned
        .iter()
        .map(|l| l.split(':').nth(1).unwrap().trim())
        .collect();
    assert_eq!(
        keys,
        [
            "webhooks.github-key.auth",
            "webhooks.shopify-key.auth",
            "webhooks.slack-key.auth",
            "webhooks.stripe-key.auth"
        ],
        "{out:?}"
    );
    for line in warned {
        assert!(line.contains(r#""auth": "signature""#), "no fix in {line}");
    }
}

#[test]
fn who_authenticates_the_key_the_signature_or_both() {
    let zoo = Zoo::start();
    let reference = zoo.no_key_401();
    for scheme in Scheme::ALL {
        // Default auth with a secret: the key and the signature, both required.
        let source = source_name(scheme, Auth::Key);
        let answer = zoo.post(&source, &Delivery::fresh(scheme, 1));
        assert_same_401(&answer, &reference, &format!("{source}: signature, no key"));
        let id = unique_id("key-only");
        let answer = zoo.post(&source, &Delivery::unsigned(scheme.body(&id)).with_key());
        assert_same_401(&answer, &reference, &format!("{source}: key, no signature"));
        zoo.accept(&source, &Delivery::fresh(scheme, 1).with_key());

        // "auth": "signature": the signature alone is enough, and it is still required.
        let source = source_name(scheme, Auth::Signature);
        zoo.accept(&source, &Delivery::fresh(scheme, 1));
        let id = unique_id("key-only");
        let answer = zoo.post(&source, &Delivery::unsigned(scheme.body(&id)).with_key());
        assert_same_401(&answer, &reference, &format!("{source}: key, no signature"));
    }

    // A source that does not exist: the same 401 as any other without the key, even
    // with a valid signature; only the key holder learns it is missing.
    let signed = Delivery::fresh(Scheme::Github, 1);
    let answer = zoo.post("nosuch", &signed);
    assert_same_401(&answer, &reference, "unknown source without the key");
    let answer = zoo.post("nosuch", &signed.clone().with_key());
    assert_eq!(answer.status, 404, "{answer:?}");
    assert!(answer.json()["error"].as_str().unwrap().contains("nosuch"));
}

#[test]
fn lowkey_send_signs_for_every_scheme() {
    let zoo = Zoo::start();
    let url = format!("http://{}", zoo.daemon.addr.as_ref().unwrap());
    let mut sources = vec![PLAIN.to_owned()];
    for scheme in Scheme::ALL {
        sources.push(source_name(scheme, Auth::Key));
        sources.push(source_name(scheme, Auth::Signature));
    }
    for (i, source) in sources.iter().enumerate() {
        let scheme = Scheme::ALL.iter().find(|s| source.starts_with(s.name()));
        let id = unique_id("send");
        let body = scheme.map_or_else(|| format!(r#"{{"n":{i}}}"#), |s| s.body(&id));
        let file = zoo.home.dir.path().join(format!("payload-{i}.json"));
        std::fs::write(&file, &body).unwrap();
        let out = zoo
            .home
            .run(&["send", source, file.to_str().unwrap(), "--url", &url]);
        assert_eq!(out.code, 0, "lowkey send {source}: {out:?}");
        assert_eq!(out.stdout.lines().next(), Some("202"), "{source}: {out:?}");
        let answer: serde_json::Value =
            serde_json::from_str(out.stdout.lines().nth(1).unwrap()).unwrap();
        let session = answer["session"].as_str().unwrap();
        assert!(
            zoo.home
                .session(session)
                .iter()
                .any(|l| l["body"] == body.as_str()),
            "{source}: the body sent is not the one stored"
        );
    }
}

#[test]
fn slack_url_verification_is_answered_only_when_signed() {
    let zoo = Zoo::start();
    let reference = zoo.no_key_401();
    let challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P";
    let body = format!(
        r#"{{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"{challenge}","type":"url_verification"}}"#
    );
    let slack = Scheme::Slack;
    let signed = |n: u8, ts: i64| Delivery::signed(slack, &slack.secret(n), body.clone(), ts, "");
    let sig_source = source_name(slack, Auth::Signature);
    for (what, d) in [
        ("unsigned", Delivery::unsigned(body.clone())),
        ("wrong secret", signed(9, now())),
        ("expired", signed(1, now() - 400)),
    ] {
        let answer = zoo.post(&sig_source, &d);
        assert_same_401(&answer, &reference, &format!("url_verification {what}"));
    }
    let key_source = source_name(slack, Auth::Key);
    let answer = zoo.post(&key_source, &signed(1, now()));
    assert_same_401(
        &answer,
        &reference,
        "url_verification on a key source, no key",
    );
    let answer = zoo.post(&key_source, &Delivery::unsigned(body.clone()).with_key());
    assert_same_401(
        &answer,
        &reference,
        "unsigned url_verification with the key",
    );

    for (source, d) in [
        (&sig_source, signed(1, now())),
        (&key_source, signed(1, now()).with_key()),
    ] {
        let answer = zoo.post(source, &d);
        assert_eq!(answer.status, 200, "{source}: {answer:?}");
        assert_eq!(answer.json(), json!({ "challenge": challenge }));
    }
    // A handshake is not an event: no session, no run.
    let sessions = std::fs::read_dir(zoo.home.sessions())
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(sessions, 0, "url_verification made a session");
}

/// Every kind of source against every way of (not) authenticating: 2xx only where the
/// source's own rule is met, and otherwise the one 401.
#[test]
fn no_2xx_without_the_auth_the_source_demands() {
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Sent {
        Nothing,
        KeyOnly,
        SignatureOnly,
        KeyAndSignature,
        WrongKeyRightSignature,
        KeyWrongSignature,
    }
    let all = [
        Sent::Nothing,
        Sent::KeyOnly,
        Sent::SignatureOnly,
        Sent::KeyAndSignature,
        Sent::WrongKeyRightSignature,
        Sent::KeyWrongSignature,
    ];
    let zoo = Zoo::start();
    let reference = zoo.no_key_401();
    // (source, its scheme, who authenticates)
    let mut sources = vec![(PLAIN.to_owned(), None, Auth::Key)];
    for scheme in Scheme::ALL {
        for auth in [Auth::Key, Auth::Signature] {
            sources.push((source_name(scheme, auth), Some(scheme), auth));
        }
    }
    let mut table = Vec::new();
    for (source, scheme, auth) in &sources {
        for sent in all {
            // A source without a secret is sent GitHub's signature headers, which it
            // has no reason to look at.
            let signer = scheme.unwrap_or(Scheme::Github);
            let id = unique_id("table");
            let body = signer.body(&id);
            let signed = |n| Delivery::signed(signer, &signer.secret(n), body.clone(), now(), &id);
            let d = match sent {
                Sent::Nothing => Delivery::unsigned(body.clone()),
                Sent::KeyOnly => Delivery::unsigned(body.clone()).with_key(),
                Sent::SignatureOnly => signed(1),
                Sent::KeyAndSignature => signed(1).with_key(),
                Sent::WrongKeyRightSignature => {
                    signed(1).with("Authorization", "Bearer lk_not_the_key_0123456789")
                }
                Sent::KeyWrongSignature => signed(9).with_key(),
            };
            let key_ok = matches!(
                sent,
                Sent::KeyOnly | Sent::KeyAndSignature | Sent::KeyWrongSignature
            );
            let signature_ok = matches!(
                sent,
                Sent::SignatureOnly | Sent::KeyAndSignature | Sent::WrongKeyRightSignature
            );
            let allowed = match (scheme, auth) {
                (None, _) => key_ok,
                (Some(_), Auth::Key) => key_ok && signature_ok,
                // Only the signature is checked; a wrong `Authorization` is not looked at.
                (Some(_), Auth::Signature) => signature_ok,
            };
            let answer = zoo.post(source, &d);
            table.push(format!("{source:>22} {sent:?}: {}", answer.status));
            if allowed {
                assert_eq!(answer.status, 202, "{source} {sent:?}: {answer:?}");
            } else {
                assert_same_401(&answer, &reference, &format!("{source} {sent:?}"));
            }
        }
    }
    assert_eq!(table.len(), 13 * 6, "{table:#?}");
}
