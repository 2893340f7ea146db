//! Whether the bot is alive (`/healthz`) and ready (`/readyz`, `/readyz/webhooks`).
//!
//! Alive: every piece of work the bot's loops take on (a message handled, the outbox
//! relayed) holds a [`Busy`] guard while it runs; every wait inside has a deadline, so work
//! that has held its guard for [`STALLED_AFTER`] is stuck, and so is the bot: a service
//! manager should restart it. Waiting for work (an idle queue, a broker that is away) is not
//! being stuck. Ready: RabbitMQ is connected and Redis answers; while either is not, the
//! answer names it. Ready for webhooks: either of them is, since a push is taken with one
//! of the two away.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one piece of work may run before the bot counts as stuck: past every deadline
/// inside it (a git fetch's 10 minutes is the longest).
pub const STALLED_AFTER: Duration = Duration::from_secs(15 * 60);

/// The work in progress, for the liveness check; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Watchdog {
    work: Arc<Mutex<BTreeMap<u64, (&'static str, Instant)>>>,
    next: Arc<AtomicU64>,
}

/// A piece of work in progress; dropping it says it ended.
#[derive(Debug)]
pub struct Busy {
    work: Arc<Mutex<BTreeMap<u64, (&'static str, Instant)>>>,
    id: u64,
}

impl Watchdog {
    /// Notes that `what` starts now, until the guard is dropped.
    pub fn busy(&self, what: &'static str) -> Busy {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, (what, Instant::now()));
        Busy {
            work: self.work.clone(),
            id,
        }
    }

    /// The work running for longer than `limit`, the longest first, if any.
    pub fn stalled(&self, limit: Duration) -> Option<(&'static str, Duration)> {
        self.lock()
            .values()
            .map(|(what, since)| (*what, since.elapsed()))
            .filter(|(_, running)| *running > limit)
            .max_by_key(|(_, running)| *running)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (&'static str, Instant)>> {
        self.work.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.work
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_counts_as_stalled_only_while_it_runs_past_the_limit() {
        let watchdog = Watchdog::default();
        let busy = watchdog.busy("planning");
        assert_eq!(watchdog.stalled(Duration::from_secs(60)), None);
        let (what, _) = watchdog.stalled(Duration::ZERO).expect("running past zero");
        assert_eq!(what, "planning");
        drop(busy);
        assert_eq!(watchdog.stalled(Duration::ZERO), None);
    }
}
