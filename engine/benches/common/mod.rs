//! What the benches share: a fresh database seeded with funded accounts.
#![allow(dead_code)] // each bench uses a part

use sqlx::{Connection, Executor, PgConnection, PgPool};

pub fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn database_url() -> String {
    env("TRANSFER_TESTS_DATABASE_URL", "postgres://transfer_engine:transfer_engine@127.0.0.1:5432/transfer_engine")
}

pub struct BenchDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

/// Starting balance of every seeded account, in minor units.
pub const SEED_BALANCE_MINOR: i64 = 1_000_000_000;

/// A fresh migrated database with `accounts` EUR accounts (owners 1..=accounts),
/// each funded by a real deposit (transfer, two entries, two history rows),
/// so the ledger audit holds from the start.
pub async fn seeded_database(label: &str, accounts: i64) -> BenchDb {
    let name = format!("bench_{label}_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&database_url()).await.expect("PostgreSQL is reachable");
    admin.execute(format!(r#"CREATE DATABASE "{name}""#).as_str()).await.unwrap();
    let url = format!("{}/{name}", database_url().rsplit_once('/').unwrap().0);
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(8).connect(&url).await.unwrap();
    transfer_engine::ledger::migrate(&pool).await.unwrap();
    sqlx::query(
        "WITH sys AS (INSERT INTO accounts (owner_id, currency, balance_minor, floor_minor)
                      VALUES (0, 'EUR', -$1 * $2, -9223372036854775808) RETURNING account_id),
              acc AS (INSERT INTO accounts (owner_id, currency, balance_minor, version)
                      SELECT g, 'EUR', $2, 1 FROM generate_series(1, $1) g RETURNING account_id, owner_id),
              tr AS (INSERT INTO transfers (transfer_id, kind, sender_id, receiver_id, debit_account_id, credit_account_id, currency,
                                            amount_minor, status, status_version, fingerprint, created_at, committed_at)
                     SELECT gen_random_uuid(), 'deposit', 0, acc.owner_id, sys.account_id, acc.account_id, 'EUR', $2, 'completed', 2,
                            sha256(convert_to('seed ' || acc.owner_id, 'UTF8')), now(), now()
                       FROM acc, sys RETURNING transfer_id, debit_account_id, credit_account_id),
              en AS (INSERT INTO ledger_entries (transfer_id, account_id, amount_minor)
                     SELECT transfer_id, debit_account_id, -$2 FROM tr UNION ALL SELECT transfer_id, credit_account_id, $2 FROM tr)
         INSERT INTO transfer_status_history (transfer_id, version, status, at)
         SELECT transfer_id, v, CASE v WHEN 1 THEN 'initiated' ELSE 'completed' END, now() FROM tr, (VALUES (1), (2)) AS x(v)",
    )
    .bind(accounts)
    .bind(SEED_BALANCE_MINOR)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE accounts SET version = 1 WHERE owner_id = 0").execute(&pool).await.unwrap();
    BenchDb { name, url, pool }
}

impl BenchDb {
    pub async fn drop_database(self) {
        self.pool.close().await;
        let mut admin = PgConnection::connect(&database_url()).await.unwrap();
        admin.execute(format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name).as_str()).await.unwrap();
    }
}
