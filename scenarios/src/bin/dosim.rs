//! `dosim`: list the scenarios and run them over seeds.
//!
//! Exit codes: 0 when every seed passed, 1 when a failure (or nondeterminism) was found, 2 on a usage error.

#[cfg(not(madsim))]
fn main() {
    eprintln!("dosim: this binary runs simulations and must be built with --cfg madsim; use `cargo dosim …`");
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
    use dosim_scenarios::{run_seed, select, SeedOutcome, SeedResult};
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
        },
    }

    pub(crate) fn main() -> i32 {
        let cli = match Cli::try_parse() {
            Ok(c) => c,
            Err(e) => {
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
            Command::Run { scenario, seed, seeds, json, check_determinism } => {
                let scenarios = match select(&scenario) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return 2;
                    }
                };
                let base = seed.unwrap_or_else(os_seed);
                if !json {
                    eprintln!("seed: {base}");
                    eprintln!("seeds: {seeds}");
                    eprintln!(
                        "scenarios: {}",
                        scenarios.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                    );
                    eprintln!("check_determinism: {check_determinism}");
                }
                let mut failures = 0u64;
                let mut totals = FaultCounts::default();
                let mut marks: BTreeMap<String, u64> = BTreeMap::new();
                let mut wall = Duration::ZERO;
                let mut runs = 0u64;
                for s in &scenarios {
                    for i in 0..seeds {
                        let seed = base.nth(i);
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
                        if json {
                            println!("{}", json_line(&r));
                        } else {
                            print_text(&r);
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
                i32::from(failures > 0)
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

    fn print_text(r: &SeedResult) {
        let tag = match r.outcome {
            SeedOutcome::Pass => "PASS",
            SeedOutcome::Fail(_) => "FAIL",
            SeedOutcome::Nondeterministic(_) => "NONDETERMINISTIC",
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
            println!("replay: cargo dosim run {} --seed {}", r.scenario, r.seed);
        }
    }

    fn json_line(r: &SeedResult) -> String {
        let faults: serde_json::Map<String, serde_json::Value> =
            r.faults.iter().map(|(k, n)| (k.name().to_string(), n.into())).collect();
        let mut v = serde_json::json!({
            "scenario": r.scenario,
            "seed": r.seed.to_string(),
            "outcome": r.outcome.name(),
            "trace_hash": format!("{:016x}", r.trace_hash),
            "events": r.events,
            "sim_ms": r.sim_time.as_millis() as u64,
            "wall_ms": r.wall_time.as_millis() as u64,
            "faults": faults,
            "sometimes": r.sometimes,
        });
        if let SeedOutcome::Fail(m) | SeedOutcome::Nondeterministic(m) = &r.outcome {
            v["failure"] = m.clone().into();
            v["replay"] = format!("cargo dosim run {} --seed {}", r.scenario, r.seed).into();
        }
        v.to_string()
    }
}
