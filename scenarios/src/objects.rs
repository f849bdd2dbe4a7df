//! Example objects: the ones of Cloudflare's get-started docs, written against dosim's API, and a few that
//! tests and scenarios use to show a semantic at work.

use std::cell::Cell;

use dosim_runtime::prelude::*;

/// The get-started `Counter`: `/increment`, `/decrement` and `/` answer the value; anything else is 404.
///
/// Each request reads the value, changes it and writes it back, with no await between the write and the
/// response but the storage calls. On the SQLite backend those are synchronous; on the KV backend the read
/// holds the input gate (spec §1.2), so concurrent requests never interleave between read and write.
pub struct Counter {
    state: State,
}

impl DurableObject for Counter {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        Ok(Counter { state })
    }

    async fn fetch(&self, request: Request) -> Result<Response, Error> {
        let storage = self.state.storage();
        let mut value: i64 = storage.get("value").await?.unwrap_or(0);
        match request.path() {
            "/increment" => value += 1,
            "/decrement" => value -= 1,
            "/" => {}
            _ => return Ok(Response::not_found()),
        }
        storage.put("value", &value).await?;
        Ok(Response::ok(value.to_string()))
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc("increment", async |c: &Counter, by: i64| {
            let storage = c.state.storage();
            let value: i64 = storage.get("value").await?.unwrap_or(0) + by;
            storage.put("value", &value).await?;
            Ok(value)
        });
        h.rpc("read", async |c: &Counter, (): ()| {
            Ok(c.state.storage().get::<i64>("value").await?.unwrap_or(0))
        });
    }
}

/// The get-started SQL object: `say_hello` runs `SELECT 'Hello, World!' as greeting` and returns the greeting.
pub struct MyDurableObject {
    state: State,
}

impl DurableObject for MyDurableObject {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        Ok(MyDurableObject { state })
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc("say_hello", async |o: &MyDurableObject, (): ()| {
            let row = o.state.storage().sql()?.exec("SELECT 'Hello, World!' as greeting", &[])?.one()?;
            match row.get("greeting") {
                Some(SqlValue::Text(greeting)) => Ok(greeting.clone()),
                other => Err(Error::new(format!("unexpected greeting column: {other:?}"))),
            }
        });
    }
}

/// A Worker-style front (the get-started Worker): routes a request to the object named by its path, through
/// the `binding` namespace, with `get_by_name`.
pub async fn worker_fetch(env: &Env, binding: &str, request: Request) -> Result<Response, Error> {
    let namespace = env.durable_object(binding)?;
    let name = request.path().to_string();
    namespace.get_by_name(&name).fetch(request).await
}

/// A counter kept only in memory: eviction loses it (spec §5.1). `/` answers the count after adding one.
pub struct MemoryCounter {
    count: Cell<i64>,
}

impl DurableObject for MemoryCounter {
    async fn new(_state: State, _env: Env) -> Result<Self, Error> {
        Ok(MemoryCounter { count: Cell::new(0) })
    }

    async fn fetch(&self, _request: Request) -> Result<Response, Error> {
        self.count.set(self.count.get() + 1);
        Ok(Response::ok(self.count.get().to_string()))
    }
}

/// The `Counter`, but its read lets other events in while it waits for storage (`allow_concurrency`): on the
/// KV backend, concurrent increments then read the same value and lose updates (spec §1.2).
pub struct RacyCounter {
    state: State,
}

impl DurableObject for RacyCounter {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        Ok(RacyCounter { state })
    }

    async fn fetch(&self, request: Request) -> Result<Response, Error> {
        let storage = self.state.storage();
        let read = GetOptions { allow_concurrency: true, no_cache: false };
        let mut value: i64 = storage.get_with("value", read).await?.unwrap_or(0);
        if request.path() == "/increment" {
            value += 1;
            storage.put("value", &value).await?;
        }
        Ok(Response::ok(value.to_string()))
    }
}

/// One run of [`Probe`]'s alarm handler, as it saw it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AlarmRun {
    /// What the handler was told.
    pub info: AlarmInfo,
    /// `State::now_ms` when it ran.
    pub at_ms: i64,
    /// What `get_alarm` returned inside the handler.
    pub alarm_seen: Option<i64>,
}

/// An object for tests: each RPC method exercises one runtime rule. Its alarm handler records every run in
/// storage (`alarm_runs`), fails while `alarm_failures` (a stored count) is above the number of runs so far,
/// and waits `alarm_wait_ms` (stored) before returning.
pub struct Probe {
    state: State,
    env: Env,
}

thread_local! {
    /// Where `Probe::ping` reports the values it receives (a test installs a sender; a simulation runs on one
    /// thread, so the controller and the nodes share it).
    pub static PINGS: std::cell::RefCell<Option<madsim_tokio::sync::mpsc::UnboundedSender<i64>>> =
        const { std::cell::RefCell::new(None) };
}

impl Probe {
    async fn alarm_handler(&self, info: AlarmInfo) -> Result<(), Error> {
        let storage = self.state.storage();
        let mut runs: Vec<AlarmRun> = storage.get("alarm_runs").await?.unwrap_or_default();
        let alarm_seen = storage.get_alarm().await?;
        runs.push(AlarmRun { info, at_ms: self.state.now_ms(), alarm_seen });
        let n = runs.len() as u64;
        storage.put("alarm_runs", &runs).await?;
        let wait: u64 = storage.get("alarm_wait_ms").await?.unwrap_or(0);
        if wait > 0 {
            madsim_tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        }
        if storage.get::<i64>("alarm_abort").await? == Some(1) {
            // abort(reason, { retryAlarm: false }): the alarm is abandoned, not retried (spec §4).
            return Err(self.state.abort_with(Some("alarm gives up"), AlarmRetry::Abandon));
        }
        let failures: u64 = storage.get("alarm_failures").await?.unwrap_or(0);
        if n <= failures {
            return Err(Error::new(format!("alarm run {n} fails on purpose")));
        }
        if let Some(next) = storage.get::<i64>("alarm_then").await? {
            storage.delete("alarm_then").await?;
            storage.set_alarm(next).await?;
        }
        Ok(())
    }
}

impl DurableObject for Probe {
    async fn new(state: State, env: Env) -> Result<Self, Error> {
        let fail: Option<String> = state.storage().get("constructor_fails").await?;
        if let Some(message) = fail {
            return Err(Error::new(message));
        }
        Ok(Probe { state, env })
    }

    async fn fetch(&self, request: Request) -> Result<Response, Error> {
        Ok(Response::ok(format!("probe {}", request.path())))
    }

    const HAS_ALARM: bool = true;

    async fn alarm(&self, info: AlarmInfo) -> Result<(), Error> {
        self.alarm_handler(info).await
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc("put", async |p: &Probe, (key, value, unconfirmed): (String, i64, bool)| {
            let options = WriteOptions { allow_unconfirmed: unconfirmed };
            p.state.storage().put_with(&key, &value, options).await
        });
        h.rpc("get", async |p: &Probe, key: String| p.state.storage().get::<i64>(&key).await);
        h.rpc("set", async |p: &Probe, (key, value): (String, ciborium::Value)| {
            p.state.storage().put(&key, &value).await
        });
        h.rpc("set_alarm", async |p: &Probe, at_ms: i64| p.state.storage().set_alarm(at_ms).await);
        h.rpc("get_alarm", async |p: &Probe, (): ()| p.state.storage().get_alarm().await);
        h.rpc("alarm_runs", async |p: &Probe, (): ()| {
            Ok(p.state.storage().get::<Vec<AlarmRun>>("alarm_runs").await?.unwrap_or_default())
        });
        h.rpc("now", async |p: &Probe, (): ()| Ok(p.state.now_ms()));
        h.rpc("block", async |p: &Probe, ms: u64| {
            p.state
                .block_concurrency_while(async {
                    madsim_tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    Ok(())
                })
                .await
        });
        h.rpc("block_fails", async |p: &Probe, message: String| {
            p.state.block_concurrency_while(async { Err::<(), _>(Error::new(message)) }).await
        });
        h.rpc("nest", async |p: &Probe, depth: u32| nest(&p.state, depth, 0).await);
        h.rpc("write_then_abort", async |p: &Probe, reason: Option<String>| {
            p.state.storage().put("aborted_write", &1i64).await?;
            Err::<(), _>(p.state.abort(reason.as_deref()))
        });
        h.rpc("slow_increment", async |p: &Probe, (): ()| {
            // A timer between the read and the write: an ordinary await, so other events interleave.
            let storage = p.state.storage();
            let value: i64 = storage.get("slow").await?.unwrap_or(0);
            madsim_tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            storage.put("slow", &(value + 1)).await?;
            Ok(value + 1)
        });
        h.rpc(
            "put_then_call",
            async |p: &Probe, (key, value, unconfirmed, peer): (String, i64, bool, String)| {
                // The write, then a call to another object: the call leaves once the write is durable (unless
                // the write was unconfirmed).
                let options = WriteOptions { allow_unconfirmed: unconfirmed };
                p.state.storage().put_with(&key, &value, options).await?;
                let peer = p.env.durable_object("PROBE")?.get_by_name(&peer);
                peer.call::<_, ()>("ping", &value).await
            },
        );
        h.rpc("txn_slow_increment", async |p: &Probe, (): ()| {
            // The same, inside storage.transaction(): a critical section, so nothing interleaves.
            p.state
                .storage()
                .transaction(async |txn| {
                    let value: i64 = txn.get("slow").await?.unwrap_or(0);
                    madsim_tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    txn.put("slow", &(value + 1)).await?;
                    Ok(value + 1)
                })
                .await
        });
        h.rpc("background", async |p: &Probe, ms: u64| {
            // Answers at once; the task runs on (spec §10 waitUntil) and writes `bg` when it is done.
            let storage = p.state.storage().clone();
            p.state.wait_until(async move {
                madsim_tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                let _ = storage.put("bg", &1i64).await;
            });
            Ok(())
        });
        h.rpc("ping", async |_p: &Probe, value: i64| {
            PINGS.with(|p| {
                if let Some(tx) = p.borrow().as_ref() {
                    let _ = tx.send(value);
                }
            });
            Ok(())
        });
        h.rpc("sleep", async |_p: &Probe, ms: u64| {
            madsim_tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            Ok(())
        });
        h.rpc("sleep_then_put", async |p: &Probe, (ms, key, value): (u64, String, i64)| {
            // A write long after the event started: by then the instance may have been superseded.
            madsim_tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            p.state.storage().put(&key, &value).await
        });
    }
}

/// What [`nest`] returns: the level reached and the refusal, if any.
type NestFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(u32, Option<String>), Error>> + 'a>>;

/// `remaining` more nested `block_concurrency_while` calls from `level`: the level reached, and the error of a
/// call that was refused for nesting too deeply (caught by its enclosing critical section, so nothing resets).
fn nest(state: &State, remaining: u32, level: u32) -> NestFuture<'_> {
    Box::pin(async move {
        if remaining == 0 {
            return Ok((level, None));
        }
        match state.block_concurrency_while(nest(state, remaining - 1, level + 1)).await {
            Err(e) if e.message() == dosim_runtime::error::messages::BLOCK_CONCURRENCY_NESTED_TOO_DEEPLY => {
                Ok((level, Some(e.message().to_string())))
            }
            other => other,
        }
    })
}

/// A key-value register whose every key carries a version: `put(key, value)` stores the value under the
/// key's next version and answers that version; `get(key)` answers `(version, value)`, or `None` for a key
/// never written. Versions count the writes that applied, so a lost write shows as a version handed out
/// twice, a stale read as a version going back.
pub struct Register {
    state: State,
}

impl DurableObject for Register {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        Ok(Register { state })
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc("put", async |r: &Register, (key, value): (String, i64)| {
            let storage = r.state.storage();
            let version = storage.get::<(u64, i64)>(&key).await?.map_or(0, |(v, _)| v) + 1;
            storage.put(&key, &(version, value)).await?;
            Ok(version)
        });
        h.rpc("get", async |r: &Register, key: String| r.state.storage().get::<(u64, i64)>(&key).await);
    }
}

/// A counter that acknowledges an increment before it is durable (`allow_unconfirmed`): the negative control
/// of the no-lost-write check. On the KV backend a crash between the reply and the flush loses an
/// acknowledged increment.
pub struct UnconfirmedCounter {
    state: State,
}

impl DurableObject for UnconfirmedCounter {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        Ok(UnconfirmedCounter { state })
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc("increment", async |c: &UnconfirmedCounter, by: i64| {
            let storage = c.state.storage();
            let value: i64 = storage.get("value").await?.unwrap_or(0) + by;
            storage.put_with("value", &value, WriteOptions { allow_unconfirmed: true }).await?;
            Ok(value)
        });
        h.rpc("read", async |c: &UnconfirmedCounter, (): ()| {
            Ok(c.state.storage().get::<i64>("value").await?.unwrap_or(0))
        });
    }
}
