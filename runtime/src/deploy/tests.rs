//! Deployments and migrations (`crate::deploy`) against the spec (`durable-objects.md` §9): every
//! error case with its exact message, data moving with renames and transfers, deletes, redeploys, and the
//! persistent format.

use crate::deploy::{
    BackendKind, Binding, DeployOutcome, DeployedClass, Deployments, Migration, RenamedClass, ScriptConfig,
    TransferredClass,
};
use crate::error::messages;
use crate::error::ErrorKind;

// ---------------------------------------------------------------------------------------------------------
// A small driver: configs read like wrangler.toml.

/// A config of `script` exporting `exported`, with no bindings or migrations yet.
fn script(name: &str, exported: &[&str]) -> ScriptConfig {
    ScriptConfig {
        script: name.to_owned(),
        exported_classes: exported.iter().map(|c| c.to_string()).collect(),
        bindings: Vec::new(),
        migrations: Vec::new(),
    }
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|c| c.to_string()).collect()
}

trait ConfigExt {
    fn bind(self, name: &str, class: &str) -> Self;
    fn bind_other(self, name: &str, script: &str, class: &str) -> Self;
    fn migrate(self, m: Migration) -> Self;
}

impl ConfigExt for ScriptConfig {
    fn bind(mut self, name: &str, class: &str) -> Self {
        self.bindings.push(Binding { name: name.into(), class_name: class.into(), script_name: None });
        self
    }
    fn bind_other(mut self, name: &str, script: &str, class: &str) -> Self {
        self.bindings.push(Binding {
            name: name.into(),
            class_name: class.into(),
            script_name: Some(script.into()),
        });
        self
    }
    fn migrate(mut self, m: Migration) -> Self {
        self.migrations.push(m);
        self
    }
}

fn tag(tag: &str) -> Migration {
    Migration { tag: tag.into(), ..Migration::default() }
}

trait MigrationExt {
    fn new_classes(self, c: &[&str]) -> Self;
    fn new_sqlite(self, c: &[&str]) -> Self;
    fn rename(self, from: &str, to: &str) -> Self;
    fn transfer(self, from_script: &str, from: &str, to: &str) -> Self;
    fn delete(self, c: &[&str]) -> Self;
}

impl MigrationExt for Migration {
    fn new_classes(mut self, c: &[&str]) -> Self {
        self.new_classes.extend(strings(c));
        self
    }
    fn new_sqlite(mut self, c: &[&str]) -> Self {
        self.new_sqlite_classes.extend(strings(c));
        self
    }
    fn rename(mut self, from: &str, to: &str) -> Self {
        self.renamed_classes.push(RenamedClass { from: from.into(), to: to.into() });
        self
    }
    fn transfer(mut self, from_script: &str, from: &str, to: &str) -> Self {
        self.transferred_classes.push(TransferredClass {
            from: from.into(),
            from_script: from_script.into(),
            to: to.into(),
        });
        self
    }
    fn delete(mut self, c: &[&str]) -> Self {
        self.deleted_classes.extend(strings(c));
        self
    }
}

fn deploy(state: &Deployments, config: &ScriptConfig) -> DeployOutcome {
    state.deploy(config).unwrap_or_else(|e| panic!("deploy of {} failed: {e}", config.script))
}

/// Deploys, expects an `Error` with exactly `message`, and checks that the state is unchanged.
fn deploy_fails(state: &Deployments, config: &ScriptConfig, message: &str) {
    let before = state.clone();
    let e = state.deploy(config).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Error);
    assert_eq!(e.message(), message);
    assert_eq!(*state, before);
}

fn class(backend: BackendKind, uid: &str) -> DeployedClass {
    DeployedClass { backend, namespace_uid: uid.into() }
}

fn resolved(script: &str, class_name: &str, c: DeployedClass) -> Option<(String, String, DeployedClass)> {
    Some((script.into(), class_name.into(), c))
}

// ---------------------------------------------------------------------------------------------------------
// Creating classes and bindings

#[test]
fn new_classes_create_with_their_backend_and_a_namespace_uid() {
    let config = script("app", &["Counter", "Room"])
        .bind("COUNTER", "Counter")
        .bind("ROOM", "Room")
        .migrate(tag("v1").new_classes(&["Counter"]).new_sqlite(&["Room"]));
    let out = deploy(&Deployments::default(), &config);
    assert!(out.deleted_namespaces.is_empty());
    let d = out.deployments;
    let classes: Vec<(&str, &DeployedClass)> = d.classes("app").collect();
    assert_eq!(
        classes,
        [
            ("Counter", &class(BackendKind::Kv, "app:Counter:v1")),
            ("Room", &class(BackendKind::Sqlite, "app:Room:v1")),
        ]
    );
    assert_eq!(d.applied_tags("app"), ["v1"]);
    assert_eq!(d.resolve("app", "Room"), resolved("app", "Room", class(BackendKind::Sqlite, "app:Room:v1")));
    assert_eq!(d.resolve("app", "Nope"), None);
    assert_eq!(d.resolve("nope", "Room"), None);
    assert_eq!(d.classes("nope").count(), 0);
}

#[test]
fn binding_to_a_class_without_a_create_migration_fails() {
    let config = script("app", &["Counter"]).bind("COUNTER", "Counter");
    deploy_fails(
        &Deployments::default(),
        &config,
        "Cannot create binding for class 'Counter' because it is not currently configured to implement Durable Objects. Ensure a --new-class migration has been applied to it. [code: 10061]",
    );
    // Also to another script's class that does not exist.
    let config = script("app", &[]).bind_other("X", "other", "Counter");
    deploy_fails(&Deployments::default(), &config, &messages::binding_to_unconfigured_class("Counter"));
}

#[test]
fn new_class_that_exists_fails() {
    let v1 = script("app", &["A"]).migrate(tag("v1").new_classes(&["A"]));
    let d = deploy(&Deployments::default(), &v1).deployments;
    deploy_fails(
        &d,
        &v1.clone().migrate(tag("v2").new_classes(&["A"])),
        "Cannot apply --new-class migration to class 'A' because it already exists.",
    );
    // Twice in one migration, too.
    deploy_fails(
        &Deployments::default(),
        &script("app", &["A"]).migrate(tag("v1").new_classes(&["A", "A"])),
        "Cannot apply --new-class migration to class 'A' because it already exists.",
    );
}

#[test]
fn sqlite_backend_only_at_creation() {
    let v1 = script("app", &["A", "S"]).migrate(tag("v1").new_classes(&["A"]).new_sqlite(&["S"]));
    let d = deploy(&Deployments::default(), &v1).deployments;
    deploy_fails(
        &d,
        &v1.clone().migrate(tag("v2").new_sqlite(&["A"])),
        "Cannot apply --new-sqlite-class migration to class 'A' because it already exists with the key-value storage backend. The SQLite backend can only be chosen when a class is created; an existing class cannot be converted.",
    );
    deploy_fails(
        &d,
        &v1.clone().migrate(tag("v2").new_sqlite(&["S"])),
        "Cannot apply --new-sqlite-class migration to class 'S' because it already exists.",
    );
    deploy_fails(
        &d,
        &v1.clone().migrate(tag("v2").new_classes(&["S"])),
        "Cannot apply --new-class migration to class 'S' because it already exists.",
    );
}

// ---------------------------------------------------------------------------------------------------------
// Tags

#[test]
fn redeploying_the_same_config_is_idempotent() {
    let config = script("app", &["A"]).bind("A", "A").migrate(tag("v1").new_classes(&["A"]));
    let d1 = deploy(&Deployments::default(), &config).deployments;
    let out = deploy(&d1, &config);
    assert_eq!(out.deployments, d1);
    assert!(out.deleted_namespaces.is_empty());
    // A code-only change (another binding name) needs no migration.
    let d2 = deploy(&d1, &config.clone().bind("A2", "A")).deployments;
    assert_eq!(d2.classes("app").collect::<Vec<_>>(), d1.classes("app").collect::<Vec<_>>());
}

#[test]
fn only_new_tags_apply() {
    let v1 = script("app", &["A", "B"]).migrate(tag("v1").new_classes(&["A"]));
    let d = deploy(&Deployments::default(), &v1).deployments;
    let v2 = v1.migrate(tag("v2").new_classes(&["B"]));
    let d = deploy(&d, &v2).deployments;
    assert_eq!(d.applied_tags("app"), ["v1", "v2"]);
    assert_eq!(d.classes("app").map(|(c, _)| c).collect::<Vec<_>>(), ["A", "B"]);
}

#[test]
fn duplicate_and_empty_tags_fail() {
    let config = script("app", &["A", "B"])
        .migrate(tag("v1").new_classes(&["A"]))
        .migrate(tag("v1").new_classes(&["B"]));
    deploy_fails(
        &Deployments::default(),
        &config,
        "Migration tag 'v1' appears more than once; migration tags must be unique.",
    );
    let config = script("app", &["A"]).migrate(tag("").new_classes(&["A"]));
    deploy_fails(&Deployments::default(), &config, "Migration tags must not be empty.");
}

#[test]
fn once_a_script_has_a_tag_every_deploy_needs_migrations() {
    let v1 = script("app", &["A"]).migrate(tag("v1").new_classes(&["A"]));
    let d = deploy(&Deployments::default(), &v1).deployments;
    deploy_fails(
        &d,
        &script("app", &["A"]),
        "Script 'app' has applied migration tag 'v1', so every later deploy must include its migrations.",
    );
}

#[test]
fn dropping_or_reordering_an_applied_tag_fails() {
    let v2 = script("app", &["A", "B", "C"])
        .migrate(tag("v1").new_classes(&["A"]))
        .migrate(tag("v2").new_classes(&["B"]));
    let d = deploy(&Deployments::default(), &v2).deployments;

    let dropped = script("app", &["A", "B", "C"])
        .migrate(tag("v1").new_classes(&["A"]))
        .migrate(tag("v3").new_classes(&["C"]));
    deploy_fails(
        &d,
        &dropped,
        "Migration tag 'v2' was applied to script 'app' as migration number 2, but the migrations list has tag 'v3' there. Applied migrations cannot be removed or reordered.",
    );
    let reordered = script("app", &["A", "B"])
        .migrate(tag("v2").new_classes(&["B"]))
        .migrate(tag("v1").new_classes(&["A"]));
    deploy_fails(
        &d,
        &reordered,
        "Migration tag 'v1' was applied to script 'app' as migration number 1, but the migrations list has tag 'v2' there. Applied migrations cannot be removed or reordered.",
    );
    let truncated = script("app", &["A"]).migrate(tag("v1").new_classes(&["A"]));
    deploy_fails(
        &d,
        &truncated,
        "Migration tag 'v2' was applied to script 'app' as migration number 2, but the migrations list has the end of the list there. Applied migrations cannot be removed or reordered.",
    );
}

#[test]
fn a_failing_migration_applies_none_of_the_deploy() {
    let config =
        script("app", &["A"]).migrate(tag("v1").new_classes(&["A"])).migrate(tag("v2").delete(&["Missing"]));
    deploy_fails(
        &Deployments::default(),
        &config,
        "Cannot apply --delete-class migration to class 'Missing' because it does not exist.",
    );
}

// ---------------------------------------------------------------------------------------------------------
// Renames

#[test]
fn rename_keeps_the_namespace_and_forwards_the_old_name() {
    let v1 = script("app", &["Old"]).bind("DO", "Old").migrate(tag("v1").new_sqlite(&["Old"]));
    let d = deploy(&Deployments::default(), &v1).deployments;
    // The binding may keep the old name: it forwards.
    let v2 = script("app", &["New"])
        .bind("DO", "Old")
        .migrate(tag("v1").new_sqlite(&["Old"]))
        .migrate(tag("v2").rename("Old", "New"));
    let d = deploy(&d, &v2).deployments;
    let moved = class(BackendKind::Sqlite, "app:Old:v1");
    assert_eq!(d.classes("app").collect::<Vec<_>>(), [("New", &moved)]);
    assert_eq!(d.resolve("app", "Old"), resolved("app", "New", moved.clone()));
    assert_eq!(d.resolve("app", "New"), resolved("app", "New", moved.clone()));

    // A second rename: the first old name follows (no chains).
    let v3 = v2.clone().migrate(tag("v3").rename("New", "Newer"));
    let v3 = ScriptConfig { exported_classes: strings(&["Newer"]), ..v3 };
    let d = deploy(&d, &v3).deployments;
    assert_eq!(d.resolve("app", "Old"), resolved("app", "Newer", moved.clone()));
    assert_eq!(d.resolve("app", "New"), resolved("app", "Newer", moved));
}

#[test]
fn rename_errors() {
    let v1 = script("app", &["A", "B"]).migrate(tag("v1").new_classes(&["A", "B"]));
    let d = deploy(&Deployments::default(), &v1).deployments;
    deploy_fails(
        &d,
        &v1.clone().migrate(tag("v2").rename("Missing", "C")),
        "Cannot apply --rename-class migration from class 'Missing' because script 'app' has no such class.",
    );
    deploy_fails(
        &d,
        &v1.clone().migrate(tag("v2").rename("A", "B")),
        "Cannot apply --rename-class migration to class 'B' because it already exists.",
    );
    deploy_fails(
        &d,
        &v1.clone().migrate(tag("v2").rename("A", "C")),
        "Cannot apply --rename-class migration to class 'C' because the new version of the script does not export it.",
    );
    // Creating the destination first does not help: it then exists.
    let mut exported = v1.clone();
    exported.exported_classes.push("C".into());
    deploy_fails(
        &d,
        &exported.migrate(tag("v2").new_classes(&["C"]).rename("A", "C")),
        "Cannot apply --rename-class migration to class 'C' because it already exists.",
    );
}

// ---------------------------------------------------------------------------------------------------------
// Transfers

#[test]
fn transfer_moves_a_class_and_its_data_between_scripts() {
    let src = script("src", &["Room"]).bind("ROOM", "Room").migrate(tag("v1").new_classes(&["Room"]));
    let d = deploy(&Deployments::default(), &src).deployments;
    // A third script binds the class in `src`.
    let user = script("user", &[]).bind_other("ROOM", "src", "Room");
    let d = deploy(&d, &user).deployments;

    let dst =
        script("dst", &["Chat"]).bind("CHAT", "Chat").migrate(tag("t1").transfer("src", "Room", "Chat"));
    let out = deploy(&d, &dst);
    assert!(out.deleted_namespaces.is_empty());
    let d = out.deployments;
    let moved = class(BackendKind::Kv, "src:Room:v1");
    assert_eq!(d.classes("src").count(), 0);
    assert_eq!(d.classes("dst").collect::<Vec<_>>(), [("Chat", &moved)]);
    // The old name forwards, for the source script and for others.
    assert_eq!(d.resolve("src", "Room"), resolved("dst", "Chat", moved.clone()));
    // Redeploying the user and the source script with their old bindings still works.
    deploy(&d, &user);
    deploy(&d, &src);

    // A rename in the destination carries the forward along.
    let dst2 = ScriptConfig { exported_classes: strings(&["Lobby"]), ..dst.clone() }
        .migrate(tag("t2").rename("Chat", "Lobby"));
    let dst2 = ScriptConfig { bindings: Vec::new(), ..dst2 };
    let d = deploy(&d, &dst2).deployments;
    assert_eq!(d.resolve("src", "Room"), resolved("dst", "Lobby", moved));
}

#[test]
fn transfer_errors() {
    let src = script("src", &["Room", "Hall"]).migrate(tag("v1").new_classes(&["Room", "Hall"]));
    let d = deploy(&Deployments::default(), &src).deployments;
    let dst = script("dst", &["Chat", "Hall"]).migrate(tag("v1").new_classes(&["Hall"]));
    let d = deploy(&d, &dst).deployments;
    deploy_fails(
        &d,
        &dst.clone().migrate(tag("t1").transfer("src", "Missing", "Chat")),
        "Cannot apply --transfer-class migration from class 'Missing' because script 'src' has no such class.",
    );
    deploy_fails(
        &d,
        &dst.clone().migrate(tag("t1").transfer("nowhere", "Room", "Chat")),
        "Cannot apply --transfer-class migration from class 'Room' because script 'nowhere' has no such class.",
    );
    deploy_fails(
        &d,
        &dst.clone().migrate(tag("t1").transfer("src", "Room", "Hall")),
        "Cannot apply --transfer-class migration to class 'Hall' because it already exists.",
    );
    deploy_fails(
        &d,
        &dst.clone().migrate(tag("t1").transfer("src", "Room", "Lobby")),
        "Cannot apply --transfer-class migration to class 'Lobby' because the new version of the script does not export it.",
    );
    deploy_fails(
        &d,
        &dst.clone().migrate(tag("t1").transfer("dst", "Hall", "Chat")),
        "Cannot apply --transfer-class migration from class 'Hall' of script 'dst' to the same script; use --rename-class instead.",
    );
}

// ---------------------------------------------------------------------------------------------------------
// Deletes

#[test]
fn delete_reports_the_namespace_and_removes_the_class() {
    let v1 =
        script("app", &["A", "B"]).bind("B", "B").migrate(tag("v1").new_classes(&["A"]).new_sqlite(&["B"]));
    let d = deploy(&Deployments::default(), &v1).deployments;
    let v2 = v1.migrate(tag("v2").delete(&["A"]));
    let out = deploy(&d, &v2);
    assert_eq!(out.deleted_namespaces, ["app:A:v1"]);
    let d = out.deployments;
    assert_eq!(d.resolve("app", "A"), None);
    assert_eq!(d.classes("app").map(|(c, _)| c).collect::<Vec<_>>(), ["B"]);
    // Redeploying reports nothing more.
    assert!(deploy(&d, &v2).deleted_namespaces.is_empty());
    // A class of the same name can be created again, with a new namespace (the data is gone).
    let v3 = v2.migrate(tag("v3").new_sqlite(&["A"]));
    let d = deploy(&d, &v3).deployments;
    assert_eq!(d.resolve("app", "A").unwrap().2, class(BackendKind::Sqlite, "app:A:v3"));
}

#[test]
fn delete_errors() {
    let v1 = script("app", &["A"]).bind("A", "A").migrate(tag("v1").new_classes(&["A"]));
    let d = deploy(&Deployments::default(), &v1).deployments;
    deploy_fails(
        &d,
        &v1.clone().migrate(tag("v2").delete(&["A"])),
        "Cannot apply --delete-class migration to class 'A' without also removing the binding that references it.",
    );
    deploy_fails(
        &d,
        &v1.clone().migrate(tag("v2").delete(&["Nope"])),
        "Cannot apply --delete-class migration to class 'Nope' because it does not exist.",
    );
}

#[test]
fn delete_of_a_class_bound_elsewhere_or_through_a_forward_fails() {
    let v1 = script("app", &["A", "B"]).migrate(tag("v1").new_classes(&["A"]));
    let d = deploy(&Deployments::default(), &v1).deployments;
    // Another script binds it.
    let user = script("user", &[]).bind_other("A", "app", "A");
    let d2 = deploy(&d, &user).deployments;
    deploy_fails(&d2, &v1.clone().migrate(tag("v2").delete(&["A"])), &messages::delete_bound_class("A"));
    // Once the other script drops its binding, the delete goes through.
    let d3 = deploy(&d2, &script("user", &[])).deployments;
    assert_eq!(deploy(&d3, &v1.clone().migrate(tag("v2").delete(&["A"]))).deleted_namespaces, ["app:A:v1"]);

    // A binding to the old name of a renamed class references it too.
    let v2 = v1.clone().bind("OLD", "A").migrate(tag("v2").rename("A", "B").delete(&["B"]));
    deploy_fails(&d, &v2, &messages::delete_bound_class("B"));
    // And a renamed class's old name cannot be deleted: it is not a class.
    let v2 = v1.migrate(tag("v2").rename("A", "B")).migrate(tag("v3").delete(&["A"]));
    deploy_fails(&d, &v2, &messages::delete_missing_class("A"));
}

// ---------------------------------------------------------------------------------------------------------
// Persistence

#[test]
fn deployments_round_trip_through_serde() {
    let src = script("src", &["Room", "Hall"])
        .bind("ROOM", "Room")
        .migrate(tag("v1").new_classes(&["Room"]).new_sqlite(&["Hall"]));
    let d = deploy(&Deployments::default(), &src).deployments;
    let dst = script("dst", &["Chat"])
        .bind_other("HALL", "src", "Hall")
        .migrate(tag("t1").transfer("src", "Room", "Chat"));
    let d = deploy(&d, &dst).deployments;

    let json = serde_json::to_string(&d).unwrap();
    let back: Deployments = serde_json::from_str(&json).unwrap();
    assert_eq!(back, d);
    let mut cbor = Vec::new();
    ciborium::into_writer(&d, &mut cbor).unwrap();
    let back: Deployments = ciborium::from_reader(cbor.as_slice()).unwrap();
    assert_eq!(back, d);
    // The restored state behaves the same: redeploys are idempotent.
    assert_eq!(deploy(&back, &src).deployments, d);
    assert_eq!(deploy(&back, &dst).deployments, d);
}
