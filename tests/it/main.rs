//! The one integration-test binary: the real `lowkey` over real HTTP, with real agent
//! scripts and real files.

mod dedup;
mod disk;
mod forms;
mod journald;
mod limits;
mod senders;
mod signatures;
mod support;
mod systemd;
mod templates;

mod campaign;
mod helpers;
mod hostile;

mod agents;
mod auth;
mod config;
mod crash;
mod events;
mod files;
mod filing;
mod filters;
mod finish;
mod fuzz;
mod http;
mod logging;
mod messages;
mod recovery;
mod runs;
mod sessions;
mod shipped;

mod smoke {
    use crate::support::*;

    #[test]
    fn a_webhook_becomes_a_session_the_agent_answers() {
        let home = Home::with_agent("cat >/dev/null; echo pong");
        let daemon = home.serve();
        let (session, event) = accept(&daemon, "hook", r#"{"ping":1}"#);
        daemon.wait_run_end(&event);
        let lines = home.session(&session);
        assert_eq!(lines[0]["type"], "session");
        assert!(
            lines
                .iter()
                .any(|l| l["role"] == "agent" && l["text"] == "pong"),
            "{lines:#?}"
        );
    }
}
