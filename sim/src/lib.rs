//! The deterministic world of dosim: seeded nodes, network, disks and faults on madsim, with a canonical event
//! trace per run.
//!
//! `sim` knows nothing of Durable Objects. It offers:
//! - [`Sim`]: a run of nodes under a seed, network, disk and fault plan, on madsim's simulated executor and clock;
//! - [`net`]: datagrams between nodes with latency, loss, duplication, reordering, partitions and clogs;
//!   every node also has an IP address on madsim's own network ([`node_ip`]), which partitions, clogs and
//!   crashes cut too;
//! - [`disk`]: `SimDisk`, a crash-consistent disk per node that survives restarts;
//! - [`sqlite`]: a SQLite VFS on `SimDisk`;
//! - [`Trace`]: every event of a run, and its hash;
//! - [`harness`] and [`determinism`]: seeds, replay and the determinism check for tests;
//! - [`regressions`]: regression files (seeds that once failed, with plan masks), which the harness replays first.
//!
//! Everything that needs madsim's executor is compiled only with `--cfg madsim`; the disk, SQLite and trace
//! also work in a plain build through [`LocalWorld`].

mod clock;
mod context;
#[cfg(madsim)]
pub mod determinism;
pub mod disk;
mod fault;
#[cfg(madsim)]
pub mod harness;
mod local;
#[cfg(madsim)]
mod log;
#[cfg(madsim)]
pub mod net;
mod ratio;
pub mod regressions;
mod report;
mod rng;
mod seed;
pub mod sqlite;
mod trace;
#[cfg(madsim)]
mod world;

pub use clock::{true_unix_now, unix_now, LOCAL_EPOCH_UNIX_SECS};
pub use context::{
    always, current_node, current_seed, eventually, eventually_unmet, note, random, sometimes,
    sometimes_count, sometimes_if,
};
pub use disk::{CrashMode, DiskConfig, Durability, LatencyRange};
pub use fault::{
    Direction, DiskFaultAt, DiskFaultKind, Fault, FaultCounts, FaultKind, FaultPlan, PlanError, RandomFaults,
    ScriptedFault, UnknownFault, RANDOM_FAULT_KINDS,
};
pub use local::LocalWorld;
pub use ratio::{Ratio, RatioError};
pub use report::{
    Evidence, Failure, FailureClass, FailureKind, RunFailure, RunOptions, RunReport, BROKEN_INVARIANT,
    REPORT_FAULTS_MAX, REPORT_TAIL_EVENTS,
};
pub use rng::{Purpose, SimRng};
pub use seed::{Seed, SeedError};
pub use trace::{
    node_at_ip, node_ip, Addr, CrashOutcome, DiskOp, DropReason, Event, EventKind, NodeAction, NodeId, Trace,
    TraceMode, MAX_NODES, TRACE_TAIL_MAX,
};
#[cfg(madsim)]
pub use world::{NodeConfig, NodeState, Program, Sim, SimBuilder, SimError, World, TIME_LIMIT_DEFAULT};
