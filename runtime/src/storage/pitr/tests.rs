//! Point-in-time recovery of the SQLite backend (spec §3.6): bookmarks, the 30-day window, and restores that
//! take effect at the next open, on real database files.

use std::sync::Arc;

use crate::storage::gates::ManualTurns;
use crate::storage::pitr::{
    MALFORMED_BOOKMARK, SCHEMA_CHANGED, TIME_OUTSIDE_WINDOW, UNKNOWN_BOOKMARK, WINDOW_MS,
};
use crate::storage::sql::SqlValue;
use crate::storage::sqlite::{SqliteSettings, SqliteStorage, WriteOptions};
use crate::storage::DatabaseLocation;
use crate::world::{DurableOnReturn, ManualClock};

const T0: i64 = 1_800_000_000_000;
const W: WriteOptions = WriteOptions { allow_unconfirmed: false };

fn path(name: &str) -> std::path::PathBuf {
    let dir = crate::test_dir().join("pitr");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    for suffix in ["", "-journal", "-wal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
    }
    p
}

struct Obj {
    s: SqliteStorage,
    h: Arc<ManualTurns>,
}

fn try_open(p: &std::path::Path, clock: &Arc<ManualClock>) -> Result<Obj, crate::error::Error> {
    let h = Arc::new(ManualTurns::default());
    let s = SqliteStorage::open_with_clock(
        &DatabaseLocation::file(p),
        h.clone(),
        Arc::new(DurableOnReturn),
        SqliteSettings::default(),
        clock.clone(),
    )?;
    Ok(Obj { s, h })
}

fn open(p: &std::path::Path, clock: &Arc<ManualClock>) -> Obj {
    try_open(p, clock).unwrap()
}

fn rows(s: &SqliteStorage) -> Vec<(i64, String)> {
    s.exec("SELECT id, v FROM t ORDER BY id", &[])
        .unwrap()
        .map(|r| match (r.get("id"), r.get("v")) {
            (Some(SqlValue::Integer(i)), Some(SqlValue::Text(v))) => (*i, v.clone()),
            other => panic!("row {other:?}"),
        })
        .collect()
}

fn kv(s: &SqliteStorage, key: &str) -> Option<Vec<u8>> {
    s.get(key).unwrap()
}

/// A database with table `t` and a few commits, one per simulated second.
fn setup(name: &str) -> (std::path::PathBuf, Arc<ManualClock>, Obj) {
    let p = path(name);
    let clock = Arc::new(ManualClock::new(T0));
    let o = open(&p, &clock);
    o.s.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)", &[]).unwrap();
    o.h.end_turn();
    (p, clock, o)
}

#[test]
fn bookmarks_sort_in_commit_order_and_the_current_one_includes_the_open_batch() {
    let (_p, clock, o) = setup("order.db");
    let mut seen = vec![o.s.get_current_bookmark().unwrap()];
    for i in 0..5 {
        clock.advance(1000);
        o.s.put(&format!("k{i}"), b"v", W).unwrap();
        // The batch is open: the current bookmark is the one its commit gets.
        let during = o.s.get_current_bookmark().unwrap();
        assert!(during > *seen.last().unwrap());
        o.h.end_turn();
        assert_eq!(o.s.get_current_bookmark().unwrap(), during, "the committed batch has that bookmark");
        seen.push(during);
    }
    // A clock going backwards does not break the order.
    clock.advance(-10_000);
    o.s.put("back", b"v", W).unwrap();
    o.h.end_turn();
    seen.push(o.s.get_current_bookmark().unwrap());
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen);
    // Fixed-width lowercase hex.
    for b in &seen {
        assert_eq!(b.len(), 33);
        assert!(b.bytes().all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c)), "{b}");
    }
}

#[test]
fn bookmark_for_time_picks_the_last_commit_at_or_before_and_rejects_times_outside_the_window() {
    let (_p, clock, o) = setup("for_time.db");
    let mut marks = Vec::new();
    for i in 0..3 {
        clock.set(T0 + 10_000 * (i + 1));
        o.s.put("k", &[i as u8], W).unwrap();
        o.h.end_turn();
        marks.push((T0 + 10_000 * (i + 1), o.s.get_current_bookmark().unwrap()));
    }
    clock.set(T0 + 100_000);
    for (t, b) in &marks {
        assert_eq!(&o.s.get_bookmark_for_time(*t).unwrap(), b, "exactly at the commit");
        assert_eq!(&o.s.get_bookmark_for_time(t + 9_999).unwrap(), b, "until the next commit");
    }
    assert!(o.s.get_bookmark_for_time(marks[0].0 - 1).unwrap() < marks[0].1);
    let now = T0 + 100_000;
    for bad in [now - WINDOW_MS - 1, now + 1] {
        assert_eq!(o.s.get_bookmark_for_time(bad).unwrap_err().message(), TIME_OUTSIDE_WINDOW);
    }
    assert!(o.s.get_bookmark_for_time(now - WINDOW_MS).is_ok());
}

#[test]
fn a_restore_takes_effect_at_the_next_open_only_restores_sql_and_kv_exactly_and_can_be_undone() {
    let (p, clock, o) = setup("restore.db");
    clock.advance(1000);
    o.s.exec("INSERT INTO t VALUES (1, 'one'), (2, 'two')", &[]).unwrap();
    o.s.put("a", b"A1", W).unwrap();
    o.s.put("b", b"B1", W).unwrap();
    o.h.end_turn();
    let good = o.s.get_current_bookmark().unwrap();
    let good_rows = rows(&o.s);
    // Later commits: updates, deletes, inserts, in several turns, with savepoints rolled back.
    clock.advance(1000);
    o.s.exec(
        "UPDATE t SET v = 'uno' WHERE id = 1; DELETE FROM t WHERE id = 2; INSERT INTO t VALUES (3, 'x')",
        &[],
    )
    .unwrap();
    o.s.put("a", b"A2", W).unwrap();
    o.s.delete("b", W).unwrap();
    o.s.put("c", b"C2", W).unwrap();
    let _ = o.s.transaction_sync(|| {
        o.s.exec("INSERT INTO t VALUES (99, 'rolled back')", &[])?;
        Err::<(), _>(crate::error::Error::new("no"))
    });
    o.h.end_turn();
    clock.advance(1000);
    o.s.exec("UPDATE t SET id = 10 WHERE id = 3", &[]).unwrap();
    o.h.end_turn();
    let bad_rows = rows(&o.s);
    assert_eq!(bad_rows, vec![(1, "uno".to_owned()), (10, "x".to_owned())]);

    clock.advance(1000);
    let undo = o.s.on_next_session_restore_bookmark(&good).unwrap();
    assert_eq!(undo, o.s.get_current_bookmark().unwrap());
    // Not before the next open.
    assert_eq!(rows(&o.s), bad_rows);
    assert_eq!(kv(&o.s, "a").as_deref(), Some(&b"A2"[..]));
    drop(o);

    let o = open(&p, &clock);
    assert_eq!(rows(&o.s), good_rows);
    assert_eq!(kv(&o.s, "a").as_deref(), Some(&b"A1"[..]));
    assert_eq!(kv(&o.s, "b").as_deref(), Some(&b"B1"[..]));
    assert_eq!(kv(&o.s, "c"), None);
    // Only once.
    drop(o);
    let o = open(&p, &clock);
    assert_eq!(rows(&o.s), good_rows);

    // Undo the restore.
    clock.advance(1000);
    o.s.on_next_session_restore_bookmark(&undo).unwrap();
    drop(o);
    let o = open(&p, &clock);
    assert_eq!(rows(&o.s), bad_rows);
    assert_eq!(kv(&o.s, "a").as_deref(), Some(&b"A2"[..]));
    assert_eq!(kv(&o.s, "b"), None);
    assert_eq!(kv(&o.s, "c").as_deref(), Some(&b"C2"[..]));
}

#[test]
fn a_crash_before_the_next_open_does_not_lose_the_pending_restore() {
    let (p, clock, o) = setup("crash.db");
    o.s.put("k", b"1", W).unwrap();
    o.h.end_turn();
    let b1 = o.s.get_current_bookmark().unwrap();
    clock.advance(1000);
    o.s.put("k", b"2", W).unwrap();
    o.h.end_turn();
    o.s.on_next_session_restore_bookmark(&b1).unwrap();
    // More writes, then a crash before they commit.
    o.s.put("k", b"3", W).unwrap();
    // The crash: what is on disk now (database and hot journal) is what the next instance finds.
    let crashed = path("crash_image.db");
    std::fs::copy(&p, &crashed).unwrap();
    let journal = format!("{}-journal", p.display());
    if std::path::Path::new(&journal).exists() {
        std::fs::copy(&journal, format!("{}-journal", crashed.display())).unwrap();
    }
    o.s.shutdown(None);
    o.h.end_turn();
    drop(o);
    let p = crashed;
    let o = open(&p, &clock);
    assert_eq!(kv(&o.s, "k").as_deref(), Some(&b"1"[..]));

    // A request made inside an open batch, then the object aborts (ctx.abort()): the request stands.
    clock.advance(1000);
    o.s.put("k", b"4", W).unwrap();
    o.h.end_turn();
    let b4 = o.s.get_current_bookmark().unwrap();
    clock.advance(1000);
    o.s.put("k", b"5", W).unwrap();
    o.h.end_turn();
    o.s.put("k", b"6", W).unwrap();
    o.s.on_next_session_restore_bookmark(&b4).unwrap();
    o.s.shutdown(None);
    o.h.end_turn();
    drop(o);
    let o = open(&p, &clock);
    assert_eq!(kv(&o.s, "k").as_deref(), Some(&b"4"[..]));
}

#[test]
fn malformed_and_unknown_bookmarks_are_clear_errors() {
    let (_p, clock, o) = setup("bad.db");
    o.s.put("k", b"1", W).unwrap();
    o.h.end_turn();
    let current = o.s.get_current_bookmark().unwrap();
    for bad in
        ["", "nope", "0000000000000001", "0000000000000001-000000000000000G", "1-2", &current.to_uppercase()]
    {
        assert_eq!(
            o.s.on_next_session_restore_bookmark(bad).unwrap_err().message(),
            MALFORMED_BOOKMARK,
            "{bad}"
        );
    }
    let (t, _) = current.split_once('-').unwrap();
    let unknown = format!("{t}-00000000000000ff");
    assert_eq!(o.s.on_next_session_restore_bookmark(&unknown).unwrap_err().message(), UNKNOWN_BOOKMARK);
    let wrong_time = format!("{:016x}-{}", T0 + 5, current.split_once('-').unwrap().1);
    assert_eq!(o.s.on_next_session_restore_bookmark(&wrong_time).unwrap_err().message(), UNKNOWN_BOOKMARK);
    let _ = clock;
}

#[test]
fn history_older_than_30_days_is_pruned_and_its_bookmarks_rejected() {
    let (p, clock, o) = setup("prune.db");
    o.s.put("k", b"old", W).unwrap();
    o.h.end_turn();
    let old = o.s.get_current_bookmark().unwrap();
    clock.advance(1000);
    o.s.put("k", b"anchor", W).unwrap();
    o.h.end_turn();
    let anchor = o.s.get_current_bookmark().unwrap();
    clock.advance(WINDOW_MS + 1);
    o.s.put("k", b"new", W).unwrap();
    o.h.end_turn();
    assert_eq!(o.s.on_next_session_restore_bookmark(&old).unwrap_err().message(), UNKNOWN_BOOKMARK);
    // The newest commit before the window's start is the state at that start: still a valid bookmark.
    assert_eq!(o.s.get_bookmark_for_time(clock_now(&clock) - WINDOW_MS).unwrap(), anchor);
    o.s.on_next_session_restore_bookmark(&anchor).unwrap();
    drop(o);
    let o = open(&p, &clock);
    assert_eq!(kv(&o.s, "k").as_deref(), Some(&b"anchor"[..]));
}

fn clock_now(c: &ManualClock) -> i64 {
    use crate::world::Clock;
    c.now_ms()
}

#[test]
fn a_restore_across_a_schema_change_fails_clearly() {
    let (p, clock, o) = setup("schema.db");
    o.s.exec("INSERT INTO t VALUES (1, 'one')", &[]).unwrap();
    o.h.end_turn();
    let before = o.s.get_current_bookmark().unwrap();
    clock.advance(1000);
    o.s.exec("CREATE TABLE u(x)", &[]).unwrap();
    o.h.end_turn();
    assert_eq!(o.s.on_next_session_restore_bookmark(&before).unwrap_err().message(), SCHEMA_CHANGED);
    // A request made before the change fails at the next open, which discards it.
    let after = o.s.get_current_bookmark().unwrap();
    o.s.exec("INSERT INTO t VALUES (2, 'two')", &[]).unwrap();
    o.h.end_turn();
    o.s.on_next_session_restore_bookmark(&after).unwrap();
    o.s.exec("DROP TABLE u", &[]).unwrap();
    o.h.end_turn();
    drop(o);
    assert_eq!(try_open(&p, &clock).err().unwrap().message(), SCHEMA_CHANGED);
    let o = open(&p, &clock);
    assert_eq!(rows(&o.s).len(), 2, "nothing was restored");
}

#[test]
fn kv_data_can_be_restored_across_delete_all() {
    let (p, clock, o) = setup("delete_all.db");
    o.s.exec("DROP TABLE t", &[]).unwrap();
    o.h.end_turn();
    clock.advance(1000);
    o.s.put("a", b"1", W).unwrap();
    o.s.put("b", b"2", W).unwrap();
    o.h.end_turn();
    let b = o.s.get_current_bookmark().unwrap();
    clock.advance(1000);
    crate::storage::gates::block_on(o.s.delete_all()).unwrap();
    assert_eq!(o.s.get("a").unwrap(), None);
    o.s.on_next_session_restore_bookmark(&b).unwrap();
    drop(o);
    let o = open(&p, &clock);
    assert_eq!(kv(&o.s, "a").as_deref(), Some(&b"1"[..]));
    assert_eq!(kv(&o.s, "b").as_deref(), Some(&b"2"[..]));
}

#[test]
fn user_sql_cannot_touch_the_history() {
    let (_p, _clock, o) = setup("authorizer.db");
    o.s.put("k", b"1", W).unwrap();
    o.h.end_turn();
    for q in [
        "SELECT * FROM _cf_PITR_HISTORY",
        "DELETE FROM _cf_PITR_HISTORY",
        "DROP TABLE _cf_PITR_HISTORY",
        "INSERT INTO _cf_PITR_RESTORE VALUES (1, 'x')",
    ] {
        assert!(o.s.exec(q, &[]).is_err(), "{q}");
    }
}

#[test]
fn a_restore_undoes_whole_table_deletes_replaces_and_cascades() {
    // The history is built from the pre-update hook alone: these are the row changes SQLite could make
    // without a per-row statement (the truncate optimization, REPLACE's deletes, foreign-key actions).
    let (p, clock, o) = setup("restore-implicit-changes.db");
    o.s.exec("PRAGMA foreign_keys = ON", &[]).unwrap();
    o.s.exec(
        "CREATE TABLE parent(id INTEGER PRIMARY KEY, v TEXT); \
         CREATE TABLE child(id INTEGER PRIMARY KEY, p INTEGER REFERENCES parent(id) ON DELETE CASCADE)",
        &[],
    )
    .unwrap();
    o.h.end_turn();
    clock.advance(1000);
    o.s.exec("INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, 'three')", &[]).unwrap();
    o.s.exec("INSERT INTO parent VALUES (1, 'p'); INSERT INTO child VALUES (7, 1), (8, 1)", &[]).unwrap();
    o.h.end_turn();
    let good = o.s.get_current_bookmark().unwrap();
    let good_rows = rows(&o.s);
    clock.advance(1000);
    o.s.exec("DELETE FROM t", &[]).unwrap();
    o.s.exec("INSERT INTO t VALUES (1, 'uno'); INSERT OR REPLACE INTO t VALUES (1, 'replaced')", &[])
        .unwrap();
    o.s.exec("DELETE FROM parent WHERE id = 1", &[]).unwrap();
    o.h.end_turn();
    assert_eq!(rows(&o.s), vec![(1, "replaced".to_owned())]);
    let children = |s: &SqliteStorage| s.exec("SELECT count(*) AS n FROM child", &[]).unwrap().one().unwrap();
    assert_eq!(children(&o.s).get("n"), Some(&SqlValue::Integer(0)), "the cascade deleted the children");
    clock.advance(1000);
    o.s.on_next_session_restore_bookmark(&good).unwrap();
    drop(o);
    let o = open(&p, &clock);
    assert_eq!(rows(&o.s), good_rows, "every row of the whole-table delete and the replace is back");
    assert_eq!(children(&o.s).get("n"), Some(&SqlValue::Integer(2)), "the cascaded deletes are undone");
}

#[test]
fn a_restore_undoes_a_turn_that_changed_many_rows() {
    // More changed rows than are matched by comparing keys: the index of encoded keys takes over.
    let (p, clock, o) = setup("restore-many.db");
    clock.advance(1000);
    for i in 0..100 {
        o.s.exec("INSERT INTO t VALUES (?1, ?2)", &[SqlValue::Integer(i), SqlValue::Text(format!("v{i}"))])
            .unwrap();
    }
    o.h.end_turn();
    let good = o.s.get_current_bookmark().unwrap();
    let good_rows = rows(&o.s);
    clock.advance(1000);
    o.s.exec("UPDATE t SET v = 'changed' WHERE id % 2 = 0; DELETE FROM t WHERE id % 4 = 1", &[]).unwrap();
    for i in 100..140 {
        o.s.exec("INSERT INTO t VALUES (?1, 'new')", &[SqlValue::Integer(i)]).unwrap();
    }
    o.s.exec("UPDATE t SET v = 'again' WHERE id % 10 = 0", &[]).unwrap();
    o.h.end_turn();
    assert_ne!(rows(&o.s), good_rows);
    clock.advance(1000);
    o.s.on_next_session_restore_bookmark(&good).unwrap();
    drop(o);
    let o = open(&p, &clock);
    assert_eq!(rows(&o.s), good_rows);
}
