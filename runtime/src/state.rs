//! What an object gets from the runtime (`ctx` / `state` on Cloudflare): its id, its storage, critical
//! sections, background tasks, `abort`, and the world's time and randomness.

use std::future::Future;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use crate::error::{messages, Error};
use crate::future::LocalFuture;
use crate::id::ObjectId;
use crate::storage::Storage;
use crate::turn::critical_section;
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
    ) -> State {
        State { inner: Rc::new(StateInner { id, storage, instance, clock, entropy }) }
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

    /// A random `u64` from the world.
    pub fn random_u64(&self) -> u64 {
        let mut b = [0; 8];
        self.inner.entropy.fill(&mut b);
        u64::from_le_bytes(b)
    }
}
