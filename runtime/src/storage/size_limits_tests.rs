//! Every documented size limit (spec §2.1, §3.1, §3.5, §11), at its boundary, end to end on both backends:
//! a write exactly at the limit commits and reads back after a reopen of the database; one past it is
//! refused with the spec's message, and the object keeps serving (the data written before is still there,
//! and a later write commits).
//!
//! The SQLite backend's limits are SQLite's own, installed on the connection (`storage::sql`'s `MAX_*`):
//! a string or BLOB, and a row as SQLite stores it (its values and its record header), is at most
//! [`SQLITE_ROW_SIZE_MAX`] bytes. A KV pair is a row of `_cf_KV`, so its key plus value plus that header fit
//! the limit (§3.1: workerd applies it through SQLite too). [`record_size`] computes the header as SQLite does,
//! so each boundary below is exact.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Error;
use crate::storage::actor_cache::sqlite_store::SqliteKvStore;
use crate::storage::actor_cache::{ActorCache, ActorCacheOptions};
use crate::storage::gates::{block_on, ManualTurns};
use crate::storage::sql::{
    SqlValue, MAX_COLUMNS, MAX_COMPOUND_SELECT, MAX_EXPR_DEPTH, MAX_FUNCTION_ARGS, MAX_LIKE_PATTERN_LENGTH,
    MAX_SQL_LENGTH, MAX_VARIABLE_NUMBER,
};
use crate::storage::sqlite::{SqliteSettings, SqliteStorage, WriteOptions};
use crate::storage::value::{KEY_SIZE_MAX, MULTI_KEYS_MAX, SQLITE_ROW_SIZE_MAX, VALUE_SIZE_MAX};
use crate::storage::{DatabaseLocation, Storage};
use crate::world::DurableOnReturn;

const TOOBIG: &str = "string or blob too big: SQLITE_TOOBIG";

fn db_path(name: &str) -> PathBuf {
    let dir = crate::test_dir().join("size_limits");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}.db"));
    for suffix in ["", "-journal", "-wal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
    }
    p
}

// ----- the SQLite backend --------------------------------------------------------------------------------

fn open_sqlite(p: &Path) -> (SqliteStorage, Arc<ManualTurns>) {
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

/// Ends the turn: its implicit transaction commits, and nothing failed or reset the object.
fn commit(turns: &ManualTurns) {
    turns.end_turn();
    assert!(turns.lock_outcomes().iter().all(Result::is_ok), "a commit failed");
    assert!(turns.gate_breaks().is_empty(), "the object was reset: {:?}", turns.gate_breaks());
}

/// The length of SQLite's varint encoding of `v`.
fn varint_len(v: u64) -> usize {
    match v {
        0..=0x7f => 1,
        0x80..=0x3fff => 2,
        0x4000..=0x1f_ffff => 3,
        0x20_0000..=0xfff_ffff => 4,
        _ => 5, // enough for the sizes here
    }
}

/// The size of the record SQLite stores for a row of TEXT and BLOB values of these lengths (its header: the
/// header's length, then each value's serial type, `2n+13` for text and `2n+12` for a BLOB; then the bytes).
fn record_size(texts: &[usize], blobs: &[usize]) -> usize {
    let types: usize = texts.iter().map(|&n| varint_len(2 * n as u64 + 13)).sum::<usize>()
        + blobs.iter().map(|&n| varint_len(2 * n as u64 + 12)).sum::<usize>();
    let body: usize = texts.iter().chain(blobs).sum();
    // The header's length counts itself; one byte is enough below 128.
    1 + types + body
}

/// The largest `n` for which `size(n)` is at most the limit.
fn largest_fitting(size: impl Fn(usize) -> usize) -> usize {
    let mut n = SQLITE_ROW_SIZE_MAX;
    while size(n) > SQLITE_ROW_SIZE_MAX {
        n -= 1;
    }
    n
}

fn one_int(s: &SqliteStorage, query: &str, params: &[SqlValue]) -> i64 {
    match s.exec(query, params).unwrap().one().unwrap().values() {
        [SqlValue::Integer(n)] => *n,
        other => panic!("{query}: {other:?}"),
    }
}

fn expect_error(r: Result<impl std::fmt::Debug, Error>, message: &str, what: &str) {
    match r {
        Ok(v) => panic!("{what}: accepted past the limit ({v:?})"),
        Err(e) => assert_eq!(e.message(), message, "{what}"),
    }
}

const CONFIRMED: WriteOptions = WriteOptions { allow_unconfirmed: false };

/// A write to a SQLite-backed storage, at or over a limit.
type SqliteWrite = Box<dyn Fn(&SqliteStorage) -> Result<(), Error>>;

/// A limit of the SQLite backend: `at` writes exactly at it (and commits), `over` one past it (refused with
/// `message`), `check` reads back what `at` wrote (after a reopen).
struct SqliteCase {
    name: &'static str,
    setup: &'static str,
    at: SqliteWrite,
    over: SqliteWrite,
    message: String,
    check: Box<dyn Fn(&SqliteStorage)>,
}

fn sql_exec(s: &SqliteStorage, q: &str, params: &[SqlValue]) -> Result<(), Error> {
    s.exec(q, params).map(|_| ())
}

fn sqlite_cases() -> Vec<SqliteCase> {
    let row = SQLITE_ROW_SIZE_MAX;
    // KV pair of a one-byte key: the value's largest size.
    let kv_value = largest_fitting(|n| record_size(&[1], &[n]));
    // KV key alone (an empty value).
    let kv_key = largest_fitting(|n| record_size(&[n], &[0]));
    // A SQL row of one BLOB column (a rowid table: the rowid is not in the record).
    let sql_blob = largest_fitting(|n| record_size(&[], &[n]));
    // A SQL row of a TEXT and a BLOB column, the TEXT 1,000 bytes.
    let sql_pair = largest_fitting(|n| record_size(&[1000], &[n]));
    let cols = MAX_COLUMNS as usize;
    let params = MAX_VARIABLE_NUMBER as usize;
    let fargs = MAX_FUNCTION_ARGS as usize;
    let like = MAX_LIKE_PATTERN_LENGTH as usize;
    let terms = MAX_COMPOUND_SELECT as usize;
    let depth = MAX_EXPR_DEPTH as usize;
    let sql_len = MAX_SQL_LENGTH as usize;
    // An INSERT padded with a comment to exactly `len` bytes.
    let padded = |len: usize| {
        let head = "INSERT INTO big_sql VALUES ('padded') /*";
        let tail = "*/";
        format!("{head}{}{tail}", "x".repeat(len - head.len() - tail.len()))
    };
    let compound = |n: usize| vec!["SELECT 1"; n].join(" UNION ALL ");
    // `1 + 1 + …`: a tree `n` nodes deep (each `+` one level over the previous sum, a literal one level).
    let nested = |n: usize| format!("SELECT {}", vec!["1"; n].join(" + "));
    let function = |n: usize| format!("SELECT max({})", vec!["1"; n].join(", "));
    let pattern = |n: usize| format!("INSERT INTO likes SELECT 'a' WHERE 'a' LIKE '{}'", "%".repeat(n));
    let insert_params = |n: usize| format!("INSERT INTO wide VALUES ({})", vec!["?"; n].join(", "));
    let param_values = |n: usize| (0..n as i64).map(SqlValue::Integer).collect::<Vec<_>>();
    let columns = |n: usize| {
        format!("CREATE TABLE cols_{n} ({})", (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>().join(", "))
    };
    vec![
        SqliteCase {
            name: "KV value with a one-byte key (§3.1, §11: key+value ≤ 2 MB)",
            setup: "",
            at: Box::new(move |s| s.put("v", &vec![0xffu8; kv_value], CONFIRMED)),
            over: Box::new(move |s| s.put("w", &vec![0xffu8; kv_value + 1], CONFIRMED)),
            message: TOOBIG.into(),
            check: Box::new(move |s| assert_eq!(s.get("v").unwrap().map(|v| v.len()), Some(kv_value))),
        },
        SqliteCase {
            name: "KV key (§3.1, §11)",
            setup: "",
            at: Box::new(move |s| s.put(&"k".repeat(kv_key), b"", CONFIRMED)),
            over: Box::new(move |s| s.put(&"j".repeat(kv_key + 1), b"", CONFIRMED)),
            message: TOOBIG.into(),
            check: Box::new(move |s| assert_eq!(s.get(&"k".repeat(kv_key)).unwrap(), Some(Vec::new()))),
        },
        SqliteCase {
            name: "KV put_multiple, one pair at the limit and one past it (all or nothing)",
            setup: "",
            at: Box::new(move |s| s.put_multiple(&[("m", &vec![1u8; kv_value][..]), ("n", b"x")], CONFIRMED)),
            over: Box::new(move |s| {
                s.put_multiple(&[("o", &b"y"[..]), ("p", &vec![1u8; kv_value + 1][..])], CONFIRMED)
            }),
            message: TOOBIG.into(),
            check: Box::new(move |s| {
                assert_eq!(s.get("m").unwrap().map(|v| v.len()), Some(kv_value));
                assert_eq!(s.get("o").unwrap(), None, "the refused put_multiple wrote nothing");
            }),
        },
        SqliteCase {
            name: "SQL row of one BLOB (§3.5, §11: row ≤ 2 MB)",
            setup: "CREATE TABLE blobs (b BLOB)",
            at: Box::new(move |s| {
                sql_exec(s, "INSERT INTO blobs VALUES (?1)", &[SqlValue::Blob(vec![0xff; sql_blob])])
            }),
            over: Box::new(move |s| {
                sql_exec(s, "INSERT INTO blobs VALUES (?1)", &[SqlValue::Blob(vec![0xff; sql_blob + 1])])
            }),
            message: TOOBIG.into(),
            check: Box::new(move |s| {
                assert_eq!(one_int(s, "SELECT length(b) FROM blobs", &[]), sql_blob as i64);
            }),
        },
        SqliteCase {
            name: "SQL row of a TEXT and a BLOB (§3.5, §11)",
            setup: "CREATE TABLE pairs (t TEXT, b BLOB)",
            at: Box::new(move |s| {
                let p = [SqlValue::Text("t".repeat(1000)), SqlValue::Blob(vec![7; sql_pair])];
                sql_exec(s, "INSERT INTO pairs VALUES (?1, ?2)", &p)
            }),
            over: Box::new(move |s| {
                let p = [SqlValue::Text("t".repeat(1000)), SqlValue::Blob(vec![7; sql_pair + 1])];
                sql_exec(s, "INSERT INTO pairs VALUES (?1, ?2)", &p)
            }),
            message: TOOBIG.into(),
            check: Box::new(move |s| {
                assert_eq!(
                    one_int(s, "SELECT length(t) + length(b) FROM pairs", &[]),
                    1000 + sql_pair as i64
                );
            }),
        },
        SqliteCase {
            name: "SQL string value (§3.5, §11: string ≤ 2 MB), stored through a computed row",
            setup: "CREATE TABLE lens (n INTEGER)",
            at: Box::new(move |s| {
                sql_exec(s, "INSERT INTO lens SELECT length(?1)", &[SqlValue::Text("s".repeat(row))])
            }),
            over: Box::new(move |s| {
                sql_exec(s, "INSERT INTO lens SELECT length(?1)", &[SqlValue::Text("s".repeat(row + 1))])
            }),
            message: TOOBIG.into(),
            check: Box::new(move |s| assert_eq!(one_int(s, "SELECT n FROM lens", &[]), row as i64)),
        },
        SqliteCase {
            name: "SQL statement length (§3.5, §11: 100 KB)",
            setup: "CREATE TABLE big_sql (x)",
            at: Box::new(move |s| sql_exec(s, &padded(sql_len), &[])),
            over: Box::new(move |s| sql_exec(s, &padded(sql_len + 1), &[])),
            message: "statement too long: SQLITE_TOOBIG".into(),
            check: Box::new(|s| assert_eq!(one_int(s, "SELECT count(*) FROM big_sql", &[]), 1)),
        },
        SqliteCase {
            name: "bound parameters (§3.5, §11: 100)",
            setup: "",
            at: Box::new(move |s| {
                sql_exec(s, &columns(cols), &[])?;
                sql_exec(s, "CREATE TABLE wide AS SELECT * FROM cols_100 WHERE 0", &[])?;
                sql_exec(s, &insert_params(params), &param_values(params))
            }),
            over: Box::new(move |s| {
                sql_exec(
                    s,
                    &format!("SELECT {}", vec!["?"; params + 1].join(", ")),
                    &param_values(params + 1),
                )
            }),
            message: format!("too many SQL variables at offset {}: SQLITE_ERROR", 7 + 3 * params),
            check: Box::new(move |s| {
                assert_eq!(one_int(s, "SELECT c99 FROM wide", &[]), params as i64 - 1);
            }),
        },
        SqliteCase {
            name: "columns per table (§3.5, §11: 100)",
            setup: "",
            at: Box::new(move |s| sql_exec(s, &columns(cols), &[])),
            over: Box::new(move |s| sql_exec(s, &columns(cols + 1), &[])),
            message: "too many columns on cols_101: SQLITE_ERROR".into(),
            check: Box::new(move |s| {
                assert_eq!(
                    one_int(s, "SELECT count(*) FROM pragma_table_info('cols_100')", &[]),
                    cols as i64
                );
            }),
        },
        SqliteCase {
            name: "arguments of a SQL function (§3.5, §11: 32)",
            setup: "CREATE TABLE maxes (m)",
            at: Box::new(move |s| sql_exec(s, &format!("INSERT INTO maxes {}", function(fargs)), &[])),
            over: Box::new(move |s| sql_exec(s, &function(fargs + 1), &[])),
            message: "too many arguments on function max at offset 7: SQLITE_ERROR".into(),
            check: Box::new(|s| assert_eq!(one_int(s, "SELECT m FROM maxes", &[]), 1)),
        },
        SqliteCase {
            name: "LIKE pattern length (§3.5, §11: 50 bytes)",
            setup: "CREATE TABLE likes (x)",
            at: Box::new(move |s| sql_exec(s, &pattern(like), &[])),
            over: Box::new(move |s| sql_exec(s, &pattern(like + 1), &[])),
            message: "LIKE or GLOB pattern too complex: SQLITE_ERROR".into(),
            check: Box::new(|s| assert_eq!(one_int(s, "SELECT count(*) FROM likes", &[]), 1)),
        },
        SqliteCase {
            name: "terms of a compound SELECT (§3.5: 5)",
            setup: "CREATE TABLE terms (x)",
            at: Box::new(move |s| sql_exec(s, &format!("INSERT INTO terms {}", compound(terms)), &[])),
            over: Box::new(move |s| sql_exec(s, &compound(terms + 1), &[])),
            message: "too many terms in compound SELECT: SQLITE_ERROR".into(),
            check: Box::new(move |s| {
                assert_eq!(one_int(s, "SELECT count(*) FROM terms", &[]), terms as i64);
            }),
        },
        SqliteCase {
            name: "expression depth (§3.5: 100)",
            setup: "CREATE TABLE deep (x)",
            at: Box::new(move |s| sql_exec(s, &format!("INSERT INTO deep {}", nested(depth)), &[])),
            over: Box::new(move |s| sql_exec(s, &nested(depth + 1), &[])),
            message: format!("Expression tree is too large (maximum depth {depth}): SQLITE_ERROR"),
            check: Box::new(move |s| assert_eq!(one_int(s, "SELECT x FROM deep", &[]), depth as i64)),
        },
    ]
}

#[test]
fn sqlite_backend_limits_commit_at_the_boundary_and_refuse_past_it() {
    let cases = sqlite_cases();
    for (i, case) in cases.iter().enumerate() {
        let p = db_path(&format!("sqlite_{i}"));
        {
            let (s, turns) = open_sqlite(&p);
            s.put("before", b"earlier data", CONFIRMED).unwrap();
            if !case.setup.is_empty() {
                s.exec(case.setup, &[]).unwrap();
            }
            commit(&turns);
            (case.at)(&s).unwrap_or_else(|e| panic!("{}: refused at the limit: {e}", case.name));
            commit(&turns);
            expect_error((case.over)(&s), &case.message, case.name);
            // The object keeps serving: the refused write changed nothing, and a write in the same turn
            // commits.
            s.put("after", b"later data", CONFIRMED).unwrap();
            commit(&turns);
        }
        let (s, _turns) = open_sqlite(&p);
        (case.check)(&s);
        assert_eq!(s.get("before").unwrap().as_deref(), Some(&b"earlier data"[..]), "{}", case.name);
        assert_eq!(s.get("after").unwrap().as_deref(), Some(&b"later data"[..]), "{}", case.name);
    }
    eprintln!("SQLite backend: {} boundaries", cases.len());
}

/// The bug of issue 8: a value of about 1 MB through the typed API (a CBOR string of 1,000,000 characters)
/// and a 1.1 MB BLOB of `0xff` bytes through SQL, several in one turn, overwritten in the next: each commit
/// holds every row before and after, well beyond one row's limit, and must commit all the same. Point-in-time
/// recovery then restores the state before the overwrite.
#[test]
fn large_values_commit_and_their_history_restores() {
    let p = db_path("large_values");
    let big = "x".repeat(1_000_000);
    let bookmark;
    {
        let (s, turns) = open_sqlite(&p);
        let storage = Storage::sqlite(s.clone());
        s.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)", &[]).unwrap();
        commit(&turns);
        for i in 0..3 {
            block_on(storage.put(&format!("k{i}"), &big)).unwrap();
            s.exec(
                "INSERT INTO t VALUES (?1, ?2)",
                &[SqlValue::Integer(i), SqlValue::Blob(vec![0xff; 1_100_000])],
            )
            .unwrap();
        }
        commit(&turns);
        bookmark = block_on(storage.get_current_bookmark()).unwrap();
        for i in 0..3 {
            block_on(storage.put(&format!("k{i}"), &"y".repeat(1_000_000))).unwrap();
            s.exec(
                "UPDATE t SET b = ?1 WHERE id = ?2",
                &[SqlValue::Blob(vec![0xee; 1_100_000]), SqlValue::Integer(i)],
            )
            .unwrap();
        }
        commit(&turns);
        assert_eq!(block_on(storage.get::<String>("k0")).unwrap().unwrap().as_bytes()[0], b'y');
        block_on(storage.on_next_session_restore_bookmark(&bookmark)).unwrap();
        commit(&turns);
    }
    let (s, _turns) = open_sqlite(&p);
    let storage = Storage::sqlite(s.clone());
    for i in 0..3 {
        assert_eq!(block_on(storage.get::<String>(&format!("k{i}"))).unwrap().as_deref(), Some(big.as_str()));
        match s
            .exec("SELECT b FROM t WHERE id = ?1", &[SqlValue::Integer(i)])
            .unwrap()
            .one()
            .unwrap()
            .values()
        {
            [SqlValue::Blob(b)] => assert!(b.len() == 1_100_000 && b.iter().all(|&x| x == 0xff)),
            other => panic!("{other:?}"),
        }
    }
}

// ----- the KV backend --------------------------------------------------------------------------------------

fn open_kv(p: &Path) -> (Storage, ActorCache, Arc<ManualTurns>) {
    let store = SqliteKvStore::open(&DatabaseLocation::file(p), Arc::new(DurableOnReturn)).unwrap();
    let turns = Arc::new(ManualTurns::default());
    let cache = ActorCache::new(Arc::new(store), turns.clone(), ActorCacheOptions::default());
    (Storage::kv(cache.clone()), cache, turns)
}

/// A write to a KV-backend cache, at or over a limit.
type KvWrite = Box<dyn Fn(&ActorCache) -> Result<(), Error>>;

/// A limit of the KV backend (§2.1, §11).
struct KvCase {
    name: &'static str,
    at: KvWrite,
    over: KvWrite,
    message: String,
    check: Box<dyn Fn(&ActorCache)>,
}

fn kv_cases() -> Vec<KvCase> {
    use crate::storage::actor_cache::{GetOptions, PutOptions};
    let put = |c: &ActorCache, k: &str, v: &[u8]| block_on(c.put(k, v, PutOptions::default()));
    let keys = |prefix: &str, n: usize| (0..n).map(|i| format!("{prefix}{i:03}")).collect::<Vec<_>>();
    vec![
        KvCase {
            name: "key size (§2.1: 2048 bytes), put",
            at: Box::new(move |c| put(c, &"k".repeat(KEY_SIZE_MAX), b"v")),
            over: Box::new(move |c| put(c, &"k".repeat(KEY_SIZE_MAX + 1), b"v")),
            message: format!(
                "Keys cannot be larger than 2048 bytes. A key of size {} was provided.",
                KEY_SIZE_MAX + 1
            ),
            check: Box::new(|c| {
                let got = block_on(c.get(&"k".repeat(KEY_SIZE_MAX), GetOptions::default())).unwrap();
                assert_eq!(got.as_deref(), Some(&b"v"[..]));
            }),
        },
        KvCase {
            name: "key size, get and delete",
            at: Box::new(|c| {
                block_on(c.get(&"g".repeat(KEY_SIZE_MAX), GetOptions::default()))?;
                block_on(c.delete(&"g".repeat(KEY_SIZE_MAX), PutOptions::default())).map(|_| ())
            }),
            over: Box::new(|c| {
                block_on(c.get(&"g".repeat(KEY_SIZE_MAX + 1), GetOptions::default())).map(|_| ())
            }),
            message: format!(
                "Keys cannot be larger than 2048 bytes. A key of size {} was provided.",
                KEY_SIZE_MAX + 1
            ),
            check: Box::new(|_| {}),
        },
        KvCase {
            name: "value size (§2.1: 131072 bytes)",
            at: Box::new(move |c| put(c, "v", &vec![0xff; VALUE_SIZE_MAX])),
            over: Box::new(move |c| put(c, "w", &vec![0xff; VALUE_SIZE_MAX + 1])),
            message: format!(
                "Values cannot be larger than 131072 bytes. A value of size {} was provided.",
                VALUE_SIZE_MAX + 1
            ),
            check: Box::new(|c| {
                let got = block_on(c.get("v", GetOptions::default())).unwrap();
                assert_eq!(got.map(|v| v.len()), Some(VALUE_SIZE_MAX));
                assert_eq!(block_on(c.get("w", GetOptions::default())).unwrap(), None);
            }),
        },
        KvCase {
            name: "pairs of a multi-put (§2.1, §11: 128)",
            at: Box::new(move |c| {
                let ks = keys("p", MULTI_KEYS_MAX);
                let pairs: Vec<(&str, &[u8])> = ks.iter().map(|k| (k.as_str(), &b"1"[..])).collect();
                block_on(c.put_multiple(&pairs, PutOptions::default()))
            }),
            over: Box::new(move |c| {
                let ks = keys("q", MULTI_KEYS_MAX + 1);
                let pairs: Vec<(&str, &[u8])> = ks.iter().map(|k| (k.as_str(), &b"1"[..])).collect();
                block_on(c.put_multiple(&pairs, PutOptions::default()))
            }),
            message: format!(
                "Maximum number of key value pairs is 128. {} pairs were provided.",
                MULTI_KEYS_MAX + 1
            ),
            check: Box::new(move |c| {
                let ks = keys("p", MULTI_KEYS_MAX);
                let refs: Vec<&str> = ks.iter().map(String::as_str).collect();
                assert_eq!(
                    block_on(c.get_multiple(&refs, GetOptions::default())).unwrap().len(),
                    MULTI_KEYS_MAX
                );
                assert!(block_on(c.get("q000", GetOptions::default())).unwrap().is_none());
            }),
        },
        KvCase {
            name: "keys of a multi-get (§2.1: 128)",
            at: Box::new(move |c| {
                let ks = keys("p", MULTI_KEYS_MAX);
                let refs: Vec<&str> = ks.iter().map(String::as_str).collect();
                block_on(c.get_multiple(&refs, GetOptions::default())).map(|_| ())
            }),
            over: Box::new(move |c| {
                let ks = keys("p", MULTI_KEYS_MAX + 1);
                let refs: Vec<&str> = ks.iter().map(String::as_str).collect();
                block_on(c.get_multiple(&refs, GetOptions::default())).map(|_| ())
            }),
            message: format!(
                "Maximum number of key value pairs is 128. {} pairs were provided.",
                MULTI_KEYS_MAX + 1
            ),
            check: Box::new(|_| {}),
        },
        KvCase {
            name: "keys of a multi-delete (§11: 128)",
            at: Box::new(move |c| {
                let ks = keys("d", MULTI_KEYS_MAX);
                let pairs: Vec<(&str, &[u8])> = ks.iter().map(|k| (k.as_str(), &b"1"[..])).collect();
                block_on(c.put_multiple(&pairs, PutOptions::default()))?;
                let refs: Vec<&str> = ks.iter().map(String::as_str).collect();
                block_on(c.delete_multiple(&refs, PutOptions::default())).map(|_| ())
            }),
            over: Box::new(move |c| {
                let ks = keys("p", MULTI_KEYS_MAX + 1);
                let refs: Vec<&str> = ks.iter().map(String::as_str).collect();
                block_on(c.delete_multiple(&refs, PutOptions::default())).map(|_| ())
            }),
            message: format!(
                "Maximum number of key value pairs is 128. {} pairs were provided.",
                MULTI_KEYS_MAX + 1
            ),
            check: Box::new(|c| {
                assert!(block_on(c.get("d000", GetOptions::default())).unwrap().is_none());
                assert!(block_on(c.get("p000", GetOptions::default())).unwrap().is_some(), "nothing deleted");
            }),
        },
    ]
}

#[test]
fn kv_backend_limits_commit_at_the_boundary_and_refuse_past_it() {
    use crate::storage::actor_cache::{GetOptions, PutOptions};
    let cases = kv_cases();
    let p = db_path("kv");
    // One object for all cases, so that each later case also shows the earlier data survived.
    {
        let (_storage, cache, turns) = open_kv(&p);
        block_on(cache.put("before", b"earlier data", PutOptions::default())).unwrap();
        commit(&turns);
        for case in &cases {
            (case.at)(&cache).unwrap_or_else(|e| panic!("{}: refused at the limit: {e}", case.name));
            commit(&turns);
            expect_error((case.over)(&cache), &case.message, case.name);
            block_on(cache.put(&format!("after {}", case.name), b"later", PutOptions::default())).unwrap();
            commit(&turns);
        }
    }
    let (_storage, cache, _turns) = open_kv(&p);
    for case in &cases {
        (case.check)(&cache);
        let after = block_on(cache.get(&format!("after {}", case.name), GetOptions::default())).unwrap();
        assert_eq!(after.as_deref(), Some(&b"later"[..]), "{}", case.name);
    }
    let before = block_on(cache.get("before", GetOptions::default())).unwrap();
    assert_eq!(before.as_deref(), Some(&b"earlier data"[..]));
    eprintln!("KV backend: {} boundaries", cases.len());
}
