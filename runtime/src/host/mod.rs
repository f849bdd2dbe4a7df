//! A host: the process that runs objects. It holds the deployed classes, one container per object id it has
//! seen, the storage provider, and the alarm scheduler.
//!
//! Placement, routing and the event loop are kept apart: a [`Stub`](crate::Stub) routes a call to a
//! container (`HostInner::route`, in [`routing`]), the container places it on its live instance (creating one if
//! needed), and the instance's event loop runs it. A later multi-host cluster replaces the routing step
//! without touching the other two.
//!
//! Single activation on a host: there is at most one container per (namespace, id) in the host's map, and a
//! container has at most one live instance. A container detached from the map (its instance was evicted)
//! never starts a new instance; callers holding it are sent to the map's container instead.
//!
//! The rooms: [`routing`] (where a call goes), [`alarms`] (running the alarms the index says are due, with
//! retries), [`builder`] (deploying the script and starting the host), [`hooks`] (what tests ask of a host:
//! run code inside an object, run its alarm now, list its namespace, refuse calls on demand); this file
//! holds the host, its containers, and the wiring of a new instance.

mod alarms;
mod builder;
mod cluster;
mod hooks;
mod routing;
mod sockets;

pub use builder::HostBuilder;
pub use cluster::ClusterRole;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use madsim_tokio::task::AbortHandle;

use crate::alarm::{AlarmKey, AlarmScheduler};
use crate::config::HostConfig;
use crate::deploy::{self, Deployments};
use crate::env::Env;
use crate::error::{messages, Error};
use crate::gate::{InputGate, OutputGate};
use crate::id::ObjectId;
use crate::instance::{Instance, InstanceOwner};
use crate::namespace::Namespace;
use crate::object::Class;
use crate::state::State;
use crate::storage::actor_cache::sqlite_store::SqliteKvStore;
use crate::storage::actor_cache::ActorCache;
use crate::storage::gates::Hooks;
use crate::storage::sqlite::SqliteStorage;
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
    /// Unique on this host: what a remote stub binds to (spec §6.2).
    serial: u64,
    id: ObjectId,
    class: Rc<ClassEntry>,
    host: Weak<HostInner>,
    instance: RefCell<Option<Rc<Instance>>>,
    broken: RefCell<Option<Error>>,
    /// In a cluster: the lease and epoch under which this host owns the object, once it claimed it.
    ownership: Cell<Option<(i64, i64)>>,
    /// In a cluster with storage nodes: the rebuilt replica and its shipping queue, for the next instance.
    replica: RefCell<Option<(crate::location::DatabaseLocation, crate::storage::replica::ShipQueue)>>,
    /// In a cluster with storage nodes: a KV-backend object's store, opened at its storage node under the
    /// owner's epoch, for the next instance.
    kv_store: RefCell<Option<crate::replication::kv::RemoteKvStore>>,
    /// In a cluster: held while the next instance's replica is rebuilt and the instance starts.
    activating: madsim_tokio::sync::Mutex<()>,
}

impl InstanceOwner for Container {
    fn instance_reset(&self, instance: &Rc<Instance>, error: &Error) {
        *self.broken.borrow_mut() = Some(error.clone());
        self.drop_instance(instance);
        if let Some(host) = self.host.upgrade() {
            host.remember_broken(self.serial, error);
            host.detach(&self.key, self);
            host.release_sockets(&self.key, true);
            // The alarm outlives the instance: a run that was cut off is retried by its run loop; an alarm
            // set but not yet run stays in the index.
        }
    }

    fn instance_evicted(&self, instance: &Rc<Instance>) {
        self.drop_instance(instance);
        if let Some(host) = self.host.upgrade() {
            host.detach(&self.key, self);
            host.release_sockets(&self.key, false);
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

    /// Whether the container has a live instance.
    pub(crate) fn has_live_instance(&self) -> bool {
        self.instance.borrow().as_ref().is_some_and(|i| !i.ended())
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
    /// In a cluster: the directory membership and the calls between nodes. `None`: a lone host.
    cluster: Option<cluster::Cluster>,
    /// Shut down ([`Host::shut_down`]): no new calls are taken.
    closed: Cell<bool>,
    /// The serial the next container gets.
    next_container: Cell<u64>,
    /// The errors of the most recent broken containers, by serial: what remote stubs bound to them get.
    broken_containers: RefCell<BTreeMap<u64, Error>>,
    /// Injected overloads ([`Host::overload_next`]): how many more calls to each object are refused.
    forced_overloads: RefCell<BTreeMap<AlarmKey, u32>>,
    /// The socket registries of objects with sockets (or socket settings), live or hibernated.
    sockets: RefCell<BTreeMap<AlarmKey, Rc<crate::hibernation::ObjectSockets>>>,
}

/// How many broken containers a host remembers for the remote stubs bound to them; a stub bound to one it
/// forgot reaches the object's current instance, as after an eviction.
pub(crate) const BROKEN_CONTAINERS_REMEMBERED: usize = 4_096;

impl HostInner {
    fn remember_broken(&self, serial: u64, error: &Error) {
        let mut broken = self.broken_containers.borrow_mut();
        broken.insert(serial, error.clone());
        while broken.len() > BROKEN_CONTAINERS_REMEMBERED {
            broken.pop_first();
        }
    }

    /// Spawns one of the host's own tasks (an alarm's runs): aborted when the host shuts down or drops.
    fn spawn_task(&self, task: impl std::future::Future<Output = ()> + 'static) {
        let handle = madsim_tokio::task::spawn_local(task);
        let mut tasks = self.tasks.borrow_mut();
        // Bounded by the tasks in progress: finished ones are dropped when the list is full, and it then
        // grows to twice what is left, so a prune comes at most once per as many spawns as tasks remain
        // (amortized O(1) a spawn; pruning at every spawn was O(n²) for n concurrent socket events).
        if tasks.len() == tasks.capacity() {
            tasks.retain(|t| !t.is_finished());
            let left = tasks.len();
            tasks.reserve(left.max(8));
        }
        tasks.push(handle.abort_handle());
    }

    fn next_container_serial(&self) -> u64 {
        let serial = self.next_container.get() + 1;
        self.next_container.set(serial);
        serial
    }
}

impl HostInner {
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
                let s = match container.replica.borrow_mut().take() {
                    Some((replica, ships)) => SqliteStorage::open_replica(
                        &replica,
                        hooks,
                        ships,
                        self.config.sqlite,
                        self.clock.clone(),
                    ),
                    None => SqliteStorage::open_with_clock(
                        &location,
                        hooks,
                        durability,
                        self.config.sqlite,
                        self.clock.clone(),
                    ),
                }
                .map_err(open_failed)?;
                Storage::sqlite(s)
            }
            deploy::BackendKind::Kv => {
                if let Some(remote) = container.kv_store.borrow_mut().take() {
                    let cache = ActorCache::new(Arc::new(remote), hooks, self.config.actor_cache.clone());
                    Storage::kv(cache)
                } else {
                    let mut store = SqliteKvStore::open(&location, durability)
                        .map_err(|e| open_failed(Error::new(e.to_string())))?;
                    if let Some(link) = self.storage.kv_link() {
                        store = store.with_link(link);
                    }
                    let cache = ActorCache::new(Arc::new(store), hooks, self.config.actor_cache.clone());
                    Storage::kv(cache)
                }
            }
        };
        let label = crate::instance::trace_label(&class.namespace.class_name, &container.id);
        let storage = storage.with_object_hooks(turns.clone()).with_label(Arc::from(&*label));
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
        let sockets = self.sockets_of(container);
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
            sockets.clone(),
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
            sockets,
        );
        let construct = class.class.construct(state, self.env.borrow().clone());
        instance.start(construct);
        Ok(instance)
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

    /// Shuts the host down before it is dropped, as a code update does (spec §7: old instances are reset with
    /// `Durable Object reset because its code was updated.`): every live instance is reset with `reason`
    /// (its callers get it), the host takes no new calls, and in a cluster it gives up its lease (so the
    /// directory frees its objects at once for the host that runs next). Its cluster links stay usable by a
    /// successor built with [`HostBuilder::cluster_of`].
    pub async fn shut_down(&self, reason: Error) {
        self.inner.closed.set(true);
        let instances: Vec<Rc<Instance>> =
            self.inner.containers.borrow().values().filter_map(|c| c.instance.borrow().clone()).collect();
        for i in instances {
            i.reset(reason.clone());
        }
        // Hibernated objects' sockets too: the host takes no more events.
        self.inner.drop_all_sockets();
        for t in self.inner.tasks.borrow_mut().drain(..) {
            t.abort();
        }
        // The successor opens the alarm index next.
        self.inner.alarms.close();
        if self.inner.cluster.is_some() {
            self.inner.give_up_lease().await;
        }
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
        self.inner.drop_all_sockets();
        self.inner.alarms.close();
    }
}
