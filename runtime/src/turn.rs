//! Turns: how an event's future runs under the input gate, one poll at a time (spec §1.1).
//!
//! Every event delivered to an instance (a request, an RPC call, an alarm, a `wait_until` task, the
//! constructor) is an [`EventSlot`] whose future is wrapped in a [`Gated`] future. Each poll of it is one
//! turn: it first takes a lock on the input gate (FIFO among waiting events), then polls the event's future
//! with the lock held, then runs what storage deferred to the end of the turn (the implicit transaction's
//! commit, spec §3.2), and only then releases the lock. So turns of one object never overlap, and between
//! two turns of an event other events may run (spec §1.2: ordinary awaits do not hold the gate).
//!
//! Two things keep the gate locked across an await:
//! - a storage read that missed the cache ([`TurnHooks::hold_input`]): the hold is a clone of the turn's
//!   lock, and the event's next turn runs under it, so its continuation runs before any other event;
//! - a critical section (`block_concurrency_while`): the event's turns take their locks from the section,
//!   and the gate hands no lock to anyone else until it ends.
//!
//! The turn's context (which instance, which slot, which lock) is kept in a thread-local while the event's
//! future is polled: an instance runs on one thread, and storage calls and `block_concurrency_while` find
//! their turn through it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::config::BLOCK_CONCURRENCY_TIMEOUT;
use crate::error::{messages, Error};
use crate::future::LocalFuture;
use crate::gate::{CriticalSection, InputGate, InputLock, LockWait, OutputGate, CRITICAL_SECTION_DEPTH_MAX};
use crate::storage::api::ObjectHooks;
use crate::storage::gates::{InputHold, OutputLock, TurnHooks};
use crate::world::Task;

/// One event's place in the instance: where its turns take their locks.
pub(crate) struct EventSlot {
    pub(crate) id: u64,
    /// Critical sections this event is inside, innermost last; empty: locks come from the gate.
    sections: RefCell<Vec<CriticalSection>>,
    /// The first lock of a critical section just started by this event, not yet handed over.
    section_start: RefCell<Option<LockWait>>,
}

impl EventSlot {
    pub(crate) fn new(id: u64) -> Rc<EventSlot> {
        Rc::new(EventSlot { id, sections: RefCell::new(Vec::new()), section_start: RefCell::new(None) })
    }

    /// Where this event's next turn waits for its lock.
    fn wait_for_lock(&self, gate: &InputGate) -> LockWait {
        match self.sections.borrow().last() {
            Some(cs) => cs.wait(),
            None => gate.wait(),
        }
    }

    /// Enters `cs`, started during this turn: its first lock is `first`.
    pub(crate) fn enter_section(&self, cs: CriticalSection, first: LockWait) {
        self.sections.borrow_mut().push(cs);
        let previous = self.section_start.borrow_mut().replace(first);
        assert!(previous.is_none(), "one critical section starts per turn of an event");
    }

    /// Leaves the innermost critical section, which must be `cs`.
    pub(crate) fn leave_section(&self, depth: usize) {
        let mut sections = self.sections.borrow_mut();
        let left = sections.pop().expect("leaving a critical section this event entered");
        assert_eq!(left.depth(), depth, "critical sections are left innermost first");
    }
}

/// The turn running now on this thread.
#[derive(Clone)]
pub(crate) struct TurnContext {
    pub(crate) slot: Rc<EventSlot>,
    pub(crate) lock: InputLock,
    pub(crate) turns: Arc<TurnQueue>,
}

thread_local! {
    static CURRENT: RefCell<Option<TurnContext>> = const { RefCell::new(None) };
}

/// The turn running now, if code is running inside an object's event.
pub(crate) fn current() -> Option<TurnContext> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Sets the current turn for the duration of a poll; restores the previous one after (turns nest when an
/// object's event polls a future of another instance inline, which the runtime never does, but the guard
/// keeps it sound).
struct CurrentGuard(Option<TurnContext>);

impl CurrentGuard {
    fn enter(ctx: TurnContext) -> CurrentGuard {
        CurrentGuard(CURRENT.with(|c| c.borrow_mut().replace(ctx)))
    }
}

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

/// What storage asks of the instance's event loop ([`TurnHooks`]), shared with storage (so `Send + Sync`).
pub(crate) struct TurnQueue {
    input: InputGate,
    output: OutputGate,
    /// Tasks to run at the end of the current turn.
    deferred: Mutex<Vec<Task>>,
    /// Input holds of storage reads: hold id → (event slot id, the lock held).
    holds: Mutex<BTreeMap<u64, (u64, InputLock)>>,
    next_hold: std::sync::atomic::AtomicU64,
    /// The class declares an alarm handler.
    alarm_handler: bool,
    /// The constructor has finished (`set_alarm` without a handler is allowed only before, spec §4).
    constructed: std::sync::atomic::AtomicBool,
    /// The earliest alarm time set during the current turn, for the scheduler before the commit.
    alarm_note: Mutex<Option<i64>>,
    /// The host's wall clock.
    clock: Arc<dyn crate::world::Clock>,
}

fn guard<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl TurnQueue {
    pub(crate) fn new(
        input: InputGate,
        output: OutputGate,
        alarm_handler: bool,
        clock: Arc<dyn crate::world::Clock>,
    ) -> Arc<TurnQueue> {
        Arc::new(TurnQueue {
            input,
            output,
            deferred: Mutex::new(Vec::new()),
            holds: Mutex::new(BTreeMap::new()),
            next_hold: std::sync::atomic::AtomicU64::new(0),
            alarm_handler,
            constructed: std::sync::atomic::AtomicBool::new(false),
            alarm_note: Mutex::new(None),
            clock,
        })
    }

    /// The instance's output gate.
    pub(crate) fn output_gate(&self) -> &OutputGate {
        &self.output
    }

    /// The constructor finished.
    pub(crate) fn set_constructed(&self) {
        self.constructed.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The earliest alarm time set since the last call.
    pub(crate) fn take_alarm_note(&self) -> Option<i64> {
        guard(&self.alarm_note).take()
    }

    /// A lock `slot` holds across an await (a storage read), if any.
    fn held_by(&self, slot: u64) -> Option<InputLock> {
        guard(&self.holds).values().find(|(s, _)| *s == slot).map(|(_, l)| l.clone())
    }

    /// Runs the tasks deferred to the end of the turn: each is polled once now (a commit happens
    /// synchronously in that poll) and, if it waits for more (durability), continues as its own task.
    fn run_deferred(&self) {
        loop {
            let tasks: Vec<Task> = std::mem::take(&mut *guard(&self.deferred));
            if tasks.is_empty() {
                return;
            }
            for mut task in tasks {
                let mut cx = Context::from_waker(Waker::noop());
                if task.as_mut().poll(&mut cx).is_pending() {
                    // The spawned task polls it again at once, with a real waker.
                    drop(madsim_tokio::task::spawn(task));
                }
            }
        }
    }

    /// Drops every hold (the instance is gone).
    pub(crate) fn clear(&self) {
        guard(&self.holds).clear();
        guard(&self.deferred).clear();
    }
}

impl ObjectHooks for TurnQueue {
    fn now_ms(&self) -> Option<i64> {
        Some(self.clock.now_ms())
    }

    fn critical_section<'a>(&self, body: LocalFuture<'a, ()>) -> LocalFuture<'a, Result<(), Error>> {
        if current().is_none() {
            // Not inside an event (an embedder's own call): nothing to hold.
            return Box::pin(async move {
                body.await;
                Ok(())
            });
        }
        Box::pin(critical_section(async move {
            body.await;
            Ok(())
        }))
    }

    fn before_set_alarm(&self, scheduled_ms: i64) -> Result<(), Error> {
        if !self.alarm_handler && self.constructed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::type_error(crate::error::messages::ALARM_HANDLER_REQUIRED));
        }
        let mut note = guard(&self.alarm_note);
        *note = Some(note.map_or(scheduled_ms, |t| t.min(scheduled_ms)));
        Ok(())
    }
}

impl TurnHooks for TurnQueue {
    fn after_turn(&self, task: Task) {
        if current().is_some() {
            guard(&self.deferred).push(task);
        } else {
            // Not inside a turn (a background flush rescheduling itself): nothing to wait for.
            drop(madsim_tokio::task::spawn(task));
        }
    }

    fn lock_output(&self) -> OutputLock {
        self.output.lock()
    }

    fn break_output(&self, error: Error) {
        self.output.break_with(error);
    }

    fn hold_input(&self) -> InputHold {
        let Some(turn) = current() else { return InputHold::new(|| {}) };
        assert!(
            std::ptr::eq(Arc::as_ptr(&turn.turns), self),
            "an object's storage is used only inside that object's own events"
        );
        let id = self.next_hold.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        guard(&self.holds).insert(id, (turn.slot.id, turn.lock.clone()));
        let turns = turn.turns.clone();
        InputHold::new(move || {
            guard(&turns.holds).remove(&id);
        })
    }
}

/// An event's future, run one turn per poll under the input gate.
pub(crate) struct Gated<T> {
    slot: Rc<EventSlot>,
    turns: Arc<TurnQueue>,
    waiting: Option<LockWait>,
    inner: LocalFuture<'static, T>,
    /// Runs at the end of every turn, before storage's deferred tasks (the alarm scheduler's note).
    end_turn: Rc<dyn Fn()>,
}

impl<T> Gated<T> {
    /// Wraps `inner`; its first lock is `first` (asked for when the event was delivered, so events start in
    /// delivery order).
    pub(crate) fn new(
        slot: Rc<EventSlot>,
        turns: Arc<TurnQueue>,
        first: LockWait,
        inner: LocalFuture<'static, T>,
        end_turn: Rc<dyn Fn()>,
    ) -> Self {
        Gated { slot, turns, waiting: Some(first), inner, end_turn }
    }
}

impl<T> Future for Gated<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        // The lock of this turn: a hold this event keeps across a storage read, the first lock of a critical
        // section it just entered, or a fresh one from the gate (or its innermost critical section).
        let lock = if let Some(lock) = this.turns.held_by(this.slot.id) {
            lock
        } else {
            let start = this.slot.section_start.borrow_mut().take();
            if let Some(start) = start {
                // The new section's first lock replaces whatever this event was waiting for.
                this.waiting = Some(start);
            }
            let wait = this.waiting.get_or_insert_with(|| this.slot.wait_for_lock(&this.turns.input));
            match Pin::new(wait).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    this.waiting = None;
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(lock)) => {
                    this.waiting = None;
                    lock
                }
            }
        };
        let ctx = TurnContext { slot: this.slot.clone(), lock, turns: this.turns.clone() };
        let result = {
            let _current = CurrentGuard::enter(ctx.clone());
            this.inner.as_mut().poll(cx)
        };
        // The end of the turn: storage commits before the lock goes, so no other event runs in between.
        (this.end_turn)();
        this.turns.run_deferred();
        drop(ctx);
        match result {
            Poll::Ready(v) => Poll::Ready(Ok(v)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Yields once: the event's turn ends, so its next turn takes the lock of the critical section just entered.
struct EndTurn(bool);

impl Future for EndTurn {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The critical section behind `block_concurrency_while` and the constructor (spec §1.3).
pub(crate) async fn critical_section<R>(f: impl Future<Output = Result<R, Error>>) -> Result<R, Error> {
    let Some(turn) = current() else {
        return Err(Error::new(messages::BLOCK_CONCURRENCY_OUTSIDE_EVENT));
    };
    let cs = turn.lock.start_critical_section();
    let depth = cs.depth();
    if depth > CRITICAL_SECTION_DEPTH_MAX {
        return Err(Error::new(messages::BLOCK_CONCURRENCY_NESTED_TOO_DEEPLY));
    }
    let first = cs.wait();
    turn.slot.enter_section(cs.clone(), first);
    drop(turn);
    EndTurn(false).await;
    let outcome = madsim_tokio::time::timeout(BLOCK_CONCURRENCY_TIMEOUT, f).await;
    let error = match outcome {
        Ok(Ok(value)) => {
            let turn = current().expect("a critical section ends inside its event");
            turn.slot.leave_section(depth);
            cs.succeeded();
            return Ok(value);
        }
        Ok(Err(e)) => {
            if e.durable_object_reset() {
                e
            } else {
                e.with_reset()
            }
        }
        Err(_elapsed) => Error::new(messages::BLOCK_CONCURRENCY_TIMEOUT).with_overloaded().with_reset(),
    };
    // The gate breaks and the instance resets; this event is cancelled, so this call never returns.
    cs.failed(error);
    std::future::pending().await
}

#[cfg(test)]
mod tests;
