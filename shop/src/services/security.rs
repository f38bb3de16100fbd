//! Secrets handling: keyed hashes for the identifiers telemetry may carry,
//! argon2 password hashes, card-number checks.
//!
//! `user.hash` and `shop.payment.card.fingerprint` are HMAC-SHA256 over the
//! normalised value, hex, the first 16 characters (the same shape as the
//! simulator's, see `sim::hash`). The keys come from `SHOP_USER_HASH_KEY` and
//! `SHOP_CARD_HASH_KEY`. There is no default: a missing key stops the service,
//! unless `SHOP_DEV_KEYS=true` says this is a laptop or the local stack, where
//! the public development keys ([`Keys::development`]) stand in for it.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

const DEV_USER_KEY: &str = "shop dev user.hash key v1";
const DEV_CARD_KEY: &str = "shop dev card fingerprint key v1";

/// The variable that lets the public development keys stand in for missing ones.
pub const DEV_KEYS_VAR: &str = "SHOP_DEV_KEYS";
/// The shortest secret key accepted.
const MIN_KEY_BYTES: usize = 16;

/// A hashing key that is missing or unusable.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{var} is not set: set it to a secret of at least {MIN_KEY_BYTES} bytes, \
         or set {DEV_KEYS_VAR}=true to use the public development keys (laptop and local stack only)"
    )]
    Missing { var: &'static str },
    #[error("{var} is shorter than {MIN_KEY_BYTES} bytes: use a longer secret")]
    TooShort { var: &'static str },
}

/// The keys of the keyed hashes.
#[derive(Clone)]
pub struct Keys {
    user: Vec<u8>,
    card: Vec<u8>,
}

impl Keys {
    /// The keys from `SHOP_USER_HASH_KEY` and `SHOP_CARD_HASH_KEY`. A missing
    /// one is an error, unless `SHOP_DEV_KEYS` is `true` (or `1`): then the
    /// development key stands in for it.
    pub fn from_env() -> Result<Keys, KeyError> {
        let dev = std::env::var(DEV_KEYS_VAR)
            .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1"));
        Self::from_vars(|var| std::env::var(var).ok(), dev)
    }

    /// The keys as [`Keys::from_env`] reads them, from `get` (a variable's
    /// value) and `dev` (whether `SHOP_DEV_KEYS` is on).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>, dev: bool) -> Result<Keys, KeyError> {
        let key = |var: &'static str, dev_key: &str| match get(var).filter(|v| !v.is_empty()) {
            Some(v) if v.len() < MIN_KEY_BYTES => Err(KeyError::TooShort { var }),
            Some(v) => Ok(v.into_bytes()),
            None if dev => Ok(dev_key.as_bytes().to_vec()),
            None => Err(KeyError::Missing { var }),
        };
        Ok(Keys {
            user: key("SHOP_USER_HASH_KEY", DEV_USER_KEY)?,
            card: key("SHOP_CARD_HASH_KEY", DEV_CARD_KEY)?,
        })
    }

    /// The public development keys: what `SHOP_DEV_KEYS=true` uses, and what
    /// the recordings in `rules/captures/recorded/` were hashed with.
    pub fn development() -> Keys {
        Keys {
            user: DEV_USER_KEY.as_bytes().to_vec(),
            card: DEV_CARD_KEY.as_bytes().to_vec(),
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

use shop_sim::hash::keyed;
pub use shop_sim::hash::{card_digits, normalise_login};

/// Whether `number` (spaces and dashes allowed) is 12 to 19 digits passing the Luhn check.
pub fn luhn_valid(number: &str) -> bool {
    if number
        .chars()
        .any(|c| !(c.is_ascii_digit() || c == ' ' || c == '-'))
    {
        return false;
    }
    let digits = card_digits(number);
    (12..=19).contains(&digits.len()) && shop_sim::model::luhn_valid(&digits)
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

/// The argon2 algorithm, version and parameters of the PHC string `hash`
/// (`argon2id v=19 m=19456,t=2,p=1`): what one verification of it costs.
pub fn hash_cost(hash: &str) -> Option<String> {
    let parsed = PasswordHash::new(hash).ok()?;
    let params = Params::try_from(&parsed).ok()?;
    Some(format!(
        "{} v={} m={},t={},p={}",
        parsed.algorithm,
        parsed.version.unwrap_or_default(),
        params.m_cost(),
        params.t_cost(),
        params.p_cost()
    ))
}

/// Checks login passwords. Every login runs exactly one argon2 verification:
/// against the account's hash, or, when the name is unknown, against a dummy
/// hash made with the parameters of every registration ([`hash_password`]),
/// so that neither the time taken nor the answer tells whether an account
/// exists. Counts what it verified.
#[derive(Clone)]
pub struct Passwords {
    dummy: std::sync::Arc<str>,
    verified: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Passwords {
    /// Makes the dummy hash (of a random password nobody knows).
    pub fn new() -> Result<Self, PasswordError> {
        let secret = hex::encode(rand::random::<[u8; 16]>());
        Ok(Passwords {
            dummy: hash_password(&secret)?.into(),
            verified: Default::default(),
        })
    }

    /// The hash verified for names that have no account.
    pub fn dummy(&self) -> &str {
        &self.dummy
    }

    /// Whether `password` matches `hash` (the account's), or, with no
    /// account, false after verifying it against the dummy all the same. Runs
    /// on the blocking pool.
    pub async fn verify(
        &self,
        password: String,
        hash: Option<String>,
    ) -> Result<bool, tokio::task::JoinError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.to_string());
        self.verified
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let matches =
            tokio::task::spawn_blocking(move || verify_password(&password, &hash)).await?;
        Ok(matches && known)
    }

    /// How many verifications ran.
    pub fn verified(&self) -> u64 {
        self.verified.load(std::sync::atomic::Ordering::Relaxed)
    }
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
        let keys = Keys::development();
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
    fn keys_have_no_default_without_the_dev_flag() {
        let none = |_: &str| None;
        let e = Keys::from_vars(none, false).err().map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("SHOP_USER_HASH_KEY") && e.contains(DEV_KEYS_VAR)),
            "{e:?}"
        );
        let only_user = |v: &str| (v == "SHOP_USER_HASH_KEY").then(|| "u".repeat(32));
        let e = Keys::from_vars(only_user, false)
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("SHOP_CARD_HASH_KEY")),
            "{e:?}"
        );
        let short = |_: &str| Some("short".to_owned());
        assert!(matches!(
            Keys::from_vars(short, true),
            Err(KeyError::TooShort { .. })
        ));
        // With the flag, the development keys stand in for missing ones only.
        let dev = Keys::from_vars(none, true).unwrap();
        assert_eq!(
            dev.user_hash("a@example.com"),
            Keys::development().user_hash("a@example.com")
        );
        let set = Keys::from_vars(only_user, true).unwrap();
        assert_ne!(
            set.user_hash("a@example.com"),
            dev.user_hash("a@example.com")
        );
        assert_eq!(
            set.card_fingerprint("4242424242424242"),
            dev.card_fingerprint("4242424242424242")
        );
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
