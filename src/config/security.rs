//! What guards the box: the API key, placeholders copied from the example, a config
//! file other users can read, `trustedProxies`, and a source's `auth`, `verify` and
//! secrets, checked together because each constrains the others.

use super::secrets::readable_by_others;
use super::sources::RawSource;
use super::validate::{Validator, kind, suggest};
use super::{Auth, DEFAULT_TOLERANCE_SEC, Verify};
use crate::secret::Secret;
use crate::signature::{self, Encoding, GenericHmac, PublicUrl, Scheme, SchemeKind};
use serde_json::{Map, Value};

/// Marks of a value copied from an example instead of filled in, compared after
/// folding case and dropping `_` and `-`: the shipped example config's secrets say
/// `replace_me`, and the README's key is `lk_…`.
const PLACEHOLDER_MARKS: &[&str] = &["replaceme", "changeme", "…"];

impl Validator {
    /// A secret written in the config is only as private as the file.
    pub(super) fn config_file_mode(&mut self) {
        let (Some((path, mode)), Some(key)) = (&self.file_mode, &self.inline_secret) else {
            return;
        };
        let Some(mode) = readable_by_others(*mode) else {
            return;
        };
        let what = if key == "apiKey" {
            "the API key"
        } else {
            "this signing secret"
        };
        let message = format!(
            "{path} can be read by other users (mode {mode}) and holds {what}; run chmod 600 {path}",
            path = path.display(),
        );
        self.warn(key.clone(), message);
    }

    pub(super) fn trusted_proxies(
        &mut self,
        value: Option<&Value>,
    ) -> Option<Vec<std::net::IpAddr>> {
        let Some(value) = value else {
            return Some(Vec::new());
        };
        let Some(items) = value.as_array() else {
            self.expected(
                "trustedProxies",
                "a list of IP addresses, such as [\"127.0.0.1\"]",
                value,
            );
            return None;
        };
        let mut ips = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str().and_then(|s| s.parse().ok()) {
                Some(ip) => ips.push(ip),
                None => {
                    self.expected(
                        &format!("trustedProxies[{i}]"),
                        "a proxy's IP address, such as \"127.0.0.1\"",
                        item,
                    );
                    return None;
                }
            }
        }
        Some(ips)
    }

    pub(super) fn api_key(&mut self, value: Option<&Value>) -> Option<Secret> {
        let Some(value) = value else {
            self.error(
                "apiKey",
                "missing; run `lowkey init` to create a config with a fresh key, or add \"apiKey\"",
            );
            return None;
        };
        let key = self.secret("apiKey", value)?;
        if is_placeholder(key.expose()) {
            // Anyone who has read the example could call every source.
            self.error(
                "apiKey",
                "is the example's placeholder, which anyone can read; put a fresh key in its place, such as the output of `openssl rand -hex 32` (or move this config aside and run `lowkey init`, which writes one with a fresh key)",
            );
            return None;
        }
        if key.expose().len() < 16 {
            self.warn(
                "apiKey",
                "shorter than 16 characters; `lowkey init` draws a strong one",
            );
        }
        Some(key)
    }

    /// Keys of one scheme's set on a source of another (or of none): an error, since the
    /// source then is not checked the way its author meant.
    fn no_keys_of(
        &mut self,
        key: &str,
        fields: &Map<String, Value>,
        scheme: SchemeKind,
        keys: &[&str],
    ) -> bool {
        let mut none = true;
        for k in keys {
            if fields.contains_key(*k) {
                self.error(
                    format!("{key}.{k}"),
                    format!("only applies with \"verify\": \"{scheme}\""),
                );
                none = false;
            }
        }
        none
    }

    /// The keys of the schemes a source does not use, each an error.
    fn no_other_scheme_keys(
        &mut self,
        key: &str,
        fields: &Map<String, Value>,
        kind: Option<SchemeKind>,
    ) -> bool {
        let mut none = true;
        if kind != Some(SchemeKind::HmacSha256) {
            none &= self.no_keys_of(key, fields, SchemeKind::HmacSha256, GENERIC_KEYS);
        }
        if !kind.is_some_and(SchemeKind::signs_url) {
            none &= self.no_keys_of(key, fields, SchemeKind::Twilio, &["publicUrl"]);
        }
        none
    }

    /// Twilio's `publicUrl`, which it must have.
    fn public_url(&mut self, key: &str, raw: &RawSource) -> Option<PublicUrl> {
        let Some(text) = raw.public_url.as_deref() else {
            self.error(
                format!("{key}.publicUrl"),
                "missing; twilio signs the URL it posts to, which lowkey cannot see behind a proxy: give the webhook URL set in Twilio's console, such as \"https://hooks.example.com/api/webhook/twilio\"",
            );
            return None;
        };
        match PublicUrl::parse(text) {
            Ok(url) => Some(url),
            Err(e) => {
                self.error(format!("{key}.publicUrl"), e.to_string());
                None
            }
        }
    }

    /// `auth`, `verify`, secrets and the scheme's options, checked together because
    /// each constrains the others.
    pub(super) fn security(
        &mut self,
        key: &str,
        fields: &Map<String, Value>,
        raw: &RawSource,
        name: &str,
    ) -> Option<(Auth, Option<Verify>)> {
        let mut ok = true;
        let auth = match raw.auth.as_deref() {
            None | Some("key") => Auth::Key,
            Some("signature") => Auth::Signature,
            Some(other) => {
                self.error(format!("{key}.auth"), format!("\"{other}\" is not an auth mode; use \"key\" (the default: the API key is required) or \"signature\" (only the signature)"));
                return None;
            }
        };
        // `secret` and each item of `secrets`, with the key that names it.
        let given: Vec<(String, &Value)> = match (fields.get("secret"), fields.get("secrets")) {
            (Some(_), Some(_)) => {
                self.error(format!("{key}.secrets"), "give either `secret` or `secrets`, not both; put every secret in `secrets` while rotating");
                ok = false;
                Vec::new()
            }
            (Some(one), None) => vec![(format!("{key}.secret"), one)],
            (None, Some(Value::Array(list))) if !list.is_empty() => list
                .iter()
                .enumerate()
                .map(|(i, item)| (format!("{key}.secrets[{i}]"), item))
                .collect(),
            // Not quoted back: it may hold a secret.
            (None, Some(other)) => {
                self.error(
                    format!("{key}.secrets"),
                    format!(
                        "expected a non-empty list of secrets, such as [\"new\", \"old\"]; got {}",
                        match other {
                            Value::Array(_) => "an empty list",
                            other => kind(other),
                        }
                    ),
                );
                ok = false;
                Vec::new()
            }
            (None, None) => Vec::new(),
        };
        let mut secrets = Vec::new();
        for (k, value) in given {
            match self.secret(&k, value) {
                Some(s) => secrets.push((k, s)),
                None => ok = false,
            }
        }
        let Some(scheme_name) = raw.verify.as_deref() else {
            if fields.contains_key("secret") || fields.contains_key("secrets") {
                self.error(format!("{key}.verify"), format!("a secret is set but no `verify` scheme says how to check it; add \"verify\": one of {}", scheme_names()));
                return None;
            }
            if auth == Auth::Signature {
                self.error(format!("{key}.auth"), "\"signature\" needs `verify` and `secret`; without them anyone could call this source");
                return None;
            }
            ok &= self.no_other_scheme_keys(key, fields, None);
            if raw.tolerance_sec.is_some() {
                self.warn(
                    format!("{key}.toleranceSec"),
                    "has no effect without `verify`",
                );
            }
            return ok.then_some((auth, None));
        };
        let kind: SchemeKind = match scheme_name.parse() {
            Ok(kind) => kind,
            Err(_) => {
                let names: Vec<&str> = SchemeKind::ALL.iter().map(|k| k.name()).collect();
                let hint = match suggest(scheme_name, &names) {
                    Some(s) => format!("did you mean \"{s}\"?"),
                    None => format!("use one of {}", scheme_names()),
                };
                self.error(
                    format!("{key}.verify"),
                    format!("\"{scheme_name}\" is not a signature scheme; {hint}"),
                );
                return None;
            }
        };
        let scheme = match kind {
            SchemeKind::StandardWebhooks => Scheme::StandardWebhooks,
            SchemeKind::Stripe => Scheme::Stripe,
            SchemeKind::Github => Scheme::Github,
            SchemeKind::Slack => Scheme::Slack,
            SchemeKind::Twilio => Scheme::Twilio(self.public_url(key, raw)?),
            SchemeKind::Shopify => Scheme::Shopify,
            SchemeKind::HmacSha256 => {
                let header = match raw
                    .signature_header
                    .as_deref()
                    .map(http::HeaderName::try_from)
                {
                    Some(Ok(h)) => Some(h),
                    Some(Err(_)) => {
                        self.error(
                            format!("{key}.signatureHeader"),
                            "is not a valid HTTP header name",
                        );
                        None
                    }
                    None => {
                        self.error(format!("{key}.signatureHeader"), "missing; hmac-sha256 needs the name of the header that carries the signature, e.g. \"X-Signature\"");
                        None
                    }
                };
                let encoding = match raw
                    .signature_encoding
                    .as_deref()
                    .map(str::parse::<Encoding>)
                {
                    None => Some(Encoding::Hex),
                    Some(Ok(e)) => Some(e),
                    Some(Err(_)) => {
                        self.error(
                            format!("{key}.signatureEncoding"),
                            "must be \"hex\" or \"base64\"",
                        );
                        None
                    }
                };
                Scheme::HmacSha256(GenericHmac {
                    header: header?,
                    encoding: encoding?,
                    prefix: raw.signature_prefix.clone().unwrap_or_default(),
                })
            }
        };
        ok &= self.no_other_scheme_keys(key, fields, Some(kind));
        if secrets.is_empty() {
            if ok {
                self.error(format!("{key}.secret"), format!("missing; `verify` {scheme_name} needs the signing secret the sender gave you"));
            }
            return None;
        }
        let mut keys = Vec::new();
        for (k, secret) in &secrets {
            // Its key would verify nothing but forgeries, so it is left out.
            if is_placeholder(secret.expose()) {
                if auth == Auth::Signature {
                    // The signature is this source's only guard, and the example is public.
                    self.error(k.as_str(), format!("is the example's placeholder, and \"{name}\" takes the signature alone, so anyone who has read the example could send it webhooks; put the signing secret the sender gave you in its place"));
                    ok = false;
                } else {
                    self.warn(k.as_str(), format!("is the example's placeholder, so every signed delivery to \"{name}\" will get 401; put the signing secret the sender gave you in its place"));
                }
                continue;
            }
            match signature::key_from_secret(&scheme, secret.expose()) {
                Ok(bytes) => keys.push(bytes),
                Err(e) => {
                    self.error(k.as_str(), e.to_string());
                    ok = false;
                }
            }
        }
        if raw.tolerance_sec.is_some() && !kind.has_timestamp() {
            self.warn(
                format!("{key}.toleranceSec"),
                format!("has no effect: {scheme_name} signs no timestamp"),
            );
        }
        if auth == Auth::Key && kind.cannot_send_custom_headers() {
            self.warn(
                format!("{key}.auth"),
                format!("{scheme_name} cannot send the `Authorization` header, so every delivery to \"{name}\" will get 401; set \"auth\": \"signature\""),
            );
        }
        ok.then(|| {
            (
                auth,
                Some(Verify {
                    scheme,
                    keys,
                    tolerance_sec: raw.tolerance_sec.unwrap_or(DEFAULT_TOLERANCE_SEC),
                }),
            )
        })
    }
}

/// The keys only the generic `hmac-sha256` scheme reads.
const GENERIC_KEYS: &[&str] = &["signatureHeader", "signatureEncoding", "signaturePrefix"];

pub(super) fn scheme_names() -> String {
    SchemeKind::ALL
        .iter()
        .map(|k| format!("\"{}\"", k.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// True for a value copied from an example and never filled in.
fn is_placeholder(text: &str) -> bool {
    let folded: String = text
        .chars()
        .filter(|c| !matches!(c, '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect();
    PLACEHOLDER_MARKS.iter().any(|mark| folded.contains(mark))
}
