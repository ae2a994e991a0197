//! lowkey: the webhook daemon of a Lowkey agent box.
//!
//! See ARCHITECTURE.md for the map of these modules and the invariants they keep.

pub mod activity;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dispatch;
pub mod filter;
pub mod finish;
pub mod form;
#[doc(hidden)]
pub mod fuzz;
pub mod http;
pub mod init;
pub mod log;
pub mod runner;
pub mod secret;
pub mod send;
pub mod session;
pub mod signature;
pub mod store;
pub mod systemd;
pub mod view;
pub mod window;
