//! The SQLite backend: one database and one connection per object, and the transactions around every write.
//!
//! # Write coalescing (spec §3.2)
//! The first write of a turn (a SQL statement that is not read-only, a KV put or delete, an alarm change) opens
//! an *implicit transaction* and asks the runtime to commit it once the turn has ended
//! ([`TurnHooks::after_turn`](super::gates::TurnHooks::after_turn)). Every write made before that commit joins it, so all writes made without
//! yielding commit atomically; on the simulated disk that is crash-atomic (SQLite's journal does the rest).
//!
//! # Output gate (spec §1.4, §3.2, Appendix A.16)
//! The first *confirmed* write of an implicit transaction locks the output gate until the commit is durable
//! (the `COMMIT` returned and the embedder's [`DurabilityWait`] passed). Writes with `allow_unconfirmed` do not
//! lock it, but a failed commit breaks the gate all the same. SQL writes are always confirmed.
//!
//! # Failures (spec §3.2)
//! A constraint violated at commit resets the object with the spec's message; a critical error (`SQLITE_FULL`,
//! `SQLITE_IOERR`, `SQLITE_NOMEM`, `SQLITE_INTERRUPT`), after which SQLite has rolled the transaction back,
//! breaks the object: the gate breaks and every later storage call fails with the same error.
//!
//! # Explicit transactions (spec §3.3)
//! `transaction_sync` and `transaction` open savepoints (`_cf_sync_savepoint_<n>`, `_cf_savepoint_<n>`); a
//! failing closure rolls back to its savepoint and the error is returned without resetting the object.
//!
//! # Point-in-time recovery (spec §3.6)
//! Every commit also writes its history entry, in the same transaction (see [`super::pitr`]); a pending
//! restore is applied when the database is opened.

use std::sync::{Arc, Mutex, MutexGuard};

use madsim_tokio::sync::oneshot;
use rusqlite::Connection;

use super::gates::{Hooks, OutputLock};
use super::kv::{self, ListOptions};
use super::pitr::Pitr;
use super::replica;
use super::sql::{self, Cursor, SqlValue};
use crate::error::{messages, Error};
use crate::location::DatabaseLocation;
use crate::world::{Clock, DurabilityWait, DurableOnReturn, ManualClock};

/// Where the alarm lives in `_cf_METADATA` (spec §3.1).
const METADATA_ALARM_KEY: i64 = 1;

/// Settings of the SQLite backend that the spec leaves to compatibility flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SqliteSettings {
    /// `delete_all_deletes_alarm` (spec §2.6, §3.4; default for compatibility dates ≥ 2026-02-24): `delete_all`
    /// deletes the alarm too. Off: the alarm survives `delete_all`.
    pub delete_all_deletes_alarm: bool,
}

/// Options of a write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Do not hold the output gate for this write (spec §2.5). A failure still breaks the gate.
    pub allow_unconfirmed: bool,
}

/// The open implicit transaction of the current turn.
struct Implicit {
    /// Held from the first confirmed write until the commit is durable.
    output: Option<OutputLock>,
    /// `sync()` calls waiting for this commit.
    waiters: Vec<oneshot::Sender<Result<(), Error>>>,
}

/// One open savepoint of an explicit transaction.
struct Level {
    name: String,
    /// A confirmed write happened at this level or a nested one (spec §3.3: it propagates to the parent).
    confirmed: bool,
}

#[derive(Default)]
struct Tx {
    implicit: Option<Implicit>,
    levels: Vec<Level>,
    /// Once set, every storage call fails with it.
    broken: Option<Error>,
    /// The alarm handler running now, if any (spec §4).
    handler: Option<RunningHandler>,
}

/// An alarm handler in progress (spec §4, Appendix A.8–A.10): the alarm it runs reads as deleted, and is
/// deleted on success unless the handler wrote the alarm or cancelled the deletion.
#[derive(Clone, Copy, Debug)]
struct RunningHandler {
    scheduled_ms: i64,
    /// The handler set or deleted the alarm itself: that write stands.
    wrote_alarm: bool,
    /// `cancel_deferred_alarm_deletion` was called.
    cancelled: bool,
}

/// What [`SqliteStorage::arm_alarm_handler`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AlarmArm {
    /// The alarm is that time: the handler runs, and the alarm reads as deleted meanwhile.
    Run,
    /// The alarm is now another time (it moved): run then instead.
    Reschedule(i64),
    /// There is no alarm (it was deleted): nothing runs.
    Cancel,
}

struct State {
    /// First, so it drops (uninstalling its hook on the connection) before the connection closes.
    pitr: Pitr,
    /// Application statements prepared on `conn`; before it, so they are finalized before it closes.
    sql_cache: sql::StatementCache,
    conn: Connection,
    tx: Tx,
}

struct Shared {
    state: Mutex<State>,
    hooks: Hooks,
    confirm: Confirm,
    settings: SqliteSettings,
}

/// What makes a commit's writes confirmed.
enum Confirm {
    /// The database is the object's storage: its writes are confirmed once durable on the disk.
    Local(Arc<dyn DurabilityWait>),
    /// The database is a replica (in a cluster): its writes are confirmed once a storage node has made them
    /// durable. Each commit's pages are taken from the replica shim and queued for shipping, in commit order.
    Replica(replica::ShipQueue),
}

/// A future of a commit's confirmation.
type Confirmation = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + Send>>;

/// The storage of one SQLite-backed object. Cheap to clone; every clone is the same storage.
#[derive(Clone)]
pub struct SqliteStorage {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SqliteStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStorage").field("settings", &self.shared.settings).finish_non_exhaustive()
    }
}

/// Marks the storage behind `shared` broken with `e` (a confirmation failed), if it still exists.
fn break_shared(shared: &std::sync::Weak<Shared>, e: &Error) {
    if let Some(shared) = shared.upgrade() {
        let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        state.tx.broken.get_or_insert(e.clone().with_reset());
    }
}

/// SQLite's message for `e`, in the spec's format (`<message>: SQLITE_<CODE>`).
fn sqlite_error(e: &rusqlite::Error) -> Error {
    sql::error_from_rusqlite(e)
}

impl SqliteStorage {
    /// Opens the object's database and prepares its connection (authorizer, limits), with a clock stopped
    /// at 0 for point-in-time recovery: every commit is stamped with time 0 (bookmarks still sort in commit
    /// order). Embedders that want `get_bookmark_for_time` to mean something use `SqliteStorage::open_with_clock`.
    pub fn open(
        location: &DatabaseLocation,
        hooks: Hooks,
        durability: Arc<dyn DurabilityWait>,
        settings: SqliteSettings,
    ) -> Result<SqliteStorage, Error> {
        Self::open_with_clock(location, hooks, durability, settings, Arc::new(ManualClock::new(0)))
    }

    /// Opens the object's database and prepares its connection (authorizer, limits, point-in-time recovery
    /// with `clock` as the node's time), and applies a restore requested by
    /// [`SqliteStorage::on_next_session_restore_bookmark`] in an earlier session. A restore that cannot be
    /// applied fails the open with its error and is discarded.
    pub(crate) fn open_with_clock(
        location: &DatabaseLocation,
        hooks: Hooks,
        durability: Arc<dyn DurabilityWait>,
        settings: SqliteSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<SqliteStorage, Error> {
        let mut conn = location.open().map_err(|e| Error::new(e.to_string()))?;
        sql::prepare_connection(&conn).map_err(|e| sqlite_error(&e))?;
        let pitr = Pitr::open(&mut conn, clock)?;
        let state = State { conn, tx: Tx::default(), pitr, sql_cache: sql::StatementCache::new() };
        Ok(SqliteStorage {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                hooks,
                confirm: Confirm::Local(durability),
                settings,
            }),
        })
    }

    /// [`SqliteStorage::open_with_clock`] on a replica (a database on the replica shim, rebuilt from a storage
    /// node): every commit's pages go to `ships`, and the commit is confirmed when the storage node has them.
    /// What the open itself wrote (point-in-time recovery's tables on a new database) ships with the first
    /// commit.
    pub(crate) fn open_replica(
        location: &DatabaseLocation,
        hooks: Hooks,
        ships: replica::ShipQueue,
        settings: SqliteSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<SqliteStorage, Error> {
        let storage = Self::open_with_clock(location, hooks, Arc::new(DurableOnReturn), settings, clock)?;
        let shared = Arc::into_inner(storage.shared).expect("a storage just opened has one handle");
        Ok(SqliteStorage { shared: Arc::new(Shared { confirm: Confirm::Replica(ships), ..shared }) })
    }

    /// What confirms the writes committed so far: call right after a commit, with no transaction open.
    fn confirm(&self, conn: &Connection) -> Confirmation {
        match &self.shared.confirm {
            Confirm::Local(durability) => {
                let wait = durability.wait();
                Box::pin(async move {
                    wait.await;
                    Ok(())
                })
            }
            Confirm::Replica(ships) => {
                let page_size = conn.query_row("PRAGMA page_size", [], |r| r.get::<_, u32>(0));
                let batch = replica::take_changes(conn).and_then(|changes| match page_size {
                    Ok(size) => replica::fold(&changes, size),
                    Err(e) => Err(replica::ReplicaError::Sqlite(e.to_string())),
                });
                let (done, confirmed) = madsim_tokio::sync::oneshot::channel();
                let _ = ships.send(replica::Shipment { batch, done });
                Box::pin(async move {
                    confirmed.await.unwrap_or_else(|_| {
                        Err(Error::new(messages::STORAGE_NO_LONGER_ACCESSIBLE).with_retryable().with_reset())
                    })
                })
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock was a bug that already failed the run; keep going to report it.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `op` on the connection unless the storage is broken, and handles a critical error it caused.
    fn with_state<R>(
        &self,
        op: impl FnOnce(&Connection, &mut Tx, &dyn Fn(&mut Tx, bool) -> Result<(), Error>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        self.with_state_pitr(|conn, tx, _, _, begin| op(conn, tx, begin))
    }

    /// [`SqliteStorage::with_state`], with the point-in-time recovery state too.
    fn with_state_pitr<R>(
        &self,
        op: impl FnOnce(
            &Connection,
            &mut Tx,
            &mut Pitr,
            &mut sql::StatementCache,
            &dyn Fn(&mut Tx, bool) -> Result<(), Error>,
        ) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let mut guard = self.lock();
        let State { conn, tx, pitr, sql_cache } = &mut *guard;
        if let Some(e) = &tx.broken {
            return Err(e.clone());
        }
        let in_txn_before = tx.implicit.is_some() || !tx.levels.is_empty();
        let begin = |tx: &mut Tx, confirmed: bool| self.begin_write(conn, tx, confirmed);
        let result = op(conn, tx, pitr, sql_cache, &begin);
        if let Err(e) = &result {
            let in_txn = in_txn_before || tx.implicit.is_some() || !tx.levels.is_empty();
            if in_txn && conn.is_autocommit() {
                // SQLite rolled the whole transaction back: a critical error (spec §3.2). The caller gets the
                // error the object is now broken with (flagged as a reset), like every later call.
                self.break_storage(tx, e.clone());
                return Err(tx.broken.clone().expect("break_storage sets it"));
            }
        }
        result
    }

    /// Opens the implicit transaction if no transaction is open, schedules its commit, and locks the output
    /// gate for a confirmed write.
    fn begin_write(&self, conn: &Connection, tx: &mut Tx, confirmed: bool) -> Result<(), Error> {
        if let Some(level) = tx.levels.last_mut() {
            level.confirmed |= confirmed;
            return Ok(());
        }
        if tx.implicit.is_none() {
            conn.prepare_cached("BEGIN").and_then(|mut s| s.execute([])).map_err(|e| sqlite_error(&e))?;
            tx.implicit = Some(Implicit { output: None, waiters: Vec::new() });
            let me = self.clone();
            self.shared.hooks.after_turn(Box::pin(async move { me.commit_implicit().await }));
        }
        let implicit = tx.implicit.as_mut().expect("opened above");
        if confirmed && implicit.output.is_none() {
            implicit.output = Some(self.shared.hooks.lock_output());
        }
        Ok(())
    }

    /// Commits the turn's implicit transaction; releases the output gate once the commit is durable.
    async fn commit_implicit(&self) {
        let (implicit, result, confirmed) = {
            let mut guard = self.lock();
            let State { conn, tx, pitr, .. } = &mut *guard;
            let Some(implicit) = tx.implicit.take() else { return };
            assert!(
                tx.levels.is_empty(),
                "an implicit transaction never encloses an open savepoint at commit"
            );
            let result = pitr
                .before_commit(conn)
                .and_then(|()| conn.prepare_cached("COMMIT").and_then(|mut s| s.execute([])).map(|_| ()));
            match &result {
                Ok(()) => {
                    pitr.after_commit();
                    tracing::debug!(target: "dosim::storage", "commit");
                }
                Err(e) => {
                    tracing::debug!(target: "dosim::storage", "commit failed: {e}");
                    let err = commit_error(e);
                    if !conn.is_autocommit() {
                        let _ = conn.execute_batch("ROLLBACK");
                    }
                    pitr.after_rollback(conn);
                    tx.broken = Some(err);
                }
            }
            let confirmed = result.is_ok().then(|| self.confirm(conn));
            (implicit, result, confirmed)
        };
        let result = match (result, confirmed) {
            (Ok(()), Some(confirmed)) => confirmed.await,
            (Ok(()), None) => unreachable!("a commit that succeeded has its confirmation"),
            (Err(e), _) => Err(commit_error(&e)),
        };
        match result {
            Ok(()) => {
                if let Some(lock) = implicit.output {
                    lock.release();
                }
                for w in implicit.waiters {
                    let _ = w.send(Ok(()));
                }
            }
            Err(err) => {
                // A confirmation that failed leaves the storage broken, like a commit that failed.
                {
                    let mut guard = self.lock();
                    if guard.tx.broken.is_none() {
                        guard.tx.broken = Some(err.clone().with_reset());
                    }
                }
                match implicit.output {
                    Some(lock) => lock.fail(err.clone()),
                    None => self.shared.hooks.break_output(err.clone()),
                }
                for w in implicit.waiters {
                    let _ = w.send(Err(err.clone()));
                }
            }
        }
    }

    /// Breaks the storage for good: the gate breaks, the open implicit transaction is dropped, and every later
    /// call fails with `error` (flagged as a reset).
    fn break_storage(&self, tx: &mut Tx, error: Error) {
        let error = error.with_reset();
        tx.broken = Some(error.clone());
        tx.levels.clear();
        match tx.implicit.take() {
            Some(Implicit { output: Some(lock), waiters }) => {
                lock.fail(error.clone());
                for w in waiters {
                    let _ = w.send(Err(error.clone()));
                }
            }
            Some(Implicit { output: None, waiters }) => {
                self.shared.hooks.break_output(error.clone());
                for w in waiters {
                    let _ = w.send(Err(error.clone()));
                }
            }
            None => self.shared.hooks.break_output(error),
        }
    }

    /// Runs SQL (spec §3.5). Writes join the turn's implicit transaction and are confirmed.
    pub fn exec(&self, query: &str, params: &[SqlValue]) -> Result<Cursor, Error> {
        self.with_state_pitr(|conn, tx, _, cache, begin| {
            cache.exec(conn, query, params, &mut || begin(tx, true))
        })
    }

    /// The database's size in bytes (spec §3.5 `databaseSize`).
    pub(crate) fn database_size(&self) -> Result<u64, Error> {
        self.with_state(|conn, _, _| sql::database_size(conn))
    }

    /// The value bytes stored under `key`.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.with_state(|conn, _, _| kv::get(conn, key))
    }

    /// The value bytes of every present key among `keys`, sorted by key.
    pub(crate) fn get_multiple(
        &self,
        keys: &[&str],
    ) -> Result<std::collections::BTreeMap<String, Vec<u8>>, Error> {
        self.with_state(|conn, _, _| kv::get_multiple(conn, keys))
    }

    /// Stores `value` under `key`.
    pub fn put(&self, key: &str, value: &[u8], options: WriteOptions) -> Result<(), Error> {
        self.with_state(|conn, tx, begin| {
            begin(tx, !options.allow_unconfirmed)?;
            kv::put(conn, key, value)
        })
    }

    /// Stores every pair, all or nothing (Appendix A.3).
    pub(crate) fn put_multiple(&self, entries: &[(&str, &[u8])], options: WriteOptions) -> Result<(), Error> {
        self.with_state(|conn, tx, begin| {
            begin(tx, !options.allow_unconfirmed)?;
            kv::put_multiple(conn, entries)
        })
    }

    /// Deletes `key`; true if it existed.
    pub(crate) fn delete(&self, key: &str, options: WriteOptions) -> Result<bool, Error> {
        self.with_state(|conn, tx, begin| {
            begin(tx, !options.allow_unconfirmed)?;
            kv::delete(conn, key)
        })
    }

    /// Deletes every key of `keys`; the number that existed.
    pub(crate) fn delete_multiple(&self, keys: &[&str], options: WriteOptions) -> Result<usize, Error> {
        self.with_state(|conn, tx, begin| {
            begin(tx, !options.allow_unconfirmed)?;
            kv::delete_multiple(conn, keys)
        })
    }

    /// The pairs `options` selects, in key order (or reverse).
    pub(crate) fn list(&self, options: &ListOptions) -> Result<Vec<(String, Vec<u8>)>, Error> {
        options.validate()?;
        self.with_state(|conn, _, _| kv::list(conn, options))
    }

    fn ensure_metadata(conn: &Connection) -> Result<(), Error> {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS _cf_METADATA (key INTEGER PRIMARY KEY, value BLOB)")
            .map_err(|e| sqlite_error(&e))
    }

    fn read_alarm(conn: &Connection) -> Result<Option<i64>, Error> {
        let exists: bool = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE name = '_cf_METADATA'", [], |r| r.get(0))
            .map_err(|e| sqlite_error(&e))?;
        if !exists {
            return Ok(None);
        }
        match conn
            .query_row("SELECT value FROM _cf_METADATA WHERE key = ?1", [METADATA_ALARM_KEY], |r| r.get(0))
        {
            Ok(v) => Ok(v),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
            Err(e) => Err(sqlite_error(&e)),
        }
    }

    /// The alarm's time in ms since the epoch, or `None` (spec §4).
    pub(crate) fn get_alarm(&self) -> Result<Option<i64>, Error> {
        self.with_state(|conn, tx, _| match tx.handler {
            // The running alarm is logically deleted while its handler runs (spec §4, Appendix A.8).
            Some(h) if !h.wrote_alarm => Ok(None),
            _ => Self::read_alarm(conn),
        })
    }

    /// Arms the handler of the alarm scheduled at `scheduled_ms` (spec §4, Appendix A.7): if the stored alarm
    /// is that time, the handler runs and the alarm reads as deleted until [`SqliteStorage::finish_alarm_handler`].
    pub(crate) fn arm_alarm_handler(&self, scheduled_ms: i64) -> Result<AlarmArm, Error> {
        self.with_state(|conn, tx, _| {
            assert!(tx.handler.is_none(), "one alarm handler at a time per object");
            match Self::read_alarm(conn)? {
                None => Ok(AlarmArm::Cancel),
                Some(t) if t != scheduled_ms => Ok(AlarmArm::Reschedule(t)),
                Some(_) => {
                    tx.handler = Some(RunningHandler { scheduled_ms, wrote_alarm: false, cancelled: false });
                    Ok(AlarmArm::Run)
                }
            }
        })
    }

    /// Keeps the running handler's alarm: it is not deleted when the handler ends (spec §4,
    /// `cancelDeferredAlarmDeletion`, Appendix A.9). Without a running handler it does nothing; idempotent.
    pub fn cancel_deferred_alarm_deletion(&self) {
        let mut guard = self.lock();
        if let Some(h) = guard.tx.handler.as_mut() {
            h.cancelled = true;
        }
    }

    /// The running handler ended (spec §4, Appendix A.8–A.10). On success its alarm is deleted, in the
    /// current turn's implicit transaction and confirmed (so the runtime's wait for the output gate makes the
    /// delete durable), unless the handler wrote the alarm itself or cancelled the deletion, or the alarm is
    /// no longer that time. On failure the alarm stays, to be retried.
    pub(crate) fn finish_alarm_handler(&self, success: bool) -> Result<(), Error> {
        let handler = self.lock().tx.handler.take();
        let Some(h) = handler else { return Ok(()) };
        if !success || h.wrote_alarm || h.cancelled {
            return Ok(());
        }
        self.with_state(|conn, tx, begin| {
            if Self::read_alarm(conn)? != Some(h.scheduled_ms) {
                return Ok(());
            }
            begin(tx, true)?;
            conn.execute("DELETE FROM _cf_METADATA WHERE key = ?1", [METADATA_ALARM_KEY])
                .map(|_| ())
                .map_err(|e| sqlite_error(&e))
        })
    }

    /// The scheduler gave up on the alarm at `scheduled_ms` (spec §4, Appendix A.19): if the stored alarm is
    /// still that time it is deleted, unconfirmed; returns the alarm that replaced it, if one did. Returns
    /// `None` and changes nothing while a handler runs.
    pub(crate) fn abandon_alarm(&self, scheduled_ms: i64) -> Result<Option<i64>, Error> {
        self.with_state(|conn, tx, begin| {
            if tx.handler.is_some() {
                return Ok(None);
            }
            match Self::read_alarm(conn)? {
                None => Ok(None),
                Some(t) if t != scheduled_ms => Ok(Some(t)),
                Some(_) => {
                    begin(tx, false)?;
                    conn.execute("DELETE FROM _cf_METADATA WHERE key = ?1", [METADATA_ALARM_KEY])
                        .map(|_| None)
                        .map_err(|e| sqlite_error(&e))
                }
            }
        })
    }

    /// Sets the alarm (spec §4). `scheduled_ms <= 0` is a TypeError; setting the time it already has writes
    /// nothing.
    pub(crate) fn set_alarm(&self, scheduled_ms: i64, options: WriteOptions) -> Result<(), Error> {
        if scheduled_ms <= 0 {
            return Err(Error::type_error(messages::SET_ALARM_NOT_POSITIVE));
        }
        self.with_state(|conn, tx, begin| {
            if let Some(h) = tx.handler.as_mut() {
                h.wrote_alarm = true;
            }
            if Self::read_alarm(conn)? == Some(scheduled_ms) {
                return Ok(());
            }
            begin(tx, !options.allow_unconfirmed)?;
            Self::ensure_metadata(conn)?;
            conn.execute(
                "INSERT INTO _cf_METADATA (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
                [METADATA_ALARM_KEY, scheduled_ms],
            )
            .map(|_| ())
            .map_err(|e| sqlite_error(&e))
        })
    }

    /// Deletes the alarm, if any.
    pub(crate) fn delete_alarm(&self, options: WriteOptions) -> Result<(), Error> {
        self.with_state(|conn, tx, begin| {
            if let Some(h) = tx.handler.as_mut() {
                h.wrote_alarm = true;
            }
            if Self::read_alarm(conn)?.is_none() {
                return Ok(());
            }
            begin(tx, !options.allow_unconfirmed)?;
            conn.execute("DELETE FROM _cf_METADATA WHERE key = ?1", [METADATA_ALARM_KEY])
                .map(|_| ())
                .map_err(|e| sqlite_error(&e))
        })
    }

    /// Runs `f` in a savepoint (spec §3.3 `transactionSync`): committed if it returns `Ok`, rolled back (and
    /// its error returned, the object not reset) if it returns `Err`. Nestable.
    ///
    /// A root `transaction_sync` nests in the turn's implicit transaction (opening it if needed, without locking
    /// the output gate): its writes commit with the turn's, and lock the gate if they are confirmed.
    pub(crate) fn transaction_sync<R>(&self, f: impl FnOnce() -> Result<R, Error>) -> Result<R, Error> {
        self.with_state(|_, tx, begin| begin(tx, false))?;
        let depth = self.open_level("_cf_sync_savepoint_")?;
        let result = f();
        self.close_level(depth, result)
    }

    /// Waits for the turn's implicit transaction, if one is open, to commit (spec §3.3: `transaction()` does
    /// before opening its savepoint).
    async fn settle_implicit(&self) -> Result<(), Error> {
        let open = self.lock().tx.implicit.is_some();
        if open {
            self.commit_implicit().await;
        }
        match &self.lock().tx.broken {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Runs the async closure in a savepoint (spec §3.3 `transaction`). Every storage call made meanwhile is
    /// part of it. The closure gets its savepoint's depth, for [`SqliteStorage::rollback_to`]. The root
    /// transaction locks the output gate at commit if it made a confirmed write.
    ///
    /// The runtime runs this inside `block_concurrency_while`, so no other event interleaves.
    pub(crate) async fn transaction<R, F, Fut>(&self, f: F) -> Result<R, Error>
    where
        F: FnOnce(usize) -> Fut,
        Fut: std::future::Future<Output = Result<R, Error>>,
    {
        self.settle_implicit().await?;
        let depth = self.open_level("_cf_savepoint_")?;
        let result = f(depth).await;
        let root_confirmed = depth == 0 && self.lock().tx.levels.first().is_some_and(|l| l.confirmed);
        let result = self.close_level(depth, result);
        if depth == 0 && result.is_ok() {
            // What the root committed is confirmed now (a replica ships it as its next batch). A confirmed
            // write holds output and the caller until then; an unconfirmed one only breaks the storage if its
            // confirmation fails.
            let confirmed = {
                let guard = self.lock();
                self.confirm(&guard.conn)
            };
            if root_confirmed {
                let lock = self.shared.hooks.lock_output();
                if let Err(e) = confirmed.await {
                    self.lock().tx.broken.get_or_insert(e.clone().with_reset());
                    lock.fail(e.clone());
                    return Err(e);
                }
                lock.release();
            } else {
                // A weak handle: the task must not keep the storage (and its database's lock) alive.
                let me = Arc::downgrade(&self.shared);
                let hooks = self.shared.hooks.clone();
                self.shared.hooks.after_turn(Box::pin(async move {
                    if let Err(e) = confirmed.await {
                        break_shared(&me, &e);
                        hooks.break_output(e);
                    }
                }));
            }
        }
        result
    }

    /// Rolls the savepoint at `depth` back, keeping it open (`txn.rollback()`): its writes are discarded and
    /// it no longer counts as a confirmed write.
    pub(crate) fn rollback_to(&self, depth: usize) -> Result<(), Error> {
        self.with_state(|conn, tx, _| {
            if tx.levels.len() > depth + 1 {
                return Err(Error::new(messages::ROLLBACK_OUTER_WHILE_NESTED));
            }
            let level = tx.levels.get_mut(depth).expect("rollback_to names an open savepoint");
            conn.execute_batch(&format!("ROLLBACK TO {}", level.name)).map_err(|e| sqlite_error(&e))?;
            level.confirmed = false;
            Ok(())
        })
    }

    fn open_level(&self, prefix: &str) -> Result<usize, Error> {
        self.with_state(|conn, tx, _| {
            let depth = tx.levels.len();
            let name = format!("{prefix}{depth}");
            conn.execute_batch(&format!("SAVEPOINT {name}")).map_err(|e| sqlite_error(&e))?;
            tx.levels.push(Level { name, confirmed: false });
            Ok(depth)
        })
    }

    fn close_level<R>(&self, depth: usize, result: Result<R, Error>) -> Result<R, Error> {
        let mut guard = self.lock();
        let State { conn, tx, pitr, .. } = &mut *guard;
        if let Some(e) = &tx.broken {
            // A critical error inside: SQLite already rolled everything back.
            return match result {
                Ok(_) => Err(Error::new(messages::COMMIT_AFTER_CRITICAL_ERROR).with_reset()),
                Err(_) => Err(e.clone()),
            };
        }
        assert_eq!(tx.levels.len(), depth + 1, "savepoints close in the order they opened");
        let level = tx.levels.pop().expect("checked above");
        let name = &level.name;
        // Releasing or rolling back the root savepoint outside the implicit transaction ends a transaction.
        let ends_txn = tx.levels.is_empty() && tx.implicit.is_none();
        let sql = match &result {
            Ok(_) => format!("RELEASE {name}"),
            Err(_) => format!("ROLLBACK TO {name}; RELEASE {name}"),
        };
        let history = if ends_txn && result.is_ok() { pitr.before_commit(conn) } else { Ok(()) };
        if let Err(e) = history.and_then(|()| conn.execute_batch(&sql)) {
            let err = if result.is_ok() { commit_error(&e) } else { sqlite_error(&e) };
            if ends_txn {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                pitr.after_rollback(conn);
            }
            self.break_storage(tx, err.clone());
            return Err(err.with_reset());
        }
        if ends_txn {
            match result {
                Ok(_) => pitr.after_commit(),
                Err(_) => pitr.after_rollback(conn),
            }
        }
        if result.is_ok() {
            if let Some(parent) = tx.levels.last_mut() {
                parent.confirmed |= level.confirmed;
            } else if level.confirmed {
                if let Some(implicit) = tx.implicit.as_mut() {
                    if implicit.output.is_none() {
                        implicit.output = Some(self.shared.hooks.lock_output());
                    }
                }
            }
        }
        result
    }

    /// Deletes everything (spec §3.4): every SQL table and KV key, atomically, and the alarm too if the
    /// `delete_all_deletes_alarm` setting is on. The turn's uncommitted writes are rolled back. Always
    /// confirmed: the output gate waits for it to be durable. Resolves at once (it never yields).
    pub(crate) async fn delete_all(&self) -> Result<(), Error> {
        let deletes_alarm = self.shared.settings.delete_all_deletes_alarm;
        let committed = self.with_state_pitr(|conn, tx, pitr, _, _| {
            if !tx.levels.is_empty() {
                return Err(Error::new(messages::DELETE_ALL_IN_TRANSACTION));
            }
            if let Some(implicit) = tx.implicit.take() {
                conn.execute_batch("ROLLBACK").map_err(|e| sqlite_error(&e))?;
                pitr.after_rollback(conn);
                if let Some(lock) = implicit.output {
                    lock.release();
                }
                for w in implicit.waiters {
                    let _ = w.send(Ok(()));
                }
            }
            let lock = self.shared.hooks.lock_output();
            let alarm = Self::read_alarm(conn)?;
            let mut script = String::from("BEGIN;\nPRAGMA defer_foreign_keys = ON;\n");
            let mut stmt = conn
                .prepare(
                    "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND name != '_cf_METADATA' \
                     AND name != '_cf_KV' AND name NOT LIKE '\\_cf\\_PITR\\_%' ESCAPE '\\' \
                     AND type IN ('table', 'view') ORDER BY name",
                )
                .map_err(|e| sqlite_error(&e))?;
            let objects: Vec<(String, String)> = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|rows| rows.collect())
                .map_err(|e| sqlite_error(&e))?;
            drop(stmt);
            // `_cf_KV` is emptied rather than dropped, so that the history records its rows (spec §3.6).
            if conn
                .query_row("SELECT count(*) FROM sqlite_master WHERE name = '_cf_KV'", [], |r| r.get::<_, i64>(0))
                .map_err(|e| sqlite_error(&e))?
                > 0
            {
                script.push_str("DELETE FROM _cf_KV;\n");
            }
            for (kind, name) in objects {
                let kind = if kind == "view" { "VIEW" } else { "TABLE" };
                script.push_str(&format!("DROP {kind} IF EXISTS \"{}\";\n", name.replace('"', "\"\"")));
            }
            if deletes_alarm && alarm.is_some() {
                script.push_str(&format!("DELETE FROM _cf_METADATA WHERE key = {METADATA_ALARM_KEY};\n"));
            }
            let committed = conn
                .execute_batch(&script)
                .and_then(|()| pitr.before_commit(conn))
                .and_then(|()| conn.execute_batch("COMMIT"));
            if let Err(e) = committed {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                pitr.after_rollback(conn);
                let err = Error::new(messages::delete_all_internal(&sqlite_error(&e).to_string()));
                lock.fail(err.clone());
                return Err(err);
            }
            pitr.after_commit();
            Ok((lock, self.confirm(conn)))
        })?;
        // Like every SQLite call, `deleteAll()` returns without yielding (spec §1.2, §3.4: workerd's returns
        // no promise to wait for): awaiting durability here would open the input gate to other events in the
        // middle of the caller's turn. The output lock alone waits for it, after the turn.
        let (lock, confirmed) = committed;
        // A weak handle: the task must not keep the storage (and its database's lock) alive.
        let me = Arc::downgrade(&self.shared);
        self.shared.hooks.after_turn(Box::pin(async move {
            match confirmed.await {
                Ok(()) => lock.release(),
                Err(e) => {
                    break_shared(&me, &e);
                    lock.fail(e);
                }
            }
        }));
        Ok(())
    }

    /// Resolves once the writes made before the call are durable (spec §3.2 `sync()`): at once if nothing is
    /// pending; with the commit's error if it fails.
    pub(crate) async fn sync(&self) -> Result<(), Error> {
        let rx = {
            let mut guard = self.lock();
            if let Some(e) = &guard.tx.broken {
                return Err(e.clone());
            }
            match guard.tx.implicit.as_mut() {
                None => return Ok(()),
                Some(implicit) => {
                    let (tx, rx) = oneshot::channel();
                    implicit.waiters.push(tx);
                    rx
                }
            }
        };
        rx.await.unwrap_or_else(|_| Err(Error::new(messages::STORAGE_NO_LONGER_ACCESSIBLE).with_retryable()))
    }

    /// A bookmark for now (spec §3.6 `getCurrentBookmark`), including the writes of the open implicit batch
    /// (or explicit transaction): it is the bookmark that batch's commit gets.
    pub(crate) fn get_current_bookmark(&self) -> Result<String, Error> {
        self.with_state_pitr(|_, tx, pitr, _, _| {
            Ok(pitr.current_bookmark(tx.implicit.is_some() || !tx.levels.is_empty()))
        })
    }

    /// The bookmark of the last commit at or before `unix_ms` (spec §3.6 `getBookmarkForTime`). A time older
    /// than `WINDOW_MS` (30 days) or in the future fails with
    /// `TIME_OUTSIDE_WINDOW`.
    pub(crate) fn get_bookmark_for_time(&self, unix_ms: i64) -> Result<String, Error> {
        self.with_state_pitr(|conn, _, pitr, _, _| pitr.bookmark_for_time(conn, unix_ms))
    }

    /// Arranges for the database to be restored to `bookmark` at its next open (spec §3.6
    /// `onNextSessionRestoreBookmark`); returns the bookmark of the state just before the restore (now,
    /// including the open batch), to undo it. Fails with `MALFORMED_BOOKMARK`,
    /// `UNKNOWN_BOOKMARK` or `SCHEMA_CHANGED`.
    pub(crate) fn on_next_session_restore_bookmark(&self, bookmark: &str) -> Result<String, Error> {
        self.with_state_pitr(|conn, tx, pitr, _, _| {
            pitr.request_restore(conn, bookmark, tx.implicit.is_some() || !tx.levels.is_empty())
        })
    }

    /// Shuts the storage down (the object is reset, evicted or aborted; spec §3.2): the uncommitted implicit
    /// transaction is rolled back, its held output fails, and every later call fails with `reason` (by default
    /// the spec's retryable "storage is no longer accessible").
    pub(crate) fn shutdown(&self, reason: Option<Error>) {
        let error = reason.unwrap_or_else(|| {
            Error::new(messages::STORAGE_NO_LONGER_ACCESSIBLE).with_retryable().with_reset()
        });
        let mut guard = self.lock();
        let State { conn, tx, pitr, sql_cache } = &mut *guard;
        sql_cache.clear();
        if tx.broken.is_none() {
            Self::fail_open_work(conn, tx, pitr, error);
        }
        // Close the database now, not when the last task holding this storage lets go: the connection holds
        // the database's exclusive lock, and the object's next instance (after a reset, an eviction, a new
        // host) opens it at once. Every later call fails on `broken` before touching the placeholder.
        let placeholder = Connection::open_in_memory().expect("an in-memory SQLite database opens");
        pitr.move_hook(&placeholder);
        let closed = std::mem::replace(conn, placeholder);
        if let Err((_, e)) = closed.close() {
            tracing::debug!(target: "dosim::storage", "closing the database at shutdown failed: {e}");
        }
    }

    /// Runs `f` on the raw connection, past the authorizer, for tests that inject a fault no application
    /// can (a page limit, a failing trigger on an internal table).
    #[cfg(test)]
    pub(crate) fn with_raw_connection<R>(&self, f: impl FnOnce(&Connection) -> R) -> R {
        f(&self.lock().conn)
    }

    /// Rolls back what is open and fails the work waiting on it with `error`, which every later call gets.
    fn fail_open_work(conn: &mut Connection, tx: &mut Tx, pitr: &mut Pitr, error: Error) {
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        pitr.after_rollback(conn);
        tx.levels.clear();
        if let Some(implicit) = tx.implicit.take() {
            if let Some(lock) = implicit.output {
                lock.fail(error.clone());
            }
            for w in implicit.waiters {
                let _ = w.send(Err(error.clone()));
            }
        }
        tx.broken = Some(error);
    }
}

/// The error of a failed commit (spec §3.2): a constraint violation resets the object with the spec's message;
/// anything else breaks it with SQLite's message.
fn commit_error(e: &rusqlite::Error) -> Error {
    let detail = sqlite_error(e);
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => {
            // workerd reports the commit-time violation with the primary code only (spec §3.2, from
            // actor-sqlite-test), unlike statement errors, which carry the extended code too.
            let message = detail.message();
            let primary = message.split(" (extended: ").next().unwrap_or(message);
            Error::new(messages::constraint_reset(primary)).with_reset()
        }
        _ => detail.with_reset(),
    }
}

#[cfg(test)]
mod tests;
