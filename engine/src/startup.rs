//! `Application`: what `main` runs and what tests build, the same way.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::api::{self, AppState, Surface};
use crate::auth::ClientStore;
use crate::cache::Cache;
use crate::config::Settings;
use crate::events::relay::Relay;
use crate::events::webhooks::dispatch::{DeliveryClient, Dispatcher};
use crate::hooks::HookSet;
use crate::kafka;
use crate::ledger::{self, Ledger};
use crate::metrics::Metrics;
use crate::plugins::{Registry, Sandbox};
use crate::processor::watchdog::ProcessorHealth;
use crate::processor::{self, Processor};

/// Which parts of the engine this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// HTTP API and processor in one process.
    All,
    /// HTTP API only.
    Api,
    /// Processor only (the HTTP listener still serves health and metrics).
    Processor,
}

/// How long to wait for a PostgreSQL connection before giving up on a request.
const DATABASE_ACQUIRE_TIMEOUT_MS: u64 = 5_000;

pub struct Application {
    listener: TcpListener,
    /// `/metrics` on its own address, when `metrics_addr` is set.
    metrics_listener: Option<TcpListener>,
    state: AppState,
    role: Role,
    /// Publishes the hook set the processor runs on; replaced as a whole.
    hooks: watch::Sender<HookSet>,
    /// The generation of the plugin set loaded at start.
    plugin_generation: i64,
}

/// The ledger over `pool` as the settings ask: its commits write events
/// unless `events_enabled` is off. Every process that commits (the engine,
/// the load generator's deposits, dead-letter replays) takes it from here, so
/// that no outbox row is written where no relay would ever publish it.
pub fn ledger_for(pool: sqlx::PgPool, settings: &Settings) -> Ledger {
    if settings.events_enabled { Ledger::new(pool) } else { Ledger::new(pool).without_events() }
}

/// The engine's pool: every connection carries `statement_timeout` and
/// `lock_timeout`, so a stuck statement or a lock held elsewhere costs a
/// request or a batch its time limit, never a connection for good.
pub async fn connect_database(settings: &Settings) -> anyhow::Result<sqlx::PgPool> {
    let options = connect_options(settings)?.options([
        ("statement_timeout", settings.database_statement_timeout_ms.to_string()),
        ("lock_timeout", settings.database_lock_timeout_ms.to_string()),
    ]);
    pool(settings, options).await
}

/// A pool for migrations and the audit, which read or rewrite whole tables:
/// no statement time limit, but the same lock time limit, so a migration
/// waiting for a busy table fails within that limit rather than queueing every
/// request behind it for as long as the table stays busy.
pub async fn connect_database_for_maintenance(settings: &Settings) -> anyhow::Result<sqlx::PgPool> {
    let options = connect_options(settings)?.options([("lock_timeout", settings.database_lock_timeout_ms.to_string())]);
    pool(settings, options).await
}

fn connect_options(settings: &Settings) -> anyhow::Result<PgConnectOptions> {
    PgConnectOptions::from_str(settings.database_url.expose()).context("invalid TRANSFER_ENGINE_DATABASE_URL")
}

async fn pool(settings: &Settings, options: PgConnectOptions) -> anyhow::Result<sqlx::PgPool> {
    PgPoolOptions::new()
        .max_connections(settings.database_connections_max)
        .acquire_timeout(Duration::from_millis(DATABASE_ACQUIRE_TIMEOUT_MS))
        .connect_with(options)
        .await
        .context("could not connect to PostgreSQL (TRANSFER_ENGINE_DATABASE_URL)")
}

impl Application {
    /// Connects to everything, applies migrations, creates topics, binds the listener.
    pub async fn build(settings: Settings, role: Role) -> anyhow::Result<Self> {
        // Here as well as in `Settings::load`: tests and embedders build settings in code.
        settings.validate()?;
        let maintenance = connect_database_for_maintenance(&settings).await?;
        ledger::migrate(&maintenance).await.context("could not apply migrations")?;
        maintenance.close().await;
        let pool = connect_database(&settings).await?;
        let cache = Cache::from_settings(&settings).context("invalid TRANSFER_ENGINE_REDIS_URL")?;
        kafka::ensure_engine_topics(&settings)
            .await
            .context("could not reach the Kafka broker to create topics (TRANSFER_ENGINE_KAFKA_BROKERS)")?;
        let (dlq_topic, events_topic) = (settings.dlq_topic(), settings.events_topic_if_enabled());
        let topics: Vec<&str> =
            [Some(settings.topic.as_str()), Some(dlq_topic.as_str()), events_topic.as_deref()].into_iter().flatten().collect();
        kafka::warn_on_single_replicas(&settings.kafka_brokers, &topics).await;
        let publisher =
            kafka::Publisher::new(&settings.kafka_brokers, settings.publish_timeout_ms).context("could not create the Kafka producer")?;
        let listener =
            TcpListener::bind(settings.http_addr).await.with_context(|| format!("could not listen on {}", settings.http_addr))?;
        let metrics_listener = match settings.metrics_addr {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("could not listen on {addr} (metrics_addr)"))?),
            None => None,
        };
        let sandbox = Sandbox::with_compiled_dir(settings.sandbox_limits(), settings.plugin_compiled_dir.as_deref())?;
        crate::plugins::settings::removed_in_use(&settings).iter().for_each(|warning| tracing::warn!("{warning}"));
        let plugins = Arc::new(Registry::new(pool.clone(), sandbox, settings.description_chars_max, settings.rollback_settings()));
        // Fail closed at start too: an engine that cannot load its policy does not process.
        let set = plugins.load_set().await.context("could not load the active plugins")?;
        let plugin_generation = set.generation;
        let (hooks, _) = watch::channel::<HookSet>(Arc::new(set));
        let metrics = Arc::new(Metrics::default());
        let clients = Arc::new(ClientStore::new(pool.clone(), Duration::from_millis(settings.client_cache_ttl_ms)));
        let processor = ProcessorHealth::new(Duration::from_millis(settings.processor_stall_limit_ms));
        let ledger = ledger_for(pool, &settings);
        let state = AppState { settings: Arc::new(settings), ledger, cache, publisher, metrics, plugins, clients, processor };
        Ok(Self { listener, metrics_listener, state, role, hooks, plugin_generation })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().expect("bound").port()
    }

    /// The port of the separate `/metrics` listener, when there is one.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_listener.as_ref().map(|l| l.local_addr().expect("bound").port())
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains: HTTP stops accepting and
    /// finishes in-flight requests; the processor finishes and commits its batch,
    /// stores and commits offsets, and leaves the group.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (stop, stopped) = watch::channel(false);
        let mut events_tasks = Vec::new();
        let processor = if self.role != Role::Api {
            let consumer = processor::build_consumer(&self.state.settings).context("could not create the Kafka consumer")?;
            let settings = &self.state.settings;
            let dead_letter_publisher = kafka::Publisher::new(&settings.kafka_brokers, settings.publish_timeout_ms)
                .context("could not create the dead-letter producer")?;
            let processor = Processor {
                settings: self.state.settings.clone(),
                ledger: self.state.ledger.clone(),
                cache: self.state.cache.clone(),
                metrics: self.state.metrics.clone(),
                hooks: self.hooks.subscribe(),
                dead_letter_publisher,
                dead_letter_topic: Default::default(),
                health: self.state.processor.clone(),
                plugins: self.state.plugins.clone(),
            };
            tokio::spawn(keep_history_prepared(self.state.ledger.clone(), stopped.clone()));
            if settings.events_enabled {
                events_tasks = spawn_events(&self.state, stopped.clone())?;
            }
            let poll = Duration::from_millis(self.state.settings.plugin_poll_ms);
            let metrics = self.state.metrics.clone();
            tokio::spawn(self.state.plugins.clone().watch(self.hooks.clone(), self.plugin_generation, poll, metrics, stopped.clone()));
            Some(tokio::spawn(processor.run(consumer, stopped.clone())))
        } else {
            None
        };
        // The processor role serves health and metrics only: nothing that moves or reads money.
        let metrics_here = self.metrics_listener.is_none();
        let surface = match self.role {
            Role::Processor => Surface::HealthOnly { metrics: metrics_here },
            Role::All | Role::Api => Surface::Api { metrics: metrics_here },
        };
        info!(addr = %self.listener.local_addr()?, role = ?self.role, "Engine listening.");
        let server = serve(self.listener, api::router(self.state.clone(), surface), stopped.clone());
        let metrics_server = self.metrics_listener.map(|listener| {
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, "Serving /metrics on its own address.");
            }
            serve(listener, api::router(self.state.clone(), Surface::MetricsOnly), stopped.clone())
        });
        shutdown.await;
        info!("Shutting down: draining HTTP and the processor's batch.");
        let _ = stop.send(true);
        if let Some(processor) = processor {
            processor.await.context("processor task failed")?;
        }
        // After the processor's last commit: the relay's claim and the webhook attempts in progress finish.
        for task in events_tasks {
            task.await.context("events task failed")?;
        }
        server.await.context("HTTP task failed")?.context("HTTP server failed")?;
        if let Some(metrics_server) = metrics_server {
            metrics_server.await.context("metrics HTTP task failed")?.context("metrics HTTP server failed")?;
        }
        drop(self.hooks);
        Ok(())
    }
}

/// Starts the events relay and the webhook dispatcher (in the processes that run a processor).
fn spawn_events(state: &AppState, stopped: watch::Receiver<bool>) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let settings = &state.settings;
    let webhooks_enqueued = Arc::new(tokio::sync::Notify::new());
    let relay = Relay {
        pool: state.ledger.pool().clone(),
        publisher: kafka::Publisher::new(&settings.kafka_brokers, settings.publish_timeout_ms)
            .context("could not create the events producer")?,
        topic: settings.events_topic(),
        claim_rows_max: settings.events_claim_rows_max,
        claims_in_flight_max: settings.events_claims_in_flight(),
        poll: Duration::from_millis(settings.events_poll_ms),
        retention: Duration::from_secs(settings.events_retention_s),
        written: state.ledger.events_written(),
        metrics: state.metrics.clone(),
        webhook_retry_window: settings.webhook_retry_policy().window,
        webhooks_enqueued: webhooks_enqueued.clone(),
    };
    let dispatcher = Dispatcher {
        pool: state.ledger.pool().clone(),
        http: DeliveryClient::new(Duration::from_millis(settings.webhook_timeout_ms))
            .context("could not create the webhooks' HTTP client")?,
        retry: settings.webhook_retry_policy(),
        allowed: settings.webhook_allow_list(),
        concurrent_max: settings.webhook_deliveries_concurrent_max,
        poll: Duration::from_millis(settings.webhook_poll_ms),
        enqueued: webhooks_enqueued,
        metrics: state.metrics.clone(),
    };
    Ok(vec![tokio::spawn(relay.run(stopped.clone())), tokio::spawn(dispatcher.run(stopped))])
}

/// How often a processor makes the status history's coming months: hourly
/// keeps `HISTORY_MONTHS_AHEAD` months made even if one run fails (a lock
/// not granted), long before the default partition would catch rows.
const HISTORY_PREPARE_INTERVAL: Duration = Duration::from_secs(3600);

/// Makes the status history's partitions for this month and the next ones,
/// at once and then hourly, in the processes that write history (processors).
/// A failure is not fatal: rows with no month land in the default partition
/// and move into their month when it is made.
async fn keep_history_prepared(ledger: Ledger, mut stopped: watch::Receiver<bool>) {
    loop {
        match ledger.prepare_history_partitions(chrono::Utc::now(), ledger::retention::HISTORY_MONTHS_AHEAD).await {
            Ok(made) if !made.is_empty() => info!(partitions = ?made, "Made the status history's coming months."),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "Could not make the status history's coming months; retrying within the hour."),
        }
        let stop = tokio::select! {
            _ = tokio::time::sleep(HISTORY_PREPARE_INTERVAL) => false,
            _ = stopped.wait_for(|s| *s) => true,
        };
        if stop {
            return;
        }
    }
}

/// Serves `router` on `listener` until `stopped` turns true, then drains.
fn serve(listener: TcpListener, router: axum::Router, mut stopped: watch::Receiver<bool>) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
    })
}
