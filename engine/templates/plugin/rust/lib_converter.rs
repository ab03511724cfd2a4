//! {{name}}: a transfer-engine converter plugin.
//!
//! The policy: convert with a fixed rate table, `{"rates": {"USD/EUR": "0.92"}}`
//! (`"FROM/TO"`: one FROM unit buys that many TO units). Rates are decimal
//! strings so that they stay exact. Without a `rates` key, [`DEFAULT_RATES`]
//! apply. A pair with no rate is rejected with `rate_not_found`.
//!
//! The amount is computed with integers only (checked `i128`) and rounded
//! half-to-even to the target currency's minor unit (2.5 -> 2, 3.5 -> 4,
//! 2.51 -> 3).
//!
//! The rule is plain Rust ([`Rates`], [`convert_amount`]), so `cargo test`
//! runs it on the host; the `component` module at the bottom is the
//! WebAssembly glue. Change `convert_amount` (and `Rates`) to write your own rule.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The plugin's name, as its config errors give it.
const NAME: &str = "{{name}}";

/// The rates when the config gives no `rates`.
pub const DEFAULT_RATES: &[(&str, &str)] = &[("USD/EUR", "0.92"), ("EUR/USD", "1.08")];

/// An exact decimal rate: `mantissa * 10^-scale` (0.92 is {92, 2}).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub mantissa: i64,
    pub scale: u8,
}

/// The operator's JSON. Unknown keys are refused, so that a misspelt key
/// cannot silently leave the defaults in force.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    rates: Option<BTreeMap<String, String>>,
}

/// The checked rate table, by `"FROM/TO"`.
#[derive(Debug)]
pub struct Rates(BTreeMap<String, Rate>);

impl Rates {
    pub fn from_json(text: &str) -> Result<Self, String> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| format!("invalid {NAME} config: {e}"))?;
        let given: Vec<(String, String)> = match raw.rates {
            Some(rates) => rates.into_iter().collect(),
            None => DEFAULT_RATES.iter().map(|(pair, rate)| (pair.to_string(), rate.to_string())).collect(),
        };
        let mut rates = BTreeMap::new();
        for (pair, rate) in given {
            let is_code = |code: &str| code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase());
            if !pair.split_once('/').is_some_and(|(from, to)| is_code(from) && is_code(to)) {
                return Err(format!("invalid {NAME} config: {pair:?} is not a currency pair such as \"USD/EUR\""));
            }
            let parsed = parse_rate(&rate).ok_or_else(|| {
                format!("invalid {NAME} config: {rate:?} is not a positive decimal rate such as \"0.92\" (at most 18 decimals)")
            })?;
            rates.insert(pair, parsed);
        }
        Ok(Self(rates))
    }

    pub fn get(&self, from: &str, to: &str) -> Option<Rate> {
        self.0.get(&format!("{from}/{to}")).copied()
    }
}

/// "0.92" -> {92, 2}: the exact value, never a float. None unless positive,
/// at most 18 decimals and within `i64`.
pub fn parse_rate(text: &str) -> Option<Rate> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (text.contains('.') && !digits(fraction)) || fraction.len() > 18 {
        return None;
    }
    let mantissa: i64 = format!("{whole}{fraction}").parse().ok()?;
    let scale = u8::try_from(fraction.len()).ok()?;
    (mantissa > 0).then_some(Rate { mantissa, scale })
}

/// Why a transfer is refused: a stable snake_case code and a sentence for the client.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

/// `amount_minor * rate`, in the target currency's minor units, rounded half-to-even.
pub fn convert_amount(amount_minor: i64, from_exponent: u8, to_exponent: u8, rate: Rate) -> Result<i64, Refusal> {
    let too_large = || Refusal { code: "amount_too_large", message: "The converted amount is too large.".to_string() };
    // The exact result is amount * mantissa * 10^shift minor units. Both
    // factors fit in i64, so their product fits in i128.
    let shift = i32::from(to_exponent) - i32::from(from_exponent) - i32::from(rate.scale);
    let product = i128::from(amount_minor) * i128::from(rate.mantissa);
    let power = 10i128.checked_pow(shift.unsigned_abs()).ok_or_else(too_large)?;
    let converted = if shift >= 0 {
        product.checked_mul(power).ok_or_else(too_large)?
    } else {
        let (quotient, remainder) = (product / power, product % power);
        // Half-to-even: a remainder of exactly half goes to the even neighbour.
        let round_up = 2 * remainder > power || (2 * remainder == power && quotient % 2 == 1);
        quotient + i128::from(round_up)
    };
    if converted <= 0 {
        return Err(Refusal { code: "amount_too_small", message: "The amount is less than one minor unit once converted.".to_string() });
    }
    i64::try_from(converted).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_rates_convert_exactly_and_round_half_to_even() {
        let rates = Rates::from_json("{}").unwrap();
        let usd_eur = rates.get("USD", "EUR").unwrap();
        assert_eq!(usd_eur, Rate { mantissa: 92, scale: 2 });
        assert_eq!(convert_amount(1000, 2, 2, usd_eur), Ok(920)); // 10.00 USD -> 9.20 EUR
        assert_eq!(convert_amount(1, 2, 2, usd_eur), Ok(1)); // 0.0092 rounds up to 0.01
        let half = Rate { mantissa: 5, scale: 1 };
        assert_eq!(convert_amount(5, 2, 2, half), Ok(2)); // 2.5 -> 2
        assert_eq!(convert_amount(7, 2, 2, half), Ok(4)); // 3.5 -> 4
        assert_eq!(convert_amount(1, 2, 2, Rate { mantissa: 1, scale: 1 }).unwrap_err().code, "amount_too_small");
        assert_eq!(convert_amount(i64::MAX, 0, 3, usd_eur).unwrap_err().code, "amount_too_large");
        assert!(rates.get("GBP", "EUR").is_none());
    }

    #[test]
    fn a_rate_that_is_not_an_exact_positive_decimal_string_is_refused() {
        assert_eq!(parse_rate("1.0845"), Some(Rate { mantissa: 10845, scale: 4 }));
        for bad in ["", "0", "0.00", "-1", "1.", ".5", "1e3", "1.2.3", "99999999999999999999"] {
            assert_eq!(parse_rate(bad), None, "{bad}");
        }
        assert!(Rates::from_json(r#"{"rates": {"USD/EUR": 0.92}}"#).is_err());
        assert!(Rates::from_json(r#"{"rates": {"usd-eur": "0.92"}}"#).is_err());
        assert!(Rates::from_json(r#"{"rate": {}}"#).is_err());
    }
}

/// The WebAssembly glue: the `converter` world of `wit/plugin.wit`, mapped onto the rule above.
#[cfg(target_arch = "wasm32")]
mod component {
    use std::sync::Mutex;

    use crate::{Rates, convert_amount};

    wit_bindgen::generate!({ world: "converter", path: "wit" });

    /// Set by `configure`. The engine configures every fresh instance before
    /// it calls `convert`, so each call sees exactly the operator's config.
    static RATES: Mutex<Option<Rates>> = Mutex::new(None);

    struct Plugin;

    impl Guest for Plugin {
        fn configure(config: String) -> Result<(), String> {
            let rates = Rates::from_json(&config)?;
            *RATES.lock().unwrap_or_else(|e| e.into_inner()) = Some(rates);
            Ok(())
        }

        fn convert(source: Money, target: Currency, _transfer: Transfer) -> Result<Conversion, Rejection> {
            let reject = |code: &str, message: String| Rejection { code: code.to_string(), message };
            let guard = RATES.lock().unwrap_or_else(|e| e.into_inner());
            let rates = guard.as_ref().ok_or_else(|| reject("not_configured", "The plugin was not configured.".to_string()))?;
            let (from, to) = (&source.currency.code, &target.code);
            let Some(rate) = rates.get(from, to) else {
                return Err(reject("rate_not_found", format!("No rate from {from} to {to} is configured.")));
            };
            let amount_minor = convert_amount(source.amount_minor, source.currency.exponent, target.exponent, rate)
                .map_err(|refusal| reject(refusal.code, refusal.message))?;
            Ok(Conversion { amount_minor, rate: Rate { mantissa: rate.mantissa, scale: rate.scale } })
        }
    }

    export!(Plugin);
}
