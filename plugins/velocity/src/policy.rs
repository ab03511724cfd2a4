//! The velocity policy, free of any WebAssembly glue.
//!
//! For a transfer of `amount` in currency `C`:
//!
//! 1. The sender's **tier** is the value of `tier_metadata_key` in the sender
//!    account's metadata when that value is a tier of `daily_limit_minor`,
//!    and `default_tier` otherwise: when the key is absent, when it names an
//!    unknown tier, and when the context has no sender account. (The engine
//!    rejects a transfer from a missing account with `account_not_found`
//!    anyway; the default tier keeps the answer a function of the config and
//!    never more lenient than for an existing account without a tier.)
//! 2. A currency missing from the tier's map is not limited: allow. A limit
//!    of 0 forbids sending that currency at all.
//! 3. Otherwise the context's 86,400 s window total (`sum-minor`: the
//!    sender's completed debits in `C` over the trailing 24 h) plus `amount`
//!    must not exceed the limit; a sum that overflows `i64` exceeds it.
//!    Reaching the limit exactly is allowed.
//!
//! The engine always supplies the declared window and an amount at
//! validation. Should either be missing, the transfer is rejected
//! (`context_missing`, `amount_missing`) rather than waved through or
//! trapped on: policy fails closed, and a rejection says why.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use transfer_plugin::money::{format_minor, is_currency_code};

/// The one velocity window this plugin declares: 24 hours.
pub const DAILY_WINDOW_SECONDS: u32 = 86_400;

/// A metadata key is 1 to this many characters of `[a-z0-9_.-]` (the engine's rule).
const METADATA_KEY_CHARS_MAX: usize = 64;

/// The operator's JSON, as written. Every key is required and unknown keys
/// are refused, so that a misspelt key cannot silently switch a limit off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    tier_metadata_key: String,
    default_tier: String,
    daily_limit_minor: BTreeMap<String, BTreeMap<String, i64>>,
}

/// A checked configuration: `default_tier` is a key of `daily_limit_minor`,
/// every currency code is three upper-case letters, every limit is >= 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Velocity {
    /// The sender account's metadata key that names its tier.
    tier_metadata_key: String,
    /// The tier of a sender whose metadata names no known tier.
    default_tier: String,
    /// Tier -> currency code -> the most a sender may send in 24 h, in minor units.
    daily_limit_minor: BTreeMap<String, BTreeMap<String, i64>>,
}

/// What the plugin asks the engine for (the WIT `needs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    pub accounts: bool,
    pub velocity_windows_seconds: Vec<u32>,
}

/// What `check` needs from the transfer.
#[derive(Debug, Clone, Copy)]
pub struct TransferFacts<'a> {
    pub currency_code: &'a str,
    pub currency_exponent: u8,
    pub amount_minor: Option<i64>,
}

/// One of the context's velocity totals (the WIT `window-total`, without
/// the count this policy does not use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSum {
    pub window_seconds: u32,
    pub sum_minor: i64,
}

/// Why a configuration was refused.
#[derive(Debug)]
pub enum ConfigError {
    Json(serde_json::Error),
    BadMetadataKey(String),
    UnknownDefaultTier {
        default_tier: String,
        tiers: Vec<String>,
    },
    BadCurrencyCode {
        tier: String,
        code: String,
    },
    NegativeLimit {
        tier: String,
        currency: String,
        limit_minor: i64,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json(e) => write!(f, "invalid velocity config: {e}"),
            Self::BadMetadataKey(key) => write!(
                f,
                "invalid velocity config: tier_metadata_key {key:?} is not a metadata key \
                 (1 to {METADATA_KEY_CHARS_MAX} characters of a-z, 0-9, '_', '.' and '-')"
            ),
            Self::UnknownDefaultTier {
                default_tier,
                tiers,
            } => write!(
                f,
                "invalid velocity config: default_tier {default_tier:?} is not a tier of \
                 daily_limit_minor (tiers: {tiers:?})"
            ),
            Self::BadCurrencyCode { tier, code } => write!(
                f,
                "invalid velocity config: {code:?} in daily_limit_minor.{tier} is not a \
                 currency code (three upper-case letters, for example \"EUR\")"
            ),
            Self::NegativeLimit {
                tier,
                currency,
                limit_minor,
            } => write!(
                f,
                "invalid velocity config: daily_limit_minor.{tier}.{currency} is \
                 {limit_minor}, but a limit cannot be negative"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Why a transfer was refused; [`Refusal::code`] is the stable code, the
/// `Display` text the sentence the client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    DailyLimitExceeded {
        tier: String,
        currency: String,
        exponent: u8,
        limit_minor: i64,
        /// What the sender already sent in the window (the context's `sum-minor`).
        sum_minor: i64,
        amount_minor: i64,
    },
    /// The context lacks the declared 24 h window total.
    ContextMissing { window_seconds: u32 },
    /// The engine sent no amount although a limit applies.
    AmountMissing { currency: String },
    /// `validate` ran before a successful `configure`. The engine never does
    /// this; the glue answers it so that the plugin cannot trap or allow.
    NotConfigured,
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Self::DailyLimitExceeded { .. } => "daily_limit_exceeded",
            Self::ContextMissing { .. } => "context_missing",
            Self::AmountMissing { .. } => "amount_missing",
            Self::NotConfigured => "not_configured",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DailyLimitExceeded {
                tier,
                currency,
                exponent,
                limit_minor,
                sum_minor,
                amount_minor,
            } => write!(
                f,
                "This transfer of {} {currency} would take the sender past the {tier} tier's \
                 limit of {} {currency} a day: {} {currency} was already sent in the last 24 hours.",
                format_minor(*amount_minor, *exponent),
                format_minor(*limit_minor, *exponent),
                format_minor(*sum_minor, *exponent),
            ),
            Self::ContextMissing { window_seconds } => write!(
                f,
                "The engine supplied no {window_seconds} s velocity total, so the daily limit \
                 cannot be checked."
            ),
            Self::AmountMissing { currency } => write!(
                f,
                "The transfer has no amount to check against the {currency} daily limit."
            ),
            Self::NotConfigured => write!(f, "The velocity plugin was not configured."),
        }
    }
}

impl Velocity {
    /// Parses and checks the operator's JSON config.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_json::from_str(json).map_err(ConfigError::Json)?;
        if !is_metadata_key(&raw.tier_metadata_key) {
            return Err(ConfigError::BadMetadataKey(raw.tier_metadata_key));
        }
        if !raw.daily_limit_minor.contains_key(&raw.default_tier) {
            return Err(ConfigError::UnknownDefaultTier {
                default_tier: raw.default_tier,
                tiers: raw.daily_limit_minor.into_keys().collect(),
            });
        }
        for (tier, limits) in &raw.daily_limit_minor {
            for (currency, &limit_minor) in limits {
                if !is_currency_code(currency) {
                    return Err(ConfigError::BadCurrencyCode {
                        tier: tier.clone(),
                        code: currency.clone(),
                    });
                }
                if limit_minor < 0 {
                    return Err(ConfigError::NegativeLimit {
                        tier: tier.clone(),
                        currency: currency.clone(),
                        limit_minor,
                    });
                }
            }
        }
        Ok(Self {
            tier_metadata_key: raw.tier_metadata_key,
            default_tier: raw.default_tier,
            daily_limit_minor: raw.daily_limit_minor,
        })
    }

    /// The sender's account (for its tier) and the 24 h window, whatever the config.
    pub fn needs(&self) -> Needs {
        Needs {
            accounts: true,
            velocity_windows_seconds: vec![DAILY_WINDOW_SECONDS],
        }
    }

    /// One line for the engine's log after a successful configure.
    pub fn summary(&self) -> String {
        format!(
            "velocity configured: {} tier(s) read from metadata key {:?}, default tier {:?}",
            self.daily_limit_minor.len(),
            self.tier_metadata_key,
            self.default_tier
        )
    }

    /// The tier that applies to a sender with this account metadata (`None`:
    /// no sender account). Always a key of `daily_limit_minor`.
    pub fn tier_of(&self, sender_metadata: Option<&[(String, String)]>) -> &str {
        sender_metadata
            .and_then(|metadata| metadata_get(metadata, &self.tier_metadata_key))
            .and_then(|named| self.daily_limit_minor.get_key_value(named))
            .map_or(&self.default_tier, |(tier, _)| tier)
    }

    /// Allows the transfer, or says why not (see the module docs for the rules).
    pub fn check(
        &self,
        transfer: &TransferFacts<'_>,
        sender_metadata: Option<&[(String, String)]>,
        velocity: &[WindowSum],
    ) -> Result<(), Refusal> {
        let tier = self.tier_of(sender_metadata);
        let Some(&limit_minor) = self
            .daily_limit_minor
            .get(tier)
            .and_then(|limits| limits.get(transfer.currency_code))
        else {
            return Ok(());
        };
        let currency = transfer.currency_code.to_string();
        let Some(amount_minor) = transfer.amount_minor else {
            return Err(Refusal::AmountMissing { currency });
        };
        let Some(window) = velocity
            .iter()
            .find(|w| w.window_seconds == DAILY_WINDOW_SECONDS)
        else {
            return Err(Refusal::ContextMissing {
                window_seconds: DAILY_WINDOW_SECONDS,
            });
        };
        let within = window
            .sum_minor
            .checked_add(amount_minor)
            .is_some_and(|total_minor| total_minor <= limit_minor);
        if within {
            Ok(())
        } else {
            Err(Refusal::DailyLimitExceeded {
                tier: tier.to_string(),
                currency,
                exponent: transfer.currency_exponent,
                limit_minor,
                sum_minor: window.sum_minor,
                amount_minor,
            })
        }
    }
}

/// The value of `key` in a metadata list (the engine sends each key once).
fn metadata_get<'a>(metadata: &'a [(String, String)], key: &str) -> Option<&'a str> {
    metadata
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn is_metadata_key(key: &str) -> bool {
    (1..=METADATA_KEY_CHARS_MAX).contains(&key.len())
        && key.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `examples/plugin-config/velocity.json`, plus a JPY limit and a USD-only tier.
    const CONFIG: &str = r#"{
        "tier_metadata_key": "kyc_tier",
        "default_tier": "basic",
        "daily_limit_minor": {
            "basic": {"EUR": 50000, "JPY": 100000},
            "verified": {"EUR": 1000000},
            "frozen": {"EUR": 0}
        }
    }"#;

    fn velocity() -> Velocity {
        Velocity::from_json(CONFIG).unwrap()
    }

    fn eur(amount_minor: i64) -> TransferFacts<'static> {
        TransferFacts {
            currency_code: "EUR",
            currency_exponent: 2,
            amount_minor: Some(amount_minor),
        }
    }

    fn tier(value: &str) -> Vec<(String, String)> {
        vec![
            ("country".to_string(), "DE".to_string()),
            ("kyc_tier".to_string(), value.to_string()),
        ]
    }

    fn daily(sum_minor: i64) -> Vec<WindowSum> {
        vec![WindowSum {
            window_seconds: DAILY_WINDOW_SECONDS,
            sum_minor,
        }]
    }

    #[test]
    fn allows_a_transfer_that_brings_the_daily_total_exactly_to_the_limit() {
        let basic = tier("basic");
        assert_eq!(
            velocity().check(&eur(12_000), Some(&basic), &daily(38_000)),
            Ok(())
        );
    }

    #[test]
    fn rejects_a_transfer_one_minor_unit_past_the_daily_limit_naming_limit_sum_and_amount() {
        let basic = tier("basic");
        let refusal = velocity()
            .check(&eur(12_001), Some(&basic), &daily(38_000))
            .unwrap_err();
        assert_eq!(refusal.code(), "daily_limit_exceeded");
        assert_eq!(
            refusal.to_string(),
            "This transfer of 120.01 EUR would take the sender past the basic tier's limit of \
             500.00 EUR a day: 380.00 EUR was already sent in the last 24 hours."
        );
    }

    #[test]
    fn a_single_transfer_over_the_limit_is_rejected_with_nothing_sent_before() {
        let refusal = velocity()
            .check(&eur(50_001), Some(&tier("basic")), &daily(0))
            .unwrap_err();
        assert_eq!(refusal.code(), "daily_limit_exceeded");
    }

    #[test]
    fn the_tier_named_in_the_sender_metadata_sets_the_limit() {
        let verified = tier("verified");
        assert_eq!(
            velocity().check(&eur(120_000), Some(&verified), &daily(880_000)),
            Ok(())
        );
        let refusal = velocity()
            .check(&eur(120_001), Some(&verified), &daily(880_000))
            .unwrap_err();
        assert!(
            refusal
                .to_string()
                .contains("verified tier's limit of 10000.00 EUR"),
            "{refusal}"
        );
    }

    #[test]
    fn an_unknown_tier_gets_the_default_tiers_limit() {
        let gold = tier("gold");
        assert_eq!(velocity().tier_of(Some(&gold)), "basic");
        let refusal = velocity()
            .check(&eur(50_001), Some(&gold), &daily(0))
            .unwrap_err();
        assert!(refusal.to_string().contains("basic tier's"), "{refusal}");
    }

    #[test]
    fn tier_names_match_exactly_so_a_differently_cased_tier_is_unknown() {
        assert_eq!(velocity().tier_of(Some(&tier("Verified"))), "basic");
        assert_eq!(velocity().tier_of(Some(&tier("verified "))), "basic");
    }

    #[test]
    fn a_sender_without_the_tier_key_gets_the_default_tier() {
        let metadata = vec![("kyc".to_string(), "verified".to_string())];
        assert_eq!(velocity().tier_of(Some(&metadata)), "basic");
        assert_eq!(velocity().tier_of(Some(&[])), "basic");
    }

    #[test]
    fn a_missing_sender_account_gets_the_default_tier() {
        assert_eq!(velocity().tier_of(None), "basic");
        assert_eq!(velocity().check(&eur(50_000), None, &daily(0)), Ok(()));
        assert_eq!(
            velocity()
                .check(&eur(50_001), None, &daily(0))
                .unwrap_err()
                .code(),
            "daily_limit_exceeded"
        );
    }

    #[test]
    fn a_currency_without_a_limit_in_the_senders_tier_is_not_limited() {
        let usd = TransferFacts {
            currency_code: "USD",
            currency_exponent: 2,
            amount_minor: Some(i64::MAX),
        };
        assert_eq!(
            velocity().check(&usd, Some(&tier("basic")), &daily(i64::MAX)),
            Ok(())
        );
        // JPY is limited for basic only; verified has no JPY limit. No window needed.
        let jpy = TransferFacts {
            currency_code: "JPY",
            currency_exponent: 0,
            amount_minor: Some(100_001),
        };
        assert_eq!(velocity().check(&jpy, Some(&tier("verified")), &[]), Ok(()));
    }

    #[test]
    fn each_currency_is_limited_in_its_own_minor_units() {
        let jpy = TransferFacts {
            currency_code: "JPY",
            currency_exponent: 0,
            amount_minor: Some(30_001),
        };
        let refusal = velocity()
            .check(&jpy, Some(&tier("basic")), &daily(70_000))
            .unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "This transfer of 30001 JPY would take the sender past the basic tier's limit of \
             100000 JPY a day: 70000 JPY was already sent in the last 24 hours."
        );
    }

    #[test]
    fn a_zero_limit_forbids_sending_that_currency() {
        let frozen = tier("frozen");
        let refusal = velocity()
            .check(&eur(1), Some(&frozen), &daily(0))
            .unwrap_err();
        assert_eq!(refusal.code(), "daily_limit_exceeded");
    }

    #[test]
    fn a_sum_that_overflows_counts_as_exceeding_the_limit() {
        let config = r#"{"tier_metadata_key": "kyc_tier", "default_tier": "whale",
                         "daily_limit_minor": {"whale": {"EUR": 9223372036854775807}}}"#;
        let whale = Velocity::from_json(config).unwrap();
        // The engine saturates the window's sum at i64::MAX.
        assert_eq!(whale.check(&eur(1), None, &daily(i64::MAX - 1)), Ok(()));
        let refusal = whale.check(&eur(1), None, &daily(i64::MAX)).unwrap_err();
        assert_eq!(refusal.code(), "daily_limit_exceeded");
        assert!(
            refusal
                .to_string()
                .contains("92233720368547758.07 EUR was already sent"),
            "{refusal}"
        );
        assert_eq!(
            whale
                .check(&eur(i64::MAX), None, &daily(1))
                .unwrap_err()
                .code(),
            "daily_limit_exceeded"
        );
    }

    #[test]
    fn reads_the_daily_window_among_several_in_either_order() {
        let hourly = WindowSum {
            window_seconds: 3_600,
            sum_minor: 1_000,
        };
        let daily = WindowSum {
            window_seconds: DAILY_WINDOW_SECONDS,
            sum_minor: 45_000,
        };
        for windows in [[hourly, daily], [daily, hourly]] {
            // 450.00 + 50.01 is over 500.00; 10.00 + 50.01 would not be.
            let refusal = velocity()
                .check(&eur(5_001), Some(&tier("basic")), &windows)
                .unwrap_err();
            assert!(
                refusal.to_string().contains("450.00 EUR was already sent"),
                "{refusal}"
            );
            assert_eq!(
                velocity().check(&eur(5_000), Some(&tier("basic")), &windows),
                Ok(())
            );
        }
    }

    #[test]
    fn rejects_with_context_missing_when_the_daily_window_is_absent() {
        let hourly = [WindowSum {
            window_seconds: 3_600,
            sum_minor: 0,
        }];
        for windows in [&hourly[..], &[]] {
            let refusal = velocity()
                .check(&eur(1), Some(&tier("basic")), windows)
                .unwrap_err();
            assert_eq!(refusal.code(), "context_missing");
            assert_eq!(
                refusal.to_string(),
                "The engine supplied no 86400 s velocity total, so the daily limit cannot be checked."
            );
        }
    }

    #[test]
    fn rejects_a_missing_amount_when_a_limit_applies() {
        let mut transfer = eur(0);
        transfer.amount_minor = None;
        let refusal = velocity()
            .check(&transfer, Some(&tier("basic")), &daily(0))
            .unwrap_err();
        assert_eq!(refusal.code(), "amount_missing");
        transfer.currency_code = "USD";
        assert_eq!(
            velocity().check(&transfer, Some(&tier("basic")), &daily(0)),
            Ok(())
        );
    }

    #[test]
    fn needs_the_sender_account_and_exactly_the_daily_window() {
        assert_eq!(
            velocity().needs(),
            Needs {
                accounts: true,
                velocity_windows_seconds: vec![86_400],
            }
        );
    }

    #[test]
    fn accepts_the_example_config() {
        let example = include_str!("../../../examples/plugin-config/velocity.json");
        let velocity = Velocity::from_json(example).unwrap();
        assert_eq!(
            velocity.summary(),
            "velocity configured: 2 tier(s) read from metadata key \"kyc_tier\", default tier \"basic\""
        );
    }

    #[test]
    fn refuses_unknown_and_missing_fields() {
        let err = Velocity::from_json(
            r#"{"tier_metadata_key": "kyc_tier", "default_tier": "basic",
                "daily_limit_minor": {"basic": {}}, "daily_limit": {}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `daily_limit`"),
            "{err}"
        );
        let err =
            Velocity::from_json(r#"{"default_tier": "basic", "daily_limit_minor": {"basic": {}}}"#)
                .unwrap_err();
        assert!(
            err.to_string()
                .contains("missing field `tier_metadata_key`"),
            "{err}"
        );
        assert!(Velocity::from_json("{}").is_err());
    }

    #[test]
    fn refuses_a_default_tier_that_has_no_limits() {
        let err = Velocity::from_json(
            r#"{"tier_metadata_key": "kyc_tier", "default_tier": "standard",
                "daily_limit_minor": {"basic": {"EUR": 1}, "verified": {}}}"#,
        )
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::UnknownDefaultTier { .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "invalid velocity config: default_tier \"standard\" is not a tier of \
             daily_limit_minor (tiers: [\"basic\", \"verified\"])"
        );
    }

    #[test]
    fn refuses_a_currency_code_that_is_not_three_upper_case_letters() {
        for code in ["eur", "EURO", "EU", "E1R", ""] {
            let config = format!(
                r#"{{"tier_metadata_key": "kyc_tier", "default_tier": "basic",
                     "daily_limit_minor": {{"basic": {{"{code}": 1}}}}}}"#
            );
            let err = Velocity::from_json(&config).unwrap_err();
            assert!(
                matches!(err, ConfigError::BadCurrencyCode { code: ref c, .. } if c == code),
                "{code:?}: {err}"
            );
        }
    }

    #[test]
    fn refuses_a_negative_or_fractional_limit_in_any_tier() {
        let err = Velocity::from_json(
            r#"{"tier_metadata_key": "kyc_tier", "default_tier": "basic",
                "daily_limit_minor": {"basic": {"EUR": 1}, "verified": {"EUR": -1}}}"#,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid velocity config: daily_limit_minor.verified.EUR is -1, but a limit cannot be negative"
        );
        assert!(
            Velocity::from_json(
                r#"{"tier_metadata_key": "kyc_tier", "default_tier": "basic",
                    "daily_limit_minor": {"basic": {"EUR": 10.5}}}"#,
            )
            .is_err()
        );
    }

    #[test]
    fn refuses_a_tier_metadata_key_the_engine_would_never_store() {
        let too_long = "k".repeat(METADATA_KEY_CHARS_MAX + 1);
        for key in ["", "KYC_tier", "kyc tier", "ü", too_long.as_str()] {
            let config = format!(
                r#"{{"tier_metadata_key": "{key}", "default_tier": "basic",
                     "daily_limit_minor": {{"basic": {{}}}}}}"#
            );
            let err = Velocity::from_json(&config).unwrap_err();
            assert!(
                matches!(err, ConfigError::BadMetadataKey(_)),
                "{key:?}: {err}"
            );
        }
        let longest = "k".repeat(METADATA_KEY_CHARS_MAX);
        for key in ["a.b-c_9", longest.as_str()] {
            let config = format!(
                r#"{{"tier_metadata_key": "{key}", "default_tier": "basic",
                     "daily_limit_minor": {{"basic": {{}}}}}}"#
            );
            assert!(Velocity::from_json(&config).is_ok(), "{key:?}");
        }
    }
}
