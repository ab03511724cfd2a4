//! Pure domain types: no I/O. Once you hold one of these values, it is valid.
//!
//! - `currency`: ISO 4217 codes with their minor-unit exponent.
//! - `amount`: positive `i64` minor units and exact decimal parsing/formatting.
//! - `ids`: transfer ids, owner ids and API client ids.
//! - `metadata`: the bounded string map clients attach to transfers and accounts.
//! - `rejection`: the stable, machine-readable reasons a transfer is refused.
//! - `transfer`: a submission as it travels from the API to the ledger.

mod amount;
mod currency;
mod ids;
mod metadata;
mod rejection;
mod transfer;

pub use amount::{Amount, AmountError, format_minor, parse_decimal_minor};
pub use currency::{Currency, CurrencyError};
pub use ids::{ClientId, OwnerId, OwnerIdError, SYSTEM_OWNER_ID, TransferId};
pub use metadata::{METADATA_KEY_CHARS_MAX, METADATA_KEYS_MAX, METADATA_VALUE_CHARS_MAX, Metadata, MetadataError};
pub use rejection::{Reason, Rejection};
pub use transfer::{Money, Requested, Status, Submission, TransferKind};
