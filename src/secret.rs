//! Secrets: a value that never prints and only compares in constant time.

use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// A secret string (API key, source secret). `Debug` and `Display` print a mask, so a
/// secret that ends up in a log line or an error message by accident shows nothing.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the few places that must hand it on (HMAC keys, `init`).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares `candidate` with the secret in constant time. Both sides are hashed
    /// first, so neither the content nor the length of the secret leaks through timing.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let ours = Sha256::digest(self.0.as_bytes());
        let theirs = Sha256::digest(candidate);
        ours.ct_eq(&theirs).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(\"[redacted]\")")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Draws a fresh API key from the OS CSPRNG: `lk_` followed by 32 random bytes in hex.
pub fn generate_api_key() -> Result<Secret, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(Secret(format!("lk_{}", hex::encode(bytes))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_itself() {
        let s = Secret::new("lk_supersecret");
        // The mask itself shows, so a reader of a log line sees that a secret was there.
        assert_eq!(format!("{s:?}"), "Secret(\"[redacted]\")");
        assert_eq!(format!("{s}"), "[redacted]");
    }

    #[test]
    fn compares_whole_value() {
        let s = Secret::new("lk_abc");
        assert!(s.matches(b"lk_abc"));
        assert!(!s.matches(b"lk_ab"));
        assert!(!s.matches(b"lk_abcd"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn generated_keys_differ() {
        let a = generate_api_key().unwrap();
        let b = generate_api_key().unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 3 + 64);
    }
}
