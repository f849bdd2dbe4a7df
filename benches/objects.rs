//! Simulated requests per wall second for the get-started `Counter`: one host, SQLite on `SimDisk`.
//!
//! Only meaningful in the simulation build: `cargo bench --config .cargo/sim.toml --bench objects`. In the
//! plain build the bench prints how to run it and exits.
//!
//! Each iteration is a whole `Sim::run`: a host on one node, 100 client tasks on it, each sending 100
//! sequential requests (10,000 in all) to one of 10 objects. Group `object_requests`, throughput in
//! requests, with three configurations that split the cost of a request by subtraction:
//! - `sim_only`: the same client tasks awaiting a trivial future instead of a request: the simulation's
//!   share (tasks, scheduling, the run's setup and teardown);
//! - `memory_counter`: requests to an object that keeps its count in memory: the simulation plus the
//!   runtime (stub, routing, overload check, event task, input gate turns, output gate);
//! - `counter`: the `Counter` (a read and a write per request, one implicit transaction committed on
//!   `SimDisk` per turn, the output gate held until it is durable): everything, storage included.

#[cfg(madsim)]
pub mod sim {
    //! The benches, built only with `--cfg madsim`.

    use std::rc::Rc;
    use std::time::{Duration, Instant};

    use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
    use dosim_runtime::embed::Migration;
    use dosim_runtime::prelude::*;
    use dosim_scenarios::objects::{Counter, MemoryCounter};
    use dosim_scenarios::sim_host::{host_builder, on_node};
    use dosim_sim::{DiskConfig, NodeId, Seed, Sim, TraceMode};

    const CLIENTS: u32 = 100;
    const PER_CLIENT: u32 = 100;
    const OBJECTS: u32 = 10;

    /// What the clients talk to.
    #[derive(Clone, Copy, Debug)]
    enum Target {
        SimOnly,
        MemoryCounter,
        Counter,
    }

    fn host() -> dosim_runtime::embed::HostBuilder {
        host_builder("bench")
            .class::<Counter>("Counter")
            .class::<MemoryCounter>("MemoryCounter")
            .binding("COUNTER", "Counter")
            .binding("MEMORY", "MemoryCounter")
            .migration(Migration {
                tag: "v1".into(),
                new_sqlite_classes: vec!["Counter".into(), "MemoryCounter".into()],
                ..Migration::default()
            })
    }

    /// Runs one simulation of `CLIENTS × PER_CLIENT` requests; returns its wall time.
    fn run_once(seed: u64, target: Target) -> Duration {
        let start = Instant::now();
        let sim = Sim::builder()
            .seed(Seed(seed))
            .nodes(1)
            .disk(DiskConfig::default())
            .trace_mode(TraceMode::HashOnly)
            .build()
            .expect("a valid bench config");
        sim.run(move |world| async move {
            let done = on_node(&world, NodeId(0), move || async move {
                let host = host().build().expect("deploys");
                let binding = match target {
                    Target::Counter => "COUNTER",
                    _ => "MEMORY",
                };
                let ns = host.env().durable_object(binding).unwrap();
                let stubs: Vec<Rc<Stub>> =
                    (0..OBJECTS).map(|i| Rc::new(ns.get_by_name(&format!("o{i}")))).collect();
                let mut tasks = Vec::new();
                for c in 0..CLIENTS {
                    let stub = stubs[(c % OBJECTS) as usize].clone();
                    tasks.push(madsim::task::spawn_local(async move {
                        let mut ok = 0u32;
                        for _ in 0..PER_CLIENT {
                            match target {
                                Target::SimOnly => {
                                    madsim::task::yield_now().await;
                                    ok += 1;
                                }
                                _ => {
                                    if stub.fetch(Request::get("/increment")).await.is_ok() {
                                        ok += 1;
                                    }
                                }
                            }
                        }
                        ok
                    }));
                }
                let mut total = 0;
                for t in tasks {
                    total += t.await.unwrap();
                }
                total
            })
            .await?;
            assert_eq!(done, CLIENTS * PER_CLIENT, "every request succeeds");
            Ok(())
        })
        .expect("the bench run passes");
        start.elapsed()
    }

    fn benches(c: &mut Criterion) {
        let mut g = c.benchmark_group("object_requests");
        g.throughput(Throughput::Elements(u64::from(CLIENTS * PER_CLIENT)));
        g.sample_size(10);
        for target in [Target::SimOnly, Target::MemoryCounter, Target::Counter] {
            let name = match target {
                Target::SimOnly => "sim_only",
                Target::MemoryCounter => "memory_counter",
                Target::Counter => "counter",
            };
            g.bench_function(BenchmarkId::new(name, CLIENTS * PER_CLIENT), |b| {
                let mut seed = 1u64;
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            seed += 1;
                            run_once(seed, target)
                        })
                        .sum()
                });
            });
        }
        g.finish();
    }

    criterion_group!(objects, benches);
}

#[cfg(madsim)]
criterion::criterion_main!(sim::objects);

#[cfg(not(madsim))]
fn main() {
    eprintln!("the objects bench runs in the simulation build: cargo bench --config .cargo/sim.toml --bench objects");
}
