//! Per-sequence key/value cache with in-place appends and copy-free rollback.

use candle_core::{DType, Device, Storage, Tensor};

use crate::error::{EngineError, Result};

/// Capacity is grown in steps of this many positions.
pub(crate) const GROWTH: usize = 256;

/// Keys and values of every layer for one sequence.
///
/// Storage is preallocated as `[kv_heads, capacity, head_dim]` per layer; appends
/// write in place and [`KvCache::truncate`] rolls back by moving the length only.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    num_layers: usize,
    len: usize,
    capacity: usize,
    kv_heads: usize,
    head_dim: usize,
    device: Device,
}

impl KvCache {
    /// An empty cache for a model with the given shape.
    pub fn new(num_layers: usize, kv_heads: usize, head_dim: usize, device: &Device) -> Self {
        Self {
            layers: Vec::new(),
            num_layers,
            len: 0,
            capacity: 0,
            kv_heads,
            head_dim,
            device: device.clone(),
        }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held by the cache's storage.
    pub fn allocated_bytes(&self) -> usize {
        self.num_layers * 2 * self.kv_heads * self.capacity * self.head_dim * 4
    }

    /// Makes room for `extra` more positions.
    pub fn reserve(&mut self, extra: usize) -> Result<()> {
        let needed = self.len + extra;
        if needed <= self.capacity {
            return Ok(());
        }
        let new_cap = needed.div_ceil(GROWTH) * GROWTH;
        self.layers = self.layers_holding(self.len, new_cap)?;
        self.capacity = new_cap;
        Ok(())
    }

    /// Fresh storage of `capacity` positions per layer holding a copy of the
    /// first `keep` cached positions.
    fn layers_holding(&self, keep: usize, capacity: usize) -> Result<Vec<(Tensor, Tensor)>> {
        let shape = (self.kv_heads, capacity, self.head_dim);
        let mut out = Vec::with_capacity(self.num_layers);
        for layer in 0..self.num_layers {
            // On the CPU the kept positions are copied once, straight into the new
            // storage, and only the rest is zeroed.
            let moved = (keep > 0)
                .then(|| {
                    self.with_cpu_layer(layer, |k, v, old| {
                        let regrow = |src: &[f32]| {
                            let hd = self.head_dim;
                            let mut dst = Vec::with_capacity(self.kv_heads * capacity * hd);
                            for h in 0..self.kv_heads {
                                dst.extend_from_slice(&src[h * old * hd..(h * old + keep) * hd]);
                                dst.resize((h + 1) * capacity * hd, 0.0);
                            }
                            dst
                        };
                        (regrow(k), regrow(v))
                    })
                })
                .flatten();
            let pair = match moved {
                Some((k, v)) => (
                    Tensor::from_vec(k, shape, &self.device)?,
                    Tensor::from_vec(v, shape, &self.device)?,
                ),
                None => {
                    let nk = Tensor::zeros(shape, DType::F32, &self.device)?;
                    let nv = Tensor::zeros(shape, DType::F32, &self.device)?;
                    if let Some((k, v)) = self.layers.get(layer).filter(|_| keep > 0) {
                        nk.slice_set(&k.narrow(1, 0, keep)?.contiguous()?, 1, 0)?;
                        nv.slice_set(&v.narrow(1, 0, keep)?.contiguous()?, 1, 0)?;
                    }
                    (nk, nv)
                }
            };
            out.push(pair);
        }
        Ok(out)
    }

    /// Writes `k` and `v` (`[kv_heads, t, head_dim]`) for `layer` after the cached
    /// positions and returns views of all keys and values including them.
    /// [`KvCache::advance`] must follow once every layer has been written.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = k.dim(1)?;
        let (ck, cv) = self.layers.get(layer).ok_or_else(|| {
            EngineError::InvalidRequest(format!("kv cache layer {layer} written before reserve"))
        })?;
        ck.slice_set(&k.contiguous()?, 1, self.len)?;
        cv.slice_set(&v.contiguous()?, 1, self.len)?;
        Ok((
            ck.narrow(1, 0, self.len + t)?,
            cv.narrow(1, 0, self.len + t)?,
        ))
    }

    /// Runs `f` on the raw CPU storage of `layer`'s keys and values (each laid out
    /// `[kv_heads, capacity, head_dim]`) with the capacity; `None` when the cache
    /// is not on the CPU or the layer is not allocated.
    pub fn with_cpu_layer<R>(
        &self,
        layer: usize,
        f: impl FnOnce(&[f32], &[f32], usize) -> R,
    ) -> Option<R> {
        let (k, v) = self.layers.get(layer)?;
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let (Storage::Cpu(kc), Storage::Cpu(vc)) = (&*ks, &*vs) else {
            return None;
        };
        let (ko, vo) = (kl.start_offset(), vl.start_offset());
        let n = self.kv_heads * self.capacity * self.head_dim;
        let keys = kc.as_slice::<f32>().ok()?.get(ko..ko + n)?;
        let values = vc.as_slice::<f32>().ok()?.get(vo..vo + n)?;
        Some(f(keys, values, self.capacity))
    }

    /// The whole storage of `layer`'s keys and values (each `[kv_heads, capacity,
    /// head_dim]`, on the cache's device) with the capacity; `None` when the layer is
    /// not allocated.
    pub fn layer_storage(&self, layer: usize) -> Option<(&Tensor, &Tensor, usize)> {
        let (k, v) = self.layers.get(layer)?;
        Some((k, v, self.capacity))
    }

    /// Commits `t` positions written by [`KvCache::append`] in every layer.
    pub fn advance(&mut self, t: usize) {
        self.len = (self.len + t).min(self.capacity);
    }

    /// A new cache holding a copy of the first `len` positions (all when `len` is
    /// larger), with room for at least `room` more; `self` is left as it is.
    pub fn copy_prefix(&self, len: usize, room: usize) -> Result<KvCache> {
        let len = len.min(self.len);
        let mut copy = KvCache::new(self.num_layers, self.kv_heads, self.head_dim, &self.device);
        if len > 0 {
            copy.capacity = (len + room).div_ceil(GROWTH) * GROWTH;
            copy.layers = self.layers_holding(len, copy.capacity)?;
            copy.len = len;
        }
        Ok(copy)
    }

    /// Forgets every position from `len` on (rollback after rejected speculation).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each layer's keys and values of `cache`, position by position, per head.
    fn contents(cache: &KvCache) -> Vec<Vec<f32>> {
        (0..cache.num_layers)
            .flat_map(|layer| {
                cache
                    .with_cpu_layer(layer, |k, v, cap| {
                        [k, v].map(|s| {
                            (0..cache.kv_heads)
                                .flat_map(|h| {
                                    s[h * cap * cache.head_dim..][..cache.len * cache.head_dim]
                                        .to_vec()
                                })
                                .collect::<Vec<f32>>()
                        })
                    })
                    .expect("on the CPU")
            })
            .collect()
    }

    #[test]
    fn copies_and_growth_keep_the_cached_positions() {
        let (layers, heads, hd, t) = (2, 3, 4, 5);
        let mut cache = KvCache::new(layers, heads, hd, &Device::Cpu);
        cache.reserve(t).expect("reserve");
        for layer in 0..layers {
            let data = |seed: usize| {
                let v: Vec<f32> = (0..heads * t * hd).map(|i| (i * 7 + seed) as f32).collect();
                Tensor::from_vec(v, (heads, t, hd), &Device::Cpu).expect("tensor")
            };
            cache
                .append(layer, &data(layer), &data(layer + 100))
                .expect("append");
        }
        cache.advance(t);
        let whole = contents(&cache);

        let copy = cache.copy_prefix(3, 300).expect("copy");
        assert_eq!(copy.len(), 3);
        assert!(copy.capacity >= 303);
        let per_head = |v: &Vec<f32>, n: usize| -> Vec<f32> {
            v.chunks(t * hd)
                .flat_map(|h| h[..n * hd].to_vec())
                .collect()
        };
        let want: Vec<Vec<f32>> = whole.iter().map(|v| per_head(v, 3)).collect();
        assert_eq!(contents(&copy), want);

        cache.reserve(GROWTH * 2).expect("grow");
        assert!(cache.capacity >= t + GROWTH * 2);
        assert_eq!(contents(&cache), whole);
    }
}
