//! The test kit for users' objects: point it at your Durable Object class, say what clients do, which faults
//! to inject and what to check, and run it under a seed.
//!
//! ```ignore
//! use dosim::testing::*;
//!
//! sim_test!(seeds = 20, fn my_counter_survives_host_faults(seed) {
//!     ObjectTest::new(seed)
//!         .class::<MyCounter>("COUNTER")
//!         .workload(Workload::new("COUNTER", CounterCalls::rpc("increment", "read")))
//!         .faults(FaultMix::host())
//!         .check(Linearizable(CounterModel))
//!         .run()
//! });
//! ```
//!
//! A run: the world is built (one host, or a cluster of hosts with a directory, a front and a storage node),
//! the seed draws the clients' operations ([`Workload`]) and the fault schedule ([`FaultMix::draw`]); the
//! clients make their operations while the faults fire, recording each in a [`History`]; then the faults
//! stop, and the liveness phase reads every object until it answers (within [`LIVENESS_BOUND`]); then every
//! [`Check`] judges the history and the trace. A violation fails the run with the operations behind it.
//! Each run's storage is fresh: a run is a new world.

mod checks;
mod driver;
mod host_test;
mod quiescent;
mod scenario;
pub mod shrink;

pub use checks::{Check, Linearizable, NoAbandonedAlarms, NoLostWrites, Observed, SingleActivation};
pub use driver::{
    CounterCalls, Driver, KvCalls, PlannedOp, RegisterCalls, Workload, CLIENT_TIMEOUT_DEFAULT, KV_KEYS,
    THINK_TICK_MS,
};

pub use crate::check::models::{
    CounterModel, CounterOp, KvModel, KvOp, KvOut, RegisterModel, RegisterOp, RegisterOut,
};
pub use crate::check::Model;
pub use crate::faults::{FaultKind, FaultMix};
pub use crate::history::{ErrorFlags, History, Operation, Outcome};
pub use dosim_sim::{sim_test, Seed};
pub use host_test::NoWorkload;
pub use quiescent::{ALARM_LATE_MAX, ALARM_SETTLE};
pub use scenario::{FaultsFired, Scenario};

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dosim_runtime::embed::{ClusterRole, HostBuilder, Migration};
use dosim_runtime::error::Error;
use dosim_runtime::prelude::DurableObject;
use dosim_sim::net::NetConfig;
use dosim_sim::{DiskConfig, Failure, NodeId, RunFailure, RunOptions, RunReport, Sim, World};

pub use crate::faults::{Action, FaultSchedule, TimedFault};

use crate::faults::ClusterNodes;
pub use crate::faults::Targets;
use crate::history::OpId;
use crate::sim_host::{host_builder, host_node, HostNode};

/// How long after the faults stop every object must answer its final read: a host that was down must come
/// back, a lease of a dead owner must expire (5 s), a call lost to it must time out (30 s), and a margin.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(60);
/// How long the hosts of a cluster get to join the directory before the clients start.
const CLUSTER_STARTUP: Duration = Duration::from_secs(3);
/// How often the quiescent check of alarms looks again while an alarm is still overdue.
const ALARM_POLL: Duration = Duration::from_secs(5);

/// The client number of the liveness phase's final reads in the history.
pub const FINAL_READ_CLIENT: u32 = u32::MAX;
/// The client number of the reads a supersede makes through another host (to take the objects over).
pub const TAKEOVER_CLIENT: u32 = u32::MAX - 1;

/// A class of the script under test: how to add it to a host builder.
type AddClass = Arc<dyn Fn(HostBuilder) -> HostBuilder + Send + Sync>;

/// A test of user objects under simulation: the classes, a workload, faults and checks (see the module docs).
pub struct ObjectTest<D: Driver> {
    seed: Seed,
    classes: Vec<AddClass>,
    sqlite_classes: Vec<String>,
    kv_classes: Vec<String>,
    migrations: Option<Vec<Migration>>,
    workload: Option<Workload<D>>,
    faults: FaultMix,
    checks: Vec<Box<dyn Check<D::Input, D::Output>>>,
    quiescent: Vec<quiescent::QuiescentCheck>,
    hosts: Option<u32>,
    fencing: bool,
}

/// The class name of `T`: its type name without the module path or generics.
fn class_name<T>() -> String {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base).to_string()
}

impl<D: Driver> ObjectTest<D> {
    /// A test under `seed`, with no classes, no faults and no checks yet.
    pub fn new(seed: Seed) -> ObjectTest<D> {
        ObjectTest {
            seed,
            classes: Vec::new(),
            sqlite_classes: Vec::new(),
            kv_classes: Vec::new(),
            migrations: None,
            workload: None,
            faults: FaultMix::none(),
            checks: Vec::new(),
            quiescent: Vec::new(),
            hosts: None,
            fencing: true,
        }
    }

    /// Adds class `T` (SQLite-backed, named after its type) bound to `binding`.
    pub fn class<T: DurableObject>(self, binding: &str) -> Self {
        self.class_named::<T>(&class_name::<T>(), binding, true)
    }

    /// Adds class `T` on the KV backend (named after its type) bound to `binding`.
    pub fn kv_class<T: DurableObject>(self, binding: &str) -> Self {
        self.class_named::<T>(&class_name::<T>(), binding, false)
    }

    /// Adds class `T` as `name` bound to `binding`, SQLite-backed if `sqlite`.
    pub fn class_named<T: DurableObject>(mut self, name: &str, binding: &str, sqlite: bool) -> Self {
        let (name, binding) = (name.to_string(), binding.to_string());
        if sqlite {
            self.sqlite_classes.push(name.clone());
        } else {
            self.kv_classes.push(name.clone());
        }
        self.classes.push(Arc::new(move |b: HostBuilder| b.class::<T>(&name).binding(&binding, &name)));
        self
    }

    /// The script's migrations, instead of the one derived from the classes (tag `v1`, creating each class
    /// on its backend).
    pub fn migrations(mut self, migrations: Vec<Migration>) -> Self {
        self.migrations = Some(migrations);
        self
    }

    /// What the clients do.
    pub fn workload(mut self, workload: Workload<D>) -> Self {
        self.workload = Some(workload);
        self
    }

    /// The faults to inject (each seed draws its schedule from them).
    pub fn faults(mut self, mix: FaultMix) -> Self {
        self.faults = mix;
        self
    }

    /// Adds a check of the history and trace.
    pub fn check(mut self, check: impl Check<D::Input, D::Output> + 'static) -> Self {
        self.checks.push(Box::new(check));
        self
    }

    /// Adds an invariant of each object of the workload (of class `T`): once the faults have stopped and every
    /// object has answered its final reads, `f` runs inside each object, as an event of it, with its
    /// [`State`](dosim_runtime::prelude::State), and says why the invariant does not hold, if it does not.
    ///
    /// ```ignore
    /// test.invariant::<Account>("balance is never negative", async |_, state| {
    ///     let balance: i64 = state.storage().get("balance").await.map_err(|e| e.to_string())?.unwrap_or(0);
    ///     if balance < 0 { Err(format!("balance {balance}")) } else { Ok(()) }
    /// })
    /// ```
    pub fn invariant<T: DurableObject>(
        mut self,
        name: &str,
        f: impl AsyncFn(&T, &dosim_runtime::prelude::State) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.quiescent.push(quiescent::QuiescentCheck {
            name: name.to_string(),
            probe: quiescent::probe_of::<T, _>(f),
            needs_alarm_settle: false,
        });
        self
    }

    /// Checks alarm liveness on each object of the workload (of class `T`): after the faults stop, the kit
    /// waits [`ALARM_SETTLE`] for retries to run out, then no object may hold an alarm more than
    /// [`ALARM_LATE_MAX`] overdue (it never ran), and no alarm may have been abandoned after its last retry
    /// (its handler never succeeded).
    pub fn check_alarms<T: DurableObject>(mut self) -> Self {
        self.checks.push(Box::new(checks::NoAbandonedAlarms));
        self.quiescent.push(quiescent::QuiescentCheck {
            name: "alarm liveness".into(),
            probe: quiescent::alarm_probe::<T>(),
            needs_alarm_settle: true,
        });
        self
    }

    /// Runs the objects on a cluster of `hosts` hosts, with a directory, a front (where the clients' calls
    /// enter) and a storage node, instead of on one host.
    pub fn cluster(mut self, hosts: u32) -> Self {
        assert!(hosts > 0, "a cluster needs at least one host");
        self.hosts = Some(hosts);
        self
    }

    /// A cluster whose storage node does not fence older epochs: a broken runtime, only for the negative
    /// control of [`SingleActivation`] (a superseded owner's late commits then apply).
    pub fn storage_without_fencing(mut self) -> Self {
        self.fencing = false;
        self
    }

    /// The host builder of the script: every class, binding and migration.
    fn build_fn(&self) -> Arc<dyn Fn() -> HostBuilder + Send + Sync> {
        let classes = self.classes.clone();
        let migrations = self.migrations.clone().unwrap_or_else(|| {
            vec![Migration {
                tag: "v1".into(),
                new_sqlite_classes: self.sqlite_classes.clone(),
                new_classes: self.kv_classes.clone(),
                ..Migration::default()
            }]
        });
        Arc::new(move || {
            let mut b = host_builder("worker");
            for add in &classes {
                b = add(b);
            }
            for m in &migrations {
                b = b.migration(m.clone());
            }
            b
        })
    }

    /// The layout of the world: the hosts, and the cluster's other nodes.
    fn layout(&self) -> Layout {
        match self.hosts {
            None => Layout { hosts: vec![NodeId(0)], cluster: None },
            Some(n) => {
                let hosts: Vec<NodeId> = (0..n).map(|i| NodeId(2 + i)).collect();
                let cluster = ClusterNodes { directory: NodeId(0), front: NodeId(1), storage: NodeId(2 + n) };
                Layout { hosts, cluster: Some(cluster) }
            }
        }
    }

    /// The options a run of `plan` prints: the seed, the topology and workload, the plan's faults, and how
    /// many operations it makes.
    pub fn options_of(&self, plan: &RunPlan<D::Input>) -> RunOptions {
        let (_, base) = self.schedule();
        let mut options = RunOptions::none();
        for (k, v) in base.iter().take_while(|(k, _)| *k != "faults") {
            options = options.with(k, v);
        }
        plan.schedule.describe(options).with("ops", plan.ops.iter().map(Vec::len).sum::<usize>())
    }

    /// The options of this test's seed (its own plan's).
    pub fn options(&self) -> RunOptions {
        self.options_of(&self.plan())
    }

    /// The fault schedule and options of this test's seed.
    pub fn schedule(&self) -> (FaultSchedule, RunOptions) {
        let (targets, start, span) = self.fault_targets();
        let schedule = self.faults.draw(self.seed, &targets, start, span);
        let mut options = RunOptions::new(self.seed).with(
            "topology",
            match self.hosts {
                None => "host".to_string(),
                Some(n) => format!("cluster-{n}"),
            },
        );
        if let Some(w) = &self.workload {
            options = options
                .with("clients", w.clients)
                .with("ops_per_client", w.ops_per_client)
                .with("objects", w.objects.len())
                .with("workload_ms", w.duration.as_millis());
        }
        (schedule.clone(), schedule.describe(options))
    }

    /// Everything the seed decides for this test, explicit: every client's operations and every fault. A
    /// shrinker or an explorer changes the plan and runs it with [`ObjectTest::run_plan`]; the seed still
    /// drives what the plan leaves to chance (latencies, scheduling, disk errors at their rates).
    pub fn plan(&self) -> RunPlan<D::Input> {
        let (schedule, _) = self.schedule();
        let ops = self.workload.as_ref().map(|w| w.draw(self.seed)).unwrap_or_default();
        RunPlan { ops, schedule }
    }

    /// The test's seed.
    pub fn seed(&self) -> Seed {
        self.seed
    }

    /// The test's fault mix.
    pub fn fault_mix(&self) -> &FaultMix {
        &self.faults
    }

    /// The nodes its faults may hit, and the stretch of simulated time (start, length) its faults are drawn
    /// over: what an explorer needs to draw more faults like [`FaultMix::draw`] does.
    pub fn fault_targets(&self) -> (Targets, Duration, Duration) {
        let layout = self.layout();
        let targets = Targets { hosts: layout.hosts.clone(), cluster: layout.cluster };
        match &self.workload {
            Some(w) => {
                (targets, if layout.cluster.is_some() { CLUSTER_STARTUP } else { Duration::ZERO }, w.duration)
            }
            None => (targets, Duration::ZERO, Duration::ZERO),
        }
    }

    /// The test's workload, if it has one.
    pub fn workload_of(&self) -> Option<&Workload<D>> {
        self.workload.as_ref()
    }

    /// Runs the test under its seed: the workload with the faults, the liveness phase, then every check.
    ///
    /// If the harness set a plan mask for this run ([`dosim_sim::harness::current_plan_mask`]: a regression
    /// file's shrunk seed, or `DOSIM_KEEP`), the run keeps only that part of the seed's plan (see
    /// [`shrink::Mask`]); a malformed mask fails the run as a configuration error that names it.
    pub fn run(self) -> Result<RunReport, RunFailure> {
        let plan = self.plan();
        match current_mask() {
            None => self.run_plan(plan),
            Some(text) => {
                let applied = text
                    .parse::<shrink::Mask>()
                    .and_then(|mask| mask.apply(&plan))
                    .map_err(|e| config_failure(self.seed, &format!("plan mask {text:?}: {e}")))?;
                self.run_plan(applied)
            }
        }
    }

    /// Runs the test with `plan` instead of the one its seed draws (a shrinker's smaller plan, an explorer's
    /// mutated one). The options it prints are the plan's.
    pub fn run_plan(self, plan: RunPlan<D::Input>) -> Result<RunReport, RunFailure> {
        self.run_plan_recorded(plan, &mut None)
    }

    /// [`ObjectTest::run_plan`], leaving the run's history in `recorded` when the run got as far as its
    /// checks (a shrinker prints the operations of its smallest failing run).
    pub(crate) fn run_plan_recorded(
        self,
        plan: RunPlan<D::Input>,
        recorded: &mut Option<History<D::Input, D::Output>>,
    ) -> Result<RunReport, RunFailure> {
        let options = self.options_of(&plan);
        let RunPlan { ops: plans, schedule } = plan;
        let workload = self.workload.clone().ok_or_else(|| {
            config_failure(self.seed, "an ObjectTest needs a workload (ObjectTest::workload)")
        })?;
        if self.classes.is_empty() {
            return Err(config_failure(self.seed, "an ObjectTest needs a class (ObjectTest::class)"));
        }
        let layout = self.layout();
        for check in &self.checks {
            if let Err(e) = check.applies(layout.cluster.is_some()) {
                return Err(config_failure(self.seed, &e));
            }
        }
        let build = self.build_fn();
        let mut sim = Sim::builder()
            .seed(self.seed)
            .disk(DiskConfig { io_error_rate: schedule.disk_io_error_rate, ..DiskConfig::default() })
            .network(NetConfig {
                loss: schedule.net_loss,
                duplicate: schedule.net_duplicate,
                reorder: schedule.net_reorder,
                ..NetConfig::default()
            })
            .faults(schedule.plan())
            .options(options.clone());
        let mut host_nodes = Vec::new();
        let mut front = None;
        match layout.cluster {
            None => {
                let b = build.clone();
                let (config, node) = host_node(layout.hosts[0], "host", move || b());
                sim = sim.node(config);
                host_nodes.push(node);
            }
            Some(c) => {
                sim = sim.node(crate::cluster::etcd::etcd_node(c.directory, "directory"));
                let b = build.clone();
                let (config, node) = crate::cluster::cluster_node(
                    c.front,
                    "front",
                    c.directory,
                    &[c.storage],
                    ClusterRole::Front,
                    move || b(),
                );
                sim = sim.node(config);
                front = Some(node);
                for (i, h) in layout.hosts.iter().enumerate() {
                    let b = build.clone();
                    let (config, node) = crate::cluster::cluster_node(
                        *h,
                        &format!("host{i}"),
                        c.directory,
                        &[c.storage],
                        ClusterRole::Host,
                        move || b(),
                    );
                    sim = sim.node(config);
                    host_nodes.push(node);
                }
                sim = sim.node(crate::cluster::storage_node("storage", self.fencing));
            }
        }
        let history: Arc<Mutex<History<D::Input, D::Output>>> = Arc::new(Mutex::new(History::new()));
        let stopped_at: Arc<Mutex<Duration>> = Arc::new(Mutex::new(Duration::ZERO));
        let ctl = Controller {
            workload,
            // Clients enter through the front in a cluster, through the host otherwise.
            entry: front.clone().unwrap_or_else(|| host_nodes[0].clone()),
            hosts: host_nodes,
            layout: layout.clone(),
            schedule,
            build,
            quiescent: self.quiescent.clone(),
        };
        let (h, s) = (history.clone(), stopped_at.clone());
        let run = sim.build()?.run(move |world| async move {
            let (hist, outcome) = ctl.drive(world, plans).await;
            *h.lock().unwrap_or_else(|e| e.into_inner()) = hist;
            *s.lock().unwrap_or_else(|e| e.into_inner()) = outcome?;
            Ok(())
        });
        let report = match run {
            Ok(report) => report,
            Err(failure) => {
                // The history up to the failure (a liveness failure, a panic), for the report and the shrinker.
                let history = std::mem::take(&mut *history.lock().unwrap_or_else(|e| e.into_inner()));
                write_html_if_asked(&failure, &history);
                *recorded = Some(history);
                return Err(failure);
            }
        };
        let history = std::mem::take(&mut *history.lock().unwrap_or_else(|e| e.into_inner()));
        let stopped = *stopped_at.lock().unwrap_or_else(|e| e.into_inner());
        let observed = Observed {
            history: &history,
            trace: &report.trace,
            faults_stopped: stopped,
            faults: &report.faults,
        };
        let mut verdict = Ok(());
        for check in &self.checks {
            if let Err(failure) = check.check(&observed) {
                verdict = Err(Failure::new(format!("{}: {}", check.name(), failure.message()))
                    .with_evidence(failure.evidence().clone()));
                break;
            }
        }
        let result = match verdict {
            Ok(()) => Ok(report),
            Err(failure) => Err(RunFailure::after(report, options, failure)),
        };
        if let Err(failure) = &result {
            write_html_if_asked(failure, &history);
        }
        *recorded = Some(history);
        result
    }
}

/// The environment variable that asks a failing run of the kit for its timeline: the file to write the
/// self-contained HTML page to (see docs/REPORT.md).
pub const ENV_HTML: &str = "DOSIM_HTML";

/// Writes the HTML timeline of `failure`, with the clients' operations, to the file [`ENV_HTML`] names, if
/// it names one; says where on stderr.
fn write_html_if_asked<I: std::fmt::Debug, O: std::fmt::Debug>(
    failure: &RunFailure,
    history: &History<I, O>,
) {
    let Ok(path) = std::env::var(ENV_HTML) else { return };
    let ops =
        crate::report_html::OpView::from_history(history, &crate::report_html::named_ops(&failure.evidence));
    let meta = crate::report_html::ReportMeta { title: format!("seed {}", failure.seed), replay: None };
    match std::fs::write(&path, crate::report_html::render(failure, &ops, &meta)) {
        Ok(()) => eprintln!("dosim: the run's timeline is in {path}"),
        Err(e) => eprintln!("dosim: {ENV_HTML}: cannot write {path}: {e}"),
    }
}

/// What a run of an [`ObjectTest`] does, explicit (see [`ObjectTest::plan`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunPlan<I> {
    /// Each client's operations, in order.
    pub ops: Vec<Vec<PlannedOp<I>>>,
    /// The faults.
    pub schedule: FaultSchedule,
}

/// The plan mask the harness set for this run, if any.
fn current_mask() -> Option<String> {
    dosim_sim::harness::current_plan_mask()
}

/// A run that cannot start: its configuration is incomplete.
fn config_failure(seed: Seed, message: &str) -> RunFailure {
    let mut f = RunFailure::from(dosim_sim::PlanError(message.to_string()));
    f.seed = seed;
    f
}

/// Where the nodes are.
#[derive(Clone, Debug)]
struct Layout {
    hosts: Vec<NodeId>,
    cluster: Option<ClusterNodes>,
}

/// The run's controller: clients, the faults the world does not run itself, and the liveness phase.
struct Controller<D: Driver> {
    workload: Workload<D>,
    entry: HostNode,
    hosts: Vec<HostNode>,
    layout: Layout,
    schedule: FaultSchedule,
    build: Arc<dyn Fn() -> HostBuilder + Send + Sync>,
    quiescent: Vec<quiescent::QuiescentCheck>,
}

type Shared<D> = Rc<RefCell<History<<D as Driver>::Input, <D as Driver>::Output>>>;

impl<D: Driver> Controller<D> {
    /// Runs the clients, the faults, the liveness phase and the quiescent checks; the history (whatever
    /// happened) and when the faults stopped (if it got that far without a failure).
    async fn drive(
        self,
        world: World,
        plans: Vec<Vec<PlannedOp<D::Input>>>,
    ) -> (History<D::Input, D::Output>, Result<Duration, Failure>) {
        let history: Shared<D> = Rc::new(RefCell::new(History::new()));
        let outcome = self.drive_into(world, history.clone(), plans).await;
        let history = Rc::try_unwrap(history).map(RefCell::into_inner).unwrap_or_else(|h| h.borrow().clone());
        (history, outcome)
    }

    async fn drive_into(
        self,
        world: World,
        history: Shared<D>,
        plans: Vec<Vec<PlannedOp<D::Input>>>,
    ) -> Result<Duration, Failure> {
        let this = Rc::new(self);
        if this.layout.cluster.is_some() {
            world.sleep(CLUSTER_STARTUP).await;
        }
        let nemesis = madsim::task::spawn_local(this.clone().nemesis(world.clone(), history.clone()));
        let mut clients = Vec::new();
        for (c, plan) in plans.into_iter().enumerate() {
            let (this, world, history) = (this.clone(), world.clone(), history.clone());
            clients.push(madsim::task::spawn_local(async move {
                for op in plan {
                    world.sleep(op.think).await;
                    this.call(&world, &history, c as u32, op.object, op.input).await;
                }
            }));
        }
        for c in clients {
            c.await.map_err(|e| Failure::new(format!("a client task died: {e}")))?;
        }
        nemesis.abort();
        world.stop_faults();
        let stopped = world.now();
        // Liveness: every object answers its final reads within the bound, each retried until then.
        let reads = this.workload.driver.final_reads();
        let mut finals = Vec::new();
        for object in 0..this.workload.objects.len() {
            for read in &reads {
                let (this, world, history, read) =
                    (this.clone(), world.clone(), history.clone(), read.clone());
                finals.push(madsim::task::spawn_local(async move {
                    loop {
                        let id = this.call(&world, &history, FINAL_READ_CLIENT, object, read.clone()).await;
                        let answered =
                            matches!(history.borrow().get(id).map(|o| &o.outcome), Some(Outcome::Ok(_)));
                        if answered {
                            return Ok(());
                        }
                        if world.now() >= stopped + LIVENESS_BOUND {
                            return Err(this.workload.objects[object].clone());
                        }
                        world.sleep(Duration::from_millis(200)).await;
                    }
                }));
            }
        }
        for f in finals {
            if let Err(object) = f.await.map_err(|e| Failure::new(format!("a final read died: {e}")))? {
                return Err(Failure::pending(format!(
                    "object {object} did not answer within {LIVENESS_BOUND:?} of the faults stopping"
                )));
            }
        }
        this.check_quiescent(&world).await?;
        let unmet = dosim_sim::eventually_unmet();
        if !unmet.is_empty() {
            return Err(Failure::pending(format!(
                "eventually: {} never held by the end of the run: {}",
                if unmet.len() == 1 { "this point" } else { "these points" },
                unmet.join(", ")
            )));
        }
        Ok(stopped)
    }

    /// Runs the quiescent checks on every object of the workload: each where the object lives (on one host,
    /// there; in a cluster, on its owner, found by asking each host in turn).
    async fn check_quiescent(&self, world: &World) -> Result<(), Failure> {
        // Alarms first, until they converge: no object has one overdue or due within the settle bound (a
        // retry waits its backoff), looked at again every few seconds; or the bound has passed.
        let settle_until = world.now() + quiescent::ALARM_SETTLE;
        'settle: while world.now() < settle_until {
            for check in self.quiescent.iter().filter(|q| q.needs_alarm_settle) {
                for object in &self.workload.objects {
                    if self.look_inside(check, object).await.is_err() {
                        world.sleep(ALARM_POLL).await;
                        continue 'settle;
                    }
                }
            }
            break;
        }
        for check in &self.quiescent {
            for object in &self.workload.objects {
                match self.look_inside(check, object).await {
                    Err(f) if check.needs_alarm_settle && f.message().ends_with(quiescent::ALARM_PENDING) => {
                    }
                    other => other?,
                }
            }
        }
        Ok(())
    }

    /// Runs `check` inside `object`, wherever it lives (on one host, there; in a cluster, on its owner,
    /// found by asking each host in turn).
    async fn look_inside(&self, check: &quiescent::QuiescentCheck, object: &str) -> Result<(), Failure> {
        let mut refusals = Vec::new();
        for host in &self.hosts {
            let (probe, binding, name) =
                (check.probe.clone(), self.workload.binding.clone(), object.to_string());
            match host.run_on_host(move |h| probe(h, binding, name)).await {
                Ok(Ok(Ok(()))) => return Ok(()),
                Ok(Ok(Err(why))) => {
                    return Err(Failure::new(format!("invariant {:?} of object {object}: {why}", check.name)))
                }
                Ok(Err(e)) => refusals.push(format!("{}: {}", host.node(), e.message())),
                Err(e) => refusals.push(format!("{}: {e}", host.node())),
            }
        }
        Err(Failure::pending(format!(
            "invariant {:?}: no host could look inside object {object} ({})",
            check.name,
            refusals.join("; ")
        )))
    }

    /// Client `client` makes `input` on object `object`, recorded in the history.
    async fn call(
        &self,
        world: &World,
        history: &Shared<D>,
        client: u32,
        object: usize,
        input: D::Input,
    ) -> OpId {
        self.call_via(&self.entry, world, history, client, object, input).await
    }

    /// [`Controller::call`] through `via` (a host, instead of the clients' entry).
    async fn call_via(
        &self,
        via: &HostNode,
        world: &World,
        history: &Shared<D>,
        client: u32,
        object: usize,
        input: D::Input,
    ) -> OpId {
        let name = self.workload.objects[object].clone();
        let id = history.borrow_mut().invoke(client, name.clone(), input.clone(), world.now());
        let (driver, binding) = (self.workload.driver.clone(), self.workload.binding.clone());
        let call = via.run(move |env| async move {
            let stub = env.durable_object(&binding)?.get_by_name(&name);
            driver.call(&stub, input).await
        });
        let outcome = match madsim::time::timeout(self.workload.client_timeout, call).await {
            Ok(Ok(result)) => {
                if let Err(e) = &result {
                    mark_error(e);
                }
                Outcome::of(result)
            }
            // The node died with the call, or the client gave up: it may or may not have run.
            Ok(Err(_)) | Err(_) => Outcome::Unknown,
        };
        history.borrow_mut().complete(id, outcome, world.now());
        id
    }

    /// Runs the faults the world does not run itself: evictions, overload, resets, code updates, and the
    /// takeovers of a supersede.
    async fn nemesis(self: Rc<Self>, world: World, history: Shared<D>) {
        let faults: Vec<_> = self.schedule.controller_faults().copied().collect();
        for f in faults {
            let now = world.now();
            if f.at > now {
                world.sleep(f.at - now).await;
            }
            let host_of = |node: NodeId| self.hosts.iter().find(|h| h.node() == node).cloned();
            match f.action {
                Action::Evict { node } => {
                    if let Some(h) = host_of(node) {
                        if let Ok(n) = h.run_on_host(|host| async move { host.evict_idle() }).await {
                            for _ in 0..n {
                                dosim_sim::note("fault", format!("eviction on {node}"));
                                dosim_sim::sometimes("fault: eviction");
                            }
                        }
                    }
                }
                Action::Reset { object } => {
                    let name = self.workload.objects[object as usize % self.workload.objects.len()].clone();
                    for h in &self.hosts {
                        let (binding, target) = (self.workload.binding.clone(), name.clone());
                        let reset = h
                            .run_on_host(move |host| async move {
                                let id = host.env().durable_object(&binding)?.id_from_name(&target);
                                host.reset(&binding, &id, Error::new(INJECTED_RESET).with_reset())
                            })
                            .await;
                        if let Ok(Ok(true)) = reset {
                            dosim_sim::note("fault", format!("reset {name}"));
                            dosim_sim::sometimes("fault: reset");
                        }
                    }
                }
                Action::CodeUpdate { node } => {
                    if let Some(h) = host_of(node) {
                        let updated = match self.layout.cluster {
                            None => {
                                let (boot, next) = (self.build.clone(), self.build.clone());
                                h.update_code(move || boot(), move |_| next()).await
                            }
                            Some(c) => {
                                crate::cluster::update_cluster_code_with(
                                    &h,
                                    c.directory,
                                    &[c.storage],
                                    ClusterRole::Host,
                                    self.build.clone(),
                                )
                                .await
                            }
                        };
                        if updated.is_ok() {
                            dosim_sim::note("fault", format!("code-update on {node}"));
                            dosim_sim::sometimes("fault: code-update");
                        }
                    }
                }
                Action::Overload { object, calls } => {
                    let name = self.workload.objects[object as usize % self.workload.objects.len()].clone();
                    // On every host: the one that owns the object is the one that admits its calls.
                    for h in &self.hosts {
                        let (binding, target) = (self.workload.binding.clone(), name.clone());
                        let armed = h
                            .run_on_host(move |host| async move {
                                let id = host.env().durable_object(&binding)?.id_from_name(&target);
                                host.overload_next(&binding, &id, calls)
                            })
                            .await;
                        if let Ok(Ok(())) = armed {
                            dosim_sim::note("fault", format!("overload {name} x{calls} on {}", h.node()));
                            dosim_sim::sometimes("fault: overload");
                        }
                    }
                }
                Action::Supersede { survivor } => {
                    // The host is cut off and paused (the world does it); once the directory has expired its
                    // lease, another host reads every object, which takes them over.
                    let (_, takeover, _, _) = crate::faults::SUPERSEDE_TIMELINE;
                    let now = world.now();
                    if f.at + takeover > now {
                        world.sleep(f.at + takeover - now).await;
                    }
                    let Some(other) = self.hosts.iter().find(|h| h.node() == survivor).cloned() else {
                        continue;
                    };
                    let Some(read) = self.workload.driver.final_reads().first().cloned() else { continue };
                    dosim_sim::note("fault", format!("supersede all but {survivor}"));
                    dosim_sim::sometimes("fault: supersede");
                    // All at once: the takeover must happen before the host resumes.
                    let reads: Vec<_> = (0..self.workload.objects.len())
                        .map(|object| {
                            let (this, world, history, other, read) =
                                (self.clone(), world.clone(), history.clone(), other.clone(), read.clone());
                            madsim::task::spawn_local(async move {
                                this.call_via(&other, &world, &history, TAKEOVER_CLIENT, object, read).await;
                            })
                        })
                        .collect();
                    for r in reads {
                        let _ = r.await;
                    }
                }
                // The world runs these itself.
                Action::Crash { .. }
                | Action::PowerCut { .. }
                | Action::Pause { .. }
                | Action::Partition { .. } => {}
            }
        }
    }
}

/// Marks the kind of error an operation failed with as a `sometimes` point, so a test's summary shows
/// which failures its faults produced.
fn mark_error(e: &Error) {
    use dosim_runtime::error::messages;
    let what = if e.message() == messages::STORAGE_NO_LONGER_ACCESSIBLE {
        "an operation failed: storage no longer accessible (a superseded or reset instance)"
    } else if e.message() == messages::NETWORK_CONNECTION_LOST {
        "an operation failed: network connection lost"
    } else if e.overloaded() {
        "an operation failed: overloaded"
    } else if e.durable_object_reset() {
        "an operation failed: the object was reset"
    } else if e.remote() {
        "an operation failed: the object threw"
    } else {
        "an operation failed: another error"
    };
    dosim_sim::sometimes(what);
}

/// The message of a reset the kit injects.
pub const INJECTED_RESET: &str = "Durable Object reset by an injected fault.";
