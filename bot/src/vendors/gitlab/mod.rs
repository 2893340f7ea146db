//! GitLab: everything Kiln knows of it. Deliveries arrive at its door ([`door`]), their
//! token checked and their payload translated into a
//! [`ForgeEvent`](kiln_shared::trigger::ForgeEvent) ([`payload`]); statuses and notes go out
//! through its REST API ([`client`]), notes in [`crate::vendors::commonmark`].

pub mod client;
pub mod door;
pub mod payload;
pub mod sign_in;

pub use client::GitLab;
pub use payload::{delivery_id, project_name, translate, verify_token};

/// How GitLab writes a reference to a merge request: `group/name!7`.
pub const REQUEST_MARK: char = '!';
