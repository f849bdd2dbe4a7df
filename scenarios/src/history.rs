//! What clients saw: each operation's invocation and completion on the simulated clock, and its outcome.
//!
//! A workload's clients record every call they make into a [`History`]: when it was invoked, on which object,
//! with what input, and how it ended ([`Outcome`]): ok with its value, an error with its flags, or unknown
//! when the client gave up waiting. The checkers ([`crate::check`]) read histories; the failure report shows
//! the operations a violation names.
//!
//! Times are simulated time since the start of the run. Operations are numbered in invocation order
//! ([`OpId`]), which is the order clients called [`History::invoke`].

use std::fmt;
use std::time::Duration;

/// An operation's place in its history: its invocation order, from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub usize);

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op#{}", self.0)
    }
}

/// The flags of an error reply (spec §6: the properties an exception from a Durable Object carries).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ErrorFlags {
    /// `retryable`: the call may be retried.
    pub retryable: bool,
    /// `overloaded`: the object refused the call before running it.
    pub overloaded: bool,
    /// `durableObjectReset`: the instance the call ran on was reset.
    pub durable_object_reset: bool,
    /// `remote`: the error came from the object's own code.
    pub remote: bool,
}

impl ErrorFlags {
    /// The flags of a runtime error.
    pub fn of(e: &dosim_runtime::error::Error) -> ErrorFlags {
        ErrorFlags {
            retryable: e.retryable(),
            overloaded: e.overloaded(),
            durable_object_reset: e.durable_object_reset(),
            remote: e.remote(),
        }
    }
}

impl fmt::Display for ErrorFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.retryable, "retryable"),
            (self.overloaded, "overloaded"),
            (self.durable_object_reset, "durableObjectReset"),
            (self.remote, "remote"),
        ];
        let set: Vec<&str> = names.iter().filter(|(on, _)| *on).map(|(_, n)| *n).collect();
        if set.is_empty() {
            f.write_str("-")
        } else {
            f.write_str(&set.join(","))
        }
    }
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<O> {
    /// It returned this value.
    Ok(O),
    /// It failed with this error. Whether it took effect depends on the error: see [`Outcome::effect`].
    Err {
        /// The error's message.
        message: String,
        /// Its flags.
        flags: ErrorFlags,
    },
    /// The client gave up waiting (a timeout, or the run ended first): it may or may not have taken effect.
    Unknown,
}

/// Whether an operation took effect, as far as its client can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// It did: it returned a value.
    Certain,
    /// It did not: it was refused before it ran (an `overloaded` error).
    None,
    /// It may have: an error after it started, or no answer.
    Maybe,
}

impl<O> Outcome<O> {
    /// The outcome of a call that returned `result`.
    pub fn of(result: Result<O, dosim_runtime::error::Error>) -> Outcome<O> {
        match result {
            Ok(v) => Outcome::Ok(v),
            Err(e) => Outcome::Err { message: e.message().to_string(), flags: ErrorFlags::of(&e) },
        }
    }

    /// Whether the operation took effect. An `overloaded` error is the one error that says it never ran
    /// (spec §5.3: the object refused it before delivery); any other error may come after the operation's
    /// writes committed (a reset, an exception thrown after a `put`, a lost connection), so it may have.
    pub fn effect(&self) -> Effect {
        match self {
            Outcome::Ok(_) => Effect::Certain,
            Outcome::Err { flags, .. } if flags.overloaded => Effect::None,
            Outcome::Err { .. } | Outcome::Unknown => Effect::Maybe,
        }
    }

    /// The value, if it returned one.
    pub fn value(&self) -> Option<&O> {
        match self {
            Outcome::Ok(v) => Some(v),
            _ => None,
        }
    }
}

impl<O: fmt::Debug> fmt::Display for Outcome<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok(v) => write!(f, "ok {v:?}"),
            Outcome::Err { message, flags } => write!(f, "error {message:?} [{flags}]"),
            Outcome::Unknown => f.write_str("unknown (no answer)"),
        }
    }
}

/// One operation: a call of one client on one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    /// Its place in the history.
    pub id: OpId,
    /// The client that made it (a client makes one call at a time).
    pub client: u32,
    /// The object it was made on (its name, or its id in hex): checkers partition by it.
    pub object: String,
    /// What was asked.
    pub input: I,
    /// When the client invoked it.
    pub invoked: Duration,
    /// When it completed, or `None` while it is open. An operation of [`Outcome::Unknown`] has the time
    /// the client gave up, which says nothing about when it took effect.
    pub completed: Option<Duration>,
    /// How it ended (`Unknown` while open).
    pub outcome: Outcome<O>,
}

impl<I: fmt::Debug, O: fmt::Debug> fmt::Display for Operation<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let done = match self.completed {
            Some(c) => format!("{}ms", c.as_millis()),
            None => "open".to_string(),
        };
        write!(
            f,
            "{} client {} on {}: {:?} [{}ms..{done}] -> {}",
            self.id,
            self.client,
            self.object,
            self.input,
            self.invoked.as_millis(),
            self.outcome
        )
    }
}

/// Every operation of a run, in invocation order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History<I, O> {
    ops: Vec<Operation<I, O>>,
}

impl<I, O> Default for History<I, O> {
    fn default() -> Self {
        History { ops: Vec::new() }
    }
}

impl<I, O> History<I, O> {
    /// An empty history.
    pub fn new() -> History<I, O> {
        History::default()
    }

    /// Records that `client` invoked `input` on `object` at `at`; the operation stays open until
    /// [`History::complete`].
    pub fn invoke(&mut self, client: u32, object: impl Into<String>, input: I, at: Duration) -> OpId {
        let id = OpId(self.ops.len());
        if let Some(last) = self.ops.last() {
            assert!(at >= last.invoked, "{id} invoked at {at:?}, before {} at {:?}", last.id, last.invoked);
        }
        self.ops.push(Operation {
            id,
            client,
            object: object.into(),
            input,
            invoked: at,
            completed: None,
            outcome: Outcome::Unknown,
        });
        id
    }

    /// Records how operation `id` ended, at `at`.
    ///
    /// # Panics
    /// If `id` is not in this history, is already complete, or `at` is before its invocation: a client
    /// bug, which would make every check of the history wrong.
    pub fn complete(&mut self, id: OpId, outcome: Outcome<O>, at: Duration) {
        let op = self.ops.get_mut(id.0).unwrap_or_else(|| panic!("{id} was never invoked"));
        assert!(op.completed.is_none(), "{id} completed twice");
        assert!(at >= op.invoked, "{id} completed at {at:?}, before its invocation at {:?}", op.invoked);
        op.completed = Some(at);
        op.outcome = outcome;
    }

    /// Every operation, in invocation order.
    pub fn ops(&self) -> &[Operation<I, O>] {
        &self.ops
    }

    /// Operation `id`.
    pub fn get(&self, id: OpId) -> Option<&Operation<I, O>> {
        self.ops.get(id.0)
    }

    /// How many operations it holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The objects the operations were made on, each once, in order.
    pub fn objects(&self) -> Vec<&str> {
        let set: std::collections::BTreeSet<&str> = self.ops.iter().map(|o| o.object.as_str()).collect();
        set.into_iter().collect()
    }

    /// The operations on `object`, in invocation order.
    pub fn of_object<'a>(&'a self, object: &'a str) -> impl Iterator<Item = &'a Operation<I, O>> + 'a {
        self.ops.iter().filter(move |o| o.object == object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn operations_are_numbered_in_invocation_order_and_complete_once() {
        let mut h: History<&str, i64> = History::new();
        let a = h.invoke(0, "c", "add", ms(1));
        let b = h.invoke(1, "d", "read", ms(2));
        h.complete(b, Outcome::Ok(3), ms(5));
        assert_eq!((a, b), (OpId(0), OpId(1)));
        assert_eq!(h.get(a).unwrap().outcome, Outcome::Unknown);
        assert_eq!(h.get(a).unwrap().completed, None);
        assert_eq!(h.get(b).unwrap().completed, Some(ms(5)));
        assert_eq!(h.objects(), vec!["c", "d"]);
        assert_eq!(h.of_object("d").count(), 1);
        assert_eq!(h.get(b).unwrap().to_string(), "op#1 client 1 on d: \"read\" [2ms..5ms] -> ok 3");
    }

    #[test]
    #[should_panic(expected = "op#0 completed twice")]
    fn completing_twice_is_a_client_bug() {
        let mut h: History<(), ()> = History::new();
        let a = h.invoke(0, "c", (), ms(1));
        h.complete(a, Outcome::Ok(()), ms(2));
        h.complete(a, Outcome::Ok(()), ms(3));
    }

    #[test]
    fn only_an_overloaded_error_says_the_operation_never_ran() {
        let err = |flags| Outcome::<()>::Err { message: "x".into(), flags };
        assert_eq!(Outcome::Ok(()).effect(), Effect::Certain);
        assert_eq!(Outcome::<()>::Unknown.effect(), Effect::Maybe);
        assert_eq!(err(ErrorFlags { overloaded: true, ..ErrorFlags::default() }).effect(), Effect::None);
        assert_eq!(
            err(ErrorFlags { durable_object_reset: true, ..ErrorFlags::default() }).effect(),
            Effect::Maybe
        );
        assert_eq!(err(ErrorFlags { remote: true, ..ErrorFlags::default() }).effect(), Effect::Maybe);
        assert_eq!(
            err(ErrorFlags { retryable: true, remote: true, ..ErrorFlags::default() }).to_string(),
            "error \"x\" [retryable,remote]"
        );
    }
}
