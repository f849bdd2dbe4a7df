//! Running scenarios over many seeds: the outcome of each seed, as the CLI prints it.

use std::time::Duration;

use dosim_sim::determinism::{self, CheckError};
use dosim_sim::{FaultCounts, Seed};

use crate::Scenario;

/// How one seed of a scenario ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeedOutcome {
    /// Every check passed.
    Pass,
    /// A check failed, something panicked, or the run deadlocked or timed out.
    Fail(String),
    /// Two runs of the seed gave different traces.
    Nondeterministic(String),
}

impl SeedOutcome {
    /// `pass`, `fail` or `nondeterministic`.
    pub fn name(&self) -> &'static str {
        match self {
            SeedOutcome::Pass => "pass",
            SeedOutcome::Fail(_) => "fail",
            SeedOutcome::Nondeterministic(_) => "nondeterministic",
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
                SeedOutcome::Fail(f.kind.to_string()),
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
                SeedOutcome::Nondeterministic(format!("first divergent event #{}", divergence.index)),
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
