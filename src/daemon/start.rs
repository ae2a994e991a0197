//! Start-up: the config, the store and its recovery, the listeners, the HTTP server and
//! dispatch, then `READY=1`.

use super::status::Status;
use super::wake::Signals;
use super::{Daemon, DaemonError, Options, REQUEST_DRAIN};
use crate::activity::Activity;
use crate::config::{self, Config, Lookup};
use crate::dispatch;
use crate::http::App;
use crate::http::server::{self, Listener};
use crate::log::{Outside, escape, id};
use crate::store::Store;
use crate::systemd;
use crate::window::Limits;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

impl Daemon {
    /// Starts everything and tells systemd lowkey is ready, or says why it cannot start.
    pub(super) async fn start(opts: Options) -> Result<Daemon, DaemonError> {
        // Before anything else: a SIGHUP that arrived before its handler would kill lowkey.
        let signals = Signals::install()?;
        let passed = systemd::take_listeners().map_err(DaemonError::Sockets)?;
        let socket_activated = !passed.is_empty();
        // Why the load failed, for the status line.
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

        let limits = Limits::from_env().map_err(DaemonError::Window)?;
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
        let (http_stop, http_stopped) = watch::channel(false);
        let (runs_stop, runs_stopped) = watch::channel(false);
        let (reloaded, reloads) = watch::channel(());
        let ctx = dispatch::Context {
            home: opts.home.clone(),
            config: config.clone(),
            store: store.clone(),
            activity: activity.clone(),
            limits,
            notifier: crate::finish::Notifier::new(opts.home.clone()),
        };
        let dispatcher = tokio::spawn(dispatch::run(
            ctx,
            jobs_rx,
            recovery.backlog,
            runs_stopped,
            reloads,
        ));
        let app = Arc::new(App::new(config.clone(), store, activity.clone()));
        let http = tokio::spawn({
            let listeners = listeners.clone();
            async move { server::serve(&listeners, app, http_stopped, REQUEST_DRAIN).await }
        });

        let status = Status::new(
            config.clone(),
            activity.clone(),
            socket_activated,
            reload_error,
        );
        systemd::ready(&status.line());
        tracing::info!(
            message_id = id::STARTED,
            sources = config.load().sources.len(),
            socket_activated,
            "lowkey {} started",
            env!("CARGO_PKG_VERSION")
        );

        let watchdog = systemd::watchdog_interval();
        let watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        if config.load().idle_exit.is_some() && !socket_activated {
            // Nothing would start lowkey again, so exiting would drop the next webhook.
            tracing::info!("idleExitSec is ignored: lowkey was not socket-activated");
        }
        Ok(Daemon {
            config_path: opts.config_path,
            config,
            activity,
            status,
            signals,
            watchdog,
            watchdog_tick,
            reloaded,
            listeners,
            http_stop,
            http,
            runs_stop,
            dispatcher,
            writer,
        })
    }
}
