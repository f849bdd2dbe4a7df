//! `list(options)` of the KV backend (§2.4), in named steps: take a snapshot of what the cache knows of the
//! range; walk the known part from the start (or, in reverse, from the end, then the known bottom); if the
//! cache answers all of it, return at once; otherwise read the rest from storage, merge it with the
//! snapshot, and learn from what storage returned.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use super::entries::{Status, Val};
use super::{ready, ActorCache, CacheFuture, CacheListOptions, ListRequest, Pair, State};
use crate::storage::kv::KeyRange;

/// Present pairs the cache knows, in the order the list returns them.
type Known = Vec<(String, Arc<[u8]>)>;

/// What a list saw in the cache when it was called: the entries of the range, plus the one before it (whose
/// gap may cover the start), each with whether the gap after it is known empty.
struct Snapshot {
    entries: BTreeMap<String, (Val, bool)>,
}

impl Snapshot {
    /// The snapshot of `range` in the cache; the range's entries count as used.
    fn take(st: &mut State, range: &KeyRange) -> Snapshot {
        let mut snap = Snapshot { entries: BTreeMap::new() };
        if let Some((k, e)) = st.entries.before(&range.start) {
            snap.entries.insert(k.clone(), (e.val.clone(), e.gap_after));
        }
        for (k, e) in st.entries.range(range.bounds()) {
            snap.entries.insert(k.clone(), (e.val.clone(), e.gap_after));
        }
        let keys: Vec<String> = st.entries.range(range.bounds()).map(|(k, _)| k.clone()).collect();
        keys.iter().for_each(|k| st.entries.touch(k));
        snap
    }

    fn lookup(&self, key: &str) -> Val {
        if let Some((v, _)) = self.entries.get(key) {
            return v.clone();
        }
        match self.entries.range::<str, _>((Bound::Unbounded, Bound::Excluded(key))).next_back() {
            Some((_, (_, true))) => Val::Absent,
            _ => Val::Unknown,
        }
    }

    /// The next key to look at after `pos`, walking up: the next entry if the gap after `pos` is known
    /// empty, else the least key above `pos`; `None` past the last entry.
    fn step_up(&self, pos: &str) -> Option<String> {
        if self.entries.get(pos).is_none_or(|(_, g)| *g) {
            self.entries
                .range::<str, _>((Bound::Excluded(pos), Bound::Unbounded))
                .next()
                .map(|(k, _)| k.clone())
        } else {
            Some(format!("{pos}\0"))
        }
    }

    /// Walks up from the range's start over what the cache knows, collecting present pairs until `limit`.
    /// Returns them and where storage must be read from, if the cache does not answer to the end.
    fn walk_up(&self, range: &KeyRange, limit: Option<usize>) -> (Known, Option<String>) {
        let mut known = Known::new();
        let full = |known: &Known| limit.is_some_and(|l| known.len() >= l);
        let mut pos = range.start.clone();
        loop {
            if range.end.as_ref().is_some_and(|e| pos >= *e) || full(&known) {
                return (known, None);
            }
            match self.lookup(&pos) {
                Val::Unknown => return (known, Some(pos)),
                v => {
                    if let Val::Present(v) = v {
                        known.push((pos.clone(), v));
                        if full(&known) {
                            return (known, None);
                        }
                    }
                    match self.step_up(&pos) {
                        Some(next) => pos = next,
                        None => return (known, None),
                    }
                }
            }
        }
    }

    /// Walks down from the range's end over what the cache knows, collecting present pairs until `limit`.
    /// Returns them and the bound below which storage must be read (`Some(None)`: up to the end), if the
    /// cache does not answer down to the start.
    fn walk_down(&self, range: &KeyRange, limit: Option<usize>) -> (Known, Option<Option<String>>) {
        let mut known = Known::new();
        let full = |known: &Known| limit.is_some_and(|l| known.len() >= l);
        let mut hi: Option<String> = range.end.clone();
        loop {
            if hi.as_ref().is_some_and(|h| *h <= range.start) || full(&known) {
                return (known, None);
            }
            let below = match &hi {
                Some(h) => {
                    self.entries.range::<str, _>((Bound::Unbounded, Bound::Excluded(h.as_str()))).next_back()
                }
                None => self.entries.iter().next_back(),
            };
            let Some((k, (v, gap))) = below else {
                return (known, Some(hi));
            };
            // The gap after `k` matters only if some key lies between `k` and `hi`.
            let adjacent = hi
                .as_ref()
                .is_some_and(|h| h.len() == k.len() + 1 && h.starts_with(k.as_str()) && h.ends_with('\0'));
            if !*gap && !adjacent {
                return (known, Some(hi));
            }
            if *k < range.start {
                return (known, None);
            }
            match v {
                Val::Present(v) => known.push((k.clone(), v.clone())),
                Val::Absent => {}
                Val::Unknown => return (known, Some(Some(format!("{k}\0")))),
            }
            hi = Some(k.clone());
        }
    }

    /// In reverse, the bottom of the range known from the cache need not be listed again (statement 81):
    /// its present pairs, ascending, and where storage must start, walking up from the range's start towards
    /// `to`.
    fn known_bottom(&self, range: &KeyRange, to: &Option<String>) -> (Known, String) {
        let mut low = Known::new();
        let mut low_end = range.start.clone();
        loop {
            if to.as_ref().is_some_and(|t| low_end >= *t) {
                break;
            }
            match self.lookup(&low_end) {
                Val::Unknown => break,
                v => {
                    if let Val::Present(v) = v {
                        low.push((low_end.clone(), v));
                    }
                    match self.step_up(&low_end) {
                        Some(next) => low_end = next,
                        None => break,
                    }
                }
            }
        }
        (low, low_end)
    }
}

/// Where the answer from storage is exact: all of `[lo, hi)`, or, if storage stopped at its limit, up to
/// (down to, in reverse) the last pair it returned. Returns whether it stopped, and the bounds.
fn exact_bounds(
    got: &[Pair],
    storage_limit: Option<usize>,
    reverse: bool,
    lo: &str,
    hi: &Option<String>,
) -> (bool, Bound<String>, Bound<String>) {
    let truncated = storage_limit.is_some_and(|l| got.len() >= l) && !got.is_empty();
    let above = || hi.clone().map_or(Bound::Unbounded, Bound::Excluded);
    let (exact_lo, exact_hi) = match (truncated, reverse) {
        (false, _) => (Bound::Included(lo.to_owned()), above()),
        (true, false) => (Bound::Included(lo.to_owned()), Bound::Included(got[got.len() - 1].0.clone())),
        (true, true) => (Bound::Included(got[got.len() - 1].0.clone()), above()),
    };
    (truncated, exact_lo, exact_hi)
}

impl ActorCache {
    /// `list(options)` (§2.4): present pairs of the range, ascending (descending with `reverse`).
    pub(crate) fn list(&self, options: CacheListOptions) -> CacheFuture<Vec<Pair>> {
        let mut st = self.lock();
        if let Err(e) = self.check_open(&st) {
            return ready(Err(e));
        }
        if let Err(e) = options.list.validate() {
            return ready(Err(e));
        }
        let Some(range) = options.list.key_range() else { return ready(Ok(Vec::new())) };
        let limit = options.list.limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
        let reverse = options.list.reverse;
        let snap = Snapshot::take(&mut st, &range);
        // The part known from the cache, from the start (or from the end in reverse); `Some(bound)`: storage
        // must be read from (up to, in reverse) this bound.
        let (mut known, unknown_from, mut unknown_to) = if reverse {
            let (known, to) = snap.walk_down(&range, limit);
            (known, None, to)
        } else {
            let (known, from) = snap.walk_up(&range, limit);
            (known, from, None)
        };
        let mut low = Known::new();
        let mut low_end = range.start.clone();
        if let Some(to) = &unknown_to {
            (low, low_end) = snap.known_bottom(&range, to);
            if to.as_ref().is_some_and(|t| low_end >= *t) {
                // Everything is known after all.
                known.extend(low.drain(..).rev());
                unknown_to = None;
            }
        }
        if unknown_from.is_none() && unknown_to.is_none() {
            known.truncate(limit.unwrap_or(usize::MAX));
            return ready(Ok(known.into_iter().map(|(k, v)| (k, v.to_vec())).collect()));
        }
        // The storage range: what the walks did not cover.
        let (lo, hi) = match (unknown_from, unknown_to) {
            (Some(from), _) => (from, range.end.clone()),
            (None, Some(to)) => (low_end, to),
            (None, None) => unreachable!("checked above"),
        };
        let in_req = {
            let (lo, hi) = (lo.clone(), hi.clone());
            move |k: &str| k >= lo.as_str() && hi.as_deref().is_none_or(|h| k < h)
        };
        let negatives =
            snap.entries.iter().filter(|(k, (v, _))| in_req(k) && matches!(v, Val::Absent)).count();
        let storage_limit = limit.map(|l| l - known.len() + negatives);
        let request = ListRequest { start: lo.clone(), end: hi.clone(), reverse, limit: storage_limit };
        let guard = self.begin_read(&mut st, options.allow_concurrency);
        let epoch = st.epoch;
        drop(st);
        let me = self.clone();
        let first = self.inner.store.list(request.clone());
        Box::pin(async move {
            let store = me.inner.store.clone();
            let got = me.read_retry(first, || store.list(request.clone())).await?;
            let got: Vec<Pair> = got.into_iter().filter(|(k, _)| in_req(k)).collect();
            let (truncated, exact_lo, exact_hi) = exact_bounds(&got, storage_limit, reverse, &lo, &hi);
            let mut out = merge(&snap, &got, (&exact_lo, &exact_hi), &known, reverse);
            if reverse && !truncated {
                out.extend(low.iter().rev().map(|(k, v)| (k.clone(), v.to_vec())));
            }
            out.truncate(limit.unwrap_or(usize::MAX));
            if !options.no_cache {
                let mut st = me.lock();
                if st.epoch == epoch {
                    me.learn(&mut st, &lo, exact_lo, exact_hi, &got);
                    me.enforce_limits(&mut st)?;
                }
            }
            drop(guard);
            Ok(out)
        })
    }

    /// Caches what a list learned: the pairs storage returned and the gaps between them over `[lo, hi)`.
    fn learn(&self, st: &mut State, req_lo: &str, lo: Bound<String>, hi: Bound<String>, got: &[Pair]) {
        let lo = match lo {
            Bound::Included(k) => k,
            _ => req_lo.to_owned(),
        };
        for (k, v) in got {
            let inside = k.as_str() >= lo.as_str()
                && match &hi {
                    Bound::Included(h) => k <= h,
                    Bound::Excluded(h) => k < h,
                    Bound::Unbounded => true,
                };
            if inside && matches!(st.entries.lookup(k), Val::Unknown) {
                st.entries.set(k, Val::Present(v.as_slice().into()), Status::Clean, false);
            }
        }
        let ensure = |st: &mut State, k: &str, unknown_as: Val| {
            let learn_marker = unknown_as != Val::Unknown
                && st.entries.get(k).is_some_and(|e| e.val == Val::Unknown && e.status == Status::Clean);
            if st.entries.get(k).is_none() || learn_marker {
                let v = match st.entries.lookup(k) {
                    Val::Unknown => unknown_as,
                    v => v,
                };
                st.entries.set(k, v, Status::Clean, false);
            }
        };
        // The range start is learned (absent unless returned, statement 56); the end is not (statement 52).
        ensure(st, &lo, Val::Absent);
        let upper: Bound<&str> = match &hi {
            Bound::Included(h) => {
                ensure(st, h, Val::Unknown);
                Bound::Excluded(h.as_str())
            }
            Bound::Excluded(h) => {
                ensure(st, h, Val::Unknown);
                Bound::Excluded(h.as_str())
            }
            Bound::Unbounded => Bound::Unbounded,
        };
        let keys: Vec<String> =
            st.entries.range((Bound::Included(lo.as_str()), upper)).map(|(k, _)| k.clone()).collect();
        for k in keys {
            st.entries.set_gap(&k, true);
        }
    }
}

/// The list's answer: the pairs known from the cache, then the snapshot's present pairs within the exact
/// bounds merged with what storage returned for keys the snapshot did not know (the snapshot wins: it holds
/// the writes made since).
fn merge(
    snap: &Snapshot,
    got: &[Pair],
    exact: (&Bound<String>, &Bound<String>),
    known: &Known,
    reverse: bool,
) -> Vec<Pair> {
    let exact = (exact.0.as_ref().map(String::as_str), exact.1.as_ref().map(String::as_str));
    let mut merged: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, (v, _)) in snap.entries.range::<str, _>(exact) {
        if let Val::Present(v) = v {
            merged.insert(k.clone(), v.to_vec());
        }
    }
    for (k, v) in got {
        if matches!(snap.lookup(k), Val::Unknown) {
            merged.insert(k.clone(), v.clone());
        }
    }
    let mut out: Vec<Pair> = known.iter().map(|(k, v)| (k.clone(), v.to_vec())).collect();
    if reverse {
        out.extend(merged.into_iter().rev());
    } else {
        out.extend(merged);
    }
    out
}
