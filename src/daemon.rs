//! `lowkey serve`: wires the store, the run queue and the HTTP server together, and
//! answers systemd and signals.
//!
//! Start-up: open the store (which recovers pending runs), take systemd's sockets or
//! bind `listen`, start serving, then `READY=1`. SIGHUP re-reads the config and swaps it
//! in atomically, keeping the old one when the new one is broken. SIGTERM/SIGINT stop in
//! order: stop accepting, finish requests in flight, `STOPPING=1`, end running agents,
//! leave unfinished runs queued for the next start, exit 0.

use crate::activity::Activity;
use crate::config::{self, Config, ConfigError, Lookup};
use crate::dispatch;
use crate::http::App;
use crate::http::server::{self, Listener};
use crate::log::{Outside, escape, id};
use crate::store::{Home, Store, StoreError};
use crate::systemd;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

/// Requests in flight get this long to finish at shutdown.
const REQUEST_DRAIN: Duration = Duration::from_secs(10);
/// `STATUS=` is sent at most this often.
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// ... and refreshed at least this often, so "last: stripe 12s ago" stays true.
const STATUS_REFRESH: Duration = Duration::from_secs(15);

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
}

pub async fn serve(opts: Options) -> Result<(), DaemonError> {
    // Before anything else: a SIGHUP that arrived before its handler would kill lowkey.
    let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signal)?;
    let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signal)?;
    let passed = systemd::take_listeners().map_err(DaemonError::Sockets)?;
    let socket_activated = !passed.is_empty();
    // Why the last load or reload failed, for the status line.
    let mut reload_error = None;
    let config = match config::load(&opts.config_path, Lookup::Own) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                tracing::warn!("config {}", Outside(w));
            }
            loaded.config
        }
        // Exiting would leave the connection that started us unanswered, and systemd
        // would start lowkey again for it until it gave up and closed the socket. So
        // lowkey stays up, answers 503 and runs nothing until a reload fixes the file.
        Err(e) if socket_activated => {
            let reason = e.to_string();
            tracing::error!(
                message_id = id::RELOAD_FAILED,
                "the config is unusable; answering 503 until it is fixed and reloaded: {}",
                Outside(&reason)
            );
            reload_error = Some(escape(&reason).into_owned());
            Config::unusable()
        }
        Err(e) => return Err(e.into()),
    };
    let config = Arc::new(ArcSwap::from_pointee(config));

    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
    let (store, writer, recovery) = Store::open(&opts.home, jobs_tx)?;
    if recovery.pending > 0 || recovery.completed > 0 {
        tracing::info!(
            pending = recovery.pending,
            completed = recovery.completed,
            "recovered {} unfinished run(s) from the queue",
            recovery.pending
        );
    }

    let mut listeners = Vec::new();
    for p in passed {
        tracing::info!(fd_name = %p.name, listener = %p.listener, "serving socket passed by systemd");
        listeners.push(Arc::new(p.listener));
    }
    if listeners.is_empty() {
        let addr = opts.listen.unwrap_or(config.load().listen);
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Bind { addr, source })?;
        let listener = Listener::Tcp(tcp);
        tracing::info!(listener = %listener, "listening on {listener}");
        listeners.push(Arc::new(listener));
    }

    let activity = Arc::new(Activity::default());
    let (http_stop_tx, http_stop) = watch::channel(false);
    let (runs_stop_tx, runs_stop) = watch::channel(false);
    let (reloaded_tx, reloaded) = watch::channel(());
    let ctx = dispatch::Context {
        home: opts.home.clone(),
        config: config.clone(),
        store: store.clone(),
        activity: activity.clone(),
    };
    let dispatcher = tokio::spawn(dispatch::run(ctx, jobs_rx, runs_stop, reloaded));
    let app = Arc::new(App::new(config.clone(), store, activity.clone()));
    let http = tokio::spawn({
        let listeners = listeners.clone();
        async move { server::serve(&listeners, app, http_stop, REQUEST_DRAIN).await }
    });

    systemd::ready(&status_line(
        &config.load(),
        &activity,
        reload_error.as_deref(),
    ));
    tracing::info!(
        message_id = id::STARTED,
        sources = config.load().sources.len(),
        socket_activated,
        "lowkey {} started",
        env!("CARGO_PKG_VERSION")
    );

    let watchdog = systemd::watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    if config.load().idle_exit.is_some() && !socket_activated {
        // Nothing would start lowkey again, so exiting would drop the next webhook.
        tracing::info!("idleExitSec is ignored: lowkey was not socket-activated");
    }
    let mut last_status = String::new();
    let mut next_status = Instant::now();
    // The status line may be out of date; it is rewritten at most every STATUS_EVERY.
    let mut dirty = false;
    // Since when nothing has happened; any activity starts the idle clock again.
    let mut idle_since: Option<Instant> = None;
    loop {
        // Registered before the look below, so a change just after it still wakes us.
        let changed = activity.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if activity.take_changed() {
            dirty = true;
            idle_since = None;
        }
        if activity.is_idle() {
            idle_since.get_or_insert_with(Instant::now);
        } else {
            idle_since = None;
        }
        let idle_exit = config.load().idle_exit.filter(|_| socket_activated);
        let idle_deadline = idle_exit
            .zip(idle_since)
            .map(|(limit, since)| since + limit);
        if idle_deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            tracing::info!(
                "idle for {}s; exiting until systemd starts lowkey again",
                idle_exit.unwrap_or_default().as_secs()
            );
            break;
        }
        // Only a quiet daemon listens for the next change. Once something changed, the
        // status is rewritten at the next tick, and the changes until then are picked
        // up by `take_changed` above: the loop wakes about once a second under load,
        // not once per request.
        let listen = !dirty;
        tokio::select! {
            _ = hup.recv() => {
                (reload_error, last_status) =
                    reload(&opts.config_path, &config, &activity);
                if reload_error.is_none() {
                    // Runs held back by an unusable config may start now.
                    let _ = reloaded_tx.send(());
                }
                dirty = true;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = watchdog_tick.tick(), if watchdog.is_some() => systemd::watchdog(),
            // The next pass exits, unless something happened meanwhile.
            () = tokio::time::sleep_until(idle_deadline.unwrap_or_else(Instant::now).into()), if idle_deadline.is_some() => {}
            () = &mut changed, if listen => {}
            () = tokio::time::sleep_until(next_status.into()), if dirty => {}
            () = tokio::time::sleep(STATUS_REFRESH) => dirty = true,
        }
        if dirty && Instant::now() >= next_status {
            dirty = false;
            next_status = Instant::now() + STATUS_EVERY;
            let line = status_line(&config.load(), &activity, reload_error.as_deref());
            if line != last_status {
                systemd::status(&line);
                last_status = line;
            }
        }
    }

    // Ordered shutdown.
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    let _ = http_stop_tx.send(true);
    let _ = http.await;
    systemd::stopping();
    tracing::info!(
        message_id = id::STOPPING,
        running = activity.running.load(Ordering::SeqCst),
        queued = activity.queued.load(Ordering::SeqCst),
        "stopping: ending running agents; unfinished runs stay queued for the next start"
    );
    let _ = runs_stop_tx.send(true);
    let _ = dispatcher.await;
    writer.join();
    Ok(())
}

/// Re-reads the config and swaps it in; on failure keeps the old one. A good config
/// also ends the unusable state. Returns why it failed, if it did, and the status line
/// sent to systemd with `READY=1`.
fn reload(
    path: &std::path::Path,
    config: &ArcSwap<Config>,
    activity: &Activity,
) -> (Option<String>, String) {
    // RELOADING=1 first: systemd 252 waits for READY=1 only if it hears this promptly.
    systemd::reloading();
    let old_listen = config.load().listen;
    let result = match config::load(path, Lookup::Own) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                tracing::warn!("config {}", Outside(w));
            }
            if loaded.config.listen != old_listen {
                tracing::warn!("`listen` changed; the new address takes effect at the next start");
            }
            let sources = loaded.config.sources.len();
            config.store(Arc::new(loaded.config));
            tracing::info!(message_id = id::CONFIG_RELOADED, sources, "config reloaded");
            None
        }
        Err(e) => {
            let reason = e.to_string();
            tracing::error!(
                message_id = id::RELOAD_FAILED,
                "config reload failed; the old config stays in force: {}",
                Outside(&reason)
            );
            Some(escape(&reason).into_owned())
        }
    };
    let status = status_line(&config.load(), activity, result.as_deref());
    systemd::ready(&status);
    (result, status)
}

/// One human line for `systemctl status`.
fn status_line(config: &Config, activity: &Activity, reload_error: Option<&str>) -> String {
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
    match activity.last_event() {
        Some((source, at)) => line.push_str(&format!(
            " · last: {source} {}s ago",
            at.elapsed().as_secs()
        )),
        None => line.push_str(" · no webhook yet"),
    }
    match (reload_error, config.unusable) {
        (Some(e), true) => line.push_str(&format!(
            " · CONFIG UNUSABLE, answering 503 until fixed and reloaded: {e}"
        )),
        (Some(e), false) => line.push_str(&format!(" · RELOAD FAILED, old config kept: {e}")),
        (None, _) => {}
    }
    line
}
