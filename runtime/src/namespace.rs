//! Namespaces and stubs (spec §8): how code reaches an object by id.
//!
//! A [`Stub`] is made without contacting the object; the object is created lazily on the first call. A stub
//! binds to the object's container on its first call and keeps it: if that instance is reset, the stub keeps
//! failing with the reset error, and a new stub (`get`, `get_by_name`) reaches the new instance (spec §6.2).
//! A call made from inside an object waits for the caller's output gate before it leaves (spec §1.4).

use std::any::Any;
use std::cell::RefCell;
use std::rc::{Rc, Weak};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{messages, Error};
use crate::future::LocalFuture;
use crate::http::{Request, Response};
use crate::id::{Jurisdiction, NamespaceKey, ObjectId};
use crate::storage::value;
use crate::turn;
use crate::world::Entropy;

/// The location hints `get` accepts (spec §8).
pub(crate) const LOCATION_HINTS: [&str; 11] =
    ["wnam", "enam", "sam", "weur", "eeur", "apac", "apac-ne", "apac-se", "oc", "afr", "me"];

/// The one routing mode `get` accepts (spec §8).
pub(crate) const ROUTING_MODE_PRIMARY_ONLY: &str = "primary-only";

/// Options of [`ObjectNamespace::get_with`] (spec §8).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StubOptions {
    /// Where to create the object, if this call creates it; one of `LOCATION_HINTS`. Best effort: in a
    /// cluster, placement prefers a host in that location; a single host places the object on itself.
    pub location_hint: Option<String>,
    /// Only `primary-only`.
    pub routing_mode: Option<String>,
}

/// A class's namespace, as its ids and stubs see it.
#[derive(Debug)]
pub(crate) struct Namespace {
    /// The class's name, for traces.
    pub(crate) class_name: Rc<str>,
    /// The namespace's uid: stable across renames (spec §9), the routing key with the id.
    pub(crate) uid: Rc<str>,
    /// The key ids of this namespace are MAC'd with.
    pub(crate) key: NamespaceKey,
}

/// What a stub sends to its object.
pub(crate) enum Call {
    /// `fetch(request)`.
    Fetch(Request),
    /// An RPC call of `method`, its arguments encoded.
    Rpc { method: String, args: Vec<u8> },
}

/// How a trace line names a fetch event: `fetch GET /path` (the path cut short).
pub(crate) fn describe_fetch(request: &Request) -> String {
    format!("fetch {} {}", request.method(), value::shorten(request.path(), value::TRACE_TEXT_MAX))
}

/// How a trace line names an RPC event: `rpc method(arguments)`, the arguments rendered short.
pub(crate) fn describe_rpc(method: &str, args: &[u8]) -> String {
    format!("rpc {}({})", value::shorten(method, value::TRACE_TEXT_MAX), value::render_args(args))
}

impl Call {
    /// How a trace line names the event this call becomes.
    pub(crate) fn describe(&self) -> String {
        match self {
            Call::Fetch(request) => describe_fetch(request),
            Call::Rpc { method, args } => describe_rpc(method, args),
        }
    }
}

/// What comes back: a response to a fetch, the encoded result of an RPC call.
pub(crate) enum Reply {
    Response(Response),
    Rpc(Vec<u8>),
}

/// Where a stub's first call went (spec §6.2: a stub keeps its object's instance, and keeps failing once it
/// is reset). What it holds is the router's business; the stub only keeps it.
pub(crate) type StubBinding = RefCell<Option<Rc<dyn Any>>>;

/// Where the calls of a namespace's stubs go: the host's routing today, the cluster's remote routing later
/// (host/routing.rs implements it).
pub(crate) trait Router {
    /// Sends `call` (`bytes` long, for the overload limits) to object `id` of `namespace`, through the stub's
    /// `binding`; `location_hint` is the stub's (spec §8: where to create the object, if this call does).
    fn send(
        self: Rc<Self>,
        namespace: &Namespace,
        id: &ObjectId,
        binding: &StubBinding,
        location_hint: Option<&str>,
        bytes: usize,
        call: Call,
    ) -> LocalFuture<'static, Result<Reply, Error>>;
}

/// The namespace of one class, as a binding in `Env` exposes it (workers-rs `ObjectNamespace`).
#[derive(Clone)]
pub struct ObjectNamespace {
    namespace: Rc<Namespace>,
    router: Weak<dyn Router>,
    entropy: Rc<dyn Entropy>,
    jurisdiction: Option<Jurisdiction>,
}

impl std::fmt::Debug for ObjectNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectNamespace")
            .field("class", &self.namespace.class_name)
            .field("jurisdiction", &self.jurisdiction)
            .finish()
    }
}

impl ObjectNamespace {
    pub(crate) fn new(
        namespace: Rc<Namespace>,
        router: Weak<dyn Router>,
        entropy: Rc<dyn Entropy>,
    ) -> ObjectNamespace {
        ObjectNamespace { namespace, router, entropy, jurisdiction: None }
    }

    pub(crate) fn namespace(&self) -> &Rc<Namespace> {
        &self.namespace
    }

    /// The id for `name`: the same name always gives the same id in this namespace (and jurisdiction), and a
    /// different one in any other.
    pub fn id_from_name(&self, name: &str) -> ObjectId {
        ObjectId::from_name(&self.namespace.key, name, self.jurisdiction)
    }

    /// A new random id, drawn from the world's entropy.
    pub fn new_unique_id(&self) -> Result<ObjectId, Error> {
        // Only while the host runs, as every call of the namespace.
        self.router.upgrade().ok_or_else(host_gone)?;
        let mut random = [0u8; 16];
        self.entropy.fill(&mut random);
        Ok(ObjectId::unique(&self.namespace.key, random, self.jurisdiction))
    }

    /// Parses an id's string form: 64 hex digits whose MAC matches this namespace (spec §8's two errors).
    pub fn id_from_string(&self, hex: &str) -> Result<ObjectId, Error> {
        ObjectId::parse(&self.namespace.key, hex)
    }

    /// The sub-namespace of jurisdiction `name` (`eu`, `fedramp`, `fedramp-high`, `us`): its ids are
    /// restricted to it, and the same name gives a different id than at the top level.
    pub fn jurisdiction(&self, name: &str) -> Result<ObjectNamespace, Error> {
        let j = Jurisdiction::parse(name)?;
        Ok(ObjectNamespace { jurisdiction: Some(j), ..self.clone() })
    }

    /// A stub for `id`, made without contacting the object.
    pub fn get(&self, id: &ObjectId) -> Result<Stub, Error> {
        self.get_with(id, &StubOptions::default())
    }

    /// [`ObjectNamespace::get`] with options: a location hint and a routing mode, both checked.
    pub fn get_with(&self, id: &ObjectId, options: &StubOptions) -> Result<Stub, Error> {
        if let Some(mode) = &options.routing_mode {
            if mode != ROUTING_MODE_PRIMARY_ONLY {
                return Err(Error::range_error(messages::unknown_routing_mode(mode)));
            }
        }
        if let Some(hint) = &options.location_hint {
            if !LOCATION_HINTS.contains(&hint.as_str()) {
                return Err(Error::range_error(messages::unknown_location_hint(hint)));
            }
        }
        if let Some(j) = self.jurisdiction {
            if id.jurisdiction() != Some(j) {
                return Err(Error::type_error(messages::JURISDICTION_MISMATCH));
            }
        }
        // The id must belong to this namespace: ids are MAC'd by the namespace key.
        self.id_from_string(&id.to_string())?;
        let mut stub = self.stub(id.clone());
        stub.location_hint = options.location_hint.clone();
        Ok(stub)
    }

    /// `get(id_from_name(name))`.
    pub fn get_by_name(&self, name: &str) -> Stub {
        self.stub(self.id_from_name(name))
    }

    fn stub(&self, id: ObjectId) -> Stub {
        Stub {
            id,
            namespace: self.namespace.clone(),
            router: self.router.clone(),
            binding: RefCell::new(None),
            location_hint: None,
        }
    }

    /// `get_with(id_from_name(name), options)`.
    pub fn get_by_name_with(&self, name: &str, options: &StubOptions) -> Result<Stub, Error> {
        self.get_with(&self.id_from_name(name), options)
    }
}

fn host_gone() -> Error {
    Error::new(messages::INSTANCE_NO_LONGER_ACTIVE).with_retryable()
}

/// A client of one object (workers-rs `Stub`): fetch and typed RPC calls.
pub struct Stub {
    id: ObjectId,
    namespace: Rc<Namespace>,
    router: Weak<dyn Router>,
    binding: StubBinding,
    /// The location hint it was made with (checked then).
    location_hint: Option<String>,
}

impl std::fmt::Debug for Stub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stub").field("class", &self.namespace.class_name).field("id", &self.id).finish()
    }
}

impl Stub {
    /// The object's id.
    pub fn id(&self) -> &ObjectId {
        &self.id
    }

    /// The name the id was made from, if it was.
    pub fn name(&self) -> Option<&str> {
        self.id.name()
    }

    /// Sends an HTTP request to the object.
    ///
    /// Cancel safety: dropping the future after the request was delivered does not cancel it; the object
    /// still runs it to the end.
    pub async fn fetch(&self, request: Request) -> Result<Response, Error> {
        let bytes = request.size();
        match self.send(bytes, Call::Fetch(request)).await? {
            Reply::Response(r) => {
                r.arrived();
                Ok(r)
            }
            Reply::Rpc(_) => unreachable!("a fetch is answered with a response"),
        }
    }

    /// `fetch(Request::get(url))`.
    pub async fn fetch_with_str(&self, url: &str) -> Result<Response, Error> {
        self.fetch(Request::get(url)).await
    }

    /// Calls the RPC method `method` with `args` (several arguments as a tuple); the result is decoded as
    /// `R`. Arguments and results travel as CBOR, like storage values.
    pub async fn call<A: Serialize, R: DeserializeOwned>(&self, method: &str, args: &A) -> Result<R, Error> {
        let args = value::encode(args)?;
        let bytes = method.len() + args.len();
        let call = Call::Rpc { method: method.to_string(), args };
        match self.send(bytes, call).await? {
            Reply::Rpc(reply) => value::decode(&reply),
            Reply::Response(_) => unreachable!("an RPC call is answered with its result"),
        }
    }

    async fn send(&self, bytes: usize, call: Call) -> Result<Reply, Error> {
        // From inside an object, the call leaves once every write confirmed before it is durable (spec §1.4).
        if let Some(turn) = turn::current() {
            let released = turn.turns.output_gate().wait();
            drop(turn);
            released.await?;
        }
        let router = self.router.upgrade().ok_or_else(host_gone)?;
        router
            .send(&self.namespace, &self.id, &self.binding, self.location_hint.as_deref(), bytes, call)
            .await
    }
}
