//! Redis: a cache of balances and a fast, versioned view of transfer status.
//!
//! Never the truth: every value here can be rebuilt from PostgreSQL, every
//! write only moves a version forward (a late or replayed update can never
//! overwrite a newer one), and when Redis is away callers carry on without it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;
use tracing::warn;

use crate::domain::{Currency, OwnerId, TransferId};
use crate::ledger::AccountView;

/// Redis answers in well under a millisecond; past this it is treated as away.
const REDIS_RESPONSE_TIMEOUT_MS: u64 = 250;
const REDIS_CONNECT_TIMEOUT_MS: u64 = 250;
/// While Redis is away, try to reconnect at most this often (not on every request).
const REDIS_RECONNECT_INTERVAL_MS: u64 = 1_000;

/// Sets `body` under `version` only if the stored version is lower (or absent).
/// KEYS[1] key; ARGV[1] version, ARGV[2] body, ARGV[3] ttl seconds. Returns 1 if written.
const SET_IF_NEWER: &str = r"
local current = redis.call('HGET', KEYS[1], 'version')
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'body', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1";

/// Claims a transfer id at submission (version 1, unpublished), or returns
/// what is already there as {body, published, version}.
/// KEYS[1] key; ARGV[1] body, ARGV[2] ttl seconds.
const CLAIM: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HMGET', KEYS[1], 'body', 'published', 'version')
end
redis.call('HSET', KEYS[1], 'version', 1, 'body', ARGV[1], 'published', 0)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return false";

/// Marks a claim as acknowledged by the broker, if the key still exists (a
/// plain HSET would resurrect an expired key without its body or TTL). KEYS[1] key.
const MARK_PUBLISHED: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HSET', KEYS[1], 'published', 1)
end
return 0";

/// Releases a claim that was never published because the API refused the
/// submission before publishing, unless the processor has moved the transfer
/// on meanwhile. KEYS[1] key.
const RELEASE_UNPUBLISHED: &str = r"
if redis.call('HGET', KEYS[1], 'version') == '1' and redis.call('HGET', KEYS[1], 'published') == '0' then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Replaces a claim with the view PostgreSQL holds, unless a newer version is
/// stored, and marks it published (the ledger has the transfer, so Redis may
/// answer replays from it). Unlike `SET_IF_NEWER` an equal version overwrites:
/// the claim this request just made is version 1 and may carry another body.
/// KEYS[1] key; ARGV[1] version, ARGV[2] body, ARGV[3] ttl seconds. Returns 1 if written.
const REPLACE_CLAIM: &str = r"
local current = redis.call('HGET', KEYS[1], 'version')
if current and tonumber(current) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'body', ARGV[2], 'published', 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1";

#[derive(Clone, Debug, thiserror::Error)]
#[error("Redis is unavailable: {0}")]
pub struct CacheError(String);

impl From<redis::RedisError> for CacheError {
    fn from(e: redis::RedisError) -> Self {
        Self(e.to_string())
    }
}

/// A balance as cached: enough for the API's advisory pre-check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedBalance {
    pub account_id: i64,
    pub balance_minor: i64,
    pub floor_minor: i64,
    pub version: i64,
}

impl From<&AccountView> for CachedBalance {
    fn from(a: &AccountView) -> Self {
        Self { account_id: a.account_id, balance_minor: a.balance_minor, floor_minor: a.floor_minor, version: a.version }
    }
}

/// What a claim found when the id was already claimed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingClaim {
    pub body: String,
    pub published: bool,
    pub version: i64,
}

/// What `claim_with_balances` read in its one round trip. Each part is what
/// `claim` and `balances` would have answered on their own, error included.
#[derive(Debug)]
pub struct ClaimWithBalances {
    pub claim: Result<Option<ExistingClaim>, CacheError>,
    /// One per key asked for, in the same order.
    pub balances: Result<Vec<Option<CachedBalance>>, CacheError>,
}

/// The claim script's answer: `nil` for a new claim, else {body, published, version}.
type ClaimReply = Option<(Option<String>, Option<i64>, Option<i64>)>;
/// A cached balance's `HMGET version body`.
type BalanceReply = (Option<i64>, Option<String>);

#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    /// The live connection, or `None` while Redis is away. A `ConnectionManager`
    /// reconnects by itself once made; this only covers Redis being down at start.
    connection: Mutex<Option<ConnectionManager>>,
    /// When the last connection attempt was made, to pace reconnects.
    last_attempt: std::sync::Mutex<Option<Instant>>,
    balance_ttl_s: u64,
    status_ttl_s: u64,
    /// Prepended to every key, so engines (or tests) sharing one Redis keep apart.
    key_prefix: String,
}

impl Cache {
    pub fn new(url: &str, key_prefix: &str, balance_ttl_s: u64, status_ttl_s: u64) -> Result<Self, CacheError> {
        let client = redis::Client::open(url)?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                connection: Mutex::new(None),
                last_attempt: std::sync::Mutex::new(None),
                balance_ttl_s,
                status_ttl_s,
                key_prefix: key_prefix.to_owned(),
            }),
        })
    }

    /// The cache an engine with these settings uses (same URL, prefix and TTLs).
    pub fn from_settings(settings: &crate::config::Settings) -> Result<Self, CacheError> {
        Self::new(settings.redis_url.expose(), &settings.redis_key_prefix, settings.balance_cache_ttl_s, settings.status_cache_ttl_s)
    }

    pub fn balance_key(&self, owner: OwnerId, currency: Currency) -> String {
        format!("{}balance:{owner}:{currency}", self.inner.key_prefix)
    }

    pub fn transfer_key(&self, id: TransferId) -> String {
        format!("{}transfer:{id}", self.inner.key_prefix)
    }

    async fn connection(&self) -> Result<ConnectionManager, CacheError> {
        let mut slot = self.inner.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        {
            let mut last = self.inner.last_attempt.lock().expect("not poisoned");
            if last.is_some_and(|at| at.elapsed() < Duration::from_millis(REDIS_RECONNECT_INTERVAL_MS)) {
                return Err(CacheError("not connected; waiting before the next attempt".into()));
            }
            *last = Some(Instant::now());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_millis(REDIS_CONNECT_TIMEOUT_MS))
            .set_response_timeout(Duration::from_millis(REDIS_RESPONSE_TIMEOUT_MS))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_with_config(self.inner.client.clone(), config).await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    pub async fn ping(&self) -> Result<(), CacheError> {
        let mut c = self.connection().await?;
        redis::cmd("PING").query_async::<String>(&mut c).await?;
        Ok(())
    }

    /// Reads cached balances; `None` for each key not cached.
    pub async fn balances(&self, keys: &[(OwnerId, Currency)]) -> Result<Vec<Option<CachedBalance>>, CacheError> {
        let mut c = self.connection().await?;
        let mut pipe = redis::pipe();
        for &(owner, currency) in keys {
            pipe.add_command(self.balance_command(owner, currency));
        }
        let rows: Vec<BalanceReply> = pipe.query_async(&mut c).await?;
        Ok(rows.into_iter().map(cached_balance).collect())
    }

    fn balance_command(&self, owner: OwnerId, currency: Currency) -> redis::Cmd {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.balance_key(owner, currency)).arg("version").arg("body");
        cmd
    }

    /// Stores balances, each only if newer than what is cached.
    pub async fn put_balances(&self, entries: &[(OwnerId, Currency, CachedBalance)]) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut c = self.connection().await?;
        let mut pipe = redis::pipe();
        for (owner, currency, b) in entries {
            let body = format!("{}:{}:{}", b.balance_minor, b.floor_minor, b.account_id);
            set_if_newer(&mut pipe, &self.balance_key(*owner, *currency), b.version, &body, self.inner.balance_ttl_s);
        }
        pipe.query_async::<()>(&mut c).await?;
        Ok(())
    }

    /// Stores accounts' balances as the ledger has them, each only if newer.
    pub async fn put_accounts(&self, accounts: &[AccountView]) -> Result<(), CacheError> {
        let entries: Vec<_> = accounts.iter().map(|a| (a.owner_id, a.currency, CachedBalance::from(a))).collect();
        self.put_balances(&entries).await
    }

    /// Stores transfer status views (JSON bodies), each only if its version is newer.
    pub async fn put_statuses(&self, entries: &[(TransferId, i64, String)]) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut c = self.connection().await?;
        let mut pipe = redis::pipe();
        for (id, version, body) in entries {
            set_if_newer(&mut pipe, &self.transfer_key(*id), *version, body, self.inner.status_ttl_s);
        }
        pipe.query_async::<()>(&mut c).await?;
        Ok(())
    }

    /// The status view of a transfer, with its version, if cached.
    pub async fn status(&self, id: TransferId) -> Result<Option<(i64, String)>, CacheError> {
        let mut c = self.connection().await?;
        let (version, body): (Option<i64>, Option<String>) =
            redis::cmd("HMGET").arg(self.transfer_key(id)).arg("version").arg("body").query_async(&mut c).await?;
        Ok(version.zip(body))
    }

    /// Claims `id` for a new submission, or returns the existing claim.
    pub async fn claim(&self, id: TransferId, body: &str) -> Result<Option<ExistingClaim>, CacheError> {
        let mut c = self.connection().await?;
        let found: ClaimReply = self.claim_command(id, body).query_async(&mut c).await?;
        Ok(existing_claim(found))
    }

    /// `claim`, and `balances` of `keys`, in one round trip to Redis: a
    /// pipeline of the claim script and one HMGET per key (EVAL, not EVALSHA:
    /// see `set_if_newer`). Redis runs the commands in this order but not as
    /// one transaction; the balances are advisory, so nothing needs them
    /// read at the instant of the claim.
    ///
    /// Each part of the answer is what its own call would have answered:
    /// - No connection, an I/O error or no answer within
    ///   `REDIS_RESPONSE_TIMEOUT_MS`: both parts get that error (as two calls
    ///   would while Redis is away), after one wait instead of two.
    /// - Redis answered a command with an error (`OOM` refuses the claim's
    ///   write but not the reads; `WRONGTYPE`): redis-rs fails the whole
    ///   pipeline on the first error reply, so both parts are asked again,
    ///   one call each, and each gets its own answer. Two more round trips,
    ///   only in that case.
    /// - An answer of an unexpected shape fails only its own part.
    pub async fn claim_with_balances(&self, id: TransferId, body: &str, keys: &[(OwnerId, Currency)]) -> ClaimWithBalances {
        let mut c = match self.connection().await {
            Ok(c) => c,
            Err(e) => return ClaimWithBalances { claim: Err(e.clone()), balances: Err(e) },
        };
        let mut pipe = redis::pipe();
        pipe.add_command(self.claim_command(id, body));
        for &(owner, currency) in keys {
            pipe.add_command(self.balance_command(owner, currency));
        }
        match pipe.query_async::<Vec<redis::Value>>(&mut c).await {
            Ok(replies) => read_claim_with_balances(&replies, keys.len()),
            // An error code means Redis itself answered with an error reply.
            Err(e) if e.code().is_some() => ClaimWithBalances { claim: self.claim(id, body).await, balances: self.balances(keys).await },
            Err(e) => {
                let e = CacheError::from(e);
                ClaimWithBalances { claim: Err(e.clone()), balances: Err(e) }
            }
        }
    }

    fn claim_command(&self, id: TransferId, body: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CLAIM).arg(1).arg(self.transfer_key(id)).arg(body).arg(self.inner.status_ttl_s);
        cmd
    }

    pub async fn mark_published(&self, id: TransferId) -> Result<(), CacheError> {
        let mut c = self.connection().await?;
        redis::cmd("EVAL").arg(MARK_PUBLISHED).arg(1).arg(self.transfer_key(id)).query_async::<()>(&mut c).await?;
        Ok(())
    }

    /// Releases a claim that nothing was published under (see `RELEASE_UNPUBLISHED`).
    pub async fn release_unpublished(&self, id: TransferId) -> Result<(), CacheError> {
        let mut c = self.connection().await?;
        redis::cmd("EVAL").arg(RELEASE_UNPUBLISHED).arg(1).arg(self.transfer_key(id)).query_async::<()>(&mut c).await?;
        Ok(())
    }

    /// Overwrites the claim on `id` with the view PostgreSQL holds (see `REPLACE_CLAIM`).
    pub async fn replace_claim(&self, id: TransferId, version: i64, body: &str) -> Result<(), CacheError> {
        let mut c = self.connection().await?;
        redis::cmd("EVAL")
            .arg(REPLACE_CLAIM)
            .arg(1)
            .arg(self.transfer_key(id))
            .arg(version)
            .arg(body)
            .arg(self.inner.status_ttl_s)
            .query_async::<()>(&mut c)
            .await?;
        Ok(())
    }
}

/// Keys read per SCAN step and per version pipeline while auditing.
const AUDIT_SCAN_COUNT: usize = 1_000;

/// Which cached views to list for the audit.
#[derive(Clone, Copy, Debug)]
pub enum CachedKind {
    Transfer,
    Balance,
}

impl Cache {
    /// Every cached view of `kind` under this engine's prefix, as (key suffix,
    /// version, body). For the audit only: it walks the whole keyspace with SCAN
    /// (never KEYS, which would block Redis).
    pub async fn cached_versions(&self, kind: CachedKind) -> Result<Vec<(String, i64, String)>, CacheError> {
        let mut c = self.connection().await?;
        let prefix = match kind {
            CachedKind::Transfer => format!("{}transfer:", self.inner.key_prefix),
            CachedKind::Balance => format!("{}balance:", self.inner.key_prefix),
        };
        let mut found = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(AUDIT_SCAN_COUNT)
                .query_async(&mut c)
                .await?;
            if !keys.is_empty() {
                let mut pipe = redis::pipe();
                for key in &keys {
                    pipe.cmd("HMGET").arg(key).arg("version").arg("body");
                }
                let rows: Vec<(Option<i64>, Option<String>)> = pipe.query_async(&mut c).await?;
                for (key, (version, body)) in keys.into_iter().zip(rows) {
                    // Expired between SCAN and HMGET: nothing to compare.
                    if let Some(version) = version {
                        found.push((key[prefix.len()..].to_owned(), version, body.unwrap_or_default()));
                    }
                }
            }
            if next == 0 {
                return Ok(found);
            }
            cursor = next;
        }
    }
}

fn set_if_newer(pipe: &mut redis::Pipeline, key: &str, version: i64, body: &str, ttl_s: u64) {
    // EVAL rather than EVALSHA: the script is tiny, Redis caches it by hash, and
    // a pipeline cannot recover from NOSCRIPT after a Redis restart.
    pipe.cmd("EVAL").arg(SET_IF_NEWER).arg(1).arg(key).arg(version).arg(body).arg(ttl_s).ignore();
}

/// Reads the replies of `claim_with_balances`'s pipeline: the claim's first,
/// then one per balance key.
fn read_claim_with_balances(replies: &[redis::Value], keys_len: usize) -> ClaimWithBalances {
    let short = || CacheError(format!("a pipeline of {} commands got {} replies", keys_len + 1, replies.len()));
    let Some((claim, rows)) = replies.split_first().filter(|(_, rows)| rows.len() == keys_len) else {
        return ClaimWithBalances { claim: Err(short()), balances: Err(short()) };
    };
    let claim = redis::from_redis_value::<ClaimReply>(claim).map(existing_claim).map_err(CacheError::from);
    // All rows or none, as `balances` reads them.
    let balances = rows
        .iter()
        .map(|row| redis::from_redis_value::<BalanceReply>(row).map(cached_balance))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CacheError::from);
    ClaimWithBalances { claim, balances }
}

/// A key without a body is not a claim we made: treat it as absent.
fn existing_claim(found: ClaimReply) -> Option<ExistingClaim> {
    found.and_then(|(body, published, version)| {
        Some(ExistingClaim { body: body?, published: published.unwrap_or(0) == 1, version: version.unwrap_or(1) })
    })
}

/// A balance key's HMGET as a cached balance; `None` if absent or unreadable.
fn cached_balance((version, body): BalanceReply) -> Option<CachedBalance> {
    parse_balance(version?, &body?)
}

/// Reads a cached balance body, `balance:floor:account_id`.
pub fn parse_balance(version: i64, body: &str) -> Option<CachedBalance> {
    let mut parts = body.split(':').map(str::parse::<i64>);
    let parsed = (parts.next()?.ok()?, parts.next()?.ok()?, parts.next()?.ok()?);
    let (balance_minor, floor_minor, account_id) = parsed;
    Some(CachedBalance { account_id, balance_minor, floor_minor, version })
}

/// Logs a cache failure once per call site and moves on: the cache is optional.
pub fn warn_unavailable(e: &CacheError, what: &str) {
    warn!(error = %e, what, "Redis is unavailable; carrying on without the cache.");
}

#[cfg(test)]
mod tests {
    use redis::Value;

    use super::*;

    fn text(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn cached(version: &str, body: &str) -> Value {
        Value::Array(vec![text(version), text(body)])
    }

    const ABSENT: Value = Value::Nil;

    #[test]
    fn a_new_claim_is_read_beside_the_balances_in_key_order() {
        let uncached = Value::Array(vec![ABSENT, ABSENT]);
        let read = read_claim_with_balances(&[ABSENT, uncached, cached("3", "500:-100:11")], 2);
        assert_eq!(read.claim.unwrap(), None);
        let receiver = CachedBalance { account_id: 11, balance_minor: 500, floor_minor: -100, version: 3 };
        assert_eq!(read.balances.unwrap(), vec![None, Some(receiver)]);
    }

    #[test]
    fn an_existing_claim_is_read_as_the_claim_script_returns_it() {
        let existing = Value::Array(vec![text("{}"), text("1"), text("2")]);
        let read = read_claim_with_balances(&[existing, cached("1", "0:0:1"), cached("1", "0:0:2")], 2);
        assert_eq!(read.claim.unwrap(), Some(ExistingClaim { body: "{}".into(), published: true, version: 2 }));
    }

    #[test]
    fn an_unreadable_reply_fails_only_its_own_part() {
        let read = read_claim_with_balances(&[Value::Int(7), cached("1", "0:0:1"), cached("1", "0:0:2")], 2);
        assert!(read.claim.is_err());
        assert_eq!(read.balances.unwrap().len(), 2);

        let read = read_claim_with_balances(&[ABSENT, cached("1", "0:0:1"), cached("not a version", "0:0:2")], 2);
        assert_eq!(read.claim.unwrap(), None);
        assert!(read.balances.is_err(), "all rows or none, as `balances` reads them");
    }

    #[test]
    fn a_reply_missing_for_a_command_fails_both_parts() {
        let read = read_claim_with_balances(&[ABSENT, cached("1", "0:0:1")], 2);
        assert!(read.claim.is_err() && read.balances.is_err());
    }
}
