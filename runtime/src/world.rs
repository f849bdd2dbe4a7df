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
