//! The determinism check: run a seed twice, each on a fresh thread and runtime, and compare the traces event
//! by event.
//!
//! The second run is *perturbed*: it takes its thread's std hash keys from the OS instead of the seed, so code
//! whose behaviour depends on `HashMap`/`HashSet` iteration order diverges. State leaking between runs in one
//! process (a static counter, SQLite's process-global PRNG left unseeded) diverges because the second run starts
//! from where the first left it.

use std::fmt;

use crate::report::{FailureClass, RunFailure, RunReport};
use crate::seed::Seed;
use crate::trace::{Event, Trace};

/// Where two traces of one seed first differ.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// The index of the first event that differs.
    pub index: u64,
    /// That event in the first trace (`None`: the first trace ended there).
    pub first: Option<Event>,
    /// That event in the second trace (`None`: the second trace ended there).
    pub second: Option<Event>,
    /// The events just before it, which both traces agree on.
    pub context: Vec<Event>,
}

/// How many agreed events a divergence report shows before the first difference.
pub const DIVERGENCE_CONTEXT_EVENTS: usize = 5;

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "first divergent event: #{}", self.index)?;
        let show = |e: &Option<Event>| match e {
            Some(e) => e.to_string(),
            None => "(trace ended)".to_string(),
        };
        writeln!(f, "  first run:  {}", show(&self.first))?;
        writeln!(f, "  second run: {}", show(&self.second))?;
        if !self.context.is_empty() {
            writeln!(f, "  agreed events before it:")?;
            for e in &self.context {
                writeln!(f, "    {e}")?;
            }
        }
        Ok(())
    }
}

/// Compares two traces event by event. `None` if they are the same.
///
/// # Panics
/// If either trace kept only its hash ([`crate::TraceMode::HashOnly`]) and the hashes differ: there is nothing
/// to compare event by event.
pub fn compare(a: &Trace, b: &Trace) -> Option<Divergence> {
    if a.hash() == b.hash() && a.len() == b.len() {
        return None;
    }
    assert!(a.is_full() && b.is_full(), "the determinism check needs full traces (TraceMode::Full)");
    let (ea, eb) = (a.events(), b.events());
    let index = ea.iter().zip(eb).position(|(x, y)| x != y).unwrap_or(ea.len().min(eb.len()));
    Some(Divergence {
        index: index as u64,
        first: ea.get(index).cloned(),
        second: eb.get(index).cloned(),
        context: ea[index.saturating_sub(DIVERGENCE_CONTEXT_EVENTS)..index].to_vec(),
    })
}

/// Why the determinism check failed.
#[derive(Debug)]
pub enum CheckError {
    /// The runs agreed, and the run itself failed.
    Failed(Box<RunFailure>),
    /// The two runs of the seed recorded different traces.
    Diverged {
        /// The seed.
        seed: Seed,
        /// The hash of each run's trace.
        hashes: (u64, u64),
        /// Where they part.
        divergence: Box<Divergence>,
    },
}

impl CheckError {
    /// The class of the failure: the run's own, or [`FailureClass::Nondeterminism`] for a divergence.
    pub fn class(&self) -> FailureClass {
        match self {
            CheckError::Failed(f) => f.kind.class(),
            CheckError::Diverged { .. } => FailureClass::Nondeterminism,
        }
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Failed(r) => write!(f, "{r}"),
            CheckError::Diverged { seed, hashes, divergence } => {
                writeln!(f, "nondeterminism: seed {seed} gave two different traces")?;
                writeln!(f, "  trace hashes: {:016x} vs {:016x}", hashes.0, hashes.1)?;
                write!(f, "  {divergence}")
            }
        }
    }
}

impl std::error::Error for CheckError {}

fn trace_of(r: &Result<RunReport, RunFailure>) -> &Trace {
    match r {
        Ok(rep) => &rep.trace,
        Err(f) => &f.trace,
    }
}

/// Runs `body(seed)` twice, the second time perturbed, and compares the traces.
///
/// `body` must build and run one [`crate::Sim`] for the seed (it is what a `sim_test!` body is).
pub fn check(
    seed: Seed,
    body: impl Fn(Seed) -> Result<RunReport, RunFailure>,
) -> Result<RunReport, CheckError> {
    let first = body(seed);
    crate::world::perturb_next_run();
    let second = body(seed);
    if let Some(divergence) = compare(trace_of(&first), trace_of(&second)) {
        return Err(CheckError::Diverged {
            seed,
            hashes: (trace_of(&first).hash(), trace_of(&second).hash()),
            divergence: Box::new(divergence),
        });
    }
    first.map_err(|f| CheckError::Failed(Box::new(f)))
}
