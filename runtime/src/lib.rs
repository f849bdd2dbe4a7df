//! The dosim object runtime: production code that runs Durable Objects.
//!
//! The runtime knows nothing of seeds, faults or scenarios. It reaches time, tasks and the network through
//! madsim-tokio (simulated under `cfg(madsim)`), and its databases through the storage interface it owns,
//! behind which the simulated disk or a real file sits.
//!
//! The crate has two doors, and everything else is private:
//! - [`prelude`]: what an object's code needs: [`DurableObject`](prelude::DurableObject), its
//!   [`State`](prelude::State) and [`Storage`](prelude::Storage) with the options and values storage calls
//!   take, [`Env`](prelude::Env), namespaces and stubs, requests and responses, errors;
//! - [`embed`]: what an embedder implements or calls: the [`Host`](embed::Host) and its builder and
//!   configuration, the world's traits ([`StorageProvider`](embed::StorageProvider),
//!   [`Clock`](embed::Clock), [`Entropy`](embed::Entropy), [`DurabilityWait`](embed::DurabilityWait),
//!   [`StoreLink`](embed::StoreLink)), deploys, and the storage engines run without a host.
//!
//! [`error`] is public too: [`Error`](error::Error), [`ErrorKind`](error::ErrorKind) and the spec's exact
//! [`messages`](error::messages), which callers match on.
//!
//! Inside, modules are layered; a module imports only from the layers below it (docs/ARCHITECTURE.md):
//! - the world and the basics: `world` (the embedder's traits), `future`, [`error`], `config`, `id`,
//!   `http`;
//! - storage and gates: `storage`, `gate`, `alarm` (the retry policy and the scheduler's index), `deploy`;
//! - the event loop's turns: `turn`;
//! - the user's API and the instance: `state`, `instance`, `namespace`, `env`, `object`;
//! - the host: `host` (routing, containers, alarm runs, the builder).

mod alarm;
mod config;
mod deploy;
mod directory;
mod env;
pub mod error;
mod future;
mod gate;
mod hibernation;
mod host;
mod http;
mod id;
mod instance;
mod location;
mod namespace;
mod object;
mod replication;
mod rpc;
mod state;
mod storage;
mod storage_node;
mod stream;
mod turn;
mod websocket;
mod wire;
mod world;

/// Everything an object's code needs: `use dosim_runtime::prelude::*;`.
pub mod prelude {
    pub use crate::env::Env;
    pub use crate::error::{Error, ErrorKind};
    pub use crate::hibernation::WebSocketRequestResponsePair;
    pub use crate::http::{Headers, Method, Request, Response};
    pub use crate::id::{Jurisdiction, ObjectId};
    pub use crate::namespace::{ObjectNamespace, Stub, StubOptions};
    pub use crate::object::{AlarmInfo, DurableObject, Handlers};
    pub use crate::state::{AlarmRetry, State};
    pub use crate::storage::actor_cache::GetOptions;
    pub use crate::storage::kv::ListOptions;
    pub use crate::storage::sql::{Cursor, Raw, Row, SqlValue};
    pub use crate::storage::sqlite::WriteOptions;
    pub use crate::storage::{Sql, Storage, Transaction};
    pub use crate::websocket::{
        CloseEvent, WebSocket, WebSocketEvent, WebSocketIncomingMessage, WebSocketPair,
    };
}

/// WebSocket limits and close codes (spec §5.2).
pub mod websockets {
    pub use crate::websocket::{
        ATTACHMENT_SIZE_MAX, CLOSE_ABNORMAL, CLOSE_NORMAL, CLOSE_NO_STATUS, CLOSE_REASON_BYTES_MAX,
        CLOSE_TOO_BIG, MESSAGE_SIZE_MAX,
    };
}

/// Everything an embedder implements or calls: the host, the world's traits, deploys, and the storage
/// engines without a host.
pub mod embed {
    pub use crate::alarm::AlarmConfig;
    pub use crate::config::{EvictionConfig, HostConfig, OverloadLimits};
    pub use crate::deploy::{Deployments, Migration, RenamedClass, TransferredClass};
    pub use crate::directory::{Claim, Directory, HostLease, Member, Owner, LEASE_TTL_S};
    pub use crate::host::{ClusterRole, Host, HostBuilder};
    pub use crate::location::{DatabaseLocation, Journal, OpenError};
    pub use crate::replication::kv::{RemoteKvLimits, RemoteKvStore};
    pub use crate::rpc::{Handler, RpcNode};
    pub use crate::storage::actor_cache::ActorCacheOptions;
    pub use crate::storage::sqlite::SqliteSettings;
    pub use crate::storage_node::StorageNode;
    pub use crate::world::{
        Clock, CoordError, CoordFuture, CoordRecord, CoordTxn, Coordinator, Datagram, DurabilityWait,
        DurableOnReturn, Entropy, ManualClock, StorageProvider, StoreLink, Task, Transport,
    };

    // Storage without a host. The simulation's crash tests (scenarios/tests/storage_crash.rs,
    // tests/storage_in_sim.rs) and the storage benchmarks (benches/storage.rs) run a storage engine on the
    // simulated disk with no host around it, driving its turns by hand; these are their handles.
    pub use crate::storage::actor_cache::sqlite_store::SqliteKvStore;
    pub use crate::storage::actor_cache::ActorCache;
    pub use crate::storage::gates::{
        block_on, InputHold, ManualTurns, OutputLock, OutputLockWaiter, TurnHooks,
    };
    pub use crate::storage::sqlite::SqliteStorage;
    pub use crate::storage::value::{decode, encode};
}

#[cfg(test)]
mod layers;

/// The directory white-box tests keep their database files in: under the target directory of the build
/// (the simulation build has its own), so concurrent worktrees and builds do not share files.
#[cfg(test)]
pub(crate) fn test_dir() -> std::path::PathBuf {
    let build = if cfg!(madsim) { "sim/tmp" } else { "tmp" };
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target").join(build).join("runtime-unit")
}
