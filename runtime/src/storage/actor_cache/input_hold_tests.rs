//! The KV backend's waiting calls hold the input gate until they resolve (spec §1.2: workerd awaits them with
//! `awaitIoWithInputLock`), and do not with `allow_concurrency`, the negative control of each: a counted
//! delete (its key unknown to the cache), a write's backpressure, and `deleteAll()`'s count. The simulation
//! test `storage_gate` (scenarios) shows the same end to end, with concurrent requests.

use std::sync::Arc;

use crate::storage::actor_cache::sqlite_store::SqliteKvStore;
use crate::storage::actor_cache::{ActorCache, ActorCacheOptions, CacheFuture, PutOptions};
use crate::storage::gates::{block_on, ManualTurns};
use crate::storage::DatabaseLocation;
use crate::world::DurableOnReturn;

fn open(name: &str) -> (ActorCache, Arc<ManualTurns>) {
    let dir = crate::test_dir().join("kv_input_holds");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}.db"));
    for suffix in ["", "-journal", "-wal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
    }
    let store = SqliteKvStore::open(&DatabaseLocation::file(p), Arc::new(DurableOnReturn)).unwrap();
    let turns = Arc::new(ManualTurns::default());
    // A small dirty limit, so that one write of 2 KB meets backpressure.
    let options = ActorCacheOptions { dirty_limit: 1024, ..ActorCacheOptions::default() };
    (ActorCache::new(Arc::new(store), turns.clone(), options), turns)
}

/// A storage call under test, made with the given options.
type Call = fn(&ActorCache, PutOptions) -> CacheFuture<()>;

/// Each waiting call, made with `options`.
fn calls() -> Vec<(&'static str, Call)> {
    vec![
        ("counted delete", |c, o| {
            let f = c.delete("unknown", o);
            Box::pin(async move { f.await.map(drop) })
        }),
        ("backpressure", |c, o| c.put("big", &[7; 2048], o)),
        ("deleteAll count", |c, o| {
            let f = c.delete_all(o);
            Box::pin(async move { f.await.map(drop) })
        }),
    ]
}

#[test]
fn waiting_calls_hold_the_input_gate_unless_allow_concurrency() {
    for (name, call) in calls() {
        for allow_concurrency in [false, true] {
            let (cache, turns) = open(&format!("{name}_{allow_concurrency}").replace(' ', "_"));
            let pending = call(&cache, PutOptions { allow_concurrency, ..PutOptions::default() });
            let expected = usize::from(!allow_concurrency);
            assert_eq!(turns.input_holds(), expected, "{name}, allow_concurrency: {allow_concurrency}");
            // The turn ends: the flush resolves the call, and the hold goes with it.
            turns.end_turn();
            block_on(pending).unwrap();
            assert_eq!(turns.input_holds(), 0, "{name}: released once resolved");
        }
    }
}
