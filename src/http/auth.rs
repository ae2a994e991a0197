//! Who is calling, and whether it may: the client's address (behind `trustedProxies`),
//! the API key, and the throttle on addresses that keep failing authentication.
//!
//! Nothing here answers a caller: a failed check goes back to the webhook pipeline as a
//! reason, and [`super::reject`] turns every one into the same refusal.

use crate::config::Config;
use http::header;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Who is on the other end of a connection: its address, `None` for unix-socket peers.
/// Logs show it as `ip:port`, or `unix`.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<SocketAddr>);

impl Peer {
    fn ip(&self) -> Option<IpAddr> {
        self.0.map(|addr| addr.ip().to_canonical())
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("unix"),
        }
    }
}

/// The client a request came from: the socket's peer, or, behind a proxy listed in
/// `trustedProxies`, the address that proxy says it forwarded for.
pub(super) fn client_ip(config: &Config, peer: Peer, headers: &http::HeaderMap) -> Option<IpAddr> {
    let peer = peer.ip()?;
    if !config.trusted_proxies.contains(&peer) {
        return Some(peer);
    }
    // The rightmost address no trusted proxy vouches for is the client.
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !config.trusted_proxies.contains(ip))
            .unwrap_or(peer),
    )
}

/// Checks `Authorization: Bearer <apiKey>` in constant time. The error says what was
/// wrong, for the log; it never holds what was sent.
pub(super) fn authorized(config: &Config, headers: &http::HeaderMap) -> Result<(), &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err("no Authorization header");
    };
    let value = value.as_bytes();
    let token = match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &value[7..],
        _ => return Err("Authorization is not a Bearer token"),
    };
    if config.api_key.matches(token.trim_ascii()) {
        Ok(())
    } else {
        Err("wrong API key")
    }
}

/// Failed authentications from one address within `FAILURE_WINDOW` that get it blocked.
const FAILURE_LIMIT: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How long an address stays blocked after its last failure.
pub(super) const BLOCK_FOR: Duration = Duration::from_secs(60);
/// Addresses tracked at most, so a flood of peers cannot grow memory without bound:
/// past this, entries that no longer count for anything are dropped, and if none are, a
/// new address goes uncounted.
const MAX_TRACKED: usize = 10_000;

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
pub(super) struct AuthThrottle {
    state: Mutex<Tracked>,
}

/// How long a failure from a blocked address waits for its 429.
pub(super) const TARPIT_DELAY: Duration = Duration::from_secs(1);
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
pub(super) enum Failure<'a> {
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
pub(super) struct Failed<'a> {
    pub(super) failure: Failure<'a>,
    pub(super) unreported: Option<u32>,
}

/// A place in the tarpit, given back when dropped.
pub(super) struct Held<'a> {
    throttle: &'a AuthThrottle,
    addr: IpAddr,
}

impl AuthThrottle {
    /// Records a failed authentication from `addr` and says how to answer it.
    pub(super) fn failed(&self, addr: IpAddr) -> Failed<'_> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_token_with_the_api_key_is_authorized() {
        let config = super::super::test_config(&[]);
        let check = |value: Option<&str>| {
            let mut headers = http::HeaderMap::new();
            if let Some(value) = value {
                headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            }
            authorized(&config, &headers)
        };
        assert_eq!(check(Some("Bearer lk_right")), Ok(()));
        // The scheme is case-insensitive and space around the key does not count.
        assert_eq!(check(Some("bEARER  lk_right ")), Ok(()));
        assert_eq!(check(None), Err("no Authorization header"));
        assert_eq!(check(Some("Bearer lk_wrong")), Err("wrong API key"));
        // Another scheme of the same length, with the right key, is not a bearer token.
        let other = Err("Authorization is not a Bearer token");
        assert_eq!(check(Some("Apikey lk_right")), other);
        assert_eq!(check(Some("Bearer")), other);
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
