//! Calls between nodes over an unreliable [`Transport`]: request ids, replies, timeouts, and at-most-once
//! execution when the network duplicates or reorders messages.
//!
//! # Protocol
//! Every node has one [`RpcNode`], with an *incarnation* (a random `u64` drawn when it starts: a restarted
//! node is a new client) and a counter of call ids. A call is `Request { client, id, body }`; its answer is
//! `Response { client, id, body }`, matched by id. Nothing is retransmitted: a call whose request or response
//! is lost times out, and the caller sees `Network connection lost.` (retryable): the call may or may not
//! have run, exactly as a real disconnect leaves it.
//!
//! # At most once
//! A server remembers, per client incarnation, the calls it has run ([`SERVED_WINDOW`] of them) and their
//! responses. A duplicate of a call in progress is ignored; a duplicate of a finished call gets the stored
//! response again; a duplicate older than the window (ids only grow per incarnation) is ignored. So the
//! network never makes a handler run twice; only a caller that calls again does.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};
use std::time::Duration;

use madsim_tokio::sync::oneshot;
use serde::{Deserialize, Serialize};

use crate::error::{messages, Error};
use crate::future::LocalFuture;
use crate::wire::encode;
use crate::world::Transport;

/// How many calls per client incarnation a server remembers, for deduplication.
pub(crate) const SERVED_WINDOW: usize = 1024;

/// What a server does with a request: the handler of the node's calls.
pub type Handler = Rc<dyn Fn(String, Vec<u8>) -> LocalFuture<'static, Vec<u8>>>;

#[derive(Serialize, Deserialize)]
enum Envelope {
    Request {
        client: u64,
        id: u64,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    Response {
        client: u64,
        id: u64,
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// A packet of a WebSocket session (`stream.rs`), outside the request/response protocol.
    Stream {
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
}

/// What a node does with the stream packets it receives.
pub(crate) type StreamHandler = Rc<dyn Fn(String, Vec<u8>)>;

/// What a server knows of one client incarnation's calls.
#[derive(Default)]
struct Served {
    /// Ids below this were forgotten; their duplicates are ignored.
    floor: u64,
    /// Calls remembered: `None` while in progress, then the response.
    calls: BTreeMap<u64, Option<Vec<u8>>>,
}

impl Served {
    fn forget_old(&mut self) {
        while self.calls.len() > SERVED_WINDOW {
            let (&oldest, _) = self.calls.iter().next().expect("more than the window");
            self.calls.remove(&oldest);
            self.floor = oldest + 1;
        }
    }
}

/// A node's end of the cluster's calls: it calls others and serves their calls.
pub struct RpcNode {
    transport: Rc<dyn Transport>,
    incarnation: u64,
    next_id: Cell<u64>,
    pending: RefCell<BTreeMap<u64, oneshot::Sender<Vec<u8>>>>,
    handler: RefCell<Option<Handler>>,
    stream_handler: RefCell<Option<StreamHandler>>,
    served: RefCell<BTreeMap<(String, u64), Served>>,
    /// Run duplicates again: the negative control of deduplication.
    at_least_once: bool,
    dispatcher: Cell<Option<madsim_tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for RpcNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RpcNode({} #{:016x})", self.transport.local_addr(), self.incarnation)
    }
}

impl Drop for RpcNode {
    fn drop(&mut self) {
        if let Some(d) = self.dispatcher.take() {
            d.abort();
        }
    }
}

impl RpcNode {
    /// The calls of the node behind `transport`, in its incarnation `incarnation` (random, fresh at every
    /// start). Its dispatcher is a local task, so this runs inside a local task set.
    pub fn start(transport: Rc<dyn Transport>, incarnation: u64) -> Rc<RpcNode> {
        Self::start_with(transport, incarnation, false)
    }

    /// [`RpcNode::start`] without deduplication: a duplicated request runs its handler again, and the node's
    /// WebSocket sessions deliver frames as they arrive (duplicated, reordered, with gaps). Only for the
    /// negative controls of tests that show deduplication and ordering are needed.
    pub fn start_at_least_once(transport: Rc<dyn Transport>, incarnation: u64) -> Rc<RpcNode> {
        Self::start_with(transport, incarnation, true)
    }

    fn start_with(transport: Rc<dyn Transport>, incarnation: u64, at_least_once: bool) -> Rc<RpcNode> {
        let node = Rc::new(RpcNode {
            transport,
            incarnation,
            next_id: Cell::new(0),
            pending: RefCell::new(BTreeMap::new()),
            handler: RefCell::new(None),
            stream_handler: RefCell::new(None),
            served: RefCell::new(BTreeMap::new()),
            at_least_once,
            dispatcher: Cell::new(None),
        });
        let weak = Rc::downgrade(&node);
        node.dispatcher.set(Some(madsim_tokio::task::spawn_local(dispatch(weak))));
        node
    }

    /// This node's address.
    pub fn local_addr(&self) -> String {
        self.transport.local_addr()
    }

    /// Whether the node runs duplicates again ([`RpcNode::start_at_least_once`]); its WebSocket sessions
    /// then deliver frames as they arrive, duplicates and all (the negative control of their ordering).
    pub(crate) fn at_least_once(&self) -> bool {
        self.at_least_once
    }

    /// This node's incarnation.
    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Sets what this node does with stream packets (until set, they are dropped).
    pub(crate) fn set_stream_handler(&self, handler: StreamHandler) {
        *self.stream_handler.borrow_mut() = Some(handler);
    }

    /// Sends a stream packet to `to`. Fire and forget.
    pub(crate) fn send_stream(&self, to: &str, body: Vec<u8>) {
        self.transport.send(to, encode(&Envelope::Stream { body }));
    }

    /// Sets what this node does with the calls it receives (until set, requests are dropped).
    pub fn serve(&self, handler: Handler) {
        *self.handler.borrow_mut() = Some(handler);
    }

    /// Calls `to` with `body`; its response, or `Network connection lost.` (retryable) if none came within
    /// `timeout` (the call may have run).
    pub async fn call(&self, to: &str, body: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, Error> {
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        self.transport.send(to, encode(&Envelope::Request { client: self.incarnation, id, body }));
        let outcome = madsim_tokio::time::timeout(timeout, rx).await;
        self.pending.borrow_mut().remove(&id);
        match outcome {
            Ok(Ok(body)) => Ok(body),
            _ => {
                tracing::debug!(target: "dosim::runtime", "call {id} to {to}: no response within {timeout:?}");
                Err(Error::new(messages::NETWORK_CONNECTION_LOST).with_retryable())
            }
        }
    }

    fn on_request(self: &Rc<Self>, from: String, client: u64, id: u64, body: Vec<u8>) {
        if !self.at_least_once {
            let mut served = self.served.borrow_mut();
            let s = served.entry((from.clone(), client)).or_default();
            if id < s.floor {
                return;
            }
            match s.calls.get(&id) {
                Some(None) => return,
                Some(Some(response)) => {
                    let reply = Envelope::Response { client, id, body: response.clone() };
                    self.transport.send(&from, encode(&reply));
                    return;
                }
                None => {
                    s.calls.insert(id, None);
                    s.forget_old();
                }
            }
        }
        let Some(handler) = self.handler.borrow().clone() else { return };
        let me = Rc::downgrade(self);
        // Detached on purpose: the call runs to its end even if the dispatcher stops; it holds only a weak
        // reference to the node, and its response goes nowhere if the node is gone.
        drop(madsim_tokio::task::spawn_local(async move {
            let response = handler(from.clone(), body).await;
            let Some(me) = me.upgrade() else { return };
            if !me.at_least_once {
                if let Some(s) = me.served.borrow_mut().get_mut(&(from.clone(), client)) {
                    if let Some(slot) = s.calls.get_mut(&id) {
                        *slot = Some(response.clone());
                    }
                }
            }
            me.transport.send(&from, encode(&Envelope::Response { client, id, body: response }));
        }));
    }

    fn on_response(&self, client: u64, id: u64, body: Vec<u8>) {
        if client != self.incarnation {
            return;
        }
        if let Some(tx) = self.pending.borrow_mut().remove(&id) {
            let _ = tx.send(body);
        }
    }
}

/// Receives messages until the node drops.
async fn dispatch(me: Weak<RpcNode>) {
    loop {
        let Some(node) = me.upgrade() else { return };
        let transport = node.transport.clone();
        drop(node);
        let (from, bytes) = transport.recv().await;
        let Some(node) = me.upgrade() else { return };
        match ciborium::from_reader::<Envelope, _>(&bytes[..]) {
            Ok(Envelope::Request { client, id, body }) => node.on_request(from, client, id, body),
            Ok(Envelope::Response { client, id, body }) => node.on_response(client, id, body),
            Ok(Envelope::Stream { body }) => {
                let handler = node.stream_handler.borrow().clone();
                drop(node);
                if let Some(h) = handler {
                    h(from, body);
                }
            }
            Err(e) => tracing::debug!(target: "dosim::runtime", "a message from {from} does not decode: {e}"),
        }
    }
}
