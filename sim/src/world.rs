//! A simulation run: the [`Sim`] builder, the run loop on madsim, and the [`World`] handle a scenario drives.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::context::{self, NodeInfo, RunCtx};
use crate::disk::{self, DiskConfig};
use crate::fault::{node_out_of_range, Direction, Fault, FaultKind, FaultPlan, PlanError, RandomFaults};
use crate::net::{self, NetConfig};
use crate::ratio::Ratio;
use crate::report::{Failure, FailureKind, RunFailure, RunOptions, RunReport};
use crate::rng::Purpose;
use crate::seed::Seed;
use crate::sqlite;
use crate::trace::{EventKind, NodeAction, NodeId, TraceMode};

/// The longest simulated time a run may take unless its builder says otherwise.
pub const TIME_LIMIT_DEFAULT: Duration = Duration::from_secs(3600);

/// How long teardown lets the executor run after killing every node, so it drops their tasks.
const TEARDOWN_SETTLE: Duration = Duration::from_millis(1);

/// The program a node runs at every boot.
pub type Program = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// One node of a simulation.
#[derive(Clone)]
pub struct NodeConfig {
    name: String,
    clock_skew: Duration,
    clock_behind: bool,
    program: Option<Program>,
}

impl fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeConfig")
            .field("name", &self.name)
            .field("clock_skew", &self.skew_ns())
            .field("program", &self.program.is_some())
            .finish()
    }
}

impl NodeConfig {
    /// A node with no program and an exact clock.
    pub fn new(name: impl Into<String>) -> NodeConfig {
        NodeConfig { name: name.into(), clock_skew: Duration::ZERO, clock_behind: false, program: None }
    }

    /// The node's wall clock runs `skew` ahead of true time.
    pub fn clock_ahead(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self.clock_behind = false;
        self
    }

    /// The node's wall clock runs `skew` behind true time.
    pub fn clock_behind(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self.clock_behind = true;
        self
    }

    /// The program the node runs at every boot (first start and each restart).
    pub fn program<F, Fut>(mut self, program: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.program = Some(Arc::new(move || Box::pin(program())));
        self
    }

    fn skew_ns(&self) -> i64 {
        let ns = i64::try_from(self.clock_skew.as_nanos()).unwrap_or(i64::MAX);
        if self.clock_behind {
            -ns
        } else {
            ns
        }
    }
}

/// Builds a [`Sim`].
#[derive(Clone, Debug)]
pub struct SimBuilder {
    seed: Seed,
    nodes: Vec<NodeConfig>,
    net: NetConfig,
    disk: DiskConfig,
    faults: FaultPlan,
    trace_mode: TraceMode,
    time_limit: Duration,
    options: RunOptions,
    mirror_to_madsim: bool,
}

/// A configured simulation, ready to run once.
#[derive(Clone, Debug)]
pub struct Sim {
    config: SimBuilder,
}

impl Sim {
    /// Starts building a simulation: seed 0, no nodes, a reliable network, an SSD-like disk, no faults.
    pub fn builder() -> SimBuilder {
        SimBuilder {
            seed: Seed(0),
            nodes: Vec::new(),
            net: NetConfig::default(),
            disk: DiskConfig::default(),
            faults: FaultPlan::none(),
            trace_mode: TraceMode::Full,
            time_limit: TIME_LIMIT_DEFAULT,
            options: RunOptions::none(),
            mirror_to_madsim: true,
        }
    }
}

impl SimBuilder {
    /// The seed.
    pub fn seed(mut self, seed: Seed) -> Self {
        self.seed = seed;
        self
    }

    /// Adds a node. Nodes are numbered in the order they are added, from 0.
    pub fn node(mut self, node: NodeConfig) -> Self {
        self.nodes.push(node);
        self
    }

    /// Adds `n` idle nodes named `n0`, `n1`, ….
    pub fn nodes(mut self, n: u32) -> Self {
        for _ in 0..n {
            let i = self.nodes.len();
            self.nodes.push(NodeConfig::new(format!("n{i}")));
        }
        self
    }

    /// The network.
    pub fn network(mut self, net: NetConfig) -> Self {
        self.net = net;
        self
    }

    /// Every node's disk.
    pub fn disk(mut self, disk: DiskConfig) -> Self {
        self.disk = disk;
        self
    }

    /// The faults to inject.
    pub fn faults(mut self, faults: FaultPlan) -> Self {
        self.faults = faults;
        self
    }

    /// Keep the full event list, or only the hash and a tail.
    pub fn trace_mode(mut self, mode: TraceMode) -> Self {
        self.trace_mode = mode;
        self
    }

    /// Fail the run if simulated time passes `limit`.
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = limit;
        self
    }

    /// The options the scenario derived from the seed, repeated in a failure's report.
    pub fn options(mut self, options: RunOptions) -> Self {
        self.options = options;
        self
    }

    /// Whether partitions and clogs also cut madsim's own network (`madsim::net`), as they do by default.
    ///
    /// Only the negative controls of tests turn this off, to show that without the mirroring madsim's
    /// traffic would ignore the faults. Crashes close madsim endpoints either way (madsim's kill does).
    pub fn mirror_faults_to_madsim_net(mut self, mirror: bool) -> Self {
        self.mirror_to_madsim = mirror;
        self
    }

    /// Validates the configuration, naming whatever is wrong.
    pub fn build(self) -> Result<Sim, PlanError> {
        let count = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
        if count > crate::trace::MAX_NODES {
            return Err(PlanError(format!(
                "{count} nodes do not fit the network's 10.0.0.0/8: at most {}",
                crate::trace::MAX_NODES
            )));
        }
        self.faults.validate(count)?;
        self.disk.validate()?;
        self.net.validate()?;
        let mut names = std::collections::BTreeSet::new();
        for n in &self.nodes {
            if !names.insert(n.name.clone()) {
                return Err(PlanError(format!("two nodes are named {:?}", n.name)));
            }
        }
        Ok(Sim { config: self })
    }
}

/// A node's lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Executing.
    Running,
    /// Stopped; resumes where it was.
    Paused,
    /// Process crashed; its disk holds everything written.
    Crashed,
    /// Power cut; its disk holds what was synced (and what the crash mode kept).
    PoweredOff,
}

/// A world operation that does not fit the world: a node that does not exist, or a transition that is not
/// allowed from the node's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimError(pub String);

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SimError {}

pub(crate) struct WorldState {
    pub(crate) madsim_ids: Vec<madsim::task::NodeId>,
    states: Vec<NodeState>,
    /// The hidden node that runs fault drivers and delayed restarts, so teardown can kill them.
    faults_node: Option<madsim::runtime::NodeHandle>,
    faults_stopped: bool,
    restart_after_power_cut: Option<Duration>,
}

impl WorldState {
    pub(crate) fn new(nodes: usize, restart_after_power_cut: Option<Duration>) -> WorldState {
        WorldState {
            madsim_ids: Vec::with_capacity(nodes),
            states: vec![NodeState::Running; nodes],
            faults_node: None,
            faults_stopped: false,
            restart_after_power_cut,
        }
    }
}

/// The scenario's handle on the world: nodes, faults, time. It runs on the controller, which is not a node:
/// it is never faulted and has no disk or network address.
#[derive(Clone, Debug)]
pub struct World {
    node_count: u32,
}

fn madsim_handle() -> madsim::runtime::Handle {
    madsim::runtime::Handle::current()
}

impl World {
    fn check(&self, node: NodeId) -> Result<usize, SimError> {
        if node.0 >= self.node_count {
            return Err(SimError(node_out_of_range(node, self.node_count)));
        }
        Ok(node.0 as usize)
    }

    /// The IP address of `node` on madsim's network: [`crate::node_ip`]. It keeps it across restarts.
    pub fn ip(&self, node: NodeId) -> Result<std::net::IpAddr, SimError> {
        self.check(node)?;
        Ok(crate::trace::node_ip(node))
    }

    /// How many nodes there are.
    pub fn node_count(&self) -> u32 {
        self.node_count
    }

    /// Every node, in order.
    pub fn nodes(&self) -> Vec<NodeId> {
        (0..self.node_count).map(NodeId).collect()
    }

    /// The state of `node`.
    pub fn state(&self, node: NodeId) -> Result<NodeState, SimError> {
        let i = self.check(node)?;
        Ok(context::current().world.borrow().states[i])
    }

    /// Runs `future` as a task on `node`. It dies with the node's incarnation.
    pub fn spawn_on<F>(
        &self,
        node: NodeId,
        future: F,
    ) -> Result<madsim::task::JoinHandle<F::Output>, SimError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let i = self.check(node)?;
        let ctx = context::current();
        let world = ctx.world.borrow();
        match world.states[i] {
            NodeState::Running | NodeState::Paused => {}
            s => return Err(SimError(format!("cannot spawn on {node}: it is {s:?}"))),
        }
        let spawner = madsim_handle().get_node(world.madsim_ids[i]).expect("every node is registered");
        Ok(spawner.spawn(future))
    }

    fn transition(
        &self,
        node: NodeId,
        allowed: &[NodeState],
        to: NodeState,
        verb: &str,
    ) -> Result<(Rc<RunCtx>, madsim::task::NodeId), SimError> {
        let i = self.check(node)?;
        let ctx = context::current();
        let mut world = ctx.world.borrow_mut();
        let from = world.states[i];
        if !allowed.contains(&from) {
            return Err(SimError(format!("cannot {verb} {node}: it is {from:?}")));
        }
        world.states[i] = to;
        let id = world.madsim_ids[i];
        drop(world);
        Ok((ctx, id))
    }

    /// Crashes `node`'s process: its tasks and memory are gone; its disk keeps every write, synced or not.
    pub fn crash(&self, node: NodeId) -> Result<(), SimError> {
        let (ctx, id) =
            self.transition(node, &[NodeState::Running, NodeState::Paused], NodeState::Crashed, "crash")?;
        ctx.count_fault(FaultKind::Crash);
        ctx.record(Some(node), EventKind::Node(NodeAction::Crash));
        net::set_down(&ctx, node, true);
        disk::process_crashed(&mut ctx.disks.borrow_mut(), node);
        madsim_handle().kill(id);
        Ok(())
    }

    /// Cuts `node`'s power: its tasks and memory are gone, and so are its disk's unsynced writes (kept in part
    /// or torn, by the disk's crash modes).
    pub fn power_cut(&self, node: NodeId) -> Result<(), SimError> {
        let (ctx, id) = self.transition(
            node,
            &[NodeState::Running, NodeState::Paused],
            NodeState::PoweredOff,
            "cut the power of",
        )?;
        ctx.count_fault(FaultKind::PowerCut);
        ctx.record(Some(node), EventKind::Node(NodeAction::PowerCut));
        net::set_down(&ctx, node, true);
        disk::power_off(&ctx, &mut ctx.disks.borrow_mut(), node);
        madsim_handle().kill(id);
        Ok(())
    }

    /// Boots a crashed or powered-off node: its program runs again on the disk it left.
    pub fn restart(&self, node: NodeId) -> Result<(), SimError> {
        let (ctx, id) = self.transition(
            node,
            &[NodeState::Crashed, NodeState::PoweredOff],
            NodeState::Running,
            "restart",
        )?;
        ctx.count_fault(FaultKind::Restart);
        ctx.record(Some(node), EventKind::Node(NodeAction::Restart));
        {
            let mut set = ctx.disks.borrow_mut();
            disk::take_unhandled_cuts(&mut set);
            disk::power_on(&mut set, node);
        }
        net::set_down(&ctx, node, false);
        madsim_handle().restart(id);
        Ok(())
    }

    /// Stops `node`'s execution. Messages to it queue up; its timers wait.
    pub fn pause(&self, node: NodeId) -> Result<(), SimError> {
        let (ctx, id) = self.transition(node, &[NodeState::Running], NodeState::Paused, "pause")?;
        ctx.count_fault(FaultKind::Pause);
        ctx.record(Some(node), EventKind::Node(NodeAction::Pause));
        madsim_handle().pause(id);
        Ok(())
    }

    /// Lets a paused node continue.
    pub fn resume(&self, node: NodeId) -> Result<(), SimError> {
        let (ctx, id) = self.transition(node, &[NodeState::Paused], NodeState::Running, "resume")?;
        ctx.count_fault(FaultKind::Resume);
        ctx.record(Some(node), EventKind::Node(NodeAction::Resume));
        madsim_handle().resume(id);
        Ok(())
    }

    /// Cuts the links from every node of `from` to every node of `to` (and back, for [`Direction::Both`]),
    /// on dosim's fabric and on madsim's network alike (see [`crate::net`] for how each treats a cut link).
    pub fn partition(&self, from: &[NodeId], to: &[NodeId], direction: Direction) -> Result<(), SimError> {
        for n in from.iter().chain(to) {
            self.check(*n)?;
        }
        net::partition(&context::current(), from, to, direction);
        Ok(())
    }

    /// Heals every partition (nothing happens, and nothing is counted, if there is none), on both networks.
    pub fn heal(&self) {
        net::heal(&context::current());
    }

    /// Holds every message to or from `node` until [`World::unclog_node`]. On madsim's network the node is
    /// clogged too (madsim drops its datagrams and refuses its new connections meanwhile).
    pub fn clog_node(&self, node: NodeId) -> Result<(), SimError> {
        self.check(node)?;
        net::clog(&context::current(), Some(node), None);
        Ok(())
    }

    /// Releases a clogged node and its held messages.
    pub fn unclog_node(&self, node: NodeId) -> Result<(), SimError> {
        self.check(node)?;
        net::unclog(&context::current(), Some(node), None);
        Ok(())
    }

    /// Holds every message from `from` to `to` until [`World::unclog_link`]; likewise on madsim's network.
    pub fn clog_link(&self, from: NodeId, to: NodeId) -> Result<(), SimError> {
        self.check(from)?;
        self.check(to)?;
        net::clog(&context::current(), None, Some((from, to)));
        Ok(())
    }

    /// Releases a clogged link and its held messages.
    pub fn unclog_link(&self, from: NodeId, to: NodeId) -> Result<(), SimError> {
        self.check(from)?;
        self.check(to)?;
        net::unclog(&context::current(), None, Some((from, to)));
        Ok(())
    }

    /// True if nothing blocks or clogs the link from `from` to `to`.
    pub fn link_is_open(&self, from: NodeId, to: NodeId) -> Result<bool, SimError> {
        self.check(from)?;
        self.check(to)?;
        Ok(net::link_is_open(&context::current(), from, to))
    }

    /// Applies one fault action.
    pub fn apply(&self, fault: &Fault) -> Result<(), SimError> {
        match fault {
            Fault::Crash(n) => self.crash(*n),
            Fault::PowerCut(n) => self.power_cut(*n),
            Fault::Restart(n) => self.restart(*n),
            Fault::Pause(n) => self.pause(*n),
            Fault::Resume(n) => self.resume(*n),
            Fault::Partition { from, to, direction } => self.partition(from, to, *direction),
            Fault::Heal => {
                self.heal();
                Ok(())
            }
            Fault::ClogNode(n) => self.clog_node(*n),
            Fault::UnclogNode(n) => self.unclog_node(*n),
            Fault::ClogLink(a, b) => self.clog_link(*a, *b),
            Fault::UnclogLink(a, b) => self.unclog_link(*a, *b),
        }
    }

    /// Ends the safety phase: random faults stop, disk faults are disarmed and their rates drop to zero, the
    /// network stops losing, duplicating and reordering messages (messages already on the wire arrive as
    /// they were sent), partitions heal, clogs lift, paused nodes resume and downed nodes restart. What the
    /// scenario checks afterwards is liveness.
    pub fn stop_faults(&self) {
        let ctx = context::current();
        ctx.world.borrow_mut().faults_stopped = true;
        ctx.disks.borrow_mut().quiesce();
        {
            let mut net = ctx.net.borrow_mut();
            net.config.loss = Ratio::NEVER;
            net.config.duplicate = Ratio::NEVER;
            net.config.reorder = Ratio::NEVER;
        }
        ctx.record(None, EventKind::Note { key: "phase".into(), value: "liveness".into() });
        drop(ctx);
        self.heal();
        net::unclog(&context::current(), None, None);
        for n in self.nodes() {
            let r = match self.state(n).expect("node in range") {
                NodeState::Running => Ok(()),
                NodeState::Paused => self.resume(n),
                NodeState::Crashed | NodeState::PoweredOff => self.restart(n),
            };
            r.expect("every downed state has a way back up");
        }
    }

    /// Sleeps on the simulated clock.
    pub async fn sleep(&self, d: Duration) {
        madsim::time::sleep(d).await;
    }

    /// Simulated time since the start of the run.
    pub fn now(&self) -> Duration {
        context::current().now()
    }
}

/// Called after every disk operation: a power cut armed at a disk operation takes the node down at once.
pub(crate) fn handle_power_cuts(ctx: &RunCtx) {
    if ctx.fixed_node.is_some() {
        // A LocalWorld has no madsim nodes: its owner sees the cut through `is_powered_off`.
        return;
    }
    let cuts = disk::take_unhandled_cuts(&mut ctx.disks.borrow_mut());
    for node in cuts {
        let mut world = ctx.world.borrow_mut();
        let i = node.0 as usize;
        if !matches!(world.states[i], NodeState::Running | NodeState::Paused) {
            continue;
        }
        world.states[i] = NodeState::PoweredOff;
        let id = world.madsim_ids[i];
        let faults_node = world.faults_node.clone().expect("the faults node exists once the run started");
        let restart = world.restart_after_power_cut;
        drop(world);
        // The disk counted this power cut when it fired.
        ctx.record(Some(node), EventKind::Node(NodeAction::PowerCut));
        net::set_down(ctx, node, true);
        let handle = madsim_handle();
        handle.kill(id);
        if let Some(after) = restart {
            // Detached on purpose: the restart is part of the fault plan and runs on the faults node, after the
            // kill that scheduled it.
            drop(faults_node.spawn(async move {
                madsim::time::sleep(after).await;
                let world = World { node_count: context::current().nodes.len() as u32 };
                if world.state(node) == Ok(NodeState::PoweredOff) {
                    world.restart(node).expect("a powered-off node restarts");
                }
            }));
        }
    }
}

async fn run_scripted(world: World, plan: FaultPlan) {
    let mut scripted = plan.scripted;
    scripted.sort_by_key(|s| s.at);
    for s in scripted {
        let now = world.now();
        if s.at > now {
            madsim::time::sleep(s.at - now).await;
        }
        if let Err(e) = world.apply(&s.fault) {
            crate::note("fault skipped", e);
        }
    }
}

async fn run_random(world: World, rf: RandomFaults) {
    let kinds: Vec<FaultKind> = rf.kinds.iter().copied().collect();
    loop {
        madsim::time::sleep(crate::random(Purpose::Faults, |r| r.exponential(rf.mean_interval))).await;
        if context::current().world.borrow().faults_stopped {
            return;
        }
        let kind =
            *crate::random(Purpose::Faults, |r| r.pick(&kinds)).expect("kinds are validated non-empty");
        let running: Vec<NodeId> = world
            .nodes()
            .into_iter()
            .filter(|n| !rf.spared.contains(n) && world.state(*n) == Ok(NodeState::Running))
            .collect();
        let Some(node) = crate::random(Purpose::Faults, |r| r.pick(&running).copied()) else { continue };
        let outage = crate::random(Purpose::Faults, |r| {
            r.duration_between(Duration::from_millis(1), rf.max_outage.max(Duration::from_millis(1)))
        });
        let undo = match kind {
            FaultKind::Crash => {
                world.crash(node).expect("running node crashes");
                Fault::Restart(node)
            }
            FaultKind::PowerCut => {
                world.power_cut(node).expect("running node loses power");
                Fault::Restart(node)
            }
            FaultKind::Pause => {
                world.pause(node).expect("running node pauses");
                Fault::Resume(node)
            }
            FaultKind::Clog => {
                world.clog_node(node).expect("node in range");
                Fault::UnclogNode(node)
            }
            FaultKind::Partition => {
                let others: Vec<NodeId> = world.nodes().into_iter().filter(|n| *n != node).collect();
                if others.is_empty() {
                    continue;
                }
                let direction = if crate::random(Purpose::Faults, |r| r.chance(crate::Ratio::new(1, 2))) {
                    Direction::Both
                } else {
                    Direction::OneWay
                };
                world.partition(&[node], &others, direction).expect("nodes in range");
                Fault::Heal
            }
            other => unreachable!("{other} is not a random fault kind (validated)"),
        };
        let w = world.clone();
        // Detached on purpose: the fault is undone after its outage while the driver draws the next one.
        drop(madsim::task::spawn(async move {
            madsim::time::sleep(outage).await;
            if context::current().world.borrow().faults_stopped {
                return;
            }
            // The node may have been restarted (or downed again) meanwhile; skip what no longer applies.
            let _ = w.apply(&undo);
        }));
    }
}

thread_local! {
    static PERTURB_NEXT_RUN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes the next [`Sim::run`] on this thread perturb what must not matter (std's hash keys), so that a
/// dependence on them shows as a divergence. Used by the determinism check.
pub(crate) fn perturb_next_run() {
    PERTURB_NEXT_RUN.with(|p| p.set(true));
}

impl Sim {
    /// Runs the simulation on a fresh thread and returns its report, or its failure.
    ///
    /// `main` runs on the controller with a [`World`] handle. The run passes if `main` returns `Ok` and nothing
    /// panicked. A panic anywhere in the simulation (a node's task, a broken invariant) fails the run with the
    /// seed; a deadlock or a run past the time limit fails it too, never hangs it.
    pub fn run<F, Fut>(self, main: F) -> Result<RunReport, RunFailure>
    where
        F: FnOnce(World) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), Failure>> + 'static,
    {
        let perturb = PERTURB_NEXT_RUN.with(|p| p.replace(false));
        let seed = self.config.seed;
        #[allow(clippy::disallowed_methods)] // the harness itself: each run gets a fresh thread
        let thread = std::thread::Builder::new()
            .name(format!("dosim-run-{seed}"))
            .spawn(move || self.run_here(main, perturb))
            .expect("spawn a simulation thread");
        match thread.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    fn run_here<F, Fut>(self, main: F, perturb: bool) -> Result<RunReport, RunFailure>
    where
        F: FnOnce(World) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), Failure>> + 'static,
    {
        let _lock = context::lock_runs();
        if perturb {
            // Take this thread's std hash keys from the OS before madsim can seed them.
            let _ = std::collections::hash_map::RandomState::new();
        }
        // Wall time of the run, for the report. Outside block_on, madsim leaves std's clock real.
        let wall = std::time::Instant::now();
        let c = self.config;
        let seed = c.seed;
        let infos: Vec<NodeInfo> = c.nodes.iter().map(|n| NodeInfo { clock_skew_ns: n.skew_ns() }).collect();
        let ctx = Rc::new(RunCtx::new(seed, c.trace_mode, infos, c.disk.clone(), None));
        *ctx.world.borrow_mut() = WorldState::new(c.nodes.len(), c.faults.restart_after_power_cut);
        {
            let mut net = ctx.net.borrow_mut();
            net.config = c.net.clone();
            net.mirror_to_madsim = c.mirror_to_madsim;
        }
        let installed = context::install(ctx.clone());
        sqlite::reset_prng(seed);

        let mut rt = madsim::runtime::Runtime::with_seed_and_config(seed.0, madsim::Config::default());
        rt.set_time_limit(c.time_limit);
        let nodes = c.nodes.clone();
        let plan = c.faults.clone();
        let node_count = nodes.len() as u32;
        let body = async move {
            let handle = madsim_handle();
            let ctx = context::current();
            let faults_node = handle.create_node().name("dosim-faults").build();
            ctx.world.borrow_mut().faults_node = Some(faults_node.clone());
            let wire = handle.create_node().name("dosim-wire").build();
            ctx.net.borrow_mut().wire = Some(wire.clone());
            for (i, n) in nodes.into_iter().enumerate() {
                let node = NodeId(i as u32);
                let mut b = handle.create_node().name(n.name.clone()).ip(crate::trace::node_ip(node));
                if let Some(p) = n.program.clone() {
                    b = b.init(move || p());
                }
                // The program is spawned by build() but first polled only after this task yields, so the id
                // is registered before any of the node's events.
                let nh = b.build();
                ctx.madsim_nodes.borrow_mut().insert(nh.id(), node);
                ctx.world.borrow_mut().madsim_ids.push(nh.id());
                ctx.record(Some(node), EventKind::Node(NodeAction::Start));
            }
            for d in &plan.disk_at {
                ctx.disks.borrow_mut().arm(d.node, d.op, d.kind);
            }
            drop(ctx);
            let world = World { node_count };
            // Detached on purpose: the fault drivers run on the faults node for the whole run, which ends them.
            if !plan.scripted.is_empty() {
                drop(faults_node.spawn(run_scripted(world.clone(), plan.clone())));
            }
            if let Some(rf) = plan.random.clone() {
                drop(faults_node.spawn(run_random(world.clone(), rf))); // Likewise detached.
            }
            let result = main(world).await;
            let ctx = context::current();
            ctx.sim_end.set(Some(ctx.now()));
            // Teardown, unrecorded: kill every node so madsim wakes and drops their tasks. madsim does not free
            // tasks still pending when its runtime drops, and each would keep this run's state alive.
            ctx.tearing_down.set(true);
            let mut ids: Vec<madsim::task::NodeId> = ctx.world.borrow().madsim_ids.clone();
            ids.extend([faults_node.id(), wire.id()]);
            drop(ctx);
            for id in ids {
                handle.kill(id);
            }
            madsim::time::sleep(TEARDOWN_SETTLE).await;
            result
        };
        let subscriber = crate::log::subscriber();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            tracing::subscriber::with_default(subscriber, || rt.block_on(body))
        }));
        let sim_time = ctx
            .sim_end
            .get()
            .unwrap_or_else(|| ctx.trace.borrow().events().last().map(|e| e.at).unwrap_or_default());
        // Dropping the runtime drops the tasks of dead nodes; they may still look at the run.
        let dropped = std::panic::catch_unwind(AssertUnwindSafe(|| drop(rt)));
        drop(dropped);
        let wall_time = wall.elapsed();
        drop(installed);
        let ctx = Rc::try_unwrap(ctx).unwrap_or_else(|_| panic!("the run context outlives its run"));
        let trace = ctx.trace.into_inner();
        let faults = ctx.faults.into_inner();
        let deferred = ctx.deferred_panic.into_inner();
        let mut evidence = crate::report::Evidence::default();
        let kind = match (outcome, deferred) {
            (Err(payload), _) => classify_panic(&*payload, c.time_limit),
            (Ok(_), Some(msg)) => FailureKind::of_panic(msg, c.time_limit),
            (Ok(Ok(())), None) => {
                return Ok(RunReport {
                    seed,
                    trace,
                    faults,
                    sometimes: ctx.sometimes.into_inner(),
                    sim_time,
                    wall_time,
                })
            }
            (Ok(Err(f)), None) => {
                evidence = f.evidence().clone();
                f.into_kind()
            }
        };
        Err(RunFailure { seed, kind, options: c.options, trace, faults, sim_time, wall_time, evidence })
    }
}

fn classify_panic(payload: &(dyn std::any::Any + Send), limit: Duration) -> FailureKind {
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(non-string panic payload)".to_string());
    FailureKind::of_panic(msg, limit)
}
