//! The KV backend's storage in a cluster: a [`KvStore`] whose every call is storage-node RPCs
//! (docs/ARCHITECTURE.md, "The cluster"; spec §2.3).
//!
//! # Calls
//! The store's futures must be `Send` (the actor cache's are), but the host's [`RpcNode`] is not: as the
//! replica's shipper does, the store hands each RPC to a local task that owns the node, through a queue.
//! - Reads come in blocks of at most [`RemoteKvLimits::block`] pairs: a read asks block after block, each
//!   from after the last key received (and, for a list, with the limit that remains).
//! - A flush (`commit`) is cut into RPCs as workerd cuts it (§2.3): puts in batches of at most
//!   [`RemoteKvLimits::keys_per_rpc`] keys and [`RemoteKvLimits::bytes_per_rpc`] bytes, muted deletes in
//!   batches, each counted delete in batches of its own, the alarm change with the last. One RPC is a plain
//!   commit; several are staged at the node and applied with the last, in one transaction.
//!
//! # Failures
//! An RPC with no answer within [`RemoteKvLimits::timeout`] is [`StoreError::Disconnected`]: the actor cache
//! retries a flush up to 4 times and a read once. A read cut off keeps what it received; its retry (the same
//! request again) resumes after the last key received, with the remaining limit, and never repeats a key
//! (§2.3). A commit whose answer was lost may have applied: its retry (which repeats and extends it) names
//! it as *uncertain*, and the node applies the retry on top of it if it did, reporting the counts it got.
//! A call from a superseded owner (a newer epoch opened the object) fails with `Durable Object storage is no
//! longer accessible.` (retryable, reset).

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use madsim_tokio::sync::{mpsc, oneshot};

use crate::error::{messages, Error};
use crate::rpc::RpcNode;
use crate::storage::actor_cache::{Batch, CommitResult, KvStore, ListRequest, StoreError, StoreFuture};
use crate::wire::{self, KvCommitId, KvOp, KvResult, StorageCall, StorageReply, WirePair};

use super::STORAGE_CALL_TIMEOUT;

/// How a [`RemoteKvStore`] cuts its calls into RPCs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteKvLimits {
    /// The most keys of one write RPC (workerd's `maxKeysPerRpc`, 128).
    pub keys_per_rpc: usize,
    /// The most bytes (keys and values) of one put RPC (16 MiB).
    pub bytes_per_rpc: usize,
    /// The most pairs one read RPC answers (the block of a streamed read; the node caps it at 128).
    pub block: u32,
    /// How long an RPC waits for its answer before it is DISCONNECTED.
    pub timeout: Duration,
}

impl Default for RemoteKvLimits {
    fn default() -> Self {
        RemoteKvLimits {
            keys_per_rpc: 128,
            bytes_per_rpc: 16 << 20,
            block: wire::KV_BLOCK_MAX,
            timeout: STORAGE_CALL_TIMEOUT,
        }
    }
}

/// One RPC for the local task to make.
struct Job {
    call: StorageCall,
    timeout: Duration,
    reply: oneshot::Sender<Result<StorageReply, Error>>,
}

/// A read, as the actor cache asks it (its retry asks the same).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ReadKey {
    Get(Vec<String>),
    List { start: String, end: Option<String>, reverse: bool, limit: Option<usize> },
}

/// The most reads cut off whose received pairs are kept for their retry.
const PARTIALS_MAX: usize = 16;

struct State {
    next_n: u64,
    /// The last commit known applied (this session's, or the one the node named at open).
    acked: Option<KvCommitId>,
    /// This session's commits whose answers were lost since `acked`.
    uncertain: Vec<u64>,
    /// What reads cut off by DISCONNECTED received, for their retries.
    partials: BTreeMap<ReadKey, Vec<(String, Vec<u8>)>>,
    closed: bool,
}

struct Inner {
    jobs: mpsc::UnboundedSender<Job>,
    object: String,
    epoch: i64,
    session: u64,
    limits: RemoteKvLimits,
    state: Mutex<State>,
}

/// A [`KvStore`] on a storage node (see the module docs).
#[derive(Clone)]
pub struct RemoteKvStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RemoteKvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RemoteKvStore({} epoch {} session {})",
            self.inner.object, self.inner.epoch, self.inner.session
        )
    }
}

fn superseded() -> Error {
    Error::new(messages::STORAGE_NO_LONGER_ACCESSIBLE).with_retryable().with_reset()
}

/// A node's `Failed` answer as a store error: a lost connection on its side is DISCONNECTED too.
fn failed(e: &wire::WireError) -> StoreError {
    let e = e.error();
    if e.message() == messages::NETWORK_CONNECTION_LOST {
        StoreError::Disconnected(e.message().to_string())
    } else {
        StoreError::Internal(format!("storage node: {}", e.message()))
    }
}

fn unexpected(what: &str, reply: &StorageReply) -> StoreError {
    StoreError::Internal(format!("storage node answered {what} with {reply:?}"))
}

/// The key right after `key`.
fn successor(key: &str) -> String {
    let mut k = key.to_string();
    k.push('\0');
    k
}

impl RemoteKvStore {
    /// Opens `object` at storage node `node` under `epoch` (fencing every older epoch there) and returns its
    /// store. Runs on the host's thread (it starts the local task that makes the RPCs).
    pub async fn open(
        rpc: &Rc<RpcNode>,
        node: &str,
        object: &str,
        epoch: i64,
        limits: RemoteKvLimits,
    ) -> Result<RemoteKvStore, Error> {
        let (jobs, queue) = mpsc::unbounded_channel();
        // Detached on purpose: it lives as long as the store's queue, and ends when the store is dropped.
        drop(madsim_tokio::task::spawn_local(serve_jobs(rpc.clone(), node.to_string(), queue)));
        let (reply, answer) = oneshot::channel();
        let call = StorageCall::KvOpen { object: object.to_string(), epoch };
        let _ = jobs.send(Job { call, timeout: limits.timeout, reply });
        let lost = || Error::new(messages::NETWORK_CONNECTION_LOST).with_retryable();
        let (session, last) = match answer.await.map_err(|_| lost())?? {
            StorageReply::KvOpened { session, last } => (session, last),
            StorageReply::Fenced { .. } => return Err(superseded()),
            StorageReply::Failed(e) => return Err(e.error()),
            other => {
                return Err(Error::new(messages::internal_error(&format!(
                    "storage node answered KvOpen with {other:?}"
                ))))
            }
        };
        let state =
            State { next_n: 1, acked: last, uncertain: Vec::new(), partials: BTreeMap::new(), closed: false };
        Ok(RemoteKvStore {
            inner: Arc::new(Inner {
                jobs,
                object: object.to_string(),
                epoch,
                session,
                limits,
                state: Mutex::new(state),
            }),
        })
    }
}

/// Makes the store's RPCs, each in a task of its own (reads and a flush may be out together), until the
/// store is dropped.
async fn serve_jobs(rpc: Rc<RpcNode>, node: String, mut queue: mpsc::UnboundedReceiver<Job>) {
    while let Some(Job { call, timeout, reply }) = queue.recv().await {
        let rpc = rpc.clone();
        let node = node.clone();
        // Detached on purpose: the call ends by its timeout at the latest, and its caller may have stopped
        // waiting (a read given up): the answer then goes nowhere.
        drop(madsim_tokio::task::spawn_local(async move {
            let answer = match rpc.call(&node, wire::encode(&call), timeout).await {
                Ok(body) => wire::decode::<StorageReply>(&body, "storage reply"),
                Err(e) => Err(e),
            };
            let _ = reply.send(answer);
        }));
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A call after [`KvStore::close`] fails; the calls already on their way finish.
    fn check_open(&self) -> Result<(), StoreError> {
        if self.state().closed {
            return Err(StoreError::Internal(format!("the store of {} was closed", self.object)));
        }
        Ok(())
    }

    /// One RPC: its answer, DISCONNECTED if none came in time, the spec's superseded error if fenced.
    async fn rpc(&self, call: StorageCall) -> Result<StorageReply, StoreError> {
        let (reply, answer) = oneshot::channel();
        let disconnected = |d: &str| StoreError::Disconnected(format!("storage node {}: {d}", self.object));
        if self.jobs.send(Job { call, timeout: self.limits.timeout, reply }).is_err() {
            return Err(disconnected("the host's calls ended"));
        }
        match answer.await {
            Ok(Ok(StorageReply::Fenced { .. })) => Err(StoreError::Failed(superseded())),
            Ok(Ok(StorageReply::Failed(e))) => Err(failed(&e)),
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(disconnected(e.message())),
            Err(_) => Err(disconnected("the host's calls ended")),
        }
    }

    /// Runs a read in blocks (see the module docs): `block(after, received)` is the RPC of the block after
    /// key `after`, having received `received` pairs.
    async fn read(
        &self,
        key: ReadKey,
        reverse: bool,
        block: impl Fn(Option<&str>, usize) -> Option<StorageCall>,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut got = self.state().partials.remove(&key).unwrap_or_default();
        loop {
            let last = got.last().map(|(k, _)| k.clone());
            let Some(call) = block(last.as_deref(), got.len()) else { break };
            match self.rpc(call).await {
                Ok(StorageReply::KvPairs { pairs, more }) => {
                    let fresh = pairs.len();
                    // Never a key twice: only keys past the last one received.
                    got.extend(
                        pairs
                            .into_iter()
                            .filter(|p| {
                                last.as_deref().is_none_or(|l| {
                                    if reverse {
                                        p.key.as_str() < l
                                    } else {
                                        p.key.as_str() > l
                                    }
                                })
                            })
                            .map(|WirePair { key, value }| (key, value)),
                    );
                    if !more || fresh == 0 {
                        break;
                    }
                }
                Ok(other) => return Err(unexpected("a read", &other)),
                Err(StoreError::Disconnected(d)) => {
                    if !got.is_empty() {
                        let mut st = self.state();
                        if st.partials.len() >= PARTIALS_MAX {
                            st.partials.pop_first();
                        }
                        st.partials.insert(key, got);
                    }
                    return Err(StoreError::Disconnected(d));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    /// The RPC parts of a batch, in the order the batch applies; the alarm change rides with the last.
    fn parts(&self, batch: Batch) -> (Vec<Vec<KvOp>>, u32) {
        let per = self.limits.keys_per_rpc.max(1);
        let mut ops: Vec<KvOp> = Vec::new();
        if batch.delete_all {
            ops.push(KvOp::DeleteAll);
        }
        let counted = batch.counted_deletes.len() as u32;
        for (i, keys) in batch.counted_deletes.into_iter().enumerate() {
            if keys.is_empty() {
                ops.push(KvOp::CountedDelete { index: i as u32, keys: Vec::new() });
            }
            for chunk in keys.chunks(per) {
                ops.push(KvOp::CountedDelete { index: i as u32, keys: chunk.to_vec() });
            }
        }
        for chunk in batch.muted_deletes.chunks(per) {
            ops.push(KvOp::Delete { keys: chunk.to_vec() });
        }
        let mut puts: Vec<WirePair> = Vec::new();
        let mut bytes = 0;
        for (key, value) in batch.puts {
            let size = key.len() + value.len();
            if !puts.is_empty() && (puts.len() == per || bytes + size > self.limits.bytes_per_rpc) {
                ops.push(KvOp::Put { pairs: std::mem::take(&mut puts) });
                bytes = 0;
            }
            bytes += size;
            puts.push(WirePair { key, value });
        }
        if !puts.is_empty() {
            ops.push(KvOp::Put { pairs: puts });
        }
        let mut parts: Vec<Vec<KvOp>> = ops.into_iter().map(|op| vec![op]).collect();
        let mut alarm = Vec::new();
        if let Some(t) = batch.alarm_delete_if {
            alarm.push(KvOp::AlarmDeleteIf(t));
        }
        if let Some(a) = batch.alarm {
            alarm.push(KvOp::SetAlarm(a));
        }
        match parts.last_mut() {
            Some(last) => last.extend(alarm),
            None => parts.push(alarm),
        }
        (parts, counted)
    }

    async fn commit(&self, batch: Batch) -> Result<CommitResult, StoreError> {
        let (mut parts, counted) = self.parts(batch);
        let (id, after, uncertain) = {
            let mut st = self.state();
            let n = st.next_n;
            st.next_n += 1;
            (KvCommitId { session: self.session, n }, st.acked, st.uncertain.clone())
        };
        let last = parts.pop().unwrap_or_default();
        let outcome = self.commit_parts(id, after, uncertain, parts, counted, last).await;
        let mut st = self.state();
        match outcome {
            Ok(r) => {
                st.acked = Some(id);
                st.uncertain.clear();
                // What was read before this commit may be stale now.
                st.partials.clear();
                Ok(CommitResult {
                    counts: r.counts.into_iter().map(|c| c as usize).collect(),
                    deleted_all: r.deleted_all as usize,
                    alarm_deleted: r.alarm_deleted,
                })
            }
            Err(e) => {
                if matches!(e, StoreError::Disconnected(_)) {
                    st.uncertain.push(id.n);
                }
                Err(e)
            }
        }
    }

    async fn commit_parts(
        &self,
        id: KvCommitId,
        after: Option<KvCommitId>,
        uncertain: Vec<u64>,
        staged: Vec<Vec<KvOp>>,
        counted: u32,
        last: Vec<KvOp>,
    ) -> Result<KvResult, StoreError> {
        let (object, epoch) = (self.object.clone(), self.epoch);
        let parts = staged.len() as u32;
        for (part, ops) in staged.into_iter().enumerate() {
            let call = StorageCall::KvStage { object: object.clone(), epoch, id, part: part as u32, ops };
            match self.rpc(call).await? {
                StorageReply::KvStaged => {}
                other => return Err(unexpected("KvStage", &other)),
            }
        }
        let call = StorageCall::KvCommit { object, epoch, id, after, uncertain, parts, counted, ops: last };
        match self.rpc(call).await? {
            StorageReply::KvCommitted { result, .. } => Ok(result),
            // The node restarted and lost the staged parts: the retry sends them again.
            StorageReply::KvPartsMissing => {
                Err(StoreError::Disconnected("the staged parts were lost".into()))
            }
            StorageReply::Conflict { version } => Err(StoreError::Internal(format!(
                "a commit of {} after a commit it does not know (version {version})",
                self.object
            ))),
            other => Err(unexpected("KvCommit", &other)),
        }
    }
}

impl KvStore for RemoteKvStore {
    fn get(&self, keys: Vec<String>) -> StoreFuture<Vec<(String, Vec<u8>)>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            inner.check_open()?;
            let mut keys = keys;
            keys.sort();
            keys.dedup();
            let (object, epoch, max) = (inner.object.clone(), inner.epoch, inner.limits.block);
            let block = |after: Option<&str>, _: usize| {
                let rest: Vec<String> =
                    keys.iter().filter(|k| after.is_none_or(|a| k.as_str() > a)).cloned().collect();
                (!rest.is_empty()).then(|| StorageCall::KvGet {
                    object: object.clone(),
                    epoch,
                    keys: rest,
                    max,
                })
            };
            inner.read(ReadKey::Get(keys.clone()), false, block).await
        })
    }

    fn list(&self, request: ListRequest) -> StoreFuture<Vec<(String, Vec<u8>)>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            inner.check_open()?;
            let ListRequest { start, end, reverse, limit } = request;
            let (object, epoch, max) = (inner.object.clone(), inner.epoch, inner.limits.block);
            let key = ReadKey::List { start: start.clone(), end: end.clone(), reverse, limit };
            let block = |after: Option<&str>, received: usize| {
                let remaining = match limit {
                    Some(l) if received >= l => return None,
                    Some(l) => Some((l - received) as u64),
                    None => None,
                };
                // Forward: from after the last key; reverse: below it.
                let (start, end) = match (after, reverse) {
                    (None, _) => (start.clone(), end.clone()),
                    (Some(a), false) => (successor(a), end.clone()),
                    (Some(a), true) => (start.clone(), Some(a.to_string())),
                };
                Some(StorageCall::KvList {
                    object: object.clone(),
                    epoch,
                    start,
                    end,
                    reverse,
                    limit: remaining,
                    max,
                })
            };
            inner.read(key, reverse, block).await
        })
    }

    fn get_alarm(&self) -> StoreFuture<Option<i64>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            inner.check_open()?;
            let call = StorageCall::KvGetAlarm { object: inner.object.clone(), epoch: inner.epoch };
            match inner.rpc(call).await? {
                StorageReply::KvAlarm(t) => Ok(t),
                other => Err(unexpected("KvGetAlarm", &other)),
            }
        })
    }

    fn commit(&self, batch: Batch) -> StoreFuture<CommitResult> {
        let inner = self.inner.clone();
        Box::pin(async move {
            inner.check_open()?;
            inner.commit(batch).await
        })
    }

    fn close(&self) {
        self.inner.state().closed = true;
    }
}
