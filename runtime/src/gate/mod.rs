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

pub use input::{BrokenWait, CriticalSection, InputGate, InputLock, LockWait, CRITICAL_SECTION_DEPTH_MAX};
pub use output::{GateWait, OutputBrokenWait, OutputGate, OUTPUT_LOCK_TIMEOUT};
