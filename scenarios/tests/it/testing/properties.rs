//! The kit driven by proptest: strategies make each client's script and the fault mix, the kit runs them
//! under a seed, and proptest shrinks a failing case to a smaller script and mix. The runner is seeded, so
//! these tests draw the same cases on every run.

use std::time::Duration;

use dosim_runtime::prelude::DurableObject;
use dosim_scenarios::planted::objects::{SafeCounter, WriteBehindCounter};
use dosim_scenarios::strategies::{counter_ops, fault_mix};
use dosim_scenarios::testing::{
    CounterCalls, CounterModel, CounterOp, FaultKind, FaultMix, Linearizable, NoLostWrites, ObjectTest,
    Workload,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};

fn runner(cases: u32) -> TestRunner {
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha))
}

/// The cases: one to three clients' scripts of counter operations, and a mix of host faults and evictions.
fn cases() -> impl Strategy<Value = (Vec<Vec<CounterOp>>, FaultMix)> {
    (vec(counter_ops(1..12), 1..4), fault_mix(&[FaultKind::Crash, FaultKind::PowerCut, FaultKind::Eviction]))
}

/// Runs `T` on one case under a fixed seed; `Err` with the failure's report if a check fails.
fn run_case<T: DurableObject>(scripts: Vec<Vec<CounterOp>>, mix: FaultMix) -> Result<(), TestCaseError> {
    let result = ObjectTest::new(dosim_sim::Seed(7))
        .class::<T>("C")
        .workload(
            Workload::new("C", CounterCalls::rpc("add", "read"))
                .objects(["a"])
                .scripts(scripts)
                .over(Duration::from_secs(6)),
        )
        .faults(mix.mean_interval(Duration::from_millis(300)))
        .check(NoLostWrites::counter())
        .check(Linearizable(CounterModel::default()))
        .run();
    result.map(drop).map_err(|f| TestCaseError::fail(f.kind.to_string()))
}

#[test]
fn the_correct_counter_passes_every_script_and_fault_mix() {
    runner(8).run(&cases(), |(scripts, mix)| run_case::<SafeCounter>(scripts, mix)).unwrap();
}

#[test]
fn a_write_behind_counter_is_caught_and_shrunk_to_a_small_case() {
    let err =
        runner(16).run(&cases(), |(scripts, mix)| run_case::<WriteBehindCounter>(scripts, mix)).unwrap_err();
    let TestError::Fail(why, (scripts, mix)) = err else { panic!("the runner gave up: {err}") };
    let ops: usize = scripts.iter().map(Vec::len).sum();
    eprintln!(
        "minimal case: {ops} operations {scripts:?}, faults {:?}: {why}",
        mix.kinds().collect::<Vec<_>>()
    );
    assert!(why.message().contains("lost"), "{why}");
    // An eviction must be in the mix (a crash loses the same memory), and a few adds suffice.
    assert!(ops <= 8, "proptest shrank the scripts: {scripts:?}");
}
