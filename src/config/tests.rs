//! The parser's tests: in-process, each on a config that differs from a valid one in a
//! key or two, asserting the problems it reports.

use super::validate::Validator;
use super::*;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const KEY: &str = "lk_test_key_0123456789abcdef";

/// A valid config: agent `bot`, source `hook`.
fn base() -> Value {
    json!({
        "apiKey": KEY,
        "agents": { "bot": { "command": ["/bin/sh"] } },
        "webhooks": { "hook": { "project": "/", "agent": "bot" } }
    })
}

/// Sets the value at a JSON pointer such as `/agents/bot/timeoutSec`, creating it.
fn set(config: &mut Value, pointer: &str, value: Value) {
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    let parent = config
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("{pointer}"));
    parent
        .as_object_mut()
        .unwrap()
        .insert(last.to_owned(), value);
}

/// Every problem `lowkey check` finds, with `own_path` as the shell's PATH.
fn check_with(config: &Value, own_path: &str) -> Vec<Problem> {
    let v = Validator {
        own_path: own_path.into(),
        ..Validator::new(Lookup::Units)
    };
    match v.parse(Path::new("config.json"), &config.to_string()) {
        Ok(loaded) => loaded.warnings,
        Err(ConfigError::Invalid { problems, .. }) => problems,
        Err(e) => panic!("{e}"),
    }
}

fn check(config: &Value) -> Vec<Problem> {
    check_with(config, "")
}

fn errors(problems: &[Problem]) -> Vec<&Problem> {
    problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .collect()
}

#[test]
fn the_base_config_is_valid() {
    assert_eq!(check(&base()), vec![]);
}

#[test]
fn a_value_of_the_wrong_type_names_its_key_what_it_needs_and_what_it_got() {
    for (pointer, value, key, message) in [
        (
            "/agents/bot/timeoutSec",
            json!("sixty"),
            "agents.bot.timeoutSec",
            "expected a whole number of seconds, such as 1800; got the string \"sixty\"",
        ),
        (
            "/agents/bot/timeoutSec",
            json!(-5),
            "agents.bot.timeoutSec",
            "got the number -5",
        ),
        (
            "/agents/bot/maxConcurrent",
            json!(1.5),
            "agents.bot.maxConcurrent",
            "expected a whole number of runs at once, such as 2; got the number 1.5",
        ),
        (
            "/agents/bot/command",
            json!("claude -p"),
            "agents.bot.command",
            "got the string \"claude -p\": no shell splits it, so write [\"claude\", \"-p\"]",
        ),
        (
            "/agents/bot/command",
            json!({}),
            "agents.bot.command",
            "expected the agent's argv, a list of strings such as [\"claude\", \"-p\"]; got an object",
        ),
        (
            "/agents/bot/command",
            json!(["/bin/sh", true]),
            "agents.bot.command[1]",
            "expected a string (each argument is one string); got true",
        ),
        (
            "/agents/bot/env",
            json!(["A=1"]),
            "agents.bot.env",
            "expected an object of variable name → value",
        ),
        (
            "/agents/bot/env",
            json!({ "DEBUG": true }),
            "agents.bot.env.DEBUG",
            "expected a string; got a boolean: put the value in double quotes",
        ),
        (
            "/agents/bot",
            json!(["/bin/sh"]),
            "agents.bot",
            "expected an object such as { \"command\": [\"claude\", \"-p\"] }; got a list",
        ),
        (
            "/webhooks/hook/project",
            json!(5),
            "webhooks.hook.project",
            "expected the project directory, such as \"/home/you/project\"; got the number 5",
        ),
        (
            "/webhooks/hook/agent",
            json!(true),
            "webhooks.hook.agent",
            "expected the name of an agent under `agents`; got true",
        ),
        (
            "/webhooks/hook/target",
            json!(["a"]),
            "webhooks.hook.target",
            "got a list",
        ),
        (
            "/webhooks/hook/auth",
            json!(1),
            "webhooks.hook.auth",
            "expected \"key\" or \"signature\"; got the number 1",
        ),
        (
            "/webhooks/hook/verify",
            json!(false),
            "webhooks.hook.verify",
            "expected a signature scheme: \"standard-webhooks\"",
        ),
        (
            "/webhooks/hook/signatureHeader",
            json!(5),
            "webhooks.hook.signatureHeader",
            "expected a header name",
        ),
        (
            "/webhooks/hook/signatureEncoding",
            json!(16),
            "webhooks.hook.signatureEncoding",
            "expected \"hex\" or \"base64\"; got the number 16",
        ),
        (
            "/webhooks/hook/signaturePrefix",
            json!({}),
            "webhooks.hook.signaturePrefix",
            "got an object",
        ),
        (
            "/webhooks/hook/toleranceSec",
            json!("5m"),
            "webhooks.hook.toleranceSec",
            "expected a whole number of seconds, such as 300; got the string \"5m\"",
        ),
        (
            "/webhooks/hook/dedupHours",
            json!(1.5),
            "webhooks.hook.dedupHours",
            "expected a whole number of hours, such as 72; got the number 1.5",
        ),
        (
            "/webhooks/hook/message",
            json!(["a"]),
            "webhooks.hook.message",
            "expected the agent's message, such as \"Stripe: {{type}} for {{data.object.amount}}\"; got a list",
        ),
        (
            "/webhooks/hook/enabled",
            json!("no"),
            "webhooks.hook.enabled",
            "expected true or false; got the string \"no\"",
        ),
        (
            "/webhooks/hook/rateLimit",
            json!(5),
            "webhooks.hook.rateLimit",
            "expected an object such as {\"perSecond\": 5, \"burst\": 10}; got the number 5",
        ),
        (
            "/webhooks/hook/rateLimit",
            json!({ "perSecond": "fast" }),
            "webhooks.hook.rateLimit.perSecond",
            "expected a number of webhooks a second, such as 5; got the string \"fast\"",
        ),
        (
            "/webhooks/hook/rateLimit",
            json!({ "perSecond": 1, "burst": [] }),
            "webhooks.hook.rateLimit.burst",
            "got a list",
        ),
        (
            "/webhooks/hook/rateLimit",
            json!({ "burst": 2 }),
            "webhooks.hook.rateLimit.perSecond",
            "missing; give the rate",
        ),
        (
            "/webhooks/hook/rateLimit",
            json!({ "perSecond": 1, "bursts": 2 }),
            "webhooks.hook.rateLimit.bursts",
            "did you mean `burst`?",
        ),
        (
            "/webhooks/hook",
            json!("/srv/project"),
            "webhooks.hook",
            "got the string \"/srv/project\"",
        ),
        ("/webhooks", json!(true), "webhooks", "got true"),
        (
            "/listen",
            json!(7433),
            "listen",
            "expected an IP address with a port, such as \"127.0.0.1:7433\"; got the number 7433",
        ),
        (
            "/maxBodyBytes",
            json!("1M"),
            "maxBodyBytes",
            "got the string \"1M\"",
        ),
        (
            "/maxBodyBytes",
            json!(0),
            "maxBodyBytes",
            "from 1 to 67108864 (64 MiB), such as 1048576; got the number 0",
        ),
        (
            "/idleExitSec",
            json!(true),
            "idleExitSec",
            "expected a whole number of seconds above 0, such as 900 (or no idleExitSec, to never exit); got true",
        ),
        (
            "/trustedProxies",
            json!("127.0.0.1"),
            "trustedProxies",
            "expected a list of IP addresses, such as [\"127.0.0.1\"]; got the string \"127.0.0.1\"",
        ),
        (
            "/trustedProxies",
            json!(["localhost"]),
            "trustedProxies[0]",
            "got the string \"localhost\"",
        ),
        (
            "/defaultAgent",
            json!(5),
            "defaultAgent",
            "got the number 5",
        ),
        (
            "/agents/bot/timeoutSec",
            json!("x".repeat(100)),
            "agents.bot.timeoutSec",
            &format!("\"{}\"…", "x".repeat(40)),
        ),
    ] {
        let mut config = base();
        set(&mut config, pointer, value.clone());
        let problems = check(&config);
        let errors = errors(&problems);
        assert_eq!(errors.len(), 1, "{pointer} = {value}: {problems:#?}");
        assert_eq!(errors[0].key, key, "{pointer} = {value}");
        assert!(
            errors[0].message.contains(message),
            "{pointer} = {value}: {}",
            errors[0].message
        );
    }
}

#[test]
fn every_type_error_of_one_agent_or_source_is_reported() {
    let mut config = base();
    set(&mut config, "/agents/bot/timeoutSec", json!("sixty"));
    set(&mut config, "/agents/bot/maxConcurrent", json!("two"));
    set(&mut config, "/webhooks/hook/toleranceSec", json!("5m"));
    set(&mut config, "/webhooks/hook/dedupHours", json!("3d"));
    let keys: Vec<String> = check(&config).into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "agents.bot.timeoutSec",
            "agents.bot.maxConcurrent",
            "webhooks.hook.toleranceSec",
            "webhooks.hook.dedupHours"
        ]
    );
}

/// A project directory that does not exist.
const GONE: &str = "/nonexistent/lowkey-no-such-project";

/// A config `lowkey check` and `lowkey serve` both refuse (exit 78), and what they say.
struct Refused {
    name: &'static str,
    /// Makes the base config bad.
    change: fn(&mut Value),
    /// For each key, texts its problem line (`error: key: message`) holds.
    problems: &'static [(&'static str, &'static [&'static str])],
    /// How many errors there are, where one mistake must make exactly so many.
    errors: Option<usize>,
    /// Texts the whole report holds: every problem's line, and the one line `serve` logs.
    said: &'static [&'static str],
    /// Texts the report must not hold.
    not_said: &'static [&'static str],
}

const REFUSED: &[Refused] = &[
    Refused {
        name: "a source without a project",
        change: |c| {
            c["webhooks"]["hook"]
                .as_object_mut()
                .unwrap()
                .remove("project");
        },
        problems: &[("webhooks.hook.project", &["missing"])],
        errors: None,
        said: &[],
        not_said: &[],
    },
    Refused {
        name: "a project that does not exist",
        change: |c| c["webhooks"]["hook"]["project"] = json!(GONE),
        problems: &[("webhooks.hook.project", &[GONE, "does not exist"])],
        errors: None,
        said: &[],
        not_said: &[],
    },
    Refused {
        name: "an undefined agent close to a defined one",
        change: |c| c["webhooks"]["hook"]["agent"] = json!("bto"),
        problems: &[("webhooks.hook.agent", &["\"bto\"", "did you mean \"bot\""])],
        errors: None,
        said: &[],
        not_said: &[],
    },
    Refused {
        // The message lists the defined agents instead.
        name: "an undefined agent far from any name",
        change: |c| c["webhooks"]["hook"]["agent"] = json!("kubernetes-operator"),
        problems: &[("webhooks.hook.agent", &["kubernetes-operator", "bot"])],
        errors: None,
        said: &[],
        not_said: &["did you mean"],
    },
    Refused {
        name: "a source name that is not path-safe",
        change: |c| c["webhooks"]["../escape"] = c["webhooks"]["hook"].clone(),
        problems: &[("webhooks.../escape", &["not a valid source name"])],
        errors: None,
        said: &[],
        not_said: &[],
    },
    Refused {
        name: "a target that is not a path-safe session id",
        change: |c| c["webhooks"]["hook"]["target"] = json!("../../config"),
        problems: &[(
            "webhooks.hook.target",
            &["../../config", "not a valid session id"],
        )],
        errors: None,
        said: &[],
        not_said: &[],
    },
    Refused {
        name: "a message template with an unclosed placeholder",
        change: |c| c["webhooks"]["hook"]["message"] = json!("Stripe: {{type for you"),
        problems: &[("webhooks.hook.message", &["without its `}}`"])],
        errors: Some(1),
        said: &[],
        not_said: &[],
    },
    Refused {
        name: "an empty message template",
        change: |c| c["webhooks"]["hook"]["message"] = json!(" "),
        problems: &[("webhooks.hook.message", &["remove the key for the default"])],
        errors: Some(1),
        said: &[],
        not_said: &[],
    },
    Refused {
        // One mistake, one error: the missing `project` is not reported as well.
        name: "a misspelt key in a source",
        change: |c| {
            let source = c["webhooks"]["hook"].as_object_mut().unwrap();
            let project = source.remove("project").unwrap();
            source.insert("projcet".to_owned(), project);
        },
        problems: &[("webhooks.hook.projcet", &["did you mean `project`"])],
        errors: Some(1),
        said: &[],
        not_said: &[],
    },
    Refused {
        name: "a misspelt key in an agent",
        change: |c| c["agents"]["bot"]["timeout_sec"] = json!(30),
        problems: &[("agents.bot.timeout_sec", &["did you mean `timeoutSec`"])],
        errors: None,
        said: &[],
        not_said: &[],
    },
    Refused {
        // The source and defaultAgent name an agent that is defined.
        name: "an agent with a bad field, reported at that field only",
        change: |c| {
            c["agents"]["bot"]["timeoutSec"] = json!(0);
            c["defaultAgent"] = json!("bot");
        },
        problems: &[("agents.bot.timeoutSec", &["at least 1 second"])],
        errors: None,
        said: &[],
        not_said: &["not defined"],
    },
    Refused {
        // A rate of 0 never refills, a burst under 1 never holds a whole token, and a
        // window of 10^15 hours overflows the clock.
        name: "a rate limit or dedup window that cannot work",
        change: |c| {
            c["webhooks"]["hook"]["rateLimit"] = json!({ "perSecond": 0, "burst": 0.5 });
            c["webhooks"]["hook"]["dedupHours"] = json!(1_000_000_000_000_000u64);
        },
        problems: &[
            (
                "webhooks.hook.rateLimit.perSecond",
                &["use a number above 0"],
            ),
            ("webhooks.hook.rateLimit.burst", &["use at least 1"]),
            ("webhooks.hook.dedupHours", &["use at most 87600 hours"]),
        ],
        errors: None,
        said: &[],
        not_said: &[],
    },
    Refused {
        // Every problem is listed in one run, the warning too, with a count of the errors.
        name: "every problem of a config",
        change: |c| {
            let source = c["webhooks"]["hook"].clone();
            c["agents"]["bot"]["timeout_sec"] = json!(30);
            c["webhooks"]["hook"]["agent"] = json!("bto");
            c["webhooks"]["second"] = source.clone();
            c["webhooks"]["second"]["target"] = json!("no spaces allowed");
            c["webhooks"]["third"] = json!({ "agent": "bot" });
            c["webhooks"]["bad name"] = source;
            c["somethingElse"] = json!(true);
        },
        problems: &[
            ("agents.bot.timeout_sec", &[]),
            ("webhooks.hook.agent", &[]),
            ("webhooks.second.target", &[]),
            ("webhooks.third.project", &[]),
            ("webhooks.bad name", &[]),
            ("somethingElse", &[]),
        ],
        errors: None,
        said: &["5 errors"],
        not_said: &[],
    },
    Refused {
        // A POST is signed, so a URL without its secret cannot be sent; nor a secret
        // without a URL be used.
        name: "an onFinish url without a secret, or a secret without a url",
        change: |c| {
            c["agents"]["bot"]["onFinish"] = json!({ "url": "https://ntfy.sh/topic" });
            c["webhooks"]["hook"]["onFinish"] =
                json!({ "command": ["/bin/true"], "secret": "whsec_c2VjcmV0" });
        },
        problems: &[
            ("agents.bot.onFinish.secret", &["missing", "whsec_"]),
            ("webhooks.hook.onFinish.secret", &["add the `url`"]),
        ],
        errors: Some(2),
        said: &[],
        not_said: &[],
    },
    Refused {
        // Only the scheme is quoted back: a chat webhook's URL holds its token.
        name: "an onFinish url that lowkey cannot POST to",
        change: |c| {
            let secret = json!("whsec_c2VjcmV0");
            c["agents"]["bot"]["onFinish"] =
                json!({ "url": "ftp://files.example/T0K3N", "secret": secret });
            c["webhooks"]["hook"]["onFinish"] =
                json!({ "url": "hooks.slack.com/services/T0K3N", "secret": secret });
        },
        problems: &[
            (
                "agents.bot.onFinish.url",
                &["\"ftp://\"", "use http:// or https://"],
            ),
            (
                "webhooks.hook.onFinish.url",
                &["is not an http:// or https:// URL"],
            ),
        ],
        errors: Some(2),
        said: &[],
        not_said: &["T0K3N"],
    },
    Refused {
        // The secret's own text is not quoted back either; a misspelt `command` is one
        // error, not two.
        name: "an onFinish that says nothing, a bad secret, timeout or command",
        change: |c| {
            c["agents"]["bot"]["onFinish"] = json!({ "timeoutSec": 0 });
            c["agents"]["other"] = json!({
                "command": ["/bin/sh"],
                "onFinish": { "command": "notify --all" },
            });
            c["webhooks"]["hook"]["onFinish"] =
                json!({ "url": "http://127.0.0.1:9/", "secret": "whsec_!!n0t-base64" });
            c["webhooks"]["two"] = json!({
                "project": "/",
                "agent": "bot",
                "onFinish": { "comand": ["/bin/true"] },
            });
            c["webhooks"]["three"] = json!({
                "project": "/",
                "agent": "bot",
                "onFinish": { "timeoutSec": 5 },
            });
        },
        problems: &[
            ("agents.bot.onFinish.timeoutSec", &["at least 1 second"]),
            (
                "agents.other.onFinish.command",
                &["no shell splits it", "[\"notify\", \"--all\"]"],
            ),
            (
                "webhooks.hook.onFinish.secret",
                &["`whsec_` followed by base64"],
            ),
            ("webhooks.two.onFinish.comand", &["did you mean `command`"]),
            ("webhooks.three.onFinish", &["neither `command` nor `url`"]),
        ],
        errors: Some(5),
        said: &[],
        not_said: &["n0t-base64"],
    },
    Refused {
        // Twilio signs the URL it posts to, which lowkey cannot see behind a proxy.
        name: "twilio without publicUrl",
        change: |c| {
            c["webhooks"]["hook"]["verify"] = json!("twilio");
            c["webhooks"]["hook"]["secret"] = json!("twilio auth token");
        },
        problems: &[(
            "webhooks.hook.publicUrl",
            &["missing", "twilio signs the URL", "https://"],
        )],
        errors: Some(1),
        said: &[],
        not_said: &[],
    },
    Refused {
        // The query is the request's own, as Twilio signed it.
        name: "a publicUrl with a query",
        change: |c| {
            c["webhooks"]["hook"]["verify"] = json!("twilio");
            c["webhooks"]["hook"]["secret"] = json!("twilio auth token");
            c["webhooks"]["hook"]["publicUrl"] = json!("https://example.com/api/webhook/hook?a=1");
        },
        problems: &[("webhooks.hook.publicUrl", &["must not have a query"])],
        errors: Some(1),
        said: &[],
        not_said: &[],
    },
    Refused {
        name: "a publicUrl that is not an http URL",
        change: |c| {
            c["webhooks"]["hook"]["verify"] = json!("twilio");
            c["webhooks"]["hook"]["secret"] = json!("twilio auth token");
            c["webhooks"]["hook"]["publicUrl"] = json!("example.com/api/webhook/hook");
        },
        problems: &[("webhooks.hook.publicUrl", &["must start with https://"])],
        errors: Some(1),
        said: &[],
        not_said: &[],
    },
    Refused {
        // Set where nothing reads it, it would be a check its author thinks happens.
        name: "publicUrl on a scheme that does not sign the URL",
        change: |c| {
            c["webhooks"]["hook"]["verify"] = json!("shopify");
            c["webhooks"]["hook"]["secret"] = json!("shopify client secret");
            c["webhooks"]["hook"]["publicUrl"] = json!("https://example.com/api/webhook/hook");
        },
        problems: &[(
            "webhooks.hook.publicUrl",
            &["only applies with \"verify\": \"twilio\""],
        )],
        errors: Some(1),
        said: &[],
        not_said: &[],
    },
    Refused {
        name: "publicUrl without verify",
        change: |c| {
            c["webhooks"]["hook"]["publicUrl"] = json!("https://example.com/api/webhook/hook")
        },
        problems: &[(
            "webhooks.hook.publicUrl",
            &["only applies with \"verify\": \"twilio\""],
        )],
        errors: Some(1),
        said: &[],
        not_said: &[],
    },
    Refused {
        name: "shopify without its secret",
        change: |c| c["webhooks"]["hook"]["verify"] = json!("shopify"),
        problems: &[("webhooks.hook.secret", &["missing", "verify` shopify"])],
        errors: Some(1),
        said: &[],
        not_said: &[],
    },
    Refused {
        // The placeholder is not quoted back.
        name: "the example's API key",
        change: |c| c["apiKey"] = json!("lk_replace_me_with_the_key_from_lowkey_init"),
        problems: &[(
            "apiKey",
            &[
                "apiKey: is the example's placeholder",
                "openssl rand -hex 32",
            ],
        )],
        errors: None,
        said: &[],
        not_said: &["lk_replace_me"],
    },
];

/// A source `gh` signed by GitHub and a source `pay` signed by Stripe, each with the
/// filters `filters` gives them (an object of keys to set).
fn with_filtered(c: &mut Value, gh: Value, pay: Value) {
    let mut github = json!({ "project": "/", "agent": "bot", "auth": "signature", "verify": "github", "secret": "gh-webhook-secret-0123" });
    let mut stripe = json!({ "project": "/", "agent": "bot", "auth": "signature", "verify": "stripe", "secret": "whsec_stripe_0123456789" });
    github
        .as_object_mut()
        .unwrap()
        .extend(gh.as_object().unwrap().clone());
    stripe
        .as_object_mut()
        .unwrap()
        .extend(pay.as_object().unwrap().clone());
    c["webhooks"]["gh"] = github;
    c["webhooks"]["pay"] = stripe;
}

/// Filters that can never match, or are not filters at all: each refused at its key.
const REFUSED_FILTERS: &[Refused] = &[
    Refused {
        name: "an empty events list",
        change: |c| with_filtered(c, json!({ "events": [] }), json!({})),
        problems: &[(
            "webhooks.gh.events",
            &["an empty list lets no event through"],
        )],
        errors: Some(1),
        said: &[],
        not_said: &[],
    },
    Refused {
        name: "an empty event name and a misplaced `*`",
        change: |c| {
            with_filtered(
                c,
                json!({}),
                json!({ "events": ["", "*.paid", "invoice.*.x", "invoice.*", 7] }),
            )
        },
        problems: &[
            (
                "webhooks.pay.events[0]",
                &["an empty event name never matches"],
            ),
            (
                "webhooks.pay.events[1]",
                &["\"*.paid\"", "`*` may only end a name"],
            ),
            ("webhooks.pay.events[2]", &["`*` may only end a name"]),
            (
                "webhooks.pay.events[4]",
                &["expected an event name", "got the number 7"],
            ),
        ],
        errors: Some(4),
        said: &[],
        not_said: &[],
    },
    Refused {
        name: "events on a source that cannot tell its events apart",
        change: |c| c["webhooks"]["hook"]["events"] = json!(["push"]),
        problems: &[(
            "webhooks.hook.events",
            &[
                "cannot tell which event a delivery is",
                "set \"eventHeader\"",
                "use `match`",
            ],
        )],
        errors: Some(1),
        said: &[],
        not_said: &[],
    },
    Refused {
        name: "an eventHeader that is no header, or without events",
        change: |c| {
            c["webhooks"]["hook"]["eventHeader"] = json!("X-Gitlab-Event");
            with_filtered(
                c,
                json!({ "events": ["push"], "eventHeader": "X Event" }),
                json!({}),
            );
        },
        problems: &[
            ("webhooks.hook.eventHeader", &["only applies with `events`"]),
            (
                "webhooks.gh.eventHeader",
                &["\"X Event\" is not a header name"],
            ),
        ],
        errors: Some(2),
        said: &[],
        not_said: &[],
    },
    Refused {
        name: "match conditions of a shape lowkey does not know",
        change: |c| {
            c["webhooks"]["hook"]["match"] = json!({
                "action": [],
                "state": { "equals": "open" },
                "ref": { "prefix": "refs/", "present": true },
                "number": { "prefix": 7 },
                "draft": { "present": "no" },
                "labels": ["bug", { "name": "bug" }],
                "a..b": 1,
            });
        },
        problems: &[
            (
                "webhooks.hook.match.action",
                &["an empty list matches nothing"],
            ),
            (
                "webhooks.hook.match.state",
                &["\"equals\" is not a condition", "{\"prefix\": \"...\"}"],
            ),
            ("webhooks.hook.match.ref", &["exactly one key"]),
            ("webhooks.hook.match.number", &["\"prefix\" takes a string"]),
            (
                "webhooks.hook.match.draft",
                &["\"present\" takes true or false"],
            ),
            (
                "webhooks.hook.match.labels",
                &["item 1 of the list is an object"],
            ),
            ("webhooks.hook.match.a..b", &["not a field path"]),
        ],
        errors: Some(7),
        said: &[],
        not_said: &[],
    },
    Refused {
        name: "a match that is not an object, and a field named twice",
        change: |c| {
            c["webhooks"]["hook"]["match"] = json!(["action"]);
            with_filtered(
                c,
                json!({ "match": { "action": "opened", " action": "closed" } }),
                json!({}),
            );
        },
        problems: &[
            (
                "webhooks.hook.match",
                &["expected an object of field path → condition"],
            ),
            // Keys are read in sorted order, so the second is the one without a space.
            (
                "webhooks.gh.match.action",
                &["the same field as `webhooks.gh.match. action`"],
            ),
        ],
        errors: Some(2),
        said: &[],
        not_said: &[],
    },
    Refused {
        name: "a match rule inside a field another rule makes absent or plain",
        change: |c| {
            c["webhooks"]["hook"]["match"] = json!({
                "pull_request": { "present": false },
                "pull_request.merged": true,
                "ref": { "prefix": "refs/tags/" },
                "ref.name": { "present": true },
            });
        },
        problems: &[
            (
                "webhooks.hook.match.pull_request.merged",
                &[
                    "can never match",
                    "`webhooks.hook.match.pull_request`",
                    "{\"present\": true}",
                ],
            ),
            (
                "webhooks.hook.match.ref.name",
                &["`webhooks.hook.match.ref`"],
            ),
        ],
        errors: Some(2),
        said: &[],
        not_said: &[],
    },
    Refused {
        name: "a match on Stripe's type that no listed event passes",
        change: |c| {
            let events = json!(["invoice.paid", "customer.subscription.*"]);
            let filters = json!({
                "events": events,
                "match": { "type": ["charge.failed", "invoice.voided"] }
            });
            with_filtered(c, json!({}), filters);
            c["webhooks"]["pay2"] = c["webhooks"]["pay"].clone();
            c["webhooks"]["pay2"]["match"] = json!({ "type.id": { "present": true } });
        },
        problems: &[
            (
                "webhooks.pay.match.type",
                &[
                    "can never match together with `webhooks.pay.events`",
                    "from `type`",
                ],
            ),
            (
                "webhooks.pay2.match.type.id",
                &["an event name is a string"],
            ),
        ],
        errors: Some(2),
        said: &[],
        not_said: &[],
    },
];

#[test]
fn a_config_that_cannot_work_is_refused_naming_each_key_and_its_fix() {
    for case in REFUSED.iter().chain(REFUSED_FILTERS) {
        let name = case.name;
        let mut config = base();
        (case.change)(&mut config);
        let v = Validator {
            own_path: "".into(),
            ..Validator::new(Lookup::Units)
        };
        let refused = v
            .parse(Path::new("config.json"), &config.to_string())
            .expect_err(name);
        let ConfigError::Invalid { problems, .. } = &refused else {
            panic!("{name}: {refused}");
        };
        let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
        let said = format!("{}\n{refused}", lines.join("\n"));
        for (key, texts) in case.problems {
            let line = problems
                .iter()
                .find(|p| p.key == *key)
                .map(Problem::to_string)
                .unwrap_or_else(|| panic!("{name}: no problem at {key}:\n{said}"));
            for text in *texts {
                assert!(
                    line.contains(text),
                    "{name}: {key} does not say {text:?}: {line}"
                );
            }
        }
        if let Some(n) = case.errors {
            assert_eq!(errors(problems).len(), n, "{name}:\n{said}");
        }
        for text in case.said {
            assert!(said.contains(text), "{name} does not say {text:?}:\n{said}");
        }
        for text in case.not_said {
            assert!(!said.contains(text), "{name} says {text:?}:\n{said}");
        }
    }
}

#[test]
fn filters_that_can_match_are_accepted() {
    let mut config = base();
    with_filtered(
        &mut config,
        json!({
            "events": ["pull_request", "issue*", "*"],
            "match": {
                "action": ["opened", "reopened", null],
                "pull_request.merged_at": { "present": false },
                "pull_request.merged_at.x": null,
                "pull_request.head.ref": { "prefix": "" },
                "sender.id": 1.0,
            }
        }),
        json!({
            "events": ["invoice.paid", "customer.subscription.*"],
            "match": { "type": { "prefix": "customer." }, "data.object.livemode": true }
        }),
    );
    set(
        &mut config,
        "/webhooks/hook/events",
        json!(["Push Hook", "merge_request*"]),
    );
    set(
        &mut config,
        "/webhooks/hook/eventHeader",
        json!("X-Gitlab-Event"),
    );
    set(&mut config, "/webhooks/hook/match", json!({}));
    config["webhooks"]["chat"] = json!({
        "project": "/", "agent": "bot", "auth": "signature", "verify": "slack", "secret": "slack-signing-secret-0123",
        "events": ["app_mention"], "match": { "type": "event_callback" }
    });
    assert_eq!(check(&config), vec![]);
    let loaded = Validator::new(Lookup::Units)
        .parse(Path::new("config.json"), &config.to_string())
        .unwrap();
    let sources = &loaded.config.sources;
    assert!(sources["gh"].filters.events.is_some());
    assert_eq!(sources["gh"].filters.rules.len(), 5);
    assert!(sources["hook"].filters.events.is_some());
    assert!(sources["pay"].filters.reads_payload());
}

#[test]
fn twilio_and_shopify_sources_are_read_with_their_keys() {
    let mut config = base();
    config["webhooks"]["sms"] = json!({
        "project": "/", "agent": "bot", "auth": "signature", "verify": "twilio",
        "secrets": ["new auth token", "old auth token"],
        "publicUrl": "https://hooks.example.com/api/webhook/sms",
    });
    config["webhooks"]["shop"] = json!({
        "project": "/", "agent": "bot", "auth": "signature", "verify": "shopify",
        "secret": "shopify client secret",
    });
    assert_eq!(check(&config), vec![]);
    let loaded = Validator::new(Lookup::Units)
        .parse(Path::new("config.json"), &config.to_string())
        .unwrap();
    let sms = loaded.config.sources["sms"].verify.as_ref().unwrap();
    let crate::signature::Scheme::Twilio(url) = &sms.scheme else {
        panic!("{:?}", sms.scheme);
    };
    assert_eq!(url.as_str(), "https://hooks.example.com/api/webhook/sms");
    assert_eq!(
        sms.keys,
        [b"new auth token".to_vec(), b"old auth token".to_vec()]
    );
    let shop = loaded.config.sources["shop"].verify.as_ref().unwrap();
    assert_eq!(shop.scheme, crate::signature::Scheme::Shopify);

    // Neither sender can send the API key, and neither signs a timestamp.
    config["webhooks"]["shop"]["auth"] = json!("key");
    config["webhooks"]["shop"]["toleranceSec"] = json!(60);
    let warnings = check(&config);
    let keys: Vec<&str> = warnings.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["webhooks.shop.toleranceSec", "webhooks.shop.auth"],
        "{warnings:?}"
    );
}

#[test]
fn a_secret_of_the_wrong_type_is_not_quoted_back() {
    for (pointer, value, key) in [
        ("/apiKey", json!(98765432123456789u64), "apiKey"),
        (
            "/webhooks/hook/secrets",
            json!(98765432123456789u64),
            "webhooks.hook.secrets",
        ),
        (
            "/agents/bot/env",
            json!({ "TOKEN": 98765432123456789u64 }),
            "agents.bot.env.TOKEN",
        ),
    ] {
        let mut config = base();
        set(&mut config, "/webhooks/hook/verify", json!("github"));
        set(&mut config, "/webhooks/hook/secret", json!("a-real-secret"));
        if key == "webhooks.hook.secrets" {
            config["webhooks"]["hook"]
                .as_object_mut()
                .unwrap()
                .remove("secret");
        }
        set(&mut config, pointer, value);
        let problems = check(&config);
        let error = errors(&problems)
            .into_iter()
            .find(|p| p.key == key)
            .unwrap_or_else(|| panic!("{key}: {problems:#?}"));
        assert!(error.message.contains("got a number"), "{error}");
        assert!(!error.message.contains("98765"), "{error}");
    }
}

#[test]
fn a_placeholder_api_key_is_an_error() {
    for placeholder in [
        "lk_replace_me_with_the_key_from_lowkey_init",
        "lk_…",
        "CHANGE-ME-0123456789abcdef",
    ] {
        let mut config = base();
        config["apiKey"] = json!(placeholder);
        let problems = check(&config);
        assert_eq!(errors(&problems).len(), 1, "{placeholder}: {problems:#?}");
        let p = &problems[0];
        assert_eq!(p.key, "apiKey");
        assert!(p.message.contains("placeholder"), "{p}");
        assert!(p.message.contains("openssl rand -hex 32"), "{p}");
    }
}

#[test]
fn a_placeholder_signing_secret_is_an_error_only_where_it_is_the_only_guard() {
    for (scheme, secret) in [
        ("stripe", "whsec_replace_me_with_the_stripe_endpoint_secret"),
        ("standard-webhooks", "whsec_replace_me_with_the_secret"),
        ("github", "replace_me_new_github_secret"),
    ] {
        let mut config = base();
        set(&mut config, "/webhooks/hook/verify", json!(scheme));
        set(
            &mut config,
            "/webhooks/hook/secrets",
            json!(["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", secret]),
        );
        set(&mut config, "/webhooks/hook/auth", json!("signature"));
        let problems = check(&config);
        assert_eq!(problems.len(), 1, "{scheme}: {problems:#?}");
        assert_eq!(problems[0].severity, Severity::Error);
        assert_eq!(problems[0].key, "webhooks.hook.secrets[1]");
        assert!(
            problems[0]
                .message
                .contains("anyone who has read the example")
        );

        // With the API key required too, it only makes real deliveries fail.
        set(&mut config, "/webhooks/hook/auth", json!("key"));
        let problems = check(&config);
        let warnings: Vec<&Problem> = problems
            .iter()
            .filter(|p| p.severity == Severity::Warning)
            .collect();
        assert_eq!(errors(&problems), Vec::<&Problem>::new(), "{scheme}");
        assert!(
            warnings
                .iter()
                .any(|p| p.key == "webhooks.hook.secrets[1]" && p.message.contains("401")),
            "{scheme}: {problems:#?}"
        );
    }
}

#[test]
fn problems_read_on_one_line_numbered_when_there_are_several() {
    let mut config = base();
    set(&mut config, "/agents/bot/timeoutSec", json!("sixty"));
    let one = Validator::new(Lookup::Own)
        .parse(Path::new("/c.json"), &config.to_string())
        .unwrap_err()
        .to_string();
    assert_eq!(
        one,
        "/c.json is not a valid config: agents.bot.timeoutSec: expected a whole number of seconds, such as 1800; got the string \"sixty\""
    );
    set(&mut config, "/webhooks/hook/agent", json!("bto"));
    set(&mut config, "/dashboard", json!(true));
    let two = Validator::new(Lookup::Own)
        .parse(Path::new("/c.json"), &config.to_string())
        .unwrap_err()
        .to_string();
    assert!(!two.contains('\n'), "{two}");
    assert!(
        two.starts_with("/c.json is not a valid config: 2 errors, 1 warning: (1) warning: dashboard: not a lowkey key; ignored (2) error: agents.bot.timeoutSec: expected"),
        "{two}"
    );
    assert!(
        two.contains("; got the string \"sixty\" (3) error: webhooks.hook.agent: agent \"bto\""),
        "{two}"
    );
}

#[test]
fn a_json_syntax_error_says_where_once_and_how_to_fix_it() {
    for (text, location, message) in [
        (
            "{\"apiKey\": \"k\",}",
            "c.json:1:16:",
            "not valid JSON: trailing comma; JSON allows no comma after the last item: remove it",
        ),
        (
            "{apiKey: 1}",
            "c.json:1:2:",
            "not valid JSON: key must be a string; JSON keys are in double quotes",
        ),
        (
            "{\"apiKey\": ",
            "c.json:1:11:",
            "not valid JSON: EOF while parsing a value; the file ends too early",
        ),
    ] {
        let said = Validator::new(Lookup::Own)
            .parse(Path::new("c.json"), text)
            .unwrap_err()
            .to_string();
        assert!(said.starts_with(location), "{said}");
        assert!(said.contains(message), "{said}");
        assert!(!said.contains("line"), "the position is given once: {said}");
    }
}

#[test]
fn invalid_json_names_the_line_and_column() {
    let c = base();
    // Line 3 lacks a comma after its value: the parser stops at line 4, column 3.
    let text = format!(
        "{{\n  \"apiKey\": \"{KEY}\",\n  \"agents\": {}\n  \"webhooks\": {}\n}}\n",
        c["agents"], c["webhooks"]
    );
    let said = parse(Path::new("config.json"), &text, Lookup::Own)
        .unwrap_err()
        .to_string();
    assert!(said.contains("config.json:4:3"), "{said}");
    assert!(said.contains("JSON"), "{said}");
}

/// A directory with an executable `agent-x` and a non-executable `plain`.
fn bin() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, mode) in [("agent-x", 0o755), ("plain", 0o644)] {
        let file = dir.path().join(name);
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    dir
}

/// A name not among GitHub's events is most often a typo, but GitHub adds events: a
/// warning with the closest name, never an error that would stop the config. `*` and
/// prefixes of GitHub's names pass.
#[test]
fn github_event_names_github_does_not_send_are_warned_about() {
    let mut config = base();
    let events = json!(["pull_requests", "isues", "workflow_*", "*", "zzz*"]);
    with_filtered(&mut config, json!({ "events": events }), json!({}));
    let problems = check(&config);
    assert!(errors(&problems).is_empty(), "{problems:#?}");
    let said: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.key.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(
        said,
        [
            (
                "webhooks.gh.events[0]",
                "\"pull_requests\" is not a GitHub webhook event; did you mean \"pull_request\"?"
            ),
            (
                "webhooks.gh.events[1]",
                "\"isues\" is not a GitHub webhook event; did you mean \"issues\"?"
            ),
            (
                "webhooks.gh.events[4]",
                "no GitHub webhook event starts with \"zzz\"; GitHub's events include pull_request, issues, issue_comment, push, release and workflow_run (the X-GitHub-Event names of GitHub's \"Webhook events and payloads\")"
            ),
        ]
    );
}

#[test]
fn check_looks_commands_up_on_the_units_path_and_names_the_one_the_shell_finds() {
    let bin = bin();
    let shell_path = format!("{}:/usr/bin", bin.path().display());
    let mut config = base();
    set(&mut config, "/agents/bot/command", json!(["agent-x", "-p"]));
    let problems = check_with(&config, &shell_path);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    let p = &problems[0];
    assert_eq!(
        (p.severity, p.key.as_str()),
        (Severity::Warning, "agents.bot.command")
    );
    let found = bin.path().join("agent-x");
    assert_eq!(
        p.message,
        format!(
            "\"agent-x\" is not on the PATH systemd gives lowkey's units ({UNITS_PATH}), so runs will fail; your PATH has it at {f}: use \"{f}\"",
            f = found.display()
        )
    );

    // Nowhere at all.
    let problems = check_with(&config, "/usr/bin");
    assert!(
        problems[0]
            .message
            .contains("install it there, or give its absolute path"),
        "{problems:#?}"
    );

    // `serve` looks on its own PATH, which is what its agents get.
    let own = Validator {
        own_path: shell_path.clone().into(),
        ..Validator::new(Lookup::Own)
    };
    let loaded = own.parse(Path::new("c.json"), &config.to_string()).unwrap();
    assert_eq!(loaded.warnings, vec![]);

    // An agent's own PATH is where it is looked for.
    set(
        &mut config,
        "/agents/bot/env",
        json!({ "PATH": bin.path() }),
    );
    assert_eq!(check_with(&config, "/usr/bin"), vec![]);
    set(
        &mut config,
        "/agents/bot/env",
        json!({ "PATH": "/usr/bin" }),
    );
    let problems = check_with(&config, &shell_path);
    assert!(
        problems[0]
            .message
            .contains("is not on agents.bot.env.PATH (/usr/bin)"),
        "{problems:#?}"
    );
    assert!(
        problems[0]
            .message
            .contains(&format!("use \"{}\"", found.display())),
        "{problems:#?}"
    );
}

#[test]
fn a_command_that_is_not_executable_is_a_warning_with_the_fix() {
    let bin = bin();
    let plain = bin.path().join("plain");
    for (command, path) in [
        (plain.display().to_string(), String::new()),
        ("plain".to_owned(), bin.path().display().to_string()),
    ] {
        let mut config = base();
        set(&mut config, "/agents/bot/command", json!([command]));
        set(&mut config, "/agents/bot/env", json!({ "PATH": path }));
        let problems = check(&config);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].severity, Severity::Warning);
        assert_eq!(
            problems[0].message,
            format!(
                "{p} is not executable, so runs will fail; run chmod +x {p}",
                p = plain.display()
            )
        );
    }
}

#[test]
fn a_readable_config_or_secret_file_holding_a_secret_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str, mode: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    };
    let warnings = |path: &Path| load(path, Lookup::Own).unwrap().warnings;

    let inline = write("inline.json", &base().to_string(), 0o644);
    let problems = warnings(&inline);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].key, "apiKey");
    assert_eq!(
        problems[0].message,
        format!(
            "{p} can be read by other users (mode 0644) and holds the API key; run chmod 600 {p}",
            p = inline.display()
        )
    );
    std::fs::set_permissions(&inline, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(warnings(&inline), vec![]);

    // The key in a file of its own: that file's mode is what counts.
    let key = write("key", KEY, 0o640);
    let mut config = base();
    config["apiKey"] = json!({ "file": key });
    let by_file = write("by-file.json", &config.to_string(), 0o644);
    let problems = warnings(&by_file);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert_eq!(problems[0].key, "apiKey.file");
    assert!(
        problems[0].message.contains("(mode 0640); run chmod 600"),
        "{problems:#?}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(warnings(&by_file), vec![]);
}

#[test]
fn on_finish_is_a_command_a_signed_url_or_both_with_its_defaults() {
    let mut config = base();
    config["agents"]["bot"]["onFinish"] = json!({ "command": ["/bin/true", "-x"] });
    config["webhooks"]["hook"]["onFinish"] = json!({
        "command": ["/bin/true"],
        "url": "https://hooks.example/services/T0K3N",
        "secret": "whsec_c2VjcmV0",
        "timeoutSec": 5,
    });
    let loaded = Validator::new(Lookup::Own)
        .parse(Path::new("config.json"), &config.to_string())
        .unwrap_or_else(|e| panic!("{e}"));
    let agent = loaded.config.agents["bot"].on_finish.as_ref().unwrap();
    let command = agent.command.as_ref().unwrap();
    assert_eq!(command.argv, ["/bin/true", "-x"]);
    assert_eq!(command.timeout.as_secs(), DEFAULT_FINISH_COMMAND_SEC);
    assert!(agent.post.is_none());
    let source = loaded.config.sources["hook"].on_finish.as_ref().unwrap();
    let post = source.post.as_ref().unwrap();
    assert_eq!(post.key, b"secret");
    assert_eq!(post.timeout.as_secs(), 5);
    assert_eq!(source.command.as_ref().unwrap().timeout.as_secs(), 5);
    // Neither the key nor the URL's token shows in a debug print.
    let printed = format!("{source:?}");
    assert!(
        !printed.contains("T0K3N") && !printed.contains("secret\""),
        "{printed}"
    );
}
