//! Filters: which deliveries of a source start work. A source may list the `events` it
//! takes and `match` fields of the payload; a delivery must pass both. One that does
//! not is answered `200 {"ignored": true, "reason": ...}` and dropped (see
//! `http/webhook.rs`).
//!
//! This module holds the filters themselves: parsing a condition or an event name
//! from the config's JSON, the analysis that finds filters that can never match, and
//! evaluating a delivery. The config side (key paths, GitHub's event names, where an
//! event name is read from) is `config/filters.rs`.
//!
//! The rules, as the README states them:
//! - an `events` entry ending in `*` matches by prefix; any other is compared exactly;
//! - a `match` condition is a value (equality), a list of values (one of them),
//!   `{"prefix": "..."}` (a string starting with it) or `{"present": true|false}`;
//! - a field that is `null` counts as absent, so `null` and `{"present": false}` say
//!   the same;
//! - numbers compare by value (`1` and `1.0` are equal); a string never equals a
//!   number (`"7"` is not `7`).

use crate::config::{FieldPath, kind};
use crate::session::first_chars;
use crate::signature::SchemeKind;
use http::{HeaderMap, HeaderName};
use serde_json::Value;
use std::fmt;

/// A source's filters; the default lets every delivery through.
#[derive(Debug, Default)]
pub struct Filters {
    pub events: Option<Events>,
    /// `match`: every rule must pass.
    pub rules: Vec<Rule>,
}

/// `events`: the event names that start work, and where a delivery names its event.
#[derive(Debug)]
pub struct Events {
    pub names: Vec<Pattern>,
    pub at: EventAt,
}

/// An `events` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    /// `customer.subscription.*`, kept without its `*`.
    Prefix(String),
}

/// Where a delivery's event name is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAt {
    Header(HeaderName),
    /// The first of these payload fields that holds a string.
    Fields(Vec<FieldPath>),
}

/// One `match` entry: the field, as the config wrote it and parsed, and its condition.
#[derive(Debug)]
pub struct Rule {
    pub key: String,
    pub path: FieldPath,
    pub condition: Condition,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// A string, number, boolean or `null` (absent).
    Equals(Value),
    /// Any one of these scalars.
    OneOf(Vec<Value>),
    /// A string that starts with this.
    Prefix(String),
    /// `true`: there and not `null`; `false`: absent or `null`.
    Present(bool),
}

/// Where a scheme's senders name the event a delivery is, for `events` on a source
/// without `eventHeader`; `None` when the scheme does not say.
pub fn event_at(kind: SchemeKind) -> Option<EventAt> {
    let fields = |paths: &[&str]| {
        EventAt::Fields(
            paths
                .iter()
                .map(|p| FieldPath::parse(p).expect("a field path"))
                .collect(),
        )
    };
    match kind {
        SchemeKind::Github => Some(EventAt::Header(HeaderName::from_static("x-github-event"))),
        SchemeKind::Stripe | SchemeKind::StandardWebhooks => Some(fields(&["type"])),
        // The Events API names the event inside `event`; its envelope's `type` is
        // `event_callback`. Other JSON payloads have only the outer `type`; the forms
        // name it in their JSON `payload` (interactivity) or are a slash `command`.
        SchemeKind::Slack => Some(fields(&["event.type", "type", "payload.type", "command"])),
        SchemeKind::Shopify => Some(EventAt::Header(HeaderName::from_static("x-shopify-topic"))),
        SchemeKind::Twilio | SchemeKind::HmacSha256 => None,
    }
}

impl Pattern {
    /// An `events` entry: a name, or a prefix ending in `*`.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("an empty event name never matches; write the event's name".into());
        }
        match text.find('*') {
            None => Ok(Pattern::Exact(text.to_owned())),
            Some(at) if at == text.len() - 1 => Ok(Pattern::Prefix(text[..at].to_owned())),
            Some(_) => Err(format!(
                "\"{text}\": `*` may only end a name, to match every event starting with what comes before it, as in \"customer.subscription.*\""
            )),
        }
    }

    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(exact) => name == exact,
            Pattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
        }
    }
}

impl Condition {
    /// A `match` value; the error says what is wrong with it and how to write it.
    pub fn parse(value: &Value) -> Result<Condition, String> {
        const SHAPES: &str = "a value to equal, a list of values (one of them), {\"prefix\": \"...\"} or {\"present\": true|false}";
        match value {
            Value::Array(items) if items.is_empty() => Err(
                "an empty list matches nothing; list the values to take, such as [\"opened\", \"reopened\"]".into(),
            ),
            Value::Array(items) => match items.iter().position(|v| v.is_array() || v.is_object()) {
                Some(i) => Err(format!(
                    "item {i} of the list is {}; a list holds the values to take, each a string, number, true, false or null (to test a field inside a value, name it in the path, e.g. \"pull_request.state\")",
                    kind(&items[i])
                )),
                None => Ok(Condition::OneOf(items.clone())),
            },
            Value::Object(fields) => {
                let mut entries = fields.iter();
                let (Some((name, arg)), None) = (entries.next(), entries.next()) else {
                    return Err(format!(
                        "an object here is a condition with exactly one key; expected {SHAPES} (to test fields inside a value, give each its own path, e.g. \"pull_request.state\")"
                    ));
                };
                match (name.as_str(), arg) {
                    ("prefix", Value::String(prefix)) => Ok(Condition::Prefix(prefix.clone())),
                    ("prefix", other) => Err(format!(
                        "\"prefix\" takes a string, such as {{\"prefix\": \"refs/tags/\"}}; got {}",
                        kind(other)
                    )),
                    ("present", Value::Bool(present)) => Ok(Condition::Present(*present)),
                    ("present", other) => Err(format!(
                        "\"present\" takes true or false; got {}",
                        kind(other)
                    )),
                    (other, _) => Err(format!(
                        "\"{other}\" is not a condition; expected {SHAPES}"
                    )),
                }
            }
            scalar => Ok(Condition::Equals(scalar.clone())),
        }
    }

    /// Whether the field must be there (and not `null`) for this to pass.
    fn needs_a_value(&self) -> bool {
        match self {
            Condition::Equals(v) => !v.is_null(),
            Condition::OneOf(values) => !values.iter().any(Value::is_null),
            Condition::Prefix(_) => true,
            Condition::Present(present) => *present,
        }
    }

    fn passes(&self, got: &Value) -> bool {
        match self {
            Condition::Equals(want) => same(got, want),
            Condition::OneOf(values) => values.iter().any(|want| same(got, want)),
            Condition::Prefix(prefix) => got.as_str().is_some_and(|s| s.starts_with(prefix)),
            Condition::Present(present) => got.is_null() != *present,
        }
    }
}

/// JSON equality, but numbers by value, so `1` equals `1.0`. Integers are compared as
/// integers, so ids above 2^53 stay exact.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        _ => a == b,
    }
}

impl fmt::Display for Condition {
    /// What a delivery should have had, for a reason.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Equals(want) => write!(f, "not {want}"),
            Condition::OneOf(values) => write!(f, "not one of {}", Value::Array(values.clone())),
            Condition::Prefix(prefix) => {
                write!(
                    f,
                    "not a string starting with {}",
                    Value::from(prefix.as_str())
                )
            }
            Condition::Present(true) => f.write_str("not present"),
            Condition::Present(false) => f.write_str("not absent"),
        }
    }
}

/// A `match` that can never pass because of how two of its rules relate: a rule on
/// `a.b` needs a value there, while a rule on `a` allows `a` only to be absent or a
/// plain value, which has no fields. Returns, for each such rule (by index), the key
/// of the rule it clashes with. Nothing else makes rules on different paths clash: a
/// path's value is constrained only by its own rule and its parents'.
pub fn clashes(rules: &[Rule]) -> Vec<(usize, &str)> {
    let mut found = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if !rule.condition.needs_a_value() {
            continue;
        }
        let path = rule.path.to_string();
        // Segments hold no dots, so a parent's path is a prefix ending at a dot.
        let parent = rules.iter().find(|q| {
            q.condition != Condition::Present(true)
                && path
                    .strip_prefix(q.path.to_string().as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
        });
        if let Some(parent) = parent {
            found.push((i, parent.key.as_str()));
        }
    }
    found
}

/// The `match` rules that can never pass together with `events` read from a payload
/// field: a rule on that very field that no listed event name satisfies, or a rule
/// needing a value inside it (an event name is a string, which has no fields). Only
/// events read from one field are judged; where there is a fallback (Slack's), the
/// other field may hold the name. Returns that field and the rules.
pub fn clashes_with_events<'a>(
    events: &'a Events,
    rules: &'a [Rule],
) -> Option<(&'a FieldPath, Vec<&'a Rule>)> {
    let EventAt::Fields(paths) = &events.at else {
        return None;
    };
    let [event_field] = paths.as_slice() else {
        return None;
    };
    let field = event_field.to_string();
    let named = |name: &str| !name.is_empty() && events.names.iter().any(|p| p.matches(name));
    let clashing = rules
        .iter()
        .filter(|rule| {
            let path = rule.path.to_string();
            if path != field {
                return rule.condition.needs_a_value()
                    && path
                        .strip_prefix(field.as_str())
                        .is_some_and(|rest| rest.starts_with('.'));
            }
            !match &rule.condition {
                Condition::Equals(want) => want.as_str().is_some_and(named),
                Condition::OneOf(values) => values.iter().filter_map(Value::as_str).any(named),
                Condition::Prefix(prefix) => events.names.iter().any(|p| match p {
                    Pattern::Exact(name) => name.starts_with(prefix.as_str()),
                    Pattern::Prefix(other) => {
                        other.starts_with(prefix.as_str()) || prefix.starts_with(other.as_str())
                    }
                }),
                Condition::Present(present) => *present,
            }
        })
        .collect();
    Some((event_field, clashing))
}

impl Filters {
    /// Whether evaluating these needs the parsed payload.
    pub fn reads_payload(&self) -> bool {
        !self.rules.is_empty()
            || self
                .events
                .as_ref()
                .is_some_and(|e| matches!(e.at, EventAt::Fields(_)))
    }

    /// Lets a delivery through, or says why not: what failed and the key that asked
    /// for it (`source` names it). A value from the delivery is shown cut short.
    pub fn admit(&self, source: &str, headers: &HeaderMap, payload: &Value) -> Result<(), String> {
        if let Some(events) = &self.events {
            let key = format!("webhooks.{source}.events");
            let name = match &events.at {
                EventAt::Header(header) => headers.get(header).and_then(|v| v.to_str().ok()),
                EventAt::Fields(paths) => paths
                    .iter()
                    .find_map(|p| p.lookup(payload).and_then(Value::as_str)),
            };
            match name.filter(|n| !n.is_empty()) {
                Some(name) if events.names.iter().any(|p| p.matches(name)) => {}
                Some(name) => {
                    return Err(format!(
                        "event {} is not in {key}",
                        shown(&Value::from(name))
                    ));
                }
                None => {
                    return Err(format!(
                        "the delivery names no event in {} ({key})",
                        events.at
                    ));
                }
            }
        }
        for rule in &self.rules {
            let found = rule.path.lookup(payload);
            if !rule.condition.passes(found.unwrap_or(&Value::Null)) {
                let got = found.map_or_else(|| "absent".to_owned(), shown);
                return Err(format!(
                    "{} is {got}, {} (webhooks.{source}.match.{})",
                    rule.path, rule.condition, rule.key
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Display for EventAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventAt::Header(header) => write!(f, "the {header} header"),
            EventAt::Fields(paths) => {
                let names: Vec<String> = paths.iter().map(|p| format!("`{p}`")).collect();
                f.write_str(&names.join(" or "))
            }
        }
    }
}

/// A value from a delivery as a reason shows it: a scalar as JSON, a string cut after
/// [`SHOWN`] characters; an object or a list by its kind alone.
fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => match first_chars(text, SHOWN) {
            (shown, true) => format!("{}…", Value::String(shown.to_owned())),
            (_, false) => value.to_string(),
        },
        Value::Object(_) | Value::Array(_) => kind(value).to_owned(),
        scalar => scalar.to_string(),
    }
}

/// The longest text from a delivery a reason shows.
const SHOWN: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(key: &str, condition: Value) -> Rule {
        Rule {
            key: key.to_owned(),
            path: FieldPath::parse(key).unwrap(),
            condition: Condition::parse(&condition).unwrap(),
        }
    }

    fn matching(rules: Vec<Rule>) -> Filters {
        Filters {
            events: None,
            rules,
        }
    }

    fn events(names: &[&str], at: EventAt) -> Filters {
        Filters {
            events: Some(Events {
                names: names.iter().map(|n| Pattern::parse(n).unwrap()).collect(),
                at,
            }),
            rules: Vec::new(),
        }
    }

    fn admit(filters: &Filters, payload: Value) -> Result<(), String> {
        filters.admit("src", &HeaderMap::new(), &payload)
    }

    #[test]
    fn events_match_exactly_or_by_prefix() {
        let stripe = events(
            &["invoice.paid", "customer.subscription.*"],
            event_at(SchemeKind::Stripe).unwrap(),
        );
        for ok in ["invoice.paid", "customer.subscription.created"] {
            assert_eq!(admit(&stripe, json!({ "type": ok })), Ok(()), "{ok}");
        }
        assert_eq!(
            admit(&stripe, json!({ "type": "invoice.paid.x" })),
            Err("event \"invoice.paid.x\" is not in webhooks.src.events".into())
        );
        assert_eq!(
            admit(&stripe, json!({ "type": "customer.subscription" })),
            Err("event \"customer.subscription\" is not in webhooks.src.events".into())
        );
        assert_eq!(
            admit(&stripe, json!({ "type": 5 })),
            Err("the delivery names no event in `type` (webhooks.src.events)".into())
        );
    }

    #[test]
    fn github_events_come_from_the_header_and_slack_s_from_the_inner_type_first() {
        let github = events(&["pull_request"], event_at(SchemeKind::Github).unwrap());
        let mut headers = HeaderMap::new();
        assert_eq!(
            github.admit("gh", &headers, &Value::Null),
            Err(
                "the delivery names no event in the x-github-event header (webhooks.gh.events)"
                    .into()
            )
        );
        headers.insert("x-github-event", "push".parse().unwrap());
        assert_eq!(
            github.admit("gh", &headers, &Value::Null),
            Err("event \"push\" is not in webhooks.gh.events".into())
        );
        headers.insert("x-github-event", "pull_request".parse().unwrap());
        assert_eq!(github.admit("gh", &headers, &Value::Null), Ok(()));

        let slack = events(
            &["app_mention", "block_actions"],
            event_at(SchemeKind::Slack).unwrap(),
        );
        let callback =
            |inner: &str| json!({ "type": "event_callback", "event": { "type": inner } });
        assert_eq!(admit(&slack, callback("app_mention")), Ok(()));
        assert!(admit(&slack, callback("message")).is_err());
        assert_eq!(admit(&slack, json!({ "type": "block_actions" })), Ok(()));
        assert_eq!(event_at(SchemeKind::HmacSha256), None);
    }

    #[test]
    fn conditions_test_equality_one_of_prefix_and_presence() {
        let payload = json!({
            "action": "opened", "number": 7, "ratio": 0.5, "draft": false, "gone": null,
            "ref": "refs/tags/v1.2", "big": 18446744073709551615u64,
            "pull_request": { "labels": [{ "name": "bug" }] }
        });
        let passes = [
            ("action", json!("opened")),
            ("action", json!(["opened", "reopened"])),
            ("number", json!(7)),
            ("number", json!(7.0)),
            ("ratio", json!(0.5)),
            ("draft", json!(false)),
            ("big", json!(18446744073709551615u64)),
            ("ref", json!({ "prefix": "refs/tags/" })),
            ("action", json!({ "present": true })),
            ("gone", json!({ "present": false })),
            ("nothing", json!({ "present": false })),
            ("gone", json!(null)),
            ("nothing", json!(["x", null])),
            ("pull_request.labels.0.name", json!("bug")),
        ];
        for (key, condition) in passes {
            let filters = matching(vec![rule(key, condition.clone())]);
            assert_eq!(
                admit(&filters, payload.clone()),
                Ok(()),
                "{key}: {condition}"
            );
        }
        let fails = [
            (
                "action",
                json!("closed"),
                "action is \"opened\", not \"closed\"",
            ),
            (
                "action",
                json!(["closed", "merged"]),
                "action is \"opened\", not one of [\"closed\",\"merged\"]",
            ),
            ("number", json!("7"), "number is 7, not \"7\""),
            (
                "big",
                json!(18446744073709551614u64),
                "big is 18446744073709551615, not 18446744073709551614",
            ),
            ("draft", json!(true), "draft is false, not true"),
            (
                "ref",
                json!({ "prefix": "refs/heads/" }),
                "ref is \"refs/tags/v1.2\", not a string starting with \"refs/heads/\"",
            ),
            (
                "number",
                json!({ "prefix": "7" }),
                "number is 7, not a string starting with \"7\"",
            ),
            (
                "gone",
                json!({ "present": true }),
                "gone is null, not present",
            ),
            (
                "nothing",
                json!({ "present": true }),
                "nothing is absent, not present",
            ),
            (
                "action",
                json!({ "present": false }),
                "action is \"opened\", not absent",
            ),
            ("action", json!(null), "action is \"opened\", not null"),
            (
                "pull_request",
                json!("x"),
                "pull_request is an object, not \"x\"",
            ),
            ("number.x", json!(7), "number.x is absent, not 7"),
        ];
        for (key, condition, reason) in fails {
            let filters = matching(vec![rule(key, condition)]);
            assert_eq!(
                admit(&filters, payload.clone()),
                Err(format!("{reason} (webhooks.src.match.{key})"))
            );
        }
    }

    #[test]
    fn every_rule_must_pass_and_the_first_failure_is_the_reason() {
        let filters = matching(vec![
            rule("action", json!("opened")),
            rule("pull_request.draft", json!(false)),
        ]);
        assert_eq!(
            admit(
                &filters,
                json!({ "action": "opened", "pull_request": { "draft": false } })
            ),
            Ok(())
        );
        assert_eq!(
            admit(
                &filters,
                json!({ "action": "opened", "pull_request": { "draft": true } })
            ),
            Err(
                "pull_request.draft is true, not false (webhooks.src.match.pull_request.draft)"
                    .into()
            )
        );
    }

    #[test]
    fn a_reason_shows_a_delivery_s_value_cut_short() {
        let filters = matching(vec![rule("title", json!("x"))]);
        let long = "ab\u{2028}".repeat(100);
        let reason = admit(&filters, json!({ "title": long })).unwrap_err();
        assert!(reason.len() < 64 * 4 + 80, "{reason}");
        assert!(reason.contains("…, not \"x\""), "{reason}");
        let listed = admit(&filters, json!({ "title": vec!["secret"; 50] })).unwrap_err();
        assert_eq!(
            listed,
            "title is a list, not \"x\" (webhooks.src.match.title)"
        );
    }

    #[test]
    fn bad_event_names_and_conditions_say_what_is_wrong() {
        assert_eq!(Pattern::parse("a.*"), Ok(Pattern::Prefix("a.".into())));
        assert_eq!(Pattern::parse("*"), Ok(Pattern::Prefix(String::new())));
        assert!(Pattern::parse("").unwrap_err().contains("empty event name"));
        for bad in ["*.paid", "a.*.b", "a**"] {
            assert!(
                Pattern::parse(bad)
                    .unwrap_err()
                    .contains("`*` may only end a name"),
                "{bad}"
            );
        }
        for (value, says) in [
            (json!([]), "an empty list matches nothing"),
            (json!(["a", { "b": 1 }]), "item 1 of the list is an object"),
            (json!([["a"]]), "item 0 of the list is a list"),
            (json!({}), "exactly one key"),
            (json!({ "prefix": "a", "present": true }), "exactly one key"),
            (json!({ "state": "open" }), "\"state\" is not a condition"),
            (json!({ "prefix": 5 }), "\"prefix\" takes a string"),
            (
                json!({ "present": "yes" }),
                "\"present\" takes true or false",
            ),
        ] {
            let message = Condition::parse(&value).unwrap_err();
            assert!(message.contains(says), "{value}: {message}");
        }
    }

    #[test]
    fn a_rule_on_the_field_events_are_read_from_must_let_a_listed_event_through() {
        let stripe = events(
            &["invoice.paid", "customer.subscription.*"],
            event_at(SchemeKind::Stripe).unwrap(),
        );
        let stripe = stripe.events.as_ref().unwrap();
        for (condition, clashes) in [
            (json!("invoice.paid"), false),
            (json!("customer.subscription.deleted"), false),
            (json!("charge.failed"), true),
            (json!(["charge.failed", "invoice.paid"]), false),
            (json!(["charge.failed", null]), true),
            (json!(null), true),
            (json!({ "prefix": "invoice." }), false),
            (json!({ "prefix": "customer." }), false),
            (json!({ "prefix": "customer.subscription.updated" }), false),
            (json!({ "prefix": "charge." }), true),
            (json!({ "present": true }), false),
            (json!({ "present": false }), true),
        ] {
            let rules = vec![rule("type", condition.clone())];
            let (field, found) = clashes_with_events(stripe, &rules).unwrap();
            assert_eq!(field.to_string(), "type");
            assert_eq!(found.len(), usize::from(clashes), "{condition}");
        }
        let inside = vec![rule("type.name", json!("x")), rule("data.type", json!("x"))];
        let found: Vec<&str> = clashes_with_events(stripe, &inside)
            .unwrap()
            .1
            .iter()
            .map(|r| r.key.as_str())
            .collect();
        assert_eq!(found, ["type.name"]);
        // Slack falls back to the outer `type`, so a rule on one field alone decides
        // nothing.
        let slack = events(&["app_mention"], event_at(SchemeKind::Slack).unwrap());
        let rules = vec![rule("type", json!("event_callback"))];
        assert!(clashes_with_events(slack.events.as_ref().unwrap(), &rules).is_none());
    }

    #[test]
    fn a_rule_inside_a_field_its_parent_rule_makes_plain_or_absent_never_matches() {
        let clashing = [
            (("a", json!({ "present": false })), ("a.b", json!("x"))),
            (("a", json!(null)), ("a.b", json!({ "present": true }))),
            (("a", json!("text")), ("a.b", json!(1))),
            (
                ("a", json!({ "prefix": "t" })),
                ("a.b.c", json!({ "prefix": "" })),
            ),
            (("a", json!([1, 2])), ("a.0", json!(["x"]))),
        ];
        for ((pk, pc), (ck, cc)) in clashing {
            let rules = vec![rule(pk, pc.clone()), rule(ck, cc.clone())];
            assert_eq!(clashes(&rules), vec![(1, pk)], "{pk}: {pc}, {ck}: {cc}");
        }
        // The child may be absent, or the parent may be an object: each of these
        // passes the payload given with it.
        let fine = [
            (
                ("a", json!({ "present": false })),
                ("a.b", json!({ "present": false })),
                json!({}),
            ),
            (
                ("a", json!("text")),
                ("a.b", json!(null)),
                json!({ "a": "text" }),
            ),
            (
                ("a", json!(1)),
                ("a.b", json!(["x", null])),
                json!({ "a": 1 }),
            ),
            (
                ("a", json!({ "present": true })),
                ("a.b", json!("x")),
                json!({ "a": { "b": "x" } }),
            ),
            (
                ("a", json!("text")),
                ("ab", json!("x")),
                json!({ "a": "text", "ab": "x" }),
            ),
        ];
        for ((pk, pc), (ck, cc), payload) in fine {
            let rules = vec![rule(pk, pc.clone()), rule(ck, cc.clone())];
            assert_eq!(clashes(&rules), vec![], "{pk}: {pc}, {ck}: {cc}");
            assert_eq!(
                admit(&matching(rules), payload),
                Ok(()),
                "{pk}: {pc}, {ck}: {cc}"
            );
        }
    }
}
