//! Shrinking a failing run of an [`ObjectTest`] to a minimal repro, and plan masks: the compact text form of
//! a shrunk plan, relative to the plan its seed draws.
//!
//! [`shrink`] starts from the seed's own plan ([`ObjectTest::plan`]) and keeps a smaller plan only while its
//! run still fails the same check ([`same_check`]): an earlier stop (the plan cut at a time, found by
//! bisection), no fault rates, fewer faults (ddmin over the timed faults and the armed power cuts), fewer
//! clients, fewer operations (ddmin over every client's operations), fewer objects (operations remapped onto
//! fewer objects) and shorter think times, repeated until nothing more goes. Every run is under the same seed
//! and every choice is made in a fixed order, so a failing seed always shrinks to the same result.
//!
//! The result is a [`Mask`], which says what of the seed's plan to keep, and prints as one word:
//!
//! ```text
//! ops:0:0-3,7/1:-/2:4/3:-;faults:2,4;rates:0;objects:1>0;think:100;until:5200
//! ```
//!
//! - `ops:` per client (`/`-separated) `client:list`: which of the client's operations to keep, by index in
//!   the seed's plan; a list is indices and ranges `a-b` (inclusive) separated by commas, `-` (none) or `*`
//!   (all). A client not named keeps all. A dropped operation's think time goes to the next one kept, so
//!   the kept operations stay where they were in time.
//! - `faults:list`: which faults to keep, by index: the timed faults first (in time order), then the power
//!   cuts armed at disk operations. Absent: all.
//! - `rates:0`: no I/O error or network loss, duplication and reordering rates.
//! - `objects:from>to,…`: operations on object `from` go to object `to` (an earlier one), by index into the
//!   workload's objects.
//! - `think:ms`: no think time longer than this.
//! - `until:ms`: nothing after this simulated time: no operation the plan starts later (from the start of
//!   the run, the cluster's startup included), no timed fault later.
//! - `all` (or an empty mask): the whole plan.
//!
//! [`Mask::apply`] turns a mask and the seed's plan into the plan to run; a regression line's `keep=<mask>`
//! reaches [`ObjectTest::run`] through the harness ([`dosim_sim::harness::current_plan_mask`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use dosim_sim::{EventKind, FailureKind, NodeAction, NodeId, Ratio, RunFailure, Seed};

use super::{Action, Driver, ObjectTest, PlannedOp, RunPlan, FINAL_READ_CLIENT, TAKEOVER_CLIENT};
use crate::faults::SUPERSEDE_TIMELINE;
use crate::history::History;

/// How many runs a shrink makes at most, by default (each one a whole run of the test).
pub const MAX_RUNS_DEFAULT: u32 = 600;

/// The think-time caps the shrinker tries, shortest first.
const THINK_CAPS_MS: [u64; 6] = [0, 50, 100, 200, 400, 800];

/// What of a seed's plan to keep (see the module docs for its text form).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mask {
    /// Per client named, the indices of its operations to keep (empty: none); a client not named keeps all.
    pub ops: BTreeMap<usize, Vec<usize>>,
    /// The indices of the faults to keep (the timed faults, then the armed power cuts); `None`: all.
    pub faults: Option<Vec<usize>>,
    /// No fault rates: disk I/O errors, network loss, duplication and reordering.
    pub zero_rates: bool,
    /// Object remapping: operations on the key's object go to the value's (an earlier one).
    pub objects: BTreeMap<usize, usize>,
    /// No think time longer than this.
    pub think_cap: Option<Duration>,
    /// Nothing after this simulated time: no operation planned to start later, no timed fault later.
    pub until: Option<Duration>,
}

/// A malformed plan mask, or one that does not fit the plan it is applied to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaskError(pub String);

impl fmt::Display for MaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid plan mask: {}", self.0)
    }
}

impl std::error::Error for MaskError {}

/// An index list: indices and `a-b` ranges, `-` for none.
fn render_list(items: &[usize]) -> String {
    if items.is_empty() {
        return "-".into();
    }
    let mut sorted: Vec<usize> = items.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        parts.push(if j > i { format!("{}-{}", sorted[i], sorted[j]) } else { sorted[i].to_string() });
        i = j + 1;
    }
    parts.join(",")
}

/// Parses an index list: `None` for `*` (all).
fn parse_list(text: &str, what: &str) -> Result<Option<Vec<usize>>, MaskError> {
    match text {
        "*" => return Ok(None),
        "-" => return Ok(Some(Vec::new())),
        "" => return Err(MaskError(format!("{what}: an empty list (write - for none, * for all)"))),
        _ => {}
    }
    let number = |s: &str| {
        s.parse::<usize>().map_err(|_| {
            MaskError(format!(
                "{what}: invalid index {s:?}: expected a number, a range a-b, - (none) or * (all)"
            ))
        })
    };
    let mut out = Vec::new();
    for item in text.split(',') {
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                if a > b {
                    return Err(MaskError(format!("{what}: range {item:?} runs backwards")));
                }
                out.extend(a..=b);
            }
            None => out.push(number(item)?),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(Some(out))
}

impl fmt::Display for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.ops.is_empty() {
            let clients: Vec<String> =
                self.ops.iter().map(|(c, list)| format!("{c}:{}", render_list(list))).collect();
            parts.push(format!("ops:{}", clients.join("/")));
        }
        if let Some(faults) = &self.faults {
            parts.push(format!("faults:{}", render_list(faults)));
        }
        if self.zero_rates {
            parts.push("rates:0".into());
        }
        if !self.objects.is_empty() {
            let m: Vec<String> = self.objects.iter().map(|(a, b)| format!("{a}>{b}")).collect();
            parts.push(format!("objects:{}", m.join(",")));
        }
        if let Some(cap) = self.think_cap {
            parts.push(format!("think:{}", cap.as_millis()));
        }
        if let Some(until) = self.until {
            parts.push(format!("until:{}", until.as_millis()));
        }
        if parts.is_empty() {
            f.write_str("all")
        } else {
            f.write_str(&parts.join(";"))
        }
    }
}

impl FromStr for Mask {
    type Err = MaskError;

    /// Parses a mask's text form, with or without its `keep=` prefix.
    fn from_str(text: &str) -> Result<Mask, MaskError> {
        let text = text.trim();
        let text = text.strip_prefix(crate::regressions::KEEP_PREFIX).unwrap_or(text);
        let mut mask = Mask::default();
        if text.is_empty() || text == "all" {
            return Ok(mask);
        }
        let mut seen = BTreeSet::new();
        for part in text.split(';') {
            let (key, value) = part.split_once(':').ok_or_else(|| {
                MaskError(format!(
                    "part {part:?}: expected `name:value` (ops:, faults:, rates:0, objects:, think:, until:)"
                ))
            })?;
            if !seen.insert(key) {
                return Err(MaskError(format!("part {part:?}: {key}: given twice")));
            }
            let ms = |v: &str| {
                v.parse::<u64>().map(Duration::from_millis).map_err(|_| {
                    MaskError(format!("part {part:?}: invalid time {v:?}: expected whole milliseconds"))
                })
            };
            match key {
                "ops" => {
                    for client in value.split('/') {
                        let (c, list) = client.split_once(':').ok_or_else(|| {
                            MaskError(format!(
                                "part {part:?}: client {client:?}: expected `client:list` (e.g. 0:1,3-5 or 1:-)"
                            ))
                        })?;
                        let c: usize = c.parse().map_err(|_| {
                            MaskError(format!("part {part:?}: invalid client {c:?}: expected a number"))
                        })?;
                        if mask.ops.contains_key(&c) {
                            return Err(MaskError(format!("part {part:?}: client {c} named twice")));
                        }
                        if let Some(list) = parse_list(list, &format!("part {part:?}: client {c}"))? {
                            mask.ops.insert(c, list);
                        }
                    }
                }
                "faults" => mask.faults = parse_list(value, &format!("part {part:?}"))?,
                "rates" => {
                    if value != "0" {
                        return Err(MaskError(format!(
                            "part {part:?}: only rates:0 (no fault rates) is valid"
                        )));
                    }
                    mask.zero_rates = true;
                }
                "objects" => {
                    for pair in value.split(',') {
                        let bad = || {
                            MaskError(format!(
                                "part {part:?}: invalid remap {pair:?}: expected from>to, two object indices"
                            ))
                        };
                        let (a, b) = pair.split_once('>').ok_or_else(bad)?;
                        let (a, b) =
                            (a.parse::<usize>().map_err(|_| bad())?, b.parse::<usize>().map_err(|_| bad())?);
                        if b >= a {
                            return Err(MaskError(format!(
                                "part {part:?}: {pair}: an object is remapped onto an earlier one (from > to)"
                            )));
                        }
                        if mask.objects.insert(a, b).is_some() {
                            return Err(MaskError(format!("part {part:?}: object {a} remapped twice")));
                        }
                    }
                }
                "think" => mask.think_cap = Some(ms(value)?),
                "until" => mask.until = Some(ms(value)?),
                other => {
                    return Err(MaskError(format!(
                        "part {part:?}: unknown part {other:?}: expected ops:, faults:, rates:0, objects:, \
                         think: or until:"
                    )))
                }
            }
        }
        Ok(mask)
    }
}

/// When a plan's clients start, from the start of the run: after a cluster's startup.
fn clients_start<I>(plan: &RunPlan<I>) -> Duration {
    if plan.schedule.directory.is_some() {
        super::CLUSTER_STARTUP
    } else {
        Duration::ZERO
    }
}

/// One operation a mask keeps: its client, its index in the seed's plan, its think time and planned start.
#[derive(Clone, Copy, Debug)]
struct Kept {
    client: usize,
    index: usize,
    think: Duration,
    at: Duration,
}

impl Mask {
    /// The whole plan.
    pub fn all() -> Mask {
        Mask::default()
    }

    /// The operations this mask keeps of `plan`, per client in order (checked against the plan).
    fn kept_ops<I>(&self, plan: &RunPlan<I>) -> Result<Vec<Vec<Kept>>, MaskError> {
        if let Some(c) = self.ops.keys().find(|c| **c >= plan.ops.len()) {
            return Err(MaskError(format!("ops: client {c}: the plan has {} clients", plan.ops.len())));
        }
        let start = clients_start(plan);
        let mut out = Vec::new();
        for (c, ops) in plan.ops.iter().enumerate() {
            let keep = self.ops.get(&c);
            if let Some(i) = keep.and_then(|k| k.iter().find(|i| **i >= ops.len())) {
                return Err(MaskError(format!(
                    "ops: client {c}, operation {i}: client {c} has {} operations",
                    ops.len()
                )));
            }
            let (mut carried, mut at, mut kept) = (Duration::ZERO, start, Vec::new());
            for (i, op) in ops.iter().enumerate() {
                carried += op.think;
                if keep.is_some_and(|k| k.binary_search(&i).is_err()) {
                    continue;
                }
                let think = self.think_cap.map_or(carried, |cap| carried.min(cap));
                carried = Duration::ZERO;
                at += think;
                if self.until.is_some_and(|u| at > u) {
                    break;
                }
                kept.push(Kept { client: c, index: i, think, at });
            }
            out.push(kept);
        }
        Ok(out)
    }

    /// The indices of the faults this mask keeps of `plan` (checked against the plan).
    fn kept_faults<I>(&self, plan: &RunPlan<I>) -> Result<Vec<usize>, MaskError> {
        let timed = plan.schedule.timed.len();
        let total = timed + plan.schedule.power_cuts_at_disk_ops.len();
        if let Some(i) = self.faults.as_ref().and_then(|f| f.iter().find(|i| **i >= total)) {
            return Err(MaskError(format!(
                "faults: fault {i}: the plan has {total} faults ({timed} timed, then {} armed power cuts)",
                total - timed
            )));
        }
        Ok((0..total)
            .filter(|i| self.faults.as_ref().is_none_or(|f| f.binary_search(i).is_ok()))
            .filter(|i| *i >= timed || self.until.is_none_or(|u| plan.schedule.timed[*i].at <= u))
            .collect())
    }

    /// The object an operation on `object` goes to.
    fn object(&self, object: usize) -> usize {
        self.objects.get(&object).copied().unwrap_or(object)
    }

    /// The plan to run: `plan` (the seed's own) with only what this mask keeps. An error names what does not
    /// fit: a client, an operation or a fault the plan does not have.
    pub fn apply<I: Clone>(&self, plan: &RunPlan<I>) -> Result<RunPlan<I>, MaskError> {
        let kept = self.kept_ops(plan)?;
        let faults = self.kept_faults(plan)?;
        let ops = kept
            .iter()
            .map(|client| {
                client
                    .iter()
                    .map(|k| {
                        let op = &plan.ops[k.client][k.index];
                        PlannedOp { object: self.object(op.object), input: op.input.clone(), think: k.think }
                    })
                    .collect()
            })
            .collect();
        let mut schedule = plan.schedule.clone();
        let timed = plan.schedule.timed.len();
        schedule.timed = faults.iter().filter(|i| **i < timed).map(|i| plan.schedule.timed[*i]).collect();
        schedule.power_cuts_at_disk_ops = faults
            .iter()
            .filter(|i| **i >= timed)
            .map(|i| plan.schedule.power_cuts_at_disk_ops[i - timed])
            .collect();
        if self.zero_rates {
            schedule.disk_io_error_rate = Ratio::NEVER;
            schedule.net_loss = Ratio::NEVER;
            schedule.net_duplicate = Ratio::NEVER;
            schedule.net_reorder = Ratio::NEVER;
        }
        Ok(RunPlan { ops, schedule })
    }

    /// This mask with exactly `ops` kept (client, index), every client of `plan` named.
    fn with_ops<I>(&self, plan: &RunPlan<I>, ops: &[(usize, usize)]) -> Mask {
        let mut m = self.clone();
        m.ops = (0..plan.ops.len()).map(|c| (c, Vec::new())).collect();
        for (c, i) in ops {
            if let Some(list) = m.ops.get_mut(c) {
                list.push(*i);
            }
        }
        for list in m.ops.values_mut() {
            list.sort_unstable();
            list.dedup();
        }
        m
    }

    /// This mask with exactly `faults` kept.
    fn with_faults(&self, faults: &[usize]) -> Mask {
        let mut m = self.clone();
        let mut f = faults.to_vec();
        f.sort_unstable();
        f.dedup();
        m.faults = Some(f);
        m
    }
}

/// Whether two failures are of the same check: the same kind of failure and, for a check's violation, the
/// same check's name (the kit prefixes a violation's message with it: `linearizability: …`).
pub fn same_check(a: &FailureKind, b: &FailureKind) -> bool {
    match (a, b) {
        (FailureKind::Check(x), FailureKind::Check(y)) => check_name(x) == check_name(y),
        _ => std::mem::discriminant(a) == std::mem::discriminant(b),
    }
}

/// The check's name at the head of a violation's message (the text before the first `: `).
pub fn check_name(message: &str) -> &str {
    message.split_once(": ").map_or(message, |(name, _)| name)
}

/// How big a plan is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlanSize {
    /// Clients with at least one operation.
    pub clients: usize,
    /// Operations.
    pub ops: usize,
    /// Faults: timed ones and armed power cuts.
    pub faults: usize,
    /// Objects the operations go to.
    pub objects: usize,
}

impl PlanSize {
    /// The size of `plan`.
    pub fn of<I>(plan: &RunPlan<I>) -> PlanSize {
        PlanSize {
            clients: plan.ops.iter().filter(|c| !c.is_empty()).count(),
            ops: plan.ops.iter().map(Vec::len).sum(),
            faults: plan.schedule.len(),
            objects: plan.ops.iter().flatten().map(|o| o.object).collect::<BTreeSet<_>>().len(),
        }
    }
}

impl fmt::Display for PlanSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = |n: usize| if n == 1 { "" } else { "s" };
        write!(
            f,
            "{} operation{} of {} client{} on {} object{}, {} fault{}",
            self.ops,
            s(self.ops),
            self.clients,
            s(self.clients),
            self.objects,
            s(self.objects),
            self.faults,
            s(self.faults)
        )
    }
}

/// A shrunk failing run: the smallest plan found that still fails the same check, as a mask of the seed's
/// plan, and its steps.
#[derive(Clone, Debug)]
pub struct Shrunk<I> {
    /// The seed.
    pub seed: Seed,
    /// What of the seed's plan the smallest failing run keeps.
    pub mask: Mask,
    /// The smallest failing plan (`mask` applied to the seed's plan).
    pub plan: RunPlan<I>,
    /// Its run's failure.
    pub failure: RunFailure,
    /// The seed's whole plan's size.
    pub original: PlanSize,
    /// The smallest plan's size.
    pub size: PlanSize,
    /// The minimal repro, in time order: operations (with their outcomes), faults, the final reads; the
    /// violated check last.
    pub steps: Vec<String>,
    /// The runs it took (the first, of the whole plan, and the last, of the smallest, included).
    pub runs: u32,
    /// The wall time it took.
    pub wall: Duration,
}

impl<I> fmt::Display for Shrunk<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "shrunk seed {} in {} runs ({:.1}s wall): {} -> {}",
            self.seed,
            self.runs,
            self.wall.as_secs_f64(),
            self.original,
            self.size
        )?;
        writeln!(f, "keep={}", self.mask)?;
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(f, "{:>2}. {step}", i + 1)?;
        }
        Ok(())
    }
}

/// Why a shrink could not start: the seed's whole plan does not fail the check it was asked to.
#[derive(Clone, Debug)]
pub struct NotReproduced {
    /// The seed.
    pub seed: Seed,
    /// The failure asked for.
    pub expected: String,
    /// What the whole plan's run did instead.
    pub got: String,
}

impl fmt::Display for NotReproduced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: the seed's plan does not fail the same check, so there is nothing to shrink \
             (expected {}; the run {})",
            self.seed, self.expected, self.got
        )
    }
}

impl std::error::Error for NotReproduced {}

/// Shrinks the failing run `failing` of the tests `make` builds (one per run: an [`ObjectTest`] is consumed
/// by its run) to a minimal plan that still fails the same check, with at most [`MAX_RUNS_DEFAULT`] runs.
pub fn shrink<D: Driver>(
    make: impl Fn() -> ObjectTest<D>,
    failing: &RunFailure,
) -> Result<Shrunk<D::Input>, NotReproduced> {
    shrink_within(make, failing, MAX_RUNS_DEFAULT)
}

/// [`shrink`] with at most `max_runs` runs: past them it stops with the smallest plan found so far.
pub fn shrink_within<D: Driver>(
    make: impl Fn() -> ObjectTest<D>,
    failing: &RunFailure,
    max_runs: u32,
) -> Result<Shrunk<D::Input>, NotReproduced> {
    let started = Instant::now();
    let test = make();
    let seed = test.seed();
    let base = test.plan();
    let objects: Vec<String> = test.workload.as_ref().map(|w| w.objects.clone()).unwrap_or_default();
    drop(test);
    let mut engine =
        Engine { make: &make, base, target: failing.kind.clone(), cache: BTreeMap::new(), runs: 0, max_runs };
    // The whole plan must fail the same check: the failure may have come from another plan.
    if let Err(got) = engine.judge(&Mask::all()) {
        return Err(NotReproduced { seed, expected: failing.kind.to_string(), got });
    }
    let best = engine.minimise(Mask::all());
    let plan = best.apply(&engine.base).expect("the shrinker's masks fit the plan");
    let mut history = None;
    engine.runs += 1;
    let failure = match make().run_plan_recorded(plan.clone(), &mut history) {
        Err(f) if same_check(&engine.target, &f.kind) => f,
        other => panic!(
            "the smallest failing plan of seed {seed} did not fail the same way again ({:?}): the run is not \
             deterministic",
            other.err().map(|f| f.kind)
        ),
    };
    let steps = steps(&plan, &objects, history.as_ref(), &failure);
    Ok(Shrunk {
        seed,
        original: PlanSize::of(&engine.base),
        size: PlanSize::of(&plan),
        mask: best,
        plan,
        failure,
        steps,
        runs: engine.runs,
        wall: started.elapsed(),
    })
}

/// The shrinker's state: the seed's plan, the failure to keep, and every mask run so far.
struct Engine<'a, D: Driver, F: Fn() -> ObjectTest<D>> {
    make: &'a F,
    base: RunPlan<D::Input>,
    target: FailureKind,
    /// Each mask run so far (by its text) and whether it failed the same check.
    cache: BTreeMap<String, bool>,
    runs: u32,
    max_runs: u32,
}

impl<D: Driver, F: Fn() -> ObjectTest<D>> Engine<'_, D, F> {
    /// Runs `mask`'s plan: `Ok` if it fails the same check, else what it did.
    fn judge(&mut self, mask: &Mask) -> Result<(), String> {
        let plan = mask.apply(&self.base).map_err(|e| e.to_string())?;
        self.runs += 1;
        match (self.make)().run_plan(plan) {
            Err(f) if same_check(&self.target, &f.kind) => Ok(()),
            Err(f) => Err(format!("failed otherwise: {}", f.kind)),
            Ok(_) => Err("passed".into()),
        }
    }

    /// Whether `mask`'s plan fails the same check (remembered per mask; false once the runs are used up).
    fn fails(&mut self, mask: &Mask) -> bool {
        let key = mask.to_string();
        if let Some(r) = self.cache.get(&key) {
            return *r;
        }
        if self.runs >= self.max_runs {
            return false;
        }
        let r = self.judge(mask).is_ok();
        self.cache.insert(key, r);
        r
    }

    /// Every pass, in a fixed order, until a round changes nothing.
    fn minimise(&mut self, mut best: Mask) -> Mask {
        best = self.truncate(best);
        for _ in 0..4 {
            let before = best.clone();
            best = self.drop_faults(best);
            best = self.drop_clients(best);
            best = self.drop_ops(best);
            best = self.merge_objects(best);
            best = self.shorten_thinks(best);
            if best == before {
                break;
            }
        }
        best
    }

    /// The operations `mask` keeps, as (client, index), in client order.
    fn ops_of(&self, mask: &Mask) -> Vec<(usize, usize)> {
        mask.kept_ops(&self.base)
            .map(|k| k.iter().flatten().map(|k| (k.client, k.index)).collect())
            .unwrap_or_default()
    }

    /// An earlier stop: the earliest cut (at an operation's planned start or a fault's time) that still
    /// fails, by bisection; the mask then names the operations and faults it keeps.
    fn truncate(&mut self, best: Mask) -> Mask {
        let kept = best.kept_ops(&self.base).unwrap_or_default();
        let faults = best.kept_faults(&self.base).unwrap_or_default();
        let mut times: Vec<Duration> = kept.iter().flatten().map(|k| k.at).collect();
        times.extend(faults.iter().filter_map(|i| self.base.schedule.timed.get(*i)).map(|t| t.at));
        times.sort_unstable();
        times.dedup();
        if times.len() < 2 {
            return best;
        }
        let (mut lo, mut hi) = (0, times.len() - 1);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let m = self.cut(&best, times[mid]);
            if self.fails(&m) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        if hi < times.len() - 1 {
            self.cut(&best, times[hi])
        } else {
            best
        }
    }

    /// `best` cut at `until`, naming the operations and faults it keeps.
    fn cut(&self, best: &Mask, until: Duration) -> Mask {
        let mut m = best.clone();
        m.until = Some(until);
        let ops = self.ops_of(&m);
        let faults = m.kept_faults(&self.base).unwrap_or_default();
        m.with_ops(&self.base, &ops).with_faults(&faults)
    }

    /// No fault rates, then fewer faults (ddmin).
    fn drop_faults(&mut self, mut best: Mask) -> Mask {
        let s = &self.base.schedule;
        let rates = [s.disk_io_error_rate, s.net_loss, s.net_duplicate, s.net_reorder];
        if !best.zero_rates && rates.iter().any(|r| *r != Ratio::NEVER) {
            let mut m = best.clone();
            m.zero_rates = true;
            if self.fails(&m) {
                best = m;
            }
        }
        let faults = best.kept_faults(&self.base).unwrap_or_default();
        if faults.is_empty() {
            return best;
        }
        let base = best.clone();
        let kept = ddmin(faults, &mut |subset| self.fails(&base.with_faults(subset)));
        best.with_faults(&kept)
    }

    /// Fewer clients: each client's operations dropped at once, in client order.
    fn drop_clients(&mut self, mut best: Mask) -> Mask {
        let clients: BTreeSet<usize> = self.ops_of(&best).iter().map(|(c, _)| *c).collect();
        if clients.len() < 2 {
            return best;
        }
        for c in clients {
            let ops: Vec<(usize, usize)> = self.ops_of(&best).into_iter().filter(|(k, _)| *k != c).collect();
            if ops.is_empty() {
                continue;
            }
            let m = best.with_ops(&self.base, &ops);
            if self.fails(&m) {
                best = m;
            }
        }
        best
    }

    /// Fewer operations (ddmin over every client's).
    fn drop_ops(&mut self, best: Mask) -> Mask {
        let ops = self.ops_of(&best);
        if ops.is_empty() {
            return best;
        }
        let (base, plan) = (best.clone(), self.base.clone());
        let kept = ddmin(ops, &mut |subset| self.fails(&base.with_ops(&plan, subset)));
        best.with_ops(&self.base, &kept)
    }

    /// Fewer objects: every operation onto the first object used, else each object onto it in turn.
    fn merge_objects(&mut self, mut best: Mask) -> Mask {
        let used = |m: &Mask, this: &Self| -> BTreeSet<usize> {
            this.ops_of(m).iter().map(|(c, i)| m.object(this.base.ops[*c][*i].object)).collect()
        };
        let objects = used(&best, self);
        let Some(&first) = objects.iter().next() else { return best };
        if objects.len() < 2 {
            return best;
        }
        // The seed's objects behind each object used now.
        let originals: BTreeSet<usize> = self.base.ops.iter().flatten().map(|o| o.object).collect();
        let onto = |m: &Mask, targets: &BTreeSet<usize>| {
            let mut m = m.clone();
            for &x in &originals {
                if targets.contains(&m.object(x)) && x != first {
                    m.objects.insert(x, first);
                }
            }
            m
        };
        let all: BTreeSet<usize> = objects.iter().copied().filter(|o| *o != first).collect();
        let m = onto(&best, &all);
        if self.fails(&m) {
            return m;
        }
        for o in all {
            let m = onto(&best, &BTreeSet::from([o]));
            if self.fails(&m) {
                best = m;
            }
        }
        best
    }

    /// Shorter think times: the shortest cap that still fails.
    fn shorten_thinks(&mut self, best: Mask) -> Mask {
        let longest = best
            .kept_ops(&self.base)
            .map(|k| k.iter().flatten().map(|k| k.think).max().unwrap_or_default())
            .unwrap_or_default();
        for ms in THINK_CAPS_MS {
            let cap = Duration::from_millis(ms);
            if cap >= longest {
                break;
            }
            let mut m = best.clone();
            m.think_cap = Some(cap);
            if self.fails(&m) {
                return m;
            }
        }
        best
    }
}

/// Zeller's ddmin: a 1-minimal subset of `units` (in their order) for which `fails` holds, given that it
/// holds for all of them. Tries the empty set first.
fn ddmin<T: Clone>(units: Vec<T>, fails: &mut impl FnMut(&[T]) -> bool) -> Vec<T> {
    if fails(&[]) {
        return Vec::new();
    }
    let mut current = units;
    let mut n = 2usize;
    while current.len() >= 2 {
        let chunk = current.len().div_ceil(n);
        let chunks: Vec<Vec<T>> = current.chunks(chunk).map(<[T]>::to_vec).collect();
        let mut reduced = false;
        for c in &chunks {
            if fails(c) {
                current = c.clone();
                n = 2;
                reduced = true;
                break;
            }
        }
        if !reduced && chunks.len() > 2 {
            for i in 0..chunks.len() {
                let complement: Vec<T> =
                    chunks.iter().enumerate().filter(|(j, _)| *j != i).flat_map(|(_, c)| c.clone()).collect();
                if fails(&complement) {
                    current = complement;
                    n = (n - 1).max(2);
                    reduced = true;
                    break;
                }
            }
        }
        if !reduced {
            if n >= current.len() {
                break;
            }
            n = (n * 2).min(current.len());
        }
    }
    current
}

/// The minimal repro's steps in time order: the operations (with outcomes), the faults, the final reads of
/// the objects the operations touched; the violated check last.
fn steps<I: fmt::Debug, O: fmt::Debug>(
    plan: &RunPlan<I>,
    objects: &[String],
    history: Option<&History<I, O>>,
    failure: &RunFailure,
) -> Vec<String> {
    let name =
        |o: u32| objects.get(o as usize % objects.len().max(1)).cloned().unwrap_or_else(|| format!("#{o}"));
    // (time, order among equal times, text)
    let mut steps: Vec<(Duration, u8, String)> = Vec::new();
    let mut timed_cuts: BTreeMap<NodeId, Vec<Duration>> = BTreeMap::new();
    for t in &plan.schedule.timed {
        let ms = |d: Duration| d.as_millis();
        let text = match t.action {
            Action::Crash { node, outage } => format!("crash {node} (restarts after {}ms)", ms(outage)),
            Action::PowerCut { node, outage } => {
                timed_cuts.entry(node).or_default().push(t.at);
                format!("power cut {node} (restarts after {}ms)", ms(outage))
            }
            Action::Pause { node, outage } => format!("pause {node} for {}ms", ms(outage)),
            Action::Partition { hop, from, to, outage } => {
                format!("partition {from}-{to} ({}) for {}ms", hop.name(), ms(outage))
            }
            Action::Evict { node } => format!("evict idle objects on {node}"),
            Action::Overload { object, calls } => {
                format!("overload {}: refuse its next {calls} calls", name(object))
            }
            Action::Reset { object } => format!("reset {}", name(object)),
            Action::CodeUpdate { node } => format!("code update on {node}"),
            Action::Supersede { survivor } => format!(
                "supersede every host but {survivor} (cut off from the directory, paused {}ms..{}ms later)",
                ms(SUPERSEDE_TIMELINE.0),
                ms(SUPERSEDE_TIMELINE.2)
            ),
        };
        steps.push((t.at, 0, text));
    }
    // Armed power cuts: when each fired, from the trace (a power cut that no timed one explains).
    let mut fired: BTreeMap<NodeId, Vec<Duration>> = BTreeMap::new();
    for e in failure.trace.events() {
        if let (EventKind::Node(NodeAction::PowerCut), Some(node)) = (&e.kind, e.node) {
            if !timed_cuts.get(&node).is_some_and(|t| t.contains(&e.at)) {
                fired.entry(node).or_default().push(e.at);
            }
        }
    }
    let mut armed: Vec<(NodeId, u64)> = plan.schedule.power_cuts_at_disk_ops.clone();
    armed.sort_unstable();
    let mut seen: BTreeMap<NodeId, usize> = BTreeMap::new();
    for (node, op) in armed {
        let k = seen.entry(node).or_default();
        let restart = plan.schedule.restart_after_power_cut.as_millis();
        match fired.get(&node).and_then(|t| t.get(*k)) {
            Some(at) => steps.push((
                *at,
                0,
                format!("power cut {node} at its disk operation {op} (restarts after {restart}ms)"),
            )),
            None => steps.push((
                Duration::MAX,
                0,
                format!("power cut {node} armed at its disk operation {op} (never reached)"),
            )),
        }
        *k += 1;
    }
    if let Some(history) = history {
        let used: BTreeSet<&str> = history
            .ops()
            .iter()
            .filter(|o| o.client != FINAL_READ_CLIENT && o.client != TAKEOVER_CLIENT)
            .map(|o| o.object.as_str())
            .collect();
        let done = |o: &crate::history::Operation<I, O>| match o.completed {
            Some(c) if c.as_millis() > o.invoked.as_millis() => format!(" at t={}ms", c.as_millis()),
            _ => String::new(),
        };
        let mut finals: BTreeMap<&str, String> = BTreeMap::new();
        let mut final_at: BTreeMap<&str, Duration> = BTreeMap::new();
        for o in history.ops() {
            match o.client {
                FINAL_READ_CLIENT => {
                    if used.contains(o.object.as_str()) {
                        final_at.insert(&o.object, o.invoked);
                        finals.insert(
                            &o.object,
                            format!("final read: {:?} on {} -> {}{}", o.input, o.object, o.outcome, done(o)),
                        );
                    }
                }
                TAKEOVER_CLIENT => steps.push((
                    o.invoked,
                    1,
                    format!("takeover read: {:?} on {} -> {}{}", o.input, o.object, o.outcome, done(o)),
                )),
                c => steps.push((
                    o.invoked,
                    1,
                    format!("client {c}: {:?} on {} -> {}{}", o.input, o.object, o.outcome, done(o)),
                )),
            }
        }
        for (object, text) in finals {
            steps.push((final_at[object], 2, text));
        }
    }
    steps.sort_by_key(|a| (a.0, a.1));
    let mut out: Vec<String> = steps
        .into_iter()
        .map(
            |(at, _, text)| if at == Duration::MAX { text } else { format!("t={}ms {text}", at.as_millis()) },
        )
        .collect();
    out.push(match &failure.kind {
        FailureKind::Check(m) => format!("violated: {}", m.lines().next().unwrap_or_default()),
        other => format!("failed: {other}"),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddmin_finds_a_one_minimal_subset() {
        let mut runs = 0;
        let kept = ddmin((0..40).collect(), &mut |s: &[u32]| {
            runs += 1;
            s.contains(&7) && s.contains(&31)
        });
        assert_eq!(kept, vec![7, 31]);
        assert!(runs < 60, "{runs} runs");
    }

    #[test]
    fn the_same_check_is_the_same_kind_and_the_same_check_name() {
        let check = |m: &str| FailureKind::Check(m.into());
        let lin = check("linearizability: object a: op#5 returned 2");
        assert!(same_check(&lin, &check("linearizability: object b: op#1 returned 0")));
        assert!(!same_check(&lin, &check("no lost acknowledged write: op#1 lost")));
        assert!(!same_check(&check("eviction faults fired"), &lin));
        assert!(!same_check(&lin, &FailureKind::Pending("linearizability: x".into())));
        assert!(same_check(&FailureKind::Deadlock, &FailureKind::Deadlock));
        assert_eq!(
            check_name("no lost acknowledged write: an acknowledged write was lost: …"),
            "no lost acknowledged write"
        );
    }

    #[test]
    fn lists_render_as_ranges_and_parse_back() {
        assert_eq!(render_list(&[0, 1, 2, 3, 7, 9, 10]), "0-3,7,9-10");
        assert_eq!(render_list(&[]), "-");
        assert_eq!(parse_list("0-3,7,9-10", "x").unwrap(), Some(vec![0, 1, 2, 3, 7, 9, 10]));
        assert_eq!(parse_list("*", "x").unwrap(), None);
    }
}
