//! A host's side of storage that survives it (docs/ARCHITECTURE.md, "The cluster"): opening an object at its
//! storage node under the owner's epoch, rebuilding the local replica from the node's pages, and shipping
//! each commit's pages to the node in commit order.
//!
//! The replica is an ordinary SQLite file on the host's disk, opened through the replica shim
//! (`storage/replica`), which captures what every commit writes. The storage node is the truth: every
//! activation rebuilds the replica from it, so whatever a crashed or reset instance left behind locally
//! (committed but never acknowledged) is gone.
//!
//! # Failures
//! A shipment the node refuses because a newer epoch opened the object (`Fenced`) breaks the replica with
//! `Durable Object storage is no longer accessible.` (retryable, reset): the instance was superseded. One it
//! does not answer within [`STORAGE_CALL_TIMEOUT`], or that fails, breaks it with the spec's internal storage
//! error (reset): the commit may or may not have applied, so nothing after it can be shipped. Either way the
//! instance resets, its output gate breaks, and the next activation rebuilds from the node.

pub(crate) mod kv;

use std::rc::Rc;
use std::time::Duration;

use madsim_tokio::sync::mpsc;

use crate::error::{messages, Error};
use crate::location::DatabaseLocation;
use crate::rpc::RpcNode;
use crate::storage::replica::{self, PageBatch, ShipQueue, Shipment};
use crate::wire::{self, StorageCall, StorageReply, WirePage};

/// How long a host waits for a storage node's answer.
pub(crate) const STORAGE_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How many pages a host asks for in one fetch.
const FETCH_PAGES: u32 = 64;

fn superseded() -> Error {
    Error::new(messages::STORAGE_NO_LONGER_ACCESSIBLE).with_retryable().with_reset()
}

fn storage_failed(detail: &str) -> Error {
    Error::new(messages::storage_write_internal(detail)).with_reset()
}

async fn call(rpc: &RpcNode, node: &str, call: &StorageCall) -> Result<StorageReply, Error> {
    let answer = rpc.call(node, wire::encode(call), STORAGE_CALL_TIMEOUT).await?;
    wire::decode(&answer, "storage reply")
}

/// The storage node an object's database lives on: the object's hash over the nodes.
pub(crate) fn node_of<'a>(nodes: &'a [String], object: &str) -> Option<&'a str> {
    if nodes.is_empty() {
        return None;
    }
    let h = object.bytes().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    Some(&nodes[(h % nodes.len() as u64) as usize])
}

/// Opens `object` at storage node `node` under `epoch`, rebuilds the replica at `location` (a location on
/// the replica shim) from the node's pages, and starts shipping: the queue a replica storage ships its
/// commits through.
pub(crate) async fn open(
    rpc: &Rc<RpcNode>,
    node: &str,
    object: &str,
    epoch: i64,
    location: &DatabaseLocation,
) -> Result<ShipQueue, Error> {
    let opened = call(rpc, node, &StorageCall::Open { object: object.to_string(), epoch }).await?;
    let (version, page_size, size) = match opened {
        StorageReply::Opened { version, page_size, size } => (version, page_size, size),
        StorageReply::Fenced { .. } => return Err(superseded()),
        StorageReply::Failed(e) => return Err(e.error()),
        other => return Err(storage_failed(&format!("storage node answered Open with {other:?}"))),
    };
    let mut image = vec![0u8; usize::try_from(size).expect("a database fits in memory")];
    let mut from = 1;
    loop {
        let fetch = StorageCall::Fetch { object: object.to_string(), epoch, from, max: FETCH_PAGES };
        let (pages, more) = match call(rpc, node, &fetch).await? {
            StorageReply::Pages { pages, more } => (pages, more),
            StorageReply::Fenced { .. } => return Err(superseded()),
            StorageReply::Failed(e) => return Err(e.error()),
            other => return Err(storage_failed(&format!("storage node answered Fetch with {other:?}"))),
        };
        for WirePage { number, data } in &pages {
            let at = (*number as usize - 1) * page_size as usize;
            if data.len() != page_size as usize || at + data.len() > image.len() {
                return Err(storage_failed(&format!("storage node sent a bad page {number} of {object}")));
            }
            image[at..at + data.len()].copy_from_slice(data);
            from = number + 1;
        }
        if !more || pages.is_empty() {
            break;
        }
    }
    restore(location, &image)
        .map_err(|e| storage_failed(&format!("rebuilding the replica of {object}: {e}")))?;
    let (ships, queue) = mpsc::unbounded_channel();
    // Detached on purpose: the shipper lives as long as the queue, which the replica storage holds; when it
    // closes (the instance ended), the shipper ends after the shipments already queued.
    drop(madsim_tokio::task::spawn_local(ship(
        rpc.clone(),
        node.to_string(),
        object.to_string(),
        epoch,
        version,
        queue,
    )));
    Ok(ships)
}

/// Makes the database at `location` hold exactly `image` (a whole database file; empty: no database).
fn restore(location: &DatabaseLocation, image: &[u8]) -> Result<(), String> {
    let mut source = rusqlite::Connection::open_in_memory().map_err(|e| e.to_string())?;
    if !image.is_empty() {
        source.deserialize_read_exact("main", image, image.len(), true).map_err(|e| e.to_string())?;
    }
    let mut target = location.open().map_err(|e| e.to_string())?;
    {
        let backup = rusqlite::backup::Backup::new(&source, &mut target).map_err(|e| e.to_string())?;
        match backup.step(-1).map_err(|e| e.to_string())? {
            rusqlite::backup::StepResult::Done => {}
            other => return Err(format!("the backup stopped at {other:?}")),
        }
    }
    // The rebuild's own writes are not a commit to ship.
    replica::take_changes(&target).map_err(|e| e.to_string())?;
    Ok(())
}

/// Ships the replica's commits, in order, until its queue closes.
async fn ship(
    rpc: Rc<RpcNode>,
    node: String,
    object: String,
    epoch: i64,
    mut version: u64,
    mut queue: mpsc::UnboundedReceiver<Shipment>,
) {
    let mut broken: Option<Error> = None;
    while let Some(Shipment { batch, done }) = queue.recv().await {
        if let Some(e) = &broken {
            let _ = done.send(Err(e.clone()));
            continue;
        }
        let outcome = match batch {
            Err(e) => Err(storage_failed(&format!("capturing a commit of {object}: {e}"))),
            Ok(batch) => commit(&rpc, &node, &object, epoch, version, batch).await,
        };
        match outcome {
            Ok(v) => {
                version = v;
                let _ = done.send(Ok(()));
            }
            Err(e) => {
                tracing::debug!(target: "dosim::runtime", "replica of {object} broke: {}", e.message());
                broken = Some(e.clone());
                let _ = done.send(Err(e));
            }
        }
    }
}

/// Ships one batch on top of `version`; the new version.
async fn commit(
    rpc: &RpcNode,
    node: &str,
    object: &str,
    epoch: i64,
    version: u64,
    batch: PageBatch,
) -> Result<u64, Error> {
    if batch.pages.is_empty() && batch.size.is_none() {
        return Ok(version);
    }
    let call_ = StorageCall::Commit {
        object: object.to_string(),
        epoch,
        base: version,
        page_size: batch.page_size,
        pages: batch.pages.into_iter().map(|(number, data)| WirePage { number, data }).collect(),
        size: batch.size,
    };
    match call(rpc, node, &call_).await {
        Ok(StorageReply::Committed { version }) => Ok(version),
        Ok(StorageReply::Fenced { .. }) => Err(superseded()),
        Ok(StorageReply::Conflict { version: at }) => {
            Err(storage_failed(&format!("commit of {object} on version {version}, but the node has {at}")))
        }
        Ok(StorageReply::Failed(e)) => Err(storage_failed(e.error().message())),
        Ok(other) => Err(storage_failed(&format!("storage node answered Commit with {other:?}"))),
        Err(e) => Err(storage_failed(&format!("no answer from the storage node: {}", e.message()))),
    }
}
