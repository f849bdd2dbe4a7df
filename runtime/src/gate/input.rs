//! The input gate and its critical sections (spec §1.2, §1.3, Appendix B.1–B.5).
//!
//! The root gate and every critical section (CS) are nodes of one tree kept in an arena under a single
//! mutex, so every operation on any level is atomic and no teardown ever recurses: a deep chain of nested
//! sections is a chain of ids, freed by a loop (Appendix B.4).
//!
//! Each node counts the locks it has handed out (`lock_count`) and has two FIFO queues: child waiters
//! (critical sections waiting to start) and ordinary waiters. When `lock_count` falls to zero, exactly one
//! waiter is served, child waiters first, and the lock is *handed* to it: it owns the lock from that moment,
//! whether or not its future has been polled yet.
//!
//! A running CS holds one lock on its parent (the nearest ancestor that has not succeeded), so the parent
//! hands out nothing else until the CS ends. When a CS succeeds, its leftover locks and queued waiters are
//! adopted by that parent ("reparented"); a lock taken on a reparented CS counts on the nearest ancestor
//! that is still running, or on the root.
//!
//! Node lifetimes are reference counts: handles of a [`CriticalSection`], locks taken on the node, queued
//! waiters, and child sections that name it as parent each hold one. As in workerd, a lock obtained through
//! a CS keeps the CS alive; a CS whose last reference goes while it is running fails the gate with
//! [`messages::CRITICAL_SECTION_DEADLOCK`].
//!
//! Breaking is global: once any CS fails, every queued and every future wait at every level rejects with
//! the first error, and [`InputGate::on_broken`] resolves with it. Locks already held stay valid until
//! dropped; dropping them after the break has no further effect.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::error::{messages, Error};

/// Nesting depth of critical sections at which `blockConcurrencyWhile()` refuses to start another (spec
/// §1.3, workerd `MAX_BLOCK_CONCURRENCY_WHILE_DEPTH`). The gate itself does not refuse: the runtime checks
/// [`CriticalSection::depth`] against it and raises
/// [`messages::BLOCK_CONCURRENCY_NESTED_TOO_DEEPLY`]. Deeper sections still work as any other.
pub(crate) const CRITICAL_SECTION_DEPTH_MAX: usize = 64;

type NodeId = u64;
type WaiterId = u64;

/// The id of the top-level gate in the arena.
const ROOT: NodeId = 0;

/// Where a node is in its life. The root is always `Running`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// A CS nobody has waited on yet.
    NotStarted,
    /// A CS whose first wait is queued as a child waiter on its parent.
    InitialWait,
    /// Hands out locks of its own; a CS then holds a lock on its parent.
    Running,
    /// A CS that succeeded: its locks and waiters belong to its parent now.
    Reparented,
    /// A CS whose start was rejected because the gate broke while it waited to start.
    Failed,
}

#[derive(Debug)]
struct Node {
    /// The node this CS was started from (a lock's node); `None` for the root.
    parent: Option<NodeId>,
    depth: usize,
    phase: Phase,
    /// Locks counted on this node, including locks of reparented descendants.
    lock_count: usize,
    /// Critical sections waiting to start; served before `waiters`.
    children: VecDeque<WaiterId>,
    /// Ordinary waiters, FIFO.
    waiters: VecDeque<WaiterId>,
    /// References keeping this node in the arena (see the module doc).
    refs: usize,
    /// The node on which a running CS holds its parent lock.
    parent_lock: Option<NodeId>,
    /// The child waiter queued on the parent while `InitialWait`.
    start: Option<WaiterId>,
}

impl Node {
    fn new(parent: Option<NodeId>, depth: usize, phase: Phase) -> Node {
        Node {
            parent,
            depth,
            phase,
            lock_count: 0,
            children: VecDeque::new(),
            waiters: VecDeque::new(),
            refs: 0,
            parent_lock: None,
            start: None,
        }
    }
}

#[derive(Debug)]
enum WaiterKind {
    /// A [`LockWait`] wanting a lock on `Waiter::node`.
    Lock,
    /// The start of this critical section, waiting for a lock on its parent.
    Start(NodeId),
}

#[derive(Debug)]
enum Slot {
    Queued(Option<Waker>),
    /// The lock was handed over: `lock_count` of the node already counts it.
    Granted,
    Rejected(Error),
}

#[derive(Debug)]
struct Waiter {
    /// The node whose queue holds it (or, once granted, the node of its lock). Holds one ref while queued
    /// or granted.
    node: NodeId,
    kind: WaiterKind,
    slot: Slot,
}

/// Deferred work, so that a cascade of releases and frees runs as a loop rather than recursion.
#[derive(Debug)]
enum Op {
    /// Drop one reference to the node; free it at zero.
    Unref(NodeId),
    /// Release one lock taken on the node, then drop the lock's reference.
    Release(NodeId),
}

#[derive(Debug)]
struct State {
    nodes: BTreeMap<NodeId, Node>,
    waiters: BTreeMap<WaiterId, Waiter>,
    next_id: u64,
    broken: Option<Error>,
    broken_waits: BTreeMap<u64, Waker>,
    /// Wakers collected during one operation, woken after the mutex is released.
    wake: Vec<Waker>,
}

type Shared = Arc<Mutex<State>>;

/// Runs `f` on the state, then wakes whatever it made ready, outside the mutex.
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
    fn new() -> State {
        let mut nodes = BTreeMap::new();
        nodes.insert(ROOT, Node::new(None, 0, Phase::Running));
        State {
            nodes,
            waiters: BTreeMap::new(),
            next_id: ROOT + 1,
            broken: None,
            broken_waits: BTreeMap::new(),
            wake: Vec::new(),
        }
    }

    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes.get(&id).expect("input gate: node referenced after it was freed")
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes.get_mut(&id).expect("input gate: node referenced after it was freed")
    }

    fn add_ref(&mut self, id: NodeId) {
        self.node_mut(id).refs += 1;
    }

    /// The node that counts locks taken on `id`: `id` itself, or its nearest ancestor that has not been
    /// reparented. A loop, never recursion (Appendix B.4).
    fn effective(&self, mut id: NodeId) -> NodeId {
        loop {
            let n = self.node(id);
            if n.phase != Phase::Reparented {
                return id;
            }
            id = n.parent.expect("a reparented node is a critical section and has a parent");
        }
    }

    /// Takes a lock on `id` right away: the caller checked that it is free (or is the serving node).
    fn lock_now(&mut self, id: NodeId) {
        let n = self.node_mut(id);
        debug_assert!(matches!(n.phase, Phase::Running), "locks are taken only on running nodes");
        n.lock_count += 1;
        n.refs += 1;
    }

    fn queue_lock_waiter(&mut self, node: NodeId) -> WaiterId {
        let wid = self.id();
        self.waiters.insert(wid, Waiter { node, kind: WaiterKind::Lock, slot: Slot::Queued(None) });
        let n = self.node_mut(node);
        n.waiters.push_back(wid);
        n.refs += 1;
        wid
    }

    /// Serves one waiter of `id`, whose lock count just fell to zero: a child waiter first, else an ordinary
    /// one. A critical section that starts this way serves one of its own waiters in turn.
    fn serve(&mut self, mut id: NodeId) {
        loop {
            if self.broken.is_some() {
                return;
            }
            let n = self.node_mut(id);
            assert_eq!(n.lock_count, 0, "input gate: serving a node that is still locked");
            let Some(wid) = n.children.pop_front().or_else(|| n.waiters.pop_front()) else {
                return;
            };
            n.lock_count = 1; // The waiter's queue reference becomes the lock's reference.
            let w = self.waiters.get_mut(&wid).expect("queued waiter exists");
            debug_assert_eq!(w.node, id);
            match w.kind {
                WaiterKind::Lock => {
                    let Slot::Queued(waker) = std::mem::replace(&mut w.slot, Slot::Granted) else {
                        panic!("input gate: a queued waiter was not in the queued state");
                    };
                    if let Some(waker) = waker {
                        self.wake.push(waker);
                    }
                    return;
                }
                WaiterKind::Start(cs) => {
                    self.waiters.remove(&wid);
                    let c = self.node_mut(cs);
                    assert_eq!(c.phase, Phase::InitialWait);
                    assert_eq!(c.start, Some(wid));
                    assert!(c.parent_lock.is_none());
                    c.start = None;
                    c.phase = Phase::Running;
                    c.parent_lock = Some(id);
                    id = cs;
                }
            }
        }
    }

    /// Serves `id` if it is free and has someone queued.
    fn maybe_serve(&mut self, id: NodeId) {
        let n = self.node(id);
        if n.lock_count == 0 && !(n.children.is_empty() && n.waiters.is_empty()) {
            self.serve(id);
        }
    }

    /// Breaks the whole gate with `error` (first break wins): rejects every queued waiter at every level.
    fn break_gate(&mut self, error: Error, ops: &mut Vec<Op>) {
        if self.broken.is_some() {
            return;
        }
        self.broken = Some(error.clone());
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            let n = self.node_mut(id);
            let queued: Vec<WaiterId> = n.children.drain(..).chain(n.waiters.drain(..)).collect();
            for wid in queued {
                ops.push(Op::Unref(id));
                let w = self.waiters.get_mut(&wid).expect("queued waiter exists");
                match w.kind {
                    WaiterKind::Lock => {
                        let old = std::mem::replace(&mut w.slot, Slot::Rejected(error.clone()));
                        if let Slot::Queued(Some(waker)) = old {
                            self.wake.push(waker);
                        }
                    }
                    WaiterKind::Start(cs) => {
                        self.waiters.remove(&wid);
                        let c = self.node_mut(cs);
                        c.start = None;
                        c.phase = Phase::Failed;
                    }
                }
            }
        }
        let waits = std::mem::take(&mut self.broken_waits);
        self.wake.extend(waits.into_values());
    }

    /// Runs deferred work until none is left.
    fn run(&mut self, mut ops: Vec<Op>) {
        while let Some(op) = ops.pop() {
            match op {
                Op::Release(id) => {
                    let t = self.effective(id);
                    let n = self.node_mut(t);
                    assert!(n.lock_count > 0, "input gate: released more locks than were taken");
                    n.lock_count -= 1;
                    if n.lock_count == 0 {
                        self.serve(t);
                    }
                    ops.push(Op::Unref(id));
                }
                Op::Unref(id) => {
                    let n = self.node_mut(id);
                    assert!(n.refs > 0, "input gate: reference count underflow");
                    n.refs -= 1;
                    if n.refs > 0 || id == ROOT {
                        continue;
                    }
                    let n = self.nodes.remove(&id).expect("node exists");
                    // Locks and queued waiters hold references, so a freed node has neither.
                    assert_eq!(n.lock_count, 0);
                    assert!(n.children.is_empty() && n.waiters.is_empty());
                    assert!(n.start.is_none());
                    if n.phase == Phase::Running {
                        self.break_gate(Error::new(messages::CRITICAL_SECTION_DEADLOCK), &mut ops);
                    }
                    if let Some(pl) = n.parent_lock {
                        ops.push(Op::Release(pl));
                    }
                    if let Some(p) = n.parent {
                        ops.push(Op::Unref(p));
                    }
                }
            }
        }
    }

    /// A wait on node `id` (the root or a CS), as [`InputGate::wait`] / [`CriticalSection::wait`].
    fn wait(&mut self, shared: &Shared, id: NodeId) -> LockWaitState {
        if let Some(e) = &self.broken {
            return LockWaitState::Ready(Err(e.clone()));
        }
        let n = self.node(id);
        match n.phase {
            Phase::Running | Phase::Reparented => {
                let t = self.effective(id);
                let tn = self.node(t);
                if tn.lock_count == 0 {
                    debug_assert!(tn.children.is_empty() && tn.waiters.is_empty());
                    self.lock_now(t);
                    LockWaitState::Ready(Ok(InputLock::new(shared.clone(), t)))
                } else {
                    LockWaitState::Queued(self.queue_lock_waiter(t))
                }
            }
            Phase::NotStarted => {
                let parent = n.parent.expect("a critical section has a parent");
                let t = self.effective(parent);
                if self.node(t).lock_count == 0 {
                    self.lock_now(t);
                    let c = self.node_mut(id);
                    c.parent_lock = Some(t);
                    c.phase = Phase::Running;
                    self.lock_now(id);
                    LockWaitState::Ready(Ok(InputLock::new(shared.clone(), id)))
                } else {
                    let sid = self.id();
                    self.waiters.insert(
                        sid,
                        Waiter { node: t, kind: WaiterKind::Start(id), slot: Slot::Queued(None) },
                    );
                    let tn = self.node_mut(t);
                    tn.children.push_back(sid);
                    tn.refs += 1;
                    let c = self.node_mut(id);
                    c.phase = Phase::InitialWait;
                    c.start = Some(sid);
                    LockWaitState::Queued(self.queue_lock_waiter(id))
                }
            }
            Phase::InitialWait => LockWaitState::Queued(self.queue_lock_waiter(id)),
            Phase::Failed => unreachable!("a failed critical section implies a broken gate"),
        }
    }

    /// A queued waiter's future was dropped: it leaves its queue. A critical section whose every start
    /// wait was dropped withdraws from its parent and is as if never started.
    fn cancel(&mut self, wid: WaiterId) {
        let w = self.waiters.remove(&wid).expect("waiter exists until its future completes or drops");
        let mut ops = Vec::new();
        match w.slot {
            Slot::Queued(_) => {
                let n = self.node_mut(w.node);
                let pos = n.waiters.iter().position(|x| *x == wid).expect("queued waiter is queued");
                n.waiters.remove(pos);
                ops.push(Op::Unref(w.node));
                if n.phase == Phase::InitialWait && n.waiters.is_empty() {
                    let sid = n.start.take().expect("a starting CS has a start waiter");
                    n.phase = Phase::NotStarted;
                    let s = self.waiters.remove(&sid).expect("start waiter exists");
                    let t = self.node_mut(s.node);
                    let pos = t.children.iter().position(|x| *x == sid).expect("start waiter is queued");
                    t.children.remove(pos);
                    ops.push(Op::Unref(s.node));
                }
            }
            Slot::Granted => ops.push(Op::Release(w.node)),
            Slot::Rejected(_) => {}
        }
        self.run(ops);
    }

    /// Moves the queued waiters of CS `id` to `to`, which is running or the root.
    fn adopt_waiters(&mut self, id: NodeId, to: NodeId, ops: &mut Vec<Op>) {
        let c = self.node_mut(id);
        let children: Vec<WaiterId> = c.children.drain(..).collect();
        let waiters: Vec<WaiterId> = c.waiters.drain(..).collect();
        for wid in children.iter().chain(waiters.iter()) {
            self.waiters.get_mut(wid).expect("queued waiter exists").node = to;
            ops.push(Op::Unref(id));
        }
        let moved = children.len() + waiters.len();
        let p = self.node_mut(to);
        p.children.extend(children);
        p.waiters.extend(waiters);
        p.refs += moved;
    }

    fn succeeded(&mut self, id: NodeId) {
        if self.broken.is_some() {
            return;
        }
        let n = self.node(id);
        let phase = n.phase;
        let parent = n.parent.expect("a critical section has a parent");
        let mut ops = Vec::new();
        match phase {
            Phase::NotStarted => {}
            Phase::InitialWait => {
                let sid = self.node_mut(id).start.take().expect("a starting CS has a start waiter");
                let s = self.waiters.remove(&sid).expect("start waiter exists");
                let t = self.node_mut(s.node);
                let pos = t.children.iter().position(|x| *x == sid).expect("start waiter is queued");
                t.children.remove(pos);
                ops.push(Op::Unref(s.node));
                let p = self.effective(parent);
                self.adopt_waiters(id, p, &mut ops);
                self.node_mut(id).phase = Phase::Reparented;
                self.maybe_serve(p);
            }
            Phase::Running => {
                let p = self.effective(parent);
                self.adopt_waiters(id, p, &mut ops);
                let c = self.node_mut(id);
                let count = std::mem::take(&mut c.lock_count);
                c.phase = Phase::Reparented;
                let pl = c.parent_lock.take().expect("a running CS holds a lock on its parent");
                self.node_mut(p).lock_count += count;
                // The parent lock is counted on `p` too, so `p` stays locked until it is released below.
                debug_assert_eq!(self.effective(pl), p);
                ops.push(Op::Release(pl));
            }
            Phase::Reparented => panic!("CriticalSection::succeeded() called twice"),
            Phase::Failed => unreachable!("a failed critical section implies a broken gate"),
        }
        self.run(ops);
    }
}

/// The input gate of one Durable Object (spec §1.2): while any [`InputLock`] exists, no other event is
/// delivered. Every clone is the same gate.
#[derive(Clone, Debug)]
pub(crate) struct InputGate {
    shared: Shared,
}

impl Default for InputGate {
    fn default() -> InputGate {
        InputGate::new()
    }
}

impl InputGate {
    /// An open gate.
    pub(crate) fn new() -> InputGate {
        InputGate { shared: Arc::new(Mutex::new(State::new())) }
    }

    /// Waits for the lock. FIFO: resolves at once if no lock exists (a running critical section holds
    /// one), otherwise queues behind earlier waiters; waiting critical sections go first. Rejects once the
    /// gate is broken.
    ///
    /// Cancel safety: dropping the future leaves the queue; if the lock had already been handed to it, the
    /// lock is released and the next waiter is served.
    pub(crate) fn wait(&self) -> LockWait {
        let state = with_state(&self.shared, |st| st.wait(&self.shared, ROOT));
        LockWait { shared: self.shared.clone(), state }
    }

    /// Resolves with the error once the gate (or any critical section on it) is broken; never otherwise.
    pub(crate) fn on_broken(&self) -> BrokenWait {
        BrokenWait { shared: self.shared.clone(), id: None }
    }

    /// The error the gate broke with, if it did.
    #[cfg(test)] // Only the tests reach it: no runtime path uses it.
    pub(crate) fn broken(&self) -> Option<Error> {
        with_state(&self.shared, |st| st.broken.clone())
    }

    /// How many waiters are queued (not yet served) on the top-level gate: ordinary waiters plus critical
    /// sections waiting to start there.
    #[cfg(test)] // Only the tests reach it: no runtime path uses it.
    pub(crate) fn waiting(&self) -> usize {
        with_state(&self.shared, |st| {
            let n = st.node(ROOT);
            n.waiters.len() + n.children.len()
        })
    }

    /// True while any lock on the gate (a running critical section holds one) is outstanding.
    #[cfg(test)] // Only the tests reach it: no runtime path uses it.
    pub(crate) fn is_locked(&self) -> bool {
        with_state(&self.shared, |st| st.node(ROOT).lock_count > 0)
    }
}

#[derive(Debug)]
enum LockWaitState {
    Ready(Result<InputLock, Error>),
    Queued(WaiterId),
    Done,
}

/// A pending [`InputGate::wait`] or [`CriticalSection::wait`]; resolves to the lock or the gate's error.
#[derive(Debug)]
#[must_use = "a lock wait queues at once and holds its place; dropping it leaves the queue"]
pub(crate) struct LockWait {
    shared: Shared,
    state: LockWaitState,
}

impl Future for LockWait {
    type Output = Result<InputLock, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match std::mem::replace(&mut this.state, LockWaitState::Done) {
            LockWaitState::Ready(r) => Poll::Ready(r),
            LockWaitState::Done => panic!("LockWait polled after completion"),
            LockWaitState::Queued(wid) => {
                let shared = this.shared.clone();
                let out = with_state(&this.shared, |st| {
                    let w = st.waiters.get_mut(&wid).expect("waiter exists while its future is pending");
                    match &mut w.slot {
                        Slot::Queued(waker) => {
                            *waker = Some(cx.waker().clone());
                            None
                        }
                        Slot::Granted => {
                            let w = st.waiters.remove(&wid).expect("waiter exists");
                            Some(Ok(InputLock::new(shared, w.node)))
                        }
                        Slot::Rejected(_) => {
                            let w = st.waiters.remove(&wid).expect("waiter exists");
                            let Slot::Rejected(e) = w.slot else { unreachable!() };
                            Some(Err(e))
                        }
                    }
                });
                match out {
                    Some(r) => Poll::Ready(r),
                    None => {
                        this.state = LockWaitState::Queued(wid);
                        Poll::Pending
                    }
                }
            }
        }
    }
}

impl Drop for LockWait {
    fn drop(&mut self) {
        if let LockWaitState::Queued(wid) = self.state {
            with_state(&self.shared, |st| st.cancel(wid));
        }
    }
}

/// A pending [`InputGate::on_broken`]: resolves with the error the gate broke with.
#[derive(Debug)]
pub(crate) struct BrokenWait {
    shared: Shared,
    id: Option<u64>,
}

impl Future for BrokenWait {
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

impl Drop for BrokenWait {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            with_state(&self.shared, |st| st.broken_waits.remove(&id));
        }
    }
}

#[derive(Debug)]
struct LockInner {
    shared: Shared,
    node: NodeId,
}

impl Drop for LockInner {
    fn drop(&mut self) {
        let node = self.node;
        with_state(&self.shared, |st| st.run(vec![Op::Release(node)]));
    }
}

/// A held input lock. Cloning adds a reference (workerd's `addRef`): the gate (or critical section) is
/// released only when every clone has dropped.
#[derive(Clone, Debug)]
pub(crate) struct InputLock {
    inner: Arc<LockInner>,
}

impl InputLock {
    /// Wraps a lock already counted on `node` (its `lock_count` and one reference).
    fn new(shared: Shared, node: NodeId) -> InputLock {
        InputLock { inner: Arc::new(LockInner { shared, node }) }
    }

    /// Starts a critical section from this held lock (`blockConcurrencyWhile()`, `storage.transaction()`,
    /// spec §1.3). Nothing happens until its first [`CriticalSection::wait`]; a section never waited on may
    /// be dropped silently.
    ///
    /// Its depth is one more than the depth of the section this lock effectively belongs to (0 for the
    /// top-level gate). The gate does not refuse past [`CRITICAL_SECTION_DEPTH_MAX`]; the caller checks
    /// [`CriticalSection::depth`].
    pub(crate) fn start_critical_section(&self) -> CriticalSection {
        let shared = &self.inner.shared;
        let parent = self.inner.node;
        let node = with_state(shared, |st| {
            let depth = st.node(st.effective(parent)).depth + 1;
            let id = st.id();
            let mut n = Node::new(Some(parent), depth, Phase::NotStarted);
            n.refs = 1; // The handle.
            st.nodes.insert(id, n);
            st.add_ref(parent);
            id
        });
        CriticalSection { inner: Arc::new(CsInner { shared: shared.clone(), node }) }
    }
}

#[derive(Debug)]
struct CsInner {
    shared: Shared,
    node: NodeId,
}

impl Drop for CsInner {
    fn drop(&mut self) {
        let node = self.node;
        with_state(&self.shared, |st| st.run(vec![Op::Unref(node)]));
    }
}

/// A critical section (spec §1.3): while it runs, its parent hands out no lock except through it. Every
/// clone is the same section.
///
/// Dropping every handle (and every lock taken through it) while it runs, without
/// [`CriticalSection::succeeded`], breaks the gate with [`messages::CRITICAL_SECTION_DEADLOCK`].
#[derive(Clone, Debug)]
pub(crate) struct CriticalSection {
    inner: Arc<CsInner>,
}

impl CriticalSection {
    /// A lock inside the section. The first wait starts it: it obtains a lock on its parent (the gate or the
    /// enclosing section), queued as a child waiter ahead of ordinary waiters if the parent is locked. After
    /// the section succeeded, a wait is forwarded to the parent (stragglers are adopted).
    ///
    /// Cancel safety: as [`InputGate::wait`]; dropping every start wait of a section that has not started
    /// yet withdraws it from its parent.
    pub(crate) fn wait(&self) -> LockWait {
        let shared = &self.inner.shared;
        let state = with_state(shared, |st| st.wait(shared, self.inner.node));
        LockWait { shared: shared.clone(), state }
    }

    /// Ends the section successfully: the lock it held on its parent is released, and waiters and locks
    /// still open inside it are adopted by the parent. No effect once the gate is broken.
    ///
    /// # Panics
    /// If called twice on the same section.
    pub(crate) fn succeeded(&self) {
        with_state(&self.inner.shared, |st| st.succeeded(self.inner.node));
    }

    /// Fails the section and permanently breaks the whole gate: every queued and future wait at every level
    /// rejects with `error`, and `on_broken` resolves with it. If the gate is already broken, the first
    /// error stays.
    pub(crate) fn failed(&self, error: Error) {
        // The section's own phase stays as it is: with the gate broken, a running section that is freed
        // later does not break it again, and a reparented one still forwards its locks' releases.
        with_state(&self.inner.shared, |st| {
            let mut ops = Vec::new();
            st.break_gate(error, &mut ops);
            st.run(ops);
        });
    }

    /// Nesting depth: 1 for a section started from a top-level lock, the enclosing section's depth + 1
    /// otherwise.
    pub(crate) fn depth(&self) -> usize {
        with_state(&self.inner.shared, |st| st.node(self.inner.node).depth)
    }
}
