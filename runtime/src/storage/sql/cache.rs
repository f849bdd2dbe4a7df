//! The statement cache: prepared user statements kept across `exec`s, with what the authorizer decided.

use super::*;

/// How many prepared statements a [`StatementCache`] keeps. A prepared statement holds its compiled program
/// (a few KB); an object's code usually runs a few dozen distinct query texts, which this keeps prepared,
/// while code that splices values into its SQL text (a new text each time) cannot grow the cache, and the
/// memory it holds, without bound: past this many, the least recently used statement is finalized.
pub(crate) const STATEMENT_CACHE_CAPACITY: usize = 64;

/// What the authorizer recorded while a cached statement was prepared: the part of a [`StatementLog`] the row
/// counters read, which a reused statement (not prepared again) would not record.
#[derive(Clone, Debug, Default)]
pub(super) struct Authorized {
    pub(super) creates_schema: bool,
    pub(super) tables_read: BTreeSet<String>,
    pub(super) updated_columns: BTreeMap<String, BTreeSet<String>>,
}

impl Authorized {
    pub(super) fn of(log: &StatementLog) -> Authorized {
        Authorized {
            creates_schema: log.creates_schema,
            tables_read: log.tables_read.clone(),
            updated_columns: log.updated_columns.clone(),
        }
    }

    /// Adds this to what the authorizer recorded while the statement ran (normally nothing).
    pub(super) fn add_to(&self, log: &mut StatementLog) {
        log.creates_schema |= self.creates_schema;
        log.tables_read.extend(self.tables_read.iter().cloned());
        for (table, columns) in &self.updated_columns {
            log.updated_columns.entry(table.clone()).or_default().extend(columns.iter().cloned());
        }
    }
}

/// A cached statement: reset, with what its preparation authorized and its column names.
pub(super) struct Entry {
    /// The query text, the entry's key.
    pub(super) text: Arc<str>,
    /// `None` only while [`StatementCache::exec`] runs it.
    pub(super) stmt: Option<raw::Detached>,
    pub(super) authorized: Authorized,
    pub(super) columns: Arc<[String]>,
    /// The cache's clock when the entry was last used, for least-recently-used eviction.
    pub(super) last_used: u64,
}

/// Prepared application statements of one connection, reused by [`StatementCache::exec`] for the same query
/// text, at most [`STATEMENT_CACHE_CAPACITY`] of them.
///
/// Only a query that holds a single statement is cached, under its exact text, once it ran without error.
/// The cache holds only statements that application SQL prepared, with the authorizer enforcing §3.5; the
/// orchestrator's own statements (rusqlite's `prepare_cached`, prepared as trusted code) live in rusqlite's
/// cache, so the two never share a statement even for the same text.
///
/// A cached statement is taken out of the cache while it runs and put back reset (`sqlite3_reset`, bindings
/// cleared) once its rows are materialised, so no statement is ever in use twice, and none holds a read
/// transaction or a table lock between calls (`DROP TABLE`, `delete_all` and closing the connection are not
/// blocked). One that fails is finalized. If the schema changed since a statement was prepared, SQLite
/// prepares it again on its first step (`sqlite3_prepare_v3` statements do), with the authorizer active
/// because [`exec`]'s user-SQL scope spans the steps too; the counters then use what that preparation
/// recorded, and the statement is dropped from the cache, so the next call prepares afresh.
///
/// The cache belongs with its connection: it must be dropped before that connection closes (the orchestrator
/// keeps it in a field declared before the connection). Dropping it finalizes its statements.
#[derive(Default)]
pub(crate) struct StatementCache {
    entries: BTreeMap<Arc<str>, Entry>,
    /// Counts uses, for [`Entry::last_used`].
    clock: u64,
}

// SAFETY: the statements are used only through `&mut StatementCache` together with their connection (checked
// by `Detached::attach`), so never from two threads at once; SQLite (built thread-safe, as rusqlite requires)
// lets a connection and its statements move between threads.
unsafe impl Send for StatementCache {}

impl std::fmt::Debug for StatementCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatementCache").field("len", &self.entries.len()).finish_non_exhaustive()
    }
}

impl StatementCache {
    /// An empty cache.
    pub(crate) fn new() -> StatementCache {
        StatementCache::default()
    }

    /// [`exec`], reusing the statement prepared for the same `query` text by an earlier call if there is one
    /// (and caching it otherwise, if `query` is a single statement). The result, rows and counters are those
    /// [`exec`] would return.
    ///
    /// # Panics
    /// If the cache holds statements of another connection than `conn`.
    pub(crate) fn exec(
        &mut self,
        conn: &Connection,
        query: &str,
        params: &[SqlValue],
        before_write: &mut dyn FnMut() -> Result<(), Error>,
    ) -> Result<Cursor, Error> {
        let Some(entry) = self.entries.get_mut(query) else {
            return run(conn, query.into(), params, before_write, Some(self));
        };
        // Taken out while it runs: a statement is never in use twice. (It is missing only if a call that ran
        // it panicked; it was finalized then.)
        let Some(stmt) = entry.stmt.take() else {
            self.entries.remove(query);
            return run(conn, query.into(), params, before_write, Some(self));
        };
        let mut stmt = stmt.attach(conn);
        assert!(!stmt.busy(), "a cached statement is reset before it is reused");
        let scope = UserScope::enter(Arc::clone(&entry.text));
        let result = run_last(
            conn,
            &scope,
            &mut stmt,
            params,
            before_write,
            Some((&entry.authorized, &entry.columns)),
        );
        drop(scope);
        match result {
            Ok((cursor, Some(_))) => {
                stmt.reset();
                entry.stmt = Some(stmt.detach());
                self.clock += 1;
                entry.last_used = self.clock;
                Ok(cursor)
            }
            // Prepared again by SQLite (the schema changed), or failed: the next call prepares afresh.
            result => {
                self.entries.remove(query);
                result.map(|(cursor, _)| cursor)
            }
        }
    }

    /// How many statements the cache holds.
    #[cfg(test)] // Only the tests reach it: no runtime path uses it.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds no statement.
    #[cfg(test)] // Only the tests reach it: no runtime path uses it.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a statement prepared for exactly this `query` text is cached.
    #[cfg(test)] // Only the tests reach it: no runtime path uses it.
    pub(crate) fn contains(&self, query: &str) -> bool {
        self.entries.contains_key(query)
    }

    /// Finalizes every cached statement.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    pub(super) fn insert(&mut self, mut entry: Entry) {
        let db = |e: &Entry| e.stmt.as_ref().map(raw::Detached::db);
        if let Some(other) = self.entries.values().next() {
            assert_eq!(db(other), db(&entry), "a statement cache serves one connection");
        }
        if self.entries.len() >= STATEMENT_CACHE_CAPACITY {
            let oldest = self.entries.iter().min_by_key(|(_, e)| e.last_used).map(|(k, _)| Arc::clone(k));
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        self.clock += 1;
        entry.last_used = self.clock;
        self.entries.insert(Arc::clone(&entry.text), entry);
    }
}
