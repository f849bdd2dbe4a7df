//! Scenario `object-counters`: Durable Objects on a host that crashes, loses power, pauses and evicts.
//!
//! One host runs the get-started `Counter` on both backends (two objects each) and the `Probe` (for alarms).
//! The controller sends waves of concurrent increments to random counters, and sets one alarm per probe.
//! Faults, drawn per seed ([`Options`], swarm testing): crashes, power cuts and pauses of the host, power cuts
//! inside its disk's writes (they land inside commits), I/O errors of its disk, and evictions of idle objects
//! injected between waves. Then the faults stop and the liveness phase checks:
//! - **the history of each counter** (every increment answers the counter's new value): acknowledged values
//!   are distinct, each is above every value acknowledged in an earlier wave (a wave starts once the previous
//!   one has answered), none exceeds the increments attempted by then, and the final value is at least the
//!   largest acknowledged one: an acknowledged increment that was lost shows as a value handed out twice or a
//!   value going back, even when an unacknowledged increment that did apply makes the total come out right;
//! - **none invented:** each counter holds at most the increments attempted;
//! - **alarm liveness:** every acknowledged alarm has run (it is retried across crashes: at least once).

use std::collections::BTreeMap;
use std::time::Duration;

use dosim_runtime::embed::Migration;
use dosim_sim::{
    ensure, ensure_live, DiskConfig, DiskFaultKind, Failure, FaultKind, FaultPlan, NodeId, Purpose,
    RandomFaults, Ratio, RunFailure, RunOptions, RunReport, Seed, Sim, SimRng,
};

use crate::list;
use crate::objects::{AlarmRun, Counter, Probe, UnconfirmedCounter};
use crate::sim_host::{host_builder, host_node, HostNode};

const HOST: NodeId = NodeId(0);
/// Counters: (binding, object name).
const COUNTERS: [(&str, &str); 4] = [("SQL", "s0"), ("SQL", "s1"), ("KV", "k0"), ("KV", "k1")];
const PROBES: [&str; 2] = ["p0", "p1"];
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

/// What one run of the scenario does, derived from its seed by [`Options::from_seed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The host faults injected at random times (a non-empty subset of crash, power cut and pause).
    pub fault_kinds: Vec<FaultKind>,
    /// The mean time between random faults.
    pub fault_mean_interval: Duration,
    /// The longest outage of a random fault.
    pub fault_max_outage: Duration,
    /// How long the host stays down after a power cut armed at a disk operation.
    pub restart_after_power_cut: Duration,
    /// The host's disk operations at which its power is cut (so the cuts land inside commits: a power cut
    /// at a random time never does, because a commit does not yield).
    pub power_cuts_at_disk_ops: Vec<u64>,
    /// The rate of I/O errors of the host's disk until the faults stop.
    pub disk_io_error_rate: Ratio,
    /// How many waves of concurrent increments the controller sends.
    pub waves: u32,
    /// The most increments in one wave (each wave sends 1 to this many).
    pub wave_max: u64,
}

impl Options {
    /// The options of `seed`, one labelled stream per subsystem ([`SimRng::substream`]): adding a draw to one
    /// subsystem never shifts another's, and none is a stream the run itself draws from (the world's fault
    /// driver draws from [`dosim_sim::Purpose::Faults`]).
    pub fn from_seed(seed: Seed) -> Options {
        let mut faults = SimRng::substream(seed, "faults");
        let pool = [FaultKind::Crash, FaultKind::PowerCut, FaultKind::Pause];
        let mut fault_kinds: Vec<FaultKind> = pool.iter().copied().filter(|_| faults.below(2) == 1).collect();
        if fault_kinds.is_empty() {
            fault_kinds.push(pool[faults.below(pool.len() as u64) as usize]);
        }
        let fault_mean_interval = Duration::from_millis(faults.between(300, 3000));
        let fault_max_outage = Duration::from_millis(faults.between(50, 1500));
        let mut restarts = SimRng::substream(seed, "restarts");
        let restart_after_power_cut = Duration::from_millis(restarts.between(10, 500));
        let mut cuts = SimRng::substream(seed, "power-cuts");
        let power_cuts_at_disk_ops = (0..cuts.below(4)).map(|_| cuts.between(1, 4000)).collect();
        let mut disk = SimRng::substream(seed, "disk");
        let disk_io_error_rate = if disk.below(3) == 0 { Ratio::new(1, 500) } else { Ratio::NEVER };
        let mut workload = SimRng::substream(seed, "workload");
        let waves = workload.between(20, 40) as u32;
        let wave_max = workload.between(4, 12);
        Options {
            fault_kinds,
            fault_mean_interval,
            fault_max_outage,
            restart_after_power_cut,
            power_cuts_at_disk_ops,
            disk_io_error_rate,
            waves,
            wave_max,
        }
    }

    /// The options as `key=value` pairs, the seed first.
    pub fn describe(&self, seed: Seed) -> RunOptions {
        RunOptions::new(seed)
            .with("faults", list(&self.fault_kinds))
            .with("fault_mean_interval_ms", self.fault_mean_interval.as_millis())
            .with("fault_max_outage_ms", self.fault_max_outage.as_millis())
            .with("restart_after_power_cut_ms", self.restart_after_power_cut.as_millis())
            .with("power_cuts_at_disk_ops", list(&self.power_cuts_at_disk_ops))
            .with("disk_io_error_rate", self.disk_io_error_rate)
            .with("waves", self.waves)
            .with("wave_max", self.wave_max)
    }

    fn plan(&self) -> FaultPlan {
        let random =
            RandomFaults::new(self.fault_kinds.clone(), self.fault_mean_interval, self.fault_max_outage)
                .expect("kinds come from the random pool");
        let mut plan = FaultPlan::none().random(random).restart_after_power_cut(self.restart_after_power_cut);
        for op in &self.power_cuts_at_disk_ops {
            plan = plan.disk_fault_at(HOST, *op, DiskFaultKind::PowerCut);
        }
        plan
    }

    fn disk(&self) -> DiskConfig {
        DiskConfig { io_error_rate: self.disk_io_error_rate, ..DiskConfig::default() }
    }
}

/// The options of `seed`, printed.
pub(crate) fn options(seed: Seed) -> RunOptions {
    Options::from_seed(seed).describe(seed)
}

/// An acknowledged increment: the value it returned, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ack {
    /// The wave it was sent in.
    pub(crate) wave: u32,
    /// The increments attempted on its counter by the end of that wave.
    pub(crate) attempts_by_then: u64,
    /// The counter's value the increment answered.
    pub(crate) value: i64,
}

/// What the controller saw of one counter.
#[derive(Default, Debug)]
pub(crate) struct History {
    /// The increments sent.
    pub(crate) attempts: u64,
    /// In wave order.
    pub(crate) acked: Vec<Ack>,
}

/// Checks one counter's history against its final value. Unacknowledged increments may or may not have
/// applied, so nothing is asked of them but that the counter stays within the attempts.
pub(crate) fn check_history(name: &str, h: &History, value: i64) -> Result<(), Failure> {
    let mut seen: BTreeMap<i64, u32> = BTreeMap::new();
    // The largest value acknowledged in the waves before the current one, and the largest so far.
    let (mut earlier_max, mut wave, mut running_max) = (0i64, 0u32, 0i64);
    for a in &h.acked {
        if a.wave != wave {
            earlier_max = running_max;
            wave = a.wave;
        }
        running_max = running_max.max(a.value);
        ensure!(
            a.value >= 1 && a.value as u64 <= a.attempts_by_then,
            "counter {name}: history: acknowledged value {} in wave {} is outside 1..={} (the increments attempted \
             by then)",
            a.value,
            a.wave,
            a.attempts_by_then
        );
        if let Some(first) = seen.insert(a.value, a.wave) {
            return Err(Failure::new(format!(
                "counter {name}: history: value {} acknowledged twice (waves {first} and {}): an acknowledged \
                 increment was lost and its value handed out again",
                a.value, a.wave
            )));
        }
        ensure!(
            a.value > earlier_max,
            "counter {name}: history: value {} acknowledged in wave {} is not above {earlier_max}, acknowledged \
             in an earlier wave: an acknowledged increment was lost",
            a.value,
            a.wave
        );
    }
    let max_acked = h.acked.iter().map(|a| a.value).max().unwrap_or(0);
    ensure!(
        value >= max_acked,
        "counter {name}: history: final value {value} is below the acknowledged value {max_acked}: an \
         acknowledged increment was lost"
    );
    ensure!(
        value as u64 <= h.attempts,
        "counter {name}: more increments than attempts: {value} > {}",
        h.attempts
    );
    Ok(())
}

/// Sends one increment; the counter's new value if it was acknowledged.
async fn increment(host: &HostNode, binding: &'static str, name: &'static str) -> Option<i64> {
    let done = host
        .run(move |env| async move {
            let stub = env.durable_object(binding).expect("bound").get_by_name(name);
            stub.call::<_, i64>("increment", &1i64).await.ok()
        })
        .await;
    done.ok().flatten()
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
    run_with(seed, &Options::from_seed(seed), build)
}

/// The scenario with counters that confirm writes early (`allow_unconfirmed`): the history check must catch
/// lost acknowledged increments under some seeds. It proves the checker can fail.
pub fn run_negative_control(seed: Seed) -> Result<RunReport, RunFailure> {
    run_with(seed, &Options::from_seed(seed), build_unconfirmed)
}

/// The scenario under `seed` with the given options instead of the seed's own: for a regression test that
/// pins the options a seed had when the failure was found.
pub fn run_with_options(seed: Seed, options: &Options) -> Result<RunReport, RunFailure> {
    run_with(seed, options, build)
}

fn run_with(
    seed: Seed,
    options: &Options,
    build: fn() -> dosim_runtime::embed::HostBuilder,
) -> Result<RunReport, RunFailure> {
    let (node, host) = host_node(HOST, "host", build);
    let sim = Sim::builder()
        .seed(seed)
        .node(node)
        .disk(options.disk())
        .faults(options.plan())
        .options(options.describe(seed))
        .build()?;
    let (waves, wave_max) = (options.waves, options.wave_max);
    sim.run(move |world| async move {
        let mut rng = SimRng::new(seed, Purpose::Workload);
        let mut histories: BTreeMap<(&str, &str), History> = BTreeMap::new();
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
        for wave_no in 0..waves {
            let n = 1 + rng.below(wave_max);
            let mut wave = Vec::new();
            for _ in 0..n {
                let (binding, name) = COUNTERS[rng.below(COUNTERS.len() as u64) as usize];
                histories.entry((binding, name)).or_default().attempts += 1;
                let h = host.clone();
                wave.push((
                    (binding, name),
                    madsim::task::spawn(async move { increment(&h, binding, name).await }),
                ));
            }
            for (key, task) in wave {
                match task.await.ok().flatten() {
                    Some(value) => {
                        let h = histories.entry(key).or_default();
                        let attempts_by_then = h.attempts;
                        h.acked.push(Ack { wave: wave_no, attempts_by_then, value });
                    }
                    None => dosim_sim::sometimes("an increment failed under a fault"),
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
        for ((binding, name), h) in &histories {
            let value =
                read(&host, binding, name).await.map_err(|e| Failure::new(format!("read {name}: {e}")))?;
            let values: Vec<i64> = h.acked.iter().map(|a| a.value).collect();
            dosim_sim::note(
                &format!("counter {name}"),
                format!("value={value} attempts={} acked={values:?}", h.attempts),
            );
            check_history(name, h, value)?;
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
            ensure_live!(
                runs.iter().any(|r| r.info.scheduled_time == *at),
                "the alarm of {name} set for {at} never ran ({runs:?})"
            );
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(attempts: u64, acked: &[(u32, u64, i64)]) -> History {
        let acked = acked
            .iter()
            .map(|&(wave, attempts_by_then, value)| Ack { wave, attempts_by_then, value })
            .collect();
        History { attempts, acked }
    }

    fn fails(h: &History, value: i64) -> String {
        check_history("c", h, value).expect_err("the history check must fail").message().to_string()
    }

    #[test]
    fn a_sound_history_passes_whatever_the_unacknowledged_increments_did() {
        // Wave 0: three attempts, two acknowledged (1 and 3: the unacknowledged one applied in between).
        // Wave 1: two attempts, one acknowledged (5: the other applied first). Final 5 or, if nothing more
        // applied, still 5; 6 would be more than attempted.
        let h = history(5, &[(0, 3, 1), (0, 3, 3), (1, 5, 5)]);
        check_history("c", &h, 5).unwrap();
        assert!(fails(&h, 6).contains("more increments than attempts"));
    }

    #[test]
    fn the_history_check_catches_what_the_total_hides() {
        // Negative controls fed straight to the checker. Wave 0 acknowledged 1 and 2; a power cut lost 2; in
        // wave 1 the next increment answered 2 again. The final value 3 (an unacknowledged increment applied)
        // equals the three acknowledgements: a check of totals passes; the history does not.
        let lost = history(4, &[(0, 2, 1), (0, 2, 2), (1, 4, 2)]);
        assert!(fails(&lost, 3).contains("history: value 2 acknowledged twice"), "{}", fails(&lost, 3));
        // A value going back across waves (the loss of 3 made the next increment answer 3 - 1 + 1 = 3, then
        // 2 after a second loss).
        let back = history(5, &[(0, 3, 3), (1, 5, 2)]);
        assert!(fails(&back, 3).contains("is not above 3, acknowledged in an earlier wave"));
        // The last acknowledged increments lost after the last wave: the final value went back.
        let end = history(2, &[(0, 2, 1), (0, 2, 2)]);
        assert!(fails(&end, 1).contains("history: final value 1 is below the acknowledged value 2"));
        // A value no attempt could have produced.
        let invented = history(2, &[(0, 1, 2)]);
        assert!(fails(&invented, 2).contains("outside 1..=1"));
    }

    #[test]
    fn options_start_with_the_seed_and_name_every_choice() {
        let seed = Seed(0x2a);
        let o = options(seed);
        let keys: Vec<&str> = o.iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "seed",
                "faults",
                "fault_mean_interval_ms",
                "fault_max_outage_ms",
                "restart_after_power_cut_ms",
                "power_cuts_at_disk_ops",
                "disk_io_error_rate",
                "waves",
                "wave_max"
            ]
        );
        assert_eq!(o.get("seed"), Some("0x000000000000002a"));
        assert_eq!(options(seed), o, "the same seed gives the same options");
    }

    /// The share of fault mixes with Crash in them (in percent) among the seeds whose restart delay is below
    /// 255 ms, and among the others, for options drawn by `draw` (Crash in the mix, restart delay).
    fn crash_share_by_restart_delay(draw: impl Fn(Seed) -> (bool, Duration)) -> (u64, u64) {
        const SEEDS: u64 = 4000;
        let line = Duration::from_millis(255);
        let (mut short, mut short_crash, mut long, mut long_crash) = (0u64, 0u64, 0u64, 0u64);
        for i in 0..SEEDS {
            let (crash, delay) = draw(Seed(7).nth(i));
            if delay < line {
                short += 1;
                short_crash += u64::from(crash);
            } else {
                long += 1;
                long_crash += u64::from(crash);
            }
        }
        (short_crash * 100 / short, long_crash * 100 / long)
    }

    #[test]
    fn the_fault_mix_is_independent_of_the_restart_delay() {
        // Crash is in a mix with probability 1/2 + 1/8 * 1/3 (an empty mix draws one kind) = 54%, whatever
        // the restart delay.
        let independent = |(short, long): (u64, u64)| (48..=60).contains(&short) && (48..=60).contains(&long);
        let shares = crash_share_by_restart_delay(|seed| {
            let o = Options::from_seed(seed);
            (o.fault_kinds.contains(&FaultKind::Crash), o.restart_after_power_cut)
        });
        assert!(independent(shares), "Crash in {shares:?}% of the mixes below / above 255 ms");
        // Negative control: the old derivation opened the run's own fault stream twice, so the restart delay
        // and the first fault-kind choice came from the same draw: Crash was in the mix (almost) exactly when
        // the delay was 255 ms or more.
        let old = crash_share_by_restart_delay(|seed| {
            let restart = SimRng::new(seed, Purpose::Faults).between(10, 500);
            let crash = SimRng::new(seed, Purpose::Faults).below(2) == 1;
            (crash, Duration::from_millis(restart))
        });
        assert!(old.0 <= 1 && old.1 >= 99, "the old derivation was correlated: {old:?}");
        assert!(!independent(old));
    }
}
