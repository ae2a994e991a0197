//! The per-source rate limit (`rateLimit`, opt-in): a token bucket per source, taken
//! from only after a webhook is authenticated and its body checked.

use crate::config::RateLimit;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Token buckets by source name.
#[derive(Default)]
pub(super) struct SourceLimits {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl SourceLimits {
    /// Takes a token for `source`; `Err(wait)` says how long until one is free.
    pub(super) fn take(&self, source: &str, limit: &RateLimit) -> Result<(), Duration> {
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
}
