//! Scenarios: named fault plans a user runs against their own class with [`ObjectTest::scenario`]. Each
//! sets the topology and the fault mix, and adds a check that its faults actually fired in the seed (a run
//! whose faults never landed proves nothing, and says so).

use std::fmt;
use std::time::Duration;

use dosim_sim::{Failure, FaultCounts};

use super::{Check, Driver, ObjectTest, Observed};
use crate::faults::{FaultKind, FaultMix};

/// A built-in scenario's fault plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// A cluster of 3 hosts whose hops are partitioned: host from directory, front from host, host from
    /// storage node.
    Partition,
    /// One host whose idle objects are evicted often.
    Eviction,
    /// A cluster whose hosts are cut off from the directory while paused, so another host takes their
    /// objects over and the old instance comes back superseded.
    Superseded,
    /// One host whose objects refuse calls as overloaded in bursts.
    Overload,
    /// One host that crashes and loses power, also inside commits (write coalescing must be atomic).
    CoalescingCrash,
    /// One host that crashes while alarms run and retry.
    AlarmRetry,
    /// One host whose disk fails operations and loses power inside commits.
    DiskFaults,
    /// One host whose code is updated (every live object reset) again and again.
    CodeUpdate,
    /// A cluster of 3 hosts under a random subset of every fault kind, drawn per seed.
    Swarm,
}

impl Scenario {
    /// Every scenario, in listing order.
    pub const ALL: [Scenario; 9] = [
        Scenario::Partition,
        Scenario::Eviction,
        Scenario::Superseded,
        Scenario::Overload,
        Scenario::CoalescingCrash,
        Scenario::AlarmRetry,
        Scenario::DiskFaults,
        Scenario::CodeUpdate,
        Scenario::Swarm,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Partition => "partition",
            Scenario::Eviction => "eviction",
            Scenario::Superseded => "superseded",
            Scenario::Overload => "overload",
            Scenario::CoalescingCrash => "coalescing-crash",
            Scenario::AlarmRetry => "alarm-retry",
            Scenario::DiskFaults => "disk-faults",
            Scenario::CodeUpdate => "code-update",
            Scenario::Swarm => "swarm",
        }
    }

    /// The scenario named `name`.
    pub fn named(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The hosts of its cluster, or `None` for one host.
    pub fn cluster(self) -> Option<u32> {
        match self {
            Scenario::Partition | Scenario::Superseded | Scenario::Swarm => Some(3),
            _ => None,
        }
    }

    /// Its fault mix.
    pub fn faults(self) -> FaultMix {
        match self {
            Scenario::Partition => {
                FaultMix::none().with(FaultKind::Partition).mean_interval(Duration::from_millis(2_500))
            }
            Scenario::Eviction => {
                FaultMix::none().with(FaultKind::Eviction).mean_interval(Duration::from_millis(400))
            }
            Scenario::Superseded => {
                FaultMix::none().with(FaultKind::Supersede).mean_interval(Duration::from_millis(4_000))
            }
            Scenario::Overload => {
                FaultMix::none().with(FaultKind::Overload).mean_interval(Duration::from_millis(700))
            }
            Scenario::CoalescingCrash => FaultMix::none()
                .with(FaultKind::Crash)
                .with(FaultKind::PowerCut)
                .with(FaultKind::PowerCutInCommit)
                .mean_interval(Duration::from_millis(900)),
            Scenario::AlarmRetry => FaultMix::none()
                .with(FaultKind::Crash)
                .with(FaultKind::PowerCut)
                .mean_interval(Duration::from_millis(1_500)),
            Scenario::DiskFaults => FaultMix::disk(),
            Scenario::CodeUpdate => {
                FaultMix::none().with(FaultKind::CodeUpdate).mean_interval(Duration::from_millis(1_500))
            }
            Scenario::Swarm => FaultMix::swarm_all(),
        }
    }

    /// What must have fired in a seed of it, for the seed to count.
    fn fired(self, faults: &FaultCounts, injected: &dyn Fn(&str) -> u64) -> Result<String, String> {
        use dosim_sim::FaultKind as K;
        let (what, n) = match self {
            Scenario::Partition => ("partitions", faults.get(K::Partition)),
            Scenario::Eviction => ("evictions", injected("eviction")),
            Scenario::Superseded => ("superseded owners", injected("supersede")),
            Scenario::Overload => ("calls refused as overloaded", injected("refused")),
            Scenario::CoalescingCrash | Scenario::AlarmRetry => {
                ("crashes and power cuts", faults.get(K::Crash) + faults.get(K::PowerCut))
            }
            Scenario::DiskFaults => (
                "disk faults",
                faults.get(K::DiskIoError)
                    + faults.get(K::DiskLostWrite)
                    + faults.get(K::DiskTornWrite)
                    + faults.get(K::PowerCut),
            ),
            Scenario::CodeUpdate => ("code updates", injected("code-update")),
            Scenario::Swarm => (
                "faults",
                faults.total() - faults.get(K::Restart) - faults.get(K::Resume) - faults.get(K::Heal)
                    + ["eviction", "overload", "reset", "code-update", "supersede"]
                        .iter()
                        .map(|k| injected(k))
                        .sum::<u64>(),
            ),
        };
        if n > 0 {
            Ok(format!("{n} {what}"))
        } else {
            Err(format!("scenario {self}: no {what} fired in this seed, so the run proves nothing"))
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The check a scenario adds: its faults fired in the seed (the run's fault counts, and the test's own
/// injected faults, from its notes in the trace).
#[derive(Clone, Copy, Debug)]
pub struct FaultsFired(pub Scenario);

impl<I, O> Check<I, O> for FaultsFired {
    fn name(&self) -> String {
        format!("{} faults fired", self.0)
    }

    fn check(&self, run: &Observed<'_, I, O>) -> Result<(), Failure> {
        // The world's faults as the run counted them; the kit's own from its notes.
        let faults = run.faults.clone();
        let mut injected = std::collections::BTreeMap::<String, u64>::new();
        for e in run.trace.events() {
            if let dosim_sim::EventKind::Note { key, value } = &e.kind {
                if key == "fault" {
                    let kind = value.split(' ').next().unwrap_or_default().to_string();
                    *injected.entry(kind).or_default() += 1;
                }
            }
        }
        // The calls an overload refused, as the clients saw them.
        let refused = run
            .history
            .ops()
            .iter()
            .filter(|o| matches!(&o.outcome, crate::history::Outcome::Err { flags, .. } if flags.overloaded))
            .count() as u64;
        injected.insert("refused".to_string(), refused);
        let get = |k: &str| injected.get(k).copied().unwrap_or(0);
        match self.0.fired(&faults, &get) {
            Ok(fired) => {
                dosim_sim::note("fired", fired);
                Ok(())
            }
            Err(e) => Err(Failure::new(e)),
        }
    }
}

impl<D: Driver> ObjectTest<D> {
    /// Runs the test under a built-in scenario: its topology, its fault mix (replacing any given), and a
    /// check that its faults fired.
    pub fn scenario(mut self, scenario: Scenario) -> Self {
        if let Some(hosts) = scenario.cluster() {
            self = self.cluster(hosts);
        }
        self.faults(scenario.faults()).check(FaultsFired(scenario))
    }
}
