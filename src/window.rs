//! Which waiting runs are held in memory.
//!
//! Every accepted event is on disk, in the queue, in acceptance order. Dispatch holds
//! only a bounded window of them: at most `total` in all, `per_agent` per agent and
//! `per_session` per session, counting runs in flight. The rest stay on disk until
//! there is room, and are read back in queue order. So a backlog of a million events
//! costs the memory of a few thousand, one flooded session or agent cannot fill the
//! window for everyone else, and each session's events still run in the order they
//! were accepted.
//!
//! The window passes over the queue once, in order, with its *global cursor*: the live
//! feed of newly filed events while it keeps up, a read of the queue from disk when it
//! fell behind (the window was full). An event it passes is either admitted, or left
//! on disk in the care of one *cursor*, the first place a later read must start from:
//!
//! - a session's cursor: the session reached its share, or its agent did. Every later
//!   event of that session is left to the cursor too, so that none of them overtakes an
//!   earlier one, whatever its agent;
//! - an agent's cursor: for events that each start a session of their own (`fresh`),
//!   which have no order to keep with anything, when their agent reached its share;
//! - the global cursor itself, when the window is full.
//!
//! So every waiting event not in memory is after exactly one cursor, and is read back
//! exactly once: by a read from the cursor that owns it (refill). Nothing here reads a
//! file; dispatch does the reading and hands the window what it found.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};

/// A place in the queue, ordered as the queue is: segment number, then byte offset.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Position {
    pub seq: u64,
    pub offset: u64,
}

/// What the window needs to know of a waiting run.
pub trait Waiting {
    /// Where its event starts in the queue.
    fn position(&self) -> Position;
    /// Where the next record after its event starts.
    fn end(&self) -> Position;
    fn session(&self) -> &str;
    fn agent(&self) -> &str;
    /// Its session was made for this event alone, so it has no order to keep with any
    /// other event.
    fn fresh(&self) -> bool;
}

/// How many runs the window holds, in flight or waiting.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub total: usize,
    pub per_agent: usize,
    pub per_session: usize,
}

impl Limits {
    /// About 2 MiB of jobs at most. A session holds a few more than the one it runs, so
    /// its next run starts without a read; an agent a quarter of the window, so four
    /// flooded agents leave room for others still.
    pub const DEFAULT: Limits = Limits {
        total: 16_384,
        per_agent: 4_096,
        per_session: 32,
    };

    /// The limits `LOWKEY_WINDOW` sets ("total,per agent,per session", such as
    /// "16384,4096,32"), or the default. An agent runs at most `per_agent` at once,
    /// whatever its `maxConcurrent`.
    pub fn from_env() -> Result<Limits, String> {
        match std::env::var("LOWKEY_WINDOW") {
            Ok(value) => Limits::parse(&value).ok_or_else(|| {
                format!(
                    "LOWKEY_WINDOW={value:?} is not three whole numbers \"total,per agent,per session\", each at least 1 and none above the one before it (such as \"16384,4096,32\"); fix it or unset it for the default"
                )
            }),
            Err(_) => Ok(Limits::DEFAULT),
        }
    }

    fn parse(value: &str) -> Option<Limits> {
        let n: Vec<usize> = value
            .split(',')
            .map(|n| n.trim().parse().ok())
            .collect::<Option<_>>()?;
        let [total, per_agent, per_session] = n[..] else {
            return None;
        };
        (per_session >= 1 && per_agent >= per_session && total >= per_agent).then_some(Limits {
            total,
            per_agent,
            per_session,
        })
    }
}

/// Who a read from disk is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Cursor {
    /// The tail of the queue the window has not passed yet.
    Global,
    /// The `fresh` events of this agent it passed and left on disk.
    Agent(String),
    /// The events of this session it passed and left on disk.
    Session(String),
}

/// A read of the queue to make: the events of `cursor`'s kind from `from` (inclusive)
/// to `to` (exclusive), and at most `limit` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refill {
    pub cursor: Cursor,
    pub from: Position,
    pub to: Position,
    pub limit: usize,
}

impl Refill {
    /// Whether an event belongs to this read.
    pub fn wants(&self, job: &impl Waiting) -> bool {
        match &self.cursor {
            Cursor::Global => true,
            Cursor::Agent(agent) => job.fresh() && job.agent() == agent,
            Cursor::Session(session) => job.session() == session,
        }
    }
}

/// What the window decided about an event its global cursor passed.
#[derive(Debug, PartialEq, Eq)]
enum Offer {
    Admit,
    /// Left to a session's or an agent's cursor.
    Leave,
    /// The window is full: the global cursor stops here.
    Full,
}

#[derive(Debug)]
pub struct Window {
    limits: Limits,
    held: usize,
    per_agent: HashMap<String, usize>,
    per_session: HashMap<String, usize>,
    /// Where the global cursor stopped, while it reads the queue from disk; `None` while
    /// it follows the live feed.
    global: Option<Position>,
    /// The end of what the global cursor has passed. Reads for sessions and agents stop
    /// here: past it, the global cursor still has to decide.
    passed: Position,
    /// While reading from disk: the end of the last event the live feed brought (and
    /// the window dropped, as the read will find it).
    fed: Option<Position>,
    agents: HashMap<String, Position>,
    sessions: HashMap<String, Position>,
    /// Sessions whose cursor stopped because their agent had no room: they are read
    /// again when it has.
    blocked: HashMap<String, HashSet<String>>,
    /// Cursors that stopped because the window was full: they are read again when it
    /// has room.
    waiting_room: HashSet<Cursor>,
    /// Cursors worth reading from, each once, in the order they became so.
    due: VecDeque<Cursor>,
    queued: HashSet<Cursor>,
}

impl Window {
    /// A window whose first read of the queue is from `start`, the oldest record that may
    /// still wait, to `end`, where the live feed takes over.
    pub fn new(limits: Limits, start: Position, end: Position) -> Window {
        let behind = start < end;
        let mut window = Window {
            limits,
            held: 0,
            per_agent: HashMap::new(),
            per_session: HashMap::new(),
            global: behind.then_some(start),
            passed: if behind { start } else { end },
            fed: None,
            agents: HashMap::new(),
            sessions: HashMap::new(),
            blocked: HashMap::new(),
            waiting_room: HashSet::new(),
            due: VecDeque::new(),
            queued: HashSet::new(),
        };
        if behind {
            window.make_due(Cursor::Global);
        }
        window
    }

    /// Runs held, in flight or waiting.
    pub fn held(&self) -> usize {
        self.held
    }

    /// A newly filed event from the live feed. Returns it when it is admitted; else it
    /// stays on disk, for a later read.
    pub fn feed<J: Waiting>(&mut self, job: J) -> Option<J> {
        if self.global.is_some() {
            // The read from disk will reach it.
            self.fed = self.fed.max(Some(job.end()));
            self.make_due(Cursor::Global);
            return None;
        }
        if job.position() < self.passed {
            // A read from disk passed it already.
            return None;
        }
        match self.offer(&job) {
            Offer::Admit => {
                self.passed = job.end();
                Some(job)
            }
            Offer::Leave => {
                self.passed = job.end();
                None
            }
            Offer::Full => {
                self.passed = job.position();
                self.global = Some(job.position());
                None
            }
        }
    }

    /// The next read from disk worth making, if any. At most one should be under way
    /// at a time: hand its result to `refilled` before asking for the next.
    pub fn next_refill(&mut self, end: Position) -> Option<Refill> {
        while let Some(cursor) = self.due.pop_front() {
            self.queued.remove(&cursor);
            if let Some(refill) = self.refill_for(cursor, end) {
                return Some(refill);
            }
        }
        None
    }

    fn refill_for(&mut self, cursor: Cursor, end: Position) -> Option<Refill> {
        let room = self.limits.total - self.held;
        if room == 0 {
            self.waiting_room.insert(cursor);
            return None;
        }
        let (from, to, limit) = match &cursor {
            Cursor::Global => (self.global?, end, room),
            Cursor::Agent(agent) => {
                let share = self.limits.per_agent - self.count(&self.per_agent, agent);
                (*self.agents.get(agent)?, self.passed, share.min(room))
            }
            Cursor::Session(session) => {
                let share = self.limits.per_session - self.count(&self.per_session, session);
                (*self.sessions.get(session)?, self.passed, share.min(room))
            }
        };
        (limit > 0 && from < to).then_some(Refill {
            cursor,
            from,
            to,
            limit,
        })
    }

    /// What a read found: the events it wanted, in queue order, and where it stopped
    /// (`refill.to`, or the end of the last event when it found `limit`). Returns the
    /// events admitted, in order.
    pub fn refilled<J: Waiting>(
        &mut self,
        refill: &Refill,
        found: Vec<J>,
        stopped: Position,
    ) -> Vec<J> {
        let mut admitted = Vec::with_capacity(found.len());
        let mut resume = stopped;
        let mut stopped_early = false;
        for job in found {
            let offer = match &refill.cursor {
                Cursor::Global => self.offer(&job),
                Cursor::Agent(_) | Cursor::Session(_) => self.admit_for(&refill.cursor, &job),
            };
            match offer {
                Offer::Admit => admitted.push(job),
                Offer::Leave => {}
                Offer::Full => {
                    resume = job.position();
                    stopped_early = true;
                    break;
                }
            }
        }
        match &refill.cursor {
            Cursor::Global => {
                self.passed = self.passed.max(resume);
                // Caught up, unless the feed brought events past where the read ended
                // while it was under way: those the next read takes.
                if resume >= refill.to && self.fed.is_none_or(|fed| fed <= resume) {
                    self.global = None;
                    self.fed = None;
                } else {
                    self.global = Some(resume);
                    self.make_due(Cursor::Global);
                }
            }
            Cursor::Agent(key) | Cursor::Session(key) => {
                let cursors = match &refill.cursor {
                    Cursor::Agent(_) => &mut self.agents,
                    _ => &mut self.sessions,
                };
                if resume >= self.passed {
                    cursors.remove(key);
                } else {
                    cursors.insert(key.clone(), resume);
                    if !stopped_early {
                        // The read ended at its bound, not at an event it could not
                        // take: there may be more to take already.
                        self.make_due(refill.cursor.clone());
                    }
                }
            }
        }
        admitted
    }

    /// A held run ended: its place goes to whoever waits for it.
    pub fn finished(&mut self, session: &str, agent: &str) {
        self.held -= 1;
        let per_session = release(&mut self.per_session, session);
        let per_agent = release(&mut self.per_agent, agent);
        if self.sessions.contains_key(session) && per_session <= self.limits.per_session / 2 {
            self.make_due(Cursor::Session(session.to_owned()));
        }
        if per_agent <= self.limits.per_agent / 2 {
            if self.agents.contains_key(agent) {
                self.make_due(Cursor::Agent(agent.to_owned()));
            }
            for session in self.blocked.remove(agent).unwrap_or_default() {
                self.make_due(Cursor::Session(session));
            }
        }
        // Any room will do, not a batch's worth: the runs held may all be waiting for
        // slow agents, and then the room would never grow while the events of others
        // wait on disk. Reads are one at a time, so room freed during one gathers for
        // the next.
        if self.held < self.limits.total {
            for cursor in std::mem::take(&mut self.waiting_room) {
                self.make_due(cursor);
            }
        }
    }

    /// Decides about an event the global cursor passes.
    fn offer(&mut self, job: &impl Waiting) -> Offer {
        if self.sessions.contains_key(job.session()) {
            return Offer::Leave;
        }
        if job.fresh() && self.agents.contains_key(job.agent()) {
            return Offer::Leave;
        }
        if self.held >= self.limits.total {
            return Offer::Full;
        }
        let agent_full = self.count(&self.per_agent, job.agent()) >= self.limits.per_agent;
        if agent_full && job.fresh() {
            self.agents.insert(job.agent().to_owned(), job.position());
            return Offer::Leave;
        }
        if agent_full || self.count(&self.per_session, job.session()) >= self.limits.per_session {
            self.sessions
                .insert(job.session().to_owned(), job.position());
            if agent_full {
                self.block(job);
            }
            return Offer::Leave;
        }
        self.hold(job);
        Offer::Admit
    }

    /// Decides about an event a read for a session's or an agent's cursor found. `Full`
    /// here means that cursor stops at the event.
    fn admit_for(&mut self, cursor: &Cursor, job: &impl Waiting) -> Offer {
        let agent_full = self.count(&self.per_agent, job.agent()) >= self.limits.per_agent;
        let session_full = match cursor {
            Cursor::Session(session) => {
                self.count(&self.per_session, session) >= self.limits.per_session
            }
            _ => false,
        };
        if self.held >= self.limits.total || agent_full || session_full {
            if agent_full && matches!(cursor, Cursor::Session(_)) {
                self.block(job);
            }
            if self.held >= self.limits.total {
                self.waiting_room.insert(cursor.clone());
            }
            return Offer::Full;
        }
        self.hold(job);
        Offer::Admit
    }

    fn hold(&mut self, job: &impl Waiting) {
        self.held += 1;
        *self.per_agent.entry(job.agent().to_owned()).or_default() += 1;
        *self
            .per_session
            .entry(job.session().to_owned())
            .or_default() += 1;
    }

    /// Notes that a session's cursor waits for room at its agent.
    fn block(&mut self, job: &impl Waiting) {
        self.blocked
            .entry(job.agent().to_owned())
            .or_default()
            .insert(job.session().to_owned());
    }

    fn make_due(&mut self, cursor: Cursor) {
        if self.queued.insert(cursor.clone()) {
            self.due.push_back(cursor);
        }
    }

    fn count(&self, counts: &HashMap<String, usize>, key: &str) -> usize {
        counts.get(key).copied().unwrap_or(0)
    }
}

/// Counts one fewer for `key`, forgetting it at zero; returns what is left.
fn release(counts: &mut HashMap<String, usize>, key: &str) -> usize {
    let Some(n) = counts.get_mut(key) else {
        return 0;
    };
    *n -= 1;
    let left = *n;
    if left == 0 {
        counts.remove(key);
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowkey_window_takes_three_limits_each_within_the_one_before() {
        let l = Limits::parse(" 100, 10 ,2").unwrap();
        assert_eq!((l.total, l.per_agent, l.per_session), (100, 10, 2));
        for bad in [
            "", "1,1", "1,1,1,1", "0,0,0", "10,20,2", "10,5,6", "a,1,1", "-1,1,1",
        ] {
            assert!(Limits::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[derive(Debug, Clone)]
    struct Fake {
        n: u64,
        session: String,
        agent: String,
        fresh: bool,
    }

    impl Waiting for Fake {
        fn position(&self) -> Position {
            Position {
                seq: 1,
                offset: self.n * 10,
            }
        }
        fn end(&self) -> Position {
            Position {
                seq: 1,
                offset: self.n * 10 + 5,
            }
        }
        fn session(&self) -> &str {
            &self.session
        }
        fn agent(&self) -> &str {
            &self.agent
        }
        fn fresh(&self) -> bool {
            self.fresh
        }
    }

    /// What a read of the queue finds, as `Store::scan` does it.
    fn scan(queue: &[Fake], refill: &Refill) -> (Vec<Fake>, Position) {
        let mut found = Vec::new();
        for job in queue {
            if job.position() >= refill.from && job.position() < refill.to && refill.wants(job) {
                found.push(job.clone());
                if found.len() == refill.limit {
                    return (found, job.end());
                }
            }
        }
        (found, refill.to)
    }

    /// A flood of events from a few sessions and fresh ones, over three agents, fed
    /// live a few at a time while held runs end one by one, the oldest of a session
    /// first: every event is admitted exactly once, each session's in order, and the
    /// window never holds more than its limits.
    #[test]
    fn a_flood_passes_through_the_window_once_in_order_within_limits() {
        let limits = Limits {
            total: 10,
            per_agent: 5,
            per_session: 3,
        };
        let mut seed = 7u64;
        let queue: Vec<Fake> = (0..600)
            .map(|n| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let pick = (seed >> 33) as usize;
                let agent = ["a", "b", "c"][pick % 3].to_owned();
                let fresh = pick % 5 < 2;
                let session = if fresh {
                    format!("fresh-{n}")
                } else {
                    format!("s{}", (pick / 5) % 4)
                };
                Fake {
                    n,
                    session,
                    agent,
                    fresh,
                }
            })
            .collect();
        let mut window = Window::new(limits, Position::default(), Position::default());
        let mut held: Vec<Fake> = Vec::new();
        let mut admitted: Vec<u64> = Vec::new();
        let mut fed = 0;
        let mut turn = 0;
        while admitted.len() < queue.len() || !held.is_empty() {
            let mut arrived = Vec::new();
            for job in queue.iter().skip(fed).take(7) {
                arrived.extend(window.feed(job.clone()));
                fed += 1;
            }
            let end = queue[fed - 1].end();
            while let Some(refill) = window.next_refill(end) {
                let (found, stopped) = scan(&queue, &refill);
                arrived.extend(window.refilled(&refill, found, stopped));
            }
            for job in arrived {
                admitted.push(job.n);
                held.push(job);
            }
            assert_eq!(window.held(), held.len());
            assert!(held.len() <= limits.total);
            for key in held.iter().flat_map(|j| [&j.session, &j.agent]) {
                let n = held
                    .iter()
                    .filter(|j| &j.session == key || &j.agent == key)
                    .count();
                let limit = if key.starts_with('s') || key.starts_with('f') {
                    limits.per_session
                } else {
                    limits.per_agent
                };
                assert!(n <= limit, "{key} holds {n}");
            }
            // A held run ends: the oldest of some session, taking turns.
            if !held.is_empty() {
                turn += 1;
                let session = held[turn % held.len()].session.clone();
                let i = held.iter().position(|j| j.session == session).unwrap();
                let done = held.remove(i);
                window.finished(&done.session, &done.agent);
            }
        }
        let mut once = admitted.clone();
        once.sort();
        assert_eq!(once, (0..600).collect::<Vec<_>>(), "each event once");
        for session in ["s0", "s1", "s2", "s3"] {
            let order: Vec<u64> = admitted
                .iter()
                .copied()
                .filter(|n| queue[*n as usize].session == session)
                .collect();
            assert!(order.is_sorted(), "{session} in order: {order:?}");
        }
    }
}
