//! Host tests: the Vitest pool's helpers, deterministic, in a test of a few lines each (`ObjectTest::host`).

use std::time::Duration;

use dosim_runtime::prelude::*;
use dosim_scenarios::objects::{AlarmRun, Counter, Probe};
use dosim_scenarios::testing::ObjectTest;
use dosim_sim::{ensure, sim_test};

// runInDurableObject: the body looks inside the live instance, at the storage a call wrote.
sim_test!(fn run_in_object_sees_what_a_call_wrote(seed) {
    ObjectTest::host(seed).class::<Counter>("COUNTER").run_on_host(async |host| {
        let ns = host.env().durable_object("COUNTER")?;
        ns.get_by_name("c").fetch(Request::get("/increment")).await?;
        let id = ns.id_from_name("c");
        let stored = host
            .run_in_object::<Counter, _>("COUNTER", &id, async |_c, state| state.storage().get::<i64>("value").await)
            .await??;
        ensure!(stored == Some(1), "the instance's storage holds the increment: {stored:?}");
        Ok(())
    })
});

// runDurableObjectAlarm, and alarms on the simulated clock: an alarm half an hour away runs after half an hour of
// simulated sleep (at once in wall time), or now when asked.
sim_test!(fn alarms_follow_the_simulated_clock_and_run_now_when_asked(seed) {
    ObjectTest::host(seed).class::<Probe>("PROBE").run_on_host(async |host| {
        let ns = host.env().durable_object("PROBE")?;
        let (a, b) = (ns.get_by_name("a"), ns.get_by_name("b"));
        for stub in [&a, &b] {
            let now: i64 = stub.call("now", &()).await?;
            stub.call::<_, ()>("set_alarm", &(now + 1_800_000)).await?;
        }
        ensure!(host.run_alarm_now("PROBE", &ns.id_from_name("a")).await?, "a had an alarm");
        ensure!(!host.run_alarm_now("PROBE", &ns.id_from_name("a")).await?, "and has none after it ran");
        madsim::time::sleep(Duration::from_secs(1_801)).await;
        for stub in [&a, &b] {
            let runs: Vec<AlarmRun> = stub.call("alarm_runs", &()).await?;
            ensure!(runs.len() == 1, "each alarm ran once: {runs:?}");
        }
        Ok(())
    })
});

// listDurableObjectIds, eviction of one object, and overload and reset errors on demand.
sim_test!(fn ids_evictions_and_injected_errors(seed) {
    ObjectTest::host(seed).class::<Counter>("COUNTER").run_on_host(async |host| {
        let ns = host.env().durable_object("COUNTER")?;
        for name in ["x", "y"] {
            ns.get_by_name(name).fetch(Request::get("/increment")).await?;
        }
        let mut expected = vec![ns.id_from_name("x").to_string(), ns.id_from_name("y").to_string()];
        expected.sort();
        let ids: Vec<String> = host.object_ids("COUNTER")?.iter().map(|i| i.to_string()).collect();
        ensure!(ids == expected, "the namespace lists the objects it stored: {ids:?}");
        ensure!(host.evict("COUNTER", &ns.id_from_name("x"))?, "an idle object is evicted");
        host.overload_next("COUNTER", &ns.id_from_name("y"), 1)?;
        let refused = ns.get_by_name("y").fetch(Request::get("/increment")).await.unwrap_err();
        ensure!(refused.overloaded(), "overloaded on demand: {refused:?}");
        let after = ns.get_by_name("y").fetch(Request::get("/increment")).await?.text()?;
        ensure!(after == "2", "then served, the refused call never ran: {after}");
        Ok(())
    })
});
