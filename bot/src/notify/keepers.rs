//! The builds whose cards are being kept, each with the way to poke its keeper: the state a
//! card keeper ([`super::cards`]) shares with whoever pokes it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_shared::build::BuildId;

/// The live keepers, one per build at most.
#[derive(Debug, Clone, Default)]
pub struct Keepers {
    live: Arc<Mutex<HashMap<BuildId, Arc<Keeper>>>>,
}

/// One build's keeper, as its pokers see it.
#[derive(Debug, Default)]
pub struct Keeper {
    poke: tokio::sync::Notify,
    /// Set by every poke, cleared as a pass starts: a keeper leaves only when it is clear.
    dirty: AtomicBool,
}

impl Keeper {
    /// A pass over the build begins: pokes until now are answered by it.
    pub fn pass_begins(&self) {
        self.dirty.store(false, Ordering::SeqCst);
    }

    /// Waits for a poke, at most `limit`; true if one came.
    pub async fn poked_within(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.poke.notified())
            .await
            .is_ok()
    }
}

impl Keepers {
    /// Pokes build `id`'s keeper; if it has none, registers one and returns it, for the
    /// caller to start.
    pub fn poke(&self, id: BuildId) -> Option<Arc<Keeper>> {
        let mut live = self.lock();
        if let Some(keeper) = live.get(&id) {
            keeper.dirty.store(true, Ordering::SeqCst);
            keeper.poke.notify_one();
            return None;
        }
        let keeper = Arc::new(Keeper::default());
        live.insert(id, keeper.clone());
        Some(keeper)
    }

    /// Whether `keeper` may leave: no poke came since its pass began. Decided under the lock
    /// that [`Self::poke`] takes, so a poke either finds the keeper going on or registers a
    /// new one.
    pub fn leave(&self, id: BuildId, keeper: &Keeper) -> bool {
        let mut live = self.lock();
        let leave = !keeper.dirty.load(Ordering::SeqCst);
        if leave {
            live.remove(&id);
        }
        leave
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BuildId, Arc<Keeper>>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }
}
