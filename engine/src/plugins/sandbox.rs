//! The sandbox every plugin runs in: one wasmtime `Engine` with the pooling
//! allocator and epoch interruption, one `Linker` that offers nothing but
//! `host.log`, and per-store limits on memory. No WASI, no clock, no I/O.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::{debug, info, warn};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, StoreLimits, StoreLimitsBuilder};

use super::bindings::{Level, validator};
use super::{PluginError, PluginKind};

/// One epoch tick: the granularity of the per-call CPU time limit.
pub const EPOCH_TICK_MS: u64 = 1;
/// Most log lines one call may write (a looping plugin must not flood the logs).
const LOG_LINES_PER_CALL_MAX: u32 = 16;
const LOG_LINE_CHARS_MAX: usize = 512;

/// Limits on every plugin call, configurable with safe defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxLimits {
    /// CPU time one hook call may take before it is interrupted.
    pub call_ms_max: u64,
    /// CPU time instantiation plus `configure` may take.
    pub configure_ms_max: u64,
    /// Linear memory one plugin instance may grow to.
    pub memory_bytes_max: usize,
    /// Plugin instances that can be live at once (pool slots).
    pub instances_max: u32,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self { call_ms_max: 5, configure_ms_max: 200, memory_bytes_max: 16 << 20, instances_max: 64 }
    }
}

/// What a store carries: its limits and whose plugin it is (for logs).
pub struct HostState {
    pub limits: StoreLimits,
    pub label: Arc<str>,
    pub log_lines_left: u32,
}

impl HostState {
    pub fn new(label: Arc<str>, memory_bytes_max: usize) -> Self {
        let limits =
            StoreLimitsBuilder::new().memory_size(memory_bytes_max).trap_on_grow_failure(true).instances(32).tables(32).memories(8).build();
        Self { limits, label, log_lines_left: LOG_LINES_PER_CALL_MAX }
    }

    pub fn reset_for_call(&mut self) {
        self.log_lines_left = LOG_LINES_PER_CALL_MAX;
    }
}

impl validator::transfer::plugin::host::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        if self.log_lines_left == 0 {
            return;
        }
        self.log_lines_left -= 1;
        let message: String = message.chars().take(LOG_LINE_CHARS_MAX).collect();
        let plugin = &*self.label;
        match level {
            Level::Debug => debug!(plugin, "{message}"),
            Level::Info => info!(plugin, "{message}"),
            Level::Warn | Level::Error => warn!(plugin, "{message}"),
        }
    }
}

impl validator::transfer::plugin::types::Host for HostState {}

/// The engine, linker and epoch ticker shared by all plugins of a process.
pub struct Sandbox {
    pub engine: Engine,
    pub linker: Linker<HostState>,
    pub limits: SandboxLimits,
    /// Stops the ticker thread when the sandbox goes away.
    ticker_stop: Arc<AtomicBool>,
}

impl Sandbox {
    pub fn new(limits: SandboxLimits) -> Result<Arc<Self>, PluginError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(limits.instances_max)
            .total_core_instances(limits.instances_max * 4)
            .total_memories(limits.instances_max * 2)
            .total_tables(limits.instances_max * 4)
            .max_memory_size(limits.memory_bytes_max);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            // Reserve only what a plugin may use: many engines (tests) share one address space.
            .memory_reservation(limits.memory_bytes_max as u64)
            .memory_reservation_for_growth(0)
            .memory_guard_size(64 << 10)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| PluginError::Sandbox(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        validator::Validator::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| PluginError::Sandbox(format!("{e:#}")))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (ticking, stop) = (engine.clone(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(EPOCH_TICK_MS));
                    ticking.increment_epoch();
                }
            })
            .map_err(|e| PluginError::Sandbox(e.to_string()))?;
        Ok(Arc::new(Self { engine, linker, limits, ticker_stop }))
    }

    /// Compiles component bytes; refuses anything that is not a component.
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, PluginError> {
        if !bytes.starts_with(b"\0asm") {
            return Err(PluginError::Invalid("not a WebAssembly binary".into()));
        }
        Component::new(&self.engine, bytes).map_err(|e| PluginError::Invalid(format!("not a valid component: {e:#}")))
    }

    /// Which of our worlds a component implements, if any.
    pub fn detect_kind(&self, component: &Component) -> Option<PluginKind> {
        PluginKind::ALL.into_iter().find(|kind| super::loaded::Prepared::new(self, component, *kind).is_ok())
    }

    /// Ticks allowed for a call that may take `ms`.
    pub fn ticks(ms: u64) -> u64 {
        ms.div_ceil(EPOCH_TICK_MS).max(1)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
