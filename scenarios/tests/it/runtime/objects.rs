//! The get-started examples, read-modify-write under the input gate, and eviction.

use std::future::Future;
use std::rc::Rc;

use dosim_runtime::embed::HostBuilder;
use dosim_runtime::prelude::*;
use dosim_scenarios::objects::{Counter, MemoryCounter, MyDurableObject, RacyCounter};
use dosim_scenarios::sim_host::{host_builder, on_node};
use dosim_sim::{ensure, sim_test, DiskConfig, Sim};

use crate::{kv_class, sqlite_class, HOST};

/// A host running `Counter` (SQLite backend) as `COUNTER`.
fn counter_host() -> HostBuilder {
    host_builder("worker")
        .class::<Counter>("Counter")
        .binding("COUNTER", "Counter")
        .migration(sqlite_class("v1", "Counter"))
}

/// A host running `T` on the KV backend; 100 concurrent `/increment`s, each accepted; then the value.
async fn increment_100_and_read<T: DurableObject>() -> String {
    let host = host_builder("worker")
        .class::<T>("Counter")
        .binding("COUNTER", "Counter")
        .migration(kv_class("v1", "Counter"))
        .build()
        .expect("deploys");
    let stub = Rc::new(host.env().durable_object("COUNTER").unwrap().get_by_name("c"));
    for r in increments(stub.clone(), 100).await {
        r.expect("accepted");
    }
    stub.fetch(Request::get("/")).await.expect("read").text().unwrap()
}

pub(crate) async fn increments(stub: Rc<Stub>, n: usize) -> Vec<Result<Response, Error>> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let s = stub.clone();
        tasks.push(madsim::task::spawn_local(async move { s.fetch(Request::get("/increment")).await }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("a client task is not cancelled"));
    }
    out
}

// SQLite storage calls are synchronous (spec §3.4): none of them yields, so whether the input gate holds
// across them cannot show here; this is the counter's arithmetic on the SQLite backend. The input gate is
// shown below, where a storage call does yield.
sim_test!(fn sqlite_counter_100_concurrent_increments_give_100(seed) {
    Sim::builder().seed(seed).nodes(1).disk(DiskConfig::default()).build()?.run(|world| async move {
        let (statuses, last) = on_node(&world, HOST, || async {
            let host = counter_host().build().expect("deploys");
            let stub = Rc::new(host.env().durable_object("COUNTER").unwrap().get_by_name("c"));
            let results = increments(stub.clone(), 100).await;
            let statuses: Vec<u16> = results.into_iter().map(|r| r.expect("accepted").status()).collect();
            let last = stub.fetch(Request::get("/")).await.expect("read").text().unwrap();
            (statuses, last)
        })
        .await?;
        ensure!(statuses.iter().all(|s| *s == 200), "every increment succeeds: {statuses:?}");
        ensure!(last == "100", "100 increments give 100, got {last}");
        Ok(())
    })
});

/// The `sometimes` point of a [`GateCounter`] read that returned `Pending`: it waited for storage.
const READ_WAITED: &str = "a counter's read waited for storage";

/// A KV-backend counter whose read is watched: each time it yields (a cache miss travelling to storage over
/// the link) it marks [`READ_WAITED`]. With `RACY` the read passes `allow_concurrency`, which lets other events
/// in while it waits: the input gate removed for that call.
struct GateCounter<const RACY: bool> {
    state: State,
}

impl<const RACY: bool> DurableObject for GateCounter<RACY> {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        Ok(GateCounter { state })
    }

    async fn fetch(&self, request: Request) -> Result<Response, Error> {
        let storage = self.state.storage();
        let read = GetOptions { allow_concurrency: RACY, no_cache: false };
        let mut get = std::pin::pin!(storage.get_with::<i64>("value", read));
        let mut waited = false;
        let value = std::future::poll_fn(|cx| {
            let poll = get.as_mut().poll(cx);
            waited |= poll.is_pending();
            poll
        })
        .await?;
        if waited {
            dosim_sim::sometimes(READ_WAITED);
        }
        let value = value.unwrap_or(0) + 1;
        if request.path() == "/increment" {
            storage.put("value", &value).await?;
        }
        Ok(Response::ok(value.to_string()))
    }
}

/// 10 waves of 10 concurrent increments of one KV-backend counter, evicting it between waves so that each
/// wave's first read misses the cache and travels to storage. Returns the final count.
async fn waves_of_increments<T: DurableObject>() -> i64 {
    let host = host_builder("worker")
        .class::<T>("Counter")
        .binding("COUNTER", "Counter")
        .migration(kv_class("v1", "Counter"))
        .build()
        .expect("deploys");
    let stub = Rc::new(host.env().durable_object("COUNTER").unwrap().get_by_name("c"));
    for _ in 0..10 {
        for r in increments(stub.clone(), 10).await {
            r.expect("accepted");
        }
        assert_eq!(host.evict_idle(), 1, "the idle counter is evicted between waves");
    }
    let last = stub.fetch(Request::get("/")).await.expect("read").text().unwrap();
    last.parse::<i64>().expect("a count") - 1
}

// The input gate (spec §1.2): a read that waits for storage holds it, so the 9 increments queued behind it
// do not read the same value. Fault on the path: none; what the gate meets is a cache miss on each wave's
// first read (counted: every wave's read waited).
sim_test!(fn input_gate_holds_across_a_read_that_waits_for_storage(seed) {
    Sim::builder().seed(seed).nodes(1).disk(DiskConfig::default()).build()?.run(|world| async move {
        let last = on_node(&world, HOST, waves_of_increments::<GateCounter<false>>).await?;
        let waited = dosim_sim::sometimes_count(READ_WAITED);
        ensure!(waited >= 10, "each wave's first read misses the cache and waits: {waited} reads waited");
        ensure!(last == 100, "reads hold the input gate, so 100 increments give 100; got {last}");
        Ok(())
    })
});

// The negative control of the test above: the same waves with `allow_concurrency` on the read (the input gate
// removed for it) lose updates.
sim_test!(fn without_the_input_gate_the_same_reads_lose_updates(seed) {
    Sim::builder().seed(seed).nodes(1).disk(DiskConfig::default()).build()?.run(|world| async move {
        let last = on_node(&world, HOST, waves_of_increments::<GateCounter<true>>).await?;
        let waited = dosim_sim::sometimes_count(READ_WAITED);
        ensure!(waited >= 10, "each wave's first read misses the cache and waits: {waited} reads waited");
        ensure!(last < 100, "with the gate open during the read, concurrent increments lose updates; got {last}");
        dosim_sim::note("counter without the input gate after 100 increments", last);
        Ok(())
    })
});

sim_test!(fn get_started_examples_answer(seed) {
    Sim::builder().seed(seed).nodes(1).disk(DiskConfig::default()).build()?.run(|world| async move {
        let (hello, not_found, routed) = on_node(&world, HOST, || async {
            let host = host_builder("worker")
                .class::<Counter>("Counter")
                .class::<MyDurableObject>("MyDurableObject")
                .binding("COUNTER", "Counter")
                .binding("MY_DURABLE_OBJECT", "MyDurableObject")
                .migration(sqlite_class("v1", "Counter"))
                .migration(sqlite_class("v2", "MyDurableObject"))
                .build()
                .expect("deploys");
            let env = host.env();
            let hello: String =
                env.durable_object("MY_DURABLE_OBJECT").unwrap().get_by_name("foo").call("say_hello", &()).await.unwrap();
            let counter = env.durable_object("COUNTER").unwrap().get_by_name("/a");
            let not_found = counter.fetch(Request::get("/nope")).await.unwrap().status();
            for _ in 0..3 {
                dosim_scenarios::objects::worker_fetch(&env, "COUNTER", Request::get("/increment")).await.unwrap();
            }
            let routed = counter.fetch(Request::get("/")).await.unwrap().text().unwrap();
            (hello, not_found, routed)
        })
        .await?;
        ensure!(hello == "Hello, World!", "say_hello: {hello}");
        ensure!(not_found == 404, "unknown path: {not_found}");
        // The front routes `/increment` to the object named "/increment", not "/a".
        ensure!(routed == "0", "the front routes by path: {routed}");
        Ok(())
    })
});

sim_test!(fn eviction_loses_memory_but_not_storage(seed) {
    Sim::builder().seed(seed).nodes(1).disk(DiskConfig::default()).build()?.run(|world| async move {
        let (memory, stored) = on_node(&world, HOST, || async {
            let host = host_builder("worker")
                .class::<Counter>("Counter")
                .class::<MemoryCounter>("MemoryCounter")
                .binding("COUNTER", "Counter")
                .binding("MEMORY", "MemoryCounter")
                .migration(sqlite_class("v1", "Counter"))
                .migration(sqlite_class("v2", "MemoryCounter"))
                .build()
                .expect("deploys");
            let env = host.env();
            let memory = env.durable_object("MEMORY").unwrap().get_by_name("m");
            let counter = env.durable_object("COUNTER").unwrap().get_by_name("c");
            for _ in 0..5 {
                memory.fetch(Request::get("/")).await.unwrap();
                counter.fetch(Request::get("/increment")).await.unwrap();
            }
            // Idle past the eviction timeout: both instances leave memory.
            madsim::time::sleep(std::time::Duration::from_secs(11)).await;
            assert_eq!(host.live_instances(), 0, "idle objects are evicted after 10 s");
            let memory = memory.fetch(Request::get("/")).await.unwrap().text().unwrap();
            let stored = counter.fetch(Request::get("/")).await.unwrap().text().unwrap();
            (memory, stored)
        })
        .await?;
        ensure!(memory == "1", "the in-memory count restarts after eviction: {memory}");
        ensure!(stored == "5", "the stored count survives eviction: {stored}");
        Ok(())
    })
});

sim_test!(fn allow_concurrency_on_the_read_loses_updates(seed) {
    Sim::builder().seed(seed).nodes(1).disk(DiskConfig::default()).build()?.run(|world| async move {
        let last = on_node(&world, HOST, increment_100_and_read::<RacyCounter>).await?;
        let last: i64 = last.parse().unwrap();
        // Every increment read while the first read was still waiting for storage: they all read 0.
        ensure!(last < 100, "with allow_concurrency, concurrent read-modify-writes lose updates; got {last}");
        ensure!(last >= 1, "at least one increment lands; got {last}");
        dosim_sim::note("racy counter after 100 increments", last);
        Ok(())
    })
});

sim_test!(fn a_timer_between_read_and_write_lets_events_interleave(seed) {
    Sim::builder().seed(seed).nodes(1).disk(DiskConfig::default()).build()?.run(|world| async move {
        let last = on_node(&world, HOST, || async {
            let host = host_builder("worker")
                .class::<dosim_scenarios::objects::Probe>("Probe")
                .binding("PROBE", "Probe")
                .migration(sqlite_class("v1", "Probe"))
                .build()
                .expect("deploys");
            let stub = Rc::new(host.env().durable_object("PROBE").unwrap().get_by_name("p"));
            let mut tasks = Vec::new();
            for _ in 0..50 {
                let s = stub.clone();
                tasks.push(madsim::task::spawn_local(async move { s.call::<_, i64>("slow_increment", &()).await }));
            }
            let mut last = 0;
            for t in tasks {
                last = last.max(t.await.unwrap().expect("accepted"));
            }
            last
        })
        .await?;
        // Only storage operations hold the input gate (spec §1.2): a timer lets the other increments read the
        // same value.
        ensure!(last < 50, "a timer between read and write loses updates; got {last}");
        Ok(())
    })
});

/// 50 concurrent increments that sleep between read and write inside `storage.transaction()`.
async fn transactional_increments(build: HostBuilder) -> i64 {
    let host = build.build().expect("deploys");
    let stub = Rc::new(host.env().durable_object("PROBE").unwrap().get_by_name("p"));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let s = stub.clone();
        tasks.push(madsim::task::spawn_local(
            async move { s.call::<_, i64>("txn_slow_increment", &()).await },
        ));
    }
    let mut last = 0;
    for t in tasks {
        last = last.max(t.await.unwrap().expect("accepted"));
    }
    last
}

fn probe_host(migration: dosim_runtime::embed::Migration) -> HostBuilder {
    host_builder("worker")
        .class::<dosim_scenarios::objects::Probe>("Probe")
        .binding("PROBE", "Probe")
        .migration(migration)
}

sim_test!(fn storage_transaction_is_a_critical_section(seed) {
    Sim::builder().seed(seed).nodes(1).disk(DiskConfig::default()).build()?.run(|world| async move {
        let sqlite = on_node(&world, HOST, || transactional_increments(probe_host(sqlite_class("v1", "Probe")))).await?;
        let kv = on_node(&world, HOST, || transactional_increments(probe_host(kv_class("v2", "Probe")))).await?;
        // A timer inside the transaction does not let other events in (spec §1.3).
        ensure!(sqlite == 50, "SQLite backend: 50 transactional increments give 50, got {sqlite}");
        ensure!(kv == 50, "KV backend: 50 transactional increments give 50, got {kv}");
        Ok(())
    })
});
