//! The one place host bindings are generated from the WIT: one `bindgen!`
//! per world and interface version. Within a version the later two worlds
//! reuse the first one's `types` and `host` modules, so every plugin kind of
//! a version shares one transfer type and one `log` implementation.
//!
//! - `v0_2`: `wit/plugin.wit`, `transfer:plugin@0.2.0`, the current one.
//! - `v0_1`: `wit/0.1.0/plugin.wit`, frozen; components built against it
//!   keep loading beside 0.2 ones (the two versions are distinct imports, so
//!   the linker offers both `host` interfaces).

/// The three worlds of one interface version, from its WIT directory.
macro_rules! worlds {
    ($path:tt) => {
        pub mod validator {
            wasmtime::component::bindgen!({ path: $path, world: "validator" });
        }

        pub mod converter {
            wasmtime::component::bindgen!({
                path: $path,
                world: "converter",
                with: {
                    "transfer:plugin/types": super::validator::transfer::plugin::types,
                    "transfer:plugin/host": super::validator::transfer::plugin::host,
                },
            });
        }

        pub mod describer {
            wasmtime::component::bindgen!({
                path: $path,
                world: "describer",
                with: {
                    "transfer:plugin/types": super::validator::transfer::plugin::types,
                    "transfer:plugin/host": super::validator::transfer::plugin::host,
                },
            });
        }

        pub use validator::transfer::plugin::host::Level;
        pub use validator::transfer::plugin::{host, types};
    };
}

pub mod v0_1 {
    worlds!("../wit/0.1.0");
}

pub mod v0_2 {
    worlds!("../wit");
}

/// The current version's types: what the host builds, and converts down
/// for a 0.1 plugin.
pub use v0_2::types;

/// Which version of the interface a component was built against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub enum WitVersion {
    #[serde(rename = "0.1.0")]
    V0_1,
    #[serde(rename = "0.2.0")]
    V0_2,
}

impl WitVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_1 => "0.1.0",
            Self::V0_2 => "0.2.0",
        }
    }
}

impl std::fmt::Display for WitVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// 0.2 values as a 0.1 plugin sees them: the same, without what 0.2 added.
pub mod down {
    use super::{v0_1, v0_2};

    pub fn currency(c: &v0_2::types::Currency) -> v0_1::types::Currency {
        v0_1::types::Currency { code: c.code.clone(), exponent: c.exponent }
    }

    pub fn money(m: &v0_2::types::Money) -> v0_1::types::Money {
        v0_1::types::Money { amount_minor: m.amount_minor, currency: currency(&m.currency) }
    }

    pub fn transfer(t: &v0_2::types::Transfer) -> v0_1::types::Transfer {
        v0_1::types::Transfer {
            id: t.id.clone(),
            sender_id: t.sender_id,
            receiver_id: t.receiver_id,
            currency: currency(&t.currency),
            amount_minor: t.amount_minor,
            original: t.original.as_ref().map(money),
            description: t.description.clone(),
        }
    }

    /// A 0.1 answer in 0.2 terms (the records are the same shape).
    pub fn rejection(r: v0_1::types::Rejection) -> v0_2::types::Rejection {
        v0_2::types::Rejection { code: r.code, message: r.message }
    }

    pub fn rate(r: v0_1::types::Rate) -> v0_2::types::Rate {
        v0_2::types::Rate { mantissa: r.mantissa, scale: r.scale }
    }
}
