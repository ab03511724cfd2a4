//! The relay: publishes the outbox's events to the events topic, in every
//! engine that runs a processor.
//!
//! A claim: lock rows, read their events, publish them all with the engine's
//! idempotent producer and wait for every acknowledgement, hand them to the
//! webhooks, then mark the rows sent in the claim's transaction. A failure
//! anywhere before that commit leaves the rows unsent, to be claimed again:
//! an event may reach the topic twice, always with its id, and never zero
//! times.
//!
//! Up to `claims_in_flight_max` claims run at once (`SKIP LOCKED` gives
//! each its own rows), so rows committed while one claim waits for the
//! broker go out in the next instead of after it: a row's wait is at most
//! about one claim, not two. Claims may finish in any order. That keeps a
//! transfer's versions in order only because they are all in one row (the
//! commit that records a transfer decides it), published in version order
//! on one partition (keyed by the transfer id). A change that decides a
//! transfer in a later commit must keep its rows in one claim at a time.

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
use crate::metrics::{Metrics, RelayStage};

/// Outbox rows sent longer ago than the retention are deleted this often, this many at a time.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);
/// Claimers beyond the first poll this many times less often when idle.
const EXTRA_CLAIMER_POLL_FACTOR: u32 = 10;
/// How often the unsent rows are counted for `event_outbox_unsent_rows`.
const BACKLOG_INTERVAL: Duration = Duration::from_secs(1);
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
    /// Claims published at once, each holding a database connection.
    pub claims_in_flight_max: usize,
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
    /// Relays until `stopped` turns true; the claims in progress finish first.
    pub async fn run(self, stopped: watch::Receiver<bool>) {
        // The first claimer polls for rows other engines wrote; the others
        // mostly wait for this engine's commits, so an idle relay's queries
        // do not grow with the claims it may keep in flight.
        let claimers = (0..self.claims_in_flight_max.max(1)).map(|n| {
            let idle_poll = if n == 0 { self.poll } else { self.poll * EXTRA_CLAIMER_POLL_FACTOR };
            self.claim_until_stopped(idle_poll, stopped.clone())
        });
        futures::future::join(join_all(claimers), self.housekeep_until_stopped(stopped)).await;
    }

    /// One claim after another; waits for a commit's wake-up (or `idle_poll`)
    /// when there was nothing to claim, and backs off after a failure.
    async fn claim_until_stopped(&self, idle_poll: Duration, mut stopped: watch::Receiver<bool>) {
        let mut backoff_ms = RETRY_BACKOFF_MS_MIN;
        while !*stopped.borrow() {
            let wait = match self.relay_once().await {
                Ok(0) => {
                    backoff_ms = RETRY_BACKOFF_MS_MIN;
                    idle_poll
                }
                Ok(_) => {
                    backoff_ms = RETRY_BACKOFF_MS_MIN;
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, retry_ms = backoff_ms, "Events could not be relayed; the outbox keeps them.");
                    let wait = Duration::from_millis(backoff_ms);
                    backoff_ms = (backoff_ms * 2).min(RETRY_BACKOFF_MS_MAX);
                    wait
                }
            };
            let written = self.written.clone();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = async { if let Some(w) = written { w.notified().await } else { std::future::pending().await } } => {}
                _ = stopped.changed() => {}
            }
        }
    }

    /// Counts the backlog every second and applies the retention every minute.
    async fn housekeep_until_stopped(&self, mut stopped: watch::Receiver<bool>) {
        let mut retention_due = Instant::now();
        while !*stopped.borrow() {
            self.observe_backlog().await;
            if Instant::now() >= retention_due {
                retention_due = Instant::now() + RETENTION_INTERVAL;
                self.apply_retention().await;
            }
            tokio::select! {
                _ = tokio::time::sleep(BACKLOG_INTERVAL) => {}
                _ = stopped.changed() => {}
            }
        }
    }

    /// Relays one claim; returns how many events it published (0: nothing to claim).
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        let started = Instant::now();
        let claimed = outbox::claim(&self.pool, self.claim_rows_max).await;
        self.metrics.observe_relay_stage(RelayStage::Claim, started);
        let Some(mut claim) = claimed? else {
            return Ok(0);
        };
        let started = Instant::now();
        let claimed = claim.read_events().await;
        self.metrics.observe_relay_stage(RelayStage::Read, started);
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(e) => {
                claim.release().await;
                return Err(e.into());
            }
        };
        let payloads: Vec<(String, Vec<u8>)> = claimed
            .iter()
            .map(|(event, _)| (event.transfer_id.to_string(), serde_json::to_vec(event).expect("events serialise")))
            .collect();
        let started = Instant::now();
        let published = self.publish(&claimed, &payloads).await;
        self.metrics.observe_relay_stage(RelayStage::Publish, started);
        if let Err(e) = published {
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
        let started = Instant::now();
        let deliveries = match webhooks::enqueue(claim.transaction(), &bodies, self.webhook_retry_window).await {
            Ok(deliveries) => deliveries,
            Err(e) => {
                claim.release().await;
                return Err(e.into());
            }
        };
        let marked = claim.mark_sent().await;
        self.metrics.observe_relay_stage(RelayStage::Mark, started);
        marked?;
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
