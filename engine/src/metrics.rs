//! Prometheus metrics, served at `/metrics` in the text exposition format.
//! (Latencies are f64 seconds, as Prometheus expects; money never is a float.)

use std::time::Instant;

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

/// The stages of a submit (`POST /v1/transfers`), in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitStage {
    /// The one Redis round trip: the id's claim and both accounts' cached balances.
    RedisClaim,
    /// The primary-key read of the transfer id in PostgreSQL.
    LedgerRead,
    /// The advisory pre-check: PostgreSQL reads of balances Redis did not
    /// have, writing them back to Redis, and the comparison.
    PrecheckFill,
    /// Publishing to the broker, until it acknowledged (or the publish failed).
    Publish,
    /// Marking the claim as published in Redis.
    MarkPublished,
}

impl SubmitStage {
    pub const ALL: [SubmitStage; 5] =
        [SubmitStage::RedisClaim, SubmitStage::LedgerRead, SubmitStage::PrecheckFill, SubmitStage::Publish, SubmitStage::MarkPublished];

    pub fn label(self) -> &'static str {
        match self {
            SubmitStage::RedisClaim => "redis_claim",
            SubmitStage::LedgerRead => "ledger_read",
            SubmitStage::PrecheckFill => "precheck_fill",
            SubmitStage::Publish => "publish",
            SubmitStage::MarkPublished => "mark_published",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// One of `SubmitStage::ALL`'s labels.
    pub stage: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_request_duration: Family<RequestLabels, Histogram>,
    pub transfers: Family<OutcomeLabels, Counter>,
    pub batch_size: Histogram,
    pub commit_duration: Histogram,
    /// Validations that need context whose answer, asked ahead of the
    /// commit, the commit used; and those it asked the validators itself.
    pub validations_foreseen: Counter,
    pub validations_in_commit: Counter,
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    /// 1 while the processor runs and progresses; 0 when it is dead, stalled or stopped.
    pub processor_healthy: Gauge,
    /// Seconds since the processor last finished a batch while records waited (0 when healthy).
    pub processor_stalled_seconds: Gauge,
    /// The family's histogram of each stage, indexed as `SubmitStage::ALL`,
    /// all made at start: a submit observes without a lookup, a lock on the
    /// family or an allocation, and `/metrics` lists every stage from the start.
    submit_stage_duration: [Histogram; SubmitStage::ALL.len()],
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
        let validations_foreseen = Counter::default();
        let validations_in_commit = Counter::default();
        registry.register(
            "validations_foreseen",
            "Validations with context whose answer, asked ahead of the commit, the commit used",
            validations_foreseen.clone(),
        );
        registry.register(
            "validations_in_commit",
            "Validations with context asked inside the commit (not foreseen, or foreseen on another context)",
            validations_in_commit.clone(),
        );
        registry.register("consumer_lag", "Records behind the partition's end after the last batch", consumer_lag.clone());
        let processor_healthy = Gauge::default();
        let processor_stalled_seconds = Gauge::default();
        registry.register("processor_healthy", "1 while the processor is alive and progressing", processor_healthy.clone());
        registry.register(
            "processor_stalled_seconds",
            "How long records have waited with no batch finished (0 unless stalled)",
            processor_stalled_seconds.clone(),
        );
        // 50 µs to 1.6 s: a Redis round trip on an idle machine to a publish near its timeout.
        let submit_stages =
            Family::<StageLabels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_05, 2.0, 16)));
        registry.register(
            "submit_stage_seconds",
            "Time in each stage of POST /v1/transfers that the request reached (a stage that failed included)",
            submit_stages.clone(),
        );
        let submit_stage_duration = SubmitStage::ALL.map(|stage| submit_stages.get_or_create_owned(&StageLabels { stage: stage.label() }));
        Self {
            registry,
            http_requests,
            http_request_duration,
            transfers,
            batch_size,
            commit_duration,
            validations_foreseen,
            validations_in_commit,
            consumer_lag,
            processor_healthy,
            processor_stalled_seconds,
            submit_stage_duration,
        }
    }
}

impl Metrics {
    pub fn count_outcome(&self, outcome: &'static str, n: u64) {
        self.transfers.get_or_create(&OutcomeLabels { outcome }).inc_by(n);
    }

    /// Records that a submit spent the time since `started` in `stage`.
    pub fn observe_submit_stage(&self, stage: SubmitStage, started: Instant) {
        self.submit_stage_duration[stage as usize].observe(started.elapsed().as_secs_f64());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_submit_stage_is_observed_under_its_own_label() {
        let metrics = Metrics::default();
        for (observed, stage) in SubmitStage::ALL.into_iter().enumerate() {
            for _ in 0..=observed {
                metrics.observe_submit_stage(stage, Instant::now());
            }
        }
        let text = metrics.encode();
        for (observed, stage) in SubmitStage::ALL.into_iter().enumerate() {
            let line = format!(r#"transfer_engine_submit_stage_seconds_count{{stage="{}"}} {}"#, stage.label(), observed + 1);
            assert!(text.contains(&line), "{line} not in {text}");
        }
    }
}
