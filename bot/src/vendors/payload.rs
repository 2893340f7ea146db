//! Reading a forge's webhook payload into the few fields an adapter declares, with an error
//! that says where the payload was wrong.

use serde::de::DeserializeOwned;

/// Why a delivery could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the {event} payload is not what {forge} sends: {source}")]
pub struct PayloadError {
    forge: &'static str,
    event: String,
    source: serde_path_to_error::Error<serde_json::Error>,
}

/// `body`, a delivery of `event` from `forge`, read as `T`.
pub fn parse<T: DeserializeOwned>(
    forge: &'static str,
    event: &str,
    body: &[u8],
) -> Result<T, PayloadError> {
    let mut json = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut json).map_err(|source| PayloadError {
        forge,
        event: event.to_owned(),
        source,
    })
}
