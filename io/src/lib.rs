//! kiln-io: the infrastructure Kiln's bot and worker share and its domain (`kiln-shared`)
//! must not have: a RabbitMQ connection that outlives broker outages ([`amqp`]) and the
//! signals that stop a process ([`signal`]).
//!
//! Invariant: nothing here knows what a build is; bot and worker still never depend on each
//! other.

pub mod amqp;
pub mod signal;
