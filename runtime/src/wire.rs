//! The messages of object calls between nodes: a call to an object (a fetch or an RPC call), and its reply
//! (a response, an RPC result, an error with its flags, or "not the owner": the call did not run here).
//!
//! Encoded as CBOR. A host decodes what it receives and answers a message that does not decode with an
//! error that names it; nothing in a message is trusted (an id is checked against its namespace's key).

use serde::{Deserialize, Serialize};

use crate::error::{messages, Error, ErrorKind};
use crate::http::{Request, Response};
use crate::id::{NamespaceKey, ObjectId};

/// An object id on the wire: its hex form (checked against the namespace's key on arrival) and its name.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct WireId {
    hex: String,
    name: Option<String>,
}

impl WireId {
    pub(crate) fn of(id: &ObjectId) -> WireId {
        WireId { hex: id.to_string(), name: id.name().map(str::to_string) }
    }

    /// The id, if it is one of the namespace of `key` (the spec's `idFromString` errors otherwise).
    pub(crate) fn id(&self, key: &NamespaceKey) -> Result<ObjectId, Error> {
        Ok(ObjectId::parse(key, &self.hex)?.named(self.name.clone()))
    }
}

/// What an object call carries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum WireCall {
    /// `fetch(request)`.
    Fetch(Request),
    /// An RPC call of `method` with its encoded arguments.
    Rpc {
        method: String,
        #[serde(with = "serde_bytes")]
        args: Vec<u8>,
    },
    /// No event: only activate the object on its owner (which notes the alarm stored with it). A host that
    /// holds an alarm of an object another host owns hands the alarm over so.
    Activate,
}

/// A call to object `id` of the namespace `namespace` (its uid).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ObjectCall {
    pub(crate) namespace: String,
    pub(crate) id: WireId,
    pub(crate) call: WireCall,
    /// The call's size, for the overload limits.
    pub(crate) bytes: u64,
    /// The container of the answering host that the caller's stub is bound to (spec §6.2: a stub keeps its
    /// instance, and keeps failing once it was reset), if the stub is bound to one there.
    pub(crate) bound: Option<u64>,
    /// A fetch that asks for a WebSocket: the connection the caller opened for it (`stream.rs`). An answer
    /// with a WebSocket end binds that end to this connection.
    #[serde(default)]
    pub(crate) upgrade: Option<ConnId>,
}

/// A WebSocket connection's name, given by its client: the client node, its RPC incarnation, a counter.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct ConnId {
    pub(crate) client: String,
    pub(crate) incarnation: u64,
    pub(crate) n: u64,
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.client, self.n)
    }
}

/// An error on the wire: the message, the class and the four flags, exactly as they were.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct WireError {
    kind: u8,
    message: String,
    retryable: bool,
    overloaded: bool,
    reset: bool,
    remote: bool,
}

impl WireError {
    pub(crate) fn of(e: &Error) -> WireError {
        WireError {
            kind: match e.kind() {
                ErrorKind::Error => 0,
                ErrorKind::TypeError => 1,
                ErrorKind::RangeError => 2,
                ErrorKind::InvalidAccessError => 3,
                ErrorKind::SyntaxError => 4,
            },
            message: e.message().to_string(),
            retryable: e.retryable(),
            overloaded: e.overloaded(),
            reset: e.durable_object_reset(),
            remote: e.remote(),
        }
    }

    pub(crate) fn error(&self) -> Error {
        let kind = match self.kind {
            1 => ErrorKind::TypeError,
            2 => ErrorKind::RangeError,
            3 => ErrorKind::InvalidAccessError,
            4 => ErrorKind::SyntaxError,
            _ => ErrorKind::Error,
        };
        let mut e = Error::of(kind, self.message.clone());
        if self.retryable {
            e = e.with_retryable();
        }
        if self.overloaded {
            e = e.with_overloaded();
        }
        if self.reset {
            e = e.with_reset();
        }
        if self.remote {
            e = e.with_remote();
        }
        e
    }
}

/// The answer to an [`ObjectCall`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum ObjectReply {
    /// The call reached the object's container `container` on the answering host (a stub binds to it), with
    /// this outcome.
    Done { container: u64, outcome: Outcome },
    /// The call failed before it reached any container (a malformed call, a class the host does not run, the
    /// directory or storage unreachable while activating).
    Failed(WireError),
    /// The call did not run: this host does not own the object. `owner`: who does, if known.
    NotOwner { owner: Option<String> },
}

/// What a call that reached its container came to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Outcome {
    /// A fetch's response.
    Response(Response),
    /// An RPC call's encoded result.
    Rpc(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The call ran and failed, or could not run on the container's instance.
    Error(WireError),
}

/// A call to a storage node about one object's database (`object`: its namespace uid and id), made under the
/// caller's ownership `epoch` (its fencing token).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum StorageCall {
    /// Opens the object under `epoch`: every call with an older epoch is refused from then on.
    Open { object: String, epoch: i64 },
    /// Up to `max` pages of the database from page `from` on (numbered from 1).
    Fetch { object: String, epoch: i64, from: u32, max: u32 },
    /// One commit's pages, on top of version `base`: applied whole, or not at all.
    Commit {
        object: String,
        epoch: i64,
        base: u64,
        page_size: u32,
        pages: Vec<WirePage>,
        /// The file's size after the commit, if the commit cut it.
        size: Option<u64>,
    },
    /// Opens a KV-backend object under `epoch` (fencing older epochs, as `Open` does) and starts a session:
    /// the answer names it and the last commit the node applied.
    KvOpen { object: String, epoch: i64 },
    /// The present pairs among `keys` (sorted, distinct), in key order, at most `max` of them (one block).
    KvGet { object: String, epoch: i64, keys: Vec<String>, max: u32 },
    /// The pairs of a range (`start` inclusive, `end` exclusive), ascending or `reverse`, at most `limit`
    /// in all and at most `max` in this block.
    KvList {
        object: String,
        epoch: i64,
        start: String,
        end: Option<String>,
        reverse: bool,
        limit: Option<u64>,
        max: u32,
    },
    /// The alarm time, if set.
    KvGetAlarm { object: String, epoch: i64 },
    /// Part `part` of commit `id`'s operations, kept in memory until the commit's last part arrives.
    KvStage { object: String, epoch: i64, id: KvCommitId, part: u32, ops: Vec<KvOp> },
    /// The last part of commit `id`: with the `parts` staged before it, applied in one transaction, if the
    /// last commit the node applied is `after` or one of the caller's `uncertain` commits (those whose
    /// answers it never got); `counted`: how many counted deletes the commit has.
    KvCommit {
        object: String,
        epoch: i64,
        id: KvCommitId,
        after: Option<KvCommitId>,
        uncertain: Vec<u64>,
        parts: u32,
        counted: u32,
        ops: Vec<KvOp>,
    },
}

/// The most pairs one KV read answer carries (one block of a streamed read).
pub(crate) const KV_BLOCK_MAX: u32 = 128;
/// Past this many bytes of keys and values, a KV read answer ends its block (it always carries one pair).
pub(crate) const KV_BLOCK_BYTES: usize = 1 << 20;

/// A KV commit's identity: the session (one per `KvOpen` of the object) and the commit's number in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct KvCommitId {
    pub(crate) session: u64,
    pub(crate) n: u64,
}

/// One operation of a KV commit; a commit applies its operations in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum KvOp {
    /// Deletes every key (not the alarm).
    DeleteAll,
    /// Deletes keys, counting those that existed into the commit's count number `index`.
    CountedDelete { index: u32, keys: Vec<String> },
    /// Deletes keys; nobody needs the count.
    Delete { keys: Vec<String> },
    /// Puts pairs.
    Put { pairs: Vec<WirePair> },
    /// Deletes the alarm if it is set to exactly this time.
    AlarmDeleteIf(i64),
    /// Sets (`Some`) or deletes (`None`) the alarm.
    SetAlarm(Option<i64>),
}

/// A key and its value on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WirePair {
    pub(crate) key: String,
    #[serde(with = "serde_bytes")]
    pub(crate) value: Vec<u8>,
}

/// What an applied KV commit reports (the actor cache's `CommitResult`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KvResult {
    pub(crate) counts: Vec<u64>,
    pub(crate) deleted_all: u64,
    pub(crate) alarm_deleted: bool,
}

/// A page of a database on the wire.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct WirePage {
    pub(crate) number: u32,
    #[serde(with = "serde_bytes")]
    pub(crate) data: Vec<u8>,
}

/// A storage node's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum StorageReply {
    /// The object is open under the caller's epoch: its version, page size and file size.
    Opened { version: u64, page_size: u32, size: u64 },
    /// Pages, and whether there are more after them.
    Pages { pages: Vec<WirePage>, more: bool },
    /// The commit is durable; the new version.
    Committed { version: u64 },
    /// A newer epoch opened the object: the caller no longer owns it.
    Fenced { epoch: i64 },
    /// The commit's base is not the object's version (a commit lost or reordered before it).
    Conflict { version: u64 },
    /// The node could not do it (its disk failed, a malformed call).
    Failed(WireError),
    /// A KV object is open under the caller's epoch: its session, and the last commit the node applied.
    KvOpened { session: u64, last: Option<KvCommitId> },
    /// A block of pairs, and whether the read has more after them.
    KvPairs { pairs: Vec<WirePair>, more: bool },
    /// The alarm time, if set.
    KvAlarm(Option<i64>),
    /// A part of a commit is kept.
    KvStaged,
    /// The KV commit is durable (also when it had been already): the object's version and its result.
    KvCommitted { version: u64, result: KvResult },
    /// The commit's staged parts are gone (the node restarted): the caller sends them again.
    KvPartsMissing,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("a message encodes into memory");
    out
}

/// Decodes a message of type `T`; `what` names it in the error.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Error> {
    ciborium::from_reader(bytes)
        .map_err(|e| Error::new(messages::internal_error(&format!("a malformed {what} message: {e}"))))
}
