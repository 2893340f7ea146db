//! `X-Hub-Signature-256`: HMAC-SHA256 of the raw body under the webhook's secret.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Whether `header` (`sha256=<hex>`) is the signature of `body` under `secret`.
///
/// The comparison is constant-time (`Mac::verify_slice`), so timing tells an attacker
/// nothing about how much of a forged signature was right.
pub fn verify_signature(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(hex_signature) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(signature) = hex::decode(hex_signature) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's published test vector ("Testing the webhook payload validation",
    /// docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries).
    const SECRET: &[u8] = b"It's a Secret to Everybody";
    const PAYLOAD: &[u8] = b"Hello, World!";
    const SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn accepts_githubs_test_vector() {
        assert!(verify_signature(SECRET, PAYLOAD, SIGNATURE));
    }

    #[test]
    fn refuses_anything_else() {
        assert!(!verify_signature(b"another secret", PAYLOAD, SIGNATURE));
        assert!(!verify_signature(SECRET, b"Hello, World?", SIGNATURE));
        assert!(!verify_signature(
            SECRET,
            PAYLOAD,
            &SIGNATURE.replace("sha256=", "sha1=")
        ));
        assert!(!verify_signature(SECRET, PAYLOAD, "sha256=zz"));
        assert!(!verify_signature(SECRET, PAYLOAD, &SIGNATURE[..40]));
        assert!(!verify_signature(SECRET, PAYLOAD, ""));
    }
}
