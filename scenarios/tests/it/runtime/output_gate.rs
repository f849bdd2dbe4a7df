//! The output gate (spec §1.4): a reply leaves only once every write confirmed before it is durable. Cut the
//! power the instant the client sees the reply, and the write is there. With `allow_unconfirmed` the reply
//! leaves first, and on the KV backend (remote storage, a flush that reaches it later) the write can be lost
//! though the client saw it confirmed: the documented premature confirmation.
//!
//! The host's disk makes an operation durable only once its latency has elapsed
//! ([`Durability::AfterLatency`]), and its syncs take 5–10 ms ([`SYNC_OUTLIVES_THE_TURN`]). SQLite's `COMMIT`
//! returns at once (it calls the disk synchronously), so the commit outlives the turn that made it: only the
//! output gate's durability wait stands between the reply and a commit still in flight on the disk. The
//! negative control removes that wait.

use std::sync::Arc;
use std::time::Duration;

use dosim_runtime::embed::{
    DatabaseLocation, DurabilityWait, DurableOnReturn, HostBuilder, StorageProvider, StoreLink,
};
use dosim_runtime::prelude::{Error, ObjectId};
use dosim_scenarios::objects::Probe;
use dosim_scenarios::sim_host::{host_builder, host_node, HostNode, SimClock, SimEntropy, SimStorage};
use dosim_sim::disk::{self, Durability};
use dosim_sim::{ensure, sim_test, DiskConfig, Failure, LatencyRange, Sim, World};

use crate::{kv_class, sqlite_class, HOST};

fn kv_probe() -> HostBuilder {
    host_builder("worker")
        .class::<Probe>("Probe")
        .binding("PROBE", "Probe")
        .migration(kv_class("v1", "Probe"))
}

fn sqlite_probe() -> HostBuilder {
    host_builder("worker")
        .class::<Probe>("Probe")
        .binding("PROBE", "Probe")
        .migration(sqlite_class("v1", "Probe"))
}

/// [`SimStorage`] with the durability wait removed: `COMMIT` counts as durable when it returns, as on a disk
/// with [`Durability::AtCall`]. The negative control of the output gate on the SQLite backend.
#[derive(Debug, Default)]
pub(crate) struct NoDurabilityWait;

impl StorageProvider for NoDurabilityWait {
    fn object_database(&self, namespace_uid: &str, id: &ObjectId) -> DatabaseLocation {
        SimStorage.object_database(namespace_uid, id)
    }

    fn alarm_index(&self) -> DatabaseLocation {
        SimStorage.alarm_index()
    }

    fn durability(&self) -> Arc<dyn DurabilityWait> {
        Arc::new(DurableOnReturn)
    }

    fn delete_namespace(&self, namespace_uid: &str) -> Result<(), Error> {
        SimStorage.delete_namespace(namespace_uid)
    }

    fn kv_link(&self) -> Option<Arc<dyn StoreLink>> {
        SimStorage.kv_link()
    }
}

/// [`sqlite_probe`] on a host whose output gate does not wait for the disk.
fn sqlite_probe_without_durability_wait() -> HostBuilder {
    dosim_runtime::embed::Host::builder("worker")
        .storage(NoDurabilityWait)
        .clock(Arc::new(SimClock))
        .entropy(SimEntropy)
        .class::<Probe>("Probe")
        .binding("PROBE", "Probe")
        .migration(sqlite_class("v1", "Probe"))
}

/// How long the host disk's syncs take: thousands of times the few microseconds of simulated time that pass
/// between a commit (inside the turn) and the client's receipt of the reply, so a commit nobody waits for is
/// still in flight when the power goes.
const SYNC_OUTLIVES_THE_TURN: LatencyRange =
    LatencyRange::new(Duration::from_millis(5), Duration::from_millis(10));

/// The host's disk: an operation is durable only once its latency has elapsed, and syncs are slow.
pub(crate) fn slow_sync_disk() -> DiskConfig {
    DiskConfig {
        durability: Durability::AfterLatency,
        sync_latency: SYNC_OUTLIVES_THE_TURN,
        ..DiskConfig::default()
    }
}

/// Puts `key = value` through the object; returns once the client has the reply (or the error).
async fn put(
    host: &HostNode,
    key: &str,
    value: i64,
    unconfirmed: bool,
) -> Result<Result<(), String>, Failure> {
    let key = key.to_string();
    host.run(move |env| async move {
        let stub = env.durable_object("PROBE").unwrap().get_by_name("p");
        stub.call::<_, ()>("put", &(key, value, unconfirmed)).await.map_err(|e| e.to_string())
    })
    .await
}

async fn get(host: &HostNode, key: &str) -> Result<Option<i64>, Failure> {
    let key = key.to_string();
    host.run(move |env| async move {
        let stub = env.durable_object("PROBE").unwrap().get_by_name("p");
        stub.call::<_, Option<i64>>("get", &key).await.expect("a read after restart succeeds")
    })
    .await
}

/// `rounds` of: put `k<i> = i`, cut the power the instant the reply arrives, restart, read `k<i>` back.
/// Returns how many acknowledged writes were lost.
async fn power_cut_after_each_reply(
    world: &World,
    host: &HostNode,
    rounds: i64,
    unconfirmed: bool,
) -> Result<i64, Failure> {
    let mut lost = 0;
    for i in 0..rounds {
        let key = format!("k{i}");
        let acked = put(host, &key, i, unconfirmed).await?;
        ensure!(acked.is_ok(), "round {i}: the put fails: {acked:?}");
        // No simulated time passes between the reply and the cut.
        world.power_cut(HOST).map_err(|e| Failure::new(e.to_string()))?;
        world.restart(HOST).map_err(|e| Failure::new(e.to_string()))?;
        if get(host, &key).await? != Some(i) {
            lost += 1;
        }
    }
    Ok(lost)
}

fn run(
    seed: dosim_sim::Seed,
    build: fn() -> HostBuilder,
    unconfirmed: bool,
) -> Result<dosim_sim::RunReport, dosim_sim::RunFailure> {
    let (node, host) = host_node(HOST, "host", build);
    Sim::builder().seed(seed).node(node).disk(slow_sync_disk()).build()?.run(move |world| async move {
        let lost = power_cut_after_each_reply(&world, &host, 8, unconfirmed).await?;
        dosim_sim::note("acknowledged writes lost", lost);
        if unconfirmed {
            ensure!(
                lost > 0,
                "allow_unconfirmed confirms before the flush reaches storage: some write is lost"
            );
        } else {
            ensure!(lost == 0, "{lost} confirmed writes were lost after their reply was seen");
        }
        Ok(())
    })
}

sim_test!(fn kv_backend_reply_waits_for_durability(seed) { run(seed, kv_probe, false) });

sim_test!(fn kv_backend_allow_unconfirmed_confirms_prematurely(seed) { run(seed, kv_probe, true) });

/// Eight rounds on the SQLite backend of: put (the turn's `COMMIT` issues the journal's and the database's
/// writes and syncs to the host's disk, where they stay in flight for 5–10 ms a sync), reply, and a power
/// cut of the host the instant the client has the reply. Returns the acknowledged writes lost, and the writes
/// the cuts caught in flight on the disk (the hop from SQLite to the platter).
fn sqlite_rounds(
    seed: dosim_sim::Seed,
    build: fn() -> HostBuilder,
    check: fn(i64, u64) -> Result<(), Failure>,
) -> Result<dosim_sim::RunReport, dosim_sim::RunFailure> {
    let (node, host) = host_node(HOST, "host", build);
    Sim::builder().seed(seed).node(node).disk(slow_sync_disk()).build()?.run(move |world| async move {
        let lost = power_cut_after_each_reply(&world, &host, 8, false).await?;
        let in_flight = disk::lost_in_flight(HOST);
        dosim_sim::note("acknowledged writes lost", lost);
        dosim_sim::note("writes in flight at the cuts", in_flight);
        check(lost, in_flight)
    })
}

// The power cut hits the host's disk between the reply's arrival and the next request. The output gate's
// durability wait (the disk's settle) holds the reply until the device has finished the commit, so the cut
// finds nothing in flight (0 writes) and every acknowledged write survives.
sim_test!(fn sqlite_backend_reply_waits_for_durability(seed) {
    sqlite_rounds(seed, sqlite_probe, |lost, in_flight| {
        ensure!(in_flight == 0, "the cuts caught {in_flight} writes in flight though each reply waited");
        ensure!(lost == 0, "{lost} confirmed writes were lost after their reply was seen");
        Ok(())
    })
});

// The negative control: the same rounds with the output gate's durability wait removed. The reply leaves
// while the commit is still in flight on the disk, the cut discards it, and acknowledged writes are lost.
sim_test!(fn sqlite_backend_reply_without_the_durability_wait_loses_acknowledged_writes(seed) {
    sqlite_rounds(seed, sqlite_probe_without_durability_wait, |lost, in_flight| {
        ensure!(in_flight > 0, "no cut landed while a commit was in flight: the control tests nothing");
        ensure!(lost > 0, "without the durability wait an acknowledged write is lost ({in_flight} in flight)");
        Ok(())
    })
});

/// `rounds` of: object `a` puts `k<i> = i` and then calls object `b`; the power is cut the instant `b` receives
/// the call; after a restart `a`'s write must be there. Returns how many were lost.
async fn power_cut_when_the_call_arrives(
    world: &World,
    host: &HostNode,
    rounds: i64,
    unconfirmed: bool,
) -> Result<i64, Failure> {
    let (tx, mut rx) = madsim_tokio::sync::mpsc::unbounded_channel();
    dosim_scenarios::objects::PINGS.with(|p| *p.borrow_mut() = Some(tx));
    let mut lost = 0;
    for i in 0..rounds {
        let key = format!("k{i}");
        let k = key.clone();
        let h = host.clone();
        let call = madsim::task::spawn(async move {
            h.run(move |env| async move {
                let a = env.durable_object("PROBE").unwrap().get_by_name("a");
                a.call::<_, ()>("put_then_call", &(k, i, unconfirmed, "b".to_string())).await
            })
            .await
        });
        let pinged = rx.recv().await;
        ensure!(pinged == Some(i), "round {i}: b was called with {pinged:?}");
        world.power_cut(HOST).map_err(|e| Failure::new(e.to_string()))?;
        let _ = call.await;
        world.restart(HOST).map_err(|e| Failure::new(e.to_string()))?;
        let stored = host
            .run(move |env| async move {
                let a = env.durable_object("PROBE").unwrap().get_by_name("a");
                a.call::<_, Option<i64>>("get", &key).await.expect("a read after restart succeeds")
            })
            .await?;
        if stored != Some(i) {
            lost += 1;
        }
    }
    Ok(lost)
}

fn run_call(seed: dosim_sim::Seed, unconfirmed: bool) -> Result<dosim_sim::RunReport, dosim_sim::RunFailure> {
    let (node, host) = host_node(HOST, "host", kv_probe);
    Sim::builder().seed(seed).node(node).disk(slow_sync_disk()).build()?.run(move |world| async move {
        let lost = power_cut_when_the_call_arrives(&world, &host, 6, unconfirmed).await?;
        dosim_sim::note("writes lost behind an outgoing call", lost);
        if unconfirmed {
            ensure!(lost > 0, "an unconfirmed write does not hold the call: some write is lost");
        } else {
            ensure!(lost == 0, "{lost} writes were lost though a call issued after them had arrived");
        }
        Ok(())
    })
}

sim_test!(fn an_outgoing_call_waits_for_earlier_writes(seed) { run_call(seed, false) });

sim_test!(fn an_outgoing_call_after_an_unconfirmed_write_leaves_at_once(seed) { run_call(seed, true) });
