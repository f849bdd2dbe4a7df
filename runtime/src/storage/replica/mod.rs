//! What a commit wrote to an object's database file, captured for replication.
//!
//! A host runs each SQLite-backed object's database as a local replica; after each local commit, the pages
//! that commit wrote ship to a storage node as one batch (docs/ARCHITECTURE.md, "Storage that survives its
//! host"). This module captures them, below SQLite, as exactly what SQLite wrote to the main database file:
//!
//! - [`register`] registers a shim VFS over a base VFS (SQLite's default, `unix` in real mode, or one named,
//!   such as the simulation's) and returns its name, [`REPLICA_VFS_PREFIX`] and the base's name. The runtime
//!   opens the database through it as through any VFS: `DatabaseLocation::on_vfs(name, path).open()`.
//! - Every method delegates to the base. For a file opened as a main database (`SQLITE_OPEN_MAIN_DB`) the
//!   shim records each successful `xWrite` (offset and bytes) and `xTruncate` (new size), in order, in a
//!   capture owned by that open file. Journals, temp files and everything else are the base's own files,
//!   untouched.
//! - [`take_changes`] takes the capture of a connection's main database file (through a file control the
//!   shim answers), leaving it empty. Call it when no transaction is open: after a commit (the batch to
//!   ship) or a rollback (SQLite's restoring writes, which cancel what a spilled transaction wrote).
//! - [`fold`] turns a list of changes into a [`PageBatch`] (the final content of every page written, and the
//!   file's size if it was cut), and [`apply`] applies a batch to a file image: the storage node keeps pages,
//!   and a host rebuilds its file from them.
//!
//! # Where captures live
//! In the open file itself (the `sqlite3_file` SQLite allocates for the shim), not in a registry keyed by
//! path: two nodes of one simulation may each open a database under the same path on their own disk, and a
//! path key would mix their writes. A capture is born when the file opens and dies when it closes, so
//! changes not taken before the connection closes are gone: take them after every commit. At open, a
//! rollback of a hot journal left by a crash writes to the file; a host rebuilds its file from the storage
//! node anyway, so it takes and drops those changes before its first transaction.
//!
//! # Only the rollback journal
//! In WAL mode a commit reaches the WAL, not the main file, until a checkpoint, so the main file's writes are
//! not a commit's pages. The shim refuses WAL: `PRAGMA journal_mode=WAL` on a database on the shim fails with
//! [`WAL_REFUSED`] as its message (the shim answers `SQLITE_FCNTL_PRAGMA`), and opening a WAL file (a
//! database already in WAL format) fails with `SQLITE_CANTOPEN`. Replicas use `Journal::Delete`.
//!
//! # Limits
//! The capture is what SQLite asked of the file, so it is exact only if the base VFS changes the file
//! through `xWrite` and `xTruncate` alone. So the shim refuses `SQLITE_FCNTL_CHUNK_SIZE` (with which `unix`
//! grows and cuts the file to multiples of a chunk), keeps `SQLITE_FCNTL_SIZE_HINT` from the base (with
//! memory-mapped reads on, `unix` grows the file to the hinted size), and hides `SQLITE_IOCAP_BATCH_ATOMIC`
//! (with which a file system may discard written pages at a rollback). A write or truncate that fails
//! leaves the file's content unknown: [`take_changes`] then reports [`ReplicaError::WriteFailed`] once, and
//! the host must fetch the image again. Attached databases on the shim are captured too, but only `main` is
//! taken. The shim is tested over `unix` (and `unix-none`); the simulation's VFS has no tests here, since
//! the runtime's tests cannot see it (scenarios will, once the host uses the shim).

// The storage node and the host's replica use this next (docs/ARCHITECTURE.md, "Storage that survives its
// host"); until then only the tests call it.
#![allow(dead_code)]

mod vfs;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

use rusqlite::Connection;

/// One commit's pages on their way to the storage node, and where its confirmation goes.
pub(crate) struct Shipment {
    /// The pages (or why they could not be taken: then the replica is broken).
    pub(crate) batch: Result<PageBatch, ReplicaError>,
    /// Resolved once the storage node has the pages durably, or with the error that broke the replica.
    pub(crate) done: madsim_tokio::sync::oneshot::Sender<Result<(), crate::error::Error>>,
}

/// The queue of a replica's shipments, in commit order; the shipping task at its other end is the host's.
pub(crate) type ShipQueue = madsim_tokio::sync::mpsc::UnboundedSender<Shipment>;

/// The prefix of every shim's name; the rest is the base VFS's name.
pub(crate) const REPLICA_VFS_PREFIX: &str = "dosim-replica-";

/// The message of the error `PRAGMA journal_mode=WAL` fails with on a database on the shim.
pub(crate) const WAL_REFUSED: &str =
    "replica VFS: journal_mode=WAL is not supported (a commit would not reach the main database file)";

/// One change SQLite made to a main database file, in the order it made them.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum FileChange {
    /// `xWrite`: `data` written at `offset`.
    Write {
        /// Byte offset in the file.
        offset: u64,
        /// The bytes written.
        data: Vec<u8>,
    },
    /// `xTruncate`: the file cut (or extended with zeros) to `size` bytes.
    Truncate {
        /// The file's new size in bytes.
        size: u64,
    },
}

impl fmt::Debug for FileChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileChange::Write { offset, data } => write!(f, "Write({offset}, {} bytes)", data.len()),
            FileChange::Truncate { size } => write!(f, "Truncate({size})"),
        }
    }
}

/// Changes folded into pages: what a storage node stores and a host rebuilds its file from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PageBatch {
    /// The page size the changes were folded with, in bytes.
    pub(crate) page_size: u32,
    /// The final content of each page the changes wrote (numbered from 1, as SQLite does), and the pages
    /// that a cut and a later growth left as zeros.
    pub(crate) pages: BTreeMap<u32, Vec<u8>>,
    /// The file's size after the changes, if they cut it (or set its size); `None` if they only wrote, so
    /// the file is as long as before or as its last written page, whichever is longer.
    pub(crate) size: Option<u64>,
}

/// What went wrong registering the shim, taking a capture or folding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReplicaError {
    /// No VFS of that name is registered (`None`: no default VFS).
    NoSuchVfs(Option<String>),
    /// The base is itself a replica shim.
    ShimOverShim(String),
    /// `sqlite3_vfs_register` failed with this code.
    Register {
        /// The shim's name.
        name: String,
        /// SQLite's result code.
        code: i32,
    },
    /// The connection's main database is not on a replica shim (or has no open file).
    NotOnReplicaVfs,
    /// A write or truncate of the file failed since the last take: what the file holds is unknown.
    WriteFailed,
    /// A page size SQLite cannot have (a power of two from 512 to 65536).
    BadPageSize(u32),
    /// A write that covers part of a page whose other bytes the batch does not know.
    PartialPage {
        /// The write's offset.
        offset: u64,
        /// The write's length.
        len: usize,
    },
    /// A truncate to a size that is not a whole number of pages.
    UnalignedTruncate(u64),
    /// A page number past SQLite's `u32` page numbers.
    PageNumberOverflow(u64),
    /// SQLite failed to tell the page size.
    Sqlite(String),
}

impl fmt::Display for ReplicaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicaError::NoSuchVfs(Some(name)) => write!(f, "replica VFS: no VFS named {name:?}"),
            ReplicaError::NoSuchVfs(None) => write!(f, "replica VFS: SQLite has no default VFS"),
            ReplicaError::Sqlite(e) => write!(f, "replica VFS: {e}"),
            ReplicaError::ShimOverShim(name) => {
                write!(f, "replica VFS: {name:?} is a replica shim already; name its base instead")
            }
            ReplicaError::Register { name, code } => {
                write!(f, "replica VFS: registering {name:?} failed with SQLite code {code}")
            }
            ReplicaError::NotOnReplicaVfs => {
                write!(f, "replica VFS: the connection's main database is not open on a replica VFS")
            }
            ReplicaError::WriteFailed => write!(
                f,
                "replica VFS: a write or truncate of the database file failed, its content is unknown"
            ),
            ReplicaError::BadPageSize(size) => write!(f, "replica VFS: {size} is not a page size"),
            ReplicaError::PartialPage { offset, len } => write!(
                f,
                "replica VFS: the write of {len} bytes at {offset} covers part of a page the batch lacks"
            ),
            ReplicaError::UnalignedTruncate(size) => {
                write!(f, "replica VFS: truncate to {size} bytes, not a whole number of pages")
            }
            ReplicaError::PageNumberOverflow(index) => {
                write!(f, "replica VFS: page index {index} is past SQLite's page numbers")
            }
        }
    }
}

impl std::error::Error for ReplicaError {}

/// Registers (once; later calls return the same name) the shim over `base` (SQLite's default VFS if
/// `None`), and returns its name: [`REPLICA_VFS_PREFIX`] and the base's name. Thread-safe.
///
/// The base must stay registered for as long as the process runs (SQLite's built-in VFSes and the
/// simulation's are).
pub(crate) fn register(base: Option<&str>) -> Result<String, ReplicaError> {
    vfs::register(base, vfs::Faults::NONE)
}

/// Takes (and empties) the capture of `conn`'s main database file: every change since the last take, in
/// order. Call it with no transaction open.
///
/// # Errors
/// [`ReplicaError::NotOnReplicaVfs`] if the main database is not on a shim; [`ReplicaError::WriteFailed`]
/// (once, the capture emptied) if a write or truncate failed since the last take.
pub(crate) fn take_changes(conn: &Connection) -> Result<Vec<FileChange>, ReplicaError> {
    vfs::take(conn)
}

/// Folds `changes` (in order) into the pages of `page_size` bytes they leave: for any file image,
/// `apply(image, fold(changes))` leaves what applying each change to the file in turn leaves.
///
/// `page_size` is the database's page size after the changes (`PRAGMA page_size`).
///
/// # Errors
/// A bad page size, a truncate to a size that is not whole pages, a page number past `u32`, and a write
/// that covers part of a page the changes did not write whole before (the batch cannot know its other
/// bytes). SQLite writes whole pages at page boundaries to the main file, so none of these happen to its
/// changes.
pub(crate) fn fold(changes: &[FileChange], page_size: u32) -> Result<PageBatch, ReplicaError> {
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(ReplicaError::BadPageSize(page_size));
    }
    let ps = u64::from(page_size);
    let page_len = page_size as usize;
    let mut pages: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    // The file's length once a truncate has fixed it, and the lowest size it was cut to: past that, the
    // base image's bytes are gone, so any page there that the batch does not write must be zeros.
    let mut len: Option<u64> = None;
    let mut floor: Option<u64> = None;
    for change in changes {
        match change {
            FileChange::Truncate { size } => {
                if size % ps != 0 {
                    return Err(ReplicaError::UnalignedTruncate(*size));
                }
                let keep = size / ps;
                pages.retain(|&pgno, _| u64::from(pgno) <= keep);
                len = Some(*size);
                floor = Some(floor.map_or(*size, |f| f.min(*size)));
            }
            FileChange::Write { offset, data } => {
                let end = offset + data.len() as u64;
                let mut pos = *offset;
                while pos < end {
                    let index = pos / ps;
                    let pgno = index
                        .checked_add(1)
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or(ReplicaError::PageNumberOverflow(index))?;
                    let start = index * ps;
                    let piece_end = end.min(start + ps);
                    let whole = pos == start && piece_end == start + ps;
                    let page = match pages.entry(pgno) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(e) if whole => e.insert(vec![0; page_len]),
                        std::collections::btree_map::Entry::Vacant(_) => {
                            return Err(ReplicaError::PartialPage { offset: *offset, len: data.len() });
                        }
                    };
                    let from = (pos - offset) as usize;
                    let to = (piece_end - offset) as usize;
                    let at = (pos - start) as usize;
                    page[at..at + (to - from)].copy_from_slice(&data[from..to]);
                    pos = piece_end;
                }
                if let Some(l) = &mut len {
                    *l = (*l).max(end);
                }
            }
        }
    }
    if let (Some(len), Some(floor)) = (len, floor) {
        // Pages between the cut and the final end that no write covered read as zeros in the file.
        for index in floor / ps..len / ps {
            // Below `len`, which only whole pages reached, so the page number fits (checked when written).
            let pgno = u32::try_from(index + 1).map_err(|_| ReplicaError::PageNumberOverflow(index))?;
            pages.entry(pgno).or_insert_with(|| vec![0; page_len]);
        }
    }
    Ok(PageBatch { page_size, pages, size: len })
}

/// Applies `batch` to a file image: sets its size if the batch has one, then writes each page (growing the
/// image with zeros where a page lies past its end).
pub(crate) fn apply(image: &mut Vec<u8>, batch: &PageBatch) {
    if let Some(size) = batch.size {
        image.resize(usize::try_from(size).expect("a file image fits in memory"), 0);
    }
    let ps = batch.page_size as usize;
    for (&pgno, data) in &batch.pages {
        let start = (pgno as usize - 1) * ps;
        let end = start + data.len();
        if image.len() < end {
            image.resize(end, 0);
        }
        image[start..end].copy_from_slice(data);
    }
}
