//! Prometheus metrics, served at `/metrics` in the text exposition format.
//! (Latencies are f64 seconds, as Prometheus expects; money never is a float.)

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::processor::watchdog::ProcessorState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// One of a fixed few (`api::method_label`): clients choose the method.
    pub method: &'static str,
    /// The matched route's template, or `unmatched`: never the raw path.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// completed, rejected, failed, duplicate, conflict, dead_lettered.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub partition: i32,
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_request_duration: Family<RequestLabels, Histogram>,
    pub transfers: Family<OutcomeLabels, Counter>,
    pub batch_size: Histogram,
    pub commit_duration: Histogram,
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    /// 1 while the processor runs and progresses; 0 when it is dead, stalled or stopped.
    pub processor_healthy: Gauge,
    /// Seconds since the processor last finished a batch while records waited (0 when healthy).
    pub processor_stalled_seconds: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("transfer_engine");
        let http_requests = Family::<RequestLabels, Counter>::default();
        let http_request_duration =
            Family::<RequestLabels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_25, 2.0, 16)));
        let transfers = Family::<OutcomeLabels, Counter>::default();
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        let commit_duration = Histogram::new(exponential_buckets(0.000_5, 2.0, 14));
        let consumer_lag = Family::<PartitionLabels, Gauge>::default();
        registry.register("http_requests", "HTTP requests answered", http_requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency", http_request_duration.clone());
        registry.register("transfers", "Transfers processed, by outcome", transfers.clone());
        registry.register("batch_size", "Records per processor batch", batch_size.clone());
        registry.register("commit_duration_seconds", "PostgreSQL batch commit latency", commit_duration.clone());
        registry.register("consumer_lag", "Records behind the partition's end after the last batch", consumer_lag.clone());
        let processor_healthy = Gauge::default();
        let processor_stalled_seconds = Gauge::default();
        registry.register("processor_healthy", "1 while the processor is alive and progressing", processor_healthy.clone());
        registry.register(
            "processor_stalled_seconds",
            "How long records have waited with no batch finished (0 unless stalled)",
            processor_stalled_seconds.clone(),
        );
        Self {
            registry,
            http_requests,
            http_request_duration,
            transfers,
            batch_size,
            commit_duration,
            consumer_lag,
            processor_healthy,
            processor_stalled_seconds,
        }
    }
}

impl Metrics {
    pub fn count_outcome(&self, outcome: &'static str, n: u64) {
        self.transfers.get_or_create(&OutcomeLabels { outcome }).inc_by(n);
    }

    /// Sets the processor gauges from the watchdog's reading.
    pub fn record_processor_state(&self, state: ProcessorState) {
        let healthy = matches!(state, ProcessorState::Running);
        self.processor_healthy.set(i64::from(healthy));
        let stalled_s = match state {
            ProcessorState::Stalled { since_progress_ms, .. } => i64::try_from(since_progress_ms / 1_000).unwrap_or(i64::MAX),
            _ => 0,
        };
        self.processor_stalled_seconds.set(stalled_s);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
