//! Each node's wall clock: simulated true time plus the node's skew.

use std::time::Duration;
#[cfg(madsim)]
use std::time::UNIX_EPOCH;

use crate::context;

/// The wall-clock time of a world without madsim ([`crate::LocalWorld`]): 2026-01-01T00:00:00Z.
pub const LOCAL_EPOCH_UNIX_SECS: u64 = 1_767_225_600;

/// The wall-clock time of the node whose task is running, in milliseconds since the Unix epoch.
///
/// It is simulated true time shifted by the node's clock skew. On the controller, or outside a run, it is
/// simulated true time (or [`LOCAL_EPOCH_UNIX_SECS`] without madsim).
pub fn unix_now() -> Duration {
    let base = true_unix_now();
    let Some(ctx) = context::try_current() else { return base };
    let skew =
        ctx.current_node().and_then(|n| ctx.nodes.get(n.0 as usize)).map(|n| n.clock_skew_ns).unwrap_or(0);
    if skew >= 0 {
        base + Duration::from_nanos(skew as u64)
    } else {
        base.saturating_sub(Duration::from_nanos(skew.unsigned_abs()))
    }
}

/// Simulated true time since the Unix epoch, before any node's skew.
pub fn true_unix_now() -> Duration {
    #[cfg(madsim)]
    {
        if let Some(t) = madsim::time::TimeHandle::try_current() {
            return t.now_time().duration_since(UNIX_EPOCH).unwrap_or_default();
        }
    }
    let elapsed = context::try_current().map(|c| c.now()).unwrap_or_default();
    Duration::from_secs(LOCAL_EPOCH_UNIX_SECS) + elapsed
}
