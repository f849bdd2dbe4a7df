//! Demo scenario `replicated-counter`: a grow-only counter replicated over a lossy, partitioned network.
//!
//! Three replicas each own one slot of a G-counter. A client sends increments to random replicas; a replica
//! adds one to its own slot, makes it durable (two checksummed slots on its disk, written alternately and
//! synced), then acknowledges. Replicas gossip their vectors every 50 ms and merge by pointwise maximum, which
//! tolerates loss, duplication and reordering. Faults: random crashes, power cuts, pauses, partitions and clogs
//! of the replicas, drawn per seed (swarm testing, [`Options`]), and so is the number of increments.
//!
//! Checked: after the faults stop, every replica converges to the same vector, whose total counts every
//! acknowledged increment (no acknowledged write lost) and no more increments than were attempted.

use std::collections::BTreeMap;
use std::time::Duration;

use dosim_sim::disk;
use dosim_sim::net::{Endpoint, NetConfig};
use dosim_sim::{
    ensure, Addr, DiskConfig, Failure, FaultKind, FaultPlan, NodeConfig, NodeId, Purpose, RandomFaults,
    RunFailure, RunOptions, RunReport, Seed, Sim, SimRng,
};

use crate::list;

const REPLICAS: u32 = 3;
const PORT: u16 = 10;
const CLIENT: NodeId = NodeId(REPLICAS);
const GOSSIP_EVERY: Duration = Duration::from_millis(50);
const ACK_TIMEOUT: Duration = Duration::from_millis(200);
const CONVERGE_WITHIN: Duration = Duration::from_secs(10);

/// Messages between client and replicas.
enum Msg {
    Inc { id: u32 },
    Ack { id: u32 },
    Gossip { counts: Vec<u64> },
    Read,
    State { counts: Vec<u64> },
}

impl Msg {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let (tag, nums): (u8, Vec<u64>) = match self {
            Msg::Inc { id } => (1, vec![u64::from(*id)]),
            Msg::Ack { id } => (2, vec![u64::from(*id)]),
            Msg::Gossip { counts } => (3, counts.clone()),
            Msg::Read => (4, vec![]),
            Msg::State { counts } => (5, counts.clone()),
        };
        out.push(tag);
        for n in nums {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out
    }

    fn decode(b: &[u8]) -> Option<Msg> {
        let (&tag, rest) = b.split_first()?;
        if rest.len() % 8 != 0 {
            return None;
        }
        let nums: Vec<u64> =
            rest.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        Some(match tag {
            1 => Msg::Inc { id: u32::try_from(*nums.first()?).ok()? },
            2 => Msg::Ack { id: u32::try_from(*nums.first()?).ok()? },
            3 => Msg::Gossip { counts: nums },
            4 => Msg::Read,
            5 => Msg::State { counts: nums },
            _ => return None,
        })
    }
}

/// What a replica keeps durable: its own count and the next request id it will apply (ids from the one client
/// only grow, so anything below it is a duplicate or a retry of an applied increment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Own {
    count: u64,
    next_id: u64,
}

const SLOT: u64 = 24;

/// One durable slot: `[count][next_id][checksum]`.
fn slot_bytes(own: Own) -> [u8; SLOT as usize] {
    let mut b = [0u8; SLOT as usize];
    b[..8].copy_from_slice(&own.count.to_le_bytes());
    b[8..16].copy_from_slice(&own.next_id.to_le_bytes());
    b[16..].copy_from_slice(&checksum(own).to_le_bytes());
    b
}

fn checksum(own: Own) -> u64 {
    (own.count ^ 0x5bd1_e995_1234_5678).rotate_left(17) ^ own.next_id.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Reads the replica's durable state: the valid slot with the larger count (a torn slot fails its checksum).
fn load_own() -> Own {
    if !disk::exists("count") {
        return Own::default();
    }
    let f = disk::open("count", false).expect("count file opens");
    let mut buf = [0u8; 2 * SLOT as usize];
    let n = disk::read_at(&f, 0, &mut buf).unwrap_or(0);
    let mut best = Own::default();
    for slot in buf[..n].chunks_exact(SLOT as usize) {
        let word = |i: usize| u64::from_le_bytes(slot[i * 8..i * 8 + 8].try_into().unwrap());
        let own = Own { count: word(0), next_id: word(1) };
        if slot.iter().all(|b| *b == 0) {
            continue; // never written
        }
        if word(2) == checksum(own) {
            if own.count >= best.count {
                best = own;
            }
        } else {
            dosim_sim::sometimes("torn count slot ignored");
        }
    }
    best
}

/// Makes `own` durable in the slot `count % 2`, so the other slot keeps the previous state. The write and the
/// sync each take their disk latency, so a power cut can land between them and tear or lose the write.
async fn store_own(own: Own) -> Result<(), disk::DiskError> {
    let f = disk::open("count", true)?;
    disk::write_at(&f, (own.count % 2) * SLOT, &slot_bytes(own))?;
    disk::settle().await;
    disk::sync(&f)?;
    disk::settle().await;
    Ok(())
}

async fn replica(me: u32) {
    let mut own = load_own();
    let mut counts = vec![0u64; REPLICAS as usize];
    counts[me as usize] = own.count;
    dosim_sim::note("replica boot", format!("n{me} {own:?}"));
    let mut ep = Endpoint::bind(PORT).expect("replica port is free at boot");
    let mut next_gossip = madsim::time::Instant::now();
    loop {
        let now = madsim::time::Instant::now();
        if now >= next_gossip {
            for peer in 0..REPLICAS {
                if peer != me {
                    let to = Addr { node: NodeId(peer), port: PORT };
                    ep.send(to, Msg::Gossip { counts: counts.clone() }.encode());
                }
            }
            next_gossip = now + GOSSIP_EVERY;
        }
        let Ok(d) = madsim::time::timeout(next_gossip - now, ep.recv()).await else { continue };
        match Msg::decode(&d.payload) {
            Some(Msg::Inc { id }) if u64::from(id) < own.next_id => {
                // A duplicate (or a retry) of an increment this replica applied: acknowledge it again.
                dosim_sim::sometimes("duplicate increment acknowledged, not applied");
                ep.send(d.from, Msg::Ack { id }.encode());
            }
            Some(Msg::Inc { id }) => {
                let next = Own { count: own.count + 1, next_id: u64::from(id) + 1 };
                if store_own(next).await.is_ok() {
                    own = next;
                    counts[me as usize] = own.count;
                    ep.send(d.from, Msg::Ack { id }.encode());
                }
            }
            Some(Msg::Gossip { counts: theirs }) if theirs.len() == counts.len() => {
                for (mine, t) in counts.iter_mut().zip(theirs) {
                    *mine = (*mine).max(t);
                }
            }
            Some(Msg::Read) => ep.send(d.from, Msg::State { counts: counts.clone() }.encode()),
            _ => dosim_sim::sometimes("replica ignored a message"),
        }
    }
}

/// What the client saw.
#[derive(Default)]
struct ClientLog {
    attempts: u64,
    acked: u64,
}

async fn client(rng_seed: Seed, increments: u32) -> ClientLog {
    let mut rng = SimRng::new(rng_seed, Purpose::Workload);
    let mut ep = Endpoint::bind(PORT).expect("client port");
    let mut log = ClientLog::default();
    for id in 0..increments {
        // Try replicas until one acknowledges, at most 5 attempts; an unacknowledged increment may still
        // have been applied, which is why the check allows total <= attempts.
        for _ in 0..5 {
            let to = Addr { node: NodeId(rng.below(u64::from(REPLICAS)) as u32), port: PORT };
            log.attempts += 1;
            ep.send(to, Msg::Inc { id }.encode());
            let deadline = madsim::time::Instant::now() + ACK_TIMEOUT;
            let mut acked = false;
            while let Ok(d) = madsim::time::timeout(
                deadline.saturating_duration_since(madsim::time::Instant::now()),
                ep.recv(),
            )
            .await
            {
                if matches!(Msg::decode(&d.payload), Some(Msg::Ack { id: a }) if a == id) {
                    acked = true;
                    break;
                }
            }
            if acked {
                log.acked += 1;
                break;
            }
            dosim_sim::sometimes("increment retried");
        }
        madsim::time::sleep(Duration::from_millis(rng.between(5, 40))).await;
    }
    log
}

/// Asks every replica for its vector, retrying until all answer.
async fn read_all() -> BTreeMap<u32, Vec<u64>> {
    let mut ep = Endpoint::bind(PORT + 1).expect("reader port");
    let mut states = BTreeMap::new();
    while states.len() < REPLICAS as usize {
        for r in 0..REPLICAS {
            if !states.contains_key(&r) {
                ep.send(Addr { node: NodeId(r), port: PORT }, Msg::Read.encode());
            }
        }
        let deadline = madsim::time::Instant::now() + ACK_TIMEOUT;
        while let Ok(d) =
            madsim::time::timeout(deadline.saturating_duration_since(madsim::time::Instant::now()), ep.recv())
                .await
        {
            if let Some(Msg::State { counts }) = Msg::decode(&d.payload) {
                states.insert(d.from.node.0, counts);
            }
        }
    }
    states
}

/// What one run of the scenario does, derived from its seed by [`Options::from_seed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Options {
    /// The faults of the replicas (a non-empty subset of crash, power cut, pause, partition and clog).
    fault_kinds: Vec<FaultKind>,
    /// The mean time between faults.
    fault_mean_interval: Duration,
    /// The longest outage of a fault.
    fault_max_outage: Duration,
    /// How many increments the client sends.
    increments: u32,
}

impl Options {
    /// The options of `seed`, one labelled stream per subsystem ([`SimRng::substream`]): adding a draw to one
    /// subsystem never shifts another's, and none is a stream the run itself draws from.
    pub(crate) fn from_seed(seed: Seed) -> Options {
        let mut faults = SimRng::substream(seed, "faults");
        let pool =
            [FaultKind::Crash, FaultKind::PowerCut, FaultKind::Pause, FaultKind::Partition, FaultKind::Clog];
        let mut fault_kinds: Vec<FaultKind> = pool.iter().copied().filter(|_| faults.below(2) == 1).collect();
        if fault_kinds.is_empty() {
            fault_kinds.push(pool[faults.below(pool.len() as u64) as usize]);
        }
        let fault_mean_interval = Duration::from_millis(faults.between(100, 1000));
        let fault_max_outage = Duration::from_millis(faults.between(50, 2000));
        let mut workload = SimRng::substream(seed, "workload");
        let increments = workload.between(40, 80) as u32;
        Options { fault_kinds, fault_mean_interval, fault_max_outage, increments }
    }

    /// The options as `key=value` pairs, the seed first.
    pub(crate) fn describe(&self, seed: Seed) -> RunOptions {
        RunOptions::new(seed)
            .with("faults", list(&self.fault_kinds))
            .with("fault_mean_interval_ms", self.fault_mean_interval.as_millis())
            .with("fault_max_outage_ms", self.fault_max_outage.as_millis())
            .with("increments", self.increments)
    }

    fn plan(&self) -> FaultPlan {
        let random =
            RandomFaults::new(self.fault_kinds.clone(), self.fault_mean_interval, self.fault_max_outage)
                .expect("kinds come from the random pool")
                .spare([CLIENT]);
        FaultPlan::none().random(random)
    }
}

/// The options of `seed`, printed.
pub(crate) fn options(seed: Seed) -> RunOptions {
    Options::from_seed(seed).describe(seed)
}

/// Runs the scenario for one seed.
pub(crate) fn run(seed: Seed) -> Result<RunReport, RunFailure> {
    let options = Options::from_seed(seed);
    let increments = options.increments;
    let mut b = Sim::builder()
        .seed(seed)
        .network(NetConfig::lossy())
        .disk(DiskConfig::default())
        .options(options.describe(seed));
    for r in 0..REPLICAS {
        b = b.node(NodeConfig::new(format!("replica{r}")).program(move || replica(r)));
    }
    b = b.node(NodeConfig::new("client"));
    let sim = b.faults(options.plan()).build()?;
    sim.run(move |world| async move {
        let log = world
            .spawn_on(CLIENT, client(seed, increments))?
            .await
            .map_err(|e| Failure::new(e.to_string()))?;
        world.stop_faults();
        let start = world.now();
        let mut last = BTreeMap::new();
        while world.now() - start < CONVERGE_WITHIN {
            world.sleep(Duration::from_millis(500)).await;
            last = world.spawn_on(CLIENT, read_all())?.await.map_err(|e| Failure::new(e.to_string()))?;
            let first = last.values().next().cloned().unwrap_or_default();
            if last.values().all(|v| *v == first) {
                let total: u64 = first.iter().sum();
                dosim_sim::note(
                    "converged",
                    format!("{first:?} acked={} attempts={}", log.acked, log.attempts),
                );
                ensure!(
                    total >= log.acked,
                    "acknowledged increments lost: total {total} < acked {}",
                    log.acked
                );
                ensure!(total <= log.attempts, "more increments than attempts: {total} > {}", log.attempts);
                return Ok(());
            }
        }
        Err(Failure::pending(format!("replicas did not converge within {CONVERGE_WITHIN:?}: {last:?}")))
    })
}
