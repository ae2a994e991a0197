//! The entry points: read the file, parse its JSON, validate it, and say what is wrong.

use super::Config;
use super::agents::Lookup;
use super::secrets::read_with_mode;
use super::validate::Validator;
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};

/// Reads the config file and validates it, judging the file's mode too, since the
/// file may hold secrets.
pub fn load(path: &Path, lookup: Lookup) -> Result<Loaded, ConfigError> {
    let (text, mode) = read_with_mode(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut v = Validator::new(lookup);
    v.file_mode = Some((path.to_owned(), mode));
    v.parse(path, &text)
}

/// Parses and validates config text that did not come from a file (so its mode is not
/// judged), as `load` does.
pub fn parse(path: &Path, text: &str, lookup: Lookup) -> Result<Loaded, ConfigError> {
    Validator::new(lookup).parse(path, text)
}

/// The config other modules' unit tests write as JSON; a problem in it fails the test.
#[cfg(test)]
pub(crate) fn from_json(value: &serde_json::Value) -> super::Config {
    parse(Path::new("config.json"), &value.to_string(), Lookup::Own)
        .unwrap_or_else(|e| panic!("{e}"))
        .config
}

/// serde_json's message without the position it appends (the error names it already),
/// and with the fix for the mistakes people make writing JSON by hand.
fn syntax_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text);
    let hint = match message {
        "trailing comma" => "; JSON allows no comma after the last item: remove it",
        "key must be a string" => "; JSON keys are in double quotes, like \"apiKey\"",
        m if m.starts_with("EOF while parsing") => {
            "; the file ends too early: a closing } or ] or a quote is missing"
        }
        _ => "",
    };
    format!("{message}{hint}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One thing wrong with the config: where (a dotted key path) and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: not valid JSON: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{} is not a valid config: {}", path.display(), one_line(problems))]
    Invalid {
        path: PathBuf,
        /// Errors and warnings together, in file order.
        problems: Vec<Problem>,
    },
}

/// Every problem on one line, for a log line or a status: numbered when there are
/// several, since their messages hold `;` and `,` themselves. The warnings stay in, in
/// file order: a misspelt top-level key, only a warning, can be why a key is missing.
fn one_line(problems: &[Problem]) -> String {
    if let [one] = problems {
        return format!("{}: {}", one.key, one.message);
    }
    let count =
        |severity, name: &str| match problems.iter().filter(|p| p.severity == severity).count() {
            0 => None,
            1 => Some(format!("1 {name}")),
            n => Some(format!("{n} {name}s")),
        };
    let counts: Vec<String> = [
        count(Severity::Error, "error"),
        count(Severity::Warning, "warning"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let each: Vec<String> = problems
        .iter()
        .enumerate()
        .map(|(i, p)| format!("({}) {p}", i + 1))
        .collect();
    format!("{}: {}", counts.join(", "), each.join(" "))
}

/// A config that passed validation, with the warnings it still deserves.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Problem>,
}

impl Validator {
    /// Parses the config's text and validates it.
    pub(super) fn parse(mut self, path: &Path, text: &str) -> Result<Loaded, ConfigError> {
        let root: Value = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            message: syntax_message(&e),
        })?;
        let config = self.config(&root);
        let has_error = self.problems.iter().any(|p| p.severity == Severity::Error);
        match config {
            Some(config) if !has_error => Ok(Loaded {
                config,
                warnings: self.problems,
            }),
            _ => Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems: self.problems,
            }),
        }
    }
}
