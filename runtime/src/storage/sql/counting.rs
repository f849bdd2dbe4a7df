//! Row counters: `rowsRead` and `rowsWritten` estimated without workerd's patched SQLite (see
//! `Cursor::rows_read`).

use super::*;

/// What [`write_counts`] compares the last statement's effects against, taken before it runs.
pub(super) struct Baseline {
    total_changes: u64,
    /// `(type, lower-cased name, lower-cased table)` of every schema object, if the statement creates some.
    schema: Option<BTreeSet<(String, String, String)>>,
}

impl Baseline {
    pub(super) fn take(conn: &Connection, with_schema: bool) -> rusqlite::Result<Baseline> {
        let schema = if with_schema { Some(schema_objects(conn)?) } else { None };
        Ok(Baseline { total_changes: conn.total_changes(), schema })
    }
}

pub(super) fn schema_objects(conn: &Connection) -> rusqlite::Result<BTreeSet<(String, String, String)>> {
    let mut stmt =
        conn.prepare_cached("SELECT type, lower(name), lower(tbl_name) FROM main.sqlite_master")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    rows.collect()
}

/// For a statement that writes, the rows [`Cursor::rows_read`] and [`Cursor::rows_written`] count besides
/// SQLite's step counters: tables read (except those it created, which it did not scan), key probes and
/// index entries of the rows the update hook saw, rows the hook did not see, and schema rows.
pub(super) fn write_counts(
    conn: &Connection,
    log: &StatementLog,
    baseline: &Baseline,
) -> rusqlite::Result<(u64, u64)> {
    let (mut read, mut written) = (0, 0);
    let mut seen = 0;
    for (table, changes) in &log.changes {
        let info = TableInfo::load(conn, table)?;
        let updated = log.updated_columns.get(table);
        let touched = match (&info.rowid_alias, updated) {
            (_, None) => 0,
            (Some(alias), Some(cols)) if cols.contains(alias) => info.indexes.len() as u64,
            (_, Some(cols)) => info
                .indexes
                .iter()
                .filter(|index| index.iter().any(|c| c.as_ref().is_none_or(|c| cols.contains(c))))
                .count() as u64,
        };
        written += changes.inserted * (1 + info.indexes.len() as u64)
            + changes.updated * (1 + touched)
            + changes.deleted;
        if info.rowid_alias.is_some() {
            read += changes.inserted;
        }
        seen += changes.inserted + changes.updated + changes.deleted;
    }
    written += conn.total_changes().saturating_sub(baseline.total_changes).saturating_sub(seen);
    let mut created_tables = BTreeSet::new();
    if let Some(before) = &baseline.schema {
        let tables_before: BTreeSet<&str> = before.iter().map(|(_, name, _)| name.as_str()).collect();
        for (kind, name, table) in schema_objects(conn)?.difference(before) {
            written += match kind.as_str() {
                "table" | "view" => {
                    created_tables.insert(name.clone());
                    2
                }
                "index" if tables_before.contains(table.as_str()) => 1 + count_rows(conn, table)?,
                _ => 1,
            };
        }
    }
    read += log.tables_read.difference(&created_tables).count() as u64;
    Ok((read, written))
}

/// What the counters need to know of a table.
pub(super) struct TableInfo {
    /// The `INTEGER PRIMARY KEY` column (lower-cased), if the table has one.
    rowid_alias: Option<String>,
    /// Each index's columns, lower-cased; `None` for an expression.
    indexes: Vec<Vec<Option<String>>>,
}

impl TableInfo {
    fn load(conn: &Connection, table: &str) -> rusqlite::Result<TableInfo> {
        let mut stmt =
            conn.prepare_cached("SELECT lower(name), upper(type) FROM pragma_table_info(?1) WHERE pk > 0")?;
        let keys: Vec<(String, String)> =
            stmt.query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
        let rowid_alias = match keys.as_slice() {
            [(name, kind)] if kind == "INTEGER" => Some(name.clone()),
            _ => None,
        };
        let mut stmt = conn.prepare_cached(
            "SELECT il.seq, lower(ii.name) \
             FROM pragma_index_list(?1) AS il, pragma_index_info(il.name) AS ii ORDER BY il.seq",
        )?;
        let mut indexes: BTreeMap<i64, Vec<Option<String>>> = BTreeMap::new();
        for row in stmt.query_map([table], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?)))? {
            let (seq, column) = row?;
            indexes.entry(seq).or_default().push(column);
        }
        Ok(TableInfo { rowid_alias, indexes: indexes.into_values().collect() })
    }
}

/// The `count(*)` fast paths of a statement: how many, and the rows they count.
///
/// SQLite compiles `SELECT count(*) FROM t` (one table, no `WHERE`, `GROUP BY` or other result column) to a
/// single `Count` instruction over the table's (or its smallest index's) b-tree, with no scan. workerd's
/// patched SQLite adds that count to `rowsRead` (spec §3.5): an empty table reads 0 rows, a table of `n` rows
/// `n`. The bundled SQLite's counters do not see it, so the statement's program is read (`EXPLAIN`): each
/// `Count` of the `main` database (P3 = 0: exact, not an estimate) names its cursor, whose `OpenRead` names
/// the b-tree's root page, which names the table, whose rows are counted. Only statements whose text
/// mentions `count` can have one, so other statements cost one substring search. Errors count nothing: the
/// statement already ran, and the counter is an estimate anyway.
pub(super) fn count_fast_paths(conn: &Connection, sql: &str) -> (u64, u64) {
    if !sql.as_bytes().windows(5).any(|w| w.eq_ignore_ascii_case(b"count")) {
        return (0, 0);
    }
    use rusqlite::OptionalExtension;
    let program = || -> rusqlite::Result<(u64, u64)> {
        let mut explain = conn.prepare(&format!("EXPLAIN {}", sql.trim_end().trim_end_matches(';')))?;
        // Cursor → root page of the b-tree it opened; the root pages of the `Count`s.
        let mut roots: BTreeMap<i64, i64> = BTreeMap::new();
        let mut counted: Vec<i64> = Vec::new();
        let mut rows = explain.query([])?;
        while let Some(r) = rows.next()? {
            let (opcode, p1, p2, p3): (String, i64, i64, i64) = (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
            match opcode.as_str() {
                "OpenRead" if p3 == 0 => {
                    roots.insert(p1, p2);
                }
                "Count" if p3 == 0 => counted.extend(roots.get(&p1)),
                _ => {}
            }
        }
        let table_of = |root: i64| -> rusqlite::Result<Option<String>> {
            conn.prepare_cached("SELECT tbl_name FROM main.sqlite_schema WHERE rootpage = ?1")?
                .query_row([root], |r| r.get(0))
                .optional()
        };
        // Each table's cursors: a table also read by another cursor keeps the one its authorizer entry counts.
        let mut cursors: BTreeMap<String, usize> = BTreeMap::new();
        for root in roots.values() {
            if let Some(table) = table_of(*root)? {
                *cursors.entry(table).or_default() += 1;
            }
        }
        let (mut scans, mut total) = (0, 0);
        for root in &counted {
            if let Some(table) = table_of(*root)? {
                total += count_rows(conn, &table)?;
                if cursors.get(&table) == Some(&1) {
                    scans += 1;
                }
            }
        }
        Ok((scans, total))
    };
    program().unwrap_or((0, 0))
}

pub(super) fn count_rows(conn: &Connection, table: &str) -> rusqlite::Result<u64> {
    let sql = format!("SELECT count(*) FROM main.\"{}\"", table.replace('"', "\"\""));
    conn.query_row(&sql, [], |r| r.get::<_, i64>(0)).map(|n| u64::try_from(n).unwrap_or(0))
}
