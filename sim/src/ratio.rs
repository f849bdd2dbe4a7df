//! Probabilities as exact ratios, which print and parse back (`3/100`).

use std::fmt;
use std::str::FromStr;

/// A probability `num/den`, with `num <= den` and `den > 0`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ratio {
    num: u32,
    den: u32,
}

impl Ratio {
    /// Probability zero: the event never happens.
    pub const NEVER: Ratio = Ratio { num: 0, den: 1 };
    /// Probability one: the event always happens.
    pub const ALWAYS: Ratio = Ratio { num: 1, den: 1 };

    /// `num/den`.
    ///
    /// # Panics
    /// If `den == 0` or `num > den`: a probability outside `[0, 1]` is a bug in the caller.
    pub const fn new(num: u32, den: u32) -> Ratio {
        assert!(den > 0, "ratio denominator must be positive");
        assert!(num <= den, "ratio must not exceed 1");
        Ratio { num, den }
    }

    /// The numerator.
    pub fn numerator(self) -> u32 {
        self.num
    }

    /// The denominator.
    pub fn denominator(self) -> u32 {
        self.den
    }

    /// True when the probability is zero.
    pub fn is_never(self) -> bool {
        self.num == 0
    }

    /// Decides one trial given a uniform draw `x` in `0..u64::MAX`.
    pub(crate) fn hit(self, x: u64) -> bool {
        if self.num == 0 {
            return false;
        }
        if self.num == self.den {
            return true;
        }
        // x mod den is biased by at most den/2^64: irrelevant for den < 2^32.
        (x % u64::from(self.den)) < u64::from(self.num)
    }
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

impl fmt::Debug for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// A ratio string that is not `a/b` with `0 <= a <= b`, `b > 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatioError {
    /// The text that failed to parse.
    pub input: String,
}

impl fmt::Display for RatioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid probability {:?}: expected a ratio a/b with 0 <= a <= b and b > 0 (e.g. 3/100), or 0 or 1",
            self.input
        )
    }
}

impl std::error::Error for RatioError {}

impl FromStr for Ratio {
    type Err = RatioError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || RatioError { input: s.to_string() };
        let t = s.trim();
        let (a, b) = match t.split_once('/') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (t, "1"),
        };
        let num: u32 = a.parse().map_err(|_| err())?;
        let den: u32 = b.parse().map_err(|_| err())?;
        if den == 0 || num > den {
            return Err(err());
        }
        Ok(Ratio { num, den })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_parses_and_prints() {
        let r: Ratio = "3/100".parse().unwrap();
        assert_eq!(r, Ratio::new(3, 100));
        assert_eq!(r.to_string(), "3/100");
        assert_eq!("0".parse::<Ratio>().unwrap(), Ratio::NEVER);
        assert_eq!("1".parse::<Ratio>().unwrap(), Ratio::ALWAYS);
        for bad in ["", "2/1", "1/0", "a/b", "0.5", "-1/2"] {
            let e = bad.parse::<Ratio>().unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn ratio_hits_in_proportion() {
        let r = Ratio::new(1, 4);
        let hits = (0..4000u64).filter(|x| r.hit(*x)).count();
        assert_eq!(hits, 1000);
        assert!(!Ratio::NEVER.hit(0));
        assert!(Ratio::ALWAYS.hit(u64::MAX));
    }
}
