//! The narrow interface between storage and the object's event loop and gates.
//!
//! Storage needs four things from the runtime, and nothing more:
//! - to hold the input gate while a read that missed the cache is outstanding ([`TurnHooks::hold_input`],
//!   spec §1.2), so no other event interleaves;
//! - to run its commit once the current turn has ended ([`TurnHooks::after_turn`]): every write made without
//!   yielding then commits atomically (write coalescing, spec §3.2);
//! - to hold the object's output until a confirmed write is durable ([`TurnHooks::lock_output`], spec §1.4);
//! - to break the output gate when a write fails, which resets the object ([`TurnHooks::break_output`]).
//!
//! The runtime's event loop and `OutputGate` implement it; until then, tests use a small single-object harness.

use std::future::Future;
use std::sync::{Arc, Mutex};

use madsim_tokio::sync::oneshot;

use crate::error::Error;
use crate::world::Task;

/// What storage asks of the runtime.
pub trait TurnHooks: Send + Sync + 'static {
    /// Runs `task` after the current turn (the synchronous run of the object's code up to its next `.await`),
    /// before the object's next event is delivered.
    fn after_turn(&self, task: Task);

    /// Locks the output gate: outgoing messages issued from now on wait until the lock is released. Dropping
    /// the lock without releasing it counts as a failure (spec §1.4: "output lock was canceled before
    /// completion").
    fn lock_output(&self) -> OutputLock;

    /// Breaks the output gate with `error` (a write failed): held and future output is never sent, and the
    /// object resets.
    fn break_output(&self, error: Error);

    /// Holds the input gate: no other event is delivered to the object until the returned hold drops.
    fn hold_input(&self) -> InputHold;
}

/// A hold on the input gate (spec §1.2); the gate opens again when every hold has dropped.
pub struct InputHold {
    on_release: Option<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for InputHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InputHold")
    }
}

impl InputHold {
    /// A hold that calls `on_release` when it drops.
    pub fn new(on_release: impl FnOnce() + Send + 'static) -> InputHold {
        InputHold { on_release: Some(Box::new(on_release)) }
    }
}

impl Drop for InputHold {
    fn drop(&mut self) {
        if let Some(f) = self.on_release.take() {
            f();
        }
    }
}

/// The message of an output lock dropped without being released (spec §1.4).
pub(crate) const OUTPUT_LOCK_CANCELED: &str = "output lock was canceled before completion";

/// Where an [`OutputLock`]'s outcome goes.
type LockOutcome = Box<dyn FnOnce(Result<(), Error>) + Send>;

/// One lock on the output gate, held by storage until its write is durable.
pub struct OutputLock {
    done: Option<LockOutcome>,
}

impl std::fmt::Debug for OutputLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputLock").field("held", &self.done.is_some()).finish()
    }
}

/// The gate's side of an [`OutputLock`]: resolves when the lock is released or fails.
#[derive(Debug)]
pub struct OutputLockWaiter {
    rx: oneshot::Receiver<Result<(), Error>>,
}

impl OutputLock {
    /// A new lock and the waiter the gate keeps for it.
    pub fn new() -> (OutputLock, OutputLockWaiter) {
        let (tx, rx) = oneshot::channel();
        let lock = OutputLock::with_callback(move |outcome| {
            let _ = tx.send(outcome);
        });
        (lock, OutputLockWaiter { rx })
    }

    /// A lock whose outcome goes straight to `done` (a gate that records it itself, with no task to wait).
    pub fn with_callback(done: impl FnOnce(Result<(), Error>) + Send + 'static) -> OutputLock {
        OutputLock { done: Some(Box::new(done)) }
    }

    /// The write is durable: output may flow.
    pub fn release(mut self) {
        if let Some(done) = self.done.take() {
            done(Ok(()));
        }
    }

    /// The write failed: the gate breaks with `error`.
    pub fn fail(mut self, error: Error) {
        if let Some(done) = self.done.take() {
            done(Err(error));
        }
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done(Err(Error::new(OUTPUT_LOCK_CANCELED)));
        }
    }
}

impl OutputLockWaiter {
    /// Waits for the lock's outcome.
    ///
    /// Cancel safety: dropping the wait loses nothing the lock holder needs.
    pub async fn wait(self) -> Result<(), Error> {
        self.rx.await.unwrap_or_else(|_| Err(Error::new(OUTPUT_LOCK_CANCELED)))
    }
}

/// Shared handle to the hooks.
pub(crate) type Hooks = Arc<dyn TurnHooks>;

/// A minimal event loop for one object, driven by hand: the caller says when a turn ends. It stands in for the
/// runtime where there is none (storage tests, tools) and records what storage asked of it.
///
/// It runs tasks with [`block_on`] on the calling thread, so it is not for use inside a simulation, where a
/// task waiting on the simulated clock would never wake.
#[derive(Default)]
pub struct ManualTurns {
    deferred: Mutex<Vec<Task>>,
    locks: Mutex<Vec<OutputLockWaiter>>,
    broken: Mutex<Vec<Error>>,
    input_holds: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for ManualTurns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManualTurns")
            .field("pending_tasks", &self.pending_tasks())
            .field("locks_taken", &self.locks_taken())
            .field("input_holds", &self.input_holds())
            .finish()
    }
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TurnHooks for ManualTurns {
    fn after_turn(&self, task: Task) {
        guard(&self.deferred).push(task);
    }
    fn lock_output(&self) -> OutputLock {
        let (lock, waiter) = OutputLock::new();
        guard(&self.locks).push(waiter);
        lock
    }
    fn break_output(&self, error: Error) {
        guard(&self.broken).push(error);
    }
    fn hold_input(&self) -> InputHold {
        use std::sync::atomic::Ordering;
        self.input_holds.fetch_add(1, Ordering::SeqCst);
        let holds = self.input_holds.clone();
        InputHold::new(move || {
            holds.fetch_sub(1, Ordering::SeqCst);
        })
    }
}

impl ManualTurns {
    /// Ends the current turn: runs every task storage deferred to it, to completion, on this thread.
    pub fn end_turn(&self) {
        let tasks: Vec<Task> = std::mem::take(&mut *guard(&self.deferred));
        for t in tasks {
            block_on(t);
        }
    }

    /// How many tasks wait for the end of the turn.
    pub fn pending_tasks(&self) -> usize {
        guard(&self.deferred).len()
    }

    /// How many output locks are taken and not yet collected by [`ManualTurns::lock_outcomes`].
    pub fn locks_taken(&self) -> usize {
        guard(&self.locks).len()
    }

    /// Collects the outcome of every output lock taken so far, waiting for each.
    pub fn lock_outcomes(&self) -> Vec<Result<(), Error>> {
        std::mem::take(&mut *guard(&self.locks)).into_iter().map(|w| block_on(w.wait())).collect()
    }

    /// How many input-gate holds are outstanding now.
    pub fn input_holds(&self) -> usize {
        self.input_holds.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The errors the output gate was broken with (without a lock).
    pub fn gate_breaks(&self) -> Vec<Error> {
        guard(&self.broken).clone()
    }
}

/// Runs a future to completion on this thread, parking while it waits.
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_releases_fails_or_cancels() {
        let (l, w) = OutputLock::new();
        l.release();
        assert_eq!(block_on(w.wait()), Ok(()));
        let (l, w) = OutputLock::new();
        l.fail(Error::new("disk on fire"));
        assert_eq!(block_on(w.wait()).unwrap_err().message(), "disk on fire");
        let (l, w) = OutputLock::new();
        drop(l);
        assert_eq!(block_on(w.wait()).unwrap_err().message(), OUTPUT_LOCK_CANCELED);
    }
}
