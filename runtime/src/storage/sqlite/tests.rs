//! The SQLite backend's transactions: write coalescing per turn, the output gate, commit failures, explicit
//! transactions, deleteAll, sync and alarms (spec §3.2–§3.4, §4, Appendix A), through a minimal single-object
//! harness standing in for the runtime's event loop.

use std::sync::Arc;

use crate::error::Error;
use crate::storage::gates::{block_on, ManualTurns};
use crate::storage::sql::SqlValue;
use crate::storage::sqlite::{SqliteSettings, SqliteStorage, WriteOptions};
use crate::storage::{DatabaseLocation, Storage};
use crate::world::DurableOnReturn;

fn path(name: &str) -> std::path::PathBuf {
    let dir = crate::test_dir().join("sqlite_storage");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    for suffix in ["", "-journal", "-wal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
    }
    p
}

fn open_at(p: &std::path::Path, settings: SqliteSettings) -> (SqliteStorage, Arc<ManualTurns>) {
    let h = Arc::new(ManualTurns::default());
    let s = SqliteStorage::open(&DatabaseLocation::file(p), h.clone(), Arc::new(DurableOnReturn), settings)
        .unwrap();
    (s, h)
}

fn open(name: &str) -> (SqliteStorage, Arc<ManualTurns>, std::path::PathBuf) {
    let p = path(name);
    let (s, h) = open_at(&p, SqliteSettings::default());
    (s, h, p)
}

const CONFIRMED: WriteOptions = WriteOptions { allow_unconfirmed: false };
const UNCONFIRMED: WriteOptions = WriteOptions { allow_unconfirmed: true };

fn count(s: &SqliteStorage, table: &str) -> i64 {
    match s.exec(&format!("SELECT count(*) AS n FROM {table}"), &[]).unwrap().one().unwrap().get("n") {
        Some(SqlValue::Integer(n)) => *n,
        other => panic!("count: {other:?}"),
    }
}

#[test]
fn writes_of_one_turn_commit_together_at_the_end_of_the_turn() {
    let (s, h, p) = open("coalesce.db");
    let h_first = h.clone();
    s.exec("CREATE TABLE t(x)", &[]).unwrap();
    h.end_turn();
    for i in 0..10 {
        s.exec("INSERT INTO t VALUES (?1)", &[SqlValue::Integer(i)]).unwrap();
        s.put(&format!("k{i}"), b"v", CONFIRMED).unwrap();
    }
    assert_eq!(h.pending_tasks(), 1, "one implicit transaction, one commit, for the whole turn");
    // Reads see the uncommitted writes (one connection).
    assert_eq!(count(&s, "t"), 10);
    // The object is reset before its turn ends: nothing of the turn reaches the database.
    s.shutdown(None);
    // The runtime still ends the turn; the commit finds nothing to commit. Then the instance is gone.
    h_first.end_turn();
    drop((s, h, h_first));
    let (s, _h) = open_at(&p, SqliteSettings::default());
    assert_eq!(count(&s, "t"), 0, "an uncommitted turn is all gone");
    assert_eq!(s.get("k0").unwrap(), None);
    // And a turn that ends commits all of it.
    let (s2, h2) = (s, _h);
    for i in 0..10 {
        s2.exec("INSERT INTO t VALUES (?1)", &[SqlValue::Integer(i)]).unwrap();
    }
    h2.end_turn();
    drop(s2);
    let (s3, _) = open_at(&p, SqliteSettings::default());
    assert_eq!(count(&s3, "t"), 10);
}

#[test]
fn appendix_a_16_confirmed_writes_lock_the_output_gate_until_commit_and_unconfirmed_do_not() {
    let (s, h, _) = open("gate.db");
    s.put("a", b"1", UNCONFIRMED).unwrap();
    assert_eq!(h.locks_taken(), 0, "an unconfirmed write does not lock the gate");
    s.put("b", b"2", CONFIRMED).unwrap();
    s.put("c", b"3", CONFIRMED).unwrap();
    assert_eq!(h.locks_taken(), 1, "the first confirmed write locks it, once per transaction");
    h.end_turn();
    assert_eq!(h.lock_outcomes(), vec![Ok(())], "released after the commit");
    // Direct SQL writes are always confirmed.
    s.exec("CREATE TABLE t(x)", &[]).unwrap();
    assert_eq!(h.locks_taken(), 1);
    h.end_turn();
    assert_eq!(h.lock_outcomes(), vec![Ok(())]);
    // Reads take no lock and open no transaction.
    s.get("a").unwrap();
    s.exec("SELECT * FROM t", &[]).unwrap();
    assert_eq!((h.locks_taken(), h.pending_tasks()), (0, 0));
}

#[test]
fn sql_3_2_a_constraint_violated_at_commit_resets_the_object_with_the_spec_message() {
    let (s, h, _) = open("constraint.db");
    s.exec("CREATE TABLE p(id INTEGER PRIMARY KEY); CREATE TABLE c(p REFERENCES p(id))", &[]).unwrap();
    s.exec("PRAGMA foreign_keys = ON", &[]).unwrap();
    h.end_turn();
    h.lock_outcomes();
    s.exec("PRAGMA defer_foreign_keys = ON", &[]).unwrap();
    s.exec("INSERT INTO c VALUES (42)", &[]).unwrap();
    h.end_turn();
    let outcomes = h.lock_outcomes();
    assert_eq!(outcomes.len(), 1);
    let e = outcomes[0].clone().unwrap_err();
    assert_eq!(
        e.message(),
        "Durable Object was reset and rolled back to its last known good state because the application left the \
         database in a state where constraints were violated: FOREIGN KEY constraint failed: SQLITE_CONSTRAINT"
    );
    assert!(e.durable_object_reset());
    // Every later call fails with it.
    assert_eq!(s.get("x").unwrap_err(), e);
    assert_eq!(s.exec("SELECT 1", &[]).unwrap_err(), e);
}

#[test]
fn sql_3_3_transaction_sync_commits_or_rolls_back_without_resetting() {
    let (s, h, _) = open("txn_sync.db");
    s.exec("CREATE TABLE t(x)", &[]).unwrap();
    let r: Result<(), Error> = s.transaction_sync(|| {
        s.exec("INSERT INTO t VALUES (1)", &[])?;
        Err(Error::new("changed my mind"))
    });
    assert_eq!(r.unwrap_err().message(), "changed my mind");
    assert_eq!(count(&s, "t"), 0, "rolled back to the savepoint");
    let v = s
        .transaction_sync(|| {
            s.exec("INSERT INTO t VALUES (2)", &[])?;
            // Nested: the inner failure rolls back only the inner savepoint.
            let inner: Result<(), Error> = s.transaction_sync(|| {
                s.exec("INSERT INTO t VALUES (3)", &[])?;
                Err(Error::new("inner"))
            });
            assert!(inner.is_err());
            Ok(7)
        })
        .unwrap();
    assert_eq!(v, 7);
    assert_eq!(count(&s, "t"), 1);
    h.end_turn();
    assert!(h.lock_outcomes().iter().all(|o| o.is_ok()));
    assert!(s.get("anything").is_ok(), "the object was not reset");
}

#[test]
fn sql_3_3_transaction_waits_for_the_implicit_commit_and_rolls_back_on_error() {
    let (s, h, _) = open("txn_async.db");
    s.exec("CREATE TABLE t(x)", &[]).unwrap();
    let r: Result<(), Error> = block_on(s.transaction(|_| async {
        s.exec("INSERT INTO t VALUES (1)", &[])?;
        Err(Error::new("nope"))
    }));
    assert_eq!(r.unwrap_err().message(), "nope");
    assert_eq!(count(&s, "t"), 0);
    let r = block_on(s.transaction(|_| async {
        s.exec("INSERT INTO t VALUES (2)", &[])?;
        Ok(5)
    }));
    assert_eq!(r.unwrap(), 5);
    assert_eq!(count(&s, "t"), 1);
    assert!(h.lock_outcomes().iter().all(|o| o.is_ok()), "the root commit's confirmed write locked the gate");
}

#[test]
fn sql_3_4_delete_all_wipes_tables_and_keys_atomically_and_keeps_the_alarm_by_default() {
    for deletes_alarm in [false, true] {
        let p = path(&format!("delete_all_{deletes_alarm}.db"));
        let (s, h) = open_at(&p, SqliteSettings { delete_all_deletes_alarm: deletes_alarm });
        s.exec("CREATE TABLE t(x); CREATE INDEX ti ON t(x); CREATE VIEW v AS SELECT * FROM t", &[]).unwrap();
        s.exec("INSERT INTO t VALUES (1)", &[]).unwrap();
        s.put("k", b"v", CONFIRMED).unwrap();
        s.set_alarm(1_000, CONFIRMED).unwrap();
        h.end_turn();
        s.put("uncommitted", b"x", CONFIRMED).unwrap();
        block_on(s.delete_all()).unwrap();
        assert!(s.exec("SELECT * FROM t", &[]).is_err(), "the table is gone");
        assert_eq!(s.get("k").unwrap(), None);
        assert_eq!(s.get("uncommitted").unwrap(), None, "the turn's writes were rolled back");
        let expected = if deletes_alarm { None } else { Some(1_000) };
        assert_eq!(s.get_alarm().unwrap(), expected);
        h.end_turn();
        drop(s);
        let (s, _) = open_at(&p, SqliteSettings::default());
        assert_eq!(s.get("k").unwrap(), None, "durably gone");
        assert_eq!(s.get_alarm().unwrap(), expected);
    }
}

#[test]
fn delete_all_inside_a_transaction_is_refused() {
    let (s, _h, _) = open("delete_all_txn.db");
    let r = s.transaction_sync(|| block_on(s.delete_all()));
    assert_eq!(r.unwrap_err().message(), "Cannot call deleteAll() within a transaction");
}

fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(f).poll(&mut cx)
}

#[test]
fn appendix_a_17_sync_resolves_at_once_when_idle_and_after_the_commit_otherwise() {
    let (s, h, _) = open("sync.db");
    assert!(matches!(poll_once(&mut Box::pin(s.sync())), std::task::Poll::Ready(Ok(()))), "nothing pending");
    s.put("a", b"1", UNCONFIRMED).unwrap();
    let mut waiting = Box::pin(s.sync());
    assert!(
        poll_once(&mut waiting).is_pending(),
        "sync waits for the pending commit, unconfirmed writes included"
    );
    h.end_turn();
    assert!(matches!(poll_once(&mut waiting), std::task::Poll::Ready(Ok(()))));
}

#[test]
fn alarms_4_set_get_delete_and_the_time_must_be_positive() {
    let (s, h, _) = open("alarm.db");
    assert_eq!(s.get_alarm().unwrap(), None, "Appendix A.1: initially unset");
    let e = s.set_alarm(0, CONFIRMED).unwrap_err();
    assert_eq!(e.to_string(), "TypeError: setAlarm() cannot be called with an alarm time <= 0");
    s.set_alarm(5_000, CONFIRMED).unwrap();
    assert_eq!(s.get_alarm().unwrap(), Some(5_000));
    h.end_turn();
    h.lock_outcomes();
    s.set_alarm(5_000, CONFIRMED).unwrap();
    assert_eq!((h.pending_tasks(), h.locks_taken()), (0, 0), "Appendix A.6: the same time writes nothing");
    s.delete_alarm(CONFIRMED).unwrap();
    assert_eq!(s.get_alarm().unwrap(), None);
    h.end_turn();
}

#[test]
fn shutdown_discards_the_open_turn_and_fails_every_later_call() {
    let (s, h, _) = open("shutdown.db");
    s.put("a", b"1", CONFIRMED).unwrap();
    s.shutdown(None);
    let outcomes = h.lock_outcomes();
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].clone().unwrap_err().message(), "Durable Object storage is no longer accessible.");
    let e = s.get("a").unwrap_err();
    assert_eq!(e.message(), "Durable Object storage is no longer accessible.");
    assert!(e.retryable() && e.durable_object_reset());
}

#[test]
fn sql_3_3_a_root_transaction_sync_commits_with_the_turn_and_locks_the_gate_for_its_writes() {
    let (s, h, p) = open("txn_sync_turn.db");
    s.exec("CREATE TABLE t(x)", &[]).unwrap();
    h.end_turn();
    h.lock_outcomes();
    s.transaction_sync(|| s.exec("INSERT INTO t VALUES (1)", &[]).map(|_| ())).unwrap();
    assert_eq!(h.pending_tasks(), 1, "the savepoint joined the turn's implicit transaction");
    assert_eq!(h.locks_taken(), 1, "its confirmed write locks the output gate until the turn commits");
    // A read-only transaction_sync takes no lock.
    let (s2, h2, _) = open("txn_sync_read.db");
    s2.transaction_sync(|| s2.exec("SELECT 1", &[]).map(|_| ())).unwrap();
    assert_eq!(h2.locks_taken(), 0);
    // The turn is cut before it ends: the savepoint's write is gone too.
    s.shutdown(None);
    h.end_turn();
    drop((s, h));
    let (s, _) = open_at(&p, SqliteSettings::default());
    assert_eq!(count(&s, "t"), 0);
}

#[test]
fn appendix_a_13_alarm_calls_and_writes_fail_once_the_object_is_broken() {
    let (s, h, _) = open("broken_alarm.db");
    s.exec("CREATE TABLE p(id INTEGER PRIMARY KEY); CREATE TABLE c(p REFERENCES p(id))", &[]).unwrap();
    s.exec("PRAGMA foreign_keys = ON", &[]).unwrap();
    h.end_turn();
    s.exec("PRAGMA defer_foreign_keys = ON; INSERT INTO c VALUES (1)", &[]).unwrap();
    h.end_turn();
    let e = h.lock_outcomes().into_iter().find_map(Result::err).expect("the commit failed");
    assert_eq!(s.get_alarm().unwrap_err(), e);
    assert_eq!(s.set_alarm(5, CONFIRMED).unwrap_err(), e);
    assert_eq!(s.delete_alarm(CONFIRMED).unwrap_err(), e);
    assert_eq!(s.put("k", b"v", UNCONFIRMED).unwrap_err(), e);
}

#[test]
fn appendix_a_14_delete_all_keeps_the_alarm_unless_the_setting_deletes_it() {
    for (deletes_alarm, expected) in [(false, Some(7_000)), (true, None)] {
        let p = path(&format!("a14_{deletes_alarm}.db"));
        let (s, h) = open_at(&p, SqliteSettings { delete_all_deletes_alarm: deletes_alarm });
        s.set_alarm(7_000, CONFIRMED).unwrap();
        h.end_turn();
        block_on(s.delete_all()).unwrap();
        assert_eq!(s.get_alarm().unwrap(), expected);
        // And an unset alarm stays unset.
        block_on(s.delete_all()).unwrap();
        assert_eq!(s.get_alarm().unwrap(), expected);
    }
}

#[test]
fn appendix_a_15_rolling_back_a_transaction_restores_the_alarm_and_committing_keeps_it() {
    let (s, h, _) = open("a15.db");
    s.set_alarm(1_000, CONFIRMED).unwrap();
    h.end_turn();
    let r: Result<(), Error> = s.transaction_sync(|| {
        s.set_alarm(2_000, CONFIRMED)?;
        // Nested: its change is rolled back with it.
        let inner: Result<(), Error> = s.transaction_sync(|| {
            s.delete_alarm(CONFIRMED)?;
            Err(Error::new("inner"))
        });
        assert!(inner.is_err());
        assert_eq!(s.get_alarm()?, Some(2_000));
        Err(Error::new("outer"))
    });
    assert!(r.is_err());
    assert_eq!(s.get_alarm().unwrap(), Some(1_000), "rolled back to the alarm before the transaction");
    s.transaction_sync(|| s.set_alarm(3_000, CONFIRMED)).unwrap();
    assert_eq!(s.get_alarm().unwrap(), Some(3_000), "committing keeps it");
}

#[test]
fn appendix_a_18_explicit_transactions_lock_the_gate_only_for_confirmed_writes() {
    // Unconfirmed writes only: no lock at commit.
    let (s, h, _) = open("a18_unconfirmed.db");
    let storage = Storage::sqlite(s.clone());
    block_on(storage.transaction(async |_| s.put("a", b"1", UNCONFIRMED))).unwrap();
    assert_eq!(h.locks_taken(), 0);
    // A confirmed write in a nested transaction propagates to the root, which locks at commit.
    block_on(storage.transaction(async |_| {
        s.transaction_sync(|| s.put("b", b"2", CONFIRMED))?;
        Ok(())
    }))
    .unwrap();
    assert_eq!(h.lock_outcomes(), vec![Ok(())]);
    // A rollback resets the confirmed flag: nothing to hold.
    block_on(storage.transaction(async |txn| {
        s.put("c", b"3", CONFIRMED)?;
        txn.rollback()
    }))
    .unwrap();
    assert_eq!(h.locks_taken(), 0);
    assert_eq!(s.get("c").unwrap(), None);
}

// ---------------------------------------------------------------------------------------------------------
// The alarm handler's storage side (Appendix A.4–A.11, A.19). The runtime's scheduler is the other side; it
// is tested under simulation (`scenarios/tests/runtime/alarms.rs`).

use crate::future::LocalFuture;
use crate::storage::api::ObjectHooks;
use crate::storage::sqlite::AlarmArm;

/// Records the alarm times the runtime would schedule, and whether the database had committed them then.
#[derive(Default)]
struct RecordingHooks {
    noted: std::sync::Mutex<Vec<i64>>,
}

impl ObjectHooks for RecordingHooks {
    fn before_set_alarm(&self, scheduled_ms: i64) -> Result<(), Error> {
        self.noted.lock().unwrap().push(scheduled_ms);
        Ok(())
    }
    fn critical_section<'a>(&self, body: LocalFuture<'a, ()>) -> LocalFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            body.await;
            Ok(())
        })
    }
}

#[test]
fn appendix_a_04_alarm_changes_commit_with_the_turns_writes_and_plain_writes_do_not_schedule() {
    let (s, h, _p) = open("a04.db");
    let hooks = Arc::new(RecordingHooks::default());
    let storage = Storage::sqlite(s.clone()).with_object_hooks(hooks.clone());
    block_on(storage.put("k", &1)).unwrap();
    h.end_turn();
    assert!(
        hooks.noted.lock().unwrap().is_empty(),
        "a write without an alarm change does not touch the scheduler"
    );
    block_on(storage.set_alarm(5_000)).unwrap();
    block_on(storage.put("k", &2)).unwrap();
    // Scheduled before the commit (A.5): the turn's one implicit transaction, alarm and write together, has
    // not committed yet.
    assert_eq!(*hooks.noted.lock().unwrap(), vec![5_000]);
    assert_eq!(h.pending_tasks(), 1, "the alarm change and the write are one transaction");
    h.end_turn();
    assert_eq!(s.get_alarm().unwrap(), Some(5_000));
    assert_eq!(block_on(storage.get::<i32>("k")).unwrap(), Some(2));
}

#[test]
fn appendix_a_07_arming_a_handler_runs_cancels_or_reschedules() {
    let (s, h, _p) = open("a07.db");
    assert_eq!(s.arm_alarm_handler(1_000).unwrap(), AlarmArm::Cancel, "no alarm: nothing runs");
    s.set_alarm(2_000, CONFIRMED).unwrap();
    h.end_turn();
    assert_eq!(s.arm_alarm_handler(1_000).unwrap(), AlarmArm::Reschedule(2_000), "the alarm moved: run then");
    assert_eq!(s.arm_alarm_handler(2_000).unwrap(), AlarmArm::Run);
    s.finish_alarm_handler(false).unwrap();
}

#[test]
fn appendix_a_08_the_running_alarm_reads_null_and_is_deleted_unless_the_handler_set_one() {
    let (s, h, _p) = open("a08.db");
    s.set_alarm(1_000, CONFIRMED).unwrap();
    h.end_turn();
    assert_eq!(s.arm_alarm_handler(1_000).unwrap(), AlarmArm::Run);
    assert_eq!(s.get_alarm().unwrap(), None, "getAlarm is null during the handler");
    s.finish_alarm_handler(true).unwrap();
    h.end_turn();
    assert_eq!(s.get_alarm().unwrap(), None, "a handler with no writes deletes the alarm");
    assert_eq!(h.lock_outcomes().last(), Some(&Ok(())), "the deletion is confirmed: the gate waits for it");

    s.set_alarm(3_000, CONFIRMED).unwrap();
    h.end_turn();
    assert_eq!(s.arm_alarm_handler(3_000).unwrap(), AlarmArm::Run);
    s.set_alarm(9_000, CONFIRMED).unwrap();
    assert_eq!(s.get_alarm().unwrap(), Some(9_000), "the handler sees the alarm it set");
    s.finish_alarm_handler(true).unwrap();
    h.end_turn();
    assert_eq!(s.get_alarm().unwrap(), Some(9_000), "a handler that set a new alarm keeps it");
}

#[test]
fn appendix_a_09_cancel_deferred_deletion_keeps_the_alarm_only_during_a_handler_and_is_idempotent() {
    let (s, h, _p) = open("a09.db");
    s.set_alarm(1_000, CONFIRMED).unwrap();
    h.end_turn();
    s.cancel_deferred_alarm_deletion();
    assert_eq!(s.get_alarm().unwrap(), Some(1_000), "outside a handler it has no effect");
    assert_eq!(s.arm_alarm_handler(1_000).unwrap(), AlarmArm::Run);
    s.cancel_deferred_alarm_deletion();
    s.cancel_deferred_alarm_deletion();
    s.finish_alarm_handler(true).unwrap();
    h.end_turn();
    assert_eq!(s.get_alarm().unwrap(), Some(1_000), "cancelled: the alarm stays");
}

#[test]
fn appendix_a_10_a_failed_handler_keeps_its_alarm_and_cleanup_works_on_a_broken_object() {
    let (s, h, _p) = open("a10.db");
    s.set_alarm(1_000, CONFIRMED).unwrap();
    h.end_turn();
    assert_eq!(s.arm_alarm_handler(1_000).unwrap(), AlarmArm::Run);
    s.finish_alarm_handler(false).unwrap();
    assert_eq!(s.get_alarm().unwrap(), Some(1_000), "a failure keeps the alarm, to be retried");
    assert_eq!(s.arm_alarm_handler(1_000).unwrap(), AlarmArm::Run);
    s.shutdown(None);
    // Cleanup of the handler after the object broke does not panic; nothing is deleted.
    let _ = s.finish_alarm_handler(true);
}

#[test]
fn appendix_a_19_abandoning_deletes_only_that_alarm_and_nothing_while_a_handler_runs() {
    let (s, h, _p) = open("a19.db");
    assert_eq!(s.abandon_alarm(1_000).unwrap(), None, "no alarm: nothing to do");
    s.set_alarm(2_000, CONFIRMED).unwrap();
    h.end_turn();
    assert_eq!(
        s.abandon_alarm(1_000).unwrap(),
        Some(2_000),
        "replaced by another alarm: that one is returned"
    );
    assert_eq!(s.arm_alarm_handler(2_000).unwrap(), AlarmArm::Run);
    assert_eq!(s.abandon_alarm(2_000).unwrap(), None, "none while a handler runs");
    s.finish_alarm_handler(false).unwrap();
    assert_eq!(s.get_alarm().unwrap(), Some(2_000));
    assert_eq!(s.abandon_alarm(2_000).unwrap(), None);
    h.end_turn();
    assert_eq!(s.get_alarm().unwrap(), None, "abandoned: deleted");
}

// ------------------------------------------------------------------------------------------------------------
// Failures inside an open transaction (found by mutation testing, docs/MUTATION.md): what is rolled back, and
// what every later call returns.

#[test]
fn sql_3_2_a_commit_failed_on_a_constraint_is_rolled_back_and_a_restore_requested_in_its_turn_stands() {
    let (s, h, p) = open("constraint_restore.db");
    s.exec("CREATE TABLE p(id INTEGER PRIMARY KEY); CREATE TABLE c(p REFERENCES p(id))", &[]).unwrap();
    s.exec("PRAGMA foreign_keys = ON", &[]).unwrap();
    s.put("k", b"1", CONFIRMED).unwrap();
    h.end_turn();
    let good = s.get_current_bookmark().unwrap();
    s.put("k", b"2", CONFIRMED).unwrap();
    h.end_turn();
    h.lock_outcomes();
    // One turn writes, asks for a restore to `good` (the request joins the turn's open transaction), and
    // leaves a deferred constraint violated: its commit fails (SQLite keeps the transaction open after a
    // constraint failure at COMMIT).
    s.put("k", b"3", CONFIRMED).unwrap();
    s.on_next_session_restore_bookmark(&good).unwrap();
    s.exec("PRAGMA defer_foreign_keys = ON; INSERT INTO c VALUES (42)", &[]).unwrap();
    h.end_turn();
    let e = h.lock_outcomes().into_iter().find_map(Result::err).expect("the commit failed");
    assert!(e.durable_object_reset());
    assert_eq!(s.get("k").unwrap_err(), e, "every later call fails with the commit's error");
    assert_eq!(s.put("k", b"4", UNCONFIRMED).unwrap_err(), e);
    s.shutdown(None);
    drop((s, h));
    // The next instance: the failed turn is gone, but the restore it asked for stands, as after an abort.
    let (s, _h) = open_at(&p, SqliteSettings::default());
    assert_eq!(s.get("k").unwrap(), Some(b"1".to_vec()), "restored to the bookmark");
    assert_eq!(count(&s, "c"), 0);
}

#[test]
fn sql_3_4_a_delete_all_that_fails_midway_is_rolled_back_and_storage_goes_on() {
    let (s, h, p) = open("delete_all_fails.db");
    s.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)", &[]).unwrap();
    s.put("k", b"v", CONFIRMED).unwrap();
    h.end_turn();
    h.lock_outcomes();
    // A fault inside deleteAll()'s transaction: emptying the KV table fails (a trigger no application can
    // create on an internal table stands in for it).
    s.with_raw_connection(|c| {
        c.execute_batch(
            "CREATE TEMP TRIGGER fault BEFORE DELETE ON main._cf_KV BEGIN SELECT RAISE(ABORT, 'injected'); END",
        )
    })
    .unwrap();
    let e = block_on(s.delete_all()).unwrap_err();
    assert!(e.message().starts_with(&crate::error::messages::delete_all_internal("")), "{e:?}");
    assert!(e.message().contains("injected: SQLITE_CONSTRAINT"), "with SQLite's error as reference: {e:?}");
    assert_eq!(h.lock_outcomes(), vec![Err(e)], "its output lock fails: the object is reset");
    s.with_raw_connection(|c| c.execute_batch("DROP TRIGGER temp.fault")).unwrap();
    // Until the reset, the turn goes on: nothing was deleted, and no transaction was left open.
    assert_eq!(count(&s, "t"), 1);
    assert_eq!(s.get("k").unwrap(), Some(b"v".to_vec()));
    s.put("k2", b"w", CONFIRMED).unwrap();
    h.end_turn();
    assert_eq!(h.lock_outcomes(), vec![Ok(())]);
    drop((s, h));
    let (s, _h) = open_at(&p, SqliteSettings::default());
    assert_eq!((count(&s, "t"), s.get("k2").unwrap()), (1, Some(b"w".to_vec())));
}

#[test]
fn sql_3_2_a_critical_error_in_a_turn_breaks_the_object_for_good_and_rolls_the_turn_back() {
    let (s, h, p) = open("critical.db");
    s.exec("CREATE TABLE t(x)", &[]).unwrap();
    h.end_turn();
    h.lock_outcomes();
    s.put("k", b"1", CONFIRMED).unwrap();
    let mut synced = Box::pin(s.sync());
    assert!(poll_once(&mut synced).is_pending());
    // The disk fills up (a page limit stands in for it): SQLite rolls the whole transaction back.
    s.with_raw_connection(|c| {
        let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        c.execute_batch(&format!("PRAGMA max_page_count = {}", pages + 1))
    })
    .unwrap();
    let e = s.exec("INSERT INTO t VALUES (zeroblob(100000))", &[]).unwrap_err();
    assert_eq!(e.message(), "database or disk is full: SQLITE_FULL");
    assert!(e.durable_object_reset(), "the object is reset: {e:?}");
    assert_eq!(h.lock_outcomes(), vec![Err(e.clone())], "the turn's output lock fails with it");
    assert!(matches!(poll_once(&mut synced), std::task::Poll::Ready(Err(x)) if x == e), "so does sync()");
    // Every later call fails with the same error, and the turn's commit finds nothing to commit.
    assert_eq!(s.get("k").unwrap_err(), e);
    assert_eq!(s.put("k", b"2", UNCONFIRMED).unwrap_err(), e);
    assert_eq!(s.exec("SELECT 1", &[]).unwrap_err(), e);
    assert_eq!(s.get_alarm().unwrap_err(), e);
    assert_eq!(block_on(s.sync()).unwrap_err(), e);
    assert_eq!(block_on(s.delete_all()).unwrap_err(), e);
    h.end_turn();
    assert_eq!(h.locks_taken(), 0);
    drop(synced);
    drop((s, h));
    let (s, _h) = open_at(&p, SqliteSettings::default());
    assert_eq!((s.get("k").unwrap(), count(&s, "t")), (None, 0), "the turn's writes are gone");
}
