//! `transaction()` of the KV backend (spec §2.7, statements 111–119).
//!
//! A [`CacheTransaction`] buffers its writes privately. Its reads overlay those writes on the cache (and so
//! fall through to storage and populate the cache, statement 111). When the closure returns `Ok`, the writes
//! are applied to the cache all at once, so the next flush carries them as one batch (statement 112); an
//! `Err` rolls them back. There is no conflict detection. Writes through a transaction are not size-checked
//! (as workerd). Running the closure inside `blockConcurrencyWhile` is the caller's part (the typed storage
//! layer), not the cache's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::entries::Val;
use super::{ready, ActorCache, CacheFuture, CacheListOptions, GetOptions, Pair, PutOptions};
use crate::error::{messages, Error};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    RolledBack,
    /// The closure returned: the handle must not be used any more.
    Finished,
}

/// A buffered write: the value (`None` deletes) and the write's options.
type Write = (Option<Arc<[u8]>>, PutOptions);

struct TxnState {
    phase: Phase,
    writes: BTreeMap<String, Write>,
    alarm: Option<(Option<i64>, PutOptions)>,
}

/// The handle of a KV-backend transaction (`txn` in `storage.transaction(async txn => …)`). Cheap to clone:
/// clones share the transaction.
#[derive(Clone)]
pub(crate) struct CacheTransaction {
    cache: ActorCache,
    state: Arc<Mutex<TxnState>>,
}

impl std::fmt::Debug for CacheTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("CacheTransaction")
            .field("phase", &st.phase)
            .field("writes", &st.writes.len())
            .finish()
    }
}

impl ActorCache {
    /// Runs `f` in a transaction (§2.7): its writes are applied to the cache when it returns `Ok` (and then
    /// flush like other writes, in one batch); an `Err` discards them and is returned as is (the object is
    /// not reset). After `f` returns, any use of the handle fails.
    pub(crate) async fn transaction<R>(
        &self,
        f: impl AsyncFnOnce(&CacheTransaction) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let txn = CacheTransaction {
            cache: self.clone(),
            state: Arc::new(Mutex::new(TxnState {
                phase: Phase::Open,
                writes: BTreeMap::new(),
                alarm: None,
            })),
        };
        let result = f(&txn).await;
        let (phase, writes, alarm) = {
            let mut st = txn.lock();
            let phase = std::mem::replace(&mut st.phase, Phase::Finished);
            (phase, std::mem::take(&mut st.writes), st.alarm.take())
        };
        let value = result?;
        if phase == Phase::Open {
            self.apply_transaction(writes, alarm)?;
        }
        Ok(value)
    }

    /// Applies a committed transaction's writes to the cache at once.
    fn apply_transaction(
        &self,
        writes: BTreeMap<String, Write>,
        alarm: Option<(Option<i64>, PutOptions)>,
    ) -> Result<(), Error> {
        let mut st = self.lock();
        self.check_write(&st)?;
        for (key, (val, options)) in writes {
            let val = val.map_or(Val::Absent, Val::Present);
            if self.write(&mut st, &key, val, options) {
                self.schedule(&mut st, options);
            }
        }
        if let Some((alarm, options)) = alarm {
            if st.alarm != Some(alarm) || st.alarm_by_delete_all {
                st.alarm = Some(alarm);
                st.alarm_status = super::Status::Dirty;
                st.alarm_by_delete_all = false;
                self.schedule(&mut st, options);
            }
        }
        self.enforce_limits(&mut st)
    }
}

impl CacheTransaction {
    fn lock(&self) -> MutexGuard<'_, TxnState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails unless the transaction is open, with §2.7's message for `op` (like `get()`).
    fn check(&self, op: &str) -> Result<MutexGuard<'_, TxnState>, Error> {
        let st = self.lock();
        match st.phase {
            Phase::Open => Ok(st),
            Phase::RolledBack => Err(Error::new(messages::rolled_back(op))),
            Phase::Finished => Err(Error::new(messages::already_committed(op))),
        }
    }

    /// `txn.get(key)`: the transaction's own write, else the cache's answer.
    pub(crate) fn get(&self, key: &str, options: GetOptions) -> CacheFuture<Option<Vec<u8>>> {
        let st = match self.check("get()") {
            Ok(st) => st,
            Err(e) => return ready(Err(e)),
        };
        if let Err(e) = super::check_key(key) {
            return ready(Err(e));
        }
        match st.writes.get(key) {
            Some((v, _)) => ready(Ok(v.as_ref().map(|v| v.to_vec()))),
            None => {
                drop(st);
                self.cache.get(key, options)
            }
        }
    }

    /// `txn.get(keys[])`: present keys, sorted, the transaction's writes overlaid.
    #[cfg(test)] // Only the tests reach it: the Transaction API objects call has no get_multiple.
    pub(crate) fn get_multiple(&self, keys: &[&str], options: GetOptions) -> CacheFuture<Vec<Pair>> {
        let st = match self.check("get()") {
            Ok(st) => st,
            Err(e) => return ready(Err(e)),
        };
        if let Err(e) = super::check_key_count(keys.len()) {
            return ready(Err(e));
        }
        let mut own: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        let mut rest: BTreeSet<String> = BTreeSet::new();
        for k in keys {
            match st.writes.get(*k) {
                Some((v, _)) => {
                    own.insert((*k).to_owned(), v.as_ref().map(|v| v.to_vec()));
                }
                None => {
                    rest.insert((*k).to_owned());
                }
            }
        }
        drop(st);
        let f = (!rest.is_empty())
            .then(|| self.cache.get_multiple_inner(rest.into_iter().collect(), options, true));
        Box::pin(async move {
            let mut out: BTreeMap<String, Vec<u8>> = match f {
                Some(f) => f.await?.into_iter().collect(),
                None => BTreeMap::new(),
            };
            out.extend(own.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
            Ok(out.into_iter().collect())
        })
    }

    /// `txn.list(options)`: the cache's list with the transaction's writes overlaid. The limit asked of the
    /// cache is raised by the transaction's deletes in the range, so the limit is still met (statement 112).
    pub(crate) fn list(&self, options: CacheListOptions) -> CacheFuture<Vec<Pair>> {
        let st = match self.check("list()") {
            Ok(st) => st,
            Err(e) => return ready(Err(e)),
        };
        if let Err(e) = options.list.validate() {
            return ready(Err(e));
        }
        let Some(range) = options.list.key_range() else { return ready(Ok(Vec::new())) };
        let own: Vec<(String, Option<Vec<u8>>)> = st
            .writes
            .range::<str, _>(range.bounds())
            .map(|(k, (v, _))| (k.clone(), v.as_ref().map(|v| v.to_vec())))
            .collect();
        drop(st);
        let deletes = own.iter().filter(|(_, v)| v.is_none()).count();
        let limit = options.list.limit;
        let reverse = options.list.reverse;
        let mut inner = options;
        inner.list.limit = limit.map(|l| l.saturating_add(i64::try_from(deletes).unwrap_or(i64::MAX)));
        let f = self.cache.list(inner);
        Box::pin(async move {
            let mut merged: BTreeMap<String, Vec<u8>> = f.await?.into_iter().collect();
            for (k, v) in own {
                match v {
                    Some(v) => merged.insert(k, v),
                    None => merged.remove(&k),
                };
            }
            let n = limit.map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
            Ok(if reverse {
                merged.into_iter().rev().take(n).collect()
            } else {
                merged.into_iter().take(n).collect()
            })
        })
    }

    /// `txn.put(key, value)`: buffered until commit.
    pub(crate) fn put(&self, key: &str, value: &[u8], options: PutOptions) -> CacheFuture<()> {
        self.put_multiple(&[(key, value)], options)
    }

    /// `txn.put(entries)`: buffered until commit.
    pub(crate) fn put_multiple(&self, pairs: &[(&str, &[u8])], options: PutOptions) -> CacheFuture<()> {
        let mut st = match self.check("put()") {
            Ok(st) => st,
            Err(e) => return ready(Err(e)),
        };
        for (k, v) in pairs {
            st.writes.insert((*k).to_owned(), (Some(Arc::from(*v)), options));
        }
        ready(Ok(()))
    }

    /// `txn.delete(key)`: whether the key existed, as the transaction sees it.
    pub(crate) fn delete(&self, key: &str, options: PutOptions) -> CacheFuture<bool> {
        let f = self.delete_multiple(&[key], options);
        Box::pin(async move { Ok(f.await? > 0) })
    }

    /// `txn.delete(keys[])`: how many existed. Buffered at once; keys the transaction or the cache does not
    /// know are read (through the cache, ≤ maxKeysPerRpc per read) to count them (statement 118).
    pub(crate) fn delete_multiple(&self, keys: &[&str], options: PutOptions) -> CacheFuture<usize> {
        let mut st = match self.check("delete()") {
            Ok(st) => st,
            Err(e) => return ready(Err(e)),
        };
        let keys: BTreeSet<&str> = keys.iter().copied().collect();
        let mut known = 0;
        let mut unknown = Vec::new();
        {
            let cache = self.cache.lock();
            for k in &keys {
                match st.writes.get(*k) {
                    Some((Some(_), _)) => known += 1,
                    Some((None, _)) => {}
                    None => match cache.entries.lookup(k) {
                        Val::Present(_) => known += 1,
                        Val::Absent => {}
                        Val::Unknown => unknown.push((*k).to_owned()),
                    },
                }
            }
        }
        for k in keys {
            st.writes.insert(k.to_owned(), (None, options));
        }
        drop(st);
        if unknown.is_empty() {
            return ready(Ok(known));
        }
        let read = GetOptions { allow_concurrency: options.allow_concurrency, no_cache: options.no_cache };
        let f = self.cache.get_multiple_inner(unknown, read, true);
        Box::pin(async move { Ok(known + f.await?.len()) })
    }

    /// `txn.deleteAll()`: refused (§2.6).
    #[cfg(test)] // Only the tests reach it: the Transaction API objects call has no deleteAll.
    pub(crate) fn delete_all(&self, _options: PutOptions) -> CacheFuture<usize> {
        ready(Err(Error::new(messages::DELETE_ALL_IN_TRANSACTION)))
    }

    /// `txn.getAlarm()`: the transaction's own alarm write, else the cache's.
    pub(crate) fn get_alarm(&self, options: GetOptions) -> CacheFuture<Option<i64>> {
        let st = match self.check("getAlarm()") {
            Ok(st) => st,
            Err(e) => return ready(Err(e)),
        };
        match st.alarm {
            Some((a, _)) => ready(Ok(a)),
            None => {
                drop(st);
                self.cache.get_alarm(options)
            }
        }
    }

    /// `txn.setAlarm(ms)`: buffered until commit; a time ≤ 0 is a `TypeError`.
    pub(crate) fn set_alarm(&self, scheduled_ms: i64, options: PutOptions) -> CacheFuture<()> {
        let mut st = match self.check("setAlarm()") {
            Ok(st) => st,
            Err(e) => return ready(Err(e)),
        };
        if scheduled_ms <= 0 {
            return ready(Err(Error::type_error(messages::SET_ALARM_NOT_POSITIVE)));
        }
        st.alarm = Some((Some(scheduled_ms), options));
        ready(Ok(()))
    }

    /// `txn.deleteAlarm()`: buffered until commit.
    pub(crate) fn delete_alarm(&self, options: PutOptions) -> CacheFuture<()> {
        let mut st = match self.check("deleteAlarm()") {
            Ok(st) => st,
            Err(e) => return ready(Err(e)),
        };
        st.alarm = Some((None, options));
        ready(Ok(()))
    }

    /// `txn.rollback()`: discards the buffered writes. May be called again; any other use afterwards fails
    /// with `Cannot <op> on rolled back transaction`. After the closure returned, it fails like other ops.
    pub(crate) fn rollback(&self) -> Result<(), Error> {
        let mut st = self.lock();
        match st.phase {
            Phase::Finished => Err(Error::new(messages::already_committed("rollback()"))),
            Phase::RolledBack => Ok(()),
            Phase::Open => {
                st.phase = Phase::RolledBack;
                st.writes.clear();
                st.alarm = None;
                Ok(())
            }
        }
    }
}
