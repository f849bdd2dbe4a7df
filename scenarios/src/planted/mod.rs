//! The planted-bug catalogue: example objects, each with one realistic bug, and the test that must catch it.
//!
//! Each [`PlantedBug`] runs its buggy object and its correct twin under the same [`ObjectTest`] (the same
//! workload, faults and checks): the checks must fail the buggy one within a few seeds, and pass the twin
//! over many. `scenarios/tests/it/testing/planted.rs` proves both for every entry and reports the seeds and
//! wall time each bug took to find.

pub mod objects;

use std::time::Duration;

use dosim_sim::{RunFailure, RunReport, Seed};

use crate::explore::{explore, plan_from_bytes, Budget, ExploreSummary, Strategy};
use crate::faults::{FaultKind, FaultMix};
use crate::testing::{
    CounterCalls, CounterModel, Linearizable, NoLostWrites, ObjectTest, Scenario, Workload,
};
use objects::{
    CachedCounter, ChargingAlarm, ConcurrentReadCounter, SafeCounter, TicketDispenser,
    UnconfirmedWriteCounter, WriteBehindCounter,
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
    /// The buggy object's test under `seed`, not yet run (what `buggy` runs; a shrinker builds it per run),
    /// for the bugs whose clients are counter calls.
    pub buggy_test: Option<fn(Seed) -> ObjectTest<CounterCalls>>,
    /// Shrinks the buggy object's failure under `seed` (see [`crate::testing::shrink`]).
    pub shrink: fn(Seed, &RunFailure) -> Result<ShrinkSummary, String>,
    /// Runs its correct twin under `seed`.
    pub correct: fn(Seed) -> Result<RunReport, RunFailure>,
    /// The checks must fail the buggy object within this many seeds.
    pub found_within: u64,
}

/// Runs `$body` with `$make` bound to the test of planted bug `$name` (its buggy object, or its correct twin
/// if `$twin`), a `Fn(Seed) -> ObjectTest<_>`; `None` if there is no such bug. The one place each bug's test
/// is built: the [`catalogue`]'s runs, the shrinker and the explorer all go through it.
macro_rules! with_bug {
    ($name:expr, $twin:expr, |$make:ident| $body:expr) => {
        match ($name, $twin) {
            ("concurrent-read", false) => {
                let $make = |s: Seed| {
                    counter_test(s, eviction(), Scenario::Eviction).kv_class::<ConcurrentReadCounter>("C")
                };
                Some($body)
            }
            ("concurrent-read", true) => {
                let $make =
                    |s: Seed| counter_test(s, eviction(), Scenario::Eviction).kv_class::<SafeCounter>("C");
                Some($body)
            }
            ("write-behind", false) => {
                let $make = |s: Seed| {
                    counter_test(s, eviction(), Scenario::Eviction).class::<WriteBehindCounter>("C")
                };
                Some($body)
            }
            ("write-behind", true) => {
                let $make = |s: Seed| {
                    counter_test(s, eviction(), Scenario::Eviction).class::<WriteBehindCounter<1>>("C")
                };
                Some($body)
            }
            ("unconfirmed-write", false) => {
                let $make = |s: Seed| {
                    counter_test(s, crashes(), Scenario::CoalescingCrash)
                        .kv_class::<UnconfirmedWriteCounter>("C")
                };
                Some($body)
            }
            ("unconfirmed-write", true) => {
                let $make = |s: Seed| {
                    counter_test(s, crashes(), Scenario::CoalescingCrash).kv_class::<SafeCounter>("C")
                };
                Some($body)
            }
            ("stale-cache", false) => {
                let $make = |s: Seed| guarded_test(s).class::<CachedCounter>("C");
                Some($body)
            }
            ("stale-cache", true) => {
                let $make = |s: Seed| guarded_test(s).class::<CachedCounter<true>>("C");
                Some($body)
            }
            ("double-charge", false) => {
                let $make = charging_test::<false>;
                Some($body)
            }
            ("double-charge", true) => {
                let $make = charging_test::<true>;
                Some($body)
            }
            ("retried-add", twin) => {
                let $make = |s: Seed| retry_test(s, RetryingCalls { retry: !twin });
                Some($body)
            }
            ("superseded-ticket", false) => {
                let $make = |s: Seed| ticket_test(s).class::<TicketDispenser>("C");
                Some($body)
            }
            ("superseded-ticket", true) => {
                let $make = |s: Seed| ticket_test(s).class::<TicketDispenser<true>>("C");
                Some($body)
            }
            ("concurrent-read/sparse", false) => {
                let $make = |s: Seed| sparse_test(s, eviction()).kv_class::<ConcurrentReadCounter>("C");
                Some($body)
            }
            ("concurrent-read/sparse", true) => {
                let $make = |s: Seed| sparse_test(s, eviction()).kv_class::<SafeCounter>("C");
                Some($body)
            }
            ("unconfirmed-write/sparse", false) => {
                let $make = |s: Seed| sparse_test(s, crashes()).kv_class::<UnconfirmedWriteCounter>("C");
                Some($body)
            }
            ("unconfirmed-write/sparse", true) => {
                let $make = |s: Seed| sparse_test(s, crashes()).kv_class::<SafeCounter>("C");
                Some($body)
            }
            _ => None,
        }
    };
}

/// Every planted bug.
pub fn catalogue() -> Vec<PlantedBug> {
    vec![
        PlantedBug {
            name: "concurrent-read",
            bug: "read-modify-write across an allow_concurrency read: concurrent adds read the same value",
            scenario: "eviction",
            buggy: |s| with_bug!("concurrent-read", false, |make| make(s).run()).expect("in the catalogue"),
            buggy_test: Some(|s| counter_test(s, eviction(), Scenario::Eviction).kv_class::<ConcurrentReadCounter>("C")),
            shrink: |s, f| with_bug!("concurrent-read", false, |make| summary(|| make(s), f)).expect("in the catalogue"),
            correct: |s| with_bug!("concurrent-read", true, |make| make(s).run()).expect("in the catalogue"),
            found_within: 10,
        },
        PlantedBug {
            name: "write-behind",
            bug: "in-memory state trusted across eviction: adds are written to storage only every 4th time",
            scenario: "eviction",
            buggy: |s| with_bug!("write-behind", false, |make| make(s).run()).expect("in the catalogue"),
            buggy_test: Some(|s| counter_test(s, eviction(), Scenario::Eviction).class::<WriteBehindCounter>("C")),
            shrink: |s, f| with_bug!("write-behind", false, |make| summary(|| make(s), f)).expect("in the catalogue"),
            correct: |s| with_bug!("write-behind", true, |make| make(s).run()).expect("in the catalogue"),
            found_within: 10,
        },
        PlantedBug {
            name: "unconfirmed-write",
            bug: "allow_unconfirmed answers before the write is durable; a crash then loses an acknowledged add",
            scenario: "coalescing-crash",
            buggy: |s| with_bug!("unconfirmed-write", false, |make| make(s).run()).expect("in the catalogue"),
            buggy_test: Some(|s| counter_test(s, crashes(), Scenario::CoalescingCrash).kv_class::<UnconfirmedWriteCounter>("C")),
            shrink: |s, f| with_bug!("unconfirmed-write", false, |make| summary(|| make(s), f)).expect("in the catalogue"),
            correct: |s| with_bug!("unconfirmed-write", true, |make| make(s).run()).expect("in the catalogue"),
            found_within: 20,
        },
        PlantedBug {
            name: "stale-cache",
            bug: "a module-level cache updated inside block_concurrency_while is not dropped when the section fails",
            scenario: "swarm",
            buggy: |s| with_bug!("stale-cache", false, |make| make(s).run()).expect("in the catalogue"),
            buggy_test: Some(|s| guarded_test(s).class::<CachedCounter>("C")),
            shrink: |s, f| with_bug!("stale-cache", false, |make| summary(|| make(s), f)).expect("in the catalogue"),
            correct: |s| with_bug!("stale-cache", true, |make| make(s).run()).expect("in the catalogue"),
            found_within: 10,
        },
        PlantedBug {
            name: "double-charge",
            bug: "a non-idempotent alarm handler: a retry after a failed payment call charges the queue again",
            scenario: "alarm-retry",
            buggy: |s| with_bug!("double-charge", false, |make| make(s).run()).expect("in the catalogue"),
            buggy_test: None,
            shrink: |s, f| with_bug!("double-charge", false, |make| summary(|| make(s), f)).expect("in the catalogue"),
            correct: |s| with_bug!("double-charge", true, |make| make(s).run()).expect("in the catalogue"),
            found_within: 10,
        },
        PlantedBug {
            name: "retried-add",
            bug: "a client retries a non-idempotent add after `Network connection lost.`, though the first may have run",
            scenario: "partition",
            buggy: |s| with_bug!("retried-add", false, |make| make(s).run()).expect("in the catalogue"),
            buggy_test: None,
            shrink: |s, f| with_bug!("retried-add", false, |make| summary(|| make(s), f)).expect("in the catalogue"),
            correct: |s| with_bug!("retried-add", true, |make| make(s).run()).expect("in the catalogue"),
            found_within: 30,
        },
        PlantedBug {
            name: "superseded-ticket",
            bug: "a dispenser answers tickets from memory before they are durable; superseded, it hands out tickets \
                  the new owner hands out again",
            scenario: "superseded",
            buggy: |s| with_bug!("superseded-ticket", false, |make| make(s).run()).expect("in the catalogue"),
            buggy_test: None,
            shrink: |s, f| with_bug!("superseded-ticket", false, |make| summary(|| make(s), f)).expect("in the catalogue"),
            correct: |s| with_bug!("superseded-ticket", true, |make| make(s).run()).expect("in the catalogue"),
            found_within: 30,
        },
    ]
}

/// Harder variants of planted bugs, for measuring explorers (`dosim explore`) where plain random seeds need
/// many runs: the same objects under [`sparse_test`]'s smaller workload. Not in the [`catalogue`].
pub const SPARSE_VARIANTS: [&str; 2] = ["concurrent-read/sparse", "unconfirmed-write/sparse"];

/// [`counter_test`] with 2 clients of 8 operations each over 12 s (so calls seldom overlap), and the faults
/// of `faults` three times as far apart.
fn sparse_test(seed: Seed, faults: FaultMix) -> ObjectTest<CounterCalls> {
    let interval = faults.mean_interval_of() * 3;
    ObjectTest::new(seed)
        .workload(
            Workload::new("C", CounterCalls::rpc("add", "read"))
                .objects(["a", "b"])
                .clients(2)
                .ops_per_client(8)
                .over(Duration::from_secs(12)),
        )
        .faults(faults.mean_interval(interval))
        .check(NoLostWrites::counter())
        .check(Linearizable(CounterModel::default()))
}

/// Explores planted bug `name` (its buggy object, or its correct twin if `twin`) with
/// [`crate::explore::explore`] under the same test as [`catalogue`]'s entry; `None` if there is no such bug.
pub fn explore_bug(
    name: &str,
    twin: bool,
    budget: Budget,
    strategy: Strategy,
    seed: Seed,
) -> Option<ExploreSummary> {
    with_bug!(name, twin, |make| explore(make, budget, strategy, seed).summary())
}

/// Runs planted bug `name`'s test (its buggy object, or its correct twin if `twin`) under the seed and plan
/// that `bytes` decide ([`crate::explore::plan_from_bytes`]): a fuzzer's target. `None` if there is no such
/// bug.
pub fn run_bytes(name: &str, twin: bool, bytes: &[u8]) -> Option<Result<RunReport, RunFailure>> {
    with_bug!(name, twin, |make| {
        let (seed, plan) = plan_from_bytes(make, bytes);
        make(seed).run_plan(plan)
    })
}

/// Tickets (adds of 1 to a counter) on a cluster whose hosts are superseded (the `superseded` scenario).
fn ticket_test(seed: Seed) -> ObjectTest<CounterCalls> {
    ObjectTest::new(seed)
        .workload(
            Workload::new("C", CounterCalls::rpc("add", "read"))
                .objects(["a", "b"])
                .clients(4)
                .ops_per_client(40)
                .over(Duration::from_secs(24)),
        )
        .scenario(crate::testing::Scenario::Superseded)
        .check(NoLostWrites::counter())
        .check(Linearizable(CounterModel::default()))
}

/// **Bug (in the client): retrying a non-idempotent call after `Network connection lost.`** The counter's
/// calls, but an add that fails with the runtime's `Network connection lost.` is sent again (up to 3
/// times), as a client that takes the error to mean "it did not run" would. It may have run: its answer was
/// lost, not its request. With `retry` off (its twin) the failure is reported as it is.
#[derive(Clone, Copy, Debug)]
pub struct RetryingCalls {
    /// Whether it retries.
    pub retry: bool,
}

/// How often a [`RetryingCalls`] client sends an add in all.
const ATTEMPTS_MAX: u32 = 3;

impl crate::testing::Driver for RetryingCalls {
    type Input = crate::check::models::CounterOp;
    type Output = i64;

    fn next_op(&self, rng: &mut dosim_sim::SimRng) -> Self::Input {
        CounterCalls::rpc("add", "read").next_op(rng)
    }

    fn final_reads(&self) -> Vec<Self::Input> {
        vec![crate::check::models::CounterOp::Read]
    }

    async fn call(
        &self,
        stub: &dosim_runtime::prelude::Stub,
        input: Self::Input,
    ) -> Result<i64, dosim_runtime::error::Error> {
        let calls = CounterCalls::rpc("add", "read");
        let mut attempt = 1;
        loop {
            match calls.call(stub, input).await {
                Err(e)
                    if self.retry
                        && attempt < ATTEMPTS_MAX
                        && e.message() == dosim_runtime::error::messages::NETWORK_CONNECTION_LOST =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// Counters on a cluster whose network loses messages and whose front is partitioned from hosts (the
/// `partition` scenario, with message loss), with the given client.
fn retry_test(seed: Seed, calls: RetryingCalls) -> ObjectTest<RetryingCalls> {
    ObjectTest::new(seed)
        .class::<SafeCounter>("C")
        .workload(
            Workload::new("C", calls)
                .objects(["a", "b"])
                .clients(4)
                .ops_per_client(25)
                .over(Duration::from_secs(20)),
        )
        .scenario(crate::testing::Scenario::Partition)
        .faults(FaultMix::network().mean_interval(Duration::from_millis(2_000)))
        .check(Linearizable(CounterModel::default()))
}

/// The operations of a [`ChargingAlarm`]: `schedule`, which answers how many charges were ever scheduled.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChargeCalls;

/// A [`ChargeCalls`] operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Schedule;

impl crate::testing::Driver for ChargeCalls {
    type Input = Schedule;
    type Output = u64;

    fn next_op(&self, _rng: &mut dosim_sim::SimRng) -> Schedule {
        Schedule
    }

    async fn call(
        &self,
        stub: &dosim_runtime::prelude::Stub,
        _input: Schedule,
    ) -> Result<u64, dosim_runtime::error::Error> {
        stub.call("schedule", &()).await
    }
}

/// Charges scheduled on [`ChargingAlarm`]s under host crashes and power cuts (the `alarm-retry` scenario):
/// once every alarm has run, each object has charged exactly what was scheduled, and no alarm is overdue.
fn charging_test<const FIXED: bool>(seed: Seed) -> ObjectTest<ChargeCalls> {
    ObjectTest::new(seed)
        .class::<ChargingAlarm<FIXED>>("C")
        .workload(
            Workload::new("C", ChargeCalls)
                .objects(["a", "b"])
                .clients(3)
                .ops_per_client(10)
                .over(Duration::from_secs(10)),
        )
        .scenario(crate::testing::Scenario::AlarmRetry)
        .check_alarms::<ChargingAlarm<FIXED>>()
        .invariant::<ChargingAlarm<FIXED>>("every scheduled charge is charged once", async |_, state| {
            let storage = state.storage();
            let mut values = Vec::new();
            for key in ["scheduled", "charged", "queued"] {
                let v = storage.get::<u64>(key).await.map_err(|e| format!("get {key}: {}", e.message()))?;
                values.push(v.unwrap_or_default());
            }
            let (scheduled, charged, queued) = (values[0], values[1], values[2]);
            if charged == scheduled && queued == 0 {
                Ok(())
            } else {
                Err(format!("scheduled {scheduled}, charged {charged}, still queued {queued}"))
            }
        })
}

/// A shrunk planted bug, whatever its clients' operations.
#[derive(Clone, Debug)]
pub struct ShrinkSummary {
    /// The minimal repro's steps, the violated check last.
    pub steps: Vec<String>,
    /// The runs the shrink took.
    pub runs: u32,
    /// Its wall time.
    pub wall: Duration,
    /// The whole shrink, as printed.
    pub text: String,
}

/// Shrinks `failure` of the tests `make` builds, as a [`ShrinkSummary`].
fn summary<D: crate::testing::Driver>(
    make: impl Fn() -> ObjectTest<D>,
    failure: &RunFailure,
) -> Result<ShrinkSummary, String> {
    let shrunk = crate::testing::shrink::shrink(make, failure).map_err(|e| e.to_string())?;
    Ok(ShrinkSummary {
        steps: shrunk.steps.clone(),
        runs: shrunk.runs,
        wall: shrunk.wall,
        text: shrunk.to_string(),
    })
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

/// A counter test over objects bound to `C`: 4 clients, 30 operations each, over 12 s, under `faults`;
/// linearizability, no lost acknowledged write, and that the faults `fired` counts did fire.
fn counter_test(seed: Seed, faults: FaultMix, fired: Scenario) -> ObjectTest<CounterCalls> {
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
        .check(crate::testing::FaultsFired(fired))
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
