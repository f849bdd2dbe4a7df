//! How stored values are serialized, and the key and value limits (spec `durable-objects.md` §2.1, §3.1, §11).
//!
//! # The persistent format: CBOR
//!
//! Every value an object stores is a serde type serialized as **CBOR** (RFC 8949) by `ciborium`. This module
//! is the one place that decides it: storage code handles values only as the bytes [`encode`] returns, and the
//! typed layer calls [`encode`] and [`decode`]. Cloudflare stores V8-serialized bytes (structured clone); CBOR
//! is the Rust counterpart with the same useful properties:
//!
//! - **Self-describing.** Each item carries its type, so a value written as one type reads back as any
//!   compatible one (a struct as a map, a `u8` as a `u64`, anything as a dynamic value such as
//!   `serde_json::Value`), and a stored value can be inspected without knowing the type that wrote it.
//!   postcard is not: it is a schema-less layout that only the exact writing type can read, and it cannot
//!   decode into a dynamic value (no `deserialize_any`), so a changed struct would silently misread old data.
//! - **Binary-safe and exact.** CBOR has byte strings, integers up to 64 bits (and bignums), non-string map
//!   keys, and IEEE floats including NaN and the infinities. JSON has none of these: bytes become arrays of
//!   numbers, `u64` loses precision in most readers, and NaN cannot be written at all.
//! - **Compact.** Small integers are one byte and floats use the shortest width that round-trips; a JSON
//!   encoding of the same value is typically larger.
//! - **A standard.** RFC 8949 fixes the bytes, so the format does not move with a crate's version, and
//!   databases written today stay readable (postcard's wire format is specific to one crate).
//!
//! The encoding is deterministic for a given value (serde visits fields in declaration order; use `BTreeMap`
//! rather than `HashMap` for maps, which clippy enforces), so the same run stores the same bytes.
//!
//! # Keys
//!
//! Keys are `&str`, ordered by their UTF-8 bytes (§2.1). Rust's `Ord` for `str` *is* byte-wise comparison of
//! the UTF-8 encoding, so `BTreeMap<String, _>` iterates in the spec's order and SQLite's `BINARY` collation
//! (memcmp) agrees with it. Note this is not JavaScript's UTF-16 code unit order: `"\u{FFFF}" < "\u{10000}"`
//! here, as on Cloudflare's storage.
//!
//! # Limits
//!
//! The KV backend (the actor cache) enforces the production limits through [`check_key`], [`check_value`] and
//! [`check_key_count`]. They are pure: the caller decides when each applies (§2.1 lists where workerd checks).
//! The SQLite backend has no such checks; SQLite itself refuses a row over [`SQLITE_ROW_SIZE_MAX`]
//! (`SQLITE_LIMIT_LENGTH`), which the connection setup installs.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{messages, Error};

/// The largest key, in UTF-8 bytes, of the KV backend (§2.1; §11: "2 KiB (2048 B)").
pub(crate) const KEY_SIZE_MAX: usize = 2048;

/// The largest value, in encoded bytes, of the KV backend (§2.1; §11: "128 KiB (131072 B)").
///
/// workerd advertises 131072 but enforces it on V8-serialized bytes with 34 bytes of slack; dosim enforces
/// exactly the advertised 131072 on the CBOR bytes. The two serializations differ in size anyway, so no choice
/// matches byte for byte; the advertised number is the one programs are written against, and being no more
/// lenient than production means a program that fits here fits there.
pub(crate) const VALUE_SIZE_MAX: usize = 131_072;

/// The most keys in one multi-key operation of the KV backend (§2.1: the storage RPC's `maxKeys`; §11 docs: 128
/// for get/put/delete arrays).
pub(crate) const MULTI_KEYS_MAX: usize = 128;

/// The SQLite backend's limit on a string, BLOB or row, in bytes: the documented "key+value combined ≤ 2 MB"
/// (§3.1, §11), installed as `SQLITE_LIMIT_LENGTH`.
///
/// SQLite checks the limit on each bound string or BLOB and on each record it builds, so a KV pair whose key
/// or whose key plus value (plus a few bytes of record header) exceeds it fails with `string or blob too big:
/// SQLITE_TOOBIG` and nothing is written. workerd's local build sets 4 MiB; that is a local detail, and
/// production documents 2 MB. dosim takes 2 MB in the decimal sense (2 000 000, as the docs count GB as 10^9
/// bytes): the stricter reading of the docs, so a program that fits here fits in production.
pub(crate) const SQLITE_ROW_SIZE_MAX: usize = 2_000_000;

// A pair the KV backend accepts also fits the SQLite backend, so data can move from one to the other.
const _: () = assert!(KEY_SIZE_MAX + VALUE_SIZE_MAX < SQLITE_ROW_SIZE_MAX);
// SQLite takes the limit as a C int.
const _: () = assert!(SQLITE_ROW_SIZE_MAX <= i32::MAX as usize);

/// Serializes `value` in the persistent format (CBOR).
///
/// Fails only if `value`'s `Serialize` implementation reports an error; the error names the type.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    ciborium::into_writer(value, &mut bytes).map_err(|e| {
        Error::new(format!("cannot encode a value of type {} for storage: {e}", std::any::type_name::<T>()))
    })?;
    Ok(bytes)
}

/// Reads a value written by [`encode`] as a `T`.
///
/// Any CBOR item compatible with `T` is accepted. Bytes that are not exactly one CBOR item (truncated,
/// malformed, followed by more bytes), or an item that does not fit `T`, give an error naming `T`; this never
/// panics, and nesting is bounded by ciborium's recursion limit, so hostile bytes cannot overflow the stack.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let type_name = std::any::type_name::<T>();
    let mut rest = bytes;
    let value = ciborium::from_reader(&mut rest)
        .map_err(|e| Error::new(format!("cannot decode a stored value as {type_name}: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::new(format!(
            "cannot decode a stored value as {type_name}: {} unexpected bytes after the value",
            rest.len()
        )));
    }
    Ok(value)
}

/// How many characters of a key, or of a rendered value, a trace line shows.
pub(crate) const TRACE_TEXT_MAX: usize = 80;

/// `text` cut to at most `max` characters, ending with `…` when it was cut (for trace lines).
pub(crate) fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some(_) => {
            let keep: String = text.chars().take(max.saturating_sub(1)).collect();
            format!("{keep}…")
        }
    }
}

/// Keys as a trace line shows them: each quoted, the whole cut to [`TRACE_TEXT_MAX`] characters.
pub(crate) fn render_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = keys.into_iter().map(|k| format!("{k:?}")).collect();
    shorten(&quoted.join(", "), TRACE_TEXT_MAX)
}

/// The encoded arguments of an RPC call as a trace line shows them, inside the call's parentheses: a
/// short, deterministic rendering of the CBOR item as a compact literal. A tuple (several arguments) shows
/// as its items, `()` (no argument) as nothing, one argument as itself (`[true, null]`, `{"a": 1}`); cut to
/// [`TRACE_TEXT_MAX`] characters; `<n bytes>` if it does not decode.
pub(crate) fn render_args(bytes: &[u8]) -> String {
    match ciborium::from_reader::<ciborium::Value, _>(bytes) {
        Ok(ciborium::Value::Null) => String::new(),
        Ok(ciborium::Value::Array(items)) => {
            let mut out = String::new();
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push_str(", ");
                }
                write_value(&mut out, item);
            }
            shorten(&out, TRACE_TEXT_MAX)
        }
        Ok(v) => {
            let mut out = String::new();
            write_value(&mut out, &v);
            shorten(&out, TRACE_TEXT_MAX)
        }
        Err(_) => format!("<{} bytes>", bytes.len()),
    }
}

fn write_value(out: &mut String, value: &ciborium::Value) {
    use ciborium::Value as V;
    use std::fmt::Write as _;
    // Long enough: the rest is cut anyway.
    if out.len() > 4 * TRACE_TEXT_MAX {
        return;
    }
    let list = |out: &mut String, items: &[V], open: char, close: char| {
        out.push(open);
        for (n, item) in items.iter().enumerate() {
            if n > 0 {
                out.push_str(", ");
            }
            write_value(out, item);
        }
        out.push(close);
    };
    match value {
        V::Integer(i) => {
            let _ = write!(out, "{}", i128::from(*i));
        }
        V::Float(f) => {
            let _ = write!(out, "{f}");
        }
        V::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        V::Null => out.push_str("null"),
        V::Text(t) => {
            let _ = write!(out, "{:?}", shorten(t, TRACE_TEXT_MAX));
        }
        V::Bytes(b) => {
            let _ = write!(out, "<{} bytes>", b.len());
        }
        V::Array(items) => list(out, items, '[', ']'),
        V::Map(pairs) => {
            out.push('{');
            for (n, (k, v)) in pairs.iter().enumerate() {
                if n > 0 {
                    out.push_str(", ");
                }
                write_value(out, k);
                out.push_str(": ");
                write_value(out, v);
            }
            out.push('}');
        }
        V::Tag(tag, inner) => {
            let _ = write!(out, "{tag}(");
            write_value(out, inner);
            out.push(')');
        }
        _ => out.push('?'),
    }
}

/// Checks a key against [`KEY_SIZE_MAX`] (KV backend, §2.1): a longer key is a `RangeError`.
pub(crate) fn check_key(key: &str) -> Result<(), Error> {
    if key.len() > KEY_SIZE_MAX {
        return Err(Error::range_error(messages::key_too_large(key.len())));
    }
    Ok(())
}

/// Checks an encoded value against [`VALUE_SIZE_MAX`] (KV backend, §2.1): the size is the length of the
/// bytes [`encode`] returned, and a larger value is a `RangeError`.
pub(crate) fn check_value(bytes: &[u8]) -> Result<(), Error> {
    if bytes.len() > VALUE_SIZE_MAX {
        return Err(Error::range_error(messages::value_too_large(bytes.len())));
    }
    Ok(())
}

/// Checks the number of keys of a multi-key operation against [`MULTI_KEYS_MAX`] (KV backend, §2.1): more is
/// a `RangeError`. workerd applies it to multi-get only; the docs state it for get, put and delete.
pub(crate) fn check_key_count(count: usize) -> Result<(), Error> {
    if count > MULTI_KEYS_MAX {
        return Err(Error::range_error(messages::too_many_keys(count)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_renderings_are_short_and_deterministic() {
        let args = encode(&("key", 5i64, vec![true], Option::<u8>::None, 1.5f64)).unwrap();
        assert_eq!(render_args(&args), r#""key", 5, [true], null, 1.5"#);
        assert_eq!(render_args(&encode(&()).unwrap()), "");
        assert_eq!(render_args(&encode(&7u8).unwrap()), "7");
        let long = encode(&"x".repeat(500)).unwrap();
        let shown = render_args(&long);
        assert_eq!(shown.chars().count(), TRACE_TEXT_MAX);
        assert!(shown.ends_with('…'), "{shown}");
        assert_eq!(render_args(&[0xff, 0x00]), "<2 bytes>");
        let mut map = std::collections::BTreeMap::new();
        map.insert("a", vec![1u8]);
        assert_eq!(render_args(&encode(&map).unwrap()), r#"{"a": [1]}"#);
        assert_eq!(render_keys(["a", "b\"c"]), r#""a", "b\"c""#);
        assert_eq!(shorten("héllo", 3), "hé…");
        assert_eq!(shorten("héllo", 5), "héllo");
    }

    #[test]
    fn the_messages_state_the_limits_defined_here() {
        assert!(messages::key_too_large(0).contains(&format!(" {KEY_SIZE_MAX} bytes")));
        assert!(messages::value_too_large(0).contains(&format!(" {VALUE_SIZE_MAX} bytes")));
        assert!(messages::too_many_keys(0).contains(&format!(" is {MULTI_KEYS_MAX}.")));
    }

    #[test]
    fn decode_reads_exactly_one_item() {
        let mut bytes = encode(&7u32).unwrap();
        assert_eq!(decode::<u64>(&bytes).unwrap(), 7);
        bytes.push(0);
        let e = decode::<u64>(&bytes).unwrap_err();
        assert!(e.message().contains("1 unexpected bytes"), "{e}");
    }
}
