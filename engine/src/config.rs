//! Typed, layered settings: defaults in code, then an optional TOML file,
//! then `TRANSFER_ENGINE_*` environment variables. Unknown keys are an error;
//! secrets never print.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::plugins::SandboxLimits;
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
    /// Partitions when the engine creates the topic itself.
    pub topic_partitions: i32,
    pub consumer_group: String,
    /// How long the broker waits for a silent processor before handing its
    /// partitions to the others (a crashed one holds them this long).
    pub consumer_session_timeout_ms: u64,
    /// Bearer token for `/v1/admin/*` and deposits/withdrawals, also accepted
    /// wherever an API key is (with every scope, for any owner). Unset or
    /// empty: only API keys are accepted, and admin endpoints answer 401.
    pub admin_token: Option<Secret>,
    /// How long an engine trusts an API client it read from PostgreSQL
    /// (scopes, owners, not revoked) before reading it again: a revocation
    /// takes effect on every engine within this plus one query.
    pub client_cache_ttl_ms: u64,
    pub database_connections_max: u32,
    /// Most records in one processor batch (one PostgreSQL transaction).
    pub batch_size_max: usize,
    /// How long the processor waits to fill a batch once it has one record.
    pub batch_wait_ms: u64,
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
    /// the same on a busy machine as on an idle one (it is not a time).
    pub plugin_call_fuel_max: u64,
    /// Fuel a plugin's instantiation and `configure` may burn (both run
    /// before every call: each call gets a fresh instance).
    pub plugin_configure_fuel_max: u64,
    /// Linear memory one plugin instance may grow to.
    pub plugin_memory_bytes_max: usize,
    /// Plugin instances live at once (pooling allocator slots).
    pub plugin_instances_max: u32,
    /// Largest component an upload may carry (the body limit of the upload route).
    pub plugin_upload_bytes_max: usize,
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
            topic_partitions: 4,
            consumer_group: "transfer-engine".into(),
            consumer_session_timeout_ms: 10_000,
            admin_token: None,
            client_cache_ttl_ms: 1_000,
            database_connections_max: 16,
            batch_size_max: 500,
            batch_wait_ms: 5,
            publish_timeout_ms: 5_000,
            request_body_bytes_max: 16 * 1024,
            description_chars_max: 280,
            balance_cache_ttl_s: 60,
            status_cache_ttl_s: 24 * 60 * 60,
            log_format: LogFormat::Text,
            plugin_call_fuel_max: SandboxLimits::default().call_fuel_max,
            plugin_configure_fuel_max: SandboxLimits::default().configure_fuel_max,
            plugin_memory_bytes_max: SandboxLimits::default().memory_bytes_max,
            plugin_instances_max: SandboxLimits::default().instances_max,
            plugin_upload_bytes_max: 32 << 20,
            plugin_failure_mode: None,
            plugin_call_ms_max: None,
            plugin_configure_ms_max: None,
            plugin_poll_ms: 1_000,
        }
    }
}

impl Settings {
    /// Defaults, then `file` (if given), then `TRANSFER_ENGINE_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        // CONFIG_FILE and URL are read by the CLI itself (the file's path, the
        // engine to talk to), not settings of the engine.
        figment = figment.merge(Env::prefixed("TRANSFER_ENGINE_").ignore(&["config_file", "url"]));
        figment.extract().map_err(Box::new)
    }

    pub fn sandbox_limits(&self) -> SandboxLimits {
        SandboxLimits {
            call_fuel_max: self.plugin_call_fuel_max,
            configure_fuel_max: self.plugin_configure_fuel_max,
            memory_bytes_max: self.plugin_memory_bytes_max,
            instances_max: self.plugin_instances_max,
        }
    }

    pub fn dlq_topic(&self) -> String {
        format!("{}.dlq", self.topic)
    }
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
