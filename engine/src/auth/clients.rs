//! API clients in PostgreSQL, and the in-memory cache of verified keys.
//!
//! Every request with a client key needs its client's stored hash, scopes
//! and owners. Reading them from PostgreSQL on every request would put a
//! query on the submit path, so each engine keeps what it read for
//! `ttl` (a second by default) and reads again after that. A revocation made
//! on any engine is therefore refused by every engine within `ttl` plus one
//! query; the engine that revoked forgets the client at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{ApiKey, ClientId, KeySecret, Principal, Scope, Scopes};
use crate::domain::OwnerId;
use crate::ledger::LedgerError;

/// Most clients the cache remembers (known or unknown ids); beyond it, stale entries go first.
const CACHE_ENTRIES_MAX: usize = 10_000;
/// Longest client name.
pub const CLIENT_NAME_CHARS_MAX: usize = 128;
/// Most owners one client may be bound to.
pub const CLIENT_OWNERS_MAX: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No such client, a revoked one, or the wrong secret: the caller learns nothing more.
    #[error("unknown or revoked API key")]
    Refused,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// A client as an operator sees it: never its key.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ClientInfo {
    #[schema(value_type = String, format = Uuid)]
    pub client_id: uuid::Uuid,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// The owner ids it may act for; absent: any owner.
    pub owners: Option<Vec<i64>>,
    pub created_at: DateTime<Utc>,
    /// When it was revoked; absent while its key works.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Why a client cannot be created as asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NewClientError {
    #[error("the name must have 1 to {CLIENT_NAME_CHARS_MAX} characters and no control characters")]
    Name,
    #[error("{0}")]
    Scopes(String),
    #[error("{0}")]
    Owners(String),
}

/// A client to create, checked: a name, at least one scope, and owners if bound.
#[derive(Clone, Debug)]
pub struct NewClient {
    name: String,
    scopes: Scopes,
    owners: Option<Vec<OwnerId>>,
}

impl NewClient {
    pub fn new(name: &str, scopes: &[String], owners: Option<&[i64]>) -> Result<Self, NewClientError> {
        let length = name.chars().count();
        if length == 0 || length > CLIENT_NAME_CHARS_MAX || name.chars().any(char::is_control) {
            return Err(NewClientError::Name);
        }
        if scopes.is_empty() {
            return Err(NewClientError::Scopes("give at least one scope".into()));
        }
        let mut parsed = Vec::with_capacity(scopes.len());
        for text in scopes {
            let scope = Scope::parse(text).ok_or_else(|| {
                let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                NewClientError::Scopes(format!("unknown scope {:?}; the scopes are {}", bounded(text), known.join(", ")))
            })?;
            if parsed.contains(&scope) {
                return Err(NewClientError::Scopes(format!("{} is listed more than once", scope.as_str())));
            }
            parsed.push(scope);
        }
        let owners = match owners {
            None => None,
            Some([]) => return Err(NewClientError::Owners("a bound client needs at least one owner; omit `owners` for any owner".into())),
            Some(ids) if ids.len() > CLIENT_OWNERS_MAX => {
                return Err(NewClientError::Owners(format!("at most {CLIENT_OWNERS_MAX} owners")));
            }
            Some(ids) => {
                let mut owners = ids
                    .iter()
                    .map(|&id| OwnerId::new(id).map_err(|e| NewClientError::Owners(e.to_string())))
                    .collect::<Result<Vec<_>, _>>()?;
                owners.sort_unstable();
                owners.dedup();
                Some(owners)
            }
        };
        Ok(Self { name: name.to_owned(), scopes: parsed.into_iter().collect(), owners })
    }
}

fn bounded(text: &str) -> String {
    const QUOTED_CHARS_MAX: usize = 64;
    text.chars().take(QUOTED_CHARS_MAX).collect()
}

/// A client as read for authentication.
struct Verified {
    secret_sha256: Vec<u8>,
    revoked: bool,
    principal: Principal,
}

struct CacheEntry {
    /// `None`: no client has this id (so garbage ids do not each cost a query).
    client: Option<Arc<Verified>>,
    read_at: Instant,
}

/// The API clients. Cheap to share behind an `Arc`.
pub struct ClientStore {
    pool: PgPool,
    /// How long a client read from PostgreSQL is trusted before it is read again.
    ttl: Duration,
    cache: Mutex<HashMap<ClientId, CacheEntry>>,
}

/// (client_id, name, scopes, owners, created_at, revoked_at)
type ClientRow = (uuid::Uuid, String, Vec<String>, Option<Vec<i64>>, DateTime<Utc>, Option<DateTime<Utc>>);
/// (secret_sha256, scopes, owners, revoked)
type VerifyRow = (Vec<u8>, Vec<String>, Option<Vec<i64>>, bool);

impl ClientStore {
    pub fn new(pool: PgPool, ttl: Duration) -> Self {
        Self { pool, ttl, cache: Mutex::new(HashMap::new()) }
    }

    /// The principal a presented key acts as.
    pub async fn authenticate(&self, key: &ApiKey) -> Result<Principal, AuthError> {
        let cached = {
            let cache = self.cache.lock().expect("not poisoned");
            cache.get(&key.client_id).filter(|e| e.read_at.elapsed() < self.ttl).map(|e| e.client.clone())
        };
        let client = match cached {
            Some(client) => client,
            None => {
                let client = self.read(key.client_id).await?.map(Arc::new);
                self.remember(key.client_id, client.clone());
                client
            }
        };
        match client {
            Some(c) if !c.revoked && key.matches(&c.secret_sha256) => Ok(c.principal.clone()),
            _ => Err(AuthError::Refused),
        }
    }

    async fn read(&self, id: ClientId) -> Result<Option<Verified>, LedgerError> {
        let row: Option<VerifyRow> =
            sqlx::query_as("SELECT secret_sha256, scopes, owners, revoked_at IS NOT NULL FROM api_clients WHERE client_id = $1")
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?;
        let Some((secret_sha256, scopes, owners, revoked)) = row else { return Ok(None) };
        // Scopes this engine does not know (written by a newer one) grant nothing here.
        let scopes = scopes.iter().filter_map(|s| Scope::parse(s)).collect();
        let owners = owners.map(|ids| {
            let mut owners: Vec<OwnerId> = ids.into_iter().filter_map(|id| OwnerId::new(id).ok()).collect();
            owners.sort_unstable();
            owners.into()
        });
        Ok(Some(Verified { secret_sha256, revoked, principal: Principal { client_id: Some(id), scopes, owners } }))
    }

    fn remember(&self, id: ClientId, client: Option<Arc<Verified>>) {
        let mut cache = self.cache.lock().expect("not poisoned");
        if cache.len() >= CACHE_ENTRIES_MAX {
            cache.retain(|_, e| e.read_at.elapsed() < self.ttl);
            if cache.len() >= CACHE_ENTRIES_MAX {
                cache.clear();
            }
        }
        cache.insert(id, CacheEntry { client, read_at: Instant::now() });
    }

    /// Creates a client; the returned key is the only copy there will ever be.
    pub async fn create(&self, new: &NewClient) -> Result<(ClientInfo, String), LedgerError> {
        let id = ClientId::generate();
        let secret = KeySecret::generate(id).map_err(|e| LedgerError::Corrupt(format!("no randomness for a key: {e}")))?;
        let scopes: Vec<&str> = new.scopes.iter().map(Scope::as_str).collect();
        let owners: Option<Vec<i64>> = new.owners.as_ref().map(|o| o.iter().map(|id| id.get()).collect());
        let row: ClientRow = sqlx::query_as(
            "INSERT INTO api_clients (client_id, name, secret_sha256, scopes, owners) VALUES ($1, $2, $3, $4, $5)
             RETURNING client_id, name, scopes, owners, created_at, revoked_at",
        )
        .bind(id.0)
        .bind(&new.name)
        .bind(secret.secret_sha256.as_slice())
        .bind(&scopes)
        .bind(&owners)
        .fetch_one(&self.pool)
        .await?;
        Ok((info(row), secret.key))
    }

    /// Every client, oldest first (revoked ones too, marked so).
    pub async fn list(&self) -> Result<Vec<ClientInfo>, LedgerError> {
        let rows: Vec<ClientRow> = sqlx::query_as(
            "SELECT client_id, name, scopes, owners, created_at, revoked_at FROM api_clients ORDER BY created_at, client_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(info).collect())
    }

    /// Revokes a client's key for good. `false` if no such client exists;
    /// revoking a revoked client changes nothing and answers `true`.
    pub async fn revoke(&self, id: ClientId) -> Result<bool, LedgerError> {
        let found = sqlx::query("UPDATE api_clients SET revoked_at = coalesce(revoked_at, now()) WHERE client_id = $1")
            .bind(id.0)
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0;
        self.cache.lock().expect("not poisoned").remove(&id);
        Ok(found)
    }
}

fn info((client_id, name, scopes, owners, created_at, revoked_at): ClientRow) -> ClientInfo {
    ClientInfo { client_id, name, scopes: scopes.iter().filter_map(|s| Scope::parse(s)).collect(), owners, created_at, revoked_at }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_new_client_needs_a_name_known_scopes_and_real_owners() {
        assert!(NewClient::new("shop", &scopes(&["transfers:write"]), Some(&[3, 1, 3])).is_ok());
        assert_eq!(NewClient::new("", &scopes(&["transfers:write"]), None).unwrap_err(), NewClientError::Name);
        assert_eq!(NewClient::new("a\nb", &scopes(&["transfers:write"]), None).unwrap_err(), NewClientError::Name);
        assert!(matches!(NewClient::new("shop", &[], None), Err(NewClientError::Scopes(_))));
        assert!(matches!(NewClient::new("shop", &scopes(&["admin"]), None), Err(NewClientError::Scopes(_))));
        let twice = scopes(&["accounts:read", "accounts:read"]);
        assert!(matches!(NewClient::new("shop", &twice, None), Err(NewClientError::Scopes(_))));
        assert!(matches!(NewClient::new("shop", &scopes(&["accounts:read"]), Some(&[])), Err(NewClientError::Owners(_))));
        assert!(matches!(NewClient::new("shop", &scopes(&["accounts:read"]), Some(&[0])), Err(NewClientError::Owners(_))));
    }

    #[test]
    fn bound_owners_are_kept_sorted_without_repeats() {
        let client = NewClient::new("shop", &scopes(&["accounts:read"]), Some(&[9, 2, 9])).unwrap();
        assert_eq!(client.owners.unwrap(), vec![OwnerId::new(2).unwrap(), OwnerId::new(9).unwrap()]);
    }
}
