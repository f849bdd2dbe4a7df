//! The account under dosim's simulation: its operations are linearizable against a model of an account,
//! no acknowledged deposit is lost, and the balance is never negative, under host crashes, power cuts and
//! evictions. Run with `cargo simtest` (the test kit needs `--cfg madsim`).
#![cfg(madsim)]

use account::{Account, INSUFFICIENT_FUNDS};
use dosim::prelude::{Error, Stub};
use dosim::testing::*;

/// An operation on the account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Deposit(i64),
    Withdraw(i64),
    Balance,
}

/// What it answers: the balance after it, or a refused withdrawal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Answer {
    Balance(i64),
    Insufficient,
}

/// How clients call the account.
#[derive(Clone, Copy, Debug)]
struct Calls;

impl Driver for Calls {
    type Input = Op;
    type Output = Answer;

    fn next_op(&self, rng: &mut SimRng) -> Op {
        match rng.below(3) {
            0 => Op::Deposit(rng.between(1, 50) as i64),
            1 => Op::Withdraw(rng.between(1, 80) as i64),
            _ => Op::Balance,
        }
    }

    fn final_reads(&self) -> Vec<Op> {
        vec![Op::Balance]
    }

    async fn call(&self, stub: &Stub, op: Op) -> Result<Answer, Error> {
        let answer = match op {
            Op::Deposit(n) => stub.call("deposit", &n).await,
            Op::Withdraw(n) => stub.call("withdraw", &n).await,
            Op::Balance => stub.call("balance", &()).await,
        };
        match answer {
            Ok(b) => Ok(Answer::Balance(b)),
            // The account's own refusal is an answer, not a failure.
            Err(e) if e.message() == INSUFFICIENT_FUNDS => Ok(Answer::Insufficient),
            Err(e) => Err(e),
        }
    }
}

/// The account's sequential specification.
#[derive(Clone, Copy, Debug)]
struct AccountModel;

impl Model for AccountModel {
    type Input = Op;
    type Output = Answer;
    type State = i64;

    fn init(&self) -> i64 {
        0
    }

    fn apply(&self, balance: &i64, op: &Op) -> (i64, Answer) {
        match *op {
            Op::Deposit(n) => (balance + n, Answer::Balance(balance + n)),
            Op::Withdraw(n) if n > *balance => (*balance, Answer::Insufficient),
            Op::Withdraw(n) => (balance - n, Answer::Balance(balance - n)),
            Op::Balance => (*balance, Answer::Balance(*balance)),
        }
    }
}

// The whole test: the class, a workload, faults, the checks, 8 seeds.
sim_test!(seeds = 8, fn the_account_survives_crashes_power_cuts_and_evictions(seed) {
    ObjectTest::new(seed)
        .class::<Account>("ACCOUNT")
        .workload(Workload::new("ACCOUNT", Calls))
        .faults(FaultMix::host().with(FaultKind::Eviction))
        .check(Linearizable(AccountModel))
        .check(NoLostWrites::new(AccountModel, |op| matches!(op, Op::Balance)))
        .invariant::<Account>("the balance is never negative", async |_, state| {
            match state.storage().get::<i64>("balance").await {
                Ok(b) if b.unwrap_or(0) < 0 => Err(format!("balance {b:?}")),
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        })
        .run()
});

// The same account in the built-in code-update scenario, on a cluster's worth of faults.
sim_test!(seeds = 4, fn the_account_survives_code_updates(seed) {
    ObjectTest::new(seed)
        .class::<Account>("ACCOUNT")
        .workload(Workload::new("ACCOUNT", Calls).objects(["alice", "bob"]))
        .scenario(Scenario::CodeUpdate)
        .check(Linearizable(AccountModel))
        .run()
});

// A host test, as with Cloudflare's Vitest pool: look inside the instance.
sim_test!(fn a_deposit_is_in_storage(seed) {
    ObjectTest::host(seed).class::<Account>("ACCOUNT").run_on_host(async |host| {
        let ns = host.env().durable_object("ACCOUNT")?;
        let balance: i64 = ns.get_by_name("alice").call("deposit", &25i64).await?;
        ensure!(balance == 25, "the deposit answers the new balance: {balance}");
        let id = ns.id_from_name("alice");
        let stored = host
            .run_in_object::<Account, _>("ACCOUNT", &id, async |_, state| state.storage().get::<i64>("balance").await)
            .await??;
        ensure!(stored == Some(25), "stored {stored:?}");
        Ok(())
    })
});
