//! `transfer-plugin`: write a transfer-engine plugin in Rust without the
//! wit-bindgen glue.
//!
//! A plugin crate (`crate-type = ["cdylib"]`) implements its world's `Guest`
//! trait and exports it with that world's macro:
//!
//! ```ignore
//! use transfer_plugin::validator::{Context, Guest, Needs, Transfer, Verdict};
//!
//! struct Plugin;
//!
//! impl Guest for Plugin {
//!     fn configure(config: String) -> Result<Needs, String> { /* parse, keep, answer */ }
//!     fn validate(transfer: Transfer, context: Context) -> Verdict { /* the rule */ }
//! }
//!
//! transfer_plugin::validator::export_validator!(Plugin);
//! ```
//!
//! - [`validator`], [`converter`], [`describer`]: the bindings of each world
//!   of `wit/plugin.wit` (interface 0.2.0), generated once here, each with
//!   its export macro (`validator::export_validator!`, ...). The three
//!   share one set of types (`Transfer`, `Rejection`, ...) and one `log`.
//!   Only the world a crate exports ends up in its component.
//! - [`money`]: amounts in minor units with their currency's exponent,
//!   checked arithmetic and exact decimal text. Plain Rust, so a plugin's
//!   policy can use it in host unit tests.
//!
//! The bindings exist only when compiling for `wasm32`: keep a plugin's
//! rules in plain Rust (tested natively) and its glue behind
//! `#[cfg(target_arch = "wasm32")]`, as `velocity` and `channels` do.

pub mod money;

#[cfg(target_arch = "wasm32")]
pub mod validator {
    //! The `validator` world: `configure` answers `Needs`, `validate` a `Verdict`.
    wit_bindgen::generate!({
        world: "validator",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_validator",
        default_bindings_module: "transfer_plugin::validator",
    });
}

#[cfg(target_arch = "wasm32")]
pub mod converter {
    //! The `converter` world: `convert` answers a `Conversion` or a rejection.
    wit_bindgen::generate!({
        world: "converter",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_converter",
        default_bindings_module: "transfer_plugin::converter",
        with: {
            "transfer:plugin/types@0.2.0": crate::validator::transfer::plugin::types,
            "transfer:plugin/host@0.2.0": crate::validator::transfer::plugin::host,
        },
    });
}

#[cfg(target_arch = "wasm32")]
pub mod describer {
    //! The `describer` world: `rewrite` answers the description to store, or a rejection.
    wit_bindgen::generate!({
        world: "describer",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_describer",
        default_bindings_module: "transfer_plugin::describer",
        with: {
            "transfer:plugin/types@0.2.0": crate::validator::transfer::plugin::types,
            "transfer:plugin/host@0.2.0": crate::validator::transfer::plugin::host,
        },
    });
}

/// The engine's log (`host.log`): one line, tagged with the plugin's name
/// and version, bounded and cleaned by the engine.
#[cfg(target_arch = "wasm32")]
pub use validator::transfer::plugin::host::{Level, log};
/// The types every world shares.
#[cfg(target_arch = "wasm32")]
pub use validator::transfer::plugin::types;

/// A rejection with a stable snake_case code and a sentence for the client.
#[cfg(target_arch = "wasm32")]
pub fn rejection(code: &str, message: impl Into<String>) -> types::Rejection {
    types::Rejection {
        code: code.to_owned(),
        message: message.into(),
    }
}
