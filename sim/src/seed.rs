//! The one u64 that a whole simulation follows from.

use std::fmt;
use std::str::FromStr;

/// The seed of one simulation run. Everything random in a run derives from it.
///
/// It prints as `0x` followed by 16 hex digits, and parses back from that form or from a decimal number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seed(pub u64);

impl Seed {
    /// The `n`-th seed of a campaign that starts at `self`.
    ///
    /// Consecutive seeds are spread by a bijective mix, so that seed `s` and seed `s + 1` of a campaign do
    /// not start from related states.
    pub fn nth(self, n: u64) -> Seed {
        if n == 0 {
            self
        } else {
            Seed(splitmix64(self.0 ^ splitmix64(n)))
        }
    }
}

/// SplitMix64's finaliser: a fixed, well-distributed bijection on u64.
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl fmt::Display for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seed({self})")
    }
}

/// A seed string that is neither `0x` + 1–16 hex digits nor a decimal u64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedError {
    /// The text that failed to parse.
    pub input: String,
}

impl fmt::Display for SeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid seed {:?}: expected 0x followed by 1 to 16 hex digits (e.g. 0x00000000000004d2), or a decimal integer below 2^64",
            self.input
        )
    }
}

impl std::error::Error for SeedError {}

impl FromStr for Seed {
    type Err = SeedError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || SeedError { input: s.to_string() };
        let t = s.trim();
        let parsed = if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            u64::from_str_radix(hex, 16)
        } else {
            if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err());
            }
            t.parse::<u64>()
        };
        parsed.map(Seed).map_err(|_| err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_round_trips_through_display() {
        for v in [0, 1, 0x4d2, u64::MAX, 0xdead_beef_cafe_f00d] {
            let s = Seed(v);
            assert_eq!(s.to_string().parse::<Seed>().unwrap(), s);
        }
        assert_eq!(Seed(0x4d2).to_string(), "0x00000000000004d2");
        assert_eq!("1234".parse::<Seed>().unwrap(), Seed(1234));
        assert_eq!("0XFF".parse::<Seed>().unwrap(), Seed(255));
    }

    #[test]
    fn invalid_seed_names_the_value() {
        for bad in ["", "0x", "0xg1", "12a", "-1", "0x11112222333344445", "18446744073709551616"] {
            let e = bad.parse::<Seed>().unwrap_err();
            assert_eq!(e.input, bad);
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn nth_seeds_are_distinct() {
        let base = Seed(7);
        let seeds: std::collections::BTreeSet<_> = (0..1000).map(|n| base.nth(n)).collect();
        assert_eq!(seeds.len(), 1000);
        assert_eq!(base.nth(0), base);
    }
}
