//! One seed's result as a line of JSON: what `dosim run --json` prints, what a worker process sends back to
//! its parent, and what a campaign's report is built from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{SeedOutcome, SeedResult};
use crate::Scenario;
use dosim_sim::{FailureClass, Seed};

/// One seed's result, as plain data. Serialized, it is one line of `dosim run --json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedRecord {
    /// The scenario's name.
    pub scenario: String,
    /// The seed, as `0x` and 16 hex digits.
    pub seed: String,
    /// `pass`, `fail` or `nondeterministic` ([`SeedOutcome::name`]).
    pub outcome: String,
    /// The trace hash, 16 hex digits.
    pub trace_hash: String,
    /// How many events the trace holds.
    pub events: u64,
    /// Simulated milliseconds.
    pub sim_ms: u64,
    /// Wall-clock milliseconds (with `wall_us`, the fields that differ between two runs of a seed).
    pub wall_ms: u64,
    /// Wall-clock microseconds: what a campaign's statistics are taken from (many seeds take under 1 ms).
    #[serde(default)]
    pub wall_us: u64,
    /// The options the scenario derived from the seed, the seed among them.
    pub options: BTreeMap<String, String>,
    /// The failure's one-line description; `null` for a pass.
    pub failure: Option<String>,
    /// The failure's class (`invariant`, `liveness`, `panic`, `nondeterminism`); `null` for a pass.
    pub class: Option<String>,
    /// The command that replays the failure; `null` for a pass.
    pub replay: Option<String>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// "Sometimes" marks reached, by name.
    pub sometimes: BTreeMap<String, u64>,
    /// True if the seed ran twice and its traces were compared.
    pub determinism_checked: bool,
    /// The full failure report. Only workers send it (a campaign writes it to `failures/`); `run --json`
    /// leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
}

/// The command that replays a seed: `cargo dosim run <scenario> --seed <seed>`, with `--negative-control`
/// if the run was one.
pub fn replay_command(scenario: &str, seed: Seed, negative_control: bool) -> String {
    let control = if negative_control { " --negative-control" } else { "" };
    format!("cargo dosim run {scenario} --seed {seed}{control}")
}

impl SeedRecord {
    /// The record of a seed's result; `negative_control` says whether the run was one (its replay command
    /// says so too).
    pub fn new(r: &SeedResult, negative_control: bool, determinism_checked: bool) -> SeedRecord {
        let (class, failure, replay) = match &r.outcome {
            SeedOutcome::Pass => (None, None, None),
            SeedOutcome::Fail(class, m) => (
                Some(class.name().to_string()),
                Some(m.clone()),
                Some(replay_command(r.scenario, r.seed, negative_control)),
            ),
        };
        SeedRecord {
            scenario: r.scenario.to_string(),
            seed: r.seed.to_string(),
            outcome: r.outcome.name().to_string(),
            trace_hash: format!("{:016x}", r.trace_hash),
            events: r.events,
            sim_ms: r.sim_time.as_millis() as u64,
            wall_ms: r.wall_time.as_millis() as u64,
            wall_us: r.wall_time.as_micros() as u64,
            options: r.options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            failure,
            class,
            replay,
            faults: r.faults.iter().map(|(k, n)| (k.name().to_string(), n)).collect(),
            sometimes: r.sometimes.clone(),
            determinism_checked,
            report: r.report.clone(),
        }
    }

    /// The record of a seed whose worker process died under it (an abort, a signal, running out of
    /// memory): a crash, with the worker's exit status as its description.
    pub fn worker_died(scenario: &Scenario, seed: Seed, negative_control: bool, status: &str) -> SeedRecord {
        let failure = format!("the worker process running this seed exited: {status}");
        SeedRecord {
            scenario: scenario.name.to_string(),
            seed: seed.to_string(),
            outcome: SeedOutcome::Fail(FailureClass::Panic, String::new()).name().to_string(),
            trace_hash: format!("{:016x}", 0),
            events: 0,
            sim_ms: 0,
            wall_ms: 0,
            wall_us: 0,
            options: (scenario.options)(seed).iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            failure: Some(failure.clone()),
            class: Some(FailureClass::Panic.name().to_string()),
            replay: Some(replay_command(scenario.name, seed, negative_control)),
            faults: BTreeMap::new(),
            sometimes: BTreeMap::new(),
            determinism_checked: false,
            report: Some(format!("{failure}\n(its stderr above says more)\n")),
        }
    }

    /// The failure's class, parsed back from its name; `None` for a pass.
    pub fn failure_class(&self) -> Option<FailureClass> {
        super::failure_class(self.class.as_deref()?)
    }

    /// The line `dosim run --json` prints: this record without the full report.
    pub fn json_line(&self) -> String {
        let mut r = self.clone();
        r.report = None;
        serde_json::to_string(&r).expect("a record serializes")
    }
}
