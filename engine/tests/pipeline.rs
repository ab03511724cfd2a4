//! End to end on real services: HTTP submit -> Kafka -> processor ->
//! PostgreSQL, with the Redis status view and balance cache.

mod common;

use std::time::Duration;

use common::{TestApp, assert_audit_passes, test_settings};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use serde_json::{Value, json};
use transfer_engine::kafka;
use transfer_engine::startup::Role;

async fn submit(app: &TestApp, body: Value) -> (u16, Value) {
    let r = app.post("/v1/transfers", &body).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn balance_minor(app: &TestApp, owner: i64, currency: &str) -> i64 {
    let r = app.get(&format!("/v1/accounts/{owner}/{currency}")).await;
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["balance_minor"].as_i64().unwrap()
}

#[tokio::test]
async fn a_submitted_transfer_completes_with_versions_one_and_two_and_moves_both_balances() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "100.00").await;
    app.open_account(2, "EUR", "0").await;
    let (status, accepted) =
        submit(&app, json!({"sender_id": 1, "receiver_id": 2, "amount": "12.34", "currency": "EUR", "description": "rent"})).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!((accepted["status"].as_str(), accepted["version"].as_i64()), (Some("initiated"), Some(1)));
    let done = app.wait_final(accepted["transfer_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["version"], 2);
    assert_eq!(done["amount"], "12.34");
    let versions: Vec<_> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["version"].as_i64().unwrap(), h["status"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(versions, [(1, "initiated".to_owned()), (2, "completed".to_owned())]);
    assert_eq!(balance_minor(&app, 1, "EUR").await, 8_766);
    assert_eq!(balance_minor(&app, 2, "EUR").await, 1_234);
    let listed: Value = app.get("/v1/accounts/2/EUR/transfers").await.json().await.unwrap();
    assert_eq!(listed["transfers"][0]["transfer_id"], done["transfer_id"]);
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

#[tokio::test]
async fn the_same_transfer_id_submitted_twenty_times_concurrently_debits_once() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "100.00").await;
    app.open_account(2, "EUR", "0").await;
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({"transfer_id": id, "sender_id": 1, "receiver_id": 2, "amount": 5, "currency": "EUR"});
    let submissions = (0..20).map(|_| submit(&app, body.clone()));
    for (status, answer) in futures::future::join_all(submissions).await {
        assert!(status == 202 || status == 200, "{status} {answer}");
        assert_eq!(answer["transfer_id"], id);
    }
    assert_eq!(app.wait_final(&id).await["status"], "completed");
    // Another submission after completion replays without publishing.
    let (status, replay) = submit(&app, body.clone()).await;
    assert_eq!((status, replay["status"].as_str()), (200, Some("completed")));
    let (status, conflict) =
        submit(&app, json!({"transfer_id": id, "sender_id": 1, "receiver_id": 2, "amount": 6, "currency": "EUR"})).await;
    assert_eq!((status, conflict["error"]["code"].as_str()), (409, Some("idempotency_conflict")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(balance_minor(&app, 1, "EUR").await, 9_500);
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

#[tokio::test]
async fn two_hundred_concurrent_transfers_from_an_account_that_affords_fifty_complete_exactly_fifty() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "50.00").await;
    app.open_account(2, "EUR", "0").await;
    let submissions = (0..200).map(|_| submit(&app, json!({"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR"})));
    let mut ids = Vec::new();
    let mut refused_early = 0;
    for (status, answer) in futures::future::join_all(submissions).await {
        match status {
            202 => ids.push(answer["transfer_id"].as_str().unwrap().to_owned()),
            422 => {
                assert_eq!(answer["error"]["code"], "insufficient_funds");
                refused_early += 1;
            }
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    let mut completed = 0;
    for id in &ids {
        let done = app.wait_final(id).await;
        match done["status"].as_str().unwrap() {
            "completed" => completed += 1,
            "rejected" => assert_eq!(done["reason"]["code"], "insufficient_funds"),
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(completed, 50, "{refused_early} were refused by the pre-check");
    assert_eq!(balance_minor(&app, 1, "EUR").await, 0);
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

#[tokio::test]
async fn a_poison_record_goes_to_the_dead_letter_topic_and_later_records_are_processed() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let producer = kafka::producer(&app.settings.kafka_brokers, 10_000).unwrap();
    kafka::publish(&producer, &app.settings.topic, "1:EUR", b"{not json", None).await.unwrap();
    kafka::publish(&producer, &app.settings.topic, "1:EUR", br#"{"schema_version": 99}"#, None).await.unwrap();
    let (status, accepted) = submit(&app, json!({"sender_id": 1, "receiver_id": 2, "amount": "1", "currency": "EUR"})).await;
    assert_eq!(status, 202);
    assert_eq!(app.wait_final(accepted["transfer_id"].as_str().unwrap()).await["status"], "completed");

    let dlq: StreamConsumer = kafka::client_config(&app.settings.kafka_brokers)
        .set("group.id", format!("dlq-reader-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    dlq.subscribe(&[&app.settings.dlq_topic()]).unwrap();
    let mut reasons = Vec::new();
    while reasons.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(30), dlq.recv()).await.expect("dead letters arrive").unwrap();
        use rdkafka::message::Headers;
        let headers = m.headers().expect("dead letters carry headers");
        let reason = headers.iter().find(|h| h.key == "dlq.reason").and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned());
        reasons.push(reason.unwrap());
    }
    reasons.sort();
    assert!(reasons[0].starts_with("malformed"), "{reasons:?}");
    assert!(reasons[1].starts_with("unknown_schema_version"), "{reasons:?}");
    tokio::task::spawn_blocking(move || drop(dlq)).await.unwrap();
    app.stop().await;
}

#[tokio::test]
async fn a_processor_restarted_before_storing_offsets_replays_the_records_and_changes_nothing() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let (_, accepted) = submit(&app, json!({"sender_id": 1, "receiver_id": 2, "amount": "3", "currency": "EUR"})).await;
    app.wait_final(accepted["transfer_id"].as_str().unwrap()).await;
    // A second processor in a fresh consumer group reads the topic from the start:
    // the same as a processor that committed to PostgreSQL but never stored offsets.
    let mut replayer = app.spawn_beside(Role::Processor).await;
    let metrics_url = replayer.url("/metrics");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = replayer.client.get(&metrics_url).send().await.unwrap().text().await.unwrap();
        if text.lines().any(|l| l.starts_with("transfer_engine_transfers_total{outcome=\"duplicate\"}")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the replay was not processed:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    replayer.shutdown_engine().await;
    assert_eq!(balance_minor(&app, 1, "EUR").await, 700);
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

#[tokio::test]
async fn transfers_still_complete_when_redis_goes_away() {
    // A private Redis for this test, so stopping it disturbs no other test.
    let port = free_port();
    let mut redis = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server is installed (scripts/test installs it)");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let db = common::TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.redis_url = transfer_engine::config::Secret::new(format!("redis://127.0.0.1:{port}/0"));
    let app = TestApp::spawn_with(db, settings, Role::All).await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let (_, before) = submit(&app, json!({"sender_id": 1, "receiver_id": 2, "amount": "1", "currency": "EUR"})).await;
    assert_eq!(app.wait_final(before["transfer_id"].as_str().unwrap()).await["status"], "completed");
    redis.kill().unwrap();
    redis.wait().unwrap();
    let (status, after) = submit(&app, json!({"sender_id": 1, "receiver_id": 2, "amount": "2", "currency": "EUR"})).await;
    assert_eq!(status, 202, "{after}");
    assert_eq!(app.wait_final(after["transfer_id"].as_str().unwrap()).await["status"], "completed");
    assert_eq!(balance_minor(&app, 1, "EUR").await, 700);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("redis"));
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn every_bad_request_answers_a_json_error_with_its_code() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let base = json!({"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR"});
    let with = |key: &str, value: Value| {
        let mut body = base.clone();
        body[key] = value;
        body
    };
    let without = |key: &str| {
        let mut body = base.clone();
        body.as_object_mut().unwrap().remove(key);
        body
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (with("amount", json!("-1")), 422, "amount_must_be_positive"),
        (with("amount", json!(0)), 422, "amount_must_be_positive"),
        (with("amount", json!("1.001")), 422, "amount_precision_exceeded"),
        (with("amount", json!(1.001)), 422, "amount_precision_exceeded"),
        (with("amount", json!("1e2")), 422, "amount_invalid"),
        (with("amount", json!(true)), 422, "amount_invalid"),
        (with("amount", json!("99999999999999999999")), 422, "amount_out_of_range"),
        (with("currency", json!("XYZ")), 422, "currency_not_supported"),
        (with("receiver_id", json!(1)), 422, "accounts_must_be_different"),
        (with("receiver_id", json!(77)), 422, "account_not_found"),
        (with("sender_id", json!(-3)), 422, "owner_id_invalid"),
        (with("sender_id", json!("1")), 422, "invalid_body"),
        (with("sender_id", json!(1e300)), 422, "invalid_body"),
        (with("surprise", json!(1)), 422, "invalid_body"),
        (with("transfer_id", json!("not-a-uuid")), 422, "invalid_body"),
        (with("description", json!("x".repeat(281))), 422, "description_too_long"),
        (with("amount", json!("1000.00")), 422, "insufficient_funds"),
        (without("amount"), 422, "amount_missing"),
        (without("currency"), 422, "invalid_body"),
        (with("original_amount", json!("1")), 422, "amount_ambiguous"),
    ];
    for (body, status, code) in cases {
        let r = app.post("/v1/transfers", &body).await;
        assert_eq!(r.status().as_u16(), status, "{body}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
    }
    let raw = |body: &'static str, content_type: &'static str| {
        app.client.post(app.url("/v1/transfers")).bearer_auth(&app.key).header("content-type", content_type).body(body).send()
    };
    let r = raw("{\"sender_id\": 1,", "application/json").await.unwrap();
    assert_eq!((r.status().as_u16(), r.json::<Value>().await.unwrap()["error"]["code"].clone()), (400, json!("malformed_json")));
    let r = raw("{}", "text/plain").await.unwrap();
    assert_eq!((r.status().as_u16(), r.json::<Value>().await.unwrap()["error"]["code"].clone()), (415, json!("unsupported_media_type")));
    let huge = format!("{{\"description\": \"{}\"}}", "x".repeat(64 * 1024));
    let r = app
        .client
        .post(app.url("/v1/transfers"))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), r.json::<Value>().await.unwrap()["error"]["code"].clone()), (413, json!("body_too_large")));
    let r = app.get("/v1/transfers/not-a-uuid").await;
    assert_eq!(r.status(), 422);
    let r = app.get(&format!("/v1/transfers/{}", uuid::Uuid::new_v4())).await;
    assert_eq!((r.status().as_u16(), r.json::<Value>().await.unwrap()["error"]["code"].clone()), (404, json!("transfer_not_found")));
    let r = app.post("/v1/accounts", &json!({"owner_id": 1, "currency": "EUR"})).await;
    assert_eq!((r.status().as_u16(), r.json::<Value>().await.unwrap()["error"]["code"].clone()), (409, json!("account_exists")));
    let deposit = json!({"owner_id": 1, "currency": "EUR", "amount": "1", "reference": "x"});
    let r = app.post("/v1/deposits", &deposit).await;
    assert_eq!((r.status().as_u16(), r.json::<Value>().await.unwrap()["error"]["code"].clone()), (403, json!("scope_missing")));
    let r = app.client.post(app.url("/v1/deposits")).json(&deposit).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = app.client.post(app.url("/v1/deposits")).bearer_auth("wrong").json(&deposit).send().await.unwrap();
    assert_eq!(r.status(), 401);
    app.stop().await;
}

#[tokio::test]
async fn health_readiness_metrics_and_openapi_answer() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("transfer_engine_http_requests_total"), "{metrics}");
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(spec["paths"]["/v1/transfers"]["post"].is_object());
    app.stop().await;
}
