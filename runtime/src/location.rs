//! Where an object's SQLite database lives, and the one code path that opens it.
//!
//! The runtime opens every database through [`DatabaseLocation::open`]. In real mode the location is a file on
//! the host's file system; under simulation it is a file on a SQLite VFS that the simulation registered (its
//! name is all the runtime sees). The connection settings are the same either way, so the code that runs in
//! simulation is the code that runs for real.

use std::fmt;
use std::path::PathBuf;

use rusqlite::{Connection, OpenFlags};

/// How SQLite makes commits atomic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Journal {
    /// A rollback journal (`journal_mode=DELETE`). Under `locking_mode=EXCLUSIVE` SQLite keeps the journal file
    /// and invalidates its header at commit.
    #[default]
    Delete,
    /// A write-ahead log (`journal_mode=WAL`), with its index in heap memory (EXCLUSIVE locking mode).
    Wal,
}

impl Journal {
    fn pragma(self) -> &'static str {
        match self {
            Journal::Delete => "delete",
            Journal::Wal => "wal",
        }
    }
}

/// A database's place: a path, on the default file system or on a named SQLite VFS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabaseLocation {
    path: PathBuf,
    vfs: Option<String>,
    journal: Journal,
}

impl fmt::Display for DatabaseLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.vfs {
            Some(v) => write!(f, "{} on vfs {v}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// What went wrong opening a database.
#[derive(Debug)]
pub struct OpenError {
    /// Which database.
    pub location: String,
    /// What SQLite said, or which setting it refused.
    pub reason: String,
    /// Another connection holds the database (`SQLITE_BUSY`): a misconfiguration (two hosts given one
    /// storage), not a fault that retrying cures.
    pub in_use: bool,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.in_use {
            write!(
                f,
                "cannot open database {}: it is in use by another connection (two hosts cannot share one \
                 storage): {}",
                self.location, self.reason
            )
        } else {
            write!(f, "cannot open database {}: {}", self.location, self.reason)
        }
    }
}

impl std::error::Error for OpenError {}

/// True if SQLite refused because another connection holds a lock on the database.
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DatabaseBusy)
}

impl DatabaseLocation {
    /// A file on the host's file system.
    pub fn file(path: impl Into<PathBuf>) -> DatabaseLocation {
        DatabaseLocation { path: path.into(), vfs: None, journal: Journal::default() }
    }

    /// A file on the SQLite VFS registered as `vfs` (the simulation registers one for its disks).
    pub fn on_vfs(vfs: impl Into<String>, path: impl Into<PathBuf>) -> DatabaseLocation {
        DatabaseLocation { path: path.into(), vfs: Some(vfs.into()), journal: Journal::default() }
    }

    /// The same database path on the replica shim over this location's VFS (storage/replica): what every
    /// write to the file is captured through, for shipping to a storage node.
    pub(crate) fn with_vfs(&self, vfs: String) -> DatabaseLocation {
        DatabaseLocation { path: self.path.clone(), vfs: Some(vfs), journal: self.journal }
    }

    /// The VFS the database is on (`None`: SQLite's default).
    pub(crate) fn vfs(&self) -> Option<&str> {
        self.vfs.as_deref()
    }

    /// Uses `journal` for atomic commit.
    pub fn journal(mut self, journal: Journal) -> DatabaseLocation {
        self.journal = journal;
        self
    }

    /// Opens (creating if needed) the database with the runtime's settings: one exclusive connection,
    /// `synchronous=FULL` (a commit is durable when it returns), the chosen journal, temp data in memory.
    ///
    /// Every setting is read back, and a setting SQLite did not take is an error.
    pub fn open(&self) -> Result<Connection, OpenError> {
        let err = |reason: String| OpenError { location: self.to_string(), reason, in_use: false };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = match &self.vfs {
            Some(vfs) => Connection::open_with_flags_and_vfs(&self.path, flags, vfs.as_str()),
            None => Connection::open_with_flags(&self.path, flags),
        }
        .map_err(|e| err(e.to_string()))?;
        // One connection per database: a lock held by another is a misconfiguration, not worth waiting for.
        conn.busy_timeout(std::time::Duration::ZERO).map_err(|e| err(format!("busy_timeout: {e}")))?;
        // The locking mode must come before WAL: without shared memory, WAL needs an exclusive lock.
        let settings = [
            ("locking_mode", "exclusive"),
            ("journal_mode", self.journal.pragma()),
            ("synchronous", "2"),
            ("temp_store", "2"),
        ];
        for (name, want) in settings {
            let set = pragma(&conn, &format!("PRAGMA {name}={want}"));
            // Setting some pragmas returns no row; read those back separately.
            let got = match set {
                Ok(Some(v)) => Ok(v),
                Ok(None) => pragma(&conn, &format!("PRAGMA {name}")).map(Option::unwrap_or_default),
                Err(e) => Err(e),
            }
            .map_err(|e| OpenError { in_use: is_busy(&e), ..err(format!("PRAGMA {name}={want}: {e}")) })?;
            if !got.eq_ignore_ascii_case(want) {
                return Err(err(format!("PRAGMA {name}={want} was not applied (SQLite reports {got})")));
            }
        }
        Ok(conn)
    }
}

/// Runs a pragma statement and returns its first value as text, if it returned a row.
fn pragma(conn: &Connection, sql: &str) -> rusqlite::Result<Option<String>> {
    use rusqlite::types::Value;
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([])?;
    let Some(row) = rows.next()? else { return Ok(None) };
    Ok(Some(match row.get::<_, Value>(0)? {
        Value::Text(t) => t,
        Value::Integer(i) => i.to_string(),
        other => format!("{other:?}"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dosim-runtime-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn a_real_file_opens_with_the_runtime_settings_and_keeps_data() {
        for journal in [Journal::Delete, Journal::Wal] {
            let path = temp_path(&format!("real-{journal:?}.db"));
            let loc = DatabaseLocation::file(&path).journal(journal);
            {
                let conn = loc.open().unwrap();
                conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (42);").unwrap();
                let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
                assert_eq!(mode, journal.pragma());
            }
            let conn = loc.open().unwrap();
            let x: i64 = conn.query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
            assert_eq!(x, 42);
            drop(conn);
            let _ = std::fs::remove_file(&path);
        }
    }

    #[test]
    fn an_unknown_vfs_is_a_clear_error() {
        let e = DatabaseLocation::on_vfs("no-such-vfs", "x.db").open().unwrap_err();
        assert!(e.to_string().starts_with("cannot open database x.db on vfs no-such-vfs: "), "{e}");
    }
}
