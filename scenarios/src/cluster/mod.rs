//! The simulated cluster: the directory's coordination store (madsim's simulated etcd, on a node of its
//! own), and the adapters that point the runtime's cluster traits at it.

pub mod etcd;
pub mod transport;

use std::rc::Rc;

use dosim_runtime::embed::{ClusterRole, HostBuilder, RpcNode};
use dosim_sim::{NodeId, Purpose};

use crate::sim_host::{host_node, HostNode};

/// A node named `name` whose program builds, at every boot, the host `build` gives, as a member of the
/// cluster whose directory runs on `etcd`: its calls go over the world's fabric (port
/// [`transport::CLUSTER_PORT`]), and as a [`ClusterRole::Host`] it joins the directory and serves objects.
pub fn cluster_node(
    node: NodeId,
    name: &str,
    etcd: NodeId,
    role: ClusterRole,
    build: impl Fn() -> HostBuilder + Send + Sync + 'static,
) -> (dosim_sim::NodeConfig, HostNode) {
    host_node(node, name, move || {
        let transport =
            transport::SimTransport::bind(transport::CLUSTER_PORT).expect("the cluster port is free at boot");
        // A fresh incarnation at every boot: a restarted node is a new client to the others.
        let incarnation = dosim_sim::random(Purpose::Network, |r| r.next_u64());
        let rpc = RpcNode::start(Rc::new(transport), incarnation);
        build().cluster(rpc, Rc::new(etcd::EtcdCoordinator::new(etcd::etcd_addr(etcd))), role)
    })
}
