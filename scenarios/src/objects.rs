//! Example objects: the ones of Cloudflare's get-started docs, written against dosim's API, and a few that
//! tests and scenarios use to show a semantic at work.

use std::cell::Cell;

use dosim_runtime::prelude::*;
use dosim_runtime::storage::sql::SqlValue;

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
