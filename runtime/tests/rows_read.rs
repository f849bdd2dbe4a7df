//! `rowsRead` (spec §3.5) counted as workerd's patched SQLite counts it: one per cursor positioned on a row
//! (a scan's start, even on an empty table; each successful step; each keyed seek), and a `count(*)` fast
//! path adds the rows of its b-tree and opens no scan. Checked on empty, small and large tables, with and
//! without an index.

use std::sync::Arc;

use dosim_runtime::storage::gates::{DurableOnReturn, ManualTurns};
use dosim_runtime::storage::sql::SqlValue;
use dosim_runtime::storage::sqlite::{SqliteSettings, SqliteStorage};
use dosim_runtime::storage::DatabaseLocation;

fn open(name: &str) -> (SqliteStorage, Arc<ManualTurns>) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("rows_read");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}.db"));
    for suffix in ["", "-journal", "-wal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
    }
    let turns = Arc::new(ManualTurns::default());
    let s = SqliteStorage::open(
        &DatabaseLocation::file(p),
        turns.clone(),
        Arc::new(DurableOnReturn),
        SqliteSettings::default(),
    )
    .unwrap();
    (s, turns)
}

fn rows_read(s: &SqliteStorage, query: &str, params: &[SqlValue]) -> u64 {
    s.exec(query, params).unwrap().rows_read()
}

/// A table of `n` rows `(id, k, v)` with `k = id`, and an index on `k` if `indexed`.
fn table(n: i64, indexed: bool, test: &str) -> SqliteStorage {
    let (s, turns) = open(&format!("{test}_{n}_{indexed}"));
    s.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, v TEXT)", &[]).unwrap();
    if indexed {
        s.exec("CREATE UNIQUE INDEX t_k ON t (k)", &[]).unwrap();
    }
    for i in 0..n {
        s.exec("INSERT INTO t VALUES (?1, ?1, 'v')", &[SqlValue::Integer(i)]).unwrap();
    }
    turns.end_turn();
    s
}

#[test]
fn count_star_reads_the_rows_it_counts() {
    for indexed in [false, true] {
        for n in [0, 1, 7, 5_000] {
            let s = table(n, indexed, "count");
            let what = format!("{n} rows, index: {indexed}");
            assert_eq!(rows_read(&s, "SELECT count(*) FROM t", &[]), n as u64, "count(*), {what}");
            assert_eq!(rows_read(&s, "select COUNT(*) as c from t;", &[]), n as u64, "any spelling, {what}");
            // Not a fast path: a WHERE clause makes it a scan, which reads every row (and starts once).
            let scan = (n as u64).max(1);
            assert_eq!(
                rows_read(&s, "SELECT count(*) FROM t WHERE v = 'v'", &[]),
                scan,
                "count with WHERE, {what}"
            );
            // A full scan starts (one, even on an empty table) and steps to each next row.
            assert_eq!(rows_read(&s, "SELECT * FROM t", &[]), scan, "full scan, {what}");
            // A filter on a column without an index scans the table all the same.
            assert_eq!(rows_read(&s, "SELECT * FROM t WHERE v != 'v'", &[]), scan, "filtered scan, {what}");
            // A keyed lookup by rowid: one seek, found or not.
            assert_eq!(
                rows_read(&s, "SELECT * FROM t WHERE id = ?1", &[SqlValue::Integer(n / 2)]),
                1,
                "{what}"
            );
        }
    }
}

#[test]
fn indexed_lookups_read_the_seek_and_the_steps() {
    for n in [1_i64, 7, 5_000] {
        let s = table(n, true, "indexed");
        // A unique index: one seek, no step.
        let hit = [SqlValue::Integer(n - 1)];
        assert_eq!(rows_read(&s, "SELECT v FROM t WHERE k = ?1", &hit), 1, "indexed lookup, {n} rows");
        if n > 20 {
            // A range: one seek, then a step to each next entry up to the first past the range.
            assert_eq!(rows_read(&s, "SELECT v FROM t WHERE k >= 10 AND k < 20", &[]), 11, "range, {n} rows");
        }
        // The count(*) fast path and a lookup in one statement: the rows counted, plus the lookup.
        let both = "SELECT (SELECT count(*) FROM t), (SELECT v FROM t WHERE id = 0)";
        assert_eq!(rows_read(&s, both, &[]), n as u64 + 1, "{n} rows");
    }
}
