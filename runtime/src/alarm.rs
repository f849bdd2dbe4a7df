//! Alarms (spec §4): the host's scheduler, its persistent index, and the retry policy.
//!
//! The truth about an object's alarm is its storage. The scheduler only knows *when to look*: an index of
//! (namespace, id) → time, kept in a SQLite database of the host's own, so alarms survive a host crash. The
//! index time is never later than the object's stored alarm: `set_alarm` lowers it at once, before the
//! write commits (spec §4, "moving an alarm earlier is scheduled before the DB commit"); moving an alarm later
//! leaves the earlier time, and the run at that time finds the later one and reschedules. So an index entry
//! may fire early or for nothing, and the run checks storage under the input gate before calling the handler.
//! The index moves later (or loses an entry) only once the state it follows is durable (a `sync()` after the
//! read succeeded) and the object set no alarm since the read; otherwise a failed commit, or a `set_alarm`
//! racing the run, could leave an alarm in storage that nothing will ever run.
//!
//! A run (see `Host::run_alarm`) is an event of the object like any other: it reads the stored alarm, and if
//! it is due, arms the handler (the alarm reads as deleted while it runs), calls it with [`AlarmInfo`],
//! deletes the alarm on success (unless the handler set a new one) and waits for that to be durable. Then,
//! in the same event, it settles the index to whatever the object's alarm now is, once that is durable. On failure the alarm stays
//! and is retried after 2 s·2ⁿ plus up to 25% jitter, at most 6 times; then it is abandoned. Failures the
//! object did not cause (an internal storage failure) are not counted, and retry for ever with the backoff
//! capped at 2 s·2⁹. At most one run per object at a time.
//!
//! [`AlarmInfo`]: crate::object::AlarmInfo

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use madsim_tokio::sync::Notify;
use rusqlite::Connection;

use crate::error::Error;
use crate::storage::DatabaseLocation;

/// The first retry's delay (spec §4, workerd `ALARM_RETRY_START_SECONDS`).
pub(crate) const ALARM_RETRY_START: Duration = Duration::from_secs(2);

/// Counted retries before an alarm is abandoned (spec §4, workerd `ALARM_RETRY_MAX_TRIES`): 7 runs in all.
pub(crate) const ALARM_RETRIES_MAX: u32 = 6;

/// The largest backoff exponent of uncounted failures (spec §4: capped at 2 s·2⁹ = 1024 s).
pub(crate) const ALARM_UNCOUNTED_EXPONENT_MAX: u32 = 9;

/// The most jitter added to a retry's delay, in percent of the delay (spec §4).
pub(crate) const ALARM_JITTER_PERCENT_MAX: u32 = 25;

/// How long one alarm handler may run (spec §4, §11): longer, and it fails with `Alarm exceeded its allowed
/// execution time`.
pub(crate) const ALARM_HANDLER_TIMEOUT: Duration = Duration::from_secs(15 * 60);

const _: () = assert!(ALARM_JITTER_PERCENT_MAX <= 100);

/// The alarm policy of a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlarmConfig {
    /// See `ALARM_RETRY_START`.
    pub retry_start: Duration,
    /// See `ALARM_RETRIES_MAX`.
    pub retries_max: u32,
    /// See `ALARM_JITTER_PERCENT_MAX`.
    pub jitter_percent_max: u32,
    /// See `ALARM_HANDLER_TIMEOUT`.
    pub handler_timeout: Duration,
}

impl Default for AlarmConfig {
    fn default() -> AlarmConfig {
        AlarmConfig {
            retry_start: ALARM_RETRY_START,
            retries_max: ALARM_RETRIES_MAX,
            jitter_percent_max: ALARM_JITTER_PERCENT_MAX,
            handler_timeout: ALARM_HANDLER_TIMEOUT,
        }
    }
}

impl AlarmConfig {
    /// The delay before retry `n` (0-based within a streak of failures of one kind), with `jitter` in
    /// `0..=1_000_000` (millionths of the maximum jitter).
    pub fn backoff(&self, n: u32, jitter: u32) -> Duration {
        let base = self.retry_start * 2u32.saturating_pow(n.min(31));
        let max_jitter = base * self.jitter_percent_max / 100;
        base + max_jitter.mul_f64(f64::from(jitter.min(1_000_000)) / 1_000_000.0)
    }
}

/// How an alarm run ended, as the scheduler sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RunOutcome {
    /// The run is over (ran, or found nothing due); the index was settled in the run's event.
    Settled,
    /// The handler failed with an error of the object's making (counted, spec §4).
    Failed(Error),
    /// The run failed for a reason the object did not cause (uncounted).
    Interrupted(Error),
    /// The handler asked not to be retried (`abort` with `retry_alarm: false`), or there is no handler.
    Abandon,
}

/// Whether `error` is the object's fault (counted) or the platform's (spec §4 `isAlarmFailureUserError`).
pub(crate) fn counted(error: &Error) -> bool {
    use crate::error::messages;
    // An I/O error of the object's database is the platform's failure, like workerd's internal storage
    // errors; SQLITE_FULL (the object's storage limit) and constraint failures are the object's.
    let internal = error.retryable()
        || error.message().starts_with(messages::STORAGE_WRITE_INTERNAL_PREFIX)
        || error.message() == messages::STORAGE_NO_LONGER_ACCESSIBLE
        || error.message().contains(": SQLITE_IOERR");
    !internal
}

/// A key of the index: the object's namespace uid and id bytes.
pub(crate) type AlarmKey = (Rc<str>, [u8; 32]);

/// The host's alarm index and timer queue.
pub(crate) struct AlarmScheduler {
    index: RefCell<Option<Connection>>,
    /// Key → index time.
    at: RefCell<BTreeMap<AlarmKey, i64>>,
    /// (time, key), for the next due entry.
    due: RefCell<BTreeSet<(i64, AlarmKey)>>,
    /// Objects with a run in progress.
    running: RefCell<BTreeSet<AlarmKey>>,
    /// How many times each object has set its alarm (in this process), for [`AlarmScheduler::settle`].
    notes: RefCell<BTreeMap<AlarmKey, u64>>,
    /// Wakes the timer loop when an earlier entry arrives.
    pub(crate) wake: Notify,
}

/// A failure of the alarm index: the platform's, never the object's (so an alarm run it cuts short is retried
/// without counting, spec §4), hence flagged retryable.
fn index_error(e: &rusqlite::Error) -> Error {
    if crate::location::is_busy(e) {
        // Another host holds the index: a misconfiguration that no retry cures.
        return Error::new(format!(
            "alarm index: it is in use by another connection (two hosts cannot share one storage): {e}"
        ));
    }
    Error::new(format!("alarm index: {e}")).with_retryable()
}

impl AlarmScheduler {
    /// Opens the index at `location` and loads it.
    pub(crate) fn open(location: &DatabaseLocation) -> Result<AlarmScheduler, Error> {
        let conn = location.open().map_err(|e| {
            let error = Error::new(format!("alarm index: {e}"));
            if e.in_use {
                error
            } else {
                error.with_retryable()
            }
        })?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS alarms (namespace TEXT NOT NULL, id BLOB NOT NULL, time INTEGER NOT NULL, \
             PRIMARY KEY (namespace, id)) WITHOUT ROWID",
        )
        .map_err(|e| index_error(&e))?;
        let mut at = BTreeMap::new();
        let mut due = BTreeSet::new();
        {
            let mut stmt = conn
                .prepare("SELECT namespace, id, time FROM alarms ORDER BY namespace, id")
                .map_err(|e| index_error(&e))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, i64>(2)?)))
                .map_err(|e| index_error(&e))?;
            for row in rows {
                let (ns, id, time) = row.map_err(|e| index_error(&e))?;
                let id: [u8; 32] =
                    id.try_into().map_err(|_| Error::new("alarm index: an id is not 32 bytes"))?;
                let key: AlarmKey = (Rc::from(ns), id);
                at.insert(key.clone(), time);
                due.insert((time, key));
            }
        }
        Ok(AlarmScheduler {
            index: RefCell::new(Some(conn)),
            at: RefCell::new(at),
            due: RefCell::new(due),
            running: RefCell::new(BTreeSet::new()),
            notes: RefCell::new(BTreeMap::new()),
            wake: Notify::new(),
        })
    }

    /// Entries in the index.
    pub(crate) fn len(&self) -> usize {
        self.at.borrow().len()
    }

    /// The index time of `key`.
    pub(crate) fn scheduled(&self, key: &AlarmKey) -> Option<i64> {
        self.at.borrow().get(key).copied()
    }

    fn write(&self, key: &AlarmKey, time: Option<i64>) -> Result<(), Error> {
        let index = self.index.borrow();
        let conn = index.as_ref().ok_or_else(|| Error::new("alarm index: closed"))?;
        match time {
            Some(t) => conn.execute(
                "INSERT INTO alarms (namespace, id, time) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (namespace, id) DO UPDATE SET time = ?3",
                rusqlite::params![&*key.0, &key.1[..], t],
            ),
            None => conn.execute(
                "DELETE FROM alarms WHERE namespace = ?1 AND id = ?2",
                rusqlite::params![&*key.0, &key.1[..]],
            ),
        }
        .map(|_| ())
        .map_err(|e| index_error(&e))
    }

    fn set(&self, key: &AlarmKey, time: Option<i64>) -> Result<(), Error> {
        let old = self.at.borrow().get(key).copied();
        if old == time {
            return Ok(());
        }
        self.write(key, time)?;
        if let Some(old) = old {
            self.due.borrow_mut().remove(&(old, key.clone()));
        }
        match time {
            Some(t) => {
                self.at.borrow_mut().insert(key.clone(), t);
                self.due.borrow_mut().insert((t, key.clone()));
                self.wake.notify_one();
            }
            None => {
                self.at.borrow_mut().remove(key);
            }
        }
        Ok(())
    }

    /// The object is setting its alarm to `time` (not yet committed): the index moves earlier if needed, and
    /// durably, before the write can commit. A failure fails the `set_alarm` call.
    pub(crate) fn note(&self, key: &AlarmKey, time: i64) -> Result<(), Error> {
        *self.notes.borrow_mut().entry(key.clone()).or_default() += 1;
        match self.scheduled(key) {
            Some(t) if t <= time => Ok(()),
            _ => self.set(key, Some(time)),
        }
    }

    /// How many alarm times the object has set so far (see [`AlarmScheduler::settle`]).
    pub(crate) fn generation(&self, key: &AlarmKey) -> u64 {
        self.notes.borrow().get(key).copied().unwrap_or(0)
    }

    /// A run read the object's alarm as `time`, at `generation`, and that state is now durable: the index
    /// follows it, unless the object set an alarm since the read (the index might then move past it). In
    /// that case the entry goes back in the queue as it is, and the next run reads storage again.
    pub(crate) fn settle(&self, key: &AlarmKey, time: Option<i64>, generation: u64) -> Result<(), Error> {
        if self.generation(key) != generation {
            self.requeue(key);
            return Ok(());
        }
        self.set(key, time)
    }

    /// Removes the entry of an object whose class is gone.
    pub(crate) fn forget(&self, key: &AlarmKey) -> Result<(), Error> {
        self.set(key, None)
    }

    /// The first entry due at or before `now_ms` whose object has no run in progress, taken off the queue;
    /// else the time of the next entry, if any.
    pub(crate) fn next_due(&self, now_ms: i64) -> Result<(i64, AlarmKey), Option<i64>> {
        let running = self.running.borrow();
        let mut due = self.due.borrow_mut();
        let found = due.iter().find(|(t, k)| *t > now_ms || !running.contains(k)).cloned();
        match found {
            Some((t, key)) if t <= now_ms => {
                due.remove(&(t, key.clone()));
                Ok((t, key))
            }
            Some((t, _)) => Err(Some(t)),
            None => Err(None),
        }
    }

    /// Whether a run of `key` is in progress (its handler runs, or it waits to be retried).
    pub(crate) fn is_running(&self, key: &AlarmKey) -> bool {
        self.running.borrow().contains(key)
    }

    /// Takes `key`'s entry off the timer's queue (a run is about to start without the timer); it stays in
    /// the index.
    pub(crate) fn take_due(&self, key: &AlarmKey) {
        if let Some(t) = self.scheduled(key) {
            self.due.borrow_mut().remove(&(t, key.clone()));
        }
    }

    /// Marks a run of `key` as started (`true`) or ended.
    pub(crate) fn set_running(&self, key: &AlarmKey, running: bool) {
        let mut r = self.running.borrow_mut();
        if running {
            let fresh = r.insert(key.clone());
            assert!(fresh, "at most one alarm run per object at a time");
        } else {
            r.remove(key);
            // Its entry may have been skipped while it ran.
            self.wake.notify_one();
        }
    }

    /// Puts `key` back in the queue at its index time (a run ended without settling).
    pub(crate) fn requeue(&self, key: &AlarmKey) {
        if let Some(t) = self.scheduled(key) {
            self.due.borrow_mut().insert((t, key.clone()));
            self.wake.notify_one();
        }
    }

    /// Closes the index (the host shuts down).
    pub(crate) fn close(&self) {
        self.index.borrow_mut().take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_two_seconds_with_bounded_jitter() {
        let c = AlarmConfig::default();
        let secs: Vec<u64> = (0..6).map(|n| c.backoff(n, 0).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 64]);
        assert_eq!(c.backoff(0, 1_000_000), Duration::from_millis(2500));
        assert_eq!(c.backoff(5, 1_000_000), Duration::from_secs(80));
        assert_eq!(c.backoff(9, 0), Duration::from_secs(1024));
    }

    #[test]
    fn user_errors_count_and_platform_errors_do_not() {
        use crate::error::messages;
        assert!(counted(&Error::new("boom")));
        assert!(counted(&Error::new(messages::ABORTED).with_reset()));
        assert!(!counted(&Error::new(messages::STORAGE_NO_LONGER_ACCESSIBLE).with_retryable().with_reset()));
        assert!(!counted(&Error::new(messages::storage_write_internal("x")).with_reset()));
        assert!(!counted(
            &Error::new("disk I/O error: SQLITE_IOERR (extended: SQLITE_IOERR_WRITE)").with_reset()
        ));
        assert!(counted(&Error::new("database or disk is full: SQLITE_FULL").with_reset()));
    }
}
