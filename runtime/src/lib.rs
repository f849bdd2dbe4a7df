//! The dosim object runtime: production code that runs Durable Objects.
//!
//! The runtime knows nothing of seeds, faults or scenarios. It reaches time, tasks and the network through
//! madsim-tokio (simulated under `cfg(madsim)`), and its databases through the storage interface it owns
//! ([`storage`]), behind which the simulated disk or a real file sits.
//!
//! This crate grows with the object runtime; for now it holds the storage interface that the simulation and
//! real mode share.

pub mod deploy;
pub mod error;
pub mod gate;
pub mod id;
pub mod storage;

pub use error::{Error, ErrorKind};
