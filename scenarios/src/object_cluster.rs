//! Scenario `object-cluster`: Durable Objects on a cluster (docs/ARCHITECTURE.md, "The cluster") under
//! network, node and link faults.
//!
//! Nodes: 0 the directory (simulated etcd, never faulted: it models a replicated etcd), 1 the front (the
//! Worker; never faulted, so the controller's view of each call is its own), 2..=4 three hosts, 5 the storage
//! node that keeps every object's pages. Objects, all SQLite-backed: the get-started `Counter` (four objects)
//! and the `Register` (two objects, two keys each), placed over the hosts by the cluster.
//!
//! The controller sends waves of concurrent calls through the front: increments of random counters, writes
//! (each of a value never written before) and reads of random register keys. A wave starts once the previous
//! one has answered. One to three times per run it stages a **superseded write** on a register: it cuts the
//! object's owner off from the directory and holds the owner's messages to the storage node; late in the lease
//! the owner still believes in, it sends a write there (committed locally, its batch held on the way); it
//! pauses the owner (so it never notices its lease lapse) until the directory has expired the lease; it makes
//! another host take the object over (a read from that host, which opens the object at the storage node under
//! a newer epoch); then it releases the held batch and resumes the owner. The batch must be fenced.
//!
//! Faults, drawn per seed ([`Options`], swarm testing: each kind in or out, its rates from its own stream):
//! - **network** (`net_loss`, `net_duplicate`, `net_reorder`): on the world's fabric, so every object call
//!   (front → host, host → host) and every storage call (host → storage node) and their replies may be lost,
//!   duplicated or delayed past later ones; the directory's etcd traffic is not (it is TCP: see the cluster
//!   docs);
//! - **node faults at random times** (`faults`): crashes, power cuts and pauses of the hosts and the storage
//!   node (the directory and the front are spared); power cuts of the storage node armed at its disk
//!   operations (`storage_power_cuts_at_disk_ops`: they land inside its commits); I/O errors of every disk
//!   (`disk_io_error_rate`: the storage node's pages, the hosts' replicas and alarm indexes);
//! - **partitions at seed-derived times** (`partitions`, scripted): a host from the directory (the host →
//!   directory hop: its lease lapses and its objects move), the front from a host (the front → host hop: calls
//!   to that host's objects are lost), a host from the storage node (the host → storage hop: its commits and
//!   activations fail). A heal ends every partition, so overlapping ones end together;
//! - **the superseded writes** (`superseded_writes_after_waves`): the owner host → directory hop cut, the
//!   owner → storage node link held (a clog), the owner paused; a heal at the end heals every partition.
//!
//! Then the faults stop, every downed node restarts, and the liveness phase reads every object. Checks:
//! - **counters:** the history check of `object-counters` (acknowledged values distinct, each above every
//!   value acknowledged in an earlier wave, none above the increments attempted by then, the final value at
//!   least the largest acknowledged);
//! - **registers** ([`check_register`]): versions and values match one to one (a version seen with two
//!   values is a lost write's version handed out again); a read returns a value some write had sent by the
//!   time the read answered; nothing observed goes back: a write answers a version above, and a read one at
//!   least, every version observed (acknowledged or read) before it started; unanswered writes may or may not
//!   have applied, and nothing is asked of them;
//! - **single activation** ([`check_commit_history`]): over the storage node's history, per object, no commit
//!   applies under an epoch older than one that had already opened the object or committed to it;
//! - **liveness:** after the faults stop, every object answers within [`LIVENESS_BOUND`].
//!
//! The negative control runs the same with a storage node that does not fence older epochs: the superseded
//! owner's held batch applies after another host opened the object under a newer epoch, which the
//! single-activation check catches; when the old owner also acknowledges the write, the host that took over
//! goes on answering reads from its replica without it, which the register check catches as a stale read.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use dosim_runtime::embed::{ClusterRole, Directory, HostBuilder, Migration, LEASE_TTL_S};
use dosim_runtime::error::{messages, Error};
use dosim_sim::net::NetConfig;
use dosim_sim::{
    ensure, ensure_live, Direction, DiskConfig, DiskFaultKind, EventKind, Failure, Fault, FaultKind,
    FaultPlan, NodeAction, NodeId, Purpose, RandomFaults, Ratio, RunFailure, RunOptions, RunReport, Seed,
    Sim, SimRng, Trace, World,
};

use crate::cluster::etcd::{etcd_addr, etcd_node, EtcdCoordinator};
use crate::cluster::transport::{addr_of, CLUSTER_PORT};
use crate::cluster::{cluster_node, storage_node};
pub use crate::faults::Hop;
use crate::list;
use crate::object_counters::{check_history, Ack, History};
use crate::objects::{Counter, Register};
use crate::sim_host::{host_builder, HostNode};

const ETCD: NodeId = NodeId(0);
const FRONT: NodeId = NodeId(1);
const HOSTS: [NodeId; 3] = [NodeId(2), NodeId(3), NodeId(4)];
const STORAGE: NodeId = NodeId(5);
const COUNTERS: [&str; 4] = ["c0", "c1", "c2", "c3"];
const REGISTERS: [&str; 2] = ["r0", "r1"];
const KEYS: [&str; 2] = ["a", "b"];
/// The namespace uid of the `Register` class (script `worker`, migration tag `v1`): the key of its objects'
/// directory records.
const REGISTER_NS: &str = "worker:Register:v1";

/// How long the runtime's caller waits for an object call's answer (its `REMOTE_CALL_TIMEOUT`): a call sent
/// just before the faults stopped, to a host that died, answers no later than this.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a host waits for the storage node (the runtime's `STORAGE_CALL_TIMEOUT`).
const STORAGE_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long after the faults stop every object must answer: the lease of an owner that died then must
/// expire (its TTL), a call lost to it must time out, an activation's storage call lost must time out, and
/// a margin for the claims and retries that follow.
pub const LIVENESS_BOUND: Duration =
    Duration::from_secs(LEASE_TTL_S as u64 + CALL_TIMEOUT.as_secs() + STORAGE_CALL_TIMEOUT.as_secs() + 20);
/// How long after its owner is cut off from the directory the superseded write is sent: late in the lease
/// the owner still believes in (it renewed it at most a second before the cut, and believes in it for
/// TTL - 1.2 s after a renewal).
const SUPERSEDED_LATE: Duration = Duration::from_millis(2_500);
/// How long after the superseded write is sent its owner is paused: time for it to commit locally and
/// send its batch (which the clogged link holds), before its belief in its lease lapses.
const SUPERSEDED_COMMIT: Duration = Duration::from_millis(300);
/// How long the superseded write's owner stays paused before another host takes its object over: until
/// the directory has surely expired its lease (TTL after its last renewal, rounded up to the store's
/// one-second tick), and well before the batch's storage call times out (5 s after it was sent).
const SUPERSEDED_EXPIRY: Duration = Duration::from_millis(LEASE_TTL_S as u64 * 1_000 + 1_200 - 2_500 - 300);
/// How long the controller tries to make another host take the object over before it gives up on it.
const TAKEOVER_MAX: Duration = Duration::from_secs(60);
/// How long the hosts get to join the directory before the first wave.
const STARTUP: Duration = Duration::from_secs(3);

fn build() -> HostBuilder {
    host_builder("worker")
        .class::<Counter>("Counter")
        .binding("COUNTER", "Counter")
        .class::<Register>("Register")
        .binding("REGISTER", "Register")
        .migration(Migration {
            tag: "v1".into(),
            new_sqlite_classes: vec!["Counter".into(), "Register".into()],
            ..Migration::default()
        })
}

/// A scripted partition: `hop`, with `host` on one side, from `at` (since the run started) for `lasts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Which hop.
    pub hop: Hop,
    /// The host cut off.
    pub host: NodeId,
    /// When, from the start of the run.
    pub at: Duration,
    /// For how long (then every partition heals).
    pub lasts: Duration,
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}@{}+{}ms", self.hop.name(), self.host, self.at.as_millis(), self.lasts.as_millis())
    }
}

impl Cut {
    fn fault(&self) -> Fault {
        let (from, to) = match self.hop {
            Hop::HostDirectory => (vec![self.host], vec![ETCD]),
            Hop::FrontHost => (vec![FRONT], vec![self.host]),
            Hop::HostStorage => (vec![self.host], vec![STORAGE]),
        };
        Fault::Partition { from, to, direction: Direction::Both }
    }
}

/// What one run of the scenario does, derived from its seed by [`Options::from_seed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The rate of messages lost on the fabric.
    pub net_loss: Ratio,
    /// The rate of messages delivered twice.
    pub net_duplicate: Ratio,
    /// The rate of messages held back past later ones.
    pub net_reorder: Ratio,
    /// The node faults injected at random times on the hosts and the storage node (a subset, maybe empty, of
    /// crash, power cut and pause).
    pub fault_kinds: Vec<FaultKind>,
    /// The mean time between random faults.
    pub fault_mean_interval: Duration,
    /// The longest outage of a random fault.
    pub fault_max_outage: Duration,
    /// How long the storage node stays down after a power cut armed at a disk operation.
    pub restart_after_power_cut: Duration,
    /// The storage node's disk operations at which its power is cut.
    pub storage_power_cuts_at_disk_ops: Vec<u64>,
    /// The scripted partitions.
    pub partitions: Vec<Cut>,
    /// The waves after which a superseded write is staged.
    pub superseded_writes: Vec<u32>,
    /// How many waves of concurrent calls the controller sends.
    pub waves: u32,
    /// The most calls in one wave (each wave sends 1 to this many).
    pub wave_max: u64,
    /// The rate of I/O errors of every node's disk (the storage node's, the hosts' replicas) until the faults
    /// stop: never, or 1 in 500 operations (a third of the seeds).
    pub disk_io_error_rate: Ratio,
}

/// A rate in thousandths from `lo` to `hi`, or never (half the seeds): one swarm choice.
fn maybe_rate(rng: &mut SimRng, lo: u64, hi: u64) -> Ratio {
    if rng.below(2) == 0 {
        Ratio::NEVER
    } else {
        Ratio::new(rng.between(lo, hi) as u32, 1000)
    }
}

impl Options {
    /// The options of `seed`, one labelled stream per subsystem ([`SimRng::substream`]): adding a draw to one
    /// subsystem never shifts another's, and none is a stream the run itself draws from.
    pub fn from_seed(seed: Seed) -> Options {
        let mut net = SimRng::substream(seed, "network");
        let net_loss = maybe_rate(&mut net, 1, 20);
        let net_duplicate = maybe_rate(&mut net, 1, 30);
        let net_reorder = maybe_rate(&mut net, 1, 50);
        let mut faults = SimRng::substream(seed, "faults");
        let pool = [FaultKind::Crash, FaultKind::PowerCut, FaultKind::Pause];
        let fault_kinds: Vec<FaultKind> = pool.iter().copied().filter(|_| faults.below(2) == 1).collect();
        let fault_mean_interval = Duration::from_millis(faults.between(1_500, 6_000));
        let fault_max_outage = Duration::from_millis(faults.between(100, 6_000));
        let mut restarts = SimRng::substream(seed, "restarts");
        let restart_after_power_cut = Duration::from_millis(restarts.between(10, 1_000));
        let mut cuts = SimRng::substream(seed, "power-cuts");
        let storage_power_cuts_at_disk_ops = (0..cuts.below(3)).map(|_| cuts.between(1, 3_000)).collect();
        let mut parts = SimRng::substream(seed, "partitions");
        let mut partitions = Vec::new();
        for hop in Hop::ALL {
            if parts.below(2) == 1 {
                let host = HOSTS[parts.below(HOSTS.len() as u64) as usize];
                let at = STARTUP + Duration::from_millis(parts.between(0, 20_000));
                let lasts = Duration::from_millis(parts.between(500, 8_000));
                partitions.push(Cut { hop, host, at, lasts });
            }
        }
        let mut workload = SimRng::substream(seed, "workload");
        let waves = workload.between(20, 40) as u32;
        let wave_max = workload.between(4, 12);
        let mut superseded = SimRng::substream(seed, "superseded");
        let mut superseded_writes: Vec<u32> = (0..superseded.between(1, 3))
            .map(|_| superseded.between(1, u64::from(waves) - 1) as u32)
            .collect();
        superseded_writes.sort_unstable();
        superseded_writes.dedup();
        let mut disk = SimRng::substream(seed, "disk");
        let disk_io_error_rate = if disk.below(3) == 0 { Ratio::new(1, 500) } else { Ratio::NEVER };
        Options {
            net_loss,
            net_duplicate,
            net_reorder,
            fault_kinds,
            fault_mean_interval,
            fault_max_outage,
            restart_after_power_cut,
            storage_power_cuts_at_disk_ops,
            partitions,
            superseded_writes,
            waves,
            wave_max,
            disk_io_error_rate,
        }
    }

    /// The options as `key=value` pairs, the seed first.
    pub fn describe(&self, seed: Seed) -> RunOptions {
        RunOptions::new(seed)
            .with("net_loss", self.net_loss)
            .with("net_duplicate", self.net_duplicate)
            .with("net_reorder", self.net_reorder)
            .with("faults", list(&self.fault_kinds))
            .with("fault_mean_interval_ms", self.fault_mean_interval.as_millis())
            .with("fault_max_outage_ms", self.fault_max_outage.as_millis())
            .with("restart_after_power_cut_ms", self.restart_after_power_cut.as_millis())
            .with("storage_power_cuts_at_disk_ops", list(&self.storage_power_cuts_at_disk_ops))
            .with("partitions", list(&self.partitions))
            .with("superseded_writes_after_waves", list(&self.superseded_writes))
            .with("waves", self.waves)
            .with("wave_max", self.wave_max)
            .with("disk_io_error_rate", self.disk_io_error_rate)
    }

    fn network(&self) -> NetConfig {
        NetConfig {
            loss: self.net_loss,
            duplicate: self.net_duplicate,
            reorder: self.net_reorder,
            ..NetConfig::default()
        }
    }

    fn plan(&self) -> FaultPlan {
        let mut plan = FaultPlan::none().restart_after_power_cut(self.restart_after_power_cut);
        if !self.fault_kinds.is_empty() {
            let random =
                RandomFaults::new(self.fault_kinds.clone(), self.fault_mean_interval, self.fault_max_outage)
                    .expect("kinds come from the random pool")
                    .spare([ETCD, FRONT]);
            plan = plan.random(random);
        }
        for op in &self.storage_power_cuts_at_disk_ops {
            plan = plan.disk_fault_at(STORAGE, *op, DiskFaultKind::PowerCut);
        }
        for cut in &self.partitions {
            plan = plan.at(cut.at, cut.fault()).at(cut.at + cut.lasts, Fault::Heal);
        }
        plan
    }
}

/// The options of `seed`, printed.
pub(crate) fn options(seed: Seed) -> RunOptions {
    Options::from_seed(seed).describe(seed)
}

/// One call to a register key, as the controller saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegOp {
    /// When it was sent (simulated time since the start of the run).
    pub start: Duration,
    /// When its answer (or error) came.
    pub end: Duration,
    /// What it was and what it answered.
    pub kind: RegKind,
}

/// A register call and its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegKind {
    /// A write of `value` (never written before): `Ok(version)` if acknowledged; `Err(retryable)` if it
    /// failed, and then it may or may not have applied.
    Write {
        /// The value written.
        value: i64,
        /// The version it answered, or whether its error was retryable.
        outcome: Result<u64, bool>,
    },
    /// A read: `Ok((version, value))`, `Ok(None)` for a key never written, or `Err(retryable)`.
    Read {
        /// What it answered, or whether its error was retryable.
        outcome: Result<Option<(u64, i64)>, bool>,
    },
}

impl RegOp {
    /// The version this call observed, if it answered: 0 for a key never written.
    fn observed(&self) -> Option<u64> {
        match self.kind {
            RegKind::Write { outcome: Ok(v), .. } => Some(v),
            RegKind::Read { outcome: Ok(got) } => Some(got.map_or(0, |(v, _)| v)),
            _ => None,
        }
    }
}

/// Checks one register key's calls (see the module docs). Unanswered writes may or may not have applied:
/// nothing is asked of them but that their value, if read, was sent before the read answered.
pub fn check_register(name: &str, ops: &[RegOp]) -> Result<(), Failure> {
    // Versions and values, one to one.
    let mut by_version: BTreeMap<u64, i64> = BTreeMap::new();
    let mut by_value: BTreeMap<i64, u64> = BTreeMap::new();
    for op in ops {
        let (version, value) = match op.kind {
            RegKind::Write { value, outcome: Ok(v) } => (v, value),
            RegKind::Read { outcome: Ok(Some((v, value))) } => (v, value),
            _ => continue,
        };
        if let Some(other) = by_version.insert(version, value) {
            ensure!(
                other == value,
                "register {name}: version {version} seen with values {other} and {value}: an acknowledged write \
                 was lost and its version handed out again"
            );
        }
        if let Some(other) = by_value.insert(value, version) {
            ensure!(
                other == version,
                "register {name}: value {value} seen at versions {other} and {version}"
            );
        }
    }
    for op in ops {
        // A read's value was written by a call sent before the read answered.
        if let RegKind::Read { outcome: Ok(Some((v, value))) } = op.kind {
            let sent = ops
                .iter()
                .any(|w| matches!(w.kind, RegKind::Write { value: x, .. } if x == value) && w.start < op.end);
            ensure!(
                sent,
                "register {name}: a read answered value {value} (version {v}) at {:?}, which no write had sent by then",
                op.end
            );
        }
        // Nothing observed goes back.
        let Some(mine) = op.observed() else { continue };
        let is_write = matches!(op.kind, RegKind::Write { .. });
        for before in ops.iter().filter(|b| b.end < op.start) {
            let Some(theirs) = before.observed() else { continue };
            let back = if is_write { mine <= theirs } else { mine < theirs };
            ensure!(
                !back,
                "register {name}: a {} sent at {:?} answered version {mine}, but version {theirs} was observed \
                 (answered at {:?}) before it started: {}",
                if is_write { "write" } else { "read" },
                op.start,
                before.end,
                if is_write { "an acknowledged write was lost" } else { "a stale read" }
            );
        }
    }
    Ok(())
}

/// The single-activation check over the storage node's history in `trace` (its `dosim::storage_node` logs
/// "opened <object> epoch=E" and "applied <object> epoch=E version=V"): per object, no commit applies under
/// an epoch older than one that already opened the object or committed to it (two activations writing).
/// The number of commits checked.
///
/// Both logs come before what they log is durable, so a power cut of the storage node may take an open back
/// (its caller never got the answer, so no newer activation started): at a power cut each object's newest
/// epoch falls back to the newest that committed (a commit's epoch had opened the object durably first),
/// and what a node logs while it is down (its code runs on to its next await) does not count.
pub fn check_commit_history(trace: &Trace) -> Result<usize, String> {
    // Per object: the newest epoch that opened it or committed, and the newest that committed.
    let mut epochs: BTreeMap<(NodeId, String), (i64, i64)> = BTreeMap::new();
    let mut down: BTreeSet<NodeId> = BTreeSet::new();
    let mut commits = 0;
    for e in trace.events() {
        let node = e.node.unwrap_or(NodeId(u32::MAX));
        let (target, text) = match &e.kind {
            EventKind::Node(NodeAction::Crash) => {
                down.insert(node);
                continue;
            }
            EventKind::Node(NodeAction::PowerCut) => {
                down.insert(node);
                for ((n, _), (newest, committed)) in epochs.iter_mut() {
                    if *n == node {
                        *newest = *committed;
                    }
                }
                continue;
            }
            EventKind::Node(NodeAction::Restart) => {
                down.remove(&node);
                continue;
            }
            EventKind::Log { target, text } => (target, text),
            _ => continue,
        };
        if target != "dosim::storage_node" || down.contains(&node) {
            continue;
        }
        let mut words = text.split(' ');
        let (what, object) = (words.next().unwrap_or_default(), words.next().unwrap_or_default().to_string());
        let field = |w: Option<&str>, name: &str| -> i64 {
            w.and_then(|w| w.strip_prefix(name)).and_then(|v| v.parse().ok()).expect("a field")
        };
        let (newest, committed) = epochs.entry((node, object.clone())).or_insert((i64::MIN, i64::MIN));
        match what {
            "opened" => *newest = (*newest).max(field(words.next(), "epoch=")),
            "applied" => {
                let epoch = field(words.next(), "epoch=");
                let version = field(words.next(), "version=");
                if epoch < *newest {
                    return Err(format!(
                        "{object}: a commit of epoch {epoch} (version {version}) applied after epoch {newest} had \
                         opened the object or committed to it"
                    ));
                }
                *newest = epoch;
                *committed = (*committed).max(epoch);
                commits += 1;
            }
            _ => {}
        }
    }
    Ok(commits)
}

/// Runs the scenario for one seed.
pub(crate) fn run(seed: Seed) -> Result<RunReport, RunFailure> {
    run_with(seed, &Options::from_seed(seed), true)
}

/// The scenario with a storage node that does not fence older epochs: the superseded writes apply, and the
/// checks must catch it under some seeds. It proves the checks can fail.
pub fn run_negative_control(seed: Seed) -> Result<RunReport, RunFailure> {
    run_with(seed, &Options::from_seed(seed), false)
}

/// The scenario under `seed` with the given options instead of the seed's own: for a regression test that
/// pins the options a seed had when the failure was found.
pub fn run_with_options(seed: Seed, options: &Options) -> Result<RunReport, RunFailure> {
    run_with(seed, options, true)
}

/// The error of a failed call: whether it was retryable, counted.
fn failed(e: &Error) -> bool {
    if e.message() == messages::STORAGE_NO_LONGER_ACCESSIBLE {
        dosim_sim::sometimes(
            "a call failed with 'storage no longer accessible' (a superseded or reset instance)",
        );
    }
    if e.retryable() {
        dosim_sim::sometimes("a call failed with a retryable error");
    } else {
        dosim_sim::sometimes("a call failed with a non-retryable error");
    }
    e.retryable()
}

async fn increment(front: &HostNode, name: &'static str) -> Result<i64, Error> {
    front
        .run(move |env| async move {
            env.durable_object("COUNTER")?.get_by_name(name).call::<_, i64>("increment", &1i64).await
        })
        .await
        .expect("the front is never faulted")
}

async fn read_counter(front: &HostNode, name: &'static str) -> Result<i64, Error> {
    front
        .run(move |env| async move {
            env.durable_object("COUNTER")?.get_by_name(name).call::<_, i64>("read", &()).await
        })
        .await
        .expect("the front is never faulted")
}

/// A register write from `via`, as a [`RegOp`].
async fn write(
    world: &World,
    via: &HostNode,
    (name, key, value): (&'static str, &'static str, i64),
) -> RegOp {
    let start = world.now();
    let got = via
        .run(move |env| async move {
            env.durable_object("REGISTER")?
                .get_by_name(name)
                .call::<_, u64>("put", &(key.to_string(), value))
                .await
        })
        .await;
    let outcome = match got {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(failed(&e)),
        // The node died with the call: it may or may not have run.
        Err(_) => Err(true),
    };
    RegOp { start, end: world.now(), kind: RegKind::Write { value, outcome } }
}

/// A register read from `via`, as a [`RegOp`].
async fn read(world: &World, via: &HostNode, name: &'static str, key: &'static str) -> RegOp {
    let start = world.now();
    let got = via
        .run(move |env| async move {
            env.durable_object("REGISTER")?
                .get_by_name(name)
                .call::<_, Option<(u64, i64)>>("get", &key.to_string())
                .await
        })
        .await;
    let outcome = match got {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(failed(&e)),
        Err(_) => Err(true),
    };
    RegOp { start, end: world.now(), kind: RegKind::Read { outcome } }
}

/// The host node the directory names as the owner of register `name`, if any (asked from the front).
async fn owner_of(front: &HostNode, name: &'static str) -> Option<NodeId> {
    let owner = front
        .run(move |env| async move {
            let id = env.durable_object("REGISTER").ok()?.id_from_name(name);
            let directory = Directory::new(Rc::new(EtcdCoordinator::new(etcd_addr(ETCD))));
            directory.owner(REGISTER_NS, &id).await.ok().flatten().map(|o| o.host)
        })
        .await
        .expect("the front is never faulted")?;
    HOSTS.iter().copied().find(|n| addr_of(*n, CLUSTER_PORT) == owner)
}

/// What the controller saw of every object.
#[derive(Default)]
struct Seen {
    counters: BTreeMap<&'static str, History>,
    registers: BTreeMap<(&'static str, &'static str), Vec<RegOp>>,
}

/// Stages a superseded write on register `name`, key `key` (see the module docs), recording every call.
async fn superseded_write(
    world: &World,
    front: &HostNode,
    hosts: &[HostNode],
    seen: &mut Seen,
    (name, key, value): (&'static str, &'static str, i64),
) {
    let ops = seen.registers.entry((name, key)).or_default();
    // Activate the object (the write below must find an owner), then find it.
    ops.push(read(world, front, name, key).await);
    let Some(old) = owner_of(front, name).await else { return };
    // The owner is cut off from the directory, and its commits to the storage node are held on the way. Late
    // in its lease (which it still believes in) it commits the write locally and sends the batch; then it
    // is paused, so it never notices its lease lapse, while the directory expires the lease.
    let clogged = world.clog_link(old, STORAGE).is_ok();
    let cut = world.partition(&[old], &[ETCD], Direction::Both).is_ok();
    world.sleep(SUPERSEDED_LATE).await;
    let late = {
        let (world, front) = (world.clone(), front.clone());
        madsim::task::spawn(async move { write(&world, &front, (name, key, value)).await })
    };
    world.sleep(SUPERSEDED_COMMIT).await;
    let paused = world.pause(old).is_ok();
    world.sleep(SUPERSEDED_EXPIRY).await;
    // Another host takes the object over: a read from a host other than the old owner (the front still
    // names the old owner, and would wait for it). It only reads, so the late batch's base stays current.
    let others: Vec<&HostNode> = hosts.iter().filter(|h| h.node() != old).collect();
    let deadline = world.now() + TAKEOVER_MAX;
    let mut reads = 0;
    let mut taken_by = None;
    while taken_by.is_none() && world.now() < deadline {
        let via = others[reads % others.len()];
        let op = read(world, via, name, key).await;
        reads += 1;
        if op.observed().is_some() {
            taken_by = Some(via);
        }
        ops.push(op);
        if taken_by.is_none() {
            world.sleep(Duration::from_millis(200)).await;
        }
    }
    // The held batch arrives (fenced, or without fencing applied), then the old owner resumes and its
    // partition heals (with every other: a heal heals all).
    if clogged {
        let _ = world.unclog_link(old, STORAGE);
    }
    world.sleep(Duration::from_millis(50)).await;
    if paused {
        let _ = world.resume(old);
    }
    if cut {
        world.heal();
    }
    let late = late.await.expect("the controller's task");
    if let RegKind::Write { outcome: Err(_), .. } = late.kind {
        dosim_sim::sometimes("a superseded write failed");
    }
    ops.push(late);
    // Reads right after: through the front (whose last answer for the object may have come from the old
    // owner), and from the host that took the object over.
    let after = read(world, front, name, key).await;
    ops.push(after);
    if let Some(via) = taken_by {
        ops.push(read(world, via, name, key).await);
    }
    dosim_sim::note(
        &format!("superseded write {name}.{key}"),
        format!(
            "owner={old} clogged={clogged} cut={cut} paused={paused} late={:?} takeover_reads={reads} read_after={:?}",
            late.kind, after.kind
        ),
    );
}

fn run_with(seed: Seed, options: &Options, fencing: bool) -> Result<RunReport, RunFailure> {
    let mut b = Sim::builder().seed(seed).node(etcd_node(ETCD, "etcd"));
    let (config, front) = cluster_node(FRONT, "front", ETCD, &[STORAGE], ClusterRole::Front, build);
    b = b.node(config);
    let mut hosts = Vec::new();
    for (i, node) in HOSTS.iter().enumerate() {
        let (config, host) =
            cluster_node(*node, &format!("host-{}", i + 1), ETCD, &[STORAGE], ClusterRole::Host, build);
        b = b.node(config);
        hosts.push(host);
    }
    b = b.node(storage_node("storage", fencing));
    let disk = DiskConfig { io_error_rate: options.disk_io_error_rate, ..DiskConfig::default() };
    let sim = b
        .network(options.network())
        .disk(disk)
        .faults(options.plan())
        .options(options.describe(seed))
        .build()?;
    let (waves, wave_max, superseded) = (options.waves, options.wave_max, options.superseded_writes.clone());
    let report = sim.run(move |world| async move {
        let mut rng = SimRng::new(seed, Purpose::Workload);
        let mut seen = Seen::default();
        let mut next_value = 0i64;
        world.sleep(STARTUP).await;
        for wave_no in 0..waves {
            let n = 1 + rng.below(wave_max);
            let mut increments = Vec::new();
            let mut calls = Vec::new();
            for _ in 0..n {
                let (world, front) = (world.clone(), front.clone());
                if rng.below(2) == 0 {
                    let name = COUNTERS[rng.below(COUNTERS.len() as u64) as usize];
                    seen.counters.entry(name).or_default().attempts += 1;
                    increments
                        .push((name, madsim::task::spawn(async move { increment(&front, name).await })));
                } else {
                    let name = REGISTERS[rng.below(REGISTERS.len() as u64) as usize];
                    let key = KEYS[rng.below(KEYS.len() as u64) as usize];
                    let task = if rng.below(2) == 0 {
                        next_value += 1;
                        let value = next_value;
                        madsim::task::spawn(async move { write(&world, &front, (name, key, value)).await })
                    } else {
                        madsim::task::spawn(async move { read(&world, &front, name, key).await })
                    };
                    calls.push(((name, key), task));
                }
            }
            for (name, task) in increments {
                match task.await.expect("the controller's task") {
                    Ok(value) => {
                        let h = seen.counters.entry(name).or_default();
                        let attempts_by_then = h.attempts;
                        h.acked.push(Ack { wave: wave_no, attempts_by_then, value });
                    }
                    Err(e) => {
                        failed(&e);
                    }
                }
            }
            for (key, task) in calls {
                let op = task.await.expect("the controller's task");
                seen.registers.entry(key).or_default().push(op);
            }
            if superseded.contains(&wave_no) {
                let name = REGISTERS[rng.below(REGISTERS.len() as u64) as usize];
                let key = KEYS[rng.below(KEYS.len() as u64) as usize];
                next_value += 1;
                superseded_write(&world, &front, &hosts, &mut seen, (name, key, next_value)).await;
            }
            world.sleep(Duration::from_millis(rng.between(10, 400))).await;
        }
        world.stop_faults();
        let stopped = world.now();
        // Liveness: every object answers within the bound (each retried until then, all at once).
        let mut counter_reads = Vec::new();
        for name in COUNTERS {
            let (world, front) = (world.clone(), front.clone());
            counter_reads.push((
                name,
                madsim::task::spawn(async move {
                    loop {
                        match read_counter(&front, name).await {
                            Ok(v) => return Ok((v, world.now())),
                            Err(_) if world.now() < stopped + LIVENESS_BOUND => {
                                madsim::time::sleep(Duration::from_millis(200)).await;
                            }
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                }),
            ));
        }
        let mut register_reads = Vec::new();
        for name in REGISTERS {
            for key in KEYS {
                let (world, front) = (world.clone(), front.clone());
                register_reads.push((
                    (name, key),
                    madsim::task::spawn(async move {
                        loop {
                            let op = read(&world, &front, name, key).await;
                            if op.observed().is_some() || world.now() >= stopped + LIVENESS_BOUND {
                                return op;
                            }
                            madsim::time::sleep(Duration::from_millis(200)).await;
                        }
                    }),
                ));
            }
        }
        for (name, task) in counter_reads {
            let got = task.await.expect("the controller's task");
            let (value, at) = match got {
                Ok(v) => v,
                Err(e) => {
                    return Err(Failure::pending(format!(
                        "counter {name} did not answer within {LIVENESS_BOUND:?} of the faults stopping: {e}"
                    )))
                }
            };
            ensure_live!(
                at <= stopped + LIVENESS_BOUND,
                "counter {name} answered only at {at:?}, the faults stopped at {stopped:?}"
            );
            let h = seen.counters.remove(name).unwrap_or_default();
            let values: Vec<i64> = h.acked.iter().map(|a| a.value).collect();
            dosim_sim::note(
                &format!("counter {name}"),
                format!("value={value} attempts={} acked={values:?}", h.attempts),
            );
            check_history(name, &h, value)?;
        }
        for ((name, key), task) in register_reads {
            let last = task.await.expect("the controller's task");
            ensure_live!(
                last.observed().is_some() && last.end <= stopped + LIVENESS_BOUND,
                "register {name} did not answer within {LIVENESS_BOUND:?} of the faults stopping: {last:?}"
            );
            let ops = seen.registers.entry((name, key)).or_default();
            ops.push(last);
            let (acked, unknown) = ops.iter().fold((0, 0), |(a, u), op| match op.kind {
                RegKind::Write { outcome: Ok(_), .. } => (a + 1, u),
                RegKind::Write { outcome: Err(_), .. } => (a, u + 1),
                RegKind::Read { .. } => (a, u),
            });
            dosim_sim::note(
                &format!("register {name}.{key}"),
                format!(
                    "final={:?} writes_acked={acked} writes_unknown={unknown} calls={}",
                    last.kind,
                    ops.len()
                ),
            );
            check_register(&format!("{name}.{key}"), ops)?;
        }
        Ok(())
    })?;
    match check_commit_history(&report.trace) {
        Ok(commits) if commits > 0 => Ok(report),
        Ok(_) => {
            Err(fail(report, options.describe(seed), Failure::pending("the storage node applied no commit")))
        }
        Err(e) => Err(fail(report, options.describe(seed), Failure::new(format!("single activation: {e}")))),
    }
}

/// A run that passed its own checks but failed one over its trace.
fn fail(report: RunReport, options: RunOptions, failure: Failure) -> RunFailure {
    RunFailure::after(report, options, failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn w(start: u64, end: u64, value: i64, outcome: Result<u64, bool>) -> RegOp {
        RegOp { start: ms(start), end: ms(end), kind: RegKind::Write { value, outcome } }
    }

    fn r(start: u64, end: u64, outcome: Result<Option<(u64, i64)>, bool>) -> RegOp {
        RegOp { start: ms(start), end: ms(end), kind: RegKind::Read { outcome } }
    }

    fn fails(ops: &[RegOp]) -> String {
        check_register("r", ops).expect_err("the register check must fail").message().to_string()
    }

    #[test]
    fn a_sound_register_history_passes_whatever_the_unanswered_writes_did() {
        let ops = [
            r(0, 1, Ok(None)),
            w(2, 5, 10, Ok(1)),
            // Unanswered: it applied (a later read sees it) ...
            w(6, 40, 11, Err(true)),
            r(41, 42, Ok(Some((2, 11)))),
            // ... and one that did not (nothing sees it); concurrent calls in any order.
            w(43, 80, 12, Err(true)),
            w(44, 50, 13, Ok(3)),
            r(45, 46, Ok(Some((2, 11)))),
            r(51, 52, Ok(Some((3, 13)))),
        ];
        check_register("r", &ops).unwrap();
    }

    #[test]
    fn the_register_check_catches_lost_writes_stale_reads_and_invented_values() {
        // Negative controls fed straight to the checker. A write acknowledged at version 1 lost: the next write
        // answers version 1 again.
        let lost = [w(0, 1, 10, Ok(1)), w(2, 3, 11, Ok(1))];
        assert!(fails(&lost).contains("version 1 seen with values 10 and 11"), "{}", fails(&lost));
        // A read going back below a version acknowledged before it started.
        let stale = [w(0, 1, 10, Ok(1)), w(2, 3, 11, Ok(2)), r(4, 5, Ok(Some((1, 10))))];
        assert!(fails(&stale).contains("a stale read"), "{}", fails(&stale));
        // A read of nothing after an acknowledged write.
        let empty = [w(0, 1, 10, Ok(1)), r(2, 3, Ok(None))];
        assert!(fails(&empty).contains("a stale read"), "{}", fails(&empty));
        // A write going back (its version not above one read before it).
        let back = [w(0, 9, 10, Err(true)), r(10, 11, Ok(Some((1, 10)))), w(12, 13, 11, Ok(1))];
        assert!(fails(&back).contains("version 1 seen with values 10 and 11"), "{}", fails(&back));
        // A value read before any write of it was sent.
        let invented = [r(0, 1, Ok(Some((1, 10)))), w(2, 3, 10, Ok(1))];
        assert!(fails(&invented).contains("which no write had sent by then"), "{}", fails(&invented));
    }

    #[test]
    fn the_commit_history_check_catches_an_older_epoch_after_a_newer_one() {
        let log = |trace: &mut Trace, text: &str| {
            let kind = EventKind::Log { target: "dosim::storage_node".into(), text: text.into() };
            trace.record(Duration::ZERO, Some(STORAGE), kind);
        };
        let node = |trace: &mut Trace, action: NodeAction| {
            trace.record(Duration::ZERO, Some(STORAGE), EventKind::Node(action));
        };
        let mut trace = Trace::new(dosim_sim::TraceMode::Full);
        log(&mut trace, "applied o epoch=3 version=1");
        log(&mut trace, "applied o epoch=5 version=2");
        log(&mut trace, "applied p epoch=4 version=1");
        assert_eq!(check_commit_history(&trace), Ok(3));
        log(&mut trace, "applied o epoch=3 version=3");
        let e = check_commit_history(&trace).unwrap_err();
        assert!(e.contains("o: a commit of epoch 3 (version 3) applied after epoch 5"), "{e}");
        // A newer owner opened the object (and only read): an older owner's commit after that is caught too.
        let mut trace = Trace::new(dosim_sim::TraceMode::Full);
        log(&mut trace, "applied o epoch=3 version=1");
        log(&mut trace, "opened o epoch=7");
        log(&mut trace, "applied o epoch=3 version=2");
        assert!(check_commit_history(&trace).unwrap_err().contains("after epoch 7"));
        // Unless a power cut took the open back before it was durable; and what a downed node logs does not
        // count.
        let mut trace = Trace::new(dosim_sim::TraceMode::Full);
        log(&mut trace, "applied o epoch=3 version=1");
        log(&mut trace, "opened o epoch=7");
        node(&mut trace, NodeAction::PowerCut);
        log(&mut trace, "opened o epoch=8");
        node(&mut trace, NodeAction::Restart);
        log(&mut trace, "applied o epoch=3 version=2");
        assert_eq!(check_commit_history(&trace), Ok(2));
    }

    #[test]
    fn options_start_with_the_seed_and_name_every_choice() {
        let seed = Seed(0x2a);
        let o = options(seed);
        let keys: Vec<&str> = o.iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "seed",
                "net_loss",
                "net_duplicate",
                "net_reorder",
                "faults",
                "fault_mean_interval_ms",
                "fault_max_outage_ms",
                "restart_after_power_cut_ms",
                "storage_power_cuts_at_disk_ops",
                "partitions",
                "superseded_writes_after_waves",
                "waves",
                "wave_max",
                "disk_io_error_rate"
            ]
        );
        assert_eq!(options(seed), o, "the same seed gives the same options");
        // The swarm: over many seeds, each kind is sometimes in and sometimes out.
        let all: Vec<Options> = (0..64).map(|i| Options::from_seed(Seed(9).nth(i))).collect();
        assert!(all.iter().any(|o| o.net_loss.is_never()) && all.iter().any(|o| !o.net_loss.is_never()));
        assert!(all.iter().any(|o| o.fault_kinds.is_empty()) && all.iter().any(|o| o.fault_kinds.len() == 3));
        for hop in Hop::ALL {
            assert!(all.iter().any(|o| o.partitions.iter().any(|c| c.hop == hop)), "{hop:?} never drawn");
        }
        assert!(all.iter().all(|o| !o.superseded_writes.is_empty()));
        assert!(
            all.iter().any(|o| o.disk_io_error_rate.is_never())
                && all.iter().any(|o| !o.disk_io_error_rate.is_never())
        );
    }
}
