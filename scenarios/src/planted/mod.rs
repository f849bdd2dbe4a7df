//! The planted-bug catalogue: example objects, each with one realistic bug, and the test that must catch it.
//!
//! Each [`PlantedBug`] runs its buggy object and its correct twin under the same [`ObjectTest`] (the same
//! workload, faults and checks): the checks must fail the buggy one within a few seeds, and pass the twin
//! over many. `scenarios/tests/it/testing/planted.rs` proves both for every entry and reports the seeds and
//! wall time each bug took to find.

pub mod objects;

use std::time::Duration;

use dosim_sim::{RunFailure, RunReport, Seed};

use crate::faults::{FaultKind, FaultMix};
use crate::testing::{CounterCalls, CounterModel, Linearizable, NoLostWrites, ObjectTest, Workload};
use objects::{
    CachedCounter, ConcurrentReadCounter, SafeCounter, UnconfirmedWriteCounter, WriteBehindCounter,
};

/// One entry of the catalogue.
#[derive(Clone, Copy, Debug)]
pub struct PlantedBug {
    /// Its name.
    pub name: &'static str,
    /// The bug, in one sentence.
    pub bug: &'static str,
    /// The built-in scenario that must catch it.
    pub scenario: &'static str,
    /// Runs the buggy object under `seed`.
    pub buggy: fn(Seed) -> Result<RunReport, RunFailure>,
    /// The buggy object's test under `seed`, not yet run (what `buggy` runs; a shrinker builds it per run).
    pub buggy_test: fn(Seed) -> ObjectTest<CounterCalls>,
    /// Runs its correct twin under `seed`.
    pub correct: fn(Seed) -> Result<RunReport, RunFailure>,
    /// The checks must fail the buggy object within this many seeds.
    pub found_within: u64,
}

/// Every planted bug.
pub fn catalogue() -> Vec<PlantedBug> {
    vec![
        PlantedBug {
            name: "concurrent-read",
            bug: "read-modify-write across an allow_concurrency read: concurrent adds read the same value",
            scenario: "eviction",
            buggy: |s| counter_test(s, Backend::Kv, eviction()).kv_class::<ConcurrentReadCounter>("C").run(),
            buggy_test: |s| counter_test(s, Backend::Kv, eviction()).kv_class::<ConcurrentReadCounter>("C"),
            correct: |s| counter_test(s, Backend::Kv, eviction()).kv_class::<SafeCounter>("C").run(),
            found_within: 10,
        },
        PlantedBug {
            name: "write-behind",
            bug: "in-memory state trusted across eviction: adds are written to storage only every 4th time",
            scenario: "eviction",
            buggy: |s| counter_test(s, Backend::Sqlite, eviction()).class::<WriteBehindCounter>("C").run(),
            buggy_test: |s| counter_test(s, Backend::Sqlite, eviction()).class::<WriteBehindCounter>("C"),
            correct: |s| counter_test(s, Backend::Sqlite, eviction()).class::<WriteBehindCounter<1>>("C").run(),
            found_within: 10,
        },
        PlantedBug {
            name: "unconfirmed-write",
            bug: "allow_unconfirmed answers before the write is durable; a crash then loses an acknowledged add",
            scenario: "coalescing-crash",
            buggy: |s| counter_test(s, Backend::Kv, crashes()).kv_class::<UnconfirmedWriteCounter>("C").run(),
            buggy_test: |s| counter_test(s, Backend::Kv, crashes()).kv_class::<UnconfirmedWriteCounter>("C"),
            correct: |s| counter_test(s, Backend::Kv, crashes()).kv_class::<SafeCounter>("C").run(),
            found_within: 20,
        },
        PlantedBug {
            name: "stale-cache",
            bug: "a module-level cache updated inside block_concurrency_while is not dropped when the section fails",
            scenario: "swarm",
            buggy: |s| guarded_test(s).class::<CachedCounter>("C").run(),
            buggy_test: |s| guarded_test(s).class::<CachedCounter>("C"),
            correct: |s| guarded_test(s).class::<CachedCounter<true>>("C").run(),
            found_within: 10,
        },
    ]
}

/// Which storage backend a test's class uses.
enum Backend {
    Sqlite,
    Kv,
}

fn eviction() -> FaultMix {
    FaultMix::none().with(FaultKind::Eviction).mean_interval(Duration::from_millis(400))
}

fn crashes() -> FaultMix {
    FaultMix::none()
        .with(FaultKind::Crash)
        .with(FaultKind::PowerCut)
        .mean_interval(Duration::from_millis(800))
}

/// A counter test over objects bound to `C`: 4 clients, 30 operations each, over 12 s; linearizability and
/// no lost acknowledged write.
fn counter_test(seed: Seed, _backend: Backend, faults: FaultMix) -> ObjectTest<CounterCalls> {
    ObjectTest::new(seed)
        .workload(
            Workload::new("C", CounterCalls::rpc("add", "read"))
                .objects(["a", "b"])
                .clients(4)
                .ops_per_client(30)
                .over(Duration::from_secs(12)),
        )
        .faults(faults)
        .check(NoLostWrites::counter())
        .check(Linearizable(CounterModel::default()))
}

/// A counter that refuses negative amounts: an `add` of a negative amount changes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct GuardedCounterModel;

impl crate::check::Model for GuardedCounterModel {
    type Input = crate::check::models::CounterOp;
    type Output = i64;
    type State = i64;

    fn init(&self) -> i64 {
        0
    }

    fn apply(&self, state: &i64, input: &Self::Input) -> (i64, i64) {
        match *input {
            crate::check::models::CounterOp::Add(n) if n >= 0 => (state + n, state + n),
            // Refused: the state stays; the call fails, so its output is never compared.
            crate::check::models::CounterOp::Add(_) | crate::check::models::CounterOp::Read => {
                (*state, *state)
            }
        }
    }
}

/// [`counter_test`] whose clients also send negative adds (1 in 5), which a guarded counter refuses, checked
/// against [`GuardedCounterModel`].
fn guarded_test(seed: Seed) -> ObjectTest<CounterCalls> {
    ObjectTest::new(seed)
        .workload(
            Workload::new("C", CounterCalls::rpc("add", "read").with_negative_adds(5))
                .objects(["a", "b"])
                .clients(3)
                .ops_per_client(30)
                .over(Duration::from_secs(12)),
        )
        .check(Linearizable(GuardedCounterModel))
}
