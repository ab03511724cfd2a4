//! The rdkafka consumer: configuration, and a shutdown that cannot hang the runtime.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{info, warn};

use crate::config::Settings;
use crate::kafka::client_config;

pub type EngineConsumer = StreamConsumer;

/// How long closing the consumer (final commit, leaving the group) may take.
const CONSUMER_CLOSE_TIMEOUT_MS: u64 = 10_000;

pub fn build_consumer(settings: &Settings) -> Result<EngineConsumer, KafkaError> {
    let consumer: StreamConsumer = client_config(&settings.kafka_brokers)
        .set("group.id", &settings.consumer_group)
        // Offsets are stored by hand after the PostgreSQL commit that covers them;
        // librdkafka then commits stored offsets in the background.
        .set("enable.auto.offset.store", "false")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", settings.consumer_session_timeout_ms.to_string())
        .set("fetch.wait.max.ms", "50")
        .create()?;
    consumer.subscribe(&[&settings.topic])?;
    Ok(consumer)
}

/// Commits stored offsets synchronously, then drops the consumer (which leaves
/// the group). Both happen on a blocking thread with a timeout: librdkafka's
/// close was seen to hang when a consumer was dropped on an async worker.
pub async fn close(consumer: Arc<EngineConsumer>) {
    let closing = tokio::task::spawn_blocking(move || {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => info!("Final offsets committed."),
            // Nothing was stored since the last background commit: nothing to do.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => info!("Offsets were already committed."),
            Err(e) => {
                warn!(error = %e, "Final offset commit did not complete; the next owner re-reads (and the ledger ignores) the last batch.")
            }
        }
        drop(consumer);
    });
    if tokio::time::timeout(Duration::from_millis(CONSUMER_CLOSE_TIMEOUT_MS), closing).await.is_err() {
        warn!("Consumer close timed out; leaving it behind.");
    }
}
