//! Demo scenario `sqlite-power-cut`: bank transfers in SQLite on `SimDisk` under power cuts.
//!
//! A bank node keeps ten accounts in SQLite (opened through the runtime's own database code, on the
//! simulation's VFS). It makes transfers one transaction at a time and, once a commit has returned and its disk
//! time has passed, acknowledges the transfer's sequence number to a client node. Faults, drawn per seed: power
//! cuts armed at random disk-operation indices (so they land inside commits), power cuts and crashes at random
//! times, and rare I/O errors and full-disk errors; the journal mode (rollback or WAL) is drawn too.
//!
//! Checked at every boot: `PRAGMA integrity_check` is ok and the balances sum to the initial total (a panic,
//! reported with the seed, otherwise). Checked at the end: every acknowledged transfer is in the database.

use std::time::Duration;

use dosim_runtime::embed::{DatabaseLocation, Journal};
use dosim_sim::net::Endpoint;
use dosim_sim::{
    disk, ensure, Addr, DiskConfig, DiskFaultKind, Failure, FaultKind, FaultPlan, NodeConfig, NodeId,
    Purpose, RandomFaults, Ratio, RunFailure, RunReport, Seed, Sim, SimRng,
};
use rusqlite::Connection;

const BANK: NodeId = NodeId(0);
const CLIENT: NodeId = NodeId(1);
const PORT: u16 = 20;
const ACCOUNTS: i64 = 10;
const INITIAL_BALANCE: i64 = 100;
const TRANSFERS: i64 = 120;
const DB_PATH: &str = "bank.db";
/// How `PRAGMA integrity_check` reports a page it could not read (an I/O error, not corruption).
const INTEGRITY_IO_FAILURE: &str = "unable to get the page. error code=";
/// Wait between attempts to open the database after a disk error.
const REOPEN_BACKOFF: Duration = Duration::from_millis(10);

fn location(journal: Journal) -> DatabaseLocation {
    dosim_sim::sqlite::register_vfs();
    DatabaseLocation::on_vfs(dosim_sim::sqlite::VFS_NAME, DB_PATH).journal(journal)
}

/// Opens the database, creating the accounts on first boot, and checks its invariants.
///
/// # Panics
/// If the database is corrupt or the balances do not add up: a broken invariant of crash consistency.
fn open_and_check(journal: Journal) -> Result<Connection, String> {
    let conn = location(journal).open().map_err(|e| e.to_string())?;
    check(&conn).map_err(|e| e.to_string())?;
    Ok(conn)
}

fn check(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS account(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS log(seq INTEGER PRIMARY KEY, src INTEGER, dst INTEGER, amount INTEGER);",
    )?;
    let n: i64 = conn.query_row("SELECT count(*) FROM account", [], |r| r.get(0))?;
    if n == 0 {
        let tx = conn.unchecked_transaction()?;
        for id in 0..ACCOUNTS {
            tx.execute("INSERT INTO account VALUES (?1, ?2)", [id, INITIAL_BALANCE])?;
        }
        tx.commit()?;
    }
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if integrity.contains(INTEGRITY_IO_FAILURE) {
        // The check could not read a page (an injected EIO, or the power went out during the check): that
        // says nothing about corruption. Fail the open; it is retried.
        dosim_sim::sometimes("integrity check hit an I/O error");
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
            Some(integrity),
        ));
    }
    assert_eq!(integrity, "ok", "bank database is corrupt after restart");
    let (count, sum): (i64, i64) =
        conn.query_row("SELECT count(*), sum(balance) FROM account", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    assert_eq!(count, ACCOUNTS, "accounts lost");
    assert_eq!(sum, ACCOUNTS * INITIAL_BALANCE, "balances do not add up: a transfer was half-applied");
    Ok(())
}

fn applied(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT count(*) FROM log", [], |r| r.get(0))
}

/// One transfer as one transaction. The sequence number is the log's next row.
fn transfer(conn: &Connection, rng: &mut SimRng) -> rusqlite::Result<i64> {
    let tx = conn.unchecked_transaction()?;
    let seq = applied(&tx)? + 1;
    let src = rng.below(ACCOUNTS as u64) as i64;
    let dst = (src + 1 + rng.below(ACCOUNTS as u64 - 1) as i64) % ACCOUNTS;
    let balance: i64 = tx.query_row("SELECT balance FROM account WHERE id = ?1", [src], |r| r.get(0))?;
    let amount = rng.between(0, balance.max(0) as u64) as i64;
    tx.execute("UPDATE account SET balance = balance - ?2 WHERE id = ?1", [src, amount])?;
    tx.execute("UPDATE account SET balance = balance + ?2 WHERE id = ?1", [dst, amount])?;
    tx.execute("INSERT INTO log VALUES (?1, ?2, ?3, ?4)", [seq, src, dst, amount])?;
    tx.commit()?;
    Ok(seq)
}

/// Opens the database, retrying after disk errors (an injected EIO passes; a power cut ends this task).
async fn open_retrying(journal: Journal) -> Connection {
    loop {
        let r = open_and_check(journal);
        disk::settle().await;
        match r {
            Ok(c) => return c,
            Err(e) => {
                dosim_sim::sometimes("database open failed and was retried");
                dosim_sim::note("bank open failed", e);
                madsim::time::sleep(REOPEN_BACKOFF).await;
            }
        }
    }
}

async fn bank(journal: Journal, seed: Seed) {
    let ep = Endpoint::bind(PORT).expect("bank port is free at boot");
    let client = Addr { node: CLIENT, port: PORT };
    let mut conn = open_retrying(journal).await;
    let boot_applied = applied(&conn).unwrap_or(-1);
    dosim_sim::note("bank boot", format!("applied={boot_applied}"));
    // The workload stream is offset by what is applied, so a restart does not replay the same transfers.
    let mut rng = SimRng::new(seed.nth(boot_applied.max(0) as u64 + 1), Purpose::Workload);
    loop {
        match applied(&conn) {
            Ok(n) if n >= TRANSFERS => break,
            _ => {}
        }
        match transfer(&conn, &mut rng) {
            Ok(seq) => {
                disk::settle().await;
                ep.send(client, seq.to_le_bytes().to_vec());
            }
            Err(e) => {
                dosim_sim::sometimes("transfer failed: reopened the database");
                dosim_sim::note("transfer failed", e);
                disk::settle().await;
                drop(conn);
                conn = open_retrying(journal).await;
            }
        }
        madsim::time::sleep(Duration::from_millis(rng.between(1, 20))).await;
    }
    dosim_sim::note("bank done", TRANSFERS);
    // Let go of the database (and its exclusive lock), so the checker can open it.
    drop(conn);
    std::future::pending::<()>().await;
}

/// Collects acknowledgements; returns the highest acknowledged sequence number once `stop` passes.
async fn client(listen_for: Duration) -> i64 {
    let mut ep = Endpoint::bind(PORT).expect("client port");
    let mut max_acked = 0;
    let deadline = madsim::time::Instant::now() + listen_for;
    while let Ok(d) =
        madsim::time::timeout(deadline.saturating_duration_since(madsim::time::Instant::now()), ep.recv())
            .await
    {
        if let Ok(b) = <[u8; 8]>::try_from(d.payload.as_slice()) {
            max_acked = max_acked.max(i64::from_le_bytes(b));
        }
    }
    max_acked
}

/// Per-seed choices: journal mode, fault mix (swarm testing).
fn plan(seed: Seed) -> (Journal, FaultPlan, DiskConfig) {
    let mut rng = SimRng::new(seed, Purpose::Faults);
    let journal = if rng.below(2) == 0 { Journal::Delete } else { Journal::Wal };
    let mut plan = FaultPlan::none().restart_after_power_cut(Duration::from_millis(rng.between(10, 500)));
    for _ in 0..rng.between(1, 4) {
        plan = plan.disk_fault_at(BANK, rng.between(1, 3000), DiskFaultKind::PowerCut);
    }
    let kinds: Vec<FaultKind> =
        [FaultKind::Crash, FaultKind::PowerCut].into_iter().filter(|_| rng.below(2) == 1).collect();
    if !kinds.is_empty() {
        let random = RandomFaults::new(
            kinds,
            Duration::from_millis(rng.between(200, 2000)),
            Duration::from_millis(500),
        )
        .expect("crash and power cut are random kinds")
        .spare([CLIENT]);
        plan = plan.random(random);
    }
    let disk = DiskConfig {
        io_error_rate: if rng.below(3) == 0 { Ratio::new(1, 400) } else { Ratio::NEVER },
        full_rate: if rng.below(3) == 0 { Ratio::new(1, 300) } else { Ratio::NEVER },
        ..DiskConfig::default()
    };
    (journal, plan, disk)
}

/// Runs the scenario for one seed.
pub(crate) fn run(seed: Seed) -> Result<RunReport, RunFailure> {
    let (journal, plan, disk) = plan(seed);
    let sim = Sim::builder()
        .seed(seed)
        .node(NodeConfig::new("bank").program(move || bank(journal, seed)))
        .node(NodeConfig::new("client"))
        .disk(disk)
        .faults(plan)
        .build()?;
    sim.run(move |world| async move {
        dosim_sim::note("journal", format!("{journal:?}"));
        let max_acked = world
            .spawn_on(CLIENT, client(Duration::from_secs(20)))?
            .await
            .map_err(|e| Failure::new(e.to_string()))?;
        world.stop_faults();
        // Give the bank time to boot and finish, then read what it holds.
        world.sleep(Duration::from_secs(5)).await;
        let (count, done) = world
            .spawn_on(BANK, async move {
                let conn = open_retrying(journal).await;
                let n = applied(&conn).expect("log is readable");
                (n, n >= TRANSFERS)
            })?
            .await
            .map_err(|e| Failure::new(e.to_string()))?;
        dosim_sim::note("final", format!("applied={count} max_acked={max_acked}"));
        ensure!(
            count >= max_acked,
            "acknowledged transfers lost: {count} applied < {max_acked} acknowledged"
        );
        ensure!(done, "the bank did not finish its {TRANSFERS} transfers: {count} applied");
        Ok(())
    })
}
