//! The SQL API of SQLite-backed objects (`storage::sql`), against the spec (`durable-objects.md` §3.2, §3.5,
//! §11, Appendix A) and the real runtime's results.
//!
//! Tests are named after the statement they check (`sql_3_5_multi_statement_params_on_last_only`,
//! `appendix_a_16_direct_sql_writes_call_before_write`, …). Databases are real files under
//! the crate's test directory (`crate::test_dir`), opened through `DatabaseLocation::file` and set up with `prepare_connection`, as
//! the runtime does. The conformance test replays the oracle's SQL cases (`tests/data/oracle_sql.json`,
//! copied from the oracle so that tests never read outside the repository).

use std::cell::Cell;

use crate::error::messages;
use crate::error::{Error, ErrorKind};
use crate::storage::sql::{self, Cursor, SqlValue};
use crate::storage::{kv, value, DatabaseLocation};
use rusqlite::limits::Limit;
use rusqlite::{Connection, ErrorCode};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------------------
// Helpers

/// A fresh database file named after the test, opened and prepared as the runtime does.
fn fresh_db(name: &str) -> Connection {
    let dir = crate::test_dir().join("sql-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.db"));
    for suffix in ["", "-journal", "-wal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let conn = DatabaseLocation::file(&path).open().unwrap();
    sql::prepare_connection(&conn).unwrap();
    conn
}

/// `exec` with no bindings and a `before_write` that does nothing.
fn exec(conn: &Connection, query: &str) -> Result<Cursor, Error> {
    sql::exec(conn, query, &[], &mut || Ok(()))
}

fn exec_with(conn: &Connection, query: &str, params: &[SqlValue]) -> Result<Cursor, Error> {
    sql::exec(conn, query, params, &mut || Ok(()))
}

/// The message of `exec`'s error, checking that it is a plain `Error` with no flags.
fn exec_err(conn: &Connection, query: &str) -> String {
    let e = exec(conn, query).err().unwrap_or_else(|| panic!("{query:?} should fail"));
    assert_eq!(e.kind(), ErrorKind::Error, "{query:?}: {e}");
    assert!(
        !e.retryable() && !e.overloaded() && !e.durable_object_reset() && !e.remote(),
        "{query:?}: {e:?}"
    );
    e.message().to_owned()
}

fn ok(conn: &Connection, query: &str) -> Cursor {
    exec(conn, query).unwrap_or_else(|e| panic!("{query:?}: {e}"))
}

/// The rows of `query` as arrays of values.
fn values(conn: &Connection, query: &str) -> Vec<Vec<SqlValue>> {
    ok(conn, query).raw().to_array()
}

/// The single value of a one-row, one-column query.
fn scalar(conn: &Connection, query: &str) -> SqlValue {
    let row = ok(conn, query).one().unwrap();
    assert_eq!(row.values().len(), 1, "{query:?}");
    row.values()[0].clone()
}

const NOT_AUTHORIZED: &str = "not authorized: SQLITE_AUTH";

fn assert_not_authorized(conn: &Connection, queries: &[&str]) {
    for q in queries {
        assert_eq!(exec_err(conn, q), NOT_AUTHORIZED, "{q:?}");
    }
}

fn assert_allowed(conn: &Connection, queries: &[&str]) {
    for q in queries {
        if let Err(e) = exec(conn, q) {
            panic!("{q:?} should be allowed: {e}");
        }
    }
}

/// Creates `_cf_KV` with one pair, as the KV API would (trusted code, outside `exec`).
fn with_kv_pair(conn: &Connection) {
    kv::put(conn, "k", &value::encode(&1).unwrap()).unwrap();
}

// ---------------------------------------------------------------------------------------------------------
// §3.5: statements, bindings, results

#[test]
fn sql_3_5_multi_statement_runs_all_and_returns_the_last() {
    let conn = fresh_db("multi_all");
    let mut c =
        ok(&conn, "CREATE TABLE m (x); INSERT INTO m VALUES (1); INSERT INTO m VALUES (2); SELECT * FROM m;");
    assert_eq!(c.column_names(), ["x"]);
    assert_eq!(c.raw().to_array(), [[SqlValue::Integer(1)], [SqlValue::Integer(2)]]);
    // An earlier statement's rows are discarded.
    let mut c = ok(&conn, "SELECT 1 AS a; SELECT 2 AS b");
    assert_eq!(c.column_names(), ["b"]);
    assert_eq!(c.raw().to_array(), [[SqlValue::Integer(2)]]);
    // Statements are parsed one at a time: the second depends on the first having run.
    ok(&conn, "CREATE TABLE later (y); INSERT INTO later VALUES (7)");
    assert_eq!(scalar(&conn, "SELECT y FROM later"), SqlValue::Integer(7));
    // A trigger body's semicolons belong to its statement.
    ok(
        &conn,
        "CREATE TRIGGER tr AFTER INSERT ON later BEGIN INSERT INTO m VALUES (new.y); END; \
         INSERT INTO later VALUES (8)",
    );
    assert_eq!(scalar(&conn, "SELECT max(x) FROM m"), SqlValue::Integer(8));
}

#[test]
fn sql_3_5_multi_statement_params_on_last_only() {
    let conn = fresh_db("multi_params");
    ok(&conn, "CREATE TABLE m (x)");
    let e = exec_with(&conn, "INSERT INTO m VALUES (?); INSERT INTO m VALUES (?)", &[3.into(), 4.into()]);
    assert_eq!(e.unwrap_err().message(), messages::ONLY_LAST_STATEMENT_PARAMETERS);
    assert_eq!(scalar(&conn, "SELECT count(*) FROM m"), SqlValue::Integer(0));
    // Bindings go to the last statement.
    let c = exec_with(&conn, "INSERT INTO m VALUES (1); INSERT INTO m VALUES (?) RETURNING x", &[5.into()]);
    assert_eq!(c.unwrap().one().unwrap().values(), [SqlValue::Integer(5)]);
    // A statement with parameters followed by a comment is not the last one (workerd's rule).
    let e = exec_with(&conn, "SELECT ?; -- trailing", &[1.into()]).unwrap_err();
    assert_eq!(e.message(), messages::ONLY_LAST_STATEMENT_PARAMETERS);
}

#[test]
fn sql_3_5_statements_before_an_error_stay_applied() {
    let conn = fresh_db("multi_error");
    ok(&conn, "CREATE TABLE m (x)");
    assert_eq!(
        exec_err(&conn, "INSERT INTO m VALUES (5); SELECT * FROM nope"),
        "no such table: nope: SQLITE_ERROR"
    );
    assert_eq!(values(&conn, "SELECT x FROM m"), [[SqlValue::Integer(5)]]);
}

#[test]
fn sql_3_5_no_statement() {
    let conn = fresh_db("no_statement");
    for q in [
        "",
        "   ",
        "   ;  ",
        ";",
        "-- only a comment",
        "/* c */",
        "\n\t",
        "SELECT 1; -- c",
        "SELECT 1;;",
        "SELECT 1; ;",
    ] {
        assert_eq!(exec_err(&conn, q), messages::NO_STATEMENT, "{q:?}");
    }
    // A final semicolon and white space after it are fine.
    for q in ["SELECT 1", "SELECT 1;", "SELECT 1;  \n\t ", "  -- c\n SELECT 1"] {
        assert_eq!(scalar(&conn, q), SqlValue::Integer(1), "{q:?}");
    }
}

#[test]
fn sql_3_5_wrong_parameter_count() {
    let conn = fresh_db("param_count");
    for params in [&[][..], &[1.into(), 2.into()]] {
        let e = exec_with(&conn, "SELECT ?", params).unwrap_err();
        assert_eq!(e.message(), messages::WRONG_PARAMETER_COUNT);
    }
    assert_eq!(exec_err(&conn, "SELECT ?100"), messages::WRONG_PARAMETER_COUNT);
    // Named and numbered parameters count by their largest index.
    let row = exec_with(&conn, "SELECT :name", &[1.0.into()]).unwrap().one().unwrap();
    assert_eq!(row.get(":name"), Some(&SqlValue::Real(1.0)));
    let row = exec_with(&conn, "SELECT ?2, ?1", &["a".into(), "b".into()]).unwrap().one().unwrap();
    assert_eq!(row.values(), [SqlValue::Text("b".into()), SqlValue::Text("a".into())]);
}

#[test]
fn sql_3_5_error_format() {
    let conn = fresh_db("error_format");
    // `<message>[ at offset N]: <CODE>[ (extended: <CODE>)]`
    assert_eq!(exec_err(&conn, "SELECT * bunk"), "near \"bunk\": syntax error at offset 9: SQLITE_ERROR");
    assert_eq!(exec_err(&conn, "SELEC 1"), "near \"SELEC\": syntax error at offset 0: SQLITE_ERROR");
    assert_eq!(exec_err(&conn, "SELECT * FROM nope"), "no such table: nope: SQLITE_ERROR");
    // The offset is relative to the statement that failed.
    assert_eq!(
        exec_err(&conn, "SELECT 1;  SELECT * bunk"),
        "near \"bunk\": syntax error at offset 9: SQLITE_ERROR"
    );
    ok(&conn, "CREATE TABLE u (id INTEGER PRIMARY KEY, v TEXT UNIQUE NOT NULL, n CHECK (n > 0))");
    ok(&conn, "INSERT INTO u VALUES (1, 'x', 1)");
    let cases = [
        (
            "INSERT INTO u VALUES (2, 'x', 1)",
            "UNIQUE constraint failed: u.v: SQLITE_CONSTRAINT (extended: SQLITE_CONSTRAINT_UNIQUE)",
        ),
        (
            "INSERT INTO u VALUES (1, 'y', 1)",
            "UNIQUE constraint failed: u.id: SQLITE_CONSTRAINT (extended: SQLITE_CONSTRAINT_PRIMARYKEY)",
        ),
        (
            "INSERT INTO u VALUES (3, NULL, 1)",
            "NOT NULL constraint failed: u.v: SQLITE_CONSTRAINT (extended: SQLITE_CONSTRAINT_NOTNULL)",
        ),
        (
            "INSERT INTO u VALUES (3, 'z', 0)",
            "CHECK constraint failed: n > 0: SQLITE_CONSTRAINT (extended: SQLITE_CONSTRAINT_CHECK)",
        ),
    ];
    for (q, message) in cases {
        assert_eq!(exec_err(&conn, q), message, "{q:?}");
    }
}

#[test]
fn sql_3_5_binding_types() {
    let conn = fresh_db("binding_types");
    let params = [
        SqlValue::Null,
        SqlValue::Real(1.0), // a JavaScript number
        SqlValue::Integer(1),
        SqlValue::Text("héllo".into()),
        SqlValue::Text(String::new()),
        SqlValue::Blob(vec![0, 1, 255]),
        SqlValue::Blob(Vec::new()),
    ];
    let query = "SELECT typeof(?1), typeof(?2), typeof(?3), typeof(?4), typeof(?5), typeof(?6), typeof(?7), \
                 ?1, ?2, ?3, ?4, ?5, ?6, ?7";
    let c = exec_with(&conn, query, &params);
    let row = c.unwrap().one().unwrap();
    let types: Vec<_> = ["null", "real", "integer", "text", "text", "blob", "blob"]
        .iter()
        .map(|t| SqlValue::Text((*t).into()))
        .collect();
    assert_eq!(&row.values()[..7], types.as_slice());
    assert_eq!(&row.values()[7..], params.as_slice());
    // Conversions from Rust values.
    assert_eq!(SqlValue::from(None::<i64>), SqlValue::Null);
    assert_eq!(SqlValue::from(Some("a")), SqlValue::Text("a".into()));
    assert_eq!(SqlValue::from(&b"ab"[..]), SqlValue::Blob(b"ab".to_vec()));
    assert_eq!(SqlValue::from(7u32), SqlValue::Integer(7));
    assert_eq!(SqlValue::from(2.5), SqlValue::Real(2.5));
    // `SqlValue` binds through rusqlite too.
    let v: String = conn.query_row("SELECT typeof(?1)", [SqlValue::Real(2.0)], |r| r.get(0)).unwrap();
    assert_eq!(v, "real");
}

#[test]
fn sql_3_5_result_types() {
    let conn = fresh_db("result_types");
    let row =
        ok(&conn, "SELECT 9007199254740993, 1.5, 'text', x'00ff', NULL, CAST('€' AS BLOB)").one().unwrap();
    assert_eq!(
        row.values(),
        [
            SqlValue::Integer(9_007_199_254_740_993),
            SqlValue::Real(1.5),
            SqlValue::Text("text".into()),
            SqlValue::Blob(vec![0, 255]),
            SqlValue::Null,
            SqlValue::Blob("€".as_bytes().to_vec()),
        ]
    );
}

#[test]
fn sql_3_5_writes_happen_at_exec() {
    let conn = fresh_db("writes_at_exec");
    ok(&conn, "CREATE TABLE t (x)");
    let returning = ok(&conn, "INSERT INTO t VALUES (1), (2) RETURNING x");
    drop(returning); // never iterated
    assert_eq!(scalar(&conn, "SELECT count(*) FROM t"), SqlValue::Integer(2));
}

#[test]
fn sql_3_5_cursor_is_materialised_at_exec() {
    // dosim's documented decision: a cursor holds the rows as of exec, and its counters are final at once.
    let conn = fresh_db("materialised");
    ok(&conn, "CREATE TABLE t (x); INSERT INTO t VALUES (1), (2)");
    let mut c = ok(&conn, "SELECT x FROM t");
    assert_eq!((c.rows_read(), c.rows_written()), (2, 0));
    ok(&conn, "INSERT INTO t VALUES (3)");
    assert_eq!(c.raw().to_array(), [[SqlValue::Integer(1)], [SqlValue::Integer(2)]]);
    assert_eq!((c.rows_read(), c.rows_written()), (2, 0));
}

#[test]
fn sql_3_5_cursor_next_iteration_and_to_array() {
    let conn = fresh_db("cursor_iteration");
    ok(&conn, "CREATE TABLE t (x); INSERT INTO t VALUES (1), (2), (3)");
    let mut c = ok(&conn, "SELECT x FROM t ORDER BY x");
    assert_eq!(c.next().unwrap().get("x"), Some(&SqlValue::Integer(1)));
    let rest = c.to_array();
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[1].get("x"), Some(&SqlValue::Integer(3)));
    assert!(c.next().is_none());
    assert!(c.to_array().is_empty());
    // `for … of`
    let sum: i64 = ok(&conn, "SELECT x FROM t")
        .map(|row| match row.get("x") {
            Some(SqlValue::Integer(i)) => *i,
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(sum, 6);
    // A statement without result columns gives an empty cursor.
    let mut c = ok(&conn, "UPDATE t SET x = x + 1");
    assert!(c.column_names().is_empty());
    assert!(c.next().is_none());
}

#[test]
fn sql_3_5_one() {
    let conn = fresh_db("one");
    ok(&conn, "CREATE TABLE t (x); INSERT INTO t VALUES (1), (2)");
    assert_eq!(
        ok(&conn, "SELECT x FROM t WHERE x = 99").one().unwrap_err().message(),
        messages::ONE_GOT_NONE
    );
    let mut c = ok(&conn, "SELECT x FROM t ORDER BY x");
    let e = c.one().unwrap_err();
    assert_eq!((e.kind(), e.message()), (ErrorKind::Error, messages::ONE_GOT_MANY));
    assert!(c.next().is_none(), "one() with several rows ends the cursor");
    // one() counts the rows that remain.
    let mut c = ok(&conn, "SELECT x FROM t ORDER BY x");
    c.next();
    assert_eq!(c.one().unwrap().get("x"), Some(&SqlValue::Integer(2)));
}

#[test]
fn sql_3_5_raw_shares_the_cursor_position() {
    let conn = fresh_db("raw");
    ok(&conn, "CREATE TABLE t (x, y); INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')");
    let mut c = ok(&conn, "SELECT x, y FROM t ORDER BY x");
    assert_eq!(c.next().unwrap().get("y"), Some(&SqlValue::Text("a".into())));
    assert_eq!(c.raw().next().unwrap(), [SqlValue::Integer(2), SqlValue::Text("b".into())]);
    assert_eq!(c.next().unwrap().get("x"), Some(&SqlValue::Integer(3)));
    assert_eq!(c.raw().to_array(), [[SqlValue::Integer(4), SqlValue::Text("d".into())]]);
    assert!(c.next().is_none());
}

#[test]
fn sql_3_5_column_names_may_repeat_and_the_later_column_wins() {
    let conn = fresh_db("duplicate_columns");
    let row = ok(&conn, "SELECT 1 AS a, 2 AS b, 3 AS a").one().unwrap();
    assert_eq!(row.columns(), ["a", "b", "a"]);
    assert_eq!(row.values(), [SqlValue::Integer(1), SqlValue::Integer(2), SqlValue::Integer(3)]);
    assert_eq!(row.get("a"), Some(&SqlValue::Integer(3)));
    assert_eq!(row.get("b"), Some(&SqlValue::Integer(2)));
    assert_eq!(row.get("c"), None);
    // A join of two tables with a shared column name.
    ok(&conn, "CREATE TABLE l (id, v); CREATE TABLE r (id, w)");
    ok(&conn, "INSERT INTO l VALUES (1, 'l'); INSERT INTO r VALUES (2, 'r')");
    let c = ok(&conn, "SELECT * FROM l, r");
    assert_eq!(c.column_names(), ["id", "v", "id", "w"]);
    let row = { c }.one().unwrap();
    assert_eq!(row.get("id"), Some(&SqlValue::Integer(2)));
}

#[test]
fn sql_3_5_database_size() {
    let conn = fresh_db("database_size");
    let size = |conn: &Connection| sql::database_size(conn).unwrap();
    let pragma = |name: &str| -> u64 {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0)).unwrap().try_into().unwrap()
    };
    assert_eq!(size(&conn), 0, "a new file has no pages yet");
    ok(&conn, "CREATE TABLE first (x)");
    let before = size(&conn);
    ok(&conn, "CREATE TABLE t (x)");
    // One new table adds one page.
    assert_eq!(size(&conn), before + pragma("page_size"));
    ok(&conn, "INSERT INTO t SELECT zeroblob(10000) FROM (VALUES (1), (2), (3))");
    let full = size(&conn);
    assert_eq!(full, (pragma("page_count") - pragma("freelist_count")) * pragma("page_size"));
    // Free pages do not count.
    ok(&conn, "DELETE FROM t");
    assert!(pragma("freelist_count") > 0);
    assert_eq!(size(&conn), (pragma("page_count") - pragma("freelist_count")) * pragma("page_size"));
    assert!(size(&conn) < full);
}

#[test]
fn sql_3_5_transaction_statements_are_refused() {
    let conn = fresh_db("transactions");
    ok(&conn, "CREATE TABLE t (x)");
    for q in [
        "BEGIN",
        "BEGIN TRANSACTION",
        "BEGIN IMMEDIATE",
        "BEGIN EXCLUSIVE",
        "COMMIT",
        "END",
        "ROLLBACK",
        "SAVEPOINT sp1",
        "RELEASE sp1",
        "ROLLBACK TO sp1",
        "INSERT INTO t VALUES (1); BEGIN",
    ] {
        assert_eq!(exec_err(&conn, q), messages::TRANSACTION_STATEMENTS, "{q:?}");
    }
    assert!(conn.is_autocommit());
}

// ---------------------------------------------------------------------------------------------------------
// §3.5: the authorizer

#[test]
fn sql_3_5_reserved_cf_names_are_refused() {
    let conn = fresh_db("reserved_names");
    with_kv_pair(&conn);
    ok(&conn, "CREATE TABLE t (x)");
    // Reading a reserved table names the first column read.
    for q in [
        "SELECT * FROM _cf_KV",
        "SELECT * FROM _CF_kv",
        "SELECT value FROM _cf_KV",
        "SELECT x FROM t WHERE x IN (SELECT key FROM _cf_KV)",
    ] {
        assert!(exec_err(&conn, q).starts_with("access to _cf_KV."), "{q:?}");
        assert!(exec_err(&conn, q).ends_with(" is prohibited: SQLITE_AUTH"), "{q:?}");
    }
    // With no column read, SQLite asks about the table alone and reports a plain refusal.
    assert_eq!(exec_err(&conn, "SELECT count(*) FROM _cf_KV"), NOT_AUTHORIZED);
    assert_not_authorized(
        &conn,
        &[
            "CREATE TABLE _cf_mine (x)",
            "CREATE TABLE _CF_Mine (x)",
            "CREATE TABLE \"_cf_quoted\" (x)",
            "CREATE INDEX _cf_i ON t (x)",
            "CREATE INDEX i ON _cf_KV (value)",
            "CREATE VIEW _cf_v AS SELECT 1",
            "CREATE TRIGGER _cf_tr AFTER INSERT ON t BEGIN SELECT 1; END",
            "CREATE TRIGGER tr AFTER INSERT ON _cf_KV BEGIN SELECT 1; END",
            "CREATE VIRTUAL TABLE _cf_fts USING fts5 (a)",
            "INSERT INTO _cf_KV VALUES ('a', x'00')",
            "DELETE FROM _cf_KV",
            "UPDATE _cf_KV SET value = NULL",
            "DROP TABLE _cf_KV",
            "ALTER TABLE _cf_KV RENAME TO kv",
            "ALTER TABLE _cf_KV ADD COLUMN c",
            "ALTER TABLE t RENAME TO _cf_t",
            "ALTER TABLE t RENAME TO \"_CF_t\"",
            "ALTER TABLE main.t RENAME TO [_cf_t]",
            "ALTER /* c */ TABLE t RENAME -- c\n TO `_cf_t`",
            "PRAGMA table_info(_cf_KV)",
            "PRAGMA table_xinfo(_cf_KV)",
            "SELECT * FROM pragma_table_info('_cf_KV')",
            "PRAGMA index_list(_cf_KV)",
            "PRAGMA foreign_key_list(_cf_KV)",
            "PRAGMA foreign_key_check(_cf_KV)",
            "PRAGMA quick_check(_cf_KV)",
        ],
    );
    // The schema table itself is readable, and names `_cf_KV`.
    assert_eq!(
        values(&conn, "SELECT name FROM sqlite_master WHERE name LIKE '\\_cf%' ESCAPE '\\'"),
        [[SqlValue::Text("_cf_KV".into())]]
    );
    // Nothing was changed, and names that merely contain `_cf_` are fine.
    assert_eq!(kv::count(&conn).unwrap(), 1);
    assert_allowed(
        &conn,
        &["CREATE TABLE my_cf_table (x)", "ALTER TABLE t RENAME TO t_cf_", "ALTER TABLE t_cf_ RENAME TO t"],
    );
    // As in workerd, `REINDEX <table>` is asked about each index by name, and `_cf_KV`'s key index has an
    // unreserved name: rebuilding it reveals and changes nothing.
    assert_allowed(&conn, &["REINDEX _cf_KV"]);
    // Column names are not reserved, but dropping one is asked about by its name (workerd reads the same
    // argument): `_cf_` columns can be added, not dropped.
    assert_not_authorized(&conn, &["ALTER TABLE t ADD COLUMN _cf_c; ALTER TABLE t DROP COLUMN _cf_c"]);
    assert_eq!(values(&conn, "SELECT name FROM pragma_table_info('t')").len(), 2);
}

#[test]
fn sql_3_5_attach_detach_and_other_databases_are_refused() {
    let conn = fresh_db("attach");
    assert_not_authorized(
        &conn,
        &["ATTACH DATABASE 'x.db' AS x", "ATTACH ':memory:' AS m", "DETACH x", "DETACH main"],
    );
    assert_eq!(conn.limit(Limit::SQLITE_LIMIT_ATTACHED).unwrap(), sql::MAX_ATTACHED);
    ok(&conn, "CREATE TABLE main.t (x)");
    assert_allowed(&conn, &["SELECT * FROM main.t", "INSERT INTO main.t VALUES (1)"]);
    assert_eq!(exec_err(&conn, "SELECT * FROM other.t"), "no such table: other.t: SQLITE_ERROR");
}

#[test]
fn sql_3_5_temp_objects_are_refused() {
    let conn = fresh_db("temp");
    ok(&conn, "CREATE TABLE t (x)");
    assert_not_authorized(
        &conn,
        &[
            "CREATE TEMP TABLE tt (a)",
            "CREATE TEMPORARY TABLE tt (a)",
            "CREATE TABLE temp.tt (a)",
            "CREATE TEMP VIEW tv AS SELECT 1",
            "CREATE TEMP TRIGGER ttr AFTER INSERT ON t BEGIN SELECT 1; END",
            "PRAGMA temp.table_info(t)",
        ],
    );
}

#[test]
fn sql_3_5_virtual_tables_only_fts5_and_rtree() {
    let conn = fresh_db("vtab");
    assert_allowed(
        &conn,
        &[
            "CREATE VIRTUAL TABLE f USING fts5 (body)",
            "CREATE VIRTUAL TABLE fv USING fts5vocab (f, row)",
            "CREATE VIRTUAL TABLE FU USING FTS5 (body)",
            "CREATE VIRTUAL TABLE r USING rtree (id, x0, x1)",
            "CREATE VIRTUAL TABLE ri USING rtree_i32 (id, x0, x1)",
            "INSERT INTO f VALUES ('hello world')",
            "SELECT highlight(f, 0, '[', ']'), bm25(f), snippet(f, 0, '[', ']', '…', 3) \
             FROM f WHERE f MATCH 'hello'",
            "SELECT rtreecheck('r')",
            "DROP TABLE fv",
        ],
    );
    assert_not_authorized(
        &conn,
        &[
            "CREATE VIRTUAL TABLE f3 USING fts3 (a)",
            "CREATE VIRTUAL TABLE f4 USING fts4 (a)",
            "CREATE VIRTUAL TABLE d USING dbstat",
            "CREATE VIRTUAL TABLE IF NOT EXISTS f3 USING fts3 (a)",
        ],
    );
    // Defensive mode, as workerd sets it: shadow tables are written only by their virtual table.
    assert_eq!(
        exec_err(&conn, "INSERT INTO f_data VALUES (100, x'00')"),
        "table f_data may not be modified: SQLITE_ERROR"
    );
}

#[test]
fn sql_3_5_pragma_allowlist() {
    let conn = fresh_db("pragmas");
    ok(&conn, "CREATE TABLE p (id INTEGER PRIMARY KEY, x); CREATE INDEX p_x ON p (x)");
    ok(&conn, "CREATE TABLE c (p REFERENCES p (id))");
    assert_allowed(
        &conn,
        &[
            "PRAGMA table_list",
            "PRAGMA table_info(p)",
            "PRAGMA table_xinfo(p)",
            "PRAGMA main.table_info(p)",
            "PRAGMA data_version",
            "PRAGMA page_size",
            "PRAGMA foreign_key_list(c)",
            "PRAGMA index_info(p_x)",
            "PRAGMA index_list(p)",
            "PRAGMA index_xinfo(p_x)",
            "PRAGMA foreign_key_check",
            "PRAGMA foreign_key_check(c)",
            "PRAGMA quick_check",
            "PRAGMA quick_check(5)",
            "PRAGMA quick_check(p)",
            "PRAGMA optimize",
            "PRAGMA optimize(0x10002)",
            "PRAGMA optimize = -1",
            "SELECT * FROM pragma_table_info('p')",
        ],
    );
    for pragma in [
        "case_sensitive_like",
        "foreign_keys",
        "defer_foreign_keys",
        "ignore_check_constraints",
        "legacy_alter_table",
        "recursive_triggers",
        "reverse_unordered_selects",
    ] {
        // Read, or set with any of the spellings of a boolean.
        let mut queries = vec![format!("PRAGMA {pragma}")];
        for v in ["true", "false", "yes", "no", "on", "off", "1", "0", "'on'", "\"OFF\"", "TRUE"] {
            queries.push(format!("PRAGMA {pragma} = {v}"));
        }
        let queries: Vec<&str> = queries.iter().map(String::as_str).collect();
        assert_allowed(&conn, &queries);
        assert_not_authorized(&conn, &[&format!("PRAGMA {pragma} = maybe"), &format!("PRAGMA {pragma} = 2")]);
    }
    assert_not_authorized(
        &conn,
        &[
            "PRAGMA journal_mode = DELETE",
            "PRAGMA journal_mode",
            "PRAGMA max_page_count",
            "PRAGMA max_page_count = 10",
            "PRAGMA page_size = 4096",
            "PRAGMA data_version = 3",
            "PRAGMA hard_heap_limit",
            "PRAGMA hard_heap_limit = 1",
            "PRAGMA writable_schema = ON",
            "PRAGMA schema_version",
            "PRAGMA integrity_check",
            "PRAGMA database_list",
            "PRAGMA compile_options",
            "PRAGMA function_list",
            "PRAGMA foreign_key_list",
            "PRAGMA index_list",
            "PRAGMA optimize(abc)",
            "PRAGMA optimize(99999999999)",
            // workerd compares pragma names as written.
            "PRAGMA FOREIGN_KEYS",
        ],
    );
}

#[test]
fn sql_3_5_function_denylist() {
    let conn = fresh_db("functions");
    for name in ["sqlite_version", "sqlite_source_id", "sqlite_compileoption_used"] {
        let arg = if name == "sqlite_compileoption_used" { "'x'" } else { "" };
        let message = format!("not authorized to use function: {name} at offset 7: SQLITE_ERROR");
        assert_eq!(exec_err(&conn, &format!("SELECT {name}({arg})")), message);
    }
    assert_eq!(
        exec_err(&conn, "SELECT sqlite_compileoption_get(0)"),
        "not authorized to use function: sqlite_compileoption_get at offset 7: SQLITE_ERROR"
    );
    // Upper case names the same function.
    assert_eq!(
        exec_err(&conn, "SELECT SQLITE_VERSION()"),
        "not authorized to use function: SQLITE_VERSION at offset 7: SQLITE_ERROR"
    );
    // The bundled SQLite is built without SQLITE_ENABLE_OFFSET_SQL_FUNC, so sqlite_offset does not exist: it
    // fails before the authorizer is asked.
    ok(&conn, "CREATE TABLE t (x)");
    assert_eq!(
        exec_err(&conn, "SELECT sqlite_offset(x) FROM t"),
        "no such function: sqlite_offset at offset 7: SQLITE_ERROR"
    );
    // Core, date, aggregate, window, math and JSON functions are allowed.
    assert_allowed(
        &conn,
        &[
            "SELECT abs(-1), coalesce(NULL, 1), hex('a'), printf('%d', 1), typeof(1), unicode('a')",
            "SELECT zeroblob(1), iif(1, 2, 3), concat('a', 'b'), format('%s', 1)",
            "SELECT date('now'), unixepoch(), strftime('%Y', 'now')",
            "SELECT count(*), sum(x), group_concat(x), row_number() OVER () FROM t",
            "SELECT json_object('a', 1), json_extract('{\"a\":1}', '$.a'), '[1]' -> 0, jsonb('[1]')",
            "SELECT * FROM json_each('[1,2]')",
        ],
    );
    // Math functions are allowed too, but the bundled SQLite is built without SQLITE_ENABLE_MATH_FUNCTIONS:
    // whatever the build, the authorizer does not refuse them.
    for q in ["SELECT sqrt(4)", "SELECT pi()", "SELECT log2(8)", "SELECT trunc(1.5)"] {
        if let Err(e) = exec(&conn, q) {
            assert!(e.message().starts_with("no such function: "), "{q:?}: {e}");
        }
    }
}

const RECURSIVE_SUM: &str =
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10) SELECT sum(i) FROM n";

#[test]
fn sql_3_5_allowed_statements() {
    let conn = fresh_db("allowed");
    assert_allowed(
        &conn,
        &[
            "CREATE TABLE t (id INTEGER PRIMARY KEY, x)",
            "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, x)",
            "CREATE INDEX t_x ON t (x)",
            "CREATE VIEW v AS SELECT x FROM t",
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET x = x + 1 WHERE id = new.id; END",
            "INSERT INTO t (x) VALUES (1), (2)",
            "UPDATE t SET x = 3 WHERE id = 1",
            "DELETE FROM t WHERE id = 2",
            "SELECT * FROM v",
            RECURSIVE_SUM,
            "ALTER TABLE t ADD COLUMN y",
            "ALTER TABLE t RENAME COLUMN y TO z",
            "ALTER TABLE t DROP COLUMN z",
            "ALTER TABLE t RENAME TO t2",
            "REINDEX t_x",
            "ANALYZE",
            "ANALYZE t2",
            "DROP TRIGGER tr",
            "DROP VIEW v",
            "DROP INDEX t_x",
            "DROP TABLE t2",
            "EXPLAIN SELECT 1",
            "EXPLAIN QUERY PLAN SELECT 1",
        ],
    );
    assert_eq!(scalar(&conn, RECURSIVE_SUM), SqlValue::Integer(55));
}

#[test]
fn sql_3_5_rules_apply_only_to_user_sql() {
    let conn = fresh_db("trusted");
    with_kv_pair(&conn);
    // Outside exec the connection is the orchestrator's: reserved tables, pragmas and transactions work.
    conn.execute_batch("BEGIN; SELECT * FROM _cf_KV; PRAGMA journal_mode; SAVEPOINT s; RELEASE s; COMMIT")
        .unwrap();
    conn.query_row("SELECT sqlite_version()", [], |_| Ok(())).unwrap();
    // After an exec that failed, and after one whose before_write panicked, enforcement is off again.
    assert!(exec(&conn, "SELECT * FROM _cf_KV").is_err());
    conn.query_row("SELECT count(*) FROM _cf_KV", [], |_| Ok(())).unwrap();
    ok(&conn, "CREATE TABLE t (x)");
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = sql::exec(&conn, "INSERT INTO t VALUES (1)", &[], &mut || panic!("before_write panics"));
    }));
    assert!(panicked.is_err());
    conn.query_row("SELECT count(*) FROM _cf_KV", [], |_| Ok(())).unwrap();
    assert!(exec(&conn, "SELECT * FROM _cf_KV").is_err());
}

#[test]
fn sql_3_5_before_write_runs_as_trusted_code() {
    let conn = fresh_db("before_write_trusted");
    ok(&conn, "CREATE TABLE t (x)");
    // The orchestrator opens its transaction and may touch its own tables in before_write.
    let mut before_write = || -> Result<(), Error> {
        if conn.is_autocommit() {
            conn.execute_batch("BEGIN").map_err(|e| sql::error_from_rusqlite(&e))?;
        }
        kv::put(&conn, "touched", &value::encode(&true).unwrap())
    };
    let c = sql::exec(&conn, "INSERT INTO t VALUES (1); SELECT * FROM _cf_KV", &[], &mut before_write);
    // Enforcement resumes after before_write returns.
    assert!(c.unwrap_err().message().starts_with("access to _cf_KV."));
    assert!(!conn.is_autocommit());
    assert_eq!(kv::count(&conn).unwrap(), 1);
    conn.execute_batch("COMMIT").unwrap();
}

// ---------------------------------------------------------------------------------------------------------
// §3.5, §11: limits

#[test]
fn sql_3_5_limits_are_installed() {
    let conn = fresh_db("limits");
    let expected = [
        (Limit::SQLITE_LIMIT_LENGTH, sql::MAX_LENGTH, 2_000_000),
        (Limit::SQLITE_LIMIT_SQL_LENGTH, sql::MAX_SQL_LENGTH, 100_000),
        (Limit::SQLITE_LIMIT_COLUMN, sql::MAX_COLUMNS, 100),
        (Limit::SQLITE_LIMIT_EXPR_DEPTH, sql::MAX_EXPR_DEPTH, 100),
        (Limit::SQLITE_LIMIT_COMPOUND_SELECT, sql::MAX_COMPOUND_SELECT, 5),
        (Limit::SQLITE_LIMIT_VDBE_OP, sql::MAX_VDBE_OPS, 25_000),
        (Limit::SQLITE_LIMIT_FUNCTION_ARG, sql::MAX_FUNCTION_ARGS, 32),
        (Limit::SQLITE_LIMIT_ATTACHED, sql::MAX_ATTACHED, 0),
        (Limit::SQLITE_LIMIT_LIKE_PATTERN_LENGTH, sql::MAX_LIKE_PATTERN_LENGTH, 50),
        (Limit::SQLITE_LIMIT_VARIABLE_NUMBER, sql::MAX_VARIABLE_NUMBER, 100),
        (Limit::SQLITE_LIMIT_TRIGGER_DEPTH, sql::MAX_TRIGGER_DEPTH, 10),
    ];
    for (limit, constant, value) in expected {
        assert_eq!(constant, value, "{limit:?}");
        assert_eq!(conn.limit(limit).unwrap(), value, "{limit:?}");
    }
    assert_eq!(sql::MAX_LENGTH as usize, value::SQLITE_ROW_SIZE_MAX);
}

#[test]
fn sql_3_5_limit_length() {
    let conn = fresh_db("limit_length");
    let max = sql::MAX_LENGTH as usize;
    assert_eq!(scalar(&conn, &format!("SELECT length(zeroblob({max}))")), SqlValue::Integer(max as i64));
    assert_eq!(
        exec_err(&conn, &format!("SELECT zeroblob({})", max + 1)),
        "string or blob too big: SQLITE_TOOBIG"
    );
    let e = exec_with(&conn, "SELECT length(?)", &[SqlValue::Blob(vec![0; max + 1])]).unwrap_err();
    assert_eq!(e.message(), "string or blob too big: SQLITE_TOOBIG");
    let e = exec_with(&conn, "SELECT length(?)", &[SqlValue::Text("a".repeat(max + 1))]).unwrap_err();
    assert_eq!(e.message(), "string or blob too big: SQLITE_TOOBIG");
}

#[test]
fn appendix_a_03_oversized_row_is_sqlite_toobig_and_not_stored() {
    let conn = fresh_db("limit_row");
    ok(&conn, "CREATE TABLE t (k, v)");
    // Each value fits, the row does not.
    let half = SqlValue::Blob(vec![1; sql::MAX_LENGTH as usize / 2 + 10]);
    let e = exec_with(&conn, "INSERT INTO t VALUES (?, ?)", &[half.clone(), half]).unwrap_err();
    assert_eq!(e.message(), "string or blob too big: SQLITE_TOOBIG");
    assert_eq!(scalar(&conn, "SELECT count(*) FROM t"), SqlValue::Integer(0));
}

#[test]
fn sql_3_5_limit_sql_length() {
    let conn = fresh_db("limit_sql_length");
    let max = sql::MAX_SQL_LENGTH as usize;
    let query = |len: usize| format!("SELECT 1{}", " ".repeat(len - "SELECT 1".len()));
    assert_eq!(scalar(&conn, &query(max)), SqlValue::Integer(1));
    assert_eq!(exec_err(&conn, &query(max + 1)), "statement too long: SQLITE_TOOBIG");
    // The limit applies to the text still to be parsed, as in workerd, which hands SQLite the remaining code.
    let long_tail = format!("SELECT 1; {}", query(max - 5));
    assert_eq!(exec_err(&conn, &long_tail), "statement too long: SQLITE_TOOBIG");
}

#[test]
fn sql_3_5_limit_columns() {
    let conn = fresh_db("limit_columns");
    let columns = |n: usize| (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>().join(", ");
    ok(&conn, &format!("CREATE TABLE ok ({})", columns(100)));
    assert_eq!(
        exec_err(&conn, &format!("CREATE TABLE wide ({})", columns(101))),
        "too many columns on wide: SQLITE_ERROR"
    );
    let select = |n: usize| format!("SELECT {}", vec!["1"; n].join(", "));
    ok(&conn, &select(100));
    assert_eq!(exec_err(&conn, &select(101)), "too many columns in result set: SQLITE_ERROR");
}

#[test]
fn sql_3_5_limit_expression_depth() {
    let conn = fresh_db("limit_expr_depth");
    let sum = |terms: usize| format!("SELECT 1{}", "+1".repeat(terms));
    assert_eq!(scalar(&conn, &sum(99)), SqlValue::Integer(100));
    assert_eq!(exec_err(&conn, &sum(100)), "Expression tree is too large (maximum depth 100): SQLITE_ERROR");
}

#[test]
fn sql_3_5_limit_compound_select() {
    let conn = fresh_db("limit_compound");
    ok(&conn, &format!("SELECT 1{}", " UNION ALL SELECT 1".repeat(4)));
    let six = format!("SELECT 1{}", " UNION ALL SELECT 1".repeat(5));
    assert_eq!(exec_err(&conn, &six), "too many terms in compound SELECT: SQLITE_ERROR");
}

#[test]
fn sql_3_5_limit_vdbe_ops() {
    let conn = fresh_db("limit_vdbe_ops");
    let values = |rows: usize| format!("SELECT count(*) FROM (VALUES {})", vec!["(1)"; rows].join(","));
    assert_eq!(scalar(&conn, &values(2000)), SqlValue::Integer(2000));
    // SQLite reports a program over SQLITE_LIMIT_VDBE_OP as an allocation failure. It fails while the
    // statement is prepared, so it does not roll back an open transaction (SQLite's own behaviour).
    conn.execute_batch("BEGIN; CREATE TABLE t (x)").unwrap();
    assert_eq!(exec_err(&conn, &values(20_000)), "out of memory: SQLITE_NOMEM");
    assert!(!conn.is_autocommit());
    conn.execute_batch("COMMIT").unwrap();
    conn.set_limit(Limit::SQLITE_LIMIT_VDBE_OP, 1_000_000).unwrap();
    assert_eq!(scalar(&conn, &values(20_000)), SqlValue::Integer(20_000));
}

#[test]
fn sql_3_5_limit_function_args() {
    let conn = fresh_db("limit_function_args");
    let call = |n: usize| format!("SELECT max({})", vec!["1"; n].join(", "));
    assert_eq!(scalar(&conn, &call(32)), SqlValue::Integer(1));
    assert_eq!(exec_err(&conn, &call(33)), "too many arguments on function max at offset 7: SQLITE_ERROR");
}

#[test]
fn sql_3_5_limit_like_pattern() {
    let conn = fresh_db("limit_like");
    assert_eq!(scalar(&conn, &format!("SELECT 'a' LIKE '{}'", "%".repeat(50))), SqlValue::Integer(1));
    for op in ["LIKE", "GLOB"] {
        let q = format!("SELECT 'a' {op} '{}'", "a".repeat(51));
        assert_eq!(exec_err(&conn, &q), "LIKE or GLOB pattern too complex: SQLITE_ERROR");
    }
}

#[test]
fn sql_3_5_limit_variable_number() {
    let conn = fresh_db("limit_variables");
    let params: Vec<SqlValue> = (0..100).map(SqlValue::from).collect();
    let mut c = exec_with(&conn, "SELECT ?100", &params).unwrap();
    assert_eq!(c.raw().to_array(), [[SqlValue::Integer(99)]]);
    assert_eq!(
        exec_err(&conn, "SELECT ?101"),
        "variable number must be between ?1 and ?100 at offset 7: SQLITE_ERROR"
    );
    let many = format!("SELECT {}", vec!["?"; 101].join(", "));
    let e = exec_err(&conn, &many);
    assert!(e.starts_with("too many SQL variables at offset ") && e.ends_with(": SQLITE_ERROR"), "{e}");
}

#[test]
fn sql_3_5_limit_trigger_depth() {
    let conn = fresh_db("limit_trigger_depth");
    ok(&conn, "CREATE TABLE t (n)");
    ok(
        &conn,
        "CREATE TRIGGER again AFTER INSERT ON t WHEN new.n > 0 BEGIN INSERT INTO t VALUES (new.n - 1); END",
    );
    ok(&conn, "PRAGMA recursive_triggers = ON");
    // Each insert of n > 0 runs the trigger once more inside the previous one: 10 trigger frames at most.
    ok(&conn, "INSERT INTO t VALUES (9)");
    assert_eq!(scalar(&conn, "SELECT count(*) FROM t"), SqlValue::Integer(10));
    assert_eq!(exec_err(&conn, "INSERT INTO t VALUES (10)"), "triggers nested too deep: SQLITE_ERROR");
    assert_eq!(scalar(&conn, "SELECT count(*) FROM t"), SqlValue::Integer(10), "the statement was undone");
}

// ---------------------------------------------------------------------------------------------------------
// §3.2, Appendix A: the orchestrator's side

#[test]
fn appendix_a_16_direct_sql_writes_call_before_write() {
    let conn = fresh_db("before_write");
    let calls = Cell::new(0);
    let mut count = || {
        calls.set(calls.get() + 1);
        Ok(())
    };
    sql::exec(&conn, "CREATE TABLE t (x)", &[], &mut count).unwrap();
    assert_eq!(calls.replace(0), 1);
    for read in ["SELECT * FROM t", "SELECT 1; SELECT 2", "PRAGMA foreign_keys", "PRAGMA table_list"] {
        sql::exec(&conn, read, &[], &mut count).unwrap();
        assert_eq!(calls.replace(0), 0, "{read:?}");
    }
    // Once per writing statement, before it runs.
    sql::exec(
        &conn,
        "INSERT INTO t VALUES (1); SELECT 1; UPDATE t SET x = 2; DELETE FROM t",
        &[],
        &mut count,
    )
    .unwrap();
    assert_eq!(calls.replace(0), 3);
    // Its error is returned and the statement does not run.
    let mut refuse = || Err(Error::new("storage is broken"));
    let e = sql::exec(&conn, "INSERT INTO t VALUES (1)", &[], &mut refuse).unwrap_err();
    assert_eq!(e.message(), "storage is broken");
    assert_eq!(scalar(&conn, "SELECT count(*) FROM t"), SqlValue::Integer(0));
}

#[test]
fn sql_3_2_critical_codes() {
    for code in [
        ErrorCode::DiskFull,
        ErrorCode::SystemIoFailure,
        ErrorCode::OutOfMemory,
        ErrorCode::OperationInterrupted,
    ] {
        assert!(sql::is_critical(code), "{code:?}");
    }
    for code in [
        ErrorCode::ConstraintViolation,
        ErrorCode::Unknown,
        ErrorCode::AuthorizationForStatementDenied,
        ErrorCode::TooBig,
    ] {
        assert!(!sql::is_critical(code), "{code:?}");
    }
}

#[test]
fn sql_3_2_disk_full_error_format() {
    // `Error: database or disk is full: SQLITE_FULL` (§3.2), produced here with a page limit.
    let conn = fresh_db("disk_full");
    ok(&conn, "CREATE TABLE t (x)");
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    conn.execute_batch(&format!("PRAGMA max_page_count = {}", pages + 1)).unwrap();
    let e = exec(&conn, "INSERT INTO t SELECT zeroblob(100000)").unwrap_err();
    assert_eq!(e.message(), "database or disk is full: SQLITE_FULL");
}

#[test]
fn error_from_rusqlite_uses_the_same_format() {
    let conn = fresh_db("error_from_rusqlite");
    let e = conn.execute("INSERT INTO nope VALUES (1)", []).unwrap_err();
    assert_eq!(sql::error_from_rusqlite(&e).message(), "no such table: nope: SQLITE_ERROR");
    let e = conn.execute("SELECT * bunk", []).unwrap_err();
    assert_eq!(
        sql::error_from_rusqlite(&e).message(),
        "near \"bunk\": syntax error at offset 9: SQLITE_ERROR"
    );
    conn.execute_batch("CREATE TABLE u (x UNIQUE); INSERT INTO u VALUES (1)").unwrap();
    let e = conn.execute("INSERT INTO u VALUES (1)", []).unwrap_err();
    assert_eq!(
        sql::error_from_rusqlite(&e).message(),
        "UNIQUE constraint failed: u.x: SQLITE_CONSTRAINT (extended: SQLITE_CONSTRAINT_UNIQUE)"
    );
}

// ---------------------------------------------------------------------------------------------------------
// §3.5: rowsRead and rowsWritten (dosim's estimate of workerd's counters; see `Cursor::rows_read`)

fn counts(conn: &Connection, query: &str) -> (u64, u64) {
    let c = ok(conn, query);
    (c.rows_read(), c.rows_written())
}

#[test]
fn sql_3_5_rows_read_and_written() {
    let conn = fresh_db("row_counts");
    // Only the last statement counts.
    assert_eq!(
        counts(&conn, "CREATE TABLE t (id INTEGER PRIMARY KEY, a, b); INSERT INTO t VALUES (1, 1, 1)"),
        (1, 1)
    );
    // Building an index scans the table and sorts (2 reads), and writes its schema row and one entry per row.
    assert_eq!(counts(&conn, "CREATE INDEX t_a ON t (a)"), (2, 2));
    assert_eq!(counts(&conn, "CREATE INDEX t_b ON t (b)"), (2, 2));
    // An insert writes the row and each index entry; its key is probed.
    assert_eq!(counts(&conn, "INSERT INTO t VALUES (2, 2, 2), (3, 3, 3)"), (2, 6));
    // An update rewrites the indexes of the columns it sets.
    assert_eq!(counts(&conn, "UPDATE t SET a = 5 WHERE id = 1"), (1, 2));
    // A delete writes the row only.
    assert_eq!(counts(&conn, "DELETE FROM t WHERE id = 3"), (1, 1));
    // A scan reads every row; a sort positions once more.
    assert_eq!(counts(&conn, "SELECT * FROM t"), (2, 0));
    assert_eq!(counts(&conn, "SELECT * FROM t ORDER BY b + 0"), (4, 0));
    assert_eq!(counts(&conn, "SELECT 1"), (0, 0));
    // A table without a rowid alias needs no key probe; DELETE without WHERE truncates, unseen by the hook.
    ok(&conn, "CREATE TABLE plain (x)");
    assert_eq!(counts(&conn, "INSERT INTO plain VALUES (1), (2), (3)"), (0, 3));
    assert_eq!(counts(&conn, "DELETE FROM plain"), (0, 3));
    // WITHOUT ROWID tables are counted from the change count.
    ok(&conn, "CREATE TABLE wr (k PRIMARY KEY, v) WITHOUT ROWID");
    assert_eq!(counts(&conn, "INSERT INTO wr VALUES (1, 1), (2, 2)").1, 2);
}

// ---------------------------------------------------------------------------------------------------------
// Conformance with the real runtime

/// A JavaScript binding as dosim takes it: numbers bind as doubles, like JavaScript's.
fn binding(v: &Value) -> SqlValue {
    match v {
        Value::Null => SqlValue::Null,
        Value::Number(n) => SqlValue::Real(n.as_f64().unwrap()),
        Value::String(s) => SqlValue::Text(s.clone()),
        other => panic!("no SQL binding for {other}"),
    }
}

/// Whether a result value matches what JavaScript saw: numbers as doubles (SQLite integers reach JavaScript
/// converted to doubles), strings, null, and ArrayBuffers (`{"$u8": [...]}`).
fn same_value(actual: &SqlValue, expected: &Value) -> bool {
    match (actual, expected) {
        (SqlValue::Null, Value::Null) => true,
        (SqlValue::Integer(i), Value::Number(n)) => Some(*i as f64) == n.as_f64(),
        (SqlValue::Real(f), Value::Number(n)) => Some(*f) == n.as_f64(),
        (SqlValue::Text(s), Value::String(e)) => s == e,
        (SqlValue::Blob(b), Value::Object(o)) => {
            o.get("$u8").and_then(Value::as_array).is_some_and(|bytes| {
                bytes.len() == b.len() && bytes.iter().zip(b).all(|(e, a)| e.as_u64() == Some(u64::from(*a)))
            })
        }
        _ => false,
    }
}

/// Whether a row matches the object JavaScript saw (keys are the distinct column names; a repeated name
/// holds the later column's value).
fn same_row(actual: &sql::Row, expected: &Value, context: &str) {
    let object =
        expected.as_object().unwrap_or_else(|| panic!("{context}: expected an object, got {expected}"));
    let mut distinct = actual.columns().to_vec();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), object.len(), "{context}: columns {:?} vs {expected}", actual.columns());
    for (name, value) in object {
        let got = actual.get(name).unwrap_or_else(|| panic!("{context}: no column {name}"));
        assert!(same_value(got, value), "{context}: {name} is {got:?}, expected {value}");
    }
}

fn same_raw_row(actual: &[SqlValue], expected: &Value, context: &str) {
    let array = expected.as_array().unwrap_or_else(|| panic!("{context}: expected an array, got {expected}"));
    assert_eq!(actual.len(), array.len(), "{context}");
    for (got, value) in actual.iter().zip(array) {
        assert!(same_value(got, value), "{context}: {got:?} vs {value}");
    }
}

fn check_error(result: Result<(), Error>, expected: &Value, context: &str) {
    let error = result.err().unwrap_or_else(|| panic!("{context}: expected an error {expected}"));
    assert_eq!(expected["name"], error.kind().to_string(), "{context}");
    assert_eq!(expected["message"].as_str().unwrap(), error.message(), "{context}");
}

#[test]
fn oracle_sql_sqlite_conformance() {
    let data: Value = serde_json::from_str(include_str!("../../../tests/data/oracle_sql.json")).unwrap();
    let mut checked = 0;
    for case in data["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let conn = fresh_db(&format!("oracle_{name}"));
        // The orchestrator's implicit transaction: opened before the first write, and (as in the oracle,
        // where every op ran in one event-loop turn) not committed between ops.
        let begin = || -> Result<(), Error> {
            if conn.is_autocommit() {
                conn.execute_batch("BEGIN").map_err(|e| sql::error_from_rusqlite(&e))?;
            }
            Ok(())
        };
        for (i, result) in case["results"].as_array().unwrap().iter().enumerate() {
            let op = &result["op"];
            let context = format!("{name} op {i} {op}");
            let bindings: Vec<SqlValue> =
                op["bindings"].as_array().map_or(Vec::new(), |b| b.iter().map(binding).collect());
            let query = op["query"].as_str().unwrap_or_default();
            match op["op"].as_str().unwrap() {
                // The KV API (another module) writes `_cf_KV`, as trusted code inside the implicit
                // transaction.
                "put" => {
                    begin().unwrap();
                    let encoded = value::encode(&op["value"]).unwrap();
                    kv::put(&conn, op["key"].as_str().unwrap(), &encoded).unwrap();
                    assert_eq!(result["ok"], serde_json::json!({"$undefined": true}), "{context}");
                }
                "sql" => {
                    let cursor = sql::exec(&conn, query, &bindings, &mut || begin());
                    match result.get("ok") {
                        Some(expected) => {
                            let mut cursor = cursor.unwrap_or_else(|e| panic!("{context}: {e}"));
                            let names: Vec<&str> = expected["columnNames"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|v| v.as_str().unwrap())
                                .collect();
                            assert_eq!(cursor.column_names(), names, "{context}");
                            assert_eq!(
                                cursor.rows_read(),
                                expected["rowsRead"].as_u64().unwrap(),
                                "{context}: rowsRead"
                            );
                            assert_eq!(
                                cursor.rows_written(),
                                expected["rowsWritten"].as_u64().unwrap(),
                                "{context}: rowsWritten"
                            );
                            let rows = expected["rows"].as_array().unwrap();
                            if op["raw"] == Value::Bool(true) {
                                let got = cursor.raw().to_array();
                                assert_eq!(got.len(), rows.len(), "{context}");
                                for (row, e) in got.iter().zip(rows) {
                                    same_raw_row(row, e, &context);
                                }
                            } else {
                                let got = cursor.to_array();
                                assert_eq!(got.len(), rows.len(), "{context}");
                                for (row, e) in got.iter().zip(rows) {
                                    same_row(row, e, &context);
                                }
                            }
                        }
                        None => check_error(cursor.map(drop), &result["error"], &context),
                    }
                }
                "sqlOne" => {
                    let row = sql::exec(&conn, query, &bindings, &mut || begin()).and_then(|mut c| c.one());
                    match result.get("ok") {
                        Some(expected) => {
                            same_row(&row.unwrap_or_else(|e| panic!("{context}: {e}")), expected, &context)
                        }
                        None => check_error(row.map(drop), &result["error"], &context),
                    }
                }
                // The oracle records only that a number came back; its value depends on workerd's own tables.
                "sqlDatabaseSize" => {
                    assert_eq!(result["ok"], "number", "{context}");
                    assert!(sql::database_size(&conn).unwrap() > 0, "{context}");
                }
                other => panic!("{context}: op {other} is not a SQL op; add it or skip it with a reason"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 43, "every op of the five SQL cases was checked");
}

#[test]
fn sql_3_5_math_functions_are_available() {
    // The bundled SQLite is built with SQLITE_ENABLE_MATH_FUNCTIONS (.cargo/config.toml), as the spec's
    // function allowlist includes the math functions.
    let conn = fresh_db("math_functions.db");
    let row = ok(&conn, "SELECT sqrt(16) AS r, floor(pi()) AS p").one().unwrap();
    assert_eq!(row.get("r"), Some(&SqlValue::Real(4.0)));
    assert_eq!(row.get("p"), Some(&SqlValue::Real(3.0)));
}
