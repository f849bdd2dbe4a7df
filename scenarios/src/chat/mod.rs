//! Scenario `chat-room`: chat rooms on hibernatable WebSockets (spec §5.2), on a cluster, under faults.
//!
//! Nodes: 0 the directory (simulated etcd), 1 the front (where the members' clients run; never faulted, so
//! what a client saw is the truth), 2..=4 three hosts, 5 the storage node that keeps every room's pages (so
//! a room that moves to another host keeps its history). The rooms are [`ChatRoom`]s
//! ([`InMemoryChatRoom`] in the negative control).
//!
//! Each client joins a random room (a fetch with `Upgrade: websocket`, through the front), then sends
//! messages with think times, reads everything the room sends it, sometimes leaves cleanly, and joins again
//! (a new member) whenever its connection closed. During the **quiet windows** nobody sends (only `ping`s,
//! which the runtime answers without waking the room): the rooms hibernate, and the next message wakes them
//! in a new instance.
//!
//! Faults, drawn per seed ([`Options`], swarm testing: each kind in or out):
//! - **network** (`net_loss`, `net_duplicate`, `net_reorder`) on every hop: front → host (the sockets'
//!   frames, the joins), host → storage node, host → host;
//! - **evictions** (`evictions`): every idle room on every host is evicted at once (hibernated: its sockets
//!   stay);
//! - **partitions** (`partitions`): the front from a host (the sockets to that host's rooms drop: both ends
//!   see 1006 after the peer timeout), or a host from the directory (its lease lapses: it is superseded, its
//!   rooms' sockets drop, and the rooms move);
//! - **crashes** (`crashes`): a host dies and restarts (its sockets drop; its rooms move);
//! - **code updates** (`code_updates`): a host's code is replaced; its rooms are reset and their sockets drop.
//!
//! Then the faults stop, every node restarts, the members stop sending and read for a settling time longer
//! than a dead connection takes to be noticed, and each room's history is read. Checks ([`check_chat`]):
//! every acknowledged message reached every member that stayed connected, once, in the sender's order;
//! nobody got a message not sent to their room; every acknowledged message is in its room's history;
//! every room answers within the liveness bound.

mod check;
mod room;

pub use check::{check_chat, ChatEvent, ChatStats, ChatViolation};
pub use room::{ChatRoom, InMemoryChatRoom, PING, PONG};

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use dosim_runtime::embed::{ClusterRole, HostBuilder, Migration};
use dosim_runtime::prelude::*;
use dosim_sim::net::NetConfig;
use dosim_sim::{
    ensure, ensure_live, Direction, EventKind, Failure, NodeId, Ratio, RunFailure, RunOptions, RunReport,
    Seed, Sim, SimRng, World,
};

use crate::cluster::etcd::etcd_node;
use crate::cluster::{cluster_node, storage_node, update_cluster_code_with};
use crate::sim_host::{host_builder, HostNode};

const ETCD: NodeId = NodeId(0);
const FRONT: NodeId = NodeId(1);
const HOSTS: [NodeId; 3] = [NodeId(2), NodeId(3), NodeId(4)];
const STORAGE: NodeId = NodeId(5);
/// How long the hosts get to join the directory before the members start.
const STARTUP: Duration = Duration::from_secs(3);
/// How long the members read after they stop sending: longer than a dead connection takes to be noticed
/// (the runtime's 10 s peer timeout), so a member the room dropped has seen its close by the end.
const SETTLE: Duration = Duration::from_secs(16);
/// How long, after the faults stop, every room must answer (a room on a host that crashed moves once the
/// directory expires the host's lease).
pub const LIVENESS_BOUND: Duration = Duration::from_secs(60);
/// A client waits this long (and up to twice) before joining again after its connection closed.
const REJOIN_DELAY: Duration = Duration::from_millis(400);
/// How long the front waits for an eviction command to reach a host that may be down.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// A `sometimes` mark: a member saw its connection drop (close code 1006).
pub const MARK_DROPPED: &str = "a member's connection dropped (1006)";
/// A `sometimes` mark: a member left cleanly (close code 1000, answered by the room's runtime).
pub const MARK_LEFT: &str = "a member left cleanly (1000)";
/// A `sometimes` mark: an injected eviction hibernated a room.
pub const MARK_EVICTED: &str = "an eviction hibernated a room";

/// The rooms' names.
const ROOMS: [&str; 3] = ["lobby", "games", "music"];

/// A scripted partition: the `hop`, with `host` on one side, from `at` (after the start) for `lasts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Front ↔ host (`true`) or host ↔ directory (`false`).
    pub front: bool,
    /// The host cut off.
    pub host: NodeId,
    /// When.
    pub at: Duration,
    /// For how long.
    pub lasts: Duration,
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hop = if self.front { "front-host" } else { "host-directory" };
        write!(f, "{hop}:{}@{}+{}ms", self.host, self.at.as_millis(), self.lasts.as_millis())
    }
}

/// What one run does, derived from its seed ([`Options::from_seed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The rate of messages lost on the fabric.
    pub net_loss: Ratio,
    /// The rate of messages delivered twice.
    pub net_duplicate: Ratio,
    /// The rate of messages delayed past later ones.
    pub net_reorder: Ratio,
    /// How many clients (each a member at a time).
    pub clients: u32,
    /// How many rooms.
    pub rooms: usize,
    /// How long the members send, after the startup.
    pub run_for: Duration,
    /// The quiet windows: (start, length) after the startup.
    pub quiet: Vec<(Duration, Duration)>,
    /// A client's think time between messages, in ms: (low, high).
    pub think_ms: (u64, u64),
    /// Per mille of a client's turns on which it leaves cleanly.
    pub leave_per_mille: u64,
    /// When every idle room is evicted (hibernated), after the startup.
    pub evictions: Vec<Duration>,
    /// The partitions.
    pub partitions: Vec<Cut>,
    /// Host crashes: (host, at, down for).
    pub crashes: Vec<(NodeId, Duration, Duration)>,
    /// Code updates: (host, at). The old host resets its rooms (`Durable Object reset because its code was
    /// updated.`), and their sockets drop.
    pub code_updates: Vec<(NodeId, Duration)>,
}

fn maybe_rate(rng: &mut SimRng, lo: u64, hi: u64) -> Ratio {
    if rng.below(2) == 0 {
        Ratio::NEVER
    } else {
        Ratio::new(rng.between(lo, hi) as u32, 1000)
    }
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "-".into();
    }
    items.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

impl Options {
    /// The options of `seed`, one labelled stream per subsystem.
    pub fn from_seed(seed: Seed) -> Options {
        let mut net = SimRng::substream(seed, "network");
        let (net_loss, net_duplicate, net_reorder) =
            (maybe_rate(&mut net, 1, 20), maybe_rate(&mut net, 1, 30), maybe_rate(&mut net, 1, 50));
        let mut w = SimRng::substream(seed, "workload");
        let clients = w.between(3, 6) as u32;
        let rooms = w.between(1, ROOMS.len() as u64) as usize;
        let run_for = Duration::from_secs(w.between(40, 70));
        let mut quiet = Vec::new();
        let windows = w.between(1, 2);
        for i in 0..windows {
            // Spread over the run, each 12–18 s (longer than the 10 s a room needs to hibernate).
            let slot = run_for / windows as u32;
            let len = Duration::from_secs(w.between(12, 18));
            let start = slot * i as u32 + Duration::from_secs(w.between(2, 6));
            if start + len < run_for {
                quiet.push((start, len));
            }
        }
        let lo = w.between(50, 300);
        let think_ms = (lo, lo + w.between(100, 1_500));
        let leave_per_mille = w.between(0, 40);
        let mut f = SimRng::substream(seed, "evictions");
        let evictions = if f.below(2) == 0 {
            Vec::new()
        } else {
            (0..f.between(1, 4))
                .map(|_| Duration::from_millis(f.between(1_000, run_for.as_millis() as u64)))
                .collect()
        };
        let mut p = SimRng::substream(seed, "partitions");
        let mut partitions = Vec::new();
        for front in [true, false] {
            if p.below(2) == 1 {
                let host = HOSTS[p.below(HOSTS.len() as u64) as usize];
                let at = Duration::from_millis(p.between(2_000, run_for.as_millis() as u64 / 2));
                // Longer than the peer timeout (the sockets drop) or the lease (the host is superseded).
                let lasts = Duration::from_millis(p.between(11_000, 16_000));
                partitions.push(Cut { front, host, at, lasts });
            }
        }
        let mut c = SimRng::substream(seed, "crashes");
        let crashes = if c.below(2) == 0 {
            Vec::new()
        } else {
            let host = HOSTS[c.below(HOSTS.len() as u64) as usize];
            let at = Duration::from_millis(c.between(2_000, run_for.as_millis() as u64 - 5_000));
            vec![(host, at, Duration::from_millis(c.between(500, 5_000)))]
        };
        let mut u = SimRng::substream(seed, "code-updates");
        let code_updates = if u.below(3) == 0 {
            let host = HOSTS[u.below(HOSTS.len() as u64) as usize];
            vec![(host, Duration::from_millis(u.between(2_000, run_for.as_millis() as u64 - 2_000)))]
        } else {
            Vec::new()
        };
        Options {
            code_updates,
            net_loss,
            net_duplicate,
            net_reorder,
            clients,
            rooms,
            run_for,
            quiet,
            think_ms,
            leave_per_mille,
            evictions,
            partitions,
            crashes,
        }
    }

    /// The options as `key=value` pairs, the seed first.
    pub fn describe(&self, seed: Seed) -> RunOptions {
        let quiet: Vec<String> =
            self.quiet.iter().map(|(a, l)| format!("{}+{}ms", a.as_millis(), l.as_millis())).collect();
        let evictions: Vec<u128> = self.evictions.iter().map(Duration::as_millis).collect();
        let crashes: Vec<String> = self
            .crashes
            .iter()
            .map(|(n, a, d)| format!("{n}@{}+{}ms", a.as_millis(), d.as_millis()))
            .collect();
        let updates: Vec<String> =
            self.code_updates.iter().map(|(n, a)| format!("{n}@{}ms", a.as_millis())).collect();
        RunOptions::new(seed)
            .with("net_loss", self.net_loss)
            .with("net_duplicate", self.net_duplicate)
            .with("net_reorder", self.net_reorder)
            .with("clients", self.clients)
            .with("rooms", self.rooms)
            .with("run_for_ms", self.run_for.as_millis())
            .with("quiet", list(&quiet))
            .with("think_ms", format!("{}..{}", self.think_ms.0, self.think_ms.1))
            .with("leave_per_mille", self.leave_per_mille)
            .with("evictions_ms", list(&evictions))
            .with("partitions", list(&self.partitions))
            .with("crashes", list(&crashes))
            .with("code_updates", list(&updates))
    }

    fn network(&self) -> NetConfig {
        NetConfig {
            loss: self.net_loss,
            duplicate: self.net_duplicate,
            reorder: self.net_reorder,
            ..NetConfig::default()
        }
    }

    fn quiet_at(&self, t: Duration) -> Option<Duration> {
        self.quiet.iter().find(|(a, l)| t >= *a && t < *a + *l).map(|(a, l)| *a + *l)
    }
}

/// Which room class the hosts run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Room {
    Correct,
    InMemory,
}

fn build(room: Room) -> HostBuilder {
    let b = host_builder("worker");
    let b = match room {
        Room::Correct => b.class::<ChatRoom>("ChatRoom"),
        Room::InMemory => b.class::<InMemoryChatRoom>("ChatRoom"),
    };
    b.binding("ROOM", "ChatRoom").migration(Migration {
        tag: "v1".into(),
        new_sqlite_classes: vec!["ChatRoom".into()],
        ..Migration::default()
    })
}

/// Runs the scenario for one seed.
pub(crate) fn run(seed: Seed) -> Result<RunReport, RunFailure> {
    run_with(seed, &Options::from_seed(seed), Room::Correct)
}

/// The options of `seed`.
pub(crate) fn options(seed: Seed) -> RunOptions {
    Options::from_seed(seed).describe(seed)
}

/// The scenario with [`InMemoryChatRoom`], which forgets its members when it hibernates: the checks must
/// catch it under some seeds.
pub fn run_negative_control(seed: Seed) -> Result<RunReport, RunFailure> {
    run_with(seed, &Options::from_seed(seed), Room::InMemory)
}

/// [`run_negative_control`] with `options` instead of the seed's own.
pub fn run_negative_control_with_options(seed: Seed, options: &Options) -> Result<RunReport, RunFailure> {
    run_with(seed, options, Room::InMemory)
}

/// The scenario under `seed` with `options` instead of the seed's own.
pub fn run_with_options(seed: Seed, options: &Options) -> Result<RunReport, RunFailure> {
    run_with(seed, options, Room::Correct)
}

/// What a client learned from one frame.
fn parse_frame(conn: u32, text: &str, at: Duration) -> Option<ChatEvent> {
    let mut words = text.split(' ');
    match words.next()? {
        "ack" => Some(ChatEvent::Acked { conn, id: words.next()?.parse().ok()?, at }),
        "from" => {
            let from = words.next()?.strip_prefix('m')?.parse().ok()?;
            let id = words.next()?.parse().ok()?;
            Some(ChatEvent::Received { conn, from, id, at })
        }
        _ => None,
    }
}

/// One client: joins, talks, rejoins, until `stop`; then reads until `end`. Appends what it saw to `log`.
async fn client(
    env: Env,
    number: u32,
    options: Rc<Options>,
    mut rng: SimRng,
    (start, offset): (madsim::time::Instant, Duration),
    log: Rc<RefCell<Vec<ChatEvent>>>,
) {
    let stop = start + options.run_for;
    let end = stop + SETTLE;
    let now = || offset + start.elapsed();
    let namespace = env.durable_object("ROOM").expect("the ROOM binding");
    let mut next_conn = number * 10_000;
    while madsim::time::Instant::now() < stop {
        next_conn += 1;
        let conn = next_conn;
        let room = rng.below(options.rooms as u64) as usize;
        let request = Request::get(&format!("/join?name=m{conn}")).with_header("Upgrade", "websocket");
        let ws = match namespace.get_by_name(ROOMS[room]).fetch(request).await {
            Ok(r) if r.status() == 101 => r.websocket(),
            _ => None,
        };
        let Some(ws) = ws else {
            madsim::time::sleep(REJOIN_DELAY + Duration::from_millis(rng.below(400))).await;
            continue;
        };
        ws.accept().expect("a fresh end accepts");
        log.borrow_mut().push(ChatEvent::Joined { conn, room, at: now() });
        let mut id = 0u32;
        let mut leaving = false;
        let think =
            |rng: &mut SimRng| Duration::from_millis(rng.between(options.think_ms.0, options.think_ms.1));
        let mut next_send = madsim::time::Instant::now() + think(&mut rng);
        loop {
            madsim_tokio::select! {
                biased;
                event = ws.next_event() => match event {
                    Some(WebSocketEvent::Message(WebSocketIncomingMessage::String(text))) => {
                        if let Some(e) = parse_frame(conn, &text, now()) {
                            log.borrow_mut().push(e);
                        }
                    }
                    Some(WebSocketEvent::Message(_)) => {}
                    Some(WebSocketEvent::Close(c)) => {
                        log.borrow_mut().push(ChatEvent::Closed { conn, code: c.code, at: now() });
                        break;
                    }
                    Some(WebSocketEvent::Error(_)) | None => {
                        log.borrow_mut().push(ChatEvent::Closed { conn, code: 1009, at: now() });
                        break;
                    }
                },
                _ = madsim::time::sleep_until(next_send) => {
                    let t = madsim::time::Instant::now();
                    if t >= end {
                        return;
                    }
                    if t >= stop || leaving {
                        // Read only, until the end.
                        next_send = end;
                        continue;
                    }
                    if let Some(until) = options.quiet_at(t - start) {
                        // A quiet window: only pings, which the runtime answers without waking the room.
                        let _ = ws.send_with_str(PING);
                        next_send = (start + until).min(t + Duration::from_secs(4));
                        continue;
                    }
                    if rng.below(1_000) < options.leave_per_mille {
                        let _ = ws.close(Some(1000), Some("bye"));
                        leaving = true;
                        next_send = end;
                        continue;
                    }
                    if ws.send_with_str(format!("msg {id} hello")).is_ok() {
                        log.borrow_mut().push(ChatEvent::Sent { conn, id, at: now() });
                        id += 1;
                    }
                    next_send = t + think(&mut rng);
                }
            }
        }
        if madsim::time::Instant::now() < stop {
            madsim::time::sleep(REJOIN_DELAY + Duration::from_millis(rng.below(400))).await;
        }
    }
}

/// Every client, on the front; returns the log.
async fn members(env: Env, seed: Seed, options: Options, offset: Duration) -> Vec<ChatEvent> {
    let options = Rc::new(options);
    let log = Rc::new(RefCell::new(Vec::new()));
    let start = madsim::time::Instant::now();
    let mut tasks = Vec::new();
    for n in 0..options.clients {
        let rng = SimRng::substream(seed, &format!("client-{n}"));
        let task = client(env.clone(), n + 1, options.clone(), rng, (start, offset), log.clone());
        tasks.push(madsim::task::spawn_local(task));
    }
    for t in tasks {
        t.await.expect("a client task");
    }
    let log = log.borrow().clone();
    log
}

/// A room's history, read through the front until it answers or the bound passes.
async fn history(
    world: &World,
    front: &HostNode,
    room: usize,
    deadline: Duration,
) -> Result<Vec<(u32, u32)>, Failure> {
    loop {
        let answer = front
            .run(move |env| async move {
                let r = env
                    .durable_object("ROOM")?
                    .get_by_name(ROOMS[room])
                    .fetch(Request::get("/history"))
                    .await?;
                r.text()
            })
            .await?;
        match answer {
            Ok(text) => {
                let mut pairs = Vec::new();
                for line in text.lines().filter(|l| !l.is_empty()) {
                    let (sender, id) =
                        line.split_once(' ').ok_or(Failure::new(format!("history line {line:?}")))?;
                    let sender = sender.strip_prefix('m').and_then(|s| s.parse().ok());
                    let (Some(sender), Ok(id)) = (sender, id.parse()) else {
                        return Err(Failure::new(format!("history line {line:?}")));
                    };
                    pairs.push((sender, id));
                }
                return Ok(pairs);
            }
            Err(e) if world.now() < deadline => {
                tracing::debug!(target: "dosim::chat", "room {} history: {}", ROOMS[room], e.message());
                madsim::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => {
                return Err(Failure::pending(format!(
                    "room {} did not answer within {LIVENESS_BOUND:?} of the faults stopping: {e}",
                    ROOMS[room]
                )))
            }
        }
    }
}

/// Drives the seed's evictions, partitions and crashes; returns how many rooms were evicted.
async fn faults(world: World, hosts: Vec<HostNode>, options: Options, room: Room) -> usize {
    let t0 = world.now();
    let evicted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for at in options.evictions.clone() {
        let (world, hosts, evicted) = (world.clone(), hosts.clone(), evicted.clone());
        tasks.push(madsim::task::spawn(async move {
            world.sleep((t0 + at).saturating_sub(world.now())).await;
            for h in &hosts {
                let n = madsim::time::timeout(
                    COMMAND_TIMEOUT,
                    h.run_on_host(|host| async move { host.evict_idle() }),
                )
                .await;
                if let Ok(Ok(n)) = n {
                    evicted.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for cut in options.partitions.clone() {
        let world = world.clone();
        tasks.push(madsim::task::spawn(async move {
            world.sleep((t0 + cut.at).saturating_sub(world.now())).await;
            let other = if cut.front { FRONT } else { ETCD };
            if world.partition(&[cut.host], &[other], Direction::Both).is_ok() {
                world.sleep(cut.lasts).await;
                world.heal();
            }
        }));
    }
    for (host, at, down) in options.crashes.clone() {
        let world = world.clone();
        tasks.push(madsim::task::spawn(async move {
            world.sleep((t0 + at).saturating_sub(world.now())).await;
            if world.crash(host).is_ok() {
                world.sleep(down).await;
                let _ = world.restart(host);
            }
        }));
    }
    for (host, at) in options.code_updates.clone() {
        let world = world.clone();
        let node = hosts[HOSTS.iter().position(|h| *h == host).expect("a host")].clone();
        tasks.push(madsim::task::spawn(async move {
            world.sleep((t0 + at).saturating_sub(world.now())).await;
            let build: std::sync::Arc<dyn Fn() -> HostBuilder + Send + Sync> =
                std::sync::Arc::new(move || build(room));
            let update = update_cluster_code_with(&node, ETCD, &[STORAGE], ClusterRole::Host, build);
            // A host that is down takes its update when it is back; the run does not wait past the timeout.
            let _ = madsim::time::timeout(COMMAND_TIMEOUT, update).await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    evicted.load(std::sync::atomic::Ordering::Relaxed)
}

fn run_with(seed: Seed, options: &Options, room: Room) -> Result<RunReport, RunFailure> {
    let mut b = Sim::builder().seed(seed).node(etcd_node(ETCD, "etcd"));
    let (config, front) =
        cluster_node(FRONT, "front", ETCD, &[STORAGE], ClusterRole::Front, move || build(room));
    b = b.node(config);
    let mut hosts = Vec::new();
    for (i, node) in HOSTS.iter().enumerate() {
        let (config, host) =
            cluster_node(*node, &format!("host-{}", i + 1), ETCD, &[STORAGE], ClusterRole::Host, move || {
                build(room)
            });
        b = b.node(config);
        hosts.push(host);
    }
    b = b.node(storage_node("storage", true));
    let sim = b.network(options.network()).options(options.describe(seed)).build()?;
    let options = options.clone();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let described = options.describe(seed);
    let report = sim.run({
        let seen = seen.clone();
        move |world| async move {
            world.sleep(STARTUP).await;
            let driver = madsim::task::spawn(faults(world.clone(), hosts.clone(), options.clone(), room));
            let plan = options.clone();
            // The members stamp their events with the world's time (the report's), from this start.
            let offset = world.now();
            let log = front.run(move |env| members(env, seed, plan, offset)).await?;
            let evicted = driver.await.expect("the fault driver");
            world.stop_faults();
            world.heal();
            for h in HOSTS {
                if world.state(h).is_ok_and(|s| s != dosim_sim::NodeState::Running) {
                    let _ = world.restart(h);
                }
            }
            let deadline = world.now() + LIVENESS_BOUND;
            let mut histories = BTreeMap::new();
            for r in 0..options.rooms {
                histories.insert(r, history(&world, &front, r, deadline).await?);
            }
            // A violation is judged after the run, where its evidence can quote the rooms' trace.
            let Ok(stats) = check_chat(&log, &histories) else {
                *seen.lock().expect("the run's one thread") = Some((log, histories));
                return Ok(());
            };
            dosim_sim::note("members", stats.members);
            dosim_sim::note("messages", format!("sent={} acked={}", stats.sent, stats.acked));
            dosim_sim::note(
                "deliveries",
                format!("required={} seen={}", stats.required_deliveries, stats.deliveries),
            );
            dosim_sim::note("closes", format!("{:?}", stats.closes));
            dosim_sim::note("evicted", evicted);
            for (code, n) in &stats.closes {
                for _ in 0..*n {
                    dosim_sim::sometimes_if(*code == 1006, MARK_DROPPED);
                    dosim_sim::sometimes_if(*code == 1000, MARK_LEFT);
                }
            }
            for _ in 0..evicted {
                dosim_sim::sometimes(MARK_EVICTED);
            }
            ensure_live!(stats.acked > 0, "no message was acknowledged in the whole run");
            ensure!(stats.acked <= stats.sent, "more acks than messages");
            Ok(())
        }
    })?;
    let failed = seen.lock().expect("the run is over").take();
    match failed {
        None => Ok(report),
        Some((log, histories)) => {
            let v = check_chat(&log, &histories).expect_err("it failed in the run");
            let mut lines = v.lines.clone();
            if let Some((from, to)) = v.window {
                lines.extend(room_lines(&report, from.saturating_sub(RUNTIME_CONTEXT), to));
            }
            let evidence = dosim_sim::Evidence { lines, window: v.window };
            Err(RunFailure::after(report, described, Failure::new(v.message).with_evidence(evidence)))
        }
    }
}

/// How far before a violation's window its evidence quotes the rooms' lifecycle (a hibernation is at least
/// 10 s before the message it loses).
const RUNTIME_CONTEXT: Duration = Duration::from_secs(20);

/// The rooms' lifecycle in the trace from `from` to `to`: instances starting, hibernating, evicted, reset,
/// sockets dropped.
fn room_lines(report: &RunReport, from: Duration, to: Duration) -> Vec<String> {
    report
        .trace
        .events()
        .iter()
        .filter(|e| e.at >= from && e.at <= to)
        .filter_map(|e| match &e.kind {
            EventKind::Log { target, text }
                if target == "dosim::runtime"
                    && text.starts_with("ChatRoom/")
                    && [" starts", " hibernates ", " evicted", " reset", " drops "]
                        .iter()
                        .any(|w| text.contains(w)) =>
            {
                let node = e.node.map(|n| n.to_string()).unwrap_or_default();
                Some(format!("{:>12.3?} {node} {text}", e.at))
            }
            _ => None,
        })
        .collect()
}

/// How many times a room hibernated with sockets in `report`'s trace (the runtime's
/// `hibernates with N sockets` line).
pub fn hibernations(report: &RunReport) -> usize {
    report
        .trace
        .events()
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Log { target, text } if target == "dosim::runtime" && text.contains(" hibernates with ")))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_into_events() {
        let at = Duration::from_millis(5);
        assert_eq!(parse_frame(3, "ack 4", at), Some(ChatEvent::Acked { conn: 3, id: 4, at }));
        assert_eq!(
            parse_frame(3, "from m7 2 hello", at),
            Some(ChatEvent::Received { conn: 3, from: 7, id: 2, at })
        );
        assert_eq!(parse_frame(3, "pong", at), None);
    }

    #[test]
    fn options_are_a_function_of_the_seed_and_quiet_windows_fit_the_run() {
        for s in 0..50 {
            let o = Options::from_seed(Seed(s));
            assert_eq!(o, Options::from_seed(Seed(s)));
            for (a, l) in &o.quiet {
                assert!(*a + *l < o.run_for && *l >= Duration::from_secs(12));
            }
        }
    }
}
