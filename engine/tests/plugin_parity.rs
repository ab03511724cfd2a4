//! Plugins in three languages, one policy: the Rust `limits`, the Python
//! `limits-py` (componentize-py) and the JavaScript `limits-js`
//! (componentize-js) must take the same configs and give the same verdicts,
//! codes and messages. And the WASI that the Python and JavaScript runtimes
//! import is present but grants nothing, and is deterministic.
//!
//! Plain `#[test]`s, off any async runtime: that is where plugin calls run
//! (a plugin's WASI calls may block on the runtime).

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use common::plugin_bytes;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};
use transfer_engine::domain::{Amount, Currency};
use transfer_engine::plugins::bindings::types;
use transfer_engine::plugins::{LoadedPlugin, PluginKind, PluginMeta, Sandbox, SandboxLimits};

/// One sandbox for the whole binary, and each component compiled once in it
/// (compiling an 18 MB Python component takes seconds), or once across runs
/// (`common::compiled_dir`).
fn sandbox() -> Arc<Sandbox> {
    static SANDBOX: OnceLock<Arc<Sandbox>> = OnceLock::new();
    SANDBOX
        .get_or_init(|| {
            Sandbox::with_compiled_dir(SandboxLimits { instances_max: 16, ..SandboxLimits::default() }, Some(&common::compiled_dir()))
                .unwrap()
        })
        .clone()
}

fn compiled(sandbox: &Arc<Sandbox>, file_stem: &str) -> Result<(wasmtime::component::Component, usize), String> {
    static COMPILED: OnceLock<Mutex<HashMap<String, (wasmtime::component::Component, usize)>>> = OnceLock::new();
    // Held while compiling, so tests that start together compile each component once.
    let mut cache = COMPILED.get_or_init(Mutex::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(hit) = cache.get(file_stem) {
        return Ok(hit.clone());
    }
    let bytes = plugin_bytes(file_stem);
    let component = sandbox.compile(&bytes).map_err(|e| e.to_string())?;
    cache.insert(file_stem.into(), (component.clone(), bytes.len()));
    Ok((component, bytes.len()))
}

fn load(sandbox: &Arc<Sandbox>, file_stem: &str, config: &str) -> Result<LoadedPlugin, String> {
    let (component, size_bytes) = compiled(sandbox, file_stem)?;
    let limits = sandbox.limits.defaults_for(size_bytes);
    let meta = PluginMeta {
        name: file_stem.replace('_', "-"),
        version: 1,
        kind: PluginKind::Validator,
        sha256: [1; 32],
        config: config.into(),
        limits,
    };
    let plugin = LoadedPlugin::new(sandbox.clone(), meta, &component).map_err(|e| e.to_string())?;
    plugin.check().map_err(|e| e.to_string())?;
    Ok(plugin)
}

const PORTS: [&str; 3] = ["limits", "limits_py", "limits_js"];

fn currency(code: &str) -> types::Currency {
    let c = Currency::parse(code).unwrap();
    types::Currency { code: c.code().into(), exponent: c.exponent() }
}

fn transfer(n: u64, sender_id: i64, receiver_id: i64, code: &str, amount_minor: Option<i64>) -> types::Transfer {
    types::Transfer {
        id: format!("00000000-0000-4000-8000-{n:012x}"),
        sender_id,
        receiver_id,
        currency: currency(code),
        amount_minor,
        original: None,
        description: None,
        submitted_at_ms: 1_780_000_000_000 + n as i64,
        metadata: Vec::new(),
    }
}

fn no_context() -> types::Context {
    types::Context { sender: None, receiver: None, velocity: Vec::new() }
}

/// Allow, or the rejection's code and message.
fn verdict(plugin: &LoadedPlugin, transfer: &types::Transfer) -> Result<Option<(String, String)>, String> {
    plugin.validate(transfer, &no_context()).map(|r| r.map(|r| (r.code, r.message))).map_err(|fault| fault.to_string())
}

/// The example transfers as a validator sees them (the converted one without an amount).
fn example_transfers() -> Vec<types::Transfer> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/transfers.jsonl");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .enumerate()
        .map(|(n, line)| {
            let line: Value = serde_json::from_str(line).unwrap();
            let code = line["currency"].as_str().unwrap();
            let amount =
                line["amount"].as_str().and_then(|a| Amount::parse_decimal(a, Currency::parse(code).unwrap()).ok()).map(|a| a.minor());
            transfer(n as u64, line["sender_id"].as_i64().unwrap(), line["receiver_id"].as_i64().unwrap(), code, amount)
        })
        .collect()
}

/// Transfers around every edge the policy has: at, under and over each
/// limit, blocked owners on either side, no amount, extreme and negative
/// values (componentize-js 0.23 hands s64 over unsigned), exponents 0, 2, 3.
fn generated_transfers(count: u64) -> Vec<types::Transfer> {
    let mut rng = StdRng::seed_from_u64(14);
    let owners = [1, 2, 3, 666, 667, -5, i64::MAX, i64::MIN, 1 << 40];
    let currencies = [("EUR", 1_000_000), ("JPY", 100_000), ("BHD", 5_000), ("USD", i64::MAX), ("GBP", 0)];
    (0..count)
        .map(|n| {
            let (code, limit) = currencies[rng.gen_range(0..currencies.len())];
            let amount = match rng.gen_range(0..10) {
                0 => None,
                1 => Some(limit),
                2 => Some(limit.saturating_add(1)),
                3 => Some(limit.saturating_sub(1)),
                4 => Some(i64::MAX),
                5 => Some(-rng.gen_range(1..1_000_000)),
                _ => Some(rng.gen_range(1..=2_000_000)),
            };
            let sender = owners[rng.gen_range(0..owners.len())];
            let receiver = if rng.gen_bool(0.5) { owners[rng.gen_range(0..owners.len())] } else { rng.r#gen() };
            transfer(1_000 + n, sender, receiver, code, amount)
        })
        .collect()
}

#[test]
fn the_rust_python_and_javascript_limits_give_identical_verdicts_codes_and_messages() {
    let sandbox = sandbox();
    let config = json!({"max_amount_minor": {"EUR": 1_000_000, "JPY": 100_000, "BHD": 5_000, "USD": i64::MAX, "GBP": 0},
                        "blocked_owners": [666, 667, -5, i64::MIN]})
    .to_string();
    let ports: Vec<LoadedPlugin> = PORTS.iter().map(|p| load(&sandbox, p, &config).unwrap_or_else(|e| panic!("{p}: {e}"))).collect();
    let transfers: Vec<types::Transfer> = example_transfers().into_iter().chain(generated_transfers(2_000)).collect();
    let (mut rejected, mut codes) = (0, std::collections::BTreeSet::new());
    for transfer in &transfers {
        let rust = verdict(&ports[0], transfer).unwrap_or_else(|fault| panic!("limits faulted on {transfer:?}: {fault}"));
        for (port, plugin) in PORTS.iter().zip(&ports).skip(1) {
            assert_eq!(verdict(plugin, transfer), Ok(rust.clone()), "{port} disagrees with limits on {transfer:?}");
        }
        if let Some((code, _)) = rust {
            rejected += 1;
            codes.insert(code);
        }
    }
    // The comparison covered every outcome the policy has, not just allows.
    assert!(rejected > 200 && rejected < transfers.len() - 200, "{rejected} of {} rejected", transfers.len());
    assert_eq!(codes.into_iter().collect::<Vec<_>>(), ["amount_missing", "amount_over_limit", "owner_blocked"]);
}

#[test]
fn the_three_limits_ports_accept_and_refuse_the_same_configs() {
    let sandbox = sandbox();
    let accepted = [json!({}), json!({"max_amount_minor": {}}), json!({"blocked_owners": []}), json!({"max_amount_minor": {"EUR": 0}})];
    let refused = [
        json!([]),
        json!({"max_amount_minor": {"EUR": -1}}),
        json!({"max_amount_minor": {"eur": 5}}),
        json!({"max_amount_minor": {"EUR": 1.5}}),
        json!({"max_amount_minor": {"EUR": "5"}}),
        json!({"max_amount_minor": {"EUR": 9_223_372_036_854_775_808u64}}),
        json!({"blocked_owners": [1.0]}),
        json!({"blocked_owners": {"1": true}}),
        json!({"max_amount": {"EUR": 5}}),
    ];
    for port in PORTS {
        for config in &accepted {
            load(&sandbox, port, &config.to_string()).unwrap_or_else(|e| panic!("{port} refused {config}: {e}"));
        }
        for config in &refused {
            let error = load(&sandbox, port, &config.to_string()).err().unwrap_or_else(|| panic!("{port} accepted {config}"));
            assert!(error.contains("invalid limits config"), "{port} on {config}: {error}");
        }
    }
}

#[test]
fn a_python_plugin_sees_a_wasi_that_grants_nothing_and_derives_time_and_randomness_from_the_transfer() {
    let sandbox = sandbox();
    let probe = load(&sandbox, "wasi_probe_py", "{}").unwrap();
    let seen = |t: &types::Transfer| -> Value {
        let (code, message) = verdict(&probe, t).unwrap().expect("the probe always rejects");
        assert_eq!(code, "probe");
        serde_json::from_str(&message).unwrap()
    };
    let first = transfer(1, 1, 2, "EUR", Some(5));
    let seen_first = seen(&first);
    // The wall clock is the transfer's time reference; an hour's sleep
    // returns at once and moves only the plugin's own monotonic clock.
    assert_eq!(seen_first["time_ms"], json!(first.submitted_at_ms), "{seen_first}");
    assert_eq!(seen_first["slept_ns"], json!(3_600_000_000_000u64), "{seen_first}");
    // Nothing ambient: no environment, arguments, files or network.
    assert_eq!(seen_first["env"], json!({}), "{seen_first}");
    assert_eq!(seen_first["argv"], json!([]), "{seen_first}");
    for refused in ["open_file", "list_root", "socket", "resolve"] {
        assert_ne!(seen_first[refused], json!("allowed"), "{refused}: {seen_first}");
    }
    // Randomness is a function of the transfer id: the same again for the
    // same transfer (a replay decides the same), different for another.
    assert_eq!(seen(&first), seen_first);
    let other = seen(&transfer(2, 1, 2, "EUR", Some(5)));
    assert_ne!(other["random_hex"], seen_first["random_hex"]);
    assert_ne!(other["random_module"], seen_first["random_module"]);
}

#[test]
fn a_python_and_a_javascript_plugin_run_within_their_default_limits() {
    let sandbox = sandbox();
    let config = json!({"max_amount_minor": {"EUR": 1_000_000}, "blocked_owners": [666]}).to_string();
    for port in ["limits_py", "limits_js"] {
        let plugin = load(&sandbox, port, &config).unwrap();
        let defaults = sandbox.limits.defaults_for(plugin_bytes(port).len());
        assert_eq!(defaults.memory_bytes_max, SandboxLimits::RUNTIME_MEMORY_BYTES_DEFAULT, "{port} is sized as a runtime component");
        for t in generated_transfers(50) {
            verdict(&plugin, &t).unwrap_or_else(|fault| panic!("{port} faulted: {fault}"));
        }
        let (call_fuel, configure_fuel) = plugin.fuel_used_max();
        eprintln!("{port}: a call burned at most {call_fuel} fuel, configure at most {configure_fuel}");
        // Headroom: the worst call and configure seen stay far below the defaults.
        assert!(call_fuel * 10 < defaults.call_fuel_max, "{port}: {call_fuel} of {}", defaults.call_fuel_max);
        assert!(configure_fuel * 10 < defaults.configure_fuel_max, "{port}: {configure_fuel} of {}", defaults.configure_fuel_max);
    }
}

#[test]
fn a_component_importing_wasi_http_is_refused_saying_what_to_change() {
    let sandbox = sandbox();
    // What componentize-js's default features add: an import of wasi:http. The
    // component `(component (import "wasi:http/outgoing-handler@0.2.3" (instance
    // (export "handle" (func)))))`, encoded by `jco parse` (the engine is built
    // without wasmtime's `wat` feature: it accepts binaries only).
    let bytes = b"\x00\x61\x73\x6d\x0d\x00\x01\x00\x07\x13\x01\x42\x02\x01\x40\x00\x01\x00\x04\x00\x06\x68\x61\x6e\x64\x6c\x65\x01\x00\x0a\x25\x01\x00\x20\x77\x61\x73\x69\x3a\x68\x74\x74\x70\x2f\x6f\x75\x74\x67\x6f\x69\x6e\x67\x2d\x68\x61\x6e\x64\x6c\x65\x72\x40\x30\x2e\x32\x2e\x33\x05\x00";
    let component = sandbox.compile(bytes).unwrap();
    let meta = PluginMeta {
        name: "fetcher".into(),
        version: 1,
        kind: PluginKind::Validator,
        sha256: [2; 32],
        config: "{}".into(),
        limits: sandbox.limits.defaults_for(0),
    };
    let error = LoadedPlugin::new(sandbox.clone(), meta, &component).err().expect("refused").to_string();
    assert!(error.contains("wasi:http/outgoing-handler@0.2.3") && error.contains("disableFeatures"), "{error}");
}
