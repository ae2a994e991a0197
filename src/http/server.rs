//! The accept loops: hyper HTTP/1 over every listening socket, with a graceful stop.

use super::{App, Peer};
use crate::activity::Activity;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use nix::errno::Errno;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;

/// A request's headers must arrive within this long.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once. When all are taken, the next client gets the slot of
/// the one that has been quiet longest (see `Connections::shed`).
const MAX_CONNECTIONS: usize = 1024;
/// A request still in flight after this long (a body trickling in) may lose its
/// connection to a new client when every slot is taken and none is quiet. A webhook's
/// body arrives in milliseconds; its answer waits for a sync.
const SHED_BUSY_AFTER: Duration = Duration::from_secs(10);
/// While accepting fails (mostly for want of file descriptors), it is tried again this
/// often: the connections waiting in the backlog are served as soon as it works again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// How often a failing accept is logged: the first failure at once, then a line at most
/// this often with the count of failures since, instead of a line per try.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(5);

/// A socket lowkey serves: one systemd passed, or one it bound itself.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(addr) => write!(f, "http://{addr}"),
                Err(_) => f.write_str("tcp"),
            },
            Listener::Unix(l) => match l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.to_owned()))
            {
                Some(path) => write!(f, "unix:{}", path.display()),
                None => f.write_str("unix"),
            },
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

impl Listener {
    async fn accept(&self) -> std::io::Result<(Box<dyn Io>, Peer)> {
        match self {
            Listener::Tcp(l) => {
                let (stream, addr) = l.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok((Box::new(stream), Peer(Some(addr))))
            }
            Listener::Unix(l) => {
                let (stream, _) = l.accept().await?;
                Ok((Box::new(stream), Peer(None)))
            }
        }
    }
}

/// Serves every listener until `stop` turns true, then stops accepting and lets the
/// requests in flight finish within `drain`. The listeners are shared, not closed:
/// they belong to the caller (and under socket activation, to systemd), so a reload or
/// a restart of this loop never loses a socket.
pub async fn serve(
    listeners: &[Arc<Listener>],
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) {
    let graceful = Arc::new(GracefulShutdown::new());
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = Arc::new(Connections::new());
    // Turns true (or is dropped) once the drain is over: connections still open close.
    let (close_tx, close) = watch::channel(false);
    let mut loops = JoinSet::new();
    for listener in listeners {
        loops.spawn(accept_loop(
            listener.clone(),
            app.clone(),
            graceful.clone(),
            permits.clone(),
            connections.clone(),
            close.clone(),
        ));
    }
    let _ = stop.wait_for(|s| *s).await;
    loops.shutdown().await;
    let graceful = Arc::into_inner(graceful).expect("the accept loops have ended");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still open after {}s; closing them",
            drain.as_secs()
        );
    }
    let _ = close_tx.send(true);
}

/// How every connection is served: keep-alive, with the headers due within
/// [`HEADER_TIMEOUT`]. The HTTP fuzz target serves its connections with it too.
pub(crate) fn http1_builder() -> http1::Builder {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    http
}

async fn accept_loop(
    listener: Arc<Listener>,
    app: Arc<App>,
    graceful: Arc<GracefulShutdown>,
    permits: Arc<Semaphore>,
    connections: Arc<Connections>,
    close: watch::Receiver<bool>,
) {
    let http = http1_builder();
    let mut failures = AcceptFailures::default();
    loop {
        let (io, peer) = match listener.accept().await {
            Ok(conn) => {
                failures.ended(&listener);
                conn
            }
            Err(e) => {
                // EMFILE and friends pass; back off a little instead of spinning.
                failures.failed(&listener, &e);
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                connections.shed();
                match permits.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => return,
                }
            }
        };
        let (id, slot) = connections.opened();
        let app = app.clone();
        let activity: Arc<Activity> = app.activity.clone();
        let tracked = slot.clone();
        let epoch = connections.epoch;
        let service = service_fn(move |req| {
            let app = app.clone();
            let request = InFlight::start(tracked.clone(), epoch);
            async move {
                let res = super::handle(&app, req, peer).await;
                drop(request);
                Ok::<_, Infallible>(res)
            }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(io), service));
        activity.connection_opened();
        let mut close = close.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            // Dropping the connection closes it, and lets go of the store with `app`.
            tokio::select! {
                _ = conn => {}
                _ = close.wait_for(|c| *c) => {}
                () = slot.shed.notified() => {}
            }
            connections.closed(id);
            activity.connection_closed();
            drop(permit);
        });
    }
}

/// The connections being served, so that a full house can make room. A slow client
/// that trickles its headers, or holds a connection idle, would otherwise keep out every
/// sender once enough of them fill the slots (slowloris): instead, when all slots are
/// taken and a client connects, the connection that has been quiet longest gives way.
/// The map is locked only as connections open and close and when one must give way; a
/// request only touches its own connection's atomics.
struct Connections {
    open: Mutex<HashMap<u64, Arc<Slot>>>,
    next: AtomicU64,
    /// What `Slot::since` counts milliseconds from.
    epoch: Instant,
}

/// One connection's state.
#[derive(Default)]
struct Slot {
    /// Since when (ms after `Connections::epoch`) it has been quiet (no request in
    /// flight), or since when its request has been in flight.
    since: AtomicU64,
    busy: AtomicBool,
    /// Told to close the connection; `shedding` once told.
    shed: Notify,
    shedding: AtomicBool,
}

impl Slot {
    fn mark(&self, epoch: Instant, busy: bool) {
        self.since
            .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.busy.store(busy, Ordering::Relaxed);
    }
}

/// A request in flight on a connection; the connection is quiet again when it is
/// dropped.
struct InFlight {
    slot: Arc<Slot>,
    epoch: Instant,
}

impl InFlight {
    fn start(slot: Arc<Slot>, epoch: Instant) -> InFlight {
        slot.mark(epoch, true);
        InFlight { slot, epoch }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.slot.mark(self.epoch, false);
    }
}

impl Connections {
    fn new() -> Connections {
        Connections {
            open: Mutex::default(),
            next: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn opened(&self) -> (u64, Arc<Slot>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::default());
        slot.mark(self.epoch, false);
        self.open
            .lock()
            .expect("connections lock")
            .insert(id, slot.clone());
        (id, slot)
    }

    fn closed(&self, id: u64) {
        self.open.lock().expect("connections lock").remove(&id);
    }

    /// Closes the connection that has been quiet longest; failing that, the one whose
    /// request has been in flight longest, if that is over `SHED_BUSY_AFTER`. Its slot
    /// goes to the client waiting for one.
    fn shed(&self) {
        let open = self.open.lock().expect("connections lock");
        let now = self.epoch.elapsed().as_millis() as u64;
        let busy_after = SHED_BUSY_AFTER.as_millis() as u64;
        let victim = open
            .values()
            .map(|c| {
                (
                    c,
                    c.busy.load(Ordering::Relaxed),
                    c.since.load(Ordering::Relaxed),
                )
            })
            .filter(|(c, _, _)| !c.shedding.load(Ordering::Relaxed))
            .filter(|&(_, busy, since)| !busy || now.saturating_sub(since) >= busy_after)
            .min_by_key(|&(_, busy, since)| (busy, since));
        if let Some((c, _, _)) = victim {
            c.shedding.store(true, Ordering::Relaxed);
            // `notify_one` keeps the wake-up for a connection task not yet waiting.
            c.shed.notify_one();
        }
    }
}

/// A run of failed accepts on one listener, logged sparingly.
#[derive(Default)]
struct AcceptFailures {
    /// When the run began, and when it was last logged; `None` while accept works.
    since: Option<(Instant, Instant)>,
    /// Failures in the run, and those since its last line.
    total: u64,
    unlogged: u64,
}

impl AcceptFailures {
    fn failed(&mut self, listener: &Listener, error: &std::io::Error) {
        self.total += 1;
        self.unlogged += 1;
        let now = Instant::now();
        let hint = match error.raw_os_error().map(Errno::from_raw) {
            Some(Errno::EMFILE) => {
                "; lowkey has as many files open as it may: raise LimitNOFILE= in its unit \
                 (or `ulimit -n`), or lower the load"
            }
            Some(Errno::ENFILE) => {
                "; the system has as many files open as it may: raise fs.file-max, or lower the load"
            }
            _ => "",
        };
        match &mut self.since {
            None => {
                tracing::warn!(
                    listener = %listener,
                    error = %error,
                    "accept failed; retrying every {}ms, and logging at most every {}s until it works{hint}",
                    ACCEPT_RETRY.as_millis(),
                    ACCEPT_LOG_EVERY.as_secs()
                );
                self.since = Some((now, now));
            }
            Some((_, logged)) if now.duration_since(*logged) >= ACCEPT_LOG_EVERY => {
                tracing::warn!(
                    listener = %listener,
                    error = %error,
                    failures = self.unlogged,
                    "accept failed {} more times in the last {}s{hint}",
                    self.unlogged,
                    now.duration_since(*logged).as_secs()
                );
                *logged = now;
            }
            Some(_) => return,
        }
        self.unlogged = 0;
    }

    /// Accept worked: ends the run of failures, if there was one, with a line.
    fn ended(&mut self, listener: &Listener) {
        if let Some((since, _)) = self.since.take() {
            tracing::info!(
                listener = %listener,
                failures = self.total,
                "accepting connections again, after {} failed accepts over {}s",
                self.total,
                since.elapsed().as_secs()
            );
            *self = AcceptFailures::default();
        }
    }
}
