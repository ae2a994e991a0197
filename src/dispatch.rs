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
use crate::finish::Notifier;
use crate::log::id;
use crate::runner;
use crate::session::{Line, Run, RunStatus};
use crate::store::{Backlog, Event, Home, Job, Passed, Store, StoreError};
use crate::window::{Limits, Position, Refill, Waiting, Window};
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
    /// How many runs dispatch holds in memory (`Limits::DEFAULT`; tests lower it).
    pub limits: Limits,
    /// Runs each final result's `onFinish`, outside the runs' slots.
    pub notifier: Arc<Notifier>,
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
/// then KILL) and stay pending for the next start, and gives the `onFinish`
/// notifications in flight their short while (`finish::DRAIN`).
pub async fn run(
    ctx: Context,
    mut jobs: mpsc::UnboundedReceiver<Vec<Job>>,
    backlog: Backlog,
    stop: watch::Receiver<bool>,
    mut reloaded: watch::Receiver<()>,
) {
    let mut queues = Queues::default();
    let mut window = Window::new(ctx.limits, backlog.start, backlog.end);
    // The end of the last event from the channel: a read from disk stops there, as the
    // events past it have not come over the channel yet, and the window decides on them
    // when they do.
    let mut fed = backlog.end;
    let passed = backlog.passed;
    ctx.activity.enqueued(backlog.waiting);
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
            reads.spawn(read_back(ctx.clone(), refill, passed.clone(), stop.clone()));
        }
        tokio::select! {
            batch = jobs.recv() => match batch {
                Some(batch) => {
                    // Counted as the store accepted them, whether held or on disk.
                    ctx.activity.enqueued(batch.len());
                    for job in batch {
                        fed = fed.max(job.end());
                        if let Some(job) = window.feed(job) {
                            queues.push(job);
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
                    for job in window.refilled(&refill, found, stopped) {
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
    ctx.notifier.drain().await;
}

/// Makes a read of waiting events from the queue, trying again while the queue cannot
/// be read: the events stay on disk meanwhile, and no other read starts before this one
/// ends. `None` when lowkey stops first.
async fn read_back(
    ctx: Context,
    refill: Refill,
    passed: Arc<Passed>,
    mut stop: watch::Receiver<bool>,
) -> Option<(Refill, Vec<Job>, Position)> {
    let (found, stopped) = until_stored(
        &mut stop,
        || ctx.store.scan(&refill, passed.clone()),
        |e, wait| {
            tracing::error!(
                error = %e,
                "cannot read waiting events back from the queue; trying again in {}s",
                wait.as_secs()
            )
        },
    )
    .await?;
    Some((refill, found, stopped))
}

/// Calls `attempt` until it succeeds, logging each failure with `failed` and waiting
/// before the next try (1 s, doubling up to 30 s); `None` when lowkey stops first.
async fn until_stored<T, F: Future<Output = Result<T, StoreError>>>(
    stop: &mut watch::Receiver<bool>,
    mut attempt: impl FnMut() -> F,
    failed: impl Fn(&StoreError, Duration),
) -> Option<T> {
    let mut wait = RETRY_FIRST;
    loop {
        match attempt().await {
            Ok(done) => return Some(done),
            Err(e) => failed(&e, wait),
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
                Ok(event) => run_one(&ctx, &job, event, stop).await,
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

async fn run_one(ctx: &Context, job: &Job, event: Event, mut stop: watch::Receiver<bool>) {
    // The event's message is in its session already (the store hands on no job before).
    // The queue learns that the run starts before anything of it reaches the session.
    if !mark_started(ctx, &event, &mut stop).await {
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
        Some(agent) => match runner::spawn(&ctx.home, &agent, &event) {
            Err(e) => runner::spawn_failed(&agent.command[0], &e),
            Ok(started) => {
                let record = Line::Run(Run {
                    pid: Some(started.pid()),
                    ..Run::new(&event.id, RunStatus::Started, &agent.name)
                });
                if let Err(e) = ctx.store.append(&event, vec![record]).await {
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
                runner::wait(started, &event, message, stop).await
            }
        },
    };
    let lines = outcome.lines(&event);
    let exit_status = match (outcome.exit_code, outcome.signal) {
        (Some(code), _) => code.to_string(),
        (None, Some(sig)) => format!("signal {sig}"),
        (None, None) => "none".to_owned(),
    };
    let stored = if outcome.status == RunStatus::Interrupted {
        // Not final: the queue keeps the event, and it runs again at the next start.
        ctx.store.append(&event, lines).await
    } else {
        ctx.store.finish(job, &event, lines).await
    };
    // A run cut short, or one whose result is not on disk, runs again and tells its
    // onFinish then.
    let notify = match stored {
        Ok(()) => outcome.status.is_final(),
        Err(e) => {
            tracing::error!(session_id = %event.session, event_id = %event.id, error = %e, "cannot record the run's result; it runs again at the next start");
            false
        }
    };
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
    if notify {
        ctx.notifier.notify(&ctx.config.load(), event, outcome);
    }
}

/// Marks in the queue that the event's run starts, trying again (1 s, doubling up to
/// 30 s) while the queue cannot be written, a full disk say: without the mark, start-up
/// would not look for the run's records in its session, so the run waits. The
/// session's later events wait behind it, in order. Returns `false` when lowkey stops
/// first; the event stays queued for the next start.
async fn mark_started(ctx: &Context, event: &Event, stop: &mut watch::Receiver<bool>) -> bool {
    until_stored(
        stop,
        || ctx.store.started(event),
        |e, wait| {
            tracing::error!(
                session_id = %event.session,
                event_id = %event.id,
                error = %e,
                "cannot mark the run's start in the queue; the run waits {}s and tries again",
                wait.as_secs()
            )
        },
    )
    .await
    .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{self, Role};
    use crate::store::{WriterThread, queued};
    use std::sync::atomic::Ordering;
    use tokio::task::JoinHandle;

    /// A window far smaller than the backlogs below, so most events wait on disk.
    const SMALL: Limits = Limits {
        total: 6,
        per_agent: 4,
        per_session: 2,
    };

    /// Dispatch over a real store in `home`, started as the daemon starts it.
    struct Running {
        ctx: Context,
        dispatch: JoinHandle<()>,
        stop: watch::Sender<bool>,
        _reload: watch::Sender<()>,
        writer: WriterThread,
    }

    impl Running {
        fn start(home: &Home, agents: serde_json::Value, limits: Limits) -> Running {
            let text = serde_json::json!({
                "apiKey": "lk_right",
                "agents": agents,
                "defaultAgent": "bot",
                "webhooks": { "hook": { "project": "/tmp" } },
            });
            let config = crate::config::from_json(&text);
            let (tx, rx) = mpsc::unbounded_channel();
            let (store, writer, recovery) = Store::open(home, tx).unwrap();
            let ctx = Context {
                home: home.clone(),
                config: Arc::new(ArcSwap::from_pointee(config)),
                store,
                activity: Arc::new(Activity::default()),
                limits,
                notifier: Notifier::new(home.clone()),
            };
            let (stop, stopped) = watch::channel(false);
            let (reload, reloads) = watch::channel(());
            let dispatch = tokio::spawn(run(ctx.clone(), rx, recovery.backlog, stopped, reloads));
            Running {
                ctx,
                dispatch,
                stop,
                _reload: reload,
                writer,
            }
        }

        /// Files events one after the other, each durable before the next.
        async fn file(&self, events: Vec<Event>) {
            for event in events {
                self.ctx.store.ingest(event).await.unwrap();
            }
        }

        /// Waits until `settled` holds, looking each time the activity counters change.
        /// Dispatch ending first (a broken assertion in it) fails the test.
        async fn until(&mut self, settled: impl Fn(&Activity) -> bool) {
            let activity = self.ctx.activity.clone();
            loop {
                let changed = activity.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                activity.take_changed();
                if settled(&activity) {
                    return;
                }
                tokio::select! {
                    () = changed => {}
                    ended = &mut self.dispatch => panic!("dispatch ended: {ended:?}"),
                }
            }
        }

        /// Waits until no run is queued or in flight and the queue holds nothing pending.
        async fn until_drained(&mut self, filed: usize) {
            let home = self.ctx.home.clone();
            self.until(|a| {
                let queued = a.queued.load(Ordering::SeqCst);
                assert!(queued <= filed, "{queued} queued of {filed} filed");
                queued == 0 && a.running.load(Ordering::SeqCst) == 0 && queued_ids(&home).is_empty()
            })
            .await;
        }

        async fn stop(self) {
            self.stop.send(true).unwrap();
            self.dispatch.await.unwrap();
            drop(self.ctx);
            let writer = self.writer;
            tokio::task::spawn_blocking(move || writer.join())
                .await
                .unwrap();
        }
    }

    fn queued_ids(home: &Home) -> Vec<String> {
        queued(home).unwrap().into_iter().map(|e| e.id).collect()
    }

    fn event(id: &str, session: &str, agent: &str, fresh: bool) -> Event {
        Event {
            session: session.into(),
            agent: agent.into(),
            fresh,
            ..crate::store::testing::event(id)
        }
    }

    /// The session's user messages (event ids, in file order), and each event's run
    /// records.
    fn transcript(home: &Home, session: &str) -> (Vec<String>, HashMap<String, Vec<RunStatus>>) {
        let mut messages = Vec::new();
        let mut runs: HashMap<String, Vec<RunStatus>> = HashMap::new();
        for line in session::read(&home.session_file(session)).unwrap() {
            match line {
                Line::Message(m) if m.role == Role::User => messages.push(m.event),
                Line::Run(r) => runs.entry(r.event).or_default().push(r.status),
                _ => {}
            }
        }
        (messages, runs)
    }

    /// Checks that every event ran to its end once, after its message, which its session
    /// shows once and in the order the events were filed; `again` ran twice (cut short,
    /// then whole).
    fn check_ran_once(home: &Home, filed: &[Event], again: &[&str]) {
        let mut sessions: Vec<&str> = filed.iter().map(|e| e.session.as_str()).collect();
        sessions.dedup();
        sessions.sort();
        sessions.dedup();
        for session in sessions {
            let (messages, runs) = transcript(home, session);
            let expected: Vec<String> = filed
                .iter()
                .filter(|e| e.session == session)
                .map(|e| e.id.clone())
                .collect();
            assert_eq!(
                messages, expected,
                "session {session}: each message once, in order"
            );
            for id in &expected {
                let once = [RunStatus::Started, RunStatus::Finished];
                let twice = [
                    RunStatus::Started,
                    RunStatus::Interrupted,
                    RunStatus::Started,
                    RunStatus::Finished,
                ];
                let statuses: &[RunStatus] = if again.contains(&id.as_str()) {
                    &twice
                } else {
                    &once
                };
                assert_eq!(runs[id], statuses, "event {id}");
            }
        }
    }

    #[tokio::test]
    async fn a_backlog_beyond_the_window_runs_once_each_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let agents = serde_json::json!({
            "bot": { "command": ["cat"], "maxConcurrent": 2 },
            "other": { "command": ["cat"] },
        });
        let mut running = Running::start(&home, agents, SMALL);
        // Four sessions whose events alternate between two agents, each filed by its
        // own task, and events each in a session of its own, for both agents: many
        // times what the window holds, all at once.
        let mut senders = JoinSet::new();
        let mut filed = Vec::new();
        for s in 0..5 {
            let events: Vec<Event> = (0..40)
                .map(|n| {
                    let agent = if n % 2 == 0 { "bot" } else { "other" };
                    if s == 4 {
                        event(&format!("F{n:02}"), &format!("fresh-{n}"), agent, true)
                    } else {
                        event(&format!("S{s}-{n:02}"), &format!("s{s}"), agent, false)
                    }
                })
                .collect();
            filed.extend(events.clone());
            let store = running.ctx.store.clone();
            senders.spawn(async move {
                for event in events {
                    store.ingest(event).await.unwrap();
                }
            });
        }
        senders.join_all().await;
        running.until_drained(filed.len()).await;
        check_ran_once(&home, &filed, &[]);
        running.stop().await;
    }

    #[tokio::test]
    async fn a_backlog_left_at_a_stop_runs_once_each_after_the_restart() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let blocking = serde_json::json!({
            "bot": { "command": ["cat"] },
            "a": { "command": ["sleep", "1000"] },
            "b": { "command": ["sleep", "1000"] },
        });
        let mut running = Running::start(&home, blocking, SMALL);
        // x-0 runs with `a`; x-1 waits for its session, so y-0 runs with `b`; the
        // z's wait for `b`; the fresh events in between run to their end.
        let mut filed = vec![
            event("x-0", "x", "a", false),
            event("x-1", "x", "b", false),
            event("y-0", "y", "b", false),
        ];
        for n in 0..6 {
            filed.push(event(&format!("f-{n}"), &format!("f-{n}"), "bot", true));
            filed.push(event(&format!("z-{n}"), &format!("z-{n}"), "b", false));
        }
        running.file(filed.clone()).await;
        let waiting = 3 + 6;
        running
            .until(|a| a.running.load(Ordering::SeqCst) == 2 && queued_ids(&home).len() == waiting)
            .await;
        running.stop().await;

        // Start again with room for two: x-0 and x-1 are held; y-0, whose session
        // shows its message already, and the z's are read back from the queue,
        // passing over the fresh events that ran before the stop.
        let all_cat = serde_json::json!({
            "bot": { "command": ["cat"] },
            "a": { "command": ["cat"] },
            "b": { "command": ["cat"] },
        });
        let room_for_two = Limits {
            total: 2,
            per_agent: 2,
            per_session: 2,
        };
        let mut running = Running::start(&home, all_cat, room_for_two);
        running.until_drained(waiting).await;
        check_ran_once(&home, &filed, &["x-0", "y-0"]);
        running.stop().await;
    }
}
