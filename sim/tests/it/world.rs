//! The world under simulation: network faults, node lifecycle, disks, replay and the determinism check.

use std::time::Duration;

use dosim_sim::disk;
use dosim_sim::net::{Endpoint, NetConfig};
use dosim_sim::{
    ensure, sim_test, Addr, Direction, DiskConfig, EventKind, Failure, FailureClass, FailureKind, FaultKind,
    NodeConfig, NodeId, Ratio, RunFailure, RunOptions, RunReport, Seed, Sim, World,
};

const PORT: u16 = 7;

/// Node 0 echoes every datagram back to its sender.
fn echo_server() -> NodeConfig {
    NodeConfig::new("echo").program(|| async {
        let mut ep = Endpoint::bind(PORT).expect("port free at boot");
        loop {
            let d = ep.recv().await;
            ep.send(d.from, d.payload);
        }
    })
}

/// Sends `n` pings from `from` to the echo server, one every 10 ms, and counts the echoes that came back
/// within 200 ms of the last one.
async fn pings(world: &World, from: NodeId, n: u32) -> Result<u32, Failure> {
    let task = world.spawn_on(from, async move {
        let mut ep = Endpoint::bind(PORT).expect("client port");
        for i in 0..n {
            ep.send(Addr { node: NodeId(0), port: PORT }, i.to_le_bytes().to_vec());
            madsim::time::sleep(Duration::from_millis(10)).await;
        }
        madsim::time::sleep(Duration::from_millis(200)).await;
        let mut got = 0;
        while ep.try_recv().is_some() {
            got += 1;
        }
        got
    })?;
    task.await.map_err(|e| Failure::new(e.to_string()))
}

fn two_nodes(seed: Seed) -> dosim_sim::SimBuilder {
    Sim::builder().seed(seed).node(echo_server()).node(NodeConfig::new("client"))
}

sim_test!(fn symmetric_partition_stops_delivery_and_heal_restores_it(seed) {
    two_nodes(seed).build()?.run(|world| async move {
        ensure!(pings(&world, NodeId(1), 10).await? == 10, "reliable network must echo all pings");
        world.partition(&[NodeId(0)], &[NodeId(1)], Direction::Both)?;
        ensure!(!world.link_is_open(NodeId(1), NodeId(0))?, "link must be cut");
        ensure!(pings(&world, NodeId(1), 10).await? == 0, "a partition must stop every echo");
        world.heal();
        ensure!(pings(&world, NodeId(1), 10).await? == 10, "heal must restore delivery");
        Ok(())
    })
});

sim_test!(fn one_way_partition_cuts_only_one_direction(seed) {
    two_nodes(seed).build()?.run(|world| async move {
        // Cut server -> client only: the pings arrive (server sees them) but no echo comes back.
        world.partition(&[NodeId(0)], &[NodeId(1)], Direction::OneWay)?;
        ensure!(world.link_is_open(NodeId(1), NodeId(0))?, "client -> server stays open");
        ensure!(!world.link_is_open(NodeId(0), NodeId(1))?, "server -> client is cut");
        ensure!(pings(&world, NodeId(1), 5).await? == 0, "echoes must not cross a one-way cut");
        world.heal();
        ensure!(pings(&world, NodeId(1), 5).await? == 5, "heal must restore the way back");
        Ok(())
    })
    .inspect(|report| {
        // The pings were delivered and their echoes dropped at the partition.
        let events = report.trace.events();
        let delivered_to_server = events
            .iter()
            .filter(|e| matches!(&e.kind, EventKind::Deliver { to, .. } if to.node == NodeId(0)))
            .count();
        assert_eq!(delivered_to_server, 10, "all 10 pings reach the server");
        let partition_drops = events
            .iter()
            .filter(|e| matches!(&e.kind, EventKind::Drop { reason: dosim_sim::DropReason::Partition, .. }))
            .count();
        assert_eq!(partition_drops, 5, "the 5 echoes during the cut are dropped by the partition");
    })
});

sim_test!(fn clog_holds_messages_until_unclog(seed) {
    two_nodes(seed).build()?.run(|world| async move {
        world.clog_node(NodeId(0))?;
        ensure!(pings(&world, NodeId(1), 5).await? == 0, "a clogged node receives nothing");
        let client = world.spawn_on(NodeId(1), async {
            let mut ep = Endpoint::bind(PORT + 1).expect("port");
            ep.send(Addr { node: NodeId(0), port: PORT }, b"late".to_vec());
            ep.recv().await.payload
        })?;
        world.sleep(Duration::from_secs(1)).await;
        world.unclog_node(NodeId(0))?;
        let echoed = client.await.map_err(|e| Failure::new(e.to_string()))?;
        ensure!(echoed == b"late", "a held message is delivered after unclog");
        Ok(())
    })
});

sim_test!(fn lossy_network_drops_duplicates_and_reorders_and_counts_it(seed) {
    let net = NetConfig { loss: Ratio::new(1, 5), duplicate: Ratio::new(1, 5), reorder: Ratio::new(1, 5), ..NetConfig::lossy() };
    let report = two_nodes(seed).network(net).build()?.run(|world| async move {
        pings(&world, NodeId(1), 200).await?;
        Ok(())
    })?;
    for kind in [FaultKind::MessageLoss, FaultKind::MessageDuplicate, FaultKind::MessageReorder] {
        assert!(report.faults.get(kind) > 0, "{kind} never fired in 400 messages: {}", report.faults);
    }
    Ok(report)
});

sim_test!(fn crash_loses_memory_but_keeps_disk_and_power_cut_loses_unsynced(seed) {
    let node = NodeConfig::new("store").program(|| async {
        // At boot, report what the disk holds, then write one synced and one unsynced file.
        let synced = disk::exists("synced");
        let unsynced_len = if disk::exists("unsynced") {
            let f = disk::open("unsynced", false).unwrap();
            disk::file_size(&f).unwrap()
        } else {
            0
        };
        dosim_sim::note("boot", format!("synced={synced} unsynced_len={unsynced_len}"));
        let f = disk::open("synced", true).unwrap();
        disk::write_at(&f, 0, b"durable").unwrap();
        disk::sync(&f).unwrap();
        let g = disk::open("unsynced", true).unwrap();
        disk::write_at(&g, 0, b"volatile").unwrap();
        std::future::pending::<()>().await;
    });
    let disk_config = DiskConfig { crash_modes: vec![dosim_sim::disk::CrashMode::LoseAll], ..DiskConfig::instant() };
    Sim::builder().seed(seed).node(node).disk(disk_config).build()?.run(|world| async move {
        let n = NodeId(0);
        world.sleep(Duration::from_millis(10)).await;
        // A process crash keeps even unsynced writes (they are in the OS cache).
        world.crash(n)?;
        ensure!(world.spawn_on(n, async {}).is_err(), "a crashed node runs nothing");
        world.restart(n)?;
        world.sleep(Duration::from_millis(10)).await;
        ensure!(disk::durable_image(n, "synced").as_deref() == Some(&b"durable"[..]), "synced data survives");
        // A power cut loses what was not synced.
        world.power_cut(n)?;
        ensure!(disk::durable_image(n, "unsynced").map(|v| v.len()) == Some(0), "unsynced write lost");
        world.restart(n)?;
        world.sleep(Duration::from_millis(10)).await;
        Ok(())
    })
    .inspect(|report| {
        let boots: Vec<String> = report
            .trace
            .events()
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Note { key, value } if key == "boot" => Some(value.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            boots,
            ["synced=false unsynced_len=0", "synced=true unsynced_len=8", "synced=true unsynced_len=0"],
            "boot 2 (after crash) still sees the unsynced write; boot 3 (after power cut) does not"
        );
    })
});

sim_test!(fn world_operations_name_bad_nodes_and_bad_transitions(seed) {
    Sim::builder().seed(seed).nodes(3).build()?.run(|world| async move {
        let e = world.crash(NodeId(7)).unwrap_err();
        ensure!(e.to_string() == "node id 7 is out of range: this simulation has 3 nodes (ids 0..=2)", "{e}");
        let e = world.restart(NodeId(1)).unwrap_err();
        ensure!(e.to_string() == "cannot restart n1: it is Running", "{e}");
        world.pause(NodeId(1))?;
        let e = world.pause(NodeId(1)).unwrap_err();
        ensure!(e.to_string() == "cannot pause n1: it is Paused", "{e}");
        world.resume(NodeId(1))?;
        Ok(())
    })
});

#[test]
fn invalid_configuration_is_rejected_with_the_value_named() {
    let plan = dosim_sim::FaultPlan::none().at(Duration::ZERO, dosim_sim::Fault::Crash(NodeId(4)));
    let e = Sim::builder().nodes(2).faults(plan).build().unwrap_err();
    assert_eq!(e.0, "node id 4 is out of range: this simulation has 2 nodes (ids 0..=1)");
    let e = Sim::builder().node(NodeConfig::new("a")).node(NodeConfig::new("a")).build().unwrap_err();
    assert_eq!(e.0, "two nodes are named \"a\"");
}

fn run_echo(seed: Seed) -> Result<RunReport, RunFailure> {
    two_nodes(seed).network(NetConfig::lossy()).build().expect("valid").run(|world| async move {
        pings(&world, NodeId(1), 50).await?;
        Ok(())
    })
}

#[test]
fn same_seed_same_trace_and_different_seeds_differ() {
    let a = run_echo(Seed(11)).unwrap();
    let b = run_echo(Seed(11)).unwrap();
    assert_eq!(a.trace_hash(), b.trace_hash());
    assert_eq!(a.trace.events(), b.trace.events());
    assert!(a.trace.len() > 100, "a real trace: {} events", a.trace.len());
    let c = run_echo(Seed(12)).unwrap();
    assert_ne!(a.trace_hash(), c.trace_hash(), "different seeds must give different traces");
}

/// Prints the trace hash of `DOSIM_SEED` in a line the cross-process test parses. Passes on its own.
#[test]
fn print_echo_trace_hash() {
    let seed = std::env::var("DOSIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(Seed(11));
    let report = run_echo(seed).unwrap();
    println!("DOSIM_TRACE_HASH={:016x}", report.trace_hash());
}

#[test]
fn same_seed_same_trace_across_processes() {
    let exe = std::env::current_exe().unwrap();
    let mut hashes = Vec::new();
    for _ in 0..2 {
        let out = std::process::Command::new(&exe)
            .args(["world::print_echo_trace_hash", "--exact", "--nocapture", "--test-threads=1"])
            .env("DOSIM_SEED", "0x000000000000002a")
            .output()
            .unwrap();
        assert!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let hash = stdout
            .lines()
            .find_map(|l| l.split_once("DOSIM_TRACE_HASH=").map(|(_, h)| h.trim()))
            .unwrap_or_else(|| panic!("no hash line in child output: {stdout}"))
            .to_string();
        hashes.push(hash);
    }
    let here = format!("{:016x}", run_echo(Seed(0x2a)).unwrap().trace_hash());
    assert_eq!(hashes[0], hashes[1], "two processes disagree");
    assert_eq!(hashes[0], here, "a child process and this one disagree");
}

#[test]
fn a_panic_in_a_node_is_reported_with_the_seed() {
    let node = NodeConfig::new("bad").program(|| async {
        madsim::time::sleep(Duration::from_millis(5)).await;
        panic!("invariant broken in node");
    });
    let failure = Sim::builder()
        .seed(Seed(99))
        .node(node)
        .build()
        .unwrap()
        .run(|world| async move {
            world.sleep(Duration::from_secs(1)).await;
            Ok(())
        })
        .unwrap_err();
    assert_eq!(failure.seed, Seed(99));
    assert_eq!(failure.kind, FailureKind::Panic("invariant broken in node".into()));
    assert_eq!(failure.kind.class(), FailureClass::Panic);
    assert!(failure.to_string().contains("seed:       0x0000000000000063"), "{failure}");
}

#[test]
fn a_broken_invariant_in_a_node_is_a_failed_check_not_a_crash() {
    let node = NodeConfig::new("bank").program(|| async {
        madsim::time::sleep(Duration::from_millis(5)).await;
        let sum = 999;
        dosim_sim::invariant!(sum == 1000, "balances sum to {sum}");
    });
    let failure = Sim::builder()
        .seed(Seed(98))
        .node(node)
        .options(RunOptions::new(Seed(98)).with("journal", "wal"))
        .build()
        .unwrap()
        .run(|world| async move {
            world.sleep(Duration::from_secs(1)).await;
            Ok(())
        })
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Check("balances sum to 999".into()));
    assert_eq!(failure.kind.class(), FailureClass::Invariant);
    // The report repeats the options the seed chose.
    let report = failure.to_string();
    assert!(report.contains("    seed=0x0000000000000062\n    journal=wal\n"), "{report}");
}

#[test]
fn something_pending_after_the_liveness_phase_is_a_liveness_failure() {
    let failure = Sim::builder()
        .seed(Seed(97))
        .nodes(1)
        .build()
        .unwrap()
        .run(|world| async move {
            world.stop_faults();
            let alarms_run = 0;
            dosim_sim::ensure_live!(alarms_run == 1, "the alarm never ran");
            Ok(())
        })
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Pending("the alarm never ran".into()));
    assert_eq!(failure.kind.class(), FailureClass::Liveness);
}

#[test]
fn a_deadlock_is_reported_not_hung() {
    let failure = Sim::builder()
        .seed(Seed(5))
        .nodes(1)
        .build()
        .unwrap()
        .run(|_world| async move {
            std::future::pending::<()>().await;
            Ok(())
        })
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::Deadlock);
    assert_eq!(failure.kind.class(), FailureClass::Liveness);
}

#[test]
fn the_time_limit_is_reported() {
    let failure = Sim::builder()
        .seed(Seed(5))
        .nodes(1)
        .time_limit(Duration::from_secs(10))
        .build()
        .unwrap()
        .run(|world| async move {
            loop {
                world.sleep(Duration::from_secs(1)).await;
            }
        })
        .unwrap_err();
    assert_eq!(failure.kind, FailureKind::TimeLimit(Duration::from_secs(10)));
}

#[test]
fn clock_skew_shifts_a_nodes_wall_clock() {
    let ahead = NodeConfig::new("ahead").clock_ahead(Duration::from_secs(5));
    let behind = NodeConfig::new("behind").clock_behind(Duration::from_secs(3));
    Sim::builder()
        .seed(Seed(3))
        .node(ahead)
        .node(behind)
        .build()
        .unwrap()
        .run(|world| async move {
            let truth = dosim_sim::true_unix_now();
            let a = world.spawn_on(NodeId(0), async { dosim_sim::unix_now() })?.await.unwrap();
            let b = world.spawn_on(NodeId(1), async { dosim_sim::unix_now() })?.await.unwrap();
            ensure!(
                a.abs_diff(truth + Duration::from_secs(5)) < Duration::from_millis(1),
                "ahead: {a:?} vs {truth:?}"
            );
            ensure!(
                b.abs_diff(truth - Duration::from_secs(3)) < Duration::from_millis(1),
                "behind: {b:?} vs {truth:?}"
            );
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_run_frees_the_tasks_still_pending_at_its_end() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static DROPPED: AtomicUsize = AtomicUsize::new(0);
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            DROPPED.fetch_add(1, Ordering::SeqCst);
        }
    }
    let node = NodeConfig::new("forever").program(|| async {
        let _guard = Guard;
        std::future::pending::<()>().await;
    });
    let before = DROPPED.load(Ordering::SeqCst);
    let report = Sim::builder()
        .seed(Seed(4))
        .node(node)
        .build()
        .unwrap()
        .run(|world| async move {
            world.sleep(Duration::from_millis(5)).await;
            Ok(())
        })
        .unwrap();
    // madsim would keep a pending task (and this run's state) alive forever; teardown kills it.
    assert_eq!(DROPPED.load(Ordering::SeqCst), before + 1);
    // Teardown is not part of the run.
    assert!(report
        .trace
        .events()
        .iter()
        .all(|e| !matches!(e.kind, EventKind::Node(dosim_sim::NodeAction::Crash))));
}
