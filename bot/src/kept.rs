//! What the bot keeps in memory to avoid reading or parsing again (parsed pipelines, plans,
//! files read at a commit), bounded by bytes: a count alone lets a few large entries (a
//! pipeline of hundreds of steps, a plan of a thousand tasks) take what they like. A
//! weight is the entry's size as read (its text), an estimate of what it takes in memory
//! once parsed; the policy (which entries go first) is `quick_cache`'s.

use std::hash::Hash;

use quick_cache::Weighter;
use quick_cache::sync::Cache;

/// Entries of `V` by `K`, at most about `bytes` of them by their weights; cheap to clone.
#[derive(Clone)]
pub struct Kept<K, V>(std::sync::Arc<Cache<K, Weighed<V>, ByWeight>>);

#[derive(Clone)]
struct Weighed<V> {
    value: V,
    bytes: u64,
}

#[derive(Clone)]
struct ByWeight;

impl<K, V> Weighter<K, Weighed<V>> for ByWeight {
    fn weight(&self, _: &K, entry: &Weighed<V>) -> u64 {
        entry.bytes
    }
}

impl<K: Eq + Hash + Clone, V: Clone> std::fmt::Debug for Kept<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept")
            .field("entries", &self.0.len())
            .field("bytes", &self.0.weight())
            .finish()
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Kept<K, V> {
    /// At most about `bytes`, entries of about `typical` bytes each.
    pub fn new(bytes: u64, typical: u64) -> Self {
        let entries = usize::try_from(bytes / typical.max(1)).unwrap_or(usize::MAX);
        Self(std::sync::Arc::new(Cache::with_weighter(
            entries.max(1),
            bytes,
            ByWeight,
        )))
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.0.get(key).map(|entry| entry.value)
    }

    /// Keeps `value`, which weighs `bytes`; one heavier than the cache can hold is not kept.
    pub fn insert(&self, key: K, value: V, bytes: usize) {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX).max(1);
        self.0.insert(key, Weighed { value, bytes });
    }

    /// Lets the entry of `key` go, if one is kept.
    pub fn remove(&self, key: &K) {
        self.0.remove(key);
    }

    /// What the kept entries weigh together.
    pub fn bytes(&self) -> u64 {
        self.0.weight()
    }

    /// How many entries are kept.
    pub fn entries(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_past_the_bound_in_bytes_are_evicted() {
        let kept: Kept<u32, String> = Kept::new(64 * 1024, 1024);
        for n in 0..1_000 {
            kept.insert(n, "x".repeat(1024), 1024);
            assert!(
                kept.bytes() <= 64 * 1024,
                "{} bytes after {n}",
                kept.bytes()
            );
        }
        assert!(kept.entries() <= 64, "{}", kept.entries());
        assert!(
            kept.entries() >= 16,
            "most of the bound is used: {}",
            kept.entries()
        );
        assert_eq!(kept.get(&999).as_deref(), Some("x".repeat(1024).as_str()));
    }

    #[test]
    fn a_few_heavy_entries_push_out_many_light_ones() {
        let kept: Kept<u32, ()> = Kept::new(1_000_000, 1_000);
        for n in 0..1_000 {
            kept.insert(n, (), 1_000);
        }
        let light = kept.entries();
        for n in 10_000..10_010 {
            kept.insert(n, (), 10_000);
        }
        assert!(kept.bytes() <= 1_000_000, "{}", kept.bytes());
        assert!(kept.entries() < light, "{} of {light}", kept.entries());
    }

    #[test]
    fn an_entry_let_go_weighs_nothing_more() {
        let kept: Kept<u32, ()> = Kept::new(10_000, 100);
        kept.insert(1, (), 100);
        kept.insert(2, (), 200);
        kept.remove(&1);
        kept.remove(&3);
        assert_eq!((kept.get(&1), kept.get(&2)), (None, Some(())));
        assert_eq!((kept.entries(), kept.bytes()), (1, 200));
    }

    #[test]
    fn an_entry_heavier_than_the_bound_is_not_kept() {
        let kept: Kept<u32, ()> = Kept::new(10_000, 100);
        kept.insert(1, (), 1_000_000);
        assert_eq!(kept.get(&1), None);
        assert_eq!(kept.bytes(), 0);
    }
}
