//! One live instance of an object: its gates, its storage, its events, and how it ends.
//!
//! An instance is created when an event arrives for an id with no live instance on the host. Its constructor
//! is the first event, so every other event waits behind it on the input gate (spec §1.1). Each event runs
//! as a local task of [`Gated`] turns; its reply waits for the output gate (every write confirmed before the
//! reply was issued is durable, spec §1.4) before it reaches the caller.
//!
//! An instance ends in one of two ways:
//! - **reset** ([`Instance::reset`]): a gate broke (a failed write, a failed or timed-out critical section),
//!   the constructor failed, or the object called `abort`. Storage shuts down at once (uncommitted writes are
//!   discarded), held output is never sent, every event still running is cancelled and its caller gets the
//!   reset error, and the container is broken: stubs bound to it keep failing (spec §6.2);
//! - **eviction** ([`Instance::evict`]): idle for long enough (spec §5.1), or injected at a point where no
//!   request or alarm is running. In-memory state is gone; the next event constructs a new instance.
//!
//! Incoming requests pass the overload check first ([`Instance::admit`], spec §6.1): too many queued, too
//! many bytes queued, the oldest queued too long, or too many in a 10 s window.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::rc::{Rc, Weak};
use std::sync::Arc;

use madsim_tokio::sync::{oneshot, Notify};
use madsim_tokio::task::AbortHandle;
use madsim_tokio::time::Instant;

use crate::config::{HostConfig, OVERLOAD_WINDOW};
use crate::error::{messages, Error};
use crate::future::LocalFuture;
use crate::gate::{InputGate, OutputGate};
use crate::hibernation::ObjectSockets;
use crate::id::ObjectId;
use crate::object::LiveObject;
use crate::state::{AlarmRetry, InstanceControl};
use crate::storage::Storage;
use crate::turn::{EventSlot, Gated, TurnQueue};
use crate::websocket::{enter_scope, SocketScope};

/// How long the eviction timer waits before trying again when an idle instance still has a write on its way
/// to storage.
const EVICTION_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// How many hex digits of an id the trace shows (as a short git hash does: unique enough to read a trace).
const TRACE_ID_DIGITS: usize = 12;

/// How traces name an instance of `class_name` with `id`: `Class/idprefix`.
pub(crate) fn trace_label(class_name: &str, id: &ObjectId) -> Rc<str> {
    let hex = id.to_string();
    Rc::from(format!("{class_name}/{}", &hex[..TRACE_ID_DIGITS]))
}

/// The error of a request the object refuses because it is overloaded (spec §6.1): `message` is one of the
/// `OVERLOADED_*` messages; flagged `overloaded`, neither retryable nor a reset.
pub(crate) fn overloaded(message: &str) -> Error {
    Error::new(message).with_overloaded()
}

/// What an event is, for the queue and for idleness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// The constructor.
    Constructor,
    /// A fetch or an RPC call: counts against the overload limits.
    Request,
    /// An alarm run.
    Alarm,
    /// A `wait_until` task: keeps the object alive for a while, but it is not a request.
    Background,
}

/// A live event of the instance.
struct LiveEvent {
    kind: EventKind,
    abort: Option<AbortHandle>,
}

/// A request waiting for its first turn.
struct Queued {
    bytes: usize,
    since: Instant,
}

#[derive(Default)]
struct Queue {
    /// Event id → queued request, in delivery order.
    waiting: BTreeMap<u64, Queued>,
    bytes: usize,
    /// Accept times within the last [`OVERLOAD_WINDOW`].
    window: VecDeque<Instant>,
}

/// What an instance tells its owner (the container) when it ends.
pub(crate) trait InstanceOwner {
    /// The instance was reset with `error`.
    fn instance_reset(&self, instance: &Rc<Instance>, error: &Error);
    /// The instance was evicted.
    fn instance_evicted(&self, instance: &Rc<Instance>);
}

/// One live instance.
pub(crate) struct Instance {
    /// The object's id.
    pub(crate) id: ObjectId,
    /// The class name, for traces.
    pub(crate) class_name: Rc<str>,
    /// `Class/idprefix`, how traces name the instance.
    pub(crate) label: Rc<str>,
    config: Rc<HostConfig>,
    owner: Weak<dyn InstanceOwner>,
    pub(crate) input: InputGate,
    pub(crate) output: OutputGate,
    pub(crate) turns: Arc<TurnQueue>,
    pub(crate) storage: Storage,
    object: RefCell<Option<Rc<dyn LiveObject>>>,
    broken: RefCell<Option<Error>>,
    ended: Cell<bool>,
    events: RefCell<BTreeMap<u64, LiveEvent>>,
    next_event: Cell<u64>,
    queue: RefCell<Queue>,
    /// When the last event ended (or the instance started).
    last_activity: Cell<Instant>,
    /// Set when an event ends, for the eviction timer.
    activity: Notify,
    /// The instance's own tasks (the gate monitor, the eviction timer).
    own_tasks: RefCell<Vec<AbortHandle>>,
    /// `abort(reason, { retryAlarm: false })` was called (spec §4).
    pub(crate) alarm_retry_disabled: Cell<bool>,
    /// Runs at the end of every turn (hands the alarm time set in the turn to the scheduler).
    end_turn: Rc<dyn Fn()>,
    /// The object's sockets, which outlive this instance when it hibernates.
    pub(crate) sockets: Rc<ObjectSockets>,
}

/// An event's future with the object's socket scope entered around each poll: sends made in its turns are
/// held behind the object's output gate.
struct Scoped<T> {
    scope: Rc<dyn SocketScope>,
    inner: LocalFuture<'static, Result<T, Error>>,
}

impl<T> std::future::Future for Scoped<T> {
    type Output = Result<T, Error>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let _scope = enter_scope(self.scope.clone());
        self.inner.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("class", &self.class_name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// A new instance with its gates and storage; nothing runs until [`Instance::start`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: ObjectId,
        class_name: Rc<str>,
        config: Rc<HostConfig>,
        owner: Weak<dyn InstanceOwner>,
        turns: Arc<TurnQueue>,
        input: InputGate,
        output: OutputGate,
        storage: Storage,
        end_turn: Rc<dyn Fn()>,
        sockets: Rc<ObjectSockets>,
    ) -> Rc<Instance> {
        let label = trace_label(&class_name, &id);
        Rc::new(Instance {
            id,
            label,
            class_name,
            config,
            owner,
            input,
            output,
            turns,
            storage,
            object: RefCell::new(None),
            broken: RefCell::new(None),
            ended: Cell::new(false),
            events: RefCell::new(BTreeMap::new()),
            next_event: Cell::new(0),
            queue: RefCell::new(Queue::default()),
            last_activity: Cell::new(Instant::now()),
            activity: Notify::new(),
            own_tasks: RefCell::new(Vec::new()),
            alarm_retry_disabled: Cell::new(false),
            end_turn,
            sockets,
        })
    }

    /// Starts the instance: the constructor as its first event, the monitor that resets it when a gate
    /// breaks, and the eviction timer.
    pub(crate) fn start(self: &Rc<Self>, construct: LocalFuture<'static, Result<Rc<dyn LiveObject>, Error>>) {
        tracing::debug!(target: "dosim::runtime", "{} starts", self.label);
        self.sockets.instance_started(self.output.clone());
        let me = self.clone();
        let constructor: LocalFuture<'static, Result<(), Error>> = Box::pin(async move {
            // The constructor runs as a critical section: no event interleaves with it (spec §1.1).
            let construct = async move { construct.await.map_err(Error::with_remote) };
            let object = crate::turn::critical_section(construct).await?;
            *me.object.borrow_mut() = Some(object);
            me.turns.set_constructed();
            Ok(())
        });
        let me = self.clone();
        let done = self.spawn_event(EventKind::Constructor, 0, "constructor".into(), constructor);
        let construction = madsim_tokio::task::spawn_local(async move {
            if let Ok(Err(e)) = done.await {
                // broken.constructorFailed: every event on this instance gets the error (spec §1.1).
                me.reset(e);
            }
        });
        let me = self.clone();
        let monitor = madsim_tokio::task::spawn_local(async move {
            let error = madsim_tokio::select! {
                // Biased: an unbiased select draws from tokio's thread RNG, seeded from a process-wide counter,
                // so a second run of a seed in one process would poll the branches in another order.
                biased;
                e = me.input.on_broken() => e,
                e = me.output.on_broken() => e,
            };
            me.reset(error);
        });
        let me = Rc::downgrade(self);
        let eviction = madsim_tokio::task::spawn_local(async move { eviction_timer(me).await });
        self.own_tasks.borrow_mut().extend([
            construction.abort_handle(),
            monitor.abort_handle(),
            eviction.abort_handle(),
        ]);
    }

    /// The error the instance is broken with, if it is.
    pub(crate) fn broken(&self) -> Option<Error> {
        self.broken.borrow().clone()
    }

    /// Whether the instance has ended (reset or evicted).
    pub(crate) fn ended(&self) -> bool {
        self.ended.get()
    }

    /// The error a caller gets when its event was cut off: the reset error, or (after an eviction, which never
    /// cuts off requests, so only background work) the spec's "no longer active" error.
    fn cut_off_error(&self) -> Error {
        self.broken().unwrap_or_else(|| Error::new(messages::INSTANCE_NO_LONGER_ACTIVE).with_retryable())
    }

    /// The overload check of a new request of `bytes` (spec §6.1). On success the request counts as
    /// accepted in the window.
    pub(crate) fn admit(&self, bytes: usize) -> Result<(), Error> {
        let limits = &self.config.overload;
        let now = Instant::now();
        let mut q = self.queue.borrow_mut();
        while q.window.front().is_some_and(|t| now.duration_since(*t) >= OVERLOAD_WINDOW) {
            q.window.pop_front();
        }
        let refuse = |message: &str| {
            tracing::debug!(target: "dosim::runtime", "{} refuses a request: {message}", self.label);
            Err(overloaded(message))
        };
        if q.window.len() as u64 >= limits.window_requests_max {
            return refuse(messages::OVERLOADED_WINDOW);
        }
        if q.waiting.len() >= limits.queued_requests_max {
            return refuse(messages::OVERLOADED_TOO_MANY_QUEUED);
        }
        if q.bytes + bytes > limits.queued_bytes_max {
            return refuse(messages::OVERLOADED_TOO_MUCH_DATA);
        }
        if q.waiting
            .values()
            .next()
            .is_some_and(|oldest| now.duration_since(oldest.since) > limits.queue_age_max)
        {
            return refuse(messages::OVERLOADED_QUEUED_TOO_LONG);
        }
        q.window.push_back(now);
        Ok(())
    }

    /// Delivers an event: `body` runs on the constructed object, one turn at a time, and its result reaches
    /// the returned future once the output gate allows. Requests must have passed [`Instance::admit`]. `what`
    /// says what the event is, for the trace (an RPC method and its arguments, a fetch's method and path).
    pub(crate) fn deliver<T: 'static>(
        self: &Rc<Self>,
        kind: EventKind,
        bytes: usize,
        what: String,
        body: impl FnOnce(Rc<dyn LiveObject>) -> LocalFuture<'static, Result<T, Error>> + 'static,
    ) -> LocalFuture<'static, Result<T, Error>> {
        if let Some(e) = self.broken() {
            return Box::pin(std::future::ready(Err(e)));
        }
        debug_assert!(!self.ended(), "an ended instance takes no events");
        let me = self.clone();
        let inner: LocalFuture<'static, Result<T, Error>> = Box::pin(async move {
            let object = me.object.borrow().clone();
            let Some(object) = object else {
                // The constructor ran first; if it failed the gate is broken and no event gets here.
                return Err(me.cut_off_error());
            };
            body(object).await.map_err(Error::with_remote)
        });
        let done = self.spawn_event(kind, bytes, what, inner);
        let me = self.clone();
        Box::pin(async move { done.await.unwrap_or_else(|_| Err(me.cut_off_error())) })
    }

    /// Spawns an event's task; returns the receiver of its result.
    fn spawn_event<T: 'static>(
        self: &Rc<Self>,
        kind: EventKind,
        bytes: usize,
        what: String,
        inner: LocalFuture<'static, Result<T, Error>>,
    ) -> oneshot::Receiver<Result<T, Error>> {
        let id = self.next_event.get();
        self.next_event.set(id + 1);
        let slot = EventSlot::new(id);
        // The first lock is asked for now, so events start in delivery order.
        let first = self.input.wait();
        if kind == EventKind::Request {
            let mut q = self.queue.borrow_mut();
            q.bytes += bytes;
            q.waiting.insert(id, Queued { bytes, since: Instant::now() });
        }
        let me = self.clone();
        let body: LocalFuture<'static, Result<T, Error>> = Box::pin(async move {
            me.started(id);
            inner.await
        });
        let scope: Rc<dyn SocketScope> = self.sockets.clone();
        let inner: LocalFuture<'static, Result<T, Error>> = Box::pin(Scoped { scope, inner: body });
        let gated = Gated::new(slot, self.turns.clone(), first, inner, self.end_turn.clone());
        let (tx, rx) = oneshot::channel();
        let me = self.clone();
        self.events.borrow_mut().insert(id, LiveEvent { kind, abort: None });
        tracing::debug!(target: "dosim::runtime", "{} event {id} delivered ({kind:?}): {what}", self.label);
        let task = madsim_tokio::task::spawn_local(async move {
            let result = gated.await.and_then(|r| r);
            // The reply is issued now: it waits for every output lock taken so far (spec §1.4).
            let released = me.output.wait().await;
            let result = released.and(result);
            me.finished(id);
            let _ = tx.send(result);
        });
        if let Some(e) = self.events.borrow_mut().get_mut(&id) {
            e.abort = Some(task.abort_handle());
        }
        rx
    }

    /// The event left the queue: its first turn runs.
    fn started(&self, id: u64) {
        let mut q = self.queue.borrow_mut();
        if let Some(queued) = q.waiting.remove(&id) {
            q.bytes -= queued.bytes;
        }
    }

    /// The event ended (its reply is on its way).
    fn finished(&self, id: u64) {
        self.started(id);
        let removed = self.events.borrow_mut().remove(&id);
        // An instance that ended dropped its events already (the event that reset it ends after that).
        assert!(removed.is_some() || self.ended(), "a live instance's event finishes once");
        self.last_activity.set(Instant::now());
        self.activity.notify_one();
        tracing::debug!(target: "dosim::runtime", "{} event {id} done", self.label);
    }

    /// Runs `task` as a `wait_until` event (spec §10): it is not a request, and it keeps the object from
    /// eviction for at most [`crate::config::WAIT_UNTIL_MAX`].
    pub(crate) fn wait_until(self: &Rc<Self>, task: LocalFuture<'static, ()>) {
        if self.broken().is_some() || self.ended() {
            return;
        }
        let inner: LocalFuture<'static, Result<(), Error>> = Box::pin(async move {
            task.await;
            Ok(())
        });
        // Detached on purpose: a `wait_until` task outlives the event that started it; the instance aborts
        // it when it ends.
        drop(self.spawn_event(EventKind::Background, 0, "wait_until".into(), inner));
    }

    /// Requests and alarms running or queued.
    pub(crate) fn busy(&self) -> bool {
        self.events.borrow().values().any(|e| e.kind != EventKind::Background)
    }

    /// When the instance may be evicted for inactivity, if it is idle now.
    fn idle_deadline(&self) -> Option<Instant> {
        let events = self.events.borrow();
        if events.values().any(|e| e.kind != EventKind::Background) {
            return None;
        }
        let eviction = &self.config.eviction;
        if let Some(idle) = self.sockets.idle_override() {
            // A non-hibernatable socket is open: 70–140 s without an event or a frame (spec §5.1).
            let last = self
                .sockets
                .last_frame
                .get()
                .map_or(self.last_activity.get(), |f| f.max(self.last_activity.get()));
            return Some(last + idle);
        }
        let wait = if events.is_empty() { eviction.idle_timeout } else { eviction.wait_until_max };
        Some(self.last_activity.get() + wait)
    }

    /// Resets the instance with `error` (spec §6.2, §10): storage shuts down (uncommitted writes are gone),
    /// held output is dropped, every event is cancelled (callers get `error`), and the owner breaks the
    /// container. Idempotent: the first error wins.
    pub(crate) fn reset(self: &Rc<Self>, error: Error) {
        if self.ended.get() {
            return;
        }
        let error = if error.durable_object_reset() { error } else { error.with_reset() };
        tracing::debug!(target: "dosim::runtime", "{} reset: {}", self.label, error.message());
        *self.broken.borrow_mut() = Some(error.clone());
        // The gate breaks with the reset's error before storage shuts down, so replies still waiting for it
        // get that error, not the shutdown's.
        self.output.break_with(error.clone());
        self.end(false);
        if let Some(owner) = self.owner.upgrade() {
            owner.instance_reset(self, &error);
        }
    }

    /// Evicts the instance if no request or alarm is running or queued and no write is on its way to storage;
    /// returns whether it did.
    pub(crate) fn evict(self: &Rc<Self>) -> bool {
        // Not while a write's output lock is held: its commit or flush is still on its way.
        if self.ended.get() || self.busy() || self.output.pending() > 0 {
            return false;
        }
        tracing::debug!(target: "dosim::runtime", "{} evicted", self.label);
        self.end(true);
        if let Some(owner) = self.owner.upgrade() {
            owner.instance_evicted(self);
        }
        true
    }

    /// Ends the instance: storage shuts down and every task is cancelled. `hibernating` (an eviction): its
    /// hibernatable sockets stay connected; otherwise (a reset) they drop.
    fn end(&self, hibernating: bool) {
        self.ended.set(true);
        self.sockets.instance_ended(hibernating);
        self.storage.backend().shutdown(None);
        self.turns.clear();
        let events = std::mem::take(&mut *self.events.borrow_mut());
        for event in events.into_values() {
            if let Some(abort) = event.abort {
                abort.abort();
            }
        }
        for task in self.own_tasks.borrow_mut().drain(..) {
            task.abort();
        }
        *self.object.borrow_mut() = None;
        let mut q = self.queue.borrow_mut();
        q.waiting.clear();
        q.bytes = 0;
    }
}

/// Evicts `instance` once it has been idle for long enough (spec §5.1).
async fn eviction_timer(instance: Weak<Instance>) {
    loop {
        let (deadline, prevent) = {
            let Some(i) = instance.upgrade() else { return };
            (i.idle_deadline(), i.config.eviction.prevent_eviction)
        };
        match deadline {
            Some(at) if !prevent => {
                let Some(i) = instance.upgrade() else { return };
                let frames = i.sockets.frame_arrived.clone();
                // An event ending moves the deadline (a `wait_until` task finishing shortens it), and so does a
                // frame on a non-hibernatable socket: look again.
                madsim_tokio::select! {
                    // Biased: an unbiased select draws from tokio's thread RNG, seeded from a process-wide counter,
                    // so a second run of a seed in one process would poll the branches in another order.
                    biased;
                    _ = madsim_tokio::time::sleep_until(at) => {}
                    _ = i.activity.notified() => continue,
                    _ = frames.notified() => continue,
                }
                if i.idle_deadline().is_some_and(|d| d <= Instant::now()) {
                    if i.evict() {
                        return;
                    }
                    // A write is still on its way to storage: look again shortly.
                    drop(i);
                    madsim_tokio::time::sleep(EVICTION_RETRY).await;
                }
            }
            _ => {
                // Held across the wait: the instance ends by aborting this task.
                let Some(i) = instance.upgrade() else { return };
                i.activity.notified().await;
            }
        }
    }
}

impl InstanceControl for Instance {
    fn wait_until(self: Rc<Self>, task: LocalFuture<'static, ()>) {
        Instance::wait_until(&self, task);
    }

    fn abort(self: Rc<Self>, error: Error, alarm: AlarmRetry) {
        if alarm == AlarmRetry::Abandon {
            self.alarm_retry_disabled.set(true);
        }
        self.reset(error);
    }
}
