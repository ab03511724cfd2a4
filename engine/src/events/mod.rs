//! Events out: every status version the ledger commits, published once in
//! effect to the events topic (and, from there, to webhooks).
//!
//! - `Event`: the wire format (JSON, `schema_version` 1), one per status version.
//! - `outbox`: the commit's outbox rows, claimed by relays with `SKIP LOCKED`, marked sent, and kept for a retention.
//! - `relay`: the loop each processor engine runs: claim, publish idempotently, mark sent.
//! - `tail`: `transfer-engine events tail`, a consumer that prints events.
//! - `webhooks`: endpoints that receive events over HTTP, signed, with retries.

pub mod outbox;
pub mod relay;
pub mod tail;
pub mod webhooks;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::domain::{Status, TransferKind};

/// The version of the event format. A consumer reads the events of every
/// version it knows; a change that a consumer of version 1 could misread
/// (a field removed, renamed or given another meaning) raises it, while new
/// fields may appear in any version and are to be ignored when unknown.
pub const SCHEMA_VERSION: u32 = 1;

/// Every event type, `<kind>.<status>`. A deposit or withdrawal is a transfer
/// of another kind: its events are `deposit.completed`, `withdrawal.rejected`...
pub const EVENT_TYPES: [&str; 12] = [
    "transfer.initiated",
    "transfer.completed",
    "transfer.rejected",
    "transfer.failed",
    "deposit.initiated",
    "deposit.completed",
    "deposit.rejected",
    "deposit.failed",
    "withdrawal.initiated",
    "withdrawal.completed",
    "withdrawal.rejected",
    "withdrawal.failed",
];

/// The namespace of event ids (a UUID v5 of the transfer id and version).
const EVENT_ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5e1d_e7e0_16ee_4c4b_9a0e_7c1f_0e4e_a116);

/// The id of the event of `transfer_id`'s status version `version`: the same
/// on every publication of it, so a consumer drops duplicates by it.
pub fn event_id(transfer_id: uuid::Uuid, version: i32) -> uuid::Uuid {
    let mut name = [0u8; 20];
    name[..16].copy_from_slice(transfer_id.as_bytes());
    name[16..].copy_from_slice(&version.to_be_bytes());
    uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, &name)
}

/// The type of the event of a status of a transfer of `kind`.
pub fn event_type(kind: TransferKind, status: Status) -> &'static str {
    let index = match kind {
        TransferKind::Transfer => 0,
        TransferKind::Deposit => 4,
        TransferKind::Withdrawal => 8,
    } + match status {
        Status::Initiated => 0,
        Status::Completed => 1,
        Status::Rejected => 2,
        Status::Failed => 3,
    };
    EVENT_TYPES[index]
}

/// One status version of one transfer, as published (JSON). Fields that
/// have no value are `null`, except the original amount and currency, which
/// are present only when the transfer was submitted in another currency.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    pub schema_version: u32,
    pub event_id: uuid::Uuid,
    /// `<kind>.<status>`, one of `EVENT_TYPES`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub transfer_id: uuid::Uuid,
    /// 1 is `initiated`; each change adds one.
    pub version: i32,
    pub status: String,
    pub sender_id: i64,
    pub receiver_id: i64,
    /// In minor units of `currency`; `null` only when it was never known (a conversion that failed).
    pub amount_minor: Option<i64>,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_amount_minor: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_currency: Option<String>,
    pub reason_code: Option<String>,
    pub reason_message: Option<String>,
    /// The transfer's metadata as submitted: a JSON object, `{}` when none was given.
    pub metadata: Box<RawValue>,
    /// When the status took effect: the submission for `initiated`, the commit for a final status.
    pub occurred_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_id_is_the_same_for_the_same_version_and_differs_between_versions() {
        let id = uuid::Uuid::new_v4();
        assert_eq!(event_id(id, 1), event_id(id, 1));
        assert_ne!(event_id(id, 1), event_id(id, 2));
        assert_ne!(event_id(id, 1), event_id(uuid::Uuid::new_v4(), 1));
    }

    #[test]
    fn every_kind_and_status_has_its_own_event_type() {
        let kinds = [TransferKind::Transfer, TransferKind::Deposit, TransferKind::Withdrawal];
        let statuses = [Status::Initiated, Status::Completed, Status::Rejected, Status::Failed];
        for kind in kinds {
            for status in statuses {
                assert_eq!(event_type(kind, status), format!("{}.{}", kind.as_str(), status.as_str()));
            }
        }
    }
}
