//! Checks at the quiescent point: once the faults have stopped and every object has answered its final
//! reads, nothing is in flight, and the kit looks inside each object (through the host's
//! [`run_in_object`](dosim_runtime::embed::Host::run_in_object), as an event of the object): the user's
//! invariants over its storage, and whether an alarm is overdue. Then every `eventually` point the code under
//! test declared ([`dosim_sim::eventually`]) must hold.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use dosim_runtime::embed::Host;
use dosim_runtime::error::Error;
use dosim_runtime::prelude::{DurableObject, State};

/// How long after the final reads the kit waits, at most, for every overdue alarm to run (it looks again every
/// few seconds, and goes on as soon as none is overdue): an alarm that failed is retried with backoff (spec
/// §4: up to 6 retries, from 2 s doubling, 126 s in all, each delay up to 25% longer), so every alarm that
/// was due has run or been given up by then.
pub const ALARM_SETTLE: Duration = Duration::from_secs(180);
/// What the alarm probe says of an alarm still to come within the settle bound: the kit waits for it.
pub(crate) const ALARM_PENDING: &str = "an alarm is still to run";

/// How late an alarm may be at the quiescent point before it counts as never run.
pub const ALARM_LATE_MAX: Duration = Duration::from_secs(5);

type Look = Pin<Box<dyn Future<Output = Result<Result<(), String>, Error>>>>;

/// A look inside one object: given the host, the binding and the object's name, the invariant's verdict
/// (`Ok(Err(why))` when it does not hold), or the error that kept the kit from looking (the object lives on
/// another host of the cluster, say).
pub(crate) type Probe = Arc<dyn Fn(Rc<Host>, String, String) -> Look + Send + Sync>;

/// A named property of one object, checked at the quiescent point.
#[derive(Clone)]
pub(crate) struct QuiescentCheck {
    pub(crate) name: String,
    pub(crate) probe: Probe,
    /// Wait for alarms to settle first.
    pub(crate) needs_alarm_settle: bool,
}

/// The probe of `f` on objects of class `T`.
pub(crate) fn probe_of<T, F>(f: F) -> Probe
where
    T: DurableObject,
    F: AsyncFn(&T, &State) -> Result<(), String> + Send + Sync + 'static,
{
    let f = Arc::new(f);
    Arc::new(move |host: Rc<Host>, binding: String, name: String| {
        let f = f.clone();
        Box::pin(async move {
            let id = host.env().durable_object(&binding)?.id_from_name(&name);
            host.run_in_object::<T, _>(&binding, &id, async move |object: &T, state: &State| {
                f(object, state).await
            })
            .await
        }) as Look
    })
}

/// The probe that an object's alarm is not overdue: none is set, or it is set for later than
/// [`ALARM_LATE_MAX`] ago.
pub(crate) fn alarm_probe<T: DurableObject>() -> Probe {
    probe_of::<T, _>(async |_object: &T, state: &State| {
        let alarm =
            state.storage().get_alarm().await.map_err(|e| format!("get_alarm failed: {}", e.message()))?;
        let now = state.now_ms();
        match alarm {
            Some(at) if at + (ALARM_LATE_MAX.as_millis() as i64) < now => Err(format!(
                "its alarm for {at} ms is still set at {now} ms, {} ms late: it never ran, or its retries gave up",
                now - at
            )),
            // Due within the settle bound: not converged yet.
            Some(at) if at <= now + ALARM_SETTLE.as_millis() as i64 => Err(ALARM_PENDING.to_string()),
            _ => Ok(()),
        }
    })
}
