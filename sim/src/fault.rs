//! Fault kinds, their counters, and the fault plan of a run.
//!
//! Fault verbs come in fixed pairs: crash/restart, power-cut/restart, pause/resume, partition/heal,
//! clog/unclog. Every injected fault is counted by kind, so a run shows which faults fired and a plan that never
//! fires is visible in its report.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::trace::NodeId;

/// Every kind of fault the world can inject, counted separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// A node's process crashed: memory lost, disk (even unsynced writes) kept.
    Crash,
    /// A node lost power: memory and unsynced disk writes lost.
    PowerCut,
    /// A node booted again after a crash or power cut.
    Restart,
    /// A node stopped executing.
    Pause,
    /// A paused node continued.
    Resume,
    /// A set of links was cut.
    Partition,
    /// All partitions were healed.
    Heal,
    /// A node or link started holding its messages.
    Clog,
    /// A clog was lifted and its held messages released.
    Unclog,
    /// A message was lost at random.
    MessageLoss,
    /// A message was delivered twice.
    MessageDuplicate,
    /// A message was delayed beyond the normal latency, so later ones overtake it.
    MessageReorder,
    /// A disk operation failed with EIO.
    DiskIoError,
    /// A disk write failed with ENOSPC.
    DiskFull,
    /// A pending write was lost by a power cut.
    DiskLostWrite,
    /// A pending write reached the disk in part at a power cut.
    DiskTornWrite,
}

impl FaultKind {
    /// Every kind, in report order.
    pub const ALL: [FaultKind; 16] = [
        FaultKind::Crash,
        FaultKind::PowerCut,
        FaultKind::Restart,
        FaultKind::Pause,
        FaultKind::Resume,
        FaultKind::Partition,
        FaultKind::Heal,
        FaultKind::Clog,
        FaultKind::Unclog,
        FaultKind::MessageLoss,
        FaultKind::MessageDuplicate,
        FaultKind::MessageReorder,
        FaultKind::DiskIoError,
        FaultKind::DiskFull,
        FaultKind::DiskLostWrite,
        FaultKind::DiskTornWrite,
    ];

    /// The kebab-case name used in reports, JSON and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::PowerCut => "power-cut",
            FaultKind::Restart => "restart",
            FaultKind::Pause => "pause",
            FaultKind::Resume => "resume",
            FaultKind::Partition => "partition",
            FaultKind::Heal => "heal",
            FaultKind::Clog => "clog",
            FaultKind::Unclog => "unclog",
            FaultKind::MessageLoss => "message-loss",
            FaultKind::MessageDuplicate => "message-duplicate",
            FaultKind::MessageReorder => "message-reorder",
            FaultKind::DiskIoError => "disk-io-error",
            FaultKind::DiskFull => "disk-full",
            FaultKind::DiskLostWrite => "disk-lost-write",
            FaultKind::DiskTornWrite => "disk-torn-write",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fault name that is not one of [`FaultKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownFault {
    /// The name that was given.
    pub input: String,
}

impl fmt::Display for UnknownFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
        write!(f, "unknown fault {:?}: expected one of {}", self.input, names.join(", "))
    }
}

impl std::error::Error for UnknownFault {}

impl FromStr for FaultKind {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL
            .iter()
            .copied()
            .find(|k| k.name() == s.trim())
            .ok_or_else(|| UnknownFault { input: s.to_string() })
    }
}

/// How many faults of each kind a run injected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    counts: BTreeMap<FaultKind, u64>,
}

impl FaultCounts {
    /// Counts one more fault of `kind`.
    pub fn add(&mut self, kind: FaultKind, n: u64) {
        *self.counts.entry(kind).or_default() += n;
    }

    /// How many faults of `kind` fired.
    pub fn get(&self, kind: FaultKind) -> u64 {
        self.counts.get(&kind).copied().unwrap_or(0)
    }

    /// The total over all kinds.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Every kind with its count, zeros included, in report order.
    pub fn iter(&self) -> impl Iterator<Item = (FaultKind, u64)> + '_ {
        FaultKind::ALL.iter().map(|k| (*k, self.get(*k)))
    }

    /// Adds another run's counts to these.
    pub fn merge(&mut self, other: &FaultCounts) {
        for (k, n) in other.iter() {
            if n > 0 {
                self.add(k, n);
            }
        }
    }
}

impl fmt::Display for FaultCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, n) in self.iter() {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{k}={n}")?;
        }
        Ok(())
    }
}

/// Which way a partition cuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Messages from the first set to the second are dropped; the other way still works.
    OneWay,
    /// Both ways are cut.
    Both,
}

/// One fault action, as a scenario or a plan issues it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Crash a node's process.
    Crash(NodeId),
    /// Cut a node's power.
    PowerCut(NodeId),
    /// Boot a crashed or powered-off node.
    Restart(NodeId),
    /// Stop a node's execution.
    Pause(NodeId),
    /// Continue a paused node.
    Resume(NodeId),
    /// Cut the links from `from` to `to` (and back, for [`Direction::Both`]).
    Partition {
        /// One side.
        from: Vec<NodeId>,
        /// The other side.
        to: Vec<NodeId>,
        /// Whether the cut is one-way.
        direction: Direction,
    },
    /// Heal every partition.
    Heal,
    /// Hold every message to or from a node.
    ClogNode(NodeId),
    /// Release a clogged node.
    UnclogNode(NodeId),
    /// Hold every message from `.0` to `.1`.
    ClogLink(NodeId, NodeId),
    /// Release a clogged link.
    UnclogLink(NodeId, NodeId),
}

impl Fault {
    /// The nodes this fault names.
    pub fn nodes(&self) -> Vec<NodeId> {
        match self {
            Fault::Crash(n)
            | Fault::PowerCut(n)
            | Fault::Restart(n)
            | Fault::Pause(n)
            | Fault::Resume(n)
            | Fault::ClogNode(n)
            | Fault::UnclogNode(n) => vec![*n],
            Fault::ClogLink(a, b) | Fault::UnclogLink(a, b) => vec![*a, *b],
            Fault::Partition { from, to, .. } => from.iter().chain(to.iter()).copied().collect(),
            Fault::Heal => vec![],
        }
    }
}

/// A fault issued at a fixed simulated time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptedFault {
    /// When, from the start of the run.
    pub at: Duration,
    /// What.
    pub fault: Fault,
}

/// A disk fault armed to fire at the `op`-th operation (counted from 1) of a node's disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskFaultAt {
    /// Whose disk.
    pub node: NodeId,
    /// Which operation, counted from 1 over the disk's life.
    pub op: u64,
    /// What happens then.
    pub kind: DiskFaultKind,
}

/// A disk fault that can be armed at an operation index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFaultKind {
    /// That operation fails with EIO.
    IoError,
    /// That operation fails with ENOSPC (only writes can; on other operations it is EIO).
    Full,
    /// The power fails just before that operation: it and everything after it fail, and the pending writes
    /// are resolved by the disk's crash mode.
    PowerCut,
}

/// The faults that random injection may choose from.
pub const RANDOM_FAULT_KINDS: [FaultKind; 5] =
    [FaultKind::Crash, FaultKind::PowerCut, FaultKind::Pause, FaultKind::Partition, FaultKind::Clog];

/// Random fault injection: at exponentially distributed intervals one fault of an enabled kind is
/// injected, and undone (restart, resume, heal, unclog) after a random outage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RandomFaults {
    /// The kinds to choose from (a subset of [`RANDOM_FAULT_KINDS`]).
    pub kinds: BTreeSet<FaultKind>,
    /// Mean time between injections.
    pub mean_interval: Duration,
    /// Longest outage before the fault is undone.
    pub max_outage: Duration,
    /// Nodes that are never faulted (clients, say).
    pub spared: BTreeSet<NodeId>,
}

/// Why a fault plan or config was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError(pub String);

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlanError {}

impl RandomFaults {
    /// Random faults of the given kinds, one every `mean_interval` on average, each undone within `max_outage`.
    ///
    /// Errors name a kind that cannot be injected at random (e.g. `heal` or `disk-full`, which are outcomes,
    /// not actions), or an empty set.
    pub fn new(
        kinds: impl IntoIterator<Item = FaultKind>,
        mean_interval: Duration,
        max_outage: Duration,
    ) -> Result<RandomFaults, PlanError> {
        let kinds: BTreeSet<FaultKind> = kinds.into_iter().collect();
        if kinds.is_empty() {
            return Err(PlanError("random faults need at least one fault kind".into()));
        }
        for k in &kinds {
            if !RANDOM_FAULT_KINDS.contains(k) {
                let ok: Vec<&str> = RANDOM_FAULT_KINDS.iter().map(|k| k.name()).collect();
                return Err(PlanError(format!(
                    "fault {:?} cannot be injected at random: choose from {}",
                    k.name(),
                    ok.join(", ")
                )));
            }
        }
        if mean_interval.is_zero() {
            return Err(PlanError("random fault interval must be positive".into()));
        }
        Ok(RandomFaults { kinds, mean_interval, max_outage, spared: BTreeSet::new() })
    }

    /// Parses a comma-separated list of fault names (`crash,partition`).
    pub fn parse_kinds(list: &str) -> Result<Vec<FaultKind>, UnknownFault> {
        list.split(',').filter(|s| !s.trim().is_empty()).map(str::parse).collect()
    }

    /// Never fault these nodes.
    pub fn spare(mut self, nodes: impl IntoIterator<Item = NodeId>) -> Self {
        self.spared.extend(nodes);
        self
    }
}

/// Everything a run will inject, beyond what its scenario does by hand.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// Faults at fixed times.
    pub scripted: Vec<ScriptedFault>,
    /// Faults at random times, until [`crate::World::stop_faults`] or the end of the run.
    pub random: Option<RandomFaults>,
    /// Disk faults at fixed operation indices.
    pub disk_at: Vec<DiskFaultAt>,
    /// After a power cut armed at a disk operation, restart the node after this long. `None` leaves it down
    /// for the scenario to restart.
    pub restart_after_power_cut: Option<Duration>,
}

impl FaultPlan {
    /// A plan that injects nothing.
    pub fn none() -> FaultPlan {
        FaultPlan::default()
    }

    /// Adds a fault at a fixed time.
    pub fn at(mut self, at: Duration, fault: Fault) -> Self {
        self.scripted.push(ScriptedFault { at, fault });
        self
    }

    /// Adds random faults.
    pub fn random(mut self, random: RandomFaults) -> Self {
        self.random = Some(random);
        self
    }

    /// Arms a disk fault at an operation index of a node's disk.
    pub fn disk_fault_at(mut self, node: NodeId, op: u64, kind: DiskFaultKind) -> Self {
        self.disk_at.push(DiskFaultAt { node, op, kind });
        self
    }

    /// Restarts a node this long after a power cut armed at a disk operation.
    pub fn restart_after_power_cut(mut self, after: Duration) -> Self {
        self.restart_after_power_cut = Some(after);
        self
    }

    /// Checks that every node the plan names exists among `node_count` nodes.
    pub fn validate(&self, node_count: u32) -> Result<(), PlanError> {
        let check = |n: NodeId| {
            if n.0 >= node_count {
                Err(PlanError(node_out_of_range(n, node_count)))
            } else {
                Ok(())
            }
        };
        for s in &self.scripted {
            for n in s.fault.nodes() {
                check(n)?;
            }
        }
        for d in &self.disk_at {
            check(d.node)?;
            if d.op == 0 {
                return Err(PlanError(format!(
                    "disk fault on {} at operation 0: operations are counted from 1",
                    d.node
                )));
            }
        }
        if let Some(r) = &self.random {
            for n in &r.spared {
                check(*n)?;
            }
        }
        Ok(())
    }
}

/// The message for a node id that does not exist.
pub(crate) fn node_out_of_range(n: NodeId, count: u32) -> String {
    if count == 0 {
        format!("node id {} is out of range: this simulation has no nodes", n.0)
    } else {
        format!(
            "node id {} is out of range: this simulation has {} node{} (ids 0..={})",
            n.0,
            count,
            if count == 1 { "" } else { "s" },
            count - 1
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_names_round_trip_and_unknown_names_are_named() {
        for k in FaultKind::ALL {
            assert_eq!(k.name().parse::<FaultKind>().unwrap(), k);
        }
        let e = "meteor".parse::<FaultKind>().unwrap_err();
        assert!(e.to_string().starts_with("unknown fault \"meteor\": expected one of crash, "), "{e}");
        let e = RandomFaults::parse_kinds("crash,bogus").unwrap_err();
        assert_eq!(e.input, "bogus");
    }

    #[test]
    fn random_faults_reject_outcome_kinds() {
        let e =
            RandomFaults::new([FaultKind::Heal], Duration::from_secs(1), Duration::from_secs(1)).unwrap_err();
        assert!(e.0.contains("\"heal\" cannot be injected at random"), "{e}");
        assert!(RandomFaults::new([], Duration::from_secs(1), Duration::ZERO).is_err());
    }

    #[test]
    fn plan_validation_names_the_bad_node() {
        let plan = FaultPlan::none().at(Duration::ZERO, Fault::Crash(NodeId(7)));
        assert_eq!(
            plan.validate(3).unwrap_err().0,
            "node id 7 is out of range: this simulation has 3 nodes (ids 0..=2)"
        );
        assert!(plan.validate(8).is_ok());
        let plan = FaultPlan::none().disk_fault_at(NodeId(0), 0, DiskFaultKind::IoError);
        assert!(plan.validate(1).unwrap_err().0.contains("counted from 1"));
    }

    #[test]
    fn counts_show_every_kind_including_zero() {
        let mut c = FaultCounts::default();
        c.add(FaultKind::Crash, 2);
        let s = c.to_string();
        assert!(s.starts_with("crash=2 power-cut=0 "), "{s}");
        assert!(s.ends_with("disk-torn-write=0"), "{s}");
        assert_eq!(c.total(), 2);
    }
}
