//! The ledger in PostgreSQL, the source of truth.
//!
//! - `commit`: `commit_batch`, one transaction per batch: lock, decide in Rust, write set-based.
//! - `debit_log`: senders' completed debits kept in memory for velocity windows, checked against each account's version.
//! - `foresight`: validators asked ahead of the commit on a predicted context, their answers used where it proves exact.
//! - `accounts`: account creation, account metadata, and the synchronous deposit/withdrawal path.
//! - `queries`: reads (balances, a transfer with its history, an account's transfers).
//! - `audit`: the invariants a correct ledger always satisfies, checked by queries.
//! - `quarantine`: records the processor could neither apply nor dead-letter.
//! - `retention`: the status history's monthly partitions, made ahead and detached when old.

mod accounts;
pub mod audit;
mod commit;
mod debit_log;
mod foresight;
mod quarantine;
mod queries;
pub mod retention;

pub use accounts::{AccountView, AccountWithMetadata, CreateAccountError, MoveError};
pub use commit::{BatchResult, CommitItem, Committed, Disposition, Verdict};
pub use foresight::Foresight;
pub use quarantine::{KeptRecord, Quarantined};
pub use queries::{HistoryEntry, TransferPage, TransferView};

use std::sync::{Arc, Mutex};

use sqlx::PgPool;

use foresight::Memory;

/// Everything the ledger can fail with that is not a business outcome.
/// Rejections are *outcomes* (recorded, returned in `Committed`), not errors.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the database could not be reached or refused the statement")]
    Database(#[from] sqlx::Error),
    #[error("the database holds a value this engine does not understand: {0}")]
    Corrupt(String),
}

impl LedgerError {
    /// Errors worth retrying the whole transaction for: a concurrent insert
    /// of the same transfer id, a serialization failure, a deadlock.
    pub fn is_retryable_conflict(&self) -> bool {
        let Self::Database(sqlx::Error::Database(db)) = self else {
            return false;
        };
        matches!(db.code().as_deref(), Some("23505" | "40001" | "40P01"))
    }

    /// Errors caused by the values of the statement, which the same values
    /// will cause again: a data exception (class 22: a time out of range, a
    /// character the encoding cannot hold), an integrity violation (class
    /// 23) that outlived `commit_batch`'s retries, a value past a program
    /// limit (class 54), or a value that could not be encoded. Splitting the
    /// batch finds the items that cause them; no other error is an item's fault.
    pub fn is_data_dependent(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(db)) => {
                db.code().as_deref().is_some_and(|c| c.starts_with("22") || c.starts_with("23") || c.starts_with("54"))
            }
            Self::Database(sqlx::Error::Encode(_)) => true,
            _ => false,
        }
    }

    /// The SQLSTATE, when PostgreSQL gave one.
    pub fn sql_state(&self) -> Option<String> {
        match self {
            Self::Database(sqlx::Error::Database(db)) => db.code().map(|c| c.into_owned()),
            _ => None,
        }
    }

    /// Errors that mean the database is away or too busy for now (see
    /// `is_unavailable`), as opposed to a statement that will never succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Database(e) if is_unavailable(e))
    }
}

/// Errors that mean the database is away for now (connection, pool timeout,
/// I/O, a server shutting down or starting) or too busy for now (a statement
/// cancelled by the engine's own `statement_timeout`, a lock not granted
/// within `lock_timeout`), as opposed to a statement that will never succeed.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        // 08: connection exception; 57P: operator intervention (shutdown,
        // crash recovery); 57014: query_canceled; 55P03: lock_not_available.
        sqlx::Error::Database(db) => {
            db.code().as_deref().is_some_and(|c| c.starts_with("57P") || c.starts_with("08") || c == "57014" || c == "55P03")
        }
        _ => false,
    }
}

/// The ledger's handle: cheap to clone (a pool, and a cache its clones share).
#[derive(Clone)]
pub struct Ledger {
    pool: PgPool,
    /// Validated senders' committed debits, used only where a locked
    /// account's version proves them exact (see `debit_log`), and what the
    /// processor predicts of the accounts it validates (see `foresight`).
    memory: Arc<Mutex<Memory>>,
    /// Whether a commit writes its status versions to the event outbox
    /// (`events_enabled`), and whom it wakes when it has.
    events: Option<Arc<tokio::sync::Notify>>,
}

impl Ledger {
    /// A ledger that writes every commit's events to the outbox.
    pub fn new(pool: PgPool) -> Self {
        Self { pool, memory: Arc::default(), events: Some(Arc::default()) }
    }

    /// A ledger whose commits write no events (`events_enabled = false`).
    pub fn without_events(self) -> Self {
        Self { events: None, ..self }
    }

    /// Woken after each commit that wrote events, for a relay in this
    /// process to publish them at once; `None` when the ledger writes none.
    pub fn events_written(&self) -> Option<Arc<tokio::sync::Notify>> {
        self.events.clone()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Applies the schema migrations in `migrations/` (forward-only).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    sqlx::migrate!("../migrations").run(pool).await
}
