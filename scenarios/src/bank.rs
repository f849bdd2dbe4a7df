//! Demo scenario `sqlite-power-cut`: bank transfers in SQLite on `SimDisk` under power cuts.
//! (being written)
use dosim_sim::{RunFailure, RunReport, Seed};

/// Runs the scenario for one seed.
pub(crate) fn run(seed: Seed) -> Result<RunReport, RunFailure> {
    let _ = seed;
    unimplemented!()
}
