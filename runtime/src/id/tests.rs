//! Durable Object ids (`crate::id`) against the spec (`durable-objects.md` §8) and the layout the
//! module documents: stability, namespaces and jurisdictions, `idFromString` and its two errors.

use crate::error::messages;
use crate::error::ErrorKind;
use crate::id::{Jurisdiction, NamespaceKey, ObjectId, ID_HEX_DIGITS};
use hmac::{Hmac, KeyInit, Mac};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------------------
// Helpers

fn key(unique_key: &str) -> NamespaceKey {
    NamespaceKey::new(unique_key)
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The id of `name` computed straight from the documented layout, independently of the module.
fn layout_from_name(unique_key: &str, name: &str, jurisdiction: Option<&str>) -> String {
    let namespace_key: [u8; 32] = Sha256::digest(unique_key.as_bytes()).into();
    let k = match jurisdiction {
        None => namespace_key,
        Some(j) => hmac(&namespace_key, &[b"dosim-jurisdiction:", j.as_bytes()]),
    };
    let base = &hmac(&k, &[name.as_bytes()])[..16];
    let mac = &hmac(&k, &[base])[..16];
    hex(&[base, mac].concat())
}

fn parse_err(k: &NamespaceKey, s: &str) -> (ErrorKind, String) {
    let e = ObjectId::parse(k, s).unwrap_err();
    (e.kind(), e.message().to_owned())
}

fn invalid() -> (ErrorKind, String) {
    (ErrorKind::TypeError, messages::INVALID_OBJECT_ID.to_owned())
}

fn not_for_namespace() -> (ErrorKind, String) {
    (ErrorKind::TypeError, messages::OBJECT_ID_NOT_FOR_NAMESPACE.to_owned())
}

// ---------------------------------------------------------------------------------------------------------
// idFromName

/// Pinned once; each is recomputed from the layout (SHA-256 and HMAC-SHA256 directly), so a change to either
/// the module or the layout fails here. The no-jurisdiction values are the ids workerd computes.
#[test]
fn from_name_is_stable_and_follows_the_layout() {
    let pinned = [
        ("counter-ns", "alice", None, PINNED_ALICE),
        ("counter-ns", "", None, PINNED_EMPTY),
        ("counter-ns", "alice", Some(Jurisdiction::Eu), PINNED_ALICE_EU),
    ];
    for (unique_key, name, jurisdiction, expected) in pinned {
        let id = ObjectId::from_name(&key(unique_key), name, jurisdiction);
        assert_eq!(id.to_string(), expected, "{name:?} in {jurisdiction:?}");
        assert_eq!(
            layout_from_name(unique_key, name, jurisdiction.map(|j| j.as_str())),
            expected,
            "layout of {name:?} in {jurisdiction:?}"
        );
        assert_eq!(hex(id.as_bytes()), expected);
        assert_eq!(id.name(), Some(name));
        assert_eq!(id.jurisdiction(), jurisdiction);
        // The same call again gives the same id.
        assert_eq!(ObjectId::from_name(&key(unique_key), name, jurisdiction), id);
    }
}

// Computed once with Python's hashlib/hmac (a third implementation of the layout):
//   k = sha256(unique_key); k_j = hmac(k, b"dosim-jurisdiction:" + j)
//   base = hmac(k, name)[:16]; id = base + hmac(k, base)[:16]
const PINNED_ALICE: &str = "62d10d83d4d66de4dd73433708c6b39871d3ec40aa9b5cf6fb67571487fad3db";
const PINNED_EMPTY: &str = "071c49dc0754f2a2c002f3959a71bf761b43da1b44f994ac1da8be08f1a013a0";
const PINNED_ALICE_EU: &str = "a9ea3565d6d718882a5828dc051bd01dd66b01fb39f982fe11f160e0c78c22f3";

#[test]
fn same_name_in_two_namespaces_gives_two_ids() {
    let a = ObjectId::from_name(&key("script:A"), "room", None);
    let b = ObjectId::from_name(&key("script:B"), "room", None);
    assert_ne!(a, b);
    assert!(!a.equals(&b));
}

#[test]
fn same_name_in_each_jurisdiction_gives_a_different_id() {
    let k = key("ns");
    let ids: Vec<ObjectId> = std::iter::once(None)
        .chain(Jurisdiction::ALL.into_iter().map(Some))
        .map(|j| ObjectId::from_name(&k, "room", j))
        .collect();
    for (i, a) in ids.iter().enumerate() {
        for b in &ids[i + 1..] {
            assert_ne!(a, b, "{:?} vs {:?}", a.jurisdiction(), b.jurisdiction());
            // Both halves differ: the jurisdiction is a sub-namespace with its own key.
            assert_ne!(a.as_bytes()[..16], b.as_bytes()[..16]);
        }
    }
}

#[test]
fn unique_ids_use_the_random_bytes_and_have_no_name() {
    let k = key("ns");
    let random = [7u8; 16];
    let id = ObjectId::unique(&k, random, Some(Jurisdiction::Fedramp));
    assert_eq!(id.as_bytes()[..16], random);
    assert_eq!(id.name(), None);
    assert_eq!(id.jurisdiction(), Some(Jurisdiction::Fedramp));
    assert_ne!(id, ObjectId::unique(&k, random, None));
    assert_ne!(id, ObjectId::unique(&k, [8u8; 16], Some(Jurisdiction::Fedramp)));
}

#[test]
fn equality_ordering_and_hash_ignore_the_name() {
    use std::collections::BTreeSet;
    let k = key("ns");
    let named = ObjectId::from_name(&k, "x", None);
    let parsed = ObjectId::parse(&k, &named.to_string()).unwrap();
    assert_eq!(parsed.name(), None);
    assert_eq!(named, parsed);
    assert!(named.equals(&parsed));
    assert_eq!(named.cmp(&parsed), std::cmp::Ordering::Equal);
    let set: BTreeSet<ObjectId> = [named, parsed].into_iter().collect();
    assert_eq!(set.len(), 1);
}

#[test]
fn to_string_is_64_lowercase_hex() {
    let id = ObjectId::unique(&key("ns"), [0xAB; 16], None);
    let s = id.to_string();
    assert_eq!(s.len(), ID_HEX_DIGITS);
    assert!(s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)), "{s}");
    assert!(s.starts_with("abababab"));
}

// ---------------------------------------------------------------------------------------------------------
// idFromString

#[test]
fn parse_round_trips_losing_the_name_keeping_the_jurisdiction() {
    let k = key("ns");
    for j in std::iter::once(None).chain(Jurisdiction::ALL.into_iter().map(Some)) {
        let id = ObjectId::from_name(&k, "room", j);
        let parsed = ObjectId::parse(&k, &id.to_string()).unwrap();
        assert_eq!(parsed, id);
        assert_eq!(parsed.name(), None);
        assert_eq!(parsed.jurisdiction(), j);
        assert_eq!(parsed.to_string(), id.to_string());
    }
}

#[test]
fn parse_accepts_upper_and_mixed_case_as_the_same_id() {
    let k = key("ns");
    let id = ObjectId::from_name(&k, "room", Some(Jurisdiction::Us));
    let lower = id.to_string();
    let upper = lower.to_ascii_uppercase();
    let mixed: String =
        lower.chars().enumerate().map(|(i, c)| if i % 2 == 0 { c.to_ascii_uppercase() } else { c }).collect();
    for s in [upper, mixed] {
        let parsed = ObjectId::parse(&k, &s).unwrap();
        assert_eq!(parsed, id);
        assert_eq!(parsed.jurisdiction(), Some(Jurisdiction::Us));
        assert_eq!(parsed.to_string(), lower);
    }
}

#[test]
fn parse_rejects_anything_but_64_hex_digits() {
    let k = key("ns");
    let good = ObjectId::from_name(&k, "room", None).to_string();
    let cases = [
        String::new(),
        good[..63].to_owned(),
        format!("{good}0"),
        good[..32].to_owned(),
        format!("{}g", &good[..63]),
        format!("{}-", &good[..63]),
        format!(" {}", &good[..63]),
        format!("0x{}", &good[..62]),
        // 64 characters but not 64 bytes: still not 64 hex digits.
        format!("é{}", &good[..63]),
        // 64 bytes but the last two are one character.
        format!("{}é", &good[..62]),
    ];
    for s in cases {
        assert_eq!(parse_err(&k, &s), invalid(), "{s:?}");
    }
}

#[test]
fn parse_rejects_an_id_of_another_namespace_or_a_bad_mac() {
    let k = key("ns");
    let other = ObjectId::from_name(&key("other-ns"), "room", None).to_string();
    assert_eq!(parse_err(&k, &other), not_for_namespace());
    let other_eu = ObjectId::from_name(&key("other-ns"), "room", Some(Jurisdiction::Eu)).to_string();
    assert_eq!(parse_err(&k, &other_eu), not_for_namespace());

    // One flipped digit in either half breaks the mac.
    let good = ObjectId::from_name(&k, "room", None).to_string();
    for at in [0, 31, 32, 63] {
        let mut s = good.clone().into_bytes();
        s[at] = if s[at] == b'0' { b'1' } else { b'0' };
        assert_eq!(parse_err(&k, &String::from_utf8(s).unwrap()), not_for_namespace(), "digit {at}");
    }
    assert_eq!(parse_err(&k, &"0".repeat(64)), not_for_namespace());
}

#[test]
fn jurisdiction_parse_names_the_value_and_the_allowed_ones() {
    for j in Jurisdiction::ALL {
        assert_eq!(Jurisdiction::parse(j.as_str()).unwrap(), j);
        assert_eq!(j.to_string(), j.as_str());
    }
    assert_eq!(Jurisdiction::parse("fedramp-high").unwrap(), Jurisdiction::FedrampHigh);
    for bad in ["EU", "", "fedramp_high", "ca"] {
        let e = Jurisdiction::parse(bad).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TypeError);
        assert_eq!(e.message(), messages::invalid_jurisdiction(bad));
    }
    assert_eq!(
        messages::invalid_jurisdiction("ca"),
        r#"Invalid jurisdiction: "ca". Expected one of "eu", "fedramp", "fedramp-high", "us"."#
    );
}

// ---------------------------------------------------------------------------------------------------------
// Properties

fn jurisdiction() -> impl Strategy<Value = Option<Jurisdiction>> {
    prop::option::of(prop::sample::select(Jurisdiction::ALL.to_vec()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parse_of_to_string_is_the_id(
        name in ".{0,40}",
        random in any::<[u8; 16]>(),
        j in jurisdiction(),
        unique_key in "[a-z:]{1,12}",
    ) {
        let k = key(&unique_key);
        for id in [ObjectId::from_name(&k, &name, j), ObjectId::unique(&k, random, j)] {
            let parsed = ObjectId::parse(&k, &id.to_string()).unwrap();
            prop_assert_eq!(&parsed, &id);
            prop_assert_eq!(parsed.jurisdiction(), j);
            prop_assert_eq!(parsed.name(), None);
        }
        prop_assert_eq!(
            ObjectId::from_name(&k, &name, j).to_string(),
            layout_from_name(&unique_key, &name, j.map(|j| j.as_str()))
        );
    }

    /// A made-up id passes the mac of one of the five keys with probability about 5 · 2⁻¹²⁸.
    #[test]
    fn random_hex_is_rejected_by_the_mac(s in "[0-9a-fA-F]{64}") {
        prop_assert_eq!(parse_err(&key("ns"), &s), not_for_namespace());
    }
}
