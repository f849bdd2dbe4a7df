//! The kit's checks each have a negative control: the same test with the mechanism removed, or an object
//! with the bug, must fail, and the correct one must pass.
//!
//! Linearizability, no lost write, the quiescent invariant and the scenarios' fault counts are also shown by
//! the planted bugs (`planted.rs`); here are the rest.

use std::time::Duration;

use dosim_runtime::prelude::*;
use dosim_scenarios::planted::objects::SafeCounter;
use dosim_scenarios::testing::{
    CounterCalls, Driver, FaultMix, ObjectTest, Scenario, SingleActivation, Workload,
};
use dosim_sim::{sim_test, SimRng};

/// Counters on a cluster whose hosts are superseded, judged by single activation alone.
fn superseded_counters(seed: dosim_sim::Seed) -> ObjectTest<CounterCalls> {
    ObjectTest::new(seed)
        .class::<SafeCounter>("C")
        .workload(
            Workload::new("C", CounterCalls::rpc("add", "read"))
                .objects(["a", "b"])
                .clients(4)
                .ops_per_client(30)
                .over(Duration::from_secs(24)),
        )
        .scenario(Scenario::Superseded)
        .check(SingleActivation)
}

// The superseded owners' held commits arrive after the takeover: a storage node that does not fence them
// applies them under an older epoch, which the check reads in the storage node's history.
sim_test!(must_fail_within = 20, fn single_activation_catches_a_storage_node_without_fencing(seed) {
    superseded_counters(seed).storage_without_fencing().run()
});

sim_test!(seeds = 4, fn single_activation_passes_with_fencing(seed) { superseded_counters(seed).run() });

/// An object whose alarm handler fails `FAILS` times for each alarm, then succeeds (`u32::MAX`: never).
struct FlakyAlarm<const FAILS: u32> {
    state: State,
}

impl<const FAILS: u32> DurableObject for FlakyAlarm<FAILS> {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        Ok(FlakyAlarm { state })
    }

    const HAS_ALARM: bool = true;

    async fn alarm(&self, info: AlarmInfo) -> Result<(), Error> {
        if info.retry_count < FAILS {
            return Err(Error::new("the handler failed"));
        }
        Ok(())
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc("arm", async |o: &FlakyAlarm<FAILS>, (): ()| {
            o.state.storage().set_alarm(o.state.now_ms() + 300).await?;
            Ok(())
        });
    }
}

#[derive(Clone, Copy, Debug)]
struct Arm;

impl Driver for Arm {
    type Input = ();
    type Output = ();

    fn next_op(&self, _rng: &mut SimRng) {}

    async fn call(&self, stub: &Stub, (): ()) -> Result<(), Error> {
        stub.call("arm", &()).await
    }
}

fn alarms<const FAILS: u32>(seed: dosim_sim::Seed) -> ObjectTest<Arm> {
    ObjectTest::new(seed)
        .class::<FlakyAlarm<FAILS>>("A")
        .workload(
            Workload::new("A", Arm).objects(["a"]).clients(1).ops_per_client(3).over(Duration::from_secs(3)),
        )
        .check_alarms::<FlakyAlarm<FAILS>>()
}

// A handler that never succeeds is retried, then abandoned (and its alarm deleted, so no alarm is left
// overdue): the alarm check reads the abandonment in the trace.
sim_test!(must_fail_within = 1, fn alarm_liveness_catches_a_handler_that_never_succeeds(seed) {
    alarms::<{ u32::MAX }>(seed).run()
});

// Failing twice is within the retries: the alarm runs, and the check passes.
sim_test!(seeds = 3, fn alarm_liveness_passes_a_handler_that_succeeds_on_a_retry(seed) { alarms::<2>(seed).run() });

/// An object that declares "drained" false while work is queued, and true when `DRAINS` and the work is done.
struct Queue<const DRAINS: bool>;

impl<const DRAINS: bool> DurableObject for Queue<DRAINS> {
    async fn new(_state: State, _env: Env) -> Result<Self, Error> {
        Ok(Queue)
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc("arm", async |_q: &Queue<DRAINS>, (): ()| {
            dosim_sim::eventually(false, "drained");
            dosim_sim::eventually(DRAINS, "drained");
            Ok(())
        });
    }
}

fn queue<const DRAINS: bool>(seed: dosim_sim::Seed) -> ObjectTest<Arm> {
    ObjectTest::new(seed).class::<Queue<DRAINS>>("A").workload(
        Workload::new("A", Arm).objects(["a"]).clients(1).ops_per_client(2).over(Duration::from_secs(1)),
    )
}

// `eventually`: a point whose last evaluation is false fails the run (liveness); true at the end passes.
sim_test!(must_fail_within = 1, fn an_eventually_point_that_never_holds_fails_the_run(seed) { queue::<false>(seed).run() });

sim_test!(fn an_eventually_point_that_holds_at_the_end_passes(seed) { queue::<true>(seed).run() });

// A scenario whose faults never land proves nothing, and says so: the eviction scenario with its faults
// taken away.
sim_test!(must_fail_within = 1, fn a_scenario_whose_faults_never_fired_fails(seed) {
    ObjectTest::new(seed)
        .class::<SafeCounter>("C")
        .workload(Workload::new("C", CounterCalls::rpc("add", "read")).ops_per_client(5))
        .scenario(Scenario::Eviction)
        .faults(FaultMix::none())
        .run()
});

/// KV-backed counters under crashes and power cuts, judged by output-gate safety alone.
fn output_gate<T: DurableObject>(
    seed: dosim_sim::Seed,
) -> Result<dosim_sim::RunReport, dosim_sim::RunFailure> {
    use dosim_scenarios::testing::{CounterModel, CounterOp, FaultKind, NoLostWrites};
    ObjectTest::new(seed)
        .kv_class::<T>("C")
        .workload(
            Workload::new("C", CounterCalls::rpc("add", "read"))
                .objects(["a", "b"])
                .clients(4)
                .ops_per_client(30)
                .over(Duration::from_secs(12)),
        )
        .faults(
            FaultMix::none()
                .with(FaultKind::Crash)
                .with(FaultKind::PowerCut)
                .mean_interval(Duration::from_millis(800)),
        )
        .check(NoLostWrites::output_gate(CounterModel::default(), |op| matches!(op, CounterOp::Read)))
        .run()
}

// A counter that answers before its write is durable (allow_unconfirmed: no output gate) reveals values a
// crash then loses.
sim_test!(must_fail_within = 20, fn output_gate_safety_catches_answers_before_durability(seed) {
    output_gate::<dosim_scenarios::planted::objects::UnconfirmedWriteCounter>(seed)
});

sim_test!(seeds = 4, fn output_gate_safety_passes_the_gated_counter(seed) { output_gate::<SafeCounter>(seed) });
