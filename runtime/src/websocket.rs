//! WebSockets (spec §5.2): a [`WebSocket`] is one end of a connection, made in pairs by [`WebSocketPair`]
//! (workers-rs `WebSocketPair`), shaped so that an end can sit in this process or across the network.
//!
//! # Ends and roles
//! An end starts *fresh*: frames that reach it wait in a buffer. It then takes one role:
//! - **accepted** ([`WebSocket::accept`]): its events are read with [`WebSocket::next_event`]; a client
//!   holding the end a `fetch` answered with, or an object with a non-hibernatable socket;
//! - **hibernatable** (`State::accept_web_socket`): its events go to the object's handlers, through the
//!   object's socket registry, which outlives the object's memory (`hibernation.rs`);
//! - **proxy**: the host bound it to a network session (`stream.rs`); what its peer sends goes out on the
//!   network, and what the network brings is sent to its peer.
//!
//! # Frames and closing
//! A message or a Close frame goes to the peer in order. A Close frame received is answered with a Close
//! frame at once (workerd's `web_socket_auto_reply_to_close`, the default since 2026-04-07), and the end is
//! closed: its handler or reader gets `close(code, reason, was_clean: true)`. A connection that drops without
//! a Close frame is delivered as close code 1006 with [`messages::WS_DISCONNECTED`], `was_clean: false`. A
//! received message over [`MESSAGE_SIZE_MAX`] is a protocol error: the end gets an error event, and the peer
//! a Close frame with code 1009 (kj).
//!
//! # Output
//! A send or close made while an object's event runs is held behind that object's output gate (spec §1.4,
//! §5.2): the runtime enters the object's [`SocketScope`] around every turn, and the scope holds the frame
//! until every write confirmed before it is durable. Outside an object (a client), frames leave at once.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use madsim_tokio::sync::Notify;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{messages, Error, ErrorKind};

/// The largest message an end receives (spec §5.2: workerd's `WEBSOCKET_MAX_MESSAGE_SIZE`, 32 MiB); a
/// larger one is a protocol error (close code 1009).
pub const MESSAGE_SIZE_MAX: usize = 32 << 20;
/// The largest serialized attachment (spec §5.2: workerd's `MAX_ATTACHMENT_SIZE`).
pub const ATTACHMENT_SIZE_MAX: usize = 16_384;
/// The longest close reason, in UTF-8 bytes (RFC 6455's control frame limit; workerd's
/// `websocket_close_reason_byte_limit`).
pub const CLOSE_REASON_BYTES_MAX: usize = 123;
/// Close code: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code: no status received (a Close frame without a code).
pub const CLOSE_NO_STATUS: u16 = 1005;
/// Close code: the connection dropped without a Close frame.
pub const CLOSE_ABNORMAL: u16 = 1006;
/// Close code: a message too big to receive.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// A message a WebSocket received (workers-rs `WebSocketIncomingMessage`): text, or binary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WebSocketIncomingMessage {
    /// A text message.
    String(String),
    /// A binary message.
    Binary(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl WebSocketIncomingMessage {
    /// The message's size in bytes.
    pub fn len(&self) -> usize {
        match self {
            WebSocketIncomingMessage::String(s) => s.len(),
            WebSocketIncomingMessage::Binary(b) => b.len(),
        }
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How a connection closed, as the end that saw it is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseEvent {
    /// The close code: the peer's, or 1006 when the connection dropped without a Close frame.
    pub code: u16,
    /// The close reason.
    pub reason: String,
    /// Whether both sides exchanged Close frames.
    pub was_clean: bool,
}

/// An event on an accepted end (workers-rs `WebsocketEvent`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebSocketEvent {
    /// A message arrived.
    Message(WebSocketIncomingMessage),
    /// The connection closed; no event follows.
    Close(CloseEvent),
    /// A read error (a message over the size limit); the connection is closed, no event follows.
    Error(Error),
}

/// What crosses a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Frame {
    /// A message.
    Message(WebSocketIncomingMessage),
    /// A Close frame.
    Close { code: u16, reason: String },
    /// The connection dropped (never on the wire: what an end is told when its transport is gone).
    Dropped,
}

/// Where frames go across the network: a session (`stream.rs`).
pub(crate) trait FrameSink {
    /// Sends `frame` to the remote end ([`Frame::Dropped`]: the local side is gone; tell the remote end).
    fn send(&self, frame: Frame);
}

/// Where a hibernatable end's events go: the object's socket registry.
pub(crate) trait Acceptor {
    /// `ws` got `event`.
    fn on_event(&self, ws: &WebSocket, event: WebSocketEvent);
}

/// The object whose turn is running, for the sockets its code touches.
pub(crate) trait SocketScope {
    /// Runs `send` once every write confirmed so far is durable (or never, if the output gate breaks).
    fn hold(&self, send: Box<dyn FnOnce()>);
    /// `ws` was accepted with `accept()` inside the object: a non-hibernatable socket of it.
    fn adopt(&self, ws: &WebSocket);
}

thread_local! {
    static SCOPE: RefCell<Option<Rc<dyn SocketScope>>> = const { RefCell::new(None) };
    static NEXT_SERIAL: Cell<u64> = const { Cell::new(0) };
    static PARKED: RefCell<std::collections::BTreeMap<u64, WebSocket>> =
        const { RefCell::new(std::collections::BTreeMap::new()) };
}

/// An end parked on this thread while a response carries it: responses are `Send` values, ends are not.
/// The end lives as long as the last clone of the response holding the ticket (then it drops, and its peer
/// sees 1006, unless someone took it).
#[derive(Debug)]
pub(crate) struct Parked(u64);

impl Parked {
    /// Parks `ws`.
    pub(crate) fn park(ws: WebSocket) -> std::sync::Arc<Parked> {
        let serial = ws.end.serial;
        PARKED.with(|p| p.borrow_mut().insert(serial, ws));
        std::sync::Arc::new(Parked(serial))
    }

    /// The parked end, if it is parked on this thread.
    pub(crate) fn get(&self) -> Option<WebSocket> {
        PARKED.with(|p| p.borrow().get(&self.0).cloned())
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        let end = PARKED.try_with(|p| p.borrow_mut().remove(&self.0)).ok().flatten();
        drop(end);
    }
}

/// Makes `scope` the current object's for as long as the guard lives (the instance enters it around each
/// poll of an event).
pub(crate) fn enter_scope(scope: Rc<dyn SocketScope>) -> ScopeGuard {
    ScopeGuard(SCOPE.with(|s| s.borrow_mut().replace(scope)))
}

/// Restores the previous scope when dropped.
pub(crate) struct ScopeGuard(Option<Rc<dyn SocketScope>>);

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        let previous = self.0.take();
        SCOPE.with(|s| *s.borrow_mut() = previous);
    }
}

fn current_scope() -> Option<Rc<dyn SocketScope>> {
    SCOPE.with(|s| s.borrow().clone())
}

enum Peer {
    Local(Weak<End>),
    Remote(Rc<dyn FrameSink>),
    None,
}

enum Role {
    Fresh(VecDeque<Frame>),
    Accepted,
    Hibernatable(Weak<dyn Acceptor>),
    Proxy(Rc<dyn FrameSink>),
}

struct End {
    serial: u64,
    peer: RefCell<Peer>,
    role: RefCell<Role>,
    used_in_response: Cell<bool>,
    /// The response carrying the end reached the caller of `fetch`, who may accept it.
    handed_over: Cell<bool>,
    sent_close: Cell<bool>,
    closed: Cell<bool>,
    events: RefCell<VecDeque<WebSocketEvent>>,
    arrived: Notify,
    attachment: RefCell<Option<Vec<u8>>>,
    tags: RefCell<Vec<String>>,
    /// The number the object's registry gave it when it was accepted.
    accept_number: Cell<u64>,
    auto_response_at: Cell<Option<i64>>,
    /// Called when a frame reaches an end accepted inside an object (the object's eviction timer).
    observer: RefCell<Option<Rc<dyn Fn()>>>,
}

impl Drop for End {
    /// An end dropped while connected drops the connection: its peer sees 1006.
    fn drop(&mut self) {
        if self.closed.get() {
            return;
        }
        let peer = std::mem::replace(&mut *self.peer.borrow_mut(), Peer::None);
        match peer {
            Peer::Local(p) => {
                if let Some(p) = p.upgrade() {
                    WebSocket { end: p }.receive(Frame::Dropped);
                }
            }
            Peer::Remote(sink) => sink.send(Frame::Dropped),
            Peer::None => {}
        }
    }
}

/// One end of a WebSocket connection (workers-rs `WebSocket`). Cheap to clone: clones are the same end.
#[derive(Clone)]
pub struct WebSocket {
    end: Rc<End>,
}

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebSocket(#{})", self.end.serial)
    }
}

impl PartialEq for WebSocket {
    fn eq(&self, other: &WebSocket) -> bool {
        Rc::ptr_eq(&self.end, &other.end)
    }
}

impl Eq for WebSocket {}

/// A [`WebSocket`] that does not keep its end alive (a client's session holds its end so: dropped by its
/// holder, the end drops the connection).
#[derive(Clone)]
pub(crate) struct WeakWebSocket(Weak<End>);

impl WeakWebSocket {
    /// The end, if someone still holds it.
    pub(crate) fn upgrade(&self) -> Option<WebSocket> {
        self.0.upgrade().map(|end| WebSocket { end })
    }
}

/// The two ends of a new connection (workers-rs `WebSocketPair`): the object keeps `server` and answers the
/// request with `client` ([`Response::from_websocket`](crate::http::Response::from_websocket)).
#[derive(Debug)]
pub struct WebSocketPair {
    /// The end the object answers the request with.
    pub client: WebSocket,
    /// The end the object accepts.
    pub server: WebSocket,
}

impl WebSocketPair {
    /// A new connection between two fresh ends.
    pub fn new() -> Result<WebSocketPair, Error> {
        let client = WebSocket::fresh(Peer::None);
        let server = WebSocket::fresh(Peer::Local(Rc::downgrade(&client.end)));
        *client.end.peer.borrow_mut() = Peer::Local(Rc::downgrade(&server.end));
        Ok(WebSocketPair { client, server })
    }
}

impl WebSocket {
    fn fresh(peer: Peer) -> WebSocket {
        let serial = NEXT_SERIAL.with(|n| {
            n.set(n.get() + 1);
            n.get()
        });
        WebSocket {
            end: Rc::new(End {
                serial,
                peer: RefCell::new(peer),
                role: RefCell::new(Role::Fresh(VecDeque::new())),
                used_in_response: Cell::new(false),
                handed_over: Cell::new(false),
                sent_close: Cell::new(false),
                closed: Cell::new(false),
                events: RefCell::new(VecDeque::new()),
                arrived: Notify::new(),
                attachment: RefCell::new(None),
                tags: RefCell::new(Vec::new()),
                accept_number: Cell::new(0),
                auto_response_at: Cell::new(None),
                observer: RefCell::new(None),
            }),
        }
    }

    /// A handle that does not keep the end alive.
    pub(crate) fn downgrade(&self) -> WeakWebSocket {
        WeakWebSocket(Rc::downgrade(&self.end))
    }

    /// A fresh end whose peer is across the network, behind `sink` (a client's end of a session).
    pub(crate) fn remote(sink: Rc<dyn FrameSink>) -> WebSocket {
        WebSocket::fresh(Peer::Remote(sink))
    }

    /// Accepts the end as a non-hibernatable socket (workers-rs `accept`): its events are read with
    /// [`WebSocket::next_event`]. Frames that arrived before wait for it. Inside an object, the socket keeps
    /// the object from hibernating: it is evicted after 70–140 s without events instead (spec §5.1), and
    /// the socket closes then. Accepting twice does nothing.
    pub fn accept(&self) -> Result<(), Error> {
        if self.end.used_in_response.get() && !self.end.handed_over.get() {
            return Err(Error::type_error(messages::WS_ACCEPT_USED_IN_RESPONSE));
        }
        let buffered = {
            let mut role = self.end.role.borrow_mut();
            match &mut *role {
                Role::Accepted | Role::Proxy(_) => return Ok(()),
                Role::Hibernatable(_) => {
                    return Err(Error::type_error(messages::WS_ACCEPT_AFTER_HIBERNATION))
                }
                Role::Fresh(buffer) => {
                    let buffered = std::mem::take(buffer);
                    *role = Role::Accepted;
                    buffered
                }
            }
        };
        if let Some(scope) = current_scope() {
            scope.adopt(self);
        }
        for frame in buffered {
            self.receive(frame);
        }
        Ok(())
    }

    /// Makes the end hibernatable, its events going to `acceptor` (`State::accept_web_socket`, which checked
    /// the spec's conditions first). Frames that arrived before are delivered now.
    pub(crate) fn accept_hibernatable(&self, acceptor: Weak<dyn Acceptor>, number: u64, tags: Vec<String>) {
        let buffered = {
            let mut role = self.end.role.borrow_mut();
            let Role::Fresh(buffer) = &mut *role else { unreachable!("checked by the caller: a fresh end") };
            let buffered = std::mem::take(buffer);
            *role = Role::Hibernatable(acceptor);
            buffered
        };
        self.end.accept_number.set(number);
        *self.end.tags.borrow_mut() = tags;
        for frame in buffered {
            self.receive(frame);
        }
    }

    /// Why `State::accept_web_socket` may not take this end, if it may not (spec §5.2).
    pub(crate) fn hibernation_refused(&self) -> Option<Error> {
        if !matches!(&*self.end.role.borrow(), Role::Fresh(_)) {
            return Some(Error::new(messages::WS_ALREADY_ACCEPTED));
        }
        let pair_used = match &*self.end.peer.borrow() {
            Peer::Local(peer) => peer
                .upgrade()
                .is_some_and(|p| p.used_in_response.get() || !matches!(&*p.role.borrow(), Role::Fresh(_))),
            _ => false,
        };
        pair_used.then(|| Error::new(messages::WS_PAIR_USED))
    }

    /// Whether the end is hibernatable (accepted with `State::accept_web_socket`).
    pub(crate) fn is_hibernatable(&self) -> bool {
        matches!(&*self.end.role.borrow(), Role::Hibernatable(_))
    }

    /// Whether the end was accepted with [`WebSocket::accept`].
    pub(crate) fn is_accepted_plain(&self) -> bool {
        matches!(&*self.end.role.borrow(), Role::Accepted)
    }

    /// Marks the end as put in a response (its pair may no longer be accepted, spec §5.2).
    pub(crate) fn mark_used_in_response(&self) {
        self.end.used_in_response.set(true);
    }

    /// The response carrying the end reached the caller of `fetch` on this host: the caller may accept it
    /// (the object, which put it in the response, still may not).
    pub(crate) fn hand_over(&self) {
        self.end.handed_over.set(true);
    }

    /// Binds the end to a network session: what its peer sends goes to `sink`.
    pub(crate) fn bind_proxy(&self, sink: Rc<dyn FrameSink>) {
        let buffered = {
            let mut role = self.end.role.borrow_mut();
            let Role::Fresh(buffer) = &mut *role else { unreachable!("a response's end is fresh") };
            let buffered = std::mem::take(buffer);
            *role = Role::Proxy(sink.clone());
            buffered
        };
        for frame in buffered {
            sink.send(frame);
        }
    }

    /// Calls `f` whenever a frame reaches this (accepted) end.
    pub(crate) fn observe_frames(&self, f: Rc<dyn Fn()>) {
        *self.end.observer.borrow_mut() = Some(f);
    }

    /// The number its object's registry gave this end when it was accepted (for traces).
    pub(crate) fn accept_number(&self) -> u64 {
        self.end.accept_number.get()
    }

    /// Sends a text message (workers-rs `send_with_str`).
    pub fn send_with_str(&self, text: impl Into<String>) -> Result<(), Error> {
        self.send_frame_checked(Frame::Message(WebSocketIncomingMessage::String(text.into())))
    }

    /// Sends a binary message (workers-rs `send_with_bytes`).
    pub fn send_with_bytes(&self, bytes: impl Into<Vec<u8>>) -> Result<(), Error> {
        self.send_frame_checked(Frame::Message(WebSocketIncomingMessage::Binary(bytes.into())))
    }

    /// Sends `message`.
    pub fn send(&self, message: WebSocketIncomingMessage) -> Result<(), Error> {
        self.send_frame_checked(Frame::Message(message))
    }

    fn ensure_accepted(&self) -> Result<(), Error> {
        match &*self.end.role.borrow() {
            Role::Fresh(_) => Err(Error::type_error(messages::WS_NOT_ACCEPTED)),
            _ => Ok(()),
        }
    }

    fn send_frame_checked(&self, frame: Frame) -> Result<(), Error> {
        self.ensure_accepted()?;
        if self.end.sent_close.get() {
            return Err(Error::type_error(messages::WS_SEND_AFTER_CLOSE));
        }
        if self.end.closed.get() {
            // The peer is gone: workerd drops the message without an error.
            return Ok(());
        }
        self.out(frame);
        Ok(())
    }

    /// Sends `frame` now, or (inside an object's turn) once the object's output gate allows.
    fn out(&self, frame: Frame) {
        let me = self.clone();
        match current_scope() {
            Some(scope) => scope.hold(Box::new(move || me.transmit(frame))),
            None => self.transmit(frame),
        }
    }

    /// Closes the connection (workers-rs `close`): sends a Close frame with `code` (default 1000) and
    /// `reason`. Closing a closed socket does nothing.
    pub fn close(&self, code: Option<u16>, reason: Option<&str>) -> Result<(), Error> {
        if let Some(code) = code {
            if !(1000..=4999).contains(&code) || matches!(code, 1004 | 1005 | 1006 | 1015) {
                return Err(Error::of(ErrorKind::InvalidAccessError, messages::ws_invalid_close_code(code)));
            }
        }
        let reason = reason.unwrap_or("");
        if reason.len() > CLOSE_REASON_BYTES_MAX {
            return Err(Error::of(ErrorKind::SyntaxError, messages::WS_CLOSE_REASON_TOO_LONG));
        }
        if !reason.is_empty() && code.is_none() {
            return Err(Error::of(
                ErrorKind::InvalidAccessError,
                "If you specify a WebSocket close reason, you must also specify a code.",
            ));
        }
        self.ensure_accepted()?;
        if self.end.sent_close.get() || self.end.closed.get() {
            return Ok(());
        }
        self.end.sent_close.set(true);
        self.out(Frame::Close { code: code.unwrap_or(CLOSE_NO_STATUS), reason: reason.to_string() });
        Ok(())
    }

    /// The next event of an end accepted with [`WebSocket::accept`], waiting for one; `None` once the
    /// connection closed and every event was read.
    pub async fn next_event(&self) -> Option<WebSocketEvent> {
        loop {
            let notified = self.end.arrived.notified();
            if let Some(e) = self.end.events.borrow_mut().pop_front() {
                return Some(e);
            }
            if self.end.closed.get() {
                return None;
            }
            notified.await;
        }
    }

    /// The events that arrived and were not read yet, without waiting.
    pub fn take_events(&self) -> Vec<WebSocketEvent> {
        self.end.events.borrow_mut().drain(..).collect()
    }

    /// Whether the connection is closed (both Close frames exchanged, or dropped).
    pub fn is_closed(&self) -> bool {
        self.end.closed.get()
    }

    /// Stores a copy of `value` with the socket (workers-rs `serialize_attachment`): it survives
    /// hibernation, and is gone when the socket closes. At most [`ATTACHMENT_SIZE_MAX`] bytes serialized
    /// (CBOR).
    pub fn serialize_attachment<T: Serialize>(&self, value: &T) -> Result<(), Error> {
        let mut bytes = Vec::new();
        ciborium::into_writer(value, &mut bytes)
            .map_err(|e| Error::type_error(format!("The attachment could not be serialized: {e}")))?;
        if bytes.len() > ATTACHMENT_SIZE_MAX {
            return Err(Error::new(messages::ws_attachment_too_large(bytes.len())));
        }
        *self.end.attachment.borrow_mut() = Some(bytes);
        Ok(())
    }

    /// The attachment stored with [`WebSocket::serialize_attachment`], if any (workers-rs
    /// `deserialize_attachment`).
    pub fn deserialize_attachment<T: DeserializeOwned>(&self) -> Result<Option<T>, Error> {
        let bytes = self.end.attachment.borrow().clone();
        match bytes {
            None => Ok(None),
            Some(b) => ciborium::from_reader(&b[..])
                .map(Some)
                .map_err(|e| Error::type_error(format!("The attachment could not be deserialized: {e}"))),
        }
    }

    /// The tags the end was accepted with.
    pub(crate) fn tags(&self) -> Vec<String> {
        self.end.tags.borrow().clone()
    }

    /// Whether the end was accepted with `tag`.
    pub(crate) fn has_tag(&self, tag: &str) -> bool {
        self.end.tags.borrow().iter().any(|t| t == tag)
    }

    /// When the runtime last answered this end with the auto-response, in ms since the epoch.
    pub(crate) fn auto_response_timestamp(&self) -> Option<i64> {
        self.end.auto_response_at.get()
    }

    /// Answers a request with the auto-response `response` at `now_ms`, without the object.
    pub(crate) fn auto_respond(&self, response: &str, now_ms: i64) {
        self.end.auto_response_at.set(Some(now_ms));
        self.transmit(Frame::Message(WebSocketIncomingMessage::String(response.to_string())));
    }

    /// Drops the connection without a Close frame (its object was reset, evicted with it, or its host lost
    /// the object): the peer sees 1006.
    pub(crate) fn drop_connection(&self) {
        if self.end.closed.replace(true) {
            return;
        }
        *self.end.attachment.borrow_mut() = None;
        self.transmit(Frame::Dropped);
        self.end.arrived.notify_waiters();
    }

    /// Sends `frame` to the peer, now.
    pub(crate) fn transmit(&self, frame: Frame) {
        let peer = match &*self.end.peer.borrow() {
            Peer::Local(p) => p.upgrade().map(|p| WebSocket { end: p }).map(Ok),
            Peer::Remote(sink) => Some(Err(sink.clone())),
            Peer::None => None,
        };
        match peer {
            Some(Ok(p)) => p.receive(frame),
            Some(Err(sink)) => sink.send(frame),
            None => {}
        }
    }

    /// A frame from the peer reached this end.
    pub(crate) fn receive(&self, frame: Frame) {
        enum Route {
            Buffered,
            Forward(Rc<dyn FrameSink>),
            Read,
            Object(Weak<dyn Acceptor>),
        }
        let route = {
            let mut role = self.end.role.borrow_mut();
            match &mut *role {
                Role::Fresh(buffer) => {
                    buffer.push_back(frame.clone());
                    Route::Buffered
                }
                Role::Proxy(sink) => Route::Forward(sink.clone()),
                Role::Accepted => Route::Read,
                Role::Hibernatable(a) => Route::Object(a.clone()),
            }
        };
        let route = match route {
            Route::Buffered => return,
            Route::Forward(sink) => {
                if matches!(frame, Frame::Dropped) {
                    self.end.closed.set(true);
                }
                sink.send(frame);
                return;
            }
            other => other,
        };
        if self.end.closed.get() {
            return;
        }
        let event = match frame {
            Frame::Message(m) if m.len() > MESSAGE_SIZE_MAX => {
                let description = format!("Message is too large: {} > {MESSAGE_SIZE_MAX}", m.len());
                self.end.closed.set(true);
                self.end.sent_close.set(true);
                self.transmit(Frame::Close { code: CLOSE_TOO_BIG, reason: description });
                WebSocketEvent::Error(Error::new(messages::ws_message_too_large(m.len(), MESSAGE_SIZE_MAX)))
            }
            Frame::Message(m) => WebSocketEvent::Message(m),
            Frame::Close { code, reason } => {
                self.end.closed.set(true);
                if !self.end.sent_close.replace(true) {
                    // The runtime answers a Close frame itself (`web_socket_auto_reply_to_close`).
                    self.transmit(Frame::Close { code, reason: reason.clone() });
                }
                WebSocketEvent::Close(CloseEvent { code, reason, was_clean: true })
            }
            Frame::Dropped => {
                self.end.closed.set(true);
                WebSocketEvent::Close(CloseEvent {
                    code: CLOSE_ABNORMAL,
                    reason: messages::WS_DISCONNECTED.to_string(),
                    was_clean: false,
                })
            }
        };
        match route {
            Route::Read => {
                self.end.events.borrow_mut().push_back(event);
                self.end.arrived.notify_waiters();
                let observer = self.end.observer.borrow().clone();
                if let Some(f) = observer {
                    f();
                }
            }
            Route::Object(acceptor) => {
                if let Some(a) = acceptor.upgrade() {
                    a.on_event(self, event);
                }
            }
            Route::Buffered | Route::Forward(_) => unreachable!("returned above"),
        }
    }
}

#[cfg(test)]
mod tests;
