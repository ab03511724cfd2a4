//! Hostile fixture for the host's sandbox tests: a converter that breaks the
//! world's contract ("must be positive") by answering a negative amount.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ world: "converter", path: "../../wit/0.1.0" });

/// The amount every conversion answers, whatever the input.
const NONSENSE_AMOUNT_MINOR: i64 = -12_345;

struct Plugin;

impl Guest for Plugin {
    fn configure(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn convert(_source: Money, _target: Currency) -> Result<Conversion, Rejection> {
        Ok(Conversion {
            amount_minor: NONSENSE_AMOUNT_MINOR,
            rate: Rate {
                mantissa: 1,
                scale: 0,
            },
        })
    }
}

export!(Plugin);
