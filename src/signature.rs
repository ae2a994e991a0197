//! Verifying and producing webhook signatures for the schemes lowkey accepts.
//!
//! Every scheme but Twilio's is an HMAC-SHA256 over some framing of the request body. They
//! differ in where the signature and timestamp travel, how the signature is encoded, and
//! how the configured secret turns into key bytes:
//!
//! | scheme              | signed message               | signature header                    |
//! |---------------------|------------------------------|-------------------------------------|
//! | `standard-webhooks` | `id.timestamp.body`          | `webhook-signature: v1,<base64>`    |
//! | `stripe`            | `t.body`                     | `Stripe-Signature: t=..,v1=<hex>`   |
//! | `github`            | `body`                       | `X-Hub-Signature-256: sha256=<hex>` |
//! | `slack`             | `v0:ts:body`                 | `X-Slack-Signature: v0=<hex>`       |
//! | `twilio`            | URL, then the form's fields  | `X-Twilio-Signature: <base64>`      |
//! | `shopify`           | `body`                       | `X-Shopify-Hmac-Sha256: <base64>`   |
//! | `hmac-sha256`       | `body`                       | configured                          |
//!
//! Twilio's is HMAC-SHA1 over the URL it requested (`publicUrl` and the request's query)
//! followed by each form field, sorted, as `namevalue`; a JSON body is signed instead
//! through its SHA-256, which Twilio puts in the URL's query as `bodySHA256`. Signed with
//! a webhook SharedKey, the request says `algorithm=HMAC_SHA256` in
//! `X-Twilio-Webhooks-Signature-Settings`, and the MAC is HMAC-SHA256.
//!
//! [`verify`] checks an incoming request, [`sign`] produces the headers a real sender
//! would attach, and [`delivery_id`] finds the id the caller deduplicates on.
//!
//! Signatures are always computed over the body bytes exactly as received (re-serialising
//! JSON first would break every one of them; Twilio's fields are decoded from them) and
//! compared in constant time through `hmac`'s `verify_slice`.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use sha1::Sha1;
use sha2::{Digest, Sha256};

// Kept apart from the imports above so that rustfmt orders them the same way in every
// style edition (they disagree on `Engine` versus `engine`).
use base64::Engine as _;

type Sha256Hmac = Hmac<Sha256>;
type Sha1Hmac = Hmac<Sha1>;

const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
const STRIPE_SIGNATURE: HeaderName = HeaderName::from_static("stripe-signature");
const GITHUB_SIGNATURE: HeaderName = HeaderName::from_static("x-hub-signature-256");
const GITHUB_DELIVERY: HeaderName = HeaderName::from_static("x-github-delivery");
const SLACK_SIGNATURE: HeaderName = HeaderName::from_static("x-slack-signature");
const SLACK_TIMESTAMP: HeaderName = HeaderName::from_static("x-slack-request-timestamp");
const TWILIO_SIGNATURE: HeaderName = HeaderName::from_static("x-twilio-signature");
const TWILIO_IDEMPOTENCY: HeaderName = HeaderName::from_static("i-twilio-idempotency-token");
const TWILIO_SIGNATURE_SETTINGS: HeaderName =
    HeaderName::from_static("x-twilio-webhooks-signature-settings");
const SHOPIFY_HMAC: HeaderName = HeaderName::from_static("x-shopify-hmac-sha256");
const SHOPIFY_EVENT_ID: HeaderName = HeaderName::from_static("x-shopify-event-id");
const SHOPIFY_WEBHOOK_ID: HeaderName = HeaderName::from_static("x-shopify-webhook-id");

/// The query parameter that carries a JSON body's hash in the URL Twilio signs.
const TWILIO_BODY_HASH: &str = "bodySHA256";

const STANDARD_WEBHOOKS_SECRET_PREFIX: &str = "whsec_";

/// Upper bound on candidate signatures taken from one header. Senders put one signature
/// per active secret there (two during a rotation), so this is generous; without a bound
/// a huge header would make us compute one HMAC comparison per entry per key.
const MAX_SIGNATURES: usize = 32;

/// Standard base64 that accepts input with or without `=` padding, because secrets and
/// signatures get copied around by hand and the padding is often lost on the way.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// How a webhook sender signs its requests, with whatever configuration the scheme needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// The Standard Webhooks spec (also what Svix sends): `webhook-id`,
    /// `webhook-timestamp` and `webhook-signature` headers.
    StandardWebhooks,
    /// Stripe's `Stripe-Signature: t=..,v1=..` header.
    Stripe,
    /// GitHub's `X-Hub-Signature-256: sha256=<hex>` header.
    Github,
    /// Slack's `X-Slack-Signature: v0=<hex>` and `X-Slack-Request-Timestamp` headers.
    Slack,
    /// Twilio's `X-Twilio-Signature: <base64>` over the URL it requested, which lowkey
    /// learns from the source's `publicUrl`, and the form's fields.
    Twilio(PublicUrl),
    /// Shopify's `X-Shopify-Hmac-Sha256: <base64>` over the body.
    Shopify,
    /// A plain HMAC-SHA256 of the body in a configurable header, for senders that follow
    /// no published scheme.
    HmacSha256(GenericHmac),
}

/// Where and how a sender using the generic `hmac-sha256` scheme puts its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericHmac {
    /// The header that carries the signature.
    pub header: HeaderName,
    /// How the signature bytes are written in the header.
    pub encoding: Encoding,
    /// Text the sender puts before the encoded signature (e.g. `sha256=`); empty for none.
    /// Matched case-sensitively.
    pub prefix: String,
}

/// The URL a sender posts to as the internet sees it (a source's `publicUrl`), for
/// Twilio, which signs it: behind a proxy or TLS terminator lowkey cannot know it.
///
/// It is the URL given to the sender without its query; the query a signature covers is
/// the request's own, as received. Twilio has signed the URL both with and without the
/// port, so both are tried, as its own `RequestValidator` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// As configured, which is what `sign` signs.
    text: String,
    /// The host without a port, then the rest.
    without_port: String,
    /// The host with its port (the scheme's default when none is written), then the rest.
    with_port: String,
}

/// Why a `publicUrl` cannot be used; each says what it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicUrlError {
    #[error("is not a URL such as \"https://hooks.example.com/api/webhook/twilio\"")]
    NotUrl,
    #[error(
        "must start with https:// or http://, as in \"https://hooks.example.com/api/webhook/twilio\""
    )]
    Scheme,
    #[error(
        "must not hold a user name or password; give the URL the sender posts to, as in \"https://hooks.example.com/api/webhook/twilio\""
    )]
    UserInfo,
    #[error(
        "must not have a query or fragment: lowkey adds the query each request arrives with, as the sender signed it; give the URL up to its path"
    )]
    Query,
}

impl PublicUrl {
    /// Checks `text` is an `http(s)://host[:port]/path` URL without a query.
    ///
    /// # Errors
    ///
    /// See [`PublicUrlError`].
    pub fn parse(text: &str) -> Result<PublicUrl, PublicUrlError> {
        if text.contains(['?', '#']) {
            return Err(PublicUrlError::Query);
        }
        let (scheme, default_port) = if text.starts_with("https://") {
            ("https://", 443)
        } else if text.starts_with("http://") {
            ("http://", 80)
        } else {
            return Err(PublicUrlError::Scheme);
        };
        let uri = http::Uri::try_from(text).map_err(|_| PublicUrlError::NotUrl)?;
        let authority = uri.authority().ok_or(PublicUrlError::NotUrl)?;
        if authority.as_str().contains('@') {
            return Err(PublicUrlError::UserInfo);
        }
        let rest = &text[scheme.len() + authority.as_str().len()..];
        let host = authority.host();
        let port = authority.port_u16().unwrap_or(default_port);
        Ok(PublicUrl {
            text: text.to_owned(),
            without_port: format!("{scheme}{host}{rest}"),
            with_port: format!("{scheme}{host}:{port}{rest}"),
        })
    }

    /// The URL as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// How signature bytes are written as text in a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Hexadecimal; either letter case is accepted when verifying, lowercase is produced.
    Hex,
    /// Standard-alphabet base64; padding is optional when verifying, produced when signing.
    Base64,
}

/// The name of a scheme without its configuration, so config files can say
/// `scheme = "github"` and have it parsed with [`FromStr`] before the generic scheme's
/// extra settings are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemeKind {
    /// See [`Scheme::StandardWebhooks`].
    StandardWebhooks,
    /// See [`Scheme::Stripe`].
    Stripe,
    /// See [`Scheme::Github`].
    Github,
    /// See [`Scheme::Slack`].
    Slack,
    /// See [`Scheme::Twilio`].
    Twilio,
    /// See [`Scheme::Shopify`].
    Shopify,
    /// See [`Scheme::HmacSha256`].
    HmacSha256,
}

impl SchemeKind {
    /// Every kind, in the order they are listed to users (e.g. in "expected one of").
    pub const ALL: [SchemeKind; 7] = [
        SchemeKind::StandardWebhooks,
        SchemeKind::Stripe,
        SchemeKind::Github,
        SchemeKind::Slack,
        SchemeKind::Twilio,
        SchemeKind::Shopify,
        SchemeKind::HmacSha256,
    ];

    /// The name used in configuration and logs; [`FromStr`] accepts exactly these.
    pub fn name(self) -> &'static str {
        match self {
            SchemeKind::StandardWebhooks => "standard-webhooks",
            SchemeKind::Stripe => "stripe",
            SchemeKind::Github => "github",
            SchemeKind::Slack => "slack",
            SchemeKind::Twilio => "twilio",
            SchemeKind::Shopify => "shopify",
            SchemeKind::HmacSha256 => "hmac-sha256",
        }
    }

    /// Whether requests carry a signed timestamp, so replays outside a time window can be
    /// rejected.
    pub fn has_timestamp(self) -> bool {
        matches!(
            self,
            SchemeKind::StandardWebhooks | SchemeKind::Stripe | SchemeKind::Slack
        )
    }

    /// Whether lowkey needs the parsed JSON body: Stripe and Slack put the delivery id
    /// there (see [`delivery_id`]), and Slack its URL-verification [`challenge`].
    /// (Twilio's fields are read from the raw bytes by [`verify`] itself.)
    pub fn reads_body(self) -> bool {
        matches!(self, SchemeKind::Stripe | SchemeKind::Slack)
    }

    /// Whether the sender is a hosted service that decides its own headers, so it cannot
    /// be told to send e.g. an `Idempotency-Key`; deduplication then relies on
    /// [`delivery_id`].
    pub fn cannot_send_custom_headers(self) -> bool {
        matches!(
            self,
            SchemeKind::Stripe
                | SchemeKind::Github
                | SchemeKind::Slack
                | SchemeKind::Twilio
                | SchemeKind::Shopify
        )
    }

    /// Whether the scheme signs the URL, so the source needs `publicUrl`.
    pub fn signs_url(self) -> bool {
        matches!(self, SchemeKind::Twilio)
    }
}

impl fmt::Display for SchemeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchemeKind {
    type Err = UnknownScheme;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SchemeKind::ALL
            .into_iter()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| UnknownScheme(s.to_owned()))
    }
}

/// A scheme name in configuration that is not one we know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown signature scheme `{0}`; expected one of: {names}",
    names = SchemeKind::ALL.map(SchemeKind::name).join(", ")
)]
pub struct UnknownScheme(pub String);

impl Encoding {
    /// Every encoding, so [`FromStr`] can look names up through [`Encoding::name`].
    const ALL: [Encoding; 2] = [Encoding::Hex, Encoding::Base64];

    /// The name used in configuration; [`FromStr`] accepts exactly these.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Hex => "hex",
            Encoding::Base64 => "base64",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Encoding {
    type Err = UnknownEncoding;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Encoding::ALL
            .into_iter()
            .find(|encoding| encoding.name() == s)
            .ok_or_else(|| UnknownEncoding(s.to_owned()))
    }
}

/// A signature encoding name in configuration that is not one we know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown signature encoding `{0}`; expected `hex` or `base64`")]
pub struct UnknownEncoding(pub String);

impl Scheme {
    /// Which kind of scheme this is, without its configuration.
    pub fn kind(&self) -> SchemeKind {
        match self {
            Scheme::StandardWebhooks => SchemeKind::StandardWebhooks,
            Scheme::Stripe => SchemeKind::Stripe,
            Scheme::Github => SchemeKind::Github,
            Scheme::Slack => SchemeKind::Slack,
            Scheme::Twilio(_) => SchemeKind::Twilio,
            Scheme::Shopify => SchemeKind::Shopify,
            Scheme::HmacSha256(_) => SchemeKind::HmacSha256,
        }
    }

    /// The name used in configuration and logs, e.g. `"standard-webhooks"`.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
}

/// Why a configured secret cannot be used. Shown to the operator at startup, so each
/// message says how to fix the configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The secret is the empty string. An empty HMAC key is known to everyone, so anyone
    /// could forge signatures with it.
    #[error("the {scheme} secret is empty; set it to the signing secret the sender gave you")]
    Empty {
        /// The scheme's configuration name.
        scheme: &'static str,
    },
    /// The secret starts or ends with whitespace, which is almost always a trailing
    /// newline picked up from a file or a shell, and would silently change the key.
    #[error(
        "the {scheme} secret starts or ends with whitespace; remove it (a trailing newline from a secrets file is the usual cause)"
    )]
    SurroundingWhitespace {
        /// The scheme's configuration name.
        scheme: &'static str,
    },
    /// A standard-webhooks secret whose key part does not decode as base64.
    #[error(
        "a standard-webhooks secret must be `whsec_` followed by base64: {reason}; copy the whole secret the sender shows"
    )]
    NotBase64 {
        /// What is wrong with the base64 part.
        reason: String,
    },
}

/// Turns a configured secret string into key bytes for the scheme.
///
/// Standard Webhooks secrets are `whsec_` followed by the base64 of the key (a bare base64
/// secret without the prefix is accepted too); every other scheme, Stripe included, uses
/// the secret's bytes as they are, `whsec_` and all (Twilio's is the Auth Token).
///
/// # Errors
///
/// Rejects empty secrets, secrets with surrounding whitespace, and Standard Webhooks
/// secrets that are not base64.
pub fn key_from_secret(scheme: &Scheme, secret: &str) -> Result<Vec<u8>, SecretError> {
    let name = scheme.name();
    if secret.is_empty() {
        return Err(SecretError::Empty { scheme: name });
    }
    if secret.trim() != secret {
        return Err(SecretError::SurroundingWhitespace { scheme: name });
    }
    match scheme {
        Scheme::StandardWebhooks => {
            let encoded = secret
                .strip_prefix(STANDARD_WEBHOOKS_SECRET_PREFIX)
                .unwrap_or(secret);
            if encoded.is_empty() {
                return Err(SecretError::NotBase64 {
                    reason: "nothing follows `whsec_`".to_owned(),
                });
            }
            BASE64_LENIENT
                .decode(encoded)
                .map_err(|err| SecretError::NotBase64 {
                    reason: describe_base64_error(&err),
                })
        }
        Scheme::Stripe
        | Scheme::Github
        | Scheme::Slack
        | Scheme::Twilio(_)
        | Scheme::Shopify
        | Scheme::HmacSha256(_) => Ok(secret.as_bytes().to_vec()),
    }
}

/// Says what is wrong with a base64 secret without quoting it: `DecodeError`'s own message
/// includes the offending byte, which is a piece of the secret.
fn describe_base64_error(err: &base64::DecodeError) -> String {
    match err {
        base64::DecodeError::InvalidByte(offset, _) => {
            format!(
                "character {} of the base64 part is not in the base64 alphabet",
                offset + 1
            )
        }
        base64::DecodeError::InvalidLength(_) => {
            "the base64 part's length is impossible, so a character is missing or extra".to_owned()
        }
        base64::DecodeError::InvalidLastSymbol(_, _) => {
            "the base64 part's last character cannot end base64, so it is cut short".to_owned()
        }
        base64::DecodeError::InvalidPadding => "the `=` padding is wrong".to_owned(),
    }
}

/// What a successful verification learned about the request: which key matched and the
/// signed timestamp. The daemon itself only needs to know that [`verify`] succeeded; these
/// details are there for tests and for any caller that wants them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signed Unix timestamp (seconds), for schemes that have one.
    pub timestamp: Option<i64>,
    /// Index into the `keys` given to [`verify`] of the first key that matched.
    pub key_index: usize,
}

/// Why a request failed verification.
///
/// Messages are meant for logs: they name the header at fault and never contain a secret,
/// an expected signature, or text copied from the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No keys were passed in, so nothing could ever match; a configuration bug rather
    /// than a bad request.
    #[error("no signing secrets are configured, so no request can be verified")]
    NoKeys,
    /// A header the scheme requires is absent.
    #[error("missing header `{0}`")]
    MissingHeader(HeaderName),
    /// A required header is present but cannot be parsed.
    #[error("malformed header `{header}`: {reason}")]
    MalformedHeader {
        /// The header at fault.
        header: HeaderName,
        /// What is wrong with it; a fixed phrase, never request text, so logs stay clean.
        reason: &'static str,
    },
    /// The signed timestamp is too far from now, in either direction: a replay, or a
    /// clock that is off.
    #[error(
        "timestamp {ts} in header `{header}` is outside the {tolerance}s window around now ({now})"
    )]
    OutsideWindow {
        /// The header carrying the timestamp.
        header: HeaderName,
        /// The timestamp from the request, Unix seconds.
        ts: i64,
        /// The verifier's clock, Unix seconds.
        now: i64,
        /// The allowed distance, seconds.
        tolerance: u64,
    },
    /// The header is well formed but no signature in it matches any key: a wrong secret
    /// or a body changed on the way.
    #[error("no signature in header `{header}` matches any configured secret")]
    NoMatch {
        /// The header carrying the signatures.
        header: HeaderName,
    },
    /// Twilio signed a JSON body through the `bodySHA256` in the URL, and the body
    /// received has another hash: it changed on the way.
    #[error("the body's SHA-256 is not the `bodySHA256` in the request's query")]
    BodyHash,
}

/// What of a request a scheme may sign: its headers, the query of the URL it was sent
/// to (Twilio signs the URL), and its body as received.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub headers: &'a HeaderMap,
    /// The request target's query, without the `?`; `None` when it has none.
    pub query: Option<&'a str>,
    pub body: &'a [u8],
}

/// Checks that `request` was signed by a holder of one of `keys` under `scheme`.
///
/// `keys` come from [`key_from_secret`]; any one of them verifies, which is how secret
/// rotation works. For schemes with a timestamp, requests more than `tolerance_sec`
/// seconds from `now_unix` (past or future) are rejected before any signature is checked.
///
/// # Errors
///
/// Fails when `keys` is empty, a required header is missing or unparseable, the timestamp
/// is outside the window, Twilio's body hash is wrong, or no signature matches; see
/// [`VerifyError`].
pub fn verify(
    scheme: &Scheme,
    keys: &[Vec<u8>],
    request: Request<'_>,
    now_unix: i64,
    tolerance_sec: u64,
) -> Result<Verified, VerifyError> {
    if keys.is_empty() {
        return Err(VerifyError::NoKeys);
    }
    let parsed = parse_request(scheme, request)?;

    if let Some(stamp) = &parsed.timestamp {
        check_window(stamp, now_unix, tolerance_sec)?;
    }

    let key_index = keys
        .iter()
        .position(|key| {
            parsed
                .messages
                .iter()
                .any(|message| message.matches(key, request.body, &parsed.candidates))
        })
        .ok_or(VerifyError::NoMatch {
            header: parsed.signature_header,
        })?;

    Ok(Verified {
        timestamp: parsed.timestamp.map(|stamp| stamp.value),
        key_index,
    })
}

/// Finds the sender's id for this delivery, which the caller uses to drop retries of a
/// delivery it has already handled.
///
/// Standard Webhooks, GitHub, Twilio and Shopify send it in a header (`webhook-id`,
/// `X-GitHub-Delivery`, `I-Twilio-Idempotency-Token`, `X-Shopify-Event-Id`); Stripe and
/// Slack put it in the JSON body (top-level `id`, `event_id`). The generic scheme has
/// none. Empty ids count as absent, since they would make every delivery look
/// like a duplicate of the first.
pub fn delivery_id(
    scheme: &Scheme,
    headers: &HeaderMap,
    body: &serde_json::Value,
) -> Option<String> {
    let id = match scheme {
        Scheme::StandardWebhooks => headers.get(WEBHOOK_ID)?.to_str().ok()?,
        Scheme::Github => headers.get(GITHUB_DELIVERY)?.to_str().ok()?,
        Scheme::Stripe => body.get("id")?.as_str()?,
        Scheme::Slack => body.get("event_id")?.as_str()?,
        Scheme::Twilio(_) => headers.get(TWILIO_IDEMPOTENCY)?.to_str().ok()?,
        // Shopify's guide to duplicates ("Ignore duplicate webhooks") names
        // `X-Shopify-Event-Id`: the same for every delivery of one event, retries and
        // other subscriptions to its topic alike. `X-Shopify-Webhook-Id` (one delivery
        // and its retries) is what older senders give, so it stands in when there is no
        // event id.
        Scheme::Shopify => headers
            .get(SHOPIFY_EVENT_ID)
            .or_else(|| headers.get(SHOPIFY_WEBHOOK_ID))?
            .to_str()
            .ok()?,
        Scheme::HmacSha256(_) => return None,
    };
    (!id.is_empty()).then(|| id.to_owned())
}

/// The answer to a sender's check of a new endpoint, when `body` is one: Slack checks a
/// new Events API URL with a challenge it wants echoed back.
pub fn challenge(scheme: &Scheme, body: &serde_json::Value) -> Option<serde_json::Value> {
    if !matches!(scheme, Scheme::Slack) || body.get("type")?.as_str()? != "url_verification" {
        return None;
    }
    let challenge = body.get("challenge").cloned().unwrap_or_default();
    Some(serde_json::json!({ "challenge": challenge }))
}

/// Why [`sign`] could not produce headers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The message id would not survive as a header value, so the receiver could not
    /// read back what was signed.
    #[error("message id must be non-empty visible ASCII without spaces")]
    InvalidMessageId,
    /// The generic scheme's configured prefix is not visible ASCII, so the receiver could
    /// not read the header back.
    #[error("the configured signature prefix must be visible ASCII without spaces")]
    InvalidPrefix,
}

/// What a real sender would send along with a body: its headers, and the query it would
/// add to the URL (Twilio's `bodySHA256` for a JSON body).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signed {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub query: Option<String>,
}

/// Produces what a real sender of this scheme would send (used by `lowkey send` to sign
/// test payloads), for a request to the source's URL without a query of its own.
///
/// `message_id` becomes `webhook-id` for Standard Webhooks, `X-GitHub-Delivery` for
/// GitHub, `I-Twilio-Idempotency-Token` for Twilio, and `X-Shopify-Event-Id` and
/// `X-Shopify-Webhook-Id` for Shopify; the other schemes carry their id in the body and
/// ignore it. Twilio signs a JSON body through its hash in the query, any other as a
/// form's fields, as Twilio does.
///
/// # Errors
///
/// Fails when `message_id` (where it is sent) or the generic scheme's prefix cannot be
/// put in a header; see [`SignError`].
pub fn sign(
    scheme: &Scheme,
    key: &[u8],
    body: &[u8],
    now_unix: i64,
    message_id: &str,
) -> Result<Signed, SignError> {
    let timestamp = now_unix.to_string();
    // The HMAC-SHA256 over the body that every scheme but Twilio's sends.
    let body_mac = || {
        let prefix = message_prefix(scheme.kind(), message_id, &timestamp);
        keyed_mac(key, prefix.as_bytes(), body)
            .finalize()
            .into_bytes()
    };
    let mut query = None;

    let headers = match scheme {
        Scheme::StandardWebhooks => vec![
            (WEBHOOK_ID, message_id_value(message_id)?),
            (
                WEBHOOK_SIGNATURE,
                ascii_value(format!("v1,{}", STANDARD.encode(body_mac()))),
            ),
            (WEBHOOK_TIMESTAMP, ascii_value(timestamp)),
        ],
        Scheme::Stripe => vec![(
            STRIPE_SIGNATURE,
            ascii_value(format!("t={timestamp},v1={}", hex::encode(body_mac()))),
        )],
        Scheme::Github => vec![
            (
                GITHUB_SIGNATURE,
                ascii_value(format!("sha256={}", hex::encode(body_mac()))),
            ),
            (GITHUB_DELIVERY, message_id_value(message_id)?),
        ],
        Scheme::Slack => vec![
            (
                SLACK_SIGNATURE,
                ascii_value(format!("v0={}", hex::encode(body_mac()))),
            ),
            (SLACK_TIMESTAMP, ascii_value(timestamp)),
        ],
        Scheme::Twilio(url) => {
            let fields = if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
                query = Some(format!(
                    "{TWILIO_BODY_HASH}={}",
                    hex::encode(Sha256::digest(body))
                ));
                Vec::new()
            } else {
                form_fields(body)
            };
            let message = twilio_message(url.as_str(), query.as_deref(), &fields);
            let signature = Sha1Hmac::new_from_slice(key)
                .expect("HMAC accepts keys of any length")
                .chain_update(message)
                .finalize()
                .into_bytes();
            vec![
                (TWILIO_SIGNATURE, ascii_value(STANDARD.encode(signature))),
                (TWILIO_IDEMPOTENCY, message_id_value(message_id)?),
            ]
        }
        Scheme::Shopify => vec![
            (SHOPIFY_HMAC, ascii_value(STANDARD.encode(body_mac()))),
            (SHOPIFY_EVENT_ID, message_id_value(message_id)?),
            (SHOPIFY_WEBHOOK_ID, message_id_value(message_id)?),
        ],
        Scheme::HmacSha256(generic) => {
            let encoded = match generic.encoding {
                Encoding::Hex => hex::encode(body_mac()),
                Encoding::Base64 => STANDARD.encode(body_mac()),
            };
            // Visible ASCII only, like the message id: anything else would not survive
            // `HeaderValue::to_str` on the receiving side.
            if !is_visible_ascii(&generic.prefix) {
                return Err(SignError::InvalidPrefix);
            }
            let value = ascii_value(format!("{}{encoded}", generic.prefix));
            vec![(generic.header.clone(), value)]
        }
    };
    Ok(Signed { headers, query })
}

/// What a request says was signed, before any key is involved.
struct ParsedRequest {
    /// The signed message, each way the sender may have framed it (Twilio's URL with and
    /// without its port); the request verifies if any one matches.
    messages: Vec<Message>,
    /// Decoded signatures from the header; the request verifies if any one matches.
    candidates: Vec<Vec<u8>>,
    /// The header the candidates came from, for error messages.
    signature_header: HeaderName,
    timestamp: Option<Timestamp>,
}

struct Timestamp {
    value: i64,
    header: HeaderName,
}

/// One framing of what the sender signed.
enum Message {
    /// HMAC-SHA256 over this prefix, then the body.
    Body { prefix: String },
    /// An HMAC over this text alone (Twilio's URL and fields).
    Twilio { text: String, mac: TwilioMac },
}

/// The HMAC a Twilio request is signed with: SHA-1 under the account's Auth Token, or
/// SHA-256 under a webhook SharedKey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TwilioMac {
    Sha1,
    Sha256,
}

impl Message {
    fn matches(&self, key: &[u8], body: &[u8], candidates: &[Vec<u8>]) -> bool {
        match self {
            Message::Body { prefix } => {
                any_candidate(keyed_mac(key, prefix.as_bytes(), body), candidates)
            }
            Message::Twilio {
                text,
                mac: TwilioMac::Sha1,
            } => any_candidate(
                Sha1Hmac::new_from_slice(key)
                    .expect("HMAC accepts keys of any length")
                    .chain_update(text),
                candidates,
            ),
            Message::Twilio {
                text,
                mac: TwilioMac::Sha256,
            } => any_candidate(keyed_mac(key, text.as_bytes(), b""), candidates),
        }
    }

    fn body() -> Vec<Message> {
        vec![Message::Body {
            prefix: String::new(),
        }]
    }
}

/// `verify_slice` compares in constant time; cloning lets one computed MAC be checked
/// against every candidate.
fn any_candidate(mac: impl Mac + Clone, candidates: &[Vec<u8>]) -> bool {
    candidates
        .iter()
        .any(|candidate| mac.clone().verify_slice(candidate).is_ok())
}

fn parse_request(scheme: &Scheme, request: Request<'_>) -> Result<ParsedRequest, VerifyError> {
    let headers = request.headers;
    match scheme {
        Scheme::StandardWebhooks => parse_standard_webhooks(headers),
        Scheme::Stripe => parse_stripe(headers),
        Scheme::Github => parse_github(headers),
        Scheme::Slack => parse_slack(headers),
        Scheme::Twilio(url) => parse_twilio(url, request),
        Scheme::Shopify => parse_shopify(headers),
        Scheme::HmacSha256(generic) => parse_generic(generic, headers),
    }
}

fn parse_standard_webhooks(headers: &HeaderMap) -> Result<ParsedRequest, VerifyError> {
    let id = single_header(headers, &WEBHOOK_ID)?;
    let ts_text = single_header(headers, &WEBHOOK_TIMESTAMP)?;
    let ts = parse_timestamp(ts_text, &WEBHOOK_TIMESTAMP)?;
    let signatures = single_header(headers, &WEBHOOK_SIGNATURE)?;
    // Entries are `version,signature`, space separated. Other versions (such as the
    // asymmetric `v1a`) are not ours to check, so they are skipped.
    let v1 = signatures
        .split(' ')
        .filter_map(|entry| entry.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, sig)| BASE64_LENIENT.decode(sig).ok());
    Ok(ParsedRequest {
        messages: vec![Message::Body {
            prefix: message_prefix(SchemeKind::StandardWebhooks, id, ts_text),
        }],
        candidates: collect_candidates(
            v1,
            &WEBHOOK_SIGNATURE,
            "no `v1,` entry with a base64 signature",
        )?,
        signature_header: WEBHOOK_SIGNATURE,
        timestamp: Some(Timestamp {
            value: ts,
            header: WEBHOOK_TIMESTAMP,
        }),
    })
}

fn parse_stripe(headers: &HeaderMap) -> Result<ParsedRequest, VerifyError> {
    let value = single_header(headers, &STRIPE_SIGNATURE)?;
    let mut ts_text = None;
    let mut v1 = Vec::new();
    for (key, item) in value
        .split(',')
        .filter_map(|item| item.trim().split_once('='))
    {
        match key {
            "t" => {
                let previous = ts_text.replace(item);
                if previous.is_some() {
                    return Err(malformed(&STRIPE_SIGNATURE, "more than one `t=`"));
                }
            }
            "v1" => v1.push(item),
            // `v0` is a test-mode signature made with a different secret, and future
            // schemes are not ours to check.
            _ => {}
        }
    }
    let ts_text = ts_text.ok_or_else(|| malformed(&STRIPE_SIGNATURE, "no `t=` timestamp"))?;
    let ts = parse_timestamp(ts_text, &STRIPE_SIGNATURE)?;
    let v1 = v1.into_iter().filter_map(|sig| hex::decode(sig).ok());
    Ok(ParsedRequest {
        messages: vec![Message::Body {
            prefix: message_prefix(SchemeKind::Stripe, "", ts_text),
        }],
        candidates: collect_candidates(
            v1,
            &STRIPE_SIGNATURE,
            "no `v1=` entry with a hex signature",
        )?,
        signature_header: STRIPE_SIGNATURE,
        timestamp: Some(Timestamp {
            value: ts,
            header: STRIPE_SIGNATURE,
        }),
    })
}

fn parse_github(headers: &HeaderMap) -> Result<ParsedRequest, VerifyError> {
    Ok(ParsedRequest {
        messages: Message::body(),
        candidates: prefixed_signature(
            headers,
            &GITHUB_SIGNATURE,
            ("sha256=", "does not start with `sha256=`"),
            (Encoding::Hex, "no hex signature after `sha256=`"),
        )?,
        signature_header: GITHUB_SIGNATURE,
        timestamp: None,
    })
}

fn parse_slack(headers: &HeaderMap) -> Result<ParsedRequest, VerifyError> {
    let ts_text = single_header(headers, &SLACK_TIMESTAMP)?;
    let ts = parse_timestamp(ts_text, &SLACK_TIMESTAMP)?;
    Ok(ParsedRequest {
        messages: vec![Message::Body {
            prefix: message_prefix(SchemeKind::Slack, "", ts_text),
        }],
        candidates: prefixed_signature(
            headers,
            &SLACK_SIGNATURE,
            ("v0=", "does not start with `v0=`"),
            (Encoding::Hex, "no hex signature after `v0=`"),
        )?,
        signature_header: SLACK_SIGNATURE,
        timestamp: Some(Timestamp {
            value: ts,
            header: SLACK_TIMESTAMP,
        }),
    })
}

fn parse_twilio(url: &PublicUrl, request: Request<'_>) -> Result<ParsedRequest, VerifyError> {
    let candidates = prefixed_signature(
        request.headers,
        &TWILIO_SIGNATURE,
        ("", ""),
        (Encoding::Base64, "no base64 signature"),
    )?;
    let mac = twilio_mac(request.headers)?;
    let query = request.query.filter(|q| !q.is_empty());
    // A JSON body is signed through the hash Twilio puts in the query, a form through
    // its fields; Twilio's `RequestValidator` tells them apart the same way.
    let fields = match body_hash(query) {
        Some(sent) => {
            // The hash of a body anyone can see; no secret, so no constant-time compare.
            if hex::encode(Sha256::digest(request.body)) != sent {
                return Err(VerifyError::BodyHash);
            }
            Vec::new()
        }
        None => form_fields(request.body),
    };
    Ok(ParsedRequest {
        messages: [&url.without_port, &url.with_port]
            .into_iter()
            .map(|url| Message::Twilio {
                text: twilio_message(url, query, &fields),
                mac,
            })
            .collect(),
        candidates,
        signature_header: TWILIO_SIGNATURE,
        timestamp: None,
    })
}

/// The MAC `X-Twilio-Webhooks-Signature-Settings` names (`key=…,algorithm=HMAC_SHA256`),
/// read as Twilio's `get_signature_algorithm` does; without one, the Auth Token's SHA-1.
fn twilio_mac(headers: &HeaderMap) -> Result<TwilioMac, VerifyError> {
    if !headers.contains_key(TWILIO_SIGNATURE_SETTINGS) {
        return Ok(TwilioMac::Sha1);
    }
    let settings = single_header(headers, &TWILIO_SIGNATURE_SETTINGS)?;
    let algorithm = settings
        .split(',')
        .filter_map(|part| part.split_once('='))
        .find(|(name, value)| name.trim() == "algorithm" && !value.trim().is_empty())
        .map(|(_, value)| value.trim());
    match algorithm {
        None => Ok(TwilioMac::Sha1),
        Some(name) if name.eq_ignore_ascii_case("HMAC_SHA1") => Ok(TwilioMac::Sha1),
        Some(name) if name.eq_ignore_ascii_case("HMAC_SHA256") => Ok(TwilioMac::Sha256),
        Some(_) => Err(malformed(
            &TWILIO_SIGNATURE_SETTINGS,
            "names an algorithm other than HMAC_SHA1 and HMAC_SHA256",
        )),
    }
}

/// The `bodySHA256` in a query, decoded, if there is one that is not empty.
fn body_hash(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(name, value)| name == TWILIO_BODY_HASH && !value.is_empty())
        .map(|(_, value)| value.into_owned())
}

/// A form's fields as the web frameworks Twilio's libraries are used with decode them:
/// leniently (a stray `%` kept, bad UTF-8 replaced), since whether the body is a form
/// lowkey takes is decided after its signature, by `form::parse`.
fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// What Twilio signs: the URL (with `query` as received), then each distinct field,
/// sorted by name and then value, as `namevalue`.
fn twilio_message(url: &str, query: Option<&str>, fields: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = fields.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut text = url.to_owned();
    if let Some(query) = query {
        text.push('?');
        text.push_str(query);
    }
    for (name, value) in sorted {
        text.push_str(name);
        text.push_str(value);
    }
    text
}

fn parse_shopify(headers: &HeaderMap) -> Result<ParsedRequest, VerifyError> {
    Ok(ParsedRequest {
        messages: Message::body(),
        candidates: prefixed_signature(
            headers,
            &SHOPIFY_HMAC,
            ("", ""),
            (Encoding::Base64, "no base64 signature"),
        )?,
        signature_header: SHOPIFY_HMAC,
        timestamp: None,
    })
}

fn parse_generic(generic: &GenericHmac, headers: &HeaderMap) -> Result<ParsedRequest, VerifyError> {
    let no_signature = match generic.encoding {
        Encoding::Hex => "no hex signature",
        Encoding::Base64 => "no base64 signature",
    };
    Ok(ParsedRequest {
        messages: Message::body(),
        candidates: prefixed_signature(
            headers,
            &generic.header,
            (&generic.prefix, "does not start with the configured prefix"),
            (generic.encoding, no_signature),
        )?,
        signature_header: generic.header.clone(),
        timestamp: None,
    })
}

/// The one signature in `header`: the value after `prefix`, decoded. Each part comes
/// with the reason given when it is not there.
fn prefixed_signature(
    headers: &HeaderMap,
    header: &HeaderName,
    (prefix, no_prefix): (&str, &'static str),
    (encoding, no_signature): (Encoding, &'static str),
) -> Result<Vec<Vec<u8>>, VerifyError> {
    let value = single_header(headers, header)?;
    let encoded = value
        .strip_prefix(prefix)
        .ok_or_else(|| malformed(header, no_prefix))?;
    let sig = match encoding {
        Encoding::Hex => hex::decode(encoded).ok(),
        Encoding::Base64 => BASE64_LENIENT.decode(encoded).ok(),
    };
    collect_candidates(sig.into_iter(), header, no_signature)
}

/// Rejects timestamps more than `tolerance` seconds away from `now` in either direction:
/// old ones are replays, future ones come from a sender whose clock cannot be trusted.
fn check_window(stamp: &Timestamp, now: i64, tolerance: u64) -> Result<(), VerifyError> {
    // `abs_diff` cannot overflow, whatever the request claims.
    if now.abs_diff(stamp.value) > tolerance {
        return Err(VerifyError::OutsideWindow {
            header: stamp.header.clone(),
            ts: stamp.value,
            now,
            tolerance,
        });
    }
    Ok(())
}

/// The part of the signed message that comes before the body. Shared by [`verify`] and
/// [`sign`] so the two cannot drift apart. `timestamp` is the header text as sent, because
/// that text, not a re-formatted number, is what the sender signed.
fn message_prefix(kind: SchemeKind, id: &str, timestamp: &str) -> String {
    match kind {
        SchemeKind::StandardWebhooks => format!("{id}.{timestamp}."),
        SchemeKind::Stripe => format!("{timestamp}."),
        SchemeKind::Slack => format!("v0:{timestamp}:"),
        SchemeKind::Github | SchemeKind::Shopify | SchemeKind::HmacSha256 => String::new(),
        // Twilio signs no body bytes: its message is `twilio_message`.
        SchemeKind::Twilio => String::new(),
    }
}

fn keyed_mac(key: &[u8], message_prefix: &[u8], body: &[u8]) -> Sha256Hmac {
    let mut mac = Sha256Hmac::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message_prefix);
    mac.update(body);
    mac
}

/// Reads a header that must appear exactly once. A repeated signature or timestamp header
/// is ambiguous (which one did the sender sign?), so it is rejected rather than guessed at.
fn single_header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<&'a str, VerifyError> {
    let mut values = headers.get_all(name).iter();
    let value = values
        .next()
        .ok_or_else(|| VerifyError::MissingHeader(name.clone()))?;
    if values.next().is_some() {
        return Err(malformed(name, "appears more than once"));
    }
    value
        .to_str()
        .map_err(|_| malformed(name, "contains characters other than visible ASCII"))
}

/// Parses Unix seconds. Senders write plain decimal digits; a sign, spaces or a fraction
/// means a sender bug worth reporting, not something to guess at.
fn parse_timestamp(text: &str, header: &HeaderName) -> Result<i64, VerifyError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(
            header,
            "timestamp is not Unix seconds in decimal digits",
        ));
    }
    text.parse()
        .map_err(|_| malformed(header, "timestamp is too large"))
}

/// Gathers the signatures worth comparing. Entries that failed to decode arrive as
/// absent; empty ones are dropped too, so `v1,` alone reads as "no signature" rather than
/// as a signature that happens not to match.
fn collect_candidates(
    decoded: impl Iterator<Item = Vec<u8>>,
    header: &HeaderName,
    none_reason: &'static str,
) -> Result<Vec<Vec<u8>>, VerifyError> {
    let candidates: Vec<Vec<u8>> = decoded
        .filter(|sig| !sig.is_empty())
        .take(MAX_SIGNATURES + 1)
        .collect();
    if candidates.is_empty() {
        return Err(malformed(header, none_reason));
    }
    if candidates.len() > MAX_SIGNATURES {
        return Err(malformed(header, "too many signatures"));
    }
    Ok(candidates)
}

fn malformed(header: &HeaderName, reason: &'static str) -> VerifyError {
    VerifyError::MalformedHeader {
        header: header.clone(),
        reason,
    }
}

fn message_id_value(message_id: &str) -> Result<HeaderValue, SignError> {
    // Stricter than `HeaderValue` itself: `HeaderValue::to_str` on the receiving side
    // rejects anything outside visible ASCII, and a space would be trimmed by proxies.
    if message_id.is_empty() || !is_visible_ascii(message_id) {
        return Err(SignError::InvalidMessageId);
    }
    Ok(ascii_value(message_id.to_owned()))
}

/// Whether every byte of `text` is visible ASCII (`!` to `~`): no spaces, no control
/// characters, nothing outside ASCII. Such text always makes a valid [`HeaderValue`].
fn is_visible_ascii(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_graphic())
}

fn ascii_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).expect("callers pass visible ASCII only")
}

#[cfg(test)]
mod tests;
