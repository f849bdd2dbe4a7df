//! The host in a cluster: its membership of the directory, the objects it claims, the calls it serves for
//! other nodes, and the calls its stubs send to whichever host owns their object.
//!
//! # A call's path
//! A stub's call is encoded once ([`ObjectCall`]) and sent to the host the directory names as the object's
//! owner; with no owner, to the host that placement picks (the id's hash over the live hosts). The receiving
//! host claims the object if it does not own it yet; if another host owns it, it answers "not the owner"
//! (naming that host), and the caller tries there (at most [`ROUTE_HOPS_MAX`] hosts). A "not the owner"
//! answer means the call did not run, so resending it is safe; a call with no answer within
//! [`REMOTE_CALL_TIMEOUT`] may have run, and is never resent: the caller gets `Network connection lost.`
//! (retryable), as the spec says.
//!
//! # Uniqueness (spec §7)
//! An event starts only while the host believes its lease live ([`HostLease::is_valid`]) and owns the
//! object under that lease. When the belief lapses (the host is cut off from the directory), every live
//! instance is reset with `Durable Object storage is no longer accessible.` (retryable, reset): their later
//! storage calls throw it, their output gates break (so replies held behind unconfirmed writes are never
//! released), and they never start another event. The host then joins again with a new lease.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};
use std::time::Duration;

use crate::alarm::AlarmKey;
use crate::directory::{Claim, Directory, HostLease, Member};
use crate::error::{messages, Error};
use crate::future::LocalFuture;
use crate::id::ObjectId;
use crate::instance::{EventKind, Instance};
use crate::namespace::{Call, Reply, StubBinding};
use crate::rpc::RpcNode;
use crate::wire::{self, ObjectCall, ObjectReply, Outcome, WireCall, WireError, WireId};
use crate::world::Coordinator;

use super::{ClassEntry, Container, HostInner};
use crate::deploy;
use crate::replication;
use crate::storage::replica;

/// How long a caller waits for a host's answer to an object call before it gives up with `Network
/// connection lost.`: as long as a request's default CPU budget (30 s, spec §6.2). A request that runs
/// longer (waiting on storage or other objects) is reported lost to its caller, and may still complete.
pub(crate) const REMOTE_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How many hosts a call tries, following "not the owner" answers, before it gives up.
pub(crate) const ROUTE_HOPS_MAX: u32 = 4;
/// How long a caller waits before asking the directory again when no host would take the call.
pub(crate) const ROUTE_RETRY_DELAY: Duration = Duration::from_millis(250);
/// How many owner hints a node keeps; past that it forgets them all (they are only hints: a call without one
/// asks the directory).
pub(crate) const OWNER_HINTS_MAX: usize = 65_536;
/// How long a host waits before joining the directory again after a failed attempt.
const REJOIN_DELAY: Duration = Duration::from_millis(500);
/// How often an activation starts over when its container left the host's map while it waited (an eviction
/// or a reset of the instance it found): past it, the call is answered "not the owner", which is resent.
const ACTIVATE_ATTEMPTS_MAX: u32 = 3;
/// How long a host tries to revoke a lease it gave up.
const REVOKE_TIMEOUT: Duration = Duration::from_millis(500);

/// What a host does in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterRole {
    /// It runs objects: it joins the directory, claims objects and serves calls to them.
    Host,
    /// It only calls objects (a Worker's front): its stubs send their calls to the hosts.
    Front,
}

/// A host's part in the cluster.
pub(crate) struct Cluster {
    pub(crate) rpc: Rc<RpcNode>,
    store: Rc<dyn Coordinator>,
    directory: Directory,
    role: ClusterRole,
    lease: RefCell<Option<Rc<HostLease>>>,
    /// The owner each object was last found at: a hint, corrected by "not the owner" answers.
    owners: RefCell<BTreeMap<AlarmKey, String>>,
    /// The storage nodes; none: objects keep their databases on the host.
    storage_nodes: Vec<String>,
    /// This host's location (a location hint's name), if it has one.
    pub(crate) location: Option<String>,
    /// The WebSocket connections between this node and others.
    streams: Rc<crate::stream::Streams>,
}

impl Cluster {
    pub(crate) fn new(
        rpc: Rc<RpcNode>,
        store: Rc<dyn Coordinator>,
        role: ClusterRole,
        storage_nodes: Vec<String>,
    ) -> Cluster {
        Cluster {
            streams: crate::stream::Streams::new(rpc.clone()),
            storage_nodes,
            location: None,
            directory: Directory::new(store.clone()),
            rpc,
            store,
            role,
            lease: RefCell::new(None),
            owners: RefCell::new(BTreeMap::new()),
        }
    }

    pub(crate) fn role(&self) -> ClusterRole {
        self.role
    }

    /// The links a successor host takes over: calls, directory store, role, storage nodes.
    pub(crate) fn links(&self) -> (Rc<RpcNode>, Rc<dyn Coordinator>, ClusterRole, Vec<String>) {
        (self.rpc.clone(), self.store.clone(), self.role, self.storage_nodes.clone())
    }

    /// Remembers where an object answered, within [`OWNER_HINTS_MAX`].
    fn remember_owner(&self, key: AlarmKey, host: String) {
        let mut owners = self.owners.borrow_mut();
        if owners.len() >= OWNER_HINTS_MAX {
            owners.clear();
        }
        owners.insert(key, host);
    }

    /// The lease this host acts under, if it believes it live.
    fn valid_lease(&self) -> Option<Rc<HostLease>> {
        self.lease.borrow().clone().filter(|l| l.is_valid())
    }

    fn me(&self) -> String {
        self.rpc.local_addr()
    }
}

/// What a stub in a cluster keeps of its object (spec §6.2): the host and container that answered it, and the
/// reset error it got, after which it fails at once.
#[derive(Default)]
struct RemoteBinding {
    at: RefCell<Option<(String, u64)>>,
    broken: RefCell<Option<Error>>,
}

impl RemoteBinding {
    /// The stub's binding, made at its first call.
    fn of(binding: &StubBinding) -> Rc<RemoteBinding> {
        let mut slot = binding.borrow_mut();
        if let Some(b) = slot.clone().and_then(|b| b.downcast::<RemoteBinding>().ok()) {
            return b;
        }
        let b = Rc::new(RemoteBinding::default());
        *slot = Some(b.clone());
        b
    }
}

/// The host that placement picks for an object nobody owns: the id's hash over the live hosts in the
/// location the stub's hint names if there are any (spec §8: the hint says where to create the object), else
/// over every live host, in address order.
fn place(members: &[Member], id: &ObjectId, location_hint: Option<&str>) -> Option<String> {
    let hinted: Vec<&Member> = match location_hint {
        Some(hint) => members.iter().filter(|m| m.location.as_deref() == Some(hint)).collect(),
        None => Vec::new(),
    };
    let pool: Vec<&Member> = if hinted.is_empty() { members.iter().collect() } else { hinted };
    if pool.is_empty() {
        return None;
    }
    let b = id.as_bytes();
    let h = u64::from_be_bytes([b[24], b[25], b[26], b[27], b[28], b[29], b[30], b[31]]);
    Some(pool[(h % pool.len() as u64) as usize].host.clone())
}

impl HostInner {
    fn cluster(&self) -> &Cluster {
        self.cluster.as_ref().expect("a cluster host")
    }

    /// Sends a stub's call to the object's owner (see the module docs). The stub keeps the container that
    /// answered (`binding`): its later calls go to it first, and once it was reset they fail with its error,
    /// as on a lone host (spec §6.2).
    pub(super) fn send_remote(
        self: Rc<Self>,
        class: Rc<ClassEntry>,
        id: ObjectId,
        binding: &StubBinding,
        location_hint: Option<String>,
        bytes: usize,
        call: Call,
    ) -> LocalFuture<'static, Result<Reply, Error>> {
        let bound = RemoteBinding::of(binding);
        Box::pin(async move {
            if let Some(e) = bound.broken.borrow().clone() {
                return Err(e);
            }
            // A fetch asking for a WebSocket opens its connection first: frames the object sends before the
            // answer arrives are kept.
            let upgrade = match &call {
                Call::Fetch(r) if wants_websocket(r) => Some(self.cluster().streams.open_client()),
                _ => None,
            };
            let mut message = ObjectCall {
                namespace: class.namespace.uid.to_string(),
                id: WireId::of(&id),
                call: match call {
                    Call::Fetch(r) => WireCall::Fetch(r),
                    Call::Rpc { method, args } => WireCall::Rpc { method, args },
                },
                bytes: bytes as u64,
                bound: None,
                upgrade: upgrade.as_ref().map(|u| u.conn()),
            };
            let key: AlarmKey = (class.namespace.uid.clone(), *id.as_bytes());
            let at = bound.at.borrow().clone();
            let mut target = match &at {
                Some((host, _)) => Some(host.clone()),
                None => self.cluster().owners.borrow().get(&key).cloned(),
            };
            for _ in 0..ROUTE_HOPS_MAX {
                let to = match target.take() {
                    Some(t) => t,
                    None => match self.find_owner(&class, &id, location_hint.as_deref()).await? {
                        Some(t) => t,
                        None => {
                            madsim_tokio::time::sleep(ROUTE_RETRY_DELAY).await;
                            continue;
                        }
                    },
                };
                message.bound = at.as_ref().filter(|(host, _)| *host == to).map(|(_, serial)| *serial);
                let body = wire::encode(&message);
                let local = to == self.cluster().me() && self.cluster().role == ClusterRole::Host;
                let reply = if local {
                    self.clone().serve(body, None).await
                } else {
                    let answer = match self.cluster().rpc.call(&to, body, REMOTE_CALL_TIMEOUT).await {
                        Ok(answer) => answer,
                        Err(e) => {
                            // The call may have run: it is not resent. The next call asks the directory.
                            self.cluster().owners.borrow_mut().remove(&key);
                            return Err(e);
                        }
                    };
                    wire::decode::<ObjectReply>(&answer, "object reply")?
                };
                match reply {
                    ObjectReply::Done { container, outcome } => {
                        *bound.at.borrow_mut() = Some((to.clone(), container));
                        return match outcome {
                            Outcome::Response(mut r) => {
                                if let Some(upgrade) = upgrade {
                                    // Another host's 101 carries no end across the network: the caller's end is
                                    // the connection it opened. (Answered on this host, the response carries
                                    // the object's pair itself, and the opened connection is abandoned.)
                                    if r.status() == 101 && !local && r.websocket().is_none() {
                                        r = r.with_websocket(upgrade.connected(&to));
                                    }
                                }
                                self.cluster().remember_owner(key, to);
                                Ok(Reply::Response(r))
                            }
                            Outcome::Rpc(r) => {
                                self.cluster().remember_owner(key, to);
                                Ok(Reply::Rpc(r))
                            }
                            Outcome::Error(e) => {
                                let e = e.error();
                                if e.durable_object_reset() {
                                    *bound.broken.borrow_mut() = Some(e.clone());
                                }
                                Err(e)
                            }
                        };
                    }
                    ObjectReply::Failed(e) => return Err(e.error()),
                    ObjectReply::NotOwner { owner } => {
                        self.cluster().owners.borrow_mut().remove(&key);
                        tracing::debug!(target: "dosim::runtime", "{to} does not own {id}; owner {owner:?}");
                        if owner.is_none() {
                            madsim_tokio::time::sleep(ROUTE_RETRY_DELAY).await;
                        }
                        target = owner;
                    }
                }
            }
            tracing::debug!(target: "dosim::runtime", "no host took the call to {id} in {ROUTE_HOPS_MAX} tries");
            Err(Error::new(messages::NETWORK_CONNECTION_LOST).with_retryable())
        })
    }

    /// Where a call to the object should go: its owner, or the host placement picks.
    async fn find_owner(
        &self,
        class: &ClassEntry,
        id: &ObjectId,
        location_hint: Option<&str>,
    ) -> Result<Option<String>, Error> {
        let cluster = self.cluster();
        if let Some(owner) = cluster.directory.owner(&class.namespace.uid, id).await? {
            return Ok(Some(owner.host));
        }
        Ok(place(&cluster.directory.members().await?, id, location_hint))
    }

    /// Serves an object call that arrived from another node (or from this one): claims the object if this
    /// host does not own it yet, and runs the call on its instance.
    /// `from`: the calling node, `None` when the call came from this host itself.
    pub(super) fn serve(
        self: Rc<Self>,
        body: Vec<u8>,
        from: Option<String>,
    ) -> LocalFuture<'static, ObjectReply> {
        Box::pin(async move {
            match self.serve_call(body, from).await {
                Ok(reply) => reply,
                Err(e) => ObjectReply::Failed(WireError::of(&e)),
            }
        })
    }

    async fn serve_call(self: Rc<Self>, body: Vec<u8>, from: Option<String>) -> Result<ObjectReply, Error> {
        let call: ObjectCall = wire::decode(&body, "object call")?;
        let class = self.classes.get(call.namespace.as_str()).cloned().ok_or_else(|| {
            Error::new(messages::internal_error(&format!(
                "a call to namespace {} reached a host that does not run it",
                call.namespace
            )))
        })?;
        let id = call.id.id(&class.namespace.key)?;
        // A stub bound to a container that broke keeps getting its error (spec §6.2).
        if let Some(serial) = call.bound {
            if let Some(e) = self.broken_containers.borrow().get(&serial) {
                return Ok(ObjectReply::Done {
                    container: serial,
                    outcome: Outcome::Error(WireError::of(e)),
                });
            }
        }
        let (instance, container) = match self.activate(&class, &id).await? {
            Ok(activated) => activated,
            Err(owner) => return Ok(ObjectReply::NotOwner { owner }),
        };
        let done = |outcome| ObjectReply::Done { container, outcome };
        if matches!(call.call, WireCall::Activate) {
            return Ok(done(Outcome::Rpc(Vec::new())));
        }
        if let Err(e) = self.admit(&class, &id, &instance, call.bytes as usize) {
            return Ok(done(Outcome::Error(WireError::of(&e))));
        }
        let what = match &call.call {
            WireCall::Fetch(request) => crate::namespace::describe_fetch(request),
            WireCall::Rpc { method, args } => crate::namespace::describe_rpc(method, args),
            WireCall::Activate => unreachable!("answered before delivery"),
        };
        let upgrade = call.upgrade.clone();
        let reply =
            instance.deliver(EventKind::Request, call.bytes as usize, what, move |object| match call.call {
                WireCall::Fetch(request) => {
                    let reply = object.fetch(request);
                    Box::pin(async move { reply.await.map(Outcome::Response) })
                }
                WireCall::Rpc { method, args } => {
                    let reply = object.call(&method, args);
                    Box::pin(async move { reply.await.map(Outcome::Rpc) })
                }
                WireCall::Activate => unreachable!("answered before delivery"),
            });
        let mut outcome = reply.await.unwrap_or_else(|e| Outcome::Error(WireError::of(&e)));
        if let (Outcome::Response(r), Some(from)) = (&mut outcome, from) {
            // A WebSocket end for a caller on another node: bound to the connection the caller opened, or
            // dropped if it opened none.
            if let Some(end) = r.take_websocket() {
                match upgrade {
                    Some(conn) => self.cluster().streams.accept(conn, &from, &end),
                    None => end.drop_connection(),
                }
            }
        }
        Ok(done(outcome))
    }

    /// Hands the alarm of an object that `owner` owns over to it: activates the object there (its activation
    /// notes the alarm stored with the object in the owner's index). Ok once the owner answered.
    pub(super) async fn hand_off_alarm(
        &self,
        class: &ClassEntry,
        id: &ObjectId,
        owner: &str,
    ) -> Result<(), Error> {
        let message = ObjectCall {
            namespace: class.namespace.uid.to_string(),
            id: WireId::of(id),
            call: WireCall::Activate,
            bytes: 0,
            bound: None,
            upgrade: None,
        };
        let answer = self.cluster().rpc.call(owner, wire::encode(&message), REMOTE_CALL_TIMEOUT).await?;
        match wire::decode::<ObjectReply>(&answer, "object reply")? {
            ObjectReply::Done { .. } => Ok(()),
            ObjectReply::Failed(e) => Err(e.error()),
            ObjectReply::NotOwner { .. } => {
                Err(Error::new(messages::NETWORK_CONNECTION_LOST).with_retryable())
            }
        }
    }

    /// Makes this host the object's active owner: claims it (unless it owns it under its current lease),
    /// rebuilds its replica and starts its instance (once at a time), and notes the alarm stored with the
    /// object in this host's index (an object that moved here brings its alarm). `Err(owner)`: this host may
    /// not run it now; another host owns it (its address, if known). With the instance: its container's
    /// serial, which a remote stub binds to.
    pub(super) async fn activate(
        self: &Rc<Self>,
        class: &Rc<ClassEntry>,
        id: &ObjectId,
    ) -> Result<Result<(Rc<Instance>, u64), Option<String>>, Error> {
        let cluster = self.cluster();
        if cluster.role != ClusterRole::Host || self.closed.get() {
            return Ok(Err(None));
        }
        let Some(lease) = cluster.valid_lease() else { return Ok(Err(None)) };
        for _ in 0..ACTIVATE_ATTEMPTS_MAX {
            let container = self.route(class, id, None)?;
            let owned = container.ownership.get().is_some_and(|(l, _)| l == lease.lease());
            if !owned {
                match lease.claim(&class.namespace.uid, id).await? {
                    Claim::Owned { epoch } => container.ownership.set(Some((lease.lease(), epoch))),
                    Claim::OwnedBy(o) => return Ok(Err(Some(o.host))),
                }
            }
            // One activation at a time: the replica is rebuilt from the storage node, then the instance starts
            // on it.
            let _activating = container.activating.lock().await;
            // Waiting for the lock took time: the lease may have lapsed meanwhile, and the host given up its
            // ownerships (found by the object-cluster scenario). Then nothing has run, and "not the owner" is
            // safe to resend.
            let Some((_, epoch)) = container.ownership.get().filter(|(l, _)| *l == lease.lease()) else {
                return Ok(Err(None));
            };
            let fresh = !container.has_live_instance();
            if fresh {
                self.prepare_replica(class, id, &container, epoch).await?;
            }
            // The claim and the rebuild took time: check again that the belief holds as the event starts.
            if !lease.is_valid() {
                return Ok(Err(None));
            }
            // And the instance may have been evicted or reset meanwhile, its container leaving the host's map
            // (found by the swarm scenario: an eviction while a call waited for the lock). A new container
            // takes its place: activate that one.
            if !self.is_attached(&container.key, &container) {
                tracing::debug!(target: "dosim::runtime", "{id}: its container left while it was activated; again");
                continue;
            }
            let instance = container.instance()?;
            if fresh {
                if let Some(t) = instance.storage.get_alarm().await? {
                    self.alarms.note(&container.key, t)?;
                }
            }
            return Ok(Ok((instance, container.serial)));
        }
        // Evicted or reset at every attempt: nothing ran, so the caller may resend.
        Ok(Err(None))
    }

    /// Opens the object at its storage node under `epoch` (which fences older owners there), for the
    /// instance about to start: a SQLite-backed object's replica is rebuilt from the node's pages, a
    /// KV-backend object gets a [`RemoteKvStore`](replication::kv::RemoteKvStore) on the node. Nothing to do
    /// without storage nodes.
    async fn prepare_replica(
        &self,
        class: &ClassEntry,
        id: &ObjectId,
        container: &Container,
        epoch: i64,
    ) -> Result<(), Error> {
        let cluster = self.cluster();
        let object = format!("{}/{id}", class.namespace.uid);
        let Some(node) = replication::node_of(&cluster.storage_nodes, &object) else { return Ok(()) };
        if class.backend == deploy::BackendKind::Kv {
            let per = self.config.actor_cache.max_keys_per_rpc.max(1);
            let limits = replication::kv::RemoteKvLimits {
                keys_per_rpc: per,
                block: u32::try_from(per).unwrap_or(u32::MAX).min(crate::wire::KV_BLOCK_MAX),
                ..Default::default()
            };
            let store =
                replication::kv::RemoteKvStore::open(&cluster.rpc, node, &object, epoch, limits).await?;
            *container.kv_store.borrow_mut() = Some(store);
            return Ok(());
        }
        let local = self.storage.object_database(&class.namespace.uid, id);
        let shim = replica::register(local.vfs()).map_err(|e| Error::new(e.to_string()))?;
        let location = local.with_vfs(shim);
        let ships = replication::open(&cluster.rpc, node, &object, epoch, &location).await?;
        *container.replica.borrow_mut() = Some((location, ships));
        Ok(())
    }

    /// Gives up the lease (a shutdown): forgets every ownership, and revokes the lease if the store answers,
    /// so that the directory frees this host's objects at once.
    pub(super) async fn give_up_lease(&self) {
        let lease = self.cluster().lease.borrow_mut().take();
        for c in self.containers.borrow().values() {
            c.ownership.set(None);
        }
        if let Some(lease) = lease {
            let revoke = self.cluster().store.revoke(lease.lease());
            let _ = madsim_tokio::time::timeout(REVOKE_TIMEOUT, revoke).await;
        }
    }

    /// Resets every live instance and forgets every ownership: the lease is no longer believed live.
    fn give_up_ownerships(&self) {
        let containers: Vec<_> = self.containers.borrow().values().cloned().collect();
        for c in containers {
            c.ownership.set(None);
            let instance = c.instance.borrow().clone();
            if let Some(i) = instance {
                i.reset(Error::new(messages::STORAGE_NO_LONGER_ACCESSIBLE).with_retryable().with_reset());
            }
        }
        // Hibernated objects' sockets too: this host runs none of its objects any more (spec §7: a
        // superseded instance's sockets close).
        self.drop_all_sockets();
    }
}

/// The host's membership: joins the directory, watches the lease's belief, and when it lapses gives up
/// every ownership and joins again. Runs until the host drops.
pub(super) async fn membership(host: Weak<HostInner>) {
    loop {
        let Some(inner) = host.upgrade() else { return };
        let store = inner.cluster().store.clone();
        let me = inner.cluster().me();
        let location = inner.cluster().location.clone();
        drop(inner);
        let lease = match HostLease::join_at(store, &me, location.as_deref()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(target: "dosim::runtime", "host {me}: join failed: {}", e.message());
                madsim_tokio::time::sleep(REJOIN_DELAY).await;
                continue;
            }
        };
        let Some(inner) = host.upgrade() else { return };
        *inner.cluster().lease.borrow_mut() = Some(lease.clone());
        drop(inner);
        // Sleep until the belief may lapse; renewals push it further.
        while lease.is_valid() {
            madsim_tokio::time::sleep_until(lease.valid_until()).await;
        }
        let Some(inner) = host.upgrade() else { return };
        tracing::debug!(target: "dosim::runtime", "host {me}: its lease lapsed; its instances are reset");
        *inner.cluster().lease.borrow_mut() = None;
        inner.give_up_ownerships();
        // The old lease may still come back (the partition healed before the store expired it), but its
        // ownerships were given up: revoke it if the store answers (freeing its objects for other hosts at
        // once), and join afresh.
        let store = inner.cluster().store.clone();
        drop(inner);
        let revoke = store.revoke(lease.lease());
        let _ = madsim_tokio::time::timeout(REVOKE_TIMEOUT, revoke).await;
        drop(lease);
    }
}

/// The handler a host serves its node's calls with.
pub(super) fn handler(host: Weak<HostInner>) -> crate::rpc::Handler {
    Rc::new(move |from, body| {
        let host = host.clone();
        Box::pin(async move {
            let reply = match host.upgrade() {
                Some(inner) => inner.serve(body, Some(from)).await,
                None => ObjectReply::Failed(WireError::of(
                    &Error::new(messages::INSTANCE_NO_LONGER_ACTIVE).with_retryable(),
                )),
            };
            wire::encode(&reply)
        })
    })
}

/// Whether `request` asks for a WebSocket (`Upgrade: websocket`).
fn wants_websocket(request: &crate::http::Request) -> bool {
    request.headers().get("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}
