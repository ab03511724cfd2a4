//! Idempotency that outlives Redis: what a transfer id and a deposit
//! reference mean is decided by PostgreSQL, whatever Redis holds or forgot.
//! Redis "forgetting" is simulated by deleting the transfer's key (what an
//! expired claim, a flush or a failover leave behind).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{ADMIN_TOKEN, TestApp};
use serde_json::{Value, json};
use transfer_engine::api::{AppState, Surface};
use transfer_engine::auth::ClientStore;
use transfer_engine::cache::Cache;
use transfer_engine::domain::{Amount, Currency, OwnerId, Requested, Submission, TransferId, TransferKind};
use transfer_engine::kafka::{self, TransferRecord};
use transfer_engine::ledger::Ledger;
use transfer_engine::metrics::Metrics;
use transfer_engine::plugins::{Registry, Sandbox};

fn transfer(id: uuid::Uuid, amount: &str) -> Value {
    json!({"transfer_id": id, "sender_id": 1, "receiver_id": 2, "amount": amount, "currency": "EUR", "description": "rent"})
}

/// Deletes the transfer's Redis key, as an expired claim or a flushed Redis would leave it.
async fn forget_in_redis(app: &TestApp, id: uuid::Uuid) {
    let key = Cache::from_settings(&app.settings).unwrap().transfer_key(TransferId(id));
    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let deleted: i64 = redis::cmd("DEL").arg(&key).query_async(&mut c).await.unwrap();
    assert_eq!(deleted, 1, "the key {key} existed");
}

async fn error_code(r: reqwest::Response) -> String {
    let body: Value = r.json().await.unwrap();
    body["error"]["code"].as_str().unwrap_or_else(|| panic!("{body}")).to_owned()
}

async fn admin_get(app: &TestApp, path: &str) -> reqwest::Response {
    app.client.get(app.url(path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap()
}

#[tokio::test]
async fn a_reused_id_is_judged_by_the_ledger_after_redis_forgot_it() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let id = uuid::Uuid::now_v7();
    // The whole balance: after it completes, the pre-check alone would refuse a resend.
    assert_eq!(app.post("/v1/transfers", &transfer(id, "10.00")).await.status(), 202);
    assert_eq!(app.wait_final(&id.to_string()).await["status"], "completed");

    forget_in_redis(&app, id).await;
    let r = app.post("/v1/transfers", &transfer(id, "10.00")).await;
    assert_eq!(r.status(), 200, "the same body is a replay, not insufficient funds nor a new 202");
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let body: Value = r.json().await.unwrap();
    assert_eq!((body["status"].as_str(), body["version"].as_i64()), (Some("completed"), Some(2)));

    forget_in_redis(&app, id).await;
    let r = app.post("/v1/transfers", &transfer(id, "3.00")).await;
    assert_eq!(r.status(), 409);
    assert_eq!(error_code(r).await, "idempotency_conflict");
    // The refused claim did not replace what the id means, in Redis or in the ledger.
    let r = app.post("/v1/transfers", &transfer(id, "3.00")).await;
    assert_eq!(r.status(), 409, "Redis now holds the truth, not the conflicting claim");
    let shown = app.get(&format!("/v1/transfers/{id}")).await.json::<Value>().await.unwrap();
    assert_eq!((shown["amount"].as_str(), shown["status"].as_str()), (Some("10.00"), Some("completed")));
    let r = admin_get(&app, "/v1/admin/transfer-conflicts").await;
    assert_eq!(r.json::<Value>().await.unwrap()["conflicts"], json!([]), "the API refused it: nothing reached the ledger");
    common::assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

/// The engine's API over the test app's database and Redis prefix, with a
/// producer whose broker never answers: every publish times out.
async fn api_with_a_dead_broker(app: &TestApp) -> String {
    let settings = app.settings.clone();
    let pool = app.db.pool.clone();
    let sandbox = Sandbox::new(settings.sandbox_limits()).unwrap();
    let plugins = Registry::new(pool.clone(), sandbox, settings.description_chars_max, settings.rollback_settings());
    let state = AppState {
        cache: Cache::from_settings(&settings).unwrap(),
        publisher: kafka::Publisher::new("127.0.0.1:1", 300).unwrap(),
        ledger: Ledger::new(pool.clone()),
        metrics: Arc::new(Metrics::default()),
        plugins: Arc::new(plugins),
        clients: Arc::new(ClientStore::new(pool, Duration::from_secs(1))),
        // An API alone runs no processor.
        processor: transfer_engine::processor::watchdog::ProcessorHealth::new(Duration::from_secs(60)),
        settings: Arc::new(settings),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let router = transfer_engine::api::router(state, Surface::Api { metrics: false });
    tokio::spawn(async move { axum::serve(listener, router).await });
    address
}

#[tokio::test]
async fn a_submit_whose_publish_failed_keeps_its_id_and_a_retry_publishes_it() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let dead = api_with_a_dead_broker(&app).await;
    let id = uuid::Uuid::now_v7();
    let r = app.client.post(format!("{dead}/v1/transfers")).bearer_auth(&app.key).json(&transfer(id, "1.00")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(error_code(r).await, "broker_unavailable");

    // The record may still be delivered: the id is taken and reads as initiated, not 404.
    let r = app.get(&format!("/v1/transfers/{id}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "initiated");
    let r = app.post("/v1/transfers", &transfer(id, "2.00")).await;
    assert_eq!(r.status(), 409, "another body under the id could be applied instead of the one in flight");

    // The same body again publishes (the ledger applies an id once) and is accepted.
    assert_eq!(app.post("/v1/transfers", &transfer(id, "1.00")).await.status(), 202);
    assert_eq!(app.wait_final(&id.to_string()).await["status"], "completed");
    let r = app.post("/v1/transfers", &transfer(id, "1.00")).await;
    assert_eq!(r.status(), 200);
    common::assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

#[tokio::test]
async fn a_deposit_id_cannot_be_taken_through_the_transfers_endpoint() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let squatted = TransferId::for_reference("deposit", "wire-2026-0042").0;
    let r = app.post("/v1/transfers", &transfer(squatted, "1.00")).await;
    assert_eq!(r.status(), 422);
    assert_eq!(error_code(r).await, "transfer_id_reserved");
    let by_header = app
        .client
        .post(app.url("/v1/transfers"))
        .bearer_auth(&app.key)
        .header("idempotency-key", squatted.to_string())
        .json(&json!({"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR"}))
        .send()
        .await
        .unwrap();
    assert_eq!(by_header.status(), 422);

    let deposit = json!({"owner_id": 2, "currency": "EUR", "amount": "5.00", "reference": "wire-2026-0042"});
    let r = app.admin_post("/v1/deposits", &deposit).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["transfer_id"], squatted.to_string(), "system ids are unchanged");
    assert_eq!(app.admin_post("/v1/deposits", &deposit).await.status(), 200, "a retried deposit is still idempotent");
    app.stop().await;
}

#[tokio::test]
async fn a_withdrawal_refused_for_funds_leaves_its_reference_usable() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "3.00").await;
    let withdrawal = json!({"owner_id": 1, "currency": "EUR", "amount": "5.00", "reference": "payout-7"});
    let r = app.admin_post("/v1/withdrawals", &withdrawal).await;
    assert_eq!(r.status(), 422);
    assert_eq!(error_code(r).await, "insufficient_funds");

    let top_up = json!({"owner_id": 1, "currency": "EUR", "amount": "2.00", "reference": "top-up-7"});
    assert_eq!(app.admin_post("/v1/deposits", &top_up).await.status(), 201);
    let r = app.admin_post("/v1/withdrawals", &withdrawal).await;
    assert_eq!(r.status(), 201, "the refusal did not use the reference up");
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["status"], "completed");
    let r = app.admin_post("/v1/withdrawals", &withdrawal).await;
    assert_eq!(r.status(), 200, "once completed, the reference is idempotent");
    assert_eq!(r.json::<Value>().await.unwrap()["transfer_id"], first["transfer_id"]);
    let other = json!({"owner_id": 1, "currency": "EUR", "amount": "1.00", "reference": "payout-7"});
    assert_eq!(app.admin_post("/v1/withdrawals", &other).await.status(), 409);
    let balance: Value = app.get("/v1/accounts/1/EUR").await.json().await.unwrap();
    assert_eq!(balance["balance"], "0.00", "withdrawn once");
    common::assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

#[tokio::test]
async fn a_conflict_that_reaches_the_processor_is_counted_and_listed_for_admins() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let id = uuid::Uuid::now_v7();
    assert_eq!(app.post("/v1/transfers", &transfer(id, "1.00")).await.status(), 202);
    assert_eq!(app.wait_final(&id.to_string()).await["status"], "completed");

    // Another engine's record under the same id with another amount: the API never saw it.
    let eur = Currency::parse("EUR").unwrap();
    let racing = Submission {
        id: TransferId(id),
        kind: TransferKind::Transfer,
        sender: OwnerId::new(1).unwrap(),
        receiver: OwnerId::new(2).unwrap(),
        currency: eur,
        requested: Requested::Amount(Amount::from_minor(200).unwrap()),
        description: Some("rent".into()),
        submitted_at: chrono::Utc::now(),
        client_id: None,
        metadata: Default::default(),
    };
    let producer = kafka::producer(&app.settings.kafka_brokers, 5_000).unwrap();
    let record = serde_json::to_vec(&TransferRecord::from_submission(&racing)).unwrap();
    let key = kafka::record_key(racing.sender, eur);
    kafka::publish(&producer, &app.settings.topic, &key, &record, kafka::record_headers(&racing)).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let page = loop {
        let page: Value = admin_get(&app, "/v1/admin/transfer-conflicts?limit=10").await.json().await.unwrap();
        if page["conflicts"].as_array().is_some_and(|c| !c.is_empty()) {
            break page;
        }
        assert!(tokio::time::Instant::now() < deadline, "no conflict listed: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let conflict = &page["conflicts"][0];
    assert_eq!(conflict["transfer_id"], id.to_string());
    assert_eq!(conflict["fingerprint"], hex::encode(racing.fingerprint()));
    assert_eq!((conflict["transfer"]["amount"].as_str(), conflict["transfer"]["status"].as_str()), (Some("1.00"), Some("completed")));
    assert!(conflict["transfer"].get("fingerprint").is_none());
    assert_eq!(page["next_before"], Value::Null);
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"transfer_engine_transfers_total{outcome="conflict"} 1"#), "{metrics}");

    let r = app.get("/v1/admin/transfer-conflicts").await;
    assert_eq!(r.status(), 403, "admins only: an API key with every scope is not enough");
    let r = admin_get(&app, "/v1/admin/transfer-conflicts?limit=x").await;
    assert_eq!(r.status(), 422);
    assert_eq!(error_code(r).await, "invalid_query");
    app.stop().await;
}

/// `submit_stage_seconds_count` of `stage` in a `/metrics` scrape.
fn stage_count(metrics: &str, stage: &str) -> u64 {
    let prefix = format!(r#"transfer_engine_submit_stage_seconds_count{{stage="{stage}"}} "#);
    let line = metrics.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {prefix}in {metrics}"));
    line.parse().unwrap()
}

#[tokio::test]
async fn each_submit_stage_that_ran_is_timed_in_the_metrics() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "1.00").await;
    app.open_account(2, "EUR", "0").await;
    let stages = ["redis_claim", "ledger_read", "precheck_fill", "publish", "mark_published"];
    let scrape = || async { app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap() };
    let counts = |metrics: String| stages.map(|stage| stage_count(&metrics, stage));
    assert_eq!(counts(scrape().await), [0; 5], "every stage is listed before the first submit");

    // Refused by the pre-check: nothing is published.
    let r = app.post("/v1/transfers", &transfer(uuid::Uuid::now_v7(), "2.00")).await;
    assert_eq!(r.status(), 422);
    assert_eq!(error_code(r).await, "insufficient_funds");
    assert_eq!(counts(scrape().await), [1, 1, 1, 0, 0]);

    assert_eq!(app.post("/v1/transfers", &transfer(uuid::Uuid::now_v7(), "1.00")).await.status(), 202);
    assert_eq!(counts(scrape().await), [2, 2, 2, 1, 1]);
    app.stop().await;
}
