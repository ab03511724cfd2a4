//! `transfer-engine history list|prepare|detach|drop`: retention of the
//! status history, one month at a time (README, "Retention"). The engine
//! makes the coming months by itself; an operator detaches the months past
//! retention, archives each (`pg_dump -t NAME`), then drops it.
//!
//! Needs the database only (the engine's own settings), not a running engine.

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use clap::Subcommand;

use crate::config::Settings;
use crate::ledger::Ledger;
use crate::ledger::retention::{HISTORY_MONTHS_AHEAD, HistoryPartition};
use crate::startup::connect_database_for_maintenance;

#[derive(Subcommand)]
pub enum HistoryCommand {
    /// List the status history's months, oldest first, with their state and size.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Make this month's partition and the coming ones (the engine also does this hourly).
    Prepare {
        #[arg(long, default_value_t = HISTORY_MONTHS_AHEAD)]
        months_ahead: u32,
    },
    /// Detach every month that ends on or before a date (at least 31 days ago),
    /// oldest first; each becomes a plain table to archive and drop.
    Detach {
        /// A date, `YYYY-MM-DD` (midnight UTC).
        #[arg(long)]
        before: NaiveDate,
    },
    /// Drop the table of a detached month (archive it first).
    Drop { name: String },
}

pub async fn run(settings: &Settings, command: HistoryCommand) -> anyhow::Result<()> {
    let ledger = Ledger::new(connect_database_for_maintenance(settings).await?);
    match command {
        HistoryCommand::List { json } => {
            let partitions = ledger.history_partitions().await?;
            let unpartitioned = ledger.history_rows_unpartitioned().await?;
            if json {
                let report = serde_json::json!({"partitions": partitions, "default_partition_rows": unpartitioned});
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            println!("{:<36} {:<12} {:<12} {:<9} {:>12} {:>12}", "name", "from", "to", "state", "rows (est.)", "bytes");
            for p in &partitions {
                println!(
                    "{:<36} {:<12} {:<12} {:<9} {:>12} {:>12}",
                    p.name,
                    p.from_at.map_or_else(|| "-".to_owned(), |at| at.date_naive().to_string()),
                    p.to_at.date_naive().to_string(),
                    state(p),
                    p.rows_estimate.map_or_else(|| "-".to_owned(), |n| n.max(0).to_string()),
                    p.bytes.map_or_else(|| "-".to_owned(), |n| n.to_string()),
                );
            }
            if unpartitioned > 0 {
                println!(
                    "{unpartitioned} rows are in the default partition (dates no month covers); \
                     `transfer-engine history prepare` moves them once their month is made."
                );
            }
        }
        HistoryCommand::Prepare { months_ahead } => {
            let made = ledger.prepare_history_partitions(Utc::now(), months_ahead).await?;
            if made.is_empty() {
                println!("Every month up to {months_ahead} ahead exists already.");
            }
            for name in made {
                println!("Made {name}.");
            }
        }
        HistoryCommand::Detach { before } => {
            let before: DateTime<Utc> = before.and_hms_opt(0, 0, 0).context("midnight exists")?.and_utc();
            let detached = ledger.detach_history(before, Utc::now()).await?;
            if detached.is_empty() {
                println!("No attached month ends on or before {before}.");
            }
            for p in detached {
                // The URL holds the password: the command names the variable, not its value.
                println!(
                    "Detached {name}. Archive it, then drop it:\n  \
                     pg_dump --table={name} --format=custom --file={name}.dump \"$TRANSFER_ENGINE_DATABASE_URL\"\n  \
                     transfer-engine history drop {name}",
                    name = p.name
                );
            }
        }
        HistoryCommand::Drop { name } => {
            ledger.drop_detached_history(&name).await?;
            println!("Dropped {name}.");
        }
    }
    Ok(())
}

fn state(p: &HistoryPartition) -> &'static str {
    match (p.detached_at, p.dropped_at) {
        (_, Some(_)) => "dropped",
        (Some(_), None) => "detached",
        (None, None) => "attached",
    }
}
