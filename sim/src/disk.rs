//! `SimDisk`: a crash-consistent simulated disk per node, which survives node restarts.
//!
//! # Fault model
//! Each file has a *durable* image (what is on the platter) and a *current* image (what reads see). A write or
//! truncate changes the current image at once and is appended to the file's log of *pending* operations. `sync`
//! folds the file's pending log into its durable image. Creating and deleting a file are metadata operations,
//! durable at once (a journaling file system with synchronous directory updates).
//!
//! - A **process crash** loses nothing on disk: pending writes sit in the OS cache and stay pending. Handles of
//!   the dead incarnation go stale and every later operation on them fails.
//! - A **power cut** resolves every file's pending log by one [`CrashMode`] drawn from the configured set:
//!   lose it all, keep a prefix, keep a random subset in order, or keep a prefix and tear the next write
//!   (some of its sectors written, one of them cut at a byte). The current image becomes the durable image.
//! - **EIO** can hit any read, write, truncate or sync, at a configured rate or at the N-th operation.
//!   **ENOSPC** hits a write that would grow the disk past its capacity, or at a rate, or at the N-th
//!   operation. A failed operation changes nothing.
//! - A **power cut at the N-th operation** fails that operation and every later one until the node restarts,
//!   and resolves the pending writes as above at that instant.
//! - Every operation takes a latency drawn on the simulated clock. SQLite calls the disk synchronously, so the
//!   latency accumulates as the node's I/O debt, which [`settle`] sleeps off before the caller acts on the
//!   result.
//!
//! Every injected fault is counted ([`crate::FaultKind`]) and every operation is a trace event.

use std::collections::BTreeMap;
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
}

impl Default for DiskConfig {
    /// An SSD-like disk: no injected errors, every crash mode, tens of microseconds per operation and a
    /// millisecond per sync.
    fn default() -> Self {
        DiskConfig {
            capacity: None,
            crash_modes: CrashMode::ALL.to_vec(),
            io_error_rate: Ratio::NEVER,
            full_rate: Ratio::NEVER,
            read_latency: LatencyRange::new(Duration::from_micros(20), Duration::from_micros(100)),
            write_latency: LatencyRange::new(Duration::from_micros(20), Duration::from_micros(100)),
            sync_latency: LatencyRange::new(Duration::from_micros(500), Duration::from_millis(2)),
        }
    }
}

impl DiskConfig {
    /// A disk with no latency and no injected errors (crash modes as configured).
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

#[derive(Debug)]
struct Disk {
    files: BTreeMap<Arc<str>, FileData>,
    /// Operations so far, over the disk's whole life.
    ops: u64,
    /// False from a power cut until the node restarts.
    powered: bool,
    /// Bumped at every crash or power cut; handles from an older generation are stale.
    generation: u64,
    /// Faults armed at operation indices.
    armed: BTreeMap<u64, DiskFaultKind>,
    /// Simulated I/O time not yet slept off.
    io_debt: Duration,
    /// A power cut fired by an armed fault that the world has not acted on yet.
    cut_unhandled: bool,
}

impl Disk {
    fn new() -> Disk {
        Disk {
            files: BTreeMap::new(),
            ops: 0,
            powered: true,
            generation: 0,
            armed: BTreeMap::new(),
            io_debt: Duration::ZERO,
            cut_unhandled: false,
        }
    }

    fn used_bytes(&self) -> u64 {
        self.files.values().map(|f| f.current.len() as u64).sum()
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
    /// Open, delete: count and trace, never fail at random.
    Meta,
    Read,
    Write,
    Sync,
}

/// Runs the common prologue of an operation: staleness, power, the armed fault at this index, random faults
/// and latency. Returns the error the operation must fail with, if any.
fn prologue(
    ctx: &RunCtx,
    set: &mut DiskSet,
    node: NodeId,
    generation: Option<u64>,
    op: DiskOp,
    class: OpClass,
    path: &Arc<str>,
) -> Result<(), DiskError> {
    let err = |kind| DiskError { kind, op, path: path.clone() };
    let DiskSet { config, disks } = set;
    let n = disks.len();
    let disk =
        disks.get_mut(node.0 as usize).unwrap_or_else(|| panic!("disk of {node} does not exist ({n} disks)"));
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
    if let Some(l) = latency {
        if l.max > Duration::ZERO {
            disk.io_debt += ctx.rng(Purpose::Disk, |r| r.duration_between(l.min, l.max));
        }
    }
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
                power_off(ctx, set, node);
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
    Ok(())
}

/// Cuts the power of `node`'s disk: resolves every file's pending log by a crash mode and stops the disk
/// until [`power_on`].
pub(crate) fn power_off(ctx: &RunCtx, set: &mut DiskSet, node: NodeId) {
    let modes = set.config.crash_modes.clone();
    let disk = set.disk(node);
    disk.powered = false;
    disk.generation += 1;
    let mut outcome = CrashOutcome { kept: 0, dropped: 0, torn: 0 };
    for file in disk.files.values_mut() {
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
        file.current = file.durable.clone();
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

/// Makes the handles of a crashed incarnation stale. Pending writes stay pending: they are in the OS cache.
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

/// Opens `path` on the current node's disk, creating it (empty, durably) if `create` and it is absent.
///
/// # Panics
/// Outside a run, or on the controller (which has no disk).
pub fn open(path: &str, create: bool) -> Result<FileHandle, DiskError> {
    let ctx = context::current();
    let node = here(&ctx);
    let path: Arc<str> = Arc::from(path);
    let mut set = ctx.disks.borrow_mut();
    let r = prologue(&ctx, &mut set, node, None, DiskOp::Open, OpClass::Meta, &path).and_then(|()| {
        let disk = set.disk(node);
        if !disk.files.contains_key(&path) {
            if !create {
                return Err(DiskError {
                    kind: DiskErrorKind::NotFound,
                    op: DiskOp::Open,
                    path: path.clone(),
                });
            }
            disk.files.insert(path.clone(), FileData::default());
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
        .and_then(|()| {
            let file = set.disk(h.node).files.get(&h.path).ok_or_else(|| DiskError {
                kind: DiskErrorKind::NotFound,
                op: DiskOp::Read,
                path: h.path.clone(),
            })?;
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

/// Writes `data` at `offset`. Visible to reads at once; durable only after [`sync`].
pub fn write_at(h: &FileHandle, offset: u64, data: &[u8]) -> Result<(), DiskError> {
    let ctx = context::current();
    let mut set = ctx.disks.borrow_mut();
    let capacity = set.config.capacity;
    let r = prologue(&ctx, &mut set, h.node, Some(h.generation), DiskOp::Write, OpClass::Write, &h.path)
        .and_then(|()| {
            let disk = set.disk(h.node);
            let used = if capacity.is_some() { disk.used_bytes() } else { 0 };
            let file = disk.files.get_mut(&h.path).ok_or_else(|| DiskError {
                kind: DiskErrorKind::NotFound,
                op: DiskOp::Write,
                path: h.path.clone(),
            })?;
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
            file.pending.push(Pending::Write { offset, data: data.to_vec() });
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

/// Sets the file's size. Visible at once; durable only after [`sync`].
pub fn truncate(h: &FileHandle, size: u64) -> Result<(), DiskError> {
    let ctx = context::current();
    let mut set = ctx.disks.borrow_mut();
    let r = prologue(&ctx, &mut set, h.node, Some(h.generation), DiskOp::Truncate, OpClass::Write, &h.path)
        .and_then(|()| {
            let file = set.disk(h.node).files.get_mut(&h.path).ok_or_else(|| DiskError {
                kind: DiskErrorKind::NotFound,
                op: DiskOp::Truncate,
                path: h.path.clone(),
            })?;
            let op = Pending::Truncate { size };
            apply(&mut file.current, &op);
            file.pending.push(op);
            Ok(())
        });
    drop(set);
    finish(&ctx, h.node, DiskOp::Truncate, &h.path, Span { offset: 0, len: size, digest: 0 }, r)
}

/// Makes every pending write and truncate of the file durable.
pub fn sync(h: &FileHandle) -> Result<(), DiskError> {
    let ctx = context::current();
    let mut set = ctx.disks.borrow_mut();
    let r = prologue(&ctx, &mut set, h.node, Some(h.generation), DiskOp::Sync, OpClass::Sync, &h.path)
        .and_then(|()| {
            let file = set.disk(h.node).files.get_mut(&h.path).ok_or_else(|| DiskError {
                kind: DiskErrorKind::NotFound,
                op: DiskOp::Sync,
                path: h.path.clone(),
            })?;
            for op in std::mem::take(&mut file.pending) {
                apply(&mut file.durable, &op);
            }
            debug_assert_eq!(file.durable, file.current, "a synced file's images agree");
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
    disk.files.get(&h.path).map(|f| f.current.len() as u64).ok_or_else(|| DiskError {
        kind: DiskErrorKind::NotFound,
        op: DiskOp::Read,
        path: h.path.clone(),
    })
}

/// True if `h` belongs to its node's current incarnation (it has not gone stale by a crash or power cut).
/// Not an operation.
pub fn is_current(h: &FileHandle) -> bool {
    let ctx = context::current();
    let mut set = ctx.disks.borrow_mut();
    set.disk(h.node).generation == h.generation
}

/// Removes a file, durably. Removing an absent file is `NotFound`.
pub fn delete(path: &str) -> Result<(), DiskError> {
    let ctx = context::current();
    let node = here(&ctx);
    let path: Arc<str> = Arc::from(path);
    let mut set = ctx.disks.borrow_mut();
    let r = prologue(&ctx, &mut set, node, None, DiskOp::Delete, OpClass::Meta, &path).and_then(|()| {
        set.disk(node).files.remove(&path).map(|_| ()).ok_or_else(|| DiskError {
            kind: DiskErrorKind::NotFound,
            op: DiskOp::Delete,
            path: path.clone(),
        })
    });
    drop(set);
    finish(&ctx, node, DiskOp::Delete, &path, NO_SPAN, r)
}

/// True if `path` exists on the current node's disk. Not an operation.
pub fn exists(path: &str) -> bool {
    let ctx = context::current();
    let node = here(&ctx);
    let mut set = ctx.disks.borrow_mut();
    set.disk(node).files.contains_key(path)
}

/// Takes the current node's accumulated I/O latency, leaving it at zero.
pub fn take_io_debt() -> Duration {
    let ctx = context::current();
    let node = here(&ctx);
    let mut set = ctx.disks.borrow_mut();
    std::mem::take(&mut set.disk(node).io_debt)
}

/// Sleeps off the current node's accumulated I/O latency on the simulated clock.
///
/// Call it after a synchronous burst of disk work (a SQLite transaction), before acting on its result.
/// Cancel safety: cancelling it only shortens the wait; the debt is already taken.
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

/// The durable bytes of `path` on `node`'s disk (what would survive a power cut now), if it exists.
pub fn durable_image(node: NodeId, path: &str) -> Option<Vec<u8>> {
    let ctx = context::current();
    let mut set = ctx.disks.borrow_mut();
    set.disk(node).files.get(path).map(|f| f.durable.clone())
}

/// Every path on `node`'s disk, in order.
pub fn list(node: NodeId) -> Vec<String> {
    let ctx = context::current();
    let mut set = ctx.disks.borrow_mut();
    set.disk(node).files.keys().map(|k| k.to_string()).collect()
}

/// Arms a fault at the `op`-th operation (counted from 1) of `node`'s disk.
pub fn arm_fault(node: NodeId, op: u64, kind: DiskFaultKind) {
    let ctx = context::current();
    ctx.disks.borrow_mut().arm(node, op, kind);
}

impl DiskSet {
    #[cfg(madsim)]
    /// Ends disk faults for the liveness phase: armed faults are disarmed and error rates drop to zero.
    /// Latency and crash modes stay: they are how the disk works, not faults.
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
