//! Snapshots of the canonical trace of a few short runs: what the runtime did, event by event, in simulated
//! time (its log lines, node actions and faults; not the disk's and the network's own events, whose
//! detail changes with unrelated work). Each snapshot was read and checked against the spec when it was
//! accepted; a change of semantics shows as a diff in review. `cargo insta review` (or
//! `INSTA_UPDATE=always`) accepts a new one.

use std::time::Duration;

use dosim_runtime::prelude::*;
use dosim_scenarios::objects::{AlarmRun, Counter, Probe};
use dosim_scenarios::testing::ObjectTest;
use dosim_sim::{ensure, EventKind, RunReport, Seed};

/// The run's canonical trace: time, node and event, for the runtime's log lines, node actions, faults and
/// notes.
fn canonical(report: &RunReport) -> String {
    let mut out = String::new();
    for e in report.trace.events() {
        let keep = match &e.kind {
            EventKind::Log { target, .. } => {
                target.starts_with("dosim::runtime") || target == "dosim::storage"
            }
            EventKind::Node(_) | EventKind::Fault { .. } | EventKind::Note { .. } => true,
            _ => false,
        };
        if keep {
            let node = e.node.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
            out.push_str(&format!("{:>10.3}ms {node:<3} {}\n", e.at.as_secs_f64() * 1e3, e.kind));
        }
    }
    out
}

// Three increments of the get-started counter, an eviction, and a read: the instance starts once, each call
// is one event, the eviction ends the instance, and the read starts a new one that reads the stored value.
#[test]
fn counter_increments_eviction_and_read() {
    let report = ObjectTest::host(Seed(1))
        .class::<Counter>("COUNTER")
        .run_on_host(async |host| {
            let ns = host.env().durable_object("COUNTER")?;
            for _ in 0..3 {
                ns.get_by_name("c").fetch(Request::get("/increment")).await?;
            }
            ensure!(host.evict("COUNTER", &ns.id_from_name("c"))?, "idle, so evicted");
            let v = ns.get_by_name("c").fetch(Request::get("/")).await?.text()?;
            ensure!(v == "3", "the stored value survives the eviction: {v}");
            Ok(())
        })
        .unwrap();
    insta::assert_snapshot!(canonical(&report));
}

// An alarm whose handler fails once: it runs at its time, fails (a counted failure), and runs again about
// 2 s later (plus jitter) with retry_count 1, then is deleted.
#[test]
fn an_alarm_fails_once_and_is_retried() {
    let report = ObjectTest::host(Seed(2))
        .class::<Probe>("PROBE")
        .run_on_host(async |host| {
            let p = host.env().durable_object("PROBE")?.get_by_name("p");
            p.call::<_, ()>("set", &("alarm_failures".to_string(), ciborium::Value::from(1))).await?;
            let now: i64 = p.call("now", &()).await?;
            p.call::<_, ()>("set_alarm", &(now + 1_000)).await?;
            madsim::time::sleep(Duration::from_secs(10)).await;
            let runs: Vec<AlarmRun> = p.call("alarm_runs", &()).await?;
            ensure!(runs.len() == 2, "{runs:?}");
            Ok(())
        })
        .unwrap();
    insta::assert_snapshot!(canonical(&report));
}

// A host that crashes while a counter is live: the instance dies with it; after the restart the next call
// starts a new instance, which reads what was committed.
#[test]
fn a_crash_ends_the_instance_and_the_next_call_starts_another() {
    use dosim_scenarios::sim_host::{host_builder, host_node};
    let (config, host) = host_node(dosim_sim::NodeId(0), "host", || {
        host_builder("worker").class::<Counter>("Counter").binding("COUNTER", "Counter").migration(
            dosim_runtime::embed::Migration {
                tag: "v1".into(),
                new_sqlite_classes: vec!["Counter".into()],
                ..Default::default()
            },
        )
    });
    let report = dosim_sim::Sim::builder()
        .seed(Seed(3))
        .node(config)
        .build()
        .unwrap()
        .run(move |world| async move {
            let inc = || {
                host.run(|env| async move {
                    env.durable_object("COUNTER")
                        .unwrap()
                        .get_by_name("c")
                        .fetch(Request::get("/increment"))
                        .await
                })
            };
            inc().await?.map_err(|e| dosim_sim::Failure::new(e.to_string()))?;
            world.crash(dosim_sim::NodeId(0))?;
            world.sleep(Duration::from_millis(100)).await;
            world.restart(dosim_sim::NodeId(0))?;
            let v = inc().await?.map_err(|e| dosim_sim::Failure::new(e.to_string()))?.text().unwrap();
            ensure!(v == "2", "the committed increment survived the crash: {v}");
            Ok(())
        })
        .unwrap();
    insta::assert_snapshot!(canonical(&report));
}
