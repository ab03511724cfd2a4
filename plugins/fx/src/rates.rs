//! Exact decimal exchange rates and integer conversion, free of any
//! WebAssembly glue. No floating point anywhere: rates are parsed from decimal
//! strings into `mantissa * 10^-scale`, and amounts stay integer minor units.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// Most decimal places a configured rate may have. Keeps `10^scale` and the
/// intermediate products comfortably inside `i128`.
pub const MAX_RATE_SCALE: u8 = 18;

/// An exact decimal rate, `mantissa * 10^-scale`: "1.0852" is `{10852, 4}`.
/// Always positive. Target units per source unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub mantissa: i64,
    pub scale: u8,
}

impl Rate {
    /// The rate between a currency and itself.
    pub const ONE: Rate = Rate {
        mantissa: 1,
        scale: 0,
    };

    /// Parses a plain decimal: digits, optionally a point and more digits
    /// ("0.9215", "160", "1.50"). No sign, exponent, or bare point; must be > 0.
    pub fn parse(text: &str) -> Result<Rate, RateError> {
        let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || (text.contains('.') && fraction.is_empty())
            || !all_digits(whole)
            || !all_digits(fraction)
        {
            return Err(RateError::NotDecimal);
        }
        let scale = u8::try_from(fraction.len())
            .ok()
            .filter(|&scale| scale <= MAX_RATE_SCALE)
            .ok_or(RateError::TooManyDecimals)?;
        let mut mantissa: i64 = 0;
        for digit in whole.bytes().chain(fraction.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(digit - b'0')))
                .ok_or(RateError::TooLarge)?;
        }
        if mantissa == 0 {
            return Err(RateError::Zero);
        }
        Ok(Rate { mantissa, scale })
    }
}

/// Why a rate string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateError {
    NotDecimal,
    TooManyDecimals,
    TooLarge,
    Zero,
}

impl fmt::Display for RateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotDecimal => "it is not a plain decimal such as \"0.9215\"",
            Self::TooManyDecimals => "it has more than 18 decimal places",
            Self::TooLarge => "its digits do not fit in a 64-bit integer",
            Self::Zero => "a rate must be greater than zero",
        })
    }
}

/// A currency as a conversion needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency<'a> {
    /// ISO 4217 code, for example "EUR".
    pub code: &'a str,
    /// Minor-unit digits: EUR 2, JPY 0, BHD 3.
    pub exponent: u8,
}

/// Converts `amount_minor` (minor units of a currency with `from_exponent`)
/// into minor units of a currency with `to_exponent` at `rate`.
///
/// # Rounding
/// The exact result is `amount_minor * rate * 10^(to_exponent - from_exponent)`.
/// It is rounded to the nearest whole minor unit of the target currency; an
/// exact tie (a remainder of precisely one half) goes to the even neighbour
/// (half-to-even, "banker's rounding"), so that over many conversions ties
/// round up and down equally often and no side gains systematically.
/// Examples: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, 2.51 -> 3. Negative values round by
/// magnitude in the same way (they are refused anyway).
///
/// All arithmetic is integer, on `i128` intermediates, and checked: a result
/// outside `i64` is [`ArithmeticError::Overflow`], and a result that is zero or
/// negative after rounding is [`ArithmeticError::NotPositive`].
pub fn convert_amount(
    amount_minor: i64,
    from_exponent: u8,
    to_exponent: u8,
    rate: Rate,
) -> Result<i64, ArithmeticError> {
    // |amount| and |mantissa| are at most 2^63, so the product fits in i128;
    // checked anyway so that no future change can wrap silently.
    let product = i128::from(amount_minor)
        .checked_mul(i128::from(rate.mantissa))
        .ok_or(ArithmeticError::Overflow)?;
    // value = product * 10^shift, in target minor units.
    let shift = i32::from(to_exponent) - i32::from(rate.scale) - i32::from(from_exponent);
    let converted = if product == 0 {
        0
    } else if shift >= 0 {
        10i128
            .checked_pow(shift.unsigned_abs())
            .and_then(|factor| product.checked_mul(factor))
            .ok_or(ArithmeticError::Overflow)?
    } else {
        div_pow10_half_even(product, shift.unsigned_abs()).ok_or(ArithmeticError::Overflow)?
    };
    let converted = i64::try_from(converted).map_err(|_| ArithmeticError::Overflow)?;
    if converted <= 0 {
        return Err(ArithmeticError::NotPositive {
            converted_minor: converted,
        });
    }
    Ok(converted)
}

/// `value / 10^digits`, rounded half-to-even (see [`convert_amount`]).
fn div_pow10_half_even(value: i128, digits: u32) -> Option<i128> {
    let magnitude = value.unsigned_abs();
    let Some(divisor) = 10u128.checked_pow(digits) else {
        // 10^digits exceeds u128::MAX >= 2 * |value|: less than half a unit.
        return Some(0);
    };
    let mut quotient = magnitude / divisor;
    let remainder = magnitude % divisor;
    // Compare remainder with divisor / 2 without doubling (which could overflow).
    let to_next = divisor - remainder;
    if remainder > to_next || (remainder == to_next && quotient % 2 == 1) {
        quotient += 1; // cannot overflow: divisor >= 10 so quotient <= u128::MAX / 10
    }
    let quotient = i128::try_from(quotient).ok()?;
    Some(if value < 0 { -quotient } else { quotient })
}

/// Why [`convert_amount`] gave no amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithmeticError {
    Overflow,
    NotPositive { converted_minor: i64 },
}

/// The operator's JSON: `{"rates": {"USD/EUR": "0.9215", ...}}`, where
/// "FROM/TO" gives how many TO units one FROM unit buys. Rates are strings so
/// that they are exact; a JSON number is refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    rates: BTreeMap<String, String>,
}

/// The configured rates, keyed "FROM/TO".
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RateTable {
    rates: BTreeMap<String, Rate>,
}

/// Why a configuration was refused.
#[derive(Debug)]
pub enum ConfigError {
    Json(serde_json::Error),
    BadPair(String),
    SameCurrencyPair(String),
    BadRate {
        pair: String,
        text: String,
        reason: RateError,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json(e) => write!(f, "invalid fx config: {e}"),
            Self::BadPair(pair) => write!(
                f,
                "invalid fx config: {pair:?} is not a currency pair such as \"USD/EUR\""
            ),
            Self::SameCurrencyPair(pair) => write!(
                f,
                "invalid fx config: {pair:?} converts a currency into itself, which is always 1:1"
            ),
            Self::BadRate { pair, text, reason } => {
                write!(
                    f,
                    "invalid fx config: rate {text:?} for {pair} is refused: {reason}"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why a conversion was refused; [`ConvertError::code`] is the stable code,
/// the `Display` text the sentence the client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConvertError {
    RateNotFound {
        from: String,
        to: String,
    },
    Overflow {
        from: String,
        to: String,
    },
    NotPositive {
        from: String,
        to: String,
        converted_minor: i64,
    },
}

impl ConvertError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::RateNotFound { .. } => "rate_not_found",
            Self::Overflow { .. } => "conversion_overflow",
            Self::NotPositive { .. } => "converted_amount_not_positive",
        }
    }
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RateNotFound { from, to } => {
                write!(f, "There is no exchange rate from {from} to {to}.")
            }
            Self::Overflow { from, to } => write!(
                f,
                "The amount converted from {from} to {to} is too large for the engine to hold."
            ),
            Self::NotPositive {
                from,
                to,
                converted_minor,
            } => write!(
                f,
                "The amount converted from {from} to {to} comes to {converted_minor} minor \
                 units of {to}; a converted amount must be positive."
            ),
        }
    }
}

impl RateTable {
    /// Parses and checks the operator's JSON config.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_json::from_str(json).map_err(ConfigError::Json)?;
        let mut rates = BTreeMap::new();
        for (pair, text) in raw.rates {
            let Some((from, to)) = pair.split_once('/') else {
                return Err(ConfigError::BadPair(pair));
            };
            if !is_currency_code(from) || !is_currency_code(to) {
                return Err(ConfigError::BadPair(pair));
            }
            if from == to {
                return Err(ConfigError::SameCurrencyPair(pair));
            }
            match Rate::parse(&text) {
                Ok(rate) => rates.insert(pair, rate),
                Err(reason) => return Err(ConfigError::BadRate { pair, text, reason }),
            };
        }
        Ok(Self { rates })
    }

    /// Number of configured pairs.
    pub fn len(&self) -> usize {
        self.rates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rates.is_empty()
    }

    /// The rate from one currency to another; 1 between a currency and itself.
    pub fn rate(&self, from: &str, to: &str) -> Option<Rate> {
        if from == to {
            return Some(Rate::ONE);
        }
        self.rates.get(&format!("{from}/{to}")).copied()
    }

    /// Converts `amount_minor` of `from` into `to` and answers the amount with
    /// the rate applied. See [`convert_amount`] for the rounding rule.
    pub fn convert(
        &self,
        amount_minor: i64,
        from: Currency<'_>,
        to: Currency<'_>,
    ) -> Result<(i64, Rate), ConvertError> {
        let names = || (from.code.to_string(), to.code.to_string());
        let Some(rate) = self.rate(from.code, to.code) else {
            let (from, to) = names();
            return Err(ConvertError::RateNotFound { from, to });
        };
        match convert_amount(amount_minor, from.exponent, to.exponent, rate) {
            Ok(converted) => Ok((converted, rate)),
            Err(ArithmeticError::Overflow) => {
                let (from, to) = names();
                Err(ConvertError::Overflow { from, to })
            }
            Err(ArithmeticError::NotPositive { converted_minor }) => {
                let (from, to) = names();
                Err(ConvertError::NotPositive {
                    from,
                    to,
                    converted_minor,
                })
            }
        }
    }
}

fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EUR: Currency<'static> = Currency {
        code: "EUR",
        exponent: 2,
    };
    const USD: Currency<'static> = Currency {
        code: "USD",
        exponent: 2,
    };
    const JPY: Currency<'static> = Currency {
        code: "JPY",
        exponent: 0,
    };
    const BHD: Currency<'static> = Currency {
        code: "BHD",
        exponent: 3,
    };

    fn table() -> RateTable {
        RateTable::from_json(
            r#"{"rates": {
                "USD/EUR": "0.9215",
                "EUR/USD": "1.0852",
                "EUR/JPY": "163.5",
                "JPY/BHD": "0.0025",
                "BHD/USD": "2.5",
                "USD/JPY": "1"
            }}"#,
        )
        .unwrap()
    }

    fn rate(mantissa: i64, scale: u8) -> Rate {
        Rate { mantissa, scale }
    }

    #[test]
    fn parses_decimal_strings_exactly() {
        assert_eq!(Rate::parse("0.9215"), Ok(rate(9215, 4)));
        assert_eq!(Rate::parse("1.0852"), Ok(rate(10852, 4)));
        assert_eq!(Rate::parse("160"), Ok(rate(160, 0)));
        assert_eq!(Rate::parse("1.50"), Ok(rate(150, 2)));
        assert_eq!(Rate::parse("0.000000000000000001"), Ok(rate(1, 18)));
    }

    #[test]
    fn refuses_rate_strings_that_are_not_plain_positive_decimals() {
        for text in [
            "", "1.", ".5", "-1", "+1", "1e3", "1.2.3", " 1", "abc", "1,5",
        ] {
            assert_eq!(Rate::parse(text), Err(RateError::NotDecimal), "{text:?}");
        }
        assert_eq!(Rate::parse("0"), Err(RateError::Zero));
        assert_eq!(Rate::parse("0.000"), Err(RateError::Zero));
        assert_eq!(
            Rate::parse("0.0000000000000000001"),
            Err(RateError::TooManyDecimals)
        );
        assert_eq!(Rate::parse("9223372036854775808"), Err(RateError::TooLarge));
    }

    #[test]
    fn converts_usd_to_eur_exactly_and_returns_the_rate_used() {
        let got = table().convert(10_000, USD, EUR);
        assert_eq!(got, Ok((9_215, rate(9215, 4))));
    }

    #[test]
    fn converts_eur_to_jpy_rounding_half_to_even() {
        // 1.00 EUR * 163.5 = 163.5 JPY: the tie goes up to the even 164.
        assert_eq!(table().convert(100, EUR, JPY), Ok((164, rate(1635, 1))));
        // 3.00 EUR * 163.5 = 490.5 JPY: the tie goes down to the even 490.
        assert_eq!(table().convert(300, EUR, JPY).unwrap().0, 490);
    }

    #[test]
    fn rounds_to_nearest_when_not_a_tie() {
        // USD/JPY is 1: 1.49 USD is 1 JPY, 1.51 USD is 2 JPY.
        assert_eq!(table().convert(149, USD, JPY).unwrap().0, 1);
        assert_eq!(table().convert(151, USD, JPY).unwrap().0, 2);
        // 2.51 rounds up even though 2 is even.
        assert_eq!(table().convert(251, USD, JPY).unwrap().0, 3);
    }

    #[test]
    fn converts_bhd_fils_to_usd_cents_with_ties_both_ways() {
        // 6 fils * 2.5 = 1.5 cents -> 2; 10 fils * 2.5 = 2.5 cents -> 2.
        assert_eq!(table().convert(6, BHD, USD).unwrap().0, 2);
        assert_eq!(table().convert(10, BHD, USD).unwrap().0, 2);
        // 14 fils * 2.5 = 3.5 cents -> 4.
        assert_eq!(table().convert(14, BHD, USD).unwrap().0, 4);
    }

    #[test]
    fn converts_from_exponent_zero_to_exponent_three() {
        // 1000 JPY * 0.0025 = 2.5 BHD = 2500 fils, exactly.
        assert_eq!(table().convert(1_000, JPY, BHD), Ok((2_500, rate(25, 4))));
        // A whole-number rate scales up: 7 JPY * 3 = 21 BHD = 21000 fils.
        assert_eq!(convert_amount(7, 0, 3, rate(3, 0)), Ok(21_000));
    }

    #[test]
    fn converts_the_same_currency_one_to_one_without_a_configured_rate() {
        let empty = RateTable::default();
        assert_eq!(empty.convert(12_345, EUR, EUR), Ok((12_345, Rate::ONE)));
        assert_eq!(empty.convert(7, JPY, JPY), Ok((7, Rate::ONE)));
    }

    #[test]
    fn rejects_a_pair_without_a_rate() {
        let err = table().convert(100, JPY, EUR).unwrap_err();
        assert_eq!(err.code(), "rate_not_found");
        assert_eq!(
            err.to_string(),
            "There is no exchange rate from JPY to EUR."
        );
    }

    #[test]
    fn rejects_a_conversion_that_overflows_i64() {
        let err = table().convert(i64::MAX, EUR, JPY).unwrap_err();
        assert_eq!(err.code(), "conversion_overflow");
        // A huge exponent difference overflows the power of ten itself.
        assert_eq!(
            convert_amount(1, 0, 255, Rate::ONE),
            Err(ArithmeticError::Overflow)
        );
    }

    #[test]
    fn the_largest_amount_converts_when_the_result_fits() {
        assert_eq!(convert_amount(i64::MAX, 2, 2, Rate::ONE), Ok(i64::MAX));
        assert_eq!(
            convert_amount(i64::MAX, 2, 0, rate(1, 0)),
            Ok(92_233_720_368_547_758)
        );
    }

    #[test]
    fn rejects_a_result_that_rounds_to_zero() {
        // 2 fils * 2.5 = 0.5 cents: the tie goes to the even 0.
        let err = table().convert(2, BHD, USD).unwrap_err();
        assert_eq!(err.code(), "converted_amount_not_positive");
        assert_eq!(
            err.to_string(),
            "The amount converted from BHD to USD comes to 0 minor units of USD; \
             a converted amount must be positive."
        );
        // A far smaller fraction than any power of ten in u128 still rounds to 0.
        assert_eq!(
            convert_amount(1, 255, 0, Rate::ONE),
            Err(ArithmeticError::NotPositive { converted_minor: 0 })
        );
    }

    #[test]
    fn rejects_zero_and_negative_source_amounts() {
        assert_eq!(
            table().convert(0, USD, EUR).unwrap_err().code(),
            "converted_amount_not_positive"
        );
        assert_eq!(
            table().convert(-10_000, USD, EUR).unwrap_err(),
            ConvertError::NotPositive {
                from: "USD".into(),
                to: "EUR".into(),
                converted_minor: -9_215
            }
        );
    }

    #[test]
    fn refuses_configs_with_bad_pairs_rates_or_keys() {
        let bad = [
            r#"{"rates": {"USDEUR": "1"}}"#,
            r#"{"rates": {"usd/eur": "1"}}"#,
            r#"{"rates": {"EUR/EUR": "1"}}"#,
            r#"{"rates": {"USD/EUR": 0.9215}}"#,
            r#"{"rates": {"USD/EUR": "0.9.2"}}"#,
            r#"{"rate": {"USD/EUR": "0.9215"}}"#,
            r#"{}"#,
        ];
        for json in bad {
            assert!(RateTable::from_json(json).is_err(), "{json}");
        }
        let err = RateTable::from_json(r#"{"rates": {"USD/EUR": "-1"}}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid fx config: rate \"-1\" for USD/EUR is refused: \
             it is not a plain decimal such as \"0.9215\""
        );
    }
}
