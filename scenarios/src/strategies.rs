//! Proptest strategies for the inputs of the ready models ([`crate::check::models`]), for workloads and
//! property tests to compose.
//!
//! Each model has a strategy for one input (`register_op`, `counter_op`, `kv_op`) and one for a sequence of
//! them (`register_ops`, `counter_ops`, `kv_ops`); [`op_sequence`] turns any input strategy into a sequence
//! strategy. The sequences are what one client, or a whole workload, asks in order: how they interleave is
//! the workload's business (its clients and the simulation decide), so there is no interleaving strategy here.
//!
//! ```
//! use dosim_scenarios::check::models::{KvOp, RegisterOp};
//! use dosim_scenarios::strategies::{kv_op, op_sequence, register_ops};
//! use proptest::prelude::*;
//!
//! // Three clients, each with its own script of register operations.
//! let scripts = proptest::collection::vec(register_ops(1..20), 3);
//! // A key-value workload over two keys, with a read at the end.
//! let kv = (op_sequence(kv_op(&["a", "b"]), 5..10), Just(KvOp::Get("a".to_string())));
//!
//! proptest!(|(scripts in scripts, (mut ops, last) in kv)| {
//!     assert_eq!(scripts.len(), 3);
//!     assert!(scripts.iter().all(|s| !s.is_empty() && s.len() < 20));
//!     ops.push(last);
//!     assert!(ops.len() >= 6);
//! });
//! # let _ = RegisterOp::Read;
//! ```

use proptest::collection::{vec, SizeRange};
use proptest::prelude::*;

use crate::check::models::{CounterOp, KvOp, RegisterOp};

/// The values [`register_op`] writes: `0..REGISTER_VALUES`, few enough that reads often see a value written
/// more than once.
pub const REGISTER_VALUES: i64 = 100;

/// The amounts [`counter_op`] adds: `1..=COUNTER_STEP_MAX` (a counter that only grows, as most do).
pub const COUNTER_STEP_MAX: i64 = 10;

/// The values [`kv_op`] puts: `v0` to `v{KV_VALUES - 1}`.
pub const KV_VALUES: u32 = 20;

/// A sequence of `len` inputs (a fixed length or a range), each from `input`.
pub fn op_sequence<S: Strategy>(input: S, len: impl Into<SizeRange>) -> impl Strategy<Value = Vec<S::Value>> {
    vec(input, len)
}

/// One register operation: a read or a write of a value in `0..`[`REGISTER_VALUES`], equally often.
pub fn register_op() -> impl Strategy<Value = RegisterOp> {
    prop_oneof![Just(RegisterOp::Read), (0..REGISTER_VALUES).prop_map(RegisterOp::Write)]
}

/// A sequence of `len` register operations.
pub fn register_ops(len: impl Into<SizeRange>) -> impl Strategy<Value = Vec<RegisterOp>> {
    op_sequence(register_op(), len)
}

/// One counter operation: an add of `1..=`[`COUNTER_STEP_MAX`] twice as often as a read.
pub fn counter_op() -> impl Strategy<Value = CounterOp> {
    prop_oneof![2 => (1..=COUNTER_STEP_MAX).prop_map(CounterOp::Add), 1 => Just(CounterOp::Read)]
}

/// A sequence of `len` counter operations.
pub fn counter_ops(len: impl Into<SizeRange>) -> impl Strategy<Value = Vec<CounterOp>> {
    op_sequence(counter_op(), len)
}

/// One key-value operation on one of `keys`: a get, a put (of `v0` to `v{KV_VALUES - 1}`) or a delete, in the
/// proportions 2:2:1.
///
/// # Panics
/// If `keys` is empty.
pub fn kv_op(keys: &[&str]) -> impl Strategy<Value = KvOp> {
    assert!(!keys.is_empty(), "kv_op needs at least one key");
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let key = proptest::sample::select(keys);
    prop_oneof![
        2 => key.clone().prop_map(KvOp::Get),
        2 => (key.clone(), 0..KV_VALUES).prop_map(|(k, v)| KvOp::Put(k, format!("v{v}"))),
        1 => key.prop_map(KvOp::Delete),
    ]
}

/// A sequence of `len` key-value operations on `keys`.
///
/// # Panics
/// If `keys` is empty.
pub fn kv_ops(keys: &[&str], len: impl Into<SizeRange>) -> impl Strategy<Value = Vec<KvOp>> {
    op_sequence(kv_op(keys), len)
}

/// A fault mix drawn from `kinds`: a non-empty subset of them, at a mean interval between faults from
/// 300 ms to 3 s. With the kit's [`FaultMix`](crate::faults::FaultMix) as the value, a property test
/// composes faults with its operations (each seed then draws its own schedule from the mix).
pub fn fault_mix(kinds: &[crate::faults::FaultKind]) -> impl Strategy<Value = crate::faults::FaultMix> {
    assert!(!kinds.is_empty(), "a fault mix strategy needs kinds to choose from");
    let kinds = kinds.to_vec();
    (proptest::sample::subsequence(kinds.clone(), 1..=kinds.len()), 300u64..3_000).prop_map(|(chosen, ms)| {
        chosen
            .into_iter()
            .fold(crate::faults::FaultMix::none(), |mix, k| mix.with(k))
            .mean_interval(std::time::Duration::from_millis(ms))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    /// Draws `n` values of `s` from a fixed-seed runner.
    fn draw<S: Strategy>(s: S, n: usize) -> Vec<S::Value> {
        let mut runner = TestRunner::deterministic();
        (0..n).map(|_| s.new_tree(&mut runner).unwrap().current()).collect()
    }

    #[test]
    fn the_strategies_cover_every_kind_of_operation_within_their_ranges() {
        let reg = draw(register_op(), 200);
        assert!(reg.contains(&RegisterOp::Read));
        assert!(reg.iter().any(|o| matches!(o, RegisterOp::Write(_))));
        assert!(reg.iter().all(|o| !matches!(o, RegisterOp::Write(v) if !(0..REGISTER_VALUES).contains(v))));

        let counter = draw(counter_op(), 200);
        assert!(counter.contains(&CounterOp::Read));
        assert!(counter
            .iter()
            .all(|o| !matches!(o, CounterOp::Add(n) if !(1..=COUNTER_STEP_MAX).contains(n))));
        assert!(counter.iter().any(|o| matches!(o, CounterOp::Add(_))));

        let kv = draw(kv_op(&["a", "b"]), 300);
        let key = |o: &KvOp| match o {
            KvOp::Get(k) | KvOp::Put(k, _) | KvOp::Delete(k) => k.clone(),
        };
        assert!(kv.iter().all(|o| key(o) == "a" || key(o) == "b"));
        assert!(kv.iter().any(|o| key(o) == "b"));
        assert!(kv.iter().any(|o| matches!(o, KvOp::Get(_))));
        assert!(kv.iter().any(|o| matches!(o, KvOp::Delete(_))));
        assert!(kv.iter().any(|o| matches!(o, KvOp::Put(_, v) if v.starts_with('v'))));
    }

    #[test]
    fn fault_mixes_are_non_empty_subsets_of_the_kinds_given() {
        use crate::faults::FaultKind;
        let pool = [FaultKind::Crash, FaultKind::Eviction, FaultKind::DiskErrors];
        let mut seen = std::collections::BTreeSet::new();
        for mix in draw(fault_mix(&pool), 100) {
            let kinds: Vec<FaultKind> = mix.kinds().collect();
            assert!(!kinds.is_empty() && kinds.iter().all(|k| pool.contains(k)), "{kinds:?}");
            seen.insert(kinds);
        }
        assert!(seen.len() >= 5, "different subsets: {seen:?}");
    }

    #[test]
    fn sequences_have_the_lengths_asked() {
        for ops in draw(register_ops(3..7), 50) {
            assert!((3..7).contains(&ops.len()), "{ops:?}");
        }
        assert!(draw(counter_ops(4), 10).iter().all(|ops| ops.len() == 4));
        assert!(draw(kv_ops(&["k"], 2..=2), 10).iter().all(|ops| ops.len() == 2));
    }
}
