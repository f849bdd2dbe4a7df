//! Scenarios: workloads with fault plans and checkers, run under the simulation.
//!
//! This is the only crate that sees both `dosim-runtime` and `dosim-sim`. The `dosim` CLI and the tests build on
//! the registry here. Every scenario is a function from a seed to the run's report or failure.

#[cfg(madsim)]
pub mod bank;
#[cfg(madsim)]
pub mod builtin;
#[cfg(madsim)]
pub mod campaign;
#[cfg(madsim)]
pub mod chat;
pub mod check;
#[cfg(madsim)]
pub mod cluster;
#[cfg(madsim)]
mod counter;
#[cfg(madsim)]
pub mod explore;
pub mod faults;
pub mod history;
#[cfg(madsim)]
pub mod object_cluster;
#[cfg(madsim)]
pub mod object_counters;
pub mod objects;
#[cfg(madsim)]
pub mod planted;
pub mod regressions;
pub mod report_html;
#[cfg(madsim)]
pub mod sim_host;
pub mod strategies;
#[cfg(madsim)]
pub mod testing;

#[cfg(madsim)]
pub use campaign::{
    campaign_exit_code, exit_code, run_seed, SeedOutcome, SeedResult, Shard, EXIT_INVARIANT, EXIT_LIVENESS,
    EXIT_NONDETERMINISM, EXIT_PANIC, EXIT_PASS, EXIT_USAGE,
};

use std::fmt;

#[cfg(madsim)]
use dosim_sim::{RunFailure, RunOptions, RunReport, Seed};

/// A named scenario.
#[derive(Clone, Copy)]
pub struct Scenario {
    /// Its name on the command line.
    pub name: &'static str,
    /// One line on what it does and checks.
    pub summary: &'static str,
    /// Runs it for one seed.
    #[cfg(madsim)]
    pub run: fn(Seed) -> Result<RunReport, RunFailure>,
    /// The options it derives from a seed (fault kinds, rates, armed power cuts, workload sizes), the seed
    /// first: what the CLI prints before the run.
    #[cfg(madsim)]
    pub options: fn(Seed) -> RunOptions,
    /// The scenario with the mechanism it checks removed, which its checks must catch under some seeds (see
    /// the scenario's tests); `None` if it has none.
    #[cfg(madsim)]
    pub negative_control: Option<fn(Seed) -> Result<RunReport, RunFailure>>,
}

#[cfg(madsim)]
impl Scenario {
    /// The scenario's negative control under its own name and options, or `None` if it has none.
    pub fn negative_control(&self) -> Option<Scenario> {
        let run = self.negative_control?;
        Some(Scenario { run, negative_control: None, ..*self })
    }
}

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// A registry entry for a scenario of the test kit ([`builtin`]): its run, options and negative control.
macro_rules! kit_scenario {
    ($variant:ident, $name:literal, $summary:literal) => {
        Scenario {
            name: $name,
            summary: $summary,
            #[cfg(madsim)]
            run: |seed| builtin::run(testing::Scenario::$variant, seed),
            #[cfg(madsim)]
            options: |seed| builtin::options(testing::Scenario::$variant, seed),
            #[cfg(madsim)]
            negative_control: match testing::Scenario::$variant {
                testing::Scenario::Eviction | testing::Scenario::CoalescingCrash => Some(|seed| {
                    builtin::run_negative_control(testing::Scenario::$variant, seed)
                        .expect("this scenario has a negative control")
                }),
                _ => None,
            },
        }
    };
}

/// Every built-in scenario, in listing order.
pub fn all() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "replicated-counter",
            summary:
                "G-counter on 3 replicas over a lossy network with crashes, power cuts, pauses, partitions \
                      and clogs; checks convergence and that no acknowledged increment is lost",
            #[cfg(madsim)]
            run: counter::run,
            #[cfg(madsim)]
            options: counter::options,
            #[cfg(madsim)]
            negative_control: None,
        },
        Scenario {
            name: "sqlite-power-cut",
            summary:
                "bank transfers in SQLite on SimDisk under power cuts, torn writes and I/O errors; checks \
                      integrity, the balance invariant and that every acknowledged transfer is in the ledger, \
                      by its id",
            #[cfg(madsim)]
            run: bank::run,
            #[cfg(madsim)]
            options: bank::options,
            #[cfg(madsim)]
            negative_control: Some(bank::run_negative_control),
        },
        Scenario {
            name: "object-counters",
            summary: "Durable Object counters (SQLite and KV backends) and alarms on a host that crashes, \
                      loses power, pauses and evicts; checks each counter's history of acknowledged values and that \
                      every acknowledged alarm runs",
            #[cfg(madsim)]
            run: object_counters::run,
            #[cfg(madsim)]
            options: object_counters::options,
            #[cfg(madsim)]
            negative_control: Some(object_counters::run_negative_control),
        },
        Scenario {
            name: "object-cluster",
            summary: "Durable Objects (counters, registers) on a cluster of 3 hosts, a directory and a storage \
                      node, under message loss, duplication and reordering, crashes, power cuts and pauses, \
                      partitions of each hop, and superseded owners; checks each object's history, single \
                      activation over the storage node's commits, and that every object answers after the faults",
            #[cfg(madsim)]
            run: object_cluster::run,
            #[cfg(madsim)]
            options: object_cluster::options,
            #[cfg(madsim)]
            negative_control: Some(object_cluster::run_negative_control),
        },
        Scenario {
            name: "chat-room",
            summary: "chat rooms on hibernatable WebSockets on a cluster of 3 hosts, with quiet windows in which \
                      the rooms hibernate, evictions, partitions (front from host: sockets drop; host from \
                      directory: superseded), crashes and message loss; checks that every acknowledged message \
                      reached every member that stayed connected, once, in the sender's order, and is in the \
                      room's history (negative control: a room that keeps its members in memory)",
            #[cfg(madsim)]
            run: chat::run,
            #[cfg(madsim)]
            options: chat::options,
            #[cfg(madsim)]
            negative_control: Some(chat::run_negative_control),
        },
        kit_scenario!(Partition, "partition", "counters on a cluster of 3 hosts whose hops are partitioned (host from directory, front from host, host from storage node); linearizability, no lost write, single activation"),
        kit_scenario!(Eviction, "eviction", "counters on one host whose idle objects are evicted often; linearizability, no lost write (negative control: a write-behind counter)"),
        kit_scenario!(Superseded, "superseded", "counters on a cluster of 3 whose owners are cut off from the directory while paused, taken over, and resumed superseded; linearizability, no lost write, single activation"),
        kit_scenario!(Overload, "overload", "counters on one host whose objects refuse calls as overloaded in bursts; linearizability, no lost write"),
        kit_scenario!(CoalescingCrash, "coalescing-crash", "KV-backed counters on one host that crashes and loses power, also inside commits; linearizability, no lost write (negative control: allow_unconfirmed)"),
        kit_scenario!(AlarmRetry, "alarm-retry", "counters on one host that crashes and loses power while alarms run and retry; linearizability, no lost write"),
        kit_scenario!(DiskFaults, "disk-faults", "counters on one host whose disk fails operations and loses power inside commits; linearizability, no lost write"),
        kit_scenario!(CodeUpdate, "code-update", "counters on one host whose code is updated again and again (live objects reset); linearizability, no lost write"),
        kit_scenario!(Swarm, "swarm", "counters on a cluster of 3 under a random subset of every fault kind, drawn per seed; linearizability, no lost write, single activation"),
    ]
}

/// A comma-separated list, or `none`: how a list-valued option prints.
pub(crate) fn list<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_string();
    }
    items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

/// A scenario name that is not built in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownScenario(pub String);

impl fmt::Display for UnknownScenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = all().iter().map(|s| s.name).collect();
        write!(f, "unknown scenario {:?}: expected one of {}, or all", self.0, names.join(", "))
    }
}

impl std::error::Error for UnknownScenario {}

/// The scenarios a name selects: one by its name, or every one for `all`.
pub fn select(name: &str) -> Result<Vec<Scenario>, UnknownScenario> {
    if name == "all" {
        return Ok(all());
    }
    all()
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| vec![s])
        .ok_or_else(|| UnknownScenario(name.to_string()))
}
