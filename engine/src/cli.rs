//! `transfer-engine plugins ...`: manage plugins on a running engine through
//! its admin API, or try a plugin offline against sample transfers.
//! `transfer-engine clients ...`: create, list and revoke API clients.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::transfers::{SubmitTransfer, validate};
use crate::config::Settings;
use crate::hooks;
use crate::ledger::Verdict;
use crate::plugins::registry::ShadowReport;
use crate::plugins::scaffold::{self, Lang};
use crate::plugins::{LimitsRequest, LoadedPlugin, PluginKind, PluginMeta, PluginSet, Sandbox, SandboxLimits};
use crate::plugins::{Registry, replay};

/// A plugin version's own limits, each optional: the defaults depend on the
/// component's size (a Python or JavaScript component gets more).
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct LimitsArgs {
    /// Linear memory one instance may grow to, in bytes.
    #[arg(long)]
    memory_bytes_max: Option<u64>,
    /// Fuel (about one unit per WebAssembly instruction) one call may burn.
    #[arg(long)]
    call_fuel_max: Option<u64>,
    /// Fuel instantiation plus `configure` may burn.
    #[arg(long)]
    configure_fuel_max: Option<u64>,
}

impl From<LimitsArgs> for LimitsRequest {
    fn from(args: LimitsArgs) -> Self {
        Self { memory_bytes_max: args.memory_bytes_max, call_fuel_max: args.call_fuel_max, configure_fuel_max: args.configure_fuel_max }
    }
}

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Upload a new version of a plugin (checked and compiled by the engine).
    Push {
        /// The component (.wasm).
        file: PathBuf,
        #[arg(long)]
        name: String,
        /// validator, converter or describer; detected from the exports when omitted.
        #[arg(long)]
        kind: Option<String>,
        /// The plugin's JSON configuration, or @path to read it from a file.
        #[arg(long, default_value = "{}")]
        config: String,
        /// Activate the new version at once.
        #[arg(long)]
        activate: bool,
        /// A validator whose rejections and faults are recorded, never enforced (validators only).
        #[arg(long)]
        advisory: bool,
        #[command(flatten)]
        limits: LimitsArgs,
    },
    /// List every version of every plugin.
    List,
    /// Make a version the active one (an earlier version is a rollback).
    Activate {
        name: String,
        #[arg(long)]
        version: i32,
        /// A describer or converter: take the place of the one active under another name, in one step.
        #[arg(long)]
        replace: bool,
    },
    /// Stop running a plugin (and its shadow and canary, if they run).
    Deactivate { name: String },
    /// Run a version beside the active one on every live transfer: its
    /// decisions are recorded with role shadow, never enforced.
    Shadow {
        name: String,
        #[arg(long, required_unless_present = "off", conflicts_with = "off")]
        version: Option<i32>,
        /// Stop the shadow.
        #[arg(long)]
        off: bool,
    },
    /// Let a version decide in place of the active one for a sticky share of
    /// senders; it is withdrawn automatically if its fault rate passes the limit.
    Canary {
        name: String,
        #[arg(long, required_unless_present = "off", conflicts_with = "off")]
        version: Option<i32>,
        /// Of senders, 1 to 100 (100 makes the version the active one).
        #[arg(long, required_unless_present = "off", conflicts_with = "off")]
        percent: Option<i64>,
        /// The share of faulted calls (0 to 1, such as 0.05) past which it is withdrawn; default: the engine's setting.
        #[arg(long, conflicts_with = "off")]
        max_fault_rate: Option<String>,
        /// Withdraw the canary: the active version decides for every sender.
        #[arg(long)]
        off: bool,
    },
    /// Run a candidate validator over the transfers the ledger committed in a
    /// window and report which outcomes it would have changed. Needs only the
    /// database (TRANSFER_ENGINE_DATABASE_URL), never a running engine; writes nothing.
    Replay {
        /// The candidate component (.wasm); or --name and --version for a stored one.
        #[arg(required_unless_present = "name", conflicts_with = "name")]
        file: Option<PathBuf>,
        /// The file's kind (a replay runs validators); detected when omitted.
        #[arg(long, requires = "file")]
        kind: Option<String>,
        /// The file's JSON configuration, or @path.
        #[arg(long, default_value = "{}", requires = "file")]
        config: String,
        /// A stored plugin's name.
        #[arg(long, requires = "version")]
        name: Option<String>,
        /// A stored plugin's version.
        #[arg(long, requires = "name")]
        version: Option<i32>,
        /// The window's start (RFC 3339, e.g. 2026-12-01T00:00:00Z): transfers committed from then.
        #[arg(long)]
        since: DateTime<Utc>,
        /// The window's end, exclusive; default: now.
        #[arg(long)]
        until: Option<DateTime<Utc>>,
        /// The report as JSON, for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        limits: LimitsArgs,
    },
    /// How a version compared with the active one while in shadow.
    Report {
        name: String,
        #[arg(long)]
        version: i32,
        /// The report as JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Set the order validators run in (first runs first).
    Order { names: Vec<String> },
    /// Write a new plugin folder NAME/: a working policy stub, a README, sample
    /// transfers with their expected verdicts, and `./build.sh`, which writes dist/NAME.wasm.
    New {
        name: String,
        /// rust, python or js.
        #[arg(long)]
        lang: String,
        /// validator, converter or describer.
        #[arg(long, default_value = "validator")]
        world: String,
        /// Where to create the folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Run a plugin offline against sample transfers and print each decision.
    Test {
        /// The component (.wasm).
        file: PathBuf,
        /// The plugin's JSON configuration, or @path.
        #[arg(long, default_value = "{}")]
        config: String,
        /// One transfer per line, as the API takes it (`{"sender_id": 1, "receiver_id": 2, "amount": "5", "currency": "EUR"}`),
        /// with an optional `"context"` and an optional `"expect"` (`"allow"`, `"reject"`, `"fail"`, or
        /// `{"verdict": "reject", "code": "..."}`): any expectation not met makes the command fail.
        #[arg(long)]
        transfers: PathBuf,
        #[arg(long)]
        kind: Option<String>,
        #[command(flatten)]
        limits: LimitsArgs,
        /// Keep the compiled component in this directory (as the engine's `plugin_compiled_dir`), so
        /// testing the same component again skips compiling it (seconds for Python and JavaScript).
        #[arg(long, env = "TRANSFER_ENGINE_PLUGIN_COMPILED_DIR")]
        compiled_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Create an API client and print its key (shown this once).
    Create {
        #[arg(long)]
        name: String,
        /// transfers:write, transfers:read, accounts:write or accounts:read; repeat or separate with commas.
        #[arg(long = "scope", required = true, value_delimiter = ',')]
        scopes: Vec<String>,
        /// Bind the client to these owner ids (repeat or separate with commas); omitted: any owner.
        #[arg(long = "owner", value_delimiter = ',')]
        owners: Vec<i64>,
    },
    /// List every client (never their keys).
    List,
    /// Revoke a client's key: every engine refuses it within about a second.
    Revoke { client_id: String },
}

/// Where the engine is, and the admin token.
pub struct Remote {
    pub url: String,
    pub token: Option<String>,
}

impl Remote {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url.trim_end_matches('/'))
    }

    /// Sends an admin request and prints the answer; an error status is an error.
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<()> {
        let text = self.answer(request).await?;
        let shown = serde_json::from_str::<Value>(&text).map(|v| serde_json::to_string_pretty(&v).unwrap_or_default()).unwrap_or(text);
        println!("{}", if shown.is_empty() { "ok".to_owned() } else { shown });
        Ok(())
    }

    /// Sends an admin request and returns its JSON answer.
    async fn fetch(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let text = self.answer(request).await?;
        serde_json::from_str(&text).with_context(|| format!("the engine answered something other than JSON: {text}"))
    }

    /// The body of a successful answer; an error status is an error.
    async fn answer(&self, request: reqwest::RequestBuilder) -> anyhow::Result<String> {
        let token = self.token.as_deref().context("the admin token is needed: --token or TRANSFER_ENGINE_ADMIN_TOKEN")?;
        let response = request.bearer_auth(token).send().await.with_context(|| format!("could not reach the engine at {}", self.url))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            let shown = serde_json::from_str::<Value>(&text).map(|v| serde_json::to_string_pretty(&v).unwrap_or_default()).unwrap_or(text);
            bail!("the engine answered {status}: {shown}");
        }
        Ok(text)
    }
}

pub async fn clients(command: ClientCommand, remote: Remote) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let request = match command {
        ClientCommand::Create { name, scopes, owners } => {
            let owners = (!owners.is_empty()).then_some(owners);
            client.post(remote.url("/v1/admin/clients")).json(&json!({"name": name, "scopes": scopes, "owners": owners}))
        }
        ClientCommand::List => client.get(remote.url("/v1/admin/clients")),
        ClientCommand::Revoke { client_id } => client.delete(remote.url(&format!("/v1/admin/clients/{client_id}"))),
    };
    remote.send(request).await
}

fn read_config(config: &str) -> anyhow::Result<Value> {
    let text = match config.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("could not read {path}"))?,
        None => config.to_owned(),
    };
    serde_json::from_str(&text).context("the configuration is not JSON")
}

fn kind(kind: Option<&str>) -> anyhow::Result<Option<PluginKind>> {
    kind.map(|k| PluginKind::parse(k).with_context(|| format!("unknown kind {k:?}: validator, converter or describer"))).transpose()
}

pub async fn run(command: PluginCommand, remote: Remote) -> anyhow::Result<()> {
    if let PluginCommand::New { name, lang, world, dir } = command {
        let lang = Lang::parse(&lang).with_context(|| format!("unknown language {lang:?}: rust, python or js"))?;
        let world = PluginKind::parse(&world).with_context(|| format!("unknown world {world:?}: validator, converter or describer"))?;
        let written = scaffold::write(&dir, &name, lang, world)?;
        eprintln!("Wrote a {lang} {world} in {}:", dir.join(&name).display());
        for file in written {
            eprintln!("  {}", file.display());
        }
        eprintln!("Next:\n{}", scaffold::next_steps(&name, lang));
        return Ok(());
    }
    if let PluginCommand::Test { file, config, transfers, kind: k, limits, compiled_dir } = command {
        let (config, kind) = (read_config(&config)?, kind(k.as_deref())?);
        // Off the async runtime: a plugin's WASI calls may block on it.
        return tokio::task::spawn_blocking(move || test_offline(&file, &config, &transfers, kind, limits.into(), compiled_dir.as_deref()))
            .await
            .context("the offline test panicked")?;
    }
    let client = reqwest::Client::new();
    let url = |path: &str| remote.url(path);
    let request = match command {
        PluginCommand::Push { file, name, kind: k, config, activate, advisory, limits } => {
            kind(k.as_deref())?;
            let bytes = std::fs::read(&file).with_context(|| format!("could not read {}", file.display()))?;
            let body = json!({"name": name, "kind": k, "config": read_config(&config)?, "activate": activate, "advisory": advisory,
                              "limits": LimitsRequest::from(limits),
                              "component": base64::engine::general_purpose::STANDARD.encode(bytes)});
            client.post(url("/v1/admin/plugins")).json(&body)
        }
        PluginCommand::List => client.get(url("/v1/admin/plugins")),
        PluginCommand::Activate { name, version, replace } => {
            client.post(url(&format!("/v1/admin/plugins/{name}/activate"))).json(&json!({"version": version, "replace": replace}))
        }
        PluginCommand::Deactivate { name } => client.post(url(&format!("/v1/admin/plugins/{name}/deactivate"))),
        PluginCommand::Shadow { name, off: true, .. } => client.delete(url(&format!("/v1/admin/plugins/{name}/shadow"))),
        PluginCommand::Shadow { name, version, .. } => {
            client.post(url(&format!("/v1/admin/plugins/{name}/shadow"))).json(&json!({"version": version}))
        }
        PluginCommand::Canary { name, off: true, .. } => client.delete(url(&format!("/v1/admin/plugins/{name}/canary"))),
        PluginCommand::Canary { name, version, percent, max_fault_rate, .. } => client
            .post(url(&format!("/v1/admin/plugins/{name}/canary")))
            .json(&json!({"version": version, "percent": percent, "max_fault_rate": max_fault_rate})),
        PluginCommand::Report { name, version, json } => {
            let report = remote.fetch(client.get(url(&format!("/v1/admin/plugins/{name}/versions/{version}/report")))).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                let report: ShadowReport = serde_json::from_value(report).context("the engine answered a report this CLI cannot read")?;
                print!("{}", report_text(&report));
            }
            return Ok(());
        }
        PluginCommand::Order { names } => client.put(url("/v1/admin/validation-order")).json(&json!({"names": names})),
        PluginCommand::Test { .. } | PluginCommand::New { .. } | PluginCommand::Replay { .. } => unreachable!("handled above"),
    };
    remote.send(request).await
}

/// `plugins replay`: the candidate over the ledger, straight from PostgreSQL.
pub async fn replay(settings: &Settings, command: PluginCommand) -> anyhow::Result<()> {
    let PluginCommand::Replay { file, kind: k, config, name, version, since, until, json, limits } = command else { bail!("not a replay") };
    let pool = crate::startup::connect_database(settings).await?;
    let sandbox = Sandbox::with_compiled_dir(
        SandboxLimits { instances_max: 16, ..settings.sandbox_limits() },
        settings.plugin_compiled_dir.as_deref(),
    )?;
    let candidate = match (file, name, version) {
        (Some(file), _, _) => {
            let (config, kind) = (read_config(&config)?, kind(k.as_deref())?);
            tokio::task::spawn_blocking(move || load_file(&sandbox, &file, &config, kind, limits.into())).await??
        }
        (None, Some(name), Some(version)) => {
            let registry = Arc::new(Registry::new(pool.clone(), sandbox, settings.description_chars_max, settings.rollback_settings()));
            registry.stored(&name, version).await?
        }
        _ => bail!("give a component file, or --name and --version of a stored plugin"),
    };
    let until = until.unwrap_or_else(Utc::now);
    let terminal = std::io::stderr().is_terminal();
    let report = replay::replay(&pool, candidate, version, since, until, |replayed, at, last| {
        if terminal {
            eprint!("\rreplayed {replayed} transfers (seq {at} of {last})");
        }
    })
    .await;
    if terminal {
        eprintln!();
    }
    let report = report?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", replay::report_text(&report));
    }
    Ok(())
}

/// A component file, checked and configured as an upload would be.
fn load_file(
    sandbox: &Arc<Sandbox>,
    file: &Path,
    config: &Value,
    kind: Option<PluginKind>,
    limits: LimitsRequest,
) -> anyhow::Result<Arc<LoadedPlugin>> {
    let bytes = std::fs::read(file).with_context(|| format!("could not read {}", file.display()))?;
    let sha256: [u8; 32] = Sha256::digest(&bytes).into();
    let component = sandbox.compile_keyed(Some(sha256), &bytes)?;
    let kind = match kind {
        Some(k) => k,
        None => sandbox.detect_kind(&component).context("the component exports none of the validator, converter or describer worlds")?,
    };
    let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin").to_owned();
    let limits = sandbox.limits.resolve(bytes.len(), limits)?;
    let meta = PluginMeta { name, version: 0, kind, sha256, config: config.to_string(), limits };
    let plugin = Arc::new(LoadedPlugin::new(sandbox.clone(), meta, &component)?);
    plugin.check()?;
    Ok(plugin)
}

/// A shadow report for a terminal.
fn report_text(r: &ShadowReport) -> String {
    let us = |v: Option<i32>| v.map_or("-".to_owned(), |v| v.to_string());
    let latency = |p: &crate::plugins::registry::Percentiles| {
        format!("p50 {} / p90 {} / p99 {} / max {} µs", us(p.p50), us(p.p90), us(p.p99), us(p.max))
    };
    let mut text = format!(
        "{} v{} in shadow: {} evaluated, {} agreed, {} disagreed, {} faults\nlatency: active {}; candidate {}\n",
        r.name,
        r.version,
        r.evaluated,
        r.agreed,
        r.disagreed,
        r.faults,
        latency(&r.active_latency_us),
        latency(&r.candidate_latency_us)
    );
    if !r.disagreements.is_empty() {
        text.push_str(&format!("newest {} disagreements (transfer, active, candidate, code):\n", r.disagreements.len()));
        for d in &r.disagreements {
            text.push_str(&format!("  {} {} {} {}\n", d.transfer_id, d.active, d.candidate, d.code.as_deref().unwrap_or("-")));
        }
    }
    text
}

/// Runs one plugin in the same sandbox the engine uses, without any service.
fn test_offline(
    file: &Path,
    config: &Value,
    transfers: &Path,
    kind: Option<PluginKind>,
    limits: LimitsRequest,
    compiled_dir: Option<&Path>,
) -> anyhow::Result<()> {
    let sandbox = Sandbox::with_compiled_dir(SandboxLimits { instances_max: 4, ..SandboxLimits::default() }, compiled_dir)?;
    let plugin = load_file(&sandbox, file, config, kind, limits)?;
    let kind = plugin.meta.kind;
    let description_chars_max = crate::config::Settings::default().description_chars_max;
    let mut set = PluginSet::empty(description_chars_max);
    match kind {
        PluginKind::Validator => set.validators.push(plugin),
        PluginKind::Converter => set.converter = Some(plugin),
        PluginKind::Describer => set.describer = Some(plugin),
    }
    let needs = hooks::Hooks::needs(&set);
    let lines = std::fs::read_to_string(transfers).with_context(|| format!("could not read {}", transfers.display()))?;
    let (mut checked, mut mismatched) = (0, Vec::new());
    for (number, line) in lines.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let (expect, parsed) = match take_expect(line) {
            Ok((expect, body)) => (expect, offline_line(body, description_chars_max, &needs)),
            Err(error) => (None, Err(error)),
        };
        let (mut report, got) = match parsed {
            Err(error) => (json!({"line": number + 1, "error": error}), None),
            Ok((submission, context)) => {
                let outcome = hooks::run_in_context(&set, &submission, &context);
                let (verdict, reason) = match &outcome.verdict {
                    Verdict::Apply(_) | Verdict::Validate(_) => (VerdictKind::Allow, None),
                    Verdict::Reject(r) => (VerdictKind::Reject, Some(r)),
                    Verdict::Fail(r) => (VerdictKind::Fail, Some(r)),
                };
                let got = (verdict, reason.map(|r| r.code.clone()));
                let report = json!({"line": number + 1, "verdict": verdict, "reason": reason, "amount_minor": outcome.amount.map(|a| a.minor()),
                       "description": outcome.description, "decisions": outcome.decisions});
                (report, Some(got))
            }
        };
        if let Some(expect) = expect {
            checked += 1;
            let matched = got.as_ref().is_some_and(|(verdict, code)| expect.matches(*verdict, code.as_deref()));
            report["expect"] = json!(expect);
            report["matched"] = json!(matched);
            if !matched {
                mismatched.push(number + 1);
            }
        }
        println!("{report}");
    }
    if !mismatched.is_empty() {
        bail!("{} of {checked} expectations were not met, on lines {mismatched:?}", mismatched.len());
    }
    if checked > 0 {
        eprintln!("{checked} expectations met.");
    }
    Ok(())
}

/// A line's `"expect"`: `"allow"`, `"reject"` or `"fail"`, or
/// `{"verdict": "reject", "code": "amount_over_limit"}` to pin the code too.
#[derive(Debug, serde::Deserialize, serde::Serialize)]
#[serde(untagged)]
enum Expect {
    Verdict(VerdictKind),
    WithCode { verdict: VerdictKind, code: Option<String> },
}

/// What a line's hooks decided, as reported (`"verdict"`) and as expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum VerdictKind {
    Allow,
    Reject,
    Fail,
}

impl Expect {
    fn matches(&self, verdict: VerdictKind, code: Option<&str>) -> bool {
        let (expected, expected_code) = match self {
            Self::Verdict(v) => (*v, None),
            Self::WithCode { verdict, code } => (*verdict, code.as_deref()),
        };
        expected == verdict && expected_code.is_none_or(|c| Some(c) == code)
    }
}

/// Parses a line and splits its `"expect"` off the rest (the transfer body and its `"context"`).
fn take_expect(line: &str) -> Result<(Option<Expect>, serde_json::Map<String, Value>), String> {
    let mut body: serde_json::Map<String, Value> = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let expect = body
        .remove("expect")
        .map(serde_json::from_value::<Expect>)
        .transpose()
        .map_err(|e| format!("expect: {e} (\"allow\", \"reject\", \"fail\", or {{\"verdict\": ..., \"code\": ...}})"))?;
    Ok((expect, body))
}

/// The `"context"` of an offline test line: what the processor would read
/// from the ledger under the batch's locks.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OfflineContext {
    /// The transfer's time reference; now when absent.
    at: Option<chrono::DateTime<chrono::Utc>>,
    /// Absent: the account does not exist.
    sender: Option<OfflineAccount>,
    receiver: Option<OfflineAccount>,
    /// The sender's earlier completed debits in this currency.
    #[serde(default)]
    debits: Vec<OfflineDebit>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OfflineAccount {
    #[serde(default)]
    balance_minor: i64,
    #[serde(default)]
    floor_minor: i64,
    /// The transfer's time when absent.
    opened_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    metadata: crate::domain::Metadata,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OfflineDebit {
    at: chrono::DateTime<chrono::Utc>,
    amount_minor: i64,
}

/// One JSONL line: the API's transfer body, plus an optional `"context"`,
/// from which the declared windows are summed by the processor's own code.
fn offline_line(
    mut body: serde_json::Map<String, Value>,
    description_chars_max: usize,
    needs: &hooks::ContextNeeds,
) -> Result<(crate::domain::Submission, hooks::Context), String> {
    let given = body.remove("context").map(serde_json::from_value::<OfflineContext>).transpose().map_err(|e| format!("context: {e}"))?;
    let request: SubmitTransfer = serde_json::from_value(Value::Object(body)).map_err(|e| e.to_string())?;
    let mut submission = validate(request, &Default::default(), description_chars_max).map_err(|e| e.to_string())?;
    let Some(given) = given else { return Ok((submission, hooks::Context::default())) };
    if let Some(at) = given.at {
        submission.submitted_at = at;
    }
    let at = submission.submitted_at;
    let facts = |owner, account: Option<OfflineAccount>| {
        account.map(|a| hooks::AccountFacts {
            owner,
            balance_minor: a.balance_minor,
            floor_minor: a.floor_minor,
            opened_at: a.opened_at.unwrap_or(at),
            metadata: a.metadata,
        })
    };
    let mut debits = hooks::BatchDebits::default();
    for debit in &given.debits {
        if debit.amount_minor <= 0 {
            return Err(format!("context: a debit's amount_minor must be positive, not {}", debit.amount_minor));
        }
        debits.push(debit.at, debit.amount_minor);
    }
    let velocity = needs.windows.iter().map(|w| (*w, debits.total(hooks::WindowTotal::default(), *w, at))).collect();
    let context =
        hooks::Context { sender: facts(submission.sender, given.sender), receiver: facts(submission.receiver, given.receiver), velocity };
    Ok((submission, context))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expectation_is_split_off_the_line_and_matches_the_verdict_and_optionally_the_code() {
        let (expect, rest) =
            take_expect(r#"{"sender_id": 1, "receiver_id": 2, "amount": "5", "currency": "EUR", "expect": "reject"}"#).unwrap();
        let expect = expect.unwrap();
        assert!(!rest.contains_key("expect"), "{rest:?}");
        assert!(expect.matches(VerdictKind::Reject, Some("amount_over_limit")) && expect.matches(VerdictKind::Reject, None));
        assert!(!expect.matches(VerdictKind::Allow, None) && !expect.matches(VerdictKind::Fail, Some("plugin_failed")));
        let (expect, _) = take_expect(r#"{"expect": {"verdict": "reject", "code": "owner_blocked"}}"#).unwrap();
        let expect = expect.unwrap();
        assert!(expect.matches(VerdictKind::Reject, Some("owner_blocked")));
        assert!(!expect.matches(VerdictKind::Reject, Some("amount_over_limit")) && !expect.matches(VerdictKind::Reject, None));
        assert!(take_expect(r#"{"sender_id": 1}"#).unwrap().0.is_none(), "no expectation: the line is only reported");
        let error = take_expect(r#"{"expect": "allowed"}"#).err().unwrap();
        assert!(error.contains("\"allow\""), "a typo is an error that names the choices: {error}");
    }
}
