//! The channels policy, free of any WebAssembly glue.
//!
//! Checked in this order, the first that fails deciding:
//!
//! 1. `channel_missing`: `required` is true and the transfer's metadata has
//!    no `channel_metadata_key` (or only white space under it).
//! 2. `channel_blocked`: the transfer's channel is in `blocked_channels`.
//! 3. `country_blocked`: the sender's, then the receiver's, **account**
//!    metadata names a country (`country_metadata_key`) in
//!    `blocked_countries`. An account without that key, or absent from the
//!    context (it does not exist; the engine rejects the transfer with
//!    `account_not_found` anyway), blocks nothing.
//!
//! Values are compared after trimming white space and ignoring ASCII case
//! (channels lower-cased, countries upper-cased), so `" Crypto_ATM"` cannot
//! slip past a block on `crypto_atm`, nor `kp` past `KP`. Rejection messages
//! name the blocked entry as configured, never the client's text.
//!
//! Every config key is optional: `{}` blocks nothing and needs nothing.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;

/// A metadata key is 1 to this many characters of `[a-z0-9_.-]` (the engine's rule).
const METADATA_KEY_CHARS_MAX: usize = 64;
/// The engine stores metadata values of at most this many characters, so a
/// longer blocked channel could never match.
const METADATA_VALUE_CHARS_MAX: usize = 256;

const DEFAULT_CHANNEL_METADATA_KEY: &str = "channel";
const DEFAULT_COUNTRY_METADATA_KEY: &str = "country";

/// The operator's JSON, as written. Unknown keys are refused so that a
/// misspelt key cannot silently switch a block off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_channel_metadata_key")]
    channel_metadata_key: String,
    #[serde(default)]
    blocked_channels: Vec<String>,
    #[serde(default)]
    required: bool,
    #[serde(default = "default_country_metadata_key")]
    country_metadata_key: String,
    #[serde(default)]
    blocked_countries: Vec<String>,
}

fn default_channel_metadata_key() -> String {
    DEFAULT_CHANNEL_METADATA_KEY.to_string()
}

fn default_country_metadata_key() -> String {
    DEFAULT_COUNTRY_METADATA_KEY.to_string()
}

/// A checked configuration. The default (also what `{}` gives) blocks nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    /// The transfer metadata key that names its channel.
    channel_metadata_key: String,
    /// Channels refused, trimmed and lower-cased.
    blocked_channels: BTreeSet<String>,
    /// Whether a transfer without a channel is refused.
    required: bool,
    /// The account metadata key that names its country.
    country_metadata_key: String,
    /// ISO 3166-1 alpha-2 codes refused on either side.
    blocked_countries: BTreeSet<String>,
}

impl Default for Channels {
    fn default() -> Self {
        Self {
            channel_metadata_key: default_channel_metadata_key(),
            blocked_channels: BTreeSet::new(),
            required: false,
            country_metadata_key: default_country_metadata_key(),
            blocked_countries: BTreeSet::new(),
        }
    }
}

/// What the plugin asks the engine for (the WIT `needs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    pub accounts: bool,
    pub velocity_windows_seconds: Vec<u32>,
}

/// A metadata list as the engine sends it: (key, value), each key once.
pub type Metadata = [(String, String)];

/// Why a configuration was refused.
#[derive(Debug)]
pub enum ConfigError {
    Json(serde_json::Error),
    BadMetadataKey { field: &'static str, key: String },
    BadChannel(String),
    BadCountryCode(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json(e) => write!(f, "invalid channels config: {e}"),
            Self::BadMetadataKey { field, key } => write!(
                f,
                "invalid channels config: {field} {key:?} is not a metadata key \
                 (1 to {METADATA_KEY_CHARS_MAX} characters of a-z, 0-9, '_', '.' and '-')"
            ),
            Self::BadChannel(channel) => write!(
                f,
                "invalid channels config: {channel:?} in blocked_channels must have 1 to \
                 {METADATA_VALUE_CHARS_MAX} characters besides white space"
            ),
            Self::BadCountryCode(code) => write!(
                f,
                "invalid channels config: {code:?} in blocked_countries is not a country \
                 code (two upper-case letters, for example \"KP\")"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Which account a blocked country is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Sender,
    Receiver,
}

/// Why a transfer was refused; [`Refusal::code`] is the stable code, the
/// `Display` text the sentence the client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    ChannelMissing { key: String },
    ChannelBlocked { channel: String },
    CountryBlocked { side: Side, country: String },
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Self::ChannelMissing { .. } => "channel_missing",
            Self::ChannelBlocked { .. } => "channel_blocked",
            Self::CountryBlocked { .. } => "country_blocked",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ChannelMissing { key } => write!(
                f,
                "The transfer's metadata must name its channel under {key:?}."
            ),
            Self::ChannelBlocked { channel } => write!(
                f,
                "Transfers from the channel {channel:?} are not accepted."
            ),
            Self::CountryBlocked { side, country } => {
                let side = match side {
                    Side::Sender => "sender",
                    Side::Receiver => "receiver",
                };
                write!(
                    f,
                    "The {side}'s account is in {country}, a country transfers may not involve."
                )
            }
        }
    }
}

impl Channels {
    /// Parses and checks the operator's JSON config.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_json::from_str(json).map_err(ConfigError::Json)?;
        for (field, key) in [
            ("channel_metadata_key", &raw.channel_metadata_key),
            ("country_metadata_key", &raw.country_metadata_key),
        ] {
            if !is_metadata_key(key) {
                return Err(ConfigError::BadMetadataKey {
                    field,
                    key: key.clone(),
                });
            }
        }
        let mut blocked_channels = BTreeSet::new();
        for channel in raw.blocked_channels {
            let normalised = normalise_channel(&channel);
            if normalised.is_empty() || normalised.chars().count() > METADATA_VALUE_CHARS_MAX {
                return Err(ConfigError::BadChannel(channel));
            }
            blocked_channels.insert(normalised);
        }
        let mut blocked_countries = BTreeSet::new();
        for country in raw.blocked_countries {
            if !is_country_code(&country) {
                return Err(ConfigError::BadCountryCode(country));
            }
            blocked_countries.insert(country);
        }
        Ok(Self {
            channel_metadata_key: raw.channel_metadata_key,
            blocked_channels,
            required: raw.required,
            country_metadata_key: raw.country_metadata_key,
            blocked_countries,
        })
    }

    /// Accounts only when a country can be blocked; never a velocity window.
    pub fn needs(&self) -> Needs {
        Needs {
            accounts: !self.blocked_countries.is_empty(),
            velocity_windows_seconds: Vec::new(),
        }
    }

    /// One line for the engine's log after a successful configure.
    pub fn summary(&self) -> String {
        format!(
            "channels configured: {} blocked channel(s) under {:?}{}, {} blocked country(ies) under {:?}",
            self.blocked_channels.len(),
            self.channel_metadata_key,
            if self.required { " (required)" } else { "" },
            self.blocked_countries.len(),
            self.country_metadata_key,
        )
    }

    /// Allows the transfer, or says why not (see the module docs for the
    /// rules). `sender` and `receiver` are the accounts' metadata, `None`
    /// when the context has no such account.
    pub fn check(
        &self,
        transfer_metadata: &Metadata,
        sender: Option<&Metadata>,
        receiver: Option<&Metadata>,
    ) -> Result<(), Refusal> {
        let channel = metadata_get(transfer_metadata, &self.channel_metadata_key)
            .map(normalise_channel)
            .filter(|channel| !channel.is_empty());
        match channel {
            None if self.required => {
                return Err(Refusal::ChannelMissing {
                    key: self.channel_metadata_key.clone(),
                });
            }
            Some(channel) => {
                if let Some(blocked) = self.blocked_channels.get(&channel) {
                    return Err(Refusal::ChannelBlocked {
                        channel: blocked.clone(),
                    });
                }
            }
            None => {}
        }
        for (side, account) in [(Side::Sender, sender), (Side::Receiver, receiver)] {
            let country = account
                .and_then(|metadata| metadata_get(metadata, &self.country_metadata_key))
                .map(|country| country.trim().to_ascii_uppercase());
            if let Some(blocked) = country.and_then(|c| self.blocked_countries.get(&c)) {
                return Err(Refusal::CountryBlocked {
                    side,
                    country: blocked.clone(),
                });
            }
        }
        Ok(())
    }
}

fn normalise_channel(channel: &str) -> String {
    channel.trim().to_ascii_lowercase()
}

/// The value of `key` in a metadata list (the engine sends each key once).
fn metadata_get<'a>(metadata: &'a Metadata, key: &str) -> Option<&'a str> {
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

fn is_country_code(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"channel_metadata_key": "channel", "blocked_channels": ["crypto_atm", "Kiosk"],
                             "required": true, "country_metadata_key": "country", "blocked_countries": ["KP", "IR"]}"#;

    fn channels() -> Channels {
        Channels::from_json(CONFIG).unwrap()
    }

    fn metadata(entries: &[(&str, &str)]) -> Vec<(String, String)> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn allows_an_unblocked_channel_between_accounts_in_unblocked_countries() {
        let web = metadata(&[("channel", "web")]);
        let de = metadata(&[("country", "DE")]);
        assert_eq!(channels().check(&web, Some(&de), Some(&de)), Ok(()));
    }

    #[test]
    fn rejects_a_blocked_channel_naming_it_as_configured() {
        let atm = metadata(&[("channel", "crypto_atm"), ("device", "x1")]);
        let refusal = channels().check(&atm, None, None).unwrap_err();
        assert_eq!(refusal.code(), "channel_blocked");
        assert_eq!(
            refusal.to_string(),
            "Transfers from the channel \"crypto_atm\" are not accepted."
        );
    }

    #[test]
    fn channels_match_ignoring_case_and_surrounding_white_space() {
        for value in ["CRYPTO_ATM", " crypto_atm\t", "kiosk", "KIOSK "] {
            let transfer = metadata(&[("channel", value)]);
            assert_eq!(
                channels().check(&transfer, None, None).unwrap_err().code(),
                "channel_blocked",
                "{value:?}"
            );
        }
        let lookalike = metadata(&[("channel", "crypto_atm2")]);
        assert_eq!(channels().check(&lookalike, None, None), Ok(()));
    }

    #[test]
    fn rejects_a_transfer_without_a_channel_when_one_is_required() {
        for transfer in [
            metadata(&[]),
            metadata(&[("channels", "web")]),
            metadata(&[("channel", "  ")]),
        ] {
            let refusal = channels().check(&transfer, None, None).unwrap_err();
            assert_eq!(refusal.code(), "channel_missing", "{transfer:?}");
            assert_eq!(
                refusal.to_string(),
                "The transfer's metadata must name its channel under \"channel\"."
            );
        }
    }

    #[test]
    fn allows_a_transfer_without_a_channel_when_none_is_required() {
        let lenient = Channels::from_json(r#"{"blocked_channels": ["crypto_atm"]}"#).unwrap();
        assert_eq!(lenient.check(&metadata(&[]), None, None), Ok(()));
    }

    #[test]
    fn rejects_a_sender_or_receiver_account_in_a_blocked_country() {
        let web = metadata(&[("channel", "web")]);
        let de = metadata(&[("country", "DE")]);
        let kp = metadata(&[("country", "KP"), ("kyc_tier", "basic")]);
        let refusal = channels().check(&web, Some(&kp), Some(&de)).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::CountryBlocked {
                side: Side::Sender,
                country: "KP".to_string()
            }
        );
        assert_eq!(refusal.code(), "country_blocked");
        assert_eq!(
            refusal.to_string(),
            "The sender's account is in KP, a country transfers may not involve."
        );
        let refusal = channels().check(&web, Some(&de), Some(&kp)).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "The receiver's account is in KP, a country transfers may not involve."
        );
    }

    #[test]
    fn countries_match_ignoring_case_and_surrounding_white_space() {
        let web = metadata(&[("channel", "web")]);
        let ir = metadata(&[("country", " ir ")]);
        assert_eq!(
            channels().check(&web, None, Some(&ir)).unwrap_err().code(),
            "country_blocked"
        );
    }

    #[test]
    fn an_account_without_a_country_or_absent_from_the_context_blocks_nothing() {
        let web = metadata(&[("channel", "web")]);
        let untagged = metadata(&[("kyc_tier", "KP")]);
        assert_eq!(channels().check(&web, Some(&untagged), None), Ok(()));
        assert_eq!(channels().check(&web, None, None), Ok(()));
    }

    #[test]
    fn the_transfers_own_channel_is_checked_before_the_accounts() {
        let atm = metadata(&[("channel", "crypto_atm")]);
        let kp = metadata(&[("country", "KP")]);
        assert_eq!(
            channels()
                .check(&atm, Some(&kp), Some(&kp))
                .unwrap_err()
                .code(),
            "channel_blocked"
        );
        assert_eq!(
            channels()
                .check(&metadata(&[]), Some(&kp), None)
                .unwrap_err()
                .code(),
            "channel_missing"
        );
    }

    #[test]
    fn reads_the_configured_metadata_keys() {
        let custom = Channels::from_json(
            r#"{"channel_metadata_key": "origin.channel", "blocked_channels": ["pos"],
                "country_metadata_key": "residence", "blocked_countries": ["KP"]}"#,
        )
        .unwrap();
        let pos = metadata(&[("channel", "web"), ("origin.channel", "pos")]);
        assert_eq!(
            custom.check(&pos, None, None).unwrap_err().code(),
            "channel_blocked"
        );
        let web = metadata(&[("channel", "pos"), ("origin.channel", "web")]);
        let kp_residence = metadata(&[("country", "DE"), ("residence", "KP")]);
        assert_eq!(
            custom
                .check(&web, Some(&kp_residence), None)
                .unwrap_err()
                .code(),
            "country_blocked"
        );
        let kp_country = metadata(&[("country", "KP")]);
        assert_eq!(custom.check(&web, Some(&kp_country), None), Ok(()));
    }

    #[test]
    fn needs_accounts_only_when_it_blocks_countries_and_never_a_window() {
        assert_eq!(
            channels().needs(),
            Needs {
                accounts: true,
                velocity_windows_seconds: vec![]
            }
        );
        let channels_only =
            Channels::from_json(r#"{"blocked_channels": ["crypto_atm"], "required": true}"#)
                .unwrap();
        assert_eq!(
            channels_only.needs(),
            Needs {
                accounts: false,
                velocity_windows_seconds: vec![]
            }
        );
        let empty_list = Channels::from_json(r#"{"blocked_countries": []}"#).unwrap();
        assert!(!empty_list.needs().accounts);
    }

    #[test]
    fn an_empty_config_blocks_nothing_and_needs_nothing() {
        let empty = Channels::from_json("{}").unwrap();
        assert_eq!(empty, Channels::default());
        assert!(!empty.needs().accounts);
        let atm = metadata(&[("channel", "crypto_atm")]);
        let kp = metadata(&[("country", "KP")]);
        assert_eq!(empty.check(&atm, Some(&kp), Some(&kp)), Ok(()));
    }

    #[test]
    fn accepts_the_example_config() {
        let example = include_str!("../../../examples/plugin-config/channels.json");
        let configured = Channels::from_json(example).unwrap();
        assert_eq!(
            configured.summary(),
            "channels configured: 1 blocked channel(s) under \"channel\", \
             1 blocked country(ies) under \"country\""
        );
        assert!(configured.needs().accounts);
    }

    #[test]
    fn refuses_unknown_keys_and_wrong_types() {
        let err = Channels::from_json(r#"{"blocked_channel": ["crypto_atm"]}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `blocked_channel`"),
            "{err}"
        );
        assert!(Channels::from_json(r#"{"required": "yes"}"#).is_err());
        assert!(Channels::from_json(r#"{"blocked_countries": "KP"}"#).is_err());
    }

    #[test]
    fn refuses_metadata_keys_the_engine_would_never_store() {
        for config in [
            r#"{"channel_metadata_key": "Channel"}"#,
            r#"{"channel_metadata_key": ""}"#,
            r#"{"country_metadata_key": "home country"}"#,
        ] {
            let err = Channels::from_json(config).unwrap_err();
            assert!(
                matches!(err, ConfigError::BadMetadataKey { .. }),
                "{config}: {err}"
            );
        }
        let err = Channels::from_json(r#"{"country_metadata_key": "Land"}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid channels config: country_metadata_key \"Land\" is not a metadata key \
             (1 to 64 characters of a-z, 0-9, '_', '.' and '-')"
        );
    }

    #[test]
    fn refuses_an_empty_or_overlong_blocked_channel() {
        let overlong = "c".repeat(METADATA_VALUE_CHARS_MAX + 1);
        for channel in ["", "   ", overlong.as_str()] {
            let config = format!(r#"{{"blocked_channels": ["{channel}"]}}"#);
            let err = Channels::from_json(&config).unwrap_err();
            assert!(
                matches!(err, ConfigError::BadChannel(_)),
                "{channel:?}: {err}"
            );
        }
        let longest = "c".repeat(METADATA_VALUE_CHARS_MAX);
        let config = format!(r#"{{"blocked_channels": ["{longest}"]}}"#);
        assert!(Channels::from_json(&config).is_ok());
    }

    #[test]
    fn refuses_a_country_that_is_not_two_upper_case_letters() {
        for code in ["kp", "PRK", "K", "K1", ""] {
            let config = format!(r#"{{"blocked_countries": ["{code}"]}}"#);
            let err = Channels::from_json(&config).unwrap_err();
            assert!(
                matches!(err, ConfigError::BadCountryCode(ref c) if c == code),
                "{code:?}: {err}"
            );
        }
    }
}
