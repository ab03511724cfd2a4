use super::Currency;

/// A positive amount of money in minor units (EUR 12.34 is 1234).
///
/// The currency travels beside it (see `Money`); an `Amount` alone only
/// guarantees it is strictly positive and fits an `i64`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Amount(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("the amount must be a plain decimal number such as \"12.34\" (no sign other than '-', no exponent, no spaces)")]
    Malformed,
    #[error("the amount must be greater than zero")]
    NotPositive,
    #[error("the amount has more decimal places than the currency allows ({allowed})")]
    PrecisionExceeded { allowed: u8 },
    #[error("the amount is too large to be represented")]
    OutOfRange,
}

/// Longest decimal text we parse: an i64 has 19 digits, plus sign, point and
/// up to 18 fractional digits. Anything longer is refused before any work.
const DECIMAL_TEXT_CHARS_MAX: usize = 40;

impl Amount {
    pub fn from_minor(minor: i64) -> Result<Self, AmountError> {
        if minor <= 0 {
            return Err(AmountError::NotPositive);
        }
        Ok(Self(minor))
    }

    /// Parses decimal text exactly into a positive amount of `currency`.
    pub fn parse_decimal(text: &str, currency: Currency) -> Result<Self, AmountError> {
        Self::from_minor(parse_decimal_minor(text, currency.exponent())?)
    }

    pub fn minor(self) -> i64 {
        self.0
    }
}

/// Parses decimal text such as "12.34", "-5" or "0.001" into minor units with
/// `exponent` fractional digits, exactly: no float, no rounding.
///
/// Accepted grammar: `-?[0-9]+(\.[0-9]+)?`. Exponents ("1e2"), a leading '+',
/// a bare point (".5", "5."), whitespace and more fractional digits than the
/// exponent (even trailing zeros: "1.230" for EUR) are refused, so that what a
/// client sends is exactly what is booked.
///
/// Hand-written rather than a decimal crate: the grammar is tiny and we need
/// the exact refusal reasons above, which general decimal parsers round away.
pub fn parse_decimal_minor(text: &str, exponent: u8) -> Result<i64, AmountError> {
    if text.is_empty() || text.len() > DECIMAL_TEXT_CHARS_MAX {
        return Err(if text.is_empty() { AmountError::Malformed } else { AmountError::OutOfRange });
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (unsigned, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || (unsigned.contains('.') && fraction.is_empty()) {
        return Err(AmountError::Malformed);
    }
    if fraction.len() > usize::from(exponent) {
        return Err(AmountError::PrecisionExceeded { allowed: exponent });
    }
    // Accumulate as a negative number so that i64::MIN itself is reachable.
    let mut minor: i64 = 0;
    let padding = usize::from(exponent) - fraction.len();
    let digits = whole.bytes().chain(fraction.bytes()).chain(std::iter::repeat_n(b'0', padding));
    for digit in digits {
        minor = minor.checked_mul(10).and_then(|m| m.checked_sub(i64::from(digit - b'0'))).ok_or(AmountError::OutOfRange)?;
    }
    if negative { Ok(minor) } else { minor.checked_neg().ok_or(AmountError::OutOfRange) }
}

/// Formats minor units as decimal text with exactly `exponent` fractional
/// digits: (1234, 2) is "12.34", (-5, 3) is "-0.005", (7, 0) is "7".
pub fn format_minor(minor: i64, exponent: u8) -> String {
    let digits = minor.unsigned_abs().to_string();
    let exponent = usize::from(exponent);
    let sign = if minor < 0 { "-" } else { "" };
    if exponent == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = exponent + 1);
    let (whole, fraction) = padded.split_at(padded.len() - exponent);
    format!("{sign}{whole}.{fraction}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    #[test]
    fn decimal_text_is_parsed_exactly_for_each_exponent() {
        assert_eq!(parse_decimal_minor("12.34", 2), Ok(1234));
        assert_eq!(parse_decimal_minor("12.3", 2), Ok(1230));
        assert_eq!(parse_decimal_minor("12", 2), Ok(1200));
        assert_eq!(parse_decimal_minor("0.01", 2), Ok(1));
        assert_eq!(parse_decimal_minor("7", 0), Ok(7));
        assert_eq!(parse_decimal_minor("1.005", 3), Ok(1005));
        assert_eq!(parse_decimal_minor("-0.005", 3), Ok(-5));
        assert_eq!(parse_decimal_minor("007.50", 2), Ok(750));
    }

    #[test]
    fn more_fraction_digits_than_the_currency_allows_is_refused_not_rounded() {
        assert_eq!(parse_decimal_minor("12.345", 2), Err(AmountError::PrecisionExceeded { allowed: 2 }));
        assert_eq!(parse_decimal_minor("1.230", 2), Err(AmountError::PrecisionExceeded { allowed: 2 }));
        assert_eq!(parse_decimal_minor("1.5", 0), Err(AmountError::PrecisionExceeded { allowed: 0 }));
    }

    #[test]
    fn exponents_signs_spaces_and_bare_points_are_malformed() {
        for text in ["1e2", "1E2", "+1", ".5", "5.", " 1", "1 ", "1,00", "--1", "-", "", "0x10", "１", "1.2.3", "NaN", "inf"] {
            assert_eq!(parse_decimal_minor(text, 2), Err(AmountError::Malformed), "{text:?}");
        }
    }

    #[test]
    fn the_i64_boundary_is_reachable_and_one_past_it_is_out_of_range() {
        assert_eq!(parse_decimal_minor("9223372036854775807", 0), Ok(i64::MAX));
        assert_eq!(parse_decimal_minor("-9223372036854775808", 0), Ok(i64::MIN));
        assert_eq!(parse_decimal_minor("92233720368547758.07", 2), Ok(i64::MAX));
        assert_eq!(parse_decimal_minor("9223372036854775808", 0), Err(AmountError::OutOfRange));
        assert_eq!(parse_decimal_minor("92233720368547758.08", 2), Err(AmountError::OutOfRange));
        assert_eq!(parse_decimal_minor(&"9".repeat(60), 0), Err(AmountError::OutOfRange));
        assert_eq!(format_minor(i64::MIN, 2), "-92233720368547758.08");
        assert_eq!(format_minor(i64::MAX, 3), "9223372036854775.807");
    }

    #[test]
    fn amounts_must_be_positive() {
        assert_eq!(Amount::parse_decimal("0", eur()), Err(AmountError::NotPositive));
        assert_eq!(Amount::parse_decimal("0.00", eur()), Err(AmountError::NotPositive));
        assert_eq!(Amount::parse_decimal("-1", eur()), Err(AmountError::NotPositive));
        assert_eq!(Amount::parse_decimal("0.01", eur()).unwrap().minor(), 1);
    }

    #[test]
    fn formatting_pads_small_values() {
        assert_eq!(format_minor(5, 2), "0.05");
        assert_eq!(format_minor(-5, 3), "-0.005");
        assert_eq!(format_minor(0, 2), "0.00");
        assert_eq!(format_minor(1234, 0), "1234");
    }

    proptest! {
        #[test]
        fn formatting_then_parsing_round_trips_for_exponents_0_2_and_3(minor in any::<i64>(), exponent in prop::sample::select(vec![0u8, 2, 3])) {
            let text = format_minor(minor, exponent);
            prop_assert_eq!(parse_decimal_minor(&text, exponent), Ok(minor));
        }

        #[test]
        fn parsing_never_panics_on_arbitrary_text(text in ".{0,48}", exponent in 0u8..=18) {
            let _ = parse_decimal_minor(&text, exponent);
        }
    }
}
