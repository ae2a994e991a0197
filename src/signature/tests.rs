//! The schemes against the vectors their senders publish, then the rules every scheme
//! keeps (tampering, rotation, the replay window), each scheme's own header syntax, and
//! the errors, secrets and delivery ids.

use super::*;

const TOLERANCE: u64 = 300;

fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn signed_headers(scheme: &Scheme, key: &[u8], body: &[u8], now: i64) -> HeaderMap {
    signed_headers_for(scheme, key, body, now, "msg_test")
}

fn signed_headers_for(scheme: &Scheme, key: &[u8], body: &[u8], now: i64, id: &str) -> HeaderMap {
    sign(scheme, key, body, now, id)
        .unwrap()
        .headers
        .into_iter()
        .collect()
}

/// `verify` of a request as its sender makes it: with Twilio's `bodySHA256` in the
/// query for a JSON body.
fn verify_sent(
    scheme: &Scheme,
    keys: &[Vec<u8>],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: u64,
) -> Result<Verified, VerifyError> {
    let query = query_for(scheme, body);
    let request = Request {
        headers,
        query: query.as_deref(),
        body,
    };
    verify(scheme, keys, request, now, tolerance)
}

/// The query a sender adds for `body`: Twilio's `bodySHA256` for a JSON body.
fn query_for(scheme: &Scheme, body: &[u8]) -> Option<String> {
    sign(scheme, b"any key", body, 0, "msg_query")
        .unwrap()
        .query
}

fn generic_hex() -> Scheme {
    Scheme::HmacSha256(GenericHmac {
        header: HeaderName::from_static("x-signature"),
        encoding: Encoding::Hex,
        prefix: "sha256=".to_owned(),
    })
}

fn generic_base64() -> Scheme {
    Scheme::HmacSha256(GenericHmac {
        header: HeaderName::from_static("x-body-signature"),
        encoding: Encoding::Base64,
        prefix: String::new(),
    })
}

fn twilio(url: &str) -> Scheme {
    Scheme::Twilio(PublicUrl::parse(url).unwrap())
}

fn every_scheme() -> Vec<Scheme> {
    vec![
        Scheme::StandardWebhooks,
        Scheme::Stripe,
        Scheme::Github,
        Scheme::Slack,
        twilio("https://hooks.example.com/api/webhook/twilio"),
        Scheme::Shopify,
        generic_hex(),
        generic_base64(),
    ]
}

fn timestamp_schemes() -> Vec<Scheme> {
    every_scheme()
        .into_iter()
        .filter(|s| s.kind().has_timestamp())
        .collect()
}

/// A valid secret for each scheme, so tests go through `key_from_secret` like real
/// configuration does.
fn secret_for(scheme: &Scheme, n: u8) -> String {
    match scheme {
        // 24 bytes of key, base64 encoded.
        Scheme::StandardWebhooks => format!("whsec_{}", STANDARD.encode([n; 24])),
        Scheme::Stripe => format!("whsec_stripe_secret_{n}"),
        _ => format!("shared secret number {n}"),
    }
}

fn key_for(scheme: &Scheme, n: u8) -> Vec<u8> {
    key_from_secret(scheme, &secret_for(scheme, n)).unwrap()
}

/// `verify` with one key and the usual replay window.
fn check(
    scheme: &Scheme,
    key: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<Verified, VerifyError> {
    verify_sent(scheme, &[key.to_vec()], headers, body, now, TOLERANCE)
}

fn replace(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    headers.insert(name, HeaderValue::from_str(value).unwrap());
}

fn assert_malformed(result: Result<Verified, VerifyError>, header: &HeaderName) {
    match result {
        Err(VerifyError::MalformedHeader { header: got, .. }) => assert_eq!(&got, header),
        other => panic!("expected malformed `{header}`, got {other:?}"),
    }
}

// ---- Published vectors -------------------------------------------------------------

/// GitHub, "Validating webhook deliveries", testing the webhook payload validation.
#[test]
fn github_published_vector() {
    let scheme = Scheme::Github;
    let key = key_from_secret(&scheme, "It's a Secret to Everybody").unwrap();
    let headers = header_map(&[(
        "X-Hub-Signature-256",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
    )]);
    let verified = verify_sent(
        &scheme,
        std::slice::from_ref(&key),
        &headers,
        b"Hello, World!",
        0,
        0,
    )
    .unwrap();
    assert_eq!(
        verified,
        Verified {
            timestamp: None,
            key_index: 0
        }
    );

    let produced = signed_headers(&scheme, &key, b"Hello, World!", 0);
    assert_eq!(produced[&GITHUB_SIGNATURE], headers[&GITHUB_SIGNATURE]);
}

/// Slack, "Verifying requests from Slack", the worked example. The slash command in
/// the published body is `/webhook-collect`; that body is what yields this signature.
#[test]
fn slack_published_vector() {
    let scheme = Scheme::Slack;
    let key = key_from_secret(&scheme, "8f742231b10e8888abcd99yyyzzz85a5").unwrap();
    let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let ts = 1_531_420_618;
    let headers = header_map(&[
        ("X-Slack-Request-Timestamp", "1531420618"),
        (
            "X-Slack-Signature",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        ),
    ]);
    let verified = check(&scheme, &key, &headers, body, ts).unwrap();
    assert_eq!(verified.timestamp, Some(ts));

    assert_eq!(signed_headers(&scheme, &key, body, ts), headers);
}

/// standard-webhooks repo, `libraries/javascript/src/webhook.test.ts`, "sign function
/// works".
#[test]
fn standard_webhooks_published_sign_vector() {
    let scheme = Scheme::StandardWebhooks;
    let key = key_from_secret(&scheme, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let body = br#"{"test": 2432232314}"#;
    let ts = 1_614_265_330;
    let produced = signed_headers_for(&scheme, &key, body, ts, "msg_p5jXN8AQM9LWM0D4loKWxJek");
    let expected = header_map(&[
        ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
        ("webhook-timestamp", "1614265330"),
        (
            "webhook-signature",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
    ]);
    assert_eq!(produced, expected);
    check(&scheme, &key, &expected, body, ts).unwrap();
}

/// standard-webhooks repo, `libraries/rust/src/lib.rs`, `test_sign`.
#[test]
fn standard_webhooks_published_rust_vector() {
    let scheme = Scheme::StandardWebhooks;
    let key = key_from_secret(&scheme, "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
    let body = br#"{"email":"test@example.com","username":"test_user"}"#;
    let headers = header_map(&[
        ("webhook-id", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk"),
        ("webhook-timestamp", "1649367553"),
        (
            "webhook-signature",
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        ),
    ]);
    let verified = check(&scheme, &key, &headers, body, 1_649_367_553).unwrap();
    assert_eq!(verified.timestamp, Some(1_649_367_553));
}

/// Twilio, "Webhooks security", the worked example (Auth Token `12345`), which its
/// `RequestValidator` reproduces: the URL with its query, then the fields sorted.
#[test]
fn twilio_published_vector() {
    let scheme = twilio("https://mycompany.com/myapp.php");
    let key = key_from_secret(&scheme, "12345").unwrap();
    let headers = header_map(&[("X-Twilio-Signature", "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")]);
    let body = b"To=%2B18005551212&From=%2B12349013030&CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234";
    let request = |query, body| Request {
        headers: &headers,
        query,
        body,
    };
    let keys = std::slice::from_ref(&key);
    let verified = verify(&scheme, keys, request(Some("foo=1&bar=2"), body), 0, 0).unwrap();
    assert_eq!(verified.timestamp, None);

    // The URL is signed whole: another query, or none, is another URL.
    for query in [None, Some("foo=1&bar=3"), Some("bar=2&foo=1")] {
        assert_eq!(
            verify(&scheme, keys, request(query, body), 0, 0),
            Err(VerifyError::NoMatch {
                header: TWILIO_SIGNATURE
            }),
            "{query:?}"
        );
    }
    // The fields are signed decoded and sorted, so their order and encoding do not
    // matter; their values do.
    let reordered = b"Digits=1234&Caller=%2b12349013030&CallSid=CA1234567890ABCDE&From=%2B12349013030&To=%2B18005551212";
    verify(&scheme, keys, request(Some("foo=1&bar=2"), reordered), 0, 0).unwrap();
    let tampered = b"To=%2B18005551212&From=%2B12349013030&CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1235";
    assert!(verify(&scheme, keys, request(Some("foo=1&bar=2"), tampered), 0, 0).is_err());
    // Another URL, or another token, does not verify.
    let elsewhere = twilio("https://mycompany.com/other.php");
    assert!(verify(&elsewhere, keys, request(Some("foo=1&bar=2"), body), 0, 0).is_err());
    let other_key = [b"54321".to_vec()];
    assert!(
        verify(
            &scheme,
            &other_key,
            request(Some("foo=1&bar=2"), body),
            0,
            0
        )
        .is_err()
    );
}

/// Signed with a webhook SharedKey, the settings header names HMAC-SHA256; the vector is
/// the worked example's, by `compute_signature(..., "HMAC_SHA256")` (twilio 9.13.0).
#[test]
fn twilio_shared_key_signatures_are_hmac_sha256() {
    let scheme = twilio("https://mycompany.com/myapp.php");
    let keys = [b"12345".to_vec()];
    let body = b"To=%2B18005551212&From=%2B12349013030&CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234";
    let signature = "Rmm4Vzj+Ky7JGoWXMCsZDZuHDszLr9xvdbvitrDr4/M=";
    let verify_with = |settings: Option<&str>| {
        let mut headers = header_map(&[("X-Twilio-Signature", signature)]);
        if let Some(settings) = settings {
            replace(&mut headers, TWILIO_SIGNATURE_SETTINGS, settings);
        }
        let request = Request {
            headers: &headers,
            query: Some("foo=1&bar=2"),
            body,
        };
        verify(&scheme, &keys, request, 0, 0)
    };
    verify_with(Some("key=webhooks_sharedkey_123,algorithm=HMAC_SHA256")).unwrap();
    verify_with(Some(" algorithm = hmac_sha256 ")).unwrap();
    // Without the header, or naming SHA-1, it is the Auth Token's SHA-1: no match.
    for settings in [
        None,
        Some("key=webhooks_sharedkey_123"),
        Some("algorithm=HMAC_SHA1"),
    ] {
        assert_eq!(
            verify_with(settings),
            Err(VerifyError::NoMatch {
                header: TWILIO_SIGNATURE
            }),
            "{settings:?}"
        );
    }
    assert_malformed(
        verify_with(Some("algorithm=HMAC_SHA512")),
        &TWILIO_SIGNATURE_SETTINGS,
    );
}

/// A JSON body, which Twilio signs through `bodySHA256` in the URL; the vector is its
/// `RequestValidator`'s own test's body, signed by `compute_signature` (twilio 9.13.0).
#[test]
fn twilio_json_body_is_signed_through_its_hash() {
    let scheme = twilio("https://mycompany.com/myapp.php");
    let key = key_from_secret(&scheme, "12345").unwrap();
    let keys = std::slice::from_ref(&key);
    let headers = header_map(&[("X-Twilio-Signature", "y77kIzt2vzLz71DgmJGsen2scGs=")]);
    let body = br#"{"property": "value", "boolean": true}"#;
    let query = "bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620";
    let request = |query, body| Request {
        headers: &headers,
        query,
        body,
    };
    verify(&scheme, keys, request(Some(query), body), 0, 0).unwrap();
    assert_eq!(
        verify(
            &scheme,
            keys,
            request(Some(query), br#"{"property": "other"}"#),
            0,
            0
        ),
        Err(VerifyError::BodyHash)
    );
    let produced = sign(&scheme, &key, body, 0, "RQ1").unwrap();
    assert_eq!(produced.query.as_deref(), Some(query));
    assert_eq!(
        produced.headers[0],
        (TWILIO_SIGNATURE, headers[&TWILIO_SIGNATURE].clone())
    );
}

/// Twilio has signed the URL both with and without the port, so both verify, whichever
/// way `publicUrl` is written (as its `RequestValidator` does).
#[test]
fn twilio_url_with_and_without_the_port() {
    let body = b"Body=hi&From=%2B15005550006";
    for (signed_as, configured) in [
        ("https://example.com/sms", "https://example.com:443/sms"),
        ("https://example.com:443/sms", "https://example.com/sms"),
        ("http://example.com/sms", "http://example.com:80/sms"),
    ] {
        let key = b"token".to_vec();
        let signed = sign(&twilio(signed_as), &key, body, 0, "RQ1").unwrap();
        let headers: HeaderMap = signed.headers.into_iter().collect();
        let request = Request {
            headers: &headers,
            query: None,
            body,
        };
        verify(&twilio(configured), &[key], request, 0, 0)
            .unwrap_or_else(|e| panic!("signed as {signed_as}, configured {configured}: {e}"));
    }
    // Another port is another URL.
    let key = b"token".to_vec();
    let signed = sign(
        &twilio("https://example.com:8443/sms"),
        &key,
        body,
        0,
        "RQ1",
    )
    .unwrap();
    let headers: HeaderMap = signed.headers.into_iter().collect();
    let request = Request {
        headers: &headers,
        query: None,
        body,
    };
    assert!(
        verify(
            &twilio("https://example.com:9443/sms"),
            &[key],
            request,
            0,
            0
        )
        .is_err()
    );
}

#[test]
fn public_url_must_be_a_plain_http_url() {
    for (text, error) in [
        ("hooks.example.com/twilio", PublicUrlError::Scheme),
        ("ftp://example.com/twilio", PublicUrlError::Scheme),
        ("HTTPS://example.com/twilio", PublicUrlError::Scheme),
        ("https://", PublicUrlError::NotUrl),
        ("https://exa mple.com/twilio", PublicUrlError::NotUrl),
        (
            "https://user:pw@example.com/twilio",
            PublicUrlError::UserInfo,
        ),
        ("https://example.com/twilio?x=1", PublicUrlError::Query),
        ("https://example.com/twilio#top", PublicUrlError::Query),
    ] {
        assert_eq!(PublicUrl::parse(text), Err(error), "{text}");
    }
    let url = PublicUrl::parse("https://[::1]:8443/api/webhook/twilio").unwrap();
    assert_eq!(url.as_str(), "https://[::1]:8443/api/webhook/twilio");
    assert_eq!(url.without_port, "https://[::1]/api/webhook/twilio");
}

/// Shopify publishes no fixed vector; this one was made by its own library's helper
/// (`getHmac` of `@shopify/shopify-api/test-helpers`, 13.1.0) and frozen.
#[test]
fn shopify_frozen_vector() {
    let scheme = Scheme::Shopify;
    let key = key_from_secret(&scheme, "hush").unwrap();
    let body = br#"{"id":820982911946154508,"email":"jon@example.com"}"#;
    let headers = header_map(&[(
        "X-Shopify-Hmac-Sha256",
        "D0UMXmhjwBRi4y66TmhJrDlhQABD7zI2fm3p6/QLMo8=",
    )]);
    check(&scheme, &key, &headers, body, 0).unwrap();
    let produced = signed_headers(&scheme, &key, body, 0);
    assert_eq!(produced[&SHOPIFY_HMAC], headers[&SHOPIFY_HMAC]);
    assert_malformed(
        check(
            &scheme,
            &key,
            &header_map(&[("X-Shopify-Hmac-Sha256", "not base64!")]),
            body,
            0,
        ),
        &SHOPIFY_HMAC,
    );
}

/// Stripe publishes no fixed vector (its libraries sign at test time), so this one was
/// computed once with Python's `hmac` module and frozen, to catch a change in what we
/// sign (e.g. decoding the `whsec_` secret instead of using it as is).
#[test]
fn stripe_frozen_vector() {
    let scheme = Scheme::Stripe;
    let key = key_from_secret(&scheme, "whsec_test_secret").unwrap();
    let body = br#"{"id":"evt_test_webhook","object":"event"}"#;
    let headers = header_map(&[(
        "Stripe-Signature",
        "t=1700000000,v1=d95c6b7477fbd7e9f90b1b0ef5f9c7ac25abca5382460e0d988c2b2a5b71b990",
    )]);
    check(&scheme, &key, &headers, body, 1_700_000_000).unwrap();
    assert_eq!(signed_headers(&scheme, &key, body, 1_700_000_000), headers);
}

// ---- Behaviour common to every scheme ----------------------------------------------

#[test]
fn sign_then_verify_round_trips_for_every_scheme() {
    let now = 1_700_000_000;
    let body = br#"{"id":"evt_1","event_id":"Ev1","n":1}"#;
    for scheme in every_scheme() {
        let key = key_for(&scheme, 1);
        let headers = signed_headers(&scheme, &key, body, now);
        let verified = check(&scheme, &key, &headers, body, now)
            .unwrap_or_else(|err| panic!("{}: {err}", scheme.name()));
        let expected_ts = scheme.kind().has_timestamp().then_some(now);
        assert_eq!(verified.timestamp, expected_ts, "{}", scheme.name());
    }
}

#[test]
fn round_trip_accepts_arbitrary_body_bytes() {
    // The body is signed as raw bytes; it need not be UTF-8 or JSON.
    let body = [0u8, 0xff, 0xfe, b'.', b'\n'];
    for scheme in every_scheme() {
        let key = key_for(&scheme, 1);
        let headers = signed_headers(&scheme, &key, &body, 10);
        check(&scheme, &key, &headers, &body, 10).unwrap();
    }
}

#[test]
fn tampered_body_is_rejected_for_every_scheme() {
    let now = 1_700_000_000;
    for scheme in every_scheme() {
        let key = key_for(&scheme, 1);
        let headers = signed_headers(&scheme, &key, br#"{"amount":100}"#, now);
        let err = check(&scheme, &key, &headers, br#"{"amount":900}"#, now).unwrap_err();
        assert!(
            matches!(err, VerifyError::NoMatch { .. }),
            "{}: {err}",
            scheme.name()
        );
    }
}

#[test]
fn body_with_trailing_newline_is_a_different_body() {
    // Guards the "exact bytes as received" rule: a framework that adds or strips a
    // newline must not be papered over.
    for scheme in every_scheme() {
        let key = key_for(&scheme, 1);
        let headers = signed_headers(&scheme, &key, b"{}", 5);
        assert!(check(&scheme, &key, &headers, b"{}\n", 5).is_err());
    }
}

#[test]
fn wrong_secret_is_rejected_for_every_scheme() {
    for scheme in every_scheme() {
        let headers = signed_headers(&scheme, &key_for(&scheme, 1), b"{}", 5);
        let err = verify_sent(
            &scheme,
            &[key_for(&scheme, 2)],
            &headers,
            b"{}",
            5,
            TOLERANCE,
        )
        .unwrap_err();
        assert!(
            matches!(err, VerifyError::NoMatch { .. }),
            "{}: {err}",
            scheme.name()
        );
    }
}

#[test]
fn rotation_any_configured_key_verifies() {
    for scheme in every_scheme() {
        let old = key_for(&scheme, 1);
        let new = key_for(&scheme, 2);
        let headers = signed_headers(&scheme, &new, b"{}", 5);
        let verified = verify_sent(
            &scheme,
            &[old.clone(), new.clone()],
            &headers,
            b"{}",
            5,
            TOLERANCE,
        )
        .unwrap();
        assert_eq!(verified.key_index, 1, "{}", scheme.name());

        let headers = signed_headers(&scheme, &old, b"{}", 5);
        let verified = verify_sent(&scheme, &[old, new], &headers, b"{}", 5, TOLERANCE).unwrap();
        assert_eq!(verified.key_index, 0, "{}", scheme.name());
    }
}

#[test]
fn no_keys_is_its_own_error() {
    for scheme in every_scheme() {
        let headers = signed_headers(&scheme, &key_for(&scheme, 1), b"{}", 5);
        assert_eq!(
            verify_sent(&scheme, &[], &headers, b"{}", 5, TOLERANCE),
            Err(VerifyError::NoKeys)
        );
    }
}

#[test]
fn every_required_header_is_required() {
    for scheme in every_scheme() {
        let key = key_for(&scheme, 1);
        let full = signed_headers(&scheme, &key, b"{}", 5);
        // The delivery ids are for deduplication only; a request without one still
        // verifies.
        let dedup_only = [
            GITHUB_DELIVERY,
            TWILIO_IDEMPOTENCY,
            SHOPIFY_EVENT_ID,
            SHOPIFY_WEBHOOK_ID,
        ];
        let required = full.keys().filter(|name| !dedup_only.contains(name));
        for name in required {
            let mut headers = full.clone();
            headers.remove(name);
            let err = check(&scheme, &key, &headers, b"{}", 5).unwrap_err();
            assert_eq!(
                err,
                VerifyError::MissingHeader(name.clone()),
                "{}",
                scheme.name()
            );
        }
    }
}

#[test]
fn repeated_signature_header_is_rejected() {
    for scheme in every_scheme() {
        let key = key_for(&scheme, 1);
        let headers = signed_headers(&scheme, &key, b"{}", 5);
        let mut doubled = HeaderMap::new();
        for (name, value) in &headers {
            doubled.append(name.clone(), value.clone());
            doubled.append(name.clone(), value.clone());
        }
        assert!(matches!(
            check(&scheme, &key, &doubled, b"{}", 5),
            Err(VerifyError::MalformedHeader { .. })
        ));
    }
}

#[test]
fn non_ascii_header_value_is_malformed() {
    let key = key_for(&Scheme::Github, 1);
    let mut headers = HeaderMap::new();
    headers.insert(
        GITHUB_SIGNATURE,
        HeaderValue::from_bytes("sha256=é".as_bytes()).unwrap(),
    );
    assert_malformed(
        verify_sent(&Scheme::Github, &[key], &headers, b"{}", 0, 0),
        &GITHUB_SIGNATURE,
    );
}

// ---- Replay window -----------------------------------------------------------------

#[test]
fn timestamps_outside_the_window_are_rejected_both_ways() {
    let signed_at = 1_700_000_000;
    for scheme in timestamp_schemes() {
        let key = key_for(&scheme, 1);
        let headers = signed_headers(&scheme, &key, b"{}", signed_at);
        let tolerance = TOLERANCE as i64;
        // Verifier's clock far ahead: the request is old (a replay).
        // Verifier's clock far behind: the request claims to come from the future.
        for now in [signed_at + tolerance + 1, signed_at - tolerance - 1] {
            let err = check(&scheme, &key, &headers, b"{}", now).unwrap_err();
            match err {
                VerifyError::OutsideWindow {
                    ts,
                    now: got_now,
                    tolerance,
                    ..
                } => {
                    assert_eq!((ts, got_now, tolerance), (signed_at, now, TOLERANCE));
                }
                other => panic!("{}: expected OutsideWindow, got {other:?}", scheme.name()),
            }
        }
    }
}

#[test]
fn timestamps_exactly_at_the_window_edge_are_accepted() {
    let signed_at = 1_700_000_000;
    for scheme in timestamp_schemes() {
        let key = key_for(&scheme, 1);
        let headers = signed_headers(&scheme, &key, b"{}", signed_at);
        let tolerance = TOLERANCE as i64;
        for now in [signed_at + tolerance, signed_at - tolerance] {
            check(&scheme, &key, &headers, b"{}", now).unwrap();
        }
    }
}

#[test]
fn window_does_not_apply_to_schemes_without_timestamps() {
    for scheme in [Scheme::Github, generic_hex(), generic_base64()] {
        let key = key_for(&scheme, 1);
        let headers = signed_headers(&scheme, &key, b"{}", 0);
        verify_sent(&scheme, &[key], &headers, b"{}", i64::MAX, 0).unwrap();
    }
}

#[test]
fn window_check_does_not_overflow_at_extremes() {
    let scheme = Scheme::Slack;
    let key = key_for(&scheme, 1);
    let headers = signed_headers(&scheme, &key, b"{}", i64::MAX);
    assert!(matches!(
        verify_sent(&scheme, &[key], &headers, b"{}", i64::MIN, u64::MAX - 1),
        Err(VerifyError::OutsideWindow { .. })
    ));
}

#[test]
fn tampered_timestamp_is_rejected() {
    let now = 1_700_000_000;
    let key = key_for(&Scheme::StandardWebhooks, 1);
    let mut headers = signed_headers(&Scheme::StandardWebhooks, &key, b"{}", now);
    replace(&mut headers, WEBHOOK_TIMESTAMP, "1700000001");
    assert!(matches!(
        check(&Scheme::StandardWebhooks, &key, &headers, b"{}", now),
        Err(VerifyError::NoMatch { .. })
    ));

    let key = key_for(&Scheme::Slack, 1);
    let mut headers = signed_headers(&Scheme::Slack, &key, b"{}", now);
    replace(&mut headers, SLACK_TIMESTAMP, "1700000001");
    assert!(matches!(
        check(&Scheme::Slack, &key, &headers, b"{}", now),
        Err(VerifyError::NoMatch { .. })
    ));

    let key = key_for(&Scheme::Stripe, 1);
    let headers = signed_headers(&Scheme::Stripe, &key, b"{}", now);
    let original = headers[&STRIPE_SIGNATURE].to_str().unwrap();
    let tampered = original.replace("t=1700000000", "t=1700000001");
    assert_ne!(original, tampered);
    let headers = header_map(&[("stripe-signature", &tampered)]);
    assert!(matches!(
        check(&Scheme::Stripe, &key, &headers, b"{}", now),
        Err(VerifyError::NoMatch { .. })
    ));
}

#[test]
fn tampered_webhook_id_is_rejected() {
    let key = key_for(&Scheme::StandardWebhooks, 1);
    let mut headers = signed_headers(&Scheme::StandardWebhooks, &key, b"{}", 5);
    replace(&mut headers, WEBHOOK_ID, "msg_other");
    assert!(matches!(
        check(&Scheme::StandardWebhooks, &key, &headers, b"{}", 5),
        Err(VerifyError::NoMatch { .. })
    ));
}

#[test]
fn timestamps_must_be_plain_digits() {
    let key = key_for(&Scheme::Slack, 1);
    let not_digits = "timestamp is not Unix seconds in decimal digits";
    for (bad, reason) in [
        ("", not_digits),
        ("+5", not_digits),
        ("-5", not_digits),
        ("5.0", not_digits),
        ("5 ", not_digits),
        ("1e3", not_digits),
        ("abc", not_digits),
        ("99999999999999999999", "timestamp is too large"),
    ] {
        let mut headers = signed_headers(&Scheme::Slack, &key, b"{}", 5);
        headers.insert(SLACK_TIMESTAMP, HeaderValue::from_str(bad).unwrap());
        // The reason is what the operator reads in the log, so it must say what is
        // wrong with this very value.
        assert_eq!(
            check(&Scheme::Slack, &key, &headers, b"{}", 5),
            Err(malformed(&SLACK_TIMESTAMP, reason)),
            "{bad:?}"
        );
    }
}

// ---- Standard Webhooks specifics ---------------------------------------------------

fn standard_headers(signature: &str, ts: i64) -> HeaderMap {
    header_map(&[
        ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
        ("webhook-timestamp", &ts.to_string()),
        ("webhook-signature", signature),
    ])
}

/// Signature of the JS test payload at `ts`, under the JS test secret.
fn standard_signature(ts: i64) -> String {
    let key = key_from_secret(
        &Scheme::StandardWebhooks,
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    .unwrap();
    let headers = signed_headers_for(
        &Scheme::StandardWebhooks,
        &key,
        br#"{"test": 2432232314}"#,
        ts,
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
    );
    headers[&WEBHOOK_SIGNATURE].to_str().unwrap().to_owned()
}

#[test]
fn standard_webhooks_several_signatures_any_match_wins() {
    // Mirrors the "multi sig payload is valid" case of the standard-webhooks JS tests.
    let ts = 1_614_265_330;
    let valid = standard_signature(ts);
    let header = [
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
        "v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
        &valid,
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
    ]
    .join(" ");
    let key = key_from_secret(
        &Scheme::StandardWebhooks,
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    .unwrap();
    let body = br#"{"test": 2432232314}"#;
    check(
        &Scheme::StandardWebhooks,
        &key,
        &standard_headers(&header, ts),
        body,
        ts,
    )
    .unwrap();

    // Without the valid entry, the other well-formed entries do not help.
    let without_valid = [
        "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
        "v1,Mm7xgUVICxZfQ3bgf0h0Dof65L/IFx+PnZvnDWPCX6Q=",
    ]
    .join(" ");
    assert!(matches!(
        check(
            &Scheme::StandardWebhooks,
            &key,
            &standard_headers(&without_valid, ts),
            body,
            ts
        ),
        Err(VerifyError::NoMatch { .. })
    ));
}

#[test]
fn standard_webhooks_ignores_other_versions() {
    let ts = 1_614_265_330;
    let valid = standard_signature(ts);
    let key = key_from_secret(
        &Scheme::StandardWebhooks,
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    .unwrap();
    // The right bytes under another version label must not be accepted as v1.
    let relabelled = valid.replacen("v1,", "v2,", 1);
    assert_malformed(
        check(
            &Scheme::StandardWebhooks,
            &key,
            &standard_headers(&relabelled, ts),
            br#"{"test": 2432232314}"#,
            ts,
        ),
        &WEBHOOK_SIGNATURE,
    );
}

#[test]
fn standard_webhooks_malformed_signature_headers() {
    let ts = 1_614_265_330;
    let key = key_for(&Scheme::StandardWebhooks, 1);
    let valid = standard_signature(ts);
    for bad in [
        "",
        "v1",
        "v1,",
        "v1,!!!not-base64!!!",
        "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        &valid[..8],
    ] {
        assert_malformed(
            check(
                &Scheme::StandardWebhooks,
                &key,
                &standard_headers(bad, ts),
                b"{}",
                ts,
            ),
            &WEBHOOK_SIGNATURE,
        );
    }
}

#[test]
fn standard_webhooks_truncated_signature_does_not_match() {
    // Decodes as base64 but is too short: must be a mismatch, never a prefix match.
    let ts = 1_614_265_330;
    let key = key_from_secret(
        &Scheme::StandardWebhooks,
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    .unwrap();
    let truncated = "v1,g0hM9SsE+OTPJTGt";
    assert!(matches!(
        check(
            &Scheme::StandardWebhooks,
            &key,
            &standard_headers(truncated, ts),
            br#"{"test": 2432232314}"#,
            ts
        ),
        Err(VerifyError::NoMatch { .. })
    ));
}

#[test]
fn too_many_signatures_are_rejected() {
    let ts = 5;
    let key = key_for(&Scheme::StandardWebhooks, 1);
    let many =
        vec!["v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="; MAX_SIGNATURES + 1].join(" ");
    assert_eq!(
        check(
            &Scheme::StandardWebhooks,
            &key,
            &standard_headers(&many, ts),
            b"{}",
            ts,
        ),
        Err(malformed(&WEBHOOK_SIGNATURE, "too many signatures"))
    );
}

#[test]
fn as_many_signatures_as_allowed_are_all_checked() {
    let ts = 1_614_265_330;
    let key = key_from_secret(
        &Scheme::StandardWebhooks,
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    )
    .unwrap();
    // The one that matches comes last, so every entry up to the limit is compared.
    let valid = standard_signature(ts);
    let mut entries = vec!["v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="; MAX_SIGNATURES - 1];
    entries.push(&valid);
    let verified = check(
        &Scheme::StandardWebhooks,
        &key,
        &standard_headers(&entries.join(" "), ts),
        br#"{"test": 2432232314}"#,
        ts,
    );
    assert_eq!(verified.map(|v| v.key_index), Ok(0));
}

// ---- Stripe specifics --------------------------------------------------------------

fn stripe_signature_hex(key: &[u8], ts: i64, body: &[u8]) -> String {
    let headers = signed_headers(&Scheme::Stripe, key, body, ts);
    let value = headers[&STRIPE_SIGNATURE].to_str().unwrap();
    value.split_once(",v1=").unwrap().1.to_owned()
}

#[test]
fn stripe_several_v1_entries_and_v0_is_ignored() {
    let ts = 1_700_000_000;
    let key = key_for(&Scheme::Stripe, 1);
    let good = stripe_signature_hex(&key, ts, b"{}");
    let other = stripe_signature_hex(&key_for(&Scheme::Stripe, 2), ts, b"{}");
    let header = format!("t={ts},v1={other},v1={good},v0={other}");
    let headers = header_map(&[("Stripe-Signature", &header)]);
    check(&Scheme::Stripe, &key, &headers, b"{}", ts).unwrap();

    // A correct signature labelled v0 is not checked.
    let header = format!("t={ts},v0={good},v1={other}");
    let headers = header_map(&[("Stripe-Signature", &header)]);
    assert!(matches!(
        check(&Scheme::Stripe, &key, &headers, b"{}", ts),
        Err(VerifyError::NoMatch { .. })
    ));
}

#[test]
fn stripe_malformed_headers() {
    let ts = 1_700_000_000;
    let key = key_for(&Scheme::Stripe, 1);
    let good = stripe_signature_hex(&key, ts, b"{}");
    for bad in [
        String::new(),
        format!("v1={good}"),
        format!("t={ts}"),
        format!("t={ts},v0={good}"),
        format!("t={ts},v1=not-hex"),
        format!("t={ts},v1="),
        format!("t={ts},t={ts},v1={good}"),
        format!("t=soon,v1={good}"),
    ] {
        let headers = header_map(&[("Stripe-Signature", &bad)]);
        assert_malformed(
            check(&Scheme::Stripe, &key, &headers, b"{}", ts),
            &STRIPE_SIGNATURE,
        );
    }
}

// ---- GitHub, Slack and generic specifics -------------------------------------------

#[test]
fn github_malformed_headers() {
    let key = key_for(&Scheme::Github, 1);
    for bad in [
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha256=xyz",
        "sha256=abc",
        "sha256=",
    ] {
        let headers = header_map(&[("X-Hub-Signature-256", bad)]);
        assert_malformed(
            verify_sent(
                &Scheme::Github,
                std::slice::from_ref(&key),
                &headers,
                b"{}",
                0,
                0,
            ),
            &GITHUB_SIGNATURE,
        );
    }
}

#[test]
fn slack_malformed_signature_headers() {
    let key = key_for(&Scheme::Slack, 1);
    for bad in ["a2114d57", "v1=a2114d57", "v0=zz", "v0="] {
        let headers = header_map(&[
            ("X-Slack-Request-Timestamp", "5"),
            ("X-Slack-Signature", bad),
        ]);
        assert_malformed(
            check(&Scheme::Slack, &key, &headers, b"{}", 5),
            &SLACK_SIGNATURE,
        );
    }
}

#[test]
fn generic_hmac_prefix_and_encoding() {
    let scheme = generic_hex();
    let key = key_for(&scheme, 1);
    let produced = signed_headers(&scheme, &key, b"{}", 0);
    let value = produced["x-signature"].to_str().unwrap();
    let hex_sig = value.strip_prefix("sha256=").expect("prefix is produced");
    assert_eq!(hex_sig.len(), 64);

    // Uppercase hex from a sender is fine.
    let upper = header_map(&[("x-signature", &format!("sha256={}", hex_sig.to_uppercase()))]);
    verify_sent(&scheme, std::slice::from_ref(&key), &upper, b"{}", 0, 0).unwrap();

    let header = HeaderName::from_static("x-signature");
    for bad in [
        hex_sig.to_owned(),
        format!("SHA256={hex_sig}"),
        "sha256=zz".to_owned(),
        "sha256=".to_owned(),
    ] {
        let headers = header_map(&[("x-signature", &bad)]);
        assert_malformed(
            verify_sent(&scheme, std::slice::from_ref(&key), &headers, b"{}", 0, 0),
            &header,
        );
    }

    let scheme = generic_base64();
    let key = key_for(&scheme, 1);
    let produced = signed_headers(&scheme, &key, b"{}", 0);
    let value = produced["x-body-signature"].to_str().unwrap();
    assert!(value.ends_with('='), "base64 is produced padded: {value}");
    // Unpadded base64 from a sender is fine.
    let unpadded = header_map(&[("x-body-signature", value.trim_end_matches('='))]);
    verify_sent(&scheme, std::slice::from_ref(&key), &unpadded, b"{}", 0, 0).unwrap();
    let headers = header_map(&[("x-body-signature", "*not base64*")]);
    assert_malformed(
        verify_sent(&scheme, &[key], &headers, b"{}", 0, 0),
        &HeaderName::from_static("x-body-signature"),
    );
}

// ---- Error messages ----------------------------------------------------------------

#[test]
fn errors_name_the_header_and_leak_no_secrets() {
    let secret = "It's a Secret to Everybody";
    let key = key_from_secret(&Scheme::Github, secret).unwrap();
    let expected_hex = hex::encode(keyed_mac(&key, b"", b"{}").finalize().into_bytes());
    let headers = header_map(&[("X-Hub-Signature-256", &format!("sha256={}", "0".repeat(64)))]);
    let message = verify_sent(&Scheme::Github, &[key], &headers, b"{}", 0, 0)
        .unwrap_err()
        .to_string();
    assert!(message.contains("x-hub-signature-256"), "{message}");
    assert!(!message.contains(secret), "{message}");
    assert!(!message.contains(&expected_hex), "{message}");

    let err = verify_sent(
        &Scheme::Slack,
        &[b"k".to_vec()],
        &HeaderMap::new(),
        b"",
        0,
        0,
    )
    .unwrap_err();
    assert!(err.to_string().contains("x-slack-"), "{err}");

    let key = key_for(&Scheme::Stripe, 1);
    let headers = signed_headers(&Scheme::Stripe, &key, b"{}", 0);
    let err = verify_sent(&Scheme::Stripe, &[key], &headers, b"{}", 1000, 10).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("stripe-signature"), "{message}");
    assert!(
        message.contains("1000") && message.contains("10s"),
        "{message}"
    );
}

// ---- Secrets -----------------------------------------------------------------------

#[test]
fn standard_webhooks_secret_with_and_without_prefix() {
    let scheme = Scheme::StandardWebhooks;
    let with = key_from_secret(&scheme, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let bare = key_from_secret(&scheme, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    assert_eq!(with, bare);
    assert_eq!(with.len(), 24);
}

#[test]
fn standard_webhooks_rejects_non_base64_secret_but_stripe_takes_it_as_is() {
    let secret = "whsec_test_secret";
    let err = key_from_secret(&Scheme::StandardWebhooks, secret).unwrap_err();
    assert!(matches!(err, SecretError::NotBase64 { .. }));
    assert!(
        err.to_string()
            .starts_with("a standard-webhooks secret must be `whsec_` followed by base64"),
        "{err}"
    );

    assert_eq!(
        key_from_secret(&Scheme::Stripe, secret).unwrap(),
        secret.as_bytes()
    );
}

#[test]
fn secret_errors_do_not_quote_the_secret() {
    for secret in ["whsec_abc$def", "whsec_abcde", "whsec_abc=def"] {
        let err = key_from_secret(&Scheme::StandardWebhooks, secret).unwrap_err();
        let message = err.to_string();
        assert!(
            !message.contains('$') && !message.contains("36"),
            "{message}"
        );
        assert!(!message.contains("abc"), "{message}");
    }
    let err = key_from_secret(&Scheme::StandardWebhooks, "whsec_abc$def").unwrap_err();
    assert!(err.to_string().contains("character 4 "), "{err}");
}

#[test]
fn standard_webhooks_rejects_bare_prefix() {
    assert!(matches!(
        key_from_secret(&Scheme::StandardWebhooks, "whsec_"),
        Err(SecretError::NotBase64 { .. })
    ));
}

#[test]
fn raw_secret_schemes_use_the_bytes_unchanged() {
    for scheme in [Scheme::Github, Scheme::Slack, generic_hex()] {
        // Even a valid-looking base64 or whsec_ secret is not decoded.
        for secret in ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "aGVsbG8="] {
            assert_eq!(key_from_secret(&scheme, secret).unwrap(), secret.as_bytes());
        }
    }
}

#[test]
fn empty_and_whitespace_secrets_are_rejected() {
    for scheme in every_scheme() {
        assert_eq!(
            key_from_secret(&scheme, ""),
            Err(SecretError::Empty {
                scheme: scheme.name()
            })
        );
        for secret in ["abc\n", " abc", "\tabc"] {
            assert_eq!(
                key_from_secret(&scheme, secret),
                Err(SecretError::SurroundingWhitespace {
                    scheme: scheme.name()
                })
            );
        }
    }
}

// ---- Delivery ids ------------------------------------------------------------------

#[test]
fn delivery_ids_come_from_the_right_place() {
    let headers = header_map(&[
        ("webhook-id", "msg_1"),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
    ]);
    let body = serde_json::json!({ "id": "evt_1", "event_id": "Ev1" });
    assert_eq!(
        delivery_id(&Scheme::StandardWebhooks, &headers, &body).as_deref(),
        Some("msg_1")
    );
    assert_eq!(
        delivery_id(&Scheme::Github, &headers, &body).as_deref(),
        Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")
    );
    assert_eq!(
        delivery_id(&Scheme::Stripe, &headers, &body).as_deref(),
        Some("evt_1")
    );
    assert_eq!(
        delivery_id(&Scheme::Slack, &headers, &body).as_deref(),
        Some("Ev1")
    );
    assert_eq!(delivery_id(&generic_hex(), &headers, &body), None);

    let twilio_scheme = twilio("https://example.com/sms");
    let headers = header_map(&[("I-Twilio-Idempotency-Token", "2c0b4a6e-idem")]);
    assert_eq!(
        delivery_id(&twilio_scheme, &headers, &body).as_deref(),
        Some("2c0b4a6e-idem")
    );
    // Shopify's event id when there is one, its webhook id otherwise.
    let both = header_map(&[
        ("X-Shopify-Event-Id", "evt-98880550-7158"),
        ("X-Shopify-Webhook-Id", "b54557e4-bdd9"),
    ]);
    assert_eq!(
        delivery_id(&Scheme::Shopify, &both, &body).as_deref(),
        Some("evt-98880550-7158")
    );
    let webhook_only = header_map(&[("X-Shopify-Webhook-Id", "b54557e4-bdd9")]);
    assert_eq!(
        delivery_id(&Scheme::Shopify, &webhook_only, &body).as_deref(),
        Some("b54557e4-bdd9")
    );
}

#[test]
fn delivery_ids_absent_empty_or_not_strings_are_none() {
    let empty_headers = header_map(&[
        ("webhook-id", ""),
        ("I-Twilio-Idempotency-Token", ""),
        ("X-Shopify-Event-Id", ""),
    ]);
    let body = serde_json::json!({ "id": 7, "event_id": "", "data": { "id": "nested" } });
    for scheme in [
        Scheme::StandardWebhooks,
        Scheme::Github,
        Scheme::Stripe,
        Scheme::Slack,
        twilio("https://example.com/sms"),
        Scheme::Shopify,
    ] {
        assert_eq!(
            delivery_id(&scheme, &empty_headers, &body),
            None,
            "{}",
            scheme.name()
        );
        assert_eq!(
            delivery_id(&scheme, &HeaderMap::new(), &serde_json::json!([])),
            None,
            "{}",
            scheme.name()
        );
    }
}

#[test]
fn signed_headers_carry_the_delivery_id() {
    let key = key_for(&Scheme::StandardWebhooks, 1);
    let headers = signed_headers(&Scheme::StandardWebhooks, &key, b"{}", 0);
    let body = serde_json::json!({});
    assert_eq!(
        delivery_id(&Scheme::StandardWebhooks, &headers, &body).as_deref(),
        Some("msg_test")
    );
    for scheme in [
        Scheme::Github,
        twilio("https://example.com/sms"),
        Scheme::Shopify,
    ] {
        let headers = signed_headers(&scheme, b"k", b"{}", 0);
        assert_eq!(
            delivery_id(&scheme, &headers, &body).as_deref(),
            Some("msg_test"),
            "{}",
            scheme.name()
        );
    }
}

// ---- Signing edge cases ------------------------------------------------------------

#[test]
fn sign_rejects_message_ids_that_cannot_round_trip() {
    for id in ["", "has space", "new\nline", "ünïcode"] {
        for scheme in [Scheme::StandardWebhooks, Scheme::Github] {
            assert_eq!(
                sign(&scheme, b"k", b"{}", 0, id),
                Err(SignError::InvalidMessageId),
                "{id:?}"
            );
        }
    }
    // Schemes that do not send the id do not care about it.
    assert!(sign(&Scheme::Stripe, b"k", b"{}", 0, "").is_ok());
}

#[test]
fn sign_rejects_a_prefix_that_cannot_be_a_header_value() {
    let scheme = Scheme::HmacSha256(GenericHmac {
        header: HeaderName::from_static("x-signature"),
        encoding: Encoding::Hex,
        prefix: "bad\n".to_owned(),
    });
    assert_eq!(
        sign(&scheme, b"k", b"{}", 0, "id"),
        Err(SignError::InvalidPrefix)
    );
    let scheme = Scheme::HmacSha256(GenericHmac {
        header: HeaderName::from_static("x-signature"),
        encoding: Encoding::Hex,
        prefix: "sïg=".to_owned(),
    });
    assert_eq!(
        sign(&scheme, b"k", b"{}", 0, "id"),
        Err(SignError::InvalidPrefix)
    );
}

// ---- Names and properties ----------------------------------------------------------

#[test]
fn scheme_kind_names_round_trip() {
    for kind in SchemeKind::ALL {
        assert_eq!(kind.name().parse::<SchemeKind>(), Ok(kind));
        assert_eq!(kind.to_string(), kind.name());
    }
    let err = "GitHub".parse::<SchemeKind>().unwrap_err();
    assert_eq!(err, UnknownScheme("GitHub".to_owned()));
    assert!(
        err.to_string()
            .contains("standard-webhooks, stripe, github"),
        "{err}"
    );

    for encoding in [Encoding::Hex, Encoding::Base64] {
        assert_eq!(encoding.name().parse::<Encoding>(), Ok(encoding));
        assert_eq!(encoding.to_string(), encoding.name());
    }
    assert!("base32".parse::<Encoding>().is_err());
}

#[test]
fn scheme_properties() {
    // Name, signed timestamp, cannot send custom headers, delivery id in the body.
    let table = [
        (
            Scheme::StandardWebhooks,
            "standard-webhooks",
            true,
            false,
            false,
        ),
        (Scheme::Stripe, "stripe", true, true, true),
        (Scheme::Github, "github", false, true, false),
        (Scheme::Slack, "slack", true, true, true),
        (
            twilio("https://example.com/sms"),
            "twilio",
            false,
            true,
            false,
        ),
        (Scheme::Shopify, "shopify", false, true, false),
        (generic_hex(), "hmac-sha256", false, false, false),
    ];
    for (scheme, name, has_timestamp, cannot_send_custom_headers, reads_body) in table {
        assert_eq!(scheme.name(), name);
        assert_eq!(scheme.kind().has_timestamp(), has_timestamp, "{name}");
        assert_eq!(scheme.kind().reads_body(), reads_body, "{name}");
        assert_eq!(
            scheme.kind().cannot_send_custom_headers(),
            cannot_send_custom_headers,
            "{name}"
        );
        assert_eq!(scheme.kind().name(), name);
    }
}
