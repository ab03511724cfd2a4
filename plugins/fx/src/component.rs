//! WebAssembly glue: maps the `converter` world onto [`crate::rates`].

use std::sync::Mutex;

use crate::rates::{self, RateTable};

wit_bindgen::generate!({
    world: "converter",
    path: "../../wit/0.1.0",
});

use transfer::plugin::host::{Level, log};

/// The configured rates. `None` until `configure` succeeds; the engine always
/// configures an instance before use, and until then no pair has a rate.
static TABLE: Mutex<Option<RateTable>> = Mutex::new(None);

struct Plugin;

impl Guest for Plugin {
    fn configure(config: String) -> Result<(), String> {
        let table = RateTable::from_json(&config).map_err(|e| e.to_string())?;
        log(
            Level::Info,
            &format!("fx configured: {} rate(s)", table.len()),
        );
        *TABLE.lock().unwrap_or_else(|e| e.into_inner()) = Some(table);
        Ok(())
    }

    fn convert(source: Money, target: Currency) -> Result<Conversion, Rejection> {
        let guard = TABLE.lock().unwrap_or_else(|e| e.into_inner());
        let empty = RateTable::default();
        let table = guard.as_ref().unwrap_or(&empty);
        let from = rates::Currency {
            code: &source.currency.code,
            exponent: source.currency.exponent,
        };
        let to = rates::Currency {
            code: &target.code,
            exponent: target.exponent,
        };
        match table.convert(source.amount_minor, from, to) {
            Ok((amount_minor, rate)) => Ok(Conversion {
                amount_minor,
                rate: Rate {
                    mantissa: rate.mantissa,
                    scale: rate.scale,
                },
            }),
            Err(e) => Err(Rejection {
                code: e.code().to_string(),
                message: e.to_string(),
            }),
        }
    }
}

export!(Plugin);
