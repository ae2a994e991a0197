//! The run queue: which accepted event runs next.
//!
//! Two rules: the events of one session run one at a time, in the order they were
//! accepted; and no agent has more than its `maxConcurrent` runs in flight. Everything
//! else waits here, so a burst of thousands of events never forks thousands of agents.

use crate::activity::Activity;
use crate::config::Config;
use crate::log::id;
use crate::runner;
use crate::session::{Line, Run, RunStatus};
use crate::store::{Event, Home, Job, Store};
use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// How long a run whose start cannot be marked in the queue waits before it tries
/// again, at first and at most.
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
}

#[derive(Default)]
struct Queues {
    /// Runs waiting, per session, in acceptance order.
    sessions: HashMap<String, VecDeque<Job>>,
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
        self.busy.insert(session);
        Some(job)
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

/// Runs events from `jobs` until `stop` turns true; then waits for the runs in flight,
/// which end themselves (TERM, then KILL) and stay pending for the next start.
pub async fn run(
    ctx: Context,
    mut jobs: mpsc::UnboundedReceiver<Vec<Job>>,
    stop: watch::Receiver<bool>,
    mut reloaded: watch::Receiver<()>,
) {
    let mut queues = Queues::default();
    let mut tasks: JoinSet<(String, String)> = JoinSet::new();
    let mut stop_rx = stop.clone();
    loop {
        if *stop_rx.borrow_and_update() {
            break;
        }
        tokio::select! {
            batch = jobs.recv() => match batch {
                Some(batch) => {
                    ctx.activity.enqueued(batch.len());
                    for job in batch {
                        queues.push(job);
                    }
                    start_all(&ctx, &mut queues, &mut tasks, &stop);
                }
                None => break,
            },
            Some(joined) = tasks.join_next() => {
                if let Ok((session, agent)) = joined {
                    queues.done(&session, &agent);
                    // The freed slot may serve this agent, and the session's next event
                    // may be for another one.
                    start_all(&ctx, &mut queues, &mut tasks, &stop);
                }
            }
            Ok(()) = reloaded.changed() => start_all(&ctx, &mut queues, &mut tasks, &stop),
            _ = stop_rx.changed() => {}
        }
    }
    while tasks.join_next().await.is_some() {}
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
    // The event's message is in its session already (the store hands on no job before).
    // The queue learns that the run starts before anything of it reaches the session.
    if !mark_started(ctx, event, &mut stop).await {
        return;
    }
    let (message, _) = event.text();
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

/// Marks in the queue that the event's run starts, trying again (1 s, doubling up to
/// 30 s) while the queue cannot be written, a full disk say: without the mark, start-up
/// would not look for the run's records in its session, so the run waits. The
/// session's later events wait behind it, in order. Returns `false` when lowkey stops
/// first; the event stays queued for the next start.
async fn mark_started(ctx: &Context, event: &Event, stop: &mut watch::Receiver<bool>) -> bool {
    let mut wait = RETRY_FIRST;
    loop {
        match ctx.store.started(event).await {
            Ok(()) => return true,
            Err(e) => tracing::error!(
                session_id = %event.session,
                event_id = %event.id,
                error = %e,
                "cannot mark the run's start in the queue; the run waits {}s and tries again",
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
