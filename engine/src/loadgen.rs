//! `transfer-engine loadgen`: seeds accounts with real deposits, submits
//! transfers over HTTP or straight onto the topic with a chosen distribution
//! and rate, waits until every acknowledged transfer has a final status, and
//! reports rates, outcomes and latencies.
//!
//! It runs beside an engine and reads the engine's own settings: the database
//! (to seed accounts through the ledger and to read outcomes: the engine's
//! recorded timestamps are the truth for submit-to-final latency), Redis (to
//! warm the balance cache after seeding, as the deposit API does) and, for
//! `--via topic`, the brokers and topic.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::auth::{ClientStore, NewClient, Scope};
use crate::cache::Cache;
use crate::config::Settings;
use crate::domain::{Amount, ClientId, Currency, OwnerId, Requested, Submission, TransferId, TransferKind, format_minor};
use crate::kafka::{self, TransferRecord};
use crate::ledger::{CommitItem, Ledger};

/// Deposits committed per transaction while seeding.
const SEED_BATCH_SIZE: usize = 500;
/// How often outcomes are polled while waiting.
const POLL_INTERVAL_MS: u64 = 200;
/// Rows read per outcome poll.
const POLL_ROWS_MAX: i64 = 50_000;
/// Rows behind the highest `seq` seen that every poll reads again: a commit
/// can become visible after a later-numbered one (concurrent processors), and
/// such gaps are bounded by the rows in flight (a few batches of 500).
const POLL_TRAILING_ROWS: i64 = 5_000;
/// Below this many outstanding ids, they are also looked up by id.
const POLL_BY_ID_BELOW: usize = 5_000;
/// How long one HTTP submit may take before it counts as a timeout.
const HTTP_TIMEOUT_MS: u64 = 30_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// `POST /v1/transfers` on a running engine (the client's path).
    Http,
    /// Produce records straight onto the transfers topic (the processor alone).
    Topic,
}

/// Who sends: how debit accounts are picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Spread {
    /// Every account equally likely.
    Uniform,
    /// Zipf-skewed: a few accounts send most transfers (`--zipf-exponent`).
    Zipf,
    /// Every transfer debits the first account.
    Hot,
}

/// `Parser` as well as `Args`: the subcommand's flags, and tests build them with `LoadArgs::parse_from`.
#[derive(clap::Parser, Clone, Debug, Serialize)]
pub struct LoadArgs {
    /// Submit over HTTP or straight onto the topic.
    #[arg(long, value_enum, default_value_t = Via::Http)]
    pub via: Via,
    /// The engine's base URL (for `--via http`).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Accounts to seed and use, per currency.
    #[arg(long, default_value_t = 1_000)]
    pub accounts: u32,
    /// Owner id of the first account; owners are consecutive from here.
    #[arg(long, default_value_t = 1)]
    pub owner_first: i64,
    /// Currencies (ISO 4217), comma-separated; transfers are spread over them.
    #[arg(long, value_delimiter = ',', default_value = "EUR")]
    pub currencies: Vec<String>,
    /// Deposited into every account before the run, in minor units.
    #[arg(long, default_value_t = 1_000_000_000)]
    pub balance_minor: i64,
    /// Use the accounts as they are: no opening, no deposits.
    #[arg(long)]
    pub no_seed: bool,
    /// Transfers to submit.
    #[arg(long, default_value_t = 10_000)]
    pub transfers: u64,
    /// How debit accounts are picked; credit accounts are always uniform.
    #[arg(long, value_enum, default_value_t = Spread::Uniform)]
    pub distribution: Spread,
    /// Skew of `--distribution zipf` (larger is more skewed).
    #[arg(long, default_value_t = 1.1)]
    pub zipf_exponent: f64,
    /// Amounts are uniform in 1..=this, in minor units.
    #[arg(long, default_value_t = 1_000)]
    pub amount_max_minor: i64,
    /// Submits per second; 0 submits as fast as `--concurrency` allows.
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
    /// Submits in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seed of the random choices, so a run can be repeated.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Write every transfer id acknowledged with 202, one per line (for `audit --acknowledged`).
    #[arg(long)]
    pub ids_out: Option<PathBuf>,
    /// Create this file once every transfer has been submitted (lets a script start processors after a pre-load).
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Give up waiting for final statuses after this long.
    #[arg(long, default_value_t = 600)]
    pub wait_timeout_s: u64,
    /// No progress bars (logs and CI).
    #[arg(long)]
    pub quiet: bool,
    /// The API key to submit with (`--via http`). Absent: loadgen creates a
    /// client of its own with `transfers:write` (it has the database) and
    /// revokes it when the run ends, so it authenticates like any client.
    #[arg(long, env = "TRANSFER_ENGINE_API_KEY", hide_env_values = true)]
    #[serde(skip)]
    pub api_key: Option<String>,
}

/// One planned transfer.
#[derive(Clone, Debug)]
struct Planned {
    id: TransferId,
    sender: OwnerId,
    receiver: OwnerId,
    currency: Currency,
    amount: Amount,
}

/// What one submit got back.
struct Submitted {
    id: TransferId,
    /// `ACCEPTED` for a 202 (or a broker acknowledgement), else the status and
    /// error code, e.g. "503 broker_unavailable".
    outcome: String,
    latency_us: u64,
}

const ACCEPTED: &str = "accepted";

impl Submitted {
    fn accepted(&self) -> bool {
        self.outcome == ACCEPTED
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of durations in microseconds (sorts its input).
    pub fn of_us(samples: &mut [u64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| {
            // Nearest rank: the smallest sample with at least q of all samples at or below it.
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            samples[rank - 1] as f64 / 1_000.0
        };
        Some(Self { p50_ms: at(0.50), p90_ms: at(0.90), p99_ms: at(0.99), max_ms: *samples.last().expect("not empty") as f64 / 1_000.0 })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub args: LoadArgs,
    pub submitted: u64,
    pub acknowledged: u64,
    /// Submits not acknowledged, by "status code" (HTTP) or error (topic).
    pub not_acknowledged: BTreeMap<String, u64>,
    pub submit_seconds: f64,
    pub submitted_per_s: f64,
    /// Acknowledged transfers that reached a final status.
    pub final_count: u64,
    /// Final outcomes by status, and by status and reason code.
    pub outcomes: BTreeMap<String, u64>,
    /// Final transfers over the span from the first commit to the last (the processor's rate).
    pub committed_per_s: f64,
    /// The same over the middle 80% of commits (10th to 90th percentile of
    /// commit times): the steady rate, without start-up (group join,
    /// rebalances at start) or the tail.
    pub committed_steady_per_s: f64,
    /// Final transfers over the span from the first submit to the last commit.
    pub end_to_end_per_s: f64,
    /// Client-measured time for a submit to be answered (HTTP) or acknowledged by the broker (topic).
    pub submit_latency: Option<Percentiles>,
    /// From the engine's recorded `created_at` (accepted) to `committed_at` (final).
    pub submit_to_final_latency: Option<Percentiles>,
    /// Acknowledged transfers with no final status when waiting gave up: must be 0.
    pub missing: u64,
}

/// Runs the load and prints the report. Errors if an acknowledged transfer never became final.
pub async fn run(settings: &Settings, args: LoadArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.accounts >= 2, "--accounts must be at least 2");
    anyhow::ensure!(args.amount_max_minor >= 1, "--amount-max-minor must be at least 1");
    anyhow::ensure!(args.concurrency >= 1, "--concurrency must be at least 1");
    let currencies = args
        .currencies
        .iter()
        .map(|c| Currency::parse(c).with_context(|| format!("--currencies: {c}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let owners = (0..i64::from(args.accounts))
        .map(|i| OwnerId::new(args.owner_first + i).context("--owner-first must make every owner id positive"))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let pool = crate::startup::connect_database(settings).await?;
    let ledger = crate::startup::ledger_for(pool.clone(), settings);
    let cache = Cache::from_settings(settings)?;
    if !args.no_seed {
        seed(&ledger, &cache, &owners, &currencies, args.balance_minor, args.quiet).await?;
    }
    let plan = plan(&args, &owners, &currencies)?;
    // Outcomes are read from here on, by insertion order.
    let (seq_start,): (i64,) = sqlx::query_as("SELECT coalesce(max(seq), 0) FROM transfers").fetch_one(&pool).await?;

    let started_at = Utc::now();
    let started = Instant::now();
    let submitted = match args.via {
        Via::Http => {
            let clients = ClientStore::new(pool.clone(), Duration::from_secs(1));
            let (key, own) = match &args.api_key {
                Some(key) => (key.clone(), None),
                None => {
                    let new = NewClient::new("loadgen", &[Scope::TransfersWrite.as_str().to_owned()], None)?;
                    let (client, key) = clients.create(&new).await.context("could not create loadgen's API client")?;
                    (key, Some(ClientId(client.client_id)))
                }
            };
            let submitted = submit_http(&args, &key, plan).await;
            if let Some(id) = own {
                clients.revoke(id).await.context("could not revoke loadgen's API client")?;
            }
            submitted?
        }
        Via::Topic => submit_topic(settings, &args, plan).await?,
    };
    let submit_seconds = started.elapsed().as_secs_f64();
    if let Some(path) = &args.ready_file {
        std::fs::write(path, b"").with_context(|| format!("could not create {}", path.display()))?;
    }

    let acknowledged: HashSet<TransferId> = submitted.iter().filter(|s| s.accepted()).map(|s| s.id).collect();
    if let Some(path) = &args.ids_out {
        let ids: String = acknowledged.iter().map(|id| format!("{id}\n")).collect();
        std::fs::write(path, ids).with_context(|| format!("could not write {}", path.display()))?;
    }

    let finals = wait_for_finals(&pool, seq_start, acknowledged, Duration::from_secs(args.wait_timeout_s), args.quiet).await?;
    let report = report(args, &submitted, submit_seconds, &finals, started_at);
    print_report(&report);
    if let Some(path) = &report.args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?).with_context(|| format!("could not write {}", path.display()))?;
    }
    if report.missing > 0 {
        bail!("{} acknowledged transfers have no final status after {} s", report.missing, report.args.wait_timeout_s);
    }
    Ok(report)
}

/// Reads a file of transfer ids, one per line, as `--ids-out` writes it.
pub fn read_ids(path: &std::path::Path) -> anyhow::Result<Vec<TransferId>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().map(TransferId).with_context(|| format!("{}: not a UUID: {l}", path.display())))
        .collect()
}

/// Opens the accounts and funds each with a real deposit from the currency's
/// system account (so the ledger audit holds), in batches through `commit_batch`.
async fn seed(
    ledger: &Ledger,
    cache: &Cache,
    owners: &[OwnerId],
    currencies: &[Currency],
    balance_minor: i64,
    quiet: bool,
) -> anyhow::Result<()> {
    let amount = Amount::from_minor(balance_minor).context("--balance-minor must be positive")?;
    // A fresh reference per run, so a second run tops the accounts up instead of replaying the first deposits.
    let run = uuid::Uuid::new_v4().simple().to_string();
    let bar = progress(quiet, (owners.len() * currencies.len()) as u64, "seeding");
    for &currency in currencies {
        ledger.open_accounts(owners, currency).await?;
        for chunk in owners.chunks(SEED_BATCH_SIZE) {
            let items: Vec<CommitItem> = chunk
                .iter()
                .map(|&owner| {
                    let reference = format!("loadgen {run} {owner} {currency}");
                    CommitItem::system_move(TransferKind::Deposit, owner, currency, amount, &reference)
                })
                .collect();
            let result = ledger.commit_batch(&items).await?;
            if let Some(refused) = result.outcomes.iter().find(|o| o.reason.is_some()) {
                bail!("a seeding deposit was refused: {:?}", refused.reason);
            }
            // Best effort, as in the deposit API: the pre-check then sees the new balances.
            if let Err(e) = cache.put_accounts(&result.balances).await {
                crate::cache::warn_unavailable(&e, "balance update");
            }
            bar.inc(chunk.len() as u64);
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// The transfers to submit, drawn up front so submitting does nothing but submit.
fn plan(args: &LoadArgs, owners: &[OwnerId], currencies: &[Currency]) -> anyhow::Result<Vec<Planned>> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    // Account choice only: floats never touch an amount.
    let zipf = match args.distribution {
        Spread::Zipf => Some(
            rand_distr::Zipf::new(owners.len() as u64, args.zipf_exponent)
                .map_err(|e| anyhow::anyhow!("--zipf-exponent {}: {e}", args.zipf_exponent))?,
        ),
        _ => None,
    };
    let n = owners.len();
    let plan = (0..args.transfers)
        .map(|_| {
            let from = match (&zipf, args.distribution) {
                (Some(z), _) => (rng.sample(z) as usize).clamp(1, n) - 1,
                (None, Spread::Hot) => 0,
                (None, _) => rng.gen_range(0..n),
            };
            // Any account but the sender, uniformly.
            let to = (from + rng.gen_range(1..n)) % n;
            Planned {
                id: TransferId::generate(),
                sender: owners[from],
                receiver: owners[to],
                currency: currencies[rng.gen_range(0..currencies.len())],
                amount: Amount::from_minor(rng.gen_range(1..=args.amount_max_minor)).expect("at least 1"),
            }
        })
        .collect();
    Ok(plan)
}

/// When the i-th submit is due, for a fixed rate.
fn due(started: tokio::time::Instant, i: usize, rate: u32) -> Option<tokio::time::Instant> {
    (rate > 0).then(|| started + Duration::from_secs_f64(i as f64 / f64::from(rate)))
}

async fn submit_http(args: &LoadArgs, key: &str, plan: Vec<Planned>) -> anyhow::Result<Vec<Submitted>> {
    let authorization =
        reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).context("the API key is not a valid header value")?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(HTTP_TIMEOUT_MS))
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .context("could not build the HTTP client")?;
    let endpoint = Arc::new(format!("{}/v1/transfers", args.url.trim_end_matches('/')));
    let bar = progress(args.quiet, plan.len() as u64, "submitting");
    let started = tokio::time::Instant::now();
    let rate = args.rate;
    let results = futures::stream::iter(plan.into_iter().enumerate())
        .map(|(i, t)| {
            let client = client.clone();
            let endpoint = endpoint.clone();
            let bar = bar.clone();
            let authorization = authorization.clone();
            async move {
                if let Some(at) = due(started, i, rate) {
                    tokio::time::sleep_until(at).await;
                }
                let body = serde_json::json!({
                    "transfer_id": t.id.0,
                    "sender_id": t.sender.get(),
                    "receiver_id": t.receiver.get(),
                    "currency": t.currency.code(),
                    "amount": format_minor(t.amount.minor(), t.currency.exponent()),
                });
                let sent = Instant::now();
                let outcome =
                    match client.post(endpoint.as_str()).header(reqwest::header::AUTHORIZATION, authorization).json(&body).send().await {
                        Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => ACCEPTED.to_owned(),
                        Ok(r) => {
                            let status = r.status().as_u16();
                            let code =
                                r.json::<serde_json::Value>().await.ok().and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
                            format!("{status} {}", code.as_deref().unwrap_or("no_code"))
                        }
                        Err(e) if e.is_timeout() => "timeout".to_owned(),
                        Err(_) => "connection_error".to_owned(),
                    };
                bar.inc(1);
                Submitted { id: t.id, outcome, latency_us: sent.elapsed().as_micros() as u64 }
            }
        })
        .buffer_unordered(args.concurrency)
        .collect::<Vec<_>>()
        .await;
    bar.finish_and_clear();
    Ok(results)
}

async fn submit_topic(settings: &Settings, args: &LoadArgs, plan: Vec<Planned>) -> anyhow::Result<Vec<Submitted>> {
    kafka::ensure_engine_topics(settings).await.context("could not reach the broker to create the topics")?;
    // A pre-load is about throughput: a 1 ms linger batches the records the
    // processor scenarios then fetch, as in the runs BENCHMARKS.md compares with.
    let producer: rdkafka::producer::FutureProducer =
        kafka::producer_config(&settings.kafka_brokers, settings.publish_timeout_ms).set("linger.ms", "1").create()?;
    let bar = progress(args.quiet, plan.len() as u64, "producing");
    let started = tokio::time::Instant::now();
    let rate = args.rate;
    let topic = settings.topic.as_str();
    let results = futures::stream::iter(plan.into_iter().enumerate())
        .map(|(i, t)| {
            let producer = &producer;
            let bar = bar.clone();
            async move {
                if let Some(at) = due(started, i, rate) {
                    tokio::time::sleep_until(at).await;
                }
                let submission = Submission {
                    id: t.id,
                    kind: TransferKind::Transfer,
                    sender: t.sender,
                    receiver: t.receiver,
                    currency: t.currency,
                    requested: Requested::Amount(t.amount),
                    description: None,
                    submitted_at: Utc::now(),
                    client_id: None,
                    metadata: crate::domain::Metadata::default(),
                };
                let payload = serde_json::to_vec(&TransferRecord::from_submission(&submission)).expect("a record serializes");
                let key = kafka::record_key(submission.sender, submission.currency);
                let sent = Instant::now();
                let outcome = match kafka::publish(producer, topic, &key, &payload, None).await {
                    Ok(()) => ACCEPTED.to_owned(),
                    Err(e) => format!("publish_failed {e}"),
                };
                bar.inc(1);
                Submitted { id: t.id, outcome, latency_us: sent.elapsed().as_micros() as u64 }
            }
        })
        // librdkafka batches internally; many records in flight is what makes producing fast.
        .buffer_unordered(args.concurrency.max(1_024))
        .collect::<Vec<_>>()
        .await;
    bar.finish_and_clear();
    Ok(results)
}

/// A final transfer as the engine recorded it.
struct Final {
    status: String,
    reason_code: Option<String>,
    created_at: DateTime<Utc>,
    committed_at: DateTime<Utc>,
}

type OutcomeRow = (uuid::Uuid, String, Option<String>, DateTime<Utc>, Option<DateTime<Utc>>, i64);

/// Reads outcomes until every acknowledged id is final or `timeout` passes.
/// New rows are read by insertion order (`seq`), which is cheap; but two
/// concurrent transactions can become visible out of `seq` order, so each poll
/// re-reads a trailing window, and the last few thousand outstanding ids are
/// also looked up by id.
async fn wait_for_finals(
    pool: &sqlx::PgPool,
    seq_start: i64,
    mut pending: HashSet<TransferId>,
    timeout: Duration,
    quiet: bool,
) -> anyhow::Result<HashMap<TransferId, Final>> {
    let bar = progress(quiet, pending.len() as u64, "waiting for final statuses");
    let deadline = Instant::now() + timeout;
    let mut finals = HashMap::with_capacity(pending.len());
    let mut seq_seen = seq_start;
    let take = |rows: Vec<OutcomeRow>, finals: &mut HashMap<TransferId, Final>, pending: &mut HashSet<TransferId>| {
        for (id, status, reason_code, created_at, committed_at, _) in rows {
            let id = TransferId(id);
            if let Some(committed_at) = committed_at.filter(|_| status != "initiated")
                && pending.remove(&id)
            {
                finals.insert(id, Final { status, reason_code, created_at, committed_at });
                bar.inc(1);
            }
        }
    };
    while !pending.is_empty() && Instant::now() < deadline {
        let rows: Vec<OutcomeRow> = sqlx::query_as(
            "SELECT transfer_id, status, reason_code, created_at, committed_at, seq FROM transfers
              WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind((seq_seen - POLL_TRAILING_ROWS).max(seq_start))
        .bind(POLL_ROWS_MAX)
        .fetch_all(pool)
        .await?;
        let full = rows.len() as i64 == POLL_ROWS_MAX;
        seq_seen = rows.last().map_or(seq_seen, |r| r.5.max(seq_seen));
        take(rows, &mut finals, &mut pending);
        if !pending.is_empty() && pending.len() < POLL_BY_ID_BELOW {
            let ids: Vec<uuid::Uuid> = pending.iter().map(|id| id.0).collect();
            let rows: Vec<OutcomeRow> = sqlx::query_as(
                "SELECT transfer_id, status, reason_code, created_at, committed_at, seq FROM transfers WHERE transfer_id = ANY($1)",
            )
            .bind(&ids)
            .fetch_all(pool)
            .await?;
            take(rows, &mut finals, &mut pending);
        }
        if !full && !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
    }
    bar.finish_and_clear();
    Ok(finals)
}

fn report(
    args: LoadArgs,
    submitted: &[Submitted],
    submit_seconds: f64,
    finals: &HashMap<TransferId, Final>,
    started_at: DateTime<Utc>,
) -> Report {
    let mut not_acknowledged = BTreeMap::new();
    for s in submitted.iter().filter(|s| !s.accepted()) {
        *not_acknowledged.entry(s.outcome.clone()).or_insert(0) += 1;
    }
    let acknowledged = submitted.iter().filter(|s| s.accepted()).count();
    let mut submit_us: Vec<u64> = submitted.iter().map(|s| s.latency_us).collect();
    let mut outcomes = BTreeMap::new();
    let mut to_final_us = Vec::with_capacity(finals.len());
    for f in finals.values() {
        *outcomes.entry(f.status.clone()).or_insert(0) += 1;
        if let Some(code) = &f.reason_code {
            *outcomes.entry(format!("{} {code}", f.status)).or_insert(0) += 1;
        }
        to_final_us.push((f.committed_at - f.created_at).num_microseconds().unwrap_or(i64::MAX).max(0) as u64);
    }
    let mut commit_times: Vec<DateTime<Utc>> = finals.values().map(|f| f.committed_at).collect();
    commit_times.sort_unstable();
    let first_commit = commit_times.first().copied();
    let last_commit = commit_times.last().copied();
    let (tenth, ninetieth) = (commit_times.len() / 10, commit_times.len() * 9 / 10);
    let per_s = |n: usize, from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>| match (from, to) {
        (Some(from), Some(to)) if to > from => n as f64 / ((to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6),
        _ => 0.0,
    };
    Report {
        submitted: submitted.len() as u64,
        acknowledged: acknowledged as u64,
        not_acknowledged,
        submit_seconds,
        submitted_per_s: if submit_seconds > 0.0 { submitted.len() as f64 / submit_seconds } else { 0.0 },
        final_count: finals.len() as u64,
        outcomes,
        committed_per_s: per_s(finals.len(), first_commit, last_commit),
        committed_steady_per_s: per_s(ninetieth - tenth, commit_times.get(tenth).copied(), commit_times.get(ninetieth).copied()),
        end_to_end_per_s: per_s(finals.len(), Some(started_at), last_commit),
        submit_latency: Percentiles::of_us(&mut submit_us),
        submit_to_final_latency: Percentiles::of_us(&mut to_final_us),
        missing: (acknowledged - finals.len()) as u64,
        args,
    }
}

fn print_report(r: &Report) {
    let a = &r.args;
    println!(
        "loadgen: {} transfers via {:?}, {} accounts x {}, {:?}, rate {}",
        r.submitted,
        a.via,
        a.accounts,
        a.currencies.join(","),
        a.distribution,
        if a.rate == 0 { "max".to_owned() } else { format!("{}/s", a.rate) }
    );
    println!("  submitted      {:>10.0}/s  ({} in {:.1} s)", r.submitted_per_s, r.submitted, r.submit_seconds);
    println!("  acknowledged   {:>10}", r.acknowledged);
    for (outcome, n) in &r.not_acknowledged {
        println!("    not acknowledged: {outcome}: {n}");
    }
    println!("  final          {:>10}  (missing: {})", r.final_count, r.missing);
    for (outcome, n) in &r.outcomes {
        println!("    {outcome}: {n}");
    }
    println!("  committed      {:>10.0}/s  (first commit to last)", r.committed_per_s);
    println!("  steady         {:>10.0}/s  (10th to 90th percentile of commits)", r.committed_steady_per_s);
    println!("  end to end     {:>10.0}/s  (first submit to last commit)", r.end_to_end_per_s);
    let line = |name: &str, p: &Option<Percentiles>| {
        if let Some(p) = p {
            println!("  {name:<15}p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms", p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms);
        }
    };
    line("submit", &r.submit_latency);
    line("submit->final", &r.submit_to_final_latency);
}

fn progress(quiet: bool, total: u64, what: &'static str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg:>26} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank_in_milliseconds() {
        let mut samples: Vec<u64> = (1..=100).map(|ms| ms * 1_000).collect();
        let p = Percentiles::of_us(&mut samples).unwrap();
        assert_eq!(p, Percentiles { p50_ms: 50.0, p90_ms: 90.0, p99_ms: 99.0, max_ms: 100.0 });
        assert_eq!(Percentiles::of_us(&mut [7_000]).unwrap().p99_ms, 7.0);
        assert!(Percentiles::of_us(&mut []).is_none());
    }

    fn args(distribution: Spread) -> LoadArgs {
        use clap::Parser;
        let mut a = LoadArgs::parse_from(["loadgen", "--accounts", "50", "--transfers", "2000"]);
        a.distribution = distribution;
        a
    }

    fn owners(n: i64) -> Vec<OwnerId> {
        (1..=n).map(|i| OwnerId::new(i).unwrap()).collect()
    }

    #[test]
    fn a_plan_never_sends_to_the_sender_and_stays_within_the_amount_bound() {
        let eur = Currency::parse("EUR").unwrap();
        for spread in [Spread::Uniform, Spread::Zipf, Spread::Hot] {
            let plan = plan(&args(spread), &owners(50), &[eur]).unwrap();
            assert_eq!(plan.len(), 2_000);
            assert!(plan.iter().all(|t| t.sender != t.receiver && (1..=1_000).contains(&t.amount.minor())));
        }
    }

    #[test]
    fn the_hot_distribution_debits_one_account_and_zipf_favours_the_first() {
        let eur = Currency::parse("EUR").unwrap();
        let hot = plan(&args(Spread::Hot), &owners(50), &[eur]).unwrap();
        assert!(hot.iter().all(|t| t.sender.get() == 1));
        let zipf = plan(&args(Spread::Zipf), &owners(50), &[eur]).unwrap();
        let first = zipf.iter().filter(|t| t.sender.get() == 1).count();
        let last = zipf.iter().filter(|t| t.sender.get() == 50).count();
        assert!(first > 10 * last.max(1), "first {first}, last {last}");
    }
}
