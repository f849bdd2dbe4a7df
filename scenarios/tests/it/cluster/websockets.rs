//! WebSockets across the cluster (spec §5.2): a client on the front opens a socket to an object on another
//! host (`fetch` with `Upgrade: websocket`), and the frames travel in a session over the fabric's datagrams.
//!
//! - On a hostile network (loss, duplication, reordering on every hop; the test counts those that hit the
//!   front ↔ owner hop, which carries the session, from the trace) every message arrives, once, in order,
//!   and the object's socket messages and the clean close are in the trace.
//! - An object on another host hibernates with the socket open, and a message over the network wakes it.
//! - A partition of the front from the owner: both ends see 1006 within the session's peer timeout.
//! - A crash of the owner: the client sees 1006, reconnects, and reaches the object on another host.
//! - The owner cut off from the directory (its lease lapses) drops its sockets, hibernated ones too: the
//!   client sees 1006 before any peer timeout could have told it.
//!
//! Nodes: 0 the directory (simulated etcd), 1 the front, 2..=4 hosts. The object is `runtime::websockets`'
//! `Room`.

use std::rc::Rc;
use std::time::Duration;

use dosim_runtime::embed::{Clock, ClusterRole, Directory, LEASE_TTL_S};
use dosim_runtime::error::messages;
use dosim_runtime::prelude::*;
use dosim_runtime::websockets::CLOSE_ABNORMAL;
use dosim_scenarios::cluster::etcd::{etcd_addr, etcd_node, EtcdCoordinator};
use dosim_scenarios::cluster::transport::{addr_of, CLUSTER_PORT};
use dosim_scenarios::cluster::{cluster_node, cluster_node_without_dedup};
use dosim_scenarios::sim_host::{HostNode, SimClock};
use dosim_sim::net::NetConfig;
use dosim_sim::{
    ensure, sim_test, Direction, DropReason, EventKind, Failure, FaultKind, LatencyRange, NodeId, Ratio,
    RunReport, Sim,
};

use super::{ETCD, FRONT, HOSTS};
use crate::runtime::websockets::{connect, connect_greeted, next_within, room_script, rpc};

/// The namespace uid of `Room` (script `worker`, migration `v1`): the key of its directory records.
const ROOM_NS: &str = "worker:Room:v1";
/// A session with nothing heard from its peer for this long drops (`runtime/src/stream.rs`).
const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a drop to reach the other end once it is decided (heartbeats are every second).
const SLACK: Duration = Duration::from_secs(2);

struct Cluster {
    sim: Sim,
    front: HostNode,
    hosts: Vec<HostNode>,
}

fn cluster(seed: dosim_sim::Seed, network: Option<NetConfig>) -> Result<Cluster, dosim_sim::RunFailure> {
    cluster_with(seed, network, true)
}

/// The cluster; `dedup: false` builds every node without deduplication (its sessions deliver frames as
/// they arrive): the negative control.
fn cluster_with(
    seed: dosim_sim::Seed,
    network: Option<NetConfig>,
    dedup: bool,
) -> Result<Cluster, dosim_sim::RunFailure> {
    let node_of = if dedup { cluster_node } else { cluster_node_without_dedup };
    let mut b = Sim::builder().seed(seed).node(etcd_node(ETCD, "etcd"));
    if let Some(net) = network {
        b = b.network(net);
    }
    let (config, front) = node_of(FRONT, "front", ETCD, &[], ClusterRole::Front, room_script);
    b = b.node(config);
    let mut hosts = Vec::new();
    for (i, node) in HOSTS.iter().enumerate() {
        let (config, host) =
            node_of(*node, &format!("host-{}", i + 1), ETCD, &[], ClusterRole::Host, room_script);
        b = b.node(config);
        hosts.push(host);
    }
    Ok(Cluster { sim: b.build()?, front, hosts })
}

/// The host node the directory names as the owner of room `name` (asked from `from`).
async fn owner_of(from: &HostNode, name: &'static str) -> Result<Option<NodeId>, Failure> {
    let owner = from
        .run(move |env| async move {
            let id = env.durable_object("ROOM").unwrap().id_from_name(name);
            let directory = Directory::new(Rc::new(EtcdCoordinator::new(etcd_addr(ETCD))));
            directory.owner(ROOM_NS, &id).await.ok().flatten().map(|o| o.host)
        })
        .await?;
    Ok(owner.and_then(|o| HOSTS.iter().copied().find(|n| addr_of(*n, CLUSTER_PORT) == o)))
}

fn host_at(hosts: &[HostNode], node: NodeId) -> &HostNode {
    &hosts[HOSTS.iter().position(|n| *n == node).expect("a host node")]
}

/// Connects to room `name`, retrying while the network loses the upgrade (each try is a new socket; a try
/// whose call or answer was lost waits out the 30 s call timeout).
async fn connect_retrying(env: &Env, name: &str, within: Duration) -> Result<WebSocket, String> {
    let start = madsim::time::Instant::now();
    loop {
        match connect_greeted(env, name, "", "client", Some("welcome")).await {
            Ok(ws) => return Ok(ws),
            Err(e) if start.elapsed() < within => {
                tracing::debug!(target: "dosim::scenario", "connect failed: {}", e.message());
                madsim::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(format!("no connection within {within:?}: {e:?}")),
        }
    }
}

/// Sends `say:<text>` and waits for `text` back.
async fn say(ws: &WebSocket, text: &str) -> Result<(), String> {
    ws.send_with_str(format!("say:{text}")).map_err(|e| e.to_string())?;
    match next_within(ws, Duration::from_secs(5)).await {
        Some(WebSocketEvent::Message(WebSocketIncomingMessage::String(s))) if s == text => Ok(()),
        other => Err(format!("say:{text} answered {other:?}")),
    }
}

/// Waits for `ws` to close; returns the close and when it came.
async fn closed(ws: &WebSocket, within: Duration) -> Result<(CloseEvent, madsim::time::Instant), String> {
    match next_within(ws, within).await {
        Some(WebSocketEvent::Close(c)) => Ok((c, madsim::time::Instant::now())),
        Some(other) => Err(format!("expected a close, got {other:?}")),
        None => Err(format!("no close within {within:?}")),
    }
}

/// A 1006 close as the spec words it.
fn is_dropped(c: &CloseEvent) -> bool {
    c.code == CLOSE_ABNORMAL && c.reason == messages::WS_DISCONNECTED && !c.was_clean
}

/// Loss 1/50, a quarter of messages duplicated, a quarter delayed 40 ms past later ones: on every hop.
fn hostile() -> NetConfig {
    NetConfig {
        latency: LatencyRange::new(Duration::from_millis(1), Duration::from_millis(10)),
        loss: Ratio::new(1, 50),
        duplicate: Ratio::new(1, 4),
        reorder: Ratio::new(1, 4),
        reorder_delay: Duration::from_millis(40),
    }
}

const MESSAGES: usize = 200;

/// The faults the network put on the datagrams between `a` and `b` (either way) between the trace notes
/// `ws = start` and `ws = end`: losses, duplicates, and datagrams delivered after one sent later on the same
/// link (overtaken: reordered).
fn faults_on_hop(report: &RunReport, a: NodeId, b: NodeId) -> (u64, u64, u64) {
    let on_hop = |from: NodeId, to: NodeId| (from == a && to == b) || (from == b && to == a);
    let mut inside = false;
    let mut links = std::collections::BTreeMap::new();
    let mut last_delivered = std::collections::BTreeMap::new();
    let (mut lost, mut duplicated, mut overtaken) = (0, 0, 0);
    for e in report.trace.events() {
        match &e.kind {
            EventKind::Note { key, value } if key == "ws" => inside = value == "start",
            EventKind::Send { msg, from, to, .. } if on_hop(from.node, to.node) => {
                links.insert(*msg, (from.node, to.node));
            }
            EventKind::Duplicate { msg, copy } => {
                if let Some(link) = links.get(msg).copied() {
                    links.insert(*copy, link);
                    duplicated += u64::from(inside);
                }
            }
            EventKind::Drop { msg, reason: DropReason::Loss } if links.contains_key(msg) => {
                lost += u64::from(inside)
            }
            EventKind::Deliver { msg, .. } => {
                if let Some(link) = links.get(msg) {
                    let last = last_delivered.entry(*link).or_insert(0u64);
                    if *msg < *last {
                        overtaken += u64::from(inside);
                    }
                    *last = (*last).max(*msg);
                }
            }
            _ => {}
        }
    }
    (lost, duplicated, overtaken)
}

// 200 messages each way over a hostile network: every answer arrives once and in order (the object answers
// each `say:i` at once, so the answers' order is the order the object received them), then a clean close.
// The network's faults on the front ↔ owner hop during the exchange are counted from the trace, and the
// owner's trace has the socket's messages and its clean close.
fn hostile_exchange(seed: dosim_sim::Seed, dedup: bool) -> Result<RunReport, dosim_sim::RunFailure> {
    let Cluster { sim, front, hosts } = cluster_with(seed, Some(hostile()), dedup)?;
    sim.run(move |_world| async move {
        let _hosts = hosts.clone();
        madsim::time::sleep(Duration::from_secs(3)).await;
        let got = front
            .run(|env| async move {
                let ws = connect_retrying(&env, "r", Duration::from_secs(90)).await?;
                dosim_sim::note("ws", "start");
                match next_within(&ws, Duration::from_secs(30)).await {
                    Some(WebSocketEvent::Message(WebSocketIncomingMessage::String(s))) if s == "welcome" => {}
                    other => return Err(format!("the greeting sent before the 101: {other:?}")),
                }
                for i in 0..MESSAGES {
                    ws.send_with_str(format!("say:{i}")).map_err(|e| e.to_string())?;
                }
                let mut got = Vec::new();
                while got.len() < MESSAGES {
                    match next_within(&ws, Duration::from_secs(30)).await {
                        Some(WebSocketEvent::Message(WebSocketIncomingMessage::String(s))) => got.push(s),
                        other => return Err(format!("after {} answers: {other:?}", got.len())),
                    }
                }
                ws.close(Some(1000), Some("bye")).map_err(|e| e.to_string())?;
                let (close, _) = closed(&ws, Duration::from_secs(30)).await?;
                dosim_sim::note("ws", "end");
                if close != (CloseEvent { code: 1000, reason: "bye".into(), was_clean: true }) {
                    return Err(format!("the close: {close:?}"));
                }
                Ok(got)
            })
            .await?
            .map_err(Failure::new)?;
        let expected: Vec<String> = (0..MESSAGES).map(|i| i.to_string()).collect();
        ensure!(got == expected, "answers out of order, lost or doubled: {got:?}");
        let owner = owner_of(&front, "r").await?.ok_or_else(|| Failure::new("no owner"))?;
        dosim_sim::note("owner", owner);
        Ok(())
    })
}

sim_test!(fn messages_cross_a_hostile_network_in_order_and_once(seed) {
    let report = hostile_exchange(seed, true)?;
    let owner = report
        .trace
        .events()
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Note { key, value } if key == "owner" => Some(value.clone()),
            _ => None,
        })
        .expect("the owner was noted");
    let owner = *HOSTS.iter().find(|n| n.to_string() == owner).expect("a host");
    let (lost, duplicated, overtaken) = faults_on_hop(&report, FRONT, owner);
    for (what, n) in [("lost", lost), ("duplicated", duplicated), ("reordered", overtaken)] {
        assert!(n > 0, "no datagram {what} on the front <-> owner hop during the exchange ({seed})");
    }
    for kind in [FaultKind::MessageLoss, FaultKind::MessageDuplicate, FaultKind::MessageReorder] {
        assert!(report.faults.get(kind) >= 1, "{kind} counted ({seed}): {}", report.faults);
    }
    let logs: Vec<String> = report
        .trace
        .events()
        .iter()
        .filter(|e| e.node == Some(owner))
        .filter_map(|e| match &e.kind {
            EventKind::Log { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect();
    let messages = logs.iter().filter(|l| l.contains(" message (") && l.contains(" socket ")).count();
    assert!(messages >= MESSAGES, "the owner's trace has a line per message: {messages} ({seed})");
    assert!(
        logs.iter().any(|l| l.contains(" closed 1000 \"bye\" clean=true")),
        "the owner's trace has the clean close ({seed})"
    );
    // Both Close frames exchanged and acknowledged: a session ends quietly (on a lossy hop the last ack may
    // be lost, and the other side then learns it from the reset its retransmission gets).
    let ended = report
        .trace
        .events()
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::Log { text, .. } if text.starts_with("ws ") && text.ends_with(" ended cleanly")))
        .count();
    assert!(ended >= 1, "no session ended cleanly after the clean close ({seed})");
    println!("front <-> {owner}: {lost} lost, {duplicated} duplicated, {overtaken} delivered out of send order; {}", report.faults);
    Ok(report)
});

// A socket to an object on another host outlives the object's hibernation there: after 11 s idle the owner
// has no instance, the client's socket is still open, and its next message wakes the object on the same
// host (a new instance: the constructor ran again) and is answered.
sim_test!(fn a_remote_object_hibernates_and_a_message_over_the_network_wakes_it(seed) {
    let Cluster { sim, front, hosts } = cluster(seed, None)?;
    sim.run(move |_world| async move {
        madsim::time::sleep(Duration::from_secs(3)).await;
        let (ready, connected) = madsim_tokio::sync::oneshot::channel::<()>();
        let (go, woken) = madsim_tokio::sync::oneshot::channel::<()>();
        let client = front.clone();
        let conversation = madsim::task::spawn(async move {
            client
                .run(|env| async move {
                    let ws = connect(&env, "h", "", "client").await.map_err(|e| e.to_string())?;
                    say(&ws, "hello").await?;
                    let _ = ready.send(());
                    let _ = woken.await;
                    if ws.is_closed() || !ws.take_events().is_empty() {
                        return Err("the socket saw something while the object hibernated".to_string());
                    }
                    say(&ws, "again").await?;
                    rpc::<_, u64>(&env, "h", "constructions", &()).await.map_err(|e| e.to_string())
                })
                .await
        });
        connected.await.map_err(|_| Failure::new("the client never connected"))?;
        let owner = owner_of(&front, "h").await?.ok_or_else(|| Failure::new("no owner"))?;
        let owner_host = host_at(&hosts, owner);
        madsim::time::sleep(Duration::from_secs(11)).await;
        let live = owner_host.run_on_host(|host| async move { host.live_instances() }).await?;
        ensure!(live == 0, "the object hibernated on {owner}: {live} live");
        let _ = go.send(());
        let constructions = conversation.await.map_err(|e| Failure::new(e.to_string()))??.map_err(Failure::new)?;
        ensure!(constructions == 2, "the message woke a new instance: {constructions} constructions");
        let live = owner_host.run_on_host(|host| async move { host.live_instances() }).await?;
        ensure!(live == 1, "the object runs again on {owner}: {live} live");
        ensure!(owner_of(&front, "h").await? == Some(owner), "the same owner");
        Ok(())
    })
});

// A partition between the front and the owner: neither end hears the other, and each drops the connection
// within the peer timeout: the client sees 1006, and so does the object's `websocket_close`.
sim_test!(fn a_partition_front_owner_drops_both_ends_within_the_peer_timeout(seed) {
    let Cluster { sim, front, hosts } = cluster(seed, None)?;
    let report = sim.run(move |world| async move {
        let _hosts = hosts.clone();
        madsim::time::sleep(Duration::from_secs(3)).await;
        let (ready, connected) = madsim_tokio::sync::oneshot::channel::<()>();
        let client = front.clone();
        let conversation = madsim::task::spawn(async move {
            client
                .run(|env| async move {
                    let ws = connect(&env, "p", "", "client").await.map_err(|e| e.to_string())?;
                    say(&ws, "hello").await?;
                    let _ = ready.send(());
                    closed(&ws, PEER_TIMEOUT + Duration::from_secs(10)).await
                })
                .await
        });
        connected.await.map_err(|_| Failure::new("the client never connected"))?;
        let owner = owner_of(&front, "p").await?.ok_or_else(|| Failure::new("no owner"))?;
        world.partition(&[FRONT], &[owner], Direction::Both)?;
        let cut = madsim::time::Instant::now();
        let cut_ms = SimClock.now_ms();
        let (close, at) = conversation.await.map_err(|e| Failure::new(e.to_string()))??.map_err(Failure::new)?;
        ensure!(is_dropped(&close), "the client sees 1006: {close:?}");
        let took = at - cut;
        ensure!(took <= PEER_TIMEOUT + SLACK, "the client's end dropped after {took:?}");
        // The owner's end times out on its own clock: give it the same bound, then heal to ask the object.
        madsim::time::sleep_until(cut + PEER_TIMEOUT + SLACK).await;
        world.heal();
        // The object's end: its close handler recorded 1006, within the timeout of the cut.
        let (closes, at) = front
            .run(|env| async move {
                let closes: Vec<(u16, String, bool)> = rpc(&env, "p", "closes", &()).await?;
                let at: Vec<i64> = rpc(&env, "p", "closed_at", &()).await?;
                Ok::<_, Error>((closes, at))
            })
            .await?
            .map_err(|e| Failure::new(e.to_string()))?;
        ensure!(
            closes == vec![(CLOSE_ABNORMAL, messages::WS_DISCONNECTED.to_string(), false)],
            "the object's websocket_close: {closes:?}"
        );
        let after = at[0] - cut_ms;
        ensure!(
            after >= 0 && after <= (PEER_TIMEOUT + SLACK).as_millis() as i64,
            "the object's end dropped {after} ms after the cut"
        );
        Ok(())
    })?;
    assert_eq!(report.faults.get(FaultKind::Partition), 1, "one partition: front <-> owner ({seed})");
    Ok(report)
});

// The owner crashes: the client's end drops (1006) once the session hears nothing; the client reconnects,
// and reaches the object on another host once the directory lets the crashed owner's lease go.
sim_test!(fn a_crashed_owner_drops_the_socket_and_the_client_reconnects_elsewhere(seed) {
    let Cluster { sim, front, hosts } = cluster(seed, None)?;
    let report = sim.run(move |world| async move {
        let _hosts = hosts.clone();
        madsim::time::sleep(Duration::from_secs(3)).await;
        let (ready, connected) = madsim_tokio::sync::oneshot::channel::<()>();
        let client = front.clone();
        let conversation = madsim::task::spawn(async move {
            client
                .run(|env| async move {
                    let ws = connect(&env, "c", "", "client").await.map_err(|e| e.to_string())?;
                    say(&ws, "before").await?;
                    let _ = ready.send(());
                    let (close, at) = closed(&ws, PEER_TIMEOUT + Duration::from_secs(10)).await?;
                    // The front's first try goes to the crashed owner it remembers, and waits out the
                    // call timeout (30 s); the next asks the directory.
                    let again = connect_retrying(&env, "c", Duration::from_secs(60)).await?;
                    match next_within(&again, Duration::from_secs(5)).await {
                        Some(WebSocketEvent::Message(WebSocketIncomingMessage::String(s))) if s == "welcome" => {}
                        other => return Err(format!("the new connection's greeting: {other:?}")),
                    }
                    say(&again, "after").await?;
                    Ok::<_, String>((close, at))
                })
                .await
        });
        connected.await.map_err(|_| Failure::new("the client never connected"))?;
        let owner = owner_of(&front, "c").await?.ok_or_else(|| Failure::new("no owner"))?;
        world.crash(owner)?;
        let crashed = madsim::time::Instant::now();
        let (close, at) = conversation.await.map_err(|e| Failure::new(e.to_string()))??.map_err(Failure::new)?;
        ensure!(is_dropped(&close), "the client sees 1006: {close:?}");
        ensure!(at - crashed <= PEER_TIMEOUT + SLACK, "dropped {:?} after the crash", at - crashed);
        let moved = owner_of(&front, "c").await?;
        ensure!(moved.is_some_and(|m| m != owner), "the object moved off the crashed {owner}: {moved:?}");
        Ok(())
    })?;
    assert_eq!(report.faults.get(FaultKind::Crash), 1, "one crash: the owner ({seed})");
    Ok(report)
});

// A crashed owner that restarts at once does not know the connection: the client's next ping reaches the
// new incarnation, which answers with a reset, and the client sees 1006 within a heartbeat or two of the
// restart, long before the peer timeout would tell it.
sim_test!(fn a_restarted_owner_resets_the_connections_it_forgot(seed) {
    let Cluster { sim, front, hosts } = cluster(seed, None)?;
    let report = sim.run(move |world| async move {
        let _hosts = hosts.clone();
        madsim::time::sleep(Duration::from_secs(3)).await;
        let (ready, connected) = madsim_tokio::sync::oneshot::channel::<()>();
        let client = front.clone();
        let conversation = madsim::task::spawn(async move {
            client
                .run(|env| async move {
                    let ws = connect(&env, "r", "", "client").await.map_err(|e| e.to_string())?;
                    say(&ws, "before").await?;
                    let _ = ready.send(());
                    closed(&ws, PEER_TIMEOUT + Duration::from_secs(10)).await
                })
                .await
        });
        connected.await.map_err(|_| Failure::new("the client never connected"))?;
        let owner = owner_of(&front, "r").await?.ok_or_else(|| Failure::new("no owner"))?;
        world.crash(owner)?;
        madsim::time::sleep(Duration::from_secs(1)).await;
        world.restart(owner)?;
        let restarted = madsim::time::Instant::now();
        let (close, at) = conversation.await.map_err(|e| Failure::new(e.to_string()))??.map_err(Failure::new)?;
        ensure!(is_dropped(&close), "the client sees 1006: {close:?}");
        ensure!(
            at.saturating_duration_since(restarted) <= Duration::from_secs(3),
            "the reset reached the client {:?} after the restart (the peer timeout is {PEER_TIMEOUT:?})",
            at.saturating_duration_since(restarted)
        );
        Ok(())
    })?;
    assert_eq!(report.faults.get(FaultKind::Crash), 1, "one crash: the owner ({seed})");
    assert_eq!(report.faults.get(FaultKind::Restart), 1, "one restart: the owner ({seed})");
    Ok(report)
});

// The owner is cut off from the directory while the object hibernates (its socket held by the host, no
// instance): the lease lapses, the host gives its objects up and drops their sockets, and the client sees
// 1006 well before a peer timeout could have dropped it (the front still hears the owner).
sim_test!(fn an_owner_cut_off_from_the_directory_drops_its_hibernated_sockets(seed) {
    let Cluster { sim, front, hosts } = cluster(seed, None)?;
    let report = sim.run(move |world| async move {
        madsim::time::sleep(Duration::from_secs(3)).await;
        let (ready, connected) = madsim_tokio::sync::oneshot::channel::<()>();
        let (go, started) = madsim_tokio::sync::oneshot::channel::<()>();
        let client = front.clone();
        let conversation = madsim::task::spawn(async move {
            client
                .run(|env| async move {
                    let ws = connect(&env, "d", "", "client").await.map_err(|e| e.to_string())?;
                    say(&ws, "hello").await?;
                    let _ = ready.send(());
                    let _ = started.await;
                    let start = madsim::time::Instant::now();
                    let (close, at) = closed(&ws, Duration::from_secs(30)).await?;
                    Ok::<_, String>((close, at - start))
                })
                .await
        });
        connected.await.map_err(|_| Failure::new("the client never connected"))?;
        let owner = owner_of(&front, "d").await?.ok_or_else(|| Failure::new("no owner"))?;
        let owner_host = host_at(&hosts, owner);
        madsim::time::sleep(Duration::from_secs(11)).await;
        let live = owner_host.run_on_host(|host| async move { host.live_instances() }).await?;
        ensure!(live == 0, "the object hibernated: {live} live");
        world.partition(&[owner], &[ETCD], Direction::Both)?;
        let _ = go.send(());
        let (close, took) = conversation.await.map_err(|e| Failure::new(e.to_string()))??.map_err(Failure::new)?;
        ensure!(is_dropped(&close), "the client sees 1006: {close:?}");
        ensure!(
            took <= Duration::from_secs(LEASE_TTL_S as u64) + SLACK && took < PEER_TIMEOUT,
            "dropped {took:?} after the cut: not the lease's lapse"
        );
        Ok(())
    })?;
    assert_eq!(report.faults.get(FaultKind::Partition), 1, "one partition: the owner from the directory ({seed})");
    Ok(report)
});

// The negative control: nodes whose sessions deliver frames as they arrive (no reorder buffer, no
// deduplication) lose the order, or double or drop an answer, on the same hostile network.
#[test]
fn negative_control_sessions_without_ordering_garble_the_exchange() {
    let caught = (0..4u64)
        .map(|i| dosim_sim::Seed(0x5e55_1000 + i))
        .filter(|seed| match hostile_exchange(*seed, false) {
            Err(f) => {
                let f = f.to_string();
                assert!(
                    f.contains("out of order, lost or doubled")
                        || f.contains(" answers: ")
                        || f.contains("close")
                        || f.contains("greeting"),
                    "failed for another reason ({seed}): {f}"
                );
                true
            }
            Ok(_) => false,
        })
        .count();
    assert!(caught > 0, "without ordering, no seed of 4 garbled the exchange");
}
