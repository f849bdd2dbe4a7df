//! The replica shim VFS: SQLite's C structures and every `unsafe` block of the replica module.
//!
//! A shim is a `sqlite3_vfs` whose `pAppData` points to its [`ShimData`] (the base VFS and the test faults).
//! Every VFS method calls the base's with the base's own `sqlite3_vfs` (a base may read its `pAppData`).
//! `xOpen` of a main database file (`SQLITE_OPEN_MAIN_DB`) lays out SQLite's `szOsFile` bytes as a
//! [`ShimFile`] (our `sqlite3_file` header, a pointer to the base's file, the capture) followed by the base's
//! own `sqlite3_file`, which the base's `xOpen` initialises; every other file is the base's file itself, at
//! the start of the same bytes, with the base's io methods: untouched.
//!
//! A main database file's io methods are a table built for the base's table (one per distinct base table,
//! leaked and cached): the same `iVersion`, and a method wherever the base has one (so `xShm*` and `xFetch`
//! exist exactly when the base has them). Each forwards to the base's file; `xWrite` and `xTruncate` record
//! what succeeded, `xClose` drops the capture, `xFileControl` answers the take and the refused pragmas.
//!
//! Nothing here panics across the C boundary: the callbacks only push to a `Vec` and compare bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;
use std::sync::{Mutex, PoisonError};

use rusqlite::{ffi, Connection};

use super::{FileChange, ReplicaError, REPLICA_VFS_PREFIX, WAL_REFUSED};

/// The file control opcode by which [`take`] asks a shim file for its capture (its argument is a
/// `*mut Taken`). Far above SQLite's own opcodes (below 100), spelling "RPLC".
const FCNTL_TAKE_CHANGES: c_int = 0x5250_4c43;

/// Deliberate faults, for the negative controls of the tests: a shim with faults is registered under its
/// own name, so it never replaces the real one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Faults {
    /// Truncates reach the file but are not recorded.
    pub(super) drop_truncates: bool,
    /// Size hints reach the base (which may grow the file by them, unrecorded).
    pub(super) forward_size_hints: bool,
}

impl Faults {
    /// No faults: the shim production uses.
    pub(super) const NONE: Faults = Faults { drop_truncates: false, forward_size_hints: false };
}

/// What a shim's `pAppData` points to. Leaked at registration: SQLite keeps the VFS for the process's life.
struct ShimData {
    /// The base VFS, registered (and, by [`super::register`]'s contract, never unregistered).
    base: *mut ffi::sqlite3_vfs,
    faults: Faults,
}

/// The names of the shims registered so far; its lock also serialises registration.
static SHIMS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Registers the shim over `base` with `faults` (once per name) and returns its name.
pub(super) fn register(base: Option<&str>, faults: Faults) -> Result<String, ReplicaError> {
    let mut shims = SHIMS.lock().unwrap_or_else(PoisonError::into_inner);
    let wanted =
        base.map(CString::new).transpose().map_err(|_| ReplicaError::NoSuchVfs(base.map(str::to_owned)))?;
    // SAFETY: `sqlite3_vfs_find` takes null (the default) or a NUL-terminated name, initialises SQLite if
    // needed, and returns a registered VFS or null.
    let base_vfs = unsafe { ffi::sqlite3_vfs_find(wanted.as_ref().map_or(ptr::null(), |n| n.as_ptr())) };
    if base_vfs.is_null() {
        return Err(ReplicaError::NoSuchVfs(base.map(str::to_owned)));
    }
    // SAFETY: a registered VFS has a NUL-terminated name that lives as long as the VFS.
    let base_name = unsafe { CStr::from_ptr((*base_vfs).zName) }.to_string_lossy().into_owned();
    if base_name.starts_with(REPLICA_VFS_PREFIX) {
        return Err(ReplicaError::ShimOverShim(base_name));
    }
    let name = match faults {
        Faults::NONE => format!("{REPLICA_VFS_PREFIX}{base_name}"),
        Faults { drop_truncates, forward_size_hints } => format!(
            "{REPLICA_VFS_PREFIX}faulty-{}{}{base_name}",
            if drop_truncates { "t-" } else { "" },
            if forward_size_hints { "h-" } else { "" },
        ),
    };
    if shims.contains(&name) {
        return Ok(name);
    }
    let name_c = CString::new(name.clone()).map_err(|_| ReplicaError::NoSuchVfs(Some(name.clone())))?;
    // SAFETY: `base_vfs` is a registered VFS (found above); its fields are read, never written.
    let b = unsafe { &*base_vfs };
    let version = b.iVersion.min(3);
    let data = Box::new(ShimData { base: base_vfs, faults });
    let vfs = Box::new(ffi::sqlite3_vfs {
        iVersion: version,
        szOsFile: c_int::try_from(REAL_OFFSET).expect("the shim header is small") + b.szOsFile,
        mxPathname: b.mxPathname,
        pNext: ptr::null_mut(),
        zName: name_c.into_raw(),
        pAppData: Box::into_raw(data).cast(),
        xOpen: Some(shim_open),
        xDelete: b.xDelete.and(Some(vfs_delete as _)),
        xAccess: b.xAccess.and(Some(vfs_access as _)),
        xFullPathname: b.xFullPathname.and(Some(vfs_full_pathname as _)),
        xDlOpen: b.xDlOpen.and(Some(vfs_dl_open as _)),
        xDlError: b.xDlError.and(Some(vfs_dl_error as _)),
        xDlSym: b.xDlSym.and(Some(vfs_dl_sym as _)),
        xDlClose: b.xDlClose.and(Some(vfs_dl_close as _)),
        xRandomness: b.xRandomness.and(Some(vfs_randomness as _)),
        xSleep: b.xSleep.and(Some(vfs_sleep as _)),
        xCurrentTime: b.xCurrentTime.and(Some(vfs_current_time as _)),
        xGetLastError: b.xGetLastError.and(Some(vfs_get_last_error as _)),
        xCurrentTimeInt64: if version >= 2 {
            b.xCurrentTimeInt64.and(Some(vfs_current_time_int64 as _))
        } else {
            None
        },
        xSetSystemCall: if version >= 3 {
            b.xSetSystemCall.and(Some(vfs_set_system_call as _))
        } else {
            None
        },
        xGetSystemCall: if version >= 3 {
            b.xGetSystemCall.and(Some(vfs_get_system_call as _))
        } else {
            None
        },
        xNextSystemCall: if version >= 3 {
            b.xNextSystemCall.and(Some(vfs_next_system_call as _))
        } else {
            None
        },
    });
    // SAFETY: the VFS, its name and its data are leaked, so they outlive every use SQLite makes of them;
    // every callback matches its C signature. Registration is serialised by the `SHIMS` lock held here.
    let rc = unsafe { ffi::sqlite3_vfs_register(Box::into_raw(vfs), 0) };
    if rc != ffi::SQLITE_OK {
        return Err(ReplicaError::Register { name, code: rc });
    }
    shims.insert(name.clone());
    Ok(name)
}

/// What [`take`] receives from a shim file through [`FCNTL_TAKE_CHANGES`].
#[derive(Default)]
struct Taken {
    /// Set by the shim: the file is a shim's main database file.
    found: bool,
    changes: Vec<FileChange>,
    failed: bool,
}

/// Takes the capture of `conn`'s main database file.
pub(super) fn take(conn: &Connection) -> Result<Vec<FileChange>, ReplicaError> {
    let mut taken = Taken::default();
    // SAFETY: `conn.handle()` is the connection's open `sqlite3*`, used for this one call while `conn` is
    // borrowed. "main" is NUL-terminated. The argument points to a live `Taken`; only the shim's
    // `xFileControl` reads this opcode, and it writes a `Taken` there; any other VFS returns SQLITE_NOTFOUND
    // (and should one answer SQLITE_OK, `found` stays false).
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            FCNTL_TAKE_CHANGES,
            (&mut taken as *mut Taken).cast(),
        )
    };
    if rc != ffi::SQLITE_OK || !taken.found {
        return Err(ReplicaError::NotOnReplicaVfs);
    }
    if taken.failed {
        return Err(ReplicaError::WriteFailed);
    }
    Ok(taken.changes)
}

// ---------------------------------------------------------------------------------------------------------
// The VFS methods.

/// The base VFS of a shim.
///
/// # Safety
/// `vfs` is a shim [`register`] registered.
unsafe fn base_of(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: per the contract, `pAppData` is the shim's leaked `ShimData`.
    unsafe { (*(*vfs).pAppData.cast::<ShimData>()).base }
}

/// Defines a VFS method that calls the base's with the base's `sqlite3_vfs` and the same arguments.
macro_rules! delegate_vfs {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty, $missing:expr) => {
        unsafe extern "C" fn $name(vfs: *mut ffi::sqlite3_vfs $(, $arg: $ty)*) -> $ret {
            // SAFETY: SQLite calls a VFS's methods with that VFS, a shim of ours, whose base is registered;
            // the arguments are SQLite's, passed on unchanged to the base's method of the same signature.
            unsafe {
                let base = base_of(vfs);
                match (*base).$method {
                    Some(f) => f(base $(, $arg)*),
                    None => $missing,
                }
            }
        }
    };
}

delegate_vfs!(vfs_delete, xDelete, (name: *const c_char, sync_dir: c_int) -> c_int, ffi::SQLITE_IOERR_DELETE);
delegate_vfs!(vfs_access, xAccess, (name: *const c_char, flags: c_int, out: *mut c_int) -> c_int,
    ffi::SQLITE_IOERR_ACCESS);
delegate_vfs!(vfs_full_pathname, xFullPathname, (name: *const c_char, n: c_int, out: *mut c_char) -> c_int,
    ffi::SQLITE_CANTOPEN);
delegate_vfs!(vfs_dl_open, xDlOpen, (name: *const c_char) -> *mut c_void, ptr::null_mut());
delegate_vfs!(vfs_dl_error, xDlError, (n: c_int, msg: *mut c_char) -> (), ());
delegate_vfs!(vfs_dl_sym, xDlSym, (lib: *mut c_void, sym: *const c_char) -> Option<DlSym>, None);
delegate_vfs!(vfs_dl_close, xDlClose, (lib: *mut c_void) -> (), ());
delegate_vfs!(vfs_randomness, xRandomness, (n: c_int, out: *mut c_char) -> c_int, 0);
delegate_vfs!(vfs_sleep, xSleep, (micros: c_int) -> c_int, 0);
delegate_vfs!(vfs_current_time, xCurrentTime, (out: *mut f64) -> c_int, ffi::SQLITE_ERROR);
delegate_vfs!(vfs_get_last_error, xGetLastError, (n: c_int, out: *mut c_char) -> c_int, 0);
delegate_vfs!(vfs_current_time_int64, xCurrentTimeInt64, (out: *mut ffi::sqlite3_int64) -> c_int,
    ffi::SQLITE_ERROR);
delegate_vfs!(vfs_set_system_call, xSetSystemCall,
    (name: *const c_char, call: ffi::sqlite3_syscall_ptr) -> c_int, ffi::SQLITE_NOTFOUND);
delegate_vfs!(vfs_get_system_call, xGetSystemCall, (name: *const c_char) -> ffi::sqlite3_syscall_ptr, None);
delegate_vfs!(vfs_next_system_call, xNextSystemCall, (name: *const c_char) -> *const c_char, ptr::null());

/// The type `xDlSym` returns.
type DlSym = unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char);

unsafe extern "C" fn shim_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite passes `szOsFile` writable bytes at `file`, 8-byte aligned; a null `pMethods` tells it
    // there is nothing to close if the open fails.
    unsafe { (*file).pMethods = ptr::null() };
    if flags & ffi::SQLITE_OPEN_WAL != 0 {
        // A WAL's commits never reach the main file until a checkpoint: replicas refuse WAL (module docs).
        return ffi::SQLITE_CANTOPEN;
    }
    // SAFETY: SQLite calls `xOpen` with the shim itself.
    let (base, faults) = unsafe {
        let data = &*(*vfs).pAppData.cast::<ShimData>();
        (data.base, data.faults)
    };
    // SAFETY: the base is registered and has an `xOpen` (every VFS does; checked anyway).
    let Some(base_open) = (unsafe { (*base).xOpen }) else { return ffi::SQLITE_CANTOPEN };
    if flags & ffi::SQLITE_OPEN_MAIN_DB == 0 {
        // Not a main database: the base's own file, in the same bytes (szOsFile covers the base's).
        // SAFETY: SQLite's arguments, passed on unchanged; `file` has at least the base's `szOsFile` bytes.
        return unsafe { base_open(base, name, file, flags, out_flags) };
    }
    // SAFETY: `file` has `REAL_OFFSET` + the base's `szOsFile` bytes; the base's file starts at
    // `REAL_OFFSET`, a multiple of 8, so it keeps SQLite's alignment.
    let real = unsafe { file.cast::<u8>().add(REAL_OFFSET).cast::<ffi::sqlite3_file>() };
    // SAFETY: as above; the base initialises its own file.
    let rc = unsafe {
        (*real).pMethods = ptr::null();
        base_open(base, name, real, flags, out_flags)
    };
    // SAFETY: `real` was initialised by the base's `xOpen`, which sets `pMethods` (null if there is nothing
    // to close).
    let real_methods = unsafe { (*real).pMethods };
    if real_methods.is_null() {
        return rc;
    }
    // SAFETY: a base's io methods table lives as long as its files.
    let methods = methods_for(unsafe { &*real_methods });
    let shim = ShimFile {
        base: ffi::sqlite3_file { pMethods: methods },
        real,
        capture: Capture { changes: Vec::new(), failed: false, faults },
    };
    // SAFETY: `file` has room for a `ShimFile` before `REAL_OFFSET`, with SQLite's 8-byte alignment; those
    // bytes are uninitialised, so they are written without dropping anything. Even if the base's `xOpen`
    // failed with a file to close, SQLite then closes it through our `xClose`, which drops the capture.
    unsafe { ptr::write(file.cast::<ShimFile>(), shim) };
    rc
}

// ---------------------------------------------------------------------------------------------------------
// Main database files.

/// The start of a main database file's bytes: our header, then (at [`REAL_OFFSET`]) the base's file.
#[repr(C)]
struct ShimFile {
    /// Must come first: SQLite sees a `*mut sqlite3_file` and the methods cast it back.
    base: ffi::sqlite3_file,
    /// The base's file, in the same allocation at [`REAL_OFFSET`].
    real: *mut ffi::sqlite3_file,
    capture: Capture,
}

/// Where the base's file starts in a main database file's bytes: after the header, at a multiple of 8.
const REAL_OFFSET: usize = std::mem::size_of::<ShimFile>().next_multiple_of(8);

// SQLite places each `sqlite3_file` at an 8-byte boundary inside its own allocations.
const _: () = assert!(std::mem::align_of::<ShimFile>() <= 8);

/// What a main database file has had done to it since the last take.
struct Capture {
    changes: Vec<FileChange>,
    /// A write or truncate failed: the file's content is unknown.
    failed: bool,
    faults: Faults,
}

/// The base's file of a main database file.
///
/// # Safety
/// `file` is a main database file [`shim_open`] initialised and `xClose` has not closed (SQLite calls the io
/// methods only on such files).
unsafe fn real_of(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    // SAFETY: per the contract.
    unsafe { (*file.cast::<ShimFile>()).real }
}

/// The capture of a main database file.
///
/// # Safety
/// As for [`real_of`], and no other reference to the capture is live: SQLite calls one file's methods one
/// at a time (under its connection), and each method holds this reference only while it runs.
unsafe fn capture_of<'a>(file: *mut ffi::sqlite3_file) -> &'a mut Capture {
    // SAFETY: per the contract.
    unsafe { &mut (*file.cast::<ShimFile>()).capture }
}

/// The wrapper tables built so far, by the address of the base's table they wrap.
static TABLES: Mutex<BTreeMap<usize, &'static ffi::sqlite3_io_methods>> = Mutex::new(BTreeMap::new());

/// The io methods of a main database file whose base file has `base` (built once per base table).
fn methods_for(base: &ffi::sqlite3_io_methods) -> &'static ffi::sqlite3_io_methods {
    let mut tables = TABLES.lock().unwrap_or_else(PoisonError::into_inner);
    let key = base as *const ffi::sqlite3_io_methods as usize;
    tables.entry(key).or_insert_with(|| Box::leak(Box::new(wrapper_table(base))))
}

/// A table with `base`'s version, and our method wherever `base` has one.
fn wrapper_table(base: &ffi::sqlite3_io_methods) -> ffi::sqlite3_io_methods {
    let v = base.iVersion.min(3);
    ffi::sqlite3_io_methods {
        iVersion: v,
        xClose: base.xClose.and(Some(io_close as _)),
        xRead: base.xRead.and(Some(io_read as _)),
        xWrite: base.xWrite.and(Some(io_write as _)),
        xTruncate: base.xTruncate.and(Some(io_truncate as _)),
        xSync: base.xSync.and(Some(io_sync as _)),
        xFileSize: base.xFileSize.and(Some(io_file_size as _)),
        xLock: base.xLock.and(Some(io_lock as _)),
        xUnlock: base.xUnlock.and(Some(io_unlock as _)),
        xCheckReservedLock: base.xCheckReservedLock.and(Some(io_check_reserved_lock as _)),
        xFileControl: Some(io_file_control),
        xSectorSize: base.xSectorSize.and(Some(io_sector_size as _)),
        xDeviceCharacteristics: base.xDeviceCharacteristics.and(Some(io_device_characteristics as _)),
        xShmMap: if v >= 2 { base.xShmMap.and(Some(io_shm_map as _)) } else { None },
        xShmLock: if v >= 2 { base.xShmLock.and(Some(io_shm_lock as _)) } else { None },
        xShmBarrier: if v >= 2 { base.xShmBarrier.and(Some(io_shm_barrier as _)) } else { None },
        xShmUnmap: if v >= 2 { base.xShmUnmap.and(Some(io_shm_unmap as _)) } else { None },
        xFetch: if v >= 3 { base.xFetch.and(Some(io_fetch as _)) } else { None },
        xUnfetch: if v >= 3 { base.xUnfetch.and(Some(io_unfetch as _)) } else { None },
    }
}

/// Defines an io method that calls the base file's method with the same arguments.
macro_rules! delegate_io {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*) -> $ret:ty, $missing:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> $ret {
            // SAFETY: SQLite calls io methods on open files; this table is installed only on main database
            // files `shim_open` initialised, whose base file is open with its own methods. The arguments
            // are SQLite's, passed on unchanged to the base's method of the same signature.
            unsafe {
                let real = real_of(file);
                match (*(*real).pMethods).$method {
                    Some(f) => f(real $(, $arg)*),
                    None => $missing,
                }
            }
        }
    };
}

delegate_io!(io_read, xRead, (buf: *mut c_void, n: c_int, offset: ffi::sqlite3_int64) -> c_int,
    ffi::SQLITE_IOERR_READ);
delegate_io!(io_sync, xSync, (flags: c_int) -> c_int, ffi::SQLITE_IOERR_FSYNC);
delegate_io!(io_file_size, xFileSize, (out: *mut ffi::sqlite3_int64) -> c_int, ffi::SQLITE_IOERR_FSTAT);
delegate_io!(io_lock, xLock, (level: c_int) -> c_int, ffi::SQLITE_IOERR_LOCK);
delegate_io!(io_unlock, xUnlock, (level: c_int) -> c_int, ffi::SQLITE_IOERR_UNLOCK);
delegate_io!(io_check_reserved_lock, xCheckReservedLock, (out: *mut c_int) -> c_int,
    ffi::SQLITE_IOERR_CHECKRESERVEDLOCK);
delegate_io!(io_sector_size, xSectorSize, () -> c_int, 4096);
delegate_io!(io_shm_map, xShmMap, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void) -> c_int,
    ffi::SQLITE_IOERR_SHMMAP);
delegate_io!(io_shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int) -> c_int,
    ffi::SQLITE_IOERR_SHMLOCK);
delegate_io!(io_shm_barrier, xShmBarrier, () -> (), ());
delegate_io!(io_shm_unmap, xShmUnmap, (delete: c_int) -> c_int, ffi::SQLITE_OK);
delegate_io!(io_fetch, xFetch, (offset: ffi::sqlite3_int64, n: c_int, out: *mut *mut c_void) -> c_int,
    ffi::SQLITE_OK);
delegate_io!(io_unfetch, xUnfetch, (offset: ffi::sqlite3_int64, p: *mut c_void) -> c_int, ffi::SQLITE_OK);

/// Delegates the io method `$method` of main database file `$file` to its base file.
macro_rules! forward {
    ($file:expr, $method:ident, $missing:expr $(, $arg:expr)*) => {{
        // SAFETY: as in `delegate_io!`: `$file` is an open main database file of ours.
        unsafe {
            let real = real_of($file);
            match (*(*real).pMethods).$method {
                Some(f) => f(real $(, $arg)*),
                None => $missing,
            }
        }
    }};
}

unsafe extern "C" fn io_close(file: *mut ffi::sqlite3_file) -> c_int {
    let rc = forward!(file, xClose, ffi::SQLITE_OK);
    // SAFETY: SQLite closes a file once and uses it no more; the header `shim_open` wrote is dropped in place
    // (its capture; the rest are raw pointers), and SQLite frees the bytes.
    unsafe { ptr::drop_in_place(file.cast::<ShimFile>()) };
    rc
}

unsafe extern "C" fn io_write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    n: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    let rc = forward!(file, xWrite, ffi::SQLITE_IOERR_WRITE, buf, n, offset);
    // SAFETY: an io method on an open main database file; no other reference to its capture is live.
    let capture = unsafe { capture_of(file) };
    match (rc, usize::try_from(n), u64::try_from(offset)) {
        (ffi::SQLITE_OK, Ok(len), Ok(offset)) => {
            // SAFETY: SQLite passes `n` readable bytes at `buf`.
            let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) }.to_vec();
            capture.changes.push(FileChange::Write { offset, data });
        }
        _ => capture.failed = true,
    }
    rc
}

unsafe extern "C" fn io_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    let rc = forward!(file, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, size);
    // SAFETY: an io method on an open main database file; no other reference to its capture is live.
    let capture = unsafe { capture_of(file) };
    match (rc, u64::try_from(size)) {
        (ffi::SQLITE_OK, Ok(size)) => {
            if !capture.faults.drop_truncates {
                capture.changes.push(FileChange::Truncate { size });
            }
        }
        _ => capture.failed = true,
    }
    rc
}

unsafe extern "C" fn io_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // Batch-atomic writes let the file system discard written pages at a rollback, behind the capture's back.
    forward!(file, xDeviceCharacteristics, 0) & !ffi::SQLITE_IOCAP_BATCH_ATOMIC
}

unsafe extern "C" fn io_file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    // SAFETY: an io method on an open main database file; the reference ends with this statement.
    let faults = unsafe { capture_of(file) }.faults;
    match op {
        FCNTL_TAKE_CHANGES => {
            // SAFETY: an io method on an open main database file; no other reference to its capture is live.
            let capture = unsafe { capture_of(file) };
            // SAFETY: only `take` sends this opcode, with a live `Taken` as the argument.
            let taken = unsafe { &mut *arg.cast::<Taken>() };
            taken.found = true;
            taken.changes = std::mem::take(&mut capture.changes);
            taken.failed = std::mem::replace(&mut capture.failed, false);
            ffi::SQLITE_OK
        }
        // A chunk size makes `unix` grow and cut the file to whole chunks, which no write records.
        ffi::SQLITE_FCNTL_CHUNK_SIZE => ffi::SQLITE_NOTFOUND,
        // With a chunk size or memory mapping (`PRAGMA mmap_size`), `unix` grows the file to the size a
        // hint gives, which no write records (a spill hints the transaction's whole size, and writes only
        // some of it). A hint is only a hint: SQLite ignores the answer.
        ffi::SQLITE_FCNTL_SIZE_HINT if !faults.forward_size_hints => ffi::SQLITE_NOTFOUND,
        ffi::SQLITE_FCNTL_PRAGMA => {
            let args = arg.cast::<*mut c_char>();
            // SAFETY: for SQLITE_FCNTL_PRAGMA the argument is a `char*` array: [0] the result or error
            // message (null on entry), [1] the pragma's name, [2] its argument or null, each NUL-terminated.
            let (name, value) = unsafe { (text(*args.add(1)), text(*args.add(2))) };
            let wal = name.is_some_and(|n| n.eq_ignore_ascii_case(b"journal_mode"))
                && value.is_some_and(|v| v.eq_ignore_ascii_case(b"wal"));
            if !wal {
                return forward!(file, xFileControl, ffi::SQLITE_NOTFOUND, op, arg);
            }
            let message = CString::new(WAL_REFUSED).expect("the message has no NUL");
            // SAFETY: SQLite frees slot [0] with `sqlite3_free`, so the message is allocated by
            // `sqlite3_mprintf` (a "%s" of a NUL-terminated string); slot [0] is writable.
            unsafe { *args = ffi::sqlite3_mprintf(c"%s".as_ptr(), message.as_ptr()) };
            ffi::SQLITE_ERROR
        }
        _ => forward!(file, xFileControl, ffi::SQLITE_NOTFOUND, op, arg),
    }
}

/// The bytes of a NUL-terminated string, or `None` for null.
///
/// # Safety
/// `p` is null or a NUL-terminated string that outlives the returned slice.
unsafe fn text<'a>(p: *const c_char) -> Option<&'a [u8]> {
    // SAFETY: per the contract.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// Sets `SQLITE_FCNTL_CHUNK_SIZE` on `conn`'s main database file and returns SQLite's result code.
#[cfg(test)]
pub(super) fn set_chunk_size(conn: &Connection, size: c_int) -> c_int {
    let mut size = size;
    // SAFETY: an open connection's handle, for this call; CHUNK_SIZE takes a pointer to an int, live here.
    unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_CHUNK_SIZE,
            (&mut size as *mut c_int).cast(),
        )
    }
}

/// The wrapper table for a base table of `version` with every method present, as the tests need it.
#[cfg(test)]
pub(super) fn wrapper_for_version(version: c_int) -> ffi::sqlite3_io_methods {
    unsafe extern "C" fn close(_: *mut ffi::sqlite3_file) -> c_int {
        ffi::SQLITE_OK
    }
    // A base table that claims `version` but has xShm* and xFetch filled in: the wrapper must go by the
    // version, as SQLite does.
    // SAFETY: a table of `Option<fn>` and an int is valid all-zero (every method None).
    let mut base: ffi::sqlite3_io_methods = unsafe { std::mem::zeroed() };
    base.iVersion = version;
    base.xClose = Some(close);
    base.xShmMap = Some(io_shm_map);
    base.xShmBarrier = Some(io_shm_barrier);
    base.xFetch = Some(io_fetch);
    wrapper_table(&base)
}
