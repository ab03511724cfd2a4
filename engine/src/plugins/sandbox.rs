//! The sandbox every plugin runs in: one wasmtime `Engine` with the pooling
//! allocator (copy-on-write memory images), fuel metering and, as a backstop,
//! epoch interruption; one `Linker` that offers `host.log` (of each interface
//! version) and a WASI that grants nothing and is deterministic (`wasi`);
//! and per-store limits on memory. No real clock, no randomness, no I/O.
//!
//! The limit on a call is **fuel**, not time: wasmtime charges about one unit
//! per WebAssembly instruction executed, so a call's budget is the same on an
//! idle machine and on a saturated one, and a valid transfer never fails
//! because the host was busy. The epoch ticker is only a wall-clock backstop
//! (`WALL_CLOCK_BACKSTOP_MS`, far above what any budget of fuel takes) so that
//! a host-side bug cannot hang a processor.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, StoreLimits, StoreLimitsBuilder,
};

use super::bindings::{v0_1, v0_2};
use super::guard::{self, LogBudget, LogPermit};
use super::precompiled::PrecompiledDir;
use super::wasi::{self, CallStamp, WasiState};
use super::{PluginError, PluginKind};

/// How often the epoch advances: the granularity of the wall-clock backstop.
pub const EPOCH_TICK_MS: u64 = 10;
/// Wall-clock time after which any call (instantiation, `configure` or a
/// hook) is interrupted whatever fuel it has left. Not the policy limit (fuel
/// is): a plugin within its fuel finishes in well under a millisecond, so
/// only a stalled host thread gets near this.
pub const WALL_CLOCK_BACKSTOP_MS: u64 = 1_000;
/// Most log lines one call may write, on top of the per-plugin rate (`guard::LogBudget`).
const LOG_LINES_PER_CALL_MAX: u32 = 16;
const LOG_LINE_CHARS_MAX: usize = 512;
/// Memory (and table) bytes of a pool slot reset in place (memset) instead of
/// unmapped when an instance is dropped, as one is after every call, where
/// the kernel cannot say which pages a call wrote. Measured with `cargo
/// bench --bench plugins` (dev profile, busy machine): 64 KiB gave 31-36 µs
/// a call, 0 gave 38-42 µs.
const KEEP_RESIDENT_BYTES: usize = 64 << 10;
/// The same where the kernel can (Linux 6.7+, `PAGEMAP_SCAN`): only the pages
/// a call wrote, up to this much, are reset in place, so they stay mapped
/// and the next call in the slot takes no page faults for them. A Rust
/// plugin writes a few pages of stack near 1 MiB and a few of heap above it.
const KEEP_RESIDENT_WRITTEN_BYTES: usize = 4 << 20;

/// The sandbox's limits: the defaults each plugin version's own limits
/// (`PluginLimits`) start from, and the ceilings they may not pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxLimits {
    /// Fuel (about one unit per WebAssembly instruction) one hook call of a
    /// compiled-language plugin may burn by default before it is stopped
    /// with `fuel_exhausted`.
    pub call_fuel_max: u64,
    /// Fuel instantiation plus `configure` may burn by default (start
    /// functions and parsing the operator's JSON; runs before every call).
    pub configure_fuel_max: u64,
    /// Linear memory one instance of a compiled-language plugin may grow to by default.
    pub memory_bytes_max: usize,
    /// The most linear memory any plugin may be given, by default or at
    /// upload: the size of a pool slot (address space reserved, not memory used).
    pub slot_memory_bytes_max: usize,
    /// Plugin instances that can be live at once (pool slots): each call
    /// holds one while it runs.
    pub instances_max: u32,
}

/// One plugin version's limits, fixed at upload and stored with it, so a
/// version decides the same way whatever the engine's settings are later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginLimits {
    /// Linear memory one instance may grow to.
    pub memory_bytes_max: u64,
    /// Fuel one hook call may burn.
    pub call_fuel_max: u64,
    /// Fuel instantiation plus `configure` may burn.
    pub configure_fuel_max: u64,
}

/// What an operator may set at upload: any of the three; the others are
/// the defaults for the component's size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    pub memory_bytes_max: Option<u64>,
    pub call_fuel_max: Option<u64>,
    pub configure_fuel_max: Option<u64>,
}

impl SandboxLimits {
    /// Measured (`a_plugin_call_costs_a_small_fixed_amount_of_fuel_far_below_the_default_limit`
    /// in tests/plugins.rs): a call burns 2,206 units in `limits`, 3,194 in
    /// `fx`, and 71,643 in `description` on the longest description accepted
    /// (280 characters); instantiation plus `configure` burns at most 21,836
    /// (`fx`). The defaults leave 140 times the worst call and 900 times the
    /// worst `configure`. The hostile loop burns the 10,000,000 in 0.8 to 1.8 ms
    /// of CPU here, which bounds what a looping plugin costs a transfer.
    pub const CALL_FUEL_MAX_DEFAULT: u64 = 10_000_000;
    pub const CONFIGURE_FUEL_MAX_DEFAULT: u64 = 20_000_000;
    /// A component at least this large carries a language runtime (CPython
    /// in a componentize-py component, about 18 MB; SpiderMonkey in a
    /// componentize-js one, about 12 MB); compiled-language plugins are a
    /// few hundred KB at most.
    pub const RUNTIME_COMPONENT_BYTES_MIN: usize = 2 << 20;
    /// Defaults for a component with a language runtime. Measured
    /// (`a_python_and_a_javascript_plugin_run_within_their_default_limits` in
    /// tests/plugin_parity.rs, which prints them): `limits-py` burns at most
    /// 125,659 a call and 311,497 to instantiate and configure, `limits-js`
    /// 1,260,639 and 1,540,321. The defaults leave 150 times the JS call and
    /// 250 times its configure; a loop burning them all costs tens of ms of CPU.
    pub const RUNTIME_MEMORY_BYTES_DEFAULT: u64 = 128 << 20;
    pub const RUNTIME_CALL_FUEL_MAX_DEFAULT: u64 = 200_000_000;
    pub const RUNTIME_CONFIGURE_FUEL_MAX_DEFAULT: u64 = 400_000_000;
    /// The most fuel an operator may give a call. The wall-clock backstop
    /// (`WALL_CLOCK_BACKSTOP_MS`) stops a call long before it burns this much.
    pub const FUEL_MAX_CEILING: u64 = 100_000_000_000;

    /// The limits a component of `component_bytes` gets unless the operator says otherwise.
    pub fn defaults_for(&self, component_bytes: usize) -> PluginLimits {
        let slot = self.slot_memory_bytes_max as u64;
        if component_bytes >= Self::RUNTIME_COMPONENT_BYTES_MIN {
            PluginLimits {
                memory_bytes_max: Self::RUNTIME_MEMORY_BYTES_DEFAULT.min(slot),
                call_fuel_max: Self::RUNTIME_CALL_FUEL_MAX_DEFAULT.max(self.call_fuel_max),
                configure_fuel_max: Self::RUNTIME_CONFIGURE_FUEL_MAX_DEFAULT.max(self.configure_fuel_max),
            }
        } else {
            PluginLimits {
                memory_bytes_max: (self.memory_bytes_max as u64).min(slot),
                call_fuel_max: self.call_fuel_max,
                configure_fuel_max: self.configure_fuel_max,
            }
        }
    }

    /// The defaults for the component's size, with what the operator asked
    /// for in their place; refused past a ceiling.
    pub fn resolve(&self, component_bytes: usize, request: LimitsRequest) -> Result<PluginLimits, PluginError> {
        let defaults = self.defaults_for(component_bytes);
        let limits = PluginLimits {
            memory_bytes_max: request.memory_bytes_max.unwrap_or(defaults.memory_bytes_max),
            call_fuel_max: request.call_fuel_max.unwrap_or(defaults.call_fuel_max),
            configure_fuel_max: request.configure_fuel_max.unwrap_or(defaults.configure_fuel_max),
        };
        let slot = self.slot_memory_bytes_max as u64;
        if !(1..=slot).contains(&limits.memory_bytes_max) {
            return Err(PluginError::LimitsInvalid(format!(
                "memory_bytes_max {} is outside 1 to {slot} (plugin_slot_memory_bytes_max)",
                limits.memory_bytes_max
            )));
        }
        for (name, fuel) in [("call_fuel_max", limits.call_fuel_max), ("configure_fuel_max", limits.configure_fuel_max)] {
            if !(1..=Self::FUEL_MAX_CEILING).contains(&fuel) {
                return Err(PluginError::LimitsInvalid(format!("{name} {fuel} is outside 1 to {}", Self::FUEL_MAX_CEILING)));
            }
        }
        Ok(limits)
    }
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            call_fuel_max: Self::CALL_FUEL_MAX_DEFAULT,
            configure_fuel_max: Self::CONFIGURE_FUEL_MAX_DEFAULT,
            memory_bytes_max: 16 << 20,
            slot_memory_bytes_max: 256 << 20,
            instances_max: 64,
        }
    }
}

/// Store limits that remember whether they refused memory, so a memory bomb
/// is reported as `memory_exceeded` and not as a generic trap.
pub struct Limiter {
    inner: StoreLimits,
    /// Set when a `memory.grow` past `memory_bytes_max` was refused (and trapped).
    pub memory_refused: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let answer = self.inner.memory_growing(current, desired, maximum);
        if !matches!(answer, Ok(true)) {
            self.memory_refused = true;
        }
        answer
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_refused = true;
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// What a store carries: its limits and whose plugin it is (for logs). A
/// store lives for one call, so nothing here outlives a transfer except the
/// plugin's shared log budget.
pub struct HostState {
    pub limiter: Limiter,
    pub label: Arc<str>,
    pub log_lines_left: u32,
    /// The plugin version's log rate, shared by all its calls.
    pub log_budget: Arc<LogBudget>,
    /// Drops the plugin's log lines: set while `configure` runs before a
    /// call (it runs before every call; what it says was logged at load).
    pub quiet: bool,
    /// The call's WASI, derived from the transfer it decides.
    pub wasi: WasiState,
}

impl HostState {
    pub fn new(label: Arc<str>, memory_bytes_max: u64, log_budget: Arc<LogBudget>, stamp: CallStamp<'_>) -> Self {
        let memory_bytes_max = usize::try_from(memory_bytes_max).unwrap_or(usize::MAX);
        let inner =
            StoreLimitsBuilder::new().memory_size(memory_bytes_max).trap_on_grow_failure(true).instances(32).tables(32).memories(8).build();
        let limiter = Limiter { inner, memory_refused: false };
        Self { limiter, label, log_lines_left: LOG_LINES_PER_CALL_MAX, log_budget, quiet: false, wasi: WasiState::new(stamp) }
    }

    /// Writes what the plugin printed to stdout (info) and stderr (warn) to
    /// the log, under the same bounds as `host.log`; drops it while `quiet`.
    pub fn flush_output(&mut self) {
        let Some((lines, dropped_bytes)) = self.wasi.take_output() else { return };
        for (stream, line) in lines {
            let level = match stream {
                wasi::Stream::Stdout => LogLevel::Info,
                wasi::Stream::Stderr => LogLevel::Warn,
            };
            self.log(level, line);
        }
        if dropped_bytes > 0 {
            self.log(
                LogLevel::Warn,
                format!("({dropped_bytes} more bytes of output dropped: over {} a call)", wasi::OUTPUT_BYTES_PER_CALL_MAX),
            );
        }
    }
}

/// The log levels of every interface version.
#[derive(Clone, Copy)]
enum LogLevel {
    Debug,
    Info,
    Warn,
}

impl HostState {
    fn log(&mut self, level: LogLevel, message: String) {
        if self.quiet || self.log_lines_left == 0 {
            return;
        }
        self.log_lines_left -= 1;
        let LogPermit::Write { dropped_before } = self.log_budget.take(Instant::now()) else { return };
        let plugin = &*self.label;
        if dropped_before > 0 {
            warn!(plugin, dropped = dropped_before, "Plugin log lines dropped (over {} a second).", guard::LOG_LINES_PER_S_MAX);
        }
        // One line of printable text: a plugin cannot start a forged record.
        let message = guard::clean(&message, LOG_LINE_CHARS_MAX);
        match level {
            LogLevel::Debug => debug!(plugin, plugin_log = true, "{message}"),
            LogLevel::Info => info!(plugin, plugin_log = true, "{message}"),
            LogLevel::Warn => warn!(plugin, plugin_log = true, "{message}"),
        }
    }
}

impl v0_1::host::Host for HostState {
    fn log(&mut self, level: v0_1::Level, message: String) {
        let level = match level {
            v0_1::Level::Debug => LogLevel::Debug,
            v0_1::Level::Info => LogLevel::Info,
            v0_1::Level::Warn | v0_1::Level::Error => LogLevel::Warn,
        };
        HostState::log(self, level, message);
    }
}

impl v0_2::host::Host for HostState {
    fn log(&mut self, level: v0_2::Level, message: String) {
        let level = match level {
            v0_2::Level::Debug => LogLevel::Debug,
            v0_2::Level::Info => LogLevel::Info,
            v0_2::Level::Warn | v0_2::Level::Error => LogLevel::Warn,
        };
        HostState::log(self, level, message);
    }
}

impl v0_1::types::Host for HostState {}
impl v0_2::types::Host for HostState {}

/// The engine, linker and epoch ticker shared by all plugins of a process.
pub struct Sandbox {
    pub engine: Engine,
    pub linker: Linker<HostState>,
    pub limits: SandboxLimits,
    /// Where compiled components are kept between runs, if anywhere.
    precompiled: Option<PrecompiledDir>,
    /// Stops the ticker thread when the sandbox goes away.
    ticker_stop: Arc<AtomicBool>,
}

impl Sandbox {
    pub fn new(limits: SandboxLimits) -> Result<Arc<Self>, PluginError> {
        Self::with_compiled_dir(limits, None)
    }

    /// A sandbox that keeps compiled components in `compiled_dir` (see
    /// `precompiled`), and loads them from it instead of compiling again.
    pub fn with_compiled_dir(limits: SandboxLimits, compiled_dir: Option<&Path>) -> Result<Arc<Self>, PluginError> {
        let precompiled = compiled_dir.map(PrecompiledDir::open).transpose()?;
        let pagemap = PoolingAllocationConfig::is_pagemap_scan_available();
        let keep_resident = if pagemap { KEEP_RESIDENT_WRITTEN_BYTES } else { KEEP_RESIDENT_BYTES };
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(limits.instances_max)
            .total_core_instances(limits.instances_max * 4)
            .total_memories(limits.instances_max * 2)
            .total_tables(limits.instances_max * 4)
            .max_memory_size(limits.slot_memory_bytes_max)
            .pagemap_scan(if pagemap { Enabled::Yes } else { Enabled::No })
            .linear_memory_keep_resident(keep_resident)
            .table_keep_resident(keep_resident);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            // Each call starts from the module's initial memory image, mapped copy-on-write.
            .memory_init_cow(true)
            // Reserve only what a plugin may use: many engines (tests) share one address space.
            .memory_reservation(limits.slot_memory_bytes_max as u64)
            .memory_reservation_for_growth(0)
            // Bounds are checked by the compiled code, not by guard pages and
            // signals. With guard pages, the pages a plugin grows into are
            // made accessible (mprotect) during its call and inaccessible
            // again before the next one, two system calls with TLB shootdowns
            // on every call; explicit checks cost a compare per memory access
            // of code that runs a few thousand instructions. `cargo bench
            // --bench plugins`: 26-29 µs a call against 33-38 with guards.
            .signals_based_traps(false)
            .memory_guard_size(0)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| PluginError::Sandbox(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        // Both interface versions: a 0.1 component imports host@0.1.0, a 0.2 one host@0.2.0.
        v0_1::validator::Validator::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| PluginError::Sandbox(format!("{e:#}")))?;
        v0_2::validator::Validator::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(|e| PluginError::Sandbox(format!("{e:#}")))?;
        wasi::add_to_linker(&mut linker).map_err(|e| PluginError::Sandbox(format!("{e:#}")))?;
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
        Ok(Arc::new(Self { engine, linker, limits, precompiled, ticker_stop }))
    }

    /// Compiles component bytes; refuses anything that is not a component.
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, PluginError> {
        let sha256 = self.precompiled.as_ref().map(|_| Sha256::digest(bytes).into());
        self.compile_keyed(sha256, bytes)
    }

    /// As `compile`, for a caller that already holds the bytes' sha256 (the
    /// registry keys its versions by it): the key of `plugin_compiled_dir`.
    pub fn compile_keyed(&self, sha256: Option<[u8; 32]>, bytes: &[u8]) -> Result<Component, PluginError> {
        if !bytes.starts_with(b"\0asm") {
            return Err(PluginError::Invalid("not a WebAssembly binary".into()));
        }
        if let (Some(dir), Some(sha256)) = (&self.precompiled, &sha256)
            && let Some(component) = dir.load(&self.engine, sha256)
        {
            return Ok(component);
        }
        let component = Component::new(&self.engine, bytes)
            .map_err(|e| PluginError::Invalid(format!("not a valid component: {}", guard::clean(&format!("{e:#}"), 1_000))))?;
        if let (Some(dir), Some(sha256)) = (&self.precompiled, &sha256) {
            dir.store(&self.engine, sha256, &component);
        }
        Ok(component)
    }

    /// Which of our worlds a component implements, if any.
    pub fn detect_kind(&self, component: &Component) -> Option<PluginKind> {
        PluginKind::ALL.into_iter().find(|kind| super::loaded::Prepared::new(self, component, *kind).is_ok())
    }

    /// Epoch ticks in the wall-clock backstop.
    pub fn backstop_ticks() -> u64 {
        WALL_CLOCK_BACKSTOP_MS.div_ceil(EPOCH_TICK_MS)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}
