//! The limits policy, free of any WebAssembly glue.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;

/// The operator's JSON, as written. Both keys are optional; unknown keys are
/// refused so that a misspelt key cannot silently switch a limit off.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    max_amount_minor: BTreeMap<String, i64>,
    #[serde(default)]
    blocked_owners: BTreeSet<i64>,
}

/// A checked configuration. The default (also what `{}` gives) allows everything.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest allowed amount per transfer, in minor units, keyed by currency code.
    max_amount_minor: BTreeMap<String, i64>,
    /// Owner ids that may neither send nor receive.
    blocked_owners: BTreeSet<i64>,
}

/// What `validate` needs from a transfer.
#[derive(Debug, Clone, Copy)]
pub struct TransferFacts<'a> {
    pub sender_id: i64,
    pub receiver_id: i64,
    pub currency_code: &'a str,
    pub currency_exponent: u8,
    pub amount_minor: Option<i64>,
}

/// Why a configuration was refused.
#[derive(Debug)]
pub enum ConfigError {
    Json(serde_json::Error),
    BadCurrencyCode(String),
    NegativeLimit {
        currency: String,
        max_amount_minor: i64,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json(e) => write!(f, "invalid limits config: {e}"),
            Self::BadCurrencyCode(code) => write!(
                f,
                "invalid limits config: {code:?} in max_amount_minor is not a \
                 currency code (three upper-case letters, for example \"EUR\")"
            ),
            Self::NegativeLimit {
                currency,
                max_amount_minor,
            } => write!(
                f,
                "invalid limits config: max_amount_minor for {currency} is \
                 {max_amount_minor}, but a limit cannot be negative"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Which side of a transfer a blocked owner is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Sender,
    Receiver,
}

/// Why a transfer was refused; [`Refusal::code`] is the stable code, the
/// `Display` text the sentence the client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    OwnerBlocked {
        side: Side,
        owner_id: i64,
    },
    AmountOverLimit {
        currency: String,
        exponent: u8,
        amount_minor: i64,
        max_amount_minor: i64,
    },
    /// The engine sent no amount although a limit applies. The engine promises
    /// an amount at validation, so this is refused rather than waved through.
    AmountMissing {
        currency: String,
    },
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Self::OwnerBlocked { .. } => "owner_blocked",
            Self::AmountOverLimit { .. } => "amount_over_limit",
            Self::AmountMissing { .. } => "amount_missing",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OwnerBlocked { side, owner_id } => {
                let side = match side {
                    Side::Sender => "sender",
                    Side::Receiver => "receiver",
                };
                write!(
                    f,
                    "The {side} (owner {owner_id}) is on the blocked owners list."
                )
            }
            Self::AmountOverLimit {
                currency,
                exponent,
                amount_minor,
                max_amount_minor,
            } => {
                write!(
                    f,
                    "The amount {} {currency} is over the limit of {} {currency} per transfer.",
                    format_minor(*amount_minor, *exponent),
                    format_minor(*max_amount_minor, *exponent),
                )
            }
            Self::AmountMissing { currency } => write!(
                f,
                "The transfer has no amount to check against the {currency} limit per transfer."
            ),
        }
    }
}

impl Limits {
    /// Parses and checks the operator's JSON config.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        // Through a map first: serde would also read a struct from a JSON
        // array (by position), and a config that is not an object is a mistake.
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(json).map_err(ConfigError::Json)?;
        let raw: RawConfig = serde_json::from_value(serde_json::Value::Object(object))
            .map_err(ConfigError::Json)?;
        for (currency, &max_amount_minor) in &raw.max_amount_minor {
            if !is_currency_code(currency) {
                return Err(ConfigError::BadCurrencyCode(currency.clone()));
            }
            if max_amount_minor < 0 {
                return Err(ConfigError::NegativeLimit {
                    currency: currency.clone(),
                    max_amount_minor,
                });
            }
        }
        Ok(Self {
            max_amount_minor: raw.max_amount_minor,
            blocked_owners: raw.blocked_owners,
        })
    }

    /// One line for the engine's log after a successful configure.
    pub fn summary(&self) -> String {
        format!(
            "limits configured: {} currency limit(s), {} blocked owner(s)",
            self.max_amount_minor.len(),
            self.blocked_owners.len()
        )
    }

    /// Allows the transfer, or says why not. Blocked owners are checked first:
    /// that refusal holds whatever the amount.
    pub fn check(&self, transfer: &TransferFacts<'_>) -> Result<(), Refusal> {
        for (side, owner_id) in [
            (Side::Sender, transfer.sender_id),
            (Side::Receiver, transfer.receiver_id),
        ] {
            if self.blocked_owners.contains(&owner_id) {
                return Err(Refusal::OwnerBlocked { side, owner_id });
            }
        }
        let Some(&max_amount_minor) = self.max_amount_minor.get(transfer.currency_code) else {
            return Ok(());
        };
        let currency = transfer.currency_code.to_string();
        match transfer.amount_minor {
            None => Err(Refusal::AmountMissing { currency }),
            Some(amount_minor) if amount_minor > max_amount_minor => {
                Err(Refusal::AmountOverLimit {
                    currency,
                    exponent: transfer.currency_exponent,
                    amount_minor,
                    max_amount_minor,
                })
            }
            Some(_) => Ok(()),
        }
    }
}

fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// Writes minor units as a plain decimal in major units: (123456, 2) is
/// "1234.56", (5, 3) is "0.005", (100000, 0) is "100000". Integer-only.
pub fn format_minor(amount_minor: i64, exponent: u8) -> String {
    let digits = amount_minor.unsigned_abs().to_string();
    let sign = if amount_minor < 0 { "-" } else { "" };
    let exponent = usize::from(exponent);
    if exponent == 0 {
        return format!("{sign}{digits}");
    }
    // Left-pad so there is at least one digit before the decimal point.
    let padded = format!("{digits:0>width$}", width = exponent + 1);
    let (major, minor) = padded.split_at(padded.len() - exponent);
    format!("{sign}{major}.{minor}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str =
        r#"{"max_amount_minor": {"EUR": 1000000, "JPY": 100000}, "blocked_owners": [666, 667]}"#;

    fn transfer(currency_code: &str, exponent: u8, amount_minor: i64) -> TransferFacts<'_> {
        TransferFacts {
            sender_id: 1,
            receiver_id: 2,
            currency_code,
            currency_exponent: exponent,
            amount_minor: Some(amount_minor),
        }
    }

    fn limits() -> Limits {
        Limits::from_json(CONFIG).unwrap()
    }

    #[test]
    fn refuses_a_config_that_is_not_an_object() {
        for config in ["[]", "[{}, []]", "null", "5"] {
            assert!(Limits::from_json(config).is_err(), "{config}");
        }
        assert!(Limits::from_json("{}").is_ok());
    }

    #[test]
    fn allows_an_amount_exactly_at_the_limit() {
        assert_eq!(limits().check(&transfer("EUR", 2, 1_000_000)), Ok(()));
    }

    #[test]
    fn rejects_an_eur_amount_one_cent_over_the_limit() {
        let refusal = limits().check(&transfer("EUR", 2, 1_000_001)).unwrap_err();
        assert_eq!(refusal.code(), "amount_over_limit");
        assert_eq!(
            refusal.to_string(),
            "The amount 10000.01 EUR is over the limit of 10000.00 EUR per transfer."
        );
    }

    #[test]
    fn applies_each_currencys_own_limit_and_exponent() {
        let refusal = limits().check(&transfer("JPY", 0, 100_001)).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "The amount 100001 JPY is over the limit of 100000 JPY per transfer."
        );
        // 100001 minor units are under the EUR limit.
        assert_eq!(limits().check(&transfer("EUR", 2, 100_001)), Ok(()));
    }

    #[test]
    fn allows_any_amount_in_a_currency_without_a_limit() {
        assert_eq!(limits().check(&transfer("USD", 2, i64::MAX)), Ok(()));
    }

    #[test]
    fn rejects_a_blocked_sender() {
        let mut t = transfer("EUR", 2, 100);
        t.sender_id = 666;
        let refusal = limits().check(&t).unwrap_err();
        assert_eq!(refusal.code(), "owner_blocked");
        assert_eq!(
            refusal.to_string(),
            "The sender (owner 666) is on the blocked owners list."
        );
    }

    #[test]
    fn rejects_a_blocked_receiver_even_when_the_amount_is_also_over_the_limit() {
        let mut t = transfer("EUR", 2, 5_000_000);
        t.receiver_id = 667;
        let refusal = limits().check(&t).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::OwnerBlocked {
                side: Side::Receiver,
                owner_id: 667
            }
        );
        assert_eq!(
            refusal.to_string(),
            "The receiver (owner 667) is on the blocked owners list."
        );
    }

    #[test]
    fn rejects_a_missing_amount_when_a_limit_applies() {
        let mut t = transfer("EUR", 2, 0);
        t.amount_minor = None;
        assert_eq!(limits().check(&t).unwrap_err().code(), "amount_missing");
        t.currency_code = "USD";
        assert_eq!(limits().check(&t), Ok(()));
    }

    #[test]
    fn an_empty_config_allows_everything() {
        let limits = Limits::from_json("{}").unwrap();
        assert_eq!(limits, Limits::default());
        let mut t = transfer("EUR", 2, i64::MAX);
        t.sender_id = 666;
        assert_eq!(limits.check(&t), Ok(()));
    }

    #[test]
    fn refuses_unknown_keys_in_the_config() {
        let err = Limits::from_json(r#"{"max_amount": {"EUR": 1}}"#).unwrap_err();
        assert!(matches!(err, ConfigError::Json(_)), "{err}");
        assert!(
            err.to_string().contains("unknown field `max_amount`"),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_lower_case_currency_code_and_a_negative_limit() {
        let err = Limits::from_json(r#"{"max_amount_minor": {"eur": 1}}"#).unwrap_err();
        assert!(
            matches!(err, ConfigError::BadCurrencyCode(ref c) if c == "eur"),
            "{err}"
        );
        let err = Limits::from_json(r#"{"max_amount_minor": {"EUR": -1}}"#).unwrap_err();
        assert!(matches!(err, ConfigError::NegativeLimit { .. }), "{err}");
    }

    #[test]
    fn refuses_a_fractional_limit() {
        assert!(Limits::from_json(r#"{"max_amount_minor": {"EUR": 10.5}}"#).is_err());
    }

    #[test]
    fn formats_minor_units_for_exponents_zero_two_and_three() {
        assert_eq!(format_minor(100_000, 0), "100000");
        assert_eq!(format_minor(123_456, 2), "1234.56");
        assert_eq!(format_minor(5, 2), "0.05");
        assert_eq!(format_minor(5, 3), "0.005");
        assert_eq!(format_minor(-1_500, 3), "-1.500");
        assert_eq!(format_minor(i64::MIN, 2), "-92233720368547758.08");
    }
}
