//! The two gates of a Durable Object (spec §1): the input gate, which keeps the object's turns and its
//! critical sections from interleaving with other events, and the output gate, which holds outgoing messages
//! until the writes they may depend on are durable.
//!
//! - [`InputGate`] (spec §1.2): FIFO locks, handed to one waiter per release; locks are reference-counted
//!   ([`InputLock`] clones).
//! - [`CriticalSection`] (spec §1.3, `blockConcurrencyWhile()`, `storage.transaction()`): started from a
//!   held lock; while it runs, its parent hands out locks only through it. Failing one, or dropping a running
//!   one, breaks the input gate for good.
//! - [`OutputGate`] (spec §1.4): a wait covers the locks added before it; a failed, canceled or timed-out
//!   lock ([`OUTPUT_LOCK_TIMEOUT`]) breaks the gate.
//!
//! Both follow workerd's `io/io-gate.h`; the conformance statements are Appendix B of the spec. All types are
//! `Send + Sync`, and every future they return is `Send + 'static` and borrows nothing.

mod input;
mod output;

use std::collections::BTreeMap;
use std::task::{Context, Poll, Waker};

use crate::error::Error;

/// One poll of an `on_broken` wait, the same for both gates: ready with the gate's error once it is broken
/// (the wait's registration, `slot`, then removed); otherwise registered under the id in `slot`, taking a new
/// one from `next_id` on the first poll.
fn poll_broken(
    broken: &Option<Error>,
    waits: &mut BTreeMap<u64, Waker>,
    next_id: impl FnOnce() -> u64,
    slot: &mut Option<u64>,
    cx: &Context<'_>,
) -> Poll<Error> {
    if let Some(e) = broken {
        if let Some(id) = slot.take() {
            waits.remove(&id);
        }
        return Poll::Ready(e.clone());
    }
    let id = *slot.get_or_insert_with(next_id);
    waits.insert(id, cx.waker().clone());
    Poll::Pending
}

pub(crate) use input::{CriticalSection, InputGate, InputLock, LockWait, CRITICAL_SECTION_DEPTH_MAX};
pub(crate) use output::{GateWait, OutputGate};

#[cfg(test)]
mod tests;
