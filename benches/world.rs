//! Message round trips per wall second between two simulated nodes.
//!
//! Only meaningful in the simulation build: `cargo bench --config .cargo/sim.toml --bench world`. In the
//! plain build the bench prints how to run it and exits.
//!
//! Each iteration is a whole `Sim::run` (building the sim, its fresh thread, madsim's runtime, the nodes):
//! an echo server on node 0 and a client node 1 on a reliable network with a fixed 1 ms one-way latency.
//! Group `world_roundtrips`, throughput in round trips:
//! - `seq_100`, `seq_10000`: one client task does N sequential round trips (send, await the echo); the
//!   large N amortises the per-run setup;
//! - `clients100_10000`: 100 client tasks on node 1, each with its own port, do 100 sequential round trips
//!   each, concurrently (10,000 in all);
//! - each with `/full` (`TraceMode::Full`, the default: every event kept) and `/hash_only`
//!   (`TraceMode::HashOnly`), which shows what keeping the event list costs.
//!
//! Every run ends with a teardown that kills its nodes, so madsim frees their pending tasks (it does not on
//! its own: madsim-rs/madsim#242) and runs do not slow down as a campaign goes on.

#[cfg(madsim)]
pub mod sim {
    //! The benches, built only with `--cfg madsim`.

    use std::time::{Duration, Instant};

    use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
    use dosim_sim::net::{Endpoint, NetConfig};
    use dosim_sim::{Addr, Failure, LatencyRange, NodeConfig, NodeId, Seed, Sim, TraceMode};

    const SERVER_PORT: u16 = 7;
    const CLIENT_PORT: u16 = 1000;
    const SERVER: Addr = Addr { node: NodeId(0), port: SERVER_PORT };

    /// Node 0 echoes every datagram back to its sender.
    fn echo_server() -> NodeConfig {
        NodeConfig::new("echo").program(|| async {
            let mut ep = Endpoint::bind(SERVER_PORT).expect("port free at boot");
            loop {
                let d = ep.recv().await;
                ep.send(d.from, d.payload);
            }
        })
    }

    /// `n` sequential round trips from a fresh port.
    async fn client(port: u16, n: u32) -> u32 {
        let mut ep = Endpoint::bind(port).expect("client port free");
        let mut echoed = 0;
        for i in 0..n {
            let payload = i.to_le_bytes().to_vec();
            ep.send(SERVER, payload.clone());
            let d = ep.recv().await;
            assert_eq!(d.payload, payload, "a reliable network echoes in order");
            echoed += 1;
        }
        echoed
    }

    /// Runs one simulation of `total` round trips split over `clients` concurrent client tasks, and returns
    /// the wall time of the whole run (builder, thread, runtime, teardown).
    fn run_once(seed: u64, clients: u32, total: u32, mode: TraceMode) -> Duration {
        assert_eq!(total % clients, 0, "round trips split evenly over the clients");
        let each = total / clients;
        let one_ms = Duration::from_millis(1);
        let net = NetConfig { latency: LatencyRange::new(one_ms, one_ms), ..NetConfig::default() };
        let start = Instant::now();
        let sim = Sim::builder()
            .seed(Seed(seed))
            .node(echo_server())
            .node(NodeConfig::new("client"))
            .network(net)
            .trace_mode(mode)
            .build()
            .expect("valid sim");
        let report = sim
            .run(move |world| async move {
                let mut tasks = Vec::with_capacity(clients as usize);
                for c in 0..clients {
                    let port = CLIENT_PORT + u16::try_from(c).expect("few clients");
                    tasks.push(world.spawn_on(NodeId(1), client(port, each))?);
                }
                let mut echoed = 0;
                for t in tasks {
                    echoed += t.await.map_err(|e| Failure::new(e.to_string()))?;
                }
                dosim_sim::ensure!(echoed == total, "{echoed} of {total} round trips completed");
                Ok(())
            })
            .unwrap_or_else(|f| panic!("bench run failed: {f:?}"));
        let elapsed = start.elapsed();
        std::hint::black_box(report.trace.hash());
        elapsed
    }

    fn roundtrips(c: &mut Criterion) {
        let mut group = c.benchmark_group("world_roundtrips");
        group.measurement_time(Duration::from_secs(3));
        group.warm_up_time(Duration::from_secs(1));
        group.sample_size(20);
        for (name, clients, total) in
            [("seq_100", 1, 100), ("seq_10000", 1, 10_000), ("clients100_10000", 100, 10_000)]
        {
            group.throughput(Throughput::Elements(u64::from(total)));
            for (mode_name, mode) in [("full", TraceMode::Full), ("hash_only", TraceMode::HashOnly)] {
                group.bench_function(BenchmarkId::new(name, mode_name), |b| {
                    b.iter_custom(|iters| (0..iters).map(|i| run_once(i, clients, total, mode)).sum())
                });
            }
        }
        group.finish();
    }

    criterion_group!(benches, roundtrips);
}

#[cfg(madsim)]
criterion::criterion_main!(sim::benches);

#[cfg(not(madsim))]
fn main() {
    // The simulation config sets this for rustc too: seeing it here means an environment RUSTFLAGS dropped
    // `--cfg madsim`, and this bench would measure nothing.
    if option_env!("DOSIM_EXPECT_MADSIM").is_some() {
        eprintln!("benches/world.rs was built for simulation but without --cfg madsim (is RUSTFLAGS set?)");
        std::process::exit(1);
    }
    println!(
        "the world bench needs the simulation build: \
         run with cargo bench --config .cargo/sim.toml --bench world"
    );
}
