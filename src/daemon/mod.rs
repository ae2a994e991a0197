//! `lowkey serve`: wires the store, the run queue and the HTTP server together, and
//! answers systemd and signals.
//!
//! [`serve`] reads in three parts. Start-up (`start.rs`): open the store (which
//! recovers pending runs), take systemd's sockets or bind `listen`, start serving, then
//! `READY=1`. The main loop: each pass waits for one `Wake` (`wake.rs`, one
//! `select!`) and answers it in one `match`; SIGHUP re-reads the config and swaps it in
//! atomically, keeping the old one when the new one is broken (`reload.rs`); the
//! `STATUS=` line and the idle exit are kept by `Status` (`status.rs`). The ordered
//! stop (below): stop accepting, finish requests in flight, `STOPPING=1`, end running
//! agents, leave unfinished runs queued for the next start, give `onFinish`
//! notifications in flight a short while (`finish::DRAIN`), exit 0.

mod reload;
mod start;
mod status;
mod wake;

use crate::activity::Activity;
use crate::config::{Config, ConfigError};
use crate::http::server::Listener;
use crate::log::id;
use crate::store::{Home, StoreError, WriterThread};
use crate::systemd;
use arc_swap::ArcSwap;
use status::Status;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Interval;
use wake::{Signals, Wake};

/// Requests in flight get this long to finish at shutdown.
const REQUEST_DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Options {
    pub home: Home,
    pub config_path: PathBuf,
    /// `--listen`, which overrides the config's `listen`.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "cannot listen on {addr}: {source}; stop whatever holds it, or choose another address with `listen` in the config or --listen"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot use the sockets systemd passed: {0}")]
    Sockets(#[source] std::io::Error),
    #[error("cannot install a signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("{0}")]
    Window(String),
}

/// Runs lowkey until SIGTERM, SIGINT or the idle exit, then stops in order.
pub async fn serve(opts: Options) -> Result<(), DaemonError> {
    let mut daemon = Daemon::start(opts).await?;
    loop {
        match daemon.wake().await {
            Wake::Reload => daemon.reload(),
            Wake::Stop => break,
            Wake::IdleExit => {
                tracing::info!(
                    "idle for {}s; exiting until systemd starts lowkey again",
                    daemon.status.idle_limit().unwrap_or_default().as_secs()
                );
                break;
            }
            Wake::Watchdog => systemd::watchdog(),
            Wake::StatusRefresh => daemon.status.refresh(),
            // Only to look again: the next pass takes in what changed, and exits if
            // the idle deadline has passed.
            Wake::IdleDeadline | Wake::Changed | Wake::StatusDue => {}
        }
        daemon.status.send_if_due();
    }
    daemon.stop().await;
    Ok(())
}

/// A running lowkey: what the main loop watches, and what the ordered stop ends.
struct Daemon {
    /// Where SIGHUP re-reads the config from.
    config_path: PathBuf,
    /// The config in force, swapped whole by a reload.
    config: Arc<ArcSwap<Config>>,
    /// What lowkey is doing, updated by the HTTP side and dispatch.
    activity: Arc<Activity>,
    /// The `STATUS=` line and the idle clock.
    status: Status,
    signals: Signals,
    /// How often systemd's watchdog wants to hear from lowkey, if it does.
    watchdog: Option<Duration>,
    watchdog_tick: Interval,
    /// Told after a good reload, so runs held back by an unusable config may start.
    reloaded: watch::Sender<()>,
    /// The listening sockets, held until lowkey exits: the accept loops share them but
    /// do not own them.
    listeners: Vec<Arc<Listener>>,
    /// Turns true to stop accepting and drain the requests in flight.
    http_stop: watch::Sender<bool>,
    http: JoinHandle<()>,
    /// Turns true to end the running agents; their events stay queued.
    runs_stop: watch::Sender<bool>,
    dispatcher: JoinHandle<()>,
    /// The store's writer thread, joined last.
    writer: WriterThread,
}

impl Daemon {
    /// The ordered stop: no new connections, requests in flight finish (up to
    /// REQUEST_DRAIN), `STOPPING=1`, running agents end, `onFinish` notifications in
    /// flight get `finish::DRAIN` (dispatch waits for them), the store's writer
    /// finishes. All of it fits the units' `TimeoutStopSec=30s`.
    async fn stop(self) {
        tracing::info!("shutting down: no new connections; finishing requests in flight");
        let _ = self.http_stop.send(true);
        let _ = self.http.await;
        systemd::stopping();
        tracing::info!(
            message_id = id::STOPPING,
            running = self.activity.running.load(Ordering::SeqCst),
            queued = self.activity.queued.load(Ordering::SeqCst),
            "stopping: ending running agents; unfinished runs stay queued for the next start"
        );
        let _ = self.runs_stop.send(true);
        let _ = self.dispatcher.await;
        self.writer.join();
        // The listening sockets close only now, as lowkey exits.
        drop(self.listeners);
    }
}
