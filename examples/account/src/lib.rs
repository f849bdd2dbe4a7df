//! A bank account as a Durable Object: deposits, withdrawals that never overdraw, and the balance. The
//! balance lives in the object's SQLite-backed storage.

use dosim::prelude::*;

/// What a withdrawal that would overdraw fails with.
pub const INSUFFICIENT_FUNDS: &str = "insufficient funds";

/// The account.
pub struct Account {
    state: State,
}

impl Account {
    async fn balance(&self) -> Result<i64, Error> {
        Ok(self.state.storage().get::<i64>("balance").await?.unwrap_or(0))
    }
}

impl DurableObject for Account {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        Ok(Account { state })
    }

    fn handlers(h: &mut Handlers<Self>) {
        h.rpc("deposit", async |a: &Account, amount: i64| {
            let balance = a.balance().await? + amount;
            a.state.storage().put("balance", &balance).await?;
            Ok(balance)
        });
        h.rpc("withdraw", async |a: &Account, amount: i64| {
            let balance = a.balance().await?;
            if amount > balance {
                return Err(Error::new(INSUFFICIENT_FUNDS));
            }
            a.state.storage().put("balance", &(balance - amount)).await?;
            Ok(balance - amount)
        });
        h.rpc("balance", async |a: &Account, (): ()| a.balance().await);
    }
}
