//! `transfer-engine events tail`: prints the events topic's events, one JSON
//! object per line, as they arrive (or from the beginning). It reads every
//! partition directly, in no consumer group, and commits nothing, so it can
//! run beside real consumers and as a smoke test.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::Settings;
use crate::kafka;

/// How long reading the topic's partitions may take.
const METADATA_TIMEOUT_MS: u64 = 10_000;

#[derive(clap::Args, Debug)]
pub struct TailArgs {
    /// Print the events the topic still holds before the new ones.
    #[arg(long)]
    pub from_beginning: bool,
    /// Only events of this type (e.g. transfer.completed); repeat for several.
    #[arg(long = "type", value_name = "TYPE")]
    pub types: Vec<String>,
    /// Stop after printing this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop when no event arrives for this long, in seconds; with --count, a
    /// stop before the count is reached is an error.
    #[arg(long)]
    pub idle_timeout_s: Option<u64>,
}

#[derive(clap::Subcommand, Debug)]
pub enum EventsCommand {
    /// Print events as they are published.
    Tail(TailArgs),
}

pub async fn run(settings: &Settings, command: EventsCommand) -> anyhow::Result<()> {
    match command {
        EventsCommand::Tail(args) => tail(settings, args).await,
    }
}

async fn tail(settings: &Settings, args: TailArgs) -> anyhow::Result<()> {
    if let Some(unknown) = args.types.iter().find(|t| !super::EVENT_TYPES.contains(&t.as_str())) {
        bail!("unknown event type {unknown:?}; the types are {}", super::EVENT_TYPES.join(", "));
    }
    let topic = settings.events_topic();
    let consumer: StreamConsumer = kafka::client_config(&settings.kafka_brokers)
        .set("group.id", format!("events-tail-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // An event is printed as soon as the broker has it, not with the next full fetch.
        .set("fetch.wait.max.ms", "20")
        .create()
        .context("could not create a Kafka consumer (TRANSFER_ENGINE_KAFKA_BROKERS)")?;
    let metadata = consumer
        .fetch_metadata(Some(&topic), Duration::from_millis(METADATA_TIMEOUT_MS))
        .context("could not read the events topic's metadata (TRANSFER_ENGINE_KAFKA_BROKERS)")?;
    let partitions: Vec<i32> =
        metadata.topics().iter().filter(|t| t.error().is_none()).flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    if partitions.is_empty() {
        bail!("the events topic {topic:?} does not exist yet (an engine with events_enabled creates it at start)");
    }
    let start = if args.from_beginning { Offset::Beginning } else { Offset::End };
    let mut assignment = TopicPartitionList::new();
    for partition in partitions {
        assignment.add_partition_offset(&topic, partition, start)?;
    }
    consumer.assign(&assignment)?;
    let mut printed = 0u64;
    let mut out = std::io::stdout();
    while args.count.is_none_or(|count| printed < count) {
        let received = match args.idle_timeout_s {
            Some(s) => match tokio::time::timeout(Duration::from_secs(s), consumer.recv()).await {
                Ok(received) => received,
                Err(_) if args.count.is_some() => bail!("no event for {s} s after {printed} of {} events", args.count.unwrap_or(0)),
                Err(_) => return Ok(()),
            },
            None => consumer.recv().await,
        };
        let message = received.context("could not read the events topic")?;
        let Some(payload) = message.payload() else { continue };
        if !args.types.is_empty() {
            let event_type = serde_json::from_slice::<serde_json::Value>(payload)
                .ok()
                .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
                .unwrap_or_default();
            if !args.types.contains(&event_type) {
                continue;
            }
        }
        out.write_all(payload)?;
        out.write_all(b"\n")?;
        out.flush()?;
        printed += 1;
    }
    Ok(())
}
