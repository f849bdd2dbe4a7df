//! Point-in-time recovery of SQLite-backed objects (spec §3.6): bookmarks, and restoring the database to one
//! at the next open.
//!
//! # Design
//! * **Recording.** A SQLite pre-update hook (installed on the connection at open) notes every row change of
//!   the `main` database: its table, the old row (rowid and values) and the new one. It runs no SQL. Just
//!   before a transaction commits (the turn's implicit transaction, the root savepoint of an explicit
//!   transaction, `delete_all`), the noted changes are reduced, as SQLite's session extension does, to one
//!   *net* change per row: the row as it was when the transaction first touched it (`before`) and the row as
//!   it is now, read back from the database (`after`); rows with `before == after` are dropped. Reading
//!   `after` back makes savepoints rolled back and failed statements harmless: what they undid is not there.
//!   The net changes of the commit are stored (CBOR) in [`HISTORY_TABLE`], with a sequence number and the
//!   commit time, **in the same transaction**, so the history is exactly as durable as the writes. BLOB values
//!   are CBOR byte strings (one header, then the bytes), so a row's history is about the size of the row.
//!   A commit's history holds each changed row twice (before and after) and may hold many rows, so it can be
//!   larger than SQLite's row limit ([`SQLITE_ROW_SIZE_MAX`](super::value::SQLITE_ROW_SIZE_MAX)), which every
//!   row of the history must respect as well: the encoding is cut into parts of at most [`HISTORY_PART_MAX`]
//!   bytes, the first in the history row and the others in [`HISTORY_PARTS_TABLE`]. Any set of writes within
//!   the documented limits therefore commits (spec §3.1, §11).
//! * **Bookmarks** are `<commit time ms, 16 hex>-<sequence, 16 hex>`, lowercase: fixed width, so they sort
//!   lexically in commit order. Commit times never go backwards (a commit earlier than the previous one by the
//!   embedder's clock is stamped with the previous time). Sequence 0 is the *genesis* entry, stamped with
//!   time 0: the state before the first recorded commit.
//! * **Restore.** [`on_next_session_restore_bookmark`](super::sqlite::SqliteStorage::on_next_session_restore_bookmark)
//!   validates the bookmark and stores it in [`RESTORE_TABLE`]. At the next open of the database, the
//!   history entries after the bookmark are undone newest first, in one transaction: each entry's `after` rows
//!   are deleted, then its `before` rows inserted (rowid tables keep their rowids), with triggers and foreign
//!   keys off so nothing cascades twice. The restore itself is recorded as a new history entry (so it can be
//!   undone with the bookmark the request returned), and the request is deleted, in that same transaction.
//! * **Durability of the request.** Made while no transaction is open, the request is written at once. Made
//!   inside the turn's open batch, it joins the batch; if the batch is then rolled back (the object is reset
//!   or aborted, `delete_all`), it is written again right after the rollback, so `onNextSessionRestoreBookmark`
//!   followed by `ctx.abort()` works. Only a crash before the batch commits loses it, together with the batch
//!   (whose bookmark the request returned).
//! * **Window** ([`WINDOW_MS`], 30 days, spec §3.6/§11). Each commit prunes the entries older than the window
//!   except the newest of them (the *anchor*: it describes the state at the window's start). Bookmarks of
//!   entries older than the anchor are unknown and rejected, pruned yet or not.
//! * **Time** comes from the embedder's [`Clock`], never from the wall clock.
//!
//! # Limits
//! * **Schema changes are not recorded.** Any commit that changes the user-visible schema (`CREATE`/`DROP`/
//!   `ALTER` of a table, index, view or trigger; `delete_all` dropping user tables) is marked in the history,
//!   and restoring to a bookmark before it fails with [`SCHEMA_CHANGED`] (at the request, or at the next
//!   open if the change came after the request). KV data (`_cf_KV`) and the alarm survive `delete_all`'s
//!   history, so a KV-only object can be restored across `delete_all`. A table dropped and recreated with
//!   identical SQL in one batch is not detected (its old rows are not restored).
//! * Tables with generated or hidden columns are not supported: a commit touching one is marked like a
//!   schema change. `sqlite_sequence` (AUTOINCREMENT counters) and `sqlite_stat1` are not restored.
//! * A restore that cannot be applied at open (see above) makes that open fail with the error and discards
//!   the request, so the next open works normally.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The recovery window: 30 days (spec §3.6, §11), in milliseconds.
pub const WINDOW_MS: i64 = 30 * 24 * 60 * 60 * 1000;

/// The history of commits. `_cf_` names are out of reach of application SQL (spec §3.1).
pub const HISTORY_TABLE: &str = "_cf_PITR_HISTORY";

/// The parts of a commit's history after the first, when its encoding is longer than [`HISTORY_PART_MAX`].
pub const HISTORY_PARTS_TABLE: &str = "_cf_PITR_HISTORY_PARTS";

/// The longest part of a history entry's encoding stored in one row: half the row limit
/// ([`SQLITE_ROW_SIZE_MAX`](super::value::SQLITE_ROW_SIZE_MAX), spec §3.1, §11), so that a part with its
/// sequence number, time and record header always fits one row.
pub const HISTORY_PART_MAX: usize = super::value::SQLITE_ROW_SIZE_MAX / 2;

/// The pending restore request (one row).
pub const RESTORE_TABLE: &str = "_cf_PITR_RESTORE";

/// `getBookmarkForTime` with a time outside the window (older than 30 days, or in the future).
pub const TIME_OUTSIDE_WINDOW: &str =
    "getBookmarkForTime(): the time must be within the point-in-time recovery window (the last 30 days)";

/// A string that is not a bookmark.
pub const MALFORMED_BOOKMARK: &str = "Invalid bookmark: not a point-in-time recovery bookmark";

/// A well-formed bookmark that names no state of this database within the window.
pub const UNKNOWN_BOOKMARK: &str =
    "Unknown bookmark: it names no state of this database within the point-in-time recovery window";

/// Restoring across a schema change.
pub const SCHEMA_CHANGED: &str = "Cannot restore this bookmark: the database schema changed after it \
     (CREATE/DROP/ALTER and deleteAll of SQL tables are not covered by point-in-time recovery)";

/// The current time of the node the object runs on, in ms since the Unix epoch.
pub trait Clock: Send + Sync {
    /// Now, in ms since the epoch.
    fn now_ms(&self) -> i64;
}

/// A clock the caller sets by hand (tests; embedders without a notion of time, where it stays at 0).
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    /// A clock showing `ms`.
    pub fn new(ms: i64) -> ManualClock {
        ManualClock(std::sync::atomic::AtomicI64::new(ms))
    }

    /// Sets the time.
    pub fn set(&self, ms: i64) {
        self.0.store(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// Moves the time forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A position in the history: commit time and sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Mark {
    time: i64,
    seq: i64,
}

impl Mark {
    fn bookmark(self) -> String {
        format!("{:016x}-{:016x}", self.time.max(0), self.seq.max(0))
    }

    fn parse(s: &str) -> Result<Mark, Error> {
        let bad = || Error::new(MALFORMED_BOOKMARK);
        let (t, q) = s.split_once('-').ok_or_else(bad)?;
        let field = |f: &str| {
            if f.len() != 16 || !f.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(bad());
            }
            i64::from_str_radix(f, 16).map_err(|_| bad())
        };
        Ok(Mark { time: field(t)?, seq: field(q)? })
    }
}

/// A column value, as stored in the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(#[serde(with = "byte_string")] Vec<u8>),
}

/// A BLOB's bytes as one CBOR byte string. serde's default for `Vec<u8>` is a sequence of integers, one CBOR
/// item per byte (two bytes each from 0x18 up), which made the history of a 1 MB value larger than SQLite's
/// row limit.
mod byte_string {
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl serde::de::Visitor<'_> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(match self {
            Val::Null => ValueRef::Null,
            Val::Int(i) => ValueRef::Integer(*i),
            Val::Real(r) => ValueRef::Real(*r),
            Val::Text(t) => ValueRef::Text(t.as_bytes()),
            Val::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// One row change noted by the pre-update hook.
#[derive(Debug)]
struct RawEvent {
    table: String,
    old: Option<(i64, Vec<Val>)>,
    new: Option<(i64, Vec<Val>)>,
}

/// Up to this many changed rows, a transaction's row changes are matched by comparing keys; beyond, by an
/// index of their encodings (comparing is cheaper for the few rows of a typical turn, quadratic for many).
const LINEAR_MATCH_MAX: usize = 32;

/// A key's encoding, as the index of changed rows compares it.
fn encode_key(key: &Key) -> rusqlite::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    ciborium::into_writer(key, &mut bytes).map_err(internal)?;
    Ok(bytes)
}

/// Which row: by rowid, or by primary key in a `WITHOUT ROWID` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Key {
    Rowid(i64),
    Pk(Vec<Val>),
}

/// The net change of one row in one commit.
#[derive(Debug, Serialize, Deserialize)]
struct RowChange {
    table: String,
    key: Key,
    before: Option<Vec<Val>>,
    after: Option<Vec<Val>>,
}

/// What a history entry records.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Entry {
    changes: Vec<RowChange>,
}

/// The columns of a table, as the history needs them.
#[derive(Clone)]
struct TableInfo {
    columns: Vec<String>,
    without_rowid: bool,
    /// Indices of the primary key columns, in key order.
    pk: Vec<usize>,
    /// Generated or hidden columns: not supported.
    unsupported: bool,
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn table_info(conn: &Connection, table: &str) -> rusqlite::Result<Option<TableInfo>> {
    let wr: Option<i64> = conn
        .query_row("SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1", [table], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(wr) = wr else { return Ok(None) };
    let mut stmt = conn.prepare("SELECT name, pk, hidden FROM pragma_table_xinfo(?1) ORDER BY cid")?;
    let rows: Vec<(String, i64, i64)> =
        stmt.query_map([table], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<_, _>>()?;
    let unsupported = rows.iter().any(|r| r.2 != 0);
    let mut pk: Vec<(i64, usize)> =
        rows.iter().enumerate().filter(|(_, r)| r.1 > 0).map(|(i, r)| (r.1, i)).collect();
    pk.sort();
    Ok(Some(TableInfo {
        columns: rows.into_iter().map(|r| r.0).collect(),
        without_rowid: wr != 0,
        pk: pk.into_iter().map(|(_, i)| i).collect(),
        unsupported,
    }))
}

/// The user-visible schema (everything but `_cf_` and `sqlite_` objects).
fn fingerprint(conn: &Connection) -> rusqlite::Result<String> {
    conn.query_row(
        "SELECT ifnull(group_concat(type || ' ' || name || ' ' || ifnull(sql, ''), char(10)), '') FROM \
         (SELECT * FROM sqlite_master WHERE name NOT LIKE '\\_cf\\_%' ESCAPE '\\' \
          AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type, name)",
        [],
        |r| r.get(0),
    )
}

fn schema_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("PRAGMA schema_version")?.query_row([], |r| r.get(0))
}

fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1", [name], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| n > 0)
}

fn internal(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

fn sql_err(e: &rusqlite::Error) -> Error {
    super::sql::error_from_rusqlite(e)
}

const CREATE_HISTORY: &str = "CREATE TABLE IF NOT EXISTS _cf_PITR_HISTORY (seq INTEGER PRIMARY KEY, \
     time_ms INTEGER NOT NULL, blocked TEXT, changes BLOB NOT NULL); \
     CREATE TABLE IF NOT EXISTS _cf_PITR_HISTORY_PARTS (seq INTEGER NOT NULL, part INTEGER NOT NULL, \
     bytes BLOB NOT NULL, PRIMARY KEY (seq, part))";

/// How many of the oldest history entries one commit looks at when it prunes (commit times grow with
/// `seq`, so the anchor is among the oldest; a longer backlog is pruned over several commits).
const PRUNE_SCAN_MAX: i64 = 64;
const CREATE_RESTORE: &str =
    "CREATE TABLE IF NOT EXISTS _cf_PITR_RESTORE (id INTEGER PRIMARY KEY, bookmark TEXT NOT NULL)";
/// The tables the restore may need to recreate (same statements as `kv` and `sqlite`).
const RECREATE: &[(&str, &str)] = &[
    ("_cf_KV", "CREATE TABLE IF NOT EXISTS _cf_KV (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID"),
    ("_cf_METADATA", "CREATE TABLE IF NOT EXISTS _cf_METADATA (key INTEGER PRIMARY KEY, value BLOB)"),
];

/// The point-in-time recovery state of one open database.
pub(crate) struct Pitr {
    /// The installed pre-update hook; uninstalled when this drops, which must be before the connection closes.
    _hook: preupdate::Hook,
    events: Arc<Mutex<Vec<RawEvent>>>,
    clock: Arc<dyn Clock>,
    /// `PRAGMA schema_version` and [`fingerprint`] as of the last commit (or open).
    schema: (i64, String),
    /// The newest history entry, if there is a history.
    last: Option<Mark>,
    /// The commit time promised to the open batch by [`Pitr::current_bookmark`].
    reserved: Option<i64>,
    /// The entry written by [`Pitr::before_commit`], effective once the commit succeeds.
    staged: Option<Mark>,
    /// A restore request written inside the open transaction, to write again if it rolls back.
    request: Option<String>,
    /// Table layouts, valid for the schema version they were read at (commits are hot: re-reading them per
    /// commit cost more than the commit).
    infos: (i64, BTreeMap<String, Option<TableInfo>>),
}

fn lock_events(events: &Mutex<Vec<RawEvent>>) -> std::sync::MutexGuard<'_, Vec<RawEvent>> {
    events.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pitr {
    /// Installs the pre-update hook, loads the history's head, and applies a pending restore.
    pub(crate) fn open(conn: &mut Connection, clock: Arc<dyn Clock>) -> Result<Pitr, Error> {
        let events: Arc<Mutex<Vec<RawEvent>>> = Arc::default();
        let sink = events.clone();
        let hook = preupdate::Hook::install(conn, sink);
        let schema = (|| Ok((schema_version(conn)?, fingerprint(conn)?)))().map_err(|e| sql_err(&e))?;
        let mut pitr = Pitr {
            _hook: hook,
            events,
            clock,
            schema,
            last: None,
            reserved: None,
            staged: None,
            request: None,
            infos: (-1, BTreeMap::new()),
        };
        pitr.last = pitr.load_last(conn).map_err(|e| sql_err(&e))?;
        pitr.apply_pending_restore(conn)?;
        Ok(pitr)
    }

    /// Moves the pre-update hook to `conn`, before the connection it is on closes (the storage swaps its
    /// connection for a placeholder when it shuts down). The old hook is uninstalled while its connection is
    /// still open.
    pub(crate) fn move_hook(&mut self, conn: &Connection) {
        self._hook = preupdate::Hook::install(conn, self.events.clone());
    }

    fn load_last(&self, conn: &Connection) -> rusqlite::Result<Option<Mark>> {
        if !table_exists(conn, HISTORY_TABLE)? {
            return Ok(None);
        }
        conn.query_row("SELECT time_ms, seq FROM _cf_PITR_HISTORY ORDER BY seq DESC LIMIT 1", [], |r| {
            Ok(Mark { time: r.get(0)?, seq: r.get(1)? })
        })
        .optional()
    }

    /// The next commit's time: now, but never before the previous commit.
    fn commit_time(&self) -> i64 {
        let now = self.clock.now_ms().max(0);
        self.last.map_or(now, |l| now.max(l.time))
    }

    /// The state before the first recorded commit.
    fn genesis() -> Mark {
        Mark { time: 0, seq: 0 }
    }

    /// The bookmark of now (spec §3.6 `getCurrentBookmark`); `batch_open`: a write transaction is open, and
    /// its commit is part of "now".
    pub(crate) fn current_bookmark(&mut self, batch_open: bool) -> String {
        if batch_open {
            let time = match self.reserved {
                Some(t) => t,
                None => {
                    let t = self.commit_time();
                    self.reserved = Some(t);
                    t
                }
            };
            let seq = self.last.map_or(1, |l| l.seq + 1);
            return Mark { time, seq }.bookmark();
        }
        self.last.unwrap_or(Self::genesis()).bookmark()
    }

    /// The oldest sequence number still inside the window at `now`: the anchor.
    fn anchor(conn: &Connection, now: i64) -> rusqlite::Result<Option<i64>> {
        conn.prepare_cached(
            "SELECT max(seq) FROM (SELECT seq, time_ms FROM _cf_PITR_HISTORY ORDER BY seq LIMIT ?2) \
             WHERE time_ms <= ?1",
        )?
        .query_row([now - WINDOW_MS, PRUNE_SCAN_MAX], |r| r.get(0))
    }

    /// The bookmark of the last commit at or before `ts` (spec §3.6 `getBookmarkForTime`).
    pub(crate) fn bookmark_for_time(&self, conn: &Connection, ts: i64) -> Result<String, Error> {
        let now = self.clock.now_ms();
        if ts < now - WINDOW_MS || ts > now {
            return Err(Error::new(TIME_OUTSIDE_WINDOW));
        }
        if self.last.is_none() {
            return Ok(Self::genesis().bookmark());
        }
        let mark = conn
            .query_row(
                "SELECT time_ms, seq FROM _cf_PITR_HISTORY WHERE time_ms <= ?1 ORDER BY seq DESC LIMIT 1",
                [ts],
                |r| Ok(Mark { time: r.get(0)?, seq: r.get(1)? }),
            )
            .optional()
            .map_err(|e| sql_err(&e))?;
        Ok(mark.unwrap_or(Self::genesis()).bookmark())
    }

    /// Checks that `mark` names a state the database can be restored to.
    fn validate(&self, conn: &Connection, mark: Mark) -> Result<(), Error> {
        let unknown = || Error::new(UNKNOWN_BOOKMARK);
        let Some(last) = self.last else {
            return if mark == Self::genesis() { Ok(()) } else { Err(unknown()) };
        };
        let q = |e: rusqlite::Error| sql_err(&e);
        let exists: Option<i64> = conn
            .query_row("SELECT time_ms FROM _cf_PITR_HISTORY WHERE seq = ?1", [mark.seq], |r| r.get(0))
            .optional()
            .map_err(q)?;
        if exists != Some(mark.time) || mark.seq > last.seq {
            return Err(unknown());
        }
        if Self::anchor(conn, self.clock.now_ms()).map_err(q)?.is_some_and(|a| mark.seq < a) {
            return Err(unknown());
        }
        let blocked: i64 = conn
            .query_row(
                "SELECT count(*) FROM _cf_PITR_HISTORY WHERE seq > ?1 AND blocked IS NOT NULL",
                [mark.seq],
                |r| r.get(0),
            )
            .map_err(q)?;
        if blocked > 0 {
            return Err(Error::new(SCHEMA_CHANGED));
        }
        Ok(())
    }

    /// Records a restore request (spec §3.6 `onNextSessionRestoreBookmark`); returns the bookmark of now.
    /// `batch_open`: a write transaction is open (the request joins it).
    pub(crate) fn request_restore(
        &mut self,
        conn: &Connection,
        bookmark: &str,
        batch_open: bool,
    ) -> Result<String, Error> {
        let mark = Mark::parse(bookmark)?;
        let reserved_match = batch_open && self.current_bookmark(true) == bookmark;
        if !reserved_match {
            self.validate(conn, mark)?;
        }
        let undo = self.current_bookmark(batch_open);
        Self::write_request(conn, bookmark).map_err(|e| sql_err(&e))?;
        if !conn.is_autocommit() {
            self.request = Some(bookmark.to_owned());
        }
        Ok(undo)
    }

    fn write_request(conn: &Connection, bookmark: &str) -> rusqlite::Result<()> {
        conn.execute_batch(CREATE_RESTORE)?;
        conn.execute(
            "INSERT INTO _cf_PITR_RESTORE (id, bookmark) VALUES (1, ?1) \
             ON CONFLICT(id) DO UPDATE SET bookmark = excluded.bookmark",
            [bookmark],
        )
        .map(|_| ())
    }

    /// Reduces the noted row changes to this transaction's net changes.
    fn net_changes(&mut self, conn: &Connection, version: i64) -> rusqlite::Result<(Vec<RowChange>, bool)> {
        let events = std::mem::take(&mut *lock_events(&self.events));
        if events.is_empty() {
            return Ok((Vec::new(), false));
        }
        if self.infos.0 != version {
            self.infos = (version, BTreeMap::new());
        }
        let infos = &mut self.infos.1;
        let mut changes: Vec<RowChange> = Vec::new();
        // (table, encoded key) → index in `changes`.
        let mut seen: BTreeMap<(String, Vec<u8>), usize> = BTreeMap::new();
        let mut unsupported = false;
        for ev in events {
            if !infos.contains_key(&ev.table) {
                infos.insert(ev.table.clone(), table_info(conn, &ev.table)?);
            }
            // A table dropped in this transaction: a schema change, marked as such by the caller.
            let Some(info) = infos.get(&ev.table).and_then(|i| i.as_ref()) else { continue };
            let key_of = |(rowid, vals): &(i64, Vec<Val>)| {
                if info.without_rowid {
                    Key::Pk(info.pk.iter().map(|&i| vals.get(i).cloned().unwrap_or(Val::Null)).collect())
                } else {
                    Key::Rowid(*rowid)
                }
            };
            // The old image leaves its key; the new image is what its key holds now. The pre-update hook sees
            // every row change (with it installed, SQLite turns off the truncate optimization, and REPLACE's
            // and foreign keys' deletes are row changes too), so the last image of a key is its state at
            // commit: no need to read the rows back.
            for (side, is_old) in [(&ev.old, true), (&ev.new, false)] {
                let Some(row) = side else { continue };
                if info.unsupported || row.1.len() != info.columns.len() {
                    unsupported = true;
                    continue;
                }
                let key = key_of(row);
                // Few rows (the common turn): compare keys. Many: index them by their encoding.
                if seen.is_empty() && changes.len() >= LINEAR_MATCH_MAX {
                    for (i, c) in changes.iter().enumerate() {
                        seen.insert((c.table.clone(), encode_key(&c.key)?), i);
                    }
                }
                let found = if seen.is_empty() {
                    changes.iter().position(|c| c.table == ev.table && c.key == key)
                } else {
                    seen.get(&(ev.table.clone(), encode_key(&key)?)).copied()
                };
                let i = match found {
                    Some(i) => i,
                    None => {
                        if !seen.is_empty() {
                            seen.insert((ev.table.clone(), encode_key(&key)?), changes.len());
                        }
                        // First seen: its state before the transaction is this old image, or nothing.
                        let before = is_old.then(|| row.1.clone());
                        changes.push(RowChange { table: ev.table.clone(), key, before, after: None });
                        changes.len() - 1
                    }
                };
                changes[i].after = (!is_old).then(|| row.1.clone());
            }
        }
        let out: Vec<RowChange> = changes.into_iter().filter(|c| c.after != c.before).collect();
        Ok((out, unsupported))
    }

    /// Writes the history entry of the transaction about to commit, and prunes. Runs inside it.
    pub(crate) fn before_commit(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        self.staged = None;
        let version = schema_version(conn)?;
        let (changes, unsupported) = self.net_changes(conn, version)?;
        let mut blocked = unsupported.then_some("unsupported table");
        let mut new_schema = None;
        if version != self.schema.0 {
            let fp = fingerprint(conn)?;
            if fp != self.schema.1 {
                blocked = Some("schema changed");
            }
            new_schema = Some(fp);
        }
        if changes.is_empty() && blocked.is_none() && self.reserved.is_none() {
            if let Some(fp) = new_schema {
                self.schema = (version, fp);
            }
            return Ok(());
        }
        let time = self.reserved.unwrap_or_else(|| self.commit_time());
        // With a history head, the table exists (it is only ever created with its genesis row).
        let mut version = version;
        if self.last.is_none() && !table_exists(conn, HISTORY_TABLE)? {
            conn.execute_batch(CREATE_HISTORY)?;
            conn.execute(
                "INSERT INTO _cf_PITR_HISTORY (seq, time_ms, blocked, changes) VALUES (0, 0, NULL, ?1)",
                [encode(&Entry::default())?],
            )?;
            // Creating the history table changed the schema version (not the user's schema).
            version = schema_version(conn)?;
        }
        let seq = self.last.map_or(1, |l| l.seq + 1);
        let encoded = encode(&Entry { changes })?;
        let mut parts = encoded.chunks(HISTORY_PART_MAX);
        conn.prepare_cached(
            "INSERT INTO _cf_PITR_HISTORY (seq, time_ms, blocked, changes) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(rusqlite::params![seq, time, blocked, parts.next().unwrap_or_default()])?;
        for (part, bytes) in (1i64..).zip(parts) {
            conn.prepare_cached("INSERT INTO _cf_PITR_HISTORY_PARTS (seq, part, bytes) VALUES (?1, ?2, ?3)")?
                .execute(rusqlite::params![seq, part, bytes])?;
        }
        // Prune what is older than the window, keeping the anchor. Commit times grow with `seq`, so the
        // oldest entry says whether there is anything to prune, and most commits stop there.
        let oldest: Option<i64> = conn
            .prepare_cached("SELECT time_ms FROM _cf_PITR_HISTORY WHERE seq > 0 ORDER BY seq LIMIT 1")?
            .query_row([], |r| r.get(0))
            .optional()?;
        if oldest.is_some_and(|t| t <= time - WINDOW_MS) {
            if let Some(anchor) = Self::anchor(conn, time)? {
                conn.prepare_cached("DELETE FROM _cf_PITR_HISTORY WHERE seq < ?1")?.execute([anchor])?;
                conn.prepare_cached("DELETE FROM _cf_PITR_HISTORY_PARTS WHERE seq < ?1")?
                    .execute([anchor])?;
            }
        }
        self.staged = Some(Mark { time, seq });
        self.schema = (version, new_schema.unwrap_or_else(|| self.schema.1.clone()));
        Ok(())
    }

    /// The transaction committed.
    pub(crate) fn after_commit(&mut self) {
        if let Some(m) = self.staged.take() {
            self.last = Some(m);
        }
        self.reserved = None;
        self.request = None;
    }

    /// The transaction rolled back (or failed to commit): forget it; write a restore request it held again.
    pub(crate) fn after_rollback(&mut self, conn: &Connection) {
        lock_events(&self.events).clear();
        self.staged = None;
        self.reserved = None;
        // The schema cache may describe the rolled-back transaction.
        if let (Ok(v), Ok(f)) = (schema_version(conn), fingerprint(conn)) {
            self.schema = (v, f);
        }
        if let Some(b) = self.request.take() {
            if conn.is_autocommit() {
                // Best effort: the request is as durable as this write.
                let _ = Self::write_request(conn, &b);
            }
        }
    }

    /// Applies the pending restore request, if any (at open).
    fn apply_pending_restore(&mut self, conn: &Connection) -> Result<(), Error> {
        let q = |e: rusqlite::Error| sql_err(&e);
        if !table_exists(conn, RESTORE_TABLE).map_err(q)? {
            return Ok(());
        }
        let Some(bookmark): Option<String> = conn
            .query_row("SELECT bookmark FROM _cf_PITR_RESTORE WHERE id = 1", [], |r| r.get(0))
            .optional()
            .map_err(q)?
        else {
            return Ok(());
        };
        let fk: bool = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0)).map_err(q)?;
        conn.execute_batch("PRAGMA foreign_keys = OFF").map_err(q)?;
        let triggers = conn
            .set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)
            .map_err(q)?;
        let result = self.restore(conn, &bookmark);
        let _ = conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, triggers);
        if fk {
            let _ = conn.execute_batch("PRAGMA foreign_keys = ON");
        }
        if result.is_err() {
            // Discard the request so that the object can start next time.
            let _ = conn.execute("DELETE FROM _cf_PITR_RESTORE", []);
        }
        result
    }

    fn restore(&mut self, conn: &Connection, bookmark: &str) -> Result<(), Error> {
        let q = |e: rusqlite::Error| sql_err(&e);
        let mark = Mark::parse(bookmark)?;
        self.validate(conn, mark)?;
        conn.execute_batch("BEGIN").map_err(q)?;
        let result = (|| -> Result<(), Error> {
            let mut stmt = conn
                .prepare("SELECT seq, changes FROM _cf_PITR_HISTORY WHERE seq > ?1 ORDER BY seq DESC")
                .map_err(q)?;
            let entries: Vec<(i64, Vec<u8>)> = stmt
                .query_map([mark.seq], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|r| r.collect())
                .map_err(q)?;
            drop(stmt);
            let mut parts = conn
                .prepare("SELECT bytes FROM _cf_PITR_HISTORY_PARTS WHERE seq = ?1 ORDER BY part")
                .map_err(q)?;
            for (seq, mut blob) in entries {
                for part in parts.query_map([seq], |r| r.get::<_, Vec<u8>>(0)).map_err(q)? {
                    blob.extend(part.map_err(q)?);
                }
                let entry: Entry = ciborium::from_reader(blob.as_slice())
                    .map_err(|e| Error::new(format!("corrupt point-in-time recovery history: {e}")))?;
                undo(conn, &entry).map_err(q)?;
            }
            conn.execute("DELETE FROM _cf_PITR_RESTORE", []).map_err(q)?;
            self.before_commit(conn).map_err(q)?;
            conn.execute_batch("COMMIT").map_err(q)
        })();
        match result {
            Ok(()) => {
                self.after_commit();
                Ok(())
            }
            Err(e) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                self.after_rollback(conn);
                Err(e)
            }
        }
    }
}

fn encode(entry: &Entry) -> rusqlite::Result<Vec<u8>> {
    let mut out = Vec::new();
    ciborium::into_writer(entry, &mut out).map_err(internal)?;
    Ok(out)
}

fn key_clause(info: &TableInfo, key: &Key) -> (String, Vec<Val>) {
    match key {
        Key::Rowid(r) => ("rowid = ?".to_owned(), vec![Val::Int(*r)]),
        Key::Pk(vals) => {
            let cols: Vec<String> =
                info.pk.iter().map(|&i| format!("{} = ?", quote(&info.columns[i]))).collect();
            (cols.join(" AND "), vals.clone())
        }
    }
}

/// Undoes one history entry: deletes its `after` rows, then inserts its `before` rows.
fn undo(conn: &Connection, entry: &Entry) -> rusqlite::Result<()> {
    let mut infos: BTreeMap<&str, TableInfo> = BTreeMap::new();
    for c in &entry.changes {
        if !infos.contains_key(c.table.as_str()) {
            if let Some((_, create)) = RECREATE.iter().find(|(n, _)| *n == c.table) {
                conn.execute_batch(create)?;
            }
            let info = table_info(conn, &c.table)?
                .ok_or_else(|| internal(std::io::Error::other(format!("table {} is gone", c.table))))?;
            infos.insert(&c.table, info);
        }
    }
    for c in entry.changes.iter().rev().filter(|c| c.after.is_some()) {
        let info = &infos[c.table.as_str()];
        let (clause, params) = key_clause(info, &c.key);
        conn.execute(
            &format!("DELETE FROM {} WHERE {clause}", quote(&c.table)),
            rusqlite::params_from_iter(params.iter()),
        )?;
    }
    for c in &entry.changes {
        let Some(before) = &c.before else { continue };
        let info = &infos[c.table.as_str()];
        if before.len() != info.columns.len() {
            return Err(internal(std::io::Error::other(SCHEMA_CHANGED)));
        }
        let mut cols: Vec<String> = info.columns.iter().map(|c| quote(c)).collect();
        let mut params: Vec<Val> = before.clone();
        if let Key::Rowid(r) = c.key {
            cols.insert(0, "rowid".to_owned());
            params.insert(0, Val::Int(r));
        }
        let marks = vec!["?"; cols.len()].join(", ");
        conn.execute(
            &format!("INSERT INTO {} ({}) VALUES ({marks})", quote(&c.table), cols.join(", ")),
            rusqlite::params_from_iter(params.iter()),
        )?;
    }
    Ok(())
}

/// SQLite's pre-update hook, called directly.
///
/// rusqlite wraps it only behind its `preupdate_hook` feature, which in libsqlite3-sys 0.39 turns on bindgen
/// and so needs libclang on every machine that builds this workspace. The bundled SQLite compiles the hook in
/// when built with `-DSQLITE_ENABLE_PREUPDATE_HOOK` (`LIBSQLITE3_FLAGS` in `.cargo/config.toml`), and four
/// declarations are all it takes to call it.
mod preupdate {
    use std::ffi::{c_char, c_int, c_void, CStr};
    use std::sync::{Arc, Mutex};

    use rusqlite::ffi;
    use rusqlite::Connection;

    use super::{lock_events, RawEvent, Val};

    type Callback =
        unsafe extern "C" fn(*mut c_void, *mut ffi::sqlite3, c_int, *const c_char, *const c_char, i64, i64);

    extern "C" {
        fn sqlite3_preupdate_hook(
            db: *mut ffi::sqlite3,
            callback: Option<Callback>,
            ctx: *mut c_void,
        ) -> *mut c_void;
        fn sqlite3_preupdate_old(
            db: *mut ffi::sqlite3,
            column: c_int,
            out: *mut *mut ffi::sqlite3_value,
        ) -> c_int;
        fn sqlite3_preupdate_new(
            db: *mut ffi::sqlite3,
            column: c_int,
            out: *mut *mut ffi::sqlite3_value,
        ) -> c_int;
        fn sqlite3_preupdate_count(db: *mut ffi::sqlite3) -> c_int;
    }

    type Sink = Mutex<Vec<RawEvent>>;

    /// The hook installed on one connection. Dropping it uninstalls the hook and frees its sink.
    pub(super) struct Hook {
        db: *mut ffi::sqlite3,
        sink: *const Sink,
    }

    // SAFETY: the connection and the hook are used by one thread at a time (the storage's mutex).
    unsafe impl Send for Hook {}

    impl Hook {
        pub(super) fn install(conn: &Connection, sink: Arc<Sink>) -> Hook {
            // SAFETY: `handle` is the open connection's pointer; the hook only reads through it while the
            // connection lives, and `Drop` uninstalls it before the `Arc` is released.
            let db = unsafe { conn.handle() };
            let sink = Arc::into_raw(sink);
            // SAFETY: `db` is open; `sink` stays valid until `Drop` uninstalls the hook.
            unsafe { sqlite3_preupdate_hook(db, Some(callback), sink as *mut c_void) };
            Hook { db, sink }
        }
    }

    impl Drop for Hook {
        fn drop(&mut self) {
            // SAFETY: the connection is still open (the storage drops its `Pitr` before its connection);
            // after uninstalling, SQLite no longer holds `sink`, so its reference can be released.
            unsafe {
                sqlite3_preupdate_hook(self.db, None, std::ptr::null_mut());
                drop(Arc::from_raw(self.sink));
            }
        }
    }

    /// # Safety
    /// `v` is a valid protected value for the duration of the call.
    unsafe fn value(v: *mut ffi::sqlite3_value) -> Val {
        // SAFETY: per the contract, `v` is valid; text and blob pointers are valid for the byte counts SQLite
        // reports until the next call on `v`.
        unsafe {
            match ffi::sqlite3_value_type(v) {
                ffi::SQLITE_INTEGER => Val::Int(ffi::sqlite3_value_int64(v)),
                ffi::SQLITE_FLOAT => Val::Real(ffi::sqlite3_value_double(v)),
                ffi::SQLITE_TEXT => {
                    let p = ffi::sqlite3_value_text(v);
                    let n = ffi::sqlite3_value_bytes(v) as usize;
                    let bytes = if p.is_null() { &[][..] } else { std::slice::from_raw_parts(p, n) };
                    Val::Text(String::from_utf8_lossy(bytes).into_owned())
                }
                ffi::SQLITE_BLOB => {
                    let p = ffi::sqlite3_value_blob(v) as *const u8;
                    let n = ffi::sqlite3_value_bytes(v) as usize;
                    Val::Blob(if p.is_null() {
                        Vec::new()
                    } else {
                        std::slice::from_raw_parts(p, n).to_vec()
                    })
                }
                _ => Val::Null,
            }
        }
    }

    /// # Safety
    /// Called by SQLite inside a pre-update callback on `db`.
    unsafe fn row(
        db: *mut ffi::sqlite3,
        get: unsafe extern "C" fn(*mut ffi::sqlite3, c_int, *mut *mut ffi::sqlite3_value) -> c_int,
    ) -> Vec<Val> {
        // SAFETY: inside the callback, column indices below `sqlite3_preupdate_count` are valid.
        unsafe {
            (0..sqlite3_preupdate_count(db))
                .map(|i| {
                    let mut v = std::ptr::null_mut();
                    if get(db, i, &mut v) == ffi::SQLITE_OK && !v.is_null() {
                        value(v)
                    } else {
                        Val::Null
                    }
                })
                .collect()
        }
    }

    unsafe extern "C" fn callback(
        ctx: *mut c_void,
        db: *mut ffi::sqlite3,
        op: c_int,
        db_name: *const c_char,
        table: *const c_char,
        old_rowid: i64,
        new_rowid: i64,
    ) {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: SQLite passes NUL-terminated names and the context given at install.
            let (db_name, table, sink) = unsafe {
                (
                    CStr::from_ptr(db_name).to_string_lossy(),
                    CStr::from_ptr(table).to_string_lossy(),
                    &*(ctx as *const Sink),
                )
            };
            if db_name != "main" || table.starts_with("_cf_PITR_") {
                return;
            }
            // SAFETY: we are inside the pre-update callback of `db`.
            let (old, new) = unsafe {
                match op {
                    ffi::SQLITE_INSERT => (None, Some((new_rowid, row(db, sqlite3_preupdate_new)))),
                    ffi::SQLITE_DELETE => (Some((old_rowid, row(db, sqlite3_preupdate_old))), None),
                    ffi::SQLITE_UPDATE => (
                        Some((old_rowid, row(db, sqlite3_preupdate_old))),
                        Some((new_rowid, row(db, sqlite3_preupdate_new))),
                    ),
                    _ => (None, None),
                }
            };
            lock_events(sink).push(RawEvent { table: table.into_owned(), old, new });
        }));
        if result.is_err() {
            // A panic cannot unwind into SQLite; a lost change record would make a later restore wrong, so
            // stop here loudly instead.
            eprintln!("dosim: panic in the PITR pre-update hook");
            std::process::abort();
        }
    }
}
