//! The output gate (spec §1.4, Appendix B.6).
//!
//! Every lock gets a sequence number when it is added. A [`GateWait`] remembers the next number at the time
//! of the call and resolves once no lock numbered below it is still pending; locks added later never delay
//! it. It then rejects if one of those earlier locks failed (with the error of the earliest such lock, as
//! workerd's chain of joined promises does), and resolves otherwise.
//!
//! A lock made by [`OutputGate::lock`] records its outcome in the gate when its holder releases, fails or
//! drops it; one added as a waiter ([`OutputGate::add`]) is driven by a task of its own (spawned with
//! `madsim_tokio::spawn`) that does the same. Either way the gate breaks even if nobody waits on it. One watchdog task per gate enforces
//! [`OUTPUT_LOCK_TIMEOUT`]: it sleeps until the deadline of the oldest pending lock (locks share one timeout,
//! so the oldest is due first) and fails it if it is still pending then. One timer per gate rather than one per
//! lock: a timer per lock stayed in the clock's queue for the whole timeout, and cost a fifth of a simulated
//! request. The watchdog ends with the gate. [`OutputGate::add`] must therefore be called inside a runtime
//! (the simulation, or a Tokio runtime with time enabled).
//!
//! The first failed lock marks the gate broken ([`OutputGate::on_broken`]); waits issued before it still
//! resolve normally. [`OutputGate::break_with`] is ours, not workerd's: it is what the object's abort does in
//! practice, and makes every pending and every later wait reject at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use madsim_tokio::sync::Notify;
use madsim_tokio::time::Instant;

use crate::error::{messages, Error};
use crate::storage::gates::OutputLock;

/// How long one output lock may be held before it fails and resets the object (spec §1.4, workerd
/// `HooksImpl::makeTimeoutPromise`).
pub(crate) const OUTPUT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// The error of a lock held past its timeout (spec §1.4): kj OVERLOADED with a `broken.` description.
fn timeout_error() -> Error {
    Error::new(messages::STORAGE_TIMEOUT).with_overloaded().with_reset()
}

#[derive(Debug)]
struct WaitRec {
    /// The wait covers locks numbered below this.
    upto: u64,
    outcome: Option<Result<(), Error>>,
    waker: Option<Waker>,
}

#[derive(Debug, Default)]
struct State {
    /// The number the next lock gets.
    next_lock: u64,
    /// The locks not yet ended: number → deadline.
    pending: BTreeMap<u64, Instant>,
    /// Wakes the watchdog (a lock was added to an empty gate, or the gate is gone); `None` until the first
    /// lock.
    watchdog: Option<Arc<Notify>>,
    /// The failed lock with the lowest number, and its error.
    min_failure: Option<(u64, Error)>,
    /// The first error the gate broke with, of a lock or of `break_with`.
    broken: Option<Error>,
    /// The first `break_with` error: pending and later waits reject with it.
    broken_directly: Option<Error>,
    next_id: u64,
    waits: BTreeMap<u64, WaitRec>,
    broken_waits: BTreeMap<u64, Waker>,
    wake: Vec<Waker>,
}

type Shared = Arc<Mutex<State>>;

fn with_state<R>(shared: &Shared, f: impl FnOnce(&mut State) -> R) -> R {
    let (r, wake) = {
        let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
        let r = f(&mut st);
        (r, std::mem::take(&mut st.wake))
    };
    for w in wake {
        w.wake();
    }
    r
}

impl State {
    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The outcome of a wait covering locks below `upto`, if every one of them has ended.
    fn outcome(&self, upto: u64) -> Option<Result<(), Error>> {
        if let Some(e) = &self.broken_directly {
            return Some(Err(e.clone()));
        }
        if self.pending.range(..upto).next().is_some() {
            return None;
        }
        match &self.min_failure {
            Some((seq, e)) if *seq < upto => Some(Err(e.clone())),
            _ => Some(Ok(())),
        }
    }

    fn set_broken(&mut self, error: &Error) {
        if self.broken.is_none() {
            self.broken = Some(error.clone());
            let waits = std::mem::take(&mut self.broken_waits);
            self.wake.extend(waits.into_values());
        }
    }

    /// Settles every wait that can be settled now.
    fn settle(&mut self) {
        let ready: Vec<(u64, Result<(), Error>)> = self
            .waits
            .iter()
            .filter(|(_, w)| w.outcome.is_none())
            .filter_map(|(id, w)| self.outcome(w.upto).map(|o| (*id, o)))
            .collect();
        for (id, o) in ready {
            let w = self.waits.get_mut(&id).expect("wait exists");
            w.outcome = Some(o);
            if let Some(waker) = w.waker.take() {
                self.wake.push(waker);
            }
        }
    }

    fn finish(&mut self, seq: u64, result: Result<(), Error>) {
        let removed = self.pending.remove(&seq);
        assert!(removed.is_some(), "output gate: a lock ended twice");
        if let Err(e) = result {
            if self.min_failure.as_ref().is_none_or(|(s, _)| seq < *s) {
                self.min_failure = Some((seq, e.clone()));
            }
            self.set_broken(&e);
        }
        self.settle();
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // The gate is gone: its watchdog ends.
        if let Some(notify) = &self.watchdog {
            notify.notify_one();
        }
    }
}

/// Fails every lock still pending at its deadline, oldest first; ends when the gate is dropped.
async fn watchdog(gate: std::sync::Weak<Mutex<State>>, notify: Arc<Notify>) {
    loop {
        let oldest = {
            let Some(shared) = gate.upgrade() else { return };
            with_state(&shared, |st| st.pending.iter().next().map(|(seq, deadline)| (*seq, *deadline)))
        };
        match oldest {
            None => notify.notified().await,
            Some((seq, deadline)) => {
                madsim_tokio::time::sleep_until(deadline).await;
                let Some(shared) = gate.upgrade() else { return };
                with_state(&shared, |st| {
                    if st.pending.contains_key(&seq) {
                        st.finish(seq, Err(timeout_error()));
                    }
                });
            }
        }
    }
}

/// The output gate of one Durable Object (spec §1.4): outgoing messages wait until the writes issued before
/// them are durable. Every clone is the same gate.
#[derive(Clone, Debug)]
pub(crate) struct OutputGate {
    shared: Shared,
    timeout: Duration,
}

impl Default for OutputGate {
    fn default() -> OutputGate {
        OutputGate::new()
    }
}

impl OutputGate {
    /// An open gate whose locks time out after [`OUTPUT_LOCK_TIMEOUT`].
    pub(crate) fn new() -> OutputGate {
        OutputGate::with_timeout(OUTPUT_LOCK_TIMEOUT)
    }

    /// A gate whose locks time out after `timeout` instead: for tests and embedders that cannot wait 30
    /// seconds of real time. Durable Objects semantics use [`OutputGate::new`].
    pub(crate) fn with_timeout(timeout: Duration) -> OutputGate {
        assert!(!timeout.is_zero(), "an output lock timeout must be positive");
        OutputGate { shared: Arc::new(Mutex::new(State::default())), timeout }
    }

    /// Adds a lock that ends when `waiter` resolves (workerd's `lockWhile`). A lock that fails, is
    /// canceled, or is still held after the timeout breaks the gate; the timeout's error is
    /// [`messages::STORAGE_TIMEOUT`], overloaded and reset.
    ///
    /// # Panics
    /// Outside a runtime (it spawns the task that drives the lock).
    #[cfg(test)] // Only the tests reach it: no runtime path uses it.
    pub(crate) fn add(&self, waiter: crate::storage::gates::OutputLockWaiter) {
        let seq = self.register();
        let shared = self.shared.clone();
        // Detached on purpose: the task ends when the lock ends; the watchdog may have failed it first.
        drop(madsim_tokio::spawn(async move {
            let result = waiter.wait().await;
            with_state(&shared, |st| {
                if st.pending.contains_key(&seq) {
                    st.finish(seq, result);
                }
            });
        }));
    }

    /// A new lock on the gate whose outcome is recorded when its holder releases, fails or drops it: the same
    /// as [`OutputGate::add`] with a fresh lock, without a task to wait for it.
    pub(crate) fn lock(&self) -> OutputLock {
        let seq = self.register();
        let shared = self.shared.clone();
        OutputLock::with_callback(move |result| {
            with_state(&shared, |st| {
                if st.pending.contains_key(&seq) {
                    st.finish(seq, result);
                }
            });
        })
    }

    /// Registers a new pending lock (with its deadline, starting the watchdog if needed); returns its number.
    fn register(&self) -> u64 {
        let deadline = Instant::now() + self.timeout;
        let (seq, new_watchdog) = with_state(&self.shared, |st| {
            let seq = st.next_lock;
            st.next_lock += 1;
            let was_idle = st.pending.is_empty();
            st.pending.insert(seq, deadline);
            match &st.watchdog {
                None => {
                    let notify = Arc::new(Notify::new());
                    st.watchdog = Some(notify.clone());
                    (seq, Some(notify))
                }
                Some(notify) => {
                    if was_idle {
                        notify.notify_one();
                    }
                    (seq, None)
                }
            }
        });
        if let Some(notify) = new_watchdog {
            // Detached on purpose: it ends when the gate is dropped.
            drop(madsim_tokio::spawn(watchdog(Arc::downgrade(&self.shared), notify)));
        }
        seq
    }

    /// Resolves when every lock added before this call has ended; locks added later do not delay it.
    /// Rejects if one of those locks failed, and at once (even with locks pending) after
    /// [`OutputGate::break_with`].
    ///
    /// Cancel safety: dropping the wait affects nothing else.
    pub(crate) fn wait(&self) -> GateWait {
        let id = with_state(&self.shared, |st| {
            let upto = st.next_lock;
            let outcome = st.outcome(upto);
            let id = st.id();
            st.waits.insert(id, WaitRec { upto, outcome, waker: None });
            id
        });
        GateWait { shared: self.shared.clone(), id: Some(id) }
    }

    /// Resolves with the first error the gate broke with; never otherwise.
    pub(crate) fn on_broken(&self) -> OutputBrokenWait {
        OutputBrokenWait { shared: self.shared.clone(), id: None }
    }

    /// The first error the gate broke with, if it did.
    #[cfg(test)] // Only the tests reach it: no runtime path uses it.
    pub(crate) fn broken(&self) -> Option<Error> {
        with_state(&self.shared, |st| st.broken.clone())
    }

    /// Breaks the gate directly (storage's `break_output`, the object's abort): every wait still pending
    /// and every later wait rejects with `error`, without waiting for the locks. The first such error stays;
    /// [`OutputGate::broken`] keeps the first break of any kind.
    pub(crate) fn break_with(&self, error: Error) {
        with_state(&self.shared, |st| {
            st.set_broken(&error);
            if st.broken_directly.is_none() {
                st.broken_directly = Some(error);
            }
            st.settle();
        });
    }

    /// How many locks have not ended yet.
    pub(crate) fn pending(&self) -> usize {
        with_state(&self.shared, |st| st.pending.len())
    }

    /// The watchdog's wake-up handle, weakly: it can be upgraded as long as the gate or its watchdog task
    /// holds it. `None` before the first lock.
    #[cfg(test)] // Only the tests reach it: no runtime path uses it.
    pub(crate) fn watchdog(&self) -> Option<std::sync::Weak<Notify>> {
        with_state(&self.shared, |st| st.watchdog.as_ref().map(Arc::downgrade))
    }
}

/// A pending [`OutputGate::wait`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub(crate) struct GateWait {
    shared: Shared,
    id: Option<u64>,
}

impl Future for GateWait {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let id = this.id.expect("GateWait polled after completion");
        let out = with_state(&this.shared, |st| {
            let w = st.waits.get_mut(&id).expect("wait exists while its future is pending");
            match w.outcome.take() {
                Some(o) => {
                    st.waits.remove(&id);
                    Some(o)
                }
                None => {
                    w.waker = Some(cx.waker().clone());
                    None
                }
            }
        });
        match out {
            Some(o) => {
                this.id = None;
                Poll::Ready(o)
            }
            None => Poll::Pending,
        }
    }
}

impl Drop for GateWait {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            with_state(&self.shared, |st| st.waits.remove(&id));
        }
    }
}

/// A pending [`OutputGate::on_broken`]: resolves with the error the gate broke with.
#[derive(Debug)]
pub(crate) struct OutputBrokenWait {
    shared: Shared,
    id: Option<u64>,
}

impl Future for OutputBrokenWait {
    type Output = Error;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Error> {
        let this = &mut *self;
        with_state(&this.shared, |st| {
            let State { broken, broken_waits, next_id, .. } = st;
            let new_id = || {
                *next_id += 1;
                *next_id - 1
            };
            super::poll_broken(broken, broken_waits, new_id, &mut this.id, cx)
        })
    }
}

impl Drop for OutputBrokenWait {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            with_state(&self.shared, |st| st.broken_waits.remove(&id));
        }
    }
}
