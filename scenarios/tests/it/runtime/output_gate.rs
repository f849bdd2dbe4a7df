//! The output gate (spec §1.4): a reply leaves only once every write confirmed before it is durable. Cut the
//! power the instant the client sees the reply, and the write is there. With `allow_unconfirmed` the reply
//! leaves first, and on the KV backend (remote storage, a flush that reaches it later) the write can be lost
//! though the client saw it confirmed: the documented premature confirmation.

use dosim_runtime::embed::HostBuilder;
use dosim_scenarios::objects::Probe;
use dosim_scenarios::sim_host::{host_builder, host_node, HostNode};
use dosim_sim::{ensure, sim_test, DiskConfig, Failure, Sim, World};

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
    Sim::builder().seed(seed).node(node).disk(DiskConfig::default()).build()?.run(move |world| async move {
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

sim_test!(fn sqlite_backend_reply_waits_for_durability(seed) { run(seed, sqlite_probe, false) });

sim_test!(fn kv_backend_allow_unconfirmed_confirms_prematurely(seed) { run(seed, kv_probe, true) });

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
    Sim::builder().seed(seed).node(node).disk(DiskConfig::default()).build()?.run(move |world| async move {
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
