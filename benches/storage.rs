//! The storage API against bare rusqlite doing the same thing on the same database, per operation.
//!
//! `cargo bench --bench storage` (plain build). Both sides use one SQLite database on a `LocalWorld`'s
//! instant `SimDisk` (the simulation's disk, without madsim), so the difference is the API's own cost:
//! - `kv_get`: `Storage::get` (CBOR decode included) vs a cached `SELECT value FROM _cf_KV WHERE key = ?`;
//! - `kv_put_commit`: one `Storage::put` and the end of its turn (the implicit commit) vs `BEGIN`, an
//!   `INSERT OR REPLACE` and `COMMIT`;
//! - `kv_list_100`: `Storage::list` of 100 keys vs a cached range `SELECT`;
//! - `sql_insert`: `Sql::exec` of a one-row INSERT (in a turn that then commits) vs a cached prepared INSERT
//!   in `BEGIN`/`COMMIT`;
//! - `sql_select_one`: `Sql::exec(...).one()` of a one-row SELECT vs a cached prepared `query_row`.
//!
//! - `kv_get_cached`: `Storage::get` on the KV backend of a key its actor cache holds (no storage read), and
//!   the bare `ActorCache::get` beneath it (no CBOR decode).
//!
//! Targets (issue 3): SQL through the API within 1.5× bare rusqlite; a cached KV-backend get under 1 µs.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dosim_runtime::embed::DatabaseLocation;
use dosim_runtime::embed::SqliteKvStore;
use dosim_runtime::embed::{block_on, DurableOnReturn, ManualTurns};
use dosim_runtime::embed::{ActorCache, ActorCacheOptions};
use dosim_runtime::embed::{SqliteSettings, SqliteStorage};
use dosim_runtime::prelude::GetOptions;
use dosim_runtime::prelude::ListOptions;
use dosim_runtime::prelude::SqlValue;
use dosim_runtime::prelude::Storage;
use dosim_sim::{DiskConfig, LocalWorld, Seed};
use rusqlite::Connection;

/// Keys preloaded for reads.
const KEYS: usize = 1000;

fn location(name: &str) -> DatabaseLocation {
    dosim_sim::sqlite::register_vfs();
    DatabaseLocation::on_vfs(dosim_sim::sqlite::VFS_NAME, name)
}

struct Api {
    storage: Storage,
    turns: Arc<ManualTurns>,
}

fn api() -> Api {
    let turns = Arc::new(ManualTurns::default());
    let backend = SqliteStorage::open(
        &location("api.db"),
        turns.clone(),
        Arc::new(DurableOnReturn),
        SqliteSettings::default(),
    )
    .expect("opens");
    let storage = Storage::sqlite(backend);
    for i in 0..KEYS {
        block_on(storage.put(&format!("key{i:04}"), &i)).unwrap();
    }
    storage.sql().unwrap().exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)", &[]).unwrap();
    storage.sql().unwrap().exec("INSERT INTO t VALUES (1, 42)", &[]).unwrap();
    turns.end_turn();
    turns.lock_outcomes();
    Api { storage, turns }
}

/// A KV-backend object's storage with every key flushed and cached.
fn kv_backend() -> (Storage, ActorCache, Arc<ManualTurns>) {
    let turns = Arc::new(ManualTurns::default());
    let store = SqliteKvStore::open(&location("kv.db"), Arc::new(DurableOnReturn)).expect("opens");
    let cache = ActorCache::new(Arc::new(store), turns.clone(), ActorCacheOptions::default());
    let storage = Storage::kv(cache.clone());
    for i in 0..KEYS {
        block_on(storage.put(&format!("key{i:04}"), &i)).unwrap();
    }
    turns.end_turn();
    turns.lock_outcomes();
    assert!(cache.is_cached("key0000"));
    (storage, cache, turns)
}

fn bare() -> Connection {
    let conn = location("bare.db").open().expect("opens");
    conn.execute_batch(
        "CREATE TABLE _cf_KV(key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;
         CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER);
         INSERT INTO t VALUES (1, 42);",
    )
    .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    for i in 0..KEYS {
        let v = dosim_runtime::embed::encode(&i).unwrap();
        tx.execute("INSERT INTO _cf_KV VALUES (?1, ?2)", rusqlite::params![format!("key{i:04}"), v]).unwrap();
    }
    tx.commit().unwrap();
    conn
}

fn benches(c: &mut Criterion) {
    let _world = LocalWorld::new(Seed(1), DiskConfig::instant()).expect("valid disk");
    let a = api();
    let b = bare();
    let mut g = c.benchmark_group("storage_vs_rusqlite");
    g.measurement_time(Duration::from_secs(3)).sample_size(20);

    let mut i = 0usize;
    g.bench_function(BenchmarkId::new("kv_get", "api"), |bench| {
        bench.iter(|| {
            i = (i + 7) % KEYS;
            black_box(block_on(a.storage.get::<usize>(&format!("key{i:04}"))).unwrap())
        })
    });
    let (kv, cache, _kv_turns) = kv_backend();
    g.bench_function(BenchmarkId::new("kv_get_cached", "api"), |bench| {
        bench.iter(|| {
            i = (i + 7) % KEYS;
            black_box(block_on(kv.get::<usize>(&format!("key{i:04}"))).unwrap())
        })
    });
    g.bench_function(BenchmarkId::new("kv_get_cached", "actor_cache"), |bench| {
        bench.iter(|| {
            i = (i + 7) % KEYS;
            black_box(block_on(cache.get(&format!("key{i:04}"), GetOptions::default())).unwrap())
        })
    });
    g.bench_function(BenchmarkId::new("kv_get", "rusqlite"), |bench| {
        bench.iter(|| {
            i = (i + 7) % KEYS;
            let mut st = b.prepare_cached("SELECT value FROM _cf_KV WHERE key = ?1").unwrap();
            let v: Vec<u8> = st.query_row([format!("key{i:04}")], |r| r.get(0)).unwrap();
            black_box(dosim_runtime::embed::decode::<usize>(&v).unwrap())
        })
    });

    g.bench_function(BenchmarkId::new("kv_put_commit", "api"), |bench| {
        bench.iter(|| {
            i = (i + 7) % KEYS;
            block_on(a.storage.put(&format!("key{i:04}"), &(i + 1))).unwrap();
            a.turns.end_turn();
            a.turns.lock_outcomes();
        })
    });
    g.bench_function(BenchmarkId::new("kv_put_commit", "rusqlite"), |bench| {
        bench.iter(|| {
            i = (i + 7) % KEYS;
            let v = dosim_runtime::embed::encode(&(i + 1)).unwrap();
            b.execute_batch("BEGIN").unwrap();
            b.prepare_cached("INSERT OR REPLACE INTO _cf_KV VALUES (?1, ?2)")
                .unwrap()
                .execute(rusqlite::params![format!("key{i:04}"), v])
                .unwrap();
            b.execute_batch("COMMIT").unwrap();
        })
    });

    let opts = ListOptions { start: Some("key0100".into()), limit: Some(100), ..ListOptions::default() };
    g.bench_function(BenchmarkId::new("kv_list_100", "api"), |bench| {
        bench.iter(|| black_box(block_on(a.storage.list::<usize>(&opts)).unwrap().len()))
    });
    g.bench_function(BenchmarkId::new("kv_list_100", "rusqlite"), |bench| {
        bench.iter(|| {
            let mut st = b
                .prepare_cached("SELECT key, value FROM _cf_KV WHERE key >= ?1 ORDER BY key LIMIT 100")
                .unwrap();
            let rows: Vec<(String, usize)> = st
                .query_map(["key0100"], |r| {
                    let v: Vec<u8> = r.get(1)?;
                    Ok((r.get(0)?, dosim_runtime::embed::decode::<usize>(&v).unwrap()))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            black_box(rows.len())
        })
    });

    let sql = a.storage.sql().unwrap();
    let mut id = 10i64;
    g.bench_function(BenchmarkId::new("sql_insert", "api"), |bench| {
        bench.iter(|| {
            id += 1;
            sql.exec("INSERT INTO t VALUES (?1, ?2)", &[SqlValue::Integer(id), SqlValue::Integer(id)])
                .unwrap();
            a.turns.end_turn();
            a.turns.lock_outcomes();
        })
    });
    g.bench_function(BenchmarkId::new("sql_insert", "rusqlite"), |bench| {
        bench.iter(|| {
            id += 1;
            b.execute_batch("BEGIN").unwrap();
            b.prepare_cached("INSERT INTO t VALUES (?1, ?2)").unwrap().execute([id, id]).unwrap();
            b.execute_batch("COMMIT").unwrap();
        })
    });

    g.bench_function(BenchmarkId::new("sql_select_one", "api"), |bench| {
        bench.iter(|| black_box(sql.exec("SELECT v FROM t WHERE id = 1", &[]).unwrap().one().unwrap()))
    });
    g.bench_function(BenchmarkId::new("sql_select_one", "rusqlite"), |bench| {
        bench.iter(|| {
            let mut st = b.prepare_cached("SELECT v FROM t WHERE id = 1").unwrap();
            black_box(st.query_row([], |r| r.get::<_, i64>(0)).unwrap())
        })
    });
    g.finish();
}

criterion_group!(storage, benches);
criterion_main!(storage);
