//! Awaiting a storage call does not let other events in (spec §1.2, §2.6, §3.4): on the SQLite backend every
//! call is synchronous, and on the KV backend a call that waits (a read that missed the cache, a counted
//! delete, backpressure) holds the input gate while it waits, unless `allow_concurrency` asks otherwise.
//!
//! [`GateProbe`] marks itself "between" in memory, awaits one storage call, clears the mark and writes a
//! marker; 20 requests sent right behind it report whether they ran while the mark was set. With no fault at
//! all, none may, for every storage call of both backends. Two exceptions open the gate as workerd does, and
//! are the negative controls, so the readers must then see the mark at least once: a timer (ordinary I/O),
//! and on the KV backend a cache-missing read with `allow_concurrency`. A third is documented behaviour:
//! `sync()` is awaited as ordinary I/O by workerd (`awaitIo`, not `awaitIoWithInputLock`), so it opens the
//! gate too.

use std::cell::Cell;
use std::rc::Rc;

use dosim_runtime::prelude::*;

use dosim_scenarios::sim_host::{host_builder, on_node};
use dosim_sim::{ensure, sim_test, DiskConfig, Sim};

use crate::{kv_class, sqlite_class, HOST};

/// Readers sent right behind each awaited call.
const READERS: usize = 20;

/// A value of 100,000 bytes: 100 of them (10 MB) are over the KV backend's 8 MiB dirty limit (spec §2.8).
fn big() -> String {
    "b".repeat(100_000)
}

/// See the module's documentation.
pub(crate) struct GateProbe {
    state: State,
    between: Cell<bool>,
}

impl GateProbe {
    /// Runs the storage call `op` and awaits it.
    async fn run(&self, op: &str) -> Result<(), Error> {
        let s = self.state.storage();
        match op {
            "get" => s.get::<i64>("absent").await.map(drop),
            "get_multiple" => s.get_multiple::<i64>(&["absent1", "absent2"]).await.map(drop),
            "put" => s.put("p", &1).await,
            "put_backpressure" => {
                for i in 0..100 {
                    s.put(&format!("big{i}"), &big()).await?;
                }
                Ok(())
            }
            "put_multiple" => {
                let values: Vec<(String, String)> = (0..100).map(|i| (format!("big{i}"), big())).collect();
                let pairs: Vec<(&str, String)> =
                    values.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
                s.put_multiple(&pairs).await
            }
            "delete" => s.delete("absent").await.map(drop),
            "delete_multiple" => s.delete_multiple(&["absent1", "absent2"]).await.map(drop),
            "delete_all" => s.delete_all().await,
            "list" => s.list::<i64>(&ListOptions::default()).await.map(drop),
            "get_alarm" => s.get_alarm().await.map(drop),
            "set_alarm" => s.set_alarm(self.state.now_ms() + 3_600_000).await,
            "delete_alarm" => s.delete_alarm().await,
            "transaction" => {
                s.transaction(async |t| {
                    let n: i64 = t.get("absent").await?.unwrap_or(0);
                    t.put("absent", &(n + 1)).await
                })
                .await
            }
            "sql" => {
                s.sql()?.exec("CREATE TABLE IF NOT EXISTS t (x); INSERT INTO t VALUES (1)", &[]).map(drop)
            }
            "transaction_sync" => s.transaction_sync(|| {
                s.sql()?.exec("CREATE TABLE IF NOT EXISTS t (x); INSERT INTO t VALUES (1)", &[]).map(drop)
            }),
            // Documented to open the gate (workerd's `awaitIo`): after a write, it waits for its commit.
            "sync" => {
                s.put("p", &1).await?;
                s.sync().await
            }
            // Controls: these open the gate.
            "timer" => {
                madsim::time::sleep(std::time::Duration::from_millis(5)).await;
                Ok(())
            }
            "get_allow_concurrency" => {
                let options = GetOptions { allow_concurrency: true, ..GetOptions::default() };
                s.get_with::<i64>("absent", options).await.map(drop)
            }
            other => Err(Error::new(format!("unknown op {other}"))),
        }
    }
}

impl DurableObject for GateProbe {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        Ok(GateProbe { state, between: Cell::new(false) })
    }

    async fn fetch(&self, request: Request) -> Result<Response, Error> {
        if request.path() == "/read" {
            return Ok(Response::ok(if self.between.get() { "between" } else { "clean" }));
        }
        let op = request.path().trim_start_matches("/op/").to_string();
        self.between.set(true);
        let result = self.run(&op).await;
        self.between.set(false);
        self.state.storage().put("marker", &op).await?;
        result.map(|()| Response::ok("done"))
    }

    const HAS_ALARM: bool = true;

    async fn alarm(&self, _info: AlarmInfo) -> Result<(), Error> {
        Ok(())
    }
}

/// The storage calls of both backends.
const BOTH: &[&str] = &[
    "get",
    "get_multiple",
    "put",
    "put_backpressure",
    "put_multiple",
    "delete",
    "delete_multiple",
    "delete_all",
    "list",
    "get_alarm",
    "set_alarm",
    "delete_alarm",
    "transaction",
];

/// For each op, on a fresh object (its cache cold): the op's request, then [`READERS`] readers at once;
/// how many readers saw the mark. Every request must succeed.
async fn readers_between(kv: bool, ops: Vec<&'static str>) -> Vec<(&'static str, usize)> {
    let migration = if kv { kv_class("v1", "GateProbe") } else { sqlite_class("v1", "GateProbe") };
    let host = host_builder("worker")
        .class::<GateProbe>("GateProbe")
        .binding("PROBE", "GateProbe")
        .migration(migration)
        .build()
        .expect("deploys");
    let namespace = host.env().durable_object("PROBE").unwrap();
    let mut out = Vec::new();
    for op in ops {
        let stub = Rc::new(namespace.get_by_name(op));
        let s = stub.clone();
        let writer = madsim::task::spawn_local(async move { s.fetch_with_str(&format!("/op/{op}")).await });
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                let s = stub.clone();
                madsim::task::spawn_local(async move { s.fetch(Request::get("/read")).await })
            })
            .collect();
        let done = writer.await.expect("not cancelled").unwrap_or_else(|e| panic!("{op}: {e}"));
        assert_eq!(done.text().unwrap(), "done", "{op}");
        let mut between = 0;
        for r in readers {
            let text = r.await.expect("not cancelled").expect("a reader is answered").text().unwrap();
            between += usize::from(text == "between");
        }
        out.push((op, between));
    }
    out
}

fn check(results: &[(&str, usize)], opening: &[&str]) -> Result<(), dosim_sim::Failure> {
    for &(op, between) in results {
        if opening.contains(&op) {
            ensure!(
                between > 0,
                "{op} opens the gate, yet no reader ran while it was awaited: the test is blind"
            );
        } else {
            ensure!(between == 0, "{between} of {READERS} readers ran while `{op}` was awaited");
        }
    }
    Ok(())
}

sim_test!(fn sqlite_storage_calls_do_not_open_the_input_gate(seed) {
    Sim::builder().seed(seed).nodes(1).disk(DiskConfig::default()).build()?.run(|world| async move {
        let mut ops = BOTH.to_vec();
        ops.extend(["sql", "transaction_sync", "sync", "timer"]);
        let results = on_node(&world, HOST, move || readers_between(false, ops)).await?;
        eprintln!("SQLite backend, readers that ran while the call was awaited: {results:?}");
        check(&results, &["sync", "timer"])
    })
});

sim_test!(fn kv_storage_calls_hold_the_input_gate_while_they_wait(seed) {
    Sim::builder().seed(seed).nodes(1).disk(DiskConfig::default()).build()?.run(|world| async move {
        let mut ops = BOTH.to_vec();
        ops.extend(["sync", "timer", "get_allow_concurrency"]);
        let results = on_node(&world, HOST, move || readers_between(true, ops)).await?;
        eprintln!("KV backend, readers that ran while the call was awaited: {results:?}");
        check(&results, &["sync", "timer", "get_allow_concurrency"])
    })
});
