//! The simulated cluster: the directory's coordination store (madsim's simulated etcd, on a node of its
//! own), and the adapters that point the runtime's cluster traits at it.

pub mod etcd;
pub mod transport;

use std::rc::Rc;

use std::sync::Arc;

use dosim_runtime::embed::{
    ClusterRole, DatabaseLocation, DurabilityWait, HostBuilder, RpcNode, StorageNode,
};
use dosim_sim::{NodeId, Purpose};

use crate::sim_host::{host_node, HostNode, SettleDisk};

/// A node named `name` whose program builds, at every boot, the host `build` gives, as a member of the
/// cluster whose directory runs on `etcd`: its calls go over the world's fabric (port
/// [`transport::CLUSTER_PORT`]), and as a [`ClusterRole::Host`] it joins the directory and serves objects,
/// keeping their databases on the `storage` nodes (see [`storage_node`]; none: on its own disk).
pub fn cluster_node(
    node: NodeId,
    name: &str,
    etcd: NodeId,
    storage: &[NodeId],
    role: ClusterRole,
    build: impl Fn() -> HostBuilder + Send + Sync + 'static,
) -> (dosim_sim::NodeConfig, HostNode) {
    host_node(node, name, in_cluster(etcd, storage, role, true, build))
}

/// [`cluster_node`] whose calls are not deduplicated (`RpcNode::start_at_least_once`): a duplicated request
/// runs twice. Only for the negative controls of tests that show deduplication is needed.
pub fn cluster_node_without_dedup(
    node: NodeId,
    name: &str,
    etcd: NodeId,
    storage: &[NodeId],
    role: ClusterRole,
    build: impl Fn() -> HostBuilder + Send + Sync + 'static,
) -> (dosim_sim::NodeConfig, HostNode) {
    host_node(node, name, in_cluster(etcd, storage, role, false, build))
}

/// `build`'s host as a member of the cluster (see [`cluster_node`]), with fresh links at every call (a boot).
fn in_cluster(
    etcd: NodeId,
    storage: &[NodeId],
    role: ClusterRole,
    dedup: bool,
    build: impl Fn() -> HostBuilder + Send + Sync + 'static,
) -> impl Fn() -> HostBuilder + Send + Sync + 'static {
    let storage: Vec<String> =
        storage.iter().map(|n| transport::addr_of(*n, transport::CLUSTER_PORT)).collect();
    move || {
        let transport =
            transport::SimTransport::bind(transport::CLUSTER_PORT).expect("the cluster port is free at boot");
        // A fresh incarnation at every boot: a restarted node is a new client to the others.
        let incarnation = dosim_sim::random(Purpose::Network, |r| r.next_u64());
        let rpc = if dedup {
            RpcNode::start(Rc::new(transport), incarnation)
        } else {
            RpcNode::start_at_least_once(Rc::new(transport), incarnation)
        };
        build()
            .cluster(rpc, Rc::new(etcd::EtcdCoordinator::new(etcd::etcd_addr(etcd))), role)
            .storage_nodes(storage.clone())
    }
}

/// A code update of a cluster node made by [`cluster_node`]: its host is replaced by one running `build`'s
/// code, on the same cluster links (see [`HostNode::update_code`]); later boots run it too.
pub async fn update_cluster_code(
    host: &HostNode,
    etcd: NodeId,
    storage: &[NodeId],
    role: ClusterRole,
    build: fn() -> HostBuilder,
) -> Result<(), dosim_sim::Failure> {
    host.update_code(in_cluster(etcd, storage, role, true, build), move |old| build().cluster_of(old)).await
}

/// [`update_cluster_code`] with a build closure (a test kit's script, which is not a `fn`).
pub async fn update_cluster_code_with(
    host: &HostNode,
    etcd: NodeId,
    storage: &[NodeId],
    role: ClusterRole,
    build: Arc<dyn Fn() -> HostBuilder + Send + Sync>,
) -> Result<(), dosim_sim::Failure> {
    let boot = build.clone();
    host.update_code(in_cluster(etcd, storage, role, true, move || boot()), move |old| {
        build().cluster_of(old)
    })
    .await
}

/// [`update_cluster_code`], resetting the old instances with `reason` (see [`HostNode::replace_host`]).
pub async fn replace_cluster_host(
    host: &HostNode,
    etcd: NodeId,
    storage: &[NodeId],
    role: ClusterRole,
    build: fn() -> HostBuilder,
    reason: dosim_runtime::error::Error,
) -> Result<(), dosim_sim::Failure> {
    host.replace_host(
        in_cluster(etcd, storage, role, true, build),
        move |old| build().cluster_of(old),
        reason,
    )
    .await
}

/// Where a storage node keeps its pages on its disk.
pub const STORAGE_NODE_DB: &str = "storage/pages.db";

/// A node named `name` running a storage node ([`StorageNode`]) on its own disk at every boot, serving on
/// [`transport::CLUSTER_PORT`]. With `fencing` off it is the negative control of the fencing tests.
pub fn storage_node(name: &str, fencing: bool) -> dosim_sim::NodeConfig {
    storage_node_with(name, StorageNodeKind { fencing, retries: true }, None)
}

/// What a storage node of [`storage_node_with`] does; both on is the real node, each off the negative
/// control of the tests that show it is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageNodeKind {
    /// It fences older epochs ([`StorageNode::start_without_fencing`]).
    pub fencing: bool,
    /// It recognises a KV commit's retry after a lost answer ([`StorageNode::start_without_retries`]).
    pub retries: bool,
}

/// Decides, for each message a node sends (its encoded bytes), whether the network loses it: a fault aimed
/// at one message (e.g. "the second block of a read"), which the world's random faults cannot aim.
pub type SendFilter = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// A storage node of `kind` (see [`storage_node`]) whose sends pass `lose` first: a message it says is lost
/// is never sent.
pub fn storage_node_with(
    name: &str,
    kind: StorageNodeKind,
    lose: Option<SendFilter>,
) -> dosim_sim::NodeConfig {
    dosim_sim::NodeConfig::new(name).program(move || {
        let lose = lose.clone();
        async move {
            let serve = madsim::task::spawn_local(async move {
                dosim_sim::sqlite::register_vfs();
                let location = DatabaseLocation::on_vfs(dosim_sim::sqlite::VFS_NAME, STORAGE_NODE_DB);
                let transport =
                    transport::SimTransport::bind(transport::CLUSTER_PORT).expect("the port is free at boot");
                let incarnation = dosim_sim::random(Purpose::Network, |r| r.next_u64());
                let transport: Rc<dyn dosim_runtime::embed::Transport> = match lose {
                    Some(lose) => Rc::new(transport::Lossy { inner: transport, lose }),
                    None => Rc::new(transport),
                };
                let rpc = RpcNode::start(transport, incarnation);
                let durability: Arc<dyn DurabilityWait> = Arc::new(SettleDisk);
                // The disk may fail at boot (an injected I/O error while SQLite recovers its journal): retry.
                let node = loop {
                    let started = match kind {
                        StorageNodeKind { fencing: true, retries: true } => {
                            StorageNode::start(&location, durability.clone(), &rpc)
                        }
                        StorageNodeKind { fencing: false, .. } => {
                            StorageNode::start_without_fencing(&location, durability.clone(), &rpc)
                        }
                        StorageNodeKind { retries: false, .. } => {
                            StorageNode::start_without_retries(&location, durability.clone(), &rpc)
                        }
                    };
                    match started {
                        Ok(node) => break node,
                        Err(e) => {
                            tracing::debug!(target: "dosim::scenario", "storage node start: {}", e.message());
                            madsim::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    }
                };
                std::future::pending::<()>().await;
                drop((node, rpc));
            });
            let _ = serve.await;
        }
    })
}
