//! The runtime's world, simulated: where a [`Host`](dosim_runtime::Host) on a simulated node keeps its
//! databases (the node's `SimDisk`), reads its clock (the node's simulated wall clock, with its skew) and
//! draws its randomness (the run's `User` stream).

use std::sync::Arc;

use dosim_runtime::host::StorageProvider;
use dosim_runtime::id::ObjectId;
use dosim_runtime::state::Entropy;
use dosim_runtime::storage::gates::{DurabilityWait, Task};
use dosim_runtime::storage::pitr::Clock;
use dosim_runtime::storage::DatabaseLocation;
use dosim_runtime::Error;
use dosim_sim::Purpose;

/// Where every object database of a host lives on its node's disk: `do/<namespace>/<id>.db`.
const OBJECTS_DIR: &str = "do";
/// The host's alarm index on its node's disk.
const ALARM_INDEX_PATH: &str = "host/alarms.db";

/// Durability on the simulated disk: the latency the disk accumulated, slept off on the simulated clock.
#[derive(Debug, Default)]
pub struct SettleDisk;

impl DurabilityWait for SettleDisk {
    fn wait(&self) -> Task {
        Box::pin(dosim_sim::disk::settle())
    }
}

/// Object databases on the current node's `SimDisk`, through the simulation's SQLite VFS.
#[derive(Debug, Default)]
pub struct SimStorage;

/// A namespace uid as a path component: uids are `script:class:tag`, and `:` is kept out of paths.
fn dir_of(namespace_uid: &str) -> String {
    namespace_uid
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '.' })
        .collect()
}

impl StorageProvider for SimStorage {
    fn object_database(&self, namespace_uid: &str, id: &ObjectId) -> DatabaseLocation {
        dosim_sim::sqlite::register_vfs();
        DatabaseLocation::on_vfs(
            dosim_sim::sqlite::VFS_NAME,
            format!("{OBJECTS_DIR}/{}/{id}.db", dir_of(namespace_uid)),
        )
    }

    fn alarm_index(&self) -> DatabaseLocation {
        dosim_sim::sqlite::register_vfs();
        DatabaseLocation::on_vfs(dosim_sim::sqlite::VFS_NAME, ALARM_INDEX_PATH)
    }

    fn durability(&self) -> Arc<dyn DurabilityWait> {
        Arc::new(SettleDisk)
    }

    fn delete_namespace(&self, namespace_uid: &str) -> Result<(), Error> {
        let node = dosim_sim::current_node().ok_or_else(|| Error::new("delete_namespace: not on a node"))?;
        let prefix = format!("{OBJECTS_DIR}/{}/", dir_of(namespace_uid));
        for path in dosim_sim::disk::list(node).into_iter().filter(|p| p.starts_with(&prefix)) {
            dosim_sim::disk::delete(&path).map_err(|e| Error::new(format!("delete {path}: {e}")))?;
        }
        Ok(())
    }
}

/// The node's simulated wall clock.
#[derive(Debug, Default)]
pub struct SimClock;

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        i64::try_from(dosim_sim::unix_now().as_millis()).expect("simulated time fits in i64 ms")
    }
}

/// The run's `User` random stream.
#[derive(Debug, Default)]
pub struct SimEntropy;

impl Entropy for SimEntropy {
    fn fill(&self, buf: &mut [u8]) {
        dosim_sim::random(Purpose::User, |rng| rng.fill(buf));
    }
}

/// A host builder for `script` wired to the simulated world (storage, clock, entropy).
pub fn host_builder(script: &str) -> dosim_runtime::HostBuilder {
    dosim_runtime::Host::builder(script).storage(SimStorage).clock(Arc::new(SimClock)).entropy(SimEntropy)
}

/// Runs the future `f` makes as a local task on `node` (objects and hosts are not `Send`, so they live in
/// local tasks) and returns its output. Fails if the node is down or the task died with its node.
pub async fn on_node<F, Fut, T>(
    world: &dosim_sim::World,
    node: dosim_sim::NodeId,
    f: F,
) -> Result<T, dosim_sim::Failure>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    let handle = world
        .spawn_on(node, async move { madsim::task::spawn_local(f()).await })
        .map_err(|e| dosim_sim::Failure::new(format!("cannot run on {node}: {e}")))?;
    match handle.await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) | Err(e) => {
            Err(dosim_sim::Failure::new(format!("the task on {node} did not finish: {e}")))
        }
    }
}
