//! Code updates in a cluster (spec §6.2, §7): a rolling update replaces the hosts' code one by one, so for a
//! while old and new code both serve; a call running on a host when it updates gets `Durable Object reset
//! because its code was updated.` (reset); and the new code sees the old data.
//!
//! Nodes: 0 the directory, 1 the front, 2..=4 hosts, 5 the storage node. No faults: the updates are the
//! events under test (each host's update counted).

use std::time::Duration;

use super::{ETCD, FRONT, HOSTS, STORAGE};
use dosim_runtime::embed::{ClusterRole, HostBuilder, Migration};
use dosim_runtime::error::messages;
use dosim_runtime::prelude::*;
use dosim_scenarios::cluster::etcd::etcd_node;
use dosim_scenarios::cluster::{cluster_node, replace_cluster_host, storage_node, update_cluster_code};
use dosim_scenarios::objects::{Counter, Probe};
use dosim_scenarios::sim_host::{host_builder, HostNode};
use dosim_sim::{ensure, sim_test, NodeId, Sim};

const COUNTERS: [&str; 6] = ["c0", "c1", "c2", "c3", "c4", "c5"];

/// Version 2 of the `Counter` class: the same storage, and answers that say which code ran.
struct CounterV2 {
    state: State,
}

impl DurableObject for CounterV2 {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        Ok(CounterV2 { state })
    }

    async fn fetch(&self, request: Request) -> Result<Response, Error> {
        let storage = self.state.storage();
        let mut value: i64 = storage.get("value").await?.unwrap_or(0);
        if request.path() == "/increment" {
            value += 1;
            storage.put("value", &value).await?;
        }
        Ok(Response::ok(format!("v2 {value}")))
    }
}

fn script_with<C: DurableObject>() -> HostBuilder {
    host_builder("worker")
        .class::<C>("Counter")
        .binding("COUNTER", "Counter")
        .class::<Probe>("Probe")
        .binding("PROBE", "Probe")
        .migration(Migration {
            tag: "v1".into(),
            new_sqlite_classes: vec!["Counter".into(), "Probe".into()],
            ..Migration::default()
        })
}

fn v1() -> HostBuilder {
    script_with::<Counter>()
}

fn v2() -> HostBuilder {
    script_with::<CounterV2>()
}

/// An increment through the front: (the code version that answered, the value).
async fn increment(
    front: &HostNode,
    name: &'static str,
) -> Result<Result<(u32, i64), Error>, dosim_sim::Failure> {
    front
        .run(move |env| async move {
            let r = env
                .durable_object("COUNTER")
                .unwrap()
                .get_by_name(name)
                .fetch(Request::get("/increment"))
                .await?;
            let text = r.text()?;
            Ok(match text.strip_prefix("v2 ") {
                Some(v) => (2, v.parse().expect("a number")),
                None => (1, text.parse().expect("a number")),
            })
        })
        .await
}

/// The rolling update. `announced`: each host's old instances are reset with the code update's message;
/// off (the negative control), with the message of a plain shutdown.
fn rolling_update(
    seed: dosim_sim::Seed,
    announced: bool,
) -> Result<dosim_sim::RunReport, dosim_sim::RunFailure> {
    let storage: &'static [NodeId] = &[STORAGE];
    let mut b = Sim::builder().seed(seed).node(etcd_node(ETCD, "etcd"));
    let (config, front) = cluster_node(FRONT, "front", ETCD, storage, ClusterRole::Front, v1);
    b = b.node(config);
    let mut hosts = Vec::new();
    for (i, node) in HOSTS.iter().enumerate() {
        let (config, host) =
            cluster_node(*node, &format!("host-{}", i + 1), ETCD, storage, ClusterRole::Host, v1);
        b = b.node(config);
        hosts.push(host);
    }
    b = b.node(storage_node("storage", true));
    b.build()?.run(move |_world| async move {
        madsim::time::sleep(Duration::from_secs(3)).await;
        let mut values = std::collections::BTreeMap::new();
        for name in COUNTERS {
            let got = increment(&front, name).await?;
            ensure!(got == Ok((1, 1)), "{name} on the old code: {got:?}");
            values.insert(name, 1i64);
        }
        // The probe's host will update while a 20 s call runs on it: the update cuts it off with the spec's
        // reset.
        let busy = front
            .run(|env| async move {
                env.durable_object("PROBE").unwrap().get_by_name("p").call::<_, ()>("sleep", &0u64).await
            })
            .await?;
        ensure!(busy.is_ok(), "the probe starts: {busy:?}");
        let long = {
            let front = front.clone();
            madsim::task::spawn(async move {
                front
                    .run(|env| async move {
                        env.durable_object("PROBE")
                            .unwrap()
                            .get_by_name("p")
                            .call::<_, ()>("sleep", &20_000u64)
                            .await
                    })
                    .await
            })
        };
        madsim::time::sleep(Duration::from_millis(500)).await;
        let mut seen_versions = std::collections::BTreeSet::new();
        for (i, h) in hosts.iter().enumerate() {
            if announced {
                update_cluster_code(h, ETCD, storage, ClusterRole::Host, v2).await?;
            } else {
                let plain = Error::new(messages::INSTANCE_NO_LONGER_ACTIVE).with_retryable();
                replace_cluster_host(h, ETCD, storage, ClusterRole::Host, v2, plain).await?;
            }
            // Between updates, every counter still answers, from whichever code its host runs.
            for name in COUNTERS {
                let start = madsim::time::Instant::now();
                let (version, value) = loop {
                    match increment(&front, name).await? {
                        Ok(got) => break got,
                        Err(e) => {
                            ensure!(
                                e.retryable() || e.durable_object_reset(),
                                "{name} during the update of host {i}: {e:?}"
                            );
                            ensure!(
                                start.elapsed() < Duration::from_secs(120),
                                "{name} never answered: {e:?}"
                            );
                            madsim::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                };
                let before = values[name];
                ensure!(value > before, "{name}: {value} after {before}: the new code sees the old data");
                values.insert(name, value);
                seen_versions.insert((i, version));
            }
        }
        // For a while both serve: after the first host's update the others still run the old code, and
        // before the last one's some object already runs the new code.
        ensure!(
            seen_versions.contains(&(0, 1))
                && (seen_versions.contains(&(0, 2)) || seen_versions.contains(&(1, 2))),
            "during the rollout old and new code serve side by side: {seen_versions:?}"
        );
        for name in COUNTERS {
            let got = increment(&front, name).await?;
            ensure!(matches!(got, Ok((2, _))), "{name} after the rollout runs the new code: {got:?}");
        }
        let long =
            long.await.map_err(|e| dosim_sim::Failure::new(format!("the long call's task: {e}")))??;
        match long {
            Err(e) => ensure!(
                e.message() == messages::CODE_UPDATED && e.durable_object_reset(),
                "the call cut off by the update: {e:?}"
            ),
            Ok(()) => return Err(dosim_sim::Failure::new("a 20 s call survived its host's code update")),
        }
        Ok(())
    })
}

sim_test!(fn a_rolling_code_update_resets_old_instances_and_the_new_code_sees_the_old_data(seed) {
    rolling_update(seed, true)
});

// Negative control: hosts replaced without the code update's reset message: the call cut off by the update
// gets the plain shutdown's error, and the check of the message catches it.
#[test]
fn negative_control_a_replacement_without_the_update_message_is_caught() {
    for i in 0..4u64 {
        let seed = dosim_sim::Seed(0xc0de_0000 + i);
        match rolling_update(seed, false) {
            Err(f) => {
                let f = f.to_string();
                assert!(
                    f.contains("the call cut off by the update"),
                    "failed for another reason ({seed}): {f}"
                );
            }
            Ok(_) => panic!("hosts replaced without the update's message, yet the check passed ({seed})"),
        }
    }
}
