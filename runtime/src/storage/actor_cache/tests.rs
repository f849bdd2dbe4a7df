//! Conformance tests of the actor cache (spec `durable-objects.md` §2.10), one per numbered statement
//! (`actor_cache_NNN_…`), against a mock store whose every call the test completes by hand.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::error::messages;
use crate::error::{Error, ErrorKind};
use crate::storage::actor_cache::{
    error_reference, ActorCache, ActorCacheOptions, Batch, CacheListOptions, CacheTransaction, CommitResult,
    GetOptions, KvStore, ListRequest, PutOptions, StoreError, StoreFuture,
};
use crate::storage::gates::{InputHold, OutputLock, OutputLockWaiter, TurnHooks};
use crate::storage::kv::ListOptions;
use crate::world::Task;
use madsim_tokio::sync::oneshot;

type Pair = (String, Vec<u8>);

// ----- the mock store --------------------------------------------------------------------------------------

enum Call {
    Get(Vec<String>, oneshot::Sender<Result<Vec<Pair>, StoreError>>),
    List(ListRequest, oneshot::Sender<Result<Vec<Pair>, StoreError>>),
    GetAlarm(oneshot::Sender<Result<Option<i64>, StoreError>>),
    Commit(Batch, oneshot::Sender<Result<CommitResult, StoreError>>),
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Call::Get(k, _) => write!(f, "Get({k:?})"),
            Call::List(r, _) => write!(f, "List({r:?})"),
            Call::GetAlarm(_) => write!(f, "GetAlarm"),
            Call::Commit(b, _) => write!(f, "Commit({b:?})"),
        }
    }
}

#[derive(Default)]
struct MockStore {
    calls: Mutex<VecDeque<Call>>,
}

fn reply<T: Send + 'static>() -> (oneshot::Sender<Result<T, StoreError>>, StoreFuture<T>) {
    let (tx, rx) = oneshot::channel();
    let f = async move { rx.await.unwrap_or_else(|_| Err(StoreError::Disconnected("dropped".into()))) };
    (tx, Box::pin(f))
}

impl KvStore for MockStore {
    fn get(&self, keys: Vec<String>) -> StoreFuture<Vec<Pair>> {
        let (tx, f) = reply();
        self.calls.lock().unwrap().push_back(Call::Get(keys, tx));
        f
    }
    fn list(&self, request: ListRequest) -> StoreFuture<Vec<Pair>> {
        let (tx, f) = reply();
        self.calls.lock().unwrap().push_back(Call::List(request, tx));
        f
    }
    fn get_alarm(&self) -> StoreFuture<Option<i64>> {
        let (tx, f) = reply();
        self.calls.lock().unwrap().push_back(Call::GetAlarm(tx));
        f
    }
    fn commit(&self, batch: Batch) -> StoreFuture<CommitResult> {
        let (tx, f) = reply();
        self.calls.lock().unwrap().push_back(Call::Commit(batch, tx));
        f
    }
}

// ----- the hand-driven event loop --------------------------------------------------------------------------

type LockFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;
type LockSlot = (LockFuture, Option<Result<(), Error>>);

#[derive(Default)]
struct Hooks {
    deferred: Mutex<Vec<Task>>,
    running: Mutex<Vec<Task>>,
    locks: Mutex<Vec<LockSlot>>,
    breaks: Mutex<Vec<Error>>,
    holds: Arc<AtomicUsize>,
}

impl TurnHooks for Hooks {
    fn after_turn(&self, task: Task) {
        self.deferred.lock().unwrap().push(task);
    }
    fn lock_output(&self) -> OutputLock {
        let (lock, waiter): (OutputLock, OutputLockWaiter) = OutputLock::new();
        self.locks.lock().unwrap().push((Box::pin(waiter.wait()), None));
        lock
    }
    fn break_output(&self, error: Error) {
        self.breaks.lock().unwrap().push(error);
    }
    fn hold_input(&self) -> InputHold {
        self.holds.fetch_add(1, Ordering::SeqCst);
        let holds = self.holds.clone();
        InputHold::new(move || {
            holds.fetch_sub(1, Ordering::SeqCst);
        })
    }
}

fn poll<T>(f: &mut Pin<Box<dyn Future<Output = T> + Send>>) -> Option<T> {
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

struct T {
    store: Arc<MockStore>,
    hooks: Arc<Hooks>,
    cache: ActorCache,
}

impl T {
    fn new() -> T {
        T::with(ActorCacheOptions {
            soft_limit: 512 << 10,
            hard_limit: 1 << 20,
            stale_timeout: std::time::Duration::from_secs(1),
            dirty_limit: 64 << 10,
            max_keys_per_rpc: 128,
            delete_all_deletes_alarm: false,
        })
    }
    fn with(options: ActorCacheOptions) -> T {
        let store = Arc::new(MockStore::default());
        let hooks = Arc::new(Hooks::default());
        let cache = ActorCache::new(store.clone(), hooks.clone(), options);
        T { store, hooks, cache }
    }
    /// Ends the turn: starts the deferred tasks, and runs every task as far as it goes.
    fn end_turn(&self) {
        let new: Vec<Task> = std::mem::take(&mut *self.hooks.deferred.lock().unwrap());
        self.hooks.running.lock().unwrap().extend(new);
        self.run();
    }
    fn run(&self) {
        for _ in 0..20 {
            let tasks: Vec<Task> = std::mem::take(&mut *self.hooks.running.lock().unwrap());
            let mut left = Vec::new();
            for mut t in tasks {
                let mut cx = Context::from_waker(Waker::noop());
                if t.as_mut().poll(&mut cx).is_pending() {
                    left.push(t);
                }
            }
            self.hooks.running.lock().unwrap().extend(left);
        }
    }
    fn next(&self) -> Call {
        self.run();
        self.store.calls.lock().unwrap().pop_front().expect("a storage call")
    }
    fn no_call(&self) {
        self.run();
        let calls = self.store.calls.lock().unwrap();
        assert!(calls.is_empty(), "unexpected storage calls: {calls:?}");
    }
    fn expect_get(&self, keys: &[&str]) -> oneshot::Sender<Result<Vec<Pair>, StoreError>> {
        match self.next() {
            Call::Get(k, tx) => {
                assert_eq!(k, keys);
                tx
            }
            c => panic!("expected get, got {c:?}"),
        }
    }
    fn expect_list(&self, start: &str, end: Option<&str>, reverse: bool, limit: Option<usize>) -> ListReply {
        match self.next() {
            Call::List(r, tx) => {
                let want = ListRequest { start: start.into(), end: end.map(Into::into), reverse, limit };
                assert_eq!(r, want);
                ListReply(tx)
            }
            c => panic!("expected list, got {c:?}"),
        }
    }
    fn expect_commit(&self) -> (Batch, oneshot::Sender<Result<CommitResult, StoreError>>) {
        match self.next() {
            Call::Commit(b, tx) => (b, tx),
            c => panic!("expected commit, got {c:?}"),
        }
    }
    /// Expects a commit and succeeds it with these counts.
    fn commit_ok(&self, counts: &[usize]) -> Batch {
        let (b, tx) = self.expect_commit();
        tx.send(Ok(CommitResult { counts: counts.to_vec(), deleted_all: 0, ..Default::default() })).unwrap();
        self.run();
        b
    }
    /// The outcome of each output lock taken so far (`None`: still held).
    fn locks(&self) -> Vec<Option<Result<(), Error>>> {
        let mut locks = self.hooks.locks.lock().unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        for (f, out) in locks.iter_mut() {
            if out.is_none() {
                if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                    *out = Some(v);
                }
            }
        }
        locks.iter().map(|(_, o)| o.clone()).collect()
    }
    fn breaks(&self) -> Vec<Error> {
        self.hooks.breaks.lock().unwrap().clone()
    }
    fn holds(&self) -> usize {
        self.hooks.holds.load(Ordering::SeqCst)
    }
    fn put(&self, k: &str, v: &str) {
        let mut f = self.cache.put(k, v.as_bytes(), PutOptions::default());
        poll(&mut f).expect("put resolves at once").unwrap();
    }
    fn put_with(&self, k: &str, v: &str, o: PutOptions) {
        let mut f = self.cache.put(k, v.as_bytes(), o);
        poll(&mut f).expect("put resolves at once").unwrap();
    }
    fn get_now(&self, k: &str) -> Option<String> {
        let mut f = self.cache.get(k, GetOptions::default());
        poll(&mut f).expect("answered from cache").unwrap().map(s)
    }
    fn list_now(&self, o: ListOptions) -> Vec<(String, String)> {
        let mut f = self.cache.list(CacheListOptions { list: o, ..Default::default() });
        strs(poll(&mut f).expect("answered from cache").unwrap())
    }
}

struct ListReply(oneshot::Sender<Result<Vec<Pair>, StoreError>>);
impl ListReply {
    fn send(self, pairs: &[(&str, &str)]) {
        self.0.send(Ok(pairs.iter().map(|(k, v)| ((*k).into(), v.as_bytes().to_vec())).collect())).unwrap();
    }
}

fn s(v: Vec<u8>) -> String {
    String::from_utf8(v).unwrap()
}
fn strs(v: Vec<Pair>) -> Vec<(String, String)> {
    v.into_iter().map(|(k, v)| (k, s(v))).collect()
}
fn pairs(p: &[(&str, &str)]) -> Vec<Pair> {
    p.iter().map(|(k, v)| ((*k).into(), v.as_bytes().to_vec())).collect()
}
fn sp(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect()
}
fn keys(k: &[&str]) -> Vec<String> {
    k.iter().map(|k| (*k).into()).collect()
}
fn range(start: &str, end: &str) -> ListOptions {
    ListOptions { start: Some(start.into()), end: Some(end.into()), ..Default::default() }
}
fn unconfirmed() -> PutOptions {
    PutOptions { allow_unconfirmed: true, ..Default::default() }
}
fn puts(b: &Batch) -> Vec<(String, String)> {
    strs(b.puts.clone())
}

type F<V> = Pin<Box<dyn Future<Output = Result<V, Error>> + Send>>;

/// Reads `key` through storage, answering `value`.
fn load(t: &T, key: &str, value: Option<&str>) {
    let mut f: F<_> = t.cache.get(key, GetOptions::default());
    assert!(poll(&mut f).is_none());
    let tx = t.expect_get(&[key]);
    tx.send(Ok(value.map(|v| pairs(&[(key, v)])).unwrap_or_default())).unwrap();
    assert_eq!(poll(&mut f).unwrap().unwrap().map(s).as_deref(), value);
}

// ----- §2.2, §2.4: get, put, delete ------------------------------------------------------------------------

#[test]
fn actor_cache_001_get_reads_storage_once() {
    let t = T::new();
    let mut f = t.cache.get("foo", GetOptions::default());
    assert!(poll(&mut f).is_none());
    assert_eq!(t.holds(), 1, "a cache miss holds the input gate (§1.2)");
    t.expect_get(&["foo"]).send(Ok(pairs(&[("foo", "bar")]))).unwrap();
    assert_eq!(poll(&mut f).unwrap().unwrap(), Some(b"bar".to_vec()));
    assert_eq!(t.holds(), 0);
    t.no_call();
}

#[test]
fn actor_cache_002_absent_key_is_cached_absent() {
    let t = T::new();
    load(&t, "foo", None);
    assert_eq!(t.get_now("foo"), None);
    t.no_call();
}

#[test]
fn actor_cache_003_repeated_gets_use_the_cache() {
    let t = T::new();
    load(&t, "a", Some("1"));
    load(&t, "b", None);
    for _ in 0..3 {
        assert_eq!(t.get_now("a").as_deref(), Some("1"));
        assert_eq!(t.get_now("b"), None);
    }
    t.no_call();
}

#[test]
fn actor_cache_004_put_overwrites_and_flushes_one_put() {
    let t = T::new();
    load(&t, "foo", Some("old"));
    t.put("foo", "new");
    assert_eq!(t.get_now("foo").as_deref(), Some("new"));
    t.end_turn();
    let b = t.commit_ok(&[]);
    assert_eq!(puts(&b), sp(&[("foo", "new")]));
    assert!(b.muted_deletes.is_empty() && b.counted_deletes.is_empty());
    t.no_call();
}

#[test]
fn actor_cache_005_delete_of_cached_present_key() {
    let t = T::new();
    load(&t, "foo", Some("x"));
    let mut d = t.cache.delete("foo", PutOptions::default());
    assert!(poll(&mut d).unwrap().unwrap());
    t.end_turn();
    let b = t.commit_ok(&[]);
    assert_eq!(b.muted_deletes, keys(&["foo"]));
}

#[test]
fn actor_cache_006_get_after_delete_is_absent() {
    let t = T::new();
    load(&t, "foo", Some("x"));
    drop(t.cache.delete("foo", PutOptions::default()));
    assert_eq!(t.get_now("foo"), None);
    t.no_call();
}

#[test]
fn actor_cache_007_multi_get_returns_present_keys_sorted() {
    let t = T::new();
    let mut f = t.cache.get_multiple(&["qux", "bar", "foo", "baz"], GetOptions::default());
    assert!(poll(&mut f).is_none());
    t.expect_get(&["bar", "baz", "foo", "qux"]).send(Ok(pairs(&[("foo", "1"), ("bar", "2")]))).unwrap();
    assert_eq!(strs(poll(&mut f).unwrap().unwrap()), sp(&[("bar", "2"), ("foo", "1")]));
    assert_eq!(t.get_now("baz"), None);
    assert_eq!(t.get_now("qux"), None);
    t.no_call();
}

#[test]
fn actor_cache_008_multi_put_is_one_flush() {
    let t = T::new();
    let mut f = t.cache.put_multiple(&[("a", b"1"), ("b", b"2")], PutOptions::default());
    poll(&mut f).unwrap().unwrap();
    assert_eq!(t.get_now("a").as_deref(), Some("1"));
    assert_eq!(t.get_now("b").as_deref(), Some("2"));
    t.end_turn();
    assert_eq!(puts(&t.commit_ok(&[])), sp(&[("a", "1"), ("b", "2")]));
    t.no_call();
}

#[test]
fn actor_cache_009_multi_delete_of_cached_keys_counts_at_once() {
    let t = T::new();
    load(&t, "a", Some("1"));
    load(&t, "b", Some("2"));
    load(&t, "c", None);
    load(&t, "d", None);
    let mut f = t.cache.delete_multiple(&["a", "b", "c", "d"], PutOptions::default());
    assert_eq!(poll(&mut f).unwrap().unwrap(), 2);
    t.end_turn();
    assert_eq!(t.commit_ok(&[]).muted_deletes, keys(&["a", "b"]));
}

#[test]
fn actor_cache_010_put_is_readable_before_during_and_after_flush() {
    let t = T::new();
    t.put("k", "v");
    assert_eq!(t.get_now("k").as_deref(), Some("v"));
    t.end_turn();
    let (_, tx) = t.expect_commit();
    assert_eq!(t.get_now("k").as_deref(), Some("v"));
    tx.send(Ok(CommitResult::default())).unwrap();
    t.run();
    assert_eq!(t.get_now("k").as_deref(), Some("v"));
    t.no_call();
}

#[test]
fn actor_cache_011_putting_the_same_value_writes_nothing() {
    let t = T::new();
    load(&t, "k", Some("v"));
    t.put("k", "v");
    t.end_turn();
    t.no_call();
    assert!(t.locks().is_empty(), "a redundant write locks nothing");
}

#[test]
fn actor_cache_012_putting_a_different_value_writes() {
    let t = T::new();
    load(&t, "k", Some("v"));
    t.put("k", "w");
    t.end_turn();
    assert_eq!(puts(&t.commit_ok(&[])), sp(&[("k", "w")]));
}

#[test]
fn actor_cache_013_delete_of_uncached_key_waits_for_storage_count() {
    let t = T::new();
    let mut d = t.cache.delete("k", PutOptions::default());
    assert!(poll(&mut d).is_none());
    t.end_turn();
    let (b, tx) = t.expect_commit();
    assert_eq!(b.counted_deletes, vec![keys(&["k"])]);
    assert!(b.muted_deletes.is_empty());
    assert!(poll(&mut d).is_none());
    tx.send(Ok(CommitResult { counts: vec![1], deleted_all: 0, ..Default::default() })).unwrap();
    t.run();
    assert!(poll(&mut d).unwrap().unwrap());
}

#[test]
fn actor_cache_014_delete_of_uncached_absent_key_is_false() {
    let t = T::new();
    let mut d = t.cache.delete("k", PutOptions::default());
    t.end_turn();
    t.commit_ok(&[0]);
    assert!(!poll(&mut d).unwrap().unwrap());
}

#[test]
fn actor_cache_015_deleting_a_known_absent_key_is_answered_from_cache() {
    let t = T::new();
    load(&t, "k", None);
    let mut d = t.cache.delete("k", PutOptions::default());
    assert!(!poll(&mut d).unwrap().unwrap());
    t.end_turn();
    t.no_call();
}

#[test]
fn actor_cache_016_put_over_deleted_key_is_written() {
    let t = T::new();
    load(&t, "k", Some("v"));
    drop(t.cache.delete("k", PutOptions::default()));
    t.end_turn();
    t.commit_ok(&[]);
    t.put("k", "v");
    t.end_turn();
    assert_eq!(puts(&t.commit_ok(&[])), sp(&[("k", "v")]));
}

#[test]
fn actor_cache_017_multi_put_skips_unchanged_pairs() {
    let t = T::new();
    load(&t, "a", Some("1"));
    load(&t, "b", Some("2"));
    drop(t.cache.put_multiple(&[("a", b"1"), ("b", b"3"), ("c", b"4")], PutOptions::default()));
    t.end_turn();
    assert_eq!(puts(&t.commit_ok(&[])), sp(&[("b", "3"), ("c", "4")]));
}

#[test]
fn actor_cache_018_multi_put_visible_and_absent_keys_stay_absent() {
    let t = T::new();
    load(&t, "x", None);
    drop(t.cache.put_multiple(&[("a", b"1"), ("b", b"2")], PutOptions::default()));
    assert_eq!(t.get_now("a").as_deref(), Some("1"));
    assert_eq!(t.get_now("x"), None);
    t.no_call();
}

#[test]
fn actor_cache_019_multi_delete_mixes_cached_and_storage_counts() {
    let t = T::new();
    load(&t, "a", Some("1"));
    load(&t, "b", None);
    let mut d = t.cache.delete_multiple(&["a", "b", "c", "d"], PutOptions::default());
    assert!(poll(&mut d).is_none());
    t.end_turn();
    let (b, tx) = t.expect_commit();
    assert_eq!(b.counted_deletes, vec![keys(&["c", "d"])]);
    assert_eq!(b.muted_deletes, keys(&["a"]));
    tx.send(Ok(CommitResult { counts: vec![1], deleted_all: 0, ..Default::default() })).unwrap();
    t.run();
    assert_eq!(poll(&mut d).unwrap().unwrap(), 2);
}

// ----- §2.6 deleteAll ---------------------------------------------------------------------------------------

#[test]
fn actor_cache_023_delete_all_flushes_earlier_writes_first_then_later_ones() {
    let t = T::new();
    t.put("a", "1");
    let mut da = t.cache.delete_all(PutOptions::default());
    t.put("b", "2");
    t.end_turn();
    assert_eq!(puts(&t.commit_ok(&[])), sp(&[("a", "1")]));
    let (b, tx) = t.expect_commit();
    assert!(b.delete_all && b.puts.is_empty());
    tx.send(Ok(CommitResult { counts: vec![], deleted_all: 5, ..Default::default() })).unwrap();
    t.run();
    assert_eq!(poll(&mut da).unwrap().unwrap(), 5);
    assert_eq!(puts(&t.commit_ok(&[])), sp(&[("b", "2")]));
    t.no_call();
}

#[test]
fn actor_cache_024_after_delete_all_every_key_reads_absent() {
    let t = T::new();
    load(&t, "a", Some("1"));
    drop(t.cache.delete_all(PutOptions::default()));
    t.put("z", "9");
    assert_eq!(t.get_now("a"), None);
    assert_eq!(t.get_now(""), None);
    assert_eq!(t.get_now("never-seen"), None);
    assert_eq!(t.get_now("z").as_deref(), Some("9"));
    assert_eq!(t.list_now(ListOptions::default()), sp(&[("z", "9")]));
    t.no_call();
}

#[test]
fn actor_cache_025_alarm_set_after_delete_all_is_unaffected() {
    let t = T::new();
    drop(t.cache.delete_all(PutOptions::default()));
    drop(t.cache.set_alarm(5, PutOptions::default()));
    t.end_turn();
    let (b, tx) = t.expect_commit();
    assert!(b.delete_all && b.alarm.is_none(), "the alarm is not touched by deleteAll");
    tx.send(Ok(CommitResult::default())).unwrap();
    let b = t.commit_ok(&[]);
    assert_eq!(b.alarm, Some(Some(5)));
    let mut a = t.cache.get_alarm(GetOptions::default());
    assert_eq!(poll(&mut a).unwrap().unwrap(), Some(5));
}

#[test]
fn actor_cache_026_delete_all_count_and_earlier_counted_delete() {
    let t = T::new();
    let mut d = t.cache.delete("k", PutOptions::default());
    let mut da = t.cache.delete_all(PutOptions::default());
    t.end_turn();
    let b = t.commit_ok(&[1]);
    assert_eq!(b.counted_deletes, vec![keys(&["k"])]);
    assert!(poll(&mut d).unwrap().unwrap());
    let (_, tx) = t.expect_commit();
    tx.send(Ok(CommitResult { counts: vec![], deleted_all: 3, ..Default::default() })).unwrap();
    t.run();
    assert_eq!(poll(&mut da).unwrap().unwrap(), 3);
}

#[test]
fn actor_cache_027_delete_all_during_flush_waits_for_it() {
    let t = T::new();
    t.put("a", "1");
    t.end_turn();
    let (b1, tx1) = t.expect_commit();
    assert_eq!(puts(&b1), sp(&[("a", "1")]));
    t.put("b", "2");
    let mut da = t.cache.delete_all(PutOptions::default());
    t.no_call();
    tx1.send(Ok(CommitResult::default())).unwrap();
    t.run();
    assert_eq!(puts(&t.commit_ok(&[])), sp(&[("b", "2")]));
    let (b, tx) = t.expect_commit();
    assert!(b.delete_all);
    tx.send(Ok(CommitResult { counts: vec![], deleted_all: 2, ..Default::default() })).unwrap();
    t.run();
    assert_eq!(poll(&mut da).unwrap().unwrap(), 2);
}

#[test]
fn actor_cache_028_second_delete_all_is_coalesced() {
    let t = T::new();
    let mut d1 = t.cache.delete_all(PutOptions::default());
    t.put("between", "x");
    let mut d2 = t.cache.delete_all(PutOptions::default());
    t.end_turn();
    let (b, tx) = t.expect_commit();
    assert!(b.delete_all && b.puts.is_empty());
    tx.send(Ok(CommitResult { counts: vec![], deleted_all: 4, ..Default::default() })).unwrap();
    t.run();
    assert_eq!(poll(&mut d1).unwrap().unwrap(), 4);
    assert_eq!(poll(&mut d2).unwrap().unwrap(), 0);
    t.no_call();
}

#[test]
fn actor_cache_029_counted_delete_then_put_sends_both() {
    let t = T::new();
    let mut d = t.cache.delete("k", PutOptions::default());
    t.put("k", "v");
    t.end_turn();
    let (b, tx) = t.expect_commit();
    assert_eq!(b.counted_deletes, vec![keys(&["k"])]);
    assert_eq!(puts(&b), sp(&[("k", "v")]));
    tx.send(Ok(CommitResult { counts: vec![1], deleted_all: 0, ..Default::default() })).unwrap();
    t.run();
    assert!(poll(&mut d).unwrap().unwrap());
}

#[test]
fn actor_cache_030_dropped_deletes_are_muted() {
    let t = T::new();
    drop(t.cache.delete("a", PutOptions::default()));
    drop(t.cache.delete("b", PutOptions::default()));
    drop(t.cache.delete("c", PutOptions::default()));
    t.put("c", "v");
    t.end_turn();
    let b = t.commit_ok(&[]);
    assert!(b.counted_deletes.is_empty());
    assert_eq!(b.muted_deletes, keys(&["a", "b"]));
    assert_eq!(puts(&b), sp(&[("c", "v")]));
}

// ----- §2.2 ordering ----------------------------------------------------------------------------------------

#[test]
fn actor_cache_031_get_returns_values_as_of_its_call() {
    let t = T::new();
    let mut g = t.cache.get("k", GetOptions::default());
    t.put("k", "new");
    t.expect_get(&["k"]).send(Ok(pairs(&[("k", "old")]))).unwrap();
    assert_eq!(poll(&mut g).unwrap().unwrap(), Some(b"old".to_vec()));
    assert_eq!(t.get_now("k").as_deref(), Some("new"), "the read does not overwrite the newer write");
}

#[test]
fn actor_cache_032_partially_cached_multi_get_pins_cached_values() {
    let t = T::new();
    load(&t, "a", Some("1"));
    let mut g = t.cache.get_multiple(&["a", "b"], GetOptions::default());
    t.put("a", "2");
    t.expect_get(&["b"]).send(Ok(pairs(&[("b", "x")]))).unwrap();
    assert_eq!(strs(poll(&mut g).unwrap().unwrap()), sp(&[("a", "1"), ("b", "x")]));
}

#[test]
fn actor_cache_033_flush_waits_for_earlier_reads() {
    let t = T::new();
    let mut g = t.cache.get("k", GetOptions::default());
    let tx = t.expect_get(&["k"]);
    t.put("k", "mine");
    t.end_turn();
    t.no_call();
    tx.send(Ok(pairs(&[("k", "theirs")]))).unwrap();
    assert_eq!(poll(&mut g).unwrap().unwrap(), Some(b"theirs".to_vec()));
    assert_eq!(puts(&t.commit_ok(&[])), sp(&[("k", "mine")]));
    assert_eq!(t.get_now("k").as_deref(), Some("mine"));
}

#[test]
fn actor_cache_034_put_during_flush_waits_for_the_next_one() {
    let t = T::new();
    t.put("a", "1");
    t.end_turn();
    let (b, tx) = t.expect_commit();
    assert_eq!(puts(&b), sp(&[("a", "1")]));
    t.put("b", "2");
    assert_eq!(t.get_now("b").as_deref(), Some("2"));
    t.no_call();
    tx.send(Ok(CommitResult::default())).unwrap();
    assert_eq!(puts(&t.commit_ok(&[])), sp(&[("b", "2")]));
}

#[test]
fn actor_cache_035_disconnected_flush_is_retried_with_current_state() {
    let t = T::new();
    t.put("a", "1");
    t.end_turn();
    let (_, tx) = t.expect_commit();
    t.put("a", "2");
    t.put("b", "3");
    tx.send(Err(StoreError::Disconnected("lost".into()))).unwrap();
    let b = t.commit_ok(&[]);
    assert_eq!(puts(&b), sp(&[("a", "2"), ("b", "3")]));
    t.no_call();
    assert!(t.breaks().is_empty());
}

/// Adapted: our commit is one atomic RPC that reports counts only on success, so no count is ever "already
/// obtained" by a failed attempt; the consequence checked is that the retry counts once and the overwriting
/// put wins.
#[test]
fn actor_cache_036_retry_counts_once_and_overwrite_wins() {
    let t = T::new();
    let mut d = t.cache.delete("k", PutOptions::default());
    t.end_turn();
    let (_, tx) = t.expect_commit();
    t.put("k", "v");
    tx.send(Err(StoreError::Disconnected("lost".into()))).unwrap();
    let (b, tx) = t.expect_commit();
    assert_eq!(b.counted_deletes, vec![keys(&["k"])]);
    assert_eq!(puts(&b), sp(&[("k", "v")]));
    tx.send(Ok(CommitResult { counts: vec![1], deleted_all: 0, ..Default::default() })).unwrap();
    t.run();
    assert!(poll(&mut d).unwrap().unwrap());
    t.no_call();
}

#[test]
fn actor_cache_037_counted_delete_resolves_after_the_flush() {
    let t = T::new();
    let mut d = t.cache.delete("k", PutOptions::default());
    t.end_turn();
    let (_, tx) = t.expect_commit();
    assert!(poll(&mut d).is_none());
    tx.send(Ok(CommitResult { counts: vec![0], deleted_all: 0, ..Default::default() })).unwrap();
    t.run();
    assert!(!poll(&mut d).unwrap().unwrap());
}

// ----- §1.4, §2.3 output gate and failures ------------------------------------------------------------------

#[test]
fn actor_cache_038_output_gate_locked_until_commit() {
    let t = T::new();
    t.put("a", "1");
    assert_eq!(t.locks(), vec![None]);
    t.end_turn();
    let (_, tx) = t.expect_commit();
    assert_eq!(t.locks(), vec![None]);
    tx.send(Ok(CommitResult::default())).unwrap();
    t.run();
    assert_eq!(t.locks(), vec![Some(Ok(()))]);
}

#[test]
fn actor_cache_039_unconfirmed_write_does_not_lock() {
    let t = T::new();
    t.put_with("a", "1", unconfirmed());
    drop(t.cache.delete("b", unconfirmed()));
    drop(t.cache.set_alarm(3, unconfirmed()));
    t.end_turn();
    t.commit_ok(&[0]);
    assert!(t.locks().is_empty());
}

#[test]
fn actor_cache_040_mixed_batch_locks() {
    let t = T::new();
    t.put_with("a", "1", unconfirmed());
    assert!(t.locks().is_empty());
    t.put("b", "2");
    assert_eq!(t.locks(), vec![None]);
    t.end_turn();
    t.commit_ok(&[]);
    assert_eq!(t.locks(), vec![Some(Ok(()))]);
}

#[test]
fn actor_cache_041_hard_failure_breaks_the_gate_with_the_jsg_message() {
    let t = T::new();
    t.put("a", "1");
    t.end_turn();
    let (_, tx) = t.expect_commit();
    tx.send(Err(StoreError::Failed(Error::new("boom")))).unwrap();
    t.run();
    let e = t.locks()[0].clone().unwrap().unwrap_err();
    assert_eq!((e.kind(), e.message()), (ErrorKind::Error, "boom"));
    assert!(e.durable_object_reset());
    let mut p = t.cache.put("b", b"2", PutOptions::default());
    assert_eq!(poll(&mut p).unwrap().unwrap_err(), e, "no further writes");
    t.end_turn();
    t.no_call();
}

#[test]
fn actor_cache_042_hard_failure_breaks_the_gate_even_if_unconfirmed() {
    let t = T::new();
    t.put_with("a", "1", unconfirmed());
    t.end_turn();
    let (_, tx) = t.expect_commit();
    tx.send(Err(StoreError::Failed(Error::new("boom")))).unwrap();
    t.run();
    let b = t.breaks();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].message(), "boom");
    assert!(b[0].durable_object_reset());
}

#[test]
fn actor_cache_043_internal_failure_message_has_a_reference() {
    let t = T::new();
    t.put("a", "1");
    t.end_turn();
    let (_, tx) = t.expect_commit();
    tx.send(Err(StoreError::Internal("disk on fire".into()))).unwrap();
    t.run();
    let e = t.locks()[0].clone().unwrap().unwrap_err();
    assert_eq!(e.message(), messages::storage_write_internal(&error_reference("disk on fire", 1)));
    assert!(e.durable_object_reset() && !e.retryable());
    // Later writes fail with the same error.
    let mut f = t.cache.put("b", b"x", PutOptions::default());
    assert_eq!(poll(&mut f).unwrap().unwrap_err(), e);
}

#[test]
fn actor_cache_044_disconnected_read_is_retried_once_and_flush_waits() {
    let t = T::new();
    let mut g = t.cache.get("k", GetOptions::default());
    let tx = t.expect_get(&["k"]);
    t.put("other", "x");
    t.end_turn();
    tx.send(Err(StoreError::Disconnected("lost".into()))).unwrap();
    assert!(poll(&mut g).is_none());
    let tx = t.expect_get(&["k"]);
    t.no_call();
    tx.send(Ok(pairs(&[("k", "v")]))).unwrap();
    assert_eq!(poll(&mut g).unwrap().unwrap(), Some(b"v".to_vec()));
    t.commit_ok(&[]);
    // A second DISCONNECTED is reported to the reader as retryable, not retried again.
    let mut g = t.cache.get("j", GetOptions::default());
    t.expect_get(&["j"]).send(Err(StoreError::Disconnected("lost".into()))).unwrap();
    assert!(poll(&mut g).is_none());
    t.expect_get(&["j"]).send(Err(StoreError::Disconnected("lost".into()))).unwrap();
    let e = poll(&mut g).unwrap().unwrap_err();
    assert_eq!(e.message(), messages::NETWORK_CONNECTION_LOST);
    assert!(e.retryable() && !e.durable_object_reset());
}

#[test]
fn actor_cache_045_read_retry_with_a_puts_only_flush() {
    let t = T::new();
    let mut g = t.cache.get_multiple(&["a", "b"], GetOptions::default());
    let tx = t.expect_get(&["a", "b"]);
    t.put("c", "1");
    t.end_turn();
    tx.send(Err(StoreError::Disconnected("lost".into()))).unwrap();
    assert!(poll(&mut g).is_none());
    let tx = t.expect_get(&["a", "b"]);
    t.no_call();
    tx.send(Ok(pairs(&[("a", "1")]))).unwrap();
    assert_eq!(strs(poll(&mut g).unwrap().unwrap()), sp(&[("a", "1")]));
    assert_eq!(puts(&t.commit_ok(&[])), sp(&[("c", "1")]));
}

#[test]
fn actor_cache_046_failed_read_is_not_retried_and_flush_proceeds() {
    let t = T::new();
    let mut g = t.cache.get("k", GetOptions::default());
    let tx = t.expect_get(&["k"]);
    t.put("x", "1");
    t.end_turn();
    tx.send(Err(StoreError::Failed(Error::type_error("nope")))).unwrap();
    let e = poll(&mut g).unwrap().unwrap_err();
    assert_eq!((e.kind(), e.message()), (ErrorKind::TypeError, "nope"));
    t.commit_ok(&[]);
    t.no_call();
    assert!(t.breaks().is_empty(), "a read error does not reset the object");
}

#[test]
fn actor_cache_047_cancelled_read_lets_the_flush_proceed() {
    let t = T::new();
    let g = t.cache.get("k", GetOptions::default());
    let _tx = t.expect_get(&["k"]);
    t.put("x", "1");
    t.end_turn();
    t.no_call();
    drop(g);
    assert_eq!(t.holds(), 0);
    t.commit_ok(&[]);
}

// ----- §2.4 list ----------------------------------------------------------------------------------------------

fn list_fut(t: &T, o: ListOptions) -> F<Vec<Pair>> {
    t.cache.list(CacheListOptions { list: o, ..Default::default() })
}

#[test]
fn actor_cache_050_list_caches_entries_and_gaps() {
    let t = T::new();
    let mut l = list_fut(&t, range("bar", "qux"));
    t.expect_list("bar", Some("qux"), false, None).send(&[("baz", "1"), ("foo", "2")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("baz", "1"), ("foo", "2")]));
    assert_eq!(t.get_now("baz").as_deref(), Some("1"));
    assert_eq!(t.get_now("bar"), None);
    assert_eq!(t.get_now("corge"), None);
    t.no_call();
}

#[test]
fn actor_cache_051_relisting_is_served_from_cache_with_limits() {
    let t = T::new();
    let mut l = list_fut(&t, range("a", "z"));
    t.expect_list("a", Some("z"), false, None).send(&[("b", "1"), ("c", "2"), ("d", "3")]);
    poll(&mut l).unwrap().unwrap();
    for (limit, n) in [(1, 1), (2, 2), (3, 3), (4, 3), (1000, 3)] {
        let got = t.list_now(ListOptions { limit: Some(limit), ..range("a", "z") });
        assert_eq!(got.len(), n);
    }
    t.no_call();
}

#[test]
fn actor_cache_052_list_end_key_is_not_learned() {
    let t = T::new();
    let mut l = list_fut(&t, range("a", "c"));
    t.expect_list("a", Some("c"), false, None).send(&[]);
    poll(&mut l).unwrap().unwrap();
    let mut g = t.cache.get("c", GetOptions::default());
    assert!(poll(&mut g).is_none());
    t.expect_get(&["c"]).send(Ok(vec![])).unwrap();
    poll(&mut g).unwrap().unwrap();
}

#[test]
fn actor_cache_053_unbounded_list_makes_everything_cached() {
    let t = T::new();
    let mut l = list_fut(&t, ListOptions::default());
    t.expect_list("", None, false, None).send(&[("b", "1"), ("m", "2")]);
    assert_eq!(poll(&mut l).unwrap().unwrap().len(), 2);
    assert_eq!(t.list_now(range("c", "z")), sp(&[("m", "2")]));
    assert_eq!(t.list_now(ListOptions { start: Some("c".into()), ..Default::default() }), sp(&[("m", "2")]));
    assert_eq!(t.get_now("zzz"), None);
    t.no_call();
}

#[test]
fn actor_cache_054_limited_list_caches_up_to_last_key_and_continues() {
    let t = T::new();
    let mut l = list_fut(&t, ListOptions { limit: Some(2), ..range("a", "z") });
    t.expect_list("a", Some("z"), false, Some(2)).send(&[("b", "1"), ("c", "2")]);
    assert_eq!(poll(&mut l).unwrap().unwrap().len(), 2);
    let mut l = list_fut(&t, ListOptions { limit: Some(3), ..range("a", "z") });
    t.expect_list("c\0", Some("z"), false, Some(1)).send(&[("d", "3")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("b", "1"), ("c", "2"), ("d", "3")]));
}

#[test]
fn actor_cache_055_negatives_raise_the_storage_limit() {
    let t = T::new();
    for k in ["b", "c", "d", "e"] {
        drop(t.cache.delete(k, PutOptions::default()));
    }
    let mut l = list_fut(&t, ListOptions { limit: Some(3), ..range("a", "z") });
    let r = t.expect_list("a", Some("z"), false, Some(7));
    r.send(&[("b", "x"), ("c", "x"), ("d", "x"), ("e", "x"), ("f", "1"), ("g", "2"), ("h", "3")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("f", "1"), ("g", "2"), ("h", "3")]));
}

#[test]
fn actor_cache_056_absent_range_start_is_cached_absent() {
    let t = T::new();
    let mut l = list_fut(&t, range("a", "z"));
    t.expect_list("a", Some("z"), false, None).send(&[("m", "1")]);
    poll(&mut l).unwrap().unwrap();
    assert_eq!(t.get_now("a"), None);
}

#[test]
fn actor_cache_057_separate_ranges_are_independent() {
    let t = T::new();
    let mut l = list_fut(&t, range("a", "c"));
    t.expect_list("a", Some("c"), false, None).send(&[("b", "1")]);
    poll(&mut l).unwrap().unwrap();
    let mut l = list_fut(&t, range("x", "z"));
    t.expect_list("x", Some("z"), false, None).send(&[("y", "2")]);
    poll(&mut l).unwrap().unwrap();
    assert!(!t.cache.is_cached("c") && !t.cache.is_cached("m") && !t.cache.is_cached("z"));
    assert!(t.cache.is_cached("bb") && t.cache.is_cached("xx"));
}

#[test]
fn actor_cache_058_cached_entries_win_over_storage() {
    let t = T::new();
    load(&t, "b", Some("cached"));
    t.put("d", "dirty");
    let mut l = list_fut(&t, range("a", "z"));
    t.expect_list("a", Some("z"), false, None).send(&[("b", "stale"), ("c", "3")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("b", "cached"), ("c", "3"), ("d", "dirty")]));
}

#[test]
fn actor_cache_059_list_reflects_its_start_and_later_writes_still_flush() {
    let t = T::new();
    let mut l = list_fut(&t, range("a", "z"));
    let r = t.expect_list("a", Some("z"), false, None);
    t.put("b", "1");
    r.send(&[("b", "1"), ("c", "2")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("b", "1"), ("c", "2")]));
    t.end_turn();
    assert_eq!(puts(&t.commit_ok(&[])), sp(&[("b", "1")]));
}

#[test]
fn actor_cache_060_list_from_a_known_key_starts_after_it() {
    let t = T::new();
    load(&t, "b", Some("1"));
    let mut l = list_fut(&t, range("b", "z"));
    t.expect_list("b\0", Some("z"), false, None).send(&[("c", "2")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("b", "1"), ("c", "2")]));
}

#[test]
fn actor_cache_061_list_from_an_unknown_key_starts_at_it() {
    let t = T::new();
    let mut l = list_fut(&t, range("b", "z"));
    t.expect_list("b", Some("z"), false, None).send(&[]);
    assert!(poll(&mut l).unwrap().unwrap().is_empty());
}

#[test]
fn actor_cache_062_adjacent_lists_make_the_union_cached() {
    let t = T::new();
    let mut l = list_fut(&t, range("a", "m"));
    t.expect_list("a", Some("m"), false, None).send(&[("b", "1")]);
    poll(&mut l).unwrap().unwrap();
    let mut l = list_fut(&t, range("m", "z"));
    t.expect_list("m", Some("z"), false, None).send(&[("n", "2")]);
    poll(&mut l).unwrap().unwrap();
    assert_eq!(t.list_now(range("a", "z")), sp(&[("b", "1"), ("n", "2")]));
}

#[test]
fn actor_cache_063_list_inside_a_known_gap_starts_at_its_end() {
    let t = T::new();
    let mut l = list_fut(&t, range("a", "m"));
    t.expect_list("a", Some("m"), false, None).send(&[]);
    poll(&mut l).unwrap().unwrap();
    let mut l = list_fut(&t, range("c", "z"));
    t.expect_list("m", Some("z"), false, None).send(&[("n", "1")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("n", "1")]));
}

#[test]
fn actor_cache_064_list_ending_inside_a_gap_lists_to_its_end() {
    let t = T::new();
    let mut l = list_fut(&t, range("m", "z"));
    t.expect_list("m", Some("z"), false, None).send(&[]);
    poll(&mut l).unwrap().unwrap();
    let mut l = list_fut(&t, range("a", "p"));
    t.expect_list("a", Some("p"), false, None).send(&[("b", "1")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("b", "1")]));
}

#[test]
fn actor_cache_065_dirty_puts_past_storage_results_are_included() {
    let t = T::new();
    t.put("y", "dirty");
    let mut l = list_fut(&t, ListOptions { limit: Some(5), ..range("a", "z") });
    t.expect_list("a", Some("z"), false, Some(5)).send(&[("b", "1")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("b", "1"), ("y", "dirty")]));
    assert_eq!(t.list_now(range("a", "z")), sp(&[("b", "1"), ("y", "dirty")]));
}

#[test]
fn actor_cache_067_deleted_end_key_counts_only_positives() {
    let t = T::new();
    let mut l = list_fut(&t, ListOptions { limit: Some(2), ..range("a", "z") });
    t.expect_list("a", Some("z"), false, Some(2)).send(&[("b", "1"), ("c", "2")]);
    poll(&mut l).unwrap().unwrap();
    drop(t.cache.delete("c", PutOptions::default()));
    let mut l = list_fut(&t, ListOptions { limit: Some(2), ..range("a", "z") });
    t.expect_list("c\0", Some("z"), false, Some(1)).send(&[("d", "3")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("b", "1"), ("d", "3")]));
}

#[test]
fn actor_cache_072_get_of_end_key_of_empty_list() {
    let t = T::new();
    let mut l = list_fut(&t, range("a", "b"));
    t.expect_list("a", Some("b"), false, None).send(&[]);
    poll(&mut l).unwrap().unwrap();
    load(&t, "b", Some("v"));
    assert_eq!(t.get_now("b").as_deref(), Some("v"));
    assert_eq!(t.get_now("a"), None);
}

#[test]
fn actor_cache_073_list_reverse_orders_descending_and_caches() {
    let t = T::new();
    let mut l = list_fut(&t, ListOptions { reverse: true, ..range("a", "z") });
    t.expect_list("a", Some("z"), true, None).send(&[("m", "2"), ("b", "1")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("m", "2"), ("b", "1")]));
    assert_eq!(t.list_now(range("a", "z")), sp(&[("b", "1"), ("m", "2")]));
    assert!(!t.cache.is_cached("z"));
}

#[test]
fn actor_cache_074_list_reverse_unbounded_is_fully_cached() {
    let t = T::new();
    let mut l = list_fut(&t, ListOptions { reverse: true, ..Default::default() });
    t.expect_list("", None, true, None).send(&[("q", "1")]);
    poll(&mut l).unwrap().unwrap();
    assert_eq!(t.list_now(ListOptions { reverse: true, ..Default::default() }), sp(&[("q", "1")]));
}

#[test]
fn actor_cache_075_list_reverse_with_limit_continues_below() {
    let t = T::new();
    let mut l = list_fut(&t, ListOptions { reverse: true, limit: Some(1), ..range("a", "z") });
    t.expect_list("a", Some("z"), true, Some(1)).send(&[("m", "2")]);
    poll(&mut l).unwrap().unwrap();
    let mut l = list_fut(&t, ListOptions { reverse: true, limit: Some(2), ..range("a", "z") });
    t.expect_list("a", Some("m"), true, Some(1)).send(&[("b", "1")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("m", "2"), ("b", "1")]));
}

#[test]
fn actor_cache_076_list_reverse_raises_limit_by_negatives() {
    let t = T::new();
    drop(t.cache.delete("y", PutOptions::default()));
    let mut l = list_fut(&t, ListOptions { reverse: true, limit: Some(1), ..range("a", "z") });
    t.expect_list("a", Some("z"), true, Some(2)).send(&[("y", "x"), ("b", "1")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("b", "1")]));
}

// ----- §2.8 eviction --------------------------------------------------------------------------------------

fn tiny(soft: usize) -> T {
    T::with(ActorCacheOptions { soft_limit: soft, hard_limit: 1 << 20, ..ActorCacheOptions::default() })
}

#[test]
fn actor_cache_095_reading_a_second_key_evicts_the_first() {
    let t = tiny(100);
    load(&t, "a", Some("1"));
    load(&t, "b", Some("2"));
    assert!(!t.cache.is_cached("a") && t.cache.is_cached("b"));
}

#[test]
fn actor_cache_096_eviction_is_lru() {
    let t = tiny(150);
    load(&t, "a", Some("1"));
    load(&t, "b", Some("2"));
    assert_eq!(t.get_now("a").as_deref(), Some("1"));
    load(&t, "c", Some("3"));
    assert!(t.cache.is_cached("a") && !t.cache.is_cached("b") && t.cache.is_cached("c"));
}

#[test]
fn actor_cache_097_dirty_entries_are_not_evicted_until_flushed() {
    let t = tiny(100);
    t.put("a", "1");
    t.put("b", "2");
    assert!(t.cache.is_cached("a") && t.cache.is_cached("b"));
    t.end_turn();
    t.commit_ok(&[]);
    assert!(t.cache.size() <= 100);
}

#[test]
fn actor_cache_098_tiny_soft_limit_keeps_nothing_read() {
    let t = tiny(1);
    load(&t, "a", Some("1"));
    assert!(!t.cache.is_cached("a"));
}

#[test]
fn actor_cache_099_stale_eviction() {
    let t = T::new();
    let t0 = madsim_tokio::time::Instant::now();
    let sec = std::time::Duration::from_secs(1);
    load(&t, "a", Some("1"));
    load(&t, "b", Some("2"));
    assert_eq!(t.cache.evict_stale(t0), 0);
    assert_eq!(t.get_now("a").as_deref(), Some("1"));
    assert_eq!(t.cache.evict_stale(t0 + sec / 2), 0, "at most once per timeout");
    assert_eq!(t.cache.evict_stale(t0 + sec), 1);
    assert!(t.cache.is_cached("a") && !t.cache.is_cached("b"));
}

#[test]
fn actor_cache_100_dirty_limit_backpressure() {
    let t = T::with(ActorCacheOptions { dirty_limit: 100, ..ActorCacheOptions::default() });
    let mut p1 = t.cache.put("a", b"1", PutOptions::default());
    assert!(poll(&mut p1).is_some());
    let mut p2 = t.cache.put("b", &[0; 100], PutOptions::default());
    assert!(poll(&mut p2).is_none());
    let mut d = t.cache.delete("a", PutOptions::default());
    assert!(poll(&mut d).is_none(), "even a cache-answered delete waits");
    t.end_turn();
    t.commit_ok(&[]);
    assert!(poll(&mut p2).unwrap().is_ok());
    assert!(poll(&mut d).unwrap().unwrap());
}

#[test]
fn actor_cache_101_eviction_forgets_adjacent_gaps() {
    let t = tiny(1 << 20);
    let mut l = list_fut(&t, range("a", "z"));
    t.expect_list("a", Some("z"), false, None).send(&[("m", "1")]);
    poll(&mut l).unwrap().unwrap();
    assert!(t.cache.is_cached("c") && t.cache.is_cached("p"));
    // Stale-evict "m" only: touch the others.
    let t0 = madsim_tokio::time::Instant::now();
    t.cache.evict_stale(t0);
    let _ = t.get_now("a");
    let _ = t.list_now(range("a", "b"));
    t.cache.evict_stale(t0 + std::time::Duration::from_secs(40));
    assert!(!t.cache.is_cached("m"));
    assert!(!t.cache.is_cached("c") && !t.cache.is_cached("p"));
}

#[test]
fn actor_cache_109_hard_limit_on_write() {
    let t = T::with(ActorCacheOptions { hard_limit: 200, ..ActorCacheOptions::default() });
    let mut p = t.cache.put("a", &[0; 300], PutOptions::default());
    let e = poll(&mut p).unwrap().unwrap_err();
    assert_eq!(e.message(), messages::CACHE_OVER_HARD_LIMIT);
    assert!(e.overloaded() && e.durable_object_reset());
    assert_eq!(t.locks()[0].clone().unwrap().unwrap_err(), e);
}

#[test]
fn actor_cache_110_no_cache() {
    let t = T::new();
    let mut g = t.cache.get("a", GetOptions { no_cache: true, ..Default::default() });
    t.expect_get(&["a"]).send(Ok(pairs(&[("a", "1")]))).unwrap();
    poll(&mut g).unwrap().unwrap();
    assert!(!t.cache.is_cached("a"));
    t.put_with("b", "2", PutOptions { no_cache: true, ..Default::default() });
    assert_eq!(t.get_now("b").as_deref(), Some("2"));
    t.put_with("c", "3", PutOptions { no_cache: true, ..Default::default() });
    t.end_turn();
    t.commit_ok(&[]);
    assert!(t.cache.is_cached("b"), "a normal read of the dirty entry kept it");
    assert!(!t.cache.is_cached("c"));
    let mut l =
        t.cache.list(CacheListOptions { list: range("m", "n"), no_cache: true, ..Default::default() });
    t.expect_list("m", Some("n"), false, None).send(&[]);
    poll(&mut l).unwrap().unwrap();
    assert!(!t.cache.is_cached("m"));
}

// ----- alarms -------------------------------------------------------------------------------------------

#[test]
fn actor_cache_122_get_alarm_reads_once() {
    let t = T::new();
    let mut a = t.cache.get_alarm(GetOptions::default());
    assert!(poll(&mut a).is_none());
    match t.next() {
        Call::GetAlarm(tx) => tx.send(Ok(None)).unwrap(),
        c => panic!("{c:?}"),
    }
    assert_eq!(poll(&mut a).unwrap().unwrap(), None);
    let mut a = t.cache.get_alarm(GetOptions::default());
    assert_eq!(poll(&mut a).unwrap().unwrap(), None);
    t.no_call();
}

#[test]
fn actor_cache_123_set_alarm_flushes_with_puts_and_delete_alone() {
    let t = T::new();
    drop(t.cache.set_alarm(10, PutOptions::default()));
    t.put("a", "1");
    t.end_turn();
    let b = t.commit_ok(&[]);
    assert_eq!((b.alarm, puts(&b)), (Some(Some(10)), sp(&[("a", "1")])));
    drop(t.cache.delete_alarm(PutOptions::default()));
    t.end_turn();
    let b = t.commit_ok(&[]);
    assert_eq!(b, Batch { alarm: Some(None), ..Batch::default() });
    drop(t.cache.delete_alarm(PutOptions::default()));
    t.end_turn();
    t.no_call();
}

#[test]
fn actor_cache_131_delete_all_deletes_alarm_after_success() {
    let t = T::with(ActorCacheOptions { delete_all_deletes_alarm: true, ..ActorCacheOptions::default() });
    drop(t.cache.set_alarm(10, PutOptions::default()));
    t.end_turn();
    t.commit_ok(&[]);
    drop(t.cache.delete_all(PutOptions::default()));
    let mut a = t.cache.get_alarm(GetOptions::default());
    assert_eq!(poll(&mut a).unwrap().unwrap(), None);
    t.end_turn();
    let b = t.commit_ok(&[]);
    assert!(b.delete_all && b.alarm == Some(None));
    t.no_call();
}

#[test]
fn actor_cache_132_delete_all_without_flag_preserves_alarm() {
    let t = T::new();
    drop(t.cache.set_alarm(10, PutOptions::default()));
    t.end_turn();
    t.commit_ok(&[]);
    drop(t.cache.delete_all(PutOptions::default()));
    t.end_turn();
    assert_eq!(t.commit_ok(&[]).alarm, None);
    let mut a = t.cache.get_alarm(GetOptions::default());
    assert_eq!(poll(&mut a).unwrap().unwrap(), Some(10));
}

#[test]
fn actor_cache_133_set_alarm_after_delete_all_wins() {
    let t = T::with(ActorCacheOptions { delete_all_deletes_alarm: true, ..ActorCacheOptions::default() });
    drop(t.cache.delete_all(PutOptions::default()));
    drop(t.cache.set_alarm(7, PutOptions::default()));
    t.end_turn();
    assert_eq!(t.commit_ok(&[]).alarm, Some(None));
    assert_eq!(t.commit_ok(&[]).alarm, Some(Some(7)));
}

#[test]
fn actor_cache_136_failed_delete_all_breaks_the_gate() {
    let t = T::with(ActorCacheOptions { delete_all_deletes_alarm: true, ..ActorCacheOptions::default() });
    let mut da = t.cache.delete_all(PutOptions::default());
    t.end_turn();
    let (b, tx) = t.expect_commit();
    assert!(b.delete_all);
    tx.send(Err(StoreError::Failed(Error::new("nope")))).unwrap();
    t.run();
    assert_eq!(poll(&mut da).unwrap().unwrap_err().message(), "nope");
    assert!(t.locks()[0].clone().unwrap().is_err());
    t.no_call();
}

/// §2.3 applied to deleteAll: its commit is retried after a DISCONNECTED failure up to 4 times (5 attempts,
/// the same batch each time); the fifth failure is the deleteAll's error, retryable and a reset.
#[test]
fn actor_cache_023_a_disconnected_delete_all_is_retried_four_times_then_fails() {
    let t = T::new();
    let mut da = t.cache.delete_all(PutOptions::default());
    t.end_turn();
    for attempt in 0..5 {
        let (b, tx) = t.expect_commit();
        assert!(b.delete_all && b.puts.is_empty(), "attempt {attempt} commits the same deleteAll");
        tx.send(Err(StoreError::Disconnected("lost".into()))).unwrap();
        t.run();
        if attempt < 4 {
            assert!(poll(&mut da).is_none(), "attempt {attempt} is retried");
        }
    }
    let e = poll(&mut da).unwrap().unwrap_err();
    assert_eq!(e.message(), messages::delete_all_internal(&error_reference("lost", 1)));
    assert!(e.retryable() && e.durable_object_reset(), "{e:?}");
    assert!(t.locks()[0].clone().unwrap().is_err(), "the output gate breaks");
    t.no_call();
}

/// The same, when the fifth attempt succeeds: the deleteAll answers its count, and nothing breaks.
#[test]
fn actor_cache_023_a_delete_all_that_succeeds_on_its_fifth_attempt_answers_its_count() {
    let t = T::new();
    let mut da = t.cache.delete_all(PutOptions::default());
    t.end_turn();
    for _ in 0..4 {
        let (_, tx) = t.expect_commit();
        tx.send(Err(StoreError::Disconnected("lost".into()))).unwrap();
        t.run();
    }
    let (b, tx) = t.expect_commit();
    assert!(b.delete_all);
    tx.send(Ok(CommitResult { counts: vec![], deleted_all: 3, ..Default::default() })).unwrap();
    t.run();
    assert_eq!(poll(&mut da).unwrap().unwrap(), 3);
    assert!(t.breaks().is_empty());
    t.no_call();
}

#[test]
fn actor_cache_137_internal_delete_all_failure_message() {
    let t = T::new();
    let mut da = t.cache.delete_all(PutOptions::default());
    t.end_turn();
    let (_, tx) = t.expect_commit();
    tx.send(Err(StoreError::Internal("x".into()))).unwrap();
    t.run();
    let e = poll(&mut da).unwrap().unwrap_err();
    assert_eq!(e.message(), messages::delete_all_internal(&error_reference("x", 1)));
    assert!(e.durable_object_reset());
}

// ----- §2.9 sync and shutdown -------------------------------------------------------------------------

#[test]
fn actor_cache_138_sync_waits_for_scheduled_and_in_flight_flushes() {
    let t = T::new();
    let mut s0 = t.cache.sync();
    assert!(poll(&mut s0).unwrap().is_ok(), "nothing pending");
    t.put_with("a", "1", unconfirmed());
    let mut s1 = t.cache.sync();
    t.end_turn();
    let (_, tx) = t.expect_commit();
    let mut s2 = t.cache.sync();
    t.put("b", "2");
    assert!(poll(&mut s1).is_none() && poll(&mut s2).is_none());
    tx.send(Ok(CommitResult::default())).unwrap();
    t.run();
    assert!(poll(&mut s1).unwrap().is_ok() && poll(&mut s2).unwrap().is_ok());
    t.commit_ok(&[]);
}

#[test]
fn actor_cache_139_shutdown_with_nothing_pending() {
    let t = T::new();
    t.cache.shutdown(None);
    t.end_turn();
    t.no_call();
    assert!(t.breaks().is_empty());
}

#[test]
fn actor_cache_140_shutdown_cancels_a_scheduled_flush() {
    for options in [PutOptions::default(), unconfirmed()] {
        let t = T::new();
        t.put_with("a", "1", options);
        t.cache.shutdown(None);
        t.end_turn();
        t.no_call();
        let e = if options.allow_unconfirmed {
            t.breaks()[0].clone()
        } else {
            t.locks()[0].clone().unwrap().unwrap_err()
        };
        assert_eq!(e.message(), messages::STORAGE_NO_LONGER_ACCESSIBLE);
        assert!(e.retryable() && e.durable_object_reset());
    }
}

#[test]
fn actor_cache_141_shutdown_lets_an_in_flight_flush_complete() {
    let t = T::new();
    t.put("a", "1");
    t.end_turn();
    let (_, tx) = t.expect_commit();
    t.cache.shutdown(None);
    tx.send(Ok(CommitResult::default())).unwrap();
    t.run();
    assert_eq!(t.locks(), vec![Some(Ok(()))]);
    assert!(t.breaks().is_empty());
}

#[test]
fn actor_cache_142_writes_after_shutdown_fail_and_break_the_gate() {
    let t = T::new();
    let reason = Error::new("gone").with_reset();
    t.cache.shutdown(Some(reason.clone()));
    let mut p = t.cache.put("a", b"1", unconfirmed());
    assert_eq!(poll(&mut p).unwrap().unwrap_err(), reason);
    let mut d = t.cache.delete("a", PutOptions::default());
    assert_eq!(poll(&mut d).unwrap().unwrap_err(), reason);
    assert_eq!(t.breaks(), vec![reason.clone(), reason]);
}

// ----- §2.4 list: statements 66, 68, 69 -------------------------------------------------------------------

#[test]
fn actor_cache_066_overwriting_the_end_key_of_a_listed_range() {
    let t = T::new();
    let mut l = list_fut(&t, range("a", "c"));
    t.expect_list("a", Some("c"), false, None).send(&[("b", "1")]);
    poll(&mut l).unwrap().unwrap();
    t.put("c", "x");
    assert_eq!(t.list_now(range("a", "c")), sp(&[("b", "1")]));
    assert_eq!(t.list_now(range("a", "c\0")), sp(&[("b", "1"), ("c", "x")]));
    let mut l = list_fut(&t, range("a", "z"));
    t.expect_list("c\0", Some("z"), false, None).send(&[("d", "2")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("b", "1"), ("c", "x"), ("d", "2")]));
    assert_eq!(t.list_now(range("a", "z")), sp(&[("b", "1"), ("c", "x"), ("d", "2")]));
}

#[test]
fn actor_cache_068_deleted_end_key_of_an_empty_listed_range() {
    let t = T::new();
    let mut l = list_fut(&t, ListOptions { limit: Some(2), ..range("a", "c") });
    t.expect_list("a", Some("c"), false, Some(2)).send(&[]);
    assert!(poll(&mut l).unwrap().unwrap().is_empty());
    drop(t.cache.delete("c", PutOptions::default()));
    let mut l = list_fut(&t, ListOptions { limit: Some(2), ..range("a", "z") });
    // The deleted "c" is known; storage is asked from after it for the 2 positives still wanted.
    t.expect_list("c\0", Some("z"), false, Some(2)).send(&[("d", "1"), ("e", "2")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("d", "1"), ("e", "2")]));
}

#[test]
fn actor_cache_069_ops_interleaved_with_a_list() {
    let t = T::new();
    load(&t, "a", Some("0"));
    let mut l = list_fut(&t, range("a", "z"));
    let r = t.expect_list("a\0", Some("z"), false, None);
    t.put("a", "new-a");
    t.put("b", "new-b");
    drop(t.cache.delete("c", PutOptions::default()));
    let mut g = t.cache.get("d", GetOptions::default());
    let g_tx = t.expect_get(&["d"]);
    r.send(&[("b", "1"), ("c", "2"), ("d", "3")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("a", "0"), ("b", "1"), ("c", "2"), ("d", "3")]));
    g_tx.send(Ok(pairs(&[("d", "3")]))).unwrap();
    assert_eq!(poll(&mut g).unwrap().unwrap(), Some(b"3".to_vec()));
    assert_eq!(t.list_now(range("a", "z")), sp(&[("a", "new-a"), ("b", "new-b"), ("d", "3")]));
    t.end_turn();
    let b = t.commit_ok(&[]);
    assert_eq!(puts(&b), sp(&[("a", "new-a"), ("b", "new-b")]));
    assert_eq!(b.muted_deletes, keys(&["c"]), "the delete's future was dropped: muted");
}

// ----- §2.4 listReverse: statements 77–92 ------------------------------------------------------------------

fn rev(start: &str, end: &str, limit: Option<i64>) -> ListOptions {
    ListOptions { reverse: true, limit, ..range(start, end) }
}

#[test]
fn actor_cache_077_list_reverse_absent_range_end() {
    let t = T::new();
    let mut l = list_fut(&t, rev("a", "c", None));
    t.expect_list("a", Some("c"), true, None).send(&[("b", "1")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("b", "1")]));
    assert!(!t.cache.is_cached("c"), "the range end is not learned");
    load(&t, "c", None);
    assert_eq!(t.get_now("c"), None);
    assert_eq!(t.list_now(rev("a", "c", None)), sp(&[("b", "1")]));
    assert_eq!(t.list_now(rev("a", "c\0", None)), sp(&[("b", "1")]));
    t.no_call();
}

#[test]
fn actor_cache_078_list_reverse_separate_ranges() {
    let t = T::new();
    let mut l = list_fut(&t, rev("a", "c", None));
    t.expect_list("a", Some("c"), true, None).send(&[("b", "1")]);
    poll(&mut l).unwrap().unwrap();
    let mut l = list_fut(&t, rev("x", "z", None));
    t.expect_list("x", Some("z"), true, None).send(&[("y", "2")]);
    poll(&mut l).unwrap().unwrap();
    assert!(!t.cache.is_cached("c") && !t.cache.is_cached("m") && !t.cache.is_cached("z"));
    assert!(t.cache.is_cached("bb") && t.cache.is_cached("xx"));
    assert_eq!(t.list_now(rev("x", "z", None)), sp(&[("y", "2")]));
}

#[test]
fn actor_cache_079_list_reverse_merges_cached_keys() {
    let t = T::new();
    load(&t, "b", Some("cached"));
    t.put("d", "dirty");
    let mut l = list_fut(&t, rev("a", "z", None));
    t.expect_list("a", Some("z"), true, None).send(&[("c", "3"), ("b", "stale")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("d", "dirty"), ("c", "3"), ("b", "cached")]));
    assert_eq!(t.list_now(rev("a", "z", None)), sp(&[("d", "dirty"), ("c", "3"), ("b", "cached")]));
}

#[test]
fn actor_cache_080_list_reverse_redundant_looking_dirty_entries_still_flush() {
    let t = T::new();
    let mut l = list_fut(&t, rev("a", "z", None));
    let r = t.expect_list("a", Some("z"), true, None);
    t.put("c", "2");
    r.send(&[("c", "2"), ("b", "1")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("c", "2"), ("b", "1")]));
    t.end_turn();
    assert_eq!(puts(&t.commit_ok(&[])), sp(&[("c", "2")]));
}

#[test]
fn actor_cache_081_list_reverse_from_a_known_key_skips_it() {
    let t = T::new();
    load(&t, "b", Some("1"));
    let mut l = list_fut(&t, rev("b", "z", None));
    t.expect_list("b\0", Some("z"), true, None).send(&[("c", "2")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("c", "2"), ("b", "1")]));
    // With a limit the storage results come first (from the top); the known start fills what is left.
    let t = T::new();
    load(&t, "b", Some("1"));
    let mut l = list_fut(&t, rev("b", "z", Some(1)));
    t.expect_list("b\0", Some("z"), true, Some(1)).send(&[("c", "2")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("c", "2")]));
    let mut l = list_fut(&t, rev("b", "z", Some(2)));
    t.expect_list("b\0", Some("c"), true, Some(1)).send(&[]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("c", "2"), ("b", "1")]));
}

#[test]
fn actor_cache_082_list_reverse_from_an_unknown_key_lists_it() {
    let t = T::new();
    let mut l = list_fut(&t, rev("b", "z", None));
    t.expect_list("b", Some("z"), true, None).send(&[("b", "1")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("b", "1")]));
}

fn adjacent_reverse(first: (&str, &str), second: (&str, &str), mid: Option<&str>) {
    let t = T::new();
    let reply = |lo: &str| -> Vec<(&str, &str)> {
        let mut v = Vec::new();
        if lo == "m" {
            v.push(("n", "2"));
            if let Some(m) = mid {
                v.push(("m", m));
            }
        } else {
            v.push(("b", "1"));
        }
        v
    };
    for (lo, hi) in [first, second] {
        let mut l = list_fut(&t, rev(lo, hi, None));
        t.expect_list(lo, Some(hi), true, None).send(&reply(lo));
        poll(&mut l).unwrap().unwrap();
    }
    let mut want = vec![("n", "2")];
    if let Some(m) = mid {
        want.push(("m", m));
    }
    want.push(("b", "1"));
    assert_eq!(t.list_now(rev("a", "z", None)), sp(&want));
    assert_eq!(t.get_now("m").as_deref(), mid);
    t.no_call();
}

#[test]
fn actor_cache_083_list_reverse_adjacent_absent_midpoint() {
    adjacent_reverse(("a", "m"), ("m", "z"), None);
}

#[test]
fn actor_cache_084_list_reverse_adjacent_absent_midpoint_reversed_order() {
    adjacent_reverse(("m", "z"), ("a", "m"), None);
}

#[test]
fn actor_cache_085_list_reverse_adjacent_present_midpoint() {
    adjacent_reverse(("a", "m"), ("m", "z"), Some("mid"));
}

#[test]
fn actor_cache_086_list_reverse_adjacent_present_midpoint_reversed_order() {
    adjacent_reverse(("m", "z"), ("a", "m"), Some("mid"));
}

#[test]
fn actor_cache_087_list_reverse_starting_in_a_known_gap() {
    let t = T::new();
    let mut l = list_fut(&t, range("a", "m"));
    t.expect_list("a", Some("m"), false, None).send(&[]);
    poll(&mut l).unwrap().unwrap();
    let mut l = list_fut(&t, rev("c", "z", None));
    t.expect_list("m", Some("z"), true, None).send(&[("n", "1")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("n", "1")]));
    assert_eq!(t.list_now(rev("a", "z", None)), sp(&[("n", "1")]));
}

#[test]
fn actor_cache_088_list_reverse_ending_in_a_known_gap() {
    let t = T::new();
    let mut l = list_fut(&t, range("m", "z"));
    t.expect_list("m", Some("z"), false, None).send(&[]);
    poll(&mut l).unwrap().unwrap();
    let mut l = list_fut(&t, rev("a", "p", None));
    // The top of the range is known empty down to "m": storage is asked only below it.
    t.expect_list("a", Some("m"), true, None).send(&[("b", "1")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("b", "1")]));
    assert_eq!(t.list_now(rev("a", "z", None)), sp(&[("b", "1")]));
}

#[test]
fn actor_cache_089_list_reverse_with_limit_and_dirty_puts() {
    let t = T::new();
    t.put("b", "dirty");
    let mut l = list_fut(&t, rev("a", "z", Some(5)));
    t.expect_list("a", Some("z"), true, Some(5)).send(&[("y", "1")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("y", "1"), ("b", "dirty")]));
    assert_eq!(t.list_now(rev("a", "z", None)), sp(&[("y", "1"), ("b", "dirty")]));
    // Limited: only down to the last returned key is known.
    let t = T::new();
    t.put("b", "dirty");
    let mut l = list_fut(&t, rev("a", "z", Some(1)));
    t.expect_list("a", Some("z"), true, Some(1)).send(&[("y", "1")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("y", "1")]));
    let mut l = list_fut(&t, rev("a", "z", Some(2)));
    t.expect_list("a", Some("y"), true, Some(1)).send(&[("c", "2")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("y", "1"), ("c", "2")]));
}

#[test]
fn actor_cache_090_list_reverse_overwrite_of_range_end() {
    let t = T::new();
    let mut l = list_fut(&t, rev("a", "c", None));
    t.expect_list("a", Some("c"), true, None).send(&[("b", "1")]);
    poll(&mut l).unwrap().unwrap();
    t.put("c", "x");
    assert_eq!(t.list_now(rev("a", "c", None)), sp(&[("b", "1")]));
    assert_eq!(t.list_now(rev("a", "c\0", None)), sp(&[("c", "x"), ("b", "1")]));
    let mut l = list_fut(&t, rev("a", "z", None));
    t.expect_list("c\0", Some("z"), true, None).send(&[("d", "2")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("d", "2"), ("c", "x"), ("b", "1")]));
}

#[test]
fn actor_cache_091_list_reverse_delete_of_range_end() {
    let t = T::new();
    let mut l = list_fut(&t, rev("a", "z", Some(2)));
    t.expect_list("a", Some("z"), true, Some(2)).send(&[("y", "1"), ("x", "2")]);
    poll(&mut l).unwrap().unwrap();
    drop(t.cache.delete("x", PutOptions::default()));
    let mut l = list_fut(&t, rev("a", "z", Some(2)));
    t.expect_list("a", Some("x"), true, Some(1)).send(&[("w", "3")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("y", "1"), ("w", "3")]));
}

#[test]
fn actor_cache_092_list_reverse_interleaved_with_other_ops() {
    let t = T::new();
    let mut l = list_fut(&t, rev("a", "z", None));
    let r = t.expect_list("a", Some("z"), true, None);
    t.put("b", "new-b");
    drop(t.cache.delete("c", PutOptions::default()));
    let mut g = t.cache.get("d", GetOptions::default());
    let g_tx = t.expect_get(&["d"]);
    r.send(&[("d", "3"), ("c", "2"), ("b", "1")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("d", "3"), ("c", "2"), ("b", "1")]));
    g_tx.send(Ok(pairs(&[("d", "3")]))).unwrap();
    assert_eq!(poll(&mut g).unwrap().unwrap(), Some(b"3".to_vec()));
    assert_eq!(t.list_now(rev("a", "z", None)), sp(&[("d", "3"), ("b", "new-b")]));
}

// ----- §2.8 eviction and gaps: statements 102–107 -------------------------------------------------------

/// Evicts, by two stale checks, every clean entry not touched in between.
fn evict_untouched(t: &T, touch: impl Fn()) {
    let t0 = madsim_tokio::time::Instant::now();
    t.cache.evict_stale(t0);
    touch();
    t.cache.evict_stale(t0 + std::time::Duration::from_secs(40));
}

#[test]
fn actor_cache_102_evicting_the_last_listed_entry_forgets_the_trailing_gap() {
    let t = T::new();
    let mut l = list_fut(&t, ListOptions { start: Some("a".into()), ..Default::default() });
    t.expect_list("a", None, false, None).send(&[("b", "1"), ("m", "2")]);
    poll(&mut l).unwrap().unwrap();
    assert!(t.cache.is_cached("zzz"));
    evict_untouched(&t, || {
        let _ = t.get_now("a");
        let _ = t.get_now("b");
    });
    assert!(!t.cache.is_cached("m") && !t.cache.is_cached("zzz"));
    assert!(!t.cache.is_cached("c"), "the gap before it is forgotten too");
    assert_eq!(t.get_now("b").as_deref(), Some("1"));
}

#[test]
fn actor_cache_103_evicting_an_entry_whose_gap_ends_at_the_list_end() {
    let t = T::new();
    let mut l = list_fut(&t, range("a", "z"));
    t.expect_list("a", Some("z"), false, None).send(&[("b", "1"), ("m", "2")]);
    poll(&mut l).unwrap().unwrap();
    evict_untouched(&t, || {
        let _ = t.get_now("a");
        let _ = t.get_now("b");
    });
    assert!(!t.cache.is_cached("m") && !t.cache.is_cached("p") && !t.cache.is_cached("z"));
    let mut l = list_fut(&t, range("a", "z"));
    t.expect_list("b\0", Some("z"), false, None).send(&[("m", "2")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("b", "1"), ("m", "2")]));
}

#[test]
fn actor_cache_104_lru_and_stale_eviction_forget_gaps_alike() {
    let check = |t: &T| {
        assert!(!t.cache.is_cached("m"));
        assert!(!t.cache.is_cached("c") && !t.cache.is_cached("p"));
    };
    // LRU (soft limit): "m" is the least recently used.
    let t = tiny(4 * (64 + 2) - 10);
    let mut l = list_fut(&t, range("a", "z"));
    t.expect_list("a", Some("z"), false, None).send(&[("m", "1")]);
    poll(&mut l).unwrap().unwrap();
    let _ = t.get_now("a");
    load(&t, "zz", Some("2"));
    check(&t);
    // Stale.
    let t = T::new();
    let mut l = list_fut(&t, range("a", "z"));
    t.expect_list("a", Some("z"), false, None).send(&[("m", "1")]);
    poll(&mut l).unwrap().unwrap();
    evict_untouched(&t, || {
        let _ = t.get_now("a");
    });
    check(&t);
}

#[test]
fn actor_cache_105_stale_eviction_can_empty_the_cache() {
    let t = T::new();
    let mut l = list_fut(&t, range("a", "z"));
    t.expect_list("a", Some("z"), false, None).send(&[("m", "1")]);
    poll(&mut l).unwrap().unwrap();
    evict_untouched(&t, || {});
    assert_eq!(t.cache.size(), 0);
    assert!(!t.cache.is_cached("a") && !t.cache.is_cached("m") && !t.cache.is_cached("z"));
}

#[test]
fn actor_cache_106_everything_evicted_during_a_list() {
    let t = T::new();
    load(&t, "c", Some("cached"));
    let mut l = list_fut(&t, range("a", "z"));
    let r = t.expect_list("a", Some("z"), false, None);
    evict_untouched(&t, || {});
    assert_eq!(t.cache.size(), 0);
    r.send(&[("b", "1"), ("c", "stale")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("b", "1"), ("c", "cached")]));
    // Nothing learned from a list overtaken by eviction.
    assert!(!t.cache.is_cached("bb"));
    let mut l = list_fut(&t, range("a", "z"));
    t.expect_list("a", Some("z"), false, None).send(&[("b", "1"), ("c", "cached")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("b", "1"), ("c", "cached")]));
}

#[test]
fn actor_cache_107_everything_evicted_during_a_list_after_an_earlier_entry() {
    let t = T::new();
    load(&t, "a", Some("before"));
    let mut l = list_fut(&t, range("b", "z"));
    let r = t.expect_list("b", Some("z"), false, None);
    evict_untouched(&t, || {});
    assert!(!t.cache.is_cached("a"));
    r.send(&[("c", "1")]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("c", "1")]));
    assert!(!t.cache.is_cached("b") && !t.cache.is_cached("cc"));
}

// ----- §2.1, §2.4 bad input ---------------------------------------------------------------------------

fn err<V: std::fmt::Debug>(mut f: F<V>) -> Error {
    poll(&mut f).expect("fails at once").unwrap_err()
}

#[test]
fn actor_cache_limits_and_messages() {
    let t = T::new();
    let long = "k".repeat(2049);
    let ok = "k".repeat(2048);
    let check = |e: Error, kind: ErrorKind, msg: &str| {
        assert_eq!((e.kind(), e.message()), (kind, msg));
        assert!(!e.retryable() && !e.overloaded() && !e.durable_object_reset() && !e.remote());
    };
    let key_msg = messages::key_too_large(2049);
    check(err(t.cache.get(&long, GetOptions::default())), ErrorKind::RangeError, &key_msg);
    check(err(t.cache.put(&long, b"v", PutOptions::default())), ErrorKind::RangeError, &key_msg);
    check(
        err(t.cache.put_multiple(&[("a", b"v"), (&long, b"v")], PutOptions::default())),
        ErrorKind::RangeError,
        &key_msg,
    );
    check(err(t.cache.delete(&long, PutOptions::default())), ErrorKind::RangeError, &key_msg);
    check(
        err(t.cache.delete_multiple(&["a", &long], PutOptions::default())),
        ErrorKind::RangeError,
        &key_msg,
    );
    let big = vec![0u8; 131_073];
    check(
        err(t.cache.put("a", &big, PutOptions::default())),
        ErrorKind::RangeError,
        &messages::value_too_large(131_073),
    );
    let many: Vec<String> = (0..129).map(|i| format!("k{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let count_msg = messages::too_many_keys(129);
    check(err(t.cache.get_multiple(&many, GetOptions::default())), ErrorKind::RangeError, &count_msg);
    check(err(t.cache.delete_multiple(&many, PutOptions::default())), ErrorKind::RangeError, &count_msg);
    let pairs: Vec<(&str, &[u8])> = many.iter().map(|k| (*k, &b"v"[..])).collect();
    check(err(t.cache.put_multiple(&pairs, PutOptions::default())), ErrorKind::RangeError, &count_msg);
    check(
        err(t.cache.list(CacheListOptions {
            list: ListOptions {
                start: Some("a".into()),
                start_after: Some("b".into()),
                ..Default::default()
            },
            ..Default::default()
        })),
        ErrorKind::TypeError,
        messages::LIST_START_AND_START_AFTER,
    );
    check(
        err(t.cache.list(CacheListOptions {
            list: ListOptions { limit: Some(0), ..Default::default() },
            ..Default::default()
        })),
        ErrorKind::TypeError,
        messages::LIST_LIMIT_NOT_POSITIVE,
    );
    check(
        err(t.cache.set_alarm(0, PutOptions::default())),
        ErrorKind::TypeError,
        messages::SET_ALARM_NOT_POSITIVE,
    );
    // Nothing was written by the failed calls; the limits themselves pass.
    t.end_turn();
    t.no_call();
    drop(t.cache.put(&ok, &vec![0u8; 131_072], PutOptions::default()));
    let mut g = t.cache.get_multiple(&many[..128], GetOptions::default());
    assert!(poll(&mut g).is_none());
    // Key sizes of a multi-get and list bounds are not checked.
    let mut g = t.cache.get_multiple(&[&long], GetOptions::default());
    assert!(poll(&mut g).is_none());
    let mut l = list_fut(&t, ListOptions { start: Some(long.clone()), ..Default::default() });
    assert!(poll(&mut l).is_none());
    // An empty range reads nothing.
    assert!(t.list_now(range("b", "a")).is_empty());
}

// ----- §2.8 hard limit on reads: statement 108 -------------------------------------------------------------

/// Entries a read brings in are clean, so they are evicted down to the soft limit before the hard limit is
/// checked: a read can overflow the hard limit only when the soft limit is above it (or dirty entries
/// alone fill it, which the write already refused). This test therefore sets the soft limit high.
#[test]
fn actor_cache_108_hard_limit_on_read() {
    let t =
        T::with(ActorCacheOptions { soft_limit: 1 << 20, hard_limit: 1000, ..ActorCacheOptions::default() });
    let mut g = t.cache.get("a", GetOptions::default());
    t.expect_get(&["a"]).send(Ok(vec![("a".into(), vec![0; 2000])])).unwrap();
    let e = poll(&mut g).unwrap().unwrap_err();
    assert_eq!(e.message(), messages::CACHE_OVER_HARD_LIMIT);
    assert!(e.overloaded() && e.durable_object_reset());
    assert_eq!(t.breaks(), vec![e.clone()], "the output gate breaks");
    assert_eq!(t.cache.size(), 0, "the cache is cleared");
    // Every later call fails the same way.
    let mut g = t.cache.get("b", GetOptions::default());
    assert_eq!(poll(&mut g).unwrap().unwrap_err(), e);
    // A list over the limit fails the same way, and a write pending at the time fails its lock.
    let t =
        T::with(ActorCacheOptions { soft_limit: 1 << 20, hard_limit: 1000, ..ActorCacheOptions::default() });
    t.put("k", "v");
    let mut l = list_fut(&t, range("a", "j"));
    let big = "x".repeat(600);
    t.expect_list("a", Some("j"), false, None).send(&[("b", &big), ("c", &big)]);
    let e = poll(&mut l).unwrap().unwrap_err();
    assert_eq!(e.message(), messages::CACHE_OVER_HARD_LIMIT);
    assert_eq!(t.locks()[0].clone().unwrap().unwrap_err(), e);
    t.end_turn();
    t.no_call();
}

// ----- §2.7 transaction(): statements 111–119 -----------------------------------------------------------

type Local<'a, V> = Pin<Box<dyn Future<Output = Result<V, Error>> + 'a>>;

fn poll_local<V>(f: &mut Local<'_, V>) -> Option<Result<V, Error>> {
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

fn txn_get(txn: &CacheTransaction, k: &str) -> F<Option<Vec<u8>>> {
    txn.get(k, GetOptions::default())
}

#[test]
fn actor_cache_111_transaction_reads_populate_the_cache() {
    let t = T::new();
    let mut f: Local<_> = Box::pin(t.cache.transaction(async |txn| {
        let a = txn_get(txn, "a").await?;
        let l = txn.list(CacheListOptions { list: range("m", "p"), ..Default::default() }).await?;
        Ok((a, l))
    }));
    assert!(poll_local(&mut f).is_none());
    t.expect_get(&["a"]).send(Ok(pairs(&[("a", "1")]))).unwrap();
    assert!(poll_local(&mut f).is_none());
    t.expect_list("m", Some("p"), false, None).send(&[("n", "2")]);
    let (a, l) = poll_local(&mut f).unwrap().unwrap();
    assert_eq!((a.map(s), strs(l)), (Some("1".into()), sp(&[("n", "2")])));
    assert_eq!(t.get_now("a").as_deref(), Some("1"));
    assert_eq!(t.list_now(range("m", "p")), sp(&[("n", "2")]));
    t.end_turn();
    t.no_call();
}

#[test]
fn actor_cache_112_transaction_writes_overlay_reads_and_commit_as_one_batch() {
    let t = T::new();
    let mut f: Local<_> = Box::pin(t.cache.transaction(async |txn| {
        txn.put("b", b"txn", PutOptions::default()).await?;
        // An unknown key: the count needs a storage read.
        assert!(txn.delete("c", PutOptions::default()).await?);
        assert_eq!(txn_get(txn, "b").await?, Some(b"txn".to_vec()));
        assert_eq!(txn_get(txn, "c").await?, None);
        let m = txn.get_multiple(&["a", "b", "c"], GetOptions::default()).await?;
        assert_eq!(strs(m), sp(&[("a", "1"), ("b", "txn")]));
        let l = txn
            .list(CacheListOptions {
                list: ListOptions { limit: Some(2), ..range("a", "z") },
                ..Default::default()
            })
            .await?;
        assert_eq!(strs(l), sp(&[("a", "1"), ("b", "txn")]));
        let r = txn
            .list(CacheListOptions {
                list: ListOptions { reverse: true, ..range("a", "z") },
                ..Default::default()
            })
            .await?;
        assert_eq!(strs(r), sp(&[("y", "9"), ("b", "txn"), ("a", "1")]));
        Ok(())
    }));
    assert!(poll_local(&mut f).is_none());
    t.expect_get(&["c"]).send(Ok(pairs(&[("c", "3")]))).unwrap();
    assert!(poll_local(&mut f).is_none());
    t.expect_get(&["a"]).send(Ok(pairs(&[("a", "1")]))).unwrap();
    assert!(poll_local(&mut f).is_none());
    // The limit asked of storage is raised by the transaction's delete of "c" (2 + 1, less the cached "a").
    t.expect_list("a\0", Some("z"), false, Some(2)).send(&[("b", "stale"), ("c", "3")]);
    assert!(poll_local(&mut f).is_none());
    t.expect_list("c\0", Some("z"), true, None).send(&[("y", "9")]);
    poll_local(&mut f).unwrap().unwrap();
    // Nothing reached the cache before the commit; now all of it is there and flushes as one batch.
    assert_eq!(t.get_now("b").as_deref(), Some("txn"));
    assert_eq!(t.get_now("c"), None);
    t.end_turn();
    let b = t.commit_ok(&[]);
    assert_eq!((puts(&b), b.muted_deletes.clone()), (sp(&[("b", "txn")]), keys(&["c"])));
    t.no_call();
}

#[test]
fn actor_cache_113_transaction_overlay_from_a_precached_range() {
    let t = T::new();
    let mut l = list_fut(&t, ListOptions::default());
    t.expect_list("", None, false, None).send(&[("a", "1"), ("b", "2"), ("c", "3")]);
    poll(&mut l).unwrap().unwrap();
    let mut f: Local<_> = Box::pin(t.cache.transaction(async |txn| {
        txn.put("b", b"txn", PutOptions::default()).await?;
        assert!(txn.delete("c", PutOptions::default()).await?);
        assert!(!txn.delete("zz", PutOptions::default()).await?);
        let m = txn.get_multiple(&["a", "b", "c"], GetOptions::default()).await?;
        let l = txn
            .list(CacheListOptions {
                list: ListOptions { limit: Some(2), ..range("a", "z") },
                ..Default::default()
            })
            .await?;
        let r = txn
            .list(CacheListOptions {
                list: ListOptions { reverse: true, ..range("a", "z") },
                ..Default::default()
            })
            .await?;
        Ok((strs(m), strs(l), strs(r)))
    }));
    let (m, l, r) = poll_local(&mut f).expect("answered from the cache").unwrap();
    assert_eq!(m, sp(&[("a", "1"), ("b", "txn")]));
    assert_eq!(l, sp(&[("a", "1"), ("b", "txn")]));
    assert_eq!(r, sp(&[("b", "txn"), ("a", "1")]));
    t.no_call();
}

fn commit_puts(t: &T, writes: &[(&str, PutOptions)]) {
    let mut f: Local<_> = Box::pin(t.cache.transaction(async |txn| {
        for (k, o) in writes {
            txn.put(k, b"v", *o).await?;
        }
        Ok(())
    }));
    poll_local(&mut f).unwrap().unwrap();
}

#[test]
fn actor_cache_114_committed_transaction_locks_the_gate_until_flushed() {
    let t = T::new();
    commit_puts(&t, &[("a", PutOptions::default())]);
    assert_eq!(t.locks(), vec![None]);
    t.end_turn();
    t.commit_ok(&[]);
    assert_eq!(t.locks(), vec![Some(Ok(()))]);
}

#[test]
fn actor_cache_115_unconfirmed_transaction_does_not_lock() {
    let t = T::new();
    commit_puts(&t, &[("a", unconfirmed()), ("b", unconfirmed())]);
    assert!(t.locks().is_empty());
    t.end_turn();
    assert_eq!(puts(&t.commit_ok(&[])).len(), 2);
}

#[test]
fn actor_cache_116_mixed_transaction_locks() {
    let t = T::new();
    commit_puts(&t, &[("a", unconfirmed()), ("b", PutOptions::default())]);
    assert_eq!(t.locks(), vec![None]);
    t.end_turn();
    t.commit_ok(&[]);
    assert_eq!(t.locks(), vec![Some(Ok(()))]);
}

/// Splitting a batch into RPCs of ≤ maxKeysPerRpc keys is the store's part of the RPC shape (§2.3, "shape
/// optional"); what the cache guarantees, and this test checks, is that all the puts reach storage in one
/// atomic batch.
#[test]
fn actor_cache_117_large_transaction_flushes_as_one_batch() {
    let t = T::with(ActorCacheOptions { max_keys_per_rpc: 2, ..ActorCacheOptions::default() });
    let ks: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
    let writes: Vec<(&str, PutOptions)> = ks.iter().map(|k| (k.as_str(), PutOptions::default())).collect();
    commit_puts(&t, &writes);
    t.end_turn();
    let b = t.commit_ok(&[]);
    assert_eq!(b.puts.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), ks);
    t.no_call();
}

#[test]
fn actor_cache_118_large_transaction_delete_batches_its_reads() {
    let t = T::with(ActorCacheOptions { max_keys_per_rpc: 2, ..ActorCacheOptions::default() });
    load(&t, "a", Some("1"));
    let mut f: Local<_> = Box::pin(t.cache.transaction(async |txn| {
        txn.put("b", b"2", PutOptions::default()).await?;
        txn.delete_multiple(&["a", "b", "c", "d", "e"], PutOptions::default()).await
    }));
    assert!(poll_local(&mut f).is_none());
    // "a" (cache) and "b" (transaction) need no read; the rest are read ≤ 2 keys at a time.
    t.expect_get(&["c", "d"]).send(Ok(pairs(&[("d", "4")]))).unwrap();
    t.expect_get(&["e"]).send(Ok(pairs(&[("e", "5")]))).unwrap();
    assert_eq!(poll_local(&mut f).unwrap().unwrap(), 4);
    t.end_turn();
    let b = t.commit_ok(&[]);
    // The counts are known: every delete is muted (the store splits them into ≤ 2-key RPCs); "c", read as
    // absent, needs no delete at all.
    assert_eq!(b.muted_deletes, keys(&["a", "b", "d", "e"]));
    assert!(b.counted_deletes.is_empty() && b.puts.is_empty());
    t.no_call();
}

#[test]
fn actor_cache_119_transaction_list_of_an_empty_range() {
    let t = T::new();
    let mut f: Local<_> = Box::pin(t.cache.transaction(async |txn| {
        txn.put("c", b"1", PutOptions::default()).await?;
        let a = txn.list(CacheListOptions { list: range("d", "b"), ..Default::default() }).await?;
        let b = txn
            .list(CacheListOptions {
                list: ListOptions { reverse: true, ..range("c", "c") },
                ..Default::default()
            })
            .await?;
        Ok((a, b))
    }));
    let (a, b) = poll_local(&mut f).unwrap().unwrap();
    assert!(a.is_empty() && b.is_empty());
    t.no_call();
}

#[test]
fn actor_cache_transaction_rollback_errors_and_commit_rules() {
    // Rollback discards the writes, may repeat, and every op afterwards fails with its name.
    let t = T::new();
    let mut f: Local<_> = Box::pin(t.cache.transaction(async |txn| {
        txn.put("a", b"1", PutOptions::default()).await?;
        txn.rollback()?;
        txn.rollback()?;
        let msgs = vec![
            txn_get(txn, "a").await.unwrap_err(),
            txn.list(CacheListOptions::default()).await.unwrap_err(),
            txn.put("a", b"1", PutOptions::default()).await.unwrap_err(),
            txn.delete("a", PutOptions::default()).await.unwrap_err(),
            txn.get_alarm(GetOptions::default()).await.unwrap_err(),
            txn.set_alarm(5, PutOptions::default()).await.unwrap_err(),
            txn.delete_alarm(PutOptions::default()).await.unwrap_err(),
        ];
        Ok(msgs.into_iter().map(|e| e.message().to_owned()).collect::<Vec<_>>())
    }));
    let msgs = poll_local(&mut f).unwrap().unwrap();
    let ops = ["get()", "list()", "put()", "delete()", "getAlarm()", "setAlarm()", "deleteAlarm()"];
    assert_eq!(msgs, ops.iter().map(|op| messages::rolled_back(op)).collect::<Vec<_>>());
    t.end_turn();
    t.no_call();
    assert!(t.locks().is_empty());

    // After the closure returned: the "already committed" error; deleteAll is refused inside.
    let t = T::new();
    let kept: Mutex<Option<CacheTransaction>> = Mutex::new(None);
    let mut f: Local<_> = Box::pin(t.cache.transaction(async |txn| {
        *kept.lock().unwrap() = Some(txn.clone());
        let e = txn.delete_all(PutOptions::default()).await.unwrap_err();
        assert_eq!(e.message(), messages::DELETE_ALL_IN_TRANSACTION);
        txn.set_alarm(5, PutOptions::default()).await?;
        assert_eq!(txn.get_alarm(GetOptions::default()).await?, Some(5));
        Ok(())
    }));
    poll_local(&mut f).unwrap().unwrap();
    drop(f);
    let txn = kept.lock().unwrap().take().unwrap();
    for (op, e) in [
        ("get()", poll(&mut txn_get(&txn, "a")).unwrap().unwrap_err()),
        ("put()", poll(&mut txn.put("a", b"1", PutOptions::default())).unwrap().unwrap_err()),
        ("setAlarm()", poll(&mut txn.set_alarm(1, PutOptions::default())).unwrap().unwrap_err()),
    ] {
        assert_eq!(e.message(), messages::already_committed(op));
    }
    t.end_turn();
    assert_eq!(t.commit_ok(&[]).alarm, Some(Some(5)));

    // A failing closure rolls back and returns its error; the object is not reset.
    let t = T::new();
    let mut f: Local<()> = Box::pin(t.cache.transaction(async |txn| {
        txn.put("a", b"1", PutOptions::default()).await?;
        Err(Error::new("boom"))
    }));
    assert_eq!(poll_local(&mut f).unwrap().unwrap_err().message(), "boom");
    t.end_turn();
    t.no_call();
    assert!(t.breaks().is_empty() && t.locks().is_empty());
    t.put("b", "2");
}

// ----- §4 alarm handler and deferred delete: statements 124–130, 134–135 --------------------------------

fn load_alarm(t: &T, stored: Option<i64>) {
    let mut a = t.cache.get_alarm(GetOptions::default());
    match t.next() {
        Call::GetAlarm(tx) => tx.send(Ok(stored)).unwrap(),
        c => panic!("expected getAlarm, got {c:?}"),
    }
    assert_eq!(poll(&mut a).unwrap().unwrap(), stored);
}

fn alarm_now(t: &T) -> Option<i64> {
    poll(&mut t.cache.get_alarm(GetOptions::default())).expect("alarm cached").unwrap()
}

fn alarm_uncached(t: &T) -> bool {
    let mut a = t.cache.get_alarm(GetOptions::default());
    let pending = poll(&mut a).is_none();
    if pending {
        match t.next() {
            Call::GetAlarm(tx) => tx.send(Ok(None)).unwrap(),
            c => panic!("expected getAlarm, got {c:?}"),
        }
    }
    pending
}

/// Expects a commit and succeeds it, reporting whether the conditional alarm delete deleted.
fn commit_alarm_delete(t: &T, deleted: bool) -> Batch {
    let (b, tx) = t.expect_commit();
    tx.send(Ok(CommitResult { alarm_deleted: deleted, ..Default::default() })).unwrap();
    t.run();
    b
}

#[test]
fn actor_cache_124_arming_with_a_clean_other_alarm_cancels_the_run() {
    let t = T::new();
    load_alarm(&t, None);
    assert!(t.cache.arm_alarm_handler(10, false).is_none(), "deleted meanwhile");
    let t = T::new();
    load_alarm(&t, Some(20));
    assert!(t.cache.arm_alarm_handler(10, false).is_none(), "moved meanwhile");
    assert_eq!(alarm_now(&t), Some(20));
    // A dirty alarm of another time is not confirmed: the run goes ahead, and the write is kept.
    let t = T::new();
    drop(t.cache.set_alarm(20, PutOptions::default()));
    let d = t.cache.arm_alarm_handler(10, false).expect("runs");
    drop(d);
    assert_eq!(alarm_now(&t), Some(20));
    t.end_turn();
    let b = t.commit_ok(&[]);
    assert_eq!((b.alarm, b.alarm_delete_if), (Some(Some(20)), None));
    t.no_call();
}

#[test]
fn actor_cache_125_finished_handler_deletes_the_alarm_conditionally() {
    let t = T::new();
    load_alarm(&t, Some(10));
    let d = t.cache.arm_alarm_handler(10, false).expect("runs");
    assert_eq!(alarm_now(&t), None, "the running alarm reads as deleted");
    t.end_turn();
    t.no_call();
    drop(d);
    assert_eq!(t.locks(), vec![None], "the delete holds the output gate");
    t.end_turn();
    let b = commit_alarm_delete(&t, true);
    assert_eq!(b, Batch { alarm_delete_if: Some(10), ..Batch::default() });
    assert_eq!(t.locks(), vec![Some(Ok(()))]);
    assert_eq!(alarm_now(&t), None);
    t.no_call();
}

#[test]
fn actor_cache_126_handler_setting_a_new_alarm_skips_the_delete() {
    let t = T::new();
    load_alarm(&t, Some(10));
    let d = t.cache.arm_alarm_handler(10, false).expect("runs");
    drop(t.cache.set_alarm(20, PutOptions::default()));
    drop(d);
    t.end_turn();
    let b = t.commit_ok(&[]);
    assert_eq!(b, Batch { alarm: Some(Some(20)), ..Batch::default() });
    assert_eq!(alarm_now(&t), Some(20));
    t.no_call();
    // Even setting the same time again is a write.
    let t = T::new();
    load_alarm(&t, Some(10));
    let d = t.cache.arm_alarm_handler(10, false).expect("runs");
    drop(t.cache.set_alarm(10, PutOptions::default()));
    drop(d);
    t.end_turn();
    assert_eq!(t.commit_ok(&[]), Batch { alarm: Some(Some(10)), ..Batch::default() });
    // A failed handler cancels the delete: the alarm stays set.
    let t = T::new();
    load_alarm(&t, Some(10));
    let d = t.cache.arm_alarm_handler(10, false).expect("runs");
    t.cache.cancel_deferred_alarm_deletion();
    drop(d);
    t.end_turn();
    t.no_call();
    assert_eq!(alarm_now(&t), Some(10));
}

#[test]
fn actor_cache_127_not_deleted_leaves_the_alarm_unknown() {
    let t = T::new();
    load_alarm(&t, Some(10));
    drop(t.cache.arm_alarm_handler(10, false).expect("runs"));
    t.end_turn();
    commit_alarm_delete(&t, false);
    assert!(alarm_uncached(&t));
}

#[test]
fn actor_cache_128_no_cache_deferred_delete_is_not_cached() {
    let t = T::new();
    load_alarm(&t, Some(10));
    drop(t.cache.arm_alarm_handler(10, true).expect("runs"));
    t.end_turn();
    commit_alarm_delete(&t, true);
    assert!(alarm_uncached(&t));
}

#[test]
fn actor_cache_129_get_alarm_of_an_uncached_alarm() {
    let t = T::new();
    load_alarm(&t, Some(10));
    assert_eq!(alarm_now(&t), Some(10));
    // And a handler armed with the alarm unknown runs.
    let t = T::new();
    let d = t.cache.arm_alarm_handler(10, false).expect("runs");
    assert_eq!(alarm_now(&t), None);
    drop(d);
    t.end_turn();
    assert_eq!(commit_alarm_delete(&t, true).alarm_delete_if, Some(10));
}

#[test]
fn actor_cache_130_deferred_delete_retried_after_disconnects() {
    let t = T::new();
    load_alarm(&t, Some(10));
    drop(t.cache.arm_alarm_handler(10, false).expect("runs"));
    t.end_turn();
    for _ in 0..2 {
        let (b, tx) = t.expect_commit();
        assert_eq!(b.alarm_delete_if, Some(10));
        tx.send(Err(StoreError::Disconnected("x".into()))).unwrap();
    }
    assert_eq!(commit_alarm_delete(&t, false).alarm_delete_if, Some(10));
    assert!(t.breaks().is_empty() && t.locks() == vec![Some(Ok(()))]);
    assert!(alarm_uncached(&t), "the bookkeeping ran: not deleted, so unknown");
}

#[test]
fn actor_cache_134_delete_all_with_alarm_supersedes_the_deferred_delete() {
    let t = T::with(ActorCacheOptions { delete_all_deletes_alarm: true, ..ActorCacheOptions::default() });
    load_alarm(&t, Some(10));
    let d = t.cache.arm_alarm_handler(10, false).expect("runs");
    drop(t.cache.delete_all(PutOptions::default()));
    drop(d);
    t.end_turn();
    let b = t.commit_ok(&[]);
    assert_eq!(b, Batch { delete_all: true, alarm: Some(None), ..Batch::default() });
    t.no_call();
    assert_eq!(alarm_now(&t), None);
}

#[test]
fn actor_cache_135_delete_all_without_alarm_keeps_the_deferred_delete_first() {
    let t = T::new();
    load_alarm(&t, Some(10));
    let d = t.cache.arm_alarm_handler(10, false).expect("runs");
    drop(t.cache.delete_all(PutOptions::default()));
    drop(d);
    t.end_turn();
    assert_eq!(commit_alarm_delete(&t, true), Batch { alarm_delete_if: Some(10), ..Batch::default() });
    assert_eq!(t.commit_ok(&[]), Batch { delete_all: true, ..Batch::default() });
    t.no_call();
    assert_eq!(alarm_now(&t), None);
}

// ----- §4 abandonAlarm: statements 143, 145–147 -------------------------------------------------------------

#[test]
fn actor_cache_143_abandon_alarm_clears_the_stored_alarm() {
    for cached in [true, false] {
        let t = T::new();
        if cached {
            load_alarm(&t, Some(10));
        }
        let mut a = t.cache.abandon_alarm(10);
        assert!(poll(&mut a).is_none());
        if !cached {
            match t.next() {
                Call::GetAlarm(tx) => tx.send(Ok(Some(10))).unwrap(),
                c => panic!("expected getAlarm, got {c:?}"),
            }
            assert!(poll(&mut a).is_none());
        }
        t.end_turn();
        assert_eq!(commit_alarm_delete(&t, true), Batch { alarm_delete_if: Some(10), ..Batch::default() });
        assert_eq!(poll(&mut a).unwrap().unwrap(), None);
        assert!(t.locks().is_empty(), "not an application write: no output lock");
        assert!(alarm_uncached(&t), "the next getAlarm reads storage");
    }
}

#[test]
fn actor_cache_145_abandon_after_the_user_replaced_the_alarm() {
    let t = T::new();
    load_alarm(&t, Some(10));
    drop(t.cache.set_alarm(20, PutOptions::default()));
    t.end_turn();
    t.commit_ok(&[]);
    assert_eq!(poll(&mut t.cache.abandon_alarm(10)).unwrap().unwrap(), Some(20));
    t.end_turn();
    t.no_call();
    assert_eq!(alarm_now(&t), Some(20));
}

#[test]
fn actor_cache_146_abandon_with_no_alarm_stored() {
    let t = T::new();
    let mut a = t.cache.abandon_alarm(10);
    match t.next() {
        Call::GetAlarm(tx) => tx.send(Ok(None)).unwrap(),
        c => panic!("expected getAlarm, got {c:?}"),
    }
    assert_eq!(poll(&mut a).unwrap().unwrap(), None);
    t.end_turn();
    t.no_call();
}

#[test]
fn actor_cache_147_abandon_while_a_newer_alarm_is_dirty() {
    let t = T::new();
    load_alarm(&t, Some(10));
    drop(t.cache.set_alarm(20, PutOptions::default()));
    assert_eq!(poll(&mut t.cache.abandon_alarm(10)).unwrap().unwrap(), None);
    t.end_turn();
    assert_eq!(t.commit_ok(&[]), Batch { alarm: Some(Some(20)), ..Batch::default() });
    t.no_call();
    assert_eq!(alarm_now(&t), Some(20));
}

// ----- found by mutation testing (docs/MUTATION.md) --------------------------------------------------------

fn no_cache() -> PutOptions {
    PutOptions { no_cache: true, ..Default::default() }
}

#[test]
fn actor_cache_011_a_confirmed_rewrite_of_an_unconfirmed_dirty_value_holds_the_gate_until_its_flush() {
    let t = T::new();
    t.put_with("k", "v", unconfirmed());
    assert!(t.locks().is_empty());
    // The same value again, confirmed: nothing new to write, but the reply must wait for the value to be
    // durable, so the output gate is locked until the flush that carries it commits.
    t.put("k", "v");
    assert_eq!(t.locks(), vec![None]);
    t.end_turn();
    let (b, tx) = t.expect_commit();
    assert_eq!(puts(&b), sp(&[("k", "v")]));
    assert_eq!(t.locks(), vec![None]);
    tx.send(Ok(CommitResult::default())).unwrap();
    t.run();
    assert_eq!(t.locks(), vec![Some(Ok(()))]);
    t.no_call();
}

#[test]
fn actor_cache_011_a_confirmed_rewrite_of_a_flushing_value_holds_the_gate_until_that_flush() {
    let t = T::new();
    t.put_with("k", "v", unconfirmed());
    t.end_turn();
    let (b, tx) = t.expect_commit();
    assert_eq!(puts(&b), sp(&[("k", "v")]));
    assert!(t.locks().is_empty());
    // The value is in the flush in flight: a confirmed rewrite waits for that flush, and writes nothing.
    t.put("k", "v");
    assert_eq!(t.locks(), vec![None]);
    t.end_turn();
    t.no_call();
    tx.send(Ok(CommitResult::default())).unwrap();
    t.run();
    assert_eq!(t.locks(), vec![Some(Ok(()))]);
    t.end_turn();
    t.no_call();
}

#[test]
fn actor_cache_011_rewrites_of_a_confirmed_value_take_no_second_lock() {
    let t = T::new();
    t.put("k", "v");
    t.put("k", "v");
    assert_eq!(t.locks(), vec![None], "the dirty value's lock covers the rewrite");
    t.end_turn();
    let (_, tx) = t.expect_commit();
    t.put("k", "v");
    assert_eq!(t.locks(), vec![None], "the flushing value's lock covers the rewrite");
    tx.send(Ok(CommitResult::default())).unwrap();
    t.run();
    assert_eq!(t.locks(), vec![Some(Ok(()))]);
    t.end_turn();
    t.no_call();
}

#[test]
fn actor_cache_110_a_cached_rewrite_of_a_no_cache_value_keeps_it_cached() {
    let t = T::new();
    t.put_with("k", "v", no_cache());
    t.put("k", "v");
    t.end_turn();
    t.commit_ok(&[]);
    assert!(t.cache.is_cached("k"), "the second write did not ask for eviction");
    assert_eq!(t.get_now("k").as_deref(), Some("v"));
}

#[test]
fn actor_cache_110_a_list_straddling_a_flush_that_evicts_a_no_cache_entry_learns_no_gap() {
    let t = T::new();
    t.put_with("b", "2", no_cache());
    t.end_turn();
    let (_, tx) = t.expect_commit();
    // A list over the flushing entry reads storage; storage answers as it was before the commit.
    let mut l: F<_> = t.cache.list(CacheListOptions { list: range("a", "z"), ..Default::default() });
    let reply = t.expect_list("a", Some("z"), false, None);
    tx.send(Ok(CommitResult::default())).unwrap();
    t.run();
    assert!(!t.cache.is_cached("b"), "the flush evicted the no_cache entry");
    reply.send(&[]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("b", "2")]), "the list pins the value it saw");
    // Had the list learned its range, `b` would now read as absent from the cache.
    let mut g: F<_> = t.cache.get("b", GetOptions::default());
    assert!(poll(&mut g).is_none(), "b is unknown again: it is read from storage");
    t.expect_get(&["b"]).send(Ok(pairs(&[("b", "2")]))).unwrap();
    assert_eq!(poll(&mut g).unwrap().unwrap().map(s).as_deref(), Some("2"));
}

#[test]
fn actor_cache_110_a_list_straddling_a_flush_that_evicts_nothing_learns_its_range() {
    let t = T::new();
    t.put("b", "2");
    t.end_turn();
    let (_, tx) = t.expect_commit();
    let mut l: F<_> = t.cache.list(CacheListOptions { list: range("a", "z"), ..Default::default() });
    let reply = t.expect_list("a", Some("z"), false, None);
    tx.send(Ok(CommitResult::default())).unwrap();
    t.run();
    reply.send(&[]);
    assert_eq!(strs(poll(&mut l).unwrap().unwrap()), sp(&[("b", "2")]));
    // Nothing was evicted meanwhile: the range is cached, gaps and all.
    assert_eq!(t.list_now(range("a", "z")), sp(&[("b", "2")]));
    assert_eq!(t.get_now("c"), None);
    t.no_call();
}
