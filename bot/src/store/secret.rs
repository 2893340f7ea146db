//! The random secrets every bot shares through Redis (the cookie key, the task names'
//! secret): made by the first bot that asks, kept as hex.

use redis::{ErrorKind, RedisError, RedisResult};

/// A new secret of 32 random bytes, as hex; `what` names it in the error.
pub(super) fn fresh(what: &str) -> RedisResult<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        RedisError::from((
            ErrorKind::Client,
            "no randomness for a secret",
            format!("{what}: {e}"),
        ))
    })?;
    Ok(hex::encode(bytes))
}

/// The bytes of secret `what` as Redis keeps it.
pub(super) fn decode(kept: &str, what: &str) -> RedisResult<Vec<u8>> {
    hex::decode(kept).map_err(|e| {
        RedisError::from((
            ErrorKind::Parse,
            "a secret is not hex",
            format!("{what}: {e}"),
        ))
    })
}
