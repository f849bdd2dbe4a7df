//! The dosim object runtime: production code that runs Durable Objects.
//!
//! The runtime knows nothing of seeds, faults or scenarios. It reaches time, tasks and the network through
//! madsim-tokio (simulated under `cfg(madsim)`), and its databases through the storage interface it owns
//! ([`storage`], [`StorageProvider`]), behind which the simulated disk or a real file sits.
//!
//! A user writes a [`DurableObject`]; a [`Host`] runs its instances. Code reaches objects through an
//! [`Env`]'s [`ObjectNamespace`]s and their [`Stub`]s. Inside, an object has its [`State`]: id, [`Storage`],
//! `block_concurrency_while`, `wait_until`, `abort`, time and randomness. The [`prelude`] has all of these.
//!
//! Modules, by concern:
//! - the user's API: [`object`], [`state`], [`env`](mod@env), [`namespace`], [`http`], [`id`];
//! - running objects: [`host`] (containers, routing, the alarm scheduler), [`gate`] (input and output
//!   gates), [`alarm`] (the retry policy and the scheduler's index), [`config`] (limits);
//! - deploying: [`deploy`] (classes, bindings, migrations);
//! - storage: [`storage`];
//! - errors: [`error`].

pub mod alarm;
pub mod config;
pub mod deploy;
pub mod env;
pub mod error;
pub mod gate;
pub mod host;
pub mod http;
pub mod id;
mod instance;
pub mod namespace;
pub mod object;
pub mod state;
pub mod storage;
mod turn;

pub use env::Env;
pub use error::{Error, ErrorKind};
pub use host::{Host, HostBuilder, StorageProvider};
pub use http::{Method, Request, Response};
pub use id::ObjectId;
pub use namespace::{ObjectNamespace, Stub};
pub use object::{AlarmInfo, DurableObject, Handlers};
pub use state::{Entropy, State};
pub use storage::Storage;

/// Everything an object's code usually needs: `use dosim_runtime::prelude::*;`.
pub mod prelude {
    pub use crate::env::Env;
    pub use crate::error::Error;
    pub use crate::http::{Method, Request, Response};
    pub use crate::id::ObjectId;
    pub use crate::namespace::{ObjectNamespace, Stub};
    pub use crate::object::{AlarmInfo, DurableObject, Handlers};
    pub use crate::state::State;
    pub use crate::storage::kv::ListOptions;
    pub use crate::storage::Storage;
}

/// The directory white-box tests keep their database files in: under the target directory of the build
/// (the simulation build has its own), so concurrent worktrees and builds do not share files.
#[cfg(test)]
pub(crate) fn test_dir() -> std::path::PathBuf {
    let build = if cfg!(madsim) { "sim/tmp" } else { "tmp" };
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target").join(build).join("runtime-unit")
}
