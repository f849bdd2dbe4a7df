//! What an object gets from the runtime (`ctx` / `state` on Cloudflare): its id, its storage, critical
//! sections, background tasks, `abort`, and the world's time and randomness.

use std::future::Future;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use crate::error::{messages, Error};
use crate::future::LocalFuture;
use crate::hibernation::{ObjectSockets, WebSocketRequestResponsePair};
use crate::id::ObjectId;
use crate::storage::Storage;
use crate::turn::critical_section;
use crate::websocket::WebSocket;
use crate::world::{Clock, Entropy};

/// What a [`State`] asks of the live instance it belongs to. The instance implements it; the state holds it
/// weakly, so the user's API never reaches into the event loop's types.
pub(crate) trait InstanceControl {
    /// Runs `task` as a `wait_until` event (spec §10).
    fn wait_until(self: Rc<Self>, task: LocalFuture<'static, ()>);
    /// Resets the instance with `error`; [`AlarmRetry::Abandon`] gives a running alarm up (spec §4).
    fn abort(self: Rc<Self>, error: Error, alarm: AlarmRetry);
}

/// What `abort` does to an alarm whose handler is running (spec §4 `retryAlarm`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AlarmRetry {
    /// The alarm is retried, as after a failed handler (the default).
    #[default]
    Retry,
    /// The alarm is given up: deleted, with no retry.
    Abandon,
}

/// The state of one object instance (workers-rs `State`). Cheap to clone.
#[derive(Clone)]
pub struct State {
    inner: Rc<StateInner>,
}

struct StateInner {
    id: ObjectId,
    storage: Storage,
    instance: Weak<dyn InstanceControl>,
    clock: Arc<dyn Clock>,
    entropy: Rc<dyn Entropy>,
    sockets: Rc<ObjectSockets>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("id", &self.inner.id).finish_non_exhaustive()
    }
}

impl State {
    pub(crate) fn new(
        id: ObjectId,
        storage: Storage,
        instance: Weak<dyn InstanceControl>,
        clock: Arc<dyn Clock>,
        entropy: Rc<dyn Entropy>,
        sockets: Rc<ObjectSockets>,
    ) -> State {
        State { inner: Rc::new(StateInner { id, storage, instance, clock, entropy, sockets }) }
    }

    /// The object's id (`ctx.id`).
    pub fn id(&self) -> &ObjectId {
        &self.inner.id
    }

    /// The object's storage (`ctx.storage`).
    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    /// Runs `f` with no other event delivered to the object until it settles (spec §1.3, §10), and returns
    /// its result.
    ///
    /// - Longer than 30 s, and the object is reset with the spec's overloaded error.
    /// - If `f` fails, the input gate breaks and the object is reset: this call then never returns (its event
    ///   is cancelled), and callers get the error.
    /// - Nested more than 64 deep, it fails at once with `blockConcurrencyWhile() calls are nested too
    ///   deeply.`, without resetting.
    /// - Called outside an event of this object (from a task it spawned itself), it fails.
    ///
    /// Cancel safety: dropping the returned future while `f` runs leaves the critical section running with
    /// no one to end it; the gate then breaks with the spec's deadlock error, as on Cloudflare.
    pub async fn block_concurrency_while<R>(
        &self,
        f: impl Future<Output = Result<R, Error>>,
    ) -> Result<R, Error> {
        critical_section(f).await
    }

    /// Runs `task` in the background (spec §10 `waitUntil`): it is cancelled only when the instance ends, and
    /// keeps an idle object alive for at most 15 minutes. Its turns run under the input gate like any
    /// event's.
    pub fn wait_until(&self, task: impl Future<Output = ()> + 'static) {
        if let Some(instance) = self.inner.instance.upgrade() {
            instance.wait_until(Box::pin(task));
        }
    }

    /// Resets the object at once (spec §10 `ctx.abort`): storage shuts down (unflushed and uncommitted writes
    /// are discarded), queued output is dropped, and every event of this instance is cancelled at its next
    /// await — including the caller's. Callers get `reason` (default: `Application called abort() to reset
    /// Durable Object.`) as an error flagged `durable_object_reset`. Returns that error, for the caller to
    /// return.
    pub fn abort(&self, reason: Option<&str>) -> Error {
        self.abort_with(reason, AlarmRetry::Retry)
    }

    /// [`State::abort`], saying what becomes of a running alarm (spec §4): [`AlarmRetry::Abandon`] gives it
    /// up instead of retrying it.
    pub fn abort_with(&self, reason: Option<&str>, alarm: AlarmRetry) -> Error {
        let error = Error::new(reason.unwrap_or(messages::ABORTED)).with_reset();
        if let Some(instance) = self.inner.instance.upgrade() {
            instance.abort(error.clone(), alarm);
        }
        error
    }

    /// The world's time, in ms since the epoch (`Date.now()`): the simulated clock of this node under
    /// simulation, the system clock in real mode.
    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Fills `buf` with random bytes from the world (`crypto.getRandomValues`).
    pub fn random_bytes(&self, buf: &mut [u8]) {
        self.inner.entropy.fill(buf);
    }

    /// Accepts `ws` as a hibernatable WebSocket with `tags` (spec §5.2; workers-rs `accept_web_socket` and
    /// `accept_websocket_with_tags`): its events go to [`DurableObject::websocket_message`] and the other
    /// handlers, and it stays connected while the object hibernates. Duplicate tags count once.
    ///
    /// Errors, with the spec's messages: `ws` was accepted already or its pair was accepted or used in a
    /// response; more than 10 tags, or one over 256 characters; the object has 32,768 sockets.
    ///
    /// [`DurableObject::websocket_message`]: crate::object::DurableObject::websocket_message
    pub fn accept_web_socket(&self, ws: &WebSocket, tags: &[&str]) -> Result<(), Error> {
        self.inner.sockets.accept(ws, tags)
    }

    /// The object's hibernatable sockets still connected, those with `tag` if given, in accept order
    /// (workers-rs `get_websockets` / `get_websockets_with_tag`).
    pub fn get_web_sockets(&self, tag: Option<&str>) -> Vec<WebSocket> {
        self.inner.sockets.sockets(tag)
    }

    /// The tags `ws` was accepted with (workers-rs `get_tags`). Errors if it was not accepted with
    /// [`State::accept_web_socket`].
    pub fn get_tags(&self, ws: &WebSocket) -> Result<Vec<String>, Error> {
        if ws.is_hibernatable() {
            Ok(ws.tags())
        } else if ws.is_accepted_plain() {
            Err(Error::new(messages::WS_TAGS_NOT_HIBERNATABLE))
        } else {
            Err(Error::new(messages::WS_TAGS_NOT_ACCEPTED))
        }
    }

    /// Sets the auto-response (spec §5.2; workers-rs `set_websocket_auto_response`): a text message equal to
    /// the pair's request is answered with its response by the runtime, without waking the object. `None`
    /// removes it. It lasts as long as the object's sockets registry (across hibernation; a reset clears it).
    pub fn set_web_socket_auto_response(&self, pair: Option<&WebSocketRequestResponsePair>) {
        self.inner.sockets.set_auto_response(pair.cloned());
    }

    /// The auto-response, if set.
    pub fn get_web_socket_auto_response(&self) -> Option<WebSocketRequestResponsePair> {
        self.inner.sockets.auto_response()
    }

    /// When the runtime last auto-responded on `ws`, in ms since the epoch (the world's clock), if it has.
    pub fn get_web_socket_auto_response_timestamp(&self, ws: &WebSocket) -> Option<i64> {
        ws.auto_response_timestamp()
    }

    /// Sets how long a hibernatable socket's event handler may run (spec §5.2): past it the object is reset
    /// with `Actor exceeded event execution time and was disconnected.` `None` or 0 clears it; at most
    /// 604,800,000 ms (7 days).
    pub fn set_hibernatable_web_socket_event_timeout(&self, ms: Option<u64>) -> Result<(), Error> {
        self.inner.sockets.set_event_timeout(ms)
    }

    /// The hibernatable event timeout, in ms, if set.
    pub fn get_hibernatable_web_socket_event_timeout(&self) -> Option<u64> {
        self.inner.sockets.event_timeout_ms()
    }

    /// A random `u64` from the world.
    pub fn random_u64(&self) -> u64 {
        let mut b = [0; 8];
        self.inner.entropy.fill(&mut b);
        u64::from_le_bytes(b)
    }
}
