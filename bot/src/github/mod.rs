//! GitHub: webhook verification and translation.
//!
//! Only this module knows GitHub's payloads. A delivery is verified against the repository's
//! secret, then translated into a [`ForgeEvent`]; nothing else happens at the door.

mod payload;
mod signature;

pub use payload::{repository_name, translate};
pub use signature::verify_signature;
