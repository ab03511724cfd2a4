//! The JSON a client sees for a transfer, shared by the API (from PostgreSQL)
//! and the processor (which writes the same view to Redis after a commit).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{Amount, Metadata, Reason, Status, Submission, TransferKind, format_minor};
use crate::hooks::Decision;
use crate::ledger::{Committed, HistoryEntry, TransferView};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TransferStatusView {
    #[schema(value_type = String, format = Uuid)]
    pub transfer_id: uuid::Uuid,
    pub kind: TransferKind,
    pub status: Status,
    /// Rises by one with every status change: 1 initiated, 2 final.
    pub version: i32,
    pub sender_id: i64,
    pub receiver_id: i64,
    #[schema(value_type = crate::api::schema::CurrencyCode)]
    pub currency: String,
    /// Decimal text in the currency's precision, for example "12.34"; absent until known.
    pub amount: Option<String>,
    pub amount_minor: Option<i64>,
    pub original_amount: Option<String>,
    pub original_amount_minor: Option<i64>,
    #[schema(value_type = Option<crate::api::schema::CurrencyCode>)]
    pub original_currency: Option<String>,
    pub description: Option<String>,
    // Defaults when absent: status views that Redis cached before metadata
    // existed have none. Always in an answer, so required in the document.
    #[serde(default)]
    #[schema(schema_with = crate::api::schema::metadata_view, required = true)]
    pub metadata: Metadata,
    /// Why, when rejected or failed.
    pub reason: Option<Reason>,
    pub created_at: DateTime<Utc>,
    pub committed_at: Option<DateTime<Utc>>,
    /// Every status the transfer has had, oldest first.
    pub history: Vec<HistoryEntry>,
    /// What each plugin decided for this transfer (name, version, sha256, outcome), in order.
    #[serde(default)]
    pub decisions: Vec<Decision>,
    /// The API client that submitted it. Shown to the admin token only.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub client_id: Option<uuid::Uuid>,
    /// sha256 of the transfer's meaning, to tell a retry from a conflict.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    #[schema(ignore)]
    pub fingerprint: Option<String>,
}

impl TransferStatusView {
    /// The view of a transfer just accepted by the API: version 1, initiated.
    pub fn initiated(s: &Submission) -> Self {
        let exponent = s.currency.exponent();
        let original = s.original();
        Self {
            transfer_id: s.id.0,
            kind: s.kind,
            status: Status::Initiated,
            version: 1,
            sender_id: s.sender.get(),
            receiver_id: s.receiver.get(),
            currency: s.currency.code().to_owned(),
            amount: s.amount().map(|a| format_minor(a.minor(), exponent)),
            amount_minor: s.amount().map(Amount::minor),
            original_amount: original.map(|m| format_minor(m.amount.minor(), m.currency.exponent())),
            original_amount_minor: original.map(|m| m.amount.minor()),
            original_currency: original.map(|m| m.currency.code().to_owned()),
            description: s.description.clone(),
            metadata: s.metadata.clone(),
            reason: None,
            created_at: s.submitted_at,
            committed_at: None,
            history: vec![HistoryEntry { version: 1, status: Status::Initiated, reason: None, at: s.submitted_at }],
            decisions: Vec::new(),
            client_id: s.client_id.map(|c| c.0),
            fingerprint: Some(hex::encode(s.fingerprint())),
        }
    }

    /// The view after a commit that recorded this transfer for the first time.
    pub fn committed(s: &Submission, amount: Option<Amount>, description: Option<String>, decisions: &[Decision], c: &Committed) -> Self {
        let mut view = Self::initiated(s);
        view.decisions = decisions.to_vec();
        if let Some(amount) = amount {
            view.amount = Some(format_minor(amount.minor(), s.currency.exponent()));
            view.amount_minor = Some(amount.minor());
        }
        view.description = description;
        view.status = c.status;
        view.version = c.version;
        view.reason = c.reason.clone();
        view.committed_at = Some(c.committed_at);
        view.history.push(HistoryEntry { version: c.version, status: c.status, reason: c.reason.clone(), at: c.committed_at });
        view
    }

    /// What a caller may see of this view: never the fingerprint; the
    /// submitting client's id only for the admin token.
    pub fn for_caller(mut self, admin: bool) -> Self {
        self.fingerprint = None;
        if !admin {
            self.client_id = None;
        }
        self
    }

    pub fn from_ledger(t: &TransferView) -> Self {
        let exponent = t.currency.exponent();
        Self {
            transfer_id: t.transfer_id.0,
            kind: t.kind,
            status: t.status,
            version: t.version,
            sender_id: t.sender_id.get(),
            receiver_id: t.receiver_id.get(),
            currency: t.currency.code().to_owned(),
            amount: t.amount_minor.map(|m| format_minor(m, exponent)),
            amount_minor: t.amount_minor,
            original_amount: t.original_amount_minor.zip(t.original_currency).map(|(m, c)| format_minor(m, c.exponent())),
            original_amount_minor: t.original_amount_minor,
            original_currency: t.original_currency.map(|c| c.code().to_owned()),
            description: t.description.clone(),
            metadata: t.metadata.clone(),
            reason: t.reason.clone(),
            created_at: t.created_at,
            committed_at: t.committed_at,
            history: t.history.clone(),
            decisions: t.decisions.clone(),
            client_id: t.client_id.map(|c| c.0),
            fingerprint: Some(hex::encode(&t.fingerprint)),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::domain::{Currency, OwnerId, Requested, TransferId};

    fn submission(metadata: Metadata) -> Submission {
        Submission {
            id: TransferId::generate(),
            kind: TransferKind::Transfer,
            sender: OwnerId::new(1).unwrap(),
            receiver: OwnerId::new(2).unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            requested: Requested::Amount(Amount::from_minor(100).unwrap()),
            description: None,
            submitted_at: Utc::now(),
            client_id: None,
            metadata,
        }
    }

    #[test]
    fn a_view_always_shows_metadata_and_one_cached_before_metadata_existed_reads_as_none() {
        let tagged = Metadata::new([("channel".to_owned(), "web".to_owned())].into()).unwrap();
        let view = TransferStatusView::initiated(&submission(tagged));
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["metadata"], serde_json::json!({"channel": "web"}));
        let bare = TransferStatusView::initiated(&submission(Metadata::default()));
        let mut json = serde_json::to_value(&bare).unwrap();
        assert_eq!(json["metadata"], serde_json::json!({}), "present, and empty, when there is none");
        json.as_object_mut().unwrap().remove("metadata");
        let old: TransferStatusView = serde_json::from_value(json).unwrap();
        assert_eq!(old, bare);
    }
}
