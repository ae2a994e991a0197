//! The state folder's layout: where each of lowkey's files lives.

use crate::session;
use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

/// The state folder's layout.
#[derive(Debug, Clone)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }

    pub fn sessions(&self) -> PathBuf {
        self.root.join("sessions")
    }

    pub fn queue(&self) -> PathBuf {
        self.root.join("queue")
    }

    /// Delivery ids seen recently, for dropping senders' retries.
    pub fn deliveries(&self) -> PathBuf {
        self.root.join("deliveries.jsonl")
    }

    pub fn session_file(&self, id: &str) -> PathBuf {
        self.sessions().join(session::file_name(id))
    }

    /// Creates the folders lowkey writes to, each 0700.
    pub fn create_dirs(&self) -> io::Result<()> {
        for dir in [self.root.clone(), self.sessions(), self.queue()] {
            DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        }
        Ok(())
    }
}
