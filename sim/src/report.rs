//! What a run produces: a report when it passes, a failure when it does not.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::fault::FaultCounts;
use crate::seed::Seed;
use crate::trace::Trace;

/// How many of the last events a failure report shows.
pub const REPORT_TAIL_EVENTS: usize = 40;
/// How many of the faults before a violation a failure report shows (the latest ones).
pub const REPORT_FAULTS_MAX: usize = 20;

/// What a check names behind a violation: the operations and values it rests on, and the stretch of simulated
/// time it lies in. A failure report shows these first, then the faults injected before the stretch ended,
/// then the events inside it (instead of the run's last events, which are the final checks' reads).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    /// One line each: the operations (with their times and outcomes) and values behind the violation.
    pub lines: Vec<String>,
    /// The stretch of simulated time the violation lies in, from the first operation it names to the last.
    pub window: Option<(Duration, Duration)>,
}

impl Evidence {
    /// True if it names nothing.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.window.is_none()
    }
}

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

/// The start of a panic message that reports a broken invariant (see [`crate::invariant!`]): a run that
/// panics with it failed a safety check, not by crashing.
pub const BROKEN_INVARIANT: &str = "broken invariant: ";

/// Why a run failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The scenario's checks found a violated safety property (with [`crate::ensure!`], or a node's
    /// [`crate::invariant!`]).
    Check(String),
    /// Something was still pending after the liveness phase (a scenario's [`crate::ensure_live!`]).
    Pending(String),
    /// Code in the simulation panicked (an unwrap, an assertion that is not a declared invariant).
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
            FailureKind::Pending(m) => write!(f, "liveness: still pending after the liveness phase: {m}"),
            FailureKind::Panic(m) => write!(f, "panic: {m}"),
            FailureKind::Deadlock => write!(f, "deadlock: no events, every task will block forever"),
            FailureKind::TimeLimit(d) => write!(f, "simulated time limit of {d:?} exceeded"),
            FailureKind::Config(m) => write!(f, "invalid configuration: {m}"),
        }
    }
}

impl FailureKind {
    /// The class of the failure, which the CLI's exit code reports.
    pub fn class(&self) -> FailureClass {
        match self {
            FailureKind::Check(_) => FailureClass::Invariant,
            FailureKind::Pending(_) | FailureKind::Deadlock | FailureKind::TimeLimit(_) => {
                FailureClass::Liveness
            }
            FailureKind::Panic(_) | FailureKind::Config(_) => FailureClass::Panic,
        }
    }

    /// The kind of a run that panicked with `msg`: a declared invariant ([`BROKEN_INVARIANT`]), madsim's
    /// deadlock or time limit, or any other panic.
    #[cfg(any(madsim, test))]
    pub(crate) fn of_panic(msg: String, limit: Duration) -> FailureKind {
        if let Some(m) = msg.strip_prefix(BROKEN_INVARIANT) {
            FailureKind::Check(m.to_string())
        } else if msg.contains("all tasks will block forever") {
            FailureKind::Deadlock
        } else if msg.starts_with("time limit exceeded") {
            FailureKind::TimeLimit(limit)
        } else {
            FailureKind::Panic(msg)
        }
    }
}

/// The classes of failure a campaign tells apart (the `dosim` CLI exits with a distinct code for each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailureClass {
    /// A safety check failed: an invariant is broken ([`FailureKind::Check`]).
    Invariant,
    /// Something never happened: pending after the liveness phase, a deadlock, or the time limit
    /// ([`FailureKind::Pending`], [`FailureKind::Deadlock`], [`FailureKind::TimeLimit`]).
    Liveness,
    /// The simulation crashed: a panic that is not a declared invariant, or a configuration that cannot run
    /// ([`FailureKind::Panic`], [`FailureKind::Config`]).
    Panic,
    /// Two runs of one seed gave different traces (the determinism check).
    Nondeterminism,
}

impl FailureClass {
    /// `invariant`, `liveness`, `panic` or `nondeterminism`: the name in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            FailureClass::Invariant => "invariant",
            FailureClass::Liveness => "liveness",
            FailureClass::Panic => "panic",
            FailureClass::Nondeterminism => "nondeterminism",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The options a run's scenario derived from its seed, as `key=value` pairs in a fixed order, the seed
/// first. A scenario prints them before its run and a failure report repeats them, so a reader sees what
/// the seed chose without replaying it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    entries: Vec<(String, String)>,
}

impl RunOptions {
    /// Options that start with `seed=…`.
    pub fn new(seed: Seed) -> RunOptions {
        RunOptions { entries: vec![("seed".to_string(), seed.to_string())] }
    }

    /// No options at all (a run whose builder named none).
    pub fn none() -> RunOptions {
        RunOptions { entries: Vec::new() }
    }

    /// Adds `key=value`.
    ///
    /// # Panics
    /// If `key` is already there, or holds `=` or whitespace, or `value` holds a line break: each option
    /// must print as one unambiguous line.
    pub fn with(mut self, key: &str, value: impl fmt::Display) -> RunOptions {
        let value = value.to_string();
        assert!(
            !key.is_empty() && !key.contains(|c: char| c == '=' || c.is_whitespace()),
            "option key {key:?} must be a non-empty word without '='"
        );
        assert!(!value.contains('\n'), "option {key} has a line break in {value:?}");
        assert!(self.get(key).is_none(), "option {key} given twice");
        self.entries.push((key.to_string(), value));
        self
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every `(key, value)`, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// True if there is none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Display for RunOptions {
    /// One `key=value` line per option.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in self.iter() {
            writeln!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// A failed run, with everything needed to understand and replay it.
#[derive(Clone, Debug)]
pub struct RunFailure {
    /// The seed it ran under.
    pub seed: Seed,
    /// What went wrong.
    pub kind: FailureKind,
    /// The options the scenario derived from the seed (empty if it named none).
    pub options: RunOptions,
    /// Its trace up to the failure.
    pub trace: Trace,
    /// The faults injected before the failure.
    pub faults: FaultCounts,
    /// Simulated time at the failure.
    pub sim_time: Duration,
    /// Wall-clock time until the failure.
    pub wall_time: Duration,
    /// What the failed check names behind the violation (empty if it named nothing).
    pub evidence: Evidence,
}

impl RunFailure {
    /// The trace hash up to the failure.
    pub fn trace_hash(&self) -> u64 {
        self.trace.hash()
    }

    /// A run that passed its own checks but failed one made afterwards, over its history or trace:
    /// `failure` with the run's trace, faults and times, and `options` (what the seed chose).
    pub fn after(report: RunReport, options: RunOptions, failure: Failure) -> RunFailure {
        let evidence = failure.evidence.clone();
        RunFailure {
            seed: report.seed,
            kind: failure.into_kind(),
            options,
            trace: report.trace,
            faults: report.faults,
            sim_time: report.sim_time,
            wall_time: report.wall_time,
            evidence,
        }
    }

    /// The faults and node actions of the trace up to `until` (all of them if `None`), the latest
    /// [`REPORT_FAULTS_MAX`] of them.
    pub fn faults_before(&self, until: Option<Duration>) -> Vec<&crate::trace::Event> {
        use crate::trace::{EventKind, NodeAction};
        let faults: Vec<&crate::trace::Event> = self
            .trace
            .events()
            .iter()
            .filter(|e| until.is_none_or(|u| e.at <= u))
            .filter(|e| match &e.kind {
                EventKind::Fault { .. } | EventKind::DiskCrash(_) => true,
                EventKind::Node(a) => !matches!(a, NodeAction::Start),
                _ => false,
            })
            .collect();
        faults[faults.len().saturating_sub(REPORT_FAULTS_MAX)..].to_vec()
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
        if !self.options.is_empty() {
            writeln!(f, "  options:")?;
            for (k, v) in self.options.iter() {
                writeln!(f, "    {k}={v}")?;
            }
        }
        if !self.evidence.lines.is_empty() {
            writeln!(f, "  behind the violation:")?;
            for line in &self.evidence.lines {
                writeln!(f, "    {line}")?;
            }
        }
        let until = self.evidence.window.map(|(_, end)| end);
        let faults = self.faults_before(until);
        if !faults.is_empty() {
            let when = if until.is_some() { "before the violation" } else { "in the run" };
            writeln!(f, "  faults {when} (the last {}):", faults.len())?;
            for e in faults {
                writeln!(f, "    {e}")?;
            }
        }
        match self.evidence.window {
            Some((start, end)) => {
                let inside: Vec<&crate::trace::Event> =
                    self.trace.events().iter().filter(|e| e.at >= start && e.at <= end).collect();
                let shown = &inside[inside.len().saturating_sub(REPORT_TAIL_EVENTS)..];
                writeln!(
                    f,
                    "  events from {start:?} to {end:?} (the last {} of {}):",
                    shown.len(),
                    inside.len()
                )?;
                for e in shown {
                    writeln!(f, "    {e}")?;
                }
            }
            None => {
                let tail = self.trace.tail(REPORT_TAIL_EVENTS);
                if !tail.is_empty() {
                    writeln!(f, "  last {} events:", tail.len())?;
                    for e in tail {
                        writeln!(f, "    {e}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl std::error::Error for RunFailure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_kind_has_its_class() {
        let limit = Duration::from_secs(1);
        let class = |k: FailureKind| k.class();
        assert_eq!(class(FailureKind::Check("lost".into())), FailureClass::Invariant);
        assert_eq!(class(Failure::new("lost").into_kind()), FailureClass::Invariant);
        assert_eq!(class(Failure::pending("never ran").into_kind()), FailureClass::Liveness);
        assert_eq!(class(FailureKind::Deadlock), FailureClass::Liveness);
        assert_eq!(class(FailureKind::TimeLimit(limit)), FailureClass::Liveness);
        assert_eq!(class(FailureKind::Panic("unwrap on None".into())), FailureClass::Panic);
        assert_eq!(class(FailureKind::Config("no nodes".into())), FailureClass::Panic);
        // Panics: a declared invariant is a broken invariant; madsim's own messages are liveness failures.
        let of_panic = |m: &str| FailureKind::of_panic(m.to_string(), limit);
        assert_eq!(
            of_panic(&format!("{BROKEN_INVARIANT}sum is 999")),
            FailureKind::Check("sum is 999".into())
        );
        assert_eq!(of_panic("no events, all tasks will block forever"), FailureKind::Deadlock);
        assert_eq!(of_panic("time limit exceeded: 1s"), FailureKind::TimeLimit(limit));
        assert_eq!(of_panic("index out of bounds"), FailureKind::Panic("index out of bounds".into()));
    }

    fn checked(alarm_ran: bool, sum: i64) -> Result<(), Failure> {
        crate::ensure_live!(alarm_ran, "the alarm never ran");
        crate::ensure!(sum == 1000, "balances sum to {sum}");
        Ok(())
    }

    #[test]
    fn the_check_macros_say_what_failed_and_how() {
        assert!(checked(true, 1000).is_ok());
        assert_eq!(
            checked(false, 1000).unwrap_err().into_kind(),
            FailureKind::Pending("the alarm never ran".into())
        );
        assert_eq!(
            checked(true, 999).unwrap_err().into_kind(),
            FailureKind::Check("balances sum to 999".into())
        );
        let panic =
            std::panic::catch_unwind(|| crate::invariant!(1 + 1 == 3, "arithmetic is off")).unwrap_err();
        let message = *panic.downcast::<String>().unwrap();
        assert_eq!(message, format!("{BROKEN_INVARIANT}arithmetic is off"));
        assert_eq!(
            FailureKind::of_panic(message, Duration::ZERO),
            FailureKind::Check("arithmetic is off".into())
        );
    }

    #[test]
    fn a_report_with_evidence_shows_the_operations_the_faults_before_and_the_events_of_the_window() {
        use crate::trace::{EventKind, NodeAction, NodeId, TraceMode};
        let mut trace = Trace::new(TraceMode::Full);
        let at = Duration::from_millis;
        trace.record(at(10), Some(NodeId(0)), EventKind::Node(NodeAction::Crash));
        trace.record(at(20), Some(NodeId(0)), EventKind::Note { key: "inside".into(), value: "1".into() });
        trace.record(at(90), Some(NodeId(0)), EventKind::Node(NodeAction::PowerCut));
        trace.record(at(95), None, EventKind::Note { key: "final-read".into(), value: "2".into() });
        let failure = Failure::new("lost").with_evidence(Evidence {
            lines: vec!["op#3 client 1 on a: Add(1) -> ok 4".into()],
            window: Some((at(15), at(30))),
        });
        let report = RunReport {
            seed: Seed(1),
            trace,
            faults: FaultCounts::default(),
            sometimes: BTreeMap::new(),
            sim_time: at(100),
            wall_time: Duration::ZERO,
        };
        let text = RunFailure::after(report, RunOptions::new(Seed(1)), failure).to_string();
        assert!(text.contains("behind the violation:\n    op#3 client 1 on a: Add(1) -> ok 4"), "{text}");
        assert!(text.contains("faults before the violation (the last 1):"), "{text}");
        let faults =
            text.split("faults before the violation").nth(1).and_then(|t| t.split("  events").next());
        let faults = faults.unwrap_or_default();
        assert!(
            faults.contains("Crash") && !faults.contains("PowerCut"),
            "only faults up to the window's end: {text}"
        );
        assert!(
            text.contains("inside = 1") && !text.contains("final-read"),
            "the window, not the tail: {text}"
        );
    }

    #[test]
    fn options_print_as_key_value_lines_starting_with_the_seed() {
        let o = RunOptions::new(Seed(0x2a)).with("faults", "crash,pause").with("waves", 30);
        assert_eq!(o.to_string(), "seed=0x000000000000002a\nfaults=crash,pause\nwaves=30\n");
        assert_eq!(o.get("waves"), Some("30"));
        assert!(std::panic::catch_unwind(|| RunOptions::none().with("a=b", 1)).is_err());
        assert!(std::panic::catch_unwind(|| RunOptions::none().with("a", 1).with("a", 2)).is_err());
    }
}

/// A property a scenario found violated, something still pending after the liveness phase, or an error it
/// could not handle.
///
/// Any `std::error::Error` converts into it (as a violated property), so scenario code can use `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    message: String,
    pending: bool,
    evidence: Evidence,
}

impl Failure {
    /// A violated safety property, or an error the scenario could not handle.
    pub fn new(msg: impl Into<String>) -> Failure {
        Failure { message: msg.into(), pending: false, evidence: Evidence::default() }
    }

    /// Something that should have happened by the end of the liveness phase and did not.
    pub fn pending(msg: impl Into<String>) -> Failure {
        Failure { message: msg.into(), pending: true, evidence: Evidence::default() }
    }

    /// The failure with what its check names behind it (see [`Evidence`]).
    pub fn with_evidence(mut self, evidence: Evidence) -> Failure {
        self.evidence = evidence;
        self
    }

    /// What its check names behind it.
    pub fn evidence(&self) -> &Evidence {
        &self.evidence
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The kind of run failure it makes: [`FailureKind::Pending`] or [`FailureKind::Check`].
    pub fn into_kind(self) -> FailureKind {
        if self.pending {
            FailureKind::Pending(self.message)
        } else {
            FailureKind::Check(self.message)
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure::new(e.to_string())
    }
}

/// Returns `Err(Failure)` (a violated safety property) from the enclosing function unless `cond` holds.
///
/// ```
/// fn check(count: u32) -> Result<(), dosim_sim::Failure> {
///     dosim_sim::ensure!(count == 100, "expected 100 increments, got {count}");
///     Ok(())
/// }
/// assert_eq!(check(99).unwrap_err().message(), "expected 100 increments, got 99");
/// assert!(check(100).is_ok());
/// ```
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Failure::new(format!($($fmt)+)));
        }
    };
}

/// Returns `Err(Failure::pending(…))` (a liveness failure) from the enclosing function unless `cond` holds:
/// for what must have happened once the faults stopped and the liveness phase passed, such as
/// `ensure_live!(alarm_ran, "the alarm of {name} never ran")`. The run fails with [`FailureKind::Pending`].
#[macro_export]
macro_rules! ensure_live {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Failure::pending(format!($($fmt)+)));
        }
    };
}

/// Panics with a [`BROKEN_INVARIANT`] message unless `cond` holds: for a safety property checked inside a
/// node's task, which has no way to return a [`Failure`] to the scenario, such as
/// `invariant!(sum == TOTAL, "balances sum to {sum}")`. The run fails with [`FailureKind::Check`], not as a
/// crash. (Examples as unit tests, not doctests: each doctest is one more binary to link.)
#[macro_export]
macro_rules! invariant {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            ::std::panic!("{}{}", $crate::BROKEN_INVARIANT, format_args!($($fmt)+));
        }
    };
}

impl From<crate::fault::PlanError> for RunFailure {
    /// A run that could not start. Its seed is unknown here; the harness that ran it fills it in.
    fn from(e: crate::fault::PlanError) -> RunFailure {
        RunFailure {
            seed: Seed(0),
            kind: FailureKind::Config(e.0),
            options: RunOptions::none(),
            trace: Trace::new(crate::trace::TraceMode::Full),
            faults: FaultCounts::default(),
            sim_time: Duration::ZERO,
            wall_time: Duration::ZERO,
            evidence: Evidence::default(),
        }
    }
}
