//! Ready sequential specifications for the linearizability checker: a register, a counter and a key-value map.
//!
//! Each is a [`Model`] with plain input and output types (no serde, `Debug`-printable) that a workload's
//! clients record into a [`History`](crate::history::History). An object whose interface differs maps its
//! calls onto one of these, or implements [`Model`] itself.

use std::collections::BTreeMap;

use super::Model;

/// A read/write register holding an `i64`, empty until the first write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegisterModel {
    /// What a read of a new register returns (`None`: never written).
    pub initial: Option<i64>,
}

/// A register operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOp {
    /// Read the value.
    Read,
    /// Write this value.
    Write(i64),
}

/// What a register operation returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOut {
    /// A read's value (`None`: never written).
    Value(Option<i64>),
    /// A write's acknowledgement.
    Written,
}

impl Model for RegisterModel {
    type Input = RegisterOp;
    type Output = RegisterOut;
    type State = Option<i64>;

    fn init(&self) -> Option<i64> {
        self.initial
    }

    fn apply(&self, state: &Option<i64>, input: &RegisterOp) -> (Option<i64>, RegisterOut) {
        match *input {
            RegisterOp::Read => (*state, RegisterOut::Value(*state)),
            RegisterOp::Write(v) => (Some(v), RegisterOut::Written),
        }
    }
}

/// A counter: adds return the value after them, reads the value. Arithmetic wraps (no panic on overflow).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterModel {
    /// The value of a new counter.
    pub initial: i64,
}

/// A counter operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CounterOp {
    /// Add this amount (negative to subtract); returns the value after.
    Add(i64),
    /// Read the value.
    Read,
}

impl Model for CounterModel {
    type Input = CounterOp;
    /// The value after the operation.
    type Output = i64;
    type State = i64;

    fn init(&self) -> i64 {
        self.initial
    }

    fn apply(&self, state: &i64, input: &CounterOp) -> (i64, i64) {
        let after = match *input {
            CounterOp::Add(n) => state.wrapping_add(n),
            CounterOp::Read => *state,
        };
        (after, after)
    }
}

/// A map from strings to strings, empty at first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvModel;

/// A key-value operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOp {
    /// Read a key's value.
    Get(String),
    /// Set a key's value.
    Put(String, String),
    /// Remove a key; returns whether it existed.
    Delete(String),
}

/// What a key-value operation returns.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOut {
    /// A get's value (`None`: absent).
    Value(Option<String>),
    /// A put's acknowledgement.
    Written,
    /// A delete's answer: whether the key existed.
    Deleted(bool),
}

impl Model for KvModel {
    type Input = KvOp;
    type Output = KvOut;
    type State = BTreeMap<String, String>;

    fn init(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn apply(&self, state: &BTreeMap<String, String>, input: &KvOp) -> (BTreeMap<String, String>, KvOut) {
        match input {
            KvOp::Get(k) => (state.clone(), KvOut::Value(state.get(k).cloned())),
            KvOp::Put(k, v) => {
                let mut after = state.clone();
                after.insert(k.clone(), v.clone());
                (after, KvOut::Written)
            }
            KvOp::Delete(k) => {
                let mut after = state.clone();
                let existed = after.remove(k).is_some();
                (after, KvOut::Deleted(existed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_models_follow_their_sequential_specifications() {
        let r = RegisterModel::default();
        let s = r.init();
        assert_eq!(r.apply(&s, &RegisterOp::Read), (None, RegisterOut::Value(None)));
        let (s, out) = r.apply(&s, &RegisterOp::Write(4));
        assert_eq!(out, RegisterOut::Written);
        assert_eq!(r.apply(&s, &RegisterOp::Read), (Some(4), RegisterOut::Value(Some(4))));

        let c = CounterModel { initial: 10 };
        let (s, out) = c.apply(&c.init(), &CounterOp::Add(-3));
        assert_eq!((s, out), (7, 7));
        assert_eq!(c.apply(&s, &CounterOp::Read), (7, 7));
        assert_eq!(c.apply(&i64::MAX, &CounterOp::Add(1)).1, i64::MIN, "wraps instead of panicking");

        let kv = KvModel;
        let s = kv.init();
        let (s, out) = kv.apply(&s, &KvOp::Put("a".into(), "1".into()));
        assert_eq!(out, KvOut::Written);
        assert_eq!(kv.apply(&s, &KvOp::Get("a".into())).1, KvOut::Value(Some("1".into())));
        assert_eq!(kv.apply(&s, &KvOp::Get("b".into())).1, KvOut::Value(None));
        let (s, out) = kv.apply(&s, &KvOp::Delete("a".into()));
        assert_eq!(out, KvOut::Deleted(true));
        assert_eq!(kv.apply(&s, &KvOp::Delete("a".into())).1, KvOut::Deleted(false));
        assert!(s.is_empty());
    }
}
