//! Alarms (spec §4) in simulated time: the handler's view (`AlarmInfo`, `get_alarm` reading null), retries
//! with exponential backoff and jitter, abandonment after 6 retries, at-least-once across a crash mid-handler,
//! a new alarm set by the handler, and the setAlarm errors.

use std::time::Duration;

use dosim_runtime::embed::HostBuilder;
use dosim_runtime::prelude::*;
use dosim_scenarios::objects::{AlarmRun, Probe};
use dosim_scenarios::sim_host::{host_builder, host_node, HostNode};
use dosim_sim::{ensure, sim_test, DiskConfig, Failure, Sim};

use crate::{kv_class, sqlite_class, HOST};

fn sqlite_probe() -> HostBuilder {
    host_builder("worker")
        .class::<Probe>("Probe")
        .class::<NoAlarm>("NoAlarm")
        .binding("PROBE", "Probe")
        .binding("NO_ALARM", "NoAlarm")
        .migration(sqlite_class("v1", "Probe"))
        .migration(sqlite_class("v2", "NoAlarm"))
}

fn kv_probe() -> HostBuilder {
    host_builder("worker")
        .class::<Probe>("Probe")
        .binding("PROBE", "Probe")
        .migration(kv_class("v1", "Probe"))
}

/// An object without an alarm handler that tries to set an alarm, in its constructor (allowed) and later.
struct NoAlarm {
    state: State,
}

impl DurableObject for NoAlarm {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        let in_constructor = state.storage().set_alarm(state.now_ms() + 3_600_000).await;
        state.storage().put("constructor_set_alarm", &in_constructor.is_ok()).await?;
        Ok(NoAlarm { state })
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc("set_alarm", async |o: &NoAlarm, (): ()| {
            let constructor_ok: bool = o.state.storage().get("constructor_set_alarm").await?.unwrap_or(false);
            let later = o.state.storage().set_alarm(o.state.now_ms() + 1000).await;
            Ok((
                constructor_ok,
                later.map_err(|e| (format!("{:?}", e.kind()), e.message().to_string())).err(),
            ))
        });
    }
}

/// Calls `method` on the probe named `p` with `args`.
async fn call<A, R>(host: &HostNode, method: &'static str, args: A) -> Result<R, Failure>
where
    A: serde::Serialize + Send + 'static,
    R: serde::de::DeserializeOwned + Send + 'static,
{
    host.run(move |env| async move {
        let stub = env.durable_object("PROBE").unwrap().get_by_name("p");
        stub.call::<A, R>(method, &args).await.map_err(|e| e.to_string())
    })
    .await?
    .map_err(|e| Failure::new(format!("{method}: {e}")))
}

async fn configure(host: &HostNode, key: &str, value: i64) -> Result<(), Failure> {
    call::<_, ()>(host, "set", (key.to_string(), ciborium::Value::from(value))).await
}

/// Sets the probe's alarm `delay_ms` from now; returns the scheduled time.
async fn arm(host: &HostNode, delay_ms: i64) -> Result<i64, Failure> {
    let now: i64 = call(host, "now", ()).await?;
    call::<_, ()>(host, "set_alarm", now + delay_ms).await?;
    Ok(now + delay_ms)
}

async fn runs(host: &HostNode) -> Result<Vec<AlarmRun>, Failure> {
    call(host, "alarm_runs", ()).await
}

fn sim(seed: dosim_sim::Seed, build: fn() -> HostBuilder) -> Result<(Sim, HostNode), dosim_sim::RunFailure> {
    let (node, host) = host_node(HOST, "host", build);
    Ok((Sim::builder().seed(seed).node(node).disk(DiskConfig::default()).build()?, host))
}

/// The handler fails `failures` times, then succeeds: checks every run's info, timing and view.
async fn retries_then_success(host: &HostNode, failures: i64) -> Result<(), Failure> {
    configure(host, "alarm_failures", failures).await?;
    let scheduled = arm(host, 1_000).await?;
    madsim::time::sleep(Duration::from_secs(200)).await;
    let runs = runs(host).await?;
    ensure!(
        runs.len() as i64 == failures + 1,
        "{failures} failures then a success: {} runs: {runs:?}",
        runs.len()
    );
    let mut previous_at = None;
    for (n, run) in runs.iter().enumerate() {
        let n = n as u32;
        ensure!(run.info.retry_count == n, "run {n} is told retry_count {}", run.info.retry_count);
        ensure!(run.info.is_retry == (n > 0), "run {n}: is_retry {}", run.info.is_retry);
        ensure!(run.info.scheduled_time == scheduled, "run {n}: scheduled_time {}", run.info.scheduled_time);
        ensure!(run.alarm_seen.is_none(), "run {n}: the running alarm reads null, not {:?}", run.alarm_seen);
        ensure!(run.at_ms >= scheduled, "run {n} fired at {} before its time {scheduled}", run.at_ms);
        if let Some(prev) = previous_at {
            // Retry n comes 2 s·2^(n-1) after the failure, plus up to 25% jitter; the handler itself and the
            // storage round trips take a few ms.
            let base = 2_000i64 << (n - 1);
            let gap = run.at_ms - prev;
            ensure!(
                gap >= base && gap <= base + base / 4 + 100,
                "retry {n} came {gap} ms after the failure; expected {base}..{}",
                base + base / 4
            );
        }
        previous_at = Some(run.at_ms);
    }
    let after: Option<i64> = call(host, "get_alarm", ()).await?;
    ensure!(after.is_none(), "a successful alarm is deleted: {after:?}");
    Ok(())
}

sim_test!(fn alarm_retries_back_off_and_the_running_alarm_reads_null(seed) {
    let (sim, host) = sim(seed, sqlite_probe)?;
    sim.run(move |_world| async move { retries_then_success(&host, 3).await })
});

sim_test!(fn alarm_retries_on_the_kv_backend(seed) {
    let (sim, host) = sim(seed, kv_probe)?;
    sim.run(move |_world| async move { retries_then_success(&host, 2).await })
});

sim_test!(fn alarm_is_abandoned_after_six_retries(seed) {
    let (sim, host) = sim(seed, sqlite_probe)?;
    sim.run(move |_world| async move {
        configure(&host, "alarm_failures", 1_000).await?;
        arm(&host, 10).await?;
        // 2+4+8+16+32+64 s of backoff, with jitter: done well within 200 s; then nothing more runs.
        madsim::time::sleep(Duration::from_secs(600)).await;
        let runs = runs(&host).await?;
        ensure!(runs.len() == 7, "one run and 6 retries, then abandoned: {} runs", runs.len());
        let alarm: Option<i64> = call(&host, "get_alarm", ()).await?;
        ensure!(alarm.is_none(), "an abandoned alarm is cleared: {alarm:?}");
        Ok(())
    })
});

// An alarm set for a new time while the old one waits for its retry is a new alarm: its first run is told
// retry 0, and when its own retries run out it is the one given up (and cleared). Found by the test kit
// (testing::checks): the retries went on counting from the replaced alarm's, and gave up the replaced time,
// which left the new alarm set, to start its retries over from 0.
sim_test!(fn an_alarm_set_anew_during_retries_starts_its_own_retries(seed) {
    let (sim, host) = sim(seed, sqlite_probe)?;
    sim.run(move |_world| async move {
        configure(&host, "alarm_failures", 1_000).await?;
        let first = arm(&host, 10).await?;
        // The first run fails at once; its retry comes 2 s later. Meanwhile: a new alarm.
        madsim::time::sleep(Duration::from_millis(500)).await;
        let second = arm(&host, 100).await?;
        madsim::time::sleep(Duration::from_secs(600)).await;
        let runs = runs(&host).await?;
        let of_second: Vec<&AlarmRun> = runs.iter().filter(|r| r.info.scheduled_time == second).collect();
        let counts: Vec<u32> = of_second.iter().map(|r| r.info.retry_count).collect();
        ensure!(
            counts == (0..=6).collect::<Vec<u32>>(),
            "the new alarm runs 7 times, told retry 0 to 6: {counts:?} (runs of the first: {})",
            runs.iter().filter(|r| r.info.scheduled_time == first).count()
        );
        let alarm: Option<i64> = call(&host, "get_alarm", ()).await?;
        ensure!(alarm.is_none(), "the new alarm, given up, is cleared: {alarm:?}");
        Ok(())
    })
});

sim_test!(fn a_crash_mid_handler_runs_the_alarm_again(seed) {
    let (sim, host) = sim(seed, sqlite_probe)?;
    sim.run(move |world| async move {
        configure(&host, "alarm_wait_ms", 5_000).await?;
        let scheduled = arm(&host, 1_000).await?;
        madsim::time::sleep(Duration::from_secs(3)).await;
        let first = runs(&host).await?;
        ensure!(first.len() == 1, "the handler is running: {first:?}");
        world.crash(HOST).map_err(|e| Failure::new(e.to_string()))?;
        world.restart(HOST).map_err(|e| Failure::new(e.to_string()))?;
        madsim::time::sleep(Duration::from_secs(30)).await;
        let runs = runs(&host).await?;
        ensure!(runs.len() == 2, "the alarm runs again after the crash (at least once): {runs:?}");
        ensure!(runs[1].info.scheduled_time == scheduled, "the same alarm: {runs:?}");
        let alarm: Option<i64> = call(&host, "get_alarm", ()).await?;
        ensure!(alarm.is_none(), "deleted once a run succeeded: {alarm:?}");
        Ok(())
    })
});

sim_test!(fn an_alarm_set_by_its_handler_stands(seed) {
    let (sim, host) = sim(seed, sqlite_probe)?;
    sim.run(move |_world| async move {
        let now: i64 = call(&host, "now", ()).await?;
        configure(&host, "alarm_then", now + 60_000).await?;
        arm(&host, 1_000).await?;
        madsim::time::sleep(Duration::from_secs(10)).await;
        let alarm: Option<i64> = call(&host, "get_alarm", ()).await?;
        ensure!(alarm == Some(now + 60_000), "the handler's new alarm stands: {alarm:?}");
        madsim::time::sleep(Duration::from_secs(60)).await;
        let runs = runs(&host).await?;
        ensure!(runs.len() == 2, "and it runs in its turn: {runs:?}");
        Ok(())
    })
});

sim_test!(fn set_alarm_errors(seed) {
    let (sim, host) = sim(seed, sqlite_probe)?;
    sim.run(move |_world| async move {
        let zero = host
            .run(|env| async move {
                let stub = env.durable_object("PROBE").unwrap().get_by_name("p");
                let e = stub.call::<_, ()>("set_alarm", &0i64).await.unwrap_err();
                (format!("{:?}", e.kind()), e.message().to_string())
            })
            .await?;
        ensure!(zero.0 == "TypeError" && zero.1 == "setAlarm() cannot be called with an alarm time <= 0", "{zero:?}");
        let (constructor_ok, later) = host
            .run(|env| async move {
                let stub = env.durable_object("NO_ALARM").unwrap().get_by_name("n");
                stub.call::<_, (bool, Option<(String, String)>)>("set_alarm", &()).await.unwrap()
            })
            .await?;
        ensure!(constructor_ok, "setAlarm without a handler is allowed in the constructor");
        let expected = Some((
            "TypeError".to_string(),
            "Your Durable Object class must have an alarm() handler in order to call setAlarm()".to_string(),
        ));
        ensure!(later == expected, "after construction it is a TypeError: {later:?}");
        Ok(())
    })
});

sim_test!(fn a_past_alarm_fires_at_once(seed) {
    let (sim, host) = sim(seed, sqlite_probe)?;
    sim.run(move |_world| async move {
        let now: i64 = call(&host, "now", ()).await?;
        call::<_, ()>(&host, "set_alarm", now - 60_000).await?;
        madsim::time::sleep(Duration::from_millis(500)).await;
        let runs = runs(&host).await?;
        ensure!(runs.len() == 1, "a past alarm fires almost at once: {runs:?}");
        ensure!(runs[0].at_ms - now < 500, "within ms: {runs:?}");
        ensure!(runs[0].info.scheduled_time >= now, "a past time is clamped to now when set: {runs:?}");
        Ok(())
    })
});

sim_test!(fn an_alarm_handler_is_cut_off_after_15_minutes_and_retried(seed) {
    let (sim, host) = sim(seed, sqlite_probe)?;
    sim.run(move |_world| async move {
        configure(&host, "alarm_wait_ms", 16 * 60 * 1000).await?;
        arm(&host, 1_000).await?;
        madsim::time::sleep(Duration::from_secs(15 * 60 + 10)).await;
        let runs = runs(&host).await?;
        ensure!(runs.len() == 2, "cut off at 15 min, then retried 2 s later: {runs:?}");
        let gap = runs[1].at_ms - runs[0].at_ms;
        ensure!((15 * 60 * 1000..15 * 60 * 1000 + 3_000).contains(&gap), "the retry came {gap} ms after the first run");
        ensure!(runs[1].info.retry_count == 1, "the timeout counts as a failure: {runs:?}");
        Ok(())
    })
});

sim_test!(fn abort_without_retry_abandons_the_alarm(seed) {
    let (sim, host) = sim(seed, sqlite_probe)?;
    sim.run(move |_world| async move {
        configure(&host, "alarm_abort", 1).await?;
        // A wait ends the handler's first turn, so its record of the run commits before it aborts.
        configure(&host, "alarm_wait_ms", 1).await?;
        arm(&host, 1_000).await?;
        madsim::time::sleep(Duration::from_secs(120)).await;
        let runs = runs(&host).await?;
        ensure!(runs.len() == 1, "abort with retry_alarm false: no retry: {runs:?}");
        let alarm: Option<i64> = call(&host, "get_alarm", ()).await?;
        ensure!(alarm.is_none(), "and the alarm is abandoned: {alarm:?}");
        Ok(())
    })
});
