//! The dispatcher: attempts due deliveries, in every engine that runs a
//! processor, on its own tasks, so a slow or absent receiver delays only its
//! own deliveries, never the processor or the relay.
//!
//! An engine takes due deliveries by pushing their next attempt past the
//! attempt's time limit (`FOR UPDATE SKIP LOCKED`, then commit): no other
//! engine takes them meanwhile, and no transaction stays open during the
//! HTTP call. A 2xx answer marks a delivery delivered; anything else
//! schedules the next attempt with exponential backoff and jitter until
//! its retry window ends, when it is marked failed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::HostAllowList;
use super::sign::SigningKey;
use crate::ledger::LedgerError;
use crate::metrics::Metrics;

/// Finished deliveries are kept this long, then deleted (with their attempts).
const FINISHED_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);
/// The part of a receiver's error answer kept with the attempt.
const ERROR_CHARS_MAX: usize = 256;
/// How long a taken delivery is held beyond the attempt's time limit.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// When attempts are retried: exponential from `min` to `max`, each delay
/// drawn uniformly from its upper half, until `window` after the event.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub min: Duration,
    pub max: Duration,
    pub window: Duration,
}

impl RetryPolicy {
    /// The wait before the attempt after attempt number `attempts` (1 for the first).
    // Hand-written rather than a backoff crate's iterator: the schedule is
    // kept in PostgreSQL across engines, so it is a function of the count.
    pub fn delay(&self, attempts: i32, rng: &mut impl rand::Rng) -> Duration {
        let doublings = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0).min(30);
        let ceiling = self.min.saturating_mul(1 << doublings).min(self.max);
        let half = ceiling / 2;
        half + ceiling.saturating_sub(half).mul_f64(rng.r#gen::<f64>())
    }
}

/// The HTTP client for deliveries with its time limit per attempt, which
/// also sets how long a taken delivery is leased.
pub struct DeliveryClient {
    client: reqwest::Client,
    timeout: Duration,
}

impl DeliveryClient {
    /// No redirects (a redirect could lead past the allow-list), the
    /// attempt's time limit, no proxy from the environment.
    pub fn new(timeout: Duration) -> reqwest::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .no_proxy()
            .user_agent(concat!("transfer-engine-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, timeout })
    }
}

pub struct Dispatcher {
    pub pool: PgPool,
    pub http: DeliveryClient,
    pub retry: RetryPolicy,
    pub allowed: Option<HostAllowList>,
    pub concurrent_max: usize,
    pub poll: Duration,
    /// Woken when this engine's relay wrote deliveries.
    pub enqueued: Arc<Notify>,
    pub metrics: Arc<Metrics>,
}

/// (delivery_id, event_id, body, attempts, url, secret)
type Due = (i64, uuid::Uuid, String, i32, String, Vec<u8>);

/// What one attempt came to.
struct Attempt {
    delivery_id: i64,
    attempt: i32,
    at: DateTime<Utc>,
    http_status: Option<i32>,
    error: Option<String>,
    latency: Duration,
}

impl Attempt {
    fn delivered(&self) -> bool {
        self.http_status.is_some_and(|s| (200..300).contains(&s))
    }
}

impl Dispatcher {
    /// Dispatches until `stopped` turns true; attempts in flight finish first.
    pub async fn run(self, mut stopped: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(this.concurrent_max));
        let mut in_flight = JoinSet::new();
        let mut retention_due = Instant::now();
        while !*stopped.borrow() {
            while in_flight.try_join_next().is_some() {}
            let free = slots.available_permits();
            let taken = if free == 0 { Ok(0) } else { this.take_and_send(free, &slots, &mut in_flight).await };
            if let Err(e) = &taken {
                warn!(error = %e, "Could not take due webhook deliveries; retrying.");
            }
            if Instant::now() >= retention_due {
                retention_due = Instant::now() + RETENTION_INTERVAL;
                this.apply_retention().await;
            }
            if matches!(taken, Ok(n) if n == free && n > 0) {
                // Every slot was filled: more may be due, once one frees.
                tokio::select! {
                    _ = in_flight.join_next() => {}
                    _ = stopped.changed() => {}
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(this.poll) => {}
                _ = this.enqueued.notified() => {}
                _ = stopped.changed() => {}
            }
        }
        while in_flight.join_next().await.is_some() {}
    }

    async fn take_and_send(self: &Arc<Self>, n: usize, slots: &Arc<Semaphore>, in_flight: &mut JoinSet<()>) -> Result<usize, LedgerError> {
        let lease = self.http.timeout + LEASE_MARGIN;
        let due: Vec<Due> = sqlx::query_as(
            "UPDATE webhook_deliveries d
                SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $2)
               FROM webhooks w
              WHERE d.delivery_id IN (SELECT delivery_id FROM webhook_deliveries
                                       WHERE state = 'pending' AND next_attempt_at <= now()
                                       ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
                AND w.webhook_id = d.webhook_id
          RETURNING d.delivery_id, d.event_id, d.body, d.attempts, w.url, w.secret",
        )
        .bind(n as i64)
        .bind(lease.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        let taken = due.len();
        for delivery in due {
            let permit = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
            let this = self.clone();
            in_flight.spawn(async move {
                let attempt = this.attempt(delivery).await;
                if let Err(e) = this.record(&attempt).await {
                    // The delivery stays pending; it is attempted again when its lease ends.
                    warn!(delivery_id = attempt.delivery_id, error = %e, "Could not record a webhook attempt.");
                }
                drop(permit);
            });
        }
        Ok(taken)
    }

    async fn attempt(&self, (delivery_id, event_id, body, attempt, url, secret): Due) -> Attempt {
        let at = Utc::now();
        let started = Instant::now();
        let finish = |http_status: Option<i32>, error: Option<String>| Attempt {
            delivery_id,
            attempt,
            at,
            http_status,
            error,
            latency: started.elapsed(),
        };
        // The allow-list may have been set or narrowed since the webhook was made.
        if let Err(e) = super::check_target(&url, self.allowed.as_ref()) {
            return finish(None, Some(e.to_string()));
        }
        let id = event_id.to_string();
        let timestamp = at.timestamp();
        let signature = SigningKey::from_stored(secret).sign(&id, timestamp, body.as_bytes());
        let sent = self
            .http
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let outcome = match sent {
            Ok(response) if response.status().is_success() => finish(Some(i32::from(response.status().as_u16())), None),
            Ok(response) => {
                let status = i32::from(response.status().as_u16());
                let text = response.text().await.unwrap_or_default();
                finish(Some(status), Some(text.chars().take(ERROR_CHARS_MAX).collect()))
            }
            Err(e) => finish(None, Some(error_chain(&e))),
        };
        let label = if outcome.delivered() { "delivered" } else { "failed" };
        self.metrics.webhook_attempts.get_or_create(&crate::metrics::AttemptLabels { outcome: label }).inc();
        debug!(delivery_id, attempt, delivered = outcome.delivered(), "Webhook attempt.");
        outcome
    }

    async fn record(&self, attempt: &Attempt) -> Result<(), LedgerError> {
        let latency_ms = i32::try_from(attempt.latency.as_millis()).unwrap_or(i32::MAX);
        let delay = self.retry.delay(attempt.attempt, &mut rand::thread_rng());
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, at, http_status, error, latency_ms) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT DO NOTHING",
        )
        .bind(attempt.delivery_id)
        .bind(attempt.attempt)
        .bind(attempt.at)
        .bind(attempt.http_status)
        .bind(&attempt.error)
        .bind(latency_ms)
        .execute(&mut *tx)
        .await?;
        // Only a pending delivery changes: one cancelled meanwhile stays cancelled.
        sqlx::query(
            "UPDATE webhook_deliveries
                SET state = CASE WHEN $2 THEN 'delivered' WHEN now() >= retry_until THEN 'failed' ELSE 'pending' END,
                    finished_at = CASE WHEN $2 OR now() >= retry_until THEN now() END,
                    next_attempt_at = now() + make_interval(secs => $3)
              WHERE delivery_id = $1 AND state = 'pending'",
        )
        .bind(attempt.delivery_id)
        .bind(attempt.delivered())
        .bind(delay.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn apply_retention(&self) {
        let before = Utc::now() - chrono::Duration::from_std(FINISHED_RETENTION).expect("in range");
        let deleted = sqlx::query("DELETE FROM webhook_deliveries WHERE state <> 'pending' AND finished_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await;
        if let Err(e) = deleted {
            warn!(error = %e, "Could not delete finished webhook deliveries past their retention; retrying later.");
        }
    }
}

/// An error with its causes, which say what actually failed (refused, timed out, DNS).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.chars().take(ERROR_CHARS_MAX).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_within_the_upper_half_of_each_step_up_to_the_maximum() {
        let policy = RetryPolicy { min: Duration::from_secs(1), max: Duration::from_secs(3600), window: Duration::from_secs(86_400) };
        let mut rng = rand::thread_rng();
        for (attempts, ceiling_s) in [(1, 1), (2, 2), (3, 4), (10, 512), (12, 2048), (13, 3600), (40, 3600), (i32::MAX, 3600)] {
            for _ in 0..50 {
                let delay = policy.delay(attempts, &mut rng);
                let ceiling = Duration::from_secs(ceiling_s);
                assert!(delay >= ceiling / 2 && delay <= ceiling, "attempt {attempts}: {delay:?}");
            }
        }
    }

    #[test]
    fn the_default_schedule_keeps_retrying_for_at_least_a_day() {
        let policy = RetryPolicy { min: Duration::from_secs(1), max: Duration::from_secs(3600), window: Duration::from_secs(86_400) };
        let mut rng = rand::thread_rng();
        let (mut elapsed, mut attempts) = (Duration::ZERO, 0);
        while elapsed < policy.window {
            attempts += 1;
            elapsed += policy.delay(attempts, &mut rng);
        }
        // Backing off never stretches past the window: the last gap is at most an hour.
        assert!(attempts >= 24, "{attempts} attempts in a day");
    }
}
