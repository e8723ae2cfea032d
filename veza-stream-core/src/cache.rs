//! Cache policy for transcoded audio: the key of a transcode and an LRU-by-bytes eviction policy
//! with a budget. Pure bookkeeping: the server stores the bytes (on disk) and the index (in
//! process or in Redis) and asks this policy what to evict.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use veza_audio::{Bitrate, OutputFormat};

/// What identifies a transcode: the source's content hash and the output parameters. Two
/// requests for the same bytes in the same format share one cache entry, whatever the file ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Hash of the source's bytes, lowercase hex (the server uses SHA-256).
    pub content_hash: String,
    /// Output format.
    pub format: OutputFormat,
    /// Output bitrate (`None`: the format's default or lossless).
    pub bitrate: Option<Bitrate>,
    /// Output sample rate in Hz (`None`: the source's).
    pub sample_rate: Option<u32>,
    /// Output channels (`None`: the source's).
    pub channels: Option<u16>,
}

/// Why a key could not be made or an entry admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The content hash is not 16 to 128 lowercase hex digits. Remedy: pass the hex digest.
    #[error("content hash must be 16 to 128 lowercase hex digits")]
    BadHash,
    /// The entry is larger than the whole budget; it is served without caching.
    #[error("an entry of {size} bytes exceeds the cache budget of {budget} bytes")]
    TooLarge {
        /// Entry size.
        size: u64,
        /// Budget.
        budget: u64,
    },
}

impl CacheKey {
    /// A key, checking the hash's shape (it becomes part of a file name).
    ///
    /// # Errors
    /// [`CacheError::BadHash`] when `content_hash` is not lowercase hex of 16-128 digits.
    pub fn try_new(
        content_hash: &str,
        format: OutputFormat,
        bitrate: Option<Bitrate>,
        sample_rate: Option<u32>,
        channels: Option<u16>,
    ) -> Result<Self, CacheError> {
        let ok = (16..=128).contains(&content_hash.len())
            && content_hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(CacheError::BadHash);
        }
        Ok(Self {
            content_hash: content_hash.to_owned(),
            format,
            bitrate,
            sample_rate,
            channels,
        })
    }

    /// A stable, file-system-safe name: `HASH.FORMAT-BITRATE-RATE-CHANNELS.EXT`, with `x` for
    /// "as the source" (e.g. `ab12....mp3-128000-44100-2.mp3`).
    pub fn file_name(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ext = self.format.extension();
        write!(f, "{}.{ext}-", self.content_hash)?;
        match self.bitrate {
            Some(b) => write!(f, "{}", b.as_bps())?,
            None => f.write_str("x")?,
        }
        match self.sample_rate {
            Some(r) => write!(f, "-{r}")?,
            None => f.write_str("-x")?,
        }
        match self.channels {
            Some(c) => write!(f, "-{c}")?,
            None => f.write_str("-x")?,
        }
        write!(f, ".{ext}")
    }
}

#[derive(Debug, Clone)]
struct Entry {
    size: u64,
    tick: u64,
    pins: u32,
}

/// Counters of a policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups that found the key.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Entries evicted for room.
    pub evictions: u64,
}

/// Least-recently-used eviction by bytes. Every operation is O(log n). Entries being served or
/// written can be pinned so that they are not evicted under the reader's feet; a pinned entry
/// may keep the total above budget until it is unpinned.
#[derive(Debug, Clone)]
pub struct LruPolicy<K = CacheKey> {
    budget: u64,
    used: u64,
    tick: u64,
    entries: HashMap<K, Entry>,
    order: BTreeMap<u64, K>,
    stats: CacheStats,
}

impl<K: Clone + Eq + std::hash::Hash> LruPolicy<K> {
    /// An empty cache with a budget in bytes.
    pub fn new(budget: u64) -> Self {
        Self {
            budget,
            used: 0,
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            stats: CacheStats::default(),
        }
    }

    /// The budget in bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// Bytes accounted.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Hit, miss and eviction counts.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// True when `key` is held (no effect on recency or counters).
    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    fn bump(&mut self, key: &K) {
        if let Some(e) = self.entries.get_mut(key) {
            self.order.remove(&e.tick);
            self.tick += 1;
            e.tick = self.tick;
            self.order.insert(self.tick, key.clone());
        }
    }

    /// A lookup: on a hit the entry becomes the most recent. Counts a hit or a miss.
    pub fn get(&mut self, key: &K) -> bool {
        if self.entries.contains_key(key) {
            self.stats.hits += 1;
            self.bump(key);
            true
        } else {
            self.stats.misses += 1;
            false
        }
    }

    /// Adds (or resizes) an entry as the most recent, and returns the entries to evict (delete
    /// their bytes) to get back under budget, oldest first. Pinned entries are never returned.
    ///
    /// # Errors
    /// [`CacheError::TooLarge`] when `size` alone exceeds the budget (nothing changes).
    pub fn insert(&mut self, key: K, size: u64) -> Result<Vec<K>, CacheError> {
        if size > self.budget {
            return Err(CacheError::TooLarge {
                size,
                budget: self.budget,
            });
        }
        if let Some(old) = self.entries.get_mut(&key) {
            self.used = self.used - old.size + size;
            old.size = size;
            self.bump(&key);
        } else {
            self.tick += 1;
            self.entries.insert(
                key.clone(),
                Entry {
                    size,
                    tick: self.tick,
                    pins: 0,
                },
            );
            self.order.insert(self.tick, key.clone());
            self.used += size;
        }
        Ok(self.evict_for_budget(&key))
    }

    fn evict_for_budget(&mut self, keep: &K) -> Vec<K> {
        let mut evicted = Vec::new();
        let mut skipped = Vec::new();
        while self.used > self.budget {
            let Some((&tick, _)) = self.order.iter().next() else {
                break;
            };
            let key = self
                .order
                .remove(&tick)
                .expect("the first key of the order exists");
            let entry = self.entries.get(&key).expect("ordered keys are entries");
            if entry.pins > 0 || &key == keep {
                skipped.push((tick, key));
                continue;
            }
            let size = entry.size;
            self.entries.remove(&key);
            self.used -= size;
            self.stats.evictions += 1;
            evicted.push(key);
        }
        for (tick, key) in skipped {
            self.order.insert(tick, key);
        }
        evicted
    }

    /// Forgets an entry (its bytes were deleted or found missing). Returns whether it was held.
    pub fn remove(&mut self, key: &K) -> bool {
        match self.entries.remove(key) {
            Some(e) => {
                self.order.remove(&e.tick);
                self.used -= e.size;
                true
            }
            None => false,
        }
    }

    /// Pins an entry while it is read or written. Returns false when it is not held.
    pub fn pin(&mut self, key: &K) -> bool {
        match self.entries.get_mut(key) {
            Some(e) => {
                e.pins += 1;
                true
            }
            None => false,
        }
    }

    /// Releases a pin, and returns the entries to evict now that it may go.
    pub fn unpin(&mut self, key: &K) -> Vec<K> {
        if let Some(e) = self.entries.get_mut(key) {
            e.pins = e.pins.saturating_sub(1);
        }
        // Nothing to keep: pass a key that cannot block (the unpinned one may go if oldest).
        let mut evicted = Vec::new();
        if self.used > self.budget {
            if let Some(newest) = self.order.values().next_back().cloned() {
                evicted = self.evict_for_budget(&newest);
            }
        }
        evicted
    }

    /// Entries from least to most recently used.
    pub fn iter_oldest_first(&self) -> impl Iterator<Item = (&K, u64)> + '_ {
        self.order
            .values()
            .map(|k| (k, self.entries.get(k).map_or(0, |e| e.size)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn key_names_are_stable_and_safe() {
        let k = CacheKey::try_new(
            "0123456789abcdef",
            OutputFormat::Mp3,
            Some(Bitrate::kbps(128)),
            Some(44_100),
            None,
        )
        .unwrap();
        assert_eq!(k.file_name(), "0123456789abcdef.mp3-128000-44100-x.mp3");
        for bad in ["../../etc/passwd", "ABCDEF0123456789", "abc", ""] {
            assert_eq!(
                CacheKey::try_new(bad, OutputFormat::Mp3, None, None, None),
                Err(CacheError::BadHash)
            );
        }
    }

    #[test]
    fn least_recently_used_goes_first() {
        let mut c = LruPolicy::new(100);
        assert_eq!(c.insert("a", 40), Ok(vec![]));
        assert_eq!(c.insert("b", 40), Ok(vec![]));
        assert!(c.get(&"a")); // a is now newer than b
        assert_eq!(c.insert("c", 40), Ok(vec!["b"]));
        assert!(!c.get(&"b"));
        assert_eq!(c.used(), 80);
        assert_eq!(
            c.stats(),
            CacheStats {
                hits: 1,
                misses: 1,
                evictions: 1
            }
        );
        assert_eq!(
            c.insert("huge", 101),
            Err(CacheError::TooLarge {
                size: 101,
                budget: 100
            })
        );
    }

    #[test]
    fn pinned_entries_stay_until_unpinned() {
        let mut c = LruPolicy::new(100);
        c.insert("a", 60).unwrap();
        assert!(c.pin(&"a"));
        assert_eq!(c.insert("b", 60), Ok(vec![])); // a is pinned: over budget for now
        assert_eq!(c.used(), 120);
        assert_eq!(c.unpin(&"a"), vec!["a"]);
        assert_eq!(c.used(), 60);
    }

    proptest! {
        #[test]
        fn never_over_budget_without_pins(ops in proptest::collection::vec((0u8..20, 1u64..50, any::<bool>()), 1..300)) {
            let mut c = LruPolicy::new(200);
            let mut model: Vec<(u8, u64)> = Vec::new(); // oldest first
            for (k, size, is_get) in ops {
                if is_get {
                    let hit = c.get(&k);
                    let pos = model.iter().position(|(mk, _)| *mk == k);
                    prop_assert_eq!(hit, pos.is_some());
                    if let Some(p) = pos { let e = model.remove(p); model.push(e); }
                } else {
                    let evicted = c.insert(k, size).unwrap();
                    if let Some(p) = model.iter().position(|(mk, _)| *mk == k) { model.remove(p); }
                    model.push((k, size));
                    let mut expect = Vec::new();
                    while model.iter().map(|e| e.1).sum::<u64>() > 200 {
                        expect.push(model.remove(0).0);
                    }
                    prop_assert_eq!(evicted, expect);
                }
                prop_assert!(c.used() <= 200);
                prop_assert_eq!(c.used(), model.iter().map(|e| e.1).sum::<u64>());
            }
        }
    }
}
