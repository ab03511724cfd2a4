//! {{name}}: a transfer-engine validator plugin.
//!
//! The policy: refuse a transfer whose amount is over `max_amount_minor`, in
//! minor units of the transfer's currency (the config's one key; default
//! 100000, that is 1000.00 EUR). Config example: `{"max_amount_minor": 50000}`.
//!
//! The rule is plain Rust ([`Config`], [`check`]), so `cargo test` runs it on
//! the host; the `component` module at the bottom is the WebAssembly glue.
//! Change `check` (and `Config`) to write your own rule.

use serde::Deserialize;

/// The plugin's name, as its config errors give it.
const NAME: &str = "{{name}}";

/// `max_amount_minor` when the config does not give one.
pub const DEFAULT_MAX_AMOUNT_MINOR: i64 = 100_000;

/// The operator's JSON config. Unknown keys are refused, so that a misspelt
/// key cannot silently leave the default in force; so is a fraction (an
/// `i64` takes whole numbers only).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_max_amount_minor")]
    pub max_amount_minor: i64,
}

fn default_max_amount_minor() -> i64 {
    DEFAULT_MAX_AMOUNT_MINOR
}

impl Config {
    pub fn from_json(text: &str) -> Result<Self, String> {
        let config: Self = serde_json::from_str(text).map_err(|e| format!("invalid {NAME} config: {e}"))?;
        if config.max_amount_minor < 0 {
            return Err(format!("invalid {NAME} config: max_amount_minor cannot be negative"));
        }
        Ok(config)
    }
}

/// Why a transfer is refused: a stable snake_case code and a sentence for the client.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

/// The rule itself.
pub fn check(config: &Config, amount_minor: i64, currency_code: &str, exponent: u8) -> Result<(), Refusal> {
    if amount_minor > config.max_amount_minor {
        return Err(Refusal {
            code: "amount_over_limit",
            message: format!(
                "The amount {} {currency_code} is over the limit of {} {currency_code} per transfer.",
                format_minor(amount_minor, exponent),
                format_minor(config.max_amount_minor, exponent),
            ),
        });
    }
    Ok(())
}

/// Minor units as a decimal: (123456, 2) is "1234.56". Integers only.
pub fn format_minor(amount_minor: i64, exponent: u8) -> String {
    let exponent = usize::from(exponent);
    let digits = format!("{:0>width$}", amount_minor.unsigned_abs(), width = exponent + 1);
    let sign = if amount_minor < 0 { "-" } else { "" };
    if exponent == 0 {
        return format!("{sign}{digits}");
    }
    let (whole, fraction) = digits.split_at(digits.len() - exponent);
    format!("{sign}{whole}.{fraction}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_amount_up_to_the_limit_is_allowed_and_one_minor_unit_more_is_rejected() {
        let config = Config::from_json("{}").unwrap();
        assert_eq!(check(&config, 100_000, "EUR", 2), Ok(()));
        let refusal = check(&config, 100_001, "EUR", 2).unwrap_err();
        assert_eq!(refusal.code, "amount_over_limit");
        assert_eq!(refusal.message, "The amount 1000.01 EUR is over the limit of 1000.00 EUR per transfer.");
        assert_eq!(
            check(&config, 100_001, "JPY", 0).unwrap_err().message,
            "The amount 100001 JPY is over the limit of 100000 JPY per transfer."
        );
    }

    #[test]
    fn a_config_with_a_fraction_a_negative_limit_or_an_unknown_key_is_refused() {
        assert_eq!(Config::from_json(r#"{"max_amount_minor": 500}"#).unwrap().max_amount_minor, 500);
        assert!(Config::from_json(r#"{"max_amount_minor": 5.5}"#).is_err());
        assert!(Config::from_json(r#"{"max_amount_minor": -1}"#).is_err());
        assert!(Config::from_json(r#"{"max_amount": 500}"#).is_err());
    }
}

/// The WebAssembly glue: the `validator` world of `wit/plugin.wit`, mapped onto the rule above.
#[cfg(target_arch = "wasm32")]
mod component {
    use std::sync::Mutex;

    use crate::{Config, check};

    wit_bindgen::generate!({ world: "validator", path: "wit" });

    /// Set by `configure`. The engine configures every fresh instance before
    /// it calls `validate`, so each call sees exactly the operator's config.
    static CONFIG: Mutex<Option<Config>> = Mutex::new(None);

    struct Plugin;

    impl Guest for Plugin {
        fn configure(config: String) -> Result<Needs, String> {
            let config = Config::from_json(&config)?;
            *CONFIG.lock().unwrap_or_else(|e| e.into_inner()) = Some(config);
            // This rule reads only the transfer itself: no accounts, no velocity windows.
            Ok(Needs { accounts: false, velocity_windows_seconds: Vec::new() })
        }

        fn validate(transfer: Transfer, _context: Context) -> Verdict {
            let reject = |code: &str, message: String| Verdict::Reject(Rejection { code: code.to_string(), message });
            let guard = CONFIG.lock().unwrap_or_else(|e| e.into_inner());
            // Neither happens (see above, and the amount is always present for
            // validation), but refusing is safer than guessing.
            let Some(config) = guard.as_ref() else {
                return reject("not_configured", "The plugin was not configured.".to_string());
            };
            let Some(amount_minor) = transfer.amount_minor else {
                return reject("amount_missing", "The transfer has no amount.".to_string());
            };
            match check(config, amount_minor, &transfer.currency.code, transfer.currency.exponent) {
                Ok(()) => Verdict::Allow,
                Err(refusal) => reject(refusal.code, refusal.message),
            }
        }
    }

    export!(Plugin);
}
