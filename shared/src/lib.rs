//! Kiln's domain, with no I/O: the pipeline spec and its planner, the build and task state
//! machine, the versioned wire messages, the RabbitMQ routing keys and the chat view models.
//!
//! Invariant: this crate knows nothing about RabbitMQ, Redis, Docker, HTTP or chat vendors.
//! It depends on none of tokio, lapin, redis, bollard, axum or serenity, so every rule it
//! holds can be tested as plain data.

pub mod build;
pub mod command;
pub mod commit_status;
pub mod grant;
pub mod ident;
pub mod keys;
pub mod lease;
pub mod log_line;
pub mod pattern;
pub mod permission;
pub mod plan;
pub mod platform;
pub mod presence;
pub mod priority;
pub mod promotion;
pub mod record;
pub mod routing;
pub mod spec;
pub mod subscription;
pub mod template;
pub mod trigger;
pub mod vars;
pub mod view;
pub mod walk;
pub mod wire;
