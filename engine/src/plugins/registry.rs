//! Plugins in PostgreSQL: upload (checked and compiled before it is
//! accepted), activation by version (an earlier version is the rollback),
//! validation order, and the watcher that rebuilds the active set on every
//! change (LISTEN/NOTIFY, with a poll as fallback) and publishes it whole.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tracing::{info, warn};
use wasmtime::component::Component;

use super::bindings::WitVersion;
use super::compiled::{CompiledCache, INACTIVE_COMPONENTS_MAX};
use super::rollback::{FaultRate, Guard, RollbackSettings, Subject, Trip, Watch};
use super::set::{Canary, PluginSet};
use super::{LimitsRequest, LoadedPlugin, PluginError, PluginKind, PluginLimits, PluginMeta, RolloutRefusal, Sandbox, valid_name};
use crate::hooks::{ContextNeeds, Decision, HookSet, Role};
use crate::metrics::Metrics;

/// The NOTIFY channel every change is announced on.
const CHANNEL: &str = "transfer_engine_plugins";

/// A plugin version as listed (without its bytes).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PluginInfo {
    pub name: String,
    pub version: i32,
    pub kind: PluginKind,
    /// Hex sha256 of the component bytes.
    pub sha256: String,
    pub size_bytes: i64,
    /// The operator's JSON for this version.
    pub config: String,
    /// A validator in shadow mode: its rejections and faults are recorded, not enforced.
    pub advisory: bool,
    pub active: bool,
    /// Running in shadow beside the name's active version (`plugins shadow`).
    #[serde(default)]
    pub shadow: bool,
    /// Deciding in place of the active version for a share of senders (`plugins canary`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryInfo>,
    /// When this version last became active, if since canaries existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<DateTime<Utc>>,
    /// This version's latest automatic rollback, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<RollbackInfo>,
    /// Position among active validators (first runs first), if one.
    pub position: Option<i32>,
    pub uploaded_at: DateTime<Utc>,
    /// The interface version the component was built against.
    pub wit_version: WitVersion,
    /// What a 0.2 validator declared it needs; absent when nothing (then it
    /// validates before the batch's transaction, else in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<NeedsInfo>,
    /// This version's memory and fuel.
    pub limits: PluginLimits,
}

/// A running canary, as listed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CanaryInfo {
    /// Of senders, 1 to 99, chosen by a stable hash: the same ones for as long as it runs.
    pub percent: u8,
    /// Past this share of faulted calls over the sliding window, it is withdrawn.
    #[schema(value_type = String, example = "0.05")]
    pub max_fault_rate: FaultRate,
    pub started_at: DateTime<Utc>,
}

/// An automatic rollback of a version, as listed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RollbackInfo {
    pub at: DateTime<Utc>,
    /// `canary`: the canary stopped; `active`: `restored_version` became active again.
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_version: Option<i32>,
    /// Calls and faults over the window that decided it (on the engine that saw them).
    pub calls: i64,
    pub faults: i64,
    #[schema(value_type = String, example = "0.05")]
    pub max_fault_rate: FaultRate,
    pub window_seconds: i32,
}

/// A validator's declared context, as listed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct NeedsInfo {
    /// Both accounts' facts.
    pub accounts: bool,
    /// The sender's velocity windows, in seconds, in the order declared.
    pub velocity_windows_seconds: Vec<u32>,
}

impl NeedsInfo {
    fn of(needs: &ContextNeeds) -> Option<Self> {
        (!needs.is_empty())
            .then(|| Self { accounts: needs.accounts, velocity_windows_seconds: needs.windows.iter().map(|w| w.seconds()).collect() })
    }
}

/// How a version running in shadow compared with the active version, from
/// the decisions recorded with the transfers (`plugins report`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ShadowReport {
    pub name: String,
    pub version: i32,
    /// Transfers the version decided in shadow.
    pub evaluated: i64,
    /// Same outcome and code as the active version (and, for a describer or
    /// converter, the same text or amount).
    pub agreed: i64,
    /// Another outcome or code (a shadow fault is counted in `faults` instead).
    pub disagreed: i64,
    /// Calls that failed (fuel, memory, trap, nonsense): never enforced.
    pub faults: i64,
    /// Newest first, at most `SHADOW_DISAGREEMENTS_MAX`.
    pub disagreements: Vec<Disagreement>,
    /// Call durations of both versions over the same transfers.
    pub active_latency_us: Percentiles,
    pub candidate_latency_us: Percentiles,
}

/// One transfer the two versions decided differently.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Disagreement {
    pub transfer_id: String,
    /// The active version's outcome (allowed, rejected or failed): what took effect.
    pub active: String,
    /// The shadow's outcome; `rewritten differently` or `converted
    /// differently` when a describer or converter answered with another text
    /// or amount.
    pub candidate: String,
    /// The rejection code of whichever rejected (the shadow's if both did).
    pub code: Option<String>,
}

/// Nearest-rank percentiles of call durations in microseconds (absent with no calls).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Percentiles {
    pub p50: Option<i32>,
    pub p90: Option<i32>,
    pub p99: Option<i32>,
    pub max: Option<i32>,
}

#[derive(sqlx::FromRow)]
struct DisagreementRow {
    transfer_id: uuid::Uuid,
    active: Option<String>,
    candidate: Option<String>,
    code: Option<String>,
}

/// Disagreements a report lists; the counts cover them all.
pub const SHADOW_DISAGREEMENTS_MAX: i64 = 100;

/// (evaluated, agreed, disagreed, faults, active p50, p90, p99, max, candidate p50, p90, p99, max)
type ReportCounts =
    (i64, i64, i64, i64, Option<i32>, Option<i32>, Option<i32>, Option<i32>, Option<i32>, Option<i32>, Option<i32>, Option<i32>);

/// The shadow's and the active version's decisions of each transfer the
/// shadow decided, from its first start on ($1 name, $2 version).
const SHADOWED: &str = "
    WITH pairs AS (
        SELECT t.seq, t.transfer_id, c.candidate,
               (SELECT a FROM jsonb_array_elements(t.decisions) a
                 WHERE coalesce(a->>'role', 'active') = 'active' AND a->>'plugin' = $1 AND a->>'hook' = c.candidate->>'hook'
                 LIMIT 1) AS active
          FROM transfers t
         CROSS JOIN LATERAL (SELECT s AS candidate FROM jsonb_array_elements(t.decisions) s
                              WHERE s->>'role' = 'shadow' AND s->>'plugin' = $1 AND (s->>'version')::int = $2 LIMIT 1) c
         WHERE t.seq > (SELECT min(from_seq) FROM plugin_shadows WHERE name = $1 AND version = $2)
           AND t.decisions @> jsonb_build_array(jsonb_build_object('plugin', $1::text, 'version', $2::int, 'role', 'shadow'))
    ), judged AS (
        SELECT seq, transfer_id, active, candidate,
               candidate->>'outcome' = 'failed' AS fault,
               (candidate->>'outcome', candidate->>'code') IS NOT DISTINCT FROM (active->>'outcome', active->>'code')
                   AND NOT coalesce((candidate->>'differs')::boolean, false) AS agreed
          FROM pairs
    )";

pub struct Registry {
    pool: PgPool,
    sandbox: Arc<Sandbox>,
    description_chars_max: usize,
    /// Compiled components by sha256, bounded: the active set's plus a few
    /// recently used others (see `compiled`).
    compiled: Mutex<CompiledCache<Component>>,
    /// Loaded versions by (name, version): kept across reloads so a plugin
    /// that did not change is not linked again.
    loaded: Mutex<HashMap<(String, i32), Arc<LoadedPlugin>>>,
    /// The versions the last set built may withdraw, and their fault tallies.
    watches: Mutex<Vec<Watch>>,
    guard: Mutex<Guard>,
    rollback: RollbackSettings,
    /// The guard's monotonic clock starts here.
    started: Instant,
}

/// A version the active set holds: active, or running in shadow.
#[derive(sqlx::FromRow)]
struct SetRow {
    name: String,
    version: i32,
    kind: String,
    sha256: Vec<u8>,
    /// Empty when this process has the version loaded already.
    component: Vec<u8>,
    config: String,
    advisory: bool,
    limits: Option<sqlx::types::Json<PluginLimits>>,
    size_bytes: i64,
    active: bool,
    shadow: bool,
    canary_id: Option<i64>,
    canary_percent: Option<i16>,
    canary_fault_rate_ppm: Option<i32>,
    /// Set while the version is an active one still watched after its activation.
    activated_at: Option<DateTime<Utc>>,
    replaced_version: Option<i32>,
    watched_until: Option<DateTime<Utc>>,
}

/// A stored version as `list` shows it.
#[derive(sqlx::FromRow)]
struct ListRow {
    name: String,
    version: i32,
    kind: String,
    sha256: Vec<u8>,
    size_bytes: i64,
    config: String,
    advisory: bool,
    active: bool,
    shadow: bool,
    canary_percent: Option<i16>,
    canary_fault_rate_ppm: Option<i32>,
    canary_started_at: Option<DateTime<Utc>>,
    activated_at: Option<DateTime<Utc>>,
    rollback_at: Option<DateTime<Utc>>,
    rollback_role: Option<String>,
    restored_version: Option<i32>,
    rollback_calls: Option<i64>,
    rollback_faults: Option<i64>,
    rollback_fault_rate_ppm: Option<i32>,
    rollback_window_seconds: Option<i32>,
    position: Option<i32>,
    uploaded_at: DateTime<Utc>,
    wit_version: String,
    needs: Option<sqlx::types::Json<NeedsInfo>>,
    limits: Option<sqlx::types::Json<PluginLimits>>,
}

impl Registry {
    pub fn new(pool: PgPool, sandbox: Arc<Sandbox>, description_chars_max: usize, rollback: RollbackSettings) -> Self {
        let compiled = Mutex::new(CompiledCache::new(INACTIVE_COMPONENTS_MAX));
        Self {
            pool,
            sandbox,
            description_chars_max,
            compiled,
            loaded: Mutex::default(),
            watches: Mutex::default(),
            guard: Mutex::new(Guard::new(rollback)),
            rollback,
            started: Instant::now(),
        }
    }

    /// The sha256 of every component in the active set.
    fn active_components(&self) -> HashSet<[u8; 32]> {
        self.loaded.lock().expect("not poisoned").values().map(|p| p.meta.sha256).collect()
    }

    /// How many compiled components are cached (bounded by the active set plus `INACTIVE_COMPONENTS_MAX`).
    pub fn compiled_components(&self) -> usize {
        self.compiled.lock().expect("not poisoned").len()
    }

    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    fn compile(&self, sha256: [u8; 32], bytes: &[u8]) -> Result<Component, PluginError> {
        if let Some(c) = self.compiled.lock().expect("not poisoned").get(&sha256) {
            return Ok(c);
        }
        let component = self.sandbox.compile_keyed(Some(sha256), bytes)?;
        let active = self.active_components();
        self.compiled.lock().expect("not poisoned").insert(sha256, component.clone(), &active);
        Ok(component)
    }

    /// A stored version, compiled (or taken from the cache) and instantiated
    /// once with its configuration. A row that says advisory for a
    /// non-validator cannot come from an upload; `with_advisory` refuses it
    /// rather than let a describer or converter be skipped.
    fn load(&self, meta: PluginMeta, bytes: &[u8], advisory: bool) -> Result<Arc<LoadedPlugin>, PluginError> {
        let component = self.compile(meta.sha256, bytes)?;
        Ok(Arc::new(LoadedPlugin::new(self.sandbox.clone(), meta, &component)?.with_advisory(advisory)?))
    }

    /// A stored version's limits: as fixed at its upload, or for a version
    /// of the previous release (none stored), the defaults for its size.
    fn stored_limits(&self, limits: Option<sqlx::types::Json<PluginLimits>>, size_bytes: i64) -> PluginLimits {
        limits.map(|l| l.0).unwrap_or_else(|| self.sandbox.limits.defaults_for(usize::try_from(size_bytes).unwrap_or(usize::MAX)))
    }

    /// Checks, compiles and stores a new version of `name` (inactive). `kind`
    /// is detected from the component's exports when not given. `advisory`
    /// (validators only) stores it in shadow mode. `limits` overrides the
    /// defaults for the component's size.
    pub async fn upload(
        self: &Arc<Self>,
        name: &str,
        kind: Option<PluginKind>,
        config: String,
        bytes: Vec<u8>,
        advisory: bool,
        limits: LimitsRequest,
    ) -> Result<PluginInfo, PluginError> {
        if !valid_name(name) {
            return Err(PluginError::BadName);
        }
        let limits = self.sandbox.limits.resolve(bytes.len(), limits)?;
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        let this = self.clone();
        let checked_name = name.to_owned();
        let (kind, bytes, config, wit_version, needs) = tokio::task::spawn_blocking(move || -> Result<_, PluginError> {
            let component = this.compile(sha256, &bytes)?;
            let kind = match kind {
                Some(kind) => kind,
                None => this
                    .sandbox
                    .detect_kind(&component)
                    .ok_or_else(|| PluginError::Invalid("exports none of the validator, converter or describer worlds".into()))?,
            };
            // Version 0: the upload check, before a version is assigned.
            let meta = PluginMeta { name: checked_name, version: 0, kind, sha256, config: config.clone(), limits };
            let plugin = LoadedPlugin::new(this.sandbox.clone(), meta, &component)?.with_advisory(advisory)?;
            plugin.check()?;
            Ok((kind, bytes, config, plugin.wit_version(), NeedsInfo::of(&plugin.needs)))
        })
        .await
        .map_err(|e| PluginError::Sandbox(e.to_string()))??;
        let mut tx = self.pool.begin().await?;
        // Serialise uploads of one name so versions rise by exactly one.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('plugin:' || $1))").bind(name).execute(&mut *tx).await?;
        let (version,): (i32,) =
            sqlx::query_as("SELECT coalesce(max(version), 0) + 1 FROM plugins WHERE name = $1").bind(name).fetch_one(&mut *tx).await?;
        let (uploaded_at,): (DateTime<Utc>,) = sqlx::query_as(
            "INSERT INTO plugins (name, version, kind, sha256, component, config, advisory, wit_version, needs, limits)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             RETURNING uploaded_at",
        )
        .bind(name)
        .bind(version)
        .bind(kind.as_str())
        .bind(&sha256[..])
        .bind(&bytes)
        .bind(&config)
        .bind(advisory)
        .bind(wit_version.as_str())
        .bind(needs.clone().map(sqlx::types::Json))
        .bind(sqlx::types::Json(limits))
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        info!(plugin = name, version, kind = %kind, advisory, "Plugin uploaded.");
        Ok(PluginInfo {
            name: name.to_owned(),
            version,
            kind,
            sha256: hex::encode(sha256),
            size_bytes: bytes.len() as i64,
            config,
            advisory,
            active: false,
            shadow: false,
            canary: None,
            activated_at: None,
            rolled_back: None,
            position: None,
            uploaded_at,
            wit_version,
            needs,
            limits,
        })
    }

    pub async fn list(&self) -> Result<Vec<PluginInfo>, PluginError> {
        let rows: Vec<ListRow> = sqlx::query_as(
            "SELECT p.name, p.version, p.kind, p.sha256, length(p.component)::bigint AS size_bytes, p.config, p.advisory, p.active,
                    s.name IS NOT NULL AS shadow,
                    c.percent AS canary_percent, c.max_fault_rate_ppm AS canary_fault_rate_ppm, c.started_at AS canary_started_at,
                    CASE WHEN p.active THEN p.activated_at END AS activated_at,
                    r.at AS rollback_at, r.role AS rollback_role, r.restored_version, r.calls AS rollback_calls,
                    r.faults AS rollback_faults, r.max_fault_rate_ppm AS rollback_fault_rate_ppm, r.window_seconds AS rollback_window_seconds,
                    CASE WHEN p.active THEN o.position END AS position, p.uploaded_at, p.wit_version, p.needs, p.limits
               FROM plugins p LEFT JOIN validation_order o USING (name)
                    LEFT JOIN plugin_shadows s ON s.name = p.name AND s.version = p.version AND s.stopped_at IS NULL
                    LEFT JOIN plugin_canaries c ON c.name = p.name AND c.version = p.version AND c.stopped_at IS NULL
                    LEFT JOIN LATERAL (SELECT * FROM plugin_rollbacks r WHERE r.name = p.name AND r.version = p.version
                                        ORDER BY r.at DESC LIMIT 1) r ON true
              ORDER BY p.name, p.version",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                Some(PluginInfo {
                    kind: PluginKind::parse(&row.kind)?,
                    sha256: hex::encode(row.sha256),
                    wit_version: match row.wit_version.as_str() {
                        "0.2.0" => WitVersion::V0_2,
                        _ => WitVersion::V0_1,
                    },
                    needs: row.needs.map(|n| n.0),
                    limits: self.stored_limits(row.limits, row.size_bytes),
                    name: row.name,
                    version: row.version,
                    size_bytes: row.size_bytes,
                    config: row.config,
                    advisory: row.advisory,
                    active: row.active,
                    shadow: row.shadow,
                    canary: match (row.canary_percent, row.canary_fault_rate_ppm, row.canary_started_at) {
                        (Some(percent), Some(ppm), Some(started_at)) => {
                            Some(CanaryInfo { percent: u8::try_from(percent).ok()?, max_fault_rate: stored_rate(ppm)?, started_at })
                        }
                        _ => None,
                    },
                    activated_at: row.activated_at,
                    rolled_back: match (row.rollback_at, row.rollback_role, row.rollback_calls, row.rollback_faults) {
                        (Some(at), Some(role), Some(calls), Some(faults)) => Some(RollbackInfo {
                            at,
                            role,
                            restored_version: row.restored_version,
                            calls,
                            faults,
                            max_fault_rate: stored_rate(row.rollback_fault_rate_ppm?)?,
                            window_seconds: row.rollback_window_seconds?,
                        }),
                        _ => None,
                    },
                    position: row.position,
                    uploaded_at: row.uploaded_at,
                })
            })
            .collect())
    }

    /// Makes `version` the active version of `name` (an earlier one is a
    /// rollback). A version replacing an older one is watched for
    /// `plugin_rollback_recent_minutes`; a canary or shadow of it is promoted.
    /// With `replace`, a describer or converter takes the place of another
    /// one active under another name in the same transaction, so no batch
    /// runs with neither.
    pub async fn activate(&self, name: &str, version: i32, replace: bool) -> Result<(), PluginError> {
        let mut tx = self.pool.begin().await?;
        let kind = lock_and_kind(&mut tx, name, version).await?;
        if kind != PluginKind::Validator {
            // One describer and one converter at a time: two would need a rule to combine them.
            match other_active(&mut tx, kind, name).await? {
                Some(other) if replace => {
                    sqlx::query("UPDATE plugins SET active = false WHERE name = $1 AND active").bind(&other).execute(&mut *tx).await?;
                    stop_shadow(&mut tx, &other).await?;
                    info!(plugin = name, replaced = other, "Plugin replaces another of its kind.");
                }
                Some(other) => return Err(PluginError::KindAlreadyActive { kind, name: other }),
                None => {}
            }
        }
        let previous: Option<(i32,)> =
            sqlx::query_as("SELECT version FROM plugins WHERE name = $1 AND active").bind(name).fetch_optional(&mut *tx).await?;
        let previous = previous.map(|(v,)| v);
        // Only a newer version replacing an older one may be rolled back automatically:
        // activating an older one is an operator's rollback, never undone by the engine.
        let replaced = previous.filter(|p| *p < version);
        make_active(&mut tx, name, version, replaced).await?;
        // A shadow of another kind, or a canary beside a describer or converter, would never be asked.
        sqlx::query(
            "UPDATE plugin_shadows s SET stopped_at = now() FROM plugins p
              WHERE s.name = $1 AND s.stopped_at IS NULL AND p.name = s.name AND p.version = s.version AND p.kind <> $2",
        )
        .bind(name)
        .bind(kind.as_str())
        .execute(&mut *tx)
        .await?;
        if kind != PluginKind::Validator {
            stop_canary(&mut tx, name, "replaced").await?;
        }
        if kind == PluginKind::Validator {
            sqlx::query("INSERT INTO validation_order (name, position) SELECT $1, coalesce(max(position), 0) + 1 FROM validation_order ON CONFLICT (name) DO NOTHING")
                .bind(name)
                .execute(&mut *tx)
                .await?;
        }
        announce(&mut tx).await?;
        tx.commit().await?;
        info!(plugin = name, version, previous, "Plugin version activated.");
        Ok(())
    }

    /// No version of `name` active; a shadow or canary beside it stops too (it has nothing to be compared with).
    pub async fn deactivate(&self, name: &str) -> Result<(), PluginError> {
        let mut tx = self.pool.begin().await?;
        stop_shadow(&mut tx, name).await?;
        stop_canary(&mut tx, name, "deactivated").await?;
        let changed = sqlx::query("UPDATE plugins SET active = false WHERE name = $1 AND active").bind(name).execute(&mut *tx).await?;
        if changed.rows_affected() == 0 {
            ensure_name(&mut tx, name).await?;
        }
        announce(&mut tx).await?;
        tx.commit().await?;
        info!(plugin = name, "Plugin deactivated.");
        Ok(())
    }

    /// Runs `version` of `name` in shadow beside its active version, in place
    /// of any shadow running before: a version of the active version's kind
    /// (validator, describer or converter), never the active version itself.
    pub async fn shadow(&self, name: &str, version: i32) -> Result<(), PluginError> {
        let mut tx = self.pool.begin().await?;
        let active_version = lock_candidate(&mut tx, name, version, Role::Shadow).await?;
        stop_shadow(&mut tx, name).await?;
        sqlx::query("INSERT INTO plugin_shadows (name, version, from_seq) SELECT $1, $2, coalesce(max(seq), 0) FROM transfers")
            .bind(name)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        announce(&mut tx).await?;
        tx.commit().await?;
        info!(plugin = name, version, beside = active_version, "Plugin version shadowing.");
        Ok(())
    }

    /// Stops `name`'s shadow; stopping where none runs changes nothing.
    pub async fn unshadow(&self, name: &str) -> Result<(), PluginError> {
        let mut tx = self.pool.begin().await?;
        ensure_name(&mut tx, name).await?;
        stop_shadow(&mut tx, name).await?;
        announce(&mut tx).await?;
        tx.commit().await?;
        info!(plugin = name, "Plugin shadow stopped.");
        Ok(())
    }

    /// Makes `version` of `name` decide in place of the active version for
    /// `percent` of senders, in place of any canary running before; at 100 it
    /// becomes the active version. `max_fault_rate` (else the setting) is the
    /// share of faulted calls past which it is withdrawn automatically.
    pub async fn canary(&self, name: &str, version: i32, percent: i64, max_fault_rate: Option<FaultRate>) -> Result<(), PluginError> {
        let percent = match i16::try_from(percent) {
            Ok(100) => return self.activate(name, version, false).await,
            Ok(p @ 1..=99) => p,
            _ => return Err(PluginError::PercentInvalid(percent)),
        };
        let max_fault_rate = max_fault_rate.unwrap_or(self.rollback.fault_rate_max);
        let mut tx = self.pool.begin().await?;
        let active_version = lock_candidate(&mut tx, name, version, Role::Canary).await?;
        stop_canary(&mut tx, name, "replaced").await?;
        sqlx::query("INSERT INTO plugin_canaries (name, version, percent, max_fault_rate_ppm) VALUES ($1, $2, $3, $4)")
            .bind(name)
            .bind(version)
            .bind(percent)
            .bind(i32::try_from(max_fault_rate.ppm()).expect("at most a million"))
            .execute(&mut *tx)
            .await?;
        announce(&mut tx).await?;
        tx.commit().await?;
        info!(plugin = name, version, percent, max_fault_rate = %max_fault_rate, beside = active_version, "Plugin version canary started.");
        Ok(())
    }

    /// Withdraws `name`'s canary: the active version decides for every sender again.
    pub async fn uncanary(&self, name: &str) -> Result<(), PluginError> {
        let mut tx = self.pool.begin().await?;
        ensure_name(&mut tx, name).await?;
        stop_canary(&mut tx, name, "withdrawn").await?;
        announce(&mut tx).await?;
        tx.commit().await?;
        info!(plugin = name, "Plugin canary withdrawn.");
        Ok(())
    }

    /// Counts the decisions of a committed batch against the watched
    /// versions; returns those that have just passed their fault rate.
    pub fn observe_faults<'a>(&self, decisions: impl IntoIterator<Item = &'a Decision>) -> Vec<Trip> {
        let watches = self.watches.lock().expect("not poisoned");
        if watches.is_empty() {
            return Vec::new();
        }
        self.guard.lock().expect("not poisoned").observe(&watches, decisions, Utc::now(), self.started.elapsed().as_secs())
    }

    /// Withdraws the version a trip names, unless an operator (or another
    /// engine) changed it since: a canary stops, a recent activation gives
    /// way to the version it replaced. Returns whether it withdrew anything.
    pub async fn roll_back(&self, trip: &Trip) -> Result<bool, PluginError> {
        let Trip { watch: Watch { name, version, subject, fault_rate_max }, calls, faults, window } = trip;
        let mut tx = self.pool.begin().await?;
        sqlx::query("LOCK TABLE plugins IN SHARE ROW EXCLUSIVE MODE").execute(&mut *tx).await?;
        let (role, restored) = match subject {
            Subject::Canary { id } => {
                let stopped = sqlx::query(
                    "UPDATE plugin_canaries SET stopped_at = now(), stop_reason = 'rolled_back' WHERE id = $1 AND stopped_at IS NULL",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
                if stopped.rows_affected() == 0 {
                    return Ok(false);
                }
                ("canary", None)
            }
            Subject::Activation { activated_at, replaced_version, .. } => {
                let still: Option<(i32,)> =
                    sqlx::query_as("SELECT version FROM plugins WHERE name = $1 AND version = $2 AND active AND activated_at = $3")
                        .bind(name)
                        .bind(version)
                        .bind(activated_at)
                        .fetch_optional(&mut *tx)
                        .await?;
                if still.is_none() {
                    return Ok(false);
                }
                // A describer or converter restored beside another of its kind activated
                // meanwhile under another name would make two; the operator's change stands.
                let kind = lock_and_kind(&mut tx, name, *replaced_version).await?;
                if kind != PluginKind::Validator && other_active(&mut tx, kind, name).await?.is_some() {
                    return Ok(false);
                }
                // The restored version is not watched in turn: it was the policy before.
                make_active(&mut tx, name, *replaced_version, None).await?;
                ("active", Some(*replaced_version))
            }
        };
        sqlx::query(
            "INSERT INTO plugin_rollbacks (name, version, role, restored_version, calls, faults, max_fault_rate_ppm, window_seconds)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(name)
        .bind(version)
        .bind(role)
        .bind(restored)
        .bind(i64::try_from(*calls).unwrap_or(i64::MAX))
        .bind(i64::try_from(*faults).unwrap_or(i64::MAX))
        .bind(i32::try_from(fault_rate_max.ppm()).expect("at most a million"))
        .bind(i32::try_from(window.as_secs()).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await?;
        announce(&mut tx).await?;
        tx.commit().await?;
        warn!(plugin = %name, version, role, restored, calls, faults, max_fault_rate = %fault_rate_max, "Plugin version rolled back automatically.");
        Ok(true)
    }

    /// Lets a trip whose rollback failed trip again on a later batch.
    pub fn rearm(&self, trip: &Trip) {
        self.guard.lock().expect("not poisoned").rearm(&trip.watch);
    }

    /// How `version` of `name` has compared with the active version while in shadow.
    pub async fn report(&self, name: &str, version: i32) -> Result<ShadowReport, PluginError> {
        let exists: Option<(i32,)> = sqlx::query_as("SELECT version FROM plugins WHERE name = $1 AND version = $2")
            .bind(name)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?;
        if exists.is_none() {
            return Err(PluginError::NotFound(format!("{name} v{version}")));
        }
        let counts: ReportCounts = sqlx::query_as(&format!(
            "{SHADOWED}
             SELECT count(*), count(*) FILTER (WHERE NOT fault AND agreed), count(*) FILTER (WHERE NOT fault AND NOT agreed),
                    count(*) FILTER (WHERE fault),
                    percentile_disc(0.5) WITHIN GROUP (ORDER BY (active->>'duration_us')::int),
                    percentile_disc(0.9) WITHIN GROUP (ORDER BY (active->>'duration_us')::int),
                    percentile_disc(0.99) WITHIN GROUP (ORDER BY (active->>'duration_us')::int),
                    max((active->>'duration_us')::int),
                    percentile_disc(0.5) WITHIN GROUP (ORDER BY (candidate->>'duration_us')::int),
                    percentile_disc(0.9) WITHIN GROUP (ORDER BY (candidate->>'duration_us')::int),
                    percentile_disc(0.99) WITHIN GROUP (ORDER BY (candidate->>'duration_us')::int),
                    max((candidate->>'duration_us')::int)
               FROM judged"
        ))
        .bind(name)
        .bind(version)
        .fetch_one(&self.pool)
        .await?;
        let rows: Vec<DisagreementRow> = sqlx::query_as(&format!(
            "{SHADOWED}
             SELECT transfer_id, active->>'outcome' AS active,
                    candidate->>'outcome' || CASE WHEN (candidate->>'differs')::boolean THEN ' differently' ELSE '' END AS candidate,
                    coalesce(candidate->>'code', active->>'code') AS code
               FROM judged WHERE NOT fault AND NOT agreed ORDER BY seq DESC LIMIT $3"
        ))
        .bind(name)
        .bind(version)
        .bind(SHADOW_DISAGREEMENTS_MAX)
        .fetch_all(&self.pool)
        .await?;
        let (evaluated, agreed, disagreed, faults, a50, a90, a99, amax, c50, c90, c99, cmax) = counts;
        Ok(ShadowReport {
            name: name.to_owned(),
            version,
            evaluated,
            agreed,
            disagreed,
            faults,
            disagreements: rows
                .into_iter()
                .map(|row| Disagreement {
                    transfer_id: row.transfer_id.to_string(),
                    // The shadow is asked right after the active version, so both are recorded.
                    active: row.active.unwrap_or_default(),
                    candidate: row.candidate.unwrap_or_default(),
                    code: row.code,
                })
                .collect(),
            active_latency_us: Percentiles { p50: a50, p90: a90, p99: a99, max: amax },
            candidate_latency_us: Percentiles { p50: c50, p90: c90, p99: c99, max: cmax },
        })
    }

    /// A stored version, loaded and configured as an engine would run it
    /// (for `plugins replay`), without making it part of any set.
    pub async fn stored(self: &Arc<Self>, name: &str, version: i32) -> Result<Arc<LoadedPlugin>, PluginError> {
        #[derive(sqlx::FromRow)]
        struct Stored {
            kind: String,
            component: Vec<u8>,
            config: String,
            advisory: bool,
            limits: Option<sqlx::types::Json<PluginLimits>>,
        }
        let row: Option<Stored> =
            sqlx::query_as("SELECT kind, component, config, advisory, limits FROM plugins WHERE name = $1 AND version = $2")
                .bind(name)
                .bind(version)
                .fetch_optional(&self.pool)
                .await?;
        let Stored { kind, component: bytes, config, advisory, limits } =
            row.ok_or_else(|| PluginError::NotFound(format!("{name} v{version}")))?;
        let kind = PluginKind::parse(&kind).ok_or_else(|| PluginError::Invalid(format!("stored kind {kind:?}")))?;
        let limits = self.stored_limits(limits, i64::try_from(bytes.len()).unwrap_or(i64::MAX));
        let meta = PluginMeta { name: name.to_owned(), version, kind, sha256: Sha256::digest(&bytes).into(), config, limits };
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.load(meta, &bytes, advisory)).await.map_err(|e| PluginError::Sandbox(e.to_string()))?
    }

    /// Sets the order validators run in; names not listed keep running after the listed ones.
    pub async fn set_validation_order(&self, names: &[String]) -> Result<(), PluginError> {
        if let Some(bad) = names.iter().find(|n| !valid_name(n)) {
            return Err(PluginError::NotFound(bad.clone()));
        }
        let mut tx = self.pool.begin().await?;
        let existing: Vec<(String,)> =
            sqlx::query_as("SELECT DISTINCT name FROM plugins WHERE kind = 'validator'").fetch_all(&mut *tx).await?;
        if let Some(missing) = names.iter().find(|n| !existing.iter().any(|(e,)| e == *n)) {
            return Err(PluginError::NotFound(format!("validator {missing}")));
        }
        let listed: Vec<i32> = (1..=names.len() as i32).collect();
        sqlx::query(
            "INSERT INTO validation_order (name, position) SELECT * FROM UNNEST($1::text[], $2::int[])
             ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        )
        .bind(names)
        .bind(&listed)
        .execute(&mut *tx)
        .await?;
        // Unlisted validators go after the listed ones, keeping their relative order.
        sqlx::query(
            "UPDATE validation_order o SET position = $2 + r.rank FROM (
                 SELECT name, row_number() OVER (ORDER BY position, name)::int AS rank FROM validation_order WHERE NOT (name = ANY($1))
             ) r WHERE o.name = r.name",
        )
        .bind(names)
        .bind(names.len() as i32)
        .execute(&mut *tx)
        .await?;
        announce(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn generation(&self) -> Result<i64, PluginError> {
        let (generation,): (i64,) = sqlx::query_as("SELECT generation FROM plugin_generation").fetch_one(&self.pool).await?;
        Ok(generation)
    }

    /// Builds the active set from the database.
    pub async fn load_set(self: &Arc<Self>) -> Result<PluginSet, PluginError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut *tx).await?;
        let (generation,): (i64,) = sqlx::query_as("SELECT generation FROM plugin_generation").fetch_one(&mut *tx).await?;
        // Bytes are fetched only for versions not loaded yet.
        let known: Vec<String> = self.loaded.lock().expect("not poisoned").keys().map(|(n, v)| format!("{n}@{v}")).collect();
        let rows: Vec<SetRow> = sqlx::query_as(
            "SELECT p.name, p.version, p.kind, p.sha256,
                    CASE WHEN (p.name || '@' || p.version) = ANY($1) THEN ''::bytea ELSE p.component END AS component, p.config,
                    p.advisory, p.limits, length(p.component)::bigint AS size_bytes, p.active, s.name IS NOT NULL AS shadow,
                    c.id AS canary_id, c.percent AS canary_percent, c.max_fault_rate_ppm AS canary_fault_rate_ppm,
                    w.activated_at, w.replaced_version, w.watched_until
               FROM plugins p LEFT JOIN validation_order o USING (name)
                    LEFT JOIN plugin_shadows s ON s.name = p.name AND s.version = p.version AND s.stopped_at IS NULL
                    LEFT JOIN plugin_canaries c ON c.name = p.name AND c.version = p.version AND c.stopped_at IS NULL
                    LEFT JOIN LATERAL (
                        SELECT p.activated_at, p.replaced_version, p.activated_at + make_interval(secs => $2) AS watched_until
                         WHERE p.active AND p.replaced_version IS NOT NULL AND p.activated_at + make_interval(secs => $2) > now()
                    ) w ON true
              WHERE p.active OR s.name IS NOT NULL OR c.id IS NOT NULL
              ORDER BY o.position NULLS LAST, p.name, p.version",
        )
        .bind(&known)
        .bind(self.rollback.recent.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.build_set(generation, rows)).await.map_err(|e| PluginError::Sandbox(e.to_string()))?
    }

    fn build_set(&self, generation: i64, rows: Vec<SetRow>) -> Result<PluginSet, PluginError> {
        let mut set = PluginSet::empty(self.description_chars_max);
        set.generation = generation;
        let mut keep = HashMap::new();
        let mut watches = Vec::new();
        for row in rows {
            let SetRow { name, version, kind, sha256, component: bytes, config, advisory, limits, size_bytes, .. } = row;
            let kind = PluginKind::parse(&kind).ok_or_else(|| PluginError::Invalid(format!("stored kind {kind:?}")))?;
            let sha256: [u8; 32] = sha256.try_into().map_err(|_| PluginError::Invalid("stored sha256 is not 32 bytes".into()))?;
            let key = (name.clone(), version);
            let cached = self.loaded.lock().expect("not poisoned").get(&key).cloned();
            let plugin = match cached {
                Some(p) => p,
                None => {
                    let meta =
                        PluginMeta { name: name.clone(), version, kind, sha256, config, limits: self.stored_limits(limits, size_bytes) };
                    self.load(meta, &bytes, advisory)?
                }
            };
            keep.insert(key, plugin.clone());
            let watch = |subject, fault_rate_max| Watch { name: name.clone(), version, subject, fault_rate_max };
            // `canary` checks that only validators are canaries, and `shadow` that a shadow is of the
            // active version's kind, each beside an active version of the same name.
            if let (Some(id), Some(percent), Some(ppm)) = (row.canary_id, row.canary_percent, row.canary_fault_rate_ppm) {
                let percent = u8::try_from(percent).map_err(|_| PluginError::Invalid(format!("stored percent {percent}")))?;
                let fault_rate_max = stored_rate(ppm).ok_or_else(|| PluginError::Invalid(format!("stored fault rate {ppm}")))?;
                set.canaries.insert(name.clone(), Canary { plugin: plugin.clone(), percent });
                watches.push(watch(Subject::Canary { id }, fault_rate_max));
            }
            if row.shadow {
                match kind {
                    PluginKind::Validator => drop(set.shadows.insert(name.clone(), plugin.clone())),
                    PluginKind::Describer => set.describer_shadow = Some(plugin.clone()),
                    PluginKind::Converter => set.converter_shadow = Some(plugin.clone()),
                }
            }
            if row.active {
                if let (Some(activated_at), Some(replaced_version), Some(watched_until)) =
                    (row.activated_at, row.replaced_version, row.watched_until)
                {
                    watches
                        .push(watch(Subject::Activation { activated_at, replaced_version, watched_until }, self.rollback.fault_rate_max));
                }
                match kind {
                    PluginKind::Validator => set.validators.push(plugin),
                    PluginKind::Converter => set.converter = Some(plugin),
                    PluginKind::Describer => set.describer = Some(plugin),
                }
            }
        }
        *self.watches.lock().expect("not poisoned") = watches;
        // Forget versions no longer active, and compiled components beyond the bound.
        let active: HashSet<[u8; 32]> = keep.values().map(|p| p.meta.sha256).collect();
        *self.loaded.lock().expect("not poisoned") = keep;
        self.compiled.lock().expect("not poisoned").evict(&active);
        Ok(set)
    }

    /// Rebuilds and publishes the set whenever the generation changes: at once
    /// on NOTIFY, and at least every `poll` if a notification is missed.
    pub async fn watch(
        self: Arc<Self>,
        sets: watch::Sender<HookSet>,
        mut current: i64,
        poll: Duration,
        metrics: Arc<Metrics>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        metrics.plugin_generation.set(current);
        let mut listener = match PgListener::connect_with(&self.pool).await {
            Ok(mut l) => match l.listen(CHANNEL).await {
                Ok(()) => Some(l),
                Err(e) => {
                    warn!(error = %e, "LISTEN failed; relying on polling for plugin changes.");
                    None
                }
            },
            Err(e) => {
                warn!(error = %e, "LISTEN connection failed; relying on polling for plugin changes.");
                None
            }
        };
        loop {
            let notified = async {
                match listener.as_mut() {
                    Some(l) => {
                        let _ = l.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = notified => {}
                _ = tokio::time::sleep(poll) => {}
            }
            match self.generation().await {
                Ok(generation) if generation != current => match self.load_set().await {
                    Ok(set) => {
                        info!(generation = set.generation, validators = set.validators.len(), "Plugin set reloaded.");
                        current = set.generation;
                        sets.send_replace(Arc::new(set));
                        metrics.plugin_generation.set(current);
                    }
                    Err(e) => warn!(error = %e, "Plugin set could not be reloaded; keeping the current one."),
                },
                Ok(_) => {}
                Err(e) => warn!(error = %e, "Plugin generation could not be read."),
            }
        }
    }
}

/// Locks the plugins table against other changes of the set (uploads may go
/// on) and returns the kind of `name` at `version`, which must exist.
async fn lock_and_kind(tx: &mut sqlx::PgConnection, name: &str, version: i32) -> Result<PluginKind, PluginError> {
    sqlx::query("LOCK TABLE plugins IN SHARE ROW EXCLUSIVE MODE").execute(&mut *tx).await?;
    let kind: Option<(String,)> = sqlx::query_as("SELECT kind FROM plugins WHERE name = $1 AND version = $2")
        .bind(name)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?;
    kind.and_then(|(k,)| PluginKind::parse(&k)).ok_or_else(|| PluginError::NotFound(format!("{name} v{version}")))
}

/// Checks that `version` of `name` may run in `role` (shadow or canary) and
/// returns the active version: beside an active version of the same name, of
/// its kind (a canary: validators only), and never the active version
/// itself. Holds the same lock as `activate`, so the active version cannot
/// change under the checks.
async fn lock_candidate(tx: &mut sqlx::PgConnection, name: &str, version: i32, role: Role) -> Result<i32, PluginError> {
    let kind = lock_and_kind(tx, name, version).await?;
    let active: Option<(i32, String)> =
        sqlx::query_as("SELECT version, kind FROM plugins WHERE name = $1 AND active").bind(name).fetch_optional(&mut *tx).await?;
    let Some((active_version, active_kind)) = active else {
        let message = format!("{name} has no active version for v{version} to run beside; activate one first");
        return Err(PluginError::Rollout { refusal: RolloutRefusal::NotActive, message });
    };
    // A canary decides for some senders in the active version's place, which
    // only a validator's verdict can do per sender; a shadow is compared with
    // the active version, which takes the same kind.
    let fits = match role {
        Role::Canary => kind == PluginKind::Validator && active_kind == PluginKind::Validator.as_str(),
        _ => kind.as_str() == active_kind,
    };
    if !fits {
        let needed = if role == Role::Canary {
            "only a validator is a canary, beside an active validator"
        } else {
            "a shadow is of the active version's kind"
        };
        let message = format!("{needed}: {name} v{version} is a {kind}, v{active_version} a {active_kind}");
        return Err(PluginError::Rollout { refusal: RolloutRefusal::KindMismatch, message });
    }
    if active_version == version {
        let message = format!("{name} v{version} is the active version; choose another one");
        return Err(PluginError::Rollout { refusal: RolloutRefusal::VersionActive, message });
    }
    Ok(active_version)
}

/// The name of the describer or converter (`kind`) active under another name than `name`, if one is.
async fn other_active(tx: &mut sqlx::PgConnection, kind: PluginKind, name: &str) -> Result<Option<String>, sqlx::Error> {
    let other: Option<(String,)> = sqlx::query_as("SELECT name FROM plugins WHERE active AND kind = $1 AND name <> $2")
        .bind(kind.as_str())
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(other.map(|(name,)| name))
}

/// `NotFound` unless some version of `name` is stored.
async fn ensure_name(tx: &mut sqlx::PgConnection, name: &str) -> Result<(), PluginError> {
    let (exists,): (bool,) = sqlx::query_as("SELECT EXISTS (SELECT 1 FROM plugins WHERE name = $1)").bind(name).fetch_one(&mut *tx).await?;
    if exists { Ok(()) } else { Err(PluginError::NotFound(name.to_owned())) }
}

/// Makes `version` the only active version of `name`, noting the version it
/// replaced (for an automatic rollback; `None`: never rolled back). A shadow
/// or canary of that version is promoted: it stops running as one.
async fn make_active(tx: &mut sqlx::PgConnection, name: &str, version: i32, replaced: Option<i32>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE plugins SET active = false WHERE name = $1 AND active AND version <> $2")
        .bind(name)
        .bind(version)
        .execute(&mut *tx)
        .await?;
    // Activating the active version again changes nothing, its watch included.
    sqlx::query(
        "UPDATE plugins SET active = true, activated_at = now(), replaced_version = $3 WHERE name = $1 AND version = $2 AND NOT active",
    )
    .bind(name)
    .bind(version)
    .bind(replaced)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE plugin_shadows SET stopped_at = now() WHERE name = $1 AND version = $2 AND stopped_at IS NULL")
        .bind(name)
        .bind(version)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE plugin_canaries SET stopped_at = now(), stop_reason = 'promoted' WHERE name = $1 AND version = $2 AND stopped_at IS NULL",
    )
    .bind(name)
    .bind(version)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Stops `name`'s running canary, if one runs, saying why (its row stays).
async fn stop_canary(tx: &mut sqlx::PgConnection, name: &str, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE plugin_canaries SET stopped_at = now(), stop_reason = $2 WHERE name = $1 AND stopped_at IS NULL")
        .bind(name)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Stops `name`'s running shadow, if one runs (its row stays for `report`).
async fn stop_shadow(tx: &mut sqlx::PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE plugin_shadows SET stopped_at = now() WHERE name = $1 AND stopped_at IS NULL").bind(name).execute(&mut *tx).await?;
    Ok(())
}

/// A fault rate as stored (the migration's CHECK keeps it in range).
fn stored_rate(ppm: i32) -> Option<FaultRate> {
    u32::try_from(ppm).ok().and_then(FaultRate::from_ppm)
}

/// Bumps the generation and notifies every engine, inside the change's transaction.
async fn announce(tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE plugin_generation SET generation = generation + 1").execute(&mut *tx).await?;
    sqlx::query(&format!("NOTIFY {CHANNEL}")).execute(&mut *tx).await?;
    Ok(())
}
