//! SQLite on `SimDisk`: a VFS whose files live on the simulated disk of the node that runs the code.
//!
//! [`open`] opens a database through the VFS (registered as [`VFS_NAME`], not as SQLite's default) and applies
//! the crash-safe settings. Every file SQLite opens (database, rollback journal, WAL) is a file on the current
//! node's disk ([`crate::disk`]), so SQLite is exposed to exactly the disk's fault model.
//!
//! # Fault model mapping
//! | disk                                   | SQLite sees                                                     |
//! |----------------------------------------|-----------------------------------------------------------------|
//! | `Io` (EIO, or the power is out)        | `SQLITE_IOERR_READ` / `_WRITE` / `_FSYNC` / `_TRUNCATE` / `_DELETE`; `SQLITE_IOERR` on open |
//! | `Full` (ENOSPC)                        | `SQLITE_FULL`                                                   |
//! | `Stale` (handle of a crashed incarnation) | `SQLITE_IOERR`                                              |
//! | `NotFound`                             | `SQLITE_CANTOPEN` on open, `SQLITE_IOERR_DELETE_NOENT` on delete |
//! | a short read (past the end of file)    | the rest zero-filled, `SQLITE_IOERR_SHORT_READ`                 |
//! | a write or truncate                    | visible at once, durable only after `xSync`                     |
//! | create and delete                      | durable without a sync (`xDelete`'s directory sync is implied)  |
//! | a power cut                            | unsynced writes lost, kept in part, or torn at 512-byte sectors |
//!
//! Every call returns at once, whatever the disk's latency. Under [`crate::disk::Durability::AfterLatency`] its
//! effect on what a power cut leaves is in flight until the disk reaches the end of its latency, so a `COMMIT`
//! is durable only once `disk::settle` has returned after it.
//!
//! The VFS promises SQLite nothing beyond that: `xSectorSize` is [`crate::disk::SECTOR_SIZE`] and
//! `xDeviceCharacteristics` is 0 (no atomic writes, no powersafe overwrite, no sequential writes), because the
//! disk can tear any sector of an unsynced write.
//!
//! # Locking, WAL and one connection per file
//! Each database has one connection (one per Durable Object), which [`open`] puts in
//! `locking_mode=EXCLUSIVE`. Locks are real between the connections of one node's incarnation (see `locks`):
//! a second connection to a database another one has written gets `SQLITE_BUSY`, as on a real file system. The VFS has no shared-memory methods (`sqlite3_io_methods` version 1), so WAL mode
//! keeps its index in heap memory, which SQLite allows only in EXCLUSIVE locking mode; [`open`] therefore sets
//! the locking mode before the journal mode.
//!
//! # Determinism
//! - Time (`xCurrentTime`, `xCurrentTimeInt64`) is [`crate::unix_now`]: the node's simulated wall clock.
//! - `xSleep` returns at once (locks never block, so SQLite has nothing to wait for).
//! - SQLite's PRNG (behind `random()`, `randomblob()`, journal nonces and WAL salts) is process-global. It is
//!   seeded by [`reset_prng`] at the start of each run, through `SQLITE_TESTCTRL_PRNG_SEED`; with that seed set,
//!   SQLite never calls any VFS's `xRandomness`. Ours still draws from the run's [`Purpose::Sqlite`] stream.
//! - Temp files (opened with no name) get the first free name `etilqs-temp-<n>` on the node's disk, so their
//!   names depend only on the disk's state. With `temp_store=MEMORY` SQLite rarely needs one.
//!
//! # Contexts and safety
//! Every callback works on the run installed on the calling thread ([`crate::LocalWorld`] or the madsim
//! world). Outside a run, file operations fail with an `SQLITE_IOERR` code and `xAccess` says "absent", so a
//! connection that outlives its run closes quietly.
//!
//! `xClose` touches no disk: a connection may be closed when a crashed node's futures are dropped, with stale
//! handles or outside the run. The one exception is a `DELETEONCLOSE` file (a temp file), which is deleted if
//! the run is installed, the closing code runs on the file's node and the handle is not stale; otherwise it
//! stays behind, which wastes space but breaks nothing.
//!
//! Handles belong to one incarnation of the node, and every operation on a stale one fails. Path operations
//! (`xOpen`, `xDelete`, `xAccess`) do not: when a WAL connection closes with its log fully checkpointed, SQLite
//! deletes the WAL by name without reading it first. So `xClose` of a stale handle remembers its path, and the
//! `xDelete` of that path that SQLite issues next is skipped: a crashed incarnation's connection, dropped late
//! (madsim drops a killed node's tasks lazily), cannot delete the new incarnation's journal or WAL.
//!
//! No panic unwinds into SQLite: each callback that can panic runs under `catch_unwind`, and a panic (a broken
//! invariant) is printed to stderr and becomes an SQLite error code.
//!
//! # Evidence
//! `sim/tests/sqlite_local.rs` cuts the power at every disk operation of a multi-statement transaction, under
//! many seeds, in both journal modes, and checks that the database holds all of it or none of it and passes
//! `PRAGMA integrity_check`. Its negative control (`synchronous=OFF`) shows the same sweep finding corrupt and
//! half-applied databases.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::Once;

use rusqlite::{ffi, Connection, OpenFlags};

use crate::clock::unix_now;
use crate::context;
use crate::disk::{self, DiskError, DiskErrorKind, FileHandle};
use crate::rng::Purpose;
use crate::seed::{splitmix64, Seed};

/// The name the VFS is registered under.
pub const VFS_NAME: &str = "dosim-simdisk";

/// The longest path the VFS accepts, in bytes (without the NUL).
const MAX_PATHNAME: c_int = 512;

/// Julian day number of the Unix epoch, in milliseconds (2440587.5 days).
const UNIX_EPOCH_JULIAN_MS: i64 = 210_866_760_000_000;

/// The journal mode [`open`] puts a database in. Both are crash-safe with `synchronous=FULL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JournalMode {
    /// A rollback journal (`<db>-journal`). In EXCLUSIVE locking mode SQLite does not delete it at commit:
    /// it zeroes the journal header and syncs (as `PERSIST` does), and deletes the file when the connection
    /// closes. The header write and its sync are the commit point.
    Delete,
    /// A write-ahead log (`<db>-wal`) with its index in heap memory (EXCLUSIVE locking mode). The sync after
    /// the commit frame is the commit point; the WAL is checkpointed into the database and deleted when the
    /// connection closes (or at 1000 pages).
    Wal,
}

impl JournalMode {
    /// The value of `PRAGMA journal_mode` that selects this mode, as SQLite reports it back.
    pub fn pragma_value(self) -> &'static str {
        match self {
            JournalMode::Delete => "delete",
            JournalMode::Wal => "wal",
        }
    }
}

/// Registers the VFS with SQLite under [`VFS_NAME`], not as the default VFS. Idempotent.
///
/// # Panics
/// If SQLite refuses the registration.
pub fn register_vfs() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        let name = CString::new(VFS_NAME).expect("VFS name has no NUL");
        let vfs = Box::new(ffi::sqlite3_vfs {
            iVersion: 2,
            szOsFile: c_int::try_from(std::mem::size_of::<SimFile>()).expect("SimFile is small"),
            mxPathname: MAX_PATHNAME,
            pNext: ptr::null_mut(),
            zName: name.into_raw(),
            pAppData: ptr::null_mut(),
            xOpen: Some(x_open),
            xDelete: Some(x_delete),
            xAccess: Some(x_access),
            xFullPathname: Some(x_full_pathname),
            xDlOpen: Some(x_dl_open),
            xDlError: Some(x_dl_error),
            xDlSym: Some(x_dl_sym),
            xDlClose: Some(x_dl_close),
            xRandomness: Some(x_randomness),
            xSleep: Some(x_sleep),
            xCurrentTime: Some(x_current_time),
            xGetLastError: Some(x_get_last_error),
            xCurrentTimeInt64: Some(x_current_time_int64),
            xSetSystemCall: None,
            xGetSystemCall: None,
            xNextSystemCall: None,
        });
        // SAFETY: the VFS struct and its name are leaked, so they outlive every use SQLite makes of them;
        // every callback matches its C signature.
        let rc = unsafe { ffi::sqlite3_vfs_register(Box::into_raw(vfs), 0) };
        assert_eq!(rc, ffi::SQLITE_OK, "sqlite3_vfs_register({VFS_NAME}) failed");
    });
}

/// Reseeds SQLite's process-global PRNG from the run's seed.
///
/// It sets `SQLITE_TESTCTRL_PRNG_SEED` (with no database), which in the bundled SQLite 3.54 stores a 32-bit
/// seed that replaces every VFS's `xRandomness` when the PRNG initialises, and resets the PRNG so that the
/// next draw reinitialises it. The 32-bit value is a mix of the whole seed and never 0 (0 would mean "use the
/// default VFS's randomness"). Call it at the start of each run, under the process-wide run lock: the PRNG is
/// shared by every connection in the process.
pub fn reset_prng(seed: Seed) {
    let x = prng_seed_value(seed);
    // SAFETY: PRNG_SEED takes (int, sqlite3*); a null db means "seed with x". It only touches SQLite's
    // global config and PRNG, under SQLite's PRNG mutex.
    unsafe {
        ffi::sqlite3_test_control(ffi::SQLITE_TESTCTRL_PRNG_SEED, x, ptr::null_mut::<ffi::sqlite3>());
    }
}

/// The nonzero 32-bit PRNG seed for `seed`.
fn prng_seed_value(seed: Seed) -> c_int {
    let mixed = splitmix64(seed.0 ^ 0x5351_4c69_7465_5052); // "SQLitePR"
    let x = (mixed ^ (mixed >> 32)) as u32 as c_int;
    if x == 0 {
        1
    } else {
        x
    }
}

/// Opens (creating if absent) the database `path` on the current node's disk, with the crash-safe settings:
/// `locking_mode=EXCLUSIVE`, then `journal_mode` per `journal`, `synchronous=FULL` and `temp_store=MEMORY`.
///
/// It must run inside a run, on a node. The connection must stay on that node; drop it before the node
/// restarts after a crash (see the module docs).
///
/// # Errors
/// `SQLITE_MISUSE` outside a run or off a node; any SQLite error from opening or from the pragmas, including
/// a journal mode SQLite did not accept.
pub fn open(path: &str, journal: JournalMode) -> rusqlite::Result<Connection> {
    register_vfs();
    let on_node = context::try_current().is_some_and(|ctx| ctx.current_node().is_some());
    if !on_node {
        return Err(misuse("dosim sqlite::open needs a running simulation, on a node"));
    }
    let flags =
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags_and_vfs(path, flags, VFS_NAME)?;
    let locking: String = conn.query_row("PRAGMA locking_mode=EXCLUSIVE", [], |r| r.get(0))?;
    if !locking.eq_ignore_ascii_case("exclusive") {
        return Err(misuse(&format!("SQLite kept locking_mode={locking} instead of exclusive")));
    }
    let sql = format!("PRAGMA journal_mode={}", journal.pragma_value());
    let mode: String = conn.query_row(&sql, [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case(journal.pragma_value()) {
        return Err(misuse(&format!(
            "SQLite kept journal_mode={mode} instead of {}",
            journal.pragma_value()
        )));
    }
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA temp_store=MEMORY;")?;
    Ok(conn)
}

fn misuse(msg: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_MISUSE), Some(msg.to_string()))
}

// ---------------------------------------------------------------------------------------------------------
// Files.

/// An open file: SQLite allocates `szOsFile` bytes and hands them to `xOpen`, which initialises them.
#[repr(C)]
struct SimFile {
    /// Must come first: SQLite sees a `*mut sqlite3_file` and the callbacks cast it back to `SimFile`.
    base: ffi::sqlite3_file,
    handle: FileHandle,
    delete_on_close: bool,
    /// Who holds this file's locks: a number unique in the run. Not the file's address: SQLite reuses the
    /// memory of a closed file for the next one, and which address comes back depends on the allocator's
    /// history, which differs between runs in one process; an identity taken from it made a lock held under
    /// a stale holder's entry (and so the outcome of a second connection's lock) differ from run to run.
    owner: u64,
}

thread_local! {
    /// The next lock owner number. A run has its own thread, so numbering starts afresh in every run.
    static NEXT_OWNER: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn next_owner() -> u64 {
    NEXT_OWNER.with(|n| {
        let v = n.get() + 1;
        n.set(v);
        v
    })
}

// SQLite places each `sqlite3_file` at an 8-byte boundary inside its own allocations.
const _: () = assert!(std::mem::align_of::<SimFile>() <= 8);

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

/// The handle of an open file.
///
/// # Safety
/// `p` must be a file that `x_open` initialised and `x_close` has not closed yet (SQLite calls the io methods
/// only on such files).
unsafe fn handle<'a>(p: *mut ffi::sqlite3_file) -> &'a FileHandle {
    // SAFETY: per the contract, `p` points to a live `SimFile` (repr(C), `sqlite3_file` first).
    unsafe { &(*p.cast::<SimFile>()).handle }
}

/// Runs a callback body, turning a panic into `on_panic` after printing it and deferring it to the run: no
/// unwinding into SQLite.
fn guarded(callback: &str, on_panic: c_int, body: impl FnOnce() -> c_int) -> c_int {
    // AssertUnwindSafe: after a panic SQLite only sees an error code; the run's RefCells release their
    // borrows while unwinding.
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(rc) => rc,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(non-string panic payload)");
            eprintln!(
                "dosim sqlite VFS: panic in {callback}: {msg} (returning SQLite error code {on_panic})"
            );
            // It cannot unwind through SQLite; the run re-raises it when control is back in Rust, so a broken
            // invariant fails the run instead of passing as an I/O error.
            if let Some(ctx) = context::try_current() {
                ctx.defer_panic(format!("panic in SQLite VFS {callback}: {msg}"));
            }
            on_panic
        }
    }
}

/// True if a run is installed on this thread: the disk functions need one.
fn in_run() -> bool {
    context::try_current().is_some()
}

/// The SQLite code for a failed disk operation whose EIO code is `io`.
fn code(e: &DiskError, io: c_int) -> c_int {
    match e.kind {
        DiskErrorKind::Io | DiskErrorKind::NotFound => io,
        DiskErrorKind::Full => ffi::SQLITE_FULL,
        DiskErrorKind::Stale => ffi::SQLITE_IOERR,
    }
}

fn result(r: Result<(), DiskError>, io: c_int) -> c_int {
    match r {
        Ok(()) => ffi::SQLITE_OK,
        Err(e) => code(&e, io),
    }
}

unsafe extern "C" fn x_close(p: *mut ffi::sqlite3_file) -> c_int {
    guarded("xClose", ffi::SQLITE_IOERR_CLOSE, || {
        // SAFETY: SQLite calls xClose once per file that xOpen initialised; after it, SQLite clears
        // pMethods and never touches the file again, so moving the fields out leaves nothing to drop twice.
        let SimFile { handle, delete_on_close, owner, .. } = unsafe { ptr::read(p.cast::<SimFile>()) };
        locks::unlock(&handle, owner, ffi::SQLITE_LOCK_NONE);
        // SAFETY: `p` is still valid memory; clearing pMethods guards against a second close.
        unsafe { (*p).pMethods = ptr::null() };
        if delete_on_close {
            delete_if_safe(&handle);
        } else if context::try_current().is_some() && !disk::is_current(&handle) {
            // SQLite deletes a journal or WAL by name right after closing it. If this handle belongs to a
            // crashed incarnation, that delete would hit the new incarnation's file: remember to skip it.
            STALE_CLOSE.with(|c| *c.borrow_mut() = Some(handle.path().to_string()));
        }
        ffi::SQLITE_OK
    })
}

thread_local! {
    /// The path of the last file closed through a stale handle, until the next `xDelete` or `xOpen`.
    static STALE_CLOSE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Deletes a DELETEONCLOSE file if that cannot touch the wrong run or incarnation: the run is installed, the
/// code runs on the file's node, and the handle is not stale. Otherwise the file stays (a leak, not a fault).
fn delete_if_safe(h: &FileHandle) {
    let Some(ctx) = context::try_current() else { return };
    if ctx.current_node() != Some(h.node()) {
        return;
    }
    drop(ctx);
    if disk::file_size(h).is_ok() {
        // A failure (say, the power is out) leaves the file behind, as above.
        let _ = disk::delete(h.path());
    }
}

unsafe extern "C" fn x_read(
    p: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    guarded("xRead", ffi::SQLITE_IOERR_READ, || {
        let (Ok(len), Ok(offset)) = (usize::try_from(amt), u64::try_from(offset)) else {
            return ffi::SQLITE_IOERR_READ;
        };
        // SAFETY: SQLite passes a buffer of `amt` writable bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
        if !in_run() {
            return ffi::SQLITE_IOERR_READ;
        }
        // SAFETY: an io method on an open file.
        match disk::read_at(unsafe { handle(p) }, offset, buf) {
            Ok(n) if n == len => ffi::SQLITE_OK,
            Ok(n) => {
                // SQLite requires the unread tail to be zeroed on a short read.
                buf[n..].fill(0);
                ffi::SQLITE_IOERR_SHORT_READ
            }
            Err(e) => code(&e, ffi::SQLITE_IOERR_READ),
        }
    })
}

unsafe extern "C" fn x_write(
    p: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    guarded("xWrite", ffi::SQLITE_IOERR_WRITE, || {
        let (Ok(len), Ok(offset)) = (usize::try_from(amt), u64::try_from(offset)) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        // SAFETY: SQLite passes `amt` readable bytes.
        let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
        if !in_run() {
            return ffi::SQLITE_IOERR_WRITE;
        }
        // SAFETY: an io method on an open file.
        result(disk::write_at(unsafe { handle(p) }, offset, data), ffi::SQLITE_IOERR_WRITE)
    })
}

unsafe extern "C" fn x_truncate(p: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    guarded("xTruncate", ffi::SQLITE_IOERR_TRUNCATE, || {
        let Ok(size) = u64::try_from(size) else { return ffi::SQLITE_IOERR_TRUNCATE };
        if !in_run() {
            return ffi::SQLITE_IOERR_TRUNCATE;
        }
        // SAFETY: an io method on an open file.
        result(disk::truncate(unsafe { handle(p) }, size), ffi::SQLITE_IOERR_TRUNCATE)
    })
}

unsafe extern "C" fn x_sync(p: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    guarded("xSync", ffi::SQLITE_IOERR_FSYNC, || {
        if !in_run() {
            return ffi::SQLITE_IOERR_FSYNC;
        }
        // SAFETY: an io method on an open file.
        result(disk::sync(unsafe { handle(p) }), ffi::SQLITE_IOERR_FSYNC)
    })
}

unsafe extern "C" fn x_file_size(p: *mut ffi::sqlite3_file, out: *mut ffi::sqlite3_int64) -> c_int {
    guarded("xFileSize", ffi::SQLITE_IOERR_FSTAT, || {
        if !in_run() {
            return ffi::SQLITE_IOERR_FSTAT;
        }
        // SAFETY: an io method on an open file.
        match disk::file_size(unsafe { handle(p) }) {
            Ok(size) => {
                let Ok(size) = ffi::sqlite3_int64::try_from(size) else { return ffi::SQLITE_IOERR_FSTAT };
                // SAFETY: SQLite passes a valid out pointer.
                unsafe { *out = size };
                ffi::SQLITE_OK
            }
            Err(e) => code(&e, ffi::SQLITE_IOERR_FSTAT),
        }
    })
}

unsafe extern "C" fn x_lock(p: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guarded("xLock", ffi::SQLITE_IOERR_LOCK, || {
        // SAFETY: an io method on an open file.
        let file = unsafe { &*p.cast::<SimFile>() };
        locks::lock(&file.handle, file.owner, level)
    })
}

unsafe extern "C" fn x_unlock(p: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guarded("xUnlock", ffi::SQLITE_IOERR_UNLOCK, || {
        // SAFETY: an io method on an open file.
        let file = unsafe { &*p.cast::<SimFile>() };
        locks::unlock(&file.handle, file.owner, level);
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_check_reserved_lock(p: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    guarded("xCheckReservedLock", ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, || {
        // SAFETY: an io method on an open file.
        let file = unsafe { &*p.cast::<SimFile>() };
        let reserved = locks::reserved_by_other(&file.handle, file.owner);
        // SAFETY: SQLite passes a valid out pointer.
        unsafe { *out = c_int::from(reserved) };
        ffi::SQLITE_OK
    })
}

/// SQLite's file locks, per node and path, between the connections of one incarnation of a node.
///
/// Every connection the runtime opens is in `locking_mode=EXCLUSIVE`: once it has written, it keeps its
/// EXCLUSIVE lock until it closes. So a second connection to the same database on the same node (two hosts
/// sharing one storage, say) gets `SQLITE_BUSY` instead of silently interleaving its writes with the first
/// one's, as it would on a real file system. Locks die with their incarnation: a holder whose handle went
/// stale (its node crashed or lost power) holds nothing.
mod locks {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use rusqlite::ffi;

    use crate::disk::{self, FileHandle};
    use crate::trace::NodeId;

    /// One holder of a lock on a file: the connection's file object (its owner number) and its level.
    struct Holder {
        owner: u64,
        handle: FileHandle,
        level: i32,
    }

    thread_local! {
        /// The holders of each locked file. A run has its own thread, so this starts empty in every run.
        static LOCKS: RefCell<BTreeMap<(NodeId, String), Vec<Holder>>> = const { RefCell::new(BTreeMap::new()) };
    }

    /// The highest level another live connection holds on `handle`'s file.
    fn others_max(holders: &mut Vec<Holder>, owner: u64) -> i32 {
        holders.retain(|h| h.owner == owner || disk::is_current(&h.handle));
        holders.iter().filter(|h| h.owner != owner).map(|h| h.level).max().unwrap_or(ffi::SQLITE_LOCK_NONE)
    }

    /// Takes `level` on the file (SQLite's rules: many SHARED, one RESERVED beside them, EXCLUSIVE alone).
    pub(super) fn lock(handle: &FileHandle, owner: u64, level: i32) -> i32 {
        LOCKS.with(|l| {
            let mut l = l.borrow_mut();
            let holders = l.entry((handle.node(), handle.path().to_string())).or_default();
            let others = others_max(holders, owner);
            let refused = match level {
                ffi::SQLITE_LOCK_SHARED => others >= ffi::SQLITE_LOCK_PENDING,
                ffi::SQLITE_LOCK_RESERVED => others >= ffi::SQLITE_LOCK_RESERVED,
                _ => others >= ffi::SQLITE_LOCK_SHARED,
            };
            if refused {
                crate::sometimes("a second connection to a locked database was refused");
                return ffi::SQLITE_BUSY;
            }
            match holders.iter_mut().find(|h| h.owner == owner) {
                Some(h) => h.level = h.level.max(level),
                None => holders.push(Holder { owner, handle: handle.clone(), level }),
            }
            ffi::SQLITE_OK
        })
    }

    /// Lowers the connection's lock to `level` (NONE releases it).
    pub(super) fn unlock(handle: &FileHandle, owner: u64, level: i32) {
        LOCKS.with(|l| {
            let mut l = l.borrow_mut();
            let key = (handle.node(), handle.path().to_string());
            let Some(holders) = l.get_mut(&key) else { return };
            if level == ffi::SQLITE_LOCK_NONE {
                holders.retain(|h| h.owner != owner);
            } else if let Some(h) = holders.iter_mut().find(|h| h.owner == owner) {
                h.level = h.level.min(level);
            }
            if holders.is_empty() {
                l.remove(&key);
            }
        });
    }

    /// True if another live connection holds RESERVED or more on the file.
    pub(super) fn reserved_by_other(handle: &FileHandle, owner: u64) -> bool {
        LOCKS.with(|l| {
            let mut l = l.borrow_mut();
            let Some(holders) = l.get_mut(&(handle.node(), handle.path().to_string())) else { return false };
            others_max(holders, owner) >= ffi::SQLITE_LOCK_RESERVED
        })
    }
}

unsafe extern "C" fn x_file_control(_p: *mut ffi::sqlite3_file, _op: c_int, _arg: *mut c_void) -> c_int {
    ffi::SQLITE_NOTFOUND
}

unsafe extern "C" fn x_sector_size(_p: *mut ffi::sqlite3_file) -> c_int {
    disk::SECTOR_SIZE as c_int
}

unsafe extern "C" fn x_device_characteristics(_p: *mut ffi::sqlite3_file) -> c_int {
    0
}

// ---------------------------------------------------------------------------------------------------------
// The VFS.

/// A name from SQLite, or `None` for a null pointer.
///
/// # Safety
/// `name` is null or a NUL-terminated string.
unsafe fn name_of(name: *const c_char) -> Option<String> {
    if name.is_null() {
        None
    } else {
        // SAFETY: per the contract.
        Some(unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned())
    }
}

/// The first `etilqs-temp-<n>` that is free on the current node's disk.
fn temp_name() -> String {
    (0u64..)
        .map(|n| format!("etilqs-temp-{n}"))
        .find(|name| !disk::exists(name))
        .expect("some temp name is free")
}

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite passes szOsFile writable bytes; a null pMethods tells it there is nothing to close if
    // the open fails.
    unsafe { (*file).pMethods = ptr::null() };
    STALE_CLOSE.with(|c| c.borrow_mut().take());
    guarded("xOpen", ffi::SQLITE_CANTOPEN, || {
        let on_node = context::try_current().is_some_and(|ctx| ctx.current_node().is_some());
        if !on_node {
            return ffi::SQLITE_CANTOPEN;
        }
        // SAFETY: SQLite passes null (for a temp file) or a NUL-terminated name.
        let path = unsafe { name_of(name) }.unwrap_or_else(temp_name);
        let create = flags & ffi::SQLITE_OPEN_CREATE != 0;
        match disk::open(&path, create) {
            Ok(handle) => {
                let sim = SimFile {
                    base: ffi::sqlite3_file { pMethods: &IO_METHODS },
                    handle,
                    delete_on_close: flags & ffi::SQLITE_OPEN_DELETEONCLOSE != 0,
                    owner: next_owner(),
                };
                // SAFETY: `file` has room for a SimFile (szOsFile) with SQLite's 8-byte alignment; it is
                // uninitialised, so it is written without dropping the old contents.
                unsafe { ptr::write(file.cast::<SimFile>(), sim) };
                if !out_flags.is_null() {
                    // SAFETY: a non-null out pointer from SQLite is writable.
                    unsafe { *out_flags = flags };
                }
                ffi::SQLITE_OK
            }
            Err(e) => match e.kind {
                DiskErrorKind::NotFound => ffi::SQLITE_CANTOPEN,
                DiskErrorKind::Full => ffi::SQLITE_FULL,
                DiskErrorKind::Io | DiskErrorKind::Stale => ffi::SQLITE_IOERR,
            },
        }
    })
}

unsafe extern "C" fn x_delete(_vfs: *mut ffi::sqlite3_vfs, name: *const c_char, _sync_dir: c_int) -> c_int {
    guarded("xDelete", ffi::SQLITE_IOERR_DELETE, || {
        // SAFETY: SQLite passes a NUL-terminated name.
        let Some(path) = (unsafe { name_of(name) }) else { return ffi::SQLITE_IOERR_DELETE };
        let on_node = context::try_current().is_some_and(|ctx| ctx.current_node().is_some());
        if !on_node {
            return ffi::SQLITE_IOERR_DELETE;
        }
        if STALE_CLOSE.with(|c| c.borrow_mut().take()).as_deref() == Some(path.as_str()) {
            // A crashed incarnation's connection closing its journal or WAL: the name now belongs to the
            // node's new incarnation, so this delete must not happen.
            crate::sometimes("stale incarnation's delete by name skipped");
            return ffi::SQLITE_OK;
        }
        match disk::delete(&path) {
            Ok(()) => ffi::SQLITE_OK,
            Err(e) if e.kind == DiskErrorKind::NotFound => ffi::SQLITE_IOERR_DELETE_NOENT,
            Err(e) => code(&e, ffi::SQLITE_IOERR_DELETE),
        }
    })
}

unsafe extern "C" fn x_access(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    _flags: c_int,
    out: *mut c_int,
) -> c_int {
    guarded("xAccess", ffi::SQLITE_IOERR_ACCESS, || {
        // SAFETY: SQLite passes a NUL-terminated name.
        let path = unsafe { name_of(name) };
        let on_node = context::try_current().is_some_and(|ctx| ctx.current_node().is_some());
        // Every file is readable and writable, so every flag asks only whether it exists.
        let exists = on_node && path.is_some_and(|p| disk::exists(&p));
        // SAFETY: SQLite passes a valid out pointer.
        unsafe { *out = c_int::from(exists) };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_full_pathname(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n_out: c_int,
    out: *mut c_char,
) -> c_int {
    guarded("xFullPathname", ffi::SQLITE_CANTOPEN, || {
        // SAFETY: SQLite passes a NUL-terminated name.
        let bytes = unsafe { CStr::from_ptr(name) }.to_bytes_with_nul();
        let fits = usize::try_from(n_out).is_ok_and(|n| bytes.len() <= n);
        if !fits {
            return ffi::SQLITE_CANTOPEN;
        }
        // SAFETY: `out` has `n_out` writable bytes, checked above to hold the name and its NUL; the two
        // buffers are distinct allocations.
        unsafe { ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), out, bytes.len()) };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_dl_open(_vfs: *mut ffi::sqlite3_vfs, _name: *const c_char) -> *mut c_void {
    ptr::null_mut()
}

unsafe extern "C" fn x_dl_error(_vfs: *mut ffi::sqlite3_vfs, n: c_int, msg: *mut c_char) {
    if n > 0 && !msg.is_null() {
        // SAFETY: SQLite passes `n` writable bytes; an empty string fits.
        unsafe { *msg = 0 };
    }
}

type DlSym = unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char);

unsafe extern "C" fn x_dl_sym(
    _vfs: *mut ffi::sqlite3_vfs,
    _lib: *mut c_void,
    _sym: *const c_char,
) -> Option<DlSym> {
    None
}

unsafe extern "C" fn x_dl_close(_vfs: *mut ffi::sqlite3_vfs, _lib: *mut c_void) {}

unsafe extern "C" fn x_randomness(_vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    guarded("xRandomness", 0, || {
        let Ok(len) = usize::try_from(n) else { return 0 };
        // SAFETY: SQLite passes `n` writable bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(out.cast::<u8>(), len) };
        match context::try_current() {
            Some(ctx) => ctx.rng(Purpose::Sqlite, |r| r.fill(buf)),
            None => buf.fill(0),
        }
        n
    })
}

unsafe extern "C" fn x_sleep(_vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    micros
}

/// The node's simulated wall clock, in milliseconds since the Julian epoch.
fn julian_ms() -> i64 {
    let unix_ms = i64::try_from(unix_now().as_millis()).expect("simulated time fits in i64 ms");
    UNIX_EPOCH_JULIAN_MS + unix_ms
}

unsafe extern "C" fn x_current_time(_vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    guarded("xCurrentTime", ffi::SQLITE_ERROR, || {
        // SAFETY: SQLite passes a valid out pointer.
        unsafe { *out = julian_ms() as f64 / 86_400_000.0 };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_current_time_int64(
    _vfs: *mut ffi::sqlite3_vfs,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    guarded("xCurrentTimeInt64", ffi::SQLITE_ERROR, || {
        // SAFETY: SQLite passes a valid out pointer.
        unsafe { *out = julian_ms() };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_get_last_error(_vfs: *mut ffi::sqlite3_vfs, _n: c_int, _msg: *mut c_char) -> c_int {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prng_seed_is_never_zero_and_depends_on_the_seed() {
        let values: Vec<c_int> = (0..1000).map(|s| prng_seed_value(Seed(s))).collect();
        assert!(values.iter().all(|&x| x != 0));
        let distinct: std::collections::BTreeSet<_> = values.iter().collect();
        assert_eq!(distinct.len(), values.len());
    }

    #[test]
    fn julian_epoch_constant() {
        assert_eq!(UNIX_EPOCH_JULIAN_MS, (2_440_587.5 * 86_400_000.0) as i64);
    }

    #[test]
    fn open_outside_a_run_is_misuse() {
        let err = open("x.db", JournalMode::Delete).unwrap_err();
        assert_eq!(err.sqlite_error_code(), Some(rusqlite::ErrorCode::ApiMisuse));
    }

    #[test]
    fn a_panic_in_a_callback_becomes_an_error_code_and_fails_the_run_later() {
        let world = crate::LocalWorld::new(Seed(1), crate::DiskConfig::instant()).unwrap();
        let rc = guarded("xTest", ffi::SQLITE_IOERR, || panic!("invariant broken"));
        assert_eq!(rc, ffi::SQLITE_IOERR);
        let caught = panic::catch_unwind(AssertUnwindSafe(|| world.check_no_deferred_panic()));
        let msg = *caught.unwrap_err().downcast::<String>().unwrap();
        assert_eq!(msg, "panic in SQLite VFS xTest: invariant broken");
        // Re-raised once: the world can now be dropped quietly.
        world.check_no_deferred_panic();
    }
}
