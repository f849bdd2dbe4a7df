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
use crate::directory::{Claim, Directory, HostLease};
use crate::error::{messages, Error};
use crate::future::LocalFuture;
use crate::id::ObjectId;
use crate::instance::EventKind;
use crate::namespace::{Call, Reply};
use crate::rpc::RpcNode;
use crate::wire::{self, ObjectCall, ObjectReply, WireCall, WireError, WireId};
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
/// How long a host waits before joining the directory again after a failed attempt.
const REJOIN_DELAY: Duration = Duration::from_millis(500);
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
}

impl Cluster {
    pub(crate) fn new(
        rpc: Rc<RpcNode>,
        store: Rc<dyn Coordinator>,
        role: ClusterRole,
        storage_nodes: Vec<String>,
    ) -> Cluster {
        Cluster {
            storage_nodes,
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

    /// The lease this host acts under, if it believes it live.
    fn valid_lease(&self) -> Option<Rc<HostLease>> {
        self.lease.borrow().clone().filter(|l| l.is_valid())
    }

    fn me(&self) -> String {
        self.rpc.local_addr()
    }
}

/// The host that placement picks for an object nobody owns: the id's hash over the live hosts, in address
/// order (location hints would weigh in here).
fn place(hosts: &[String], id: &ObjectId) -> Option<String> {
    if hosts.is_empty() {
        return None;
    }
    let b = id.as_bytes();
    let h = u64::from_be_bytes([b[24], b[25], b[26], b[27], b[28], b[29], b[30], b[31]]);
    Some(hosts[(h % hosts.len() as u64) as usize].clone())
}

impl HostInner {
    fn cluster(&self) -> &Cluster {
        self.cluster.as_ref().expect("a cluster host")
    }

    /// Sends a stub's call to the object's owner (see the module docs).
    pub(super) fn send_remote(
        self: Rc<Self>,
        class: Rc<ClassEntry>,
        id: ObjectId,
        bytes: usize,
        call: Call,
    ) -> LocalFuture<'static, Result<Reply, Error>> {
        Box::pin(async move {
            let message = ObjectCall {
                namespace: class.namespace.uid.to_string(),
                id: WireId::of(&id),
                call: match call {
                    Call::Fetch(r) => WireCall::Fetch(r),
                    Call::Rpc { method, args } => WireCall::Rpc { method, args },
                },
                bytes: bytes as u64,
            };
            let body = wire::encode(&message);
            let key: AlarmKey = (class.namespace.uid.clone(), *id.as_bytes());
            let mut target = self.cluster().owners.borrow().get(&key).cloned();
            for _ in 0..ROUTE_HOPS_MAX {
                let to = match target.take() {
                    Some(t) => t,
                    None => match self.find_owner(&class, &id).await? {
                        Some(t) => t,
                        None => {
                            madsim_tokio::time::sleep(ROUTE_RETRY_DELAY).await;
                            continue;
                        }
                    },
                };
                let reply = if to == self.cluster().me() && self.cluster().role == ClusterRole::Host {
                    self.clone().serve(body.clone()).await
                } else {
                    let answer = match self.cluster().rpc.call(&to, body.clone(), REMOTE_CALL_TIMEOUT).await {
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
                    ObjectReply::Response(r) => {
                        self.cluster().owners.borrow_mut().insert(key, to);
                        return Ok(Reply::Response(r));
                    }
                    ObjectReply::Rpc(r) => {
                        self.cluster().owners.borrow_mut().insert(key, to);
                        return Ok(Reply::Rpc(r));
                    }
                    ObjectReply::Error(e) => return Err(e.error()),
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
    async fn find_owner(&self, class: &ClassEntry, id: &ObjectId) -> Result<Option<String>, Error> {
        let cluster = self.cluster();
        if let Some(owner) = cluster.directory.owner(&class.namespace.uid, id).await? {
            return Ok(Some(owner.host));
        }
        Ok(place(&cluster.directory.hosts().await?, id))
    }

    /// Serves an object call that arrived from another node (or from this one): claims the object if this
    /// host does not own it yet, and runs the call on its instance.
    pub(super) fn serve(self: Rc<Self>, body: Vec<u8>) -> LocalFuture<'static, ObjectReply> {
        Box::pin(async move {
            match self.serve_call(body).await {
                Ok(reply) => reply,
                Err(e) => ObjectReply::Error(WireError::of(&e)),
            }
        })
    }

    async fn serve_call(self: Rc<Self>, body: Vec<u8>) -> Result<ObjectReply, Error> {
        let call: ObjectCall = wire::decode(&body, "object call")?;
        let class = self.classes.get(call.namespace.as_str()).cloned().ok_or_else(|| {
            Error::new(messages::internal_error(&format!(
                "a call to namespace {} reached a host that does not run it",
                call.namespace
            )))
        })?;
        let id = call.id.id(&class.namespace.key)?;
        let cluster = self.cluster();
        if cluster.role != ClusterRole::Host {
            return Ok(ObjectReply::NotOwner { owner: None });
        }
        let Some(lease) = cluster.valid_lease() else { return Ok(ObjectReply::NotOwner { owner: None }) };
        let container = self.route(&class, &id, None)?;
        let owned = container.ownership.get().is_some_and(|(l, _)| l == lease.lease());
        if !owned {
            match lease.claim(&class.namespace.uid, &id).await? {
                Claim::Owned { epoch } => container.ownership.set(Some((lease.lease(), epoch))),
                Claim::OwnedBy(o) => return Ok(ObjectReply::NotOwner { owner: Some(o.host) }),
            }
        }
        let instance = {
            // One activation at a time: the replica is rebuilt from the storage node, then the instance
            // starts on it.
            let _activating = container.activating.lock().await;
            // Waiting for the lock took time: the lease may have lapsed meanwhile, and the host given up its
            // ownerships. Then the call has not run, and "not the owner" is safe to resend.
            let Some((_, epoch)) = container.ownership.get().filter(|(l, _)| *l == lease.lease()) else {
                return Ok(ObjectReply::NotOwner { owner: None });
            };
            if !container.has_live_instance() {
                self.prepare_replica(&class, &id, &container, epoch).await?;
            }
            // The claim and the rebuild took time: check again that the belief holds as the event starts.
            if !lease.is_valid() {
                return Ok(ObjectReply::NotOwner { owner: None });
            }
            container.instance()?
        };
        instance.admit(call.bytes as usize)?;
        let reply =
            instance.deliver(EventKind::Request, call.bytes as usize, move |object| match call.call {
                WireCall::Fetch(request) => {
                    let reply = object.fetch(request);
                    Box::pin(async move { reply.await.map(ObjectReply::Response) })
                }
                WireCall::Rpc { method, args } => {
                    let reply = object.call(&method, args);
                    Box::pin(async move { reply.await.map(ObjectReply::Rpc) })
                }
            });
        reply.await
    }

    /// Rebuilds the object's replica from its storage node under `epoch` (which fences older owners there),
    /// for the instance about to start; nothing to do without storage nodes or for a KV-backend object.
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
        if class.backend != deploy::BackendKind::Sqlite {
            return Ok(());
        }
        let local = self.storage.object_database(&class.namespace.uid, id);
        let shim = replica::register(local.vfs()).map_err(|e| Error::new(e.to_string()))?;
        let location = local.with_vfs(shim);
        let ships = replication::open(&cluster.rpc, node, &object, epoch, &location).await?;
        *container.replica.borrow_mut() = Some((location, ships));
        Ok(())
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
    }
}

/// The host's membership: joins the directory, watches the lease's belief, and when it lapses gives up
/// every ownership and joins again. Runs until the host drops.
pub(super) async fn membership(host: Weak<HostInner>) {
    loop {
        let Some(inner) = host.upgrade() else { return };
        let store = inner.cluster().store.clone();
        let me = inner.cluster().me();
        drop(inner);
        let lease = match HostLease::join(store, &me).await {
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
    Rc::new(move |_from, body| {
        let host = host.clone();
        Box::pin(async move {
            let reply = match host.upgrade() {
                Some(inner) => inner.serve(body).await,
                None => ObjectReply::Error(WireError::of(
                    &Error::new(messages::INSTANCE_NO_LONGER_ACTIVE).with_retryable(),
                )),
            };
            wire::encode(&reply)
        })
    })
}
