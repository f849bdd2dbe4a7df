//! The KV backend end to end: [`Storage::kv`] over an [`ActorCache`] over a [`SqliteKvStore`] on a real file.
//!
//! - writes persist across a reopen once flushed (the turn ended), and unflushed writes do not;
//! - the SQL-only calls fail with the spec's errors (§3.1, §2.7);
//! - the oracle's KV-backend cases (`data/oracle_kv_backend.json`, copied from the project's oracle; see its
//!   `source` field) replayed through [`Storage`]. As in `conformance_storage.rs`, each top-level op is its own
//!   turn (`end_turn` after it, which flushes); a `concurrent` op runs its sub-ops in one turn.

use super::oracle::{
    alarm_time, error_json, expected, list_options, map_json, normalize, run_transaction, undefined, T0_MS,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::error::messages;
use crate::error::{Error, ErrorKind};
use crate::storage::actor_cache::sqlite_store::SqliteKvStore;
use crate::storage::actor_cache::{ActorCache, ActorCacheOptions, Batch, CommitResult, KvStore};
use crate::storage::gates::{block_on, ManualTurns};
use crate::storage::kv::ListOptions;
use crate::storage::{DatabaseLocation, Storage, Transaction};
use crate::world::DurableOnReturn;
use serde_json::{json, Value};

fn db_path(name: &str) -> PathBuf {
    let dir = crate::test_dir().join("kv_backend");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.db"));
    for suffix in ["", "-journal", "-wal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

/// A KV-backend object's storage on `path`, with its hand-driven turns.
fn open(path: &PathBuf) -> (Storage, ActorCache, Arc<ManualTurns>) {
    let store = SqliteKvStore::open(&DatabaseLocation::file(path), Arc::new(DurableOnReturn)).unwrap();
    let turns = Arc::new(ManualTurns::default());
    let cache = ActorCache::new(Arc::new(store), turns.clone(), ActorCacheOptions::default());
    (Storage::kv(cache.clone()), cache, turns)
}

#[test]
fn flushed_writes_persist_across_a_reopen() {
    let path = db_path("persist");
    {
        let (storage, _cache, turns) = open(&path);
        block_on(storage.put("a", &1)).unwrap();
        block_on(storage.put_multiple(&[("b", json!({"x": [1, 2]})), ("c", json!("three"))])).unwrap();
        block_on(storage.set_alarm(5_000)).unwrap();
        turns.end_turn();
        block_on(storage.delete("c")).unwrap();
        turns.end_turn();
        assert!(turns.lock_outcomes().iter().all(Result::is_ok));
        assert!(turns.gate_breaks().is_empty());
    }
    let (storage, _cache, _turns) = open(&path);
    assert_eq!(block_on(storage.get::<i64>("a")).unwrap(), Some(1));
    assert_eq!(block_on(storage.get::<Value>("b")).unwrap(), Some(json!({"x": [1, 2]})));
    assert_eq!(block_on(storage.get::<Value>("c")).unwrap(), None);
    let all: Vec<(String, Value)> = block_on(storage.list(&ListOptions::default())).unwrap();
    assert_eq!(all, vec![("a".to_string(), json!(1)), ("b".to_string(), json!({"x": [1, 2]}))]);
    assert_eq!(block_on(storage.get_alarm()).unwrap(), Some(5_000));
}

#[test]
fn unflushed_writes_do_not_persist() {
    let path = db_path("unflushed");
    {
        let (storage, _cache, turns) = open(&path);
        block_on(storage.put("kept", &1)).unwrap();
        turns.end_turn();
        block_on(storage.put("lost", &2)).unwrap();
        block_on(storage.delete("kept")).unwrap();
        // The object dies before its turn ends: the scheduled flush never reaches storage.
        _cache.shutdown(None);
        turns.end_turn();
    }
    let (storage, _cache, _turns) = open(&path);
    assert_eq!(block_on(storage.get::<i64>("kept")).unwrap(), Some(1));
    assert_eq!(block_on(storage.get::<i64>("lost")).unwrap(), None);
}

#[test]
fn sql_only_calls_fail_on_the_kv_backend() {
    let (storage, _cache, _turns) = open(&db_path("mismatch"));
    let e = storage.sql().unwrap_err();
    assert_eq!((e.kind(), e.message()), (ErrorKind::Error, messages::SQL_NOT_AVAILABLE));
    let e = storage.transaction_sync(|| Ok(())).unwrap_err();
    assert_eq!((e.kind(), e.message()), (ErrorKind::Error, messages::NOT_BACKED_BY_SQL));
    let e = block_on(storage.get_current_bookmark()).unwrap_err();
    assert_eq!(e.message(), messages::NOT_BACKED_BY_SQL);
}

#[test]
fn a_batch_reports_counts_and_applies_in_order() {
    let store =
        SqliteKvStore::open(&DatabaseLocation::file(db_path("batch")), Arc::new(DurableOnReturn)).unwrap();
    let put = |k: &str| (k.to_string(), vec![1u8]);
    let r = block_on(store.commit(Batch {
        puts: vec![put("a"), put("b"), put("c")],
        alarm: Some(Some(7)),
        ..Batch::default()
    }))
    .unwrap();
    assert_eq!(r, CommitResult::default());
    let r = block_on(store.commit(Batch {
        counted_deletes: vec![vec!["a".into(), "a".into(), "zz".into()], vec!["a".into(), "b".into()]],
        puts: vec![put("a")],
        alarm_delete_if: Some(7),
        alarm: Some(Some(9)),
        ..Batch::default()
    }))
    .unwrap();
    assert_eq!(r, CommitResult { counts: vec![1, 1], deleted_all: 0, alarm_deleted: true });
    let mut got = block_on(store.get(vec!["a".into(), "b".into(), "c".into()])).unwrap();
    got.sort();
    assert_eq!(got, vec![put("a"), put("c")]);
    assert_eq!(block_on(store.get_alarm()).unwrap(), Some(9));
    assert_eq!(block_on(store.delete_all()).unwrap(), 2);
    assert_eq!(block_on(store.get_alarm()).unwrap(), Some(9), "deleteAll leaves the alarm");
}

// ----- oracle conformance ------------------------------------------------------------------------------------

fn keys(v: &Value) -> Vec<&str> {
    v.as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect()
}

/// Runs one storage op (top level or inside a transaction). `Err`: not applicable here (with a reason).
async fn run_op(
    storage: &Storage,
    txn: Option<&Transaction>,
    op: &Value,
) -> Result<Result<Value, Error>, String> {
    let key = op.get("key");
    let one = || key.and_then(Value::as_str).unwrap();
    Ok(match op["op"].as_str().unwrap() {
        "get" if key.is_some_and(Value::is_array) => {
            if txn.is_some() {
                return Err("get(keys[]) on a transaction is not part of these cases".into());
            }
            storage
                .get_multiple::<Value>(&keys(key.unwrap()))
                .await
                .map(|m| map_json(m.into_iter().collect()))
        }
        "get" => match txn {
            Some(t) => t.get::<Value>(one()).await,
            None => storage.get::<Value>(one()).await,
        }
        .map(|v| v.unwrap_or_else(undefined)),
        "put" => {
            if let Some(entries) = op.get("entries") {
                let pairs: Vec<(&str, Value)> =
                    entries.as_object().unwrap().iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
                storage.put_multiple(&pairs).await.map(|()| undefined())
            } else {
                match txn {
                    Some(t) => t.put(one(), &op["value"]).await,
                    None => storage.put(one(), &op["value"]).await,
                }
                .map(|()| undefined())
            }
        }
        "delete" if key.is_some_and(Value::is_array) => {
            storage.delete_multiple(&keys(key.unwrap())).await.map(|n| json!(n))
        }
        "delete" => match txn {
            Some(t) => t.delete(one()).await,
            None => storage.delete(one()).await,
        }
        .map(|b| json!(b)),
        "list" => match txn {
            Some(t) => t.list::<Value>(&list_options(op)).await,
            None => storage.list::<Value>(&list_options(op)).await,
        }
        .map(map_json),
        "rollback" => txn.expect("rollback is a transaction op").rollback().map(|()| undefined()),
        "deleteAll" => storage.delete_all().await.map(|()| undefined()),
        "getAlarm" => storage.get_alarm().await.map(|a| a.map_or(Value::Null, |t| json!({"$t0": t - T0_MS}))),
        "setAlarm" => storage.set_alarm(alarm_time(op)).await.map(|()| undefined()),
        "deleteAlarm" => storage.delete_alarm().await.map(|()| undefined()),
        "transaction" => {
            run_transaction(storage, op, async |t: &Transaction, o: &Value| {
                Box::pin(run_op(storage, Some(t), o)).await
            })
            .await
        }
        "transactionSync" => {
            // The oracle's local runtime (Miniflare) backs "KV" objects with SQLite, so its transactionSync
            // succeeded; spec §2.7/§3.1 (production) say it fails. Ours follows the spec: check that, and skip.
            let e = storage.transaction_sync(|| Ok(())).unwrap_err();
            assert_eq!(e.message(), messages::NOT_BACKED_BY_SQL);
            return Err("the oracle ran on Miniflare, where KV objects are SQLite-backed and transactionSync \
                        succeeds; spec §2.7 requires `Durable Object is not backed by SQL.` (checked instead)"
                .into());
        }
        other => return Err(format!("op {other} is not part of this conformance file")),
    })
}

type Op<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Result<Value, Error>, String>> + 'a>>;

/// Polls each future once in order (each call takes effect at its first poll, as a JavaScript call does when
/// made), then ends turns until all are done: a write's or a counted delete's outcome may wait for the flush.
fn drive<'a>(turns: &ManualTurns, mut ops: Vec<Op<'a>>) -> Vec<Result<Result<Value, Error>, String>> {
    let mut out: Vec<Option<_>> = ops.iter().map(|_| None).collect();
    for _ in 0..100 {
        for (f, o) in ops.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                    *o = Some(v);
                }
            }
        }
        if out.iter().all(Option::is_some) {
            return out.into_iter().map(Option::unwrap).collect();
        }
        turns.end_turn();
    }
    panic!("an op never completed");
}

#[test]
fn kv_backend_matches_the_real_runtime() {
    let data: Value =
        serde_json::from_str(include_str!("../../../tests/data/oracle_kv_backend.json")).unwrap();
    let (mut checked, mut skipped) = (0, 0);
    for case in data["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (storage, _cache, turns) = open(&db_path(&format!("oracle-{name}")));
        for (i, r) in case["results"].as_array().unwrap().iter().enumerate() {
            let op = &r["op"];
            let got = if op["op"] == "concurrent" {
                let subs: Vec<Op<'_>> = op["ops"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|sub| Box::pin(run_op(&storage, None, sub)) as Op<'_>)
                    .collect();
                let mut all = Vec::new();
                for v in drive(&turns, subs) {
                    all.push(match v.expect("concurrent sub-ops apply") {
                        Ok(v) => json!({"ok": v}),
                        Err(e) => json!({"error": error_json(&e), "sync": false}),
                    });
                }
                Ok(Value::Array(all))
            } else {
                match drive(&turns, vec![Box::pin(run_op(&storage, None, op))]).pop().unwrap() {
                    Ok(r) => r.map_err(|e| error_json(&e)),
                    Err(reason) => {
                        eprintln!("{name} op {i} ({}) skipped: {reason}", op["op"]);
                        skipped += 1;
                        continue;
                    }
                }
            };
            turns.end_turn();
            let want = expected(r);
            assert_eq!(
                got.as_ref().map(normalize).map_err(normalize),
                want.as_ref().map(normalize).map_err(normalize),
                "{name} op {i}: {op}"
            );
            checked += 1;
        }
        assert!(turns.gate_breaks().is_empty(), "{name}: {:?}", turns.gate_breaks());
        assert!(turns.lock_outcomes().iter().all(Result::is_ok), "{name}");
    }
    eprintln!("{checked} ops match the real runtime, {skipped} skipped");
    // Pinned, so an op quietly moving to "skipped" is noticed.
    assert_eq!(skipped, 1);
    assert_eq!(checked, 63);
}
