//! Authentication and authorization end to end: API clients, scopes, owner
//! binding, revocation across engines, and what the processor role serves.

mod common;

use std::time::Duration;

use common::{ADMIN_TOKEN, TestApp, TestDb, create_client, test_settings};
use proptest::prelude::*;
use reqwest::Method;
use serde_json::{Value, json};
use transfer_engine::auth::Scope;
use transfer_engine::startup::Role;

/// Sends a request with `key` as its bearer credential (or none).
async fn call(app: &TestApp, method: Method, path: &str, key: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut request = app.client.request(method, app.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
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

async fn admin_create_client(app: &TestApp, body: Value) -> (u16, Value) {
    call(app, Method::POST, "/v1/admin/clients", Some(ADMIN_TOKEN), Some(body)).await
}

#[tokio::test]
async fn an_operator_creates_lists_and_revokes_clients_and_the_key_is_shown_once() {
    let app = TestApp::spawn().await;
    let (status, created) =
        admin_create_client(&app, json!({"name": "shop", "scopes": ["transfers:write", "transfers:read"], "owners": [7, 3, 7]})).await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("tek_") && key.len() > 64, "{key}");
    let client_id = created["client_id"].as_str().unwrap().to_owned();
    assert_eq!(created["owners"], json!([3, 7]));

    let (status, listed) = call(&app, Method::GET, "/v1/admin/clients", Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 200);
    let text = listed.to_string();
    assert!(!text.contains(key) && !text.contains(&key[key.len() - 64..]), "a listing never shows a key: {text}");
    let shop = listed["clients"].as_array().unwrap().iter().find(|c| c["client_id"] == client_id.as_str()).expect("listed");
    assert_eq!(shop["scopes"], json!(["transfers:write", "transfers:read"]));
    assert!(shop["revoked_at"].is_null());

    // What PostgreSQL holds is a hash, never the key or its secret.
    let stored: Vec<u8> = sqlx::query_scalar("SELECT secret_sha256 FROM api_clients WHERE client_id = $1::uuid")
        .bind(&client_id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 32);
    assert_ne!(hex::encode(&stored), key[key.len() - 64..]);

    let (status, _) = call(&app, Method::DELETE, &format!("/v1/admin/clients/{client_id}"), Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 204);
    let (status, answer) = call(&app, Method::GET, "/v1/transfers/00000000-0000-0000-0000-000000000001", Some(key), None).await;
    assert_eq!((status, code(&answer)), (401, "unauthorized"), "the engine that revoked forgets the key at once");
    let (status, _) = call(&app, Method::DELETE, &format!("/v1/admin/clients/{client_id}"), Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 204, "revoking twice changes nothing");
    let (status, answer) =
        call(&app, Method::DELETE, &format!("/v1/admin/clients/{}", uuid::Uuid::new_v4()), Some(ADMIN_TOKEN), None).await;
    assert_eq!((status, code(&answer)), (404, "client_not_found"));

    for (body, expected) in [
        (json!({"name": "", "scopes": ["transfers:read"]}), "client_name_invalid"),
        (json!({"name": "x", "scopes": []}), "scopes_invalid"),
        (json!({"name": "x", "scopes": ["transfers:*"]}), "scopes_invalid"),
        (json!({"name": "x", "scopes": ["transfers:read"], "owners": []}), "owners_invalid"),
        (json!({"name": "x", "scopes": ["transfers:read"], "owners": [-1]}), "owners_invalid"),
    ] {
        let (status, answer) = admin_create_client(&app, body.clone()).await;
        assert_eq!((status, code(&answer)), (422, expected), "{body}: {answer}");
    }
    // A client key, however scoped, is not the admin token.
    let (status, answer) = admin_create_client(&app, json!({"name": "x", "scopes": ["transfers:read"]})).await;
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = call(&app, Method::GET, "/v1/admin/clients", Some(&app.key), None).await;
    assert_eq!((status, code(&answer)), (403, "scope_missing"));
    app.stop().await;
}

#[tokio::test]
async fn a_client_lacking_a_scope_gets_403_scope_missing_and_changes_nothing() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let reader = create_client(&app.db.pool, "reader", &[Scope::TransfersRead, Scope::AccountsRead], None).await;
    let writer = create_client(&app.db.pool, "writer", &[Scope::TransfersWrite, Scope::AccountsWrite], None).await;
    let transfer = json!({"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR"});
    for (method, path, key, body) in [
        (Method::POST, "/v1/transfers", &reader, Some(transfer.clone())),
        (Method::POST, "/v1/accounts", &reader, Some(json!({"owner_id": 9, "currency": "EUR"}))),
        (Method::GET, "/v1/accounts/1/EUR", &writer, None),
        (Method::GET, "/v1/accounts/1/EUR/transfers", &writer, None),
        (Method::GET, "/v1/transfers/00000000-0000-0000-0000-000000000001", &writer, None),
        (Method::POST, "/v1/deposits", &writer, Some(json!({"owner_id": 1, "currency": "EUR", "amount": "1", "reference": "r"}))),
    ] {
        let (status, answer) = call(&app, method.clone(), path, Some(key), body).await;
        assert_eq!((status, code(&answer)), (403, "scope_missing"), "{method} {path}: {answer}");
    }
    let (status, accepted) = call(&app, Method::POST, "/v1/transfers", Some(&writer), Some(transfer)).await;
    assert_eq!(status, 202, "{accepted}");
    app.wait_final(accepted["transfer_id"].as_str().unwrap()).await;
    let moved: i64 = sqlx::query_scalar("SELECT count(*) FROM transfers WHERE kind = 'transfer'").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(moved, 1, "only the writer's transfer exists");
    let opened: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts WHERE owner_id = 9").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(opened, 0);
    app.stop().await;
}

#[tokio::test]
async fn the_submitting_client_is_stored_with_the_transfer_and_shown_only_to_admin_reads() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    app.open_account(2, "EUR", "0").await;
    let (status, created) = admin_create_client(&app, json!({"name": "shop", "scopes": ["transfers:write", "transfers:read"]})).await;
    assert_eq!(status, 201);
    let key = created["key"].as_str().unwrap();
    let body = json!({"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR"});
    let (status, accepted) = call(&app, Method::POST, "/v1/transfers", Some(key), Some(body)).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["transfer_id"].as_str().unwrap();
    app.wait_final(id).await;
    let (_, as_admin) = call(&app, Method::GET, &format!("/v1/transfers/{id}"), Some(ADMIN_TOKEN), None).await;
    assert_eq!(as_admin["client_id"], created["client_id"], "{as_admin}");
    let (_, as_client) = call(&app, Method::GET, &format!("/v1/transfers/{id}"), Some(key), None).await;
    assert!(as_client.get("client_id").is_none() && as_client["status"] == "completed", "{as_client}");
    let (_, listing) = call(&app, Method::GET, "/v1/accounts/1/EUR/transfers", Some(ADMIN_TOKEN), None).await;
    assert_eq!(listing["transfers"][0]["client_id"], created["client_id"]);
    // The admin token submits as no client.
    let body = json!({"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR"});
    let (status, accepted) = call(&app, Method::POST, "/v1/transfers", Some(ADMIN_TOKEN), Some(body)).await;
    assert_eq!(status, 202);
    let done = app.wait_final(accepted["transfer_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed");
    let stored: Option<uuid::Uuid> = sqlx::query_scalar("SELECT client_id FROM transfers WHERE transfer_id = $1::uuid")
        .bind(accepted["transfer_id"].as_str().unwrap())
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(stored, None);
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_key_is_refused_by_every_engine_within_two_seconds() {
    let app = TestApp::spawn().await;
    // A second engine (API only) on the same database, with its own cache of verified keys.
    let mut other = app.spawn_beside(Role::Api).await;
    let (_, created) = admin_create_client(&app, json!({"name": "soon-gone", "scopes": ["accounts:read"]})).await;
    let key = created["key"].as_str().unwrap().to_owned();
    // The other engine verifies the key and caches it.
    let (status, answer) = call(&other, Method::GET, "/v1/accounts/1/EUR", Some(&key), None).await;
    assert_eq!((status, code(&answer)), (404, "account_not_found"));

    let revoked_at = tokio::time::Instant::now();
    let (status, _) =
        call(&app, Method::DELETE, &format!("/v1/admin/clients/{}", created["client_id"].as_str().unwrap()), Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 204);
    loop {
        let (status, answer) = call(&other, Method::GET, "/v1/accounts/1/EUR", Some(&key), None).await;
        if status == 401 {
            assert_eq!(code(&answer), "unauthorized");
            break;
        }
        assert_eq!(status, 404, "{answer}");
        assert!(revoked_at.elapsed() < Duration::from_secs(2), "the other engine still accepted the revoked key after 2 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    other.shutdown_engine().await;
    app.stop().await;
}

#[tokio::test]
async fn the_processor_role_serves_health_and_metrics_but_no_api_route() {
    let app = TestApp::spawn().await;
    let mut processor = app.spawn_beside(Role::Processor).await;
    for path in ["/healthz", "/metrics"] {
        assert_eq!(call(&processor, Method::GET, path, None, None).await.0, 200, "{path}");
    }
    for (method, path) in [(Method::GET, "/v1/accounts/1/EUR"), (Method::POST, "/v1/transfers"), (Method::GET, "/v1/admin/clients")] {
        let (status, answer) = call(&processor, method, path, Some(ADMIN_TOKEN), Some(json!({}))).await;
        assert_eq!((status, code(&answer)), (404, "not_found"), "{path}");
    }
    processor.shutdown_engine().await;
    app.stop().await;
}

#[tokio::test]
async fn metrics_move_to_their_own_address_when_one_is_set() {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = transfer_engine::startup::Application::build(settings, Role::All).await.unwrap();
    let (api, metrics) = (app.port(), app.metrics_port().expect("a metrics listener"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let get = |port: u16, path: &str| client.get(format!("http://127.0.0.1:{port}{path}")).send();
    let scraped = get(metrics, "/metrics").await.unwrap();
    assert_eq!(scraped.status(), 200);
    assert!(scraped.text().await.unwrap().contains("transfer_engine_"));
    assert_eq!(get(api, "/metrics").await.unwrap().status(), 404, "not on the API's address any more");
    assert_eq!(get(api, "/healthz").await.unwrap().status(), 200);
    assert_eq!(get(metrics, "/v1/accounts/1/EUR").await.unwrap().status(), 404, "the metrics address serves nothing else");
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    db.drop_database().await;
}

/// One step a client bound to owner A may try, in the property test below.
#[derive(Clone, Debug)]
enum Step {
    Submit {
        sender: i64,
        receiver: i64,
        minor: i64,
    },
    Open {
        owner: i64,
        currency: &'static str,
    },
    ReadAccount {
        owner: i64,
    },
    ReadTransfers {
        owner: i64,
    },
    /// Reads one of the transfers the admin made between B and C (never involving A).
    ReadOthersTransfer,
}

fn step(a: i64, b: i64) -> impl Strategy<Value = Step> {
    let party = prop_oneof![Just(a), Just(b)];
    prop_oneof![
        (party.clone(), party.clone(), 1i64..500).prop_map(|(sender, receiver, minor)| Step::Submit { sender, receiver, minor }),
        (party.clone(), prop_oneof![Just("USD"), Just("GBP")]).prop_map(|(owner, currency)| Step::Open { owner, currency }),
        party.clone().prop_map(|owner| Step::ReadAccount { owner }),
        party.prop_map(|owner| Step::ReadTransfers { owner }),
        Just(Step::ReadOthersTransfer),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_bound_to_owner_a_never_moves_opens_or_reads_anything_of_owner_b() {
    const A: i64 = 1;
    const B: i64 = 2;
    const C: i64 = 3;
    let app = TestApp::spawn().await;
    for owner in [A, B, C] {
        app.open_account(owner, "EUR", "1000.00").await;
    }
    let (_, others) = call(
        &app,
        Method::POST,
        "/v1/transfers",
        Some(ADMIN_TOKEN),
        Some(json!({"sender_id": B, "receiver_id": C, "amount": "1", "currency": "EUR"})),
    )
    .await;
    let others_id = others["transfer_id"].as_str().unwrap().to_owned();
    app.wait_final(&others_id).await;
    let key = create_client(&app.db.pool, "bound-to-a", &Scope::ALL, Some(&[A])).await;

    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 24, ..ProptestConfig::default() });
    let steps = proptest::collection::vec(step(A, B), 1..6);
    let handle = tokio::runtime::Handle::current();
    let result = runner.run(&steps, |steps| {
        for step in steps {
            let (app, key, others_id) = (&app, key.as_str(), others_id.as_str());
            let outcome: Result<(), TestCaseError> = tokio::task::block_in_place(|| {
                handle.block_on(async move {
                    match step {
                        Step::Submit { sender, receiver, minor } => {
                            let amount = format!("{}.{:02}", minor / 100, minor % 100);
                            let body = json!({"sender_id": sender, "receiver_id": receiver, "amount": amount, "currency": "EUR"});
                            let (status, answer) = call(app, Method::POST, "/v1/transfers", Some(key), Some(body)).await;
                            if sender == receiver {
                                // Invalid in itself, whoever asks: refused before the owners are looked at.
                                prop_assert_eq!((status, code(&answer)), (422, "accounts_must_be_different"));
                            } else if sender != A {
                                prop_assert_eq!((status, code(&answer)), (403, "owner_not_permitted"));
                            } else {
                                prop_assert_eq!(status, 202, "{}", answer);
                            }
                        }
                        Step::Open { owner, currency } => {
                            let (status, answer) =
                                call(app, Method::POST, "/v1/accounts", Some(key), Some(json!({"owner_id": owner, "currency": currency})))
                                    .await;
                            if owner == A {
                                prop_assert!(
                                    status == 201 || (status == 409 && code(&answer) == "account_exists"),
                                    "{} {}",
                                    status,
                                    answer
                                );
                            } else {
                                prop_assert_eq!((status, code(&answer)), (403, "owner_not_permitted"));
                            }
                        }
                        Step::ReadAccount { owner } | Step::ReadTransfers { owner } => {
                            let suffix = if matches!(step, Step::ReadTransfers { .. }) { "/transfers" } else { "" };
                            let (status, answer) =
                                call(app, Method::GET, &format!("/v1/accounts/{owner}/EUR{suffix}"), Some(key), None).await;
                            if owner == A {
                                prop_assert_eq!(status, 200, "{}", answer);
                            } else {
                                prop_assert_eq!((status, code(&answer)), (403, "owner_not_permitted"));
                            }
                        }
                        Step::ReadOthersTransfer => {
                            let (status, answer) = call(app, Method::GET, &format!("/v1/transfers/{others_id}"), Some(key), None).await;
                            prop_assert_eq!((status, code(&answer)), (404, "transfer_not_found"));
                        }
                    }
                    Ok(())
                })
            });
            outcome?;
        }
        Ok(())
    });
    result.unwrap();
    // Whatever it tried, nothing of B's moved except by the admin's one transfer, and B opened nothing.
    let debits_of_b: i64 = sqlx::query_scalar("SELECT count(*) FROM transfers WHERE sender_id = $1 AND kind = 'transfer'")
        .bind(B)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(debits_of_b, 1);
    let accounts_of_b: i64 =
        sqlx::query_scalar("SELECT count(*) FROM accounts WHERE owner_id = $1").bind(B).fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(accounts_of_b, 1);
    app.stop().await;
}
