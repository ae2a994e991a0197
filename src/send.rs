//! `lowkey send`: posts a payload to the running daemon, signed the way the source's
//! scheme expects, so a user can test a source end to end (the payload file may be JSON
//! or a form, `application/x-www-form-urlencoded`); and `lowkey rerun`'s request, which
//! reaches the daemon the same way.

use crate::config::{Auth, Config};
use crate::signature;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(
        "no source \"{0}\" in the config; `lowkey check` lists the problems, the config's `webhooks` the sources"
    )]
    NoSource(String),
    #[error("{0} is not an http:// URL with a host and port")]
    BadUrl(String),
    #[error(
        "cannot reach lowkey at {addr}: {source}; is it running (`systemctl status lowkey@$USER.socket`, or `lowkey serve`)?"
    )]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the config's apiKey holds characters an HTTP header cannot carry; use letters and digits"
    )]
    Key,
    #[error("cannot sign: {0}")]
    Sign(#[from] signature::SignError),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
}

/// The daemon's answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Sends `body` to `source`. `url` overrides the daemon's address (default: the
/// config's `listen`).
pub async fn send(
    config: &Config,
    source: &str,
    body: Vec<u8>,
    url: Option<&str>,
) -> Result<Answer, SendError> {
    let src = config
        .sources
        .get(source)
        .ok_or_else(|| SendError::NoSource(source.to_owned()))?;
    let (body, content_type) = content(body);
    let signed = match &src.verify {
        Some(verify) => {
            let now = crate::session::unix_now() as i64;
            let message_id = format!("msg_{}", ulid::Ulid::new());
            signature::sign(&verify.scheme, &verify.keys[0], &body, now, &message_id)?
        }
        None => signature::Signed::default(),
    };
    let mut headers = Vec::new();
    if src.auth == Auth::Key {
        headers.push((header::AUTHORIZATION, bearer(config)?));
    }
    headers.extend(signed.headers);
    let query = signed.query.map(|q| format!("?{q}")).unwrap_or_default();
    let path = format!("/api/webhook/{source}{query}");
    post(config, url, &path, headers, content_type, body).await
}

/// Asks the daemon to run `event` (of `session`) again: `lowkey rerun`.
pub async fn rerun(
    config: &Config,
    event: &str,
    session: &str,
    url: Option<&str>,
) -> Result<Answer, SendError> {
    let body =
        serde_json::to_vec(&serde_json::json!({ "session": session })).expect("JSON serializes");
    let headers = vec![(header::AUTHORIZATION, bearer(config)?)];
    let path = format!("/api/events/{event}/rerun");
    post(config, url, &path, headers, "application/json", body).await
}

fn bearer(config: &Config) -> Result<HeaderValue, SendError> {
    let mut value = HeaderValue::try_from(format!("Bearer {}", config.api_key.expose()))
        .map_err(|_| SendError::Key)?;
    value.set_sensitive(true);
    Ok(value)
}

/// Posts `body` to `path` on the daemon, at `url` or the config's `listen`.
async fn post(
    config: &Config,
    url: Option<&str>,
    path: &str,
    headers: Vec<(HeaderName, HeaderValue)>,
    content_type: &str,
    body: Vec<u8>,
) -> Result<Answer, SendError> {
    let base = url.map_or_else(|| format!("http://{}", config.listen), str::to_owned);
    let uri: http::Uri = format!("{}{path}", base.trim_end_matches('/'))
        .parse()
        .map_err(|_| SendError::BadUrl(base.clone()))?;
    let (Some("http"), Some(authority)) = (uri.scheme_str(), uri.authority().cloned()) else {
        return Err(SendError::BadUrl(base));
    };
    let addr = match authority.port_u16() {
        Some(_) => authority.to_string(),
        None => format!("{authority}:80"),
    };

    let mut req = Request::post(uri)
        .header(header::HOST, authority.as_str())
        .header(header::CONTENT_TYPE, content_type)
        .header(
            header::USER_AGENT,
            concat!("lowkey-send/", env!("CARGO_PKG_VERSION")),
        );
    for (name, value) in headers {
        req = req.header(name, value);
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .expect("a request built from valid parts");

    let stream = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|source| SendError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let res = sender.send_request(req).await?;
    let status = res.status().as_u16();
    let body = res.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// The body to send and its `Content-Type`: a form file (`form.rs` has the rule) goes as
/// a form, without the line end an editor leaves after it, which no form holds; anything
/// else goes as it is, labelled JSON (the daemon says if it is neither).
fn content(body: Vec<u8>) -> (Vec<u8>, &'static str) {
    const JSON: &str = "application/json";
    if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok() {
        return (body, JSON);
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return (body, JSON);
    };
    let form = text.strip_suffix('\n').unwrap_or(text);
    let form = form.strip_suffix('\r').unwrap_or(form);
    if crate::form::parse(form).is_ok() {
        let len = form.len();
        let mut body = body;
        body.truncate(len);
        return (body, "application/x-www-form-urlencoded");
    }
    (body, JSON)
}
