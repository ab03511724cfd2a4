//! Plugin costs: per-hook call on a live instance, and processor throughput
//! with the three example plugins active versus pass-through hooks, in the
//! same run. `cargo bench --bench plugins` (needs PostgreSQL, Redis, the
//! broker and `plugins/build.sh`; uses TRANSFER_TESTS_* like the tests).
//!
//! Processor throughput: TRANSFERS records are produced onto a fresh topic
//! first, then a processor-only engine is started and timed from the first
//! committed transfer to the last (the consumer group join is not counted).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use transfer_engine::config::{Secret, Settings};
use transfer_engine::domain::{Amount, Currency, Money, OwnerId, Requested, Submission, TransferId, TransferKind};
use transfer_engine::kafka::{self, TransferRecord};
use transfer_engine::plugins::bindings::types;
use transfer_engine::plugins::set::FailureMode;
use transfer_engine::plugins::{LoadedPlugin, PluginKind, PluginMeta, Registry, Sandbox, SandboxLimits};
use transfer_engine::startup::{Application, Role};

const CALLS: u32 = 100_000;
const ACCOUNTS: i64 = 10_000;
const TRANSFERS: usize = 50_000;

mod common;
use common::env;

fn plugin(file: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../plugins/dist/{file}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run plugins/build.sh)", path.display()))
}

fn config(file: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/plugin-config/{file}.json"));
    std::fs::read_to_string(path).unwrap()
}

fn load(sandbox: &Arc<Sandbox>, file: &str, kind: PluginKind) -> LoadedPlugin {
    let component = sandbox.compile(&plugin(file)).unwrap();
    let meta = PluginMeta { name: file.into(), version: 1, kind, sha256: [0; 32], config: config(file) };
    let loaded = LoadedPlugin::new(sandbox.clone(), meta, &component).unwrap();
    loaded.check().unwrap();
    loaded
}

fn per_call_us(mut call: impl FnMut()) -> f64 {
    for _ in 0..1_000 {
        call();
    }
    let started = Instant::now();
    for _ in 0..CALLS {
        call();
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(CALLS)
}

fn hook_costs() {
    let sandbox = Sandbox::new(SandboxLimits { instances_max: 8, ..SandboxLimits::default() }).unwrap();
    let eur = types::Currency { code: "EUR".into(), exponent: 2 };
    let transfer = types::Transfer {
        id: TransferId::generate().to_string(),
        sender_id: 1,
        receiver_id: 2,
        currency: eur.clone(),
        amount_minor: Some(12_345),
        original: None,
        description: Some("rent for March, card 4111 1111 1111 1234".into()),
    };
    let limits = load(&sandbox, "limits", PluginKind::Validator);
    let fx = load(&sandbox, "fx", PluginKind::Converter);
    let description = load(&sandbox, "description", PluginKind::Describer);
    let usd = types::Money { amount_minor: 1_000, currency: types::Currency { code: "USD".into(), exponent: 2 } };
    let text = transfer.description.clone().unwrap();
    println!("Per-hook cost on a live instance ({CALLS} calls each, one thread):");
    println!("  limits.validate     {:>6.2} us", per_call_us(|| drop(limits.validate(&transfer).unwrap())));
    println!("  fx.convert          {:>6.2} us", per_call_us(|| drop(fx.convert(&usd, &eur).unwrap())));
    println!("  description.rewrite {:>6.2} us", per_call_us(|| drop(description.rewrite(&text, &transfer).unwrap())));
}

async fn processor_throughput(with_plugins: bool) -> f64 {
    let db = common::seeded_database("proc", ACCOUNTS).await;
    let pool = db.pool.clone();
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let settings = Settings {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        database_url: Secret::new(db.url.clone()),
        redis_url: Secret::new(env("TRANSFER_TESTS_REDIS_URL", "redis://127.0.0.1:6379/0")),
        redis_key_prefix: format!("bench-{unique}:"),
        kafka_brokers: env("TRANSFER_TESTS_KAFKA_BROKERS", "127.0.0.1:9092"),
        topic: format!("bench-{unique}"),
        topic_partitions: 4,
        consumer_group: format!("bench-{unique}"),
        ..Settings::default()
    };
    if with_plugins {
        let sandbox = Sandbox::new(SandboxLimits { instances_max: 8, ..SandboxLimits::default() }).unwrap();
        let registry = Arc::new(Registry::new(pool.clone(), sandbox, settings.description_chars_max, FailureMode::Closed));
        for (file, kind) in [("limits", PluginKind::Validator), ("fx", PluginKind::Converter), ("description", PluginKind::Describer)] {
            let info = registry.upload(file, Some(kind), config(file), plugin(file)).await.unwrap();
            registry.activate(file, info.version).await.unwrap();
        }
    }
    // Pre-load the topic: every tenth transfer is given in USD, so the converter works too.
    kafka::ensure_topics(&settings.kafka_brokers, &settings.topic, &settings.dlq_topic(), settings.topic_partitions).await.unwrap();
    let producer = kafka::producer(&settings.kafka_brokers, 30_000).unwrap();
    let eur = Currency::parse("EUR").unwrap();
    let usd = Currency::parse("USD").unwrap();
    let mut sends = Vec::with_capacity(TRANSFERS);
    for i in 0..TRANSFERS as i64 {
        let from = 1 + (i * 7_919) % ACCOUNTS;
        let to = 1 + (from + 1 + (i * 104_729) % (ACCOUNTS - 1)) % ACCOUNTS;
        let amount = Amount::from_minor(1 + i % 5_000).unwrap();
        let requested = if i % 10 == 0 { Requested::Original(Money { amount, currency: usd }) } else { Requested::Amount(amount) };
        let s = Submission {
            id: TransferId::generate(),
            kind: TransferKind::Transfer,
            sender: OwnerId::new(from).unwrap(),
            receiver: OwnerId::new(to).unwrap(),
            currency: eur,
            requested,
            description: Some(format!("invoice {i}")),
            submitted_at: Utc::now(),
        };
        let payload = serde_json::to_vec(&TransferRecord::from_submission(&s)).unwrap();
        let key = kafka::record_key(s.sender, s.currency);
        let producer = producer.clone();
        let topic = settings.topic.clone();
        sends.push(tokio::spawn(async move { kafka::publish(&producer, &topic, &key, &payload, None).await.unwrap() }));
    }
    for send in sends {
        send.await.unwrap();
    }
    let app = Application::build(settings, Role::Processor).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    // Timed from the first committed transfer to the last, so the consumer
    // group join (seconds on the local broker) is not counted.
    let count = || async {
        sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM transfers WHERE kind = 'transfer'").fetch_one(&pool).await.unwrap().0
    };
    let (mut first_seen, mut started) = (0, Instant::now());
    loop {
        let done = count().await;
        if first_seen == 0 && done > 0 {
            (first_seen, started) = (done, Instant::now());
        }
        if done as usize >= TRANSFERS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let rate = (TRANSFERS as i64 - first_seen) as f64 / started.elapsed().as_secs_f64();
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    let report = transfer_engine::ledger::Ledger::new(pool.clone()).audit().await.unwrap();
    assert!(report.passed(), "{report:#?}");
    db.drop_database().await;
    rate
}

#[tokio::main]
async fn main() {
    hook_costs();
    println!("Processor throughput, {TRANSFERS} transfers pre-loaded, {ACCOUNTS} accounts, one processor, steady state:");
    let pass_through = processor_throughput(false).await;
    let plugins = processor_throughput(true).await;
    println!("  pass-through hooks  {pass_through:>8.0} transfers/s");
    println!("  three plugins       {plugins:>8.0} transfers/s  ({:.1}% of pass-through)", plugins / pass_through * 100.0);
}
