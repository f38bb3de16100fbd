//! Secrets handling: keyed hashes for the identifiers telemetry may carry,
//! argon2 password hashes, card-number checks.
//!
//! `user.hash` and `shop.payment.card.fingerprint` are HMAC-SHA256 over the
//! normalised value, hex, the first 16 characters (the same shape as the
//! simulator's, see `sim::hash`). The keys come from `SHOP_USER_HASH_KEY` and
//! `SHOP_CARD_HASH_KEY`; the defaults are development keys, public on purpose.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const DEV_USER_KEY: &str = "shop dev user.hash key v1";
const DEV_CARD_KEY: &str = "shop dev card fingerprint key v1";

/// The keys of the keyed hashes.
#[derive(Clone)]
pub struct Keys {
    user: Vec<u8>,
    card: Vec<u8>,
}

impl Keys {
    pub fn from_env() -> Keys {
        let key = |var: &str, default: &str| {
            std::env::var(var)
                .unwrap_or_else(|_| default.to_owned())
                .into_bytes()
        };
        Keys {
            user: key("SHOP_USER_HASH_KEY", DEV_USER_KEY),
            card: key("SHOP_CARD_HASH_KEY", DEV_CARD_KEY),
        }
    }

    /// `user.hash` of a login name (trimmed, lower-cased).
    pub fn user_hash(&self, login: &str) -> String {
        keyed(&self.user, normalise_login(login).as_bytes())
    }

    /// `shop.payment.card.fingerprint` of a card number (its digits only).
    pub fn card_fingerprint(&self, number: &str) -> String {
        keyed(&self.card, card_digits(number).as_bytes())
    }
}

/// A login name as stored and hashed: trimmed and lower-cased.
pub fn normalise_login(login: &str) -> String {
    login.trim().to_lowercase()
}

fn keyed(key: &[u8], msg: &[u8]) -> String {
    // HMAC accepts keys of any length: new_from_slice cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(msg);
    hex::encode(&mac.finalize().into_bytes()[..8])
}

/// The digits of a card number.
pub fn card_digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

/// Whether `number` (spaces and dashes allowed) is 12 to 19 digits passing the Luhn check.
pub fn luhn_valid(number: &str) -> bool {
    if number
        .chars()
        .any(|c| !(c.is_ascii_digit() || c == ' ' || c == '-'))
    {
        return false;
    }
    let digits = card_digits(number);
    if !(12..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let dd = d * 2;
                if dd > 9 { dd - 9 } else { dd }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Errors of password hashing.
#[derive(Debug, thiserror::Error)]
#[error("password hashing: {0}")]
pub struct PasswordError(String);

/// Hashes a password with argon2id and the crate's default (OWASP) parameters.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    hash_with(&Argon2::default(), password)
}

/// Hashes a password with light argon2id parameters (64 KiB, 1 pass): used
/// only for the seeded test accounts, whose passwords are public anyway, so
/// that seeding a thousand of them takes seconds. The PHC string records the
/// parameters, so verification needs no special case.
pub fn hash_password_light(password: &str) -> Result<String, PasswordError> {
    let params = Params::new(64, 1, 1, None).map_err(|e| PasswordError(e.to_string()))?;
    hash_with(
        &Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
        password,
    )
}

fn hash_with(argon: &Argon2<'_>, password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    argon
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError(e.to_string()))
}

/// Whether `password` matches the PHC string `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// The e-mail and password of seeded account `n` (1-based): `shopper0001@example.com`
/// with password `shopper-0001-pass`, and so on.
pub fn seed_account(n: u32) -> (String, String) {
    (
        format!("shopper{n:04}@example.com"),
        format!("shopper-{n:04}-pass"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_hash_is_keyed_normalised_and_short() {
        let keys = Keys {
            user: b"k1".to_vec(),
            card: b"k2".to_vec(),
        };
        let a = keys.user_hash(" Anna@Example.com ");
        assert_eq!(a, keys.user_hash("anna@example.com"));
        assert_eq!(a.len(), 16);
        assert!(!a.contains("anna"));
        let other = Keys {
            user: b"another".to_vec(),
            card: b"k2".to_vec(),
        };
        assert_ne!(a, other.user_hash("anna@example.com"));
    }

    #[test]
    fn card_fingerprint_ignores_grouping() {
        let keys = Keys::from_env();
        assert_eq!(
            keys.card_fingerprint("4242 4242 4242 4242"),
            keys.card_fingerprint("4242-4242-4242-4242")
        );
        assert_eq!(keys.card_fingerprint("4242424242424242").len(), 16);
    }

    #[test]
    fn luhn() {
        assert!(luhn_valid("4242 4242 4242 4242"));
        assert!(luhn_valid("4000000000000002"));
        assert!(!luhn_valid("4242424242424241"));
        assert!(!luhn_valid("4242'; DROP TABLE orders;--"));
        assert!(!luhn_valid("42"));
    }

    #[test]
    fn password_hash_round_trip() {
        let hash = hash_password_light("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong", &hash));
        assert!(!verify_password("x", "not a phc string"));
    }
}
