//! Templates filled from the payload: a `target` such as `gh-pr-{{pull_request.number}}`
//! keeps every event about one PR or ticket in one session, and a `message` such as
//! `Stripe: {{type}} for {{data.object.amount}}` is what the agent reads.
//!
//! The rule for payloads that do not fit, the same for both: a placeholder whose field
//! is missing, `null`, an object or an array does not fill, and then the event gets
//! what it would have had without the template (a new session of its own, or the
//! default message), so no event is refused for its shape. Other values (strings,
//! numbers, booleans) are inserted as text; in a `target`, with every character outside
//! `A-Z a-z 0-9 . _ -` replaced by `-`, and a result that is still not a valid session id
//! also starts a new session.

use crate::session::{MAX_SESSION_ID_LEN, is_id_char, is_path_safe_id};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(FieldPath),
}

/// A dotted path into a JSON payload, such as `pull_request.number` or `items.0.id`:
/// object keys, or array indices where the value is an array. Templates and filters
/// name fields this way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath(Vec<String>);

impl FieldPath {
    /// Parses `a.b.0.c` (spaces around it are ignored); `None` for an empty segment.
    pub fn parse(text: &str) -> Option<FieldPath> {
        let keys: Vec<String> = text.trim().split('.').map(str::to_owned).collect();
        (!keys.iter().any(String::is_empty)).then_some(FieldPath(keys))
    }

    /// The value at this path, or `None` where the payload has nothing there.
    pub fn lookup<'a>(&self, payload: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(payload, |v, key| match v {
            Value::Object(map) => map.get(key),
            Value::Array(items) => items.get(key.parse::<usize>().ok()?),
            _ => None,
        })
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses a target holding at least one `{{path}}`; `Ok(None)` when it has none.
    pub fn parse(text: &str) -> Result<Option<Template>, String> {
        if !text.contains("{{") && !text.contains("}}") {
            return Ok(None);
        }
        let template = Template::message(text)?;
        // The literals must fit the session-id rule wherever the placeholders land;
        // checked with a digit, which fits anywhere, in each placeholder's place.
        let skeleton: String = template
            .parts
            .iter()
            .map(|p| match p {
                Part::Literal(l) => l.as_str(),
                Part::Field(_) => "0",
            })
            .collect();
        if !is_path_safe_id(&skeleton, usize::MAX) {
            return Err(format!(
                "\"{text}\": outside the placeholders use only letters, digits, '-', '_' and '.' (not first)"
            ));
        }
        Ok(Some(template))
    }

    /// Parses a message: any text, with `{{path}}` placeholders or none.
    pub fn message(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("\"{text}\" has a `{{{{` without its `}}}}`"))?;
            let path = after[..close].trim();
            let Some(field) = FieldPath::parse(path) else {
                return Err(format!(
                    "\"{{{{{path}}}}}\" is not a field path; write e.g. {{{{pull_request.number}}}}"
                ));
            };
            parts.push(Part::Field(field));
            rest = &after[close + 2..];
        }
        if rest.contains("}}") {
            return Err(format!("\"{text}\" has a `}}}}` without its `{{{{`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// The session id for this payload, or `None` when the payload does not fit (see
    /// the module's rule).
    pub fn render(&self, payload: &Value) -> Option<String> {
        let id = self.fill_with(payload, |text, id| {
            id.extend(text.chars().map(|c| if is_id_char(c) { c } else { '-' }));
        })?;
        is_path_safe_id(&id, MAX_SESSION_ID_LEN).then_some(id)
    }

    /// The message for this payload, or `None` when the payload does not fit.
    pub fn fill(&self, payload: &Value) -> Option<String> {
        self.fill_with(payload, |text, message| message.push_str(text))
    }

    /// The literals, and each field's value as text put in by `insert`.
    fn fill_with(&self, payload: &Value, insert: impl Fn(&str, &mut String)) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Field(path) => {
                    let text: Cow<str> = match path.lookup(payload)? {
                        Value::String(s) => s.into(),
                        Value::Number(n) => n.to_string().into(),
                        Value::Bool(b) => b.to_string().into(),
                        Value::Null | Value::Object(_) | Value::Array(_) => return None,
                    };
                    insert(&text, &mut out);
                }
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> Template {
        Template::parse(s).unwrap().unwrap()
    }

    #[test]
    fn fills_fields() {
        let p = json!({"pull_request": {"number": 42}, "repo": {"name": "a b/c"}, "items": [{"id": "x"}]});
        assert_eq!(
            t("gh-pr-{{pull_request.number}}").render(&p).as_deref(),
            Some("gh-pr-42")
        );
        assert_eq!(t("r-{{repo.name}}").render(&p).as_deref(), Some("r-a-b-c"));
        assert_eq!(t("i-{{ items.0.id }}").render(&p).as_deref(), Some("i-x"));
    }

    #[test]
    fn missing_or_unfit_fields_mean_a_new_session() {
        let p = json!({"a": null, "o": {}, "s": ".x"});
        assert_eq!(t("x-{{nope}}").render(&p), None);
        assert_eq!(t("x-{{a}}").render(&p), None);
        assert_eq!(t("x-{{o}}").render(&p), None);
        assert_eq!(t("{{s}}").render(&p), None);
    }

    #[test]
    fn fills_messages_with_text_as_it_is() {
        let p = json!({"type": "invoice.paid", "data": {"object": {"amount": 1999, "currency": "eur", "note": "a/b c"}}});
        let m = Template::message("Stripe: {{type}} for {{data.object.amount}} {{data.object.currency}} ({{data.object.note}})").unwrap();
        assert_eq!(
            m.fill(&p).as_deref(),
            Some("Stripe: invoice.paid for 1999 eur (a/b c)")
        );
        assert_eq!(Template::message("x {{data}}").unwrap().fill(&p), None);
        assert_eq!(Template::message("x {{nope}}").unwrap().fill(&p), None);
        let fixed = Template::message("Check the dashboard").unwrap();
        assert_eq!(fixed.fill(&p).as_deref(), Some("Check the dashboard"));
        assert!(Template::message("a {{b").is_err());
        assert!(Template::message("a }} b").is_err());
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(Template::parse("a-{{b").is_err());
        assert!(Template::parse("a-{{}}").is_err());
        assert!(Template::parse("a/{{b}}").is_err());
        assert!(Template::parse("a}}").is_err());
        assert_eq!(Template::parse("plain").unwrap(), None);
    }
}
