//! Validating ahead of the commit.
//!
//! Validators that declared context decide on the facts the commit applies,
//! which exist only under the batch's locks (`commit`). Run there, every
//! plugin call lengthens the transaction that holds the locks. So the
//! processor's prepare stage, which overlaps the previous batch's commit,
//! asks them first, on a *predicted* context: the accounts and debits as
//! this processor's own commits left them, with the batches still in flight
//! applied as they were predicted to commit.
//!
//! The commit still builds the exact context under the locks, and uses a
//! foreseen answer only where the transfer, its amount, its description and
//! the context all equal what the validators were given. A validator's answer
//! depends on nothing else: each call runs on a fresh instance of the same
//! component with the same config, with no clock, randomness or I/O. So a
//! foreseen answer that is used is the one the validators would give under
//! the locks. Anywhere the prediction went otherwise (another processor's
//! debit, a deposit, a metadata change, an earlier transfer decided
//! differently), the validators are asked again in the commit: a wrong
//! prediction costs a plugin call, never a decision.
//!
//! A failure is never reused: a plugin's fault can depend on the machine
//! (its wall-clock backstop), so it is asked again where it counts.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};

use super::Ledger;
use super::commit::{AccountKey, Accounts, CommitItem, InCommit, LockedAccount, Verdict, decide_new, decisions_json};
use super::debit_log::DebitCache;
use crate::domain::{Amount, Submission};
use crate::hooks::{Context, Decision, HookError, HookSet, WindowTotal};

/// Accounts whose committed state a processor remembers, at most; past it
/// they are all forgotten, and each costs a plugin call in the commit until seen again.
const ACCOUNTS_REMEMBERED_MAX: usize = 1 << 18;
/// Debits predicted for batches in flight, at most (normally two batches' worth).
const DEBITS_PREDICTED_MAX: usize = 1 << 16;

/// The validators' answers for one batch, asked ahead of its commit, with
/// the hook set they came from (which the commit then runs on).
pub struct Foresight {
    hooks: HookSet,
    /// This batch's number among the ones foreseen; None if nothing was.
    batch: Option<u64>,
    /// Taken by the commit that uses them (a retried commit asks again).
    answers: HashMap<uuid::Uuid, Mutex<Option<Foreseen>>>,
    /// Answers the commit used, and validations it ran itself.
    pub(super) used: AtomicUsize,
    pub(super) asked: AtomicUsize,
}

/// What the validators answered for one transfer, and on what.
#[derive(Debug)]
pub(super) struct Foreseen {
    /// The item as it was asked about: the submission, its description and
    /// the decisions of the hooks before validation.
    submission: Submission,
    description: Option<String>,
    earlier: Vec<Decision>,
    amount: Amount,
    context: Context,
    /// Allowed or rejected: failures are not kept.
    answer: Result<(), HookError>,
    decisions: Vec<Decision>,
    /// The decision record as the commit stores it (`earlier` then `decisions`),
    /// serialised here rather than while the locks are held.
    record: Option<String>,
}

/// A foreseen answer as the commit uses it.
pub(super) struct Recalled {
    pub(super) answer: Result<(), HookError>,
    pub(super) decisions: Vec<Decision>,
    pub(super) record: Option<String>,
}

impl Foreseen {
    /// The record of an answer, None for a failure.
    pub(super) fn answered(
        item: &CommitItem,
        amount: Amount,
        context: &Context,
        answer: &Result<(), HookError>,
        decisions: &[Decision],
    ) -> Option<Self> {
        if matches!(answer, Err(HookError::Fail(_))) {
            return None;
        }
        Some(Self {
            submission: item.submission.clone(),
            description: item.description.clone(),
            earlier: item.decisions.clone(),
            amount,
            context: context.clone(),
            answer: answer.clone(),
            decisions: decisions.to_vec(),
            record: decisions_json(&[item.decisions.as_slice(), decisions].concat()),
        })
    }
}

impl Foresight {
    /// Nothing foreseen: every validation runs in the commit.
    pub fn none(hooks: HookSet) -> Self {
        Self { hooks, batch: None, answers: HashMap::new(), used: AtomicUsize::new(0), asked: AtomicUsize::new(0) }
    }

    pub fn hooks(&self) -> &HookSet {
        &self.hooks
    }

    /// How many transfers have an answer waiting for the commit.
    pub fn answered(&self) -> usize {
        self.answers.len()
    }

    /// Whether an answer was foreseen for this transfer (on some context).
    pub(super) fn has_answer(&self, item: &CommitItem) -> bool {
        self.answers.contains_key(&item.submission.id.0)
    }

    pub(super) fn batch(&self) -> Option<u64> {
        self.batch
    }

    /// The answer foreseen for exactly this item on exactly this context.
    pub(super) fn recall(&self, item: &CommitItem, amount: Amount, context: &Context) -> Option<Recalled> {
        let mut slot = self.answers.get(&item.submission.id.0)?.lock().unwrap_or_else(PoisonError::into_inner);
        let same = slot.as_ref().is_some_and(|foreseen| {
            foreseen.amount == amount
                && foreseen.context == *context
                && foreseen.submission == item.submission
                && foreseen.description == item.description
                && foreseen.earlier == item.decisions
        });
        let foreseen = slot.take_if(|_| same)?;
        Some(Recalled { answer: foreseen.answer, decisions: foreseen.decisions, record: foreseen.record })
    }
}

/// How validators are asked while deciding a batch.
pub(super) enum Asking<'a> {
    /// In the commit: a foreseen answer where it is exact, else the validators.
    InCommit(Option<&'a Foresight>),
    /// Foreseeing: the validators, with each answer recorded. The items in
    /// `blind` have no predicted context; they are taken to pass, unasked.
    Ahead { blind: HashSet<usize> },
}

impl Asking<'_> {
    /// Whether the validators are likely to be called for item `index`
    /// (in the commit, unless the answer foreseen proves exact).
    pub(super) fn likely_calls(&self, index: usize, item: &CommitItem) -> bool {
        matches!(item.verdict, Verdict::Validate(_))
            && match self {
                Self::InCommit(foresight) => !foresight.is_some_and(|f| f.has_answer(item)),
                Self::Ahead { blind } => !blind.contains(&index),
            }
    }
}

/// What this processor's commits and predictions say of the accounts it
/// validates. Shared by the ledger's clones, beside the debit logs.
#[derive(Debug, Default)]
pub(super) struct Outlook {
    /// Accounts as this processor's last foreseen commit that locked them left them.
    committed: HashMap<AccountKey, LockedAccount>,
    /// Accounts as a batch in flight was predicted to leave them.
    predicted: HashMap<AccountKey, (u64, LockedAccount)>,
    /// Completed debits predicted for batches in flight, per account id.
    predicted_debits: HashMap<i64, Vec<(u64, DateTime<Utc>, i64)>>,
    debits_predicted: usize,
    next_batch: u64,
    /// Every batch numbered up to here has committed or been given up.
    settled: Option<u64>,
}

impl Outlook {
    fn in_flight(&self, batch: u64) -> bool {
        self.settled.is_none_or(|settled| batch > settled)
    }

    /// The account as the batch about to be foreseen is predicted to find it.
    fn account(&self, key: &AccountKey) -> Option<LockedAccount> {
        match self.predicted.get(key) {
            Some((batch, account)) if self.in_flight(*batch) => Some(account.clone()),
            _ => self.committed.get(key).cloned(),
        }
    }

    /// The sender's debits predicted for the batches in flight inside a window.
    fn predicted_total(&self, account_id: i64, since: DateTime<Utc>, committed: WindowTotal) -> WindowTotal {
        let Some(debits) = self.predicted_debits.get(&account_id) else { return committed };
        debits
            .iter()
            .filter(|(batch, at, _)| self.in_flight(*batch) && *at > since)
            .fold(committed, |total, (_, _, minor)| total.plus(*minor))
    }

    /// Records what a batch is predicted to leave behind.
    fn predict(&mut self, batch: u64, accounts: Accounts, debits: Vec<(i64, DateTime<Utc>, i64)>) {
        for (key, mut account) in accounts {
            if account.changed {
                account.changed = false;
                self.predicted.insert(key, (batch, account));
            }
        }
        if self.debits_predicted + debits.len() > DEBITS_PREDICTED_MAX {
            // Only predictions are lost: their accounts cost calls in the commit.
            self.predicted_debits.clear();
            self.debits_predicted = 0;
        }
        self.debits_predicted += debits.len();
        for (account_id, at, minor) in debits {
            self.predicted_debits.entry(account_id).or_default().push((batch, at, minor));
        }
    }

    /// After a foreseen batch has committed: its accounts as they now are,
    /// and every prediction of it and of the batches before it retired.
    pub(super) fn settle(&mut self, batch: u64, accounts: Accounts) {
        if self.committed.len() + accounts.len() > ACCOUNTS_REMEMBERED_MAX {
            self.committed.clear();
        }
        for (key, mut account) in accounts {
            account.changed = false;
            self.committed.insert(key, account);
        }
        let settled = self.settled.map_or(batch, |s| s.max(batch));
        self.settled = Some(settled);
        self.predicted.retain(|_, (b, _)| *b > settled);
        let mut left = 0;
        self.predicted_debits.retain(|_, debits| {
            debits.retain(|(b, _, _)| *b > settled);
            left += debits.len();
            !debits.is_empty()
        });
        self.debits_predicted = left;
    }
}

/// The debit logs and the outlook, under one lock: a commit updates both at
/// once, so a prediction never counts a batch's debits twice (committed and
/// predicted) or not at all.
#[derive(Debug, Default)]
pub(super) struct Memory {
    pub(super) debits: DebitCache,
    pub(super) outlook: Outlook,
}

impl Ledger {
    /// Asks the validators of `hooks` ahead of the commit, for the items
    /// that wait for them, on the context they are predicted to find.
    /// Plugin calls on this thread and a few more: call it off the async workers.
    pub fn foresee(&self, items: &[CommitItem], hooks: HookSet) -> Foresight {
        let needs = hooks.needs();
        let mut first = HashSet::with_capacity(items.len());
        let new: Vec<usize> = (0..items.len()).filter(|&i| first.insert(items[i].submission.id.0)).collect();
        if needs.is_empty() || !new.iter().any(|&i| matches!(items[i].verdict, Verdict::Validate(_))) {
            return Foresight::none(hooks);
        }
        let widest = needs.windows.iter().copied().max_by_key(|w| w.seconds());

        // What the batch is predicted to find, taken under the lock.
        let mut accounts = Accounts::with_capacity(items.len() * 2);
        let mut committed = HashMap::new();
        let mut blind = HashSet::new();
        let batch = {
            let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
            let Memory { debits, outlook } = &mut *memory;
            let batch = outlook.next_batch;
            outlook.next_batch += 1;
            for &i in &new {
                let s = &items[i].submission;
                for key in [(s.sender.get(), s.currency.code()), (s.receiver.get(), s.currency.code())] {
                    if !accounts.contains_key(&key)
                        && let Some(account) = outlook.account(&key)
                    {
                        accounts.insert(key, account);
                    }
                }
                if !matches!(items[i].verdict, Verdict::Validate(_)) {
                    continue;
                }
                let sender = accounts.get(&(s.sender.get(), s.currency.code()));
                let known = sender.is_some() && accounts.contains_key(&(s.receiver.get(), s.currency.code()));
                let log = match (widest, sender) {
                    (Some(widest), Some(sender)) => {
                        debits.latest(sender.account_id, widest.since(s.submitted_at)).map(|log| (sender.account_id, log))
                    }
                    _ => None,
                };
                match (known, widest, log) {
                    (true, None, _) => {}
                    (true, Some(_), Some((account_id, log))) => {
                        for window in &needs.windows {
                            let since = window.since(s.submitted_at);
                            committed.insert((i, *window), outlook.predicted_total(account_id, since, log.total(since)));
                        }
                    }
                    _ => drop(blind.insert(i)),
                }
            }
            batch
        };

        let in_commit = InCommit::new(&*hooks, needs, committed, Asking::Ahead { blind });
        let decided = decide_new(items, &new, &mut accounts, Some(&in_commit));
        let mut answers = HashMap::new();
        let mut debits = Vec::new();
        for (i, decided) in decided.into_iter().enumerate() {
            let Some(decided) = decided else { continue };
            if let Some((debit, _, minor)) = decided.moved {
                debits.push((debit, items[i].submission.submitted_at, minor));
            }
            if let Some(foreseen) = decided.foreseen {
                answers.insert(items[i].submission.id.0, Mutex::new(Some(foreseen)));
            }
        }
        self.memory.lock().unwrap_or_else(PoisonError::into_inner).outlook.predict(batch, accounts, debits);
        Foresight { batch: Some(batch), answers, ..Foresight::none(hooks) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn predicted_debits_count_only_while_their_batch_is_in_flight() {
        let mut outlook = Outlook::default();
        outlook.predict(0, Accounts::new(), vec![(7, at(10), 100)]);
        outlook.predict(1, Accounts::new(), vec![(7, at(20), 10)]);
        let before = WindowTotal { count: 1, sum_minor: 1 };
        assert_eq!(outlook.predicted_total(7, at(0), before), WindowTotal { count: 3, sum_minor: 111 });
        assert_eq!(outlook.predicted_total(7, at(15), before), WindowTotal { count: 2, sum_minor: 11 }, "inside the window only");
        outlook.settle(0, Accounts::new());
        assert_eq!(
            outlook.predicted_total(7, at(0), before),
            WindowTotal { count: 2, sum_minor: 11 },
            "batch 0 is in the committed log now"
        );
        // A later batch committing retires an earlier one that never did.
        outlook.predict(2, Accounts::new(), vec![(7, at(30), 1_000)]);
        outlook.settle(3, Accounts::new());
        assert_eq!(outlook.predicted_total(7, at(0), before), before);
        assert_eq!(outlook.debits_predicted, 0);
    }

    #[test]
    fn predicted_debits_stay_within_their_bound_whatever_is_predicted() {
        let mut outlook = Outlook::default();
        for batch in 0..4 {
            outlook.predict(batch, Accounts::new(), (0..DEBITS_PREDICTED_MAX as i64 / 3).map(|id| (id, at(1), 1)).collect());
            assert!(outlook.debits_predicted <= DEBITS_PREDICTED_MAX);
        }
        let held: usize = outlook.predicted_debits.values().map(Vec::len).sum();
        assert_eq!(held, outlook.debits_predicted);
    }
}
