//! Everything is bounded (issue 12, items 12-15): PostgreSQL statement and
//! lock time limits, the API's request time limit and concurrency limit, a
//! 503 (never a 500) from admin routes while PostgreSQL is away, metrics
//! labels a client cannot grow, settings checked at start, and topics created
//! with the replication and partitions asked for (or the cluster's defaults).

mod common;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, TestApp, TestDb, kafka_brokers, test_settings};
use sqlx::postgres::PgConnectOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use transfer_engine::config::{Secret, Settings};
use transfer_engine::kafka;
use transfer_engine::ledger;
use transfer_engine::startup::{Application, Role, connect_database, connect_database_for_maintenance};

/// A TCP relay between the engine and PostgreSQL that a test can stall (bytes
/// are held, as by a server that stopped answering) or cut (open connections
/// closed and new ones refused, as when the server is gone).
struct Relay {
    /// The database URL with the relay's address in place of PostgreSQL's.
    url: String,
    stalled: watch::Sender<bool>,
    accept: JoinHandle<()>,
    /// Every tunnel so far, so `cut` can close them.
    tunnels: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start(database_url: &str) -> Self {
        let target = PgConnectOptions::from_str(database_url).expect("a database URL");
        let upstream = format!("{}:{}", target.get_host(), target.get_port());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = database_url.replacen(&format!("@{upstream}/"), &format!("@{}/", listener.local_addr().unwrap()), 1);
        assert_ne!(url, database_url, "the test database URL names its host and port explicitly");
        let (stalled, watching) = watch::channel(false);
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let tunnels = tunnels.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(&upstream).await else { continue };
                    let tunnel = tokio::spawn(tunnel(client, server, watching.clone()));
                    tunnels.lock().unwrap().push(tunnel);
                }
            }
        });
        Self { url, stalled, accept, tunnels }
    }

    fn stall(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }

    fn cut(&self) {
        self.accept.abort();
        for tunnel in self.tunnels.lock().unwrap().drain(..) {
            tunnel.abort();
        }
    }
}

async fn tunnel(client: TcpStream, server: TcpStream, stalled: watch::Receiver<bool>) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        _ = relay_bytes(client_read, server_write, stalled.clone()) => {}
        _ = relay_bytes(server_read, client_write, stalled) => {}
    }
}

/// Copies bytes one way, holding each chunk while the relay is stalled.
async fn relay_bytes(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buffer).await?;
        if n == 0 {
            return Ok(());
        }
        if stalled.wait_for(|stalled| !*stalled).await.is_err() {
            return Ok(());
        }
        to.write_all(&buffer[..n]).await?;
    }
}

/// An engine (API only) whose PostgreSQL connections all go through a relay.
async fn spawn_behind_relay(adjust: impl FnOnce(&mut Settings)) -> (TestApp, Relay) {
    let db = TestDb::new().await;
    let relay = Relay::start(&db.url).await;
    let mut settings = test_settings(&db);
    settings.database_url = Secret::new(relay.url.clone());
    adjust(&mut settings);
    let app = TestApp::spawn_with(db, settings, Role::Api).await;
    (app, relay)
}

async fn admin_request(app: &TestApp, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

#[tokio::test]
async fn admin_routes_answer_503_database_unavailable_while_postgresql_is_away() {
    let (app, relay) = spawn_behind_relay(|_| {}).await;
    let (status, body) = admin_request(&app, reqwest::Method::GET, "/v1/admin/plugins", None).await;
    assert_eq!(status, 200, "through the relay, before the cut: {body}");

    relay.cut();
    use reqwest::Method;
    let client_id = uuid::Uuid::new_v4();
    let requests = [
        (Method::GET, "/v1/admin/plugins".to_owned(), None),
        (Method::POST, "/v1/admin/plugins/limits/activate".to_owned(), Some(serde_json::json!({"version": 1}))),
        (Method::POST, "/v1/admin/plugins/limits/deactivate".to_owned(), None),
        (Method::PUT, "/v1/admin/validation-order".to_owned(), Some(serde_json::json!({"names": ["limits"]}))),
        (Method::GET, "/v1/admin/clients".to_owned(), None),
        (Method::POST, "/v1/admin/clients".to_owned(), Some(serde_json::json!({"name": "shop", "scopes": ["transfers:read"]}))),
        (Method::DELETE, format!("/v1/admin/clients/{client_id}"), None),
    ];
    let answers =
        futures::future::join_all(requests.iter().map(|(method, path, body)| admin_request(&app, method.clone(), path, body.clone())))
            .await;
    for ((method, path, _), (status, body)) in requests.iter().zip(answers) {
        assert_eq!(status, 503, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "database_unavailable", "{method} {path}: {body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_request_past_its_time_limit_answers_503_request_timeout_and_the_engine_recovers() {
    let (app, relay) = spawn_behind_relay(|s| {
        s.http_request_timeout_ms = 1_000;
        s.publish_timeout_ms = 500;
    })
    .await;
    relay.stall(true);
    let started = Instant::now();
    let (status, body) = admin_request(&app, reqwest::Method::GET, "/v1/admin/plugins", None).await;
    let took = started.elapsed();
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("request_timeout")), "{body}");
    // The pool's own acquire limit (5 s) would have answered `database_unavailable`.
    assert!(took < Duration::from_secs(4), "answered after {took:?}");

    relay.stall(false);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = admin_request(&app, reqwest::Method::GET, "/v1/admin/plugins", None).await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still {status} after the stall ended: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_request_past_the_concurrency_limit_answers_503_overloaded_at_once_while_health_still_answers() {
    let (app, relay) = spawn_behind_relay(|s| s.http_requests_concurrent_max = 2).await;
    relay.stall(true);
    let app = Arc::new(app);
    let held: Vec<_> = (0..2)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { admin_request(&app, reqwest::Method::GET, "/v1/admin/plugins", None).await })
        })
        .collect();
    // Both are in progress, waiting for PostgreSQL (the pool gives up after 5 s).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let (status, body) = admin_request(&app, reqwest::Method::GET, "/v1/admin/clients", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("overloaded")), "{body}");
    assert!(started.elapsed() < Duration::from_secs(1), "refused after {:?}, not at once", started.elapsed());
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "health is outside the limit");

    relay.stall(false);
    for request in held {
        let (status, body) = request.await.unwrap();
        assert!(status == 200 || (status == 503 && body["error"]["code"] == "database_unavailable"), "{status} {body}");
    }
    let (status, body) = admin_request(&app, reqwest::Method::GET, "/v1/admin/clients", None).await;
    assert_eq!(status, 200, "the slots are free again: {body}");
    Arc::into_inner(app).expect("the only handle left").stop().await;
}

#[tokio::test]
async fn engine_connections_cut_a_statement_or_a_lock_wait_past_their_time_limits() {
    let db = TestDb::new().await;
    let defaults = connect_database(&test_settings(&db)).await.unwrap();
    let shown: (String, String) =
        sqlx::query_as("SELECT current_setting('statement_timeout'), current_setting('lock_timeout')").fetch_one(&defaults).await.unwrap();
    assert_eq!(shown, ("30s".to_owned(), "10s".to_owned()));
    defaults.close().await;

    let settings = Settings { database_statement_timeout_ms: 300, database_lock_timeout_ms: 200, ..test_settings(&db) };
    let pool = connect_database(&settings).await.unwrap();
    let started = Instant::now();
    let e = sqlx::query("SELECT pg_sleep(5)").execute(&pool).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "cut after {:?}", started.elapsed());
    assert_eq!(e.as_database_error().and_then(|db| db.code()).as_deref(), Some("57014"), "{e}");
    assert!(ledger::is_unavailable(&e), "a statement cut by its time limit is worth retrying: {e}");

    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE").execute(&mut *holder).await.unwrap();
    let e = sqlx::query("SELECT count(*) FROM accounts").execute(&pool).await.unwrap_err();
    assert_eq!(e.as_database_error().and_then(|db| db.code()).as_deref(), Some("55P03"), "{e}");
    assert!(ledger::is_unavailable(&e), "a lock not granted in time is worth retrying: {e}");
    holder.rollback().await.unwrap();
    pool.close().await;

    // Migrations and the audit read or rewrite whole tables: no statement limit there.
    let maintenance = connect_database_for_maintenance(&settings).await.unwrap();
    let shown: (String, String) = sqlx::query_as("SELECT current_setting('statement_timeout'), current_setting('lock_timeout')")
        .fetch_one(&maintenance)
        .await
        .unwrap();
    assert_eq!(shown, ("0".to_owned(), "200ms".to_owned()));
    maintenance.close().await;
    db.drop_database().await;
}

#[tokio::test]
async fn methods_a_client_makes_up_do_not_grow_the_metrics() {
    let db = TestDb::new().await;
    let settings = test_settings(&db);
    let app = TestApp::spawn_with(db, settings, Role::Api).await;
    // One made-up method on a known route (405) and on no route (404), and one
    // scrape (counted once answered), first: every label set this test makes
    // exists before the measurement.
    for path in ["/v1/transfers", "/nowhere"] {
        send(&app, "WARMUP", path).await;
    }
    metrics_text(&app).await;
    let before = metrics_text(&app).await;

    let made_up: Vec<String> = (0..200).map(|_| format!("M{}", &uuid::Uuid::new_v4().simple().to_string()[..12]).to_uppercase()).collect();
    for (i, method) in made_up.iter().enumerate() {
        let response = send(&app, method, if i % 2 == 0 { "/v1/transfers" } else { "/nowhere" }).await;
        assert!(response.status().is_client_error(), "{method}: {}", response.status());
    }
    let after = metrics_text(&app).await;
    for method in &made_up {
        assert!(!after.contains(method.as_str()), "{method} became a label");
    }
    assert!(after.contains(r#"method="other""#), "made-up methods are counted as `other`");
    // The counts grow by a few digits; a label set per method would add kilobytes each.
    assert!(after.len() < before.len() + 200, "/metrics grew from {} to {} bytes", before.len(), after.len());
    app.stop().await;
}

async fn send(app: &TestApp, method: &str, path: &str) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    app.client.request(method, app.url(path)).send().await.expect("request sent")
}

async fn metrics_text(app: &TestApp) -> String {
    app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

#[tokio::test]
async fn the_engine_refuses_to_start_with_a_setting_that_turns_idempotency_off() {
    // Refused before anything is reached: no database or broker is needed.
    let settings = Settings { status_cache_ttl_s: 0, ..Settings::default() };
    let e = Application::build(settings, Role::All).await.err().expect("refused");
    assert!(e.to_string().contains("status_cache_ttl_s"), "{e:#}");
}

#[tokio::test]
async fn topics_get_the_partitions_and_replicas_asked_for_or_the_clusters_defaults() {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let asked = format!("asked-{unique}");
    kafka::ensure_topics(&kafka_brokers(), &asked, &format!("{asked}.dlq"), None, Some(3), Some(1)).await.unwrap();
    let replicas = kafka::partition_replicas(&kafka_brokers(), &asked).await.unwrap();
    assert_eq!(replicas.iter().map(|&(p, _)| p).collect::<std::collections::BTreeSet<_>>(), (0..3).collect());
    assert!(replicas.iter().all(|&(_, n)| n == 1), "{replicas:?}");
    let dlq = kafka::partition_replicas(&kafka_brokers(), &format!("{asked}.dlq")).await.unwrap();
    assert_eq!(dlq.len(), 1, "the dead-letter topic has one partition: {dlq:?}");

    let defaulted = format!("defaulted-{unique}");
    kafka::ensure_topics(&kafka_brokers(), &defaulted, &format!("{defaulted}.dlq"), None, None, None).await.unwrap();
    let replicas = kafka::partition_replicas(&kafka_brokers(), &defaulted).await.unwrap();
    assert!(!replicas.is_empty() && replicas.iter().all(|&(_, n)| n >= 1), "created with the cluster's defaults: {replicas:?}");
    // Creating again leaves the topic as it is.
    kafka::ensure_topics(&kafka_brokers(), &asked, &format!("{asked}.dlq"), None, Some(5), None).await.unwrap();
    assert_eq!(kafka::partition_replicas(&kafka_brokers(), &asked).await.unwrap().len(), 3);
}
