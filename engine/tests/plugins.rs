//! Plugins through the real wasmtime host: the example plugins' rules, the
//! hostile fixtures, uploads, and hot reload with rollback under traffic.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::{TestApp, assert_audit_passes, plugin_bytes};
use serde_json::{Value, json};
use transfer_engine::domain::{Amount, Currency, Money, OwnerId, Requested, Submission, TransferId, TransferKind};
use transfer_engine::hooks::{self, HookOutcome};
use transfer_engine::ledger::Verdict;
use transfer_engine::plugins::set::FailureMode;
use transfer_engine::plugins::{LoadedPlugin, PluginKind, PluginMeta, PluginSet, Sandbox, SandboxLimits};

fn load(sandbox: &Arc<Sandbox>, file_stem: &str, kind: PluginKind, version: i32, config: Value) -> Arc<LoadedPlugin> {
    let bytes = plugin_bytes(file_stem);
    let component = sandbox.compile(&bytes).unwrap();
    let meta = PluginMeta { name: file_stem.replace('_', "-"), version, kind, sha256: [7; 32], config: config.to_string() };
    let plugin = LoadedPlugin::new(sandbox.clone(), meta, &component).unwrap();
    plugin.check().unwrap();
    Arc::new(plugin)
}

fn submission(sender: i64, requested: Requested, description: Option<&str>) -> Submission {
    Submission {
        id: TransferId::generate(),
        kind: TransferKind::Transfer,
        sender: OwnerId::new(sender).unwrap(),
        receiver: OwnerId::new(2).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        requested,
        description: description.map(str::to_owned),
        submitted_at: Utc::now(),
        client_id: None,
    }
}

fn eur(minor: i64) -> Requested {
    Requested::Amount(Amount::from_minor(minor).unwrap())
}

fn code(outcome: &HookOutcome) -> Option<&str> {
    match &outcome.verdict {
        Verdict::Apply(_) => None,
        Verdict::Reject(r) | Verdict::Fail(r) => Some(&r.code),
    }
}

fn sandbox() -> Arc<Sandbox> {
    Sandbox::new(SandboxLimits { instances_max: 16, ..SandboxLimits::default() }).unwrap()
}

#[test]
fn the_example_plugins_apply_their_rules_through_the_real_host() {
    let sandbox = sandbox();
    let mut set = PluginSet::empty(140, FailureMode::Closed);
    set.describer =
        Some(load(&sandbox, "description", PluginKind::Describer, 1, json!({"max_length_chars": 60, "blocked_words": ["casino"]})));
    set.converter = Some(load(&sandbox, "fx", PluginKind::Converter, 1, json!({"rates": {"USD/EUR": "0.9215"}})));
    set.validators.push(load(
        &sandbox,
        "limits",
        PluginKind::Validator,
        1,
        json!({"max_amount_minor": {"EUR": 10000}, "blocked_owners": [666]}),
    ));

    let fine = hooks::run(&set, &submission(1, eur(500), Some("  rent   for\tMarch  ")));
    assert_eq!(fine.verdict, Verdict::Apply(Amount::from_minor(500).unwrap()));
    assert_eq!(fine.description.as_deref(), Some("rent for March"));
    let hooks_seen: Vec<_> = fine.decisions.iter().map(|d| (d.plugin.as_str(), d.outcome.as_str())).collect();
    assert_eq!(hooks_seen, [("description", "rewritten"), ("limits", "allowed")]);

    let masked = hooks::run(&set, &submission(1, eur(500), Some("card 4111 1111 1111 1234 thanks")));
    assert!(
        masked.description.as_deref().unwrap().contains("1234") && !masked.description.as_deref().unwrap().contains("4111"),
        "{masked:?}"
    );

    assert_eq!(code(&hooks::run(&set, &submission(1, eur(10_001), None))), Some("amount_over_limit"));
    assert_eq!(code(&hooks::run(&set, &submission(666, eur(1), None))), Some("owner_blocked"));
    assert_eq!(code(&hooks::run(&set, &submission(1, eur(1), Some("Casino night")))), Some("description_blocked_word"));

    // 10.00 USD at 0.9215 is 9.215 EUR: half-even rounds to 9.22 (9215 -> 922 cents).
    let usd = Currency::parse("USD").unwrap();
    let converted =
        hooks::run(&set, &submission(1, Requested::Original(Money { amount: Amount::from_minor(1_000).unwrap(), currency: usd }), None));
    assert_eq!(converted.verdict, Verdict::Apply(Amount::from_minor(922).unwrap()), "{converted:?}");
    assert_eq!(converted.decisions[0].outcome, "converted");
    let jpy = Currency::parse("JPY").unwrap();
    let unknown =
        hooks::run(&set, &submission(1, Requested::Original(Money { amount: Amount::from_minor(1_000).unwrap(), currency: jpy }), None));
    assert_eq!(code(&unknown), Some("rate_not_found"));
}

#[test]
fn hostile_plugins_fail_their_transfer_with_a_clear_reason_and_the_host_carries_on() {
    let sandbox = sandbox();
    let limits = load(&sandbox, "limits", PluginKind::Validator, 1, json!({}));
    // The memory bomb gets a generous CPU budget, so that what stops it is the memory limit.
    let roomy = Sandbox::new(SandboxLimits { instances_max: 4, call_ms_max: 2_000, ..SandboxLimits::default() }).unwrap();
    for (fixture, sandbox, cause) in
        [("hostile_loop", &sandbox, "CPU time limit"), ("hostile_memory", &roomy, "memory"), ("hostile_trap", &sandbox, "trapped")]
    {
        let mut set = PluginSet::empty(140, FailureMode::Closed);
        set.validators = vec![load(sandbox, fixture, PluginKind::Validator, 3, json!({})), limits.clone()];
        for _ in 0..2 {
            // Twice: the second call runs on a fresh instance, since a trapped one cannot be entered again.
            let outcome = hooks::run(&set, &submission(1, eur(100), None));
            let Verdict::Fail(reason) = &outcome.verdict else { panic!("{fixture}: {outcome:?}") };
            assert_eq!(reason.code, "plugin_failed");
            let name = fixture.replace('_', "-");
            assert!(reason.message.contains(&format!("{name} v3")) && reason.message.contains(cause), "{fixture}: {}", reason.message);
            assert_eq!(outcome.decisions.last().unwrap().outcome, "failed");
        }
        // Fail-open skips the faulting validator but still records its fault.
        set.failure_mode = FailureMode::Open;
        let outcome = hooks::run(&set, &submission(1, eur(100), None));
        assert_eq!(outcome.verdict, Verdict::Apply(Amount::from_minor(100).unwrap()), "{fixture}");
        assert_eq!(outcome.decisions[0].outcome, "failed");
    }
    let mut set = PluginSet::empty(140, FailureMode::Closed);
    set.converter = Some(load(&sandbox, "hostile_nonsense", PluginKind::Converter, 1, json!({})));
    let usd = Currency::parse("USD").unwrap();
    let outcome =
        hooks::run(&set, &submission(1, Requested::Original(Money { amount: Amount::from_minor(100).unwrap(), currency: usd }), None));
    let Verdict::Fail(reason) = &outcome.verdict else { panic!("{outcome:?}") };
    assert!(reason.message.contains("nonsense") && reason.message.contains("-12345"), "{}", reason.message);
    // The good plugin next to them still answers.
    let mut good = PluginSet::empty(140, FailureMode::Closed);
    good.validators.push(limits);
    assert_eq!(hooks::run(&good, &submission(1, eur(100), None)).verdict, Verdict::Apply(Amount::from_minor(100).unwrap()));
}

async fn submit(app: &TestApp, body: Value) -> String {
    let r = app.post("/v1/transfers", &body).await;
    let status = r.status();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(status, 202, "{answer}");
    answer["transfer_id"].as_str().unwrap().to_owned()
}

/// Submits probes until one is decided by `plugin` at `version` (the engine swaps sets between batches).
async fn wait_for_version(app: &TestApp, plugin: &str, version: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let id = submit(app, json!({"sender_id": 1, "receiver_id": 2, "amount": "0.01", "currency": "EUR"})).await;
        let done = app.wait_final(&id).await;
        if done["decisions"].as_array().unwrap().iter().any(|d| d["plugin"] == plugin && d["version"] == version) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{plugin} v{version} was never picked up");
    }
}

#[tokio::test]
async fn a_plugin_that_faults_fails_only_its_transfer_and_the_next_ones_complete_end_to_end() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "100.00").await;
    app.open_account(2, "EUR", "0").await;
    app.upload_plugin("looper", "hostile_loop", "validator", json!({}), true).await;
    let id = submit(&app, json!({"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR"})).await;
    let failed = app.wait_final(&id).await;
    // The first transfer may have run on the set before the upload; wait for the swap if so.
    let failed = if failed["status"] == "completed" { wait_for_version_failure(&app).await } else { failed };
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["reason"]["code"], "plugin_failed");
    assert!(failed["reason"]["message"].as_str().unwrap().contains("looper v1"), "{failed}");
    assert_eq!(failed["decisions"][0]["outcome"], "failed");
    let r = app.client.post(app.url("/v1/admin/plugins/looper/deactivate")).bearer_auth(common::ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let id = submit(&app, json!({"sender_id": 1, "receiver_id": 2, "amount": "0.01", "currency": "EUR"})).await;
        if app.wait_final(&id).await["status"] == "completed" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "transfers did not recover after deactivation");
    }
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

async fn wait_for_version_failure(app: &TestApp) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let id = submit(app, json!({"sender_id": 1, "receiver_id": 2, "amount": "0.01", "currency": "EUR"})).await;
        let done = app.wait_final(&id).await;
        if done["status"] == "failed" {
            return done;
        }
        assert!(tokio::time::Instant::now() < deadline, "the faulting plugin was never picked up");
    }
}

#[tokio::test]
async fn garbage_wrong_world_bad_config_and_unauthenticated_uploads_are_refused() {
    use base64::Engine as _;
    let app = TestApp::spawn().await;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let cases = [
        (json!({"name": "junk", "component": b64(b"definitely not wasm")}), 422, "plugin_invalid"),
        (json!({"name": "fx-as-validator", "kind": "validator", "component": b64(&plugin_bytes("fx"))}), 422, "plugin_invalid"),
        (
            json!({"name": "limits", "config": {"max_amount_minor": {"EUR": -5}}, "component": b64(&plugin_bytes("limits"))}),
            422,
            "plugin_config_refused",
        ),
        (json!({"name": "Bad Name!", "component": b64(&plugin_bytes("limits"))}), 422, "plugin_name_invalid"),
        (json!({"name": "limits", "component": "%%% not base64"}), 422, "plugin_invalid"),
    ];
    for (body, status, code) in cases {
        let r = app.admin_post("/v1/admin/plugins", &body).await;
        assert_eq!(r.status().as_u16(), status, "{}", body["name"]);
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], code, "{}", body["name"]);
    }
    let good = json!({"name": "limits", "component": b64(&plugin_bytes("limits"))});
    let client_key = app.post("/v1/admin/plugins", &good).await;
    assert_eq!(client_key.status(), 403, "an API key, however scoped, is not the admin token");
    assert_eq!(client_key.json::<Value>().await.unwrap()["error"]["code"], "scope_missing");
    let none = app.client.post(app.url("/v1/admin/plugins")).json(&good).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let wrong = app.client.post(app.url("/v1/admin/plugins")).bearer_auth("not-the-token").json(&good).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let in_query = app.client.post(app.url(&format!("/v1/admin/plugins?token={}", common::ADMIN_TOKEN))).json(&good).send().await.unwrap();
    assert_eq!(in_query.status(), 401);
    let list: Value =
        app.client.get(app.url("/v1/admin/plugins")).bearer_auth(common::ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["plugins"], json!([]), "nothing was stored");
    // Detected kind, then a clean upload works.
    let uploaded = app.upload_plugin("limits", "limits", "validator", json!({}), false).await;
    assert_eq!((uploaded["version"].as_i64(), uploaded["kind"].as_str()), (Some(1), Some("validator")));
    app.stop().await;
}

#[tokio::test]
async fn a_stricter_validator_hot_swapped_and_rolled_back_under_traffic_loses_nothing() {
    let app = Arc::new(TestApp::spawn().await);
    app.open_account(1, "EUR", "100000.00").await;
    app.open_account(2, "EUR", "0").await;
    app.upload_plugin("limits", "limits", "validator", json!({"max_amount_minor": {"EUR": 100000000}}), true).await;
    wait_for_version(&app, "limits", 1).await;

    let traffic = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            let stop = tokio::time::Instant::now() + Duration::from_secs(6);
            while tokio::time::Instant::now() < stop {
                ids.push(submit(&app, json!({"sender_id": 1, "receiver_id": 2, "amount": "5.00", "currency": "EUR"})).await);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            ids
        })
    };
    // v2 refuses anything over 1.00 EUR.
    app.upload_plugin("limits", "limits", "validator", json!({"max_amount_minor": {"EUR": 100}}), true).await;
    wait_for_version(&app, "limits", 2).await;
    let r = app
        .client
        .post(app.url("/v1/admin/plugins/limits/activate"))
        .bearer_auth(common::ADMIN_TOKEN)
        .json(&json!({"version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    wait_for_version(&app, "limits", 1).await;
    let ids = traffic.await.unwrap();

    let mut by_version = std::collections::HashMap::<i64, usize>::new();
    for id in &ids {
        let done = app.wait_final(id).await;
        let versions: Vec<i64> = done["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["plugin"] == "limits")
            .map(|d| d["version"].as_i64().unwrap())
            .collect();
        assert_eq!(versions.len(), 1, "exactly one limits version decided {id}: {done}");
        let expected = if versions[0] == 2 { "rejected" } else { "completed" };
        assert_eq!(done["status"], expected, "{done}");
        *by_version.entry(versions[0]).or_default() += 1;
    }
    assert!(by_version.contains_key(&1), "{by_version:?}");
    let (recorded,): (i64,) = sqlx::query_as("SELECT count(*) FROM transfers WHERE transfer_id = ANY($1)")
        .bind(ids.iter().map(|i| uuid::Uuid::parse_str(i).unwrap()).collect::<Vec<_>>())
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(recorded as usize, ids.len(), "every accepted transfer was recorded once");
    assert_audit_passes(&app.ledger()).await;
    Arc::into_inner(app).expect("traffic finished").stop().await;
}

#[tokio::test]
async fn a_transfer_given_in_another_currency_is_converted_and_both_amounts_are_stored() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "100.00").await;
    app.open_account(2, "EUR", "0").await;
    app.upload_plugin("fx", "fx", "converter", json!({"rates": {"USD/EUR": "0.9215"}}), true).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        let id = submit(
            &app,
            json!({"sender_id": 1, "receiver_id": 2, "original_amount": "10.00", "original_currency": "USD", "currency": "EUR"}),
        )
        .await;
        let done = app.wait_final(&id).await;
        if done["status"] == "completed" {
            break done;
        }
        // Before the converter is picked up, USD cannot be converted.
        assert_eq!(done["reason"]["code"], "conversion_unavailable", "{done}");
        assert!(tokio::time::Instant::now() < deadline, "the converter was never picked up");
    };
    assert_eq!(
        (done["amount"].as_str(), done["original_amount"].as_str(), done["original_currency"].as_str()),
        (Some("9.22"), Some("10.00"), Some("USD"))
    );
    assert_eq!(done["decisions"][0]["plugin"], "fx");
    app.stop().await;
}
