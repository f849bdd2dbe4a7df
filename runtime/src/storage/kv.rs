//! The key-value API of SQLite-backed objects, on the `_cf_KV` table (spec `durable-objects.md` §2.4, §3.1,
//! Appendix A.2–3).
//!
//! Both the asynchronous KV API (`storage.get/put/delete/list`) and the synchronous one (`storage.kv`) of a
//! SQLite-backed object run here. Every function is synchronous and takes the object's connection; values are
//! the already-encoded bytes of [`super::value`] (the typed layer calls `value::encode`/`decode`).
//!
//! # What this module does not decide
//!
//! - **Transactions.** The caller owns the connection and decides when a transaction begins and commits
//!   (§3.2, §3.3); nothing here runs `BEGIN` or `COMMIT`. [`put_multiple`] alone wraps its pairs in the
//!   savepoint `_cf_put_multiple_savepoint`, as workerd does, so that it is all-or-nothing inside whatever
//!   transaction is open (Appendix A.2–3); with no transaction open, that savepoint is itself the transaction.
//! - **Limits.** SQLite-backed objects have no 2048-byte key, 131072-byte value or 128-key checks (§3.1); the
//!   only limit is SQLite's `SQLITE_LIMIT_LENGTH` ([`super::value::SQLITE_ROW_SIZE_MAX`]), which the caller
//!   installs on the connection. A pair over it fails with `string or blob too big: SQLITE_TOOBIG`.
//! - **Access control.** These statements touch `_cf_KV` and `sqlite_master`, which application SQL may not
//!   (§3.1). An authorizer that enforces that rule must let these statements through (workerd prepares them
//!   as trusted).
//!
//! # Layout
//!
//! `_cf_KV(key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID`, created on the first write (a put or a delete,
//! as in workerd). Until then reads find nothing rather than failing, and so they do again after the caller
//! wipes the database (deleteAll, §3.4). Keys compare with SQLite's `BINARY` collation, which is the UTF-8
//! byte order of Rust's `str` (see [`super::value`]).
//!
//! # Errors
//!
//! A SQLite failure becomes `Error("<SQLite's message>: SQLITE_<CODE>")` (the primary result code's name), the
//! format the SQL API uses, e.g. `string or blob too big: SQLITE_TOOBIG`. List options are checked before any
//! storage access ([`ListOptions::validate`]).
//!
//! # The synchronous API's list iterator
//!
//! `storage.kv.list()` returns a lazy iterator, and only one may be live at a time (§3.1): starting another
//! list invalidates the previous one, whose next call fails with [`messages::KV_LIST_INVALIDATED`]. The
//! caller keeps one [`KvListSlot`] per object; [`KvListSlot::start`] makes a [`KvListIter`], and the
//! asynchronous API's list must go through [`KvListSlot::list`], because in workerd it shares that one cursor.

use std::collections::BTreeMap;
use std::ops::Bound;

use rusqlite::{Connection, OptionalExtension};

use crate::error::{messages, Error};

/// A stored pair: the key and the encoded value.
pub(crate) type Entry = (String, Vec<u8>);

const CREATE_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS _cf_KV (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID";
const GET: &str = "SELECT value FROM _cf_KV WHERE key = ?1";
const PUT: &str = "INSERT INTO _cf_KV VALUES (?1, ?2) ON CONFLICT DO UPDATE SET value = excluded.value";
const DELETE: &str = "DELETE FROM _cf_KV WHERE key = ?1";
#[cfg(test)] // Only the tests reach it: no runtime path uses it.
const COUNT: &str = "SELECT count(*) FROM _cf_KV";
const SAVEPOINT: &str = "SAVEPOINT _cf_put_multiple_savepoint";
const RELEASE: &str = "RELEASE _cf_put_multiple_savepoint";
const ROLLBACK_TO: &str = "ROLLBACK TO _cf_put_multiple_savepoint";

/// The value stored under `key`, if any (§2.4 `get(key)`).
pub(crate) fn get(conn: &Connection, key: &str) -> Result<Option<Vec<u8>>, Error> {
    if !table_exists(conn)? {
        return Ok(None);
    }
    let mut stmt = conn.prepare_cached(GET).map_err(sqlite_error)?;
    stmt.query_row([key], |row| row.get(0)).optional().map_err(sqlite_error)
}

/// The present keys among `keys` with their values (§2.4 `get(keys[])`): sorted by key whatever the order
/// asked, absent keys left out, duplicates collapsed.
pub(crate) fn get_multiple(conn: &Connection, keys: &[&str]) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let mut found = BTreeMap::new();
    if keys.is_empty() || !table_exists(conn)? {
        return Ok(found);
    }
    let mut stmt = conn.prepare_cached(GET).map_err(sqlite_error)?;
    for &key in keys {
        if let Some(value) = stmt.query_row([key], |row| row.get(0)).optional().map_err(sqlite_error)? {
            found.insert(key.to_owned(), value);
        }
    }
    Ok(found)
}

/// Stores `value` under `key`, replacing any value (§2.4 `put(key, value)`).
pub(crate) fn put(conn: &Connection, key: &str, value: &[u8]) -> Result<(), Error> {
    ensure_table(conn)?;
    put_row(conn, key, value)
}

/// Stores every pair, or none (§3.1, Appendix A.2–3 `put(entries)`).
///
/// The pairs are written in order inside the savepoint `_cf_put_multiple_savepoint`; if one fails, the savepoint
/// is rolled back, so none of them is stored, and that pair's error is returned. Writes made before the call
/// in an enclosing transaction are untouched either way, and on success the pairs belong to the enclosing
/// transaction (committed or rolled back with it); with none open, they are committed here. A later pair with
/// the same key as an earlier one wins. Like workerd, it creates the table even when `entries` is empty.
pub(crate) fn put_multiple(conn: &Connection, entries: &[(&str, &[u8])]) -> Result<(), Error> {
    ensure_table(conn)?;
    run(conn, SAVEPOINT)?;
    let written = entries.iter().try_for_each(|&(key, value)| put_row(conn, key, value));
    if let Err(e) = written {
        // The savepoint was just opened by this function, so unwinding it can fail only if the connection
        // itself failed; the caller then learns of it from its next statement. The pair's error is what the
        // application must see (workerd likewise silences a failure here).
        let _ = run(conn, ROLLBACK_TO).and_then(|()| run(conn, RELEASE));
        return Err(e);
    }
    run(conn, RELEASE)
}

/// Deletes `key`; true if it existed (§2.4 `delete(key)`). A delete is a write: it creates the table if
/// missing, as in workerd.
pub(crate) fn delete(conn: &Connection, key: &str) -> Result<bool, Error> {
    ensure_table(conn)?;
    let mut stmt = conn.prepare_cached(DELETE).map_err(sqlite_error)?;
    let changed = stmt.execute([key]).map_err(sqlite_error)?;
    Ok(changed > 0)
}

/// Deletes every key of `keys`; the number that existed (§2.4 `delete(keys[])`). Keys are deleted in order,
/// so a duplicate counts once (the oracle: `delete(["a","b","c","a"])` with `a`, `b` stored gives 2).
pub(crate) fn delete_multiple(conn: &Connection, keys: &[&str]) -> Result<usize, Error> {
    let mut existed = 0;
    for &key in keys {
        existed += usize::from(delete(conn, key)?);
    }
    Ok(existed)
}

/// The pairs `options` selects (§2.4 `list(options)`), ascending by key, or descending with `reverse`.
///
/// The options are validated first ([`ListOptions::validate`]); an empty range ([`ListOptions::key_range`])
/// returns nothing without touching storage. For the asynchronous API of an object that also has the
/// synchronous one, use [`KvListSlot::list`] instead (it invalidates a live `kv.list()` iterator, as workerd).
pub(crate) fn list(conn: &Connection, options: &ListOptions) -> Result<Vec<Entry>, Error> {
    Ok(list_query(conn, options)?.unwrap_or_default())
}

/// The number of keys stored (what deleteAll reports, §3.4).
#[cfg(test)] // Only the tests reach it: no runtime path uses it.
pub(crate) fn count(conn: &Connection) -> Result<u64, Error> {
    if !table_exists(conn)? {
        return Ok(0);
    }
    let mut stmt = conn.prepare_cached(COUNT).map_err(sqlite_error)?;
    let n: i64 = stmt.query_row([], |row| row.get(0)).map_err(sqlite_error)?;
    Ok(u64::try_from(n).expect("SQLite count(*) is never negative"))
}

/// The options of `list()` (§2.4; the synchronous API takes the same minus `allowConcurrency`/`noCache`,
/// which do not apply to SQLite-backed objects, §3.1).
///
/// In JavaScript `limit` is converted to an integer before the check (the oracle: `1.5` lists 1, `"2"` lists
/// 2, and `NaN`, `Infinity` and `null` become 0 and fail). Those inputs have no Rust form: here the limit is
/// an integer, and converting a JavaScript value is the binding's job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// First key, inclusive.
    pub start: Option<String>,
    /// Keys strictly after this one (exclusive start); not together with `start`.
    pub start_after: Option<String>,
    /// Last key, exclusive.
    pub end: Option<String>,
    /// Only keys beginning with it; empty means no restriction.
    pub prefix: Option<String>,
    /// Descending order, from the top of the range. It does not change the meaning of start and end.
    pub reverse: bool,
    /// At most this many pairs (counted among present keys); must be positive.
    pub limit: Option<i64>,
}

impl ListOptions {
    /// Checks the options as workerd does, in its order: both `start` and `start_after` is a `TypeError`
    /// ([`messages::LIST_START_AND_START_AFTER`]), then a limit ≤ 0 is a `TypeError`
    /// ([`messages::LIST_LIMIT_NOT_POSITIVE`]). Both checks come before any range computation, so even an empty
    /// range reports them.
    pub fn validate(&self) -> Result<(), Error> {
        if self.start.is_some() && self.start_after.is_some() {
            return Err(Error::type_error(messages::LIST_START_AND_START_AFTER));
        }
        if self.limit.is_some_and(|l| l <= 0) {
            return Err(Error::type_error(messages::LIST_LIMIT_NOT_POSITIVE));
        }
        Ok(())
    }

    /// The keys the options select, or `None` if no key can be selected, in which case a list returns nothing
    /// without reading storage (§2.4, workerd's `compileListOptions`):
    ///
    /// - the start is `start`, or `start_after` followed by `"\0"` (the least key after it), or `""`;
    /// - a non-empty `prefix` raises a start below it to the prefix, and a start past every key with the
    ///   prefix empties the range; an `end` at or below the prefix empties the range, an end beyond the keys
    ///   with the prefix is lowered to `prefix_end`, and with no end that becomes the end;
    /// - an end at or below the start empties the range.
    ///
    /// `limit` and `reverse` do not change the range. Call [`ListOptions::validate`] first: with both `start`
    /// and `start_after` set, this uses `start_after`.
    pub(crate) fn key_range(&self) -> Option<KeyRange> {
        let mut start = match (&self.start, &self.start_after) {
            (_, Some(after)) => format!("{after}\0"),
            (Some(start), None) => start.clone(),
            (None, None) => String::new(),
        };
        let mut end = self.end.clone();
        if let Some(prefix) = self.prefix.as_deref().filter(|p| !p.is_empty()) {
            if start.as_str() < prefix {
                start = prefix.to_owned();
            } else if !start.starts_with(prefix) {
                return None;
            }
            match &end {
                Some(e) if e.as_str() <= prefix => return None,
                Some(e) if e.starts_with(prefix) => {}
                // An end past the prefix's keys is at or beyond `prefix_end` (if there is one).
                _ => {
                    if let Some(after) = prefix_end(prefix) {
                        end = Some(after);
                    }
                }
            }
        }
        if end.as_ref().is_some_and(|e| *e <= start) {
            return None;
        }
        Some(KeyRange { start, end })
    }
}

/// A non-empty range of keys: `start` inclusive, `end` exclusive (none: up to the last key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyRange {
    /// The least key in the range.
    pub start: String,
    /// The least key above the range, if any. Always greater than `start`.
    pub end: Option<String>,
}

impl KeyRange {
    /// Whether `key` is in the range.
    #[cfg(test)] // Only the tests reach it.
    pub(crate) fn contains(&self, key: &str) -> bool {
        key >= self.start.as_str() && self.end.as_deref().is_none_or(|e| key < e)
    }

    /// The range as bounds, e.g. for `BTreeMap::<String, _>::range::<str, _>(r.bounds())`.
    pub(crate) fn bounds(&self) -> (Bound<&str>, Bound<&str>) {
        (Bound::Included(&self.start), self.end.as_deref().map_or(Bound::Unbounded, Bound::Excluded))
    }
}

/// The least key greater than every key that begins with `prefix`, or `None` if there is none (every
/// character of `prefix` is `char::MAX`).
///
/// §2.4 defines it on bytes: drop trailing 0xFF bytes, then increment the last byte. That can give bytes that
/// are not UTF-8 (`"\u{FFFF}"` = `EF BF BF` gives `EF BF C0`). This function gives instead the least *string*
/// at or above those bytes, which selects exactly the same keys, since every key is UTF-8: the prefix with its
/// last character replaced by the next character (skipping surrogates), after dropping trailing `char::MAX`
/// characters (`"\u{FFFF}"` gives `"\u{10000}"`). The `kv` tests check the two against each other.
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let (i, c) = prefix.char_indices().rev().find(|&(_, c)| c != char::MAX)?;
    let next = match c {
        '\u{D7FF}' => '\u{E000}',
        c => char::from_u32(u32::from(c) + 1).expect("the successor of a char below char::MAX"),
    };
    let mut end = String::with_capacity(i + next.len_utf8());
    end.push_str(&prefix[..i]);
    end.push(next);
    Some(end)
}

/// The one live `storage.kv.list()` iterator of an object (§3.1). Keep one per object, beside its connection.
///
/// Starting a list that reads storage (a non-empty range on an existing table) invalidates the iterator
/// started before it, whether the new one is a `kv.list()` ([`KvListSlot::start`]) or the asynchronous API's
/// `list()` ([`KvListSlot::list`]); a list that reads nothing invalidates nothing, as in workerd.
#[derive(Debug, Default)]
#[cfg(test)] // Only the tests reach it: no runtime path uses it.
pub(crate) struct KvListSlot {
    /// Incremented by every list that reads storage; an iterator is live while it holds the current value.
    generation: u64,
}

#[cfg(test)] // Only the tests reach it: no runtime path uses it.
impl KvListSlot {
    /// A slot with no live iterator.
    pub(crate) fn new() -> KvListSlot {
        KvListSlot::default()
    }

    /// Starts a `kv.list()` (§3.1). The options are validated now; the first pair is read now (as workerd
    /// steps its statement at the call), the following ones at each [`KvListIter::next`].
    pub(crate) fn start(&mut self, conn: &Connection, options: &ListOptions) -> Result<KvListIter, Error> {
        options.validate()?;
        let done = KvListIter { state: IterState::Done };
        let Some(range) = options.key_range() else { return Ok(done) };
        if !table_exists(conn)? {
            return Ok(done);
        }
        let limit = options.limit.map(|l| u64::try_from(l).expect("validated: positive"));
        self.generation += 1;
        let mut live =
            Live { generation: self.generation, range, reverse: options.reverse, limit, last: None };
        let first = live.step(conn)?;
        let state = match first {
            Some(pair) => IterState::First { live, pair },
            None => IterState::Done,
        };
        Ok(KvListIter { state })
    }

    /// The asynchronous API's `list()` on an object that also has `storage.kv`: [`list`], plus invalidating
    /// the live `kv.list()` iterator if it reads storage (workerd runs both on one cursor).
    pub(crate) fn list(&mut self, conn: &Connection, options: &ListOptions) -> Result<Vec<Entry>, Error> {
        let pairs = list_query(conn, options)?;
        if pairs.is_some() {
            self.generation += 1;
        }
        Ok(pairs.unwrap_or_default())
    }
}

/// A `storage.kv.list()` iterator (§3.1), made by [`KvListSlot::start`].
///
/// Each [`KvListIter::next`] reads the next pair after the last one returned from the table as it is then
/// (like a SQLite cursor stepping through a table being written: keys written ahead of the position appear,
/// keys deleted ahead do not), until the range or the limit is exhausted. Once another list has invalidated
/// it, every call fails with [`messages::KV_LIST_INVALIDATED`]; an iterator that had already finished keeps
/// returning `None`.
#[derive(Debug)]
#[cfg(test)] // Only the tests reach it: no runtime path uses it.
pub(crate) struct KvListIter {
    state: IterState,
}

#[derive(Debug)]
#[cfg(test)] // Only the tests reach it: no runtime path uses it.
enum IterState {
    /// Started, with its first pair read at the start and not yet returned.
    First { live: Live, pair: Entry },
    /// Returned at least one pair and may have more.
    Live(Live),
    /// Finished: the range or limit is exhausted (or was empty).
    Done,
}

#[derive(Debug)]
#[cfg(test)] // Only the tests reach it: no runtime path uses it.
struct Live {
    generation: u64,
    range: KeyRange,
    reverse: bool,
    /// Pairs still allowed by the limit, if any.
    limit: Option<u64>,
    /// The key returned last.
    last: Option<String>,
}

#[cfg(test)] // Only the tests reach it: no runtime path uses it.
impl Live {
    /// Reads the pair after `last` in the iteration order, and counts it against the limit.
    fn step(&mut self, conn: &Connection) -> Result<Option<Entry>, Error> {
        if self.limit == Some(0) || !table_exists(conn)? {
            return Ok(None);
        }
        let (low, high) = match (&self.last, self.reverse) {
            (None, _) => self.range.bounds(),
            (Some(last), false) => (Bound::Excluded(last.as_str()), self.range.bounds().1),
            (Some(last), true) => (self.range.bounds().0, Bound::Excluded(last.as_str())),
        };
        let pair = select(conn, low, high, self.reverse, Some(1))?.pop();
        if let Some((key, _)) = &pair {
            self.last = Some(key.clone());
            self.limit = self.limit.map(|l| l - 1);
        }
        Ok(pair)
    }
}

#[cfg(test)] // Only the tests reach it: no runtime path uses it.
impl KvListIter {
    /// The next pair, `None` once finished, or [`messages::KV_LIST_INVALIDATED`] if a later list invalidated
    /// this iterator (`slot` must be the one that started it).
    pub(crate) fn next(&mut self, slot: &KvListSlot, conn: &Connection) -> Result<Option<Entry>, Error> {
        let generation = match &self.state {
            IterState::Done => return Ok(None),
            IterState::First { live, .. } | IterState::Live(live) => live.generation,
        };
        if generation != slot.generation {
            return Err(Error::new(messages::KV_LIST_INVALIDATED));
        }
        match std::mem::replace(&mut self.state, IterState::Done) {
            IterState::First { live, pair } => {
                self.state = IterState::Live(live);
                Ok(Some(pair))
            }
            IterState::Live(mut live) => {
                let pair = live.step(conn)?;
                if pair.is_some() {
                    self.state = IterState::Live(live);
                }
                Ok(pair)
            }
            IterState::Done => unreachable!("handled above"),
        }
    }
}

/// Runs a list: `None` if it did not read storage (empty range or no table).
fn list_query(conn: &Connection, options: &ListOptions) -> Result<Option<Vec<Entry>>, Error> {
    options.validate()?;
    let Some(range) = options.key_range() else { return Ok(None) };
    if !table_exists(conn)? {
        return Ok(None);
    }
    let (low, high) = range.bounds();
    let limit = options.limit.map(|l| u64::try_from(l).expect("validated: positive"));
    select(conn, low, high, options.reverse, limit).map(Some)
}

/// The pairs between `low` and `high`, in key order (descending if `reverse`), at most `limit`.
fn select(
    conn: &Connection,
    low: Bound<&str>,
    high: Bound<&str>,
    reverse: bool,
    limit: Option<u64>,
) -> Result<Vec<Entry>, Error> {
    let (low_op, low_key) = match low {
        Bound::Included(k) => (">=", k),
        Bound::Excluded(k) => (">", k),
        Bound::Unbounded => (">=", ""),
    };
    let (high_clause, high_key) = match high {
        Bound::Included(k) => (" AND key <= ?2", Some(k)),
        Bound::Excluded(k) => (" AND key < ?2", Some(k)),
        Bound::Unbounded => ("", None),
    };
    let order = if reverse { "DESC" } else { "ASC" };
    // One of a few fixed texts, so the statement cache holds each once. LIMIT -1 is no limit.
    let sql = format!(
        "SELECT key, value FROM _cf_KV WHERE key {low_op} ?1{high_clause} ORDER BY key {order} LIMIT ?3"
    );
    let limit = limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
    let mut stmt = conn.prepare_cached(&sql).map_err(sqlite_error)?;
    stmt.raw_bind_parameter(1, low_key).map_err(sqlite_error)?;
    if let Some(k) = high_key {
        stmt.raw_bind_parameter(2, k).map_err(sqlite_error)?;
    }
    stmt.raw_bind_parameter(3, limit).map_err(sqlite_error)?;
    let mut rows = stmt.raw_query();
    let mut pairs = Vec::new();
    while let Some(row) = rows.next().map_err(sqlite_error)? {
        pairs.push((row.get(0).map_err(sqlite_error)?, row.get(1).map_err(sqlite_error)?));
    }
    Ok(pairs)
}

/// Whether `_cf_KV` exists, from the connection's schema (`sqlite3_table_column_metadata`) rather than a query
/// of `sqlite_master`: no statement to step, no read transaction to open. The object's connection is the only
/// one that changes its database, so its schema is current (it includes this connection's uncommitted DDL
/// and forgets what a rollback undid, as a query would). Application SQL cannot create another object named
/// `_cf_KV` in any case (reserved names, §3.1), so the lookup, which ignores case and object type, finds only
/// the runtime's table.
fn table_exists(conn: &Connection) -> Result<bool, Error> {
    conn.table_exists(Some(c"main"), c"_cf_KV").map_err(sqlite_error)
}

fn ensure_table(conn: &Connection) -> Result<(), Error> {
    if !table_exists(conn)? {
        run(conn, CREATE_TABLE)?;
    }
    Ok(())
}

fn put_row(conn: &Connection, key: &str, value: &[u8]) -> Result<(), Error> {
    let mut stmt = conn.prepare_cached(PUT).map_err(sqlite_error)?;
    stmt.execute(rusqlite::params![key, value]).map_err(sqlite_error)?;
    Ok(())
}

/// Runs a statement with no parameters and no rows.
fn run(conn: &Connection, sql: &str) -> Result<(), Error> {
    let mut stmt = conn.prepare_cached(sql).map_err(sqlite_error)?;
    stmt.execute([]).map_err(sqlite_error)?;
    Ok(())
}

/// SQLite's error in the spec's format, shared with the SQL API.
pub(crate) fn sqlite_error(e: rusqlite::Error) -> Error {
    super::sql::error_from_rusqlite(&e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_errors_use_the_sql_apis_format() {
        let e = sqlite_error(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(18), None));
        assert_eq!(e.message(), "string or blob too big: SQLITE_TOOBIG");
    }

    #[test]
    fn prefix_end_steps_the_last_character() {
        assert_eq!(prefix_end("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_end("a\u{7F}").as_deref(), Some("a\u{80}"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_end("\u{FFFF}").as_deref(), Some("\u{10000}"));
        assert_eq!(prefix_end("a\u{10FFFF}\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        assert_eq!(prefix_end(""), None);
    }
}

#[cfg(test)]
mod api_tests;
