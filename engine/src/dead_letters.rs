//! `transfer-engine dead-letters list|replay`: the records the processor
//! kept aside, on the dead-letter topic (`<topic>.dlq`) or in PostgreSQL's
//! quarantine (when the topic refused them), and putting them back on their
//! source topic once the cause is fixed (a processor upgraded to read a new
//! schema version, a constraint corrected). Replaying is always safe: the
//! ledger applies a transfer id once, so a record that was applied is a
//! duplicate, and one that still cannot be applied is kept aside again.
//!
//! Needs the database and the broker (the engine's own settings), not a
//! running engine.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Serialize;

use crate::config::Settings;
use crate::kafka;
use crate::ledger::{KeptRecord, Ledger, Quarantined};
use crate::processor::kept_record;

/// How long to wait for the broker's answers while reading the dead-letter topic.
const BROKER_TIMEOUT_MS: u64 = 10_000;
/// The largest record a replay sends. Larger than librdkafka's default (1 MB):
/// a record quarantined because it was too large for the dead-letter topic
/// must still be replayable; the broker's own limit still applies.
const REPLAY_RECORD_BYTES_MAX: u32 = 16 << 20;
/// Quarantined records read per page by `replay --all-quarantined`.
const REPLAY_PAGE_ROWS: i64 = 100;
/// The first bytes of a payload shown in a listing.
const PAYLOAD_PREVIEW_BYTES_MAX: usize = 200;

#[derive(Subcommand)]
pub enum DeadLetterCommand {
    /// List dead letters (oldest first) and quarantined records that were not replayed.
    List {
        /// Most records to show from each place.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Also show quarantined records that were replayed.
        #[arg(long)]
        include_replayed: bool,
        #[arg(long)]
        json: bool,
    },
    /// Put records back on their source topic, with their key and headers.
    Replay {
        /// A dead letter by its position on the dead-letter topic, `PARTITION:OFFSET`; repeatable.
        #[arg(long = "dlq", value_name = "PARTITION:OFFSET")]
        dead_letters: Vec<String>,
        /// A quarantined record by its id; repeatable.
        #[arg(long = "quarantined", value_name = "ID")]
        quarantined: Vec<i64>,
        /// Every quarantined record not replayed yet.
        #[arg(long)]
        all_quarantined: bool,
    },
}

/// A record as listed.
#[derive(Serialize)]
struct Listed {
    /// `dlq` or `quarantine`.
    place: &'static str,
    /// `PARTITION:OFFSET` on the dead-letter topic, or the quarantine id.
    id: String,
    reason: String,
    source_topic: String,
    source_partition: i32,
    source_offset: i64,
    key: Option<String>,
    payload_bytes: usize,
    payload_preview: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    replayed_at: Option<chrono::DateTime<chrono::Utc>>,
}

pub async fn run(settings: &Settings, command: DeadLetterCommand) -> anyhow::Result<()> {
    let pool = crate::startup::connect_database(settings).await?;
    let ledger = crate::startup::ledger_for(pool, settings);
    match command {
        DeadLetterCommand::List { limit, include_replayed, json } => list(settings, &ledger, limit, include_replayed, json).await,
        DeadLetterCommand::Replay { dead_letters, quarantined, all_quarantined } => {
            replay(settings, &ledger, &dead_letters, &quarantined, all_quarantined).await
        }
    }
}

async fn list(settings: &Settings, ledger: &Ledger, limit: usize, include_replayed: bool, json: bool) -> anyhow::Result<()> {
    let mut listed: Vec<Listed> = read_dead_letters(settings, limit).await?.iter().map(listed_dead_letter).collect();
    let quarantined = ledger.quarantined(include_replayed, i64::try_from(limit).unwrap_or(i64::MAX)).await?;
    listed.extend(quarantined.into_iter().map(|q| Listed {
        place: "quarantine",
        id: q.quarantine_id.to_string(),
        replayed_at: q.replayed_at,
        ..listed_record(&q.record)
    }));
    if json {
        println!("{}", serde_json::to_string_pretty(&listed)?);
        return Ok(());
    }
    if listed.is_empty() {
        println!("No dead letters and no quarantined records.");
    }
    for l in &listed {
        let replayed = l.replayed_at.map(|at| format!(" (replayed {at})")).unwrap_or_default();
        println!("{} {}{replayed}: {}", l.place, l.id, l.reason);
        println!(
            "    from {}:{}@{}, key {:?}, {} bytes: {}",
            l.source_topic, l.source_partition, l.source_offset, l.key, l.payload_bytes, l.payload_preview
        );
    }
    Ok(())
}

fn listed_record(r: &KeptRecord) -> Listed {
    let payload = r.payload.as_deref().unwrap_or_default();
    let preview = String::from_utf8_lossy(&payload[..payload.len().min(PAYLOAD_PREVIEW_BYTES_MAX)]).into_owned();
    Listed {
        place: "quarantine",
        id: String::new(),
        reason: r.reason.clone(),
        source_topic: r.source_topic.clone(),
        source_partition: r.source_partition,
        source_offset: r.source_offset,
        key: r.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()),
        payload_bytes: payload.len(),
        payload_preview: preview,
        replayed_at: None,
    }
}

/// A dead letter's `dlq.*` headers say where it came from and why.
fn listed_dead_letter(m: &OwnedMessage) -> Listed {
    let record = kept_from_dead_letter(m);
    Listed { place: "dlq", id: format!("{}:{}", m.partition(), m.offset()), ..listed_record(&record) }
}

/// The record as it was before it was dead-lettered: the `dlq.*` headers
/// give back its source position and reason, and are not its own.
fn kept_from_dead_letter(m: &OwnedMessage) -> KeptRecord {
    let mut record = kept_record(m, String::new());
    // Unknown until the headers say (an empty topic replays onto the engine's own).
    (record.source_topic, record.source_partition, record.source_offset) = (String::new(), -1, -1);
    let mut own = Vec::with_capacity(record.headers.len());
    for (key, value) in std::mem::take(&mut record.headers) {
        let text = || String::from_utf8_lossy(value.as_deref().unwrap_or_default()).into_owned();
        match key.as_str() {
            "dlq.reason" => record.reason = text(),
            "dlq.source.topic" => record.source_topic = text(),
            "dlq.source.partition" => record.source_partition = text().parse().unwrap_or(-1),
            "dlq.source.offset" => record.source_offset = text().parse().unwrap_or(-1),
            _ => own.push((key, value)),
        }
    }
    record.headers = own;
    record
}

/// A consumer that reads without a group's committed offsets and commits nothing.
fn reader(settings: &Settings) -> anyhow::Result<StreamConsumer> {
    kafka::client_config(&settings.kafka_brokers)
        .set("group.id", format!("dead-letters-cli-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("could not create a Kafka consumer (TRANSFER_ENGINE_KAFKA_BROKERS)")
}

/// The dead-letter topic's records, oldest first per partition, at most `limit`.
async fn read_dead_letters(settings: &Settings, limit: usize) -> anyhow::Result<Vec<OwnedMessage>> {
    let dlq = settings.dlq_topic();
    let consumer = reader(settings)?;
    let timeout = Duration::from_millis(BROKER_TIMEOUT_MS);
    let metadata = consumer.fetch_metadata(Some(&dlq), timeout).context("could not read the dead-letter topic's metadata")?;
    let partitions: Vec<i32> = metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    let mut letters = Vec::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(&dlq, partition, timeout)?;
        if high <= low {
            continue;
        }
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&dlq, partition, Offset::Offset(low))?;
        consumer.assign(&assignment)?;
        loop {
            if letters.len() >= limit {
                return Ok(letters);
            }
            let m = tokio::time::timeout(timeout, consumer.recv()).await.context("the broker stopped answering")??.detach();
            let last = m.offset() + 1 >= high;
            letters.push(m);
            if last {
                break;
            }
        }
    }
    Ok(letters)
}

/// One dead letter, by its position.
async fn read_dead_letter(settings: &Settings, partition: i32, offset: i64) -> anyhow::Result<OwnedMessage> {
    let dlq = settings.dlq_topic();
    let consumer = reader(settings)?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(&dlq, partition, Offset::Offset(offset))?;
    consumer.assign(&assignment)?;
    let m = tokio::time::timeout(Duration::from_millis(BROKER_TIMEOUT_MS), consumer.recv())
        .await
        .with_context(|| format!("no dead letter at {partition}:{offset}"))??
        .detach();
    if m.offset() != offset {
        bail!("no dead letter at {partition}:{offset} (it may have been removed by retention)");
    }
    Ok(m)
}

async fn replay(
    settings: &Settings,
    ledger: &Ledger,
    dead_letters: &[String],
    quarantined: &[i64],
    all_quarantined: bool,
) -> anyhow::Result<()> {
    let producer: rdkafka::producer::FutureProducer = kafka::producer_config(&settings.kafka_brokers, settings.publish_timeout_ms)
        .set("message.max.bytes", REPLAY_RECORD_BYTES_MAX.to_string())
        .create()?;
    let mut replayed = 0;
    for position in dead_letters {
        let (partition, offset) = position
            .split_once(':')
            .and_then(|(p, o)| Some((p.parse::<i32>().ok()?, o.parse::<i64>().ok()?)))
            .with_context(|| format!("--dlq {position:?}: give PARTITION:OFFSET"))?;
        let record = kept_from_dead_letter(&read_dead_letter(settings, partition, offset).await?);
        publish(&producer, settings, &record).await?;
        println!("Replayed dead letter {partition}:{offset} onto {}.", target_topic(settings, &record));
        replayed += 1;
    }
    for id in quarantined {
        let q = ledger.quarantined_record(*id).await?.with_context(|| format!("no quarantined record {id}"))?;
        replay_quarantined(&producer, settings, ledger, &q).await?;
        replayed += 1;
    }
    if all_quarantined {
        // Page by page (payloads may be megabytes each), up to the last id
        // quarantined before the walk began.
        let up_to = ledger.last_quarantine_id().await?;
        let mut after = 0;
        loop {
            let page = ledger.unreplayed_quarantined(after, up_to, REPLAY_PAGE_ROWS).await?;
            let Some(last) = page.last() else { break };
            after = last.quarantine_id;
            for q in &page {
                replay_quarantined(&producer, settings, ledger, q).await?;
                replayed += 1;
            }
        }
    }
    if replayed == 0 {
        bail!("nothing to replay: give --dlq PARTITION:OFFSET, --quarantined ID or --all-quarantined");
    }
    Ok(())
}

async fn replay_quarantined(
    producer: &rdkafka::producer::FutureProducer,
    settings: &Settings,
    ledger: &Ledger,
    q: &Quarantined,
) -> anyhow::Result<()> {
    publish(producer, settings, &q.record).await?;
    ledger.mark_replayed(q.quarantine_id).await?;
    println!("Replayed quarantined record {} onto {}.", q.quarantine_id, target_topic(settings, &q.record));
    Ok(())
}

/// Where a record goes back to: its source topic, else the engine's topic.
fn target_topic<'a>(settings: &'a Settings, record: &'a KeptRecord) -> &'a str {
    if record.source_topic.is_empty() { &settings.topic } else { &record.source_topic }
}

async fn publish(producer: &rdkafka::producer::FutureProducer, settings: &Settings, record: &KeptRecord) -> anyhow::Result<()> {
    let mut headers = OwnedHeaders::new();
    for (key, value) in &record.headers {
        headers = headers.insert(Header { key: key.as_str(), value: value.as_deref() });
    }
    let key = String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).into_owned();
    let topic = target_topic(settings, record);
    kafka::publish(producer, topic, &key, record.payload.as_deref().unwrap_or_default(), Some(headers))
        .await
        .with_context(|| format!("could not publish onto {topic}"))
}
