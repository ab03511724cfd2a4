//! The registry's cache of compiled components, keyed by the bytes' sha256.
//!
//! Compiling is the slow part of loading a plugin (milliseconds to seconds),
//! and a rollback or a config change reuses the same bytes, so compiled code
//! is kept. But every upload compiles, including versions never activated,
//! and compiled code is large (executable memory, several times the
//! component), so the cache is bounded: components of the active set are
//! always kept (they are in use anyway), and at most `INACTIVE_COMPONENTS_MAX`
//! others, the most recently used.

use std::collections::{HashMap, HashSet};

/// Compiled components kept beyond the active set, for rollbacks and re-uploads.
pub const INACTIVE_COMPONENTS_MAX: usize = 8;

/// The cache, generic over what it holds so it can be tested without compiling.
#[derive(Debug)]
pub struct CompiledCache<C> {
    /// Each entry with the tick of its last use (insert or hit).
    entries: HashMap<[u8; 32], (C, u64)>,
    /// Rises by one per use: an LRU order without a clock.
    tick: u64,
    inactive_max: usize,
}

impl<C: Clone> CompiledCache<C> {
    pub fn new(inactive_max: usize) -> Self {
        Self { entries: HashMap::new(), tick: 0, inactive_max }
    }

    pub fn get(&mut self, sha256: &[u8; 32]) -> Option<C> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(sha256).map(|(component, used)| {
            *used = tick;
            component.clone()
        })
    }

    /// Adds a component, then evicts the least recently used components not
    /// in `active` until at most `inactive_max` of them remain.
    pub fn insert(&mut self, sha256: [u8; 32], component: C, active: &HashSet<[u8; 32]>) {
        self.tick += 1;
        self.entries.insert(sha256, (component, self.tick));
        self.evict(active);
    }

    /// Evicts the least recently used components not in `active` beyond `inactive_max`.
    pub fn evict(&mut self, active: &HashSet<[u8; 32]>) {
        let mut inactive: Vec<([u8; 32], u64)> =
            self.entries.iter().filter(|(sha, _)| !active.contains(*sha)).map(|(sha, (_, used))| (*sha, *used)).collect();
        if inactive.len() <= self.inactive_max {
            return;
        }
        inactive.sort_unstable_by_key(|(_, used)| *used);
        let excess = inactive.len() - self.inactive_max;
        for (sha, _) in inactive.into_iter().take(excess) {
            self.entries.remove(&sha);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, sha256: &[u8; 32]) -> bool {
        self.entries.contains_key(sha256)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn the_cache_keeps_every_active_component_and_only_the_most_recently_used_others() {
        let mut cache = CompiledCache::new(2);
        let active: HashSet<[u8; 32]> = [sha(1), sha(2), sha(3)].into();
        for n in 1..=3 {
            cache.insert(sha(n), n, &active);
        }
        // 100 uploads never activated: the cache does not grow with them.
        for n in 10..110 {
            cache.insert(sha(n), n, &active);
            assert!(cache.len() <= active.len() + 2, "{} entries after upload {n}", cache.len());
        }
        assert!((1..=3).all(|n| cache.contains(&sha(n))), "active components are never evicted");
        assert!(cache.contains(&sha(108)) && cache.contains(&sha(109)) && !cache.contains(&sha(10)));
        // A hit refreshes an entry: 108 survives the next insert, 109 does not.
        assert_eq!(cache.get(&sha(108)), Some(108));
        cache.insert(sha(200), 200, &active);
        assert!(cache.contains(&sha(108)) && !cache.contains(&sha(109)));
        // Deactivating everything leaves only the two most recent.
        cache.evict(&HashSet::new());
        assert_eq!(cache.len(), 2);
        assert!(cache.contains(&sha(200)) && cache.contains(&sha(108)));
    }
}
