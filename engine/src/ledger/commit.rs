//! `commit_batch`: the one place money moves.
//!
//! One transaction per batch: lock every account the batch touches in
//! ascending id order (so concurrent batches cannot deadlock), read which
//! transfer ids already exist, decide every transfer in order in Rust with
//! checked arithmetic (so two debits of one account in one batch see each
//! other), then write transfers, entries, history and balances with one
//! set-based statement each.
//!
//! Validators that need context (`Verdict::Validate`) run here, in step 3,
//! not with the other hooks before the transaction. Only here are the facts
//! they are given the ones the commit applies: the accounts are locked, so
//! no other batch, processor, deposit or withdrawal can change a balance or
//! complete a debit of the sender until this transaction ends; the
//! sender's committed debits are summed after the lock is taken; and the
//! earlier transfers of the same batch are added as they are decided, as
//! balances already are. The committed debits come from a log kept in
//! memory where the locked account's version proves it exact (`debit_log`),
//! else from the ledger. The validators are asked inside the transaction
//! only where the processor could not foresee their answer (`foresight`):
//! an answer asked ahead is used only on exactly the context built here.

use std::collections::{HashMap, hash_map::Entry};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{instrument, warn};

use super::debit_log::{self, DebitLog};
use super::foresight::{Asking, Foreseen, Foresight, Memory};
use super::{AccountView, Ledger, LedgerError};
use crate::domain::{Amount, Currency, Metadata, OwnerId, Reason, Rejection, Status, Submission, TransferId};
use crate::hooks::{self, AccountFacts, BatchDebits, Context, ContextNeeds, Decision, HookError, Hooks, VelocityWindow, WindowTotal};

/// How often a batch is retried after losing a race (a concurrent insert of
/// the same id, a deadlock the lock order should already prevent).
const COMMIT_ATTEMPTS_MAX: u32 = 8;
const COMMIT_RETRY_BACKOFF_MS: u64 = 5;

/// What the hooks decided before the ledger looks at balances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Move this amount (in the submission's currency), if the accounts allow.
    Apply(Amount),
    /// Move this amount if the validators, given their context under the
    /// batch's locks, and then the accounts allow.
    Validate(Amount),
    /// A policy refused it (an engine rule or a plugin's rejection).
    Reject(Reason),
    /// Something failed while deciding (a plugin trapped, timed out...).
    Fail(Reason),
}

/// One transfer to commit, with what the hooks made of it.
#[derive(Clone, Debug)]
pub struct CommitItem {
    pub submission: Submission,
    pub verdict: Verdict,
    /// The description to store: the description hook's rewrite of the submitted one.
    pub description: Option<String>,
    /// The amount to record when the verdict is not `Apply` (the converted
    /// amount if conversion ran, else the submitted one, else unknown).
    pub amount: Option<Amount>,
    /// What each plugin decided, recorded with the transfer when it is new.
    pub decisions: Vec<Decision>,
}

impl CommitItem {
    /// The amount the ledger records: the one applied, else the one known.
    pub fn recorded_amount(&self) -> Option<Amount> {
        match self.verdict {
            Verdict::Apply(amount) | Verdict::Validate(amount) => Some(amount),
            _ => self.amount,
        }
    }

    /// An item that moves the submitted amount as given, with no hooks (deposits, tests).
    pub fn apply_as_submitted(submission: Submission) -> Option<Self> {
        let amount = submission.amount()?;
        let description = submission.description.clone();
        Some(Self { submission, verdict: Verdict::Apply(amount), description, amount: Some(amount), decisions: Vec::new() })
    }
}

/// How this call related to what the ledger already held for the id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// First time: this call recorded the outcome.
    New,
    /// Seen before with the same meaning: the stored outcome, nothing changed.
    Duplicate,
    /// Seen before with a different meaning: never applied, the conflict recorded.
    Conflict,
}

/// The outcome of one item. For duplicates and conflicts it is the outcome
/// stored for the id the first time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub transfer_id: TransferId,
    pub status: Status,
    pub version: i32,
    pub reason: Option<Reason>,
    pub disposition: Disposition,
    pub committed_at: DateTime<Utc>,
    /// What the validators decided in this commit (`Verdict::Validate`),
    /// after the item's own decisions; empty for every other item.
    pub validated: Vec<Decision>,
}

#[derive(Clone, Debug, Default)]
pub struct BatchResult {
    /// One per input item, in input order.
    pub outcomes: Vec<Committed>,
    /// One per account whose balance changed, as it is after the batch.
    pub balances: Vec<AccountView>,
    /// Transfers whose validators' answer, asked ahead (`foresight`), the
    /// commit used; and transfers whose validators it asked itself.
    pub validated_ahead: usize,
    pub validated_in_commit: usize,
}

/// An account as locked for this batch, with its running balance.
#[derive(Clone, Debug)]
pub(super) struct LockedAccount {
    pub(super) account_id: i64,
    balance_minor: i64,
    floor_minor: i64,
    version: i64,
    pub(super) changed: bool,
    opened_at: DateTime<Utc>,
    /// Read only when a validator needs account facts. A stored value that
    /// is not valid metadata (written around the API) fails the transfers
    /// that would show it to a validator, rather than show them less.
    metadata: Option<Result<Metadata, String>>,
}

/// (account_id, owner_id, currency, balance_minor, floor_minor, version, created_at, metadata)
type LockedRow = (i64, i64, String, i64, i64, i64, DateTime<Utc>, Option<String>);

/// Code of the failure of a transfer whose context could not be built.
pub const CONTEXT_UNAVAILABLE_CODE: &str = "context_unavailable";

/// The validators that run in this commit (or ahead of it), with what they need.
pub(super) struct InCommit<'a> {
    hooks: &'a dyn Hooks,
    needs: ContextNeeds,
    /// The ledger's totals before the batch, per (item index, window).
    committed: HashMap<(usize, VelocityWindow), WindowTotal>,
    asking: Asking<'a>,
}

impl<'a> InCommit<'a> {
    pub(super) fn new(hooks: &'a dyn Hooks, needs: ContextNeeds, committed: Totals, asking: Asking<'a>) -> Self {
        Self { hooks, needs, committed, asking }
    }
}

/// Debits this batch has completed so far, per debit account id.
type Debits = HashMap<i64, BatchDebits>;

/// What deciding one new transfer came to.
pub(super) struct Decided {
    status: Status,
    reason: Option<Reason>,
    amount_minor: Option<i64>,
    debit: Option<i64>,
    credit: Option<i64>,
    validated: Vec<Decision>,
    /// (debit account, credit account, amount) when it completed.
    pub(super) moved: Option<(i64, i64, i64)>,
    /// Ahead of the commit: the validators' answer and what they were given.
    pub(super) foreseen: Option<Foreseen>,
    /// The decision record, when it was serialised ahead of the commit.
    record: Option<String>,
}

/// What asking the validators about one transfer came to.
struct Asked {
    answer: Result<(), HookError>,
    decisions: Vec<Decision>,
    /// In the commit, a foreseen answer's decision record.
    record: Option<String>,
    /// Ahead of the commit, the answer as recorded for it.
    foreseen: Option<Foreseen>,
}

/// Threads the validators of one batch are spread over, at most, and the
/// fewest new transfers worth more than one.
const VALIDATION_THREADS_MAX: usize = 4;
const VALIDATION_ITEMS_PER_THREAD_MIN: usize = 16;

/// The version a new transfer reaches in one commit: 1 initiated, 2 final.
const FINAL_VERSION_NEW: i32 = 2;

/// Column arrays for the set-based inserts, one entry per new transfer.
#[derive(Default)]
struct NewRows {
    transfer_id: Vec<uuid::Uuid>,
    kind: Vec<&'static str>,
    sender_id: Vec<i64>,
    receiver_id: Vec<i64>,
    debit_account_id: Vec<Option<i64>>,
    credit_account_id: Vec<Option<i64>>,
    currency: Vec<&'static str>,
    amount_minor: Vec<Option<i64>>,
    original_amount_minor: Vec<Option<i64>>,
    original_currency: Vec<Option<&'static str>>,
    description: Vec<Option<String>>,
    status: Vec<&'static str>,
    reason_code: Vec<Option<String>>,
    reason_message: Vec<Option<String>>,
    fingerprint: Vec<Vec<u8>>,
    created_at: Vec<DateTime<Utc>>,
    entry_transfer_id: Vec<uuid::Uuid>,
    entry_account_id: Vec<i64>,
    entry_amount_minor: Vec<i64>,
    conflict_transfer_id: Vec<uuid::Uuid>,
    conflict_fingerprint: Vec<Vec<u8>>,
    /// JSON arrays of plugin decisions (NULL when no plugin ran).
    decisions: Vec<Option<String>>,
    client_id: Vec<Option<uuid::Uuid>>,
    /// JSON objects of the submitted metadata (NULL when there is none).
    metadata: Vec<Option<String>>,
}

/// What the ledger already holds for an id (or what this batch decided for it).
#[derive(Clone)]
struct Known {
    fingerprint: Vec<u8>,
    status: Status,
    version: i32,
    reason: Option<Reason>,
    committed_at: DateTime<Utc>,
}

pub(super) type AccountKey = (i64, &'static str);

pub(super) type Accounts = HashMap<AccountKey, LockedAccount>;

/// (transfer_id, fingerprint, status, status_version, reason_code, reason_message, committed_at)
type ExistingRow = (uuid::Uuid, Vec<u8>, String, i32, Option<String>, Option<String>, Option<DateTime<Utc>>);

impl Ledger {
    /// Commits a batch atomically and returns one outcome per item, in order.
    /// Rejections are outcomes; an `Err` means nothing of the batch was written.
    // Failures are WARN: the caller retries them and logs what it does about them.
    #[instrument(name = "ledger.commit", skip_all, fields(batch_size = items.len()), err(level = tracing::Level::WARN))]
    pub async fn commit_batch(&self, items: &[CommitItem]) -> Result<BatchResult, LedgerError> {
        self.commit_batch_validating(items, None).await
    }

    /// `commit_batch`, running `hooks`' validators for the items that wait
    /// for them (`Verdict::Validate`). Without hooks such an item fails.
    pub async fn commit_batch_validating(&self, items: &[CommitItem], hooks: Option<&dyn Hooks>) -> Result<BatchResult, LedgerError> {
        self.commit_batch_asking(items, hooks, None).await
    }

    /// `commit_batch_validating` on the foresight's hooks, using each answer
    /// it foresaw where the context under the locks is the one it was given.
    pub async fn commit_batch_foreseen(&self, items: &[CommitItem], foresight: &Foresight) -> Result<BatchResult, LedgerError> {
        self.commit_batch_asking(items, Some(&**foresight.hooks()), Some(foresight)).await
    }

    async fn commit_batch_asking(
        &self,
        items: &[CommitItem],
        hooks: Option<&dyn Hooks>,
        foresight: Option<&Foresight>,
    ) -> Result<BatchResult, LedgerError> {
        let mut attempt = 1;
        loop {
            match self.try_commit_batch(items, hooks, foresight).await {
                Err(e) if e.is_retryable_conflict() && attempt < COMMIT_ATTEMPTS_MAX => {
                    warn!(attempt, error = %e, "Batch lost a race; retrying it.");
                    tokio::time::sleep(Duration::from_millis(COMMIT_RETRY_BACKOFF_MS * u64::from(attempt))).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn try_commit_batch(
        &self,
        items: &[CommitItem],
        hooks: Option<&dyn Hooks>,
        foresight: Option<&Foresight>,
    ) -> Result<BatchResult, LedgerError> {
        if items.is_empty() {
            return Ok(BatchResult::default());
        }
        let validating = items.iter().any(|i| matches!(i.verdict, Verdict::Validate(_)));
        let needs = match hooks {
            Some(hooks) if validating => hooks.needs(),
            _ => ContextNeeds::default(),
        };
        let mut tx = self.pool.begin().await?;

        // 1. Lock every account the batch names, in ascending id order.
        let mut owners = Vec::with_capacity(items.len() * 2);
        let mut currencies = Vec::with_capacity(items.len() * 2);
        for item in items {
            let s = &item.submission;
            for owner in [s.sender, s.receiver] {
                owners.push(owner.get());
                currencies.push(s.currency.code());
            }
        }
        let rows: Vec<LockedRow> = sqlx::query_as(
            "SELECT account_id, owner_id, currency, balance_minor, floor_minor, version, created_at,
                    CASE WHEN $3 THEN metadata::text END
               FROM accounts
              WHERE (owner_id, currency) IN (SELECT * FROM UNNEST($1::bigint[], $2::text[]))
              ORDER BY account_id
                FOR UPDATE",
        )
        .bind(&owners)
        .bind(&currencies)
        .bind(needs.accounts)
        .fetch_all(&mut *tx)
        .await?;
        let mut accounts: HashMap<AccountKey, LockedAccount> = HashMap::with_capacity(rows.len());
        for (account_id, owner_id, currency, balance_minor, floor_minor, version, opened_at, metadata) in rows {
            let currency = Currency::parse(&currency).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
            let metadata = metadata.map(|text| serde_json::from_str::<Metadata>(&text).map_err(|e| e.to_string()));
            let account = LockedAccount { account_id, balance_minor, floor_minor, version, changed: false, opened_at, metadata };
            accounts.insert((owner_id, currency.code()), account);
        }

        // 2. Which ids does the ledger already hold? Read after the locks, so a
        //    concurrent batch holding the same accounts has committed by now.
        let ids: Vec<uuid::Uuid> = items.iter().map(|i| i.submission.id.0).collect();
        let existing: Vec<ExistingRow> = sqlx::query_as(
            "SELECT transfer_id, fingerprint, status, status_version, reason_code, reason_message, committed_at
               FROM transfers WHERE transfer_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut known: HashMap<uuid::Uuid, Known> = HashMap::with_capacity(existing.len());
        for (id, fingerprint, status, version, code, message, committed_at) in existing {
            let status = Status::parse(&status).ok_or_else(|| LedgerError::Corrupt(format!("status {status:?}")))?;
            let reason = code.map(|code| Reason { code, message: message.unwrap_or_default() });
            let committed_at = committed_at.unwrap_or_else(Utc::now);
            known.insert(id, Known { fingerprint, status, version, reason, committed_at });
        }

        // 2b. The sender's velocity before this batch, for each transfer the
        //     validators will see: read after the locks, so every debit of
        //     these accounts that could commit before this batch has.
        // Each account's version as locked: a log held for exactly that
        // version is carried to the version this batch leaves.
        let locked: Vec<(i64, i64)> =
            if needs.windows.is_empty() { Vec::new() } else { accounts.values().map(|a| (a.account_id, a.version)).collect() };
        let (in_commit, logs, hits) = match hooks {
            Some(hooks) if validating => {
                let (committed, logs, hits) = committed_totals(&mut tx, items, &known, &accounts, &needs.windows, &self.memory).await?;
                (Some(InCommit::new(hooks, needs, committed, Asking::InCommit(foresight))), logs, hits)
            }
            _ => (None, Logs::new(), Hits::new()),
        };

        // 3. Decide each transfer in order. Validators are plugin calls (CPU,
        //    tens of microseconds each, and a plugin's WASI calls may block
        //    on the runtime): never on an async worker. On a single-threaded
        //    runtime (tests) `block_in_place` is not allowed, so a scoped thread.
        let now = Utc::now();
        let mut decide_batch = || decide_all(items, &mut known, &mut accounts, in_commit.as_ref(), now);
        let multi_thread = tokio::runtime::Handle::current().runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread;
        let (rows, outcomes) = match (validating, multi_thread) {
            (false, _) => decide_batch(),
            (true, true) => tokio::task::block_in_place(decide_batch),
            (true, false) => {
                std::thread::scope(|scope| scope.spawn(decide_batch).join()).unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }
        };

        // 4. Write, one statement per table.
        write_rows(&mut tx, &rows, now).await?;
        let wrote_events = self.events.is_some() && !rows.transfer_id.is_empty();
        if wrote_events {
            write_events(&mut tx, &rows.transfer_id, now).await?;
        }
        let mut balances = Vec::new();
        let (mut ids, mut new_balances, mut versions) = (Vec::new(), Vec::new(), Vec::new());
        for ((owner_id, currency), account) in &accounts {
            if account.changed {
                ids.push(account.account_id);
                new_balances.push(account.balance_minor);
                versions.push(account.version);
                balances.push(AccountView {
                    account_id: account.account_id,
                    floor_minor: account.floor_minor,
                    owner_id: OwnerId::from_stored(*owner_id),
                    currency: Currency::parse(currency).expect("parsed above"),
                    balance_minor: account.balance_minor,
                    version: account.version,
                });
            }
        }
        if !ids.is_empty() {
            sqlx::query(
                "UPDATE accounts AS a SET balance_minor = u.balance_minor, version = u.version
                   FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[]) AS u(account_id, balance_minor, version)
                  WHERE a.account_id = u.account_id",
            )
            .bind(&ids)
            .bind(&new_balances)
            .bind(&versions)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if let (true, Some(written)) = (wrote_events, &self.events) {
            written.notify_one();
        }
        let (validated_ahead, validated_in_commit) =
            foresight.map_or((0, 0), |f| (f.used.swap(0, Ordering::Relaxed), f.asked.swap(0, Ordering::Relaxed)));
        remember(&self.memory, logs, &locked, &hits, &rows, accounts, foresight.and_then(Foresight::batch));
        Ok(BatchResult { outcomes, balances, validated_ahead, validated_in_commit })
    }
}

/// Step 3 of a commit: each item in order against the locked accounts.
fn decide_all(
    items: &[CommitItem],
    known: &mut HashMap<uuid::Uuid, Known>,
    accounts: &mut HashMap<AccountKey, LockedAccount>,
    in_commit: Option<&InCommit<'_>>,
    now: DateTime<Utc>,
) -> (NewRows, Vec<Committed>) {
    // The items the ledger records now: the first of each id it does not hold.
    let mut ids = std::collections::HashSet::with_capacity(items.len());
    let new: Vec<usize> =
        (0..items.len()).filter(|&i| !known.contains_key(&items[i].submission.id.0) && ids.insert(items[i].submission.id.0)).collect();
    let mut decided = decide_new(items, &new, accounts, in_commit);

    let mut rows = NewRows::default();
    let mut outcomes = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let s = &item.submission;
        let fingerprint = s.fingerprint().to_vec();
        match known.entry(s.id.0) {
            Entry::Occupied(seen) => {
                let seen = seen.get();
                let disposition = if seen.fingerprint == fingerprint {
                    Disposition::Duplicate
                } else {
                    rows.conflict_transfer_id.push(s.id.0);
                    rows.conflict_fingerprint.push(fingerprint);
                    Disposition::Conflict
                };
                outcomes.push(Committed {
                    transfer_id: s.id,
                    status: seen.status,
                    version: seen.version,
                    reason: seen.reason.clone(),
                    disposition,
                    committed_at: seen.committed_at,
                    validated: Vec::new(),
                });
            }
            Entry::Vacant(slot) => {
                let Decided { status, reason, amount_minor, debit, credit, validated, moved, record, .. } =
                    decided[index].take().expect("every new item was decided");
                if let Some((debit_id, credit_id, minor)) = moved {
                    rows.entry_transfer_id.extend([s.id.0, s.id.0]);
                    rows.entry_account_id.extend([debit_id, credit_id]);
                    rows.entry_amount_minor.extend([-minor, minor]);
                }
                rows.transfer_id.push(s.id.0);
                rows.kind.push(s.kind.as_str());
                rows.sender_id.push(s.sender.get());
                rows.receiver_id.push(s.receiver.get());
                rows.debit_account_id.push(debit);
                rows.credit_account_id.push(credit);
                rows.currency.push(s.currency.code());
                rows.amount_minor.push(amount_minor);
                rows.original_amount_minor.push(s.original().map(|m| m.amount.minor()));
                rows.original_currency.push(s.original().map(|m| m.currency.code()));
                rows.description.push(item.description.clone());
                rows.status.push(status.as_str());
                rows.reason_code.push(reason.as_ref().map(|r| r.code.clone()));
                rows.reason_message.push(reason.as_ref().map(|r| r.message.clone()));
                rows.fingerprint.push(fingerprint.clone());
                rows.created_at.push(s.submitted_at);
                rows.decisions.push(record.or_else(|| decisions_json(&[item.decisions.as_slice(), validated.as_slice()].concat())));
                rows.client_id.push(s.client_id.map(|c| c.0));
                rows.metadata.push((!s.metadata.is_empty()).then(|| serde_json::to_string(&s.metadata).expect("metadata serialises")));
                slot.insert(Known { fingerprint, status, version: FINAL_VERSION_NEW, reason: reason.clone(), committed_at: now });
                outcomes.push(Committed {
                    transfer_id: s.id,
                    status,
                    version: FINAL_VERSION_NEW,
                    reason,
                    disposition: Disposition::New,
                    committed_at: now,
                    validated,
                });
            }
        }
    }
    (rows, outcomes)
}

/// Decides the new items (indices into `items`, ascending); the answer has
/// one slot per item, filled for the new ones.
///
/// An item's context and outcome depend only on its two accounts and on the
/// earlier items that touch them. So when validators run (plugin calls, tens
/// of microseconds each, while the transaction holds its locks), the items
/// are split into groups that share no account, each group decided in batch
/// order on its own thread with its own accounts: the same answers as one
/// pass in batch order, in a fraction of the time the locks are held.
pub(super) fn decide_new(
    items: &[CommitItem],
    new: &[usize],
    accounts: &mut HashMap<AccountKey, LockedAccount>,
    in_commit: Option<&InCommit<'_>>,
) -> Vec<Option<Decided>> {
    let mut all: Vec<Option<Decided>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    // Threads pay off only for the plugin calls: answers foreseen (and
    // likely to be used) cost microseconds, less than a thread's start.
    let calls = in_commit.map_or(0, |in_commit| new.iter().filter(|&&i| in_commit.asking.likely_calls(i, &items[i])).count());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(VALIDATION_THREADS_MAX);
    let threads = threads.min(calls / VALIDATION_ITEMS_PER_THREAD_MIN).max(1);
    let Some(in_commit) = in_commit.filter(|_| threads > 1) else {
        let mut debits = Debits::new();
        for &i in new {
            all[i] = Some(decide(i, &items[i], accounts, in_commit, &mut debits));
        }
        return all;
    };
    let groups = groups_sharing_no_account(items, new);
    // Largest groups first onto the least loaded thread: a hot account's
    // group is one thread's whole share.
    let mut shares: Vec<(Vec<usize>, Accounts)> = (0..threads).map(|_| Default::default()).collect();
    for group in groups {
        let share = shares.iter_mut().min_by_key(|(indices, _)| indices.len()).expect("at least one thread");
        for &i in &group {
            let s = &items[i].submission;
            for key in [(s.sender.get(), s.currency.code()), (s.receiver.get(), s.currency.code())] {
                if let Some(account) = accounts.remove(&key) {
                    share.1.insert(key, account);
                }
            }
        }
        share.0.extend(group);
    }
    let decided: Vec<(Vec<(usize, Decided)>, Accounts)> = std::thread::scope(|scope| {
        let workers: Vec<_> = shares
            .into_iter()
            .map(|(mut indices, mut own)| {
                scope.spawn(move || {
                    indices.sort_unstable();
                    let mut debits = Debits::new();
                    let decided = indices.into_iter().map(|i| (i, decide(i, &items[i], &mut own, Some(in_commit), &mut debits))).collect();
                    (decided, own)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("deciding a transfer does not panic")).collect()
    });
    for (part, own) in decided {
        for (i, d) in part {
            all[i] = Some(d);
        }
        accounts.extend(own);
    }
    all
}

/// The new items split into groups, none of which shares an account
/// (sender's or receiver's) with another: the connected components of the
/// items linked by their accounts.
fn groups_sharing_no_account(items: &[CommitItem], new: &[usize]) -> Vec<Vec<usize>> {
    // Union-find over positions in `new`, joined through each account's first item.
    let mut parent: Vec<usize> = (0..new.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut first_of: HashMap<AccountKey, usize> = HashMap::with_capacity(new.len() * 2);
    for (position, &i) in new.iter().enumerate() {
        let s = &items[i].submission;
        for key in [(s.sender.get(), s.currency.code()), (s.receiver.get(), s.currency.code())] {
            let other = *first_of.entry(key).or_insert(position);
            let (a, b) = (root(&mut parent, position), root(&mut parent, other));
            parent[a] = b;
        }
    }
    let mut groups: HashMap<usize, Vec<usize>> = HashMap::new();
    for (position, &i) in new.iter().enumerate() {
        let r = root(&mut parent, position);
        groups.entry(r).or_default().push(i);
    }
    let mut groups: Vec<Vec<usize>> = groups.into_values().collect();
    groups.sort_unstable_by_key(|g| std::cmp::Reverse(g.len()));
    groups
}

/// The ledger's velocity totals before this batch, per (item index, window).
type Totals = HashMap<(usize, VelocityWindow), WindowTotal>;

/// The debit logs a batch read from the ledger and summed from, by account
/// id, each with how far back to keep it once the batch's own debits are added.
type Logs = HashMap<i64, (DebitLog, DateTime<Utc>)>;

/// The accounts whose held log a batch summed from, each with how far back
/// to keep it when it is carried to the version the batch leaves.
type Hits = HashMap<i64, DateTime<Utc>>;

/// The ledger's velocity totals before this batch, for every new item that
/// waits for validation and every window the validators declared, summed
/// from each sender's debit log: the cached one if the locked account's
/// version proves it exact, else one read from the ledger now (one index
/// range scan per account on `transfers_completed_debits`). A sender with
/// too many debits to log is summed by the ledger per item and window.
async fn committed_totals(
    tx: &mut sqlx::PgConnection,
    items: &[CommitItem],
    known: &HashMap<uuid::Uuid, Known>,
    accounts: &HashMap<AccountKey, LockedAccount>,
    windows: &[VelocityWindow],
    memory: &Mutex<Memory>,
) -> Result<(Totals, Logs, Hits), LedgerError> {
    let Some(widest) = windows.iter().copied().max_by_key(|w| w.seconds()) else { return Ok(Default::default()) };
    // (item index, sender's account id, time reference), and per sender its
    // version and the oldest window start any of its items reaches.
    let mut wanted = Vec::new();
    let mut reach: HashMap<i64, (i64, DateTime<Utc>)> = HashMap::new();
    for (index, item) in items.iter().enumerate() {
        let s = &item.submission;
        if !matches!(item.verdict, Verdict::Validate(_)) || known.contains_key(&s.id.0) {
            continue;
        }
        let Some(debit) = accounts.get(&(s.sender.get(), s.currency.code())) else { continue };
        wanted.push((index, debit.account_id, s.submitted_at));
        let since = widest.since(s.submitted_at);
        reach.entry(debit.account_id).and_modify(|(_, oldest)| *oldest = (*oldest).min(since)).or_insert((debit.version, since));
    }
    // Summed in place from the logs held for exactly the locked version.
    let mut committed = HashMap::with_capacity(wanted.len() * windows.len());
    let mut hits = Hits::new();
    {
        let memory = memory.lock().unwrap_or_else(PoisonError::into_inner);
        for &(index, account_id, at) in &wanted {
            let (version, oldest) = reach[&account_id];
            let Some(log) = memory.debits.get(account_id, version, oldest) else { continue };
            hits.insert(account_id, oldest - debit_log::reach_back());
            for window in windows {
                committed.insert((index, *window), log.total(window.since(at)));
            }
        }
    }
    let misses: Vec<(i64, DateTime<Utc>)> =
        reach.iter().filter(|(id, _)| !hits.contains_key(id)).map(|(&id, &(_, since))| (id, since - debit_log::reach_back())).collect();
    let mut logs = Logs::new();
    if !misses.is_empty() {
        for (id, log) in read_debit_logs(tx, &misses).await? {
            logs.insert(id, (log, reach[&id].1 - debit_log::reach_back()));
        }
    }

    let mut unlogged = Vec::new();
    let (mut account_ids, mut since) = (Vec::new(), Vec::new());
    for (index, account_id, at) in wanted {
        if hits.contains_key(&account_id) {
            continue;
        }
        for window in windows {
            match logs.get(&account_id) {
                Some((log, _)) => drop(committed.insert((index, *window), log.total(window.since(at)))),
                None => {
                    unlogged.push((index, *window));
                    account_ids.push(account_id);
                    since.push(window.since(at));
                }
            }
        }
    }
    if unlogged.is_empty() {
        return Ok((committed, logs, hits));
    }
    // LATERAL keeps it one index probe per row whatever the planner thinks
    // of the join; the sum is numeric in PostgreSQL and is clamped to i64.
    let totals: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT u.n, w.count, w.sum_minor
           FROM UNNEST($1::bigint[], $2::timestamptz[]) WITH ORDINALITY AS u(account_id, since, n)
          CROSS JOIN LATERAL (
                SELECT count(*) AS count, LEAST(coalesce(sum(t.amount_minor), 0), 9223372036854775807)::bigint AS sum_minor
                  FROM transfers t
                 WHERE t.debit_account_id = u.account_id AND t.status = 'completed' AND t.created_at > u.since) w",
    )
    .bind(&account_ids)
    .bind(&since)
    .fetch_all(&mut *tx)
    .await?;
    for (n, count, sum_minor) in totals {
        let key =
            usize::try_from(n - 1).ok().and_then(|i| unlogged.get(i)).ok_or_else(|| LedgerError::Corrupt(format!("velocity row {n}")))?;
        let count = u64::try_from(count).map_err(|_| LedgerError::Corrupt(format!("velocity count {count}")))?;
        committed.insert(*key, WindowTotal { count, sum_minor });
    }
    Ok((committed, logs, hits))
}

/// Each account's completed debits after its start, as a log; accounts with
/// more than a log holds get none. Read under the accounts' locks.
async fn read_debit_logs(tx: &mut sqlx::PgConnection, reach: &[(i64, DateTime<Utc>)]) -> Result<HashMap<i64, DebitLog>, LedgerError> {
    let (ids, since): (Vec<i64>, Vec<DateTime<Utc>>) = reach.iter().copied().unzip();
    // One more than a log holds, to tell a full account from an overfull one.
    let per_account_max = i64::try_from(debit_log::DEBITS_PER_ACCOUNT_MAX + 1).expect("a small bound");
    let rows: Vec<(i64, DateTime<Utc>, Option<i64>)> = sqlx::query_as(
        "SELECT u.account_id, d.created_at, d.amount_minor
           FROM UNNEST($1::bigint[], $2::timestamptz[]) AS u(account_id, since)
          CROSS JOIN LATERAL (
                SELECT t.created_at, t.amount_minor
                  FROM transfers t
                 WHERE t.debit_account_id = u.account_id AND t.status = 'completed' AND t.created_at > u.since
                 ORDER BY t.created_at DESC
                 LIMIT $3) d",
    )
    .bind(&ids)
    .bind(&since)
    .bind(per_account_max)
    .fetch_all(&mut *tx)
    .await?;
    let mut debits: HashMap<i64, Vec<(DateTime<Utc>, i64)>> = ids.iter().map(|&id| (id, Vec::new())).collect();
    for (id, at, amount_minor) in rows {
        let amount_minor = amount_minor.ok_or_else(|| LedgerError::Corrupt(format!("a completed debit of account {id} has no amount")))?;
        debits.entry(id).or_default().push((at, amount_minor));
    }
    Ok(reach.iter().filter_map(|&(id, since)| DebitLog::new(since, debits.remove(&id).unwrap_or_default()).map(|log| (id, log))).collect())
}

/// After the batch has committed: each log it read, and each log held for the
/// version an account was `locked` at (pruned as `hits` says for those it
/// summed from), with the batch's own completed debits added, is exact for
/// its account's new version; and a foreseen batch's accounts are what the
/// next predictions start from.
fn remember(
    memory: &Mutex<Memory>,
    logs: Logs,
    locked: &[(i64, i64)],
    hits: &Hits,
    rows: &NewRows,
    accounts: Accounts,
    foreseen: Option<u64>,
) {
    let mut completed: HashMap<i64, Vec<(DateTime<Utc>, i64)>> = HashMap::new();
    for i in 0..rows.transfer_id.len() {
        if let (true, Some(debit), Some(amount)) =
            (rows.status[i] == Status::Completed.as_str(), rows.debit_account_id[i], rows.amount_minor[i])
        {
            completed.entry(debit).or_default().push((rows.created_at[i], amount));
        }
    }
    let versions: HashMap<i64, i64> = accounts.values().map(|a| (a.account_id, a.version)).collect();
    let mut memory = memory.lock().unwrap_or_else(PoisonError::into_inner);
    for (id, (log, keep_since)) in logs {
        let more = completed.remove(&id).unwrap_or_default();
        if let (Some(&version), Some(log)) = (versions.get(&id), log.advanced(more, keep_since)) {
            memory.debits.put(id, version, log);
        }
    }
    for &(id, locked_version) in locked {
        if let Some(&version) = versions.get(&id) {
            memory.debits.carry(id, locked_version, version, completed.remove(&id).unwrap_or_default(), hits.get(&id).copied());
        }
    }
    if let Some(batch) = foreseen {
        memory.outlook.settle(batch, accounts);
    }
}

/// One account's facts as a validator sees them; None if there is no such account.
fn facts(owner: OwnerId, key: &AccountKey, accounts: &HashMap<AccountKey, LockedAccount>) -> Result<Option<AccountFacts>, Reason> {
    let Some(account) = accounts.get(key) else { return Ok(None) };
    let metadata = match &account.metadata {
        Some(Ok(metadata)) => metadata.clone(),
        Some(Err(e)) => {
            return Err(Reason {
                code: CONTEXT_UNAVAILABLE_CODE.into(),
                message: format!("the stored metadata of account {owner} {} is not valid metadata: {e}", key.1),
            });
        }
        None => Metadata::default(),
    };
    Ok(Some(AccountFacts {
        owner,
        balance_minor: account.balance_minor,
        floor_minor: account.floor_minor,
        opened_at: account.opened_at,
        metadata,
    }))
}

impl InCommit<'_> {
    /// The context of item `index`, from the locked accounts as they stand now.
    fn context(
        &self,
        index: usize,
        s: &Submission,
        accounts: &HashMap<AccountKey, LockedAccount>,
        debits: &Debits,
    ) -> Result<Context, Reason> {
        let debit_key = (s.sender.get(), s.currency.code());
        let credit_key = (s.receiver.get(), s.currency.code());
        let mut context = Context::default();
        if self.needs.accounts {
            context.sender = facts(s.sender, &debit_key, accounts)?;
            context.receiver = facts(s.receiver, &credit_key, accounts)?;
        }
        let batch = accounts.get(&debit_key).and_then(|a| debits.get(&a.account_id));
        for window in &self.needs.windows {
            let committed = self.committed.get(&(index, *window)).copied().unwrap_or_default();
            let total = batch.map_or(committed, |debits| debits.total(committed, *window, s.submitted_at));
            context.velocity.push((*window, total));
        }
        Ok(context)
    }

    /// The validators' answer for item `index`: foreseen, if it was on
    /// exactly this context, else asked now; a panic in host code fails
    /// only this transfer. Ahead of the commit, the answer is also recorded.
    fn validate(&self, index: usize, item: &CommitItem, amount: Amount, context: &Context) -> Asked {
        match &self.asking {
            Asking::InCommit(Some(foresight)) => {
                if let Some(recalled) = foresight.recall(item, amount, context) {
                    foresight.used.fetch_add(1, Ordering::Relaxed);
                    return Asked { answer: recalled.answer, decisions: recalled.decisions, record: recalled.record, foreseen: None };
                }
                foresight.asked.fetch_add(1, Ordering::Relaxed);
            }
            Asking::Ahead { blind } if blind.contains(&index) => {
                return Asked { answer: Ok(()), decisions: Vec::new(), record: None, foreseen: None };
            }
            Asking::InCommit(None) | Asking::Ahead { .. } => {}
        }
        let (s, description) = (&item.submission, item.description.as_deref());
        let mut decisions = Vec::new();
        let answer = hooks::unless_panicked(s.id, || self.hooks.validate(s, amount, description, context, &mut decisions))
            .unwrap_or_else(|reason| Err(HookError::Fail(reason)));
        let foreseen = match self.asking {
            Asking::Ahead { .. } => Foreseen::answered(item, amount, context, &answer, &decisions),
            Asking::InCommit(_) => None,
        };
        Asked { answer, decisions, record: None, foreseen }
    }
}

/// Decides one new transfer against the locked balances, applying it to
/// them (and to the entry rows) when it completes. Validators waiting for
/// context run first, as they would have before the transaction.
fn decide(
    index: usize,
    item: &CommitItem,
    accounts: &mut HashMap<AccountKey, LockedAccount>,
    in_commit: Option<&InCommit<'_>>,
    debits: &mut Debits,
) -> Decided {
    let (mut foreseen, mut record) = (None, None);
    let decided = decide_recording(index, item, accounts, in_commit, debits, &mut foreseen, &mut record);
    Decided { foreseen, record, ..decided }
}

/// `decide`, with what the validators were asked ahead of the commit left in
/// `foreseen`, and a foreseen answer's decision record in `record`.
fn decide_recording(
    index: usize,
    item: &CommitItem,
    accounts: &mut HashMap<AccountKey, LockedAccount>,
    in_commit: Option<&InCommit<'_>>,
    debits: &mut Debits,
    foreseen: &mut Option<Foreseen>,
    record: &mut Option<String>,
) -> Decided {
    let s = &item.submission;
    let debit_key = (s.sender.get(), s.currency.code());
    let credit_key = (s.receiver.get(), s.currency.code());
    let debit_id = accounts.get(&debit_key).map(|a| a.account_id);
    let credit_id = accounts.get(&credit_key).map(|a| a.account_id);
    let ended = |status, reason: &Reason, validated| Decided {
        status,
        reason: Some(reason.clone()),
        amount_minor: item.recorded_amount().map(Amount::minor),
        debit: debit_id,
        credit: credit_id,
        validated,
        moved: None,
        foreseen: None,
        record: None,
    };
    let (amount, validated, in_commit) = match (&item.verdict, in_commit) {
        (Verdict::Apply(amount), in_commit) => (*amount, Vec::new(), in_commit),
        (Verdict::Reject(reason), _) => return ended(Status::Rejected, reason, Vec::new()),
        (Verdict::Fail(reason), _) => return ended(Status::Failed, reason, Vec::new()),
        (Verdict::Validate(_), None) => {
            let reason =
                Reason { code: hooks::HOOK_FAILED_CODE.into(), message: "the transfer was committed without its validators".into() };
            return ended(Status::Failed, &reason, Vec::new());
        }
        (Verdict::Validate(amount), Some(in_commit)) => {
            let context = match in_commit.context(index, s, accounts, debits) {
                Ok(context) => context,
                Err(reason) => return ended(Status::Failed, &reason, Vec::new()),
            };
            let asked = in_commit.validate(index, item, *amount, &context);
            (*foreseen, *record) = (asked.foreseen, asked.record);
            match asked.answer {
                Ok(()) => (*amount, asked.decisions, Some(in_commit)),
                Err(HookError::Reject(reason)) => return ended(Status::Rejected, &reason, asked.decisions),
                Err(HookError::Fail(reason)) => return ended(Status::Failed, &reason, asked.decisions),
            }
        }
    };
    let reject = |r: Rejection, validated| Decided {
        status: Status::Rejected,
        reason: Some(r.to_reason()),
        amount_minor: Some(amount.minor()),
        debit: debit_id,
        credit: credit_id,
        validated,
        moved: None,
        foreseen: None,
        record: None,
    };
    if s.sender == s.receiver {
        return reject(Rejection::AccountsMustBeDifferent, validated);
    }
    let (Some(debit_id), Some(credit_id)) = (debit_id, credit_id) else {
        let missing = if debit_id.is_none() { s.sender } else { s.receiver };
        return reject(Rejection::AccountNotFound { owner_id: missing.get(), currency: s.currency.code().to_owned() }, validated);
    };
    let debit = &accounts[&debit_key];
    let Some(new_debit) = debit.balance_minor.checked_sub(amount.minor()).filter(|b| *b >= debit.floor_minor) else {
        return reject(Rejection::InsufficientFunds, validated);
    };
    let credit = &accounts[&credit_key];
    let Some(new_credit) = credit.balance_minor.checked_add(amount.minor()) else {
        return reject(Rejection::BalanceOverflow, validated);
    };
    for (key, balance) in [(debit_key, new_debit), (credit_key, new_credit)] {
        let account = accounts.get_mut(&key).expect("looked up above");
        account.balance_minor = balance;
        account.version += 1;
        account.changed = true;
    }
    if in_commit.is_some() {
        debits.entry(debit_id).or_default().push(s.submitted_at, amount.minor());
    }
    Decided {
        status: Status::Completed,
        reason: None,
        amount_minor: Some(amount.minor()),
        debit: Some(debit_id),
        credit: Some(credit_id),
        validated,
        moved: Some((debit_id, credit_id, amount.minor())),
        foreseen: None,
        record: None,
    }
}

/// The decision record as stored: a JSON array, or NULL when no plugin ran.
pub(super) fn decisions_json(decisions: &[Decision]) -> Option<String> {
    if decisions.is_empty() {
        return None;
    }
    Some(serde_json::to_string(decisions).expect("decisions serialise"))
}

/// The event outbox's row for the new transfers of a commit: each gets its
/// versions 1 (initiated) to 2 (final), as `write_rows` writes them.
async fn write_events(tx: &mut sqlx::PgConnection, transfer_ids: &[uuid::Uuid], now: DateTime<Utc>) -> Result<(), LedgerError> {
    sqlx::query("INSERT INTO event_outbox (transfer_ids, from_version, to_version, written_at) VALUES ($1, 1, $2, $3)")
        .bind(transfer_ids)
        .bind(FINAL_VERSION_NEW)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn write_rows(tx: &mut sqlx::PgConnection, rows: &NewRows, now: DateTime<Utc>) -> Result<(), LedgerError> {
    if !rows.transfer_id.is_empty() {
        sqlx::query(
            "INSERT INTO transfers (transfer_id, kind, sender_id, receiver_id, debit_account_id, credit_account_id,
                                    currency, amount_minor, original_amount_minor, original_currency, description,
                                    status, status_version, reason_code, reason_message, fingerprint, created_at, committed_at, decisions,
                                    client_id, metadata)
             SELECT t.transfer_id, t.kind, t.sender_id, t.receiver_id, t.debit_account_id, t.credit_account_id,
                    t.currency, t.amount_minor, t.original_amount_minor, t.original_currency, t.description,
                    t.status, $17, t.reason_code, t.reason_message, t.fingerprint, t.created_at, $18, t.decisions::jsonb,
                    t.client_id, t.metadata::jsonb
               FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                           $7::text[], $8::bigint[], $9::bigint[], $10::text[], $11::text[],
                           $12::text[], $13::text[], $14::text[], $15::bytea[], $16::timestamptz[], $19::text[], $20::uuid[],
                           $21::text[])
                    AS t(transfer_id, kind, sender_id, receiver_id, debit_account_id, credit_account_id,
                         currency, amount_minor, original_amount_minor, original_currency, description,
                         status, reason_code, reason_message, fingerprint, created_at, decisions, client_id, metadata)",
        )
        .bind(&rows.transfer_id)
        .bind(&rows.kind)
        .bind(&rows.sender_id)
        .bind(&rows.receiver_id)
        .bind(&rows.debit_account_id)
        .bind(&rows.credit_account_id)
        .bind(&rows.currency)
        .bind(&rows.amount_minor)
        .bind(&rows.original_amount_minor)
        .bind(&rows.original_currency)
        .bind(&rows.description)
        .bind(&rows.status)
        .bind(&rows.reason_code)
        .bind(&rows.reason_message)
        .bind(&rows.fingerprint)
        .bind(&rows.created_at)
        .bind(FINAL_VERSION_NEW)
        .bind(now)
        .bind(&rows.decisions)
        .bind(&rows.client_id)
        .bind(&rows.metadata)
        .execute(&mut *tx)
        .await?;

        // Version 1 'initiated' at submission time, version 2 the final status now.
        sqlx::query(
            "INSERT INTO transfer_status_history (transfer_id, version, status, reason_code, reason_message, at)
             SELECT t.transfer_id, 1, 'initiated', NULL, NULL, t.created_at
               FROM UNNEST($1::uuid[], $2::timestamptz[]) AS t(transfer_id, created_at)
             UNION ALL
             SELECT t.transfer_id, 2, t.status, t.reason_code, t.reason_message, $6
               FROM UNNEST($1::uuid[], $3::text[], $4::text[], $5::text[]) AS t(transfer_id, status, reason_code, reason_message)",
        )
        .bind(&rows.transfer_id)
        .bind(&rows.created_at)
        .bind(&rows.status)
        .bind(&rows.reason_code)
        .bind(&rows.reason_message)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    if !rows.entry_transfer_id.is_empty() {
        sqlx::query(
            "INSERT INTO ledger_entries (transfer_id, account_id, amount_minor)
             SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[])",
        )
        .bind(&rows.entry_transfer_id)
        .bind(&rows.entry_account_id)
        .bind(&rows.entry_amount_minor)
        .execute(&mut *tx)
        .await?;
    }
    if !rows.conflict_transfer_id.is_empty() {
        sqlx::query(
            "INSERT INTO transfer_conflicts (transfer_id, fingerprint, at)
             SELECT t.transfer_id, t.fingerprint, $3 FROM UNNEST($1::uuid[], $2::bytea[]) AS t(transfer_id, fingerprint)",
        )
        .bind(&rows.conflict_transfer_id)
        .bind(&rows.conflict_fingerprint)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
