//! The directory's store under simulation: madsim's simulated etcd (`madsim-etcd-client`), its server on a
//! node of the world, and [`EtcdCoordinator`], the runtime's [`Coordinator`] over its client.
//!
//! The simulated etcd talks over madsim's network, which the world's partitions, clogs and crashes cut
//! like its own fabric (but which neither loses, duplicates nor reorders). The etcd node models a
//! replicated etcd cluster: it is never crashed (its simulator keeps its data only in memory, so a crash
//! would reset revisions, which a real cluster never does); it is partitioned and clogged like any node.
//! madsim's "buggify" stays off: it could delay a request by seconds, past the lease its write names.

use std::net::SocketAddr;
use std::rc::Rc;

use dosim_runtime::embed::{CoordError, CoordFuture, CoordRecord, CoordTxn, Coordinator, Directory};
use madsim_etcd_client as etcd;

/// The port the simulated etcd listens on (etcd's client port).
pub const ETCD_PORT: u16 = 2379;

/// The address of the etcd server on `node`.
pub fn etcd_addr(node: dosim_sim::NodeId) -> SocketAddr {
    SocketAddr::new(dosim_sim::node_ip(node), ETCD_PORT)
}

/// A node named `name` that runs the simulated etcd server and, once it listens, initialises the
/// directory in it ([`Directory::init`]). At every boot (it is never crashed by the scenarios, see the
/// module docs) the server starts empty.
pub fn etcd_node(node: dosim_sim::NodeId, name: &str) -> dosim_sim::NodeConfig {
    dosim_sim::NodeConfig::new(name).program(move || async move {
        let addr = etcd_addr(node);
        // Detached on purpose: the server is the node's program; it runs until the node dies.
        drop(madsim::task::spawn(async move {
            if let Err(e) = etcd::SimServer::builder().serve(addr).await {
                tracing::error!(target: "dosim::scenario", "the etcd server stopped: {e}");
            }
        }));
        // A local task: the directory is `Rc`-based.
        let _ = madsim::task::spawn_local(async move {
            let directory = Directory::new(Rc::new(EtcdCoordinator::new(addr)));
            while let Err(e) = directory.init().await {
                tracing::debug!(target: "dosim::scenario", "directory init: {}", e.message());
                madsim::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            tracing::debug!(target: "dosim::scenario", "the directory is ready");
        })
        .await;
        std::future::pending::<()>().await;
    })
}

/// The runtime's [`Coordinator`] over madsim's simulated etcd client. Each call connects afresh (in the
/// simulator a connection is a local endpoint, and this way no connection outlives a partition or a crash).
#[derive(Clone, Debug)]
pub struct EtcdCoordinator {
    addr: SocketAddr,
}

/// An etcd error, as the runtime sees it: the server did not answer (or the connection broke), or it said
/// no.
fn coord_error(e: etcd::Error) -> CoordError {
    match &e {
        etcd::Error::IoError(_) => CoordError::Unavailable(e.to_string()),
        // The simulator's one transient status: `Unavailable`, "etcdserver: request timed out".
        etcd::Error::GRpcStatus(s) if s.message().contains("timed out") => {
            CoordError::Unavailable(e.to_string())
        }
        _ => CoordError::Rejected(e.to_string()),
    }
}

impl EtcdCoordinator {
    /// The etcd server at `addr`, called from the calling node.
    pub fn new(addr: SocketAddr) -> EtcdCoordinator {
        EtcdCoordinator { addr }
    }

    /// A client of the server, for tests that reach past the runtime's subset of the API.
    pub async fn client(&self) -> Result<etcd::Client, CoordError> {
        etcd::Client::connect([self.addr.to_string()], None).await.map_err(coord_error)
    }
}

fn record(kv: &etcd::KeyValue) -> CoordRecord {
    CoordRecord { value: kv.value().to_vec(), mod_revision: kv.mod_revision() }
}

fn put_options(lease: Option<i64>) -> Option<etcd::PutOptions> {
    lease.map(|l| etcd::PutOptions::new().with_lease(l))
}

impl Coordinator for EtcdCoordinator {
    fn grant_lease(&self, ttl_s: i64) -> CoordFuture<i64> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?.lease_client();
            Ok(c.grant(ttl_s, None).await.map_err(coord_error)?.id())
        })
    }

    fn keep_alive(&self, lease: i64) -> CoordFuture<i64> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?.lease_client();
            let (mut keeper, mut stream) = c.keep_alive(lease).await.map_err(coord_error)?;
            // `keep_alive` made one round already; its answer is the stream's first message, taken inside.
            // One more round gives the TTL now.
            keeper.keep_alive().await.map_err(coord_error)?;
            match stream.message().await.map_err(coord_error)? {
                Some(r) => Ok(r.ttl()),
                None => Err(CoordError::Unavailable("the keep-alive stream ended".into())),
            }
        })
    }

    fn revoke(&self, lease: i64) -> CoordFuture<()> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?.lease_client();
            c.revoke(lease).await.map_err(coord_error)?;
            Ok(())
        })
    }

    fn get(&self, key: String) -> CoordFuture<Option<CoordRecord>> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?.kv_client();
            let r = c.get(key, None).await.map_err(coord_error)?;
            Ok(r.kvs().first().map(record))
        })
    }

    fn list(&self, prefix: String) -> CoordFuture<Vec<(String, CoordRecord)>> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?.kv_client();
            let r = c.get(prefix, Some(etcd::GetOptions::new().with_prefix())).await.map_err(coord_error)?;
            let mut out: Vec<(String, CoordRecord)> = r
                .kvs()
                .iter()
                .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), record(kv)))
                .collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(out)
        })
    }

    fn put(&self, key: String, value: Vec<u8>, lease: Option<i64>) -> CoordFuture<i64> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?.kv_client();
            let r = c.put(key, value, put_options(lease)).await.map_err(coord_error)?;
            Ok(r.header().map(|h| h.revision()).unwrap_or_default())
        })
    }

    fn txn(&self, txn: CoordTxn) -> CoordFuture<Option<i64>> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?.kv_client();
            let compares: Vec<etcd::Compare> = txn
                .if_equal
                .into_iter()
                .map(|(k, v)| etcd::Compare::value(k, etcd::CompareOp::Equal, v))
                .collect();
            let mut ops: Vec<etcd::TxnOp> = txn
                .puts
                .into_iter()
                .map(|(k, v, lease)| etcd::TxnOp::put(k, v, put_options(lease)))
                .collect();
            ops.extend(txn.deletes.into_iter().map(|k| etcd::TxnOp::delete(k, None)));
            let r = c.txn(etcd::Txn::new().when(compares).and_then(ops)).await.map_err(coord_error)?;
            Ok(r.succeeded().then(|| r.header().map(|h| h.revision()).unwrap_or_default()))
        })
    }
}
