//! Oracle conformance of the SQLite backend's storage API: transactions, deleteAll, alarms and un-awaited
//! operations replayed through [`Storage`] and compared with what Cloudflare's runtime returned
//! (`data/oracle_storage.json`, copied from the project's oracle; see its `source` field).
//!
//! The oracle awaited each top-level op before the next, so each is its own turn here (`end_turn` after it);
//! a `concurrent` op runs its sub-ops in one turn, as un-awaited calls do.

use super::oracle::{
    alarm_time, error_json, expected, list_options, map_json, normalize, run_transaction, undefined, T0_MS,
};
use std::sync::Arc;

use crate::error::Error;
use crate::storage::gates::{block_on, ManualTurns};
use crate::storage::sql::SqlValue;
use crate::storage::sqlite::{SqliteSettings, SqliteStorage};
use crate::storage::{DatabaseLocation, Storage, Transaction};
use crate::world::DurableOnReturn;
use serde_json::{json, Value};

fn sql_json(v: &SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Integer(i) => json!(i),
        SqlValue::Real(f) => json!(f),
        SqlValue::Text(t) => json!(t),
        SqlValue::Blob(b) => json!({"$u8": b}),
    }
}

/// Runs one storage op (top level or inside a transaction). `None`: not applicable in Rust (with a reason).
async fn run_op(
    storage: &Storage,
    txn: Option<&Transaction>,
    op: &Value,
) -> Result<Result<Value, Error>, String> {
    let key = op.get("key").and_then(Value::as_str);
    Ok(match op["op"].as_str().unwrap() {
        "get" => match txn {
            Some(t) => t.get::<Value>(key.unwrap()).await,
            None => storage.get::<Value>(key.unwrap()).await,
        }
        .map(|v| v.unwrap_or_else(undefined)),
        "put" => {
            if let Some(entries) = op.get("entries") {
                let pairs: Vec<(&str, Value)> =
                    entries.as_object().unwrap().iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
                storage.put_multiple(&pairs).await.map(|()| undefined())
            } else {
                match txn {
                    Some(t) => t.put(key.unwrap(), &op["value"]).await,
                    None => storage.put(key.unwrap(), &op["value"]).await,
                }
                .map(|()| undefined())
            }
        }
        "delete" => match txn {
            Some(t) => t.delete(key.unwrap()).await,
            None => storage.delete(key.unwrap()).await,
        }
        .map(|b| json!(b)),
        "list" => match txn {
            Some(t) => t.list::<Value>(&list_options(op)).await,
            None => storage.list::<Value>(&list_options(op)).await,
        }
        .map(map_json),
        "rollback" => txn.expect("rollback is a transaction op").rollback().map(|()| undefined()),
        "deleteAll" => storage.delete_all().await.map(|()| undefined()),
        "getAlarm" => storage.get_alarm().await.map(|a| a.map_or(Value::Null, |t| json!({"$t0": t - T0_MS}))),
        "setAlarm" => storage.set_alarm(alarm_time(op)).await.map(|()| undefined()),
        "deleteAlarm" => storage.delete_alarm().await.map(|()| undefined()),
        "sql" => {
            let sql = storage.sql().unwrap();
            sql.exec(op["query"].as_str().unwrap(), &[]).map(|mut c| {
                let columns: Vec<String> = c.column_names().to_vec();
                let (read, written) = (c.rows_read(), c.rows_written());
                let rows: Vec<Value> = c
                    .to_array()
                    .iter()
                    .map(|r| {
                        let obj: serde_json::Map<String, Value> = r
                            .columns()
                            .iter()
                            .zip(r.values())
                            .map(|(k, v)| (k.clone(), sql_json(v)))
                            .collect();
                        Value::Object(obj)
                    })
                    .collect();
                json!({"rows": rows, "columnNames": columns, "rowsRead": read, "rowsWritten": written})
            })
        }
        "transaction" => {
            run_transaction(storage, op, async |t: &Transaction, o: &Value| {
                Box::pin(run_op(storage, Some(t), o)).await
            })
            .await
        }
        "transactionSync" => {
            let inner_ops = op["ops"].as_array().unwrap().clone();
            let throw = op.get("throw").and_then(Value::as_str).map(str::to_string);
            let rethrow = op.get("rethrow").and_then(Value::as_bool).unwrap_or(false);
            storage.transaction_sync(|| {
                let mut inner = Vec::new();
                for o in &inner_ops {
                    let r = block_on(run_op(storage, None, o)).map_err(Error::new)?;
                    match r {
                        Ok(v) => inner.push(json!({"ok": v})),
                        Err(e) if rethrow => return Err(e),
                        Err(e) => inner.push(json!({"error": error_json(&e), "sync": true})),
                    }
                }
                match throw {
                    Some(m) => Err(Error::new(m)),
                    None => Ok(json!({"inner": inner})),
                }
            })
        }
        "transactionSyncAsync" => {
            // JavaScript passes an async callback: its synchronous prefix (the INSERT) runs inside the
            // savepoint and the returned promise counts as success. The nearest Rust: a synchronous closure
            // doing the same. The value the oracle recorded is its harness's, so only the effect is compared
            // (by the next op, which reads the table).
            let sql = storage.sql().unwrap();
            storage.transaction_sync(|| sql.exec(op["query"].as_str().unwrap(), &[]).map(|_| ())).unwrap();
            return Err("returns a JavaScript promise; its effect is compared by the next op".into());
        }
        other => return Err(format!("op {other} is not part of this conformance file")),
    })
}

#[test]
fn storage_api_matches_the_real_runtime() {
    let data: Value = serde_json::from_str(include_str!("../../../tests/data/oracle_storage.json")).unwrap();
    let dir = crate::test_dir().join("conformance_storage");
    std::fs::create_dir_all(&dir).unwrap();
    let (mut checked, mut skipped) = (0, 0);
    for case in data["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let path = dir.join(format!("{name}.db"));
        for suffix in ["", "-journal", "-wal"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let turns = Arc::new(ManualTurns::default());
        let backend = SqliteStorage::open(
            &DatabaseLocation::file(&path),
            turns.clone(),
            Arc::new(DurableOnReturn),
            SqliteSettings::default(),
        )
        .unwrap();
        let storage = Storage::sqlite(backend);
        for (i, r) in case["results"].as_array().unwrap().iter().enumerate() {
            let op = &r["op"];
            let got = if op["op"] == "concurrent" {
                let mut all = Vec::new();
                for sub in op["ops"].as_array().unwrap() {
                    let v = block_on(run_op(&storage, None, sub)).expect("concurrent sub-ops apply");
                    all.push(match v {
                        Ok(v) => json!({"ok": v}),
                        Err(e) => json!({"error": error_json(&e), "sync": false}),
                    });
                }
                Ok(Value::Array(all))
            } else {
                match block_on(run_op(&storage, None, op)) {
                    Ok(r) => r.map_err(|e| error_json(&e)),
                    Err(reason) => {
                        eprintln!("{name} op {i} ({}) not applicable: {reason}", op["op"]);
                        skipped += 1;
                        continue;
                    }
                }
            };
            turns.end_turn();
            let want = expected(r);
            assert_eq!(
                got.as_ref().map(normalize).map_err(normalize),
                want.as_ref().map(normalize).map_err(normalize),
                "{name} op {i}: {op}"
            );
            checked += 1;
        }
    }
    eprintln!("{checked} ops match the real runtime, {skipped} not applicable");
    // Pinned, so an op quietly moving to "not applicable" is noticed.
    assert_eq!(skipped, 1);
    assert_eq!(checked, 29);
}
