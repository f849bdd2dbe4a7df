//! Values, rows and cursors: what `sql.exec` takes and returns (spec §3.5).

use super::*;

/// A SQL value: a binding of `exec` or a value in a result row.
///
/// JavaScript binds numbers as `Real` (`sql.exec("…", 1)` binds the double `1.0`), strings as `Text`,
/// ArrayBuffers and typed arrays as `Blob`, and `null`/`undefined` as `Null`. A result `Integer` reaches
/// JavaScript as a number, converted to a double (precision is lost above 2^53); here it stays an `i64`.
#[derive(Clone, Debug, PartialEq)]
pub enum SqlValue {
    /// `NULL` (JavaScript `null`).
    Null,
    /// A 64-bit integer.
    Integer(i64),
    /// A double.
    Real(f64),
    /// UTF-8 text (JavaScript string).
    Text(String),
    /// Bytes (JavaScript ArrayBuffer).
    Blob(Vec<u8>),
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> SqlValue {
        SqlValue::Integer(v)
    }
}

impl From<i32> for SqlValue {
    fn from(v: i32) -> SqlValue {
        SqlValue::Integer(v.into())
    }
}

impl From<u32> for SqlValue {
    fn from(v: u32) -> SqlValue {
        SqlValue::Integer(v.into())
    }
}

impl From<f64> for SqlValue {
    fn from(v: f64) -> SqlValue {
        SqlValue::Real(v)
    }
}

impl From<&str> for SqlValue {
    fn from(v: &str) -> SqlValue {
        SqlValue::Text(v.to_owned())
    }
}

impl From<String> for SqlValue {
    fn from(v: String) -> SqlValue {
        SqlValue::Text(v)
    }
}

impl From<&[u8]> for SqlValue {
    fn from(v: &[u8]) -> SqlValue {
        SqlValue::Blob(v.to_vec())
    }
}

impl From<Vec<u8>> for SqlValue {
    fn from(v: Vec<u8>) -> SqlValue {
        SqlValue::Blob(v)
    }
}

impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    /// `None` is `NULL`, like JavaScript's `undefined`.
    fn from(v: Option<T>) -> SqlValue {
        v.map_or(SqlValue::Null, Into::into)
    }
}

impl ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            SqlValue::Null => ValueRef::Null,
            SqlValue::Integer(i) => ValueRef::Integer(*i),
            SqlValue::Real(f) => ValueRef::Real(*f),
            SqlValue::Text(s) => ValueRef::Text(s.as_bytes()),
            SqlValue::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// One result row.
///
/// JavaScript gets a row as an object keyed by column name. Column names may repeat (`SELECT 1 AS a, 2 AS a`,
/// or `SELECT *` over a join); on the object a later column overwrites an earlier one of the same name, and
/// [`Row::get`] does the same. [`Row::values`] keeps every column, in order, as `raw()` does.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    columns: Arc<[String]>,
    values: Vec<SqlValue>,
}

impl Row {
    /// The value of the column named `column` (the last such column if the name repeats), as
    /// `row[column]` in JavaScript; `None` if no column has that name.
    pub fn get(&self, column: &str) -> Option<&SqlValue> {
        self.columns.iter().rposition(|c| c == column).map(|i| &self.values[i])
    }

    /// Every value, in column order (duplicate names included).
    pub fn values(&self) -> &[SqlValue] {
        &self.values
    }

    /// The column names, in order, as [`Cursor::column_names`].
    pub fn columns(&self) -> &[String] {
        &self.columns
    }
}

/// The cursor `sql.exec` returns, over the rows of the last statement.
///
/// The rows were all read when `exec` ran (see the module documentation); the cursor hands out the
/// remaining ones. It is an [`Iterator`] of [`Row`]s (`next()`, `for … of`); [`Cursor::raw`] iterates the
/// same rows as arrays, sharing the position.
#[derive(Clone, Debug)]
pub struct Cursor {
    pub(super) columns: Arc<[String]>,
    pub(super) rows: VecDeque<Vec<SqlValue>>,
    pub(super) rows_read: u64,
    pub(super) rows_written: u64,
}

impl Cursor {
    /// `columnNames`: the result's column names, in order; names may repeat.
    pub fn column_names(&self) -> &[String] {
        &self.columns
    }

    /// `rowsRead`: rows the last statement read.
    ///
    /// workerd takes this from a counter its patched SQLite keeps: one for each time a table or index cursor
    /// is positioned on a row (a scan starting, each step to a next row, each keyed seek), plus the row count
    /// of a `count(*)` fast path. The bundled SQLite does not keep it, so dosim adds up:
    /// * every successful step to a next row, exact (`sqlite3_stmt_status` counters 0,
    ///   `SQLITE_STMTSTATUS_FULLSCAN_STEP` and `SQLITE_STMTSTATUS_AUTOINDEX`, which together count the
    ///   successful `Next`/`Prev`/`SorterNext` instructions);
    /// * every sort, exact (`SQLITE_STMTSTATUS_SORT`: a sorter is positioned on its first row);
    /// * one per table the statement reads (each `SQLITE_READ` table seen by the authorizer, `sqlite_master`
    ///   included): the start of its scan or its keyed lookup;
    /// * one per row inserted into a table with an `INTEGER PRIMARY KEY` (SQLite probes the key for a
    ///   conflict);
    /// * one for a writing statement that returns rows (`RETURNING` reads its rows back from a temporary
    ///   table);
    /// * for a `count(*)` fast path (`SELECT count(*) FROM t`, which SQLite answers from the b-tree without a
    ///   scan), the table's rows instead of the one for its scan: 0 on an empty table.
    ///
    /// This equals workerd's number for single-table statements (scans, keyed lookups, inserts, updates,
    /// deletes, `RETURNING`, `ORDER BY`, `CREATE TABLE/INDEX`). It counts less for joins and correlated
    /// subqueries (one lookup per table rather than per outer row), for virtual tables, and for inserts that
    /// leave the `INTEGER PRIMARY KEY` to SQLite (one probe too many).
    pub fn rows_read(&self) -> u64 {
        self.rows_read
    }

    /// `rowsWritten`: rows the last statement wrote.
    ///
    /// workerd counts each table row inserted, overwritten or deleted, each index entry inserted (not index
    /// entries deleted), and each schema row written. dosim adds up, from SQLite's update hook and the
    /// schema:
    /// * per row inserted into a table: 1, plus 1 per index of the table;
    /// * per row updated: 1, plus 1 per index that contains an updated column (all of them if the
    ///   `INTEGER PRIMARY KEY` changes);
    /// * per row deleted: 1;
    /// * rows changed where the update hook does not see them (`WITHOUT ROWID` tables, and `DELETE` without
    ///   `WHERE`, which SQLite truncates): 1 each, from `sqlite3_total_changes`;
    /// * per table or view created: 2 (SQLite inserts its schema row, then rewrites it); per index or trigger
    ///   created: 1, plus, for an index built on an existing table, 1 per row of that table.
    ///
    /// This equals workerd's number for those statements. It differs for `DROP` and `ALTER` (whose schema
    /// rewrites are not counted), for rows written inside virtual tables, and for writes of internal tables
    /// such as `sqlite_sequence` and `sqlite_stat1`.
    pub fn rows_written(&self) -> u64 {
        self.rows_written
    }

    /// `toArray()`: the remaining rows; the cursor is then exhausted.
    pub fn to_array(&mut self) -> Vec<Row> {
        self.by_ref().collect()
    }

    /// `one()`: the only remaining row. With no row left: `Expected exactly one result from SQL query, but
    /// got no results.`; with more than one: `… but got multiple results.`, and the cursor is exhausted.
    pub fn one(&mut self) -> Result<Row, Error> {
        let row = self.next().ok_or_else(|| Error::new(messages::ONE_GOT_NONE))?;
        if !self.rows.is_empty() {
            self.rows.clear();
            return Err(Error::new(messages::ONE_GOT_MANY));
        }
        Ok(row)
    }

    /// `raw()`: the remaining rows as arrays of values. Taking a row from either iterator advances both.
    pub fn raw(&mut self) -> Raw<'_> {
        Raw { cursor: self }
    }
}

impl Iterator for Cursor {
    type Item = Row;

    fn next(&mut self) -> Option<Row> {
        let values = self.rows.pop_front()?;
        Some(Row { columns: Arc::clone(&self.columns), values })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.rows.len(), Some(self.rows.len()))
    }
}

/// The iterator [`Cursor::raw`] returns: rows as arrays of values, in column order.
#[derive(Debug)]
pub struct Raw<'a> {
    cursor: &'a mut Cursor,
}

impl Raw<'_> {
    /// `toArray()`: the remaining rows; the cursor is then exhausted.
    pub fn to_array(self) -> Vec<Vec<SqlValue>> {
        self.cursor.rows.drain(..).collect()
    }
}

impl Iterator for Raw<'_> {
    type Item = Vec<SqlValue>;

    fn next(&mut self) -> Option<Vec<SqlValue>> {
        self.cursor.rows.pop_front()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.cursor.size_hint()
    }
}
