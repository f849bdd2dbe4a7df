//! Write coalescing is crash-atomic on the simulated disk: many writes in one turn, a power cut at every disk
//! operation of the turn and its commit, under several seeds and both journal modes; after restart the
//! database holds all of the turn or none of it, and what was committed before is intact.
//!
//! Runs in the plain build: `LocalWorld` gives one node with a `SimDisk` and no madsim.

use std::sync::Arc;

use dosim_runtime::embed::{DatabaseLocation, Journal};
use dosim_runtime::embed::{DurableOnReturn, ManualTurns};
use dosim_runtime::embed::{SqliteSettings, SqliteStorage};
use dosim_runtime::prelude::SqlValue;
use dosim_runtime::prelude::WriteOptions;
use dosim_sim::disk::{self, DiskConfig};
use dosim_sim::{DiskFaultKind, LocalWorld, Seed};

const BASE_KEYS: usize = 10;
const TURN_KEYS: usize = 40;
const SEEDS: u64 = 6;
const CONFIRMED: WriteOptions = WriteOptions { allow_unconfirmed: false };

fn try_open(journal: Journal) -> Result<(SqliteStorage, Arc<ManualTurns>), dosim_runtime::error::Error> {
    dosim_sim::sqlite::register_vfs();
    let turns = Arc::new(ManualTurns::default());
    let location = DatabaseLocation::on_vfs(dosim_sim::sqlite::VFS_NAME, "object.db").journal(journal);
    let storage =
        SqliteStorage::open(&location, turns.clone(), Arc::new(DurableOnReturn), SqliteSettings::default())?;
    Ok((storage, turns))
}

/// Opens the object's storage, or `None` if the disk fails (during the turn under test).
fn open(journal: Journal) -> Option<(SqliteStorage, Arc<ManualTurns>)> {
    try_open(journal).ok()
}

/// Opens the object's storage after a restart, which must work.
fn open_or_explain(journal: Journal) -> (SqliteStorage, Arc<ManualTurns>) {
    try_open(journal).unwrap_or_else(|e| panic!("the database does not reopen after a power cut: {e}"))
}

/// The committed base state: `BASE_KEYS` keys and a table with one row.
fn base(journal: Journal) {
    let (s, turns) = open(journal).expect("a healthy disk opens");
    s.exec("CREATE TABLE audit(n INTEGER)", &[]).unwrap();
    s.exec("INSERT INTO audit VALUES (0)", &[]).unwrap();
    for i in 0..BASE_KEYS {
        s.put(&format!("base{i:02}"), b"committed", CONFIRMED).unwrap();
    }
    turns.end_turn();
    assert!(turns.lock_outcomes().iter().all(Result::is_ok));
}

/// The turn under test: many puts and a SQL update, all without yielding, then the end of the turn.
fn turn(journal: Journal) {
    let Some((s, turns)) = open(journal) else { return };
    for i in 0..TURN_KEYS {
        if s.put(&format!("turn{i:02}"), &[i as u8; 300], CONFIRMED).is_err() {
            break;
        }
    }
    let _ = s.exec("UPDATE audit SET n = n + 1", &[]);
    turns.end_turn();
}

/// After restart: all of the turn or none of it; the base intact.
fn check(journal: Journal) -> bool {
    let (s, _) = open_or_explain(journal);
    for i in 0..BASE_KEYS {
        assert_eq!(s.get(&format!("base{i:02}")).unwrap().as_deref(), Some(&b"committed"[..]), "base lost");
    }
    let present = (0..TURN_KEYS).filter(|i| s.get(&format!("turn{i:02}")).unwrap().is_some()).count();
    let n = match s.exec("SELECT n FROM audit", &[]).unwrap().one().unwrap().get("n") {
        Some(SqlValue::Integer(n)) => *n,
        other => panic!("audit row: {other:?}"),
    };
    let all = present == TURN_KEYS && n == 1;
    let none = present == 0 && n == 0;
    assert!(all || none, "half a turn survived: {present}/{TURN_KEYS} keys, audit n = {n}");
    let integrity = s.exec("PRAGMA quick_check", &[]).unwrap().one().unwrap();
    assert_eq!(integrity.values().first(), Some(&SqlValue::Text("ok".into())));
    all
}

#[test]
fn a_power_cut_anywhere_in_a_turns_commit_keeps_all_or_none_of_it() {
    for journal in [Journal::Delete, Journal::Wal] {
        // How many disk operations the turn takes, measured once.
        let ops = {
            let world = LocalWorld::new(Seed(0), DiskConfig::instant()).unwrap();
            base(journal);
            let before = disk::op_count(world.node());
            turn(journal);
            disk::op_count(world.node()) - before
        };
        assert!(ops > 5, "{journal:?}: the turn took only {ops} disk operations");
        let (mut all, mut none) = (0, 0);
        for seed in 0..SEEDS {
            // Index `ops + 1` stands for "after the turn": cut by hand, since an armed cut there would fire
            // during the reopen instead.
            for cut in 1..=ops + 1 {
                let world = LocalWorld::new(Seed(seed), DiskConfig::instant()).unwrap();
                base(journal);
                if cut <= ops {
                    let at = disk::op_count(world.node()) + cut;
                    disk::arm_fault(world.node(), at, DiskFaultKind::PowerCut);
                }
                turn(journal);
                if cut <= ops {
                    assert!(
                        world.is_powered_off(),
                        "{journal:?}: the cut at turn op {cut} of {ops} did not fire"
                    );
                } else {
                    world.power_cut();
                }
                world.restart();
                let kept_all = check(journal);
                assert!(cut <= ops || kept_all, "{journal:?}: a turn whose commit returned was lost");
                if kept_all {
                    all += 1;
                } else {
                    none += 1;
                }
            }
        }
        eprintln!("{journal:?}: {ops} disk operations per turn; {all} runs kept all, {none} kept none");
        assert!(
            all > 0 && none > 0,
            "{journal:?}: the sweep must see both outcomes (all {all}, none {none})"
        );
    }
}

#[test]
fn sql_3_2_a_full_disk_breaks_the_object_with_sqlite_full_and_every_later_call_fails() {
    let world =
        LocalWorld::new(Seed(9), DiskConfig { capacity: Some(96 * 1024), ..DiskConfig::instant() }).unwrap();
    let (s, turns) = open(Journal::Delete).expect("opens");
    let mut error = None;
    for i in 0..10_000 {
        if let Err(e) = s.put(&format!("k{i:05}"), &[7u8; 2000], CONFIRMED) {
            error = Some(e);
            break;
        }
        if i % 10 == 9 {
            turns.end_turn();
            if let Some(Err(e)) = turns.lock_outcomes().into_iter().find(Result::is_err) {
                error = Some(e);
                break;
            }
        }
    }
    let e = error.expect("a 96 KiB disk fills up");
    assert_eq!(e.message(), "database or disk is full: SQLITE_FULL");
    assert!(e.durable_object_reset(), "a critical error resets the object: {e:?}");
    // The storage is broken for good: the same error, even for reads.
    assert_eq!(s.get("k00000").unwrap_err(), e);
    assert!(world.faults().get(dosim_sim::FaultKind::DiskFull) > 0);
    // After a restart the committed data is intact and consistent.
    drop((s, turns));
    world.crash();
    world.restart();
    let (s, _) = open(Journal::Delete).expect("reopens");
    assert!(s.get("k00000").unwrap().is_some());
    let ok = s.exec("PRAGMA quick_check", &[]).unwrap().one().unwrap();
    assert_eq!(ok.values().first(), Some(&SqlValue::Text("ok".into())));
}
