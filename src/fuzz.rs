//! What the fuzz targets check. Each function takes raw bytes, drives one part of
//! lowkey with them as an attacker, a broken editor or a torn disk would, and asserts
//! what must hold whatever the bytes are: no panic, plus a few cheap invariants.
//!
//! The cargo-fuzz targets in `fuzz/` are thin wrappers over these, and the integration
//! tests replay the inputs kept in `fuzz/seeds/` and `fuzz/regressions/` through the
//! same functions on stable Rust, so every input a fuzzer found stays a test.

use crate::activity::Activity;
use crate::config::{self, Auth, ConfigError, Loaded, MAX_SOURCE_LEN, Problem, Severity};
use crate::http::{self, App, Peer};
use crate::session;
use crate::signature::{
    self, Encoding, GenericHmac, PublicUrl, Request, Scheme, SchemeKind, VerifyError,
};
use crate::store::{self, Event, Home, Job, Store, WriterThread};
use crate::window::{Cursor, Refill};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::sync::mpsc::{self, UnboundedReceiver};

/// The clock the signature target verifies against, so the signed seeds stay valid.
const NOW: i64 = 1_700_000_000;
const TOLERANCE_SEC: u64 = 300;
/// The signing secret of every scheme in the signature target: a valid Standard
/// Webhooks secret, and plain bytes for the others.
pub const SIGNATURE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The API key and the GitHub secret of the HTTP target's config.
pub const HTTP_KEY: &str = "lk_fuzz_key_0123456789abcdef";
pub const HTTP_GITHUB_SECRET: &str = "fuzz-github-secret";
/// The HTTP target starts over with a fresh store after this many accepted events, so
/// the queue does not grow without bound over millions of runs.
const EVENTS_PER_STORE: usize = 20_000;

/// A fresh folder under the system's temp dir (`TMPDIR`), removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "lowkey-fuzz-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // A crashed run of another process with the same pid may have left it.
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("cannot create a scratch folder under TMPDIR");
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One runtime for the targets that only need to await the store.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// Takes `n` jobs from `rx`: the store hands them on from its session writer thread, once
/// their messages are in their sessions, so they may come a little after the answers.
fn take_jobs(runtime: &Runtime, rx: &mut UnboundedReceiver<Vec<Job>>, n: usize) -> Vec<Job> {
    let mut jobs = Vec::new();
    runtime.block_on(async {
        while jobs.len() < n {
            match tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await {
                Ok(Some(batch)) => jobs.extend(batch),
                _ => panic!("the store handed on {} of {n} jobs", jobs.len()),
            }
        }
    });
    jobs
}

/// The jobs of the events start-up found pending, as dispatch gets them: those it left
/// in the queue read back (as the window reads them), then those the session writer
/// hands on.
fn recovered_jobs(
    store: &Store,
    rx: &mut UnboundedReceiver<Vec<Job>>,
    recovery: store::Recovery,
) -> Vec<Job> {
    let backlog = recovery.backlog;
    let all = Refill {
        cursor: Cursor::Global,
        from: backlog.start,
        to: backlog.end,
        limit: usize::MAX,
    };
    let mut jobs = match runtime().block_on(store.scan(&all, backlog.passed.clone())) {
        Ok((jobs, _)) => jobs,
        Err(e) => panic!("the events left in the queue do not read back: {e}"),
    };
    assert_eq!(
        jobs.len(),
        backlog.waiting,
        "the events left in the queue read back"
    );
    jobs.extend(take_jobs(runtime(), rx, recovery.pending - backlog.waiting));
    jobs
}

/// Text from outside must reach a log line only escaped, so lowkey's own messages
/// about it must not carry control characters.
fn assert_printable(message: &str) {
    assert!(
        !message.chars().any(char::is_control),
        "a message with a control character: {message:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Signature headers

/// Every scheme lowkey verifies, the generic one in each encoding and with and without
/// a prefix.
fn schemes() -> Vec<Scheme> {
    let generic = |encoding, prefix: &str| {
        Scheme::HmacSha256(GenericHmac {
            header: HeaderName::from_static("x-signature"),
            encoding,
            prefix: prefix.to_owned(),
        })
    };
    vec![
        Scheme::StandardWebhooks,
        Scheme::Stripe,
        Scheme::Github,
        Scheme::Slack,
        Scheme::Twilio(
            PublicUrl::parse("https://hooks.example.com/api/webhook/twilio").expect("a valid URL"),
        ),
        Scheme::Shopify,
        generic(Encoding::Hex, "sha256="),
        generic(Encoding::Hex, ""),
        generic(Encoding::Base64, ""),
        generic(Encoding::Base64, "v1="),
    ]
}

/// Reads `Name: value` lines up to the first empty line as headers (skipping lines
/// that are not valid headers); the rest is the body.
fn headers_and_body(data: &[u8]) -> (HeaderMap, &[u8]) {
    let mut headers = HeaderMap::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (line, after) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = after;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(&line[..colon]);
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    (headers, rest)
}

/// Header lines, an empty line, then the body: each scheme's `verify` and
/// `delivery_id` over them. What verifies must verify with the key and nothing else,
/// and what `sign` makes for the body must verify.
pub fn signature_headers(data: &[u8]) {
    let (headers, body) = headers_and_body(data);
    // The payload as the webhook pipeline reads it: JSON, else a form's object.
    let payload: Value = serde_json::from_slice(body)
        .ok()
        .or_else(|| {
            let fields = crate::form::parse(std::str::from_utf8(body).ok()?).ok()?;
            Some(crate::form::to_object(fields))
        })
        .unwrap_or(Value::Null);
    for scheme in schemes() {
        let kind = scheme.kind();
        let key = signature::key_from_secret(&scheme, SIGNATURE_SECRET)
            .expect("the fuzz secret suits every scheme");
        let keys = [key.clone()];
        let verify = |keys: &[Vec<u8>], body: &[u8]| {
            let request = Request {
                headers: &headers,
                query: None,
                body,
            };
            signature::verify(&scheme, keys, request, NOW, TOLERANCE_SEC)
        };
        match verify(&keys, body) {
            Ok(verified) => {
                assert_eq!(verified.key_index, 0);
                match verified.timestamp {
                    Some(ts) => {
                        assert!(kind.has_timestamp(), "{kind}: a timestamp from nowhere");
                        assert!(
                            NOW.abs_diff(ts) <= TOLERANCE_SEC,
                            "{kind}: outside the window"
                        );
                    }
                    None => assert!(!kind.has_timestamp(), "{kind}: no timestamp checked"),
                }
                let other_key = verify(&[b"another key".to_vec()], body);
                assert!(
                    matches!(other_key, Err(VerifyError::NoMatch { .. })),
                    "{kind}: verified with a wrong key: {other_key:?}"
                );
                let changed = [body, b" "].concat();
                assert!(
                    matches!(verify(&keys, &changed), Err(VerifyError::NoMatch { .. })),
                    "{kind}: verified over a changed body"
                );
                // With a second key, the first still matches as itself.
                let rotated = verify(&[b"new key".to_vec(), key.clone()], body);
                assert_eq!(rotated.map(|v| v.key_index), Ok(1), "{kind}: rotation");
            }
            Err(e) => assert_printable(&e.to_string()),
        }
        assert_eq!(verify(&[], body), Err(VerifyError::NoKeys));

        let signed = signature::sign(&scheme, &key, body, NOW, "msg_fuzz")
            .expect("signing with a fixed id and prefix works");
        let request = Request {
            headers: &signed.headers.into_iter().collect(),
            query: signed.query.as_deref(),
            body,
        };
        let verified = signature::verify(&scheme, &keys, request, NOW, TOLERANCE_SEC);
        assert_eq!(
            verified.map(|v| v.key_index),
            Ok(0),
            "{kind}: what sign makes does not verify"
        );

        if let Some(id) = signature::delivery_id(&scheme, &headers, &payload) {
            assert!(!id.is_empty(), "{kind}: an empty delivery id");
        }
        let _ = signature::challenge(&scheme, &payload);
        // The body as a configured secret: never a panic, never the secret in the error.
        if let Ok(text) = std::str::from_utf8(body) {
            match signature::key_from_secret(&scheme, text) {
                Ok(bytes) if kind != SchemeKind::StandardWebhooks => {
                    assert_eq!(bytes, text.as_bytes())
                }
                Ok(_) => {}
                Err(e) => assert_printable(&e.to_string()),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Config

/// Whether the config names a secret file that reading could block on or never
/// finish (a device, a FIFO, `/proc`). Which files a config reads is its owner's
/// choice, so those inputs are skipped rather than reported.
fn names_unreadable_file(value: &Value) -> bool {
    let risky = |path: &Path| {
        fs::metadata(path).is_ok_and(|m| !m.is_file())
            || fs::canonicalize(path).is_ok_and(|p| p.starts_with("/proc") || p.starts_with("/sys"))
    };
    match value {
        Value::Object(obj) => obj.iter().any(|(k, v)| {
            let named = match (k.as_str(), v.as_str()) {
                ("file", Some(path)) => Some(PathBuf::from(path)),
                ("credential", Some(name)) => {
                    std::env::var_os("CREDENTIALS_DIRECTORY").map(|d| Path::new(&d).join(name))
                }
                _ => None,
            };
            named.is_some_and(|p| risky(&p)) || names_unreadable_file(v)
        }),
        Value::Array(items) => items.iter().any(names_unreadable_file),
        _ => false,
    }
}

/// A problem's key names a place in the file: a key the file has (or a path under
/// one), a required key it lacks, or the top level.
fn assert_names_a_key(problem: &Problem, root: &Value) {
    assert!(!problem.message.is_empty(), "a problem without a message");
    let key = problem.key.as_str();
    let in_file = root.as_object().is_some_and(|obj| {
        obj.keys().any(|k| {
            key == k
                || key
                    .strip_prefix(k.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
    });
    assert!(
        in_file || key == "apiKey" || key == "(top level)",
        "a problem that names no key of the file: {problem}"
    );
}

/// The invariants of a config that passed validation.
fn assert_valid(loaded: &Loaded, root: &Value) {
    let config = &loaded.config;
    assert!(!config.unusable);
    assert!((1..=64 * 1024 * 1024).contains(&config.max_body_bytes));
    for (name, agent) in &config.agents {
        assert!(
            session::is_path_safe_id(name, MAX_SOURCE_LEN),
            "agent {name:?}"
        );
        assert!(
            !agent.command.is_empty(),
            "agent {name:?} without a command"
        );
        assert!(agent.max_concurrent >= 1 && !agent.timeout.is_zero());
    }
    for (name, source) in &config.sources {
        assert!(
            session::is_path_safe_id(name, MAX_SOURCE_LEN),
            "source {name:?}"
        );
        assert!(
            config.agents.contains_key(&source.agent),
            "source {name:?} runs agent {:?}, which is not defined",
            source.agent
        );
        assert!(source.project.is_absolute() && source.project.is_dir());
        if source.auth == Auth::Signature {
            assert!(
                source.verify.is_some(),
                "source {name:?}: anyone may call it"
            );
        }
        if let Some(verify) = &source.verify {
            assert!(!verify.keys.is_empty(), "source {name:?}: no key verifies");
        }
        if let Some(limit) = &source.rate_limit {
            assert!(limit.per_second > 0.0 && limit.per_second.is_finite());
            assert!(limit.burst >= 1.0 && limit.burst.is_finite());
        }
    }
    for warning in &loaded.warnings {
        assert_eq!(warning.severity, Severity::Warning);
        assert_names_a_key(warning, root);
    }
}

/// Config text through `config::parse`, which validates it whole. An accepted config
/// is accepted again with the same warnings; a refused one has at least one error, and
/// every problem names its key.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let root = serde_json::from_str::<Value>(&text).ok();
    if root.as_ref().is_some_and(names_unreadable_file) {
        return;
    }
    let path = Path::new("config.json");
    let parsed = config::parse(path, &text, config::Lookup::Own);
    match (&parsed, &root) {
        (Ok(loaded), Some(root)) => {
            assert_valid(loaded, root);
            let again = config::parse(path, &text, config::Lookup::Own)
                .expect("an accepted config is accepted again");
            assert_eq!(again.warnings, loaded.warnings);
        }
        (Err(ConfigError::Invalid { problems, .. }), Some(root)) => {
            assert!(
                problems.iter().any(|p| p.severity == Severity::Error),
                "refused without an error: {problems:?}"
            );
            for problem in problems {
                assert_names_a_key(problem, root);
            }
        }
        (Err(ConfigError::Syntax { line, .. }), None) => assert!(*line >= 1),
        (other, _) => panic!("JSON {root:?} came out as {other:?}"),
    }
    if let Err(e) = parsed {
        let _ = e.to_string();
    }
}

// ---------------------------------------------------------------------------------------
// Queue reader and recovery

/// The records in a queue's bytes, read line by line apart from the store's reader,
/// with the zeros that pad a segment's pages cut off.
struct Written {
    /// The event of every `accepted` record, in queue order.
    accepted: Vec<Event>,
    /// Whether a `done` mark comes before a copy of its event's record, which lowkey
    /// never writes (a mark follows every copy), and which lets deleting the older
    /// segment bring the event back.
    done_before_copy: bool,
}

#[derive(serde::Deserialize)]
struct Accepted {
    accepted: Event,
}

#[derive(serde::Deserialize)]
struct Done {
    done: String,
}

fn written(segments: &[&[u8]]) -> Written {
    let mut written = Written {
        accepted: Vec::new(),
        done_before_copy: false,
    };
    let mut done = HashSet::new();
    for line in segments.iter().flat_map(|s| s.split(|b| *b == b'\n')) {
        let (Some(start), Some(last)) = (
            line.iter().position(|b| *b != 0),
            line.iter().rposition(|b| *b != 0),
        ) else {
            continue;
        };
        let record = &line[start..=last];
        if let Ok(Done { done: id }) = serde_json::from_slice(record) {
            done.insert(id);
        }
        if let Ok(Accepted { accepted: event }) = serde_json::from_slice(record) {
            written.done_before_copy |= done.contains(&event.id);
            written.accepted.push(event);
        }
    }
    written
}

fn ids(events: &[Event]) -> HashSet<&str> {
    events.iter().map(|e| e.id.as_str()).collect()
}

/// The bytes as the queue's segments: what `store::queued` reads must be records that
/// are in them, and recovery (`Store::open`) must hand every pending event to dispatch
/// exactly once, read back intact from where it put it, and leave the same pending
/// work in the queue.
fn recover(segments: &[&[u8]]) {
    let scratch = Scratch::new();
    let home = Home::new(&scratch.0);
    home.create_dirs().expect("the home's folders");
    for (i, bytes) in segments.iter().enumerate() {
        let path = home.queue().join(format!("{:016}.wal", i + 1));
        fs::write(path, bytes).expect("a queue segment");
    }
    let written = written(segments);
    let queued = store::queued(&home).expect("the queue reads");
    for event in &queued {
        assert!(
            written.accepted.contains(event),
            "queued returned an event that is in no record: {event:?}"
        );
    }

    let (tx, mut rx) = mpsc::unbounded_channel();
    let (store, writer, recovery) = match Store::open(&home, tx) {
        Ok(opened) => opened,
        Err(e) => panic!("recovery failed: {e}"),
    };
    assert_eq!(recovery.completed, 0, "no session holds a result");
    let jobs = recovered_jobs(&store, &mut rx, recovery);
    assert!(rx.try_recv().is_err(), "more jobs than pending events");
    let mut seen = HashSet::new();
    for job in &jobs {
        assert!(
            seen.insert(job.event.as_str()),
            "recovery returned {} twice",
            job.event
        );
    }
    assert_eq!(
        seen,
        ids(&queued),
        "recovery must hand on exactly the pending events"
    );
    runtime().block_on(async {
        for job in &jobs {
            let event = match store.load(job).await {
                Ok(event) => event,
                Err(e) => panic!("a recovered event does not read back: {e}"),
            };
            assert_eq!(event.id, job.event);
            assert!(queued.contains(&event), "{} changed in recovery", event.id);
        }
    });
    let after = store::queued(&home).expect("the queue reads after recovery");
    if !written.done_before_copy {
        assert_eq!(ids(&after), seen, "recovery changed the pending work");
    }
    drop(store);
    writer.join();

    // A restart right after recovery finds the same pending work.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (store, writer, recovery) = match Store::open(&home, tx) {
        Ok(opened) => opened,
        Err(e) => panic!("the second recovery failed: {e}"),
    };
    let mut again = HashSet::new();
    for job in recovered_jobs(&store, &mut rx, recovery) {
        assert!(
            again.insert(job.event.clone()),
            "{} twice after a restart",
            job.event
        );
    }
    if !written.done_before_copy {
        assert_eq!(
            again.iter().map(String::as_str).collect::<HashSet<_>>(),
            seen,
            "a restart changed the pending work"
        );
    }
    drop(store);
    writer.join();
}

/// The bytes as one queue segment, then cut in two where the first byte says.
pub fn queue(data: &[u8]) {
    recover(&[data]);
    if let Some(&first) = data.first() {
        let cut = data.len() * usize::from(first) / 255;
        recover(&[&data[..cut], &data[cut..]]);
    }
}

// ---------------------------------------------------------------------------------------
// HTTP

/// What the service answered to one request, as it went to hyper.
struct Answer {
    method: Method,
    path: String,
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// A store and an `App` over a config with a key source (`hook`) and a GitHub
/// signature source (`gh`), built once per thread and reused by every run.
struct Server {
    runtime: Runtime,
    /// Taken when the server is dropped, so the store's writer thread can end.
    app: Option<Arc<App>>,
    jobs: UnboundedReceiver<Vec<Job>>,
    writer: Option<WriterThread>,
    home: Home,
    /// Every event the store handed to dispatch.
    accepted: HashSet<String>,
    /// The body of the first 401; every 401 must have the same.
    unauthorized: Option<Bytes>,
    // Last: removed after the store has let go of it.
    _scratch: Scratch,
}

impl Server {
    fn new() -> Server {
        let scratch = Scratch::new();
        let project = scratch.0.join("project");
        fs::create_dir_all(&project).expect("the project folder");
        let text = serde_json::json!({
            "apiKey": HTTP_KEY,
            "maxBodyBytes": 65536,
            "agents": { "bot": { "command": ["/bin/true"] } },
            "webhooks": {
                "hook": { "project": project, "agent": "bot" },
                "gh": {
                    "project": project,
                    "agent": "bot",
                    "auth": "signature",
                    "verify": "github",
                    "secret": HTTP_GITHUB_SECRET,
                    "target": "gh-pr-{{pull_request.number}}"
                }
            }
        })
        .to_string();
        let config = config::parse(Path::new("config.json"), &text, config::Lookup::Own)
            .expect("the fuzz config is valid")
            .config;
        let home = Home::new(scratch.0.join("home"));
        let (tx, jobs) = mpsc::unbounded_channel();
        let (store, writer, _) = Store::open(&home, tx).expect("a store in the scratch folder");
        let app = App::new(
            Arc::new(ArcSwap::from_pointee(config)),
            store,
            Arc::new(Activity::default()),
        );
        Server {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime"),
            app: Some(Arc::new(app)),
            home,
            jobs,
            writer: Some(writer),
            accepted: HashSet::new(),
            unauthorized: None,
            _scratch: scratch,
        }
    }

    fn app(&self) -> &Arc<App> {
        self.app.as_ref().expect("the server is running")
    }

    /// Serves `data` as the bytes a client sends on one connection, then its end of
    /// file, as the real server does (`http/server.rs`): returns what went back on the wire,
    /// and what the service answered.
    fn exchange(&self, data: &[u8]) -> (Vec<u8>, Vec<Answer>) {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let service = {
            let app = self.app().clone();
            let answers = answers.clone();
            service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let app = app.clone();
                let answers = answers.clone();
                async move {
                    let method = req.method().clone();
                    let path = req.uri().path().to_owned();
                    let res = http::handle(&app, req, Peer(None)).await;
                    let (parts, body) = res.into_parts();
                    let body = match body.collect().await {
                        Ok(collected) => collected.to_bytes(),
                        Err(never) => match never {},
                    };
                    answers.lock().expect("answers").push(Answer {
                        method,
                        path,
                        status: parts.status,
                        headers: parts.headers.clone(),
                        body: body.clone(),
                    });
                    Ok::<_, Infallible>(Response::from_parts(parts, Full::new(body)))
                }
            })
        };
        let wire = self.runtime.block_on(async {
            let (client, server) = tokio::io::duplex(64 * 1024);
            let mut builder = crate::http::server::http1_builder();
            // The end of file stands for a client that has nothing more to send and
            // waits for its answers; without this hyper would drop them.
            builder.half_close(true);
            let conn = builder.serve_connection(TokioIo::new(server), service);
            let (mut read, mut write) = tokio::io::split(client);
            let send = async {
                // The server may close first (an error, `Connection: close`).
                let _ = write.write_all(data).await;
                let _ = write.shutdown().await;
            };
            let receive = async {
                let mut wire = Vec::new();
                let _ = read.read_to_end(&mut wire).await;
                wire
            };
            let (_, _, wire) = tokio::join!(conn, send, receive);
            wire
        });
        let answers = std::mem::take(&mut *answers.lock().expect("answers"));
        (wire, answers)
    }

    /// Checks one of lowkey's answers; `jobs` are the events the store handed to
    /// dispatch during this connection.
    fn check_answer(&mut self, answer: &Answer, jobs: &HashMap<String, Job>) {
        let status = answer.status.as_u16();
        assert!(
            [200, 202, 400, 401, 404, 405, 408, 413, 429, 503].contains(&status),
            "an answer lowkey does not document: {status}"
        );
        assert_eq!(
            answer
                .headers
                .get(header::CONTENT_TYPE)
                .map(HeaderValue::as_bytes),
            Some(&b"application/json"[..])
        );
        let body: serde_json::Map<String, Value> =
            serde_json::from_slice(&answer.body).expect("every answer is a JSON object");
        if !answer.status.is_success() {
            assert!(body["error"].is_string(), "an error without a message");
        }
        match status {
            401 => {
                assert!(answer.headers.contains_key(header::WWW_AUTHENTICATE));
                let first = self.unauthorized.get_or_insert_with(|| answer.body.clone());
                assert_eq!(*first, answer.body, "every 401 has the same body");
            }
            405 => assert!(answer.headers.contains_key(header::ALLOW)),
            429 | 503 => assert!(answer.headers.contains_key(header::RETRY_AFTER)),
            202 => {
                let (Some(event), Some(session)) =
                    (body["event"].as_str(), body["session"].as_str())
                else {
                    panic!("a 202 without its ids: {body:?}");
                };
                assert!(
                    session::is_path_safe_id(session, session::MAX_SESSION_ID_LEN),
                    "session id {session:?} is not a safe file name"
                );
                let job = jobs
                    .get(event)
                    .unwrap_or_else(|| panic!("202 for {event}, which the store did not accept"));
                assert_eq!(job.session, session);
                let stored = match self.runtime.block_on(self.app().store.load(job)) {
                    Ok(stored) => stored,
                    Err(e) => panic!("202 for {event}, which does not read back: {e}"),
                };
                assert_eq!(
                    (stored.id.as_str(), stored.session.as_str()),
                    (event, session)
                );
                assert_eq!(answer.path, format!("/api/webhook/{}", stored.source));
                let filed = session::read(&self.home.session_file(session))
                    .unwrap_or_default()
                    .contains(&stored.message());
                assert!(
                    filed,
                    "{event} was handed on before its message was in its session"
                );
            }
            200 if answer.path.starts_with("/api/webhook/") => {
                assert_eq!(
                    body["duplicate"], true,
                    "a 200 that is no duplicate: {body:?}"
                );
                let event = body["event"].as_str().expect("a duplicate names its event");
                assert!(
                    self.accepted.contains(event),
                    "a duplicate of {event}, which was never accepted"
                );
            }
            _ => {}
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The writer thread ends once the last handle on the store is gone.
        self.app = None;
        if let Some(writer) = self.writer.take() {
            writer.join();
        }
    }
}

/// The statuses of the responses on the wire, 1xx left out, checking each is framed
/// by its `Content-Length` and, where it came from the service, is its answer byte
/// for byte.
fn wire_statuses(mut wire: &[u8], answers: &[Answer]) -> Vec<StatusCode> {
    let mut statuses = Vec::new();
    while !wire.is_empty() {
        let end = wire
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("a response head without its end: {wire:?}"))
            + 4;
        let head = std::str::from_utf8(&wire[..end]).expect("a response head is text");
        wire = &wire[end..];
        let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
        let status_line = lines.next().expect("a status line");
        let status = ["HTTP/1.1 ", "HTTP/1.0 "]
            .iter()
            .find_map(|v| status_line.strip_prefix(v))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok())
            .and_then(|code| StatusCode::from_u16(code).ok())
            .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
        let mut length = None;
        for line in lines {
            let (name, value) = line.split_once(':').expect("a header line");
            assert!(!name.eq_ignore_ascii_case("transfer-encoding"));
            if name.eq_ignore_ascii_case("content-length") {
                assert!(length.is_none(), "two Content-Length headers");
                length = Some(value.trim().parse::<usize>().expect("a Content-Length"));
            }
        }
        if status.is_informational() {
            continue;
        }
        let answer = answers.get(statuses.len());
        let length = length.expect("a response without Content-Length");
        if answer.is_none_or(|a| a.method != Method::HEAD) {
            assert!(wire.len() >= length, "a body cut short");
            if let Some(answer) = answer {
                assert_eq!(&wire[..length], &answer.body[..], "the body on the wire");
            }
            wire = &wire[length..];
        }
        statuses.push(status);
    }
    statuses
}

thread_local! {
    static SERVER: RefCell<Option<Server>> = const { RefCell::new(None) };
}

/// The bytes as what a client sends on one connection to lowkey's HTTP service, over
/// an in-memory stream. Every answer is one lowkey documents, as JSON; what reaches the
/// wire is well-formed and is what the service answered, in order; any 202 names an
/// event the store accepted and reads back, and any duplicate names an earlier one.
pub fn http(data: &[u8]) {
    SERVER.with_borrow_mut(|slot| {
        let server = slot.get_or_insert_with(Server::new);
        let (wire, answers) = server.exchange(data);
        let mut jobs = HashMap::new();
        let accepted = answers.iter().filter(|a| a.status.as_u16() == 202).count();
        for job in take_jobs(&server.runtime, &mut server.jobs, accepted) {
            assert!(
                server.accepted.insert(job.event.clone()),
                "event {} accepted twice",
                job.event
            );
            jobs.insert(job.event.clone(), job);
        }
        for answer in &answers {
            server.check_answer(answer, &jobs);
        }
        let on_wire = wire_statuses(&wire, &answers);
        let served: Vec<StatusCode> = answers.iter().map(|a| a.status).collect();
        // Every answer goes out, in order; after them, hyper may add one error of its
        // own for bytes that are no request.
        assert!(
            on_wire.len() <= served.len() + 1,
            "{on_wire:?} for {served:?}"
        );
        let (ours, extra) = on_wire.split_at(served.len().min(on_wire.len()));
        assert_eq!(ours, served, "the wire and the service disagree");
        assert!(
            extra
                .iter()
                .all(|s| s.is_client_error() || s.is_server_error())
        );
        if server.accepted.len() > EVENTS_PER_STORE {
            *slot = None;
        }
    });
}
