//! WebSocket connections between nodes: a reliable, ordered stream of frames over the cluster's unreliable
//! datagrams, as TCP gives a real WebSocket.
//!
//! # Protocol
//! A connection is named by its client ([`ConnId`]: the client node, its RPC incarnation, a counter). The
//! client opens its session before it sends the upgrading `fetch` (so frames the object sends before the
//! answer arrives are kept), and the host that answers `101` opens the other side, bound to the object's
//! end. Each side numbers its frames; the receiver delivers them in order once, buffers those that arrive
//! early, and acknowledges cumulatively. Unacknowledged frames are sent again every [`RETRANSMIT`]; a side
//! that sent nothing for [`HEARTBEAT`] sends a ping.
//!
//! # Ends
//! - Nothing heard from the peer for [`PEER_TIMEOUT`] (a partition, a crashed node): the connection drops.
//!   The local end is told (close code 1006), and the peer is sent a reset, in case it hears it.
//! - A packet for a connection a node does not know (its host restarted, or the session ended) is answered
//!   with a reset: the peer's end drops at once.
//! - Both Close frames exchanged and every frame acknowledged: the session ends quietly.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};
use std::time::Duration;

use madsim_tokio::time::Instant;
use serde::{Deserialize, Serialize};

use crate::rpc::RpcNode;
use crate::websocket::{Frame, FrameSink, WebSocket};
use crate::wire::{self, ConnId};

/// A side that sent nothing for this long sends a ping.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);
/// A connection with nothing heard from the peer for this long drops (close code 1006 on both ends).
pub(crate) const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// Unacknowledged frames are sent again after this long.
pub(crate) const RETRANSMIT: Duration = Duration::from_millis(500);
/// How often a node looks at its sessions (heartbeats, retransmissions, timeouts).
const TICK: Duration = Duration::from_millis(250);

#[derive(Serialize, Deserialize)]
enum Packet {
    Data { seq: u64, frame: Frame },
    Ack { upto: u64 },
    Ping,
    Reset,
}

#[derive(Serialize, Deserialize)]
struct StreamMessage {
    conn: ConnId,
    packet: Packet,
}

/// One side of a connection.
struct Session {
    conn: ConnId,
    peer: RefCell<Option<String>>,
    /// Where frames from the peer go: the local end.
    deliver: Box<dyn Fn(Frame)>,
    next_seq: Cell<u64>,
    unacked: RefCell<BTreeMap<u64, (Frame, Instant)>>,
    expected: Cell<u64>,
    early: RefCell<BTreeMap<u64, Frame>>,
    last_heard: Cell<Instant>,
    last_sent: Cell<Instant>,
    /// A client's session before the upgrade was answered: it does not time out.
    pending: Cell<bool>,
    close_sent: Cell<bool>,
    close_received: Cell<bool>,
}

/// A node's WebSocket sessions.
pub(crate) struct Streams {
    rpc: Rc<RpcNode>,
    sessions: RefCell<BTreeMap<ConnId, Rc<Session>>>,
    next: Cell<u64>,
    ticking: Cell<bool>,
    me: Weak<Streams>,
}

/// A client's session waiting for its upgrade's answer; abandoned when dropped unconnected.
pub(crate) struct PendingUpgrade {
    streams: Rc<Streams>,
    conn: ConnId,
    end: Option<WebSocket>,
}

impl PendingUpgrade {
    /// The connection's name, for the upgrading call.
    pub(crate) fn conn(&self) -> ConnId {
        self.conn.clone()
    }

    /// The upgrade was answered by `host`: the client's end, connected to it.
    pub(crate) fn connected(mut self, host: &str) -> WebSocket {
        if let Some(s) = self.streams.sessions.borrow().get(&self.conn) {
            s.pending.set(false);
            s.last_heard.set(Instant::now());
            let mut peer = s.peer.borrow_mut();
            if peer.is_none() {
                *peer = Some(host.to_string());
            }
        }
        tracing::debug!(target: "dosim::runtime", "ws {} connected to {host}", self.conn);
        self.end.take().expect("connected once")
    }
}

impl Drop for PendingUpgrade {
    fn drop(&mut self) {
        if self.end.is_some() {
            self.streams.remove(&self.conn);
        }
    }
}

/// What an end sends into its session.
struct SessionSink {
    streams: Weak<Streams>,
    conn: ConnId,
}

impl FrameSink for SessionSink {
    fn send(&self, frame: Frame) {
        let Some(streams) = self.streams.upgrade() else { return };
        let Some(session) = streams.sessions.borrow().get(&self.conn).cloned() else { return };
        if frame == Frame::Dropped {
            // The local end is gone: tell the peer and forget the session.
            streams.kill(&session, "the local end dropped", false);
            return;
        }
        streams.send_frame(&session, frame);
    }
}

impl Streams {
    /// The sessions of the node behind `rpc`; they take its stream packets from now on.
    pub(crate) fn new(rpc: Rc<RpcNode>) -> Rc<Streams> {
        let streams = Rc::new_cyclic(|me| Streams {
            rpc: rpc.clone(),
            sessions: RefCell::new(BTreeMap::new()),
            next: Cell::new(0),
            ticking: Cell::new(false),
            me: me.clone(),
        });
        let weak = Rc::downgrade(&streams);
        rpc.set_stream_handler(Rc::new(move |from, body| {
            if let Some(s) = weak.upgrade() {
                s.on_message(from, &body);
            }
        }));
        streams
    }

    fn sink(&self, conn: &ConnId) -> Rc<dyn FrameSink> {
        Rc::new(SessionSink { streams: self.me.clone(), conn: conn.clone() })
    }

    fn insert(&self, session: Session) {
        self.sessions.borrow_mut().insert(session.conn.clone(), Rc::new(session));
        if !self.ticking.replace(true) {
            // Detached on purpose: it holds the sessions weakly and ends when there are none.
            drop(madsim_tokio::task::spawn_local(ticker(self.me.clone())));
        }
    }

    fn session(conn: ConnId, peer: Option<String>, deliver: Box<dyn Fn(Frame)>, pending: bool) -> Session {
        let now = Instant::now();
        Session {
            conn,
            peer: RefCell::new(peer),
            deliver,
            next_seq: Cell::new(0),
            unacked: RefCell::new(BTreeMap::new()),
            expected: Cell::new(0),
            early: RefCell::new(BTreeMap::new()),
            last_heard: Cell::new(now),
            last_sent: Cell::new(now),
            pending: Cell::new(pending),
            close_sent: Cell::new(false),
            close_received: Cell::new(false),
        }
    }

    /// A client's session, before its upgrading call leaves.
    pub(crate) fn open_client(&self) -> PendingUpgrade {
        let n = self.next.get() + 1;
        self.next.set(n);
        let conn = ConnId { client: self.rpc.local_addr(), incarnation: self.rpc.incarnation(), n };
        let end = WebSocket::remote(self.sink(&conn));
        // Weakly: the client holds its end; when it drops it, the end drops the connection.
        let to_end = end.downgrade();
        let deliver = Box::new(move |frame| {
            if let Some(end) = to_end.upgrade() {
                end.receive(frame);
            }
        });
        self.insert(Self::session(conn.clone(), None, deliver, true));
        let streams = self.me.upgrade().expect("a live node's streams");
        PendingUpgrade { streams, conn, end: Some(end) }
    }

    /// The host's side of `conn` from `client`: `end` (the client half of the object's pair) is bound to it.
    pub(crate) fn accept(&self, conn: ConnId, client: &str, end: &WebSocket) {
        tracing::debug!(target: "dosim::runtime", "ws {conn} accepted for {client}");
        let proxy = end.clone();
        let deliver = Box::new(move |frame| proxy.transmit(frame));
        self.insert(Self::session(conn.clone(), Some(client.to_string()), deliver, false));
        end.bind_proxy(self.sink(&conn));
    }

    fn remove(&self, conn: &ConnId) -> Option<Rc<Session>> {
        self.sessions.borrow_mut().remove(conn)
    }

    fn packet(&self, to: &str, conn: &ConnId, packet: Packet) {
        let body = wire::encode(&StreamMessage { conn: conn.clone(), packet });
        self.rpc.send_stream(to, body);
    }

    fn transmit(&self, session: &Session, packet: Packet) {
        let peer = session.peer.borrow().clone();
        if let Some(peer) = peer {
            session.last_sent.set(Instant::now());
            self.packet(&peer, &session.conn, packet);
        }
    }

    fn send_frame(&self, session: &Rc<Session>, frame: Frame) {
        let seq = session.next_seq.get();
        session.next_seq.set(seq + 1);
        if matches!(frame, Frame::Close { .. }) {
            session.close_sent.set(true);
        }
        session.unacked.borrow_mut().insert(seq, (frame.clone(), Instant::now()));
        self.transmit(session, Packet::Data { seq, frame });
    }

    /// Ends `session`: the local end is told the connection dropped (unless `quiet`), and the peer is sent a
    /// reset.
    fn kill(&self, session: &Rc<Session>, why: &str, tell_local: bool) {
        if self.remove(&session.conn).is_none() {
            return;
        }
        tracing::debug!(target: "dosim::runtime", "ws {} dropped: {why}", session.conn);
        self.transmit(session, Packet::Reset);
        if tell_local {
            (session.deliver)(Frame::Dropped);
        }
    }

    fn on_message(&self, from: String, body: &[u8]) {
        let Ok(message) = wire::decode::<StreamMessage>(body, "stream packet") else { return };
        let conn = message.conn;
        let session = self.sessions.borrow().get(&conn).cloned();
        let Some(session) = session else {
            if !matches!(message.packet, Packet::Reset) {
                self.packet(&from, &conn, Packet::Reset);
            }
            return;
        };
        {
            let mut peer = session.peer.borrow_mut();
            match &*peer {
                None => *peer = Some(from.clone()),
                Some(p) if *p != from => return,
                Some(_) => {}
            }
        }
        session.last_heard.set(Instant::now());
        match message.packet {
            Packet::Data { seq, frame } if self.rpc.at_least_once() => {
                // The negative control (a node without deduplication): every copy is delivered as it
                // arrives, in arrival order, and the acknowledgement skips what has not arrived yet.
                if matches!(frame, Frame::Close { .. }) {
                    session.close_received.set(true);
                }
                session.expected.set(session.expected.get().max(seq + 1));
                (session.deliver)(frame);
                self.transmit(&session, Packet::Ack { upto: session.expected.get() });
                self.end_if_done(&session);
            }
            Packet::Data { seq, frame } => {
                if seq >= session.expected.get() {
                    session.early.borrow_mut().insert(seq, frame);
                }
                loop {
                    let next = session.early.borrow_mut().remove(&session.expected.get());
                    let Some(frame) = next else { break };
                    session.expected.set(session.expected.get() + 1);
                    if matches!(frame, Frame::Close { .. }) {
                        session.close_received.set(true);
                    }
                    (session.deliver)(frame);
                }
                self.transmit(&session, Packet::Ack { upto: session.expected.get() });
                self.end_if_done(&session);
            }
            Packet::Ack { upto } => {
                session.unacked.borrow_mut().retain(|seq, _| *seq >= upto);
                self.end_if_done(&session);
            }
            Packet::Ping => {}
            Packet::Reset => self.kill(&session, "the peer reset it", true),
        }
    }

    fn end_if_done(&self, session: &Rc<Session>) {
        if session.close_sent.get() && session.close_received.get() && session.unacked.borrow().is_empty() {
            tracing::debug!(target: "dosim::runtime", "ws {} ended cleanly", session.conn);
            self.remove(&session.conn);
        }
    }

    fn tick(&self) {
        let now = Instant::now();
        let sessions: Vec<Rc<Session>> = self.sessions.borrow().values().cloned().collect();
        for s in sessions {
            if !s.pending.get() && now.duration_since(s.last_heard.get()) >= PEER_TIMEOUT {
                self.kill(&s, "nothing heard from the peer", true);
                continue;
            }
            let due: Vec<(u64, Frame)> = s
                .unacked
                .borrow_mut()
                .iter_mut()
                .filter(|(_, (_, sent))| now.duration_since(*sent) >= RETRANSMIT)
                .map(|(seq, (frame, sent))| {
                    *sent = now;
                    (*seq, frame.clone())
                })
                .collect();
            for (seq, frame) in due {
                self.transmit(&s, Packet::Data { seq, frame });
            }
            if now.duration_since(s.last_sent.get()) >= HEARTBEAT {
                self.transmit(&s, Packet::Ping);
            }
        }
    }
}

async fn ticker(streams: Weak<Streams>) {
    loop {
        madsim_tokio::time::sleep(TICK).await;
        let Some(s) = streams.upgrade() else { return };
        if s.sessions.borrow().is_empty() {
            s.ticking.set(false);
            return;
        }
        s.tick();
    }
}
