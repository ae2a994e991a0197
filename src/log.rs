//! Logging: journald's native protocol under systemd, readable text on stderr otherwise.
//!
//! Every webhook and run line carries structured fields (`webhook_source`, `session_id`,
//! ...); journald sees them upper-cased (`WEBHOOK_SOURCE=`), so `journalctl
//! WEBHOOK_SOURCE=stripe` works. Each kind of line has a stable `MESSAGE_ID`, explained
//! by `packaging/lowkey.catalog` for `journalctl -x`.
//!
//! No value or message reaches either as it is: both escape every control character and
//! Unicode line separator in them (see [`escape`]), so text from a request or an agent
//! cannot end a line and start one that looks like lowkey's.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};
use tracing::field::{Field, FieldSet, Value, ValueSet, Visit};
use tracing::{Event, Subscriber, span};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

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
    pub const RERUN: &str = "7f3a87c862044a2ba873ff8c53558664";
    pub const IGNORED: &str = "7d65efd79b094851b19d5f8055a64748";
    pub const FINISH_FAILED: &str = "3b699a9c1f62445d98776f54e7c38a50";
}

/// Text from outside lowkey (a request's path or headers, a payload, an agent's output, a
/// config file's contents), made safe to put in a log line: every control character
/// (C0, DEL, C1 such as NEL), the Unicode line and paragraph separators and the bidi
/// controls are written as escapes (`\n`, `\r`, `\t`, else `\u{..}`), and a backslash
/// as `\\`, so such text can neither start a line of its own nor hide or reorder what
/// follows it, and every escape in the result was made here. Text that needs no
/// escaping is borrowed as it is.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c == '\\' || is_unsafe(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = Escaping {
        out: String::with_capacity(text.len() + 8),
        backslash: true,
    };
    let _ = out.write_str(text);
    Cow::Owned(out.out)
}

/// A character that must never reach a log line as it is: it can end the line, rewrite
/// what the terminal shows (ESC, CSI), or reorder the text after it.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{61c}'
        )
}

/// A writer that escapes what passes through it: unsafe characters always, a backslash
/// only when `backslash` is set. The log formatters leave backslashes alone, so that a
/// value already escaped by [`Outside`] is not escaped twice; they are the safety net
/// for text nobody thought of as coming from outside.
struct Escaping<W> {
    out: W,
    backslash: bool,
}

impl<W: std::fmt::Write> std::fmt::Write for Escaping<W> {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let backslash = self.backslash;
        let mut rest = text;
        while let Some(at) = rest.find(|c| (backslash && c == '\\') || is_unsafe(c)) {
            self.out.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().expect("find stops at a char");
            match c {
                '\\' => self.out.write_str("\\\\")?,
                '\n' => self.out.write_str("\\n")?,
                '\r' => self.out.write_str("\\r")?,
                '\t' => self.out.write_str("\\t")?,
                c => write!(self.out, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.out.write_str(rest)
    }
}

/// A value from outside lowkey, displayed through [`escape`]: log it as
/// `field = %Outside(&text)`.
#[derive(Debug, Clone, Copy)]
pub struct Outside<T>(pub T);

impl<T: std::fmt::Display> std::fmt::Display for Outside<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = Escaping {
            out: f,
            backslash: true,
        };
        write!(out, "{}", self.0)
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
                    .with(Journal(layer).with_filter(filter()))
                    .init();
                return;
            }
            Err(e) => eprintln!("lowkey: cannot reach journald ({e}); logging to stderr"),
        }
    }
    // On a terminal the MESSAGE_ID is noise; every other field stays as key=value. The
    // message and every value are escaped here, so that no call site can forget to.
    // The message comes first; each other field writes its own separating space, so a
    // field left out leaves no space behind at the end of the line.
    let fields = format::debug_fn(|w, field, value| {
        match field.name() {
            "message_id" => return Ok(()),
            "message" => {}
            name => write!(w, " {name}=")?,
        }
        let mut w = Escaping {
            out: w,
            backslash: false,
        };
        write!(w, "{value:?}")
    });
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(|| Stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .fmt_fields(fields);
    tracing_subscriber::registry()
        .with(layer.with_filter(filter()))
        .init();
}

/// The journald layer, escaping every value on its way in. tracing-journald writes each
/// value into the journal as it is, and its `Layer` has no hook for values (only a field
/// prefix, the syslog identifier, priority mappings and fixed extra fields). Wrapping
/// outside text in [`Outside`] at each call site would leave whatever a call site forgot
/// unescaped, so this layer stands in front of it instead: it records each event's (and
/// span's) values as text, escapes them as the stderr formatter does, and hands
/// tracing-journald the same event carrying the escaped text. An event or span whose
/// values need no escaping, nearly every one, goes to tracing-journald as it is: looking
/// costs formatting its values once more, without allocating; only one that needs
/// escaping costs a string per value. Call sites still wrap outside text in `Outside`,
/// which also escapes its backslashes, so every escape in an entry is lowkey's.
struct Journal(tracing_journald::Layer);

impl<S> Layer<S> for Journal
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let metadata = attrs.metadata();
        if !needs_escaping(metadata.fields(), |v| attrs.record(v)) {
            return self.0.on_new_span(attrs, id, ctx);
        }
        let mut texts = Texts::default();
        attrs.record(&mut texts);
        texts.with_values(metadata.fields(), |values| {
            let attrs = match attrs.parent() {
                _ if attrs.is_contextual() => span::Attributes::new(metadata, values),
                Some(parent) => span::Attributes::child_of(parent.clone(), metadata, values),
                None => span::Attributes::new_root(metadata, values),
            };
            self.0.on_new_span(&attrs, id, ctx);
        });
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let Some(metadata) = ctx.metadata(id) else {
            return;
        };
        if !needs_escaping(metadata.fields(), |v| values.record(v)) {
            return self.0.on_record(id, values, ctx);
        }
        let mut texts = Texts::default();
        values.record(&mut texts);
        texts.with_values(metadata.fields(), |values| {
            self.0.on_record(id, &span::Record::new(values), ctx);
        });
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let metadata = event.metadata();
        if !needs_escaping(metadata.fields(), |v| event.record(v)) {
            return self.0.on_event(event, ctx);
        }
        let mut texts = Texts::default();
        event.record(&mut texts);
        texts.with_values(metadata.fields(), |values| {
            let event = if event.is_contextual() {
                Event::new(metadata, values)
            } else {
                Event::new_child_of(event.parent().cloned(), metadata, values)
            };
            self.0.on_event(&event, ctx);
        });
    }
}

/// The most values one event or span hands the journal; lowkey's lines have a dozen at
/// most. Values past it are left out, never written unescaped.
const MAX_FIELDS: usize = 32;

/// Whether a value that `record` visits holds a character [`Texts`] would escape; and
/// whenever `fields` are more than [`MAX_FIELDS`], as only `Texts` leaves those out.
fn needs_escaping(fields: &FieldSet, record: impl FnOnce(&mut dyn Visit)) -> bool {
    if fields.len() > MAX_FIELDS {
        return true;
    }
    let mut unsafe_char = UnsafeChar(false);
    record(&mut unsafe_char);
    unsafe_char.0
}

/// Looks for an unsafe character in the values it visits, formatting them into nothing.
struct UnsafeChar(bool);

impl std::fmt::Write for UnsafeChar {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0 = self.0 || text.chars().any(is_unsafe);
        Ok(())
    }
}

impl Visit for UnsafeChar {
    fn record_str(&mut self, _: &Field, value: &str) {
        let _ = self.write_str(value);
    }

    fn record_debug(&mut self, _: &Field, value: &dyn std::fmt::Debug) {
        if !self.0 {
            let _ = write!(self, "{value:?}");
        }
    }
}

/// The values of an event or a span, each as the journal would write it, escaped.
#[derive(Default)]
struct Texts(Vec<(Field, String)>);

impl Texts {
    fn push(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        let mut text = Escaping {
            out: String::new(),
            backslash: false,
        };
        let _ = text.write_fmt(value);
        self.0.push((field.clone(), text.out));
    }

    /// Calls `f` with the escaped values, as values of `fields`.
    fn with_values(&self, fields: &FieldSet, f: impl FnOnce(&ValueSet<'_>)) {
        let Some((first, _)) = self.0.first() else {
            return f(&fields.value_set(&[]));
        };
        // A `String` value is recorded as the text it holds.
        let values: [(&Field, Option<&dyn Value>); MAX_FIELDS] =
            std::array::from_fn(|i| match self.0.get(i) {
                Some((field, text)) => (field, Some(text as &dyn Value)),
                // Unused slots name a field without a value, which nothing records.
                None => (first, None),
            });
        f(&fields.value_set(&values));
    }
}

impl Visit for Texts {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.push(field, format_args!("{value:?}"));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_leaves_no_character_that_can_break_or_disguise_a_line() {
        for (text, escaped) in [
            ("stripe", "stripe"),
            ("naïve café ✓ 日本", "naïve café ✓ 日本"),
            ("", ""),
            ("a\nb", "a\\nb"),
            ("a\r\nb", "a\\r\\nb"),
            ("tab\there", "tab\\there"),
            ("\u{1b}[31mred", "\\u{1b}[31mred"),
            ("nul\0", "nul\\u{0}"),
            ("bell\u{7}", "bell\\u{7}"),
            ("vt\u{b}ff\u{c}", "vt\\u{b}ff\\u{c}"),
            ("del\u{7f}", "del\\u{7f}"),
            ("q\u{85}FORGED", "q\\u{85}FORGED"),
            ("csi\u{9b}2J", "csi\\u{9b}2J"),
            ("ls\u{2028}ps\u{2029}", "ls\\u{2028}ps\\u{2029}"),
            ("rlo\u{202e}txt.exe", "rlo\\u{202e}txt.exe"),
            ("lri\u{2066}x\u{2069}", "lri\\u{2066}x\\u{2069}"),
            (
                "lrm\u{200e}rlm\u{200f}alm\u{61c}",
                "lrm\\u{200e}rlm\\u{200f}alm\\u{61c}",
            ),
            ("back\\slash", "back\\\\slash"),
            // An escape that was in the text stays tellable from one made here.
            ("\\u{85}", "\\\\u{85}"),
        ] {
            assert_eq!(escape(text), escaped, "{text:?}");
            assert_eq!(Outside(text).to_string(), escaped, "{text:?}");
        }
        assert!(matches!(escape("plain text"), Cow::Borrowed(_)));
    }

    #[test]
    fn the_journal_layer_rebuilds_only_what_has_a_value_to_escape() {
        use std::sync::{Arc, Mutex};
        struct Check(Arc<Mutex<Vec<bool>>>);
        impl<S: Subscriber> Layer<S> for Check {
            fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
                let fields = event.metadata().fields();
                let rebuilt = needs_escaping(fields, |v| event.record(v));
                self.0.lock().unwrap().push(rebuilt);
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Check(seen.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                source = "stripe",
                count = 3,
                "plain text and a \\ backslash"
            );
            tracing::info!(source = %"a\u{2028}b", "a displayed value to escape");
            tracing::info!(count = 3, "a message to escape: \u{1b}[2K");
        });
        assert_eq!(*seen.lock().unwrap(), [false, true, true]);
    }

    #[test]
    fn the_formatters_escape_all_but_backslashes() {
        let mut out = Escaping {
            out: String::new(),
            backslash: false,
        };
        write!(out, "{} and a\u{2028}b\\c", Outside("x\ny")).unwrap();
        assert_eq!(out.out, "x\\ny and a\\u{2028}b\\c");
    }
}
