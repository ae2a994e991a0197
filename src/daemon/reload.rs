//! SIGHUP: re-read the config and swap it in whole, or keep the old one.

use super::Daemon;
use crate::config::{self, Config, Lookup};
use crate::log::{Outside, escape, id};
use crate::systemd;
use arc_swap::ArcSwap;
use std::path::Path;
use std::sync::Arc;

impl Daemon {
    /// Reloads the config and tells systemd, with `READY=1` and the new status line.
    pub(super) fn reload(&mut self) {
        let error = reload(&self.config_path, &self.config);
        let reloaded = error.is_none();
        self.status.reloaded(error);
        if reloaded {
            // Runs held back by an unusable config may start now.
            let _ = self.reloaded.send(());
        }
    }
}

/// Re-reads the config and swaps it in; on failure keeps the old one. A good config
/// also ends the unusable state. Returns why it failed, if it did.
fn reload(path: &Path, config: &ArcSwap<Config>) -> Option<String> {
    // RELOADING=1 first: systemd 252 waits for READY=1 only if it hears this promptly.
    systemd::reloading();
    let old_listen = config.load().listen;
    match config::load(path, Lookup::Own) {
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
    }
}
