//! One plugin version, compiled and pre-linked, with its live instance.
//!
//! The instance is reused across calls (a call on a live instance costs about
//! a microsecond; instantiating costs tens). After any trap or limit hit it
//! is discarded, because a trapped instance cannot be entered again; the next
//! call instantiates and configures a fresh one.

use std::sync::{Arc, Mutex};

use wasmtime::Store;
use wasmtime::component::Component;

use super::bindings::{converter, describer, types, validator};
use super::sandbox::{HostState, Sandbox};
use super::{PluginError, PluginKind};

/// Who a plugin is: enough to name it in a decision record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginMeta {
    pub name: String,
    pub version: i32,
    pub kind: PluginKind,
    pub sha256: [u8; 32],
    /// The operator's JSON, passed to `configure` once per instance.
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
            PluginError::Invalid(format!("imports something the sandbox does not offer (only transfer:plugin/host): {e:#}"))
        })?;
        let wrong_world = |e: wasmtime::Error| PluginError::Invalid(format!("does not export the {kind} world: {e:#}"));
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

struct Live {
    store: Store<HostState>,
    bindings: Bindings,
}

/// Why a call produced no answer. Each makes the transfer `failed`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("could not be instantiated: {0}")]
    Instantiate(String),
    #[error("refused its configuration: {0}")]
    ConfigRefused(String),
    #[error("exceeded its CPU time limit of {0} ms")]
    TimeLimit(u64),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("answered nonsense: {0}")]
    Nonsense(String),
}

pub struct LoadedPlugin {
    pub meta: PluginMeta,
    sandbox: Arc<Sandbox>,
    prepared: Prepared,
    label: Arc<str>,
    /// The live instance, or `None` before the first call and after a fault.
    live: Mutex<Option<Live>>,
}

impl LoadedPlugin {
    pub fn new(sandbox: Arc<Sandbox>, meta: PluginMeta, component: &Component) -> Result<Self, PluginError> {
        let prepared = Prepared::new(&sandbox, component, meta.kind)?;
        let label: Arc<str> = format!("{}@{}", meta.name, meta.version).into();
        Ok(Self { meta, sandbox, prepared, label, live: Mutex::new(None) })
    }

    /// Instantiates and configures once, so a bad config is refused at upload;
    /// the instance is kept for the first call.
    pub fn check(&self) -> Result<(), PluginError> {
        match self.instantiate() {
            Ok(live) => {
                *self.live.lock().unwrap_or_else(|p| p.into_inner()) = Some(live);
                Ok(())
            }
            Err(Fault::ConfigRefused(message)) => Err(PluginError::ConfigRefused(message)),
            Err(fault) => Err(PluginError::Invalid(fault.to_string())),
        }
    }

    fn instantiate(&self) -> Result<Live, Fault> {
        let limits = self.sandbox.limits;
        let mut store = Store::new(&self.sandbox.engine, HostState::new(self.label.clone(), limits.memory_bytes_max));
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(Sandbox::ticks(limits.configure_ms_max));
        let fault = |e: wasmtime::Error| classify(e, limits.configure_ms_max);
        let config = self.meta.config.as_str();
        let (bindings, configured) = match &self.prepared {
            Prepared::Validator(pre) => {
                let b = pre.instantiate(&mut store).map_err(|e| Fault::Instantiate(format!("{e:#}")))?;
                let configured = b.call_configure(&mut store, config).map_err(fault)?;
                (Bindings::Validator(b), configured)
            }
            Prepared::Converter(pre) => {
                let b = pre.instantiate(&mut store).map_err(|e| Fault::Instantiate(format!("{e:#}")))?;
                let configured = b.call_configure(&mut store, config).map_err(fault)?;
                (Bindings::Converter(b), configured)
            }
            Prepared::Describer(pre) => {
                let b = pre.instantiate(&mut store).map_err(|e| Fault::Instantiate(format!("{e:#}")))?;
                let configured = b.call_configure(&mut store, config).map_err(fault)?;
                (Bindings::Describer(b), configured)
            }
        };
        configured.map_err(Fault::ConfigRefused)?;
        Ok(Live { store, bindings })
    }

    /// Runs `call` on the live instance (instantiating one if needed) under the
    /// per-call CPU limit. Any error discards the instance.
    fn with_live<R>(&self, call: impl FnOnce(&mut Store<HostState>, &Bindings) -> wasmtime::Result<R>) -> Result<R, Fault> {
        // A poisoned lock only means an earlier call panicked on the host side;
        // the slot is still a valid Option, and a fault below resets it anyway.
        let mut slot = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(self.instantiate()?);
        }
        let live = slot.as_mut().expect("filled above");
        let call_ms_max = self.sandbox.limits.call_ms_max;
        live.store.data_mut().reset_for_call();
        live.store.set_epoch_deadline(Sandbox::ticks(call_ms_max));
        match call(&mut live.store, &live.bindings) {
            Ok(answer) => Ok(answer),
            Err(e) => {
                *slot = None;
                Err(classify(e, call_ms_max))
            }
        }
    }

    pub fn validate(&self, transfer: &types::Transfer) -> Result<validator::Verdict, Fault> {
        self.with_live(|store, bindings| match bindings {
            Bindings::Validator(b) => b.call_validate(store, transfer),
            _ => unreachable!("a validator plugin holds validator bindings"),
        })
    }

    pub fn convert(
        &self,
        source: &types::Money,
        target: &types::Currency,
    ) -> Result<Result<converter::Conversion, types::Rejection>, Fault> {
        self.with_live(|store, bindings| match bindings {
            Bindings::Converter(b) => b.call_convert(store, source, target),
            _ => unreachable!("a converter plugin holds converter bindings"),
        })
    }

    pub fn rewrite(&self, description: &str, transfer: &types::Transfer) -> Result<Result<String, types::Rejection>, Fault> {
        self.with_live(|store, bindings| match bindings {
            Bindings::Describer(b) => b.call_rewrite(store, description, transfer),
            _ => unreachable!("a describer plugin holds describer bindings"),
        })
    }
}

fn classify(e: wasmtime::Error, limit_ms: u64) -> Fault {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => Fault::TimeLimit(limit_ms),
        Some(trap) => Fault::Trap(trap.to_string()),
        None => Fault::Trap(format!("{e:#}").chars().take(300).collect()),
    }
}
