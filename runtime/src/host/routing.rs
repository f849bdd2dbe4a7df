//! Routing: the one place a call finds the container of its object: on this host, or (in a cluster) on
//! whichever host owns it (`cluster.rs`).

use std::cell::RefCell;
use std::rc::Rc;

use crate::alarm::AlarmKey;
use crate::error::Error;
use crate::future::LocalFuture;
use crate::id::ObjectId;
use crate::instance::EventKind;
use crate::namespace::{Call, Namespace, Reply, Router, StubBinding};

use super::{ClassEntry, Container, HostInner};

impl HostInner {
    /// Routing: the container a call for object `id` of `class` goes to, created if the host has none. With
    /// a stub's `binding`: the container it was bound to, unless that one was detached after an eviction
    /// (then the host's current one, which the stub binds to); its reset error if it is broken.
    pub(crate) fn route(
        self: &Rc<Self>,
        class: &Rc<ClassEntry>,
        id: &ObjectId,
        binding: Option<&StubBinding>,
    ) -> Result<Rc<Container>, Error> {
        let key: AlarmKey = (class.namespace.uid.clone(), *id.as_bytes());
        let Some(binding) = binding else { return Ok(self.container(key, class, id)) };
        let mut bound = binding.borrow_mut();
        let bound_container =
            bound.clone().map(|c| c.downcast::<Container>().expect("a stub is bound to a container"));
        if let Some(c) = &bound_container {
            if let Some(e) = c.broken() {
                return Err(e);
            }
            if self.is_attached(&key, c) {
                return Ok(c.clone());
            }
        }
        let c = self.container(key, class, id);
        *bound = Some(c.clone());
        Ok(c)
    }

    /// The host map's container of `key`, created if there is none.
    pub(super) fn container(
        self: &Rc<Self>,
        key: AlarmKey,
        class: &Rc<ClassEntry>,
        id: &ObjectId,
    ) -> Rc<Container> {
        self.containers
            .borrow_mut()
            .entry(key.clone())
            .or_insert_with(|| {
                Rc::new(Container {
                    key,
                    serial: self.next_container_serial(),
                    id: id.clone(),
                    class: class.clone(),
                    host: Rc::downgrade(self),
                    instance: RefCell::new(None),
                    broken: RefCell::new(None),
                    ownership: std::cell::Cell::new(None),
                    replica: RefCell::new(None),
                    kv_store: RefCell::new(None),
                    activating: madsim_tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// Whether `container` is the host map's container for `key`.
    pub(crate) fn is_attached(&self, key: &AlarmKey, container: &Container) -> bool {
        self.containers.borrow().get(key).is_some_and(|c| std::ptr::eq(Rc::as_ptr(c), container))
    }

    pub(super) fn detach(&self, key: &AlarmKey, container: &Container) {
        let mut map = self.containers.borrow_mut();
        if map.get(key).is_some_and(|c| std::ptr::eq(Rc::as_ptr(c), container)) {
            map.remove(key);
        }
    }
}

impl Router for HostInner {
    fn send(
        self: Rc<Self>,
        namespace: &Namespace,
        id: &ObjectId,
        binding: &StubBinding,
        location_hint: Option<&str>,
        bytes: usize,
        call: Call,
    ) -> LocalFuture<'static, Result<Reply, Error>> {
        let class =
            self.classes.get(&namespace.uid).cloned().expect("a namespace's class is deployed on its host");
        if self.cluster.is_some() {
            return self.send_remote(
                class,
                id.clone(),
                binding,
                location_hint.map(str::to_string),
                bytes,
                call,
            );
        }
        let instance = match self.route(&class, id, Some(binding)).and_then(|c| c.instance()) {
            Ok(i) => i,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        if let Err(e) = self.admit(&class, id, &instance, bytes) {
            return Box::pin(std::future::ready(Err(e)));
        }
        let what = call.describe();
        instance.deliver(EventKind::Request, bytes, what, move |object| match call {
            Call::Fetch(request) => {
                let reply = object.fetch(request);
                Box::pin(async move { reply.await.map(Reply::Response) })
            }
            Call::Rpc { method, args } => {
                let reply = object.call(&method, args);
                Box::pin(async move { reply.await.map(Reply::Rpc) })
            }
        })
    }
}
