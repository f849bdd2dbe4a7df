//! The HTTP shapes an object's `fetch` handler sees: a [`Request`] in, a [`Response`] out.
//!
//! They are plain values (method, URL, headers, body bytes), shaped like workers-rs's `Request` and
//! `Response`, so that they cross the simulated network and the real HTTP front unchanged. Header names are
//! stored lowercased and ordered, so iteration is deterministic.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::websocket::{Parked, WebSocket};

/// `body` as text, or a TypeError naming whose body (`request`, `response`) is not UTF-8.
fn utf8(body: &[u8], whose: &str) -> Result<String, Error> {
    String::from_utf8(body.to_vec())
        .map_err(|_| Error::type_error(format!("The {whose} body is not valid UTF-8.")))
}

/// The method of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
    /// `OPTIONS`.
    Options,
}

impl Method {
    /// The method's name, upper case.
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        }
    }

    /// Parses a method name (case-insensitive).
    pub fn parse(name: &str) -> Result<Method, Error> {
        Ok(match name.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            _ => return Err(Error::type_error(format!("'{name}' is not a valid HTTP method."))),
        })
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Header fields: names lowercased, one value each, in name order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Headers(BTreeMap<String, String>);

impl Headers {
    /// No headers.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// The value of `name` (any case), if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// Sets `name` (any case) to `value`, replacing an earlier value.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(name.to_ascii_lowercase(), value.into());
    }

    /// Every header, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The bytes the headers take (names and values), for queue accounting.
    pub fn size(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len()).sum()
    }
}

/// An HTTP request to an object (workers-rs `Request`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    method: Method,
    url: String,
    headers: Headers,
    body: Vec<u8>,
}

impl Request {
    /// A request with no headers and no body. A bare path (`/counter`) is accepted and means
    /// `http://do/counter`, as in workers-rs's `fetch_with_str`.
    pub fn new(method: Method, url: &str) -> Request {
        let url = if url.starts_with('/') { format!("http://do{url}") } else { url.to_string() };
        Request { method, url, headers: Headers::new(), body: Vec::new() }
    }

    /// A `GET` request for `url`.
    pub fn get(url: &str) -> Request {
        Request::new(Method::Get, url)
    }

    /// A `POST` request for `url` with `body`.
    pub fn post(url: &str, body: impl Into<Vec<u8>>) -> Request {
        Request::new(Method::Post, url).with_body(body)
    }

    /// This request with `body`.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// This request with header `name` set to `value`.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Request {
        self.headers.set(name, value);
        self
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The full URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL's path (from the first `/` after the authority, up to `?` or `#`), `/` if it has none.
    pub fn path(&self) -> &str {
        let after_scheme = self.url.split_once("://").map_or(self.url.as_str(), |(_, rest)| rest);
        let path = after_scheme.find('/').map_or("/", |i| &after_scheme[i..]);
        let end = path.find(['?', '#']).unwrap_or(path.len());
        &path[..end]
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<String, Error> {
        utf8(&self.body, "request")
    }

    /// The bytes this request takes in a queue: URL, headers and body.
    pub fn size(&self) -> usize {
        self.url.len() + self.headers.size() + self.body.len()
    }
}

/// An HTTP response from an object (workers-rs `Response`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
    /// The WebSocket end a `101 Switching Protocols` response hands the caller. Never on the wire: the host
    /// that carries the response across the network binds it to a session instead.
    #[serde(skip)]
    websocket: Upgrade,
}

/// A response's WebSocket end, parked on the thread that made the response (ends are not `Send`), compared
/// by identity.
#[derive(Clone, Debug, Default)]
struct Upgrade(Option<std::sync::Arc<Parked>>);

impl Upgrade {
    fn of(ws: WebSocket) -> Upgrade {
        Upgrade(Some(Parked::park(ws)))
    }
}

impl PartialEq for Upgrade {
    fn eq(&self, other: &Upgrade) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Upgrade {}

impl Response {
    /// A 200 response with a text body.
    pub fn ok(body: impl Into<String>) -> Response {
        Response::with_status(200, body.into().into_bytes())
    }

    /// A response with `status` and `body`.
    ///
    /// # Panics
    /// If `status` is not in 200..=599 (the Fetch standard's range for constructed responses): that is a bug
    /// in the calling code, not a condition to handle.
    pub fn with_status(status: u16, body: impl Into<Vec<u8>>) -> Response {
        assert!((200..=599).contains(&status), "a response status is in 200..=599, got {status}");
        Response { status, headers: Headers::new(), body: body.into(), websocket: Upgrade(None) }
    }

    /// A `101 Switching Protocols` response handing the caller `client`, one end of a
    /// [`WebSocketPair`](crate::websocket::WebSocketPair) (workers-rs `Response::from_websocket`). The other
    /// end can no longer be accepted with `accept()` once this one is in a response.
    pub fn from_websocket(client: WebSocket) -> Result<Response, Error> {
        client.mark_used_in_response();
        Ok(Response {
            status: 101,
            headers: Headers::new(),
            body: Vec::new(),
            websocket: Upgrade::of(client),
        })
    }

    /// The WebSocket end of a `101` response (workers-rs `Response::websocket`): the caller accepts it with
    /// [`WebSocket::accept`] and reads its events. The end stays connected while the caller holds it (or a
    /// clone of the response); dropped, its peer sees the connection drop. On another thread than the one
    /// that received the response: `None`.
    pub fn websocket(&self) -> Option<WebSocket> {
        self.websocket.0.as_ref().and_then(|p| p.get())
    }

    /// The response reached its caller: its WebSocket end is the caller's now, who may accept it.
    pub(crate) fn arrived(&self) {
        if let Some(ws) = self.websocket() {
            ws.hand_over();
        }
    }

    /// Takes the WebSocket end out of this response.
    pub(crate) fn take_websocket(&mut self) -> Option<WebSocket> {
        std::mem::take(&mut self.websocket).0.and_then(|p| p.get())
    }

    /// This response with the WebSocket end `ws`.
    pub(crate) fn with_websocket(mut self, ws: WebSocket) -> Response {
        self.websocket = Upgrade::of(ws);
        self
    }

    /// A 404 response with body `Not found`.
    pub fn not_found() -> Response {
        Response::with_status(404, "Not found")
    }

    /// This response with header `name` set to `value`.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.set(name, value);
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The body bytes.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<String, Error> {
        utf8(&self.body, "response")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_come_from_urls_and_bare_paths() {
        assert_eq!(Request::get("/a/b?x=1").path(), "/a/b");
        assert_eq!(Request::get("https://example.com").path(), "/");
        assert_eq!(Request::get("https://example.com/c#frag").path(), "/c");
        assert_eq!(Request::get("/a").url(), "http://do/a");
    }

    #[test]
    fn headers_ignore_case() {
        let r = Request::get("/").with_header("Content-Type", "text/plain");
        assert_eq!(r.headers().get("content-type"), Some("text/plain"));
        assert_eq!(r.headers().get("CONTENT-TYPE"), Some("text/plain"));
    }

    #[test]
    fn methods_parse_and_reject() {
        assert_eq!(Method::parse("post").unwrap(), Method::Post);
        let e = Method::parse("BREW").unwrap_err();
        assert_eq!(e.message(), "'BREW' is not a valid HTTP method.");
    }
}
