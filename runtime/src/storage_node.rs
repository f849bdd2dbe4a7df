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
//! Every answer waits until what the node wrote is durable on its disk ([`DurabilityWait`]), so an
//! acknowledged commit survives the node's power cut, and a new owner never reads pages that a power cut
//! could still take back.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{messages, Error};
use crate::location::DatabaseLocation;
use crate::rpc::RpcNode;
use crate::wire::{self, StorageCall, StorageReply, WireError, WirePage};
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

/// A storage node serving the calls its [`RpcNode`] receives.
pub struct StorageNode {
    conn: RefCell<Connection>,
    durability: Arc<dyn DurabilityWait>,
    fencing: bool,
}

impl std::fmt::Debug for StorageNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StorageNode(fencing: {})", self.fencing)
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
        Self::start_with(location, durability, rpc, true)
    }

    /// [`StorageNode::start`] without fencing: calls of any epoch apply. Only for the negative controls of
    /// tests that show fencing is needed.
    pub fn start_without_fencing(
        location: &DatabaseLocation,
        durability: Arc<dyn DurabilityWait>,
        rpc: &Rc<RpcNode>,
    ) -> Result<Rc<StorageNode>, Error> {
        Self::start_with(location, durability, rpc, false)
    }

    fn start_with(
        location: &DatabaseLocation,
        durability: Arc<dyn DurabilityWait>,
        rpc: &Rc<RpcNode>,
        fencing: bool,
    ) -> Result<Rc<StorageNode>, Error> {
        let conn = location.open().map_err(|e| Error::new(e.to_string()).with_retryable())?;
        conn.execute_batch(SCHEMA).map_err(sql_error)?;
        let node = Rc::new(StorageNode { conn: RefCell::new(conn), durability, fencing });
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
            StorageCall::Open { object, epoch } => {
                let tx = conn.transaction().map_err(sql_error)?;
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
                            tracing::debug!(target: "dosim::storage_node", "opened {object} epoch={epoch}");
                        }
                        StorageReply::Opened { version: m.version, page_size: m.page_size, size: m.size }
                    }
                };
                tx.commit().map_err(sql_error)?;
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
