//! `plugins replay`: a candidate validator run over the transfers the ledger
//! committed in a window, with the inputs each had, to see which outcomes it
//! would have changed before it decides anything live. It needs only the
//! database, reads it in short chunks (never one long snapshot) and writes
//! nothing.
//!
//! Each transfer is given as stored: sender, receiver, amount and currency,
//! the original amount of a converted one, its metadata, its time, and its
//! description as stored (after the describer: the unreviewed text is never
//! kept). A candidate that declares context gets the context the transfer
//! had at its commit, rebuilt from the ledger: both accounts' balances just
//! before it (their current balance less every completed movement committed
//! after), and the sender's velocity windows exactly as the commit counts
//! them (completed debits with a later time reference than the window's
//! start, committed before it). Floors, opening times and account metadata
//! are as they stand now: the ledger keeps no history of those.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{Fault, LoadedPlugin, set};
use crate::domain::{Amount, Currency, Metadata, Money, OwnerId, Reason, Requested, Submission, TransferId, TransferKind, format_minor};
use crate::hooks::{AccountFacts, Context, ContextNeeds, WindowTotal};

/// Transfer sequence numbers one read covers: a chunk is one short query.
pub const CHUNK_SEQS: i64 = 5_000;
/// Changes a report lists (all are counted and summed).
pub const CHANGES_LISTED_MAX: usize = 10_000;
/// Threads a chunk's candidate calls are spread over, at most.
const THREADS_MAX: usize = 4;
/// `committed_at` follows `seq` closely but not exactly (concurrent engines'
/// batches interleave): the search for the window's first sequence number
/// starts this much earlier, and the rows are then filtered exactly.
const SEQ_SEARCH_MARGIN_SECONDS: i64 = 600;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no transfer was committed from {since} to {until}; nothing to replay")]
    Empty { since: DateTime<Utc>, until: DateTime<Utc> },
    #[error("the window is empty: --until {until} is not after --since {since}")]
    BadWindow { since: DateTime<Utc>, until: DateTime<Utc> },
    #[error("only a validator can be replayed (it decides transfers); this is a {0}")]
    NotValidator(super::PluginKind),
    #[error("the ledger holds something this release cannot read: {0}")]
    Corrupt(String),
    #[error("PostgreSQL is unavailable or refused the read")]
    Database(#[from] sqlx::Error),
}

/// What the candidate would have changed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplayReport {
    pub plugin: String,
    /// The stored version replayed; absent for a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i32>,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Transfers the candidate was asked about.
    pub replayed: u64,
    /// Of those, how many would have had another outcome.
    pub changed: u64,
    /// Calls that faulted (each would have failed its transfer: counted in `changed` when it completed).
    pub faults: u64,
    /// Oldest first, at most `CHANGES_LISTED_MAX`.
    pub changes: Vec<Change>,
    /// The money of the changed transfers, per currency.
    pub affected: Vec<Affected>,
}

/// A transfer the candidate would have decided otherwise.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    pub transfer_id: String,
    /// `completed`, or what stopped it (`rejected`, `failed`).
    pub recorded: String,
    /// `allowed`, `rejected` or `failed`.
    pub candidate: String,
    /// The candidate's rejection code (or `plugin_failed`), else the recorded one.
    pub code: Option<String>,
    /// Decimal text in the currency's minor unit.
    pub amount: String,
    pub currency: String,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Affected {
    pub currency: String,
    pub transfers: u64,
    /// Decimal text; the sum saturates at i64::MAX minor units.
    pub amount: String,
}

#[derive(sqlx::FromRow)]
struct Row {
    seq: i64,
    transfer_id: uuid::Uuid,
    kind: String,
    sender_id: i64,
    receiver_id: i64,
    debit_account_id: Option<i64>,
    credit_account_id: Option<i64>,
    currency: String,
    amount_minor: Option<i64>,
    original_amount_minor: Option<i64>,
    original_currency: Option<String>,
    description: Option<String>,
    metadata: Option<sqlx::types::Json<BTreeMap<String, String>>>,
    created_at: DateTime<Utc>,
    committed_at: Option<DateTime<Utc>>,
    status: String,
    reason_code: Option<String>,
    decisions: Option<sqlx::types::Json<Vec<serde_json::Value>>>,
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    account_id: i64,
    owner_id: i64,
    floor_minor: i64,
    created_at: DateTime<Utc>,
    metadata: sqlx::types::Json<BTreeMap<String, String>>,
    /// As it stood just after the chunk's first sequence number.
    balance_minor: i64,
}

/// One transfer to ask the candidate about.
struct Case {
    row_index: usize,
    submission: Submission,
    amount: Amount,
    context: Context,
}

/// Runs `candidate` over the transfers committed in [since, until), calling
/// `progress(replayed, seq reached, last seq)` after every chunk.
pub async fn replay(
    pool: &PgPool,
    candidate: Arc<LoadedPlugin>,
    version: Option<i32>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    mut progress: impl FnMut(u64, i64, i64),
) -> Result<ReplayReport, ReplayError> {
    if candidate.meta.kind != super::PluginKind::Validator {
        return Err(ReplayError::NotValidator(candidate.meta.kind));
    }
    let mut reader = Reader::open(pool, &candidate.needs, since, until).await?;
    let mut report = ReplayReport {
        plugin: candidate.meta.name.clone(),
        version,
        since,
        until,
        replayed: 0,
        changed: 0,
        faults: 0,
        changes: Vec::new(),
        affected: Vec::new(),
    };
    let mut affected: BTreeMap<String, (u64, i64)> = BTreeMap::new();
    while let Some((rows, cases)) = reader.next().await? {
        let verdicts = ask_all(&candidate, &cases);
        for (case, verdict) in cases.iter().zip(verdicts) {
            let row = &rows[case.row_index];
            report.replayed += 1;
            report.faults += u64::from(verdict.is_err());
            let Some(change) = judge(row, &candidate.meta.name, &verdict, case.amount, case.submission.currency) else { continue };
            report.changed += 1;
            let (count, sum) = affected.entry(change.currency.clone()).or_default();
            *count += 1;
            *sum = sum.saturating_add(case.amount.minor());
            if report.changes.len() < CHANGES_LISTED_MAX {
                report.changes.push(change);
            }
        }
        progress(report.replayed, reader.after, reader.last);
    }
    if report.replayed == 0 {
        return Err(ReplayError::Empty { since, until });
    }
    report.affected = affected
        .into_iter()
        .map(|(code, (transfers, sum))| {
            let exponent = Currency::parse(&code).map(|c| c.exponent()).unwrap_or(0);
            Affected { amount: format_minor(sum, exponent), currency: code, transfers }
        })
        .collect();
    Ok(report)
}

/// The transfers committed in a window, read in chunks of `CHUNK_SEQS`
/// sequence numbers, each chunk with the cases to ask about.
struct Reader<'a> {
    pool: &'a PgPool,
    needs: &'a ContextNeeds,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    /// The last sequence number read, and the last one to read.
    after: i64,
    last: i64,
}

impl<'a> Reader<'a> {
    async fn open(pool: &'a PgPool, needs: &'a ContextNeeds, since: DateTime<Utc>, until: DateTime<Utc>) -> Result<Self, ReplayError> {
        if until <= since {
            return Err(ReplayError::BadWindow { since, until });
        }
        let margin = chrono::TimeDelta::seconds(SEQ_SEARCH_MARGIN_SECONDS);
        let Some(first) = first_seq_from(pool, since - margin).await? else { return Err(ReplayError::Empty { since, until }) };
        let last = match first_seq_from(pool, until + margin).await? {
            Some(past) => past - 1,
            None => sqlx::query_as::<_, (Option<i64>,)>("SELECT max(seq) FROM transfers").fetch_one(pool).await?.0.unwrap_or(0),
        };
        Ok(Self { pool, needs, since, until, after: first - 1, last })
    }

    async fn next(&mut self) -> Result<Option<(Vec<Row>, Vec<Case>)>, ReplayError> {
        if self.after >= self.last {
            return Ok(None);
        }
        let upto = self.after.saturating_add(CHUNK_SEQS).min(self.last);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT seq, transfer_id, kind, sender_id, receiver_id, debit_account_id, credit_account_id, currency, amount_minor,
                    original_amount_minor, original_currency, description, metadata, created_at, committed_at, status, reason_code,
                    decisions
               FROM transfers WHERE seq > $1 AND seq <= $2 ORDER BY seq",
        )
        .bind(self.after)
        .bind(upto)
        .fetch_all(self.pool)
        .await?;
        let cases = cases(self.pool, self.needs, &rows, self.after, self.since, self.until).await?;
        self.after = upto;
        Ok(Some((rows, cases)))
    }
}

/// The context each transfer committed in the window had at its commit, as
/// a replay rebuilds it for a validator that declares `needs`.
pub async fn contexts(
    pool: &PgPool,
    needs: &ContextNeeds,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<(TransferId, Context)>, ReplayError> {
    let mut reader = Reader::open(pool, needs, since, until).await?;
    let mut found = Vec::new();
    while let Some((_, cases)) = reader.next().await? {
        found.extend(cases.into_iter().map(|c| (c.submission.id, c.context)));
    }
    Ok(found)
}

/// The first sequence number of a transfer committed at or after `at`,
/// searched on the sequence index (committed_at has none: an index more on
/// the hottest table would cost every commit for an offline tool).
async fn first_seq_from(pool: &PgPool, at: DateTime<Utc>) -> Result<Option<i64>, ReplayError> {
    let (low, high): (Option<i64>, Option<i64>) = sqlx::query_as("SELECT min(seq), max(seq) FROM transfers").fetch_one(pool).await?;
    let (Some(mut low), Some(mut high)) = (low, high) else { return Ok(None) };
    let committed_at = |seq: i64| async move {
        let row: Option<(Option<DateTime<Utc>>,)> =
            sqlx::query_as("SELECT committed_at FROM transfers WHERE seq >= $1 ORDER BY seq LIMIT 1")
                .bind(seq)
                .fetch_optional(pool)
                .await?;
        Ok::<_, sqlx::Error>(row.and_then(|(at,)| at))
    };
    if committed_at(high).await?.is_some_and(|c| c < at) {
        return Ok(None);
    }
    // The lowest seq whose row committed at or after `at` (a row not committed yet counts as later).
    while low < high {
        let mid = low + (high - low) / 2;
        if committed_at(mid).await?.is_none_or(|c| c >= at) {
            high = mid;
        } else {
            low = mid + 1;
        }
    }
    Ok(Some(low))
}

/// The transfers of a chunk to replay, each with its submission and (if the
/// candidate declares any) its context at commit.
async fn cases(
    pool: &PgPool,
    needs: &ContextNeeds,
    rows: &[Row],
    after: i64,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<Case>, ReplayError> {
    let mut balances: HashMap<i64, AccountRow> = HashMap::new();
    if needs.accounts {
        let ids: Vec<i64> = rows.iter().flat_map(|r| [r.debit_account_id, r.credit_account_id]).flatten().collect();
        let accounts: Vec<AccountRow> = sqlx::query_as(
            "SELECT a.account_id, a.owner_id, a.floor_minor, a.created_at, a.metadata,
                    (a.balance_minor
                     + coalesce((SELECT sum(x.amount_minor) FROM transfers x
                                  WHERE x.debit_account_id = a.account_id AND x.seq > $2 AND x.status = 'completed'), 0)
                     - coalesce((SELECT sum(x.amount_minor) FROM transfers x
                                  WHERE x.credit_account_id = a.account_id AND x.seq > $2 AND x.status = 'completed'), 0))::bigint
                        AS balance_minor
               FROM accounts a WHERE a.account_id = ANY($1)",
        )
        .bind(&ids)
        .bind(after)
        .fetch_all(pool)
        .await?;
        balances = accounts.into_iter().map(|a| (a.account_id, a)).collect();
    }
    let facts = |balances: &HashMap<i64, AccountRow>, id: Option<i64>| -> Result<Option<AccountFacts>, ReplayError> {
        let Some(a) = id.and_then(|id| balances.get(&id)) else { return Ok(None) };
        Ok(Some(AccountFacts {
            owner: OwnerId::new(a.owner_id).map_err(|e| ReplayError::Corrupt(e.to_string()))?,
            balance_minor: a.balance_minor,
            floor_minor: a.floor_minor,
            opened_at: a.created_at,
            metadata: Metadata::try_from(a.metadata.0.clone()).map_err(|e| ReplayError::Corrupt(e.to_string()))?,
        }))
    };
    let mut cases = Vec::new();
    for (row_index, row) in rows.iter().enumerate() {
        let replayed = row.kind == "transfer" && row.committed_at.is_some_and(|at| at >= since && at < until);
        if let (true, Some(amount_minor)) = (replayed, row.amount_minor) {
            let submission = submission(row)?;
            let amount = Amount::from_minor(amount_minor).map_err(|e| ReplayError::Corrupt(e.to_string()))?;
            let context = Context {
                sender: if needs.accounts { facts(&balances, row.debit_account_id)? } else { None },
                receiver: if needs.accounts { facts(&balances, row.credit_account_id)? } else { None },
                velocity: Vec::new(),
            };
            cases.push(Case { row_index, submission, amount, context });
        }
        // Then the transfer's own movement, for the ones after it.
        if needs.accounts && row.status == "completed" {
            let amount = row.amount_minor.unwrap_or(0);
            if let Some(a) = row.debit_account_id.and_then(|id| balances.get_mut(&id)) {
                a.balance_minor = a.balance_minor.saturating_sub(amount);
            }
            if let Some(a) = row.credit_account_id.and_then(|id| balances.get_mut(&id)) {
                a.balance_minor = a.balance_minor.saturating_add(amount);
            }
        }
    }
    if !needs.windows.is_empty() && !cases.is_empty() {
        velocity(pool, rows, &mut cases, &needs.windows).await?;
    }
    Ok(cases)
}

/// Fills each case's velocity windows as its commit counted them.
async fn velocity(pool: &PgPool, rows: &[Row], cases: &mut [Case], windows: &[crate::hooks::VelocityWindow]) -> Result<(), ReplayError> {
    let (mut accounts, mut since, mut before) = (Vec::new(), Vec::new(), Vec::new());
    for case in cases.iter() {
        let row = &rows[case.row_index];
        for window in windows {
            accounts.push(row.debit_account_id.unwrap_or(0));
            since.push(window.since(row.created_at));
            before.push(row.seq);
        }
    }
    let totals: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT u.n, w.count, w.sum_minor
           FROM UNNEST($1::bigint[], $2::timestamptz[], $3::bigint[]) WITH ORDINALITY AS u(account_id, since, before, n)
          CROSS JOIN LATERAL (
                SELECT count(*) AS count, LEAST(coalesce(sum(t.amount_minor), 0), 9223372036854775807)::bigint AS sum_minor
                  FROM transfers t
                 WHERE t.debit_account_id = u.account_id AND t.status = 'completed' AND t.created_at > u.since
                   AND t.seq < u.before) w
          ORDER BY u.n",
    )
    .bind(&accounts)
    .bind(&since)
    .bind(&before)
    .fetch_all(pool)
    .await?;
    let mut totals = totals.into_iter();
    for case in cases.iter_mut() {
        for window in windows {
            let (_, count, sum_minor) = totals.next().ok_or_else(|| ReplayError::Corrupt("a velocity total is missing".into()))?;
            let count = u64::try_from(count).map_err(|_| ReplayError::Corrupt(format!("velocity count {count}")))?;
            case.context.velocity.push((*window, WindowTotal { count, sum_minor }));
        }
    }
    Ok(())
}

fn submission(row: &Row) -> Result<Submission, ReplayError> {
    let corrupt = |e: &dyn std::fmt::Display| ReplayError::Corrupt(format!("transfer {}: {e}", row.transfer_id));
    let currency = Currency::parse(&row.currency).map_err(|e| corrupt(&e))?;
    let requested = match (row.original_amount_minor, &row.original_currency, row.amount_minor) {
        (Some(minor), Some(code), _) => Requested::Original(Money {
            amount: Amount::from_minor(minor).map_err(|e| corrupt(&e))?,
            currency: Currency::parse(code).map_err(|e| corrupt(&e))?,
        }),
        (_, _, Some(minor)) => Requested::Amount(Amount::from_minor(minor).map_err(|e| corrupt(&e))?),
        _ => return Err(corrupt(&"no amount")),
    };
    Ok(Submission {
        id: TransferId(row.transfer_id),
        kind: TransferKind::Transfer,
        sender: OwnerId::new(row.sender_id).map_err(|e| corrupt(&e))?,
        receiver: OwnerId::new(row.receiver_id).map_err(|e| corrupt(&e))?,
        currency,
        requested,
        description: row.description.clone(),
        submitted_at: row.created_at,
        client_id: None,
        metadata: Metadata::try_from(row.metadata.as_ref().map(|m| m.0.clone()).unwrap_or_default()).map_err(|e| corrupt(&e))?,
    })
}

/// The candidate's verdict on every case, spread over a few threads (each
/// call is a fresh instance, so calls share nothing).
fn ask_all(candidate: &LoadedPlugin, cases: &[Case]) -> Vec<Result<Option<Reason>, Fault>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, THREADS_MAX);
    let per_thread = cases.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let parts: Vec<_> = cases
            .chunks(per_thread)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|c| set::verdict(candidate, &c.submission, c.amount, c.submission.description.as_deref(), &c.context))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts.into_iter().flat_map(|p| p.join().expect("a plugin call never panics: faults are values")).collect()
    })
}

/// The change the candidate's verdict makes to a transfer's recorded outcome,
/// if any: a completed transfer it would have stopped, or one this plugin
/// (by name) stopped that it would have let through.
fn judge(row: &Row, name: &str, verdict: &Result<Option<Reason>, Fault>, amount: Amount, currency: Currency) -> Option<Change> {
    let (candidate, candidate_code) = match verdict {
        Ok(None) => ("allowed", None),
        Ok(Some(reason)) => ("rejected", Some(reason.code.clone())),
        Err(_) => ("failed", Some("plugin_failed".to_owned())),
    };
    let stopped_by_this_name = || {
        row.decisions.as_ref().is_some_and(|d| {
            d.0.iter().any(|d| {
                d["plugin"] == name
                    && d["hook"] == "validate"
                    && matches!(d["outcome"].as_str(), Some("rejected" | "failed"))
                    && d["advisory"] != true
                    && matches!(d["role"].as_str(), None | Some("active" | "canary"))
            })
        })
    };
    let changed = match row.status.as_str() {
        "completed" => candidate != "allowed",
        "rejected" | "failed" => candidate == "allowed" && stopped_by_this_name(),
        _ => false,
    };
    changed.then(|| Change {
        transfer_id: row.transfer_id.to_string(),
        recorded: row.status.clone(),
        candidate: candidate.to_owned(),
        code: candidate_code.or_else(|| row.reason_code.clone()),
        amount: format_minor(amount.minor(), currency.exponent()),
        currency: currency.code().to_owned(),
    })
}

/// A report for a terminal.
pub fn report_text(r: &ReplayReport) -> String {
    let label = r.version.map_or(r.plugin.clone(), |v| format!("{} v{v}", r.plugin));
    let mut text = format!(
        "{label} over transfers committed from {} to {}: {} replayed, {} would change, {} faults\n",
        r.since, r.until, r.replayed, r.changed, r.faults
    );
    for a in &r.affected {
        text.push_str(&format!("  {} {} in {} transfers\n", a.amount, a.currency, a.transfers));
    }
    if !r.changes.is_empty() {
        text.push_str(&format!("{} changes, oldest first (transfer, recorded, candidate, code, amount):\n", r.changes.len()));
        for c in &r.changes {
            text.push_str(&format!(
                "  {} {} {} {} {} {}\n",
                c.transfer_id,
                c.recorded,
                c.candidate,
                c.code.as_deref().unwrap_or("-"),
                c.amount,
                c.currency
            ));
        }
    }
    text
}
