//! The `dosim` CLI: listing, the options printed before each run, JSON lines, exit codes, and errors that
//! name the bad value.

use std::process::Command;

fn dosim(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dosim")).args(args).output().expect("run dosim");
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn list_names_every_scenario() {
    let (code, out, _) = dosim(&["list"]);
    assert_eq!(code, 0);
    for s in dosim_scenarios::all() {
        assert!(out.contains(s.name), "{out}");
    }
}

#[test]
fn run_json_prints_one_line_per_seed_with_the_required_fields() {
    let (code, out, err) = dosim(&["run", "replicated-counter", "--seed", "0x2a", "--seeds", "2", "--json"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in
            ["scenario", "seed", "options", "outcome", "trace_hash", "events", "sim_ms", "wall_ms", "faults"]
        {
            assert!(v.get(key).is_some(), "missing {key} in {line}");
        }
        assert_eq!(v["outcome"], "pass");
        assert_eq!(v["scenario"], "replicated-counter");
        // The options are an object of the same key=value pairs, the seed among them.
        assert_eq!(v["options"]["seed"], v["seed"], "{line}");
        assert!(v["options"]["faults"].is_string(), "{line}");
        assert!(v["options"]["increments"].is_string(), "{line}");
    }
    // The first seed of a campaign is the seed given.
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["seed"], "0x000000000000002a");
}

#[test]
fn run_prints_the_options_as_key_value_lines_before_the_run() {
    let (code, out, err) = dosim(&["run", "sqlite-power-cut", "--seed", "0x2a"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "seed=0x000000000000002a", "{out}");
    let result = lines.iter().position(|l| l.starts_with("PASS ")).expect("a PASS line");
    let options = &lines[..result];
    for key in ["journal", "power_cuts_at_disk_ops", "faults", "disk_io_error_rate", "transfers"] {
        assert!(options.iter().any(|l| l.starts_with(&format!("{key}="))), "no {key} before the run:\n{out}");
    }
    assert!(options.iter().all(|l| l.split_once('=').is_some_and(|(k, _)| !k.contains(' '))), "{out}");
}

#[test]
fn a_broken_invariant_exits_3_with_its_class_and_replay_command() {
    // The bank's negative control (acknowledging before the commit) loses an acknowledged transfer under
    // this seed; the ledger check reports a broken invariant.
    let (code, out, err) =
        dosim(&["run", "sqlite-power-cut", "--negative-control", "--seed", "0x5", "--json"]);
    assert_eq!(code, 3, "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["outcome"], "fail");
    assert_eq!(v["class"], "invariant");
    assert!(v["failure"].as_str().unwrap().contains("acknowledged transfers lost"), "{out}");
    assert_eq!(v["replay"], "cargo dosim run sqlite-power-cut --seed 0x0000000000000005 --negative-control");
    // A scenario without a negative control cannot run one: a usage error.
    let (code, _, err) = dosim(&["run", "replicated-counter", "--negative-control"]);
    assert_eq!(code, 2);
    assert!(err.contains("replicated-counter has no negative control"), "{err}");
}

#[test]
fn the_same_seed_gives_the_same_hash_in_two_processes() {
    let hash = |_: u32| {
        let (code, out, _) = dosim(&["run", "sqlite-power-cut", "--seed", "77", "--json"]);
        assert_eq!(code, 0);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        v["trace_hash"].as_str().unwrap().to_string()
    };
    assert_eq!(hash(1), hash(2));
}

#[test]
fn usage_errors_exit_2_and_name_the_value() {
    let (code, _, err) = dosim(&["run", "no-such-scenario"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown scenario \"no-such-scenario\""), "{err}");
    let (code, _, err) = dosim(&["run", "all", "--seed", "0xzz"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid seed \"0xzz\""), "{err}");
    let (code, _, _) = dosim(&["run", "all", "--seeds", "0"]);
    assert_eq!(code, 2);
    let (code, _, _) = dosim(&["frobnicate"]);
    assert_eq!(code, 2);
}
