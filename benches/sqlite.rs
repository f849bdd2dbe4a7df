//! SQLite commits per wall second on `SimDisk`, against an in-memory SQLite database (the physical limit of
//! the design: the simulated disk is memory plus bookkeeping).
//!
//! `cargo bench --bench sqlite` (plain build: it uses [`LocalWorld`], no madsim). One group, `sqlite_commit`:
//! - `memory`: `Connection::open_in_memory()`, one-row INSERT per commit (autocommit);
//! - `simdisk_delete`, `simdisk_wal`: `dosim_sim::sqlite::open` on a `LocalWorld` with an instant disk, with
//!   its crash-safe settings (`synchronous=FULL`, EXCLUSIVE locking), one-row INSERT per commit;
//! - `simdisk_delete_batch10`: ten rows per commit (throughput counts rows);
//! - `file_full`: a real file under the target directory, DELETE journal, `synchronous=FULL` (the fsync
//!   floor of the real machine, for scale).
//!
//! A `LocalWorld` keeps every trace event (one per disk operation) and the database grows by a row per
//! commit, so each setup (world, connection, schema) serves at most [`COMMITS_PER_WORLD`] commits and is
//! then rebuilt outside the timed part. Before the benches, the bench prints what a SimDisk commit costs in
//! disk operations, bytes written and trace events.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use dosim_sim::disk::{self, DiskConfig};
use dosim_sim::sqlite::{self, JournalMode};
use dosim_sim::{DiskOp, Event, EventKind, LocalWorld, Seed};
use rusqlite::Connection;

/// The longest run of commits one setup serves before it is rebuilt (outside the timed part), which bounds
/// the trace and the database.
const COMMITS_PER_WORLD: u64 = 20_000;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB NOT NULL)";
const INSERT: &str = "INSERT INTO t(v) VALUES (?1)";
/// A small row: the commit cost, not the copy of the payload, is what is measured.
const PAYLOAD: [u8; 32] = [0x5a; 32];

/// Where a database lives.
#[derive(Clone, Copy, Debug)]
enum Store {
    Memory,
    SimDisk(JournalMode),
    RealFile,
}

/// One setup: the connection, and the world that must outlive it (for `SimDisk`).
struct Setup {
    // Field order is drop order: the connection closes while its world is still installed.
    conn: Connection,
    world: Option<LocalWorld>,
}

fn real_file_path() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-sqlite-real.db")
}

fn remove_real_files() {
    let db = real_file_path();
    for suffix in ["", "-journal", "-wal"] {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        // Absent files are fine.
        let _ = std::fs::remove_file(p);
    }
}

fn setup(store: Store) -> Setup {
    let (conn, world) = match store {
        Store::Memory => (Connection::open_in_memory().expect("in-memory database"), None),
        Store::SimDisk(mode) => {
            let world = LocalWorld::new(Seed(1), DiskConfig::instant()).expect("valid disk config");
            (sqlite::open("bench.db", mode).expect("open on SimDisk"), Some(world))
        }
        Store::RealFile => {
            remove_real_files();
            let conn = Connection::open(real_file_path()).expect("open a real file");
            conn.execute_batch(
                "PRAGMA locking_mode=EXCLUSIVE; PRAGMA journal_mode=DELETE; PRAGMA synchronous=FULL;",
            )
            .expect("pragmas");
            (conn, None)
        }
    };
    conn.execute_batch(SCHEMA).expect("schema");
    Setup { conn, world }
}

/// One commit of `rows` rows: autocommit for one row, BEGIN … COMMIT for more.
fn commit(conn: &Connection, rows: u64) {
    let mut stmt = conn.prepare_cached(INSERT).expect("prepare");
    if rows == 1 {
        black_box(stmt.execute([&PAYLOAD[..]]).expect("insert"));
        return;
    }
    conn.execute_batch("BEGIN").expect("begin");
    for _ in 0..rows {
        black_box(stmt.execute([&PAYLOAD[..]]).expect("insert"));
    }
    conn.execute_batch("COMMIT").expect("commit");
}

/// Times `iters` commits of `rows` rows, rebuilding the setup every [`COMMITS_PER_WORLD`] commits untimed.
fn timed_commits(store: Store, rows: u64, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let chunk = left.min(COMMITS_PER_WORLD);
        let s = setup(store);
        // Warm the statement cache outside the timed part.
        drop(s.conn.prepare_cached(INSERT).expect("prepare"));
        let start = Instant::now();
        for _ in 0..chunk {
            commit(&s.conn, rows);
        }
        total += start.elapsed();
        left -= chunk;
        drop(s);
    }
    total
}

fn bench_one(group: &mut BenchmarkGroup<'_, WallTime>, id: &str, store: Store, rows: u64) {
    group.throughput(Throughput::Elements(rows));
    group.bench_function(id, |b| b.iter_custom(|iters| timed_commits(store, rows, iters)));
}

/// Prints what a commit costs on SimDisk: disk operations, trace events (and their memory) and bytes written.
fn print_cost_per_commit() {
    const N: u64 = 1000;
    for (name, mode, rows) in [
        ("simdisk_delete", JournalMode::Delete, 1),
        ("simdisk_wal", JournalMode::Wal, 1),
        ("simdisk_delete_batch10", JournalMode::Delete, 10),
    ] {
        let s = setup(Store::SimDisk(mode));
        let world = s.world.as_ref().expect("a SimDisk setup has a world");
        commit(&s.conn, rows);
        let ops0 = disk::op_count(world.node());
        let events0 = world.trace().len();
        for _ in 0..N {
            commit(&s.conn, rows);
        }
        let ops = disk::op_count(world.node()) - ops0;
        let trace = world.trace();
        let (mut written, mut read, mut syncs) = (0, 0, 0);
        for e in &trace.events()[usize::try_from(events0).expect("fits")..] {
            if let EventKind::Disk { op, len, .. } = &e.kind {
                match op {
                    DiskOp::Write => written += len,
                    DiskOp::Read => read += len,
                    DiskOp::Sync => syncs += 1,
                    _ => {}
                }
            }
        }
        let per = |x: u64| x as f64 / N as f64;
        eprintln!(
            "{name}: per commit {:.1} disk ops ({:.1} syncs), {:.0} B written, {:.0} B read, \
             {:.1} trace events (~{:.0} B of event list at {} B/event)",
            per(ops),
            per(syncs),
            per(written),
            per(read),
            per(trace.len() - events0),
            per((trace.len() - events0) * std::mem::size_of::<Event>() as u64),
            std::mem::size_of::<Event>(),
        );
    }
}

fn benches(c: &mut Criterion) {
    print_cost_per_commit();
    let mut group = c.benchmark_group("sqlite_commit");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    group.sample_size(20);
    bench_one(&mut group, "memory", Store::Memory, 1);
    bench_one(&mut group, "simdisk_delete", Store::SimDisk(JournalMode::Delete), 1);
    bench_one(&mut group, "simdisk_wal", Store::SimDisk(JournalMode::Wal), 1);
    bench_one(&mut group, "memory_batch10", Store::Memory, 10);
    bench_one(&mut group, "simdisk_delete_batch10", Store::SimDisk(JournalMode::Delete), 10);
    bench_one(&mut group, "file_full", Store::RealFile, 1);
    group.finish();
    remove_real_files();
}

criterion_group!(sqlite_benches, benches);
criterion_main!(sqlite_benches);
