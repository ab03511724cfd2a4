//! The context a validator sees beside the transfer: both accounts as they
//! stand just before it, and the sender's velocity over the windows the
//! validator declared. What a validator declares is `ContextNeeds`; a set
//! that needs nothing validates before the batch's transaction, like the
//! other hooks, and pays nothing for context.
//!
//! Velocity counts the sender's completed debits in the transfer's currency
//! whose time reference (`submitted_at`, stored as `created_at`) is later
//! than this transfer's minus the window, and which committed before it.
//! Debits time-stamped after this transfer count too: then for any trailing
//! window, the last of its debits to commit saw all the others, so no window
//! of the sender's history sums past a limit whatever order transfers
//! arrive in. Windows end at the transfer's own time, never at the wall
//! clock, so replaying the ledger gives the same totals.

use chrono::{DateTime, TimeDelta, Utc};

use crate::domain::{Metadata, OwnerId};

/// Windows one validator may declare.
pub const VELOCITY_WINDOWS_MAX: usize = 4;

/// A trailing window of the sender's history, declared by a validator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VelocityWindow(u32);

impl VelocityWindow {
    /// 400 days: more than any yearly limit needs, and the index range stays bounded.
    pub const SECONDS_MAX: u32 = 400 * 86_400;

    pub fn new(seconds: u32) -> Option<Self> {
        (1..=Self::SECONDS_MAX).contains(&seconds).then_some(Self(seconds))
    }

    pub fn seconds(self) -> u32 {
        self.0
    }

    /// The earliest time reference this window still counts, for a transfer at `at` (exclusive).
    pub fn since(self, at: DateTime<Utc>) -> DateTime<Utc> {
        at - TimeDelta::seconds(i64::from(self.0))
    }
}

/// What a validator (or, as a union, a whole set) needs supplied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContextNeeds {
    /// Both accounts' facts.
    pub accounts: bool,
    /// Velocity windows, in the order declared, each once.
    pub windows: Vec<VelocityWindow>,
}

/// Why a validator's declaration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NeedsError {
    #[error("declares {count} velocity windows; at most {VELOCITY_WINDOWS_MAX} are allowed")]
    TooManyWindows { count: usize },
    #[error("declares a velocity window of {seconds} s; windows are 1 s to {} s (400 days)", VelocityWindow::SECONDS_MAX)]
    WindowOutOfRange { seconds: u32 },
}

impl ContextNeeds {
    /// Checks a validator's declaration; a window declared twice counts once.
    pub fn declared(accounts: bool, window_seconds: &[u32]) -> Result<Self, NeedsError> {
        let mut windows = Vec::with_capacity(window_seconds.len());
        for &seconds in window_seconds {
            let window = VelocityWindow::new(seconds).ok_or(NeedsError::WindowOutOfRange { seconds })?;
            if !windows.contains(&window) {
                windows.push(window);
            }
        }
        if windows.len() > VELOCITY_WINDOWS_MAX {
            return Err(NeedsError::TooManyWindows { count: windows.len() });
        }
        Ok(Self { accounts, windows })
    }

    pub fn is_empty(&self) -> bool {
        !self.accounts && self.windows.is_empty()
    }

    /// What a set of validators needs: everything any of them does.
    pub fn union<'a>(all: impl IntoIterator<Item = &'a ContextNeeds>) -> Self {
        let mut union = Self::default();
        for needs in all {
            union.accounts |= needs.accounts;
            for window in &needs.windows {
                if !union.windows.contains(window) {
                    union.windows.push(*window);
                }
            }
        }
        union.windows.sort_unstable();
        union
    }
}

/// An account as it stands just before a transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountFacts {
    pub owner: OwnerId,
    pub balance_minor: i64,
    pub floor_minor: i64,
    pub opened_at: DateTime<Utc>,
    pub metadata: Metadata,
}

/// The sender's completed debits in one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowTotal {
    pub count: u64,
    /// Saturates at `i64::MAX`, which exceeds any limit.
    pub sum_minor: i64,
}

impl WindowTotal {
    /// This total plus one more debit.
    pub fn plus(self, amount_minor: i64) -> Self {
        Self { count: self.count.saturating_add(1), sum_minor: self.sum_minor.saturating_add(amount_minor) }
    }
}

/// What the validators of a set see beside one transfer: all the set needs;
/// each validator is handed only what it declared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    pub sender: Option<AccountFacts>,
    pub receiver: Option<AccountFacts>,
    /// One total per window of the set's `ContextNeeds`.
    pub velocity: Vec<(VelocityWindow, WindowTotal)>,
}

impl Context {
    pub fn total(&self, window: VelocityWindow) -> WindowTotal {
        self.velocity.iter().find(|(w, _)| *w == window).map(|(_, t)| *t).unwrap_or_default()
    }
}

/// The debits of one account that this batch has completed so far, for the
/// windows of the transfers after them in the same batch.
#[derive(Clone, Debug, Default)]
pub struct BatchDebits(Vec<(DateTime<Utc>, i64)>);

impl BatchDebits {
    pub fn push(&mut self, at: DateTime<Utc>, amount_minor: i64) {
        self.0.push((at, amount_minor));
    }

    /// `committed` (the ledger's total before the batch) plus this batch's
    /// debits inside the window of a transfer at `at`.
    pub fn total(&self, committed: WindowTotal, window: VelocityWindow, at: DateTime<Utc>) -> WindowTotal {
        let since = window.since(at);
        self.0.iter().filter(|(t, _)| *t > since).fold(committed, |total, (_, amount)| total.plus(*amount))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn a_declaration_is_checked_and_a_repeated_window_counts_once() {
        let needs = ContextNeeds::declared(true, &[86_400, 3_600, 86_400]).unwrap();
        assert_eq!(needs.windows, [VelocityWindow(86_400), VelocityWindow(3_600)]);
        assert_eq!(ContextNeeds::declared(false, &[0]), Err(NeedsError::WindowOutOfRange { seconds: 0 }));
        assert!(ContextNeeds::declared(false, &[VelocityWindow::SECONDS_MAX + 1]).is_err());
        assert_eq!(ContextNeeds::declared(false, &[1, 2, 3, 4, 5]), Err(NeedsError::TooManyWindows { count: 5 }));
        assert!(ContextNeeds::declared(false, &[]).unwrap().is_empty());
    }

    #[test]
    fn a_set_needs_the_union_of_what_its_validators_declared() {
        let a = ContextNeeds::declared(false, &[86_400]).unwrap();
        let b = ContextNeeds::declared(true, &[3_600, 86_400]).unwrap();
        let union = ContextNeeds::union([&a, &b]);
        assert!(union.accounts);
        assert_eq!(union.windows, [VelocityWindow(3_600), VelocityWindow(86_400)]);
    }

    #[test]
    fn a_window_counts_debits_later_than_its_start_including_ones_time_stamped_after_the_transfer() {
        let day = VelocityWindow::new(86_400).unwrap();
        let mut debits = BatchDebits::default();
        debits.push(at(-86_400), 1); // exactly at the start: outside (the window is open there)
        debits.push(at(-86_399), 10);
        debits.push(at(5), 100); // after the transfer's own time: counts
        let committed = WindowTotal { count: 2, sum_minor: 1_000 };
        assert_eq!(debits.total(committed, day, at(0)), WindowTotal { count: 4, sum_minor: 1_110 });
    }

    #[test]
    fn a_window_total_saturates_instead_of_overflowing() {
        let total = WindowTotal { count: 1, sum_minor: i64::MAX - 1 }.plus(5);
        assert_eq!(total, WindowTotal { count: 2, sum_minor: i64::MAX });
    }
}
