//! The KV API of SQLite-backed objects (`storage::kv`) and the value codec and limits (`storage::value`),
//! against the spec (`durable-objects.md` §2.1, §2.4, §3.1, Appendix A.2–3) and the real runtime's results.
//!
//! Tests are named after the statement they check (`list_2_4_prefix_clamps_range`,
//! `appendix_a_03_put_multiple_all_or_nothing`, …). Databases are real files under the crate's test directory (`crate::test_dir`),
//! opened through `DatabaseLocation::file`. The conformance test replays the oracle's KV cases
//! (`tests/data/oracle_kv.json`, copied from the oracle so that tests never read outside the repository).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::messages;
use crate::error::{Error, ErrorKind};
use crate::storage::kv::{self, KeyRange, KvListIter, KvListSlot, ListOptions};
use crate::storage::value::{self, KEY_SIZE_MAX, MULTI_KEYS_MAX, SQLITE_ROW_SIZE_MAX, VALUE_SIZE_MAX};
use crate::storage::DatabaseLocation;
use rusqlite::limits::Limit;
use rusqlite::Connection;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------------------
// Helpers

/// A fresh database file named after the test, opened as the runtime opens one, with `SQLITE_LIMIT_LENGTH`
/// at dosim's chosen limit (the connection setup installs it in the runtime).
fn fresh_db(name: &str) -> (Connection, PathBuf) {
    let dir = crate::test_dir().join("kv-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.db"));
    for suffix in ["", "-journal", "-wal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    (open(&path), path)
}

fn open(path: &PathBuf) -> Connection {
    let conn = DatabaseLocation::file(path).open().unwrap();
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, SQLITE_ROW_SIZE_MAX as i32).unwrap();
    conn
}

fn db(name: &str) -> Connection {
    fresh_db(name).0
}

fn put_str(conn: &Connection, key: &str, value: &str) {
    kv::put(conn, key, &value::encode(value).unwrap()).unwrap();
}

fn get_str(conn: &Connection, key: &str) -> Option<String> {
    kv::get(conn, key).unwrap().map(|b| value::decode(&b).unwrap())
}

/// Stores each key with its own name as the value.
fn put_keys(conn: &Connection, keys: &[&str]) {
    let encoded: Vec<Vec<u8>> = keys.iter().map(|k| value::encode(k).unwrap()).collect();
    let entries: Vec<(&str, &[u8])> = keys.iter().copied().zip(encoded.iter().map(Vec::as_slice)).collect();
    kv::put_multiple(conn, &entries).unwrap();
}

fn keys_of(pairs: &[(String, Vec<u8>)]) -> Vec<&str> {
    pairs.iter().map(|(k, _)| k.as_str()).collect()
}

fn list_keys(conn: &Connection, options: &ListOptions) -> Vec<String> {
    kv::list(conn, options).unwrap().into_iter().map(|(k, _)| k).collect()
}

fn opts() -> ListOptions {
    ListOptions::default()
}

fn s(x: &str) -> Option<String> {
    Some(x.to_owned())
}

fn table_exists(conn: &Connection) -> bool {
    conn.query_row("SELECT count(*) FROM sqlite_master WHERE name = '_cf_KV'", [], |r| r.get::<_, i64>(0))
        .unwrap()
        == 1
}

fn assert_error(result: Result<impl std::fmt::Debug, Error>, kind: ErrorKind, message: &str) {
    let e = result.expect_err("expected an error");
    assert_eq!((e.kind(), e.message()), (kind, message));
}

/// Drains a `kv.list()` iterator.
fn drain(iter: &mut KvListIter, slot: &KvListSlot, conn: &Connection) -> Result<Vec<String>, Error> {
    let mut keys = Vec::new();
    while let Some((k, _)) = iter.next(slot, conn)? {
        keys.push(k);
    }
    Ok(keys)
}

const KEYS: [&str; 7] = ["a", "ab", "abc", "b", "ba", "c", "d"];

// ---------------------------------------------------------------------------------------------------------
// §2.1 Keys, values, limits (the value codec and the KV backend's checks)

#[test]
fn keys_2_1_ordered_by_utf8_bytes() {
    // Byte order, not UTF-16 order: U+FFFF (EF BF BF) sorts before U+10000 (F0 90 80 80), whereas in
    // JavaScript's code units U+10000 (D800 DC00) sorts first.
    let mut keys = vec!["\u{10000}", "\u{FFFF}", "é", "z", "a\0", "a", "", "\u{E000}", "\u{D7FF}", "Z"];
    keys.sort();
    assert_eq!(keys, ["", "Z", "a", "a\0", "z", "é", "\u{D7FF}", "\u{E000}", "\u{FFFF}", "\u{10000}"]);
    assert!(keys.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes()));
    // SQLite's order on `_cf_KV` is the same.
    let conn = db("keys_2_1_ordered_by_utf8_bytes");
    let mut shuffled = keys.clone();
    shuffled.reverse();
    put_keys(&conn, &shuffled);
    assert_eq!(list_keys(&conn, &opts()), keys);
    let set: std::collections::BTreeSet<&str> = shuffled.into_iter().collect();
    assert_eq!(set.into_iter().collect::<Vec<_>>(), keys, "BTreeMap/BTreeSet order is the spec's order");
}

#[test]
fn limits_2_1_key_size_max_2048_bytes() {
    assert_eq!(KEY_SIZE_MAX, 2048);
    value::check_key("").unwrap();
    value::check_key(&"k".repeat(2048)).unwrap();
    assert_error(
        value::check_key(&"k".repeat(2049)),
        ErrorKind::RangeError,
        "Keys cannot be larger than 2048 bytes. A key of size 2049 was provided.",
    );
    // Bytes, not characters: 1025 × "é" is 2050 bytes.
    assert_error(value::check_key(&"é".repeat(1025)), ErrorKind::RangeError, &messages::key_too_large(2050));
}

#[test]
fn limits_2_1_value_size_max_131072_encoded_bytes() {
    assert_eq!(VALUE_SIZE_MAX, 131_072);
    value::check_value(&vec![0; VALUE_SIZE_MAX]).unwrap();
    assert_error(
        value::check_value(&vec![0; VALUE_SIZE_MAX + 1]),
        ErrorKind::RangeError,
        "Values cannot be larger than 131072 bytes. A value of size 131073 was provided.",
    );
    // The size is the encoded size: a 131067-byte string encodes with a 5-byte CBOR header.
    let bytes = value::encode(&"v".repeat(131_067)).unwrap();
    assert_eq!(bytes.len(), 131_072);
    value::check_value(&bytes).unwrap();
    let bytes = value::encode(&"v".repeat(131_068)).unwrap();
    assert_error(value::check_value(&bytes), ErrorKind::RangeError, &messages::value_too_large(131_073));
}

#[test]
fn limits_2_1_multi_key_count_max_128() {
    assert_eq!(MULTI_KEYS_MAX, 128);
    value::check_key_count(0).unwrap();
    value::check_key_count(128).unwrap();
    assert_error(
        value::check_key_count(129),
        ErrorKind::RangeError,
        "Maximum number of key value pairs is 128. 129 pairs were provided.",
    );
}

#[test]
fn values_2_1_encoding_is_cbor_rfc_8949() {
    // The persistent format is pinned: these are RFC 8949's encodings.
    assert_eq!(value::encode(&1u8).unwrap(), [0x01]);
    assert_eq!(value::encode(&-1i64).unwrap(), [0x20]);
    assert_eq!(value::encode("a").unwrap(), [0x61, b'a']);
    assert_eq!(value::encode(&json!({"a": [1, null]})).unwrap(), [0xa1, 0x61, b'a', 0x82, 0x01, 0xf6]);
    assert_eq!(value::encode(&1.5f64).unwrap(), [0xf9, 0x3e, 0x00], "floats take the shortest exact width");
}

#[test]
fn values_2_1_read_back_as_compatible_types() {
    #[derive(serde::Serialize)]
    struct Written {
        name: String,
        count: u8,
        tags: Vec<String>,
        parent: Option<u32>,
    }
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Read {
        name: String,
        count: u64,
        tags: Vec<String>,
        parent: Option<i64>,
    }
    let bytes =
        value::encode(&Written { name: "n".into(), count: 7, tags: vec!["t".into()], parent: None }).unwrap();
    let read: Read = value::decode(&bytes).unwrap();
    assert_eq!(read, Read { name: "n".into(), count: 7, tags: vec!["t".into()], parent: None });
    // Self-describing: any value reads as a dynamic value.
    let dynamic: Value = value::decode(&bytes).unwrap();
    assert_eq!(dynamic, json!({"name": "n", "count": 7, "tags": ["t"], "parent": null}));
}

#[test]
fn values_2_1_decode_failure_is_an_error_naming_the_type() {
    let e = value::decode::<String>(&value::encode(&1).unwrap()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Error);
    assert!(e.message().starts_with("cannot decode a stored value as alloc::string::String: "), "{e}");
    for garbage in [&[][..], &[0xff], &[0x7a, 0, 0, 0, 9], &[0x9f; 10_000], &[0x81, 0x01, 0x02]] {
        let e = value::decode::<Value>(garbage).unwrap_err();
        assert!(e.message().contains("serde_json::value::Value"), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// §2.4 get / put / delete on the SQLite backend

#[test]
fn get_2_4_missing_key_is_none() {
    let conn = db("get_2_4_missing_key_is_none");
    assert_eq!(kv::get(&conn, "missing").unwrap(), None);
    put_str(&conn, "a", "1");
    assert_eq!(kv::get(&conn, "missing").unwrap(), None);
    assert_eq!(get_str(&conn, "a").as_deref(), Some("1"));
}

#[test]
fn put_2_4_replaces_the_value() {
    let conn = db("put_2_4_replaces_the_value");
    put_str(&conn, "a", "1");
    put_str(&conn, "a", "2");
    assert_eq!(get_str(&conn, "a").as_deref(), Some("2"));
    assert_eq!(kv::count(&conn).unwrap(), 1);
}

#[test]
fn put_2_4_values_are_binary_safe_and_keys_may_hold_any_character() {
    let conn = db("put_2_4_values_are_binary_safe");
    let bytes: Vec<u8> = (0..=255).collect();
    for key in ["", "\0", "a\0b", "é", "\u{FFFF}", "\u{10FFFF}", "🙂"] {
        kv::put(&conn, key, &bytes).unwrap();
    }
    for key in ["", "\0", "a\0b", "é", "\u{FFFF}", "\u{10FFFF}", "🙂"] {
        assert_eq!(kv::get(&conn, key).unwrap().as_deref(), Some(&bytes[..]), "{key:?}");
    }
    assert_eq!(kv::get(&conn, "a").unwrap(), None, "a key with a NUL is not its prefix");
    assert_eq!(kv::count(&conn).unwrap(), 7);
}

#[test]
fn delete_2_4_returns_whether_the_key_existed() {
    let conn = db("delete_2_4_returns_whether_the_key_existed");
    put_str(&conn, "a", "1");
    assert!(kv::delete(&conn, "a").unwrap());
    assert!(!kv::delete(&conn, "a").unwrap());
    assert_eq!(kv::get(&conn, "a").unwrap(), None);
}

#[test]
fn get_multiple_2_4_sorted_present_only_duplicates_collapsed() {
    let conn = db("get_multiple_2_4_sorted");
    assert!(kv::get_multiple(&conn, &["a"]).unwrap().is_empty(), "no table yet");
    put_keys(&conn, &["a", "b", "c"]);
    let got = kv::get_multiple(&conn, &["c", "zz", "a", "b", "a"]).unwrap();
    assert_eq!(got.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(value::decode::<String>(&got["b"]).unwrap(), "b");
    assert!(kv::get_multiple(&conn, &[]).unwrap().is_empty());
}

#[test]
fn delete_multiple_2_4_counts_keys_that_existed_duplicates_once() {
    let conn = db("delete_multiple_2_4_counts");
    assert_eq!(kv::delete_multiple(&conn, &["a"]).unwrap(), 0);
    put_keys(&conn, &["a", "b"]);
    assert_eq!(kv::delete_multiple(&conn, &["a", "b", "c", "a"]).unwrap(), 2);
    assert_eq!(kv::delete_multiple(&conn, &[]).unwrap(), 0);
    assert_eq!(kv::count(&conn).unwrap(), 0);
}

// ---------------------------------------------------------------------------------------------------------
// §2.4 list(options)

#[test]
fn list_2_4_ascending_by_default_and_descending_with_reverse() {
    let conn = db("list_2_4_ascending_by_default");
    assert!(kv::list(&conn, &opts()).unwrap().is_empty(), "no table yet");
    put_keys(&conn, &["d", "b", "a", "c"]);
    assert_eq!(list_keys(&conn, &opts()), ["a", "b", "c", "d"]);
    assert_eq!(list_keys(&conn, &ListOptions { reverse: true, ..opts() }), ["d", "c", "b", "a"]);
    let pairs = kv::list(&conn, &opts()).unwrap();
    assert_eq!(value::decode::<String>(&pairs[2].1).unwrap(), "c", "values come with their keys");
}

#[test]
fn list_2_4_start_inclusive_end_exclusive() {
    let conn = db("list_2_4_start_inclusive_end_exclusive");
    put_keys(&conn, &KEYS);
    assert_eq!(list_keys(&conn, &ListOptions { start: s("ab"), end: s("ba"), ..opts() }), ["ab", "abc", "b"]);
    assert_eq!(list_keys(&conn, &ListOptions { end: s("b"), ..opts() }), ["a", "ab", "abc"]);
    assert!(list_keys(&conn, &ListOptions { start: s("b"), end: s("b"), ..opts() }).is_empty());
    assert!(list_keys(&conn, &ListOptions { start: s("c"), end: s("a"), ..opts() }).is_empty());
}

#[test]
fn list_2_4_start_after_is_exclusive_as_start_plus_nul() {
    let conn = db("list_2_4_start_after_is_exclusive");
    put_keys(&conn, &["a", "a\0", "a\0\0", "ab", "b"]);
    assert_eq!(list_keys(&conn, &ListOptions { start_after: s("a"), ..opts() }), ["a\0", "a\0\0", "ab", "b"]);
    assert_eq!(ListOptions { start_after: s("a"), ..opts() }.key_range().unwrap().start, "a\0");
    assert_eq!(list_keys(&conn, &ListOptions { start_after: s("a\0"), ..opts() }), ["a\0\0", "ab", "b"]);
    assert_eq!(list_keys(&conn, &ListOptions { start_after: s("b"), ..opts() }), Vec::<String>::new());
}

#[test]
fn list_2_4_start_and_start_after_together_is_a_type_error() {
    let conn = db("list_2_4_start_and_start_after");
    put_keys(&conn, &KEYS);
    let both = ListOptions { start: s("a"), start_after: s("b"), ..opts() };
    assert_error(both.validate(), ErrorKind::TypeError, messages::LIST_START_AND_START_AFTER);
    assert_error(kv::list(&conn, &both), ErrorKind::TypeError, messages::LIST_START_AND_START_AFTER);
    // Checked before the range: even an empty range reports it, and before the limit.
    let empty = ListOptions { start: s("b"), start_after: s("a"), end: s("a"), limit: Some(0), ..opts() };
    assert_error(kv::list(&conn, &empty), ErrorKind::TypeError, messages::LIST_START_AND_START_AFTER);
}

#[test]
fn list_2_4_limit_must_be_positive() {
    let conn = db("list_2_4_limit_must_be_positive");
    put_keys(&conn, &KEYS);
    for limit in [0, -1, i64::MIN] {
        let o = ListOptions { limit: Some(limit), ..opts() };
        assert_error(kv::list(&conn, &o), ErrorKind::TypeError, "List limit must be positive.");
        // Also for an empty range: options are checked first.
        let o = ListOptions { limit: Some(limit), start: s("b"), end: s("a"), ..opts() };
        assert_error(kv::list(&conn, &o), ErrorKind::TypeError, messages::LIST_LIMIT_NOT_POSITIVE);
    }
    assert_eq!(list_keys(&conn, &ListOptions { limit: Some(1), ..opts() }), ["a"]);
    assert_eq!(list_keys(&conn, &ListOptions { limit: Some(i64::MAX), ..opts() }).len(), KEYS.len());
}

#[test]
fn list_2_4_limit_applies_to_returned_entries() {
    let conn = db("list_2_4_limit_applies_to_returned_entries");
    put_keys(&conn, &KEYS);
    kv::delete(&conn, "ab").unwrap();
    assert_eq!(list_keys(&conn, &ListOptions { limit: Some(3), ..opts() }), ["a", "abc", "b"]);
    let o = ListOptions { limit: Some(2), start: s("ab"), ..opts() };
    assert_eq!(list_keys(&conn, &o), ["abc", "b"]);
}

#[test]
fn list_2_4_reverse_keeps_the_range_and_takes_from_the_top() {
    let conn = db("list_2_4_reverse_keeps_the_range");
    put_keys(&conn, &KEYS);
    let o = ListOptions { reverse: true, start: s("ab"), end: s("c"), ..opts() };
    assert_eq!(list_keys(&conn, &o), ["ba", "b", "abc", "ab"]);
    assert_eq!(list_keys(&conn, &ListOptions { reverse: true, limit: Some(2), ..opts() }), ["d", "c"]);
    let o = ListOptions { reverse: true, prefix: s("a"), limit: Some(2), ..opts() };
    assert_eq!(list_keys(&conn, &o), ["abc", "ab"]);
}

#[test]
fn list_2_4_prefix_clamps_range() {
    let range = |o: ListOptions| o.key_range().map(|r| (r.start, r.end));
    let r = |start: &str, end: Option<&str>| Some((start.to_owned(), end.map(str::to_owned)));
    // Alone: [prefix, prefix_end).
    assert_eq!(range(ListOptions { prefix: s("ab"), ..opts() }), r("ab", Some("ac")));
    // A start below the prefix is raised to it; a start within it is kept; a start past it empties the range.
    assert_eq!(range(ListOptions { prefix: s("ab"), start: s("a"), ..opts() }), r("ab", Some("ac")));
    assert_eq!(range(ListOptions { prefix: s("ab"), start: s("abz"), ..opts() }), r("abz", Some("ac")));
    assert_eq!(range(ListOptions { prefix: s("ab"), start: s("ac"), ..opts() }), None);
    assert_eq!(range(ListOptions { prefix: s("a"), start_after: s("ab"), ..opts() }), r("ab\0", Some("b")));
    // An end at or below the prefix empties the range; within it is kept; beyond it is lowered.
    assert_eq!(range(ListOptions { prefix: s("ab"), end: s("ab"), ..opts() }), None);
    assert_eq!(range(ListOptions { prefix: s("ab"), end: s("aa"), ..opts() }), None);
    assert_eq!(range(ListOptions { prefix: s("ab"), end: s("abc"), ..opts() }), r("ab", Some("abc")));
    assert_eq!(range(ListOptions { prefix: s("ab"), end: s("z"), ..opts() }), r("ab", Some("ac")));
    // A prefix whose last byte would increment out of UTF-8: the least string at or above those bytes.
    assert_eq!(range(ListOptions { prefix: s("\u{FFFF}"), ..opts() }), r("\u{FFFF}", Some("\u{10000}")));
    assert_eq!(range(ListOptions { prefix: s("a\u{7F}"), ..opts() }), r("a\u{7F}", Some("a\u{80}")));
    // And through SQLite.
    let conn = db("list_2_4_prefix_clamps_range");
    put_keys(&conn, &KEYS);
    assert_eq!(list_keys(&conn, &ListOptions { prefix: s("a"), ..opts() }), ["a", "ab", "abc"]);
    assert_eq!(list_keys(&conn, &ListOptions { prefix: s("a"), start: s("abc"), ..opts() }), ["abc"]);
    assert_eq!(list_keys(&conn, &ListOptions { prefix: s("a"), end: s("ab"), ..opts() }), ["a"]);
    assert!(list_keys(&conn, &ListOptions { prefix: s("a"), start: s("b"), ..opts() }).is_empty());
    assert!(list_keys(&conn, &ListOptions { prefix: s("zz"), ..opts() }).is_empty());
}

#[test]
fn list_2_4_empty_prefix_is_no_restriction() {
    assert_eq!(ListOptions { prefix: s(""), ..opts() }.key_range(), opts().key_range());
    let conn = db("list_2_4_empty_prefix_is_no_restriction");
    put_keys(&conn, &KEYS);
    assert_eq!(list_keys(&conn, &ListOptions { prefix: s(""), ..opts() }), KEYS);
}

#[test]
fn list_2_4_prefix_of_only_max_chars_has_no_end() {
    assert_eq!(kv::prefix_end("\u{10FFFF}\u{10FFFF}"), None);
    let o = ListOptions { prefix: s("\u{10FFFF}"), ..opts() };
    assert_eq!(o.key_range(), Some(KeyRange { start: "\u{10FFFF}".into(), end: None }));
    // With no end from the prefix, a given end stays.
    let o = ListOptions { prefix: s("\u{10FFFF}"), end: s("\u{10FFFF}b"), ..opts() };
    assert_eq!(o.key_range().unwrap().end.as_deref(), Some("\u{10FFFF}b"));
    let conn = db("list_2_4_prefix_of_only_max_chars");
    put_keys(&conn, &["\u{10FFFE}", "\u{10FFFF}", "\u{10FFFF}a", "\u{10FFFF}\u{10FFFF}"]);
    let listed = list_keys(&conn, &ListOptions { prefix: s("\u{10FFFF}"), ..opts() });
    assert_eq!(listed, ["\u{10FFFF}", "\u{10FFFF}a", "\u{10FFFF}\u{10FFFF}"]);
}

#[test]
fn list_2_4_empty_range_reads_no_storage() {
    let (conn, path) = fresh_db("list_2_4_empty_range_reads_no_storage");
    put_keys(&conn, &KEYS);
    drop(conn);
    // A connection that may not read `_cf_KV` at all: a list that touched it would fail.
    let mut conn = open(&path);
    conn.authorizer(Some(|ctx: rusqlite::hooks::AuthContext<'_>| match ctx.action {
        rusqlite::hooks::AuthAction::Read { table_name: "_cf_KV", .. } => {
            rusqlite::hooks::Authorization::Deny
        }
        _ => rusqlite::hooks::Authorization::Allow,
    }))
    .unwrap();
    for empty in [
        ListOptions { start: s("b"), end: s("b"), ..opts() },
        ListOptions { start: s("c"), end: s("a"), ..opts() },
        ListOptions { prefix: s("a"), start: s("b"), ..opts() },
        ListOptions { prefix: s("b"), end: s("a"), ..opts() },
        ListOptions { prefix: s("b"), end: s("b"), ..opts() },
        ListOptions { start_after: s("c"), end: s("c\0"), ..opts() },
    ] {
        assert_eq!(empty.key_range(), None, "{empty:?}");
        assert_eq!(kv::list(&conn, &empty).unwrap(), Vec::new(), "{empty:?}");
        let mut slot = KvListSlot::new();
        let mut iter = slot.start(&conn, &empty).unwrap();
        assert_eq!(iter.next(&slot, &conn).unwrap(), None);
    }
    let e = kv::list(&conn, &ListOptions { start: s("a"), end: s("b"), ..opts() }).unwrap_err();
    assert!(e.message().ends_with(": SQLITE_AUTH"), "a non-empty range does read storage: {e}");
}

#[test]
fn list_2_4_key_range_bounds_select_the_same_keys_from_a_btreemap() {
    // For the KV backend's cache, which keeps keys in a BTreeMap.
    let map: BTreeMap<String, ()> = KEYS.iter().map(|k| (k.to_string(), ())).collect();
    for o in [
        ListOptions { prefix: s("a"), ..opts() },
        ListOptions { start_after: s("ab"), end: s("c"), ..opts() },
        ListOptions { start: s("abc"), ..opts() },
    ] {
        let range = o.key_range().unwrap();
        let via_bounds: Vec<&str> = map.range::<str, _>(range.bounds()).map(|(k, _)| k.as_str()).collect();
        let via_contains: Vec<&str> = KEYS.iter().copied().filter(|k| range.contains(k)).collect();
        assert_eq!(via_bounds, via_contains, "{o:?}");
    }
}

// ---------------------------------------------------------------------------------------------------------
// §3.1 Storage layout, limits, put(entries), storage.kv

#[test]
fn layout_3_1_cf_kv_table_key_text_primary_key_value_blob_without_rowid() {
    let conn = db("layout_3_1_cf_kv_table");
    put_str(&conn, "a", "1");
    let sql: String = conn
        .query_row("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = '_cf_KV'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sql, "CREATE TABLE _cf_KV (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID");
    let stored: (String, String) = conn
        .query_row("SELECT typeof(key), typeof(value) FROM _cf_KV", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!(stored, ("text".to_owned(), "blob".to_owned()));
}

#[test]
fn layout_3_1_table_created_lazily_on_first_write() {
    let conn = db("layout_3_1_table_created_lazily");
    assert_eq!(kv::get(&conn, "a").unwrap(), None);
    assert!(kv::get_multiple(&conn, &["a", "b"]).unwrap().is_empty());
    assert!(kv::list(&conn, &opts()).unwrap().is_empty());
    assert_eq!(kv::count(&conn).unwrap(), 0);
    assert_eq!(kv::delete_multiple(&conn, &[]).unwrap(), 0);
    let mut slot = KvListSlot::new();
    assert_eq!(slot.start(&conn, &opts()).unwrap().next(&slot, &conn).unwrap(), None);
    assert!(!table_exists(&conn), "reads do not create the table");
    put_str(&conn, "a", "1");
    assert!(table_exists(&conn), "the first put does");
    // A delete is a write too (as in workerd); so is an empty put(entries).
    let conn = db("layout_3_1_table_created_lazily_delete");
    assert!(!kv::delete(&conn, "x").unwrap());
    assert!(table_exists(&conn), "delete");
    let conn = db("layout_3_1_table_created_lazily_put_multiple");
    kv::put_multiple(&conn, &[]).unwrap();
    assert!(table_exists(&conn), "put_multiple");
}

#[test]
fn layout_3_1_reads_find_nothing_after_the_database_is_wiped() {
    // deleteAll (§3.4) wipes the whole database, the table with it; reads must not fail afterwards.
    let conn = db("layout_3_1_reads_after_wipe");
    put_keys(&conn, &KEYS);
    let mut slot = KvListSlot::new();
    let mut iter = slot.start(&conn, &opts()).unwrap();
    assert_eq!(kv::count(&conn).unwrap(), 7);
    conn.execute_batch("DROP TABLE _cf_KV").unwrap();
    assert_eq!(kv::get(&conn, "a").unwrap(), None);
    assert!(kv::list(&conn, &opts()).unwrap().is_empty());
    assert_eq!(kv::count(&conn).unwrap(), 0);
    assert_eq!(iter.next(&slot, &conn).unwrap().map(|p| p.0).as_deref(), Some("a"), "read at the start");
    assert_eq!(iter.next(&slot, &conn).unwrap(), None);
    put_str(&conn, "z", "1");
    assert_eq!(list_keys(&conn, &opts()), ["z"]);
}

#[test]
fn layout_3_1_pairs_persist_in_the_database_file() {
    let (conn, path) = fresh_db("layout_3_1_pairs_persist");
    put_keys(&conn, &KEYS);
    kv::delete(&conn, "b").unwrap();
    drop(conn);
    let conn = open(&path);
    assert_eq!(list_keys(&conn, &opts()), ["a", "ab", "abc", "ba", "c", "d"]);
    assert_eq!(get_str(&conn, "ba").as_deref(), Some("ba"));
}

#[test]
fn limits_3_1_no_2048_byte_key_131072_byte_value_or_128_key_checks_on_sqlite() {
    let conn = db("limits_3_1_no_kv_backend_checks");
    let long_key = "k".repeat(KEY_SIZE_MAX + 1);
    let big_value = vec![7; VALUE_SIZE_MAX * 2];
    kv::put(&conn, &long_key, &big_value).unwrap();
    assert_eq!(kv::get(&conn, &long_key).unwrap().as_deref(), Some(&big_value[..]));
    let keys: Vec<String> = (0..MULTI_KEYS_MAX * 2).map(|i| format!("{i:04}")).collect();
    let entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
    kv::put_multiple(&conn, &entries).unwrap();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    assert_eq!(kv::get_multiple(&conn, &key_refs).unwrap().len(), 256);
    assert_eq!(kv::delete_multiple(&conn, &key_refs).unwrap(), 256);
}

#[test]
fn limits_3_1_row_over_sqlite_limit_is_toobig_and_not_stored() {
    let conn = db("limits_3_1_row_over_sqlite_limit");
    let toobig = "string or blob too big: SQLITE_TOOBIG";
    assert_error(kv::put(&conn, "v", &vec![0; SQLITE_ROW_SIZE_MAX + 1]), ErrorKind::Error, toobig);
    assert_error(kv::put(&conn, &"k".repeat(SQLITE_ROW_SIZE_MAX + 1), b"v"), ErrorKind::Error, toobig);
    // Key and value each under the limit, together over it (the documented "key+value ≤ 2 MB").
    let half = SQLITE_ROW_SIZE_MAX / 2 + 1;
    assert_error(kv::put(&conn, &"k".repeat(half), &vec![0; half]), ErrorKind::Error, toobig);
    assert_eq!(kv::count(&conn).unwrap(), 0);
    // Just under: stored.
    kv::put(&conn, "v", &vec![0; SQLITE_ROW_SIZE_MAX - 16]).unwrap();
    assert_eq!(kv::count(&conn).unwrap(), 1);
}

#[test]
fn put_multiple_3_1_writes_every_pair_later_duplicates_win() {
    let conn = db("put_multiple_3_1_writes_every_pair");
    kv::put_multiple(&conn, &[("a", b"1"), ("b", b"2"), ("a", b"3")]).unwrap();
    assert_eq!(kv::get(&conn, "a").unwrap().as_deref(), Some(&b"3"[..]));
    assert_eq!(kv::get(&conn, "b").unwrap().as_deref(), Some(&b"2"[..]));
    assert!(conn.is_autocommit(), "with no transaction open, the savepoint committed and closed");
}

#[test]
fn sync_kv_3_1_get_put_delete_list() {
    let conn = db("sync_kv_3_1_get_put_delete_list");
    let mut slot = KvListSlot::new();
    put_str(&conn, "a", "1");
    assert_eq!(get_str(&conn, "a").as_deref(), Some("1"));
    assert_eq!(get_str(&conn, "missing"), None);
    let mut iter = slot.start(&conn, &opts()).unwrap();
    let first = iter.next(&slot, &conn).unwrap().unwrap();
    assert_eq!((first.0.as_str(), value::decode::<String>(&first.1).unwrap().as_str()), ("a", "1"));
    assert_eq!(iter.next(&slot, &conn).unwrap(), None);
    assert_eq!(iter.next(&slot, &conn).unwrap(), None, "a finished iterator stays finished");
    assert!(kv::delete(&conn, "a").unwrap());
}

#[test]
fn sync_kv_3_1_only_one_list_iterator_is_live() {
    let conn = db("sync_kv_3_1_only_one_list_iterator");
    put_keys(&conn, &KEYS);
    let mut slot = KvListSlot::new();
    let mut first = slot.start(&conn, &opts()).unwrap();
    assert_eq!(first.next(&slot, &conn).unwrap().unwrap().0, "a");
    let mut second = slot.start(&conn, &ListOptions { prefix: s("b"), ..opts() }).unwrap();
    for _ in 0..2 {
        assert_error(first.next(&slot, &conn), ErrorKind::Error, messages::KV_LIST_INVALIDATED);
    }
    assert_eq!(
        messages::KV_LIST_INVALIDATED,
        "kv.list() iterator was invalidated because a new call to kv.list() was started. Only one kv.list() \
         iterator can exist at a time."
    );
    assert_eq!(drain(&mut second, &slot, &conn).unwrap(), ["b", "ba"]);
    // Invalidated even before its first next().
    let mut third = slot.start(&conn, &opts()).unwrap();
    let _fourth = slot.start(&conn, &opts()).unwrap();
    assert_error(third.next(&slot, &conn), ErrorKind::Error, messages::KV_LIST_INVALIDATED);
}

#[test]
fn sync_kv_3_1_async_list_invalidates_the_live_iterator() {
    // workerd runs storage.list() on the same single cursor.
    let conn = db("sync_kv_3_1_async_list_invalidates");
    put_keys(&conn, &KEYS);
    let mut slot = KvListSlot::new();
    let mut iter = slot.start(&conn, &opts()).unwrap();
    assert_eq!(keys_of(&slot.list(&conn, &ListOptions { limit: Some(1), ..opts() }).unwrap()), ["a"]);
    assert_error(iter.next(&slot, &conn), ErrorKind::Error, messages::KV_LIST_INVALIDATED);
    // Plain reads and writes do not.
    let mut iter = slot.start(&conn, &opts()).unwrap();
    kv::get(&conn, "a").unwrap();
    kv::get_multiple(&conn, &["a"]).unwrap();
    put_str(&conn, "e", "e");
    kv::delete(&conn, "e").unwrap();
    assert_eq!(drain(&mut iter, &slot, &conn).unwrap(), KEYS);
}

#[test]
fn sync_kv_3_1_lists_that_read_nothing_invalidate_nothing() {
    let conn = db("sync_kv_3_1_lists_that_read_nothing");
    put_keys(&conn, &KEYS);
    let mut slot = KvListSlot::new();
    let mut iter = slot.start(&conn, &opts()).unwrap();
    // An empty range (workerd returns before touching the cursor), and a finished iterator, do not.
    let mut empty = slot.start(&conn, &ListOptions { start: s("b"), end: s("a"), ..opts() }).unwrap();
    assert!(slot.list(&conn, &ListOptions { prefix: s("zz"), end: s("a"), ..opts() }).unwrap().is_empty());
    assert_eq!(empty.next(&slot, &conn).unwrap(), None);
    assert_eq!(drain(&mut iter, &slot, &conn).unwrap(), KEYS);
    let _later = slot.start(&conn, &opts()).unwrap();
    assert_eq!(iter.next(&slot, &conn).unwrap(), None, "finished before the new list: stays finished");
    // Invalid options fail at the start and invalidate nothing.
    let mut live = slot.start(&conn, &opts()).unwrap();
    let bad = ListOptions { limit: Some(0), ..opts() };
    assert_error(slot.start(&conn, &bad), ErrorKind::TypeError, messages::LIST_LIMIT_NOT_POSITIVE);
    assert_eq!(live.next(&slot, &conn).unwrap().unwrap().0, "a");
}

#[test]
fn sync_kv_3_1_iterator_reads_each_next_pair_from_the_table_as_it_is() {
    let conn = db("sync_kv_3_1_iterator_reads_lazily");
    put_keys(&conn, &["b", "d", "f"]);
    let mut slot = KvListSlot::new();
    let mut iter = slot.start(&conn, &opts()).unwrap();
    // The first pair is read at the start, like workerd's first step of the statement.
    put_keys(&conn, &["a"]);
    assert_eq!(iter.next(&slot, &conn).unwrap().unwrap().0, "b");
    put_keys(&conn, &["c", "a0"]); // ahead appears, behind does not
    kv::delete(&conn, "d").unwrap(); // deleted ahead: gone
    assert_eq!(drain(&mut iter, &slot, &conn).unwrap(), ["c", "f"]);
}

#[test]
fn sync_kv_3_1_iterator_honours_range_limit_and_reverse() {
    let conn = db("sync_kv_3_1_iterator_honours_options");
    put_keys(&conn, &KEYS);
    let mut slot = KvListSlot::new();
    let o = ListOptions { reverse: true, start: s("ab"), end: s("c"), limit: Some(3), ..opts() };
    let mut iter = slot.start(&conn, &o).unwrap();
    assert_eq!(drain(&mut iter, &slot, &conn).unwrap(), ["ba", "b", "abc"]);
    let o = ListOptions { prefix: s("a"), start_after: s("a"), ..opts() };
    let mut iter = slot.start(&conn, &o).unwrap();
    assert_eq!(drain(&mut iter, &slot, &conn).unwrap(), ["ab", "abc"]);
    let both = ListOptions { start: s("a"), start_after: s("a"), ..opts() };
    assert_error(slot.start(&conn, &both), ErrorKind::TypeError, messages::LIST_START_AND_START_AFTER);
}

// ---------------------------------------------------------------------------------------------------------
// Appendix A.2–3: putMultiple and transactions

#[test]
fn appendix_a_02_put_multiple_commits_with_the_enclosing_transaction() {
    let (conn, path) = fresh_db("appendix_a_02_put_multiple");
    // Outside any transaction: committed on return.
    kv::put_multiple(&conn, &[("out1", b"1"), ("out2", b"2")]).unwrap();
    assert!(conn.is_autocommit());
    // Inside an implicit transaction that already wrote (the orchestrator's BEGIN): part of it.
    conn.execute_batch("BEGIN").unwrap();
    kv::put(&conn, "imp0", b"0").unwrap();
    kv::put_multiple(&conn, &[("imp1", b"1"), ("imp2", b"2")]).unwrap();
    assert!(!conn.is_autocommit(), "the enclosing transaction is still open");
    conn.execute_batch("ROLLBACK").unwrap();
    assert_eq!(kv::count(&conn).unwrap(), 2, "rolled back with it");
    conn.execute_batch("BEGIN").unwrap();
    kv::put(&conn, "imp0", b"0").unwrap();
    kv::put_multiple(&conn, &[("imp1", b"1"), ("imp2", b"2")]).unwrap();
    conn.execute_batch("COMMIT").unwrap();
    // Inside an explicit transaction (a savepoint, §3.3): rolled back with it, committed with it.
    conn.execute_batch("BEGIN; SAVEPOINT _cf_savepoint_0").unwrap();
    kv::put_multiple(&conn, &[("exp1", b"1")]).unwrap();
    conn.execute_batch("ROLLBACK TO _cf_savepoint_0; RELEASE _cf_savepoint_0").unwrap();
    assert_eq!(kv::get(&conn, "exp1").unwrap(), None);
    conn.execute_batch("SAVEPOINT _cf_savepoint_0").unwrap();
    kv::put_multiple(&conn, &[("exp2", b"2")]).unwrap();
    conn.execute_batch("RELEASE _cf_savepoint_0; COMMIT").unwrap();
    drop(conn);
    let conn = open(&path);
    assert_eq!(list_keys(&conn, &opts()), ["exp2", "imp0", "imp1", "imp2", "out1", "out2"]);
}

#[test]
fn appendix_a_03_put_multiple_all_or_nothing() {
    let conn = db("appendix_a_03_put_multiple_all_or_nothing");
    let oversized = "k".repeat(SQLITE_ROW_SIZE_MAX + 1);
    let entries: [(&str, &[u8]); 3] = [("a", b"1"), (&oversized, b"2"), ("c", b"3")];
    // Outside a transaction.
    assert_error(
        kv::put_multiple(&conn, &entries),
        ErrorKind::Error,
        "string or blob too big: SQLITE_TOOBIG",
    );
    assert_eq!(kv::count(&conn).unwrap(), 0, "no pair is stored");
    assert!(conn.is_autocommit(), "the savepoint is gone");
    // Inside a transaction: the pairs are undone, the transaction's earlier writes are not.
    conn.execute_batch("BEGIN").unwrap();
    kv::put(&conn, "before", b"0").unwrap();
    assert_error(
        kv::put_multiple(&conn, &entries),
        ErrorKind::Error,
        "string or blob too big: SQLITE_TOOBIG",
    );
    assert!(!conn.is_autocommit(), "the enclosing transaction is still open");
    kv::put(&conn, "after", b"0").unwrap();
    conn.execute_batch("COMMIT").unwrap();
    assert_eq!(list_keys(&conn, &opts()), ["after", "before"]);
    // An oversized key+value pair fails the same way.
    let value = vec![0; SQLITE_ROW_SIZE_MAX];
    assert_error(
        kv::put_multiple(&conn, &[("x", b"1"), ("y", &value)]),
        ErrorKind::Error,
        "string or blob too big: SQLITE_TOOBIG",
    );
    assert_eq!(kv::get(&conn, "x").unwrap(), None);
}

// ---------------------------------------------------------------------------------------------------------
// Conformance: the oracle's KV cases on the SQLite backend, replayed through `kv` and the value codec

/// What became of one oracle op.
enum Step {
    /// Ran as is.
    Ran(Result<Value, Error>),
    /// Ran after mapping a JavaScript-only input to its nearest Rust form (the reason says how).
    Mapped(&'static str, Result<Value, Error>),
    /// An op this layer does not own, played by a test stand-in (the reason says what it does).
    StoodIn(&'static str, Result<Value, Error>),
    /// Not applicable in Rust (the reason says why).
    Skipped(&'static str),
}

struct Replay {
    conn: Connection,
    slot: KvListSlot,
}

fn undefined() -> Value {
    json!({"$undefined": true})
}

fn is_undefined(v: &Value) -> bool {
    v.get("$undefined") == Some(&Value::Bool(true))
}

/// A JavaScript value of the oracle's encoding as a Rust one: `None` for undefined.
fn js_value(v: &Value) -> Option<Value> {
    if is_undefined(v) {
        return None;
    }
    if let (Some(Value::String(s)), Some(n)) = (v.get("$str"), v.get("n").and_then(Value::as_u64)) {
        return Some(Value::String(s.repeat(n as usize)));
    }
    assert!(
        !v.as_object().is_some_and(|o| o.keys().any(|k| k.starts_with('$'))),
        "an encoding this replay does not know: {v}"
    );
    Some(v.clone())
}

fn js_key(v: &Value) -> String {
    match js_value(v) {
        Some(Value::String(s)) => s,
        other => panic!("not a string key: {other:?}"),
    }
}

fn stored(bytes: &[u8]) -> Value {
    value::decode(bytes).unwrap()
}

fn as_map(pairs: impl IntoIterator<Item = (String, Vec<u8>)>) -> Value {
    json!({"$map": pairs.into_iter().map(|(k, v)| json!([k, stored(&v)])).collect::<Vec<_>>()})
}

/// JavaScript's ToInt32, as the binding converts `limit` (NaN, ±Infinity, null → 0; 1.5 → 1; "2" → 2).
fn js_to_int32(v: &Value) -> i64 {
    let n = match v {
        Value::Null => 0.0,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::Number(n) => n.as_f64().unwrap(),
        Value::String(s) if s.trim().is_empty() => 0.0,
        Value::String(s) => s.trim().parse().unwrap_or(f64::NAN),
        Value::Object(o) => match o.get("$num").and_then(Value::as_str) {
            Some("Infinity") => f64::INFINITY,
            Some("-Infinity") => f64::NEG_INFINITY,
            _ => f64::NAN,
        },
        Value::Array(_) => f64::NAN,
    };
    if !n.is_finite() {
        return 0;
    }
    let wrapped = n.trunc().rem_euclid(4_294_967_296.0) as i64;
    if wrapped >= 2_147_483_648 {
        wrapped - 4_294_967_296
    } else {
        wrapped
    }
}

const LIMIT_MAPPED: &str =
    "JS converts `limit` with ToInt32 (1.5 → 1, \"2\" → 2, NaN/Infinity/null → 0); a Rust \
                            limit is already an integer, so the replay converts";

/// The oracle's list options; `Err` if a JavaScript-only input had to be mapped.
fn list_options(v: Option<&Value>) -> (ListOptions, Option<&'static str>) {
    let mut o = ListOptions::default();
    let mut mapped = None;
    let Some(Value::Object(map)) = v else { return (o, mapped) };
    for (name, value) in map {
        match name.as_str() {
            "start" => o.start = Some(js_key(value)),
            "startAfter" => o.start_after = Some(js_key(value)),
            "end" => o.end = Some(js_key(value)),
            "prefix" => o.prefix = Some(js_key(value)),
            "reverse" => o.reverse = value.as_bool().unwrap(),
            "limit" => {
                o.limit = Some(match value.as_i64() {
                    Some(l) => l,
                    None => {
                        mapped = Some(LIMIT_MAPPED);
                        js_to_int32(value)
                    }
                })
            }
            other => panic!("unknown list option {other}"),
        }
    }
    (o, mapped)
}

fn run_op(r: &mut Replay, op: &Value) -> Step {
    let conn = &r.conn;
    let key = op.get("key");
    match op["op"].as_str().unwrap() {
        "get" => match key.unwrap() {
            Value::Array(keys) => {
                let keys: Vec<String> = keys.iter().map(js_key).collect();
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                Step::Ran(kv::get_multiple(conn, &refs).map(as_map))
            }
            k => Step::Ran(kv::get(conn, &js_key(k)).map(|v| v.map_or_else(undefined, |b| stored(&b)))),
        },
        "put" if key.is_some() => {
            let Some(v) = js_value(&op["value"]) else {
                return Step::Skipped(
                    "put(key, undefined) has no Rust form: the typed API takes a value (the binding throws \
                     `put() called with undefined value.`)",
                );
            };
            let bytes = value::encode(&v).unwrap();
            Step::Ran(kv::put(conn, &js_key(key.unwrap()), &bytes).map(|()| undefined()))
        }
        "put" => match &op["entries"] {
            Value::Object(entries) if entries.contains_key("$map") => Step::Mapped(
                "a JS Map has no own enumerable properties, so put(map) is put({}): an empty put_multiple",
                kv::put_multiple(conn, &[]).map(|()| undefined()),
            ),
            Value::Object(entries) => {
                let defined: Vec<(&String, Vec<u8>)> = entries
                    .iter()
                    .filter_map(|(k, v)| js_value(v).map(|v| (k, value::encode(&v).unwrap())))
                    .collect();
                let pairs: Vec<(&str, &[u8])> = defined.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
                let result = kv::put_multiple(conn, &pairs).map(|()| undefined());
                if defined.len() < entries.len() {
                    Step::Mapped("§2.1: put(entries) skips undefined values; the replay drops those pairs", result)
                } else {
                    Step::Ran(result)
                }
            }
            _ => Step::Skipped(
                "put() of a non-object (array, string, null) is coerced by JS to put(String(x), undefined); Rust's \
                 put_multiple takes pairs, so the call cannot be made",
            ),
        },
        "delete" => match key.unwrap() {
            Value::Array(keys) => {
                let keys: Vec<String> = keys.iter().map(js_key).collect();
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                Step::Ran(kv::delete_multiple(conn, &refs).map(|n| json!(n)))
            }
            k => Step::Ran(kv::delete(conn, &js_key(k)).map(|b| json!(b))),
        },
        "list" => {
            let (options, mapped) = list_options(op.get("options"));
            let result = r.slot.list(conn, &options).map(as_map);
            match mapped {
                Some(reason) => Step::Mapped(reason, result),
                None => Step::Ran(result),
            }
        }
        "deleteAll" => Step::StoodIn(
            "deleteAll is the SQLite backend's (it wipes the whole database, §3.4); the replay counts the keys \
             with kv::count and drops _cf_KV, so the reads after it run on a missing table",
            kv::count(conn).map(|_| {
                conn.execute_batch("DROP TABLE IF EXISTS _cf_KV").unwrap();
                undefined()
            }),
        ),
        "kvSync" => {
            let args = op["args"].as_array().unwrap();
            match (op["method"].as_str().unwrap(), &args[0]) {
                ("get", Value::Array(parts)) => {
                    let joined: Vec<String> = parts.iter().map(js_key).collect();
                    Step::Mapped(
                        "storage.kv.get(array): JS converts the key with String(), [\"a\",\"b\"] → \"a,b\"",
                        kv::get(conn, &joined.join(",")).map(|v| v.map_or_else(undefined, |b| stored(&b))),
                    )
                }
                ("get", k) => Step::Ran(kv::get(conn, &js_key(k)).map(|v| v.map_or_else(undefined, |b| stored(&b)))),
                ("put", k) => {
                    let bytes = value::encode(&js_value(&args[1]).unwrap()).unwrap();
                    Step::Ran(kv::put(conn, &js_key(k), &bytes).map(|()| undefined()))
                }
                ("delete", k) => Step::Ran(kv::delete(conn, &js_key(k)).map(|b| json!(b))),
                (m, _) => panic!("unknown kvSync method {m}"),
            }
        }
        "kvSyncList" => {
            let (options, mapped) = list_options(op.get("options"));
            assert!(mapped.is_none());
            let result = r.slot.start(conn, &options).and_then(|mut iter| {
                let mut entries = Vec::new();
                while let Some((k, v)) = iter.next(&r.slot, conn)? {
                    entries.push(json!([k, stored(&v)]));
                }
                Ok(Value::Array(entries))
            });
            Step::Ran(result)
        }
        other => panic!("an op the KV replay does not know: {other}"),
    }
}

fn matches(expected: &Value, got: &Result<Value, Error>) -> bool {
    match (expected.get("ok"), expected.get("error"), got) {
        (Some(want), None, Ok(v)) => want == v,
        (None, Some(want), Err(e)) => {
            want["name"].as_str() == Some(&e.kind().to_string())
                && want["message"].as_str() == Some(e.message())
        }
        _ => false,
    }
}

#[test]
fn oracle_kv_sqlite_conformance() {
    let data: Value = serde_json::from_str(include_str!("../../../tests/data/oracle_kv.json")).unwrap();
    let (mut ran, mut mapped, mut stood_in, mut skipped) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for case in data["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mut replay = Replay { conn: db(&format!("oracle_{name}")), slot: KvListSlot::new() };
        for (i, expected) in case["results"].as_array().unwrap().iter().enumerate() {
            let op = &expected["op"];
            let (label, got) = match run_op(&mut replay, op) {
                Step::Ran(got) => {
                    ran += 1;
                    ("ran", got)
                }
                Step::Mapped(why, got) => {
                    mapped += 1;
                    println!("{name}[{i}] {op}: mapped: {why}");
                    ("mapped", got)
                }
                Step::StoodIn(why, got) => {
                    stood_in += 1;
                    println!("{name}[{i}] {op}: stood in: {why}");
                    ("stood in", got)
                }
                Step::Skipped(why) => {
                    skipped += 1;
                    println!("{name}[{i}] {op}: skipped: {why}");
                    continue;
                }
            };
            if !matches(expected, &got) {
                failures.push(format!("{name}[{i}] ({label}) {op}: expected {expected}, got {got:?}"));
            }
        }
    }
    println!("oracle KV (sqlite): {ran} ran, {mapped} mapped, {stood_in} stood in, {skipped} skipped");
    assert!(failures.is_empty(), "mismatches with the real runtime:\n{}", failures.join("\n"));
    // Pinned, so that an op silently moving to "skipped" is noticed.
    assert_eq!((ran, mapped, stood_in, skipped), (62, 8, 2, 4));
}

// ---------------------------------------------------------------------------------------------------------
// Properties

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Characters at the edges of UTF-8's byte lengths, surrogates' gap and the top of the code space.
    const ALPHABET: &[char] = &[
        '\0',
        'a',
        'b',
        'c',
        '\u{7F}',
        '\u{80}',
        'é',
        '\u{7FF}',
        '\u{800}',
        '\u{D7FF}',
        '\u{E000}',
        '\u{FFFF}',
        '\u{10000}',
        '\u{10FFFF}',
    ];

    fn key() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(ALPHABET), 0..4).prop_map(|cs| cs.into_iter().collect())
    }

    fn options() -> impl Strategy<Value = ListOptions> {
        (
            prop_oneof![
                Just((None, None)),
                key().prop_map(|k| (Some(k), None)),
                key().prop_map(|k| (None, Some(k)))
            ],
            prop::option::of(key()),
            prop::option::of(key()),
            any::<bool>(),
            prop::option::of(1i64..8),
        )
            .prop_map(|((start, start_after), end, prefix, reverse, limit)| ListOptions {
                start,
                start_after,
                end,
                prefix,
                reverse,
                limit,
            })
    }

    /// What the options mean, stated directly (§2.4), without computing a range.
    fn selects(o: &ListOptions, k: &str) -> bool {
        o.start.as_deref().is_none_or(|s| k >= s)
            && o.start_after.as_deref().is_none_or(|s| k > s)
            && o.end.as_deref().is_none_or(|e| k < e)
            && o.prefix.as_deref().is_none_or(|p| k.starts_with(p))
    }

    /// The model of list: a brute-force filter over a sorted map.
    fn model(map: &BTreeMap<String, Vec<u8>>, o: &ListOptions) -> Vec<(String, Vec<u8>)> {
        let mut pairs: Vec<_> =
            map.iter().filter(|(k, _)| selects(o, k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        if o.reverse {
            pairs.reverse();
        }
        pairs.truncate(o.limit.map_or(usize::MAX, |l| l as usize));
        pairs
    }

    /// §2.4's byte rule: drop trailing 0xFF bytes, increment the last byte.
    fn spec_prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
        let mut end = prefix.to_vec();
        while end.last() == Some(&0xff) {
            end.pop();
        }
        *end.last_mut()? += 1;
        Some(end)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn key_range_selects_exactly_what_the_options_mean(
            o in options(),
            keys in prop::collection::vec(key(), 0..40),
        ) {
            let extra = [o.start.clone(), o.start_after.clone(), o.end.clone(), o.prefix.clone()];
            let probes = keys.iter().cloned().chain(extra.into_iter().flatten().flat_map(|k| {
                // The bounds themselves and their neighbours are the likeliest to be wrong.
                [k.clone(), format!("{k}\0"), format!("{k}a"), format!("{k}\u{10FFFF}"), kv::prefix_end(&k).unwrap_or_default()]
            }));
            match o.key_range() {
                None => for k in probes {
                    prop_assert!(!selects(&o, &k), "empty range, but {:?} is selected", k);
                },
                Some(range) => {
                    prop_assert!(range.end.as_ref().is_none_or(|e| *e > range.start));
                    for k in probes {
                        prop_assert_eq!(range.contains(&k), selects(&o, &k), "key {:?} range {:?}", k, range);
                    }
                }
            }
        }

        #[test]
        fn prefix_end_selects_what_the_spec_byte_rule_selects(
            prefix in key().prop_filter("non-empty", |p| !p.is_empty()),
            keys in prop::collection::vec(key(), 0..40),
        ) {
            let spec = spec_prefix_end(prefix.as_bytes());
            let ours = kv::prefix_end(&prefix);
            if let Some(e) = &ours {
                prop_assert!(e.as_bytes() >= spec.as_deref().unwrap(), "the least string at or above the bytes");
            }
            for k in keys.iter().map(String::as_str).chain([prefix.as_str()]) {
                let by_spec = spec.as_deref().is_none_or(|e| k.as_bytes() < e);
                let by_ours = ours.as_deref().is_none_or(|e| k < e);
                prop_assert_eq!(by_spec, by_ours, "key {:?}", k);
                if k.starts_with(prefix.as_str()) {
                    prop_assert!(by_ours, "a key with the prefix is below the end");
                }
            }
        }

        #[test]
        fn encode_decode_round_trip(
            v in (any::<i64>(), any::<u64>(), any::<String>(), prop::collection::vec(any::<u8>(), 0..64),
                  prop::option::of(any::<bool>()), prop::collection::btree_map(any::<String>(), any::<i32>(), 0..5),
                  any::<f64>().prop_filter("not NaN", |f| !f.is_nan()), any::<char>()),
        ) {
            let bytes = value::encode(&v).unwrap();
            prop_assert_eq!(value::decode::<_>(&bytes).ok(), Some(v));
        }

        #[test]
        fn json_values_round_trip(v in json_value()) {
            let bytes = value::encode(&v).unwrap();
            prop_assert_eq!(value::decode::<Value>(&bytes).unwrap(), v);
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = value::decode::<Value>(&bytes);
            let _ = value::decode::<(String, Vec<u8>, Option<i64>)>(&bytes);
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            (-1e15f64..1e15).prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// `kv::list`, `KvListSlot::list` and a `kv.list()` iterator against the model, on one database whose
        /// contents each case replaces.
        #[test]
        fn list_matches_the_model(
            pairs in prop::collection::btree_map(key(), prop::collection::vec(any::<u8>(), 0..4), 0..24),
            o in options(),
        ) {
            thread_local! {
                static CONN: Connection = db("proptest_list_matches_the_model");
            }
            CONN.with(|conn| {
                conn.execute_batch("DROP TABLE IF EXISTS _cf_KV").unwrap();
                let entries: Vec<(&str, &[u8])> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
                kv::put_multiple(conn, &entries).unwrap();
                let want = model(&pairs, &o);
                prop_assert_eq!(&kv::list(conn, &o).unwrap(), &want);
                let mut slot = KvListSlot::new();
                prop_assert_eq!(&slot.list(conn, &o).unwrap(), &want);
                let mut iter = slot.start(conn, &o).unwrap();
                let mut got = Vec::new();
                while let Some(pair) = iter.next(&slot, conn).unwrap() {
                    got.push(pair);
                }
                prop_assert_eq!(&got, &want);
                Ok(())
            })?;
        }
    }
}
