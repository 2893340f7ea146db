//! A worker's slots: how many of its jobs run at once, and which waiting job gets the next
//! free one. A job of high priority always goes before one of normal priority, whatever
//! came first; among jobs of one priority, the first to wait goes first.
//!
//! The broker gives a worker jobs of each priority (one consumer per queue, each with a
//! prefetch of its own, [`crate::amqp::Broker::consume`]), so a high-priority job reaches a
//! worker whose slots are all taken at once, and takes the slot the next job to end gives
//! back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use kiln_shared::priority::Priority;
use tokio::sync::oneshot;

/// A worker's slots.
#[derive(Debug, Clone)]
pub struct Slots {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    free: usize,
    /// Those waiting for a slot, per priority (`Priority::SERVED` order).
    high: VecDeque<oneshot::Sender<()>>,
    normal: VecDeque<oneshot::Sender<()>>,
}

impl State {
    fn line(&mut self, priority: Priority) -> &mut VecDeque<oneshot::Sender<()>> {
        match priority {
            Priority::High => &mut self.high,
            Priority::Normal => &mut self.normal,
        }
    }
}

/// A slot taken: given back (to the next waiting, the highest priority first) when dropped.
#[derive(Debug)]
pub struct Slot {
    state: Arc<Mutex<State>>,
}

impl Slots {
    pub fn new(count: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                free: count,
                high: VecDeque::new(),
                normal: VecDeque::new(),
            })),
        }
    }

    /// Waits for a slot for a job of `priority`. Dropping the wait gives up its place (and
    /// the slot, should it have been handed over just then).
    pub async fn take(&self, priority: Priority) -> Slot {
        let handed = {
            let mut state = self.state.lock().expect("slots");
            if state.free > 0 {
                state.free -= 1;
                return self.slot();
            }
            let (give, handed) = oneshot::channel();
            state.line(priority).push_back(give);
            handed
        };
        let mut waiting = Waiting {
            handed,
            state: self.state.clone(),
        };
        // Only `give_back` takes a sender out of its line, and sends on it: the state, kept
        // alive by this wait, drops none unsent.
        let handed = (&mut waiting.handed).await;
        debug_assert!(handed.is_ok());
        self.slot()
    }

    /// How many are free now.
    pub fn free(&self) -> usize {
        self.state.lock().expect("slots").free
    }

    fn slot(&self) -> Slot {
        Slot {
            state: self.state.clone(),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        give_back(&self.state);
    }
}

/// Hands a slot to the first of the highest priority still waiting, or frees it.
fn give_back(state: &Mutex<State>) {
    loop {
        let next = {
            let mut state = state.lock().expect("slots");
            let next = Priority::SERVED
                .into_iter()
                .find_map(|p| state.line(p).pop_front());
            match next {
                Some(next) => next,
                None => {
                    state.free += 1;
                    return;
                }
            }
        };
        // A wait given up in the meantime: the next one.
        if next.send(()).is_ok() {
            return;
        }
    }
}

/// A wait for a slot; given up when dropped before its slot was taken.
struct Waiting {
    handed: oneshot::Receiver<()>,
    state: Arc<Mutex<State>>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.handed.close();
        // Handed over just as the wait was given up: the slot goes to the next.
        if self.handed.try_recv().is_ok() {
            give_back(&self.state);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Starts a wait for a slot of `priority`, which records its name in `order` once it
    /// holds the slot, and holds it until told.
    fn waiter(
        slots: &Slots,
        priority: Priority,
        name: &'static str,
        order: &Arc<Mutex<Vec<&'static str>>>,
    ) -> (tokio::task::JoinHandle<()>, oneshot::Sender<()>) {
        let (release, released) = oneshot::channel::<()>();
        let (slots, order) = (slots.clone(), order.clone());
        let task = tokio::spawn(async move {
            let _slot = slots.take(priority).await;
            order.lock().expect("order").push(name);
            let _ = released.await;
        });
        (task, release)
    }

    /// How soon a spawned waiter is in line, or holds its slot.
    const SETTLED_WITHIN: Duration = Duration::from_secs(5);

    /// Waits until `count` waits are in line.
    async fn in_line(slots: &Slots, count: usize) {
        let what = format!("{count} waits in line");
        kiln_tests::wait_for(&what, SETTLED_WITHIN, || async {
            let state = slots.state.lock().expect("slots");
            (state.high.len() + state.normal.len() == count).then_some(())
        })
        .await;
    }

    /// Waits until `count` waiters have held a slot.
    async fn served(order: &Mutex<Vec<&'static str>>, count: usize) {
        let what = format!("{count} waiters served");
        kiln_tests::wait_for(&what, SETTLED_WITHIN, || async {
            (order.lock().expect("order").len() == count).then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn high_priority_takes_the_next_free_slot_before_normal_that_waited_longer() {
        let slots = Slots::new(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let (running, end_running) = waiter(&slots, Priority::Normal, "running", &order);
        served(&order, 1).await;
        let (normal, end_normal) = waiter(&slots, Priority::Normal, "normal", &order);
        in_line(&slots, 1).await;
        let (high, end_high) = waiter(&slots, Priority::High, "high", &order);
        in_line(&slots, 2).await;
        assert_eq!(*order.lock().expect("order"), ["running"]);

        end_running.send(()).expect("waiting");
        running.await.expect("waiter");
        served(&order, 2).await;
        assert_eq!(*order.lock().expect("order"), ["running", "high"]);

        end_high.send(()).expect("waiting");
        high.await.expect("waiter");
        end_normal.send(()).expect("waiting");
        normal.await.expect("waiter");
        assert_eq!(*order.lock().expect("order"), ["running", "high", "normal"]);
        assert_eq!(slots.free(), 1);
    }

    #[tokio::test]
    async fn a_wait_given_up_loses_no_slot() {
        let slots = Slots::new(2);
        let first = slots.take(Priority::Normal).await;
        let second = slots.take(Priority::Normal).await;
        let given_up = {
            let slots = slots.clone();
            tokio::spawn(async move {
                let _ = slots.take(Priority::High).await;
            })
        };
        in_line(&slots, 1).await;
        given_up.abort();
        let _ = given_up.await;
        drop(first);
        assert_eq!(slots.free(), 1, "the slot went to no one");
        drop(second);
        assert_eq!(slots.free(), 2);
        let a = slots.take(Priority::Normal).await;
        let b = slots.take(Priority::High).await;
        assert_eq!(slots.free(), 0);
        drop((a, b));
        assert_eq!(slots.free(), 2);
    }

    #[tokio::test]
    async fn waits_of_one_priority_are_served_in_order() {
        let slots = Slots::new(1);
        let order = Arc::new(Mutex::new(Vec::new()));
        let held = slots.take(Priority::Normal).await;
        let mut ends = Vec::new();
        for (n, name) in ["a", "b", "c"].into_iter().enumerate() {
            ends.push(waiter(&slots, Priority::High, name, &order));
            in_line(&slots, n + 1).await;
        }
        drop(held);
        for (n, (task, end)) in ends.into_iter().enumerate() {
            served(&order, n + 1).await;
            end.send(()).expect("waiting");
            task.await.expect("waiter");
        }
        assert_eq!(*order.lock().expect("order"), ["a", "b", "c"]);
    }

    #[test]
    fn a_slot_handed_over_just_as_its_wait_is_given_up_goes_back() {
        let slots = Slots::new(1);
        let held = futures_util::FutureExt::now_or_never(slots.take(Priority::Normal))
            .expect("a free slot");
        let mut waiting = Box::pin(slots.take(Priority::High));
        let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
        assert!(waiting.as_mut().poll(&mut cx).is_pending(), "no slot free");
        // Handed to the wait, which is given up before it looks again.
        drop(held);
        assert_eq!(slots.free(), 0, "handed over, not freed");
        drop(waiting);
        assert_eq!(slots.free(), 1, "the slot went to no one");
    }
}
