//! What tests ask of a host, beyond what a Worker can do (the equivalents of the Cloudflare Vitest pool's
//! `runInDurableObject`, `runDurableObjectAlarm` and `listDurableObjectIds`, and errors on demand): run code
//! inside an object as one of its events, run its alarm now, list the objects of a namespace, and have an
//! object refuse its next calls as overloaded.
//!
//! Each is deterministic: it goes through the same event loop, gates, alarm runs and admission check as the
//! calls it stands for, and draws nothing of its own.

use std::any::TypeId;
use std::rc::Rc;

use crate::alarm::{AlarmKey, RunOutcome};
use crate::error::{messages, Error};
use crate::id::ObjectId;
use crate::instance::{EventKind, Instance};
use crate::object::DurableObject;
use crate::state::State;

use super::{alarms, host_gone, ClassEntry, Host, HostInner};

/// The message of [`Host::overload_next`]'s refusals: the runtime's own, for too many queued requests.
pub(crate) const INJECTED_OVERLOAD: &str = messages::OVERLOADED_TOO_MANY_QUEUED;

impl HostInner {
    /// The admission check of a request for object `id` of `class` on `instance` (spec §6.1): an injected
    /// overload first ([`Host::overload_next`]), then the instance's own limits.
    pub(super) fn admit(
        &self,
        class: &ClassEntry,
        id: &ObjectId,
        instance: &Instance,
        bytes: usize,
    ) -> Result<(), Error> {
        let key: AlarmKey = (class.namespace.uid.clone(), *id.as_bytes());
        let mut forced = self.forced_overloads.borrow_mut();
        if let Some(left) = forced.get_mut(&key) {
            *left -= 1;
            if *left == 0 {
                forced.remove(&key);
            }
            tracing::debug!(
                target: "dosim::runtime",
                "{} refuses a request: {INJECTED_OVERLOAD} (injected)",
                instance.label
            );
            return Err(crate::instance::overloaded(INJECTED_OVERLOAD));
        }
        instance.admit(bytes)
    }

    /// The live instance of object `id` of `class` for a test hook, started if needed. In a cluster the
    /// object is activated here as a call's would be; if another host owns it, an error says so (a hook runs
    /// on the host that owns the object).
    async fn hook_instance(
        self: &Rc<Self>,
        class: &Rc<ClassEntry>,
        id: &ObjectId,
    ) -> Result<Rc<Instance>, Error> {
        if self.closed.get() {
            return Err(host_gone());
        }
        if self.cluster.is_none() {
            return self.route(class, id, None)?.instance();
        }
        match self.activate(class, id).await? {
            Ok((instance, _)) => Ok(instance),
            Err(owner) => Err(Error::new(format!(
                "the object {id} is not owned by this host ({}): run the hook on its owner",
                owner.map_or_else(|| "no owner is known".to_string(), |o| format!("{o} owns it"))
            ))
            .with_retryable()),
        }
    }
}

impl Host {
    /// The class bound to `binding`, with `id` checked to belong to its namespace.
    fn hook_class(&self, binding: &str, id: Option<&ObjectId>) -> Result<Rc<ClassEntry>, Error> {
        let ns = self.env().durable_object(binding)?;
        if let Some(id) = id {
            ns.id_from_string(&id.to_string())?;
        }
        self.inner.classes.get(&ns.namespace().uid).cloned().ok_or_else(|| {
            Error::new(messages::internal_error(&format!("the class bound to `{binding}` is not deployed")))
        })
    }

    /// Runs `f` inside object `id` of the class bound to `binding` (the Vitest pool's `runInDurableObject`):
    /// the object is started if it is not live, and `f` gets the object and its [`State`] and runs as an
    /// event of it. The event is a request in every respect: it passes the admission check (so
    /// [`Host::overload_next`] and the overload limits refuse it as they would a call), it waits behind the
    /// events before it on the input gate, its turns interleave with other events' at its awaits as a
    /// request's would, and its result comes back once the output gate allows (every write it confirmed is
    /// durable).
    ///
    /// Fails if `binding` is unknown, if `id` is not of that namespace, if the class bound to it is not `T`
    /// (the message names both types), or with the error the event ends with (a reset cuts it off).
    ///
    /// `T` is inferred from `f`'s first parameter, or named: `host.run_in_object::<Counter, _>(…)`.
    pub async fn run_in_object<T: DurableObject, R: 'static>(
        &self,
        binding: &str,
        id: &ObjectId,
        f: impl AsyncFnOnce(&T, &State) -> R + 'static,
    ) -> Result<R, Error> {
        let class = self.hook_class(binding, Some(id))?;
        let (type_id, type_name) = class.class.object_type();
        if type_id != TypeId::of::<T>() {
            return Err(Error::type_error(format!(
                "run_in_object: the class bound to `{binding}` is `{type_name}`, not `{}`",
                std::any::type_name::<T>()
            )));
        }
        let instance = self.inner.hook_instance(&class, id).await?;
        self.inner.admit(&class, id, &instance, 0)?;
        let what = format!("run_in_object::<{}>", short_type_name(std::any::type_name::<T>()));
        instance
            .deliver(EventKind::Request, 0, what, move |object| {
                Box::pin(async move {
                    let (object, state) = crate::object::downcast::<T>(object)
                        .expect("the class's objects are checked to be a T");
                    Ok(f(&object, &state).await)
                })
            })
            .await
    }

    /// Runs the alarm of object `id` of the class bound to `binding` now, if it has one stored, whatever its
    /// time (the Vitest pool's `runDurableObjectAlarm`); returns whether it had one. The run is the
    /// scheduler's own: an alarm event with `retry_count` 0, the alarm reading as deleted while the handler
    /// runs and deleted when it succeeds (unless the handler set another). A failure is retried as the
    /// scheduler retries (backoff, counted and uncounted failures, given up after the last retry), by a
    /// background run of this host; this call returns after the first run.
    ///
    /// Fails if a run of this alarm is in progress already (its handler runs, or it waits for a retry), or
    /// with the error that cut the run off before it read the alarm (it is then retried in the background).
    pub async fn run_alarm_now(&self, binding: &str, id: &ObjectId) -> Result<bool, Error> {
        let class = self.hook_class(binding, Some(id))?;
        let inner = &self.inner;
        // In a cluster: the object is activated here first, or the hook fails if another host owns it.
        drop(inner.hook_instance(&class, id).await?);
        let key: AlarmKey = (class.namespace.uid.clone(), *id.as_bytes());
        if inner.alarms.is_running(&key) {
            return Err(Error::new(format!(
                "run_alarm_now: an alarm run of {id} is in progress (its handler runs, or it waits to be retried)"
            )));
        }
        // The timer starts no run of its own meanwhile.
        inner.alarms.take_due(&key);
        inner.alarms.set_running(&key, true);
        let index_time = inner.alarms.scheduled(&key);
        let first = alarms::RetryOf { scheduled: index_time.unwrap_or(i64::MIN), count: 0 };
        let (outcome, found) = inner.run_alarm(&key, first, true).await;
        let error = match &outcome {
            RunOutcome::Interrupted(e) if found.is_none() => Some(e.clone()),
            _ => None,
        };
        if outcome == RunOutcome::Settled {
            inner.alarms.set_running(&key, false);
        } else {
            let scheduled = found.or(index_time).unwrap_or(0);
            let retries = alarms::alarm_retries(Rc::downgrade(inner), key, scheduled, Some(outcome), true);
            inner.spawn_task(retries);
        }
        match error {
            Some(e) => Err(e),
            None => Ok(found.is_some()),
        }
    }

    /// The ids of the objects of the class bound to `binding` that have a database in this host's storage
    /// (the Vitest pool's `listDurableObjectIds`), sorted by their string form. An object that was started
    /// but never opened its database is not listed; nor, in a cluster with storage nodes, one whose database
    /// lives only on the nodes. Fails if the binding is unknown, or the storage provider cannot list.
    pub fn object_ids(&self, binding: &str) -> Result<Vec<ObjectId>, Error> {
        let ns = self.env().durable_object(binding)?;
        let mut hexes = self.inner.storage.list_objects(&ns.namespace().uid)?;
        hexes.sort();
        hexes.dedup();
        let mut ids = Vec::with_capacity(hexes.len());
        for hex in hexes {
            match ns.id_from_string(&hex) {
                Ok(id) => ids.push(id),
                Err(e) => tracing::warn!(
                    target: "dosim::runtime",
                    "object_ids: a database that is not an object of `{binding}` ({hex}): {}",
                    e.message()
                ),
            }
        }
        Ok(ids)
    }

    /// Makes object `id` of the class bound to `binding` refuse its next `calls` calls (fetch, RPC, or
    /// [`Host::run_in_object`]) with the runtime's own overload error (spec §6.1:
    /// `Durable Object is overloaded. Too many requests queued.`, flagged `overloaded`, neither retryable
    /// nor a reset), as if its queue were full; the refused calls do not run. The calls after them are
    /// served as usual. Replaces any refusals still pending for the object; 0 cancels them. In a cluster,
    /// call it on the host that owns the object (refusals are made where calls are admitted).
    pub fn overload_next(&self, binding: &str, id: &ObjectId, calls: u32) -> Result<(), Error> {
        let class = self.hook_class(binding, Some(id))?;
        let key: AlarmKey = (class.namespace.uid.clone(), *id.as_bytes());
        let mut forced = self.inner.forced_overloads.borrow_mut();
        if calls == 0 {
            forced.remove(&key);
        } else {
            forced.insert(key, calls);
        }
        Ok(())
    }
}

/// A type's name without its module path, for a trace line: `dosim_scenarios::objects::Probe` → `Probe`.
fn short_type_name(name: &str) -> &str {
    let end = name.find('<').unwrap_or(name.len());
    name[..end].rfind("::").map_or(name, |i| &name[i + 2..])
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_type_names_drop_the_path() {
        assert_eq!(super::short_type_name("a::b::Probe"), "Probe");
        assert_eq!(super::short_type_name("Probe"), "Probe");
        assert_eq!(super::short_type_name("a::Wrap<b::C>"), "Wrap<b::C>");
    }
}
