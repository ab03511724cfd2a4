use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::{Amount, ClientId, Currency, Metadata, OwnerId, TransferId};

/// A positive amount in a given currency.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Money {
    pub amount: Amount,
    pub currency: Currency,
}

/// What moves money, and between which kinds of account.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransferKind {
    /// Between two owners' accounts; submitted over HTTP, processed from Kafka.
    Transfer,
    /// From the currency's system account to an owner's account.
    Deposit,
    /// From an owner's account to the currency's system account.
    Withdrawal,
}

impl TransferKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transfer => "transfer",
            Self::Deposit => "deposit",
            Self::Withdrawal => "withdrawal",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "transfer" => Some(Self::Transfer),
            "deposit" => Some(Self::Deposit),
            "withdrawal" => Some(Self::Withdrawal),
            _ => None,
        }
    }
}

/// A transfer's lifecycle. `Initiated` is version 1; each of the others is final.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Initiated,
    Completed,
    Rejected,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initiated => "initiated",
            Self::Completed => "completed",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "initiated" => Some(Self::Initiated),
            "completed" => Some(Self::Completed),
            "rejected" => Some(Self::Rejected),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, Self::Initiated)
    }
}

/// How much the client asked to move: either directly in the accounts'
/// currency, or in another currency that the conversion hook turns into one.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Requested {
    Amount(Amount),
    Original(Money),
}

/// A transfer as submitted and accepted by the API's checks, before the
/// plugin hooks run. Both accounts hold `currency`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Submission {
    pub id: TransferId,
    pub kind: TransferKind,
    /// The owner of the debit account.
    pub sender: OwnerId,
    /// The owner of the credit account.
    pub receiver: OwnerId,
    pub currency: Currency,
    pub requested: Requested,
    pub description: Option<String>,
    pub submitted_at: DateTime<Utc>,
    /// The API client that submitted it; `None` for the admin token and for
    /// system movements. Provenance only: not part of the fingerprint, so the
    /// same transfer retried through another credential is still a retry.
    pub client_id: Option<ClientId>,
    /// What the client attached; part of the fingerprint, passed to every hook.
    pub metadata: Metadata,
}

impl Submission {
    /// A digest of what the transfer *means* (not when it was sent), so that a
    /// retry of the same transfer matches and a different one under the same
    /// id is detected as a conflict.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        // Fields are length-delimited by '\x1f' and tagged, so no two
        // different submissions can produce the same byte string.
        let requested = match self.requested {
            Requested::Amount(a) => format!("amount\x1f{}", a.minor()),
            Requested::Original(m) => format!("original\x1f{}\x1f{}", m.amount.minor(), m.currency),
        };
        let description = match &self.description {
            Some(d) => format!("some\x1f{}\x1f{d}", d.len()),
            None => "none".to_owned(),
        };
        let mut canonical = format!(
            "v1\x1f{}\x1f{}\x1f{}\x1f{}\x1f{requested}\x1f{description}",
            self.kind.as_str(),
            self.sender,
            self.receiver,
            self.currency
        );
        // Only when present: a transfer without metadata keeps the
        // fingerprint the previous release stored for it.
        if !self.metadata.is_empty() {
            canonical.push('\x1f');
            canonical.push_str(&self.metadata.canonical());
        }
        hash.update(canonical.as_bytes());
        hash.finalize().into()
    }

    pub fn amount(&self) -> Option<Amount> {
        match self.requested {
            Requested::Amount(a) => Some(a),
            Requested::Original(_) => None,
        }
    }

    pub fn original(&self) -> Option<Money> {
        match self.requested {
            Requested::Amount(_) => None,
            Requested::Original(m) => Some(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submission() -> Submission {
        Submission {
            id: TransferId::generate(),
            kind: TransferKind::Transfer,
            sender: OwnerId::new(1).unwrap(),
            receiver: OwnerId::new(2).unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            requested: Requested::Amount(Amount::from_minor(100).unwrap()),
            description: Some("rent".into()),
            submitted_at: Utc::now(),
            client_id: None,
            metadata: Metadata::default(),
        }
    }

    #[test]
    fn the_fingerprint_ignores_id_and_time_but_sees_every_term() {
        let a = submission();
        let mut b = submission();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.description = Some("rent ".into());
        assert_ne!(a.fingerprint(), b.fingerprint());
        let mut c = submission();
        c.requested = Requested::Amount(Amount::from_minor(101).unwrap());
        assert_ne!(a.fingerprint(), c.fingerprint());
        let mut d = submission();
        d.description = None;
        assert_ne!(a.fingerprint(), d.fingerprint());
        let mut e = submission();
        e.metadata = Metadata::new([("channel".to_owned(), "web".to_owned())].into()).unwrap();
        assert_ne!(a.fingerprint(), e.fingerprint());
    }

    #[test]
    fn a_transfer_without_metadata_keeps_the_fingerprint_the_previous_release_stored() {
        // sha256 of "v1\x1ftransfer\x1f1\x1f2\x1fEUR\x1famount\x1f100\x1fsome\x1f4\x1frent", as 0.1 computed it.
        let expected: [u8; 32] = Sha256::digest("v1\x1ftransfer\x1f1\x1f2\x1fEUR\x1famount\x1f100\x1fsome\x1f4\x1frent").into();
        assert_eq!(submission().fingerprint(), expected);
    }
}
