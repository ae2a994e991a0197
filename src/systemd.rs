//! systemd integration: sockets it passes, and the notify protocol.
//!
//! Every call here is a no-op outside systemd, and a failed notification is logged at
//! debug level and otherwise ignored: lowkey must never stop serving because systemd's
//! socket went away.

use crate::http::server::Listener;
use listenfd::ListenFd;
use sd_notify::NotifyState;
use std::io;
use std::time::Duration;

/// A socket systemd passed, with its `FileDescriptorName=`.
pub struct Passed {
    pub listener: Listener,
    pub name: String,
}

/// Takes every socket systemd passed (`LISTEN_FDS`): TCP over IPv4 or IPv6, or unix
/// stream. Each is made non-blocking before tokio gets it.
pub fn take_listeners() -> io::Result<Vec<Passed>> {
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|n| n.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut fds = ListenFd::from_env();
    let mut passed = Vec::new();
    for idx in 0..fds.len() {
        let name = names
            .get(idx)
            .cloned()
            .unwrap_or_else(|| format!("fd{}", idx + 3));
        let listener = if let Ok(Some(tcp)) = fds.take_tcp_listener(idx) {
            tcp.set_nonblocking(true)?;
            Listener::Tcp(tokio::net::TcpListener::from_std(tcp)?)
        } else if let Ok(Some(unix)) = fds.take_unix_listener(idx) {
            unix.set_nonblocking(true)?;
            Listener::Unix(tokio::net::UnixListener::from_std(unix)?)
        } else {
            return Err(io::Error::other(format!(
                "socket {name} (fd {}) from systemd is neither a TCP nor a unix stream listener; use ListenStream= in the socket unit",
                idx + 3
            )));
        };
        passed.push(Passed { listener, name });
    }
    Ok(passed)
}

fn under_systemd() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn send(states: &[NotifyState]) {
    if !under_systemd() {
        return;
    }
    // `false`: keep NOTIFY_SOCKET set, or every later notification would be dropped.
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
}

/// `READY=1` with the first `STATUS=` in the same message.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1` and `MONOTONIC_USEC=` in one message, as systemd wants for reloads.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

pub fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC`, when it is set for us.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2))
}
