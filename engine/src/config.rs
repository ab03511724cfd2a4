//! Typed, layered settings: defaults in code, then an optional TOML file,
//! then `TRANSFER_ENGINE_*` environment variables. Unknown keys are an error;
//! secrets never print.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::plugins::SandboxLimits;
use crate::plugins::rollback::{FaultRate, RollbackSettings};
use crate::plugins::settings::RemovedFailureMode;

/// A value that must never reach a log line: prints as `***`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Where the HTTP API listens. Port 0 picks a free port (tests).
    pub http_addr: SocketAddr,
    /// Where `/metrics` is served instead, when set (operators usually keep
    /// it off the API's address). Unset: `/metrics` is served on `http_addr`.
    pub metrics_addr: Option<SocketAddr>,
    pub database_url: Secret,
    pub redis_url: Secret,
    /// Prepended to every Redis key, for engines sharing one Redis.
    pub redis_key_prefix: String,
    /// Comma-separated `host:port` list of Kafka-protocol brokers.
    pub kafka_brokers: String,
    /// Transfers topic; its dead-letter topic is `<topic>.dlq`.
    pub topic: String,
    /// Partitions of the transfers topic when the engine creates it (the
    /// dead-letter topic always gets one). Unset: the cluster's default
    /// (`num.partitions`). Processors of one group share partitions, so this
    /// caps how many of them work at once.
    pub topic_partitions: Option<i32>,
    /// Replicas of each partition when the engine creates its topics. Unset:
    /// the cluster's default (`default.replication.factor`). A topic that
    /// exists already is never changed; the engine warns at start when it has
    /// a partition with one replica.
    pub topic_replication_factor: Option<i32>,
    pub consumer_group: String,
    /// How long the broker waits for a silent processor before handing its
    /// partitions to the others (a crashed one holds them this long).
    pub consumer_session_timeout_ms: u64,
    /// Bearer token for `/v1/admin/*` and deposits/withdrawals, also accepted
    /// wherever an API key is (with every scope, for any owner). Unset: only
    /// API keys are accepted, and admin endpoints answer 401. Set but empty or
    /// blank: a start-up error (an operator meant to set it).
    pub admin_token: Option<Secret>,
    /// How long an engine trusts an API client it read from PostgreSQL
    /// (scopes, owners, not revoked) before reading it again: a revocation
    /// takes effect on every engine within this plus one query.
    pub client_cache_ttl_ms: u64,
    pub database_connections_max: u32,
    /// The longest one SQL statement may run on an engine connection
    /// (PostgreSQL's `statement_timeout`); past it PostgreSQL cancels it.
    pub database_statement_timeout_ms: u64,
    /// The longest a statement may wait for a row or table lock
    /// (PostgreSQL's `lock_timeout`).
    pub database_lock_timeout_ms: u64,
    /// The longest the API works on one request before answering
    /// `503 request_timeout`. Longer than `publish_timeout_ms`, so a submit
    /// answers its own `503 broker_unavailable` first.
    pub http_request_timeout_ms: u64,
    /// API requests in progress at once; one more answers `503 overloaded`
    /// at once rather than queueing. Health, readiness and metrics are not counted.
    pub http_requests_concurrent_max: usize,
    /// Most records in one processor batch (one PostgreSQL transaction).
    pub batch_size_max: usize,
    /// How long the processor waits to fill a batch once it has one record.
    pub batch_wait_ms: u64,
    /// How long records may wait with no batch finished before `/readyz`
    /// reports the processor stalled (503) and `processor_healthy` turns 0.
    pub processor_stall_limit_ms: u64,
    /// How long a submit waits for the broker's acknowledgement before 503.
    pub publish_timeout_ms: u64,
    pub request_body_bytes_max: usize,
    pub description_chars_max: usize,
    pub balance_cache_ttl_s: u64,
    /// How long Redis keeps a transfer's status view (PostgreSQL keeps it forever).
    pub status_cache_ttl_s: u64,
    /// `text` for people, `json` for log pipelines.
    pub log_format: LogFormat,
    /// Fuel one plugin hook call may burn before it fails with `fuel_exhausted`:
    /// about one unit per WebAssembly instruction executed, so the limit is
    /// the same on a busy machine as on an idle one (it is not a time). The
    /// default for a compiled-language plugin (Rust, C); a Python or
    /// JavaScript one gets more, and an upload may set its own.
    pub plugin_call_fuel_max: u64,
    /// Fuel a plugin's instantiation and `configure` may burn (both run
    /// before every call: each call gets a fresh instance); the default, as above.
    pub plugin_configure_fuel_max: u64,
    /// Linear memory one plugin instance may grow to; the default, as above.
    pub plugin_memory_bytes_max: usize,
    /// The most linear memory any plugin may be given, by default (128 MiB
    /// for a Python or JavaScript component) or at upload: the pool's slot
    /// size. Reserves address space, not memory.
    pub plugin_slot_memory_bytes_max: usize,
    /// Plugin instances live at once (pooling allocator slots).
    pub plugin_instances_max: u32,
    /// Where compiled plugins are kept, so that a restarted engine loads its
    /// plugins without compiling them again (seconds each for a Python or
    /// JavaScript one). Unset: compiled at every start. The engine runs the
    /// files as code: it creates the directory with mode 0700 and refuses
    /// one its group or others may write.
    pub plugin_compiled_dir: Option<std::path::PathBuf>,
    /// Largest component an upload may carry (the body limit of the upload route).
    pub plugin_upload_bytes_max: usize,
    /// The longest an upload may take, compiling included (seconds for a
    /// Python or JavaScript component), before it answers `503 request_timeout`.
    pub plugin_upload_timeout_ms: u64,
    /// Removed (policy always fails closed): `closed` is accepted with a
    /// warning, `open` is refused at start-up (see `plugins::settings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_failure_mode: Option<RemovedFailureMode>,
    /// Removed (the limit is fuel, `plugin_call_fuel_max`): accepted and ignored with a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_call_ms_max: Option<u64>,
    /// Removed (the limit is fuel, `plugin_configure_fuel_max`): accepted and ignored with a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_configure_ms_max: Option<u64>,
    /// How often engines poll for plugin changes if a NOTIFY is missed.
    pub plugin_poll_ms: u64,
    /// The sliding window over which a canary's or a recently activated
    /// version's faults are counted, on each engine.
    pub plugin_rollback_window_s: u64,
    /// Calls in the window below which no fault rate is judged.
    pub plugin_rollback_calls_min: u64,
    /// Faults per million calls past which a recent activation is rolled
    /// back, and a canary started without `--max-fault-rate` withdrawn.
    pub plugin_rollback_fault_rate_max_ppm: u32,
    /// How long after its activation a version that replaced an older one
    /// is watched (0: never).
    pub plugin_rollback_recent_minutes: u64,
    /// Whether commits write their events to the outbox and processors
    /// relay them to `events_topic`. Turned off, the ledger records no
    /// events for the time it is off: none are published for it later.
    pub events_enabled: bool,
    /// Where events are published. Unset: `<topic>.events`.
    pub events_topic: Option<String>,
    /// How often a relay looks for events another engine's commits wrote
    /// (its own engine's commits wake it at once).
    pub events_poll_ms: u64,
    /// Outbox rows one claim of the relay takes (each holds one commit's events).
    pub events_claim_rows_max: i64,
    /// Claims a relay publishes at once, each holding a database connection
    /// while the broker acknowledges: rows committed during one claim go out
    /// in the next instead of waiting for it. At most half of
    /// `database_connections_max` (at least one) are used: commits need them too.
    pub events_claims_in_flight_max: u32,
    /// How long sent outbox rows are kept before they are deleted.
    pub events_retention_s: u64,
    /// The hosts webhooks may target, comma-separated: exact names, or
    /// `*.example.com` for a name's subdomains. Unset: any host. Checked when
    /// a webhook is created and again at every attempt.
    pub webhook_hosts_allowed: Option<String>,
    /// The time limit of one delivery attempt (connect, send, answer).
    pub webhook_timeout_ms: u64,
    /// The wait after a first failed attempt; it doubles per attempt up to the maximum.
    pub webhook_retry_backoff_ms_min: u64,
    pub webhook_retry_backoff_ms_max: u64,
    /// How long after an event (or a re-send) failed attempts are retried;
    /// then the delivery is marked failed.
    pub webhook_retry_window_s: u64,
    /// Delivery attempts one engine makes at once.
    pub webhook_deliveries_concurrent_max: usize,
    /// How often an engine looks for due deliveries (its relay wakes it at once for new ones).
    pub webhook_poll_ms: u64,
}

/// Settings that could not be read, or that make no sense.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Load(#[from] Box<figment::Error>),
    /// A value the engine refuses to start with; `setting` is its key in the
    /// file (the variable is `TRANSFER_ENGINE_` and the key in capitals).
    #[error("setting `{setting}` (TRANSFER_ENGINE_{}) {reason}", .setting.to_uppercase())]
    Invalid { setting: &'static str, reason: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_addr: None,
            database_url: Secret::new("postgres://transfer_engine@127.0.0.1:5432/transfer_engine"),
            redis_url: Secret::new("redis://127.0.0.1:6379/0"),
            redis_key_prefix: String::new(),
            kafka_brokers: "127.0.0.1:9092".into(),
            topic: "transfers".into(),
            topic_partitions: None,
            topic_replication_factor: None,
            consumer_group: "transfer-engine".into(),
            consumer_session_timeout_ms: 10_000,
            admin_token: None,
            client_cache_ttl_ms: 1_000,
            database_connections_max: 16,
            // A 500-transfer batch commits in tens of milliseconds; these cut
            // only a statement that is stuck, never a normal one.
            database_statement_timeout_ms: 30_000,
            database_lock_timeout_ms: 10_000,
            http_request_timeout_ms: 30_000,
            http_requests_concurrent_max: 1_024,
            batch_size_max: 500,
            batch_wait_ms: 5,
            processor_stall_limit_ms: 60_000,
            publish_timeout_ms: 5_000,
            request_body_bytes_max: 16 * 1024,
            description_chars_max: 280,
            balance_cache_ttl_s: 60,
            status_cache_ttl_s: 24 * 60 * 60,
            log_format: LogFormat::Text,
            plugin_call_fuel_max: SandboxLimits::default().call_fuel_max,
            plugin_configure_fuel_max: SandboxLimits::default().configure_fuel_max,
            plugin_memory_bytes_max: SandboxLimits::default().memory_bytes_max,
            plugin_slot_memory_bytes_max: SandboxLimits::default().slot_memory_bytes_max,
            plugin_instances_max: SandboxLimits::default().instances_max,
            plugin_compiled_dir: None,
            plugin_upload_bytes_max: 32 << 20,
            plugin_upload_timeout_ms: 300_000,
            plugin_failure_mode: None,
            plugin_call_ms_max: None,
            plugin_configure_ms_max: None,
            plugin_poll_ms: 1_000,
            plugin_rollback_window_s: RollbackSettings::default().window.as_secs(),
            plugin_rollback_calls_min: RollbackSettings::default().calls_min,
            plugin_rollback_fault_rate_max_ppm: RollbackSettings::default().fault_rate_max.ppm(),
            plugin_rollback_recent_minutes: RollbackSettings::default().recent.as_secs() / 60,
            events_enabled: true,
            events_topic: None,
            events_poll_ms: 100,
            // A commit of 500 transfers holds 1,000 events: 16 rows are at most 16,000 events in flight.
            events_claim_rows_max: 16,
            events_claims_in_flight_max: 3,
            events_retention_s: 3_600,
            webhook_hosts_allowed: None,
            webhook_timeout_ms: 10_000,
            webhook_retry_backoff_ms_min: 1_000,
            webhook_retry_backoff_ms_max: 3_600_000,
            webhook_retry_window_s: 86_400,
            webhook_deliveries_concurrent_max: 16,
            webhook_poll_ms: 500,
        }
    }
}

impl Settings {
    /// Defaults, then `file` (if given), then `TRANSFER_ENGINE_*` variables;
    /// the result is validated.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        // CONFIG_FILE and URL are read by the CLI itself (the file's path, the
        // engine to talk to), not settings of the engine.
        figment = figment.merge(Env::prefixed("TRANSFER_ENGINE_").ignore(&["config_file", "url"]));
        let settings: Self = figment.extract().map_err(Box::new)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Refuses values the engine cannot work with, or that silently turn a
    /// guarantee off (a zero TTL, a zero limit), naming the first such setting.
    pub fn validate(&self) -> Result<(), SettingsError> {
        // librdkafka's and PostgreSQL's millisecond settings are 32-bit signed.
        const MS_MAX: u64 = i32::MAX as u64;
        require(!self.kafka_brokers.trim().is_empty(), "kafka_brokers", "must name at least one `host:port`")?;
        require(
            valid_topic_name(&self.topic, 249 - ".dlq".len()),
            "topic",
            "must be 1 to 245 of the characters a-z, A-Z, 0-9, `.`, `_` and `-` (Kafka's rule, leaving room for `.dlq`)",
        )?;
        require(!self.consumer_group.trim().is_empty(), "consumer_group", "must not be empty")?;
        if let Some(partitions) = self.topic_partitions {
            require(partitions >= 1, "topic_partitions", "must be at least 1, or unset for the cluster's default")?;
        }
        if let Some(replicas) = self.topic_replication_factor {
            require(
                (1..=i32::from(i16::MAX)).contains(&replicas),
                "topic_replication_factor",
                "must be from 1 to 32767, or unset for the cluster's default",
            )?;
        }
        require((1..=MS_MAX).contains(&self.consumer_session_timeout_ms), "consumer_session_timeout_ms", "must be from 1 to 2147483647")?;
        if let Some(token) = &self.admin_token {
            let token = token.expose();
            require(!token.trim().is_empty(), "admin_token", "is set but empty or blank; unset it to turn admin access off")?;
            // A bearer token is read without surrounding whitespace, so such a token could never match.
            require(token.trim() == token, "admin_token", "must not begin or end with whitespace")?;
        }
        require(
            self.client_cache_ttl_ms >= 1,
            "client_cache_ttl_ms",
            "must be at least 1 (0 reads PostgreSQL on every request, even for unknown keys)",
        )?;
        require(self.database_connections_max >= 1, "database_connections_max", "must be at least 1")?;
        require(
            (1..=MS_MAX).contains(&self.database_statement_timeout_ms),
            "database_statement_timeout_ms",
            "must be from 1 to 2147483647 (PostgreSQL reads 0 as no limit)",
        )?;
        require(
            (1..=MS_MAX).contains(&self.database_lock_timeout_ms),
            "database_lock_timeout_ms",
            "must be from 1 to 2147483647 (PostgreSQL reads 0 as no limit)",
        )?;
        require(
            self.database_lock_timeout_ms <= self.database_statement_timeout_ms,
            "database_lock_timeout_ms",
            "must not exceed database_statement_timeout_ms (the statement would be cut first)",
        )?;
        require(
            (1..=MS_MAX).contains(&self.publish_timeout_ms),
            "publish_timeout_ms",
            "must be from 1 to 2147483647 (librdkafka reads 0 as no limit)",
        )?;
        require(
            self.http_request_timeout_ms > self.publish_timeout_ms,
            "http_request_timeout_ms",
            "must exceed publish_timeout_ms, so a submit answers its own 503 broker_unavailable before the request is cut",
        )?;
        require(
            (1..=tokio::sync::Semaphore::MAX_PERMITS).contains(&self.http_requests_concurrent_max),
            "http_requests_concurrent_max",
            "must be at least 1 (and within a semaphore's permits)",
        )?;
        require(self.batch_size_max >= 1, "batch_size_max", "must be at least 1")?;
        require(
            self.processor_stall_limit_ms > self.database_statement_timeout_ms,
            "processor_stall_limit_ms",
            "must exceed database_statement_timeout_ms (one slow commit is not a stall)",
        )?;
        require(self.request_body_bytes_max >= 1, "request_body_bytes_max", "must be at least 1")?;
        require(self.balance_cache_ttl_s >= 1, "balance_cache_ttl_s", "must be at least 1 (Redis refuses an expiry of 0)")?;
        require(
            self.status_cache_ttl_s >= 1,
            "status_cache_ttl_s",
            "must be at least 1 (0 turns idempotency off: a claim would expire at once)",
        )?;
        // Plugin limits: a zero here fails every transfer that meets a plugin.
        require(self.plugin_call_fuel_max >= 1, "plugin_call_fuel_max", "must be at least 1")?;
        require(self.plugin_configure_fuel_max >= 1, "plugin_configure_fuel_max", "must be at least 1")?;
        require(self.plugin_memory_bytes_max >= 1, "plugin_memory_bytes_max", "must be at least 1")?;
        require(
            self.plugin_slot_memory_bytes_max >= self.plugin_memory_bytes_max,
            "plugin_slot_memory_bytes_max",
            "must be at least plugin_memory_bytes_max",
        )?;
        // The sandbox's pool counts four core instances per slot in a u32.
        require((1..=u32::MAX / 4).contains(&self.plugin_instances_max), "plugin_instances_max", "must be from 1 to 1073741823")?;
        require(self.plugin_upload_bytes_max >= 1, "plugin_upload_bytes_max", "must be at least 1")?;
        require(self.plugin_upload_timeout_ms >= 1, "plugin_upload_timeout_ms", "must be at least 1")?;
        require(self.plugin_poll_ms >= 1, "plugin_poll_ms", "must be at least 1")?;
        require((1..=86_400).contains(&self.plugin_rollback_window_s), "plugin_rollback_window_s", "must be from 1 to 86400")?;
        require(self.plugin_rollback_calls_min >= 1, "plugin_rollback_calls_min", "must be at least 1 (no rollback on no evidence)")?;
        require(
            FaultRate::from_ppm(self.plugin_rollback_fault_rate_max_ppm).is_some(),
            "plugin_rollback_fault_rate_max_ppm",
            "must be from 0 to 1000000",
        )?;
        require(self.plugin_rollback_recent_minutes <= 7 * 24 * 60, "plugin_rollback_recent_minutes", "must be at most 10080 (a week)")?;
        require(
            !self.events_enabled || valid_topic_name(&self.events_topic(), 249),
            "events_topic",
            "must be 1 to 249 of the characters a-z, A-Z, 0-9, `.`, `_` and `-` (when unset, `<topic>.events` must be)",
        )?;
        require(
            self.events_topic() != self.topic && self.events_topic() != self.dlq_topic(),
            "events_topic",
            "must differ from the transfers and dead-letter topics",
        )?;
        require(self.events_poll_ms >= 1, "events_poll_ms", "must be at least 1")?;
        require((1..=1_000).contains(&self.events_claim_rows_max), "events_claim_rows_max", "must be from 1 to 1000")?;
        require((1..=16).contains(&self.events_claims_in_flight_max), "events_claims_in_flight_max", "must be from 1 to 16")?;
        require(self.events_retention_s >= 1, "events_retention_s", "must be at least 1")?;
        if let Some(hosts) = &self.webhook_hosts_allowed {
            crate::events::webhooks::HostAllowList::parse(hosts)
                .map_err(|reason| SettingsError::Invalid { setting: "webhook_hosts_allowed", reason })?;
        }
        require((1..=600_000).contains(&self.webhook_timeout_ms), "webhook_timeout_ms", "must be from 1 to 600000")?;
        require(self.webhook_retry_backoff_ms_min >= 1, "webhook_retry_backoff_ms_min", "must be at least 1")?;
        require(
            self.webhook_retry_backoff_ms_max >= self.webhook_retry_backoff_ms_min,
            "webhook_retry_backoff_ms_max",
            "must be at least webhook_retry_backoff_ms_min",
        )?;
        require((1..=30 * 86_400).contains(&self.webhook_retry_window_s), "webhook_retry_window_s", "must be from 1 to 2592000 (30 days)")?;
        require(
            (1..=1_024).contains(&self.webhook_deliveries_concurrent_max),
            "webhook_deliveries_concurrent_max",
            "must be from 1 to 1024",
        )?;
        require(self.webhook_poll_ms >= 1, "webhook_poll_ms", "must be at least 1")?;
        Ok(())
    }

    pub fn sandbox_limits(&self) -> SandboxLimits {
        SandboxLimits {
            call_fuel_max: self.plugin_call_fuel_max,
            configure_fuel_max: self.plugin_configure_fuel_max,
            memory_bytes_max: self.plugin_memory_bytes_max,
            slot_memory_bytes_max: self.plugin_slot_memory_bytes_max,
            instances_max: self.plugin_instances_max,
        }
    }

    pub fn rollback_settings(&self) -> RollbackSettings {
        RollbackSettings {
            window: Duration::from_secs(self.plugin_rollback_window_s),
            calls_min: self.plugin_rollback_calls_min,
            fault_rate_max: FaultRate::from_ppm(self.plugin_rollback_fault_rate_max_ppm)
                .unwrap_or(RollbackSettings::default().fault_rate_max),
            recent: Duration::from_secs(self.plugin_rollback_recent_minutes * 60),
        }
    }

    pub fn dlq_topic(&self) -> String {
        format!("{}.dlq", self.topic)
    }

    /// The hosts webhooks may target; `None`: any (`validate` has parsed it).
    pub fn webhook_allow_list(&self) -> Option<crate::events::webhooks::HostAllowList> {
        self.webhook_hosts_allowed.as_deref().and_then(|hosts| crate::events::webhooks::HostAllowList::parse(hosts).ok())
    }

    pub fn webhook_retry_policy(&self) -> crate::events::webhooks::dispatch::RetryPolicy {
        crate::events::webhooks::dispatch::RetryPolicy {
            min: Duration::from_millis(self.webhook_retry_backoff_ms_min),
            max: Duration::from_millis(self.webhook_retry_backoff_ms_max),
            window: Duration::from_secs(self.webhook_retry_window_s),
        }
    }

    /// Claims the relay publishes at once: `events_claims_in_flight_max`, but
    /// holding at most half of the database connections (at least one).
    pub fn events_claims_in_flight(&self) -> usize {
        self.events_claims_in_flight_max.min((self.database_connections_max / 2).max(1)) as usize
    }

    /// The events topic: `events_topic`, or `<topic>.events`.
    pub fn events_topic(&self) -> String {
        self.events_topic.clone().unwrap_or_else(|| format!("{}.events", self.topic))
    }

    /// The events topic, when events are on (the engine creates and publishes to it only then).
    pub fn events_topic_if_enabled(&self) -> Option<String> {
        self.events_enabled.then(|| self.events_topic())
    }
}

fn require(holds: bool, setting: &'static str, reason: &str) -> Result<(), SettingsError> {
    if holds { Ok(()) } else { Err(SettingsError::Invalid { setting, reason: reason.to_owned() }) }
}

/// Kafka's rule for topic names (at most 249 characters; `chars_max` leaves
/// room for a suffix); `.` and `..` alone are reserved.
fn valid_topic_name(topic: &str, chars_max: usize) -> bool {
    (1..=chars_max).contains(&topic.len())
        && topic != "."
        && topic != ".."
        && topic.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
// figment's Jail closures return its own (large) error type; not ours to shrink.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let settings = Settings { admin_token: Some(Secret::new("hunter2")), ..Settings::default() };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"));
        assert!(!shown.contains("postgres://"));
    }

    #[test]
    fn unknown_keys_in_a_file_are_an_error() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("engine.toml", "topic = \"t\"\nbatch_sise_max = 3\n")?;
            assert!(Settings::load(Some(Path::new("engine.toml"))).is_err());
            Ok(())
        });
    }

    /// The setting `settings.validate()` names, or None if it passes.
    fn refused(settings: Settings) -> Option<&'static str> {
        match settings.validate() {
            Ok(()) => None,
            Err(SettingsError::Invalid { setting, .. }) => Some(setting),
            Err(e) => panic!("validation cannot fail to load: {e}"),
        }
    }

    #[test]
    fn the_defaults_pass_validation() {
        assert_eq!(refused(Settings::default()), None);
    }

    #[test]
    fn each_nonsense_value_is_refused_naming_its_setting() {
        let d = Settings::default;
        let cases: Vec<(&str, Settings)> = vec![
            ("kafka_brokers", Settings { kafka_brokers: " ".into(), ..d() }),
            ("topic", Settings { topic: String::new(), ..d() }),
            ("topic", Settings { topic: "has space".into(), ..d() }),
            ("topic", Settings { topic: "..".into(), ..d() }),
            ("topic", Settings { topic: "t".repeat(246), ..d() }),
            ("consumer_group", Settings { consumer_group: "".into(), ..d() }),
            ("consumer_group", Settings { consumer_group: " \t".into(), ..d() }),
            ("topic_partitions", Settings { topic_partitions: Some(0), ..d() }),
            ("topic_partitions", Settings { topic_partitions: Some(-1), ..d() }),
            ("topic_replication_factor", Settings { topic_replication_factor: Some(0), ..d() }),
            ("topic_replication_factor", Settings { topic_replication_factor: Some(40_000), ..d() }),
            ("consumer_session_timeout_ms", Settings { consumer_session_timeout_ms: 0, ..d() }),
            ("admin_token", Settings { admin_token: Some(Secret::new("")), ..d() }),
            ("admin_token", Settings { admin_token: Some(Secret::new("  ")), ..d() }),
            ("admin_token", Settings { admin_token: Some(Secret::new(" s3cret")), ..d() }),
            ("client_cache_ttl_ms", Settings { client_cache_ttl_ms: 0, ..d() }),
            ("database_connections_max", Settings { database_connections_max: 0, ..d() }),
            ("database_statement_timeout_ms", Settings { database_statement_timeout_ms: 0, ..d() }),
            ("database_statement_timeout_ms", Settings { database_statement_timeout_ms: 1 << 31, ..d() }),
            ("database_lock_timeout_ms", Settings { database_lock_timeout_ms: 0, ..d() }),
            ("database_lock_timeout_ms", Settings { database_lock_timeout_ms: 30_001, database_statement_timeout_ms: 30_000, ..d() }),
            ("publish_timeout_ms", Settings { publish_timeout_ms: 0, ..d() }),
            ("http_request_timeout_ms", Settings { http_request_timeout_ms: 0, ..d() }),
            ("http_request_timeout_ms", Settings { http_request_timeout_ms: 5_000, publish_timeout_ms: 5_000, ..d() }),
            ("http_requests_concurrent_max", Settings { http_requests_concurrent_max: 0, ..d() }),
            ("http_requests_concurrent_max", Settings { http_requests_concurrent_max: usize::MAX, ..d() }),
            ("batch_size_max", Settings { batch_size_max: 0, ..d() }),
            ("request_body_bytes_max", Settings { request_body_bytes_max: 0, ..d() }),
            ("balance_cache_ttl_s", Settings { balance_cache_ttl_s: 0, ..d() }),
            ("status_cache_ttl_s", Settings { status_cache_ttl_s: 0, ..d() }),
            ("plugin_call_fuel_max", Settings { plugin_call_fuel_max: 0, ..d() }),
            ("plugin_configure_fuel_max", Settings { plugin_configure_fuel_max: 0, ..d() }),
            ("plugin_memory_bytes_max", Settings { plugin_memory_bytes_max: 0, ..d() }),
            ("plugin_slot_memory_bytes_max", Settings { plugin_slot_memory_bytes_max: 1 << 20, ..d() }),
            ("plugin_instances_max", Settings { plugin_instances_max: 0, ..d() }),
            ("plugin_instances_max", Settings { plugin_instances_max: u32::MAX, ..d() }),
            ("plugin_upload_bytes_max", Settings { plugin_upload_bytes_max: 0, ..d() }),
            ("plugin_upload_timeout_ms", Settings { plugin_upload_timeout_ms: 0, ..d() }),
            ("plugin_poll_ms", Settings { plugin_poll_ms: 0, ..d() }),
            ("plugin_rollback_window_s", Settings { plugin_rollback_window_s: 0, ..d() }),
            ("plugin_rollback_calls_min", Settings { plugin_rollback_calls_min: 0, ..d() }),
            ("plugin_rollback_fault_rate_max_ppm", Settings { plugin_rollback_fault_rate_max_ppm: 1_000_001, ..d() }),
            ("plugin_rollback_recent_minutes", Settings { plugin_rollback_recent_minutes: 10_081, ..d() }),
            // `<topic>.events` past Kafka's 249 characters, with no `events_topic` to replace it.
            ("events_topic", Settings { topic: "t".repeat(243), ..d() }),
            ("events_topic", Settings { events_topic: Some("has space".into()), ..d() }),
            ("events_topic", Settings { events_topic: Some("transfers".into()), ..d() }),
            ("events_topic", Settings { events_topic: Some("transfers.dlq".into()), ..d() }),
            ("events_poll_ms", Settings { events_poll_ms: 0, ..d() }),
            ("events_claim_rows_max", Settings { events_claim_rows_max: 0, ..d() }),
            ("events_claim_rows_max", Settings { events_claim_rows_max: 1_001, ..d() }),
            ("events_claims_in_flight_max", Settings { events_claims_in_flight_max: 0, ..d() }),
            ("events_claims_in_flight_max", Settings { events_claims_in_flight_max: 17, ..d() }),
            ("events_retention_s", Settings { events_retention_s: 0, ..d() }),
            ("webhook_hosts_allowed", Settings { webhook_hosts_allowed: Some("a.example,,b.example".into()), ..d() }),
            ("webhook_hosts_allowed", Settings { webhook_hosts_allowed: Some("https://a.example".into()), ..d() }),
            ("webhook_timeout_ms", Settings { webhook_timeout_ms: 0, ..d() }),
            ("webhook_retry_backoff_ms_min", Settings { webhook_retry_backoff_ms_min: 0, ..d() }),
            ("webhook_retry_backoff_ms_max", Settings { webhook_retry_backoff_ms_max: 999, ..d() }),
            ("webhook_retry_window_s", Settings { webhook_retry_window_s: 0, ..d() }),
            ("webhook_deliveries_concurrent_max", Settings { webhook_deliveries_concurrent_max: 0, ..d() }),
            ("webhook_poll_ms", Settings { webhook_poll_ms: 0, ..d() }),
        ];
        for (setting, settings) in cases {
            assert_eq!(refused(settings), Some(setting), "a nonsense `{setting}` was not refused by its name");
        }
    }

    #[test]
    fn values_at_the_edge_of_each_rule_pass() {
        let d = Settings::default;
        let cases = [
            Settings { topic: "t".repeat(245), events_topic: Some("e".repeat(249)), ..d() },
            Settings { topic: "t".repeat(245), events_enabled: false, ..d() },
            Settings { topic: "t".repeat(242), ..d() },
            Settings { webhook_hosts_allowed: Some("hooks.example.com, *.partner.test".into()), ..d() },
            Settings { webhook_retry_backoff_ms_min: 5, webhook_retry_backoff_ms_max: 5, webhook_retry_window_s: 1, ..d() },
            Settings { topic: "a.b_c-D9".into(), ..d() },
            Settings { topic_partitions: Some(1), topic_replication_factor: Some(1), ..d() },
            Settings { admin_token: Some(Secret::new("x")), ..d() },
            Settings { client_cache_ttl_ms: 1, balance_cache_ttl_s: 1, status_cache_ttl_s: 1, ..d() },
            Settings { database_lock_timeout_ms: 30_000, database_statement_timeout_ms: 30_000, ..d() },
            Settings { http_request_timeout_ms: 5_001, publish_timeout_ms: 5_000, ..d() },
            Settings { http_requests_concurrent_max: 1, batch_size_max: 1, database_connections_max: 1, ..d() },
            Settings { batch_wait_ms: 0, ..d() },
        ];
        for settings in cases {
            assert_eq!(refused(settings.clone()), None, "{settings:?}");
        }
    }

    #[test]
    fn a_zero_status_ttl_from_the_environment_stops_the_load_naming_the_setting() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TRANSFER_ENGINE_STATUS_CACHE_TTL_S", "0");
            let e = Settings::load(None).unwrap_err();
            assert!(matches!(e, SettingsError::Invalid { setting: "status_cache_ttl_s", .. }), "{e}");
            assert!(e.to_string().contains("TRANSFER_ENGINE_STATUS_CACHE_TTL_S"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn an_empty_admin_token_from_the_environment_stops_the_load() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TRANSFER_ENGINE_ADMIN_TOKEN", "");
            let e = Settings::load(None).unwrap_err();
            assert!(matches!(e, SettingsError::Invalid { setting: "admin_token", .. }), "{e}");
            Ok(())
        });
    }

    #[test]
    fn topic_partitions_still_reads_a_plain_number() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("TRANSFER_ENGINE_TOPIC_PARTITIONS", "4");
            let settings = Settings::load(None).unwrap();
            assert_eq!((settings.topic_partitions, settings.topic_replication_factor), (Some(4), None));
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("engine.toml", "topic = \"from-file\"\nbatch_size_max = 3\n")?;
            jail.set_env("TRANSFER_ENGINE_TOPIC", "from-env");
            let settings = Settings::load(Some(Path::new("engine.toml"))).unwrap();
            assert_eq!(settings.topic, "from-env");
            assert_eq!(settings.batch_size_max, 3);
            Ok(())
        });
    }
}
