//! The chat room: the Durable Objects docs' first use case, built on hibernatable WebSockets (spec §5.2).
//!
//! A member joins with `GET /join?name=<name>` and `Upgrade: websocket`: the room accepts the server end as a
//! hibernatable socket tagged with the name, stores the name as the socket's attachment and in its
//! `members` table, and answers `101`. A member's message `msg <id> <text>` is appended to the `history`
//! table, sent as `from <name> <id> <text>` to every other member, and acknowledged to its sender as
//! `ack <id>`; all in one turn, so the sends wait behind the output gate until the history row is durable:
//! an acknowledged message is never lost, and no member sees a message the room could still lose. `ping` is
//! the auto-response request (`pong`), answered without waking the room. `GET /history` lists the history
//! as `<name> <id>` lines; `GET /members` the members.
//!
//! Nothing the room needs lives only in its memory: the members are the sockets the runtime keeps across
//! hibernation (`get_web_sockets`), each naming itself by its attachment. [`InMemoryChatRoom`] is the
//! planted bug: it keeps its members in a field, and forgets them all when it hibernates.

use std::cell::RefCell;

use dosim_runtime::prelude::*;

/// The auto-response request and its response.
pub const PING: &str = "ping";
/// See [`PING`].
pub const PONG: &str = "pong";

const SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS history (seq INTEGER PRIMARY KEY AUTOINCREMENT, sender TEXT NOT NULL, \
                      id INTEGER NOT NULL, text TEXT NOT NULL); \
                      CREATE TABLE IF NOT EXISTS members (name TEXT PRIMARY KEY)";

/// A member's message, parsed: `msg <id> <text>`.
fn parse_message(text: &str) -> Option<(i64, &str)> {
    let rest = text.strip_prefix("msg ")?;
    let (id, body) = rest.split_once(' ').unwrap_or((rest, ""));
    Some((id.parse().ok()?, body))
}

fn query_param<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    let query = request.url().split_once('?')?.1;
    query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// What both rooms share: the tables, the history and members listings, the handshake.
struct RoomCore {
    state: State,
}

impl RoomCore {
    fn new(state: State) -> Result<RoomCore, Error> {
        state.storage().sql()?.exec(SCHEMA, &[])?;
        state.set_web_socket_auto_response(Some(&WebSocketRequestResponsePair::new(PING, PONG)?));
        Ok(RoomCore { state })
    }

    /// The member list after a move or a reset: only the members whose sockets this instance still has.
    fn reconcile_members(&self) -> Result<(), Error> {
        let live: Vec<String> = self
            .state
            .get_web_sockets(None)
            .iter()
            .filter_map(|ws| ws.deserialize_attachment::<String>().ok().flatten())
            .collect();
        let sql = self.state.storage().sql()?;
        let stored: Vec<String> = sql
            .exec("SELECT name FROM members ORDER BY name", &[])?
            .to_array()
            .into_iter()
            .filter_map(|r| match r.get("name") {
                Some(SqlValue::Text(t)) => Some(t.clone()),
                _ => None,
            })
            .collect();
        for name in stored.iter().filter(|n| !live.contains(n)) {
            sql.exec("DELETE FROM members WHERE name = ?", &[SqlValue::Text(name.clone())])?;
        }
        Ok(())
    }

    /// `/join`: the handshake. Returns the server end, accepted, and the response.
    fn join(&self, request: &Request) -> Result<(WebSocket, String, Response), Error> {
        let upgrade = request.headers().get("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let name = query_param(request, "name").filter(|n| !n.is_empty());
        let (true, Some(name)) = (upgrade, name) else {
            return Err(Error::type_error("/join wants `Upgrade: websocket` and a name"));
        };
        let pair = WebSocketPair::new()?;
        self.state.accept_web_socket(&pair.server, &[name])?;
        pair.server.serialize_attachment(&name.to_string())?;
        self.state
            .storage()
            .sql()?
            .exec("INSERT OR REPLACE INTO members (name) VALUES (?)", &[SqlValue::Text(name.to_string())])?;
        Ok((pair.server, name.to_string(), Response::from_websocket(pair.client)?))
    }

    fn listing(&self, request: &Request) -> Result<Option<Response>, Error> {
        let sql = self.state.storage().sql()?;
        let lines: Vec<String> = match request.path() {
            "/history" => sql
                .exec("SELECT sender, id FROM history ORDER BY seq", &[])?
                .to_array()
                .into_iter()
                .map(|r| match (r.get("sender"), r.get("id")) {
                    (Some(SqlValue::Text(s)), Some(SqlValue::Integer(i))) => format!("{s} {i}"),
                    other => format!("? {other:?}"),
                })
                .collect(),
            "/members" => sql
                .exec("SELECT name FROM members ORDER BY name", &[])?
                .to_array()
                .into_iter()
                .filter_map(|r| match r.get("name") {
                    Some(SqlValue::Text(t)) => Some(t.clone()),
                    _ => None,
                })
                .collect(),
            _ => return Ok(None),
        };
        Ok(Some(Response::ok(lines.join("\n"))))
    }

    /// A member's message `msg <id> <text>`: appended to the history, sent to every other open socket of
    /// `members`, and acknowledged to its sender, all in this turn (so behind the output gate). Anything
    /// else is ignored.
    fn relay(
        &self,
        ws: &WebSocket,
        message: WebSocketIncomingMessage,
        members: Vec<WebSocket>,
    ) -> Result<(), Error> {
        let WebSocketIncomingMessage::String(text) = message else { return Ok(()) };
        let Some((id, body)) = parse_message(&text) else { return Ok(()) };
        let sender = self.append(ws, id, body)?;
        let line = format!("from {sender} {id} {body}");
        for member in members.iter().filter(|m| *m != ws && !m.is_closed()) {
            member.send_with_str(line.clone())?;
        }
        ws.send_with_str(format!("ack {id}"))
    }

    /// Appends a message to the history; returns its sender's name (the socket's attachment).
    fn append(&self, ws: &WebSocket, id: i64, text: &str) -> Result<String, Error> {
        let sender: String =
            ws.deserialize_attachment()?.ok_or_else(|| Error::new("a member socket without its name"))?;
        self.state.storage().sql()?.exec(
            "INSERT INTO history (sender, id, text) VALUES (?, ?, ?)",
            &[SqlValue::Text(sender.clone()), SqlValue::Integer(id), SqlValue::Text(text.to_string())],
        )?;
        Ok(sender)
    }

    fn leave(&self, ws: &WebSocket) -> Result<(), Error> {
        if let Some(name) = ws.deserialize_attachment::<String>()? {
            self.state
                .storage()
                .sql()?
                .exec("DELETE FROM members WHERE name = ?", &[SqlValue::Text(name)])?;
        }
        Ok(())
    }
}

/// The chat room done right; see the module docs.
pub struct ChatRoom {
    core: RoomCore,
}

impl DurableObject for ChatRoom {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        let core = RoomCore::new(state)?;
        core.reconcile_members()?;
        Ok(ChatRoom { core })
    }

    async fn fetch(&self, request: Request) -> Result<Response, Error> {
        if request.path() == "/join" {
            return Ok(self.core.join(&request)?.2);
        }
        Ok(self.core.listing(&request)?.unwrap_or_else(Response::not_found))
    }

    async fn websocket_message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<(), Error> {
        self.core.relay(&ws, message, self.core.state.get_web_sockets(None))
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: u16,
        _reason: String,
        _clean: bool,
    ) -> Result<(), Error> {
        self.core.leave(&ws)
    }
}

/// The planted bug: a room that keeps its members only in memory. It works until it hibernates (or is
/// evicted); then its new instance knows no member, and broadcasts reach nobody, though every member is
/// still connected and every message is still acknowledged.
pub struct InMemoryChatRoom {
    core: RoomCore,
    members: RefCell<Vec<WebSocket>>,
}

impl DurableObject for InMemoryChatRoom {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        Ok(InMemoryChatRoom { core: RoomCore::new(state)?, members: RefCell::new(Vec::new()) })
    }

    async fn fetch(&self, request: Request) -> Result<Response, Error> {
        if request.path() == "/join" {
            let (server, _, response) = self.core.join(&request)?;
            self.members.borrow_mut().push(server);
            return Ok(response);
        }
        Ok(self.core.listing(&request)?.unwrap_or_else(Response::not_found))
    }

    async fn websocket_message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<(), Error> {
        let members = self.members.borrow().clone();
        self.core.relay(&ws, message, members)
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: u16,
        _reason: String,
        _clean: bool,
    ) -> Result<(), Error> {
        self.members.borrow_mut().retain(|m| *m != ws);
        self.core.leave(&ws)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_query_parameters_parse() {
        assert_eq!(parse_message("msg 7 hello there"), Some((7, "hello there")));
        assert_eq!(parse_message("msg 8"), Some((8, "")));
        assert_eq!(parse_message("msg x y"), None);
        assert_eq!(parse_message("ping"), None);
        let r = Request::get("/join?name=m12&x=1");
        assert_eq!(query_param(&r, "name"), Some("m12"));
        assert_eq!(query_param(&r, "nam"), None);
    }
}
