//! Plugin costs per hook call. `cargo bench --bench plugins` (needs
//! `plugins/build.sh`). What the plugins cost the processor as a whole is
//! scenarios 2 and 3 of `scripts/bench` (BENCHMARKS.md).
//!
//! The engine runs every call on a fresh instance (instantiate from the pool,
//! `configure`, call); the first table is that cost. The second is the same
//! call on one live, reused instance, the design before issue 12 item 11,
//! kept to show what isolation between transfers costs.

use std::sync::Arc;
use std::time::Instant;

use transfer_engine::domain::TransferId;
use transfer_engine::plugins::bindings::{down, types};
use transfer_engine::plugins::guard::LogBudget;
use transfer_engine::plugins::loaded::Prepared;
use transfer_engine::plugins::sandbox::HostState;
use transfer_engine::plugins::wasi::CallStamp;
use transfer_engine::plugins::{LoadedPlugin, PluginKind, PluginMeta, Sandbox, SandboxLimits};
use wasmtime::Store;

const CALLS: u32 = 100_000;

fn plugin(file: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../plugins/dist/{file}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run plugins/build.sh)", path.display()))
}

fn config(file: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/plugin-config/{file}.json"));
    std::fs::read_to_string(path).unwrap()
}

fn load(sandbox: &Arc<Sandbox>, file: &str, kind: PluginKind) -> LoadedPlugin {
    let bytes = plugin(file);
    let component = sandbox.compile(&bytes).unwrap();
    let limits = sandbox.limits.defaults_for(bytes.len());
    let meta = PluginMeta { name: file.into(), version: 1, kind, sha256: [0; 32], config: config(file), limits };
    let loaded = LoadedPlugin::new(sandbox.clone(), meta, &component).unwrap();
    loaded.check().unwrap();
    loaded
}

fn per_call_us(mut call: impl FnMut()) -> f64 {
    for _ in 0..1_000 {
        call();
    }
    let started = Instant::now();
    for _ in 0..CALLS {
        call();
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(CALLS)
}

fn transfer() -> types::Transfer {
    types::Transfer {
        id: TransferId::generate().to_string(),
        sender_id: 1,
        receiver_id: 2,
        currency: types::Currency { code: "EUR".into(), exponent: 2 },
        amount_minor: Some(12_345),
        original: None,
        description: Some("rent for March, card 4111 1111 1111 1234".into()),
        submitted_at_ms: 1_800_000_000_000,
        metadata: Vec::new(),
    }
}

fn fresh_per_call(sandbox: &Arc<Sandbox>) {
    let transfer = transfer();
    let eur = transfer.currency.clone();
    let limits = load(sandbox, "limits", PluginKind::Validator);
    let fx = load(sandbox, "fx", PluginKind::Converter);
    let description = load(sandbox, "description", PluginKind::Describer);
    let usd = types::Money { amount_minor: 1_000, currency: types::Currency { code: "USD".into(), exponent: 2 } };
    let text = transfer.description.clone().unwrap();
    let context = types::Context { sender: None, receiver: None, velocity: Vec::new() };
    println!("Per hook call as the engine runs it: fresh instance + configure + call ({CALLS} calls each, one thread):");
    println!("  limits.validate     {:>6.2} us", per_call_us(|| drop(limits.validate(&transfer, &context).unwrap())));
    println!("  fx.convert          {:>6.2} us", per_call_us(|| drop(fx.convert(&usd, &eur, &transfer).unwrap())));
    println!("  description.rewrite {:>6.2} us", per_call_us(|| drop(description.rewrite(&text, &transfer).unwrap())));
    // velocity (WIT 0.2) with the context the commit gives it: both accounts and one 24 h window.
    let velocity = load(sandbox, "velocity", PluginKind::Validator);
    let account = |owner_id| types::Account {
        owner_id,
        balance_minor: 1_000_000,
        floor_minor: 0,
        opened_at_ms: 1_700_000_000_000,
        metadata: Vec::new(),
    };
    let window = types::WindowTotal { window_seconds: 86_400, count: 12, sum_minor: 30_000 };
    let full = types::Context { sender: Some(account(1)), receiver: Some(account(2)), velocity: vec![window] };
    println!("  velocity.validate   {:>6.2} us", per_call_us(|| drop(velocity.validate(&transfer, &full).unwrap())));
    for plugin in [&limits, &fx, &description, &velocity] {
        let (call, configure) = plugin.fuel_used_max();
        println!("  {:<19} fuel: {call} a call, {configure} for instantiate + configure", plugin.meta.name);
    }
}

/// A store as the engine makes one, with fuel and time enough for any number of calls.
fn unbounded_store(sandbox: &Sandbox, label: &str, memory_bytes_max: u64) -> Store<HostState> {
    let state = HostState::new(label.into(), memory_bytes_max, Arc::new(LogBudget::default()), CallStamp::NO_TRANSFER);
    let mut store = Store::new(&sandbox.engine, state);
    store.limiter(|state| &mut state.limiter);
    store.set_epoch_deadline(u64::MAX / 2);
    store.set_fuel(u64::MAX / 2).unwrap();
    store
}

/// The validator on one live instance, configured once (the previous design).
fn live_instance(sandbox: &Arc<Sandbox>) {
    let component = sandbox.compile(&plugin("limits")).unwrap();
    let Prepared::Validator01(pre) = Prepared::new(sandbox, &component, PluginKind::Validator).unwrap() else { unreachable!() };
    let memory_bytes_max = sandbox.limits.memory_bytes_max as u64;
    let mut store = unbounded_store(sandbox, "limits@1", memory_bytes_max);
    let live = pre.instantiate(&mut store).unwrap();
    live.call_configure(&mut store, &config("limits")).unwrap().unwrap();
    let transfer = transfer();
    println!("The same validator on one live instance (state shared by every transfer: the design this replaced):");
    println!("  limits.validate     {:>6.2} us", per_call_us(|| drop(live.call_validate(&mut store, &down::transfer(&transfer)).unwrap())));
    let limits_config = config("limits");
    println!("  limits.configure    {:>6.2} us", per_call_us(|| live.call_configure(&mut store, &limits_config).unwrap().unwrap()));
    // Instantiation without configure: what a configure snapshot could save at most.
    let bare = per_call_us(|| {
        std::hint::black_box(pre.instantiate(&mut unbounded_store(sandbox, "limits@1", memory_bytes_max)).unwrap());
    });
    println!("  new store + instantiate only {bare:>6.2} us");
}

/// One policy (`limits`) in each language: what the component weighs, what
/// compiling it at upload costs, and what its calls cost.
/// `-- languages [rust|python|javascript]... [--calls N]`: N (200 unless given)
/// calls each. A large N leaves time to attach a profiler to the calls alone
/// (`perf record -g -p PID` once "calls start" is printed), after compilation.
fn languages(sandbox: &Arc<Sandbox>) {
    let args: Vec<String> = std::env::args().skip_while(|a| a != "languages").skip(1).collect();
    let calls = match args.iter().position(|a| a == "--calls") {
        Some(i) => args.get(i + 1).and_then(|n| n.parse::<u32>().ok()).filter(|n| *n > 0).expect("--calls needs a positive number"),
        None => 200,
    };
    println!("limits by language (fresh instance + configure + call; {calls} calls each after 20 to warm up):");
    println!("  {:<10} {:>12} {:>12} {:>14} {:>12}", "language", "size bytes", "compile ms", "first call us", "per call us");
    let transfer = transfer();
    let context = types::Context { sender: None, receiver: None, velocity: Vec::new() };
    let only: Vec<String> = args.iter().filter(|a| !a.starts_with("--") && a.parse::<u32>().is_err()).map(|a| a.to_lowercase()).collect();
    for (language, file) in [("Rust", "limits"), ("Python", "limits_py"), ("JavaScript", "limits_js")] {
        if !only.is_empty() && !only.contains(&language.to_lowercase()) {
            continue;
        }
        let bytes = plugin(file);
        let started = Instant::now();
        let component = sandbox.compile(&bytes).unwrap();
        let compile_ms = started.elapsed().as_secs_f64() * 1e3;
        let limits = sandbox.limits.defaults_for(bytes.len());
        let meta =
            PluginMeta { name: file.into(), version: 1, kind: PluginKind::Validator, sha256: [0; 32], config: config("limits"), limits };
        let loaded = LoadedPlugin::new(sandbox.clone(), meta, &component).unwrap();
        let started = Instant::now();
        drop(loaded.validate(&transfer, &context).unwrap());
        let first_us = started.elapsed().as_secs_f64() * 1e6;
        for _ in 0..20 {
            drop(loaded.validate(&transfer, &context).unwrap());
        }
        eprintln!("{language}: calls start");
        let started = Instant::now();
        for _ in 0..calls {
            drop(loaded.validate(&transfer, &context).unwrap());
        }
        let per_call_us = started.elapsed().as_secs_f64() * 1e6 / f64::from(calls);
        println!("  {language:<10} {:>12} {compile_ms:>12.0} {first_us:>14.0} {per_call_us:>12.1}", bytes.len());
        if let Prepared::Validator02(pre) = Prepared::new(sandbox, &component, PluginKind::Validator).unwrap() {
            // Where a call's time goes: instantiation, configure and the hook on a live instance.
            let store = || unbounded_store(sandbox, file, limits.memory_bytes_max);
            let timed = |mut f: Box<dyn FnMut() + '_>| {
                let started = Instant::now();
                for _ in 0..200 {
                    f();
                }
                started.elapsed().as_secs_f64() * 1e6 / 200.0
            };
            let instantiate_us = timed(Box::new(|| {
                std::hint::black_box(pre.instantiate(&mut store()).unwrap());
            }));
            let mut live_store = store();
            let live = pre.instantiate(&mut live_store).unwrap();
            let limits_config = config("limits");
            let configure_us = timed(Box::new(|| drop(live.call_configure(&mut live_store, &limits_config).unwrap())));
            let mut live_store = store();
            let live = pre.instantiate(&mut live_store).unwrap();
            live.call_configure(&mut live_store, &limits_config).unwrap().unwrap();
            let validate_us = timed(Box::new(|| drop(live.call_validate(&mut live_store, &transfer, &context).unwrap())));
            println!(
                "  {:<10} of which: instantiate {instantiate_us:.1} us, configure (live) {configure_us:.1} us, validate (live) {validate_us:.1} us",
                ""
            );
        }
    }
}

fn main() {
    println!(
        "Pool slots reset only the pages a call wrote (PAGEMAP_SCAN): {}",
        if wasmtime::PoolingAllocationConfig::is_pagemap_scan_available() { "yes" } else { "no, this kernel cannot say which" }
    );
    let sandbox = Sandbox::new(SandboxLimits { instances_max: 8, ..SandboxLimits::default() }).unwrap();
    if std::env::args().any(|a| a == "languages") {
        languages(&sandbox);
        return;
    }
    fresh_per_call(&sandbox);
    live_instance(&sandbox);
    languages(&sandbox);
}
