//! Simulated WebSocket messages per wall second, and the memory a hibernated socket holds.
//!
//! Only meaningful in the simulation build: `cargo bench --config .cargo/sim.toml --bench websockets`. In
//! the plain build the bench prints how to run it and exits.
//!
//! Each iteration is a whole `Sim::run`: a lone host on one node, one `Room` object, and `SOCKETS` (1,000)
//! clients on the same node, each connected with `stub.fetch(upgrade)` → `response.websocket()` →
//! `accept()`; the object accepts its ends as hibernatable sockets (`State::accept_web_socket`). Throughput
//! is in messages delivered to clients:
//! - group `websocket_broadcast`: `BROADCASTS` (20) clients each send one message, which the object sends to
//!   every socket (`get_web_sockets` and a `send` each): 20,000 deliveries;
//! - group `websocket_echo`: every client sends `ECHOES` (20) messages one after the other, each answered to
//!   its sender only: 20,000 deliveries (and as many client messages to the object).
//!
//! Two baselines in each group split the cost by subtraction:
//! - `sim_only`: as many client tasks, awaiting a trivial future per message instead: the simulation's share;
//! - `connect_only`: the 1,000 connections made and nothing sent: the setup every run pays.
//!
//! Then, before the groups, the bench prints the heap bytes per hibernated socket: a counting global
//! allocator (live bytes requested) measured before `N` sockets connect and after the object hibernated
//! (`host.live_instances() == 0` after 11 s idle), for N = 1,000 and 10,000.

#[cfg(madsim)]
pub mod sim {
    //! The benches, built only with `--cfg madsim`.

    use std::alloc::{GlobalAlloc, Layout, System};
    use std::rc::Rc;
    use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
    use std::time::{Duration, Instant};

    use criterion::{BenchmarkId, Criterion, Throughput};
    use dosim_runtime::embed::Migration;
    use dosim_runtime::prelude::*;
    use dosim_scenarios::sim_host::{host_builder, on_node};
    use dosim_sim::{DiskConfig, NodeId, Seed, Sim, TraceMode};

    /// The sockets on the object.
    const SOCKETS: usize = 1_000;
    /// Broadcast group: how many client messages the object sends to every socket.
    const BROADCASTS: usize = 20;
    /// Echo group: how many messages each client sends (one at a time, waiting for its echo).
    const ECHOES: usize = 20;

    /// A global allocator counting the bytes live (requested sizes, not the allocator's rounding).
    pub struct Counting;

    static LIVE: AtomicIsize = AtomicIsize::new(0);
    /// Whether allocations are also counted by size (only while memory is measured).
    static BY_SIZE_ON: AtomicBool = AtomicBool::new(false);
    /// Live allocations by size in bytes (the last slot: 4,096 bytes and more).
    static BY_SIZE: [AtomicIsize; SIZES] = [const { AtomicIsize::new(0) }; SIZES];
    const SIZES: usize = 4_097;

    fn live() -> isize {
        LIVE.load(Ordering::SeqCst)
    }

    fn count(size: usize, delta: isize) {
        LIVE.fetch_add(size as isize * delta, Ordering::Relaxed);
        if BY_SIZE_ON.load(Ordering::Relaxed) {
            BY_SIZE[size.min(SIZES - 1)].fetch_add(delta, Ordering::Relaxed);
        }
    }

    fn by_size() -> Vec<isize> {
        BY_SIZE.iter().map(|c| c.load(Ordering::SeqCst)).collect()
    }

    // SAFETY: every call is forwarded to `System` unchanged; only a counter is updated beside it.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller's contract is passed on.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                count(layout.size(), 1);
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller's contract is passed on.
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                count(layout.size(), 1);
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: the caller's contract is passed on.
            unsafe { System.dealloc(ptr, layout) };
            count(layout.size(), -1);
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: the caller's contract is passed on.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                count(layout.size(), -1);
                count(new_size, 1);
            }
            p
        }
    }

    /// The object: every upgrade request gets a hibernatable socket; a message `b` is sent to every socket,
    /// any other message back to its sender.
    struct Room {
        state: State,
    }

    impl DurableObject for Room {
        async fn new(state: State, _env: Env) -> Result<Self, Error> {
            Ok(Room { state })
        }

        async fn fetch(&self, request: Request) -> Result<Response, Error> {
            if request.path() == "/ping" {
                return Ok(Response::ok("pong"));
            }
            let pair = WebSocketPair::new()?;
            self.state.accept_web_socket(&pair.server, &[])?;
            Response::from_websocket(pair.client)
        }

        async fn websocket_message(
            &self,
            ws: WebSocket,
            message: WebSocketIncomingMessage,
        ) -> Result<(), Error> {
            match &message {
                WebSocketIncomingMessage::String(s) if s == "b" => {
                    for socket in self.state.get_web_sockets(None) {
                        socket.send(message.clone())?;
                    }
                    Ok(())
                }
                _ => ws.send(message),
            }
        }
    }

    fn host() -> dosim_runtime::embed::HostBuilder {
        host_builder("bench").class::<Room>("Room").binding("ROOM", "Room").migration(Migration {
            tag: "v1".into(),
            new_sqlite_classes: vec!["Room".into()],
            ..Migration::default()
        })
    }

    /// Connects one client: the upgrade request, the response's end, accepted.
    async fn connect(stub: &Stub) -> WebSocket {
        let response = stub
            .fetch(Request::get("/ws").with_header("Upgrade", "websocket"))
            .await
            .expect("the upgrade succeeds");
        assert_eq!(response.status(), 101);
        let ws = response.websocket().expect("a 101 response carries an end");
        ws.accept().expect("a fresh end accepts");
        ws
    }

    /// What a run does.
    #[derive(Clone, Copy, Debug)]
    enum Workload {
        /// The client tasks of `Broadcast` and `Echo`, awaiting a yield per delivery; no host.
        SimOnly,
        /// The connections, and nothing sent.
        ConnectOnly,
        /// `BROADCASTS` messages, each sent by the object to every socket.
        Broadcast,
        /// `ECHOES` messages from each client, each answered to its sender.
        Echo,
    }

    impl Workload {
        fn name(self) -> &'static str {
            match self {
                Workload::SimOnly => "sim_only",
                Workload::ConnectOnly => "connect_only",
                Workload::Broadcast => "broadcast",
                Workload::Echo => "echo",
            }
        }
    }

    /// Reads `n` messages from `ws`; returns how many arrived before the connection closed.
    async fn read(ws: &WebSocket, n: usize) -> usize {
        let mut got = 0;
        while got < n {
            match ws.next_event().await {
                Some(WebSocketEvent::Message(_)) => got += 1,
                other => panic!("a message, not {other:?}"),
            }
        }
        got
    }

    /// Runs one simulation of `workload`; returns its wall time.
    fn run_once(seed: u64, workload: Workload) -> Duration {
        let start = Instant::now();
        let sim = Sim::builder()
            .seed(Seed(seed))
            .nodes(1)
            .disk(DiskConfig::default())
            .trace_mode(TraceMode::HashOnly)
            .build()
            .expect("a valid bench config");
        sim.run(move |world| async move {
            let delivered = on_node(&world, NodeId(0), move || async move {
                if let Workload::SimOnly = workload {
                    let tasks: Vec<_> = (0..SOCKETS)
                        .map(|_| {
                            madsim::task::spawn_local(async move {
                                for _ in 0..ECHOES {
                                    madsim::task::yield_now().await;
                                }
                                ECHOES
                            })
                        })
                        .collect();
                    let mut total = 0;
                    for t in tasks {
                        total += t.await.unwrap();
                    }
                    return total;
                }
                let host = host().build().expect("deploys");
                let stub = host.env().durable_object("ROOM").unwrap().get_by_name("room");
                let mut sockets = Vec::with_capacity(SOCKETS);
                for _ in 0..SOCKETS {
                    sockets.push(Rc::new(connect(&stub).await));
                }
                let tasks: Vec<_> = match workload {
                    Workload::SimOnly | Workload::ConnectOnly => Vec::new(),
                    Workload::Broadcast => {
                        let readers: Vec<_> = sockets
                            .iter()
                            .map(|ws| {
                                let ws = ws.clone();
                                madsim::task::spawn_local(async move { read(&ws, BROADCASTS).await })
                            })
                            .collect();
                        for ws in &sockets[..BROADCASTS] {
                            ws.send_with_str("b").unwrap();
                        }
                        readers
                    }
                    Workload::Echo => sockets
                        .iter()
                        .map(|ws| {
                            let ws = ws.clone();
                            madsim::task::spawn_local(async move {
                                let mut got = 0;
                                for _ in 0..ECHOES {
                                    ws.send_with_str("e").unwrap();
                                    got += read(&ws, 1).await;
                                }
                                got
                            })
                        })
                        .collect(),
                };
                let mut total = 0;
                for t in tasks {
                    total += t.await.unwrap();
                }
                drop(sockets);
                drop(host);
                total
            })
            .await?;
            let expected = match workload {
                Workload::ConnectOnly => 0,
                _ => SOCKETS * ECHOES,
            };
            assert_eq!(delivered, expected, "every message is delivered");
            Ok(())
        })
        .expect("the bench run passes");
        start.elapsed()
    }

    /// What [`bytes_per_socket`] measured.
    struct Memory {
        /// Heap bytes per socket, both ends and everything else the host and the simulation kept.
        per_socket: f64,
        /// One end (half of a pair made outside any object).
        end: f64,
        /// The allocations live per socket, by size: (bytes, count per socket), the larger shares first.
        sizes: Vec<(usize, f64)>,
    }

    /// Heap bytes per hibernated socket with `n` sockets on one object.
    fn bytes_per_socket(n: usize) -> Memory {
        let sim = Sim::builder()
            .seed(Seed(1))
            .nodes(1)
            .disk(DiskConfig::default())
            .trace_mode(TraceMode::HashOnly)
            .build()
            .expect("a valid bench config");
        let out = std::sync::Arc::new(std::sync::Mutex::new(None));
        let result = out.clone();
        sim.run(move |world| async move {
            let measured = on_node(&world, NodeId(0), move || async move {
                let before = live();
                let pair = WebSocketPair::new().unwrap();
                let end = (live() - before) as f64 / 2.0;
                drop(pair);

                let host = host().build().expect("deploys");
                let stub = host.env().durable_object("ROOM").unwrap().get_by_name("room");
                // The object has lived and hibernated once: what it leaves behind is in the baseline.
                stub.fetch(Request::get("/ping")).await.expect("pong");
                madsim::time::sleep(Duration::from_secs(11)).await;
                assert_eq!(host.live_instances(), 0, "idle for 11 s: evicted");
                let mut clients = Vec::with_capacity(n);
                BY_SIZE_ON.store(true, Ordering::SeqCst);
                let sizes_before = by_size();
                let before = live();
                for _ in 0..n {
                    clients.push(connect(&stub).await);
                }
                madsim::time::sleep(Duration::from_secs(11)).await;
                assert_eq!(
                    host.live_instances(),
                    0,
                    "idle for 11 s with only hibernatable sockets: hibernated"
                );
                let per_socket = (live() - before) as f64 / n as f64;
                BY_SIZE_ON.store(false, Ordering::SeqCst);
                let mut sizes: Vec<(usize, f64)> = by_size()
                    .iter()
                    .zip(&sizes_before)
                    .enumerate()
                    .take(SIZES - 1)
                    .map(|(size, (after, before))| (size, (after - before) as f64 / n as f64))
                    .filter(|&(size, per)| per * size as f64 >= 4.0)
                    .collect();
                sizes.sort_by(|a, b| (b.1 * b.0 as f64).total_cmp(&(a.1 * a.0 as f64)));
                assert!(clients.iter().all(|ws| !ws.is_closed()), "the sockets stay connected");
                drop(clients);
                drop(host);
                Memory { per_socket, end, sizes }
            })
            .await?;
            *result.lock().unwrap() = Some(measured);
            Ok(())
        })
        .expect("the memory run passes");
        let measured = out.lock().unwrap().take().expect("measured");
        measured
    }

    /// Prints the heap bytes per hibernated socket (criterion cannot measure memory).
    pub fn memory() {
        for n in [1_000, 10_000] {
            let m = bytes_per_socket(n);
            let sizes: Vec<String> =
                m.sizes.iter().map(|(size, per)| format!("{size} B × {per:.2}")).collect();
            println!(
                "websocket memory: {n} hibernated sockets on one object: {:.0} bytes per socket (both ends), \
                 {:.0} without the client's end ({:.0} bytes an end); live allocations per socket by size: {}",
                m.per_socket,
                m.per_socket - m.end,
                m.end,
                sizes.join(", ")
            );
        }
    }

    fn group(c: &mut Criterion, name: &str, workloads: &[Workload]) {
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Elements((SOCKETS * ECHOES) as u64));
        g.sample_size(10);
        g.measurement_time(Duration::from_secs(4));
        g.warm_up_time(Duration::from_secs(1));
        for &workload in workloads {
            g.bench_function(BenchmarkId::new(workload.name(), SOCKETS * ECHOES), |b| {
                let mut seed = 1u64;
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            seed += 1;
                            run_once(seed, workload)
                        })
                        .sum()
                });
            });
        }
        g.finish();
    }

    /// The two groups.
    pub fn benches(c: &mut Criterion) {
        let baselines = [Workload::SimOnly, Workload::ConnectOnly];
        group(c, "websocket_broadcast", &[baselines[0], baselines[1], Workload::Broadcast]);
        group(c, "websocket_echo", &[baselines[0], baselines[1], Workload::Echo]);
    }
}

#[cfg(madsim)]
#[global_allocator]
static ALLOCATOR: sim::Counting = sim::Counting;

#[cfg(madsim)]
fn main() {
    sim::memory();
    let mut c = criterion::Criterion::default().configure_from_args();
    sim::benches(&mut c);
    c.final_summary();
}

#[cfg(not(madsim))]
fn main() {
    eprintln!(
        "the websockets bench runs in the simulation build: cargo bench --config .cargo/sim.toml --bench websockets"
    );
}
