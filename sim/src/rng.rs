//! Seeded randomness, one independent ChaCha stream per purpose.
//!
//! Every stream is keyed by the run's seed and separated by its [`Purpose`], so that adding draws to one
//! purpose (say, the workload) never shifts the values another purpose (say, the network) sees.

use rand_chacha::ChaCha12Rng;
use rand_core::{Rng, SeedableRng};
use std::time::Duration;

use crate::ratio::Ratio;
use crate::seed::{splitmix64, Seed};

/// What a random stream is used for. Each purpose gets its own stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Purpose {
    /// Message latency, loss, duplication and reordering.
    Network,
    /// Disk latency, I/O errors and crash tearing.
    Disk,
    /// The choice and timing of injected faults.
    Faults,
    /// The scenario's workload: which requests, when, to whom.
    Workload,
    /// Randomness the code under test asks for (ids, `Math.random`).
    User,
    /// SQLite's own PRNG and its VFS randomness.
    Sqlite,
}

impl Purpose {
    /// Every purpose, in stream order.
    pub const ALL: [Purpose; 6] =
        [Purpose::Network, Purpose::Disk, Purpose::Faults, Purpose::Workload, Purpose::User, Purpose::Sqlite];

    fn stream(self) -> u64 {
        match self {
            Purpose::Network => 1,
            Purpose::Disk => 2,
            Purpose::Faults => 3,
            Purpose::Workload => 4,
            Purpose::User => 5,
            Purpose::Sqlite => 6,
        }
    }
}

/// A deterministic random stream for one purpose of one run.
#[derive(Clone, Debug)]
pub struct SimRng {
    inner: ChaCha12Rng,
}

impl SimRng {
    /// The stream for `purpose` under `seed`.
    pub fn new(seed: Seed, purpose: Purpose) -> SimRng {
        let mut key = [0u8; 32];
        let mut state = seed.0;
        for chunk in key.chunks_exact_mut(8) {
            state = splitmix64(state);
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        let mut inner = ChaCha12Rng::from_seed(key);
        inner.set_stream(purpose.stream());
        SimRng { inner }
    }

    /// A uniform u64.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// A uniform u32.
    pub fn next_u32(&mut self) -> u32 {
        self.inner.next_u32()
    }

    /// Fills `buf` with uniform bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        self.inner.fill_bytes(buf);
    }

    /// A uniform value in `0..n`.
    ///
    /// # Panics
    /// If `n == 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no values");
        // Lemire's multiply-shift with rejection: unbiased.
        loop {
            let x = self.next_u64();
            let m = u128::from(x) * u128::from(n);
            let low = m as u64;
            if low >= n.wrapping_neg() % n {
                return (m >> 64) as u64;
            }
        }
    }

    /// A uniform value in `lo..=hi`.
    ///
    /// # Panics
    /// If `lo > hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "between({lo}, {hi}) is empty");
        if lo == 0 && hi == u64::MAX {
            return self.next_u64();
        }
        lo + self.below(hi - lo + 1)
    }

    /// A uniform duration in `lo..=hi`, at nanosecond resolution.
    pub fn duration_between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let lo_ns = u64::try_from(lo.as_nanos()).expect("duration fits in u64 ns");
        let hi_ns = u64::try_from(hi.as_nanos()).expect("duration fits in u64 ns");
        Duration::from_nanos(self.between(lo_ns, hi_ns))
    }

    /// True with probability `p`. Draws nothing when `p` is 0 or 1, so a disabled fault costs no draw.
    pub fn chance(&mut self, p: Ratio) -> bool {
        if p.is_never() {
            return false;
        }
        if p == Ratio::ALWAYS {
            return true;
        }
        p.hit(self.next_u64())
    }

    /// A uniformly chosen element of `items`, or `None` if it is empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            Some(&items[self.below(items.len() as u64) as usize])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_independent_of_each_other() {
        let seed = Seed(42);
        let mut net_a = SimRng::new(seed, Purpose::Network);
        let a: Vec<u64> = (0..8).map(|_| net_a.next_u64()).collect();
        // Draw heavily from another purpose; the network stream must not move.
        let mut work = SimRng::new(seed, Purpose::Workload);
        for _ in 0..1000 {
            work.next_u64();
        }
        let mut net_b = SimRng::new(seed, Purpose::Network);
        let b: Vec<u64> = (0..8).map(|_| net_b.next_u64()).collect();
        assert_eq!(a, b);
        let mut w = SimRng::new(seed, Purpose::Workload);
        assert_ne!(a[0], w.next_u64(), "purposes must not share a stream");
    }

    #[test]
    fn different_seeds_give_different_streams() {
        let mut x = SimRng::new(Seed(1), Purpose::Disk);
        let mut y = SimRng::new(Seed(2), Purpose::Disk);
        assert_ne!(x.next_u64(), y.next_u64());
    }

    #[test]
    fn below_and_between_stay_in_range() {
        let mut r = SimRng::new(Seed(9), Purpose::User);
        for n in 1..200 {
            assert!(r.below(n) < n);
            let v = r.between(n, n + 5);
            assert!((n..=n + 5).contains(&v));
        }
        assert_eq!(r.between(3, 3), 3);
    }
}
