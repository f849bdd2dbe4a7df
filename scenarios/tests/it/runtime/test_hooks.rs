//! The host's test hooks (the Cloudflare Vitest pool's `runInDurableObject`, `runDurableObjectAlarm`,
//! `listDurableObjectIds`, and errors and resets on demand) under simulation: `run_in_object` sees the
//! object and its state, its writes persist, and it is an event like a request (it waits behind a critical
//! section, and interleaves with a request at an ordinary await); a wrong type is refused naming both types;
//! `run_alarm_now` runs a stored alarm once and deletes it, or says there was none, and a failure is retried
//! as the scheduler retries; `object_ids` lists exactly the objects with storage, sorted; `overload_next`
//! refuses exactly N calls with the runtime's own overload error, then serves; `reset` on demand; and in a
//! cluster, the hooks run on the object's owner and are refused elsewhere.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use dosim_runtime::embed::{ClusterRole, Host, HostBuilder, HostConfig, OverloadLimits};
use dosim_runtime::error::messages;
use dosim_runtime::prelude::*;
use dosim_scenarios::cluster::cluster_node;
use dosim_scenarios::cluster::etcd::etcd_node;
use dosim_scenarios::objects::{AlarmRun, Counter, Probe};
use dosim_scenarios::sim_host::{host_builder, on_node, HostNode};
use dosim_sim::{ensure, sim_test, DiskConfig, Failure, NodeId, Sim};

use crate::{kv_class, sqlite_class, HOST};

/// An object whose in-memory state a hook can see: a hit counter and a log of what its events did.
struct Gadget {
    state: State,
    hits: Cell<u64>,
    log: RefCell<Vec<String>>,
}

impl Gadget {
    fn note(&self, what: &str) {
        self.log.borrow_mut().push(what.to_string());
    }
}

impl DurableObject for Gadget {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        Ok(Gadget { state, hits: Cell::new(0), log: RefCell::new(Vec::new()) })
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc("hit", async |g: &Gadget, (): ()| {
            g.hits.set(g.hits.get() + 1);
            let n: i64 = g.state.storage().get("n").await?.unwrap_or(0);
            g.state.storage().put("n", &(n + 1)).await?;
            Ok(n + 1)
        });
        h.rpc("read", async |g: &Gadget, (): ()| g.state.storage().get::<i64>("n").await);
        h.rpc("hits", async |g: &Gadget, (): ()| Ok(g.hits.get()));
        // A critical section: no other event runs until it ends, although it sleeps.
        h.rpc("section", async |g: &Gadget, ms: u64| {
            g.state
                .block_concurrency_while(async {
                    g.note("section start");
                    madsim::time::sleep(Duration::from_millis(ms)).await;
                    g.note("section end");
                    Ok(())
                })
                .await
        });
        // An ordinary await: other events run meanwhile (spec §1.2).
        h.rpc("nap", async |g: &Gadget, ms: u64| {
            g.note("nap start");
            madsim::time::sleep(Duration::from_millis(ms)).await;
            g.note("nap end");
            Ok(())
        });
    }
}

fn hooks_host() -> HostBuilder {
    host_builder("worker")
        .class::<Gadget>("Gadget")
        .class::<Probe>("Probe")
        .class::<Gadget>("KvGadget")
        .binding("GADGET", "Gadget")
        .binding("PROBE", "Probe")
        .binding("KV_GADGET", "KvGadget")
        .migration(sqlite_class("v1", "Gadget"))
        .migration(sqlite_class("v2", "Probe"))
        .migration(kv_class("v3", "KvGadget"))
}

fn sim(seed: dosim_sim::Seed) -> Result<Sim, dosim_sim::RunFailure> {
    Ok(Sim::builder().seed(seed).nodes(1).disk(DiskConfig::default()).build()?)
}

/// Fails with `message` unless `ok`.
fn check(ok: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(message())
    }
}

/// Runs `body` with a fresh host on the host node; its `Err` fails the test.
async fn with_host<F, Fut>(
    world: &dosim_sim::World,
    build: fn() -> HostBuilder,
    body: F,
) -> Result<(), Failure>
where
    F: FnOnce(Rc<Host>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + 'static,
{
    on_node(world, HOST, move || async move {
        let host = Rc::new(build().build().map_err(|e| e.to_string())?);
        body(host).await
    })
    .await?
    .map_err(Failure::new)
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

sim_test!(fn run_in_object_sees_the_state_and_its_writes_persist(seed) {
    sim(seed)?.run(|world| async move {
        with_host(&world, hooks_host, |host| async move {
            let ns = host.env().durable_object("GADGET").map_err(|e| e.to_string())?;
            let stub = ns.get_by_name("g");
            for _ in 0..2 {
                stub.call::<_, i64>("hit", &()).await.map_err(|e| e.to_string())?;
            }
            let id = ns.id_from_name("g");
            let (hits, stored, own_id) = host
                .run_in_object("GADGET", &id, async |g: &Gadget, state: &State| {
                    let stored: Option<i64> = state.storage().get("n").await?;
                    state.storage().put("n", &100i64).await?;
                    Ok::<_, Error>((g.hits.get(), stored, state.id().clone()))
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            check(hits == 2, || format!("the hook sees the live object's memory: {hits} hits"))?;
            check(stored == Some(2), || format!("and its storage: {stored:?}"))?;
            check(own_id == id, || format!("and its state is the object's: {own_id}"))?;
            // A new instance reads what the hook wrote from storage.
            check(host.evict("GADGET", &id).map_err(|e| e.to_string())?, || "the idle object is evicted".into())?;
            let n: Option<i64> = stub.call("read", &()).await.map_err(|e| e.to_string())?;
            check(n == Some(100), || format!("the hook's write persists: {n:?}"))?;
            let hits: u64 = stub.call("hits", &()).await.map_err(|e| e.to_string())?;
            check(hits == 0, || format!("in a new instance: {hits} hits"))?;
            Ok(())
        })
        .await
    })
});

// `run_in_object` is an event like a request: it waits behind a request holding the input gate (a critical
// section that sleeps 100 ms) and only then runs, and it runs between the turns of a request that awaits a
// timer (which does not hold the gate).
//
// Negative control, by hand: with `run_in_object` calling `f` on the object directly instead of
// delivering it as an event (`Instance::deliver`), this test fails: the hook ran at 10 ms inside the
// critical section and saw `["section start", "hook"]`.
sim_test!(fn run_in_object_waits_its_turn_behind_the_input_gate(seed) {
    sim(seed)?.run(|world| async move {
        with_host(&world, hooks_host, |host| async move {
            let ns = host.env().durable_object("GADGET").map_err(|e| e.to_string())?;
            let id = ns.id_from_name("g");
            let hook = async |g: &Gadget, _state: &State| {
                g.note("hook");
                g.log.borrow().clone()
            };
            // Behind a critical section.
            let stub = Rc::new(ns.get_by_name("g"));
            let s = stub.clone();
            let section = madsim::task::spawn_local(async move { s.call::<_, ()>("section", &100u64).await });
            madsim::time::sleep(Duration::from_millis(10)).await;
            let start = madsim::time::Instant::now();
            let log = host.run_in_object("GADGET", &id, hook).await.map_err(|e| e.to_string())?;
            let waited = start.elapsed();
            section.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            check(log == ["section start", "section end", "hook"], || {
                format!("the hook runs after the critical section ends: {log:?}")
            })?;
            check(waited >= Duration::from_millis(85), || format!("it waited for the gate: {waited:?}"))?;
            // Between the turns of a request at an ordinary await, as a request would.
            let ns = host.env().durable_object("GADGET").map_err(|e| e.to_string())?;
            let id = ns.id_from_name("h");
            let stub = Rc::new(ns.get_by_name("h"));
            let s = stub.clone();
            let nap = madsim::task::spawn_local(async move { s.call::<_, ()>("nap", &100u64).await });
            madsim::time::sleep(Duration::from_millis(10)).await;
            let log = host.run_in_object("GADGET", &id, hook).await.map_err(|e| e.to_string())?;
            nap.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            check(log == ["nap start", "hook"], || format!("the hook interleaves with the nap: {log:?}"))?;
            Ok(())
        })
        .await
    })
});

sim_test!(fn run_in_object_refuses_a_wrong_type_and_an_unknown_binding(seed) {
    sim(seed)?.run(|world| async move {
        with_host(&world, hooks_host, |host| async move {
            let ns = host.env().durable_object("GADGET").map_err(|e| e.to_string())?;
            let id = ns.id_from_name("g");
            let e = host
                .run_in_object("GADGET", &id, async |_p: &Probe, _s: &State| ())
                .await
                .err()
                .ok_or("a Probe hook on a Gadget is refused")?;
            let expected = format!(
                "run_in_object: the class bound to `GADGET` is `{}`, not `{}`",
                std::any::type_name::<Gadget>(),
                std::any::type_name::<Probe>()
            );
            check(e.message() == expected && e.kind() == ErrorKind::TypeError, || {
                format!("a TypeError naming both types: {:?} {}", e.kind(), e.message())
            })?;
            check(host.live_instances() == 0, || "the object was not started".into())?;
            let e = host
                .run_in_object("NOPE", &id, async |_g: &Gadget, _s: &State| ())
                .await
                .err()
                .ok_or("an unknown binding is refused")?;
            check(e.message() == messages::unknown_binding("NOPE"), || format!("unknown binding: {}", e.message()))?;
            // An id of another namespace is not this object.
            let other = host.env().durable_object("PROBE").map_err(|e| e.to_string())?.id_from_name("g");
            let refused = host.run_in_object("GADGET", &other, async |_g: &Gadget, _s: &State| ()).await;
            check(refused.is_err(), || "an id of another namespace is refused".into())?;
            Ok(())
        })
        .await
    })
});

async fn probe_call<A: serde::Serialize, R: serde::de::DeserializeOwned>(
    host: &Host,
    method: &str,
    args: &A,
) -> Result<R, String> {
    let stub = host.env().durable_object("PROBE").map_err(|e| e.to_string())?.get_by_name("p");
    stub.call(method, args).await.map_err(|e| format!("{method}: {e}"))
}

// `run_alarm_now` runs an alarm set half an hour ahead now, once, as a first run; deletes it; finds none the
// second time; and the scheduler does not run it again at its time.
//
// Negative control, by hand: with the forced run treating the alarm as the timer does (run only once due:
// `force` ignored in `alarm_event`), this test and the next fail: "the alarm half an hour ahead ran now".
sim_test!(fn run_alarm_now_runs_a_stored_alarm_once_and_deletes_it(seed) {
    sim(seed)?.run(|world| async move {
        with_host(&world, hooks_host, |host| async move {
            let id = host.env().durable_object("PROBE").map_err(|e| e.to_string())?.id_from_name("p");
            let ran = host.run_alarm_now("PROBE", &id).await.map_err(|e| e.to_string())?;
            check(!ran, || "no alarm: nothing ran".into())?;
            let now: i64 = probe_call(&host, "now", &()).await?;
            let at = now + 1_800_000;
            probe_call::<_, ()>(&host, "set_alarm", &at).await?;
            let ran = host.run_alarm_now("PROBE", &id).await.map_err(|e| e.to_string())?;
            check(ran, || "the alarm half an hour ahead ran now".into())?;
            let runs: Vec<AlarmRun> = probe_call(&host, "alarm_runs", &()).await?;
            check(runs.len() == 1, || format!("the handler ran once: {runs:?}"))?;
            let run = &runs[0];
            check(run.info.retry_count == 0 && !run.info.is_retry && run.info.scheduled_time == at, || {
                format!("as a first run of the alarm set for {at}: {:?}", run.info)
            })?;
            check(run.at_ms < at && run.alarm_seen.is_none(), || format!("now, the alarm reading null: {run:?}"))?;
            let alarm: Option<i64> = probe_call(&host, "get_alarm", &()).await?;
            check(alarm.is_none(), || format!("deleted on success: {alarm:?}"))?;
            check(host.scheduled_alarms() == 0, || "and gone from the scheduler's index".into())?;
            let again = host.run_alarm_now("PROBE", &id).await.map_err(|e| e.to_string())?;
            check(!again, || "a second call finds none".into())?;
            madsim::time::sleep(Duration::from_secs(2_400)).await;
            let runs: Vec<AlarmRun> = probe_call(&host, "alarm_runs", &()).await?;
            check(runs.len() == 1, || format!("the scheduler does not run it again at its time: {runs:?}"))?;
            Ok(())
        })
        .await
    })
});

sim_test!(fn run_alarm_now_failure_is_retried_as_the_scheduler_retries(seed) {
    sim(seed)?.run(|world| async move {
        with_host(&world, hooks_host, |host| async move {
            let id = host.env().durable_object("PROBE").map_err(|e| e.to_string())?.id_from_name("p");
            probe_call::<_, ()>(&host, "set", &("alarm_failures".to_string(), ciborium::Value::from(1))).await?;
            let now: i64 = probe_call(&host, "now", &()).await?;
            let at = now + 3_600_000;
            probe_call::<_, ()>(&host, "set_alarm", &at).await?;
            let ran = host.run_alarm_now("PROBE", &id).await.map_err(|e| e.to_string())?;
            check(ran, || "the alarm ran (and failed)".into())?;
            let alarm: Option<i64> = probe_call(&host, "get_alarm", &()).await?;
            check(alarm == Some(at), || format!("a failed alarm stays: {alarm:?}"))?;
            let busy = host.run_alarm_now("PROBE", &id).await;
            check(busy.is_err(), || format!("while its retry waits, another run is refused: {busy:?}"))?;
            // The first retry comes 2 to 2.5 s later, well before the alarm's time.
            madsim::time::sleep(Duration::from_secs(5)).await;
            let runs: Vec<AlarmRun> = probe_call(&host, "alarm_runs", &()).await?;
            check(runs.len() == 2, || format!("one retry: {runs:?}"))?;
            let gap = runs[1].at_ms - runs[0].at_ms;
            check(runs[1].info.retry_count == 1 && (2_000..=2_600).contains(&gap), || {
                format!("retry_count 1 after the first backoff ({gap} ms): {:?}", runs[1].info)
            })?;
            let alarm: Option<i64> = probe_call(&host, "get_alarm", &()).await?;
            check(alarm.is_none(), || format!("deleted once a retry succeeded: {alarm:?}"))?;
            Ok(())
        })
        .await
    })
});

sim_test!(fn object_ids_lists_exactly_the_objects_with_storage_sorted(seed) {
    sim(seed)?.run(|world| async move {
        with_host(&world, hooks_host, |host| async move {
            let ids = |binding: &str| host.object_ids(binding).map_err(|e| e.to_string());
            check(ids("GADGET")?.is_empty(), || "no object yet".into())?;
            let mut expected = Vec::new();
            for binding in ["GADGET", "KV_GADGET"] {
                let ns = host.env().durable_object(binding).map_err(|e| e.to_string())?;
                let mut made = Vec::new();
                for name in ["zeta", "alpha", "mid"] {
                    ns.get_by_name(name).call::<_, i64>("hit", &()).await.map_err(|e| e.to_string())?;
                    made.push(ns.id_from_name(name));
                }
                made.sort_by_key(|id| id.to_string());
                expected.push(made);
            }
            probe_call::<_, Option<i64>>(&host, "get", &"k".to_string()).await?;
            let gadgets = ids("GADGET")?;
            check(gadgets == expected[0], || format!("the three gadgets, sorted: {gadgets:?} vs {:?}", expected[0]))?;
            let kv = ids("KV_GADGET")?;
            check(kv == expected[1], || format!("the three KV gadgets, sorted: {kv:?}"))?;
            let probe = host.env().durable_object("PROBE").map_err(|e| e.to_string())?.id_from_name("p");
            let probes = ids("PROBE")?;
            check(probes == [probe], || format!("each namespace lists its own: {probes:?}"))?;
            check(host.object_ids("NOPE").is_err(), || "an unknown binding is refused".into())?;
            Ok(())
        })
        .await
    })
});

/// A host whose objects refuse a request when one is queued already: a real overload, to compare with.
fn small_queue_host() -> HostBuilder {
    let overload = OverloadLimits { queued_requests_max: 1, ..OverloadLimits::default() };
    hooks_host().config(HostConfig { overload, ..HostConfig::default() })
}

sim_test!(fn overload_next_refuses_exactly_n_calls_as_a_real_overload_then_serves(seed) {
    sim(seed)?.run(|world| async move {
        with_host(&world, small_queue_host, |host| async move {
            let ns = host.env().durable_object("GADGET").map_err(|e| e.to_string())?;
            // A real overload: one request queued behind a critical section, the next refused.
            let stub = Rc::new(ns.get_by_name("real"));
            let s = stub.clone();
            let section = madsim::task::spawn_local(async move { s.call::<_, ()>("section", &50u64).await });
            madsim::time::sleep(Duration::from_millis(1)).await;
            let s = stub.clone();
            let queued = madsim::task::spawn_local(async move { s.call::<_, i64>("hit", &()).await });
            madsim::time::sleep(Duration::from_millis(1)).await;
            let real = stub.call::<_, i64>("hit", &()).await.err().ok_or("the third request is refused")?;
            section.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            queued.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
            let real = seen(&real);
            let expected = Seen {
                message: messages::OVERLOADED_TOO_MANY_QUEUED.to_string(),
                retryable: false,
                overloaded: true,
                reset: false,
                remote: false,
            };
            check(real == expected, || format!("the real overload: {real:?}"))?;

            let id = ns.id_from_name("g");
            let stub = ns.get_by_name("g");
            host.overload_next("GADGET", &id, 3).map_err(|e| e.to_string())?;
            for n in 0..3 {
                let e = stub.call::<_, i64>("hit", &()).await.err().ok_or(format!("call {n} is refused"))?;
                check(seen(&e) == expected, || format!("call {n}: the real overload's error: {:?}", seen(&e)))?;
            }
            let n: i64 = stub.call("hit", &()).await.map_err(|e| format!("the 4th call is served: {e}"))?;
            check(n == 1, || format!("the refused calls did not run: n = {n}"))?;
            // A hook is a call too; 0 cancels what is pending.
            host.overload_next("GADGET", &id, 1).map_err(|e| e.to_string())?;
            let hooked = host.run_in_object("GADGET", &id, async |g: &Gadget, _s: &State| g.hits.get()).await;
            check(hooked.as_ref().is_err_and(|e| seen(e) == expected), || format!("the hook is refused: {hooked:?}"))?;
            host.overload_next("GADGET", &id, 5).map_err(|e| e.to_string())?;
            host.overload_next("GADGET", &id, 0).map_err(|e| e.to_string())?;
            let hits = host
                .run_in_object("GADGET", &id, async |g: &Gadget, _s: &State| g.hits.get())
                .await
                .map_err(|e| format!("cancelled refusals: {e}"))?;
            check(hits == 1, || format!("one hit ran: {hits}"))?;
            Ok(())
        })
        .await
    })
});

sim_test!(fn reset_on_demand_cuts_off_events_and_a_new_stub_reaches_a_new_instance(seed) {
    sim(seed)?.run(|world| async move {
        with_host(&world, hooks_host, |host| async move {
            let ns = host.env().durable_object("GADGET").map_err(|e| e.to_string())?;
            let id = ns.id_from_name("g");
            let cold = host.reset("GADGET", &id, Error::new(messages::CODE_UPDATED)).map_err(|e| e.to_string())?;
            check(!cold, || "an object that is not live is not reset".into())?;
            let stub = Rc::new(ns.get_by_name("g"));
            stub.call::<_, i64>("hit", &()).await.map_err(|e| e.to_string())?;
            let s = stub.clone();
            let nap = madsim::task::spawn_local(async move { s.call::<_, ()>("nap", &100u64).await });
            madsim::time::sleep(Duration::from_millis(10)).await;
            let live = host.reset("GADGET", &id, Error::new(messages::CODE_UPDATED)).map_err(|e| e.to_string())?;
            check(live, || "the live object is reset".into())?;
            let cut = nap.await.map_err(|e| e.to_string())?.err().ok_or("the running call is cut off")?;
            check(cut.message() == messages::CODE_UPDATED && cut.durable_object_reset(), || {
                format!("with the reset error, flagged a reset: {:?}", seen(&cut))
            })?;
            let again = stub.call::<_, u64>("hits", &()).await;
            check(again.as_ref().is_err_and(|e| e.message() == messages::CODE_UPDATED), || {
                format!("the old stub keeps failing: {again:?}")
            })?;
            let fresh = ns.get_by_name("g");
            let hits: u64 = fresh.call("hits", &()).await.map_err(|e| e.to_string())?;
            let n: Option<i64> = fresh.call("read", &()).await.map_err(|e| e.to_string())?;
            check(hits == 0 && n == Some(1), || format!("a new instance, the storage kept: {hits} hits, n {n:?}"))?;
            Ok(())
        })
        .await
    })
});

/// The counter `c`'s stored value, read by `run_in_object` on `host`.
async fn stored_value_by_hook(host: &HostNode) -> Result<Result<Option<i64>, String>, Failure> {
    host.run_on_host(|host| async move {
        let id = host.env().durable_object("COUNTER").unwrap().id_from_name("c");
        host.run_in_object("COUNTER", &id, async |_c: &Counter, state: &State| {
            state.storage().get::<i64>("value").await
        })
        .await
        .and_then(|read| read)
        .map_err(|e| e.message().to_string())
    })
    .await
}

fn counter_script() -> HostBuilder {
    host_builder("worker")
        .class::<Counter>("Counter")
        .binding("COUNTER", "Counter")
        .migration(sqlite_class("v1", "Counter"))
}

// In a cluster a hook runs where the object is owned: on its owner `run_in_object` sees the object's storage
// and `overload_next` refuses the front's next call (made where calls are admitted, so the refusal crosses the
// network with its flags); on another host the hook is refused, naming the owner, and starts nothing there.
sim_test!(fn in_a_cluster_hooks_run_on_the_owner(seed) {
    const ETCD: NodeId = NodeId(0);
    const FRONT: NodeId = NodeId(1);
    const HOSTS: [NodeId; 2] = [NodeId(2), NodeId(3)];
    let mut b = Sim::builder().seed(seed).node(etcd_node(ETCD, "etcd"));
    let (config, front) = cluster_node(FRONT, "front", ETCD, &[], ClusterRole::Front, counter_script);
    b = b.node(config);
    let mut hosts = Vec::new();
    for (i, node) in HOSTS.iter().enumerate() {
        let (config, host) =
            cluster_node(*node, &format!("host-{i}"), ETCD, &[], ClusterRole::Host, counter_script);
        b = b.node(config);
        hosts.push(host);
    }
    b.build()?.run(move |_world| async move {
        madsim::time::sleep(Duration::from_secs(3)).await;
        let call = |path: &'static str| {
            let front = front.clone();
            async move {
                front
                    .run(move |env| async move {
                        let stub = env.durable_object("COUNTER").unwrap().get_by_name("c");
                        stub.fetch(Request::get(path)).await.map(|r| r.text().unwrap()).map_err(|e| seen(&e))
                    })
                    .await
            }
        };
        let first = call("/increment").await?;
        ensure!(first == Ok("1".to_string()), "the object answers: {first:?}");
        let mut owner = None;
        for h in &hosts {
            if h.run_on_host(|host| async move { host.live_instances() }).await? == 1 {
                owner = Some(h.clone());
            }
        }
        let owner = owner.ok_or_else(|| Failure::new("one host runs the object"))?;
        let other = hosts.iter().find(|h| h.node() != owner.node()).expect("two hosts").clone();
        let seen_there = stored_value_by_hook(&owner).await?;
        ensure!(seen_there == Ok(Some(1)), "on the owner the hook sees the stored value: {seen_there:?}");
        let elsewhere = stored_value_by_hook(&other).await?;
        ensure!(
            elsewhere.as_ref().is_err_and(|m| m.contains("not owned by this host")),
            "another host refuses the hook: {elsewhere:?}"
        );
        let started = other.run_on_host(|host| async move { host.live_instances() }).await?;
        ensure!(started == 0, "and starts no instance: {started}");
        owner
            .run_on_host(|host| async move {
                let id = host.env().durable_object("COUNTER").unwrap().id_from_name("c");
                host.overload_next("COUNTER", &id, 1)
            })
            .await?
            .map_err(|e| Failure::new(e.to_string()))?;
        let refused = call("/increment").await?;
        let expected = Seen {
            message: messages::OVERLOADED_TOO_MANY_QUEUED.to_string(),
            retryable: false,
            overloaded: true,
            reset: false,
            remote: false,
        };
        ensure!(refused == Err(expected), "the front's call is refused as overloaded: {refused:?}");
        let served = call("/increment").await?;
        ensure!(served == Ok("2".to_string()), "then served, the refused call never ran: {served:?}");
        Ok(())
    })
});
