//! Shrinking and regression files: every planted bug shrinks to a short repro that still fails the same
//! check, deterministically; plan masks round-trip and name what is wrong with a bad one; a test replays the
//! seeds its crate's regression file lists for it before any new seed (with their masks), and a malformed
//! line names its number.

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;

use dosim_scenarios::builtin;
use dosim_scenarios::planted::{catalogue, PlantedBug};
use dosim_scenarios::testing::shrink::{self, same_check, Mask};
use dosim_scenarios::testing::{CounterCalls, ObjectTest, Scenario as KitScenario};
use dosim_sim::harness::{self, SeedPlan, TestId};
use dosim_sim::{RunFailure, Seed};

/// The most steps a planted bug's repro may take (the violated check included).
const MAX_STEPS: usize = 20;

fn bug(name: &str) -> PlantedBug {
    catalogue().into_iter().find(|b| b.name == name).unwrap_or_else(|| panic!("no planted bug {name}"))
}

/// The first seed of the planted bug's own test (`testing::planted::<name>_is_found`) that fails, and its
/// failure.
fn first_failing(b: &PlantedBug) -> (Seed, RunFailure) {
    let test = format!("{}_is_found", b.name.replace('-', "_"));
    let id = TestId {
        module: "it::testing::planted",
        name: Box::leak(test.into_boxed_str()),
        package: "dosim-scenarios",
        crate_name: "it",
        integration: true,
        manifest_dir: "",
    };
    let base = id.default_seed();
    (0..b.found_within)
        .map(|i| base.nth(i))
        .find_map(|s| (b.buggy)(s).err().map(|f| (s, f)))
        .unwrap_or_else(|| panic!("{}: no failing seed within {}", b.name, b.found_within))
}

/// Shrinks the planted bug's first failing seed: at most [`MAX_STEPS`] steps, the violated check last, and
/// the mask applied to the seed's plan fails the same check again.
fn shrinks_to_a_short_repro(name: &str) -> shrink::Shrunk<dosim_scenarios::testing::CounterOp> {
    let b = bug(name);
    let (seed, failure) = first_failing(&b);
    let make = || (b.buggy_test.expect("a counter bug"))(seed);
    let shrunk = shrink::shrink(make, &failure).expect("the seed's plan fails");
    eprintln!("planted bug {name}:\n{shrunk}");
    assert!(shrunk.steps.len() <= MAX_STEPS, "{name}: {} steps:\n{shrunk}", shrunk.steps.len());
    assert!(shrunk.size.ops < shrunk.original.ops, "{shrunk}");
    assert!(shrunk.size.faults <= shrunk.original.faults, "{shrunk}");
    assert!(same_check(&shrunk.failure.kind, &failure.kind), "{}", shrunk.failure.kind);
    let last = shrunk.steps.last().unwrap();
    assert!(last.starts_with("violated: "), "{last}");
    assert!(last.contains(shrink::check_name(&message(&failure))), "{last}");
    // The mask, as text, replays the same failure from the seed's plan.
    let mask: Mask = shrunk.mask.to_string().parse().unwrap();
    assert_eq!(mask, shrunk.mask);
    let plan = mask.apply(&make().plan()).unwrap();
    assert_eq!(plan, shrunk.plan);
    let again = make().run_plan(plan).expect_err("the shrunk plan still fails");
    assert!(same_check(&again.kind, &failure.kind), "{}", again.kind);
    shrunk
}

fn message(f: &RunFailure) -> String {
    match &f.kind {
        dosim_sim::FailureKind::Check(m) => m.clone(),
        other => other.to_string(),
    }
}

#[test]
fn concurrent_read_shrinks() {
    shrinks_to_a_short_repro("concurrent-read");
}

#[test]
fn write_behind_shrinks_the_same_way_every_time() {
    let a = shrinks_to_a_short_repro("write-behind");
    let b = bug("write-behind");
    let (seed, failure) = first_failing(&b);
    let again = shrink::shrink(|| (b.buggy_test.expect("a counter bug"))(seed), &failure).unwrap();
    assert_eq!(again.mask, a.mask, "the same failing seed shrinks to the same plan");
    assert_eq!(again.steps, a.steps);
    assert_eq!(again.runs, a.runs);
}

#[test]
fn unconfirmed_write_shrinks() {
    shrinks_to_a_short_repro("unconfirmed-write");
}

#[test]
fn stale_cache_shrinks() {
    shrinks_to_a_short_repro("stale-cache");
}

#[test]
fn a_seed_whose_plan_does_not_fail_the_same_check_is_not_shrunk() {
    // The eviction scenario's planted bug fails seed 1; the correct counter passes the same seed, so a
    // shrink of it has nothing to keep failing.
    let failure = builtin::run_negative_control(KitScenario::Eviction, Seed(1)).unwrap().unwrap_err();
    let make = || -> ObjectTest<CounterCalls> { builtin::test(KitScenario::Eviction, Seed(1)) };
    let err = shrink::shrink(make, &failure).unwrap_err();
    assert!(err.to_string().contains("does not fail the same check"), "{err}");
    assert!(err.to_string().contains("the run passed"), "{err}");
}

#[test]
fn masks_round_trip_and_apply() {
    let b = bug("write-behind");
    let plan = (b.buggy_test.expect("a counter bug"))(Seed(7)).plan();
    assert!(plan.ops.len() == 4 && plan.schedule.timed.len() > 4, "{plan:?}");
    // The whole plan.
    for all in ["all", "", "keep=all"] {
        let m: Mask = all.parse().unwrap();
        assert_eq!(m, Mask::all());
        assert_eq!(m.apply(&plan).unwrap(), plan);
    }
    let text = "ops:0:0-3,7/1:-/3:*;faults:2,4;rates:0;objects:1>0;think:100;until:5200";
    let m: Mask = text.parse().unwrap();
    // `3:*` is a client keeping all: the canonical form leaves it out.
    assert_eq!(m.to_string(), "ops:0:0-3,7/1:-;faults:2,4;rates:0;objects:1>0;think:100;until:5200");
    assert_eq!(m.to_string().parse::<Mask>().unwrap(), m);
    assert_eq!(format!("keep={m}").parse::<Mask>().unwrap(), m);
    let applied = m.apply(&plan).unwrap();
    assert!(applied.ops[0].len() <= 5 && applied.ops[1].is_empty());
    assert!(applied.ops[0].iter().chain(&applied.ops[3]).all(|o| o.object == 0 || o.object > 1));
    assert!(applied.ops.iter().flatten().all(|o| o.think <= Duration::from_millis(100)));
    assert_eq!(applied.schedule.timed, vec![plan.schedule.timed[2], plan.schedule.timed[4]]);
    // A dropped operation's think time goes to the next one kept: the kept ones stay where they were.
    let keep_one: Mask = "ops:0:5".parse().unwrap();
    let think: Duration = plan.ops[0][..=5].iter().map(|o| o.think).sum();
    assert_eq!(keep_one.apply(&plan).unwrap().ops[0][0].think, think);
    // Errors name the part and what was expected.
    for (bad, says) in [
        ("ops:0:x", "invalid index \"x\""),
        ("ops:0", "expected `client:list`"),
        ("ops:0:1/0:2", "client 0 named twice"),
        ("faults:3-1", "runs backwards"),
        ("faults:", "an empty list"),
        ("rates:1", "only rates:0"),
        ("objects:0>1", "onto an earlier one"),
        ("objects:1-0", "expected from>to"),
        ("think:fast", "whole milliseconds"),
        ("colour:red", "unknown part \"colour\""),
        ("faults:1;faults:2", "given twice"),
        ("ops", "expected `name:value`"),
    ] {
        let e = bad.parse::<Mask>().unwrap_err().to_string();
        assert!(e.starts_with("invalid plan mask: ") && e.contains(says), "{bad}: {e}");
    }
    for (bad, says) in [
        ("ops:9:0", "client 9: the plan has 4 clients"),
        ("ops:0:99", "client 0, operation 99: client 0 has 30 operations"),
        ("faults:999", "fault 999: the plan has"),
    ] {
        let e = bad.parse::<Mask>().unwrap().apply(&plan).unwrap_err().to_string();
        assert!(e.contains(says), "{bad}: {e}");
    }
}

/// A test id whose crate directory is a fresh temporary one holding `file` as its regression file.
fn id_with_file(name: &'static str, file: &str) -> TestId {
    let dir: PathBuf = std::env::temp_dir().join(format!("dosim-shrink-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(dosim_sim::regressions::FILE_NAME), file).unwrap();
    TestId {
        module: "it::regressions",
        name,
        package: "dosim-scenarios",
        crate_name: "it",
        integration: true,
        manifest_dir: Box::leak(dir.to_string_lossy().into_owned().into_boxed_str()),
    }
}

fn env_is_clean() -> bool {
    std::env::var(harness::ENV_SEED).is_err() && std::env::var(harness::ENV_SEEDS).is_err()
}

#[test]
fn listed_seeds_run_first_with_their_masks() {
    if !env_is_clean() {
        return;
    }
    let file = "# other tests' lines are not this test's\n\
                regressions::other 0x1 keep=faults:-\n\
                regressions::listed_first 0x2a keep=faults:- # shrunk\n\
                regressions::listed_first 0x2b\n";
    let id = id_with_file("listed_first", file);
    let calls = RefCell::new(Vec::new());
    harness::run_planned(id, SeedPlan { seeds: Some(2), must_fail_within: None }, |seed| {
        calls.borrow_mut().push((seed, harness::current_plan_mask()));
        dosim_sim::Sim::builder().seed(seed).nodes(1).build()?.run(|_| async { Ok(()) })
    });
    let calls = calls.into_inner();
    assert_eq!(
        calls[..2],
        [(Seed(0x2a), Some("faults:-".to_string())), (Seed(0x2b), None)],
        "the listed seeds first, in file order, each with its mask"
    );
    assert_eq!(
        calls[2..],
        [(id.default_seed(), None), (id.default_seed().nth(1), None)],
        "then the new ones"
    );
    assert_eq!(harness::current_plan_mask(), None, "the mask is cleared after the run");
}

#[test]
fn a_listed_shrunk_seed_finds_a_planted_bug_on_its_first_run() {
    if !env_is_clean() {
        return;
    }
    let b = bug("write-behind");
    let (seed, failure) = first_failing(&b);
    let shrunk = shrink::shrink(|| (b.buggy_test.expect("a counter bug"))(seed), &failure).unwrap();
    let file = format!("regressions::shrunk_first {seed} keep={} # shrunk\n", shrunk.mask);
    let id = id_with_file("shrunk_first", &file);
    let runs = RefCell::new(Vec::new());
    harness::run_planned(id, SeedPlan { seeds: None, must_fail_within: Some(b.found_within) }, |s| {
        let mask = harness::current_plan_mask();
        let result = (b.buggy)(s);
        runs.borrow_mut().push((
            s,
            mask,
            result.as_ref().err().map(|f| f.options.get("ops").map(str::to_string)),
        ));
        result
    });
    let runs = runs.into_inner();
    assert_eq!(runs.len(), 1, "found at the listed seed, on the first run: {runs:?}");
    assert_eq!(runs[0].0, seed);
    assert_eq!(runs[0].1.as_deref(), Some(shrunk.mask.to_string().as_str()));
    // The kit ran the shrunk plan (its options count its operations), not the seed's whole one.
    assert_eq!(runs[0].2, Some(Some(shrunk.size.ops.to_string())), "{runs:?}");
}

#[test]
fn a_listed_seed_that_fails_fails_a_test_that_must_pass_with_its_replay_command() {
    if !env_is_clean() {
        return;
    }
    let id = id_with_file("listed_fails", "regressions::listed_fails 0x5 keep=ops:0:1\n");
    let panic = std::panic::catch_unwind(|| {
        harness::run_planned(id, SeedPlan::default(), |seed| {
            let sim = dosim_sim::Sim::builder().seed(seed).nodes(1).build()?;
            sim.run(|_| async { Err(dosim_sim::Failure::new("the listed seed still fails")) })
        })
    })
    .expect_err("the test fails");
    let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.contains("seed 0x0000000000000005, listed in dosim-regressions.txt failed"), "{text}");
    assert!(text.contains("DOSIM_SEED=0x0000000000000005 DOSIM_KEEP='ops:0:1' cargo simtest"), "{text}");
}

#[test]
fn malformed_regression_lines_and_masks_are_clear_errors() {
    if !env_is_clean() {
        return;
    }
    let id = id_with_file("malformed", "# ok\nregressions::malformed 0x1\nregressions::malformed 12\n");
    let panic =
        std::panic::catch_unwind(|| harness::run_planned(id, SeedPlan::default(), |_| unreachable!()))
            .expect_err("a malformed line fails the test");
    let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(text.contains("dosim-regressions.txt: regression file, line 3: invalid seed \"12\""), "{text}");
    let id = id_with_file("bad_word", "regressions::bad_word 0x1 faults:1\n");
    let panic =
        std::panic::catch_unwind(|| harness::run_planned(id, SeedPlan::default(), |_| unreachable!()))
            .expect_err("a malformed line fails the test");
    let text = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        text.contains("line 1: unexpected \"faults:1\" after the seed (a plan mask starts with keep="),
        "{text}"
    );
    // A malformed mask in a well-formed line: the kit's run fails as a configuration error naming it.
    let b = bug("write-behind");
    let failure = dosim_sim::harness::with_plan_mask(Some("faults:x".into()), || (b.buggy)(Seed(1)))
        .expect_err("a bad mask fails the run");
    let shown = failure.kind.to_string();
    assert!(shown.contains("plan mask \"faults:x\": invalid plan mask: part \"faults:x\""), "{shown}");
    let failure = dosim_sim::harness::with_plan_mask(Some("ops:7:0".into()), || (b.buggy)(Seed(1)))
        .expect_err("a mask that does not fit fails the run");
    assert!(failure.kind.to_string().contains("client 7: the plan has 4 clients"), "{}", failure.kind);
}

/// The planted bugs whose clients are not counter calls shrink too, through the catalogue's own shrink.
fn shrinks_through_the_catalogue(name: &str) {
    let b = bug(name);
    let (seed, failure) = first_failing(&b);
    let shrunk = (b.shrink)(seed, &failure).expect("the seed's plan fails");
    eprintln!("planted bug {name}:\n{}", shrunk.text);
    assert!(shrunk.steps.len() <= MAX_STEPS, "{name}: {} steps:\n{}", shrunk.steps.len(), shrunk.text);
    assert!(shrunk.steps.last().unwrap().starts_with("violated: "), "{}", shrunk.text);
}

#[test]
fn double_charge_shrinks() {
    shrinks_through_the_catalogue("double-charge");
}

#[test]
fn retried_add_shrinks() {
    shrinks_through_the_catalogue("retried-add");
}

#[test]
fn superseded_ticket_shrinks() {
    shrinks_through_the_catalogue("superseded-ticket");
}
