//! What a test does to the user's object: a [`Driver`] says how to make one operation on a stub, and a
//! [`Workload`] how many clients make how many operations on which objects, over how long.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use dosim_runtime::error::Error;
use dosim_runtime::prelude::Stub;
use dosim_sim::SimRng;

/// The operations of a user's object: what one operation is ([`Driver::Input`]), what it answers
/// ([`Driver::Output`]), how a client draws the next one, and how it is made on a stub.
///
/// ```ignore
/// #[derive(Clone)]
/// struct CounterCalls;
/// impl Driver for CounterCalls {
///     type Input = CounterOp;
///     type Output = i64;
///     fn next_op(&self, rng: &mut SimRng) -> CounterOp {
///         if rng.below(4) == 0 { CounterOp::Read } else { CounterOp::Add(1) }
///     }
///     fn final_reads(&self) -> Vec<CounterOp> { vec![CounterOp::Read] }
///     async fn call(&self, stub: &Stub, op: CounterOp) -> Result<i64, Error> {
///         match op {
///             CounterOp::Add(n) => stub.call("increment", &n).await,
///             CounterOp::Read => stub.call("read", &()).await,
///         }
///     }
/// }
/// ```
pub trait Driver: Clone + Send + Sync + 'static {
    /// One operation, as the checkers' model reads it.
    type Input: Clone + fmt::Debug + Send + 'static;
    /// What an operation answers.
    type Output: Clone + fmt::Debug + PartialEq + Send + 'static;

    /// The next operation a client makes, drawn from its own stream.
    fn next_op(&self, rng: &mut SimRng) -> Self::Input;

    /// The operations that read the object's whole state (none by default): the liveness phase makes
    /// each on every object once the faults stop (retrying until it answers), and the checks see them last.
    fn final_reads(&self) -> Vec<Self::Input> {
        Vec::new()
    }

    /// Makes `input` on the object behind `stub`.
    fn call(&self, stub: &Stub, input: Self::Input) -> impl Future<Output = Result<Self::Output, Error>>;
}

/// How long a client waits for an answer before it gives up and records the operation's outcome as
/// unknown: longer than the runtime's own call timeout in a cluster (30 s), so that a call to a host that
/// is down ends with the runtime's error when there is one.
pub const CLIENT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(40);

/// Clients making operations of a [`Driver`] on objects of one binding.
#[derive(Clone, Debug)]
pub struct Workload<D: Driver> {
    pub(crate) driver: D,
    pub(crate) binding: String,
    pub(crate) objects: Vec<String>,
    pub(crate) clients: u32,
    pub(crate) ops_per_client: u32,
    pub(crate) duration: Duration,
    pub(crate) client_timeout: Duration,
    /// Each client's inputs, given instead of drawn (a proptest strategy's value).
    pub(crate) scripts: Option<Vec<Vec<D::Input>>>,
}

impl<D: Driver> Workload<D> {
    /// A workload of `driver`'s operations on objects of `binding`: by default 4 clients, 25 operations each,
    /// spread over 20 s of simulated time, on the objects `o0`, `o1` and `o2` (by name).
    pub fn new(binding: &str, driver: D) -> Workload<D> {
        Workload {
            driver,
            binding: binding.to_string(),
            objects: vec!["o0".into(), "o1".into(), "o2".into()],
            clients: 4,
            ops_per_client: 25,
            duration: Duration::from_secs(20),
            client_timeout: CLIENT_TIMEOUT_DEFAULT,
            scripts: None,
        }
    }

    /// Each client's inputs, in order, instead of inputs drawn with [`Driver::next_op`]: one client per
    /// script, each making its script's operations (for a property test whose strategy makes the scripts:
    /// see [`crate::strategies`]). Objects and think times are still drawn from the seed.
    pub fn scripts(mut self, scripts: Vec<Vec<D::Input>>) -> Self {
        assert!(!scripts.is_empty(), "a workload needs at least one client's script");
        self.clients = scripts.len() as u32;
        self.ops_per_client = scripts.iter().map(Vec::len).max().unwrap_or(0) as u32;
        self.scripts = Some(scripts);
        self
    }

    /// The objects, by name (`id_from_name`).
    pub fn objects<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.objects = names.into_iter().map(Into::into).collect();
        assert!(!self.objects.is_empty(), "a workload needs at least one object");
        self
    }

    /// How many clients make operations at once (each one at a time).
    pub fn clients(mut self, n: u32) -> Self {
        assert!(n > 0, "a workload needs at least one client");
        self.clients = n;
        self
    }

    /// How many operations each client makes.
    pub fn ops_per_client(mut self, n: u32) -> Self {
        self.ops_per_client = n;
        self
    }

    /// About how long the operations take in all, in simulated time: each client waits a random think time
    /// (on average `duration / ops_per_client`) before each operation. Faults are scheduled over the same
    /// stretch, so they land among the operations.
    pub fn over(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// How long a client waits for an answer before it records the outcome as unknown.
    pub fn client_timeout(mut self, timeout: Duration) -> Self {
        self.client_timeout = timeout;
        self
    }

    /// The operations of every client, drawn from the seed: client `c` draws from its own labelled stream
    /// (`client-c`), so the operations do not depend on how the run is scheduled, and adding a client never
    /// changes another's operations. Each is (object index, input, think time before it).
    pub(crate) fn draw(&self, seed: dosim_sim::Seed) -> Vec<Vec<PlannedOp<D::Input>>> {
        let mean_think = self.duration.as_millis() as u64 / u64::from(self.ops_per_client.max(1));
        (0..self.clients)
            .map(|c| {
                let mut rng = SimRng::substream(seed, &format!("client-{c}"));
                let script = self.scripts.as_ref().map(|s| s[c as usize].clone());
                let count = script.as_ref().map_or(self.ops_per_client as usize, Vec::len);
                let mut script = script.map(Vec::into_iter);
                (0..count)
                    .map(|_| {
                        let object = rng.below(self.objects.len() as u64) as usize;
                        // Whole ticks of think time: clients that start together call together, so calls
                        // on one object overlap (a burst), as real traffic does.
                        let ticks = rng.between(0, 2 * (mean_think / THINK_TICK_MS).max(1));
                        let think = Duration::from_millis(ticks * THINK_TICK_MS);
                        let input = match &mut script {
                            Some(s) => s.next().expect("the script has `count` inputs"),
                            None => self.driver.next_op(&mut rng),
                        };
                        PlannedOp { object, input, think }
                    })
                    .collect()
            })
            .collect()
    }
}

/// The unit of a client's think time, in ms: think times are whole ticks, so clients' calls start in
/// bursts at the same instants.
pub const THINK_TICK_MS: u64 = 50;

/// One operation a client will make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedOp<I> {
    /// Which object (an index into the workload's objects).
    pub object: usize,
    /// What.
    pub input: I,
    /// How long the client waits before it.
    pub think: Duration,
}

use crate::check::models::{CounterOp, KvOp, KvOut, RegisterOp, RegisterOut};

/// A counter's operations as RPC calls: `add(n: i64) -> i64` (the value after) and `read(()) -> i64`, under
/// method names of the object's own. Three in four operations are adds of 1 to 3.
#[derive(Clone, Debug)]
pub struct CounterCalls {
    add: &'static str,
    read: &'static str,
    /// Adds of a negative amount (-1), one in this many operations (0: none).
    negative_every: u64,
}

impl CounterCalls {
    /// Adds through RPC method `add`, reads through `read`.
    pub fn rpc(add: &'static str, read: &'static str) -> CounterCalls {
        CounterCalls { add, read, negative_every: 0 }
    }

    /// One in `n` operations adds -1 (for objects that refuse negative amounts).
    pub fn with_negative_adds(mut self, n: u64) -> CounterCalls {
        self.negative_every = n;
        self
    }
}

impl Driver for CounterCalls {
    type Input = CounterOp;
    type Output = i64;

    fn next_op(&self, rng: &mut SimRng) -> CounterOp {
        if self.negative_every > 0 && rng.below(self.negative_every) == 0 {
            return CounterOp::Add(-1);
        }
        if rng.below(4) == 0 {
            CounterOp::Read
        } else {
            CounterOp::Add(rng.between(1, 3) as i64)
        }
    }

    fn final_reads(&self) -> Vec<CounterOp> {
        vec![CounterOp::Read]
    }

    async fn call(&self, stub: &Stub, input: CounterOp) -> Result<i64, Error> {
        match input {
            CounterOp::Add(n) => stub.call(self.add, &n).await,
            CounterOp::Read => stub.call(self.read, &()).await,
        }
    }
}

/// A register's operations as RPC calls: `write(v: i64) -> ()` and `read(()) -> Option<i64>`, under method
/// names of the object's own. Half the operations are writes, each of a value drawn from a wide range (so
/// values rarely repeat, and a stale read shows).
#[derive(Clone, Debug)]
pub struct RegisterCalls {
    write: &'static str,
    read: &'static str,
}

impl RegisterCalls {
    /// Writes through RPC method `write`, reads through `read`.
    pub fn rpc(write: &'static str, read: &'static str) -> RegisterCalls {
        RegisterCalls { write, read }
    }
}

impl Driver for RegisterCalls {
    type Input = RegisterOp;
    type Output = RegisterOut;

    fn next_op(&self, rng: &mut SimRng) -> RegisterOp {
        if rng.below(2) == 0 {
            RegisterOp::Read
        } else {
            RegisterOp::Write(rng.between(1, 1 << 40) as i64)
        }
    }

    fn final_reads(&self) -> Vec<RegisterOp> {
        vec![RegisterOp::Read]
    }

    async fn call(&self, stub: &Stub, input: RegisterOp) -> Result<RegisterOut, Error> {
        match input {
            RegisterOp::Write(v) => stub.call::<_, ()>(self.write, &v).await.map(|()| RegisterOut::Written),
            RegisterOp::Read => stub.call::<_, Option<i64>>(self.read, &()).await.map(RegisterOut::Value),
        }
    }
}

/// A key-value map's operations as RPC calls: `get(key) -> Option<String>`, `put((key, value)) -> ()` and
/// `delete(key) -> bool`, on the keys `k0`..`k3`.
#[derive(Clone, Debug)]
pub struct KvCalls {
    get: &'static str,
    put: &'static str,
    delete: &'static str,
}

/// The keys a [`KvCalls`] workload uses.
pub const KV_KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];

impl KvCalls {
    /// Through RPC methods `get`, `put` and `delete`.
    pub fn rpc(get: &'static str, put: &'static str, delete: &'static str) -> KvCalls {
        KvCalls { get, put, delete }
    }
}

impl Driver for KvCalls {
    type Input = KvOp;
    type Output = KvOut;

    fn next_op(&self, rng: &mut SimRng) -> KvOp {
        let key = KV_KEYS[rng.below(KV_KEYS.len() as u64) as usize].to_string();
        match rng.below(5) {
            0 | 1 => KvOp::Get(key),
            2 | 3 => KvOp::Put(key, format!("v{}", rng.below(1 << 30))),
            _ => KvOp::Delete(key),
        }
    }

    fn final_reads(&self) -> Vec<KvOp> {
        KV_KEYS.iter().map(|k| KvOp::Get(k.to_string())).collect()
    }

    async fn call(&self, stub: &Stub, input: KvOp) -> Result<KvOut, Error> {
        match input {
            KvOp::Get(k) => stub.call::<_, Option<String>>(self.get, &k).await.map(KvOut::Value),
            KvOp::Put(k, v) => stub.call::<_, ()>(self.put, &(k, v)).await.map(|()| KvOut::Written),
            KvOp::Delete(k) => stub.call::<_, bool>(self.delete, &k).await.map(KvOut::Deleted),
        }
    }
}
