//! WebSockets through a host (spec §5.2): a client on the host's node gets the end a stub's `fetch` answered
//! with, accepts it, and talks to the object's hibernatable socket, before and after the object hibernates.

use std::time::Duration;

use dosim_runtime::prelude::*;
use dosim_scenarios::sim_host::{host_builder, on_node};
use dosim_sim::{ensure, sim_test, DiskConfig, Sim};

use crate::{sqlite_class, HOST};

/// Accepts every upgrade request as a hibernatable socket and echoes every message to its sender.
struct Echo {
    state: State,
}

impl DurableObject for Echo {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        Ok(Echo { state })
    }

    async fn fetch(&self, _request: Request) -> Result<Response, Error> {
        let pair = WebSocketPair::new()?;
        self.state.accept_web_socket(&pair.server, &[])?;
        Response::from_websocket(pair.client)
    }

    async fn websocket_message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<(), Error> {
        ws.send(message)
    }
}

fn text(s: &str) -> Option<WebSocketEvent> {
    Some(WebSocketEvent::Message(WebSocketIncomingMessage::String(s.to_string())))
}

sim_test!(fn a_client_on_the_host_accepts_the_fetched_end_and_talks_across_hibernation(seed) {
    let sim = Sim::builder().seed(seed).nodes(1).disk(DiskConfig::default()).build()?;
    sim.run(|world| async move {
        let out = on_node(&world, HOST, || async {
            let host = host_builder("worker")
                .class::<Echo>("Echo")
                .binding("ECHO", "Echo")
                .migration(sqlite_class("v1", "Echo"))
                .build()
                .unwrap();
            let stub = host.env().durable_object("ECHO").unwrap().get_by_name("e");
            let response = stub.fetch(Request::get("/ws").with_header("Upgrade", "websocket")).await.unwrap();
            let status = response.status();
            let ws = response.websocket().expect("a 101 response carries the end");
            drop(response);
            // The end the object put in its response is the caller's now: it may accept it.
            let accepted = ws.accept().map_err(|e| e.message().to_string());
            if accepted.is_err() {
                return (status, accepted, None, host.live_instances(), None, ws.is_closed());
            }
            ws.send_with_str("before").unwrap();
            let first = ws.next_event().await;
            madsim::time::sleep(Duration::from_secs(11)).await;
            let live_after_idle = host.live_instances();
            ws.send_with_str("after").unwrap();
            let second = ws.next_event().await;
            (status, accepted, first, live_after_idle, second, ws.is_closed())
        })
        .await?;
        let (status, accepted, first, live_after_idle, second, closed) = out;
        ensure!(status == 101, "the upgrade is answered with 101: {status}");
        ensure!(accepted.is_ok(), "the caller accepts the end it was handed: {accepted:?}");
        ensure!(first == text("before"), "the object echoes: {first:?}");
        ensure!(live_after_idle == 0, "idle for 11 s with only hibernatable sockets, the object hibernated");
        ensure!(second == text("after"), "a message wakes the object, which echoes: {second:?}");
        ensure!(!closed, "the connection stayed open across hibernation");
        Ok(())
    })
});
