//! The ledger against a real PostgreSQL: commit semantics, idempotency,
//! property tests over random batches, and concurrent crossing batches.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::{TestDb, amount, assert_audit_passes, eur, owner, seed};
use proptest::prelude::*;
use transfer_engine::domain::{Currency, Reason, Requested, Status, Submission, TransferId, TransferKind};
use transfer_engine::ledger::{CommitItem, Disposition, Ledger, Verdict};

fn transfer(id: TransferId, from: i64, to: i64, minor: i64, currency: Currency) -> CommitItem {
    let submission = Submission {
        id,
        kind: TransferKind::Transfer,
        sender: owner(from),
        receiver: owner(to),
        currency,
        requested: Requested::Amount(amount(minor)),
        description: None,
        submitted_at: Utc::now(),
        client_id: None,
        metadata: Default::default(),
    };
    CommitItem::apply_as_submitted(submission).unwrap()
}

fn new_transfer(from: i64, to: i64, minor: i64) -> CommitItem {
    transfer(TransferId::generate(), from, to, minor, eur())
}

async fn balance(ledger: &Ledger, id: i64) -> i64 {
    ledger.account(owner(id), eur()).await.unwrap().unwrap().balance_minor
}

#[tokio::test]
async fn a_completed_transfer_moves_money_and_records_two_entries_and_two_versions() {
    let db = TestDb::new().await;
    let ledger = db.ledger();
    seed(&ledger, [1, 2], eur(), 1_000).await;
    let item = new_transfer(1, 2, 250);
    let result = ledger.commit_batch(std::slice::from_ref(&item)).await.unwrap();
    let outcome = &result.outcomes[0];
    assert_eq!((outcome.status, outcome.version, outcome.disposition), (Status::Completed, 2, Disposition::New));
    assert_eq!(balance(&ledger, 1).await, 750);
    assert_eq!(balance(&ledger, 2).await, 1_250);
    let stored = ledger.transfer(item.submission.id).await.unwrap().unwrap();
    let history: Vec<_> = stored.history.iter().map(|h| (h.version, h.status)).collect();
    assert_eq!(history, [(1, Status::Initiated), (2, Status::Completed)]);
    assert_eq!(result.balances.len(), 2);
    assert_audit_passes(&ledger).await;
    db.drop_database().await;
}

#[tokio::test]
async fn a_rejected_transfer_does_not_abort_its_batch_and_debits_in_one_batch_see_each_other() {
    let db = TestDb::new().await;
    let ledger = db.ledger();
    seed(&ledger, [1, 2, 3], eur(), 100).await;
    let batch = [new_transfer(1, 2, 60), new_transfer(1, 3, 60), new_transfer(2, 3, 10), new_transfer(1, 99, 1), new_transfer(3, 3, 1)];
    let result = ledger.commit_batch(&batch).await.unwrap();
    let codes: Vec<_> = result.outcomes.iter().map(|o| o.reason.as_ref().map(|r| r.code.as_str())).collect();
    assert_eq!(codes, [None, Some("insufficient_funds"), None, Some("account_not_found"), Some("accounts_must_be_different")]);
    assert_eq!(balance(&ledger, 1).await, 40);
    assert_eq!(balance(&ledger, 2).await, 150);
    assert_eq!(balance(&ledger, 3).await, 110);
    assert_audit_passes(&ledger).await;
    db.drop_database().await;
}

#[tokio::test]
async fn a_committed_id_replays_its_outcome_and_a_different_payload_is_a_recorded_conflict() {
    let db = TestDb::new().await;
    let ledger = db.ledger();
    seed(&ledger, [1, 2], eur(), 100).await;
    let id = TransferId::generate();
    let first = ledger.commit_batch(&[transfer(id, 1, 2, 30, eur())]).await.unwrap();
    assert_eq!(first.outcomes[0].disposition, Disposition::New);
    // Same id, same meaning: the original outcome, nothing moves.
    let again = ledger.commit_batch(&[transfer(id, 1, 2, 30, eur()), transfer(id, 1, 2, 30, eur())]).await.unwrap();
    assert!(again.outcomes.iter().all(|o| o.disposition == Disposition::Duplicate && o.status == Status::Completed));
    // Same id, other meaning: a conflict, never applied.
    let conflict = ledger.commit_batch(&[transfer(id, 1, 2, 31, eur())]).await.unwrap();
    assert_eq!(conflict.outcomes[0].disposition, Disposition::Conflict);
    assert_eq!(balance(&ledger, 1).await, 70);
    let (conflicts,): (i64,) = sqlx::query_as("SELECT count(*) FROM transfer_conflicts").fetch_one(&db.pool).await.unwrap();
    assert_eq!(conflicts, 1);
    assert_audit_passes(&ledger).await;
    db.drop_database().await;
}

#[tokio::test]
async fn hook_rejections_and_failures_are_recorded_without_moving_money() {
    let db = TestDb::new().await;
    let ledger = db.ledger();
    seed(&ledger, [1, 2], eur(), 100).await;
    let mut rejected = new_transfer(1, 2, 10);
    rejected.verdict = Verdict::Reject(Reason { code: "amount_over_limit".into(), message: "too much".into() });
    let mut failed = new_transfer(1, 2, 10);
    failed.verdict = Verdict::Fail(Reason { code: "plugin_failed".into(), message: "limits@3 trapped".into() });
    let result = ledger.commit_batch(&[rejected, failed]).await.unwrap();
    assert_eq!(result.outcomes[0].status, Status::Rejected);
    assert_eq!(result.outcomes[1].status, Status::Failed);
    assert_eq!(result.outcomes[1].reason.as_ref().unwrap().code, "plugin_failed");
    assert_eq!(balance(&ledger, 1).await, 100);
    assert_audit_passes(&ledger).await;
    db.drop_database().await;
}

#[tokio::test]
async fn deposits_and_withdrawals_are_idempotent_by_reference_and_respect_the_floor() {
    let db = TestDb::new().await;
    let ledger = db.ledger();
    seed(&ledger, [1], eur(), 0).await;
    let (first, _) = ledger.deposit(owner(1), eur(), amount(500), "wire-1").await.unwrap();
    let (again, _) = ledger.deposit(owner(1), eur(), amount(500), "wire-1").await.unwrap();
    assert_eq!((first.disposition, again.disposition), (Disposition::New, Disposition::Duplicate));
    assert!(ledger.deposit(owner(1), eur(), amount(501), "wire-1").await.is_err());
    let (too_much, _) = ledger.withdraw(owner(1), eur(), amount(501), "out-1").await.unwrap();
    assert_eq!(too_much.reason.unwrap().code, "insufficient_funds");
    ledger.withdraw(owner(1), eur(), amount(500), "out-2").await.unwrap();
    assert_eq!(balance(&ledger, 1).await, 0);
    assert_audit_passes(&ledger).await;
    db.drop_database().await;
}

#[tokio::test]
async fn an_accounts_transfers_are_listed_newest_first_in_pages() {
    let db = TestDb::new().await;
    let ledger = db.ledger();
    seed(&ledger, [1, 2], eur(), 1_000).await;
    for minor in 1..=5 {
        ledger.commit_batch(&[new_transfer(1, 2, minor)]).await.unwrap();
    }
    let account = ledger.account(owner(1), eur()).await.unwrap().unwrap();
    let first = ledger.account_transfers(account.account_id, None, 2).await.unwrap();
    let amounts: Vec<_> = first.transfers.iter().map(|t| t.amount_minor.unwrap()).collect();
    assert_eq!(amounts, [5, 4]);
    let second = ledger.account_transfers(account.account_id, first.next_before, 10).await.unwrap();
    let amounts: Vec<_> = second.transfers.iter().map(|t| t.amount_minor.unwrap()).collect();
    assert_eq!(amounts, [3, 2, 1, 1_000]);
    assert!(second.next_before.is_none());
    db.drop_database().await;
}

#[tokio::test]
async fn the_balance_floor_is_also_enforced_by_the_database() {
    let db = TestDb::new().await;
    let ledger = db.ledger();
    seed(&ledger, [1], eur(), 10).await;
    let overdraw = sqlx::query("UPDATE accounts SET balance_minor = -1 WHERE owner_id = 1").execute(&db.pool).await;
    assert!(overdraw.is_err(), "the CHECK constraint is the backstop");
    db.drop_database().await;
}

/// 8 tasks commit crossing batches on the same 10 accounts for a few seconds,
/// re-submitting each other's ids: no deadlock, no overdraft, money conserved,
/// and every id applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_crossing_batches_neither_deadlock_nor_overdraw_nor_double_apply() {
    const TASKS: usize = 8;
    const ACCOUNTS: i64 = 10;
    const RUN_MS: u64 = 3_000;
    let db = TestDb::new().await;
    let ledger = db.ledger();
    seed(&ledger, 1..=ACCOUNTS, eur(), 10_000).await;
    // Ids every task will also submit: the ledger must apply each once.
    let shared: Arc<Vec<CommitItem>> = Arc::new((0..50).map(|i| new_transfer(1 + i % ACCOUNTS, 1 + (i + 3) % ACCOUNTS, 7)).collect());
    let deadline = tokio::time::Instant::now() + Duration::from_millis(RUN_MS);
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let ledger = ledger.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut seed = task as i64 * 7919 + 1;
            let mut next = move || {
                seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648;
                seed
            };
            let mut new_ids = Vec::new();
            let mut round = 0;
            while tokio::time::Instant::now() < deadline {
                let mut batch: Vec<CommitItem> = (0..20)
                    .map(|_| {
                        let from = 1 + next() % ACCOUNTS;
                        let to = 1 + (from + next() % (ACCOUNTS - 1)) % ACCOUNTS;
                        new_transfer(from, to, 1 + next() % 3_000)
                    })
                    .collect();
                batch.push(shared[(round + task) % shared.len()].clone());
                let result = ledger.commit_batch(&batch).await.expect("no deadlock or other error escapes commit_batch");
                new_ids.extend(result.outcomes.iter().filter(|o| o.disposition == Disposition::New).map(|o| o.transfer_id));
                round += 1;
            }
            new_ids
        }));
    }
    let mut applied: HashMap<TransferId, usize> = HashMap::new();
    for task in tasks {
        for id in task.await.unwrap() {
            *applied.entry(id).or_default() += 1;
        }
    }
    assert!(applied.values().all(|n| *n == 1), "an id was recorded as new twice");
    let (entries_per_shared,): (i64,) = sqlx::query_as(
        "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM ledger_entries WHERE transfer_id = ANY($1) GROUP BY transfer_id) x",
    )
    .bind(shared.iter().map(|i| i.submission.id.0).collect::<Vec<_>>())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(entries_per_shared <= 2, "a shared id was applied more than once");
    assert_audit_passes(&ledger).await;
    db.drop_database().await;
}

fn arbitrary_batch() -> impl Strategy<Value = Vec<(i64, i64, i64, u8)>> {
    // (from, to, amount, verdict: 0..8 apply, 8 reject, 9 fail); owners 1..=6, 7 has no account.
    prop::collection::vec((1i64..=7, 1i64..=7, 1i64..=2_000, 0u8..10), 1..40)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random batches: money is conserved per currency, no balance goes under
    /// its floor, and every transfer gets exactly one outcome.
    #[test]
    fn random_batches_conserve_money_respect_floors_and_give_one_outcome_each(batches in prop::collection::vec(arbitrary_batch(), 1..4)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let db = TestDb::new().await;
            let ledger = db.ledger();
            seed(&ledger, 1..=6, eur(), 1_000).await;
            for spec in batches {
                let items: Vec<CommitItem> = spec.iter().map(|&(from, to, minor, verdict)| {
                    let mut item = new_transfer(from, to, minor);
                    if verdict == 8 { item.verdict = Verdict::Reject(Reason { code: "x".into(), message: "x".into() }); }
                    if verdict == 9 { item.verdict = Verdict::Fail(Reason { code: "y".into(), message: "y".into() }); }
                    item
                }).collect();
                let result = ledger.commit_batch(&items).await.unwrap();
                assert_eq!(result.outcomes.len(), items.len());
                for (item, outcome) in items.iter().zip(&result.outcomes) {
                    assert_eq!(item.submission.id, outcome.transfer_id);
                    assert!(outcome.status.is_final());
                }
            }
            let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM transfers").fetch_one(&db.pool).await.unwrap();
            let (histories,): (i64,) = sqlx::query_as("SELECT count(DISTINCT transfer_id) FROM transfer_status_history").fetch_one(&db.pool).await.unwrap();
            assert_eq!(total, histories);
            assert_audit_passes(&ledger).await;
            db.drop_database().await;
        });
    }
}

/// The audit reads the ledger in chunks, each in its own short snapshot: a
/// violation anywhere (here in the first and the last transfer by id, and in
/// one account) is found whatever the chunk boundaries, and a sound ledger
/// passes with chunks of any size.
#[tokio::test]
async fn the_audit_in_small_chunks_finds_violations_at_every_chunk_boundary() {
    let db = TestDb::new().await;
    let ledger = db.ledger();
    seed(&ledger, 1..=6, eur(), 1_000).await;
    let items: Vec<CommitItem> = (0..25).map(|i| new_transfer(1 + i % 6, 1 + (i + 1) % 6, 1 + i)).collect();
    ledger.commit_batch(&items).await.unwrap();
    for rows_per_chunk in [1, 2, 7, 10_000] {
        let report = ledger.audit_in_chunks(rows_per_chunk).await.unwrap();
        assert!(report.passed(), "chunks of {rows_per_chunk}: {report:?}");
    }

    let (first, last): (uuid::Uuid, uuid::Uuid) = sqlx::query_as(
        "SELECT (SELECT transfer_id FROM transfers ORDER BY transfer_id LIMIT 1),
                (SELECT transfer_id FROM transfers ORDER BY transfer_id DESC LIMIT 1)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE transfers SET status = 'initiated' WHERE transfer_id IN ($1, $2)")
        .bind(first)
        .bind(last)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE accounts SET balance_minor = balance_minor + 1 WHERE account_id = (SELECT max(account_id) FROM accounts)")
        .execute(&db.pool)
        .await
        .unwrap();
    for rows_per_chunk in [1, 2, 7, 10_000] {
        let report = ledger.audit_in_chunks(rows_per_chunk).await.unwrap();
        let found = |name: &str| report.checks.iter().find(|c| c.name == name).map(|c| c.violations.clone()).unwrap_or_default();
        let not_final = found("every_recorded_transfer_is_final");
        assert_eq!(not_final.len(), 2, "chunks of {rows_per_chunk}: {not_final:?}");
        assert!(not_final.contains(&first.to_string()) && not_final.contains(&last.to_string()), "{not_final:?}");
        assert_eq!(found("each_balance_equals_the_sum_of_its_entries").len(), 1, "chunks of {rows_per_chunk}");
        assert_eq!(found("balances_of_each_currency_sum_to_zero").len(), 1, "chunks of {rows_per_chunk}");
    }
    db.drop_database().await;
}

// ---- Retention of the status history (migration 20261202000001, ledger/retention.rs) ----

fn transfer_submitted_at(from: i64, to: i64, minor: i64, submitted_at: &str) -> CommitItem {
    let mut item = new_transfer(from, to, minor);
    item.submission.submitted_at = submitted_at.parse().unwrap();
    item
}

fn at(text: &str) -> chrono::DateTime<Utc> {
    text.parse().unwrap()
}

/// (version, status, reason code, at) of a transfer's history as `GET` shows it.
async fn history_of(ledger: &Ledger, id: TransferId) -> Vec<(i32, Status, Option<String>, chrono::DateTime<Utc>)> {
    let view = ledger.transfer(id).await.unwrap().unwrap();
    view.history.iter().map(|h| (h.version, h.status, h.reason.as_ref().map(|r| r.code.clone()), h.at)).collect()
}

async fn partition_of(db: &TestDb, id: TransferId, version: i32) -> String {
    sqlx::query_scalar("SELECT tableoid::regclass::text FROM transfer_status_history WHERE transfer_id = $1 AND version = $2")
        .bind(id.0)
        .bind(version)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn history_rows_land_in_their_month_and_reads_and_the_audit_outlive_detached_months() {
    let db = TestDb::new().await;
    let ledger = db.ledger();
    seed(&ledger, [1, 2], eur(), 1_000).await;
    let made = ledger.prepare_history_partitions(at("2030-01-10T00:00:00Z"), 2).await.unwrap();
    assert_eq!(made, ["transfer_status_history_2030_01", "transfer_status_history_2030_02", "transfer_status_history_2030_03"]);
    assert!(ledger.prepare_history_partitions(at("2030-01-31T23:00:00Z"), 2).await.unwrap().is_empty(), "made once");

    let today = new_transfer(1, 2, 10);
    let january = transfer_submitted_at(1, 2, 20, "2030-01-15T12:00:00Z");
    let february = transfer_submitted_at(2, 1, 5_000, "2030-02-20T12:00:00Z"); // rejected: insufficient funds
    ledger.commit_batch(&[today.clone(), january.clone(), february.clone()]).await.unwrap();
    assert_eq!(partition_of(&db, january.submission.id, 1).await, "transfer_status_history_2030_01");
    assert_eq!(partition_of(&db, february.submission.id, 1).await, "transfer_status_history_2030_02");
    assert_eq!(partition_of(&db, today.submission.id, 2).await, "transfer_status_history_legacy");
    let ids = [today.submission.id, january.submission.id, february.submission.id];
    let mut before = Vec::new();
    for id in ids {
        before.push(history_of(&ledger, id).await);
    }
    assert!(before.iter().all(|h| h.len() == 2), "{before:?}");

    let recent = ledger.detach_history(at("2030-02-01T00:00:00Z"), at("2030-02-15T00:00:00Z")).await;
    assert!(matches!(recent, Err(transfer_engine::ledger::retention::RetentionError::TooRecent { .. })), "{recent:?}");
    let detached = ledger.detach_history(at("2030-02-01T00:00:00Z"), at("2030-06-01T00:00:00Z")).await.unwrap();
    let names: Vec<&str> = detached.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["transfer_status_history_legacy", "transfer_status_history_2030_01"]);

    // Every row of `today` and `january` is gone from the table, one of
    // `february`'s too; reads rebuild them exactly, and the audit checks
    // history only where it is whole.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM transfer_status_history WHERE transfer_id = ANY($1)")
        .bind(ids.iter().map(|id| id.0).collect::<Vec<_>>())
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, 1);
    for (id, before) in ids.into_iter().zip(&before) {
        assert_eq!(&history_of(&ledger, id).await, before);
    }
    assert_audit_passes(&ledger).await;

    // New commits go on (into the default partition: no month covers today
    // in this test), and a detached month is dropped only once detached.
    let after = new_transfer(1, 2, 30);
    ledger.commit_batch(std::slice::from_ref(&after)).await.unwrap();
    assert_eq!(history_of(&ledger, after.submission.id).await.len(), 2);
    assert_eq!(partition_of(&db, after.submission.id, 2).await, "transfer_status_history_default");
    let attached = ledger.drop_detached_history("transfer_status_history_2030_03").await;
    assert!(matches!(attached, Err(transfer_engine::ledger::retention::RetentionError::NotDetached(_))), "{attached:?}");
    ledger.drop_detached_history("transfer_status_history_2030_01").await.unwrap();
    let listed = ledger.history_partitions().await.unwrap();
    let dropped = listed.iter().find(|p| p.name == "transfer_status_history_2030_01").unwrap();
    assert!(dropped.dropped_at.is_some() && dropped.bytes.is_none(), "{dropped:?}");
    assert_audit_passes(&ledger).await;
    db.drop_database().await;
}

#[tokio::test]
async fn rows_no_month_covered_move_into_their_month_when_it_is_made() {
    let db = TestDb::new().await;
    let ledger = db.ledger();
    seed(&ledger, [1, 2], eur(), 1_000).await;
    let future = transfer_submitted_at(1, 2, 20, "2031-05-05T00:00:00Z");
    ledger.commit_batch(std::slice::from_ref(&future)).await.unwrap();
    assert_eq!(partition_of(&db, future.submission.id, 1).await, "transfer_status_history_default");
    let before = history_of(&ledger, future.submission.id).await;

    let made = ledger.prepare_history_partitions(at("2031-05-01T00:00:00Z"), 0).await.unwrap();
    assert_eq!(made, ["transfer_status_history_2031_05"]);
    assert_eq!(partition_of(&db, future.submission.id, 1).await, "transfer_status_history_2031_05");
    assert_eq!(ledger.history_rows_unpartitioned().await.unwrap(), 0);
    assert_eq!(history_of(&ledger, future.submission.id).await, before);
    assert_audit_passes(&ledger).await;
    db.drop_database().await;
}

#[tokio::test]
async fn the_partitioned_status_history_still_refuses_updates_and_deletes() {
    let db = TestDb::new().await;
    let ledger = db.ledger();
    seed(&ledger, [1, 2], eur(), 1_000).await;
    ledger.prepare_history_partitions(at("2031-05-01T00:00:00Z"), 0).await.unwrap();
    let items = [
        new_transfer(1, 2, 10),
        transfer_submitted_at(1, 2, 20, "2031-05-05T00:00:00Z"),
        transfer_submitted_at(1, 2, 30, "2035-01-01T00:00:00Z"),
    ];
    ledger.commit_batch(&items).await.unwrap();
    for statement in [
        "DELETE FROM transfer_status_history",
        "UPDATE transfer_status_history SET reason_message = 'x'",
        "DELETE FROM transfer_status_history_legacy",
        "DELETE FROM transfer_status_history_2031_05",
        // The default partition's one sanctioned delete needs the flag that only partition maintenance sets.
        "DELETE FROM transfer_status_history_default",
    ] {
        let refused = sqlx::query(statement).execute(&db.pool).await.expect_err(statement);
        assert!(refused.to_string().contains("append-only"), "{statement}: {refused}");
    }
    db.drop_database().await;
}

/// The last migration of the release before retention.
const PREVIOUS_RELEASE_MIGRATION: i64 = 20261201000003;

#[tokio::test]
async fn a_ledger_migrated_by_the_previous_release_keeps_its_history_through_partitioning() {
    // A database at the previous release's schema: its migrations only, from a copy of their files.
    let old = std::env::temp_dir().join(format!("migrations-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&old).unwrap();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let version: i64 = name.split('_').next().unwrap().parse().unwrap();
        if version <= PREVIOUS_RELEASE_MIGRATION {
            std::fs::copy(&path, old.join(&name)).unwrap();
        }
    }
    let db = TestDb::empty().await;
    sqlx::migrate::Migrator::new(old.as_path()).await.unwrap().run(&db.pool).await.unwrap();
    std::fs::remove_dir_all(&old).unwrap();
    // This release's writes name the metadata columns (a later migration),
    // which that schema lacks: they are there only while the rows are
    // written, and dropped before migrating, so the rows and the schema the
    // migrations start from are the previous release's (it stored no metadata).
    let metadata_columns = |ddl: &'static str| {
        let pool = db.pool.clone();
        async move { sqlx::raw_sql(ddl).execute(&pool).await.unwrap() }
    };
    metadata_columns(
        "ALTER TABLE accounts ADD COLUMN metadata JSONB NOT NULL DEFAULT '{}'; ALTER TABLE transfers ADD COLUMN metadata JSONB",
    )
    .await;
    // The previous release wrote no events (that schema has no outbox).
    let ledger = db.ledger().without_events();
    seed(&ledger, [1, 2], eur(), 1_000).await;
    let stored = [new_transfer(1, 2, 10), transfer_submitted_at(1, 2, 20, "2099-01-01T00:00:00Z")];
    ledger.commit_batch(&stored).await.unwrap();
    let mut before = Vec::new();
    for item in &stored {
        before.push(history_of(&ledger, item.submission.id).await);
    }
    metadata_columns("ALTER TABLE accounts DROP COLUMN metadata; ALTER TABLE transfers DROP COLUMN metadata").await;

    transfer_engine::ledger::migrate(&db.pool).await.unwrap();
    for (item, before) in stored.iter().zip(&before) {
        assert_eq!(&history_of(&ledger, item.submission.id).await, before);
    }
    assert_eq!(partition_of(&db, stored[0].submission.id, 1).await, "transfer_status_history_legacy");
    // A row dated past the legacy range moved aside rather than failing the migration.
    assert_eq!(partition_of(&db, stored[1].submission.id, 1).await, "transfer_status_history_default");
    let after = new_transfer(2, 1, 5);
    ledger.commit_batch(std::slice::from_ref(&after)).await.unwrap();
    assert_eq!(history_of(&ledger, after.submission.id).await.len(), 2);
    assert_audit_passes(&ledger).await;
    db.drop_database().await;
}

// ---------------------------------------------------------------------------
// Validators that need context run in the commit, under the batch's locks.

use std::sync::Mutex;

use transfer_engine::domain::{Amount, Money};
use transfer_engine::hooks::{Context, ContextNeeds, Decision, HookError, Hooks, VelocityWindow};

const DAY_S: u32 = 86_400;
const LIMIT_CODE: &str = "daily_limit_exceeded";

/// A daily limit per sender, as a plugin would write it, with a record of
/// every context it was given. The policy is plain Rust so the tests can
/// drive thousands of decisions; the plugin path is tested in plugins.rs.
struct DailyLimit {
    limit_minor: i64,
    /// A tier in the sender's metadata raises the limit to this.
    verified_limit_minor: i64,
    accounts: bool,
    seen: Mutex<Vec<(TransferId, Context)>>,
}

impl DailyLimit {
    fn new(limit_minor: i64) -> Self {
        Self { limit_minor, verified_limit_minor: limit_minor, accounts: false, seen: Mutex::default() }
    }

    fn window() -> VelocityWindow {
        VelocityWindow::new(DAY_S).unwrap()
    }
}

impl Hooks for DailyLimit {
    fn describe(&self, d: &str, _: &Submission, _: &mut Vec<Decision>) -> Result<String, HookError> {
        Ok(d.to_owned())
    }
    fn convert(&self, _: Money, _: Currency, _: &Submission, _: Option<&str>, _: &mut Vec<Decision>) -> Result<Amount, HookError> {
        unreachable!("no conversions here")
    }
    fn validate(&self, s: &Submission, amount: Amount, _: Option<&str>, context: &Context, _: &mut Vec<Decision>) -> Result<(), HookError> {
        self.seen.lock().unwrap().push((s.id, context.clone()));
        let verified = context.sender.as_ref().and_then(|a| a.metadata.get("kyc_tier")) == Some("verified");
        let limit = if verified { self.verified_limit_minor } else { self.limit_minor };
        let spent = context.total(Self::window()).sum_minor;
        match spent.checked_add(amount.minor()) {
            Some(total) if total <= limit => Ok(()),
            _ => Err(HookError::Reject(Reason { code: LIMIT_CODE.into(), message: format!("{spent} + {} > {limit}", amount.minor()) })),
        }
    }
    fn needs(&self) -> ContextNeeds {
        ContextNeeds::declared(self.accounts, &[DAY_S]).unwrap()
    }
}

/// A transfer waiting for its validators, time-stamped `at_s` seconds from now.
fn to_validate(from: i64, to: i64, minor: i64, at_s: i64) -> CommitItem {
    let mut item = new_transfer(from, to, minor);
    item.submission.submitted_at += chrono::TimeDelta::seconds(at_s);
    item.verdict = Verdict::Validate(amount(minor));
    item
}

fn codes(result: &transfer_engine::ledger::BatchResult) -> Vec<Option<String>> {
    result.outcomes.iter().map(|o| o.reason.as_ref().map(|r| r.code.clone())).collect()
}

#[tokio::test]
async fn a_validator_sees_each_transfer_of_its_batch_after_the_ones_before_it() {
    let db = TestDb::new().await;
    let ledger = db.ledger();
    seed(&ledger, [1, 2], eur(), 5_000).await;
    let policy = DailyLimit { accounts: true, ..DailyLimit::new(1_000) };
    let items = vec![to_validate(1, 2, 400, 0), to_validate(1, 2, 400, 1), to_validate(1, 2, 400, 2), to_validate(1, 2, 200, 3)];
    let result = ledger.commit_batch_validating(&items, Some(&policy)).await.unwrap();
    assert_eq!(codes(&result), [None, None, Some(LIMIT_CODE.into()), None], "the third would make 1,200 of 1,000");
    let seen = policy.seen.lock().unwrap().clone();
    let before: Vec<_> =
        seen.iter().map(|(_, c)| (c.sender.as_ref().unwrap().balance_minor, c.receiver.as_ref().unwrap().balance_minor)).collect();
    assert_eq!(
        before,
        [(5_000, 5_000), (4_600, 5_400), (4_200, 5_800), (4_200, 5_800)],
        "balances before each transfer, the refused one moved nothing"
    );
    let spent: Vec<_> = seen.iter().map(|(_, c)| c.total(DailyLimit::window())).map(|t| (t.count, t.sum_minor)).collect();
    assert_eq!(spent, [(0, 0), (1, 400), (2, 800), (2, 800)]);
    assert_eq!(balance(&ledger, 1).await, 4_000);
    assert_audit_passes(&ledger).await;
    db.drop_database().await;
}

#[tokio::test]
async fn a_window_counts_committed_debits_and_withdrawals_after_its_start_and_none_before() {
    let db = TestDb::new().await;
    let ledger = db.ledger();
    seed(&ledger, [1, 2], eur(), 10_000).await;
    let anything = DailyLimit::new(i64::MAX);
    // 25 h ago: outside the window of a transfer made now. 23 h ago and 1 h ahead: inside.
    let history = vec![to_validate(1, 2, 1_000, -25 * 3_600), to_validate(1, 2, 300, -23 * 3_600), to_validate(1, 2, 50, 3_600)];
    ledger.commit_batch_validating(&history, Some(&anything)).await.unwrap();
    ledger.withdraw(owner(1), eur(), amount(7), "atm-1").await.unwrap();
    ledger.deposit(owner(1), eur(), amount(1_000), "salary").await.unwrap();
    let incoming = to_validate(2, 1, 5, 0); // a credit of owner 1: not a debit
    ledger.commit_batch_validating(std::slice::from_ref(&incoming), Some(&anything)).await.unwrap();

    let policy = DailyLimit::new(i64::MAX);
    let now = to_validate(1, 2, 1, 0);
    ledger.commit_batch_validating(std::slice::from_ref(&now), Some(&policy)).await.unwrap();
    let seen = policy.seen.lock().unwrap().clone();
    let total = seen[0].1.total(DailyLimit::window());
    assert_eq!((total.count, total.sum_minor), (3, 357), "300 and 50 and the withdrawal of 7");
    assert!(seen[0].1.sender.is_none(), "account facts were not declared, so not given");
    db.drop_database().await;
}

#[tokio::test]
async fn debits_the_processor_did_not_commit_itself_count_in_its_next_window() {
    let db = TestDb::new().await;
    // Two processors: each keeps its own log of the senders it validated.
    let (ours, theirs) = (db.ledger(), db.ledger());
    seed(&ours, [1, 2], eur(), 10_000).await;
    let policy = DailyLimit::new(1_000);
    let hours = |h: i64| h * 3_600;
    for (minor, at_s) in [(100, hours(-30)), (400, 0)] {
        assert_eq!(codes(&ours.commit_batch_validating(&[to_validate(1, 2, minor, at_s)], Some(&policy)).await.unwrap()), [None]);
    }
    // Owner 1 is debited by the other processor, then by a withdrawal.
    assert_eq!(codes(&theirs.commit_batch_validating(&[to_validate(1, 2, 500, 1)], Some(&policy)).await.unwrap()), [None]);
    ours.withdraw(owner(1), eur(), amount(50), "atm-1").await.unwrap();
    // 400 + 500 + 50 in the last 24 h: 60 more is over 1,000, 50 is not.
    let next = ours.commit_batch_validating(&[to_validate(1, 2, 60, 2), to_validate(1, 2, 50, 3)], Some(&policy)).await.unwrap();
    assert_eq!(codes(&next), [Some(LIMIT_CODE.into()), None]);
    // A transfer time-stamped 40 h back: its window reaches the debit of 30 h
    // ago, which the log no longer holds, and every later one.
    let late = ours.commit_batch_validating(&[to_validate(1, 2, 1, hours(-40))], Some(&policy)).await.unwrap();
    let seen = policy.seen.lock().unwrap().iter().find(|(id, _)| *id == late.outcomes[0].transfer_id).unwrap().1.clone();
    let total = seen.total(DailyLimit::window());
    assert_eq!((total.count, total.sum_minor), (5, 1_100), "100, 400, 500, 50 and 50");
    assert_audit_passes(&ours).await;
    db.drop_database().await;
}

#[tokio::test]
async fn a_log_carried_past_a_batch_that_debited_its_account_without_a_window_counts_that_debit() {
    let db = TestDb::new().await;
    let ledger = db.ledger();
    seed(&ledger, 1..=4, eur(), 10_000).await;
    let policy = DailyLimit::new(i64::MAX);
    ledger.commit_batch_validating(&[to_validate(1, 2, 300, 0)], Some(&policy)).await.unwrap();
    // Owner 1 is locked and debited here, but by a transfer that waits for no
    // validator: its log is carried to the new version with this debit.
    let (other, plain) = (to_validate(3, 4, 10, 0), new_transfer(1, 2, 500));
    ledger.commit_batch_validating(&[other, plain], Some(&policy)).await.unwrap();
    ledger.commit_batch_validating(&[to_validate(2, 1, 5, 0)], Some(&policy)).await.unwrap();
    let next = to_validate(1, 2, 100, 0);
    let result = ledger.commit_batch_validating(std::slice::from_ref(&next), Some(&policy)).await.unwrap();
    let seen = policy.seen.lock().unwrap().iter().find(|(id, _)| *id == result.outcomes[0].transfer_id).unwrap().1.clone();
    let total = seen.total(DailyLimit::window());
    assert_eq!((total.count, total.sum_minor), (2, 800), "300, then the 500 of the plain transfer; the credit of 5 is no debit");
    db.drop_database().await;
}

#[tokio::test]
async fn account_metadata_changed_before_a_batch_decides_it_and_bad_stored_metadata_fails_closed() {
    let db = TestDb::new().await;
    let ledger = db.ledger();
    seed(&ledger, [1, 2], eur(), 10_000).await;
    let policy = DailyLimit { verified_limit_minor: 5_000, accounts: true, ..DailyLimit::new(100) };
    let first = ledger.commit_batch_validating(&[to_validate(1, 2, 1_000, 0)], Some(&policy)).await.unwrap();
    assert_eq!(codes(&first), [Some(LIMIT_CODE.into())]);
    sqlx::query(r#"UPDATE accounts SET metadata = '{"kyc_tier": "verified"}' WHERE owner_id = 1"#).execute(&db.pool).await.unwrap();
    let second = ledger.commit_batch_validating(&[to_validate(1, 2, 1_000, 0)], Some(&policy)).await.unwrap();
    assert_eq!(codes(&second), [None], "the tier set before the batch raised the limit");
    // Written around the API: not valid metadata. The validator is not shown less; the transfer fails.
    sqlx::query(r#"UPDATE accounts SET metadata = '{"kyc_tier": 5}' WHERE owner_id = 1"#).execute(&db.pool).await.unwrap();
    let third = ledger.commit_batch_validating(&[to_validate(1, 2, 1, 0)], Some(&policy)).await.unwrap();
    assert_eq!((third.outcomes[0].status, codes(&third)[0].as_deref()), (Status::Failed, Some("context_unavailable")));
    assert_audit_passes(&ledger).await;
    db.drop_database().await;
}

#[tokio::test]
async fn a_transfer_waiting_for_validators_committed_without_them_fails_instead_of_moving_money() {
    let db = TestDb::new().await;
    let ledger = db.ledger();
    seed(&ledger, [1, 2], eur(), 1_000).await;
    let result = ledger.commit_batch(&[to_validate(1, 2, 10, 0)]).await.unwrap();
    assert_eq!((result.outcomes[0].status, codes(&result)[0].as_deref()), (Status::Failed, Some("hook_failed")));
    assert_eq!(balance(&ledger, 1).await, 1_000);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossing_batches_of_one_sender_never_exceed_its_daily_limit_and_refuse_exactly_the_excess() {
    let db = TestDb::new().await;
    let ledger = db.ledger();
    seed(&ledger, 1..=9, eur(), 1_000_000).await;
    let policy = Arc::new(DailyLimit::new(10_000));
    // Eight committers at once (as processors during a rebalance would),
    // each with batches mixing owner 1's debits, credits to it, and other
    // owners' traffic; time references spread over two days and out of order.
    let mut tasks = Vec::new();
    for task in 0..8i64 {
        let (ledger, policy) = (ledger.clone(), policy.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..6i64 {
                let items: Vec<CommitItem> = (0..12i64)
                    .map(|i| {
                        let n = task * 1_000 + round * 100 + i;
                        let at_s = -((n * 7_919) % (48 * 3_600));
                        match i % 4 {
                            0 | 1 => to_validate(1, 2 + n % 8, 300 + (n * 37) % 700, at_s),
                            2 => to_validate(2 + n % 8, 1, 100, at_s),
                            _ => to_validate(2 + n % 4, 6 + n % 4, 50, at_s),
                        }
                    })
                    .collect();
                ledger.commit_batch_validating(&items, Some(policy.as_ref())).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (allowed, refused) = common::assert_daily_limit_decided_exactly(&db.pool, 1, 10_000, LIMIT_CODE).await;
    assert!(allowed > 0 && refused > 0, "the limit was reached: {allowed} allowed, {refused} refused");
    assert_audit_passes(&ledger).await;
    db.drop_database().await;
}

fn arbitrary_limited_batch() -> impl Strategy<Value = Vec<(i64, i64, i64, i64)>> {
    // (from, to, amount, hours from now): owners 1..=4 (7 has no account), time references over three days.
    prop::collection::vec((prop_oneof![1i64..=4, Just(7)], 1i64..=4, 1i64..=600, -60i64..=12), 1..30)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random batches against a daily limit: every sender's transfers are
    /// decided exactly by the debits committed before them, in and across batches.
    #[test]
    fn random_batches_decide_a_daily_limit_exactly(batches in prop::collection::vec(arbitrary_limited_batch(), 1..5)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let db = TestDb::new().await;
            let ledger = db.ledger();
            seed(&ledger, 1..=4, eur(), 1_000_000).await;
            let policy = DailyLimit::new(1_000);
            for spec in batches {
                let items: Vec<CommitItem> =
                    spec.iter().map(|&(from, to, minor, hours)| to_validate(from, to, minor, hours * 3_600)).collect();
                let result = ledger.commit_batch_validating(&items, Some(&policy)).await.unwrap();
                assert_eq!(result.outcomes.len(), items.len());
            }
            for sender in 1..=4 {
                common::assert_daily_limit_decided_exactly(&db.pool, sender, 1_000, LIMIT_CODE).await;
            }
            assert_audit_passes(&ledger).await;
            db.drop_database().await;
        });
    }
}

/// Panics in host code while validating one transfer (a bug, never a plugin's doing).
struct PanicsOnSender(i64);

impl Hooks for PanicsOnSender {
    fn describe(&self, d: &str, _: &Submission, _: &mut Vec<Decision>) -> Result<String, HookError> {
        Ok(d.to_owned())
    }
    fn convert(&self, _: Money, _: Currency, _: &Submission, _: Option<&str>, _: &mut Vec<Decision>) -> Result<Amount, HookError> {
        unreachable!("no conversions here")
    }
    fn validate(&self, s: &Submission, _: Amount, _: Option<&str>, _: &Context, _: &mut Vec<Decision>) -> Result<(), HookError> {
        assert_ne!(s.sender.get(), self.0, "a bug in host code");
        Ok(())
    }
    fn needs(&self) -> ContextNeeds {
        ContextNeeds::declared(true, &[]).unwrap()
    }
}

#[tokio::test]
async fn a_panic_while_validating_in_the_commit_fails_only_that_transfer() {
    let db = TestDb::new().await;
    let ledger = db.ledger();
    seed(&ledger, [1, 2, 3], eur(), 1_000).await;
    let items = [to_validate(1, 2, 10, 0), to_validate(3, 2, 20, 0)];
    let result = ledger.commit_batch_validating(&items, Some(&PanicsOnSender(1))).await.unwrap();
    assert_eq!(codes(&result), [Some("hook_failed".to_owned()), None]);
    assert_eq!((balance(&ledger, 1).await, balance(&ledger, 3).await), (1_000, 980));
    assert_audit_passes(&ledger).await;
    db.drop_database().await;
}

// ---------------------------------------------------------------------------
// Validators asked ahead of the commit (`Ledger::foresee`), their answers
// used by the commit only on exactly the context it finds under the locks.

use transfer_engine::hooks::HookSet;

fn limit_set(limit_minor: i64) -> (Arc<DailyLimit>, HookSet) {
    let policy = Arc::new(DailyLimit { accounts: true, ..DailyLimit::new(limit_minor) });
    (policy.clone(), policy)
}

#[tokio::test]
async fn answers_asked_ahead_are_used_where_the_commit_finds_the_context_they_were_given() {
    let db = TestDb::new().await;
    let ledger = db.ledger();
    seed(&ledger, 1..=4, eur(), 1_000_000).await;
    let (policy, hooks) = limit_set(1_000);
    // Nothing is known of these accounts yet: no answer is guessed, all are asked in the commit.
    let first = vec![to_validate(1, 2, 100, 0), to_validate(3, 4, 100, 0)];
    let foresight = ledger.foresee(&first, hooks.clone());
    assert_eq!(foresight.answered(), 0);
    let result = ledger.commit_batch_foreseen(&first, &foresight).await.unwrap();
    assert_eq!((result.validated_ahead, result.validated_in_commit), (0, 2));

    // Two batches foreseen before either commits, as the processor's
    // stages do: the second is predicted on top of the first.
    let second = vec![to_validate(1, 2, 400, 1), to_validate(3, 4, 300, 1)];
    let third = vec![to_validate(1, 2, 400, 2), to_validate(1, 2, 200, 3), to_validate(2, 1, 50, 4)];
    let (ahead_second, ahead_third) = (ledger.foresee(&second, hooks.clone()), ledger.foresee(&third, hooks.clone()));
    assert_eq!((ahead_second.answered(), ahead_third.answered()), (2, 2), "owner 2 has never been validated as a sender");
    let second = ledger.commit_batch_foreseen(&second, &ahead_second).await.unwrap();
    assert_eq!(codes(&second), [None, None]);
    assert_eq!((second.validated_ahead, second.validated_in_commit), (2, 0));
    let third = ledger.commit_batch_foreseen(&third, &ahead_third).await.unwrap();
    assert_eq!(codes(&third), [None, Some(LIMIT_CODE.into()), None], "100 + 400 + 400, then 200 more is over 1,000");
    assert_eq!((third.validated_ahead, third.validated_in_commit), (2, 1));
    assert_eq!(policy.seen.lock().unwrap().len(), 7, "each transfer asked once, ahead or in the commit");
    common::assert_daily_limit_decided_exactly(&db.pool, 1, 1_000, LIMIT_CODE).await;
    assert_audit_passes(&ledger).await;
    db.drop_database().await;
}

#[tokio::test]
async fn an_answer_asked_ahead_on_a_context_the_commit_does_not_find_is_asked_again() {
    let db = TestDb::new().await;
    let (ours, theirs) = (db.ledger(), db.ledger());
    seed(&ours, [1, 2], eur(), 10_000).await;
    let (_, hooks) = limit_set(1_000);
    let warm = vec![to_validate(1, 2, 100, 0)];
    ours.commit_batch_foreseen(&warm, &ours.foresee(&warm, hooks.clone())).await.unwrap();

    // Allowed on what this processor knows (100 spent)...
    let next = vec![to_validate(1, 2, 800, 2)];
    let foresight = ours.foresee(&next, hooks.clone());
    assert_eq!(foresight.answered(), 1);
    // ...but another processor debits owner 1 before the commit: 100 + 500 + 800 is over 1,000.
    theirs.commit_batch_validating(&[to_validate(1, 2, 500, 1)], Some(&*hooks)).await.unwrap();
    let result = ours.commit_batch_foreseen(&next, &foresight).await.unwrap();
    assert_eq!(codes(&result), [Some(LIMIT_CODE.into())]);
    assert_eq!((result.validated_ahead, result.validated_in_commit), (0, 1));

    // A metadata change between the two likewise: the verified tier's limit decides.
    let verified = Arc::new(DailyLimit { accounts: true, verified_limit_minor: 100_000, ..DailyLimit::new(1_000) });
    let hooks: HookSet = verified;
    let later = vec![to_validate(1, 2, 2_000, 3)];
    let foresight = ours.foresee(&later, hooks.clone());
    sqlx::query(r#"UPDATE accounts SET metadata = '{"kyc_tier": "verified"}' WHERE owner_id = 1"#).execute(&db.pool).await.unwrap();
    let result = ours.commit_batch_foreseen(&later, &foresight).await.unwrap();
    assert_eq!(codes(&result), [None]);
    assert_eq!((result.validated_ahead, result.validated_in_commit), (0, 1));
    assert_audit_passes(&ours).await;
    db.drop_database().await;
}

/// Fails a transfer the first time it is asked about it (as a plugin's
/// wall-clock backstop may, on a busy machine), then allows it.
#[derive(Default)]
struct FailsOnce {
    asked: Mutex<std::collections::HashSet<TransferId>>,
}

impl Hooks for FailsOnce {
    fn describe(&self, d: &str, _: &Submission, _: &mut Vec<Decision>) -> Result<String, HookError> {
        Ok(d.to_owned())
    }
    fn convert(&self, _: Money, _: Currency, _: &Submission, _: Option<&str>, _: &mut Vec<Decision>) -> Result<Amount, HookError> {
        unreachable!("no conversions here")
    }
    fn validate(&self, s: &Submission, _: Amount, _: Option<&str>, _: &Context, _: &mut Vec<Decision>) -> Result<(), HookError> {
        if self.asked.lock().unwrap().insert(s.id) {
            return Err(HookError::Fail(Reason { code: "plugin_failed".into(), message: "wall-clock backstop".into() }));
        }
        Ok(())
    }
    fn needs(&self) -> ContextNeeds {
        ContextNeeds::declared(true, &[]).unwrap()
    }
}

#[tokio::test]
async fn a_failure_asked_ahead_is_never_reused_the_commit_asks_again() {
    let db = TestDb::new().await;
    let ledger = db.ledger();
    seed(&ledger, [1, 2], eur(), 1_000).await;
    let hooks: HookSet = Arc::new(FailsOnce::default());
    let warm = vec![to_validate(1, 2, 1, 0)];
    ledger.commit_batch_foreseen(&warm, &ledger.foresee(&warm, hooks.clone())).await.unwrap();
    let batch = vec![to_validate(1, 2, 10, 1)];
    let foresight = ledger.foresee(&batch, hooks.clone());
    assert_eq!(foresight.answered(), 0, "the failure was not kept");
    let result = ledger.commit_batch_foreseen(&batch, &foresight).await.unwrap();
    assert_eq!((result.outcomes[0].status, result.validated_in_commit), (Status::Completed, 1));
    db.drop_database().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random batches foreseen two ahead of their commits, as the processor
    /// runs them, while another processor commits debits of the same
    /// senders in between: every prediction that went otherwise is caught.
    #[test]
    fn random_batches_foreseen_ahead_still_decide_a_daily_limit_exactly(
        batches in prop::collection::vec((arbitrary_limited_batch(), any::<bool>()), 1..6),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let db = TestDb::new().await;
            let (ours, theirs) = (db.ledger(), db.ledger());
            seed(&ours, 1..=4, eur(), 1_000_000).await;
            let (_, hooks) = limit_set(1_000);
            let batches: Vec<(Vec<CommitItem>, bool)> = batches
                .into_iter()
                .map(|(spec, interleave)| {
                    let items = spec.iter().map(|&(from, to, minor, hours)| to_validate(from, to, minor, hours * 3_600)).collect();
                    (items, interleave)
                })
                .collect();
            // Each batch is foreseen while the one before it waits to commit.
            let mut ahead = std::collections::VecDeque::new();
            let mut to_commit = batches.iter().enumerate();
            for (items, _) in &batches {
                ahead.push_back(ours.foresee(items, hooks.clone()));
                if ahead.len() < 2 {
                    continue;
                }
                let (n, (items, interleave)) = to_commit.next().unwrap();
                if *interleave {
                    let by_them = to_validate(1 + n as i64 % 4, 1 + (n as i64 + 1) % 4, 150, 0);
                    theirs.commit_batch_validating(&[by_them], Some(&*hooks)).await.unwrap();
                }
                ours.commit_batch_foreseen(items, &ahead.pop_front().unwrap()).await.unwrap();
            }
            for ((_, (items, _)), foresight) in to_commit.zip(ahead) {
                ours.commit_batch_foreseen(items, &foresight).await.unwrap();
            }
            for sender in 1..=4 {
                common::assert_daily_limit_decided_exactly(&db.pool, sender, 1_000, LIMIT_CODE).await;
            }
            assert_audit_passes(&ours).await;
            db.drop_database().await;
        });
    }
}
