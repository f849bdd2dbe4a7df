//! The integration tests of `dosim-sim`, in one binary (one link per build instead of one per file).
//!
//! The modules that drive madsim's executor compile only in the simulation build (`cargo simtest -p
//! dosim-sim --test it`). The disk model and SQLite on `LocalWorld` run only in the plain build (`cargo test
//! -p dosim-sim --test it`): a `LocalWorld` has no madsim executor, and its code is the same in both builds
//! (the one `cfg(madsim)` branch it reaches, power-cut handling, returns at once for it), so running them
//! twice tested nothing more. The build guard runs in both: it fails a simulation build that lost its
//! `cfg(madsim)`.

mod build_guard;
#[cfg(madsim)]
mod determinism;
#[cfg(madsim)]
mod disk_inflight;
#[cfg(not(madsim))]
mod disk_model;
#[cfg(madsim)]
mod madsim_net;
#[cfg(not(madsim))]
mod sqlite_local;
#[cfg(madsim)]
mod world;
