//! dosim: Durable Objects semantics in Rust, under deterministic simulation.
//!
//! The crate users depend on. Object code needs [`prelude`]; simulation tests of it need [`testing`] (built
//! with `--cfg madsim`: see the README's "Testing your own objects"). The workspace's crates are here too:
//! [`runtime`] (the object runtime, production code), [`sim`] (the deterministic world) and [`scenarios`]
//! (workloads, fault plans, checkers, the built-in scenarios).

pub use dosim_runtime as runtime;
pub use dosim_scenarios as scenarios;
pub use dosim_sim as sim;

/// What object code uses: `State`, `Env`, `Storage`, `Request`, `Response`, stubs and ids, the
/// `DurableObject` trait.
pub mod prelude {
    pub use dosim_runtime::prelude::*;
}

/// The test kit: an [`ObjectTest`](testing::ObjectTest) of your class under a seed (a workload of your
/// operations, a fault mix, the checks), host tests in the style of Cloudflare's Vitest pool, the ready
/// models and drivers, proptest strategies, shrinking, and the assertions (`always`, `sometimes`,
/// `eventually`) your object code can make. Simulation builds only.
#[cfg(madsim)]
pub mod testing {
    pub use dosim_scenarios::check::models;
    pub use dosim_scenarios::check::{check_linearizable, Model};
    pub use dosim_scenarios::history;
    pub use dosim_scenarios::strategies;
    pub use dosim_scenarios::testing::*;
    pub use dosim_sim::{
        always, ensure, ensure_live, eventually, sim_test, sometimes, sometimes_if, Failure, RunFailure,
        RunReport, Seed, SimRng,
    };
}
