//! Hostile fixture for the host's sandbox tests: `validate` panics. Plugins are
//! built with `panic = "abort"`, so the panic becomes a wasm `unreachable` trap.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "validator", path: "../../wit/0.1.0" });

struct Plugin;

impl Guest for Plugin {
    fn configure(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn validate(transfer: Transfer) -> Verdict {
        panic!(
            "hostile-trap: deliberate panic while validating transfer {}",
            transfer.id
        );
    }
}

export!(Plugin);
