//! Counters of what lowkey is doing, read by the `STATUS=` line and the idle exit.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;
use tokio::sync::Notify;

#[derive(Default)]
pub struct Activity {
    /// Open HTTP connections.
    pub connections: AtomicUsize,
    /// Accepted events waiting for their run.
    pub queued: AtomicUsize,
    /// Agent runs in flight.
    pub running: AtomicUsize,
    /// Deliveries the sources' filters left out, since start-up.
    pub ignored: AtomicUsize,
    /// The source and time of the last accepted event.
    last_event: Mutex<Option<(String, Instant)>>,
    /// Something changed since the watcher last looked (`take_changed`).
    dirty: AtomicBool,
    /// Woken when `dirty` turns true, so the watcher need not poll, and is woken once
    /// per look rather than once per request.
    pub changed: Notify,
}

impl Activity {
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::SeqCst);
        self.touch();
    }

    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::SeqCst);
        self.touch();
    }

    /// `n` accepted events joined the run queue.
    pub fn enqueued(&self, n: usize) {
        self.queued.fetch_add(n, Ordering::SeqCst);
        self.touch();
    }

    /// A queued event's run started.
    pub fn run_started(&self) {
        self.queued.fetch_sub(1, Ordering::SeqCst);
        self.running.fetch_add(1, Ordering::SeqCst);
        self.touch();
    }

    pub fn run_ended(&self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.touch();
    }

    pub fn event_accepted(&self, source: &str) {
        *self.last_event.lock().expect("activity lock") = Some((source.to_owned(), Instant::now()));
        self.touch();
    }

    /// A delivery was answered 200 and dropped by its source's filters.
    pub fn event_ignored(&self) {
        self.ignored.fetch_add(1, Ordering::SeqCst);
        self.touch();
    }

    fn touch(&self) {
        if !self.dirty.swap(true, Ordering::SeqCst) {
            self.changed.notify_waiters();
        }
    }

    /// Whether anything changed since the last call. Call it after registering for
    /// `changed`, so a change in between still wakes the caller.
    pub fn take_changed(&self) -> bool {
        self.dirty.swap(false, Ordering::SeqCst)
    }

    pub fn last_event(&self) -> Option<(String, Instant)> {
        self.last_event.lock().expect("activity lock").clone()
    }

    /// No connection open and no work queued or running.
    pub fn is_idle(&self) -> bool {
        self.connections.load(Ordering::SeqCst) == 0
            && self.queued.load(Ordering::SeqCst) == 0
            && self.running.load(Ordering::SeqCst) == 0
    }
}
