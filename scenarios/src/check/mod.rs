//! Checkers: judges of the [`History`](crate::history::History) a workload's clients recorded.
//!
//! - [`linearizable`]: whether every object's operations have an order that respects real time and that the
//!   object's sequential specification (a [`Model`]) produces. Ready models are in [`models`].
//!
//! ```
//! use std::time::Duration;
//! use dosim_scenarios::check::{check_linearizable, RegisterModel, RegisterOp, RegisterOut};
//! use dosim_scenarios::history::{History, Outcome};
//!
//! let ms = Duration::from_millis;
//! let mut h = History::new();
//! let w = h.invoke(0, "r", RegisterOp::Write(1), ms(0));
//! h.complete(w, Outcome::Ok(RegisterOut::Written), ms(10));
//! let r = h.invoke(1, "r", RegisterOp::Read, ms(20));
//! h.complete(r, Outcome::Ok(RegisterOut::Value(None)), ms(30)); // stale: the write had completed
//! let err = check_linearizable(&RegisterModel::default(), &h).unwrap_err();
//! assert_eq!(err.violation().unwrap().op, r);
//! ```

pub mod linearizable;
pub mod models;

pub use linearizable::{
    check_linearizable, check_linearizable_with_budget, LinearizabilityError, LinearizableReport, Model,
    Violation, SEARCH_BUDGET_DEFAULT,
};
pub use models::{CounterModel, CounterOp, KvModel, KvOp, KvOut, RegisterModel, RegisterOp, RegisterOut};

/// Histories made from a sequential execution of a model, for the checker's tests: each operation takes
/// effect at its own instant, and its recorded interval contains that instant (or, for an operation without
/// an answer, starts before it).
#[cfg(test)]
pub(crate) mod testgen {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::Model;
    use crate::history::{ErrorFlags, History, OpId, Outcome};

    /// What becomes of an operation.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Fate {
        /// It takes effect and returns its value.
        Ok,
        /// It takes effect (`true`) or not, then fails with an error that is not `overloaded`.
        Err(bool),
        /// It takes effect or not; its client gives up at some time, maybe before it took effect.
        Unknown(bool),
        /// It takes effect or not; its client is still waiting at the end (a client's last operation only;
        /// otherwise it is `Unknown`).
        Open(bool),
        /// It is refused before it runs.
        Overloaded,
    }

    /// One operation of the sequential execution, in the order they take effect.
    #[derive(Clone, Debug)]
    pub(crate) struct Step<I> {
        /// The object, by index.
        pub(crate) object: usize,
        /// What it asks.
        pub(crate) input: I,
        /// Where its invocation falls between its client's previous completion and its instant, in percent.
        pub(crate) before: u8,
        /// Where its completion falls after its instant, in percent of the room before its client's next one.
        pub(crate) after: u8,
        /// What becomes of it.
        pub(crate) fate: Fate,
    }

    /// The fates: `Ok` with weight 48, each of the other four kinds (error, unknown, open, overloaded) with
    /// weight `other` (0: all ok; 1: about 8% not ok; 4: 25%).
    pub(crate) fn fate(other: u32) -> BoxedStrategy<Fate> {
        if other == 0 {
            return Just(Fate::Ok).boxed();
        }
        prop_oneof![
            48 => Just(Fate::Ok),
            other => any::<bool>().prop_map(Fate::Err),
            other => any::<bool>().prop_map(Fate::Unknown),
            other => any::<bool>().prop_map(Fate::Open),
            other => Just(Fate::Overloaded),
        ]
        .boxed()
    }

    /// Sequences of `len` steps on `objects` objects with inputs from `input`, fates by [`fate`]`(other)`.
    pub(crate) fn steps<S: Strategy>(
        input: S,
        objects: usize,
        len: std::ops::Range<usize>,
        other: u32,
    ) -> impl Strategy<Value = Vec<Step<S::Value>>> {
        proptest::collection::vec((0..objects, input, 0..=100u8, 0..=100u8, fate(other)), len).prop_map(|v| {
            v.into_iter()
                .map(|(object, input, before, after, fate)| Step { object, input, before, after, fate })
                .collect()
        })
    }

    /// The time between two operations' instants.
    const STEP: u64 = 100;

    /// A history built from `steps`.
    pub(crate) struct Built<I, O> {
        /// The history.
        pub(crate) history: History<I, O>,
        /// The operation whose value was replaced, if one was asked.
        pub(crate) corrupted: Option<OpId>,
    }

    /// The history of `steps` run by `clients` clients (step `k` by client `k % clients`), with the `nth`
    /// `Ok` operation (modulo their number), if asked, returning `impossible(input)` instead of its value.
    #[allow(clippy::type_complexity)]
    pub(crate) fn build<M: Model>(
        model: &M,
        clients: usize,
        steps: &[Step<M::Input>],
        corrupt: Option<(usize, &dyn Fn(&M::Input) -> M::Output)>,
    ) -> Built<M::Input, M::Output> {
        let us = Duration::from_micros;
        let oks = steps.iter().filter(|s| s.fate == Fate::Ok).count();
        let corrupt_nth = corrupt.filter(|_| oks > 0).map(|(nth, f)| (nth % oks, f));
        let mut states: Vec<M::State> = Vec::new();
        let mut done = vec![0u64; clients];
        let mut ok_seen = 0;
        let mut corrupted_step = None;
        // (invoked, step, input, completion and outcome)
        let mut records = Vec::new();
        for (k, s) in steps.iter().enumerate() {
            while states.len() <= s.object {
                states.push(model.init());
            }
            let c = k % clients;
            let at = STEP * (k as u64 + 1);
            let room = STEP * clients as u64 - 1;
            let invoked = at - (at - done[c]) * u64::from(s.before) / 100;
            let completed = at + room * u64::from(s.after) / 100;
            let last_of_client = k + clients >= steps.len();
            let applies = match s.fate {
                Fate::Ok => true,
                Fate::Err(a) | Fate::Unknown(a) | Fate::Open(a) => a,
                Fate::Overloaded => false,
            };
            let output = if applies {
                let (after, out) = model.apply(&states[s.object], &s.input);
                states[s.object] = after;
                Some(out)
            } else {
                None
            };
            let end = match s.fate {
                Fate::Ok => {
                    let mut value = output.expect("an ok step applies");
                    if let Some((nth, impossible)) = corrupt_nth {
                        if ok_seen == nth {
                            value = impossible(&s.input);
                            corrupted_step = Some(k);
                        }
                    }
                    ok_seen += 1;
                    Some((completed, Outcome::Ok(value)))
                }
                Fate::Err(_) => {
                    let flags = ErrorFlags { remote: true, ..ErrorFlags::default() };
                    Some((completed, Outcome::Err { message: "boom".into(), flags }))
                }
                Fate::Overloaded => {
                    let flags = ErrorFlags { overloaded: true, retryable: true, ..ErrorFlags::default() };
                    Some((completed, Outcome::Err { message: "overloaded".into(), flags }))
                }
                Fate::Open(_) if last_of_client => None,
                Fate::Unknown(_) | Fate::Open(_) => {
                    // The client gives up anywhere in its interval, maybe before the operation took effect.
                    let gave_up = invoked + (completed - invoked) * u64::from(s.after) / 100;
                    Some((gave_up, Outcome::Unknown))
                }
            };
            done[c] = end.as_ref().map_or(completed, |(t, _)| *t);
            records.push((invoked, k, s.input.clone(), end));
        }
        records.sort_by_key(|r| (r.0, r.1));
        let mut history = History::new();
        let mut corrupted = None;
        let mut ends = Vec::new();
        for (invoked, k, input, end) in records {
            let id =
                history.invoke((k % clients) as u32, format!("o{}", steps[k].object), input, us(invoked));
            if corrupted_step == Some(k) {
                corrupted = Some(id);
            }
            ends.push((id, end));
        }
        for (id, end) in ends {
            if let Some((at, outcome)) = end {
                history.complete(id, outcome, us(at));
            }
        }
        Built { history, corrupted }
    }
}
