//! Calls between nodes on the world's fabric (`RpcNode` over `SimTransport`): under loss, duplication and
//! reordering of the client ↔ server hop, a call's handler runs at most once, every call that got a response
//! ran exactly once and got its own response, and a lost message is `Network connection lost.`
//! (retryable). The negative control serves without deduplication, and a duplicated request then runs twice.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use dosim_runtime::embed::RpcNode;
use dosim_runtime::error::messages;
use dosim_scenarios::cluster::transport::{addr_of, SimTransport, CLUSTER_PORT};
use dosim_scenarios::sim_host::on_node;
use dosim_sim::net::NetConfig;
use dosim_sim::{ensure, sim_test, FaultKind, LatencyRange, NodeId, Ratio, RunReport, Sim};

const SERVER: NodeId = NodeId(0);
const CLIENT: NodeId = NodeId(1);
const CALLS: u64 = 150;
const TIMEOUT: Duration = Duration::from_millis(300);

/// A hostile client ↔ server hop: a tenth of messages lost, a quarter duplicated, a quarter reordered.
fn hostile() -> NetConfig {
    NetConfig {
        latency: LatencyRange::new(Duration::from_millis(1), Duration::from_millis(10)),
        loss: Ratio::new(1, 10),
        duplicate: Ratio::new(1, 4),
        reorder: Ratio::new(1, 4),
        reorder_delay: Duration::from_millis(40),
    }
}

/// What one run saw: how often the server ran each call, and what the client got for each.
struct Outcome {
    runs: BTreeMap<u64, u32>,
    answers: Vec<Result<u64, (String, bool)>>,
}

/// Runs the calls, with or without deduplication, and checks what was seen with `check`.
fn run(
    seed: dosim_sim::Seed,
    dedup: bool,
    check: fn(&Outcome) -> Result<(), dosim_sim::Failure>,
) -> Result<RunReport, dosim_sim::RunFailure> {
    let sim = Sim::builder().seed(seed).nodes(2).network(hostile()).build()?;
    sim.run(move |world| async move {
        let server = on_node(&world, SERVER, move || async move {
            let transport = Rc::new(SimTransport::bind(CLUSTER_PORT).expect("binds"));
            let rpc =
                if dedup { RpcNode::start(transport, 1) } else { RpcNode::start_at_least_once(transport, 1) };
            let runs = Rc::new(RefCell::new(BTreeMap::<u64, u32>::new()));
            let seen = runs.clone();
            rpc.serve(Rc::new(move |_from, body| {
                let seen = seen.clone();
                Box::pin(async move {
                    let n = u64::from_be_bytes(body[..8].try_into().expect("8 bytes"));
                    *seen.borrow_mut().entry(n).or_default() += 1;
                    // Long enough that duplicates arrive while the call is in progress, and after.
                    madsim::time::sleep(Duration::from_millis(5)).await;
                    (n * 2).to_be_bytes().to_vec()
                })
            }));
            madsim::time::sleep(TIMEOUT * (CALLS as u32 + 10)).await;
            drop(rpc);
            runs.take()
        });
        let client = on_node(&world, CLIENT, move || async move {
            let transport = Rc::new(SimTransport::bind(CLUSTER_PORT).expect("binds"));
            let rpc = RpcNode::start(transport, 2);
            let to = addr_of(SERVER, CLUSTER_PORT);
            let mut answers = Vec::new();
            for n in 0..CALLS {
                let answer = match rpc.call(&to, n.to_be_bytes().to_vec(), TIMEOUT).await {
                    Ok(body) => Ok(u64::from_be_bytes(body[..8].try_into().expect("8 bytes"))),
                    Err(e) => Err((e.message().to_string(), e.retryable())),
                };
                answers.push(answer);
            }
            answers
        });
        let (runs, answers) = madsim_tokio::join!(server, client);
        check(&Outcome { runs: runs?, answers: answers? })
    })
}

fn at_most_once(o: &Outcome) -> Result<(), dosim_sim::Failure> {
    for (n, count) in &o.runs {
        ensure!(*count == 1, "call {n} ran {count} times");
    }
    let mut answered = 0;
    for (n, answer) in o.answers.iter().enumerate() {
        let n = n as u64;
        match answer {
            Ok(v) => {
                answered += 1;
                ensure!(*v == n * 2, "call {n} got another call's response: {v}");
                ensure!(o.runs.get(&n) == Some(&1), "call {n} was answered, so it ran once");
            }
            Err((message, retryable)) => {
                ensure!(message == messages::NETWORK_CONNECTION_LOST && *retryable, "call {n}: {message}");
            }
        }
    }
    ensure!(answered as u64 > CALLS / 2, "only {answered} of {CALLS} calls answered");
    ensure!(answered < CALLS as usize, "a tenth of messages are lost, yet every call was answered");
    Ok(())
}

sim_test!(fn a_duplicated_or_reordered_call_runs_at_most_once(seed) {
    let report = run(seed, true, at_most_once)?;
    // The faults reached the client <-> server hop.
    for kind in [FaultKind::MessageDuplicate, FaultKind::MessageLoss, FaultKind::MessageReorder] {
        assert!(report.faults.get(kind) > 0, "no {kind} ({seed}): {}", report.faults);
    }
    Ok(report)
});

sim_test!(fn negative_control_without_deduplication_a_duplicate_runs_twice(seed) {
    run(seed, false, |o| {
        let twice = o.runs.values().filter(|c| **c > 1).count();
        ensure!(twice > 0, "with a quarter of requests duplicated and no deduplication, no call ran twice");
        Ok(())
    })
});
