//! Tests of the replica shim: a database opened through it with the runtime's settings, whose captured
//! changes, folded into pages and applied to a mirror image after every commit, must leave the mirror equal
//! to the file on disk; the fold checked alone against applying changes one by one; WAL refused.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use rusqlite::{ffi, Connection};

use super::vfs::{self, Faults};
use super::*;
use crate::location::{DatabaseLocation, Journal};

/// A fresh path for a database named `name` (its file, journal and WAL removed).
fn db_path(name: &str) -> PathBuf {
    let dir = crate::test_dir().join("replica");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.db"));
    for suffix in ["", "-journal", "-wal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    path
}

/// A subquery of the integers 1 to `n`, in a column `value` (the bundled SQLite has no `generate_series`).
fn series(n: impl std::fmt::Display) -> String {
    format!(
        "(WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < {n}) \
         SELECT value FROM s)"
    )
}

/// The shim over SQLite's default VFS.
fn shim() -> String {
    register(None).unwrap()
}

/// The shim over the default VFS that records no truncates (a negative control's).
fn faulty_shim() -> String {
    vfs::register(None, Faults { drop_truncates: true, ..Faults::NONE }).unwrap()
}

/// A database on a shim, opened as the runtime opens databases, and the mirror image built from nothing
/// but its captured changes.
struct Mirrored {
    conn: Connection,
    path: PathBuf,
    mirror: Vec<u8>,
}

impl Mirrored {
    fn open(vfs: &str, name: &str) -> Mirrored {
        let path = db_path(name);
        let conn = DatabaseLocation::on_vfs(vfs, &path).journal(Journal::Delete).open().unwrap();
        let mut m = Mirrored { conn, path, mirror: Vec::new() };
        m.catch_up();
        m.check("after open");
        m
    }

    /// Runs `sql`, then folds what it wrote into the mirror and checks it against the disk.
    fn run(&mut self, sql: &str) -> Vec<FileChange> {
        self.conn.execute_batch(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let changes = self.catch_up();
        self.check(sql);
        changes
    }

    /// Folds the changes captured since the last call into the mirror, and returns them.
    fn catch_up(&mut self) -> Vec<FileChange> {
        let changes = take_changes(&self.conn).unwrap();
        let batch = fold(&changes, self.page_size()).unwrap();
        apply(&mut self.mirror, &batch);
        changes
    }

    fn page_size(&self) -> u32 {
        self.conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap()
    }

    fn disk(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }

    /// True if the mirror equals the file's bytes on disk.
    fn mirrors(&self) -> bool {
        self.mirror == self.disk()
    }

    fn check(&self, what: &str) {
        let disk = self.disk();
        if self.mirror != disk {
            let first = self.mirror.iter().zip(&disk).position(|(a, b)| a != b);
            panic!(
                "{what}: the mirror ({} bytes) is not the disk ({} bytes), first difference at {first:?}",
                self.mirror.len(),
                disk.len()
            );
        }
    }

    fn count(&self, table: &str) -> i64 {
        self.conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap()
    }
}

fn has_truncate(changes: &[FileChange]) -> bool {
    changes.iter().any(|c| matches!(c, FileChange::Truncate { .. }))
}

// ---------------------------------------------------------------------------------------------------------
// SQLite through the shim.

#[test]
fn inserts_updates_and_deletes_are_mirrored_after_every_commit() {
    let mut db = Mirrored::open(&shim(), "crud");
    let changes = db.run("CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT)");
    assert!(!changes.is_empty(), "a commit writes the file");
    for i in 0..40 {
        let changes = db.run(&format!("INSERT INTO t VALUES ({i}, printf('%.*c', {}, 'x'))", 50 + i * 13));
        assert!(!changes.is_empty());
    }
    db.run("UPDATE t SET v = upper(v) || 'y' WHERE k % 3 = 0");
    db.run("BEGIN; UPDATE t SET v = 'short' WHERE k < 20; DELETE FROM t WHERE k % 5 = 1; COMMIT");
    db.run("DELETE FROM t WHERE k > 30");
    assert_eq!(db.count("t"), 25);
    // Every write SQLite made was whole pages at page boundaries (the fold would have refused otherwise).
    assert_eq!(db.disk().len() % db.page_size() as usize, 0);
}

#[test]
fn tables_and_indexes_created_and_dropped_are_mirrored() {
    let mut db = Mirrored::open(&shim(), "ddl");
    db.run("CREATE TABLE a(x, y); CREATE TABLE b(z PRIMARY KEY)");
    db.run(&format!("INSERT INTO a SELECT value, value * 7 FROM {}", series(500)));
    db.run("CREATE INDEX a_y ON a(y); CREATE UNIQUE INDEX a_x ON a(x)");
    db.run(&format!("INSERT INTO b SELECT 'k' || value FROM {}", series(300)));
    db.run("ALTER TABLE a ADD COLUMN w DEFAULT 3; ALTER TABLE b RENAME TO c");
    db.run("DROP INDEX a_y");
    db.run("DROP TABLE a");
    db.run("CREATE TABLE d(q); INSERT INTO d VALUES (1); DROP TABLE c");
    assert_eq!(db.count("d"), 1);
}

#[test]
fn large_blobs_on_overflow_pages_are_mirrored() {
    let mut db = Mirrored::open(&shim(), "blobs");
    db.run("CREATE TABLE b(k INTEGER PRIMARY KEY, v BLOB)");
    db.run("INSERT INTO b VALUES (1, randomblob(1000000))");
    db.run("INSERT INTO b VALUES (2, randomblob(300000)), (3, zeroblob(70000))");
    db.run("UPDATE b SET v = randomblob(10) WHERE k = 1");
    db.run("UPDATE b SET v = randomblob(2000000) WHERE k = 3");
    db.run("DELETE FROM b WHERE k = 2");
    assert!(db.disk().len() > 2_000_000);
}

/// Opens a transaction big enough that SQLite's page cache (10 pages) spills it into the file before the
/// commit, and returns the file's bytes from before the transaction.
fn spill(db: &mut Mirrored) -> Vec<u8> {
    db.run("PRAGMA cache_size=10; CREATE TABLE s(k INTEGER PRIMARY KEY, v BLOB)");
    db.run(&format!("INSERT INTO s SELECT value, randomblob(100) FROM {}", series(50)));
    let before = db.disk();
    db.conn
        .execute_batch(&format!(
            "BEGIN; INSERT INTO s SELECT value + 100, randomblob(900) FROM {}",
            series(400)
        ))
        .unwrap();
    // Mid-transaction the file already holds pages of it: the spill, captured like any write.
    let spilled = db.catch_up();
    assert!(spilled.len() > 10, "the transaction spilled: {} writes", spilled.len());
    assert!(db.disk().len() > before.len(), "the spill grew the file");
    db.check("mid-transaction, after the spill");
    before
}

#[test]
fn a_transaction_that_spills_the_cache_then_commits_is_mirrored() {
    let mut db = Mirrored::open(&shim(), "spill-commit");
    spill(&mut db);
    db.run("INSERT INTO s VALUES (0, x'00'); COMMIT");
    assert_eq!(db.count("s"), 451);
}

#[test]
fn a_transaction_that_spills_the_cache_then_rolls_back_is_mirrored() {
    let mut db = Mirrored::open(&shim(), "spill-rollback");
    let before_tx = spill(&mut db);
    // The rollback writes the journal's pages back and cuts the file: captured as well.
    let restored = db.run("ROLLBACK");
    assert!(has_truncate(&restored), "the rollback cut the file: {restored:?}");
    assert_eq!(db.disk(), before_tx, "the rollback restored the file");
    assert_eq!(db.count("s"), 50);
}

/// Spills transactions of several sizes with memory-mapped reads on (`unix` then grows the file to a size
/// hint if it gets one) and commits them; returns how often the mirror missed, mid-transaction or after.
fn spills_with_mmap(vfs: &str, name: &str) -> usize {
    let mut misses = 0;
    for case in 0..6 {
        let mut db = Mirrored::open(vfs, &format!("{name}-{case}"));
        db.run(
            "PRAGMA mmap_size=268435456; PRAGMA cache_size=10; CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)",
        );
        let mmap: i64 = db.conn.query_row("PRAGMA mmap_size", [], |r| r.get(0)).unwrap();
        assert_eq!(mmap, 268435456);
        db.run(&format!("INSERT INTO t(v) SELECT randomblob(100) FROM {}", series(50)));
        let big = format!("BEGIN; INSERT INTO t(v) SELECT randomblob(700) FROM {}", series(300 + case * 50));
        db.conn.execute_batch(&big).unwrap();
        db.catch_up();
        misses += usize::from(!db.mirrors());
        db.conn.execute_batch("COMMIT").unwrap();
        db.catch_up();
        misses += usize::from(!db.mirrors());
    }
    misses
}

#[test]
fn memory_mapped_reads_do_not_grow_the_file_behind_the_capture() {
    assert_eq!(spills_with_mmap(&shim(), "mmap"), 0);
    // Negative control: the shim passing size hints on to `unix`, which grows the file by them.
    let hinting = vfs::register(None, Faults { forward_size_hints: true, ..Faults::NONE }).unwrap();
    assert!(spills_with_mmap(&hinting, "mmap-hints") > 0);
}

#[test]
fn vacuum_shrinks_the_file_with_a_truncate_that_is_mirrored() {
    let mut db = Mirrored::open(&shim(), "vacuum");
    db.run("CREATE TABLE v(k INTEGER PRIMARY KEY, v BLOB); CREATE INDEX v_v ON v(v)");
    db.run(&format!("INSERT INTO v SELECT value, randomblob(300) FROM {}", series(3000)));
    db.run("DELETE FROM v WHERE k > 100");
    let before = db.disk().len();
    let changes = db.run("VACUUM");
    assert!(has_truncate(&changes), "VACUUM cut the file: {changes:?}");
    assert!(db.disk().len() < before / 4, "the file shrank: {before} -> {}", db.disk().len());
    assert_eq!(db.count("v"), 100);
}

/// Negative control: a shim that drops truncates yields a mirror the same comparison finds wrong.
#[test]
fn a_shim_that_drops_truncates_is_caught_by_the_comparison() {
    let mut db = Mirrored::open(&faulty_shim(), "vacuum-faulty");
    db.run("CREATE TABLE v(k INTEGER PRIMARY KEY, v BLOB)");
    db.run(&format!("INSERT INTO v SELECT value, randomblob(300) FROM {}", series(3000)));
    db.run("DELETE FROM v WHERE k > 100");
    db.conn.execute_batch("VACUUM").unwrap();
    let changes = db.catch_up();
    assert!(!has_truncate(&changes));
    assert!(!db.mirrors(), "without the truncate the mirror stays long");
    assert!(db.mirror.len() > db.disk().len());
}

/// Negative control: leaving out any one write of a commit (here, each in turn, of a commit that rewrites
/// its pages once each) leaves the mirror different from the disk.
#[test]
fn a_batch_missing_any_one_write_is_caught_by_the_comparison() {
    let mut db = Mirrored::open(&shim(), "missing-write");
    db.run("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
    db.run(&format!("INSERT INTO t SELECT value, randomblob(200) FROM {}", series(100)));
    let base = db.mirror.clone();
    db.conn.execute_batch("UPDATE t SET v = randomblob(200)").unwrap();
    let changes = take_changes(&db.conn).unwrap();
    let writes: Vec<usize> =
        (0..changes.len()).filter(|&i| matches!(changes[i], FileChange::Write { .. })).collect();
    assert!(writes.len() > 3, "{changes:?}");
    let disk = db.disk();
    let mut whole = base.clone();
    apply(&mut whole, &fold(&changes, db.page_size()).unwrap());
    assert_eq!(whole, disk, "all of them rebuild the file");
    for &skip in &writes {
        let mut partial = changes.clone();
        partial.remove(skip);
        let mut image = base.clone();
        apply(&mut image, &fold(&partial, db.page_size()).unwrap());
        assert_ne!(image, disk, "the mirror without write {skip} still matched");
    }
}

#[test]
fn a_database_reopened_on_the_shim_keeps_mirroring() {
    let vfs = shim();
    let mut db = Mirrored::open(&vfs, "reopen");
    db.run("CREATE TABLE t(x); INSERT INTO t VALUES (1)");
    let Mirrored { conn, path, mirror } = db;
    drop(conn);
    let conn = DatabaseLocation::on_vfs(&vfs, &path).open().unwrap();
    let mut db = Mirrored { conn, path, mirror };
    assert!(db.catch_up().is_empty(), "opening writes nothing to a clean database");
    db.run("INSERT INTO t VALUES (2)");
    assert_eq!(db.count("t"), 2);
}

// ---------------------------------------------------------------------------------------------------------
// Random operation sequences.

#[derive(Clone, Debug)]
enum Op {
    Insert {
        rows: u32,
        size: u32,
    },
    Update {
        every: u32,
        size: u32,
    },
    Delete {
        every: u32,
    },
    Index,
    DropIndex,
    /// A transaction big enough to spill the 10-page cache, committed or rolled back.
    Big {
        rows: u32,
        rollback: bool,
    },
    Vacuum,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..60u32, 0..3000u32).prop_map(|(rows, size)| Op::Insert { rows, size }),
        2 => (1..5u32, 0..3000u32).prop_map(|(every, size)| Op::Update { every, size }),
        2 => (1..5u32).prop_map(|every| Op::Delete { every }),
        1 => Just(Op::Index),
        1 => Just(Op::DropIndex),
        2 => (100..400u32, any::<bool>()).prop_map(|(rows, rollback)| Op::Big { rows, rollback }),
        1 => Just(Op::Vacuum),
    ]
}

fn sql_of(op: &Op) -> String {
    match op {
        Op::Insert { rows, size } => {
            format!("INSERT INTO t(v) SELECT randomblob({size}) FROM {}", series(rows))
        }
        Op::Update { every, size } => format!("UPDATE t SET v = randomblob({size}) WHERE k % {every} = 0"),
        Op::Delete { every } => format!("DELETE FROM t WHERE k % {every} = 1"),
        Op::Index => "CREATE INDEX IF NOT EXISTS t_v ON t(substr(v, 1, 8))".to_string(),
        Op::DropIndex => "DROP INDEX IF EXISTS t_v".to_string(),
        Op::Big { rows, rollback } => format!(
            "BEGIN; INSERT INTO t(v) SELECT randomblob(700) FROM {}; {}",
            series(rows),
            if *rollback { "ROLLBACK" } else { "COMMIT" }
        ),
        Op::Vacuum => "VACUUM".to_string(),
    }
}

static CASE: AtomicUsize = AtomicUsize::new(0);

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_are_mirrored_after_every_commit(
        ops in prop::collection::vec(op(), 1..12),
        mmap in any::<bool>(),
    ) {
        let case = CASE.fetch_add(1, Ordering::Relaxed);
        let mut db = Mirrored::open(&shim(), &format!("prop-{case}"));
        let mmap_size = if mmap { 1 << 28 } else { 0 };
        db.run(&format!("PRAGMA mmap_size={mmap_size}; PRAGMA cache_size=10"));
        db.run("CREATE TABLE t(k INTEGER PRIMARY KEY, v BLOB)");
        for op in &ops {
            let sql = sql_of(op);
            db.conn.execute_batch(&sql).unwrap();
            db.catch_up();
            prop_assert!(db.mirrors(), "after {:?} (of {:?}, mmap {})", op, ops, mmap);
        }
        let ok: String = db.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        prop_assert_eq!(ok, "ok");
    }
}

// ---------------------------------------------------------------------------------------------------------
// WAL refused.

#[test]
fn a_wal_database_on_the_shim_is_a_clear_error() {
    let path = db_path("wal-refused");
    let e = DatabaseLocation::on_vfs(shim(), &path).journal(Journal::Wal).open().unwrap_err();
    assert!(e.to_string().contains(WAL_REFUSED), "{e}");
    // Control: the same location on the base VFS opens in WAL mode.
    let path = db_path("wal-on-base");
    DatabaseLocation::on_vfs("unix", &path).journal(Journal::Wal).open().unwrap();
}

#[test]
fn switching_an_open_replica_to_wal_fails_and_leaves_it_in_delete_mode() {
    let mut db = Mirrored::open(&shim(), "wal-switch");
    db.run("CREATE TABLE t(x)");
    for sql in ["PRAGMA journal_mode=WAL", "PRAGMA main.journal_mode = 'wal'"] {
        let e = db.conn.execute_batch(sql).unwrap_err();
        assert!(e.to_string().contains(WAL_REFUSED), "{sql}: {e}");
    }
    let mode: String = db.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "delete");
    // Other pragmas pass through to SQLite.
    let mode: String = db.conn.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "delete");
    db.run("INSERT INTO t VALUES (1)");
}

#[test]
fn a_database_already_in_wal_format_does_not_open_on_the_shim() {
    let path = db_path("wal-format");
    {
        let conn = DatabaseLocation::file(&path).journal(Journal::Wal).open().unwrap();
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1)").unwrap();
    }
    let header = std::fs::read(&path).unwrap();
    assert_eq!((header[18], header[19]), (2, 2), "the file is in WAL format");
    // Opening it means opening its WAL, which the shim refuses.
    let e = DatabaseLocation::on_vfs(shim(), &path).open().unwrap_err();
    assert!(e.reason.contains("unable to open database file"), "{e}");
    // Control: it opens on the base.
    DatabaseLocation::file(&path).open().unwrap();
}

// ---------------------------------------------------------------------------------------------------------
// Registration, taking, the method tables.

#[test]
fn registration_is_idempotent_and_thread_safe() {
    // Real threads on purpose: SQLite's VFS list is process-global, and registering from several threads at
    // once is what is tested (no simulation runs here).
    #[allow(clippy::disallowed_methods)]
    let threads: Vec<_> = (0..8).map(|_| std::thread::spawn(|| register(None).unwrap())).collect();
    let names: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(names.iter().all(|n| *n == names[0]), "{names:?}");
    assert_eq!(names[0], format!("{REPLICA_VFS_PREFIX}unix"), "the default VFS is unix");
    assert_eq!(register(Some("unix")).unwrap(), names[0]);
    let other = register(Some("unix-none")).unwrap();
    assert_eq!(other, format!("{REPLICA_VFS_PREFIX}unix-none"));
    assert_ne!(faulty_shim(), names[0]);
    assert_eq!(register(Some("no-such-vfs")), Err(ReplicaError::NoSuchVfs(Some("no-such-vfs".into()))));
    assert_eq!(register(Some(&other)), Err(ReplicaError::ShimOverShim(other.clone())));
}

#[test]
fn a_shim_over_another_base_captures_its_writes() {
    let mut db = Mirrored::open(&register(Some("unix-none")).unwrap(), "other-base");
    db.run(&format!("CREATE TABLE t(x); INSERT INTO t SELECT randomblob(5000) FROM {}", series(20)));
    db.run("DELETE FROM t; VACUUM");
}

#[test]
fn taking_changes_needs_a_database_on_the_shim() {
    let conn = DatabaseLocation::file(db_path("not-a-replica")).open().unwrap();
    conn.execute_batch("CREATE TABLE t(x)").unwrap();
    assert_eq!(take_changes(&conn), Err(ReplicaError::NotOnReplicaVfs));
    let mem = Connection::open_in_memory().unwrap();
    assert_eq!(take_changes(&mem), Err(ReplicaError::NotOnReplicaVfs));
}

#[test]
fn the_journal_is_not_captured() {
    let mut db = Mirrored::open(&shim(), "journal");
    db.run("CREATE TABLE t(x); INSERT INTO t VALUES (1)");
    let journal = format!("{}-journal", db.path.display());
    // In EXCLUSIVE locking mode SQLite keeps the journal, its header zeroed at each commit.
    assert!(Path::new(&journal).exists());
    let changes = db.run("UPDATE t SET x = 2");
    let disk_len = db.disk().len() as u64;
    for change in &changes {
        if let FileChange::Write { offset, data } = change {
            assert!(offset + data.len() as u64 <= disk_len, "{change:?} lies inside the main file");
            assert_eq!(data.len() as u32, db.page_size(), "{change:?} is one page");
        }
    }
}

#[test]
fn chunk_sizes_are_refused_on_the_shim() {
    let db = Mirrored::open(&shim(), "chunk");
    assert_eq!(vfs::set_chunk_size(&db.conn, 1 << 20), ffi::SQLITE_NOTFOUND);
    // Control: the base takes it.
    let conn = DatabaseLocation::file(db_path("chunk-base")).open().unwrap();
    assert_eq!(vfs::set_chunk_size(&conn, 1 << 20), ffi::SQLITE_OK);
}

#[test]
fn wrapper_tables_offer_what_the_base_version_offers() {
    let v1 = vfs::wrapper_for_version(1);
    assert_eq!(v1.iVersion, 1);
    assert!(v1.xClose.is_some() && v1.xShmMap.is_none() && v1.xShmBarrier.is_none() && v1.xFetch.is_none());
    let v2 = vfs::wrapper_for_version(2);
    assert!(v2.xShmMap.is_some() && v2.xShmBarrier.is_some() && v2.xFetch.is_none());
    // Methods the base lacks stay absent even in its version.
    assert!(v2.xShmLock.is_none() && v2.xRead.is_none());
    let v3 = vfs::wrapper_for_version(3);
    assert!(v3.xFetch.is_some() && v3.xUnfetch.is_none());
    assert_eq!(vfs::wrapper_for_version(4).iVersion, 3);
}

// ---------------------------------------------------------------------------------------------------------
// The fold alone.

/// Applies each change to `file` as a file system would.
fn apply_each(file: &mut Vec<u8>, changes: &[FileChange]) {
    for change in changes {
        match change {
            FileChange::Write { offset, data } => {
                let (start, end) = (*offset as usize, *offset as usize + data.len());
                if file.len() < end {
                    file.resize(end, 0);
                }
                file[start..end].copy_from_slice(data);
            }
            FileChange::Truncate { size } => file.resize(*size as usize, 0),
        }
    }
}

const PS: u32 = 512;

fn change() -> impl Strategy<Value = FileChange> {
    let ps = u64::from(PS);
    prop_oneof![
        3 => (0..12u64, 1..4usize, any::<u8>()).prop_map(move |(page, n, byte)| FileChange::Write {
            offset: page * ps,
            data: (0..n * PS as usize).map(|i| byte.wrapping_add(i as u8)).collect(),
        }),
        1 => (0..14u64).prop_map(move |pages| FileChange::Truncate { size: pages * ps }),
    ]
}

proptest! {
    #[test]
    fn folding_then_applying_equals_applying_each_change(
        base_pages in 0..10usize,
        changes in prop::collection::vec(change(), 0..12),
    ) {
        let base: Vec<u8> = (0..base_pages * PS as usize).map(|i| (i % 251) as u8 + 1).collect();
        let mut expected = base.clone();
        apply_each(&mut expected, &changes);
        let batch = fold(&changes, PS).unwrap();
        let mut got = base;
        apply(&mut got, &batch);
        prop_assert_eq!(got, expected);
        prop_assert!(batch.pages.values().all(|p| p.len() == PS as usize));
    }
}

#[test]
fn a_cut_then_growth_leaves_zero_pages_in_the_batch() {
    let page = |b: u8| vec![b; PS as usize];
    let changes = [
        FileChange::Truncate { size: 2 * u64::from(PS) },
        FileChange::Write { offset: 4 * u64::from(PS), data: page(9) },
    ];
    let batch = fold(&changes, PS).unwrap();
    assert_eq!(batch.size, Some(5 * u64::from(PS)));
    assert_eq!(batch.pages.keys().copied().collect::<Vec<_>>(), [3, 4, 5]);
    assert_eq!(batch.pages[&3], page(0));
    let mut image = vec![7; 10 * PS as usize];
    apply(&mut image, &batch);
    let mut expected = vec![7; 10 * PS as usize];
    apply_each(&mut expected, &changes);
    assert_eq!(image, expected);
}

#[test]
fn partial_page_writes_fold_only_into_pages_the_batch_knows() {
    let ps = u64::from(PS);
    let whole = FileChange::Write { offset: ps, data: vec![1; PS as usize] };
    let part = FileChange::Write { offset: ps + 10, data: vec![2; 20] };
    let batch = fold(&[whole.clone(), part.clone()], PS).unwrap();
    assert_eq!(&batch.pages[&2][8..32], &[[1u8; 2].as_slice(), &[2; 20], &[1; 2]].concat()[..]);
    assert_eq!(fold(&[part], PS), Err(ReplicaError::PartialPage { offset: ps + 10, len: 20 }));
    // A write straddling two pages: whole for neither.
    let straddle = FileChange::Write { offset: ps / 2, data: vec![3; PS as usize] };
    assert!(matches!(fold(&[straddle], PS), Err(ReplicaError::PartialPage { .. })));
    assert_eq!(fold(&[FileChange::Truncate { size: 100 }], PS), Err(ReplicaError::UnalignedTruncate(100)));
    assert_eq!(fold(&[], 1000), Err(ReplicaError::BadPageSize(1000)));
    assert_eq!(fold(&[], 256), Err(ReplicaError::BadPageSize(256)));
    assert_eq!(fold(&[], 65536).unwrap(), PageBatch { page_size: 65536, ..PageBatch::default() });
    let far = FileChange::Write { offset: (1u64 << 32) * ps, data: vec![0; PS as usize] };
    assert_eq!(fold(&[far], PS), Err(ReplicaError::PageNumberOverflow(1 << 32)));
}
