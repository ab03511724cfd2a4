use super::{AmountError, CurrencyError};

/// Why the engine refused a transfer. The codes are a stable API: clients
/// match on them, so a code is never renamed, only added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    #[error("the debit account cannot cover this amount")]
    InsufficientFunds,
    #[error("sender and receiver must be different accounts")]
    AccountsMustBeDifferent,
    #[error("no {currency} account exists for owner {owner_id}")]
    AccountNotFound { owner_id: i64, currency: String },
    #[error("the amounts' currencies do not match the accounts' currency")]
    CurrencyMismatch,
    #[error("{0}")]
    Amount(AmountError),
    #[error("{0}")]
    Currency(CurrencyError),
    #[error("the credit account's balance would overflow")]
    BalanceOverflow,
    #[error("this transfer id was already used for a different transfer")]
    IdempotencyConflict,
    #[error("no conversion from {from} to {to} is available")]
    ConversionUnavailable { from: String, to: String },
}

impl Rejection {
    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InsufficientFunds => "insufficient_funds",
            Self::AccountsMustBeDifferent => "accounts_must_be_different",
            Self::AccountNotFound { .. } => "account_not_found",
            Self::CurrencyMismatch => "currency_mismatch",
            Self::Amount(AmountError::Malformed) => "amount_invalid",
            Self::Amount(AmountError::NotPositive) => "amount_must_be_positive",
            Self::Amount(AmountError::PrecisionExceeded { .. }) => "amount_precision_exceeded",
            Self::Amount(AmountError::OutOfRange) => "amount_out_of_range",
            Self::Currency(_) => "currency_not_supported",
            Self::BalanceOverflow => "balance_overflow",
            Self::IdempotencyConflict => "idempotency_conflict",
            Self::ConversionUnavailable { .. } => "conversion_unavailable",
        }
    }

    pub fn to_reason(&self) -> Reason {
        Reason { code: self.code().to_owned(), message: self.to_string() }
    }
}

impl From<AmountError> for Rejection {
    fn from(e: AmountError) -> Self {
        Self::Amount(e)
    }
}

impl From<CurrencyError> for Rejection {
    fn from(e: CurrencyError) -> Self {
        Self::Currency(e)
    }
}

/// A recorded reason, as stored and shown: a code and a sentence. Engine
/// rejections produce their own codes; plugins produce theirs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Reason {
    pub code: String,
    pub message: String,
}
