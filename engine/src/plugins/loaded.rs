//! One plugin version, compiled and pre-linked (`InstancePre`).
//!
//! Every call runs on a fresh instance in a fresh store: instantiate from the
//! pooling allocator (the memory starts from the module's copy-on-write
//! image), `configure` with the operator's JSON, make the one hook call, drop
//! it all. Nothing a plugin keeps in its globals or heap survives into the
//! next transfer, so a decision depends only on (transfer, context, config), and one
//! customer's data cannot reach another's rejection. The price, measured
//! with `cargo bench --bench plugins`, is in BENCHMARKS.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Store;
use wasmtime::component::Component;

use super::bindings::{WitVersion, down, types, v0_1, v0_2};
use super::guard::{self, LogBudget};
use super::sandbox::{HostState, PluginLimits, Sandbox, WALL_CLOCK_BACKSTOP_MS};
use super::wasi::CallStamp;
use super::{PluginError, PluginKind};
use crate::hooks::ContextNeeds;

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
    /// This version's memory and fuel.
    pub limits: PluginLimits,
}

impl PluginMeta {
    /// "limits v3 (sha256 1a2b3c4d)": how failures name the plugin.
    pub fn label(&self) -> String {
        format!("{} v{} (sha256 {})", self.name, self.version, &hex::encode(self.sha256)[..8])
    }
}

/// A component linked against the sandbox and checked to export `kind`'s
/// world, in the interface version it was built against.
pub enum Prepared {
    Validator01(v0_1::validator::ValidatorPre<HostState>),
    Converter01(v0_1::converter::ConverterPre<HostState>),
    Describer01(v0_1::describer::DescriberPre<HostState>),
    Validator02(v0_2::validator::ValidatorPre<HostState>),
    Converter02(v0_2::converter::ConverterPre<HostState>),
    Describer02(v0_2::describer::DescriberPre<HostState>),
}

impl Prepared {
    /// Tries the current interface version, then the older one.
    pub fn new(sandbox: &Sandbox, component: &Component, kind: PluginKind) -> Result<Self, PluginError> {
        let pre = sandbox.linker.instantiate_pre(component).map_err(|e| unoffered_import(sandbox, component, &e))?;
        let wrong_world = |current: wasmtime::Error, old: wasmtime::Error| {
            PluginError::Invalid(format!(
                "does not export the {kind} world of transfer:plugin@0.2.0 ({}) nor of 0.1.0 ({})",
                guard::clean(&format!("{current:#}"), 500),
                guard::clean(&format!("{old:#}"), 500)
            ))
        };
        Ok(match kind {
            PluginKind::Validator => match v0_2::validator::ValidatorPre::new(pre.clone()) {
                Ok(p) => Self::Validator02(p),
                Err(current) => Self::Validator01(v0_1::validator::ValidatorPre::new(pre).map_err(|old| wrong_world(current, old))?),
            },
            PluginKind::Converter => match v0_2::converter::ConverterPre::new(pre.clone()) {
                Ok(p) => Self::Converter02(p),
                Err(current) => Self::Converter01(v0_1::converter::ConverterPre::new(pre).map_err(|old| wrong_world(current, old))?),
            },
            PluginKind::Describer => match v0_2::describer::DescriberPre::new(pre.clone()) {
                Ok(p) => Self::Describer02(p),
                Err(current) => Self::Describer01(v0_1::describer::DescriberPre::new(pre).map_err(|old| wrong_world(current, old))?),
            },
        })
    }

    pub fn wit_version(&self) -> WitVersion {
        match self {
            Self::Validator01(_) | Self::Converter01(_) | Self::Describer01(_) => WitVersion::V0_1,
            Self::Validator02(_) | Self::Converter02(_) | Self::Describer02(_) => WitVersion::V0_2,
        }
    }
}

/// Why a component cannot be linked, saying what to change: the usual
/// cause is a language toolchain's default build importing an interface the
/// sandbox does not offer (wasi:http in componentize-js's default features).
fn unoffered_import(sandbox: &Sandbox, component: &Component, error: &wasmtime::Error) -> PluginError {
    let offered = |name: &str| {
        ["transfer:plugin/", "wasi:io/", "wasi:clocks/", "wasi:random/", "wasi:cli/", "wasi:filesystem/", "wasi:sockets/"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
    };
    let component_type = component.component_type();
    let unoffered: Vec<&str> = component_type.imports(&sandbox.engine).map(|(name, _)| name).filter(|name| !offered(name)).collect();
    let hint = if unoffered.iter().any(|name| name.starts_with("wasi:http/")) {
        " Plugins make no network calls: with componentize-js, build with disableFeatures: ['http', 'fetch-event'] \
         (the componentize.mjs that `plugins new` writes does); with componentize-py, do not import wasi:http."
    } else {
        ""
    };
    let what = if unoffered.is_empty() {
        String::new()
    } else {
        format!(" It imports {}, which the sandbox does not offer.", unoffered.iter().take(5).copied().collect::<Vec<_>>().join(", "))
    };
    PluginError::Invalid(guard::clean(
        &format!(
            "cannot be linked: a plugin may import transfer:plugin/host and WASI 0.2 (io, clocks, random, cli, filesystem, \
             sockets: present, granting nothing).{what}{hint} ({e:#})",
            e = error
        ),
        1_500,
    ))
}

enum Bindings {
    Validator01(v0_1::validator::Validator),
    Converter01(v0_1::converter::Converter),
    Describer01(v0_1::describer::Describer),
    Validator02(v0_2::validator::Validator),
    Converter02(v0_2::converter::Converter),
    Describer02(v0_2::describer::Describer),
}

/// A converter's answer, whichever interface version gave it.
pub type Conversion = v0_2::converter::Conversion;

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
    MemoryExceeded { bytes_max: u64 },
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
    /// What the validator declared it needs (nothing for other kinds and for 0.1).
    pub needs: ContextNeeds,
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
        let mut plugin = Self {
            meta,
            needs: ContextNeeds::default(),
            advisory: false,
            sandbox,
            prepared,
            label,
            log_budget: Arc::default(),
            call_fuel_used_max: AtomicU64::new(0),
            configure_fuel_used_max: AtomicU64::new(0),
        };
        // What a validator needs comes from `configure`. If it faults here it
        // faults on every call too, and fails closed there: no context needed.
        if let Prepared::Validator02(_) = plugin.prepared {
            plugin.needs = plugin.instantiate(false, CallStamp::NO_TRANSFER).map(|(_, _, needs)| needs).unwrap_or_default();
        }
        Ok(plugin)
    }

    /// The interface version the component was built against.
    pub fn wit_version(&self) -> WitVersion {
        self.prepared.wit_version()
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
        match self.instantiate(true, CallStamp::NO_TRANSFER) {
            Ok(_) => Ok(()),
            Err(Fault::ConfigRefused(message)) => Err(PluginError::ConfigRefused(message)),
            Err(fault) => Err(PluginError::Invalid(fault.to_string())),
        }
    }

    /// The most fuel one successful hook call and one `configure` have burned so far.
    pub fn fuel_used_max(&self) -> (u64, u64) {
        (self.call_fuel_used_max.load(Ordering::Relaxed), self.configure_fuel_used_max.load(Ordering::Relaxed))
    }

    /// A fresh store and instance, configured with the operator's JSON, and
    /// what the plugin declared it needs (a 0.2 validator's `configure` answer).
    /// `configure` may log only when `log_configure` (at load, not before every call).
    fn instantiate(&self, log_configure: bool, stamp: CallStamp<'_>) -> Result<(Store<HostState>, Bindings, ContextNeeds), Fault> {
        let limits = self.meta.limits;
        let mut state = HostState::new(self.label.clone(), limits.memory_bytes_max, self.log_budget.clone(), stamp);
        state.quiet = !log_configure;
        let mut store = Store::new(&self.sandbox.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_fuel(limits.configure_fuel_max).expect("the sandbox's engine meters fuel");
        store.set_epoch_deadline(Sandbox::backstop_ticks());
        let config = self.meta.config.as_str();
        let none = |configured: Result<(), String>| configured.map(|()| None);
        let instantiated = match &self.prepared {
            Prepared::Validator01(pre) => pre.instantiate(&mut store).and_then(|b| {
                let configured = b.call_configure(&mut store, config)?;
                Ok((Bindings::Validator01(b), none(configured)))
            }),
            Prepared::Converter01(pre) => pre.instantiate(&mut store).and_then(|b| {
                let configured = b.call_configure(&mut store, config)?;
                Ok((Bindings::Converter01(b), none(configured)))
            }),
            Prepared::Describer01(pre) => pre.instantiate(&mut store).and_then(|b| {
                let configured = b.call_configure(&mut store, config)?;
                Ok((Bindings::Describer01(b), none(configured)))
            }),
            Prepared::Validator02(pre) => pre.instantiate(&mut store).and_then(|b| {
                let configured = b.call_configure(&mut store, config)?;
                Ok((Bindings::Validator02(b), configured.map(Some)))
            }),
            Prepared::Converter02(pre) => pre.instantiate(&mut store).and_then(|b| {
                let configured = b.call_configure(&mut store, config)?;
                Ok((Bindings::Converter02(b), none(configured)))
            }),
            Prepared::Describer02(pre) => pre.instantiate(&mut store).and_then(|b| {
                let configured = b.call_configure(&mut store, config)?;
                Ok((Bindings::Describer02(b), none(configured)))
            }),
        };
        store.data_mut().flush_output();
        let (bindings, configured) = instantiated.map_err(|e| self.classify(e, &store, Stage::Configure))?;
        let declared = configured.map_err(|message| Fault::ConfigRefused(guard::clean(&message, FAULT_TEXT_CHARS_MAX)))?;
        let needs = match declared {
            None => ContextNeeds::default(),
            Some(n) => ContextNeeds::declared(n.accounts, &n.velocity_windows_seconds)
                .map_err(|e| Fault::Nonsense(format!("its configure answered needs it may not have: {e}")))?,
        };
        let used = limits.configure_fuel_max.saturating_sub(store.get_fuel().unwrap_or(0));
        self.configure_fuel_used_max.fetch_max(used, Ordering::Relaxed);
        store.data_mut().quiet = false;
        Ok((store, bindings, needs))
    }

    /// Runs `call` on a fresh, configured instance under the per-call fuel
    /// budget; the instance and its store are dropped afterwards, fault or not.
    fn fresh<R>(
        &self,
        transfer: &types::Transfer,
        call: impl FnOnce(&mut Store<HostState>, &Bindings) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        let stamp = CallStamp { transfer_id: &transfer.id, time_reference_ms: transfer.submitted_at_ms };
        let (mut store, bindings, _) = self.instantiate(false, stamp)?;
        let call_fuel_max = self.meta.limits.call_fuel_max;
        store.set_fuel(call_fuel_max).expect("the sandbox's engine meters fuel");
        store.set_epoch_deadline(Sandbox::backstop_ticks());
        let answer = call(&mut store, &bindings);
        store.data_mut().flush_output();
        let answer = answer.map_err(|e| self.classify(e, &store, Stage::Call))?;
        let used = call_fuel_max.saturating_sub(store.get_fuel().unwrap_or(0));
        self.call_fuel_used_max.fetch_max(used, Ordering::Relaxed);
        Ok(answer)
    }

    fn classify(&self, e: wasmtime::Error, store: &Store<HostState>, stage: Stage) -> Fault {
        let limits = self.meta.limits;
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

    /// Some(rejection) or None (allow). A 0.1 validator sees the transfer
    /// without what 0.2 added, and no context.
    pub fn validate(&self, transfer: &types::Transfer, context: &types::Context) -> Result<Option<types::Rejection>, Fault> {
        self.fresh(transfer, |store, bindings| match bindings {
            Bindings::Validator02(b) => Ok(match b.call_validate(store, transfer, context)? {
                v0_2::validator::Verdict::Allow => None,
                v0_2::validator::Verdict::Reject(r) => Some(r),
            }),
            Bindings::Validator01(b) => Ok(match b.call_validate(store, &down::transfer(transfer))? {
                v0_1::validator::Verdict::Allow => None,
                v0_1::validator::Verdict::Reject(r) => Some(down::rejection(r)),
            }),
            _ => unreachable!("a validator plugin holds validator bindings"),
        })
    }

    pub fn convert(
        &self,
        source: &types::Money,
        target: &types::Currency,
        transfer: &types::Transfer,
    ) -> Result<Result<Conversion, types::Rejection>, Fault> {
        self.fresh(transfer, |store, bindings| match bindings {
            Bindings::Converter02(b) => b.call_convert(store, source, target, transfer),
            Bindings::Converter01(b) => Ok(b
                .call_convert(store, &down::money(source), &down::currency(target))?
                .map(|c| Conversion { amount_minor: c.amount_minor, rate: down::rate(c.rate) })
                .map_err(down::rejection)),
            _ => unreachable!("a converter plugin holds converter bindings"),
        })
    }

    pub fn rewrite(&self, description: &str, transfer: &types::Transfer) -> Result<Result<String, types::Rejection>, Fault> {
        self.fresh(transfer, |store, bindings| match bindings {
            Bindings::Describer02(b) => b.call_rewrite(store, description, transfer),
            Bindings::Describer01(b) => Ok(b.call_rewrite(store, description, &down::transfer(transfer))?.map_err(down::rejection)),
            _ => unreachable!("a describer plugin holds describer bindings"),
        })
    }
}
