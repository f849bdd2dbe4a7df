//! Ids through namespaces (spec §8) and migrations through deploys (spec §9): stable `id_from_name`, no
//! collision across namespaces or jurisdictions, the exact errors, and a rename that keeps the data.

use dosim_runtime::embed::{Deployments, Migration, RenamedClass};
use dosim_runtime::error::messages;
use dosim_runtime::prelude::*;
use dosim_scenarios::objects::Counter;
use dosim_scenarios::sim_host::{host_builder, on_node};
use dosim_sim::{ensure, sim_test, DiskConfig, Sim};

use crate::{sqlite_class, HOST};

fn sim(seed: dosim_sim::Seed) -> Result<Sim, dosim_sim::RunFailure> {
    Ok(Sim::builder().seed(seed).nodes(1).disk(DiskConfig::default()).build()?)
}

fn two_counters() -> dosim_runtime::embed::HostBuilder {
    host_builder("worker")
        .class::<Counter>("A")
        .class::<Counter>("B")
        .binding("A", "A")
        .binding("B", "B")
        .migration(sqlite_class("v1", "A"))
        .migration(sqlite_class("v2", "B"))
}

fn err(e: Error) -> (String, String) {
    (format!("{:?}", e.kind()), e.message().to_string())
}

sim_test!(fn ids_are_stable_per_namespace_and_never_shared(seed) {
    sim(seed)?.run(|world| async move {
        let checks = on_node(&world, HOST, || async {
            let a1 = two_counters().build().unwrap();
            let (a, b) = (a1.env().durable_object("A").unwrap(), a1.env().durable_object("B").unwrap());
            let id = a.id_from_name("alice");
            let eu = a.jurisdiction("eu").unwrap();
            let eu_id = eu.id_from_name("alice");
            let (u1, u2) = (a.new_unique_id().unwrap(), a.new_unique_id().unwrap());
            let from_other = b.id_from_name("alice");
            let parsed = a.id_from_string(&id.to_string()).unwrap();
            let top_level_takes_eu = a.get(&eu_id).is_ok();
            // A second host with the same deployment (say, after a restart) derives the same id.
            drop(a1);
            let again = two_counters().build().unwrap().env().durable_object("A").unwrap().id_from_name("alice");
            vec![
                ("stable", id == again && id.to_string() == again.to_string()),
                ("name kept", id.name() == Some("alice")),
                ("64 hex", id.to_string().len() == 64 && id.to_string().chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())),
                ("other namespace differs", from_other != id),
                ("other jurisdiction differs", eu_id != id && eu_id.jurisdiction().is_some()),
                ("round trip", parsed == id),
                ("parsed has no name", parsed.name().is_none()),
                ("unique ids differ", u1 != u2 && u1.name().is_none()),
                ("top level takes a jurisdiction's id", top_level_takes_eu),
            ]
        })
        .await?;
        for (what, ok) in checks {
            ensure!(ok, "{what}");
        }
        Ok(())
    })
});

sim_test!(fn id_and_get_errors_are_exact(seed) {
    sim(seed)?.run(|world| async move {
        let got = on_node(&world, HOST, || async {
            let host = two_counters().build().unwrap();
            let (a, b) = (host.env().durable_object("A").unwrap(), host.env().durable_object("B").unwrap());
            let eu = a.jurisdiction("eu").unwrap();
            let routing = StubOptions { routing_mode: Some("nearest".into()), ..StubOptions::default() };
            vec![
                err(a.id_from_string("abc").unwrap_err()),
                err(a.id_from_string(&"g".repeat(64)).unwrap_err()),
                err(a.id_from_string(&b.id_from_name("x").to_string()).unwrap_err()),
                err(eu.get(&a.id_from_name("x")).unwrap_err()),
                err(a.get_with(&a.id_from_name("x"), &routing).unwrap_err()),
                err(host.env().durable_object("NOPE").unwrap_err()),
            ]
        })
        .await?;
        let expected = [
            ("TypeError", messages::INVALID_OBJECT_ID.to_string()),
            ("TypeError", messages::INVALID_OBJECT_ID.to_string()),
            ("TypeError", messages::OBJECT_ID_NOT_FOR_NAMESPACE.to_string()),
            ("TypeError", messages::JURISDICTION_MISMATCH.to_string()),
            ("RangeError", "unknown routingMode: nearest".to_string()),
            ("Error", "Binding 'NOPE' is undefined.".to_string()),
        ];
        for (g, (kind, message)) in got.iter().zip(expected) {
            ensure!(g.0 == kind && g.1 == message, "expected {kind}: {message}; got {g:?}");
        }
        Ok(())
    })
});

sim_test!(fn a_rename_keeps_the_data(seed) {
    sim(seed)?.run(|world| async move {
        let (before, after, old_binding) = on_node(&world, HOST, || async {
            let v1 = host_builder("worker")
                .class::<Counter>("Counter")
                .binding("COUNTER", "Counter")
                .migration(sqlite_class("v1", "Counter"))
                .build()
                .unwrap();
            let stub = v1.env().durable_object("COUNTER").unwrap().get_by_name("c");
            for _ in 0..3 {
                stub.fetch(Request::get("/increment")).await.unwrap();
            }
            let before = stub.fetch(Request::get("/")).await.unwrap().text().unwrap();
            let deployed: Deployments = v1.deployments().clone();
            drop(v1);
            let rename = Migration {
                tag: "v2".into(),
                renamed_classes: vec![RenamedClass { from: "Counter".into(), to: "Tally".into() }],
                ..Migration::default()
            };
            let v2 = host_builder("worker")
                .class::<Counter>("Tally")
                .binding("TALLY", "Tally")
                .migration(sqlite_class("v1", "Counter"))
                .migration(rename)
                .deployments(deployed.clone())
                .build()
                .unwrap();
            let after = v2.env().durable_object("TALLY").unwrap().get_by_name("c").fetch(Request::get("/")).await.unwrap().text().unwrap();
            // The old name no longer exists as a class of its own: binding to it follows the rename.
            let old = host_builder("worker")
                .class::<Counter>("Tally")
                .binding("COUNTER", "Counter")
                .migration(sqlite_class("v1", "Counter"))
                .deployments(deployed)
                .build()
                .map(|_| ())
                .map_err(|e| e.message().to_string());
            (before, after, old)
        })
        .await?;
        ensure!(before == "3" && after == "3", "the renamed class keeps its objects' data: {before} then {after}");
        ensure!(old_binding.is_err(), "a deploy without the rename's class fails: {old_binding:?}");
        Ok(())
    })
});

sim_test!(fn deploy_errors_are_exact(seed) {
    sim(seed)?.run(|world| async move {
        let (unconfigured, delete_bound) = on_node(&world, HOST, || async {
            let unconfigured = host_builder("worker")
                .class::<Counter>("Counter")
                .binding("COUNTER", "Counter")
                .build()
                .unwrap_err();
            let delete = Migration { tag: "v2".into(), deleted_classes: vec!["Counter".into()], ..Migration::default() };
            let delete_bound = host_builder("worker")
                .class::<Counter>("Counter")
                .binding("COUNTER", "Counter")
                .migration(sqlite_class("v1", "Counter"))
                .migration(delete)
                .build()
                .unwrap_err();
            (unconfigured.message().to_string(), delete_bound.message().to_string())
        })
        .await?;
        ensure!(unconfigured == messages::binding_to_unconfigured_class("Counter"), "{unconfigured}");
        ensure!(delete_bound == messages::delete_bound_class("Counter"), "{delete_bound}");
        Ok(())
    })
});
