//! The storage API objects call (`ctx.storage` on Cloudflare; `state.storage()` here), typed with serde.
//!
//! Values go through [`super::value`] (CBOR); keys are strings in UTF-8 byte order. Every method is async, as
//! on Cloudflare, although on the SQLite backend each resolves at once: SQLite calls are synchronous and need
//! no input gate (spec §1.2, §3.1). On the KV backend ([`Storage::kv`]) each call goes to the
//! [`ActorCache`], which answers from its entries or reads storage, and enforces the key and value limits
//! (spec §2); the SQL-only calls fail there (spec §3.1).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::actor_cache::{ActorCache, CacheListOptions, CacheTransaction, GetOptions, PutOptions};
use super::kv::ListOptions;
use super::sql::{Cursor, SqlValue};
use super::sqlite::{SqliteStorage, WriteOptions};
use super::value;
use crate::error::{messages, Error};
use crate::future::LocalFuture;

/// An object's storage. Cheap to clone; every clone is the same storage.
#[derive(Clone, Debug)]
pub struct Storage {
    backend: Backend,
    hooks: Option<Arc<dyn ObjectHooks>>,
    /// How trace lines name the object (`Class/idprefix`), once the runtime set it.
    label: Option<Arc<str>>,
}

/// What the runtime adds to an object's storage calls.
pub(crate) trait ObjectHooks: Send + Sync + 'static {
    /// The object is setting its alarm to `scheduled_ms` (already checked to be positive), before the write
    /// (spec §4): refuse it (the class has no alarm handler), or schedule the time ahead of the commit, so the
    /// scheduler is never later than storage.
    fn before_set_alarm(&self, scheduled_ms: i64) -> Result<(), Error>;

    /// The object's wall clock, in ms since the epoch, if it has one: alarm times in the past are clamped to
    /// it (spec §4).
    fn now_ms(&self) -> Option<i64> {
        None
    }

    /// Runs `body` as a critical section (spec §1.3: `storage.transaction()` is one, like
    /// `blockConcurrencyWhile`): no other event of the object interleaves with it. `body` reports its own
    /// outcome through what it captures; an `Err` here is the critical section's own failure.
    fn critical_section<'a>(&self, body: LocalFuture<'a, ()>) -> LocalFuture<'a, Result<(), Error>>;
}

impl std::fmt::Debug for dyn ObjectHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectHooks")
    }
}

/// The alarm check before a write: the time, then the runtime's hook.
/// The alarm check before a write: the time must be positive; a time in the past becomes now (spec §4); then
/// the runtime's hook. Returns the time to store.
fn check_set_alarm(hook: &Option<Arc<dyn ObjectHooks>>, scheduled_ms: i64) -> Result<i64, Error> {
    if scheduled_ms <= 0 {
        return Err(Error::type_error(messages::SET_ALARM_NOT_POSITIVE));
    }
    match hook {
        Some(h) => {
            let at = h.now_ms().map_or(scheduled_ms, |now| scheduled_ms.max(now));
            h.before_set_alarm(at)?;
            Ok(at)
        }
        None => Ok(scheduled_ms),
    }
}

/// The storage engine behind a [`Storage`]: the one handle on an object's database, which the API calls and
/// the runtime's own uses (alarm runs, shutdown) share.
#[derive(Clone, Debug)]
pub(crate) enum Backend {
    Sqlite(SqliteStorage),
    Kv(ActorCache),
}

impl Backend {
    /// Shuts the engine down (the instance ended): later calls fail, unflushed and uncommitted writes are
    /// discarded.
    pub(crate) fn shutdown(&self, reason: Option<Error>) {
        match self {
            Backend::Sqlite(s) => s.shutdown(reason),
            Backend::Kv(c) => c.shutdown(reason),
        }
    }
}

fn put_options(options: WriteOptions) -> PutOptions {
    PutOptions { allow_unconfirmed: options.allow_unconfirmed, ..PutOptions::default() }
}

fn cache_list(options: &ListOptions) -> CacheListOptions {
    CacheListOptions { list: options.clone(), ..CacheListOptions::default() }
}

/// The trace line of a storage call of the object `label`: `op` and what it touches, at debug level.
fn trace(label: &Option<Arc<str>>, op: &str, what: &str) {
    let label = label.as_deref().unwrap_or("storage");
    tracing::debug!(target: "dosim::storage", "{label} {op} {what}");
}

/// A list call's range, for its trace line: the options given, keys quoted and cut short.
fn describe_list(options: &ListOptions) -> String {
    let mut parts = Vec::new();
    let keys = [
        ("prefix", &options.prefix),
        ("start", &options.start),
        ("start_after", &options.start_after),
        ("end", &options.end),
    ];
    for (name, key) in keys {
        if let Some(k) = key {
            parts.push(format!("{name}={}", value::render_keys([k.as_str()])));
        }
    }
    if let Some(limit) = options.limit {
        parts.push(format!("limit={limit}"));
    }
    if options.reverse {
        parts.push("reverse".to_string());
    }
    if parts.is_empty() {
        "all".to_string()
    } else {
        parts.join(" ")
    }
}

fn decode_pairs<T: DeserializeOwned>(raw: Vec<(String, Vec<u8>)>) -> Result<Vec<(String, T)>, Error> {
    raw.into_iter().map(|(k, b)| Ok((k, value::decode(&b)?))).collect()
}

/// The SQL API of a SQLite-backed object (`ctx.storage.sql`).
#[derive(Clone, Debug)]
pub struct Sql {
    storage: SqliteStorage,
}

impl Sql {
    /// Runs one or more `;`-separated statements; `params` bind to the last one (spec §3.5).
    pub fn exec(&self, query: &str, params: &[SqlValue]) -> Result<Cursor, Error> {
        self.storage.exec(query, params)
    }

    /// The database's size in bytes.
    pub fn database_size(&self) -> Result<u64, Error> {
        self.storage.database_size()
    }
}

impl Storage {
    /// The storage of a SQLite-backed object.
    pub fn sqlite(storage: SqliteStorage) -> Storage {
        Storage { backend: Backend::Sqlite(storage), hooks: None, label: None }
    }

    /// The storage of a KV-backend object: every call goes through `cache` (spec §2).
    pub fn kv(cache: ActorCache) -> Storage {
        Storage { backend: Backend::Kv(cache), hooks: None, label: None }
    }

    /// This storage, with the runtime's `hooks` (alarm checks and scheduling, critical sections).
    pub(crate) fn with_object_hooks(mut self, hooks: Arc<dyn ObjectHooks>) -> Storage {
        self.hooks = Some(hooks);
        self
    }

    /// This storage, its trace lines naming the object `label`.
    pub(crate) fn with_label(mut self, label: Arc<str>) -> Storage {
        self.label = Some(label);
        self
    }

    /// The trace line of a call: `op` and what it touches (keys quoted, cut short), at debug level.
    fn trace(&self, op: &str, what: &str) {
        trace(&self.label, op, what);
    }

    /// The engine behind this storage, for what only the runtime does with it.
    pub(crate) fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The SQLite backend, or the error of a SQLite-only call on the KV backend.
    fn sqlite_backend(&self) -> Result<&SqliteStorage, Error> {
        match &self.backend {
            Backend::Sqlite(s) => Ok(s),
            Backend::Kv(_) => Err(Error::new(messages::NOT_BACKED_BY_SQL)),
        }
    }

    /// The value under `key`, or `None`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.trace("get", &value::render_keys([key]));
        let raw = match &self.backend {
            Backend::Sqlite(s) => s.get(key)?,
            Backend::Kv(c) => {
                // A cached key is decoded straight from the cache, with no future to box nor value to copy.
                let decode = |v: Option<&[u8]>| v.map(value::decode).transpose();
                if let Some(result) = c.get_cached(key, GetOptions::default(), decode) {
                    return result?;
                }
                c.get(key, GetOptions::default()).await?
            }
        };
        raw.map(|b| value::decode(&b)).transpose()
    }

    /// [`Storage::get`] with read options (spec §2.5): `allow_concurrency` lets other events run while a read
    /// that missed the cache waits for storage; `no_cache` does not keep what storage returns. The SQLite
    /// backend reads synchronously and ignores both.
    pub async fn get_with<T: DeserializeOwned>(
        &self,
        key: &str,
        options: GetOptions,
    ) -> Result<Option<T>, Error> {
        self.trace("get", &value::render_keys([key]));
        let raw = match &self.backend {
            Backend::Sqlite(s) => s.get(key)?,
            Backend::Kv(c) => c.get(key, options).await?,
        };
        raw.map(|b| value::decode(&b)).transpose()
    }

    /// The values of the present keys among `keys`, sorted by key, duplicates collapsed.
    pub async fn get_multiple<T: DeserializeOwned>(
        &self,
        keys: &[&str],
    ) -> Result<BTreeMap<String, T>, Error> {
        self.trace("get", &value::render_keys(keys.iter().copied()));
        let raw = match &self.backend {
            Backend::Sqlite(s) => s.get_multiple(keys)?,
            Backend::Kv(c) => c.get_multiple(keys, GetOptions::default()).await?.into_iter().collect(),
        };
        raw.into_iter().map(|(k, b)| Ok((k, value::decode(&b)?))).collect()
    }

    /// Stores `value` under `key`.
    pub async fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), Error> {
        self.put_with(key, value, WriteOptions::default()).await
    }

    /// Stores `value` under `key` with options (`allow_unconfirmed`).
    pub async fn put_with<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: WriteOptions,
    ) -> Result<(), Error> {
        self.trace("put", &value::render_keys([key]));
        let bytes = value::encode(value)?;
        match &self.backend {
            Backend::Sqlite(s) => s.put(key, &bytes, options),
            Backend::Kv(c) => c.put(key, &bytes, put_options(options)).await,
        }
    }

    /// Stores every pair, all or nothing.
    pub async fn put_multiple<T: Serialize>(&self, entries: &[(&str, T)]) -> Result<(), Error> {
        self.trace("put", &value::render_keys(entries.iter().map(|(k, _)| *k)));
        let encoded: Vec<(&str, Vec<u8>)> =
            entries.iter().map(|(k, v)| Ok((*k, value::encode(v)?))).collect::<Result<_, Error>>()?;
        let pairs: Vec<(&str, &[u8])> = encoded.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        match &self.backend {
            Backend::Sqlite(s) => s.put_multiple(&pairs, WriteOptions::default()),
            Backend::Kv(c) => c.put_multiple(&pairs, PutOptions::default()).await,
        }
    }

    /// Deletes `key`; true if it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        self.trace("delete", &value::render_keys([key]));
        match &self.backend {
            Backend::Sqlite(s) => s.delete(key, WriteOptions::default()),
            Backend::Kv(c) => c.delete(key, PutOptions::default()).await,
        }
    }

    /// Deletes every key of `keys`; how many existed.
    pub async fn delete_multiple(&self, keys: &[&str]) -> Result<usize, Error> {
        self.trace("delete", &value::render_keys(keys.iter().copied()));
        match &self.backend {
            Backend::Sqlite(s) => s.delete_multiple(keys, WriteOptions::default()),
            Backend::Kv(c) => c.delete_multiple(keys, PutOptions::default()).await,
        }
    }

    /// The pairs `options` selects, in key order (descending with `reverse`).
    pub async fn list<T: DeserializeOwned>(&self, options: &ListOptions) -> Result<Vec<(String, T)>, Error> {
        self.trace("list", &describe_list(options));
        let raw = match &self.backend {
            Backend::Sqlite(s) => s.list(options)?,
            Backend::Kv(c) => c.list(cache_list(options)).await?,
        };
        decode_pairs(raw)
    }

    /// Deletes every key and table (and the alarm, if the backend's setting says so). Resolves at once on
    /// both backends (spec §2.6, §3.4); the output gate waits for the deletion to be durable.
    pub async fn delete_all(&self) -> Result<(), Error> {
        match &self.backend {
            Backend::Sqlite(s) => s.delete_all().await,
            Backend::Kv(c) => {
                // JS `deleteAll()` resolves at once (spec §2.6: the count is for billing only, and workerd
                // returns no backpressure for it): a refusal at the call (a broken cache) is returned, and a
                // failure of the deletion breaks the output gate. The count is not awaited.
                let mut count = c.delete_all(PutOptions::default());
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                match std::future::Future::poll(count.as_mut(), &mut cx) {
                    std::task::Poll::Ready(result) => result.map(drop),
                    std::task::Poll::Pending => Ok(()),
                }
            }
        }
    }

    /// The alarm's time in ms since the epoch, or `None`.
    pub async fn get_alarm(&self) -> Result<Option<i64>, Error> {
        match &self.backend {
            Backend::Sqlite(s) => s.get_alarm(),
            Backend::Kv(c) => c.get_alarm(GetOptions::default()).await,
        }
    }

    /// Sets the alarm to `scheduled_ms` (ms since the epoch; must be positive). Inside an object, a time in
    /// the past is clamped to now, so it fires at once (spec §4).
    pub async fn set_alarm(&self, scheduled_ms: i64) -> Result<(), Error> {
        let scheduled_ms = check_set_alarm(&self.hooks, scheduled_ms)?;
        match &self.backend {
            Backend::Sqlite(s) => s.set_alarm(scheduled_ms, WriteOptions::default()),
            Backend::Kv(c) => c.set_alarm(scheduled_ms, PutOptions::default()).await,
        }
    }

    /// Deletes the alarm.
    pub async fn delete_alarm(&self) -> Result<(), Error> {
        match &self.backend {
            Backend::Sqlite(s) => s.delete_alarm(WriteOptions::default()),
            Backend::Kv(c) => c.delete_alarm(PutOptions::default()).await,
        }
    }

    /// Resolves once every write made before the call is durable.
    pub async fn sync(&self) -> Result<(), Error> {
        match &self.backend {
            Backend::Sqlite(s) => s.sync().await,
            Backend::Kv(c) => c.sync().await,
        }
    }

    /// A bookmark for now (SQLite-backed objects only), including the writes of the current batch (spec §3.6 `getCurrentBookmark`).
    pub async fn get_current_bookmark(&self) -> Result<String, Error> {
        self.sqlite_backend()?.get_current_bookmark()
    }

    /// The bookmark of the state at `unix_ms` (the last commit at or before it; spec §3.6
    /// `getBookmarkForTime`). Fails unless the time is within the last 30 days.
    pub async fn get_bookmark_for_time(&self, unix_ms: i64) -> Result<String, Error> {
        self.sqlite_backend()?.get_bookmark_for_time(unix_ms)
    }

    /// Restores the storage to `bookmark` when the object next starts; returns the bookmark of the state just
    /// before the restore, to undo it (spec §3.6 `onNextSessionRestoreBookmark`).
    pub async fn on_next_session_restore_bookmark(&self, bookmark: &str) -> Result<String, Error> {
        self.sqlite_backend()?.on_next_session_restore_bookmark(bookmark)
    }

    /// The SQL API (SQLite-backed objects only; spec §3.1).
    pub fn sql(&self) -> Result<Sql, Error> {
        match &self.backend {
            Backend::Sqlite(s) => Ok(Sql { storage: s.clone() }),
            Backend::Kv(_) => Err(Error::new(messages::SQL_NOT_AVAILABLE)),
        }
    }

    /// Runs `f` in a savepoint, synchronously (spec §3.3; SQLite-backed objects only).
    pub fn transaction_sync<R>(&self, f: impl FnOnce() -> Result<R, Error>) -> Result<R, Error> {
        match &self.backend {
            Backend::Sqlite(s) => s.transaction_sync(f),
            Backend::Kv(_) => Err(Error::new(messages::NOT_BACKED_BY_SQL)),
        }
    }

    /// Runs the async closure in a transaction (spec §2.7, §3.3): committed if it returns `Ok`, rolled back
    /// if it returns `Err`, whose error is returned without resetting the object. The closure gets the
    /// transaction's handle; on the SQLite backend, storage calls made directly meanwhile are part of it too.
    /// On the KV backend the handle's writes are buffered and applied to the cache at once when `f` returns
    /// `Ok` (spec §2.7).
    ///
    /// ```no_run
    /// # async fn demo(storage: dosim_runtime::prelude::Storage) -> Result<i64, dosim_runtime::prelude::Error> {
    /// let total = storage
    ///     .transaction(async |txn| {
    ///         let n: i64 = txn.get("n").await?.unwrap_or(0);
    ///         txn.put("n", &(n + 1)).await?;
    ///         Ok(n + 1)
    ///     })
    ///     .await?;
    /// # Ok(total)
    /// # }
    /// ```
    pub async fn transaction<R>(
        &self,
        f: impl AsyncFnOnce(&Transaction) -> Result<R, Error>,
    ) -> Result<R, Error> {
        // Inside an object, the transaction is a critical section (spec §1.3).
        if let Some(hooks) = self.hooks.clone() {
            let mut outcome = None;
            let body: LocalFuture<'_, ()> = Box::pin(async {
                outcome = Some(self.transaction_unguarded(f).await);
            });
            hooks.critical_section(body).await?;
            return outcome.expect("a critical section that succeeded ran its body");
        }
        self.transaction_unguarded(f).await
    }

    async fn transaction_unguarded<R>(
        &self,
        f: impl AsyncFnOnce(&Transaction) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let storage = match &self.backend {
            Backend::Sqlite(s) => s.clone(),
            Backend::Kv(c) => {
                let hooks = self.hooks.clone();
                let label = self.label.clone();
                return c
                    .transaction(async |t| {
                        let txn = Transaction {
                            handle: Handle::Kv(t.clone()),
                            hooks: hooks.clone(),
                            label: label.clone(),
                        };
                        f(&txn).await
                    })
                    .await;
            }
        };
        let outcome = std::sync::Arc::new(std::sync::Mutex::new(TxnState::Active));
        let result = storage
            .transaction(async |depth| {
                let txn = Transaction {
                    handle: Handle::Sqlite { storage: storage.clone(), depth, state: outcome.clone() },
                    hooks: self.hooks.clone(),
                    label: self.label.clone(),
                };
                f(&txn).await
            })
            .await;
        *outcome.lock().unwrap_or_else(|e| e.into_inner()) = TxnState::Finished;
        result
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TxnState {
    Active,
    RolledBack,
    /// The closure returned: using the handle now is a mistake (spec §2.7).
    Finished,
}

/// The handle of an explicit transaction (`txn` in `storage.transaction(async txn => …)`), on either backend.
#[derive(Debug)]
pub struct Transaction {
    handle: Handle,
    hooks: Option<Arc<dyn ObjectHooks>>,
    /// How trace lines name the object, as its storage's do.
    label: Option<Arc<str>>,
}

#[derive(Debug)]
enum Handle {
    Sqlite { storage: SqliteStorage, depth: usize, state: std::sync::Arc<std::sync::Mutex<TxnState>> },
    Kv(CacheTransaction),
}

impl Transaction {
    /// The SQLite handle, if the transaction is active; else the spec's message for `op` (spec §2.7).
    fn sqlite(&self, op: &str) -> Result<&SqliteStorage, Error> {
        let Handle::Sqlite { storage, state, .. } = &self.handle else {
            unreachable!("only called on the SQLite handle")
        };
        match *state.lock().unwrap_or_else(|e| e.into_inner()) {
            TxnState::Active => Ok(storage),
            TxnState::RolledBack => Err(Error::new(messages::rolled_back(op))),
            TxnState::Finished => Err(Error::new(messages::already_committed(op))),
        }
    }

    /// The value under `key`, as the transaction sees it.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        trace(&self.label, "txn get", &value::render_keys([key]));
        let raw = match &self.handle {
            Handle::Kv(t) => t.get(key, GetOptions::default()).await?,
            Handle::Sqlite { .. } => self.sqlite("get()")?.get(key)?,
        };
        raw.map(|b| value::decode(&b)).transpose()
    }

    /// Stores `value` under `key` in the transaction.
    pub async fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), Error> {
        trace(&self.label, "txn put", &value::render_keys([key]));
        match &self.handle {
            Handle::Kv(t) => {
                // The handle's own check comes first, as an encoding error would otherwise hide it.
                let bytes = value::encode(value)?;
                t.put(key, &bytes, PutOptions::default()).await
            }
            Handle::Sqlite { .. } => {
                let storage = self.sqlite("put()")?;
                storage.put(key, &value::encode(value)?, WriteOptions::default())
            }
        }
    }

    /// Deletes `key` in the transaction; true if it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        trace(&self.label, "txn delete", &value::render_keys([key]));
        match &self.handle {
            Handle::Kv(t) => t.delete(key, PutOptions::default()).await,
            Handle::Sqlite { .. } => self.sqlite("delete()")?.delete(key, WriteOptions::default()),
        }
    }

    /// The pairs `options` selects, as the transaction sees them.
    pub async fn list<T: DeserializeOwned>(&self, options: &ListOptions) -> Result<Vec<(String, T)>, Error> {
        trace(&self.label, "txn list", &describe_list(options));
        let raw = match &self.handle {
            Handle::Kv(t) => t.list(cache_list(options)).await?,
            Handle::Sqlite { .. } => self.sqlite("list()")?.list(options)?,
        };
        decode_pairs(raw)
    }

    /// The alarm, as the transaction sees it.
    pub async fn get_alarm(&self) -> Result<Option<i64>, Error> {
        match &self.handle {
            Handle::Kv(t) => t.get_alarm(GetOptions::default()).await,
            Handle::Sqlite { .. } => self.sqlite("getAlarm()")?.get_alarm(),
        }
    }

    /// Sets the alarm in the transaction.
    pub async fn set_alarm(&self, scheduled_ms: i64) -> Result<(), Error> {
        let scheduled_ms = check_set_alarm(&self.hooks, scheduled_ms)?;
        match &self.handle {
            Handle::Kv(t) => t.set_alarm(scheduled_ms, PutOptions::default()).await,
            Handle::Sqlite { .. } => {
                self.sqlite("setAlarm()")?.set_alarm(scheduled_ms, WriteOptions::default())
            }
        }
    }

    /// Deletes the alarm in the transaction.
    pub async fn delete_alarm(&self) -> Result<(), Error> {
        match &self.handle {
            Handle::Kv(t) => t.delete_alarm(PutOptions::default()).await,
            Handle::Sqlite { .. } => self.sqlite("deleteAlarm()")?.delete_alarm(WriteOptions::default()),
        }
    }

    /// Discards the transaction's writes; it commits nothing. May be called again; any other use of the handle
    /// afterwards fails (spec §2.7).
    pub fn rollback(&self) -> Result<(), Error> {
        let (storage, depth, state) = match &self.handle {
            Handle::Kv(t) => return t.rollback(),
            Handle::Sqlite { storage, depth, state } => (storage, *depth, state),
        };
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        match *state {
            TxnState::RolledBack => Ok(()),
            TxnState::Finished => Err(Error::new(messages::already_committed("rollback()"))),
            TxnState::Active => {
                storage.rollback_to(depth)?;
                *state = TxnState::RolledBack;
                Ok(())
            }
        }
    }
}
