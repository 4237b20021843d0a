//! Reuse of key/value state across requests that share a token prefix.
//!
//! Consecutive keystrokes in an editor send prompts that extend (or slightly
//! change the end of) the previous one, and requests from one repository share
//! file headers. When a sequence ends, its cache is kept here with the tokens it
//! holds. A new request finds the entry with the longest common prefix, starts
//! from a copy of that prefix's state and prefills only the rest; the entry stays
//! for every later request (it is handed over without a copy only when the new
//! prompt extends all of it, since the new sequence will supersede it).

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
    /// A cache holding exactly `tokens` positions.
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

    /// The state of the longest prefix `prompt` shares with an entry, leaving at
    /// least one prompt token to be fed (its logits start the generation); a copy
    /// has room for the rest of the prompt and `new_tokens` more.
    pub fn lookup(&mut self, prompt: &[u32], new_tokens: usize) -> Option<Reuse> {
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
        if shared == self.entries[best].tokens.len() {
            let entry = self.entries.swap_remove(best);
            return Some(Reuse {
                cache: entry.cache,
                tokens: shared,
            });
        }
        self.clock += 1;
        let entry = &mut self.entries[best];
        entry.last_used = self.clock;
        // A copy that fails (out of memory) is a miss, not an error.
        let room = prompt.len() - shared + new_tokens;
        let cache = entry.cache.copy_prefix(shared, room).ok()?;
        Some(Reuse {
            cache,
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
        let hit = pc.lookup(&(0..10).collect::<Vec<_>>(), 0).expect("hit");
        assert_eq!(hit.tokens, 9, "one token must be left to produce logits");
        assert_eq!(hit.cache.len(), 9);
        let hit = pc
            .lookup(&[0, 1, 2, 3, 4, 9, 7, 7], 0)
            .expect("second entry");
        assert_eq!(hit.tokens, 6);
        assert_eq!(hit.cache.len(), 6);
    }

    #[test]
    fn entries_are_shared_and_handed_over_only_when_fully_used() {
        let mut pc = PrefixCache::new(1 << 20);
        pc.insert((0..10).collect(), filled(10));
        // Two requests that diverge inside the entry both reuse it.
        let a = pc.lookup(&[0, 1, 2, 3, 4, 5, 50, 51], 0).expect("first");
        let b = pc.lookup(&[0, 1, 2, 3, 4, 5, 6, 60], 0).expect("second");
        assert_eq!((a.tokens, b.tokens), (6, 7));
        assert_eq!(pc.entries.len(), 1, "still cached for others");
        // A prompt that extends the whole entry takes it over.
        let c = pc.lookup(&(0..12).collect::<Vec<_>>(), 0).expect("third");
        assert_eq!(c.tokens, 10);
        assert!(pc.entries.is_empty());
    }

    #[test]
    fn short_or_unrelated_prefixes_miss() {
        let mut pc = PrefixCache::new(1 << 20);
        pc.insert((0..10).collect(), filled(10));
        assert!(pc.lookup(&[5, 6, 7, 8, 9], 0).is_none());
        assert!(pc.lookup(&[0, 1, 2, 7, 7, 7], 0).is_none());
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
            pc.lookup(&(400..410).collect::<Vec<_>>(), 0).is_some(),
            "newest kept"
        );
        assert!(
            pc.lookup(&(0..10).collect::<Vec<_>>(), 0).is_none(),
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
