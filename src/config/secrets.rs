//! Where a secret is read from: the config itself, a file, or a systemd credential; and
//! the mode of the file it came from, since a secret is only as private as its file.

use super::validate::{Validator, kind};
use crate::secret::Secret;
use serde_json::Value;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

impl Validator {
    /// A secret is given inline, or as `{"file": PATH}`, or as `{"credential": NAME}` read
    /// from systemd's `$CREDENTIALS_DIRECTORY` (`LoadCredential=`), so it need not sit in
    /// the JSON.
    pub(super) fn secret(&mut self, key: &str, value: &Value) -> Option<Secret> {
        let read = |path: &Path| {
            read_with_mode(path)
                .map(|(text, mode)| (text.trim_end_matches(['\n', '\r']).to_owned(), mode))
        };
        let text = match value {
            Value::String(s) => {
                self.inline_secret.get_or_insert_with(|| key.to_owned());
                s.clone()
            }
            Value::Object(obj) if obj.len() == 1 && obj.contains_key("file") => {
                let Some(file) = obj["file"].as_str() else {
                    self.expected(&format!("{key}.file"), "a path string", &obj["file"]);
                    return None;
                };
                match read(Path::new(file)) {
                    Ok((text, mode)) => {
                        if let Some(mode) = readable_by_others(mode) {
                            self.warn(
                                format!("{key}.file"),
                                format!(
                                    "{file} can be read by other users (mode {mode}); run chmod 600 {file}"
                                ),
                            );
                        }
                        text
                    }
                    Err(e) => {
                        self.error(format!("{key}.file"), format!("cannot read {file}: {e}"));
                        return None;
                    }
                }
            }
            Value::Object(obj) if obj.len() == 1 && obj.contains_key("credential") => {
                let Some(name) = obj["credential"].as_str() else {
                    self.expected(
                        &format!("{key}.credential"),
                        "a credential name (a string)",
                        &obj["credential"],
                    );
                    return None;
                };
                let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
                    self.error(
                        format!("{key}.credential"),
                        format!("credential \"{name}\" needs $CREDENTIALS_DIRECTORY; run under systemd with LoadCredential={name}:PATH"),
                    );
                    return None;
                };
                // systemd keeps credentials private to the service.
                match read(&Path::new(&dir).join(name)) {
                    Ok((text, _)) => text,
                    Err(e) => {
                        self.error(
                            format!("{key}.credential"),
                            format!("cannot read credential \"{name}\": {e}"),
                        );
                        return None;
                    }
                }
            }
            // Not quoted back: it may be the secret itself.
            other => {
                self.error(
                    key,
                    format!("expected a string, {{\"file\": \"/path\"}} or {{\"credential\": \"name\"}}; got {}", kind(other)),
                );
                return None;
            }
        };
        if text.is_empty() {
            self.error(key, "is empty");
            return None;
        }
        Some(Secret::new(text))
    }
}

/// A file's text and its mode, both from the one open file.
pub(super) fn read_with_mode(path: &Path) -> std::io::Result<(String, u32)> {
    let mut file = std::fs::File::open(path)?;
    let mode = file.metadata()?.permissions().mode();
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok((text, mode))
}

/// The mode as `chmod` writes it (`0644`), when it lets other users read the file.
pub(super) fn readable_by_others(mode: u32) -> Option<String> {
    (mode & 0o044 != 0).then(|| format!("{:04o}", mode & 0o7777))
}
