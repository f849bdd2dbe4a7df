//! Object storage: where an object's database lives, and the APIs objects use on it.
//!
//! - [`location`]: the one code path that opens an object's SQLite database, on a real file or on a VFS the
//!   embedder registered (the simulation's disk).

pub mod location;

pub use location::{DatabaseLocation, Journal, OpenError};
