//! The determinism check catches planted nondeterminism and names the first divergent event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dosim_sim::determinism::{self, CheckError};
use dosim_sim::net::{Endpoint, NetConfig};
use dosim_sim::{Addr, EventKind, NodeConfig, NodeId, RunFailure, RunReport, Seed, Sim};

/// A clean workload: pings over a lossy network, with a note of what arrived.
fn clean(seed: Seed) -> Result<RunReport, RunFailure> {
    let server = NodeConfig::new("server").program(|| async {
        let mut ep = Endpoint::bind(1).unwrap();
        loop {
            let d = ep.recv().await;
            dosim_sim::note("got", d.payload.len());
            ep.send(d.from, d.payload);
        }
    });
    Sim::builder().seed(seed).node(server).nodes(1).network(NetConfig::lossy()).build().unwrap().run(
        |world| async move {
            world
                .spawn_on(NodeId(1), async {
                    let ep = Endpoint::bind(1).unwrap();
                    for i in 0..30u8 {
                        ep.send(Addr { node: NodeId(0), port: 1 }, vec![i; i as usize]);
                        madsim::time::sleep(Duration::from_millis(3)).await;
                    }
                })?
                .await
                .unwrap();
            world.sleep(Duration::from_millis(100)).await;
            Ok(())
        },
    )
}

fn divergence(r: Result<RunReport, CheckError>) -> dosim_sim::determinism::Divergence {
    if let Err(e) = &r {
        assert_eq!(e.class(), dosim_sim::FailureClass::Nondeterminism, "{e}");
    }
    match r {
        Err(CheckError::Diverged { divergence, .. }) => *divergence,
        Err(CheckError::Failed(f)) => panic!("expected a divergence, got a failure: {f}"),
        Ok(_) => panic!("expected a divergence, the check passed"),
    }
}

fn note_of(e: &Option<dosim_sim::Event>) -> (String, String) {
    match e.as_ref().map(|e| &e.kind) {
        Some(EventKind::Note { key, value }) => (key.clone(), value.clone()),
        other => panic!("expected a note event, got {other:?}"),
    }
}

#[test]
fn a_clean_run_passes_the_check() {
    for s in 0..4 {
        let report = determinism::check(Seed(s), clean).unwrap_or_else(|e| panic!("{e}"));
        assert!(report.trace.len() > 50);
    }
}

#[test]
fn state_leaking_between_runs_is_caught_and_pinpointed() {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let leaky = |seed: Seed| {
        let before = clean(seed)?; // some honest events first
        drop(before);
        Sim::builder().seed(seed).nodes(1).build().unwrap().run(|world| async move {
            world.sleep(Duration::from_millis(1)).await;
            dosim_sim::note("steady", 1);
            // Planted: a process-global counter leaks from one run into the next.
            dosim_sim::note("runs so far", RUNS.fetch_add(1, Ordering::SeqCst));
            Ok(())
        })
    };
    let d = divergence(determinism::check(Seed(1), leaky));
    let (k1, v1) = note_of(&d.first);
    let (k2, v2) = note_of(&d.second);
    assert_eq!(k1, "runs so far");
    assert_eq!(k2, "runs so far");
    assert_ne!(v1, v2);
    // The node start event and the "steady" note agree and come before it.
    assert_eq!(d.index, 2, "{d}");
    assert!(d.to_string().contains("first divergent event: #2"), "{d}");
}

#[test]
fn hash_map_iteration_order_is_caught_and_pinpointed() {
    let planted = |seed: Seed| {
        Sim::builder().seed(seed).nodes(1).build().unwrap().run(|world| async move {
            world.sleep(Duration::from_millis(1)).await;
            dosim_sim::note("before", "map");
            // Planted: iteration order of a std HashMap leaks into observable behaviour.
            #[allow(clippy::disallowed_types)]
            let map: std::collections::HashMap<u32, u32> = (0..64).map(|i| (i, i)).collect();
            let order: Vec<u32> = map.keys().copied().collect();
            dosim_sim::note("order", format!("{order:?}"));
            Ok(())
        })
    };
    // Unperturbed, the same thread-fresh run repeats itself (madsim seeds std's hash keys per run) ...
    let a = planted(Seed(3)).unwrap();
    let b = planted(Seed(3)).unwrap();
    assert_eq!(a.trace_hash(), b.trace_hash());
    // ... so only the perturbed second run of the check exposes the dependence.
    let d = divergence(determinism::check(Seed(3), planted));
    assert_eq!(note_of(&d.first).0, "order");
    assert_eq!(d.index, 2);
}

/// Draws SQLite `random()` inside a database on the node's SimDisk and notes it.
fn sqlite_random(seed: Seed, plant: bool) -> Result<RunReport, RunFailure> {
    Sim::builder().seed(seed).nodes(1).build().unwrap().run(move |world| async move {
        let value = world
            .spawn_on(NodeId(0), async move {
                if plant {
                    // Planted: something in the process hands SQLite's global PRNG back to the OS
                    // (seed 0 means "seed from the default VFS", which reads /dev/urandom).
                    // SAFETY: PRNG_SEED takes an int and a database pointer (null: none).
                    unsafe {
                        rusqlite::ffi::sqlite3_test_control(
                            rusqlite::ffi::SQLITE_TESTCTRL_PRNG_SEED,
                            0 as std::ffi::c_int,
                            std::ptr::null_mut::<rusqlite::ffi::sqlite3>(),
                        );
                    }
                }
                let conn = dosim_sim::sqlite::open("r.db", dosim_sim::sqlite::JournalMode::Delete).unwrap();
                conn.query_row("SELECT random()", [], |r| r.get::<_, i64>(0)).unwrap()
            })?
            .await
            .unwrap();
        dosim_sim::note("sqlite random", value);
        Ok(())
    })
}

#[test]
fn sqlite_prng_is_seeded_per_run() {
    let r = determinism::check(Seed(8), |s| sqlite_random(s, false));
    assert!(r.is_ok(), "{}", r.unwrap_err());
}

#[test]
fn sqlite_global_prng_left_to_the_os_is_caught_and_pinpointed() {
    let d = divergence(determinism::check(Seed(8), |s| sqlite_random(s, true)));
    // Node start, the database open and its header read agree; the first value SQLite derives from its
    // PRNG differs.
    assert_eq!(note_of(&d.first).0, "sqlite random", "{d}");
    assert_eq!(d.index, 3, "{d}");
    assert!(d.to_string().contains(&format!("first divergent event: #{}", d.index)));
}
