//! What a run produces: a report when it passes, a failure when it does not.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::fault::FaultCounts;
use crate::seed::Seed;
use crate::trace::Trace;

/// How many of the last events a failure report shows.
pub const REPORT_TAIL_EVENTS: usize = 40;

/// A passed run.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The seed it ran under.
    pub seed: Seed,
    /// Its trace.
    pub trace: Trace,
    /// The faults it injected, by kind.
    pub faults: FaultCounts,
    /// How often each "sometimes" mark was reached.
    pub sometimes: BTreeMap<String, u64>,
    /// Simulated time at the end.
    pub sim_time: Duration,
    /// Wall-clock time the run took.
    pub wall_time: Duration,
}

impl RunReport {
    /// The trace hash.
    pub fn trace_hash(&self) -> u64 {
        self.trace.hash()
    }
}

/// Why a run failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The scenario's checks found a violated property.
    Check(String),
    /// Code in the simulation panicked (a broken invariant, an unwrap).
    Panic(String),
    /// Every task is blocked and no timer is pending.
    Deadlock,
    /// Simulated time ran past the run's limit.
    TimeLimit(Duration),
    /// The run could not start: its configuration is invalid.
    Config(String),
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::Check(m) => write!(f, "check failed: {m}"),
            FailureKind::Panic(m) => write!(f, "panic: {m}"),
            FailureKind::Deadlock => write!(f, "deadlock: no events, every task will block forever"),
            FailureKind::TimeLimit(d) => write!(f, "simulated time limit of {d:?} exceeded"),
            FailureKind::Config(m) => write!(f, "invalid configuration: {m}"),
        }
    }
}

/// A failed run, with everything needed to understand and replay it.
#[derive(Clone, Debug)]
pub struct RunFailure {
    /// The seed it ran under.
    pub seed: Seed,
    /// What went wrong.
    pub kind: FailureKind,
    /// Its trace up to the failure.
    pub trace: Trace,
    /// The faults injected before the failure.
    pub faults: FaultCounts,
    /// Simulated time at the failure.
    pub sim_time: Duration,
    /// Wall-clock time until the failure.
    pub wall_time: Duration,
}

impl RunFailure {
    /// The trace hash up to the failure.
    pub fn trace_hash(&self) -> u64 {
        self.trace.hash()
    }
}

impl fmt::Display for RunFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "simulation failed")?;
        writeln!(f, "  seed:       {}", self.seed)?;
        writeln!(f, "  failure:    {}", self.kind)?;
        writeln!(f, "  trace hash: {:016x} ({} events)", self.trace_hash(), self.trace.len())?;
        writeln!(f, "  sim time:   {:?}", self.sim_time)?;
        writeln!(f, "  faults:     {}", self.faults)?;
        let tail = self.trace.tail(REPORT_TAIL_EVENTS);
        if !tail.is_empty() {
            writeln!(f, "  last {} events:", tail.len())?;
            for e in tail {
                writeln!(f, "    {e}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for RunFailure {}

/// A property a scenario found violated, or an error it could not handle.
///
/// Any `std::error::Error` converts into it, so scenario code can use `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl Failure {
    /// A failure with this message.
    pub fn new(msg: impl Into<String>) -> Failure {
        Failure(msg.into())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure(e.to_string())
    }
}

/// Returns `Err(Failure)` from the enclosing function unless `cond` holds.
///
/// ```
/// fn check(count: u32) -> Result<(), dosim_sim::Failure> {
///     dosim_sim::ensure!(count == 100, "expected 100 increments, got {count}");
///     Ok(())
/// }
/// assert_eq!(check(99).unwrap_err().0, "expected 100 increments, got 99");
/// assert!(check(100).is_ok());
/// ```
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Failure(format!($($fmt)+)));
        }
    };
}

impl From<crate::fault::PlanError> for RunFailure {
    /// A run that could not start. Its seed is unknown here; the harness that ran it fills it in.
    fn from(e: crate::fault::PlanError) -> RunFailure {
        RunFailure {
            seed: Seed(0),
            kind: FailureKind::Config(e.0),
            trace: Trace::new(crate::trace::TraceMode::Full),
            faults: FaultCounts::default(),
            sim_time: Duration::ZERO,
            wall_time: Duration::ZERO,
        }
    }
}
