//! The actor cache: the key-value backend of Durable Objects (spec `durable-objects.md` §2, workerd's
//! `ActorCache`), over an asynchronous [`KvStore`].
//!
//! # Entries
//! Each key the cache knows of has an entry (module `entries`): a value (present, absent, or unknown for the end
//! marker of a listed range), a status, and a flag saying the gap up to the next entry holds no key. The
//! status moves `Clean → Dirty` on a write, `Dirty → Flushing` when a flush collects it, `Flushing → Clean`
//! when that flush commits, and `Flushing → Dirty` if it is written again meanwhile. Only clean entries are
//! evicted (LRU over the soft limit, stale checks, `no_cache` writes once flushed); evicting one forgets the
//! gaps on both sides of it.
//!
//! # Flushes
//! The first write with no flush task running hands one task to [`TurnHooks::after_turn`](super::gates::TurnHooks::after_turn); it runs *rounds*
//! until nothing is dirty. A round first waits for every read started before it (§2.2), then collects every
//! dirty entry, pending counted delete and dirty alarm into one [`Batch`] and commits it; a DISCONNECTED
//! failure is retried up to 4 times, each retry re-collecting what was dirtied meanwhile (statement 35). A
//! pending deleteAll makes the round three commits: the writes made before it, the deleteAll (with the alarm
//! deletion if asked), then the writes made after it. Writes made during a round wait for the next one. The
//! output gate is locked from the first confirmed write of a round until the round commits; any other
//! failure breaks the gate and the cache (every later call fails with the same error).
//!
//! # Reads
//! A read answered from the cache is a ready future. Otherwise it reads storage, holding the input gate
//! unless `allow_concurrency`; DISCONNECTED is retried once. The answer is the state as of the call: values
//! seen in the cache at the call are pinned, and storage results only fill keys unknown at the call. Results
//! are cached only where the cache still knows nothing of the key (a later write wins), and a list caches its
//! gaps only if no eviction or deleteAll happened while it was out.
//!
//! # Transactions and alarms
//! [`ActorCache::transaction`] (in `transaction.rs`) buffers writes in a [`CacheTransaction`] and applies them
//! to the cache at once on success. [`ActorCache::arm_alarm_handler`] makes the running alarm read as deleted
//! and, when its [`DeferredAlarmDeleter`] drops, flushes a conditional delete ([`Batch::alarm_delete_if`]);
//! [`ActorCache::abandon_alarm`] flushes the same conditional delete without an output lock.
//!
//! # Error references
//! The `reference = <id>` of the internal-error messages (§0, §2.3) is deterministic: 16 lowercase hex digits
//! of the 64-bit FNV-1a hash of the failure's description followed by `#` and the cache's count of internal
//! errors so far (starting at 1), see [`error_reference`].

pub mod sqlite_store;
pub mod store;

mod entries;
mod transaction;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use madsim_tokio::sync::oneshot;
use madsim_tokio::time::Instant;

use self::entries::{Entries, Status, Val};
pub use self::store::{Batch, CommitResult, KvStore, ListRequest, StoreError, StoreFuture};
use super::gates::{Hooks, InputHold, OutputLock};
use super::kv::ListOptions;
use super::value::{check_key, check_key_count, check_value};
use crate::error::{messages, Error};

pub use self::entries::ENTRY_OVERHEAD;
pub use self::transaction::CacheTransaction;

/// A future an [`ActorCache`] call returns. The call takes effect when it is made; the future only reports
/// its outcome (a write's future is its backpressure signal).
pub type CacheFuture<T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'static>>;

/// Cache limits (§2.8); [`Default`] gives workerd's production values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActorCacheOptions {
    /// Over this many bytes, least recently used clean entries are evicted (16 MiB).
    pub soft_limit: usize,
    /// Over this many bytes with nothing evictable, the operation fails and the object resets (128 MiB).
    pub hard_limit: usize,
    /// Period of the stale checks (30 s).
    pub stale_timeout: Duration,
    /// Over this many dirty bytes, writes return a pending backpressure future (8 MiB).
    pub dirty_limit: usize,
    /// Most keys per storage get (128).
    pub max_keys_per_rpc: usize,
    /// `delete_all_deletes_alarm` (§2.6): deleteAll deletes the alarm too, after it succeeds.
    pub delete_all_deletes_alarm: bool,
}

impl Default for ActorCacheOptions {
    fn default() -> Self {
        ActorCacheOptions {
            soft_limit: 16 << 20,
            hard_limit: 128 << 20,
            stale_timeout: Duration::from_secs(30),
            dirty_limit: 8 << 20,
            max_keys_per_rpc: 128,
            delete_all_deletes_alarm: false,
        }
    }
}

/// Options of a read (§2.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetOptions {
    /// Do not hold the input gate while reading storage.
    pub allow_concurrency: bool,
    /// Do not cache what storage returns.
    pub no_cache: bool,
}

/// Options of a write (§2.5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Do not hold the input gate while waiting (accepted; writes do not read).
    pub allow_concurrency: bool,
    /// Do not hold the output gate for this write; a failure still resets the object.
    pub allow_unconfirmed: bool,
    /// Evict the entry as soon as it is flushed.
    pub no_cache: bool,
}

/// Options of `list()`: the range options of [`ListOptions`] plus the read options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheListOptions {
    /// Range, order and limit.
    pub list: ListOptions,
    /// Do not hold the input gate while reading storage.
    pub allow_concurrency: bool,
    /// Cache neither the entries nor the gaps storage reports.
    pub no_cache: bool,
}

/// A stored pair.
pub type Pair = (String, Vec<u8>);

type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// A delete whose caller awaits a count from storage.
struct Counted {
    keys: Vec<String>,
    cached: usize,
    reply: Reply<usize>,
}

/// Writes taken out of the cache for one commit.
#[derive(Default)]
struct Frozen {
    writes: BTreeMap<String, Option<Arc<[u8]>>>,
    counted: Vec<Counted>,
    alarm: Option<Option<i64>>,
    /// The deferred (conditional) alarm delete, by time.
    alarm_delete_if: Option<i64>,
}

impl Frozen {
    /// The batch, and the indexes in `counted` of the live counted deletes, in batch order.
    fn batch(&self) -> (Batch, Vec<usize>) {
        let mut batch =
            Batch { alarm: self.alarm, alarm_delete_if: self.alarm_delete_if, ..Batch::default() };
        let mut live = Vec::new();
        let mut counted_keys = BTreeSet::new();
        for (i, c) in self.counted.iter().enumerate() {
            // A counted delete whose caller dropped its future is muted (statement 30).
            if !c.reply.is_closed() {
                live.push(i);
                batch.counted_deletes.push(c.keys.clone());
                counted_keys.extend(c.keys.iter().cloned());
            }
        }
        for (k, v) in &self.writes {
            match v {
                Some(v) => batch.puts.push((k.clone(), v.to_vec())),
                None if !counted_keys.contains(k) => batch.muted_deletes.push(k.clone()),
                None => {}
            }
        }
        (batch, live)
    }

    fn is_empty(&self) -> bool {
        self.writes.is_empty()
            && self.counted.is_empty()
            && self.alarm.is_none()
            && self.alarm_delete_if.is_none()
    }
}

/// Where the deferred delete of a run alarm is (§4, statements 124–130).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeferredPhase {
    /// The handler is running.
    Waiting,
    /// The handler succeeded: the conditional delete is to be flushed.
    Ready,
    /// The conditional delete is in the flush in flight.
    Flushing,
}

/// The deferred delete of the alarm set for `time`.
#[derive(Clone, Copy, Debug)]
struct DeferredDelete {
    time: i64,
    /// Afterwards, leave the alarm unknown instead of caching it as deleted.
    no_cache: bool,
    phase: DeferredPhase,
}

/// Returned by [`ActorCache::arm_alarm_handler`] for a run that goes ahead: dropping it (the handler finished)
/// schedules the deferred delete of the alarm, unless [`ActorCache::cancel_deferred_alarm_deletion`] was
/// called first (the handler failed) or the handler wrote the alarm itself.
#[must_use = "dropping it at once deletes the alarm as if the handler had run"]
pub struct DeferredAlarmDeleter {
    cache: Option<ActorCache>,
}

impl std::fmt::Debug for DeferredAlarmDeleter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredAlarmDeleter").field("deletes", &self.cache.is_some()).finish()
    }
}

impl Drop for DeferredAlarmDeleter {
    fn drop(&mut self) {
        if let Some(cache) = self.cache.take() {
            let mut st = cache.lock();
            if st.broken.is_some() {
                return;
            }
            if let Some(d) = st.deferred.as_mut().filter(|d| d.phase == DeferredPhase::Waiting) {
                d.phase = DeferredPhase::Ready;
                cache.schedule(&mut st, PutOptions::default());
            }
        }
    }
}

struct PendingDeleteAll {
    pre: Frozen,
    replies: Vec<Reply<usize>>,
    delete_alarm: bool,
}

struct State {
    entries: Entries,
    /// The alarm: `None` unknown, else the known time.
    alarm: Option<Option<i64>>,
    alarm_status: Status,
    /// The alarm is to be deleted by the pending deleteAll.
    alarm_by_delete_all: bool,
    /// The deferred delete of a run alarm, if any.
    deferred: Option<DeferredDelete>,
    counted: Vec<Counted>,
    next_waiters: Vec<Reply<()>>,
    next_lock: Option<OutputLock>,
    current_waiters: Vec<Reply<()>>,
    current_locks: Vec<OutputLock>,
    delete_all: Option<PendingDeleteAll>,
    delete_all_epoch: u64,
    /// A flush task is scheduled or running.
    flush_task: bool,
    /// A round is past its read wait.
    in_flight: bool,
    reads: BTreeSet<u64>,
    next_read: u64,
    read_waiters: Vec<(u64, oneshot::Sender<()>)>,
    /// Bumped by every eviction and deleteAll.
    epoch: u64,
    broken: Option<Error>,
    backpressure: Vec<oneshot::Sender<()>>,
    internal_errors: u64,
    last_stale_check: Option<Instant>,
}

struct Inner {
    store: Arc<dyn KvStore>,
    hooks: Hooks,
    options: ActorCacheOptions,
    state: Mutex<State>,
}

/// The actor cache of one object (§2). Cheap to clone: clones share the cache.
#[derive(Clone)]
pub struct ActorCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ActorCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("ActorCache")
            .field("entries", &st.entries.len())
            .field("size", &st.entries.size)
            .field("dirty_bytes", &st.entries.dirty_bytes)
            .finish()
    }
}

/// The deterministic reference id of an internal error (see the module documentation).
pub fn error_reference(description: &str, seq: u64) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in description.bytes().chain(b"#".iter().copied()).chain(seq.to_string().bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn ready<T: Send + 'static>(r: Result<T, Error>) -> CacheFuture<T> {
    Box::pin(std::future::ready(r))
}

fn closed() -> Error {
    Error::new(messages::STORAGE_NO_LONGER_ACCESSIBLE).with_retryable().with_reset()
}

fn same(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Present(x), Val::Present(y)) => x == y,
        (Val::Absent, Val::Absent) => true,
        _ => false,
    }
}

/// A storage read in flight: holds the input gate (unless allowed concurrency) and keeps later flushes
/// waiting until it drops (completed or cancelled, statement 47).
struct ReadGuard {
    inner: Arc<Inner>,
    id: u64,
    _hold: Option<InputHold>,
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        st.reads.remove(&self.id);
        let min = st.reads.first().copied();
        let waiters = std::mem::take(&mut st.read_waiters);
        for (threshold, tx) in waiters {
            if min.is_none_or(|m| m >= threshold) {
                let _ = tx.send(());
            } else {
                st.read_waiters.push((threshold, tx));
            }
        }
    }
}

/// What a list saw in the cache when it was called.
struct Snapshot {
    entries: BTreeMap<String, (Val, bool)>,
}

impl Snapshot {
    fn lookup(&self, key: &str) -> Val {
        if let Some((v, _)) = self.entries.get(key) {
            return v.clone();
        }
        match self.entries.range::<str, _>((Bound::Unbounded, Bound::Excluded(key))).next_back() {
            Some((_, (_, true))) => Val::Absent,
            _ => Val::Unknown,
        }
    }
}

impl ActorCache {
    /// A cache over `store`, using `hooks` to reach the object's turns and gates.
    pub fn new(store: Arc<dyn KvStore>, hooks: Hooks, options: ActorCacheOptions) -> ActorCache {
        let state = State {
            entries: Entries::default(),
            alarm: None,
            alarm_status: Status::Clean,
            alarm_by_delete_all: false,
            deferred: None,
            counted: Vec::new(),
            next_waiters: Vec::new(),
            next_lock: None,
            current_waiters: Vec::new(),
            current_locks: Vec::new(),
            delete_all: None,
            delete_all_epoch: 0,
            flush_task: false,
            in_flight: false,
            reads: BTreeSet::new(),
            next_read: 0,
            read_waiters: Vec::new(),
            epoch: 0,
            broken: None,
            backpressure: Vec::new(),
            internal_errors: 0,
            last_stale_check: None,
        };
        ActorCache { inner: Arc::new(Inner { store, hooks, options, state: Mutex::new(state) }) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes the cache holds (entries' keys, values and [`ENTRY_OVERHEAD`]).
    pub fn size(&self) -> usize {
        self.lock().entries.size
    }

    /// Bytes of entries not yet flushed.
    pub fn dirty_bytes(&self) -> usize {
        self.lock().entries.dirty_bytes
    }

    /// Whether `key` is answered from the cache without storage (for tests and metrics).
    pub fn is_cached(&self, key: &str) -> bool {
        !matches!(self.lock().entries.lookup(key), Val::Unknown)
    }

    // ----- reads -------------------------------------------------------------------------------------------

    fn begin_read(&self, st: &mut State, allow_concurrency: bool) -> ReadGuard {
        let id = st.next_read;
        st.next_read += 1;
        st.reads.insert(id);
        let hold = (!allow_concurrency).then(|| self.inner.hooks.hold_input());
        ReadGuard { inner: self.inner.clone(), id, _hold: hold }
    }

    /// `wait`, awaited under the input gate unless `allow_concurrency` (spec §1.2): workerd awaits every
    /// storage promise that does not resolve at once with the input lock held (`awaitIoWithInputLock`): a
    /// read that missed the cache, a write's backpressure, a delete's count. Taken at the call, as the read's
    /// hold is, and released when `wait` completes.
    fn holding_input<T: Send + 'static>(
        &self,
        allow_concurrency: bool,
        wait: impl Future<Output = Result<T, Error>> + Send + 'static,
    ) -> CacheFuture<T> {
        let hold = (!allow_concurrency).then(|| self.inner.hooks.hold_input());
        Box::pin(async move {
            let result = wait.await;
            drop(hold);
            result
        })
    }

    fn internal_reference(&self, description: &str) -> String {
        let mut st = self.lock();
        st.internal_errors += 1;
        error_reference(description, st.internal_errors)
    }

    fn read_error(&self, e: StoreError) -> Error {
        match e {
            StoreError::Disconnected(_) => Error::new(messages::NETWORK_CONNECTION_LOST).with_retryable(),
            StoreError::Failed(e) => e,
            StoreError::Internal(d) => Error::new(messages::internal_error(&self.internal_reference(&d))),
        }
    }

    /// Runs a storage read, retrying a DISCONNECTED failure once (§2.3).
    ///
    /// `first` is the call already issued (storage is asked at the call, as workerd sends its RPC then).
    async fn read_retry<T>(&self, first: StoreFuture<T>, f: impl Fn() -> StoreFuture<T>) -> Result<T, Error> {
        match first.await {
            Ok(v) => Ok(v),
            Err(StoreError::Disconnected(_)) => f().await.map_err(|e| self.read_error(e)),
            Err(e) => Err(self.read_error(e)),
        }
    }

    fn check_open(&self, st: &State) -> Result<(), Error> {
        match &st.broken {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// After caching a read: evict to the soft limit; over the hard limit, fail and break (statement 108).
    fn enforce_limits(&self, st: &mut State) -> Result<(), Error> {
        if st.delete_all.is_none()
            && st.entries.size > self.inner.options.soft_limit
            && st.entries.evict_to(self.inner.options.soft_limit) > 0
        {
            st.epoch += 1;
        }
        if st.entries.size > self.inner.options.hard_limit {
            let e = Error::new(messages::CACHE_OVER_HARD_LIMIT).with_overloaded().with_reset();
            self.fail(st, e.clone());
            st.entries.clear();
            return Err(e);
        }
        Ok(())
    }

    /// `get(key)` (§2.4): the value, or `None`.
    pub fn get(&self, key: &str, options: GetOptions) -> CacheFuture<Option<Vec<u8>>> {
        if let Some(result) = self.get_cached(key, options, |v| v.map(<[u8]>::to_vec)) {
            return ready(result);
        }
        let me = self.clone();
        let key = key.to_owned();
        let f = self.get_multiple_inner(vec![key.clone()], options, false);
        Box::pin(async move {
            let _ = &me;
            Ok(f.await?.into_iter().find(|(k, _)| *k == key).map(|(_, v)| v))
        })
    }

    /// [`ActorCache::get`] answered at once when it needs no storage read: `f` of the value (`None` if the key
    /// is known absent), or `get`'s error (the cache is broken, the key is too large). `None` if the cache
    /// does not know the key; [`ActorCache::get`] then reads it. Either way the effects on the cache are
    /// `get`'s (the key becomes the most recently used; `no_cache` unset unless `options` sets it), and `f`
    /// runs after the cache's lock is released.
    pub fn get_cached<R>(
        &self,
        key: &str,
        options: GetOptions,
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Option<Result<R, Error>> {
        let mut st = self.lock();
        if let Err(e) = self.check_open(&st).and_then(|()| check_key(key)) {
            return Some(Err(e));
        }
        let value = match st.entries.read(key, !options.no_cache) {
            Val::Present(v) => Some(v),
            Val::Absent => None,
            Val::Unknown => return None,
        };
        drop(st);
        Some(Ok(f(value.as_deref())))
    }

    /// `get(keys[])` (§2.4): the present keys with their values, sorted, duplicates collapsed. More than 128
    /// keys is a `RangeError`; key sizes are not checked (as workerd).
    pub fn get_multiple(&self, keys: &[&str], options: GetOptions) -> CacheFuture<Vec<Pair>> {
        if let Err(e) = check_key_count(keys.len()) {
            return ready(Err(e));
        }
        self.get_multiple_inner(keys.iter().map(|k| (*k).to_owned()).collect(), options, true)
    }

    fn get_multiple_inner(
        &self,
        keys: Vec<String>,
        options: GetOptions,
        multi: bool,
    ) -> CacheFuture<Vec<Pair>> {
        let mut st = self.lock();
        if let Err(e) = self.check_open(&st) {
            return ready(Err(e));
        }
        if !multi {
            if let Err(e) = check_key(&keys[0]) {
                return ready(Err(e));
            }
        }
        let mut found: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut missing: BTreeSet<String> = BTreeSet::new();
        for k in keys {
            match st.entries.lookup(&k) {
                Val::Present(v) => {
                    st.entries.touch(&k);
                    if !options.no_cache {
                        st.entries.keep_cached(&k);
                    }
                    found.insert(k, v.to_vec());
                }
                Val::Absent => st.entries.touch(&k),
                Val::Unknown => {
                    missing.insert(k);
                }
            }
        }
        if missing.is_empty() {
            return ready(Ok(found.into_iter().collect()));
        }
        let guard = self.begin_read(&mut st, options.allow_concurrency);
        drop(st);
        let me = self.clone();
        let missing: Vec<String> = missing.into_iter().collect();
        let calls: Vec<(Vec<String>, StoreFuture<Vec<Pair>>)> = missing
            .chunks(self.inner.options.max_keys_per_rpc.max(1))
            .map(|chunk| (chunk.to_vec(), self.inner.store.get(chunk.to_vec())))
            .collect();
        Box::pin(async move {
            let mut got = Vec::new();
            for (chunk, first) in calls {
                let store = me.inner.store.clone();
                got.extend(me.read_retry(first, || store.get(chunk.clone())).await?);
            }
            let got: BTreeMap<String, Vec<u8>> =
                got.into_iter().filter(|(k, _)| missing.binary_search(k).is_ok()).collect();
            if !options.no_cache {
                let mut st = me.lock();
                for k in &missing {
                    if matches!(st.entries.lookup(k), Val::Unknown) {
                        let val = got.get(k).map_or(Val::Absent, |v| Val::Present(v.as_slice().into()));
                        st.entries.set(k, val, Status::Clean, false);
                    }
                }
                me.enforce_limits(&mut st)?;
            }
            drop(guard);
            found.extend(got);
            Ok(found.into_iter().collect())
        })
    }

    /// `list(options)` (§2.4): present pairs of the range, ascending (descending with `reverse`).
    pub fn list(&self, options: CacheListOptions) -> CacheFuture<Vec<Pair>> {
        let mut st = self.lock();
        if let Err(e) = self.check_open(&st) {
            return ready(Err(e));
        }
        if let Err(e) = options.list.validate() {
            return ready(Err(e));
        }
        let Some(range) = options.list.key_range() else { return ready(Ok(Vec::new())) };
        let limit = options.list.limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
        let reverse = options.list.reverse;
        // The snapshot: entries of the range, plus the one before it (whose gap may cover the start).
        let mut snap = Snapshot { entries: BTreeMap::new() };
        if let Some((k, e)) = st.entries.before(&range.start) {
            snap.entries.insert(k.clone(), (e.val.clone(), e.gap_after));
        }
        for (k, e) in st.entries.range(range.bounds()) {
            snap.entries.insert(k.clone(), (e.val.clone(), e.gap_after));
        }
        let keys: Vec<String> = st.entries.range(range.bounds()).map(|(k, _)| k.clone()).collect();
        keys.iter().for_each(|k| st.entries.touch(k));
        // Walk the part known from the cache, from the start (or from the end in reverse).
        let mut known: Vec<(String, Arc<[u8]>)> = Vec::new();
        let full = |known: &Vec<(String, Arc<[u8]>)>| limit.is_some_and(|l| known.len() >= l);
        // `Some(bound)`: storage must be read from/to this bound; `None`: the cache answers.
        let mut unknown_from: Option<String> = None;
        let mut unknown_to: Option<Option<String>> = None;
        if !reverse {
            let mut pos = range.start.clone();
            loop {
                if range.end.as_ref().is_some_and(|e| pos >= *e) || full(&known) {
                    break;
                }
                match snap.lookup(&pos) {
                    Val::Unknown => {
                        unknown_from = Some(pos);
                        break;
                    }
                    v => {
                        if let Val::Present(v) = v {
                            known.push((pos.clone(), v));
                            if full(&known) {
                                break;
                            }
                        }
                        let gap = snap.entries.get(&pos).is_none_or(|(_, g)| *g);
                        if gap {
                            match snap
                                .entries
                                .range::<str, _>((Bound::Excluded(pos.as_str()), Bound::Unbounded))
                                .next()
                            {
                                Some((k, _)) => pos = k.clone(),
                                None => break,
                            }
                        } else {
                            pos.push('\0');
                        }
                    }
                }
            }
        } else {
            let mut hi: Option<String> = range.end.clone();
            loop {
                if hi.as_ref().is_some_and(|h| *h <= range.start) || full(&known) {
                    break;
                }
                let below = match &hi {
                    Some(h) => snap
                        .entries
                        .range::<str, _>((Bound::Unbounded, Bound::Excluded(h.as_str())))
                        .next_back(),
                    None => snap.entries.iter().next_back(),
                };
                let Some((k, (v, gap))) = below else {
                    unknown_to = Some(hi);
                    break;
                };
                // The gap after `k` matters only if some key lies between `k` and `hi`.
                let adjacent = hi.as_ref().is_some_and(|h| {
                    h.len() == k.len() + 1 && h.starts_with(k.as_str()) && h.ends_with('\0')
                });
                if !*gap && !adjacent {
                    unknown_to = Some(hi);
                    break;
                }
                if *k < range.start {
                    break;
                }
                match v {
                    Val::Present(v) => known.push((k.clone(), v.clone())),
                    Val::Absent => {}
                    Val::Unknown => {
                        unknown_to = Some(Some(format!("{k}\0")));
                        break;
                    }
                }
                hi = Some(k.clone());
            }
        }
        // In reverse, the bottom of the range known from the cache need not be listed again (statement 81):
        // `low` holds its present entries, ascending; `low_end` where storage must start.
        let mut low: Vec<(String, Arc<[u8]>)> = Vec::new();
        let mut low_end = range.start.clone();
        if let Some(to) = &unknown_to {
            loop {
                if to.as_ref().is_some_and(|t| low_end >= *t) {
                    break;
                }
                match snap.lookup(&low_end) {
                    Val::Unknown => break,
                    v => {
                        if let Val::Present(v) = v {
                            low.push((low_end.clone(), v));
                        }
                        if snap.entries.get(&low_end).is_none_or(|(_, g)| *g) {
                            match snap
                                .entries
                                .range::<str, _>((Bound::Excluded(low_end.as_str()), Bound::Unbounded))
                                .next()
                            {
                                Some((k, _)) => low_end = k.clone(),
                                None => break,
                            }
                        } else {
                            low_end.push('\0');
                        }
                    }
                }
            }
            if to.as_ref().is_some_and(|t| low_end >= *t) {
                // Everything is known after all.
                known.extend(low.drain(..).rev());
                unknown_to = None;
            }
        }
        if unknown_from.is_none() && unknown_to.is_none() {
            known.truncate(limit.unwrap_or(usize::MAX));
            return ready(Ok(known.into_iter().map(|(k, v)| (k, v.to_vec())).collect()));
        }
        // The storage range: what the walks did not cover.
        let (lo, hi) = match (unknown_from, unknown_to) {
            (Some(from), _) => (from, range.end.clone()),
            (None, Some(to)) => (low_end, to),
            (None, None) => unreachable!("checked above"),
        };
        let in_req = {
            let (lo, hi) = (lo.clone(), hi.clone());
            move |k: &str| k >= lo.as_str() && hi.as_deref().is_none_or(|h| k < h)
        };
        let negatives =
            snap.entries.iter().filter(|(k, (v, _))| in_req(k) && matches!(v, Val::Absent)).count();
        let storage_limit = limit.map(|l| l - known.len() + negatives);
        let request = ListRequest { start: lo.clone(), end: hi.clone(), reverse, limit: storage_limit };
        let guard = self.begin_read(&mut st, options.allow_concurrency);
        let epoch = st.epoch;
        drop(st);
        let me = self.clone();
        let first = self.inner.store.list(request.clone());
        Box::pin(async move {
            let store = me.inner.store.clone();
            let got = me.read_retry(first, || store.list(request.clone())).await?;
            let got: Vec<Pair> = got.into_iter().filter(|(k, _)| in_req(k)).collect();
            // Where the merged view is exact.
            let truncated = storage_limit.is_some_and(|l| got.len() >= l) && !got.is_empty();
            let (exact_lo, exact_hi): (Bound<String>, Bound<String>) = match (truncated, reverse) {
                (false, _) => {
                    (Bound::Included(lo.clone()), hi.clone().map_or(Bound::Unbounded, Bound::Excluded))
                }
                (true, false) => (Bound::Included(lo.clone()), Bound::Included(got[got.len() - 1].0.clone())),
                (true, true) => (
                    Bound::Included(got[got.len() - 1].0.clone()),
                    hi.clone().map_or(Bound::Unbounded, Bound::Excluded),
                ),
            };
            let exact = (exact_lo.as_ref().map(String::as_str), exact_hi.as_ref().map(String::as_str));
            let mut merged: BTreeMap<String, Vec<u8>> = BTreeMap::new();
            for (k, (v, _)) in snap.entries.range::<str, _>(exact) {
                if let Val::Present(v) = v {
                    merged.insert(k.clone(), v.to_vec());
                }
            }
            for (k, v) in &got {
                if matches!(snap.lookup(k), Val::Unknown) {
                    merged.insert(k.clone(), v.clone());
                }
            }
            let mut out: Vec<Pair> = known.iter().map(|(k, v)| (k.clone(), v.to_vec())).collect();
            if reverse {
                out.extend(merged.into_iter().rev());
                if !truncated {
                    out.extend(low.iter().rev().map(|(k, v)| (k.clone(), v.to_vec())));
                }
            } else {
                out.extend(merged);
            }
            out.truncate(limit.unwrap_or(usize::MAX));
            if !options.no_cache {
                let mut st = me.lock();
                if st.epoch == epoch {
                    me.learn(&mut st, &lo, exact_lo, exact_hi, &got);
                    me.enforce_limits(&mut st)?;
                }
            }
            drop(guard);
            Ok(out)
        })
    }

    /// Caches what a list learned: the pairs storage returned and the gaps between them over `[lo, hi)`.
    fn learn(&self, st: &mut State, req_lo: &str, lo: Bound<String>, hi: Bound<String>, got: &[Pair]) {
        let lo = match lo {
            Bound::Included(k) => k,
            _ => req_lo.to_owned(),
        };
        for (k, v) in got {
            let inside = k.as_str() >= lo.as_str()
                && match &hi {
                    Bound::Included(h) => k <= h,
                    Bound::Excluded(h) => k < h,
                    Bound::Unbounded => true,
                };
            if inside && matches!(st.entries.lookup(k), Val::Unknown) {
                st.entries.set(k, Val::Present(v.as_slice().into()), Status::Clean, false);
            }
        }
        let ensure = |st: &mut State, k: &str, unknown_as: Val| {
            let learn_marker = unknown_as != Val::Unknown
                && st.entries.get(k).is_some_and(|e| e.val == Val::Unknown && e.status == Status::Clean);
            if st.entries.get(k).is_none() || learn_marker {
                let v = match st.entries.lookup(k) {
                    Val::Unknown => unknown_as,
                    v => v,
                };
                st.entries.set(k, v, Status::Clean, false);
            }
        };
        // The range start is learned (absent unless returned, statement 56); the end is not (statement 52).
        ensure(st, &lo, Val::Absent);
        let upper: Bound<&str> = match &hi {
            Bound::Included(h) => {
                ensure(st, h, Val::Unknown);
                Bound::Excluded(h.as_str())
            }
            Bound::Excluded(h) => {
                ensure(st, h, Val::Unknown);
                Bound::Excluded(h.as_str())
            }
            Bound::Unbounded => Bound::Unbounded,
        };
        let keys: Vec<String> =
            st.entries.range((Bound::Included(lo.as_str()), upper)).map(|(k, _)| k.clone()).collect();
        for k in keys {
            st.entries.set_gap(&k, true);
        }
    }

    // ----- writes ------------------------------------------------------------------------------------------

    /// Refuses a write on a broken or shut-down cache: the error, and the output gate breaks (statement 142).
    fn check_write(&self, st: &State) -> Result<(), Error> {
        if let Some(e) = &st.broken {
            self.inner.hooks.break_output(e.clone());
            return Err(e.clone());
        }
        Ok(())
    }

    fn schedule(&self, st: &mut State, options: PutOptions) {
        if !options.allow_unconfirmed && st.next_lock.is_none() {
            st.next_lock = Some(self.inner.hooks.lock_output());
        }
        if !st.flush_task {
            st.flush_task = true;
            let me = self.clone();
            self.inner.hooks.after_turn(Box::pin(async move { me.flush_task().await }));
        }
    }

    /// Writes one key in the cache; false if redundant (statement 11, 15).
    fn write(&self, st: &mut State, key: &str, val: Val, options: PutOptions) -> bool {
        let cur = st.entries.lookup(key);
        if same(&cur, &val) {
            let status = st.entries.get(key).map(|e| e.status);
            if !options.allow_unconfirmed {
                match status {
                    Some(Status::Dirty) if st.next_lock.is_none() => {
                        st.next_lock = Some(self.inner.hooks.lock_output());
                    }
                    Some(Status::Flushing) if st.current_locks.is_empty() => {
                        st.current_locks.push(self.inner.hooks.lock_output());
                    }
                    _ => {}
                }
            }
            if !options.no_cache {
                st.entries.keep_cached(key);
            }
            st.entries.touch(key);
            return false;
        }
        st.entries.set(key, val, Status::Dirty, options.no_cache);
        true
    }

    /// After a write: the hard limit (statement 109) and backpressure (statement 100).
    fn after_write<T: Send + 'static>(
        &self,
        st: &mut State,
        value: T,
        options: PutOptions,
    ) -> CacheFuture<T> {
        if let Err(e) = self.enforce_limits(st) {
            return ready(Err(e));
        }
        if st.entries.dirty_bytes > self.inner.options.dirty_limit {
            let (tx, rx) = oneshot::channel();
            st.backpressure.push(tx);
            return self.holding_input(options.allow_concurrency, async move {
                rx.await.map_err(|_| closed())?;
                Ok(value)
            });
        }
        ready(Ok(value))
    }

    /// `put(key, value)` (§2.4): the value is visible at once and flushed later.
    pub fn put(&self, key: &str, value: &[u8], options: PutOptions) -> CacheFuture<()> {
        self.put_multiple(&[(key, value)], options)
    }

    /// `put(entries)` (§2.4): every pair is validated first, then all are written at once. More than 128
    /// pairs is a `RangeError` (the documented limit; workerd does not check it).
    pub fn put_multiple(&self, pairs: &[(&str, &[u8])], options: PutOptions) -> CacheFuture<()> {
        let mut st = self.lock();
        if let Err(e) = self.check_write(&st) {
            return ready(Err(e));
        }
        let checked = check_key_count(pairs.len())
            .and_then(|()| pairs.iter().try_for_each(|(k, v)| check_key(k).and_then(|()| check_value(v))));
        if let Err(e) = checked {
            return ready(Err(e));
        }
        let mut changed = false;
        for (k, v) in pairs {
            changed |= self.write(&mut st, k, Val::Present(Arc::from(*v)), options);
        }
        if changed {
            self.schedule(&mut st, options);
        }
        self.after_write(&mut st, (), options)
    }

    /// `delete(key)` (§2.4): whether the key existed.
    pub fn delete(&self, key: &str, options: PutOptions) -> CacheFuture<bool> {
        let f = self.delete_multiple(&[key], options);
        Box::pin(async move { Ok(f.await? > 0) })
    }

    /// `delete(keys[])` (§2.4): how many existed. Answered at once where the cache knows; otherwise after the
    /// flush that deletes the unknown keys, with storage's count. More than 128 keys is a `RangeError` (the
    /// documented limit; workerd does not check it).
    pub fn delete_multiple(&self, keys: &[&str], options: PutOptions) -> CacheFuture<usize> {
        let mut st = self.lock();
        if let Err(e) = self.check_write(&st) {
            return ready(Err(e));
        }
        if let Err(e) = check_key_count(keys.len()).and_then(|()| keys.iter().try_for_each(|k| check_key(k)))
        {
            return ready(Err(e));
        }
        let mut cached = 0;
        let mut unknown = Vec::new();
        let mut changed = false;
        for k in keys {
            match st.entries.lookup(k) {
                Val::Present(_) => cached += 1,
                Val::Unknown => unknown.push((*k).to_owned()),
                Val::Absent => {}
            }
            changed |= self.write(&mut st, k, Val::Absent, options);
        }
        if changed {
            self.schedule(&mut st, options);
        }
        if unknown.is_empty() {
            return self.after_write(&mut st, cached, options);
        }
        let (tx, rx) = oneshot::channel();
        st.counted.push(Counted { keys: unknown, cached, reply: tx });
        if let Err(e) = self.enforce_limits(&mut st) {
            return ready(Err(e));
        }
        self.holding_input(
            options.allow_concurrency,
            async move { rx.await.unwrap_or_else(|_| Err(closed())) },
        )
    }

    /// `deleteAll()` (§2.6): the cache reads as empty at once; storage is wiped after the writes made before
    /// it are flushed. Resolves with the number of keys storage deleted (0 for a call coalesced into a pending
    /// one, statement 28).
    pub fn delete_all(&self, options: PutOptions) -> CacheFuture<usize> {
        let mut st = self.lock();
        if let Err(e) = self.check_write(&st) {
            return ready(Err(e));
        }
        let (tx, rx) = oneshot::channel();
        let delete_alarm = self.inner.options.delete_all_deletes_alarm;
        if let Some(pending) = st.delete_all.as_mut() {
            // Coalesced: the writes since the first call are discarded; this call reports 0.
            let _ = tx.send(Ok(0));
            pending.delete_alarm |= delete_alarm;
        } else {
            let pre = self.collect(&mut st);
            st.delete_all = Some(PendingDeleteAll { pre, replies: vec![tx], delete_alarm });
        }
        // Writes made since the first deleteAll are dropped with the cache (their counted deletes count 0
        // from storage: the keys will be gone).
        for c in std::mem::take(&mut st.counted) {
            let _ = c.reply.send(Ok(c.cached));
        }
        st.entries.clear();
        st.entries.set("", Val::Absent, Status::Clean, false);
        st.entries.set_gap("", true);
        st.epoch += 1;
        st.delete_all_epoch += 1;
        if delete_alarm {
            st.alarm = Some(None);
            st.alarm_status = Status::Clean;
            st.alarm_by_delete_all = true;
            // It supersedes a handler's deferred delete (statement 134).
            if st.deferred.is_some_and(|d| d.phase != DeferredPhase::Flushing) {
                st.deferred = None;
            }
        }
        self.schedule(&mut st, options);
        self.holding_input(
            options.allow_concurrency,
            async move { rx.await.unwrap_or_else(|_| Err(closed())) },
        )
    }

    // ----- alarms ------------------------------------------------------------------------------------------

    /// `getAlarm()` (§2.4, §4): the alarm time in ms, read from storage once and then cached.
    pub fn get_alarm(&self, options: GetOptions) -> CacheFuture<Option<i64>> {
        let mut st = self.lock();
        if let Err(e) = self.check_open(&st) {
            return ready(Err(e));
        }
        if let Some(a) = st.alarm {
            return ready(Ok(a));
        }
        let guard = self.begin_read(&mut st, options.allow_concurrency);
        drop(st);
        let me = self.clone();
        let first = self.inner.store.get_alarm();
        Box::pin(async move {
            let store = me.inner.store.clone();
            let a = me.read_retry(first, || store.get_alarm()).await?;
            let mut st = me.lock();
            if st.alarm.is_none() && !options.no_cache {
                st.alarm = Some(a);
                st.alarm_status = Status::Clean;
            }
            drop(st);
            drop(guard);
            Ok(a)
        })
    }

    fn write_alarm(&self, alarm: Option<i64>, options: PutOptions) -> CacheFuture<()> {
        let mut st = self.lock();
        if let Err(e) = self.check_write(&st) {
            return ready(Err(e));
        }
        if st.alarm == Some(alarm) && !st.alarm_by_delete_all && st.deferred.is_none() {
            return ready(Ok(()));
        }
        // A write during the handler replaces its deferred delete (statement 126).
        if st.deferred.is_some_and(|d| d.phase != DeferredPhase::Flushing) {
            st.deferred = None;
        }
        st.alarm = Some(alarm);
        st.alarm_status = Status::Dirty;
        st.alarm_by_delete_all = false;
        self.schedule(&mut st, options);
        ready(Ok(()))
    }

    /// `setAlarm(ms)` (§4): a time ≤ 0 is a `TypeError`.
    pub fn set_alarm(&self, scheduled_ms: i64, options: PutOptions) -> CacheFuture<()> {
        if scheduled_ms <= 0 {
            return ready(Err(Error::type_error(messages::SET_ALARM_NOT_POSITIVE)));
        }
        self.write_alarm(Some(scheduled_ms), options)
    }

    /// `deleteAlarm()` (§4).
    pub fn delete_alarm(&self, options: PutOptions) -> CacheFuture<()> {
        self.write_alarm(None, options)
    }

    /// Arms the alarm handler for the alarm scheduled at `scheduled_ms` (§4, statements 124–128): `None` cancels
    /// the run (the cached alarm is clean and not that time: it was deleted or moved). Otherwise the alarm reads
    /// as deleted while the handler runs, and dropping the returned deleter (the handler succeeded) flushes a
    /// conditional delete of the alarm at that time, unless the handler wrote the alarm (which then stands) or
    /// [`ActorCache::cancel_deferred_alarm_deletion`] was called. With `no_cache` the alarm is left unknown after
    /// the delete. A dirty alarm of another time is kept and nothing is deleted.
    pub fn arm_alarm_handler(&self, scheduled_ms: i64, no_cache: bool) -> Option<DeferredAlarmDeleter> {
        let mut st = self.lock();
        if let Some(current) = st.alarm {
            if current != Some(scheduled_ms) {
                return if st.alarm_status == Status::Clean && !st.alarm_by_delete_all {
                    None
                } else {
                    Some(DeferredAlarmDeleter { cache: None })
                };
            }
        }
        st.deferred = Some(DeferredDelete { time: scheduled_ms, no_cache, phase: DeferredPhase::Waiting });
        st.alarm = Some(None);
        st.alarm_status = Status::Clean;
        Some(DeferredAlarmDeleter { cache: Some(self.clone()) })
    }

    /// The handler failed (§4): its deferred delete is cancelled and the alarm stays set, to be retried.
    pub fn cancel_deferred_alarm_deletion(&self) {
        let mut st = self.lock();
        if let Some(d) = st.deferred.filter(|d| d.phase == DeferredPhase::Waiting) {
            st.deferred = None;
            st.alarm = Some(Some(d.time));
            st.alarm_status = Status::Clean;
        }
    }

    /// After a conditional alarm delete committed: the alarm is known deleted, or unknown if storage held
    /// another time (statement 127) or the delete was `no_cache` (statement 128). A newer write is kept.
    fn deferred_done(st: &mut State, deleted: bool) {
        let Some(d) = st.deferred.take() else { return };
        if st.alarm_status == Status::Clean && !st.alarm_by_delete_all {
            st.alarm = (deleted && !d.no_cache).then_some(None);
        }
    }

    /// The scheduler gave up on the alarm at `scheduled_ms` (§4, statements 143–147). If storage holds that
    /// alarm it is deleted (conditionally, with no output lock) and left unknown in the cache; resolves to
    /// `None` then. If the alarm was replaced by one already stored, nothing is done and that time is
    /// returned; a replacement not yet flushed, no alarm at all, or a handler running also give `None` and
    /// change nothing.
    pub fn abandon_alarm(&self, scheduled_ms: i64) -> CacheFuture<Option<i64>> {
        let unknown = {
            let st = self.lock();
            if let Err(e) = self.check_open(&st) {
                return ready(Err(e));
            }
            st.alarm.is_none()
        };
        // Storage is asked at the call, as for any read.
        let read = unknown.then(|| self.get_alarm(GetOptions { allow_concurrency: true, no_cache: false }));
        let me = self.clone();
        Box::pin(async move {
            let stored = match read {
                Some(f) => f.await?,
                None => None,
            };
            let rx = {
                let mut st = me.lock();
                me.check_open(&st)?;
                if st.alarm_status != Status::Clean || st.deferred.is_some() || st.alarm_by_delete_all {
                    return Ok(None);
                }
                match st.alarm.unwrap_or(stored) {
                    None => return Ok(None),
                    Some(t) if t != scheduled_ms => return Ok(Some(t)),
                    Some(_) => {}
                }
                st.deferred =
                    Some(DeferredDelete { time: scheduled_ms, no_cache: true, phase: DeferredPhase::Ready });
                st.alarm = Some(None);
                let (tx, rx) = oneshot::channel();
                st.next_waiters.push(tx);
                me.schedule(&mut st, PutOptions { allow_unconfirmed: true, ..PutOptions::default() });
                rx
            };
            rx.await.unwrap_or_else(|_| Err(closed()))?;
            Ok(None)
        })
    }

    // ----- sync, shutdown, eviction ----------------------------------------------------------------------

    fn has_pending(st: &State) -> bool {
        st.entries.unclean().any(|(_, e)| e.status == Status::Dirty)
            || !st.counted.is_empty()
            || st.alarm_status == Status::Dirty
            || st.delete_all.is_some()
            || st.deferred.is_some_and(|d| d.phase == DeferredPhase::Ready)
    }

    /// `sync()` (§2.9): resolves when the flush scheduled or in flight now has committed; at once if none.
    pub fn sync(&self) -> CacheFuture<()> {
        let mut st = self.lock();
        if let Err(e) = self.check_open(&st) {
            return ready(Err(e));
        }
        let (tx, rx) = oneshot::channel();
        if Self::has_pending(&st) && st.flush_task {
            st.next_waiters.push(tx);
        } else if st.in_flight {
            st.current_waiters.push(tx);
        } else {
            return ready(Ok(()));
        }
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(closed())) })
    }

    /// Shuts the cache down (§2.9): later calls fail with `reason` (default: the retryable
    /// `Durable Object storage is no longer accessible.`, a reset); a flush scheduled but not started fails
    /// and breaks the output gate, nothing of it reaching storage; a flush in flight completes.
    pub fn shutdown(&self, reason: Option<Error>) {
        let error = reason.unwrap_or_else(closed);
        let mut st = self.lock();
        if st.broken.is_some() {
            return;
        }
        st.broken = Some(error.clone());
        let scheduled = Self::has_pending(&st);
        let counted = std::mem::take(&mut st.counted);
        for c in counted {
            let _ = c.reply.send(Err(error.clone()));
        }
        if let Some(da) = st.delete_all.take() {
            for r in da.replies {
                let _ = r.send(Err(error.clone()));
            }
        }
        for w in std::mem::take(&mut st.next_waiters) {
            let _ = w.send(Err(error.clone()));
        }
        match st.next_lock.take() {
            Some(lock) => lock.fail(error.clone()),
            None if scheduled => self.inner.hooks.break_output(error.clone()),
            None => {}
        }
        drop(st);
        // A flush in flight still completes: the store closes once it has.
        self.inner.store.close();
    }

    /// One stale check (§2.8) at time `now`: at most once per stale timeout, evicts the clean entries untouched
    /// since the previous check and marks the rest stale. Returns how many it evicted.
    pub fn evict_stale(&self, now: Instant) -> usize {
        let mut st = self.lock();
        if let Some(last) = st.last_stale_check {
            if now.saturating_duration_since(last) < self.inner.options.stale_timeout {
                return 0;
            }
        }
        st.last_stale_check = Some(now);
        if st.delete_all.is_some() {
            return 0;
        }
        let n = st.entries.evict_stale();
        if n > 0 {
            st.epoch += 1;
        }
        n
    }

    // ----- flushing ----------------------------------------------------------------------------------------

    /// Takes the dirty state out for a commit: dirty entries and the dirty alarm become Flushing; the pending
    /// counted deletes move into it.
    fn collect(&self, st: &mut State) -> Frozen {
        let mut frozen = Frozen::default();
        let keys: Vec<(String, Option<Arc<[u8]>>)> = st
            .entries
            .unclean()
            .filter(|(_, e)| e.status == Status::Dirty)
            .map(|(k, e)| {
                let v = match &e.val {
                    Val::Present(v) => Some(v.clone()),
                    _ => None,
                };
                (k.clone(), v)
            })
            .collect();
        for (k, v) in keys {
            st.entries.set_status(&k, Status::Flushing);
            frozen.writes.insert(k, v);
        }
        frozen.counted = std::mem::take(&mut st.counted);
        if st.alarm_status == Status::Dirty {
            frozen.alarm = st.alarm;
            st.alarm_status = Status::Flushing;
        }
        if let Some(d) = st.deferred.as_mut().filter(|d| d.phase == DeferredPhase::Ready) {
            d.phase = DeferredPhase::Flushing;
            frozen.alarm_delete_if = Some(d.time);
        }
        frozen
    }

    async fn wait_past_reads(&self) {
        let rx = {
            let mut st = self.lock();
            let threshold = st.next_read;
            if st.reads.first().is_none_or(|&m| m >= threshold) {
                return;
            }
            let (tx, rx) = oneshot::channel();
            st.read_waiters.push((threshold, tx));
            rx
        };
        let _ = rx.await;
    }

    async fn flush_task(self) {
        loop {
            self.wait_past_reads().await;
            let delete_all = {
                let mut st = self.lock();
                if st.broken.is_some() || !Self::has_pending(&st) {
                    st.flush_task = false;
                    for w in std::mem::take(&mut st.next_waiters) {
                        let _ = w.send(st.broken.clone().map_or(Ok(()), Err));
                    }
                    return;
                }
                st.in_flight = true;
                let waiters = std::mem::take(&mut st.next_waiters);
                st.current_waiters.extend(waiters);
                if let Some(lock) = st.next_lock.take() {
                    st.current_locks.push(lock);
                }
                st.delete_all.take()
            };
            let result = self.round(delete_all).await;
            let mut st = self.lock();
            st.in_flight = false;
            match result {
                Ok(()) => {
                    for lock in std::mem::take(&mut st.current_locks) {
                        lock.release();
                    }
                    for w in std::mem::take(&mut st.current_waiters) {
                        let _ = w.send(Ok(()));
                    }
                    if st.entries.evict_no_cache() > 0 {
                        st.epoch += 1;
                    }
                    let _ = self.enforce_limits(&mut st);
                    if st.entries.dirty_bytes <= self.inner.options.dirty_limit {
                        for b in std::mem::take(&mut st.backpressure) {
                            let _ = b.send(());
                        }
                    }
                }
                Err(e) => {
                    self.fail(&mut st, e);
                    st.flush_task = false;
                    return;
                }
            }
        }
    }

    /// Breaks the cache with `e`: the output gate breaks and everything pending fails.
    fn fail(&self, st: &mut State, e: Error) {
        if st.broken.is_none() {
            st.broken = Some(e.clone());
        }
        let mut locks = std::mem::take(&mut st.current_locks);
        locks.extend(st.next_lock.take());
        if locks.is_empty() {
            self.inner.hooks.break_output(e.clone());
        }
        for lock in locks {
            lock.fail(e.clone());
        }
        let waiters: Vec<Reply<()>> = std::mem::take(&mut st.current_waiters)
            .into_iter()
            .chain(std::mem::take(&mut st.next_waiters))
            .collect();
        for w in waiters {
            let _ = w.send(Err(e.clone()));
        }
        for c in std::mem::take(&mut st.counted) {
            let _ = c.reply.send(Err(e.clone()));
        }
        if let Some(da) = st.delete_all.take() {
            for r in da.replies {
                let _ = r.send(Err(e.clone()));
            }
        }
        st.backpressure.clear();
    }

    fn flush_error(&self, e: StoreError, delete_all: bool) -> Error {
        let internal = |d: &str| {
            let r = self.internal_reference(d);
            if delete_all {
                messages::delete_all_internal(&r)
            } else {
                messages::storage_write_internal(&r)
            }
        };
        match e {
            StoreError::Failed(e) => e.with_reset(),
            StoreError::Disconnected(d) => Error::new(internal(&d)).with_retryable().with_reset(),
            StoreError::Internal(d) => Error::new(internal(&d)).with_reset(),
        }
    }

    /// One round: a pending deleteAll (its earlier writes, then itself), then the dirty entries.
    async fn round(&self, delete_all: Option<PendingDeleteAll>) -> Result<(), Error> {
        if let Some(da) = delete_all {
            let mut pre = da.pre;
            if !da.delete_alarm {
                // A deferred alarm delete that became ready meanwhile goes before the deleteAll (statement 135).
                let mut st = self.lock();
                if let Some(d) = st.deferred.as_mut().filter(|d| d.phase == DeferredPhase::Ready) {
                    d.phase = DeferredPhase::Flushing;
                    pre.alarm_delete_if = Some(d.time);
                }
            }
            if !pre.is_empty() {
                self.commit(pre, false).await?;
            }
            let alarm = da.delete_alarm.then_some(None);
            let batch = Batch { delete_all: true, alarm, ..Batch::default() };
            let r = match self.commit_batch(batch, true).await {
                Ok(r) => r,
                Err(e) => {
                    for reply in da.replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                    return Err(e);
                }
            };
            let mut st = self.lock();
            if da.delete_alarm && st.alarm_by_delete_all {
                st.alarm_by_delete_all = false;
            }
            for (i, reply) in da.replies.into_iter().enumerate() {
                let _ = reply.send(Ok(if i == 0 { r.deleted_all } else { 0 }));
            }
        }
        let frozen = {
            let mut st = self.lock();
            self.collect(&mut st)
        };
        if !frozen.is_empty() {
            self.commit(frozen, true).await?;
        }
        Ok(())
    }

    async fn commit_batch(&self, batch: Batch, delete_all: bool) -> Result<CommitResult, Error> {
        let mut attempt = 0;
        loop {
            match self.inner.store.commit(batch.clone()).await {
                Ok(r) => return Ok(r),
                Err(StoreError::Disconnected(_)) if attempt < 4 => attempt += 1,
                Err(e) => return Err(self.flush_error(e, delete_all)),
            }
        }
    }

    /// Commits `frozen`, retrying DISCONNECTED up to 4 times; with `merge`, each retry takes in what was
    /// dirtied since (unless a deleteAll intervened). On success resolves the counted deletes and marks the
    /// committed entries clean.
    async fn commit(&self, mut frozen: Frozen, merge: bool) -> Result<(), Error> {
        let delete_all_epoch = self.lock().delete_all_epoch;
        let mut attempt = 0;
        loop {
            let (batch, live) = frozen.batch();
            match self.inner.store.commit(batch).await {
                Ok(r) => {
                    let mut st = self.lock();
                    let counted = std::mem::take(&mut frozen.counted);
                    let mut counts = live.iter().zip(r.counts.iter()).collect::<BTreeMap<_, _>>();
                    for (i, c) in counted.into_iter().enumerate() {
                        let n = counts.remove(&i).copied().unwrap_or(0);
                        let _ = c.reply.send(Ok(c.cached + n));
                    }
                    if merge && st.delete_all_epoch == delete_all_epoch {
                        let flushing: Vec<String> = st
                            .entries
                            .unclean()
                            .filter(|(_, e)| e.status == Status::Flushing)
                            .map(|(k, _)| k.clone())
                            .collect();
                        for k in flushing {
                            st.entries.set_status(&k, Status::Clean);
                        }
                    }
                    if merge && st.alarm_status == Status::Flushing {
                        st.alarm_status = Status::Clean;
                    }
                    if frozen.alarm_delete_if.is_some() {
                        Self::deferred_done(&mut st, r.alarm_deleted);
                    }
                    return Ok(());
                }
                Err(StoreError::Disconnected(_)) if attempt < 4 => {
                    attempt += 1;
                    let mut st = self.lock();
                    if merge && st.delete_all_epoch == delete_all_epoch {
                        let more = self.collect(&mut st);
                        frozen.writes.extend(more.writes);
                        frozen.counted.extend(more.counted);
                        if more.alarm.is_some() {
                            frozen.alarm = more.alarm;
                        }
                        let waiters = std::mem::take(&mut st.next_waiters);
                        st.current_waiters.extend(waiters);
                        if let Some(lock) = st.next_lock.take() {
                            st.current_locks.push(lock);
                        }
                    }
                }
                Err(e) => return Err(self.flush_error(e, false)),
            }
        }
    }
}
