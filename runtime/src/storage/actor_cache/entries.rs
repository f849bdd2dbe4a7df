//! The cache's map of entries: values, known-empty gaps, sizes and the LRU order (spec §2.4, §2.8).
//!
//! Each entry says what is known of one key ([`Val`]) and whether it differs from storage ([`Status`]).
//! `gap_after` on an entry says that no key exists strictly between it and the next entry of the map (or
//! after it at all, if it is the last): a *known-empty gap*. A key with no entry is absent if the entry
//! before it has `gap_after`, else unknown. An entry with [`Val::Unknown`] marks the end of a listed range:
//! the key itself is not known, but the gap before it is (statement 52).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

/// What is known of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Val {
    /// Present with this value.
    Present(Arc<[u8]>),
    /// Known absent.
    Absent,
    /// Not known (an end marker of a known-empty gap).
    Unknown,
}

/// How an entry relates to storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    /// Storage holds what the entry says (evictable).
    Clean,
    /// Written, not yet part of a flush.
    Dirty,
    /// Part of the flush in flight, unchanged since.
    Flushing,
}

/// One key's entry.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) val: Val,
    pub(super) status: Status,
    pub(super) gap_after: bool,
    /// Written with `no_cache`: evicted as soon as it is clean.
    pub(super) no_cache: bool,
    tick: u64,
    stale: bool,
}

/// Bytes an entry costs beyond its key and value (workerd counts a fixed overhead per entry).
pub(crate) const ENTRY_OVERHEAD: usize = 64;

fn val_len(v: &Val) -> usize {
    match v {
        Val::Present(b) => b.len(),
        _ => 0,
    }
}

/// The entries of one cache.
#[derive(Debug, Default)]
pub(super) struct Entries {
    map: BTreeMap<String, Entry>,
    lru: BTreeMap<u64, String>,
    next_tick: u64,
    /// Bytes of every entry.
    pub(super) size: usize,
    /// Bytes of the entries that are not clean.
    pub(super) dirty_bytes: usize,
}

impl Entries {
    fn cost(key: &str, e: &Entry) -> usize {
        key.len() + val_len(&e.val) + ENTRY_OVERHEAD
    }

    fn unaccount(&mut self, key: &str) {
        if let Some(e) = self.map.get(key) {
            let c = Self::cost(key, e);
            self.size -= c;
            if e.status != Status::Clean {
                self.dirty_bytes -= c;
            }
            self.lru.remove(&e.tick);
        }
    }

    fn account(&mut self, key: &str) {
        self.next_tick += 1;
        let tick = self.next_tick;
        if let Some(e) = self.map.get_mut(key) {
            e.tick = tick;
            e.stale = false;
            let c = Self::cost(key, e);
            self.size += c;
            if e.status != Status::Clean {
                self.dirty_bytes += c;
            }
            self.lru.insert(tick, key.to_owned());
        }
    }

    /// What is known of `key`.
    pub(super) fn lookup(&self, key: &str) -> Val {
        if let Some(e) = self.map.get(key) {
            return e.val.clone();
        }
        match self.map.range::<str, _>((Bound::Unbounded, Bound::Excluded(key))).next_back() {
            Some((_, p)) if p.gap_after => Val::Absent,
            _ => Val::Unknown,
        }
    }

    /// A read of `key` through the cache, with one lookup of its entry: what is known of it, as
    /// [`Entries::lookup`]; a known key's entry is then marked used, as [`Entries::touch`], and a present one also
    /// kept cached, as [`Entries::keep_cached`], if `keep_cached`.
    pub(super) fn read(&mut self, key: &str, keep_cached: bool) -> Val {
        let Some(e) = self.map.get_mut(key) else { return self.lookup(key) };
        if e.val == Val::Unknown {
            // An end marker: the key itself is not known, and a read leaves it as it is.
            return Val::Unknown;
        }
        self.next_tick += 1;
        let name = self.lru.remove(&e.tick).unwrap_or_else(|| key.to_owned());
        e.tick = self.next_tick;
        e.stale = false;
        self.lru.insert(self.next_tick, name);
        if keep_cached && matches!(e.val, Val::Present(_)) {
            e.no_cache = false;
        }
        e.val.clone()
    }

    /// Marks `key` used (LRU order, not stale).
    pub(super) fn touch(&mut self, key: &str) {
        // What `unaccount` then `account` would do, with one lookup: the entry's size is unchanged, and its
        // key moves to the newest tick of the LRU order without being copied again.
        if let Some(e) = self.map.get_mut(key) {
            self.next_tick += 1;
            let name = self.lru.remove(&e.tick).unwrap_or_else(|| key.to_owned());
            e.tick = self.next_tick;
            e.stale = false;
            self.lru.insert(self.next_tick, name);
        }
    }

    /// The entry of `key`, if any.
    pub(super) fn get(&self, key: &str) -> Option<&Entry> {
        self.map.get(key)
    }

    /// Sets `key`'s value and status, creating its entry (inside the gap around it, if any).
    pub(super) fn set(&mut self, key: &str, val: Val, status: Status, no_cache: bool) {
        if self.map.contains_key(key) {
            self.unaccount(key);
            let e = self.map.get_mut(key).expect("checked");
            e.val = val;
            e.status = status;
            e.no_cache = no_cache;
        } else {
            let gap = matches!(self.map.range::<str, _>((Bound::Unbounded, Bound::Excluded(key))).next_back(), Some((_, p)) if p.gap_after);
            let e = Entry { val, status, gap_after: gap, no_cache, tick: 0, stale: false };
            self.map.insert(key.to_owned(), e);
        }
        self.account(key);
    }

    /// Changes only the status of an existing entry.
    pub(super) fn set_status(&mut self, key: &str, status: Status) {
        if self.map.contains_key(key) {
            self.unaccount(key);
            self.map.get_mut(key).expect("checked").status = status;
            self.account(key);
        }
    }

    /// Clears `no_cache` of an existing entry.
    pub(super) fn keep_cached(&mut self, key: &str) {
        if let Some(e) = self.map.get_mut(key) {
            e.no_cache = false;
        }
    }

    /// Removes `key`'s entry and forgets the gaps on both sides of it (statements 101–104).
    pub(super) fn remove(&mut self, key: &str) {
        self.unaccount(key);
        if self.map.remove(key).is_some() {
            if let Some((_, p)) =
                self.map.range_mut::<str, _>((Bound::Unbounded, Bound::Excluded(key))).next_back()
            {
                p.gap_after = false;
            }
        }
    }

    /// Every key whose entry is not clean, with its entry.
    pub(super) fn unclean(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.map.iter().filter(|(_, e)| e.status != Status::Clean)
    }

    /// The entries in `range`, in order.
    pub(super) fn range<'a>(
        &'a self,
        range: (Bound<&'a str>, Bound<&'a str>),
    ) -> impl DoubleEndedIterator<Item = (&'a String, &'a Entry)> + 'a {
        self.map.range::<str, _>(range)
    }

    /// The last entry before `key`.
    pub(super) fn before(&self, key: &str) -> Option<(&String, &Entry)> {
        self.map.range::<str, _>((Bound::Unbounded, Bound::Excluded(key))).next_back()
    }

    /// Sets the gap flag of an existing entry.
    pub(super) fn set_gap(&mut self, key: &str, gap: bool) {
        if let Some(e) = self.map.get_mut(key) {
            e.gap_after = gap;
        }
    }

    /// Forgets everything (the caller keeps what it needs first).
    pub(super) fn clear(&mut self) {
        *self = Entries { next_tick: self.next_tick, ..Entries::default() };
    }

    /// Evicts clean entries, least recently used first, until the size is at most `limit`; how many it
    /// evicted.
    pub(super) fn evict_to(&mut self, limit: usize) -> usize {
        let mut n = 0;
        let mut cursor = 0;
        while self.size > limit {
            let Some((&tick, key)) = self.lru.range(cursor..).next() else { break };
            cursor = tick + 1;
            let key = key.clone();
            if self.map.get(&key).is_some_and(|e| e.status == Status::Clean) {
                self.remove(&key);
                n += 1;
            }
        }
        n
    }

    /// Evicts clean `no_cache` entries (after a flush).
    pub(super) fn evict_no_cache(&mut self) -> usize {
        let keys: Vec<String> = self
            .map
            .iter()
            .filter(|(_, e)| e.no_cache && e.status == Status::Clean)
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter().for_each(|k| self.remove(k));
        keys.len()
    }

    /// One stale check (§2.8): evicts the clean entries not touched since the previous check and marks every
    /// other entry stale; how many it evicted.
    pub(super) fn evict_stale(&mut self) -> usize {
        let keys: Vec<String> = self
            .map
            .iter()
            .filter(|(_, e)| e.stale && e.status == Status::Clean)
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter().for_each(|k| self.remove(k));
        self.map.values_mut().for_each(|e| e.stale = true);
        keys.len()
    }

    /// How many entries there are.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}
