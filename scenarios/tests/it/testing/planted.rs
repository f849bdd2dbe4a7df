//! The planted-bug catalogue: each buggy object is caught within its bound of seeds, and its correct twin
//! passes the same test over many seeds. Each found bug prints the seed, how many seeds it took and the
//! wall time (`sim_test!`'s `must_fail_within`).

use dosim_scenarios::planted::{catalogue, PlantedBug};
use dosim_sim::sim_test;

fn bug(name: &str) -> PlantedBug {
    catalogue().into_iter().find(|b| b.name == name).unwrap_or_else(|| panic!("no planted bug {name}"))
}

/// How many seeds each correct twin passes in a default test run (more with `DOSIM_SEEDS`).
const TWIN_SEEDS: u64 = 8;

macro_rules! planted {
    ($name:literal, $found:ident, $twin:ident) => {
        sim_test!(must_fail_within = bug($name).found_within, fn $found(seed) { (bug($name).buggy)(seed) });
        sim_test!(seeds = TWIN_SEEDS, fn $twin(seed) { (bug($name).correct)(seed) });
    };
}

planted!("concurrent-read", concurrent_read_is_found, concurrent_read_twin_passes);
planted!("write-behind", write_behind_is_found, write_behind_twin_passes);
planted!("unconfirmed-write", unconfirmed_write_is_found, unconfirmed_write_twin_passes);
planted!("stale-cache", stale_cache_is_found, stale_cache_twin_passes);
planted!("double-charge", double_charge_is_found, double_charge_twin_passes);
planted!("retried-add", retried_add_is_found, retried_add_twin_passes);
planted!("superseded-ticket", superseded_ticket_is_found, superseded_ticket_twin_passes);
