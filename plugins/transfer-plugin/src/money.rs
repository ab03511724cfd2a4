//! Money as the engine has it: integer minor units (`i64`) with the
//! currency's ISO 4217 exponent beside them. Never a float; every operation
//! that could overflow is checked and says so.

use std::fmt;

/// An amount in minor units of one currency (EUR 12.34 is `1234` with exponent 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Minor {
    pub amount_minor: i64,
    /// The currency's number of minor-unit digits: EUR 2, JPY 0, BHD 3.
    pub exponent: u8,
}

/// Why a money operation has no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoneyError {
    /// The result does not fit an `i64` of minor units.
    Overflow,
    /// The two amounts are in currencies with different exponents.
    ExponentMismatch,
    /// The text is not a decimal with at most `exponent` fraction digits.
    NotDecimal,
}

impl fmt::Display for MoneyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Overflow => "the amount does not fit 64-bit minor units",
            Self::ExponentMismatch => "the amounts are in currencies with different exponents",
            Self::NotDecimal => "not a decimal amount with at most the currency's fraction digits",
        })
    }
}

impl std::error::Error for MoneyError {}

impl Minor {
    pub fn new(amount_minor: i64, exponent: u8) -> Self {
        Self {
            amount_minor,
            exponent,
        }
    }

    pub fn checked_add(self, other: Self) -> Result<Self, MoneyError> {
        self.same_currency(other)?;
        let sum = self
            .amount_minor
            .checked_add(other.amount_minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Self::new(sum, self.exponent))
    }

    pub fn checked_sub(self, other: Self) -> Result<Self, MoneyError> {
        self.same_currency(other)?;
        let difference = self
            .amount_minor
            .checked_sub(other.amount_minor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Self::new(difference, self.exponent))
    }

    /// The amount times a whole number (a count, a multiplier).
    pub fn checked_mul(self, factor: i64) -> Result<Self, MoneyError> {
        let product = self
            .amount_minor
            .checked_mul(factor)
            .ok_or(MoneyError::Overflow)?;
        Ok(Self::new(product, self.exponent))
    }

    /// Reads a plain decimal in major units ("12.34", "-5", "0.005"), exactly.
    pub fn parse(text: &str, exponent: u8) -> Result<Self, MoneyError> {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (major, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if major.is_empty()
            || !all_digits(major)
            || !all_digits(fraction)
            || fraction.len() > usize::from(exponent)
        {
            return Err(MoneyError::NotDecimal);
        }
        if digits.contains('.') && fraction.is_empty() {
            return Err(MoneyError::NotDecimal);
        }
        let scale = 10_i64
            .checked_pow(u32::from(exponent))
            .ok_or(MoneyError::Overflow)?;
        let major: i64 = major.parse().map_err(|_| MoneyError::Overflow)?;
        let padded = format!("{fraction:0<width$}", width = usize::from(exponent));
        let fraction: i64 = if padded.is_empty() {
            0
        } else {
            padded.parse().map_err(|_| MoneyError::NotDecimal)?
        };
        let magnitude = major
            .checked_mul(scale)
            .and_then(|m| m.checked_add(fraction))
            .ok_or(MoneyError::Overflow)?;
        Ok(Self::new(
            if negative { -magnitude } else { magnitude },
            exponent,
        ))
    }

    fn same_currency(self, other: Self) -> Result<(), MoneyError> {
        if self.exponent == other.exponent {
            Ok(())
        } else {
            Err(MoneyError::ExponentMismatch)
        }
    }
}

/// A plain decimal in major units: (123456, 2) is "1234.56", (5, 3) is
/// "0.005", (100000, 0) is "100000". Integer-only.
impl fmt::Display for Minor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_minor(self.amount_minor, self.exponent))
    }
}

/// Writes minor units as a plain decimal in major units (see [`Minor`]'s `Display`).
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

/// A currency code as the engine sends it: three upper-case ASCII letters.
pub fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_written_as_exact_decimals_in_every_exponent() {
        assert_eq!(format_minor(100_000, 0), "100000");
        assert_eq!(format_minor(123_456, 2), "1234.56");
        assert_eq!(format_minor(5, 2), "0.05");
        assert_eq!(format_minor(5, 3), "0.005");
        assert_eq!(format_minor(-1_500, 3), "-1.500");
        assert_eq!(format_minor(i64::MIN, 2), "-92233720368547758.08");
        assert_eq!(Minor::new(1234, 2).to_string(), "12.34");
    }

    #[test]
    fn decimals_are_read_exactly_and_anything_else_is_refused() {
        assert_eq!(Minor::parse("12.34", 2), Ok(Minor::new(1234, 2)));
        assert_eq!(Minor::parse("12.3", 2), Ok(Minor::new(1230, 2)));
        assert_eq!(Minor::parse("-5", 0), Ok(Minor::new(-5, 0)));
        assert_eq!(Minor::parse("0.005", 3), Ok(Minor::new(5, 3)));
        for bad in ["", "1.", ".5", "1.234", "1e3", "+1", "1,5", "--1", "١٢"] {
            assert_eq!(Minor::parse(bad, 2), Err(MoneyError::NotDecimal), "{bad:?}");
        }
        assert_eq!(
            Minor::parse("92233720368547758.07", 2),
            Ok(Minor::new(i64::MAX, 2))
        );
        assert_eq!(
            Minor::parse("92233720368547758.08", 2),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            Minor::parse("92233720368547759", 2),
            Err(MoneyError::Overflow)
        );
    }

    #[test]
    fn arithmetic_is_checked_and_refuses_mixed_currencies() {
        let ten = Minor::new(1000, 2);
        assert_eq!(ten.checked_add(Minor::new(1, 2)), Ok(Minor::new(1001, 2)));
        assert_eq!(ten.checked_sub(Minor::new(1001, 2)), Ok(Minor::new(-1, 2)));
        assert_eq!(ten.checked_mul(3), Ok(Minor::new(3000, 2)));
        assert_eq!(
            Minor::new(i64::MAX, 2).checked_add(Minor::new(1, 2)),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            Minor::new(i64::MIN, 2).checked_sub(Minor::new(1, 2)),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            Minor::new(i64::MAX, 2).checked_mul(2),
            Err(MoneyError::Overflow)
        );
        assert_eq!(
            ten.checked_add(Minor::new(1, 0)),
            Err(MoneyError::ExponentMismatch)
        );
        assert!(is_currency_code("EUR") && !is_currency_code("eur") && !is_currency_code("EURO"));
    }
}
