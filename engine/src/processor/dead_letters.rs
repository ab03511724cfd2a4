//! Keeping records the processor cannot apply: on the dead-letter topic when
//! the broker takes them, otherwise in PostgreSQL's quarantine. A record is
//! always kept, and keeping it never blocks the pipeline for longer than a
//! few bounded publish attempts: a dead-letter topic that is gone, an ACL
//! that forbids it, or a record too large for it once the `dlq.*` headers
//! are added must not stop every partition.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, OwnedMessage};
use tokio::sync::watch;
use tracing::{error, warn};

use super::{Processor, backoff, wait_or_stop};
use crate::kafka::{self, PublishError};
use crate::ledger::KeptRecord;

/// Publish attempts for one dead letter before it is quarantined instead.
const DEAD_LETTER_PUBLISH_ATTEMPTS_MAX: u32 = 3;
/// After the dead-letter topic refused a record, how long later records go
/// straight to the quarantine (so a batch of poison does not pay the
/// attempts once per record).
const DEAD_LETTER_TOPIC_PAUSE_MS: u64 = 30_000;

/// A record that cannot become a ledger entry, and why.
pub(super) struct DeadLetter {
    pub reason: String,
    pub message: OwnedMessage,
}

/// When the dead-letter topic last refused a record.
#[derive(Default)]
pub struct DeadLetterTopicState {
    refused_at: Mutex<Option<Instant>>,
}

impl DeadLetterTopicState {
    fn paused(&self) -> bool {
        let refused_at = self.refused_at.lock().expect("not poisoned");
        refused_at.is_some_and(|at| at.elapsed() < Duration::from_millis(DEAD_LETTER_TOPIC_PAUSE_MS))
    }

    fn refused(&self) {
        *self.refused_at.lock().expect("not poisoned") = Some(Instant::now());
    }
}

/// A broker's answer that no retry of the same record will change.
fn refused_for_good(e: &PublishError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        e,
        PublishError::Kafka(KafkaError::MessageProduction(
            MessageSizeTooLarge
                | InvalidMessageSize
                | UnknownTopicOrPartition
                | UnknownTopic
                | UnknownPartition
                | TopicAuthorizationFailed
                | InvalidRecord
        ))
    )
}

impl Processor {
    /// Keeps a dead letter: on the dead-letter topic if it takes it within a
    /// few attempts, else in the quarantine (retried while PostgreSQL is
    /// away, like a batch). False only if shutdown interrupted it.
    pub(super) async fn keep_dead_letter(&self, letter: &DeadLetter, shutdown: &mut watch::Receiver<bool>) -> bool {
        let m = &letter.message;
        if !self.dead_letter_topic.paused() {
            match self.publish_dead_letter(letter, shutdown).await {
                Some(Ok(())) => {
                    warn!(partition = m.partition(), offset = m.offset(), reason = %letter.reason, "Record sent to the dead-letter topic.");
                    return true;
                }
                Some(Err(e)) => {
                    self.dead_letter_topic.refused();
                    error!(partition = m.partition(), offset = m.offset(), error = %e,
                        "The dead-letter topic refused a record; quarantining it in PostgreSQL (and the next ones for a while).");
                }
                None => return false,
            }
        }
        let record = kept_record(m, letter.reason.clone());
        let mut failures = 0;
        loop {
            match self.ledger.quarantine(&record).await {
                Ok(()) => {
                    warn!(partition = m.partition(), offset = m.offset(), reason = %letter.reason, "Record quarantined in PostgreSQL.");
                    self.metrics.count_outcome("quarantined", 1);
                    return true;
                }
                Err(e) => {
                    failures += 1;
                    warn!(error = %e, failures, "Record not quarantined; retrying.");
                    if wait_or_stop(backoff(failures), shutdown).await {
                        return false;
                    }
                }
            }
        }
    }

    /// None if shutdown interrupted it.
    async fn publish_dead_letter(&self, letter: &DeadLetter, shutdown: &mut watch::Receiver<bool>) -> Option<Result<(), PublishError>> {
        let m = &letter.message;
        let headers = kafka::dlq_headers(&letter.reason, m.topic(), m.partition(), m.offset());
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        let dlq = self.settings.dlq_topic();
        let mut failures = 0;
        loop {
            match self.dead_letter_publisher.publish(&dlq, &key, m.payload().unwrap_or_default(), Some(headers.clone())).await {
                Ok(()) => {
                    self.metrics.count_outcome("dead_lettered", 1);
                    return Some(Ok(()));
                }
                Err(e) => {
                    failures += 1;
                    if refused_for_good(&e) || failures >= DEAD_LETTER_PUBLISH_ATTEMPTS_MAX {
                        return Some(Err(e));
                    }
                    warn!(error = %e, failures, "Dead letter not acknowledged; retrying.");
                    if wait_or_stop(backoff(failures), shutdown).await {
                        return None;
                    }
                }
            }
        }
    }
}

/// The record as read: payload, key and headers byte for byte, and its source position.
pub(crate) fn kept_record(m: &OwnedMessage, reason: String) -> KeptRecord {
    let headers = m.headers().map(|h| h.iter().map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec))).collect()).unwrap_or_default();
    KeptRecord {
        source_topic: m.topic().to_owned(),
        source_partition: m.partition(),
        source_offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        headers,
        payload: m.payload().map(<[u8]>::to_vec),
        reason,
    }
}
