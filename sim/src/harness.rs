//! Seeds for tests, replay, and the report of a failing seed.
//!
//! A simulation test is written with [`crate::sim_test!`]. It runs one seed (derived from the test's name),
//! or the seeds the environment asks for:
//! - `DOSIM_SEED=0x…` replays exactly that seed;
//! - `DOSIM_SEEDS=N` runs N seeds (starting from `DOSIM_SEED` if set);
//! - `DOSIM_CHECK_DETERMINISM=1` runs every seed twice and compares the traces event by event.
//!
//! On failure it prints the seed, the trace hash, the report (what the check names behind the violation, the
//! faults before it) and a one-line replay command, then panics, so it works the same in `cargo test` and in
//! nextest. On success it prints one line (seeds, events, the faults that fired, the `sometimes` points
//! reached) past libtest's capture. A test can ask for a seed count (`seeds = N`), or state that it must fail
//! within N seeds (`must_fail_within = N`: a planted bug its checks must find).
//!
//! Before any new seed, a test replays the lines of its crate's regression file
//! ([`crate::regressions::FILE_NAME`], next to its `Cargo.toml`) that name it: `<test path> <seed> [keep=<mask>]
//! [# note]`. A line's plan mask is set for its run ([`current_plan_mask`]), so the test kit runs the shrunk
//! plan, not the seed's whole one. `DOSIM_KEEP=<mask>` sets the mask for a `DOSIM_SEED` replay; a replay runs
//! no listed seed.

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
/// The plan mask of a `DOSIM_SEED` replay (see [`current_plan_mask`]).
pub const ENV_KEEP: &str = "DOSIM_KEEP";

thread_local! {
    static PLAN_MASK: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// The plan mask the harness set for the run in progress on this thread: a regression line's `keep=…`, or
/// `DOSIM_KEEP` for a replay; `None` for a whole seed. The test kit applies it to the plan its seed draws
/// (`ObjectTest::run`); the harness knows nothing of its syntax.
pub fn current_plan_mask() -> Option<String> {
    PLAN_MASK.with(|m| m.borrow().clone())
}

/// Runs `f` with `mask` as this thread's [`current_plan_mask`], restoring the one before afterwards (also if
/// `f` panics).
pub fn with_plan_mask<T>(mask: Option<String>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<String>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let before = self.0.take();
            PLAN_MASK.with(|m| *m.borrow_mut() = before);
        }
    }
    let _restore = Restore(PLAN_MASK.with(|m| std::mem::replace(&mut *m.borrow_mut(), mask)));
    f()
}

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
    /// The package's directory (`CARGO_MANIFEST_DIR`), where its regression file is; empty for none.
    pub manifest_dir: &'static str,
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
        self.replay_command_masked(seed, None)
    }

    /// The one-line command that replays `seed` of this test with a plan mask (see [`ENV_KEEP`]).
    pub fn replay_command_masked(&self, seed: Seed, mask: Option<&str>) -> String {
        let target =
            if self.integration { format!("--test {}", self.crate_name) } else { "--lib".to_string() };
        let keep = mask.map(|m| format!("{ENV_KEEP}='{m}' ")).unwrap_or_default();
        format!(
            "{ENV_SEED}={seed} {keep}cargo simtest -p {} {target} -- {} --exact --nocapture",
            self.package,
            self.filter()
        )
    }

    /// The path of its crate's regression file, if it knows its crate's directory.
    pub fn regression_file(&self) -> Option<std::path::PathBuf> {
        (!self.manifest_dir.is_empty())
            .then(|| std::path::Path::new(self.manifest_dir).join(crate::regressions::FILE_NAME))
    }

    /// The lines of its crate's regression file that name this test, in file order: (seed, plan mask).
    ///
    /// # Panics
    /// With the file's path, the line's number and what was expected, if the file has a malformed line;
    /// with the path, if it exists but cannot be read.
    pub fn listed_seeds(&self) -> Vec<(Seed, Option<String>)> {
        let Some(path) = self.regression_file() else { return Vec::new() };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => panic!("dosim: {}: {e}", path.display()),
        };
        let lines =
            crate::regressions::parse(&text).unwrap_or_else(|e| panic!("dosim: {}: {e}", path.display()));
        let me = self.filter();
        lines.into_iter().filter(|r| r.scenario == me).map(|r| (r.seed, r.keep)).collect()
    }
}

/// What a test asks of its seeds, besides what the environment says (see [`crate::sim_test!`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeedPlan {
    /// How many seeds it runs when `DOSIM_SEEDS` is unset (1 if `None`).
    pub seeds: Option<u64>,
    /// The test expects a failure: it passes when one of its first N seeds fails (a planted bug that the
    /// checks must find), and fails if none does.
    pub must_fail_within: Option<u64>,
}

/// The seeds the environment asks for, or the test's default seed.
///
/// # Panics
/// With a message naming the value, if `DOSIM_SEED` or `DOSIM_SEEDS` is malformed.
pub fn seeds_from_env(id: &TestId) -> Vec<Seed> {
    seeds_for(id, SeedPlan::default())
}

/// The seeds of a test with `plan`: `DOSIM_SEED` picks the first (else the test's default seed); `DOSIM_SEEDS`
/// the count (else the plan's, else 1). A test that must fail runs its `must_fail_within` seeds, unless
/// `DOSIM_SEED` names one to replay.
fn seeds_for(id: &TestId, plan: SeedPlan) -> Vec<Seed> {
    let replay = std::env::var(ENV_SEED).ok();
    let base = match &replay {
        Some(s) => s.parse::<Seed>().unwrap_or_else(|e| panic!("{ENV_SEED}: {e}")),
        None => id.default_seed(),
    };
    let from_env = match std::env::var(ENV_SEEDS) {
        Ok(s) => match s.trim().parse::<u64>() {
            Ok(n) if n > 0 => Some(n),
            _ => panic!("{ENV_SEEDS}: invalid seed count {s:?}: expected a positive integer"),
        },
        Err(_) => None,
    };
    let count = match plan.must_fail_within {
        Some(_) if replay.is_some() => from_env.unwrap_or(1),
        Some(n) => n,
        None => from_env.or(plan.seeds).unwrap_or(1),
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

/// The prefix of the `sometimes` points that count faults a test injects itself (evictions, resets, …):
/// `fault: eviction`. The summary lists them with the world's faults.
pub const INJECTED_FAULT_PREFIX: &str = "fault: ";

/// What the passing seeds of a test did, summed: printed when the test passes, so that a test whose faults
/// never fired does not look like one whose faults did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Seeds that ran.
    pub seeds: u64,
    /// Faults injected over all seeds.
    pub faults: crate::fault::FaultCounts,
    /// `sometimes` points reached, with the number of seeds that reached each.
    pub sometimes: std::collections::BTreeMap<String, u64>,
    /// Faults the test injected itself (its `sometimes` points named `fault: <kind>`), with how often
    /// they fired over all seeds.
    pub injected: std::collections::BTreeMap<String, u64>,
    /// Of the seeds, those replayed first from the regression file.
    pub listed: u64,
    /// Events over all seeds.
    pub events: u64,
    /// Simulated time over all seeds.
    pub sim_time: std::time::Duration,
}

impl Summary {
    /// Adds a passing seed's report.
    pub fn add(&mut self, report: &RunReport) {
        self.seeds += 1;
        self.faults.merge(&report.faults);
        for (name, n) in &report.sometimes {
            *self.sometimes.entry(name.clone()).or_default() += 1;
            if let Some(kind) = name.strip_prefix(INJECTED_FAULT_PREFIX) {
                *self.injected.entry(kind.to_string()).or_default() += n;
            }
        }
        self.events += report.trace.len();
        self.sim_time += report.sim_time;
    }

    /// One line: seeds, events, simulated time, the faults that fired, how many `sometimes` points were
    /// reached.
    pub fn line(&self) -> String {
        let fired: Vec<String> = self
            .faults
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .chain(self.injected.iter().map(|(k, n)| format!("{k} {n}")))
            .collect();
        let faults = if fired.is_empty() { "none fired".to_string() } else { fired.join(", ") };
        let listed = if self.listed > 0 {
            format!(" ({} from {})", self.listed, crate::regressions::FILE_NAME)
        } else {
            String::new()
        };
        format!(
            "{} seed{}{listed}, {} events, {:.1}s simulated; faults: {faults}; sometimes: {} point{} reached",
            self.seeds,
            if self.seeds == 1 { "" } else { "s" },
            self.events,
            self.sim_time.as_secs_f64(),
            self.sometimes.len(),
            if self.sometimes.len() == 1 { "" } else { "s" },
        )
    }
}

/// Writes `text` to the process's stderr directly: libtest captures `eprintln!` of passing tests, not this,
/// so a test's one-line summary shows in every `cargo test` run.
fn say(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Runs one seed, twice if `check` (the determinism check), with the failure's seed filled in.
fn run_one(
    seed: Seed,
    check: bool,
    body: &impl Fn(Seed) -> Result<RunReport, RunFailure>,
) -> Result<RunReport, CheckError> {
    let outcome = if check {
        determinism::check(seed, body)
    } else {
        body(seed).map_err(|f| CheckError::Failed(Box::new(f)))
    };
    outcome.map_err(|e| match e {
        // A run that failed before it started does not know its seed.
        CheckError::Failed(mut f) => {
            f.seed = seed;
            CheckError::Failed(f)
        }
        other => other,
    })
}

/// Runs a simulation test over the seeds the environment asks for; panics with a replayable report on the
/// first failing seed.
pub fn run_test(id: TestId, body: impl Fn(Seed) -> Result<RunReport, RunFailure>) {
    run_planned(id, SeedPlan::default(), body)
}

/// Runs a simulation test under `plan` (see [`SeedPlan`]). The seeds its crate's regression file lists for it
/// run first, each with its plan mask (unless `DOSIM_SEED` names one to replay), then the new ones. A test
/// that must pass panics with a replayable report on its first failing seed, and prints a one-line
/// [`Summary`] when every seed passed. A test that must fail passes on its first failing seed, a listed one
/// included (printing the seed, how many seeds and how much wall time it took, and the replay command), and
/// panics if none of its seeds fails.
pub fn run_planned(id: TestId, plan: SeedPlan, body: impl Fn(Seed) -> Result<RunReport, RunFailure>) {
    let check = check_determinism_from_env();
    let replay = std::env::var(ENV_SEED).is_ok();
    let listed = if replay { Vec::new() } else { id.listed_seeds() };
    let replay_mask =
        if replay { std::env::var(ENV_KEEP).ok().filter(|m| !m.trim().is_empty()) } else { None };
    let runs: Vec<(Seed, Option<String>, bool)> = listed
        .into_iter()
        .map(|(s, m)| (s, m, true))
        .chain(seeds_for(&id, plan).into_iter().map(|s| (s, replay_mask.clone(), false)))
        .collect();
    let started = std::time::Instant::now();
    let mut summary = Summary::default();
    for (i, (seed, mask, from_file)) in runs.iter().enumerate() {
        let (seed, mask) = (*seed, mask.as_deref());
        let replay = id.replay_command_masked(seed, mask);
        let listed_note =
            if *from_file { format!(", listed in {}", crate::regressions::FILE_NAME) } else { String::new() };
        match with_plan_mask(mask.map(str::to_string), || run_one(seed, check, &body)) {
            Ok(report) => {
                summary.add(&report);
                if *from_file {
                    summary.listed += 1;
                }
            }
            Err(CheckError::Failed(f)) if plan.must_fail_within.is_some() => {
                say(&format!(
                    "dosim: {} found its bug at seed {seed}{listed_note} ({} of {} seeds, {:.2}s wall): {}\nreplay: {replay}\n",
                    id.filter(),
                    i + 1,
                    runs.len(),
                    started.elapsed().as_secs_f64(),
                    f.kind,
                ));
                eprintln!("{f}");
                return;
            }
            Err(e) => {
                let hash = match &e {
                    CheckError::Failed(f) => format!("{:016x}", f.trace_hash()),
                    CheckError::Diverged { hashes, .. } => format!("{:016x} / {:016x}", hashes.0, hashes.1),
                };
                eprintln!("{e}");
                eprintln!("dosim: seed {seed}{listed_note} failed (trace hash {hash})");
                eprintln!("replay: {replay}");
                let what = match &e {
                    CheckError::Failed(f) => f.kind.to_string(),
                    CheckError::Diverged { .. } => "nondeterminism".to_string(),
                };
                panic!("dosim: seed {seed}{listed_note} failed: {what}\nreplay: {replay}");
            }
        }
    }
    if let Some(n) = plan.must_fail_within {
        panic!(
            "dosim: {} must fail within {n} seeds, but all {} passed ({}): the checks did not find the bug",
            id.filter(),
            runs.len(),
            summary.line()
        );
    }
    say(&format!("dosim: {} passed: {}\n", id.filter(), summary.line()));
    if !summary.sometimes.is_empty() {
        eprintln!("dosim: sometimes points reached (seeds reaching each):");
        for (name, n) in &summary.sometimes {
            eprintln!("  {n:>4}  {name}");
        }
    }
}

/// Declares a simulation test. The body gets the seed and returns the run's result.
///
/// ```ignore
/// sim_test!(fn crash_keeps_synced_data(seed) {
///     Sim::builder().seed(seed).nodes(1).build()?.run(|world| async move { Ok(()) })
/// });
/// // 20 seeds unless DOSIM_SEEDS says otherwise:
/// sim_test!(seeds = 20, fn counter_survives_crashes(seed) { … });
/// // A planted bug: passes when one of its first 50 seeds fails, fails if none does.
/// sim_test!(must_fail_within = 50, fn racy_counter_is_caught(seed) { … });
/// ```
#[macro_export]
macro_rules! sim_test {
    ($(#[$meta:meta])* fn $name:ident($seed:ident) $body:block) => {
        $crate::sim_test!(@plan $crate::harness::SeedPlan::default(), $(#[$meta])* fn $name($seed) $body);
    };
    (seeds = $n:expr, $(#[$meta:meta])* fn $name:ident($seed:ident) $body:block) => {
        $crate::sim_test!(
            @plan $crate::harness::SeedPlan { seeds: Some($n), must_fail_within: None },
            $(#[$meta])* fn $name($seed) $body
        );
    };
    (must_fail_within = $n:expr, $(#[$meta:meta])* fn $name:ident($seed:ident) $body:block) => {
        $crate::sim_test!(
            @plan $crate::harness::SeedPlan { seeds: None, must_fail_within: Some($n) },
            $(#[$meta])* fn $name($seed) $body
        );
    };
    (@plan $plan:expr, $(#[$meta:meta])* fn $name:ident($seed:ident) $body:block) => {
        $(#[$meta])*
        #[test]
        fn $name() {
            $crate::harness::run_planned(
                $crate::harness::TestId {
                    module: module_path!(),
                    name: stringify!($name),
                    package: env!("CARGO_PKG_NAME"),
                    crate_name: env!("CARGO_CRATE_NAME"),
                    integration: option_env!("CARGO_TARGET_TMPDIR").is_some(),
                    manifest_dir: env!("CARGO_MANIFEST_DIR"),
                },
                $plan,
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
            manifest_dir: "",
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
    fn a_plan_sets_the_seed_count_and_a_test_that_must_fail_runs_its_bound() {
        // No DOSIM_SEED(S) in this test's environment (the test binary is run without them).
        if std::env::var(ENV_SEED).is_ok() || std::env::var(ENV_SEEDS).is_ok() {
            return;
        }
        let id = id(true);
        assert_eq!(seeds_for(&id, SeedPlan::default()), vec![id.default_seed()]);
        let twenty = seeds_for(&id, SeedPlan { seeds: Some(20), must_fail_within: None });
        assert_eq!(twenty.len(), 20);
        assert_eq!(twenty[0], id.default_seed());
        assert_eq!(twenty[19], id.default_seed().nth(19));
        assert_eq!(seeds_for(&id, SeedPlan { seeds: None, must_fail_within: Some(7) }).len(), 7);
    }

    #[test]
    fn a_summary_counts_seeds_faults_and_the_seeds_reaching_each_sometimes_point() {
        let report = |crashes: u64, points: &[&str]| {
            let mut faults = crate::fault::FaultCounts::default();
            faults.add(crate::fault::FaultKind::Crash, crashes);
            RunReport {
                seed: Seed(1),
                trace: crate::trace::Trace::new(crate::trace::TraceMode::Full),
                faults,
                sometimes: points.iter().map(|p| (p.to_string(), 3)).collect(),
                sim_time: std::time::Duration::from_secs(2),
                wall_time: std::time::Duration::ZERO,
            }
        };
        let mut s = Summary::default();
        assert!(s.line().contains("faults: none fired"));
        s.add(&report(2, &["a"]));
        s.add(&report(1, &["a", "b", "fault: eviction"]));
        assert_eq!(s.seeds, 2);
        assert_eq!(s.sometimes.get("a"), Some(&2), "seeds reaching it, not times");
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
