//! Plugins through the real wasmtime host: the example plugins' rules, the
//! hostile fixtures (loops, memory bombs, traps, nonsense, state kept between
//! calls, forged logs), advisory validators, the fuel limit under CPU
//! contention, uploads, and hot reload with rollback under traffic.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{TestApp, assert_audit_passes, plugin_bytes};
use serde_json::{Value, json};
use transfer_engine::domain::{Amount, Currency, Money, OwnerId, Requested, Submission, TransferId, TransferKind};
use transfer_engine::hooks::{self, HookOutcome};
use transfer_engine::ledger::Verdict;
use transfer_engine::plugins::guard::{LOG_LINES_BURST_MAX, LOG_LINES_PER_S_MAX};
use transfer_engine::plugins::{LoadedPlugin, PluginError, PluginKind, PluginMeta, PluginSet, Sandbox, SandboxLimits};

fn unchecked(sandbox: &Arc<Sandbox>, file_stem: &str, kind: PluginKind, version: i32, config: Value) -> LoadedPlugin {
    let bytes = plugin_bytes(file_stem);
    let component = sandbox.compile(&bytes).unwrap();
    let limits = sandbox.limits.defaults_for(bytes.len());
    let meta = PluginMeta { name: file_stem.replace('_', "-"), version, kind, sha256: [7; 32], config: config.to_string(), limits };
    LoadedPlugin::new(sandbox.clone(), meta, &component).unwrap()
}

fn load(sandbox: &Arc<Sandbox>, file_stem: &str, kind: PluginKind, version: i32, config: Value) -> Arc<LoadedPlugin> {
    let plugin = unchecked(sandbox, file_stem, kind, version, config);
    plugin.check().unwrap();
    Arc::new(plugin)
}

fn validators(plugins: impl IntoIterator<Item = Arc<LoadedPlugin>>) -> PluginSet {
    let mut set = PluginSet::empty(140);
    set.validators.extend(plugins);
    set
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
        metadata: Default::default(),
    }
}

/// The hooks as a batch runs them when no validator needs context.
fn run_now(hooks: &dyn hooks::Hooks, submission: &Submission) -> HookOutcome {
    hooks::run(hooks, submission, hooks::Validation::Now)
}

fn eur(minor: i64) -> Requested {
    Requested::Amount(Amount::from_minor(minor).unwrap())
}

fn code(outcome: &HookOutcome) -> Option<&str> {
    match &outcome.verdict {
        Verdict::Apply(_) | Verdict::Validate(_) => None,
        Verdict::Reject(r) | Verdict::Fail(r) => Some(&r.code),
    }
}

fn sandbox() -> Arc<Sandbox> {
    Sandbox::new(SandboxLimits { instances_max: 16, ..SandboxLimits::default() }).unwrap()
}

#[test]
fn the_example_plugins_apply_their_rules_through_the_real_host() {
    let sandbox = sandbox();
    let mut set = PluginSet::empty(140);
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

    let fine = run_now(&set, &submission(1, eur(500), Some("  rent   for\tMarch  ")));
    assert_eq!(fine.verdict, Verdict::Apply(Amount::from_minor(500).unwrap()));
    assert_eq!(fine.description.as_deref(), Some("rent for March"));
    let hooks_seen: Vec<_> = fine.decisions.iter().map(|d| (d.plugin.as_str(), d.outcome.as_str())).collect();
    assert_eq!(hooks_seen, [("description", "rewritten"), ("limits", "allowed")]);

    let masked = run_now(&set, &submission(1, eur(500), Some("card 4111 1111 1111 1234 thanks")));
    assert!(
        masked.description.as_deref().unwrap().contains("1234") && !masked.description.as_deref().unwrap().contains("4111"),
        "{masked:?}"
    );

    assert_eq!(code(&run_now(&set, &submission(1, eur(10_001), None))), Some("amount_over_limit"));
    assert_eq!(code(&run_now(&set, &submission(666, eur(1), None))), Some("owner_blocked"));
    assert_eq!(code(&run_now(&set, &submission(1, eur(1), Some("Casino night")))), Some("description_blocked_word"));

    // 10.00 USD at 0.9215 is 9.215 EUR: half-even rounds to 9.22 (9215 -> 922 cents).
    let usd = Currency::parse("USD").unwrap();
    let converted =
        run_now(&set, &submission(1, Requested::Original(Money { amount: Amount::from_minor(1_000).unwrap(), currency: usd }), None));
    assert_eq!(converted.verdict, Verdict::Apply(Amount::from_minor(922).unwrap()), "{converted:?}");
    assert_eq!(converted.decisions[0].outcome, "converted");
    let jpy = Currency::parse("JPY").unwrap();
    let unknown =
        run_now(&set, &submission(1, Requested::Original(Money { amount: Amount::from_minor(1_000).unwrap(), currency: jpy }), None));
    assert_eq!(code(&unknown), Some("rate_not_found"));
}

#[test]
fn hostile_plugins_fail_their_transfer_with_the_cause_recorded_and_the_host_carries_on() {
    let sandbox = sandbox();
    let limits = load(&sandbox, "limits", PluginKind::Validator, 1, json!({}));
    // The memory bomb gets a generous fuel budget, so that what stops it is the memory limit.
    let roomy = Sandbox::new(SandboxLimits { instances_max: 4, call_fuel_max: 1 << 40, ..SandboxLimits::default() }).unwrap();
    for (fixture, sandbox, cause, fault) in [
        ("hostile_loop", &sandbox, "ran out of fuel", "fuel_exhausted"),
        ("hostile_memory", &roomy, "memory limit", "memory_exceeded"),
        ("hostile_trap", &sandbox, "trapped", "trap"),
    ] {
        let set = validators([load(sandbox, fixture, PluginKind::Validator, 3, json!({})), limits.clone()]);
        for _ in 0..2 {
            // Twice: a fault in one call leaves nothing behind for the next.
            let outcome = run_now(&set, &submission(1, eur(100), None));
            let Verdict::Fail(reason) = &outcome.verdict else { panic!("{fixture}: {outcome:?}") };
            assert_eq!(reason.code, "plugin_failed");
            let name = fixture.replace('_', "-");
            assert!(reason.message.contains(&format!("{name} v3")) && reason.message.contains(cause), "{fixture}: {}", reason.message);
            assert!(reason.message.contains(&format!("({fault})")), "{fixture}: {}", reason.message);
            let decision = outcome.decisions.last().unwrap();
            assert_eq!((decision.outcome.as_str(), decision.fault.as_deref(), decision.advisory), ("failed", Some(fault), false));
        }
        // Uploaded as advisory, the same validator is recorded as failed and the transfer goes on.
        let advisory = unchecked(sandbox, fixture, PluginKind::Validator, 4, json!({})).with_advisory(true).unwrap();
        let outcome = run_now(&validators([Arc::new(advisory), limits.clone()]), &submission(1, eur(100), None));
        assert_eq!(outcome.verdict, Verdict::Apply(Amount::from_minor(100).unwrap()), "{fixture}");
        assert_eq!((outcome.decisions[0].outcome.as_str(), outcome.decisions[0].advisory), ("failed", true));
        assert_eq!(outcome.decisions[0].fault.as_deref(), Some(fault));
        assert_eq!(outcome.decisions[1].outcome, "allowed");
    }
    let mut set = PluginSet::empty(140);
    set.converter = Some(load(&sandbox, "hostile_nonsense", PluginKind::Converter, 1, json!({})));
    let usd = Currency::parse("USD").unwrap();
    let outcome =
        run_now(&set, &submission(1, Requested::Original(Money { amount: Amount::from_minor(100).unwrap(), currency: usd }), None));
    let Verdict::Fail(reason) = &outcome.verdict else { panic!("{outcome:?}") };
    assert!(reason.message.contains("nonsense") && reason.message.contains("-12345"), "{}", reason.message);
    // The good plugin next to them still answers.
    assert_eq!(run_now(&validators([limits]), &submission(1, eur(100), None)).verdict, Verdict::Apply(Amount::from_minor(100).unwrap()));
}

#[test]
fn a_loop_with_fuel_to_spare_is_still_stopped_by_the_wall_clock_backstop() {
    let bottomless = Sandbox::new(SandboxLimits { instances_max: 4, call_fuel_max: u64::MAX / 2, ..SandboxLimits::default() }).unwrap();
    let set = validators([load(&bottomless, "hostile_loop", PluginKind::Validator, 1, json!({}))]);
    let started = Instant::now();
    let outcome = run_now(&set, &submission(1, eur(100), None));
    let elapsed = started.elapsed();
    let Verdict::Fail(reason) = &outcome.verdict else { panic!("{outcome:?}") };
    assert!(reason.message.contains("(wall_clock_backstop)"), "{}", reason.message);
    assert_eq!(outcome.decisions[0].fault.as_deref(), Some("wall_clock_backstop"));
    let backstop = Duration::from_millis(transfer_engine::plugins::sandbox::WALL_CLOCK_BACKSTOP_MS);
    assert!(elapsed >= backstop && elapsed < backstop * 5, "stopped after {elapsed:?}");
}

#[test]
fn an_advisory_validator_is_recorded_but_not_enforced_and_nothing_else_can_be_advisory() {
    let sandbox = sandbox();
    let strict = json!({"max_amount_minor": {"EUR": 100}});
    let shadow = unchecked(&sandbox, "limits", PluginKind::Validator, 2, strict.clone()).with_advisory(true).unwrap();
    let outcome = run_now(&validators([Arc::new(shadow)]), &submission(1, eur(5_000), None));
    assert_eq!(outcome.verdict, Verdict::Apply(Amount::from_minor(5_000).unwrap()));
    let decision = &outcome.decisions[0];
    assert_eq!((decision.outcome.as_str(), decision.code.as_deref(), decision.advisory), ("rejected", Some("amount_over_limit"), true));
    // The same version, binding, rejects.
    let binding = load(&sandbox, "limits", PluginKind::Validator, 2, strict);
    assert_eq!(code(&run_now(&validators([binding]), &submission(1, eur(5_000), None))), Some("amount_over_limit"));
    // The record says so when stored: `advisory` is absent only for binding plugins.
    let stored = serde_json::to_value(&outcome.decisions).unwrap();
    assert_eq!(stored[0]["advisory"], true);
    for (file, kind) in [("description", PluginKind::Describer), ("fx", PluginKind::Converter)] {
        let refused = unchecked(&sandbox, file, kind, 1, json!({})).with_advisory(true);
        assert!(matches!(refused, Err(PluginError::AdvisoryNotValidator(k)) if k == kind), "{file}");
    }
}

#[test]
fn a_describer_fault_fails_the_transfer_and_never_stores_the_unmasked_description() {
    let sandbox = sandbox();
    // The hostile loop as a describer is refused for the wrong world, so use a
    // real describer with a budget too small to finish: the same fault path.
    let starved = Sandbox::new(SandboxLimits { instances_max: 4, call_fuel_max: 100, ..SandboxLimits::default() }).unwrap();
    let mut set = PluginSet::empty(140);
    set.describer = Some(load(&starved, "description", PluginKind::Describer, 1, json!({})));
    set.validators.push(load(&sandbox, "limits", PluginKind::Validator, 1, json!({})));
    let outcome = run_now(&set, &submission(1, eur(500), Some("card 4111 1111 1111 1234")));
    let Verdict::Fail(reason) = &outcome.verdict else { panic!("{outcome:?}") };
    assert!(reason.message.contains("fuel_exhausted"), "{}", reason.message);
    assert_eq!(outcome.decisions.len(), 1, "no validator ran: {outcome:?}");
    assert_eq!(outcome.decisions[0].fault.as_deref(), Some("fuel_exhausted"));
    assert_eq!(outcome.description, None, "the unreviewed text is not stored with the failed transfer");
}

#[test]
fn a_plugin_call_costs_a_small_fixed_amount_of_fuel_far_below_the_default_limit() {
    let sandbox = sandbox();
    let config = |file: &str| -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/plugin-config/{file}.json"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    // The longest description the engine accepts (280 characters), full of digits to mask: the describer's worst case.
    let longest = "rent for March, card 4111 1111 1111 1234, thanks! ".repeat(6).chars().take(280).collect::<String>();
    let mut set = PluginSet::empty(280);
    let mut description = config("description");
    description["max_length_chars"] = json!(280);
    set.describer = Some(load(&sandbox, "description", PluginKind::Describer, 1, description));
    set.converter = Some(load(&sandbox, "fx", PluginKind::Converter, 1, config("fx")));
    set.validators.push(load(&sandbox, "limits", PluginKind::Validator, 1, config("limits")));
    let usd = Currency::parse("USD").unwrap();
    for text in ["rent", longest.as_str()] {
        let original = Requested::Original(Money { amount: Amount::from_minor(1_000).unwrap(), currency: usd });
        let outcome = run_now(&set, &submission(1, original, Some(text)));
        assert!(matches!(outcome.verdict, Verdict::Apply(_)), "{outcome:?}");
    }
    let defaults = SandboxLimits::default();
    for plugin in [set.describer.as_ref().unwrap(), set.converter.as_ref().unwrap(), &set.validators[0]] {
        let (call, configure) = plugin.fuel_used_max();
        println!("{}: at most {call} fuel per call, {configure} per instantiation and configure", plugin.meta.name);
        assert!(call > 0 && configure > 0, "fuel is metered");
        // At least 10 times the room the plugin needs, so a valid transfer never meets the limit.
        assert!(call * 10 <= defaults.call_fuel_max, "{}: {call} of {}", plugin.meta.name, defaults.call_fuel_max);
        assert!(configure * 10 <= defaults.configure_fuel_max, "{}: {configure} of {}", plugin.meta.name, defaults.configure_fuel_max);
    }
    // The hostile loop burns all of its budget and no more: how long that takes is what a hostile plugin costs.
    let looper = validators([load(&sandbox, "hostile_loop", PluginKind::Validator, 1, json!({}))]);
    let started = Instant::now();
    let outcome = run_now(&looper, &submission(1, eur(1), None));
    println!("hostile-loop: stopped after {} fuel in {:?}", defaults.call_fuel_max, started.elapsed());
    assert_eq!(outcome.decisions[0].fault.as_deref(), Some("fuel_exhausted"));
}

/// Busy threads on every core while the plugin runs: with a wall-clock limit
/// (the previous design) a preempted call failed `plugin_failed`; fuel counts
/// instructions, so contention cannot change an answer.
#[test]
fn limits_answers_100_000_calls_under_cpu_contention_without_a_single_limit_fault() {
    const CALLS: usize = 100_000;
    let sandbox = sandbox();
    let set = validators([load(&sandbox, "limits", PluginKind::Validator, 1, json!({"max_amount_minor": {"EUR": 1_000}}))]);
    let stop = Arc::new(AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let busy: Vec<_> = (0..cores)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut spins = 0_u64;
                while !stop.load(Ordering::Relaxed) {
                    spins = std::hint::black_box(spins.wrapping_add(1));
                }
            })
        })
        .collect();
    let started = Instant::now();
    let mut faults = Vec::new();
    let mut rejected = 0;
    for i in 0..CALLS {
        // Every tenth transfer is over the limit: the plugin's answer must depend on the transfer only.
        let amount = if i % 10 == 0 { 5_000 } else { 500 };
        let outcome = run_now(&set, &submission(1, eur(amount), None));
        match &outcome.verdict {
            Verdict::Apply(_) | Verdict::Validate(_) => assert_ne!(amount, 5_000),
            Verdict::Reject(r) => {
                assert_eq!((r.code.as_str(), amount), ("amount_over_limit", 5_000));
                rejected += 1;
            }
            Verdict::Fail(r) => faults.push(r.message.clone()),
        }
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    busy.into_iter().for_each(|t| t.join().unwrap());
    println!("{CALLS} calls beside {cores} busy threads in {elapsed:?} ({:.1} us a call)", elapsed.as_secs_f64() * 1e6 / CALLS as f64);
    assert!(faults.is_empty(), "{} faults, first: {:?}", faults.len(), faults.first());
    assert_eq!(rejected, CALLS / 10);
}

#[test]
fn a_plugin_cannot_carry_state_from_one_transfer_to_the_next_nor_forge_log_lines() {
    let sandbox = sandbox();
    let set = validators([load(&sandbox, "hostile_state", PluginKind::Validator, 1, json!({}))]);
    let (logs, writer) = Capture::new();
    let subscriber = tracing_subscriber::fmt().with_writer(writer).with_ansi(false).with_max_level(tracing::Level::DEBUG).finish();
    let started = Instant::now();
    let messages: Vec<String> = tracing::subscriber::with_default(subscriber, || {
        (0..20)
            .map(|i| {
                let secret = format!("customer {i} secret");
                let outcome = run_now(&set, &submission(1, eur(100), Some(&secret)));
                let Verdict::Reject(reason) = outcome.verdict else { panic!("{outcome:?}") };
                reason.message
            })
            .collect()
    });
    let elapsed_s = started.elapsed().as_secs_f64();
    for message in &messages {
        // A fresh instance every call: the plugin never sees an earlier call or an earlier transfer.
        assert_eq!(message, "call 1 of this instance; previous transfer: none");
    }
    let logs = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(!logs.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")), "a forged record reached the log:\n{logs}");
    assert!(!logs.contains('\u{1b}') && !logs.contains('\r'), "control characters reached the log");
    assert!(logs.contains("forged line\\u{1b}[31m\\u{d}"), "the forged text is kept, escaped:\n{logs}");
    // Each call tries 41 lines; 16 get past the per-call cap, and the plugin's
    // bucket (a burst of 200, then 50 a second) holds 20 calls' 320 to about 200.
    let written = logs.lines().filter(|l| l.contains("hostile-state flood") || l.contains("forged line")).count();
    let bucket_max = LOG_LINES_BURST_MAX as f64 + LOG_LINES_PER_S_MAX as f64 * (elapsed_s + 1.0);
    assert!(written >= LOG_LINES_BURST_MAX as usize && (written as f64) <= bucket_max && written < 20 * 16, "{written} lines");

    // A configure error is cut and cleaned too.
    let refused = unchecked(&sandbox, "hostile_state", PluginKind::Validator, 1, json!("refuse")).check();
    let Err(PluginError::ConfigRefused(text)) = refused else { panic!("{refused:?}") };
    assert!(!text.contains('\n') && !text.contains('\u{1b}') && text.chars().count() < 400, "{text}");
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone)]
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl Capture {
    fn new() -> (Arc<std::sync::Mutex<Vec<u8>>>, Self) {
        let buffer = Arc::new(std::sync::Mutex::new(Vec::new()));
        (buffer.clone(), Self(buffer))
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

/// Submits probes until one is decided by `plugin` at `version`.
async fn wait_for_version(app: &TestApp, plugin: &str, version: i64) {
    let picked = |decisions: &[Value]| decisions.iter().any(|d| d["plugin"] == plugin && d["version"] == version);
    app.wait_for_decisions(picked, &format!("{plugin} v{version} picked up")).await;
}

#[tokio::test]
async fn a_plugin_that_faults_fails_only_its_transfer_and_the_next_ones_complete_end_to_end() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "100.00").await;
    app.open_account(2, "EUR", "0").await;
    app.upload_plugin("looper", "hostile_loop", "validator", json!({}), true).await;
    let id = app.submit_accepted(json!({"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR"})).await;
    let failed = app.wait_final(&id).await;
    // The first transfer may have run on the set before the upload; wait for the swap if so.
    let failed = if failed["status"] == "completed" { wait_for_version_failure(&app).await } else { failed };
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["reason"]["code"], "plugin_failed");
    assert!(failed["reason"]["message"].as_str().unwrap().contains("looper v1"), "{failed}");
    assert_eq!(failed["decisions"][0]["outcome"], "failed");
    assert_eq!(failed["decisions"][0]["fault"], "fuel_exhausted", "{failed}");
    assert!(failed["reason"]["message"].as_str().unwrap().contains("fuel_exhausted"), "{failed}");
    let r = app.client.post(app.url("/v1/admin/plugins/looper/deactivate")).bearer_auth(common::ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let id = app.submit_accepted(json!({"sender_id": 1, "receiver_id": 2, "amount": "0.01", "currency": "EUR"})).await;
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
        let id = app.submit_accepted(json!({"sender_id": 1, "receiver_id": 2, "amount": "0.01", "currency": "EUR"})).await;
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
        (json!({"name": "masker", "advisory": true, "component": b64(&plugin_bytes("description"))}), 422, "plugin_advisory_not_validator"),
        (
            json!({"name": "fx", "kind": "converter", "advisory": true, "component": b64(&plugin_bytes("fx"))}),
            422,
            "plugin_advisory_not_validator",
        ),
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
    let list = app.admin_json("/v1/admin/plugins").await;
    assert_eq!(list["plugins"], json!([]), "nothing was stored");
    // Detected kind, then a clean upload works.
    let uploaded = app.upload_plugin("limits", "limits", "validator", json!({}), false).await;
    assert_eq!((uploaded["version"].as_i64(), uploaded["kind"].as_str()), (Some(1), Some("validator")));
    assert_eq!(uploaded["advisory"], false, "binding unless asked");
    app.stop().await;
}

#[tokio::test]
async fn an_advisory_validator_that_faults_is_recorded_as_advisory_and_the_transfer_completes() {
    use base64::Engine as _;
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "100.00").await;
    app.open_account(2, "EUR", "0").await;
    let component = base64::engine::general_purpose::STANDARD.encode(plugin_bytes("hostile_loop"));
    let r =
        app.admin_post("/v1/admin/plugins", &json!({"name": "looper", "component": component, "advisory": true, "activate": true})).await;
    assert_eq!(r.status(), 201);
    let uploaded: Value = r.json().await.unwrap();
    assert_eq!((uploaded["advisory"].as_bool(), uploaded["active"].as_bool()), (Some(true), Some(true)));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let done = loop {
        let id = app.submit_accepted(json!({"sender_id": 1, "receiver_id": 2, "amount": "1.00", "currency": "EUR"})).await;
        let done = app.wait_final(&id).await;
        if !done["decisions"].as_array().is_none_or(Vec::is_empty) {
            break done;
        }
        assert!(tokio::time::Instant::now() < deadline, "the advisory plugin was never picked up");
    };
    assert_eq!(done["status"], "completed", "{done}");
    let decision = &done["decisions"][0];
    assert_eq!((decision["outcome"].as_str(), decision["advisory"].as_bool()), (Some("failed"), Some(true)), "{done}");
    assert_eq!(decision["fault"], "fuel_exhausted", "{done}");
    let list = app.admin_json("/v1/admin/plugins").await;
    assert_eq!(list["plugins"][0]["advisory"], true);
    assert_audit_passes(&app.ledger()).await;
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
                ids.push(app.submit_accepted(json!({"sender_id": 1, "receiver_id": 2, "amount": "5.00", "currency": "EUR"})).await);
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
        let id = app
            .submit_accepted(
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

/// Submits probes until every one of `plugins` has decided one (the engine swaps sets between batches).
async fn wait_for_plugins(app: &TestApp, plugins: &[&str]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let id = app.submit_accepted(json!({"sender_id": 1, "receiver_id": 2, "amount": "0.01", "currency": "EUR"})).await;
        let done = app.wait_final(&id).await;
        let decided: Vec<&str> = done["decisions"].as_array().unwrap().iter().filter_map(|d| d["plugin"].as_str()).collect();
        if plugins.iter().all(|p| decided.contains(p)) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{plugins:?} were never all picked up: {done}");
    }
}

/// `velocity` is built against WIT 0.2 and declares the sender's 24 h
/// window; `limits` is built against 0.1 and needs nothing. Side by side,
/// under many concurrent submits of one sender, the daily limit is never
/// exceeded and exactly the transfers past it (in commit order) are refused.
#[tokio::test]
async fn a_0_2_velocity_validator_beside_a_0_1_one_holds_a_daily_limit_exactly_under_concurrent_submits() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "10000.00").await;
    app.open_account(2, "EUR", "0").await;
    let velocity = json!({"tier_metadata_key": "kyc_tier", "default_tier": "basic",
                          "daily_limit_minor": {"basic": {"EUR": 50_000}, "verified": {"EUR": 1_000_000}}});
    let uploaded = app.upload_plugin("velocity", "velocity", "validator", velocity, true).await;
    assert_eq!(
        (&uploaded["wit_version"], &uploaded["needs"]),
        (&json!("0.2.0"), &json!({"accounts": true, "velocity_windows_seconds": [86_400]}))
    );
    let uploaded = app.upload_plugin("limits", "limits", "validator", json!({"max_amount_minor": {"EUR": 100_000}}), true).await;
    assert_eq!((&uploaded["wit_version"], uploaded.get("needs")), (&json!("0.1.0"), None), "a 0.1 validator needs nothing");
    wait_for_plugins(&app, &["velocity", "limits"]).await;
    let listed = app.admin_json("/v1/admin/plugins").await;
    let velocity_listed = listed["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "velocity").unwrap();
    assert_eq!(velocity_listed["needs"]["velocity_windows_seconds"], json!([86_400]), "{listed}");

    // Validators run in the order they were activated: velocity (0.2), then limits (0.1).
    let too_big = app.submit_accepted(json!({"sender_id": 1, "receiver_id": 2, "amount": "1500.00", "currency": "EUR"})).await;
    let too_big = app.wait_final(&too_big).await;
    assert_eq!(too_big["reason"]["code"], "daily_limit_exceeded", "{too_big}");
    assert!(too_big["reason"]["message"].as_str().unwrap().contains("basic tier's limit of 500.00 EUR"), "{too_big}");

    let submits = (0..60).map(|i| {
        let body = json!({"sender_id": 1, "receiver_id": 2, "amount": format!("{}.{:02}", 10 + i % 13, i), "currency": "EUR"});
        let app = &app;
        async move { app.submit_accepted(body).await }
    });
    let ids = futures::future::join_all(submits).await;
    let mut outcomes = Vec::new();
    for id in &ids {
        outcomes.push(app.wait_final(id).await);
    }
    let (allowed, refused) = common::assert_daily_limit_decided_exactly(app.ledger().pool(), 1, 50_000, "daily_limit_exceeded").await;
    assert!(allowed > 10 && refused > 10, "{allowed} allowed, {refused} refused");
    let refusal = outcomes.iter().find(|o| o["status"] == "rejected").unwrap();
    let decided: Vec<(&str, &str)> =
        refusal["decisions"].as_array().unwrap().iter().map(|d| (d["plugin"].as_str().unwrap(), d["outcome"].as_str().unwrap())).collect();
    assert_eq!(decided, [("velocity", "rejected")], "the first refusal wins: {refusal}");
    let completed = outcomes.iter().find(|o| o["status"] == "completed").unwrap();
    assert_eq!(completed["decisions"].as_array().unwrap().len(), 2, "both decisions recorded: {completed}");
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

/// Account metadata set over the API (`PATCH`) and transfer metadata reach
/// the 0.2 examples: a tier raises `velocity`'s daily limit for the
/// transfers processed after the change, and `channels` refuses a listed
/// channel and a listed country.
#[tokio::test]
async fn account_and_transfer_metadata_set_over_the_api_decide_the_0_2_examples_end_to_end() {
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "5000.00").await;
    app.open_account(2, "EUR", "0").await;
    app.open_account(3, "EUR", "0").await;
    let velocity = json!({"tier_metadata_key": "kyc_tier", "default_tier": "basic",
                          "daily_limit_minor": {"basic": {"EUR": 10_000}, "verified": {"EUR": 1_000_000}}});
    app.upload_plugin("velocity", "velocity", "validator", velocity, true).await;
    let channels = json!({"blocked_channels": ["crypto_atm"], "blocked_countries": ["KP"]});
    let uploaded = app.upload_plugin("channels", "channels", "validator", channels, true).await;
    assert_eq!(uploaded["needs"], json!({"accounts": true, "velocity_windows_seconds": []}), "countries need the accounts");
    wait_for_plugins(&app, &["velocity", "channels"]).await;
    let patch = |owner: i64, metadata: Value| {
        let app = &app;
        async move {
            let r = app
                .client
                .patch(app.url(&format!("/v1/accounts/{owner}/EUR")))
                .bearer_auth(common::ADMIN_TOKEN)
                .json(&json!({"metadata": metadata}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    let transfer = |to: i64, amount: &str, metadata: Value| json!({"sender_id": 1, "receiver_id": to, "amount": amount, "currency": "EUR", "metadata": metadata});

    let basic = app.wait_final(&app.submit_accepted(transfer(2, "150.00", json!({}))).await).await;
    assert_eq!(basic["reason"]["code"], "daily_limit_exceeded", "{basic}");
    patch(1, json!({"kyc_tier": "verified"})).await;
    let verified = app.wait_final(&app.submit_accepted(transfer(2, "150.00", json!({"channel": "web"}))).await).await;
    assert_eq!(verified["status"], "completed", "the tier set before it was processed applies: {verified}");
    assert_eq!(verified["metadata"], json!({"channel": "web"}));

    let atm = app.wait_final(&app.submit_accepted(transfer(2, "1.00", json!({"channel": "crypto_atm"}))).await).await;
    assert_eq!(atm["reason"]["code"], "channel_blocked", "{atm}");
    patch(3, json!({"country": "KP"})).await;
    let listed = app.wait_final(&app.submit_accepted(transfer(3, "1.00", json!({}))).await).await;
    assert_eq!(listed["reason"]["code"], "country_blocked", "{listed}");
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

#[tokio::test]
async fn python_and_javascript_validators_uploaded_over_the_api_get_limits_by_size_and_decide_transfers_end_to_end() {
    use base64::Engine as _;
    let app = TestApp::spawn().await;
    app.open_account(1, "EUR", "100.00").await;
    app.open_account(2, "EUR", "0").await;
    // An 18 MB component is a 25 MB base64 body: far past the API's 16 KiB, within the upload route's limit.
    // Compiling an 18 MB component takes seconds (more with other tests on the cores): past the
    // test client's 30 s, within the upload route's own time limit.
    let patient = reqwest::Client::builder().timeout(Duration::from_secs(300)).build().unwrap();
    let upload = |body: Value| {
        let request = patient.post(app.url("/v1/admin/plugins")).bearer_auth(common::ADMIN_TOKEN).json(&body);
        async move {
            let r = request.send().await.unwrap();
            let status = r.status();
            let answer: Value = r.json().await.unwrap();
            assert_eq!(status, 201, "{answer}");
            answer
        }
    };
    let python = upload(json!({"name": "limits-py", "kind": "validator", "config": {"max_amount_minor": {"EUR": 5_000}}, "activate": true,
                               "component": base64::engine::general_purpose::STANDARD.encode(plugin_bytes("limits_py"))}))
    .await;
    assert_eq!(python["wit_version"], "0.2.0");
    assert_eq!(python["limits"]["memory_bytes_max"], 128 << 20, "a component with a language runtime gets runtime defaults: {python}");
    let component = base64::engine::general_purpose::STANDARD.encode(plugin_bytes("limits_js"));
    let body = json!({"name": "limits-js", "component": component, "activate": true, "config": {"blocked_owners": [3]},
                      "limits": {"call_fuel_max": 300_000_000}});
    let javascript = upload(body).await;
    assert_eq!(javascript["limits"]["call_fuel_max"], 300_000_000, "the operator's limit is kept: {javascript}");
    assert_eq!(javascript["limits"]["memory_bytes_max"], 128 << 20, "the others are the defaults: {javascript}");
    let rust = app.upload_plugin("limits", "limits", "validator", json!({}), false).await;
    assert_eq!(rust["limits"], json!({"memory_bytes_max": 16 << 20, "call_fuel_max": 10_000_000, "configure_fuel_max": 20_000_000}));
    let listed = app.admin_json("/v1/admin/plugins").await;
    let listed_js = listed["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "limits-js").unwrap();
    assert_eq!(listed_js["limits"], javascript["limits"], "the limits are stored with the version");
    wait_for_plugins(&app, &["limits-py", "limits-js"]).await;

    let over = app.submit_accepted(json!({"sender_id": 1, "receiver_id": 2, "amount": "60.00", "currency": "EUR"})).await;
    let over = app.wait_final(&over).await;
    assert_eq!((&over["status"], &over["reason"]["code"]), (&json!("rejected"), &json!("amount_over_limit")), "{over}");
    assert_eq!(over["reason"]["message"], "The amount 60.00 EUR is over the limit of 50.00 EUR per transfer.", "{over}");
    let within = app.submit_accepted(json!({"sender_id": 1, "receiver_id": 2, "amount": "10.00", "currency": "EUR"})).await;
    let within = app.wait_final(&within).await;
    assert_eq!(within["status"], "completed", "{within}");
    let decided: Vec<&str> = within["decisions"].as_array().unwrap().iter().map(|d| d["plugin"].as_str().unwrap()).collect();
    assert!(decided.contains(&"limits-py") && decided.contains(&"limits-js"), "{within}");
    assert_audit_passes(&app.ledger()).await;
    app.stop().await;
}

#[tokio::test]
async fn limits_past_their_ceilings_and_components_past_the_upload_limit_are_refused_with_codes() {
    use base64::Engine as _;
    let db = common::TestDb::new().await;
    let mut settings = common::test_settings(&db);
    settings.plugin_upload_bytes_max = 100_000;
    let app = TestApp::spawn_with(db, settings, transfer_engine::startup::Role::All).await;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let limits = b64(&plugin_bytes("limits"));
    let cases = [
        (json!({"name": "limits", "component": limits, "limits": {"memory_bytes_max": 1u64 << 40}}), 422, "plugin_limits_invalid"),
        (json!({"name": "limits", "component": limits, "limits": {"call_fuel_max": 0}}), 422, "plugin_limits_invalid"),
        (json!({"name": "limits", "component": limits, "limits": {"fuel": 5}}), 422, "invalid_body"),
        // Within the body limit (the envelope has slack), past the component limit by one byte.
        (json!({"name": "limits", "component": b64(&vec![0; 100_001])}), 413, "plugin_too_large"),
        // Past the body limit: refused before it is read whole.
        (json!({"name": "limits-py", "component": b64(&plugin_bytes("limits_py"))}), 413, "body_too_large"),
    ];
    for (body, status, code) in cases {
        let r = app.admin_post("/v1/admin/plugins", &body).await;
        assert_eq!(r.status().as_u16(), status, "{}", body["limits"]);
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], code, "{}", body["limits"]);
    }
    app.stop().await;
}
