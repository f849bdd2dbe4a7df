//! Object storage: the APIs objects use on their database (where it lives is [`crate::location`]).
//!
//! - [`value`]: how values are serialized, and the key and value limits.
//! - [`sql`]: the SQL API of SQLite-backed objects (`exec`, cursors, the authorizer and limits).
//! - [`kv`]: the key-value API on the `_cf_KV` table of SQLite-backed objects.
//! - [`actor_cache`]: the KV backend (workerd's `ActorCache`): a write-coalescing cache over an async store.
//! - [`sqlite`]: the SQLite backend: the implicit transaction of each turn, explicit transactions, deleteAll,
//!   sync, alarms; it drives [`sql`] and [`kv`].
//! - [`pitr`]: point-in-time recovery of the SQLite backend: the commit history, bookmarks, restores.
//! - [`replica`]: a shim VFS capturing what each commit writes to a database file, folded into pages.
//! - [`api`]: [`Storage`], the typed API objects call, over either backend.
//! - [`gates`]: the narrow interface between storage and the runtime's event loop and gates.

pub(crate) mod actor_cache;
pub(crate) mod api;
pub(crate) mod gates;
pub(crate) mod kv;
pub(crate) mod pitr;
pub(crate) mod replica;
pub(crate) mod sql;
pub(crate) mod sqlite;
pub(crate) mod value;

pub(crate) use crate::location::DatabaseLocation;
pub use api::{Sql, Storage, Transaction};

#[cfg(test)]
mod conformance;

#[cfg(test)]
mod size_limits_tests;
