//! Scenario `object-counters`: Durable Objects on a host that crashes, loses power, pauses and evicts.
//!
//! One host runs the get-started `Counter` on both backends (two objects each) and the `Probe` (for alarms).
//! The controller sends waves of concurrent increments to random counters, and sets one alarm per probe.
//! Faults, drawn per seed (swarm): crashes, power cuts and pauses of the host, power cuts inside its disk's
//! writes (they land inside commits), I/O errors of its disk, and evictions of idle objects injected between
//! waves. Then the faults stop and the liveness phase checks:
//! - **no acknowledged write lost, none invented:** each counter holds at least the increments it
//!   acknowledged and at most the ones attempted;
//! - **alarm liveness:** every acknowledged alarm has run (it is retried across crashes: at least once).

use std::collections::BTreeMap;
use std::time::Duration;

use dosim_runtime::embed::Migration;
use dosim_sim::{
    ensure, DiskConfig, DiskFaultKind, Failure, FaultKind, FaultPlan, NodeId, Purpose, RandomFaults, Ratio,
    RunFailure, RunReport, Seed, Sim, SimRng,
};

use crate::objects::{AlarmRun, Counter, Probe, UnconfirmedCounter};
use crate::sim_host::{host_builder, host_node, HostNode};

const HOST: NodeId = NodeId(0);
/// Counters: (binding, object name).
const COUNTERS: [(&str, &str); 4] = [("SQL", "s0"), ("SQL", "s1"), ("KV", "k0"), ("KV", "k1")];
const PROBES: [&str; 2] = ["p0", "p1"];
const WAVES: u32 = 30;
const WAVE_MAX: u64 = 8;
/// How long the liveness phase waits for alarms (their retries back off up to ~2 min).
const SETTLE: Duration = Duration::from_secs(240);

fn build() -> dosim_runtime::embed::HostBuilder {
    build_with::<Counter>()
}

/// The negative control's host: the KV counters acknowledge before their writes are durable.
fn build_unconfirmed() -> dosim_runtime::embed::HostBuilder {
    build_with::<UnconfirmedCounter>()
}

fn build_with<Kv: dosim_runtime::prelude::DurableObject>() -> dosim_runtime::embed::HostBuilder {
    host_builder("worker")
        .class::<Counter>("SqlCounter")
        .class::<Kv>("KvCounter")
        .class::<Probe>("Probe")
        .binding("SQL", "SqlCounter")
        .binding("KV", "KvCounter")
        .binding("PROBE", "Probe")
        .migration(Migration {
            tag: "v1".into(),
            new_sqlite_classes: vec!["SqlCounter".into(), "Probe".into()],
            new_classes: vec!["KvCounter".into()],
            ..Migration::default()
        })
}

/// The faults of a seed: the random mix, and 0–3 power cuts armed at disk operations, so they land inside
/// commits (a power cut at a random time never does: a commit does not yield).
fn plan(seed: Seed) -> FaultPlan {
    let mut rng = SimRng::new(seed, Purpose::Faults);
    let mut plan = FaultPlan::none()
        .random(swarm(seed))
        .restart_after_power_cut(Duration::from_millis(rng.between(10, 500)));
    for _ in 0..rng.below(4) {
        plan = plan.disk_fault_at(HOST, rng.between(1, 4000), DiskFaultKind::PowerCut);
    }
    plan
}

/// The random fault mix of a seed.
fn swarm(seed: Seed) -> RandomFaults {
    let mut rng = SimRng::new(seed, Purpose::Faults);
    let pool = [FaultKind::Crash, FaultKind::PowerCut, FaultKind::Pause];
    let mut kinds: Vec<FaultKind> = pool.iter().copied().filter(|_| rng.below(2) == 1).collect();
    if kinds.is_empty() {
        kinds.push(pool[rng.below(pool.len() as u64) as usize]);
    }
    let mean = Duration::from_millis(rng.between(300, 3000));
    RandomFaults::new(kinds, mean, Duration::from_millis(rng.between(50, 1500)))
        .expect("kinds come from the random pool")
}

/// The disk of a seed: in a third of the seeds it fails one operation in 500 (an I/O error) until the faults
/// stop.
fn disk(seed: Seed) -> DiskConfig {
    let mut rng = SimRng::new(seed, Purpose::Disk);
    DiskConfig {
        io_error_rate: if rng.below(3) == 0 { Ratio::new(1, 500) } else { Ratio::NEVER },
        ..DiskConfig::default()
    }
}

#[derive(Default, Debug)]
struct Tally {
    attempts: u64,
    acked: u64,
}

async fn increment(host: &HostNode, binding: &'static str, name: &'static str) -> bool {
    let done = host
        .run(move |env| async move {
            let stub = env.durable_object(binding).expect("bound").get_by_name(name);
            stub.call::<_, i64>("increment", &1i64).await.is_ok()
        })
        .await;
    matches!(done, Ok(true))
}

async fn read(host: &HostNode, binding: &'static str, name: &'static str) -> Result<i64, String> {
    host.run(move |env| async move {
        let stub = env.durable_object(binding).expect("bound").get_by_name(name);
        stub.call::<_, i64>("read", &()).await.map_err(|e| e.to_string())
    })
    .await
    .map_err(|f| f.to_string())?
}

/// Runs the scenario for one seed.
pub(crate) fn run(seed: Seed) -> Result<RunReport, RunFailure> {
    run_on(seed, build)
}

/// The scenario with counters that confirm writes early (`allow_unconfirmed`): the check must catch lost
/// acknowledged increments under some seeds. It proves the checker can fail.
pub fn run_negative_control(seed: Seed) -> Result<RunReport, RunFailure> {
    run_on(seed, build_unconfirmed)
}

fn run_on(seed: Seed, build: fn() -> dosim_runtime::embed::HostBuilder) -> Result<RunReport, RunFailure> {
    let (node, host) = host_node(HOST, "host", build);
    let sim = Sim::builder().seed(seed).node(node).disk(disk(seed)).faults(plan(seed)).build()?;
    sim.run(move |world| async move {
        let mut rng = SimRng::new(seed, Purpose::Workload);
        let mut tallies: BTreeMap<(&str, &str), Tally> = BTreeMap::new();
        // One alarm per probe, a few seconds out; acknowledged ones must run.
        let mut alarms: BTreeMap<&str, i64> = BTreeMap::new();
        for name in PROBES {
            let delay = rng.between(1_000, 8_000) as i64;
            let set = host
                .run(move |env| async move {
                    let stub = env.durable_object("PROBE").expect("bound").get_by_name(name);
                    let now: i64 = stub.call("now", &()).await?;
                    stub.call::<_, ()>("set_alarm", &(now + delay)).await?;
                    Ok::<_, dosim_runtime::error::Error>(now + delay)
                })
                .await;
            if let Ok(Ok(at)) = set {
                alarms.insert(name, at);
            }
        }
        for _ in 0..WAVES {
            let n = 1 + rng.below(WAVE_MAX);
            let mut wave = Vec::new();
            for _ in 0..n {
                let (binding, name) = COUNTERS[rng.below(COUNTERS.len() as u64) as usize];
                tallies.entry((binding, name)).or_default().attempts += 1;
                let h = host.clone();
                wave.push((
                    (binding, name),
                    madsim::task::spawn(async move { increment(&h, binding, name).await }),
                ));
            }
            for (key, task) in wave {
                if task.await.unwrap_or(false) {
                    tallies.entry(key).or_default().acked += 1;
                } else {
                    dosim_sim::sometimes("an increment failed under a fault");
                }
            }
            if rng.below(4) == 0 {
                // An injected eviction, at a point the runtime allows (idle objects only).
                let _ = host.run_on_host(|h| async move { h.evict_idle() }).await;
            }
            world.sleep(Duration::from_millis(rng.between(10, 400))).await;
        }
        world.stop_faults();
        world.sleep(SETTLE).await;
        for ((binding, name), t) in &tallies {
            let value =
                read(&host, binding, name).await.map_err(|e| Failure::new(format!("read {name}: {e}")))?;
            dosim_sim::note(
                &format!("counter {name}"),
                format!("value={value} acked={} attempts={}", t.acked, t.attempts),
            );
            ensure!(
                value as u64 >= t.acked,
                "counter {name}: acknowledged increments lost: {value} < {}",
                t.acked
            );
            ensure!(
                value as u64 <= t.attempts,
                "counter {name}: more increments than attempts: {value} > {}",
                t.attempts
            );
        }
        for (name, at) in &alarms {
            let name: &'static str = name;
            let runs = host
                .run(move |env| async move {
                    let stub = env.durable_object("PROBE").expect("bound").get_by_name(name);
                    stub.call::<_, Vec<AlarmRun>>("alarm_runs", &()).await.map_err(|e| e.to_string())
                })
                .await?
                .map_err(|e| Failure::new(format!("alarm runs of {name}: {e}")))?;
            dosim_sim::note(&format!("alarm {name}"), format!("runs={}", runs.len()));
            if runs.len() > 1 {
                dosim_sim::sometimes("an alarm ran more than once (at least once across a fault)");
            }
            ensure!(
                runs.iter().any(|r| r.info.scheduled_time == *at),
                "pending: the alarm of {name} set for {at} never ran ({runs:?})"
            );
        }
        Ok(())
    })
}
