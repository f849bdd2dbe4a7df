//! [`SqliteKvStore`]: the durable store beneath a KV-backend object's [`super::ActorCache`], a SQLite database
//! opened through [`DatabaseLocation`] (a real file, or a file on the simulation's disk).
//!
//! Pairs live in `_cf_KV(key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID` (keys compare in UTF-8 byte order,
//! SQLite's `BINARY` collation), the alarm in `_cf_METADATA` at key 1, as on the SQLite backend (spec §3.1).
//! Each call runs when it is made; a [`Batch`] is applied in one SQLite transaction, and its future resolves
//! only after the embedder's [`DurabilityWait`] that follows `COMMIT`.
//!
//! On Cloudflare this store is a remote service. An embedder that models the distance gives a [`StoreLink`]
//! ([`SqliteKvStore::with_link`]): every read and every commit then travels it before it touches the database,
//! so a flush reaches storage some time after the turn that made its writes (which is what makes
//! `allow_unconfirmed`'s premature confirmation observable), and a read that misses the cache takes time.
//!
//! Every SQLite failure is a critical storage failure, [`StoreError::Internal`]: it is never
//! [`StoreError::Disconnected`] (a local disk error is not a lost connection, and retrying it would only
//! repeat it), and it carries no application-visible text.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use super::store::{Batch, CommitResult, KvStore, ListRequest, StoreError, StoreFuture};
use crate::storage::gates::{DurabilityWait, Task};
use crate::storage::location::{is_busy, DatabaseLocation, OpenError};

/// Where the alarm lives in `_cf_METADATA` (the SQLite backend's key, spec §3.1).
const METADATA_ALARM_KEY: i64 = 1;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS _cf_KV (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;
     CREATE TABLE IF NOT EXISTS _cf_METADATA (key INTEGER PRIMARY KEY, value BLOB);";

/// The way from an object to its KV storage: what one request to it costs.
pub trait StoreLink: Send + Sync + 'static {
    /// Resolves when a request has reached storage.
    fn travel(&self) -> Task;
}

/// A [`KvStore`] over one SQLite database. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct SqliteKvStore {
    conn: Arc<Mutex<Connection>>,
    /// Requests on their way over the link, and whether the store was closed: it closes its connection once
    /// none is on its way.
    life: Arc<Mutex<Life>>,
    durability: Arc<dyn DurabilityWait>,
    location: String,
    link: Option<Arc<dyn StoreLink>>,
}

#[derive(Debug, Default)]
struct Life {
    in_flight: usize,
    closing: bool,
}

/// A request on its way over the link; the last one to finish after [`KvStore::close`] closes the
/// connection. Dropped also when the request is cancelled.
struct InFlight(SqliteKvStore);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut life = self.0.life();
        life.in_flight -= 1;
        if life.closing && life.in_flight == 0 {
            drop(life);
            self.0.close_now();
        }
    }
}

impl std::fmt::Debug for SqliteKvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteKvStore").field("location", &self.location).finish()
    }
}

fn internal(e: &rusqlite::Error) -> StoreError {
    StoreError::Internal(format!("SQLite error: {e}"))
}

fn ready<T: Send + 'static>(r: Result<T, StoreError>) -> StoreFuture<T> {
    Box::pin(std::future::ready(r))
}

impl SqliteKvStore {
    /// Opens (creating if needed) the database at `location` with the runtime's settings, and its tables.
    /// Commits report success once `durability` has waited after `COMMIT`.
    pub fn open(
        location: &DatabaseLocation,
        durability: Arc<dyn DurabilityWait>,
    ) -> Result<SqliteKvStore, OpenError> {
        let conn = location.open()?;
        conn.execute_batch(SCHEMA).map_err(|e| OpenError {
            location: location.to_string(),
            reason: e.to_string(),
            in_use: is_busy(&e),
        })?;
        Ok(SqliteKvStore {
            conn: Arc::new(Mutex::new(conn)),
            life: Arc::default(),
            durability,
            location: location.to_string(),
            link: None,
        })
    }

    /// This store, with every read and commit travelling `link` first.
    pub fn with_link(mut self, link: Arc<dyn StoreLink>) -> SqliteKvStore {
        self.link = Some(link);
        self
    }

    /// Runs `op` on the store once the request has travelled the link (at once without one).
    fn over_link<T: Send + 'static>(
        &self,
        op: impl FnOnce(&SqliteKvStore) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<T> {
        match &self.link {
            None => ready(op(self)),
            Some(link) => {
                let travel = link.travel();
                self.life().in_flight += 1;
                let request = InFlight(self.clone());
                Box::pin(async move {
                    travel.await;
                    op(&request.0)
                })
            }
        }
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn life(&self) -> MutexGuard<'_, Life> {
        self.life.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the database now (it holds the database's exclusive lock, which the object's next instance
    /// needs); a placeholder takes its place, so a late request fails instead of touching a closed handle.
    fn close_now(&self) {
        let placeholder = Connection::open_in_memory().expect("an in-memory SQLite database opens");
        let closed = std::mem::replace(&mut *self.conn(), placeholder);
        if let Err((_, e)) = closed.close() {
            tracing::debug!(target: "dosim::storage", "closing {} failed: {e}", self.location);
        }
    }

    fn read_alarm(conn: &Connection) -> rusqlite::Result<Option<i64>> {
        conn.query_row("SELECT value FROM _cf_METADATA WHERE key = ?1", [METADATA_ALARM_KEY], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .optional()
        .map(Option::flatten)
    }

    fn get_now(&self, keys: &[String]) -> rusqlite::Result<Vec<(String, Vec<u8>)>> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT value FROM _cf_KV WHERE key = ?1")?;
        let mut out = Vec::new();
        for key in keys.iter().collect::<BTreeSet<_>>() {
            if let Some(v) = stmt.query_row([key], |r| r.get::<_, Vec<u8>>(0)).optional()? {
                out.push((key.clone(), v));
            }
        }
        Ok(out)
    }

    fn list_now(&self, request: &ListRequest) -> rusqlite::Result<Vec<(String, Vec<u8>)>> {
        let conn = self.conn();
        let order = if request.reverse { "DESC" } else { "ASC" };
        let limit = request.limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
        let map = |r: &rusqlite::Row<'_>| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?));
        match &request.end {
            Some(end) => {
                let sql = format!(
                    "SELECT key, value FROM _cf_KV WHERE key >= ?1 AND key < ?2 ORDER BY key {order} LIMIT ?3"
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params![request.start, end, limit], map)?;
                rows.collect()
            }
            None => {
                let sql =
                    format!("SELECT key, value FROM _cf_KV WHERE key >= ?1 ORDER BY key {order} LIMIT ?2");
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params![request.start, limit], map)?;
                rows.collect()
            }
        }
    }

    /// Applies `batch` in one SQLite transaction, in [`Batch`]'s documented order.
    fn commit_now(&self, batch: &Batch) -> rusqlite::Result<CommitResult> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut result = CommitResult::default();
        if batch.delete_all {
            result.deleted_all = tx.execute("DELETE FROM _cf_KV", [])?;
        }
        {
            let mut del = tx.prepare_cached("DELETE FROM _cf_KV WHERE key = ?1")?;
            for keys in &batch.counted_deletes {
                let mut n = 0;
                for key in keys.iter().collect::<BTreeSet<_>>() {
                    n += del.execute([key])?;
                }
                result.counts.push(n);
            }
            for key in &batch.muted_deletes {
                del.execute([key])?;
            }
            let mut put = tx.prepare_cached("INSERT OR REPLACE INTO _cf_KV (key, value) VALUES (?1, ?2)")?;
            for (key, value) in &batch.puts {
                put.execute(params![key, value])?;
            }
        }
        if let Some(t) = batch.alarm_delete_if {
            result.alarm_deleted = tx
                .execute("DELETE FROM _cf_METADATA WHERE key = ?1 AND value = ?2", [METADATA_ALARM_KEY, t])?
                > 0;
        }
        match batch.alarm {
            Some(Some(t)) => {
                tx.execute(
                    "INSERT INTO _cf_METADATA (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
                    [METADATA_ALARM_KEY, t],
                )?;
            }
            Some(None) => {
                tx.execute("DELETE FROM _cf_METADATA WHERE key = ?1", [METADATA_ALARM_KEY])?;
            }
            None => {}
        }
        // On an error above, dropping `tx` rolls back: nothing of the batch is applied.
        tx.commit()?;
        tracing::debug!(
            target: "dosim::storage",
            "kv flush: {} puts, {} deletes{}",
            batch.puts.len(),
            batch.counted_deletes.iter().map(Vec::len).sum::<usize>() + batch.muted_deletes.len(),
            if batch.delete_all { ", delete all" } else { "" }
        );
        Ok(result)
    }
}

impl KvStore for SqliteKvStore {
    fn close(&self) {
        let mut life = self.life();
        life.closing = true;
        if life.in_flight == 0 {
            drop(life);
            self.close_now();
        }
    }

    fn get(&self, keys: Vec<String>) -> StoreFuture<Vec<(String, Vec<u8>)>> {
        self.over_link(move |s| s.get_now(&keys).map_err(|e| internal(&e)))
    }

    fn list(&self, request: ListRequest) -> StoreFuture<Vec<(String, Vec<u8>)>> {
        self.over_link(move |s| s.list_now(&request).map_err(|e| internal(&e)))
    }

    fn get_alarm(&self) -> StoreFuture<Option<i64>> {
        self.over_link(|s| Self::read_alarm(&s.conn()).map_err(|e| internal(&e)))
    }

    fn commit(&self, batch: Batch) -> StoreFuture<CommitResult> {
        let commit = move |s: &SqliteKvStore| {
            let result = s.commit_now(&batch).map_err(|e| internal(&e))?;
            Ok((result, s.durability.wait()))
        };
        let committed = self.over_link(commit);
        Box::pin(async move {
            let (result, durable) = committed.await?;
            durable.await;
            Ok(result)
        })
    }
}
