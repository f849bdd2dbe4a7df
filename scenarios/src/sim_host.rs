//! The runtime's world, simulated: where a [`Host`](dosim_runtime::embed::Host) on a simulated node keeps its
//! databases (the node's `SimDisk`), reads its clock (the node's simulated wall clock, with its skew) and
//! draws its randomness (the run's `User` stream).

use std::rc::Rc;
use std::sync::Arc;

use dosim_runtime::embed::Clock;
use dosim_runtime::embed::DatabaseLocation;
use dosim_runtime::embed::Entropy;
use dosim_runtime::embed::StorageProvider;
use dosim_runtime::embed::StoreLink;
use dosim_runtime::embed::{DurabilityWait, Task};
use dosim_runtime::error::Error;
use dosim_runtime::prelude::ObjectId;
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

    fn list_objects(&self, namespace_uid: &str) -> Result<Vec<String>, Error> {
        let node = dosim_sim::current_node().ok_or_else(|| Error::new("list_objects: not on a node"))?;
        let prefix = format!("{OBJECTS_DIR}/{}/", dir_of(namespace_uid));
        // `<id>.db` directly under the namespace's directory; its journal and WAL files are not objects.
        let ids = dosim_sim::disk::list(node)
            .into_iter()
            .filter_map(|p| p.strip_prefix(&prefix)?.strip_suffix(".db").map(str::to_string))
            .filter(|id| !id.contains('/'))
            .collect();
        Ok(ids)
    }

    fn kv_link(&self) -> Option<Arc<dyn StoreLink>> {
        Some(Arc::new(SimStoreLink))
    }
}

/// How long a request from a KV-backend object takes to reach its storage (Cloudflare's is a remote
/// service): drawn per request from the run's `Disk` stream.
pub const KV_STORE_LATENCY: (std::time::Duration, std::time::Duration) =
    (std::time::Duration::from_millis(1), std::time::Duration::from_millis(4));

/// The simulated way to KV storage: a sleep of [`KV_STORE_LATENCY`].
#[derive(Debug, Default)]
pub struct SimStoreLink;

impl StoreLink for SimStoreLink {
    fn travel(&self) -> Task {
        let (lo, hi) = KV_STORE_LATENCY;
        let delay = dosim_sim::random(Purpose::Disk, |rng| rng.duration_between(lo, hi));
        Box::pin(madsim::time::sleep(delay))
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
pub fn host_builder(script: &str) -> dosim_runtime::embed::HostBuilder {
    dosim_runtime::embed::Host::builder(script)
        .storage(SimStorage)
        .clock(Arc::new(SimClock))
        .entropy(SimEntropy)
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

/// Work the controller sends to a host node: it runs as a local task there, with the host's [`Env`].
type Command = Box<
    dyn FnOnce(Rc<dosim_runtime::embed::Host>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>
        + Send,
>;

/// How a host node builds its host at boot.
type BuildFn = Arc<dyn Fn() -> dosim_runtime::embed::HostBuilder + Send + Sync>;

/// How a host node's successor host is built from the host it replaces (a code update).
type SuccessorFn = Box<dyn FnOnce(&dosim_runtime::embed::Host) -> dosim_runtime::embed::HostBuilder + Send>;

/// What the controller sends a host node.
enum Control {
    /// Run work on the current host.
    Run(Command),
    /// A code update: shut the current host down with the spec's reset, start its successor, and boot with
    /// `boot` from now on.
    Update {
        boot: BuildFn,
        successor: SuccessorFn,
        /// What the old instances are reset with.
        reason: dosim_runtime::error::Error,
        done: madsim_tokio::sync::oneshot::Sender<Result<(), String>>,
    },
}

/// How often a host node retries starting its host after a disk error, before it gives up.
const HOST_START_ATTEMPTS_MAX: u32 = 100;

/// Builds the host, retrying while the disk fails (an injected I/O error while the alarm index opens: the
/// runtime flags such errors `retryable`).
///
/// # Panics
/// At once, with the runtime's message, on an error that is not retryable: a misconfiguration (a class bound
/// without a migration, two hosts given one storage, …) that no retry cures. And if a retryable error persists
/// after [`HOST_START_ATTEMPTS_MAX`] attempts: then it is not the disk.
async fn start_host(build: &dyn Fn() -> dosim_runtime::embed::HostBuilder) -> dosim_runtime::embed::Host {
    let mut attempt = 0;
    loop {
        match build().build() {
            Ok(host) => return host,
            Err(e) if !e.retryable() => {
                panic!("the host cannot start: {} (a configuration error: not retried)", e.message())
            }
            Err(e) if attempt < HOST_START_ATTEMPTS_MAX => {
                attempt += 1;
                dosim_sim::sometimes("a host start failed and was retried");
                tracing::debug!(target: "dosim::scenario", "host start failed: {}", e.message());
                madsim::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => panic!("the host does not start after {attempt} attempts: {e}"),
        }
    }
}

/// The controller's handle on a node that runs a host (see [`host_node`]). Keep one alive for as long as
/// the host should run: when every handle has dropped, the node's command queue closes and its program drops
/// the host.
#[derive(Clone, Debug)]
pub struct HostNode {
    node: dosim_sim::NodeId,
    commands: madsim_tokio::sync::mpsc::UnboundedSender<Control>,
}

/// A node named `name` whose program builds a host with `build` at every boot (so after a crash or power
/// cut the host comes back on the same disk, with its alarm index) and runs the controller's commands.
pub fn host_node(
    node: dosim_sim::NodeId,
    name: &str,
    build: impl Fn() -> dosim_runtime::embed::HostBuilder + Send + Sync + 'static,
) -> (dosim_sim::NodeConfig, HostNode) {
    let (tx, rx) = madsim_tokio::sync::mpsc::unbounded_channel::<Control>();
    let rx = Arc::new(madsim_tokio::sync::Mutex::new(rx));
    // The build of the code deployed on the node: a code update replaces it for later boots.
    let deployed: Arc<std::sync::Mutex<BuildFn>> = Arc::new(std::sync::Mutex::new(Arc::new(build)));
    let config = dosim_sim::NodeConfig::new(name).program(move || {
        let rx = rx.clone();
        let deployed = deployed.clone();
        async move {
            let serve = madsim::task::spawn_local(async move {
                let build = deployed.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let mut host = Rc::new(start_host(&*build).await);
                // One incarnation at a time holds the queue; a dead one's guard dropped with its task.
                let mut commands = rx.lock().await;
                while let Some(control) = commands.recv().await {
                    match control {
                        Control::Run(command) => drop(madsim::task::spawn_local(command(host.clone()))),
                        Control::Update { boot, successor, reason, done } => {
                            *deployed.lock().unwrap_or_else(|e| e.into_inner()) = boot;
                            host.shut_down(reason).await;
                            match successor(&host).build() {
                                Ok(next) => {
                                    host = Rc::new(next);
                                    let _ = done.send(Ok(()));
                                }
                                Err(e) => {
                                    let _ = done.send(Err(e.message().to_string()));
                                }
                            }
                        }
                    }
                }
                drop(host);
            });
            let _ = serve.await;
        }
    });
    (config, HostNode { node, commands: tx })
}

impl HostNode {
    /// The node.
    pub fn node(&self) -> dosim_sim::NodeId {
        self.node
    }

    /// Runs `f` on the host node (as a local task, with the host's `Env`) and returns its output. Fails if
    /// the node dies before `f` finishes; waits for the node if it is down.
    pub async fn run<F, Fut, T>(&self, f: F) -> Result<T, dosim_sim::Failure>
    where
        F: FnOnce(dosim_runtime::prelude::Env) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + 'static,
        T: Send + 'static,
    {
        self.run_on_host(move |host| f(host.env())).await
    }

    /// [`HostNode::run`], with the host itself (to inject evictions and resets).
    pub async fn run_on_host<F, Fut, T>(&self, f: F) -> Result<T, dosim_sim::Failure>
    where
        F: FnOnce(Rc<dosim_runtime::embed::Host>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = madsim_tokio::sync::oneshot::channel();
        let command: Command = Box::new(move |host| {
            Box::pin(async move {
                let _ = reply.send(f(host).await);
            })
        });
        self.commands
            .send(Control::Run(command))
            .map_err(|_| dosim_sim::Failure::new("the host node's queue is closed"))?;
        answer
            .await
            .map_err(|_| dosim_sim::Failure::new(format!("{} died before the command finished", self.node)))
    }

    /// A code update of the node (spec §7): its host is shut down, every live instance reset with `Durable
    /// Object reset because its code was updated.`, and a successor built by `successor` from the old host
    /// (so it can keep its cluster links) takes its place; `boot` builds the host at later boots. Fails if
    /// the successor does not build, or the node dies meanwhile.
    pub async fn update_code(
        &self,
        boot: impl Fn() -> dosim_runtime::embed::HostBuilder + Send + Sync + 'static,
        successor: impl FnOnce(&dosim_runtime::embed::Host) -> dosim_runtime::embed::HostBuilder + Send + 'static,
    ) -> Result<(), dosim_sim::Failure> {
        let reason =
            dosim_runtime::error::Error::new(dosim_runtime::error::messages::CODE_UPDATED).with_reset();
        self.replace_host(boot, successor, reason).await
    }

    /// [`HostNode::update_code`] with another `reason` for the reset of the old instances (a negative
    /// control: a replacement that does not say it was a code update).
    pub async fn replace_host(
        &self,
        boot: impl Fn() -> dosim_runtime::embed::HostBuilder + Send + Sync + 'static,
        successor: impl FnOnce(&dosim_runtime::embed::Host) -> dosim_runtime::embed::HostBuilder + Send + 'static,
        reason: dosim_runtime::error::Error,
    ) -> Result<(), dosim_sim::Failure> {
        let (done, answer) = madsim_tokio::sync::oneshot::channel();
        self.commands
            .send(Control::Update { boot: Arc::new(boot), successor: Box::new(successor), reason, done })
            .map_err(|_| dosim_sim::Failure::new("the host node's queue is closed"))?;
        answer
            .await
            .map_err(|_| dosim_sim::Failure::new(format!("{} died during the code update", self.node)))?
            .map_err(|e| {
                dosim_sim::Failure::new(format!("the updated host on {} does not build: {e}", self.node))
            })
    }
}
