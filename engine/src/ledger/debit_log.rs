//! The completed debits of recently validated senders, kept in the
//! processor's memory so a velocity window is summed without reading the
//! ledger's rows again on every batch.
//!
//! A window total must be the one the commit applies, so this is a cache
//! that is never trusted on its own:
//! - An entry is used only under the account's row lock, and only if the
//!   account's `version` is the one the entry was taken at. `version` rises
//!   with every balance change, and every completed debit changes the
//!   balance (amounts are positive), so any debit committed elsewhere
//!   (another processor, a deposit or withdrawal, a batch of this one that
//!   rolled back) shows as another version, and the entry is read again.
//! - An entry is written only after the transaction it describes has
//!   committed, and always as exactly the debits at one version. Writers
//!   racing each other can make an entry stale, never wrong.
//! - An entry covers the debits after its `since`; a window reaching further
//!   back is read from the ledger.
//!
//! Both the entries and the whole cache are bounded; an account too busy to
//! fit is summed by the ledger each time, as if there were no cache.

use std::collections::HashMap;

use chrono::{DateTime, TimeDelta, Utc};

use crate::hooks::WindowTotal;

/// Most debits one account's entry holds. A sender with more inside its
/// windows is summed by the ledger on every batch.
pub const DEBITS_PER_ACCOUNT_MAX: usize = 512;
/// Most debits the whole cache holds (about 16 bytes each): past it, entries
/// are dropped until half remain, and their accounts are read again when next seen.
pub const DEBITS_CACHED_MAX: usize = 1 << 20;

/// How much further back than a batch's oldest window an entry is read and
/// kept: one sender's transfers arrive nearly, not exactly, in time order,
/// and a transfer reaching before an entry's `since` costs a read.
pub fn reach_back() -> TimeDelta {
    TimeDelta::minutes(10)
}

/// Every completed debit of one account with a time reference after `since`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebitLog {
    since: DateTime<Utc>,
    /// (time reference, amount in minor units), in no particular order.
    debits: Vec<(DateTime<Utc>, i64)>,
}

impl DebitLog {
    /// None when there are more than an entry may hold.
    pub fn new(since: DateTime<Utc>, debits: Vec<(DateTime<Utc>, i64)>) -> Option<Self> {
        debug_assert!(debits.iter().all(|(at, _)| *at > since), "a log holds only debits after its start");
        (debits.len() <= DEBITS_PER_ACCOUNT_MAX).then_some(Self { since, debits })
    }

    /// Whether every debit after `since` is here.
    pub fn covers(&self, since: DateTime<Utc>) -> bool {
        self.since <= since
    }

    /// Count and sum of the debits after `since`, which the log must cover.
    pub fn total(&self, since: DateTime<Utc>) -> WindowTotal {
        debug_assert!(self.covers(since));
        self.debits.iter().filter(|(at, _)| *at > since).fold(WindowTotal::default(), |total, (_, amount)| total.plus(*amount))
    }

    fn len(&self) -> usize {
        self.debits.len()
    }

    /// The log after `more` debits completed, keeping only those after
    /// `keep_since` (or after its own start, if later); None if it no longer fits.
    pub fn advanced(mut self, more: impl IntoIterator<Item = (DateTime<Utc>, i64)>, keep_since: DateTime<Utc>) -> Option<Self> {
        self.advance(more, keep_since).then_some(self)
    }

    /// `advanced`, in place; false if the log no longer fits.
    fn advance(&mut self, more: impl IntoIterator<Item = (DateTime<Utc>, i64)>, keep_since: DateTime<Utc>) -> bool {
        self.since = self.since.max(keep_since);
        let since = self.since;
        self.debits.retain(|(at, _)| *at > since);
        self.debits.extend(more.into_iter().filter(|(at, _)| *at > since));
        self.debits.len() <= DEBITS_PER_ACCOUNT_MAX
    }
}

/// Logs by account id, each with the account version it is exact for.
#[derive(Debug, Default)]
pub struct DebitCache {
    entries: HashMap<i64, (i64, DebitLog)>,
    /// Debits held over all entries, kept at most `DEBITS_CACHED_MAX`.
    debits: usize,
}

impl DebitCache {
    /// The account's log, if one is held for exactly this version and covers `since`.
    pub fn get(&self, account_id: i64, version: i64, since: DateTime<Utc>) -> Option<&DebitLog> {
        self.entries.get(&account_id).filter(|(v, log)| *v == version && log.covers(since)).map(|(_, log)| log)
    }

    /// The account's log at whatever version it was last put, if it covers
    /// `since`: a prediction (`foresight`), never a fact the commit applies.
    pub fn latest(&self, account_id: i64, since: DateTime<Utc>) -> Option<&DebitLog> {
        self.entries.get(&account_id).map(|(_, log)| log).filter(|log| log.covers(since))
    }

    /// Carries an entry taken at exactly version `from` over to version `to`,
    /// in place, with the `more` debits that committed in between, keeping
    /// only those after `keep_since` (if given and later than its start): for
    /// an account a batch locked at `from`, summed from this entry or not (a
    /// receiver, a sender of a transfer that needed no window). Any other
    /// entry is left as it is, stale for the new version.
    pub fn carry(&mut self, account_id: i64, from: i64, to: i64, more: Vec<(DateTime<Utc>, i64)>, keep_since: Option<DateTime<Utc>>) {
        let Some((version, log)) = self.entries.get_mut(&account_id) else { return };
        if *version != from {
            return;
        }
        let before = log.len();
        let fits = log.advance(more, keep_since.unwrap_or(DateTime::<Utc>::MIN_UTC));
        *version = to;
        let after = log.len();
        self.debits = self.debits - before + after;
        if !fits {
            self.entries.remove(&account_id);
            self.debits -= after;
        }
        self.keep_within_bound();
    }

    /// Records `log` as the account's debits at `version`.
    pub fn put(&mut self, account_id: i64, version: i64, log: DebitLog) {
        self.debits += log.len();
        if let Some((_, old)) = self.entries.insert(account_id, (version, log)) {
            self.debits -= old.len();
        }
        self.keep_within_bound();
    }

    fn keep_within_bound(&mut self) {
        if self.debits > DEBITS_CACHED_MAX {
            // Any entries will do: a dropped one costs one read when its
            // account is next validated, as it did before it was cached.
            let mut left = self.debits;
            self.entries.retain(|_, (_, log)| {
                if left <= DEBITS_CACHED_MAX / 2 {
                    return true;
                }
                left -= log.len();
                false
            });
            self.debits = left;
        }
    }

    #[cfg(test)]
    fn debits(&self) -> usize {
        self.debits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn log(since: i64, debits: &[(i64, i64)]) -> DebitLog {
        DebitLog::new(at(since), debits.iter().map(|&(s, a)| (at(s), a)).collect()).unwrap()
    }

    #[test]
    fn a_log_sums_the_debits_after_a_start_it_covers() {
        let log = log(0, &[(10, 5), (20, 7), (30, 11)]);
        assert_eq!(log.total(at(15)), WindowTotal { count: 2, sum_minor: 18 });
        assert_eq!(log.total(at(20)), WindowTotal { count: 1, sum_minor: 11 }, "the start itself is outside the window");
        assert_eq!(log.total(at(0)), WindowTotal { count: 3, sum_minor: 23 });
        assert!(log.covers(at(0)) && !log.covers(at(-1)), "a window reaching before the log is not answered from it");
    }

    #[test]
    fn an_advanced_log_keeps_only_what_it_still_covers_and_refuses_to_outgrow_its_bound() {
        let advanced = log(0, &[(10, 5), (20, 7)]).advanced([(at(40), 3), (at(12), 1)], at(15)).unwrap();
        assert!(!advanced.covers(at(14)) && advanced.covers(at(15)));
        assert_eq!(advanced.total(at(15)), WindowTotal { count: 2, sum_minor: 10 });
        let full = DebitLog::new(at(0), (1..=DEBITS_PER_ACCOUNT_MAX as i64).map(|s| (at(s), 1)).collect()).unwrap();
        assert!(full.clone().advanced([(at(1_000), 1)], at(0)).is_none());
        assert!(full.advanced([(at(1_000), 1)], at(1)).is_some(), "pruning made room");
        assert!(DebitLog::new(at(0), (0..=DEBITS_PER_ACCOUNT_MAX as i64).map(|s| (at(s + 1), 1)).collect()).is_none());
    }

    #[test]
    fn the_cache_answers_only_for_the_version_an_entry_was_taken_at() {
        let mut cache = DebitCache::default();
        cache.put(7, 3, log(0, &[(10, 5)]));
        assert!(cache.get(7, 3, at(0)).is_some());
        assert!(cache.get(7, 4, at(0)).is_none(), "the account changed since");
        assert!(cache.get(7, 3, at(-1)).is_none(), "the window reaches before the entry");
        assert!(cache.get(8, 3, at(0)).is_none());
        cache.put(7, 4, log(0, &[(10, 5), (11, 6)]));
        assert_eq!(cache.debits(), 2, "the newer entry replaced the older");
        assert!(cache.get(7, 3, at(0)).is_none());
    }

    #[test]
    fn an_entry_is_carried_to_a_new_version_only_from_the_version_it_was_taken_at() {
        let mut cache = DebitCache::default();
        cache.put(7, 3, log(0, &[(10, 5)]));
        cache.carry(7, 2, 9, vec![(at(20), 1)], None);
        assert_eq!(cache.get(7, 3, at(0)), Some(&log(0, &[(10, 5)])), "taken at 3, not 2: left alone");
        cache.carry(7, 3, 5, vec![(at(20), 1)], None);
        assert_eq!(cache.get(7, 3, at(0)), None);
        assert_eq!(cache.get(7, 5, at(0)).map(|l| l.total(at(0))), Some(WindowTotal { count: 2, sum_minor: 6 }));
        assert_eq!(cache.debits(), 2);
        // Carried again, keeping only what a later window start still needs.
        cache.carry(7, 5, 6, vec![(at(30), 2)], Some(at(15)));
        assert_eq!(cache.get(7, 6, at(15)).map(|l| l.total(at(15))), Some(WindowTotal { count: 2, sum_minor: 3 }));
        assert!(cache.get(7, 6, at(0)).is_none(), "no longer covers what it dropped");
        assert_eq!(cache.debits(), 2);
    }

    #[test]
    fn the_cache_stays_within_its_bound_whatever_is_put() {
        let mut cache = DebitCache::default();
        let full = DebitLog::new(at(0), (1..=DEBITS_PER_ACCOUNT_MAX as i64).map(|s| (at(s), 1)).collect()).unwrap();
        for account in 0..(2 * DEBITS_CACHED_MAX / DEBITS_PER_ACCOUNT_MAX) as i64 {
            cache.put(account, 1, full.clone());
            assert!(cache.debits() <= DEBITS_CACHED_MAX, "{} debits after account {account}", cache.debits());
        }
        assert!(cache.debits() >= DEBITS_CACHED_MAX / 2 - DEBITS_PER_ACCOUNT_MAX);
        let held = cache.entries.values().map(|(_, log)| log.len()).sum::<usize>();
        assert_eq!(held, cache.debits(), "the count matches what is held");
    }
}
