//! commit_batch throughput against a plain-SQL baseline doing the same writes.
//!
//! `cargo bench --bench ledger` (PostgreSQL from TRANSFER_TESTS_DATABASE_URL
//! or the local default). For batch sizes 1, 10, 100 and 500 over 10,000
//! accounts it commits uniformly random transfers for a fixed time through
//! (a) `Ledger::commit_batch` and (b) hand-written set-based SQL that writes
//! the same rows (transfers, two entries each, two history rows each, the
//! balance updates) in one transaction, without per-transfer rules. Both run
//! on a fresh database of their own.

use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::PgPool;
use transfer_engine::domain::{Amount, Currency, OwnerId, Requested, Submission, TransferId, TransferKind};
use transfer_engine::ledger::{CommitItem, Ledger};

mod common;

const ACCOUNTS: i64 = 10_000;
const BATCH_SIZES: [usize; 4] = [1, 10, 100, 500];
const RUN_SECONDS: u64 = 8;

/// A small deterministic generator, so both paths see the same kind of load.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, bound: i64) -> i64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % bound as u64) as i64
    }
}

fn batch(rng: &mut Lcg, size: usize, eur: Currency) -> Vec<CommitItem> {
    (0..size)
        .map(|_| {
            let from = 1 + rng.next(ACCOUNTS);
            let to = 1 + (from + rng.next(ACCOUNTS - 1)) % ACCOUNTS;
            let submission = Submission {
                id: TransferId::generate(),
                kind: TransferKind::Transfer,
                sender: OwnerId::new(from).unwrap(),
                receiver: OwnerId::new(to).unwrap(),
                currency: eur,
                requested: Requested::Amount(Amount::from_minor(1 + rng.next(10_000)).unwrap()),
                description: None,
                submitted_at: Utc::now(),
                client_id: None,
                metadata: Default::default(),
            };
            CommitItem::apply_as_submitted(submission).unwrap()
        })
        .collect()
}

/// The baseline: the same rows written by set-based SQL, balances updated
/// from aggregated deltas, no per-transfer checks in between.
async fn plain_sql(pool: &PgPool, items: &[CommitItem]) {
    let ids: Vec<uuid::Uuid> = items.iter().map(|i| i.submission.id.0).collect();
    let senders: Vec<i64> = items.iter().map(|i| i.submission.sender.get()).collect();
    let receivers: Vec<i64> = items.iter().map(|i| i.submission.receiver.get()).collect();
    let amounts: Vec<i64> = items.iter().map(|i| i.submission.amount().unwrap().minor()).collect();
    let fingerprints: Vec<Vec<u8>> = items.iter().map(|i| i.submission.fingerprint().to_vec()).collect();
    let now = Utc::now();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "WITH t AS (SELECT * FROM UNNEST($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bytea[]) AS t(id, s, r, a, f)),
              d AS (SELECT s AS owner, -a AS delta FROM t UNION ALL SELECT r, a FROM t),
              agg AS (SELECT owner, sum(delta)::bigint AS delta, count(*) AS n FROM d GROUP BY owner),
              upd AS (UPDATE accounts x SET balance_minor = x.balance_minor + agg.delta, version = x.version + agg.n
                        FROM agg WHERE x.owner_id = agg.owner AND x.currency = 'EUR' RETURNING x.account_id, x.owner_id),
              ins AS (INSERT INTO transfers (transfer_id, kind, sender_id, receiver_id, debit_account_id, credit_account_id, currency,
                                             amount_minor, status, status_version, fingerprint, created_at, committed_at)
                      SELECT t.id, 'transfer', t.s, t.r, ds.account_id, cr.account_id, 'EUR', t.a, 'completed', 2, t.f, $6, $6
                        FROM t JOIN upd ds ON ds.owner_id = t.s JOIN upd cr ON cr.owner_id = t.r RETURNING transfer_id, debit_account_id, credit_account_id, amount_minor)
         INSERT INTO ledger_entries (transfer_id, account_id, amount_minor)
         SELECT transfer_id, debit_account_id, -amount_minor FROM ins UNION ALL SELECT transfer_id, credit_account_id, amount_minor FROM ins",
    )
    .bind(&ids)
    .bind(&senders)
    .bind(&receivers)
    .bind(&amounts)
    .bind(&fingerprints)
    .bind(now)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO transfer_status_history (transfer_id, version, status, at)
         SELECT id, 1, 'initiated', $2 FROM UNNEST($1::uuid[]) id UNION ALL SELECT id, 2, 'completed', $2 FROM UNNEST($1::uuid[]) id",
    )
    .bind(&ids)
    .bind(now)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

/// Transfers per second for one path at one batch size.
async fn measure(label: &str, size: usize, commit_rust: bool, seconds: u64) -> f64 {
    let db = common::seeded_database(label, ACCOUNTS).await;
    let pool = db.pool.clone();
    let ledger = Ledger::new(pool.clone());
    let eur = Currency::parse("EUR").unwrap();
    let mut rng = Lcg(42);
    // Warm up connections and plans.
    for _ in 0..3 {
        let items = batch(&mut rng, size, eur);
        if commit_rust {
            ledger.commit_batch(&items).await.unwrap();
        } else {
            plain_sql(&pool, &items).await;
        }
    }
    let mut committed = 0usize;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        let items = batch(&mut rng, size, eur);
        if commit_rust {
            ledger.commit_batch(&items).await.unwrap();
        } else {
            plain_sql(&pool, &items).await;
        }
        committed += size;
    }
    let rate = committed as f64 / started.elapsed().as_secs_f64();
    let report = ledger.audit().await.unwrap();
    assert!(report.passed(), "{label}: the ledger audit failed: {report:#?}");
    db.drop_database().await;
    rate
}

/// `-- --batch N` runs one batch size; `--plain-only` skips commit_batch;
/// `--seconds N` sets the time per cell; `--json PATH` writes the rows (for scripts/bench).
struct Args {
    sizes: Vec<usize>,
    plain_only: bool,
    seconds: u64,
    json: Option<String>,
}

fn args() -> Args {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    Args {
        sizes: value("--batch").map_or(BATCH_SIZES.to_vec(), |b| vec![b.parse().expect("--batch takes a number")]),
        plain_only: args.iter().any(|a| a == "--plain-only"),
        seconds: value("--seconds").map_or(RUN_SECONDS, |s| s.parse().expect("--seconds takes a number")),
        json: value("--json"),
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    println!("commit_batch vs plain SQL, {ACCOUNTS} accounts, uniform, {} s per cell, one committer", args.seconds);
    println!("{:>6} | {:>16} | {:>16} | {:>6}", "batch", "plain SQL tr/s", "commit_batch tr/s", "ratio");
    let mut rows = Vec::new();
    for size in args.sizes {
        let baseline = measure("sql", size, false, args.seconds).await;
        let ours = if args.plain_only { None } else { Some(measure("rust", size, true, args.seconds).await) };
        match ours {
            Some(ours) => println!("{size:>6} | {baseline:>16.0} | {ours:>16.0} | {:>6.2}", ours / baseline),
            None => println!("{size:>6} | {baseline:>16.0} | {:>16} | {:>6}", "-", "-"),
        }
        rows.push(serde_json::json!({"batch": size, "plain_sql_per_s": baseline, "commit_batch_per_s": ours}));
    }
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&rows).unwrap()).unwrap();
    }
}
