//! The run queue: which accepted event runs next.
//!
//! Two rules: the events of one session run one at a time, in the order they were
//! accepted; and no agent has more than its `maxConcurrent` runs in flight. Everything
//! else waits, so a burst of thousands of events never forks thousands of agents.
//!
//! What waits is held in memory only within a bounded window (`window.rs`): runs in
//! flight plus a few thousand next ones, within shares per agent and per session. An
//! event from the store that does not fit stays in the queue on disk, and is read back
//! (`Store::scan`, one read at a time) when the window has room for it; so memory does
//! not grow with the backlog. Within the window, each agent's ready sessions take turns.

use crate::activity::Activity;
use crate::config::Config;
use crate::log::id;
use crate::runner;
use crate::session::{Line, Run, RunStatus};
use crate::store::{Event, Home, Job, Store};
use crate::window::{Limits, Position, Refill, Waiting, Window};
use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// How long a run whose session cannot be written waits before it tries again, at
/// first and at most.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What a run needs from the rest of the daemon.
#[derive(Clone)]
pub struct Context {
    pub home: Home,
    /// While it is `Config::unusable`, no run starts until a reload fixes the file.
    pub config: Arc<ArcSwap<Config>>,
    pub store: Store,
    pub activity: Arc<Activity>,
    /// How many runs dispatch holds in memory (`Limits::DEFAULT`; tests lower it).
    pub limits: Limits,
}

/// The waiting events start-up leaves in the queue for dispatch to read back, rather
/// than sending them over the channel: those from `start` up to `end`, where the
/// channel's take over.
#[derive(Debug, Default)]
pub struct Backlog {
    pub start: Position,
    pub end: Position,
    /// Events done before this start whose records may still be in the queue: reads
    /// from disk pass over them. (Events done since were in the window, which never
    /// reads an event twice.)
    pub done: HashSet<String>,
}

/// The runs the window admitted: waiting, or in flight.
#[derive(Default)]
struct Queues {
    /// Runs waiting, per session, in acceptance order.
    sessions: HashMap<String, VecDeque<Job>>,
    /// How many runs wait in `sessions`.
    waiting: usize,
    /// Sessions with a run in flight.
    busy: HashSet<String>,
    /// Per agent: sessions whose next event is for that agent and that are not busy, in
    /// the order they became ready.
    ready: HashMap<String, VecDeque<String>>,
    /// Per agent: runs in flight.
    running: HashMap<String, usize>,
}

impl Queues {
    fn push(&mut self, job: Job) {
        let session = job.session.clone();
        // Most sessions (`new_session`) only ever queue one run: start with room for one
        // rather than the default four, which is most of a backlog's memory.
        let queue = self
            .sessions
            .entry(session.clone())
            .or_insert_with(|| VecDeque::with_capacity(1));
        queue.push_back(job);
        self.waiting += 1;
        if queue.len() == 1 && !self.busy.contains(&session) {
            make_ready(&mut self.ready, &queue[0].agent, session);
        }
    }

    /// The next run that may start for `agent` under `cap`, marking its session busy.
    fn next(&mut self, agent: &str, cap: usize) -> Option<Job> {
        if !self.running.contains_key(agent) {
            self.running.insert(agent.to_owned(), 0);
        }
        let running = self.running.get_mut(agent)?;
        if *running >= cap {
            return None;
        }
        let session = self.ready.get_mut(agent)?.pop_front()?;
        let queue = self.sessions.get_mut(&session)?;
        let job = queue.pop_front()?;
        if queue.is_empty() {
            self.sessions.remove(&session);
        }
        *running += 1;
        self.waiting -= 1;
        self.busy.insert(session);
        Some(job)
    }

    /// Runs held, waiting or in flight: what the window counts.
    fn held(&self) -> usize {
        self.waiting + self.running.values().sum::<usize>()
    }

    /// A run ended: its session may go on, possibly with another agent.
    fn done(&mut self, session: &str, agent: &str) {
        if let Some(n) = self.running.get_mut(agent) {
            *n = n.saturating_sub(1);
        }
        self.busy.remove(session);
        if let Some(next) = self.sessions.get(session).and_then(|q| q.front()) {
            make_ready(&mut self.ready, &next.agent, session.to_owned());
        }
    }
}

/// Queues `session` to run its next event with `agent`. The agent's name is copied
/// only for its first ready session, not per event.
fn make_ready(ready: &mut HashMap<String, VecDeque<String>>, agent: &str, session: String) {
    match ready.get_mut(agent) {
        Some(sessions) => sessions.push_back(session),
        None => {
            ready.insert(agent.to_owned(), VecDeque::from([session]));
        }
    }
}

/// Runs events from `jobs` (the store's, in acceptance order) and from `backlog` until
/// `stop` turns true; then waits for the runs in flight, which end themselves (TERM,
/// then KILL) and stay pending for the next start.
pub async fn run(
    ctx: Context,
    mut jobs: mpsc::UnboundedReceiver<Vec<Job>>,
    backlog: Backlog,
    stop: watch::Receiver<bool>,
    mut reloaded: watch::Receiver<()>,
) {
    let mut queues = Queues::default();
    let mut window = Window::new(ctx.limits, backlog.start, backlog.end);
    // The end of the last event from the channel: a read from disk goes no further,
    // as the events past it are not in the window's count yet.
    let mut fed = backlog.end;
    let done = Arc::new(backlog.done);
    // Events from start-up whose session shows their message already (runs cut short),
    // while they wait on disk: a few at most, one per run in flight at the crash.
    let mut materialized = HashSet::new();
    let mut tasks: JoinSet<(String, String)> = JoinSet::new();
    let mut reads: JoinSet<Option<(Refill, Vec<Job>, Position)>> = JoinSet::new();
    let mut stop_rx = stop.clone();
    loop {
        if *stop_rx.borrow_and_update() {
            break;
        }
        debug_assert_eq!(
            queues.held(),
            window.held(),
            "the window counts what is held"
        );
        if reads.is_empty()
            && let Some(refill) = window.next_refill(fed)
        {
            reads.spawn(read_back(ctx.clone(), refill, done.clone(), stop.clone()));
        }
        tokio::select! {
            batch = jobs.recv() => match batch {
                Some(batch) => {
                    // Counted as the store accepted them, whether held or on disk.
                    ctx.activity.enqueued(batch.len());
                    for job in batch {
                        fed = fed.max(job.end());
                        let shown = job.materialized.then(|| job.event.clone());
                        match window.feed(job) {
                            Some(job) => queues.push(job),
                            None => materialized.extend(shown),
                        }
                    }
                    start_all(&ctx, &mut queues, &mut tasks, &stop);
                }
                None => break,
            },
            Some(joined) = tasks.join_next() => {
                if let Ok((session, agent)) = joined {
                    window.finished(&session, &agent);
                    queues.done(&session, &agent);
                    // The freed slot may serve this agent, and the session's next event
                    // may be for another one.
                    start_all(&ctx, &mut queues, &mut tasks, &stop);
                }
            }
            Some(read) = reads.join_next() => {
                if let Ok(Some((refill, found, stopped))) = read {
                    for mut job in window.refilled(&refill, found, stopped) {
                        job.materialized = materialized.remove(&job.event);
                        queues.push(job);
                    }
                    start_all(&ctx, &mut queues, &mut tasks, &stop);
                }
            }
            Ok(()) = reloaded.changed() => start_all(&ctx, &mut queues, &mut tasks, &stop),
            _ = stop_rx.changed() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Makes a read of waiting events from the queue, trying again (1 s, doubling up to
/// 30 s) while the queue cannot be read: the events stay on disk meanwhile, and no
/// other read starts before this one ends. `None` when lowkey stops first.
async fn read_back(
    ctx: Context,
    refill: Refill,
    done: Arc<HashSet<String>>,
    mut stop: watch::Receiver<bool>,
) -> Option<(Refill, Vec<Job>, Position)> {
    let mut wait = RETRY_FIRST;
    loop {
        match ctx.store.scan(&refill, done.clone()).await {
            Ok((found, stopped)) => return Some((refill, found, stopped)),
            Err(e) => tracing::error!(
                error = %e,
                "cannot read waiting events back from the queue; trying again in {}s",
                wait.as_secs()
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return None,
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
}

fn start_all(
    ctx: &Context,
    queues: &mut Queues,
    tasks: &mut JoinSet<(String, String)>,
    stop: &watch::Receiver<bool>,
) {
    let agents: Vec<String> = queues.ready.keys().cloned().collect();
    for agent in agents {
        start_ready(ctx, queues, tasks, &agent, stop);
    }
}

fn start_ready(
    ctx: &Context,
    queues: &mut Queues,
    tasks: &mut JoinSet<(String, String)>,
    agent: &str,
    stop: &watch::Receiver<bool>,
) {
    let cap = {
        let config = ctx.config.load();
        if config.unusable {
            return;
        }
        config.agents.get(agent).map_or(1, |a| a.max_concurrent)
    };
    while let Some(job) = queues.next(agent, cap) {
        ctx.activity.run_started();
        let ctx = ctx.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            match ctx.store.load(&job).await {
                Ok(event) => run_one(&ctx, &job, &event, stop).await,
                // Not marked done: the next start reads the queue afresh.
                Err(e) => tracing::error!(
                    session_id = %job.session,
                    event_id = %job.event,
                    error = %e,
                    "cannot read the queued event; it stays queued for the next start"
                ),
            }
            ctx.activity.run_ended();
            (job.session, job.agent)
        });
    }
}

async fn run_one(ctx: &Context, job: &Job, event: &Event, mut stop: watch::Receiver<bool>) {
    let (message, trimmed) = event.text();
    // The message goes into the session now, before the agent that may read it starts.
    if !job.materialized {
        let line = event.message_line(message.clone(), trimmed);
        if !write_message(ctx, event, line, &mut stop).await {
            return;
        }
    }
    // The agent is looked up when the run starts, so a reload that fixed its command
    // applies to events already waiting.
    let agent = ctx.config.load().agents.get(&event.agent).cloned();
    let outcome = match agent {
        None => runner::Outcome {
            error: Some(format!(
                "agent \"{}\" is not in the config any more; add it back under `agents`",
                event.agent
            )),
            ..runner::Outcome::new(RunStatus::Failed)
        },
        Some(agent) => match runner::spawn(&ctx.home, &agent, event) {
            Err(e) => runner::spawn_failed(&agent, &e),
            Ok(started) => {
                let record = Line::Run(Run {
                    pid: Some(started.pid()),
                    ..Run::new(&event.id, RunStatus::Started, &agent.name)
                });
                if let Err(e) = ctx.store.append(event, vec![record]).await {
                    tracing::error!(session_id = %event.session, event_id = %event.id, error = %e, "cannot record the run's start");
                }
                tracing::info!(
                    message_id = id::RUN_STARTED,
                    webhook_source = %event.source,
                    session_id = %event.session,
                    event_id = %event.id,
                    agent = %agent.name,
                    project = %event.project.display(),
                    pid = started.pid(),
                    "run started"
                );
                runner::wait(started, &agent, event, message, stop).await
            }
        },
    };
    let lines = outcome.lines(event);
    let exit_status = match (outcome.exit_code, outcome.signal) {
        (Some(code), _) => code.to_string(),
        (None, Some(sig)) => format!("signal {sig}"),
        (None, None) => "none".to_owned(),
    };
    let stored = if outcome.status == RunStatus::Interrupted {
        // Not final: the queue keeps the event, and it runs again at the next start.
        ctx.store.append(event, lines).await
    } else {
        ctx.store.finish(job, event, lines).await
    };
    if let Err(e) = stored {
        tracing::error!(session_id = %event.session, event_id = %event.id, error = %e, "cannot record the run's result; it runs again at the next start");
    }
    let duration_ms = outcome.duration.as_millis() as u64;
    if outcome.status == RunStatus::Finished {
        tracing::info!(
            message_id = id::RUN_FINISHED,
            webhook_source = %event.source,
            session_id = %event.session,
            event_id = %event.id,
            agent = %event.agent,
            project = %event.project.display(),
            exit_status = %exit_status,
            duration_ms,
            "run finished"
        );
    } else {
        tracing::warn!(
            message_id = id::RUN_FAILED,
            webhook_source = %event.source,
            session_id = %event.session,
            event_id = %event.id,
            agent = %event.agent,
            project = %event.project.display(),
            exit_status = %exit_status,
            duration_ms,
            run_status = outcome.status.as_str(),
            "run {}: {}",
            outcome.status.label(),
            outcome.error.as_deref().unwrap_or("the agent exited with an error")
        );
    }
}

/// Writes the event's message into its session, trying again (1 s, doubling up to 30 s)
/// while the session cannot be written, a full disk say: an agent whose work could not
/// be recorded would only have to run again, so the run waits. The session's later
/// events wait behind it, in order. Returns `false` when lowkey stops first; the event
/// stays queued for the next start.
async fn write_message(
    ctx: &Context,
    event: &Event,
    line: Line,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let mut wait = RETRY_FIRST;
    loop {
        match ctx.store.append(event, vec![line.clone()]).await {
            Ok(()) => return true,
            Err(e) => tracing::error!(
                session_id = %event.session,
                event_id = %event.id,
                error = %e,
                "cannot write the message into the session; the run waits {}s and tries again",
                wait.as_secs()
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return false,
        }
        wait = (wait * 2).min(RETRY_MAX);
    }
}
