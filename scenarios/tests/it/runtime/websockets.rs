//! WebSockets on one host under simulation (spec §5.1, §5.2): hibernation keeps hibernatable sockets open
//! while the instance is gone (the next message re-runs the constructor, with attachments and tags intact);
//! the auto-response answers without constructing the object; a send after a write reaches the client only
//! once the write is durable (negative control: the durability wait removed loses it); each bad input gets
//! the spec's error and leaves the object serving; a handler past the event timeout resets the object and
//! drops its sockets; a socket accepted with `accept()` keeps the object from hibernating, until the 70–140 s
//! eviction drops it; a clean close and a dropped end reach `websocket_close` as the spec says.
//!
//! The clients run on the host's node, inside one task each (WebSocket ends are not `Send`).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use dosim_runtime::embed::{Clock, Host, HostBuilder};
use dosim_runtime::error::messages;
use dosim_runtime::prelude::*;
use dosim_runtime::websockets::{CLOSE_ABNORMAL, CLOSE_TOO_BIG, MESSAGE_SIZE_MAX};
use dosim_scenarios::sim_host::{host_builder, host_node, on_node, SimClock, SimEntropy};
use dosim_sim::disk;
use dosim_sim::{ensure, sim_test, DiskConfig, Failure, Sim, World};

use super::output_gate::{slow_sync_disk, NoDurabilityWait};
use crate::{sqlite_class, HOST};

/// The test object: a room of sockets. `fetch /ws` accepts a hibernatable socket (tags from `x-tags`, its
/// attachment the name in `x-name`); `fetch /plain` accepts one with `accept()` and keeps it in memory. Its
/// handler answers text commands `cmd:arg`. The constructor counts its runs in storage.
pub(crate) struct Room {
    state: State,
    /// Messages this instance handled (memory: gone when it hibernates).
    handled: Cell<u64>,
    /// Sockets accepted with `accept()` (non-hibernatable).
    plain: RefCell<Vec<WebSocket>>,
}

/// The tag of sockets whose close the object does not record (no write after the test's last look).
const QUIET: &str = "quiet";

/// A storage list of `T` under `key`, with `item` appended.
async fn append<T: serde::Serialize + serde::de::DeserializeOwned>(
    state: &State,
    key: &str,
    item: T,
) -> Result<(), Error> {
    let mut list: Vec<T> = state.storage().get(key).await?.unwrap_or_default();
    list.push(item);
    state.storage().put(key, &list).await
}

impl DurableObject for Room {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        let n: u64 = state.storage().get("constructions").await?.unwrap_or(0);
        state.storage().put("constructions", &(n + 1)).await?;
        Ok(Room { state, handled: Cell::new(0), plain: RefCell::new(Vec::new()) })
    }

    async fn fetch(&self, request: Request) -> Result<Response, Error> {
        match request.path() {
            "/ws" => {
                let tags: Vec<String> = request
                    .headers()
                    .get("x-tags")
                    .map(|t| t.split(',').filter(|t| !t.is_empty()).map(String::from).collect())
                    .unwrap_or_default();
                let name = request.headers().get("x-name").unwrap_or("anonymous").to_string();
                let pair = WebSocketPair::new()?;
                let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
                self.state.accept_web_socket(&pair.server, &tags)?;
                pair.server.serialize_attachment(&name)?;
                // A message before the `101`: the caller finds it first on the socket.
                if let Some(greeting) = request.headers().get("x-greet") {
                    pair.server.send_with_str(greeting)?;
                }
                Response::from_websocket(pair.client)
            }
            "/plain" => {
                let pair = WebSocketPair::new()?;
                pair.server.accept()?;
                self.plain.borrow_mut().push(pair.server);
                Response::from_websocket(pair.client)
            }
            _ => Ok(Response::ok("room")),
        }
    }

    async fn websocket_message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<(), Error> {
        self.handled.set(self.handled.get() + 1);
        let text = match message {
            WebSocketIncomingMessage::String(s) => s,
            WebSocketIncomingMessage::Binary(b) => format!("binary:{}", b.len()),
        };
        let (command, arg) = text.split_once(':').unwrap_or((text.as_str(), ""));
        match command {
            // What this instance knows: its memory, the constructions, the socket's attachment and tags.
            "echo" => {
                let constructions: u64 = self.state.storage().get("constructions").await?.unwrap_or(0);
                let name: Option<String> = ws.deserialize_attachment()?;
                let tags = self.state.get_tags(&ws)?.join(",");
                ws.send_with_str(format!(
                    "{arg} handled={} constructions={constructions} name={} tags={tags}",
                    self.handled.get(),
                    name.unwrap_or_default()
                ))?;
            }
            "say" => ws.send_with_str(arg)?,
            "count" => {
                let tag = (!arg.is_empty()).then_some(arg);
                ws.send_with_str(self.state.get_web_sockets(tag).len().to_string())?;
            }
            // A write, then a message saying it is stored: the message waits for the write's durability.
            "put" => {
                self.state.storage().put(arg, &true).await?;
                ws.send_with_str(format!("stored {arg}"))?;
            }
            "sleep" => {
                madsim::time::sleep(Duration::from_millis(arg.parse().unwrap_or(0))).await;
                ws.send_with_str("slept")?;
            }
            "stamp" => {
                let at = self.state.get_web_socket_auto_response_timestamp(&ws);
                ws.send_with_str(at.map_or("none".to_string(), |t| t.to_string()))?;
            }
            "close-then-send" => {
                ws.close(Some(4001), Some("closing"))?;
                let e = ws.send_with_str("late").expect_err("a send after close() fails");
                let kind = format!("{:?}", e.kind());
                self.state.storage().put("send_after_close", &(kind, e.message().to_string())).await?;
            }
            other => ws.send_with_str(format!("unknown {other}"))?,
        }
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: u16,
        reason: String,
        was_clean: bool,
    ) -> Result<(), Error> {
        if self.state.get_tags(&ws)?.iter().any(|t| t == QUIET) {
            return Ok(());
        }
        append(&self.state, "closes", (code, reason, was_clean)).await?;
        append(&self.state, "closed_at", self.state.now_ms()).await
    }

    async fn websocket_error(&self, _ws: WebSocket, error: Error) -> Result<(), Error> {
        append(&self.state, "errors", error.message().to_string()).await
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc("constructions", async |r: &Room, (): ()| {
            Ok(r.state.storage().get::<u64>("constructions").await?.unwrap_or(0))
        });
        h.rpc("closes", async |r: &Room, (): ()| {
            Ok(r.state.storage().get::<Vec<(u16, String, bool)>>("closes").await?.unwrap_or_default())
        });
        h.rpc("closed_at", async |r: &Room, (): ()| {
            Ok(r.state.storage().get::<Vec<i64>>("closed_at").await?.unwrap_or_default())
        });
        h.rpc("errors", async |r: &Room, (): ()| {
            Ok(r.state.storage().get::<Vec<String>>("errors").await?.unwrap_or_default())
        });
        h.rpc("send_after_close", async |r: &Room, (): ()| {
            r.state.storage().get::<(String, String)>("send_after_close").await
        });
        h.rpc("has", async |r: &Room, key: String| Ok(r.state.storage().get::<bool>(&key).await?.is_some()));
        h.rpc("auto", async |r: &Room, (request, response): (String, String)| {
            let pair = WebSocketRequestResponsePair::new(&request, &response)?;
            r.state.set_web_socket_auto_response(Some(&pair));
            Ok(())
        });
        h.rpc("event_timeout", async |r: &Room, ms: u64| {
            r.state.set_hibernatable_web_socket_event_timeout(Some(ms))
        });
        h.rpc("nap", async |_r: &Room, ms: u64| {
            madsim::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        });
    }
}

/// The script with [`Room`] bound to `ROOM` on the SQLite backend.
pub(crate) fn room_script() -> HostBuilder {
    host_builder("worker").class::<Room>("Room").binding("ROOM", "Room").migration(sqlite_class("v1", "Room"))
}

fn sim(seed: dosim_sim::Seed) -> Result<Sim, dosim_sim::RunFailure> {
    Ok(Sim::builder().seed(seed).nodes(1).disk(DiskConfig::default()).build()?)
}

/// Runs `body` with a fresh host on the host node.
async fn with_host<F, Fut>(world: &World, body: F) -> Result<(), Failure>
where
    F: FnOnce(Rc<Host>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), Failure>> + 'static,
{
    on_node(world, HOST, move || async move {
        let host = Rc::new(room_script().build().map_err(|e| Failure::new(e.to_string()))?);
        body(host).await
    })
    .await?
}

/// Fails with the error's text.
fn fail(e: Error) -> Failure {
    Failure::new(format!("{}: {}", e.message(), e))
}

/// Opens a socket to room `room` through a stub: `fetch /ws` with `Upgrade: websocket`; accepts the end the
/// `101` carries.
pub(crate) async fn connect(env: &Env, room: &str, tags: &str, name: &str) -> Result<WebSocket, Error> {
    connect_greeted(env, room, tags, name, None).await
}

/// [`connect`], the object sending `greeting` on the socket before it answers the upgrade.
pub(crate) async fn connect_greeted(
    env: &Env,
    room: &str,
    tags: &str,
    name: &str,
    greeting: Option<&str>,
) -> Result<WebSocket, Error> {
    let mut request = Request::get("/ws")
        .with_header("Upgrade", "websocket")
        .with_header("x-tags", tags)
        .with_header("x-name", name);
    if let Some(g) = greeting {
        request = request.with_header("x-greet", g);
    }
    let response = env.durable_object("ROOM")?.get_by_name(room).fetch(request).await?;
    if response.status() != 101 {
        return Err(Error::new(format!("the upgrade was answered {}", response.status())));
    }
    let ws = response.websocket().ok_or_else(|| Error::new("a 101 without a WebSocket"))?;
    ws.accept()?;
    Ok(ws)
}

/// The next event on `ws`, if one comes within `within`.
pub(crate) async fn next_within(ws: &WebSocket, within: Duration) -> Option<WebSocketEvent> {
    madsim_tokio::time::timeout(within, ws.next_event()).await.ok().flatten()
}

/// Sends `text` and returns the text message that answers it.
async fn ask(ws: &WebSocket, text: &str) -> Result<String, Failure> {
    ws.send_with_str(text).map_err(fail)?;
    match next_within(ws, Duration::from_secs(5)).await {
        Some(WebSocketEvent::Message(WebSocketIncomingMessage::String(s))) => Ok(s),
        other => {
            let short: String = text.chars().take(60).collect();
            Err(Failure::new(format!("{short:?} was answered with {other:?}")))
        }
    }
}

/// Whether `ws`'s next event is a close with `code` (within `within`).
async fn expect_close(ws: &WebSocket, within: Duration) -> Result<CloseEvent, Failure> {
    match next_within(ws, within).await {
        Some(WebSocketEvent::Close(c)) => Ok(c),
        other => Err(Failure::new(format!("expected a close, got {other:?}"))),
    }
}

pub(crate) async fn rpc<A: serde::Serialize, R: serde::de::DeserializeOwned>(
    env: &Env,
    room: &str,
    method: &str,
    args: &A,
) -> Result<R, Error> {
    env.durable_object("ROOM")?.get_by_name(room).call::<A, R>(method, args).await
}

/// Longer than the 10 s an idle object with only hibernatable sockets lives.
const IDLE: Duration = Duration::from_secs(11);
/// When the non-hibernatable test's client sends its one frame.
const FRAME_AT: Duration = Duration::from_secs(60);

// Two hibernatable sockets, then 11 s of silence: the instance is gone (hibernated), the sockets still open.
// The next message re-runs the constructor (the in-memory counter starts again at 1, the stored count of
// constructions is 2) and is delivered, with the socket's attachment and tags as they were; `get_web_sockets`
// on the new instance finds both sockets by tag.
sim_test!(fn an_idle_object_hibernates_and_the_next_message_wakes_it_with_its_sockets_intact(seed) {
    sim(seed)?.run(|world| async move {
        with_host(&world, |host| async move {
            let env = host.env();
            let alice = connect_greeted(&env, "r", "room,alice", "Alice", Some("welcome")).await.map_err(fail)?;
            let greeting = next_within(&alice, Duration::from_secs(1)).await;
            ensure!(
                greeting == Some(WebSocketEvent::Message(WebSocketIncomingMessage::String("welcome".into()))),
                "the message sent before the 101 is the first on the socket: {greeting:?}"
            );
            let bob = connect(&env, "r", "room,bob", "Bob").await.map_err(fail)?;
            let first = ask(&alice, "echo:hi").await?;
            ensure!(first == "hi handled=1 constructions=1 name=Alice tags=room,alice", "{first}");
            let second = ask(&bob, "echo:yo").await?;
            ensure!(second == "yo handled=2 constructions=1 name=Bob tags=room,bob", "{second}");
            ensure!(host.live_instances() == 1, "live while in use");
            madsim::time::sleep(IDLE).await;
            ensure!(host.live_instances() == 0, "hibernated after 10 s idle: {} live", host.live_instances());
            ensure!(!alice.is_closed() && !bob.is_closed(), "hibernation keeps the sockets open");
            ensure!(alice.take_events().is_empty() && bob.take_events().is_empty(), "the clients saw nothing");
            let woken = ask(&alice, "echo:again").await?;
            ensure!(
                woken == "again handled=1 constructions=2 name=Alice tags=room,alice",
                "a new instance (memory restarted, constructor re-ran) with the attachment and tags: {woken}"
            );
            ensure!(host.live_instances() == 1, "the message woke the object");
            ensure!(ask(&bob, "count:room").await? == "2", "both sockets found by tag after hibernation");
            ensure!(ask(&bob, "count:bob").await? == "1", "one socket has tag bob");
            ensure!(ask(&bob, "count:nobody").await? == "0", "no socket has tag nobody");
            let bob_again = ask(&bob, "echo:b").await?;
            ensure!(bob_again == "b handled=5 constructions=2 name=Bob tags=room,bob", "{bob_again}");
            Ok(())
        })
        .await
    })
});

// The auto-response answers a hibernated object's socket without constructing it: the reply arrives, no
// instance is live, the stored count of constructions has not moved; the timestamp the next instance reads is
// the simulated clock's ms at the request.
sim_test!(fn the_auto_response_answers_without_waking_the_object(seed) {
    sim(seed)?.run(|world| async move {
        with_host(&world, |host| async move {
            let env = host.env();
            rpc::<_, ()>(&env, "r", "auto", &("ping".to_string(), "pong".to_string())).await.map_err(fail)?;
            let ws = connect(&env, "r", "a", "A").await.map_err(fail)?;
            ensure!(ask(&ws, "stamp").await? == "none", "no auto-response yet");
            madsim::time::sleep(IDLE).await;
            ensure!(host.live_instances() == 0, "hibernated");
            let sent_at = SimClock.now_ms();
            ensure!(ask(&ws, "ping").await? == "pong", "auto-response");
            ensure!(ask(&ws, "ping").await? == "pong", "auto-response again");
            ensure!(host.live_instances() == 0, "the auto-response did not construct the object");
            // A message the object handles wakes it: one construction more than before hibernation.
            let stamp = ask(&ws, "stamp").await?;
            ensure!(stamp == sent_at.to_string(), "the timestamp is the simulated clock at the ping: {stamp} vs {sent_at}");
            let constructions: u64 = rpc(&env, "r", "constructions", &()).await.map_err(fail)?;
            ensure!(constructions == 2, "constructed once before, once for `stamp`: {constructions}");
            ensure!(ask(&ws, "pin").await? == "unknown pin", "only the exact request is auto-answered");
            Ok(())
        })
        .await
    })
});

// Each bad input gets the spec's exact error, and the object goes on serving (an echo on the open socket).
sim_test!(fn bad_inputs_get_the_spec_errors_and_the_object_keeps_serving(seed) {
    sim(seed)?.run(|world| async move {
        with_host(&world, |host| async move {
            let env = host.env();
            let id = env.durable_object("ROOM").map_err(fail)?.id_from_name("r");
            let ws = connect(&env, "r", "t", "T").await.map_err(fail)?;
            let serving = async |what: &str| -> Result<(), Failure> {
                let got = ask(&ws, "echo:ok").await?;
                ensure!(got.starts_with("ok handled="), "serving after {what}: {got}");
                Ok(())
            };
            let errors = host
                .run_in_object::<Room, _>("ROOM", &id, async |_room, state| {
                    let mut errors: Vec<(&str, Option<Error>)> = Vec::new();
                    let pair = WebSocketPair::new().unwrap();
                    let eleven: Vec<String> = (0..11).map(|i| format!("t{i}")).collect();
                    let eleven: Vec<&str> = eleven.iter().map(String::as_str).collect();
                    errors.push(("11 tags", state.accept_web_socket(&pair.server, &eleven).err()));
                    // Ten distinct tags with a duplicate: the duplicate counts once.
                    let mut ten = eleven[..10].to_vec();
                    ten.push("t0");
                    let pair10 = WebSocketPair::new().unwrap();
                    errors.push(("ten distinct tags", state.accept_web_socket(&pair10.server, &ten).err()));
                    let long = "x".repeat(257);
                    errors.push(("a 257-char tag", state.accept_web_socket(&pair.server, &[&long]).err()));
                    let longest = "é".repeat(256);
                    let pair256 = WebSocketPair::new().unwrap();
                    errors.push(("a 256-char tag", state.accept_web_socket(&pair256.server, &[&longest]).err()));
                    // A string of 16,382 characters serializes (CBOR) to 16,385 bytes: one over.
                    let ok = pair10.server.serialize_attachment(&"a".repeat(16_381)).err();
                    errors.push(("an attachment of 16,384 bytes", ok));
                    errors.push(("an attachment of 16,385 bytes", pair10.server.serialize_attachment(&"a".repeat(16_382)).err()));
                    let big = "r".repeat(2_049);
                    errors.push(("a request of 2,049 bytes", WebSocketRequestResponsePair::new(&big, "x").err()));
                    errors.push(("a response of 2,049 bytes", WebSocketRequestResponsePair::new("x", &big).err()));
                    errors.push(("a pair of 2,048 bytes", WebSocketRequestResponsePair::new(&big[1..], &big[1..]).err()));
                    errors.push(("a timeout of 604,800,001 ms", state.set_hibernatable_web_socket_event_timeout(Some(604_800_001)).err()));
                    errors.push(("a timeout of 604,800,000 ms", state.set_hibernatable_web_socket_event_timeout(Some(604_800_000)).err()));
                    let timeout = state.get_hibernatable_web_socket_event_timeout();
                    let _ = state.set_hibernatable_web_socket_event_timeout(None);
                    (errors.into_iter().map(|(w, e)| (w.to_string(), e)).collect::<Vec<_>>(), timeout, pair10, pair256)
                })
                .await
                .map_err(fail)?;
            let (errors, timeout, _pair10, _pair256) = errors;
            let expect = |what: &str| -> Option<(ErrorKind, String)> {
                match what {
                    "11 tags" => Some((ErrorKind::Error, messages::WS_TOO_MANY_TAGS.to_string())),
                    "a 257-char tag" => Some((ErrorKind::Error, messages::ws_tag_too_long(&"x".repeat(257)))),
                    "an attachment of 16,385 bytes" => Some((ErrorKind::Error, messages::ws_attachment_too_large(16_385))),
                    "a request of 2,049 bytes" => Some((ErrorKind::RangeError, messages::ws_auto_request_too_large(2_049))),
                    "a response of 2,049 bytes" => Some((ErrorKind::RangeError, messages::ws_auto_response_too_large(2_049))),
                    "a timeout of 604,800,001 ms" => Some((ErrorKind::Error, messages::WS_EVENT_TIMEOUT_TOO_LONG.to_string())),
                    _ => None,
                }
            };
            for (what, got) in &errors {
                let got = got.as_ref().map(|e| (e.kind(), e.message().to_string()));
                ensure!(got == expect(what), "{what}: {got:?}, expected {:?}", expect(what));
            }
            ensure!(
                errors[5].1.as_ref().is_some_and(|e| e.message()
                    == "A WebSocket 'attachment' cannot be larger than 16384 bytes.'attachment' was 16385 bytes."),
                "the spec's text, verbatim: {:?}", errors[5].1
            );
            ensure!(timeout == Some(604_800_000), "the 7-day timeout is allowed: {timeout:?}");
            serving("the refused inputs").await?;

            // A message over 32 MiB: the object's error handler gets the spec's message, the client a 1009.
            let big = WebSocketIncomingMessage::Binary(vec![0; MESSAGE_SIZE_MAX + 1]);
            let huge = connect(&env, "r", "", "H").await.map_err(fail)?;
            huge.send(big).map_err(fail)?;
            let close = expect_close(&huge, Duration::from_secs(5)).await?;
            ensure!(close.code == CLOSE_TOO_BIG, "the sender sees 1009: {close:?}");
            // The error event is the object's next event on that socket; an RPC from here may overtake it.
            madsim::time::sleep(Duration::from_millis(100)).await;
            let logged: Vec<String> = rpc(&env, "r", "errors", &()).await.map_err(fail)?;
            ensure!(
                logged == vec![messages::ws_message_too_large(MESSAGE_SIZE_MAX + 1, MESSAGE_SIZE_MAX)],
                "websocket_error got the protocol error: {logged:?}"
            );
            // Exactly 32 MiB is a message.
            let limit = connect(&env, "r", "", "L").await.map_err(fail)?;
            let at_limit = ask(&limit, &format!("count:{}", "m".repeat(MESSAGE_SIZE_MAX - 6))).await?;
            ensure!(at_limit == "0", "a message of exactly 32 MiB is delivered: {at_limit}");
            serving("a message over 32 MiB").await?;

            // A send after close(): TypeError.
            let closing = connect(&env, "r", "", "C").await.map_err(fail)?;
            closing.send_with_str("close-then-send").map_err(fail)?;
            let close = expect_close(&closing, Duration::from_secs(5)).await?;
            ensure!(close.code == 4001 && close.reason == "closing" && close.was_clean, "{close:?}");
            let after: Option<(String, String)> = rpc(&env, "r", "send_after_close", &()).await.map_err(fail)?;
            ensure!(
                after == Some(("TypeError".to_string(), messages::WS_SEND_AFTER_CLOSE.to_string())),
                "send after close: {after:?}"
            );
            serving("a send after close").await?;
            Ok(())
        })
        .await
    })
});

// The 32,768 sockets an object may accept are accepted; the 32,769th is refused with the spec's error, the
// object goes on serving, and once one socket closes there is room for another.
sim_test!(fn the_32769th_socket_is_refused(seed) {
    sim(seed)?.run(|world| async move {
        with_host(&world, |host| async move {
            let env = host.env();
            let id = env.durable_object("ROOM").map_err(fail)?.id_from_name("r");
            let (clients, refused, count) = host
                .run_in_object::<Room, _>("ROOM", &id, async |_room, state| {
                    let mut clients = Vec::with_capacity(32_768);
                    for _ in 0..32_768 {
                        let pair = WebSocketPair::new().unwrap();
                        state.accept_web_socket(&pair.server, &[QUIET]).unwrap();
                        clients.push(pair.client);
                    }
                    let pair = WebSocketPair::new().unwrap();
                    let refused = state.accept_web_socket(&pair.server, &[QUIET]).err();
                    (clients, refused, state.get_web_sockets(Some(QUIET)).len())
                })
                .await
                .map_err(fail)?;
            ensure!(count == 32_768, "{count} accepted");
            let refused = refused.map(|e| e.message().to_string());
            ensure!(refused.as_deref() == Some(messages::WS_TOO_MANY_SOCKETS), "{refused:?}");
            let constructions: u64 = rpc(&env, "r", "constructions", &()).await.map_err(fail)?;
            ensure!(constructions == 1, "still serving, the same instance: {constructions}");
            // One client drops its end: its socket closes, and there is room for one more.
            let mut clients = clients;
            drop(clients.pop());
            madsim::time::sleep(Duration::from_millis(10)).await;
            let again = host
                .run_in_object::<Room, _>("ROOM", &id, async |_room, state| {
                    let pair = WebSocketPair::new().unwrap();
                    let accepted = state.accept_web_socket(&pair.server, &[QUIET]).map_err(|e| e.message().to_string());
                    (accepted, pair.client)
                })
                .await
                .map_err(fail)?;
            ensure!(again.0.is_ok(), "a socket closed: the next one is accepted: {:?}", again.0);
            Ok(())
        })
        .await
    })
});

// A handler that sleeps past the hibernatable event timeout (set before the object hibernated: the setting
// outlives the instance) resets the object with the spec's error (retryable, a reset: an RPC in flight
// gets it), and its sockets drop: the client sees 1006.
sim_test!(fn a_handler_past_the_event_timeout_resets_the_object_and_drops_its_sockets(seed) {
    sim(seed)?.run(|world| async move {
        with_host(&world, |host| async move {
            let env = host.env();
            rpc::<_, ()>(&env, "r", "event_timeout", &1_000u64).await.map_err(fail)?;
            let ws = connect(&env, "r", "", "S").await.map_err(fail)?;
            ensure!(ask(&ws, "sleep:500").await? == "slept", "within the timeout");
            // The timeout is the socket registry's: it outlives the instance that set it.
            madsim::time::sleep(IDLE).await;
            ensure!(host.live_instances() == 0, "hibernated");
            ws.send_with_str("sleep:5000").map_err(fail)?;
            let napping = rpc::<_, ()>(&env, "r", "nap", &3_000u64).await;
            let e = napping.expect_err("the reset cuts the nap off");
            ensure!(
                e.message() == messages::WS_EVENT_TIMEOUT && e.retryable() && e.durable_object_reset(),
                "the reset's error: {e:?}"
            );
            let close = expect_close(&ws, Duration::from_secs(5)).await?;
            ensure!(
                close.code == CLOSE_ABNORMAL && close.reason == messages::WS_DISCONNECTED && !close.was_clean,
                "the socket drops: {close:?}"
            );
            ensure!(ws.take_events().is_empty(), "no `slept`: the handler was cut off");
            Ok(())
        })
        .await
    })
});

// A socket the object accepted with `accept()` keeps it from hibernating after 10 s; a frame on it is
// activity; after 70–140 s without events or frames the object is evicted and the socket drops (the client
// sees 1006).
sim_test!(fn a_non_hibernatable_socket_holds_the_object_until_the_long_idle_eviction(seed) {
    sim(seed)?.run(|world| async move {
        with_host(&world, |host| async move {
            let env = host.env();
            let response = env
                .durable_object("ROOM")
                .map_err(fail)?
                .get_by_name("r")
                .fetch(Request::get("/plain").with_header("Upgrade", "websocket"))
                .await
                .map_err(fail)?;
            let ws = response.websocket().ok_or_else(|| Failure::new("no end"))?;
            ws.accept().map_err(fail)?;
            drop(response);
            let start = madsim::time::Instant::now();
            madsim::time::sleep(IDLE).await;
            ensure!(host.live_instances() == 1, "not hibernated: a non-hibernatable socket is open");
            // A frame is activity: sent at 60 s (before the earliest eviction), it moves the eviction.
            madsim::time::sleep_until(start + FRAME_AT).await;
            ensure!(host.live_instances() == 1, "not evicted within 60 s");
            ws.send_with_str("still here").map_err(fail)?;
            let evicted = loop {
                madsim::time::sleep(Duration::from_millis(250)).await;
                if host.live_instances() == 0 {
                    break start.elapsed() - FRAME_AT;
                }
                ensure!(start.elapsed() < FRAME_AT + Duration::from_secs(150), "never evicted");
            };
            dosim_sim::note("evicted after the last frame (ms)", evicted.as_millis());
            ensure!(
                evicted >= Duration::from_secs(70) && evicted <= Duration::from_millis(140_250),
                "evicted {evicted:?} after the last frame, not within 70–140 s"
            );
            let close = expect_close(&ws, Duration::from_secs(1)).await?;
            ensure!(close.code == CLOSE_ABNORMAL && !close.was_clean, "the client sees 1006: {close:?}");
            Ok(())
        })
        .await
    })
});

// A client that closes cleanly: the handler gets its code and reason, was_clean true, and the client the
// runtime's answering Close. A client that drops its end: 1006 with the spec's reason, was_clean false.
sim_test!(fn closes_reach_the_handler_clean_or_dropped(seed) {
    sim(seed)?.run(|world| async move {
        with_host(&world, |host| async move {
            let env = host.env();
            let clean = connect(&env, "r", "", "C").await.map_err(fail)?;
            clean.close(Some(4000), Some("done")).map_err(fail)?;
            let answer = expect_close(&clean, Duration::from_secs(5)).await?;
            ensure!(answer == CloseEvent { code: 4000, reason: "done".into(), was_clean: true }, "{answer:?}");
            let dropped = connect(&env, "r", "", "D").await.map_err(fail)?;
            ensure!(ask(&dropped, "echo:x").await?.starts_with("x "), "connected");
            drop(dropped);
            madsim::time::sleep(Duration::from_millis(100)).await;
            let closes: Vec<(u16, String, bool)> = rpc(&env, "r", "closes", &()).await.map_err(fail)?;
            ensure!(
                closes
                    == vec![
                        (4000, "done".to_string(), true),
                        (CLOSE_ABNORMAL, messages::WS_DISCONNECTED.to_string(), false)
                    ],
                "websocket_close saw: {closes:?}"
            );
            Ok(())
        })
        .await
    })
});

fn room_without_durability_wait() -> HostBuilder {
    Host::builder("worker")
        .storage(NoDurabilityWait)
        .clock(Arc::new(SimClock))
        .entropy(SimEntropy)
        .class::<Room>("Room")
        .binding("ROOM", "Room")
        .migration(sqlite_class("v1", "Room"))
}

/// Eight rounds of: connect, send `put:k<i>`, and the instant the client has `stored k<i>`, cut the host's
/// power; restart, and ask whether `k<i>` is there. Returns the writes lost and the writes the cuts caught in
/// flight on the disk.
fn power_cut_rounds(
    seed: dosim_sim::Seed,
    build: fn() -> HostBuilder,
    check: fn(u32, u64) -> Result<(), Failure>,
) -> Result<dosim_sim::RunReport, dosim_sim::RunFailure> {
    let (node, host) = host_node(HOST, "host", build);
    Sim::builder().seed(seed).node(node).disk(slow_sync_disk()).build()?.run(move |world| async move {
        let mut lost = 0;
        for i in 0..8 {
            let key = format!("k{i}");
            let k = key.clone();
            let seen = host
                .run(move |env| async move {
                    let ws = connect(&env, "r", QUIET, "P").await.map_err(|e| e.to_string())?;
                    ws.send_with_str(format!("put:{k}")).map_err(|e| e.to_string())?;
                    match next_within(&ws, Duration::from_secs(5)).await {
                        Some(WebSocketEvent::Message(WebSocketIncomingMessage::String(s))) => Ok(s),
                        other => Err(format!("{other:?}")),
                    }
                })
                .await?;
            ensure!(seen.as_deref() == Ok(format!("stored {key}").as_str()), "round {i}: {seen:?}");
            // No simulated time passes between the client's receipt and the cut.
            world.power_cut(HOST).map_err(|e| Failure::new(e.to_string()))?;
            world.restart(HOST).map_err(|e| Failure::new(e.to_string()))?;
            let k = key.clone();
            let stored = host
                .run(move |env| async move {
                    rpc::<_, bool>(&env, "r", "has", &k).await.map_err(|e| e.to_string())
                })
                .await?;
            ensure!(stored.is_ok(), "round {i}: the read after restart: {stored:?}");
            if stored == Ok(false) {
                lost += 1;
            }
        }
        let in_flight = disk::lost_in_flight(HOST);
        dosim_sim::note("messages whose write was lost", lost);
        dosim_sim::note("writes in flight at the cuts", in_flight);
        check(lost, in_flight)
    })
}

// A `ws.send` after a write reaches the client only once the write is durable: cut the power the instant the
// client has the message, and the write is there after the restart.
sim_test!(fn a_message_sent_after_a_write_leaves_only_once_the_write_is_durable(seed) {
    power_cut_rounds(seed, room_script, |lost, in_flight| {
        ensure!(in_flight == 0, "the cuts caught {in_flight} writes in flight though each message waited");
        ensure!(lost == 0, "{lost} writes were lost after the client saw their message");
        Ok(())
    })
});

// The negative control: with the output gate's durability wait removed, the message leaves while the commit
// is still on the disk, and the cut loses writes the client was told were stored.
sim_test!(fn without_the_durability_wait_a_message_can_announce_a_lost_write(seed) {
    power_cut_rounds(seed, room_without_durability_wait, |lost, in_flight| {
        ensure!(in_flight > 0, "no cut landed while a commit was in flight: the control tests nothing");
        ensure!(lost > 0, "without the durability wait a write announced to the client is lost");
        Ok(())
    })
});
