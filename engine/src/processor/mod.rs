//! The processor: consumes the transfers topic in batches and, per batch,
//! decode -> hooks -> `commit_batch` (one PostgreSQL transaction) -> Redis
//! status and balance cache -> Kafka offsets.
//!
//! Offsets are *stored* only after the transaction that covers them has
//! committed (and dead letters are kept); librdkafka then commits stored
//! offsets asynchronously. A crash anywhere before that re-delivers the
//! batch, and the ledger's idempotency makes the replay change nothing.
//!
//! - `isolate`: a batch PostgreSQL refuses for one item's values is split
//!   until the item is found; the rest commits.
//! - `dead_letters`: records that cannot be applied go to the dead-letter
//!   topic, or to PostgreSQL's quarantine when the topic refuses them.
//! - `watchdog`: whether the processor is alive and progressing (`/readyz`).
//! - `consumer`: the rdkafka consumer.

mod consumer;
mod dead_letters;
mod isolate;
pub mod watchdog;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rdkafka::consumer::Consumer;
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use consumer::EngineConsumer;
pub use consumer::build_consumer;
pub(crate) use dead_letters::kept_record;
use dead_letters::{DeadLetter, DeadLetterTopicState};
pub use isolate::UNSTORABLE_CODE;
use watchdog::ProcessorHealth;

use crate::cache::{self, Cache};
use crate::config::Settings;
use crate::domain::Submission;
use crate::domain::TransferId;
use crate::hooks::{self, HookSet};
use crate::kafka::{self, TransferRecord};
use crate::ledger::{BatchResult, CommitItem, Disposition, Foresight, Ledger, LedgerError};
use crate::metrics::{Metrics, PartitionLabels};
use crate::plugins::Registry;
use crate::views::TransferStatusView;

/// Backoff while PostgreSQL or the broker is away: doubles from the first to the last.
const RETRY_BACKOFF_FIRST_MS: u64 = 100;
const RETRY_BACKOFF_MAX_MS: u64 = 5_000;
/// Pause after a consumer error before reading on.
const CONSUMER_ERROR_PAUSE_MS: u64 = 50;
/// How often consumer lag is measured (more often when the stall limit is short).
const LAG_INTERVAL_MS: u64 = 5_000;
const LAG_INTERVAL_MS_MIN: u64 = 100;
/// Blocking threads one batch's hooks are spread over, at most, and the
/// fewest transfers worth a thread of their own.
const HOOK_THREADS_MAX: usize = 4;
const HOOK_ITEMS_PER_THREAD_MIN: usize = 16;
/// PostgreSQL reads at once when a replayed batch refreshes Redis.
const REFRESH_READS_CONCURRENT_MAX: usize = 4;

pub struct Processor {
    pub settings: Arc<Settings>,
    pub ledger: Ledger,
    pub cache: Cache,
    pub metrics: Arc<Metrics>,
    /// The current hook set; a new value is picked up between batches, so a
    /// batch always runs on exactly one set.
    pub hooks: watch::Receiver<HookSet>,
    /// For dead letters: the processor's own producer, so that a dead-letter
    /// topic refusing records never marks the API's producer failing.
    pub dead_letter_publisher: kafka::Publisher,
    pub dead_letter_topic: DeadLetterTopicState,
    pub health: Arc<ProcessorHealth>,
    /// Told the decisions of every committed batch: it withdraws a canary or
    /// a recent activation whose fault rate passes its limit.
    pub plugins: Arc<Registry>,
}

/// A batch decoded and run through the hooks, ready to commit.
struct PreparedBatch {
    batch: Vec<OwnedMessage>,
    /// The set the batch ran on, with its validators that need context
    /// asked ahead; the commit uses their answers where they prove exact.
    foresight: Foresight,
    items: Vec<CommitItem>,
    /// For each item, the index in `batch` of the record it came from.
    sources: Vec<usize>,
    dead: Vec<DeadLetter>,
}

/// A batch whose transactions have committed (and dead letters are kept).
struct CommittedBatch {
    batch: Vec<OwnedMessage>,
    items: Vec<CommitItem>,
    result: BatchResult,
}

impl Processor {
    /// Runs until `shutdown` turns true, then finishes the batches in hand,
    /// stores their offsets, commits them and leaves the group.
    ///
    /// Three stages run at once, each on its own batch, in order: *prepare*
    /// (fetch, decode, hooks), *commit* (the PostgreSQL transaction, dead
    /// letters) and *finish* (Redis, then the offsets). So the engine's CPU
    /// work on the next batch overlaps PostgreSQL's on this one. Channels of
    /// one keep at most one batch waiting between stages, and a batch reaches
    /// *finish* only after its own commit: offsets are still stored strictly
    /// in order and only after the transaction that covers them. If a stage
    /// stops (shutdown during a retry), no later batch reaches the next one.
    pub async fn run(self, consumer: EngineConsumer, shutdown: watch::Receiver<bool>) {
        let _alive = self.health.started();
        let consumer = Arc::new(consumer);
        let this = Arc::new(self);
        let lag_interval = Duration::from_millis(LAG_INTERVAL_MS.min(this.settings.processor_stall_limit_ms / 4).max(LAG_INTERVAL_MS_MIN));
        let lag_task = tokio::spawn(measure_lag(consumer.clone(), this.clone(), lag_interval, shutdown.clone()));
        info!(topic = %this.settings.topic, group = %this.settings.consumer_group, "Processor started.");
        let (to_commit, mut committing) = mpsc::channel::<PreparedBatch>(1);
        let (to_finish, mut finishing) = mpsc::channel::<CommittedBatch>(1);
        let committer = tokio::spawn({
            let this = this.clone();
            let mut shutdown = shutdown.clone();
            async move {
                while let Some(prepared) = committing.recv().await {
                    let Some(committed) = this.commit(prepared, &mut shutdown).await else { break };
                    if to_finish.send(committed).await.is_err() {
                        break;
                    }
                }
            }
        });
        let finisher = tokio::spawn({
            let this = this.clone();
            let consumer = consumer.clone();
            async move {
                while let Some(committed) = finishing.recv().await {
                    this.finish(&consumer, committed).await;
                }
            }
        });
        this.prepare_until_stopped(&consumer, to_commit, shutdown.clone()).await;
        if *shutdown.borrow() {
            this.health.stopping();
        }
        // The committer drains what was handed to it (or stops at shutdown
        // during a retry), then the finisher drains what was committed.
        let _ = committer.await;
        let _ = finisher.await;
        lag_task.abort();
        consumer::close(consumer).await;
        info!("Processor stopped.");
    }

    /// Fetches, decodes and runs the hooks, batch after batch, until shutdown
    /// or until the committer stops taking batches.
    async fn prepare_until_stopped(
        &self,
        consumer: &EngineConsumer,
        to_commit: mpsc::Sender<PreparedBatch>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let batch_wait = Duration::from_millis(self.settings.batch_wait_ms);
        loop {
            let first = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => return,
                first = consumer.recv() => first,
            };
            let first = match first {
                Ok(m) => m.detach(),
                Err(e) => {
                    // librdkafka reports broker trouble through the stream while it
                    // reconnects by itself; the errors queue up during an outage. A
                    // short fixed pause only guards against a hot loop: backing off
                    // per error once stalled consumption for minutes after the broker returned.
                    warn!(error = %e, "Consumer error; librdkafka retries by itself.");
                    tokio::time::sleep(Duration::from_millis(CONSUMER_ERROR_PAUSE_MS)).await;
                    continue;
                }
            };
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + batch_wait;
            while batch.len() < self.settings.batch_size_max {
                match tokio::time::timeout_at(deadline, consumer.recv()).await {
                    Ok(Ok(m)) => batch.push(m.detach()),
                    Ok(Err(e)) => {
                        warn!(error = %e, "Consumer error while filling a batch.");
                        break;
                    }
                    Err(_) => break,
                }
            }
            let prepared = self.prepare(batch).await;
            if to_commit.send(prepared).await.is_err() {
                return;
            }
        }
    }

    /// Decodes a batch (undecodable records become dead letters) and runs the hooks.
    async fn prepare(&self, batch: Vec<OwnedMessage>) -> PreparedBatch {
        self.metrics.batch_size.observe(batch.len() as f64);
        self.health.received(batch.len());
        let mut submissions = Vec::with_capacity(batch.len());
        let mut sources = Vec::with_capacity(batch.len());
        let mut dead = Vec::new();
        for (index, message) in batch.iter().enumerate() {
            let client_id = message.headers().and_then(|h| h.iter().find(|h| h.key == kafka::CLIENT_ID_HEADER)).and_then(|h| h.value);
            match TransferRecord::decode(message.payload(), client_id) {
                Ok(s) => {
                    submissions.push(s);
                    sources.push(index);
                }
                Err(e) => dead.push(DeadLetter { reason: format!("{}: {e}", e.code()), message: message.clone() }),
            }
        }
        // The set as it is now; the guard must not live across the await.
        let hooks = self.hooks.borrow().clone();
        let items = run_hooks(hooks.clone(), submissions).await;
        let (items, foresight) = self.foresee(items, hooks).await;
        PreparedBatch { batch, foresight, items, sources, dead }
    }

    /// Commits a prepared batch (isolating items PostgreSQL refuses) and
    /// keeps its dead letters. None if shutdown interrupted it (the batch
    /// will be redelivered).
    async fn commit(&self, prepared: PreparedBatch, shutdown: &mut watch::Receiver<bool>) -> Option<CommittedBatch> {
        let PreparedBatch { batch, foresight, items, sources, mut dead } = prepared;
        let isolated = self.commit_isolating(items, &foresight, shutdown).await?;
        for (index, reason) in isolated.poison {
            dead.push(DeadLetter { reason, message: batch[sources[index]].clone() });
        }
        for letter in &dead {
            if !self.keep_dead_letter(letter, shutdown).await {
                return None;
            }
        }
        Some(CommittedBatch { batch, items: isolated.items, result: isolated.result })
    }

    /// Asks the validators that need context ahead of the commit, while the
    /// committer is busy with the batch before this one (`ledger::Foresight`).
    async fn foresee(&self, items: Vec<CommitItem>, hooks: HookSet) -> (Vec<CommitItem>, Foresight) {
        if !items.iter().any(|i| matches!(i.verdict, crate::ledger::Verdict::Validate(_))) {
            return (items, Foresight::none(hooks));
        }
        let ledger = self.ledger.clone();
        tokio::task::spawn_blocking(move || {
            let foresight = foresee_unless_panicked(&ledger, &items, hooks);
            (items, foresight)
        })
        .await
        .expect("foresee_unless_panicked contains panics")
    }

    /// Updates Redis, counts outcomes, then stores the batch's offsets.
    async fn finish(&self, consumer: &EngineConsumer, committed: CommittedBatch) {
        self.update_cache(&committed.items, &committed.result).await;
        self.count(&committed.items, &committed.result);
        store_offsets(consumer, &committed.batch);
        self.health.finished(committed.batch.len());
    }

    /// Writes new statuses and balances to Redis. Best effort: PostgreSQL has them.
    async fn update_cache(&self, items: &[CommitItem], result: &BatchResult) {
        self.refresh_duplicates(items, result).await;
        let statuses: Vec<_> = items
            .iter()
            .zip(&result.outcomes)
            .filter(|(_, c)| c.disposition == Disposition::New)
            .filter_map(|(item, c)| {
                let decisions = [item.decisions.as_slice(), c.validated.as_slice()].concat();
                let view = TransferStatusView::committed(&item.submission, item.recorded_amount(), item.description.clone(), &decisions, c);
                serde_json::to_string(&view).ok().map(|body| (c.transfer_id, i64::from(c.version), body))
            })
            .collect();
        if let Err(e) = self.cache.put_statuses(&statuses).await {
            cache::warn_unavailable(&e, "status update");
        }
        if let Err(e) = self.cache.put_accounts(&result.balances).await {
            cache::warn_unavailable(&e, "balance update");
        }
    }

    /// Rewrites Redis from PostgreSQL for the transfers of this batch the
    /// ledger already held. A crash between a commit and its Redis write
    /// leaves Redis saying `initiated` and the old balances; the redelivered
    /// batch is all duplicates, and without this a client's retry would be
    /// told `initiated` until the entry expired.
    async fn refresh_duplicates(&self, items: &[CommitItem], result: &BatchResult) {
        let mut ids = Vec::new();
        let mut accounts = Vec::new();
        for (item, c) in items.iter().zip(&result.outcomes).filter(|(_, c)| c.disposition == Disposition::Duplicate) {
            let s = &item.submission;
            ids.push(c.transfer_id);
            accounts.extend([(s.sender, s.currency), (s.receiver, s.currency)]);
        }
        if ids.is_empty() {
            return;
        }
        accounts.sort_unstable();
        accounts.dedup();
        let ledger = &self.ledger;
        let statuses: Vec<_> = futures::stream::iter(ids)
            .map(|id| async move { ledger.transfer(id).await })
            .buffer_unordered(REFRESH_READS_CONCURRENT_MAX)
            .filter_map(|read| async move {
                let view = TransferStatusView::from_ledger(&read.ok()??);
                serde_json::to_string(&view).ok().map(|body| (TransferId(view.transfer_id), i64::from(view.version), body))
            })
            .collect()
            .await;
        let balances: Vec<_> = futures::stream::iter(accounts)
            .map(|(owner, currency)| async move { ledger.account(owner, currency).await })
            .buffer_unordered(REFRESH_READS_CONCURRENT_MAX)
            .filter_map(|read| async move { read.ok().flatten() })
            .collect()
            .await;
        if let Err(e) = self.cache.put_statuses(&statuses).await {
            cache::warn_unavailable(&e, "status refresh");
        }
        if let Err(e) = self.cache.put_accounts(&balances).await {
            cache::warn_unavailable(&e, "balance refresh");
        }
    }

    /// Counts outcomes, and the plugin decisions of the transfers this batch committed.
    fn count(&self, items: &[CommitItem], result: &BatchResult) {
        let committed = items.iter().zip(&result.outcomes).filter(|(_, c)| c.disposition == Disposition::New);
        let decisions: Vec<&hooks::Decision> = committed.flat_map(|(item, c)| item.decisions.iter().chain(&c.validated)).collect();
        self.metrics.observe_decisions(decisions.iter().copied());
        for trip in self.plugins.observe_faults(decisions) {
            // Off the batch's path: the next batch need not wait for the withdrawal.
            let (plugins, metrics) = (self.plugins.clone(), self.metrics.clone());
            tokio::spawn(async move {
                match plugins.roll_back(&trip).await {
                    Ok(true) => metrics.count_rollback(&trip.watch.name, trip.watch.version, trip.watch.role()),
                    Ok(false) => {
                        info!(plugin = %trip.watch.name, version = trip.watch.version, "Rollback not needed: the version changed meanwhile.")
                    }
                    Err(e) => {
                        warn!(error = %e, plugin = %trip.watch.name, version = trip.watch.version, "Automatic rollback failed; it is tried again on the next batch.");
                        plugins.rearm(&trip);
                    }
                }
            });
        }
        let mut counts: HashMap<&'static str, u64> = HashMap::new();
        for c in &result.outcomes {
            let outcome = match (c.disposition, c.status) {
                (Disposition::Duplicate, _) => "duplicate",
                (Disposition::Conflict, _) => "conflict",
                (Disposition::New, status) => status.as_str(),
            };
            *counts.entry(outcome).or_default() += 1;
        }
        for (outcome, n) in counts {
            self.metrics.count_outcome(outcome, n);
        }
        self.metrics.validations_foreseen.inc_by(result.validated_ahead as u64);
        self.metrics.validations_in_commit.inc_by(result.validated_in_commit as u64);
        debug!(transfers = result.outcomes.len(), "Batch committed.");
    }
}

/// Runs the hooks over a batch, in order, spread over a few blocking threads:
/// each plugin call is CPU work on a fresh instance (tens of microseconds),
/// independent of every other transfer's, and must stay off the async workers.
///
/// A set whose validators need context leaves validation to the commit
/// (`Verdict::Validate`), which runs it under the batch's account locks.
async fn run_hooks(hooks: crate::hooks::HookSet, submissions: Vec<Submission>) -> Vec<CommitItem> {
    let validation = hooks::Validation::for_needs(&hooks.needs());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(HOOK_THREADS_MAX);
    let threads = threads.min(submissions.len().div_ceil(HOOK_ITEMS_PER_THREAD_MIN)).max(1);
    let per_thread = submissions.len().div_ceil(threads).max(1);
    let mut rest = submissions;
    let mut parts = Vec::with_capacity(threads);
    while !rest.is_empty() {
        let tail = rest.split_off(per_thread.min(rest.len()));
        let part = std::mem::replace(&mut rest, tail);
        let hooks = hooks.clone();
        parts.push(tokio::task::spawn_blocking(move || part.into_iter().map(|s| commit_item(&*hooks, s, validation)).collect::<Vec<_>>()));
    }
    let mut items = Vec::new();
    for part in parts {
        items.extend(part.await.expect("commit_item contains panics"));
    }
    items
}

/// `Ledger::foresee`, or nothing foreseen if host code panics in it: foresight
/// only saves work in the commit, which asks the validators itself.
fn foresee_unless_panicked(ledger: &Ledger, items: &[CommitItem], hooks: HookSet) -> Foresight {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ledger.foresee(items, hooks.clone()))).unwrap_or_else(|_| {
        error!("Host code panicked while foreseeing a batch's validations; the commit asks the validators itself.");
        Foresight::none(hooks)
    })
}

/// Runs the hooks for one submission and turns the answer into a ledger item.
fn commit_item(hooks: &dyn hooks::Hooks, submission: Submission, validation: hooks::Validation) -> CommitItem {
    let outcome = hooks::unless_panicked(submission.id, || hooks::run(hooks, &submission, validation)).unwrap_or_else(|reason| {
        hooks::HookOutcome {
            verdict: crate::ledger::Verdict::Fail(reason),
            // The describer never answered: storing the submitted text could
            // store what a masking rule exists to keep out of the ledger.
            description: None,
            amount: submission.amount(),
            decisions: Vec::new(),
        }
    });
    CommitItem {
        submission,
        verdict: outcome.verdict,
        description: outcome.description,
        amount: outcome.amount,
        decisions: outcome.decisions,
    }
}

/// Stores, per partition, the offset after the batch's last record (the next
/// one to read), for librdkafka to commit.
///
/// Through `rd_kafka_offsets_store`, which stores each offset as given. The
/// single-offset `store_offset` (`rd_kafka_offset_store`) stores offset + 1:
/// passing it the next offset skipped one record per partition at every
/// restart, which the SIGKILL test (`tests/crash.rs`) caught.
fn store_offsets(consumer: &EngineConsumer, batch: &[OwnedMessage]) {
    let mut next: HashMap<(&str, i32), i64> = HashMap::new();
    for m in batch {
        let slot = next.entry((m.topic(), m.partition())).or_insert(0);
        *slot = (*slot).max(m.offset() + 1);
    }
    let mut list = TopicPartitionList::with_capacity(next.len());
    for (&(topic, partition), &offset) in &next {
        if let Err(e) = list.add_partition_offset(topic, partition, Offset::Offset(offset)) {
            tracing::error!(partition, offset, error = %e, "Offset not representable; the batch will be re-read.");
        }
    }
    // Fails (wholly or per partition) only if a partition was revoked meanwhile:
    // its new owner re-reads the batch and the ledger recognises every id, so
    // nothing is lost or doubled.
    if let Err(e) = consumer.store_offsets(&list) {
        debug!(error = %e, "Offsets not stored (partitions revoked?).");
    }
}

fn backoff(failures: u32) -> Duration {
    let ms = RETRY_BACKOFF_FIRST_MS.saturating_mul(1 << failures.min(16).saturating_sub(1)).min(RETRY_BACKOFF_MAX_MS);
    Duration::from_millis(ms)
}

/// Sleeps, or returns true at once if shutdown was requested.
async fn wait_or_stop(delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

fn log_commit_failure(e: &LedgerError, failures: u32) {
    if e.is_unavailable() {
        warn!(error = %e, failures, "PostgreSQL unavailable; batch will be retried, offsets not advanced.");
    } else {
        // Not a connection problem: an operator should look. Still retried: the
        // records must not be skipped, and the cause may be transient.
        tracing::error!(error = ?e, failures, "Batch commit failed; retrying, offsets not advanced.");
    }
}

/// Publishes records-behind-end per assigned partition as a gauge, and tells
/// the watchdog (whose reading `/metrics` and `/readyz` take when asked).
async fn measure_lag(consumer: Arc<EngineConsumer>, this: Arc<Processor>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    let metrics = this.metrics.clone();
    loop {
        if wait_or_stop(interval, &mut shutdown).await {
            return;
        }
        let consumer = consumer.clone();
        let measured = tokio::task::spawn_blocking(move || {
            let mut lags = Vec::new();
            let Ok(position) = consumer.position() else {
                return None;
            };
            for element in position.elements() {
                let Some(at) = element.offset().to_raw() else {
                    continue;
                };
                if let Ok((_, high)) = consumer.fetch_watermarks(element.topic(), element.partition(), Duration::from_millis(500)) {
                    lags.push((element.partition(), (high - at.max(0)).max(0)));
                }
            }
            Some(lags)
        })
        .await;
        // Unknown (the consumer could not say) is not zero; no partitions assigned is.
        let Ok(Some(measured)) = measured else {
            continue;
        };
        this.health.lag_measured(measured.iter().map(|(_, lag)| *lag).sum());
        for (partition, lag) in measured {
            metrics.consumer_lag.get_or_create(&PartitionLabels { partition }).set(lag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Amount, Currency, Money, OwnerId, Requested, TransferId, TransferKind};
    use crate::hooks::{Context, Decision, HookError, Hooks};

    fn submission(description: Option<String>) -> Submission {
        Submission {
            id: TransferId::generate(),
            kind: TransferKind::Transfer,
            sender: OwnerId::new(1).unwrap(),
            receiver: OwnerId::new(2).unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            requested: Requested::Amount(Amount::from_minor(5).unwrap()),
            description,
            submitted_at: chrono::Utc::now(),
            client_id: None,
            metadata: crate::domain::Metadata::default(),
        }
    }

    struct Buggy;

    impl Hooks for Buggy {
        fn describe(&self, _: &str, _: &Submission, _: &mut Vec<Decision>) -> Result<String, HookError> {
            panic!("a bug in host code")
        }
        fn convert(&self, _: Money, _: Currency, _: &Submission, _: Option<&str>, _: &mut Vec<Decision>) -> Result<Amount, HookError> {
            panic!("a bug in host code")
        }
        fn validate(&self, _: &Submission, _: Amount, _: Option<&str>, _: &Context, _: &mut Vec<Decision>) -> Result<(), HookError> {
            panic!("a bug in host code")
        }
    }

    struct DescribeById;

    impl Hooks for DescribeById {
        fn describe(&self, _: &str, s: &Submission, _: &mut Vec<Decision>) -> Result<String, HookError> {
            Ok(s.id.to_string())
        }
        fn convert(&self, _: Money, _: Currency, _: &Submission, _: Option<&str>, _: &mut Vec<Decision>) -> Result<Amount, HookError> {
            unreachable!("no conversion asked")
        }
        fn validate(&self, _: &Submission, _: Amount, _: Option<&str>, _: &Context, _: &mut Vec<Decision>) -> Result<(), HookError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn hooks_spread_over_threads_keep_the_batch_in_order() {
        let submissions: Vec<Submission> = (0..101).map(|_| submission(Some("rent".into()))).collect();
        let ids: Vec<TransferId> = submissions.iter().map(|s| s.id).collect();
        let items = run_hooks(std::sync::Arc::new(DescribeById), submissions).await;
        assert_eq!(items.iter().map(|i| i.submission.id).collect::<Vec<_>>(), ids);
        assert!(items.iter().all(|i| i.description == Some(i.submission.id.to_string())), "each item got its own hook answer");
    }

    #[test]
    fn a_panic_while_running_hooks_fails_only_that_transfer_and_stores_no_unreviewed_description() {
        let item = commit_item(&Buggy, submission(Some("card 4111 1111 1111 1111".into())), hooks::Validation::Now);
        let crate::ledger::Verdict::Fail(reason) = item.verdict else { panic!("expected a failure, got {:?}", item.verdict) };
        assert_eq!(reason.code, "hook_failed");
        assert_eq!(item.description, None, "an unreviewed description is never stored");
    }

    /// Panics when asked what it needs (a bug in host code).
    struct NeedsPanics;

    impl Hooks for NeedsPanics {
        fn describe(&self, d: &str, _: &Submission, _: &mut Vec<Decision>) -> Result<String, HookError> {
            Ok(d.to_owned())
        }
        fn convert(&self, _: Money, _: Currency, _: &Submission, _: Option<&str>, _: &mut Vec<Decision>) -> Result<Amount, HookError> {
            unreachable!("no conversion asked")
        }
        fn validate(&self, _: &Submission, _: Amount, _: Option<&str>, _: &Context, _: &mut Vec<Decision>) -> Result<(), HookError> {
            Ok(())
        }
        fn needs(&self) -> hooks::ContextNeeds {
            panic!("a bug in host code")
        }
    }

    #[tokio::test]
    async fn a_panic_while_foreseeing_leaves_every_validation_to_the_commit() {
        // Foreseeing reads only the ledger's memory: a pool that never connects will do.
        let ledger = Ledger::new(sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").unwrap());
        let amount = Amount::from_minor(5).unwrap();
        let items = vec![CommitItem {
            verdict: crate::ledger::Verdict::Validate(amount),
            ..CommitItem::apply_as_submitted(submission(None)).unwrap()
        }];
        let foresight = foresee_unless_panicked(&ledger, &items, std::sync::Arc::new(NeedsPanics));
        assert_eq!(foresight.answered(), 0);
    }
}
