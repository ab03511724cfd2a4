//! The `transfer-engine` command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use transfer_engine::config::Settings;
use transfer_engine::startup::{Application, Role, connect_database_for_maintenance};
use transfer_engine::{cache, cli, ledger, loadgen, telemetry};

#[derive(Parser)]
#[command(version, about = "A money-transfer engine with sandboxed WebAssembly policy plugins.")]
struct Cli {
    /// Optional TOML settings file; `TRANSFER_ENGINE_*` variables override it.
    #[arg(long, env = "TRANSFER_ENGINE_CONFIG_FILE", global = true)]
    settings: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// HTTP API and processor in one process (the usual way to run).
    Run,
    /// HTTP API only.
    Serve,
    /// Processor only.
    Process,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Check the ledger's invariants; exits non-zero if any is broken.
    Audit {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// A file of transfer ids acknowledged with 202 (one per line, as
        /// `loadgen --ids-out` writes): each must have exactly one final status.
        #[arg(long)]
        acknowledged: Option<PathBuf>,
    },
    /// Seed accounts, submit transfers at a chosen rate and distribution, wait
    /// for their final statuses and report rates and latencies.
    Loadgen(Box<loadgen::LoadArgs>),
    /// Manage plugins on a running engine, or test one offline.
    Plugins {
        #[command(flatten)]
        remote: RemoteArgs,
        #[command(subcommand)]
        command: cli::PluginCommand,
    },
    /// List the records the processor kept aside (dead-letter topic and
    /// quarantine), and replay them onto their source topic.
    DeadLetters {
        #[command(subcommand)]
        command: transfer_engine::dead_letters::DeadLetterCommand,
    },
    /// Retention of the status history: list, make, detach and drop its months.
    History {
        #[command(subcommand)]
        command: transfer_engine::history::HistoryCommand,
    },
    /// Follow the events the engine publishes (transfers' status changes).
    Events {
        #[command(subcommand)]
        command: transfer_engine::events::tail::EventsCommand,
    },
    /// Create, list and revoke API clients on a running engine.
    Clients {
        #[command(flatten)]
        remote: RemoteArgs,
        #[command(subcommand)]
        command: cli::ClientCommand,
    },
}

/// The engine to talk to, and the admin token, for the admin commands.
#[derive(clap::Args)]
struct RemoteArgs {
    /// The engine's base URL.
    #[arg(long, env = "TRANSFER_ENGINE_URL", default_value = "http://127.0.0.1:8080", global = true)]
    url: String,
    /// The admin bearer token.
    #[arg(long, env = "TRANSFER_ENGINE_ADMIN_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

impl From<RemoteArgs> for cli::Remote {
    fn from(args: RemoteArgs) -> Self {
        cli::Remote { url: args.url, token: args.token }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Plugins { command: command @ cli::PluginCommand::Replay { .. }, .. } => {
            // The one plugin command that reads the ledger itself, so it takes the engine's settings.
            let settings = Settings::load(cli.settings.as_deref()).context("invalid settings")?;
            telemetry::init(settings.log_format);
            return cli::replay(&settings, command).await;
        }
        Command::Plugins { remote, command } => {
            telemetry::init(transfer_engine::config::LogFormat::Text);
            return cli::run(command, remote.into()).await;
        }
        Command::Clients { remote, command } => {
            telemetry::init(transfer_engine::config::LogFormat::Text);
            return cli::clients(command, remote.into()).await;
        }
        _ => {}
    }
    let settings = Settings::load(cli.settings.as_deref()).context("invalid settings")?;
    telemetry::init(settings.log_format);
    let role = match cli.command {
        Command::Run => Role::All,
        Command::Serve => Role::Api,
        Command::Process => Role::Processor,
        Command::Migrate => {
            let pool = connect_database_for_maintenance(&settings).await?;
            ledger::migrate(&pool).await.context("could not apply migrations")?;
            let made = ledger::Ledger::new(pool)
                .prepare_history_partitions(chrono::Utc::now(), ledger::retention::HISTORY_MONTHS_AHEAD)
                .await
                .context("could not make the status history's coming months")?;
            println!(
                "Migrations applied; status history months made: {}.",
                if made.is_empty() { "none needed".into() } else { made.join(", ") }
            );
            return Ok(());
        }
        Command::Audit { json, acknowledged } => return audit(&settings, json, acknowledged.as_deref()).await,
        Command::Loadgen(args) => return loadgen::run(&settings, *args).await.map(drop),
        Command::DeadLetters { command } => return transfer_engine::dead_letters::run(&settings, command).await,
        Command::History { command } => return transfer_engine::history::run(&settings, command).await,
        Command::Events { command } => return transfer_engine::events::tail::run(&settings, command).await,
        Command::Plugins { .. } | Command::Clients { .. } => unreachable!("handled above"),
    };
    let app = Application::build(settings, role).await?;
    app.run_until_stopped(shutdown_signal()).await
}

async fn audit(settings: &Settings, json: bool, acknowledged: Option<&std::path::Path>) -> anyhow::Result<()> {
    // The audit reads whole tables: a statement time limit would fail it on a large ledger.
    let pool = connect_database_for_maintenance(settings).await?;
    let ledger = ledger::Ledger::new(pool);
    let mut report = ledger.audit().await?;
    if let Some(path) = acknowledged {
        let ids = loadgen::read_ids(path)?;
        report.checks.push(ledger.audit_acknowledged(&ids).await?);
        report.acknowledged = Some(ids.len() as i64);
    }
    // Redis is a cache: when it is away there is nothing to compare, which is not a violation.
    let cache = cache::Cache::from_settings(settings)?;
    match ledger.audit_cache(&cache).await {
        Ok(checks) => report.checks.extend(checks),
        Err(ledger::audit::CacheAuditError::Cache(e)) => report.skipped.push(format!("Redis comparison skipped: {e}")),
        Err(ledger::audit::CacheAuditError::Ledger(e)) => return Err(e.into()),
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("Audited {} transfers over {} accounts.", report.transfers, report.accounts);
        if let Some(n) = report.acknowledged {
            println!("Checked {n} acknowledged transfer ids.");
        }
        for check in &report.checks {
            let verdict = if check.violations.is_empty() { "ok" } else { "VIOLATED" };
            println!("  {verdict:8} {}", check.name);
            for v in &check.violations {
                println!("           {v}");
            }
        }
        for note in &report.skipped {
            println!("  skipped  {note}");
        }
    }
    anyhow::ensure!(report.passed(), "the ledger audit found violations");
    Ok(())
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
