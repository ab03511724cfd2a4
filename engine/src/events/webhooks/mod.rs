//! Webhooks: HTTP endpoints that receive events, signed (`sign`).
//!
//! - Here: which URLs may be targets, and the webhooks and their deliveries in PostgreSQL.
//! - `sign`: Standard Webhooks signatures.
//! - `dispatch`: the loop each processor engine runs, attempting due deliveries with backoff.
//!
//! The relay writes a delivery for each event and each webhook that wants
//! its type, in the transaction that marks the event sent (`enqueue`), so a
//! delivery exists once the event has reached the topic, and only once.

pub mod dispatch;
pub mod sign;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;

use super::{EVENT_TYPES, Event};
use crate::ledger::LedgerError;
use sign::SigningKey;

/// The longest URL a webhook may have.
pub const URL_CHARS_MAX: usize = 2_048;
/// Deliveries a listing shows at most, and attempts per delivery.
pub const DELIVERIES_LISTED_MAX: i64 = 500;
pub const ATTEMPTS_LISTED_PER_DELIVERY_MAX: usize = 20;

/// The hosts webhooks may target (`webhook_hosts_allowed`): exact names, or
/// `*.example.com` for the subdomains of a name. Compared without case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostAllowList(Vec<String>);

impl HostAllowList {
    /// Parses the setting: comma-separated entries, none empty.
    pub fn parse(setting: &str) -> Result<Self, String> {
        let entries: Vec<String> = setting.split(',').map(|e| e.trim().to_ascii_lowercase()).collect();
        if let Some(bad) = entries.iter().find(|e| e.is_empty() || e.trim_start_matches("*.").contains(['*', '/', ':', ' '])) {
            return Err(format!("has an entry {bad:?} that is neither a host name nor `*.` and a host name"));
        }
        Ok(Self(entries))
    }

    pub fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.0.iter().any(|entry| match entry.strip_prefix("*.") {
            Some(domain) => host.len() > domain.len() + 1 && host.ends_with(domain) && host[..host.len() - domain.len()].ends_with('.'),
            None => *entry == host,
        })
    }
}

/// Why a URL cannot be a webhook's target.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error(
        "the URL must be an absolute http or https URL of at most {URL_CHARS_MAX} characters, with a host and no user name or password"
    )]
    Url,
    #[error("the host {0:?} is not in the engine's webhook_hosts_allowed")]
    HostNotAllowed(String),
}

/// Checks that `url` may receive deliveries under `allowed` (none: any host).
pub fn check_target(url: &str, allowed: Option<&HostAllowList>) -> Result<reqwest::Url, TargetError> {
    if url.len() > URL_CHARS_MAX {
        return Err(TargetError::Url);
    }
    let parsed = reqwest::Url::parse(url).map_err(|_| TargetError::Url)?;
    // Credentials in a URL would be stored and listed in the clear.
    if !matches!(parsed.scheme(), "http" | "https") || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(TargetError::Url);
    }
    let host = parsed.host_str().filter(|h| !h.is_empty()).ok_or(TargetError::Url)?;
    if let Some(allowed) = allowed {
        // An IPv6 literal is listed with its brackets; compare without them.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if !allowed.allows(bare) {
            return Err(TargetError::HostNotAllowed(bare.to_owned()));
        }
    }
    Ok(parsed)
}

/// Why a set of event types cannot be subscribed to.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("events must name 1 to {} distinct types among: {}", EVENT_TYPES.len(), EVENT_TYPES.join(", "))]
pub struct EventTypesError;

/// The event types, checked: known, distinct, at least one.
pub fn check_event_types(types: &[String]) -> Result<Vec<String>, EventTypesError> {
    let mut seen = std::collections::HashSet::new();
    let valid = !types.is_empty() && types.iter().all(|t| EVENT_TYPES.contains(&t.as_str()) && seen.insert(t.as_str()));
    if valid { Ok(types.to_vec()) } else { Err(EventTypesError) }
}

/// A webhook as an operator sees it: never its secret.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookInfo {
    #[schema(value_type = String, format = Uuid)]
    pub webhook_id: uuid::Uuid,
    pub url: String,
    /// The event types it receives.
    pub events: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// One attempt of a delivery.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AttemptInfo {
    pub attempt: i32,
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status; absent when none came (refused, timed out).
    pub http_status: Option<i32>,
    pub error: Option<String>,
    pub latency_ms: i32,
}

/// One event for one webhook, and its attempts (the latest first).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryInfo {
    pub delivery_id: i64,
    /// Also the `webhook-id` header of every attempt.
    #[schema(value_type = String, format = Uuid)]
    pub event_id: uuid::Uuid,
    pub event_type: String,
    /// `pending`, `delivered`, `failed` (its retry window ended) or `cancelled` (the webhook was deleted).
    pub state: String,
    pub attempts: i32,
    /// When a pending delivery is next attempted.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub retry_until: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub recent_attempts: Vec<AttemptInfo>,
}

/// Why a delivery cannot be sent again.
#[derive(Debug, thiserror::Error)]
pub enum ResendError {
    /// No such delivery of this webhook, or the webhook was deleted.
    #[error("no such delivery of this webhook")]
    NotFound,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

type WebhookRow = (uuid::Uuid, String, Vec<String>, DateTime<Utc>);

/// Creates a webhook; the key is returned this once.
pub async fn create(pool: &PgPool, url: &reqwest::Url, events: &[String]) -> Result<(WebhookInfo, SigningKey), LedgerError> {
    let key = SigningKey::generate();
    let (webhook_id, url, events, created_at): WebhookRow = sqlx::query_as(
        "INSERT INTO webhooks (webhook_id, url, events, secret) VALUES ($1, $2, $3, $4)
         RETURNING webhook_id, url, events, created_at",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(url.as_str())
    .bind(events)
    .bind(key.as_bytes())
    .fetch_one(pool)
    .await?;
    Ok((WebhookInfo { webhook_id, url, events, created_at }, key))
}

/// Every webhook not deleted, oldest first.
pub async fn list(pool: &PgPool) -> Result<Vec<WebhookInfo>, LedgerError> {
    let rows: Vec<WebhookRow> =
        sqlx::query_as("SELECT webhook_id, url, events, created_at FROM webhooks WHERE deleted_at IS NULL ORDER BY created_at, webhook_id")
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|(webhook_id, url, events, created_at)| WebhookInfo { webhook_id, url, events, created_at }).collect())
}

/// Deletes a webhook and cancels its pending deliveries; false if there was none to delete.
pub async fn delete(pool: &PgPool, webhook_id: uuid::Uuid) -> Result<bool, LedgerError> {
    let mut tx = pool.begin().await?;
    let deleted = sqlx::query("UPDATE webhooks SET deleted_at = now() WHERE webhook_id = $1 AND deleted_at IS NULL")
        .bind(webhook_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("UPDATE webhook_deliveries SET state = 'cancelled', finished_at = now() WHERE webhook_id = $1 AND state = 'pending'")
        .bind(webhook_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(deleted == 1)
}

/// (delivery_id, event_id, event_type, state, attempts, next_attempt_at, retry_until, created_at, finished_at)
type DeliveryRow = (i64, uuid::Uuid, String, String, i32, DateTime<Utc>, DateTime<Utc>, DateTime<Utc>, Option<DateTime<Utc>>);
/// (delivery_id, attempt, at, http_status, error, latency_ms)
type AttemptRow = (i64, i32, DateTime<Utc>, Option<i32>, Option<String>, i32);

/// A webhook's latest `limit` deliveries, newest first; `None` if there is
/// no such webhook (a deleted one is gone for the API; its rows stay until retention).
pub async fn deliveries(pool: &PgPool, webhook_id: uuid::Uuid, limit: i64) -> Result<Option<Vec<DeliveryInfo>>, LedgerError> {
    let exists: Option<(uuid::Uuid,)> = sqlx::query_as("SELECT webhook_id FROM webhooks WHERE webhook_id = $1 AND deleted_at IS NULL")
        .bind(webhook_id)
        .fetch_optional(pool)
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let rows: Vec<DeliveryRow> = sqlx::query_as(
        "SELECT delivery_id, event_id, event_type, state, attempts, next_attempt_at, retry_until, created_at, finished_at
           FROM webhook_deliveries WHERE webhook_id = $1 ORDER BY delivery_id DESC LIMIT $2",
    )
    .bind(webhook_id)
    .bind(limit.clamp(1, DELIVERIES_LISTED_MAX))
    .fetch_all(pool)
    .await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let attempts: Vec<AttemptRow> = sqlx::query_as(
        "SELECT delivery_id, attempt, at, http_status, error, latency_ms FROM webhook_attempts
          WHERE delivery_id = ANY($1) ORDER BY delivery_id, attempt DESC",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut by_delivery: HashMap<i64, Vec<AttemptInfo>> = HashMap::new();
    for (delivery_id, attempt, at, http_status, error, latency_ms) in attempts {
        let list = by_delivery.entry(delivery_id).or_default();
        if list.len() < ATTEMPTS_LISTED_PER_DELIVERY_MAX {
            list.push(AttemptInfo { attempt, at, http_status, error, latency_ms });
        }
    }
    Ok(Some(
        rows.into_iter()
            .map(|(delivery_id, event_id, event_type, state, attempts, next, retry_until, created_at, finished_at)| DeliveryInfo {
                delivery_id,
                event_id,
                event_type,
                next_attempt_at: (state == "pending").then_some(next),
                state,
                attempts,
                retry_until,
                created_at,
                finished_at,
                recent_attempts: by_delivery.remove(&delivery_id).unwrap_or_default(),
            })
            .collect(),
    ))
}

/// Makes a delivery due now, with a new retry window, whatever its state
/// (a delivered one is sent again, with the same `webhook-id`).
pub async fn resend(pool: &PgPool, webhook_id: uuid::Uuid, delivery_id: i64, retry_window: Duration) -> Result<(), ResendError> {
    let resent = sqlx::query(
        "UPDATE webhook_deliveries d SET state = 'pending', finished_at = NULL, next_attempt_at = now(),
                retry_until = now() + make_interval(secs => $3)
           FROM webhooks w
          WHERE d.delivery_id = $1 AND d.webhook_id = $2 AND w.webhook_id = d.webhook_id AND w.deleted_at IS NULL",
    )
    .bind(delivery_id)
    .bind(webhook_id)
    .bind(retry_window.as_secs_f64())
    .execute(pool)
    .await
    .map_err(LedgerError::from)?;
    if resent.rows_affected() == 0 {
        return Err(ResendError::NotFound);
    }
    Ok(())
}

/// Writes a delivery of each event to each webhook that wants its type, in
/// the relay's claim transaction; returns how many it wrote. A delivery
/// that exists (the event was relayed before) is left as it is.
pub async fn enqueue(tx: &mut sqlx::PgConnection, events: &[(&Event, &[u8])], retry_window: Duration) -> Result<u64, LedgerError> {
    let webhooks: Vec<(uuid::Uuid, Vec<String>)> =
        sqlx::query_as("SELECT webhook_id, events FROM webhooks WHERE deleted_at IS NULL").fetch_all(&mut *tx).await?;
    if webhooks.is_empty() {
        return Ok(0);
    }
    let (mut webhook_ids, mut event_ids, mut types, mut bodies) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (event, body) in events {
        for (webhook_id, wanted) in &webhooks {
            if wanted.contains(&event.event_type) {
                webhook_ids.push(*webhook_id);
                event_ids.push(event.event_id);
                types.push(event.event_type.as_str());
                bodies.push(String::from_utf8_lossy(body));
            }
        }
    }
    if webhook_ids.is_empty() {
        return Ok(0);
    }
    let written = sqlx::query(
        "INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, body, next_attempt_at, retry_until)
         SELECT d.webhook_id, d.event_id, d.event_type, d.body, now(), now() + make_interval(secs => $5)
           FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[]) AS d(webhook_id, event_id, event_type, body)
         ON CONFLICT (webhook_id, event_id) DO NOTHING",
    )
    .bind(&webhook_ids)
    .bind(&event_ids)
    .bind(&types)
    .bind(&bodies)
    .bind(retry_window.as_secs_f64())
    .execute(&mut *tx)
    .await?;
    Ok(written.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_urls_with_a_host_and_no_credentials_are_targets() {
        assert!(check_target("https://hooks.example.com/in", None).is_ok());
        assert!(check_target("http://127.0.0.1:9000/", None).is_ok());
        for bad in ["ftp://example.com/", "file:///etc/passwd", "https://user:pw@example.com/", "example.com/in", "http://", ""] {
            assert_eq!(check_target(bad, None).unwrap_err(), TargetError::Url, "{bad}");
        }
        assert_eq!(check_target(&format!("https://example.com/{}", "a".repeat(URL_CHARS_MAX)), None).unwrap_err(), TargetError::Url);
    }

    #[test]
    fn the_allow_list_admits_listed_hosts_and_the_subdomains_of_wildcards_only() {
        let allowed = HostAllowList::parse("hooks.example.com, *.partner.test,127.0.0.1").unwrap();
        assert!(check_target("https://HOOKS.example.com/x", Some(&allowed)).is_ok());
        assert!(check_target("https://a.b.partner.test/x", Some(&allowed)).is_ok());
        assert!(check_target("http://127.0.0.1:8000/x", Some(&allowed)).is_ok());
        for refused in ["https://partner.test/", "https://evilpartner.test/", "https://example.com/", "http://169.254.169.254/"] {
            assert!(matches!(check_target(refused, Some(&allowed)), Err(TargetError::HostNotAllowed(_))), "{refused}");
        }
        assert!(HostAllowList::parse("a.com,,b.com").is_err());
        assert!(HostAllowList::parse("http://a.com").is_err());
    }

    #[test]
    fn event_types_must_be_known_distinct_and_at_least_one() {
        assert!(check_event_types(&["transfer.completed".into(), "deposit.completed".into()]).is_ok());
        assert!(check_event_types(&[]).is_err());
        assert!(check_event_types(&["transfer.completed".into(), "transfer.completed".into()]).is_err());
        assert!(check_event_types(&["transfer.done".into()]).is_err());
    }
}
