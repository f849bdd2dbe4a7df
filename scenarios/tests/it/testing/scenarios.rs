//! The kit's built-in scenarios on the correct counter: each passes and its faults fire (the scenario's own
//! check); `DOSIM_SEEDS` runs more seeds.

use dosim_scenarios::builtin;
use dosim_scenarios::testing::Scenario;
use dosim_sim::sim_test;

macro_rules! scenario {
    ($variant:ident, $test:ident) => {
        sim_test!(seeds = 2, fn $test(seed) { builtin::run(Scenario::$variant, seed) });
    };
}

scenario!(Partition, partition_passes);
scenario!(Eviction, eviction_passes);
scenario!(Superseded, superseded_passes);
scenario!(Overload, overload_passes);
scenario!(CoalescingCrash, coalescing_crash_passes);
scenario!(AlarmRetry, alarm_retry_passes);
scenario!(DiskFaults, disk_faults_passes);
scenario!(CodeUpdate, code_update_passes);
scenario!(Swarm, swarm_passes);
