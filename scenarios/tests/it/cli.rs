//! The `dosim` CLI: listing, the options printed before each run, JSON lines, exit codes, errors that name
//! the bad value; `--jobs` against a serial run, `replay --trace`, campaigns (their output directory, shards,
//! the time budget, the determinism sample), `merge` and `explore`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use dosim_scenarios::regressions;
use serde_json::Value;

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
        for key in [
            "scenario",
            "seed",
            "outcome",
            "trace_hash",
            "events",
            "sim_ms",
            "wall_ms",
            "options",
            "failure",
            "class",
            "replay",
            "faults",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {line}");
        }
        assert_eq!(v["outcome"], "pass");
        // A pass has no failure: the keys are there, null.
        for key in ["failure", "class", "replay"] {
            assert!(v[key].is_null(), "{key} of a pass: {line}");
        }
        assert!(v.get("report").is_none(), "the full report stays out of --json: {line}");
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

/// A fresh directory under the test target's scratch space.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The lines of `--json` output with the wall times (the only fields that vary between runs) removed.
fn without_wall_times(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            assert!(o.remove("wall_ms").is_some(), "{l}");
            o.remove("wall_us");
            v
        })
        .collect()
}

#[test]
fn jobs_print_the_same_lines_in_the_same_order_as_a_serial_run() {
    // Passing seeds, in seed order.
    let args = ["run", "replicated-counter", "--seed", "0x2a", "--seeds", "3", "--json"];
    let (code, serial, err) = dosim(&args);
    assert_eq!(code, 0, "{err}");
    let (code, parallel, err) = dosim(&[&args[..], &["--jobs", "3"]].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(serial.lines().count(), 3);
    assert_eq!(without_wall_times(&serial), without_wall_times(&parallel));
    // Failing seeds (a negative control) through the workers: the same lines, the same exit code.
    let args = ["run", "sqlite-power-cut", "--negative-control", "--seed", "0x5", "--seeds", "3", "--json"];
    let (code, serial, _) = dosim(&args);
    assert_eq!(code, 3, "{serial}");
    let (code, parallel, err) = dosim(&[&args[..], &["--jobs", "2"]].concat());
    assert_eq!(code, 3, "{err}");
    let lines = without_wall_times(&parallel);
    assert_eq!(without_wall_times(&serial), lines);
    assert_eq!(lines[0]["class"], "invariant", "{parallel}");
}

#[test]
fn replay_writes_every_event_of_the_trace_to_a_file() {
    let dir = scratch("replay");
    let file = dir.join("trace.txt");
    let (code, out, err) =
        dosim(&["replay", "sqlite-power-cut", "--seed", "0x2a", "--trace", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (_, json, _) = dosim(&["run", "sqlite-power-cut", "--seed", "0x2a", "--json"]);
    let run: Value = serde_json::from_str(json.trim()).unwrap();
    assert!(
        out.contains(&format!(
            "PASS sqlite-power-cut seed=0x000000000000002a hash={}",
            run["trace_hash"].as_str().unwrap()
        )),
        "{out}"
    );
    let trace = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = trace.lines().collect();
    assert_eq!(lines.len() as u64, run["events"].as_u64().unwrap(), "every event, one per line");
    // The events in order, numbered from 0, as the report prints them.
    for (i, line) in lines.iter().enumerate() {
        assert!(line.starts_with(&format!("#{i} ")), "line {i}: {line}");
    }
    // A failing seed: its report, exit code 3, and its trace up to the failure.
    let (code, out, _) = dosim(&[
        "replay",
        "sqlite-power-cut",
        "--negative-control",
        "--seed",
        "0x5",
        "--trace",
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("acknowledged transfers lost") && out.contains("last 40 events:"), "{out}");
    let events: u64 = out.split(" events)").next().unwrap().rsplit('(').next().unwrap().parse().unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count() as u64, events, "{out}");
}

/// Runs a campaign into `dir` and returns its exit code, stdout and report.
fn campaign(dir: &Path, args: &[&str]) -> (i32, String, Value) {
    let (code, out, err) = dosim(&[&["campaign", "--out", dir.to_str().unwrap()], args].concat());
    assert!(code == 0 || code == 3, "{out}\n{err}");
    (code, out, read_json(&dir.join("report.json")))
}

#[test]
fn a_campaign_writes_its_report_regressions_and_each_failure() {
    let dir = scratch("campaign");
    // Every seed of the bank's negative control fails here (acknowledging before the commit).
    let (code, out, report) = campaign(
        &dir,
        &[
            "--scenarios",
            "sqlite-power-cut",
            "--negative-control",
            "--seeds",
            "3",
            "--seed-base",
            "0x5",
            "--jobs",
            "2",
        ],
    );
    assert_eq!(code, 3, "the code of the first failure, as run's");
    let stats = &report["scenarios"]["sqlite-power-cut"];
    assert_eq!(stats["seeds"], 3, "{report}");
    for key in [
        "passed",
        "failed",
        "seeds_per_hour_per_core",
        "median_wall_ms",
        "max_wall_ms",
        "sometimes",
        "faults",
    ] {
        assert!(stats.get(key).is_some(), "no {key}: {report}");
    }
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(stats["failed"]["invariant"].as_u64().unwrap(), failures.len() as u64);
    assert_eq!(stats["passed"].as_u64().unwrap() + failures.len() as u64, 3);
    assert!(!failures.is_empty(), "{report}");
    assert!(stats["faults"]["power-cut"].as_u64().unwrap() > 0, "{report}");
    // The seeds are seed_base.nth(i): the first is the base.
    assert_eq!(failures[0]["seed"], "0x0000000000000005");
    // regressions.txt lists the failures, in the regression format; each has its full report.
    let text = std::fs::read_to_string(dir.join("regressions.txt")).unwrap();
    let regressions = regressions::parse(&text).unwrap();
    assert_eq!(regressions.len(), failures.len(), "{text}");
    for (r, f) in regressions.iter().zip(failures) {
        assert_eq!(r.scenario, "sqlite-power-cut");
        assert_eq!(r.seed.to_string(), f["seed"].as_str().unwrap());
        assert!(r.note.as_deref().unwrap().contains("invariant"), "{text}");
        for key in ["class", "failure", "replay", "options"] {
            assert!(f.get(key).is_some(), "no {key}: {f}");
        }
        let path = dir.join("failures").join(format!("sqlite-power-cut-{}.txt", r.seed));
        let full = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(full.contains("acknowledged transfers lost") && full.contains("last 40 events"), "{full}");
        assert!(full.contains(&format!("replay: {}", f["replay"].as_str().unwrap())), "{full}");
    }
    // The summary table.
    assert!(out.contains("seeds/hour/core") && out.contains("median wall ms"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("sqlite-power-cut") && l.split_whitespace().nth(1) == Some("3")),
        "{out}"
    );
}

/// The seeds of a negative-control campaign's failures: every seed of it fails under this base.
fn failed_seeds(report: &Value) -> BTreeSet<String> {
    report["failures"].as_array().unwrap().iter().map(|f| f["seed"].as_str().unwrap().to_string()).collect()
}

/// The counts of a report that do not depend on wall time.
fn counts(report: &Value) -> Value {
    let mut scenarios = report["scenarios"].clone();
    for stats in scenarios.as_object_mut().unwrap().values_mut() {
        let o = stats.as_object_mut().unwrap();
        o.retain(|k, _| {
            ["seeds", "passed", "failed", "determinism_checked", "sometimes", "faults"].contains(&k.as_str())
        });
    }
    serde_json::json!({"scenarios": scenarios, "failures": report["failures"]})
}

#[test]
fn shards_partition_the_seeds_and_merge_into_the_whole_campaign() {
    let dir = scratch("shards");
    let base = ["--seed-base", "0x5", "--seeds", "5", "--determinism-share", "1/2", "--jobs", "1"];
    // The scenarios themselves: passes, their "sometimes" marks and faults.
    let args = [&base[..], &["--scenarios", "replicated-counter,sqlite-power-cut"]].concat();
    // And a negative control, whose failures name their seeds.
    let control = [&base[..], &["--scenarios", "sqlite-power-cut", "--negative-control"]].concat();
    for (name, args) in [("pass", &args), ("control", &control)] {
        let whole = dir.join(format!("{name}-whole"));
        let (whole_code, _, whole_report) = campaign(&whole, args);
        let mut shards = Vec::new();
        for shard in ["0/3", "1/3", "2/3"] {
            let d = dir.join(format!("{name}-{}", shard.replace('/', "-")));
            let (_, _, report) = campaign(&d, &[&args[..], &["--shard", shard]].concat());
            shards.push((d, report));
        }
        // Each seed index in exactly one shard: the seeds add up, and the failing seeds are split.
        for s in whole_report["scenarios"].as_object().unwrap().keys() {
            let sum: u64 = shards.iter().map(|(_, r)| r["scenarios"][s]["seeds"].as_u64().unwrap()).sum();
            assert_eq!(sum, 5, "{s}");
            let sizes: Vec<u64> =
                shards.iter().map(|(_, r)| r["scenarios"][s]["seeds"].as_u64().unwrap()).collect();
            assert_eq!(sizes, [2, 2, 1], "indices 0,3 / 1,4 / 2");
        }
        let mut seen = BTreeSet::new();
        for (_, r) in &shards {
            for seed in failed_seeds(r) {
                assert!(seen.insert(seed.clone()), "{seed} in two shards");
            }
        }
        assert_eq!(seen, failed_seeds(&whole_report));
        if name == "control" {
            assert!(seen.len() >= 3, "the negative control fails under most seeds: {seen:?}");
        }
        // Merged, the shards are the whole campaign: the same counts, failures (in run order) and exit code.
        let merged = dir.join(format!("{name}-merged"));
        let mut merge = vec!["merge".to_string(), "--out".into(), merged.to_str().unwrap().into()];
        // In another order than the shards' numbers.
        for (d, _) in shards.iter().rev() {
            merge.push(d.to_str().unwrap().into());
        }
        let merge: Vec<&str> = merge.iter().map(String::as_str).collect();
        let (code, out, err) = dosim(&merge);
        assert_eq!(code, whole_code, "{out}\n{err}");
        let merged_report = read_json(&merged.join("report.json"));
        assert_eq!(counts(&merged_report), counts(&whole_report));
        assert_eq!(merged_report["shards"], serde_json::json!(["0/3", "1/3", "2/3"]));
        assert_eq!(
            std::fs::read_to_string(merged.join("regressions.txt")).unwrap(),
            std::fs::read_to_string(whole.join("regressions.txt")).unwrap()
        );
        assert!(out.contains("seeds/hour/core"), "{out}");
        // The sample of seeds checked for determinism is chosen from the seed: the same split or not.
        let checked: u64 = whole_report["scenarios"]
            .as_object()
            .unwrap()
            .values()
            .map(|s| s["determinism_checked"].as_u64().unwrap())
            .sum();
        assert!(checked > 0, "1/2 of 5 seeds: {whole_report}");
    }
    // Shards of different campaigns do not merge.
    let other = dir.join("other");
    let (code, _, _) = dosim(&[
        "campaign",
        "--out",
        other.to_str().unwrap(),
        "--scenarios",
        "replicated-counter,sqlite-power-cut",
        "--seeds",
        "5",
        "--seed-base",
        "0x6",
        "--shard",
        "1/3",
    ]);
    assert_eq!(code, 0);
    let (code, _, err) = dosim(&["merge", dir.join("pass-0-3").to_str().unwrap(), other.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("seed base"), "{err}");
}

#[test]
fn a_timed_campaign_runs_until_its_budget_is_used() {
    let dir = scratch("timed");
    let (code, _, report) = campaign(
        &dir,
        &["--scenarios", "replicated-counter", "--time", "1s", "--jobs", "1", "--determinism-share", "1"],
    );
    assert_eq!(code, 0);
    let stats = &report["scenarios"]["replicated-counter"];
    assert!(stats["seeds"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(stats["determinism_checked"], stats["seeds"], "a share of 1 checks every seed");
    assert!(report["elapsed_s"].as_f64().unwrap() >= 1.0, "{report}");
}

#[test]
fn campaign_usage_errors_exit_2() {
    let dir = scratch("usage");
    let out = dir.to_str().unwrap();
    for (args, message) in [
        (&["campaign", "--out", out, "--shard", "2/2"][..], "invalid shard \"2/2\""),
        (&["campaign", "--out", out, "--seeds", "3", "--time", "1m"][..], "cannot be used with"),
        (&["campaign", "--out", out, "--time", "10q"][..], "invalid duration \"10q\""),
        (&["campaign", "--out", out, "--scenarios", "bank"][..], "unknown scenario \"bank\""),
        (&["campaign", "--out", out, "--determinism-share", "2"][..], "invalid"),
        (&["merge", "--out", out][..], "required"),
    ] {
        let (code, _, err) = dosim(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
}

#[test]
fn regression_files_parse_and_bad_lines_name_their_number() {
    let text = "# nightly\nsqlite-power-cut 0x0000000000000005 # invariant: lost a transfer\n\nobject-cluster 0x2a\n";
    let list = regressions::parse(text).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].note.as_deref(), Some("invariant: lost a transfer"));
    assert_eq!(regressions::parse(&regressions::render(&list)).unwrap(), list);
    let err = regressions::parse("sqlite-power-cut 0x5\nobject-cluster 12345\n").unwrap_err();
    assert_eq!(err.line, 2);
    let shown = err.to_string();
    assert!(shown.contains("line 2") && shown.contains("invalid seed \"12345\""), "{shown}");
    assert!(shown.contains("<scenario> <seed-hex> [# comment]"), "{shown}");
}

#[test]
fn the_pool_hands_results_back_in_task_order_and_survives_a_dying_worker() {
    use dosim_scenarios::campaign::pool::{execute, Task};
    use dosim_sim::Seed;
    // A stand-in worker: answers the first two seeds late, dies on the third, answers the rest at once. The
    // results finish in the order 2, 3, 4, 1, 0.
    let fake = r#"while read name seed check control; do
        case $seed in
            0x0000000000000000) sleep 0.6;;
            0x0000000000000001) sleep 0.3;;
            0x0000000000000002) exit 7;;
        esac
        printf '{"scenario":"%s","seed":"%s","outcome":"pass","trace_hash":"0","events":0,"sim_ms":0,"wall_ms":0,"options":{},"faults":{},"sometimes":{},"determinism_checked":false}\n' "$name" "$seed"
    done"#;
    let command = || {
        let mut c = Command::new("sh");
        c.args(["-c", fake]);
        c
    };
    let scenario = dosim_scenarios::all()[0];
    let tasks = (0..5).map(|i| Task {
        index: i,
        scenario,
        seed: Seed(i),
        check_determinism: false,
        negative_control: false,
    });
    let mut seen = Vec::new();
    execute(tasks, 3, &command, || false, |t, r| seen.push((t.index, r))).unwrap();
    let order: Vec<u64> = seen.iter().map(|(i, _)| *i).collect();
    assert_eq!(order, [0, 1, 2, 3, 4]);
    for (i, r) in &seen {
        assert_eq!(r.seed, Seed(*i).to_string());
    }
    let died = &seen[2].1;
    assert_eq!(died.class.as_deref(), Some("panic"), "{died:?}");
    assert!(died.failure.as_deref().unwrap().contains("worker process"), "{died:?}");
    assert!(seen.iter().filter(|(i, _)| *i != 2).all(|(_, r)| r.class.is_none()));
}

#[test]
fn shrink_prints_numbered_steps_and_saves_a_regression_line_that_replays() {
    let dir = scratch("shrink");
    let file = dir.join("dosim-regressions.txt");
    let file_arg = file.to_str().unwrap();
    // The eviction scenario's planted bug (write-behind) fails seed 1.
    let args = ["shrink", "eviction", "--negative-control", "--seed", "0x1", "--save", file_arg];
    let (code, out, err) = dosim(&args);
    assert_eq!(code, 3, "a broken invariant, as `run` exits:\n{out}\n{err}");
    assert!(out.starts_with("FAIL(invariant) eviction seed=0x0000000000000001: "), "{out}");
    let mask = out.lines().find_map(|l| l.strip_prefix("keep=")).expect("the mask").to_string();
    let steps: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().split_once(". ").is_some_and(|(n, _)| n.parse::<u32>().is_ok()))
        .collect();
    assert!(!steps.is_empty() && steps.len() <= 20, "{out}");
    assert!(steps[0].trim_start().starts_with("1. t="), "{out}");
    assert!(steps.last().unwrap().contains(". violated: linearizability: "), "{out}");
    assert!(steps.iter().any(|s| s.contains("evict idle objects on n0")), "the eviction it needs: {out}");
    // The saved line parses, with the mask printed.
    let saved = regressions::parse(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].scenario, "eviction");
    assert_eq!(saved[0].seed.to_string(), "0x0000000000000001");
    assert_eq!(saved[0].keep.as_deref(), Some(mask.as_str()));
    assert!(saved[0].note.as_deref().unwrap().starts_with("shrunk negative control: "), "{saved:?}");
    // The same seed shrinks to the same steps; a second --save appends.
    let (code, again, _) = dosim(&args);
    assert_eq!(code, 3);
    let body = |o: &str| o.lines().filter(|l| !l.starts_with("shrunk seed")).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&again), body(&out));
    assert_eq!(regressions::parse(&std::fs::read_to_string(&file).unwrap()).unwrap().len(), 2);
    // The printed replay command runs the shrunk plan, which fails the same check.
    let replay = out.lines().find_map(|l| l.strip_prefix("replay: cargo dosim ")).expect("a replay command");
    assert_eq!(
        replay,
        format!("replay eviction --seed 0x0000000000000001 --keep '{mask}' --negative-control")
    );
    let (code, out, err) =
        dosim(&["replay", "eviction", "--seed", "0x1", "--keep", &mask, "--negative-control"]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(out.contains(&format!("keep={mask}")) && out.contains("linearizability: "), "{out}");
    let (code, _, err) = dosim(&["replay", "eviction", "--seed", "0x1", "--keep", "ops:x"]);
    assert_eq!(code, 2);
    assert!(err.contains("--keep: invalid plan mask: part \"ops:x\""), "{err}");
    let (code, _, err) = dosim(&["replay", "sqlite-power-cut", "--seed", "0x1", "--keep", "all"]);
    assert_eq!(code, 2);
    assert!(err.contains("a plan mask needs a scenario of the test kit"), "{err}");
}

#[test]
fn shrink_says_a_passing_seed_passes_and_refuses_what_it_cannot_shrink() {
    let (code, out, err) = dosim(&["shrink", "eviction", "--seed", "0x1"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("PASS eviction seed=0x0000000000000001") && out.contains("nothing to shrink"),
        "{out}"
    );
    let (code, _, err) = dosim(&["shrink", "sqlite-power-cut", "--seed", "0x1"]);
    assert_eq!(code, 2);
    assert!(err.contains("sqlite-power-cut: shrinking needs a scenario of the test kit"), "{err}");
    let (code, _, err) = dosim(&["shrink", "partition", "--seed", "0x1", "--negative-control"]);
    assert_eq!(code, 2);
    assert!(err.contains("partition has no negative control"), "{err}");
    let (code, _, err) = dosim(&["shrink", "no-such-scenario", "--seed", "0x1"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown scenario \"no-such-scenario\""), "{err}");
}

#[test]
fn replay_html_writes_the_failing_runs_timeline_with_its_clients_and_its_violation() {
    // The eviction scenario's negative control (a write-behind counter) fails seed 1.
    let page = scratch("replay-html").join("kit.html");
    let (code, _, err) =
        dosim(&["replay", "eviction", "--negative-control", "--seed", "1", "--html", page.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("timeline is in"), "{err}");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("data-lane=\"client-0\""), "the kit's page has its clients' lanes");
    assert!(html.contains("id=\"violation\""));
    assert!(html.contains("check failed: linearizability"), "the violated check");
    // A scenario outside the kit: the page of the trace alone.
    let plain = scratch("replay-html-plain").join("plain.html");
    let (code, _, err) = dosim(&[
        "replay",
        "sqlite-power-cut",
        "--negative-control",
        "--seed",
        "1",
        "--html",
        plain.to_str().unwrap(),
    ]);
    if code == 0 {
        assert!(err.contains("was not written"), "{err}");
        assert!(!plain.exists());
    } else {
        let html = std::fs::read_to_string(&plain).unwrap();
        assert!(html.contains("data-lane=\"node-n0\"") && !html.contains("data-lane=\"client-0\""));
    }
    // A passing run writes nothing.
    let passing = scratch("replay-html-pass").join("pass.html");
    let (code, _, err) = dosim(&["replay", "eviction", "--seed", "1", "--html", passing.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(!passing.exists() && err.contains("was not written"), "{err}");
}

#[test]
fn explore_prints_a_row_per_bug_and_strategy_and_names_a_bad_bug() {
    let (code, out, err) = dosim(&["explore", "write-behind", "--trials", "2", "--budget-runs", "20"]);
    assert_eq!(code, 0, "both strategies find write-behind within 20 runs: {out}{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with("write-behind")).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(rows[0].contains("random") && rows[0].contains("2/2"), "{out}");
    assert!(rows[1].contains("guided") && rows[1].contains("2/2"), "{out}");
    let (code, _, err) = dosim(&["explore", "no-such-bug"]);
    assert_eq!(code, 2);
    assert!(err.contains("no planted bug no-such-bug") && err.contains("concurrent-read"), "{err}");
    let (code, _, err) = dosim(&["explore", "write-behind", "--strategy", "clever"]);
    assert_eq!(code, 2);
    assert!(err.contains("--strategy clever"), "{err}");
}
