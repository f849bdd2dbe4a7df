//! The storage API objects call (`ctx.storage` on Cloudflare; `state.storage()` here), typed with serde.
//!
//! Values go through [`super::value`] (CBOR); keys are strings in UTF-8 byte order. Every method is async, as
//! on Cloudflare, although on the SQLite backend each resolves at once: SQLite calls are synchronous and need
//! no input gate (spec §1.2, §3.1).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::kv::ListOptions;
use super::sql::{Cursor, SqlValue};
use super::sqlite::{SqliteStorage, WriteOptions};
use super::value;
use crate::error::{messages, Error};

/// An object's storage. Cheap to clone; every clone is the same storage.
#[derive(Clone, Debug)]
pub struct Storage {
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(SqliteStorage),
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
        Storage { backend: Backend::Sqlite(storage) }
    }

    fn sqlite_backend(&self) -> &SqliteStorage {
        match &self.backend {
            Backend::Sqlite(s) => s,
        }
    }

    /// The value under `key`, or `None`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.sqlite_backend().get(key)?.map(|b| value::decode(&b)).transpose()
    }

    /// The values of the present keys among `keys`, sorted by key, duplicates collapsed.
    pub async fn get_multiple<T: DeserializeOwned>(
        &self,
        keys: &[&str],
    ) -> Result<BTreeMap<String, T>, Error> {
        let raw = self.sqlite_backend().get_multiple(keys)?;
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
        let bytes = value::encode(value)?;
        self.sqlite_backend().put(key, &bytes, options)
    }

    /// Stores every pair, all or nothing.
    pub async fn put_multiple<T: Serialize>(&self, entries: &[(&str, T)]) -> Result<(), Error> {
        let encoded: Vec<(&str, Vec<u8>)> =
            entries.iter().map(|(k, v)| Ok((*k, value::encode(v)?))).collect::<Result<_, Error>>()?;
        let pairs: Vec<(&str, &[u8])> = encoded.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        self.sqlite_backend().put_multiple(&pairs, WriteOptions::default())
    }

    /// Deletes `key`; true if it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        self.sqlite_backend().delete(key, WriteOptions::default())
    }

    /// Deletes every key of `keys`; how many existed.
    pub async fn delete_multiple(&self, keys: &[&str]) -> Result<usize, Error> {
        self.sqlite_backend().delete_multiple(keys, WriteOptions::default())
    }

    /// The pairs `options` selects, in key order (descending with `reverse`).
    pub async fn list<T: DeserializeOwned>(&self, options: &ListOptions) -> Result<Vec<(String, T)>, Error> {
        let raw = self.sqlite_backend().list(options)?;
        raw.into_iter().map(|(k, b)| Ok((k, value::decode(&b)?))).collect()
    }

    /// Deletes every key and table (and the alarm, if the backend's setting says so).
    pub async fn delete_all(&self) -> Result<(), Error> {
        self.sqlite_backend().delete_all().await
    }

    /// The alarm's time in ms since the epoch, or `None`.
    pub async fn get_alarm(&self) -> Result<Option<i64>, Error> {
        self.sqlite_backend().get_alarm()
    }

    /// Sets the alarm to `scheduled_ms` (ms since the epoch; must be positive).
    pub async fn set_alarm(&self, scheduled_ms: i64) -> Result<(), Error> {
        self.sqlite_backend().set_alarm(scheduled_ms, WriteOptions::default())
    }

    /// Deletes the alarm.
    pub async fn delete_alarm(&self) -> Result<(), Error> {
        self.sqlite_backend().delete_alarm(WriteOptions::default())
    }

    /// Resolves once every write made before the call is durable.
    pub async fn sync(&self) -> Result<(), Error> {
        self.sqlite_backend().sync().await
    }

    /// A bookmark for now, including the writes of the current batch (spec §3.6 `getCurrentBookmark`).
    pub async fn get_current_bookmark(&self) -> Result<String, Error> {
        self.sqlite_backend().get_current_bookmark()
    }

    /// The bookmark of the state at `unix_ms` (the last commit at or before it; spec §3.6
    /// `getBookmarkForTime`). Fails unless the time is within the last 30 days.
    pub async fn get_bookmark_for_time(&self, unix_ms: i64) -> Result<String, Error> {
        self.sqlite_backend().get_bookmark_for_time(unix_ms)
    }

    /// Restores the storage to `bookmark` when the object next starts; returns the bookmark of the state just
    /// before the restore, to undo it (spec §3.6 `onNextSessionRestoreBookmark`).
    pub async fn on_next_session_restore_bookmark(&self, bookmark: &str) -> Result<String, Error> {
        self.sqlite_backend().on_next_session_restore_bookmark(bookmark)
    }

    /// The SQL API (SQLite-backed objects only; spec §3.1).
    pub fn sql(&self) -> Result<Sql, Error> {
        match &self.backend {
            Backend::Sqlite(s) => Ok(Sql { storage: s.clone() }),
        }
    }

    /// Runs `f` in a savepoint, synchronously (spec §3.3; SQLite-backed objects only).
    pub fn transaction_sync<R>(&self, f: impl FnOnce() -> Result<R, Error>) -> Result<R, Error> {
        match &self.backend {
            Backend::Sqlite(s) => s.transaction_sync(f),
        }
    }

    /// Runs the async closure in a transaction (spec §2.7, §3.3): committed if it returns `Ok`, rolled back
    /// if it returns `Err`, whose error is returned without resetting the object. The closure gets the
    /// transaction's handle; on the SQLite backend, storage calls made directly meanwhile are part of it too.
    ///
    /// ```no_run
    /// # async fn demo(storage: dosim_runtime::storage::Storage) -> Result<i64, dosim_runtime::Error> {
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
        let storage = self.sqlite_backend().clone();
        let outcome = std::sync::Arc::new(std::sync::Mutex::new(TxnState::Active));
        let result = storage
            .transaction(async |depth| {
                let txn = Transaction { storage: storage.clone(), depth, state: outcome.clone() };
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

/// The handle of an explicit transaction (`txn` in `storage.transaction(async txn => …)`).
#[derive(Debug)]
pub struct Transaction {
    storage: SqliteStorage,
    depth: usize,
    state: std::sync::Arc<std::sync::Mutex<TxnState>>,
}

impl Transaction {
    /// Fails unless the transaction is active, with the spec's message for `op` (spec §2.7).
    fn check(&self, op: &str) -> Result<(), Error> {
        match *self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            TxnState::Active => Ok(()),
            TxnState::RolledBack => Err(Error::new(messages::rolled_back(op))),
            TxnState::Finished => Err(Error::new(messages::already_committed(op))),
        }
    }

    /// The value under `key`, as the transaction sees it.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.check("get()")?;
        self.storage.get(key)?.map(|b| value::decode(&b)).transpose()
    }

    /// Stores `value` under `key` in the transaction.
    pub async fn put<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), Error> {
        self.check("put()")?;
        self.storage.put(key, &value::encode(value)?, WriteOptions::default())
    }

    /// Deletes `key` in the transaction; true if it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        self.check("delete()")?;
        self.storage.delete(key, WriteOptions::default())
    }

    /// The pairs `options` selects, as the transaction sees them.
    pub async fn list<T: DeserializeOwned>(&self, options: &ListOptions) -> Result<Vec<(String, T)>, Error> {
        self.check("list()")?;
        let raw = self.storage.list(options)?;
        raw.into_iter().map(|(k, b)| Ok((k, value::decode(&b)?))).collect()
    }

    /// The alarm, as the transaction sees it.
    pub async fn get_alarm(&self) -> Result<Option<i64>, Error> {
        self.check("getAlarm()")?;
        self.storage.get_alarm()
    }

    /// Sets the alarm in the transaction.
    pub async fn set_alarm(&self, scheduled_ms: i64) -> Result<(), Error> {
        self.check("setAlarm()")?;
        self.storage.set_alarm(scheduled_ms, WriteOptions::default())
    }

    /// Deletes the alarm in the transaction.
    pub async fn delete_alarm(&self) -> Result<(), Error> {
        self.check("deleteAlarm()")?;
        self.storage.delete_alarm(WriteOptions::default())
    }

    /// Discards the transaction's writes; it commits nothing. May be called again; any other use of the handle
    /// afterwards fails (spec §2.7).
    pub fn rollback(&self) -> Result<(), Error> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match *state {
            TxnState::RolledBack => Ok(()),
            TxnState::Finished => Err(Error::new(messages::already_committed("rollback()"))),
            TxnState::Active => {
                self.storage.rollback_to(self.depth)?;
                *state = TxnState::RolledBack;
                Ok(())
            }
        }
    }
}
