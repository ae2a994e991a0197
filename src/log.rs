//! Logging: journald's native protocol under systemd, readable text on stderr otherwise.
//!
//! Every webhook and run line carries structured fields (`webhook_source`, `session_id`,
//! ...); journald sees them upper-cased (`WEBHOOK_SOURCE=`), so `journalctl
//! WEBHOOK_SOURCE=stripe` works. Each kind of line has a stable `MESSAGE_ID`, explained
//! by `packaging/lowkey.catalog` for `journalctl -x`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format;
use tracing_subscriber::prelude::*;

/// `MESSAGE_ID`s, one per kind of line. Never change one: users filter on them.
pub mod id {
    pub const ACCEPTED: &str = "5dda1ec3169b429c91133c78eabaf6d2";
    pub const REJECTED: &str = "55dbe028ef1b4db4afe7f9eba95ee5fb";
    pub const RUN_STARTED: &str = "f93d789644284721aa17e59698fa9a5a";
    pub const RUN_FINISHED: &str = "3acb75bd5a64442e8748c3eaf91512c8";
    pub const RUN_FAILED: &str = "37b77799b2b24964bd9a2d6effdff155";
    pub const CONFIG_RELOADED: &str = "c2289f244615408ab838bfbc419b6ba2";
    pub const RELOAD_FAILED: &str = "939826ba95024687ad7e9427fec1ca33";
    pub const STARTED: &str = "acc440a9d0364a34963633ad6b51e167";
    pub const STOPPING: &str = "ef99f7cfc2904fc192ab92f30f5680c9";
}

/// Text from outside lowkey (a request's path or headers, a payload, an agent's output, a
/// config file's contents), made safe to put in a log line: every control character
/// (C0, DEL, C1 such as NEL), the Unicode line and paragraph separators and the bidi
/// controls are written as `\u{..}` escapes, and a backslash as `\\`, so such text can
/// neither start a line of its own nor hide or reorder what follows it. Text that needs
/// no escaping is borrowed as it is.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c == '\\'
        || c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{61c}')
}

/// A value from outside lowkey, displayed through [`escape`]: log it as
/// `field = %Outside(&text)`.
#[derive(Debug, Clone, Copy)]
pub struct Outside<T>(pub T);

impl<T: std::fmt::Display> std::fmt::Display for Outside<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.0.to_string();
        f.write_str(&escape(&text))
    }
}

/// True when stderr is connected to the journal: systemd sets `JOURNAL_STREAM` to the
/// device and inode of the stream it gave us, and a child that inherited it compares.
pub fn stderr_is_journal() -> bool {
    let Some(expected) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr().as_fd()) else {
        return false;
    };
    expected.to_string_lossy() == format!("{}:{}", stat.st_dev, stat.st_ino)
}

/// Installs the global subscriber. The level comes from `LOWKEY_LOG` (default `info`).
pub fn init() {
    let filter =
        || EnvFilter::try_from_env("LOWKEY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer
                    .with_field_prefix(None)
                    .with_syslog_identifier("lowkey".into());
                tracing_subscriber::registry()
                    .with(layer.with_filter(filter()))
                    .init();
                return;
            }
            Err(e) => eprintln!("lowkey: cannot reach journald ({e}); logging to stderr"),
        }
    }
    // On a terminal the MESSAGE_ID is noise; every other field stays as key=value.
    let fields = format::debug_fn(|w, field, value| match field.name() {
        "message_id" => Ok(()),
        "message" => write!(w, "{value:?}"),
        name => write!(w, "{name}={value:?}"),
    })
    .delimited(" ");
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(|| Stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .fmt_fields(fields);
    tracing_subscriber::registry()
        .with(layer.with_filter(filter()))
        .init();
}

/// Under load, a tokio worker's stderr lines are collected and written out together,
/// as the worker runs out of work ([`worker_idle`]), or once they are this many bytes,
/// or when a line comes this long after the oldest one waiting.
const BATCH_BYTES: usize = 16 * 1024;
const BATCH_AGE: Duration = Duration::from_millis(50);

/// Lines a busy tokio worker collected for stderr, and when the oldest came.
struct Batch {
    bytes: Vec<u8>,
    since: Instant,
}

thread_local! {
    /// Set on a tokio worker the first time it runs out of work; blocking-pool threads,
    /// the writer thread and the main thread never park as workers, so their lines are
    /// written one by one.
    static BATCH: RefCell<Option<Batch>> = const { RefCell::new(None) };
}

/// Called by each tokio worker as it runs out of work (the runtime's park hook): writes
/// out the lines it collected while busy, in one write, and collects its lines from
/// then on. A busy daemon logs a line per webhook, and writing each on its own cost
/// about 5 % of its throughput in `bench/ingest.sh`. Journal lines are not collected:
/// each is a datagram of its own.
pub fn worker_idle() {
    BATCH.with_borrow_mut(|batch| {
        batch
            .get_or_insert_with(|| Batch {
                bytes: Vec::with_capacity(BATCH_BYTES),
                since: Instant::now(),
            })
            .write_out();
    });
}

/// Called by every runtime thread as it stops, so nothing collected is left behind.
pub fn thread_stopping() {
    BATCH.with_borrow_mut(|batch| {
        if let Some(mut batch) = batch.take() {
            batch.write_out();
        }
    });
}

impl Batch {
    fn write_out(&mut self) {
        if !self.bytes.is_empty() {
            let _ = std::io::stderr().write_all(&self.bytes);
            self.bytes.clear();
        }
    }
}

/// stderr as the fmt layer's writer; the layer hands it one whole line per write.
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        BATCH.with_borrow_mut(|batch| match batch {
            Some(batch) => {
                if batch.bytes.is_empty() {
                    batch.since = Instant::now();
                }
                batch.bytes.extend_from_slice(line);
                if batch.bytes.len() >= BATCH_BYTES || batch.since.elapsed() >= BATCH_AGE {
                    batch.write_out();
                }
                Ok(line.len())
            }
            None => std::io::stderr().write(line),
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
