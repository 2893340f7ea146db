//! kiln-io: the infrastructure Kiln's bot and worker share and its domain (`kiln-shared`)
//! must not have: a RabbitMQ connection that outlives broker outages ([`amqp`]), the Redis
//! connection ([`redis`]), TLS for both ([`tls`]), the signals that stop a process ([`signal`]), logging
//! ([`logging`]), metrics' encoding ([`metrics`]), the wall clock ([`clock`]), registries
//! ([`registry`]), and git with a time limit and the bare mirrors of repositories ([`git`]).
//!
//! Invariant: nothing here knows what a build is; bot and worker still never depend on each
//! other.

pub mod amqp;
pub mod clock;
pub mod digest;
pub mod git;
pub mod logging;
pub mod metrics;
pub mod redis;
pub mod registry;
pub mod signal;
pub mod tls;
