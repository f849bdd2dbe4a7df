//! The runtime's SQLite storage inside a full simulation: an object's database on a node's `SimDisk`, commits
//! scheduled after the turn on madsim's executor, durability waited for on the simulated clock, and power cuts
//! from the world.
#![cfg(madsim)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dosim_runtime::storage::gates::{
    DurabilityWait, InputHold, OutputLock, OutputLockWaiter, Task, TurnHooks,
};
use dosim_runtime::storage::sqlite::{SqliteSettings, SqliteStorage};
use dosim_runtime::storage::{DatabaseLocation, Storage};
use dosim_runtime::Error;
use dosim_sim::{ensure, sim_test, DiskConfig, Failure, NodeConfig, NodeId, Sim};

/// Durability on the simulated disk: the latency its operations accumulated, slept off.
struct SettleDisk;

impl DurabilityWait for SettleDisk {
    fn wait(&self) -> Task {
        Box::pin(dosim_sim::disk::settle())
    }
}

/// The smallest event loop: a deferred task is spawned, so it runs once the current task yields (the end of
/// the turn); output locks are kept for the test to await.
#[derive(Default)]
struct SpawnTurns {
    locks: Mutex<Vec<OutputLockWaiter>>,
    /// A slow event loop: deferred tasks start this long after the turn.
    delay: Duration,
}

impl TurnHooks for SpawnTurns {
    fn after_turn(&self, task: Task) {
        let delay = self.delay;
        // Detached on purpose: a deferred storage task runs after the turn, as the runtime's event loop does.
        drop(madsim::task::spawn(async move {
            if !delay.is_zero() {
                madsim::time::sleep(delay).await;
            }
            task.await;
        }));
    }
    fn lock_output(&self) -> OutputLock {
        let (lock, waiter) = OutputLock::new();
        self.locks.lock().unwrap().push(waiter);
        lock
    }
    fn break_output(&self, error: Error) {
        panic!("unexpected gate break: {error}");
    }
    fn hold_input(&self) -> InputHold {
        InputHold::new(|| {})
    }
}

fn open(turns: Arc<SpawnTurns>) -> Storage {
    dosim_sim::sqlite::register_vfs();
    let location = DatabaseLocation::on_vfs(dosim_sim::sqlite::VFS_NAME, "object.db");
    Storage::sqlite(
        SqliteStorage::open(&location, turns, Arc::new(SettleDisk), SqliteSettings::default())
            .expect("opens"),
    )
}

/// One turn of 20 puts; returns the simulated time at the turn's end and when its output lock released.
async fn write_turn(first: u32) -> (Duration, Duration) {
    let turns = Arc::new(SpawnTurns::default());
    let storage = open(turns.clone());
    for i in first..first + 20 {
        storage.put(&format!("k{i:03}"), &i).await.unwrap();
    }
    let turn_end = madsim::time::Instant::now();
    let waiter = turns.locks.lock().unwrap().pop().expect("a confirmed write locked the output gate");
    waiter.wait().await.expect("the commit succeeds");
    let released = madsim::time::Instant::now();
    let start = madsim::time::Instant::now() - madsim::time::TimeHandle::current().elapsed();
    (turn_end - start, released - start)
}

async fn count_keys() -> usize {
    let storage = open(Arc::new(SpawnTurns::default()));
    let all: Vec<(String, u32)> = storage.list(&Default::default()).await.unwrap();
    all.len()
}

sim_test!(fn output_is_held_until_the_commit_is_durable_on_the_simulated_disk(seed) {
    Sim::builder().seed(seed).node(NodeConfig::new("object")).disk(DiskConfig::default()).build()?.run(
        |world| async move {
            let node = NodeId(0);
            let (turn_end, released) =
                world.spawn_on(node, write_turn(0))?.await.map_err(|e| Failure::new(e.to_string()))?;
            // The commit's fsyncs take simulated time (DiskConfig::default: 0.5–2 ms a sync), and the output
            // lock is released only after it.
            let min_sync = DiskConfig::default().sync_latency.min;
            ensure!(
                released >= turn_end + min_sync,
                "released at {released:?}, less than one sync ({min_sync:?}) after the turn ended at {turn_end:?}"
            );
            // The client saw the response: cut the power now; the turn is durable.
            world.power_cut(node)?;
            world.restart(node)?;
            let n = world.spawn_on(node, count_keys())?.await.map_err(|e| Failure::new(e.to_string()))?;
            ensure!(n == 20, "after a power cut following release, {n} of 20 keys survived");
            Ok(())
        },
    )
});

sim_test!(fn a_power_cut_before_the_commit_loses_the_whole_turn(seed) {
    use std::sync::atomic::{AtomicBool, Ordering};
    Sim::builder().seed(seed).node(NodeConfig::new("object")).disk(DiskConfig::default()).build()?.run(
        |world| async move {
            let node = NodeId(0);
            world.spawn_on(node, write_turn(0))?.await.map_err(|e| Failure::new(e.to_string()))?;
            // A second turn whose commit the (slow) event loop has not run yet when the power goes.
            let written = Arc::new(AtomicBool::new(false));
            let w = written.clone();
            world.spawn_on(node, async move {
                let turns = Arc::new(SpawnTurns { delay: Duration::from_secs(1), ..SpawnTurns::default() });
                let storage = open(turns);
                for i in 100..120u32 {
                    storage.put(&format!("k{i:03}"), &i).await.unwrap();
                }
                w.store(true, Ordering::SeqCst);
                std::future::pending::<()>().await;
            })?;
            while !written.load(Ordering::SeqCst) {
                world.sleep(Duration::from_millis(1)).await;
            }
            world.power_cut(node)?;
            world.restart(node)?;
            let n = world.spawn_on(node, count_keys())?.await.map_err(|e| Failure::new(e.to_string()))?;
            ensure!(n == 20, "the uncommitted turn left {} of its 20 keys behind", n.saturating_sub(20));
            Ok(())
        },
    )
});
