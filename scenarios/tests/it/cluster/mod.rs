//! The cluster under simulation: the directory on the simulated etcd, calls between nodes on the fabric.
//!
//! Most files here use one layout of nodes (the constants below) and share the helpers below.

use dosim_runtime::prelude::*;
use dosim_scenarios::sim_host::HostNode;
use dosim_sim::NodeId;

mod code_update;
mod directory;
mod kv;
mod network;
mod objects;
mod rpc;
mod storage;
mod websockets;

/// The directory (the simulated etcd).
pub(crate) const ETCD: NodeId = NodeId(0);
/// The front: the Worker that holds the bindings and stubs.
pub(crate) const FRONT: NodeId = NodeId(1);
/// The object hosts.
pub(crate) const HOSTS: [NodeId; 3] = [NodeId(2), NodeId(3), NodeId(4)];
/// The storage node (in the files that have one).
pub(crate) const STORAGE: NodeId = NodeId(5);

/// Increments counter `name` (binding `COUNTER`) through the front: the value it answered.
pub(crate) async fn increment(
    front: &HostNode,
    name: &'static str,
) -> Result<Result<i64, Error>, dosim_sim::Failure> {
    front
        .run(move |env| async move {
            let r = env
                .durable_object("COUNTER")
                .unwrap()
                .get_by_name(name)
                .fetch(Request::get("/increment"))
                .await?;
            Ok(r.text()?.parse::<i64>().expect("a number"))
        })
        .await
}

/// The host nodes that have a live instance right now (each object has at most one).
pub(crate) async fn live_on(hosts: &[HostNode]) -> Result<Vec<NodeId>, dosim_sim::Failure> {
    let mut on = Vec::new();
    for h in hosts {
        if h.run_on_host(|host| async move { host.live_instances() }).await? > 0 {
            on.push(h.node());
        }
    }
    Ok(on)
}
