//! The planted bugs' objects: each a counter (RPC `add(n) -> value after`, `read() -> value`) with one
//! realistic bug, next to its correct twin. A counter makes every bug show the same way to the checks: an
//! acknowledged value that no order of the operations gives.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use dosim_runtime::prelude::*;

/// The error a guarded counter answers for a negative amount (its application-level validation).
pub const NEGATIVE_AMOUNT: &str = "amount must not be negative";

/// Correct: reads, adds and writes in one event; the input gate keeps events from interleaving between
/// the read and the write (spec §1.2), and the output gate holds the answer until the write is durable.
pub struct SafeCounter {
    state: State,
}

impl DurableObject for SafeCounter {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        Ok(SafeCounter { state })
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc("add", async |c: &SafeCounter, n: i64| {
            let storage = c.state.storage();
            let value = storage.get::<i64>("value").await?.unwrap_or(0) + n;
            storage.put("value", &value).await?;
            Ok(value)
        });
        h.rpc("read", async |c: &SafeCounter, (): ()| {
            Ok(c.state.storage().get::<i64>("value").await?.unwrap_or(0))
        });
    }
}

/// **Bug: read-modify-write across an `allow_concurrency` read.** The read lets other events in while it
/// waits for storage (to cut latency), so on the KV backend two concurrent `add`s read the same value and
/// one of them is lost. Its twin is [`SafeCounter`].
pub struct ConcurrentReadCounter {
    state: State,
}

impl DurableObject for ConcurrentReadCounter {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        Ok(ConcurrentReadCounter { state })
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc("add", async |c: &ConcurrentReadCounter, n: i64| {
            let storage = c.state.storage();
            let read = GetOptions { allow_concurrency: true, no_cache: false };
            let value = storage.get_with::<i64>("value", read).await?.unwrap_or(0) + n;
            storage.put("value", &value).await?;
            Ok(value)
        });
        h.rpc("read", async |c: &ConcurrentReadCounter, (): ()| {
            Ok(c.state.storage().get::<i64>("value").await?.unwrap_or(0))
        });
    }
}

/// How many `add`s a [`WriteBehindCounter`] keeps in memory before it writes the value.
pub const WRITE_BEHIND_EVERY: i64 = 4;

/// **Bug: in-memory state trusted across eviction.** To save writes it keeps the value in memory and writes
/// it to storage only every [`WRITE_BEHIND_EVERY`] adds, trusting the instance to live on; an eviction (or a
/// crash) loses the adds it acknowledged since the last write. Its twin writes every add
/// ([`WriteBehindCounter::<1>`] is correct).
pub struct WriteBehindCounter<const EVERY: i64 = WRITE_BEHIND_EVERY> {
    state: State,
    value: Cell<i64>,
    unsaved: Cell<i64>,
}

impl<const EVERY: i64> DurableObject for WriteBehindCounter<EVERY> {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        let value = state.storage().get::<i64>("value").await?.unwrap_or(0);
        Ok(WriteBehindCounter { state, value: Cell::new(value), unsaved: Cell::new(0) })
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc("add", async |c: &WriteBehindCounter<EVERY>, n: i64| {
            c.value.set(c.value.get() + n);
            c.unsaved.set(c.unsaved.get() + 1);
            if c.unsaved.get() >= EVERY {
                c.state.storage().put("value", &c.value.get()).await?;
                c.unsaved.set(0);
            }
            Ok(c.value.get())
        });
        h.rpc("read", async |c: &WriteBehindCounter<EVERY>, (): ()| Ok(c.value.get()));
    }
}

/// **Bug: `allow_unconfirmed` confirming a write that is then lost.** The write does not hold the output
/// gate, so the answer leaves before the write is durable; a crash or power cut between the two loses an
/// acknowledged add. Its twin is [`SafeCounter`].
pub struct UnconfirmedWriteCounter {
    state: State,
}

impl DurableObject for UnconfirmedWriteCounter {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        Ok(UnconfirmedWriteCounter { state })
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc("add", async |c: &UnconfirmedWriteCounter, n: i64| {
            let storage = c.state.storage();
            let value = storage.get::<i64>("value").await?.unwrap_or(0) + n;
            storage.put_with("value", &value, WriteOptions { allow_unconfirmed: true }).await?;
            Ok(value)
        });
        h.rpc("read", async |c: &UnconfirmedWriteCounter, (): ()| {
            Ok(c.state.storage().get::<i64>("value").await?.unwrap_or(0))
        });
    }
}

thread_local! {
    /// The module-level cache of [`CachedCounter`]: per object id, the value it last computed. Module
    /// state outlives an instance (in workerd, the isolate's globals survive an object's reset).
    static VALUE_CACHE: RefCell<BTreeMap<String, i64>> = const { RefCell::new(BTreeMap::new()) };
}

/// **Bug: a cache in memory not invalidated after `block_concurrency_while` fails.** It keeps each object's
/// value in a module-level cache (which survives the instance) and updates it inside a critical section
/// before validating the amount; a negative amount fails the critical section, which resets the object
/// (spec §10) and discards the write, but not the cache; the next instance trusts the cache. With `FIXED`
/// (its twin) it validates first and drops the cache entry when the section fails.
pub struct CachedCounter<const FIXED: bool = false> {
    state: State,
    key: String,
}

impl<const FIXED: bool> DurableObject for CachedCounter<FIXED> {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        let key = state.id().to_string();
        Ok(CachedCounter { state, key })
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc("add", async |c: &CachedCounter<FIXED>, n: i64| {
            let key = c.key.clone();
            let storage = c.state.storage();
            let result = c
                .state
                .block_concurrency_while(async {
                    if FIXED && n < 0 {
                        return Err(Error::new(NEGATIVE_AMOUNT));
                    }
                    let cached = VALUE_CACHE.with(|m| m.borrow().get(&key).copied());
                    let value = match cached {
                        Some(v) => v,
                        None => storage.get::<i64>("value").await?.unwrap_or(0),
                    } + n;
                    VALUE_CACHE.with(|m| m.borrow_mut().insert(key.clone(), value));
                    if n < 0 {
                        return Err(Error::new(NEGATIVE_AMOUNT));
                    }
                    storage.put("value", &value).await?;
                    Ok(value)
                })
                .await;
            if FIXED && result.is_err() {
                VALUE_CACHE.with(|m| m.borrow_mut().remove(&c.key));
            }
            result
        });
        h.rpc("read", async |c: &CachedCounter<FIXED>, (): ()| {
            let cached = VALUE_CACHE.with(|m| m.borrow().get(&c.key).copied());
            match cached {
                Some(v) => Ok(v),
                None => Ok(c.state.storage().get::<i64>("value").await?.unwrap_or(0)),
            }
        });
    }
}

/// The error of the flaky payment service a [`ChargingAlarm`] calls.
pub const PAYMENT_SERVICE_DOWN: &str = "payment service unavailable";
/// How long after a `schedule` call a [`ChargingAlarm`] charges.
pub const CHARGE_DELAY_MS: i64 = 500;

/// **Bug: a non-idempotent alarm handler under retry.** `schedule` queues a charge and sets an alarm; the
/// alarm handler charges what is queued: it adds the queued charges to `charged`, calls a payment service
/// (which fails the first attempt of every other alarm), and only then clears the queue. When the call
/// fails, the handler fails, the alarm is retried (spec §4), and the retry charges the same queue again:
/// `charged` ends above `scheduled`. With `FIXED` (its twin) the handler calls the service first and then
/// records the charge and clears the queue in one write.
pub struct ChargingAlarm<const FIXED: bool = false> {
    state: State,
}

impl<const FIXED: bool> ChargingAlarm<FIXED> {
    /// The payment service: down for the first attempt of every alarm whose time is an even second.
    fn pay(info: &AlarmInfo) -> Result<(), Error> {
        if info.retry_count == 0 && (info.scheduled_time / 1000) % 2 == 0 {
            Err(Error::new(PAYMENT_SERVICE_DOWN))
        } else {
            Ok(())
        }
    }
}

impl<const FIXED: bool> DurableObject for ChargingAlarm<FIXED> {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        Ok(ChargingAlarm { state })
    }

    const HAS_ALARM: bool = true;

    async fn alarm(&self, info: AlarmInfo) -> Result<(), Error> {
        let storage = self.state.storage();
        let queued: u64 = storage.get("queued").await?.unwrap_or(0);
        let charged: u64 = storage.get("charged").await?.unwrap_or(0);
        if FIXED {
            Self::pay(&info)?;
            storage.put("charged", &(charged + queued)).await?;
            storage.put("queued", &0u64).await?;
        } else {
            storage.put("charged", &(charged + queued)).await?;
            Self::pay(&info)?;
            storage.put("queued", &0u64).await?;
        }
        Ok(())
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc("schedule", async |c: &ChargingAlarm<FIXED>, (): ()| {
            let storage = c.state.storage();
            let scheduled = storage.get::<u64>("scheduled").await?.unwrap_or(0) + 1;
            let queued = storage.get::<u64>("queued").await?.unwrap_or(0) + 1;
            storage.put("scheduled", &scheduled).await?;
            storage.put("queued", &queued).await?;
            if storage.get_alarm().await?.is_none() {
                storage.set_alarm(c.state.now_ms() + CHARGE_DELAY_MS).await?;
            }
            Ok(scheduled)
        });
    }
}

/// **Bug: a superseded instance acting on stale memory.** A ticket dispenser keeps the next ticket in memory
/// (read from storage once, when the instance starts) and hands it out at once, writing the new high-water
/// mark without waiting for it (`allow_unconfirmed`, to answer fast). While its host is cut off and
/// superseded, the tickets it hands out are never durable (the storage node fences the old owner's
/// commits), so the new owner, starting from storage, hands out the same tickets again. With `FIXED` (its
/// twin) the write holds the answer until it is durable, so a fenced write fails the call instead.
pub struct TicketDispenser<const FIXED: bool = false> {
    state: State,
    next: Cell<i64>,
}

impl<const FIXED: bool> DurableObject for TicketDispenser<FIXED> {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        let next = state.storage().get::<i64>("value").await?.unwrap_or(0);
        Ok(TicketDispenser { state, next: Cell::new(next) })
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc("add", async |d: &TicketDispenser<FIXED>, n: i64| {
            let ticket = d.next.get() + n;
            d.next.set(ticket);
            let options = WriteOptions { allow_unconfirmed: !FIXED };
            d.state.storage().put_with("value", &ticket, options).await?;
            Ok(ticket)
        });
        h.rpc("read", async |d: &TicketDispenser<FIXED>, (): ()| Ok(d.next.get()));
    }
}
