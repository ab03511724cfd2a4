//! Kafka plumbing shared by the API (publisher) and the processor (consumer):
//! client settings, topic creation, and the wire format of a transfer record.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};

use crate::domain::{Amount, ClientId, Currency, Metadata, Money, OwnerId, Requested, Submission, TransferId, TransferKind};

/// Settings every client of ours shares.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        // The local broker listens on IPv4 only; trying ::1 first costs a timeout.
        .set("broker.address.family", "v4");
    config
}

/// Creates the transfers topic, its dead-letter topic and the events topic
/// (when given) if they are missing: the transfers and events topics with
/// `partitions` partitions, the dead-letter topic with one, each partition
/// with `replication` replicas. `None` asks for the
/// cluster's default (`num.partitions`, `default.replication.factor`), which
/// brokers from Kafka 2.4 on accept as -1 (KIP-464). A topic that exists is
/// left as it is.
pub async fn ensure_topics(
    brokers: &str,
    topic: &str,
    dlq_topic: &str,
    events_topic: Option<&str>,
    partitions: Option<i32>,
    replication: Option<i32>,
) -> Result<(), KafkaError> {
    const CLUSTER_DEFAULT: i32 = -1;
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create()?;
    let replication = replication.unwrap_or(CLUSTER_DEFAULT);
    let partitions = partitions.unwrap_or(CLUSTER_DEFAULT);
    let mut topics = vec![
        NewTopic::new(topic, partitions, TopicReplication::Fixed(replication)),
        NewTopic::new(dlq_topic, 1, TopicReplication::Fixed(replication)),
    ];
    if let Some(events_topic) = events_topic {
        topics.push(NewTopic::new(events_topic, partitions, TopicReplication::Fixed(replication)));
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaError::AdminOp(code)).inspect_err(|_| tracing::error!(topic = %name, "Topic could not be created."));
            }
        }
    }
    Ok(())
}

/// `ensure_topics` for the topics the settings name (the transfers topic, its
/// dead-letter topic, and the events topic when events are on).
pub async fn ensure_engine_topics(settings: &crate::config::Settings) -> Result<(), KafkaError> {
    let (partitions, replication) = (settings.topic_partitions, settings.topic_replication_factor);
    let events_topic = settings.events_topic_if_enabled();
    ensure_topics(&settings.kafka_brokers, &settings.topic, &settings.dlq_topic(), events_topic.as_deref(), partitions, replication).await
}

/// How long start-up waits for a topic's metadata to list its partitions (a
/// topic created a moment ago may not be listed yet).
const TOPIC_METADATA_WAIT_MS: u64 = 5_000;

/// The number of replicas of each partition of `topic`, by partition, as the
/// cluster's metadata lists them; empty if the topic has no partition listed
/// within `TOPIC_METADATA_WAIT_MS`.
pub async fn partition_replicas(brokers: &str, topic: &str) -> Result<Vec<(i32, usize)>, KafkaError> {
    let config = client_config(brokers);
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        use rdkafka::producer::Producer as _;
        let client: rdkafka::producer::BaseProducer = config.create()?;
        let deadline = std::time::Instant::now() + Duration::from_millis(TOPIC_METADATA_WAIT_MS);
        loop {
            let metadata = client.client().fetch_metadata(Some(&topic), Duration::from_millis(TOPIC_METADATA_WAIT_MS))?;
            let replicas: Vec<(i32, usize)> = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic && t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| (p.id(), p.replicas().len())))
                .collect();
            if !replicas.is_empty() || std::time::Instant::now() >= deadline {
                return Ok(replicas);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .expect("reading topic metadata does not panic")
}

/// Logs one warning naming those of `topics` that have a partition with a
/// single replica: the producer's `acks=all` then waits for that one broker
/// only, and losing it loses acknowledged records.
pub async fn warn_on_single_replicas(brokers: &str, topics: &[&str]) {
    let mut single = Vec::new();
    for &topic in topics {
        match partition_replicas(brokers, topic).await {
            Ok(replicas) if replicas.iter().any(|&(_, n)| n < 2) => single.push(topic),
            Ok(_) => {}
            Err(e) => tracing::warn!(topic, error = %e, "Could not read the topic's replication from the cluster."),
        }
    }
    if !single.is_empty() {
        tracing::warn!(topics = ?single, "Topics have partitions with one replica: losing that broker loses acknowledged records.");
    }
}

/// An idempotent producer that waits for every in-sync replica (acks=all);
/// how many that is depends on the topic's replication (see `warn_on_single_replicas`).
pub fn producer(brokers: &str, delivery_timeout_ms: u64) -> Result<FutureProducer, KafkaError> {
    producer_config(brokers, delivery_timeout_ms).create()
}

/// The configuration `producer` creates, for a caller that needs to change a setting.
///
/// Tuned for the API, where a submit waits for its own record's acknowledgement
/// (the dead-letter producer, a record now and then, does not mind either way):
/// - `linger.ms` 0: a record is sent as soon as the producer's thread sees it.
///   At 2,000 submits/s over 4 partitions a partition gets a record every 2 ms
///   on average, so any linger mostly delays a record for no company. Batching
///   under load does not depend on it: with idempotence librdkafka keeps at
///   most 5 produce requests in flight per connection, and records that
///   arrive meanwhile go together in the next one.
/// - `batch.num.messages`, `batch.size` and the local queue's limits: the
///   defaults, which a batch of this workload never nears.
/// - `socket.nagle.disable`: librdkafka's default since 2.10, set so that an
///   older librdkafka cannot hold small produce requests back.
pub fn producer_config(brokers: &str, delivery_timeout_ms: u64) -> ClientConfig {
    let mut config = client_config(brokers);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("socket.nagle.disable", "true")
        .set("message.timeout.ms", delivery_timeout_ms.to_string());
    config
}

/// Sends one record and waits for the broker's acknowledgement.
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
) -> Result<(), KafkaError> {
    let mut record = FutureRecord::to(topic).key(key).payload(payload);
    if let Some(headers) = headers {
        record = record.headers(headers);
    }
    // Queue-full waits count against librdkafka's message.timeout.ms, so no extra timeout here.
    producer.send(record, Duration::from_secs(0)).await.map(|_| ()).map_err(|(e, _)| e)
}

/// A publish that did not get the broker's acknowledgement.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("no acknowledgement within {0} ms")]
    TimedOut(u64),
}

/// Past the delivery timeout, how long a publish may still wait before it is
/// answered as failed anyway (librdkafka was seen to hold queued records well
/// past `message.timeout.ms` while no broker was reachable).
const PUBLISH_GRACE_MS: u64 = 250;
/// A failing producer is rebuilt at most this often.
const PRODUCER_REBUILD_INTERVAL_MS: u64 = 5_000;

/// The engine's producer, which heals itself. The idempotent producer keeps
/// its producer id across broker restarts; a broker that lost its state (as
/// our local broker does, keeping everything in memory) then refuses every
/// record with `UnknownProducerId` and librdkafka never recovers: every publish
/// times out until the process restarts. So after a failed publish the
/// producer is rebuilt (at most every `PRODUCER_REBUILD_INTERVAL_MS`); a
/// record the old one may still deliver is harmless, the ledger applies an id once.
#[derive(Clone)]
pub struct Publisher {
    inner: std::sync::Arc<PublisherInner>,
}

struct PublisherInner {
    brokers: String,
    delivery_timeout_ms: u64,
    producer: std::sync::RwLock<FutureProducer>,
    last_rebuild: std::sync::Mutex<std::time::Instant>,
    /// Set by a failed publish, cleared by a successful one or a rebuild: readiness reads it.
    failing: std::sync::atomic::AtomicBool,
}

impl Publisher {
    pub fn new(brokers: &str, delivery_timeout_ms: u64) -> Result<Self, KafkaError> {
        Ok(Self {
            inner: std::sync::Arc::new(PublisherInner {
                brokers: brokers.to_owned(),
                delivery_timeout_ms,
                producer: std::sync::RwLock::new(producer(brokers, delivery_timeout_ms)?),
                last_rebuild: std::sync::Mutex::new(std::time::Instant::now()),
                failing: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// The current producer (cheap: a handle), e.g. for metadata requests.
    pub fn producer(&self) -> FutureProducer {
        self.inner.producer.read().expect("not poisoned").clone()
    }

    /// False from a failed publish until a publish succeeds or the producer is rebuilt.
    pub fn healthy(&self) -> bool {
        !self.inner.failing.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends one record and waits for the broker's acknowledgement, at most
    /// the delivery timeout (plus a little grace).
    pub async fn publish(&self, topic: &str, key: &str, payload: &[u8], headers: Option<OwnedHeaders>) -> Result<(), PublishError> {
        use std::sync::atomic::Ordering;
        let producer = self.producer();
        let limit_ms = self.inner.delivery_timeout_ms + PUBLISH_GRACE_MS;
        let sent = tokio::time::timeout(Duration::from_millis(limit_ms), publish(&producer, topic, key, payload, headers)).await;
        let result = match sent {
            Ok(Ok(())) => {
                self.inner.failing.store(false, Ordering::Relaxed);
                return Ok(());
            }
            Ok(Err(e)) => Err(PublishError::Kafka(e)),
            Err(_) => Err(PublishError::TimedOut(limit_ms)),
        };
        self.inner.failing.store(true, Ordering::Relaxed);
        self.rebuild_if_due();
        result
    }

    fn rebuild_if_due(&self) {
        let mut last = self.inner.last_rebuild.lock().expect("not poisoned");
        if last.elapsed() < Duration::from_millis(PRODUCER_REBUILD_INTERVAL_MS) {
            return;
        }
        *last = std::time::Instant::now();
        match producer(&self.inner.brokers, self.inner.delivery_timeout_ms) {
            Ok(fresh) => {
                let old = std::mem::replace(&mut *self.inner.producer.write().expect("not poisoned"), fresh);
                // Destroying a librdkafka handle can block: do it on a blocking thread,
                // once the publishes still holding it have given up (they are bounded).
                let linger = Duration::from_millis(self.inner.delivery_timeout_ms + 2 * PUBLISH_GRACE_MS);
                tokio::task::spawn_blocking(move || {
                    std::thread::sleep(linger);
                    drop(old);
                });
                self.inner.failing.store(false, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!("Publishing failed; the Kafka producer was rebuilt.");
            }
            Err(e) => tracing::warn!(error = %e, "Publishing failed and the Kafka producer could not be rebuilt."),
        }
    }
}

pub fn dlq_headers(reason: &str, source_topic: &str, partition: i32, offset: i64) -> OwnedHeaders {
    OwnedHeaders::new()
        .insert(Header { key: "dlq.reason", value: Some(reason) })
        .insert(Header { key: "dlq.source.topic", value: Some(source_topic) })
        .insert(Header { key: "dlq.source.partition", value: Some(&partition.to_string()) })
        .insert(Header { key: "dlq.source.offset", value: Some(&offset.to_string()) })
}

/// Records are keyed by the debit account, so one account's debits keep their order.
pub fn record_key(sender: OwnerId, currency: Currency) -> String {
    format!("{sender}:{currency}")
}

/// The header that carries the id of the API client that submitted a record.
///
/// A header rather than a field of the JSON body: the previous release
/// decodes bodies with `deny_unknown_fields` and would dead-letter a record
/// with a new field, while it ignores headers. During a rolling deploy an
/// older processor then still applies every transfer, only without its
/// client id.
pub const CLIENT_ID_HEADER: &str = "transfer.client_id";

/// The headers a published transfer carries.
pub fn record_headers(s: &Submission) -> Option<OwnedHeaders> {
    let id = s.client_id?.0.hyphenated().to_string();
    Some(OwnedHeaders::new().insert(Header { key: CLIENT_ID_HEADER, value: Some(&id) }))
}

/// The schema version this engine writes.
///
/// The versions are minor versions of one schema: a new version may only add
/// optional fields, which older readers ignore. A processor reads the
/// previous, its own and the next version, so during a rolling deploy (API
/// and processors one release apart, in either order) no transfer that the
/// API acknowledged is dead-lettered. A breaking change needs a new topic.
///
/// Version 2 added `metadata`.
pub const SCHEMA_VERSION: u32 = 2;

/// The versions this engine reads: its own and its neighbours (there is no version 0).
pub const SCHEMA_VERSIONS_READ: std::ops::RangeInclusive<u32> =
    if SCHEMA_VERSION > 1 { SCHEMA_VERSION - 1 } else { 1 }..=SCHEMA_VERSION + 1;

/// The earliest and latest `submitted_at` a record may carry. Far wider than
/// any real clock, and inside what PostgreSQL's `timestamptz` stores (4713 BC
/// to 294276 AD): a time PostgreSQL refuses would fail its batch on every try.
const SUBMITTED_AT_YEAR_MIN: i32 = 2000;
const SUBMITTED_AT_YEAR_MAX: i32 = 9999;

/// A transfer on the wire (JSON). Amounts are integer minor units.
///
/// Unknown fields are ignored (not refused): they are how the next minor
/// version of the schema adds optional data (see `SCHEMA_VERSION`).
#[derive(Debug, Serialize, Deserialize)]
pub struct TransferRecord {
    pub schema_version: u32,
    pub transfer_id: uuid::Uuid,
    pub kind: TransferKind,
    pub sender_id: i64,
    pub receiver_id: i64,
    pub currency: String,
    #[serde(default)]
    pub amount_minor: Option<i64>,
    #[serde(default)]
    pub original_amount_minor: Option<i64>,
    #[serde(default)]
    pub original_currency: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub submitted_at: DateTime<Utc>,
    /// Since version 2; absent when empty, so a record without metadata is
    /// byte for byte what version 1 wrote.
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
}

/// Why a record cannot become a submission: it goes to the dead-letter topic.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not a transfer record: {0}")]
    Malformed(String),
    #[error("unknown schema version {0}")]
    UnknownSchemaVersion(u32),
    #[error("invalid transfer: {0}")]
    Invalid(String),
}

impl DecodeError {
    /// A stable short code for the `dlq.reason` header's first word.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::UnknownSchemaVersion(_) => "unknown_schema_version",
            Self::Invalid(_) => "invalid",
        }
    }
}

impl TransferRecord {
    pub fn from_submission(s: &Submission) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            transfer_id: s.id.0,
            kind: s.kind,
            sender_id: s.sender.get(),
            receiver_id: s.receiver.get(),
            currency: s.currency.code().to_owned(),
            amount_minor: s.amount().map(Amount::minor),
            original_amount_minor: s.original().map(|m| m.amount.minor()),
            original_currency: s.original().map(|m| m.currency.code().to_owned()),
            description: s.description.clone(),
            submitted_at: s.submitted_at,
            metadata: s.metadata.clone(),
        }
    }

    /// Decodes and validates a record's payload, and its `CLIENT_ID_HEADER`
    /// when present, into a submission.
    pub fn decode(payload: Option<&[u8]>, client_id: Option<&[u8]>) -> Result<Submission, DecodeError> {
        let client_id = client_id
            .map(|bytes| {
                std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|text| uuid::Uuid::try_parse(text).ok())
                    .map(ClientId)
                    .ok_or_else(|| DecodeError::Invalid(format!("the {CLIENT_ID_HEADER} header is not a UUID")))
            })
            .transpose()?;
        let mut submission = Self::decode_payload(payload)?;
        submission.client_id = client_id;
        Ok(submission)
    }

    fn decode_payload(payload: Option<&[u8]>) -> Result<Submission, DecodeError> {
        let payload = payload.ok_or_else(|| DecodeError::Malformed("empty payload".into()))?;
        // Read the version first, so a future schema is reported as such rather than as malformed.
        #[derive(Deserialize)]
        struct Version {
            schema_version: u32,
        }
        let version: Version = serde_json::from_slice(payload).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        if !SCHEMA_VERSIONS_READ.contains(&version.schema_version) {
            return Err(DecodeError::UnknownSchemaVersion(version.schema_version));
        }
        let record: TransferRecord = serde_json::from_slice(payload).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        record.into_submission()
    }

    fn into_submission(self) -> Result<Submission, DecodeError> {
        let invalid = |e: &dyn std::fmt::Display| DecodeError::Invalid(e.to_string());
        if self.kind != TransferKind::Transfer {
            return Err(DecodeError::Invalid(format!("kind {} is not processed from the topic", self.kind.as_str())));
        }
        let currency = Currency::parse(&self.currency).map_err(|e| invalid(&e))?;
        let year = chrono::Datelike::year(&self.submitted_at);
        if !(SUBMITTED_AT_YEAR_MIN..=SUBMITTED_AT_YEAR_MAX).contains(&year) {
            return Err(DecodeError::Invalid(format!(
                "submitted_at {} is outside the years {SUBMITTED_AT_YEAR_MIN} to {SUBMITTED_AT_YEAR_MAX}",
                self.submitted_at.to_rfc3339()
            )));
        }
        // PostgreSQL text cannot hold NUL: such a record would fail its batch on
        // every retry and stall the partition. The API refuses it too.
        if self.description.as_deref().is_some_and(|d| d.contains('\0')) {
            return Err(DecodeError::Invalid("the description contains a NUL character".into()));
        }
        let requested = match (self.amount_minor, self.original_amount_minor, self.original_currency) {
            (Some(amount), None, None) => Requested::Amount(Amount::from_minor(amount).map_err(|e| invalid(&e))?),
            (None, Some(amount), Some(code)) => Requested::Original(Money {
                amount: Amount::from_minor(amount).map_err(|e| invalid(&e))?,
                currency: Currency::parse(&code).map_err(|e| invalid(&e))?,
            }),
            _ => {
                return Err(DecodeError::Invalid("give either amount_minor or original_amount_minor with original_currency".into()));
            }
        };
        Ok(Submission {
            id: TransferId(self.transfer_id),
            kind: self.kind,
            sender: OwnerId::new(self.sender_id).map_err(|e| invalid(&e))?,
            receiver: OwnerId::new(self.receiver_id).map_err(|e| invalid(&e))?,
            currency,
            requested,
            description: self.description,
            submitted_at: self.submitted_at,
            client_id: None,
            metadata: self.metadata,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_submission_survives_the_wire() {
        let s = Submission {
            id: TransferId::generate(),
            kind: TransferKind::Transfer,
            sender: OwnerId::new(7).unwrap(),
            receiver: OwnerId::new(8).unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            requested: Requested::Original(Money { amount: Amount::from_minor(900).unwrap(), currency: Currency::parse("JPY").unwrap() }),
            description: Some("dinner".into()),
            submitted_at: Utc::now(),
            client_id: None,
            metadata: Metadata::new([("channel".to_owned(), "web".to_owned())].into()).unwrap(),
        };
        let bytes = serde_json::to_vec(&TransferRecord::from_submission(&s)).unwrap();
        assert_eq!(TransferRecord::decode(Some(&bytes), None), Ok(s.clone()));
        let by_client = Submission { client_id: Some(ClientId::generate()), ..s };
        let bytes = serde_json::to_vec(&TransferRecord::from_submission(&by_client)).unwrap();
        let headers = record_headers(&by_client).expect("a client's record carries its id");
        use rdkafka::message::Headers;
        let header = headers.iter().find(|h| h.key == CLIENT_ID_HEADER).and_then(|h| h.value);
        assert_eq!(TransferRecord::decode(Some(&bytes), header), Ok(by_client));
        assert!(matches!(TransferRecord::decode(Some(&bytes), Some(b"nobody")), Err(DecodeError::Invalid(_))));
    }

    #[test]
    fn poison_records_are_refused_with_a_reason() {
        assert!(matches!(TransferRecord::decode(Some(b"not json"), None), Err(DecodeError::Malformed(_))));
        assert!(matches!(TransferRecord::decode(None, None), Err(DecodeError::Malformed(_))));
        let far_future = br#"{"schema_version": 4, "anything": true}"#;
        assert_eq!(TransferRecord::decode(Some(far_future), None), Err(DecodeError::UnknownSchemaVersion(4)));
        let bad_metadata = br#"{"schema_version":2,"transfer_id":"0194f1e2-7a3b-7c4d-8e5f-000000000001","kind":"transfer","sender_id":1,"receiver_id":2,"currency":"EUR","amount_minor":5,"submitted_at":"2026-01-01T00:00:00Z","metadata":{"Bad Key":"x"}}"#;
        assert!(matches!(TransferRecord::decode(Some(bad_metadata), None), Err(DecodeError::Malformed(_))));
        let ancient = br#"{"schema_version":1,"transfer_id":"0194f1e2-7a3b-7c4d-8e5f-000000000001","kind":"transfer","sender_id":1,"receiver_id":2,"currency":"EUR","amount_minor":5,"submitted_at":"-5000-01-01T00:00:00Z"}"#;
        let refused = TransferRecord::decode(Some(ancient), None);
        assert!(matches!(&refused, Err(DecodeError::Invalid(m)) if m.contains("submitted_at")), "{refused:?}");
        let negative = br#"{"schema_version":1,"transfer_id":"0194f1e2-7a3b-7c4d-8e5f-000000000001","kind":"transfer","sender_id":1,"receiver_id":2,"currency":"EUR","amount_minor":-5,"submitted_at":"2026-01-01T00:00:00Z"}"#;
        assert!(matches!(TransferRecord::decode(Some(negative), None), Err(DecodeError::Invalid(_))));
        let nul = br#"{"schema_version":1,"transfer_id":"0194f1e2-7a3b-7c4d-8e5f-000000000001","kind":"transfer","sender_id":1,"receiver_id":2,"currency":"EUR","amount_minor":5,"description":"rent\u0000","submitted_at":"2026-01-01T00:00:00Z"}"#;
        let refused = TransferRecord::decode(Some(nul), None);
        assert!(matches!(refused, Err(DecodeError::Invalid(_))), "{refused:?}");
    }

    /// A record as the next minor version may write it: a higher
    /// `schema_version` and optional fields this release does not know.
    const NEXT_VERSION_RECORD: &[u8] = br#"{"schema_version":3,"transfer_id":"0194f1e2-7a3b-7c4d-8e5f-000000000002","kind":"transfer","sender_id":1,"receiver_id":2,"currency":"EUR","amount_minor":500,"description":"rent","submitted_at":"2026-11-30T12:00:00Z","metadata":{"channel":"web"},"priority":"high"}"#;

    /// A record exactly as the previous release (schema version 1) wrote it.
    const PREVIOUS_RELEASE_RECORD: &[u8] = br#"{"schema_version":1,"transfer_id":"0194f1e2-7a3b-7c4d-8e5f-000000000003","kind":"transfer","sender_id":1,"receiver_id":2,"currency":"EUR","amount_minor":500,"original_amount_minor":null,"original_currency":null,"description":null,"submitted_at":"2026-11-30T12:00:00.123456Z"}"#;

    #[test]
    fn a_record_of_the_next_minor_version_is_read_and_its_unknown_fields_ignored() {
        let submission = TransferRecord::decode(Some(NEXT_VERSION_RECORD), None).expect("the next minor version is read");
        assert_eq!(submission.amount().map(Amount::minor), Some(500));
        assert_eq!(submission.description.as_deref(), Some("rent"));
        assert_eq!(submission.metadata.get("channel"), Some("web"));
    }

    #[test]
    fn a_record_written_by_the_previous_release_is_read() {
        let submission = TransferRecord::decode(Some(PREVIOUS_RELEASE_RECORD), None).expect("the previous release's record is read");
        assert_eq!(submission.sender, OwnerId::new(1).unwrap());
        assert_eq!(submission.amount().map(Amount::minor), Some(500));
    }

    #[test]
    fn the_versions_read_are_the_neighbours_of_the_version_written() {
        assert!(SCHEMA_VERSIONS_READ.contains(&SCHEMA_VERSION));
        assert!(SCHEMA_VERSIONS_READ.contains(&(SCHEMA_VERSION + 1)));
        assert!(!SCHEMA_VERSIONS_READ.contains(&(SCHEMA_VERSION + 2)));
        assert!(!SCHEMA_VERSIONS_READ.contains(&0));
    }
}
