//! The object runtime under simulation: a host on a node, its objects' databases on the node's `SimDisk`,
//! requests from client tasks. Seeds come from `sim_test!` (`DOSIM_SEED`, `DOSIM_SEEDS`); a failure prints its
//! replay command. Its modules name the helpers below as `crate::…`: the binary's root re-exports them.

mod alarms;
mod ids_and_migrations;
mod misconfiguration;
mod objects;
mod output_gate;
mod overload;
mod resets;
mod storage_gate;
mod test_hooks;
pub(crate) mod websockets;

use dosim_runtime::embed::Migration;
use dosim_sim::NodeId;

/// The node the host runs on.
pub(crate) const HOST: NodeId = NodeId(0);

/// A migration creating `class` on the SQLite backend.
pub(crate) fn sqlite_class(tag: &str, class: &str) -> Migration {
    Migration { tag: tag.into(), new_sqlite_classes: vec![class.into()], ..Migration::default() }
}

/// A migration creating `class` on the KV backend.
pub(crate) fn kv_class(tag: &str, class: &str) -> Migration {
    Migration { tag: tag.into(), new_classes: vec![class.into()], ..Migration::default() }
}
