//! A source's filters: `events`, `eventHeader` and `match` (the filters themselves are
//! `crate::filter`). Everything that would make a filter never match is an error here,
//! so `lowkey check` and a reload refuse it: an empty list, an empty event name, a
//! misplaced `*`, and `match` rules that contradict each other. Nothing that can match
//! is refused; a name GitHub is not known to send is only a warning.

use super::FieldPath;
use super::validate::{Validator, suggest};
use crate::filter::{self, Condition, EventAt, Events, Filters, Pattern, Rule};
use crate::signature::SchemeKind;
use http::HeaderName;
use serde_json::{Map, Value};

/// Every event GitHub names in `X-GitHub-Event`, from its "Webhook events and
/// payloads" documentation.
pub(super) const GITHUB_EVENTS: &[&str] = &[
    "branch_protection_configuration",
    "branch_protection_rule",
    "check_run",
    "check_suite",
    "code_scanning_alert",
    "commit_comment",
    "create",
    "custom_property",
    "custom_property_values",
    "delete",
    "dependabot_alert",
    "deploy_key",
    "deployment",
    "deployment_protection_rule",
    "deployment_review",
    "deployment_status",
    "discussion",
    "discussion_comment",
    "fork",
    "github_app_authorization",
    "gollum",
    "installation",
    "installation_repositories",
    "installation_target",
    "issue_comment",
    "issue_dependencies",
    "issues",
    "label",
    "marketplace_purchase",
    "member",
    "membership",
    "merge_group",
    "meta",
    "milestone",
    "org_block",
    "organization",
    "package",
    "page_build",
    "personal_access_token_request",
    "ping",
    "project",
    "project_card",
    "project_column",
    "projects_v2",
    "projects_v2_item",
    "projects_v2_status_update",
    "public",
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
    "pull_request_review_thread",
    "push",
    "registry_package",
    "release",
    "repository",
    "repository_advisory",
    "repository_dispatch",
    "repository_import",
    "repository_ruleset",
    "repository_vulnerability_alert",
    "secret_scanning_alert",
    "secret_scanning_alert_location",
    "secret_scanning_scan",
    "security_advisory",
    "security_and_analysis",
    "sponsorship",
    "star",
    "status",
    "sub_issues",
    "team",
    "team_add",
    "watch",
    "workflow_dispatch",
    "workflow_job",
    "workflow_run",
];

impl Validator {
    /// The filters of the source at `key`; `verify` is its `verify` as written, for
    /// where its senders name their events. `None` when any of it is wrong (each
    /// problem reported).
    pub(super) fn filters(
        &mut self,
        key: &str,
        fields: &Map<String, Value>,
        verify: Option<&str>,
    ) -> Option<Filters> {
        let header = self.event_header(key, fields);
        let events = match fields.get("events") {
            None | Some(Value::Null) => {
                if let Some(Some(_)) = header {
                    self.error(
                        format!("{key}.eventHeader"),
                        "only applies with `events`; list the events to take, such as \"events\": [\"push\"], or remove it",
                    );
                    return None;
                }
                // A wrong `eventHeader` is reported where it was read.
                header.map(|_| None)
            }
            Some(value) => self.events(key, value, header, verify).map(Some),
        };
        let rules = self.rules(key, fields.get("match"));
        let (events, rules) = (events?, rules?);
        if let Some((field, clashing)) = events
            .as_ref()
            .and_then(|e| filter::clashes_with_events(e, &rules))
        {
            for rule in &clashing {
                let why = if rule.path == *field {
                    "no event listed there passes this condition; change one to agree with the other"
                } else {
                    "an event name is a string, with no field inside it; remove this rule"
                };
                self.error(
                    format!("{key}.match.{}", rule.key),
                    format!("can never match together with `{key}.events`, which reads the event name from `{field}`: {why}"),
                );
            }
            if !clashing.is_empty() {
                return None;
            }
        }
        Some(Filters { events, rules })
    }

    /// `eventHeader`: `Some(None)` when absent.
    fn event_header(
        &mut self,
        key: &str,
        fields: &Map<String, Value>,
    ) -> Option<Option<HeaderName>> {
        let needs = "the header the sender names its event in, such as \"X-Gitlab-Event\"";
        let text = self.optional(key, fields, "eventHeader", needs, |v| {
            v.as_str().map(str::to_owned)
        })?;
        let Some(text) = text else {
            return Some(None);
        };
        match HeaderName::from_bytes(text.as_bytes()) {
            Ok(name) => Some(Some(name)),
            Err(_) => {
                self.error(
                    format!("{key}.eventHeader"),
                    format!("\"{text}\" is not a header name; give {needs}"),
                );
                None
            }
        }
    }

    fn events(
        &mut self,
        key: &str,
        value: &Value,
        header: Option<Option<HeaderName>>,
        verify: Option<&str>,
    ) -> Option<Events> {
        let key = format!("{key}.events");
        let Some(items) = value.as_array() else {
            self.expected(
                &key,
                "a list of event names, such as [\"pull_request\", \"issues\"]",
                value,
            );
            return None;
        };
        if items.is_empty() {
            self.error(
                &key,
                "an empty list lets no event through; list the events to take, or remove `events` to take every event",
            );
            return None;
        }
        // Where a delivery names its event; `None` when that is unknown because
        // `eventHeader` or `verify` is wrong, which is reported at that key.
        let scheme = verify.map(str::parse::<SchemeKind>);
        let at = match (header, &scheme) {
            (None, _) => None,
            (Some(Some(header)), _) => Some(Some(EventAt::Header(header))),
            (Some(None), Some(Ok(kind))) => Some(filter::event_at(*kind)),
            (Some(None), Some(Err(_))) => None,
            (Some(None), None) => Some(None),
        };
        // Only GitHub sends `X-GitHub-Event`, and its names are known: a name not among
        // them is most often a typo. Only a warning: GitHub adds events, and a name
        // newer than this list must not stop the config.
        let github = matches!(&at, Some(Some(EventAt::Header(h))) if h == "x-github-event");
        let mut names = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_key = format!("{key}[{i}]");
            let Some(text) = item.as_str() else {
                self.expected(&item_key, "an event name, such as \"pull_request\"", item);
                ok = false;
                continue;
            };
            match Pattern::parse(text) {
                Ok(pattern) => {
                    if github && !GITHUB_EVENTS.iter().any(|e| pattern.matches(e)) {
                        self.warn(&item_key, not_github(text, &pattern));
                    }
                    names.push(pattern);
                }
                Err(message) => {
                    self.error(&item_key, message);
                    ok = false;
                }
            }
        }
        let Some(at) = at? else {
            let scheme = match verify {
                Some(name) => format!("\"verify\": \"{name}\""),
                None => "a source without `verify`".to_owned(),
            };
            self.error(
                &key,
                format!("lowkey cannot tell which event a delivery is: {scheme} does not say where senders name it; set \"eventHeader\" to the header the sender names its event in (such as \"X-Gitlab-Event\"), or use `match` on a payload field instead"),
            );
            return None;
        };
        ok.then_some(Events { names, at })
    }

    fn rules(&mut self, key: &str, value: Option<&Value>) -> Option<Vec<Rule>> {
        let key = format!("{key}.match");
        let fields = match value {
            None | Some(Value::Null) => return Some(Vec::new()),
            Some(Value::Object(fields)) => fields,
            Some(other) => {
                self.expected(
                    &key,
                    "an object of field path → condition, such as {\"action\": [\"opened\", \"reopened\"]}",
                    other,
                );
                return None;
            }
        };
        let mut rules: Vec<Rule> = Vec::new();
        let mut ok = true;
        for (path_text, condition) in fields {
            let rule_key = format!("{key}.{path_text}");
            let Some(path) = FieldPath::parse(path_text) else {
                self.error(
                    &rule_key,
                    "not a field path; name a payload field with dots between its parts, such as \"pull_request.state\" or \"items.0.id\"",
                );
                ok = false;
                continue;
            };
            if let Some(twin) = rules.iter().find(|r| r.path == path) {
                self.error(
                    &rule_key,
                    format!(
                        "names the same field as `{key}.{}`; give each field one condition",
                        twin.key
                    ),
                );
                ok = false;
                continue;
            }
            match Condition::parse(condition) {
                Ok(condition) => rules.push(Rule {
                    key: path_text.clone(),
                    path,
                    condition,
                }),
                Err(message) => {
                    self.error(&rule_key, message);
                    ok = false;
                }
            }
        }
        for (i, parent) in filter::clashes(&rules) {
            let rule = &rules[i];
            self.error(
                format!("{key}.{}", rule.key),
                format!(
                    "can never match: `{key}.{parent}` lets `{parent}` only be absent or a plain value, which has no field inside it; remove one of the two, or require `{parent}` with {{\"present\": true}}"
                ),
            );
            ok = false;
        }
        ok.then_some(rules)
    }
}

/// Why a GitHub `events` entry never matches, with the closest name GitHub sends.
fn not_github(text: &str, pattern: &Pattern) -> String {
    let near = match pattern {
        Pattern::Exact(name) => suggest(name, GITHUB_EVENTS),
        Pattern::Prefix(prefix) => suggest(prefix, GITHUB_EVENTS),
    };
    let what = match pattern {
        Pattern::Exact(_) => format!("\"{text}\" is not a GitHub webhook event"),
        Pattern::Prefix(prefix) => format!("no GitHub webhook event starts with \"{prefix}\""),
    };
    match near {
        Some(near) => format!("{what}; did you mean \"{near}\"?"),
        None => format!(
            "{what}; GitHub's events include pull_request, issues, issue_comment, push, release and workflow_run (the X-GitHub-Event names of GitHub's \"Webhook events and payloads\")"
        ),
    }
}
