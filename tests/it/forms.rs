//! Form bodies (`application/x-www-form-urlencoded`) and the senders that post them:
//! Twilio, signed by its own `RequestValidator` over the URL it requested and the form's
//! fields (or a JSON body's `bodySHA256`), Shopify by its library's helper, and Slack's
//! slash commands and interactivity by the Slack SDK. A form is stored and handed to the
//! agent as received, and read as a JSON object where the payload is read (`target` and
//! `message` templates, filters).

use crate::helpers::error_text;
use crate::senders::*;
use crate::support::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The zoo, with a Twilio source (`twilio-sig`, reached from outside at [`TWILIO_URL`]),
/// a form-reading Slack source (`slack-ui`, whose sessions are named from the form), and
/// `tickets`, the API key's, named from a form field.
fn form_zoo() -> Zoo {
    Zoo::start_with(
        |config, home| {
            let project = home.project("proj");
            let twilio = Scheme::Twilio;
            let sources = &mut config["webhooks"];
            sources[source_name(twilio, Auth::Signature)] =
                source_config(twilio, Auth::Signature, &project, json!(twilio.secret(1)));
            let slack = Scheme::Slack;
            let mut slack_ui =
                source_config(slack, Auth::Signature, &project, json!(slack.secret(1)));
            slack_ui["target"] = json!("slack-{{payload.type}}-{{channel_id}}");
            sources["slack-ui"] = slack_ui;
            sources["tickets"] = json!({ "project": project, "target": "ticket-{{ticket}}" });
        },
        &[],
    )
}

/// A delivery as Twilio makes it: `body` posted to the source with `query`, signed by
/// Twilio's library over [`TWILIO_URL`] and that query with Auth Token `secret`.
struct Twilio {
    query: String,
    delivery: Delivery,
}

impl Twilio {
    fn form(secret: &str, body: &str, query: &str, id: &str) -> Twilio {
        Twilio::signed_for(TWILIO_URL, secret, body, query, id, FORM)
    }

    /// A JSON body: Twilio adds its hash to the query, and signs the URL alone.
    fn json(secret: &str, body: &str, id: &str) -> Twilio {
        let query = format!("bodySHA256={}", hex::encode(Sha256::digest(body)));
        Twilio::signed_for(TWILIO_URL, secret, body, &query, id, "application/json")
    }

    fn signed_for(
        url: &str,
        secret: &str,
        body: &str,
        query: &str,
        id: &str,
        content_type: &str,
    ) -> Twilio {
        let signed_url = match query {
            "" => url.to_owned(),
            query => format!("{url}?{query}"),
        };
        let mut delivery = Delivery::unsigned(body).with("Content-Type", content_type);
        delivery
            .headers
            .extend(sign_twilio(secret, body, &signed_url, id));
        Twilio {
            query: query.to_owned(),
            delivery,
        }
    }

    fn post(&self, zoo: &Zoo) -> Answer {
        post_to(zoo, "twilio-sig", &self.query, &self.delivery)
    }
}

const FORM: &str = "application/x-www-form-urlencoded";

/// Posts `delivery` to `source` with `query` on the URL, from a fresh client.
fn post_to(zoo: &Zoo, source: &str, query: &str, delivery: &Delivery) -> Answer {
    let path = match query {
        "" => format!("/api/webhook/{source}"),
        query => format!("/api/webhook/{source}?{query}"),
    };
    deliver_at(&zoo.daemon, &path, delivery)
}

#[track_caller]
fn accepted(answer: &Answer, what: &str) -> (String, String) {
    assert_eq!(answer.status, 202, "{what}: {answer:?}");
    let v = answer.json();
    (
        v["session"].as_str().unwrap().to_owned(),
        v["event"].as_str().unwrap().to_owned(),
    )
}

/// The user message of `event` in `session`.
fn user_message(zoo: &Zoo, session: &str, event: &str) -> Value {
    zoo.home
        .session(session)
        .into_iter()
        .find(|l| l["type"] == "message" && l["role"] == "user" && l["event"] == event)
        .unwrap_or_else(|| panic!("no message of {event} in {session}"))
}

#[test]
fn twilio_form_deliveries_are_accepted_and_any_change_gets_the_one_401() {
    let zoo = form_zoo();
    let reference = zoo.no_key_401();
    let secret = Scheme::Twilio.secret(1);
    let id = unique_id("twilio");
    let body = Scheme::Twilio.body(&id);
    // The URL set in Twilio's console may carry a query of its own; it is signed too.
    let query = "tenant=acme&lang=de";
    let good = Twilio::form(&secret, &body, query, &id);

    let (session, event) = accepted(&good.post(&zoo), "a Twilio form");
    let user = user_message(&zoo, &session, &event);
    assert_eq!(user["body"], body.as_str(), "the form is kept as received");
    assert_eq!(
        user["text"],
        format!("Webhook from twilio-sig: {body}").as_str()
    );

    let other_url = Twilio::signed_for(
        "https://hooks.example.com/elsewhere",
        &secret,
        &body,
        query,
        &id,
        FORM,
    );
    let forged = [
        (
            "a tampered field",
            Twilio {
                query: query.to_owned(),
                delivery: good
                    .delivery
                    .clone()
                    .with_body(body.replace("amount=100", "amount=900")),
            },
        ),
        (
            "another query",
            Twilio {
                query: "tenant=evil&lang=de".to_owned(),
                delivery: good.delivery.clone(),
            },
        ),
        ("signed for another URL", other_url),
        (
            "a wrong Auth Token",
            Twilio::form(&Scheme::Twilio.secret(9), &body, query, &id),
        ),
        (
            "no signature",
            Twilio {
                query: query.to_owned(),
                delivery: good.delivery.clone().without("X-Twilio-Signature"),
            },
        ),
    ];
    for (what, forged) in &forged {
        assert_same_401(&forged.post(&zoo), &reference, what);
    }

    // Twilio's retry carries the same idempotency token.
    let answer = good.post(&zoo);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.json(),
        json!({ "session": session, "event": event, "duplicate": true })
    );
}

#[test]
fn a_twilio_json_delivery_is_signed_through_its_body_hash() {
    let zoo = form_zoo();
    let reference = zoo.no_key_401();
    let secret = Scheme::Twilio.secret(1);
    let id = unique_id("twilio-json");
    let body = r#"{"CallSid":"CA1234","CallStatus":"completed","Note":"Zoë ☕"}"#;
    let good = Twilio::json(&secret, body, &id);
    let (session, event) = accepted(&good.post(&zoo), "a Twilio JSON body");
    assert_eq!(user_message(&zoo, &session, &event)["body"], body);

    // The hash in the signed URL no longer fits the body.
    let tampered = Twilio {
        query: good.query.clone(),
        delivery: good
            .delivery
            .clone()
            .with_body(body.replace("completed", "failed")),
    };
    assert_same_401(&tampered.post(&zoo), &reference, "a tampered JSON body");
}

#[test]
fn a_slack_slash_command_and_interactivity_are_forms_read_into_the_target() {
    let zoo = form_zoo();
    let slack = Scheme::Slack;
    // Slack's own worked example of a slash command.
    let command = "token=gIkuvaNzQIHg97ATvDxqgjtO&team_id=T0001&team_domain=example&channel_id=C2147483705&channel_name=test&user_id=U2147483697&user_name=Steve&command=%2Fweather&text=94070&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2F1234%2F5678&trigger_id=13345224609.738474920.8088930838d88f008e0";
    let d =
        Delivery::signed(slack, &slack.secret(1), command, now(), "").with("Content-Type", FORM);
    let (session, event) = accepted(&post_to(&zoo, "slack-ui", "", &d), "a slash command");
    // No `payload` in a slash command: the template cannot be filled.
    assert_eq!(session.len(), 26, "a session of its own: {session}");
    assert_eq!(user_message(&zoo, &session, &event)["body"], command);

    // The plain Slack source takes it too, signed over the raw bytes.
    let d =
        Delivery::signed(slack, &slack.secret(1), command, now(), "").with("Content-Type", FORM);
    zoo.accept(&source_name(slack, Auth::Signature), &d);

    // Interactivity: `payload` holds JSON, which the template reaches into.
    let payload = json!({
        "type": "block_actions",
        "user": { "id": "U2147483697" },
        "actions": [{ "action_id": "approve", "value": "deploy ☕" }],
    });
    let body = format!(
        "payload={}&channel_id=C2147483705",
        form_urlencoded::byte_serialize(payload.to_string().as_bytes()).collect::<String>()
    );
    let d = Delivery::signed(slack, &slack.secret(1), body.clone(), now(), "")
        .with("Content-Type", FORM);
    let (session, event) = accepted(&post_to(&zoo, "slack-ui", "", &d), "interactivity");
    assert_eq!(session, "slack-block_actions-C2147483705");
    let user = user_message(&zoo, &session, &event);
    assert_eq!(user["body"], body.as_str(), "the form is kept as received");
    assert_eq!(
        user["text"],
        format!("Webhook from slack-ui: {body}").as_str()
    );

    // Signed with another secret, the same form is refused like any other.
    let reference = zoo.no_key_401();
    let d = Delivery::signed(slack, &slack.secret(9), body, now(), "").with("Content-Type", FORM);
    assert_same_401(
        &post_to(&zoo, "slack-ui", "", &d),
        &reference,
        "a form with a wrong Slack secret",
    );
}

#[test]
fn a_form_fills_the_target_template_whatever_its_content_type() {
    let zoo = form_zoo();
    let body = "ticket=OPS-42&note=disk+full+on+db1&tag=urgent&tag=db";
    for content_type in [FORM, "text/plain", "application/json"] {
        let d = Delivery::unsigned(body)
            .with("Content-Type", content_type)
            .with_key();
        let (session, event) = zoo.accept("tickets", &d);
        assert_eq!(session, "ticket-OPS-42", "{content_type}");
        let user = user_message(&zoo, &session, &event);
        assert_eq!(user["body"], body);
        assert_eq!(
            user["text"],
            format!("Webhook from tickets: {body}").as_str()
        );
    }
}

#[test]
fn a_body_neither_json_nor_a_form_gets_a_400_saying_why() {
    let zoo = form_zoo();
    for (body, says) in [
        (
            "hello world",
            "body is neither JSON nor a form: as JSON, expected value at line 1 column 1; as a form (application/x-www-form-urlencoded), field 1 (at offset 0) has no `=`",
        ),
        (
            "ticket=OPS 42",
            "as a form (application/x-www-form-urlencoded), the byte at offset 10 is a space",
        ),
        (
            "ticket=100%",
            "the `%` at offset 10 is not followed by two hex digits",
        ),
        (
            r#"{"ticket": "OPS-42""#,
            "as JSON, EOF while parsing an object",
        ),
    ] {
        let d = Delivery::unsigned(body)
            .with("Content-Type", FORM)
            .with_key();
        let answer = zoo.post("tickets", &d);
        assert_eq!(answer.status, 400, "{body}: {answer:?}");
        let text = error_text(&answer);
        assert!(text.contains(says), "{body}: {text}");
    }
}

#[test]
fn a_repeated_shopify_event_is_a_duplicate_even_as_another_webhook() {
    let zoo = form_zoo();
    let shopify = Scheme::Shopify;
    let id = unique_id("shopify");
    let body = shopify.body(&id);
    let first = Delivery::signed(shopify, &shopify.secret(1), body.clone(), now(), &id);
    let source = source_name(shopify, Auth::Signature);
    let (session, event) = zoo.accept(&source, &first);
    // A second subscription to the topic: its own webhook id, the same event id.
    let again = first
        .clone()
        .with("X-Shopify-Webhook-Id", "another-subscription");
    let answer = zoo.post(&source, &again);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.json(),
        json!({ "session": session, "event": event, "duplicate": true })
    );
}

#[test]
fn lowkey_send_posts_a_form_file_signed_for_twilio() {
    let zoo = form_zoo();
    let url = format!("http://{}", zoo.daemon.addr.as_ref().unwrap());
    let id = unique_id("send");
    let form = Scheme::Twilio.body(&id);
    // As an editor saves it: with a line end, which is not part of the form.
    let file = zoo.home.dir.path().join("form.txt");
    std::fs::write(&file, format!("{form}\n")).unwrap();
    let json_file = zoo.home.dir.path().join("call.json");
    let json_body = r#"{"CallSid":"CA99","CallStatus":"ringing"}"#;
    std::fs::write(&json_file, json_body).unwrap();
    for (file, stored) in [(&file, form.as_str()), (&json_file, json_body)] {
        let out = zoo
            .home
            .run(&["send", "twilio-sig", file.to_str().unwrap(), "--url", &url]);
        assert_eq!(out.stdout.lines().next(), Some("202"), "{out:?}");
        let answer: Value = serde_json::from_str(out.stdout.lines().nth(1).unwrap()).unwrap();
        let session = answer["session"].as_str().unwrap();
        let event = answer["event"].as_str().unwrap();
        assert_eq!(user_message(&zoo, session, event)["body"], stored);
    }
}

/// A form is read like JSON by the rest of a source: Slack's slash commands are filtered
/// by their command and interactivity by its payload's type, a message template reads
/// the form's fields, and Shopify deliveries are filtered by their topic header.
#[test]
fn forms_are_filtered_and_fill_the_message_like_json() {
    let (slack, shopify) = (Scheme::Slack, Scheme::Shopify);
    let (slack_src, shop_src) = (
        source_name(slack, Auth::Signature),
        source_name(shopify, Auth::Signature),
    );
    let zoo = Zoo::start_with(
        |config, home| {
            // The agent answers with what it read.
            let echo = home.script("echo.sh", "cat");
            config["agents"]["echo"] = json!({ "command": [echo] });
            let source = &mut config["webhooks"][&slack_src];
            source["agent"] = json!("echo");
            source["events"] = json!(["/deploy", "block_actions"]);
            source["message"] = json!("{{user_name}} ran {{command}} {{text}}");
            config["webhooks"][&shop_src]["events"] = json!(["orders/*"]);
        },
        &[],
    );
    let form = |body: &str| {
        Delivery::signed(slack, &slack.secret(1), body, now(), "").with("Content-Type", FORM)
    };
    let command = |name: &str| {
        format!(
            "team_id=T0001&channel_id=C2147483705&user_name=Steve&command=%2F{name}&text=api+now"
        )
    };
    let (session, event) = zoo.accept(&slack_src, &form(&command("deploy")));
    zoo.daemon.wait_run_end(&event);
    let lines = zoo.home.session(&session);
    let said = |role: &str| {
        lines
            .iter()
            .find(|l| l["type"] == "message" && l["role"] == role)
            .map(|l| l["text"].as_str().unwrap().trim_end().to_owned())
            .unwrap()
    };
    assert_eq!(said("user"), "Steve ran /deploy api now");
    assert_eq!(said("agent"), "Steve ran /deploy api now");

    let answer = zoo.post(&slack_src, &form(&command("weather")));
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.json(),
        json!({ "ignored": true, "reason": format!("event \"/weather\" is not in webhooks.{slack_src}.events") })
    );

    let interaction = |kind: &str| {
        let payload = json!({ "type": kind, "user": { "id": "U2147483697" } }).to_string();
        format!(
            "payload={}",
            form_urlencoded::byte_serialize(payload.as_bytes()).collect::<String>()
        )
    };
    zoo.accept(&slack_src, &form(&interaction("block_actions")));
    let answer = zoo.post(&slack_src, &form(&interaction("view_closed")));
    assert_eq!(answer.json()["ignored"], true, "{answer:?}");

    let order = |topic: &str| {
        let id = unique_id("shopify");
        Delivery::signed(shopify, &shopify.secret(1), shopify.body(&id), now(), &id)
            .with("X-Shopify-Topic", topic)
    };
    zoo.accept(&shop_src, &order("orders/create"));
    let answer = zoo.post(&shop_src, &order("products/update"));
    assert_eq!(
        answer.json(),
        json!({ "ignored": true, "reason": format!("event \"products/update\" is not in webhooks.{shop_src}.events") })
    );
}
