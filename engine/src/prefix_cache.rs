//! Reuse of key/value state across requests that share a token prefix.
//!
//! Consecutive keystrokes in an editor send prompts that extend (or slightly
//! change the end of) the previous one. When a sequence ends, its cache is kept
//! here with the tokens it holds; a new request takes the entry with the longest
//! common prefix, rolls it back to that prefix and prefills only the rest.

use crate::kv_cache::KvCache;

/// Entries shorter than this many shared tokens are not worth a lookup hit.
const MIN_REUSE: usize = 4;

struct Entry {
    tokens: Vec<u32>,
    cache: KvCache,
    last_used: u64,
}

/// A bounded, least-recently-used store of finished sequences' caches.
pub(crate) struct PrefixCache {
    entries: Vec<Entry>,
    max_bytes: usize,
    clock: u64,
}

/// What a lookup found.
pub(crate) struct Reuse {
    /// The cache, already rolled back to `tokens` positions.
    pub cache: KvCache,
    /// Prompt tokens whose state the cache already holds.
    pub tokens: usize,
}

impl PrefixCache {
    /// An empty store holding at most `max_bytes` of cache storage.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            entries: Vec::new(),
            max_bytes,
            clock: 0,
        }
    }

    /// Bytes held by all entries.
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.cache.allocated_bytes()).sum()
    }

    /// Takes the entry sharing the longest prefix with `prompt`, leaving at least
    /// one prompt token to be fed (its logits start the generation).
    pub fn take(&mut self, prompt: &[u32]) -> Option<Reuse> {
        let limit = prompt.len().saturating_sub(1);
        let (best, shared) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt).min(limit)))
            .max_by_key(|&(i, n)| (n, self.entries[i].last_used))?;
        if shared < MIN_REUSE {
            return None;
        }
        let mut entry = self.entries.swap_remove(best);
        entry.cache.truncate(shared);
        Some(Reuse {
            cache: entry.cache,
            tokens: shared,
        })
    }

    /// Keeps `cache`, which holds the state of exactly `tokens`.
    pub fn insert(&mut self, tokens: Vec<u32>, cache: KvCache) {
        if self.max_bytes == 0 || tokens.len() < MIN_REUSE || cache.len() != tokens.len() {
            return;
        }
        if cache.allocated_bytes() > self.max_bytes {
            return;
        }
        // An entry whose tokens the new one extends is superseded by it.
        self.entries
            .retain(|e| common_prefix(&e.tokens, &tokens) < e.tokens.len());
        self.clock += 1;
        self.entries.push(Entry {
            tokens,
            cache,
            last_used: self.clock,
        });
        while self.bytes() > self.max_bytes {
            let Some(oldest) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            self.entries.swap_remove(oldest);
        }
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn filled(n: usize) -> KvCache {
        let mut c = KvCache::new(1, 1, 2, &Device::Cpu);
        c.reserve(n).expect("reserve");
        let k = Tensor::zeros((1, n, 2), candle_core::DType::F32, &Device::Cpu).expect("zeros");
        c.append(0, &k, &k).expect("append");
        c.advance(n);
        c
    }

    #[test]
    fn longest_prefix_wins_and_leaves_one_token_to_feed() {
        let mut pc = PrefixCache::new(1 << 20);
        pc.insert((0..10).collect(), filled(10));
        pc.insert(vec![0, 1, 2, 3, 4, 9, 9, 9], filled(8));
        let hit = pc.take(&(0..10).collect::<Vec<_>>()).expect("hit");
        assert_eq!(hit.tokens, 9, "one token must be left to produce logits");
        assert_eq!(hit.cache.len(), 9);
        let hit = pc.take(&[0, 1, 2, 3, 4, 9, 7, 7]).expect("second entry");
        assert_eq!(hit.tokens, 6);
        assert!(
            pc.take(&[0, 1, 2, 3, 4]).is_none(),
            "both entries were taken"
        );
    }

    #[test]
    fn short_or_unrelated_prefixes_miss() {
        let mut pc = PrefixCache::new(1 << 20);
        pc.insert((0..10).collect(), filled(10));
        assert!(pc.take(&[5, 6, 7, 8, 9]).is_none());
        assert!(pc.take(&[0, 1, 2, 7, 7, 7]).is_none());
    }

    #[test]
    fn eviction_keeps_within_the_byte_budget() {
        let one = filled(10).allocated_bytes();
        let mut pc = PrefixCache::new(2 * one);
        for i in 0..5u32 {
            pc.insert((0..10).map(|t| t + 100 * i).collect(), filled(10));
        }
        assert!(pc.bytes() <= 2 * one);
        assert!(
            pc.take(&(400..410).collect::<Vec<_>>()).is_some(),
            "newest kept"
        );
        assert!(
            pc.take(&(0..10).collect::<Vec<_>>()).is_none(),
            "oldest evicted"
        );
    }

    #[test]
    fn an_extended_entry_supersedes_its_prefix() {
        let mut pc = PrefixCache::new(1 << 20);
        pc.insert((0..6).collect(), filled(6));
        pc.insert((0..9).collect(), filled(9));
        assert_eq!(pc.entries.len(), 1);
    }
}
