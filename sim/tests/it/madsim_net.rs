//! madsim's own network (`madsim::net`) between World nodes: every node has its IP, and partitions, clogs and
//! crashes cut madsim's traffic exactly where they cut dosim's fabric.
//!
//! The traffic is what the simulated etcd does: one connection per request (`connect1`), one request, one
//! reply. Node 0 serves; nodes 1 and 2 call. The server keeps the nodes whose requests reached it, so each
//! test shows which hop a fault cut: the way there (nothing reached the server) or the way back (the server
//! saw the request, the caller got no reply).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dosim_sim::{
    ensure, node_at_ip, node_ip, sim_test, Direction, Failure, NodeConfig, NodeId, Seed, Sim, World,
};
use madsim::net::Endpoint;

const PORT: u16 = 2379;
const SERVER: NodeId = NodeId(0);
/// How long a caller waits for its reply. madsim's latency is at most 10 ms a hop.
const PATIENCE: Duration = Duration::from_millis(500);

/// The callers whose requests reached the server, in order.
type Seen = Arc<Mutex<Vec<NodeId>>>;

/// What a call came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The server answered `n + 1`.
    Reply(u32),
    /// The connection was refused (the way to the server is cut, or nothing listens).
    Refused,
    /// Connected and sent, but no reply within [`PATIENCE`].
    NoReply,
}

fn server_addr() -> SocketAddr {
    SocketAddr::new(node_ip(SERVER), PORT)
}

/// Node 0: answers each request `n` with `n + 1` and notes who asked.
fn server(seen: Seen) -> NodeConfig {
    NodeConfig::new("server").program(move || {
        let seen = seen.clone();
        async move {
            let ep = Endpoint::bind(server_addr()).await.expect("the server's address is free at boot");
            loop {
                let (tx, mut rx, from) = ep.accept1().await.expect("accept");
                let caller = node_at_ip(from.ip()).expect("callers are World nodes");
                let Ok(request) = rx.recv().await else { continue };
                let n = *request.downcast::<u32>().expect("requests are u32");
                dosim_sim::note("served", caller);
                seen.lock().expect("not poisoned").push(caller);
                // A reply to a caller that gave up is lost with its connection.
                let _ = tx.send(Box::new(n + 1)).await;
            }
        }
    })
}

fn world3(seed: Seed, seen: &Seen) -> dosim_sim::SimBuilder {
    Sim::builder()
        .seed(seed)
        .node(server(seen.clone()))
        .node(NodeConfig::new("caller1"))
        .node(NodeConfig::new("caller2"))
}

/// One request from `from` to the server over madsim's network.
async fn call(world: &World, from: NodeId, n: u32) -> Result<Outcome, Failure> {
    let task = world.spawn_on(from, async move {
        let ep = Endpoint::bind(SocketAddr::new(node_ip(from), 0)).await.expect("an ephemeral port");
        let (tx, mut rx) = match ep.connect1(server_addr()).await {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Outcome::Refused,
            Err(e) => panic!("connect: {e}"),
        };
        tx.send(Box::new(n)).await.expect("a fresh connection takes a message");
        let outcome = match madsim::time::timeout(PATIENCE, rx.recv()).await {
            Ok(Ok(reply)) => Outcome::Reply(*reply.downcast::<u32>().expect("replies are u32")),
            Ok(Err(_)) | Err(_) => Outcome::NoReply,
        };
        dosim_sim::note("call", format!("{from} {n}: {outcome:?}"));
        outcome
    })?;
    task.await.map_err(|e| Failure::new(e.to_string()))
}

/// How many requests from `caller` reached the server so far.
fn served(seen: &Seen, caller: NodeId) -> usize {
    seen.lock().expect("not poisoned").iter().filter(|n| **n == caller).count()
}

/// Lets the server (re)bind after a boot.
async fn settle(world: &World) {
    world.sleep(Duration::from_millis(50)).await;
}

sim_test!(fn madsim_request_response_works_between_world_nodes(seed) {
    let seen = Seen::default();
    let seen2 = seen.clone();
    world3(seed, &seen).build()?.run(move |world| async move {
        settle(&world).await;
        for n in world.nodes() {
            ensure!(world.ip(n)? == node_ip(n), "World::ip is node_ip");
        }
        ensure!(world.ip(NodeId(1))?.to_string() == "10.0.0.2", "n1 is at 10.0.0.2");
        ensure!(call(&world, NodeId(1), 41).await? == Outcome::Reply(42), "n1 gets its reply");
        ensure!(call(&world, NodeId(2), 7).await? == Outcome::Reply(8), "n2 gets its reply");
        ensure!(
            *seen2.lock().unwrap() == [NodeId(1), NodeId(2)],
            "the server saw each caller at its own address"
        );
        Ok(())
    })
});

sim_test!(fn partition_both_ways_cuts_madsim_traffic_and_heal_restores_it(seed) {
    let seen = Seen::default();
    let seen2 = seen.clone();
    world3(seed, &seen).build()?.run(move |world| async move {
        settle(&world).await;
        ensure!(call(&world, NodeId(1), 1).await? == Outcome::Reply(2), "open before the cut");
        world.partition(&[SERVER], &[NodeId(1)], Direction::Both)?;
        ensure!(call(&world, NodeId(1), 2).await? == Outcome::Refused, "the partition refuses n1's connection");
        ensure!(served(&seen2, NodeId(1)) == 1, "no request of n1 crossed the partition");
        // Control: the link n2 -> n0 is not partitioned and carries traffic meanwhile.
        ensure!(call(&world, NodeId(2), 3).await? == Outcome::Reply(4), "n2 is not cut off");
        world.heal();
        ensure!(call(&world, NodeId(1), 4).await? == Outcome::Reply(5), "heal restores n1's traffic");
        ensure!(served(&seen2, NodeId(1)) == 2, "n1's request after heal reached the server");
        Ok(())
    })
});

sim_test!(fn one_way_partition_cuts_madsim_traffic_only_in_the_blocked_direction(seed) {
    let seen = Seen::default();
    let seen2 = seen.clone();
    world3(seed, &seen).build()?.run(move |world| async move {
        settle(&world).await;
        // Server -> caller cut: the request arrives, the reply does not.
        world.partition(&[SERVER], &[NodeId(1)], Direction::OneWay)?;
        ensure!(call(&world, NodeId(1), 1).await? == Outcome::NoReply, "the reply must not cross the cut");
        ensure!(served(&seen2, NodeId(1)) == 1, "the request crossed the open direction");
        world.heal();
        // Caller -> server cut: nothing arrives.
        world.partition(&[NodeId(1)], &[SERVER], Direction::OneWay)?;
        ensure!(call(&world, NodeId(1), 2).await? == Outcome::Refused, "the request must not cross the cut");
        ensure!(served(&seen2, NodeId(1)) == 1, "no new request reached the server");
        world.heal();
        ensure!(call(&world, NodeId(1), 3).await? == Outcome::Reply(4), "heal restores both directions");
        Ok(())
    })
});

sim_test!(fn a_partition_stalls_an_established_madsim_connection_until_heal(seed) {
    let seen = Seen::default();
    let seen2 = seen.clone();
    world3(seed, &seen).build()?.run(move |world| async move {
        settle(&world).await;
        let (go_tx, go_rx) = futures::channel::oneshot::channel::<()>();
        let caller = world.spawn_on(NodeId(1), async move {
            let ep = Endpoint::bind(SocketAddr::new(node_ip(NodeId(1)), 0)).await.expect("port");
            let (tx, mut rx) = ep.connect1(server_addr()).await.expect("open before the cut");
            go_rx.await.expect("the controller says when");
            tx.send(Box::new(10_u32)).await.expect("send");
            let reply = rx.recv().await.expect("the connection survives the partition");
            (*reply.downcast::<u32>().expect("u32"), madsim::time::Instant::now())
        })?;
        world.sleep(Duration::from_millis(20)).await;
        world.partition(&[SERVER], &[NodeId(1)], Direction::Both)?;
        go_tx.send(()).expect("the caller waits");
        world.sleep(Duration::from_secs(2)).await;
        ensure!(served(&seen2, NodeId(1)) == 0, "the request waits at the cut");
        let healed = madsim::time::Instant::now();
        world.heal();
        let (reply, at) = caller.await.map_err(|e| Failure::new(e.to_string()))?;
        ensure!(reply == 11, "the held request is answered after heal");
        ensure!(at >= healed, "the reply came only after heal");
        ensure!(served(&seen2, NodeId(1)) == 1, "the request reached the server once");
        Ok(())
    })
});

sim_test!(fn clogs_cut_madsim_traffic_until_unclogged(seed) {
    let seen = Seen::default();
    let seen2 = seen.clone();
    world3(seed, &seen).build()?.run(move |world| async move {
        settle(&world).await;
        // A clogged node: nobody reaches it.
        world.clog_node(SERVER)?;
        ensure!(call(&world, NodeId(1), 1).await? == Outcome::Refused, "n1 cannot reach a clogged node");
        ensure!(call(&world, NodeId(2), 1).await? == Outcome::Refused, "n2 cannot reach a clogged node");
        ensure!(seen2.lock().unwrap().is_empty(), "no request reached the clogged server");
        world.unclog_node(SERVER)?;
        ensure!(call(&world, NodeId(1), 2).await? == Outcome::Reply(3), "unclog restores traffic");
        // A clogged link: only that direction of that pair.
        world.clog_link(NodeId(1), SERVER)?;
        ensure!(call(&world, NodeId(1), 3).await? == Outcome::Refused, "the clogged link n1 -> n0 is cut");
        ensure!(call(&world, NodeId(2), 3).await? == Outcome::Reply(4), "n2 -> n0 is not clogged");
        ensure!(served(&seen2, NodeId(1)) == 1, "only n1's request before the link clog arrived");
        // A link both clogged and partitioned stays cut until both are lifted.
        world.partition(&[NodeId(1)], &[SERVER], Direction::OneWay)?;
        world.unclog_link(NodeId(1), SERVER)?;
        ensure!(call(&world, NodeId(1), 4).await? == Outcome::Refused, "the partition still cuts the link");
        world.heal();
        ensure!(call(&world, NodeId(1), 5).await? == Outcome::Reply(6), "heal and unclog open the link");
        Ok(())
    })
});

sim_test!(fn a_crashed_then_restarted_node_is_reachable_again_at_the_same_ip(seed) {
    let seen = Seen::default();
    let seen2 = seen.clone();
    world3(seed, &seen).build()?.run(move |world| async move {
        settle(&world).await;
        ensure!(call(&world, NodeId(1), 1).await? == Outcome::Reply(2), "up before the crash");
        world.crash(SERVER)?;
        ensure!(call(&world, NodeId(1), 2).await? == Outcome::Refused, "a crashed node's socket is closed");
        world.restart(SERVER)?;
        settle(&world).await;
        ensure!(call(&world, NodeId(1), 3).await? == Outcome::Reply(4), "the restarted server answers at its IP");
        // A restarted caller calls from its old address.
        world.power_cut(NodeId(2))?;
        world.restart(NodeId(2))?;
        ensure!(call(&world, NodeId(2), 4).await? == Outcome::Reply(5), "the restarted caller is answered");
        ensure!(
            *seen2.lock().unwrap() == [NodeId(1), NodeId(1), NodeId(2)],
            "the server saw each caller at its own address, before and after restarts"
        );
        Ok(())
    })
});

sim_test!(fn without_mirroring_partitions_and_clogs_leave_madsim_traffic_flowing(seed) {
    // The negative control of the tests above: the same faults with the mirroring switched off.
    let seen = Seen::default();
    let seen2 = seen.clone();
    world3(seed, &seen).mirror_faults_to_madsim_net(false).build()?.run(move |world| async move {
        settle(&world).await;
        world.partition(&[SERVER], &[NodeId(1)], Direction::Both)?;
        ensure!(!world.link_is_open(NodeId(1), SERVER)?, "dosim's fabric is cut");
        ensure!(call(&world, NodeId(1), 1).await? == Outcome::Reply(2), "madsim's network is not");
        world.heal();
        world.clog_node(SERVER)?;
        ensure!(call(&world, NodeId(1), 2).await? == Outcome::Reply(3), "a clog does not reach madsim either");
        ensure!(served(&seen2, NodeId(1)) == 2, "both requests reached the server");
        Ok(())
    })
});

sim_test!(fn a_paused_node_answers_madsim_requests_after_it_resumes(seed) {
    // Pauses are not mirrored: what reaches a paused node waits in its sockets, as on dosim's fabric.
    let seen = Seen::default();
    let seen2 = seen.clone();
    world3(seed, &seen).build()?.run(move |world| async move {
        settle(&world).await;
        world.pause(SERVER)?;
        let caller = world.spawn_on(NodeId(1), async {
            let ep = Endpoint::bind(SocketAddr::new(node_ip(NodeId(1)), 0)).await.expect("port");
            let (tx, mut rx) = ep.connect1(server_addr()).await.expect("a paused node's socket still accepts");
            tx.send(Box::new(20_u32)).await.expect("send");
            *rx.recv().await.expect("reply").downcast::<u32>().expect("u32")
        })?;
        world.sleep(Duration::from_secs(1)).await;
        ensure!(seen2.lock().unwrap().is_empty(), "a paused server handles nothing");
        world.resume(SERVER)?;
        let reply = caller.await.map_err(|e| Failure::new(e.to_string()))?;
        ensure!(reply == 21, "the request waited for the resume and was answered");
        ensure!(served(&seen2, NodeId(1)) == 1, "served once, after the resume");
        Ok(())
    })
});
