//! Demo scenario `sqlite-power-cut`: bank transfers in SQLite on `SimDisk` under power cuts.
//!
//! A bank node keeps ten accounts in SQLite (opened through the runtime's own database code, on the
//! simulation's VFS). It makes transfers one transaction at a time, each under a fresh random id, and, once a
//! commit has returned and its disk time has passed, acknowledges the transfer's id to a client node. Faults,
//! drawn per seed ([`Options`]): power cuts armed at random disk-operation indices (so they land inside
//! commits), power cuts and crashes at random times, and rare I/O errors and full-disk errors; the journal
//! mode (rollback or WAL) and the number of transfers are drawn too.
//!
//! Checked at every boot: `PRAGMA integrity_check` is ok and the balances sum to the initial total (a broken
//! invariant, reported with the seed, otherwise). Checked at the end: every acknowledged transfer is in the
//! ledger exactly once, by its id (a transfer lost and redone gets a new id, so the redo does not hide the
//! loss), and the bank finished its transfers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dosim_runtime::embed::{DatabaseLocation, Journal};
use dosim_sim::net::Endpoint;
use dosim_sim::{
    disk, ensure, ensure_live, Addr, DiskConfig, DiskFaultKind, Failure, FaultKind, FaultPlan, NodeConfig,
    NodeId, Purpose, RandomFaults, Ratio, RunFailure, RunOptions, RunReport, Seed, Sim, SimRng,
};
use rusqlite::Connection;

use crate::list;

const BANK: NodeId = NodeId(0);
const CLIENT: NodeId = NodeId(1);
const PORT: u16 = 20;
const ACCOUNTS: i64 = 10;
const INITIAL_BALANCE: i64 = 100;
const DB_PATH: &str = "bank.db";
/// How `PRAGMA integrity_check` reports a page it could not read (an I/O error, not corruption).
const INTEGRITY_IO_FAILURE: &str = "unable to get the page. error code=";
/// Wait between attempts to open the database after a disk error.
const REOPEN_BACKOFF: Duration = Duration::from_millis(10);
/// The longest outage of a random crash or power cut.
const RANDOM_MAX_OUTAGE: Duration = Duration::from_millis(500);
/// How long the client listens for acknowledgements, from the start of the run.
const LISTEN_FOR: Duration = Duration::from_secs(20);
/// How long the bank has to finish once the faults stop.
const FINISH_WITHIN: Duration = Duration::from_secs(5);

/// What one run of the scenario does, derived from its seed by [`Options::from_seed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Options {
    /// Rollback journal or WAL.
    journal: Journal,
    /// How long the bank stays down after a power cut armed at a disk operation.
    restart_after_power_cut: Duration,
    /// The bank's disk operations at which its power is cut (1 to 4 of them: they land inside commits).
    power_cuts_at_disk_ops: Vec<u64>,
    /// Random faults of the bank: any subset of crash and power cut, possibly none.
    fault_kinds: Vec<FaultKind>,
    /// The mean time between random faults.
    fault_mean_interval: Duration,
    /// The rate of I/O errors of the disk until the faults stop.
    disk_io_error_rate: Ratio,
    /// The rate of full-disk errors of writes until the faults stop.
    disk_full_rate: Ratio,
    /// How many transfers the bank makes.
    transfers: i64,
}

impl Options {
    /// The options of `seed`, one labelled stream per subsystem ([`SimRng::substream`]): adding a draw to one
    /// subsystem never shifts another's, and none is a stream the run itself draws from.
    pub(crate) fn from_seed(seed: Seed) -> Options {
        let mut journal = SimRng::substream(seed, "journal");
        let journal = if journal.below(2) == 0 { Journal::Delete } else { Journal::Wal };
        let mut restarts = SimRng::substream(seed, "restarts");
        let restart_after_power_cut = Duration::from_millis(restarts.between(10, 500));
        let mut cuts = SimRng::substream(seed, "power-cuts");
        let power_cuts_at_disk_ops = (0..cuts.between(1, 4)).map(|_| cuts.between(1, 3000)).collect();
        let mut faults = SimRng::substream(seed, "faults");
        let fault_kinds =
            [FaultKind::Crash, FaultKind::PowerCut].into_iter().filter(|_| faults.below(2) == 1).collect();
        let fault_mean_interval = Duration::from_millis(faults.between(200, 2000));
        let mut disk = SimRng::substream(seed, "disk");
        let disk_io_error_rate = if disk.below(3) == 0 { Ratio::new(1, 400) } else { Ratio::NEVER };
        let disk_full_rate = if disk.below(3) == 0 { Ratio::new(1, 300) } else { Ratio::NEVER };
        let mut workload = SimRng::substream(seed, "workload");
        let transfers = workload.between(100, 140) as i64;
        Options {
            journal,
            restart_after_power_cut,
            power_cuts_at_disk_ops,
            fault_kinds,
            fault_mean_interval,
            disk_io_error_rate,
            disk_full_rate,
            transfers,
        }
    }

    /// The options as `key=value` pairs, the seed first.
    pub(crate) fn describe(&self, seed: Seed) -> RunOptions {
        let journal = match self.journal {
            Journal::Delete => "delete",
            Journal::Wal => "wal",
        };
        RunOptions::new(seed)
            .with("journal", journal)
            .with("restart_after_power_cut_ms", self.restart_after_power_cut.as_millis())
            .with("power_cuts_at_disk_ops", list(&self.power_cuts_at_disk_ops))
            .with("faults", list(&self.fault_kinds))
            .with("fault_mean_interval_ms", self.fault_mean_interval.as_millis())
            .with("fault_max_outage_ms", RANDOM_MAX_OUTAGE.as_millis())
            .with("disk_io_error_rate", self.disk_io_error_rate)
            .with("disk_full_rate", self.disk_full_rate)
            .with("transfers", self.transfers)
    }

    fn plan(&self) -> FaultPlan {
        let mut plan = FaultPlan::none().restart_after_power_cut(self.restart_after_power_cut);
        for op in &self.power_cuts_at_disk_ops {
            plan = plan.disk_fault_at(BANK, *op, DiskFaultKind::PowerCut);
        }
        if !self.fault_kinds.is_empty() {
            let random =
                RandomFaults::new(self.fault_kinds.clone(), self.fault_mean_interval, RANDOM_MAX_OUTAGE)
                    .expect("crash and power cut are random kinds")
                    .spare([CLIENT]);
            plan = plan.random(random);
        }
        plan
    }

    fn disk(&self) -> DiskConfig {
        DiskConfig {
            io_error_rate: self.disk_io_error_rate,
            full_rate: self.disk_full_rate,
            ..DiskConfig::default()
        }
    }
}

/// The options of `seed`, printed.
pub(crate) fn options(seed: Seed) -> RunOptions {
    Options::from_seed(seed).describe(seed)
}

fn location(journal: Journal) -> DatabaseLocation {
    dosim_sim::sqlite::register_vfs();
    DatabaseLocation::on_vfs(dosim_sim::sqlite::VFS_NAME, DB_PATH).journal(journal)
}

/// Opens the database, creating the accounts on first boot, and checks its invariants.
///
/// # Panics
/// With a broken invariant ([`dosim_sim::invariant!`]) if the database is corrupt or the balances do not add
/// up: crash consistency failed.
fn open_and_check(journal: Journal) -> Result<Connection, String> {
    let conn = location(journal).open().map_err(|e| e.to_string())?;
    check(&conn).map_err(|e| e.to_string())?;
    Ok(conn)
}

fn check(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS account(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
         CREATE TABLE IF NOT EXISTS log(seq INTEGER PRIMARY KEY, id INTEGER NOT NULL, src INTEGER,
                                        dst INTEGER, amount INTEGER);",
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
    dosim_sim::invariant!(integrity == "ok", "bank database is corrupt after restart: {integrity}");
    let (count, sum): (i64, i64) =
        conn.query_row("SELECT count(*), sum(balance) FROM account", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
    dosim_sim::invariant!(count == ACCOUNTS, "accounts lost: {count} of {ACCOUNTS}");
    dosim_sim::invariant!(
        sum == ACCOUNTS * INITIAL_BALANCE,
        "balances do not add up: a transfer was half-applied: {sum} != {}",
        ACCOUNTS * INITIAL_BALANCE
    );
    Ok(())
}

fn applied(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("SELECT count(*) FROM log", [], |r| r.get(0))
}

/// When the bank acknowledges a transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ack {
    /// Once its commit has returned and the disk time has passed: the transfer is durable.
    AfterCommit,
    /// Just before its commit: the negative control, which loses acknowledged transfers to power cuts and I/O
    /// errors inside commits.
    BeforeCommit,
}

/// One transfer as one transaction, logged under `id`. The sequence number is the log's next row;
/// `before_commit` runs just before the commit.
fn transfer(
    conn: &Connection,
    rng: &mut SimRng,
    id: u64,
    before_commit: impl FnOnce(),
) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    let seq = applied(&tx)? + 1;
    let src = rng.below(ACCOUNTS as u64) as i64;
    let dst = (src + 1 + rng.below(ACCOUNTS as u64 - 1) as i64) % ACCOUNTS;
    let balance: i64 = tx.query_row("SELECT balance FROM account WHERE id = ?1", [src], |r| r.get(0))?;
    let amount = rng.between(0, balance.max(0) as u64) as i64;
    tx.execute("UPDATE account SET balance = balance - ?2 WHERE id = ?1", [src, amount])?;
    tx.execute("UPDATE account SET balance = balance + ?2 WHERE id = ?1", [dst, amount])?;
    // SQLite integers are signed: the id is stored as the i64 with the same bits.
    tx.execute("INSERT INTO log VALUES (?1, ?2, ?3, ?4, ?5)", [seq, id as i64, src, dst, amount])?;
    before_commit();
    tx.commit()
}

/// How many times each transfer id is in the log.
fn ledger(conn: &Connection) -> rusqlite::Result<BTreeMap<u64, u32>> {
    let mut stmt = conn.prepare("SELECT id FROM log")?;
    let mut ids = BTreeMap::new();
    for id in stmt.query_map([], |r| r.get::<_, i64>(0))? {
        *ids.entry(id? as u64).or_default() += 1;
    }
    Ok(ids)
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

async fn bank(journal: Journal, seed: Seed, transfers: i64, ack: Ack) {
    let ep = Endpoint::bind(PORT).expect("bank port is free at boot");
    let client = Addr { node: CLIENT, port: PORT };
    let mut conn = open_retrying(journal).await;
    let boot_applied = applied(&conn).unwrap_or(-1);
    dosim_sim::note("bank boot", format!("applied={boot_applied}"));
    // The workload stream is offset by what is applied, so a restart does not replay the same transfers.
    let mut rng = SimRng::new(seed.nth(boot_applied.max(0) as u64 + 1), Purpose::Workload);
    loop {
        match applied(&conn) {
            Ok(n) if n >= transfers => break,
            _ => {}
        }
        // The run's own workload stream goes on across restarts: a redone transfer gets a new id.
        let id = dosim_sim::random(Purpose::Workload, |r| r.next_u64());
        let send_ack = || ep.send(client, id.to_le_bytes().to_vec());
        let result = match ack {
            Ack::AfterCommit => transfer(&conn, &mut rng, id, || {}),
            Ack::BeforeCommit => transfer(&conn, &mut rng, id, send_ack),
        };
        match result {
            Ok(()) => {
                disk::settle().await;
                if ack == Ack::AfterCommit {
                    send_ack();
                }
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
    dosim_sim::note("bank done", transfers);
    // Let go of the database (and its exclusive lock), so the checker can open it.
    drop(conn);
    std::future::pending::<()>().await;
}

/// Collects acknowledgements for `listen_for`: the ids of the acknowledged transfers.
async fn client(listen_for: Duration) -> BTreeSet<u64> {
    let mut ep = Endpoint::bind(PORT).expect("client port");
    let mut acked = BTreeSet::new();
    let deadline = madsim::time::Instant::now() + listen_for;
    while let Ok(d) =
        madsim::time::timeout(deadline.saturating_duration_since(madsim::time::Instant::now()), ep.recv())
            .await
    {
        if let Ok(b) = <[u8; 8]>::try_from(d.payload.as_slice()) {
            acked.insert(u64::from_le_bytes(b));
        }
    }
    acked
}

/// Runs the scenario for one seed.
pub(crate) fn run(seed: Seed) -> Result<RunReport, RunFailure> {
    run_with(seed, Ack::AfterCommit)
}

/// The scenario with a bank that acknowledges each transfer just before its commit: the ledger check must
/// catch acknowledged transfers lost to power cuts and I/O errors inside commits under some seeds. It proves
/// the check can fail.
pub fn run_negative_control(seed: Seed) -> Result<RunReport, RunFailure> {
    run_with(seed, Ack::BeforeCommit)
}

fn run_with(seed: Seed, ack: Ack) -> Result<RunReport, RunFailure> {
    let options = Options::from_seed(seed);
    let (journal, transfers) = (options.journal, options.transfers);
    let sim = Sim::builder()
        .seed(seed)
        .node(NodeConfig::new("bank").program(move || bank(journal, seed, transfers, ack)))
        .node(NodeConfig::new("client"))
        .disk(options.disk())
        .faults(options.plan())
        .options(options.describe(seed))
        .build()?;
    sim.run(move |world| async move {
        let acked =
            world.spawn_on(CLIENT, client(LISTEN_FOR))?.await.map_err(|e| Failure::new(e.to_string()))?;
        world.stop_faults();
        // Give the bank time to boot and finish, then read what it holds.
        world.sleep(FINISH_WITHIN).await;
        let (count, ledger) = world
            .spawn_on(BANK, async move {
                let conn = open_retrying(journal).await;
                (applied(&conn).expect("log is readable"), ledger(&conn).expect("log is readable"))
            })?
            .await
            .map_err(|e| Failure::new(e.to_string()))?;
        dosim_sim::note("final", format!("applied={count} acked={}", acked.len()));
        let lost: Vec<u64> = acked.iter().copied().filter(|id| !ledger.contains_key(id)).collect();
        if let Some(first) = lost.first() {
            return Err(Failure::new(format!(
                "acknowledged transfers lost: {} of {} acknowledged ids are not in the ledger of {count} \
                 transfers (the first: {first:#018x})",
                lost.len(),
                acked.len()
            )));
        }
        let twice: Vec<(&u64, &u32)> = ledger.iter().filter(|(_, n)| **n > 1).collect();
        ensure!(twice.is_empty(), "transfers in the ledger more than once (id, times): {twice:?}");
        ensure_live!(
            count >= transfers,
            "the bank did not finish its {transfers} transfers: {count} applied"
        );
        Ok(())
    })
}
