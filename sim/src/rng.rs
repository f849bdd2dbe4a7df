//! Seeded randomness, one independent ChaCha stream per purpose.
//!
//! Every stream is keyed by the run's seed and separated by its [`Purpose`], so that adding draws to one
//! purpose (say, the workload) never shifts the values another purpose (say, the network) sees.
//!
//! A scenario derives its options (fault kinds, rates, workload sizes) from [`SimRng::substream`]s: one
//! labelled stream per subsystem, keyed apart from every purpose's stream, so drawing an option never moves
//! the stream the world's fault driver (or any other purpose) draws from during the run.

use rand_chacha::ChaCha12Rng;
use rand_core::{Rng, SeedableRng};
use std::time::Duration;

use xxhash_rust::xxh3::xxh3_64;

use crate::ratio::Ratio;
use crate::seed::{splitmix64, Seed};

/// The ChaCha stream number of every labelled substream. Purposes use 1 to 6, so a substream is never a
/// purpose's stream, even under a seed whose key happens to coincide.
const SUBSTREAM_STREAM: u64 = 0x006f_7074_696f_6e73; // "options" in ASCII

/// `ln 2` in 0.64 fixed point: the factor from a base-2 to a natural logarithm.
const LN2_Q64: u128 = 0xb172_17f7_d1cf_79ab;

/// Fraction bits of the fixed-point logarithms below.
const LOG_FRACTION_BITS: u32 = 32;

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
        SimRng::keyed(seed.0, purpose.stream())
    }

    /// The stream labelled `label` under `seed`: one per subsystem of a scenario's options ("faults",
    /// "disk", "workload", …).
    ///
    /// Streams of different labels are independent of each other, so drawing more from one never shifts
    /// another; and none is ever the stream of a [`Purpose`], so options drawn here never move the streams
    /// the run itself draws from.
    pub fn substream(seed: Seed, label: &str) -> SimRng {
        SimRng::keyed(seed.0 ^ xxh3_64(label.as_bytes()), SUBSTREAM_STREAM)
    }

    fn keyed(root: u64, stream: u64) -> SimRng {
        let mut key = [0u8; 32];
        let mut state = root;
        for chunk in key.chunks_exact_mut(8) {
            state = splitmix64(state);
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        let mut inner = ChaCha12Rng::from_seed(key);
        inner.set_stream(stream);
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

    /// An exponentially distributed duration with mean `mean` (the gap between events of a Poisson process),
    /// in integer arithmetic only, from one draw.
    ///
    /// The exact distribution: with `k` the top 63 bits of one draw, `U = (k + 1) / 2^63` is uniform on
    /// `{1/2^63, 2/2^63, …, 1}`, and the result is `floor(mean_ns · E)` nanoseconds where `E` is `−ln U`
    /// computed in 32.32 fixed point (a base-2 logarithm by repeated squaring, times `ln 2`), within 2^-30
    /// of the real value. So `E` lies in `[0, 63 · ln 2 ≈ 43.7]`: the tail beyond 43.7 means (probability
    /// 2^-63) is cut off, and the mean is `mean` to within one part in 10^8. No floating point is involved,
    /// so the value is the same on every platform.
    pub fn exponential(&mut self, mean: Duration) -> Duration {
        let k = self.next_u64() >> 1;
        let e = neg_ln_q32(k + 1);
        let mean_ns = mean.as_nanos();
        let ns = (mean_ns * u128::from(e)) >> LOG_FRACTION_BITS;
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
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

/// `log2(x)` in 32.32 fixed point, rounded down (to within 2^-31), for `x >= 1`.
fn log2_q32(x: u64) -> u64 {
    debug_assert!(x >= 1);
    let int = u64::from(63 - x.leading_zeros());
    // The mantissa x / 2^int in [1, 2), as 1.63 fixed point. Squaring it doubles its logarithm: each square
    // that reaches 2 contributes the next bit of the fraction.
    let one = 1u128 << 63;
    let mut y = u128::from(x) << (63 - int);
    let mut frac = 0u64;
    for _ in 0..LOG_FRACTION_BITS {
        y = (y * y) >> 63;
        frac <<= 1;
        if y >= 2 * one {
            y >>= 1;
            frac |= 1;
        }
    }
    (int << LOG_FRACTION_BITS) | frac
}

/// `−ln(x / 2^63)` in 32.32 fixed point, for `1 <= x <= 2^63`.
fn neg_ln_q32(x: u64) -> u64 {
    let neg_log2 = (63u64 << LOG_FRACTION_BITS) - log2_q32(x);
    ((u128::from(neg_log2) * LN2_Q64) >> 64) as u64
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
    fn substreams_are_independent_of_each_other_and_of_every_purpose() {
        for s in 0..200u64 {
            let seed = Seed(s).nth(1);
            let mut faults_a = SimRng::substream(seed, "faults");
            let a: Vec<u64> = (0..4).map(|_| faults_a.next_u64()).collect();
            // Adding draws to another subsystem's stream leaves this one where it was.
            let mut workload = SimRng::substream(seed, "workload");
            for _ in 0..100 {
                workload.next_u64();
            }
            let mut faults_b = SimRng::substream(seed, "faults");
            let b: Vec<u64> = (0..4).map(|_| faults_b.next_u64()).collect();
            assert_eq!(a, b);
            assert_ne!(a[0], SimRng::substream(seed, "workload").next_u64());
            // No substream is the stream a purpose (the fault driver, the disk, …) draws from in the run.
            for p in Purpose::ALL {
                let mut run = SimRng::new(seed, p);
                let r: Vec<u64> = (0..4).map(|_| run.next_u64()).collect();
                assert_ne!(a, r, "substream equals the {p:?} stream under {seed}");
            }
        }
    }

    #[test]
    fn fixed_point_logarithms_match_known_values() {
        // Expected values computed to 60 digits: floor(-ln(u) * 2^32).
        let close = |got: u64, want: u64| got.abs_diff(want) <= 4;
        assert_eq!(neg_ln_q32(1 << 63), 0, "-ln 1");
        assert!(close(neg_ln_q32(1 << 62), 2_977_044_471), "-ln 1/2 = {}", neg_ln_q32(1 << 62));
        assert!(close(neg_ln_q32(3 << 61), 1_235_585_092), "-ln 3/4 = {}", neg_ln_q32(3 << 61));
        assert!(close(neg_ln_q32(1), 187_553_801_724), "-ln 2^-63 = {}", neg_ln_q32(1));
        assert!(
            close(neg_ln_q32((1u64 << 63) / 3), 4_718_503_850),
            "-ln 1/3 = {}",
            neg_ln_q32((1 << 63) / 3)
        );
        assert_eq!(log2_q32(1), 0);
        assert_eq!(log2_q32(1 << 40), 40 << 32);
    }

    #[test]
    fn exponential_has_the_mean_and_tail_of_an_exponential() {
        const DRAWS: u64 = 200_000;
        let mean = Duration::from_millis(700);
        let mut r = SimRng::new(Seed(0xe4), Purpose::Faults);
        let (mut sum, mut above_mean, mut above_3) = (0u128, 0u64, 0u64);
        for _ in 0..DRAWS {
            let x = r.exponential(mean);
            sum += x.as_nanos();
            above_mean += u64::from(x > mean);
            above_3 += u64::from(x > 3 * mean);
        }
        let got = sum / u128::from(DRAWS);
        let want = mean.as_nanos();
        // The sample mean's standard deviation is mean / sqrt(DRAWS), about 0.22%: allow 1%.
        assert!(got.abs_diff(want) * 100 < want, "mean {got} ns, expected {want} ns");
        // P(X > mean) = e^-1 = 0.3679; P(X > 3 mean) = e^-3 = 0.0498 (in parts per 10,000, within 1%).
        let per_10k = |n: u64| n * 10_000 / DRAWS;
        assert!((3579..=3779).contains(&per_10k(above_mean)), "P(X > mean) = {}/10000", per_10k(above_mean));
        assert!((448..=548).contains(&per_10k(above_3)), "P(X > 3 mean) = {}/10000", per_10k(above_3));
        // The same stream gives the same durations: no platform-dependent arithmetic.
        let mut a = SimRng::new(Seed(1), Purpose::Faults);
        let mut b = SimRng::new(Seed(1), Purpose::Faults);
        assert_eq!(a.exponential(mean), b.exponential(mean));
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
