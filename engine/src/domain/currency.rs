use std::fmt;

/// An ISO 4217 currency that has a minor unit (EUR, JPY, BHD...).
///
/// Codes without a defined minor unit (XAU, XXX, ...) are refused: the engine
/// only moves money it can count exactly in integer minor units.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    // The table lives in `iso_currency`, a maintained crate generated from the
    // ISO list, rather than in a hand-copied table here.
    iso: iso_currency::Currency,
    exponent: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CurrencyError {
    #[error("`{0}` is not an ISO 4217 currency code this engine supports")]
    NotSupported(String),
}

/// Longest input we will even look at: codes are three letters.
const CURRENCY_CODE_CHARS_MAX: usize = 3;

impl Currency {
    /// Parses an upper-case three-letter ISO 4217 code.
    pub fn parse(code: &str) -> Result<Self, CurrencyError> {
        let refuse = || CurrencyError::NotSupported(code.chars().take(16).collect());
        if code.len() != CURRENCY_CODE_CHARS_MAX || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(refuse());
        }
        let iso = iso_currency::Currency::from_code(code).ok_or_else(refuse)?;
        let exponent = iso.exponent().ok_or_else(refuse)?;
        let exponent = u8::try_from(exponent).map_err(|_| refuse())?;
        // 18 digits is the most an i64 can carry below the decimal point.
        if exponent > 18 {
            return Err(refuse());
        }
        Ok(Self { iso, exponent })
    }

    pub fn code(&self) -> &'static str {
        self.iso.code()
    }

    /// Number of minor-unit digits: EUR 2, JPY 0, BHD 3.
    pub fn exponent(&self) -> u8 {
        self.exponent
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl std::str::FromStr for Currency {
    type Err = CurrencyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> serde::Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Self::parse(&code).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currencies_know_their_exponent() {
        assert_eq!(Currency::parse("EUR").unwrap().exponent(), 2);
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::parse("BHD").unwrap().exponent(), 3);
    }

    #[test]
    fn unknown_lower_case_and_unitless_codes_are_refused() {
        for code in ["", "EU", "EURO", "eur", "ZZZ", "XAU", "XXX", "€", "E\u{0}R"] {
            assert!(Currency::parse(code).is_err(), "{code:?} should be refused");
        }
    }
}
