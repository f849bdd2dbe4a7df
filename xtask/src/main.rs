//! Project tasks, run as `cargo xtask <task>`.
//!
//! - `cargo xtask test`: every test of the workspace, first the plain build, then the simulation build
//!   (`--cfg madsim`, in `target/sim`), then the example of a user's crate (`examples/account`, outside the
//!   workspace, in the simulation build's target directory). Extra arguments go to the workspace's two
//!   `cargo test` runs.
//!
//! Campaign-sized tests run as many seeds as `DOSIM_CAMPAIGN_SEEDS` says (one when it is unset); this task
//! sets it to [`CI_CAMPAIGN_SEEDS`] unless the environment already does, so CI runs a small campaign.
//!
//! The simulation build takes its `--cfg madsim` from `.cargo/sim.toml`. An environment `RUSTFLAGS` would
//! silently override that and compile the simulation tests away ("running 0 tests … ok"); so this task adds
//! `--cfg madsim` to an inherited `RUSTFLAGS` instead, and the sim crate's build-guard test fails if a
//! simulation build ever lacks the cfg.

#[cfg(test)]
mod tidy;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// The environment variable that sets the seeds per scenario of campaign-sized tests.
const ENV_CAMPAIGN_SEEDS: &str = "DOSIM_CAMPAIGN_SEEDS";
/// The seeds per scenario of the campaign `cargo xtask test` runs (each seed twice: the determinism check).
const CI_CAMPAIGN_SEEDS: u32 = 4;

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().expect("xtask lives in the workspace").to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    if std::env::var_os(ENV_CAMPAIGN_SEEDS).is_none() {
        c.env(ENV_CAMPAIGN_SEEDS, CI_CAMPAIGN_SEEDS.to_string());
    }
    c
}

fn run(step: &str, mut cmd: Command) -> bool {
    eprintln!("xtask: {step}");
    match cmd.status() {
        Ok(s) if s.success() => true,
        Ok(s) => {
            eprintln!("xtask: {step} failed ({s})");
            false
        }
        Err(e) => {
            eprintln!("xtask: cannot run cargo for {step}: {e}");
            false
        }
    }
}

fn test(extra: &[String]) -> ExitCode {
    let mut plain = cargo();
    plain.args(["test", "--workspace"]).args(extra);
    let mut sim = cargo();
    sim.args(["test", "--config", ".cargo/sim.toml", "--workspace"]).args(extra);
    if let Ok(flags) = std::env::var("RUSTFLAGS") {
        sim.env("RUSTFLAGS", format!("{flags} --cfg madsim"));
    }
    let plain_ok = run("plain build: cargo test --workspace", plain);
    let sim_ok = run("simulation build: cargo test --config .cargo/sim.toml --workspace", sim);
    // The example of a user's crate outside the workspace, testing its own object with the test kit; in the
    // simulation build's target directory, so it reuses that build.
    let mut example = cargo();
    let dir = workspace_root().join("examples/account");
    example.current_dir(&dir).env("CARGO_TARGET_DIR", workspace_root().join("target/sim")).args([
        "test",
        "--config",
        ".cargo/sim.toml",
    ]);
    if let Ok(flags) = std::env::var("RUSTFLAGS") {
        example.env("RUSTFLAGS", format!("{flags} --cfg madsim"));
    }
    let example_ok = run("a user's crate: examples/account, cargo simtest", example);
    if plain_ok && sim_ok && example_ok {
        eprintln!("xtask: all tests passed, plain and simulated");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some(other) => {
            eprintln!("xtask: unknown task {other:?}: expected `test`");
            ExitCode::from(2)
        }
        None => {
            eprintln!("usage: cargo xtask test [cargo test arguments]");
            ExitCode::from(2)
        }
    }
}
