//! Overload (spec §6.1): flooding one object raises each of the four messages, flagged `overloaded`; every
//! request that was accepted is still processed; and the defaults let 1,000 requests per second through.

use std::rc::Rc;
use std::time::Duration;

use dosim_runtime::embed::HostBuilder;
use dosim_runtime::embed::HostConfig;
use dosim_runtime::error::messages;
use dosim_runtime::prelude::*;
use dosim_scenarios::objects::{Counter, Probe};
use dosim_scenarios::sim_host::{host_builder, on_node};
use dosim_sim::{ensure, sim_test, DiskConfig, Sim};

use crate::{sqlite_class, HOST};

fn probe_host() -> HostBuilder {
    host_builder("worker")
        .class::<Probe>("Probe")
        .class::<Counter>("Counter")
        .binding("PROBE", "Probe")
        .binding("COUNTER", "Counter")
        .migration(sqlite_class("v1", "Probe"))
        .migration(sqlite_class("v2", "Counter"))
}

fn sim(seed: dosim_sim::Seed) -> Result<Sim, dosim_sim::RunFailure> {
    Ok(Sim::builder().seed(seed).nodes(1).disk(DiskConfig::default()).build()?)
}

/// What became of a flood: how many succeeded, and the errors of the others.
#[derive(Debug, Default)]
struct Flood {
    ok: usize,
    errors: Vec<(String, bool)>,
}

/// Blocks the object for `block_ms` (a critical section), then sends `requests` while it is blocked.
async fn flood(stub: Rc<Stub>, block_ms: u64, requests: Vec<Request>) -> Flood {
    let s = stub.clone();
    let blocker = madsim::task::spawn_local(async move { s.call::<_, ()>("block", &block_ms).await });
    madsim::time::sleep(Duration::from_millis(1)).await;
    let mut tasks = Vec::new();
    for r in requests {
        let s = stub.clone();
        tasks.push(madsim::task::spawn_local(async move { s.fetch(r).await }));
    }
    let mut out = Flood::default();
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => out.ok += 1,
            Err(e) => out.errors.push((e.message().to_string(), e.overloaded())),
        }
    }
    blocker.await.unwrap().unwrap();
    out
}

sim_test!(fn too_many_requests_queued(seed) {
    sim(seed)?.run(|world| async move {
        let f = on_node(&world, HOST, || async {
            let host = probe_host().build().unwrap();
            let stub = Rc::new(host.env().durable_object("PROBE").unwrap().get_by_name("p"));
            flood(stub, 100, (0..1_050).map(|_| Request::get("/q")).collect()).await
        })
        .await?;
        ensure!(f.ok == 1_000, "the first 1,000 are queued and processed: {}", f.ok);
        ensure!(f.errors.len() == 50, "the other 50 are refused: {}", f.errors.len());
        ensure!(
            f.errors.iter().all(|(m, o)| m == messages::OVERLOADED_TOO_MANY_QUEUED && *o),
            "with the exact message, overloaded: {:?}",
            f.errors.first()
        );
        Ok(())
    })
});

sim_test!(fn too_much_data_queued(seed) {
    sim(seed)?.run(|world| async move {
        let f = on_node(&world, HOST, || async {
            let host = probe_host().build().unwrap();
            let stub = Rc::new(host.env().durable_object("PROBE").unwrap().get_by_name("p"));
            let body = vec![7u8; 1 << 20];
            flood(stub, 100, (0..40).map(|_| Request::post("/big", body.clone())).collect()).await
        })
        .await?;
        // 32 MiB of queue: 31 requests of 1 MiB and a URL fit, the 32nd does not.
        ensure!(f.ok == 31, "31 requests of 1 MiB fit in 32 MiB: {}", f.ok);
        ensure!(
            f.errors.len() == 9 && f.errors.iter().all(|(m, o)| m == messages::OVERLOADED_TOO_MUCH_DATA && *o),
            "the rest are refused for their size: {:?}",
            f.errors
        );
        Ok(())
    })
});

sim_test!(fn requests_queued_for_too_long(seed) {
    sim(seed)?.run(|world| async move {
        let (early, late) = on_node(&world, HOST, || async {
            let host = probe_host().build().unwrap();
            let stub = Rc::new(host.env().durable_object("PROBE").unwrap().get_by_name("p"));
            let s = stub.clone();
            let blocker = madsim::task::spawn_local(async move { s.call::<_, ()>("block", &12_000u64).await });
            madsim::time::sleep(Duration::from_millis(1)).await;
            let s = stub.clone();
            let early = madsim::task::spawn_local(async move { s.fetch(Request::get("/early")).await });
            madsim::time::sleep(Duration::from_secs(11)).await;
            let late = stub.fetch(Request::get("/late")).await;
            let early = early.await.unwrap();
            blocker.await.unwrap().unwrap();
            (early.map(|r| r.status()), late.map_err(|e| (e.message().to_string(), e.overloaded())))
        })
        .await?;
        ensure!(early == Ok(200), "the queued request is still processed: {early:?}");
        ensure!(
            late == Err((messages::OVERLOADED_QUEUED_TOO_LONG.to_string(), true)),
            "a request behind one queued for 11 s is refused: {late:?}"
        );
        Ok(())
    })
});

sim_test!(fn too_many_requests_in_a_10_second_window(seed) {
    sim(seed)?.run(|world| async move {
        let (ok_first, refused, ok_later) = on_node(&world, HOST, || async {
            // The default window limit is 100,000 requests; a test that floods that many is slow, so this one
            // lowers it. The rule is the same.
            let mut config = HostConfig::default();
            config.overload.window_requests_max = 200;
            let host = probe_host().config(config).build().unwrap();
            let stub = host.env().durable_object("PROBE").unwrap().get_by_name("p");
            let mut ok_first = 0;
            let mut refused = Vec::new();
            for _ in 0..250 {
                match stub.fetch(Request::get("/w")).await {
                    Ok(_) => ok_first += 1,
                    Err(e) => refused.push((e.message().to_string(), e.overloaded())),
                }
            }
            madsim::time::sleep(Duration::from_secs(10)).await;
            let ok_later = stub.fetch(Request::get("/w")).await.is_ok();
            (ok_first, refused, ok_later)
        })
        .await?;
        ensure!(ok_first == 200, "200 accepted within the window: {ok_first}");
        ensure!(
            refused.len() == 50 && refused.iter().all(|(m, o)| m == messages::OVERLOADED_WINDOW && *o),
            "then refused: {:?}",
            refused.first()
        );
        ensure!(ok_later, "accepted again once the window has passed");
        Ok(())
    })
});

sim_test!(fn defaults_let_1000_requests_per_second_through(seed) {
    // The disk is not what this measures: the default one makes a commit durable only after its four syncs
    // of 0.5-2 ms, one after the other, so it sustains fewer than 200 commits a second, not 1,000.
    let sim = Sim::builder().seed(seed).nodes(1).disk(DiskConfig::instant()).build()?;
    sim.run(|world| async move {
        let (accepted, value) = on_node(&world, HOST, || async {
            let host = probe_host().build().unwrap();
            let stub = Rc::new(host.env().durable_object("COUNTER").unwrap().get_by_name("c"));
            let mut tasks = Vec::new();
            // 12 s at 1,000 increments per second: longer than the 10 s window.
            for _ in 0..12_000 {
                let s = stub.clone();
                tasks.push(madsim::task::spawn_local(async move { s.fetch(Request::get("/increment")).await }));
                madsim::time::sleep(Duration::from_millis(1)).await;
            }
            let mut accepted = 0;
            for t in tasks {
                if t.await.unwrap().is_ok() {
                    accepted += 1;
                }
            }
            let value = stub.fetch(Request::get("/")).await.unwrap().text().unwrap();
            (accepted, value)
        })
        .await?;
        ensure!(accepted == 12_000, "every request is accepted at 1,000/s: {accepted}");
        ensure!(value == "12000", "and counted: {value}");
        Ok(())
    })
});
