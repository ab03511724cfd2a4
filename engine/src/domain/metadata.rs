//! Metadata: the small string-to-string map a client attaches to a transfer
//! or an account (`{"kyc_tier": "verified", "country": "DE"}`), which
//! plugins read to decide. Bounded so that what every hook call copies into
//! a plugin, and what every row stores, stays small.

use std::collections::BTreeMap;

/// At most this many keys.
pub const METADATA_KEYS_MAX: usize = 16;
/// A key is 1 to this many characters of `[a-z0-9_.-]`.
pub const METADATA_KEY_CHARS_MAX: usize = 64;
/// A value is at most this many characters.
pub const METADATA_VALUE_CHARS_MAX: usize = 256;

/// Which bound a metadata object broke; the API's `metadata_invalid` names it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata has {count} keys; at most {METADATA_KEYS_MAX} are allowed")]
    TooManyKeys { count: usize },
    #[error("metadata key {key:?} must be 1 to {METADATA_KEY_CHARS_MAX} characters of a-z, 0-9, '_', '.' and '-'")]
    KeyInvalid { key: String },
    #[error("metadata value of {key:?} is {chars} characters; at most {METADATA_VALUE_CHARS_MAX} are allowed")]
    ValueTooLong { key: String, chars: usize },
    /// PostgreSQL's text and jsonb cannot hold NUL.
    #[error("metadata value of {key:?} contains a NUL character")]
    ValueHasNul { key: String },
}

/// Valid metadata, sorted by key (so it hashes, stores and reaches plugins in
/// one order). Empty is the default and what records and rows written before
/// metadata existed read as.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "BTreeMap<String, String>", into = "BTreeMap<String, String>")]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    pub fn new(entries: BTreeMap<String, String>) -> Result<Self, MetadataError> {
        if entries.len() > METADATA_KEYS_MAX {
            return Err(MetadataError::TooManyKeys { count: entries.len() });
        }
        for (key, value) in &entries {
            let key_ok = (1..=METADATA_KEY_CHARS_MAX).contains(&key.len())
                && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'));
            if !key_ok {
                // A key can be anything a client sent: keep what is echoed short.
                return Err(MetadataError::KeyInvalid { key: key.chars().take(METADATA_KEY_CHARS_MAX + 1).collect() });
            }
            let chars = value.chars().count();
            if chars > METADATA_VALUE_CHARS_MAX {
                return Err(MetadataError::ValueTooLong { key: key.clone(), chars });
            }
            if value.contains('\0') {
                return Err(MetadataError::ValueHasNul { key: key.clone() });
            }
        }
        Ok(Self(entries))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Entries in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Appends an unambiguous encoding to a fingerprint's canonical text:
    /// every key and value is length-prefixed, so no two maps encode alike.
    pub(crate) fn canonical(&self) -> String {
        let mut out = format!("metadata\x1f{}", self.0.len());
        for (key, value) in &self.0 {
            out.push_str(&format!("\x1f{}\x1f{key}\x1f{}\x1f{value}", key.len(), value.len()));
        }
        out
    }
}

impl TryFrom<BTreeMap<String, String>> for Metadata {
    type Error = MetadataError;

    fn try_from(entries: BTreeMap<String, String>) -> Result<Self, Self::Error> {
        Self::new(entries)
    }
}

impl From<Metadata> for BTreeMap<String, String> {
    fn from(metadata: Metadata) -> Self {
        metadata.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn metadata_within_every_bound_is_accepted_and_kept_in_key_order() {
        let m = Metadata::new(map(&[("country", "DE"), ("kyc_tier", "verified"), ("a.b-c_9", "")])).unwrap();
        assert_eq!(m.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["a.b-c_9", "country", "kyc_tier"]);
        let longest = "k".repeat(METADATA_KEY_CHARS_MAX);
        let value = "é".repeat(METADATA_VALUE_CHARS_MAX);
        assert!(Metadata::new(map(&[(&longest, &value)])).is_ok(), "limits count characters, not bytes");
        let full: BTreeMap<_, _> = (0..METADATA_KEYS_MAX).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert!(Metadata::new(full).is_ok());
    }

    #[test]
    fn metadata_past_any_bound_is_refused_naming_the_rule() {
        let many: BTreeMap<_, _> = (0..=METADATA_KEYS_MAX).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert_eq!(Metadata::new(many), Err(MetadataError::TooManyKeys { count: 17 }));
        for key in ["", "Country", "has space", "ü", &"k".repeat(METADATA_KEY_CHARS_MAX + 1)] {
            assert!(matches!(Metadata::new(map(&[(key, "v")])), Err(MetadataError::KeyInvalid { .. })), "{key:?}");
        }
        let long = "v".repeat(METADATA_VALUE_CHARS_MAX + 1);
        assert_eq!(Metadata::new(map(&[("k", &long)])), Err(MetadataError::ValueTooLong { key: "k".into(), chars: 257 }));
        assert_eq!(Metadata::new(map(&[("k", "a\0b")])), Err(MetadataError::ValueHasNul { key: "k".into() }));
    }

    #[test]
    fn metadata_deserialises_only_when_valid_and_round_trips() {
        let m: Metadata = serde_json::from_str(r#"{"kyc_tier":"verified"}"#).unwrap();
        assert_eq!(m.get("kyc_tier"), Some("verified"));
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"kyc_tier":"verified"}"#);
        assert!(serde_json::from_str::<Metadata>(r#"{"Bad":"x"}"#).is_err());
        assert!(serde_json::from_str::<Metadata>(r#"{"n":1}"#).is_err(), "values are strings");
    }

    #[test]
    fn the_canonical_form_tells_apart_maps_that_concatenate_alike() {
        let a = Metadata::new(map(&[("a", "b\x1f1\x1fc\x1f1\x1fd")])).unwrap();
        let b = Metadata::new(map(&[("a", "b"), ("c", "d")])).unwrap();
        assert_ne!(a.canonical(), b.canonical());
    }
}
