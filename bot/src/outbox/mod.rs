//! The outbox: builds accepted but not yet confirmed published, and the relay that publishes
//! them ([`relay`]).

pub mod relay;

use std::sync::Arc;

use tokio::sync::Notify;

/// Tells the relay that entries are due.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    due: Arc<Notify>,
}

impl Outbox {
    /// Wakes the relay: an entry is due now.
    pub fn poke(&self) {
        self.due.notify_one();
    }

    /// Waits for a poke.
    pub async fn due(&self) {
        self.due.notified().await;
    }
}
