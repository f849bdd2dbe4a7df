//! Coverage-guided exploration of an [`ObjectTest`], on the stable toolchain: a fuzzer's loop over run
//! plans instead of bytes.
//!
//! The coverage of a run is a set of [`CoverageKey`]s read from its report: the `sometimes` points it reached
//! (with how often, in power-of-two buckets), each kind of trace event paired with the state of the node it
//! happened on, the *shapes* of the runtime's log lines (numbers, hex ids and quoted values replaced by
//! placeholders, per target) with how often each was logged, the pairs of shapes logged one after the other
//! on a node (a fuzzer's edges), and each kind of fault paired with the phase it hit (the node's state, and
//! whether its disk held unsynced writes). [`explore`] keeps a corpus of the runs (seed and [`RunPlan`]) that
//! added keys no earlier run had; each iteration either runs a fresh seed, or takes a corpus entry and
//! mutates its plan (adds, removes, duplicates or changes an operation, shifts think times, adds, removes or
//! shifts a fault drawn as [`FaultMix::draw`] draws them, or keeps the plan under another seed), and keeps
//! the result if it adds coverage. It stops at the first failing run, or when its [`Budget`] is used.
//!
//! Two of the mutations aim at the bugs of objects rather than at coverage: `collide` moves another client's
//! nearest operation onto an operation's object and time (two calls overlap), and `fault-after-op` puts a
//! fault of the test's mix just after an operation's planned time (while its write may be in flight).
//!
//! Every choice comes from [`SimRng`] streams of the explorer's own seed, so under a run budget an
//! exploration is deterministic: the same seed gives the same corpus and the same first failure.
//! [`Strategy::Random`] is the baseline the guided loop is measured against: fresh seeds only, which is
//! what `sim_test!` and a campaign do.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use dosim_sim::{EventKind, NodeAction, NodeId, RunFailure, RunReport, Seed, SimRng, Trace};

use crate::faults::{Action, FaultMix, TimedFault, SUPERSEDE_TIMELINE};
use crate::testing::{Driver, ObjectTest, PlannedOp, RunPlan, THINK_TICK_MS};

/// How much an exploration may spend: a number of runs, a wall-clock time, or both (whichever is used up
/// first). An exploration with neither runs until it finds a failure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    /// At most this many runs.
    pub runs: Option<u64>,
    /// At most this much wall-clock time (checked before each run).
    pub time: Option<Duration>,
}

impl Budget {
    /// At most `n` runs.
    pub fn runs(n: u64) -> Budget {
        Budget { runs: Some(n), time: None }
    }

    /// At most `d` of wall-clock time.
    pub fn time(d: Duration) -> Budget {
        Budget { runs: None, time: Some(d) }
    }

    /// Whether `runs` runs over `elapsed` use it up.
    fn used(&self, runs: u64, elapsed: Duration) -> bool {
        self.runs.is_some_and(|n| runs >= n) || self.time.is_some_and(|t| elapsed >= t)
    }
}

/// How an exploration picks its next run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Strategy {
    /// A fresh seed every run (its own plan): plain random testing, the baseline.
    Random,
    /// Fresh seeds, and mutations of the corpus entries that added coverage.
    Guided,
}

impl Strategy {
    /// Both strategies.
    pub const ALL: [Strategy; 2] = [Strategy::Random, Strategy::Guided];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Random => "random",
            Strategy::Guided => "guided",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The first failing run an exploration found.
#[derive(Clone, Debug)]
pub struct Found<I> {
    /// How many runs it took, this one included.
    pub runs: u64,
    /// The wall-clock time from the start of the exploration to the end of this run.
    pub wall: Duration,
    /// The run's seed.
    pub seed: Seed,
    /// The run's plan: `make(seed).run_plan(plan)` fails again.
    pub plan: RunPlan<I>,
    /// How it failed.
    pub failure: RunFailure,
}

/// One entry of the corpus: a run that added coverage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<I> {
    /// Its seed.
    pub seed: Seed,
    /// Its plan.
    pub plan: RunPlan<I>,
    /// How many keys it added.
    pub new_keys: usize,
}

/// What an exploration did.
#[derive(Clone, Debug)]
pub struct ExploreOutcome<I> {
    /// The first failing run, if one failed within the budget.
    pub first_failure: Option<Found<I>>,
    /// How many runs it made.
    pub runs: u64,
    /// How long it took, in wall-clock time.
    pub wall: Duration,
    /// The runs that added coverage, in the order they ran (with [`Strategy::Random`], they are recorded but
    /// never mutated).
    pub corpus: Vec<Entry<I>>,
    /// How many distinct coverage keys the runs reached.
    pub coverage_keys: usize,
    /// How many runs failed only because their faults never fired (inconclusive, not a bug).
    pub inconclusive: u64,
}

impl<I> ExploreOutcome<I> {
    /// How many entries the corpus holds.
    pub fn corpus_size(&self) -> usize {
        self.corpus.len()
    }
}

/// One element of a run's coverage.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CoverageKey {
    /// A `sometimes` point reached, with how often in a power-of-two bucket (0: once, 1: 2–3, 2: 4–7, …).
    Sometimes(String, u8),
    /// A kind of trace event (with its detail: an action, a drop reason, a disk operation and its file's
    /// shape, a note's key) on a node in a state (`up`, `down`, `paused`; `-` for no node).
    Event(String, &'static str),
    /// A runtime log line's shape under its target, with how often the run logged it (a power-of-two
    /// bucket, as for `sometimes` points).
    Log(String, String, u8),
    /// Two log shapes one after the other on one node (the previous, then this one): the analogue of a
    /// fuzzer's edge coverage, which tells interleavings apart that reach the same lines.
    LogEdge(String, String),
    /// A kind of fault and the phase it hit: the state of the node it hit, and whether its disk held
    /// unsynced writes (`dirty`) or not (`clean`).
    Fault(String, &'static str, &'static str),
}

impl fmt::Display for CoverageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoverageKey::Sometimes(name, bucket) => write!(f, "sometimes {name} ×2^{bucket}"),
            CoverageKey::Event(kind, state) => write!(f, "event {kind} on {state}"),
            CoverageKey::Log(target, shape, bucket) => write!(f, "log {target}: {shape} ×2^{bucket}"),
            CoverageKey::LogEdge(before, after) => write!(f, "log edge {before} → {after}"),
            CoverageKey::Fault(kind, state, disk) => write!(f, "fault {kind} on {state}/{disk}"),
        }
    }
}

/// The shape of a log line: quoted values become `"…"`, hex ids (8 or more hex digits, at least one of
/// them a digit) become `#`, other numbers `N`, so that lines that differ only in values share a shape.
///
/// ```text
/// object 3fa9c0de12 evicted after 250ms, key "a b"   →   object # evicted after Nms, key "…"
/// ```
pub fn log_shape(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            // A quoted value: up to the matching quote (a backslash escapes), or the line's end.
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            out.push(c);
            out.push('…');
            out.push(c);
            i = j + 1;
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' {
            // A word: a hex id, a number, or text (kept; a number inside it, as in `n12`, becomes `N`).
            let mut j = i;
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            let word = &chars[i..j];
            let hex = word.len() >= 8
                && word.iter().all(|c| c.is_ascii_hexdigit())
                && word.iter().any(|c| c.is_ascii_digit());
            if hex {
                out.push('#');
            } else {
                let mut in_number = false;
                for &w in word {
                    if w.is_ascii_digit() {
                        if !in_number {
                            out.push('N');
                        }
                        in_number = true;
                    } else {
                        // The dot of a decimal stays inside the word's number: `1.5s` is `N.Ns`.
                        in_number = false;
                        out.push(w);
                    }
                }
            }
            i = j;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// The state of a node as the trace tells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeState {
    Up,
    Down,
    Paused,
}

impl NodeState {
    fn name(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Down => "down",
            NodeState::Paused => "paused",
        }
    }
}

/// The first node a fault's text names (`n3` in `{n3} -> {n0}`, `eviction on n3`).
fn node_named(text: &str) -> Option<NodeId> {
    let bytes = text.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        let starts_word = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        if *b == b'n' && starts_word {
            let digits: String = text[i + 1..].chars().take_while(char::is_ascii_digit).collect();
            if !digits.is_empty() {
                return digits.parse().ok().map(NodeId);
            }
        }
    }
    None
}

/// The coverage of a run: its `sometimes` points and its trace (see [`CoverageKey`]).
pub fn coverage_of(sometimes: &BTreeMap<String, u64>, trace: &Trace) -> BTreeSet<CoverageKey> {
    let mut keys = BTreeSet::new();
    for (name, &n) in sometimes {
        if n > 0 {
            keys.insert(CoverageKey::Sometimes(name.clone(), bucket(n)));
        }
    }
    let mut states: BTreeMap<NodeId, NodeState> = BTreeMap::new();
    let mut dirty: BTreeSet<NodeId> = BTreeSet::new();
    let state_of = |states: &BTreeMap<NodeId, NodeState>, n: Option<NodeId>| match n {
        Some(n) => states.get(&n).copied().unwrap_or(NodeState::Up).name(),
        None => "-",
    };
    let fault = |keys: &mut BTreeSet<CoverageKey>,
                 states: &BTreeMap<NodeId, NodeState>,
                 dirty: &BTreeSet<NodeId>,
                 kind: String,
                 node: Option<NodeId>| {
        let disk = if node.is_some_and(|n| dirty.contains(&n)) { "dirty" } else { "clean" };
        keys.insert(CoverageKey::Fault(kind, state_of(states, node), disk));
    };
    let mut logs: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut last_log: BTreeMap<u32, String> = BTreeMap::new();
    for e in trace.events() {
        let here = state_of(&states, e.node);
        let (label, state) = match &e.kind {
            EventKind::Node(a) => {
                let before = here;
                if let Some(n) = e.node {
                    if matches!(a, NodeAction::Crash | NodeAction::PowerCut | NodeAction::Pause) {
                        fault(&mut keys, &states, &dirty, format!("{a:?}"), Some(n));
                    }
                    let next = match a {
                        NodeAction::Start | NodeAction::Restart | NodeAction::Resume => NodeState::Up,
                        NodeAction::Crash | NodeAction::PowerCut => NodeState::Down,
                        NodeAction::Pause => NodeState::Paused,
                    };
                    if matches!(a, NodeAction::PowerCut) {
                        dirty.remove(&n);
                    }
                    states.insert(n, next);
                }
                (format!("node {a:?}"), before)
            }
            EventKind::Send { to, .. } => ("send".to_string(), state_of(&states, Some(to.node))),
            EventKind::Duplicate { .. } => ("duplicate".to_string(), here),
            EventKind::Deliver { to, .. } => ("deliver".to_string(), state_of(&states, Some(to.node))),
            EventKind::Drop { reason, .. } => (format!("drop {reason:?}"), here),
            EventKind::Hold { .. } => ("hold".to_string(), here),
            EventKind::Fault { kind, detail } => {
                fault(&mut keys, &states, &dirty, kind.name().to_string(), node_named(detail));
                (format!("fault {}", kind.name()), here)
            }
            EventKind::Disk { op, path, ok, .. } => {
                if let Some(n) = e.node {
                    match op {
                        dosim_sim::DiskOp::Write | dosim_sim::DiskOp::Truncate if *ok => {
                            dirty.insert(n);
                        }
                        dosim_sim::DiskOp::Sync if *ok => {
                            dirty.remove(&n);
                        }
                        _ => {}
                    }
                }
                let failed = if *ok { "" } else { " failed" };
                (format!("disk {op:?}{failed} {}", log_shape(path)), here)
            }
            EventKind::DiskCrash(o) => {
                let what = match (o.torn > 0, o.dropped > 0) {
                    (true, _) => "torn",
                    (false, true) => "dropped",
                    (false, false) => "kept",
                };
                (format!("disk-crash {what}"), here)
            }
            EventKind::Note { key, value } => {
                if key == "fault" {
                    let kind = value.split(' ').next().unwrap_or_default().to_string();
                    fault(&mut keys, &states, &dirty, kind, node_named(value).or(e.node));
                }
                (format!("note {key}"), here)
            }
            EventKind::Log { target, text } => {
                let shape = log_shape(text);
                *logs.entry((target.clone(), shape.clone())).or_default() += 1;
                let node = e.node.map_or(u32::MAX, |n| n.0);
                if let Some(before) = last_log.insert(node, shape.clone()) {
                    keys.insert(CoverageKey::LogEdge(before, shape));
                }
                (format!("log {target}"), here)
            }
        };
        keys.insert(CoverageKey::Event(label, state));
    }
    for ((target, shape), n) in logs {
        keys.insert(CoverageKey::Log(target, shape, bucket(n)));
    }
    keys
}

/// The power-of-two bucket of a count of at least 1: 0 for 1, 1 for 2–3, 2 for 4–7, …
fn bucket(n: u64) -> u8 {
    (63 - n.max(1).leading_zeros()) as u8
}

/// The coverage of a passing run.
pub fn coverage_of_report(report: &RunReport) -> BTreeSet<CoverageKey> {
    coverage_of(&report.sometimes, &report.trace)
}

/// Whether a failure says only that the scenario's faults never fired in the run (its `faults fired`
/// check): the run proves nothing, but it is not a bug.
pub fn is_inconclusive(failure: &RunFailure) -> bool {
    let text = failure.kind.to_string();
    text.contains(" faults fired: scenario ") && text.contains("so the run proves nothing")
}

/// Explores `make`'s test (`make(seed)` builds it under a seed) for at most `budget`, with `strategy`,
/// every choice drawn from `seed`'s streams; stops at the first failing run (see the module docs).
pub fn explore<D: Driver>(
    make: impl Fn(Seed) -> ObjectTest<D>,
    budget: Budget,
    strategy: Strategy,
    seed: Seed,
) -> ExploreOutcome<D::Input> {
    let start = Instant::now();
    let mut pick = SimRng::substream(seed, "explore");
    let mut mutate = SimRng::substream(seed, "explore-mutations");
    let mut seen: BTreeSet<CoverageKey> = BTreeSet::new();
    let mut corpus: Vec<Entry<D::Input>> = Vec::new();
    let (mut runs, mut inconclusive) = (0u64, 0u64);
    while !budget.used(runs, start.elapsed()) {
        // One in four guided runs is a fresh seed, and every run until the corpus has an entry.
        let fresh = strategy == Strategy::Random || corpus.is_empty() || pick.below(4) == 0;
        let (run_seed, plan) = if fresh {
            let s = Seed(pick.next_u64());
            (s, make(s).plan())
        } else {
            // Newer entries more often: the smaller of two uniform draws, counted from the end.
            let n = corpus.len() as u64;
            let back = pick.below(n).min(pick.below(n)) as usize;
            let entry = &corpus[corpus.len() - 1 - back];
            let mut s = entry.seed;
            let mut plan = entry.plan.clone();
            let test = make(s);
            for _ in 0..1 + mutate.below(3) {
                if let Some(new_seed) = mutate_plan(&test, &mut plan, &mut mutate) {
                    s = new_seed;
                }
            }
            (s, plan)
        };
        runs += 1;
        match make(run_seed).run_plan(plan.clone()) {
            Ok(report) => {
                let keys = coverage_of_report(&report);
                let before = seen.len();
                seen.extend(keys);
                let new_keys = seen.len() - before;
                if new_keys > 0 {
                    corpus.push(Entry { seed: run_seed, plan, new_keys });
                }
            }
            Err(failure) if is_inconclusive(&failure) => inconclusive += 1,
            Err(failure) => {
                let found = Found { runs, wall: start.elapsed(), seed: run_seed, plan, failure };
                return ExploreOutcome {
                    first_failure: Some(found),
                    runs,
                    wall: start.elapsed(),
                    corpus,
                    coverage_keys: seen.len(),
                    inconclusive,
                };
            }
        }
    }
    ExploreOutcome {
        first_failure: None,
        runs,
        wall: start.elapsed(),
        corpus,
        coverage_keys: seen.len(),
        inconclusive,
    }
}

/// How many mutations [`plan_from_bytes`] applies at most.
pub const BYTES_MUTATIONS_MAX: usize = 64;

/// The seed and plan of a run of `make`'s test that `bytes` decide, for a byte-level fuzzer (`fuzz/`): the
/// first 8 bytes are the seed (little-endian, zero-padded); each following chunk of 8 bytes (at most
/// [`BYTES_MUTATIONS_MAX`]) is one mutation of the seed's plan, drawn as [`explore`] draws its mutations
/// from a stream the chunk seeds. A fuzzer that changes one chunk changes one mutation, and a longer input
/// mutates more.
pub fn plan_from_bytes<D: Driver>(
    make: impl Fn(Seed) -> ObjectTest<D>,
    bytes: &[u8],
) -> (Seed, RunPlan<D::Input>) {
    let word = |chunk: &[u8]| {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        u64::from_le_bytes(b)
    };
    let mut chunks = bytes.chunks(8);
    let mut seed = Seed(chunks.next().map_or(0, word));
    let test = make(seed);
    let mut plan = test.plan();
    for chunk in chunks.take(BYTES_MUTATIONS_MAX) {
        let mut rng = SimRng::substream(Seed(word(chunk)), "fuzz-mutation");
        if let Some(s) = mutate_plan(&test, &mut plan, &mut rng) {
            seed = s;
        }
    }
    (seed, plan)
}

/// The mutations of a plan, in the order [`mutate_plan`] draws among them.
const MUTATIONS: [&str; 12] = [
    "add-op",
    "collide",
    "fault-after-op",
    "remove-op",
    "duplicate-op",
    "change-op",
    "shift-think",
    "add-fault",
    "remove-fault",
    "shift-fault",
    "power-cut-at-disk-op",
    "reseed",
];

/// Applies one mutation, drawn from `rng`, to `plan` (a plan of `test`); returns the new seed if the
/// mutation is a reseed (the plan kept, the seed's latencies and scheduling changed).
fn mutate_plan<D: Driver>(
    test: &ObjectTest<D>,
    plan: &mut RunPlan<D::Input>,
    rng: &mut SimRng,
) -> Option<Seed> {
    let workload = test.workload_of()?;
    let mean_think = workload.duration.as_millis() as u64 / u64::from(workload.ops_per_client.max(1));
    let think = |rng: &mut SimRng| {
        Duration::from_millis(rng.between(0, 2 * (mean_think / THINK_TICK_MS).max(1)) * THINK_TICK_MS)
    };
    let objects = workload.objects.len() as u64;
    let (targets, start, span) = test.fault_targets();
    let mix: &FaultMix = test.fault_mix();
    let timed_kinds: Vec<_> = mix
        .kinds()
        .filter(|k| FaultMix::is_timed(*k) && (targets.cluster.is_some() || !k.needs_cluster()))
        .collect();
    let clients = plan.ops.len() as u64;
    match MUTATIONS[rng.below(MUTATIONS.len() as u64) as usize] {
        "add-op" if clients > 0 => {
            let ops = &mut plan.ops[rng.below(clients) as usize];
            let at = rng.below(ops.len() as u64 + 1) as usize;
            let op = PlannedOp {
                object: rng.below(objects) as usize,
                input: workload.driver.next_op(rng),
                think: think(rng),
            };
            ops.insert(at, op);
        }
        "collide" if clients > 1 => {
            // Two clients call one object at once: client b's operation nearest in planned time to client
            // a's operation moves onto a's object and to a's time (the think times before it add up to it).
            let a = rng.below(clients) as usize;
            let b = (a + 1 + rng.below(clients - 1) as usize) % plan.ops.len();
            if plan.ops[a].is_empty() || plan.ops[b].is_empty() {
                return Some(Seed(rng.next_u64()));
            }
            let i = rng.below(plan.ops[a].len() as u64) as usize;
            let at =
                |ops: &[PlannedOp<D::Input>], k: usize| ops[..=k].iter().map(|o| o.think).sum::<Duration>();
            let target = at(&plan.ops[a], i);
            let object = plan.ops[a][i].object;
            let j = (0..plan.ops[b].len()).min_by_key(|&k| at(&plan.ops[b], k).abs_diff(target)).unwrap_or(0);
            let before = at(&plan.ops[b], j) - plan.ops[b][j].think;
            let op = &mut plan.ops[b][j];
            op.object = object;
            op.think = target.saturating_sub(before);
        }
        "fault-after-op" if clients > 0 && !timed_kinds.is_empty() => {
            // A fault lands just after an operation's planned time: while its write may still be in flight.
            let ops = &plan.ops[rng.below(clients) as usize];
            if ops.is_empty() {
                return Some(Seed(rng.next_u64()));
            }
            let i = rng.below(ops.len() as u64) as usize;
            let planned = start + ops[..=i].iter().map(|o| o.think).sum::<Duration>();
            let at = planned + Duration::from_millis(rng.below(THINK_TICK_MS));
            let kind = timed_kinds[rng.below(timed_kinds.len() as u64) as usize];
            match FaultMix::draw_action(kind, rng, &targets) {
                Some(action) if !matches!(action, Action::Supersede { .. }) => {
                    plan.schedule.timed.push(TimedFault { at, action });
                    if !plan.schedule.kinds.contains(&kind) {
                        plan.schedule.kinds.push(kind);
                        plan.schedule.kinds.sort();
                    }
                }
                _ => return Some(Seed(rng.next_u64())),
            }
        }
        "remove-op" if clients > 0 => {
            let ops = &mut plan.ops[rng.below(clients) as usize];
            if !ops.is_empty() {
                ops.remove(rng.below(ops.len() as u64) as usize);
            }
        }
        "duplicate-op" if clients > 0 => {
            let ops = &mut plan.ops[rng.below(clients) as usize];
            if !ops.is_empty() {
                let at = rng.below(ops.len() as u64) as usize;
                // Right after the original, at once: the same call twice in a burst.
                let copy = PlannedOp { think: Duration::ZERO, ..ops[at].clone() };
                ops.insert(at + 1, copy);
            }
        }
        "change-op" if clients > 0 => {
            let ops = &mut plan.ops[rng.below(clients) as usize];
            if !ops.is_empty() {
                let at = rng.below(ops.len() as u64) as usize;
                ops[at].input = workload.driver.next_op(rng);
                if rng.below(2) == 0 {
                    ops[at].object = rng.below(objects) as usize;
                }
            }
        }
        "shift-think" if clients > 0 => {
            let ops = &mut plan.ops[rng.below(clients) as usize];
            if !ops.is_empty() {
                let at = rng.below(ops.len() as u64) as usize;
                // A burst (no think time) as often as a new think time.
                ops[at].think = if rng.below(2) == 0 { Duration::ZERO } else { think(rng) };
            }
        }
        "add-fault" if !timed_kinds.is_empty() && !span.is_zero() => {
            let kind = timed_kinds[rng.below(timed_kinds.len() as u64) as usize];
            let at = start + Duration::from_millis(rng.below(span.as_millis() as u64));
            if let Some(action) = FaultMix::draw_action(kind, rng, &targets) {
                let overlaps = matches!(action, Action::Supersede { .. })
                    && plan.schedule.timed.iter().any(|t| {
                        matches!(t.action, Action::Supersede { .. })
                            && t.at.abs_diff(at) < SUPERSEDE_TIMELINE.3
                    });
                if !overlaps {
                    plan.schedule.timed.push(TimedFault { at, action });
                    if !plan.schedule.kinds.contains(&kind) {
                        plan.schedule.kinds.push(kind);
                        plan.schedule.kinds.sort();
                    }
                }
            }
        }
        "remove-fault" if !plan.schedule.timed.is_empty() => {
            let at = rng.below(plan.schedule.timed.len() as u64) as usize;
            plan.schedule.timed.remove(at);
        }
        "shift-fault" if !plan.schedule.timed.is_empty() => {
            let at = rng.below(plan.schedule.timed.len() as u64) as usize;
            let t = &mut plan.schedule.timed[at];
            if !matches!(t.action, Action::Supersede { .. }) {
                let by = Duration::from_millis(rng.between(1, 2_000));
                let moved = if rng.below(2) == 0 { t.at.saturating_sub(by) } else { t.at + by };
                t.at = moved.clamp(start, start + span);
            }
        }
        "power-cut-at-disk-op" if mix.has(crate::faults::FaultKind::PowerCutInCommit) => {
            let cuts = &mut plan.schedule.power_cuts_at_disk_ops;
            if !cuts.is_empty() && rng.below(2) == 0 {
                let at = rng.below(cuts.len() as u64) as usize;
                if rng.below(2) == 0 {
                    cuts.remove(at);
                } else {
                    cuts[at].1 = rng.between(50, 3_000);
                }
            } else if !targets.hosts.is_empty() {
                let node = targets.hosts[rng.below(targets.hosts.len() as u64) as usize];
                cuts.push((node, rng.between(50, 3_000)));
            }
        }
        "reseed" => return Some(Seed(rng.next_u64())),
        // The mutation drawn does not apply to this plan: a new seed instead.
        _ => return Some(Seed(rng.next_u64())),
    }
    plan.schedule.timed.sort_by_key(|t| t.at);
    None
}

/// An exploration's outcome without its plans: what a table of many explorations reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExploreSummary {
    /// The first failure: (runs until it, wall-clock time until it, its seed, its message).
    pub found: Option<(u64, Duration, Seed, String)>,
    /// How many runs it made.
    pub runs: u64,
    /// How long it took.
    pub wall: Duration,
    /// How many entries its corpus held.
    pub corpus_size: usize,
    /// How many coverage keys its runs reached.
    pub coverage_keys: usize,
}

impl<I> ExploreOutcome<I> {
    /// The outcome without its plans.
    pub fn summary(&self) -> ExploreSummary {
        ExploreSummary {
            found: self.first_failure.as_ref().map(|f| (f.runs, f.wall, f.seed, f.failure.kind.to_string())),
            runs: self.runs,
            wall: self.wall,
            corpus_size: self.corpus.len(),
            coverage_keys: self.coverage_keys,
        }
    }
}

/// One row of [`measure`]'s table: a planted bug under a strategy, over several explorations.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// The planted bug.
    pub bug: String,
    /// The strategy.
    pub strategy: Strategy,
    /// How many explorations ran.
    pub trials: u64,
    /// How many found the bug within the budget.
    pub found: u64,
    /// The median runs until the first failure (an exploration that found nothing counts as more than
    /// any); `None` if fewer than half found it.
    pub median_runs: Option<u64>,
    /// The median wall-clock time until the first failure, likewise.
    pub median_wall: Option<Duration>,
    /// The mean wall-clock time of one run, over every run of every trial.
    pub mean_run: Duration,
}

/// The median of `values` where `None` (not found) is larger than any value; `None` if the median is.
fn median<T: Ord + Copy>(values: &[Option<T>]) -> Option<T> {
    let mut v: Vec<Option<T>> = values.to_vec();
    // `None` last.
    v.sort_by(|a, b| match (a, b) {
        (Some(a), Some(b)) => a.cmp(b),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    if v.is_empty() {
        return None;
    }
    v[(v.len() - 1) / 2]
}

/// Explores planted bug `bug` (a name of the catalogue or of [`crate::planted::SPARSE_VARIANTS`]; its buggy
/// object, or its correct twin if `twin`) with `strategy` for
/// `trials` explorations (exploration seeds 1 to `trials`), each within `budget`, and sums them up;
/// `None` if there is no such bug. `progress` sees each exploration's summary as it ends.
pub fn measure(
    bug: &str,
    strategy: Strategy,
    trials: u64,
    budget: Budget,
    twin: bool,
    mut progress: impl FnMut(u64, &ExploreSummary),
) -> Option<Measurement> {
    let known = crate::planted::catalogue().iter().any(|b| b.name == bug)
        || crate::planted::SPARSE_VARIANTS.contains(&bug);
    if !known {
        return None;
    }
    let (mut runs, mut walls, mut found) = (Vec::new(), Vec::new(), 0);
    let (mut all_runs, mut all_wall) = (0u64, Duration::ZERO);
    for t in 1..=trials {
        let summary = crate::planted::explore_bug(bug, twin, budget, strategy, Seed(t))?;
        progress(t, &summary);
        all_runs += summary.runs;
        all_wall += summary.wall;
        match &summary.found {
            Some((r, w, _, _)) => {
                found += 1;
                runs.push(Some(*r));
                walls.push(Some(*w));
            }
            None => {
                runs.push(None);
                walls.push(None);
            }
        }
    }
    Some(Measurement {
        bug: bug.to_string(),
        strategy,
        trials,
        found,
        median_runs: median(&runs),
        median_wall: median(&walls),
        mean_run: all_wall.checked_div(all_runs.max(1) as u32).unwrap_or_default(),
    })
}
