//! The relay: publishes the outbox's events to the events topic, in every
//! engine that runs a processor.
//!
//! One claim at a time: claim rows, publish all their events with the
//! engine's idempotent producer and wait for every acknowledgement, hand
//! them to the webhooks, then mark the rows sent in the claim's transaction.
//! A failure anywhere before that commit leaves the rows unsent, to be
//! claimed again: an event may reach the topic twice, always with its id,
//! and never zero times. Events of one transfer are in one row (one commit
//! wrote them), published in version order on one partition (keyed by the
//! transfer id), so a consumer sees a transfer's versions in order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::join_all;
use rdkafka::message::{Header, OwnedHeaders};
use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use tracing::{debug, warn};

use super::{outbox, webhooks};
use crate::kafka::{PublishError, Publisher};
use crate::ledger::LedgerError;
use crate::metrics::Metrics;

/// Outbox rows sent longer ago than the retention are deleted this often, this many at a time.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);
const RETENTION_ROWS_PER_DELETE_MAX: i64 = 10_000;
/// After a failed claim or publish, the relay waits this long, doubling to the maximum.
const RETRY_BACKOFF_MS_MIN: u64 = 100;
const RETRY_BACKOFF_MS_MAX: u64 = 5_000;

/// What the relay needs; built by `startup` from the settings.
pub struct Relay {
    pub pool: PgPool,
    pub publisher: Publisher,
    pub topic: String,
    /// Outbox rows per claim (each holds one commit's events).
    pub claim_rows_max: i64,
    /// How often to look for rows other engines' commits wrote (this
    /// engine's commits wake the relay at once through `written`).
    pub poll: Duration,
    pub retention: Duration,
    pub written: Option<Arc<Notify>>,
    pub metrics: Arc<Metrics>,
    /// How long webhook deliveries are retried, and the dispatcher to wake when the relay wrote some.
    pub webhook_retry_window: Duration,
    pub webhooks_enqueued: Arc<Notify>,
}

/// Why one round of the relay failed; the rows stay unsent.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the outbox could not be read or marked: {0}")]
    Ledger(#[from] LedgerError),
    #[error("an event was not acknowledged by the broker: {0}")]
    Publish(#[from] PublishError),
}

impl Relay {
    /// Relays until `stopped` turns true; the claim in progress finishes first.
    pub async fn run(self, mut stopped: watch::Receiver<bool>) {
        let mut backoff_ms = RETRY_BACKOFF_MS_MIN;
        let mut retention_due = Instant::now();
        while !*stopped.borrow() {
            let wait = match self.relay_once().await {
                Ok(0) => {
                    backoff_ms = RETRY_BACKOFF_MS_MIN;
                    self.observe_backlog().await;
                    Some(self.poll)
                }
                Ok(_) => {
                    backoff_ms = RETRY_BACKOFF_MS_MIN;
                    None
                }
                Err(e) => {
                    warn!(error = %e, retry_ms = backoff_ms, "Events could not be relayed; the outbox keeps them.");
                    let wait = Duration::from_millis(backoff_ms);
                    backoff_ms = (backoff_ms * 2).min(RETRY_BACKOFF_MS_MAX);
                    Some(wait)
                }
            };
            if Instant::now() >= retention_due {
                retention_due = Instant::now() + RETENTION_INTERVAL;
                self.apply_retention().await;
            }
            let Some(wait) = wait else { continue };
            let written = self.written.clone();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = async { if let Some(w) = written { w.notified().await } else { std::future::pending().await } } => {}
                _ = stopped.changed() => {}
            }
        }
    }

    /// Relays one claim; returns how many events it published (0: nothing to claim).
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        let Some(mut claim) = outbox::claim(&self.pool, self.claim_rows_max).await? else {
            return Ok(0);
        };
        let claimed = std::mem::take(&mut claim.events);
        let payloads: Vec<(String, Vec<u8>)> = claimed
            .iter()
            .map(|(event, _)| (event.transfer_id.to_string(), serde_json::to_vec(event).expect("events serialise")))
            .collect();
        if let Err(e) = self.publish(&claimed, &payloads).await {
            claim.release().await;
            return Err(e.into());
        }
        let published = Utc::now();
        for (_, written_at) in &claimed {
            let lag = (published - *written_at).to_std().unwrap_or_default();
            self.metrics.event_publish_lag.observe(lag.as_secs_f64());
        }
        let (rows, events) = (claim.rows(), claimed.len());
        let bodies: Vec<(&super::Event, &[u8])> =
            claimed.iter().zip(&payloads).map(|((event, _), (_, body))| (event, body.as_slice())).collect();
        let deliveries = match webhooks::enqueue(claim.transaction(), &bodies, self.webhook_retry_window).await {
            Ok(deliveries) => deliveries,
            Err(e) => {
                claim.release().await;
                return Err(e.into());
            }
        };
        claim.mark_sent().await?;
        if deliveries > 0 {
            self.webhooks_enqueued.notify_one();
        }
        self.metrics.events_published.inc_by(events as u64);
        debug!(rows, events, "Relayed events.");
        Ok(events)
    }

    /// Publishes the claim's events and waits for every acknowledgement.
    async fn publish(&self, claimed: &[(super::Event, chrono::DateTime<Utc>)], payloads: &[(String, Vec<u8>)]) -> Result<(), PublishError> {
        let sends = claimed.iter().zip(payloads).map(|((event, _), (key, payload))| {
            let headers = OwnedHeaders::new()
                .insert(Header { key: "event-id", value: Some(&event.event_id.to_string()) })
                .insert(Header { key: "event-type", value: Some(&event.event_type) })
                .insert(Header { key: "schema-version", value: Some(&super::SCHEMA_VERSION.to_string()) });
            self.publisher.publish(&self.topic, key, payload, Some(headers))
        });
        join_all(sends).await.into_iter().collect()
    }

    async fn observe_backlog(&self) {
        match outbox::unsent_rows(&self.pool).await {
            Ok(rows) => {
                self.metrics.event_outbox_unsent.set(rows);
            }
            Err(e) => debug!(error = %e, "Could not count the outbox's unsent rows."),
        }
    }

    async fn apply_retention(&self) {
        let Ok(retention) = chrono::Duration::from_std(self.retention) else { return };
        let before = Utc::now() - retention;
        loop {
            match outbox::delete_sent(&self.pool, before, RETENTION_ROWS_PER_DELETE_MAX).await {
                Ok(deleted) if deleted as i64 == RETENTION_ROWS_PER_DELETE_MAX => continue,
                Ok(_) => return,
                Err(e) => {
                    warn!(error = %e, "Could not delete sent outbox rows past their retention; retrying later.");
                    return;
                }
            }
        }
    }
}
