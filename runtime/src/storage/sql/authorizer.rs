//! The authorizer that confines application SQL (spec §3.5): denied functions, allowed modules and pragmas,
//! `_cf_` names, and the rename target of `ALTER TABLE … RENAME TO`.

use super::*;

/// Functions application SQL may not call (§3.5): they reveal SQLite's build.
pub(super) const DENIED_FUNCTIONS: [&str; 5] = [
    "sqlite_version",
    "sqlite_source_id",
    "sqlite_offset",
    "sqlite_compileoption_get",
    "sqlite_compileoption_used",
];

/// Virtual-table modules application SQL may use (§3.5), compared case-insensitively.
pub(super) const ALLOWED_MODULES: [&str; 4] = ["fts5", "fts5vocab", "rtree", "rtree_i32"];

/// Whether application SQL may name this table, index, trigger or view: `_cf_` names are reserved (§3.1),
/// case-insensitively.
pub(super) fn allowed_name(name: &str) -> bool {
    !name.get(..4).is_some_and(|prefix| prefix.eq_ignore_ascii_case("_cf_"))
}

/// The authorizer's decision on one action: everything outside [`exec`] (trusted code), §3.5's rules during
/// user SQL. Called by SQLite, through [`raw`], while it prepares a statement.
pub(super) fn on_authorize(
    action: c_int,
    arg1: Option<&str>,
    arg2: Option<&str>,
    database: Option<&str>,
) -> bool {
    with_log(|log| log.is_none_or(|log| authorize(log, action, arg1, arg2, database))).unwrap_or(false)
}

/// Records a row change the update hook reports, while the last statement of [`exec`] runs.
pub(super) fn on_row_change(action: c_int, database: &str, table: &str) {
    with_log(|log| {
        if let Some(log) = log.filter(|log| log.recording && database == "main") {
            let counts = log.changes.entry(table.to_ascii_lowercase()).or_default();
            match action {
                ffi::SQLITE_INSERT => counts.inserted += 1,
                ffi::SQLITE_UPDATE => counts.updated += 1,
                ffi::SQLITE_DELETE => counts.deleted += 1,
                _ => {}
            }
        }
    });
}

/// §3.5's rules for one authorizer callback during user SQL (`action` and its arguments as SQLite passes
/// them to `sqlite3_set_authorizer`'s callback), recording what the row counters need.
pub(super) fn authorize(
    log: &mut StatementLog,
    action: c_int,
    arg1: Option<&str>,
    arg2: Option<&str>,
    database: Option<&str>,
) -> bool {
    let named = |arg: Option<&str>| arg.is_some_and(allowed_name);
    if matches!(action, ffi::SQLITE_TRANSACTION | ffi::SQLITE_SAVEPOINT) {
        log.transaction_refused = true;
        return false;
    }
    if action == ffi::SQLITE_ALTER_TABLE {
        // Database name, then table name. The database slot holds the dropped column (`DROP COLUMN`) or
        // nothing; the new name of a table rename is read from the statement.
        return arg1 == Some("main")
            && named(arg2)
            && database.is_none_or(allowed_name)
            && rename_target(log.statement()).is_none_or(|t| allowed_name(&t));
    }
    match database {
        None | Some("main") => {}
        // The temp schema holds SQLite's own `sqlite_temp_master`, which `ALTER TABLE` reads and rewrites.
        Some("temp") => return matches!(action, ffi::SQLITE_READ | ffi::SQLITE_UPDATE) && named(arg1),
        Some(_) => return false,
    }
    match action {
        ffi::SQLITE_SELECT | ffi::SQLITE_RECURSIVE => true,
        ffi::SQLITE_READ => {
            if let Some(table) = arg1 {
                log.tables_read.insert(table.to_ascii_lowercase());
            }
            named(arg1)
        }
        ffi::SQLITE_UPDATE => {
            if let (Some(table), Some(column)) = (arg1, arg2) {
                let columns = log.updated_columns.entry(table.to_ascii_lowercase()).or_default();
                columns.insert(column.to_ascii_lowercase());
            }
            named(arg1)
        }
        ffi::SQLITE_INSERT
        | ffi::SQLITE_DELETE
        | ffi::SQLITE_DROP_TABLE
        | ffi::SQLITE_DROP_VIEW
        | ffi::SQLITE_REINDEX => named(arg1),
        ffi::SQLITE_CREATE_TABLE | ffi::SQLITE_CREATE_VIEW => {
            log.creates_schema = true;
            named(arg1)
        }
        // Index or trigger name, then table name.
        ffi::SQLITE_CREATE_INDEX | ffi::SQLITE_CREATE_TRIGGER => {
            log.creates_schema = true;
            named(arg1) && named(arg2)
        }
        ffi::SQLITE_DROP_INDEX | ffi::SQLITE_DROP_TRIGGER => named(arg1) && named(arg2),
        // `PRAGMA optimize` analyzes every table, reserved ones included; sqlite_stat1 holds no table data.
        ffi::SQLITE_ANALYZE => true,
        // Table name, then module name.
        ffi::SQLITE_CREATE_VTABLE | ffi::SQLITE_DROP_VTABLE => {
            log.creates_schema |= action == ffi::SQLITE_CREATE_VTABLE;
            let module_allowed =
                arg2.is_some_and(|module| ALLOWED_MODULES.iter().any(|m| m.eq_ignore_ascii_case(module)));
            module_allowed && named(arg1)
        }
        ffi::SQLITE_PRAGMA => arg1.is_some_and(|pragma| pragma_allowed(pragma, arg2)),
        ffi::SQLITE_FUNCTION => arg2.is_some_and(|function| !DENIED_FUNCTIONS.contains(&function)),
        // ATTACH and DETACH, TEMP objects, COPY, and anything unknown.
        _ => false,
    }
}

/// §3.5's pragma allowlist, with workerd's argument rules. Like workerd, names are compared as written
/// (`PRAGMA FOREIGN_KEYS` is refused).
pub(super) fn pragma_allowed(name: &str, value: Option<&str>) -> bool {
    match name {
        "table_list" => true,
        "table_info" | "table_xinfo" => value.is_some_and(allowed_name),
        "data_version" | "page_size" => value.is_none(),
        "case_sensitive_like"
        | "foreign_keys"
        | "defer_foreign_keys"
        | "ignore_check_constraints"
        | "legacy_alter_table"
        | "recursive_triggers"
        | "reverse_unordered_selects" => value.is_none_or(is_boolean),
        "foreign_key_list" | "index_info" | "index_list" | "index_xinfo" => value.is_some_and(allowed_name),
        "foreign_key_check" => value.is_none_or(allowed_name),
        "quick_check" => value.is_none_or(|v| parse_integer(v, false).is_some() || allowed_name(v)),
        "optimize" => value.is_none_or(|v| parse_integer(v, true).is_some()),
        _ => false,
    }
}

/// Whether a pragma argument spells a boolean the way workerd accepts it: optionally quoted, starting
/// (case-insensitively) with true/false/yes/no/on/off/1/0.
pub(super) fn is_boolean(value: &str) -> bool {
    let unquoted = match value.as_bytes() {
        [q @ (b'\'' | b'"'), .., last] if last == q && value.len() >= 2 => &value[1..value.len() - 1],
        _ => value,
    };
    ["true", "false", "yes", "no", "on", "off", "1", "0"]
        .iter()
        .any(|word| unquoted.get(..word.len()).is_some_and(|p| p.eq_ignore_ascii_case(word)))
}

/// A pragma argument as a 32-bit integer (decimal or `0x` hex), as workerd's parse accepts it.
pub(super) fn parse_integer(value: &str, signed: bool) -> Option<i64> {
    let (negative, digits) = match value.strip_prefix('-') {
        Some(rest) if signed => (true, rest),
        Some(_) => return None,
        None => (false, value),
    };
    let magnitude = match digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            i64::from_str_radix(hex, 16).ok()?
        }
        _ if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => digits.parse().ok()?,
        _ => return None,
    };
    let v = if negative { -magnitude } else { magnitude };
    let fits = if signed { i32::try_from(v).is_ok() } else { u32::try_from(v).is_ok() };
    fits.then_some(v)
}

/// The new name in `[EXPLAIN [QUERY PLAN]] ALTER TABLE [schema.]name RENAME TO new`, if `sql` starts with
/// such a statement.
pub(super) fn rename_target(sql: &str) -> Option<String> {
    let mut tokens = Tokens { rest: sql };
    let mut token = tokens.next()?;
    if token.is_keyword("EXPLAIN") {
        token = tokens.next()?;
        if token.is_keyword("QUERY") {
            tokens.next()?;
            token = tokens.next()?;
        }
    }
    if !token.is_keyword("ALTER") || !tokens.next()?.is_keyword("TABLE") {
        return None;
    }
    tokens.next()?;
    let mut token = tokens.next()?;
    if token == Token::Punct('.') {
        tokens.next()?;
        token = tokens.next()?;
    }
    if !token.is_keyword("RENAME") || !tokens.next()?.is_keyword("TO") {
        return None;
    }
    tokens.next()?.into_name()
}
