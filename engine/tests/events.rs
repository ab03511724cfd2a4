//! Events out, end to end on real services: the outbox written in the
//! commit, the relay to the events topic, and signed webhook deliveries to a
//! receiver that fails and recovers.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use clap::Parser;
use common::{ADMIN_TOKEN, TestApp, TestDb, amount, eur, owner, seed, test_settings};
use hmac::{Hmac, Mac};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{Value, json};
use sha2::Sha256;
use transfer_engine::domain::{Requested, Submission, TransferId, TransferKind};
use transfer_engine::events::{self, outbox, relay::Relay};
use transfer_engine::kafka;
use transfer_engine::ledger::CommitItem;
use transfer_engine::loadgen::{self, LoadArgs};
use transfer_engine::metrics::Metrics;
use transfer_engine::startup::Role;

/// Reads `topic` from the beginning of every partition until `n` records
/// arrived, as (partition, offset, event); fails if they do not within 60 s.
async fn read_events(brokers: &str, topic: &str, n: usize) -> Vec<(i32, i64, Value)> {
    let consumer: StreamConsumer = kafka::client_config(brokers)
        .set("group.id", format!("events-reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in metadata.topics()[0].partitions() {
        assignment.add_partition_offset(topic, p.id(), Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut events = Vec::new();
    while events.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} events arrived", events.len()))
            .unwrap();
        events.push((m.partition(), m.offset(), serde_json::from_slice(m.payload().unwrap()).unwrap()));
    }
    tokio::task::spawn_blocking(move || drop(consumer)).await.unwrap();
    events
}

async fn wait_until_outbox_drains(pool: &sqlx::PgPool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while outbox::unsent_rows(pool).await.unwrap() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the outbox did not drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_status_version_reaches_the_events_topic_once_in_order_and_the_outbox_drains() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let completed = app
        .submit_accepted(json!({"sender_id": 1, "receiver_id": 2, "amount": "4.00", "currency": "EUR",
        "metadata": {"order": "A-1"}}))
        .await;
    // Past the balance: the API's pre-check would refuse it, so it goes onto the topic as the API would put it.
    let over = submission(TransferId::generate());
    let over = Submission { requested: Requested::Amount(amount(9_900)), ..over };
    let producer = kafka::producer(&app.settings.kafka_brokers, 10_000).unwrap();
    let record = serde_json::to_vec(&kafka::TransferRecord::from_submission(&over)).unwrap();
    kafka::publish(&producer, &app.settings.topic, &kafka::record_key(over.sender, over.currency), &record, kafka::record_headers(&over))
        .await
        .unwrap();
    let rejected = over.id.0.to_string();
    assert_eq!(app.wait_final(&completed).await["status"], "completed");
    assert_eq!(app.wait_final(&rejected).await["status"], "rejected");

    // Two deposits (one opened each account with money, one did not) and two transfers, two versions each.
    let events = read_events(&app.settings.kafka_brokers, &app.settings.events_topic(), 6).await;
    let mut seen = HashSet::new();
    let mut by_transfer: HashMap<String, Vec<(i32, i64, i64)>> = HashMap::new();
    for (partition, offset, e) in &events {
        let id: uuid::Uuid = e["transfer_id"].as_str().unwrap().parse().unwrap();
        let version = e["version"].as_i64().unwrap();
        assert!(seen.insert((id, version)), "one event per version: {e}");
        assert_eq!(e["event_id"], events::event_id(id, version as i32).to_string());
        assert_eq!(e["schema_version"], 1);
        let event_type = e["type"].as_str().unwrap();
        assert!(
            event_type == format!("transfer.{}", e["status"].as_str().unwrap())
                || event_type == format!("deposit.{}", e["status"].as_str().unwrap()),
            "{e}"
        );
        by_transfer.entry(id.to_string()).or_default().push((*partition, *offset, version));
    }
    for (id, versions) in &by_transfer {
        assert_eq!(versions.len(), 2, "{id}");
        assert_eq!(versions[0].0, versions[1].0, "one transfer's events share a partition");
        assert!(versions[0].1 < versions[1].1 && versions[0].2 == 1 && versions[1].2 == 2, "in version order: {versions:?}");
    }
    let event = |id: &str, version: i64| {
        events.iter().map(|(_, _, e)| e).find(|e| e["transfer_id"] == id && e["version"] == version).unwrap().clone()
    };
    let done = event(&completed, 2);
    assert_eq!(
        (done["type"].as_str(), done["amount_minor"].as_i64(), done["currency"].as_str()),
        (Some("transfer.completed"), Some(400), Some("EUR"))
    );
    assert_eq!((done["sender_id"].as_i64(), done["receiver_id"].as_i64()), (Some(1), Some(2)));
    assert_eq!(done["metadata"], json!({"order": "A-1"}));
    assert_eq!(event(&completed, 1)["type"], "transfer.initiated");
    let refused = event(&rejected, 2);
    assert_eq!((refused["type"].as_str(), refused["reason_code"].as_str()), (Some("transfer.rejected"), Some("insufficient_funds")));
    assert!(refused["reason_message"].is_string() && refused.get("original_currency").is_none(), "{refused}");
    assert_eq!(refused["metadata"], json!({}), "an object even when none was given, as the API shows it");
    assert_eq!(events.iter().filter(|(_, _, e)| e["type"] == "deposit.completed").count(), 1);

    wait_until_outbox_drains(&app.db.pool).await;
    app.stop().await;
}

/// A relay over `db`'s outbox publishing to `topic`, as an engine runs it.
fn relay(db: &TestDb, topic: &str) -> Relay {
    Relay {
        pool: db.pool.clone(),
        publisher: kafka::Publisher::new(&common::kafka_brokers(), 10_000).unwrap(),
        topic: topic.to_owned(),
        claim_rows_max: 16,
        claims_in_flight_max: 1,
        poll: Duration::from_millis(50),
        retention: Duration::from_secs(3600),
        written: None,
        metrics: Arc::new(Metrics::default()),
        webhook_retry_window: Duration::from_secs(86_400),
        webhooks_enqueued: Arc::default(),
    }
}

fn submission(id: TransferId) -> Submission {
    Submission {
        id,
        kind: TransferKind::Transfer,
        sender: owner(1),
        receiver: owner(2),
        currency: eur(),
        requested: Requested::Amount(amount(100)),
        description: None,
        submitted_at: chrono::Utc::now(),
        client_id: None,
        metadata: Default::default(),
    }
}

/// Accounts 1 and 2 with money, and an empty outbox (the deposits' events removed).
async fn seeded(db: &TestDb) {
    seed(&db.ledger(), [1, 2], eur(), 10_000).await;
    sqlx::query("DELETE FROM event_outbox").execute(&db.pool).await.unwrap();
}

async fn commit_one(db: &TestDb, reference: &str) -> uuid::Uuid {
    let id = TransferId::for_reference("test", reference);
    let submission = submission(id);
    let result = db.ledger().commit_batch(&[CommitItem::apply_as_submitted(submission).unwrap()]).await.unwrap();
    assert_eq!(result.outcomes.len(), 1);
    id.0
}

/// The relay holding `claim` dies: PostgreSQL ends its session, which
/// releases the claimed rows once it has exited (a dropped transaction would release
/// them only when its connection is next used).
async fn die(db: &TestDb, mut claim: outbox::Claim) {
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(claim.transaction()).await.unwrap();
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)").bind(pid).fetch_one(&db.pool).await.unwrap();
    assert!(ended);
    drop(claim);
}

#[tokio::test]
async fn a_relay_that_dies_after_publishing_and_before_marking_sent_publishes_again_with_the_same_ids() {
    let db = TestDb::new().await;
    seeded(&db).await;
    let topic = format!("events-{}", uuid::Uuid::new_v4().simple());
    kafka::ensure_topics(&common::kafka_brokers(), &topic, &format!("{topic}.dlq"), None, Some(1), None).await.unwrap();
    let id = commit_one(&db, "crash").await;

    // A relay claims and publishes, then dies before its transaction commits.
    let mut claim = outbox::claim(&db.pool, 16).await.unwrap().expect("a row to claim");
    let publisher = kafka::Publisher::new(&common::kafka_brokers(), 10_000).unwrap();
    for (event, _) in &claim.read_events().await.unwrap() {
        publisher.publish(&topic, &event.transfer_id.to_string(), &serde_json::to_vec(event).unwrap(), None).await.unwrap();
    }
    die(&db, claim).await;
    assert_eq!(outbox::unsent_rows(&db.pool).await.unwrap(), 1, "the row is still unsent");

    // The next relay publishes the row again; the duplicates carry the same ids.
    assert_eq!(relay(&db, &topic).relay_once().await.unwrap(), 2);
    assert_eq!(outbox::unsent_rows(&db.pool).await.unwrap(), 0);
    let events = read_events(&common::kafka_brokers(), &topic, 4).await;
    let ids: Vec<String> = events.iter().map(|(_, _, e)| e["event_id"].as_str().unwrap().to_owned()).collect();
    let expected = [events::event_id(id, 1).to_string(), events::event_id(id, 2).to_string()];
    assert_eq!(ids, [expected[0].clone(), expected[1].clone(), expected[0].clone(), expected[1].clone()]);
    db.drop_database().await;
}

#[tokio::test]
async fn two_relays_claim_different_outbox_rows_and_never_the_same_one() {
    let db = TestDb::new().await;
    seeded(&db).await;
    let first = commit_one(&db, "one").await;
    let second = commit_one(&db, "two").await;
    let mut a = outbox::claim(&db.pool, 1).await.unwrap().expect("the first row");
    let mut b = outbox::claim(&db.pool, 1).await.unwrap().expect("the second row, skipping the locked one");
    assert!(outbox::claim(&db.pool, 1).await.unwrap().is_none(), "both rows are held");
    async fn ids(c: &mut outbox::Claim) -> HashSet<uuid::Uuid> {
        c.read_events().await.unwrap().iter().map(|(e, _)| e.transfer_id).collect()
    }
    assert_eq!(ids(&mut a).await, HashSet::from([first]));
    assert_eq!(ids(&mut b).await, HashSet::from([second]));
    a.mark_sent().await.unwrap();
    die(&db, b).await;
    let mut c = outbox::claim(&db.pool, 16).await.unwrap().expect("the released row");
    assert_eq!(ids(&mut c).await, HashSet::from([second]));
    c.mark_sent().await.unwrap();
    assert_eq!(outbox::unsent_rows(&db.pool).await.unwrap(), 0);
    db.drop_database().await;
}

#[tokio::test]
async fn a_relay_with_several_claims_in_flight_publishes_every_event_once_and_each_transfer_in_version_order() {
    let db = TestDb::new().await;
    seeded(&db).await;
    let topic = format!("events-{}", uuid::Uuid::new_v4().simple());
    kafka::ensure_topics(&common::kafka_brokers(), &topic, &format!("{topic}.dlq"), None, Some(3), None).await.unwrap();
    let mut committed = Vec::new();
    for n in 0..40 {
        committed.push(commit_one(&db, &format!("in-flight-{n}")).await);
    }
    // One row per claim, four claims at once: the claims race for rows.
    let relay = Relay { claim_rows_max: 1, claims_in_flight_max: 4, ..relay(&db, &topic) };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(relay.run(stopped));
    wait_until_outbox_drains(&db.pool).await;
    stop.send(true).unwrap();
    running.await.unwrap();

    let events = read_events(&common::kafka_brokers(), &topic, 80).await;
    let ids: HashSet<&str> = events.iter().map(|(_, _, e)| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 80, "no event published twice by racing claims");
    let mut versions: HashMap<String, Vec<i64>> = HashMap::new();
    for (_, _, event) in &events {
        versions.entry(event["transfer_id"].as_str().unwrap().to_owned()).or_default().push(event["version"].as_i64().unwrap());
    }
    assert_eq!(versions.len(), committed.len());
    assert!(versions.values().all(|v| v == &[1, 2]), "each transfer's versions in order: {versions:?}");
    db.drop_database().await;
}

#[tokio::test]
async fn sent_outbox_rows_are_deleted_after_their_retention_and_unsent_ones_never() {
    let db = TestDb::new().await;
    seeded(&db).await;
    commit_one(&db, "sent").await;
    outbox::claim(&db.pool, 16).await.unwrap().unwrap().mark_sent().await.unwrap();
    commit_one(&db, "unsent").await;
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(outbox::delete_sent(&db.pool, later, 100).await.unwrap(), 1);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM event_outbox").fetch_one(&db.pool).await.unwrap();
    assert_eq!((left, outbox::unsent_rows(&db.pool).await.unwrap()), (1, 1));
    db.drop_database().await;
}

#[tokio::test]
async fn an_engine_with_events_off_writes_no_outbox_rows() {
    let db = TestDb::new().await;
    seeded(&db).await;
    let ledger = db.ledger().without_events();
    let submission = submission(TransferId::for_reference("test", "off"));
    ledger.commit_batch(&[CommitItem::apply_as_submitted(submission).unwrap()]).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM event_outbox").fetch_one(&db.pool).await.unwrap();
    assert_eq!(rows, 0);
    let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM transfers WHERE kind = 'transfer'").fetch_one(&db.pool).await.unwrap();
    assert_eq!(committed, 1, "the transfer itself committed");
    db.drop_database().await;
}

#[tokio::test]
async fn with_events_off_neither_the_engine_nor_its_load_generator_writes_outbox_rows() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.events_enabled = false;
    let app = TestApp::spawn_with(db, settings, Role::All).await;
    // The load generator seeds its accounts with deposits, committed by its own ledger.
    let args =
        LoadArgs::parse_from(["loadgen", "--quiet", "--via", "topic", "--accounts", "5", "--transfers", "20", "--amount-max-minor", "100"]);
    let report = loadgen::run(&app.settings, args).await.unwrap();
    assert_eq!(report.final_count, 20);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM event_outbox").fetch_one(app.ledger().pool()).await.unwrap();
    assert_eq!(rows, 0, "no row that no relay would ever publish");
    app.stop().await;
}

/// What the test receiver got: each request's headers and body.
#[derive(Clone, Default)]
struct Receiver {
    up: Arc<Mutex<bool>>,
    got: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    refused: Arc<Mutex<usize>>,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    if !*receiver.up.lock().unwrap() {
        *receiver.refused.lock().unwrap() += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    receiver.got.lock().unwrap().push((headers, body));
    StatusCode::NO_CONTENT
}

async fn spawn_receiver() -> (Receiver, String) {
    let receiver = Receiver::default();
    let router = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}/hook", listener.local_addr().unwrap().port());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (receiver, url)
}

/// Checks a delivery's signature as a receiver would (Standard Webhooks).
fn verify(secret: &str, headers: &HeaderMap, body: &str) -> bool {
    let key = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
    let signed = format!("{}.{}.{}", header("webhook-id"), header("webhook-timestamp"), body);
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(signed.as_bytes());
    let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    header("webhook-signature").split(' ').any(|s| s == expected)
}

async fn admin(app: &TestApp, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn fast_retries(db: &TestDb) -> transfer_engine::config::Settings {
    let mut settings = test_settings(db);
    settings.webhook_retry_backoff_ms_min = 100;
    settings.webhook_retry_backoff_ms_max = 400;
    settings.webhook_poll_ms = 50;
    settings
}

#[tokio::test]
async fn a_webhook_receiver_that_is_down_gets_every_event_signed_once_it_recovers() {
    let db = TestDb::new().await;
    let settings = fast_retries(&db);
    let app = TestApp::spawn_with(db, settings, Role::All).await;
    let (receiver, url) = spawn_receiver().await;
    let (status, created) = admin(
        &app,
        reqwest::Method::POST,
        "/v1/admin/webhooks",
        Some(json!({"url": url, "events": ["transfer.completed", "transfer.rejected"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    let webhook = created["webhook_id"].as_str().unwrap().to_owned();
    let (_, listed) = admin(&app, reqwest::Method::GET, "/v1/admin/webhooks", None).await;
    assert_eq!(listed["webhooks"][0]["url"], url);
    assert!(listed["webhooks"][0].get("secret").is_none(), "the secret is shown once");

    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let mut ids = Vec::new();
    for amount in ["1.00", "2.00", "3.00"] {
        ids.push(app.submit_accepted(json!({"sender_id": 1, "receiver_id": 2, "amount": amount, "currency": "EUR"})).await);
    }
    for id in &ids {
        app.wait_final(id).await;
    }
    // The receiver is down: each delivery is attempted, refused and retried.
    let deliveries_path = format!("/v1/admin/webhooks/{webhook}/deliveries");
    wait_for("retried deliveries", async || {
        let (_, body) = admin(&app, reqwest::Method::GET, &deliveries_path, None).await;
        let list = body["deliveries"].as_array()?.clone();
        (list.len() == 3 && list.iter().all(|d| d["attempts"].as_i64() >= Some(2))).then_some(())
    })
    .await;
    assert!(receiver.got.lock().unwrap().is_empty());
    *receiver.up.lock().unwrap() = true;

    let got = wait_for("every delivery", async || {
        let got = receiver.got.lock().unwrap().clone();
        let ids: HashSet<String> = got.iter().map(|(h, _)| h["webhook-id"].to_str().unwrap().to_owned()).collect();
        (ids.len() == 3).then_some(got)
    })
    .await;
    for (headers, body) in &got {
        assert!(verify(&secret, headers, body), "a valid signature");
        let event: Value = serde_json::from_str(body).unwrap();
        assert_eq!(headers["webhook-id"].to_str().unwrap(), event["event_id"]);
        assert!(ids.contains(&event["transfer_id"].as_str().unwrap().to_owned()));
        assert!(matches!(event["type"].as_str(), Some("transfer.completed" | "transfer.rejected")), "only the types asked for");
    }
    let (_, body) = admin(&app, reqwest::Method::GET, &deliveries_path, None).await;
    let delivery = &body["deliveries"][0];
    assert_eq!(delivery["state"], "delivered", "{body}");
    let attempts = delivery["recent_attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["http_status"], 204);
    assert_eq!(attempts.last().unwrap()["http_status"], 503);
    assert!(attempts[0]["latency_ms"].as_i64().is_some());

    // An operator re-sends a delivered one: the same id, signed again.
    let delivery_id = delivery["delivery_id"].as_i64().unwrap();
    let before = receiver.got.lock().unwrap().len();
    let (status, _) = admin(&app, reqwest::Method::POST, &format!("{deliveries_path}/{delivery_id}/resend"), None).await;
    assert_eq!(status, 202);
    let (headers, body) = wait_for("the re-sent delivery", async || receiver.got.lock().unwrap().get(before).cloned()).await;
    assert_eq!(headers["webhook-id"].to_str().unwrap(), delivery["event_id"]);
    assert!(verify(&secret, &headers, &body));

    let (status, _) = admin(&app, reqwest::Method::DELETE, &format!("/v1/admin/webhooks/{webhook}"), None).await;
    assert_eq!(status, 204);
    let (status, body) = admin(&app, reqwest::Method::DELETE, &format!("/v1/admin/webhooks/{webhook}"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("webhook_not_found")));
    // A deleted webhook is gone for the API, with its deliveries.
    let (status, body) = admin(&app, reqwest::Method::GET, &deliveries_path, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("webhook_not_found")));
    let (status, body) = admin(&app, reqwest::Method::POST, &format!("{deliveries_path}/{delivery_id}/resend"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("delivery_not_found")));
    app.stop().await;
}

#[tokio::test]
async fn a_delivery_past_its_retry_window_is_marked_failed_and_an_operator_can_send_it_again() {
    let db = TestDb::new().await;
    let mut settings = fast_retries(&db);
    settings.webhook_retry_window_s = 1;
    let app = TestApp::spawn_with(db, settings, Role::All).await;
    let (receiver, url) = spawn_receiver().await;
    let (_, created) =
        admin(&app, reqwest::Method::POST, "/v1/admin/webhooks", Some(json!({"url": url, "events": ["deposit.completed"]}))).await;
    let webhook = created["webhook_id"].as_str().unwrap().to_owned();
    app.open_account(1, "EUR", "10.00").await;
    let deliveries_path = format!("/v1/admin/webhooks/{webhook}/deliveries");
    let failed = wait_for("a failed delivery", async || {
        let (_, body) = admin(&app, reqwest::Method::GET, &deliveries_path, None).await;
        let d = body["deliveries"].get(0)?.clone();
        (d["state"] == "failed").then_some(d)
    })
    .await;
    assert!(failed["finished_at"].is_string() && failed["next_attempt_at"].is_null(), "{failed}");
    let attempts_then = failed["attempts"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, body) = admin(&app, reqwest::Method::GET, &deliveries_path, None).await;
    assert_eq!(body["deliveries"][0]["attempts"].as_i64(), Some(attempts_then), "a failed delivery is not attempted again");

    *receiver.up.lock().unwrap() = true;
    let id = failed["delivery_id"].as_i64().unwrap();
    let (status, _) = admin(&app, reqwest::Method::POST, &format!("{deliveries_path}/{id}/resend"), None).await;
    assert_eq!(status, 202);
    wait_for("the re-sent delivery", async || (!receiver.got.lock().unwrap().is_empty()).then_some(())).await;
    let (status, body) = admin(&app, reqwest::Method::POST, &format!("{deliveries_path}/999999/resend"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("delivery_not_found")));
    app.stop().await;
}

#[tokio::test]
async fn webhooks_refuse_urls_that_are_not_http_hosts_outside_the_allow_list_and_unknown_event_types() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.webhook_hosts_allowed = Some("hooks.example.com".into());
    let app = TestApp::spawn_with(db, settings, Role::Api).await;
    let cases = [
        (json!({"url": "http://127.0.0.1:9/x", "events": ["transfer.completed"]}), "webhook_host_not_allowed"),
        (json!({"url": "http://169.254.169.254/", "events": ["transfer.completed"]}), "webhook_host_not_allowed"),
        (json!({"url": "file:///etc/passwd", "events": ["transfer.completed"]}), "webhook_url_invalid"),
        (json!({"url": "https://u:p@hooks.example.com/", "events": ["transfer.completed"]}), "webhook_url_invalid"),
        (json!({"url": "https://hooks.example.com/", "events": []}), "events_invalid"),
        (json!({"url": "https://hooks.example.com/", "events": ["transfer.done"]}), "events_invalid"),
        (json!({"url": "https://hooks.example.com/", "events": ["transfer.completed"], "extra": 1}), "invalid_body"),
    ];
    for (body, code) in cases {
        let (status, answer) = admin(&app, reqwest::Method::POST, "/v1/admin/webhooks", Some(body.clone())).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (422, Some(code)), "{body}");
    }
    let (status, _) = admin(
        &app,
        reqwest::Method::POST,
        "/v1/admin/webhooks",
        Some(json!({"url": "https://hooks.example.com/in", "events": ["transfer.completed"]})),
    )
    .await;
    assert_eq!(status, 201);
    let r = app.client.get(app.url("/v1/admin/webhooks")).bearer_auth(&app.key).send().await.unwrap();
    assert_eq!(r.status(), 403, "an API key is not the admin token");
    let (status, body) = admin(&app, reqwest::Method::GET, "/v1/admin/webhooks/not-a-uuid/deliveries", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("webhook_not_found")));
    app.stop().await;
}
