//! The load generator against a real engine: it seeds, submits, waits for
//! every final status and reports what the engine recorded.

mod common;

use clap::Parser;
use common::{TestApp, assert_audit_passes};
use transfer_engine::loadgen::{self, LoadArgs};

fn args(extra: &[&str]) -> LoadArgs {
    let base = ["loadgen", "--quiet", "--accounts", "20", "--transfers", "300", "--amount-max-minor", "500"];
    LoadArgs::parse_from(base.iter().chain(extra))
}

#[tokio::test]
async fn loadgen_over_http_waits_for_every_final_status_and_reports_engine_latencies() {
    let app = TestApp::spawn().await;
    let ids = std::env::temp_dir().join(format!("loadgen-ids-{}", uuid::Uuid::new_v4()));
    let mut a = args(&["--via", "http", "--rate", "500", "--distribution", "zipf"]);
    a.url = app.url("");
    a.ids_out = Some(ids.clone());
    let report = loadgen::run(&app.settings, a).await.expect("every acknowledged transfer becomes final");
    assert_eq!((report.submitted, report.acknowledged, report.final_count, report.missing), (300, 300, 300, 0));
    assert_eq!(report.outcomes.get("completed"), Some(&300), "{:?}", report.outcomes);
    let to_final = report.submit_to_final_latency.expect("latencies are reported");
    assert!(to_final.p50_ms <= to_final.p99_ms && to_final.p99_ms <= to_final.max_ms);
    // (No rate is asserted: all 300 may commit in one transaction, at one instant.)
    assert!(report.submit_latency.is_some());
    // The ids file lists exactly the acknowledged transfers, for `audit --acknowledged`.
    let listed = loadgen::read_ids(&ids).unwrap();
    assert_eq!(listed.len(), 300);
    let check = app.ledger().audit_acknowledged(&listed).await.unwrap();
    assert!(check.violations.is_empty(), "{check:?}");
    std::fs::remove_file(ids).unwrap();
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

#[tokio::test]
async fn loadgen_onto_the_topic_with_a_hot_sender_seeds_twice_without_replaying_deposits() {
    let app = TestApp::spawn().await;
    let mut a = args(&["--via", "topic", "--distribution", "hot", "--balance-minor", "10000"]);
    a.transfers = 50;
    // Funds of 100.00 and amounts up to 5.00: the hot sender can afford about forty.
    let first = loadgen::run(&app.settings, a.clone()).await.unwrap();
    assert_eq!(first.final_count, 50);
    let completed = first.outcomes.get("completed").copied().unwrap_or(0);
    let refused = first.outcomes.get("rejected insufficient_funds").copied().unwrap_or(0);
    assert_eq!(completed + refused, 50, "{:?}", first.outcomes);
    // A second run tops every account up again (a fresh deposit reference per run).
    a.seed += 1;
    let second = loadgen::run(&app.settings, a).await.unwrap();
    assert_eq!(second.final_count, 50);
    let (system,): (i64,) =
        sqlx::query_as("SELECT balance_minor FROM accounts WHERE owner_id = 0").fetch_one(app.ledger().pool()).await.unwrap();
    assert_eq!(system, -2 * 20 * 10_000, "two seedings of twenty accounts");
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

#[tokio::test]
async fn the_audit_flags_an_acknowledged_id_the_ledger_never_recorded() {
    let app = TestApp::spawn().await;
    let ghost = transfer_engine::domain::TransferId::generate();
    let check = app.ledger().audit_acknowledged(&[ghost]).await.unwrap();
    assert_eq!(check.violations, vec![format!("{ghost} missing finals 0")]);
    app.stop().await;
}

#[tokio::test]
async fn the_audit_flags_a_redis_status_or_balance_ahead_of_postgresql() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10.00").await;
    let cache = transfer_engine::cache::Cache::from_settings(&app.settings).unwrap();
    let clean = app.ledger().audit_cache(&cache).await.unwrap();
    assert!(clean.iter().all(|c| c.violations.is_empty()), "{clean:?}");
    // The deposit is final at version 2 in PostgreSQL; pretend Redis saw a version 3.
    let deposit = transfer_engine::domain::TransferId::for_reference("deposit", "open-1-EUR");
    cache.put_statuses(&[(deposit, 3, "{}".into())]).await.unwrap();
    let account = app.ledger().account(common::owner(1), common::eur()).await.unwrap().unwrap();
    let ahead = transfer_engine::cache::CachedBalance { version: account.version + 1, ..(&account).into() };
    cache.put_balances(&[(account.owner_id, account.currency, ahead)]).await.unwrap();
    let checks = app.ledger().audit_cache(&cache).await.unwrap();
    let flagged: Vec<_> = checks.iter().map(|c| (c.name, c.violations.len())).collect();
    assert_eq!(flagged, vec![("redis_status_never_ahead_of_postgresql", 1), ("redis_balances_never_ahead_of_postgresql", 1)]);
    app.stop().await;
}
