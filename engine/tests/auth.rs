//! Authentication and authorization end to end: API clients, scopes, owner
//! binding, revocation across engines, and what the processor role serves;
//! and metadata on transfers and accounts, which the same credentials guard.

mod common;

use std::time::Duration;

use common::{ADMIN_TOKEN, TestApp, TestDb, create_client, test_settings};
use proptest::prelude::*;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use transfer_engine::auth::Scope;
use transfer_engine::cache::Cache;
use transfer_engine::domain::TransferId;
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

/// One HTTP/1.1 response (its head, and a body of `content-length` bytes), or
/// None if the connection ends first. By hand: the test needs the connection
/// itself, which an HTTP client hides.
async fn read_response(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8(head).ok()?.to_ascii_lowercase();
    let body_bytes: usize = head.lines().find_map(|line| line.strip_prefix("content-length:"))?.trim().parse().ok()?;
    let mut body = vec![0; body_bytes];
    stream.read_exact(&mut body).await.ok()?;
    Some((head, body))
}

#[tokio::test]
async fn an_upload_refused_while_still_arriving_is_read_to_its_end_and_its_connection_serves_the_next_request() {
    // The credential is judged before the body is read, so the 401 goes out
    // while the client is still sending. Were the connection closed then with
    // the body unread, the kernel would reset it (the client can lose the
    // 401), or a client that had the 401 would send its next request on a
    // closed connection (`IncompleteMessage`, seen in CI).
    let app = api_only().await;
    let mut stream = TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap();
    let (body_bytes, first_bytes) = (4usize << 20, 64usize << 10);
    let head = format!(
        "POST /v1/admin/plugins HTTP/1.1\r\nhost: engine\r\nauthorization: Bearer not-the-admin-token\r\n\
         content-type: application/json\r\ncontent-length: {body_bytes}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b' '; first_bytes]).await.unwrap();
    let (head, body) = tokio::time::timeout(Duration::from_secs(10), read_response(&mut stream))
        .await
        .expect("the answer comes before the body is whole")
        .expect("an answer");
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert_eq!(code(&serde_json::from_slice(&body).unwrap()), "unauthorized");
    assert!(!head.contains("connection: close"), "{head}");
    stream.write_all(&vec![b' '; body_bytes - first_bytes]).await.expect("the rest of the body is taken");
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: engine\r\n\r\n").await.unwrap();
    let (head, _) = tokio::time::timeout(Duration::from_secs(10), read_response(&mut stream))
        .await
        .expect("the next answer comes")
        .expect("the same connection serves the next request");
    assert!(head.starts_with("http/1.1 200"), "{head}");
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

// ---------------------------------------------------------------------------
// Metadata end to end (issue 13): the string map a client attaches to a
// transfer or an account. Refused out of bounds with `422 metadata_invalid`
// on every route that takes it; a transfer's metadata goes through the topic
// and the processor into the ledger and back out of `GET` (from Redis and
// from PostgreSQL), and is part of what its id means; an account's is
// replaced whole by `PATCH`, under the same credentials as opening one.

async fn patch(app: &TestApp, path: &str, key: &str, body: Value) -> (u16, Value) {
    call(app, Method::PATCH, path, Some(key), Some(body)).await
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
    let (status, account) = call(app, Method::GET, &format!("/v1/accounts/{owner}/EUR"), Some(&app.key), None).await;
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
            let (status, answer) = call(&app, method.clone(), path, Some(&app.key), Some(body)).await;
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
    let (status, from_ledger) = call(&app, Method::GET, &format!("/v1/transfers/{id}"), Some(&app.key), None).await;
    assert_eq!(status, 200);
    assert_eq!((&from_ledger["status"], &from_ledger["metadata"]), (&json!("completed"), &tagged), "PostgreSQL answers as Redis did");
    let (_, plain_from_ledger) = call(&app, Method::GET, &format!("/v1/transfers/{plain_id}"), Some(&app.key), None).await;
    assert_eq!(plain_from_ledger["metadata"], json!({}));
    let (_, listed) = call(&app, Method::GET, "/v1/accounts/1/EUR/transfers", Some(&app.key), None).await;
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
    let (_, first) = call(&app, Method::GET, &format!("/v1/transfers/{id}"), Some(&app.key), None).await;
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
        Some(&app.key),
        Some(json!({"owner_id": 1, "currency": "EUR", "metadata": {"kyc_tier": "basic"}})),
    )
    .await;
    assert_eq!(status, 201, "{opened}");
    assert_eq!(opened["metadata"], json!({"kyc_tier": "basic"}));
    let (status, plain) = call(&app, Method::POST, "/v1/accounts", Some(&app.key), Some(json!({"owner_id": 2, "currency": "EUR"}))).await;
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
    let (_, before) = call(&app, Method::GET, "/v1/accounts/1/EUR", Some(&app.key), None).await;

    let replacement = json!({"kyc_tier": "verified", "country": "DE"});
    let (status, answer) = patch(&app, "/v1/accounts/1/EUR", &app.key, json!({"metadata": replacement})).await;
    assert_eq!(status, 200, "{answer}");
    let (_, after) = call(&app, Method::GET, "/v1/accounts/1/EUR", Some(&app.key), None).await;
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
    let (open_status, opened) =
        call(&app, Method::POST, "/v1/accounts", Some(&bound), Some(json!({"owner_id": 1, "currency": "USD"}))).await;
    assert_eq!((open_status, code(&opened)), (403, "owner_not_permitted"), "{opened}");
    let (status, answer) = patch(&app, "/v1/accounts/1/EUR", &bound, body.clone()).await;
    assert_eq!((status, code(&answer)), (open_status, code(&opened)), "{answer}");
    assert_eq!(account_metadata(&app, 1).await, json!({}), "refused: nothing changed");
    let (status, answer) = patch(&app, "/v1/accounts/2/EUR", &bound, body.clone()).await;
    assert_eq!((status, &answer["metadata"]), (200, &body["metadata"]), "{answer}");

    // No such account: what GET answers. The system accounts (owner 0) are no one's to change.
    let (get_status, got) = call(&app, Method::GET, "/v1/accounts/1/USD", Some(&app.key), None).await;
    let (status, answer) = patch(&app, "/v1/accounts/1/USD", &app.key, body.clone()).await;
    assert_eq!((status, code(&answer)), (404, "account_not_found"), "{answer}");
    assert_eq!((get_status, code(&got)), (404, "account_not_found"));
    let deposit = json!({"owner_id": 1, "currency": "EUR", "amount": "1.00", "reference": "makes-the-system-account"});
    assert_eq!(app.admin_post("/v1/deposits", &deposit).await.status(), 201);
    let (status, answer) = patch(&app, "/v1/accounts/0/EUR", ADMIN_TOKEN, body.clone()).await;
    assert_eq!((status, code(&answer)), (422, "owner_id_invalid"), "{answer}");
    let (get_status, got) = call(&app, Method::GET, "/v1/accounts/0/EUR", Some(ADMIN_TOKEN), None).await;
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
