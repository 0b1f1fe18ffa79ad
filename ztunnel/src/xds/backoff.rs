//! Reconnect pacing: exponential backoff with "equal jitter" (each delay is drawn uniformly
//! from the upper half of the current step), so that every proxy of a restarted controller
//! does not come back in the same millisecond.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// The first delay after a failure. Short: a controller restart is the common case.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(200);

/// The longest delay between attempts, so a proxy notices a recovered controller within
/// this bound.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(15);

/// How the client paces reconnects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The ceiling of the first delay; each failure doubles it.
    pub initial: Duration,
    /// The largest ceiling.
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: DEFAULT_INITIAL_BACKOFF,
            max: DEFAULT_MAX_BACKOFF,
        }
    }
}

/// The delays of one run of failures.
#[derive(Debug)]
pub(crate) struct Backoff {
    config: BackoffConfig,
    ceiling: Duration,
    /// Jitter needs spread, not secrecy: a randomly keyed SipHash of a counter is enough and
    /// needs no extra crate.
    random: RandomState,
    draws: u64,
}

impl Backoff {
    pub(crate) fn new(config: BackoffConfig) -> Self {
        Self {
            config,
            ceiling: config.initial.min(config.max),
            random: RandomState::new(),
            draws: 0,
        }
    }

    /// The delay before the next attempt: uniform in `[ceiling / 2, ceiling]`; the ceiling
    /// then doubles, up to the maximum.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (ceiling * 2).min(self.config.max);
        let half = ceiling / 2;
        half + half.mul_f64(self.unit())
    }

    /// Back to the initial delay, after a stream that worked.
    pub(crate) fn reset(&mut self) {
        self.ceiling = self.config.initial.min(self.config.max);
    }

    /// A number in `[0, 1]`.
    fn unit(&mut self) -> f64 {
        self.draws += 1;
        let bits = self.random.hash_one(self.draws) >> 11;
        bits as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: BackoffConfig = BackoffConfig {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(1000),
    };

    #[test]
    fn delays_double_within_jitter_and_stop_at_the_maximum() {
        let mut backoff = Backoff::new(CONFIG);
        let ceilings = [100, 200, 400, 800, 1000, 1000, 1000];
        for ceiling in ceilings {
            let ceiling = Duration::from_millis(ceiling);
            let delay = backoff.next_delay();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::new(CONFIG);
        for _ in 0..5 {
            backoff.next_delay();
        }
        backoff.reset();
        assert!(backoff.next_delay() <= CONFIG.initial);
    }

    #[test]
    fn delays_are_spread() {
        let mut backoff = Backoff::new(BackoffConfig {
            initial: CONFIG.max,
            max: CONFIG.max,
        });
        let delays: std::collections::HashSet<Duration> =
            (0..20).map(|_| backoff.next_delay()).collect();
        assert!(
            delays.len() > 10,
            "jitter produced only {} distinct delays",
            delays.len()
        );
    }
}
