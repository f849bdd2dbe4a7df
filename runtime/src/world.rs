//! What the world provides to the runtime: the traits an embedder implements (the simulation, or real mode).
//!
//! They live in this one file, and [`crate::embed`] is their door. The runtime reaches time, randomness,
//! databases, durability and the KV store's link only through them, so the same runtime code runs under
//! simulation and for real.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::Error;
use crate::id::ObjectId;
use crate::location::DatabaseLocation;

/// A boxed task storage hands to the runtime.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where a host keeps its databases: the storage interface the runtime owns (the simulation's disk or real
/// files sit behind it).
pub trait StorageProvider {
    /// The database of object `id` of the namespace `namespace_uid` (stable across renames, spec §9).
    fn object_database(&self, namespace_uid: &str, id: &ObjectId) -> DatabaseLocation;
    /// The host's alarm index.
    fn alarm_index(&self) -> DatabaseLocation;
    /// How long writes take to become durable after `COMMIT` returns.
    fn durability(&self) -> Arc<dyn DurabilityWait>;
    /// Deletes every object database of a namespace (its class was deleted, spec §9).
    fn delete_namespace(&self, namespace_uid: &str) -> Result<(), Error>;
    /// The ids (their 64-hex-digit string form) of the objects of the namespace `namespace_uid` that have a
    /// database here, in any order. The default: not supported.
    fn list_objects(&self, namespace_uid: &str) -> Result<Vec<String>, Error> {
        let _ = namespace_uid;
        Err(Error::new("listing a namespace's objects is not supported by this storage provider"))
    }
    /// The way to the KV backend's storage, if it is modelled as remote (see [`StoreLink`]). None: local.
    fn kv_link(&self) -> Option<Arc<dyn StoreLink>> {
        None
    }
}

/// The current time of the node the object runs on, in ms since the Unix epoch.
pub trait Clock: Send + Sync {
    /// Now, in ms since the epoch.
    fn now_ms(&self) -> i64;
}

/// A clock the caller sets by hand (tests; embedders without a notion of time, where it stays at 0).
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    /// A clock showing `ms`.
    pub fn new(ms: i64) -> ManualClock {
        ManualClock(std::sync::atomic::AtomicI64::new(ms))
    }

    /// Sets the time.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// Moves the time forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Where the runtime's randomness comes from: the simulation's RNG under simulation, the OS in real mode.
pub trait Entropy {
    /// Fills `buf` with random bytes.
    fn fill(&self, buf: &mut [u8]);
}

/// How long a database's writes take to become durable, beyond the synchronous SQLite call: a real file is
/// durable when `COMMIT` returns; the simulated disk charges its latency afterwards. The embedder supplies it.
pub trait DurabilityWait: Send + Sync + 'static {
    /// Waits until the writes made so far are durable.
    fn wait(&self) -> Task;
}

/// A durability wait that does not wait: `COMMIT` with `synchronous=FULL` returned, so the data is durable.
#[derive(Debug, Default)]
pub struct DurableOnReturn;

impl DurabilityWait for DurableOnReturn {
    fn wait(&self) -> Task {
        Box::pin(async {})
    }
}

/// The way from an object to its KV storage: what one request to it costs.
pub trait StoreLink: Send + Sync + 'static {
    /// Resolves when a request has reached storage.
    fn travel(&self) -> Task;
}

/// A boxed future of a [`Coordinator`] call. Not `Send`: the directory runs on its host's thread.
pub type CoordFuture<T> = Pin<Box<dyn Future<Output = Result<T, CoordError>>>>;

/// Why a [`Coordinator`] call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoordError {
    /// No answer in time, or the connection failed: the call may or may not have applied.
    Unavailable(String),
    /// The store answered with an error (a lease it does not know, a request it rejects).
    Rejected(String),
}

impl std::fmt::Display for CoordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CoordError::Unavailable(why) => write!(f, "the coordination store is unavailable: {why}"),
            CoordError::Rejected(why) => write!(f, "the coordination store rejected the call: {why}"),
        }
    }
}

/// A record of the coordination store: its value and the store revision of its last change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoordRecord {
    /// The value.
    pub value: Vec<u8>,
    /// The revision at which it was last written (etcd's `mod_revision`).
    pub mod_revision: i64,
}

/// A conditional write: if every key of `if_equal` exists and holds exactly its value, the `puts` and then
/// the `deletes` apply, atomically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoordTxn {
    /// The conditions: `(key, value)`, each an equality compare on an existing key.
    pub if_equal: Vec<(String, Vec<u8>)>,
    /// `(key, value, lease)`: writes, each bound to a lease if one is given.
    pub puts: Vec<(String, Vec<u8>, Option<i64>)>,
    /// Keys to delete.
    pub deletes: Vec<String>,
}

/// The coordination store under the directory ([`crate::directory`]): a subset of etcd's v3 API, the
/// operations whose semantics madsim's simulated etcd and a real etcd share. Not used: compares on a
/// missing key (they succeed in the simulator and fail in etcd), version or revision compares (the
/// simulator has only value compares), watches and elections (the simulator wakes their waiters in `HashMap`
/// order).
pub trait Coordinator {
    /// Grants a lease of `ttl_s` seconds; its id.
    fn grant_lease(&self, ttl_s: i64) -> CoordFuture<i64>;
    /// Renews a lease; the TTL it has now, in seconds (0 or less: the lease is gone).
    fn keep_alive(&self, lease: i64) -> CoordFuture<i64>;
    /// Revokes a lease, deleting its keys.
    fn revoke(&self, lease: i64) -> CoordFuture<()>;
    /// The record of `key`, if it exists.
    fn get(&self, key: String) -> CoordFuture<Option<CoordRecord>>;
    /// Every record whose key starts with `prefix`, in key order.
    fn list(&self, prefix: String) -> CoordFuture<Vec<(String, CoordRecord)>>;
    /// Writes `key` (bound to `lease` if given); the revision of the write.
    fn put(&self, key: String, value: Vec<u8>, lease: Option<i64>) -> CoordFuture<i64>;
    /// Applies `txn`: if its conditions held, the transaction's revision, which is the revision of its first
    /// put (in etcd every write of a transaction has the transaction's revision; in madsim's simulator its
    /// writes take successive revisions from it); `None` if they did not hold.
    fn txn(&self, txn: CoordTxn) -> CoordFuture<Option<i64>>;
}

/// A message a [`Transport`] received: the sender's address and the bytes.
pub type Datagram = (String, Vec<u8>);

/// The network between the cluster's nodes, as the runtime sees it: unreliable datagrams between addresses
/// (strings the embedder defines). A message may be lost, duplicated, delayed or reordered; the runtime's
/// calls on top of it (request ids, timeouts, at-most-once execution) cope.
pub trait Transport {
    /// This node's address.
    fn local_addr(&self) -> String;
    /// Sends `payload` to `to`. Fire and forget. An address that does not parse is dropped like a message to
    /// nobody.
    fn send(&self, to: &str, payload: Vec<u8>);
    /// The next message. Called by one task at a time; cancelling it loses no message.
    fn recv(&self) -> Pin<Box<dyn Future<Output = Datagram> + '_>>;
}
