//! Random decisions for fault shares, without a dependency on a random-number crate.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

/// The increment of SplitMix64 (an odd constant close to 2^64 / golden ratio).
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// A lock-free SplitMix64 generator shared by every connection of the server.
///
/// Statistical quality is ample for "fail about 30 % of requests"; it is not for secrets.
#[derive(Debug)]
pub struct Sampler {
    state: AtomicU64,
}

impl Sampler {
    /// A sampler seeded from the process's random hash keys.
    pub fn from_entropy() -> Self {
        Self::with_seed(RandomState::new().hash_one(0x7e57_a990_u64))
    }

    /// A deterministic sampler, for tests.
    pub fn with_seed(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// The next uniformly distributed value in `[0, 1)`.
    pub fn next_unit(&self) -> f64 {
        let mut z = self
            .state
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits fill an f64 mantissa exactly.
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `share` (clamped to `[0, 1]`): 0 never hits, 1 always does.
    pub fn hit(&self, share: f64) -> bool {
        if share <= 0.0 {
            return false;
        }
        if share >= 1.0 {
            return true;
        }
        self.next_unit() < share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extremes_are_exact() {
        let sampler = Sampler::with_seed(1);
        assert!((0..1000).all(|_| sampler.hit(1.0)));
        assert!((0..1000).all(|_| !sampler.hit(0.0)));
    }

    #[test]
    fn share_is_roughly_honoured() {
        let sampler = Sampler::with_seed(42);
        let hits = (0..10_000).filter(|_| sampler.hit(0.3)).count();
        assert!(
            (2_700..3_300).contains(&hits),
            "{hits} hits of 10000 at 0.3"
        );
    }

    #[test]
    fn units_stay_in_range() {
        let sampler = Sampler::from_entropy();
        assert!(
            (0..10_000)
                .map(|_| sampler.next_unit())
                .all(|u| (0.0..1.0).contains(&u))
        );
    }
}
