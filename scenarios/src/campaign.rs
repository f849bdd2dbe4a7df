//! Running scenarios over many seeds: the outcome of each seed, as the CLI prints it, and the exit code of a
//! campaign.

use std::time::Duration;

use dosim_sim::determinism::{self, CheckError};
use dosim_sim::{FailureClass, FaultCounts, RunOptions, Seed};

use crate::Scenario;

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
