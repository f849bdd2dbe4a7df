//! Storage that survives its host (docs/ARCHITECTURE.md, "The cluster"): SQLite-backed objects keep their
//! databases on a storage node; a host runs a replica and ships each commit there before the commit is
//! confirmed.
//!
//! - Data follows its object: an owner cut off from the directory (the host → directory hop) is reset, and
//!   the object continues on another host from its last acknowledged value.
//! - No acknowledged write is lost when the owner crashes (the owner host's crash, mid-workload): every
//!   increment the front saw acknowledged is in every later value.
//! - Superseded: an owner paused past its lease (a pause of the owner host) comes back to find another host
//!   owning its object; its late write gets `Durable Object storage is no longer accessible.`, its reply is
//!   never released as a success, and the write never applies. Negative control: a storage node without
//!   fencing lets the late write apply, which the same check catches under some seeds.
//! - Single activation, as a history check over the storage node's opens and applied commits
//!   (`object_cluster::check_commit_history`): per object, no commit applies under an epoch older than one
//!   that had opened the object or committed to it.
//!
//! Nodes: 0 the directory, 1 the front, 2..=4 hosts, 5 the storage node.

use std::time::Duration;

use dosim_runtime::embed::{ClusterRole, HostBuilder, LEASE_TTL_S};
use dosim_runtime::error::messages;
use dosim_runtime::prelude::*;
use dosim_scenarios::cluster::etcd::etcd_node;
use dosim_scenarios::cluster::{cluster_node, storage_node};
use dosim_scenarios::object_cluster::check_commit_history;
use dosim_scenarios::objects::{Counter, Probe};
use dosim_scenarios::sim_host::{host_builder, HostNode};
use dosim_sim::{ensure, sim_test, Direction, FaultKind, RunReport, Sim};

use super::{increment, live_on, ETCD, FRONT, HOSTS, STORAGE};
use crate::sqlite_class;

fn script() -> HostBuilder {
    host_builder("worker")
        .class::<Counter>("Counter")
        .binding("COUNTER", "Counter")
        .class::<Probe>("Probe")
        .binding("PROBE", "Probe")
        .migration(dosim_runtime::embed::Migration {
            tag: "v1".into(),
            new_sqlite_classes: vec!["Counter".into(), "Probe".into()],
            ..Default::default()
        })
}

struct Cluster {
    sim: Sim,
    front: HostNode,
    hosts: Vec<HostNode>,
}

fn cluster(seed: dosim_sim::Seed, fencing: bool) -> Result<Cluster, dosim_sim::RunFailure> {
    let _ = sqlite_class;
    let mut b = Sim::builder().seed(seed).node(etcd_node(ETCD, "etcd"));
    let (config, front) = cluster_node(FRONT, "front", ETCD, &[STORAGE], ClusterRole::Front, script);
    b = b.node(config);
    let mut hosts = Vec::new();
    for (i, node) in HOSTS.iter().enumerate() {
        let (config, host) =
            cluster_node(*node, &format!("host-{}", i + 1), ETCD, &[STORAGE], ClusterRole::Host, script);
        b = b.node(config);
        hosts.push(host);
    }
    b = b.node(storage_node("storage", fencing));
    Ok(Cluster { sim: b.build()?, front, hosts })
}

sim_test!(fn data_follows_its_object_when_the_owner_is_cut_off(seed) {
    let Cluster { sim, front, hosts } = cluster(seed, true)?;
    let report = sim.run(move |world| async move {
        madsim::time::sleep(Duration::from_secs(3)).await;
        for want in 1..=5 {
            ensure!(increment(&front, "c").await? == Ok(want), "increment {want}");
        }
        let [owner] = live_on(&hosts).await?[..] else { return Err(dosim_sim::Failure::new("one live instance")) };
        world.partition(&[owner], &[ETCD], Direction::Both)?;
        // Within the lease's TTL the cut-off owner stops believing in its lease and resets its instance.
        madsim::time::sleep(Duration::from_secs(LEASE_TTL_S as u64)).await;
        let start = madsim::time::Instant::now();
        let next = loop {
            match increment(&front, "c").await? {
                Ok(v) => break v,
                Err(e) => {
                    ensure!(e.retryable(), "while the object moves, errors are retryable: {e:?}");
                    ensure!(start.elapsed() < Duration::from_secs(120), "the object never moved: {e:?}");
                    madsim::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        ensure!(next == 6, "the object continues from its last acknowledged value on its new host: {next}");
        let now_on = live_on(&hosts).await?;
        ensure!(now_on.len() == 1 && now_on[0] != owner, "it moved off {owner}: {now_on:?}");
        Ok(())
    })?;
    assert_eq!(report.faults.get(FaultKind::Partition), 1, "one partition: the owner from the directory ({seed})");
    if let Err(e) = check_commit_history(&report.trace) {
        panic!("single activation ({seed}): {e}");
    }
    Ok(report)
});

sim_test!(fn no_acknowledged_increment_is_lost_when_the_owner_crashes(seed) {
    let Cluster { sim, front, hosts } = cluster(seed, true)?;
    let report = sim.run(move |world| async move {
        madsim::time::sleep(Duration::from_secs(3)).await;
        let mut acked: Vec<i64> = Vec::new();
        let mut crashed = None;
        let start = madsim::time::Instant::now();
        while acked.len() < 20 {
            ensure!(start.elapsed() < Duration::from_secs(300), "only {} increments in 300 s", acked.len());
            if acked.len() == 8 && crashed.is_none() {
                let [owner] = live_on(&hosts).await?[..] else { return Err(dosim_sim::Failure::new("one live instance")) };
                world.crash(owner)?;
                crashed = Some(owner);
            }
            match increment(&front, "c").await? {
                Ok(v) => {
                    if let Some(last) = acked.last() {
                        ensure!(v > *last, "acknowledged {last}, then {v}: an acknowledged increment was lost");
                    }
                    acked.push(v);
                }
                Err(e) => {
                    ensure!(e.retryable(), "only retryable errors while the owner is down: {e:?}");
                    madsim::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        if let Some(node) = crashed {
            world.restart(node)?;
        }
        Ok(())
    })?;
    assert_eq!(report.faults.get(FaultKind::Crash), 1, "one crash: the owner host ({seed})");
    if let Err(e) = check_commit_history(&report.trace) {
        panic!("single activation ({seed}): {e}");
    }
    Ok(report)
});

/// The superseded scenario (see the module docs); `fencing` off is the negative control.
fn superseded(seed: dosim_sim::Seed, fencing: bool) -> Result<RunReport, dosim_sim::RunFailure> {
    let Cluster { sim, front, hosts } = cluster(seed, fencing)?;
    sim.run(move |world| async move {
        madsim::time::sleep(Duration::from_secs(3)).await;
        // Activate the object and find its owner.
        front
            .run(|env| async move {
                env.durable_object("PROBE")
                    .unwrap()
                    .get_by_name("p")
                    .call::<_, ()>("put", &("x".to_string(), 1i64, false))
                    .await
            })
            .await?
            .map_err(|e| dosim_sim::Failure::new(format!("the first put: {e:?}")))?;
        let [old] = live_on(&hosts).await?[..] else {
            return Err(dosim_sim::Failure::new("one live instance"));
        };
        // A call whose write comes 8 s after it starts; the owner is paused meanwhile, past its lease.
        let late = {
            let front = front.clone();
            madsim::task::spawn(async move {
                front
                    .run(|env| async move {
                        let stub = env.durable_object("PROBE").unwrap().get_by_name("p");
                        stub.call::<_, ()>("sleep_then_put", &(8_000u64, "late".to_string(), 7i64)).await
                    })
                    .await
            })
        };
        madsim::time::sleep(Duration::from_millis(500)).await;
        world.pause(old)?;
        madsim::time::sleep(Duration::from_secs(LEASE_TTL_S as u64 + 3)).await;
        // Another host takes the object over: a call from a host other than the old owner (the front still
        // remembers the old owner, and would wait for it). It only reads, so a late write of the old owner
        // would not conflict with a newer version.
        let other = hosts.iter().find(|h| h.node() != old).expect("three hosts").clone();
        let start = madsim::time::Instant::now();
        loop {
            let got = other
                .run(|env| async move {
                    env.durable_object("PROBE")
                        .unwrap()
                        .get_by_name("p")
                        .call::<_, Option<i64>>("get", &"x".to_string())
                        .await
                })
                .await?;
            match got {
                Ok(v) => {
                    ensure!(v == Some(1), "the new owner reads the acknowledged write: {v:?}");
                    break;
                }
                Err(e) => {
                    ensure!(
                        start.elapsed() < Duration::from_secs(120),
                        "no host took the object over: {e:?}"
                    );
                    madsim::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        world.resume(old)?;
        let late =
            late.await.map_err(|e| dosim_sim::Failure::new(format!("the late call's task: {e}")))??;
        match &late {
            Ok(()) => {
                return Err(dosim_sim::Failure::new("the superseded instance's write was acknowledged"))
            }
            Err(e) => ensure!(
                e.message() == messages::STORAGE_NO_LONGER_ACCESSIBLE
                    && e.retryable()
                    && e.durable_object_reset(),
                "the superseded instance's error: {e:?}"
            ),
        }
        // Rebuild every replica from the storage node: the late write must not be there.
        for h in &hosts {
            h.run_on_host(|host| async move { host.evict_idle() }).await?;
        }
        let stored = front
            .run(|env| async move {
                env.durable_object("PROBE")
                    .unwrap()
                    .get_by_name("p")
                    .call::<_, Option<i64>>("get", &"late".to_string())
                    .await
            })
            .await?;
        ensure!(stored == Ok(None), "the superseded instance's write never applied: {stored:?}");
        Ok(())
    })
}

sim_test!(fn a_superseded_instance_gets_the_error_and_its_write_never_applies(seed) {
    let report = superseded(seed, true)?;
    assert_eq!(report.faults.get(FaultKind::Pause), 1, "one pause: the old owner ({seed})");
    if let Err(e) = check_commit_history(&report.trace) {
        panic!("single activation ({seed}): {e}");
    }
    Ok(report)
});

#[test]
fn negative_control_a_storage_node_without_fencing_lets_a_superseded_write_apply() {
    let caught = (0..16u64)
        .map(|i| dosim_sim::Seed(0xfe0c_e000 + i))
        .filter(|seed| match superseded(*seed, false) {
            Err(f) => {
                let f = f.to_string();
                assert!(
                    f.contains("superseded instance's"),
                    "the negative control failed for another reason: {f}"
                );
                true
            }
            Ok(report) => check_commit_history(&report.trace).is_err(),
        })
        .count();
    eprintln!("without fencing: {caught} of 16 seeds caught");
    assert!(caught > 0, "without fencing, no seed of 16 let the superseded instance's write through");
}

// A storage node that does not answer (the owner host ↔ storage node hop cut both ways): the owner's
// shipment times out, the instance resets with the spec's internal storage error (reset), the caller never
// sees that write acknowledged, and after the heal the object answers again with every acknowledged write.
sim_test!(fn a_storage_node_that_never_answers_is_a_clear_error_and_loses_nothing(seed) {
    let Cluster { sim, front, hosts } = cluster(seed, true)?;
    let report = sim.run(move |world| async move {
        madsim::time::sleep(Duration::from_secs(3)).await;
        for want in 1..=3 {
            ensure!(increment(&front, "c").await? == Ok(want), "increment {want}");
        }
        let [owner] = live_on(&hosts).await?[..] else { return Err(dosim_sim::Failure::new("one live instance")) };
        world.partition(&[owner], &[STORAGE], Direction::Both)?;
        let cut = increment(&front, "c").await?;
        match &cut {
            Ok(v) => return Err(dosim_sim::Failure::new(format!("acknowledged {v} with the storage node cut off"))),
            Err(e) => ensure!(
                e.message().starts_with("Internal error in Durable Object storage write caused object to be reset")
                    && e.message().contains("no answer from the storage node")
                    && e.durable_object_reset(),
                "the caller learns that storage failed: {e:?}"
            ),
        }
        world.heal();
        let start = madsim::time::Instant::now();
        let after = loop {
            match increment(&front, "c").await? {
                Ok(v) => break v,
                Err(e) => {
                    ensure!(start.elapsed() < Duration::from_secs(60), "the object never came back: {e:?}");
                    madsim::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        // The cut-off increment was never shipped: the replica was rebuilt from the storage node.
        ensure!(after == 4, "every acknowledged increment and nothing else: {after}");
        Ok(())
    })?;
    assert_eq!(report.faults.get(FaultKind::Partition), 1, "one partition: the owner from the storage node ({seed})");
    Ok(report)
});

// Power cuts of the storage node (at random times, restarted after a moment) while increments flow: a
// commit batch is there whole or not at all after recovery (SQLite's atomic commit on the node's disk), and
// no increment the front saw acknowledged is lost.
sim_test!(fn power_cuts_of_the_storage_node_lose_no_acknowledged_increment(seed) {
    let Cluster { sim, front, hosts } = cluster(seed, true)?;
    let report = sim.run(move |world| async move {
        // The hosts' handles keep their command queues, and so their hosts, alive.
        let _hosts = hosts;
        madsim::time::sleep(Duration::from_secs(3)).await;
        let mut acked: Vec<i64> = Vec::new();
        let mut cuts = 0;
        let start = madsim::time::Instant::now();
        while acked.len() < 30 {
            ensure!(start.elapsed() < Duration::from_secs(600), "only {} increments in 600 s", acked.len());
            if acked.len() % 10 == 5 && cuts < acked.len() / 10 + 1 {
                world.power_cut(STORAGE)?;
                cuts += 1;
                let world = world.clone();
                madsim::task::spawn(async move {
                    madsim::time::sleep(Duration::from_millis(300)).await;
                    let _ = world.restart(STORAGE);
                });
            }
            match increment(&front, "c").await? {
                Ok(v) => {
                    if let Some(last) = acked.last() {
                        ensure!(v > *last, "acknowledged {last}, then {v}: an acknowledged increment was lost");
                    }
                    acked.push(v);
                }
                Err(e) => {
                    ensure!(e.retryable() || e.durable_object_reset(), "a storage outage is retryable or a reset: {e:?}");
                    madsim::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        Ok(())
    })?;
    assert!(report.faults.get(FaultKind::PowerCut) >= 3, "the storage node lost power 3 times ({seed}): {}", report.faults);
    if let Err(e) = check_commit_history(&report.trace) {
        panic!("single activation ({seed}): {e}");
    }
    Ok(report)
});

// An alarm follows its object (spec §4, at least once): set on one host, which is then cut off from the
// directory (the host → directory hop); the object moves to another host, which schedules the alarm stored
// with it, and runs it there. The old host's own index still holds the alarm, but it no longer owns the
// object and never runs it (the commit history shows one activation at a time).
sim_test!(fn an_alarm_follows_its_object_to_its_new_host(seed) {
    let Cluster { sim, front, hosts } = cluster(seed, true)?;
    let report = sim.run(move |world| async move {
        madsim::time::sleep(Duration::from_secs(3)).await;
        let due = front
            .run(|env| async move {
                let stub = env.durable_object("PROBE").unwrap().get_by_name("p");
                let now = stub.call::<_, i64>("now", &()).await?;
                stub.call::<_, ()>("set_alarm", &(now + 10_000)).await?;
                Ok::<_, Error>(now + 10_000)
            })
            .await?
            .map_err(|e| dosim_sim::Failure::new(format!("setting the alarm: {e:?}")))?;
        let [old] = live_on(&hosts).await?[..] else { return Err(dosim_sim::Failure::new("one live instance")) };
        world.partition(&[old], &[ETCD], Direction::Both)?;
        madsim::time::sleep(Duration::from_secs(LEASE_TTL_S as u64)).await;
        // The next call moves the object.
        let start = madsim::time::Instant::now();
        loop {
            let got = front
                .run(|env| async move {
                    env.durable_object("PROBE").unwrap().get_by_name("p").call::<_, Option<i64>>("get_alarm", &()).await
                })
                .await?;
            match got {
                Ok(stored) => {
                    ensure!(stored == Some(due), "the moved object keeps its alarm: {stored:?}");
                    break;
                }
                Err(e) => {
                    ensure!(start.elapsed() < Duration::from_secs(120), "the object never moved: {e:?}");
                    madsim::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        let now_on = live_on(&hosts).await?;
        ensure!(now_on.len() == 1 && now_on[0] != old, "it moved off {old}: {now_on:?}");
        // Past the alarm's time (and its first retries' backoff), it has run on the new host.
        madsim::time::sleep(Duration::from_secs(20)).await;
        let runs = front
            .run(|env| async move {
                env.durable_object("PROBE")
                    .unwrap()
                    .get_by_name("p")
                    .call::<_, Vec<dosim_scenarios::objects::AlarmRun>>("alarm_runs", &())
                    .await
            })
            .await?
            .map_err(|e| dosim_sim::Failure::new(format!("reading the runs: {e:?}")))?;
        ensure!(!runs.is_empty(), "the alarm due at {due} never ran after its object moved");
        ensure!(runs[0].info.scheduled_time == due, "it ran for its time: {runs:?}");
        // Once the old host is back in touch with the directory, its own index hands the alarm over (the owner
        // activates the object) and forgets it: it does not retry forever an alarm it may not run.
        world.heal();
        let old_host = hosts.iter().find(|h| h.node() == old).expect("a host").clone();
        let start = madsim::time::Instant::now();
        loop {
            let left = old_host.run_on_host(|host| async move { host.scheduled_alarms() }).await?;
            if left == 0 {
                break;
            }
            // Its uncounted retries back off up to 2 s × 2^9.
            ensure!(start.elapsed() < Duration::from_secs(1_500), "the old host still holds {left} alarms");
            madsim::time::sleep(Duration::from_secs(5)).await;
        }
        let runs_after = front
            .run(|env| async move {
                env.durable_object("PROBE")
                    .unwrap()
                    .get_by_name("p")
                    .call::<_, Vec<dosim_scenarios::objects::AlarmRun>>("alarm_runs", &())
                    .await
            })
            .await?
            .map_err(|e| dosim_sim::Failure::new(format!("reading the runs: {e:?}")))?;
        ensure!(runs_after.len() == runs.len(), "the hand-over ran nothing again: {runs_after:?}");
        Ok(())
    })?;
    if let Err(e) = check_commit_history(&report.trace) {
        panic!("single activation ({seed}): {e}");
    }
    Ok(report)
});
