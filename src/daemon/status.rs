//! The `STATUS=` line `systemctl status` shows, and the idle exit: both follow
//! [`Activity`], and both are decided here, at each pass of the main loop.

use crate::activity::Activity;
use crate::config::Config;
use crate::systemd;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// `STATUS=` is sent at most this often.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// ... and refreshed at least this often, so "last: stripe 12s ago" stays true.
pub(super) const STATUS_REFRESH: Duration = Duration::from_secs(15);

/// What the main loop knows of the status line and the idle clock.
pub(super) struct Status {
    /// The config in force, for the source count and `idleExitSec`.
    config: Arc<ArcSwap<Config>>,
    /// What lowkey is doing, updated by the HTTP side and dispatch.
    activity: Arc<Activity>,
    /// Only a socket-activated lowkey exits when idle: nothing else would start it again.
    socket_activated: bool,
    /// Why the last load or reload failed, for the status line.
    reload_error: Option<String>,
    /// The line last sent, so an unchanged line is not sent again.
    sent: String,
    /// When the line may be sent next.
    next_send: Instant,
    /// The status line may be out of date; it is rewritten at most every STATUS_EVERY.
    dirty: bool,
    /// Since when nothing has happened; any activity starts the idle clock again.
    idle_since: Option<Instant>,
}

impl Status {
    pub(super) fn new(
        config: Arc<ArcSwap<Config>>,
        activity: Arc<Activity>,
        socket_activated: bool,
        reload_error: Option<String>,
    ) -> Self {
        Status {
            config,
            activity,
            socket_activated,
            reload_error,
            sent: String::new(),
            next_send: Instant::now(),
            dirty: false,
            idle_since: None,
        }
    }

    /// Takes in what changed since the last look. Call it after registering for
    /// `Activity::changed`, so a change just after it still wakes the loop.
    pub(super) fn look(&mut self) {
        if self.activity.take_changed() {
            self.dirty = true;
            self.idle_since = None;
        }
        if self.activity.is_idle() {
            self.idle_since.get_or_insert_with(Instant::now);
        } else {
            self.idle_since = None;
        }
    }

    /// How long lowkey may sit idle before it exits, if it exits when idle at all.
    pub(super) fn idle_limit(&self) -> Option<Duration> {
        self.config
            .load()
            .idle_exit
            .filter(|_| self.socket_activated)
    }

    /// When lowkey exits for being idle: none while it is busy or never exits when idle.
    /// Once it has passed, it is time to exit.
    pub(super) fn idle_deadline(&self) -> Option<Instant> {
        self.idle_limit()
            .zip(self.idle_since)
            .map(|(limit, since)| since + limit)
    }

    /// Whether the line may be out of date, waiting for `next_send`.
    pub(super) fn dirty(&self) -> bool {
        self.dirty
    }

    /// When the line may be sent next.
    pub(super) fn next_send(&self) -> Instant {
        self.next_send
    }

    /// Rewrites the line at the next chance, though nothing changed: time has passed.
    pub(super) fn refresh(&mut self) {
        self.dirty = true;
    }

    /// Ends a reload: keeps why it failed, if it did, and sends `READY=1` with the new
    /// line.
    pub(super) fn reloaded(&mut self, error: Option<String>) {
        self.reload_error = error;
        let line = self.line();
        systemd::ready(&line);
        self.sent = line;
        self.dirty = true;
    }

    /// Sends the line if it may be out of date and STATUS_EVERY has passed since the
    /// last one; and then only if it changed.
    pub(super) fn send_if_due(&mut self) {
        if self.dirty && Instant::now() >= self.next_send {
            self.dirty = false;
            self.next_send = Instant::now() + STATUS_EVERY;
            let line = self.line();
            if line != self.sent {
                systemd::status(&line);
                self.sent = line;
            }
        }
    }

    /// One human line for `systemctl status`.
    pub(super) fn line(&self) -> String {
        let config = self.config.load();
        let activity = &self.activity;
        let sources = config.sources.len();
        let running = activity.running.load(Ordering::SeqCst);
        let queued = activity.queued.load(Ordering::SeqCst);
        let mut line = format!(
            "{sources} source{} · {running} run{} in flight",
            if sources == 1 { "" } else { "s" },
            if running == 1 { "" } else { "s" },
        );
        if queued > 0 {
            line.push_str(&format!(" · {queued} queued"));
        }
        let ignored = activity.ignored.load(Ordering::SeqCst);
        if ignored > 0 {
            line.push_str(&format!(" · {ignored} ignored"));
        }
        match activity.last_event() {
            Some((source, at)) => line.push_str(&format!(
                " · last: {source} {}s ago",
                at.elapsed().as_secs()
            )),
            None => line.push_str(" · no webhook yet"),
        }
        match (self.reload_error.as_deref(), config.unusable) {
            (Some(e), true) => line.push_str(&format!(
                " · CONFIG UNUSABLE, answering 503 until fixed and reloaded: {e}"
            )),
            (Some(e), false) => line.push_str(&format!(" · RELOAD FAILED, old config kept: {e}")),
            (None, _) => {}
        }
        line
    }
}
