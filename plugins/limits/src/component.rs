//! WebAssembly glue: maps the `validator` world onto [`crate::policy`].

use std::sync::Mutex;

use crate::policy::{Limits, TransferFacts};

wit_bindgen::generate!({
    world: "validator",
    path: "../../wit/0.1.0",
});

use transfer::plugin::host::{Level, log};

/// The configured limits. `None` until `configure` succeeds; the engine always
/// configures an instance before use, and until then the empty config applies.
static LIMITS: Mutex<Option<Limits>> = Mutex::new(None);

struct Plugin;

impl Guest for Plugin {
    fn configure(config: String) -> Result<(), String> {
        let limits = Limits::from_json(&config).map_err(|e| e.to_string())?;
        log(Level::Info, &limits.summary());
        *LIMITS.lock().unwrap_or_else(|e| e.into_inner()) = Some(limits);
        Ok(())
    }

    fn validate(transfer: Transfer) -> Verdict {
        let facts = TransferFacts {
            sender_id: transfer.sender_id,
            receiver_id: transfer.receiver_id,
            currency_code: &transfer.currency.code,
            currency_exponent: transfer.currency.exponent,
            amount_minor: transfer.amount_minor,
        };
        let guard = LIMITS.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = match guard.as_ref() {
            Some(limits) => limits.check(&facts),
            None => Limits::default().check(&facts),
        };
        match outcome {
            Ok(()) => Verdict::Allow,
            Err(refusal) => Verdict::Reject(Rejection {
                code: refusal.code().to_string(),
                message: refusal.to_string(),
            }),
        }
    }
}

export!(Plugin);
