//! The directory: which host owns each object, held in a coordination store with etcd's semantics, so that
//! at most one live instance of an id exists at a time (spec §7), and each owner has an epoch, a fencing
//! token that only grows.
//!
//! # Records (all under [`DIRECTORY_PREFIX`])
//! - `ready`: written once by [`Directory::init`], after the buckets. Hosts join only once it exists.
//! - `bucket/<n>` for n < [`BUCKETS`]: a counter that every claim of an object of bucket n bumps. The store
//!   cannot compare a key that does not exist in a way the simulator and a real etcd agree on, so an owner
//!   record is never created by "create if absent": it is created in a transaction that compares the
//!   bucket's counter, which every creation in the bucket changes. Counters only grow (they are written
//!   only by `init`, once, and by claims, +1), so a compare never meets a value it saw before (no ABA).
//! - `host/<host>`: a host's membership, bound to its lease, holding the lease id (and the host's location,
//!   `<lease>|<location>`, if it has one). Every claim compares it,
//!   so a host whose lease is gone claims nothing (and no write is ever bound to a lease that is gone).
//! - `owner/<namespace uid>/<id hex>`: `<host>|<lease hex>`, bound to the owner's lease. Its revision is the
//!   owner's **epoch**: store revisions only grow, so a later owner always has a larger epoch.
//!
//! # Leases
//! A host renews its lease every [`KEEPALIVE_INTERVAL`] and believes it valid until [`LEASE_TTL_S`] − 1 s −
//! [`LEASE_SAFETY`] after it *sent* the last renewal that succeeded (madsim's etcd expires leases on a 1 s
//! tick, so a lease renewed at t may go at t + TTL − 1 s). The store expires it later than that, so while a
//! host believes its lease valid, no other host can own its objects. When the host cannot renew (a
//! partition from the directory), its belief lapses first, and the host must stop serving and touching
//! storage (spec §7: uniqueness is checked when an event starts and when storage is accessed); then the
//! store expires the lease, the owner records go with it, and another host may claim the objects.
//!
//! # Errors
//! A store that does not answer within [`CALL_TIMEOUT`] gives `Network connection lost.` (retryable); the
//! call may have applied, and every call here is safe to repeat. A record that does not parse gives an
//! internal error naming the record.

use std::cell::Cell;
use std::rc::{Rc, Weak};
use std::time::Duration;

use madsim_tokio::time::Instant;

use crate::error::{messages, Error};
use crate::id::ObjectId;
use crate::world::{CoordError, CoordRecord, CoordTxn, Coordinator};

/// Where the directory's records live in the store.
pub(crate) const DIRECTORY_PREFIX: &str = "dosim/";
/// How many bucket counters the owner records are spread over: claims in different buckets never conflict.
pub(crate) const BUCKETS: u16 = 64;
/// A host lease's time to live, in seconds: how long a host cut off from the directory keeps its objects.
pub const LEASE_TTL_S: i64 = 5;
/// How often a host renews its lease.
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(1_000);
/// How much earlier than the store's expiry (at the earliest) a host stops believing in its lease.
pub(crate) const LEASE_SAFETY: Duration = Duration::from_millis(200);
/// How long a call to the store may take before it counts as unanswered.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How often a claim is retried when another claim in its bucket won the race, before it gives up.
pub(crate) const CLAIM_ATTEMPTS_MAX: u32 = 8;
/// How long [`HostLease::join`] waits for the directory to be initialised.
pub(crate) const JOIN_WAIT_MAX: Duration = Duration::from_secs(30);

/// The owner of an object, as the directory records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The owning host's address.
    pub host: String,
    /// The owner's lease.
    pub lease: i64,
    /// The owner's epoch: the fencing token every storage commit of this ownership carries.
    pub epoch: i64,
}

/// A live host of the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its address.
    pub host: String,
    /// Its location (a location hint's name), if it declared one.
    pub location: Option<String>,
}

/// What a claim got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This host owns the object, in this epoch.
    Owned {
        /// The epoch of this ownership.
        epoch: i64,
    },
    /// Another host (or an earlier incarnation of this one, whose lease has not expired yet) owns it.
    OwnedBy(Owner),
}

fn key(rest: &str) -> String {
    format!("{DIRECTORY_PREFIX}{rest}")
}

fn ready_key() -> String {
    key("ready")
}

fn bucket_key(bucket: u16) -> String {
    key(&format!("bucket/{bucket}"))
}

fn host_key(host: &str) -> String {
    key(&format!("host/{host}"))
}

fn owner_key(namespace_uid: &str, id: &ObjectId) -> String {
    key(&format!("owner/{namespace_uid}/{id}"))
}

/// The bucket of an object: from the last bytes of its id (the HMAC part, uniform for every kind of id).
fn bucket_of(id: &ObjectId) -> u16 {
    let b = id.as_bytes();
    u16::from_be_bytes([b[30], b[31]]) % BUCKETS
}

fn lease_text(lease: i64) -> String {
    format!("{lease:016x}")
}

/// A membership record's value: `<lease hex>`, or `<lease hex>|<location>`.
fn membership_value(lease: i64, location: Option<&str>) -> String {
    match location {
        Some(l) => format!("{}|{l}", lease_text(lease)),
        None => lease_text(lease),
    }
}

fn malformed(key: &str, detail: &str) -> Error {
    Error::new(messages::internal_error(&format!("directory record {key} is malformed: {detail}")))
}

/// The caller's view of a store failure: the spec's `Network connection lost.` (retryable) when the store
/// did not answer; an internal error naming the call when it refused.
fn store_error(call: &str, e: CoordError) -> Error {
    tracing::debug!(target: "dosim::runtime", "directory {call}: {e}");
    match e {
        CoordError::Unavailable(_) => Error::new(messages::NETWORK_CONNECTION_LOST).with_retryable(),
        CoordError::Rejected(why) => {
            Error::new(messages::internal_error(&format!("directory {call} was rejected: {why}")))
        }
    }
}

/// Runs a store call with [`CALL_TIMEOUT`].
async fn call<T>(
    name: &str,
    f: impl std::future::Future<Output = Result<T, CoordError>>,
) -> Result<T, Error> {
    match madsim_tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| store_error(name, e)),
        Err(_) => {
            Err(store_error(name, CoordError::Unavailable(format!("no answer within {CALL_TIMEOUT:?}"))))
        }
    }
}

fn parse_owner(key: &str, record: &CoordRecord) -> Result<Owner, Error> {
    let text = std::str::from_utf8(&record.value).map_err(|_| malformed(key, "not UTF-8"))?;
    let (host, lease) =
        text.rsplit_once('|').ok_or_else(|| malformed(key, &format!("{text:?} is not `<host>|<lease>`")))?;
    let lease = i64::from_str_radix(lease, 16)
        .map_err(|_| malformed(key, &format!("{lease:?} is not a lease id in hex")))?;
    if host.is_empty() {
        return Err(malformed(key, "the host is empty"));
    }
    Ok(Owner { host: host.to_string(), lease, epoch: record.mod_revision })
}

fn parse_counter(key: &str, record: &CoordRecord) -> Result<u64, Error> {
    std::str::from_utf8(&record.value).ok().and_then(|t| t.parse().ok()).ok_or_else(|| {
        malformed(key, &format!("{:?} is not a counter", String::from_utf8_lossy(&record.value)))
    })
}

/// The directory as a reader sees it (a front looking up where to send a call), and its one-time setup.
#[derive(Clone)]
pub struct Directory {
    store: Rc<dyn Coordinator>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Directory")
    }
}

impl Directory {
    /// The directory in `store`.
    pub fn new(store: Rc<dyn Coordinator>) -> Directory {
        Directory { store }
    }

    /// Sets the directory up in an empty store: the bucket counters, then the `ready` record. Run once per
    /// cluster, by its bootstrap, before any host joins; run again, it changes nothing.
    pub async fn init(&self) -> Result<(), Error> {
        if call("get", self.store.get(ready_key())).await?.is_some() {
            return Ok(());
        }
        for b in 0..BUCKETS {
            call("put", self.store.put(bucket_key(b), b"0".to_vec(), None)).await?;
        }
        call("put", self.store.put(ready_key(), b"1".to_vec(), None)).await?;
        Ok(())
    }

    /// Whether [`Directory::init`] has completed.
    pub async fn is_ready(&self) -> Result<bool, Error> {
        Ok(call("get", self.store.get(ready_key())).await?.is_some())
    }

    /// The owner of object `id` of namespace `namespace_uid`, if any.
    pub async fn owner(&self, namespace_uid: &str, id: &ObjectId) -> Result<Option<Owner>, Error> {
        let k = owner_key(namespace_uid, id);
        match call("get", self.store.get(k.clone())).await? {
            None => Ok(None),
            Some(r) => parse_owner(&k, &r).map(Some),
        }
    }

    /// The hosts whose leases are live, in address order.
    pub async fn hosts(&self) -> Result<Vec<String>, Error> {
        Ok(self.members().await?.into_iter().map(|m| m.host).collect())
    }

    /// The hosts whose leases are live, with their locations, in address order.
    pub async fn members(&self) -> Result<Vec<Member>, Error> {
        let prefix = host_key("");
        let records = call("list", self.store.list(prefix.clone())).await?;
        Ok(records
            .into_iter()
            .map(|(k, r)| {
                let value = String::from_utf8_lossy(&r.value).into_owned();
                let location = value.split_once('|').map(|(_, l)| l.to_string());
                Member { host: k[prefix.len()..].to_string(), location }
            })
            .collect())
    }
}

/// A host's membership of the directory: its lease, kept alive in the background, and the claims made
/// under it.
pub struct HostLease {
    store: Rc<dyn Coordinator>,
    host: String,
    /// The membership record's value: the lease id, and the host's location if it has one.
    membership: String,
    lease: i64,
    valid_until: Cell<Instant>,
    /// The store said the lease is gone: it never comes back (the host joins again, with a new lease).
    lost: Cell<bool>,
    keeper: Cell<Option<madsim_tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for HostLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostLease({} {})", self.host, lease_text(self.lease))
    }
}

impl Drop for HostLease {
    fn drop(&mut self) {
        if let Some(k) = self.keeper.take() {
            k.abort();
        }
    }
}

impl HostLease {
    /// Joins the directory as `host` (an address, without `|`): waits for the directory to be ready (up to
    /// [`JOIN_WAIT_MAX`]), takes a lease, records the membership, and keeps the lease alive until the
    /// `HostLease` drops. Runs inside a local task set (the keep-alive is a local task).
    pub async fn join(store: Rc<dyn Coordinator>, host: &str) -> Result<Rc<HostLease>, Error> {
        Self::join_at(store, host, None).await
    }

    /// [`HostLease::join`] for a host in `location` (a location hint's name, spec §8): placement prefers
    /// hosts whose location matches a stub's hint.
    pub async fn join_at(
        store: Rc<dyn Coordinator>,
        host: &str,
        location: Option<&str>,
    ) -> Result<Rc<HostLease>, Error> {
        if host.is_empty() || host.contains('|') {
            return Err(Error::type_error(format!(
                "a host address must be non-empty and without '|': {host:?}"
            )));
        }
        let directory = Directory::new(store.clone());
        let deadline = Instant::now() + JOIN_WAIT_MAX;
        loop {
            match directory.is_ready().await {
                Ok(true) => break,
                Ok(false) | Err(_) if Instant::now() < deadline => {
                    madsim_tokio::time::sleep(KEEPALIVE_INTERVAL).await;
                }
                Ok(false) => {
                    return Err(Error::new(messages::internal_error(
                        "the directory is not initialised (no `ready` record): run Directory::init once",
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        let sent = Instant::now();
        let lease = call("lease grant", store.grant_lease(LEASE_TTL_S)).await?;
        let me = Rc::new(HostLease {
            store: store.clone(),
            host: host.to_string(),
            membership: membership_value(lease, location),
            lease,
            valid_until: Cell::new(sent),
            lost: Cell::new(false),
            keeper: Cell::new(None),
        });
        me.renewed(sent, LEASE_TTL_S);
        call("put", store.put(host_key(host), me.membership.clone().into_bytes(), Some(lease))).await?;
        let weak = Rc::downgrade(&me);
        me.keeper.set(Some(madsim_tokio::task::spawn_local(keep_alive(weak))));
        tracing::debug!(target: "dosim::runtime", "host {host} joined the directory with lease {}", lease_text(lease));
        Ok(me)
    }

    /// This host's address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The lease id.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// Whether this host may still act as the owner of what it claimed: its lease is surely live.
    pub fn is_valid(&self) -> bool {
        !self.lost.get() && Instant::now() < self.valid_until.get()
    }

    /// Until when the lease is surely live (if it was not lost).
    pub fn valid_until(&self) -> Instant {
        self.valid_until.get()
    }

    /// Whether the store said the lease is gone.
    pub fn is_lost(&self) -> bool {
        self.lost.get()
    }

    fn renewed(&self, sent: Instant, ttl_s: i64) {
        let ttl = Duration::from_secs(u64::try_from(ttl_s.min(LEASE_TTL_S)).unwrap_or(0));
        let live = ttl.saturating_sub(Duration::from_secs(1)).saturating_sub(LEASE_SAFETY);
        let until = sent + live;
        if until > self.valid_until.get() {
            self.valid_until.set(until);
        }
    }

    fn expect_valid(&self) -> Result<(), Error> {
        if self.is_valid() {
            Ok(())
        } else {
            tracing::debug!(target: "dosim::runtime", "host {}: its directory lease is not surely live", self.host);
            Err(Error::new(messages::NETWORK_CONNECTION_LOST).with_retryable())
        }
    }

    /// Claims object `id` of namespace `namespace_uid` for this host, unless another owns it. Safe to
    /// repeat: a claim whose answer was lost is found again as this host's own.
    pub async fn claim(&self, namespace_uid: &str, id: &ObjectId) -> Result<Claim, Error> {
        let owner_k = owner_key(namespace_uid, id);
        let bucket_k = bucket_key(bucket_of(id));
        let mine = format!("{}|{}", self.host, lease_text(self.lease));
        for _ in 0..CLAIM_ATTEMPTS_MAX {
            self.expect_valid()?;
            let bucket = call("get", self.store.get(bucket_k.clone())).await?.ok_or_else(|| {
                Error::new(messages::internal_error(&format!("the directory has no record {bucket_k}")))
            })?;
            let counter = parse_counter(&bucket_k, &bucket)?;
            if let Some(record) = call("get", self.store.get(owner_k.clone())).await? {
                let owner = parse_owner(&owner_k, &record)?;
                if owner.host == self.host && owner.lease == self.lease {
                    return Ok(Claim::Owned { epoch: owner.epoch });
                }
                return Ok(Claim::OwnedBy(owner));
            }
            self.expect_valid()?;
            let txn = CoordTxn {
                if_equal: vec![
                    (host_key(&self.host), self.membership.clone().into_bytes()),
                    (bucket_k.clone(), bucket.value.clone()),
                ],
                // The owner record first: its revision is the transaction's (the epoch) in both stores.
                puts: vec![
                    (owner_k.clone(), mine.clone().into_bytes(), Some(self.lease)),
                    (bucket_k.clone(), (counter + 1).to_string().into_bytes(), None),
                ],
                deletes: vec![],
            };
            if let Some(epoch) = call("txn", self.store.txn(txn)).await? {
                tracing::debug!(target: "dosim::runtime", "host {} owns {owner_k} in epoch {epoch}", self.host);
                return Ok(Claim::Owned { epoch });
            }
        }
        tracing::debug!(target: "dosim::runtime", "host {}: claim of {owner_k} lost {CLAIM_ATTEMPTS_MAX} races", self.host);
        Err(Error::new(messages::NETWORK_CONNECTION_LOST).with_retryable())
    }

    /// Gives up this host's ownership of an object (its instance went away), if it still holds it.
    pub async fn release(&self, namespace_uid: &str, id: &ObjectId) -> Result<(), Error> {
        let owner_k = owner_key(namespace_uid, id);
        let mine = format!("{}|{}", self.host, lease_text(self.lease));
        let txn = CoordTxn {
            if_equal: vec![(owner_k.clone(), mine.into_bytes())],
            puts: vec![],
            deletes: vec![owner_k],
        };
        call("txn", self.store.txn(txn)).await?;
        Ok(())
    }
}

/// Renews the lease until the `HostLease` drops or the store says it is gone.
async fn keep_alive(me: Weak<HostLease>) {
    loop {
        madsim_tokio::time::sleep(KEEPALIVE_INTERVAL).await;
        let Some(lease) = me.upgrade() else { return };
        let sent = Instant::now();
        let renewal = lease.store.keep_alive(lease.lease);
        drop(lease);
        let outcome = madsim_tokio::time::timeout(CALL_TIMEOUT, renewal).await;
        let Some(lease) = me.upgrade() else { return };
        match outcome {
            Ok(Ok(ttl)) if ttl > 0 => lease.renewed(sent, ttl),
            Ok(Ok(_)) | Ok(Err(CoordError::Rejected(_))) => {
                tracing::debug!(target: "dosim::runtime", "host {}: the directory lease is gone", lease.host);
                lease.lost.set(true);
                return;
            }
            // Unanswered: the belief lapses on its own if no later renewal succeeds.
            Ok(Err(CoordError::Unavailable(_))) | Err(_) => {}
        }
    }
}
