//! One plugin version, compiled and pre-linked (`InstancePre`).
//!
//! Every call runs on a fresh instance in a fresh store: instantiate from the
//! pooling allocator (the memory starts from the module's copy-on-write
//! image), `configure` with the operator's JSON, make the one hook call, drop
//! it all. Nothing a plugin keeps in its globals or heap survives into the
//! next transfer, so a decision depends only on (transfer, config), and one
//! customer's data cannot reach another's rejection. The price, measured
//! with `cargo bench --bench plugins`, is in BENCHMARKS.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Store;
use wasmtime::component::Component;

use super::bindings::{converter, describer, types, validator};
use super::guard::{self, LogBudget};
use super::sandbox::{HostState, Sandbox, WALL_CLOCK_BACKSTOP_MS};
use super::{PluginError, PluginKind};

/// Longest fault text (a trap's message, a `configure` error) kept from a plugin.
pub const FAULT_TEXT_CHARS_MAX: usize = 300;

/// Who a plugin is: enough to name it in a decision record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginMeta {
    pub name: String,
    pub version: i32,
    pub kind: PluginKind,
    pub sha256: [u8; 32],
    /// The operator's JSON, passed to `configure` before every call.
    pub config: String,
}

impl PluginMeta {
    /// "limits v3 (sha256 1a2b3c4d)": how failures name the plugin.
    pub fn label(&self) -> String {
        format!("{} v{} (sha256 {})", self.name, self.version, &hex::encode(self.sha256)[..8])
    }
}

/// A component linked against the sandbox and checked to export `kind`'s world.
pub enum Prepared {
    Validator(validator::ValidatorPre<HostState>),
    Converter(converter::ConverterPre<HostState>),
    Describer(describer::DescriberPre<HostState>),
}

impl Prepared {
    pub fn new(sandbox: &Sandbox, component: &Component, kind: PluginKind) -> Result<Self, PluginError> {
        let pre = sandbox.linker.instantiate_pre(component).map_err(|e| {
            PluginError::Invalid(format!(
                "imports something the sandbox does not offer (only transfer:plugin/host): {}",
                guard::clean(&format!("{e:#}"), 1_000)
            ))
        })?;
        let wrong_world = |e: wasmtime::Error| {
            PluginError::Invalid(format!("does not export the {kind} world: {}", guard::clean(&format!("{e:#}"), 1_000)))
        };
        Ok(match kind {
            PluginKind::Validator => Self::Validator(validator::ValidatorPre::new(pre).map_err(wrong_world)?),
            PluginKind::Converter => Self::Converter(converter::ConverterPre::new(pre).map_err(wrong_world)?),
            PluginKind::Describer => Self::Describer(describer::DescriberPre::new(pre).map_err(wrong_world)?),
        })
    }
}

enum Bindings {
    Validator(validator::Validator),
    Converter(converter::Converter),
    Describer(describer::Describer),
}

/// Why a call produced no answer. Each has a stable snake_case code, recorded
/// in the decision (`fault`) and named in the `plugin_failed` message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("could not be instantiated (instantiate_failed): {0}")]
    Instantiate(String),
    #[error("refused its configuration (config_refused): {0}")]
    ConfigRefused(String),
    /// The deterministic limit: the same call fails the same way on any machine, busy or idle.
    #[error("ran out of fuel (fuel_exhausted) in {stage}: it may burn {fuel_max} units, about one per WebAssembly instruction")]
    FuelExhausted { stage: Stage, fuel_max: u64 },
    /// Only a stalled host gets here: fuel stops any plugin long before.
    #[error("was stopped by the wall-clock backstop (wall_clock_backstop) after {ms} ms in {stage}")]
    WallClockBackstop { stage: Stage, ms: u64 },
    #[error("exceeded its memory limit (memory_exceeded) of {bytes_max} bytes")]
    MemoryExceeded { bytes_max: usize },
    #[error("trapped (trap): {0}")]
    Trap(String),
    #[error("answered nonsense (nonsense): {0}")]
    Nonsense(String),
}

impl Fault {
    /// The stable code of this kind of fault, as stored in a decision's `fault`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Instantiate(_) => "instantiate_failed",
            Self::ConfigRefused(_) => "config_refused",
            Self::FuelExhausted { .. } => "fuel_exhausted",
            Self::WallClockBackstop { .. } => "wall_clock_backstop",
            Self::MemoryExceeded { .. } => "memory_exceeded",
            Self::Trap(_) => "trap",
            Self::Nonsense(_) => "nonsense",
        }
    }
}

/// Which part of a call a fault happened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Instantiation and `configure`, under `configure_fuel_max`.
    Configure,
    /// The hook itself, under `call_fuel_max`.
    Call,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Configure => "configure",
            Self::Call => "its call",
        })
    }
}

pub struct LoadedPlugin {
    pub meta: PluginMeta,
    /// Shadow mode, chosen by the operator at upload and only for validators:
    /// the plugin's rejections and faults are recorded but do not stop the transfer.
    pub advisory: bool,
    sandbox: Arc<Sandbox>,
    prepared: Prepared,
    label: Arc<str>,
    /// This version's log rate, shared by all its calls.
    log_budget: Arc<LogBudget>,
    /// The most fuel one hook call has burned (successful calls only): how
    /// close the plugin runs to `call_fuel_max`.
    call_fuel_used_max: AtomicU64,
    /// The most fuel instantiation plus `configure` has burned.
    configure_fuel_used_max: AtomicU64,
}

impl LoadedPlugin {
    pub fn new(sandbox: Arc<Sandbox>, meta: PluginMeta, component: &Component) -> Result<Self, PluginError> {
        let prepared = Prepared::new(&sandbox, component, meta.kind)?;
        let label: Arc<str> = format!("{}@{}", meta.name, meta.version).into();
        Ok(Self {
            meta,
            advisory: false,
            sandbox,
            prepared,
            label,
            log_budget: Arc::default(),
            call_fuel_used_max: AtomicU64::new(0),
            configure_fuel_used_max: AtomicU64::new(0),
        })
    }

    /// Makes the plugin advisory; refused for anything but a validator, where
    /// there is no verdict to ignore (a transfer needs its amount and description).
    pub fn with_advisory(mut self, advisory: bool) -> Result<Self, PluginError> {
        if advisory && self.meta.kind != PluginKind::Validator {
            return Err(PluginError::AdvisoryNotValidator(self.meta.kind));
        }
        self.advisory = advisory;
        Ok(self)
    }

    /// Instantiates and configures once, so a bad config is refused at upload.
    pub fn check(&self) -> Result<(), PluginError> {
        match self.instantiate(true) {
            Ok(_) => Ok(()),
            Err(Fault::ConfigRefused(message)) => Err(PluginError::ConfigRefused(message)),
            Err(fault) => Err(PluginError::Invalid(fault.to_string())),
        }
    }

    /// The most fuel one successful hook call and one `configure` have burned so far.
    pub fn fuel_used_max(&self) -> (u64, u64) {
        (self.call_fuel_used_max.load(Ordering::Relaxed), self.configure_fuel_used_max.load(Ordering::Relaxed))
    }

    /// A fresh store and instance, configured with the operator's JSON.
    /// `configure` may log only when `log_configure` (at load, not before every call).
    fn instantiate(&self, log_configure: bool) -> Result<(Store<HostState>, Bindings), Fault> {
        let limits = self.sandbox.limits;
        let mut state = HostState::new(self.label.clone(), limits.memory_bytes_max, self.log_budget.clone());
        state.quiet = !log_configure;
        let mut store = Store::new(&self.sandbox.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_fuel(limits.configure_fuel_max).expect("the sandbox's engine meters fuel");
        store.set_epoch_deadline(Sandbox::backstop_ticks());
        let config = self.meta.config.as_str();
        let instantiated = match &self.prepared {
            Prepared::Validator(pre) => pre.instantiate(&mut store).and_then(|b| {
                let configured = b.call_configure(&mut store, config)?;
                Ok((Bindings::Validator(b), configured))
            }),
            Prepared::Converter(pre) => pre.instantiate(&mut store).and_then(|b| {
                let configured = b.call_configure(&mut store, config)?;
                Ok((Bindings::Converter(b), configured))
            }),
            Prepared::Describer(pre) => pre.instantiate(&mut store).and_then(|b| {
                let configured = b.call_configure(&mut store, config)?;
                Ok((Bindings::Describer(b), configured))
            }),
        };
        let (bindings, configured) = instantiated.map_err(|e| self.classify(e, &store, Stage::Configure))?;
        configured.map_err(|message| Fault::ConfigRefused(guard::clean(&message, FAULT_TEXT_CHARS_MAX)))?;
        let used = limits.configure_fuel_max.saturating_sub(store.get_fuel().unwrap_or(0));
        self.configure_fuel_used_max.fetch_max(used, Ordering::Relaxed);
        store.data_mut().quiet = false;
        Ok((store, bindings))
    }

    /// Runs `call` on a fresh, configured instance under the per-call fuel
    /// budget; the instance and its store are dropped afterwards, fault or not.
    fn fresh<R>(&self, call: impl FnOnce(&mut Store<HostState>, &Bindings) -> wasmtime::Result<R>) -> Result<R, Fault> {
        let (mut store, bindings) = self.instantiate(false)?;
        let call_fuel_max = self.sandbox.limits.call_fuel_max;
        store.set_fuel(call_fuel_max).expect("the sandbox's engine meters fuel");
        store.set_epoch_deadline(Sandbox::backstop_ticks());
        let answer = call(&mut store, &bindings).map_err(|e| self.classify(e, &store, Stage::Call))?;
        let used = call_fuel_max.saturating_sub(store.get_fuel().unwrap_or(0));
        self.call_fuel_used_max.fetch_max(used, Ordering::Relaxed);
        Ok(answer)
    }

    fn classify(&self, e: wasmtime::Error, store: &Store<HostState>, stage: Stage) -> Fault {
        let limits = self.sandbox.limits;
        if store.data().limiter.memory_refused {
            return Fault::MemoryExceeded { bytes_max: limits.memory_bytes_max };
        }
        let fuel_max = match stage {
            Stage::Configure => limits.configure_fuel_max,
            Stage::Call => limits.call_fuel_max,
        };
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::OutOfFuel) => Fault::FuelExhausted { stage, fuel_max },
            Some(wasmtime::Trap::Interrupt) => Fault::WallClockBackstop { stage, ms: WALL_CLOCK_BACKSTOP_MS },
            Some(trap) => Fault::Trap(guard::clean(&trap.to_string(), FAULT_TEXT_CHARS_MAX)),
            None => Fault::Trap(guard::clean(&format!("{e:#}"), FAULT_TEXT_CHARS_MAX)),
        }
    }

    pub fn validate(&self, transfer: &types::Transfer) -> Result<validator::Verdict, Fault> {
        self.fresh(|store, bindings| match bindings {
            Bindings::Validator(b) => b.call_validate(store, transfer),
            _ => unreachable!("a validator plugin holds validator bindings"),
        })
    }

    pub fn convert(
        &self,
        source: &types::Money,
        target: &types::Currency,
    ) -> Result<Result<converter::Conversion, types::Rejection>, Fault> {
        self.fresh(|store, bindings| match bindings {
            Bindings::Converter(b) => b.call_convert(store, source, target),
            _ => unreachable!("a converter plugin holds converter bindings"),
        })
    }

    pub fn rewrite(&self, description: &str, transfer: &types::Transfer) -> Result<Result<String, types::Rejection>, Fault> {
        self.fresh(|store, bindings| match bindings {
            Bindings::Describer(b) => b.call_rewrite(store, description, transfer),
            _ => unreachable!("a describer plugin holds describer bindings"),
        })
    }
}
