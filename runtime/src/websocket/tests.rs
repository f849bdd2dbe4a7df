//! WebSocket ends without a host: pairs, accepting, frames in order, closing, limits.

use super::*;

fn events(ws: &WebSocket) -> Vec<WebSocketEvent> {
    ws.take_events()
}

fn text(s: &str) -> WebSocketEvent {
    WebSocketEvent::Message(WebSocketIncomingMessage::String(s.to_string()))
}

#[test]
fn frames_wait_for_accept_then_arrive_in_order() {
    let pair = WebSocketPair::new().unwrap();
    pair.server.accept().unwrap();
    pair.server.send_with_str("a").unwrap();
    pair.server.send_with_bytes(vec![1, 2]).unwrap();
    assert!(events(&pair.client).is_empty(), "a fresh end buffers");
    pair.client.accept().unwrap();
    assert_eq!(
        events(&pair.client),
        vec![text("a"), WebSocketEvent::Message(WebSocketIncomingMessage::Binary(vec![1, 2]))]
    );
}

#[test]
fn a_close_is_answered_and_both_ends_see_it_clean() {
    let pair = WebSocketPair::new().unwrap();
    pair.server.accept().unwrap();
    pair.client.accept().unwrap();
    pair.client.close(Some(4000), Some("bye")).unwrap();
    let close = WebSocketEvent::Close(CloseEvent { code: 4000, reason: "bye".into(), was_clean: true });
    assert_eq!(events(&pair.server), vec![close.clone()]);
    assert_eq!(events(&pair.client), vec![close], "the runtime answered the Close frame");
    assert!(pair.server.is_closed() && pair.client.is_closed());
    let e = pair.client.send_with_str("late").unwrap_err();
    assert_eq!((e.kind(), e.message()), (ErrorKind::TypeError, messages::WS_SEND_AFTER_CLOSE));
    assert!(pair.client.close(None, None).is_ok(), "closing twice does nothing");
}

#[test]
fn a_dropped_end_is_a_1006_close_for_its_peer_and_sends_to_it_are_dropped() {
    let pair = WebSocketPair::new().unwrap();
    pair.server.accept().unwrap();
    let WebSocketPair { client, server } = pair;
    drop(client);
    assert_eq!(
        events(&server),
        vec![WebSocketEvent::Close(CloseEvent {
            code: CLOSE_ABNORMAL,
            reason: messages::WS_DISCONNECTED.into(),
            was_clean: false
        })]
    );
    assert!(server.send_with_str("nobody").is_ok(), "a send to a gone peer is dropped without an error");
}

#[test]
fn sending_before_accepting_and_bad_close_arguments_are_the_spec_errors() {
    let pair = WebSocketPair::new().unwrap();
    let e = pair.server.send_with_str("x").unwrap_err();
    assert_eq!((e.kind(), e.message()), (ErrorKind::TypeError, messages::WS_NOT_ACCEPTED));
    pair.server.accept().unwrap();
    let e = pair.server.close(Some(1006), None).unwrap_err();
    assert_eq!(
        (e.kind(), e.message()),
        (ErrorKind::InvalidAccessError, "Invalid WebSocket close code: 1006.")
    );
    let e = pair.server.close(Some(1000), Some(&"r".repeat(124))).unwrap_err();
    assert_eq!((e.kind(), e.message()), (ErrorKind::SyntaxError, messages::WS_CLOSE_REASON_TOO_LONG));
    assert!(pair.server.close(Some(1000), Some(&"r".repeat(123))).is_ok());
}

#[test]
fn a_message_over_32_mib_is_an_error_event_and_a_1009_close_for_the_sender() {
    let pair = WebSocketPair::new().unwrap();
    pair.server.accept().unwrap();
    pair.client.accept().unwrap();
    let size = MESSAGE_SIZE_MAX + 1;
    pair.client.send_with_bytes(vec![0u8; size]).unwrap();
    let got = events(&pair.server);
    assert_eq!(
        got,
        vec![WebSocketEvent::Error(Error::new(messages::ws_message_too_large(size, MESSAGE_SIZE_MAX)))]
    );
    assert_eq!(
        got[0].clone(),
        WebSocketEvent::Error(Error::new(
            "WebSocket protocol error; protocolError.statusCode = 1009; protocolError.description = Message is too large: 33554433 > 33554432"
        ))
    );
    let client_saw = events(&pair.client);
    assert!(
        matches!(
            &client_saw[..],
            [WebSocketEvent::Close(CloseEvent { code: CLOSE_TOO_BIG, was_clean: true, .. })]
        ),
        "{client_saw:?}"
    );
    // A message of exactly the limit is delivered.
    let pair = WebSocketPair::new().unwrap();
    pair.server.accept().unwrap();
    pair.client.accept().unwrap();
    pair.client.send_with_bytes(vec![0u8; MESSAGE_SIZE_MAX]).unwrap();
    assert!(matches!(&events(&pair.server)[..], [WebSocketEvent::Message(m)] if m.len() == MESSAGE_SIZE_MAX));
}

#[test]
fn attachments_round_trip_within_16_kib_and_the_limit_is_the_spec_error() {
    let pair = WebSocketPair::new().unwrap();
    assert_eq!(pair.server.deserialize_attachment::<String>().unwrap(), None);
    pair.server.serialize_attachment(&"alice".to_string()).unwrap();
    assert_eq!(pair.server.deserialize_attachment::<String>().unwrap().as_deref(), Some("alice"));
    // A CBOR byte string of n bytes takes n + 3 (n < 65,536) bytes.
    let just_fits = serde_bytes::ByteBuf::from(vec![7u8; ATTACHMENT_SIZE_MAX - 3]);
    pair.server.serialize_attachment(&just_fits).unwrap();
    let too_big = serde_bytes::ByteBuf::from(vec![7u8; ATTACHMENT_SIZE_MAX - 2]);
    let e = pair.server.serialize_attachment(&too_big).unwrap_err();
    assert_eq!(
        e.message(),
        "A WebSocket 'attachment' cannot be larger than 16384 bytes.'attachment' was 16385 bytes."
    );
    assert_eq!(
        pair.server.deserialize_attachment::<serde_bytes::ByteBuf>().unwrap().map(|b| b.len()),
        Some(ATTACHMENT_SIZE_MAX - 3),
        "a refused attachment leaves the last one"
    );
}

#[test]
fn accept_rules_follow_workerd() {
    // An end in a response can no longer be accepted, and neither can its pair be made hibernatable.
    let pair = WebSocketPair::new().unwrap();
    let response = crate::http::Response::from_websocket(pair.client.clone()).unwrap();
    assert_eq!(response.status(), 101);
    let e = pair.client.accept().unwrap_err();
    assert_eq!((e.kind(), e.message()), (ErrorKind::TypeError, messages::WS_ACCEPT_USED_IN_RESPONSE));
    assert_eq!(
        pair.server.hibernation_refused().map(|e| e.message().to_string()).as_deref(),
        Some(messages::WS_PAIR_USED)
    );
    // Once the response reaches the caller (a stub's fetch on this host), the caller accepts the end.
    pair.client.hand_over();
    pair.client.accept().unwrap();
    // An accepted end cannot be made hibernatable, nor can its pair; accepting twice is no error.
    let pair = WebSocketPair::new().unwrap();
    pair.server.accept().unwrap();
    pair.server.accept().unwrap();
    let refused = |ws: &WebSocket| ws.hibernation_refused().map(|e| e.message().to_string());
    assert_eq!(refused(&pair.server).as_deref(), Some(messages::WS_ALREADY_ACCEPTED));
    assert_eq!(refused(&pair.client).as_deref(), Some(messages::WS_PAIR_USED));
    assert_eq!(refused(&WebSocketPair::new().unwrap().server), None, "a fresh pair's end may hibernate");
}

#[test]
fn a_response_carries_its_end_until_its_last_clone_drops() {
    let pair = WebSocketPair::new().unwrap();
    pair.server.accept().unwrap();
    let WebSocketPair { client, server } = pair;
    let response = crate::http::Response::from_websocket(client).unwrap();
    let copy = response.clone();
    drop(response);
    assert!(server.take_events().is_empty(), "a clone still carries the end");
    let end = copy.websocket().expect("the end");
    drop(copy);
    assert!(server.take_events().is_empty(), "the caller holds the end");
    drop(end);
    assert!(matches!(&server.take_events()[..], [WebSocketEvent::Close(c)] if c.code == CLOSE_ABNORMAL));
}
