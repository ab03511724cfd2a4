//! Safe policy rollout over the real stack: a version in shadow beside the
//! active one, a canary deciding for a sticky share of senders, and the
//! automatic rollback of a canary or a recent activation that faults, and
//! the replay of a candidate over the ledger.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{TestApp, assert_audit_passes, limits_decisions, test_settings};
use serde_json::{Value, json};
use transfer_engine::hooks::ContextNeeds;
use transfer_engine::plugins::replay;
use transfer_engine::plugins::rollback::bucket;
use transfer_engine::startup::Role;

#[tokio::test]
async fn a_shadow_version_is_recorded_beside_the_active_one_never_changes_an_outcome_and_is_reported() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "1000.00").await;
    app.open_account(2, "EUR", "0").await;
    app.upload_plugin("limits", "limits", "validator", json!({"max_amount_minor": {"EUR": 100000}}), true).await;
    // v2 refuses anything over 1.00 EUR; v3 is a describer stored under the same name; v4 loops.
    app.upload_plugin("limits", "limits", "validator", json!({"max_amount_minor": {"EUR": 100}}), false).await;
    app.upload_plugin("limits", "description", "describer", json!({}), false).await;
    app.upload_plugin("limits", "hostile_loop", "validator", json!({}), false).await;
    app.upload_plugin("idle", "limits", "validator", json!({}), false).await;
    let shadow = |name: &str, version: i64| {
        app.client
            .post(app.url(&format!("/v1/admin/plugins/{name}/shadow")))
            .bearer_auth(common::ADMIN_TOKEN)
            .json(&json!({"version": version}))
            .send()
    };
    for (name, version, status, code) in [
        ("limits", 9, 404, "plugin_not_found"),
        ("limits", 1, 409, "plugin_version_active"),
        ("limits", 3, 409, "plugin_kind_mismatch"),
        ("idle", 1, 409, "plugin_not_active"),
    ] {
        let r = shadow(name, version).await.unwrap();
        assert_eq!(r.status(), status, "{name} v{version}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], code, "{name} v{version}");
    }
    assert_eq!(shadow("limits", 2).await.unwrap().status(), 204);
    let list = app.admin_json("/v1/admin/plugins").await;
    let shadowing: Vec<(&str, i64)> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["shadow"] == true)
        .map(|p| (p["name"].as_str().unwrap(), p["version"].as_i64().unwrap()))
        .collect();
    assert_eq!(shadowing, [("limits", 2)]);
    let shadowing = |d: &[Value]| limits_decisions(d).iter().any(|(v, role, _)| *v == 2 && role == "shadow");
    app.wait_for_decisions(shadowing, "v2 in shadow").await;

    // 5.00 is allowed by v1 and refused by v2, 0.50 by both: every one completes.
    let mut ids = Vec::new();
    for amount in ["5.00", "5.00", "5.00", "0.50", "0.50"] {
        ids.push((amount, app.submit_accepted(json!({"sender_id": 1, "receiver_id": 2, "amount": amount, "currency": "EUR"})).await));
    }
    for (amount, id) in &ids {
        let done = app.wait_final(id).await;
        assert_eq!(done["status"], "completed", "a shadow never changes an outcome: {done}");
        let shadowed = if *amount == "5.00" { "rejected" } else { "allowed" };
        assert_eq!(
            limits_decisions(done["decisions"].as_array().unwrap()),
            [(1, "active".to_owned(), "allowed".to_owned()), (2, "shadow".to_owned(), shadowed.to_owned())],
            "{done}"
        );
    }
    let report = app.admin_json("/v1/admin/plugins/limits/versions/2/report").await;
    // The probes of 0.01 agreed too.
    assert!(report["evaluated"].as_i64().unwrap() >= 5, "{report}");
    assert_eq!(report["disagreed"], 3, "{report}");
    assert_eq!(report["faults"], 0, "{report}");
    assert_eq!(report["agreed"].as_i64().unwrap() + 3, report["evaluated"].as_i64().unwrap(), "{report}");
    let newest = &report["disagreements"][0];
    assert_eq!(newest["transfer_id"], ids[2].1.as_str(), "newest first: {report}");
    assert_eq!((newest["active"].as_str(), newest["candidate"].as_str()), (Some("allowed"), Some("rejected")), "{report}");
    assert!(newest["code"].is_string(), "{report}");
    assert!(report["candidate_latency_us"]["p50"].is_i64() && report["active_latency_us"]["max"].is_i64(), "{report}");
    // /metrics counts the shadow's decisions apart from the active version's.
    let scrape = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let shadow_rejections = scrape
        .lines()
        .find(|l| {
            l.starts_with(
                r#"transfer_engine_plugin_calls_total{plugin="limits",version="2",role="shadow",hook="validate",outcome="rejected""#,
            )
        })
        .unwrap_or_else(|| panic!("no shadow rejections in {scrape}"));
    assert!(shadow_rejections.ends_with(" 3"), "{shadow_rejections}");

    // A shadow that faults is recorded as failed and fails nothing.
    assert_eq!(shadow("limits", 4).await.unwrap().status(), 204);
    let failing = |d: &[Value]| limits_decisions(d).iter().any(|(v, role, outcome)| *v == 4 && role == "shadow" && outcome == "failed");
    app.wait_for_decisions(failing, "v4 failing").await;
    let id = app.submit_accepted(json!({"sender_id": 1, "receiver_id": 2, "amount": "5.00", "currency": "EUR"})).await;
    assert_eq!(app.wait_final(&id).await["status"], "completed");
    let report = app.admin_json("/v1/admin/plugins/limits/versions/4/report").await;
    assert!(report["faults"].as_i64().unwrap() >= 2 && report["disagreed"] == 0, "{report}");

    // Off: the active version decides alone again.
    let r = app.client.delete(app.url("/v1/admin/plugins/limits/shadow")).bearer_auth(common::ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let alone = |d: &[Value]| matches!(&limits_decisions(d)[..], [(_, role, _)] if role == "active");
    app.wait_for_decisions(alone, "the shadow stop").await;
    // Making a describer the name's active version stops a shadow validator beside it.
    assert_eq!(shadow("limits", 2).await.unwrap().status(), 204);
    assert_eq!(app.admin_post("/v1/admin/plugins/limits/activate", &json!({"version": 3})).await.status(), 204);
    let list = app.admin_json("/v1/admin/plugins").await;
    assert!(list["plugins"].as_array().unwrap().iter().all(|p| p["shadow"] == false), "{list}");
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

/// POSTs a canary of `name` and answers the status and error code (if any).
async fn start_canary(app: &TestApp, name: &str, body: Value) -> (u16, Option<String>) {
    let r = app.admin_post(&format!("/v1/admin/plugins/{name}/canary"), &body).await;
    let status = r.status().as_u16();
    let code = r.json::<Value>().await.ok().and_then(|b| b["error"]["code"].as_str().map(str::to_owned));
    (status, code)
}

/// The listed versions of `name`, by version.
async fn versions(app: &TestApp, name: &str) -> Vec<Value> {
    let list = app.admin_json("/v1/admin/plugins").await;
    list["plugins"].as_array().unwrap().iter().filter(|p| p["name"] == name).cloned().collect()
}

/// Whether `limits` v`version` decides for `sender` while canaried at `percent`.
fn in_canary(version: i32, sender: i64, percent: u8) -> bool {
    bucket("limits", version, sender) < percent
}

/// A sender of 1..=20 for whom the canary of v`version` at `percent` decides, or does not.
fn a_sender(version: i32, percent: u8, canaried: bool) -> i64 {
    (1..=20).find(|s| in_canary(version, *s, percent) == canaried).expect("a fair hash splits 20 senders at 50%")
}

#[tokio::test]
async fn a_canary_decides_for_the_same_senders_every_time_and_is_promoted_at_100_percent() {
    let app = TestApp::spawn().await;
    for sender in 1..=20 {
        app.open_account(sender, "EUR", "1000.00").await;
    }
    app.open_account(100, "EUR", "0").await;
    app.upload_plugin("limits", "limits", "validator", json!({"max_amount_minor": {"EUR": 100000}}), true).await;
    // v2 refuses anything over 1.00 EUR; v3 is a describer under the same name.
    app.upload_plugin("limits", "limits", "validator", json!({"max_amount_minor": {"EUR": 100}}), false).await;
    app.upload_plugin("limits", "description", "describer", json!({}), false).await;
    app.upload_plugin("idle", "limits", "validator", json!({}), false).await;
    for (name, body, status, code) in [
        ("limits", json!({"version": 2, "percent": 0}), 422, "canary_percent_invalid"),
        ("limits", json!({"version": 2, "percent": 101}), 422, "canary_percent_invalid"),
        ("limits", json!({"version": 2, "percent": 10, "max_fault_rate": "1.5"}), 422, "fault_rate_invalid"),
        ("limits", json!({"version": 2, "percent": 10, "max_fault_rate": 0.5}), 422, "invalid_body"),
        ("limits", json!({"version": 9, "percent": 10}), 404, "plugin_not_found"),
        ("limits", json!({"version": 1, "percent": 10}), 409, "plugin_version_active"),
        ("limits", json!({"version": 3, "percent": 10}), 409, "plugin_kind_mismatch"),
        ("idle", json!({"version": 1, "percent": 10}), 409, "plugin_not_active"),
    ] {
        assert_eq!(start_canary(&app, name, body.clone()).await, (status, Some(code.to_owned())), "{name} {body}");
    }
    assert!(versions(&app, "limits").await.iter().all(|v| v["canary"].is_null()), "a refused canary changes nothing");

    assert_eq!(start_canary(&app, "limits", json!({"version": 2, "percent": 50})).await, (204, None));
    let listed = versions(&app, "limits").await;
    assert_eq!(listed[1]["canary"]["percent"], 50, "{listed:?}");
    assert_eq!(listed[1]["canary"]["max_fault_rate"], "0.05", "the setting's default: {listed:?}");
    // Sender 1's probes go the way its bucket says once the engine has the canary.
    let expected = if in_canary(2, 1, 50) { "canary" } else { "active" };
    let picked = |d: &[Value]| limits_decisions(d).first().is_some_and(|(_, role, _)| role == expected);
    app.wait_for_decisions(picked, "the canary").await;

    // 5.00 is allowed by v1 and refused by v2: each sender's transfers all go its one way.
    let mut ids = Vec::new();
    for round in 0..2 {
        for sender in 1..=20 {
            let body = json!({"sender_id": sender, "receiver_id": 100, "amount": "5.00", "currency": "EUR"});
            ids.push((round, sender, app.submit_accepted(body).await));
        }
    }
    let mut ways = std::collections::HashSet::new();
    for (round, sender, id) in &ids {
        let done = app.wait_final(id).await;
        let decided = limits_decisions(done["decisions"].as_array().unwrap());
        let (want_version, role, outcome, status) =
            if in_canary(2, *sender, 50) { (2, "canary", "rejected", "rejected") } else { (1, "active", "allowed", "completed") };
        assert_eq!(decided, [(want_version, role.to_owned(), outcome.to_owned())], "sender {sender}, round {round}: {done}");
        assert_eq!(done["status"], status, "a canary's rejection is enforced: {done}");
        ways.insert(role);
    }
    assert_eq!(ways.len(), 2, "20 senders at 50% go both ways");
    let scrape = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        scrape
            .contains(r#"transfer_engine_plugin_calls_total{plugin="limits",version="2",role="canary",hook="validate",outcome="rejected""#),
        "{scrape}"
    );

    // Withdrawn, the active version decides for every sender again.
    let r = app.client.delete(app.url("/v1/admin/plugins/limits/canary")).bearer_auth(common::ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let canaried = a_sender(2, 50, true);
    let alone = |d: &[Value]| matches!(&limits_decisions(d)[..], [(1, role, _)] if role == "active");
    app.wait_for_decisions(alone, "the canary withdrawn").await;
    let id = app.submit_accepted(json!({"sender_id": canaried, "receiver_id": 100, "amount": "5.00", "currency": "EUR"})).await;
    assert_eq!(app.wait_final(&id).await["status"], "completed");

    // At 100% it is promoted: the active version, with no canary left.
    assert_eq!(start_canary(&app, "limits", json!({"version": 2, "percent": 30})).await, (204, None));
    assert_eq!(start_canary(&app, "limits", json!({"version": 2, "percent": 100})).await, (204, None));
    let listed = versions(&app, "limits").await;
    assert!(listed[1]["active"] == true && listed[1]["canary"].is_null() && listed[0]["active"] == false, "{listed:?}");
    let reasons: Vec<(String,)> =
        sqlx::query_as("SELECT stop_reason FROM plugin_canaries ORDER BY id").fetch_all(&app.db.pool).await.unwrap();
    assert_eq!(reasons, [("withdrawn".to_owned(),), ("promoted".to_owned(),)]);
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

/// An engine that judges a fault rate on 5 calls in a minute.
async fn spawn_quick_to_roll_back() -> TestApp {
    let db = common::TestDb::new().await;
    let settings = transfer_engine::config::Settings { plugin_rollback_calls_min: 5, plugin_rollback_window_s: 60, ..test_settings(&db) };
    TestApp::spawn_with(db, settings, Role::All).await
}

/// Submits 1.00 EUR from `sender` until a transfer fails (the faulting
/// version is picked up) and then one completes (it was withdrawn).
async fn until_rolled_back(app: &TestApp, sender: i64, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut failed = 0;
    loop {
        let id = app.submit_accepted(json!({"sender_id": sender, "receiver_id": 100, "amount": "1.00", "currency": "EUR"})).await;
        let done = app.wait_final(&id).await;
        if done["status"] == "completed" && failed > 0 {
            return;
        }
        if done["status"] != "completed" {
            assert_eq!(done["reason"]["code"], "plugin_failed", "fails closed while it faults: {done}");
            failed += 1;
        }
        assert!(tokio::time::Instant::now() < deadline, "never saw {what}");
    }
}

/// The value of the rollback counter for `limits` v`version` in `role`, if any.
async fn rollbacks_counted(app: &TestApp, version: i32, role: &str) -> Option<String> {
    let scrape = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let series = format!(r#"transfer_engine_plugin_rollbacks_total{{plugin="limits",version="{version}",role="{role}"}} "#);
    scrape.lines().find_map(|l| l.strip_prefix(series.as_str()).map(str::to_owned))
}

#[tokio::test]
async fn a_faulting_canary_is_withdrawn_automatically_and_its_senders_go_back_to_the_active_version() {
    let app = spawn_quick_to_roll_back().await;
    for sender in 1..=20 {
        app.open_account(sender, "EUR", "1000.00").await;
    }
    app.open_account(100, "EUR", "0").await;
    app.upload_plugin("limits", "limits", "validator", json!({"max_amount_minor": {"EUR": 100000}}), true).await;
    app.upload_plugin("limits", "hostile_trap", "validator", json!({}), false).await;
    assert_eq!(start_canary(&app, "limits", json!({"version": 2, "percent": 50, "max_fault_rate": "0.2"})).await, (204, None));
    let listed = versions(&app, "limits").await;
    assert_eq!(listed[1]["canary"]["max_fault_rate"], "0.2", "{listed:?}");

    // The canary's senders fail (closed) until 5 faults pass 0.2; then v1 decides for them.
    let canaried = a_sender(2, 50, true);
    until_rolled_back(&app, canaried, "the canary rolled back").await;
    let listed = versions(&app, "limits").await;
    let rolled = &listed[1]["rolled_back"];
    assert!(listed[1]["canary"].is_null() && listed[0]["active"] == true, "{listed:?}");
    assert_eq!(rolled["role"], "canary", "{listed:?}");
    assert!(rolled["calls"].as_i64().unwrap() >= 5 && rolled["faults"] == rolled["calls"], "{listed:?}");
    assert_eq!((rolled["max_fault_rate"].as_str(), rolled["window_seconds"].as_i64()), (Some("0.2"), Some(60)), "{listed:?}");
    let reasons: Vec<(String,)> = sqlx::query_as("SELECT stop_reason FROM plugin_canaries").fetch_all(&app.db.pool).await.unwrap();
    assert_eq!(reasons, [("rolled_back".to_owned(),)]);
    assert_eq!(rollbacks_counted(&app, 2, "canary").await.as_deref(), Some("1"));
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

#[tokio::test]
async fn a_new_version_that_faults_after_its_activation_gives_way_to_the_version_it_replaced() {
    let app = spawn_quick_to_roll_back().await;
    app.open_account(1, "EUR", "1000.00").await;
    app.open_account(100, "EUR", "0").await;
    app.upload_plugin("limits", "limits", "validator", json!({"max_amount_minor": {"EUR": 100000}}), true).await;
    app.upload_plugin("limits", "hostile_trap", "validator", json!({}), true).await;
    until_rolled_back(&app, 1, "v1 restored").await;
    let listed = versions(&app, "limits").await;
    assert!(listed[0]["active"] == true && listed[1]["active"] == false, "{listed:?}");
    assert_eq!(
        (listed[1]["rolled_back"]["role"].as_str(), listed[1]["rolled_back"]["restored_version"].as_i64()),
        (Some("active"), Some(1))
    );
    assert_eq!(rollbacks_counted(&app, 2, "active").await.as_deref(), Some("1"));

    // An operator's own rollback to an older version is never undone: v1 is not watched.
    assert!(listed[0]["rolled_back"].is_null(), "{listed:?}");
    let watched: (Option<i32>,) =
        sqlx::query_as("SELECT replaced_version FROM plugins WHERE name = 'limits' AND version = 1").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(watched, (None,), "the restored version is not watched in turn");
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

/// `transfer-engine plugins replay ARGS` against `database_url`: (succeeded, stdout, stderr).
fn replay(database_url: &str, args: &[&str]) -> (bool, String, String) {
    let mut command = common::engine_binary();
    let out = command
        .args(["plugins", "replay"])
        .args(args)
        .env("TRANSFER_ENGINE_DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the engine binary runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Digests every transfer's row, to show a replay wrote nothing.
async fn ledger_digest(app: &TestApp) -> (i64, String) {
    sqlx::query_as("SELECT count(*), coalesce(md5(string_agg(t::text, ',' ORDER BY seq)), '') FROM transfers t")
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_replay_of_the_deciding_version_changes_nothing_and_a_stricter_one_lists_exactly_what_it_would_stop() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "1000.00").await;
    app.open_account(2, "EUR", "0").await;
    app.open_account(3, "EUR", "10000.00").await;
    let since_at = Utc::now() - chrono::TimeDelta::seconds(1);
    let since = since_at.to_rfc3339();
    let daily = |limit_minor: i64| json!({"tier_metadata_key": "kyc_tier", "default_tier": "basic", "daily_limit_minor": {"basic": {"EUR": limit_minor}}});
    app.upload_plugin("velocity", "velocity", "validator", daily(20_000), true).await;
    app.wait_for_decisions(|d| d.iter().any(|d| d["plugin"] == "velocity"), "velocity picked up").await;
    // 20 submits of 15.00 at once against a 200.00 daily limit: 13 complete, 7 are refused.
    let submits = (0..20).map(|_| app.submit_accepted(json!({"sender_id": 3, "receiver_id": 2, "amount": "15.00", "currency": "EUR"})));
    let ids = futures::future::join_all(submits).await;
    let mut statuses = std::collections::HashMap::new();
    for id in &ids {
        statuses.insert(id.clone(), app.wait_final(id).await["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(statuses.values().filter(|s| *s == "rejected").count(), 7);

    // The context a replay rebuilds is the one each commit saw: in commit
    // order, sender 3 had 10,000.00 less 15.00 per transfer completed before,
    // and as many debits in its 24 h window.
    let needs = ContextNeeds::declared(true, &[86_400]).unwrap();
    let contexts = replay::contexts(&app.db.pool, &needs, since_at, Utc::now()).await.unwrap();
    let mut completed_before = 0;
    for (id, context) in contexts.iter().filter(|(id, _)| statuses.contains_key(&id.to_string())) {
        let sender = context.sender.as_ref().expect("sender 3 has an account");
        assert_eq!(sender.balance_minor, 1_000_000 - 1_500 * completed_before, "{id}: {context:?}");
        assert_eq!(context.velocity[0].1.count, u64::try_from(completed_before).unwrap(), "{id}: {context:?}");
        assert!(context.receiver.is_some());
        completed_before += i64::from(statuses[&id.to_string()] == "completed");
    }
    assert_eq!(completed_before, 13);
    app.upload_plugin("velocity", "velocity", "validator", daily(10_000), false).await;
    let before = ledger_digest(&app).await;
    let url = app.settings.database_url.expose().to_owned();
    let json_of = |(ok, out, err): (bool, String, String)| -> Value {
        assert!(ok, "replay failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };

    // The version that decided, replayed with the context rebuilt from the ledger, agrees on every transfer.
    let same = json_of(replay(&url, &["--name", "velocity", "--version", "1", "--since", &since, "--json"]));
    assert!(same["replayed"].as_u64().unwrap() >= 20, "{same}");
    assert_eq!((same["changed"].as_u64(), same["faults"].as_u64()), (Some(0), Some(0)), "{same}");

    // A 100.00 limit would have stopped the 7th to 13th completed ones (90.00 already sent, plus 15.00).
    let stricter = json_of(replay(&url, &["--name", "velocity", "--version", "2", "--since", &since, "--json"]));
    assert_eq!(stricter["changed"], 7, "{stricter}");
    assert_eq!(stricter["affected"], json!([{"currency": "EUR", "transfers": 7, "amount": "105.00"}]), "{stricter}");
    for change in stricter["changes"].as_array().unwrap() {
        assert_eq!(
            (&change["recorded"], &change["candidate"], &change["code"], &change["amount"]),
            (&json!("completed"), &json!("rejected"), &json!("daily_limit_exceeded"), &json!("15.00")),
            "{stricter}"
        );
    }

    // A file with a 400.00 limit would have let the 7 refused ones through.
    let file = common::plugin_path("velocity");
    let config = daily(40_000).to_string();
    let laxer = json_of(replay(&url, &[file.to_str().unwrap(), "--config", &config, "--since", &since, "--json"]));
    assert_eq!(laxer["changed"], 7, "{laxer}");
    assert!(laxer["changes"].as_array().unwrap().iter().all(|c| c["recorded"] == "rejected" && c["candidate"] == "allowed"), "{laxer}");
    let (ok, text, _) = replay(&url, &["--name", "velocity", "--version", "2", "--since", &since]);
    assert!(ok && text.contains("7 would change") && text.contains("105.00 EUR in 7 transfers"), "{text}");

    // Nothing to replay, or no database: a clear error, and nothing written.
    let hours_ago = |h: i64| (Utc::now() - chrono::TimeDelta::hours(h)).to_rfc3339();
    let (ok, _, err) = replay(&url, &["--name", "velocity", "--version", "1", "--since", &hours_ago(2), "--until", &hours_ago(1)]);
    assert!(!ok && err.contains("nothing to replay"), "{err}");
    let (ok, _, err) = replay(&url, &["--name", "velocity", "--version", "1", "--since", &hours_ago(-1)]);
    assert!(!ok && err.contains("the window is empty"), "{err}");
    let (ok, _, err) = replay(&url, &["--name", "velocity", "--version", "9", "--since", &since]);
    assert!(!ok && err.contains("no plugin velocity v9"), "{err}");
    let (ok, _, err) = replay("postgres://nobody:nothing@127.0.0.1:1/none", &["--name", "velocity", "--version", "1", "--since", &since]);
    assert!(!ok && err.contains("could not connect to PostgreSQL"), "{err}");
    assert_eq!(ledger_digest(&app).await, before, "a replay writes nothing");
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

/// Submits described transfers until one is described by `plugin`.
async fn described_by(app: &TestApp, plugin: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let body = json!({"sender_id": 1, "receiver_id": 2, "amount": "0.01", "currency": "EUR", "description": "rent"});
        let done = app.wait_final(&app.submit_accepted(body).await).await;
        if done["decisions"].as_array().unwrap().iter().any(|d| d["plugin"] == plugin && d["hook"] == "describe") {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never saw {plugin} describe");
    }
}

#[tokio::test]
async fn a_describer_replaced_by_another_name_leaves_no_transfer_undescribed_under_traffic() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "1000.00").await;
    app.open_account(2, "EUR", "0").await;
    app.upload_plugin("mask", "description", "describer", json!({}), true).await;
    app.upload_plugin("mask2", "description", "describer", json!({}), false).await;
    let r = app.admin_post("/v1/admin/plugins/mask2/activate", &json!({"version": 1})).await;
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "plugin_kind_already_active");
    described_by(&app, "mask").await;

    // Transfers flow while mask2 takes mask's place in one step: each one is described by exactly one of them.
    let traffic = async {
        let mut ids = Vec::new();
        for _ in 0..60 {
            ids.push(
                app.submit_accepted(json!({"sender_id": 1, "receiver_id": 2, "amount": "0.01", "currency": "EUR",
                                                "description": "rent"}))
                    .await,
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ids
    };
    let switch = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.admin_post("/v1/admin/plugins/mask2/activate", &json!({"version": 1, "replace": true})).await.status()
    };
    let (ids, status) = tokio::join!(traffic, switch);
    assert_eq!(status, 204);
    let mut describers = std::collections::BTreeSet::new();
    for id in &ids {
        let done = app.wait_final(id).await;
        let described: Vec<&str> = done["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["hook"] == "describe")
            .map(|d| d["plugin"].as_str().unwrap())
            .collect();
        assert_eq!(described.len(), 1, "one describer, never none: {done}");
        describers.insert(described[0].to_owned());
    }
    described_by(&app, "mask2").await;
    let listed = app.admin_json("/v1/admin/plugins").await;
    let active: Vec<&str> =
        listed["plugins"].as_array().unwrap().iter().filter(|p| p["active"] == true).map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(active, ["mask2"], "{listed}");
    assert_eq!(describers.into_iter().collect::<Vec<_>>(), ["mask", "mask2"], "the traffic spans the switch");
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

#[tokio::test]
async fn a_describer_and_a_converter_in_shadow_are_compared_and_never_change_the_text_or_the_amount() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "1000.00").await;
    app.open_account(2, "EUR", "0").await;
    app.upload_plugin("fx", "fx", "converter", json!({"rates": {"USD/EUR": "0.9215"}}), true).await;
    app.upload_plugin("fx", "fx", "converter", json!({"rates": {"USD/EUR": "0.9500"}}), false).await;
    app.upload_plugin("fx", "limits", "validator", json!({}), false).await;
    app.upload_plugin("mask", "description", "describer", json!({}), true).await;
    // v2 refuses the word "rent".
    app.upload_plugin("mask", "description", "describer", json!({"blocked_words": ["rent"]}), false).await;
    let admin = &app;
    let shadow = |name: &'static str, version: i64| async move {
        admin.admin_post(&format!("/v1/admin/plugins/{name}/shadow"), &json!({"version": version})).await
    };
    let refused = shadow("fx", 3).await;
    assert_eq!(refused.status(), 409);
    assert_eq!(refused.json::<Value>().await.unwrap()["error"]["code"], "plugin_kind_mismatch", "a validator beside a converter");
    assert_eq!(shadow("fx", 2).await.status(), 204);
    assert_eq!(shadow("mask", 2).await.status(), 204);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        let body = json!({"sender_id": 1, "receiver_id": 2, "original_amount": "10.00", "original_currency": "USD", "currency": "EUR",
                          "description": "rent"});
        let done = app.wait_final(&app.submit_accepted(body).await).await;
        let shadows = done["decisions"].as_array().map_or(0, |d| d.iter().filter(|d| d["role"] == "shadow").count());
        if shadows == 2 {
            break done;
        }
        assert!(tokio::time::Instant::now() < deadline, "never saw both shadows: {done}");
    };
    // The active versions' answers took effect: 10.00 USD at 0.9215, the text kept.
    assert_eq!((&done["status"], &done["amount"], &done["description"]), (&json!("completed"), &json!("9.22"), &json!("rent")), "{done}");
    let decided: Vec<(&str, &str, &str, bool)> = done["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["hook"] != "validate")
        .map(|d| (d["plugin"].as_str().unwrap(), d["role"].as_str().unwrap(), d["outcome"].as_str().unwrap(), d["differs"] == true))
        .collect();
    assert_eq!(
        decided,
        [
            ("mask", "active", "rewritten", false),
            ("mask", "shadow", "rejected", false),
            ("fx", "active", "converted", false),
            ("fx", "shadow", "converted", true),
        ],
        "{done}"
    );
    let report = app.admin_json("/v1/admin/plugins/fx/versions/2/report").await;
    assert_eq!(report["disagreements"][0]["candidate"], "converted differently", "{report}");
    let report = app.admin_json("/v1/admin/plugins/mask/versions/2/report").await;
    assert_eq!(
        (report["disagreements"][0]["active"].as_str(), report["disagreements"][0]["candidate"].as_str()),
        (Some("rewritten"), Some("rejected")),
        "{report}"
    );
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}
