//! Why the main loop wakes: one [`Wake`] per pass, from one `select!`.

use super::status::STATUS_REFRESH;
use super::{Daemon, DaemonError};
use std::time::Instant;
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Why the main loop woke.
pub(super) enum Wake {
    /// SIGHUP: re-read the config.
    Reload,
    /// SIGTERM or SIGINT: stop in order.
    Stop,
    /// systemd's watchdog wants to hear that lowkey is alive.
    Watchdog,
    /// Idle for `idleExitSec`: exit until systemd starts lowkey again.
    IdleExit,
    /// The idle deadline came; the next pass exits, unless something happened meanwhile.
    IdleDeadline,
    /// Something changed while the status line was up to date.
    Changed,
    /// The status line may be out of date and may be sent again.
    StatusDue,
    /// Nothing for STATUS_REFRESH: the line's "12s ago" needs rewriting.
    StatusRefresh,
}

/// The signals lowkey answers.
pub(super) struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    pub(super) fn install() -> Result<Self, DaemonError> {
        let install = |kind| signal(kind).map_err(DaemonError::Signal);
        Ok(Signals {
            hup: install(SignalKind::hangup())?,
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
        })
    }
}

impl Daemon {
    /// Takes in what changed, then waits for the next reason to act.
    pub(super) async fn wake(&mut self) -> Wake {
        // Registered before the look below, so a change just after it still wakes us.
        let changed = self.activity.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        self.status.look();
        let idle_deadline = self.status.idle_deadline();
        if idle_deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Wake::IdleExit;
        }
        // Only a quiet daemon listens for the next change. Once something changed, the
        // status is rewritten at the next tick, and the changes until then are picked
        // up by `look` above: the loop wakes about once a second under load, not once
        // per request.
        let dirty = self.status.dirty();
        let listen = !dirty;
        let signals = &mut self.signals;
        tokio::select! {
            _ = signals.hup.recv() => Wake::Reload,
            _ = signals.term.recv() => Wake::Stop,
            _ = signals.int.recv() => Wake::Stop,
            _ = self.watchdog_tick.tick(), if self.watchdog.is_some() => Wake::Watchdog,
            () = tokio::time::sleep_until(idle_deadline.unwrap_or_else(Instant::now).into()), if idle_deadline.is_some() => Wake::IdleDeadline,
            () = &mut changed, if listen => Wake::Changed,
            () = tokio::time::sleep_until(self.status.next_send().into()), if dirty => Wake::StatusDue,
            () = tokio::time::sleep(STATUS_REFRESH) => Wake::StatusRefresh,
        }
    }
}
