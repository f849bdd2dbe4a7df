//! The one error type of the runtime, with the flags Durable Objects set on errors, and every message the spec
//! fixes.
//!
//! On Cloudflare an error reaches JavaScript as `err.message` plus four flags (spec §0): `retryable` (kj type
//! DISCONNECTED), `overloaded` (kj type OVERLOADED), `durableObjectReset` (the description starts with
//! `broken.`) and `remote` (it crossed an object boundary). [`Error`] carries the same: the message exactly as
//! JavaScript would see it, the JavaScript error class ([`ErrorKind`]), and the flags.

use std::fmt;

/// The JavaScript class an error would have on Cloudflare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// `Error`.
    Error,
    /// `TypeError`: a value of the wrong shape.
    TypeError,
    /// `RangeError`: a value outside its limits.
    RangeError,
    /// `DOMException` named `InvalidAccessError` (a WebSocket close code the standard forbids).
    InvalidAccessError,
    /// `DOMException` named `SyntaxError` (a WebSocket close reason over its byte limit).
    SyntaxError,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Error => "Error",
            ErrorKind::TypeError => "TypeError",
            ErrorKind::RangeError => "RangeError",
            ErrorKind::InvalidAccessError => "InvalidAccessError",
            ErrorKind::SyntaxError => "SyntaxError",
        })
    }
}

/// An error from the runtime or from an object, as a caller observes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    retryable: bool,
    overloaded: bool,
    durable_object_reset: bool,
    remote: bool,
}

impl Error {
    /// An `Error` with this message and no flags.
    pub fn new(message: impl Into<String>) -> Error {
        Error::of(ErrorKind::Error, message)
    }

    /// A `TypeError` with this message.
    pub fn type_error(message: impl Into<String>) -> Error {
        Error::of(ErrorKind::TypeError, message)
    }

    /// A `RangeError` with this message.
    pub fn range_error(message: impl Into<String>) -> Error {
        Error::of(ErrorKind::RangeError, message)
    }

    /// An error of `kind` with this message and no flags.
    pub fn of(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            retryable: false,
            overloaded: false,
            durable_object_reset: false,
            remote: false,
        }
    }

    /// Marks it retryable (a DISCONNECTED error: the operation may be retried if it is idempotent).
    pub fn with_retryable(mut self) -> Error {
        self.retryable = true;
        self
    }

    /// Marks it overloaded (never retry).
    pub fn with_overloaded(mut self) -> Error {
        self.overloaded = true;
        self
    }

    /// Marks that it reset the object: the instance is gone and its stub is broken.
    pub fn with_reset(mut self) -> Error {
        self.durable_object_reset = true;
        self
    }

    /// Marks that it came from across an object boundary.
    pub fn with_remote(mut self) -> Error {
        self.remote = true;
        self
    }

    /// The message, as JavaScript's `err.message`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The JavaScript class.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// `err.retryable`.
    pub fn retryable(&self) -> bool {
        self.retryable
    }

    /// `err.overloaded`.
    pub fn overloaded(&self) -> bool {
        self.overloaded
    }

    /// `err.durableObjectReset`.
    pub fn durable_object_reset(&self) -> bool {
        self.durable_object_reset
    }

    /// `err.remote`.
    pub fn remote(&self) -> bool {
        self.remote
    }
}

impl fmt::Display for Error {
    /// `Kind: message`, as JavaScript's `String(err)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {}

/// The messages the spec fixes, each as a constant or a function of its parameters. Sections refer to
/// `durable-objects.md`.
pub mod messages {
    /// §2.1.
    pub fn key_too_large(size: usize) -> String {
        format!("Keys cannot be larger than 2048 bytes. A key of size {size} was provided.")
    }
    /// §2.1.
    pub fn value_too_large(size: usize) -> String {
        format!("Values cannot be larger than 131072 bytes. A value of size {size} was provided.")
    }
    /// §2.1.
    pub fn too_many_keys(count: usize) -> String {
        format!("Maximum number of key value pairs is 128. {count} pairs were provided.")
    }
    /// §2.4.
    pub const LIST_START_AND_START_AFTER: &str =
        "list() cannot be called with both start and startAfter values.";
    /// §2.4.
    pub const LIST_LIMIT_NOT_POSITIVE: &str = "List limit must be positive.";
    /// §2.6, §3.3.
    pub const DELETE_ALL_IN_TRANSACTION: &str = "Cannot call deleteAll() within a transaction";
    /// §2.7: an operation on a rolled-back transaction (`op` like `get()`).
    pub fn rolled_back(op: &str) -> String {
        format!("Cannot {op} on rolled back transaction")
    }
    /// §2.7: an operation on a transaction after its closure returned.
    pub fn already_committed(op: &str) -> String {
        format!("Cannot call {op} on transaction that has already committed: did you move `txn` outside of the closure?")
    }
    /// §2.7: `transactionSync()` on the KV backend.
    pub const NOT_BACKED_BY_SQL: &str = "Durable Object is not backed by SQL.";
    /// §3.1: the SQL API on the KV backend.
    pub const SQL_NOT_AVAILABLE: &str = "This Durable Object is not backed by SQLite storage, so the SQL API is not available. SQL can be enabled on a new Durable Object class by using the `new_sqlite_classes` instead of `new_classes` under `[[migrations]]` in your wrangler.toml, but an already-deployed class cannot be converted to SQLite (except by deleting the existing data).";
    /// §3.1: the synchronous KV API on the KV backend.
    pub const SYNC_KV_NOT_AVAILABLE: &str = "The storage.kv (synchronous KV) API is only available for SQLite-backed Durable Objects, but this object's namespace is not declared to use SQLite. You can use the older, asynchronous interface via methods of `storage` itself (e.g. `storage.get()`). Alternatively, to enable SQLite, change `new_classes` to `new_sqlite_classes` within the 'migrations' field in your wrangler.jsonc or wrangler.toml file.";
    /// §3.1.
    pub const KV_LIST_INVALIDATED: &str = "kv.list() iterator was invalidated because a new call to kv.list() was started. Only one kv.list() iterator can exist at a time.";
    /// §3.2: a constraint violated at commit (`detail` is SQLite's message with its code).
    pub fn constraint_reset(detail: &str) -> String {
        format!("Durable Object was reset and rolled back to its last known good state because the application left the database in a state where constraints were violated: {detail}")
    }
    /// §3.3.
    pub const COMMIT_AFTER_CRITICAL_ERROR: &str =
        "Cannot commit transaction due to an earlier SQL critical error";
    /// §3.3.
    pub const ROLLBACK_OUTER_WHILE_NESTED: &str =
        "Cannot roll back an outer transaction while a nested transaction is still running.";
    /// §3.5.
    pub const ONLY_LAST_STATEMENT_PARAMETERS: &str =
        "When executing multiple SQL statements in a single call, only the last statement can have parameters.";
    /// §3.5.
    pub const NO_STATEMENT: &str = "SQL code did not contain a statement.";
    /// §3.5.
    pub const WRONG_PARAMETER_COUNT: &str = "Wrong number of parameter bindings for SQL query.";
    /// §3.5.
    pub const ONE_GOT_NONE: &str = "Expected exactly one result from SQL query, but got no results.";
    /// §3.5.
    pub const ONE_GOT_MANY: &str = "Expected exactly one result from SQL query, but got multiple results.";
    /// §3.5.
    pub const TRANSACTION_STATEMENTS: &str = "To execute a transaction, please use the state.storage.transaction() or state.storage.transactionSync() APIs instead of the SQL BEGIN TRANSACTION or SAVEPOINT statements. The JavaScript API is safer because it will automatically roll back on exceptions, and because it interacts correctly with Durable Objects' automatic atomic write coalescing.";
    /// §3.6.
    pub const PITR_NOT_IMPLEMENTED: &str =
        "This Durable Object's storage back-end does not implement point-in-time recovery.";
    /// §4.
    pub const SET_ALARM_NOT_POSITIVE: &str = "setAlarm() cannot be called with an alarm time <= 0";
    /// §4.
    pub const ALARM_HANDLER_REQUIRED: &str =
        "Your Durable Object class must have an alarm() handler in order to call setAlarm()";
    /// §2.9, §3.2, §7: storage used after the object was shut down (retryable, reset).
    pub const STORAGE_NO_LONGER_ACCESSIBLE: &str = "Durable Object storage is no longer accessible.";
    /// §2.3: a flush failed in a way that is not the application's (reset).
    pub fn storage_write_internal(reference: &str) -> String {
        format!("Internal error in Durable Object storage write caused object to be reset; reference = {reference}")
    }
    /// §2.3: a deleteAll failed in a way that is not the application's (reset).
    pub fn delete_all_internal(reference: &str) -> String {
        format!("Internal error in Durable Object storage deleteAll() caused object to be reset; reference = {reference}")
    }
    /// §1.4: an output lock held for more than 30 s (overloaded, reset).
    pub const STORAGE_TIMEOUT: &str =
        "Durable Object storage operation exceeded timeout which caused object to be reset.";
    /// §1.3: a running critical section was dropped without succeeding (the input gate breaks).
    pub const CRITICAL_SECTION_DEADLOCK: &str = "A critical section within this Durable Object awaited a Promise that apparently will never complete. This could happen in particular if a critical section awaits a task that was initiated outside of the critical section. Since a critical section blocks all other tasks from completing, this leads to deadlock.";
    /// §1.3: `blockConcurrencyWhile()` nested deeper than 64.
    pub const BLOCK_CONCURRENCY_NESTED_TOO_DEEPLY: &str =
        "blockConcurrencyWhile() calls are nested too deeply.";
    /// §2.8: the cache over its hard limit (overloaded, reset).
    pub const CACHE_OVER_HARD_LIMIT: &str = "Durable Object's isolate exceeded its memory limit due to overflowing the storage cache. This could be due to writing too many values to storage without stopping to wait for writes to complete, or due to reading too many values in a single operation (e.g. a large list()). All objects in the isolate were reset.";
    /// §0: any other error that is not the application's, as the application sees it.
    pub fn internal_error(reference: &str) -> String {
        format!("internal error; reference = {reference}")
    }
    /// §6.2: a DISCONNECTED error shown to the caller (retryable).
    pub const NETWORK_CONNECTION_LOST: &str = "Network connection lost.";
    /// §9: a binding to a class that no applied migration created.
    pub fn binding_to_unconfigured_class(class: &str) -> String {
        format!("Cannot create binding for class '{class}' because it is not currently configured to implement Durable Objects. Ensure a --new-class migration has been applied to it. [code: 10061]")
    }
    /// §9: a `deleted_classes` entry for a class that a binding still references.
    pub fn delete_bound_class(class: &str) -> String {
        format!("Cannot apply --delete-class migration to class '{class}' without also removing the binding that references it.")
    }
    // The spec fixes no text for the other deploy errors; these follow the style of Cloudflare's (the
    // directive as a wrangler flag, the class in quotes) and name the class, script or tag at fault.
    /// §9: the directive `new_classes`, as named in deploy errors.
    pub const NEW_CLASS: &str = "--new-class";
    /// §9: the directive `new_sqlite_classes`, as named in deploy errors.
    pub const NEW_SQLITE_CLASS: &str = "--new-sqlite-class";
    /// §9: the directive `renamed_classes`, as named in deploy errors.
    pub const RENAME_CLASS: &str = "--rename-class";
    /// §9: the directive `transferred_classes`, as named in deploy errors.
    pub const TRANSFER_CLASS: &str = "--transfer-class";
    /// §9: creating (`directive` is [`NEW_CLASS`] or [`NEW_SQLITE_CLASS`]) a class that already exists.
    pub fn new_class_exists(directive: &str, class: &str) -> String {
        format!("Cannot apply {directive} migration to class '{class}' because it already exists.")
    }
    /// §9: `new_sqlite_classes` on an existing KV-backend class.
    pub fn new_sqlite_class_on_kv_class(class: &str) -> String {
        format!("Cannot apply --new-sqlite-class migration to class '{class}' because it already exists with the key-value storage backend. The SQLite backend can only be chosen when a class is created; an existing class cannot be converted.")
    }
    /// §9: a rename or transfer (`directive`) whose source class does not exist in `script`.
    pub fn migration_source_missing(directive: &str, class: &str, script: &str) -> String {
        format!("Cannot apply {directive} migration from class '{class}' because script '{script}' has no such class.")
    }
    /// §9: a rename or transfer (`directive`) to a class that already exists.
    pub fn migration_destination_exists(directive: &str, class: &str) -> String {
        format!("Cannot apply {directive} migration to class '{class}' because it already exists.")
    }
    /// §9: a rename or transfer (`directive`) to a class the Worker does not export.
    pub fn migration_destination_not_exported(directive: &str, class: &str) -> String {
        format!("Cannot apply {directive} migration to class '{class}' because the new version of the script does not export it.")
    }
    /// §9: a transfer whose `from_script` is the script being deployed.
    pub fn transfer_within_script(class: &str, script: &str) -> String {
        format!("Cannot apply --transfer-class migration from class '{class}' of script '{script}' to the same script; use --rename-class instead.")
    }
    /// §9: a `deleted_classes` entry for a class that does not exist.
    pub fn delete_missing_class(class: &str) -> String {
        format!("Cannot apply --delete-class migration to class '{class}' because it does not exist.")
    }
    /// §9: a migration with an empty tag.
    pub const MIGRATION_TAG_EMPTY: &str = "Migration tags must not be empty.";
    /// §9: two migrations with the same tag.
    pub fn migration_tag_duplicate(tag: &str) -> String {
        format!("Migration tag '{tag}' appears more than once; migration tags must be unique.")
    }
    /// §9: a deploy without migrations of a script that has applied `last_tag`.
    pub fn migrations_required(script: &str, last_tag: &str) -> String {
        format!("Script '{script}' has applied migration tag '{last_tag}', so every later deploy must include its migrations.")
    }
    /// §9: the migrations list does not begin with the tags already applied (`found` is the tag at
    /// `position`, counted from 0 and shown from 1; `None` past the end of the list).
    pub fn applied_tags_mismatch(script: &str, tag: &str, position: usize, found: Option<&str>) -> String {
        let found = found.map_or_else(|| "the end of the list".to_owned(), |f| format!("tag '{f}'"));
        let number = position + 1;
        format!("Migration tag '{tag}' was applied to script '{script}' as migration number {number}, but the migrations list has {found} there. Applied migrations cannot be removed or reordered.")
    }
    /// §8: `idFromString` of anything but 64 hex digits (TypeError).
    pub const INVALID_OBJECT_ID: &str = "Invalid Durable Object ID: must be 64 hex digits";
    /// §8: `idFromString` of an id whose mac does not match this namespace (TypeError).
    pub const OBJECT_ID_NOT_FOR_NAMESPACE: &str = "Durable Object ID is not valid for this namespace.";
    /// §8: an unknown jurisdiction name (TypeError). The spec fixes no text; this names the value and the
    /// allowed ones.
    pub fn invalid_jurisdiction(value: &str) -> String {
        format!("Invalid jurisdiction: \"{value}\". Expected one of \"eu\", \"fedramp\", \"fedramp-high\", \"us\".")
    }
    /// §8: `get` on a jurisdictional sub-namespace with an id of another jurisdiction (TypeError).
    pub const JURISDICTION_MISMATCH: &str =
        "get called on jurisdictional subnamespace with an ID from a different jurisdiction";
    /// §8: a `routingMode` other than `primary-only` (RangeError).
    pub fn unknown_routing_mode(mode: &str) -> String {
        format!("unknown routingMode: {mode}")
    }
    /// §8: a `locationHint` outside the documented list (RangeError). The spec fixes no text; this follows
    /// the routing-mode message.
    pub fn unknown_location_hint(hint: &str) -> String {
        format!("unknown locationHint: {hint}")
    }
    /// `Env::durable_object` of a name the script does not bind (ours; workers-rs reports a missing binding
    /// the same way).
    pub fn unknown_binding(name: &str) -> String {
        format!("Binding '{name}' is undefined.")
    }
    /// §6.1: too many requests queued at one object (overloaded).
    pub const OVERLOADED_TOO_MANY_QUEUED: &str = "Durable Object is overloaded. Too many requests queued.";
    /// §6.1: too many bytes of requests queued at one object (overloaded).
    pub const OVERLOADED_TOO_MUCH_DATA: &str = "Durable Object is overloaded. Too much data queued.";
    /// §6.1: the oldest queued request waited too long (overloaded).
    pub const OVERLOADED_QUEUED_TOO_LONG: &str =
        "Durable Object is overloaded. Requests queued for too long.";
    /// §6.1: extreme overload (overloaded).
    pub const OVERLOADED_WINDOW: &str =
        "Durable Object is overloaded. Too many requests for the same object within a 10 second window.";
    /// §6.2, §10: `ctx.abort()` without a reason (reset).
    pub const ABORTED: &str = "Application called abort() to reset Durable Object.";
    /// §6.2: the instance was shut down under a caller (retry with a new stub).
    pub const INSTANCE_NO_LONGER_ACTIVE: &str =
        "Connection closed: this Durable Object instance is no longer active. Reconnect or retry the request.";
    /// §6.2, §7: the instance was replaced by a code update (reset).
    pub const CODE_UPDATED: &str = "Durable Object reset because its code was updated.";
    /// §10: `blockConcurrencyWhile()` over its 30 s limit (overloaded, reset).
    pub const BLOCK_CONCURRENCY_TIMEOUT: &str = "A call to blockConcurrencyWhile() in a Durable Object waited for too long. The call was canceled and the Durable Object was reset.";
    /// `block_concurrency_while` called outside any event of the object (ours: on Cloudflare every call is
    /// inside one).
    pub const BLOCK_CONCURRENCY_OUTSIDE_EVENT: &str =
        "blockConcurrencyWhile() can only be called from within an event of this Durable Object.";
    /// §4: an alarm handler over its 15 min limit (overloaded, reset).
    pub const ALARM_TIMEOUT: &str = "Alarm exceeded its allowed execution time";
    /// §2.3: how [`storage_write_internal`] messages start.
    pub const STORAGE_WRITE_INTERNAL_PREFIX: &str = "Internal error in Durable Object storage write";

    // WebSockets (spec §5.2; workerd `api/web-socket.c++`, `api/actor-state.c++`,
    // `io/legacy-hibernation-manager.c++`).

    /// §5.2: `acceptWebSocket` on a socket already accepted with `accept()` (or accepted before).
    pub const WS_ALREADY_ACCEPTED: &str =
        "Cannot call `acceptWebSocket()` if the WebSocket was already accepted via `accept()`";
    /// §5.2: `acceptWebSocket` on a socket whose pair was accepted or used in a response.
    pub const WS_PAIR_USED: &str = "Cannot call `acceptWebSocket()` on this WebSocket because its pair has already been accepted or used in a Response.";
    /// §5.2: more than 10 tags on one socket.
    pub const WS_TOO_MANY_TAGS: &str = "a Hibernatable WebSocket cannot have more than 10 tags";
    /// §5.2: more sockets than an object may accept.
    pub const WS_TOO_MANY_SOCKETS: &str =
        "only 32768 websockets can be accepted on a single Durable Object instance";
    /// §5.2: `getTags` on a socket not accepted with `acceptWebSocket`.
    pub const WS_TAGS_NOT_ACCEPTED: &str =
        "you must call 'acceptWebSocket()' before attempting to access the tags of a WebSocket.";
    /// §5.2: `getTags` on a socket accepted with `accept()`.
    pub const WS_TAGS_NOT_HIBERNATABLE: &str = "only hibernatable websockets can have tags.";
    /// §5.2: the event timeout over its 7-day limit.
    pub const WS_EVENT_TIMEOUT_TOO_LONG: &str = "Event timeout should not exceed 604800000 ms.";
    /// §5.2: a hibernatable event handler ran past the event timeout (retryable, reset).
    pub const WS_EVENT_TIMEOUT: &str = "Actor exceeded event execution time and was disconnected.";
    /// §5.2: a disconnect without a Close frame, as the close reason of code 1006.
    pub const WS_DISCONNECTED: &str = "WebSocket disconnected without sending Close frame.";
    /// `send()` after `close()` (TypeError).
    pub const WS_SEND_AFTER_CLOSE: &str = "Can't call WebSocket send() after close().";
    /// `send()` or `close()` on a socket never accepted (TypeError).
    pub const WS_NOT_ACCEPTED: &str =
        "You must call one of accept() or state.acceptWebSocket() on this WebSocket before sending messages.";
    /// `accept()` after `acceptWebSocket()` (TypeError).
    pub const WS_ACCEPT_AFTER_HIBERNATION: &str = "Can't accept() WebSocket after enabling hibernation.";
    /// `accept()` on a socket used in a response (TypeError).
    pub const WS_ACCEPT_USED_IN_RESPONSE: &str =
        "Can't accept() WebSocket that was already used in a response.";
    /// A close reason over 123 bytes (DOMException SyntaxError).
    pub const WS_CLOSE_REASON_TOO_LONG: &str =
        "WebSocket close reason must not be longer than 123 bytes when UTF-8 encoded.";

    /// §5.2: an attachment over 16,384 bytes serialized (workerd's text, with its missing space).
    pub fn ws_attachment_too_large(size: usize) -> String {
        format!("A WebSocket 'attachment' cannot be larger than 16384 bytes.'attachment' was {size} bytes.")
    }

    /// §5.2: a tag over 256 characters.
    pub fn ws_tag_too_long(tag: &str) -> String {
        format!("\"{tag}\" is longer than the max tag length (256 characters).")
    }

    /// §5.2: an auto-response request over 2,048 bytes (RangeError).
    pub fn ws_auto_request_too_large(size: usize) -> String {
        format!("Request cannot be larger than 2048 bytes. A request of size {size} was provided.")
    }

    /// §5.2: an auto-response response over 2,048 bytes (RangeError).
    pub fn ws_auto_response_too_large(size: usize) -> String {
        format!("Response cannot be larger than 2048 bytes. A response of size {size} was provided.")
    }

    /// A close code the standard does not let an application send (DOMException InvalidAccessError).
    pub fn ws_invalid_close_code(code: u16) -> String {
        format!("Invalid WebSocket close code: {code}.")
    }

    /// §5.2: a received message over 32 MiB (kj's protocol error, as workerd reports it to the socket's
    /// error handler; the peer gets close code 1009).
    pub fn ws_message_too_large(size: usize, max: usize) -> String {
        format!(
            "WebSocket protocol error; protocolError.statusCode = 1009; protocolError.description = Message is too large: {size} > {max}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_independent_and_display_is_javascripts() {
        let e = Error::range_error(messages::key_too_large(2049)).with_reset();
        assert_eq!(
            e.to_string(),
            "RangeError: Keys cannot be larger than 2048 bytes. A key of size 2049 was provided."
        );
        assert_eq!(e.kind(), ErrorKind::RangeError);
        assert!(e.durable_object_reset() && !e.retryable() && !e.overloaded() && !e.remote());
        let e = Error::new(messages::STORAGE_NO_LONGER_ACCESSIBLE).with_retryable().with_reset();
        assert!(e.retryable() && e.durable_object_reset());
        assert_eq!(e.message(), "Durable Object storage is no longer accessible.");
    }
}
