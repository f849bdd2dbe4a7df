//! White-box tests of the turn machinery, for what the simulation tests cannot see (found by mutation
//! testing, docs/MUTATION.md): an event's stack of critical sections.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use super::{critical_section, EventSlot, Gated, TurnQueue};
use crate::error::Error;
use crate::gate::{InputGate, OutputGate};
use crate::world::ManualClock;

/// Runs `f` to completion inside a runtime that keeps time (a critical section has a timeout).
fn block_on<F: Future>(f: F) -> F::Output {
    #[cfg(madsim)]
    return madsim_tokio::madsim::runtime::Runtime::new().block_on(f);
    #[cfg(not(madsim))]
    madsim_tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a Tokio runtime")
        .block_on(f)
}

#[test]
fn an_event_keeps_no_handle_on_the_critical_sections_it_has_left() {
    let gate = InputGate::new();
    let turns = TurnQueue::new(gate.clone(), OutputGate::new(), false, Arc::new(ManualClock::new(0)));
    let slot = EventSlot::new(1);
    let stack = {
        let slot = slot.clone();
        move || slot.sections.borrow().len()
    };
    let event = Box::pin(async move {
        let mut after = Vec::new();
        // Sections one after another: each is left when it ends.
        for _ in 0..3 {
            critical_section(async { Ok::<_, Error>(()) }).await.unwrap();
            after.push(stack());
        }
        // Nested: inside the outer section once the inner one ended, only the outer one is left.
        let inside_outer = critical_section(async {
            critical_section(async { Ok::<_, Error>(()) }).await?;
            Ok::<_, Error>(stack())
        })
        .await
        .unwrap();
        after.push(inside_outer);
        after.push(stack());
        after
    });
    let gated = Gated::new(slot.clone(), turns, gate.wait(), event, Rc::new(|| {}));
    assert_eq!(block_on(gated).unwrap(), vec![0, 0, 0, 1, 0]);
    assert!(!gate.is_locked());
    assert!(gate.broken().is_none());
}
