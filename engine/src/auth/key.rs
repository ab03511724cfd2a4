//! API keys: `tek_<client id, 32 hex>_<secret, 64 hex>`.
//!
//! The prefix makes a leaked key recognisable to secret scanners and to a
//! person reading a log. The client id in the key lets the engine find the
//! one stored hash to compare with (in constant time) instead of searching by
//! the secret. The secret is 256 bits from the operating system's CSPRNG, so
//! a plain SHA-256 is the right hash: a slow password hash defends low-entropy
//! secrets, which these are not, and would cost every request.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ClientId;

/// The start of every API key.
pub const KEY_PREFIX: &str = "tek_";
const SECRET_BYTES: usize = 32;

/// A key as presented by a caller, split into its parts. Holding one says
/// only that its shape is right, not that it belongs to anyone.
pub struct ApiKey {
    pub client_id: ClientId,
    secret: String,
}

impl ApiKey {
    /// Reads a presented key; `None` if it cannot be one of ours.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix(KEY_PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        if id.len() != 32 || secret.len() != SECRET_BYTES * 2 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let client_id = ClientId(uuid::Uuid::try_parse(id).ok()?);
        Some(Self { client_id, secret: secret.to_ascii_lowercase() })
    }

    /// True when this key's secret hashes to `stored` (compared in constant time).
    pub fn matches(&self, stored: &[u8]) -> bool {
        bool::from(secret_sha256(&self.secret).as_slice().ct_eq(stored))
    }
}

/// A newly made key: shown to the operator once, stored only as its hash.
pub struct KeySecret {
    /// The whole key, to hand to the client.
    pub key: String,
    /// SHA-256 of the secret part: what PostgreSQL keeps.
    pub secret_sha256: [u8; 32],
}

impl KeySecret {
    pub fn generate(client_id: ClientId) -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; SECRET_BYTES];
        getrandom::getrandom(&mut bytes)?;
        let secret = hex::encode(bytes);
        Ok(Self { key: format!("{KEY_PREFIX}{}_{secret}", client_id.0.simple()), secret_sha256: secret_sha256(&secret) })
    }
}

fn secret_sha256(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_back_and_matches_only_its_own_hash() {
        let id = ClientId::generate();
        let made = KeySecret::generate(id).unwrap();
        assert!(made.key.starts_with("tek_"));
        let key = ApiKey::parse(&made.key).expect("our own key parses");
        assert_eq!(key.client_id, id);
        assert!(key.matches(&made.secret_sha256));
        let other = KeySecret::generate(id).unwrap();
        assert!(!key.matches(&other.secret_sha256), "two keys of one client never share a secret");
    }

    #[test]
    fn text_that_is_not_shaped_like_a_key_is_refused_before_any_lookup() {
        let made = KeySecret::generate(ClientId::generate()).unwrap();
        for bad in [
            "",
            "tek_",
            "admin",
            &made.key[..made.key.len() - 1],
            &format!("{}0", made.key),
            &made.key.replace("tek_", "tex_"),
            &made.key.replacen('_', "-", 2),
            &format!("{}g", &made.key[..made.key.len() - 1]),
        ] {
            assert!(ApiKey::parse(bad).is_none(), "{bad:?} parsed");
        }
    }
}
