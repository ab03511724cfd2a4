//! The one place host bindings are generated from `wit/plugin.wit`: one
//! `bindgen!` per world, the later two reusing the first one's `types` and
//! `host` modules, so every plugin kind shares one transfer type and one
//! `log` implementation.

pub mod validator {
    wasmtime::component::bindgen!({ path: "../wit/0.1.0", world: "validator" });
}

pub mod converter {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "converter",
        with: {
            "transfer:plugin/types": super::validator::transfer::plugin::types,
            "transfer:plugin/host": super::validator::transfer::plugin::host,
        },
    });
}

pub mod describer {
    wasmtime::component::bindgen!({
        path: "../wit/0.1.0",
        world: "describer",
        with: {
            "transfer:plugin/types": super::validator::transfer::plugin::types,
            "transfer:plugin/host": super::validator::transfer::plugin::host,
        },
    });
}

pub use validator::transfer::plugin::host::Level;
pub use validator::transfer::plugin::types;
