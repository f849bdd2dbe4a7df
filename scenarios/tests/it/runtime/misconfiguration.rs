//! Misconfiguration is a clear error at build or start, naming what is wrong, not a crash after retries or an
//! internal error later: a class bound without a migration, and two hosts given one node's storage.

use std::rc::Rc;

use dosim_runtime::embed::HostBuilder;
use dosim_runtime::error::messages;
use dosim_runtime::prelude::*;
use dosim_scenarios::objects::Counter;
use dosim_scenarios::sim_host::{host_builder, host_node, on_node};
use dosim_sim::{ensure, sim_test, DiskConfig, Failure, FailureKind, Sim};

use crate::{sqlite_class, HOST};

/// `Counter` bound as `COUNTER`, but no migration creates it.
fn unmigrated() -> HostBuilder {
    host_builder("worker").class::<Counter>("Counter").binding("COUNTER", "Counter")
}

fn counter_host() -> HostBuilder {
    host_builder("worker")
        .class::<Counter>("Counter")
        .binding("COUNTER", "Counter")
        .migration(sqlite_class("v1", "Counter"))
}

sim_test!(fn a_class_bound_without_a_migration_is_refused_at_build(seed) {
    Sim::builder().seed(seed).nodes(1).disk(DiskConfig::default()).build()?.run(|world| async move {
        let refused = on_node(&world, HOST, || async { unmigrated().build().err() }).await?;
        let e = refused.ok_or_else(|| Failure::new("a host whose binding names an unmigrated class builds"))?;
        ensure!(
            e.message() == messages::binding_to_unconfigured_class("Counter"),
            "the build names the class: {}",
            e.message()
        );
        ensure!(!e.retryable(), "a misconfiguration is not retryable: {e:?}");
        Ok(())
    })
});

/// A host node whose script binds an unmigrated class fails at its first start, with the runtime's message,
/// and is not retried as if the disk had failed (it used to retry 100 times and then report a panic).
#[test]
fn a_host_node_with_an_unmigrated_class_fails_at_once_naming_it() {
    let (node, host) = host_node(HOST, "host", unmigrated);
    let run = Sim::builder().node(node).disk(DiskConfig::default()).build().expect("a valid world").run(
        move |_world| async move {
            let _ = host.run(|_env| async {}).await;
            Ok(())
        },
    );
    let failure = run.expect_err("the host cannot start");
    let FailureKind::Panic(message) = &failure.kind else { panic!("a start failure is a panic: {failure}") };
    assert!(
        message.contains(&messages::binding_to_unconfigured_class("Counter")),
        "the failure names the class: {message}"
    );
    assert!(message.contains("not retried"), "a configuration error is not retried: {message}");
}

sim_test!(fn two_hosts_on_one_nodes_storage_are_refused_naming_the_database(seed) {
    Sim::builder().seed(seed).nodes(1).disk(DiskConfig::default()).build()?.run(|world| async move {
        let (second, served, after) = on_node(&world, HOST, || async {
            let first = counter_host().build().expect("the first host builds");
            let stub = Rc::new(first.env().durable_object("COUNTER").unwrap().get_by_name("c"));
            stub.fetch(Request::get("/increment")).await.expect("the first host serves");
            let second = counter_host().build().err();
            // The refused host took nothing from the first one.
            let served = stub.fetch(Request::get("/increment")).await.expect("still serves").text().unwrap();
            drop(stub);
            drop(first);
            // Once the first host is gone, its storage is free for a new one, with the data.
            let third = counter_host().build().expect("a host builds once the storage is free");
            let stub = third.env().durable_object("COUNTER").unwrap().get_by_name("c");
            let after = stub.fetch(Request::get("/")).await.expect("the new host serves").text().unwrap();
            (second, served, after)
        })
        .await?;
        let e = second.ok_or_else(|| Failure::new("a second host on the same storage builds"))?;
        ensure!(
            e.message().contains("host/alarms.db") && e.message().contains("in use by another connection"),
            "the error names the database and the cause: {}",
            e.message()
        );
        ensure!(!e.retryable(), "two hosts on one storage is a misconfiguration, not retryable: {e:?}");
        ensure!(served == "2", "the first host keeps serving: {served}");
        ensure!(after == "2", "the next host sees the data: {after}");
        Ok(())
    })
});
