//! The runtime's tunable limits, with the spec's values as defaults.
//!
//! Each limit is a named constant next to its spec section; [`HostConfig::default`] uses them, and an
//! embedder (a scenario, a test, real mode) may change any of them.

use std::time::Duration;

use crate::storage::actor_cache::ActorCacheOptions;
use crate::storage::sqlite::SqliteSettings;

/// `blockConcurrencyWhile()`'s limit (spec §10): longer, and the object is reset.
pub(crate) const BLOCK_CONCURRENCY_TIMEOUT: Duration = Duration::from_secs(30);

/// An idle object with nothing pending is evicted (hibernated) after this long (spec §5.1: workerd's eviction
/// timer, and the docs' 10 s hibernation).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A `wait_until` task keeps an otherwise idle object alive for at most this long after its last event
/// (spec §5.1, §10).
pub(crate) const WAIT_UNTIL_MAX: Duration = Duration::from_secs(15 * 60);

/// Requests queued (delivered, not yet started) at one object before new ones are refused (spec §6.1; the
/// number is not published). With events taking ~1 ms, a backlog of 1,000 is a second of work: well above the
/// ~1,000 req/s an object is meant to sustain.
pub(crate) const QUEUED_REQUESTS_MAX: usize = 1_000;

/// Bytes of queued requests (URL, headers, body, RPC arguments) before new ones are refused (spec §6.1). 32 MiB:
/// the largest WebSocket message an object accepts (spec §11).
pub(crate) const QUEUED_BYTES_MAX: usize = 32 * 1024 * 1024;

/// A new request is refused while the oldest queued one has waited longer than this (spec §6.1).
pub(crate) const QUEUE_AGE_MAX: Duration = Duration::from_secs(10);

/// The window of the "extreme overload" rule (spec §6.1: "within a 10 second window").
pub(crate) const OVERLOAD_WINDOW: Duration = Duration::from_secs(10);

/// Requests accepted by one object within [`OVERLOAD_WINDOW`] before new ones are refused: ten times the
/// documented soft limit of 1,000 req/s (spec §6.1, §11), so only extreme overload trips it.
pub(crate) const WINDOW_REQUESTS_MAX: u64 = 100_000;

/// Limits on one object's incoming queue (spec §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverloadLimits {
    /// See `QUEUED_REQUESTS_MAX`.
    pub queued_requests_max: usize,
    /// See `QUEUED_BYTES_MAX`.
    pub queued_bytes_max: usize,
    /// See `QUEUE_AGE_MAX`.
    pub queue_age_max: Duration,
    /// See `WINDOW_REQUESTS_MAX`.
    pub window_requests_max: u64,
}

impl Default for OverloadLimits {
    fn default() -> OverloadLimits {
        OverloadLimits {
            queued_requests_max: QUEUED_REQUESTS_MAX,
            queued_bytes_max: QUEUED_BYTES_MAX,
            queue_age_max: QUEUE_AGE_MAX,
            window_requests_max: WINDOW_REQUESTS_MAX,
        }
    }
}

/// When idle objects leave memory (spec §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvictionConfig {
    /// See `IDLE_TIMEOUT`.
    pub idle_timeout: Duration,
    /// See `WAIT_UNTIL_MAX`.
    pub wait_until_max: Duration,
    /// Never evict for inactivity (workerd's `preventEviction`). Injected evictions still happen.
    pub prevent_eviction: bool,
}

impl Default for EvictionConfig {
    fn default() -> EvictionConfig {
        EvictionConfig { idle_timeout: IDLE_TIMEOUT, wait_until_max: WAIT_UNTIL_MAX, prevent_eviction: false }
    }
}

/// Everything a host's objects run under.
#[derive(Clone, Debug, Default)]
pub struct HostConfig {
    /// Incoming queue limits, per object.
    pub overload: OverloadLimits,
    /// Idle eviction.
    pub eviction: EvictionConfig,
    /// Alarm retries and limits.
    pub alarms: crate::alarm::AlarmConfig,
    /// The SQLite backend's compatibility settings.
    pub sqlite: SqliteSettings,
    /// The KV backend's cache limits.
    pub actor_cache: ActorCacheOptions,
}
