//! Committing a batch so that no item can stop it: a batch that PostgreSQL
//! refuses because of one item's values is split in halves until the item is
//! found. The rest commits, in order; the item is recorded as `failed` with
//! only the values that are safe to store, or, if even that is refused,
//! handed back to be dead-lettered with its reason.
//!
//! Errors that are nobody's item (PostgreSQL away, a lock timeout, a
//! permission an operator removed) are retried, whole, until they pass or
//! shutdown: skipping records for them would lose transfers. The watchdog
//! reports a processor that makes no progress for long.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::Instant;

use chrono::Utc;
use tokio::sync::watch;
use tracing::{error, warn};

use super::{Processor, backoff, log_commit_failure, wait_or_stop};
use crate::domain::Reason;
use crate::ledger::{BatchResult, CommitItem, Foresight, LedgerError, Verdict};

/// The code of a transfer that PostgreSQL refused to store as submitted.
pub const UNSTORABLE_CODE: &str = "transfer_unstorable";

/// What committing a batch came to.
pub(super) struct Isolated {
    /// The items committed (an unstorable one replaced by its failure), in input order.
    pub items: Vec<CommitItem>,
    /// One outcome per item of `items`, and the balances the commits left.
    pub result: BatchResult,
    /// Input positions that could not be stored in any form, each with why: to dead-letter.
    pub poison: Vec<(usize, String)>,
}

impl Processor {
    /// Commits `items` in order, isolating the ones PostgreSQL refuses for
    /// their values. None if shutdown interrupted it (the batch is redelivered,
    /// and what did commit is recognised as duplicates).
    pub(super) async fn commit_isolating(
        &self,
        items: Vec<CommitItem>,
        foresight: &Foresight,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Isolated> {
        let mut items: Vec<Option<CommitItem>> = items.into_iter().map(Some).collect();
        let mut outcomes = vec![None; items.len()];
        let mut balances = Vec::new();
        let (mut validated_ahead, mut validated_in_commit) = (0, 0);
        let mut poison = Vec::new();
        // Ranges still to commit, in input order: a refused range is replaced
        // by its two halves, so commits keep the order records arrived in.
        let mut pending: VecDeque<Range<usize>> = VecDeque::new();
        pending.push_back(0..items.len());
        while let Some(range) = pending.pop_front() {
            let slice: Vec<CommitItem> = items[range.clone()].iter().flatten().cloned().collect();
            match self.commit_until_permanent(&slice, foresight, shutdown).await? {
                Ok(result) => {
                    for (slot, outcome) in outcomes[range].iter_mut().zip(result.outcomes) {
                        *slot = Some(outcome);
                    }
                    balances.extend(result.balances);
                    validated_ahead += result.validated_ahead;
                    validated_in_commit += result.validated_in_commit;
                }
                Err(_) if range.len() > 1 => {
                    let middle = range.start + range.len() / 2;
                    pending.push_front(middle..range.end);
                    pending.push_front(range.start..middle);
                }
                Err(e) => {
                    let index = range.start;
                    let item = items[index].take().expect("each item is committed once");
                    let failed = unstorable(&item, &e);
                    error!(transfer_id = %item.submission.id, error = ?e, "PostgreSQL refused to store a transfer; recording it as failed.");
                    match self.commit_until_permanent(std::slice::from_ref(&failed), foresight, shutdown).await? {
                        Ok(result) => {
                            outcomes[index] = result.outcomes.into_iter().next();
                            balances.extend(result.balances);
                            items[index] = Some(failed);
                        }
                        Err(again) => {
                            error!(transfer_id = %item.submission.id, error = ?again, "PostgreSQL refused even the failure record; dead-lettering the record.");
                            poison.push((index, format!("{UNSTORABLE_CODE}: {}", describe(&e))));
                        }
                    }
                }
            }
        }
        let mut kept = Vec::with_capacity(items.len());
        let mut kept_outcomes = Vec::with_capacity(items.len());
        for (item, outcome) in items.into_iter().zip(outcomes) {
            if let (Some(item), Some(outcome)) = (item, outcome) {
                kept.push(item);
                kept_outcomes.push(outcome);
            }
        }
        let result = BatchResult { outcomes: kept_outcomes, balances, validated_ahead, validated_in_commit };
        Some(Isolated { items: kept, result, poison })
    }

    /// Commits, retrying every error that is not the items' own fault.
    /// `Ok(Err(e))`: PostgreSQL refused these values; None: shutdown.
    async fn commit_until_permanent(
        &self,
        items: &[CommitItem],
        foresight: &Foresight,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Result<BatchResult, LedgerError>> {
        let mut failures = 0;
        loop {
            let started = Instant::now();
            match self.ledger.commit_batch_foreseen(items, foresight).await {
                Ok(result) => {
                    self.metrics.commit_duration.observe(started.elapsed().as_secs_f64());
                    return Some(Ok(result));
                }
                Err(e) if e.is_data_dependent() => {
                    warn!(error = %e, items = items.len(), sql_state = e.sql_state(), "PostgreSQL refused the batch's values; splitting it.");
                    return Some(Err(e));
                }
                Err(e) => {
                    failures += 1;
                    log_commit_failure(&e, failures);
                    if wait_or_stop(backoff(failures), shutdown).await {
                        return None;
                    }
                }
            }
        }
    }
}

/// The transfer as a final failure, with only what is safe to store: its
/// identity, parties and amount (checked at decode), the commit time instead
/// of the submitted one, and no description or plugin output (either may
/// be what PostgreSQL refused). Its fingerprint is the submission's, so a
/// redelivered record is recognised as a duplicate.
fn unstorable(item: &CommitItem, e: &LedgerError) -> CommitItem {
    let mut submission = item.submission.clone();
    submission.submitted_at = Utc::now();
    let reason = Reason {
        code: UNSTORABLE_CODE.into(),
        message: format!("the ledger could not store this transfer as submitted ({}); it was not applied", describe(e)),
    };
    CommitItem { submission, verdict: Verdict::Fail(reason), description: None, amount: item.amount, decisions: Vec::new() }
}

/// The SQLSTATE, which names the kind of refusal without repeating the values.
fn describe(e: &LedgerError) -> String {
    match e.sql_state() {
        Some(state) => format!("SQLSTATE {state}"),
        None => "a value could not be encoded".to_owned(),
    }
}
