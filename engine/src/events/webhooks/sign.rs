//! Signatures as the Standard Webhooks specification defines them
//! (<https://www.standardwebhooks.com>): the secret is shown as `whsec_`
//! and the key in base64; a delivery carries `webhook-id`,
//! `webhook-timestamp` (Unix seconds) and `webhook-signature`, `v1,` and
//! the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` under the key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The key's length: the specification asks for 24 to 64 bytes.
pub const SECRET_BYTES: usize = 32;

const SECRET_PREFIX: &str = "whsec_";

/// A webhook's signing key, as stored.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

impl SigningKey {
    /// A new random key from the operating system.
    pub fn generate() -> Self {
        let mut key = vec![0u8; SECRET_BYTES];
        getrandom::getrandom(&mut key).expect("the operating system's random source is available");
        Self(key)
    }

    pub fn from_stored(key: Vec<u8>) -> Self {
        Self(key)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The secret as a receiver configures it: `whsec_<base64 key>`.
    pub fn secret(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// The `webhook-signature` header's value for this delivery.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_matches_the_specifications_example() {
        // The example of the Standard Webhooks specification and its reference libraries.
        let key = SigningKey::from_stored(STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap());
        let signature = key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, br#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(key.secret(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    }

    #[test]
    fn a_key_never_prints() {
        let key = SigningKey::generate();
        assert_eq!(key.as_bytes().len(), SECRET_BYTES);
        assert!(!format!("{key:?}").contains(&STANDARD.encode(key.as_bytes())));
    }
}
