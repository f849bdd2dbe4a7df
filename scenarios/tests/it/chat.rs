//! The `chat-room` scenario (issue 11): the correct room passes many seeds and replays exactly; each fault
//! reaches the sockets it claims to cut (counted); the planted bug (members kept in memory) is caught, and
//! caught through hibernation alone.

use std::time::Duration;

use dosim_scenarios::chat::{self, Cut, Options, MARK_DROPPED, MARK_EVICTED};
use dosim_sim::{determinism, FailureClass, FailureKind, FaultKind, NodeId, Ratio, RunReport, Seed};

/// Seeds of the pass test (a campaign runs more: `cargo dosim run chat-room --seeds 200`).
const SEEDS: u64 = 6;
/// Seeds the planted bug gets to be caught in.
const NEGATIVE_SEEDS: u64 = 8;
const HOSTS: [NodeId; 3] = [NodeId(2), NodeId(3), NodeId(4)];

fn pass(seed: Seed, options: &Options) -> RunReport {
    chat::run_with_options(seed, options).unwrap_or_else(|f| {
        panic!("chat-room failed on seed {seed}:\n{f}\nreplay: cargo dosim run chat-room --seed {seed}")
    })
}

/// A calm run: no network fault, no eviction, no partition, no crash; one quiet window.
fn calm(seed: Seed) -> Options {
    let mut o = Options::from_seed(seed);
    o.net_loss = Ratio::NEVER;
    o.net_duplicate = Ratio::NEVER;
    o.net_reorder = Ratio::NEVER;
    o.evictions.clear();
    o.partitions.clear();
    o.crashes.clear();
    o.code_updates.clear();
    o.leave_per_mille = 0;
    o.run_for = Duration::from_secs(50);
    o.quiet = vec![(Duration::from_secs(15), Duration::from_secs(14))];
    o
}

/// Each host cut in turn for 12 s (past the peer timeout and the lease), 14 s apart: from the front
/// (`front`) or from the directory.
fn each_host_cut(front: bool) -> Vec<Cut> {
    HOSTS
        .iter()
        .enumerate()
        .map(|(i, h)| Cut {
            front,
            host: *h,
            at: Duration::from_secs(3 + 14 * i as u64),
            lasts: Duration::from_secs(12),
        })
        .collect()
}

fn marks(r: &RunReport, mark: &str) -> u64 {
    r.sometimes.get(mark).copied().unwrap_or(0)
}

#[test]
fn the_chat_room_passes_its_seeds_and_its_faults_fire() {
    let mut totals = dosim_sim::FaultCounts::default();
    let mut dropped = 0;
    for i in 0..SEEDS {
        let seed = Seed(0xc4a7).nth(i);
        let r = pass(seed, &Options::from_seed(seed));
        totals.merge(&r.faults);
        dropped += marks(&r, MARK_DROPPED);
    }
    eprintln!("chat-room over {SEEDS} seeds: {totals}; {dropped} connections dropped");
    let net: u64 = [FaultKind::MessageLoss, FaultKind::MessageDuplicate].iter().map(|k| totals.get(*k)).sum();
    assert!(net > 0, "no network fault fired: {totals}");
    assert!(
        totals.get(FaultKind::Partition) + totals.get(FaultKind::Crash) > 0,
        "no partition or crash: {totals}"
    );
    assert!(dropped > 0, "no fault ever dropped a member's connection");
}

#[test]
fn the_chat_room_replays_exactly() {
    for i in 0..2 {
        let seed = Seed(0xc4a7).nth(i);
        if let Err(e) = determinism::check(seed, |s| chat::run_with_options(s, &Options::from_seed(s))) {
            panic!("chat-room on seed {seed}:\n{e}");
        }
    }
}

#[test]
fn hibernation_keeps_members_connected_and_a_calm_room_delivers_everything() {
    // The quiet window (14 s without a message) hibernates every room with members: the runtime logs it,
    // the members stay connected, and the next message wakes a new instance that still finds them.
    let seed = Seed(0xca1);
    let r = pass(seed, &calm(seed));
    let hibernated = chat::hibernations(&r);
    assert!(hibernated > 0, "no room hibernated in the quiet window");
    assert_eq!(marks(&r, MARK_DROPPED), 0, "a calm run drops no connection");
}

#[test]
fn each_fault_reaches_the_sockets() {
    let seed = Seed(0xfa17);
    // The front cut from each host in turn (12 s, past the 10 s peer timeout): whichever hosts the rooms,
    // the sockets on that front → host hop drop, and both ends see 1006.
    let mut o = calm(seed);
    o.quiet.clear();
    o.partitions = each_host_cut(true);
    let r = pass(seed, &o);
    assert_eq!(r.faults.get(FaultKind::Partition), 3, "{}", r.faults);
    assert!(marks(&r, MARK_DROPPED) > 0, "the front → host cuts dropped no connection");
    // Each host cut from the directory in turn (past its lease): the superseded host drops its rooms'
    // sockets at once (its runtime logs "drops N sockets").
    let mut o = calm(seed);
    o.quiet.clear();
    o.partitions = each_host_cut(false);
    let r = pass(seed, &o);
    let superseded = r.trace.events().iter().filter(|e| matches!(&e.kind, dosim_sim::EventKind::Log { text, .. } if text.contains(" drops ") && text.ends_with(" sockets"))).count();
    assert!(superseded > 0, "no superseded host dropped its sockets");
    assert!(marks(&r, MARK_DROPPED) > 0, "the host → directory cuts dropped no connection");
    // Each host crashes in turn: its sockets die with it.
    let mut o = calm(seed);
    o.quiet.clear();
    o.crashes = HOSTS
        .iter()
        .enumerate()
        .map(|(i, h)| (*h, Duration::from_secs(3 + 14 * i as u64), Duration::from_secs(2)))
        .collect();
    let r = pass(seed, &o);
    assert_eq!(r.faults.get(FaultKind::Crash), 3, "{}", r.faults);
    assert!(marks(&r, MARK_DROPPED) > 0, "the crashes dropped no connection");
    // Each host's code is updated in turn: its rooms are reset, their sockets drop (1006), members rejoin.
    let mut o = calm(seed);
    o.quiet.clear();
    o.code_updates =
        HOSTS.iter().enumerate().map(|(i, h)| (*h, Duration::from_secs(3 + 14 * i as u64))).collect();
    let r = pass(seed, &o);
    let updated = r
        .trace
        .events()
        .iter()
        .filter(|e| matches!(&e.kind, dosim_sim::EventKind::Log { text, .. } if text.contains("reset: Durable Object reset because its code was updated.")))
        .count();
    assert!(updated > 0, "no room was reset by a code update");
    assert!(marks(&r, MARK_DROPPED) > 0, "the code updates dropped no connection");
    // Evictions in a calm run: rooms are hibernated by force, members stay.
    let mut o = calm(seed);
    o.quiet.clear();
    o.evictions = (1..8).map(|s| Duration::from_secs(s * 5)).collect();
    let r = pass(seed, &o);
    assert!(marks(&r, MARK_EVICTED) > 0, "no eviction hibernated a room");
    assert_eq!(marks(&r, MARK_DROPPED), 0, "an eviction (hibernation) dropped a connection");
}

#[test]
fn the_in_memory_room_is_caught() {
    // Negative control: the room that keeps its members in a field loses them when it hibernates.
    let caught: Vec<_> = (0..NEGATIVE_SEEDS)
        .map(|i| Seed(0xbad).nth(i))
        .filter_map(|seed| chat::run_negative_control(seed).err().map(|f| (seed, f)))
        .collect();
    eprintln!("in-memory room: {} of {NEGATIVE_SEEDS} seeds caught", caught.len());
    for (seed, f) in &caught {
        assert_eq!(f.kind.class(), FailureClass::Invariant, "seed {seed} failed otherwise:\n{f}");
        let FailureKind::Check(message) = &f.kind else { unreachable!() };
        assert!(message.contains("never reached"), "seed {seed} failed another check:\n{f}");
    }
    assert!(
        caught.len() as u64 * 4 >= NEGATIVE_SEEDS,
        "only {} of {NEGATIVE_SEEDS} seeds caught it",
        caught.len()
    );
}

#[test]
fn hibernation_alone_catches_the_in_memory_room() {
    // No fault at all but the quiet window: the rooms hibernate, the in-memory room forgets its members, and
    // the next acknowledged message reaches none of them. The correct room passes the same runs.
    let mut caught = 0;
    for i in 0..4 {
        let seed = Seed(0x5ee9).nth(i);
        let options = calm(seed);
        pass(seed, &options);
        if let Err(f) = chat::run_negative_control_with_options(seed, &options) {
            let FailureKind::Check(message) = &f.kind else { panic!("seed {seed} failed otherwise:\n{f}") };
            assert!(message.contains("never reached"), "seed {seed}: {message}");
            caught += 1;
        }
    }
    assert!(caught >= 2, "hibernation alone caught the in-memory room in only {caught} of 4 calm runs");
}
