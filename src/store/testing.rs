//! What the store's unit tests share (and other modules' take events from): a fresh
//! home, and events to put in it.

use super::recovery::recover;
use super::writer::Writer;
use super::{Event, Home, Recovery, StoreError};
use crate::session;

pub(super) fn empty_home() -> (tempfile::TempDir, Home) {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    home.create_dirs().unwrap();
    (dir, home)
}

/// An event of session `s`, source `hook` and agent `bot`, without a delivery id.
pub(crate) fn event(id: &str) -> Event {
    Event {
        id: id.into(),
        session: "s".into(),
        source: "hook".into(),
        agent: "bot".into(),
        project: "/".into(),
        at: session::now(),
        body: "{}".into(),
        message: None,
        message_trimmed: false,
        delivery: None,
        dedup_until: None,
        fresh: false,
        rerun_of: None,
    }
}

/// An event of the source `hook` carrying the sender's delivery id `delivery`,
/// remembered until `until` (Unix seconds).
pub(super) fn delivered(id: &str, delivery: &str, until: u64) -> Event {
    Event {
        delivery: Some(delivery.into()),
        dedup_until: Some(until),
        ..event(id)
    }
}

/// Recovers `home` with no session writer to hand events to.
pub(super) fn recover_quietly(home: &Home) -> Result<(Writer, Recovery), StoreError> {
    recover(home, std::sync::mpsc::channel().0, &Default::default())
}
