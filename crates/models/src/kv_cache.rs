//! The KV cache: keys and values of past positions, per layer.
//!
//! A layer's storage is a ring of `capacity` positions: position `p` lives in slot
//! `p % capacity`. Global-attention layers get the whole context; sliding-window layers get
//! only the window plus one batch (the most a batch can look back on while it is written),
//! so their memory does not grow with the context.

/// Keys and values of one layer, `[capacity × kv_dim]` each, position-major.
pub struct LayerCache {
    /// Keys: `[capacity × kv_dim]`.
    pub k: Vec<f32>,
    /// Values: `[capacity × kv_dim]`.
    pub v: Vec<f32>,
    /// Width of one position's keys (n_kv_heads × head_dim).
    pub kv_dim: usize,
    /// Positions the ring holds.
    pub capacity: usize,
    /// Sliding attention window of this layer (`None` = attends to the whole context).
    pub window: Option<usize>,
}

impl LayerCache {
    /// A layer cache holding `capacity` positions.
    pub fn new(kv_dim: usize, capacity: usize, window: Option<usize>) -> LayerCache {
        LayerCache {
            k: vec![0.0; capacity * kv_dim],
            v: vec![0.0; capacity * kv_dim],
            kv_dim,
            capacity,
            window,
        }
    }

    /// Slot of position `pos`.
    #[inline]
    pub fn slot(&self, pos: usize) -> usize {
        pos % self.capacity
    }

    /// Keys of position `pos`.
    #[inline]
    pub fn key(&self, pos: usize) -> &[f32] {
        let s = self.slot(pos) * self.kv_dim;
        &self.k[s..s + self.kv_dim]
    }

    /// Values of position `pos`.
    #[inline]
    pub fn value(&self, pos: usize) -> &[f32] {
        let s = self.slot(pos) * self.kv_dim;
        &self.v[s..s + self.kv_dim]
    }

    /// Store keys/values (`[n × kv_dim]` each) of positions `pos0..pos0+n`.
    pub fn store(&mut self, pos0: usize, k: &[f32], v: &[f32]) {
        let d = self.kv_dim;
        for (i, (kr, vr)) in k.chunks_exact(d).zip(v.chunks_exact(d)).enumerate() {
            let s = self.slot(pos0 + i) * d;
            self.k[s..s + d].copy_from_slice(kr);
            self.v[s..s + d].copy_from_slice(vr);
        }
    }

    /// First position a query at `pos` attends to.
    #[inline]
    pub fn first_visible(&self, pos: usize) -> usize {
        match self.window {
            Some(w) => (pos + 1).saturating_sub(w),
            None => 0,
        }
    }

    fn bytes(&self) -> u64 {
        (self.k.len() + self.v.len()) as u64 * 4
    }
}

/// The KV cache of a whole model; sized once, never grown.
pub struct KvCache {
    /// Per-layer storage.
    pub layers: Vec<LayerCache>,
    /// Positions the cache can hold.
    pub n_ctx: usize,
    /// Positions filled so far.
    pub len: usize,
    /// Most positions one forward call may add (windowed layers are sized for it).
    pub max_batch: usize,
}

impl KvCache {
    /// A cache of `n_layer` full-context layers of width `kv_dim`, holding `n_ctx` positions.
    pub fn new(n_layer: usize, kv_dim: usize, n_ctx: usize) -> KvCache {
        let layers = (0..n_layer).map(|_| LayerCache::new(kv_dim, n_ctx, None)).collect();
        KvCache { layers, n_ctx, len: 0, max_batch: n_ctx.max(1) }
    }

    /// A cache whose layer `l` has sliding window `windows[l]` (`None` = global). Windowed
    /// layers hold `window + max_batch` positions (or `n_ctx` if smaller).
    pub fn with_windows(kv_dim: usize, n_ctx: usize, windows: &[Option<usize>], max_batch: usize) -> KvCache {
        let layers = windows
            .iter()
            .map(|w| {
                let cap = match w {
                    Some(w) => (w + max_batch).min(n_ctx),
                    None => n_ctx,
                };
                LayerCache::new(kv_dim, cap, *w)
            })
            .collect();
        KvCache { layers, n_ctx, len: 0, max_batch: max_batch.max(1) }
    }

    /// Bytes of storage.
    pub fn bytes(&self) -> u64 {
        self.layers.iter().map(LayerCache::bytes).sum()
    }

    /// Bytes taken by a full-context cache of these dimensions.
    pub fn bytes_for(n_layer: usize, kv_dim: usize, n_ctx: usize) -> u64 {
        (n_layer * 2 * kv_dim * n_ctx * std::mem::size_of::<f32>()) as u64
    }

    /// Forget everything (the storage is kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Keep only the first `n` positions (to rewind after a rejected continuation).
    /// Windowed layers can only rewind within what their ring still holds; rewinding further
    /// back than that clears the cache, so callers re-evaluate from the start.
    pub fn truncate(&mut self, n: usize) {
        if n >= self.len {
            return;
        }
        // A windowed layer still needs positions n-window..n after the rewind; its ring holds
        // only the last `capacity` positions written.
        let lost = self.layers.iter().any(|l| match l.window {
            Some(w) => self.len > l.capacity && n + l.capacity < self.len + w,
            None => false,
        });
        self.len = if lost { 0 } else { n };
    }
}
