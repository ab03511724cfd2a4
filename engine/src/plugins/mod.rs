//! WebAssembly policy plugins.
//!
//! - `bindings`: the one `bindgen!` site, for `wit/plugin.wit` (0.2.0) and the frozen `wit/0.1.0/plugin.wit`.
//! - `sandbox`: the wasmtime engine, linker and limits (fuel, memory) every plugin runs under.
//! - `precompiled`: compiled components kept on disk between runs (`plugin_compiled_dir`).
//! - `wasi`: the WASI a plugin sees: present, granting nothing, deterministic.
//! - `guard`: bounds and cleans what a plugin hands back (texts, log lines, log rate).
//! - `loaded`: one plugin version, instantiated fresh for every call.
//! - `set`: the active plugins as a `Hooks` implementation, recording decisions.
//! - `scaffold`: `plugins new`, a new plugin folder in Rust, Python or JavaScript.
//! - `replay`: a candidate validator over the ledger's transfers in a window, offline.
//! - `rollback`: canaries' sticky split, and the guard that withdraws a faulting version.
//! - `registry`: plugins in PostgreSQL: upload, activate, order, hot reload,
//!   and a bounded cache of compiled components.

pub mod bindings;
pub mod compiled;
pub mod guard;
pub mod loaded;
pub mod precompiled;
pub mod registry;
pub mod replay;
pub mod rollback;
pub mod sandbox;
pub mod scaffold;
pub mod set;
pub mod settings;
pub mod wasi;

use std::fmt;

pub use loaded::{Fault, LoadedPlugin, PluginMeta};
pub use registry::{PluginInfo, Registry};
pub use sandbox::{LimitsRequest, PluginLimits, Sandbox, SandboxLimits};
pub use set::PluginSet;

/// Which hook a plugin serves, that is, which WIT world it exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PluginKind {
    Validator,
    Converter,
    Describer,
}

impl PluginKind {
    pub const ALL: [Self; 3] = [Self::Validator, Self::Converter, Self::Describer];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validator => "validator",
            Self::Converter => "converter",
            Self::Describer => "describer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("the plugin was refused: {0}")]
    Invalid(String),
    #[error("the plugin's limits were refused: {0}")]
    LimitsInvalid(String),
    #[error("the plugin refused its configuration: {0}")]
    ConfigRefused(String),
    #[error("plugin names are 1 to 63 characters of a-z, 0-9, '_' and '-', starting with a letter")]
    BadName,
    #[error("no plugin {0}")]
    NotFound(String),
    #[error("only a validator can be advisory; a {0} always binds (a transfer needs its amount and its description)")]
    AdvisoryNotValidator(PluginKind),
    #[error("another {kind} plugin ({name}) is active; deactivate it first")]
    KindAlreadyActive { kind: PluginKind, name: String },
    /// A shadow or canary the plugin's state does not allow.
    #[error("{message}")]
    Rollout { refusal: RolloutRefusal, message: String },
    #[error("a canary's percent is from 1 to 100 (100 makes it the active version), not {0}")]
    PercentInvalid(i64),
    #[error("the plugin sandbox could not be set up: {0}")]
    Sandbox(String),
    #[error("the plugin registry's database is unavailable")]
    Database(#[from] sqlx::Error),
}

/// Why a shadow or canary was refused, each with its own API code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutRefusal {
    /// The name has no active version to run beside (`plugin_not_active`).
    NotActive,
    /// Not a validator, or not the active version's kind (`plugin_kind_mismatch`).
    KindMismatch,
    /// The version is the active one (`plugin_version_active`).
    VersionActive,
}

impl RolloutRefusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::NotActive => "plugin_not_active",
            Self::KindMismatch => "plugin_kind_mismatch",
            Self::VersionActive => "plugin_version_active",
        }
    }
}

/// Names as the database accepts them (see the CHECK in the migration).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}
