//! The storage node: where objects' databases live in a cluster, so that they survive their host.
//!
//! It keeps each object's database as pages in a SQLite database on its own disk (`objects`: each object's
//! epoch, version, page size and file size; `pages`: its pages), and serves [`StorageCall`]s:
//! - `Open` under an epoch fences every older epoch: from then on their calls get `Fenced`. Epochs come from
//!   the directory (a claim's store revision) and only grow, so the newest owner is the only writer.
//! - `Fetch` hands out pages in blocks, for a host rebuilding its local replica.
//! - `Commit` applies one commit's pages on top of version `base`, in one transaction: whole or not at all,
//!   also across a crash or power cut of the node. A base that is not the current version (a commit lost or
//!   reordered before it) is a `Conflict`.
//!
//! - KV-backend objects (the actor cache's store, `replication::kv`): `KvOpen` fences as `Open` does and
//!   starts a session; `KvGet` and `KvList` answer in blocks ([`KV_BLOCK_MAX`] pairs, [`KV_BLOCK_BYTES`]
//!   bytes) with `more`; `KvCommit` applies one flush (with the parts `KvStage` kept in memory before it)
//!   in one transaction, under the same epoch fencing, and only on top of the last commit its caller knows
//!   of or one it is unsure of (a retry after a lost answer, which then reports that commit's counts).
//!
//! Every answer waits until what the node wrote is durable on its disk ([`DurabilityWait`]), so an
//! acknowledged commit survives the node's power cut, and a new owner never reads pages that a power cut
//! could still take back.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{messages, Error};
use crate::location::DatabaseLocation;
use crate::rpc::RpcNode;
use crate::wire::{
    self, KvCommitId, KvOp, KvResult, StorageCall, StorageReply, WireError, WirePage, WirePair,
    KV_BLOCK_BYTES, KV_BLOCK_MAX,
};
use crate::world::DurabilityWait;

/// The most pages one `Fetch` answer carries.
pub(crate) const FETCH_PAGES_MAX: u32 = 64;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS objects(
        object TEXT PRIMARY KEY,
        epoch INTEGER NOT NULL,
        version INTEGER NOT NULL,
        page_size INTEGER NOT NULL,
        size INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS pages(
        object TEXT NOT NULL,
        number INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY(object, number)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS kv(
        object TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY(object, key)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS kv_objects(
        object TEXT PRIMARY KEY,
        sessions INTEGER NOT NULL,
        last_session INTEGER,
        last_n INTEGER,
        last_commit BLOB,
        alarm INTEGER
    ) WITHOUT ROWID;
";

/// An object's row.
struct Meta {
    epoch: i64,
    version: u64,
    page_size: u32,
    size: u64,
}

/// A count as SQLite stores it (an `INTEGER` is an `i64`; these never exceed it).
fn sql_int(n: u64) -> i64 {
    i64::try_from(n).expect("a version or size fits an SQLite integer")
}

/// A KV commit's parts staged so far, by part number.
type StagedParts = BTreeMap<u32, Vec<KvOp>>;

/// A storage node serving the calls its [`RpcNode`] receives.
pub struct StorageNode {
    conn: RefCell<Connection>,
    /// The parts of KV commits still waiting for their last part, per object and commit (memory only: a
    /// restart loses them, and the caller sends them again).
    staged: RefCell<BTreeMap<(String, KvCommitId), StagedParts>>,
    durability: Arc<dyn DurabilityWait>,
    fencing: bool,
    /// Whether a KV commit is applied on top of the caller's uncertain one (a retry after a lost answer).
    retries: bool,
}

impl std::fmt::Debug for StorageNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StorageNode(fencing: {}, retries: {})", self.fencing, self.retries)
    }
}

fn sql_error(e: rusqlite::Error) -> Error {
    Error::new(messages::internal_error(&format!("storage node: {e}"))).with_retryable()
}

impl StorageNode {
    /// Opens the node's database at `location` (durable once `durability` resolves) and serves `rpc`'s
    /// calls with it.
    pub fn start(
        location: &DatabaseLocation,
        durability: Arc<dyn DurabilityWait>,
        rpc: &Rc<RpcNode>,
    ) -> Result<Rc<StorageNode>, Error> {
        Self::start_with(location, durability, rpc, true, true)
    }

    /// [`StorageNode::start`] without fencing: calls of any epoch apply. Only for the negative controls of
    /// tests that show fencing is needed.
    pub fn start_without_fencing(
        location: &DatabaseLocation,
        durability: Arc<dyn DurabilityWait>,
        rpc: &Rc<RpcNode>,
    ) -> Result<Rc<StorageNode>, Error> {
        Self::start_with(location, durability, rpc, false, true)
    }

    /// [`StorageNode::start`] that does not recognise a KV commit's retry after a lost answer: the retry of a
    /// commit that applied is a conflict. Only for the negative controls of tests that show recognising
    /// retries is needed.
    pub fn start_without_retries(
        location: &DatabaseLocation,
        durability: Arc<dyn DurabilityWait>,
        rpc: &Rc<RpcNode>,
    ) -> Result<Rc<StorageNode>, Error> {
        Self::start_with(location, durability, rpc, true, false)
    }

    fn start_with(
        location: &DatabaseLocation,
        durability: Arc<dyn DurabilityWait>,
        rpc: &Rc<RpcNode>,
        fencing: bool,
        retries: bool,
    ) -> Result<Rc<StorageNode>, Error> {
        let conn = location.open().map_err(|e| Error::new(e.to_string()).with_retryable())?;
        conn.execute_batch(SCHEMA).map_err(sql_error)?;
        let node = Rc::new(StorageNode {
            conn: RefCell::new(conn),
            staged: RefCell::new(BTreeMap::new()),
            durability,
            fencing,
            retries,
        });
        let weak = Rc::downgrade(&node);
        rpc.serve(Rc::new(move |_from, body| {
            let node = weak.upgrade();
            Box::pin(async move {
                let reply = match node {
                    Some(node) => node.serve(&body).await,
                    None => StorageReply::Failed(WireError::of(
                        &Error::new(messages::NETWORK_CONNECTION_LOST).with_retryable(),
                    )),
                };
                wire::encode(&reply)
            })
        }));
        Ok(node)
    }

    async fn serve(&self, body: &[u8]) -> StorageReply {
        let reply = match wire::decode::<StorageCall>(body, "storage call") {
            Ok(call) => self.handle(call).unwrap_or_else(|e| StorageReply::Failed(WireError::of(&e))),
            Err(e) => StorageReply::Failed(WireError::of(&e)),
        };
        // Nothing is answered before what the node wrote (and what it read) is durable.
        self.durability.wait().await;
        reply
    }

    fn handle(&self, call: StorageCall) -> Result<StorageReply, Error> {
        let mut conn = self.conn.borrow_mut();
        match call {
            StorageCall::KvOpen { object, epoch } => self.kv_open(&mut conn, &object, epoch),
            StorageCall::KvGet { object, epoch, keys, max } => {
                if let Some(fenced) = self.fenced(&conn, &object, epoch)? {
                    return Ok(fenced);
                }
                let max = max.clamp(1, KV_BLOCK_MAX) as usize;
                let mut stmt = conn
                    .prepare_cached("SELECT value FROM kv WHERE object = ?1 AND key = ?2")
                    .map_err(sql_error)?;
                let mut keys = keys;
                keys.sort();
                keys.dedup();
                let asked = keys.len();
                let mut pairs = Vec::new();
                let mut more = false;
                let mut bytes = 0;
                for key in keys {
                    let value: Option<Vec<u8>> =
                        stmt.query_row(params![object, key], |r| r.get(0)).optional().map_err(sql_error)?;
                    if let Some(value) = value {
                        if pairs.len() == max || bytes >= KV_BLOCK_BYTES {
                            more = true;
                            break;
                        }
                        bytes += key.len() + value.len();
                        pairs.push(WirePair { key, value });
                    }
                }
                tracing::debug!(target: "dosim::storage_node", "kv get {object} keys={asked} pairs={} more={more}", pairs.len());
                Ok(StorageReply::KvPairs { pairs, more })
            }
            StorageCall::KvList { object, epoch, start, end, reverse, limit, max } => {
                if let Some(fenced) = self.fenced(&conn, &object, epoch)? {
                    return Ok(fenced);
                }
                let max = u64::from(max.clamp(1, KV_BLOCK_MAX));
                let take = limit.map_or(max, |l| l.min(max));
                let sql = match (end.is_some(), reverse) {
                    (false, false) => "SELECT key, value FROM kv WHERE object = ?1 AND key >= ?2 ORDER BY key LIMIT ?4",
                    (true, false) => "SELECT key, value FROM kv WHERE object = ?1 AND key >= ?2 AND key < ?3 ORDER BY key LIMIT ?4",
                    (false, true) => "SELECT key, value FROM kv WHERE object = ?1 AND key >= ?2 ORDER BY key DESC LIMIT ?4",
                    (true, true) => "SELECT key, value FROM kv WHERE object = ?1 AND key >= ?2 AND key < ?3 ORDER BY key DESC LIMIT ?4",
                };
                let mut stmt = conn.prepare_cached(sql).map_err(sql_error)?;
                // One more than the block: whether there is more.
                let mut pairs: Vec<WirePair> = stmt
                    .query_map(
                        params![object, start, end.clone().unwrap_or_default(), sql_int(take + 1)],
                        |r| Ok(WirePair { key: r.get(0)?, value: r.get(1)? }),
                    )
                    .map_err(sql_error)?
                    .collect::<Result<_, _>>()
                    .map_err(sql_error)?;
                let mut more = pairs.len() as u64 > take && limit.is_none_or(|l| l > take);
                pairs.truncate(take as usize);
                let mut bytes = 0;
                if let Some(cut) = pairs.iter().position(|p| {
                    let over = bytes >= KV_BLOCK_BYTES;
                    bytes += p.key.len() + p.value.len();
                    over
                }) {
                    pairs.truncate(cut);
                    more = true;
                }
                tracing::debug!(
                    target: "dosim::storage_node",
                    "kv list {object} start={start:?} end={end:?} reverse={reverse} limit={limit:?} pairs={} more={more}",
                    pairs.len()
                );
                Ok(StorageReply::KvPairs { pairs, more })
            }
            StorageCall::KvGetAlarm { object, epoch } => {
                if let Some(fenced) = self.fenced(&conn, &object, epoch)? {
                    return Ok(fenced);
                }
                let alarm: Option<i64> = conn
                    .query_row("SELECT alarm FROM kv_objects WHERE object = ?1", params![object], |r| {
                        r.get(0)
                    })
                    .optional()
                    .map_err(sql_error)?
                    .flatten();
                Ok(StorageReply::KvAlarm(alarm))
            }
            StorageCall::KvStage { object, epoch, id, part, ops } => {
                if let Some(fenced) = self.fenced(&conn, &object, epoch)? {
                    return Ok(fenced);
                }
                let keys: usize = ops.iter().map(op_keys).sum();
                tracing::debug!(target: "dosim::storage_node", "kv stage {object} session={} n={} part={part} keys={keys}", id.session, id.n);
                self.staged.borrow_mut().entry((object, id)).or_default().insert(part, ops);
                Ok(StorageReply::KvStaged)
            }
            StorageCall::KvCommit { object, epoch, id, after, uncertain, parts, counted, ops } => self
                .kv_commit(&mut conn, KvCommit { object, epoch, id, after, uncertain, parts, counted, ops }),
            StorageCall::Open { object, epoch } => {
                let tx = conn.transaction().map_err(sql_error)?;
                let mut opened = false;
                let reply = match meta(&tx, &object)? {
                    None => {
                        tx.execute(
                            "INSERT INTO objects(object, epoch, version, page_size, size) VALUES (?1, ?2, 0, 0, 0)",
                            params![object, epoch],
                        )
                        .map_err(sql_error)?;
                        StorageReply::Opened { version: 0, page_size: 0, size: 0 }
                    }
                    Some(m) if self.fencing && epoch < m.epoch => StorageReply::Fenced { epoch: m.epoch },
                    Some(m) => {
                        if epoch > m.epoch {
                            tx.execute(
                                "UPDATE objects SET epoch = ?2 WHERE object = ?1",
                                params![object, epoch],
                            )
                            .map_err(sql_error)?;
                            opened = true;
                        }
                        StorageReply::Opened { version: m.version, page_size: m.page_size, size: m.size }
                    }
                };
                tx.commit().map_err(sql_error)?;
                // The commit history a single-activation check reads: only once the newer epoch is committed
                // (an open whose commit fails, on a disk error, fences nothing).
                if opened {
                    tracing::debug!(target: "dosim::storage_node", "opened {object} epoch={epoch}");
                }
                Ok(reply)
            }
            StorageCall::Fetch { object, epoch, from, max } => {
                let Some(m) = meta(&conn, &object)? else {
                    return Ok(StorageReply::Pages { pages: Vec::new(), more: false });
                };
                if self.fencing && epoch < m.epoch {
                    return Ok(StorageReply::Fenced { epoch: m.epoch });
                }
                let max = max.clamp(1, FETCH_PAGES_MAX);
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT number, data FROM pages WHERE object = ?1 AND number >= ?2 ORDER BY number LIMIT ?3",
                    )
                    .map_err(sql_error)?;
                let mut pages: Vec<WirePage> = stmt
                    .query_map(params![object, from, max + 1], |r| {
                        Ok(WirePage { number: r.get(0)?, data: r.get(1)? })
                    })
                    .map_err(sql_error)?
                    .collect::<Result<_, _>>()
                    .map_err(sql_error)?;
                let more = pages.len() > max as usize;
                pages.truncate(max as usize);
                Ok(StorageReply::Pages { pages, more })
            }
            StorageCall::Commit { object, epoch, base, page_size, pages, size } => {
                let tx = conn.transaction().map_err(sql_error)?;
                let Some(m) = meta(&tx, &object)? else {
                    return Err(Error::new(messages::internal_error(&format!(
                        "storage node: a commit to {object}, which was never opened"
                    ))));
                };
                if self.fencing && epoch < m.epoch {
                    return Ok(StorageReply::Fenced { epoch: m.epoch });
                }
                if self.fencing && epoch > m.epoch {
                    return Err(Error::new(messages::internal_error(&format!(
                        "storage node: a commit to {object} under epoch {epoch}, which never opened it"
                    ))));
                }
                if base != m.version {
                    return Ok(StorageReply::Conflict { version: m.version });
                }
                let mut end = m.size;
                for p in &pages {
                    tx.execute(
                        "INSERT OR REPLACE INTO pages(object, number, data) VALUES (?1, ?2, ?3)",
                        params![object, p.number, p.data],
                    )
                    .map_err(sql_error)?;
                    end = end.max(u64::from(p.number) * u64::from(page_size));
                }
                if let Some(s) = size {
                    let last = s / u64::from(page_size.max(1));
                    tx.execute(
                        "DELETE FROM pages WHERE object = ?1 AND number > ?2",
                        params![object, sql_int(last)],
                    )
                    .map_err(sql_error)?;
                    end = s;
                }
                let version = m.version + 1;
                tx.execute(
                    "UPDATE objects SET version = ?2, page_size = ?3, size = ?4 WHERE object = ?1",
                    params![object, sql_int(version), page_size, sql_int(end)],
                )
                .map_err(sql_error)?;
                tx.commit().map_err(sql_error)?;
                // The commit history a single-activation check reads: every applied commit, with its epoch.
                tracing::debug!(target: "dosim::storage_node", "applied {object} epoch={epoch} version={version}");
                Ok(StorageReply::Committed { version })
            }
        }
    }
}

/// A `KvCommit` call's fields.
struct KvCommit {
    object: String,
    epoch: i64,
    id: KvCommitId,
    after: Option<KvCommitId>,
    uncertain: Vec<u64>,
    parts: u32,
    counted: u32,
    ops: Vec<KvOp>,
}

/// What the node remembers of the last KV commit it applied to an object: its result, and the keys of its
/// counted deletes (a retry that supersedes it reports the counts it got).
#[derive(serde::Serialize, serde::Deserialize)]
struct LastCommit {
    result: KvResult,
    counted: Vec<Vec<String>>,
    delete_all: bool,
    alarm_delete_if: Option<i64>,
}

/// An operation's name, for the trace.
fn op_name(op: &KvOp) -> &'static str {
    match op {
        KvOp::DeleteAll => "delete-all",
        KvOp::CountedDelete { .. } => "counted-delete",
        KvOp::Delete { .. } => "delete",
        KvOp::Put { .. } => "put",
        KvOp::AlarmDeleteIf(_) => "alarm-delete-if",
        KvOp::SetAlarm(_) => "set-alarm",
    }
}

/// How many keys an operation names.
fn op_keys(op: &KvOp) -> usize {
    match op {
        KvOp::CountedDelete { keys, .. } | KvOp::Delete { keys } => keys.len(),
        KvOp::Put { pairs } => pairs.len(),
        KvOp::DeleteAll | KvOp::AlarmDeleteIf(_) | KvOp::SetAlarm(_) => 0,
    }
}

impl StorageNode {
    /// `Fenced` if a newer epoch opened the object (and the node fences).
    fn fenced(&self, conn: &Connection, object: &str, epoch: i64) -> Result<Option<StorageReply>, Error> {
        Ok(match meta(conn, object)? {
            Some(m) if self.fencing && epoch < m.epoch => Some(StorageReply::Fenced { epoch: m.epoch }),
            _ => None,
        })
    }

    fn kv_open(&self, conn: &mut Connection, object: &str, epoch: i64) -> Result<StorageReply, Error> {
        let tx = conn.transaction().map_err(sql_error)?;
        match meta(&tx, object)? {
            None => {
                tx.execute(
                    "INSERT INTO objects(object, epoch, version, page_size, size) VALUES (?1, ?2, 0, 0, 0)",
                    params![object, epoch],
                )
                .map_err(sql_error)?;
            }
            Some(m) if self.fencing && epoch < m.epoch => return Ok(StorageReply::Fenced { epoch: m.epoch }),
            Some(m) => {
                if epoch > m.epoch {
                    tx.execute("UPDATE objects SET epoch = ?2 WHERE object = ?1", params![object, epoch])
                        .map_err(sql_error)?;
                }
            }
        }
        tx.execute(
            "INSERT INTO kv_objects(object, sessions) VALUES (?1, 0) ON CONFLICT(object) DO NOTHING",
            params![object],
        )
        .map_err(sql_error)?;
        tx.execute("UPDATE kv_objects SET sessions = sessions + 1 WHERE object = ?1", params![object])
            .map_err(sql_error)?;
        let (session, last_session, last_n): (i64, Option<i64>, Option<i64>) = tx
            .query_row(
                "SELECT sessions, last_session, last_n FROM kv_objects WHERE object = ?1",
                params![object],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(sql_error)?;
        tx.commit().map_err(sql_error)?;
        // A new session: parts staged by earlier ones will never be committed.
        self.staged.borrow_mut().retain(|(o, _), _| o != object);
        tracing::debug!(target: "dosim::storage_node", "kv opened {object} epoch={epoch} session={session}");
        let last = last_session.zip(last_n).map(|(s, n)| KvCommitId { session: s as u64, n: n as u64 });
        Ok(StorageReply::KvOpened { session: session as u64, last })
    }

    fn kv_commit(&self, conn: &mut Connection, c: KvCommit) -> Result<StorageReply, Error> {
        let KvCommit { object, epoch, id, after, uncertain, parts, counted, ops } = c;
        let staged = {
            let mut staged = self.staged.borrow_mut();
            let mine = staged.remove(&(object.clone(), id));
            // Parts of this session's earlier commits will never be committed now.
            staged.retain(|(o, i), _| o != &object || i.session != id.session || i.n > id.n);
            mine.unwrap_or_default()
        };
        let tx = conn.transaction().map_err(sql_error)?;
        let Some(m) = meta(&tx, &object)? else {
            return Err(Error::new(messages::internal_error(&format!(
                "storage node: a KV commit to {object}, which was never opened"
            ))));
        };
        if self.fencing && epoch < m.epoch {
            return Ok(StorageReply::Fenced { epoch: m.epoch });
        }
        if self.fencing && epoch > m.epoch {
            return Err(Error::new(messages::internal_error(&format!(
                "storage node: a KV commit to {object} under epoch {epoch}, which never opened it"
            ))));
        }
        let (last_session, last_n, last_commit): (Option<i64>, Option<i64>, Option<Vec<u8>>) = tx
            .query_row(
                "SELECT last_session, last_n, last_commit FROM kv_objects WHERE object = ?1",
                params![object],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(sql_error)?
            .unwrap_or((None, None, None));
        let last = last_session.zip(last_n).map(|(s, n)| KvCommitId { session: s as u64, n: n as u64 });
        let last_commit: Option<LastCommit> = last_commit.and_then(|b| wire::decode(&b, "last commit").ok());
        if last == Some(id) {
            // Applied already: its answer again.
            let result = last_commit.map(|l| l.result).unwrap_or_default();
            return Ok(StorageReply::KvCommitted { version: m.version, result });
        }
        let follows_uncertain =
            self.retries && last.is_some_and(|l| l.session == id.session && uncertain.contains(&l.n));
        if last != after && !follows_uncertain {
            return Ok(StorageReply::Conflict { version: m.version });
        }
        if (0..parts).any(|p| !staged.contains_key(&p)) {
            return Ok(StorageReply::KvPartsMissing);
        }
        let all: Vec<KvOp> = staged.into_values().flatten().chain(ops).collect();
        let shape: Vec<String> = all.iter().map(|op| format!("{}:{}", op_name(op), op_keys(op))).collect();
        let mut result = KvResult { counts: vec![0; counted as usize], ..KvResult::default() };
        let mut counted_keys: Vec<Vec<String>> = vec![Vec::new(); counted as usize];
        let mut delete_all = false;
        let mut alarm_delete_if = None;
        for op in &all {
            match op {
                KvOp::DeleteAll => {
                    delete_all = true;
                    let n =
                        tx.execute("DELETE FROM kv WHERE object = ?1", params![object]).map_err(sql_error)?;
                    result.deleted_all += n as u64;
                }
                KvOp::CountedDelete { index, keys } => {
                    let i = *index as usize;
                    if i >= result.counts.len() {
                        return Err(Error::new(messages::internal_error(
                            "storage node: a counted delete out of range",
                        )));
                    }
                    for k in keys {
                        let n = tx
                            .execute("DELETE FROM kv WHERE object = ?1 AND key = ?2", params![object, k])
                            .map_err(sql_error)?;
                        result.counts[i] += n as u64;
                    }
                    counted_keys[i].extend(keys.iter().cloned());
                }
                KvOp::Delete { keys } => {
                    for k in keys {
                        tx.execute("DELETE FROM kv WHERE object = ?1 AND key = ?2", params![object, k])
                            .map_err(sql_error)?;
                    }
                }
                KvOp::Put { pairs } => {
                    for p in pairs {
                        tx.execute(
                            "INSERT OR REPLACE INTO kv(object, key, value) VALUES (?1, ?2, ?3)",
                            params![object, p.key, p.value],
                        )
                        .map_err(sql_error)?;
                    }
                }
                KvOp::AlarmDeleteIf(t) => {
                    alarm_delete_if = Some(*t);
                    let n = tx
                        .execute(
                            "UPDATE kv_objects SET alarm = NULL WHERE object = ?1 AND alarm = ?2",
                            params![object, t],
                        )
                        .map_err(sql_error)?;
                    result.alarm_deleted = n > 0;
                }
                KvOp::SetAlarm(t) => {
                    tx.execute("UPDATE kv_objects SET alarm = ?2 WHERE object = ?1", params![object, t])
                        .map_err(sql_error)?;
                }
            }
        }
        if follows_uncertain {
            // This commit supersedes the caller's earlier one, whose answer it never got, and which applied:
            // what that one deleted and counted is reported as this one's.
            if let Some(prev) = &last_commit {
                inherit(&mut result, &counted_keys, delete_all, alarm_delete_if, prev);
            }
        }
        let version = m.version + 1;
        tx.execute("UPDATE objects SET version = ?2 WHERE object = ?1", params![object, sql_int(version)])
            .map_err(sql_error)?;
        let remembered = wire::encode(&LastCommit {
            result: result.clone(),
            counted: counted_keys,
            delete_all,
            alarm_delete_if,
        });
        tx.execute(
            "UPDATE kv_objects SET last_session = ?2, last_n = ?3, last_commit = ?4 WHERE object = ?1",
            params![object, sql_int(id.session), sql_int(id.n), remembered],
        )
        .map_err(sql_error)?;
        tx.commit().map_err(sql_error)?;
        // The commit history a single-activation check reads: every applied commit, with its epoch.
        tracing::debug!(target: "dosim::storage_node", "applied {object} epoch={epoch} version={version}");
        tracing::debug!(
            target: "dosim::storage_node",
            "kv commit {object} session={} n={} parts={} ops={}",
            id.session,
            id.n,
            parts + 1,
            shape.join(",")
        );
        Ok(StorageReply::KvCommitted { version, result })
    }
}

/// Takes over what `prev` (an applied commit that this one repeats and extends) counted: its counted
/// deletes are matched in order by their keys (a retry keeps them in order and appends new ones).
fn inherit(
    result: &mut KvResult,
    counted: &[Vec<String>],
    delete_all: bool,
    alarm_delete_if: Option<i64>,
    prev: &LastCommit,
) {
    let mut p = 0;
    for (i, keys) in counted.iter().enumerate() {
        if let Some(j) = prev.counted[p..].iter().position(|k| k == keys) {
            result.counts[i] = prev.result.counts[p + j];
            p += j + 1;
        }
    }
    if delete_all && prev.delete_all {
        result.deleted_all = prev.result.deleted_all;
    }
    if alarm_delete_if.is_some() && alarm_delete_if == prev.alarm_delete_if {
        result.alarm_deleted = prev.result.alarm_deleted;
    }
}

fn meta(conn: &Connection, object: &str) -> Result<Option<Meta>, Error> {
    conn.query_row(
        "SELECT epoch, version, page_size, size FROM objects WHERE object = ?1",
        params![object],
        |r| {
            Ok(Meta {
                epoch: r.get(0)?,
                version: r.get::<_, i64>(1)? as u64,
                page_size: r.get(2)?,
                size: r.get::<_, i64>(3)? as u64,
            })
        },
    )
    .optional()
    .map_err(sql_error)
}
