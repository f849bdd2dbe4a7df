//! SQLite's C API where rusqlite does not serve: statements prepared with `sqlite3_prepare_v3`'s tail pointer
//! (rusqlite hides it), by which [`exec`] finds where each statement ends exactly as workerd does;
//! `sqlite3_stmt_status`'s counter 0, which the row counters use; and the authorizer and update hook, which
//! rusqlite installs only through `&mut Connection`. Every `unsafe` block of this module is here.

use std::borrow::Cow;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{self, NonNull};

use rusqlite::{ffi, Connection};

use super::SqlValue;

/// A SQLite failure: its extended result code, message and error offset.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) code: c_int,
    pub(super) message: String,
    pub(super) offset: Option<usize>,
}

/// SQLite's description of a result code (`sqlite3_errstr`).
pub(super) fn errstr(code: c_int) -> String {
    // SAFETY: `sqlite3_errstr` returns a static NUL-terminated string for any code.
    unsafe { CStr::from_ptr(ffi::sqlite3_errstr(code)) }.to_string_lossy().into_owned()
}

/// The error SQLite recorded on `db` for the call that returned `rc`.
fn failure(db: *mut ffi::sqlite3, rc: c_int) -> Failure {
    // SAFETY: `db` is an open connection (borrowed from a `Connection` for the call's duration);
    // `sqlite3_errmsg` returns a NUL-terminated string valid until the next call on `db`, copied here.
    let (extended, message, offset) = unsafe {
        let message = CStr::from_ptr(ffi::sqlite3_errmsg(db)).to_string_lossy().into_owned();
        (ffi::sqlite3_extended_errcode(db), message, ffi::sqlite3_error_offset(db))
    };
    let code = if extended & 0xff == rc & 0xff { extended } else { rc };
    Failure { code, message, offset: usize::try_from(offset).ok() }
}

/// Installs the authorizer and the update hook, which call [`super::on_authorize`] and
/// [`super::on_row_change`]. They keep no state of their own (the user-SQL state is thread-local), so
/// they are plain functions, registered without user data.
pub(super) fn install_callbacks(conn: &Connection) -> rusqlite::Result<()> {
    // SAFETY: the handle is valid while `conn` is borrowed; the callbacks are `extern "C"` functions that
    // never unwind into SQLite and use no user data.
    let rc = unsafe {
        let db = conn.handle();
        ffi::sqlite3_update_hook(db, Some(update_hook), ptr::null_mut());
        ffi::sqlite3_set_authorizer(db, Some(authorizer), ptr::null_mut())
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None))
    }
}

/// A string argument of a callback, `None` for NULL.
///
/// # Safety
/// `p` is NULL or a NUL-terminated string valid for the returned lifetime.
unsafe fn text<'a>(p: *const c_char) -> Option<Cow<'a, str>> {
    // SAFETY: as the caller promises.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy())
}

extern "C" fn authorizer(
    _: *mut c_void,
    action: c_int,
    arg1: *const c_char,
    arg2: *const c_char,
    database: *const c_char,
    _accessor: *const c_char,
) -> c_int {
    let decide = || {
        // SAFETY: SQLite passes NULL or NUL-terminated strings that live for the callback.
        let (arg1, arg2, database) = unsafe { (text(arg1), text(arg2), text(database)) };
        super::on_authorize(action, arg1.as_deref(), arg2.as_deref(), database.as_deref())
    };
    match catch_unwind(AssertUnwindSafe(decide)) {
        Ok(true) => ffi::SQLITE_OK,
        _ => ffi::SQLITE_DENY,
    }
}

extern "C" fn update_hook(
    _: *mut c_void,
    action: c_int,
    database: *const c_char,
    table: *const c_char,
    _rowid: ffi::sqlite3_int64,
) {
    let record = || {
        // SAFETY: SQLite passes NUL-terminated strings that live for the callback.
        let (database, table) = unsafe { (text(database), text(table)) };
        super::on_row_change(action, &database.unwrap_or_default(), &table.unwrap_or_default());
    };
    // A panic here would be a bug in the counters; it must not unwind into SQLite.
    let _ = catch_unwind(AssertUnwindSafe(record));
}

/// A prepared statement, finalized when dropped; it cannot outlive its connection.
pub(super) struct Statement<'c> {
    db: *mut ffi::sqlite3,
    stmt: NonNull<ffi::sqlite3_stmt>,
    _conn: PhantomData<&'c Connection>,
}

/// Prepares the first statement of `sql`: `None` if that part of the text holds no statement (white
/// space, comments, a lone `;`), and the byte length of the text consumed.
pub(super) fn prepare<'c>(
    conn: &'c Connection,
    sql: &str,
) -> Result<(Option<Statement<'c>>, usize), Failure> {
    // SAFETY: the handle stays valid while `conn` is borrowed; it is used only on this thread.
    let db = unsafe { conn.handle() };
    let Ok(len) = c_int::try_from(sql.len()) else {
        return Err(Failure { code: ffi::SQLITE_TOOBIG, message: "statement too long".into(), offset: None });
    };
    let mut stmt = ptr::null_mut();
    let mut tail: *const c_char = ptr::null();
    // SAFETY: `sql` is valid for `len` bytes; SQLite does not read past them nor keep the pointer.
    let rc = unsafe { ffi::sqlite3_prepare_v3(db, sql.as_ptr().cast(), len, 0, &mut stmt, &mut tail) };
    if rc != ffi::SQLITE_OK {
        return Err(failure(db, rc));
    }
    // `tail` points into `sql` (at most one past its end).
    let consumed =
        if tail.is_null() { sql.len() } else { (tail as usize).saturating_sub(sql.as_ptr() as usize) };
    let stmt = NonNull::new(stmt).map(|stmt| Statement { db, stmt, _conn: PhantomData });
    Ok((stmt, consumed.min(sql.len())))
}

impl Statement<'_> {
    fn ptr(&self) -> *mut ffi::sqlite3_stmt {
        self.stmt.as_ptr()
    }

    /// `sqlite3_bind_parameter_count`: the largest parameter index.
    pub(super) fn parameter_count(&self) -> usize {
        // SAFETY: `self.stmt` is a live statement.
        usize::try_from(unsafe { ffi::sqlite3_bind_parameter_count(self.ptr()) }).unwrap_or(0)
    }

    /// `sqlite3_sql`: the statement's text, as it was prepared.
    pub(super) fn sql(&self) -> Cow<'_, str> {
        // SAFETY: `self.stmt` is a live statement; its text is NUL-terminated, owned by the statement and
        // unchanged while it lives, which the borrow of `self` covers.
        unsafe {
            let text = ffi::sqlite3_sql(self.ptr());
            if text.is_null() {
                Cow::Borrowed("")
            } else {
                CStr::from_ptr(text).to_string_lossy()
            }
        }
    }

    /// `sqlite3_stmt_readonly`.
    pub(super) fn readonly(&self) -> bool {
        // SAFETY: `self.stmt` is a live statement.
        unsafe { ffi::sqlite3_stmt_readonly(self.ptr()) != 0 }
    }

    /// Binds `values` to parameters 1, 2, …; SQLite copies text and blobs.
    pub(super) fn bind(&mut self, values: &[SqlValue]) -> Result<(), Failure> {
        for (i, value) in values.iter().enumerate() {
            let index = c_int::try_from(i + 1).unwrap_or(c_int::MAX);
            let s = self.ptr();
            // SAFETY: `s` is a live statement; text and blob pointers are valid for the lengths given,
            // and SQLITE_TRANSIENT makes SQLite copy them before returning.
            let rc = unsafe {
                match value {
                    SqlValue::Null => ffi::sqlite3_bind_null(s, index),
                    SqlValue::Integer(v) => ffi::sqlite3_bind_int64(s, index, *v),
                    SqlValue::Real(v) => ffi::sqlite3_bind_double(s, index, *v),
                    SqlValue::Text(v) if v.is_empty() => {
                        ffi::sqlite3_bind_text(s, index, c"".as_ptr(), 0, ffi::SQLITE_TRANSIENT())
                    }
                    SqlValue::Text(v) => ffi::sqlite3_bind_text64(
                        s,
                        index,
                        v.as_ptr().cast(),
                        v.len() as u64,
                        ffi::SQLITE_TRANSIENT(),
                        ffi::SQLITE_UTF8 as u8,
                    ),
                    SqlValue::Blob(v) if v.is_empty() => ffi::sqlite3_bind_zeroblob(s, index, 0),
                    SqlValue::Blob(v) => ffi::sqlite3_bind_blob64(
                        s,
                        index,
                        v.as_ptr().cast(),
                        v.len() as u64,
                        ffi::SQLITE_TRANSIENT(),
                    ),
                }
            };
            if rc != ffi::SQLITE_OK {
                return Err(failure(self.db, rc));
            }
        }
        Ok(())
    }

    /// `sqlite3_step`: `true` with a row available, `false` when done.
    pub(super) fn step(&mut self) -> Result<bool, Failure> {
        // SAFETY: `self.stmt` is a live statement of `self.db`.
        match unsafe { ffi::sqlite3_step(self.ptr()) } {
            ffi::SQLITE_ROW => Ok(true),
            ffi::SQLITE_DONE => Ok(false),
            rc => Err(failure(self.db, rc)),
        }
    }

    /// `sqlite3_column_count`.
    pub(super) fn column_count(&self) -> usize {
        // SAFETY: `self.stmt` is a live statement.
        usize::try_from(unsafe { ffi::sqlite3_column_count(self.ptr()) }).unwrap_or(0)
    }

    /// `sqlite3_column_name` of column `i` (< [`Statement::column_count`]).
    pub(super) fn column_name(&self, i: usize) -> String {
        // SAFETY: `self.stmt` is a live statement and `i` a valid column; the name is NUL-terminated and
        // copied before any other call on the statement.
        unsafe {
            let name = ffi::sqlite3_column_name(self.ptr(), i as c_int);
            if name.is_null() {
                String::new()
            } else {
                CStr::from_ptr(name).to_string_lossy().into_owned()
            }
        }
    }

    /// The value of column `i` (< [`Statement::column_count`]) of the current row.
    pub(super) fn column_value(&self, i: usize) -> SqlValue {
        let (s, i) = (self.ptr(), i as c_int);
        // SAFETY: `s` has a current row (the last step returned SQLITE_ROW) and `i` is a valid column.
        // The text or blob pointer is valid for `sqlite3_column_bytes` bytes (fetched after it, as SQLite
        // requires) until the next step, and copied here.
        unsafe {
            match ffi::sqlite3_column_type(s, i) {
                ffi::SQLITE_INTEGER => SqlValue::Integer(ffi::sqlite3_column_int64(s, i)),
                ffi::SQLITE_FLOAT => SqlValue::Real(ffi::sqlite3_column_double(s, i)),
                ffi::SQLITE_TEXT => {
                    let text = ffi::sqlite3_column_text(s, i);
                    let len = usize::try_from(ffi::sqlite3_column_bytes(s, i)).unwrap_or(0);
                    if text.is_null() || len == 0 {
                        SqlValue::Text(String::new())
                    } else {
                        let bytes = std::slice::from_raw_parts(text, len);
                        SqlValue::Text(String::from_utf8_lossy(bytes).into_owned())
                    }
                }
                ffi::SQLITE_BLOB => {
                    let blob = ffi::sqlite3_column_blob(s, i).cast::<u8>();
                    let len = usize::try_from(ffi::sqlite3_column_bytes(s, i)).unwrap_or(0);
                    if blob.is_null() || len == 0 {
                        SqlValue::Blob(Vec::new())
                    } else {
                        SqlValue::Blob(std::slice::from_raw_parts(blob, len).to_vec())
                    }
                }
                _ => SqlValue::Null,
            }
        }
    }
}

impl Drop for Statement<'_> {
    fn drop(&mut self) {
        // SAFETY: `self.stmt` is live and finalized exactly once. The result repeats the last step's
        // error, which was already reported.
        unsafe { ffi::sqlite3_finalize(self.ptr()) };
    }
}

impl<'c> Statement<'c> {
    /// `sqlite3_stmt_status(op)`, resetting the counter to 0 (so that a cached statement's next run
    /// counts from 0 again, as a fresh one does).
    pub(super) fn take_status(&mut self, op: c_int) -> u64 {
        // SAFETY: `self.stmt` is a live statement; an op outside SQLite's counters returns 0.
        u64::from(unsafe { ffi::sqlite3_stmt_status(self.ptr(), op, 1) } as u32)
    }

    /// `sqlite3_reset` and `sqlite3_clear_bindings`: the statement is back to its state right after it
    /// was prepared and no longer holds a read transaction or a table lock. The result of the reset
    /// repeats the last step's error, which was already reported.
    pub(super) fn reset(&mut self) {
        // SAFETY: `self.stmt` is a live statement.
        unsafe {
            ffi::sqlite3_reset(self.ptr());
            ffi::sqlite3_clear_bindings(self.ptr());
        }
    }

    /// `sqlite3_stmt_busy`: the statement was stepped and not reset since.
    pub(super) fn busy(&self) -> bool {
        // SAFETY: `self.stmt` is a live statement.
        unsafe { ffi::sqlite3_stmt_busy(self.ptr()) != 0 }
    }

    /// Gives up the borrow of the connection, to keep the statement in a cache; see [`Detached`].
    ///
    /// # Panics
    /// If the statement is still running (stepped and not reset): a cached statement is never in use
    /// twice, nor left holding a transaction between calls.
    pub(super) fn detach(self) -> Detached {
        assert!(!self.busy(), "a statement is reset before it is cached");
        let this = std::mem::ManuallyDrop::new(self);
        Detached { db: this.db, stmt: this.stmt }
    }
}

/// A prepared statement kept past the `exec` that prepared it (in a [`super::StatementCache`]), finalized
/// when dropped. It holds its connection's handle but no borrow: its owner keeps it with that connection
/// and drops it first. If the connection were closed first anyway, `sqlite3_close` would fail with
/// `SQLITE_BUSY` (a statement is still unfinalized) and leave the connection open, so finalizing later
/// stays sound: a leak, never a use after free.
pub(super) struct Detached {
    db: *mut ffi::sqlite3,
    stmt: NonNull<ffi::sqlite3_stmt>,
}

impl Detached {
    /// The connection this statement belongs to.
    pub(super) fn db(&self) -> *mut ffi::sqlite3 {
        self.db
    }

    /// Borrows `conn` again to run the statement.
    ///
    /// # Panics
    /// If the statement is not one of `conn`'s.
    pub(super) fn attach(self, conn: &Connection) -> Statement<'_> {
        // SAFETY: the handle is only compared.
        assert_eq!(self.db, unsafe { conn.handle() }, "a cached statement runs on its own connection");
        let this = std::mem::ManuallyDrop::new(self);
        Statement { db: this.db, stmt: this.stmt, _conn: PhantomData }
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        // SAFETY: `self.stmt` is live (its connection is open, or was leaked open: see the type's
        // documentation) and finalized exactly once.
        unsafe { ffi::sqlite3_finalize(self.stmt.as_ptr()) };
    }
}
