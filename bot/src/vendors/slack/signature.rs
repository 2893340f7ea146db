//! `X-Slack-Signature`: `v0=` and the HMAC-SHA256, under the app's signing secret, of
//! `v0:<X-Slack-Request-Timestamp>:<raw body>`; a request five minutes old or more is refused
//! as a possible replay.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// How old a request may be: Slack's own SDKs refuse five minutes and more.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(5 * 60);

/// Why a request is not Slack's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no X-Slack-Request-Timestamp, or not a number")]
    Timestamp,
    #[error("the request is five minutes old or more (or from the future)")]
    Stale,
    #[error("the signature does not match")]
    Mismatch,
}

/// Checks `signature` over `body` sent at `timestamp` (seconds), as of `now` (seconds).
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now: u64,
) -> Result<(), SignatureError> {
    let sent: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::Timestamp)?;
    if now.abs_diff(sent) >= REPLAY_WINDOW.as_secs() {
        return Err(SignatureError::Stale);
    }
    let expected = signature
        .trim()
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::Mismatch)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(b"v0:");
    mac.update(timestamp.trim().as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// `v0=<hex>` for `body` sent at `timestamp`: what Slack sends; for tests and fakes.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slack's published vector (tests/fixtures/SOURCES.md).
    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
    const TIMESTAMP: &str = "1531420618";
    const BODY: &[u8] = include_bytes!("../../../../tests/fixtures/slack-slash-command-signed.txt");
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const NOW: u64 = 1_531_420_618 + 30;

    #[test]
    fn accepts_slacks_test_vector() {
        assert_eq!(verify(SECRET, TIMESTAMP, BODY, SIGNATURE, NOW), Ok(()));
        assert_eq!(sign(SECRET, 1_531_420_618, BODY), SIGNATURE);
    }

    #[test]
    fn refuses_anything_else() {
        let check = |secret: &[u8], timestamp: &str, body: &[u8], signature: &str, now: u64| {
            verify(secret, timestamp, body, signature, now)
        };
        let mismatch = Err(SignatureError::Mismatch);
        assert_eq!(check(b"other", TIMESTAMP, BODY, SIGNATURE, NOW), mismatch);
        assert_eq!(check(SECRET, "1531420619", BODY, SIGNATURE, NOW), mismatch);
        let mut longer = BODY.to_vec();
        longer.push(b'\n');
        assert_eq!(check(SECRET, TIMESTAMP, &longer, SIGNATURE, NOW), mismatch);
        let flipped = SIGNATURE.replace("a2114d", "a2114e");
        assert_eq!(check(SECRET, TIMESTAMP, BODY, &flipped, NOW), mismatch);
        assert_eq!(check(SECRET, TIMESTAMP, BODY, "", NOW), mismatch);
        assert_eq!(
            check(SECRET, "", BODY, SIGNATURE, NOW),
            Err(SignatureError::Timestamp)
        );
        let late = 1_531_420_618 + 300;
        assert_eq!(
            check(SECRET, TIMESTAMP, BODY, SIGNATURE, late),
            Err(SignatureError::Stale)
        );
        let early = 1_531_420_618 - 300;
        assert_eq!(
            check(SECRET, TIMESTAMP, BODY, SIGNATURE, early),
            Err(SignatureError::Stale)
        );
    }
}
