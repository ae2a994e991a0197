//! The session transcript format: `$LOWKEY_HOME/sessions/<id>.jsonl`.
//!
//! This is a public format: people `cat` and `jq` it and agents read it. Every line is
//! one JSON object with a `type`. Reading is tolerant: a line that does not parse (a torn
//! last line after a crash, or a type from a newer lowkey) is skipped, never fatal.
//!
//! Every line after the header names its event (`Message::event`, `Run::event`), and a
//! reader can rely on this order (the README's Files section says the same): the
//! header first; an event's user message before any of its run records; a run's
//! `started` before its reply and its final record; other events' messages may come
//! between them, as a message is written as soon as its event is accepted; and every
//! line whole (a torn last line only after a crash, ended before the next append). Only
//! a power cut that lost a message while keeping its run records breaks the second
//! rule: the message is put back at the next start, after them.
//!
//! Session ids name these files, so this is also where their rule lives
//! ([`is_path_safe_id`]), which source names and `target` templates follow too.

use serde::{Deserialize, Serialize};
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Line {
    Session(Header),
    Message(Message),
    Run(Run),
}

/// The first line of every session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Header {
    pub id: String,
    /// The source whose event created the session.
    pub source: String,
    pub project: PathBuf,
    pub agent: String,
    pub created: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub role: Role,
    pub text: String,
    /// The event this message belongs to: the webhook delivery, or the one the agent answered.
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub at: String,
    /// The request body exactly as received (user messages only); `text` may be trimmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trimmed: bool,
    /// The event a rerun's message runs again (user messages of `lowkey rerun` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Agent,
}

/// A record of one agent run: one line when it starts, one when it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub event: String,
    pub status: RunStatus,
    pub agent: String,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Run {
    /// A run record stamped now, with none of the optional details.
    pub fn new(event: &str, status: RunStatus, agent: &str) -> Run {
        Run {
            event: event.to_owned(),
            status,
            agent: agent.to_owned(),
            at: now(),
            pid: None,
            exit_code: None,
            signal: None,
            duration_ms: None,
            error: None,
        }
    }
}

/// The error of an `interrupted` run.
pub const INTERRUPTED: &str = "lowkey stopped during the run; it runs again at the next start";

/// The error of the `interrupted` record that follows a result which could not be
/// synced to disk: the result above it may be lost, so the run happens again.
pub const UNSYNCED: &str = "the run's result could not be synced to disk, so it may be lost; it runs again at the next start";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Started,
    /// Exited 0.
    Finished,
    /// Exited non-zero, died of a signal, or could not be started.
    Failed,
    /// Ran past `timeoutSec`; its process group was ended.
    TimedOut,
    /// lowkey stopped or crashed mid-run; the run happens again after the restart.
    Interrupted,
}

impl RunStatus {
    /// A run that ended this way is not run again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunStatus::Finished | RunStatus::Failed | RunStatus::TimedOut
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Started => "started",
            RunStatus::Finished => "finished",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Interrupted => "interrupted",
        }
    }

    /// For people: "timed out" rather than "timed_out".
    pub fn label(self) -> String {
        self.as_str().replace('_', " ")
    }
}

/// How much of the payload goes into the message, in Unicode characters.
const MESSAGE_CHARS: usize = 2000;

/// Builds the agent's message: `Webhook from <source>: <payload>`, with the payload cut
/// after `MESSAGE_CHARS` characters (never inside one) and a visible note when cut.
pub fn webhook_message(source: &str, body: &str) -> (String, bool) {
    cut(&format!("Webhook from {source}: "), body, "payload")
}

/// A message filled in from a source's `message` template, cut as the default one is.
pub fn templated_message(text: &str) -> (String, bool) {
    cut("", text, "message")
}

/// `prefix` then `text`, with `text` cut after `MESSAGE_CHARS` characters and a note
/// naming `what` was cut.
fn cut(prefix: &str, text: &str, what: &str) -> (String, bool) {
    match first_chars(text, MESSAGE_CHARS) {
        (_, false) => (format!("{prefix}{text}"), false),
        (shown, true) => {
            let total = text.chars().count();
            (
                format!(
                    "{prefix}{shown}\n[{what} trimmed: showing the first {MESSAGE_CHARS} of {total} characters; the full body is in the session file]"
                ),
                true,
            )
        }
    }
}

/// The first `chars` characters of `text` (never part of one), and whether that left
/// any out.
pub fn first_chars(text: &str, chars: usize) -> (&str, bool) {
    match text.char_indices().nth(chars) {
        Some((end, _)) => (&text[..end], true),
        None => (text, false),
    }
}

/// The longest session id, in bytes.
pub const MAX_SESSION_ID_LEN: usize = 128;

/// Source names and session ids become file names, so they are kept to a safe alphabet:
/// an ASCII letter or digit first, then letters, digits, `-`, `_` and `.`.
pub fn is_path_safe_id(id: &str, max_len: usize) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && id.len() <= max_len
        && chars.all(is_id_char)
}

/// A character allowed in names and session ids after the first (which must be a
/// letter or digit).
pub fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

const SUFFIX: &str = ".jsonl";

pub fn file_name(id: &str) -> String {
    format!("{id}{SUFFIX}")
}

/// The session id a file name stands for, if it is a session file's.
pub fn id_of_file_name(name: &str) -> Option<&str> {
    name.strip_suffix(SUFFIX)
}

/// An RFC 3339 UTC timestamp with milliseconds, the format of every `at`/`created`.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Seconds since the Unix epoch, for signature windows and dedup expiry.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads a transcript, skipping lines that do not parse.
pub fn read(path: &Path) -> io::Result<Vec<Line>> {
    let mut lines = Vec::new();
    each(path, |line| lines.push(line))?;
    Ok(lines)
}

/// Hands each line of a transcript to `f` in order, skipping lines that do not parse;
/// it holds one line at a time, however long the session.
pub fn each(path: &Path, mut f: impl FnMut(Line)) -> io::Result<()> {
    let file = std::fs::File::open(path)?;
    for raw in io::BufReader::new(file).split(b'\n') {
        if let Ok(line) = serde_json::from_slice::<Line>(&raw?) {
            f(line);
        }
    }
    Ok(())
}

/// Serializes lines as JSON Lines, each ending in `\n`.
pub fn encode(lines: &[Line]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in lines {
        encode_json(&mut out, line);
    }
    out
}

/// Appends `value` to `out` as one JSON line. Session lines and the store's records
/// are all written this way.
pub(crate) fn encode_json(out: &mut Vec<u8>, value: &impl Serialize) {
    // Callers pass plain structs, whose serializing cannot fail.
    serde_json::to_writer(&mut *out, value).expect("a record serializes");
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_safe_ids() {
        assert!(is_path_safe_id("stripe", 64));
        assert!(is_path_safe_id("gh-pr_12.v2", 64));
        assert!(!is_path_safe_id("", 64));
        assert!(!is_path_safe_id(".hidden", 64));
        assert!(!is_path_safe_id("a/b", 64));
        assert!(!is_path_safe_id("..", 64));
        assert!(!is_path_safe_id("naïve", 64));
        assert!(!is_path_safe_id(&"a".repeat(65), 64));
    }

    #[test]
    fn short_payload_is_whole() {
        let (text, trimmed) = webhook_message("stripe", "{\"a\":1}");
        assert_eq!(text, "Webhook from stripe: {\"a\":1}");
        assert!(!trimmed);
    }

    #[test]
    fn the_first_chars_are_cut_on_a_character() {
        assert_eq!(first_chars("héllo", 2), ("hé", true));
        assert_eq!(first_chars("héllo", 5), ("héllo", false));
        assert_eq!(first_chars("", 3), ("", false));
    }

    #[test]
    fn cut_never_splits_a_character() {
        let body = "é".repeat(MESSAGE_CHARS + 1);
        let (text, trimmed) = webhook_message("s", &body);
        assert!(trimmed);
        let payload = text.strip_prefix("Webhook from s: ").unwrap();
        let shown: String = payload.chars().take_while(|c| *c == 'é').collect();
        assert_eq!(shown.chars().count(), MESSAGE_CHARS);
        assert!(payload.contains("of 2001 characters"));
    }

    #[test]
    fn a_long_templated_message_is_cut_with_its_own_note() {
        let (text, trimmed) = templated_message(&"x".repeat(MESSAGE_CHARS + 5));
        assert!(trimmed);
        assert!(text.starts_with(&"x".repeat(MESSAGE_CHARS)));
        assert!(text.ends_with("\n[message trimmed: showing the first 2000 of 2005 characters; the full body is in the session file]"));
        assert_eq!(templated_message("short"), ("short".to_owned(), false));
    }

    #[test]
    fn exactly_the_limit_is_not_trimmed() {
        let body = "🦀".repeat(MESSAGE_CHARS);
        let (text, trimmed) = webhook_message("s", &body);
        assert!(!trimmed);
        assert!(text.ends_with('🦀'));
    }
}
