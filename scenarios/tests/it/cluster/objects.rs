//! Objects on a cluster: a front's stubs reach each object on the one host that owns it, over the world's
//! fabric; an owner cut off from the directory is reset and its objects move to another host; a front cut off
//! from an owner gets `Network connection lost.` (retryable), and the object is reachable again after the
//! heal.
//!
//! Nodes: 0 the directory (simulated etcd), 1 the front, 2..=4 hosts. Faults, each counted: a partition of
//! one host from the directory (the host → directory hop), a partition of the front from one host (the front
//! → host hop).

use std::rc::Rc;
use std::time::Duration;

use dosim_runtime::embed::{ClusterRole, Directory, HostBuilder, LEASE_TTL_S};
use dosim_runtime::error::messages;
use dosim_runtime::prelude::*;
use dosim_scenarios::cluster::cluster_node;
use dosim_scenarios::cluster::etcd::{etcd_addr, etcd_node, EtcdCoordinator};
use dosim_scenarios::cluster::transport::{addr_of, CLUSTER_PORT};
use dosim_scenarios::objects::{Counter, Probe};
use dosim_scenarios::sim_host::{host_builder, HostNode};
use dosim_sim::{ensure, sim_test, Direction, FaultKind, NodeId, Sim};

use super::{increment, ETCD, FRONT, HOSTS};
use crate::sqlite_class;

const OBJECTS: usize = 8;
/// The namespace uid of the `Counter` class of script `worker`, created by migration tag `v1`: the key of
/// its objects' directory records.
const COUNTER_NS: &str = "worker:Counter:v1";

fn counter_script() -> HostBuilder {
    host_builder("worker")
        .class::<Counter>("Counter")
        .binding("COUNTER", "Counter")
        .migration(sqlite_class("v1", "Counter"))
}

struct Cluster {
    sim: Sim,
    front: HostNode,
    hosts: Vec<HostNode>,
}

fn cluster(seed: dosim_sim::Seed) -> Result<Cluster, dosim_sim::RunFailure> {
    let mut b = Sim::builder().seed(seed).node(etcd_node(ETCD, "etcd"));
    let (config, front) = cluster_node(FRONT, "front", ETCD, &[], ClusterRole::Front, counter_script);
    b = b.node(config);
    let mut hosts = Vec::new();
    for (i, node) in HOSTS.iter().enumerate() {
        let (config, host) =
            cluster_node(*node, &format!("host-{}", i + 1), ETCD, &[], ClusterRole::Host, counter_script);
        b = b.node(config);
        hosts.push(host);
    }
    Ok(Cluster { sim: b.build()?, front, hosts })
}

/// The host address the directory names as the owner of counter `name`, if any (asked from `from`).
async fn owner_of(host: &HostNode, name: &'static str) -> Result<Option<(String, i64)>, dosim_sim::Failure> {
    host.run(move |env| async move {
        let id = env.durable_object("COUNTER").unwrap().id_from_name(name);
        let directory = Directory::new(Rc::new(EtcdCoordinator::new(etcd_addr(ETCD))));
        directory.owner(COUNTER_NS, &id).await.unwrap().map(|o| (o.host, o.epoch))
    })
    .await
}

fn name(i: usize) -> &'static str {
    ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7"][i]
}

sim_test!(fn a_fronts_calls_reach_each_object_on_its_one_owner(seed) {
    let Cluster { sim, front, hosts } = cluster(seed)?;
    sim.run(move |_world| async move {
        // Give the hosts time to join.
        madsim::time::sleep(Duration::from_secs(3)).await;
        for round in 1..=3i64 {
            for i in 0..OBJECTS {
                let v = increment(&front, name(i)).await?;
                ensure!(v == Ok(round), "{}: round {round} answered {v:?}", name(i));
            }
        }
        let mut live = 0;
        for h in &hosts {
            live += h.run_on_host(|host| async move { host.live_instances() }).await?;
        }
        ensure!(live == OBJECTS, "one live instance per object across the hosts: {live}");
        let mut owners = std::collections::BTreeSet::new();
        for i in 0..OBJECTS {
            let (owner, _) = owner_of(&hosts[0], name(i)).await?.expect("every object has an owner");
            ensure!(HOSTS.iter().any(|n| addr_of(*n, CLUSTER_PORT) == owner), "the owner is a host: {owner}");
            owners.insert(owner);
        }
        ensure!(owners.len() > 1, "placement spreads {OBJECTS} objects over the hosts: {owners:?}");
        Ok(())
    })
});

sim_test!(fn an_owner_cut_off_from_the_directory_is_reset_and_its_object_moves(seed) {
    let Cluster { sim, front, hosts } = cluster(seed)?;
    let report = sim.run(move |world| async move {
        madsim::time::sleep(Duration::from_secs(3)).await;
        ensure!(increment(&front, "c0").await? == Ok(1), "the first increment");
        let (owner, epoch) = owner_of(&hosts[0], "c0").await?.expect("owned");
        let owner_node = *HOSTS.iter().find(|n| addr_of(**n, CLUSTER_PORT) == owner).expect("a host");
        let owner_host = &hosts[HOSTS.iter().position(|n| *n == owner_node).unwrap()];
        world.partition(&[owner_node], &[ETCD], Direction::Both)?;
        // Within the lease's TTL the cut-off owner stops believing in its lease and resets its instance.
        madsim::time::sleep(Duration::from_secs(LEASE_TTL_S as u64)).await;
        let live = owner_host.run_on_host(|host| async move { host.live_instances() }).await?;
        ensure!(live == 0, "the cut-off owner reset its instance: {live} live");
        // The front keeps calling; once the store expires the old lease, another host claims the object.
        let start = madsim::time::Instant::now();
        let moved = loop {
            match increment(&front, "c0").await? {
                Ok(v) => break v,
                Err(e) => {
                    ensure!(e.retryable(), "while the object moves, errors are retryable: {e:?}");
                    ensure!(start.elapsed() < Duration::from_secs(30), "the object never moved: {e:?}");
                    madsim::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        // Storage does not follow the object yet (the storage service is the next step): a new instance
        // starts from its new host's disk.
        ensure!(moved >= 1, "the moved object answers: {moved}");
        let (new_owner, new_epoch) = owner_of(&hosts[0], "c0").await?.expect("owned again");
        ensure!(new_owner != owner, "the object moved off the cut-off host {owner}");
        ensure!(new_epoch > epoch, "the new owner's epoch is larger: {epoch} then {new_epoch}");
        Ok(())
    })?;
    assert_eq!(report.faults.get(FaultKind::Partition), 1, "one partition: the owner from the directory ({seed})");
    Ok(report)
});

sim_test!(fn a_front_cut_off_from_the_owner_gets_network_connection_lost(seed) {
    let Cluster { sim, front, hosts } = cluster(seed)?;
    let report = sim.run(move |world| async move {
        madsim::time::sleep(Duration::from_secs(3)).await;
        ensure!(increment(&front, "c1").await? == Ok(1), "the first increment");
        let (owner, _) = owner_of(&hosts[0], "c1").await?.expect("owned");
        let owner_node = *HOSTS.iter().find(|n| addr_of(**n, CLUSTER_PORT) == owner).expect("a host");
        world.partition(&[FRONT], &[owner_node], Direction::Both)?;
        let e = increment(&front, "c1").await?.unwrap_err();
        ensure!(e.message() == messages::NETWORK_CONNECTION_LOST && e.retryable(), "{e:?}");
        world.heal();
        let v = increment(&front, "c1").await?;
        ensure!(v == Ok(2) || v == Ok(3), "after the heal the same object answers (the lost call may have run): {v:?}");
        Ok(())
    })?;
    assert_eq!(report.faults.get(FaultKind::Partition), 1, "one partition: the front from the owner ({seed})");
    Ok(report)
});

fn located(location: &'static str) -> impl Fn() -> HostBuilder + Send + Sync + 'static {
    move || counter_script().location(location)
}

// Location hints (spec §8) influence the first placement: hosts declare their locations, and objects whose
// stubs carry a hint are created on a host in that location; objects without one spread over every host.
sim_test!(fn a_location_hint_places_a_new_object_on_a_host_in_that_location(seed) {
    let mut b = Sim::builder().seed(seed).node(etcd_node(ETCD, "etcd"));
    let (config, front) = cluster_node(FRONT, "front", ETCD, &[], ClusterRole::Front, counter_script);
    b = b.node(config);
    let mut hosts = Vec::new();
    for (node, location) in HOSTS.iter().zip(["wnam", "weur", "apac"]) {
        let (config, host) = cluster_node(*node, location, ETCD, &[], ClusterRole::Host, located(location));
        b = b.node(config);
        hosts.push(host);
    }
    b.build()?.run(move |_world| async move {
        madsim::time::sleep(Duration::from_secs(3)).await;
        for i in 0..OBJECTS {
            let got = front
                .run(move |env| async move {
                    let options = StubOptions { location_hint: Some("weur".into()), ..StubOptions::default() };
                    let stub = env.durable_object("COUNTER").unwrap().get_by_name_with(name(i), &options)?;
                    stub.fetch(Request::get("/increment")).await?.text()
                })
                .await?;
            ensure!(got.as_deref() == Ok("1"), "{}: {got:?}", name(i));
        }
        let mut live = Vec::new();
        for h in &hosts {
            live.push(h.run_on_host(|host| async move { host.live_instances() }).await?);
        }
        ensure!(live == vec![0, OBJECTS, 0], "every hinted object is on the weur host: {live:?}");
        Ok(())
    })
});

// A host whose location is not a location hint's name does not build, with the spec's error for hints.
sim_test!(fn a_host_with_an_unknown_location_is_a_clear_error(seed) {
    let sim = Sim::builder().seed(seed).nodes(1).build()?;
    sim.run(|world| async move {
        let e = dosim_scenarios::sim_host::on_node(&world, NodeId(0), || async {
            counter_script().location("mars").build().map(|_| ()).unwrap_err()
        })
        .await?;
        ensure!(e.message() == messages::unknown_location_hint("mars"), "{e:?}");
        Ok(())
    })
});

fn probe_script() -> HostBuilder {
    host_builder("worker")
        .class::<Probe>("Probe")
        .binding("PROBE", "Probe")
        .migration(sqlite_class("v1", "Probe"))
}

// A stub in a cluster keeps its instance (spec §6.2): after `abort()` resets the object, the same stub keeps
// failing with the reset's error, and a new stub reaches a new instance with the committed data. Across the
// front → host hop, as on a lone host (`runtime::resets`).
sim_test!(fn a_reset_leaves_a_remote_stub_broken_and_a_new_stub_reaches_a_new_instance(seed) {
    let mut b = Sim::builder().seed(seed).node(etcd_node(ETCD, "etcd"));
    let (config, front) = cluster_node(FRONT, "front", ETCD, &[], ClusterRole::Front, probe_script);
    b = b.node(config);
    let mut hosts = Vec::new();
    for (i, node) in HOSTS.iter().enumerate() {
        let (config, host) =
            cluster_node(*node, &format!("host-{}", i + 1), ETCD, &[], ClusterRole::Host, probe_script);
        b = b.node(config);
        hosts.push(host);
    }
    b.build()?.run(move |_world| async move {
        let _hosts = hosts;
        madsim::time::sleep(Duration::from_secs(3)).await;
        let (first, again, fresh) = front
            .run(|env| async move {
                let ns = env.durable_object("PROBE").unwrap();
                let stub = ns.get_by_name("p");
                stub.call::<_, ()>("put", &("before".to_string(), 1i64, false)).await.unwrap();
                let first = stub.call::<_, ()>("write_then_abort", &Option::<String>::None).await.unwrap_err();
                let again = stub.call::<_, Option<i64>>("get", &"before".to_string()).await.unwrap_err();
                let fresh = ns.get_by_name("p").call::<_, Option<i64>>("get", &"before".to_string()).await;
                (first, again, fresh)
            })
            .await?;
        ensure!(first.message() == messages::ABORTED && first.durable_object_reset(), "abort's error: {first:?}");
        ensure!(again == first, "the stub stays broken with the same error: {again:?}");
        ensure!(fresh == Ok(Some(1)), "a new stub reaches a new instance, with the committed data: {fresh:?}");
        Ok(())
    })
});

// A reset the stub never saw (its host's lease lapsed while no call was in flight) still breaks it: its next
// call gets the reset's error from the host, while a new stub reaches the object on its new host.
sim_test!(fn a_stub_bound_to_a_superseded_instance_gets_its_reset_error(seed) {
    let Cluster { sim, front, hosts } = cluster(seed)?;
    let report = sim.run(move |world| async move {
        madsim::time::sleep(Duration::from_secs(3)).await;
        let (tx, rx) = madsim_tokio::sync::oneshot::channel::<()>();
        let (go, gone) = madsim_tokio::sync::oneshot::channel::<()>();
        let runner = front.clone();
        let bound = async move { runner.run(move |env| async move {
            let stub = env.durable_object("COUNTER").unwrap().get_by_name("c0");
            let first = stub.fetch(Request::get("/increment")).await.map(|_| ());
            let _ = tx.send(());
            let _ = gone.await;
            let after = stub.fetch(Request::get("/increment")).await.map(|_| ());
            let fresh = env.durable_object("COUNTER").unwrap().get_by_name("c0").fetch(Request::get("/")).await;
            (first, after, fresh.map(|r| r.status()))
        }).await };
        let bound = madsim::task::spawn(bound);
        let _ = rx.await;
        let (owner, _) = owner_of(&hosts[0], "c0").await?.expect("owned");
        let owner_node = *HOSTS.iter().find(|n| addr_of(**n, CLUSTER_PORT) == owner).expect("a host");
        world.partition(&[owner_node], &[ETCD], Direction::Both)?;
        madsim::time::sleep(Duration::from_secs(LEASE_TTL_S as u64 + 2)).await;
        let _ = go.send(());
        let (first, after, fresh) = bound.await.map_err(|e| dosim_sim::Failure::new(format!("{e}")))??;
        ensure!(first.is_ok(), "the first call: {first:?}");
        match after {
            Err(e) => ensure!(
                e.message() == messages::STORAGE_NO_LONGER_ACCESSIBLE && e.durable_object_reset(),
                "the bound stub gets its instance's reset: {e:?}"
            ),
            Ok(()) => return Err(dosim_sim::Failure::new("a stub bound to a reset instance reached another")),
        }
        ensure!(fresh == Ok(200), "a new stub reaches the object: {fresh:?}");
        Ok(())
    })?;
    assert_eq!(report.faults.get(FaultKind::Partition), 1, "one partition: the owner from the directory ({seed})");
    Ok(report)
});
