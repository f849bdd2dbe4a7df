//! The runtime's [`Transport`] on the world's datagram fabric (`dosim_sim::net`): every call between the
//! cluster's nodes is a message there, so loss, duplication, reordering, partitions and clogs reach it, and
//! every send, delivery and drop is in the trace.
//!
//! Addresses are the fabric's, as text: `n<node>:<port>`.

use std::future::Future;
use std::pin::Pin;

use dosim_runtime::embed::{Datagram, Transport};
use dosim_sim::net::{Endpoint, NetError, Sender};
use dosim_sim::{Addr, NodeId};

/// The port object traffic (calls to hosts, and their replies) uses on every node.
pub const CLUSTER_PORT: u16 = 7000;

/// The transport address of `port` on `node`.
pub fn addr_of(node: NodeId, port: u16) -> String {
    Addr { node, port }.to_string()
}

/// Parses an address made by [`addr_of`].
pub fn parse_addr(text: &str) -> Option<Addr> {
    let (node, port) = text.strip_prefix('n')?.split_once(':')?;
    Some(Addr { node: NodeId(node.parse().ok()?), port: port.parse().ok()? })
}

/// A bound port of the current node, as the runtime's transport.
pub struct SimTransport {
    addr: Addr,
    sender: Sender,
    /// Locked by the one receiving task (the trait's contract): sends go through `sender`.
    endpoint: madsim_tokio::sync::Mutex<Endpoint>,
}

impl std::fmt::Debug for SimTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimTransport({})", self.addr)
    }
}

impl SimTransport {
    /// Binds `port` on the node whose task calls it.
    pub fn bind(port: u16) -> Result<SimTransport, NetError> {
        let endpoint = Endpoint::bind(port)?;
        Ok(SimTransport {
            addr: endpoint.addr(),
            sender: endpoint.sender(),
            endpoint: madsim_tokio::sync::Mutex::new(endpoint),
        })
    }
}

impl Transport for SimTransport {
    fn local_addr(&self) -> String {
        self.addr.to_string()
    }

    fn send(&self, to: &str, payload: Vec<u8>) {
        match parse_addr(to) {
            Some(to) => self.sender.send(to, payload),
            None => tracing::debug!(target: "dosim::scenario", "dropped a message to a bad address {to:?}"),
        }
    }

    fn recv(&self) -> Pin<Box<dyn Future<Output = Datagram> + '_>> {
        Box::pin(async move {
            let d = self.endpoint.lock().await.recv().await;
            (d.from.to_string(), d.payload)
        })
    }
}

/// A transport that loses the messages `lose` picks (see [`super::SendFilter`]), with a trace line for each.
pub struct Lossy {
    /// The transport underneath.
    pub inner: SimTransport,
    /// Whether a message is lost.
    pub lose: super::SendFilter,
}

impl Transport for Lossy {
    fn local_addr(&self) -> String {
        self.inner.local_addr()
    }

    fn send(&self, to: &str, payload: Vec<u8>) {
        if (self.lose)(&payload) {
            tracing::debug!(target: "dosim::scenario", "lost a message to {to} on purpose");
            return;
        }
        self.inner.send(to, payload);
    }

    fn recv(&self) -> Pin<Box<dyn Future<Output = Datagram> + '_>> {
        self.inner.recv()
    }
}
