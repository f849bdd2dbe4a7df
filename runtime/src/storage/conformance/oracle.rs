//! What the oracle replays of both storage backends share: how JavaScript values and results are written in
//! the oracle's JSON, and how ops' options map to Rust.

use crate::error::Error;
use crate::storage::kv::ListOptions;
use crate::storage::{Storage, Transaction};
use serde_json::{json, Value};

/// The oracle's alarm times are relative to the case start; ours are relative to this instant.
pub(crate) const T0_MS: i64 = 1_767_225_600_000;

pub(crate) fn undefined() -> Value {
    json!({"$undefined": true})
}

pub(crate) fn error_json(e: &Error) -> Value {
    json!({"name": e.kind().to_string(), "message": e.message()})
}

pub(crate) fn map_json(entries: Vec<(String, Value)>) -> Value {
    json!({"$map": entries.into_iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()})
}

pub(crate) fn list_options(op: &Value) -> ListOptions {
    let o = &op["options"];
    let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
    ListOptions {
        start: s("start"),
        start_after: s("startAfter"),
        end: s("end"),
        prefix: s("prefix"),
        reverse: o.get("reverse").and_then(Value::as_bool).unwrap_or(false),
        limit: o.get("limit").and_then(Value::as_i64),
    }
}

pub(crate) fn alarm_time(op: &Value) -> i64 {
    let t = &op["time"];
    let rel =
        t.get("$t0").or_else(|| t.get("$date_t0")).and_then(Value::as_i64).expect("relative alarm time");
    T0_MS + rel
}

pub(crate) fn expected(r: &Value) -> Result<Value, Value> {
    match r.get("error") {
        Some(e) => Err(json!({"name": e["name"], "message": e["message"]})),
        None => Ok(r["ok"].clone()),
    }
}

/// Numbers compare as doubles (JavaScript has no integers).
pub(crate) fn normalize(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), normalize(v))).collect()),
        other => other.clone(),
    }
}

/// The oracle's `transaction` op, the same on both backends: its inner ops run through `run` inside
/// `storage.transaction()`, each result recorded, and the closure throws at the end if the op says so.
pub(crate) async fn run_transaction(
    storage: &Storage,
    op: &Value,
    run: impl AsyncFn(&Transaction, &Value) -> Result<Result<Value, Error>, String>,
) -> Result<Value, Error> {
    let inner_ops = op["ops"].as_array().unwrap().clone();
    let throw = op.get("throw").and_then(Value::as_str).map(str::to_string);
    let r = storage
        .transaction(async |t| {
            let mut inner = Vec::new();
            for o in &inner_ops {
                let r = run(t, o).await.map_err(Error::new)?;
                inner.push(match r {
                    Ok(v) => json!({"ok": v}),
                    Err(e) => json!({"error": error_json(&e), "sync": false}),
                });
            }
            match throw {
                Some(m) => Err(Error::new(m)),
                None => Ok(inner),
            }
        })
        .await;
    r.map(|inner| json!({"inner": inner, "returned": "txn-return-value"}))
}
