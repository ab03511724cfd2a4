//! Metadata end to end (issue 13): the string map a client attaches to a
//! transfer or an account. Refused out of bounds with `422 metadata_invalid`
//! on every route that takes it; a transfer's metadata goes through the topic
//! and the processor into the ledger and back out of `GET` (from Redis and
//! from PostgreSQL), and is part of what its id means; an account's is
//! replaced whole by `PATCH`, under the same credentials as opening one.

mod common;

use common::{ADMIN_TOKEN, TestApp, TestDb, create_client, test_settings};
use reqwest::Method;
use serde_json::{Value, json};
use transfer_engine::auth::Scope;
use transfer_engine::cache::Cache;
use transfer_engine::domain::TransferId;
use transfer_engine::startup::Role;

/// Sends a request with `key` as its bearer credential.
async fn call(app: &TestApp, method: Method, path: &str, key: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.expect("request sent");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or("")
}

async fn patch(app: &TestApp, path: &str, key: &str, body: Value) -> (u16, Value) {
    call(app, Method::PATCH, path, key, Some(body)).await
}

/// An engine serving the API alone (nothing here needs the processor).
async fn api_only() -> TestApp {
    let db = TestDb::new().await;
    let settings = test_settings(&db);
    TestApp::spawn_with(db, settings, Role::Api).await
}

/// Every rule, broken once: the metadata, and a word its message must have.
fn broken_metadata() -> Vec<(Value, &'static str)> {
    let many: serde_json::Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    vec![
        (Value::Object(many), "17 keys"),
        (json!({"Country": "DE"}), "\"Country\""),
        (json!({"has space": "x"}), "\"has space\""),
        (json!({"": "x"}), "must be 1 to 64"),
        (json!({"k".repeat(65): "x"}), "must be 1 to 64"),
        (json!({"note": "v".repeat(257)}), "257 characters"),
        (json!({"note": "a\u{0}b"}), "NUL"),
        (json!({"tier": 1}), "must be a string"),
        (json!({"tier": true}), "must be a string"),
        (json!({"tier": ["gold"]}), "must be a string"),
        (json!(["tier", "gold"]), "JSON object"),
        (json!("tier=gold"), "JSON object"),
    ]
}

/// The metadata `GET` shows for an account.
async fn account_metadata(app: &TestApp, owner: i64) -> Value {
    let (status, account) = call(app, Method::GET, &format!("/v1/accounts/{owner}/EUR"), &app.key, None).await;
    assert_eq!(status, 200, "{account}");
    account["metadata"].clone()
}

#[tokio::test]
async fn metadata_past_any_bound_is_refused_as_metadata_invalid_on_transfers_and_accounts_and_changes_nothing() {
    let app = api_only().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let (status, _) = patch(&app, "/v1/accounts/1/EUR", &app.key, json!({"metadata": {"kyc_tier": "basic"}})).await;
    assert_eq!(status, 200);
    for (metadata, rule) in broken_metadata() {
        let transfer = json!({"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR", "metadata": metadata});
        let account = json!({"owner_id": 3, "currency": "EUR", "metadata": metadata});
        let replacement = json!({"metadata": metadata});
        for (method, path, body) in [
            (Method::POST, "/v1/transfers", transfer),
            (Method::POST, "/v1/accounts", account),
            (Method::PATCH, "/v1/accounts/1/EUR", replacement),
        ] {
            let (status, answer) = call(&app, method.clone(), path, &app.key, Some(body)).await;
            assert_eq!((status, code(&answer)), (422, "metadata_invalid"), "{method} {path} with {metadata}: {answer}");
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(message.contains(rule), "{method} {path} with {metadata}: {message:?} does not name the rule ({rule:?})");
        }
    }
    // PATCH needs metadata, and an object: null is not "none" there.
    let (status, answer) = patch(&app, "/v1/accounts/1/EUR", &app.key, json!({"metadata": null})).await;
    assert_eq!((status, code(&answer)), (422, "metadata_invalid"), "{answer}");
    for body in [json!({}), json!({"metadata": {}, "balance": "5"})] {
        let (status, answer) = patch(&app, "/v1/accounts/1/EUR", &app.key, body.clone()).await;
        assert_eq!((status, code(&answer)), (422, "invalid_body"), "{body}: {answer}");
    }

    let opened: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts WHERE owner_id = 3").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(opened, 0, "no refused account was opened");
    assert_eq!(account_metadata(&app, 1).await, json!({"kyc_tier": "basic"}), "no refused PATCH changed the metadata");
    app.stop().await;
}

#[tokio::test]
async fn a_transfers_metadata_reaches_the_ledger_and_get_answers_it_from_redis_and_from_postgresql() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let tagged = json!({"channel": "web", "order.id": "A-17", "note": "é".repeat(256)});
    let body = json!({"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR", "metadata": tagged});
    let r = app.post("/v1/transfers", &body).await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["transfer_id"].as_str().unwrap().to_owned();
    let plain = json!({"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR"});
    let r = app.post("/v1/transfers", &plain).await;
    assert_eq!(r.status(), 202);
    let plain_id = r.json::<Value>().await.unwrap()["transfer_id"].as_str().unwrap().to_owned();

    // The processor's view in Redis.
    let done = app.wait_final(&id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["metadata"], tagged);
    assert_eq!(app.wait_final(&plain_id).await["metadata"], json!({}), "always present, `{{}}` when none");

    // The row: a JSON object, NULL when there is none.
    let stored: Option<String> = sqlx::query_scalar("SELECT metadata::text FROM transfers WHERE transfer_id = $1::uuid")
        .bind(&id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(serde_json::from_str::<Value>(&stored.expect("stored")).unwrap(), tagged);
    let stored: Option<String> = sqlx::query_scalar("SELECT metadata::text FROM transfers WHERE transfer_id = $1::uuid")
        .bind(&plain_id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(stored, None);

    // PostgreSQL's answer, once Redis has forgotten the transfer.
    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let cache = Cache::from_settings(&app.settings).unwrap();
    for forgotten in [&id, &plain_id] {
        let key = cache.transfer_key(TransferId(uuid::Uuid::parse_str(forgotten).unwrap()));
        let deleted: i64 = redis::cmd("DEL").arg(&key).query_async(&mut c).await.unwrap();
        assert_eq!(deleted, 1, "{key} was cached");
    }
    let (status, from_ledger) = call(&app, Method::GET, &format!("/v1/transfers/{id}"), &app.key, None).await;
    assert_eq!(status, 200);
    assert_eq!((&from_ledger["status"], &from_ledger["metadata"]), (&json!("completed"), &tagged), "PostgreSQL answers as Redis did");
    let (_, plain_from_ledger) = call(&app, Method::GET, &format!("/v1/transfers/{plain_id}"), &app.key, None).await;
    assert_eq!(plain_from_ledger["metadata"], json!({}));
    let (_, listed) = call(&app, Method::GET, "/v1/accounts/1/EUR/transfers", &app.key, None).await;
    let listed: Vec<&Value> = listed["transfers"].as_array().unwrap().iter().filter(|t| t["kind"] == "transfer").collect();
    assert_eq!(listed.iter().map(|t| t["metadata"].clone()).collect::<Vec<_>>(), [json!({}), tagged.clone()], "newest first");
    common::assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

#[tokio::test]
async fn the_same_transfer_id_with_other_metadata_is_a_conflict_and_with_the_same_metadata_a_retry() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let id = uuid::Uuid::now_v7();
    let with = |metadata: Value| json!({"transfer_id": id, "sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR", "metadata": metadata});
    let status_and_code = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let replayed = r.headers().get("idempotent-replayed").is_some();
        let body: Value = r.json().await.unwrap();
        (status, replayed, code(&body).to_owned())
    };
    assert_eq!(app.post("/v1/transfers", &with(json!({"channel": "web", "tier": "gold"}))).await.status(), 202);
    // Before and after the processor decided it: Redis's claim, then the final view.
    for round in ["claimed", "final"] {
        if round == "final" {
            assert_eq!(app.wait_final(&id.to_string()).await["status"], "completed");
        }
        let same_in_another_order = with(serde_json::from_str(r#"{"tier": "gold", "channel": "web"}"#).unwrap());
        assert_eq!(status_and_code(app.post("/v1/transfers", &same_in_another_order).await).await, (200, true, String::new()), "{round}");
        for other in [json!({"channel": "app", "tier": "gold"}), json!({"channel": "web"}), json!({}), Value::Null] {
            let r = app.post("/v1/transfers", &with(other.clone())).await;
            assert_eq!(status_and_code(r).await, (409, false, "idempotency_conflict".to_owned()), "{round}: {other}");
        }
    }
    // And when only PostgreSQL knows the id.
    let key = Cache::from_settings(&app.settings).unwrap().transfer_key(TransferId(id));
    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("DEL").arg(&key).query_async(&mut c).await.unwrap();
    let r = app.post("/v1/transfers", &with(json!({"channel": "app", "tier": "gold"}))).await;
    assert_eq!(status_and_code(r).await, (409, false, "idempotency_conflict".to_owned()));
    let r = app.post("/v1/transfers", &with(json!({"channel": "web", "tier": "gold"}))).await;
    assert_eq!(status_and_code(r).await, (200, true, String::new()));

    // A transfer without metadata: `{}` and null mean the same as none.
    let bare = uuid::Uuid::now_v7();
    let plain = json!({"transfer_id": bare, "sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR"});
    assert_eq!(app.post("/v1/transfers", &plain).await.status(), 202);
    for none in [json!({}), Value::Null] {
        let mut body = plain.clone();
        body["metadata"] = none.clone();
        assert_eq!(status_and_code(app.post("/v1/transfers", &body).await).await, (200, true, String::new()), "{none}");
    }
    assert_eq!(app.wait_final(&bare.to_string()).await["status"], "completed");
    let moved: i64 = sqlx::query_scalar("SELECT count(*) FROM transfers WHERE kind = 'transfer'").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(moved, 2, "each id recorded once, under its first meaning");
    let (_, first) = call(&app, Method::GET, &format!("/v1/transfers/{id}"), &app.key, None).await;
    assert_eq!(first["metadata"], json!({"channel": "web", "tier": "gold"}));
    common::assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

#[tokio::test]
async fn patch_replaces_an_accounts_metadata_whole_and_get_shows_it_without_moving_the_balance() {
    let app = api_only().await;
    let (status, opened) = call(
        &app,
        Method::POST,
        "/v1/accounts",
        &app.key,
        Some(json!({"owner_id": 1, "currency": "EUR", "metadata": {"kyc_tier": "basic"}})),
    )
    .await;
    assert_eq!(status, 201, "{opened}");
    assert_eq!(opened["metadata"], json!({"kyc_tier": "basic"}));
    let (status, plain) = call(&app, Method::POST, "/v1/accounts", &app.key, Some(json!({"owner_id": 2, "currency": "EUR"}))).await;
    assert_eq!((status, &plain["metadata"]), (201, &json!({})), "{plain}");
    assert_eq!(account_metadata(&app, 1).await, json!({"kyc_tier": "basic"}));
    assert_eq!(account_metadata(&app, 2).await, json!({}));

    let deposit = json!({"owner_id": 1, "currency": "EUR", "amount": "5.00", "reference": "wire-1"});
    assert_eq!(app.admin_post("/v1/deposits", &deposit).await.status(), 201);
    let version = || async {
        sqlx::query_scalar::<_, i64>("SELECT version FROM accounts WHERE owner_id = 1 AND currency = 'EUR'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
    };
    let version_before = version().await;
    let (_, before) = call(&app, Method::GET, "/v1/accounts/1/EUR", &app.key, None).await;

    let replacement = json!({"kyc_tier": "verified", "country": "DE"});
    let (status, answer) = patch(&app, "/v1/accounts/1/EUR", &app.key, json!({"metadata": replacement})).await;
    assert_eq!(status, 200, "{answer}");
    let (_, after) = call(&app, Method::GET, "/v1/accounts/1/EUR", &app.key, None).await;
    assert_eq!(answer, after, "PATCH answers the account as GET shows it");
    assert_eq!(after["metadata"], replacement, "replaced whole: the old keys are gone");
    let mut unchanged = after.clone();
    unchanged["metadata"] = before["metadata"].clone();
    assert_eq!(unchanged, before, "only the metadata changed");
    assert_eq!(after["balance_minor"], 500);
    assert_eq!(version().await, version_before, "the balance's version orders cached balances: a metadata change leaves it");

    // The balance cache still serves the pre-check: a transfer of the whole balance is accepted.
    let transfer = json!({"sender_id": 1, "receiver_id": 2, "amount": "5.00", "currency": "EUR"});
    assert_eq!(app.post("/v1/transfers", &transfer).await.status(), 202);

    let (status, cleared) = patch(&app, "/v1/accounts/1/EUR", &app.key, json!({"metadata": {}})).await;
    assert_eq!((status, &cleared["metadata"]), (200, &json!({})), "{cleared}");
    assert_eq!(account_metadata(&app, 1).await, json!({}));
    let stored: String = sqlx::query_scalar("SELECT metadata::text FROM accounts WHERE owner_id = 1 AND currency = 'EUR'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(stored, "{}");
    app.stop().await;
}

#[tokio::test]
async fn patch_needs_accounts_write_an_owner_the_client_may_act_for_and_an_account_that_exists() {
    let app = api_only().await;
    app.open_account(1, "EUR", "0").await;
    app.open_account(2, "EUR", "0").await;
    let body = json!({"metadata": {"kyc_tier": "verified"}});
    let reader = create_client(&app.db.pool, "reader", &[Scope::AccountsRead, Scope::TransfersWrite], None).await;
    let (status, answer) = patch(&app, "/v1/accounts/1/EUR", &reader, body.clone()).await;
    assert_eq!((status, code(&answer)), (403, "scope_missing"), "{answer}");

    // Bound to owner 2: refused for owner 1 exactly as opening an account for owner 1 is.
    let bound = create_client(&app.db.pool, "bound", &[Scope::AccountsWrite, Scope::AccountsRead], Some(&[2])).await;
    let (open_status, opened) = call(&app, Method::POST, "/v1/accounts", &bound, Some(json!({"owner_id": 1, "currency": "USD"}))).await;
    assert_eq!((open_status, code(&opened)), (403, "owner_not_permitted"), "{opened}");
    let (status, answer) = patch(&app, "/v1/accounts/1/EUR", &bound, body.clone()).await;
    assert_eq!((status, code(&answer)), (open_status, code(&opened)), "{answer}");
    assert_eq!(account_metadata(&app, 1).await, json!({}), "refused: nothing changed");
    let (status, answer) = patch(&app, "/v1/accounts/2/EUR", &bound, body.clone()).await;
    assert_eq!((status, &answer["metadata"]), (200, &body["metadata"]), "{answer}");

    // No such account: what GET answers. The system accounts (owner 0) are no one's to change.
    let (get_status, got) = call(&app, Method::GET, "/v1/accounts/1/USD", &app.key, None).await;
    let (status, answer) = patch(&app, "/v1/accounts/1/USD", &app.key, body.clone()).await;
    assert_eq!((status, code(&answer)), (404, "account_not_found"), "{answer}");
    assert_eq!((get_status, code(&got)), (404, "account_not_found"));
    let deposit = json!({"owner_id": 1, "currency": "EUR", "amount": "1.00", "reference": "makes-the-system-account"});
    assert_eq!(app.admin_post("/v1/deposits", &deposit).await.status(), 201);
    let (status, answer) = patch(&app, "/v1/accounts/0/EUR", ADMIN_TOKEN, body.clone()).await;
    assert_eq!((status, code(&answer)), (422, "owner_id_invalid"), "{answer}");
    let (get_status, got) = call(&app, Method::GET, "/v1/accounts/0/EUR", ADMIN_TOKEN, None).await;
    assert_eq!((get_status, code(&got)), (status, code(&answer)), "refused as GET refuses it");
    let system: String =
        sqlx::query_scalar("SELECT metadata::text FROM accounts WHERE owner_id = 0").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(system, "{}");
    app.stop().await;
}

#[tokio::test]
async fn the_largest_metadata_the_rules_allow_fits_every_route_that_takes_it() {
    let app = api_only().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    // 16 keys of 64 characters, each value 256 characters of four UTF-8 bytes
    // written as escaped surrogate pairs (12 bytes each): about 50 KB of JSON.
    let value = "\\ud83d\\ude00".repeat(256);
    let entries: Vec<String> = (0..16).map(|i| format!(r#""{}": "{value}""#, format!("{i:02}").repeat(32))).collect();
    let metadata = format!("{{{}}}", entries.join(", "));
    assert!(metadata.len() > 48 * 1024, "{} bytes", metadata.len());
    let bodies = [
        (Method::POST, "/v1/accounts", format!(r#"{{"owner_id": 3, "currency": "EUR", "metadata": {metadata}}}"#), 201),
        (Method::PATCH, "/v1/accounts/1/EUR", format!(r#"{{"metadata": {metadata}}}"#), 200),
        (
            Method::POST,
            "/v1/transfers",
            format!(r#"{{"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR", "metadata": {metadata}}}"#),
            202,
        ),
    ];
    for (method, path, body, expected) in bodies {
        let r = app
            .client
            .request(method.clone(), app.url(path))
            .bearer_auth(&app.key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let answer: Value = r.json().await.unwrap();
        assert_eq!(status, expected, "{method} {path}: {answer}");
    }
    let stored = account_metadata(&app, 1).await;
    assert_eq!(stored.as_object().unwrap().len(), 16);
    assert!(stored.as_object().unwrap().values().all(|v| v.as_str().unwrap().chars().count() == 256));
    app.stop().await;
}
