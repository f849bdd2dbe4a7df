//! SQLite on the simulated disk, in a plain build: round trips, durability across power cuts, a crash
//! atomicity sweep over every disk operation of a commit (with a negative control that must find
//! corruption), EIO and ENOSPC injection, and the seeded PRNG.
//!
//! Each case runs in its own [`LocalWorld`], which holds the process-wide run lock, so the tests of this
//! file run one at a time even though cargo starts them on parallel threads.

use std::time::Instant;

use dosim_sim::disk::{self, CrashMode, DiskConfig};
use dosim_sim::sqlite::{self, JournalMode};
use dosim_sim::{DiskFaultKind, FaultCounts, FaultKind, LocalWorld, Seed};
use rusqlite::{Connection, ErrorCode};

const DB: &str = "test.db";
const MODES: [JournalMode; 2] = [JournalMode::Delete, JournalMode::Wal];

fn world(seed: u64) -> LocalWorld {
    LocalWorld::new(Seed(seed), DiskConfig::instant()).expect("valid disk config")
}

fn integrity(conn: &Connection) -> rusqlite::Result<String> {
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let rows: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(rows.join("; "))
}

// --- The workload of the sweep ---------------------------------------------------------------------------

/// The committed state every case starts from: 20 rows in `a`, `meta.version = 1`, no table `b`.
const BASE: &str = "
    CREATE TABLE a(id INTEGER PRIMARY KEY, v TEXT NOT NULL);
    CREATE TABLE meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL);
    BEGIN;
    INSERT INTO meta VALUES ('version', 1);
    WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 20)
        INSERT INTO a(id, v) SELECT n, printf('base-%d-%s', n, hex(zeroblob(100))) FROM s;
    COMMIT;
";

/// The transaction under test: a new table, 50 rows into each of two tables (spread over several pages),
/// an update of every base row and of `meta`.
const TXN: &str = "
    BEGIN;
    CREATE TABLE b(id INTEGER PRIMARY KEY, a_id INTEGER NOT NULL, note TEXT NOT NULL);
    WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 50)
        INSERT INTO a(id, v) SELECT 1000 + n, printf('new-%d-%s', n, hex(zeroblob(150))) FROM s;
    WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 50)
        INSERT INTO b(id, a_id, note) SELECT n, 1000 + n, printf('b-%d-%s', n, hex(zeroblob(100))) FROM s;
    UPDATE a SET v = v || '-updated' WHERE id <= 20;
    UPDATE meta SET v = 2 WHERE k = 'version';
    COMMIT;
";

/// What the database holds: (rows in a, updated rows in a, table b exists, rows in b, meta.version).
type State = (i64, i64, bool, i64, i64);
const NONE_OF_IT: State = (20, 0, false, 0, 1);
const ALL_OF_IT: State = (70, 20, true, 50, 2);

fn state(conn: &Connection) -> rusqlite::Result<State> {
    let q = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
    let b_exists = q("SELECT count(*) FROM sqlite_schema WHERE name = 'b'")? == 1;
    Ok((
        q("SELECT count(*) FROM a")?,
        q("SELECT count(*) FROM a WHERE v LIKE '%-updated'")?,
        b_exists,
        if b_exists { q("SELECT count(*) FROM b")? } else { 0 },
        q("SELECT v FROM meta WHERE k = 'version'")?,
    ))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// The transaction left no trace.
    None,
    /// The transaction is there in full.
    All,
    /// Half-applied, corrupt, or unreadable.
    Bad(String),
}

/// Reopens the database and classifies what it holds.
fn observe(mode: JournalMode) -> Outcome {
    let conn = match sqlite::open(DB, mode) {
        Ok(c) => c,
        Err(e) => return Outcome::Bad(format!("reopen failed: {e}")),
    };
    let ic = match integrity(&conn) {
        Ok(ic) => ic,
        Err(e) => return Outcome::Bad(format!("integrity_check failed: {e}")),
    };
    let st = match state(&conn) {
        Ok(st) => st,
        Err(e) => return Outcome::Bad(format!("reading state failed: {e} (integrity: {ic})")),
    };
    if ic != "ok" {
        return Outcome::Bad(format!("integrity_check: {ic}; state {st:?}"));
    }
    match st {
        NONE_OF_IT => Outcome::None,
        ALL_OF_IT => Outcome::All,
        other => Outcome::Bad(format!("half-applied: {other:?}")),
    }
}

/// Opens the database in `mode` with the base state committed, and the synchronous setting for the
/// transaction.
fn setup(mode: JournalMode, sync_off: bool) -> Connection {
    let conn = sqlite::open(DB, mode).expect("open");
    conn.execute_batch(BASE).expect("base state");
    if sync_off {
        conn.execute_batch("PRAGMA synchronous=OFF").expect("synchronous=OFF");
    }
    conn
}

/// How many disk operations the transaction takes under `seed`, measured in a dry run.
fn ops_of_txn(seed: u64, mode: JournalMode, sync_off: bool) -> u64 {
    let w = world(seed);
    let conn = setup(mode, sync_off);
    let before = disk::op_count(w.node());
    conn.execute_batch(TXN).expect("dry run commits");
    let n = disk::op_count(w.node()) - before;
    drop(conn);
    n
}

#[derive(Debug, Default)]
struct Sweep {
    ops_per_txn: Vec<u64>,
    runs: usize,
    none: usize,
    all: usize,
    bad: Vec<String>,
    faults: FaultCounts,
}

/// Cuts the power at every disk operation of the transaction (and once after it), under each seed, and
/// classifies what survives.
fn sweep(mode: JournalMode, seeds: impl IntoIterator<Item = u64>, sync_off: bool) -> Sweep {
    let mut out = Sweep::default();
    for seed in seeds {
        let n = ops_of_txn(seed, mode, sync_off);
        out.ops_per_txn.push(n);
        // i in 1..=n: the power fails at that operation; i = n + 1: after the transaction returned.
        for i in 1..=n + 1 {
            let w = world(seed);
            let node = w.node();
            let conn = setup(mode, sync_off);
            if i <= n {
                disk::arm_fault(node, disk::op_count(node) + i, DiskFaultKind::PowerCut);
            }
            let result = conn.execute_batch(TXN);
            if i <= n {
                assert!(
                    w.is_powered_off(),
                    "seed {seed} {mode:?}: the cut armed at op {i} of {n} did not fire"
                );
            } else {
                assert!(result.is_ok(), "seed {seed} {mode:?}: the unfaulted transaction failed: {result:?}");
                w.power_cut();
            }
            // Drop the dead incarnation's connection while the power is still out: all its I/O fails.
            drop(conn);
            w.restart();
            let outcome = observe(mode);
            out.runs += 1;
            out.faults.merge(&w.faults());
            let outcome = match outcome {
                // A commit SQLite acknowledged must survive.
                Outcome::None if result.is_ok() => Outcome::Bad("acknowledged commit lost".into()),
                o => o,
            };
            match outcome {
                Outcome::None => out.none += 1,
                Outcome::All => out.all += 1,
                Outcome::Bad(why) => {
                    out.bad.push(format!("seed {seed} {mode:?} cut at op {i}/{n}: {why} ({:?})", w.faults()))
                }
            }
        }
    }
    out
}

// --- Tests --------------------------------------------------------------------------------------------------

#[test]
fn round_trip_reopen_and_clock() {
    for mode in MODES {
        let w = world(1);
        {
            let conn = sqlite::open(DB, mode).unwrap();
            conn.execute_batch(
                "CREATE TABLE t(k TEXT PRIMARY KEY, v INTEGER); INSERT INTO t VALUES ('x', 1), ('y', 2);",
            )
            .unwrap();
            let sum: i64 = conn.query_row("SELECT sum(v) FROM t", [], |r| r.get(0)).unwrap();
            assert_eq!(sum, 3);
            let now: String = conn.query_row("SELECT datetime('now')", [], |r| r.get(0)).unwrap();
            assert_eq!(now, "2026-01-01 00:00:00", "the LocalWorld epoch");
            let jd: f64 = conn.query_row("SELECT julianday('now')", [], |r| r.get(0)).unwrap();
            assert_eq!(jd, 2_461_041.5);
        }
        let files = disk::list(w.node());
        assert!(files.contains(&DB.to_string()), "{mode:?}: database file on the simulated disk: {files:?}");
        let conn = sqlite::open(DB, mode).unwrap();
        let rows: Vec<(String, i64)> = conn
            .prepare("SELECT k, v FROM t ORDER BY k")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, vec![("x".to_string(), 1), ("y".to_string(), 2)]);
        assert_eq!(integrity(&conn).unwrap(), "ok");
        let jm: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(jm, mode.pragma_value());
    }
}

#[test]
fn committed_data_survives_a_power_cut_and_uncommitted_does_not() {
    for mode in MODES {
        for seed in 0..4 {
            let w = world(seed);
            let conn = sqlite::open(DB, mode).unwrap();
            conn.execute_batch("CREATE TABLE t(v INTEGER); INSERT INTO t VALUES (1), (2), (3);").unwrap();
            // An open transaction, never committed.
            conn.execute_batch("BEGIN; INSERT INTO t VALUES (4); UPDATE t SET v = v * 10;").unwrap();
            w.power_cut();
            drop(conn);
            w.restart();
            let conn = sqlite::open(DB, mode).unwrap();
            let sum: i64 = conn.query_row("SELECT sum(v) FROM t", [], |r| r.get(0)).unwrap();
            assert_eq!(sum, 6, "seed {seed} {mode:?}: committed rows survive, the open transaction does not");
            assert_eq!(integrity(&conn).unwrap(), "ok");
        }
    }
}

#[test]
fn unsynced_commit_is_lost_when_the_power_cut_loses_pending_writes() {
    let config = DiskConfig { crash_modes: vec![CrashMode::LoseAll], ..DiskConfig::instant() };
    for mode in MODES {
        let w = LocalWorld::new(Seed(7), config.clone()).unwrap();
        let conn = sqlite::open(DB, mode).unwrap();
        conn.execute_batch("CREATE TABLE t(v INTEGER); INSERT INTO t VALUES (1);").unwrap();
        conn.execute_batch("PRAGMA synchronous=OFF; INSERT INTO t VALUES (2);").unwrap();
        w.power_cut();
        drop(conn);
        w.restart();
        let conn = sqlite::open(DB, mode).unwrap();
        let rows: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 1, "{mode:?}: the commit made without sync is gone");
        assert_eq!(integrity(&conn).unwrap(), "ok");
    }
}

/// Seeds of the crash sweep: each seed draws different crash modes, kept subsets and tears at the cut.
const SWEEP_SEEDS: std::ops::Range<u64> = 0..16;
/// Seeds of the negative control.
const NEGATIVE_SEEDS: std::ops::Range<u64> = 0..8;

#[test]
fn crash_at_every_disk_op_of_a_commit_is_all_or_nothing() {
    for mode in MODES {
        let start = Instant::now();
        let s = sweep(mode, SWEEP_SEEDS, false);
        eprintln!(
            "sweep {mode:?} synchronous=FULL: ops per transaction {:?}, {} runs, {} none, {} all, {} bad, {:?}",
            s.ops_per_txn,
            s.runs,
            s.none,
            s.all,
            s.bad.len(),
            start.elapsed()
        );
        assert!(
            s.bad.is_empty(),
            "{mode:?}: {} runs were not all-or-nothing:\n{}",
            s.bad.len(),
            s.bad.join("\n")
        );
        assert!(s.none > 0, "{mode:?}: no cut landed before the commit point; the sweep is vacuous");
        assert!(s.all > 0, "{mode:?}: no run kept the transaction; the sweep is vacuous");
        assert!(s.ops_per_txn.iter().all(|&n| n >= 5), "{mode:?}: suspiciously few ops: {:?}", s.ops_per_txn);
        for kind in [FaultKind::DiskLostWrite, FaultKind::DiskTornWrite] {
            assert!(s.faults.get(kind) > 0, "{mode:?}: the sweep never produced {kind:?}: {:?}", s.faults);
        }
    }
}

/// The negative control: with `synchronous=OFF` nothing orders the writes, so the same sweep must find runs
/// that are not all-or-nothing. If it did not, the sweep above would prove nothing.
///
/// With a rollback journal the database pages can reach the disk while the journal's do not, so cuts leave
/// half-applied or corrupt databases. In WAL mode the checksummed log still keeps the database consistent
/// (recovery stops at the first bad frame), but a commit SQLite acknowledged can be lost: the sweep's
/// durability check must catch that.
#[test]
fn negative_control_synchronous_off_is_caught() {
    for mode in MODES {
        let start = Instant::now();
        let s = sweep(mode, NEGATIVE_SEEDS, true);
        eprintln!(
            "sweep {mode:?} synchronous=OFF: ops per transaction {:?}, {} runs, {} none, {} all, {} bad, {:?}; first bad: {:?}",
            s.ops_per_txn,
            s.runs,
            s.none,
            s.all,
            s.bad.len(),
            start.elapsed(),
            s.bad.first()
        );
        let corrupt_or_half = s.bad.iter().filter(|b| !b.contains("acknowledged commit lost")).count();
        match mode {
            JournalMode::Delete => assert!(
                corrupt_or_half > 0,
                "Delete, synchronous=OFF: no half-applied or corrupt run: the harness cannot see corruption"
            ),
            JournalMode::Wal => {
                assert!(!s.bad.is_empty(), "Wal, synchronous=OFF: no lost commit: the harness cannot see it")
            }
        }
    }
}

#[test]
fn eio_during_a_commit_fails_it_and_applies_nothing_half() {
    for mode in MODES {
        let n = ops_of_txn(3, mode, false);
        let mut failed = 0;
        for i in 1..=n {
            let w = world(3);
            let node = w.node();
            let conn = setup(mode, false);
            disk::arm_fault(node, disk::op_count(node) + i, DiskFaultKind::IoError);
            let result = conn.execute_batch(TXN);
            let err = result.expect_err(&format!("{mode:?}: EIO at op {i}/{n} went unnoticed"));
            assert_eq!(
                err.sqlite_error_code(),
                Some(ErrorCode::SystemIoFailure),
                "{mode:?}: EIO at op {i}/{n} gave {err}"
            );
            failed += 1;
            drop(conn);
            let outcome = observe(mode);
            assert!(
                matches!(outcome, Outcome::None | Outcome::All),
                "{mode:?}: EIO at op {i}/{n}: {outcome:?}"
            );
            // And the survivor is durable.
            w.power_cut();
            w.restart();
            assert!(matches!(observe(mode), Outcome::None | Outcome::All), "{mode:?}: after EIO at op {i}");
        }
        assert_eq!(failed, n);
    }
}

#[test]
fn enospc_gives_sqlite_full_and_keeps_the_database_consistent() {
    for mode in MODES {
        let config = DiskConfig { capacity: Some(256 * 1024), ..DiskConfig::instant() };
        let w = LocalWorld::new(Seed(11), config).unwrap();
        let conn = sqlite::open(DB, mode).unwrap();
        conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB NOT NULL)").unwrap();
        let mut inserted = 0i64;
        let err = loop {
            match conn.execute("INSERT INTO t(v) VALUES (zeroblob(1000))", []) {
                Ok(_) => inserted += 1,
                Err(e) => break e,
            }
            assert!(inserted < 1000, "{mode:?}: the disk never filled");
        };
        assert_eq!(err.sqlite_error_code(), Some(ErrorCode::DiskFull), "{mode:?}: {err}");
        assert!(err.to_string().contains("database or disk is full"), "{err}");
        eprintln!("ENOSPC {mode:?}: {inserted} rows of 1000 bytes fit in 256 KiB, then: {err}");
        assert!(inserted > 10, "{mode:?}: only {inserted} rows fit");
        let count =
            |c: &Connection| c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!(count(&conn), inserted);
        assert_eq!(integrity(&conn).unwrap(), "ok");
        drop(conn);
        w.power_cut();
        w.restart();
        let conn = sqlite::open(DB, mode).unwrap();
        assert_eq!(count(&conn), inserted, "{mode:?}: every acknowledged row survives");
        assert_eq!(integrity(&conn).unwrap(), "ok");
    }
}

#[test]
fn sqlite_random_follows_the_seed() {
    let draw = |seed: u64| -> (i64, Vec<u8>) {
        let _w = world(seed);
        let conn = sqlite::open(DB, JournalMode::Wal).unwrap();
        conn.query_row("SELECT random(), randomblob(16)", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap()
    };
    let a = draw(42);
    let b = draw(42);
    let c = draw(43);
    assert_eq!(a, b, "same seed, same random()");
    assert_ne!(a.0, c.0, "different seed, different random()");
    assert_ne!(a.1, c.1);
}

/// SQLite's PRNG reaches the file bytes (journal nonces, WAL salts), and so the trace: the same seed must
/// give the same trace, and another seed another one.
#[test]
fn file_bytes_follow_the_seed() {
    for mode in MODES {
        let run = |seed: u64| -> u64 {
            let w = world(seed);
            let conn = setup(mode, false);
            conn.execute_batch(TXN).unwrap();
            drop(conn);
            w.trace().hash()
        };
        let a = run(5);
        assert_eq!(a, run(5), "{mode:?}: same seed, same trace");
        assert_ne!(a, run(6), "{mode:?}: another seed, another journal nonce or WAL salt");
    }
}

/// A connection that outlives its run (as when a crashed node's futures are dropped late) closes without
/// panicking: its I/O fails quietly and nothing reaches a disk.
#[test]
fn closing_after_the_run_is_harmless() {
    for mode in MODES {
        let w = world(9);
        let conn = setup(mode, false);
        conn.execute_batch("BEGIN; INSERT INTO meta VALUES ('pending', 1);").unwrap();
        drop(w);
        drop(conn);
    }
}
