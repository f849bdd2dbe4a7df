//! A host: the process that runs objects. It holds the deployed classes, one container per object id it has
//! seen, the storage provider, and the alarm scheduler.
//!
//! Placement, routing and the event loop are kept apart: a [`Stub`](crate::Stub) routes a call to a
//! container (`HostInner::container`), the container places it on its live instance (creating one if
//! needed), and the instance's event loop runs it. A later multi-host cluster replaces the routing step
//! without touching the other two.
//!
//! Single activation on a host: there is at most one container per (namespace, id) in the host's map, and a
//! container has at most one live instance. A container detached from the map (its instance was evicted)
//! never starts a new instance; callers holding it are sent to the map's container instead.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use madsim_tokio::task::AbortHandle;

use crate::alarm::{self, AlarmKey, AlarmScheduler, RunOutcome};
use crate::config::HostConfig;
use crate::deploy::{self, Binding, Deployments, Migration, ScriptConfig};
use crate::env::Env;
use crate::error::{messages, Error};
use crate::future::LocalFuture;
use crate::gate::{InputGate, OutputGate};
use crate::id::{NamespaceKey, ObjectId};
use crate::instance::{EventKind, Instance, InstanceOwner};
use crate::namespace::{Call, Namespace, ObjectNamespace, Reply, Router, StubBinding};
use crate::object::{AlarmInfo, Class, ClassOf, DurableObject};
use crate::state::State;
use crate::storage::actor_cache::sqlite_store::SqliteKvStore;
use crate::storage::actor_cache::{ActorCache, GetOptions};
use crate::storage::api::Backend;
use crate::storage::gates::Hooks;
use crate::storage::sqlite::{AlarmArm, SqliteStorage};
use crate::storage::Storage;
use crate::turn::TurnQueue;
use crate::world::{Clock, Entropy, StorageProvider};

/// A deployed class on this host.
pub(crate) struct ClassEntry {
    pub(crate) namespace: Rc<Namespace>,
    pub(crate) backend: deploy::BackendKind,
    pub(crate) class: Rc<dyn Class>,
}

/// An object's place on the host: stubs bind to it; it holds the live instance, if any.
pub(crate) struct Container {
    key: AlarmKey,
    id: ObjectId,
    class: Rc<ClassEntry>,
    host: Weak<HostInner>,
    instance: RefCell<Option<Rc<Instance>>>,
    broken: RefCell<Option<Error>>,
}

impl InstanceOwner for Container {
    fn instance_reset(&self, instance: &Rc<Instance>, error: &Error) {
        *self.broken.borrow_mut() = Some(error.clone());
        self.drop_instance(instance);
        if let Some(host) = self.host.upgrade() {
            host.detach(&self.key, self);
            // The alarm outlives the instance: a run that was cut off is retried by its run loop; an alarm
            // set but not yet run stays in the index.
        }
    }

    fn instance_evicted(&self, instance: &Rc<Instance>) {
        self.drop_instance(instance);
        if let Some(host) = self.host.upgrade() {
            host.detach(&self.key, self);
        }
    }
}

impl Container {
    fn drop_instance(&self, instance: &Rc<Instance>) {
        let mut slot = self.instance.borrow_mut();
        if slot.as_ref().is_some_and(|i| Rc::ptr_eq(i, instance)) {
            *slot = None;
        }
    }

    /// The error stubs bound to this container get, if it is broken.
    pub(crate) fn broken(&self) -> Option<Error> {
        self.broken.borrow().clone()
    }

    /// The live instance, started if there is none. Only the host map's container starts instances.
    pub(crate) fn instance(self: &Rc<Self>) -> Result<Rc<Instance>, Error> {
        if let Some(e) = self.broken() {
            return Err(e);
        }
        if let Some(i) = self.instance.borrow().as_ref().filter(|i| !i.ended()) {
            return Ok(i.clone());
        }
        let host = self.host.upgrade().ok_or_else(host_gone)?;
        assert!(host.is_attached(&self.key, self), "only the host map's container starts an instance");
        let instance = host.start_instance(self)?;
        *self.instance.borrow_mut() = Some(instance.clone());
        Ok(instance)
    }
}

fn host_gone() -> Error {
    Error::new(messages::INSTANCE_NO_LONGER_ACTIVE).with_retryable()
}

/// The shared state of a host.
pub(crate) struct HostInner {
    config: Rc<HostConfig>,
    script: String,
    deployments: Deployments,
    classes: BTreeMap<Rc<str>, Rc<ClassEntry>>,
    containers: RefCell<BTreeMap<AlarmKey, Rc<Container>>>,
    storage: Rc<dyn StorageProvider>,
    clock: Arc<dyn Clock>,
    entropy: Rc<dyn Entropy>,
    alarms: Rc<AlarmScheduler>,
    env: RefCell<Env>,
    tasks: RefCell<Vec<AbortHandle>>,
}

impl HostInner {
    /// Routing: the container a call for object `id` of `class` goes to, created if the host has none. With
    /// a stub's `binding`: the container it was bound to, unless that one was detached after an eviction
    /// (then the host's current one, which the stub binds to); its reset error if it is broken.
    pub(crate) fn route(
        self: &Rc<Self>,
        class: &Rc<ClassEntry>,
        id: &ObjectId,
        binding: Option<&StubBinding>,
    ) -> Result<Rc<Container>, Error> {
        let key: AlarmKey = (class.namespace.uid.clone(), *id.as_bytes());
        let Some(binding) = binding else { return Ok(self.container(key, class, id)) };
        let mut bound = binding.borrow_mut();
        let bound_container =
            bound.clone().map(|c| c.downcast::<Container>().expect("a stub is bound to a container"));
        if let Some(c) = &bound_container {
            if let Some(e) = c.broken() {
                return Err(e);
            }
            if self.is_attached(&key, c) {
                return Ok(c.clone());
            }
        }
        let c = self.container(key, class, id);
        *bound = Some(c.clone());
        Ok(c)
    }

    /// The host map's container of `key`, created if there is none.
    fn container(self: &Rc<Self>, key: AlarmKey, class: &Rc<ClassEntry>, id: &ObjectId) -> Rc<Container> {
        self.containers
            .borrow_mut()
            .entry(key.clone())
            .or_insert_with(|| {
                Rc::new(Container {
                    key,
                    id: id.clone(),
                    class: class.clone(),
                    host: Rc::downgrade(self),
                    instance: RefCell::new(None),
                    broken: RefCell::new(None),
                })
            })
            .clone()
    }

    /// Whether `container` is the host map's container for `key`.
    pub(crate) fn is_attached(&self, key: &AlarmKey, container: &Container) -> bool {
        self.containers.borrow().get(key).is_some_and(|c| std::ptr::eq(Rc::as_ptr(c), container))
    }

    fn detach(&self, key: &AlarmKey, container: &Container) {
        let mut map = self.containers.borrow_mut();
        if map.get(key).is_some_and(|c| std::ptr::eq(Rc::as_ptr(c), container)) {
            map.remove(key);
        }
    }

    /// Opens the object's storage and starts a new instance in `container`.
    fn start_instance(self: &Rc<Self>, container: &Rc<Container>) -> Result<Rc<Instance>, Error> {
        let class = &container.class;
        let input = InputGate::new();
        let output = OutputGate::new();
        let turns = TurnQueue::new(
            input.clone(),
            output.clone(),
            class.class.has_alarm_handler(),
            self.clock.clone(),
        );
        let hooks: Hooks = turns.clone();
        let location = self.storage.object_database(&class.namespace.uid, &container.id);
        let durability = self.storage.durability();
        let open_failed = |e: Error| {
            tracing::warn!(target: "dosim::runtime", id = %container.id, "storage open failed: {}", e.message());
            Error::new(messages::STORAGE_NO_LONGER_ACCESSIBLE).with_retryable().with_reset()
        };
        let storage = match class.backend {
            deploy::BackendKind::Sqlite => {
                let s = SqliteStorage::open_with_clock(
                    &location,
                    hooks,
                    durability,
                    self.config.sqlite,
                    self.clock.clone(),
                )
                .map_err(open_failed)?;
                Storage::sqlite(s)
            }
            deploy::BackendKind::Kv => {
                let mut store = SqliteKvStore::open(&location, durability)
                    .map_err(|e| open_failed(Error::new(e.to_string())))?;
                if let Some(link) = self.storage.kv_link() {
                    store = store.with_link(link);
                }
                let cache = ActorCache::new(Arc::new(store), hooks, self.config.actor_cache.clone());
                Storage::kv(cache)
            }
        };
        let storage = storage.with_object_hooks(turns.clone());
        let key = container.key.clone();
        let alarms = Rc::downgrade(&self.alarms);
        let note_turns = turns.clone();
        let note_output = output.clone();
        let end_turn: Rc<dyn Fn()> = Rc::new(move || {
            if let Some(t) = note_turns.take_alarm_note() {
                if let Some(alarms) = alarms.upgrade() {
                    // Scheduled before the commit; a failure breaks the output gate (spec §4).
                    if let Err(e) = alarms.note(&key, t) {
                        note_output.break_with(e.with_reset());
                    }
                }
            }
        });
        let owner: Weak<dyn InstanceOwner> = {
            let weak: Weak<Container> = Rc::downgrade(container);
            weak
        };
        let instance = Instance::new(
            container.id.clone(),
            class.namespace.class_name.clone(),
            self.config.clone(),
            owner,
            turns,
            input,
            output,
            storage.clone(),
            end_turn,
        );
        let state = State::new(
            container.id.clone(),
            storage,
            {
                let weak: Weak<dyn crate::state::InstanceControl> =
                    Rc::downgrade(&instance) as Weak<Instance>;
                weak
            },
            self.clock.clone(),
            self.entropy.clone(),
        );
        let construct = class.class.construct(state, self.env.borrow().clone());
        instance.start(construct);
        Ok(instance)
    }

    /// Runs the alarm of `key` once (spec §4); see [`crate::alarm`].
    async fn run_alarm(self: &Rc<Self>, key: &AlarmKey, retry_count: u32) -> RunOutcome {
        let Some(class) = self.classes.get(&key.0).cloned() else {
            // The class is gone (deleted): so is the alarm.
            let _ = self.alarms.forget(key);
            return RunOutcome::Settled;
        };
        let id = match id_of(&class, &key.1) {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(target: "dosim::runtime", "alarm index entry of a foreign id: {}", e.message());
                let _ = self.alarms.forget(key);
                return RunOutcome::Settled;
            }
        };
        let container = self.route(&class, &id, None).expect("routing without a binding never fails");
        let instance = match container.instance() {
            Ok(i) => i,
            Err(e) => return RunOutcome::Interrupted(e),
        };
        let me = self.clone();
        let run_key = key.clone();
        let inst = instance.clone();
        let result = instance
            .deliver(EventKind::Alarm, 0, move |object| {
                Box::pin(async move { me.alarm_event(object, &inst, &run_key, retry_count).await })
            })
            .await;
        match result {
            Ok(outcome) => outcome,
            Err(_) if instance.alarm_retry_disabled.get() => RunOutcome::Abandon,
            Err(e) if alarm::counted(&e) => RunOutcome::Failed(e),
            Err(e) => RunOutcome::Interrupted(e),
        }
    }

    /// The alarm event, inside the object: check storage, arm, run the handler, settle the index.
    async fn alarm_event(
        &self,
        object: Rc<dyn crate::object::LiveObject>,
        instance: &Rc<Instance>,
        key: &AlarmKey,
        retry_count: u32,
    ) -> Result<RunOutcome, Error> {
        // The index follows storage only once what was read is durable and the object set no alarm since.
        let settle = async |time: Option<i64>, generation: u64| -> Result<RunOutcome, Error> {
            instance.storage.sync().await?;
            self.alarms.settle(key, time, generation)?;
            Ok(RunOutcome::Settled)
        };
        let generation = self.alarms.generation(key);
        let stored = instance.storage.get_alarm().await?;
        let now = self.clock.now_ms();
        let scheduled = match stored {
            Some(t) if t <= now => t,
            // Nothing due: an alarm moved later, or deleted.
            other => return settle(other, generation).await,
        };
        if !object.has_alarm() {
            tracing::warn!(
                target: "dosim::runtime",
                "{}: Attempted to run a scheduled alarm without a handler, did you remember to export an alarm() function?",
                instance.label
            );
            self.alarms.settle(key, None, generation)?;
            return Ok(RunOutcome::Abandon);
        }
        // Arm: the alarm reads as deleted while the handler runs (spec §4).
        let deleter = match instance.storage.backend() {
            Backend::Sqlite(s) => match s.arm_alarm_handler(scheduled)? {
                AlarmArm::Run => None,
                AlarmArm::Reschedule(t) => return settle(Some(t), generation).await,
                AlarmArm::Cancel => return settle(None, generation).await,
            },
            Backend::Kv(c) => match c.arm_alarm_handler(scheduled, false) {
                Some(d) => Some(d),
                None => {
                    let generation = self.alarms.generation(key);
                    let now_stored = c.get_alarm(GetOptions::default()).await?;
                    return settle(now_stored, generation).await;
                }
            },
        };
        let info = AlarmInfo { retry_count, is_retry: retry_count > 0, scheduled_time: scheduled };
        tracing::debug!(target: "dosim::runtime", "{} alarm {scheduled} runs (retry {retry_count})", instance.label);
        let handler = object.alarm(info).expect("checked: the class has an alarm handler");
        let outcome = madsim_tokio::time::timeout(self.config.alarms.handler_timeout, handler).await;
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_elapsed) => {
                let e = Error::new(messages::ALARM_TIMEOUT).with_overloaded().with_reset();
                instance.reset(e.clone());
                Some(e)
            }
        };
        match instance.storage.backend() {
            Backend::Sqlite(s) => s.finish_alarm_handler(failure.is_none())?,
            Backend::Kv(c) => {
                if failure.is_some() {
                    c.cancel_deferred_alarm_deletion();
                }
                drop(deleter);
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        // Success: the alarm is deleted (unless the handler set a new one); the index follows once the
        // deletion is durable.
        let generation = self.alarms.generation(key);
        let next = instance.storage.get_alarm().await?;
        settle(next, generation).await
    }

    /// Gives up the alarm of `key` set for `scheduled` (spec §4: after the last retry, or `abort` without
    /// retry): storage deletes it if it is still that time; the index follows.
    async fn abandon_alarm(self: &Rc<Self>, key: &AlarmKey, scheduled: i64) {
        let Some(class) = self.classes.get(&key.0).cloned() else { return };
        let Ok(id) = id_of(&class, &key.1) else { return };
        let Ok(instance) = self.route(&class, &id, None).and_then(|c| c.instance()) else {
            self.alarms.requeue(key);
            return;
        };
        let me = self.clone();
        let k = key.clone();
        let inst = instance.clone();
        let done = instance
            .deliver(EventKind::Alarm, 0, move |_| {
                Box::pin(async move {
                    let generation = me.alarms.generation(&k);
                    let replaced = match inst.storage.backend() {
                        Backend::Sqlite(s) => s.abandon_alarm(scheduled)?,
                        Backend::Kv(c) => c.abandon_alarm(scheduled).await?,
                    };
                    inst.storage.sync().await?;
                    me.alarms.settle(&k, replaced, generation)?;
                    Ok(())
                })
            })
            .await;
        if done.is_err() {
            self.alarms.requeue(key);
        }
        tracing::debug!(target: "dosim::runtime", "alarm abandoned after its retries");
    }
}

impl Router for HostInner {
    fn send(
        self: Rc<Self>,
        namespace: &Namespace,
        id: &ObjectId,
        binding: &StubBinding,
        bytes: usize,
        call: Call,
    ) -> LocalFuture<'static, Result<Reply, Error>> {
        let class =
            self.classes.get(&namespace.uid).cloned().expect("a namespace's class is deployed on its host");
        let instance = match self.route(&class, id, Some(binding)).and_then(|c| c.instance()) {
            Ok(i) => i,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        if let Err(e) = instance.admit(bytes) {
            return Box::pin(std::future::ready(Err(e)));
        }
        instance.deliver(EventKind::Request, bytes, move |object| match call {
            Call::Fetch(request) => {
                let reply = object.fetch(request);
                Box::pin(async move { reply.await.map(Reply::Response) })
            }
            Call::Rpc { method, args } => {
                let reply = object.call(&method, args);
                Box::pin(async move { reply.await.map(Reply::Rpc) })
            }
        })
    }
}

/// The id of an index key: its bytes, checked against the namespace's key.
fn id_of(class: &ClassEntry, bytes: &[u8; 32]) -> Result<ObjectId, Error> {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    ObjectId::parse(&class.namespace.key, &hex)
}

/// One alarm's runs until it settles, with retries (spec §4).
async fn alarm_runs(host: Weak<HostInner>, key: AlarmKey, scheduled: i64) {
    let Some(h) = host.upgrade() else { return };
    h.alarms.set_running(&key, true);
    let config = h.config.alarms;
    drop(h);
    let mut counted_failures = 0u32;
    // The current streak of failures of one kind (counted or not) and its length: the backoff restarts when
    // the kind changes (spec §4).
    let mut streak: Option<(bool, u32)> = None;
    loop {
        let Some(h) = host.upgrade() else { return };
        let outcome = h.run_alarm(&key, counted_failures).await;
        let counted = match outcome {
            RunOutcome::Settled => break,
            RunOutcome::Abandon => {
                h.abandon_alarm(&key, scheduled).await;
                break;
            }
            RunOutcome::Failed(e) => {
                tracing::debug!(target: "dosim::runtime", "alarm failed (counted): {}", e.message());
                counted_failures += 1;
                if counted_failures > config.retries_max {
                    h.abandon_alarm(&key, scheduled).await;
                    break;
                }
                true
            }
            RunOutcome::Interrupted(e) => {
                tracing::debug!(target: "dosim::runtime", "alarm interrupted (not counted): {}", e.message());
                false
            }
        };
        let n = match streak {
            Some((kind, n)) if kind == counted => n + 1,
            _ => 0,
        };
        streak = Some((counted, n));
        let exponent = if counted { n } else { n.min(alarm::ALARM_UNCOUNTED_EXPONENT_MAX) };
        let mut b = [0u8; 4];
        h.entropy.fill(&mut b);
        let jitter = u32::from_le_bytes(b) % 1_000_001;
        let delay = config.backoff(exponent, jitter);
        drop(h);
        madsim_tokio::time::sleep(delay).await;
    }
    if let Some(h) = host.upgrade() {
        h.alarms.set_running(&key, false);
    }
}

/// The host's alarm timer: starts the run of every index entry that comes due.
async fn alarm_timer(host: Weak<HostInner>) {
    loop {
        let Some(h) = host.upgrade() else { return };
        let now = h.clock.now_ms();
        match h.alarms.next_due(now) {
            Ok((t, key)) => {
                tracing::debug!(target: "dosim::runtime", scheduled = t, "alarm due");
                let handle = madsim_tokio::task::spawn_local(alarm_runs(host.clone(), key, t));
                let mut tasks = h.tasks.borrow_mut();
                // Bounded by the runs in progress: finished ones are dropped as new ones start.
                tasks.retain(|t| !t.is_finished());
                tasks.push(handle.abort_handle());
            }
            Err(next) => {
                let alarms = h.alarms.clone();
                drop(h);
                match next {
                    Some(t) => {
                        let wait = std::time::Duration::from_millis(u64::try_from(t - now).unwrap_or(0));
                        madsim_tokio::select! {
                            _ = madsim_tokio::time::sleep(wait) => {}
                            _ = alarms.wake.notified() => {}
                        }
                    }
                    None => alarms.wake.notified().await,
                }
            }
        }
    }
}

/// A running host: deployed classes, live objects, alarms. Dropping it stops its tasks.
pub struct Host {
    inner: Rc<HostInner>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("script", &self.inner.script)
            .field("containers", &self.inner.containers.borrow().len())
            .finish_non_exhaustive()
    }
}

impl Host {
    /// A builder for a host running `script`.
    pub fn builder(script: &str) -> HostBuilder {
        HostBuilder {
            script: script.to_string(),
            config: HostConfig::default(),
            classes: BTreeMap::new(),
            bindings: Vec::new(),
            migrations: Vec::new(),
            vars: BTreeMap::new(),
            deployments: Deployments::default(),
            storage: None,
            clock: None,
            entropy: None,
        }
    }

    /// The Worker's environment: the bindings of the script (workers-rs `Env`).
    pub fn env(&self) -> Env {
        self.inner.env.borrow().clone()
    }

    /// The deployment state after this host's deploy, for the next deploy.
    pub fn deployments(&self) -> &Deployments {
        &self.inner.deployments
    }

    /// How many objects have a live instance.
    pub fn live_instances(&self) -> usize {
        self.inner.containers.borrow().values().filter(|c| c.instance.borrow().is_some()).count()
    }

    /// How many alarms the scheduler's index holds.
    pub fn scheduled_alarms(&self) -> usize {
        self.inner.alarms.len()
    }

    fn container_of(&self, binding: &str, id: &ObjectId) -> Result<Option<Rc<Container>>, Error> {
        let ns = self.env().durable_object(binding)?;
        let key: AlarmKey = (ns.namespace().uid.clone(), *id.as_bytes());
        Ok(self.inner.containers.borrow().get(&key).cloned())
    }

    /// Evicts the object `id` of the class bound to `binding`, as an injected fault (spec §5.1), if it is
    /// live and no request or alarm is running or queued (the points where the runtime evicts). Returns
    /// whether it did.
    pub fn evict(&self, binding: &str, id: &ObjectId) -> Result<bool, Error> {
        let instance = self.container_of(binding, id)?.and_then(|c| c.instance.borrow().clone());
        Ok(instance.is_some_and(|i| i.evict()))
    }

    /// Evicts every live object that can be evicted now; returns how many were.
    pub fn evict_idle(&self) -> usize {
        let instances: Vec<Rc<Instance>> =
            self.inner.containers.borrow().values().filter_map(|c| c.instance.borrow().clone()).collect();
        instances.into_iter().filter(|i| i.evict()).count()
    }

    /// Resets the object `id` of the class bound to `binding` with `error` (an injected reset, e.g. a code
    /// update: `Durable Object reset because its code was updated.`). Returns whether it was live.
    pub fn reset(&self, binding: &str, id: &ObjectId, error: Error) -> Result<bool, Error> {
        let instance = self.container_of(binding, id)?.and_then(|c| c.instance.borrow().clone());
        Ok(match instance {
            Some(i) => {
                i.reset(error);
                true
            }
            None => false,
        })
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for t in self.inner.tasks.borrow_mut().drain(..) {
            t.abort();
        }
        let containers: Vec<Rc<Container>> =
            std::mem::take(&mut *self.inner.containers.borrow_mut()).into_values().collect();
        for c in containers {
            let instance = c.instance.borrow_mut().take();
            if let Some(i) = instance {
                i.reset(Error::new(messages::INSTANCE_NO_LONGER_ACTIVE).with_retryable());
            }
        }
        self.inner.alarms.close();
    }
}

/// Builds a [`Host`]: its script's classes, bindings and migrations, and the world it runs in.
pub struct HostBuilder {
    script: String,
    config: HostConfig,
    classes: BTreeMap<String, Rc<dyn Class>>,
    bindings: Vec<Binding>,
    migrations: Vec<Migration>,
    vars: BTreeMap<String, String>,
    deployments: Deployments,
    storage: Option<Rc<dyn StorageProvider>>,
    clock: Option<Arc<dyn Clock>>,
    entropy: Option<Rc<dyn Entropy>>,
}

impl HostBuilder {
    /// The limits objects run under (default: the spec's).
    pub fn config(mut self, config: HostConfig) -> Self {
        self.config = config;
        self
    }

    /// The script exports class `T` as `name`.
    pub fn class<T: DurableObject>(mut self, name: &str) -> Self {
        self.classes.insert(name.to_string(), Rc::new(ClassOf::<T>::new()));
        self
    }

    /// Binds `binding` (a name in [`Env`]) to the class `class_name` of this script.
    pub fn binding(mut self, binding: &str, class_name: &str) -> Self {
        self.bindings.push(Binding {
            name: binding.to_string(),
            class_name: class_name.to_string(),
            script_name: None,
        });
        self
    }

    /// Appends a migration (spec §9); migrations apply in order, each tag once.
    pub fn migration(mut self, migration: Migration) -> Self {
        self.migrations.push(migration);
        self
    }

    /// A plain-text variable in [`Env`].
    pub fn var(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(name.to_string(), value.to_string());
        self
    }

    /// The deployment state before this deploy (default: nothing deployed yet).
    pub fn deployments(mut self, deployments: Deployments) -> Self {
        self.deployments = deployments;
        self
    }

    /// Where databases live.
    pub fn storage(mut self, storage: impl StorageProvider + 'static) -> Self {
        self.storage = Some(Rc::new(storage));
        self
    }

    /// The wall clock (`Date.now()`, alarm times, point-in-time recovery).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The source of randomness (unique ids, alarm jitter, `State::random_bytes`).
    pub fn entropy(mut self, entropy: impl Entropy + 'static) -> Self {
        self.entropy = Some(Rc::new(entropy));
        self
    }

    /// Deploys the script (applying its new migrations) and starts the host: its alarm index is loaded and
    /// the alarm timer runs. Must be called inside the runtime's executor (a madsim node, or a tokio
    /// `LocalSet`).
    pub fn build(self) -> Result<Host, Error> {
        let missing = |what: &str| Error::new(format!("Host::builder: no {what} was given"));
        let storage = self.storage.ok_or_else(|| missing("storage provider"))?;
        let clock = self.clock.ok_or_else(|| missing("clock"))?;
        let entropy = self.entropy.ok_or_else(|| missing("entropy source"))?;
        let config = ScriptConfig {
            script: self.script.clone(),
            exported_classes: self.classes.keys().cloned().collect(),
            bindings: self.bindings.clone(),
            migrations: self.migrations,
        };
        let outcome = self.deployments.deploy(&config)?;
        for ns in &outcome.deleted_namespaces {
            storage.delete_namespace(ns)?;
        }
        let deployments = outcome.deployments;
        let mut classes = BTreeMap::new();
        let mut by_name = BTreeMap::new();
        for (name, deployed) in deployments.classes(&self.script) {
            let Some(class) = self.classes.get(name) else {
                return Err(Error::new(format!(
                    "Class '{name}' is deployed by script '{}' but the script does not export it.",
                    self.script
                )));
            };
            let uid: Rc<str> = Rc::from(deployed.namespace_uid.as_str());
            let entry = Rc::new(ClassEntry {
                namespace: Rc::new(Namespace {
                    class_name: Rc::from(name),
                    uid: uid.clone(),
                    key: NamespaceKey::new(&deployed.namespace_uid),
                }),
                backend: deployed.backend,
                class: class.clone(),
            });
            classes.insert(uid, entry.clone());
            by_name.insert(name.to_string(), entry);
        }
        let alarms = Rc::new(AlarmScheduler::open(&storage.alarm_index())?);
        let inner = Rc::new(HostInner {
            config: Rc::new(self.config),
            script: self.script.clone(),
            deployments: deployments.clone(),
            classes,
            containers: RefCell::new(BTreeMap::new()),
            storage,
            clock,
            entropy,
            alarms,
            env: RefCell::new(Env::empty()),
            tasks: RefCell::new(Vec::new()),
        });
        let mut namespaces = BTreeMap::new();
        for b in &self.bindings {
            let resolved =
                deployments.resolve(b.script_name.as_deref().unwrap_or(&self.script), &b.class_name);
            let entry = resolved.and_then(|(script, class, _)| {
                (script == self.script).then(|| by_name.get(&class).cloned()).flatten()
            });
            let Some(entry) = entry else {
                return Err(Error::new(format!(
                    "Binding '{}' names class '{}', which this host does not run.",
                    b.name, b.class_name
                )));
            };
            let router: Weak<dyn Router> = Rc::downgrade(&inner) as Weak<HostInner>;
            let namespace = ObjectNamespace::new(entry.namespace.clone(), router, inner.entropy.clone());
            namespaces.insert(b.name.clone(), namespace);
        }
        *inner.env.borrow_mut() = Env::new(namespaces, self.vars);
        let timer = madsim_tokio::task::spawn_local(alarm_timer(Rc::downgrade(&inner)));
        inner.tasks.borrow_mut().push(timer.abort_handle());
        Ok(Host { inner })
    }
}
