//! The state of the run on this thread: trace, fault counters, random streams, disks and nodes.
//!
//! A run is single-threaded (madsim runs every task on the thread that called `block_on`), so its state lives
//! in a thread-local installed for the run's duration. Each `RefCell` is borrowed only inside a synchronous call,
//! never across an `.await`, and never while another part of the context is being called into.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::disk::{DiskConfig, DiskSet};
use crate::fault::{FaultCounts, FaultKind};
use crate::rng::{Purpose, SimRng};
use crate::seed::Seed;
use crate::trace::{EventKind, NodeId, Trace, TraceMode};

/// One run at a time per process: SQLite's PRNG and std's hash keys are process- or thread-global, so
/// concurrent runs in one process would perturb each other.
static RUN_LOCK: Mutex<()> = Mutex::new(());

/// Takes the process-wide run lock. A run that panicked while holding it does not poison later runs.
pub(crate) fn lock_runs() -> MutexGuard<'static, ()> {
    RUN_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Per-node facts the context needs to stamp events and read clocks.
#[derive(Debug, Clone)]
pub(crate) struct NodeInfo {
    /// Offset of this node's wall clock from simulated true time, in nanoseconds.
    pub(crate) clock_skew_ns: i64,
}

pub(crate) struct RunCtx {
    pub(crate) seed: Seed,
    pub(crate) trace: RefCell<Trace>,
    pub(crate) faults: RefCell<FaultCounts>,
    pub(crate) sometimes: RefCell<BTreeMap<String, u64>>,
    /// Each `eventually` point's latest evaluation.
    pub(crate) eventually: RefCell<BTreeMap<String, bool>>,
    rngs: Vec<RefCell<SimRng>>,
    pub(crate) disks: RefCell<DiskSet>,
    pub(crate) nodes: Vec<NodeInfo>,
    /// madsim node → our node, for stamping events with the node of the running task.
    #[cfg(madsim)]
    pub(crate) madsim_nodes: RefCell<BTreeMap<madsim::task::NodeId, NodeId>>,
    #[cfg(madsim)]
    pub(crate) net: RefCell<crate::net::NetState>,
    #[cfg(madsim)]
    pub(crate) world: RefCell<crate::world::WorldState>,
    /// Simulated time when the scenario's main future finished.
    #[cfg(madsim)]
    pub(crate) sim_end: std::cell::Cell<Option<Duration>>,
    /// Set once the scenario's main future has finished: teardown events are not part of the run.
    pub(crate) tearing_down: std::cell::Cell<bool>,
    /// A panic that could not unwind where it happened (inside a SQLite callback), re-raised by the run.
    pub(crate) deferred_panic: RefCell<Option<String>>,
    /// The node of a run without madsim ([`crate::LocalWorld`]).
    pub(crate) fixed_node: Option<NodeId>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<RunCtx>>> = const { RefCell::new(None) };
}

impl RunCtx {
    pub(crate) fn new(
        seed: Seed,
        mode: TraceMode,
        nodes: Vec<NodeInfo>,
        disk: DiskConfig,
        fixed_node: Option<NodeId>,
    ) -> RunCtx {
        let node_count = nodes.len() as u32;
        RunCtx {
            seed,
            trace: RefCell::new(Trace::new(mode)),
            faults: RefCell::new(FaultCounts::default()),
            sometimes: RefCell::new(BTreeMap::new()),
            eventually: RefCell::new(BTreeMap::new()),
            rngs: Purpose::ALL.iter().map(|p| RefCell::new(SimRng::new(seed, *p))).collect(),
            disks: RefCell::new(DiskSet::new(disk, node_count)),
            nodes,
            #[cfg(madsim)]
            madsim_nodes: RefCell::new(BTreeMap::new()),
            #[cfg(madsim)]
            net: RefCell::new(crate::net::NetState::default()),
            #[cfg(madsim)]
            world: RefCell::new(crate::world::WorldState::new(0, None)),
            #[cfg(madsim)]
            sim_end: std::cell::Cell::new(None),
            tearing_down: std::cell::Cell::new(false),
            deferred_panic: RefCell::new(None),
            fixed_node,
        }
    }

    /// Records a panic that had to be caught (inside an FFI callback); the first one is kept.
    pub(crate) fn defer_panic(&self, msg: String) {
        self.deferred_panic.borrow_mut().get_or_insert(msg);
    }

    pub(crate) fn rng<T>(&self, purpose: Purpose, f: impl FnOnce(&mut SimRng) -> T) -> T {
        let idx = Purpose::ALL.iter().position(|p| *p == purpose).expect("every purpose has a stream");
        f(&mut self.rngs[idx].borrow_mut())
    }

    /// The node whose task is running now, if any.
    pub(crate) fn current_node(&self) -> Option<NodeId> {
        if let Some(n) = self.fixed_node {
            return Some(n);
        }
        #[cfg(madsim)]
        {
            let id = madsim::runtime::Handle::try_current().ok().map(|_| madsim::plugin::node())?;
            self.madsim_nodes.borrow().get(&id).copied()
        }
        #[cfg(not(madsim))]
        None
    }

    /// Simulated time since the start of the run.
    pub(crate) fn now(&self) -> Duration {
        #[cfg(madsim)]
        {
            madsim::time::TimeHandle::try_current().map(|t| t.elapsed()).unwrap_or_default()
        }
        #[cfg(not(madsim))]
        Duration::ZERO
    }

    pub(crate) fn record(&self, node: Option<NodeId>, kind: EventKind) {
        if self.tearing_down.get() {
            return;
        }
        let at = self.now();
        if tracing::enabled!(target: "dosim::sim", tracing::Level::DEBUG) {
            let node = node.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
            tracing::debug!(target: "dosim::sim", sim_time = ?at, %node, "{kind}");
        }
        self.trace.borrow_mut().record(at, node, kind);
    }

    pub(crate) fn count_fault(&self, kind: FaultKind) {
        self.faults.borrow_mut().add(kind, 1);
    }
}

/// Installs `ctx` as this thread's run until the guard drops.
pub(crate) struct Installed {
    _private: (),
}

impl Drop for Installed {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

pub(crate) fn install(ctx: Rc<RunCtx>) -> Installed {
    CURRENT.with(|c| {
        let mut slot = c.borrow_mut();
        assert!(slot.is_none(), "a simulation run is already installed on this thread");
        *slot = Some(ctx);
    });
    Installed { _private: () }
}

/// The run on this thread, if any.
pub(crate) fn try_current() -> Option<Rc<RunCtx>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// The run on this thread.
///
/// # Panics
/// Outside a run: simulated facilities only exist inside one.
pub(crate) fn current() -> Rc<RunCtx> {
    try_current().expect("this needs a running simulation (inside Sim::run or a LocalWorld)")
}

/// Records a named value in the trace of the current run. Outside a run it does nothing.
///
/// Use it for values that must be the same on every replay of a seed: it is how a scenario makes its
/// observable state part of the determinism check.
pub fn note(key: &str, value: impl std::fmt::Display) {
    if let Some(ctx) = try_current() {
        let node = ctx.current_node();
        ctx.record(node, EventKind::Note { key: key.to_string(), value: value.to_string() });
    }
}

/// Marks that a rare branch was reached ("sometimes" coverage). The run report counts each name, so a
/// campaign can check that every branch it cares about was reached under some seed.
pub fn sometimes(name: &str) {
    if let Some(ctx) = try_current() {
        *ctx.sometimes.borrow_mut().entry(name.to_string()).or_default() += 1;
    }
}

/// Asserts that `cond` holds every time this point is reached (an "always" assertion in code under test).
/// Inside a run a false `cond` fails the run as a broken invariant, with the seed; outside a run it does
/// nothing, so the assertion can stay in production code.
pub fn always(cond: bool, name: &str) {
    if cond || try_current().is_none() {
        return;
    }
    panic!("{}always: {name}", crate::report::BROKEN_INVARIANT);
}

/// Counts point `name` as reached if `cond` holds: [`sometimes`] with a condition.
pub fn sometimes_if(cond: bool, name: &str) {
    if cond {
        sometimes(name);
    }
}

/// Records the latest evaluation of an "eventually" property `name`: the property must hold by the end of
/// the run (after the faults stopped), whatever it was before. A scenario checks the points with
/// [`eventually_unmet`]. Outside a run it does nothing.
pub fn eventually(cond: bool, name: &str) {
    if let Some(ctx) = try_current() {
        ctx.eventually.borrow_mut().insert(name.to_string(), cond);
    }
}

/// The `eventually` points of the current run whose latest evaluation was false, in name order (empty
/// outside a run).
pub fn eventually_unmet() -> Vec<String> {
    try_current().map_or_else(Vec::new, |ctx| {
        ctx.eventually.borrow().iter().filter(|(_, ok)| !**ok).map(|(n, _)| n.clone()).collect()
    })
}

/// How many times the current run has reached [`sometimes`] point `name` so far (0 outside a run). A test
/// uses it to show that the path it claims to test was taken.
pub fn sometimes_count(name: &str) -> u64 {
    try_current().map_or(0, |ctx| ctx.sometimes.borrow().get(name).copied().unwrap_or(0))
}

/// Draws from the run's random stream for `purpose`.
///
/// # Panics
/// Outside a run.
pub fn random<T>(purpose: Purpose, f: impl FnOnce(&mut SimRng) -> T) -> T {
    current().rng(purpose, f)
}

/// The node whose task is running now, if inside a run and a node's task.
pub fn current_node() -> Option<NodeId> {
    try_current().and_then(|ctx| ctx.current_node())
}

/// The seed of the current run.
///
/// # Panics
/// Outside a run.
pub fn current_seed() -> Seed {
    current().seed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_fails_a_run_and_nothing_outside_one_and_eventually_keeps_the_latest_evaluation() {
        always(false, "outside a run: nothing");
        eventually(false, "outside a run: nothing");
        assert!(eventually_unmet().is_empty());
        let world = crate::LocalWorld::new(Seed(1), crate::DiskConfig::instant()).unwrap();
        always(true, "holds");
        let broken = std::panic::catch_unwind(|| always(false, "balance is positive")).unwrap_err();
        let message = broken.downcast_ref::<String>().cloned().unwrap_or_default();
        assert_eq!(message, format!("{}always: balance is positive", crate::report::BROKEN_INVARIANT));
        eventually(false, "converged");
        eventually(false, "drained");
        eventually(true, "drained");
        assert_eq!(eventually_unmet(), vec!["converged".to_string()]);
        sometimes_if(false, "rare");
        sometimes_if(true, "common");
        assert_eq!((sometimes_count("rare"), sometimes_count("common")), (0, 1));
        drop(world);
    }
}
