//! dosim: Durable Objects semantics in Rust, under deterministic simulation.
//!
//! This crate gathers the workspace: [`runtime`] (the object runtime, production code), [`sim`] (the
//! deterministic world) and [`scenarios`] (workloads, fault plans and checkers). The integration tests in
//! `tests/` and the benches in `benches/` belong to it.

pub use dosim_runtime as runtime;
pub use dosim_scenarios as scenarios;
pub use dosim_sim as sim;
