//! Deployment configuration and Durable Object migrations (spec §9).
//!
//! A deploy takes the state of every deployed script ([`Deployments`]) and the new configuration of one script
//! ([`ScriptConfig`]), and returns the new state or an error; a failed deploy changes nothing (the state is a
//! value, and [`Deployments::deploy`] works on a copy).
//!
//! # Rules
//!
//! * Migrations have unique, non-empty tags and apply in order, each once. The tags a script has applied must
//!   be a prefix of its migrations list, in order: a config that drops or reorders an applied tag fails. Once a
//!   script has a tag, every later deploy must include migrations.
//! * Within one migration the directives apply in the order of [`Migration`]'s fields: `new_classes`,
//!   `new_sqlite_classes`, `renamed_classes`, `transferred_classes`, `deleted_classes`.
//! * `new_classes` / `new_sqlite_classes` create a class with the KV / SQLite backend; the class must not
//!   exist. The backend is chosen at creation only: `new_sqlite_classes` on an existing KV class fails.
//! * `renamed_classes` (same script) and `transferred_classes` (from another script): the source must exist;
//!   the destination must not exist and must be exported by the Worker being deployed. The class keeps its
//!   namespace uid, so its objects' data moves with it, and the old name forwards to the new class: bindings
//!   to the old name, in any script, resolve to it.
//! * `deleted_classes` removes a class and reports its namespace uid in
//!   [`DeployOutcome::deleted_namespaces`] (the embedder deletes its objects' data). It fails while a binding
//!   still references the class, directly or through a forward: a binding of the new config, or a binding of
//!   another deployed script.
//! * At the end every binding of the new config must resolve to a deployed class.
//!
//! # Namespace uids
//!
//! A class's namespace uid is `"{script}:{class}:{tag}"` of the migration that created it. It is stable across
//! renames and transfers; object storage and the namespace key of ids ([`crate::id::NamespaceKey`]) derive
//! from it. Cloudflare's script names (`[a-z0-9_-]`) and class names (JavaScript identifiers) contain no `:`,
//! so two classes cannot share a uid.
//!
//! # Forwards
//!
//! A forward maps an old class name of a script to the `(script, class)` it was renamed or transferred to.
//! Invariant: every forward points at a deployed class. Moving a class repoints the forwards that pointed at
//! it, and deleting one drops them, so a forward never chains and [`Deployments::resolve`] takes at most one
//! hop.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{messages, Error};

/// The storage backend of a class's objects, chosen when the class is created (spec §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum BackendKind {
    /// Created by `new_classes`: the key-value backend.
    Kv,
    /// Created by `new_sqlite_classes`: the SQLite backend.
    Sqlite,
}

/// One `[[migrations]]` entry (spec §9). One entry may combine several directives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migration {
    /// The unique tag; applied once per script.
    pub tag: String,
    /// Classes to create with the KV backend.
    pub new_classes: Vec<String>,
    /// Classes to create with the SQLite backend.
    pub new_sqlite_classes: Vec<String>,
    /// Classes of this script to rename (data moves).
    pub renamed_classes: Vec<RenamedClass>,
    /// Classes to delete, with all their objects' data.
    pub deleted_classes: Vec<String>,
    /// Classes to move here from another script (data moves).
    pub transferred_classes: Vec<TransferredClass>,
}

/// A `renamed_classes` entry: `from` becomes `to` in the same script.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenamedClass {
    /// The class's current name.
    pub from: String,
    /// Its new name; must be exported by the Worker and must not exist.
    pub to: String,
}

/// A `transferred_classes` entry: class `from` of script `from_script` becomes class `to` of this script.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferredClass {
    /// The class's name in `from_script`.
    pub from: String,
    /// The script it comes from (not this one: a move within a script is a rename).
    pub from_script: String,
    /// Its name here; must be exported by the Worker and must not exist.
    pub to: String,
}

/// A binding in this script's config: `name` → class `class_name` of `script_name` (None = this script).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Binding {
    /// The binding's name in `env`.
    pub name: String,
    /// The class it binds; an old name that was renamed or transferred forwards to the new class.
    pub class_name: String,
    /// The script that implements the class; `None` for this script.
    pub script_name: Option<String>,
}

/// The configuration of one script as it is deployed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ScriptConfig {
    /// The script's name.
    pub script: String,
    /// The classes the Worker's code exports.
    pub exported_classes: Vec<String>,
    /// Its Durable Object bindings.
    pub bindings: Vec<Binding>,
    /// Its whole `[[migrations]]` list, applied ones included.
    pub migrations: Vec<Migration>,
}

/// One deployed class: its backend and the uid of its namespace (stable across renames and transfers; the
/// storage of its objects is keyed by it, so data moves with a rename/transfer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeployedClass {
    /// The storage backend, fixed at creation.
    pub backend: BackendKind,
    /// The namespace uid, `"{script}:{class}:{tag}"` of the creating migration (module docs).
    pub namespace_uid: String,
}

/// A class of a script, as a forward's target.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct ClassRef {
    script: String,
    class: String,
}

/// What is deployed of one script.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ScriptState {
    /// The tags applied, in order.
    tags: Vec<String>,
    /// The classes the script implements.
    classes: BTreeMap<String, DeployedClass>,
    /// Old class names of this script → where the class went (module docs).
    forwards: BTreeMap<String, ClassRef>,
    /// The bindings of its last deployed config: a class they reference cannot be deleted.
    bindings: Vec<Binding>,
}

/// Persistent state of all scripts (serde; the embedder stores it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployments {
    scripts: BTreeMap<String, ScriptState>,
}

/// The result of a successful deploy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DeployOutcome {
    /// The state after the deploy.
    pub deployments: Deployments,
    /// Namespace uids whose data must be deleted (`deleted_classes`), in the order they were deleted.
    pub deleted_namespaces: Vec<String>,
}

impl Deployments {
    /// Deploys `config`: applies its migrations not applied yet, checks its bindings, and returns the new state.
    /// On error nothing changes. Errors are `Error`s with the messages in [`messages`] (module docs list the
    /// rules).
    pub(crate) fn deploy(&self, config: &ScriptConfig) -> Result<DeployOutcome, Error> {
        let script = config.script.as_str();
        let applied = self.scripts.get(script).map(|s| s.tags.as_slice()).unwrap_or_default();
        check_tags(script, applied, &config.migrations)?;

        let mut next = self.clone();
        let mut deleted_namespaces = Vec::new();
        for migration in &config.migrations[applied.len()..] {
            next.apply(config, migration, &mut deleted_namespaces)?;
            next.scripts.entry(script.to_owned()).or_default().tags.push(migration.tag.clone());
        }
        for binding in &config.bindings {
            if next.resolve_binding(script, binding).is_none() {
                return Err(Error::new(messages::binding_to_unconfigured_class(&binding.class_name)));
            }
        }
        next.scripts.entry(script.to_owned()).or_default().bindings = config.bindings.clone();
        next.check_forwards();
        Ok(DeployOutcome { deployments: next, deleted_namespaces })
    }

    /// Resolves a binding target (following renames/transfers) to the deployed class: its script, its
    /// current name, and the class.
    pub(crate) fn resolve(&self, script: &str, class_name: &str) -> Option<(String, String, DeployedClass)> {
        let state = self.scripts.get(script)?;
        if let Some(class) = state.classes.get(class_name) {
            return Some((script.to_owned(), class_name.to_owned(), class.clone()));
        }
        let target = state.forwards.get(class_name)?;
        // One hop: forwards point at deployed classes (module docs).
        let class = self.scripts.get(&target.script)?.classes.get(&target.class)?;
        Some((target.script.clone(), target.class.clone(), class.clone()))
    }

    /// The classes `script` implements, by name (none if it was never deployed).
    pub(crate) fn classes(&self, script: &str) -> impl Iterator<Item = (&str, &DeployedClass)> {
        self.scripts.get(script).into_iter().flat_map(|s| s.classes.iter().map(|(k, v)| (k.as_str(), v)))
    }

    /// The migration tags `script` has applied, in order.
    pub fn applied_tags(&self, script: &str) -> &[String] {
        self.scripts.get(script).map(|s| s.tags.as_slice()).unwrap_or_default()
    }

    /// Where `binding`, of `script`, points.
    fn resolve_binding(&self, script: &str, binding: &Binding) -> Option<(String, String, DeployedClass)> {
        self.resolve(binding.script_name.as_deref().unwrap_or(script), &binding.class_name)
    }

    /// Applies one migration of `config` to `self`.
    fn apply(
        &mut self,
        config: &ScriptConfig,
        m: &Migration,
        deleted: &mut Vec<String>,
    ) -> Result<(), Error> {
        let script = config.script.as_str();
        for (classes, backend) in
            [(&m.new_classes, BackendKind::Kv), (&m.new_sqlite_classes, BackendKind::Sqlite)]
        {
            for class in classes {
                self.create(script, class, backend, &m.tag)?;
            }
        }
        for RenamedClass { from, to } in &m.renamed_classes {
            let verb = messages::RENAME_CLASS;
            if !self.has_class(script, from) {
                return Err(Error::new(messages::migration_source_missing(verb, from, script)));
            }
            self.check_destination(config, verb, to)?;
            self.move_class(script, from, script, to);
        }
        for TransferredClass { from, from_script, to } in &m.transferred_classes {
            let verb = messages::TRANSFER_CLASS;
            if from_script == script {
                return Err(Error::new(messages::transfer_within_script(from, script)));
            }
            if !self.has_class(from_script, from) {
                return Err(Error::new(messages::migration_source_missing(verb, from, from_script)));
            }
            self.check_destination(config, verb, to)?;
            self.move_class(from_script, from, script, to);
        }
        for class in &m.deleted_classes {
            deleted.push(self.delete(config, class)?);
        }
        Ok(())
    }

    fn has_class(&self, script: &str, class: &str) -> bool {
        self.scripts.get(script).is_some_and(|s| s.classes.contains_key(class))
    }

    fn create(&mut self, script: &str, class: &str, backend: BackendKind, tag: &str) -> Result<(), Error> {
        if let Some(existing) = self.scripts.get(script).and_then(|s| s.classes.get(class)) {
            return Err(Error::new(match (existing.backend, backend) {
                (BackendKind::Kv, BackendKind::Sqlite) => messages::new_sqlite_class_on_kv_class(class),
                _ => messages::new_class_exists(backend_directive(backend), class),
            }));
        }
        let namespace_uid = format!("{script}:{class}:{tag}");
        debug_assert!(
            self.scripts.values().flat_map(|s| s.classes.values()).all(|c| c.namespace_uid != namespace_uid),
            "namespace uid {namespace_uid} reused"
        );
        let state = self.scripts.entry(script.to_owned()).or_default();
        // The name now means the new class, not wherever an old class of that name went.
        state.forwards.remove(class);
        state.classes.insert(class.to_owned(), DeployedClass { backend, namespace_uid });
        Ok(())
    }

    /// A rename or transfer destination of `config`'s script must be exported and must not exist.
    fn check_destination(&self, config: &ScriptConfig, verb: &str, to: &str) -> Result<(), Error> {
        if self.has_class(&config.script, to) {
            return Err(Error::new(messages::migration_destination_exists(verb, to)));
        }
        if !config.exported_classes.iter().any(|c| c == to) {
            return Err(Error::new(messages::migration_destination_not_exported(verb, to)));
        }
        Ok(())
    }

    /// Moves class `from` of `from_script` to `to` of `to_script` (which exist / does not exist), keeping its
    /// namespace uid, and forwards the old name.
    fn move_class(&mut self, from_script: &str, from: &str, to_script: &str, to: &str) {
        let class = self
            .scripts
            .get_mut(from_script)
            .and_then(|s| s.classes.remove(from))
            .expect("the caller checked that the source exists");
        let old = ClassRef { script: from_script.to_owned(), class: from.to_owned() };
        let new = ClassRef { script: to_script.to_owned(), class: to.to_owned() };
        for forward in self.scripts.values_mut().flat_map(|s| s.forwards.values_mut()) {
            if *forward == old {
                *forward = new.clone();
            }
        }
        self.scripts.get_mut(from_script).expect("source script").forwards.insert(from.to_owned(), new);
        let state = self.scripts.entry(to_script.to_owned()).or_default();
        state.forwards.remove(to);
        let previous = state.classes.insert(to.to_owned(), class);
        assert!(previous.is_none(), "the caller checked that the destination does not exist");
    }

    /// Deletes class `class` of `config`'s script and returns its namespace uid.
    fn delete(&mut self, config: &ScriptConfig, class: &str) -> Result<String, Error> {
        let script = config.script.as_str();
        if !self.has_class(script, class) {
            return Err(Error::new(messages::delete_missing_class(class)));
        }
        let other_bindings = self
            .scripts
            .iter()
            .filter(|(name, _)| name.as_str() != script)
            .flat_map(|(name, s)| s.bindings.iter().map(move |b| (name.as_str(), b)));
        let own_bindings = config.bindings.iter().map(|b| (script, b));
        for (binding_script, binding) in own_bindings.chain(other_bindings) {
            let target = self.resolve_binding(binding_script, binding);
            if target.is_some_and(|(s, c, _)| s == script && c == class) {
                return Err(Error::new(messages::delete_bound_class(class)));
            }
        }
        let removed = self
            .scripts
            .get_mut(script)
            .and_then(|s| s.classes.remove(class))
            .expect("checked above that the class exists");
        let gone = ClassRef { script: script.to_owned(), class: class.to_owned() };
        for state in self.scripts.values_mut() {
            state.forwards.retain(|_, target| *target != gone);
        }
        Ok(removed.namespace_uid)
    }

    /// The forwards invariant (module docs), and that no two classes share a namespace uid.
    fn check_forwards(&self) {
        for state in self.scripts.values() {
            for (old, target) in &state.forwards {
                assert!(self.has_class(&target.script, &target.class), "forward {old} → {target:?} dangles");
            }
        }
        let mut uids = BTreeSet::new();
        for class in self.scripts.values().flat_map(|s| s.classes.values()) {
            assert!(
                uids.insert(class.namespace_uid.as_str()),
                "namespace uid {} shared",
                class.namespace_uid
            );
        }
    }
}

/// The directive that creates a class with `backend`.
fn backend_directive(backend: BackendKind) -> &'static str {
    match backend {
        BackendKind::Kv => messages::NEW_CLASS,
        BackendKind::Sqlite => messages::NEW_SQLITE_CLASS,
    }
}

/// Checks the tags of `migrations` for `script`, which has `applied` them so far: unique and non-empty, the
/// applied ones first in order, and migrations present once a tag was applied.
fn check_tags(script: &str, applied: &[String], migrations: &[Migration]) -> Result<(), Error> {
    let mut seen = BTreeSet::new();
    for m in migrations {
        if m.tag.is_empty() {
            return Err(Error::new(messages::MIGRATION_TAG_EMPTY));
        }
        if !seen.insert(m.tag.as_str()) {
            return Err(Error::new(messages::migration_tag_duplicate(&m.tag)));
        }
    }
    if let (Some(last), true) = (applied.last(), migrations.is_empty()) {
        return Err(Error::new(messages::migrations_required(script, last)));
    }
    for (position, tag) in applied.iter().enumerate() {
        let found = migrations.get(position).map(|m| m.tag.as_str());
        if found != Some(tag.as_str()) {
            return Err(Error::new(messages::applied_tags_mismatch(script, tag, position, found)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
