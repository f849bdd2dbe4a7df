//! The storage "RPC" beneath the actor cache (spec §2.3): what the cache asks of the durable store.
//!
//! Every call is asynchronous and returns a boxed future, so a test can hold each call pending and complete
//! it by hand, in any order, with a value or a failure. A store has no cache and no gates of its own.

use std::future::Future;
use std::pin::Pin;

use crate::error::Error;

/// A future a [`KvStore`] returns.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// Why a storage call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The connection to storage was lost (kj DISCONNECTED, not an application error). Retried: a flush up to
    /// 4 times, a read once (§2.3). Shown to the application as `Network connection lost.` (retryable).
    Disconnected(String),
    /// A failure that carries an application-visible error (a tunneled `jsg.` error): its text is kept.
    Failed(Error),
    /// Any other failure (kj FAILED, not a `jsg.` error): shown with the `reference = <id>` forms of §0/§2.3,
    /// the description itself is not shown. (This variant is an addition to the two of the brief: without it,
    /// spec statement 43, a non-jsg non-DISCONNECTED failure, cannot be expressed.)
    Internal(String),
}

/// A range for [`KvStore::list`]: `start` inclusive, `end` exclusive (none: to the last key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListRequest {
    /// First key, inclusive.
    pub start: String,
    /// Key past the range, exclusive.
    pub end: Option<String>,
    /// Descending order, from the top of the range.
    pub reverse: bool,
    /// At most this many pairs.
    pub limit: Option<usize>,
}

/// One atomic write (one flush, §2.2–2.3).
///
/// Applied in this order, all or nothing: `delete_all` (every key), then each counted delete, then the muted
/// deletes, then the puts, then the conditional alarm delete, then the alarm change. The order matters only where a key appears twice: a counted
/// delete of a key that a later put overwrote is applied first, so its count is that of the old state
/// (statement 29), and the put wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Delete every key first (deleteAll, §2.6); the alarm is not touched by it.
    pub delete_all: bool,
    /// Deletes whose caller awaits a count: each needs its own count back, in [`CommitResult::counts`].
    pub counted_deletes: Vec<Vec<String>>,
    /// Deletes whose count nobody needs, sorted.
    pub muted_deletes: Vec<String>,
    /// Puts, sorted by key.
    pub puts: Vec<(String, Vec<u8>)>,
    /// Deletes the alarm only if it is set to exactly this time (the deferred delete of an alarm that ran, or
    /// an abandoned alarm, §4); whether it did is [`CommitResult::alarm_deleted`]. Applied before `alarm`.
    pub alarm_delete_if: Option<i64>,
    /// `Some(Some(t))` sets the alarm to `t` ms; `Some(None)` deletes it; `None` leaves it.
    pub alarm: Option<Option<i64>>,
}

impl Batch {
    /// Whether it writes nothing.
    pub fn is_empty(&self) -> bool {
        !self.delete_all
            && self.counted_deletes.is_empty()
            && self.muted_deletes.is_empty()
            && self.puts.is_empty()
            && self.alarm.is_none()
            && self.alarm_delete_if.is_none()
    }
}

/// What a committed [`Batch`] reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitResult {
    /// For each counted delete, in order, how many of its keys existed.
    pub counts: Vec<usize>,
    /// With `delete_all`, how many keys it deleted.
    pub deleted_all: usize,
    /// With `alarm_delete_if`, whether the alarm was set to that time (and so deleted).
    pub alarm_deleted: bool,
}

/// The durable store beneath one object's actor cache.
pub trait KvStore: Send + Sync + 'static {
    /// The present keys among `keys`, with their values, in any order.
    fn get(&self, keys: Vec<String>) -> StoreFuture<Vec<(String, Vec<u8>)>>;

    /// The pairs of the range, ascending (descending with `reverse`), at most `limit`.
    fn list(&self, request: ListRequest) -> StoreFuture<Vec<(String, Vec<u8>)>>;

    /// The alarm time in ms, if set.
    fn get_alarm(&self) -> StoreFuture<Option<i64>>;

    /// Applies `batch` atomically.
    fn commit(&self, batch: Batch) -> StoreFuture<CommitResult>;

    /// The cache above has shut down: release the store's resources (its database and the lock on it, which
    /// the object's next instance needs) once the requests on their way have finished. Later requests fail.
    /// By default nothing is held.
    fn close(&self) {}

    /// Deletes every key (not the alarm); how many there were. By default a commit of a batch with only
    /// `delete_all`.
    fn delete_all(&self) -> StoreFuture<usize> {
        let f = self.commit(Batch { delete_all: true, ..Batch::default() });
        Box::pin(async move { f.await.map(|r| r.deleted_all) })
    }
}
