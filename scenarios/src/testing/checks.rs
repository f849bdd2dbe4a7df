//! Checks: what a test judges after its run, over the history the clients recorded and the run's trace.

use std::time::Duration;

use dosim_sim::{Evidence, Failure, Trace};

use crate::history::History;

/// What a run left for its checks to judge.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a, I, O> {
    /// Every operation the clients made, the liveness phase's final reads last.
    pub history: &'a History<I, O>,
    /// The run's trace.
    pub trace: &'a Trace,
    /// When the faults stopped (the liveness phase began).
    pub faults_stopped: Duration,
    /// The faults the world injected, by kind.
    pub faults: &'a dosim_sim::FaultCounts,
}

/// A property of a run. A violation is a [`Failure`] with [`Evidence`]: the operations behind it and the
/// stretch of time they lie in, which the failure report shows first.
pub trait Check<I, O> {
    /// Its name in reports.
    fn name(&self) -> String;

    /// Whether it can judge a run of this topology; an error says why not (a configuration error, reported
    /// before the run).
    fn applies(&self, cluster: bool) -> Result<(), String> {
        let _ = cluster;
        Ok(())
    }

    /// Judges the run.
    fn check(&self, run: &Observed<'_, I, O>) -> Result<(), Failure>;
}

/// Single activation: no two instances of one object ever wrote at once. Judged over a cluster's storage
/// node history (see [`crate::object_cluster::check_commit_history`]): per object, no commit applies under
/// an epoch older than one that already opened the object or committed to it. Only for a cluster: on one
/// host there is one container per object by construction.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleActivation;

impl<I, O> Check<I, O> for SingleActivation {
    fn name(&self) -> String {
        "single activation".into()
    }

    fn applies(&self, cluster: bool) -> Result<(), String> {
        if cluster {
            Ok(())
        } else {
            Err("single activation is judged over a cluster's storage node: add ObjectTest::cluster(n)"
                .into())
        }
    }

    fn check(&self, run: &Observed<'_, I, O>) -> Result<(), Failure> {
        crate::object_cluster::check_commit_history(run.trace)
            .map(|_| ())
            .map_err(|e| Failure::new(e).with_evidence(Evidence { lines: Vec::new(), window: None }))
    }
}

/// Linearizability of every object's operations against `M`, the object's sequential specification (see
/// [`crate::check::check_linearizable`]): operations of unknown outcome may or may not have taken effect,
/// `overloaded` ones never did. It also covers output-gate safety: an answer that revealed a write later lost
/// leaves the liveness phase's final read with no place in any order.
#[derive(Clone, Copy, Debug, Default)]
pub struct Linearizable<M>(pub M);

/// The evidence of a linearizability violation: the operations it names, the failing one marked, and the
/// stretch of time from the first one's invocation to the last one's completion.
fn violation_evidence<I: std::fmt::Debug, O: std::fmt::Debug>(
    history: &History<I, O>,
    v: &crate::check::Violation,
) -> Evidence {
    let mut lines = Vec::new();
    let (mut start, mut end) = (Duration::MAX, Duration::ZERO);
    for id in v.ops() {
        let Some(op) = history.get(id) else { continue };
        let mark = if id == v.op { "→ " } else { "  " };
        let role = if id == v.op {
            " (cannot be placed)"
        } else if v.concurrent.contains(&id) {
            " (concurrent)"
        } else {
            ""
        };
        lines.push(format!("{mark}{op}{role}"));
        start = start.min(op.invoked);
        end = end.max(op.completed.unwrap_or(op.invoked));
    }
    let order: Vec<String> = v.prefix.iter().map(|id| id.to_string()).collect();
    lines.push(format!(
        "longest linearizable prefix: {}",
        if order.is_empty() { "none".into() } else { order.join(", ") }
    ));
    Evidence { lines, window: (start <= end).then_some((start, end)) }
}

impl<M: crate::check::Model> Check<M::Input, M::Output> for Linearizable<M> {
    fn name(&self) -> String {
        "linearizability".into()
    }

    fn check(&self, run: &Observed<'_, M::Input, M::Output>) -> Result<(), Failure> {
        match crate::check::check_linearizable(&self.0, run.history) {
            Ok(report) => {
                dosim_sim::note("check", &report);
                Ok(())
            }
            Err(crate::check::LinearizabilityError::Violation(v)) => {
                Err(Failure::new(v.to_string()).with_evidence(violation_evidence(run.history, &v)))
            }
            Err(e) => Err(Failure::new(e.to_string())),
        }
    }
}

/// No acknowledged write is lost: once the faults stop, each object's final read must be explained by an
/// order of every acknowledged write (and any of the writes of unknown outcome) that respects real time.
/// Reads before the final ones are left out (`is_read` says which operations are reads), so a stale read
/// in the middle of the run is not this check's business ([`Linearizable`] covers it); a write that was
/// acknowledged and then lost, to a crash, a power cut or an eviction, is.
pub struct NoLostWrites<M: crate::check::Model> {
    model: M,
    is_read: fn(&M::Input) -> bool,
    /// Keep the reads too (the output-gate check): a value an answer revealed must survive.
    keep_reads: bool,
}

impl<M: crate::check::Model> NoLostWrites<M> {
    /// The check for `model`, whose reads are the inputs `is_read` picks.
    pub fn new(model: M, is_read: fn(&M::Input) -> bool) -> Self {
        NoLostWrites { model, is_read, keep_reads: false }
    }

    /// Output-gate safety: no answer reveals a write that is later lost. Like the check of lost writes, but
    /// the reads are kept too, each free to take effect any time before it answered: a stale read passes
    /// (that is [`Linearizable`]'s business), but a value an answer revealed must be explained by an order
    /// of the writes that the final reads also explain. This is what the output gate guarantees (spec
    /// §1.4): an answer leaves only once the writes before it are durable.
    pub fn output_gate(model: M, is_read: fn(&M::Input) -> bool) -> Self {
        NoLostWrites { model, is_read, keep_reads: true }
    }
}

impl NoLostWrites<crate::check::models::CounterModel> {
    /// For a counter.
    pub fn counter() -> Self {
        NoLostWrites::new(crate::check::models::CounterModel::default(), |op| {
            matches!(op, crate::check::models::CounterOp::Read)
        })
    }
}

impl NoLostWrites<crate::check::models::RegisterModel> {
    /// For a register.
    pub fn register() -> Self {
        NoLostWrites::new(crate::check::models::RegisterModel::default(), |op| {
            matches!(op, crate::check::models::RegisterOp::Read)
        })
    }
}

impl NoLostWrites<crate::check::models::KvModel> {
    /// For a key-value map.
    pub fn kv() -> Self {
        NoLostWrites::new(crate::check::models::KvModel, |op| {
            matches!(op, crate::check::models::KvOp::Get(_))
        })
    }
}

impl<M: crate::check::Model> Check<M::Input, M::Output> for NoLostWrites<M> {
    fn name(&self) -> String {
        if self.keep_reads { "output-gate safety" } else { "no lost acknowledged write" }.into()
    }

    fn check(&self, run: &Observed<'_, M::Input, M::Output>) -> Result<(), Failure> {
        // The writes, and the final reads (made once the faults stopped).
        // For the output-gate check, a read may take effect any time before it answered (a stale read is not
        // its business), but what it revealed must still be explained: its invocation moves to the start.
        let mut chosen = Vec::new();
        for op in run.history.ops() {
            let final_read = op.client == super::FINAL_READ_CLIENT;
            let read = (self.is_read)(&op.input) && !final_read;
            if read && !self.keep_reads {
                continue;
            }
            chosen.push((if read { Duration::ZERO } else { op.invoked }, op));
        }
        chosen.sort_by_key(|(at, op)| (*at, op.id));
        let mut kept: History<M::Input, M::Output> = History::new();
        let mut ids = Vec::new();
        for (at, op) in chosen {
            let id = kept.invoke(op.client, op.object.clone(), op.input.clone(), at);
            if let Some(done) = op.completed {
                kept.complete(id, op.outcome.clone(), done);
            }
            ids.push(op.id);
        }
        if !kept.ops().iter().any(|o| o.client == super::FINAL_READ_CLIENT) {
            return Err(Failure::new(
                "no final reads: the workload's driver has no final_read, so nothing shows what was kept",
            ));
        }
        match crate::check::check_linearizable(&self.model, &kept) {
            Ok(_) => Ok(()),
            Err(crate::check::LinearizabilityError::Violation(v)) => {
                // Back to the run's own operation numbers.
                let back = |id: crate::history::OpId| ids[id.0];
                let v = crate::check::Violation {
                    object: v.object.clone(),
                    op: back(v.op),
                    concurrent: v.concurrent.iter().map(|i| back(*i)).collect(),
                    prefix: v.prefix.iter().map(|i| back(*i)).collect(),
                    explanation: v.explanation.clone(),
                };
                let what = run.history.get(v.op).map(|o| o.to_string()).unwrap_or_default();
                let lost = if self.keep_reads {
                    "an answer revealed a write that was later lost: no order of the acknowledged operations explains"
                } else {
                    "an acknowledged write was lost: no order of the acknowledged writes explains"
                };
                Err(Failure::new(format!("{lost} {what}")).with_evidence(violation_evidence(run.history, &v)))
            }
            Err(e) => Err(Failure::new(e.to_string())),
        }
    }
}

/// No alarm was abandoned: the runtime gives an alarm up after its last retry (spec §4) and deletes it,
/// so a handler that fails every time leaves no overdue alarm behind; its trace line says so. Added by
/// [`ObjectTest::check_alarms`](super::ObjectTest::check_alarms) with the quiescent check for overdue alarms.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAbandonedAlarms;

impl<I, O> Check<I, O> for NoAbandonedAlarms {
    fn name(&self) -> String {
        "alarm liveness".into()
    }

    fn check(&self, run: &Observed<'_, I, O>) -> Result<(), Failure> {
        let mut delivered: Option<&dosim_sim::Event> = None;
        for e in run.trace.events() {
            let dosim_sim::EventKind::Log { target, text } = &e.kind else { continue };
            if target != "dosim::runtime" {
                continue;
            }
            if text.contains("delivered") && text.contains("alarm abandoned") {
                delivered = Some(e);
            }
            if text == "alarm abandoned after its retries" {
                let what = delivered.map(|d| d.to_string()).unwrap_or_default();
                return Err(Failure::new(format!(
                    "an alarm was abandoned after its last retry at {:?}: its handler never succeeded",
                    e.at
                ))
                .with_evidence(Evidence {
                    lines: vec![what, e.to_string()],
                    window: Some((e.at.saturating_sub(Duration::from_secs(130)), e.at)),
                }));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::models::{CounterModel, CounterOp};
    use crate::history::Outcome;
    use crate::testing::FINAL_READ_CLIENT;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// An add of 1 acknowledged at 10 ms; a read answering `read` at 20..30 ms; the final read answering
    /// `last` at 100 ms.
    fn history(read: i64, last: i64) -> History<CounterOp, i64> {
        let mut h = History::new();
        let add = h.invoke(0, "c", CounterOp::Add(1), ms(0));
        h.complete(add, Outcome::Ok(1), ms(10));
        let r = h.invoke(1, "c", CounterOp::Read, ms(20));
        h.complete(r, Outcome::Ok(read), ms(30));
        let f = h.invoke(FINAL_READ_CLIENT, "c", CounterOp::Read, ms(100));
        h.complete(f, Outcome::Ok(last), ms(101));
        h
    }

    fn judge(check: &dyn Check<CounterOp, i64>, h: &History<CounterOp, i64>) -> Result<(), Failure> {
        let trace = dosim_sim::Trace::new(dosim_sim::TraceMode::Full);
        check.check(&Observed {
            history: h,
            trace: &trace,
            faults_stopped: ms(90),
            faults: &Default::default(),
        })
    }

    fn output_gate() -> NoLostWrites<CounterModel> {
        NoLostWrites::output_gate(CounterModel::default(), |op| matches!(op, CounterOp::Read))
    }

    #[test]
    fn a_stale_read_is_not_linearizable_but_reveals_nothing_lost() {
        let stale = history(0, 1);
        assert!(judge(&Linearizable(CounterModel::default()), &stale).is_err());
        assert!(judge(&NoLostWrites::counter(), &stale).is_ok());
        assert!(judge(&output_gate(), &stale).is_ok());
    }

    #[test]
    fn an_answer_that_revealed_a_write_later_lost_fails_the_output_gate_check() {
        // The read saw 2 (an add nobody acknowledged, or one acknowledged too early), the final read 1.
        let revealed = history(2, 1);
        let e = judge(&output_gate(), &revealed).unwrap_err();
        assert!(e.message().starts_with("an answer revealed a write that was later lost"), "{e}");
        assert!(!e.evidence().lines.is_empty());
        // The writes alone are all there: the lost-write check has nothing to say.
        assert!(judge(&NoLostWrites::counter(), &revealed).is_ok());
    }

    #[test]
    fn an_acknowledged_add_missing_at_the_end_is_a_lost_write() {
        let lost = history(1, 0);
        let e = judge(&NoLostWrites::counter(), &lost).unwrap_err();
        assert!(e.message().starts_with("an acknowledged write was lost"), "{e}");
    }
}
