//! The regression file of `dosim campaign` and of `sim_test!`: its format and parser live in
//! [`dosim_sim::regressions`] (the harness reads it too); this module re-exports them.

pub use dosim_sim::regressions::{parse, render, Regression, RegressionError, FILE_NAME, KEEP_PREFIX};
