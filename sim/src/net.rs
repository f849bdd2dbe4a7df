//! Datagrams between simulated nodes: latency, loss, duplication, reordering, partitions and clogs.
//!
//! madsim supplies the executor, the clock and the nodes; the message fabric is ours because every send,
//! delivery and drop must be a trace event, and because madsim's network neither duplicates messages nor
//! partitions sets of nodes one way.
//!
//! # Fault model
//! - Each message takes a latency drawn from [`NetConfig::latency`]; with probability
//!   [`NetConfig::reorder`] it takes [`NetConfig::reorder_delay`] more, so later messages overtake it.
//! - With probability [`NetConfig::loss`] a message is lost; with probability [`NetConfig::duplicate`] it is
//!   delivered twice (each copy with its own latency).
//! - A **partition** blocks links, one way or both. A message on a blocked link is dropped, both when it is
//!   sent and when it would arrive (it was on the wire when the cable was cut).
//! - A **clog** on a node or link holds its messages (they are neither lost nor delivered) until unclogged,
//!   then sends them on with fresh latencies.
//! - A message to a crashed or powered-off node, or to a port nobody listens on, is dropped when it arrives.
//!   A crashed node's endpoints close.
//!
//! Every decision draws from the run's network stream only, so workload changes do not reshuffle the network.
//!
//! # madsim's network
//! Some code cannot use this fabric: the simulated etcd (`madsim-etcd-client`) and anything else built on
//! `madsim::net` (`Endpoint`, `TcpStream`, `UdpSocket`). Every node therefore also has an IP address on
//! madsim's network, [`crate::node_ip`] (`n0` is 10.0.0.1), kept across restarts; the controller and the run's
//! hidden nodes have none. Which of the faults above reach that network:
//! - **Partitions and clogs: yes.** A directed link is clogged in madsim's network exactly while a partition
//!   blocks it or a link clog holds it here, and a node exactly while a node clog holds it here; one-way
//!   partitions stay one-way (madsim's link clogs are directed). Healing and unclogging lift madsim's clogs
//!   with ours. madsim then applies its own semantics to a clogged link: a datagram (`send_to`) is lost when
//!   sent; a new connection (`connect1`, `TcpStream::connect`) is refused; a message on an established
//!   connection waits and is retried (backing off up to 10 s) until the link opens, so it arrives late rather
//!   than never. A message madsim had already let onto the wire before the cut still arrives (here, it would
//!   be dropped on arrival).
//! - **Crashes and power cuts: yes**, by madsim itself: killing the node closes its sockets and drops its
//!   tasks; a restarted node binds again at the same address.
//! - **Pauses: as here, without mirroring.** A paused node's tasks do not run, so what madsim delivers to it
//!   queues in its sockets until it resumes.
//! - **Loss, duplication, reordering and latency: no.** They stay on this fabric. madsim's own packet loss
//!   stays 0 and its latency is its default (1–10 ms, from madsim's random stream).
//!
//! madsim's traffic is not in the trace (only the faults are), but it is deterministic under the seed like
//! everything else madsim runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use futures::channel::mpsc;
use futures::StreamExt;
use xxhash_rust::xxh3::xxh3_64;

use crate::context::{self, RunCtx};
use crate::disk::LatencyRange;
use crate::fault::{Direction, FaultKind, PlanError};
use crate::ratio::Ratio;
use crate::rng::Purpose;
use crate::trace::{Addr, DropReason, EventKind, NodeId};

/// The network of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// One-way latency of a message.
    pub latency: LatencyRange,
    /// Probability that a message is lost.
    pub loss: Ratio,
    /// Probability that a message is delivered twice.
    pub duplicate: Ratio,
    /// Probability that a message is held back by [`NetConfig::reorder_delay`] extra.
    pub reorder: Ratio,
    /// The extra delay of a reordered message.
    pub reorder_delay: Duration,
}

impl Default for NetConfig {
    /// A reliable LAN: 1–5 ms, nothing lost, duplicated or reordered beyond what the latency spread does.
    fn default() -> Self {
        NetConfig {
            latency: LatencyRange::new(Duration::from_millis(1), Duration::from_millis(5)),
            loss: Ratio::NEVER,
            duplicate: Ratio::NEVER,
            reorder: Ratio::NEVER,
            reorder_delay: Duration::from_millis(50),
        }
    }
}

impl NetConfig {
    /// A hostile network: 1–20 ms, 5% loss, 2% duplication, 5% reordering by 100 ms.
    pub fn lossy() -> NetConfig {
        NetConfig {
            latency: LatencyRange::new(Duration::from_millis(1), Duration::from_millis(20)),
            loss: Ratio::new(5, 100),
            duplicate: Ratio::new(2, 100),
            reorder: Ratio::new(5, 100),
            reorder_delay: Duration::from_millis(100),
        }
    }

    /// Checks the config, naming the bad value.
    pub fn validate(&self) -> Result<(), PlanError> {
        if self.latency.min > self.latency.max {
            return Err(PlanError(format!(
                "network latency range is empty: min {:?} > max {:?}",
                self.latency.min, self.latency.max
            )));
        }
        Ok(())
    }
}

/// A received message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Who sent it.
    pub from: Addr,
    /// Its bytes.
    pub payload: Vec<u8>,
}

/// Why an endpoint could not be bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetError {
    /// Another live endpoint holds the address.
    AddrInUse(Addr),
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::AddrInUse(a) => write!(f, "address {a} is already bound"),
        }
    }
}

impl std::error::Error for NetError {}

struct Message {
    id: u64,
    from: Addr,
    to: Addr,
    payload: Vec<u8>,
}

struct Binding {
    /// Distinguishes successive bindings of one address.
    id: u64,
    tx: mpsc::UnboundedSender<Datagram>,
}

/// The fabric's state for one run.
#[derive(Default)]
pub(crate) struct NetState {
    pub(crate) config: NetConfig,
    bindings: BTreeMap<Addr, Binding>,
    /// Directed links that a partition cuts.
    blocked: BTreeSet<(NodeId, NodeId)>,
    clogged_nodes: BTreeSet<NodeId>,
    clogged_links: BTreeSet<(NodeId, NodeId)>,
    held: BTreeMap<u64, Message>,
    /// Nodes that are crashed or powered off.
    down: BTreeSet<NodeId>,
    next_msg: u64,
    next_binding: u64,
    /// The hidden madsim node that runs delivery timers, so deliveries survive the sender's crash.
    pub(crate) wire: Option<madsim::runtime::NodeHandle>,
    /// Whether partitions and clogs are mirrored onto madsim's network (off only in negative controls).
    pub(crate) mirror_to_madsim: bool,
    /// The directed links madsim's network has been told to clog: every partitioned or clogged link.
    madsim_links: BTreeSet<(NodeId, NodeId)>,
    /// The nodes madsim's network has been told to clog.
    madsim_nodes: BTreeSet<NodeId>,
}

impl NetState {
    /// Brings madsim's network in line with this fabric: a directed link is clogged there exactly when a
    /// partition blocks it or a link clog holds it here, and a node exactly when a node clog holds it here.
    /// Only the differences are sent, in `NodeId` order.
    fn mirror_to_madsim(&mut self, ctx: &RunCtx) {
        if !self.mirror_to_madsim {
            return;
        }
        let links: BTreeSet<(NodeId, NodeId)> = self.blocked.union(&self.clogged_links).copied().collect();
        if links == self.madsim_links && self.clogged_nodes == self.madsim_nodes {
            return;
        }
        let ids = ctx.world.borrow().madsim_ids.clone();
        let id = |n: NodeId| ids[n.0 as usize];
        let sim = madsim::net::NetSim::current();
        for &(a, b) in links.difference(&self.madsim_links) {
            sim.clog_link(id(a), id(b));
        }
        for &(a, b) in self.madsim_links.difference(&links) {
            sim.unclog_link(id(a), id(b));
        }
        for &n in self.clogged_nodes.difference(&self.madsim_nodes) {
            sim.clog_node(id(n));
        }
        for &n in self.madsim_nodes.difference(&self.clogged_nodes) {
            sim.unclog_node(id(n));
        }
        self.madsim_links = links;
        self.madsim_nodes = self.clogged_nodes.clone();
    }

    fn is_clogged(&self, from: NodeId, to: NodeId) -> bool {
        self.clogged_nodes.contains(&from)
            || self.clogged_nodes.contains(&to)
            || self.clogged_links.contains(&(from, to))
    }
}

/// A bound port on the current node.
///
/// Dropping it closes the port; messages that arrive afterwards are dropped as `NoListener`.
pub struct Endpoint {
    addr: Addr,
    binding: u64,
    rx: mpsc::UnboundedReceiver<Datagram>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({})", self.addr)
    }
}

impl Endpoint {
    /// Binds `port` on the node whose task calls it.
    ///
    /// # Panics
    /// Outside a run, or on the controller (which is not on the network).
    pub fn bind(port: u16) -> Result<Endpoint, NetError> {
        let ctx = context::current();
        let node =
            ctx.current_node().expect("Endpoint::bind runs on a simulated node, not on the controller");
        let addr = Addr { node, port };
        let mut net = ctx.net.borrow_mut();
        if let Some(b) = net.bindings.get(&addr) {
            if !b.tx.is_closed() {
                return Err(NetError::AddrInUse(addr));
            }
        }
        let (tx, rx) = mpsc::unbounded();
        net.next_binding += 1;
        let binding = net.next_binding;
        net.bindings.insert(addr, Binding { id: binding, tx });
        Ok(Endpoint { addr, binding, rx })
    }

    /// This endpoint's address.
    pub fn addr(&self) -> Addr {
        self.addr
    }

    /// Sends `payload` to `to`. Fire and forget: the network may lose, duplicate, delay or reorder it.
    pub fn send(&self, to: Addr, payload: Vec<u8>) {
        send(self.addr, to, payload);
    }

    /// A handle that sends from this endpoint's address, for code that sends while another task waits in
    /// [`Endpoint::recv`].
    pub fn sender(&self) -> Sender {
        Sender { addr: self.addr }
    }

    /// Waits for the next message.
    ///
    /// Cancel safety: cancelling loses no message; it stays queued for the next `recv`.
    pub async fn recv(&mut self) -> Datagram {
        match self.rx.next().await {
            Some(d) => d,
            // The sender half lives in the fabric until this endpoint drops or its node crashes; a crashed
            // node's tasks are gone, so nobody can be waiting here then.
            None => std::future::pending().await,
        }
    }

    /// Takes a message that has already arrived, if any.
    pub fn try_recv(&mut self) -> Option<Datagram> {
        self.rx.try_recv().ok()
    }
}

/// Sends from an endpoint's address (see [`Endpoint::sender`]). Sending after the endpoint closed still
/// sends: the address is only the sender's name.
#[derive(Clone, Copy, Debug)]
pub struct Sender {
    addr: Addr,
}

impl Sender {
    /// Sends `payload` to `to`, as [`Endpoint::send`].
    pub fn send(&self, to: Addr, payload: Vec<u8>) {
        send(self.addr, to, payload);
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let Some(ctx) = context::try_current() else { return };
        let Ok(mut net) = ctx.net.try_borrow_mut() else { return };
        if net.bindings.get(&self.addr).map(|b| b.id) == Some(self.binding) {
            net.bindings.remove(&self.addr);
        }
    }
}

fn send(from: Addr, to: Addr, payload: Vec<u8>) {
    let ctx = context::current();
    let mut net = ctx.net.borrow_mut();
    net.next_msg += 1;
    let id = net.next_msg;
    ctx.record(
        Some(from.node),
        EventKind::Send { msg: id, from, to, len: payload.len() as u32, digest: xxh3_64(&payload) },
    );
    if net.down.contains(&from.node) {
        ctx.record(Some(from.node), EventKind::Drop { msg: id, reason: DropReason::SenderDown });
        return;
    }
    if net.blocked.contains(&(from.node, to.node)) {
        ctx.record(Some(from.node), EventKind::Drop { msg: id, reason: DropReason::Partition });
        return;
    }
    let config = net.config.clone();
    if ctx.rng(Purpose::Network, |r| r.chance(config.loss)) {
        ctx.count_fault(FaultKind::MessageLoss);
        ctx.record(Some(from.node), EventKind::Drop { msg: id, reason: DropReason::Loss });
        return;
    }
    let mut messages = vec![Message { id, from, to, payload }];
    if ctx.rng(Purpose::Network, |r| r.chance(config.duplicate)) {
        net.next_msg += 1;
        let copy = net.next_msg;
        ctx.count_fault(FaultKind::MessageDuplicate);
        ctx.record(Some(from.node), EventKind::Duplicate { msg: id, copy });
        let payload = messages[0].payload.clone();
        messages.push(Message { id: copy, from, to, payload });
    }
    for m in messages {
        schedule(&ctx, &mut net, m);
    }
}

/// Puts a message on the wire, or holds it if its link is clogged.
fn schedule(ctx: &RunCtx, net: &mut NetState, m: Message) {
    if net.is_clogged(m.from.node, m.to.node) {
        ctx.record(None, EventKind::Hold { msg: m.id });
        net.held.insert(m.id, m);
        return;
    }
    let config = &net.config;
    let mut latency =
        ctx.rng(Purpose::Network, |r| r.duration_between(config.latency.min, config.latency.max));
    if ctx.rng(Purpose::Network, |r| r.chance(config.reorder)) {
        ctx.count_fault(FaultKind::MessageReorder);
        latency += config.reorder_delay;
    }
    let wire = net.wire.clone().expect("the wire node exists for the whole run");
    // Detached on purpose: the datagram is on the wire; it arrives (or not) whatever its sender does next.
    drop(wire.spawn(async move {
        madsim::time::sleep(latency).await;
        deliver(m);
    }));
}

fn deliver(m: Message) {
    let ctx = context::current();
    let mut net = ctx.net.borrow_mut();
    let reason = if net.blocked.contains(&(m.from.node, m.to.node)) {
        Some(DropReason::Partition)
    } else if net.is_clogged(m.from.node, m.to.node) {
        ctx.record(None, EventKind::Hold { msg: m.id });
        net.held.insert(m.id, m);
        return;
    } else if net.down.contains(&m.to.node) {
        Some(DropReason::ReceiverDown)
    } else {
        match net.bindings.get(&m.to) {
            Some(b) => {
                let d = Datagram { from: m.from, payload: m.payload };
                match b.tx.unbounded_send(d) {
                    Ok(()) => None,
                    Err(_) => Some(DropReason::NoListener),
                }
            }
            None => Some(DropReason::NoListener),
        }
    };
    let kind = match reason {
        None => EventKind::Deliver { msg: m.id, to: m.to },
        Some(reason) => EventKind::Drop { msg: m.id, reason },
    };
    ctx.record(None, kind);
}

fn fault_event(ctx: &RunCtx, kind: FaultKind, detail: String) {
    ctx.count_fault(kind);
    ctx.record(None, EventKind::Fault { kind, detail });
}

fn set_text(nodes: &[NodeId]) -> String {
    let names: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    format!("{{{}}}", names.join(","))
}

pub(crate) fn partition(ctx: &RunCtx, from: &[NodeId], to: &[NodeId], direction: Direction) {
    let mut net = ctx.net.borrow_mut();
    for a in from {
        for b in to {
            if a == b {
                continue;
            }
            net.blocked.insert((*a, *b));
            if direction == Direction::Both {
                net.blocked.insert((*b, *a));
            }
        }
    }
    net.mirror_to_madsim(ctx);
    drop(net);
    let arrow = if direction == Direction::Both { "<->" } else { "->" };
    fault_event(ctx, FaultKind::Partition, format!("{} {arrow} {}", set_text(from), set_text(to)));
}

/// Heals every partition. With none in place it does nothing (and counts nothing).
pub(crate) fn heal(ctx: &RunCtx) {
    let mut net = ctx.net.borrow_mut();
    if net.blocked.is_empty() {
        return;
    }
    net.blocked.clear();
    net.mirror_to_madsim(ctx);
    drop(net);
    fault_event(ctx, FaultKind::Heal, "all partitions".into());
}

pub(crate) fn clog(ctx: &RunCtx, node: Option<NodeId>, link: Option<(NodeId, NodeId)>) {
    let mut net = ctx.net.borrow_mut();
    let detail = match (node, link) {
        (Some(n), _) => {
            net.clogged_nodes.insert(n);
            n.to_string()
        }
        (None, Some((a, b))) => {
            net.clogged_links.insert((a, b));
            format!("{a} -> {b}")
        }
        (None, None) => unreachable!("clog names a node or a link"),
    };
    net.mirror_to_madsim(ctx);
    drop(net);
    fault_event(ctx, FaultKind::Clog, detail);
}

pub(crate) fn unclog(ctx: &RunCtx, node: Option<NodeId>, link: Option<(NodeId, NodeId)>) {
    let mut net = ctx.net.borrow_mut();
    let detail = match (node, link) {
        (Some(n), _) => {
            net.clogged_nodes.remove(&n);
            n.to_string()
        }
        (None, Some((a, b))) => {
            net.clogged_links.remove(&(a, b));
            format!("{a} -> {b}")
        }
        (None, None) => {
            if net.clogged_nodes.is_empty() && net.clogged_links.is_empty() {
                // Nothing to lift: no event, no count.
                return;
            }
            net.clogged_nodes.clear();
            net.clogged_links.clear();
            "all".to_string()
        }
    };
    net.mirror_to_madsim(ctx);
    fault_event(ctx, FaultKind::Unclog, detail);
    release_held(ctx, &mut net);
}

fn release_held(ctx: &RunCtx, net: &mut NetState) {
    let ready: Vec<u64> =
        net.held.values().filter(|m| !net.is_clogged(m.from.node, m.to.node)).map(|m| m.id).collect();
    for id in ready {
        let m = net.held.remove(&id).expect("listed above");
        schedule(ctx, net, m);
    }
}

/// Marks a node down (crash, power cut) or up (restart). Going down closes its endpoints.
pub(crate) fn set_down(ctx: &RunCtx, node: NodeId, down: bool) {
    let mut net = ctx.net.borrow_mut();
    if down {
        net.down.insert(node);
        net.bindings.retain(|addr, _| addr.node != node);
    } else {
        net.down.remove(&node);
    }
}

/// True if nothing blocks or clogs the link from `a` to `b`.
pub(crate) fn link_is_open(ctx: &RunCtx, a: NodeId, b: NodeId) -> bool {
    let net = ctx.net.borrow();
    !net.blocked.contains(&(a, b)) && !net.is_clogged(a, b)
}
