//! Accounts, and the synchronous deposit/withdrawal path the API calls.

use std::collections::HashSet;

use chrono::Utc;

use super::{CommitItem, Committed, Disposition, Ledger, LedgerError};
use crate::domain::{Amount, Currency, Metadata, OwnerId, Rejection, Requested, SYSTEM_OWNER_ID, Submission, TransferId, TransferKind};

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AccountView {
    pub account_id: i64,
    pub owner_id: OwnerId,
    pub currency: Currency,
    pub balance_minor: i64,
    pub floor_minor: i64,
    pub version: i64,
}

/// An account with its metadata, as the API shows it. The metadata is kept
/// apart from `AccountView` because it has no place in the balance cache: a
/// change of metadata does not move the balance's `version`, which is what
/// orders cached balances, so a cached copy could not be told stale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountWithMetadata {
    pub account: AccountView,
    pub metadata: Metadata,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateAccountError {
    #[error("owner {owner_id} already has a {currency} account")]
    Exists { owner_id: OwnerId, currency: Currency },
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("this reference was already used for a different {0}")]
    ReferenceConflict(&'static str),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

type AccountRow = (i64, i64, String, i64, i64, i64);

fn account_from_row((account_id, owner_id, currency, balance_minor, floor_minor, version): AccountRow) -> Result<AccountView, LedgerError> {
    let currency = Currency::parse(&currency).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
    Ok(AccountView { account_id, owner_id: OwnerId::from_stored(owner_id), currency, balance_minor, floor_minor, version })
}

/// The columns of `AccountRow`, then the metadata as JSON text.
const ACCOUNT_WITH_METADATA_COLUMNS: &str = "account_id, owner_id, currency, balance_minor, floor_minor, version, metadata::text";

type AccountWithMetadataRow = (i64, i64, String, i64, i64, i64, String);

fn account_with_metadata_from_row(row: AccountWithMetadataRow) -> Result<AccountWithMetadata, LedgerError> {
    let (account_id, owner_id, currency, balance_minor, floor_minor, version, metadata) = row;
    let account = account_from_row((account_id, owner_id, currency, balance_minor, floor_minor, version))?;
    let metadata = serde_json::from_str(&metadata).map_err(|e| LedgerError::Corrupt(format!("account {account_id} metadata: {e}")))?;
    Ok(AccountWithMetadata { account, metadata })
}

/// Metadata as the `jsonb` columns take it (bound as text, cast in SQL).
fn metadata_json(metadata: &Metadata) -> String {
    serde_json::to_string(metadata).expect("metadata serialises")
}

impl Ledger {
    /// Opens an account without metadata. `floor_minor` is the lowest balance allowed (0: no overdraft).
    pub async fn create_account(&self, owner_id: OwnerId, currency: Currency, floor_minor: i64) -> Result<AccountView, CreateAccountError> {
        Ok(self.create_account_with_metadata(owner_id, currency, floor_minor, &Metadata::default()).await?.account)
    }

    /// Opens an account with `metadata`. `floor_minor` is the lowest balance allowed (0: no overdraft).
    pub async fn create_account_with_metadata(
        &self,
        owner_id: OwnerId,
        currency: Currency,
        floor_minor: i64,
        metadata: &Metadata,
    ) -> Result<AccountWithMetadata, CreateAccountError> {
        assert!(floor_minor <= 0, "a floor above zero would make a new account invalid");
        let row: Option<AccountWithMetadataRow> = sqlx::query_as(&format!(
            "INSERT INTO accounts (owner_id, currency, floor_minor, metadata) VALUES ($1, $2, $3, $4::text::jsonb)
             ON CONFLICT (owner_id, currency) DO NOTHING
             RETURNING {ACCOUNT_WITH_METADATA_COLUMNS}"
        ))
        .bind(owner_id.get())
        .bind(currency.code())
        .bind(floor_minor)
        .bind(metadata_json(metadata))
        .fetch_optional(&self.pool)
        .await
        .map_err(LedgerError::from)?;
        match row {
            Some(row) => Ok(account_with_metadata_from_row(row)?),
            None => Err(CreateAccountError::Exists { owner_id, currency }),
        }
    }

    /// The account of `owner_id` in `currency` with its metadata, if it exists: one row, so
    /// the balance and the metadata are of one moment.
    pub async fn account_with_metadata(&self, owner_id: OwnerId, currency: Currency) -> Result<Option<AccountWithMetadata>, LedgerError> {
        let row: Option<AccountWithMetadataRow> =
            sqlx::query_as(&format!("SELECT {ACCOUNT_WITH_METADATA_COLUMNS} FROM accounts WHERE owner_id = $1 AND currency = $2"))
                .bind(owner_id.get())
                .bind(currency.code())
                .fetch_optional(&self.pool)
                .await?;
        row.map(account_with_metadata_from_row).transpose()
    }

    /// Replaces an account's metadata whole; `None` if the account does not exist.
    ///
    /// A plain row UPDATE, so it takes the row lock that a batch takes
    /// (`FOR UPDATE`) on the accounts it commits: it waits for a batch that
    /// holds the account, and a batch that locks the account after this
    /// commits reads the new metadata. The balance's `version` is left alone:
    /// it orders cached balances, and the balance did not change.
    pub async fn replace_account_metadata(
        &self,
        owner_id: OwnerId,
        currency: Currency,
        metadata: &Metadata,
    ) -> Result<Option<AccountWithMetadata>, LedgerError> {
        let row: Option<AccountWithMetadataRow> = sqlx::query_as(&format!(
            "UPDATE accounts SET metadata = $3::text::jsonb WHERE owner_id = $1 AND currency = $2
             RETURNING {ACCOUNT_WITH_METADATA_COLUMNS}"
        ))
        .bind(owner_id.get())
        .bind(currency.code())
        .bind(metadata_json(metadata))
        .fetch_optional(&self.pool)
        .await?;
        row.map(account_with_metadata_from_row).transpose()
    }

    /// Opens accounts for many owners at once (floor 0), skipping those that
    /// exist, and the currency's system account. Returns how many were opened.
    /// For seeding large ledgers (the load generator): one statement, not one per account.
    pub async fn open_accounts(&self, owners: &[OwnerId], currency: Currency) -> Result<u64, LedgerError> {
        self.ensure_system_account(currency).await?;
        let ids: Vec<i64> = owners.iter().map(|o| o.get()).collect();
        let done = sqlx::query(
            "INSERT INTO accounts (owner_id, currency) SELECT owner, $2 FROM UNNEST($1::bigint[]) AS owner
             ON CONFLICT (owner_id, currency) DO NOTHING",
        )
        .bind(&ids)
        .bind(currency.code())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// The account of `owner_id` in `currency`, if it exists.
    pub async fn account(&self, owner_id: OwnerId, currency: Currency) -> Result<Option<AccountView>, LedgerError> {
        let row: Option<AccountRow> = sqlx::query_as(
            "SELECT account_id, owner_id, currency, balance_minor, floor_minor, version
               FROM accounts WHERE owner_id = $1 AND currency = $2",
        )
        .bind(owner_id.get())
        .bind(currency.code())
        .fetch_optional(&self.pool)
        .await?;
        row.map(account_from_row).transpose()
    }

    /// Makes sure the currency's system account exists. Its floor is the
    /// lowest i64: it mirrors all money issued in the currency, negatively.
    async fn ensure_system_account(&self, currency: Currency) -> Result<(), LedgerError> {
        sqlx::query(
            "INSERT INTO accounts (owner_id, currency, floor_minor) VALUES ($1, $2, $3)
             ON CONFLICT (owner_id, currency) DO NOTHING",
        )
        .bind(SYSTEM_OWNER_ID.get())
        .bind(currency.code())
        .bind(i64::MIN)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Credits `owner_id` from the system account. Idempotent by `reference`.
    pub async fn deposit(
        &self,
        owner_id: OwnerId,
        currency: Currency,
        amount: Amount,
        reference: &str,
    ) -> Result<(Committed, Vec<AccountView>), MoveError> {
        self.move_with_system(TransferKind::Deposit, owner_id, currency, amount, reference).await
    }

    /// Debits `owner_id` to the system account. Idempotent by `reference`.
    pub async fn withdraw(
        &self,
        owner_id: OwnerId,
        currency: Currency,
        amount: Amount,
        reference: &str,
    ) -> Result<(Committed, Vec<AccountView>), MoveError> {
        self.move_with_system(TransferKind::Withdrawal, owner_id, currency, amount, reference).await
    }

    async fn move_with_system(
        &self,
        kind: TransferKind,
        owner_id: OwnerId,
        currency: Currency,
        amount: Amount,
        reference: &str,
    ) -> Result<(Committed, Vec<AccountView>), MoveError> {
        self.ensure_system_account(currency).await?;
        let id = self.next_attempt(kind, reference).await?;
        let item = CommitItem::system_move_with_id(id, kind, owner_id, currency, amount, reference);
        let mut result = self.commit_batch(std::slice::from_ref(&item)).await?;
        let committed = result.outcomes.pop().expect("one outcome per item");
        if committed.disposition == Disposition::Conflict {
            return Err(MoveError::ReferenceConflict(kind.as_str()));
        }
        Ok((committed, result.balances))
    }

    /// The id this call with `reference` goes under: the first attempt's id
    /// that the ledger does not hold as refused for the balance. A refusal for
    /// the balance (insufficient funds, an overflow) says only that the money
    /// was not there at that moment, so it does not use the reference up; the
    /// refusal stays recorded under its own attempt's id. Concurrent calls pick
    /// the same id, which the ledger applies once.
    async fn next_attempt(&self, kind: TransferKind, reference: &str) -> Result<TransferId, LedgerError> {
        let ids: Vec<TransferId> = (1..=BALANCE_REFUSALS_PER_REFERENCE_MAX).map(|n| attempt_id(kind, reference, n)).collect();
        let raw: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
        let codes = [Rejection::InsufficientFunds.code(), Rejection::BalanceOverflow.code()];
        let refused: Vec<(uuid::Uuid,)> = sqlx::query_as(
            "SELECT transfer_id FROM transfers WHERE transfer_id = ANY($1) AND status = 'rejected' AND reason_code = ANY($2)",
        )
        .bind(&raw)
        .bind(&codes[..])
        .fetch_all(&self.pool)
        .await?;
        let refused: HashSet<uuid::Uuid> = refused.into_iter().map(|(id,)| id).collect();
        // Every attempt refused: the reference is used up, and the last refusal is its answer.
        Ok(ids.iter().copied().find(|id| !refused.contains(&id.0)).unwrap_or(ids[ids.len() - 1]))
    }
}

/// How many refusals for the balance one deposit or withdrawal reference can
/// take; after that, the reference answers its last refusal.
const BALANCE_REFUSALS_PER_REFERENCE_MAX: u32 = 32;

/// The id of attempt `n` (from 1) of a system move with `reference`. The first
/// is the id every earlier release gave the reference, so references recorded
/// before attempts existed stay idempotent. Later ones add `#n` to the kind,
/// before the `:` that ends it, so no reference's name can equal another's.
fn attempt_id(kind: TransferKind, reference: &str, n: u32) -> TransferId {
    if n == 1 {
        TransferId::for_reference(kind.as_str(), reference)
    } else {
        TransferId::for_reference(&format!("{}#{n}", kind.as_str()), reference)
    }
}

impl CommitItem {
    /// A deposit (system account to `owner_id`) or a withdrawal (the other
    /// way), its id derived from `reference` so that a retry is recognised.
    /// Needs the currency's system account (`ensure_system_account`, `open_accounts`).
    pub fn system_move(kind: TransferKind, owner_id: OwnerId, currency: Currency, amount: Amount, reference: &str) -> Self {
        Self::system_move_with_id(attempt_id(kind, reference, 1), kind, owner_id, currency, amount, reference)
    }

    fn system_move_with_id(
        id: TransferId,
        kind: TransferKind,
        owner_id: OwnerId,
        currency: Currency,
        amount: Amount,
        reference: &str,
    ) -> Self {
        let (sender, receiver) = match kind {
            TransferKind::Withdrawal => (owner_id, SYSTEM_OWNER_ID),
            _ => (SYSTEM_OWNER_ID, owner_id),
        };
        let submission = Submission {
            id,
            kind,
            sender,
            receiver,
            currency,
            requested: Requested::Amount(amount),
            description: Some(reference.to_owned()),
            submitted_at: Utc::now(),
            client_id: None,
            metadata: crate::domain::Metadata::default(),
        };
        Self::apply_as_submitted(submission).expect("a system move names its amount")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_ids_are_version_5_and_distinct_across_references_and_attempts() {
        let kind = TransferKind::Withdrawal;
        assert_eq!(attempt_id(kind, "wire-1", 1), TransferId::for_reference("withdrawal", "wire-1"));
        let ids = [
            attempt_id(kind, "wire-1", 1),
            attempt_id(kind, "wire-1", 2),
            attempt_id(kind, "wire-1#2", 1),
            attempt_id(kind, "#2:wire-1", 1),
        ];
        for (i, a) in ids.iter().enumerate() {
            assert_eq!(a.0.get_version_num(), 5, "the transfers endpoint refuses v5 ids, so none is claimable there");
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
