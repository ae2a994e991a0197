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
/// How long a blocked address gets 429.
const BLOCK_FOR: Duration = Duration::from_secs(60);
/// Addresses tracked at most; past this the oldest entries are dropped, so a flood of
/// spoofed-looking peers cannot grow memory without bound.
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
        let now = Instant::now();
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

/// Counts authentication failures per client address.
#[derive(Default)]
pub struct AuthThrottle {
    peers: Mutex<HashMap<IpAddr, Failures>>,
}

struct Failures {
    count: u32,
    since: Instant,
    blocked_until: Option<Instant>,
}

impl AuthThrottle {
    /// `Err(wait)` while `addr` is blocked.
    pub fn check(&self, addr: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let peers = self.peers.lock().expect("throttle lock");
        match peers.get(&addr).and_then(|f| f.blocked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    pub fn failed(&self, addr: IpAddr) {
        let now = Instant::now();
        let mut peers = self.peers.lock().expect("throttle lock");
        if peers.len() >= MAX_TRACKED && !peers.contains_key(&addr) {
            peers.retain(|_, f| {
                now.duration_since(f.since) < FAILURE_WINDOW
                    || f.blocked_until.is_some_and(|u| u > now)
            });
            if peers.len() >= MAX_TRACKED {
                return;
            }
        }
        let f = peers.entry(addr).or_insert(Failures {
            count: 0,
            since: now,
            blocked_until: None,
        });
        if now.duration_since(f.since) > FAILURE_WINDOW {
            f.count = 0;
            f.since = now;
        }
        f.count += 1;
        if f.count >= FAILURE_LIMIT {
            f.blocked_until = Some(now + BLOCK_FOR);
            f.count = 0;
            f.since = now;
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

    #[test]
    fn throttle_blocks_after_limit() {
        let t = AuthThrottle::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..FAILURE_LIMIT - 1 {
            t.failed(a);
        }
        assert!(t.check(a).is_ok());
        t.failed(a);
        assert!(t.check(a).is_err());
        assert!(t.check(b).is_ok());
    }
}
