//! The canonical event trace of a run and its rolling hash.
//!
//! Every event of the world (message send, deliver and drop, each fault, disk operations, node lifecycle) is
//! recorded here in the order it happens, stamped with the simulated time and the node it happened on. The trace
//! hash is a streaming XXH3 over a fixed little-endian encoding of every event, so two runs have the same hash
//! exactly when they recorded the same events. Events are also emitted as `tracing` events (target
//! `dosim::sim`), which `tracing-subscriber` shows when `RUST_LOG` asks for them.
//!
//! The hash is stable for a given build of a test binary: every run and every process of it agrees. It is not
//! promised across compiler versions. It identifies behaviour, not the seed: the seed is not an event, so two
//! seeds whose runs did exactly the same things (a world with nothing random in it) share a hash.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use xxhash_rust::xxh3::Xxh3;

use crate::fault::FaultKind;

/// A node of the simulation, by its index in the order the nodes were declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// The first address of the simulated nodes' subnet, 10.0.0.0/8: node `i` is at `10.0.0.0 + i + 1`.
const SUBNET_BASE: u32 = 0x0A00_0000;

/// How many nodes the subnet has addresses for: 10.0.0.1 up to 10.255.255.254.
pub const MAX_NODES: u32 = (1 << 24) - 2;

/// The IP address of `node` on madsim's network (`madsim::net`), which every run gives its nodes.
///
/// Node `i` is at `10.0.0.0 + i + 1` counted as one 32-bit number: `n0` is 10.0.0.1, `n253` is 10.0.0.254,
/// `n254` is 10.0.0.255 and `n255` is 10.0.1.0, up to [`MAX_NODES`] nodes. The address is a pure function of
/// the node, so it is the same in every run and survives restarts. Only madsim's network uses it; dosim's
/// own fabric (the `net` module) addresses nodes by [`NodeId`].
///
/// # Panics
/// If `node` is [`MAX_NODES`] or beyond.
pub fn node_ip(node: NodeId) -> IpAddr {
    assert!(node.0 < MAX_NODES, "{node} has no address: 10.0.0.0/8 holds {MAX_NODES} nodes");
    IpAddr::V4(Ipv4Addr::from(SUBNET_BASE + node.0 + 1))
}

/// The node at `ip` on madsim's network, if `ip` is one of [`node_ip`]'s addresses.
///
/// Whether a run has that many nodes is the caller's to check.
pub fn node_at_ip(ip: IpAddr) -> Option<NodeId> {
    let IpAddr::V4(v4) = ip else { return None };
    let n = u32::from(v4).checked_sub(SUBNET_BASE + 1)?;
    (n < MAX_NODES).then_some(NodeId(n))
}

/// A network address: a node and a port on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Addr {
    /// The node.
    pub node: NodeId,
    /// The port, chosen by whoever binds it.
    pub port: u16,
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.node, self.port)
    }
}

/// Why a message was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Random loss drawn from the network's loss rate.
    Loss,
    /// A partition blocks the link from sender to receiver.
    Partition,
    /// The sending node was down when the message was sent.
    SenderDown,
    /// The receiving node was down (crashed or powered off) when the message arrived.
    ReceiverDown,
    /// Nothing listens on the destination port (never bound, closed, or bound by a dead incarnation).
    NoListener,
}

/// Node lifecycle transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeAction {
    /// First boot.
    Start,
    /// Process crash: memory is lost; the disk keeps everything written, synced or not.
    Crash,
    /// Power cut: memory is lost and so are the disk's unsynced writes (possibly torn).
    PowerCut,
    /// Boot after a crash or power cut.
    Restart,
    /// Execution stopped; messages queue up.
    Pause,
    /// Execution resumes.
    Resume,
}

/// Disk operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DiskOp {
    /// Open (and maybe create) a file.
    Open,
    /// Read a range.
    Read,
    /// Write a range (pending until synced).
    Write,
    /// Set the file size (pending until synced).
    Truncate,
    /// Make every pending write of the file durable.
    Sync,
    /// Remove a file (durable without a sync).
    Delete,
}

/// What happened to a disk's pending writes at a power cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CrashOutcome {
    /// Pending operations that reached the platter whole.
    pub kept: u32,
    /// Pending operations that were lost.
    pub dropped: u32,
    /// Pending writes that reached it in part.
    pub torn: u32,
    /// Operations in flight (issued, their latency not elapsed) that the cut discarded.
    pub unfinished: u32,
}

/// One thing that happened in the world.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A node changed state.
    Node(NodeAction),
    /// A message was handed to the network.
    Send {
        /// Message id, unique within the run.
        msg: u64,
        /// Sender.
        from: Addr,
        /// Destination.
        to: Addr,
        /// Payload bytes.
        len: u32,
        /// XXH3 of the payload.
        digest: u64,
    },
    /// The network made a second copy of a message (id `copy`).
    Duplicate {
        /// The original.
        msg: u64,
        /// The copy's id.
        copy: u64,
    },
    /// A message arrived at its destination's queue.
    Deliver {
        /// Message id.
        msg: u64,
        /// Destination.
        to: Addr,
    },
    /// A message was lost.
    Drop {
        /// Message id.
        msg: u64,
        /// Why.
        reason: DropReason,
    },
    /// A message is held by a clog until it is unclogged.
    Hold {
        /// Message id.
        msg: u64,
    },
    /// A fault was injected (or a fault ended: heal, unclog, resume).
    Fault {
        /// Which kind.
        kind: FaultKind,
        /// Its parameters, in canonical text (e.g. `{n0} -> {n1,n2}`).
        detail: String,
    },
    /// A disk operation completed (successfully or not: see `ok`).
    Disk {
        /// Which operation.
        op: DiskOp,
        /// The file's path on its node's disk.
        path: Arc<str>,
        /// Byte offset (0 where it does not apply).
        offset: u64,
        /// Byte length, or the new size for a truncate.
        len: u64,
        /// XXH3 of the bytes written or read (0 where it does not apply).
        digest: u64,
        /// False if the operation failed.
        ok: bool,
    },
    /// A power cut resolved a disk's pending writes.
    DiskCrash(CrashOutcome),
    /// A named value the scenario or workload recorded.
    Note {
        /// What it is.
        key: String,
        /// Its value, in canonical text.
        value: String,
    },
    /// A `tracing` event of the code under test (target `dosim::…`, other than the sim's own).
    Log {
        /// The event's target.
        target: String,
        /// Its message and fields, in canonical text.
        text: String,
    },
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventKind::Node(a) => write!(f, "node {a:?}"),
            EventKind::Send { msg, from, to, len, digest } => {
                write!(f, "send #{msg} {from} -> {to} len={len} digest={digest:016x}")
            }
            EventKind::Duplicate { msg, copy } => write!(f, "duplicate #{msg} as #{copy}"),
            EventKind::Deliver { msg, to } => write!(f, "deliver #{msg} at {to}"),
            EventKind::Drop { msg, reason } => write!(f, "drop #{msg} ({reason:?})"),
            EventKind::Hold { msg } => write!(f, "hold #{msg} (clogged)"),
            EventKind::Fault { kind, detail } => write!(f, "fault {kind} {detail}"),
            EventKind::Disk { op, path, offset, len, digest, ok } => write!(
                f,
                "disk {op:?} {path} @{offset} len={len} digest={digest:016x}{}",
                if *ok { "" } else { " FAILED" }
            ),
            EventKind::DiskCrash(o) => {
                write!(
                    f,
                    "disk power cut: kept={} dropped={} torn={} unfinished={}",
                    o.kept, o.dropped, o.torn, o.unfinished
                )
            }
            EventKind::Note { key, value } => write!(f, "note {key} = {value}"),
            EventKind::Log { target, text } => write!(f, "log {target}: {text}"),
        }
    }
}

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    /// Position in the trace, from 0.
    pub seq: u64,
    /// Simulated time since the start of the run.
    pub at: Duration,
    /// The node whose task caused the event, if any (the controller and the network have none).
    pub node: Option<NodeId>,
    /// What happened.
    pub kind: EventKind,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.at.as_nanos();
        write!(f, "#{:<6} {:>6}.{:06}ms ", self.seq, t / 1_000_000, t % 1_000_000)?;
        let node = self.node.map(|n| n.to_string()).unwrap_or_else(|| "-".to_string());
        write!(f, "{node:<4} ")?;
        write!(f, "{}", self.kind)
    }
}

/// Whether a run keeps its whole event list or only the hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceMode {
    /// Keep every event (needed by the determinism check and by failure reports).
    Full,
    /// Keep only the rolling hash, the count and a short tail (for long campaigns).
    HashOnly,
}

/// How many of the last events a [`TraceMode::HashOnly`] recorder keeps at least (at most twice as many) for
/// failure reports.
pub const TRACE_TAIL_MAX: usize = 64;

/// Appends the fixed little-endian encoding of trace values, which the trace hash is computed over. Every
/// variable-length field is length-prefixed, so distinct events never encode alike.
struct Enc<'a>(&'a mut Vec<u8>);

impl Enc<'_> {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, v: &str) -> &mut Self {
        self.u64(v.len() as u64);
        self.0.extend_from_slice(v.as_bytes());
        self
    }
    fn addr(&mut self, a: Addr) -> &mut Self {
        self.u32(a.node.0).u32(u32::from(a.port))
    }
}

impl Event {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut e = Enc(out);
        e.u64(self.seq).u64(u64::try_from(self.at.as_nanos()).unwrap_or(u64::MAX));
        match self.node {
            Some(n) => e.u8(1).u32(n.0),
            None => e.u8(0),
        };
        match &self.kind {
            EventKind::Node(a) => e.u8(1).u8(*a as u8),
            EventKind::Send { msg, from, to, len, digest } => {
                e.u8(2).u64(*msg).addr(*from).addr(*to).u32(*len).u64(*digest)
            }
            EventKind::Duplicate { msg, copy } => e.u8(3).u64(*msg).u64(*copy),
            EventKind::Deliver { msg, to } => e.u8(4).u64(*msg).addr(*to),
            EventKind::Drop { msg, reason } => e.u8(5).u64(*msg).u8(*reason as u8),
            EventKind::Hold { msg } => e.u8(6).u64(*msg),
            EventKind::Fault { kind, detail } => e.u8(7).str(kind.name()).str(detail),
            EventKind::Disk { op, path, offset, len, digest, ok } => {
                e.u8(8).u8(*op as u8).str(path).u64(*offset).u64(*len).u64(*digest).u8(u8::from(*ok))
            }
            EventKind::DiskCrash(o) => e.u8(9).u32(o.kept).u32(o.dropped).u32(o.torn).u32(o.unfinished),
            EventKind::Note { key, value } => e.u8(10).str(key).str(value),
            EventKind::Log { target, text } => e.u8(11).str(target).str(text),
        };
    }
}

/// The trace of one run: the event list (or its tail) and the rolling hash.
#[derive(Clone)]
pub struct Trace {
    mode: TraceMode,
    events: Vec<Event>,
    count: u64,
    /// Boxed: XXH3's streaming state is large, and traces travel inside results.
    hasher: Box<Xxh3>,
    /// Reused buffer for one event's encoding.
    scratch: Vec<u8>,
}

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trace")
            .field("count", &self.count)
            .field("hash", &format_args!("{:016x}", self.hash()))
            .finish()
    }
}

impl Trace {
    /// An empty trace.
    pub fn new(mode: TraceMode) -> Trace {
        Trace { mode, events: Vec::new(), count: 0, hasher: Box::new(Xxh3::new()), scratch: Vec::new() }
    }

    /// Appends an event and folds it into the hash. Returns its sequence number.
    pub fn record(&mut self, at: Duration, node: Option<NodeId>, kind: EventKind) -> u64 {
        let seq = self.count;
        let event = Event { seq, at, node, kind };
        self.scratch.clear();
        event.encode(&mut self.scratch);
        self.hasher.update(&self.scratch);
        self.count += 1;
        if self.mode == TraceMode::HashOnly && self.events.len() >= 2 * TRACE_TAIL_MAX {
            // Amortised: drop the older half at once rather than one event per record.
            self.events.drain(..TRACE_TAIL_MAX);
        }
        self.events.push(event);
        seq
    }

    /// The rolling hash of every event recorded so far.
    pub fn hash(&self) -> u64 {
        self.hasher.digest()
    }

    /// How many events were recorded.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True if nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The kept events: all of them in [`TraceMode::Full`], the last [`TRACE_TAIL_MAX`] to twice that otherwise.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// True if every event is kept.
    pub fn is_full(&self) -> bool {
        self.mode == TraceMode::Full
    }

    /// The last `n` kept events.
    pub fn tail(&self, n: usize) -> &[Event] {
        &self.events[self.events.len().saturating_sub(n)..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(k: &str, v: &str) -> EventKind {
        EventKind::Note { key: k.into(), value: v.into() }
    }

    #[test]
    fn equal_event_lists_hash_equal_and_differences_show() {
        let mut a = Trace::new(TraceMode::Full);
        let mut b = Trace::new(TraceMode::Full);
        for t in [&mut a, &mut b] {
            t.record(Duration::from_millis(1), Some(NodeId(0)), note("x", "1"));
            t.record(Duration::from_millis(2), None, EventKind::Node(NodeAction::Crash));
        }
        assert_eq!(a.hash(), b.hash());
        b.record(Duration::from_millis(3), None, note("x", "2"));
        a.record(Duration::from_millis(3), None, note("x", "3"));
        assert_ne!(a.hash(), b.hash());
        // The same event at another time is another event.
        let mut c = Trace::new(TraceMode::Full);
        c.record(Duration::from_millis(9), Some(NodeId(0)), note("x", "1"));
        let mut d = Trace::new(TraceMode::Full);
        d.record(Duration::from_millis(1), Some(NodeId(0)), note("x", "1"));
        assert_ne!(c.hash(), d.hash());
    }

    #[test]
    fn hash_only_keeps_a_bounded_tail_and_the_same_hash() {
        let mut full = Trace::new(TraceMode::Full);
        let mut lean = Trace::new(TraceMode::HashOnly);
        for i in 0..(TRACE_TAIL_MAX as u64 * 3) {
            for t in [&mut full, &mut lean] {
                t.record(Duration::from_nanos(i), None, note("i", &i.to_string()));
            }
        }
        assert_eq!(full.hash(), lean.hash());
        assert!((TRACE_TAIL_MAX..=2 * TRACE_TAIL_MAX).contains(&lean.events().len()));
        assert_eq!(lean.len(), full.len());
        assert_eq!(lean.events().last(), full.events().last());
    }

    #[test]
    fn node_ips_are_distinct_in_the_subnet_and_map_back() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(node_ip(NodeId(0)), ip("10.0.0.1"));
        assert_eq!(node_ip(NodeId(253)), ip("10.0.0.254"));
        assert_eq!(node_ip(NodeId(255)), ip("10.0.1.0"));
        assert_eq!(node_ip(NodeId(MAX_NODES - 1)), ip("10.255.255.254"));
        for n in [0, 1, 254, 255, 256, 70_000, MAX_NODES - 1] {
            assert_eq!(node_at_ip(node_ip(NodeId(n))), Some(NodeId(n)));
        }
        for other in ["10.0.0.0", "10.255.255.255", "11.0.0.1", "127.0.0.1", "::1"] {
            assert_eq!(node_at_ip(ip(other)), None, "{other} is no node's address");
        }
    }

    #[test]
    #[should_panic(expected = "has no address")]
    fn a_node_beyond_the_subnet_has_no_ip() {
        node_ip(NodeId(MAX_NODES));
    }

    #[test]
    fn events_display_readably() {
        let e = Event {
            seq: 3,
            at: Duration::from_micros(1500),
            node: Some(NodeId(2)),
            kind: EventKind::Drop { msg: 9, reason: DropReason::Partition },
        };
        assert_eq!(e.to_string(), "#3           1.500000ms n2   drop #9 (Partition)");
    }
}
