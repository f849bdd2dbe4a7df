//! The directory on madsim's simulated etcd (spec §7): claims are exclusive and their epochs grow; a host cut
//! off from the directory stops believing in its lease before another host can own its objects; bad input
//! (a malformed record, an unreachable directory) gives a clear error. Also the one known difference between
//! the simulated etcd and a real one that the directory's design avoids.
//!
//! Nodes: 0 runs the simulated etcd; 1..=3 are hosts. Faults: partitions of a host from the etcd node (the
//! host → directory hop), counted by the world's fault counters and seen as failed renewals.

use std::rc::Rc;
use std::time::Duration;

use dosim_runtime::embed::{Claim, CoordTxn, Coordinator, Directory, HostLease, LEASE_TTL_S};
use dosim_runtime::error::messages;
use dosim_runtime::prelude::*;
use dosim_scenarios::cluster::etcd::{etcd_addr, etcd_node, EtcdCoordinator};
use dosim_scenarios::objects::Counter;
use dosim_scenarios::sim_host::on_node;
use dosim_sim::{ensure, sim_test, Direction, FaultKind, NodeConfig, NodeId, Sim, World};

use crate::sqlite_class;

const ETCD: NodeId = NodeId(0);
const HOSTS: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];
/// The namespace the claims are made in (any uid; the directory does not interpret it).
const NS: &str = "worker:Counter";

fn sim(seed: dosim_sim::Seed) -> Result<Sim, dosim_sim::RunFailure> {
    let mut b = Sim::builder().seed(seed).node(etcd_node(ETCD, "etcd"));
    for (i, _) in HOSTS.iter().enumerate() {
        b = b.node(NodeConfig::new(format!("host-{}", i + 1)));
    }
    Ok(b.build()?)
}

/// `n` object ids of the `Counter` class, by name (the same on every node: ids depend only on the script,
/// the class and the name).
fn ids(n: usize) -> Vec<ObjectId> {
    let host = dosim_scenarios::sim_host::host_builder("worker")
        .class::<Counter>("Counter")
        .binding("COUNTER", "Counter")
        .migration(sqlite_class("v1", "Counter"))
        .build()
        .expect("the host builds");
    let ns = host.env().durable_object("COUNTER").expect("bound");
    (0..n).map(|i| ns.id_from_name(&format!("object-{i}"))).collect()
}

async fn store() -> Rc<EtcdCoordinator> {
    Rc::new(EtcdCoordinator::new(etcd_addr(ETCD)))
}

fn host_name(node: NodeId) -> String {
    format!("host-{}", node.0)
}

/// When the hosts of a test race: well after they have all joined.
const RACE_AT: Duration = Duration::from_secs(3);

/// Every host joins and claims every id, all starting at [`RACE_AT`]; the claims each host got.
async fn claim_all(world: &World, n: usize) -> Result<Vec<Vec<Claim>>, dosim_sim::Failure> {
    let race = madsim::time::Instant::now() + RACE_AT;
    let runs = HOSTS.map(|node| {
        let world = world.clone();
        async move {
            on_node(&world, node, move || async move {
                let lease = HostLease::join(store().await, &host_name(node)).await.expect("the host joins");
                madsim::time::sleep_until(race).await;
                let mut claims = Vec::new();
                for id in ids(n) {
                    claims.push(lease.claim(NS, &id).await.expect("the directory answers"));
                }
                // Keep the lease (and its records) until every host has claimed.
                madsim::time::sleep(Duration::from_secs(1)).await;
                claims
            })
            .await
        }
    });
    let [a, b, c] = runs;
    let (a, b, c) = madsim_tokio::join!(a, b, c);
    Ok(vec![a?, b?, c?])
}

/// The exclusivity check: for each object, exactly one host owns it, and every other host was told that
/// owner and its epoch. Epochs differ between objects (each is a store revision).
fn check_exclusive(claims: &[Vec<Claim>]) -> Result<Vec<i64>, String> {
    let n = claims[0].len();
    let mut epochs = Vec::new();
    for obj in 0..n {
        let owners: Vec<(usize, i64)> = claims
            .iter()
            .enumerate()
            .filter_map(|(h, c)| match &c[obj] {
                Claim::Owned { epoch } => Some((h, *epoch)),
                Claim::OwnedBy(_) => None,
            })
            .collect();
        let [(owner, epoch)] = owners[..] else {
            return Err(format!("object {obj}: owned by {} hosts: {owners:?}", owners.len()));
        };
        for (h, c) in claims.iter().enumerate() {
            if let Claim::OwnedBy(o) = &c[obj] {
                if o.host != host_name(HOSTS[owner]) || o.epoch != epoch {
                    return Err(format!(
                        "object {obj}: host {h} was told {o:?}, but host {owner} owns it in epoch {epoch}"
                    ));
                }
            }
        }
        epochs.push(epoch);
    }
    let mut sorted = epochs.clone();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != epochs.len() {
        return Err(format!("two objects share an epoch: {epochs:?}"));
    }
    Ok(epochs)
}

sim_test!(fn claims_are_exclusive_and_epochs_differ(seed) {
    sim(seed)?.run(|world| async move {
        let claims = claim_all(&world, 16).await?;
        let epochs = check_exclusive(&claims).map_err(dosim_sim::Failure::new)?;
        ensure!(epochs.iter().all(|e| *e > 0), "epochs are store revisions: {epochs:?}");
        let owned_per_host: Vec<usize> =
            claims.iter().map(|c| c.iter().filter(|c| matches!(c, Claim::Owned { .. })).count()).collect();
        ensure!(owned_per_host.iter().sum::<usize>() == 16, "{owned_per_host:?}");
        Ok(())
    })
});

// Negative control of the exclusivity check: claims that skip the directory's transaction (a plain put of
// the owner record, no compare: a directory without fencing) give two owners, and the check says so.
sim_test!(fn negative_control_claims_without_the_compare_are_caught(seed) {
    sim(seed)?.run(|world| async move {
        let race = madsim::time::Instant::now() + RACE_AT;
        let runs = HOSTS.map(|node| {
            let world = world.clone();
            async move {
                on_node(&world, node, move || async move {
                    let store = store().await;
                    let lease = HostLease::join(store.clone(), &host_name(node)).await.expect("joins");
                    let id = ids(1).remove(0);
                    madsim::time::sleep_until(race).await;
                    // The unfenced claim: read, and if there is no owner, write one.
                    let key = format!("dosim/owner/{NS}/{id}");
                    let claim = match store.get(key.clone()).await.expect("get") {
                        Some(r) => Claim::OwnedBy(dosim_runtime::embed::Owner {
                            host: String::from_utf8_lossy(&r.value).split('|').next().unwrap().to_string(),
                            lease: 0,
                            epoch: r.mod_revision,
                        }),
                        None => {
                            let value = format!("{}|{:016x}", host_name(node), lease.lease()).into_bytes();
                            let epoch = store.put(key, value, Some(lease.lease())).await.expect("put");
                            Claim::Owned { epoch }
                        }
                    };
                    madsim::time::sleep(Duration::from_secs(1)).await;
                    vec![claim]
                })
                .await
            }
        });
        let [a, b, c] = runs;
        let (a, b, c) = madsim_tokio::join!(a, b, c);
        let claims = vec![a?, b?, c?];
        match check_exclusive(&claims) {
            Err(e) => {
                ensure!(e.contains("owned by") || e.contains("was told"), "{e}");
                Ok(())
            }
            Ok(_) => Err(dosim_sim::Failure::new(format!(
                "the hosts joined and read at the same moment, yet the unfenced claims found one owner: {claims:?}"
            ))),
        }
    })
});

sim_test!(fn a_host_cut_off_from_the_directory_stops_before_another_owns(seed) {
    let report = sim(seed)?.run(|world| async move {
        let [a, b, _] = HOSTS;
        // A owns the object, then waits while the controller cuts it off from the directory.
        let (tx, rx) = madsim_tokio::sync::oneshot::channel::<()>();
        let owner = world.clone();
        let run_a = madsim::task::spawn(async move {
            on_node(&owner, a, move || async move {
                let lease = HostLease::join(store().await, &host_name(a)).await.expect("joins");
                let id_a = ids(1).remove(0);
                let Claim::Owned { epoch } = lease.claim(NS, &id_a).await.expect("claims") else {
                    panic!("the first claim of a fresh object owns it")
                };
                let _ = rx.await;
                // Cut off: its belief must lapse within the lease TTL.
                let cut = madsim::time::Instant::now();
                while lease.is_valid() {
                    madsim::time::sleep(Duration::from_millis(10)).await;
                }
                let lapsed_at = madsim::time::Instant::now();
                let refused = lease.claim(NS, &id_a).await.unwrap_err();
                (epoch, lapsed_at - cut, lapsed_at, refused.message().to_string(), refused.retryable())
            })
            .await
        });
        madsim::time::sleep(Duration::from_secs(2)).await;
        world.partition(&[a], &[ETCD], Direction::Both)?;
        let _ = tx.send(());
        // B claims the object until it owns it.
        let (epoch_b, owned_at) = on_node(&world, b, move || async move {
            let lease = HostLease::join(store().await, &host_name(b)).await.expect("joins");
            let id_b = ids(1).remove(0);
            loop {
                match lease.claim(NS, &id_b).await.expect("the directory answers B") {
                    Claim::Owned { epoch } => return (epoch, madsim::time::Instant::now()),
                    Claim::OwnedBy(o) => {
                        assert_eq!(o.host, host_name(a), "only A owned it");
                        madsim::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
        .await?;
        let (epoch_a, lapse, lapsed_at, message, retryable) =
            run_a.await.map_err(|e| dosim_sim::Failure::new(format!("A's task: {e}")))??;
        ensure!(lapse <= Duration::from_secs(LEASE_TTL_S as u64), "A's belief lapsed within the TTL: {lapse:?}");
        ensure!(lapsed_at < owned_at, "A stopped believing ({lapsed_at:?}) before B owned ({owned_at:?})");
        ensure!(epoch_b > epoch_a, "a later owner has a larger epoch: {epoch_a} then {epoch_b}");
        ensure!(message == messages::NETWORK_CONNECTION_LOST && retryable, "A's claim: {message} {retryable}");
        Ok(())
    })?;
    assert_eq!(report.faults.get(FaultKind::Partition), 1, "one partition, host A from the directory ({seed})");
    Ok(report)
});

sim_test!(fn an_unreachable_directory_is_a_retryable_network_error(seed) {
    sim(seed)?.run(|world| async move {
        let a = HOSTS[0];
        world.partition(&[a], &[ETCD], Direction::Both)?;
        let (message, retryable, waited) = on_node(&world, a, move || async move {
            let directory = Directory::new(store().await);
            let start = madsim::time::Instant::now();
            let e = directory.owner(NS, &ids(1)[0]).await.unwrap_err();
            (e.message().to_string(), e.retryable(), start.elapsed())
        })
        .await?;
        ensure!(message == messages::NETWORK_CONNECTION_LOST && retryable, "{message} {retryable}");
        ensure!(waited <= Duration::from_secs(2), "the caller is not kept waiting: {waited:?}");
        Ok(())
    })
});

sim_test!(fn a_malformed_owner_record_is_a_clear_error_and_harms_nothing_else(seed) {
    sim(seed)?.run(|world| async move {
        let a = HOSTS[0];
        let (lookup, claim, other) = on_node(&world, a, move || async move {
            let store = store().await;
            let lease = HostLease::join(store.clone(), &host_name(a)).await.expect("joins");
            let ids = ids(2);
            store.put(format!("dosim/owner/{NS}/{}", ids[0]), b"no separator".to_vec(), None).await.unwrap();
            let lookup = Directory::new(store.clone()).owner(NS, &ids[0]).await.unwrap_err();
            let claim = lease.claim(NS, &ids[0]).await.unwrap_err();
            let other = lease.claim(NS, &ids[1]).await.unwrap();
            (lookup.message().to_string(), claim.message().to_string(), other)
        })
        .await?;
        for m in [&lookup, &claim] {
            ensure!(m.contains("directory record dosim/owner/") && m.contains("is malformed"), "{m}");
        }
        ensure!(matches!(other, Claim::Owned { .. }), "another object is claimed normally: {other:?}");
        Ok(())
    })
});

// The simulated etcd and a real one differ on a compare against a missing key: a `NotEqual` compare on a
// missing key succeeds in the simulator (real etcd fails every compare on a missing key). The directory
// issues only `Equal` compares (`CoordTxn::if_equal`), on which both agree: this test pins both facts, so a
// change in the simulator is noticed.
sim_test!(fn the_simulator_differs_from_etcd_only_where_the_directory_does_not_go(seed) {
    sim(seed)?.run(|world| async move {
        let (not_equal, equal) = on_node(&world, HOSTS[0], || async {
            use madsim_etcd_client::{Compare, CompareOp, Txn, TxnOp};
            let store = store().await;
            let mut kv = store.client().await.expect("connects").kv_client();
            let txn = Txn::new()
                .when([Compare::value("missing", CompareOp::NotEqual, "x")])
                .and_then([TxnOp::put("witness", "1", None)]);
            let not_equal = kv.txn(txn).await.unwrap().succeeded();
            let equal = store
                .txn(CoordTxn {
                    if_equal: vec![("missing".into(), b"x".to_vec())],
                    puts: vec![("witness2".into(), b"1".to_vec(), None)],
                    deletes: vec![],
                })
                .await
                .unwrap();
            (not_equal, equal)
        })
        .await?;
        ensure!(not_equal, "the simulator's NotEqual on a missing key succeeds (real etcd: fails)");
        ensure!(equal.is_none(), "an Equal compare on a missing key fails, as in real etcd: {equal:?}");
        Ok(())
    })
});
