//! The bindings a script's code sees (workers-rs `Env`): Durable Object namespaces and plain variables.

use std::collections::BTreeMap;
use std::rc::Rc;

use crate::error::{messages, Error};
use crate::namespace::ObjectNamespace;

/// A script's bindings. Cheap to clone.
#[derive(Clone, Default)]
pub struct Env {
    inner: Rc<EnvInner>,
}

#[derive(Default)]
struct EnvInner {
    namespaces: BTreeMap<String, ObjectNamespace>,
    vars: BTreeMap<String, String>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("durable_objects", &self.inner.namespaces.keys().collect::<Vec<_>>())
            .field("vars", &self.inner.vars.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Env {
    pub(crate) fn new(namespaces: BTreeMap<String, ObjectNamespace>, vars: BTreeMap<String, String>) -> Env {
        Env { inner: Rc::new(EnvInner { namespaces, vars }) }
    }

    pub(crate) fn empty() -> Env {
        Env::default()
    }

    /// The Durable Object namespace bound as `binding`.
    pub fn durable_object(&self, binding: &str) -> Result<ObjectNamespace, Error> {
        self.inner
            .namespaces
            .get(binding)
            .cloned()
            .ok_or_else(|| Error::new(messages::unknown_binding(binding)))
    }

    /// The plain-text variable `name`, if bound.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.inner.vars.get(name).map(String::as_str)
    }
}
