//! `dosim`: list the scenarios and run them over seeds.
//!
//! Before each run it prints the options the scenario derived from the seed, as `key=value` lines starting
//! with `seed=` (in `--json`, an `options` object of each line).
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
    use std::time::Duration;

    use clap::{Parser, Subcommand};
    use dosim_scenarios::{campaign_exit_code, run_seed, select, SeedOutcome, SeedResult, EXIT_USAGE};
    use dosim_sim::{FaultCounts, Seed};

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
        match cli.command {
            Command::List => {
                for s in dosim_scenarios::all() {
                    println!("{:<20} {}", s.name, s.summary);
                }
                0
            }
            Command::Run { scenario, seed, seeds, json, check_determinism, negative_control } => {
                let mut scenarios = match select(&scenario) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return i32::from(EXIT_USAGE);
                    }
                };
                if negative_control {
                    let controls: Option<Vec<_>> = scenarios.iter().map(|s| s.negative_control()).collect();
                    match controls {
                        Some(c) => scenarios = c,
                        None => {
                            let none: Vec<&str> = scenarios
                                .iter()
                                .filter(|s| s.negative_control.is_none())
                                .map(|s| s.name)
                                .collect();
                            eprintln!(
                                "error: --negative-control: {} has no negative control",
                                none.join(", ")
                            );
                            return i32::from(EXIT_USAGE);
                        }
                    }
                }
                let base = seed.unwrap_or_else(os_seed);
                if !json {
                    eprintln!("seed: {base}");
                    eprintln!("seeds: {seeds}");
                    eprintln!(
                        "scenarios: {}",
                        scenarios.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                    );
                    eprintln!("check_determinism: {check_determinism}");
                    if negative_control {
                        eprintln!(
                            "negative_control: true (these runs are expected to fail under some seeds)"
                        );
                    }
                }
                let mut failures = 0u64;
                let mut outcomes = Vec::new();
                let mut totals = FaultCounts::default();
                let mut marks: BTreeMap<String, u64> = BTreeMap::new();
                let mut wall = Duration::ZERO;
                let mut runs = 0u64;
                for s in &scenarios {
                    for i in 0..seeds {
                        let seed = base.nth(i);
                        if !json {
                            // The options before the run, so they are there even if the run never ends.
                            print!("{}", (s.options)(seed));
                        }
                        let r = run_seed(s, seed, check_determinism);
                        runs += 1;
                        wall += r.wall_time;
                        totals.merge(&r.faults);
                        for (k, v) in &r.sometimes {
                            *marks.entry(format!("{}: {k}", s.name)).or_default() += v;
                        }
                        if r.outcome != SeedOutcome::Pass {
                            failures += 1;
                        }
                        outcomes.push(r.outcome.clone());
                        if json {
                            println!("{}", json_line(&r, negative_control));
                        } else {
                            print_text(&r, negative_control);
                        }
                    }
                }
                if !json {
                    let per_sec = if wall.is_zero() { 0.0 } else { runs as f64 / wall.as_secs_f64() };
                    eprintln!();
                    eprintln!("{runs} runs, {failures} failed, {per_sec:.1} runs per wall second");
                    eprintln!("faults injected: {totals}");
                    for (k, v) in &marks {
                        eprintln!("sometimes: {k} = {v}");
                    }
                }
                i32::from(campaign_exit_code(&outcomes))
            }
        }
    }

    fn os_seed() -> Seed {
        // Not simulated code: the CLI itself picks a fresh seed, and prints it.
        #[allow(clippy::disallowed_types, clippy::disallowed_methods)]
        let h = std::collections::hash_map::RandomState::new();
        use std::hash::BuildHasher;
        Seed(h.hash_one(std::process::id()))
    }

    fn replay(r: &SeedResult, negative_control: bool) -> String {
        let control = if negative_control { " --negative-control" } else { "" };
        format!("cargo dosim run {} --seed {}{control}", r.scenario, r.seed)
    }

    fn print_text(r: &SeedResult, negative_control: bool) {
        let tag = match &r.outcome {
            SeedOutcome::Pass => "PASS".to_string(),
            SeedOutcome::Fail(class, _) => format!("FAIL({class})"),
        };
        println!(
            "{tag} {} seed={} hash={:016x} events={} sim={}ms wall={}ms",
            r.scenario,
            r.seed,
            r.trace_hash,
            r.events,
            r.sim_time.as_millis(),
            r.wall_time.as_millis()
        );
        if let Some(report) = &r.report {
            println!("{report}");
            println!("replay: {}", replay(r, negative_control));
        }
    }

    fn json_line(r: &SeedResult, negative_control: bool) -> String {
        let faults: serde_json::Map<String, serde_json::Value> =
            r.faults.iter().map(|(k, n)| (k.name().to_string(), n.into())).collect();
        let options: serde_json::Map<String, serde_json::Value> =
            r.options.iter().map(|(k, v)| (k.to_string(), v.into())).collect();
        let mut v = serde_json::json!({
            "scenario": r.scenario,
            "seed": r.seed.to_string(),
            "options": options,
            "outcome": r.outcome.name(),
            "trace_hash": format!("{:016x}", r.trace_hash),
            "events": r.events,
            "sim_ms": r.sim_time.as_millis() as u64,
            "wall_ms": r.wall_time.as_millis() as u64,
            "faults": faults,
            "sometimes": r.sometimes,
        });
        if let SeedOutcome::Fail(class, m) = &r.outcome {
            v["class"] = class.name().into();
            v["failure"] = m.clone().into();
            v["replay"] = replay(r, negative_control).into();
        }
        v.to_string()
    }
}
