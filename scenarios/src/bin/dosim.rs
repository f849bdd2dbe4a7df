//! `dosim`: list the scenarios, run them over seeds, replay one seed, run and merge fuzz campaigns, explore
//! the planted bugs.
//!
//! - `dosim list`;
//! - `dosim run <scenario|all> [--seed S] [--seeds N] [--jobs J] [--json] [--check-determinism]
//!   [--negative-control]`: before each run it prints the options the scenario derived from the seed, as
//!   `key=value` lines starting with `seed=` (in `--json`, the `options` object of each line). `--jobs J` runs
//!   the seeds in J worker processes of this binary (the hidden `worker` subcommand); the output is in seed
//!   order all the same;
//! - `dosim replay <scenario> --seed S [--trace FILE] [--keep MASK]`: one run, its full report, and its trace
//!   to a file; `--keep` runs only that part of the seed's plan (a shrunk seed of a test-kit scenario);
//! - `dosim campaign [--scenarios LIST|all] [--seeds N | --time DURATION] [--jobs J] [--shard I/N] [--out DIR]
//!   [--seed-base S] [--determinism-share P | --check-determinism] [--negative-control]`: the nightly fuzz
//!   campaign, writing `report.json`, `regressions.txt` and `failures/` to its directory;
//! - `dosim merge <DIR>... [--out DIR]`: the reports of a campaign's shards, merged;
//! - `dosim shrink <scenario> --seed S [--save FILE] [--negative-control]`: for a scenario of the test kit,
//!   one run, and if it fails, the smallest plan that still fails the same check, printed as numbered steps
//!   with its plan mask; `--save` appends its regression line to FILE.
//! - `dosim explore <planted-bug|all> [--strategy random|guided|both] [--trials N] [--budget-runs N] [--twin]
//!   [--verbose]`: how many runs and how much wall time plain random seeds and the coverage-guided explorer
//!   (`dosim_scenarios::explore`) take to find each planted bug, the medians over N explorations; exits 1 if
//!   some exploration missed its bug (or, with `--twin`, found a failure in a correct twin);
//! - `dosim cost <scenario> [--clients C] [--ops N] [--seeds S]` (hidden): the wall time of a run of a
//!   built-in scenario with C × N operations, for docs/PERFORMANCE.md.
//!
//! Exit codes (the README has the table): 0 when every seed passed, 2 on a usage error, and for the first
//! failing seed 3 for a broken invariant, 4 for a liveness failure (something pending after the liveness
//! phase, a deadlock, the time limit), 5 for a crash or panic, 6 for a determinism divergence.

#[cfg(not(madsim))]
fn main() {
    eprintln!("dosim: this binary runs simulations and must be built with --cfg madsim; use `cargo dosim …`");
    // The usage-error code (dosim_scenarios::EXIT_USAGE, which only the simulation build compiles).
    std::process::exit(2);
}

#[cfg(madsim)]
fn main() {
    std::process::exit(cli::main());
}

#[cfg(madsim)]
mod cli {
    use std::collections::BTreeMap;
    use std::io::{IsTerminal, Write};
    use std::path::{Path, PathBuf};
    use std::process::Command as Process;
    use std::time::{Duration, Instant};

    use clap::{Parser, Subcommand};
    use dosim_scenarios::campaign::pool::{self, Task};
    use dosim_scenarios::campaign::record::SeedRecord;
    use dosim_scenarios::campaign::report::{failure_file, CampaignReport};
    use dosim_scenarios::campaign::{parse_duration, sampled_for_determinism};
    use dosim_scenarios::{campaign_exit_code, select, Scenario, SeedOutcome, Shard, EXIT_USAGE};
    use dosim_sim::{Ratio, RunFailure, RunReport, Seed, Trace};
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

    /// Deterministic simulation of Durable Objects: scenarios, seeds and campaigns.
    #[derive(Parser)]
    #[command(name = "dosim", version)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand)]
    enum Command {
        /// List the built-in scenarios.
        List,
        /// Run a scenario (or `all`) over one or more seeds.
        Run {
            /// The scenario's name, or `all`.
            scenario: String,
            /// The first seed: 0x followed by hex digits, or a decimal number. Drawn from the OS if absent
            /// (and printed, so the run can be replayed).
            #[arg(long)]
            seed: Option<Seed>,
            /// How many seeds to run, starting from --seed.
            #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
            seeds: u64,
            /// Run the seeds in this many worker processes (one simulation runs per process at a time). The
            /// output stays in seed order.
            #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
            jobs: u64,
            /// Print one JSON object per seed on stdout instead of text.
            #[arg(long)]
            json: bool,
            /// Run every seed twice and compare the traces event by event.
            #[arg(long)]
            check_determinism: bool,
            /// Run the scenario's negative control instead (the mechanism it checks removed): its checks
            /// must catch it under some seeds.
            #[arg(long)]
            negative_control: bool,
        },
        /// Run one seed of a scenario and print its full report.
        Replay {
            /// The scenario's name.
            scenario: String,
            /// The seed.
            #[arg(long)]
            seed: Seed,
            /// Write every event of the trace to this file, one per line, as the report prints events.
            #[arg(long, value_name = "FILE")]
            trace: Option<PathBuf>,
            /// Write a failing run's timeline to this file: a self-contained HTML page (lanes per client, node
            /// and object; the violation highlighted; the trace beside it). See docs/REPORT.md.
            #[arg(long, value_name = "FILE")]
            html: Option<PathBuf>,
            /// Replay the scenario's negative control.
            #[arg(long)]
            negative_control: bool,
            /// Run only this part of the seed's plan: a plan mask that `dosim shrink` printed (test-kit
            /// scenarios only).
            #[arg(long, value_name = "MASK")]
            keep: Option<String>,
        },
        /// The fuzz campaign: many seeds of the scenarios, for a count or a wall-clock budget, maybe one
        /// shard of it; writes report.json, regressions.txt and failures/ to --out.
        Campaign {
            /// The scenarios, comma-separated, or `all`.
            #[arg(long, default_value = "all")]
            scenarios: String,
            /// Run seed indices 0 to N-1 (this shard's share of them). The default is 100 without --time.
            #[arg(long, conflicts_with = "time", value_parser = clap::value_parser!(u64).range(1..))]
            seeds: Option<u64>,
            /// Run until this wall-clock budget is used (90s, 10m, 1h30m), then finish the seeds in flight.
            #[arg(long, value_parser = parse_duration)]
            time: Option<Duration>,
            /// Worker processes; the default is the number of cores.
            #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
            jobs: Option<u64>,
            /// Run shard I of N: the seed indices i with i % N == I. The N shards of one --seed-base run every
            /// seed exactly once; `dosim merge` combines their reports.
            #[arg(long, default_value = "0/1")]
            shard: Shard,
            /// The directory for report.json, regressions.txt and failures/.
            #[arg(long, default_value = "dosim-campaign")]
            out: PathBuf,
            /// Seed i of the campaign is this seed's nth(i). Drawn from the OS if absent (and printed); give
            /// every shard the same one.
            #[arg(long)]
            seed_base: Option<Seed>,
            /// The share of seeds that run twice for the determinism check, chosen from the seed: a ratio
            /// (1/20) or a decimal (0.05); 0 turns the check off, 1 checks every seed.
            #[arg(long, default_value = "1/20", value_parser = parse_share)]
            determinism_share: Ratio,
            /// Check every seed for determinism: --determinism-share 1.
            #[arg(long, conflicts_with = "determinism_share")]
            check_determinism: bool,
            /// Run the scenarios' negative controls (the mechanism each checks removed), to see the failure
            /// path end to end; regressions.txt notes its seeds as negative controls.
            #[arg(long)]
            negative_control: bool,
        },
        /// Merge the report.json of a campaign's shards into one report.json and regressions.txt.
        Merge {
            /// The shards' output directories.
            #[arg(required = true)]
            dirs: Vec<PathBuf>,
            /// Where the merged report goes.
            #[arg(long, default_value = "dosim-campaign")]
            out: PathBuf,
        },
        /// Run one seed of a test-kit scenario and, if it fails, shrink it to the smallest plan that still
        /// fails the same check: prints the steps and the plan mask (`keep=…`).
        Shrink {
            /// The scenario's name (a scenario of the test kit).
            scenario: String,
            /// The seed.
            #[arg(long)]
            seed: Seed,
            /// Append the shrunk seed's regression line (`<scenario> <seed> keep=<mask> # <note>`) to this file.
            #[arg(long, value_name = "FILE")]
            save: Option<PathBuf>,
            /// Shrink the scenario's negative control (its planted bug) instead.
            #[arg(long)]
            negative_control: bool,
        },
        /// Explore planted bugs with plain random seeds and with the coverage-guided explorer, and print how
        /// many runs and how much wall time each took to find its bug (medians over the trials).
        Explore {
            /// The planted bug's name (see `dosim_scenarios::planted::catalogue`; or a harder variant of
            /// `SPARSE_VARIANTS`, such as `concurrent-read/sparse`), or `all` (the catalogue).
            bug: String,
            /// `random`, `guided` or `both`.
            #[arg(long, default_value = "both")]
            strategy: String,
            /// How many explorations of each bug and strategy (exploration seeds 1 to N).
            #[arg(long, default_value_t = 11, value_parser = clap::value_parser!(u64).range(1..))]
            trials: u64,
            /// At most this many runs per exploration.
            #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
            budget_runs: u64,
            /// Explore the bugs' correct twins instead: nothing may be found.
            #[arg(long)]
            twin: bool,
            /// Print each exploration's outcome as it ends.
            #[arg(long)]
            verbose: bool,
        },
        /// What one run of a built-in scenario costs at a given size: wall time per seed, split into the
        /// simulation and the checks after it, and the trace's size (for docs/PERFORMANCE.md).
        #[command(hide = true)]
        Cost {
            /// The built-in scenario.
            scenario: String,
            /// Clients.
            #[arg(long, default_value_t = 4)]
            clients: u32,
            /// Operations per client.
            #[arg(long, default_value_t = 50)]
            ops: u32,
            /// Seeds (from 1).
            #[arg(long, default_value_t = 100)]
            seeds: u64,
        },
        /// Runs tasks from stdin and prints one JSON line each: the process `--jobs` starts.
        #[command(hide = true)]
        Worker,
    }

    pub(crate) fn main() -> i32 {
        let cli = match Cli::try_parse() {
            Ok(c) => c,
            Err(e) => {
                // clap exits 2 on a usage error (EXIT_USAGE), 0 for --help and --version.
                let code = e.exit_code();
                let _ = e.print();
                return code;
            }
        };
        let result = match cli.command {
            Command::List => {
                for s in dosim_scenarios::all() {
                    println!("{:<20} {}", s.name, s.summary);
                }
                Ok(0)
            }
            Command::Run { scenario, seed, seeds, jobs, json, check_determinism, negative_control } => {
                run(&scenario, seed, seeds, jobs, json, check_determinism, negative_control)
            }
            Command::Replay { scenario, seed, trace, html, negative_control, keep } => {
                replay(&scenario, seed, trace.as_deref(), html.as_deref(), negative_control, keep)
            }
            Command::Campaign {
                scenarios,
                seeds,
                time,
                jobs,
                shard,
                out,
                seed_base,
                determinism_share,
                check_determinism,
                negative_control,
            } => {
                let jobs = jobs
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64));
                let config = CampaignConfig {
                    seeds: if time.is_some() { None } else { Some(seeds.unwrap_or(100)) },
                    time,
                    jobs,
                    shard,
                    seed_base: seed_base.unwrap_or_else(os_seed),
                    determinism_share: if check_determinism { Ratio::ALWAYS } else { determinism_share },
                    negative_control,
                };
                campaign(&scenarios, &config, &out)
            }
            Command::Merge { dirs, out } => merge(&dirs, &out),
            Command::Shrink { scenario, seed, save, negative_control } => {
                shrink(&scenario, seed, save.as_deref(), negative_control)
            }
            Command::Cost { scenario, clients, ops, seeds } => cost(&scenario, clients, ops, seeds),
            Command::Explore { bug, strategy, trials, budget_runs, twin, verbose } => {
                explore(&bug, &strategy, trials, budget_runs, twin, verbose)
            }
            Command::Worker => {
                let stdin = std::io::stdin();
                match pool::worker(stdin.lock(), std::io::stdout().lock()) {
                    Ok(()) => Ok(0),
                    Err(e) => Err(Error::Usage(format!("worker: {e}"))),
                }
            }
        };
        match result {
            Ok(code) => code,
            Err(Error::Usage(e)) => {
                eprintln!("error: {e}");
                i32::from(EXIT_USAGE)
            }
            Err(Error::Io(e)) => {
                eprintln!("error: {e}");
                1
            }
        }
    }

    /// Why a command could not do its work: a usage error (exit 2) or an I/O error (exit 1).
    enum Error {
        Usage(String),
        Io(String),
    }

    fn io_err(what: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
        move |e| Error::Io(format!("{}: {e}", what.display()))
    }

    fn parse_share(s: &str) -> Result<Ratio, String> {
        if s.contains('/') {
            return s.parse::<Ratio>().map_err(|e| e.to_string());
        }
        let bad = || format!("invalid share {s:?}: expected a ratio such as 1/20 or a decimal from 0 to 1");
        let p: f64 = s.trim().parse().map_err(|_| bad())?;
        if !(0.0..=1.0).contains(&p) {
            return Err(bad());
        }
        let (mut num, mut den) = ((p * 1_000_000.0).round() as u32, 1_000_000u32);
        // In lowest terms, so 0.05 prints as 1/20.
        let (mut a, mut b) = (num, den);
        while b != 0 {
            (a, b) = (b, a % b);
        }
        if a > 1 {
            num /= a;
            den /= a;
        }
        Ok(Ratio::new(num, den))
    }

    fn os_seed() -> Seed {
        // Not simulated code: the CLI itself picks a fresh seed, and prints it.
        #[allow(clippy::disallowed_types, clippy::disallowed_methods)]
        let h = std::collections::hash_map::RandomState::new();
        use std::hash::BuildHasher;
        Seed(h.hash_one(std::process::id()))
    }

    /// The scenarios a name selects, their negative controls if asked.
    fn scenarios(name: &str, negative_control: bool) -> Result<Vec<Scenario>, Error> {
        let scenarios = select(name).map_err(|e| Error::Usage(e.to_string()))?;
        if !negative_control {
            return Ok(scenarios);
        }
        let controls: Option<Vec<_>> = scenarios.iter().map(|s| s.negative_control()).collect();
        controls.ok_or_else(|| {
            let none: Vec<&str> =
                scenarios.iter().filter(|s| s.negative_control.is_none()).map(|s| s.name).collect();
            Error::Usage(format!("--negative-control: {} has no negative control", none.join(", ")))
        })
    }

    /// `dosim cost`: the mean cost of a run of a built-in scenario with `clients` x `ops` operations.
    fn cost(scenario: &str, clients: u32, ops: u32, seeds: u64) -> Result<i32, Error> {
        use dosim_scenarios::planted::objects::SafeCounter;
        use dosim_scenarios::testing::{
            CounterCalls, CounterModel, Linearizable, NoLostWrites, ObjectTest, Scenario as Kit, Workload,
        };
        let Some(kit) = Kit::named(scenario) else {
            return Err(Error::Usage(format!("no built-in scenario {scenario}")));
        };
        let (mut total, mut sim, mut events, mut failed) = (Duration::ZERO, Duration::ZERO, 0u64, 0u64);
        for s in 1..=seeds {
            let test = ObjectTest::new(Seed(s))
                .workload(
                    Workload::new("C", CounterCalls::rpc("add", "read"))
                        .objects(["a", "b", "c"])
                        .clients(clients)
                        .ops_per_client(ops)
                        .over(Duration::from_secs(20)),
                )
                .scenario(kit)
                .check(Linearizable(CounterModel::default()))
                .check(NoLostWrites::counter())
                .class::<SafeCounter>("C");
            let start = Instant::now();
            let result = test.run();
            total += start.elapsed();
            match result {
                Ok(r) => {
                    sim += r.wall_time;
                    events += r.trace.len();
                }
                Err(f) => {
                    sim += f.wall_time;
                    events += f.trace.len();
                    failed += 1;
                }
            }
        }
        let n = seeds as f64;
        let per_seed = total.as_secs_f64() / n;
        println!("scenario {scenario}: {clients} clients x {ops} ops, {seeds} seeds ({failed} failed)");
        println!(
            "  per seed: {:.2} ms ({:.2} ms simulation, {:.2} ms checks)",
            per_seed * 1e3,
            sim.as_secs_f64() / n * 1e3,
            (total - sim).as_secs_f64() / n * 1e3
        );
        println!("  trace events per seed: {:.0}", events as f64 / n);
        println!("  seeds per hour per core: {:.0}", 3600.0 / per_seed);
        println!("  simulated requests per wall second: {:.0}", f64::from(clients * ops) / per_seed);
        Ok(0)
    }

    /// `dosim explore`: the table of runs and wall time until each planted bug is found, per strategy.
    fn explore(
        bug: &str,
        strategy: &str,
        trials: u64,
        budget_runs: u64,
        twin: bool,
        verbose: bool,
    ) -> Result<i32, Error> {
        use dosim_scenarios::explore::{measure, Budget, Strategy};
        let mut names: Vec<&str> = dosim_scenarios::planted::catalogue().iter().map(|b| b.name).collect();
        let catalogue = names.clone();
        names.extend(dosim_scenarios::planted::SPARSE_VARIANTS);
        let bugs: Vec<&str> = if bug == "all" {
            catalogue
        } else if names.contains(&bug) {
            vec![bug]
        } else {
            return Err(Error::Usage(format!("no planted bug {bug}; the bugs: {}", names.join(", "))));
        };
        let strategies: Vec<Strategy> = match strategy {
            "both" => Strategy::ALL.to_vec(),
            "random" => vec![Strategy::Random],
            "guided" => vec![Strategy::Guided],
            other => return Err(Error::Usage(format!("--strategy {other}: random, guided or both"))),
        };
        println!(
            "{:<20} {:<8} {:>11} {:>14} {:>8} {:>11}",
            "bug", "strategy", "median runs", "median wall ms", "found", "ms per run"
        );
        let mut missed = false;
        for bug in bugs {
            for &s in &strategies {
                let progress = |t: u64, o: &dosim_scenarios::explore::ExploreSummary| {
                    if verbose {
                        match &o.found {
                            Some((runs, wall, seed, why)) => eprintln!(
                                "{bug} {s} trial {t}: found after {runs} runs, {} ms, seed {seed}: {why}",
                                wall.as_millis()
                            ),
                            None => eprintln!(
                                "{bug} {s} trial {t}: nothing in {} runs, {} ms (corpus {}, {} keys)",
                                o.runs,
                                o.wall.as_millis(),
                                o.corpus_size,
                                o.coverage_keys
                            ),
                        }
                    }
                };
                let Some(m) = measure(bug, s, trials, Budget::runs(budget_runs), twin, progress) else {
                    return Err(Error::Usage(format!("no planted bug {bug}")));
                };
                let runs = m.median_runs.map_or(format!(">{budget_runs}"), |r| r.to_string());
                let wall = m.median_wall.map_or("-".to_string(), |w| w.as_millis().to_string());
                println!(
                    "{:<20} {:<8} {:>11} {:>14} {:>8} {:>11.1}",
                    m.bug,
                    s.name(),
                    runs,
                    wall,
                    format!("{}/{}", m.found, m.trials),
                    m.mean_run.as_secs_f64() * 1000.0
                );
                missed |= if twin { m.found > 0 } else { m.found < m.trials };
            }
        }
        // A twin found failing, or a bug some trial missed: exit 1.
        Ok(i32::from(missed))
    }

    /// The command that starts a worker: this binary's hidden `worker` subcommand.
    fn worker_command() -> Process {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("dosim"));
        let mut c = Process::new(exe);
        c.arg("worker");
        c
    }

    fn run(
        name: &str,
        seed: Option<Seed>,
        seeds: u64,
        jobs: u64,
        json: bool,
        check_determinism: bool,
        negative_control: bool,
    ) -> Result<i32, Error> {
        let scenarios = scenarios(name, negative_control)?;
        let base = seed.unwrap_or_else(os_seed);
        if !json {
            eprintln!("seed: {base}");
            eprintln!("seeds: {seeds}");
            eprintln!("scenarios: {}", scenarios.iter().map(|s| s.name).collect::<Vec<_>>().join(", "));
            eprintln!("check_determinism: {check_determinism}");
            if jobs > 1 {
                eprintln!("jobs: {jobs}");
            }
            if negative_control {
                eprintln!("negative_control: true (these runs are expected to fail under some seeds)");
            }
        }
        let serial = jobs <= 1;
        let tasks = scenarios.iter().flat_map(|s| {
            (0..seeds).map(move |index| Task {
                index,
                scenario: *s,
                seed: base.nth(index),
                check_determinism,
                negative_control,
            })
        });
        // In a serial run the options print as its run starts, so they are there even if it never ends;
        // with workers, in order with the result.
        let tasks = tasks.inspect(|t| {
            if serial && !json {
                print!("{}", (t.scenario.options)(t.seed));
                let _ = std::io::stdout().flush();
            }
        });
        let mut outcomes = Vec::new();
        let mut faults: BTreeMap<String, u64> = BTreeMap::new();
        let mut marks: BTreeMap<String, u64> = BTreeMap::new();
        let mut wall = Duration::ZERO;
        let mut failures = 0u64;
        let done = |t: &Task, r: SeedRecord| {
            wall += Duration::from_millis(r.wall_ms);
            for (k, v) in &r.faults {
                *faults.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &r.sometimes {
                *marks.entry(format!("{}: {k}", r.scenario)).or_default() += v;
            }
            let outcome = match (r.failure_class(), &r.failure) {
                (Some(class), Some(m)) => SeedOutcome::Fail(class, m.clone()),
                _ => SeedOutcome::Pass,
            };
            failures += u64::from(outcome != SeedOutcome::Pass);
            outcomes.push(outcome);
            if json {
                println!("{}", r.json_line());
            } else {
                if !serial {
                    print!("{}", (t.scenario.options)(t.seed));
                }
                print_text(&r);
            }
        };
        pool::execute(tasks, jobs as usize, &worker_command, || false, done)
            .map_err(|e| Error::Io(format!("starting a worker: {e}")))?;
        if !json {
            let runs = outcomes.len();
            let per_sec = if wall.is_zero() { 0.0 } else { runs as f64 / wall.as_secs_f64() };
            let faults: Vec<String> = faults.iter().map(|(k, v)| format!("{k}={v}")).collect();
            eprintln!();
            eprintln!("{runs} runs, {failures} failed, {per_sec:.1} runs per wall second of run time");
            eprintln!("faults injected: {}", faults.join(" "));
            for (k, v) in &marks {
                eprintln!("sometimes: {k} = {v}");
            }
        }
        Ok(i32::from(campaign_exit_code(&outcomes)))
    }

    fn print_text(r: &SeedRecord) {
        let tag = match &r.class {
            None => "PASS".to_string(),
            Some(class) => format!("FAIL({class})"),
        };
        println!(
            "{tag} {} seed={} hash={} events={} sim={}ms wall={}ms",
            r.scenario, r.seed, r.trace_hash, r.events, r.sim_ms, r.wall_ms
        );
        if let Some(report) = &r.report {
            println!("{report}");
        }
        if let Some(replay) = &r.replay {
            println!("replay: {replay}");
        }
    }

    fn replay(
        name: &str,
        seed: Seed,
        trace_file: Option<&Path>,
        html_file: Option<&Path>,
        negative_control: bool,
        keep: Option<String>,
    ) -> Result<i32, Error> {
        if let Some(path) = html_file {
            // A scenario of the test kit writes its page itself, with its clients' operations.
            if path.exists() {
                std::fs::remove_file(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
            }
            std::env::set_var(dosim_scenarios::testing::ENV_HTML, path);
        }
        let scenarios = scenarios(name, negative_control)?;
        let [scenario] = scenarios[..] else {
            return Err(Error::Usage("replay runs one scenario: name it, not all".to_string()));
        };
        if let Some(mask) = &keep {
            if dosim_scenarios::testing::Scenario::named(name).is_none() {
                return Err(Error::Usage(format!(
                    "--keep: {name}: a plan mask needs a scenario of the test kit"
                )));
            }
            mask.parse::<dosim_scenarios::testing::shrink::Mask>()
                .map_err(|e| Error::Usage(format!("--keep: {e}")))?;
        }
        print!("{}", (scenario.options)(seed));
        if let Some(mask) = &keep {
            println!("keep={mask}");
        }
        let _ = std::io::stdout().flush();
        let result: Result<RunReport, RunFailure> =
            dosim_sim::harness::with_plan_mask(keep, || (scenario.run)(seed));
        let (trace, code): (&Trace, i32) = match &result {
            Ok(r) => {
                println!(
                    "PASS {} seed={} hash={:016x} events={} sim={}ms wall={}ms",
                    scenario.name,
                    seed,
                    r.trace_hash(),
                    r.trace.len(),
                    r.sim_time.as_millis(),
                    r.wall_time.as_millis()
                );
                println!("faults: {}", r.faults);
                for (k, v) in &r.sometimes {
                    println!("sometimes: {k} = {v}");
                }
                (&r.trace, 0)
            }
            Err(f) => {
                let mut f = f.clone();
                f.seed = seed;
                println!("FAIL({}) {}", f.kind.class(), scenario.name);
                println!("{f}");
                (&result.as_ref().unwrap_err().trace, i32::from(dosim_scenarios::exit_code(f.kind.class())))
            }
        };
        // The outputs that render the trace.
        if let (Some(path), Err(f)) = (html_file, &result) {
            if !path.exists() {
                // Not a scenario of the kit: the page has no clients' operations.
                let mut f = f.clone();
                f.seed = seed;
                let meta = dosim_scenarios::report_html::ReportMeta {
                    title: format!("{} seed {seed}", scenario.name),
                    replay: Some(format!("cargo dosim replay {} --seed {seed}", scenario.name)),
                };
                std::fs::write(path, dosim_scenarios::report_html::render(&f, &[], &meta))
                    .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
            }
            eprintln!("html: the failing run's timeline is in {}", path.display());
        } else if let Some(path) = html_file {
            eprintln!("html: the run passed, so {} was not written", path.display());
        }
        if let Some(path) = trace_file {
            write_trace(trace, path)?;
            eprintln!("trace: {} events written to {}", trace.events().len(), path.display());
        }
        Ok(code)
    }

    /// `dosim shrink`: runs the seed; if it fails, shrinks it, prints the steps and the mask, and appends the
    /// regression line to `save`. Exits 0 if the seed passes, else with the failure's code.
    fn shrink(name: &str, seed: Seed, save: Option<&Path>, negative_control: bool) -> Result<i32, Error> {
        use dosim_scenarios::builtin;
        use dosim_scenarios::regressions::{self, Regression};
        use dosim_scenarios::testing::{shrink, Scenario as Kit};
        // An unknown name is a usage error as for `run`; a known one outside the kit cannot be shrunk.
        scenarios(name, false)?;
        let kit = Kit::named(name).ok_or_else(|| {
            Error::Usage(format!(
                "{name}: shrinking needs a scenario of the test kit ({})",
                Kit::ALL.iter().map(|k| k.name()).collect::<Vec<_>>().join(", ")
            ))
        })?;
        if negative_control && builtin::negative_control_test(kit, seed).is_none() {
            return Err(Error::Usage(format!("--negative-control: {name} has no negative control")));
        }
        let make = || {
            if negative_control {
                builtin::negative_control_test(kit, seed).expect("checked above")
            } else {
                builtin::test(kit, seed)
            }
        };
        let failure = match make().run() {
            Ok(r) => {
                println!("PASS {name} seed={seed} hash={:016x}: nothing to shrink", r.trace_hash());
                return Ok(0);
            }
            Err(mut f) => {
                f.seed = seed;
                f
            }
        };
        println!("FAIL({}) {name} seed={seed}: {}", failure.kind.class(), failure.kind);
        let _ = std::io::stdout().flush();
        let shrunk = shrink::shrink(make, &failure).map_err(|e| Error::Io(e.to_string()))?;
        print!("{shrunk}");
        let line = Regression {
            scenario: name.to_string(),
            seed,
            keep: Some(shrunk.mask.to_string()),
            note: Some(format!(
                "shrunk{}: {} steps, {}",
                if negative_control { " negative control" } else { "" },
                shrunk.steps.len(),
                shrink::check_name(&failure_message(&shrunk.failure.kind))
            )),
        };
        let rendered = regressions::render(std::slice::from_ref(&line));
        println!(
            "replay: cargo dosim replay {name} --seed {seed} --keep '{}'{}",
            shrunk.mask,
            if negative_control { " --negative-control" } else { "" }
        );
        if let Some(path) = save {
            let mut file =
                std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io_err(path))?;
            file.write_all(rendered.as_bytes()).map_err(io_err(path))?;
            eprintln!("saved to {}: {}", path.display(), rendered.trim_end());
        } else {
            print!("regression line: {rendered}");
        }
        Ok(i32::from(dosim_scenarios::exit_code(shrunk.failure.kind.class())))
    }

    /// A failure's message: a check's violation without the `check failed: ` prefix.
    fn failure_message(kind: &dosim_sim::FailureKind) -> String {
        match kind {
            dosim_sim::FailureKind::Check(m) => m.clone(),
            other => other.to_string(),
        }
    }

    /// Writes every event of a trace to `path`, one per line, as the report prints events.
    fn write_trace(trace: &Trace, path: &Path) -> Result<(), Error> {
        if !trace.is_full() || trace.events().len() as u64 != trace.len() {
            return Err(Error::Io(format!(
                "the run kept only the last {} of {} events; cannot write the whole trace",
                trace.events().len(),
                trace.len()
            )));
        }
        let file = std::fs::File::create(path).map_err(io_err(path))?;
        let mut w = std::io::BufWriter::new(file);
        for e in trace.events() {
            writeln!(w, "{e}").map_err(io_err(path))?;
        }
        w.flush().map_err(io_err(path))
    }

    /// What a campaign runs.
    struct CampaignConfig {
        /// Seed indices below this (None: until the time budget is used).
        seeds: Option<u64>,
        time: Option<Duration>,
        jobs: u64,
        shard: Shard,
        seed_base: Seed,
        determinism_share: Ratio,
        negative_control: bool,
    }

    /// The campaign's progress on stderr: a bar on a terminal, a line every few seconds otherwise.
    enum Progress {
        Bar(ProgressBar),
        Lines { last: Instant },
    }

    const PROGRESS_EVERY: Duration = Duration::from_secs(10);

    fn campaign(names: &str, c: &CampaignConfig, out: &Path) -> Result<i32, Error> {
        let mut scenarios = Vec::new();
        for name in names.split(',').map(str::trim) {
            for s in self::scenarios(name, c.negative_control)? {
                if !scenarios.iter().any(|o: &Scenario| o.name == s.name) {
                    scenarios.push(s);
                }
            }
        }
        let order: Vec<&str> = scenarios.iter().map(|s| s.name).collect();
        eprintln!("seed base: {}", c.seed_base);
        eprintln!("shard: {} (seed indices i with i % {} == {})", c.shard, c.shard.count, c.shard.index);
        eprintln!("scenarios: {}", order.join(", "));
        match (c.seeds, c.time) {
            (_, Some(t)) => eprintln!("budget: {}s of wall time", t.as_secs()),
            (Some(n), None) => eprintln!("seeds: indices 0 to {} (this shard's share)", n - 1),
            (None, None) => {}
        }
        eprintln!("jobs: {}", c.jobs);
        eprintln!("determinism share: {}", c.determinism_share);
        if c.negative_control {
            eprintln!("negative_control: true (these runs are expected to fail under some seeds)");
        }
        eprintln!("out: {}", out.display());
        std::fs::create_dir_all(out).map_err(io_err(out))?;
        // The failures of an earlier campaign in the same directory would read as this one's.
        let failures_dir = out.join("failures");
        if failures_dir.exists() {
            std::fs::remove_dir_all(&failures_dir).map_err(io_err(&failures_dir))?;
        }

        let mut report = CampaignReport::new(c.seed_base, c.shard, &order, c.determinism_share.to_string());
        report.negative_control = c.negative_control;
        let limit = c.seeds;
        let indices = c.shard.indices().take_while(move |i| limit.is_none_or(|n| *i < n));
        let tasks = indices.flat_map(|index| {
            let seed = c.seed_base.nth(index);
            let check_determinism = sampled_for_determinism(seed, c.determinism_share);
            scenarios.iter().map(move |s| Task {
                index,
                scenario: *s,
                seed,
                check_determinism,
                negative_control: c.negative_control,
            })
        });
        let total =
            c.seeds.map(|n| (0..n).filter(|i| c.shard.contains(*i)).count() as u64 * order.len() as u64);
        let start = Instant::now();
        let deadline = c.time.map(|t| start + t);
        let mut progress = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(
                Some(total.unwrap_or_else(|| c.time.map_or(0, |t| t.as_secs()))),
                ProgressDrawTarget::stderr(),
            );
            let template = if total.is_some() {
                "{elapsed_precise} [{bar:40}] {pos}/{len} seeds {msg}"
            } else {
                "{elapsed_precise} [{bar:40}] {pos}/{len}s {msg}"
            };
            bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
            Progress::Bar(bar)
        } else {
            Progress::Lines { last: start }
        };
        let mut ran = 0u64;
        let mut failed = 0u64;
        let mut write_error: Option<Error> = None;
        let done = |t: &Task, r: SeedRecord| {
            ran += 1;
            report.add(t.index, &r);
            if let Some(class) = &r.class {
                failed += 1;
                let line = format!(
                    "FAIL({class}) {} seed={}: {}\nreplay: {}",
                    r.scenario,
                    r.seed,
                    r.failure.as_deref().unwrap_or(""),
                    r.replay.as_deref().unwrap_or("")
                );
                match &progress {
                    Progress::Bar(bar) => bar.println(line),
                    Progress::Lines { .. } => eprintln!("{line}"),
                }
                let path = failure_file(out, &r.scenario, &r.seed);
                let text = format!(
                    "{}\nreplay: {}",
                    r.report.as_deref().unwrap_or_else(|| r.failure.as_deref().unwrap_or("")).trim_end(),
                    r.replay.as_deref().unwrap_or("")
                );
                let written = std::fs::create_dir_all(out.join("failures"))
                    .and_then(|()| std::fs::write(&path, text + "\n"));
                if let Err(e) = written {
                    write_error.get_or_insert(io_err(&path)(e));
                }
            }
            let elapsed = start.elapsed();
            match &mut progress {
                Progress::Bar(bar) => {
                    bar.set_message(format!("{ran} seeds, {failed} failed"));
                    match total {
                        Some(_) => bar.inc(1),
                        None => bar.set_position(elapsed.as_secs()),
                    }
                }
                Progress::Lines { last } => {
                    if last.elapsed() >= PROGRESS_EVERY {
                        *last = Instant::now();
                        let of = total.map_or_else(String::new, |t| format!(" of {t}"));
                        eprintln!("progress: {ran}{of} seeds, {failed} failed, {}s", elapsed.as_secs());
                    }
                }
            }
        };
        let stop = || deadline.is_some_and(|d| Instant::now() >= d);
        pool::execute(tasks, c.jobs as usize, &worker_command, stop, done)
            .map_err(|e| Error::Io(format!("starting a worker: {e}")))?;
        if let Progress::Bar(bar) = &progress {
            bar.finish_and_clear();
        }
        if let Some(e) = write_error {
            return Err(e);
        }
        report.elapsed_s = (start.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        report.finish();
        report.write(out).map_err(io_err(out))?;
        eprintln!("{ran} seeds in {:.1}s, {failed} failed; report in {}", report.elapsed_s, out.display());
        print!("{}", report.summary());
        Ok(i32::from(report.exit_code()))
    }

    fn merge(dirs: &[PathBuf], out: &Path) -> Result<i32, Error> {
        let reports: Vec<CampaignReport> =
            dirs.iter().map(|d| CampaignReport::read(d)).collect::<Result<_, _>>().map_err(Error::Io)?;
        let merged = CampaignReport::merge(&reports).map_err(Error::Usage)?;
        let missing = merged.missing_shards();
        if !missing.is_empty() {
            eprintln!("warning: no report of shard(s) {}", missing.join(", "));
        }
        merged.write(out).map_err(io_err(out))?;
        // The failures' full reports, next to the merged report.
        for dir in dirs {
            let from = dir.join("failures");
            let Ok(entries) = std::fs::read_dir(&from) else { continue };
            let to = out.join("failures");
            std::fs::create_dir_all(&to).map_err(io_err(&to))?;
            for e in entries {
                let e = e.map_err(io_err(&from))?;
                let target = to.join(e.file_name());
                if e.path() != target {
                    std::fs::copy(e.path(), &target).map_err(io_err(&target))?;
                }
            }
        }
        eprintln!(
            "merged {} report(s) (shards {}) into {}",
            reports.len(),
            merged.shards.join(", "),
            out.display()
        );
        print!("{}", merged.summary());
        Ok(i32::from(merged.exit_code()))
    }
}
