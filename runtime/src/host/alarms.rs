//! Running alarms (spec §4): the timer that starts the run of each index entry that comes due, the runs with
//! their retries and backoff, one run inside the object, and giving an alarm up.

use std::cell::Cell;
use std::rc::{Rc, Weak};

use crate::alarm::{self, AlarmKey, RunOutcome};
use crate::error::{messages, Error};
use crate::id::ObjectId;
use crate::instance::{EventKind, Instance};
use crate::object::AlarmInfo;
use crate::storage::actor_cache::GetOptions;
use crate::storage::api::Backend;
use crate::storage::sqlite::AlarmArm;

use super::{ClassEntry, HostInner};

impl HostInner {
    /// Runs the alarm of `key` once (spec §4); see [`crate::alarm`]. `retry`: the retries so far of the
    /// alarm set for a time (a run that finds another time stored runs a new alarm: retry 0). `force`: run
    /// the stored alarm even if its time has not come ([`Host::run_alarm_now`](crate::embed::Host::run_alarm_now)).
    /// With the outcome: the time of the stored alarm the run found (and ran), if it found one due (or any, if
    /// forced).
    pub(super) async fn run_alarm(
        self: &Rc<Self>,
        key: &AlarmKey,
        retry: RetryOf,
        force: bool,
    ) -> (RunOutcome, Option<i64>) {
        let found = Rc::new(Cell::new(None));
        let outcome = self.run_alarm_once(key, retry, force, &found).await;
        (outcome, found.get())
    }

    async fn run_alarm_once(
        self: &Rc<Self>,
        key: &AlarmKey,
        retry: RetryOf,
        force: bool,
        found: &Rc<Cell<Option<i64>>>,
    ) -> RunOutcome {
        let Some(class) = self.classes.get(&key.0).cloned() else {
            // The class is gone (deleted): so is the alarm.
            let _ = self.alarms.forget(key);
            return RunOutcome::Settled;
        };
        let id = match id_of(&class, &key.1) {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(target: "dosim::runtime", "alarm index entry of a foreign id: {}", e.message());
                let _ = self.alarms.forget(key);
                return RunOutcome::Settled;
            }
        };
        let instance = if self.cluster.is_some() {
            // In a cluster the alarm runs only where the object is owned, activated as a call would be.
            match self.activate(&class, &id).await {
                Ok(Ok((i, _))) => i,
                Ok(Err(Some(owner))) => {
                    // Another host owns the object: hand the alarm over (its activation there notes the alarm
                    // stored with the object), then forget it here.
                    tracing::debug!(target: "dosim::runtime", "alarm of {id}: owned by {owner}, handed over");
                    return match self.hand_off_alarm(&class, &id, &owner).await {
                        Ok(()) => match self.alarms.forget(key) {
                            Ok(()) => RunOutcome::Settled,
                            Err(e) => RunOutcome::Interrupted(e),
                        },
                        Err(e) => RunOutcome::Interrupted(e),
                    };
                }
                Ok(Err(None)) => {
                    tracing::debug!(target: "dosim::runtime", "alarm of {id}: this host cannot run it now");
                    return RunOutcome::Interrupted(
                        Error::new(messages::NETWORK_CONNECTION_LOST).with_retryable(),
                    );
                }
                Err(e) => return RunOutcome::Interrupted(e),
            }
        } else {
            let container = self.route(&class, &id, None).expect("routing without a binding never fails");
            match container.instance() {
                Ok(i) => i,
                Err(e) => return RunOutcome::Interrupted(e),
            }
        };
        let me = self.clone();
        let run_key = key.clone();
        let inst = instance.clone();
        let what = format!("alarm (retry {}{})", retry.count, if force { ", forced" } else { "" });
        let found = found.clone();
        let result = instance
            .deliver(EventKind::Alarm, 0, what, move |object| {
                Box::pin(async move { me.alarm_event(object, &inst, &run_key, retry, force, &found).await })
            })
            .await;
        match result {
            Ok(outcome) => outcome,
            Err(_) if instance.alarm_retry_disabled.get() => RunOutcome::Abandon,
            Err(e) if alarm::counted(&e) => RunOutcome::Failed(e),
            Err(e) => RunOutcome::Interrupted(e),
        }
    }

    /// The alarm event, inside the object: check storage, arm, run the handler, settle the index.
    async fn alarm_event(
        &self,
        object: Rc<dyn crate::object::LiveObject>,
        instance: &Rc<Instance>,
        key: &AlarmKey,
        retry: RetryOf,
        force: bool,
        found: &Cell<Option<i64>>,
    ) -> Result<RunOutcome, Error> {
        // The index follows storage only once what was read is durable and the object set no alarm since.
        let settle = async |time: Option<i64>, generation: u64| -> Result<RunOutcome, Error> {
            instance.storage.sync().await?;
            self.alarms.settle(key, time, generation)?;
            Ok(RunOutcome::Settled)
        };
        let generation = self.alarms.generation(key);
        let stored = instance.storage.get_alarm().await?;
        let now = self.clock.now_ms();
        let scheduled = match stored {
            Some(t) if t <= now || force => t,
            // Nothing due: an alarm moved later, or deleted.
            other => return settle(other, generation).await,
        };
        found.set(Some(scheduled));
        // The retries count failures of the alarm set for one time: one set for another time since is a new
        // alarm, whose first run this is.
        let retry_count = if scheduled == retry.scheduled { retry.count } else { 0 };
        if !object.has_alarm() {
            tracing::warn!(
                target: "dosim::runtime",
                "{}: Attempted to run a scheduled alarm without a handler, did you remember to export an alarm() function?",
                instance.label
            );
            self.alarms.settle(key, None, generation)?;
            return Ok(RunOutcome::Abandon);
        }
        // Arm: the alarm reads as deleted while the handler runs (spec §4).
        let deleter = match instance.storage.backend() {
            Backend::Sqlite(s) => match s.arm_alarm_handler(scheduled)? {
                AlarmArm::Run => None,
                AlarmArm::Reschedule(t) => return settle(Some(t), generation).await,
                AlarmArm::Cancel => return settle(None, generation).await,
            },
            Backend::Kv(c) => match c.arm_alarm_handler(scheduled, false) {
                Some(d) => Some(d),
                None => {
                    let generation = self.alarms.generation(key);
                    let now_stored = c.get_alarm(GetOptions::default()).await?;
                    return settle(now_stored, generation).await;
                }
            },
        };
        let info = AlarmInfo { retry_count, is_retry: retry_count > 0, scheduled_time: scheduled };
        tracing::debug!(target: "dosim::runtime", "{} alarm {scheduled} runs (retry {retry_count})", instance.label);
        let handler = object.alarm(info).expect("checked: the class has an alarm handler");
        let outcome = madsim_tokio::time::timeout(self.config.alarms.handler_timeout, handler).await;
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_elapsed) => {
                let e = Error::new(messages::ALARM_TIMEOUT).with_overloaded().with_reset();
                instance.reset(e.clone());
                Some(e)
            }
        };
        match instance.storage.backend() {
            Backend::Sqlite(s) => s.finish_alarm_handler(failure.is_none())?,
            Backend::Kv(c) => {
                if failure.is_some() {
                    c.cancel_deferred_alarm_deletion();
                }
                drop(deleter);
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        // Success: the alarm is deleted (unless the handler set a new one); the index follows once the
        // deletion is durable.
        let generation = self.alarms.generation(key);
        let next = instance.storage.get_alarm().await?;
        settle(next, generation).await
    }

    /// Gives up the alarm of `key` set for `scheduled` (spec §4: after the last retry, or `abort` without
    /// retry): storage deletes it if it is still that time; the index follows.
    pub(super) async fn abandon_alarm(self: &Rc<Self>, key: &AlarmKey, scheduled: i64) {
        let Some(class) = self.classes.get(&key.0).cloned() else { return };
        let Ok(id) = id_of(&class, &key.1) else { return };
        let Ok(instance) = self.route(&class, &id, None).and_then(|c| c.instance()) else {
            self.alarms.requeue(key);
            return;
        };
        let me = self.clone();
        let k = key.clone();
        let inst = instance.clone();
        let done = instance
            .deliver(EventKind::Alarm, 0, format!("alarm abandoned (scheduled {scheduled})"), move |_| {
                Box::pin(async move {
                    let generation = me.alarms.generation(&k);
                    let replaced = match inst.storage.backend() {
                        Backend::Sqlite(s) => s.abandon_alarm(scheduled)?,
                        Backend::Kv(c) => c.abandon_alarm(scheduled).await?,
                    };
                    inst.storage.sync().await?;
                    me.alarms.settle(&k, replaced, generation)?;
                    Ok(())
                })
            })
            .await;
        if done.is_err() {
            self.alarms.requeue(key);
        }
        tracing::debug!(target: "dosim::runtime", "alarm abandoned after its retries");
    }
}

/// The id of an index key: its bytes, checked against the namespace's key.
fn id_of(class: &ClassEntry, bytes: &[u8; 32]) -> Result<ObjectId, Error> {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    ObjectId::parse(&class.namespace.key, &hex)
}

/// The retries so far of the alarm set for `scheduled`: what a run passes the handler as `retry_count` if it
/// finds that alarm (and 0 if it finds one set for another time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct RetryOf {
    /// The alarm's time.
    pub(super) scheduled: i64,
    /// Its counted failures so far.
    pub(super) count: u32,
}

/// Where an alarm's runs stand in their retries (spec §4).
#[derive(Default)]
pub(super) struct Retries {
    /// Counted failures so far: the next run's `retry_count`.
    counted_failures: u32,
    /// The current streak of failures of one kind (counted or not) and its length: the backoff restarts when
    /// the kind changes.
    streak: Option<(bool, u32)>,
}

/// What follows a run that ended with `outcome`: `None`, the runs are over (settled, or given up); else the
/// backoff to wait before the next run.
async fn after_run(
    h: &Rc<HostInner>,
    key: &AlarmKey,
    scheduled: i64,
    outcome: RunOutcome,
    retries: &mut Retries,
) -> Option<std::time::Duration> {
    let config = h.config.alarms;
    let counted = match outcome {
        RunOutcome::Settled => return None,
        RunOutcome::Abandon => {
            h.abandon_alarm(key, scheduled).await;
            return None;
        }
        RunOutcome::Failed(e) => {
            tracing::debug!(target: "dosim::runtime", "alarm failed (counted): {}", e.message());
            retries.counted_failures += 1;
            if retries.counted_failures > config.retries_max {
                h.abandon_alarm(key, scheduled).await;
                return None;
            }
            true
        }
        RunOutcome::Interrupted(e) => {
            tracing::debug!(target: "dosim::runtime", "alarm interrupted (not counted): {}", e.message());
            false
        }
    };
    let n = match retries.streak {
        Some((kind, n)) if kind == counted => n + 1,
        _ => 0,
    };
    retries.streak = Some((counted, n));
    let exponent = if counted { n } else { n.min(alarm::ALARM_UNCOUNTED_EXPONENT_MAX) };
    let mut b = [0u8; 4];
    h.entropy.fill(&mut b);
    let jitter = u32::from_le_bytes(b) % 1_000_001;
    Some(config.backoff(exponent, jitter))
}

/// One alarm's runs until it settles, with retries (spec §4).
async fn alarm_runs(host: Weak<HostInner>, key: AlarmKey, scheduled: i64) {
    let Some(h) = host.upgrade() else { return };
    h.alarms.set_running(&key, true);
    drop(h);
    alarm_retries(host, key, scheduled, None, false).await;
}

/// The runs of an alarm whose run is marked as started, until it settles. `first`: the outcome of a run
/// already made (by [`Host::run_alarm_now`](crate::embed::Host::run_alarm_now)), which the retries follow;
/// `force`: every run runs the stored alarm even before its time (the retries of a forced run).
pub(super) async fn alarm_retries(
    host: Weak<HostInner>,
    key: AlarmKey,
    scheduled: i64,
    mut first: Option<RunOutcome>,
    force: bool,
) {
    let mut retries = Retries::default();
    let mut scheduled = scheduled;
    loop {
        let Some(h) = host.upgrade() else { return };
        let outcome = match first.take() {
            Some(outcome) => outcome,
            None => {
                let retry = RetryOf { scheduled, count: retries.counted_failures };
                let (outcome, found) = h.run_alarm(&key, retry, force).await;
                if let Some(t) = found.filter(|t| *t != scheduled) {
                    // The object set its alarm for another time since the last run: the run was that alarm's
                    // first, and its retries start over (and give up that alarm, not the one it replaced).
                    scheduled = t;
                    retries = Retries::default();
                }
                outcome
            }
        };
        let Some(delay) = after_run(&h, &key, scheduled, outcome, &mut retries).await else { break };
        drop(h);
        madsim_tokio::time::sleep(delay).await;
    }
    if let Some(h) = host.upgrade() {
        h.alarms.set_running(&key, false);
    }
}

/// The host's alarm timer: starts the run of every index entry that comes due.
pub(super) async fn alarm_timer(host: Weak<HostInner>) {
    loop {
        let Some(h) = host.upgrade() else { return };
        let now = h.clock.now_ms();
        match h.alarms.next_due(now) {
            Ok((t, key)) => {
                tracing::debug!(target: "dosim::runtime", scheduled = t, "alarm due");
                h.spawn_task(alarm_runs(host.clone(), key, t));
            }
            Err(next) => {
                let alarms = h.alarms.clone();
                drop(h);
                match next {
                    Some(t) => {
                        let wait = std::time::Duration::from_millis(u64::try_from(t - now).unwrap_or(0));
                        madsim_tokio::select! {
                            // Biased: an unbiased select draws from tokio's thread RNG, seeded from a process-wide counter,
                            // so a second run of a seed in one process would poll the branches in another order.
                            biased;
                            _ = madsim_tokio::time::sleep(wait) => {}
                            _ = alarms.wake.notified() => {}
                        }
                    }
                    None => alarms.wake.notified().await,
                }
            }
        }
    }
}
