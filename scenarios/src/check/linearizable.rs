//! The linearizability checker: whether each object of a [`History`] has a sequential order of its
//! operations that respects real time and that the object's sequential specification ([`Model`]) produces.
//!
//! # Semantics
//!
//! The history is partitioned by [`Operation::object`]; each object is its own instance of the model,
//! checked independently, in object order (linearizability is compositional, so the history is linearizable
//! if and only if every object's part is). Within an object, each operation counts by its
//! [`Outcome::effect`](crate::history::Outcome::effect):
//!
//! - [`Effect::Certain`] (it returned a value): it must take effect at one point within
//!   `[invoked, completed]`, and the model's output there must equal the value returned.
//! - [`Effect::Maybe`] (an error other than `overloaded`, no answer, or still open): it may take effect at any
//!   point after its invocation, with no upper bound (a request can outlive the client's patience), or not at
//!   all; its output is unconstrained.
//! - [`Effect::None`] (`overloaded`: refused before it ran): it is left out, so a read seeing its write is a
//!   violation.
//!
//! Intervals are closed: an operation invoked at the same instant another completed counts as concurrent
//! with it (simulated clocks tick in steps, so equal times say nothing about order).
//!
//! # Algorithm
//!
//! A depth-first search for a linearization, after Wing & Gong, with Lowe's memoization (the approach of
//! Porcupine), written from the algorithm. A configuration is the set of operations linearized so far (a
//! bitset) and the model's state after them. From a configuration, the operations that may take effect next
//! are the ones not yet linearized that were invoked no later than the earliest completion among the certain
//! operations not yet linearized (that one must take effect before anything invoked after it completed). The
//! search tries the certain ones first, in invocation order, then the maybe ones, the latest invoked first
//! (an operation without an answer that took effect mostly did so soon after its invocation), applying each
//! to the state: a certain operation must return its recorded value; a maybe operation whose application
//! leaves the state unchanged is skipped (not linearizing it stays possible and leads to the same
//! configurations). The search succeeds once every certain operation is linearized; the maybe operations left
//! over never took effect. It backtracks when no candidate fits, and fails when it backtracks past the start.
//!
//! The memo remembers every configuration explored and never explores one twice: configurations with the same
//! linearized set and the same state have the same future, whatever order reached them. It also subsumes: a
//! configuration with the same certain operations linearized and the same state as one explored before, and a
//! superset of its maybe operations, is not explored either (whatever completes it completes the other, which
//! leaves the extra maybe operations out as never having happened). A write without an answer that a later
//! write overwrote thus costs nothing.
//!
//! Maybe operations have no deadline, so every one that never took effect stays a candidate to the end of the
//! history, and a search that tries them freely visits every subset of them. The search therefore runs in
//! rounds that allow at most 1, 2, 4, 8, then any number of maybe operations in a row between two certain
//! ones. A round that finds a linearization ends the search (it is a linearization all the same); a failed
//! bounded round proves nothing and the next round starts afresh; the unbounded round is the exact search,
//! and its failure is the violation. Rounds beyond the number of maybe operations are skipped: a history
//! without maybe operations takes one round.
//!
//! The search is iterative (an explicit stack), so long histories do not exhaust the thread's stack. A
//! violation names the deepest configuration the last round reached: its path is the longest linearizable
//! prefix found, and the certain operation that had to come next there is the operation that cannot be placed.
//!
//! # Complexity and budget
//!
//! Deciding linearizability is NP-complete; the memo bounds the work by the number of distinct
//! configurations, at most `2^n × |states|` for `n` operations, but in practice by the concurrency: with at
//! most `c` operations in flight at a time the linearized sets that can arise differ from a prefix of the
//! history only within a window of about `c` operations, so a round explores on the order of `n × 2^c`
//! configurations, each costing an `O(n / 64)` bitset, one [`Model::apply`] and one hash of the state. Each
//! maybe operation that never took effect stays in the window to the end: with `k` of them pending, a round
//! allowing `r` in a row may try about `k^r` combinations at a step, and the unbounded round `2^k`. Histories
//! that do linearize mostly pass in the first rounds; proving a violation takes the unbounded round, whose
//! cost grows with the number of maybe operations whose effects do not cancel (a counter's adds are the worst
//! case: every subset gives a new state; overwritten register or map writes are subsumed).
//!
//! Each object's search stops after exploring a budget of configurations over all its rounds
//! ([`SEARCH_BUDGET_DEFAULT`], or the budget given to [`check_linearizable_with_budget`]) and reports
//! [`LinearizabilityError::Inconclusive`]: the check neither passed nor found a violation. The memo holds the
//! round's configurations, so the budget also bounds memory (a configuration costs two bitsets, its state and
//! a hash-map slot).
//!
//! Everything is deterministic: objects in order, candidates in a fixed order, the memo used by key only and
//! never iterated.

// The memo is looked up by key only, never iterated (see `Memo`).
#[allow(clippy::disallowed_types)]
use std::collections::HashMap;
use std::fmt::{self, Debug};
use std::hash::Hash;
use std::time::Duration;

use crate::history::{Effect, History, OpId, Operation};

/// An object's sequential specification: its state and what each operation does to it and returns.
///
/// The model must be deterministic: `apply` on equal states and inputs gives equal results.
pub trait Model {
    /// What an operation asks.
    type Input: Clone + Debug;
    /// What an operation returns.
    type Output: Clone + Debug + PartialEq;
    /// The object's state (hashed and compared by the search's memo).
    type State: Clone + Eq + Hash + Debug;
    /// The state of a new object.
    fn init(&self) -> Self::State;
    /// The sequential specification: the state after `input` and what it returns.
    fn apply(&self, state: &Self::State, input: &Self::Input) -> (Self::State, Self::Output);
}

/// The number of configurations [`check_linearizable`] explores per object before it gives up as
/// inconclusive. Measured in a release build on histories of 200 operations: using it all up took 1 to 9
/// seconds (the key-value model's map states cost the most to clone and hash) and under 200 MB of memory;
/// histories that linearize took well under a second (see the `timing` test).
pub const SEARCH_BUDGET_DEFAULT: u64 = 1_000_000;

/// What a passing check covered, so a test can show the check did real work.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinearizableReport {
    /// The objects checked.
    pub objects: usize,
    /// The operations checked (certain and maybe).
    pub ops: usize,
    /// Of those, the ones that returned a value (and so had their output checked).
    pub certain: usize,
    /// The operations left out because they never ran (`overloaded`).
    pub excluded: usize,
    /// The configurations the search explored, over all objects.
    pub explored: u64,
}

impl fmt::Display for LinearizableReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "linearizable: {} objects, {} operations ({} with a value, {} overloaded left out), {} states explored",
            self.objects, self.ops, self.certain, self.excluded, self.explored
        )
    }
}

/// A history that is not linearizable: the object, the operation no order could place, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The object whose operations have no linearization.
    pub object: String,
    /// The first operation that cannot be placed: at the end of the longest linearizable prefix the search
    /// found, the operation that had to take effect next (the earliest to complete) and could not.
    pub op: OpId,
    /// The object's other operations that overlap [`Violation::op`] (the ones that could have taken effect
    /// around it), in id order.
    pub concurrent: Vec<OpId>,
    /// The longest linearizable prefix found, in linearization order.
    pub prefix: Vec<OpId>,
    /// A sentence for people, naming the object, the operation, what it returned and what the model gives.
    pub explanation: String,
}

impl Violation {
    /// Every operation the violation names: the one that cannot be placed, the ones concurrent with it and
    /// the prefix, each once, in id order.
    pub fn ops(&self) -> Vec<OpId> {
        let mut ops: Vec<OpId> = std::iter::once(self.op)
            .chain(self.concurrent.iter().copied())
            .chain(self.prefix.iter().copied())
            .collect();
        ops.sort();
        ops.dedup();
        ops
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explanation)
    }
}

/// Why a history did not pass the linearizability check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinearizabilityError {
    /// No order of an object's operations explains what they returned.
    Violation(Violation),
    /// The search for an object exceeded its budget before deciding.
    Inconclusive {
        /// The object.
        object: String,
        /// The configurations explored (the budget, plus the one that exceeded it).
        explored: u64,
    },
}

impl LinearizabilityError {
    /// The violation, if it is one.
    pub fn violation(&self) -> Option<&Violation> {
        match self {
            LinearizabilityError::Violation(v) => Some(v),
            LinearizabilityError::Inconclusive { .. } => None,
        }
    }
}

impl fmt::Display for LinearizabilityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinearizabilityError::Violation(v) => write!(f, "not linearizable: {v}"),
            LinearizabilityError::Inconclusive { object, explored } => write!(
                f,
                "object {object}: linearizability inconclusive, the search explored {explored} states without \
                 deciding (raise the budget or shorten the history)"
            ),
        }
    }
}

impl std::error::Error for LinearizabilityError {}

/// Checks that `history` is linearizable with respect to `model`, each object on its own, exploring at most
/// [`SEARCH_BUDGET_DEFAULT`] configurations per object. See the [module docs](self) for the semantics.
///
/// Returns the first object's violation in object order; if there is none but some object's search ran out
/// of budget, the first such object's [`LinearizabilityError::Inconclusive`].
pub fn check_linearizable<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
) -> Result<LinearizableReport, LinearizabilityError> {
    check_linearizable_with_budget(model, history, SEARCH_BUDGET_DEFAULT)
}

/// [`check_linearizable`] with an explicit budget: the configurations explored per object before the check
/// gives up as inconclusive.
pub fn check_linearizable_with_budget<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    budget: u64,
) -> Result<LinearizableReport, LinearizabilityError> {
    let mut report = LinearizableReport::default();
    let mut inconclusive = None;
    for object in history.objects() {
        report.objects += 1;
        let mut entries = Vec::new();
        for op in history.of_object(object) {
            match Entry::of(op) {
                Some(e) => entries.push(e),
                None => report.excluded += 1,
            }
        }
        report.ops += entries.len();
        report.certain += entries.iter().filter(|e| e.expected.is_some()).count();
        match search(model, object, entries, budget) {
            Searched::Linearizable { explored } => report.explored += explored,
            Searched::Violation(v) => return Err(LinearizabilityError::Violation(v)),
            Searched::Inconclusive { explored } => {
                report.explored += explored;
                inconclusive.get_or_insert(LinearizabilityError::Inconclusive {
                    object: object.to_string(),
                    explored,
                });
            }
        }
    }
    match inconclusive {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// One operation as the search sees it.
struct Entry<'a, I, O> {
    id: OpId,
    client: u32,
    input: &'a I,
    invoked: Duration,
    /// The latest it may take effect: its completion if certain, never (`Duration::MAX`) if maybe.
    deadline: Duration,
    /// The value it must return, if certain.
    expected: Option<&'a O>,
}

impl<'a, I, O> Entry<'a, I, O> {
    /// The entry of `op`, or `None` if it never ran.
    fn of(op: &'a Operation<I, O>) -> Option<Entry<'a, I, O>> {
        let (deadline, expected) = match op.outcome.effect() {
            Effect::None => return None,
            // A value without a completion time (a hand-built history) has no upper bound, but its value holds.
            Effect::Certain => (op.completed.unwrap_or(Duration::MAX), op.outcome.value()),
            Effect::Maybe => (Duration::MAX, None),
        };
        Some(Entry {
            id: op.id,
            client: op.client,
            input: &op.input,
            invoked: op.invoked,
            deadline,
            expected,
        })
    }
}

/// A set of operations, by their index in the search's entries.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Box<[u64]>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)].into_boxed_slice())
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    /// The members of `self` that are (`keep`) or are not in `mask`.
    fn masked(&self, mask: &Bits, keep: bool) -> Bits {
        Bits(self.0.iter().zip(mask.0.iter()).map(|(a, m)| if keep { a & m } else { a & !m }).collect())
    }
    /// Whether every member of `self` is in `other`.
    fn is_subset(&self, other: &Bits) -> bool {
        self.0.iter().zip(other.0.iter()).all(|(a, b)| a & !b == 0)
    }
}

/// The configurations explored, with subsumption: a configuration is the certain entries linearized, the state,
/// and the maybe entries linearized. One with the same certain entries and state as a configuration explored
/// before, and a superset of its maybe entries, is not explored: whatever completes it completes the earlier
/// one too (which may leave the extra maybe entries out, as never having taken effect), so it adds nothing.
/// For each certain set and state the memo keeps the maybe sets that no other one there is a subset of.
///
/// Looked up by key only, never iterated: the map's order cannot leak.
#[allow(clippy::disallowed_types)]
struct Memo<S>(HashMap<(Bits, S), Vec<Bits>>);

#[allow(clippy::disallowed_types)]
impl<S: Hash + Eq + Clone> Default for Memo<S> {
    fn default() -> Self {
        Memo(HashMap::new())
    }
}

impl<S: Hash + Eq + Clone> Memo<S> {
    /// Records the configuration of `linearized` and `state`; false if one explored before subsumes it.
    fn insert(&mut self, linearized: &Bits, certain_mask: &Bits, state: &S) -> bool {
        let maybe = linearized.masked(certain_mask, false);
        let seen = self.0.entry((linearized.masked(certain_mask, true), state.clone())).or_default();
        if seen.iter().any(|m| m.is_subset(&maybe)) {
            return false;
        }
        seen.retain(|m| !maybe.is_subset(m));
        seen.push(maybe);
        true
    }
}

/// How one object's search ended.
enum Searched {
    Linearizable { explored: u64 },
    Violation(Violation),
    Inconclusive { explored: u64 },
}

/// A step of the current path: the entry linearized, where to go on after it, and what it replaced.
struct Frame<S> {
    entry: usize,
    /// The cursor to go on from in the configuration before it.
    resume: usize,
    /// The state before it.
    before: S,
    /// The maybe entries linearized in a row just before it.
    run_before: usize,
}

/// The deepest configuration reached: the path to it, its state, and the certain entry that had to come next.
struct Deepest<S> {
    path: Vec<usize>,
    state: S,
    blocking: usize,
}

/// The rounds of the search: the most maybe entries it linearizes in a row, between two certain ones. Every
/// round but the last is a quick try (a success is a linearization all the same); the last has no limit, so its
/// failure is a violation.
const MAYBE_RUNS: [usize; 5] = [1, 2, 4, 8, usize::MAX];

/// How one round ended.
enum Round<S> {
    Linearizable,
    Failed(Deepest<S>),
    OverBudget,
}

/// Searches for a linearization of one object's entries, in rounds ([`MAYBE_RUNS`]).
fn search<M: Model>(
    model: &M,
    object: &str,
    mut entries: Vec<Entry<'_, M::Input, M::Output>>,
    budget: u64,
) -> Searched {
    // Candidates are scanned in invocation order, and stop at the first invoked after the deadline.
    entries.sort_by_key(|e| (e.invoked, e.id));
    let maybes = entries.iter().filter(|e| e.expected.is_none()).count();
    let mut explored = 0;
    for max_run in MAYBE_RUNS {
        // A limit of at least the number of maybe entries is no limit: this round is the last.
        let last = max_run >= maybes;
        match round(model, &entries, max_run, budget, &mut explored) {
            Round::Linearizable => return Searched::Linearizable { explored },
            Round::OverBudget => return Searched::Inconclusive { explored },
            Round::Failed(deepest) if last => {
                return Searched::Violation(violation(model, object, &entries, deepest));
            }
            Round::Failed(_) => {}
        }
    }
    unreachable!("the last round has no limit")
}

/// One round of the search: at most `max_run` maybe entries in a row, counting the configurations explored into
/// `explored`, up to `budget`.
fn round<M: Model>(
    model: &M,
    entries: &[Entry<'_, M::Input, M::Output>],
    max_run: usize,
    budget: u64,
    explored: &mut u64,
) -> Round<M::State> {
    let n = entries.len();
    // The certain entries by completion: the first not yet linearized bounds which entries may come next.
    let mut by_deadline: Vec<usize> = (0..n).filter(|&i| entries[i].expected.is_some()).collect();
    by_deadline.sort_by_key(|&i| (entries[i].deadline, entries[i].invoked, entries[i].id));
    let mut rank = vec![usize::MAX; n];
    let mut certain_mask = Bits::new(n);
    for (r, &i) in by_deadline.iter().enumerate() {
        rank[i] = r;
        certain_mask.set(i);
    }

    let mut linearized = Bits::new(n);
    let mut state = model.init();
    let mut memo = Memo::default();
    memo.insert(&linearized, &certain_mask, &state);
    *explored += 1;
    let mut stack: Vec<Frame<M::State>> = Vec::new();
    // The first certain entry (in `by_deadline`) not yet linearized, and the first entry not yet linearized.
    let mut first_certain = 0;
    let mut first_open = 0;
    // Where the current configuration's candidates go on (see below).
    let mut cursor = 0;
    // The maybe entries at the end of the path, after its last certain one.
    let mut run = 0;
    let mut deepest: Option<Deepest<M::State>> = None;

    loop {
        let Some(&blocking) = by_deadline.get(first_certain) else {
            return Round::Linearizable;
        };
        if cursor == 0 && deepest.as_ref().is_none_or(|d| stack.len() > d.path.len()) {
            deepest = Some(Deepest {
                path: stack.iter().map(|f| f.entry).collect(),
                state: state.clone(),
                blocking,
            });
        }
        // The entries invoked by the deadline, from the first not yet linearized, are the candidates: first the
        // certain ones in invocation order, then the maybe ones in reverse (cursor `n + k` is the k-th from the
        // last), the latest first as the likeliest to have taken effect just now.
        let hi = entries.partition_point(|e| e.invoked <= entries[blocking].deadline);
        let certain = (cursor.max(first_open)..hi)
            .find(|&i| entries[i].expected.is_some() && !linearized.get(i))
            .map(|i| (i, i + 1));
        let next = certain.or_else(|| {
            if run >= max_run {
                return None;
            }
            (cursor.saturating_sub(n)..hi.saturating_sub(first_open))
                .map(|k| (hi - 1 - k, n + k + 1))
                .find(|&(i, _)| entries[i].expected.is_none() && !linearized.get(i))
        });
        let Some((i, resume)) = next else {
            // Nothing more to try here: back up one step.
            let Some(frame) = stack.pop() else {
                return Round::Failed(deepest.expect("the initial configuration was recorded"));
            };
            let j = frame.entry;
            linearized.clear(j);
            state = frame.before;
            run = frame.run_before;
            first_certain = first_certain.min(rank[j]);
            first_open = first_open.min(j);
            cursor = frame.resume;
            continue;
        };
        cursor = resume;
        let e = &entries[i];
        let (after, output) = model.apply(&state, e.input);
        let fits = match e.expected {
            Some(value) => output == *value,
            // Taking effect without changing anything is the same as not taking effect, which stays possible.
            None => after != state,
        };
        if !fits {
            continue;
        }
        linearized.set(i);
        if !memo.insert(&linearized, &certain_mask, &after) {
            linearized.clear(i);
            continue;
        }
        *explored += 1;
        if *explored > budget {
            return Round::OverBudget;
        }
        let before = std::mem::replace(&mut state, after);
        stack.push(Frame { entry: i, resume, before, run_before: run });
        run = if e.expected.is_some() { 0 } else { run + 1 };
        while by_deadline.get(first_certain).is_some_and(|&c| linearized.get(c)) {
            first_certain += 1;
        }
        while first_open < n && linearized.get(first_open) {
            first_open += 1;
        }
        cursor = 0;
    }
}

/// The violation the deepest configuration shows.
fn violation<M: Model>(
    model: &M,
    object: &str,
    entries: &[Entry<'_, M::Input, M::Output>],
    deepest: Deepest<M::State>,
) -> Violation {
    let b = &entries[deepest.blocking];
    let concurrent: Vec<OpId> = {
        let mut ids: Vec<OpId> = entries
            .iter()
            .filter(|e| e.id != b.id && e.invoked <= b.deadline && b.invoked <= e.deadline)
            .map(|e| e.id)
            .collect();
        ids.sort();
        ids
    };
    let prefix: Vec<OpId> = deepest.path.iter().map(|&i| entries[i].id).collect();
    let (_, got) = model.apply(&deepest.state, b.input);
    let returned = b.expected.expect("the blocking entry is certain");
    let after = describe_prefix(&prefix);
    let mut explanation = if got == *returned {
        format!(
            "object {object}: {} (client {}, {:?}) returned {returned:?}, but no order of the concurrent operations \
             explains it and what follows: {after} it fits, and no operation can follow it",
            b.id, b.client, b.input
        )
    } else {
        format!(
            "object {object}: {} (client {}, {:?}) returned {returned:?}, but no order of the concurrent operations \
             gives it: {after} the model gives {got:?}",
            b.id, b.client, b.input
        )
    };
    if !concurrent.is_empty() {
        explanation.push_str(&format!(" (concurrent with it: {})", list(&concurrent)));
    }
    Violation { object: object.to_string(), op: b.id, concurrent, prefix, explanation }
}

/// How many operations a message lists before it abbreviates.
const LISTED: usize = 8;

/// "after op#3, op#7", abbreviated to its last operations when long, or "from the initial state".
fn describe_prefix(prefix: &[OpId]) -> String {
    match prefix.len() {
        0 => "from the initial state".to_string(),
        n if n <= LISTED => format!("after {}", list(prefix)),
        n => format!("after {n} operations ending {}", list(&prefix[n - LISTED..])),
    }
}

/// Operation ids, comma-separated, abbreviated when long.
fn list(ids: &[OpId]) -> String {
    let shown: Vec<String> = ids.iter().take(LISTED * 2).map(|id| id.to_string()).collect();
    let more = ids.len().saturating_sub(LISTED * 2);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    use super::*;
    use crate::check::models::*;
    use crate::check::testgen::{build, steps, Step};
    use crate::history::{ErrorFlags, Outcome};
    use crate::strategies::{counter_op, kv_op, register_op};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    type RegHistory = History<RegisterOp, RegisterOut>;

    /// Records an operation of `client` on `object` over `[from, to]` (`to: None`: left open).
    fn op<I, O>(
        h: &mut History<I, O>,
        client: u32,
        object: &str,
        input: I,
        from: u64,
        to: Option<u64>,
        out: Outcome<O>,
    ) -> OpId {
        let id = h.invoke(client, object, input, ms(from));
        if let Some(to) = to {
            h.complete(id, out, ms(to));
        }
        id
    }

    fn read(v: Option<i64>) -> Outcome<RegisterOut> {
        Outcome::Ok(RegisterOut::Value(v))
    }

    fn written() -> Outcome<RegisterOut> {
        Outcome::Ok(RegisterOut::Written)
    }

    fn err(overloaded: bool) -> Outcome<RegisterOut> {
        Outcome::Err {
            message: "x".into(),
            flags: ErrorFlags { overloaded, durable_object_reset: !overloaded, ..ErrorFlags::default() },
        }
    }

    fn check_reg(h: &RegHistory) -> Result<LinearizableReport, LinearizabilityError> {
        check_linearizable(&RegisterModel::default(), h)
    }

    fn violation_of<T: Debug>(r: Result<T, LinearizabilityError>) -> Violation {
        match r {
            Err(LinearizabilityError::Violation(v)) => v,
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_a_violation() {
        let mut h = RegHistory::new();
        let w = op(&mut h, 0, "r", RegisterOp::Write(1), 0, Some(10), written());
        let r = op(&mut h, 1, "r", RegisterOp::Read, 20, Some(30), read(None));
        let v = violation_of(check_reg(&h));
        assert_eq!((v.object.as_str(), v.op, v.prefix.clone()), ("r", r, vec![w]));
        assert!(v.concurrent.is_empty());
        assert_eq!(v.ops(), vec![w, r]);
        assert_eq!(
            v.to_string(),
            "object r: op#1 (client 1, Read) returned Value(None), but no order of the concurrent operations \
             gives it: after op#0 the model gives Value(Some(1))"
        );
        assert!(LinearizabilityError::Violation(v)
            .to_string()
            .starts_with("not linearizable: object r: op#1"));

        // Control: the same read overlapping the write may see the old value.
        let mut h = RegHistory::new();
        op(&mut h, 0, "r", RegisterOp::Write(1), 0, Some(20), written());
        op(&mut h, 1, "r", RegisterOp::Read, 10, Some(30), read(None));
        assert!(check_reg(&h).is_ok());
        // And an operation invoked at the instant another completed counts as concurrent with it.
        let mut h = RegHistory::new();
        op(&mut h, 0, "r", RegisterOp::Write(1), 0, Some(20), written());
        op(&mut h, 1, "r", RegisterOp::Read, 20, Some(30), read(None));
        assert!(check_reg(&h).is_ok());
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_value_but_not_another() {
        for (seen, ok) in [(None, true), (Some(1), true), (Some(2), false)] {
            let mut h = RegHistory::new();
            op(&mut h, 0, "r", RegisterOp::Write(1), 0, Some(20), written());
            let r = op(&mut h, 1, "r", RegisterOp::Read, 5, Some(15), read(seen));
            match check_reg(&h) {
                Ok(report) => assert!(ok, "{seen:?} passed: {report}"),
                Err(e) => {
                    assert!(!ok, "{seen:?}: {e}");
                    let v = violation_of::<()>(Err(e));
                    assert_eq!(v.op, r);
                    assert_eq!(v.concurrent, vec![OpId(0)]);
                    assert!(v.explanation.ends_with("(concurrent with it: op#0)"), "{v}");
                }
            }
        }
    }

    #[test]
    fn once_a_read_sees_a_write_a_later_read_cannot_see_the_value_before_it() {
        let mut h = RegHistory::new();
        op(&mut h, 0, "r", RegisterOp::Write(1), 0, Some(100), written());
        op(&mut h, 1, "r", RegisterOp::Read, 10, Some(20), read(Some(1)));
        let late = op(&mut h, 2, "r", RegisterOp::Read, 30, Some(40), read(None));
        assert_eq!(violation_of(check_reg(&h)).op, late);
    }

    #[test]
    fn an_unknown_write_may_show_at_any_time_after_its_invocation_or_never() {
        // The client gave up at 10; a read after a later write still sees the first write: it took effect late.
        for (outcome, to) in [(Outcome::Unknown, Some(10)), (err(false), Some(10)), (Outcome::Unknown, None)]
        {
            for seen in [Some(1), Some(2)] {
                let mut h = RegHistory::new();
                op(&mut h, 0, "r", RegisterOp::Write(1), 0, to, outcome.clone());
                op(&mut h, 1, "r", RegisterOp::Write(2), 20, Some(30), written());
                op(&mut h, 1, "r", RegisterOp::Read, 40, Some(50), read(seen));
                let report = check_reg(&h).unwrap_or_else(|e| panic!("{outcome}, read {seen:?}: {e}"));
                assert_eq!((report.ops, report.certain), (3, 2));
            }
        }
        // Never: a read long after sees nothing.
        let mut h = RegHistory::new();
        op(&mut h, 0, "r", RegisterOp::Write(1), 0, Some(10), Outcome::Unknown);
        op(&mut h, 1, "r", RegisterOp::Read, 40, Some(50), read(None));
        assert!(check_reg(&h).is_ok());
        // But not before its invocation.
        let mut h = RegHistory::new();
        let r = op(&mut h, 1, "r", RegisterOp::Read, 0, Some(5), read(Some(1)));
        op(&mut h, 0, "r", RegisterOp::Write(1), 10, Some(20), Outcome::Unknown);
        assert_eq!(violation_of(check_reg(&h)).op, r);
        // Control: had the first write returned, the read after the second write could not see it.
        let mut h = RegHistory::new();
        op(&mut h, 0, "r", RegisterOp::Write(1), 0, Some(10), written());
        op(&mut h, 1, "r", RegisterOp::Write(2), 20, Some(30), written());
        let r = op(&mut h, 1, "r", RegisterOp::Read, 40, Some(50), read(Some(1)));
        assert_eq!(violation_of(check_reg(&h)).op, r);
    }

    #[test]
    fn an_overloaded_operation_never_shows() {
        let mut h = RegHistory::new();
        op(&mut h, 0, "r", RegisterOp::Write(1), 0, Some(10), err(true));
        let r = op(&mut h, 1, "r", RegisterOp::Read, 20, Some(30), read(Some(1)));
        let v = violation_of(check_reg(&h));
        assert_eq!((v.op, v.prefix.as_slice()), (r, &[][..]));
        assert!(v.explanation.contains("from the initial state the model gives Value(None)"), "{v}");
        assert!(v.concurrent.is_empty(), "the overloaded write is left out: {v:?}");

        let mut h = RegHistory::new();
        op(&mut h, 0, "r", RegisterOp::Write(1), 0, Some(10), err(true));
        op(&mut h, 1, "r", RegisterOp::Read, 20, Some(30), read(None));
        let report = check_reg(&h).unwrap();
        assert_eq!((report.ops, report.excluded), (1, 1));
        // Control: the same error without the overloaded flag may have taken effect.
        let mut h = RegHistory::new();
        op(&mut h, 0, "r", RegisterOp::Write(1), 0, Some(10), err(false));
        op(&mut h, 1, "r", RegisterOp::Read, 20, Some(30), read(Some(1)));
        assert!(check_reg(&h).is_ok());
    }

    #[test]
    fn two_concurrent_adds_cannot_both_return_the_same_value() {
        let model = CounterModel::default();
        let mut h: History<CounterOp, i64> = History::new();
        op(&mut h, 0, "c", CounterOp::Add(1), 0, Some(10), Outcome::Ok(1));
        op(&mut h, 1, "c", CounterOp::Add(1), 5, Some(15), Outcome::Ok(2));
        op(&mut h, 2, "c", CounterOp::Read, 20, Some(30), Outcome::Ok(2));
        assert!(check_linearizable(&model, &h).is_ok());

        let mut h: History<CounterOp, i64> = History::new();
        let a = op(&mut h, 0, "c", CounterOp::Add(1), 0, Some(10), Outcome::Ok(1));
        let b = op(&mut h, 1, "c", CounterOp::Add(1), 5, Some(15), Outcome::Ok(1));
        let v = violation_of(check_linearizable(&model, &h));
        assert_eq!((v.op, v.prefix.clone(), v.concurrent.clone()), (b, vec![a], vec![a]));
        assert_eq!(
            v.explanation,
            "object c: op#1 (client 1, Add(1)) returned 1, but no order of the concurrent operations gives it: \
             after op#0 the model gives 2 (concurrent with it: op#0)"
        );
    }

    #[test]
    fn several_maybe_operations_may_take_effect_in_a_row() {
        // The read needs both unknown adds before it: the first round (one maybe operation in a row) cannot
        // explain it, a later one does; three is more than there is.
        let model = CounterModel::default();
        for (seen, ok) in [(0, true), (1, true), (2, true), (3, false)] {
            let mut h: History<CounterOp, i64> = History::new();
            op(&mut h, 0, "c", CounterOp::Add(1), 0, Some(10), Outcome::Unknown);
            op(&mut h, 1, "c", CounterOp::Add(1), 0, None, Outcome::Unknown);
            let r = op(&mut h, 2, "c", CounterOp::Read, 20, Some(30), Outcome::Ok(seen));
            match check_linearizable(&model, &h) {
                Ok(report) => {
                    assert!(ok, "read {seen} passed");
                    assert_eq!((report.ops, report.certain), (3, 1));
                }
                Err(e) => {
                    assert!(!ok, "read {seen}: {e}");
                    let v = violation_of::<()>(Err(e));
                    assert_eq!((v.op, v.concurrent.as_slice()), (r, &[OpId(0), OpId(1)][..]));
                    assert!(v.explanation.contains("returned 3, but no order"), "{v}");
                }
            }
        }
    }

    #[test]
    fn objects_are_checked_independently_and_in_order() {
        let mut h = RegHistory::new();
        // A write on a does not show on b; b's read of 1 is the violation, although a's history alone is fine.
        op(&mut h, 0, "b", RegisterOp::Write(2), 0, Some(10), written());
        op(&mut h, 1, "a", RegisterOp::Write(1), 0, Some(10), written());
        op(&mut h, 1, "a", RegisterOp::Read, 20, Some(30), read(Some(1)));
        let bad = op(&mut h, 0, "b", RegisterOp::Read, 20, Some(30), read(Some(1)));
        let c_bad = op(&mut h, 2, "c", RegisterOp::Read, 20, Some(30), read(Some(1)));
        let v = violation_of(check_reg(&h));
        assert_eq!((v.object.as_str(), v.op), ("b", bad), "b comes before c");
        assert_ne!(v.op, c_bad);

        let mut h = RegHistory::new();
        op(&mut h, 0, "b", RegisterOp::Write(2), 0, Some(10), written());
        op(&mut h, 1, "a", RegisterOp::Write(1), 0, Some(10), written());
        op(&mut h, 1, "a", RegisterOp::Read, 20, Some(30), read(Some(1)));
        op(&mut h, 0, "b", RegisterOp::Read, 20, Some(30), read(Some(2)));
        let report = check_reg(&h).unwrap();
        assert_eq!((report.objects, report.ops, report.certain, report.excluded), (2, 4, 4, 0));
        assert!(report.explored >= 4 + 2, "each object's initial state and one per op: {report:?}");
        assert_eq!(
            report.to_string(),
            format!("linearizable: 2 objects, 4 operations (4 with a value, 0 overloaded left out), {} states explored", report.explored)
        );
    }

    #[test]
    fn a_search_over_budget_is_inconclusive_not_a_pass() {
        // Many concurrent writes and a read that fits none of them: the search must try every order.
        let mut h = RegHistory::new();
        for c in 0..10 {
            op(&mut h, c, "r", RegisterOp::Write(i64::from(c)), 0, Some(100), written());
        }
        op(&mut h, 10, "r", RegisterOp::Read, 0, Some(100), read(Some(99)));
        let model = RegisterModel::default();
        assert_eq!(
            check_linearizable_with_budget(&model, &h, 50),
            Err(LinearizabilityError::Inconclusive { object: "r".into(), explored: 51 })
        );
        let e = check_linearizable_with_budget(&model, &h, 50).unwrap_err();
        assert!(e.violation().is_none());
        assert_eq!(
            e.to_string(),
            "object r: linearizability inconclusive, the search explored 51 states without deciding (raise the \
             budget or shorten the history)"
        );
        // With the default budget it is decided.
        assert_eq!(violation_of(check_linearizable(&model, &h)).op, OpId(10));
    }

    #[test]
    fn a_violation_on_a_later_object_wins_over_an_earlier_inconclusive_one() {
        let mut h = RegHistory::new();
        for c in 0..10 {
            op(&mut h, c, "a", RegisterOp::Write(i64::from(c)), 0, Some(100), written());
        }
        op(&mut h, 10, "a", RegisterOp::Read, 0, Some(100), read(Some(99)));
        let bad = op(&mut h, 11, "b", RegisterOp::Read, 0, Some(100), read(Some(99)));
        let e = check_linearizable_with_budget(&RegisterModel::default(), &h, 50).unwrap_err();
        assert_eq!(e.violation().map(|v| v.op), Some(bad));
    }

    #[test]
    fn a_long_prefix_is_abbreviated_in_the_explanation() {
        let model = CounterModel::default();
        let mut h: History<CounterOp, i64> = History::new();
        for i in 0..20 {
            op(&mut h, 0, "c", CounterOp::Add(1), 10 * i, Some(10 * i + 5), Outcome::Ok(i as i64 + 1));
        }
        op(&mut h, 0, "c", CounterOp::Read, 300, Some(305), Outcome::Ok(7));
        let v = violation_of(check_linearizable(&model, &h));
        assert_eq!(v.prefix.len(), 20);
        assert!(
            v.explanation.ends_with(
                "after 20 operations ending op#12, op#13, op#14, op#15, op#16, op#17, op#18, op#19 the model gives 20"
            ),
            "{v}"
        );
    }

    /// A value the register model can never return (writes are non-negative).
    fn impossible_register(_: &RegisterOp) -> RegisterOut {
        RegisterOut::Value(Some(-1))
    }

    /// A value the counter model can never return (adds are positive, from 0).
    fn impossible_counter(_: &CounterOp) -> i64 {
        -1
    }

    /// A value the key-value model can never return (no put writes it).
    fn impossible_kv(_: &KvOp) -> KvOut {
        KvOut::Value(Some("never".into()))
    }

    /// Checks the history of `steps`, and the same history with one value replaced by `impossible`: the first
    /// must pass, having checked every operation, the second must be a violation on the replaced value's object.
    fn positive_and_negative<M: Model>(
        model: &M,
        clients: usize,
        steps: &[Step<M::Input>],
        nth: usize,
        impossible: &dyn Fn(&M::Input) -> M::Output,
    ) -> Result<(), TestCaseError> {
        let built = build(model, clients, steps, None);
        let report = check_linearizable(model, &built.history)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{:#?}", built.history.ops())))?;
        prop_assert_eq!(report.ops + report.excluded, steps.len());
        // The initial configuration of each object, and one for each certain operation at least.
        prop_assert!(report.explored >= (report.objects + report.certain) as u64);

        let bad = build(model, clients, steps, Some((nth, impossible)));
        let Some(corrupted) = bad.corrupted else { return Ok(()) };
        let object = &bad.history.get(corrupted).unwrap().object;
        match check_linearizable(model, &bad.history) {
            Err(LinearizabilityError::Violation(v)) => {
                prop_assert_eq!(&v.object, object);
                prop_assert!(!v.prefix.contains(&corrupted), "{} cannot be linearized: {}", corrupted, v);
            }
            other => prop_assert!(false, "{} replaced: expected a violation, got {:?}", corrupted, other),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn sequential_executions_of_a_register_are_linearizable_and_a_changed_value_is_not(
            steps in steps(register_op(), 3, 1..60, 4), clients in 1usize..=5, nth in any::<usize>(),
        ) {
            positive_and_negative(&RegisterModel::default(), clients, &steps, nth, &impossible_register)?;
        }

        #[test]
        fn sequential_executions_of_a_counter_are_linearizable_and_a_changed_value_is_not(
            steps in steps(counter_op(), 2, 1..60, 4), clients in 1usize..=5, nth in any::<usize>(),
        ) {
            positive_and_negative(&CounterModel::default(), clients, &steps, nth, &impossible_counter)?;
        }

        #[test]
        fn sequential_executions_of_a_kv_map_are_linearizable_and_a_changed_value_is_not(
            steps in steps(kv_op(&["a", "b", "c"]), 2, 1..60, 4), clients in 1usize..=5, nth in any::<usize>(),
        ) {
            positive_and_negative(&KvModel, clients, &steps, nth, &impossible_kv)?;
        }
    }

    /// Times the check of generated register, counter and key-value histories: not an assertion on time (the
    /// machine is shared), a measurement to read with
    /// `cargo test -p dosim-scenarios --release --lib check::linearizable::tests::timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn timing() {
        /// Mean and worst time, mean states explored, and how many ended how.
        #[derive(Default)]
        struct Tally {
            total: Duration,
            worst: Duration,
            explored: u64,
            passed: u32,
            violations: u32,
            inconclusive: u32,
        }
        impl Tally {
            fn add(&mut self, took: Duration, result: Result<LinearizableReport, LinearizabilityError>) {
                self.total += took;
                self.worst = self.worst.max(took);
                match result {
                    Ok(report) => {
                        self.passed += 1;
                        self.explored += report.explored;
                    }
                    Err(LinearizabilityError::Violation(_)) => self.violations += 1,
                    Err(LinearizabilityError::Inconclusive { explored, .. }) => {
                        self.explored += explored;
                        self.inconclusive += 1;
                    }
                }
            }
            fn show(&self, runs: u32) -> String {
                format!(
                    "mean {:.2?}, worst {:.2?}, {} passed, {} violations, {} inconclusive",
                    self.total / runs,
                    self.worst,
                    self.passed,
                    self.violations,
                    self.inconclusive
                )
            }
        }
        fn time<M: Model>(
            name: &str,
            model: &M,
            input: impl Strategy<Value = M::Input>,
            impossible: &dyn Fn(&M::Input) -> M::Output,
            shape: (usize, usize, usize, u32),
        ) {
            let (objects, per_object, clients, other) = shape;
            let mut runner = TestRunner::deterministic();
            let n = objects * per_object;
            let strategy = steps(input, objects, n..n + 1, other);
            let runs: u32 = 20;
            let (mut good, mut bad) = (Tally::default(), Tally::default());
            for run in 0..runs {
                let s = strategy.new_tree(&mut runner).unwrap().current();
                let built = build(model, clients, &s, None);
                let start = Instant::now();
                let result = check_linearizable(model, &built.history);
                good.add(start.elapsed(), result);
                let built = build(model, clients, &s, Some((run as usize * 7919, impossible)));
                let start = Instant::now();
                let result = check_linearizable(model, &built.history);
                bad.add(start.elapsed(), result);
            }
            println!(
                "{name:8} {objects:2}x{per_object} ops, {clients:2} clients, {:2}% not ok: {} states explored on average, \
                 {}; with a value changed: {}",
                other * 400 / (48 + 4 * other),
                good.explored / u64::from(runs),
                good.show(runs),
                bad.show(runs),
            );
        }
        for other in [0, 1, 4] {
            for (objects, per_object) in [(1, 200), (10, 100)] {
                // Clients spread over the objects: 50 on 10 objects is about 5 on each.
                for clients in [5, 10, 50] {
                    if objects == 1 && clients == 50 {
                        continue;
                    }
                    let shape = (objects, per_object, clients, other);
                    time("register", &RegisterModel::default(), register_op(), &impossible_register, shape);
                    time("counter", &CounterModel::default(), counter_op(), &impossible_counter, shape);
                    time("kv", &KvModel, kv_op(&["a", "b", "c"]), &impossible_kv, shape);
                }
            }
        }
    }
}
