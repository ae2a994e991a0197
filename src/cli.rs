//! The command line: argument parsing, and each subcommand mapped to an exit code.

use crate::config::{self, ConfigError, Lookup, Severity};
use crate::daemon::{self, DaemonError};
use crate::init::{self, InitError};
use crate::log;
use crate::session;
use crate::store::Home;
use crate::view::{self, Found, FoundEvent};
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit codes, from sysexits(3) where one fits. Scripts may rely on them.
pub mod exit {
    pub const OK: u8 = 0;
    /// A runtime failure: cannot bind, cannot write the state folder, ...
    pub const FAILURE: u8 = 1;
    /// Bad arguments (clap's own code).
    pub const USAGE: u8 = 2;
    /// `sessions show`, `rerun`: no session (event), or more than one, matches; `send`:
    /// the payload cannot be read.
    pub const NO_INPUT: u8 = 66;
    /// `send`, `rerun`: the daemon is unreachable or answered other than 2xx.
    pub const UNAVAILABLE: u8 = 69;
    /// `init`: a config already exists.
    pub const CANT_CREATE: u8 = 73;
    /// The state folder cannot be read or written.
    pub const IO: u8 = 74;
    /// The config is missing, unreadable or invalid.
    pub const CONFIG: u8 = 78;
}

const EXIT_CODES: &str = "\
Exit codes:
  0   success
  1   runtime failure (e.g. the listen address is taken)
  2   bad command-line arguments
  66  sessions show, rerun: no session (event) matches, or a prefix matches several,
      which it lists; send: the payload file cannot be read
  69  send, rerun: the daemon cannot be reached, or it did not answer 2xx
  73  init: a config already exists (never overwritten)
  74  the state folder cannot be read or written
  78  the config is missing or invalid (lowkey check lists every problem)

Environment:
  LOWKEY_HOME  state folder (default ~/.lowkey)
  LOWKEY_LOG   log filter (default info), e.g. debug or lowkey=debug";

/// Authenticated webhooks become durable sessions that an AI agent works on.
#[derive(Debug, Parser)]
#[command(name = "lowkey", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// The config file [default: $LOWKEY_HOME/config.json].
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: take webhooks, store them, run agents (what the systemd units run).
    ///
    /// With no config yet, creates a working starter setup first (as `lowkey init`).
    ///
    /// SIGHUP re-reads the config: `systemctl reload` sends it, and outside systemd
    /// `kill -HUP <pid>` does. A broken config is logged and the old one keeps serving;
    /// a changed `listen` takes effect at the next start. SIGTERM or Ctrl-C stops it:
    /// requests in flight finish, and the agents' runs it ends run again at the next start.
    Serve {
        /// Address to listen on when systemd passes no socket [default: config `listen`, 127.0.0.1:7433].
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Create the state folder and a config with a fresh API key; never overwrites.
    Init,
    /// Validate the config and print every problem, like `nginx -t`.
    Check,
    /// Send a test webhook to the running daemon, signed the way the source expects.
    ///
    /// Adds the API key (unless the source uses "auth": "signature") and the source's
    /// signature headers made with its first secret, posts, and prints the answer.
    Send {
        /// The source, as named under `webhooks` in the config.
        source: String,
        /// The payload file, JSON or a form (`a=1&b=two+words`), or `-` for standard input
        /// [default: a small test payload].
        file: Option<PathBuf>,
        /// The daemon's base URL [default: http://<config listen>].
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// Read the sessions webhooks created.
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    /// List the most recent events, newest first: full event id, source, when lowkey
    /// accepted it, what became of its run, and its full session id.
    ///
    /// Outcomes: queued (accepted, no run yet), running, ok, failed (exit N), timed out,
    /// interrupted (lowkey stopped mid-run; it runs again). A rerun names the event it
    /// runs again.
    Events {
        /// Only the events of this source.
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
        /// How many events to show.
        #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// Print a JSON array instead of a table: objects with `event`, `source`, `at`,
        /// `outcome` (`queued`, `running`, `ok`, `failed`, `timed_out`, `interrupted`),
        /// `session`, and when they apply `exitCode`, `signal` and `rerunOf`.
        #[arg(long)]
        json: bool,
    },
    /// Run an event's agent again, on the same payload in the same session.
    ///
    /// Asks the running daemon (with the API key, as `lowkey send` reaches it), which
    /// queues a new event with the original's source and body that names the original
    /// as `rerunOf`, and prints the new event's id and session.
    Rerun {
        /// The event: its id as `lowkey events` prints it, or a unique prefix of that id
        /// (in any case).
        #[arg(value_name = "EVENT")]
        event: String,
        /// The daemon's base URL [default: http://<config listen>].
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List sessions, most recently active first, with full ids.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print one session as a readable transcript.
    Show {
        /// The session: its id as `sessions list` prints it, a unique prefix of that id
        /// (in any case), or `latest` for the most recently active session. A session
        /// whose id is exactly ID always wins, even over `latest`.
        #[arg(value_name = "ID")]
        id: String,
        /// Print the transcript's lines as a JSON array.
        #[arg(long)]
        json: bool,
    },
}

/// The clap definition, for the man page and shell completions.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let home = Home::new(config::default_home());
    let config_path = cli.config.clone().unwrap_or_else(|| home.config());
    let code = match cli.command {
        Command::Serve { listen } => serve(home, config_path, cli.config.is_none(), listen),
        Command::Init => init_command(&home, &config_path),
        Command::Check => check(&config_path),
        Command::Send { source, file, url } => send(&config_path, &source, file, url.as_deref()),
        Command::Sessions { command } => sessions(&home, command),
        Command::Events {
            source,
            limit,
            json,
        } => events(&home, source.as_deref(), limit as usize, json),
        Command::Rerun { event, url } => rerun(&home, &config_path, &event, url.as_deref()),
    };
    ExitCode::from(code)
}

fn serve(home: Home, config_path: PathBuf, default_config: bool, listen: Option<SocketAddr>) -> u8 {
    log::init();
    if default_config && !config_path.exists() {
        match init::init(&home, &config_path) {
            Ok(created) => {
                tracing::info!(path = %created.config.display(), "no config yet: created a starter setup with a demo source and agent");
                let send_url = listen
                    .filter(|addr| addr.to_string() != config::DEFAULT_LISTEN)
                    .map(send_url);
                // The key goes to a person at a terminal only, never to a journal or a file.
                if std::io::stderr().is_terminal() && !log::stderr_is_journal() {
                    eprintln!(
                        "\n{}\n",
                        init::first_webhook_hint(
                            &created.api_key,
                            &created.config,
                            send_url.as_deref()
                        )
                    );
                } else {
                    tracing::info!(
                        "{}",
                        init::first_webhook_log_hint(&created.config, send_url.as_deref())
                    );
                }
            }
            Err(e) => {
                tracing::error!("{e}");
                return exit::IO;
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(crate::log::worker_idle)
        .on_thread_stop(crate::log::thread_stopping)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return exit::FAILURE;
        }
    };
    let opts = daemon::Options {
        home,
        config_path,
        listen,
    };
    match runtime.block_on(daemon::serve(opts)) {
        Ok(()) => exit::OK,
        Err(e) => {
            tracing::error!("{}", log::Outside(&e));
            match e {
                DaemonError::Config(_) | DaemonError::Window(_) => exit::CONFIG,
                DaemonError::Store(_) => exit::IO,
                _ => exit::FAILURE,
            }
        }
    }
}

/// The URL `lowkey send` needs for a daemon started with `--listen addr`. Port 0 is
/// chosen when binding, so only the log's "listening on" line has it.
fn send_url(addr: SocketAddr) -> String {
    let addr = addr.to_string();
    match addr.strip_suffix(":0") {
        Some(host) => format!("http://{host}:<the port on the \"listening on\" line>"),
        None => format!("http://{addr}"),
    }
}

fn init_command(home: &Home, config_path: &std::path::Path) -> u8 {
    match init::init(home, config_path) {
        Ok(created) => {
            println!(
                "Created {} (mode 0600) and {} (mode 0700).\n",
                created.config.display(),
                home.root.display()
            );
            println!(
                "{}",
                init::first_webhook_hint(&created.api_key, &created.config, None)
            );
            println!(
                "\nNext: add your agents and webhook sources to the config, then run `lowkey check`."
            );
            exit::OK
        }
        Err(e @ InitError::Exists(_)) => {
            eprintln!("lowkey init: {e}");
            exit::CANT_CREATE
        }
        Err(e) => {
            eprintln!("lowkey init: {e}");
            exit::IO
        }
    }
}

fn check(config_path: &std::path::Path) -> u8 {
    // Agents are looked for as the service will look for them, not on the shell's PATH.
    match config::load(config_path, Lookup::Units) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                println!("{w}");
            }
            let c = &loaded.config;
            println!(
                "{}: ok ({} source{}, {} agent{}, {} warning{})",
                config_path.display(),
                c.sources.len(),
                if c.sources.len() == 1 { "" } else { "s" },
                c.agents.len(),
                if c.agents.len() == 1 { "" } else { "s" },
                loaded.warnings.len(),
                if loaded.warnings.len() == 1 { "" } else { "s" },
            );
            exit::OK
        }
        Err(ConfigError::Invalid { path, problems }) => {
            for p in &problems {
                println!("{p}");
            }
            let errors = problems
                .iter()
                .filter(|p| p.severity == Severity::Error)
                .count();
            println!(
                "{}: {errors} error{}, {} warning{}",
                path.display(),
                if errors == 1 { "" } else { "s" },
                problems.len() - errors,
                if problems.len() - errors == 1 {
                    ""
                } else {
                    "s"
                }
            );
            exit::CONFIG
        }
        Err(e @ ConfigError::Read { .. }) => {
            println!("error: {e}; run `lowkey init` to create one");
            exit::CONFIG
        }
        Err(e) => {
            println!("error: {e}");
            exit::CONFIG
        }
    }
}

fn send(
    config_path: &std::path::Path,
    source: &str,
    file: Option<PathBuf>,
    url: Option<&str>,
) -> u8 {
    let config = match config::load(config_path, Lookup::Own) {
        Ok(loaded) => loaded.config,
        Err(e) => {
            eprintln!("lowkey send: {e}");
            return exit::CONFIG;
        }
    };
    let body = match file.as_deref() {
        None => serde_json::to_vec(&serde_json::json!({
            "type": "lowkey.test",
            "id": format!("evt_test_{}", ulid::Ulid::new()),
            "message": "a test webhook sent by `lowkey send`",
        }))
        .expect("JSON serializes"),
        Some(p) if p.as_os_str() == "-" => {
            let mut buf = Vec::new();
            if let Err(e) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf) {
                eprintln!("lowkey send: cannot read standard input: {e}");
                return exit::NO_INPUT;
            }
            buf
        }
        Some(p) => match std::fs::read(p) {
            Ok(buf) => buf,
            Err(e) => {
                eprintln!("lowkey send: cannot read {}: {e}", p.display());
                return exit::NO_INPUT;
            }
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");
    match runtime.block_on(crate::send::send(&config, source, body, url)) {
        Ok(answer) => {
            println!("{}", answer.status);
            print!("{}", answer.body);
            if (200..300).contains(&answer.status) {
                exit::OK
            } else {
                exit::UNAVAILABLE
            }
        }
        Err(e @ crate::send::SendError::NoSource(_)) => {
            eprintln!("lowkey send: {e}");
            exit::CONFIG
        }
        Err(e) => {
            eprintln!("lowkey send: {e}");
            exit::UNAVAILABLE
        }
    }
}

/// How many of the sessions an ambiguous prefix matches `sessions show` lists.
const AMBIGUOUS_SHOWN: usize = 10;

fn sessions(home: &Home, command: SessionsCommand) -> u8 {
    match command {
        SessionsCommand::List { json } => match view::list(home) {
            Ok(rows) if json => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&rows).expect("rows serialize")
                );
                exit::OK
            }
            Ok(rows) => {
                if rows.is_empty() {
                    println!("no sessions yet in {}", home.sessions().display());
                } else {
                    print!("{}", view::render_list(&rows));
                }
                exit::OK
            }
            Err(e) => {
                eprintln!("lowkey: cannot read {}: {e}", home.sessions().display());
                exit::IO
            }
        },
        SessionsCommand::Show { id, json } => {
            if !session::is_path_safe_id(&id, session::MAX_SESSION_ID_LEN) {
                eprintln!(
                    "lowkey: \"{id}\" is not a session id; `lowkey sessions list` prints them"
                );
                return exit::NO_INPUT;
            }
            match view::find(home, &id) {
                Ok(Found::Session(lines)) if json => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&lines).expect("lines serialize")
                    );
                    exit::OK
                }
                Ok(Found::Session(lines)) => {
                    print!("{}", view::render_show(&lines));
                    exit::OK
                }
                Ok(Found::Nothing) => {
                    eprintln!(
                        "lowkey: no session \"{id}\", and no session id starts with it, in {}; `lowkey sessions list` prints the ids",
                        home.sessions().display()
                    );
                    exit::NO_INPUT
                }
                Ok(Found::NoSessions) => {
                    eprintln!(
                        "lowkey: no sessions yet in {}, so none is the latest",
                        home.sessions().display()
                    );
                    exit::NO_INPUT
                }
                Ok(Found::Ambiguous(rows)) => {
                    eprintln!(
                        "lowkey: \"{id}\" starts the ids of {} sessions; give more of the one you mean:",
                        rows.len()
                    );
                    let shown = &rows[..rows.len().min(AMBIGUOUS_SHOWN)];
                    eprint!("{}", view::render_list(shown));
                    if rows.len() > shown.len() {
                        eprintln!(
                            "... and {} more; `lowkey sessions list` prints them all",
                            rows.len() - shown.len()
                        );
                    }
                    exit::NO_INPUT
                }
                Err(e) => {
                    eprintln!(
                        "lowkey: cannot read session \"{id}\" in {}: {e}",
                        home.root.display()
                    );
                    exit::IO
                }
            }
        }
    }
}

fn events(home: &Home, source: Option<&str>, limit: usize, json: bool) -> u8 {
    let rows = match view::events(
        home,
        |row| source.is_none_or(|s| row.source == s),
        Some(limit),
    ) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("lowkey: cannot read {}: {e}", home.root.display());
            return exit::IO;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("rows serialize")
        );
    } else if rows.is_empty() {
        match source {
            Some(source) => println!("no events from source \"{source}\" yet"),
            None => println!("no events yet in {}", home.sessions().display()),
        }
    } else {
        print!("{}", view::render_events(&rows));
    }
    exit::OK
}

fn rerun(home: &Home, config_path: &std::path::Path, wanted: &str, url: Option<&str>) -> u8 {
    let config = match config::load(config_path, Lookup::Own) {
        Ok(loaded) => loaded.config,
        Err(e) => {
            eprintln!("lowkey rerun: {e}");
            return exit::CONFIG;
        }
    };
    // Event ids go into the request's path.
    let is_id = |id: &str| session::is_path_safe_id(id, session::MAX_SESSION_ID_LEN);
    if !is_id(wanted) {
        eprintln!("lowkey rerun: \"{wanted}\" is not an event id; `lowkey events` prints them");
        return exit::NO_INPUT;
    }
    let row = match view::find_event(home, wanted) {
        Ok(FoundEvent::Event(row)) if is_id(&row.event) => row,
        Ok(FoundEvent::Event(row)) => {
            eprintln!(
                "lowkey rerun: event \"{}\" in session {} has an id lowkey never makes, so it cannot be named to the daemon",
                row.event, row.session
            );
            return exit::NO_INPUT;
        }
        Ok(FoundEvent::Nothing) => {
            eprintln!(
                "lowkey rerun: no event \"{wanted}\", and no event id starts with it, in {}; `lowkey events` prints the ids",
                home.root.display()
            );
            return exit::NO_INPUT;
        }
        Ok(FoundEvent::Ambiguous(rows)) => {
            eprintln!(
                "lowkey rerun: \"{wanted}\" starts the ids of {} events; give more of the one you mean:",
                rows.len()
            );
            let shown = &rows[..rows.len().min(AMBIGUOUS_SHOWN)];
            eprint!("{}", view::render_events(shown));
            if rows.len() > shown.len() {
                eprintln!("... and {} more", rows.len() - shown.len());
            }
            return exit::NO_INPUT;
        }
        Err(e) => {
            eprintln!("lowkey rerun: cannot read {}: {e}", home.root.display());
            return exit::IO;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");
    match runtime.block_on(crate::send::rerun(&config, &row.event, &row.session, url)) {
        Ok(answer) if (200..300).contains(&answer.status) => {
            let v: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
            let new = v["event"].as_str().unwrap_or("?");
            let session = v["session"].as_str().unwrap_or(&row.session);
            println!(
                "rerun of {} queued as event {new} in session {session}",
                row.event
            );
            println!("follow it with: lowkey sessions show {session}");
            exit::OK
        }
        Ok(answer) => {
            let v: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
            let text = v["error"].as_str().unwrap_or(answer.body.trim());
            eprintln!(
                "lowkey rerun: the daemon answered {}: {text}",
                answer.status
            );
            exit::UNAVAILABLE
        }
        Err(e) => {
            eprintln!("lowkey rerun: {e}");
            exit::UNAVAILABLE
        }
    }
}
