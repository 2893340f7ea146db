//! GitHub: everything Kiln knows of it. Deliveries arrive at its door ([`door`]), verified
//! against the repository's secret ([`signature`]) and translated into a
//! [`ForgeEvent`](kiln_shared::trigger::ForgeEvent) ([`payload`]); statuses and comments go
//! out through its REST API ([`client`]), comments in [`crate::vendors::commonmark`].

pub mod client;
pub mod door;
pub mod payload;
pub mod sign_in;
pub mod signature;

pub use client::GitHub;
pub use payload::{repository_name, translate};
pub use signature::verify_signature;

/// How GitHub writes a reference to a pull request: `owner/name#7`.
pub const REQUEST_MARK: char = '#';
