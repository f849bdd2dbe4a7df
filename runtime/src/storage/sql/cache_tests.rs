//! The statement cache of the SQL API (`sql::StatementCache`): a cached statement gives what a freshly prepared
//! one gives (rows, columns, errors, `rows_read`/`rows_written`), across schema changes between two runs of the
//! same text; the authorizer still confines a statement SQLite prepares again; the cache is bounded (least
//! recently used evicted); and cached statements block neither `DROP TABLE`, `delete_all`, nor closing the
//! connection.

use std::path::PathBuf;
use std::sync::Arc;

use crate::error::Error;
use crate::storage::gates::{block_on, ManualTurns};
use crate::storage::sql::{self, Cursor, SqlValue, StatementCache, STATEMENT_CACHE_CAPACITY};
use crate::storage::sqlite::{SqliteSettings, SqliteStorage};
use crate::storage::{kv, value, DatabaseLocation};
use crate::world::DurableOnReturn;
use rusqlite::Connection;

fn path(name: &str) -> PathBuf {
    let dir = crate::test_dir().join("sql-cache-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.db"));
    for suffix in ["", "-journal", "-wal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

/// A fresh database, prepared as the runtime does.
fn fresh_db(name: &str) -> Connection {
    let conn = DatabaseLocation::file(path(name)).open().unwrap();
    sql::prepare_connection(&conn).unwrap();
    conn
}

/// What a cursor shows: columns, rows and counters.
type Outcome = Result<(Vec<String>, Vec<Vec<SqlValue>>, u64, u64), String>;

fn outcome(result: Result<Cursor, Error>) -> Outcome {
    result
        .map(|mut c| {
            let columns = c.column_names().to_vec();
            let (read, written) = (c.rows_read(), c.rows_written());
            (columns, c.raw().to_array(), read, written)
        })
        .map_err(|e| e.message().to_owned())
}

/// Runs `query` on both databases, through the cache on `cached` and uncached on `fresh`, and checks that both
/// give the same outcome.
fn both(cache: &mut StatementCache, cached: &Connection, fresh: &Connection, query: &str) -> Outcome {
    both_with(cache, cached, fresh, query, &[])
}

fn both_with(
    cache: &mut StatementCache,
    cached: &Connection,
    fresh: &Connection,
    query: &str,
    params: &[SqlValue],
) -> Outcome {
    let a = outcome(cache.exec(cached, query, params, &mut || Ok(())));
    let b = outcome(sql::exec(fresh, query, params, &mut || Ok(())));
    assert_eq!(a, b, "{query:?}: cached and fresh differ");
    a
}

#[test]
fn a_single_statement_is_cached_and_reused_with_the_same_results_and_counters() {
    let (a, b) = (fresh_db("reuse_a"), fresh_db("reuse_b"));
    let mut cache = StatementCache::new();
    let setup = [
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, w TEXT)",
        "CREATE INDEX t_v ON t(v)",
        "CREATE TABLE r(k TEXT PRIMARY KEY, n) WITHOUT ROWID",
    ];
    for q in setup {
        both(&mut cache, &a, &b, q).unwrap();
    }
    for round in 0..3i64 {
        for i in 0..5i64 {
            let id = round * 10 + i;
            let params = [SqlValue::Integer(id), SqlValue::Integer(id % 3), SqlValue::Text(format!("w{id}"))];
            both_with(&mut cache, &a, &b, "INSERT INTO t VALUES (?1, ?2, ?3)", &params).unwrap();
            both_with(&mut cache, &a, &b, "INSERT OR REPLACE INTO r VALUES (?1, ?2)", &params[1..]).unwrap();
        }
        for q in [
            "SELECT v FROM t WHERE id = 1",
            "SELECT * FROM t ORDER BY w DESC",
            "SELECT v, count(*) AS n FROM t GROUP BY v",
            "SELECT * FROM t WHERE v = 1",
            "SELECT * FROM r",
            "UPDATE t SET v = v + 1 WHERE id % 2 = 0",
            "UPDATE t SET w = w || 'x' WHERE id = 3 RETURNING *",
            "DELETE FROM t WHERE id = 4",
            "SELECT count(*) FROM t",
        ] {
            both(&mut cache, &a, &b, q).unwrap();
        }
    }
    assert!(cache.contains("SELECT v FROM t WHERE id = 1"));
    assert!(cache.contains("INSERT INTO t VALUES (?1, ?2, ?3)"));
    // Bindings are cleared between runs: a wrong count fails as it would on a fresh statement, and the entry
    // stays usable.
    assert!(both(&mut cache, &a, &b, "INSERT INTO t VALUES (?1, ?2, ?3)").is_err());
    both(&mut cache, &a, &b, "SELECT v FROM t WHERE id = 1").unwrap();
}

#[test]
fn only_single_statements_that_succeed_are_cached() {
    let (a, b) = (fresh_db("single_a"), fresh_db("single_b"));
    let mut cache = StatementCache::new();
    both(&mut cache, &a, &b, "CREATE TABLE t(x); INSERT INTO t VALUES (1)").unwrap();
    assert!(cache.is_empty(), "a multi-statement query is not cached");
    assert!(both(&mut cache, &a, &b, "SELECT nope FROM t").is_err());
    assert!(both(&mut cache, &a, &b, "INSERT INTO t VALUES (1), (2); SELECT * FROM t").is_ok());
    assert!(cache.is_empty());
    both(&mut cache, &a, &b, "SELECT x FROM t;").unwrap();
    assert!(cache.contains("SELECT x FROM t;"));
    // A statement that fails when it runs is dropped from the cache.
    both(&mut cache, &a, &b, "CREATE TABLE u(x UNIQUE)").unwrap();
    both(&mut cache, &a, &b, "INSERT INTO u VALUES (1)").unwrap();
    assert!(cache.contains("INSERT INTO u VALUES (1)"));
    assert!(both(&mut cache, &a, &b, "INSERT INTO u VALUES (1)").unwrap_err().contains("UNIQUE"));
    assert!(!cache.contains("INSERT INTO u VALUES (1)"));
}

#[test]
fn schema_changes_between_two_runs_of_a_cached_text_behave_as_without_the_cache() {
    let (a, b) = (fresh_db("schema_a"), fresh_db("schema_b"));
    let mut cache = StatementCache::new();
    let select = "SELECT * FROM t";
    let insert = "INSERT INTO t VALUES (1, 2)";
    both(&mut cache, &a, &b, "CREATE TABLE t(x, y)").unwrap();
    both(&mut cache, &a, &b, insert).unwrap();
    both(&mut cache, &a, &b, select).unwrap();
    assert!(cache.contains(select));

    // A new column: SQLite prepares the cached statement again; `*` now has three columns.
    both(&mut cache, &a, &b, "ALTER TABLE t ADD COLUMN z DEFAULT 9").unwrap();
    let (columns, rows, ..) = both(&mut cache, &a, &b, select).unwrap();
    assert_eq!(columns, ["x", "y", "z"]);
    assert_eq!(rows, [[SqlValue::Integer(1), SqlValue::Integer(2), SqlValue::Integer(9)]]);
    assert!(both(&mut cache, &a, &b, insert).unwrap_err().contains("3 columns but 2 values"));

    // A dropped table: the same error as a fresh prepare gives.
    both(&mut cache, &a, &b, select).unwrap();
    both(&mut cache, &a, &b, "DROP TABLE t").unwrap();
    let e = both(&mut cache, &a, &b, select).unwrap_err();
    assert!(e.contains("no such table: t"), "{e}");

    // Recreated with other columns and an index: counters follow the new schema.
    both(&mut cache, &a, &b, "CREATE TABLE t(x INTEGER PRIMARY KEY, y)").unwrap();
    both(&mut cache, &a, &b, "CREATE INDEX t_y ON t(y)").unwrap();
    both(&mut cache, &a, &b, insert).unwrap();
    both(&mut cache, &a, &b, insert).unwrap_err();
    both(&mut cache, &a, &b, "INSERT INTO t VALUES (2, 3)").unwrap();
    both(&mut cache, &a, &b, select).unwrap();
    both(&mut cache, &a, &b, "UPDATE t SET y = y + 1").unwrap();
    both(&mut cache, &a, &b, "DROP INDEX t_y").unwrap();
    both(&mut cache, &a, &b, "UPDATE t SET y = y + 1").unwrap();
    both(&mut cache, &a, &b, select).unwrap();

    // A view redefined to read another table.
    both(&mut cache, &a, &b, "CREATE TABLE u(x)").unwrap();
    both(&mut cache, &a, &b, "CREATE VIEW v AS SELECT x FROM t").unwrap();
    both(&mut cache, &a, &b, "SELECT * FROM v").unwrap();
    both(&mut cache, &a, &b, "SELECT * FROM v").unwrap();
    both(&mut cache, &a, &b, "DROP VIEW v").unwrap();
    both(&mut cache, &a, &b, "CREATE VIEW v AS SELECT t.x FROM t, u").unwrap();
    both(&mut cache, &a, &b, "SELECT * FROM v").unwrap();
    both(&mut cache, &a, &b, "SELECT * FROM v").unwrap();
}

#[test]
fn the_authorizer_confines_a_cached_statement_that_sqlite_prepares_again() {
    let conn = fresh_db("auth_reprepare");
    kv::put(&conn, "k", &value::encode(&1).unwrap()).unwrap();
    let mut cache = StatementCache::new();
    let mut run = |q: &str| cache.exec(&conn, q, &[], &mut || Ok(())).map_err(|e| e.message().to_owned());
    run("CREATE TABLE t(x)").unwrap();
    run("INSERT INTO t VALUES (1)").unwrap();
    let select = "SELECT * FROM t";
    run(select).unwrap();
    // `t` is renamed and replaced by a view that calls a function application SQL may not call; the view's
    // body is checked when a statement using it is prepared, here when SQLite prepares the cached one again.
    run("ALTER TABLE t RENAME TO t2").unwrap();
    run("CREATE VIEW t AS SELECT sqlite_version() AS x").unwrap();
    let denied = "not authorized to use function: sqlite_version: SQLITE_ERROR";
    assert_eq!(run(select).unwrap_err(), denied);
    assert_eq!(run(select).unwrap_err(), denied, "and still, prepared afresh");
    // The same with a view over a reserved table.
    run("DROP VIEW t").unwrap();
    run("ALTER TABLE t2 RENAME TO t").unwrap();
    run(select).unwrap();
    run(select).unwrap();
    run("ALTER TABLE t RENAME TO t2").unwrap();
    run("CREATE VIEW t AS SELECT key AS x FROM _cf_KV").unwrap();
    assert_eq!(run(select).unwrap_err(), "access to _cf_KV.key is prohibited: SQLITE_AUTH");
    // Trusted code's statements are not in the cache: the same text as a runtime query is authorized anew.
    let trusted = "SELECT value FROM _cf_KV WHERE key = ?1";
    assert!(kv::get(&conn, "k").unwrap().is_some());
    let e = cache.exec(&conn, trusted, &[SqlValue::from("k")], &mut || Ok(())).unwrap_err();
    assert_eq!(e.message(), "access to _cf_KV.value is prohibited: SQLITE_AUTH");
}

#[test]
fn the_cache_is_bounded_and_evicts_the_least_recently_used_statement() {
    let conn = fresh_db("lru");
    let mut cache = StatementCache::new();
    let query = |i: usize| format!("SELECT {i} AS n");
    for i in 0..STATEMENT_CACHE_CAPACITY {
        cache.exec(&conn, &query(i), &[], &mut || Ok(())).unwrap();
    }
    assert_eq!(cache.len(), STATEMENT_CACHE_CAPACITY);
    // Query 0 is used again, so query 1 is now the least recently used.
    cache.exec(&conn, &query(0), &[], &mut || Ok(())).unwrap();
    cache.exec(&conn, &query(STATEMENT_CACHE_CAPACITY), &[], &mut || Ok(())).unwrap();
    assert_eq!(cache.len(), STATEMENT_CACHE_CAPACITY);
    assert!(cache.contains(&query(0)));
    assert!(!cache.contains(&query(1)));
    assert!(cache.contains(&query(2)));
    assert!(cache.contains(&query(STATEMENT_CACHE_CAPACITY)));
    for i in 0..3 * STATEMENT_CACHE_CAPACITY {
        let mut c = cache.exec(&conn, &query(i), &[], &mut || Ok(())).unwrap();
        assert_eq!(c.one().unwrap().values(), [SqlValue::Integer(i as i64)]);
        assert!(cache.len() <= STATEMENT_CACHE_CAPACITY);
    }
}

#[test]
fn cached_statements_block_neither_drop_table_nor_closing_once_the_cache_is_dropped() {
    let conn = fresh_db("close");
    let mut cache = StatementCache::new();
    let mut run = |q: &str| cache.exec(&conn, q, &[], &mut || Ok(())).unwrap();
    run("CREATE TABLE t(x)");
    run("INSERT INTO t VALUES (1), (2), (3)");
    // Stepped once of three rows on a fresh statement; the cursor is materialised and the statement reset.
    let mut c = run("SELECT x FROM t");
    assert_eq!(c.next().unwrap().values(), [SqlValue::Integer(1)]);
    run("SELECT x FROM t");
    run("DROP TABLE t");
    // Reset statements hold no lock, but they are not finalized: the connection cannot close while the
    // cache lives (the orchestrator drops it first).
    let conn = match conn.close() {
        Ok(()) => panic!("a cached statement keeps the connection open"),
        Err((conn, _busy)) => conn,
    };
    drop(cache);
    conn.close().map_err(|(_, e)| e).unwrap();
}

#[test]
fn storage_with_cached_statements_deletes_all_shuts_down_and_reopens() {
    let p = path("storage");
    let open = || {
        let turns = Arc::new(ManualTurns::default());
        let s = SqliteStorage::open(
            &DatabaseLocation::file(&p),
            turns.clone(),
            Arc::new(DurableOnReturn),
            SqliteSettings::default(),
        )
        .unwrap();
        (s, turns)
    };
    let (s, turns) = open();
    s.exec("CREATE TABLE t(x)", &[]).unwrap();
    for i in 0..3 {
        s.exec("INSERT INTO t VALUES (?1)", &[SqlValue::Integer(i)]).unwrap();
    }
    assert_eq!(s.exec("SELECT x FROM t", &[]).unwrap().count(), 3);
    turns.end_turn();
    assert_eq!(s.exec("SELECT x FROM t", &[]).unwrap().count(), 3);
    block_on(s.delete_all()).unwrap();
    let e = s.exec("SELECT x FROM t", &[]).unwrap_err();
    assert!(e.message().contains("no such table: t"), "{e}");
    s.exec("CREATE TABLE t(x)", &[]).unwrap();
    s.exec("INSERT INTO t VALUES (?1)", &[SqlValue::Integer(7)]).unwrap();
    turns.end_turn();
    assert_eq!(s.exec("SELECT x FROM t", &[]).unwrap().count(), 1);
    s.shutdown(None);
    drop((s, turns));
    // The connection closed (its cached statements finalized first): the database reopens with the data.
    let (s, _turns) = open();
    let mut c = s.exec("SELECT x FROM t", &[]).unwrap();
    assert_eq!(c.one().unwrap().values(), [SqlValue::Integer(7)]);
}
