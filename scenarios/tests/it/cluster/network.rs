//! A hostile network between the cluster's nodes (duplication, reordering and some loss on every hop: client
//! → front is in-process, front → host and host → storage node are on the fabric): a duplicated or reordered
//! request never applies a write twice (the object's code does each increment once per call), and every
//! acknowledged increment stays. Negative control: hosts that do not deduplicate calls run a duplicated
//! increment twice, and the count of writes exceeds the calls made.
//!
//! Nodes: 0 the directory, 1 the front, 2..=4 hosts, 5 the storage node.

use std::time::Duration;

use super::{ETCD, FRONT, HOSTS, STORAGE};
use dosim_runtime::embed::{ClusterRole, HostBuilder, Migration};
use dosim_runtime::prelude::*;
use dosim_scenarios::cluster::etcd::etcd_node;
use dosim_scenarios::cluster::{cluster_node, cluster_node_without_dedup, storage_node};
use dosim_scenarios::objects::Counter;
use dosim_scenarios::sim_host::{host_builder, HostNode};
use dosim_sim::net::NetConfig;
use dosim_sim::{ensure, sim_test, FaultKind, LatencyRange, Ratio, RunReport, Sim};

const CALLS: i64 = 40;

fn script() -> HostBuilder {
    host_builder("worker").class::<Counter>("Counter").binding("COUNTER", "Counter").migration(Migration {
        tag: "v1".into(),
        new_sqlite_classes: vec!["Counter".into()],
        ..Migration::default()
    })
}

/// A quarter of messages duplicated, a quarter reordered by 40 ms, one in a hundred lost.
fn hostile() -> NetConfig {
    NetConfig {
        latency: LatencyRange::new(Duration::from_millis(1), Duration::from_millis(10)),
        loss: Ratio::new(1, 100),
        duplicate: Ratio::new(1, 4),
        reorder: Ratio::new(1, 4),
        reorder_delay: Duration::from_millis(40),
    }
}

async fn fetch(front: &HostNode, path: &'static str) -> Result<Result<i64, Error>, dosim_sim::Failure> {
    front
        .run(move |env| async move {
            let r = env.durable_object("COUNTER").unwrap().get_by_name("c").fetch(Request::get(path)).await?;
            Ok(r.text()?.parse::<i64>().expect("a number"))
        })
        .await
}

fn run(seed: dosim_sim::Seed, dedup: bool) -> Result<RunReport, dosim_sim::RunFailure> {
    let mut b = Sim::builder().seed(seed).network(hostile()).node(etcd_node(ETCD, "etcd"));
    let (config, front) = cluster_node(FRONT, "front", ETCD, &[STORAGE], ClusterRole::Front, script);
    b = b.node(config);
    let mut hosts = Vec::new();
    for (i, node) in HOSTS.iter().enumerate() {
        let name = format!("host-{}", i + 1);
        let (config, host) = if dedup {
            cluster_node(*node, &name, ETCD, &[STORAGE], ClusterRole::Host, script)
        } else {
            cluster_node_without_dedup(*node, &name, ETCD, &[STORAGE], ClusterRole::Host, script)
        };
        b = b.node(config);
        hosts.push(host);
    }
    b = b.node(storage_node("storage", true));
    b.build()?.run(move |_world| async move {
        let _hosts = hosts;
        madsim::time::sleep(Duration::from_secs(3)).await;
        let mut last = 0;
        for _ in 0..CALLS {
            match fetch(&front, "/increment").await? {
                Ok(v) => {
                    ensure!(v > last, "acknowledged {last}, then {v}: an acknowledged increment was lost");
                    last = v;
                }
                Err(e) => {
                    ensure!(e.retryable() || e.durable_object_reset(), "a lost message is retryable: {e:?}")
                }
            }
        }
        // Read until a read gets through (each call applies at most once, so retrying a read is safe).
        let start = madsim::time::Instant::now();
        let total = loop {
            match fetch(&front, "/").await? {
                Ok(v) => break v,
                Err(e) => {
                    ensure!(start.elapsed() < Duration::from_secs(120), "the counter never answered: {e:?}");
                    madsim::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        ensure!(total >= last, "the final count {total} is below the last acknowledged value {last}");
        ensure!(
            total <= CALLS,
            "{total} increments applied for {CALLS} calls: a duplicated request ran twice"
        );
        Ok(())
    })
}

sim_test!(fn a_duplicated_or_reordered_request_never_applies_a_write_twice(seed) {
    let report = run(seed, true)?;
    for kind in [FaultKind::MessageDuplicate, FaultKind::MessageReorder] {
        assert!(report.faults.get(kind) > 0, "no {kind} ({seed}): {}", report.faults);
    }
    Ok(report)
});

#[test]
fn negative_control_hosts_without_deduplication_run_a_duplicated_increment_twice() {
    let caught = (0..8u64)
        .map(|i| dosim_sim::Seed(0xd0b1_e000 + i))
        .filter(|seed| match run(*seed, false) {
            Err(f) => {
                let f = f.to_string();
                assert!(
                    f.contains("ran twice") || f.contains("was lost"),
                    "failed for another reason ({seed}): {f}"
                );
                true
            }
            Ok(_) => false,
        })
        .count();
    assert!(caught > 0, "without deduplication, no seed of 8 ran a duplicated increment twice");
}
