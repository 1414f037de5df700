//! The KV cache: keys and values of past positions, per layer.

/// Keys and values of one layer, `[capacity × kv_dim]` each, position-major.
pub struct LayerCache {
    /// Keys: `[capacity × kv_dim]`.
    pub k: Vec<f32>,
    /// Values: `[capacity × kv_dim]`.
    pub v: Vec<f32>,
    /// Width of one position's keys (n_kv_heads × head_dim).
    pub kv_dim: usize,
}

/// The KV cache of a whole model; sized once, never grown.
pub struct KvCache {
    /// Per-layer storage.
    pub layers: Vec<LayerCache>,
    /// Positions the cache can hold.
    pub n_ctx: usize,
    /// Positions filled so far.
    pub len: usize,
}

impl KvCache {
    /// A cache of `n_layer` layers of width `kv_dim`, holding `n_ctx` positions.
    pub fn new(n_layer: usize, kv_dim: usize, n_ctx: usize) -> KvCache {
        let layers = (0..n_layer)
            .map(|_| LayerCache { k: vec![0.0; n_ctx * kv_dim], v: vec![0.0; n_ctx * kv_dim], kv_dim })
            .collect();
        KvCache { layers, n_ctx, len: 0 }
    }

    /// Bytes taken by a cache of these dimensions.
    pub fn bytes_for(n_layer: usize, kv_dim: usize, n_ctx: usize) -> u64 {
        (n_layer * 2 * kv_dim * n_ctx * std::mem::size_of::<f32>()) as u64
    }

    /// Forget everything (the storage is kept).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Keep only the first `n` positions (to rewind after a rejected continuation).
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }
}
