//! Hostile fixture for the host's sandbox tests: `validate` spins forever.
//! Only fuel or epoch interruption can stop it.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "validator", path: "../../wit/0.1.0" });

struct Plugin;

impl Guest for Plugin {
    fn configure(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn validate(_transfer: Transfer) -> Verdict {
        // black_box keeps the optimiser from proving the loop useless.
        let mut spins: u64 = 0;
        loop {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }
}

export!(Plugin);
