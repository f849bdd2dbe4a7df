//! Running alarms (spec §4): the timer that starts the run of each index entry that comes due, the runs with
//! their retries and backoff, one run inside the object, and giving an alarm up.

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
    /// Runs the alarm of `key` once (spec §4); see [`crate::alarm`].
    async fn run_alarm(self: &Rc<Self>, key: &AlarmKey, retry_count: u32) -> RunOutcome {
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
        let result = instance
            .deliver(EventKind::Alarm, 0, move |object| {
                Box::pin(async move { me.alarm_event(object, &inst, &run_key, retry_count).await })
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
        retry_count: u32,
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
            Some(t) if t <= now => t,
            // Nothing due: an alarm moved later, or deleted.
            other => return settle(other, generation).await,
        };
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
    async fn abandon_alarm(self: &Rc<Self>, key: &AlarmKey, scheduled: i64) {
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
            .deliver(EventKind::Alarm, 0, move |_| {
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

/// One alarm's runs until it settles, with retries (spec §4).
async fn alarm_runs(host: Weak<HostInner>, key: AlarmKey, scheduled: i64) {
    let Some(h) = host.upgrade() else { return };
    h.alarms.set_running(&key, true);
    let config = h.config.alarms;
    drop(h);
    let mut counted_failures = 0u32;
    // The current streak of failures of one kind (counted or not) and its length: the backoff restarts when
    // the kind changes (spec §4).
    let mut streak: Option<(bool, u32)> = None;
    loop {
        let Some(h) = host.upgrade() else { return };
        let outcome = h.run_alarm(&key, counted_failures).await;
        let counted = match outcome {
            RunOutcome::Settled => break,
            RunOutcome::Abandon => {
                h.abandon_alarm(&key, scheduled).await;
                break;
            }
            RunOutcome::Failed(e) => {
                tracing::debug!(target: "dosim::runtime", "alarm failed (counted): {}", e.message());
                counted_failures += 1;
                if counted_failures > config.retries_max {
                    h.abandon_alarm(&key, scheduled).await;
                    break;
                }
                true
            }
            RunOutcome::Interrupted(e) => {
                tracing::debug!(target: "dosim::runtime", "alarm interrupted (not counted): {}", e.message());
                false
            }
        };
        let n = match streak {
            Some((kind, n)) if kind == counted => n + 1,
            _ => 0,
        };
        streak = Some((counted, n));
        let exponent = if counted { n } else { n.min(alarm::ALARM_UNCOUNTED_EXPONENT_MAX) };
        let mut b = [0u8; 4];
        h.entropy.fill(&mut b);
        let jitter = u32::from_le_bytes(b) % 1_000_001;
        let delay = config.backoff(exponent, jitter);
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
                let handle = madsim_tokio::task::spawn_local(alarm_runs(host.clone(), key, t));
                let mut tasks = h.tasks.borrow_mut();
                // Bounded by the runs in progress: finished ones are dropped as new ones start.
                tasks.retain(|t| !t.is_finished());
                tasks.push(handle.abort_handle());
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
