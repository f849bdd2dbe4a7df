//! What a user writes: a type implementing [`DurableObject`], with a constructor, a `fetch` handler, an
//! `alarm` handler, and the typed RPC methods it declares in [`DurableObject::handlers`].
//!
//! Methods take `&self`: the runtime delivers concurrent events to the same instance, and they interleave at
//! their `.await`s, as on Cloudflare (spec §1.1). Interior mutability (`Cell`, `RefCell`) is the user's
//! choice, as in workers-rs; objects and their futures need not be `Send`, because an instance runs on one
//! thread.

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::rc::Rc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::env::Env;
use crate::error::{messages, Error};
use crate::future::LocalFuture;
use crate::http::{Request, Response};
use crate::state::State;
use crate::storage::value;
use crate::websocket::{WebSocket, WebSocketEvent, WebSocketIncomingMessage};

/// What an alarm handler is told (spec §4 `alarmInfo`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmInfo {
    /// How many earlier runs of this alarm failed (counted failures only).
    pub retry_count: u32,
    /// `retry_count > 0`.
    pub is_retry: bool,
    /// The time the alarm was set for, in ms since the epoch.
    pub scheduled_time: i64,
}

/// A Durable Object class. The runtime constructs one instance per id on first use, and again after the
/// instance was evicted or reset.
///
/// ```
/// use std::cell::Cell;
/// use dosim_runtime::prelude::*;
///
/// struct Counter { state: State, hits: Cell<u64> }
///
/// impl DurableObject for Counter {
///     async fn new(state: State, _env: Env) -> Result<Self, Error> {
///         Ok(Counter { state, hits: Cell::new(0) })
///     }
///     async fn fetch(&self, _req: Request) -> Result<Response, Error> {
///         self.hits.set(self.hits.get() + 1);
///         let n: i64 = self.state.storage().get("n").await?.unwrap_or(0);
///         self.state.storage().put("n", &(n + 1)).await?;
///         Ok(Response::ok((n + 1).to_string()))
///     }
///     fn handlers(h: &mut Handlers<Self>) {
///         h.rpc("hits", async |c: &Counter, (): ()| Ok(c.hits.get()));
///     }
/// }
/// ```
#[allow(async_fn_in_trait)] // Futures are deliberately not `Send`: an instance runs on one thread.
pub trait DurableObject: Sized + 'static {
    /// The constructor. It runs before the first event is delivered, with no other event interleaving (as if
    /// inside `block_concurrency_while`, with its 30 s limit), so it may read storage to set up. If it fails,
    /// the instance is broken: every event on it gets the error (spec §1.1).
    async fn new(state: State, env: Env) -> Result<Self, Error>;

    /// Handles an HTTP request. The default answers `404 Not found`.
    async fn fetch(&self, request: Request) -> Result<Response, Error> {
        let _ = request;
        Ok(Response::not_found())
    }

    /// Whether the class has an alarm handler: `true` when it implements [`DurableObject::alarm`]. The
    /// runtime must know before any alarm runs (without a handler, `set_alarm` fails after construction and
    /// an alarm that fires is dropped without retry, spec §4), and Rust cannot tell whether a default method
    /// was overridden; so the class says it.
    const HAS_ALARM: bool = false;

    /// Handles the object's alarm (spec §4; workers-rs `alarm`). Only called when [`Self::HAS_ALARM`] is
    /// true. The default is a class without a handler: the spec's TypeError.
    async fn alarm(&self, info: AlarmInfo) -> Result<(), Error> {
        let _ = info;
        Err(Error::type_error(messages::ALARM_HANDLER_REQUIRED))
    }

    /// Handles a message on one of the object's hibernatable sockets (spec §5.2; workers-rs
    /// `websocket_message`). The object may have hibernated since the socket was accepted: then this runs on
    /// a newly constructed instance. The default drops the message, as a class without the handler does.
    async fn websocket_message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<(), Error> {
        let _ = (ws, message);
        Ok(())
    }

    /// Handles the close of one of the object's hibernatable sockets (workers-rs `websocket_close`): the
    /// peer's code and reason with `was_clean`, or 1006 and `WebSocket disconnected without sending Close
    /// frame.` when the connection dropped. The runtime has already answered the Close frame. The default
    /// does nothing.
    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: u16,
        reason: String,
        was_clean: bool,
    ) -> Result<(), Error> {
        let _ = (ws, code, reason, was_clean);
        Ok(())
    }

    /// Handles a read error on one of the object's hibernatable sockets (workers-rs `websocket_error`): a
    /// message over the 32 MiB limit. The connection is closed. The default does nothing.
    async fn websocket_error(&self, ws: WebSocket, error: Error) -> Result<(), Error> {
        let _ = (ws, error);
        Ok(())
    }

    /// Declares the typed RPC methods (workers-rs has no equivalent; Rust has no reflection to find them).
    fn handlers(handlers: &mut Handlers<Self>) {
        let _ = handlers;
    }
}

type RpcHandler<T> = Rc<dyn Fn(Rc<T>, Vec<u8>) -> LocalFuture<'static, Result<Vec<u8>, Error>>>;

/// The typed RPC methods a class declares ([`DurableObject::handlers`]).
pub struct Handlers<T> {
    rpc: BTreeMap<String, RpcHandler<T>>,
}

impl<T: 'static> Handlers<T> {
    pub(crate) fn new() -> Handlers<T> {
        Handlers { rpc: BTreeMap::new() }
    }

    /// Declares the RPC method `name`: `f(&object, args)`, with serde arguments and result (CBOR on the wire,
    /// as storage values). Several arguments travel as a tuple. Declaring a name twice keeps the last.
    ///
    /// # Panics
    /// If `name` is `fetch` or `alarm`, which the runtime reserves (a bug in the class declaration).
    pub fn rpc<A, R, F>(&mut self, name: &str, f: F)
    where
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
        F: AsyncFn(&T, A) -> Result<R, Error> + 'static,
    {
        assert!(name != "fetch" && name != "alarm", "`{name}` is reserved and cannot be an RPC method");
        let f = Rc::new(f);
        let handler: RpcHandler<T> = Rc::new(move |object: Rc<T>, args: Vec<u8>| {
            let f = f.clone();
            Box::pin(async move {
                let args: A = value::decode(&args).map_err(|e| {
                    Error::type_error(format!("RPC arguments could not be decoded: {}", e.message()))
                })?;
                let result = f(&object, args).await?;
                value::encode(&result)
            })
        });
        self.rpc.insert(name.to_string(), handler);
    }
}

/// A constructed object, its type erased, as the event loop drives it.
pub(crate) trait LiveObject {
    fn fetch(self: Rc<Self>, request: Request) -> LocalFuture<'static, Result<Response, Error>>;
    fn call(self: Rc<Self>, method: &str, args: Vec<u8>) -> LocalFuture<'static, Result<Vec<u8>, Error>>;
    fn alarm(self: Rc<Self>, info: AlarmInfo) -> Option<LocalFuture<'static, Result<(), Error>>>;
    fn has_alarm(&self) -> bool;
    /// Runs the handler of a hibernatable socket's event.
    fn websocket(
        self: Rc<Self>,
        ws: WebSocket,
        event: WebSocketEvent,
    ) -> LocalFuture<'static, Result<(), Error>>;
    /// The object as `Any`, for [`downcast`] (the embedder's test hooks reach the typed object through it).
    fn as_any(self: Rc<Self>) -> Rc<dyn Any>;
}

struct Live<T: DurableObject> {
    object: Rc<T>,
    /// The state the object was constructed with, for the embedder's test hooks.
    state: State,
    handlers: Rc<Handlers<T>>,
}

/// The typed object behind `object` and its state, if it is a `T`.
pub(crate) fn downcast<T: DurableObject>(object: Rc<dyn LiveObject>) -> Option<(Rc<T>, State)> {
    let live = object.as_any().downcast::<Live<T>>().ok()?;
    Some((live.object.clone(), live.state.clone()))
}

impl<T: DurableObject> LiveObject for Live<T> {
    fn fetch(self: Rc<Self>, request: Request) -> LocalFuture<'static, Result<Response, Error>> {
        let object = self.object.clone();
        Box::pin(async move { object.fetch(request).await })
    }

    fn call(self: Rc<Self>, method: &str, args: Vec<u8>) -> LocalFuture<'static, Result<Vec<u8>, Error>> {
        match self.handlers.rpc.get(method) {
            Some(h) => h(self.object.clone(), args),
            None => {
                let err = Error::type_error(format!(
                    "The RPC receiver does not implement the method \"{method}\"."
                ));
                Box::pin(std::future::ready(Err(err)))
            }
        }
    }

    fn alarm(self: Rc<Self>, info: AlarmInfo) -> Option<LocalFuture<'static, Result<(), Error>>> {
        let object = self.object.clone();
        T::HAS_ALARM.then(|| Box::pin(async move { object.alarm(info).await }) as LocalFuture<'static, _>)
    }

    fn has_alarm(&self) -> bool {
        T::HAS_ALARM
    }

    fn websocket(
        self: Rc<Self>,
        ws: WebSocket,
        event: WebSocketEvent,
    ) -> LocalFuture<'static, Result<(), Error>> {
        let object = self.object.clone();
        Box::pin(async move {
            match event {
                WebSocketEvent::Message(m) => object.websocket_message(ws, m).await,
                WebSocketEvent::Close(c) => object.websocket_close(ws, c.code, c.reason, c.was_clean).await,
                WebSocketEvent::Error(e) => object.websocket_error(ws, e).await,
            }
        })
    }

    fn as_any(self: Rc<Self>) -> Rc<dyn Any> {
        self
    }
}

/// A class, its type erased: how to construct an instance, and whether it has an alarm handler.
pub(crate) trait Class {
    fn construct(&self, state: State, env: Env) -> LocalFuture<'static, Result<Rc<dyn LiveObject>, Error>>;
    fn has_alarm_handler(&self) -> bool;
    /// The Rust type of the class's objects: its id and its name (for error messages).
    fn object_type(&self) -> (TypeId, &'static str);
}

/// The [`Class`] of `T`.
pub(crate) struct ClassOf<T: DurableObject> {
    handlers: Rc<Handlers<T>>,
}

impl<T: DurableObject> ClassOf<T> {
    pub(crate) fn new() -> ClassOf<T> {
        let mut handlers = Handlers::new();
        T::handlers(&mut handlers);
        ClassOf { handlers: Rc::new(handlers) }
    }
}

impl<T: DurableObject> Class for ClassOf<T> {
    fn construct(&self, state: State, env: Env) -> LocalFuture<'static, Result<Rc<dyn LiveObject>, Error>> {
        let handlers = self.handlers.clone();
        Box::pin(async move {
            let object = T::new(state.clone(), env).await?;
            Ok(Rc::new(Live { object: Rc::new(object), state, handlers }) as Rc<dyn LiveObject>)
        })
    }

    fn has_alarm_handler(&self) -> bool {
        T::HAS_ALARM
    }

    fn object_type(&self) -> (TypeId, &'static str) {
        (TypeId::of::<T>(), std::any::type_name::<T>())
    }
}
