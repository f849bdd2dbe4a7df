//! The coverage-guided explorer (`dosim_scenarios::explore`): its coverage keys strip values from log
//! lines and pair events with node states; an exploration is deterministic given its seed; the guided
//! explorer finds a planted bug within a bound, and finds nothing in its correct twin.

use std::collections::BTreeMap;
use std::time::Duration;

use dosim_scenarios::explore::{
    coverage_of, explore, log_shape, plan_from_bytes, Budget, CoverageKey, Strategy,
};
use dosim_scenarios::planted::objects::{ConcurrentReadCounter, SafeCounter};
use dosim_scenarios::planted::{explore_bug, run_bytes};
use dosim_scenarios::testing::{
    CounterCalls, CounterModel, FaultKind, FaultMix, Linearizable, NoLostWrites, ObjectTest, Workload,
};
use dosim_sim::{EventKind, NodeAction, NodeId, Seed, Trace, TraceMode};

#[test]
fn log_shapes_strip_numbers_hex_ids_and_quoted_values() {
    assert_eq!(
        log_shape("object 3fa9c0de12aa evicted after 250ms on n2, key \"a b\" 'x'"),
        "object # evicted after Nms on nN, key \"…\" '…'"
    );
    // Lines that differ only in their values share a shape; lines that differ in words do not.
    assert_eq!(log_shape("alarm retry 3 of 6 in 1.5s"), log_shape("alarm retry 5 of 6 in 12.25s"));
    assert_ne!(log_shape("alarm retry 3 of 6"), log_shape("alarm gave up after 6"));
    // A word of hex letters alone is a word, not an id; a short hex number is a number.
    assert_eq!(log_shape("deadbeef cafe 0x1f"), "deadbeef cafe NxNf");
    // An unterminated quote runs to the end.
    assert_eq!(log_shape("say \"hi"), "say \"…\"");
}

#[test]
fn coverage_pairs_events_with_node_states_and_faults_with_their_phase() {
    let mut trace = Trace::new(TraceMode::Full);
    let n0 = Some(NodeId(0));
    trace.record(Duration::ZERO, n0, EventKind::Node(NodeAction::Start));
    trace.record(
        Duration::from_millis(1),
        n0,
        EventKind::Log {
            target: "dosim::runtime".into(),
            text: "object 0123456789ab activated in 12ms".into(),
        },
    );
    trace.record(
        Duration::from_millis(2),
        n0,
        EventKind::Disk {
            op: dosim_sim::DiskOp::Write,
            path: "/data/42.sqlite-wal".into(),
            offset: 0,
            len: 10,
            digest: 0,
            ok: true,
        },
    );
    trace.record(Duration::from_millis(3), n0, EventKind::Node(NodeAction::Crash));
    trace.record(
        Duration::from_millis(4),
        None,
        EventKind::Note { key: "fault".into(), value: "eviction on n0".into() },
    );
    let mut sometimes = BTreeMap::new();
    sometimes.insert("fault: eviction".to_string(), 5u64);
    let keys = coverage_of(&sometimes, &trace);
    let expect = [
        CoverageKey::Sometimes("fault: eviction".into(), 2),
        CoverageKey::Event("node Start".into(), "up"),
        CoverageKey::Log("dosim::runtime".into(), "object # activated in Nms".into(), 0),
        CoverageKey::Event("log dosim::runtime".into(), "up"),
        CoverageKey::Event("disk Write /data/N.sqlite-wal".into(), "up"),
        // The crash hit a node whose disk held an unsynced write.
        CoverageKey::Fault("Crash".into(), "up", "dirty"),
        CoverageKey::Event("node Crash".into(), "up"),
        // The eviction came while the node was down.
        CoverageKey::Fault("eviction".into(), "down", "dirty"),
        CoverageKey::Event("note fault".into(), "-"),
    ];
    for k in &expect {
        assert!(keys.contains(k), "missing {k}: {keys:?}");
    }
    assert_eq!(keys.len(), expect.len(), "{keys:?}");
}

/// The `concurrent-read` planted bug's test (an allow_concurrency read-modify-write under evictions), on
/// the buggy counter or on the safe one.
fn counter_under_evictions(seed: Seed, safe: bool) -> ObjectTest<CounterCalls> {
    let test = ObjectTest::new(seed)
        .workload(
            Workload::new("C", CounterCalls::rpc("add", "read"))
                .objects(["a", "b"])
                .clients(4)
                .ops_per_client(30)
                .over(Duration::from_secs(12)),
        )
        .faults(FaultMix::none().with(FaultKind::Eviction).mean_interval(Duration::from_millis(400)))
        .check(NoLostWrites::counter())
        .check(Linearizable(CounterModel::default()));
    if safe {
        test.kv_class::<SafeCounter>("C")
    } else {
        test.kv_class::<ConcurrentReadCounter>("C")
    }
}

#[test]
fn an_exploration_is_deterministic_given_its_seed() {
    // On the safe counter: nothing fails, the corpus grows by mutation.
    let safe = |seed| explore(|s| counter_under_evictions(s, true), Budget::runs(10), Strategy::Guided, seed);
    let (a, b) = (safe(Seed(5)), safe(Seed(5)));
    assert!(a.first_failure.is_none() && a.runs == 10);
    assert!(!a.corpus.is_empty());
    assert_eq!(a.corpus, b.corpus, "the same corpus, entry by entry");
    assert_eq!(a.coverage_keys, b.coverage_keys);
    let c = safe(Seed(6));
    assert_ne!(a.corpus, c.corpus, "another exploration seed explores otherwise");

    // On the buggy counter: the same first failure.
    let buggy =
        || explore(|s| counter_under_evictions(s, false), Budget::runs(20), Strategy::Guided, Seed(5));
    let (a, b) = (buggy(), buggy());
    let fa = a.first_failure.as_ref().expect("concurrent-read is found within 20 runs");
    let fb = b.first_failure.as_ref().expect("and found again");
    assert_eq!((fa.runs, fa.seed, &fa.plan), (fb.runs, fb.seed, &fb.plan));
    assert_eq!(fa.failure.kind, fb.failure.kind);
    assert_eq!(fa.failure.trace_hash(), fb.failure.trace_hash());
    assert_eq!(a.corpus, b.corpus);
    // The failing plan fails again when run on its own.
    let again = counter_under_evictions(fa.seed, false)
        .run_plan(fa.plan.clone())
        .expect_err("the found plan fails again");
    assert_eq!(again.kind, fa.failure.kind);
}
#[test]
fn guided_exploration_finds_a_planted_bug_and_nothing_in_its_twin() {
    let found = explore_bug("double-charge", false, Budget::runs(30), Strategy::Guided, Seed(1))
        .expect("a planted bug");
    let (runs, _, _, why) = found.found.expect("double-charge is found within 30 runs");
    assert!(why.contains("every scheduled charge is charged once"), "{why}");
    assert!(runs <= 30);
    // The negative control: the same exploration of the correct twin finds nothing.
    let twin = explore_bug("double-charge", true, Budget::runs(30), Strategy::Guided, Seed(1))
        .expect("a planted bug");
    assert_eq!(twin.found, None, "the twin must pass every run");
    assert_eq!(twin.runs, 30);
    assert!(twin.corpus_size > 1 && twin.coverage_keys > 20, "{twin:?}");
}

#[test]
fn a_fuzzers_bytes_decide_the_seed_and_the_mutations_of_its_plan() {
    let make = |s| counter_under_evictions(s, false);
    let seed_only = 7u64.to_le_bytes();
    assert_eq!(plan_from_bytes(make, &seed_only), (Seed(7), make(Seed(7)).plan()));
    let mut bytes = seed_only.to_vec();
    bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]);
    let (seed, plan) = plan_from_bytes(make, &bytes);
    assert_eq!(plan_from_bytes(make, &bytes), (seed, plan.clone()), "the same bytes, the same run");
    let mutated = seed != Seed(7) || plan != make(Seed(7)).plan();
    assert!(mutated, "three chunks of mutations change the seed or the plan");
    // The fuzz target's entry point runs it.
    assert!(run_bytes("no-such-bug", false, &bytes).is_none());
}
