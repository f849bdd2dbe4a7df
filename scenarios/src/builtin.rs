//! The built-in scenarios of the test kit ([`Scenario`]), run on the kit's own objects so that `dosim run` and
//! campaigns exercise them: counters on one host or a cluster of three, checked for linearizability, no lost
//! acknowledged write, single activation (in a cluster) and that the scenario's faults fired.
//!
//! A user runs the same scenarios against their own class with [`ObjectTest::scenario`]. Each scenario's
//! negative control runs the planted bug it must catch (see [`crate::planted`]).

use std::time::Duration;

use dosim_sim::{RunFailure, RunOptions, RunReport, Seed};

use crate::planted::objects::{SafeCounter, UnconfirmedWriteCounter, WriteBehindCounter};
use crate::testing::{
    CounterCalls, CounterModel, Linearizable, NoLostWrites, ObjectTest, Scenario, SingleActivation, Workload,
};

/// The binding the built-in scenarios' counters are bound to.
const BINDING: &str = "C";

/// The kit test of `scenario` under `seed`, without its class: 4 clients, 40 operations each over 20 s on
/// three counters.
pub fn counter_test(scenario: Scenario, seed: Seed) -> ObjectTest<CounterCalls> {
    let test = ObjectTest::new(seed)
        .workload(
            Workload::new(BINDING, CounterCalls::rpc("add", "read"))
                .objects(["a", "b", "c"])
                .clients(4)
                .ops_per_client(40)
                .over(Duration::from_secs(20)),
        )
        .scenario(scenario)
        .check(Linearizable(CounterModel::default()))
        .check(NoLostWrites::counter());
    if scenario.cluster().is_some() {
        test.check(SingleActivation)
    } else {
        test
    }
}

/// Runs `scenario` under `seed` on the correct counter (KV-backed for `coalescing-crash`, whose subject is
/// the KV backend's write coalescing; SQLite-backed otherwise).
pub fn run(scenario: Scenario, seed: Seed) -> Result<RunReport, RunFailure> {
    test(scenario, seed).run()
}

/// The options `scenario` draws from `seed`.
pub fn options(scenario: Scenario, seed: Seed) -> RunOptions {
    counter_test(scenario, seed).class::<SafeCounter>(BINDING).options()
}

/// Runs `scenario`'s negative control under `seed`: the planted bug it must catch, if it has one.
pub fn run_negative_control(scenario: Scenario, seed: Seed) -> Option<Result<RunReport, RunFailure>> {
    negative_control_test(scenario, seed).map(ObjectTest::run)
}

/// The test [`run`] runs: `scenario` under `seed` on the correct counter, not yet run.
pub fn test(scenario: Scenario, seed: Seed) -> ObjectTest<CounterCalls> {
    let test = counter_test(scenario, seed);
    match scenario {
        Scenario::CoalescingCrash => test.kv_class::<SafeCounter>(BINDING),
        _ => test.class::<SafeCounter>(BINDING),
    }
}

/// The test [`run_negative_control`] runs, not yet run: `scenario`'s planted bug under `seed`, if it has one.
pub fn negative_control_test(scenario: Scenario, seed: Seed) -> Option<ObjectTest<CounterCalls>> {
    let test = counter_test(scenario, seed);
    Some(match scenario {
        Scenario::Eviction => test.class::<WriteBehindCounter>(BINDING),
        Scenario::CoalescingCrash => test.kv_class::<UnconfirmedWriteCounter>(BINDING),
        _ => return None,
    })
}
