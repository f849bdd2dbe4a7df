//! The user-SQL scope: while `exec` runs application SQL, the authorizer enforces §3.5's rules and the update
//! hook records the rows each statement changed (a thread-local slot, filled by a guard).

use super::*;

/// Rows a statement changed in one table, as the update hook reported them.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct RowChanges {
    pub(super) inserted: u64,
    pub(super) updated: u64,
    pub(super) deleted: u64,
}

/// What the authorizer and the update hook saw of the statement [`exec`] is preparing or running.
#[derive(Debug, Default)]
pub(super) struct StatementLog {
    /// The SQL text of the `exec` call (for the rename target of `ALTER TABLE`).
    query: Arc<str>,
    /// Where the statement being prepared starts in `query`.
    start: usize,
    /// The authorizer refused a transaction statement.
    pub(super) transaction_refused: bool,
    /// The statement creates a schema object (so [`Baseline`] snapshots the schema).
    pub(super) creates_schema: bool,
    /// Tables read (`SQLITE_READ`), lower-cased.
    pub(super) tables_read: BTreeSet<String>,
    /// Columns assigned (`SQLITE_UPDATE`), lower-cased, by lower-cased table.
    pub(super) updated_columns: BTreeMap<String, BTreeSet<String>>,
    /// The update hook records into `changes` only while the last statement runs.
    pub(super) recording: bool,
    /// Rows changed, by lower-cased table.
    pub(super) changes: BTreeMap<String, RowChanges>,
}

impl StatementLog {
    pub(super) fn begin_statement(&mut self, start: usize) {
        *self = StatementLog { query: Arc::clone(&self.query), start, ..StatementLog::default() };
    }

    /// The SQL text from the statement being prepared on.
    pub(super) fn statement(&self) -> &str {
        self.query.get(self.start..).unwrap_or_default()
    }
}

thread_local! {
    /// `Some` while [`exec`] runs user SQL on this thread (see the module documentation).
    static USER_SQL: RefCell<Option<StatementLog>> = const { RefCell::new(None) };
}

/// Runs `f` on the current user-SQL log (`None` outside [`exec`]); `None` if the slot is busy, which SQLite's
/// synchronous callbacks never cause.
pub(super) fn with_log<R>(f: impl FnOnce(Option<&mut StatementLog>) -> R) -> Option<R> {
    USER_SQL.with(|slot| slot.try_borrow_mut().ok().map(|mut log| f(log.as_mut())))
}

/// Marks this thread as running user SQL until dropped, then restores what was there before (so an error or a
/// panic cannot leave enforcement on).
pub(super) struct UserScope {
    outer: Option<StatementLog>,
}

impl UserScope {
    pub(super) fn enter(query: Arc<str>) -> UserScope {
        let log = StatementLog { query, ..StatementLog::default() };
        UserScope { outer: USER_SQL.replace(Some(log)) }
    }

    pub(super) fn log<R>(&self, f: impl FnOnce(&mut StatementLog) -> R) -> R {
        USER_SQL.with_borrow_mut(|log| f(log.get_or_insert_with(StatementLog::default)))
    }

    /// Runs `f` as trusted code: the authorizer allows everything and the update hook records nothing. If `f`
    /// panics, dropping the scope still restores the outer state.
    pub(super) fn trusted<R>(&self, f: impl FnOnce() -> R) -> R {
        let log = USER_SQL.take();
        let result = f();
        USER_SQL.set(log);
        result
    }

    /// The error for a SQLite failure of user SQL: the transaction message if the authorizer refused a
    /// transaction statement, else SQLite's error in workerd's format.
    pub(super) fn error(&self, failure: &raw::Failure) -> Error {
        if failure.code & 0xff == ffi::SQLITE_AUTH && self.log(|log| log.transaction_refused) {
            return Error::new(messages::TRANSACTION_STATEMENTS);
        }
        Error::new(format_sqlite_error(failure.code, &failure.message, failure.offset))
    }
}

impl Drop for UserScope {
    fn drop(&mut self) {
        USER_SQL.set(self.outer.take());
    }
}
