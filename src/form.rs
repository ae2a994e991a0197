//! Form bodies (`application/x-www-form-urlencoded`, what Slack's slash commands and
//! interactivity, Twilio and many form services send): telling one from other text, and
//! reading it as the JSON object templates and filters see.
//!
//! A body is judged by its bytes, never by its `Content-Type`. One that is not JSON is a
//! form when it is a well-formed one:
//!
//! - fields joined by `&`, each `name=value` (the first `=` splits; later ones belong to
//!   the value), with a name that is not empty; no empty field (`a=1&&b=2`, a trailing
//!   `&`);
//! - only visible ASCII: a space is `+`, anything else is a `%XX` escape, and every `%`
//!   is followed by two hex digits;
//! - each name and value decodes to UTF-8.
//!
//! So `hello world`, a line of text or a broken JSON document is not a form, and the
//! 400 says what is wrong with it. Decoding is one strict pass here rather than
//! `form_urlencoded::parse`, which never fails (it keeps a stray `%` and replaces bad
//! UTF-8), so it could not tell a form from text or say where one goes wrong.
//!
//! As JSON ([`to_object`]), each field is a string; a field sent more than once is the
//! array of its values, in order; and a field named `payload` whose value is a JSON
//! object or array (Slack's interactivity sends `payload={...}`) is that object or
//! array, so `{{payload.type}}` reaches into it. Only that one field: any other holds
//! what a sender's users typed (an SMS `Body` of `{}`), which must stay text.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A form's fields, decoded, in the order they were sent.
pub type Fields = Vec<(String, String)>;

/// Why text is not a form. Offsets are bytes from the start of the body, counted from 0;
/// fields are counted from 1. Nothing of the body is quoted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("it is empty")]
    Empty,
    #[error("field {field} (at offset {offset}) is empty")]
    EmptyField { field: usize, offset: usize },
    #[error("field {field} (at offset {offset}) has no `=`")]
    NoEquals { field: usize, offset: usize },
    #[error("field {field} (at offset {offset}) has an empty name")]
    EmptyName { field: usize, offset: usize },
    #[error(
        "the byte at offset {offset} is {what}; a form holds only visible ASCII, with a space as `+` and anything else as `%XX`"
    )]
    Byte { offset: usize, what: &'static str },
    #[error("the `%` at offset {offset} is not followed by two hex digits")]
    Escape { offset: usize },
    #[error("field {field}'s {part} does not decode to UTF-8")]
    NotUtf8 { field: usize, part: &'static str },
}

/// Reads `text` as a form, strictly (see the module's rule).
///
/// # Errors
///
/// The first thing that keeps `text` from being a form; see [`FormError`].
pub fn parse(text: &str) -> Result<Fields, FormError> {
    if text.is_empty() {
        return Err(FormError::Empty);
    }
    let mut fields = Vec::new();
    let mut offset = 0;
    for (i, field) in text.split('&').enumerate() {
        let number = i + 1;
        if field.is_empty() {
            return Err(FormError::EmptyField {
                field: number,
                offset,
            });
        }
        let Some((name, value)) = field.split_once('=') else {
            return Err(FormError::NoEquals {
                field: number,
                offset,
            });
        };
        if name.is_empty() {
            return Err(FormError::EmptyName {
                field: number,
                offset,
            });
        }
        let value_at = offset + name.len() + 1;
        fields.push((
            decode(name, offset, number, "name")?,
            decode(value, value_at, number, "value")?,
        ));
        offset += field.len() + 1;
    }
    Ok(fields)
}

/// One name or value, `+` and `%XX` decoded; `offset` is where it starts in the body.
fn decode(
    part: &str,
    offset: usize,
    field: usize,
    which: &'static str,
) -> Result<String, FormError> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = match bytes[i] {
            b'+' => b' ',
            b'%' => {
                let Some(&[high, low]) = bytes.get(i + 1..i + 3) else {
                    return Err(FormError::Escape { offset: offset + i });
                };
                let (Some(high), Some(low)) = (hex_digit(high), hex_digit(low)) else {
                    return Err(FormError::Escape { offset: offset + i });
                };
                i += 2;
                high << 4 | low
            }
            b if b.is_ascii_graphic() => b,
            b => {
                let what = match b {
                    b' ' => "a space",
                    b if b.is_ascii() => "a control character",
                    _ => "not ASCII",
                };
                return Err(FormError::Byte {
                    offset: offset + i,
                    what,
                });
            }
        };
        out.push(byte);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| FormError::NotUtf8 { field, part: which })
}

fn hex_digit(byte: u8) -> Option<u8> {
    char::from(byte).to_digit(16).map(|d| d as u8)
}

/// The form as the JSON object templates and filters read (see the module's rule).
pub fn to_object(fields: Fields) -> Value {
    let mut by_name: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (name, value) in fields {
        let value = if name == "payload" {
            json_or_text(value)
        } else {
            Value::String(value)
        };
        by_name.entry(name).or_default().push(value);
    }
    let object: Map<String, Value> = by_name
        .into_iter()
        .map(|(name, mut values)| {
            let value = if values.len() == 1 {
                values.pop().expect("one value")
            } else {
                Value::Array(values)
            };
            (name, value)
        })
        .collect();
    Value::Object(object)
}

/// A value that is a JSON object or array is handed over parsed; anything else (a
/// number, `true`, a quoted string) stays the text that was sent.
fn json_or_text(value: String) -> Value {
    if value.trim_start().starts_with(['{', '['])
        && let Ok(parsed @ (Value::Object(_) | Value::Array(_))) = serde_json::from_str(&value)
    {
        return parsed;
    }
    Value::String(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn forms_decode() {
        for (text, expected) in [
            ("a=1", fields(&[("a", "1")])),
            ("a=", fields(&[("a", "")])),
            ("a=1&b=two+words", fields(&[("a", "1"), ("b", "two words")])),
            ("a=b=c", fields(&[("a", "b=c")])),
            ("caf%C3%A9=%E2%82%AC%2B1", fields(&[("café", "€+1")])),
            ("a=%2f%2F", fields(&[("a", "//")])),
            ("a=1&a=2", fields(&[("a", "1"), ("a", "2")])),
            (
                "command=%2Fdeploy&text=prod+now",
                fields(&[("command", "/deploy"), ("text", "prod now")]),
            ),
        ] {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn text_that_is_not_a_form_says_why() {
        for (text, error) in [
            ("", FormError::Empty),
            (
                "hello world",
                FormError::NoEquals {
                    field: 1,
                    offset: 0,
                },
            ),
            (
                "a=1&hello",
                FormError::NoEquals {
                    field: 2,
                    offset: 4,
                },
            ),
            (
                "a=1&&b=2",
                FormError::EmptyField {
                    field: 2,
                    offset: 4,
                },
            ),
            (
                "a=1&",
                FormError::EmptyField {
                    field: 2,
                    offset: 4,
                },
            ),
            (
                "=1",
                FormError::EmptyName {
                    field: 1,
                    offset: 0,
                },
            ),
            (
                "text=hello world",
                FormError::Byte {
                    offset: 10,
                    what: "a space",
                },
            ),
            (
                "a=1\n",
                FormError::Byte {
                    offset: 3,
                    what: "a control character",
                },
            ),
            (
                "a=café",
                FormError::Byte {
                    offset: 5,
                    what: "not ASCII",
                },
            ),
            ("a=100%", FormError::Escape { offset: 5 }),
            ("a=%zz", FormError::Escape { offset: 2 }),
            ("a=%+1", FormError::Escape { offset: 2 }),
            ("b=1&a%4=1", FormError::Escape { offset: 5 }),
            (
                "a=%FF",
                FormError::NotUtf8 {
                    field: 1,
                    part: "value",
                },
            ),
            (
                "%C3=1",
                FormError::NotUtf8 {
                    field: 1,
                    part: "name",
                },
            ),
            (
                "{\"a\": 1",
                FormError::NoEquals {
                    field: 1,
                    offset: 0,
                },
            ),
        ] {
            assert_eq!(parse(text), Err(error), "{text:?}");
        }
    }

    #[test]
    fn a_form_as_json() {
        let form = parse(
            "text=hi&n=3&tag=a&tag=b&payload=%7B%22type%22%3A%22block_actions%22%7D&list=%5B1%5D&brace=%7Bnot+json&quoted=%22x%22",
        )
        .unwrap();
        assert_eq!(
            to_object(form),
            json!({
                "text": "hi",
                "n": "3",
                "tag": ["a", "b"],
                "payload": {"type": "block_actions"},
                "list": "[1]",
                "brace": "{not json",
                "quoted": "\"x\"",
            })
        );
    }
}
