//! Keyed hashes for identifiers the shop must not emit raw.
//!
//! `user.hash` and `shop.payment.card.fingerprint` are HMAC-SHA256 over the
//! normalised value with a per-purpose key, hex-encoded and truncated to 16
//! characters (64 bits): enough to tell accounts and cards apart, not enough to
//! invert. The keys here are simulator keys, public on purpose; the real shop
//! reads its keys from its secret store (`shop::services::security::Keys`,
//! the same construction).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Key for `user.hash`.
pub const USER_KEY: &[u8] = b"shop-sim user.hash key v1";
/// Key for `shop.payment.card.fingerprint`.
pub const CARD_KEY: &[u8] = b"shop-sim card fingerprint key v1";

/// `user.hash` of a login name: HMAC-SHA256 over the trimmed, lower-cased name.
///
/// ```
/// let a = shop_sim::hash::user_hash(" Anna.Berg@example.com");
/// assert_eq!(a, shop_sim::hash::user_hash("anna.berg@example.com"));
/// assert_eq!(a.len(), 16);
/// ```
pub fn user_hash(login: &str) -> String {
    keyed(USER_KEY, normalise_login(login).as_bytes())
}

/// A login name as the shop stores and hashes it: trimmed and lower-cased.
pub fn normalise_login(login: &str) -> String {
    login.trim().to_lowercase()
}

/// The digits of a card number (spaces, dashes and anything else dropped).
pub fn card_digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

/// `shop.payment.card.fingerprint` of a card number: HMAC-SHA256 over its digits.
pub fn card_fingerprint(pan: &str) -> String {
    keyed(CARD_KEY, card_digits(pan).as_bytes())
}

/// The contract's keyed hash: HMAC-SHA256 of `msg` under `key`, its first
/// 8 bytes in lower-case hex. The simulator's keys are above; the shop's
/// come from its secret store (`shop::services::security::Keys`).
pub fn keyed(key: &[u8], msg: &[u8]) -> String {
    hmac_sha256(key, msg)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length: new_from_slice cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn hmac_rfc4231_case_2() {
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn keyed_hashes_are_the_captures() {
        // As the hand-written SHA-256 every capture in rules/captures/ was
        // first made with computed them (and Python's hmac module agrees).
        assert_eq!(user_hash(" Anna.Berg1@example.com"), "fc90309075df8e95");
        assert_eq!(card_fingerprint("4111111111111111"), "7e7ff9b01254858b");
    }

    #[test]
    fn card_fingerprint_ignores_spacing() {
        assert_eq!(
            card_fingerprint("4111 1111 1111 1111"),
            card_fingerprint("4111111111111111")
        );
        assert_ne!(
            card_fingerprint("4111111111111111"),
            user_hash("4111111111111111")
        );
    }
}
