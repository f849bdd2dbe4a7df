//! The fuzz target `planted`: AFL++'s bytes decide a run of a planted bug's test (the seed, then one plan
//! mutation per 8-byte chunk: `dosim_scenarios::explore::plan_from_bytes`), and a failed check panics, which
//! AFL++ records as a crash. The bug is `DOSIM_FUZZ_BUG` (default `concurrent-read`); with
//! `DOSIM_FUZZ_TWIN=1` it runs the bug's correct twin, where any crash is a bug of the kit or the runtime.
//!
//! Build and run: see fuzz/README.md.

#[cfg(not(madsim))]
compile_error!("the fuzz target runs simulations: build it with RUSTFLAGS=\"--cfg madsim\" (fuzz/README.md)");

fn main() {
    let bug = std::env::var("DOSIM_FUZZ_BUG").unwrap_or_else(|_| "concurrent-read".to_string());
    let twin = std::env::var("DOSIM_FUZZ_TWIN").is_ok_and(|v| v == "1");
    afl::fuzz!(|data: &[u8]| {
        let Some(result) = dosim_scenarios::planted::run_bytes(&bug, twin, data) else {
            panic!("no planted bug {bug}");
        };
        if let Err(failure) = result {
            // A seed whose faults never fired proves nothing: not a crash.
            if !dosim_scenarios::explore::is_inconclusive(&failure) {
                panic!("{bug}: seed {} fails: {}", failure.seed, failure.kind);
            }
        }
    });
}
