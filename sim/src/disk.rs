//! `SimDisk`: a crash-consistent simulated disk per node, which survives node restarts.
//!
//! # Fault model
//! Each file has a *durable* image (what is on the platter) and a *current* image (what reads see). A write or
//! truncate changes the current image at once and joins the file's log of *pending* operations; a sync folds
//! the file's pending log into its durable image. Creating and deleting a file are metadata operations that
//! need no sync (a journaling file system with synchronous directory updates).
//!
//! ## Time: when an operation reaches the platter
//! A node's disk is one FIFO device. Every operation takes a latency drawn on the simulated clock (opens and
//! deletes take none): issued at `now`, it starts at `max(now, busy_until)`, ends `latency` later, and the
//! device is busy until then. SQLite calls the disk synchronously, so every call returns at once; the node's
//! *I/O debt* is what the device still has to do (`busy_until - now`), and `settle` sleeps it off before the
//! caller acts on the result (the output gate's durability wait).
//!
//! [`DiskConfig::durability`] says when an operation's effect on what a power cut leaves takes place:
//! - [`Durability::AfterLatency`] (the default): at the operation's end. Reads see every operation at once
//!   (SQLite reads its own writes), but its *durability effect* (a write or truncate joining the pending log,
//!   a sync folding it into the durable image, a create or delete reaching the directory) is *in flight* until
//!   the simulated clock reaches its end, and a power cut before then discards it. So a `COMMIT` returns with
//!   its syncs in flight, and nothing may claim it durable before `settle` returns. In-flight effects are
//!   performed lazily, at the next disk call, query, settle or power cut after their end.
//! - [`Durability::AtCall`]: at the call; the latency is only accounted as I/O debt (which then does not
//!   shrink as time passes: `settle` sleeps all of it). A `COMMIT` is durable when it returns. A
//!   [`crate::LocalWorld`] has no clock, so its disk always works this way.
//!
//! A delete and a re-create of the same path can both be in flight (SQLite deletes a rollback journal or a
//! WAL and may create it again right after: in `journal_mode=DELETE` without an exclusive lock, it does so at
//! every commit). So each file *incarnation* (a path's file from its create to its delete) has an id, and
//! the disk keeps two namespaces from paths to incarnations: the *current* one, which opens, reads and
//! listings see, and the *durable* one, which a power cut leaves. An in-flight create or delete updates the
//! durable namespace when it is performed.
//!
//! ## Faults
//! - A **process crash** loses nothing on disk: pending writes sit in the OS cache and stay pending, and
//!   operations in flight stay in flight (the device works through its queue; a later power cut may still
//!   catch them). Handles of the dead incarnation go stale and every later operation on them fails.
//! - A **power cut** at time `t` performs the operations in flight that ended by `t` and discards the rest
//!   (each discarded write or truncate is a lost write). Then it resolves every file's pending log by one
//!   [`CrashMode`] drawn from the configured set: lose it all, keep a prefix, keep a random subset in order,
//!   or keep a prefix and tear the next write (some of its sectors written, one of them cut at a byte). The
//!   durable namespace and images become the current ones.
//! - **EIO** can hit any read, write, truncate or sync, at a configured rate or at the N-th operation.
//!   **ENOSPC** hits a write that would grow the disk past its capacity, or at a rate, or at the N-th
//!   operation. A failed operation changes nothing, but it occupies the device for its latency.
//! - A **power cut at the N-th operation** fails that operation and every later one until the node restarts.
//!   It lands at that operation's start, when the FIFO device has finished every earlier operation: those are
//!   performed, and the pending writes are resolved as above.
//!
//! Every injected fault is counted ([`crate::FaultKind`]) and every operation is a trace event; a power cut's
//! event ([`crate::CrashOutcome`]) says how many operations it caught in flight.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use xxhash_rust::xxh3::xxh3_64;

use crate::context::{self, RunCtx};
use crate::fault::{DiskFaultKind, FaultKind, PlanError};
use crate::ratio::Ratio;
use crate::rng::Purpose;
use crate::trace::{CrashOutcome, DiskOp, EventKind, NodeId};

/// How a power cut resolves the pending writes of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CrashMode {
    /// Every pending write is lost.
    LoseAll,
    /// A random prefix of the pending writes reaches the disk, in order.
    KeepPrefix,
    /// A random subset of the pending writes reaches the disk, applied in their original order.
    KeepSubset,
    /// A random prefix reaches the disk and the next write is torn: a random subset of its sectors is written,
    /// one of them only up to a random byte.
    Tear,
}

impl CrashMode {
    /// Every mode.
    pub const ALL: [CrashMode; 4] =
        [CrashMode::LoseAll, CrashMode::KeepPrefix, CrashMode::KeepSubset, CrashMode::Tear];

    /// The name used in configs (`lose-all`, `keep-prefix`, `keep-subset`, `tear`).
    pub fn name(self) -> &'static str {
        match self {
            CrashMode::LoseAll => "lose-all",
            CrashMode::KeepPrefix => "keep-prefix",
            CrashMode::KeepSubset => "keep-subset",
            CrashMode::Tear => "tear",
        }
    }
}

impl std::str::FromStr for CrashMode {
    type Err = PlanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CrashMode::ALL.iter().copied().find(|m| m.name() == s.trim()).ok_or_else(|| {
            let names: Vec<&str> = CrashMode::ALL.iter().map(|m| m.name()).collect();
            PlanError(format!("unknown crash mode {s:?}: expected one of {}", names.join(", ")))
        })
    }
}

/// The sector size the disk tears at, and that the SQLite VFS reports.
pub const SECTOR_SIZE: usize = 512;

/// A latency range for one kind of disk operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencyRange {
    /// Fastest.
    pub min: Duration,
    /// Slowest.
    pub max: Duration,
}

impl LatencyRange {
    /// No latency.
    pub const ZERO: LatencyRange = LatencyRange { min: Duration::ZERO, max: Duration::ZERO };

    /// A uniform range.
    pub const fn new(min: Duration, max: Duration) -> LatencyRange {
        LatencyRange { min, max }
    }
}

/// When a disk operation's effect on what survives a power cut takes place (see the module's fault model).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Durability {
    /// At the call: a synced write is durable when `sync` returns, and the latency is only accounted as the
    /// node's I/O debt.
    AtCall,
    /// At the end of the operation's latency, behind every operation issued before it: until then a power
    /// cut discards it.
    AfterLatency,
}

/// The disk of every node in a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    /// Bytes the disk holds before writes fail with ENOSPC. `None`: unlimited.
    pub capacity: Option<u64>,
    /// The modes a power cut draws from.
    pub crash_modes: Vec<CrashMode>,
    /// Probability that a read, write, truncate or sync fails with EIO.
    pub io_error_rate: Ratio,
    /// Probability that a write fails with ENOSPC.
    pub full_rate: Ratio,
    /// Latency of a read.
    pub read_latency: LatencyRange,
    /// Latency of a write or truncate.
    pub write_latency: LatencyRange,
    /// Latency of a sync.
    pub sync_latency: LatencyRange,
    /// When an operation's effect becomes durable: at the call, or once its latency has elapsed.
    pub durability: Durability,
}

impl Default for DiskConfig {
    /// An SSD-like disk: no injected errors, every crash mode, tens of microseconds per operation and a
    /// millisecond per sync, each durable only once its latency has elapsed. Its one FIFO device makes fewer
    /// than 200 SQLite commits a second (four syncs each in `journal_mode=DELETE`, one in WAL).
    fn default() -> Self {
        DiskConfig {
            capacity: None,
            crash_modes: CrashMode::ALL.to_vec(),
            io_error_rate: Ratio::NEVER,
            full_rate: Ratio::NEVER,
            read_latency: LatencyRange::new(Duration::from_micros(20), Duration::from_micros(100)),
            write_latency: LatencyRange::new(Duration::from_micros(20), Duration::from_micros(100)),
            sync_latency: LatencyRange::new(Duration::from_micros(500), Duration::from_millis(2)),
            durability: Durability::AfterLatency,
        }
    }
}

impl DiskConfig {
    /// A disk with no latency and no injected errors (crash modes as configured): every operation ends at
    /// its call, so it is durable there whatever [`DiskConfig::durability`] says.
    pub fn instant() -> DiskConfig {
        DiskConfig {
            read_latency: LatencyRange::ZERO,
            write_latency: LatencyRange::ZERO,
            sync_latency: LatencyRange::ZERO,
            ..DiskConfig::default()
        }
    }

    /// Checks the config, naming the bad value.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.crash_modes.is_empty() {
            return Err(PlanError("disk config needs at least one crash mode".into()));
        }
        for (name, l) in [
            ("read_latency", self.read_latency),
            ("write_latency", self.write_latency),
            ("sync_latency", self.sync_latency),
        ] {
            if l.min > l.max {
                return Err(PlanError(format!(
                    "disk {name} range is empty: min {:?} > max {:?}",
                    l.min, l.max
                )));
            }
        }
        Ok(())
    }
}

/// Why a disk operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskErrorKind {
    /// EIO: injected, or the power is out.
    Io,
    /// ENOSPC.
    Full,
    /// The file does not exist.
    NotFound,
    /// The handle belongs to an incarnation of the node that has since crashed.
    Stale,
}

/// A failed disk operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskError {
    /// What went wrong.
    pub kind: DiskErrorKind,
    /// During which operation.
    pub op: DiskOp,
    /// On which file.
    pub path: Arc<str>,
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            DiskErrorKind::Io => "EIO",
            DiskErrorKind::Full => "ENOSPC",
            DiskErrorKind::NotFound => "ENOENT",
            DiskErrorKind::Stale => "EBADF (handle of a crashed incarnation)",
        };
        write!(f, "{what} on {:?} of {}", self.op, self.path)
    }
}

impl std::error::Error for DiskError {}

#[derive(Clone, Debug)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    Truncate { size: u64 },
}

#[derive(Clone, Debug, Default)]
struct FileData {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<Pending>,
}

fn apply_write(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = usize::try_from(offset).expect("offset fits in memory");
    let end = start + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[start..end].copy_from_slice(data);
}

fn apply(image: &mut Vec<u8>, op: &Pending) {
    match op {
        Pending::Write { offset, data } => apply_write(image, *offset, data),
        Pending::Truncate { size } => image.resize(usize::try_from(*size).expect("size fits in memory"), 0),
    }
}

/// A file incarnation: one path's file from its create to its delete.
type FileId = u64;

/// What an operation does to what survives a power cut.
#[derive(Debug)]
enum Effect {
    /// A write or truncate joins the file's pending log.
    Pending { file: FileId, op: Pending },
    /// The file's pending log folds into its durable image.
    Sync { file: FileId },
    /// The path names the incarnation durably.
    Create { path: Arc<str>, file: FileId },
    /// The path no longer names the incarnation durably, and the incarnation is gone.
    Delete { path: Arc<str>, file: FileId },
}

/// An effect waiting for the end of its operation's latency.
#[derive(Debug)]
struct InFlight {
    end: Duration,
    effect: Effect,
}

/// When an issued operation's effect takes place.
#[derive(Clone, Copy, Debug)]
enum Due {
    /// At once.
    Now,
    /// When the simulated clock reaches this time.
    At(Duration),
}

#[derive(Debug)]
struct Disk {
    /// The current namespace: what opens, reads and listings see.
    names: BTreeMap<Arc<str>, FileId>,
    /// The durable namespace: what a power cut leaves.
    durable_names: BTreeMap<Arc<str>, FileId>,
    /// Every incarnation either namespace (or an in-flight effect) refers to.
    files: BTreeMap<FileId, FileData>,
    next_file: FileId,
    /// Effects of operations issued but not yet ended, in issue order (so in end order: the device is FIFO).
    in_flight: VecDeque<InFlight>,
    /// When the device finishes the last operation issued (under [`Durability::AfterLatency`]).
    busy_until: Duration,
    /// Writes and truncates that power cuts caught in flight, over the disk's life.
    lost_in_flight: u64,
    /// Operations so far, over the disk's whole life.
    ops: u64,
    /// False from a power cut until the node restarts.
    powered: bool,
    /// Bumped at every crash or power cut; handles from an older generation are stale.
    generation: u64,
    /// Faults armed at operation indices.
    armed: BTreeMap<u64, DiskFaultKind>,
    /// Simulated I/O time not yet slept off (under [`Durability::AtCall`]).
    io_debt: Duration,
    /// A power cut fired by an armed fault that the world has not acted on yet.
    cut_unhandled: bool,
}

impl Disk {
    fn new() -> Disk {
        Disk {
            names: BTreeMap::new(),
            durable_names: BTreeMap::new(),
            files: BTreeMap::new(),
            next_file: 0,
            in_flight: VecDeque::new(),
            busy_until: Duration::ZERO,
            lost_in_flight: 0,
            ops: 0,
            powered: true,
            generation: 0,
            armed: BTreeMap::new(),
            io_debt: Duration::ZERO,
            cut_unhandled: false,
        }
    }

    fn used_bytes(&self) -> u64 {
        self.names.values().map(|id| self.files[id].current.len() as u64).sum()
    }

    /// The current incarnation at `path`.
    fn file(&self, path: &str) -> Option<&FileData> {
        self.names.get(path).map(|id| &self.files[id])
    }

    /// The current incarnation at `path`, with its id.
    fn file_mut(&mut self, path: &str) -> Option<(FileId, &mut FileData)> {
        let id = *self.names.get(path)?;
        Some((id, self.files.get_mut(&id).expect("a named incarnation is stored")))
    }

    /// Performs the in-flight effects whose operations ended by `now`.
    fn advance(&mut self, now: Duration) {
        while self.in_flight.front().is_some_and(|f| f.end <= now) {
            let f = self.in_flight.pop_front().expect("the front exists");
            self.perform(f.effect);
        }
    }

    /// Performs `effect` when `due`.
    fn submit(&mut self, due: Due, effect: Effect) {
        match due {
            Due::Now => {
                debug_assert!(self.in_flight.is_empty(), "an effect due now has nothing in flight before it");
                self.perform(effect);
            }
            Due::At(end) => self.in_flight.push_back(InFlight { end, effect }),
        }
    }

    fn perform(&mut self, effect: Effect) {
        // Every effect's incarnation is stored: only a performed delete or a power cut (which discards every
        // effect in flight) drops one, and nothing is issued on an incarnation after its delete.
        let stored = "an in-flight effect's incarnation is stored";
        match effect {
            Effect::Pending { file, op } => self.files.get_mut(&file).expect(stored).pending.push(op),
            Effect::Sync { file } => {
                let f = self.files.get_mut(&file).expect(stored);
                for op in std::mem::take(&mut f.pending) {
                    apply(&mut f.durable, &op);
                }
                debug_assert!(
                    !self.in_flight.is_empty() || f.durable == f.current,
                    "a synced file with nothing in flight has one image"
                );
            }
            Effect::Create { path, file } => {
                let old = self.durable_names.insert(path, file);
                debug_assert_eq!(
                    old, None,
                    "the durable namespace saw the path's delete before its re-create"
                );
            }
            Effect::Delete { path, file } => {
                if self.durable_names.get(&path) == Some(&file) {
                    self.durable_names.remove(&path);
                }
                self.files.remove(&file);
            }
        }
    }
}

/// The disks of all nodes of a run.
#[derive(Debug)]
pub(crate) struct DiskSet {
    config: DiskConfig,
    disks: Vec<Disk>,
}

impl DiskSet {
    pub(crate) fn new(config: DiskConfig, nodes: u32) -> DiskSet {
        DiskSet { config, disks: (0..nodes).map(|_| Disk::new()).collect() }
    }

    fn disk(&mut self, node: NodeId) -> &mut Disk {
        let n = self.disks.len();
        self.disks
            .get_mut(node.0 as usize)
            .unwrap_or_else(|| panic!("disk of {node} does not exist ({n} disks)"))
    }

    /// `node`'s disk with its in-flight effects performed up to now.
    fn disk_now(&mut self, ctx: &RunCtx, node: NodeId) -> &mut Disk {
        let after_latency = self.config.durability == Durability::AfterLatency;
        let disk = self.disk(node);
        if after_latency {
            disk.advance(ctx.now());
        }
        disk
    }

    pub(crate) fn arm(&mut self, node: NodeId, op: u64, kind: DiskFaultKind) {
        assert!(op > 0, "disk operations are counted from 1");
        self.disk(node).armed.insert(op, kind);
    }
}

/// An open file on a node's disk.
#[derive(Clone, Debug)]
pub struct FileHandle {
    node: NodeId,
    path: Arc<str>,
    generation: u64,
}

impl FileHandle {
    /// The file's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The node whose disk holds the file.
    pub fn node(&self) -> NodeId {
        self.node
    }
}

/// What an operation may draw from the fault model.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OpClass {
    /// Open, delete: count and trace, never fail at random, take no time of their own.
    Meta,
    Read,
    Write,
    Sync,
}

/// Runs the common prologue of an operation: in-flight effects that ended, staleness, power, latency (and
/// the device's queue), the armed fault at this index and random faults. Returns when the operation's effect
/// is due, or the error the operation must fail with.
fn prologue(
    ctx: &RunCtx,
    set: &mut DiskSet,
    node: NodeId,
    generation: Option<u64>,
    op: DiskOp,
    class: OpClass,
    path: &Arc<str>,
) -> Result<Due, DiskError> {
    let err = |kind| DiskError { kind, op, path: path.clone() };
    let DiskSet { config, disks } = set;
    let n = disks.len();
    let disk =
        disks.get_mut(node.0 as usize).unwrap_or_else(|| panic!("disk of {node} does not exist ({n} disks)"));
    let after_latency = config.durability == Durability::AfterLatency;
    let now = if after_latency { ctx.now() } else { Duration::ZERO };
    if after_latency {
        disk.advance(now);
    }
    if let Some(g) = generation {
        if g != disk.generation {
            return Err(err(DiskErrorKind::Stale));
        }
    }
    if !disk.powered {
        return Err(err(DiskErrorKind::Io));
    }
    disk.ops += 1;
    let latency = match class {
        OpClass::Meta => None,
        OpClass::Read => Some(config.read_latency),
        OpClass::Write => Some(config.write_latency),
        OpClass::Sync => Some(config.sync_latency),
    };
    let mut took = Duration::ZERO;
    if let Some(l) = latency {
        if l.max > Duration::ZERO {
            took = ctx.rng(Purpose::Disk, |r| r.duration_between(l.min, l.max));
        }
    }
    // A failed operation occupies the device as long as a successful one.
    let (start, due) = if after_latency {
        let start = now.max(disk.busy_until);
        let end = start + took;
        disk.busy_until = end;
        (start, if end <= now { Due::Now } else { Due::At(end) })
    } else {
        disk.io_debt += took;
        (now, Due::Now)
    };
    if let Some(kind) = disk.armed.remove(&disk.ops) {
        match kind {
            DiskFaultKind::IoError => {
                ctx.count_fault(FaultKind::DiskIoError);
                return Err(err(DiskErrorKind::Io));
            }
            DiskFaultKind::Full if class == OpClass::Write => {
                ctx.count_fault(FaultKind::DiskFull);
                return Err(err(DiskErrorKind::Full));
            }
            DiskFaultKind::Full => {
                ctx.count_fault(FaultKind::DiskIoError);
                return Err(err(DiskErrorKind::Io));
            }
            DiskFaultKind::PowerCut => {
                disk.cut_unhandled = true;
                ctx.count_fault(FaultKind::PowerCut);
                power_off_at(ctx, set, node, start);
                return Err(err(DiskErrorKind::Io));
            }
        }
    }
    if class != OpClass::Meta && ctx.rng(Purpose::Disk, |r| r.chance(config.io_error_rate)) {
        ctx.count_fault(FaultKind::DiskIoError);
        return Err(err(DiskErrorKind::Io));
    }
    if class == OpClass::Write && ctx.rng(Purpose::Disk, |r| r.chance(config.full_rate)) {
        ctx.count_fault(FaultKind::DiskFull);
        return Err(err(DiskErrorKind::Full));
    }
    Ok(due)
}

/// Cuts the power of `node`'s disk now: see [`power_off_at`].
pub(crate) fn power_off(ctx: &RunCtx, set: &mut DiskSet, node: NodeId) {
    power_off_at(ctx, set, node, ctx.now());
}

/// Cuts the power of `node`'s disk at simulated time `at`: performs the in-flight effects that ended by then,
/// discards the rest, resolves every file's pending log by a crash mode, and stops the disk until
/// [`power_on`].
fn power_off_at(ctx: &RunCtx, set: &mut DiskSet, node: NodeId, at: Duration) {
    let modes = set.config.crash_modes.clone();
    let disk = set.disk(node);
    disk.advance(at);
    disk.powered = false;
    disk.generation += 1;
    let mut outcome = CrashOutcome { kept: 0, dropped: 0, torn: 0, unfinished: 0 };
    for f in disk.in_flight.drain(..) {
        outcome.unfinished += 1;
        if matches!(f.effect, Effect::Pending { .. }) {
            disk.lost_in_flight += 1;
            ctx.count_fault(FaultKind::DiskLostWrite);
        }
    }
    if outcome.unfinished > 0 {
        crate::sometimes("a power cut caught disk operations in flight");
    }
    // The device stops: whatever it was busy with is gone.
    disk.busy_until = at;
    // What the disk holds now is the durable namespace; incarnations outside it (created, or deleted and not
    // re-created, with the create or delete in flight) are gone.
    let durable: BTreeSet<FileId> = disk.durable_names.values().copied().collect();
    disk.files.retain(|id, _| durable.contains(id));
    disk.names.clone_from(&disk.durable_names);
    // In path order, so the crash modes are drawn in an order that depends only on the disk's contents.
    for id in disk.durable_names.values() {
        let file = disk.files.get_mut(id).expect("a durably named incarnation is stored");
        let pending = std::mem::take(&mut file.pending);
        if pending.is_empty() {
            continue;
        }
        let mode = *ctx.rng(Purpose::Disk, |r| r.pick(&modes)).expect("crash modes are validated");
        let n = pending.len() as u64;
        let keep: Vec<bool> = match mode {
            CrashMode::LoseAll => vec![false; pending.len()],
            CrashMode::KeepPrefix | CrashMode::Tear => {
                let k = ctx.rng(Purpose::Disk, |r| r.below(n + 1));
                (0..n).map(|i| i < k).collect()
            }
            CrashMode::KeepSubset => {
                (0..n).map(|_| ctx.rng(Purpose::Disk, |r| r.chance(Ratio::new(1, 2)))).collect()
            }
        };
        let mut torn_at = None;
        if mode == CrashMode::Tear {
            if let Some(i) = keep.iter().position(|k| !k) {
                if matches!(pending[i], Pending::Write { .. }) {
                    torn_at = Some(i);
                }
            }
        }
        for (i, op) in pending.iter().enumerate() {
            if keep[i] {
                apply(&mut file.durable, op);
                outcome.kept += 1;
            } else if Some(i) == torn_at {
                let Pending::Write { offset, data } = op else { unreachable!("only writes tear") };
                tear(ctx, &mut file.durable, *offset, data);
                outcome.torn += 1;
                ctx.count_fault(FaultKind::DiskTornWrite);
            } else {
                outcome.dropped += 1;
                ctx.count_fault(FaultKind::DiskLostWrite);
            }
        }
    }
    // Every surviving incarnation's current image is its durable one (also those with nothing pending, whose
    // in-flight writes were discarded).
    for file in disk.files.values_mut() {
        if file.current != file.durable {
            file.current.clone_from(&file.durable);
        }
    }
    debug_assert!(disk.files.values().all(|f| f.pending.is_empty() && f.current == f.durable));
    ctx.record(Some(node), EventKind::DiskCrash(outcome));
}

/// Writes a random subset of `data`'s sectors (aligned to the file, as a disk would) and cuts one of the
/// written ones at a random byte.
fn tear(ctx: &RunCtx, image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let sector = SECTOR_SIZE as u64;
    let end = offset + data.len() as u64;
    let mut s = offset - offset % sector;
    let mut pieces = Vec::new();
    while s < end {
        let lo = s.max(offset);
        let hi = (s + sector).min(end);
        pieces.push((lo, hi));
        s += sector;
    }
    let cut = ctx.rng(Purpose::Disk, |r| r.below(pieces.len() as u64)) as usize;
    for (i, (lo, hi)) in pieces.into_iter().enumerate() {
        let written = i == cut || ctx.rng(Purpose::Disk, |r| r.chance(Ratio::new(1, 2)));
        if !written {
            continue;
        }
        let hi = if i == cut { lo + ctx.rng(Purpose::Disk, |r| r.below(hi - lo)) } else { hi };
        let a = (lo - offset) as usize;
        let b = (hi - offset) as usize;
        if hi > lo {
            apply_write(image, lo, &data[a..b]);
        }
    }
}

/// Powers a node's disk back on (at restart). Handles of the previous incarnation stay stale.
pub(crate) fn power_on(set: &mut DiskSet, node: NodeId) {
    let disk = set.disk(node);
    disk.powered = true;
    disk.cut_unhandled = false;
}

/// Makes the handles of a crashed incarnation stale. Pending writes stay pending (they are in the OS cache)
/// and operations in flight stay in flight (the device works through its queue).
pub(crate) fn process_crashed(set: &mut DiskSet, node: NodeId) {
    set.disk(node).generation += 1;
}

/// Takes the nodes whose disks lost power at an armed operation since the last call.
pub(crate) fn take_unhandled_cuts(set: &mut DiskSet) -> Vec<NodeId> {
    let mut out = Vec::new();
    for (i, d) in set.disks.iter_mut().enumerate() {
        if std::mem::take(&mut d.cut_unhandled) {
            out.push(NodeId(i as u32));
        }
    }
    out
}

fn here(ctx: &RunCtx) -> NodeId {
    ctx.current_node().expect("disk operations run on a simulated node, not on the controller")
}

/// Where an operation landed: byte offset, length, and the XXH3 of the bytes written (0 if none).
#[derive(Clone, Copy)]
struct Span {
    offset: u64,
    len: u64,
    digest: u64,
}

const NO_SPAN: Span = Span { offset: 0, len: 0, digest: 0 };

fn finish<T>(
    ctx: &RunCtx,
    node: NodeId,
    op: DiskOp,
    path: &Arc<str>,
    span: Span,
    result: Result<T, DiskError>,
) -> Result<T, DiskError> {
    let Span { offset, len, digest } = span;
    ctx.record(
        Some(node),
        EventKind::Disk { op, path: path.clone(), offset, len, digest, ok: result.is_ok() },
    );
    #[cfg(madsim)]
    crate::world::handle_power_cuts(ctx);
    result
}

fn not_found(op: DiskOp, path: &Arc<str>) -> DiskError {
    DiskError { kind: DiskErrorKind::NotFound, op, path: path.clone() }
}

/// Opens `path` on the current node's disk, creating it (empty) if `create` and it is absent. The create is
/// durable once the device reaches it (see [`Durability`]).
///
/// # Panics
/// Outside a run, or on the controller (which has no disk).
pub fn open(path: &str, create: bool) -> Result<FileHandle, DiskError> {
    let ctx = context::current();
    let node = here(&ctx);
    let path: Arc<str> = Arc::from(path);
    let mut set = ctx.disks.borrow_mut();
    let r = prologue(&ctx, &mut set, node, None, DiskOp::Open, OpClass::Meta, &path).and_then(|due| {
        let disk = set.disk(node);
        if !disk.names.contains_key(&path) {
            if !create {
                return Err(not_found(DiskOp::Open, &path));
            }
            let id = disk.next_file;
            disk.next_file += 1;
            disk.files.insert(id, FileData::default());
            disk.names.insert(path.clone(), id);
            disk.submit(due, Effect::Create { path: path.clone(), file: id });
        }
        Ok(FileHandle { node, path: path.clone(), generation: disk.generation })
    });
    drop(set);
    finish(&ctx, node, DiskOp::Open, &path, NO_SPAN, r)
}

/// Reads into `buf` from `offset` of the current image. Returns how many bytes were read: fewer than
/// `buf.len()` at the end of the file.
pub fn read_at(h: &FileHandle, offset: u64, buf: &mut [u8]) -> Result<usize, DiskError> {
    let ctx = context::current();
    let mut set = ctx.disks.borrow_mut();
    let r = prologue(&ctx, &mut set, h.node, Some(h.generation), DiskOp::Read, OpClass::Read, &h.path)
        .and_then(|_| {
            let file = set.disk(h.node).file(&h.path).ok_or_else(|| not_found(DiskOp::Read, &h.path))?;
            let len = file.current.len() as u64;
            if offset >= len {
                return Ok(0);
            }
            let start = offset as usize;
            let n = buf.len().min(file.current.len() - start);
            buf[..n].copy_from_slice(&file.current[start..start + n]);
            Ok(n)
        });
    drop(set);
    finish(&ctx, h.node, DiskOp::Read, &h.path, Span { offset, len: buf.len() as u64, digest: 0 }, r)
}

/// Writes `data` at `offset`. Visible to reads at once; durable only after a [`sync`] (see [`Durability`]).
pub fn write_at(h: &FileHandle, offset: u64, data: &[u8]) -> Result<(), DiskError> {
    let ctx = context::current();
    let mut set = ctx.disks.borrow_mut();
    let capacity = set.config.capacity;
    let r = prologue(&ctx, &mut set, h.node, Some(h.generation), DiskOp::Write, OpClass::Write, &h.path)
        .and_then(|due| {
            let disk = set.disk(h.node);
            let used = if capacity.is_some() { disk.used_bytes() } else { 0 };
            let (id, file) = disk.file_mut(&h.path).ok_or_else(|| not_found(DiskOp::Write, &h.path))?;
            let end = offset + data.len() as u64;
            let growth = end.saturating_sub(file.current.len() as u64);
            if let Some(cap) = capacity {
                if used + growth > cap {
                    ctx.count_fault(FaultKind::DiskFull);
                    return Err(DiskError {
                        kind: DiskErrorKind::Full,
                        op: DiskOp::Write,
                        path: h.path.clone(),
                    });
                }
            }
            apply_write(&mut file.current, offset, data);
            // The one copy of the data: it moves from here to the pending log, in flight or not.
            disk.submit(
                due,
                Effect::Pending { file: id, op: Pending::Write { offset, data: data.to_vec() } },
            );
            Ok(())
        });
    drop(set);
    finish(
        &ctx,
        h.node,
        DiskOp::Write,
        &h.path,
        Span { offset, len: data.len() as u64, digest: xxh3_64(data) },
        r,
    )
}

/// Sets the file's size. Visible at once; durable only after a [`sync`] (see [`Durability`]).
pub fn truncate(h: &FileHandle, size: u64) -> Result<(), DiskError> {
    let ctx = context::current();
    let mut set = ctx.disks.borrow_mut();
    let r = prologue(&ctx, &mut set, h.node, Some(h.generation), DiskOp::Truncate, OpClass::Write, &h.path)
        .and_then(|due| {
            let disk = set.disk(h.node);
            let (id, file) = disk.file_mut(&h.path).ok_or_else(|| not_found(DiskOp::Truncate, &h.path))?;
            let op = Pending::Truncate { size };
            apply(&mut file.current, &op);
            disk.submit(due, Effect::Pending { file: id, op });
            Ok(())
        });
    drop(set);
    finish(&ctx, h.node, DiskOp::Truncate, &h.path, Span { offset: 0, len: size, digest: 0 }, r)
}

/// Makes every write and truncate issued on the file before it durable: at once under
/// [`Durability::AtCall`], when the device reaches its end under [`Durability::AfterLatency`].
pub fn sync(h: &FileHandle) -> Result<(), DiskError> {
    let ctx = context::current();
    let mut set = ctx.disks.borrow_mut();
    let r = prologue(&ctx, &mut set, h.node, Some(h.generation), DiskOp::Sync, OpClass::Sync, &h.path)
        .and_then(|due| {
            let disk = set.disk(h.node);
            let (id, _) = disk.file_mut(&h.path).ok_or_else(|| not_found(DiskOp::Sync, &h.path))?;
            disk.submit(due, Effect::Sync { file: id });
            Ok(())
        });
    drop(set);
    finish(&ctx, h.node, DiskOp::Sync, &h.path, NO_SPAN, r)
}

/// The size of the file's current image. Not an operation: it neither counts nor fails at random.
pub fn file_size(h: &FileHandle) -> Result<u64, DiskError> {
    let ctx = context::current();
    let mut set = ctx.disks.borrow_mut();
    let disk = set.disk(h.node);
    if h.generation != disk.generation {
        return Err(DiskError { kind: DiskErrorKind::Stale, op: DiskOp::Read, path: h.path.clone() });
    }
    disk.file(&h.path).map(|f| f.current.len() as u64).ok_or_else(|| not_found(DiskOp::Read, &h.path))
}

/// True if `h` belongs to its node's current incarnation (it has not gone stale by a crash or power cut).
/// Not an operation.
pub fn is_current(h: &FileHandle) -> bool {
    let ctx = context::current();
    let mut set = ctx.disks.borrow_mut();
    set.disk(h.node).generation == h.generation
}

/// Removes a file. Removing an absent file is `NotFound`. The delete is durable once the device reaches it
/// (see [`Durability`]).
pub fn delete(path: &str) -> Result<(), DiskError> {
    let ctx = context::current();
    let node = here(&ctx);
    let path: Arc<str> = Arc::from(path);
    let mut set = ctx.disks.borrow_mut();
    let r = prologue(&ctx, &mut set, node, None, DiskOp::Delete, OpClass::Meta, &path).and_then(|due| {
        let disk = set.disk(node);
        let id = disk.names.remove(&path).ok_or_else(|| not_found(DiskOp::Delete, &path))?;
        disk.submit(due, Effect::Delete { path: path.clone(), file: id });
        Ok(())
    });
    drop(set);
    finish(&ctx, node, DiskOp::Delete, &path, NO_SPAN, r)
}

/// True if `path` exists on the current node's disk (in the current namespace). Not an operation.
pub fn exists(path: &str) -> bool {
    let ctx = context::current();
    let node = here(&ctx);
    let mut set = ctx.disks.borrow_mut();
    set.disk(node).names.contains_key(path)
}

/// The current node's I/O debt: how long until its disk has finished every operation issued so far. Under
/// [`Durability::AtCall`] it is the latency accumulated since the last call, which this takes (leaving zero);
/// under [`Durability::AfterLatency`] it shrinks as simulated time passes, and taking it changes nothing.
pub fn take_io_debt() -> Duration {
    let ctx = context::current();
    let node = here(&ctx);
    let mut set = ctx.disks.borrow_mut();
    match set.config.durability {
        Durability::AtCall => std::mem::take(&mut set.disk(node).io_debt),
        Durability::AfterLatency => {
            let now = ctx.now();
            set.disk_now(&ctx, node).busy_until.saturating_sub(now)
        }
    }
}

/// Sleeps off the current node's I/O debt on the simulated clock: under [`Durability::AfterLatency`], until
/// the disk has finished (and made durable, as far as they go) every operation issued before the call.
///
/// Call it after a synchronous burst of disk work (a SQLite transaction), before acting on its result. It
/// waits for every operation issued on the node before it, whoever issued them, and (as every madsim sleep)
/// at least a millisecond when there is any debt.
/// Cancel safety: cancelling it only shortens the wait (under [`Durability::AtCall`] the debt is already
/// taken; under [`Durability::AfterLatency`] the next settle waits for the rest).
#[cfg(madsim)]
pub async fn settle() {
    let debt = take_io_debt();
    if !debt.is_zero() {
        madsim::time::sleep(debt).await;
    }
}

/// How many operations `node`'s disk has performed over its life.
pub fn op_count(node: NodeId) -> u64 {
    let ctx = context::current();
    let mut set = ctx.disks.borrow_mut();
    set.disk(node).ops
}

/// The durable bytes of `path` on `node`'s disk (what would survive a power cut now, before its crash mode
/// resolves the pending writes), if the path exists durably.
pub fn durable_image(node: NodeId, path: &str) -> Option<Vec<u8>> {
    let ctx = context::current();
    let mut set = ctx.disks.borrow_mut();
    let disk = set.disk_now(&ctx, node);
    disk.durable_names.get(path).map(|id| disk.files[id].durable.clone())
}

/// Every path on `node`'s disk (in the current namespace), in order.
pub fn list(node: NodeId) -> Vec<String> {
    let ctx = context::current();
    let mut set = ctx.disks.borrow_mut();
    set.disk(node).names.keys().map(|k| k.to_string()).collect()
}

/// How many operations on `node`'s disk are in flight now: issued, not yet ended, so a power cut now
/// would discard them. Always 0 under [`Durability::AtCall`].
pub fn in_flight(node: NodeId) -> usize {
    let ctx = context::current();
    let mut set = ctx.disks.borrow_mut();
    set.disk_now(&ctx, node).in_flight.len()
}

/// How many writes and truncates power cuts have caught in flight (and discarded) on `node`'s disk, over its
/// life. Each is also counted as a [`FaultKind::DiskLostWrite`].
pub fn lost_in_flight(node: NodeId) -> u64 {
    let ctx = context::current();
    let mut set = ctx.disks.borrow_mut();
    set.disk(node).lost_in_flight
}

/// Arms a fault at the `op`-th operation (counted from 1) of `node`'s disk.
pub fn arm_fault(node: NodeId, op: u64, kind: DiskFaultKind) {
    let ctx = context::current();
    ctx.disks.borrow_mut().arm(node, op, kind);
}

impl DiskSet {
    #[cfg(madsim)]
    /// Ends disk faults for the liveness phase: armed faults are disarmed and error rates drop to zero.
    /// Latency, durability and crash modes stay: they are how the disk works, not faults.
    pub(crate) fn quiesce(&mut self) {
        self.config.io_error_rate = Ratio::NEVER;
        self.config.full_rate = Ratio::NEVER;
        for d in &mut self.disks {
            d.armed.clear();
        }
    }

    pub(crate) fn is_powered(&self, node: NodeId) -> bool {
        self.disks[node.0 as usize].powered
    }
}
