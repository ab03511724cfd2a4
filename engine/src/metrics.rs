//! Prometheus metrics, served at `/metrics` in the text exposition format.
//! (Latencies are f64 seconds, as Prometheus expects; money never is a float.)

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::hooks::{Decision, HookPoint, Role};
use crate::processor::watchdog::ProcessorState;

/// Plugin versions (with role and hook) the plugin metrics keep apart; the
/// rest are counted as plugin `other`, so label sets stay bounded however
/// many versions are uploaded over an engine's life.
pub const PLUGIN_LABEL_SETS_MAX: usize = 256;
/// Codes a plugin version's metrics keep apart (its rejection codes are its
/// own choice); the rest are counted as code `other`.
pub const PLUGIN_CODES_PER_VERSION_MAX: usize = 16;

/// One plugin version in one role and hook.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
    pub version: i32,
    /// `active`, `canary` or `shadow`.
    pub role: &'static str,
    /// `describe`, `convert` or `validate`.
    pub hook: &'static str,
}

/// A version withdrawn automatically, in the role it had (`canary` or `active`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RollbackLabels {
    pub plugin: String,
    pub version: i32,
    pub role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginCallLabels {
    #[prometheus(flatten)]
    pub plugin: PluginLabels,
    /// allowed, rewritten, converted, rejected or failed.
    pub outcome: String,
    /// A rejection's code, a failure's cause (`fuel_exhausted`, `trap`, ...), or empty.
    pub code: String,
}

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
pub struct AttemptLabels {
    /// delivered (a 2xx answer) or failed.
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

/// The stages of one claim of the event relay (`events::relay`), in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayStage {
    /// Locking unsent outbox rows (`FOR UPDATE SKIP LOCKED`), or finding none.
    Claim,
    /// Reading the claimed rows' transfers back and building their events.
    Read,
    /// Publishing the events, until the broker acknowledged every one (or one failed).
    Publish,
    /// Recording webhook deliveries and marking the rows sent, with the commit.
    Mark,
}

impl RelayStage {
    pub const ALL: [RelayStage; 4] = [RelayStage::Claim, RelayStage::Read, RelayStage::Publish, RelayStage::Mark];

    pub fn label(self) -> &'static str {
        match self {
            RelayStage::Claim => "claim",
            RelayStage::Read => "read",
            RelayStage::Publish => "publish",
            RelayStage::Mark => "mark",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// One of `SubmitStage::ALL`'s or `RelayStage::ALL`'s labels.
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
    /// The plugin set's generation this engine decides with (0 until a processor loads one).
    pub plugin_generation: Gauge,
    /// The family's histogram of each stage, indexed as `SubmitStage::ALL`,
    /// all made at start: a submit observes without a lookup, a lock on the
    /// family or an allocation, and `/metrics` lists every stage from the start.
    submit_stage_duration: [Histogram; SubmitStage::ALL.len()],
    relay_stage_duration: [Histogram; RelayStage::ALL.len()],
    /// Committed plugin decisions, by version, role, hook, outcome and code.
    pub plugin_calls: Family<PluginCallLabels, Counter>,
    pub plugin_call_duration: Family<PluginLabels, Histogram>,
    /// Automatic rollbacks this engine made. Bounded without a guard: a
    /// watch trips at most once, and every watch is an operator's change.
    pub plugin_rollbacks: Family<RollbackLabels, Counter>,
    /// Events the relay published to the events topic (a re-publication after a crash counts again).
    pub events_published: Counter,
    /// From a commit to the broker's acknowledgement of its events.
    pub event_publish_lag: Histogram,
    /// Outbox rows (one per commit) waiting to be published, counted every second by each relay.
    pub event_outbox_unsent: Gauge,
    /// Webhook delivery attempts, by outcome.
    pub webhook_attempts: Family<AttemptLabels, Counter>,
    /// The codes seen per plugin label set, to keep both bounded.
    plugin_labels: Mutex<HashMap<PluginLabels, HashSet<String>>>,
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
        let plugin_generation = Gauge::default();
        registry.register(
            "plugin_generation",
            "The plugin set generation this engine's processor decides with: every admin change bumps it, so engines that \
             show the same value run the same plugin versions",
            plugin_generation.clone(),
        );
        registry.register("processor_healthy", "1 while the processor is alive and progressing", processor_healthy.clone());
        registry.register(
            "processor_stalled_seconds",
            "How long records have waited with no batch finished (0 unless stalled)",
            processor_stalled_seconds.clone(),
        );
        let submit_stages = register_stages(
            &mut registry,
            "submit_stage_seconds",
            "Time in each stage of POST /v1/transfers that the request reached (a stage that failed included)",
        );
        let submit_stage_duration = SubmitStage::ALL.map(|stage| submit_stages.get_or_create_owned(&StageLabels { stage: stage.label() }));
        let relay_stages = register_stages(
            &mut registry,
            "event_relay_stage_seconds",
            "Time in each stage of an event relay's claim that the claim reached (a stage that failed included)",
        );
        let relay_stage_duration = RelayStage::ALL.map(|stage| relay_stages.get_or_create_owned(&StageLabels { stage: stage.label() }));
        let plugin_calls = Family::<PluginCallLabels, Counter>::default();
        registry.register(
            "plugin_calls",
            "Plugin decisions committed, by plugin version, role (active, canary or shadow), hook, outcome and code (a failure's cause)",
            plugin_calls.clone(),
        );
        // 2 µs to 1 s: a Rust plugin's call to one near the wall-clock backstop.
        let plugin_call_duration =
            Family::<PluginLabels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_002, 2.0, 20)));
        registry.register(
            "plugin_call_duration_seconds",
            "Plugin call time (a fresh instance, configure and the hook)",
            plugin_call_duration.clone(),
        );
        let plugin_rollbacks = Family::<RollbackLabels, Counter>::default();
        registry.register(
            "plugin_rollbacks",
            "Plugin versions this engine withdrew automatically (a canary, or a recent activation) for their fault rate",
            plugin_rollbacks.clone(),
        );
        let events_published = Counter::default();
        registry.register("events_published", "Events the relay published to the events topic", events_published.clone());
        // 1 ms to 16 s: an event relayed at once to one held up by a broker outage.
        let event_publish_lag = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "event_publish_lag_seconds",
            "From the commit that wrote an event to the broker's acknowledgement of it",
            event_publish_lag.clone(),
        );
        let event_outbox_unsent = Gauge::default();
        registry.register(
            "event_outbox_unsent_rows",
            "Outbox rows (one per commit) not yet published, as this engine's relay counted them in the last second",
            event_outbox_unsent.clone(),
        );
        let webhook_attempts = Family::<AttemptLabels, Counter>::default();
        registry.register("webhook_attempts", "Webhook delivery attempts, by outcome (delivered: a 2xx answer)", webhook_attempts.clone());
        Self {
            registry,
            webhook_attempts,
            events_published,
            event_publish_lag,
            event_outbox_unsent,
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
            plugin_generation,
            submit_stage_duration,
            relay_stage_duration,
            plugin_calls,
            plugin_call_duration,
            plugin_rollbacks,
            plugin_labels: Mutex::default(),
        }
    }
}

/// A histogram per stage, from 50 µs to 1.6 s: a Redis round trip on an idle
/// machine to a broker's acknowledgement near the publish timeout (which
/// dominates both the submit's and the relay's stages).
fn register_stages(registry: &mut Registry, name: &str, help: &str) -> Family<StageLabels, Histogram> {
    let stages = Family::<StageLabels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_05, 2.0, 16)));
    registry.register(name, help, stages.clone());
    stages
}

impl Metrics {
    pub fn count_outcome(&self, outcome: &'static str, n: u64) {
        self.transfers.get_or_create(&OutcomeLabels { outcome }).inc_by(n);
    }

    /// Records that a submit spent the time since `started` in `stage`.
    pub fn observe_submit_stage(&self, stage: SubmitStage, started: Instant) {
        self.submit_stage_duration[stage as usize].observe(started.elapsed().as_secs_f64());
    }

    /// Records that a relay's claim spent the time since `started` in `stage`.
    pub fn observe_relay_stage(&self, stage: RelayStage, started: Instant) {
        self.relay_stage_duration[stage as usize].observe(started.elapsed().as_secs_f64());
    }

    pub fn count_rollback(&self, plugin: &str, version: i32, role: Role) {
        self.plugin_rollbacks.get_or_create(&RollbackLabels { plugin: plugin.to_owned(), version, role: role.as_str() }).inc();
    }

    /// Counts committed plugin decisions (a batch's at once: one lock and one
    /// family lookup per label set, not per decision).
    pub fn observe_decisions<'a>(&self, decisions: impl IntoIterator<Item = &'a Decision>) {
        /// (plugin, version, role, hook): its call durations in µs and its counts by (outcome, code).
        type Grouped<'a> = HashMap<(&'a str, i32, Role, HookPoint), (Vec<i32>, HashMap<(&'a str, &'a str), u64>)>;
        let mut grouped = Grouped::new();
        for d in decisions {
            let (durations, outcomes) = grouped.entry((d.plugin.as_str(), d.version, d.role, d.hook)).or_default();
            durations.push(d.duration_us);
            let code = if d.outcome == "failed" { d.fault.as_deref() } else { d.code.as_deref() };
            *outcomes.entry((d.outcome.as_str(), code.unwrap_or(""))).or_default() += 1;
        }
        if grouped.is_empty() {
            return;
        }
        let mut seen = self.plugin_labels.lock().unwrap_or_else(|e| e.into_inner());
        for ((plugin, version, role, hook), (durations, outcomes)) in grouped {
            let role = role.as_str();
            let mut labels = PluginLabels { plugin: plugin.to_owned(), version, role, hook: hook.as_str() };
            if !seen.contains_key(&labels) && seen.len() >= PLUGIN_LABEL_SETS_MAX {
                labels = PluginLabels { plugin: "other".into(), version: 0, role, hook: hook.as_str() };
            }
            let histogram = self.plugin_call_duration.get_or_create_owned(&labels);
            durations.into_iter().for_each(|us| histogram.observe(f64::from(us) / 1e6));
            let codes = seen.entry(labels.clone()).or_default();
            for ((outcome, code), n) in outcomes {
                let code = if codes.contains(code) || codes.len() < PLUGIN_CODES_PER_VERSION_MAX {
                    codes.insert(code.to_owned());
                    code
                } else {
                    "other"
                };
                let key = PluginCallLabels { plugin: labels.clone(), outcome: outcome.to_owned(), code: code.to_owned() };
                self.plugin_calls.get_or_create(&key).inc_by(n);
            }
        }
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

    fn decision(plugin: &str, version: i32, role: Role, outcome: &str, code: Option<&str>) -> Decision {
        Decision {
            hook: crate::hooks::HookPoint::Validate,
            plugin: plugin.into(),
            version,
            sha256: String::new(),
            outcome: outcome.into(),
            code: code.map(str::to_owned),
            message: None,
            duration_us: 9,
            advisory: false,
            fault: None,
            role,
            differs: false,
        }
    }

    #[test]
    fn plugin_decisions_are_counted_by_version_role_outcome_and_code_with_bounded_labels() {
        let metrics = Metrics::default();
        metrics.observe_decisions([&decision("limits", 2, Role::Active, "allowed", None)]);
        metrics.observe_decisions([&decision("limits", 3, Role::Shadow, "rejected", Some("amount_over_limit"))]);
        metrics.observe_decisions([&Decision {
            fault: Some("fuel_exhausted".into()),
            ..decision("limits", 3, Role::Shadow, "failed", Some("plugin_failed"))
        }]);
        // A plugin that invents a code per transfer: its codes past the bound are `other`.
        let chatty: Vec<Decision> = (0..100).map(|n| decision("chatty", 1, Role::Active, "rejected", Some(&format!("code_{n}")))).collect();
        metrics.observe_decisions(&chatty);
        // Versions past the bound are counted as plugin `other`.
        for version in 0..PLUGIN_LABEL_SETS_MAX as i32 {
            metrics.observe_decisions([&decision("many", version, Role::Active, "allowed", None)]);
        }
        let text = metrics.encode();
        for line in [
            r#"transfer_engine_plugin_calls_total{plugin="limits",version="2",role="active",hook="validate",outcome="allowed",code=""} 1"#,
            r#"transfer_engine_plugin_calls_total{plugin="limits",version="3",role="shadow",hook="validate",outcome="rejected",code="amount_over_limit"} 1"#,
            r#"transfer_engine_plugin_calls_total{plugin="limits",version="3",role="shadow",hook="validate",outcome="failed",code="fuel_exhausted"} 1"#,
            r#"transfer_engine_plugin_calls_total{plugin="chatty",version="1",role="active",hook="validate",outcome="rejected",code="other"} 84"#,
            r#"transfer_engine_plugin_call_duration_seconds_count{plugin="limits",version="3",role="shadow",hook="validate"} 2"#,
            r#"transfer_engine_plugin_call_duration_seconds_count{plugin="other",version="0",role="active",hook="validate"} 3"#,
        ] {
            assert!(text.contains(line), "{line} not in the scrape");
        }
        assert_eq!(
            text.lines().filter(|l| l.starts_with("transfer_engine_plugin_call_duration_seconds_count")).count(),
            PLUGIN_LABEL_SETS_MAX + 1
        );
    }

    #[test]
    fn each_submit_and_relay_stage_is_observed_under_its_own_label() {
        let metrics = Metrics::default();
        // Stage n observed n + 1 times, so a stage counted under another's label shows.
        let submit: Vec<(&str, usize)> = SubmitStage::ALL.iter().enumerate().map(|(n, s)| (s.label(), n + 1)).collect();
        let relay: Vec<(&str, usize)> = RelayStage::ALL.iter().enumerate().map(|(n, s)| (s.label(), n + 1)).collect();
        for (n, stage) in SubmitStage::ALL.into_iter().enumerate() {
            (0..=n).for_each(|_| metrics.observe_submit_stage(stage, Instant::now()));
        }
        for (n, stage) in RelayStage::ALL.into_iter().enumerate() {
            (0..=n).for_each(|_| metrics.observe_relay_stage(stage, Instant::now()));
        }
        let text = metrics.encode();
        for (family, stages) in [("submit_stage_seconds", submit), ("event_relay_stage_seconds", relay)] {
            for (label, count) in stages {
                let line = format!(r#"transfer_engine_{family}_count{{stage="{label}"}} {count}"#);
                assert!(text.contains(&line), "{line} not in {text}");
            }
        }
    }
}
