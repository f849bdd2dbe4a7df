//! Fault mixes: which faults a test of a user's object asks for, and the concrete schedule each seed draws
//! from them (swarm testing: a seed runs a random subset of the kinds asked for, at its own rates).
//!
//! A [`FaultMix`] names kinds ([`FaultKind`]s of this module, which include the runtime's own faults:
//! evictions, overload, resets and code updates). [`FaultMix::draw`] turns it and a seed into a
//! [`FaultSchedule`]: every fault at an explicit simulated time, every rate explicit. Nothing about the faults
//! is left to a random driver during the run, so a schedule prints as the seed's options, and a shrinker can
//! drop its faults one by one and run again.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use dosim_sim::{Direction, DiskFaultKind, Fault, FaultPlan, NodeId, Ratio, RunOptions, Seed, SimRng};

/// A kind of fault a test may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// A host's process crashes (memory lost, disk kept) and restarts after an outage.
    Crash,
    /// A host loses power (memory and unsynced writes lost, pending writes may tear) and restarts.
    PowerCut,
    /// A power cut armed at one of the host's disk operations, so it lands inside a commit.
    PowerCutInCommit,
    /// A host stops executing for a while (a GC pause, a VM migration), then goes on.
    Pause,
    /// A host's disk fails operations with EIO at a rate.
    DiskErrors,
    /// Idle objects are evicted (spec §5.1): their memory goes, their storage stays.
    Eviction,
    /// An object refuses calls as overloaded (spec §5.3) for a while.
    Overload,
    /// A live object is reset (spec §6.2): its in-flight calls fail, its memory goes.
    Reset,
    /// The hosts' code is updated (spec §7): live objects are reset with the code-update error.
    CodeUpdate,
    /// Messages are lost, duplicated and reordered on the network (a cluster).
    Network,
    /// Hops of the cluster are partitioned for a while (a host from the directory, the front from a host, a
    /// host from the storage node).
    Partition,
    /// Hosts are superseded: every host but one is cut off from the directory and paused until its lease has
    /// expired, its objects are taken over by the one left, then it is resumed (still cut off) with the calls
    /// it had queued (see [`SUPERSEDE_TIMELINE`]).
    Supersede,
}

/// The timeline of a [`FaultKind::Supersede`], from its start: the hosts are cut off from the directory and
/// their messages to the storage node held, paused at `.0` (before their belief in their leases lapses),
/// their objects taken over by the host left at `.1` (the directory has expired their leases: TTL 5 s after
/// the last renewal, rounded up), resumed at `.2` with their held messages released (their late commits
/// arrive fenced; they are still cut off, and serve what they had queued until they notice), healed at `.3`.
pub const SUPERSEDE_TIMELINE: (Duration, Duration, Duration, Duration) = (
    Duration::from_millis(2_500),
    Duration::from_millis(7_000),
    Duration::from_millis(9_000),
    Duration::from_millis(10_000),
);

impl FaultKind {
    /// Every kind, in the order schedules print them.
    pub const ALL: [FaultKind; 12] = [
        FaultKind::Crash,
        FaultKind::PowerCut,
        FaultKind::PowerCutInCommit,
        FaultKind::Pause,
        FaultKind::DiskErrors,
        FaultKind::Eviction,
        FaultKind::Overload,
        FaultKind::Reset,
        FaultKind::CodeUpdate,
        FaultKind::Network,
        FaultKind::Partition,
        FaultKind::Supersede,
    ];

    /// Its name in options and reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::PowerCut => "power-cut",
            FaultKind::PowerCutInCommit => "power-cut-in-commit",
            FaultKind::Pause => "pause",
            FaultKind::DiskErrors => "disk-errors",
            FaultKind::Eviction => "eviction",
            FaultKind::Overload => "overload",
            FaultKind::Reset => "reset",
            FaultKind::CodeUpdate => "code-update",
            FaultKind::Network => "network",
            FaultKind::Partition => "partition",
            FaultKind::Supersede => "supersede",
        }
    }

    /// Whether it needs the network of a cluster.
    pub fn needs_cluster(self) -> bool {
        matches!(self, FaultKind::Network | FaultKind::Partition | FaultKind::Supersede)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The faults a test asks for. Built from the presets and [`FaultMix::with`]; by default each seed runs
/// every kind asked for, and with [`FaultMix::swarm`] each seed runs a random non-empty subset of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultMix {
    kinds: BTreeSet<FaultKind>,
    swarm: bool,
    /// The mean time between two faults of the schedule.
    mean_interval: Duration,
}

/// The mean time between two faults of a schedule, by default.
pub const FAULT_MEAN_INTERVAL_DEFAULT: Duration = Duration::from_millis(1_500);
/// The longest outage of a crash, power cut, pause or partition.
pub const FAULT_MAX_OUTAGE: Duration = Duration::from_millis(3_000);
/// The range of a schedule's disk I/O error rate, per mille of disk operations: high enough that a run of
/// a few hundred operations meets some.
pub const DISK_ERRORS_PER_MILLE: (u64, u64) = (3, 20);
/// The range of the disk operations at which a power cut is armed: within the first thousand, so a short
/// run reaches it (a host's run of 100 operations makes about a thousand disk operations).
pub const POWER_CUT_DISK_OPS: (u64, u64) = (20, 1_000);
/// How long an overload fault makes an object refuse calls, at most.
pub const OVERLOAD_MAX: u32 = 20;

impl Default for FaultMix {
    fn default() -> Self {
        FaultMix::none()
    }
}

impl FaultMix {
    /// No faults: a run that checks the object under concurrency alone.
    pub fn none() -> FaultMix {
        FaultMix { kinds: BTreeSet::new(), swarm: false, mean_interval: FAULT_MEAN_INTERVAL_DEFAULT }
    }

    /// The faults of a host: crashes, power cuts (some inside commits) and pauses.
    pub fn host() -> FaultMix {
        FaultMix::none()
            .with(FaultKind::Crash)
            .with(FaultKind::PowerCut)
            .with(FaultKind::PowerCutInCommit)
            .with(FaultKind::Pause)
    }

    /// The faults of a disk: power cuts inside commits (torn and lost writes) and I/O errors.
    pub fn disk() -> FaultMix {
        FaultMix::none().with(FaultKind::PowerCutInCommit).with(FaultKind::DiskErrors)
    }

    /// The runtime's own faults: evictions, overload, resets and code updates.
    pub fn runtime() -> FaultMix {
        FaultMix::none()
            .with(FaultKind::Eviction)
            .with(FaultKind::Overload)
            .with(FaultKind::Reset)
            .with(FaultKind::CodeUpdate)
    }

    /// The faults of a cluster's network: loss, duplication, reordering and partitions.
    pub fn network() -> FaultMix {
        FaultMix::none().with(FaultKind::Network).with(FaultKind::Partition)
    }

    /// Every kind, as a swarm: each seed runs its own subset.
    pub fn swarm_all() -> FaultMix {
        let mut mix = FaultMix::none().swarm();
        mix.kinds = FaultKind::ALL.into_iter().collect();
        mix
    }

    /// The mix with `kind` too.
    pub fn with(mut self, kind: FaultKind) -> FaultMix {
        self.kinds.insert(kind);
        self
    }

    /// The mix with the kinds of `other` too.
    pub fn and(mut self, other: FaultMix) -> FaultMix {
        self.kinds.extend(other.kinds);
        self.swarm |= other.swarm;
        self
    }

    /// The mix without `kind`.
    pub fn without(mut self, kind: FaultKind) -> FaultMix {
        self.kinds.remove(&kind);
        self
    }

    /// Each seed runs a random non-empty subset of the kinds (swarm testing: a fault that masks another is
    /// left out by some seeds).
    pub fn swarm(mut self) -> FaultMix {
        self.swarm = true;
        self
    }

    /// Faults come every `interval` on average.
    pub fn mean_interval(mut self, interval: Duration) -> FaultMix {
        assert!(!interval.is_zero(), "a fault mix's mean interval must be positive");
        self.mean_interval = interval;
        self
    }

    /// The mean time between two faults.
    pub fn mean_interval_of(&self) -> Duration {
        self.mean_interval
    }

    /// The kinds asked for.
    pub fn kinds(&self) -> impl Iterator<Item = FaultKind> + '_ {
        self.kinds.iter().copied()
    }

    /// Whether it asks for `kind`.
    pub fn has(&self, kind: FaultKind) -> bool {
        self.kinds.contains(&kind)
    }

    /// The schedule of `seed` over a run whose faults last `span` from `start`, on `targets`: the kinds
    /// this seed runs (all, or a swarm subset), each fault's time and target, and the rates. Draws only from
    /// the seed's labelled streams (`fault-mix`, `fault-times`, `disk`, `network`), never from a stream the
    /// run itself draws from.
    pub fn draw(&self, seed: Seed, targets: &Targets, start: Duration, span: Duration) -> FaultSchedule {
        let mut pick = SimRng::substream(seed, "fault-mix");
        let mut kinds: Vec<FaultKind> = self.kinds.iter().copied().collect();
        if targets.cluster.is_none() {
            kinds.retain(|k| !k.needs_cluster());
        }
        if self.swarm && !kinds.is_empty() {
            let chosen: Vec<FaultKind> = kinds.iter().copied().filter(|_| pick.below(2) == 1).collect();
            kinds =
                if chosen.is_empty() { vec![kinds[pick.below(kinds.len() as u64) as usize]] } else { chosen };
        }
        let mut schedule = FaultSchedule {
            kinds: kinds.clone(),
            directory: targets.cluster.map(|c| c.directory),
            hosts: targets.hosts.clone(),
            storage: targets.cluster.map(|c| c.storage),
            ..FaultSchedule::default()
        };
        if kinds.is_empty() || targets.hosts.is_empty() {
            return schedule;
        }
        // Timed faults: a Poisson-ish process over the span, each fault of a kind drawn from the timed ones.
        let timed: Vec<FaultKind> = kinds.iter().copied().filter(|k| FaultMix::is_timed(*k)).collect();
        let mut times = SimRng::substream(seed, "fault-times");
        let mean = self.mean_interval.as_millis() as u64;
        let mut at = start;
        let end = start + span;
        while !timed.is_empty() {
            at += Duration::from_millis(times.between(mean / 4, mean * 7 / 4).max(1));
            if at >= end {
                break;
            }
            let kind = timed[times.below(timed.len() as u64) as usize];
            let Some(action) = FaultMix::draw_action(kind, &mut times, targets) else { continue };
            if let Action::Supersede { .. } = action {
                // One at a time: the next fault comes after this one's timeline.
                schedule.timed.push(TimedFault { at, action });
                at += SUPERSEDE_TIMELINE.3;
                continue;
            }
            schedule.timed.push(TimedFault { at, action });
        }
        let mut disk = SimRng::substream(seed, "disk");
        if kinds.contains(&FaultKind::DiskErrors) {
            schedule.disk_io_error_rate =
                Ratio::new(disk.between(DISK_ERRORS_PER_MILLE.0, DISK_ERRORS_PER_MILLE.1) as u32, 1000);
        }
        if kinds.contains(&FaultKind::PowerCutInCommit) {
            for _ in 0..disk.between(1, 4) {
                let node = targets.hosts[disk.below(targets.hosts.len() as u64) as usize];
                schedule
                    .power_cuts_at_disk_ops
                    .push((node, disk.between(POWER_CUT_DISK_OPS.0, POWER_CUT_DISK_OPS.1)));
            }
            schedule.restart_after_power_cut = Duration::from_millis(disk.between(10, 1_000));
        }
        if kinds.contains(&FaultKind::Network) {
            let mut net = SimRng::substream(seed, "network");
            schedule.net_loss = Ratio::new(net.between(1, 30) as u32, 1000);
            schedule.net_duplicate = Ratio::new(net.between(1, 30) as u32, 1000);
            schedule.net_reorder = Ratio::new(net.between(1, 50) as u32, 1000);
        }
        schedule
    }
}

impl FaultMix {
    /// One timed fault of `kind`, drawn from `rng` as [`FaultMix::draw`] draws each fault of a schedule (its
    /// host, its outage, its object or hop), on `targets`; `None` for a kind that is not a timed fault (disk
    /// errors, network rates, power cuts armed at disk operations) or that `targets` cannot have (a partition
    /// or a supersede without a cluster). An explorer adds faults to a schedule with it.
    pub fn draw_action(kind: FaultKind, rng: &mut SimRng, targets: &Targets) -> Option<Action> {
        if targets.hosts.is_empty() {
            return None;
        }
        let host = targets.hosts[rng.below(targets.hosts.len() as u64) as usize];
        let outage = Duration::from_millis(rng.between(50, FAULT_MAX_OUTAGE.as_millis() as u64));
        Some(match kind {
            FaultKind::Crash => Action::Crash { node: host, outage },
            FaultKind::PowerCut => Action::PowerCut { node: host, outage },
            FaultKind::Pause => Action::Pause { node: host, outage },
            FaultKind::Eviction => Action::Evict { node: host },
            FaultKind::Overload => Action::Overload {
                object: rng.below(1 << 16) as u32,
                calls: rng.between(1, OVERLOAD_MAX as u64) as u32,
            },
            FaultKind::Reset => Action::Reset { object: rng.below(1 << 16) as u32 },
            FaultKind::CodeUpdate => Action::CodeUpdate { node: host },
            FaultKind::Partition => {
                let cluster = targets.cluster.as_ref()?;
                let hop = Hop::ALL[rng.below(Hop::ALL.len() as u64) as usize];
                let (from, to) = match hop {
                    Hop::HostDirectory => (host, cluster.directory),
                    Hop::FrontHost => (cluster.front, host),
                    Hop::HostStorage => (host, cluster.storage),
                };
                Action::Partition { hop, from, to, outage }
            }
            FaultKind::Supersede => {
                if targets.cluster.is_none() || targets.hosts.len() < 2 {
                    return None;
                }
                Action::Supersede { survivor: host }
            }
            FaultKind::DiskErrors | FaultKind::Network | FaultKind::PowerCutInCommit => return None,
        })
    }

    /// Whether `kind` is a timed fault (one [`FaultMix::draw_action`] draws), not a rate or an armed cut.
    pub fn is_timed(kind: FaultKind) -> bool {
        !matches!(kind, FaultKind::DiskErrors | FaultKind::Network | FaultKind::PowerCutInCommit)
    }
}

/// A hop of a cluster that a partition cuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hop {
    /// A host from the directory: its lease lapses, its objects move.
    HostDirectory,
    /// The front from a host: calls to that host's objects get no answer.
    FrontHost,
    /// A host from the storage node: its activations and commits fail.
    HostStorage,
}

impl Hop {
    /// Every hop.
    pub const ALL: [Hop; 3] = [Hop::HostDirectory, Hop::FrontHost, Hop::HostStorage];

    /// Its name in options.
    pub fn name(self) -> &'static str {
        match self {
            Hop::HostDirectory => "host-directory",
            Hop::FrontHost => "front-host",
            Hop::HostStorage => "host-storage",
        }
    }
}

/// The nodes a schedule may fault.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Targets {
    /// The hosts (crashed, paused, updated; their objects evicted).
    pub hosts: Vec<NodeId>,
    /// The cluster's other nodes, if the run is a cluster.
    pub cluster: Option<ClusterNodes>,
}

/// The nodes of a cluster besides its hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterNodes {
    /// The directory.
    pub directory: NodeId,
    /// The front, where clients' calls enter.
    pub front: NodeId,
    /// The storage node.
    pub storage: NodeId,
}

/// One fault of a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Crash `node`, restart it after `outage`.
    Crash {
        /// The node.
        node: NodeId,
        /// How long it stays down.
        outage: Duration,
    },
    /// Cut `node`'s power, restart it after `outage`.
    PowerCut {
        /// The node.
        node: NodeId,
        /// How long it stays down.
        outage: Duration,
    },
    /// Pause `node` for `outage`.
    Pause {
        /// The node.
        node: NodeId,
        /// How long it stays paused.
        outage: Duration,
    },
    /// Cut the link `from`–`to` both ways for `outage`.
    Partition {
        /// The hop it cuts.
        hop: Hop,
        /// One end.
        from: NodeId,
        /// The other end.
        to: NodeId,
        /// How long it stays cut.
        outage: Duration,
    },
    /// Evict every idle object of `node`'s host.
    Evict {
        /// The node.
        node: NodeId,
    },
    /// The next `calls` calls to one object (the workload's objects, the `object`-th modulo their number)
    /// are refused as overloaded.
    Overload {
        /// Which object, modulo the workload's objects.
        object: u32,
        /// How many calls.
        calls: u32,
    },
    /// Reset one object (the `object`-th modulo the workload's objects) wherever it is live.
    Reset {
        /// Which object, modulo the workload's objects.
        object: u32,
    },
    /// Update the code of `node`'s host (same code, new deployment: every live object reset).
    CodeUpdate {
        /// The node.
        node: NodeId,
    },
    /// Supersede every host but `survivor` (see [`FaultKind::Supersede`]): whichever hosts own the
    /// objects, the survivor takes them over.
    Supersede {
        /// The host that takes the objects over.
        survivor: NodeId,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Crash { node, outage } => write!(f, "crash:{node}+{}ms", outage.as_millis()),
            Action::PowerCut { node, outage } => write!(f, "power-cut:{node}+{}ms", outage.as_millis()),
            Action::Pause { node, outage } => write!(f, "pause:{node}+{}ms", outage.as_millis()),
            Action::Partition { hop, from, to, outage } => {
                write!(f, "partition:{}:{from}-{to}+{}ms", hop.name(), outage.as_millis())
            }
            Action::Evict { node } => write!(f, "evict:{node}"),
            Action::Overload { object, calls } => write!(f, "overload:obj{object}x{calls}"),
            Action::Reset { object } => write!(f, "reset:obj{object}"),
            Action::CodeUpdate { node } => write!(f, "code-update:{node}"),
            Action::Supersede { survivor } => write!(f, "supersede-all-but:{survivor}"),
        }
    }
}

/// A fault at a simulated time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimedFault {
    /// When, from the start of the run.
    pub at: Duration,
    /// What.
    pub action: Action,
}

impl fmt::Display for TimedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}ms", self.action, self.at.as_millis())
    }
}

/// The faults of one seed: every one explicit (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSchedule {
    /// The kinds this seed runs.
    pub kinds: Vec<FaultKind>,
    /// The timed faults, in time order.
    pub timed: Vec<TimedFault>,
    /// Power cuts armed at disk operations: (node, operation number).
    pub power_cuts_at_disk_ops: Vec<(NodeId, u64)>,
    /// How long a node stays down after a power cut armed at a disk operation.
    pub restart_after_power_cut: Duration,
    /// The rate of I/O errors of every disk until the faults stop.
    pub disk_io_error_rate: Ratio,
    /// The rate of messages lost.
    pub net_loss: Ratio,
    /// The rate of messages delivered twice.
    pub net_duplicate: Ratio,
    /// The rate of messages held back past later ones.
    pub net_reorder: Ratio,
    /// The cluster's directory, if the run is a cluster (a supersede cuts hosts off from it).
    pub directory: Option<NodeId>,
    /// The hosts.
    pub hosts: Vec<NodeId>,
    /// The cluster's storage node, if the run is a cluster (a supersede holds the cut hosts' messages to it).
    pub storage: Option<NodeId>,
}

impl Default for FaultSchedule {
    fn default() -> Self {
        FaultSchedule {
            kinds: Vec::new(),
            timed: Vec::new(),
            power_cuts_at_disk_ops: Vec::new(),
            restart_after_power_cut: Duration::from_millis(100),
            disk_io_error_rate: Ratio::NEVER,
            net_loss: Ratio::NEVER,
            net_duplicate: Ratio::NEVER,
            net_reorder: Ratio::NEVER,
            directory: None,
            hosts: Vec::new(),
            storage: None,
        }
    }
}

impl FaultSchedule {
    /// The schedule as options (`key=value` pairs) after `options`.
    pub fn describe(&self, options: RunOptions) -> RunOptions {
        let cuts: Vec<String> =
            self.power_cuts_at_disk_ops.iter().map(|(n, op)| format!("{n}@{op}")).collect();
        options
            .with("faults", crate::list(&self.kinds))
            .with("fault_schedule", crate::list(&self.timed))
            .with("power_cuts_at_disk_ops", crate::list(&cuts))
            .with("restart_after_power_cut_ms", self.restart_after_power_cut.as_millis())
            .with("disk_io_error_rate", self.disk_io_error_rate)
            .with("net_loss", self.net_loss)
            .with("net_duplicate", self.net_duplicate)
            .with("net_reorder", self.net_reorder)
    }

    /// The part of the schedule the world runs itself: node faults, partitions and their ends, armed power
    /// cuts. (Evictions, overload, resets and code updates are the test's controller's to run.)
    pub fn plan(&self) -> FaultPlan {
        let mut plan = FaultPlan::none()
            .restart_after_power_cut(self.restart_after_power_cut.max(Duration::from_millis(1)));
        for t in &self.timed {
            match t.action {
                Action::Crash { node, outage } => {
                    plan = plan.at(t.at, Fault::Crash(node)).at(t.at + outage, Fault::Restart(node));
                }
                Action::PowerCut { node, outage } => {
                    plan = plan.at(t.at, Fault::PowerCut(node)).at(t.at + outage, Fault::Restart(node));
                }
                Action::Pause { node, outage } => {
                    plan = plan.at(t.at, Fault::Pause(node)).at(t.at + outage, Fault::Resume(node));
                }
                Action::Partition { from, to, outage, .. } => {
                    plan = plan
                        .at(
                            t.at,
                            Fault::Partition { from: vec![from], to: vec![to], direction: Direction::Both },
                        )
                        .at(t.at + outage, Fault::Heal);
                }
                Action::Supersede { survivor } => {
                    let directory = self.directory.expect("a supersede is drawn only for a cluster");
                    let (pause, _, resume, heal) = SUPERSEDE_TIMELINE;
                    let cut: Vec<NodeId> = self.hosts.iter().copied().filter(|h| *h != survivor).collect();
                    let partition = Fault::Partition {
                        from: cut.clone(),
                        to: vec![directory],
                        direction: Direction::Both,
                    };
                    let storage = self.storage.expect("a supersede is drawn only for a cluster");
                    plan = plan.at(t.at, partition).at(t.at + heal, Fault::Heal);
                    for node in cut {
                        // Its commits are held on the way to the storage node until after the takeover, so
                        // they arrive fenced.
                        plan = plan
                            .at(t.at, Fault::ClogLink(node, storage))
                            .at(t.at + pause, Fault::Pause(node))
                            .at(t.at + resume, Fault::Resume(node))
                            .at(t.at + resume, Fault::UnclogLink(node, storage));
                    }
                }
                Action::Evict { .. }
                | Action::Overload { .. }
                | Action::Reset { .. }
                | Action::CodeUpdate { .. } => {}
            }
        }
        for (node, op) in &self.power_cuts_at_disk_ops {
            plan = plan.disk_fault_at(*node, *op, DiskFaultKind::PowerCut);
        }
        plan
    }

    /// The faults the test's controller runs (evictions, overload, resets, code updates), in time order.
    pub fn controller_faults(&self) -> impl Iterator<Item = &TimedFault> + '_ {
        self.timed.iter().filter(|t| {
            matches!(
                t.action,
                Action::Evict { .. }
                    | Action::Overload { .. }
                    | Action::Reset { .. }
                    | Action::CodeUpdate { .. }
                    | Action::Supersede { .. }
            )
        })
    }

    /// The number of faults it holds (timed faults and armed power cuts): what a shrinker minimises.
    pub fn len(&self) -> usize {
        self.timed.len() + self.power_cuts_at_disk_ops.len()
    }

    /// Whether it holds no fault at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
            && self.disk_io_error_rate == Ratio::NEVER
            && self.net_loss == Ratio::NEVER
            && self.net_duplicate == Ratio::NEVER
            && self.net_reorder == Ratio::NEVER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_targets() -> Targets {
        Targets { hosts: vec![NodeId(0)], cluster: None }
    }

    #[test]
    fn a_seed_draws_the_same_schedule_every_time_and_seeds_differ() {
        let mix = FaultMix::host().and(FaultMix::runtime());
        let a = mix.draw(Seed(7), &host_targets(), Duration::from_secs(1), Duration::from_secs(30));
        let b = mix.draw(Seed(7), &host_targets(), Duration::from_secs(1), Duration::from_secs(30));
        let c = mix.draw(Seed(8), &host_targets(), Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(!a.timed.is_empty(), "30 s at a fault every 1.5 s on average: {a:?}");
        assert!(a.timed.windows(2).all(|w| w[0].at <= w[1].at), "in time order");
        assert!(a.timed.iter().all(|t| t.at >= Duration::from_secs(1) && t.at < Duration::from_secs(31)));
    }

    #[test]
    fn a_swarm_runs_a_non_empty_subset_and_different_seeds_run_different_subsets() {
        let mix = FaultMix::swarm_all();
        let mut subsets = BTreeSet::new();
        for s in 0..40 {
            let kinds = mix.draw(Seed(s), &host_targets(), Duration::ZERO, Duration::from_secs(10)).kinds;
            assert!(!kinds.is_empty());
            assert!(
                kinds.iter().all(|k| !k.needs_cluster()),
                "no network faults without a cluster: {kinds:?}"
            );
            subsets.insert(kinds);
        }
        assert!(subsets.len() > 10, "40 seeds gave only {} subsets", subsets.len());
    }

    #[test]
    fn no_faults_draw_an_empty_schedule_and_the_plan_pairs_each_outage_with_its_end() {
        let none = FaultMix::none().draw(Seed(1), &host_targets(), Duration::ZERO, Duration::from_secs(10));
        assert!(none.is_empty());
        let crashes = FaultMix::none().with(FaultKind::Crash).draw(
            Seed(1),
            &host_targets(),
            Duration::ZERO,
            Duration::from_secs(20),
        );
        assert!(crashes.timed.iter().all(|t| matches!(t.action, Action::Crash { .. })));
        assert_eq!(crashes.plan().scripted.len(), 2 * crashes.timed.len(), "a restart for every crash");
        assert!(crashes
            .describe(RunOptions::new(Seed(1)))
            .get("fault_schedule")
            .unwrap()
            .starts_with("crash:n0+"));
    }
}
