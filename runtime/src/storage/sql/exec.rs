//! Running `sql.exec`: preparing the connection (limits, the authorizer, functions), splitting a query into
//! its statements, running them, and materialising the last one's rows.

use super::*;

/// Sets up a freshly opened connection for SQLite-backed object storage: SQLite's limits (the `MAX_*`
/// constants), defensive mode (`SQLITE_DBCONFIG_DEFENSIVE`, as workerd sets: no `writable_schema`, no writes
/// to virtual-table shadow tables), the authorizer that confines application SQL (§3.5), and an update hook
/// that feeds [`Cursor::rows_written`].
///
/// The authorizer and the update hook allow and record nothing outside [`exec`], so the orchestrator's own
/// statements are unaffected; the orchestrator must not replace either of them (`Connection::authorizer`,
/// `Connection::update_hook`).
pub(crate) fn prepare_connection(conn: &Connection) -> rusqlite::Result<()> {
    for (limit, value) in LIMITS {
        conn.set_limit(limit, value)?;
    }
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    raw::install_callbacks(conn)
}

/// `sql.exec(query, ...bindings)`: runs `query`, which may hold several `;`-separated statements, and returns
/// a cursor over the rows of the last one (§3.5).
///
/// Statements are found by SQLite's own parser, one at a time, exactly as workerd does: each statement but
/// the last is prepared and stepped once before the next is parsed (SQLite makes all of a statement's changes
/// in its first step; rows an earlier `SELECT` would return are discarded), and must not have parameters
/// (`When executing multiple SQL statements in a single call, only the last statement can have parameters.`).
/// `params` bind to the last statement, and their number must be its parameter count (`Wrong number of
/// parameter bindings for SQL query.`). Text that holds no statement where one is expected, such as `""`,
/// `";"` or the comment after `"SELECT 1; -- c"`, is `SQL code did not contain a statement.`. Statements that
/// ran before an error stay applied.
///
/// `before_write` is called before any statement that is not read-only (`sqlite3_stmt_readonly`) runs, so the
/// orchestrator can open its implicit transaction first; its error is returned as is. It runs as trusted code
/// (the authorizer allows the orchestrator's own statements there).
///
/// SQLite's errors read `<message>[ at offset N]: SQLITE_<CODE>[ (extended: SQLITE_<CODE>_<DETAIL>)]`, as in
/// workerd; a transaction statement (`BEGIN`, `COMMIT`, `END`, `ROLLBACK`, `SAVEPOINT`, `RELEASE`) is
/// refused with §3.5's message to use the JavaScript transaction APIs instead.
#[cfg(test)] // Only the tests reach it: no runtime path uses it.
pub(crate) fn exec(
    conn: &Connection,
    query: &str,
    params: &[SqlValue],
    before_write: &mut dyn FnMut() -> Result<(), Error>,
) -> Result<Cursor, Error> {
    run(conn, query.into(), params, before_write, None)
}

/// Prepares and runs `query` as [`exec`] describes; if `cache` is given and `query` holds a single statement
/// that succeeds, the statement is kept there, reset, under the query's text.
pub(super) fn run(
    conn: &Connection,
    query: Arc<str>,
    params: &[SqlValue],
    before_write: &mut dyn FnMut() -> Result<(), Error>,
    cache: Option<&mut StatementCache>,
) -> Result<Cursor, Error> {
    let scope = UserScope::enter(Arc::clone(&query));
    let mut rest: &str = &query;
    loop {
        scope.log(|log| log.begin_statement(query.len() - rest.len()));
        let (stmt, consumed) = raw::prepare(conn, rest).map_err(|f| scope.error(&f))?;
        let Some(mut stmt) = stmt else { return Err(Error::new(messages::NO_STATEMENT)) };
        let after = rest.get(consumed..).unwrap_or("").trim_start_matches(is_statement_space);
        if !after.is_empty() {
            if stmt.parameter_count() != 0 {
                return Err(Error::new(messages::ONLY_LAST_STATEMENT_PARAMETERS));
            }
            if !stmt.readonly() {
                scope.trusted(&mut *before_write)?;
            }
            stmt.step().map_err(|f| scope.error(&f))?;
            rest = after;
            continue;
        }

        let single = rest.len() == query.len();
        let authorized = scope.log(|log| Authorized::of(log));
        let (cursor, columns) = run_last(conn, &scope, &mut stmt, params, before_write, None)?;
        if let (Some(cache), true, Some(columns)) = (cache, single, columns) {
            stmt.reset();
            let stmt = Some(stmt.detach());
            cache.insert(Entry { text: query, stmt, authorized, columns, last_used: 0 });
        }
        return Ok(cursor);
    }
}

/// What [`run_last`] returns: the cursor, and the column names to cache with the statement (`None` if it must
/// not be cached as it is).
pub(super) type LastRun = (Cursor, Option<Arc<[String]>>);

/// Runs the last (or only) statement of an `exec`, prepared by `run` or taken from the cache (`cached`: what
/// its preparation authorized, and its column names), and materialises its rows. Returns the cursor and the
/// column names; `None` for the names if a cached statement was re-prepared by SQLite while it ran (the schema
/// changed since it was cached), so that it must not be cached as it is.
pub(super) fn run_last(
    conn: &Connection,
    scope: &UserScope,
    stmt: &mut raw::Statement<'_>,
    params: &[SqlValue],
    before_write: &mut dyn FnMut() -> Result<(), Error>,
    cached: Option<(&Authorized, &Arc<[String]>)>,
) -> Result<LastRun, Error> {
    if stmt.parameter_count() != params.len() {
        return Err(Error::new(messages::WRONG_PARAMETER_COUNT));
    }
    let writes = !stmt.readonly();
    if writes {
        scope.trusted(&mut *before_write)?;
    }
    stmt.bind(params).map_err(|f| scope.error(&f))?;
    let baseline = if writes {
        let schema = match cached {
            Some((authorized, _)) => authorized.creates_schema,
            None => scope.log(|log| log.creates_schema),
        };
        Some(scope.trusted(|| Baseline::take(conn, schema)).map_err(|e| error_from_rusqlite(&e))?)
    } else {
        None
    };

    let mut rows = VecDeque::new();
    scope.log(|log| log.recording = true);
    // The first step, before the column names are read: with a cached statement, SQLite re-prepares it there
    // if the schema changed (the authorizer is active, the scope being open), which may change its columns.
    let mut more = stmt.step().map_err(|f| scope.error(&f))?;
    let reprepared = stmt.take_status(ffi::SQLITE_STMTSTATUS_REPREPARE) != 0;
    let columns: Arc<[String]> = match cached {
        Some((_, columns)) if !reprepared => Arc::clone(columns),
        _ => (0..stmt.column_count()).map(|i| stmt.column_name(i)).collect(),
    };
    while more {
        rows.push_back((0..columns.len()).map(|i| stmt.column_value(i)).collect());
        more = stmt.step().map_err(|f| scope.error(&f))?;
    }
    let mut log = scope.log(std::mem::take);
    // What the authorizer recorded when a cached statement was prepared counts as if it had just been.
    let authorized = cached.filter(|_| !reprepared).map(|(authorized, _)| authorized);

    let steps = stmt.take_status(0)
        + stmt.take_status(ffi::SQLITE_STMTSTATUS_FULLSCAN_STEP)
        + stmt.take_status(ffi::SQLITE_STMTSTATUS_AUTOINDEX)
        + stmt.take_status(ffi::SQLITE_STMTSTATUS_SORT);
    let returns_rows = !columns.is_empty();
    let (count_scans, counted_rows) = scope.trusted(|| count_fast_paths(conn, &stmt.sql()));
    let (rows_read, rows_written) = match baseline {
        None => {
            let tables_read = match authorized {
                // Usually the authorizer recorded nothing while the statement ran: no set to merge.
                Some(a) if log.tables_read.is_empty() => a.tables_read.len(),
                Some(a) => a.tables_read.union(&log.tables_read).count(),
                None => log.tables_read.len(),
            };
            (steps + tables_read as u64, 0)
        }
        Some(baseline) => {
            if let Some(authorized) = authorized {
                authorized.add_to(&mut log);
            }
            let (read, written) =
                scope.trusted(|| write_counts(conn, &log, &baseline)).map_err(|e| error_from_rusqlite(&e))?;
            (steps + read + u64::from(returns_rows), written)
        }
    };
    // A `count(*)` fast path opens no scan (its table counted above as one) and reads every row.
    let rows_read = rows_read.saturating_sub(count_scans) + counted_rows;
    let keep = (!reprepared).then(|| Arc::clone(&columns));
    Ok((Cursor { columns, rows, rows_read, rows_written }, keep))
}
