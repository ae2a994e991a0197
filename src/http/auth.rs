//! Rate limits: a token bucket per source (opt-in), and a throttle on callers that keep
//! failing authentication.

use crate::config::RateLimit;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed authentications from one address within `FAILURE_WINDOW` that get it blocked.
const FAILURE_LIMIT: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How long an address stays blocked after its last failure.
const BLOCK_FOR: Duration = Duration::from_secs(60);
/// Addresses tracked at most, so a flood of peers cannot grow memory without bound:
/// past this, entries that no longer count for anything are dropped, and if none are, a
/// new address goes uncounted.
const MAX_TRACKED: usize = 10_000;

/// Token buckets by source name.
#[derive(Default)]
pub struct SourceLimits {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl SourceLimits {
    /// Takes a token for `source`; `Err(wait)` says how long until one is free.
    pub fn take(&self, source: &str, limit: &RateLimit) -> Result<(), Duration> {
        self.take_at(source, limit, Instant::now())
    }

    /// [`SourceLimits::take`] at `now`, so tests can say when each request comes.
    fn take_at(&self, source: &str, limit: &RateLimit, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("limits lock");
        // The name is copied only for a source's first request.
        if !buckets.contains_key(source) {
            let full = Bucket {
                tokens: limit.burst,
                at: now,
            };
            buckets.insert(source.to_owned(), full);
        }
        let bucket = buckets.get_mut(source).expect("the bucket was just made");
        let refill = now.duration_since(bucket.at).as_secs_f64() * limit.per_second;
        bucket.tokens = (bucket.tokens + refill).min(limit.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / limit.per_second,
            ))
        }
    }
}

/// Counts authentication failures per client address, and holds back the answers to an
/// address that keeps failing.
///
/// Blocking an address must never refuse valid auth from it: behind a reverse proxy
/// that is not in `trustedProxies`, every sender shares the proxy's address, and one
/// caller's wrong keys would stop everyone's webhooks. So a blocked address is still
/// authenticated on every request, and only its failures are treated differently:
/// each one keeps it blocked and, while a place in the tarpit is free, is answered
/// 429 only after [`TARPIT_DELAY`], on a connection that then closes, so every further
/// guess costs the caller a new connection and a second. Places are bounded per
/// address and in total, so the tarpit can never take more than a small share of the
/// server's connections; past that bound a failure is answered at once (still 429,
/// still closing the connection). A caller that opens connections as fast as it can
/// therefore still gets answers: what stops it guessing a key is the key's strength
/// (`lowkey init` draws 256 bits), and what the throttle takes away is cheap
/// keep-alive guessing, the log noise, and the work of an unbounded stream of 401s.
#[derive(Default)]
pub struct AuthThrottle {
    state: Mutex<Tracked>,
}

/// How long a failure from a blocked address waits for its 429.
pub const TARPIT_DELAY: Duration = Duration::from_secs(1);
/// Answers held in the tarpit at once, per address and in all.
const HELD_PER_ADDRESS: u32 = 8;
const HELD_IN_ALL: usize = 64;

#[derive(Default)]
struct Tracked {
    peers: HashMap<IpAddr, Failures>,
    /// Answers held in the tarpit now, over every address.
    held: usize,
}

struct Failures {
    count: u32,
    since: Instant,
    blocked_until: Option<Instant>,
    /// Answers to this address held in the tarpit now.
    held: u32,
    /// Failures while blocked that no log line has counted yet, and when the last
    /// line about this address went out: failures from a blocked address are counted,
    /// not logged one by one, so a flood of guesses cannot flood the journal.
    unreported: u32,
    reported: Instant,
}

impl Failures {
    /// Whether the failures counted since `since` still count toward a block.
    fn in_window(&self, now: Instant) -> bool {
        now.duration_since(self.since) < FAILURE_WINDOW
    }

    fn blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|until| until > now)
    }
}

/// What to answer a failed authentication, by [`AuthThrottle::failed`].
pub enum Failure<'a> {
    /// 401. `blocks` when this failure got the address blocked.
    Refused { blocks: bool },
    /// 429 with `Retry-After: wait`: the address was already blocked. While `held` is
    /// `Some`, the answer waits for [`TARPIT_DELAY`]; dropping it frees the place.
    Blocked {
        wait: Duration,
        held: Option<Held<'a>>,
    },
}

/// A failure, and the failures from its address while it was blocked that are due to
/// be logged in one line (at most one such line per address per [`BLOCK_FOR`]).
pub struct Failed<'a> {
    pub failure: Failure<'a>,
    pub unreported: Option<u32>,
}

/// A place in the tarpit, given back when dropped.
pub struct Held<'a> {
    throttle: &'a AuthThrottle,
    addr: IpAddr,
}

impl AuthThrottle {
    /// Records a failed authentication from `addr` and says how to answer it.
    pub fn failed(&self, addr: IpAddr) -> Failed<'_> {
        self.failed_at(addr, Instant::now())
    }

    /// [`AuthThrottle::failed`] at `now`, so tests can say when each failure comes.
    fn failed_at(&self, addr: IpAddr, now: Instant) -> Failed<'_> {
        let mut state = self.state.lock().expect("throttle lock");
        let Tracked { peers, held } = &mut *state;
        if peers.len() >= MAX_TRACKED && !peers.contains_key(&addr) {
            peers.retain(|_, f| f.in_window(now) || f.blocked(now) || f.held > 0);
            if peers.len() >= MAX_TRACKED {
                return Failed {
                    failure: Failure::Refused { blocks: false },
                    unreported: None,
                };
            }
        }
        let f = peers.entry(addr).or_insert(Failures {
            count: 0,
            since: now,
            blocked_until: None,
            held: 0,
            unreported: 0,
            reported: now,
        });
        let failure = if f.blocked(now) {
            // Guessing on keeps the address blocked.
            let until = now + BLOCK_FOR;
            f.blocked_until = Some(until);
            f.unreported += 1;
            let place = f.held < HELD_PER_ADDRESS && *held < HELD_IN_ALL;
            if place {
                f.held += 1;
                *held += 1;
            }
            Failure::Blocked {
                wait: until - now,
                held: place.then(|| Held {
                    throttle: self,
                    addr,
                }),
            }
        } else {
            if !f.in_window(now) {
                f.count = 0;
                f.since = now;
            }
            f.count += 1;
            let blocks = f.count >= FAILURE_LIMIT;
            if blocks {
                f.blocked_until = Some(now + BLOCK_FOR);
                f.count = 0;
                f.since = now;
            }
            Failure::Refused { blocks }
        };
        // The line that reports a block starting counts as this address's line too.
        let due = f.unreported > 0 && now.duration_since(f.reported) >= BLOCK_FOR;
        let unreported = due.then(|| std::mem::take(&mut f.unreported));
        if due || matches!(failure, Failure::Refused { blocks: true }) {
            f.reported = now;
        }
        Failed {
            failure,
            unreported,
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut state = self.throttle.state.lock().expect("throttle lock");
        state.held -= 1;
        if let Some(f) = state.peers.get_mut(&self.addr) {
            f.held -= 1;
        }
    }
}

/// `Retry-After` in whole seconds, at least 1.
pub fn retry_after(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_refuses() {
        let limits = SourceLimits::default();
        let limit = RateLimit {
            per_second: 1.0,
            burst: 3.0,
        };
        for _ in 0..3 {
            assert!(limits.take("s", &limit).is_ok());
        }
        let wait = limits.take("s", &limit).unwrap_err();
        assert!(wait <= Duration::from_secs(1));
        assert!(limits.take("other", &limit).is_ok());
    }

    fn blocked(failed: Failed<'_>) -> (Duration, bool) {
        match failed.failure {
            Failure::Blocked { wait, held } => (wait, held.is_some()),
            Failure::Refused { .. } => panic!("refused, not blocked"),
        }
    }

    #[test]
    fn throttle_blocks_after_limit_and_only_that_address() {
        let t = AuthThrottle::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..FAILURE_LIMIT - 1 {
            let failed = t.failed(a);
            assert!(matches!(failed.failure, Failure::Refused { blocks: false }));
        }
        let failed = t.failed(a);
        assert!(matches!(failed.failure, Failure::Refused { blocks: true }));
        let (wait, held) = blocked(t.failed(a));
        assert!(wait > BLOCK_FOR - Duration::from_secs(1) && held);
        assert!(matches!(
            t.failed(b).failure,
            Failure::Refused { blocks: false }
        ));
    }

    #[test]
    fn the_tarpit_holds_a_bounded_number_of_answers_per_address_and_in_all() {
        let t = AuthThrottle::default();
        let addrs: Vec<IpAddr> = (1..=20)
            .map(|n| format!("10.0.1.{n}").parse().unwrap())
            .collect();
        for addr in &addrs {
            for _ in 0..FAILURE_LIMIT {
                t.failed(*addr);
            }
        }
        let mut places = Vec::new();
        for _ in 0..HELD_PER_ADDRESS {
            match t.failed(addrs[0]).failure {
                Failure::Blocked { held: Some(h), .. } => places.push(h),
                _ => panic!("no place in the tarpit"),
            }
        }
        assert!(!blocked(t.failed(addrs[0])).1, "past the per-address bound");
        // Giving a place back makes room for that address again.
        places.pop();
        assert!(blocked(t.failed(addrs[0])).1);
        for addr in &addrs[1..] {
            for _ in 0..HELD_PER_ADDRESS {
                if let Failure::Blocked { held: Some(h), .. } = t.failed(*addr).failure {
                    places.push(h);
                }
            }
        }
        assert_eq!(places.len(), HELD_IN_ALL);
        assert_eq!(t.state.lock().unwrap().held, HELD_IN_ALL);
        drop(places);
        assert_eq!(t.state.lock().unwrap().held, 0);
    }

    #[test]
    fn a_bucket_refills_at_its_rate_up_to_its_burst() {
        let limits = SourceLimits::default();
        let limit = RateLimit {
            per_second: 0.5,
            burst: 2.0,
        };
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        assert!(limits.take_at("s", &limit, t0).is_ok());
        assert!(limits.take_at("s", &limit, t0).is_ok());
        // Empty, at half a token a second: the next one is two seconds away.
        assert_eq!(limits.take_at("s", &limit, t0), Err(secs(2)));
        // A second later half of it is back, so it is one second away.
        assert_eq!(limits.take_at("s", &limit, t0 + secs(1)), Err(secs(1)));
        assert!(limits.take_at("s", &limit, t0 + secs(2)).is_ok());
        // However long the source was quiet, no more than the burst is saved up.
        let later = t0 + secs(100);
        assert!(limits.take_at("s", &limit, later).is_ok());
        assert!(limits.take_at("s", &limit, later).is_ok());
        assert_eq!(limits.take_at("s", &limit, later), Err(secs(2)));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_never_zero() {
        assert_eq!(retry_after(Duration::ZERO), 1);
        assert_eq!(retry_after(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after(BLOCK_FOR), 60);
    }

    fn refused(failed: Failed<'_>) -> bool {
        match failed.failure {
            Failure::Refused { blocks } => blocks,
            Failure::Blocked { .. } => panic!("blocked, not refused"),
        }
    }

    fn addr(n: usize) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n as u32))
    }

    #[test]
    fn failures_count_toward_a_block_only_within_the_window() {
        let t = AuthThrottle::default();
        let a = addr(1);
        let t0 = Instant::now();
        for _ in 0..FAILURE_LIMIT - 1 {
            assert!(!refused(t.failed_at(a, t0)));
        }
        // A window later the count starts again, ...
        let next = t0 + FAILURE_WINDOW;
        for _ in 0..FAILURE_LIMIT - 1 {
            assert!(!refused(t.failed_at(a, next)));
        }
        // ... so it takes ten failures within one window to block.
        assert!(refused(
            t.failed_at(a, next + FAILURE_WINDOW - Duration::from_secs(1))
        ));
    }

    #[test]
    fn a_block_lasts_until_its_period_after_the_last_failure_ends() {
        let t = AuthThrottle::default();
        let a = addr(1);
        let t0 = Instant::now();
        for _ in 0..FAILURE_LIMIT {
            t.failed_at(a, t0);
        }
        // Failing on while blocked keeps it blocked for a whole period from then.
        let last = t0 + Duration::from_secs(59);
        assert_eq!(blocked(t.failed_at(a, last)).0, BLOCK_FOR);
        // That period is over at its last instant: a failure then is a plain 401.
        assert!(!refused(t.failed_at(a, last + BLOCK_FOR)));
    }

    #[test]
    fn when_every_tracked_address_still_counts_a_new_one_goes_uncounted() {
        let t = AuthThrottle::default();
        let t0 = Instant::now();
        for n in 0..MAX_TRACKED {
            t.failed_at(addr(n), t0);
        }
        // An address already tracked is still counted: nine more failures block it.
        for _ in 0..FAILURE_LIMIT - 2 {
            assert!(!refused(t.failed_at(addr(0), t0)));
        }
        assert!(refused(t.failed_at(addr(0), t0)));
        // A new one is not, so no number of failures blocks it.
        let new = addr(MAX_TRACKED);
        for _ in 0..2 * FAILURE_LIMIT {
            assert!(!refused(t.failed_at(new, t0)));
        }
        assert_eq!(t.state.lock().unwrap().peers.len(), MAX_TRACKED);
    }

    #[test]
    fn a_full_table_makes_room_by_dropping_addresses_that_no_longer_count() {
        let t = AuthThrottle::default();
        let t0 = Instant::now();
        let (held, stale_but_blocked) = (addr(0), addr(1));
        for n in 2..MAX_TRACKED {
            t.failed_at(addr(n), t0);
        }
        for _ in 0..FAILURE_LIMIT {
            t.failed_at(held, t0);
            t.failed_at(stale_but_blocked, t0);
        }
        let places: Vec<_> = (0..HELD_PER_ADDRESS)
            .map(|_| t.failed_at(held, t0))
            .collect();
        // Failing on keeps it blocked past its window.
        t.failed_at(stale_but_blocked, t0 + Duration::from_secs(59));

        // A window later, a new address gets the place of those whose failures no
        // longer count, and is counted: ten failures block it.
        let later = t0 + Duration::from_secs(100);
        let new = addr(MAX_TRACKED);
        for _ in 0..FAILURE_LIMIT - 1 {
            assert!(!refused(t.failed_at(new, later)));
        }
        assert!(refused(t.failed_at(new, later)));
        assert_eq!(t.state.lock().unwrap().peers.len(), 3);
        // A blocked address was kept, so it still is.
        assert!(matches!(
            t.failed_at(stale_but_blocked, later).failure,
            Failure::Blocked { .. }
        ));
        // So was one holding places in the tarpit, so blocked again it gets no more.
        for _ in 0..FAILURE_LIMIT {
            t.failed_at(held, later);
        }
        assert!(!blocked(t.failed_at(held, later)).1);
        drop(places);
    }

    #[test]
    fn failures_while_blocked_are_reported_at_most_once_per_block_period() {
        let t = AuthThrottle::default();
        let a = addr(3);
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        for _ in 0..FAILURE_LIMIT - 1 {
            assert!(t.failed_at(a, t0).unreported.is_none());
        }
        // The line about the block starting counts as the address's line.
        let start = t0 + secs(30);
        assert!(t.failed_at(a, start).unreported.is_none());
        for later in [1, 20, 59] {
            assert!(t.failed_at(a, start + secs(later)).unreported.is_none());
        }
        // A block period after it, the next failure carries the count.
        assert_eq!(t.failed_at(a, start + BLOCK_FOR).unreported, Some(4));
        assert!(t.failed_at(a, start + BLOCK_FOR).unreported.is_none());

        // A block with no failures during it has nothing to report, however long after.
        let b = addr(4);
        for _ in 0..FAILURE_LIMIT {
            t.failed_at(b, t0);
        }
        assert!(t.failed_at(b, t0 + 2 * BLOCK_FOR).unreported.is_none());
    }
}
