//! Running scenarios over many seeds: the outcome of each seed, as the CLI prints it, and the exit code of a
//! campaign; the seeds of a campaign and its shards ([`Shard`]); running seeds in worker processes
//! ([`pool`]); one seed's result as JSON ([`record`]); and a campaign's report ([`report`]).

pub mod pool;
pub mod record;
pub mod report;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use dosim_sim::determinism::{self, CheckError};
use dosim_sim::{FailureClass, FaultCounts, Ratio, RunOptions, Seed};

use crate::Scenario;

/// The failure class of a name in reports (`invariant`, `liveness`, `panic`, `nondeterminism`).
pub fn failure_class(name: &str) -> Option<FailureClass> {
    [FailureClass::Invariant, FailureClass::Liveness, FailureClass::Panic, FailureClass::Nondeterminism]
        .into_iter()
        .find(|c| c.name() == name)
}

/// One of `count` disjoint parts of a campaign: the seed indices `i` with `i % count == index`.
///
/// Seed `i` of a campaign is `seed_base.nth(i)`; every index belongs to exactly one shard of a count, so
/// `count` machines that run shards `0/count` to `count-1/count` of one seed base run each seed once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This shard's number, below `count`.
    pub index: u64,
    /// How many shards the campaign has.
    pub count: u64,
}

impl Shard {
    /// The whole campaign: shard `0/1`.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// True if seed index `i` belongs to this shard.
    pub fn contains(self, i: u64) -> bool {
        i % self.count == self.index
    }

    /// The seed indices of this shard, in increasing order, without end.
    pub fn indices(self) -> impl Iterator<Item = u64> {
        (self.index..).step_by(usize::try_from(self.count).unwrap_or(usize::MAX))
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("invalid shard {s:?}: expected I/N with 0 <= I < N (e.g. 0/4)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u64 = i.trim().parse().map_err(|_| bad())?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// Parses a wall-clock budget: a number with a unit, `s`, `m` or `h`, or several (`1h30m`); a bare number is
/// seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad =
        || format!("invalid duration {s:?}: expected a number with a unit s, m or h (e.g. 90s, 10m, 1h30m)");
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut digits = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// True if a campaign with determinism share `share` runs `seed` twice: a choice made from the seed alone (a
/// fixed mix of it, compared with the share), so every shard and every rerun samples the same seeds.
pub fn sampled_for_determinism(seed: Seed, share: Ratio) -> bool {
    if share.is_never() {
        return false;
    }
    // SplitMix64's finaliser over the seed and a fixed label, not the seed itself: seed_base.nth(i) is
    // already mixed, but a campaign's --seed of 0, 1, 2, ... is not.
    let mut z = seed.0 ^ 0x6465_7465_726d_696e; // "determin"
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    z % u64::from(share.denominator()) < u64::from(share.numerator())
}

/// The exit code of a campaign in which every seed passed.
pub const EXIT_PASS: u8 = 0;
/// The exit code of a usage error (an unknown scenario, a malformed seed or count).
pub const EXIT_USAGE: u8 = 2;
/// The exit code of a campaign whose first failing seed broke an invariant (a safety check failed).
pub const EXIT_INVARIANT: u8 = 3;
/// The exit code of a campaign whose first failing seed left something pending after the liveness phase
/// (or deadlocked, or ran out of simulated time).
pub const EXIT_LIVENESS: u8 = 4;
/// The exit code of a campaign whose first failing seed crashed: a panic that is not a declared invariant,
/// or a configuration that could not run.
pub const EXIT_PANIC: u8 = 5;
/// The exit code of a campaign whose first failing seed gave two different traces.
pub const EXIT_NONDETERMINISM: u8 = 6;

/// The exit code that reports a failure of `class`.
pub fn exit_code(class: FailureClass) -> u8 {
    match class {
        FailureClass::Invariant => EXIT_INVARIANT,
        FailureClass::Liveness => EXIT_LIVENESS,
        FailureClass::Panic => EXIT_PANIC,
        FailureClass::Nondeterminism => EXIT_NONDETERMINISM,
    }
}

/// The exit code of a campaign: [`EXIT_PASS`] if every seed passed, else the code of the first failure, in
/// the order the seeds ran.
pub fn campaign_exit_code<'a>(outcomes: impl IntoIterator<Item = &'a SeedOutcome>) -> u8 {
    outcomes.into_iter().find_map(SeedOutcome::class).map_or(EXIT_PASS, exit_code)
}

/// How one seed of a scenario ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeedOutcome {
    /// Every check passed.
    Pass,
    /// A check failed, something was still pending, something panicked, or two runs of the seed gave
    /// different traces; with a one-line description.
    Fail(FailureClass, String),
}

impl SeedOutcome {
    /// `pass`, `fail` or, for a divergence, `nondeterministic`.
    pub fn name(&self) -> &'static str {
        match self {
            SeedOutcome::Pass => "pass",
            SeedOutcome::Fail(FailureClass::Nondeterminism, _) => "nondeterministic",
            SeedOutcome::Fail(..) => "fail",
        }
    }

    /// The class of the failure, if it failed.
    pub fn class(&self) -> Option<FailureClass> {
        match self {
            SeedOutcome::Pass => None,
            SeedOutcome::Fail(class, _) => Some(*class),
        }
    }
}

/// One seed's result.
#[derive(Clone, Debug)]
pub struct SeedResult {
    /// The scenario.
    pub scenario: &'static str,
    /// The seed.
    pub seed: Seed,
    /// The options the scenario derived from the seed, the seed first.
    pub options: RunOptions,
    /// How it ended.
    pub outcome: SeedOutcome,
    /// The trace hash.
    pub trace_hash: u64,
    /// How many events the trace holds.
    pub events: u64,
    /// Simulated time.
    pub sim_time: Duration,
    /// Wall-clock time.
    pub wall_time: Duration,
    /// Faults injected, by kind.
    pub faults: FaultCounts,
    /// "Sometimes" marks reached, by name.
    pub sometimes: std::collections::BTreeMap<String, u64>,
    /// The full failure report, for a failed seed.
    pub report: Option<String>,
}

/// Runs one seed of a scenario, twice if `check_determinism`.
pub fn run_seed(scenario: &Scenario, seed: Seed, check_determinism: bool) -> SeedResult {
    let result = if check_determinism {
        determinism::check(seed, scenario.run)
    } else {
        (scenario.run)(seed).map_err(|f| CheckError::Failed(Box::new(f)))
    };
    let base = |outcome, hash, events, sim_time, wall_time, faults, sometimes, report| SeedResult {
        scenario: scenario.name,
        seed,
        options: (scenario.options)(seed),
        outcome,
        trace_hash: hash,
        events,
        sim_time,
        wall_time,
        faults,
        sometimes,
        report,
    };
    match result {
        Ok(r) => base(
            SeedOutcome::Pass,
            r.trace_hash(),
            r.trace.len(),
            r.sim_time,
            r.wall_time,
            r.faults,
            r.sometimes,
            None,
        ),
        Err(CheckError::Failed(mut f)) => {
            f.seed = seed;
            base(
                SeedOutcome::Fail(f.kind.class(), f.kind.to_string()),
                f.trace_hash(),
                f.trace.len(),
                f.sim_time,
                f.wall_time,
                f.faults.clone(),
                Default::default(),
                Some(f.to_string()),
            )
        }
        Err(e @ CheckError::Diverged { .. }) => {
            let CheckError::Diverged { hashes, divergence, .. } = &e else { unreachable!() };
            base(
                SeedOutcome::Fail(
                    FailureClass::Nondeterminism,
                    format!("first divergent event #{}", divergence.index),
                ),
                hashes.0,
                divergence.index,
                Duration::ZERO,
                Duration::ZERO,
                FaultCounts::default(),
                Default::default(),
                Some(e.to_string()),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_seed_indices() {
        for count in 1..=5u64 {
            let shards: Vec<Shard> = (0..count).map(|index| Shard { index, count }).collect();
            for i in 0..100 {
                assert_eq!(shards.iter().filter(|s| s.contains(i)).count(), 1, "index {i} of {count} shards");
            }
            for s in &shards {
                let first: Vec<u64> = s.indices().take_while(|i| *i < 100).collect();
                assert!(first.iter().all(|i| s.contains(*i)));
                assert_eq!(first.len() as u64, (0..100).filter(|i| s.contains(*i)).count() as u64);
            }
        }
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        for bad in ["4/4", "1/0", "x/2", "3", "-1/2"] {
            assert!(bad.parse::<Shard>().unwrap_err().contains("expected I/N"), "{bad}");
        }
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m5s"), Ok(Duration::from_secs(5405)));
        for bad in ["", "m", "10x", "10m5", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_determinism_sample_is_about_its_share() {
        let share: Ratio = "1/20".parse().unwrap();
        let hits = (0..20_000).filter(|i| sampled_for_determinism(Seed(7).nth(*i), share)).count();
        assert!((800..1200).contains(&hits), "{hits} of 20000 at 1/20");
        assert!(!(0..100).any(|i| sampled_for_determinism(Seed(i), Ratio::NEVER)));
        assert!((0..100).all(|i| sampled_for_determinism(Seed(i), Ratio::ALWAYS)));
    }

    #[test]
    fn every_failure_class_has_its_own_exit_code() {
        let classes = [
            FailureClass::Invariant,
            FailureClass::Liveness,
            FailureClass::Panic,
            FailureClass::Nondeterminism,
        ];
        let mut codes: Vec<u8> = classes.iter().map(|c| exit_code(*c)).collect();
        codes.extend([EXIT_PASS, EXIT_USAGE]);
        let distinct: std::collections::BTreeSet<u8> = codes.iter().copied().collect();
        assert_eq!(distinct.len(), codes.len(), "exit codes collide: {codes:?}");
        assert_eq!(codes, [3, 4, 5, 6, 0, 2], "the README's table");
    }

    #[test]
    fn a_campaign_exits_with_the_code_of_its_first_failure() {
        let pass = SeedOutcome::Pass;
        let live = SeedOutcome::Fail(FailureClass::Liveness, "alarm pending".into());
        let diverged = SeedOutcome::Fail(FailureClass::Nondeterminism, "event #4".into());
        assert_eq!(campaign_exit_code([&pass, &pass]), EXIT_PASS);
        assert_eq!(campaign_exit_code([&pass, &live, &diverged]), EXIT_LIVENESS);
        assert_eq!(campaign_exit_code([&diverged, &live]), EXIT_NONDETERMINISM);
        assert_eq!(diverged.name(), "nondeterministic");
        assert_eq!(live.name(), "fail");
    }
}
