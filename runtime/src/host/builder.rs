//! Building a host: its script's classes, bindings and migrations, the world it runs in, and the deploy.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use crate::alarm::AlarmScheduler;
use crate::config::HostConfig;
use crate::deploy::{Binding, Deployments, Migration, ScriptConfig};
use crate::env::Env;
use crate::error::Error;
use crate::id::NamespaceKey;
use crate::namespace::{Namespace, ObjectNamespace, Router};
use crate::object::{Class, ClassOf, DurableObject};
use crate::rpc::RpcNode;
use crate::world::{Clock, Coordinator, Entropy, StorageProvider};

use super::alarms::alarm_timer;
use super::cluster::{handler, membership, Cluster, ClusterRole};
use super::{ClassEntry, Host, HostInner};

impl Host {
    /// A builder for a host running `script`.
    pub fn builder(script: &str) -> HostBuilder {
        HostBuilder {
            script: script.to_string(),
            config: HostConfig::default(),
            classes: BTreeMap::new(),
            bindings: Vec::new(),
            migrations: Vec::new(),
            vars: BTreeMap::new(),
            deployments: Deployments::default(),
            storage: None,
            clock: None,
            entropy: None,
            cluster: None,
            storage_nodes: Vec::new(),
            location: None,
        }
    }
}

/// Builds a [`Host`]: its script's classes, bindings and migrations, and the world it runs in.
pub struct HostBuilder {
    script: String,
    config: HostConfig,
    classes: BTreeMap<String, Rc<dyn Class>>,
    bindings: Vec<Binding>,
    migrations: Vec<Migration>,
    vars: BTreeMap<String, String>,
    deployments: Deployments,
    storage: Option<Rc<dyn StorageProvider>>,
    clock: Option<Arc<dyn Clock>>,
    entropy: Option<Rc<dyn Entropy>>,
    cluster: Option<(Rc<RpcNode>, Rc<dyn Coordinator>, ClusterRole)>,
    storage_nodes: Vec<String>,
    location: Option<String>,
}

impl HostBuilder {
    /// The limits objects run under (default: the spec's).
    pub fn config(mut self, config: HostConfig) -> Self {
        self.config = config;
        self
    }

    /// The script exports class `T` as `name`.
    pub fn class<T: DurableObject>(mut self, name: &str) -> Self {
        self.classes.insert(name.to_string(), Rc::new(ClassOf::<T>::new()));
        self
    }

    /// Binds `binding` (a name in [`Env`]) to the class `class_name` of this script.
    pub fn binding(mut self, binding: &str, class_name: &str) -> Self {
        self.bindings.push(Binding {
            name: binding.to_string(),
            class_name: class_name.to_string(),
            script_name: None,
        });
        self
    }

    /// Appends a migration (spec §9); migrations apply in order, each tag once.
    pub fn migration(mut self, migration: Migration) -> Self {
        self.migrations.push(migration);
        self
    }

    /// A plain-text variable in [`Env`].
    pub fn var(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(name.to_string(), value.to_string());
        self
    }

    /// The deployment state before this deploy (default: nothing deployed yet).
    pub fn deployments(mut self, deployments: Deployments) -> Self {
        self.deployments = deployments;
        self
    }

    /// Where databases live.
    pub fn storage(mut self, storage: impl StorageProvider + 'static) -> Self {
        self.storage = Some(Rc::new(storage));
        self
    }

    /// The wall clock (`Date.now()`, alarm times, point-in-time recovery).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The source of randomness (unique ids, alarm jitter, `State::random_bytes`).
    pub fn entropy(mut self, entropy: impl Entropy + 'static) -> Self {
        self.entropy = Some(Rc::new(entropy));
        self
    }

    /// Makes the host part of a cluster: it calls other nodes through `rpc`, finds owners in the directory
    /// held by `store`, and, as a [`ClusterRole::Host`], joins the directory and serves calls to the objects
    /// it owns. Without it the host is alone, and runs every object its stubs call.
    pub fn cluster(mut self, rpc: Rc<RpcNode>, store: Rc<dyn Coordinator>, role: ClusterRole) -> Self {
        self.cluster = Some((rpc, store, role));
        self
    }

    /// The same cluster links as `host` (its calls, directory, role and storage nodes): the successor of a
    /// host shut down for a code update ([`Host::shut_down`]) on the same node. Nothing, if `host` is alone.
    pub fn cluster_of(mut self, host: &Host) -> Self {
        if let Some(c) = &host.inner.cluster {
            let (rpc, store, role, nodes) = c.links();
            self.cluster = Some((rpc, store, role));
            self.storage_nodes = nodes;
        }
        self
    }

    /// In a cluster: where this host is, as a location hint's name (spec §8: `wnam`, `enam`, `weur`, …).
    /// Placement of a new object prefers a host whose location matches its stub's hint. Checked at build.
    pub fn location(mut self, location: &str) -> Self {
        self.location = Some(location.to_string());
        self
    }

    /// In a cluster: the storage nodes (their addresses on the cluster's transport) that keep the databases of
    /// SQLite-backed objects, so that they survive this host and follow their object to another. Without
    /// them, objects keep their databases on this host's own storage.
    pub fn storage_nodes(mut self, nodes: Vec<String>) -> Self {
        self.storage_nodes = nodes;
        self
    }

    /// Deploys the script (applying its new migrations) and starts the host: its alarm index is loaded and
    /// the alarm timer runs. Must be called inside the runtime's executor (a madsim node, or a tokio
    /// `LocalSet`).
    pub fn build(self) -> Result<Host, Error> {
        let missing = |what: &str| Error::new(format!("Host::builder: no {what} was given"));
        if let Some(l) = &self.location {
            if !crate::namespace::LOCATION_HINTS.contains(&l.as_str()) {
                return Err(Error::range_error(crate::error::messages::unknown_location_hint(l)));
            }
        }
        let storage = self.storage.ok_or_else(|| missing("storage provider"))?;
        let clock = self.clock.ok_or_else(|| missing("clock"))?;
        let entropy = self.entropy.ok_or_else(|| missing("entropy source"))?;
        let config = ScriptConfig {
            script: self.script.clone(),
            exported_classes: self.classes.keys().cloned().collect(),
            bindings: self.bindings.clone(),
            migrations: self.migrations,
        };
        let outcome = self.deployments.deploy(&config)?;
        for ns in &outcome.deleted_namespaces {
            storage.delete_namespace(ns)?;
        }
        let deployments = outcome.deployments;
        let mut classes = BTreeMap::new();
        let mut by_name = BTreeMap::new();
        for (name, deployed) in deployments.classes(&self.script) {
            let Some(class) = self.classes.get(name) else {
                return Err(Error::new(format!(
                    "Class '{name}' is deployed by script '{}' but the script does not export it.",
                    self.script
                )));
            };
            let uid: Rc<str> = Rc::from(deployed.namespace_uid.as_str());
            let entry = Rc::new(ClassEntry {
                namespace: Rc::new(Namespace {
                    class_name: Rc::from(name),
                    uid: uid.clone(),
                    key: NamespaceKey::new(&deployed.namespace_uid),
                }),
                backend: deployed.backend,
                class: class.clone(),
            });
            classes.insert(uid, entry.clone());
            by_name.insert(name.to_string(), entry);
        }
        let alarms = Rc::new(AlarmScheduler::open(&storage.alarm_index())?);
        // Only a cluster's remote stubs outlive a host incarnation, so only a cluster host draws it.
        let container_epoch = if self.cluster.is_some() {
            let mut b = [0u8; 4];
            entropy.fill(&mut b);
            u32::from_le_bytes(b)
        } else {
            0
        };
        let inner = Rc::new(HostInner {
            config: Rc::new(self.config),
            script: self.script.clone(),
            deployments: deployments.clone(),
            classes,
            containers: RefCell::new(BTreeMap::new()),
            storage,
            clock,
            entropy,
            alarms,
            env: RefCell::new(Env::empty()),
            tasks: RefCell::new(Vec::new()),
            cluster: self.cluster.map(|(rpc, store, role)| {
                let mut c = Cluster::new(rpc, store, role, self.storage_nodes);
                c.location = self.location;
                c
            }),
            closed: std::cell::Cell::new(false),
            // Serials start at a random multiple of 2^32, so a stub bound to a container of this host's
            // earlier incarnation never meets a new container under its serial.
            next_container: std::cell::Cell::new(u64::from(container_epoch) << 32),
            broken_containers: RefCell::new(BTreeMap::new()),
            forced_overloads: RefCell::new(BTreeMap::new()),
            sockets: RefCell::new(BTreeMap::new()),
        });
        let mut namespaces = BTreeMap::new();
        for b in &self.bindings {
            let resolved =
                deployments.resolve(b.script_name.as_deref().unwrap_or(&self.script), &b.class_name);
            let entry = resolved.and_then(|(script, class, _)| {
                (script == self.script).then(|| by_name.get(&class).cloned()).flatten()
            });
            let Some(entry) = entry else {
                return Err(Error::new(format!(
                    "Binding '{}' names class '{}', which this host does not run.",
                    b.name, b.class_name
                )));
            };
            let router: Weak<dyn Router> = Rc::downgrade(&inner) as Weak<HostInner>;
            let namespace = ObjectNamespace::new(entry.namespace.clone(), router, inner.entropy.clone());
            namespaces.insert(b.name.clone(), namespace);
        }
        *inner.env.borrow_mut() = Env::new(namespaces, self.vars);
        let timer = madsim_tokio::task::spawn_local(alarm_timer(Rc::downgrade(&inner)));
        inner.tasks.borrow_mut().push(timer.abort_handle());
        if let Some(cluster) = &inner.cluster {
            if cluster.role() == ClusterRole::Host {
                cluster.rpc.serve(handler(Rc::downgrade(&inner)));
                let member = madsim_tokio::task::spawn_local(membership(Rc::downgrade(&inner)));
                inner.tasks.borrow_mut().push(member.abort_handle());
            }
        }
        Ok(Host { inner })
    }
}
