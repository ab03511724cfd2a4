//! Test harness: each test gets its own database (`test_<uuid>`, migrations
//! applied), its own topic and consumer group, and the engine started on
//! port 0 exactly as `main` starts it. Real PostgreSQL, Redis and broker.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection, PgPool};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use transfer_engine::auth::{ClientStore, NewClient, Scope};
use transfer_engine::config::{Secret, Settings};
use transfer_engine::domain::{Amount, Currency, OwnerId};
use transfer_engine::ledger::{self, Ledger};
use transfer_engine::startup::{Application, Role};

pub const ADMIN_TOKEN: &str = "test-admin-token";

pub fn database_url() -> String {
    std::env::var("TRANSFER_TESTS_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://transfer_engine:transfer_engine@127.0.0.1:5432/transfer_engine".into())
}

pub fn redis_url() -> String {
    std::env::var("TRANSFER_TESTS_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

pub fn kafka_brokers() -> String {
    std::env::var("TRANSFER_TESTS_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn with_database(url: &str, name: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("a database URL ends in /<database>");
    format!("{base}/{name}")
}

/// A fresh, migrated database of its own.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> Self {
        let db = Self::empty().await;
        ledger::migrate(&db.pool).await.expect("migrations apply");
        db
    }

    /// A fresh database without the schema (for tests of migrations).
    pub async fn empty() -> Self {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&database_url()).await.expect("PostgreSQL is reachable (scripts/test starts it)");
        admin.execute(format!(r#"CREATE DATABASE "{name}""#).as_str()).await.expect("create test database");
        let url = with_database(&database_url(), &name);
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(20).connect(&url).await.expect("connect to test database");
        Self { name, url, pool }
    }

    pub fn ledger(&self) -> Ledger {
        Ledger::new(self.pool.clone())
    }

    /// Drops the database (best effort).
    pub async fn drop_database(self) {
        self.pool.close().await;
        if let Ok(mut admin) = PgConnection::connect(&database_url()).await {
            let _ = admin.execute(format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name).as_str()).await;
        }
    }
}

pub fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

pub fn owner(id: i64) -> OwnerId {
    OwnerId::new(id).unwrap()
}

pub fn amount(minor: i64) -> Amount {
    Amount::from_minor(minor).unwrap()
}

/// Opens accounts for `owners` in `currency` and deposits `balance_minor` into each.
pub async fn seed(ledger: &Ledger, owners: impl IntoIterator<Item = i64>, currency: Currency, balance_minor: i64) {
    for id in owners {
        ledger.create_account(owner(id), currency, 0).await.unwrap();
        if balance_minor > 0 {
            ledger.deposit(owner(id), currency, amount(balance_minor), &format!("seed-{id}-{currency}")).await.unwrap();
        }
    }
}

/// Runs the ledger audit and panics with the report if any invariant is broken.
pub async fn assert_audit_passes(ledger: &Ledger) {
    let report = ledger.audit().await.unwrap();
    assert!(report.passed(), "ledger audit failed: {report:#?}");
}

/// Creates an API client straight in the database and returns its key.
pub async fn create_client(pool: &PgPool, name: &str, scopes: &[Scope], owners: Option<&[i64]>) -> String {
    let scopes: Vec<String> = scopes.iter().map(|s| s.as_str().to_owned()).collect();
    let new = NewClient::new(name, &scopes, owners).expect("a valid client");
    ClientStore::new(pool.clone(), Duration::from_secs(1)).create(&new).await.expect("client created").1
}

/// The engine, running in this process against its own database and topic.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    /// An API key with every scope, for any owner: what `post` and `get` send.
    pub key: String,
    pub db: TestDb,
    pub settings: Settings,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Compiled plugins kept between test runs and shared by the test binaries
/// (a Python or JavaScript component takes seconds to compile).
pub fn compiled_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("compiled-plugins")
}

/// Settings for a test: unique topic and group, port 0, its own database.
pub fn test_settings(db: &TestDb) -> Settings {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    Settings {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        database_url: Secret::new(db.url.clone()),
        redis_url: Secret::new(redis_url()),
        redis_key_prefix: format!("test-{unique}:"),
        kafka_brokers: kafka_brokers(),
        topic: format!("transfers-{unique}"),
        topic_partitions: Some(2),
        consumer_group: format!("group-{unique}"),
        admin_token: Some(Secret::new(ADMIN_TOKEN)),
        database_connections_max: 8,
        plugin_compiled_dir: Some(compiled_dir()),
        ..Settings::default()
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        let db = TestDb::new().await;
        let settings = test_settings(&db);
        Self::spawn_with(db, settings, Role::All).await
    }

    pub async fn spawn_with(db: TestDb, settings: Settings, role: Role) -> Self {
        transfer_engine::telemetry::init(settings.log_format);
        let app = Application::build(settings.clone(), role).await.expect("the engine starts");
        let address = format!("http://127.0.0.1:{}", app.port());
        let (shutdown, stop) = oneshot::channel::<()>();
        let handle = tokio::spawn(app.run_until_stopped(async move {
            let _ = stop.await;
        }));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let key = create_client(&db.pool, "test", &Scope::ALL, None).await;
        Self { address, client, key, db, settings, shutdown: Some(shutdown), handle: Some(handle) }
    }

    /// Another engine in `role` beside this one: the same database and topic,
    /// its own consumer group, port and caches (as a second instance of a deployment).
    pub async fn spawn_beside(&self, role: Role) -> TestApp {
        let shared = TestDb { name: self.db.name.clone(), url: self.db.url.clone(), pool: self.db.pool.clone() };
        let mut settings = test_settings(&self.db);
        settings.topic = self.settings.topic.clone();
        Self::spawn_with(shared, settings, role).await
    }

    pub fn ledger(&self) -> Ledger {
        self.db.ledger()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// POSTs as the test's API key (every scope, any owner).
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client.post(self.url(path)).bearer_auth(&self.key).json(body).send().await.expect("request sent")
    }

    pub async fn admin_post(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client.post(self.url(path)).bearer_auth(ADMIN_TOKEN).json(body).send().await.expect("request sent")
    }

    /// GETs as the test's API key (every scope, any owner).
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).bearer_auth(&self.key).send().await.expect("request sent")
    }

    /// Opens an account over HTTP and deposits `balance` (decimal text) into it.
    pub async fn open_account(&self, owner_id: i64, currency: &str, balance: &str) {
        let r = self.post("/v1/accounts", &serde_json::json!({"owner_id": owner_id, "currency": currency})).await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        if balance != "0" {
            let body = serde_json::json!({"owner_id": owner_id, "currency": currency, "amount": balance, "reference": format!("open-{owner_id}-{currency}")});
            let r = self.admin_post("/v1/deposits", &body).await;
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        }
    }

    /// Polls `GET /v1/transfers/{id}` until the status is final.
    pub async fn wait_final(&self, id: &str) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.get(&format!("/v1/transfers/{id}")).await;
            if r.status() == 200 {
                let body: serde_json::Value = r.json().await.unwrap();
                if body["status"] != "initiated" {
                    return body;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "transfer {id} did not reach a final status in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Graceful shutdown, then the database is dropped.
    pub async fn stop(mut self) {
        self.shutdown_engine().await;
        self.db.drop_database().await;
    }

    /// Graceful shutdown of the engine only; the database stays for inspection.
    pub async fn shutdown_engine(&mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(60), h).await.expect("engine stops in time").unwrap().unwrap();
        }
    }
}

/// A built example plugin or fixture (`plugins/build.sh` writes them; `scripts/test` runs it).
/// The engine's binary, with nothing inherited that could point it
/// elsewhere (every `TRANSFER_ENGINE_` variable removed).
pub fn engine_binary() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_transfer-engine"));
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("TRANSFER_ENGINE_")) {
        command.env_remove(name);
    }
    command
}

pub fn plugin_path(file_stem: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist").join(format!("{file_stem}.wasm"))
}

pub fn plugin_bytes(file_stem: &str) -> Vec<u8> {
    let path = plugin_path(file_stem);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (build the plugins first: plugins/build.sh)", path.display()))
}

impl TestApp {
    /// Uploads a plugin version over the admin API and returns the answer.
    pub async fn upload_plugin(
        &self,
        name: &str,
        file_stem: &str,
        kind: &str,
        config: serde_json::Value,
        activate: bool,
    ) -> serde_json::Value {
        use base64::Engine as _;
        let component = base64::engine::general_purpose::STANDARD.encode(plugin_bytes(file_stem));
        let body = serde_json::json!({"name": name, "kind": kind, "config": config, "component": component, "activate": activate});
        let r = self.admin_post("/v1/admin/plugins", &body).await;
        let status = r.status();
        let answer: serde_json::Value = r.json().await.unwrap();
        assert_eq!(status, 201, "{answer}");
        answer
    }
}

impl TestApp {
    /// Submits a transfer that must be accepted; answers its id.
    pub async fn submit_accepted(&self, body: serde_json::Value) -> String {
        let r = self.post("/v1/transfers", &body).await;
        let status = r.status();
        let answer: serde_json::Value = r.json().await.unwrap();
        assert_eq!(status, 202, "{answer}");
        answer["transfer_id"].as_str().unwrap().to_owned()
    }

    /// Submits probes of 0.01 EUR from 1 to 2 until one's decisions satisfy
    /// `done` (the engine swaps plugin sets between batches).
    pub async fn wait_for_decisions(&self, done: impl Fn(&[serde_json::Value]) -> bool, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let id = self.submit_accepted(serde_json::json!({"sender_id": 1, "receiver_id": 2, "amount": "0.01", "currency": "EUR"})).await;
            if done(self.wait_final(&id).await["decisions"].as_array().unwrap()) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "never saw {what}");
        }
    }

    /// GETs an admin route and answers its JSON.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        self.client.get(self.url(path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap()
    }
}

/// The `limits` versions among decisions, as (version, role, outcome).
pub fn limits_decisions(decisions: &[serde_json::Value]) -> Vec<(i64, String, String)> {
    decisions
        .iter()
        .filter(|d| d["plugin"] == "limits")
        .map(|d| (d["version"].as_i64().unwrap(), d["role"].as_str().unwrap().to_owned(), d["outcome"].as_str().unwrap().to_owned()))
        .collect()
}

/// Checks every transfer of `sender` against a daily limit in commit order: a
/// completed one fitted under it with the debits committed before it, and
/// one rejected for the limit did not. (`seq` is commit order; the rows of
/// one batch are inserted in the batch's order.)
pub async fn assert_daily_limit_decided_exactly(pool: &PgPool, sender: i64, limit_minor: i64, limit_code: &str) -> (usize, usize) {
    let rows: Vec<(chrono::DateTime<chrono::Utc>, i64, String, Option<String>)> = sqlx::query_as(
        "SELECT created_at, amount_minor, status, reason_code FROM transfers WHERE sender_id = $1 AND kind = 'transfer' ORDER BY seq",
    )
    .bind(sender)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut completed: Vec<(chrono::DateTime<chrono::Utc>, i64)> = Vec::new();
    let (mut allowed, mut refused) = (0, 0);
    for (at, minor, status, code) in rows {
        let since = at - chrono::TimeDelta::seconds(86_400);
        let spent: i64 = completed.iter().filter(|(t, _)| *t > since).map(|(_, m)| m).sum();
        match (status.as_str(), code.as_deref()) {
            ("completed", _) => {
                assert!(spent + minor <= limit_minor, "completed {minor} on top of {spent} past the limit {limit_minor}");
                completed.push((at, minor));
                allowed += 1;
            }
            ("rejected", Some(code)) if code == limit_code => {
                assert!(spent + minor > limit_minor, "refused {minor} on top of {spent} under the limit {limit_minor}");
                refused += 1;
            }
            // Refused for another reason (another validator, the ledger's own
            // rules): it moved nothing, so it counts for nothing.
            ("rejected", Some(_)) => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    // And no trailing 24 h window of the sender's completed debits sums past the limit.
    for (end, _) in &completed {
        let since = *end - chrono::TimeDelta::seconds(86_400);
        let sum: i64 = completed.iter().filter(|(t, _)| *t > since && *t <= *end).map(|(_, m)| m).sum();
        assert!(sum <= limit_minor, "a window ending {end} sums {sum}");
    }
    (allowed, refused)
}
