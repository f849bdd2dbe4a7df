//! Durable Object ids: how a namespace names its objects, and how it recognises its own ids (spec §8).
//!
//! # Layout
//!
//! An id is 32 bytes, shown as 64 lowercase hex digits. It follows workerd (`server/actor-id-impl.c++`):
//!
//! ```text
//! bytes  0..16  base: HMAC-SHA256(k, name)[..16]   (idFromName)
//!                     or 16 random bytes            (newUniqueId)
//! bytes 16..32  mac:  HMAC-SHA256(k, base)[..16]
//! ```
//!
//! where `k` is the key of the (sub-)namespace the id belongs to:
//!
//! * without a jurisdiction, `k` is the namespace key, SHA-256 of the namespace's unique key ([`NamespaceKey`]).
//!   These ids are byte for byte the ones workerd computes.
//! * in a jurisdiction `j` (our extension: workerd does not implement jurisdictions), `k` is the namespace key
//!   derived for it, `HMAC-SHA256(namespace key, "dosim-jurisdiction:" ‖ j)` with `j` as in
//!   [`Jurisdiction::as_str`]. A jurisdiction is thus a sub-namespace with its own key: the same name gives
//!   different ids in different jurisdictions (both halves differ), and no name chosen in one can collide with
//!   an id of another, as a one-byte tag prefixed to the name could.
//!
//! The mac makes ids unforgeable and tied to their namespace: [`ObjectId::parse`] recomputes it under the
//! namespace key and under each jurisdiction's key, and the one that matches tells the id's jurisdiction. An id
//! of another namespace (or a random string) matches none, except with probability about 5 · 2⁻¹²⁸.
//!
//! # Hex case
//!
//! `toString()` is always lowercase. `idFromString` accepts upper- and mixed-case hex digits too, as workerd's
//! `kj::decodeHex` does; the id parsed is the same id, and prints lowercase.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::error::{messages, Error};

/// Bytes in an id (spec §8: 64 hex digits).
pub(crate) const ID_BYTES: usize = 32;
/// Bytes in the first half of an id: the random bytes or the keyed hash of the name.
pub(crate) const ID_BASE_BYTES: usize = 16;
/// Bytes of the mac, the second half of an id.
pub(crate) const ID_MAC_BYTES: usize = ID_BYTES - ID_BASE_BYTES;
/// Hex digits in an id's string form.
pub(crate) const ID_HEX_DIGITS: usize = ID_BYTES * 2;
const _: () = assert!(ID_MAC_BYTES == ID_BASE_BYTES);

/// The prefix of the input from which a jurisdiction's key is derived (see the module docs).
const JURISDICTION_KEY_CONTEXT: &str = "dosim-jurisdiction:";

type HmacSha256 = Hmac<Sha256>;

fn hmac_sha256(key: &[u8; 32], data: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in data {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// A namespace's secret key: SHA-256 of the namespace's unique key (spec §8).
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct NamespaceKey([u8; 32]);

impl NamespaceKey {
    /// The key of the namespace whose unique key is `unique_key` (in dosim, its namespace uid).
    pub(crate) fn new(unique_key: &str) -> NamespaceKey {
        NamespaceKey(Sha256::digest(unique_key.as_bytes()).into())
    }

    /// The key that ids in `jurisdiction` are made and checked with: the namespace key itself without a
    /// jurisdiction, else the key derived for it (module docs).
    fn for_jurisdiction(&self, jurisdiction: Option<Jurisdiction>) -> [u8; 32] {
        match jurisdiction {
            None => self.0,
            Some(j) => hmac_sha256(&self.0, &[JURISDICTION_KEY_CONTEXT.as_bytes(), j.as_str().as_bytes()]),
        }
    }
}

/// Where an object's data may live (spec §8, `jurisdiction(j)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Jurisdiction {
    /// `"eu"`: the European Union.
    Eu,
    /// `"fedramp"`: FedRAMP-compliant data centers.
    Fedramp,
    /// `"fedramp-high"`: FedRAMP High.
    FedrampHigh,
    /// `"us"`: the United States.
    Us,
}

impl Jurisdiction {
    /// Every jurisdiction, in the order `ObjectId::parse` tries them.
    pub const ALL: [Jurisdiction; 4] =
        [Jurisdiction::Eu, Jurisdiction::Fedramp, Jurisdiction::FedrampHigh, Jurisdiction::Us];

    /// The jurisdiction named `s`, exactly as JavaScript spells it (`"eu"`, `"fedramp"`, `"fedramp-high"`,
    /// `"us"`; case matters); anything else is a `TypeError` naming the value and the allowed ones.
    pub fn parse(s: &str) -> Result<Jurisdiction, Error> {
        Jurisdiction::ALL
            .into_iter()
            .find(|j| j.as_str() == s)
            .ok_or_else(|| Error::type_error(messages::invalid_jurisdiction(s)))
    }

    /// The name JavaScript uses.
    pub fn as_str(&self) -> &'static str {
        match self {
            Jurisdiction::Eu => "eu",
            Jurisdiction::Fedramp => "fedramp",
            Jurisdiction::FedrampHigh => "fedramp-high",
            Jurisdiction::Us => "us",
        }
    }
}

impl fmt::Display for Jurisdiction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Durable Object id (`DurableObjectId`): 32 bytes, plus the name it was made from (if it was, and not
/// parsed from a string) and its jurisdiction.
///
/// Equality, ordering and hashing use the bytes only, as `id.equals()` does: the name is a convenience that
/// `idFromString` loses, and the jurisdiction is determined by the bytes.
#[derive(Clone, Debug)]
pub struct ObjectId {
    bytes: [u8; ID_BYTES],
    name: Option<String>,
    jurisdiction: Option<Jurisdiction>,
}

impl ObjectId {
    /// `idFromName(name)`: the same id for the same name in the same namespace and jurisdiction, every time.
    pub(crate) fn from_name(key: &NamespaceKey, name: &str, jurisdiction: Option<Jurisdiction>) -> ObjectId {
        let k = key.for_jurisdiction(jurisdiction);
        let hash = hmac_sha256(&k, &[name.as_bytes()]);
        let mut base = [0; ID_BASE_BYTES];
        base.copy_from_slice(&hash[..ID_BASE_BYTES]);
        ObjectId { bytes: with_mac(&k, base), name: Some(name.to_owned()), jurisdiction }
    }

    /// `newUniqueId({jurisdiction})` with these random bytes (the caller draws them, from the simulation's
    /// randomness in a simulated run).
    pub(crate) fn unique(
        key: &NamespaceKey,
        random: [u8; ID_BASE_BYTES],
        jurisdiction: Option<Jurisdiction>,
    ) -> ObjectId {
        let k = key.for_jurisdiction(jurisdiction);
        ObjectId { bytes: with_mac(&k, random), name: None, jurisdiction }
    }

    /// `idFromString(s)`: 64 hex digits (either case, see the module docs) of an id of this namespace, in any
    /// jurisdiction, which the result recovers. The result has no name.
    ///
    /// Errors (both `TypeError`, spec §8): anything but 64 hex digits is `Invalid Durable Object ID: must be 64
    /// hex digits`; an id whose mac does not match (another namespace's, or made up) is `Durable Object ID is
    /// not valid for this namespace.`
    pub(crate) fn parse(key: &NamespaceKey, s: &str) -> Result<ObjectId, Error> {
        let bytes = decode_hex(s).ok_or_else(|| Error::type_error(messages::INVALID_OBJECT_ID))?;
        let mut base = [0; ID_BASE_BYTES];
        base.copy_from_slice(&bytes[..ID_BASE_BYTES]);
        std::iter::once(None)
            .chain(Jurisdiction::ALL.into_iter().map(Some))
            .find(|&jurisdiction| with_mac(&key.for_jurisdiction(jurisdiction), base) == bytes)
            .map(|jurisdiction| ObjectId { bytes, name: None, jurisdiction })
            .ok_or_else(|| Error::type_error(messages::OBJECT_ID_NOT_FOR_NAMESPACE))
    }

    /// The same id with `name` as its name: an id that travelled between nodes as its hex form gets back the
    /// name it was made from (which `idFromString` alone would lose).
    pub(crate) fn named(mut self, name: Option<String>) -> ObjectId {
        self.name = name;
        self
    }

    /// `id.name`: the name it was made from by `ObjectId::from_name`; `None` for unique and parsed ids.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// `id.jurisdiction`.
    pub fn jurisdiction(&self) -> Option<Jurisdiction> {
        self.jurisdiction
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; ID_BYTES] {
        &self.bytes
    }

    /// `id.equals(other)`: the same bytes.
    pub fn equals(&self, other: &ObjectId) -> bool {
        self.bytes == other.bytes
    }
}

/// The id whose first half is `base`, with its mac under `k`.
fn with_mac(k: &[u8; 32], base: [u8; ID_BASE_BYTES]) -> [u8; ID_BYTES] {
    let mac = hmac_sha256(k, &[&base]);
    let mut bytes = [0; ID_BYTES];
    bytes[..ID_BASE_BYTES].copy_from_slice(&base);
    bytes[ID_BASE_BYTES..].copy_from_slice(&mac[..ID_MAC_BYTES]);
    bytes
}

/// The bytes of exactly [`ID_HEX_DIGITS`] hex digits of either case, else `None`.
fn decode_hex(s: &str) -> Option<[u8; ID_BYTES]> {
    let digits = s.as_bytes();
    if digits.len() != ID_HEX_DIGITS {
        return None;
    }
    let mut bytes = [0; ID_BYTES];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        let high = char::from(pair[0]).to_digit(16)?;
        let low = char::from(pair[1]).to_digit(16)?;
        *byte = u8::try_from(high * 16 + low).expect("two hex digits fit a byte");
    }
    Some(bytes)
}

impl PartialEq for ObjectId {
    fn eq(&self, other: &ObjectId) -> bool {
        self.equals(other)
    }
}

impl Eq for ObjectId {}

impl PartialOrd for ObjectId {
    fn partial_cmp(&self, other: &ObjectId) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ObjectId {
    /// By bytes.
    fn cmp(&self, other: &ObjectId) -> Ordering {
        self.bytes.cmp(&other.bytes)
    }
}

impl Hash for ObjectId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

impl fmt::Display for ObjectId {
    /// `id.toString()`: 64 lowercase hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = [0u8; ID_HEX_DIGITS];
        for (i, byte) in self.bytes.iter().enumerate() {
            hex[2 * i] = DIGITS[usize::from(byte >> 4)];
            hex[2 * i + 1] = DIGITS[usize::from(byte & 0xf)];
        }
        f.write_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"))
    }
}

#[cfg(test)]
mod tests;
