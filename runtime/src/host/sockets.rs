//! The host's side of objects' WebSockets (spec §5.2): each object's socket registry, and the events of its
//! hibernatable sockets, delivered to its instance (started again if it hibernated) in arrival order.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::alarm::AlarmKey;
use crate::error::{messages, Error};
use crate::hibernation::{EventSink, ObjectSockets};
use crate::id::ObjectId;
use crate::instance::{EventKind, Instance};
use crate::websocket::{WebSocket, WebSocketEvent};

use super::{ClassEntry, Container, HostInner};

/// The events waiting for an object's instance.
#[derive(Default)]
struct Inbox {
    queue: RefCell<VecDeque<(WebSocket, WebSocketEvent)>>,
    pumping: Cell<bool>,
}

impl HostInner {
    /// The object's socket registry, created (empty) if it has none.
    pub(super) fn sockets_of(self: &Rc<Self>, container: &Container) -> Rc<ObjectSockets> {
        if let Some(s) = self.sockets.borrow().get(&container.key) {
            return s.clone();
        }
        let label = crate::instance::trace_label(&container.class.namespace.class_name, &container.id);
        // Where in 70–140 s this object's idle time falls: from its id, so that making a registry draws nothing
        // from the world's randomness (every instance has one).
        let b = container.id.as_bytes();
        let draw = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        let jitter = (draw >> 11) as f64 / (1u64 << 53) as f64;
        let sockets = ObjectSockets::new(label, self.clock.clone(), jitter);
        let inbox = Rc::new(Inbox::default());
        let host = Rc::downgrade(self);
        let class = container.class.clone();
        let id = container.id.clone();
        let registry = Rc::downgrade(&sockets);
        let sink: EventSink = Rc::new(move |ws, event| {
            inbox.queue.borrow_mut().push_back((ws, event));
            if inbox.pumping.replace(true) {
                return;
            }
            let Some(h) = host.upgrade() else { return };
            let pump = pump(host.clone(), class.clone(), id.clone(), registry.clone(), inbox.clone());
            h.spawn_task(pump);
        });
        sockets.set_event_sink(sink);
        self.sockets.borrow_mut().insert(container.key.clone(), sockets.clone());
        sockets
    }

    /// Forgets the object's registry if nothing in it is needed any more (after an eviction), or at once
    /// (after a reset, which dropped its sockets).
    pub(super) fn release_sockets(&self, key: &AlarmKey, reset: bool) {
        let mut map = self.sockets.borrow_mut();
        if map.get(key).is_some_and(|s| reset || s.is_unused()) {
            map.remove(key);
        }
    }

    /// Drops every socket of every object on this host (it shut down, or lost its objects).
    pub(super) fn drop_all_sockets(&self) {
        let all: Vec<Rc<ObjectSockets>> =
            std::mem::take(&mut *self.sockets.borrow_mut()).into_values().collect();
        for s in all {
            s.drop_all();
        }
    }

    /// The instance socket events of object `id` go to: the live one, or a new one (it hibernated). `None`:
    /// this host may not run the object now.
    async fn socket_instance(
        self: &Rc<Self>,
        class: &Rc<ClassEntry>,
        id: &ObjectId,
    ) -> Result<Option<Rc<Instance>>, Error> {
        if self.closed.get() {
            return Ok(None);
        }
        if self.cluster.is_some() {
            return Ok(self.activate(class, id).await?.ok().map(|(instance, _)| instance));
        }
        self.route(class, id, None)?.instance().map(Some)
    }

    /// Delivers a socket's event to `instance` as an event of the object, under the hibernatable event
    /// timeout if one is set.
    fn deliver_socket_event(self: &Rc<Self>, instance: &Rc<Instance>, ws: WebSocket, event: WebSocketEvent) {
        let what = match &event {
            WebSocketEvent::Message(m) => {
                format!("websocket message on socket {} ({} bytes)", ws.accept_number(), m.len())
            }
            WebSocketEvent::Close(c) => {
                format!("websocket close on socket {} ({})", ws.accept_number(), c.code)
            }
            WebSocketEvent::Error(_) => format!("websocket error on socket {}", ws.accept_number()),
        };
        let bytes = match &event {
            WebSocketEvent::Message(m) => m.len(),
            _ => 0,
        };
        let timeout = instance.sockets.event_timeout_ms().map(Duration::from_millis);
        let target = Rc::downgrade(instance);
        let done = instance.deliver(EventKind::Request, bytes, what, move |object| {
            let run = object.websocket(ws, event);
            Box::pin(async move {
                let Some(limit) = timeout else { return run.await };
                match madsim_tokio::time::timeout(limit, run).await {
                    Ok(r) => r,
                    Err(_) => {
                        let e = Error::new(messages::WS_EVENT_TIMEOUT).with_retryable().with_reset();
                        if let Some(i) = target.upgrade() {
                            i.reset(e.clone());
                        }
                        Err(e)
                    }
                }
            })
        });
        let label = instance.label.clone();
        self.spawn_task(async move {
            if let Err(e) = done.await {
                tracing::debug!(target: "dosim::runtime", "{label} websocket handler failed: {}", e.message());
            }
        });
    }
}

/// Hands an object's queued socket events to its instance, in order, until none is left.
async fn pump(
    host: Weak<HostInner>,
    class: Rc<ClassEntry>,
    id: ObjectId,
    registry: Weak<ObjectSockets>,
    inbox: Rc<Inbox>,
) {
    loop {
        if inbox.queue.borrow().is_empty() {
            inbox.pumping.set(false);
            return;
        }
        let Some(h) = host.upgrade() else { return };
        let instance = h.socket_instance(&class, &id).await;
        match instance {
            Ok(Some(instance)) => {
                let events: Vec<_> = inbox.queue.borrow_mut().drain(..).collect();
                for (ws, event) in events {
                    h.deliver_socket_event(&instance, ws, event);
                }
            }
            Ok(None) | Err(_) => {
                // The object cannot run here any more: its sockets drop (their clients see 1006).
                tracing::debug!(target: "dosim::runtime", "{id}: socket events with no instance to run them; sockets drop");
                inbox.queue.borrow_mut().clear();
                if let Some(r) = registry.upgrade() {
                    r.drop_all();
                }
            }
        }
    }
}
