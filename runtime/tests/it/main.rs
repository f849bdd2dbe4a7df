//! The runtime's one integration-test binary: tests that use only the public doors (`prelude`, `embed`,
//! `error`), as an embedder and object code do. White-box tests live inside the crate (`src/**/tests.rs`).

#[cfg(not(madsim))]
mod real_mode;
