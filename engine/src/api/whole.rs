//! Integer fields of request bodies, read as JSON defines integers.
//!
//! serde reads an `i64` only from an integer literal and refuses `7.0`, but
//! the OpenAPI document's JSON Schema calls every whole number an integer
//! (`7`, `7.0`, `70e-1` are one value), and clients in languages whose
//! numbers are floats send `7.0`. Refusing it refused a value the document
//! allows. These functions (for `#[serde(deserialize_with)]`) take any JSON
//! number whose exact value is whole and in range; a fraction (`7.5`), a
//! value out of range or anything that is not a number is still refused,
//! as before (a data error: 422 `invalid_body`).
//!
//! An owner id in a path is read the same way (`integer_text`): Schemathesis
//! reuses a value it sent in a body (`1956.0`) as a path segment, and the
//! document calls that segment an integer too. Query values (`limit`,
//! `before`) keep `i64::from_str`: Schemathesis renders integers in text
//! carriers as `5`, and no check has met another spelling there.

use serde::de::{Deserialize, Deserializer, Error};

/// Longest number text quoted back in an error message.
const QUOTED_CHARS_MAX: usize = 32;

/// An `i64` spelled as any JSON number with a whole value.
struct Whole(i64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // serde_json's `arbitrary_precision` is on: the number keeps its exact text.
        let number = serde_json::Number::deserialize(deserializer)?;
        let text = number.to_string();
        value(&text).map(Whole).ok_or_else(|| {
            let quoted: String = text.chars().take(QUOTED_CHARS_MAX).collect();
            D::Error::custom(format!("expected a whole number that fits a 64-bit integer, got {quoted}"))
        })
    }
}

pub fn i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    Whole::deserialize(deserializer).map(|w| w.0)
}

pub fn i32<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i32, D::Error> {
    let value = i64(deserializer)?;
    i32::try_from(value).map_err(|_| D::Error::custom(format!("{value} does not fit a 32-bit integer")))
}

/// An integer in a path segment: what `i64::from_str` reads (`5`, `+5`,
/// `007`), or a whole number in JSON's spelling (`5.0`, `5e0`).
pub fn integer_text(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().or_else(|| value(text))
}

/// An optional list (JSON null reads as absent); with `#[serde(default)]` for a missing field.
pub fn option_vec_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<i64>>, D::Error> {
    Ok(Option::<Vec<Whole>>::deserialize(deserializer)?.map(|list| list.into_iter().map(|w| w.0).collect()))
}

/// The exact value of JSON number text (`-?int(.frac)?(e[+-]?exp)?`) if it is
/// whole and fits an `i64`. Never builds more than 19 digits, whatever the exponent.
fn value(text: &str) -> Option<i64> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i64>().ok()?),
        None => (unsigned, 0),
    };
    let (int, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let bare_point = mantissa.contains('.') && fraction.is_empty();
    if int.is_empty() || bare_point || !int.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    // The value is `digits` times ten to the power `scale`.
    let digits = format!("{int}{fraction}");
    let digits = digits.trim_start_matches('0');
    let scale = exponent.checked_sub(i64::try_from(fraction.len()).ok()?)?;
    if digits.is_empty() {
        return Some(0);
    }
    const I64_DIGITS_MAX: usize = 19;
    let whole = if scale >= 0 {
        let zeros = usize::try_from(scale).ok().filter(|z| digits.len() + z <= I64_DIGITS_MAX)?;
        format!("{digits}{}", "0".repeat(zeros))
    } else {
        // Past the point: the digits cut off must all be zero.
        let cut = usize::try_from(scale.unsigned_abs()).ok().filter(|cut| *cut < digits.len())?;
        let (kept, dropped) = digits.split_at(digits.len() - cut);
        if !dropped.bytes().all(|b| b == b'0') || kept.len() > I64_DIGITS_MAX {
            return None;
        }
        kept.to_owned()
    };
    let magnitude = i128::from(whole.parse::<u64>().ok()?);
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_whole_number_reads_as_that_integer() {
        for (text, expected) in [
            ("7", 7),
            ("7.0", 7),
            ("7.000", 7),
            ("70e-1", 7),
            ("0.7E1", 7),
            ("7e0", 7),
            ("-3.0", -3),
            ("0", 0),
            ("-0.0", 0),
            ("0e999999", 0),
            ("1e18", 1_000_000_000_000_000_000),
            ("9223372036854775807", i64::MAX),
            ("-9223372036854775808", i64::MIN),
            ("-9223372036854775808.000", i64::MIN),
        ] {
            assert_eq!(super::value(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn fractions_and_values_past_i64_are_refused() {
        for text in
            ["7.5", "0.1", "75e-1", "1e-1", "9223372036854775808", "-9223372036854775809", "1e19", "1e99999999999999999999", "5e-99999"]
        {
            assert_eq!(value(text), None, "{text}");
        }
    }

    #[test]
    fn text_integers_take_rusts_spellings_and_whole_numbers() {
        for (text, expected) in [("5", 5), ("+5", 5), ("007", 7), ("5.0", 5), ("5e0", 5), ("-2", -2)] {
            assert_eq!(integer_text(text), Some(expected), "{text}");
        }
        for text in ["", "5.5", "five", " 5", "9223372036854775808", "0x5", "5."] {
            assert_eq!(integer_text(text), None, "{text}");
        }
    }

    #[derive(serde::Deserialize, Debug)]
    struct Body {
        #[serde(deserialize_with = "i64")]
        id: i64,
        #[serde(deserialize_with = "i32")]
        version: i32,
        #[serde(default, deserialize_with = "option_vec_i64")]
        owners: Option<Vec<i64>>,
    }

    #[test]
    fn bodies_take_whole_floats_and_refuse_strings_fractions_and_overflow() {
        let body: Body = serde_json::from_str(r#"{"id": 2.0, "version": 3e0, "owners": [1, 2.00]}"#).unwrap();
        assert_eq!((body.id, body.version, body.owners), (2, 3, Some(vec![1, 2])));
        let body: Body = serde_json::from_str(r#"{"id": 2, "version": 3, "owners": null}"#).unwrap();
        assert_eq!(body.owners, None);
        let body: Body = serde_json::from_str(r#"{"id": 2, "version": 3}"#).unwrap();
        assert_eq!(body.owners, None);
        for refused in [
            r#"{"id": "2", "version": 3}"#,
            r#"{"id": 2.5, "version": 3}"#,
            r#"{"id": 2, "version": 2147483648}"#,
            r#"{"id": 2, "version": 3, "owners": [1.5]}"#,
            r#"{"id": null, "version": 3}"#,
        ] {
            assert!(serde_json::from_str::<Body>(refused).is_err(), "{refused}");
        }
    }
}
