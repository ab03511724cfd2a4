//! WebAssembly glue: maps the 0.2.0 `validator` world onto [`crate::policy`].

use std::sync::Mutex;

use crate::policy::{Refusal, TransferFacts, Velocity, WindowSum};

use transfer_plugin::validator::{Context, Guest, Needs, Rejection, Transfer, Verdict};
use transfer_plugin::{Level, log};

/// The checked config. `None` until `configure` succeeds; the engine always
/// configures an instance before use, and until then every transfer is
/// rejected `not_configured` (this plugin has no permissive default).
static VELOCITY: Mutex<Option<Velocity>> = Mutex::new(None);

struct Plugin;

impl Guest for Plugin {
    fn configure(config: String) -> Result<Needs, String> {
        let velocity = Velocity::from_json(&config).map_err(|e| e.to_string())?;
        log(Level::Info, &velocity.summary());
        let needs = velocity.needs();
        *VELOCITY.lock().unwrap_or_else(|e| e.into_inner()) = Some(velocity);
        Ok(Needs {
            accounts: needs.accounts,
            velocity_windows_seconds: needs.velocity_windows_seconds,
        })
    }

    fn validate(transfer: Transfer, context: Context) -> Verdict {
        let facts = TransferFacts {
            currency_code: &transfer.currency.code,
            currency_exponent: transfer.currency.exponent,
            amount_minor: transfer.amount_minor,
        };
        let sender_metadata = context.sender.as_ref().map(|a| a.metadata.as_slice());
        let velocity: Vec<WindowSum> = context
            .velocity
            .iter()
            .map(|w| WindowSum {
                window_seconds: w.window_seconds,
                sum_minor: w.sum_minor,
            })
            .collect();
        let guard = VELOCITY.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = match guard.as_ref() {
            Some(policy) => policy.check(&facts, sender_metadata, &velocity),
            None => Err(Refusal::NotConfigured),
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

transfer_plugin::validator::export_validator!(Plugin);
