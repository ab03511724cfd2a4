//! Poison records on the engine's topic, end to end on real services: no
//! record stalls a partition, whatever it holds.
//! - records that cannot become a transfer are dead-lettered with a reason;
//!   records that break a business rule are rejected with its code;
//! - a record PostgreSQL refuses fails alone (`transfer_unstorable`) and the
//!   rest of its batch commits; one it refuses even as a failure is dead-lettered;
//! - a dead letter the dead-letter topic refuses is quarantined in PostgreSQL,
//!   and `transfer-engine dead-letters` lists and replays both;
//! - records of the next minor schema version are applied (rolling deploys);
//! - a processor that stops progressing is reported by `/readyz`;
//! - a redelivered batch refreshes what Redis says about its transfers.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use common::{TestApp, TestDb, assert_audit_passes, eur, owner, test_settings};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer as StreamProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{Value, json};
use transfer_engine::dead_letters::{self, DeadLetterCommand};
use transfer_engine::domain::TransferId;
use transfer_engine::kafka;
use transfer_engine::startup::Role;

/// A schema-1 transfer record from 1 to 2 (EUR 1.00) with `changes` applied (null removes a field).
fn record(changes: Value) -> Vec<u8> {
    let mut record = json!({
        "schema_version": 1,
        "transfer_id": uuid::Uuid::new_v4(),
        "kind": "transfer",
        "sender_id": 1,
        "receiver_id": 2,
        "currency": "EUR",
        "amount_minor": 100,
        "submitted_at": "2026-01-01T00:00:00Z",
    });
    for (key, value) in changes.as_object().unwrap() {
        if value.is_null() {
            record.as_object_mut().unwrap().remove(key);
        } else {
            record[key] = value.clone();
        }
    }
    serde_json::to_vec(&record).unwrap()
}

/// A decodable record and the id to find it by in the ledger.
fn decodable(changes: Value) -> (uuid::Uuid, Vec<u8>) {
    let id = uuid::Uuid::new_v4();
    let mut changes = changes;
    changes["transfer_id"] = json!(id);
    (id, record(changes))
}

/// Reads `<topic>.dlq` until `count` dead letters arrived, then makes sure no
/// more follow. Returns (payload, `dlq.reason`, `dlq.source.topic`, `dlq.source.partition`).
async fn dead_letters(app: &TestApp, count: usize) -> Vec<(Vec<u8>, String, String, String)> {
    let dlq: StreamConsumer = kafka::client_config(&app.settings.kafka_brokers)
        .set("group.id", format!("dlq-reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    // Assigned, not subscribed: no group to join, so the letters arrive at once.
    // The dead-letter topic has one partition (`kafka::ensure_topics`).
    let mut partitions = TopicPartitionList::new();
    partitions.add_partition_offset(&app.settings.dlq_topic(), 0, Offset::Beginning).unwrap();
    dlq.assign(&partitions).unwrap();
    let mut letters = Vec::new();
    while letters.len() < count {
        let m = tokio::time::timeout(Duration::from_secs(30), dlq.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} dead letters arrived: {letters:?}", letters.len()))
            .unwrap();
        let headers = m.headers().expect("dead letters carry headers");
        let header = |key: &str| {
            headers.iter().find(|h| h.key == key).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default()
        };
        letters.push((
            m.payload().unwrap_or_default().to_vec(),
            header("dlq.reason"),
            header("dlq.source.topic"),
            header("dlq.source.partition"),
        ));
    }
    let extra = tokio::time::timeout(Duration::from_secs(2), dlq.recv()).await;
    assert!(extra.is_err(), "more dead letters than poison records: {:?}", extra.map(|m| m.map(|m| m.detach())));
    // Dropping a consumer blocks (it leaves the group): off the async workers.
    tokio::task::spawn_blocking(move || drop(dlq)).await.unwrap();
    letters
}

#[tokio::test]
async fn poison_records_are_dead_lettered_or_rejected_and_a_later_transfer_on_their_partition_completes() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let producer = kafka::producer(&app.settings.kafka_brokers, 10_000).unwrap();
    let topic = &app.settings.topic;
    // The key the API gives sender 1's EUR transfers: every record below lands
    // on the partition the final, valid transfer uses.
    let key = kafka::record_key(owner(1), eur());

    // Records that cannot become a transfer: dead-lettered, with the reason's code first.
    let undecodable: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "malformed"),
        (Vec::new(), "malformed"),
        (vec![0xff, 0xfe, 0x00, 0x01, 0x80], "malformed"),
        (b"[1, 2, 3]".to_vec(), "malformed"),
        (br#"{"schema_version": 99}"#.to_vec(), "unknown_schema_version"),
        (record(json!({"schema_version": 4})), "unknown_schema_version"),
        (record(json!({"schema_version": 2, "amount_minor": "lots"})), "malformed"),
        (record(json!({"schema_version": "1"})), "malformed"),
        (record(json!({"schema_version": -1})), "malformed"),
        (record(json!({"submitted_at": null})), "malformed"),
        (record(json!({"transfer_id": "not-a-uuid"})), "malformed"),
        (record(json!({"description": 12})), "malformed"),
        (record(json!({"amount_minor": 18_446_744_073_709_551_615u64})), "malformed"),
        (record(json!({"amount_minor": 1e300})), "malformed"),
        (record(json!({"sender_id": 99_999_999_999_999_999_999_999_999_999.0})), "malformed"),
        (record(json!({"amount_minor": -5})), "invalid"),
        (record(json!({"amount_minor": 0})), "invalid"),
        (record(json!({"amount_minor": i64::MIN})), "invalid"),
        (record(json!({"submitted_at": "-5000-01-01T00:00:00Z"})), "invalid"),
        (record(json!({"submitted_at": "+50000-01-01T00:00:00Z"})), "invalid"),
        (record(json!({"currency": "XYZ"})), "invalid"),
        (record(json!({"currency": "eur"})), "invalid"),
        (record(json!({"currency": "XAU"})), "invalid"),
        (record(json!({"sender_id": 0})), "invalid"),
        (record(json!({"receiver_id": -2})), "invalid"),
        (record(json!({"kind": "deposit"})), "invalid"),
        (record(json!({"amount_minor": null})), "invalid"),
        (record(json!({"original_amount_minor": 100, "original_currency": "USD"})), "invalid"),
    ];
    for (payload, _) in &undecodable {
        kafka::publish(&producer, topic, &key, payload, None).await.unwrap();
    }
    // A record with no payload at all (a tombstone).
    producer.send(FutureRecord::<str, [u8]>::to(topic).key(&key), Duration::from_secs(0)).await.map_err(|(e, _)| e).unwrap();

    // Records that decode but break a business rule: rejected, with the rule's code.
    let breaking: Vec<((uuid::Uuid, Vec<u8>), &str)> = vec![
        (decodable(json!({"receiver_id": 999})), "account_not_found"),
        (decodable(json!({"sender_id": 998, "receiver_id": 999})), "account_not_found"),
        (decodable(json!({"currency": "JPY"})), "account_not_found"),
        (decodable(json!({"receiver_id": 1})), "accounts_must_be_different"),
        (decodable(json!({"amount_minor": i64::MAX})), "insufficient_funds"),
        (decodable(json!({"amount_minor": 1_001})), "insufficient_funds"),
        (decodable(json!({"amount_minor": null, "original_amount_minor": 100, "original_currency": "USD"})), "conversion_unavailable"),
    ];
    for ((_, payload), _) in &breaking {
        kafka::publish(&producer, topic, &key, payload, None).await.unwrap();
    }

    // Then a valid transfer through the API, on the same key.
    let r = app.post("/v1/transfers", &json!({"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR"})).await;
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.unwrap();
    let done = app.wait_final(accepted["transfer_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "the partition stuck behind the poison records: {done}");

    for ((id, _), code) in &breaking {
        let stored = app.ledger().transfer(TransferId(*id)).await.unwrap().unwrap_or_else(|| panic!("{id} ({code}) is in the ledger"));
        assert_eq!(stored.status.as_str(), "rejected", "{id}");
        assert_eq!(stored.reason.as_ref().map(|r| r.code.as_str()), Some(*code), "{id}");
    }

    let letters = dead_letters(&app, undecodable.len() + 1).await;
    eprintln!("bad_input: poison records: {} dead-lettered, {} rejected", letters.len(), breaking.len());
    let partitions: BTreeSet<&str> = letters.iter().map(|(_, _, _, partition)| partition.as_str()).collect();
    assert_eq!(partitions.len(), 1, "one partition: {partitions:?}");
    assert!(letters.iter().all(|(_, _, source, _)| source == topic), "{letters:?}");
    // (payload, the reason's code): the same multiset as what was produced.
    let mut expected: Vec<(Vec<u8>, String)> = undecodable.iter().map(|(p, code)| (p.clone(), code.to_string())).collect();
    expected.push((Vec::new(), "malformed".into()));
    expected.sort();
    let mut got: Vec<(Vec<u8>, String)> = letters
        .iter()
        .map(|(payload, reason, _, _)| {
            let (code, detail) = reason.split_once(": ").unwrap_or_else(|| panic!("a reason is `code: detail`: {reason:?}"));
            assert!(!detail.is_empty(), "{reason:?}");
            (payload.clone(), code.to_owned())
        })
        .collect();
    got.sort();
    let show =
        |v: &[(Vec<u8>, String)]| v.iter().map(|(p, c)| format!("{c}: {}", String::from_utf8_lossy(p))).collect::<Vec<_>>().join("\n");
    assert_eq!(show(&got), show(&expected));

    // Only the valid transfer moved money.
    let balance = |owner: i64| {
        let app = &app;
        async move { app.get(&format!("/v1/accounts/{owner}/EUR")).await.json::<Value>().await.unwrap()["balance_minor"].as_i64().unwrap() }
    };
    assert_eq!((balance(1).await, balance(2).await), (900, 100));
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

/// PostgreSQL cannot store NUL in text: a record whose description holds one
/// would fail its batch's commit on every retry and stop the partition. The
/// API refuses such descriptions (`description_invalid`), and decoding refuses
/// records from anything else, so they go to the dead-letter topic.
#[tokio::test]
async fn a_record_whose_description_holds_nul_does_not_stall_its_partition() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let producer = kafka::producer(&app.settings.kafka_brokers, 10_000).unwrap();
    let key = kafka::record_key(owner(1), eur());
    let (id, payload) = decodable(json!({"description": "rent\u{0}"}));
    kafka::publish(&producer, &app.settings.topic, &key, &payload, None).await.unwrap();
    let r = app.post("/v1/transfers", &json!({"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR"})).await;
    let accepted: Value = r.json().await.unwrap();
    assert_eq!(app.wait_final(accepted["transfer_id"].as_str().unwrap()).await["status"], "completed");
    let stored = app.ledger().transfer(TransferId(id)).await.unwrap();
    assert!(stored.is_none(), "a record with NUL in its description must not reach the ledger");
    let letters = dead_letters(&app, 1).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

/// Publishes records on the key of sender 1's EUR transfers, in this order,
/// without waiting for one acknowledgement before sending the next (so they
/// usually share a batch).
async fn publish_together(app: &TestApp, payloads: &[&[u8]]) {
    let producer = kafka::producer(&app.settings.kafka_brokers, 10_000).unwrap();
    let key = kafka::record_key(owner(1), eur());
    let sends = payloads.iter().map(|p| kafka::publish(&producer, &app.settings.topic, &key, p, None));
    for sent in futures::future::join_all(sends).await {
        sent.unwrap();
    }
}

async fn balance(app: &TestApp, owner: i64) -> i64 {
    app.get(&format!("/v1/accounts/{owner}/EUR")).await.json::<Value>().await.unwrap()["balance_minor"].as_i64().unwrap()
}

/// Polls `check` every 50 ms until it holds, at most 60 s.
async fn eventually<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_transfer_postgresql_refuses_fails_alone_and_the_rest_of_its_batch_commits() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    // A permanent refusal of one item's values (here a constraint an operator
    // added; in the wild a time or character PostgreSQL cannot store).
    sqlx::query("ALTER TABLE transfers ADD CONSTRAINT no_poison CHECK (description IS DISTINCT FROM 'poison') NOT VALID")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (before, a) = decodable(json!({"amount_minor": 100}));
    let (bad, p) = decodable(json!({"amount_minor": 200, "description": "poison"}));
    let (after, b) = decodable(json!({"amount_minor": 300}));
    publish_together(&app, &[&a, &p, &b]).await;

    assert_eq!(app.wait_final(&before.to_string()).await["status"], "completed");
    assert_eq!(app.wait_final(&after.to_string()).await["status"], "completed", "the rest of the batch commits");
    let failed = app.wait_final(&bad.to_string()).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["reason"]["code"], transfer_engine::processor::UNSTORABLE_CODE, "{failed}");
    assert_eq!(failed["amount_minor"], 200, "{failed}");
    assert_eq!((balance(&app, 1).await, balance(&app, 2).await), (600, 400));
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

#[tokio::test]
async fn a_record_postgresql_refuses_even_as_a_failure_is_dead_lettered_and_replays_once_the_cause_is_fixed() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    sqlx::query("ALTER TABLE transfers ADD CONSTRAINT no_424 CHECK (amount_minor IS DISTINCT FROM 424) NOT VALID")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (bad, p) = decodable(json!({"amount_minor": 424}));
    let (fine, f) = decodable(json!({"amount_minor": 100}));
    publish_together(&app, &[&p, &f]).await;
    assert_eq!(app.wait_final(&fine.to_string()).await["status"], "completed", "the partition moves on");
    let letters = dead_letters(&app, 1).await;
    assert!(letters[0].1.starts_with(&format!("{}: ", transfer_engine::processor::UNSTORABLE_CODE)), "{:?}", letters[0].1);
    assert!(app.ledger().transfer(TransferId(bad)).await.unwrap().is_none());

    sqlx::query("ALTER TABLE transfers DROP CONSTRAINT no_424").execute(&app.db.pool).await.unwrap();
    let replay = DeadLetterCommand::Replay { dead_letters: vec!["0:0".into()], quarantined: vec![], all_quarantined: false };
    dead_letters::run(&app.settings, replay).await.unwrap();
    assert_eq!(app.wait_final(&bad.to_string()).await["status"], "completed", "the replayed record is applied");
    assert_eq!((balance(&app, 1).await, balance(&app, 2).await), (1000 - 524, 524));
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

/// librdkafka refuses, locally and on every try, a record larger than
/// `message.max.bytes` (1,000,000 by default): a record that just fits on the
/// transfers topic no longer fits on the dead-letter topic once the `dlq.*`
/// headers are added. Such a dead letter is quarantined in PostgreSQL.
#[tokio::test]
async fn a_dead_letter_the_topic_refuses_is_quarantined_and_nothing_stalls() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let big: StreamProducer = kafka::client_config(&app.settings.kafka_brokers).set("message.max.bytes", "2000000").create().unwrap();
    let payload = vec![b'x'; 1_000_100];
    let key = kafka::record_key(owner(1), eur());
    big.send(FutureRecord::to(&app.settings.topic).key(&key).payload(&payload), Duration::from_secs(0)).await.map_err(|(e, _)| e).unwrap();

    let r = app.post("/v1/transfers", &json!({"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR"})).await;
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.unwrap();
    assert_eq!(app.wait_final(accepted["transfer_id"].as_str().unwrap()).await["status"], "completed");

    // A batch commits its transfers before it keeps its dead letters (both
    // before its offsets are stored), so the transfer can be final first.
    let ledger = app.ledger();
    eventually("the refused dead letter is quarantined", || async { !ledger.quarantined(false, 10).await.unwrap().is_empty() }).await;
    let kept = ledger.quarantined(false, 10).await.unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let record = &kept[0].record;
    assert_eq!(record.payload.as_deref(), Some(&payload[..]), "the raw bytes are kept");
    assert_eq!(record.source_topic, app.settings.topic);
    assert!(record.reason.starts_with("malformed: "), "{}", record.reason);
    // The API's producer is not the one the dead-letter topic refused: still ready.
    assert_eq!(app.client.get(app.url("/readyz")).send().await.unwrap().status(), 200);

    dead_letters::run(&app.settings, DeadLetterCommand::List { limit: 10, include_replayed: false, json: true }).await.unwrap();
    let replay = DeadLetterCommand::Replay { dead_letters: vec![], quarantined: vec![kept[0].quarantine_id], all_quarantined: false };
    dead_letters::run(&app.settings, replay).await.unwrap();
    // Still not a transfer: quarantined again, from its new position; the first is marked replayed.
    eventually("the replayed record is quarantined again", || async { ledger.quarantined(true, 10).await.unwrap().len() == 2 }).await;
    let all = ledger.quarantined(true, 10).await.unwrap();
    assert!(all[0].replayed_at.is_some() && all[1].replayed_at.is_none(), "{all:?}");
    assert!(all[1].record.source_offset > all[0].record.source_offset);
    app.stop().await;
}

#[tokio::test]
async fn a_record_of_the_next_minor_schema_version_is_applied_not_dead_lettered() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    // What the next release's API may write: a higher version, optional fields this one does not know.
    let (id, next) = decodable(json!({"schema_version": 2, "metadata": {"channel": "web"}, "priority": "high"}));
    publish_together(&app, &[&next]).await;
    assert_eq!(app.wait_final(&id.to_string()).await["status"], "completed");
    assert_eq!((balance(&app, 1).await, balance(&app, 2).await), (900, 100));
    app.stop().await;
}

#[tokio::test]
async fn a_processor_that_makes_no_progress_while_records_wait_is_reported_not_ready() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.processor_stall_limit_ms = 1_000;
    // A stall is longer than any one statement may take.
    settings.database_statement_timeout_ms = 500;
    settings.database_lock_timeout_ms = 500;
    let app = TestApp::spawn_with(db, settings, Role::All).await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let readyz = || async { app.client.get(app.url("/readyz")).send().await.unwrap().json::<Value>().await.unwrap() };
    eventually("the engine is ready", || async { readyz().await["status"] == "ready" }).await;

    // Hold every commit: the processor reads the record and cannot finish it.
    let mut blocker = app.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE transfers IN ACCESS EXCLUSIVE MODE").execute(&mut *blocker).await.unwrap();
    let (id, record) = decodable(json!({}));
    publish_together(&app, &[&record]).await;
    eventually("/readyz reports the stalled processor", || async {
        let body = readyz().await;
        body["checks"]["processor"].as_str().is_some_and(|c| c != "ok")
    })
    .await;
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("transfer_engine_processor_healthy 0"), "{metrics}");

    blocker.rollback().await.unwrap();
    assert_eq!(app.wait_final(&id.to_string()).await["status"], "completed");
    eventually("/readyz recovers", || async { readyz().await["status"] == "ready" }).await;
    app.stop().await;
}

/// A crash between a commit and its Redis write leaves Redis saying
/// `initiated`; the batch is redelivered, all duplicates, and must refresh
/// Redis from PostgreSQL (the API asks PostgreSQL too for a published claim
/// that is not final, so Redis itself is what this looks at).
#[tokio::test]
async fn a_redelivered_batch_refreshes_the_status_a_retry_is_told() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let id = uuid::Uuid::new_v4();
    let body = json!({"transfer_id": id, "sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR"});
    assert_eq!(app.post("/v1/transfers", &body).await.status(), 202);
    assert_eq!(app.wait_final(&id.to_string()).await["status"], "completed");

    // Redis as a crash after the commit leaves it: the published claim, still initiated.
    let cache = transfer_engine::cache::Cache::from_settings(&app.settings).unwrap();
    let stored = app.ledger().transfer(TransferId(id)).await.unwrap().unwrap();
    let mut initiated = transfer_engine::views::TransferStatusView::from_ledger(&stored);
    initiated.status = transfer_engine::domain::Status::Initiated;
    initiated.version = 1;
    initiated.history.truncate(1);
    let mut redis = redis::Client::open(common::redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    redis::cmd("DEL").arg(cache.transfer_key(TransferId(id))).query_async::<()>(&mut redis).await.unwrap();
    assert!(cache.claim(TransferId(id), &serde_json::to_string(&initiated).unwrap()).await.unwrap().is_none());
    cache.mark_published(TransferId(id)).await.unwrap();

    // The redelivery: the same record again.
    let again = record(json!({"transfer_id": id}));
    publish_together(&app, &[&again]).await;
    eventually("Redis holds the completed status again", || async {
        let cached = cache.status(TransferId(id)).await.unwrap();
        cached.is_some_and(|(version, body)| version == 2 && serde_json::from_str::<Value>(&body).unwrap()["status"] == "completed")
    })
    .await;
    let r = app.post("/v1/transfers", &body).await;
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "completed", "a retry is told the transfer completed");
    app.stop().await;
}

/// `replay --all-quarantined` reads the quarantine a page at a time (records
/// may be megabytes each) and stops at the last id quarantined before it
/// began, so a replayed record that is quarantined again is not replayed twice.
#[tokio::test]
async fn replaying_every_quarantined_record_walks_the_quarantine_in_pages_once() {
    let app = TestApp::spawn().await;
    let ledger = app.ledger();
    let kept = |offset: i64| transfer_engine::ledger::KeptRecord {
        source_topic: app.settings.topic.clone(),
        source_partition: 0,
        source_offset: offset,
        key: Some(b"1:EUR".to_vec()),
        headers: vec![("origin".into(), Some(b"test".to_vec()))],
        payload: Some(format!("not a transfer {offset}").into_bytes()),
        reason: "malformed: kept by the test".into(),
    };
    const RECORDS: i64 = 250; // pages of 100: two full, one part
    for offset in 0..RECORDS {
        ledger.quarantine(&kept(offset)).await.unwrap();
    }

    // The walk's bounds: ids in (after, up_to], unreplayed, oldest first.
    let up_to = ledger.last_quarantine_id().await.unwrap();
    let first = ledger.unreplayed_quarantined(0, up_to, 100).await.unwrap();
    assert_eq!(first.len(), 100);
    let tail = ledger.unreplayed_quarantined(up_to - 2, up_to - 1, 100).await.unwrap();
    assert_eq!(tail.iter().map(|q| q.quarantine_id).collect::<Vec<_>>(), [up_to - 1]);

    let replay = DeadLetterCommand::Replay { dead_letters: vec![], quarantined: vec![], all_quarantined: true };
    dead_letters::run(&app.settings, replay).await.unwrap();
    assert!(ledger.quarantined(false, 1_000).await.unwrap().is_empty(), "every record was replayed");
    // Each went back onto the topic once; still not transfers, each is dead-lettered once.
    let letters = dead_letters(&app, RECORDS as usize).await;
    let payloads: BTreeSet<Vec<u8>> = letters.into_iter().map(|(payload, ..)| payload).collect();
    assert_eq!(payloads.len(), RECORDS as usize);
    assert_eq!(ledger.quarantined(true, 1_000).await.unwrap().len(), RECORDS as usize);
    app.stop().await;
}
