//! Plugin costs: per-hook call on a live instance. `cargo bench --bench plugins`
//! (needs `plugins/build.sh`). What the plugins cost the processor as a whole
//! is scenarios 2 and 3 of `scripts/bench` (BENCHMARKS.md).

use std::sync::Arc;
use std::time::Instant;

use transfer_engine::domain::TransferId;
use transfer_engine::plugins::bindings::types;
use transfer_engine::plugins::{LoadedPlugin, PluginKind, PluginMeta, Sandbox, SandboxLimits};

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
    let component = sandbox.compile(&plugin(file)).unwrap();
    let meta = PluginMeta { name: file.into(), version: 1, kind, sha256: [0; 32], config: config(file) };
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

fn hook_costs() {
    let sandbox = Sandbox::new(SandboxLimits { instances_max: 8, ..SandboxLimits::default() }).unwrap();
    let eur = types::Currency { code: "EUR".into(), exponent: 2 };
    let transfer = types::Transfer {
        id: TransferId::generate().to_string(),
        sender_id: 1,
        receiver_id: 2,
        currency: eur.clone(),
        amount_minor: Some(12_345),
        original: None,
        description: Some("rent for March, card 4111 1111 1111 1234".into()),
    };
    let limits = load(&sandbox, "limits", PluginKind::Validator);
    let fx = load(&sandbox, "fx", PluginKind::Converter);
    let description = load(&sandbox, "description", PluginKind::Describer);
    let usd = types::Money { amount_minor: 1_000, currency: types::Currency { code: "USD".into(), exponent: 2 } };
    let text = transfer.description.clone().unwrap();
    println!("Per-hook cost on a live instance ({CALLS} calls each, one thread):");
    println!("  limits.validate     {:>6.2} us", per_call_us(|| drop(limits.validate(&transfer).unwrap())));
    println!("  fx.convert          {:>6.2} us", per_call_us(|| drop(fx.convert(&usd, &eur).unwrap())));
    println!("  description.rewrite {:>6.2} us", per_call_us(|| drop(description.rewrite(&text, &transfer).unwrap())));
}

fn main() {
    hook_costs();
}
