//! The integration tests of `dosim-scenarios`, in one binary (one link per build instead of one per file):
//! `cargo simtest -p dosim-scenarios --test it -- <module>::<test>`.
//!
//! - `cluster`: the cluster under simulation: the directory on the simulated etcd (simulation build);
//! - `runtime`: the object runtime under simulation (simulation build);
//! - `scenarios`: every built-in scenario passes, replays exactly, reaches its faults, and each negative
//!   control is caught (simulation build; the campaign's size is `DOSIM_CAMPAIGN_SEEDS`);
//! - `report_html`: a failing run's HTML report, checked as text and in headless Chromium (simulation build);
//! - `cli`: the `dosim` binary's output and exit codes (simulation build: the CLI only runs there);
//! - `testing`: the test kit for users' objects: the planted-bug catalogue and the kit's own behaviour
//!   (simulation build);
//! - `storage_crash`: write coalescing is crash-atomic on the simulated disk, on a `LocalWorld` (plain build: a
//!   `LocalWorld` has no madsim executor and its code is the same in both builds).

#[cfg(madsim)]
mod chat;
#[cfg(madsim)]
mod cli;
#[cfg(madsim)]
mod cluster;
#[cfg(madsim)]
mod report_html;
#[cfg(madsim)]
mod runtime;
#[cfg(madsim)]
mod scenarios;
#[cfg(not(madsim))]
mod storage_crash;
#[cfg(madsim)]
mod testing;

/// The runtime modules' helpers, at the root where those modules name them (`crate::HOST`).
#[cfg(madsim)]
pub(crate) use runtime::{kv_class, sqlite_class, HOST};
