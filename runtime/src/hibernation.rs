//! An object's sockets (spec §5.2, workerd's hibernation manager): the registry that outlives the object's
//! memory.
//!
//! The host keeps one [`ObjectSockets`] per object with sockets. It holds the hibernatable sockets (accepted
//! with `State::accept_web_socket`, with their tags and attachments), the non-hibernatable ones accepted
//! inside the object, the auto-response and the event timeout. When the object hibernates its instance
//! ends, and the registry stays: its sockets stay connected, and the next event on one of them starts a new
//! instance, which finds them all again. An auto-response request is answered here, without an instance.
//!
//! It also holds the object's output for sockets ([`HeldOutput`]): a frame sent during an event waits for
//! the output gate, in send order.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{messages, Error};
use crate::gate::{GateWait, OutputGate};
use crate::websocket::{Acceptor, SocketScope, WebSocket, WebSocketEvent, WebSocketIncomingMessage};
use crate::world::Clock;

/// How many sockets one object may accept (spec §5.2).
pub(crate) const SOCKETS_PER_OBJECT_MAX: usize = 32_768;
/// How many distinct tags one socket may have (spec §5.2).
pub(crate) const TAGS_PER_SOCKET_MAX: usize = 10;
/// The longest tag, in characters (spec §5.2).
pub(crate) const TAG_CHARS_MAX: usize = 256;
/// The largest auto-response request and response, in bytes each (spec §5.2).
pub(crate) const AUTO_RESPONSE_BYTES_MAX: usize = 2_048;
/// The longest hibernatable event timeout, in ms: 7 days (spec §5.2).
pub(crate) const EVENT_TIMEOUT_MS_MAX: u64 = 604_800_000;
/// An idle object with non-hibernatable sockets is evicted after 70 s to 140 s without events (spec §5.1):
/// the low end.
pub(crate) const UNHIBERNATABLE_IDLE_MIN: Duration = Duration::from_secs(70);
/// The high end of [`UNHIBERNATABLE_IDLE_MIN`]'s range.
pub(crate) const UNHIBERNATABLE_IDLE_MAX: Duration = Duration::from_secs(140);

/// The auto-response pair (workers-rs `WebSocketRequestResponsePair`): a text message equal to `request` is
/// answered with `response` by the runtime, without waking the object (spec §5.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebSocketRequestResponsePair {
    request: String,
    response: String,
}

impl WebSocketRequestResponsePair {
    /// A pair; each side at most 2,048 bytes (RangeError with the spec's message otherwise).
    pub fn new(request: &str, response: &str) -> Result<WebSocketRequestResponsePair, Error> {
        if request.len() > AUTO_RESPONSE_BYTES_MAX {
            return Err(Error::range_error(messages::ws_auto_request_too_large(request.len())));
        }
        if response.len() > AUTO_RESPONSE_BYTES_MAX {
            return Err(Error::range_error(messages::ws_auto_response_too_large(response.len())));
        }
        Ok(WebSocketRequestResponsePair { request: request.to_string(), response: response.to_string() })
    }

    /// The request text.
    pub fn request(&self) -> &str {
        &self.request
    }

    /// The response text.
    pub fn response(&self) -> &str {
        &self.response
    }
}

/// Where the registry hands the events for the object's handlers: the host, which wakes the object.
pub(crate) type EventSink = Rc<dyn Fn(WebSocket, WebSocketEvent)>;

/// An object's sockets; see the module docs.
pub(crate) struct ObjectSockets {
    label: Rc<str>,
    clock: Arc<dyn Clock>,
    hibernatable: RefCell<BTreeMap<u64, WebSocket>>,
    unhibernatable: RefCell<Vec<WebSocket>>,
    next_number: Cell<u64>,
    auto_response: RefCell<Option<WebSocketRequestResponsePair>>,
    event_timeout_ms: Cell<Option<u64>>,
    held: RefCell<Option<Rc<HeldOutput>>>,
    events: RefCell<Option<EventSink>>,
    /// How long an idle object with non-hibernatable sockets lives (drawn once, in 70–140 s).
    unhibernatable_idle: Duration,
    /// A frame reached a non-hibernatable socket: activity for the eviction timer.
    pub(crate) frame_arrived: Rc<madsim_tokio::sync::Notify>,
    /// When a frame last reached a non-hibernatable socket.
    pub(crate) last_frame: Rc<Cell<Option<madsim_tokio::time::Instant>>>,
}

impl ObjectSockets {
    /// An empty registry for the object traces name `label`; `jitter` in [0, 1] picks its idle time for
    /// non-hibernatable sockets within 70–140 s.
    pub(crate) fn new(label: Rc<str>, clock: Arc<dyn Clock>, jitter: f64) -> Rc<ObjectSockets> {
        let span = UNHIBERNATABLE_IDLE_MAX - UNHIBERNATABLE_IDLE_MIN;
        Rc::new(ObjectSockets {
            label,
            clock,
            hibernatable: RefCell::new(BTreeMap::new()),
            unhibernatable: RefCell::new(Vec::new()),
            next_number: Cell::new(0),
            auto_response: RefCell::new(None),
            event_timeout_ms: Cell::new(None),
            held: RefCell::new(None),
            events: RefCell::new(None),
            unhibernatable_idle: UNHIBERNATABLE_IDLE_MIN + span.mul_f64(jitter.clamp(0.0, 1.0)),
            frame_arrived: Rc::new(madsim_tokio::sync::Notify::new()),
            last_frame: Rc::new(Cell::new(None)),
        })
    }

    /// Sets where events for the object's handlers go.
    pub(crate) fn set_event_sink(&self, sink: EventSink) {
        *self.events.borrow_mut() = Some(sink);
    }

    /// A new instance starts: its output gate holds the sockets' output.
    pub(crate) fn instance_started(&self, output: OutputGate) {
        *self.held.borrow_mut() = Some(HeldOutput::new(output));
    }

    /// The instance ended. `hibernating`: it was evicted, and its hibernatable sockets stay connected (its
    /// non-hibernatable ones drop); otherwise (a reset) every socket drops (workerd drops the hibernation
    /// manager with a broken actor: clients see 1006).
    pub(crate) fn instance_ended(&self, hibernating: bool) {
        let held = self.held.borrow_mut().take();
        if let (true, Some(held)) = (hibernating, held) {
            // An eviction waits for every output lock: what is still queued was released, only not sent yet.
            held.flush_released();
        }
        let unhibernatable = std::mem::take(&mut *self.unhibernatable.borrow_mut());
        for ws in unhibernatable {
            ws.drop_connection();
        }
        if !hibernating {
            self.drop_all();
        } else if !self.hibernatable.borrow().is_empty() {
            tracing::debug!(
                target: "dosim::runtime",
                "{} hibernates with {} sockets", self.label, self.hibernatable.borrow().len()
            );
        }
    }

    /// Drops every socket (the host lost the object or shut down).
    pub(crate) fn drop_all(&self) {
        let sockets = std::mem::take(&mut *self.hibernatable.borrow_mut());
        if !sockets.is_empty() {
            tracing::debug!(target: "dosim::runtime", "{} drops {} sockets", self.label, sockets.len());
        }
        for ws in sockets.into_values() {
            ws.drop_connection();
        }
        for ws in std::mem::take(&mut *self.unhibernatable.borrow_mut()) {
            ws.drop_connection();
        }
    }

    /// Whether the registry holds nothing an instance would need after this one (no socket, no setting).
    pub(crate) fn is_unused(&self) -> bool {
        self.hibernatable.borrow().is_empty()
            && self.unhibernatable.borrow().is_empty()
            && self.auto_response.borrow().is_none()
            && self.event_timeout_ms.get().is_none()
    }

    /// How long the object may stay idle before it is evicted, given its sockets: `None` when it has none
    /// (the host's usual idle timeout applies), the 70–140 s of spec §5.1 with a non-hibernatable socket
    /// open. With only hibernatable sockets the usual 10 s apply: then it hibernates.
    pub(crate) fn idle_override(&self) -> Option<Duration> {
        self.unhibernatable.borrow_mut().retain(|ws| !ws.is_closed());
        (!self.unhibernatable.borrow().is_empty()).then_some(self.unhibernatable_idle)
    }

    /// `State::accept_web_socket`: checks the spec's conditions and limits, then makes `ws` hibernatable.
    pub(crate) fn accept(self: &Rc<Self>, ws: &WebSocket, tags: &[&str]) -> Result<(), Error> {
        if let Some(e) = ws.hibernation_refused() {
            return Err(e);
        }
        let mut distinct: Vec<String> = Vec::new();
        for tag in tags {
            if tag.chars().count() > TAG_CHARS_MAX {
                return Err(Error::new(messages::ws_tag_too_long(tag)));
            }
            if !distinct.iter().any(|t| t == tag) {
                distinct.push(tag.to_string());
            }
        }
        if distinct.len() > TAGS_PER_SOCKET_MAX {
            return Err(Error::new(messages::WS_TOO_MANY_TAGS));
        }
        // Pruned only at the limit: pruning on every accept made accepting n sockets O(n²) (32,768 accepts
        // took most of a minute). Closes remove their sockets as they arrive; the prune is a backstop.
        if self.hibernatable.borrow().len() >= SOCKETS_PER_OBJECT_MAX {
            self.prune();
        }
        if self.hibernatable.borrow().len() >= SOCKETS_PER_OBJECT_MAX {
            return Err(Error::new(messages::WS_TOO_MANY_SOCKETS));
        }
        let number = self.next_number.get() + 1;
        self.next_number.set(number);
        tracing::debug!(target: "dosim::runtime", "{} accepts socket {number} tags {distinct:?}", self.label);
        self.hibernatable.borrow_mut().insert(number, ws.clone());
        let acceptor: Weak<dyn Acceptor> = {
            let weak: Weak<ObjectSockets> = Rc::downgrade(self);
            weak
        };
        ws.accept_hibernatable(acceptor, number, distinct);
        Ok(())
    }

    fn prune(&self) {
        self.hibernatable.borrow_mut().retain(|_, ws| !ws.is_closed());
    }

    /// The hibernatable sockets still connected, with `tag` if given, in accept order (spec §5.2
    /// `getWebSockets`).
    pub(crate) fn sockets(&self, tag: Option<&str>) -> Vec<WebSocket> {
        self.prune();
        self.hibernatable.borrow().values().filter(|ws| tag.is_none_or(|t| ws.has_tag(t))).cloned().collect()
    }

    /// Sets or removes the auto-response.
    pub(crate) fn set_auto_response(&self, pair: Option<WebSocketRequestResponsePair>) {
        *self.auto_response.borrow_mut() = pair;
    }

    /// The auto-response, if set.
    pub(crate) fn auto_response(&self) -> Option<WebSocketRequestResponsePair> {
        self.auto_response.borrow().clone()
    }

    /// Sets the event timeout (0 or `None` clears it).
    pub(crate) fn set_event_timeout(&self, ms: Option<u64>) -> Result<(), Error> {
        match ms {
            Some(ms) if ms > EVENT_TIMEOUT_MS_MAX => Err(Error::new(messages::WS_EVENT_TIMEOUT_TOO_LONG)),
            Some(0) | None => {
                self.event_timeout_ms.set(None);
                Ok(())
            }
            Some(ms) => {
                self.event_timeout_ms.set(Some(ms));
                Ok(())
            }
        }
    }

    /// The event timeout, if set.
    pub(crate) fn event_timeout_ms(&self) -> Option<u64> {
        self.event_timeout_ms.get()
    }
}

impl Acceptor for ObjectSockets {
    fn on_event(&self, ws: &WebSocket, event: WebSocketEvent) {
        let n = ws.accept_number();
        if let WebSocketEvent::Message(WebSocketIncomingMessage::String(text)) = &event {
            let auto = self.auto_response.borrow().clone();
            if let Some(pair) = auto.filter(|p| p.request == *text) {
                tracing::debug!(target: "dosim::runtime", "{} socket {n}: auto-response", self.label);
                ws.auto_respond(&pair.response, self.clock.now_ms());
                return;
            }
        }
        match &event {
            WebSocketEvent::Message(m) => {
                tracing::debug!(target: "dosim::runtime", "{} socket {n} message ({} bytes)", self.label, m.len());
            }
            WebSocketEvent::Close(c) => {
                tracing::debug!(
                    target: "dosim::runtime",
                    "{} socket {n} closed {} {:?} clean={}", self.label, c.code, c.reason, c.was_clean
                );
                self.hibernatable.borrow_mut().remove(&n);
            }
            WebSocketEvent::Error(e) => {
                tracing::debug!(target: "dosim::runtime", "{} socket {n} error: {}", self.label, e.message());
                self.hibernatable.borrow_mut().remove(&n);
            }
        }
        let sink = self.events.borrow().clone();
        match sink {
            Some(sink) => sink(ws.clone(), event),
            None => {
                tracing::debug!(target: "dosim::runtime", "{} socket {n}: no handler; dropped", self.label)
            }
        }
    }
}

impl SocketScope for ObjectSockets {
    fn hold(&self, send: Box<dyn FnOnce()>) {
        let held = self.held.borrow().clone();
        match held {
            Some(h) => h.hold(send),
            // No instance (never inside a turn): nothing to wait for.
            None => send(),
        }
    }

    fn adopt(&self, ws: &WebSocket) {
        let arrived = Rc::downgrade(&self.frame_arrived);
        let last = Rc::downgrade(&self.last_frame);
        ws.observe_frames(Rc::new(move || {
            if let (Some(arrived), Some(last)) = (arrived.upgrade(), last.upgrade()) {
                last.set(Some(madsim_tokio::time::Instant::now()));
                arrived.notify_waiters();
            }
        }));
        self.unhibernatable.borrow_mut().push(ws.clone());
    }
}

/// A frame held behind the output gate: the wait it is released by, and what sends it.
type HeldFrame = (GateWait, Box<dyn FnOnce()>);

/// An instance's socket output: each frame waits for the output gate as it was when the frame was sent,
/// and frames leave in send order (spec §1.4, §5.2). A frame sent with nothing held and no lock pending
/// leaves at once.
pub(crate) struct HeldOutput {
    output: OutputGate,
    queue: RefCell<VecDeque<HeldFrame>>,
    draining: Cell<bool>,
}

impl HeldOutput {
    fn new(output: OutputGate) -> Rc<HeldOutput> {
        Rc::new(HeldOutput { output, queue: RefCell::new(VecDeque::new()), draining: Cell::new(false) })
    }

    /// Sends what is queued (the gate has no lock pending: every wait was released).
    fn flush_released(&self) {
        debug_assert_eq!(self.output.pending(), 0, "flushed only when no output lock is pending");
        let queued = std::mem::take(&mut *self.queue.borrow_mut());
        for (_, send) in queued {
            send();
        }
    }

    fn hold(self: &Rc<Self>, send: Box<dyn FnOnce()>) {
        if self.queue.borrow().is_empty() && self.output.pending() == 0 {
            send();
            return;
        }
        self.queue.borrow_mut().push_back((self.output.wait(), send));
        if !self.draining.replace(true) {
            let me = Rc::downgrade(self);
            // Detached on purpose: it holds the queue weakly, and ends when the queue is empty or the
            // instance (the queue's owner) is gone.
            drop(madsim_tokio::task::spawn_local(drain(me)));
        }
    }
}

async fn drain(held: Weak<HeldOutput>) {
    loop {
        let next = {
            let Some(h) = held.upgrade() else { return };
            let next = h.queue.borrow_mut().pop_front();
            if next.is_none() {
                h.draining.set(false);
            }
            next
        };
        let Some((wait, send)) = next else { return };
        match wait.await {
            Ok(()) => {
                if held.upgrade().is_some() {
                    send();
                }
            }
            Err(_) => {
                // The gate broke: held output is never sent (spec §1.4).
                if let Some(h) = held.upgrade() {
                    h.queue.borrow_mut().clear();
                    h.draining.set(false);
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::websocket::WebSocketPair;
    use crate::world::ManualClock;

    fn registry() -> Rc<ObjectSockets> {
        ObjectSockets::new(Rc::from("Room/0"), Arc::new(ManualClock::new(1_000)), 0.5)
    }

    #[test]
    fn the_auto_response_pair_keeps_both_sides_and_the_registry_answers_with_it() {
        let pair = WebSocketRequestResponsePair::new("ping", "pong").unwrap();
        assert_eq!((pair.request(), pair.response()), ("ping", "pong"));
        let sockets = registry();
        assert_eq!(sockets.auto_response(), None);
        sockets.set_auto_response(Some(pair.clone()));
        assert_eq!(sockets.auto_response(), Some(pair));
        // Answered here, with the clock's time, and never handed to the object.
        let ws = WebSocketPair::new().unwrap();
        sockets.accept(&ws.server, &[]).unwrap();
        let handed = Rc::new(Cell::new(0));
        let count = handed.clone();
        sockets.set_event_sink(Rc::new(move |_, _| count.set(count.get() + 1)));
        ws.client.accept().unwrap();
        ws.client.send_with_str("ping").unwrap();
        assert_eq!(
            ws.client.take_events(),
            vec![WebSocketEvent::Message(WebSocketIncomingMessage::String("pong".into()))]
        );
        assert_eq!(ws.server.auto_response_timestamp(), Some(1_000));
        assert_eq!(handed.get(), 0, "the object was not woken");
        ws.client.send_with_str("pin").unwrap();
        assert_eq!(handed.get(), 1, "anything else goes to the object");
        sockets.set_auto_response(None);
        ws.client.send_with_str("ping").unwrap();
        assert_eq!(handed.get(), 2, "removed: a ping is a message like any other");
    }

    #[test]
    fn the_non_hibernatable_idle_time_is_within_70_to_140_seconds() {
        for (jitter, expected) in [(0.0, 70), (0.5, 105), (1.0, 140), (7.0, 140)] {
            let s = ObjectSockets::new(Rc::from("Room/0"), Arc::new(ManualClock::new(0)), jitter);
            assert_eq!(s.unhibernatable_idle, Duration::from_secs(expected), "jitter {jitter}");
        }
    }
}
