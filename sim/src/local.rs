//! A one-node world without madsim: a `SimDisk` and SQLite on it, for benches and plain tests.

use std::rc::Rc;
use std::sync::MutexGuard;

use crate::context::{self, Installed, NodeInfo, RunCtx};
use crate::disk::{self, DiskConfig, Durability};
use crate::fault::{FaultCounts, FaultKind, PlanError};
use crate::seed::Seed;
use crate::sqlite;
use crate::trace::{EventKind, NodeAction, NodeId, Trace, TraceMode};

/// A single node `n0` with a simulated disk, run on the calling thread with no simulated network or clock.
///
/// With no clock, no operation's latency ever elapses, so the disk makes every operation durable at its call
/// ([`Durability::AtCall`]) whatever the config says: a synchronous call on a real disk returns after its
/// latency, and here nothing else runs meanwhile that could tell the difference.
///
/// It installs itself as this thread's run until dropped, and holds the process-wide run lock meanwhile, so
/// SQLite's global PRNG is seeded from `seed` and no other run can disturb it.
pub struct LocalWorld {
    ctx: Rc<RunCtx>,
    // Field order is drop order: uninstall before releasing the lock.
    _installed: Installed,
    _lock: MutexGuard<'static, ()>,
}

impl Drop for LocalWorld {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.check_no_deferred_panic();
        }
    }
}

impl LocalWorld {
    /// A world for `seed` whose disk follows `config`, with [`Durability::AtCall`] (see [`LocalWorld`]).
    pub fn new(seed: Seed, config: DiskConfig) -> Result<LocalWorld, PlanError> {
        config.validate()?;
        let config = DiskConfig { durability: Durability::AtCall, ..config };
        let lock = context::lock_runs();
        let node = NodeInfo { clock_skew_ns: 0 };
        let ctx = Rc::new(RunCtx::new(seed, TraceMode::Full, vec![node], config, Some(NodeId(0))));
        let installed = context::install(ctx.clone());
        sqlite::reset_prng(seed);
        ctx.record(Some(NodeId(0)), EventKind::Node(NodeAction::Start));
        Ok(LocalWorld { ctx, _installed: installed, _lock: lock })
    }

    /// The node of this world.
    pub fn node(&self) -> NodeId {
        NodeId(0)
    }

    /// Cuts the power: pending writes are resolved by the disk's crash mode, open handles go stale, and the
    /// disk fails every operation until [`LocalWorld::restart`].
    pub fn power_cut(&self) {
        self.ctx.count_fault(FaultKind::PowerCut);
        self.ctx.record(Some(NodeId(0)), EventKind::Node(NodeAction::PowerCut));
        let mut set = self.ctx.disks.borrow_mut();
        disk::power_off(&self.ctx, &mut set, NodeId(0));
        disk::take_unhandled_cuts(&mut set);
    }

    /// Crashes the process: open handles go stale, the disk keeps everything.
    pub fn crash(&self) {
        self.ctx.count_fault(FaultKind::Crash);
        self.ctx.record(Some(NodeId(0)), EventKind::Node(NodeAction::Crash));
        disk::process_crashed(&mut self.ctx.disks.borrow_mut(), NodeId(0));
    }

    /// Boots the node again: the disk powers on.
    pub fn restart(&self) {
        self.ctx.count_fault(FaultKind::Restart);
        self.ctx.record(Some(NodeId(0)), EventKind::Node(NodeAction::Restart));
        let mut set = self.ctx.disks.borrow_mut();
        disk::take_unhandled_cuts(&mut set);
        disk::power_on(&mut set, NodeId(0));
    }

    /// True if an armed power cut has fired and the node has not been restarted since.
    pub fn is_powered_off(&self) -> bool {
        !self.ctx.disks.borrow().is_powered(NodeId(0))
    }

    /// A copy of the trace so far.
    pub fn trace(&self) -> Trace {
        self.ctx.trace.borrow().clone()
    }

    /// Panics if a panic was caught inside a SQLite callback (where it could not unwind) since the world
    /// was created. Dropping the world checks this too.
    pub fn check_no_deferred_panic(&self) {
        if let Some(msg) = self.ctx.deferred_panic.borrow_mut().take() {
            panic!("{msg}");
        }
    }

    /// The faults injected so far.
    pub fn faults(&self) -> FaultCounts {
        self.ctx.faults.borrow().clone()
    }
}
