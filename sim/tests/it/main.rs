//! The integration tests of `dosim-sim`, in one binary (one link per build instead of one per file).
//!
//! The modules that drive madsim's executor compile only in the simulation build (`cargo simtest -p
//! dosim-sim --test it`); the disk model and SQLite on `LocalWorld` run in both builds; the build guard fails a
//! simulation build that lost its `cfg(madsim)`.

mod build_guard;
#[cfg(madsim)]
mod determinism;
mod disk_model;
mod sqlite_local;
#[cfg(madsim)]
mod world;
