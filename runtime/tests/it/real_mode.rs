//! The runtime outside the simulation: a host on tokio (a current-thread runtime with a `LocalSet`), its
//! objects' databases in real SQLite files, the same object code as under simulation.

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use dosim_runtime::embed::{
    DatabaseLocation, DurabilityWait, DurableOnReturn, Entropy, Host, ManualClock, Migration, StorageProvider,
};
use dosim_runtime::prelude::*;

/// Object databases as files under a directory.
struct Files(PathBuf);

impl StorageProvider for Files {
    fn object_database(&self, namespace_uid: &str, id: &ObjectId) -> DatabaseLocation {
        let dir = self.0.join(namespace_uid.replace(':', "."));
        std::fs::create_dir_all(&dir).expect("a writable test directory");
        DatabaseLocation::file(dir.join(format!("{id}.db")))
    }
    fn alarm_index(&self) -> DatabaseLocation {
        DatabaseLocation::file(self.0.join("alarms.db"))
    }
    fn durability(&self) -> Arc<dyn DurabilityWait> {
        // COMMIT with synchronous=FULL returned: the data is on disk.
        Arc::new(DurableOnReturn)
    }
    fn delete_namespace(&self, namespace_uid: &str) -> Result<(), Error> {
        let _ = std::fs::remove_dir_all(self.0.join(namespace_uid.replace(':', ".")));
        Ok(())
    }
    fn list_objects(&self, namespace_uid: &str) -> Result<Vec<String>, Error> {
        let dir = self.0.join(namespace_uid.replace(':', "."));
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::new(format!("list {}: {e}", dir.display()))),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::new(format!("list {}: {e}", dir.display())))?;
            if let Some(id) = entry.file_name().to_str().and_then(|n| n.strip_suffix(".db")) {
                ids.push(id.to_string());
            }
        }
        Ok(ids)
    }
}

/// Deterministic bytes, for a test.
struct Counting(Cell<u8>);

impl Entropy for Counting {
    fn fill(&self, buf: &mut [u8]) {
        for b in buf {
            self.0.set(self.0.get().wrapping_add(1));
            *b = self.0.get();
        }
    }
}

struct Counter {
    state: State,
}

impl DurableObject for Counter {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        Ok(Counter { state })
    }
    async fn fetch(&self, request: Request) -> Result<Response, Error> {
        let storage = self.state.storage();
        let mut value: i64 = storage.get("value").await?.unwrap_or(0);
        if request.path() == "/increment" {
            value += 1;
            storage.put("value", &value).await?;
        }
        Ok(Response::ok(value.to_string()))
    }
}

fn dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("real-mode").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn host(dir: &std::path::Path, migration: Migration) -> Host {
    Host::builder("worker")
        .class::<Counter>("Counter")
        .binding("COUNTER", "Counter")
        .migration(migration)
        .storage(Files(dir.to_path_buf()))
        .clock(Arc::new(ManualClock::new(1_700_000_000_000)))
        .entropy(Counting(Cell::new(0)))
        .build()
        .expect("deploys")
}

fn run_local<F: std::future::Future>(f: F) -> F::Output {
    let rt = madsim_tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    madsim_tokio::task::LocalSet::new().block_on(&rt, f)
}

fn concurrent_increments_persist(name: &str, migration: fn() -> Migration) {
    let d = dir(name);
    let value = run_local(async {
        let host = host(&d, migration());
        let stub = Rc::new(host.env().durable_object("COUNTER").unwrap().get_by_name("c"));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let s = stub.clone();
            tasks.push(madsim_tokio::task::spawn_local(
                async move { s.fetch(Request::get("/increment")).await },
            ));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().status(), 200);
        }
        stub.fetch(Request::get("/")).await.unwrap().text().unwrap()
    });
    assert_eq!(value, "50");
    // A new host (a new process, say) on the same files sees the data.
    let again = run_local(async {
        let host = host(&d, migration());
        host.env()
            .durable_object("COUNTER")
            .unwrap()
            .get_by_name("c")
            .fetch(Request::get("/"))
            .await
            .unwrap()
            .text()
    });
    assert_eq!(again.unwrap(), "50");
}

#[test]
fn sqlite_backend_counter_on_files() {
    concurrent_increments_persist("sqlite", || Migration {
        tag: "v1".into(),
        new_sqlite_classes: vec!["Counter".into()],
        ..Migration::default()
    });
}

#[test]
fn kv_backend_counter_on_files() {
    concurrent_increments_persist("kv", || Migration {
        tag: "v1".into(),
        new_classes: vec!["Counter".into()],
        ..Migration::default()
    });
}

fn sqlite_migration() -> Migration {
    Migration { tag: "v1".into(), new_sqlite_classes: vec!["Counter".into()], ..Migration::default() }
}

/// Two hosts given one directory would write the same databases: the second is refused at build, naming the
/// database, while the first keeps serving; once the first is gone (and the reset before it), its files are
/// free again.
#[test]
fn two_hosts_on_one_directory_are_refused_naming_the_database() {
    let d = dir("two-hosts");
    let (refused, served) = run_local(async {
        let first = host(&d, sqlite_migration());
        let stub = first.env().durable_object("COUNTER").unwrap().get_by_name("c");
        stub.fetch(Request::get("/increment")).await.unwrap();
        let second = Host::builder("worker")
            .class::<Counter>("Counter")
            .binding("COUNTER", "Counter")
            .migration(sqlite_migration())
            .storage(Files(d.clone()))
            .clock(Arc::new(ManualClock::new(1_700_000_000_000)))
            .entropy(Counting(Cell::new(0)))
            .build()
            .err();
        let served = stub.fetch(Request::get("/increment")).await.unwrap().text().unwrap();
        (second, served)
    });
    let e = refused.expect("a second host on the same files is refused");
    assert!(
        e.message().contains("alarms.db") && e.message().contains("in use by another connection"),
        "the error names the database and the cause: {}",
        e.message()
    );
    assert!(!e.retryable(), "a misconfiguration is not retryable");
    assert_eq!(served, "2", "the first host keeps serving");
}

/// A reset closes the object's database at once, so its next instance opens it (the connection holds the
/// database's exclusive lock: one that outlived its instance would lock the next one out).
fn after_a_reset_the_next_instance_opens_the_database(name: &str, migration: Migration) {
    let d = dir(name);
    let value = run_local(async {
        let host = host(&d, migration);
        let ns = host.env().durable_object("COUNTER").unwrap();
        let id = ns.id_from_name("c");
        ns.get(&id).unwrap().fetch(Request::get("/increment")).await.unwrap();
        assert!(host.reset("COUNTER", &id, Error::new("reset by the test")).unwrap(), "the object was live");
        ns.get(&id).unwrap().fetch(Request::get("/increment")).await.unwrap().text().unwrap()
    });
    assert_eq!(value, "2");
}

#[test]
fn sqlite_backend_after_a_reset_the_next_instance_opens_the_database() {
    after_a_reset_the_next_instance_opens_the_database("reset-reopen-sqlite", sqlite_migration());
}

#[test]
fn kv_backend_after_a_reset_the_next_instance_opens_the_database() {
    let kv = Migration { tag: "v1".into(), new_classes: vec!["Counter".into()], ..Migration::default() };
    after_a_reset_the_next_instance_opens_the_database("reset-reopen-kv", kv);
}

/// The test hooks in real mode: `object_ids` lists the objects with a database file, sorted; `run_in_object`
/// sees an object's state and its writes persist.
#[test]
fn object_ids_and_run_in_object_on_files() {
    let d = dir("hooks");
    let (ids, expected, read) = run_local(async {
        let host = host(&d, sqlite_migration());
        let ns = host.env().durable_object("COUNTER").unwrap();
        let mut expected = Vec::new();
        for name in ["a", "b", "c"] {
            ns.get_by_name(name).fetch(Request::get("/increment")).await.unwrap();
            expected.push(ns.id_from_name(name));
        }
        expected.sort_by_key(|id| id.to_string());
        let id = ns.id_from_name("b");
        host.run_in_object::<Counter, _>("COUNTER", &id, async |_c, state| {
            state.storage().put("value", &41i64).await
        })
        .await
        .unwrap()
        .unwrap();
        let read = ns.get_by_name("b").fetch(Request::get("/increment")).await.unwrap().text().unwrap();
        (host.object_ids("COUNTER").unwrap(), expected, read)
    });
    assert_eq!(ids, expected);
    assert_eq!(read, "42");
}

/// An echo room on hibernatable WebSockets: a member's message goes to every other member, stored first.
struct Echo {
    state: State,
}

impl DurableObject for Echo {
    async fn new(state: State, _env: Env) -> Result<Self, Error> {
        Ok(Echo { state })
    }

    async fn fetch(&self, _request: Request) -> Result<Response, Error> {
        let pair = WebSocketPair::new()?;
        self.state.accept_web_socket(&pair.server, &["member"])?;
        Response::from_websocket(pair.client)
    }

    async fn websocket_message(&self, ws: WebSocket, message: WebSocketIncomingMessage) -> Result<(), Error> {
        let WebSocketIncomingMessage::String(text) = message else { return Ok(()) };
        let n: i64 = self.state.storage().get("n").await?.unwrap_or(0) + 1;
        self.state.storage().put("n", &n).await?;
        for member in self.state.get_web_sockets(Some("member")) {
            if member != ws {
                member.send_with_str(format!("{n} {text}"))?;
            }
        }
        Ok(())
    }
}

/// WebSockets run for real too: on tokio, with the object's storage in a SQLite file; a message reaches
/// the other member only after its write is stored (the output gate), and the write is there for the next
/// host on the same files.
#[test]
fn websockets_on_tokio_with_files() {
    let d = dir("websockets");
    let build = |d: &std::path::Path| {
        Host::builder("worker")
            .class::<Echo>("Echo")
            .binding("ECHO", "Echo")
            .migration(Migration {
                tag: "v1".into(),
                new_sqlite_classes: vec!["Echo".into()],
                ..Migration::default()
            })
            .storage(Files(d.to_path_buf()))
            .clock(Arc::new(ManualClock::new(1_700_000_000_000)))
            .entropy(Counting(Cell::new(0)))
            .build()
            .expect("deploys")
    };
    let got = run_local(async {
        let host = build(&d);
        let stub = host.env().durable_object("ECHO").unwrap().get_by_name("room");
        let join = || Request::get("/").with_header("Upgrade", "websocket");
        let a = stub.fetch(join()).await.unwrap().websocket().expect("a 101 with an end");
        let b = stub.fetch(join()).await.unwrap().websocket().expect("a 101 with an end");
        a.accept().unwrap();
        b.accept().unwrap();
        a.send_with_str("hello").unwrap();
        let event = b.next_event().await.expect("b hears a");
        a.close(Some(1000), Some("bye")).unwrap();
        (event, a.next_event().await)
    });
    assert_eq!(got.0, WebSocketEvent::Message(WebSocketIncomingMessage::String("1 hello".into())));
    assert!(
        matches!(&got.1, Some(WebSocketEvent::Close(c)) if c.code == 1000 && c.reason == "bye" && c.was_clean),
        "the room's runtime answered the close: {:?}",
        got.1
    );
    let stored = run_local(async {
        let host = build(&d);
        let ns = host.env().durable_object("ECHO").unwrap();
        let id = ns.id_from_name("room");
        // Read through a fresh object: `n` was committed before the message left.
        host.run_in_object::<Echo, _>("ECHO", &id, async |_echo, state| state.storage().get::<i64>("n").await)
            .await
    });
    assert_eq!(stored.unwrap().unwrap(), Some(1));
}
