//! Seeds for tests, replay, and the report of a failing seed.
//!
//! A simulation test is written with [`crate::sim_test!`]. It runs one seed (derived from the test's name),
//! or the seeds the environment asks for:
//! - `DOSIM_SEED=0x…` replays exactly that seed;
//! - `DOSIM_SEEDS=N` runs N seeds (starting from `DOSIM_SEED` if set);
//! - `DOSIM_CHECK_DETERMINISM=1` runs every seed twice and compares the traces event by event.
//!
//! On failure it prints the seed, the trace hash, the last events and a one-line replay command, then panics,
//! so it works the same in `cargo test` and in nextest.

use xxhash_rust::xxh3::xxh3_64;

use crate::determinism::{self, CheckError};
use crate::report::{RunFailure, RunReport};
use crate::seed::Seed;

/// Replays one seed exactly.
pub const ENV_SEED: &str = "DOSIM_SEED";
/// Runs this many seeds.
pub const ENV_SEEDS: &str = "DOSIM_SEEDS";
/// `1` runs each seed twice and compares traces.
pub const ENV_CHECK_DETERMINISM: &str = "DOSIM_CHECK_DETERMINISM";

/// Where a simulation test lives, to print its replay command. Filled in by [`crate::sim_test!`].
#[derive(Clone, Copy, Debug)]
pub struct TestId {
    /// `module_path!()` at the test.
    pub module: &'static str,
    /// The test function's name.
    pub name: &'static str,
    /// The package (`CARGO_PKG_NAME`).
    pub package: &'static str,
    /// The crate the test is compiled in (`CARGO_CRATE_NAME`): the integration-test target, or the library.
    pub crate_name: &'static str,
    /// True for an integration test (`tests/…`), false for a unit test in the library.
    pub integration: bool,
}

impl TestId {
    /// The test's path as libtest filters it (`module::name`, without the crate).
    pub fn filter(&self) -> String {
        match self.module.split_once("::") {
            Some((_, rest)) => format!("{rest}::{}", self.name),
            None => self.name.to_string(),
        }
    }

    /// The seed a test runs when the environment names none: fixed per test, different between tests.
    pub fn default_seed(&self) -> Seed {
        Seed(xxh3_64(format!("{}::{}", self.module, self.name).as_bytes()))
    }

    /// The one-line command that replays `seed` of this test.
    pub fn replay_command(&self, seed: Seed) -> String {
        let target =
            if self.integration { format!("--test {}", self.crate_name) } else { "--lib".to_string() };
        format!(
            "{ENV_SEED}={seed} cargo simtest -p {} {target} -- {} --exact --nocapture",
            self.package,
            self.filter()
        )
    }
}

/// The seeds the environment asks for, or the test's default seed.
///
/// # Panics
/// With a message naming the value, if `DOSIM_SEED` or `DOSIM_SEEDS` is malformed.
pub fn seeds_from_env(id: &TestId) -> Vec<Seed> {
    let base = match std::env::var(ENV_SEED) {
        Ok(s) => s.parse::<Seed>().unwrap_or_else(|e| panic!("{ENV_SEED}: {e}")),
        Err(_) => id.default_seed(),
    };
    let count = match std::env::var(ENV_SEEDS) {
        Ok(s) => match s.trim().parse::<u64>() {
            Ok(n) if n > 0 => n,
            _ => panic!("{ENV_SEEDS}: invalid seed count {s:?}: expected a positive integer"),
        },
        Err(_) => 1,
    };
    (0..count).map(|i| base.nth(i)).collect()
}

fn check_determinism_from_env() -> bool {
    match std::env::var(ENV_CHECK_DETERMINISM) {
        Ok(v) => match v.trim() {
            "1" | "true" | "yes" => true,
            "0" | "false" | "no" | "" => false,
            other => panic!("{ENV_CHECK_DETERMINISM}: invalid value {other:?}: expected 1 or 0"),
        },
        Err(_) => false,
    }
}

/// Runs a simulation test over the seeds the environment asks for; panics with a replayable report on the
/// first failing seed.
pub fn run_test(id: TestId, body: impl Fn(Seed) -> Result<RunReport, RunFailure>) {
    let check = check_determinism_from_env();
    for seed in seeds_from_env(&id) {
        let outcome = if check {
            determinism::check(seed, &body)
        } else {
            body(seed).map_err(|f| CheckError::Failed(Box::new(f)))
        };
        let outcome = outcome.map_err(|e| match e {
            // A run that failed before it started does not know its seed.
            CheckError::Failed(mut f) => {
                f.seed = seed;
                CheckError::Failed(f)
            }
            other => other,
        });
        if let Err(e) = outcome {
            let hash = match &e {
                CheckError::Failed(f) => format!("{:016x}", f.trace_hash()),
                CheckError::Diverged { hashes, .. } => format!("{:016x} / {:016x}", hashes.0, hashes.1),
            };
            eprintln!("{e}");
            eprintln!("dosim: seed {seed} failed (trace hash {hash})");
            eprintln!("replay: {}", id.replay_command(seed));
            let what = match &e {
                CheckError::Failed(f) => f.kind.to_string(),
                CheckError::Diverged { .. } => "nondeterminism".to_string(),
            };
            panic!("dosim: seed {seed} failed: {what}\nreplay: {}", id.replay_command(seed));
        }
    }
}

/// Declares a simulation test. The body gets the seed and returns the run's result.
///
/// ```ignore
/// sim_test!(fn crash_keeps_synced_data(seed) {
///     Sim::builder().seed(seed).nodes(1).build()?.run(|world| async move { Ok(()) })
/// });
/// ```
#[macro_export]
macro_rules! sim_test {
    ($(#[$meta:meta])* fn $name:ident($seed:ident) $body:block) => {
        $(#[$meta])*
        #[test]
        fn $name() {
            $crate::harness::run_test(
                $crate::harness::TestId {
                    module: module_path!(),
                    name: stringify!($name),
                    package: env!("CARGO_PKG_NAME"),
                    crate_name: env!("CARGO_CRATE_NAME"),
                    integration: option_env!("CARGO_TARGET_TMPDIR").is_some(),
                },
                |$seed: $crate::Seed| -> ::std::result::Result<$crate::RunReport, $crate::RunFailure> {
                    $body
                },
            );
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(integration: bool) -> TestId {
        TestId {
            module: "it::world::partitions",
            name: "heal_restores",
            package: "dosim-sim",
            crate_name: "it",
            integration,
        }
    }

    #[test]
    fn replay_command_names_seed_target_and_test() {
        assert_eq!(
            id(true).replay_command(Seed(0x2a)),
            "DOSIM_SEED=0x000000000000002a cargo simtest -p dosim-sim --test it -- world::partitions::heal_restores --exact --nocapture"
        );
        assert!(id(false).replay_command(Seed(1)).contains(" --lib -- "));
    }

    #[test]
    fn default_seed_is_stable_and_differs_between_tests() {
        let a = id(true);
        let mut b = id(true);
        b.name = "other";
        assert_eq!(a.default_seed(), a.default_seed());
        assert_ne!(a.default_seed(), b.default_seed());
    }
}
