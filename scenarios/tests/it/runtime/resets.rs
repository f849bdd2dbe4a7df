//! Resets and critical sections (spec §1.1, §1.3, §6.2, §10): `abort`, a failing constructor, a failing or
//! timed-out `block_concurrency_while`, its nesting limit, and what stubs see afterwards (a broken stub keeps
//! failing; a new stub reaches a new instance). Also: a stub is made without contacting the object.

use std::time::Duration;

use dosim_runtime::embed::HostBuilder;
use dosim_runtime::error::messages;
use dosim_runtime::prelude::*;
use dosim_scenarios::objects::Probe;
use dosim_scenarios::sim_host::{host_builder, on_node};
use dosim_sim::{ensure, sim_test, DiskConfig, Sim};

use crate::{sqlite_class, HOST};

fn probe_host() -> HostBuilder {
    host_builder("worker")
        .class::<Probe>("Probe")
        .binding("PROBE", "Probe")
        .migration(sqlite_class("v1", "Probe"))
}

/// An error as a test compares it: message and the four flags.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    message: String,
    retryable: bool,
    overloaded: bool,
    reset: bool,
    remote: bool,
}

fn seen(e: &Error) -> Seen {
    Seen {
        message: e.message().to_string(),
        retryable: e.retryable(),
        overloaded: e.overloaded(),
        reset: e.durable_object_reset(),
        remote: e.remote(),
    }
}

fn sim(seed: dosim_sim::Seed) -> Result<Sim, dosim_sim::RunFailure> {
    Ok(Sim::builder().seed(seed).nodes(1).disk(DiskConfig::default()).build()?)
}

sim_test!(fn abort_resets_discards_the_write_and_breaks_the_stub(seed) {
    sim(seed)?.run(|world| async move {
        let (first, again, stored, fresh) = on_node(&world, HOST, || async {
            let host = probe_host().build().unwrap();
            let ns = host.env().durable_object("PROBE").unwrap();
            let stub = ns.get_by_name("p");
            stub.call::<_, ()>("put", &("before".to_string(), 1i64, false)).await.unwrap();
            let first = stub.call::<_, ()>("write_then_abort", &Option::<String>::None).await.unwrap_err();
            let again = stub.call::<_, Option<i64>>("get", &"before".to_string()).await.unwrap_err();
            let fresh_stub = ns.get_by_name("p");
            let stored = fresh_stub.call::<_, Option<i64>>("get", &"aborted_write".to_string()).await.unwrap();
            let fresh = fresh_stub.call::<_, Option<i64>>("get", &"before".to_string()).await.unwrap();
            (seen(&first), seen(&again), stored, fresh)
        })
        .await?;
        let expected = Seen { message: messages::ABORTED.into(), retryable: false, overloaded: false, reset: true, remote: false };
        ensure!(first == expected, "abort's error: {first:?}");
        ensure!(again == expected, "the stub stays broken with the same error: {again:?}");
        ensure!(stored.is_none(), "the write of the aborted turn is discarded: {stored:?}");
        ensure!(fresh == Some(1), "a new stub reaches a new instance, with the committed data: {fresh:?}");
        Ok(())
    })
});

sim_test!(fn abort_with_a_reason(seed) {
    sim(seed)?.run(|world| async move {
        let e = on_node(&world, HOST, || async {
            let host = probe_host().build().unwrap();
            let stub = host.env().durable_object("PROBE").unwrap().get_by_name("p");
            seen(&stub.call::<_, ()>("write_then_abort", &Some("enough".to_string())).await.unwrap_err())
        })
        .await?;
        ensure!(e.message == "enough" && e.reset, "{e:?}");
        Ok(())
    })
});

sim_test!(fn a_failing_constructor_breaks_its_instance(seed) {
    sim(seed)?.run(|world| async move {
        let (first, again, next) = on_node(&world, HOST, || async {
            let host = probe_host().build().unwrap();
            let ns = host.env().durable_object("PROBE").unwrap();
            let setup = ns.get_by_name("p");
            setup.call::<_, ()>("set", &("constructor_fails".to_string(), ciborium::Value::from("no can do"))).await.unwrap();
            // Reset it, so the next event constructs again, and fails.
            let _ = setup.call::<_, ()>("write_then_abort", &Option::<String>::None).await;
            let stub = ns.get_by_name("p");
            let first = seen(&stub.call::<_, i64>("now", &()).await.unwrap_err());
            let again = seen(&stub.call::<_, i64>("now", &()).await.unwrap_err());
            let next = seen(&ns.get_by_name("p").fetch(Request::get("/")).await.unwrap_err());
            (first, again, next)
        })
        .await?;
        let expected = Seen { message: "no can do".into(), retryable: false, overloaded: false, reset: true, remote: true };
        ensure!(first == expected, "every event on the instance gets the constructor's error: {first:?}");
        ensure!(again == expected, "and the stub stays broken: {again:?}");
        ensure!(next == expected, "a new instance constructs again, and fails again: {next:?}");
        Ok(())
    })
});

sim_test!(fn block_concurrency_while_failure_resets(seed) {
    sim(seed)?.run(|world| async move {
        let (first, fresh) = on_node(&world, HOST, || async {
            let host = probe_host().build().unwrap();
            let ns = host.env().durable_object("PROBE").unwrap();
            let stub = ns.get_by_name("p");
            let first = seen(&stub.call::<_, ()>("block_fails", &"inside".to_string()).await.unwrap_err());
            let fresh = ns.get_by_name("p").call::<_, i64>("now", &()).await.is_ok();
            (first, fresh)
        })
        .await?;
        ensure!(first.message == "inside" && first.reset, "a failed critical section breaks the gate and resets: {first:?}");
        ensure!(fresh, "a new stub reaches a new instance");
        Ok(())
    })
});

sim_test!(fn block_concurrency_while_times_out_after_30_s(seed) {
    sim(seed)?.run(|world| async move {
        let (e, elapsed) = on_node(&world, HOST, || async {
            let host = probe_host().build().unwrap();
            let stub = host.env().durable_object("PROBE").unwrap().get_by_name("p");
            let start = madsim::time::Instant::now();
            let e = seen(&stub.call::<_, ()>("block", &31_000u64).await.unwrap_err());
            (e, start.elapsed())
        })
        .await?;
        let expected = Seen { message: messages::BLOCK_CONCURRENCY_TIMEOUT.into(), retryable: false, overloaded: true, reset: true, remote: false };
        ensure!(e == expected, "{e:?}");
        ensure!(elapsed >= Duration::from_secs(30) && elapsed < Duration::from_secs(31), "reset at 30 s: {elapsed:?}");
        Ok(())
    })
});

sim_test!(fn block_concurrency_while_nests_to_64(seed) {
    sim(seed)?.run(|world| async move {
        let (ok, too_deep, after) = on_node(&world, HOST, || async {
            let host = probe_host().build().unwrap();
            let stub = host.env().durable_object("PROBE").unwrap().get_by_name("p");
            let ok = stub.call::<_, (u32, Option<String>)>("nest", &64u32).await.unwrap();
            let too_deep = stub.call::<_, (u32, Option<String>)>("nest", &65u32).await.unwrap();
            let after = stub.call::<_, (u32, Option<String>)>("nest", &3u32).await.unwrap();
            (ok, too_deep, after)
        })
        .await?;
        ensure!(ok == (64, None), "64 levels are allowed: {ok:?}");
        let refused = Some(messages::BLOCK_CONCURRENCY_NESTED_TOO_DEEPLY.to_string());
        ensure!(too_deep == (64, refused), "the 65th call is refused: {too_deep:?}");
        ensure!(after == (3, None), "without resetting the object (the error was caught): {after:?}");
        Ok(())
    })
});

sim_test!(fn block_concurrency_while_holds_other_events(seed) {
    sim(seed)?.run(|world| async move {
        let (blocked_until, other_ran_at) = on_node(&world, HOST, || async {
            let host = probe_host().build().unwrap();
            let ns = host.env().durable_object("PROBE").unwrap();
            let stub = std::rc::Rc::new(ns.get_by_name("p"));
            let start = madsim::time::Instant::now();
            let s = stub.clone();
            let blocker = madsim::task::spawn_local(async move { s.call::<_, ()>("block", &2_000u64).await });
            madsim::time::sleep(Duration::from_millis(10)).await;
            let other = stub.call::<_, i64>("now", &()).await.unwrap();
            let other_at = start.elapsed();
            blocker.await.unwrap().unwrap();
            let _ = other;
            (Duration::from_millis(2_000), other_at)
        })
        .await?;
        ensure!(other_ran_at >= blocked_until, "an event sent during the critical section runs after it: {other_ran_at:?}");
        Ok(())
    })
});

sim_test!(fn a_stub_does_not_create_the_object(seed) {
    sim(seed)?.run(|world| async move {
        let (before, after) = on_node(&world, HOST, || async {
            let host = probe_host().build().unwrap();
            let ns = host.env().durable_object("PROBE").unwrap();
            let stub = ns.get(&ns.new_unique_id().unwrap()).unwrap();
            let before = host.live_instances();
            stub.fetch(Request::get("/")).await.unwrap();
            (before, host.live_instances())
        })
        .await?;
        ensure!(before == 0 && after == 1, "created on the first call: {before} then {after}");
        Ok(())
    })
});

sim_test!(fn a_failed_write_resets_the_object(seed) {
    sim(seed)?.run(|world| async move {
        let (failed, again, fresh, stored) = on_node(&world, HOST, || async {
            let host = probe_host().build().unwrap();
            let ns = host.env().durable_object("PROBE").unwrap();
            let stub = ns.get_by_name("p");
            stub.call::<_, ()>("put", &("k".to_string(), 1i64, false)).await.unwrap();
            // The disk's next operation fails: the next write cannot reach it.
            let next = dosim_sim::disk::op_count(HOST) + 1;
            dosim_sim::disk::arm_fault(HOST, next, dosim_sim::DiskFaultKind::IoError);
            let failed = stub.call::<_, ()>("put", &("k".to_string(), 2i64, false)).await.unwrap_err();
            let again = stub.call::<_, Option<i64>>("get", &"k".to_string()).await.unwrap_err();
            let fresh_stub = ns.get_by_name("p");
            let stored = fresh_stub.call::<_, Option<i64>>("get", &"k".to_string()).await.unwrap();
            (seen(&failed), seen(&again), true, stored)
        })
        .await?;
        ensure!(failed.reset, "a write the disk refused resets the object: {failed:?}");
        ensure!(failed.message.contains("SQLITE_IOERR"), "with SQLite's error: {failed:?}");
        ensure!(again.message == failed.message && again.reset, "the stub stays broken: {again:?}");
        ensure!(fresh && stored == Some(1), "a new instance has the last committed value: {stored:?}");
        Ok(())
    })
});

sim_test!(fn a_failed_unconfirmed_write_resets_the_object_too(seed) {
    // An unconfirmed write holds no output lock, so its failed commit breaks the output gate directly
    // (spec §2.5, §3.2): the object is reset all the same. Found by mutation testing (docs/MUTATION.md).
    sim(seed)?.run(|world| async move {
        let (put, again, stored) = on_node(&world, HOST, || async {
            let host = probe_host().build().unwrap();
            let ns = host.env().durable_object("PROBE").unwrap();
            let stub = ns.get_by_name("p");
            stub.call::<_, ()>("put", &("k".to_string(), 1i64, false)).await.unwrap();
            let next = dosim_sim::disk::op_count(HOST) + 1;
            dosim_sim::disk::arm_fault(HOST, next, dosim_sim::DiskFaultKind::IoError);
            let put = stub.call::<_, ()>("put", &("k".to_string(), 2i64, true)).await.map_err(|e| seen(&e));
            let again = stub.call::<_, Option<i64>>("get", &"k".to_string()).await.unwrap_err();
            let stored = ns.get_by_name("p").call::<_, Option<i64>>("get", &"k".to_string()).await;
            (put, seen(&again), stored.map_err(|e| seen(&e)))
        })
        .await?;
        // The turn's commit runs before its reply leaves, so the reply already gets the commit's error.
        ensure!(
            matches!(&put, Err(e) if e.reset && e.message.contains("SQLITE_IOERR")),
            "the reply gets the commit's error: {put:?}"
        );
        ensure!(again.reset && again.message.contains("SQLITE_IOERR"), "the object was reset: {again:?}");
        ensure!(stored == Ok(Some(1)), "a new instance has the last committed value: {stored:?}");
        Ok(())
    })
});

sim_test!(fn wait_until_runs_past_the_reply_and_delays_eviction(seed) {
    sim(seed)?.run(|world| async move {
        let (live_at_11s, bg, live_at_end) = on_node(&world, HOST, || async {
            let host = probe_host().build().unwrap();
            let stub = host.env().durable_object("PROBE").unwrap().get_by_name("p");
            stub.call::<_, ()>("background", &20_000u64).await.unwrap();
            madsim::time::sleep(Duration::from_secs(11)).await;
            let live_at_11s = host.live_instances();
            madsim::time::sleep(Duration::from_secs(10)).await;
            let bg = stub.call::<_, Option<i64>>("get", &"bg".to_string()).await.unwrap();
            madsim::time::sleep(Duration::from_secs(11)).await;
            (live_at_11s, bg, host.live_instances())
        })
        .await?;
        ensure!(live_at_11s == 1, "a wait_until task keeps the idle object in memory past 10 s");
        ensure!(bg == Some(1), "the task ran to the end after the reply: {bg:?}");
        ensure!(live_at_end == 0, "once it is done, the idle object is evicted");
        Ok(())
    })
});
