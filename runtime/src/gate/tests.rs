//! Conformance of the input and output gates: one or more tests per statement of spec Appendix B (after
//! workerd's `io/io-gate-test.c++`), plus the details of spec §1.3 and §1.4.
//!
//! Input-gate futures are polled by hand with wakers that record whether they fired, so a test can say
//! exactly who was woken by a release. Output-gate locks are driven by tasks, so those tests run inside a
//! runtime: the simulation under `cfg(madsim)`, a current-thread Tokio runtime otherwise.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use crate::error::messages;
use crate::error::Error;
use crate::gate::output::OUTPUT_LOCK_TIMEOUT;
use crate::gate::{CriticalSection, InputGate, InputLock, OutputGate, CRITICAL_SECTION_DEPTH_MAX};
use crate::storage::gates::{OutputLock, OUTPUT_LOCK_CANCELED};

// ------------------------------------------------------------------------------------------------------------
// Driver

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Flag(AtomicUsize);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Flag {
    fn woken(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A future under test, polled by hand with its own counting waker.
struct Probe<F> {
    fut: F,
    flag: Arc<Flag>,
}

impl<F: Future + Unpin> Probe<F> {
    fn new(fut: F) -> Probe<F> {
        Probe { fut, flag: Arc::new(Flag::default()) }
    }

    fn poll(&mut self) -> Option<F::Output> {
        let waker = Waker::from(self.flag.clone());
        match Pin::new(&mut self.fut).poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        }
    }

    /// Polls, expecting it ready.
    fn ready(&mut self) -> F::Output {
        self.poll().expect("expected the future to be ready")
    }

    /// Polls, expecting it pending.
    fn pending(&mut self) {
        assert!(self.poll().is_none(), "expected the future to be pending");
    }

    fn woken(&self) -> usize {
        self.flag.woken()
    }
}

fn probe<F: Future + Unpin>(fut: F) -> Probe<F> {
    Probe::new(fut)
}

/// Takes a lock on the top-level gate that must be free.
fn lock(gate: &InputGate) -> InputLock {
    probe(gate.wait()).ready().expect("the gate is not broken")
}

/// Takes a lock in `cs` that must be available at once.
fn cs_lock(cs: &CriticalSection) -> InputLock {
    probe(cs.wait()).ready().expect("the gate is not broken")
}

/// A critical section started from a fresh top-level lock, which is then dropped.
fn top_cs(gate: &InputGate) -> CriticalSection {
    lock(gate).start_critical_section()
}

fn assert_broken_with<T: std::fmt::Debug>(r: Result<T, Error>, message: &str) {
    assert_eq!(r.expect_err("expected the gate to be broken").message(), message);
}

/// Runs `f` to completion inside a runtime that can spawn tasks and keep time.
fn run<F: Future<Output = ()> + Send + 'static>(f: F) {
    #[cfg(madsim)]
    madsim_tokio::madsim::runtime::Runtime::new().block_on(f);
    #[cfg(not(madsim))]
    madsim_tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a Tokio runtime")
        .block_on(f);
}

/// Lets the lock tasks run: they are ready (their locks ended), so a few yields suffice.
async fn let_tasks_run() {
    for _ in 0..8 {
        madsim_tokio::task::yield_now().await;
    }
}

// ------------------------------------------------------------------------------------------------------------
// Appendix B.1: InputGate basics.

#[test]
fn appendix_b_1_first_waiter_gets_the_lock_at_once_others_wait() {
    let gate = InputGate::new();
    assert!(!gate.is_locked());
    let mut w1 = probe(gate.wait());
    let mut w2 = probe(gate.wait());
    let mut w3 = probe(gate.wait());
    assert!(gate.is_locked(), "the first waiter owns the lock even before it is polled");
    assert_eq!(gate.waiting(), 2);
    let l1 = w1.ready().unwrap();
    w2.pending();
    w3.pending();
    drop(l1);
    assert_eq!((w2.woken(), w3.woken()), (1, 0));
    let _l2 = w2.ready().unwrap();
    w3.pending();
    assert_eq!(gate.waiting(), 1);
    assert!(gate.broken().is_none());
    probe(gate.on_broken()).pending();
}

#[test]
fn appendix_b_1_a_duplicated_lock_keeps_the_gate_closed_until_every_copy_drops() {
    let gate = InputGate::new();
    let l = lock(&gate);
    let mut w = probe(gate.wait());
    w.pending();
    let copy = l.clone();
    drop(l);
    w.pending();
    assert_eq!(w.woken(), 0);
    assert!(gate.is_locked());
    drop(copy);
    assert_eq!(w.woken(), 1);
    w.ready().unwrap();
}

#[test]
fn appendix_b_1_waiters_are_released_one_at_a_time_in_fifo_order() {
    let gate = InputGate::new();
    let first = lock(&gate);
    let mut ws: Vec<_> = (0..5).map(|_| probe(gate.wait())).collect();
    for w in &mut ws {
        w.pending();
    }
    let mut held = first;
    for i in 0..ws.len() {
        drop(held);
        let woken: Vec<usize> = ws.iter().map(Probe::woken).collect();
        let expected: Vec<usize> = (0..ws.len()).map(|j| usize::from(j <= i)).collect();
        assert_eq!(woken, expected, "exactly one waiter is woken per release, in order");
        for w in &mut ws[i + 1..] {
            w.pending();
        }
        held = ws[i].ready().unwrap();
    }
    drop(held);
    assert!(!gate.is_locked());
}

#[test]
fn appendix_b_1_cancelled_waiters_are_skipped() {
    let gate = InputGate::new();
    let l = lock(&gate);
    let mut w1 = probe(gate.wait());
    let w2 = probe(gate.wait());
    let mut w3 = probe(gate.wait());
    w1.pending();
    w3.pending();
    drop(w2);
    assert_eq!(gate.waiting(), 2);
    drop(l);
    let l1 = w1.ready().unwrap();
    w3.pending();
    drop(l1);
    assert_eq!(w3.woken(), 1);
    w3.ready().unwrap();
}

#[test]
fn appendix_b_1_a_lock_handed_to_an_unpolled_waiter_is_released_when_the_wait_drops() {
    let gate = InputGate::new();
    let l = lock(&gate);
    let w1 = probe(gate.wait());
    let mut w2 = probe(gate.wait());
    drop(l);
    // w1 owns the lock now, although nobody polled it.
    assert!(gate.is_locked());
    w2.pending();
    assert_eq!(gate.waiting(), 1);
    drop(w1);
    assert_eq!(w2.woken(), 1);
    let l2 = w2.ready().unwrap();
    drop(l2);
    assert!(!gate.is_locked());
}

// ------------------------------------------------------------------------------------------------------------
// Appendix B.2: a critical section blocks top-level waiters; inside it, locks go one at a time.

#[test]
fn appendix_b_2_a_critical_section_blocks_top_level_waiters_until_it_succeeds() {
    let gate = InputGate::new();
    let cs = top_cs(&gate);
    {
        let first = cs_lock(&cs);
        let mut w1 = probe(cs.wait());
        let mut w2 = probe(cs.wait());
        w1.pending();
        w2.pending();
        drop(first);
        assert_eq!((w1.woken(), w2.woken()), (1, 0));
        let l1 = w1.ready().unwrap();
        w2.pending();
        drop(l1);
        w2.ready().unwrap();
    }
    // No lock in the section is held now, but the top level still waits for it.
    let mut outer = probe(gate.wait());
    outer.pending();
    assert!(gate.is_locked());
    {
        let _l = cs_lock(&cs);
        cs.succeeded();
        outer.pending();
        assert_eq!(outer.woken(), 0, "a lock adopted from the section still holds the gate");
    }
    assert_eq!(outer.woken(), 1);
    outer.ready().unwrap();
}

#[test]
fn appendix_b_2_while_a_section_runs_the_gate_hands_out_nothing_else() {
    let gate = InputGate::new();
    let cs = top_cs(&gate);
    let inner = cs_lock(&cs);
    let mut top = probe(gate.wait());
    top.pending();
    drop(inner);
    assert_eq!(top.woken(), 0, "releasing a lock inside the section does not open the gate");
    top.pending();
    cs.succeeded();
    top.ready().unwrap();
}

// ------------------------------------------------------------------------------------------------------------
// Appendix B.3: two critical sections created together run sequentially.

#[test]
fn appendix_b_3_two_critical_sections_created_together_run_sequentially() {
    let gate = InputGate::new();
    let (cs1, cs2) = {
        let l = lock(&gate);
        (l.start_critical_section(), l.start_critical_section())
    };
    let l1 = cs_lock(&cs1);
    let mut start2 = probe(cs2.wait());
    start2.pending();
    drop(l1);
    start2.pending();
    assert_eq!(start2.woken(), 0, "the second section waits for the first to finish, not to unlock");
    cs1.succeeded();
    assert_eq!(start2.woken(), 1);
    start2.ready().unwrap();
}

#[test]
fn appendix_b_3_sections_started_under_the_creating_lock_run_in_creation_order() {
    // blockConcurrencyWhile() waits on each section as it creates it, under the creating lock.
    let gate = InputGate::new();
    let l = lock(&gate);
    let cs1 = l.start_critical_section();
    let mut s1 = probe(cs1.wait());
    let cs2 = l.start_critical_section();
    let mut s2 = probe(cs2.wait());
    let mut top = probe(gate.wait());
    s1.pending();
    s2.pending();
    drop(l);
    assert_eq!((s1.woken(), s2.woken(), top.woken()), (1, 0, 0));
    let l1 = s1.ready().unwrap();
    drop(l1);
    cs1.succeeded();
    assert_eq!((s2.woken(), top.woken()), (1, 0), "child waiters go before ordinary ones");
    let l2 = s2.ready().unwrap();
    top.pending();
    drop(l2);
    cs2.succeeded();
    assert_eq!(top.woken(), 1);
    top.ready().unwrap();
}

// ------------------------------------------------------------------------------------------------------------
// Appendix B.4: nesting, a child outliving its parent, deep nesting, teardown without stack overflow.

#[test]
fn appendix_b_4_a_nested_section_blocks_its_parent_until_it_succeeds() {
    let gate = InputGate::new();
    let cs1 = top_cs(&gate);
    let cs2 = cs_lock(&cs1).start_critical_section();
    assert_eq!((cs1.depth(), cs2.depth()), (1, 2));
    let _l2 = cs_lock(&cs2);
    let mut w1 = probe(cs1.wait());
    w1.pending();
    cs2.succeeded();
    w1.pending();
    assert_eq!(w1.woken(), 0, "the adopted lock still holds cs1");
    drop(_l2);
    assert_eq!(w1.woken(), 1);
    w1.ready().unwrap();
}

#[test]
fn appendix_b_4_a_nested_section_that_outlives_its_parent_still_holds_the_root() {
    let gate = InputGate::new();
    let cs1 = top_cs(&gate);
    let cs2 = cs_lock(&cs1).start_critical_section();
    drop(cs_lock(&cs2));
    cs1.succeeded();
    let mut root = probe(gate.wait());
    root.pending();
    drop(cs1);
    root.pending();
    cs2.succeeded();
    assert_eq!(root.woken(), 1);
    root.ready().unwrap();
    assert!(gate.broken().is_none());
}

#[test]
fn appendix_b_4_deeply_nested_sections_adopt_waiters_and_keep_exclusivity() {
    let gate = InputGate::new();
    let cs1 = top_cs(&gate);
    let cs2 = cs_lock(&cs1).start_critical_section();
    let (cs3, cs4) = {
        let l = cs_lock(&cs2);
        (l.start_critical_section(), l.start_critical_section())
    };
    let lock = cs_lock(&cs2);
    let mut w1 = probe(cs2.wait());
    let w2 = probe(cs2.wait());
    let mut w3 = probe(cs3.wait());
    let w4 = probe(cs4.wait());
    for p in [&mut w1, &mut w3] {
        assert!(p.poll().is_none());
    }
    cs2.succeeded();
    drop(cs2);
    w1.pending();
    w3.pending();
    drop(w2);
    drop(w4);
    drop(lock);
    // cs3 (a child waiter, adopted by cs1) starts before the ordinary waiter w1.
    assert_eq!((w1.woken(), w3.woken()), (0, 1));
    w1.pending();
    let lock2 = w3.ready().unwrap();
    let w5 = probe(cs3.wait());
    let mut w6 = probe(gate.wait());
    w6.pending();
    cs1.succeeded();
    cs3.succeeded();
    drop(w5);
    w6.pending();
    drop(lock2);
    assert_eq!((w6.woken(), w1.woken()), (1, 0), "w6 queued at the root before w1 was adopted there");
    let l6 = w6.ready().unwrap();
    w1.pending();
    drop(l6);
    w1.ready().unwrap();
}

#[test]
fn appendix_b_4_a_lock_that_outlives_its_section_is_adopted_by_the_gate() {
    let gate = InputGate::new();
    let cs = top_cs(&gate);
    let l = cs_lock(&cs);
    cs.succeeded();
    drop(cs);
    let dup = l.clone();
    drop(dup);
    let mut w = probe(gate.wait());
    w.pending();
    drop(l);
    assert_eq!(w.woken(), 1);
    w.ready().unwrap();
    assert!(gate.broken().is_none());
}

/// A chain of running sections, each started from a lock of the previous; only the innermost section and
/// lock are returned, the rest are held by the chain itself.
fn chain(gate: &InputGate, depth: usize) -> (CriticalSection, InputLock) {
    let mut cs = top_cs(gate);
    let mut lock = cs_lock(&cs);
    for _ in 1..depth {
        let child = lock.start_critical_section();
        drop(lock);
        lock = cs_lock(&child);
        cs = child;
    }
    (cs, lock)
}

#[test]
fn appendix_b_4_tearing_down_ten_thousand_nested_sections_does_not_overflow_the_stack() {
    let gate = InputGate::new();
    let (cs, lock) = chain(&gate, 10_000);
    assert_eq!(cs.depth(), 10_000);
    let mut broken = probe(gate.on_broken());
    broken.pending();
    drop(lock);
    drop(cs);
    // The innermost section was running: dropping it is the deadlock failure.
    assert_eq!(broken.woken(), 1);
    assert_eq!(broken.ready().message(), messages::CRITICAL_SECTION_DEADLOCK);
    assert_broken_with(probe(gate.wait()).ready(), messages::CRITICAL_SECTION_DEADLOCK);
    assert!(!gate.is_locked(), "every parent lock of the chain was released");
}

#[test]
fn appendix_b_4_a_wait_forwarded_through_ten_thousand_reparented_sections() {
    let gate = InputGate::new();
    let mut css = vec![top_cs(&gate)];
    let mut lock = cs_lock(&css[0]);
    for _ in 1..10_000 {
        let child = lock.start_critical_section();
        drop(lock);
        lock = cs_lock(&child);
        css.push(child);
    }
    drop(lock);
    let holder = lock_of_root_after_success(&gate, &css);
    // A straggler in the innermost (reparented) section queues at the root.
    let mut straggler = probe(css.last().unwrap().wait());
    straggler.pending();
    assert_eq!(gate.waiting(), 1);
    drop(straggler);
    assert_eq!(gate.waiting(), 0);
    let mut late = probe(css.last().unwrap().wait());
    late.pending();
    drop(holder);
    assert_eq!(late.woken(), 1);
    drop(late.ready().unwrap());
    css.clear();
    assert!(!gate.is_locked());
    assert!(gate.broken().is_none());
}

/// Succeeds every section inner to outer; returns the root lock of a top-level waiter queued before, which
/// the root hands over when the outermost section ends.
fn lock_of_root_after_success(gate: &InputGate, css: &[CriticalSection]) -> InputLock {
    let mut holder = probe(gate.wait());
    holder.pending();
    for cs in css.iter().rev() {
        cs.succeeded();
    }
    holder.ready().unwrap()
}

#[test]
fn appendix_b_4_teardown_stops_at_ancestors_still_referenced() {
    let gate = InputGate::new();
    let mut css = vec![top_cs(&gate)];
    let mut lock = cs_lock(&css[0]);
    for _ in 1..1_000 {
        let child = lock.start_critical_section();
        drop(lock);
        lock = cs_lock(&child);
        css.push(child);
    }
    drop(lock);
    css.pop().unwrap().succeeded();
    let mut top = probe(gate.wait());
    top.pending();
    for cs in css.iter().rev() {
        cs.succeeded();
    }
    css.clear();
    assert_eq!(top.woken(), 1);
    top.ready().unwrap();
    assert!(gate.broken().is_none());
}

// ------------------------------------------------------------------------------------------------------------
// Appendix B.5: a failed critical section breaks every level.

#[test]
fn appendix_b_5_a_failed_section_breaks_every_waiter_at_all_levels_and_the_root() {
    let gate = InputGate::new();
    let mut on_broken = probe(gate.on_broken());
    let (cs1, cs3) = {
        let l = lock(&gate);
        (l.start_critical_section(), l.start_critical_section())
    };
    let cs2 = cs_lock(&cs1).start_critical_section();
    let _l2 = cs_lock(&cs2);
    let mut cs1_wait = probe(cs1.wait());
    let mut cs3_wait = probe(cs3.wait());
    let mut root_wait = probe(gate.wait());
    cs1_wait.pending();
    cs3_wait.pending();
    root_wait.pending();
    on_broken.pending();
    cs2.failed(Error::new("foobar"));
    for w in [&cs1_wait, &cs3_wait, &root_wait] {
        assert_eq!(w.woken(), 1);
    }
    assert_eq!(on_broken.woken(), 1);
    assert_broken_with(cs1_wait.ready(), "foobar");
    assert_broken_with(cs3_wait.ready(), "foobar");
    assert_broken_with(root_wait.ready(), "foobar");
    assert_broken_with(probe(cs2.wait()).ready(), "foobar");
    assert_eq!(on_broken.ready().message(), "foobar");
    assert_eq!(probe(gate.on_broken()).ready().message(), "foobar");
    assert_eq!(gate.broken().unwrap().message(), "foobar");
    // Later failures do not replace the first error.
    cs1.failed(Error::new("second"));
    assert_eq!(gate.broken().unwrap().message(), "foobar");
    // A section started after the break cannot start.
    let late = _l2.start_critical_section();
    assert_broken_with(probe(late.wait()).ready(), "foobar");
}

#[test]
fn appendix_b_5_a_lock_already_handed_out_stays_valid_after_the_break() {
    let gate = InputGate::new();
    let cs = top_cs(&gate);
    let inner = cs_lock(&cs);
    let mut served = probe(cs.wait());
    let mut queued = probe(cs.wait());
    served.pending();
    queued.pending();
    drop(inner);
    assert_eq!((served.woken(), queued.woken()), (1, 0));
    cs.failed(Error::new("boom"));
    assert_eq!(queued.woken(), 1);
    assert_broken_with(queued.ready(), "boom");
    // The lock was handed over before the break: the waiter owns it.
    let kept = served.ready().expect("handed over before the break");
    assert!(gate.is_locked());
    drop(kept);
    drop(cs);
    assert!(!gate.is_locked());
    assert_eq!(gate.broken().unwrap().message(), "boom");
}

// ------------------------------------------------------------------------------------------------------------
// §1.3 details.

#[test]
fn section_1_3_child_waiters_are_served_before_ordinary_waiters() {
    let gate = InputGate::new();
    let l = lock(&gate);
    let mut ordinary = probe(gate.wait());
    let cs = l.start_critical_section();
    let mut start = probe(cs.wait());
    ordinary.pending();
    start.pending();
    assert_eq!(gate.waiting(), 2);
    drop(l);
    assert_eq!((start.woken(), ordinary.woken()), (1, 0));
    let inner = start.ready().unwrap();
    ordinary.pending();
    drop(inner);
    cs.succeeded();
    assert_eq!(ordinary.woken(), 1);
    ordinary.ready().unwrap();
}

#[test]
fn section_1_3_dropping_a_running_section_breaks_the_gate_with_the_deadlock_message() {
    let gate = InputGate::new();
    let cs = top_cs(&gate);
    let inner = cs_lock(&cs);
    let mut top = probe(gate.wait());
    top.pending();
    let copy = cs.clone();
    drop(cs);
    drop(inner);
    assert!(gate.broken().is_none(), "a clone keeps the section alive");
    drop(copy);
    assert_eq!(top.woken(), 1);
    assert_broken_with(top.ready(), messages::CRITICAL_SECTION_DEADLOCK);
    assert_eq!(probe(gate.on_broken()).ready().message(), messages::CRITICAL_SECTION_DEADLOCK);
    assert!(!gate.is_locked());
}

#[test]
fn section_1_3_a_lock_taken_in_a_section_keeps_it_alive() {
    let gate = InputGate::new();
    let cs = top_cs(&gate);
    let inner = cs_lock(&cs);
    drop(cs);
    assert!(gate.broken().is_none());
    assert!(gate.is_locked());
    drop(inner);
    assert_eq!(gate.broken().unwrap().message(), messages::CRITICAL_SECTION_DEADLOCK);
}

#[test]
fn section_1_3_a_section_never_started_may_be_dropped_silently() {
    let gate = InputGate::new();
    let l = lock(&gate);
    let cs = l.start_critical_section();
    drop(cs);
    drop(l);
    assert!(gate.broken().is_none());
    assert!(!gate.is_locked());
    drop(lock(&gate));
}

#[test]
fn section_1_3_a_section_whose_start_is_cancelled_withdraws_from_its_parent() {
    let gate = InputGate::new();
    let l = lock(&gate);
    let cs = l.start_critical_section();
    let start = probe(cs.wait());
    assert_eq!(gate.waiting(), 1);
    drop(start);
    assert_eq!(gate.waiting(), 0);
    drop(l);
    assert!(!gate.is_locked(), "the withdrawn section holds no lock");
    drop(cs);
    assert!(gate.broken().is_none());
}

#[test]
fn section_1_3_a_second_start_wait_queues_inside_the_section() {
    let gate = InputGate::new();
    let l = lock(&gate);
    let cs = l.start_critical_section();
    let mut a = probe(cs.wait());
    let mut b = probe(cs.wait());
    a.pending();
    b.pending();
    drop(l);
    assert_eq!((a.woken(), b.woken()), (1, 0));
    let la = a.ready().unwrap();
    b.pending();
    drop(la);
    b.ready().unwrap();
}

#[test]
fn section_1_3_depth_counts_nesting_and_the_gate_tolerates_more_than_the_maximum() {
    let gate = InputGate::new();
    let (cs, lock) = chain(&gate, CRITICAL_SECTION_DEPTH_MAX + 1);
    assert_eq!(cs.depth(), CRITICAL_SECTION_DEPTH_MAX + 1);
    let deeper = lock.start_critical_section();
    assert_eq!(deeper.depth(), CRITICAL_SECTION_DEPTH_MAX + 2);
    let mut w = probe(deeper.wait());
    w.pending();
    drop(lock);
    let l = w.ready().unwrap();
    drop(l);
    deeper.succeeded();
    cs.succeeded();
    assert!(gate.broken().is_none());
    assert_eq!(
        messages::BLOCK_CONCURRENCY_NESTED_TOO_DEEPLY,
        "blockConcurrencyWhile() calls are nested too deeply."
    );
}

#[test]
fn section_1_3_depth_of_a_section_from_a_straggler_lock_counts_from_the_running_ancestor() {
    let gate = InputGate::new();
    let cs1 = top_cs(&gate);
    let straggler = cs_lock(&cs1);
    cs1.succeeded();
    let cs = straggler.start_critical_section();
    assert_eq!(cs.depth(), 1, "the straggler belongs to the top-level gate now");
}

#[test]
#[should_panic(expected = "succeeded() called twice")]
fn section_1_3_succeeding_twice_is_a_bug() {
    let gate = InputGate::new();
    let cs = top_cs(&gate);
    drop(cs_lock(&cs));
    cs.succeeded();
    cs.succeeded();
}

#[test]
fn section_1_3_the_gate_types_are_send_and_sync_and_their_futures_static() {
    fn check<T: Send + Sync + 'static>() {}
    check::<InputGate>();
    check::<InputLock>();
    check::<CriticalSection>();
    check::<crate::gate::input::LockWait>();
    check::<crate::gate::input::BrokenWait>();
    check::<OutputGate>();
    check::<crate::gate::output::GateWait>();
    check::<crate::gate::output::OutputBrokenWait>();
}

// ------------------------------------------------------------------------------------------------------------
// Appendix B.6 and §1.4: the output gate.

#[test]
fn appendix_b_6_a_wait_resolves_only_after_every_earlier_lock() {
    run(async {
        let gate = OutputGate::new();
        assert_eq!(probe(gate.wait()).ready(), Ok(()));
        let (l1, w1) = OutputLock::new();
        gate.add(w1);
        let mut p1 = probe(gate.wait());
        let mut p2 = probe(gate.wait());
        let (l2, w2) = OutputLock::new();
        gate.add(w2);
        let mut p3 = probe(gate.wait());
        let_tasks_run().await;
        p1.pending();
        p2.pending();
        p3.pending();
        assert_eq!(gate.pending(), 2);
        l1.release();
        let_tasks_run().await;
        assert_eq!(p1.ready(), Ok(()));
        assert_eq!(p2.ready(), Ok(()));
        p3.pending();
        assert_eq!(gate.pending(), 1);
        l2.release();
        let_tasks_run().await;
        assert_eq!(p3.ready(), Ok(()));
        assert_eq!(gate.pending(), 0);
        probe(gate.on_broken()).pending();
        assert!(gate.broken().is_none());
    });
}

#[test]
fn appendix_b_6_locks_may_end_in_any_order() {
    run(async {
        let gate = OutputGate::new();
        let (l1, w1) = OutputLock::new();
        gate.add(w1);
        let mut p1 = probe(gate.wait());
        let (l2, w2) = OutputLock::new();
        gate.add(w2);
        let mut p2 = probe(gate.wait());
        l2.release();
        let_tasks_run().await;
        p1.pending();
        p2.pending();
        assert_eq!(gate.pending(), 1);
        l1.release();
        let_tasks_run().await;
        assert_eq!(p1.ready(), Ok(()));
        assert_eq!(p2.ready(), Ok(()));
    });
}

#[test]
fn appendix_b_6_a_failed_lock_breaks_the_gate_later_waits_reject_earlier_resolve() {
    run(async {
        let gate = OutputGate::new();
        let mut on_broken = probe(gate.on_broken());
        on_broken.pending();
        let (l1, w1) = OutputLock::new();
        gate.add(w1);
        let mut p1 = probe(gate.wait());
        let mut p2 = probe(gate.wait());
        let (l2, w2) = OutputLock::new();
        gate.add(w2);
        let mut p3 = probe(gate.wait());
        l2.fail(Error::new("foo"));
        let_tasks_run().await;
        // Nobody waits for the gate to resolve, yet it is broken.
        assert_eq!(on_broken.woken(), 1);
        assert_eq!(on_broken.ready().message(), "foo");
        p1.pending();
        p2.pending();
        p3.pending();
        l1.release();
        let_tasks_run().await;
        assert_eq!(p1.ready(), Ok(()));
        assert_eq!(p2.ready(), Ok(()));
        assert_eq!(p3.ready().unwrap_err().message(), "foo");
        assert_eq!(probe(gate.wait()).ready().unwrap_err().message(), "foo");
        assert_eq!(probe(gate.on_broken()).ready().message(), "foo");
    });
}

#[test]
fn appendix_b_6_a_canceled_lock_breaks_the_gate() {
    run(async {
        let gate = OutputGate::new();
        let (l1, w1) = OutputLock::new();
        gate.add(w1);
        let mut p1 = probe(gate.wait());
        let (l2, w2) = OutputLock::new();
        gate.add(w2);
        let mut p2 = probe(gate.wait());
        drop(l2);
        let_tasks_run().await;
        assert_eq!(gate.broken().unwrap().message(), OUTPUT_LOCK_CANCELED);
        p1.pending();
        p2.pending();
        l1.release();
        let_tasks_run().await;
        assert_eq!(p1.ready(), Ok(()));
        assert_eq!(p2.ready().unwrap_err().message(), OUTPUT_LOCK_CANCELED);
    });
}

#[test]
fn appendix_b_6_a_wait_reports_the_earliest_failed_lock_before_it() {
    run(async {
        let gate = OutputGate::new();
        let (l1, w1) = OutputLock::new();
        gate.add(w1);
        let (l2, w2) = OutputLock::new();
        gate.add(w2);
        let mut p = probe(gate.wait());
        l2.fail(Error::new("second"));
        let_tasks_run().await;
        l1.fail(Error::new("first"));
        let_tasks_run().await;
        assert_eq!(gate.broken().unwrap().message(), "second", "on_broken reports the first to fail");
        assert_eq!(p.ready().unwrap_err().message(), "first", "a wait reports the earliest lock");
    });
}

#[test]
fn section_1_4_a_lock_held_past_the_timeout_fails_overloaded_and_reset() {
    run(async {
        // Under simulation the clock is virtual, so the real 30 s timeout is used.
        let timeout = if cfg!(madsim) { OUTPUT_LOCK_TIMEOUT } else { Duration::from_millis(50) };
        let gate = if cfg!(madsim) { OutputGate::new() } else { OutputGate::with_timeout(timeout) };
        assert_eq!(OUTPUT_LOCK_TIMEOUT, Duration::from_secs(30));
        let t0 = madsim_tokio::time::Instant::now();
        let (held, w) = OutputLock::new();
        gate.add(w);
        let before = gate.wait();
        let e = gate.on_broken().await;
        assert!(t0.elapsed() >= timeout);
        if cfg!(madsim) {
            assert!(t0.elapsed() < timeout + Duration::from_secs(1));
        }
        assert_eq!(e.message(), messages::STORAGE_TIMEOUT);
        assert_eq!(
            e.message(),
            "Durable Object storage operation exceeded timeout which caused object to be reset."
        );
        assert!(e.overloaded() && e.durable_object_reset());
        assert!(!e.retryable() && !e.remote());
        assert_eq!(before.await.unwrap_err(), e);
        assert_eq!(gate.pending(), 0);
        // Releasing it afterwards changes nothing.
        held.release();
        let_tasks_run().await;
        assert_eq!(gate.wait().await.unwrap_err(), e);
    });
}

#[test]
fn section_1_4_a_lock_released_in_time_does_not_time_out() {
    run(async {
        let gate = OutputGate::with_timeout(Duration::from_millis(200));
        let (l, w) = OutputLock::new();
        gate.add(w);
        madsim_tokio::time::sleep(Duration::from_millis(20)).await;
        l.release();
        assert_eq!(gate.wait().await, Ok(()));
        madsim_tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(gate.broken().is_none());
    });
}

#[test]
fn section_1_4_break_with_rejects_pending_and_later_waits_at_once() {
    run(async {
        let gate = OutputGate::new();
        let mut on_broken = probe(gate.on_broken());
        on_broken.pending();
        let mut done = probe(gate.wait());
        let (l, w) = OutputLock::new();
        gate.add(w);
        let mut pending = probe(gate.wait());
        pending.pending();
        gate.break_with(Error::new("aborted"));
        assert_eq!(pending.woken(), 1);
        assert_eq!(pending.ready().unwrap_err().message(), "aborted");
        assert_eq!(done.ready(), Ok(()), "a wait already satisfied stays satisfied");
        assert_eq!(on_broken.ready().message(), "aborted");
        assert_eq!(probe(gate.wait()).ready().unwrap_err().message(), "aborted");
        gate.break_with(Error::new("again"));
        assert_eq!(gate.broken().unwrap().message(), "aborted");
        l.release();
        let_tasks_run().await;
        assert_eq!(probe(gate.wait()).ready().unwrap_err().message(), "aborted");
        assert_eq!(gate.pending(), 0);
    });
}

#[test]
fn section_1_4_a_lock_added_after_a_wait_does_not_delay_it() {
    run(async {
        let gate = OutputGate::new();
        let mut early = probe(gate.wait());
        let (_held, w) = OutputLock::new();
        gate.add(w);
        assert_eq!(early.ready(), Ok(()));
        let (l2, w2) = OutputLock::new();
        let mut mid = probe(gate.wait());
        gate.add(w2);
        mid.pending();
        l2.fail(Error::new("late"));
        let_tasks_run().await;
        mid.pending();
        drop(_held);
    });
}

// ------------------------------------------------------------------------------------------------------------
// Waits that are dropped or many (found by mutation testing, docs/MUTATION.md): a dropped wait leaves no waker
// behind to be woken later, and every one of several waits is woken.

/// Polls `p` once (pending), drops its future and returns its waker's counter.
fn dropped_pending<F: Future + Unpin>(mut p: Probe<F>) -> Arc<Flag> {
    p.pending();
    let Probe { fut, flag } = p;
    drop(fut);
    flag
}

#[test]
fn input_gate_wakes_every_broken_wait_and_none_that_was_dropped() {
    let gate = InputGate::new();
    let mut first = probe(gate.on_broken());
    let mut second = probe(gate.on_broken());
    first.pending();
    second.pending();
    let dropped = dropped_pending(probe(gate.on_broken()));
    top_cs(&gate).failed(Error::new("broken"));
    assert_eq!((first.woken(), second.woken()), (1, 1), "both waits are woken");
    assert_eq!(first.ready().message(), "broken");
    assert_eq!(second.ready().message(), "broken");
    assert_eq!(dropped.woken(), 0, "a dropped wait's waker is gone from the gate");
}

#[test]
fn output_gate_wakes_every_broken_wait_and_none_that_was_dropped() {
    let gate = OutputGate::new();
    let mut first = probe(gate.on_broken());
    let mut second = probe(gate.on_broken());
    first.pending();
    second.pending();
    let dropped = dropped_pending(probe(gate.on_broken()));
    gate.break_with(Error::new("broken"));
    assert_eq!((first.woken(), second.woken()), (1, 1), "both waits are woken");
    assert_eq!(first.ready().message(), "broken");
    assert_eq!(second.ready().message(), "broken");
    assert_eq!(dropped.woken(), 0, "a dropped wait's waker is gone from the gate");
}

#[test]
fn a_dropped_output_wait_is_not_woken_when_its_lock_ends() {
    run(async {
        let gate = OutputGate::new();
        let lock = gate.lock();
        let mut kept = probe(gate.wait());
        kept.pending();
        let dropped = dropped_pending(probe(gate.wait()));
        lock.release();
        assert_eq!(kept.woken(), 1, "the kept wait is woken when the lock ends");
        assert_eq!(dropped.woken(), 0, "a dropped wait's waker is gone from the gate");
    });
}

// ------------------------------------------------------------------------------------------------------------
// A section that succeeds before it started, and the output gate's watchdog ending with the gate (found by
// mutation testing, docs/MUTATION.md).

#[test]
fn section_1_3_a_section_that_succeeds_while_waiting_to_start_hands_its_waiters_to_the_parent() {
    let gate = InputGate::new();
    let l = lock(&gate);
    // Two sections wait to start on the locked gate; the second succeeds before it ever ran.
    let first = l.start_critical_section();
    let mut first_start = probe(first.wait());
    let early = l.start_critical_section();
    let mut a = probe(early.wait());
    let mut b = probe(early.wait());
    let mut top = probe(gate.wait());
    first_start.pending();
    a.pending();
    b.pending();
    top.pending();
    assert_eq!(gate.waiting(), 3, "two sections waiting to start and one ordinary waiter");
    early.succeeded();
    // Its start is withdrawn (the other section's start stays queued) and its two waiters join the gate's
    // ordinary waiters, after the one already there; the gate is still held, so nobody is served yet.
    assert_eq!(gate.waiting(), 4);
    assert_eq!((first_start.woken(), a.woken(), b.woken(), top.woken()), (0, 0, 0, 0));
    assert!(gate.broken().is_none());
    drop(l);
    assert_eq!((first_start.woken(), a.woken(), b.woken(), top.woken()), (1, 0, 0, 0));
    drop(first_start.ready().unwrap());
    first.succeeded();
    assert_eq!((a.woken(), b.woken(), top.woken()), (0, 0, 1), "FIFO: the older waiter first");
    drop(top.ready().unwrap());
    assert_eq!((a.woken(), b.woken()), (1, 0));
    let la = a.ready().unwrap();
    b.pending();
    drop(la);
    assert_eq!(b.woken(), 1);
    drop(b.ready().unwrap());
    assert!(!gate.is_locked());
    assert!(gate.broken().is_none());
}

#[test]
fn section_1_4_the_watchdog_task_ends_with_the_gate() {
    run(async {
        let gate = OutputGate::new();
        gate.lock().release();
        // The watchdog started with the first lock and, with nothing pending, sleeps until it is notified.
        let_tasks_run().await;
        let watchdog = gate.watchdog().expect("the first lock started the watchdog");
        assert!(watchdog.upgrade().is_some(), "the watchdog runs while the gate exists");
        drop(gate);
        let_tasks_run().await;
        assert!(watchdog.upgrade().is_none(), "the watchdog task ended and dropped its handle");
    });
}
