//! The KV cache: keys and values of past positions, per layer, in F32, F16 or Q8_0.
//!
//! A layer's storage is a ring of `capacity` positions: position `p` lives in slot
//! `p % capacity`. Global-attention layers get the whole context; sliding-window layers get
//! only the window plus one batch (the most a batch can look back on while it is written),
//! so their memory does not grow with the context.
//!
//! Each position's row is `n_head_kv` heads of `head_dim` values, stored in the cache's
//! [`KvType`]: F16 is the default (as in llama.cpp: half the memory of F32 and, with keys and
//! queries rounded to half precision in the scores, the reference engine's numerics); Q8_0
//! halves it again (blocks of 32 never straddle two heads, so `head_dim` must be a multiple
//! of 32).

use edgellm_core::{kernels, DType};

use crate::ModelError;

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvType {
    /// 4 bytes per value.
    F32,
    /// IEEE half, 2 bytes per value (the default).
    #[default]
    F16,
    /// ggml Q8_0 blocks: 34 bytes per 32 values.
    Q8_0,
}

impl KvType {
    /// The GGML element type.
    pub fn dtype(self) -> DType {
        match self {
            KvType::F32 => DType::F32,
            KvType::F16 => DType::F16,
            KvType::Q8_0 => DType::Q8_0,
        }
    }

    /// Lower-case name, as accepted by [`KvType::parse`].
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
        }
    }

    /// Parse `f32`, `f16` or `q8_0` (any case).
    pub fn parse(s: &str) -> Option<KvType> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Some(KvType::F32),
            "f16" => Some(KvType::F16),
            "q8_0" => Some(KvType::Q8_0),
            _ => None,
        }
    }

    /// Bytes of `n` values (`n` a multiple of 32 for Q8_0).
    pub fn bytes(self, n: usize) -> usize {
        match self {
            KvType::F32 => 4 * n,
            KvType::F16 => 2 * n,
            KvType::Q8_0 => n / 32 * 34,
        }
    }

    /// Check that heads of `head_dim` values can be stored in this type.
    pub fn check_head_dim(self, head_dim: usize) -> Result<(), ModelError> {
        if self == KvType::Q8_0 && !head_dim.is_multiple_of(32) {
            return Err(ModelError::BadConfig(format!(
                "a Q8_0 KV cache needs a head dimension that is a multiple of 32, this model's is \
                 {head_dim}; use an F16 or F32 cache"
            )));
        }
        Ok(())
    }
}

impl std::fmt::Display for KvType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Shape of one position's keys (or values): `n_head_kv` heads of `head_dim`, in `kv_type`.
#[derive(Clone, Copy, Debug)]
pub struct KvShape {
    /// Element type.
    pub kv_type: KvType,
    /// Width of one head.
    pub head_dim: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
}

impl KvShape {
    /// Values per position (`n_head_kv × head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// Bytes of one head.
    pub fn head_bytes(&self) -> usize {
        self.kv_type.bytes(self.head_dim)
    }

    /// Bytes of one position's keys (or values).
    pub fn row_bytes(&self) -> usize {
        self.n_head_kv * self.head_bytes()
    }
}

/// Keys and values of one layer, `[n_head_kv × capacity × head_bytes]` each: head-major, so
/// that one head's keys of consecutive slots are contiguous rows (what the matrix-product
/// kernels take).
pub struct LayerCache {
    k: Vec<u8>,
    v: Vec<u8>,
    /// Element type and head layout.
    pub shape: KvShape,
    /// Positions the ring holds.
    pub capacity: usize,
    /// Sliding attention window of this layer (`None` = attends to the whole context).
    pub window: Option<usize>,
}

impl LayerCache {
    /// A layer cache holding `capacity` positions.
    pub fn new(shape: KvShape, capacity: usize, window: Option<usize>) -> LayerCache {
        let n = capacity * shape.row_bytes();
        LayerCache { k: vec![0; n], v: vec![0; n], shape, capacity, window }
    }

    /// Slot of position `pos`.
    #[inline]
    pub fn slot(&self, pos: usize) -> usize {
        pos % self.capacity
    }

    #[inline]
    fn offset(&self, slot: usize, h: usize) -> usize {
        (h * self.capacity + slot) * self.shape.head_bytes()
    }

    /// Keys of head `h` at position `pos`, in the cache's type.
    #[inline]
    pub fn key(&self, pos: usize, h: usize) -> &[u8] {
        let s = self.offset(self.slot(pos), h);
        &self.k[s..s + self.shape.head_bytes()]
    }

    /// Values of head `h` at position `pos`, in the cache's type.
    #[inline]
    pub fn value(&self, pos: usize, h: usize) -> &[u8] {
        let s = self.offset(self.slot(pos), h);
        &self.v[s..s + self.shape.head_bytes()]
    }

    /// Keys of head `h` in slots `slots` (contiguous rows of `head_bytes`).
    #[inline]
    pub fn keys(&self, h: usize, slots: std::ops::Range<usize>) -> &[u8] {
        &self.k[self.offset(slots.start, h)..self.offset(slots.end, h)]
    }

    /// Values of head `h` in slots `slots` (contiguous rows of `head_bytes`).
    #[inline]
    pub fn values(&self, h: usize, slots: std::ops::Range<usize>) -> &[u8] {
        &self.v[self.offset(slots.start, h)..self.offset(slots.end, h)]
    }

    /// Store keys/values (`[n × kv_dim]` each, f32) of positions `pos0..pos0+n`, converting
    /// them to the cache's type (Q8_0 with the activation quantizer of the kernels).
    pub fn store(&mut self, pos0: usize, k: &[f32], v: &[f32]) {
        let (d, hd, hb) = (self.shape.kv_dim(), self.shape.head_dim, self.shape.head_bytes());
        let t = self.shape.kv_type;
        for (i, (kr, vr)) in k.chunks_exact(d).zip(v.chunks_exact(d)).enumerate() {
            let slot = self.slot(pos0 + i);
            for h in 0..self.shape.n_head_kv {
                let s = self.offset(slot, h);
                encode(t, &kr[h * hd..(h + 1) * hd], &mut self.k[s..s + hb]);
                encode(t, &vr[h * hd..(h + 1) * hd], &mut self.v[s..s + hb]);
            }
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
        (self.k.len() + self.v.len()) as u64
    }
}

/// f32 values into the cache type's bytes.
fn encode(t: KvType, x: &[f32], out: &mut [u8]) {
    match t {
        KvType::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(x) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        KvType::F16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(x) {
                o.copy_from_slice(&half::f16::from_f32(*v).to_le_bytes());
            }
        }
        // Q8_0 weights take Q8_0 activations: the same quantizer llama.cpp uses for its cache.
        KvType::Q8_0 => kernels::quantize_activations(DType::Q8_0, x, out),
    }
}

/// The cache type's bytes (whole heads) back to f32.
#[inline]
pub fn decode(t: KvType, b: &[u8], out: &mut [f32]) {
    match t {
        KvType::F32 => {
            for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        KvType::F16 => kernels::f16_to_f32(b, out),
        KvType::Q8_0 => {
            for (o, blk) in out.chunks_exact_mut(32).zip(b.chunks_exact(34)) {
                let d = half::f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                for (o, &q) in o.iter_mut().zip(&blk[2..]) {
                    *o = d * (q as i8) as f32;
                }
            }
        }
    }
}

/// Activation buffers of one forward call, kept with the cache so that decoding does not
/// allocate: they grow to the largest batch seen and are reused after that.
#[derive(Default)]
pub struct Buffers {
    /// `[n × d]` residual stream.
    pub x: Vec<f32>,
    /// `[n × d]` normed input of a sub-layer.
    pub h: Vec<f32>,
    /// `[n × q_dim]` queries.
    pub q: Vec<f32>,
    /// `[n × kv_dim]` keys of the batch.
    pub k: Vec<f32>,
    /// `[n × kv_dim]` values of the batch.
    pub v: Vec<f32>,
    /// `[n × q_dim]` attention output.
    pub att: Vec<f32>,
    /// `[n × d]` sub-layer output.
    pub o: Vec<f32>,
    /// `[n × ff]` gate projection (then the gated activation).
    pub g: Vec<f32>,
    /// `[n × ff]` up projection.
    pub u: Vec<f32>,
}

/// Resize `v` to `n` values (reusing its capacity; contents are overwritten by the caller).
pub fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    v.resize(n, 0.0);
    &mut v[..n]
}

/// The [`Buffers`] of one forward call, sized for `n` tokens (field meanings as there).
#[allow(missing_docs)]
pub struct BufferSlices<'a> {
    pub x: &'a mut [f32],
    pub h: &'a mut [f32],
    pub q: &'a mut [f32],
    pub k: &'a mut [f32],
    pub v: &'a mut [f32],
    pub att: &'a mut [f32],
    pub o: &'a mut [f32],
    pub g: &'a mut [f32],
    pub u: &'a mut [f32],
}

impl Buffers {
    /// Every buffer sized for `n` tokens of a decoder with residual width `d`, query width
    /// `qd`, key/value width `kvd` and feed-forward width `ff`.
    pub fn sized(&mut self, n: usize, d: usize, qd: usize, kvd: usize, ff: usize) -> BufferSlices<'_> {
        let Buffers { x, h, q, k, v, att, o, g, u } = self;
        BufferSlices {
            x: sized(x, n * d),
            h: sized(h, n * d),
            q: sized(q, n * qd),
            k: sized(k, n * kvd),
            v: sized(v, n * kvd),
            att: sized(att, n * qd),
            o: sized(o, n * d),
            g: sized(g, n * ff),
            u: sized(u, n * ff),
        }
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
    /// Activation buffers of the forward pass (not part of the cache's contents).
    pub buffers: Buffers,
    /// Keys, values and buffers a backend keeps outside host memory (a GPU model's device
    /// buffers; `layers` is then empty). Only the model that made the cache reads it.
    pub device: Option<Box<dyn std::any::Any + Send + Sync>>,
    /// The device layers' rings that do not hold the whole context, as `(capacity, window)`
    /// (what [`KvCache::truncate`] checks for host layers in `layers`).
    pub device_rings: Vec<(usize, usize)>,
}

impl KvCache {
    /// A cache of `n_layer` full-context layers, holding `n_ctx` positions.
    pub fn new(shape: KvShape, n_layer: usize, n_ctx: usize) -> KvCache {
        let layers = (0..n_layer).map(|_| LayerCache::new(shape, n_ctx, None)).collect();
        KvCache {
            layers,
            n_ctx,
            len: 0,
            max_batch: n_ctx.max(1),
            buffers: Buffers::default(),
            device: None,
            device_rings: Vec::new(),
        }
    }

    /// A cache whose layer `l` has sliding window `windows[l]` (`None` = global). Windowed
    /// layers hold `window + max_batch` positions (or `n_ctx` if smaller).
    pub fn with_windows(
        shape: KvShape,
        n_ctx: usize,
        windows: &[Option<usize>],
        max_batch: usize,
    ) -> KvCache {
        let layers = windows
            .iter()
            .map(|w| LayerCache::new(shape, Self::capacity(*w, n_ctx, max_batch), *w))
            .collect();
        KvCache {
            layers,
            n_ctx,
            len: 0,
            max_batch: max_batch.max(1),
            buffers: Buffers::default(),
            device: None,
            device_rings: Vec::new(),
        }
    }

    /// A cache of `n_ctx` positions whose storage a backend keeps itself (`device`), with no
    /// host layers; `rings` lists its sliding-window layers' `(capacity, window)`.
    pub fn on_device(
        n_ctx: usize,
        max_batch: usize,
        rings: Vec<(usize, usize)>,
        device: Box<dyn std::any::Any + Send + Sync>,
    ) -> KvCache {
        KvCache {
            layers: Vec::new(),
            n_ctx,
            len: 0,
            max_batch: max_batch.max(1),
            buffers: Buffers::default(),
            device: Some(device),
            device_rings: rings,
        }
    }

    /// Positions a layer with window `w` holds in a cache of `n_ctx` fed `max_batch` at a time.
    pub fn capacity(w: Option<usize>, n_ctx: usize, max_batch: usize) -> usize {
        match w {
            Some(w) => (w + max_batch.max(1)).min(n_ctx),
            None => n_ctx,
        }
    }

    /// Bytes of key/value storage.
    pub fn bytes(&self) -> u64 {
        self.layers.iter().map(LayerCache::bytes).sum()
    }

    /// Bytes of key/value storage of layers with these windows (what [`KvCache::with_windows`]
    /// allocates), without allocating it.
    /// Saturates at `u64::MAX` instead of overflowing (a memory estimate from hostile metadata
    /// must be refused, not wrap to a small number).
    pub fn bytes_for(shape: KvShape, n_ctx: usize, windows: &[Option<usize>], max_batch: usize) -> u64 {
        // One position's keys or values, in u64: n_head_kv × bytes(head_dim).
        let head = match shape.kv_type {
            KvType::F32 => (shape.head_dim as u64).saturating_mul(4),
            KvType::F16 => (shape.head_dim as u64).saturating_mul(2),
            KvType::Q8_0 => (shape.head_dim as u64 / 32).saturating_mul(34),
        };
        let row = (shape.n_head_kv as u64).saturating_mul(head);
        windows.iter().fold(0u64, |sum, w| {
            let cap = match w {
                Some(w) => w.saturating_add(max_batch.max(1)).min(n_ctx),
                None => n_ctx,
            };
            sum.saturating_add((cap as u64).saturating_mul(row).saturating_mul(2))
        })
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
        let rings = self.layers.iter().filter_map(|l| l.window.map(|w| (l.capacity, w)));
        let lost = rings
            .chain(self.device_rings.iter().copied())
            .any(|(capacity, w)| self.len > capacity && n + capacity < self.len + w);
        self.len = if lost { 0 } else { n };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip_within_their_precision() {
        let x: Vec<f32> = (0..64).map(|i| ((i * 37 % 64) as f32 - 31.5) * 0.173).collect();
        for (t, tol) in [(KvType::F32, 0.0), (KvType::F16, 0.0025), (KvType::Q8_0, 0.05)] {
            let shape = KvShape { kv_type: t, head_dim: 32, n_head_kv: 2 };
            let mut lc = LayerCache::new(shape, 3, None);
            lc.store(4, &x, &x);
            let mut back = vec![0.0f32; 32];
            for h in 0..2 {
                decode(t, lc.key(4, h), &mut back);
                for (a, b) in back.iter().zip(&x[h * 32..(h + 1) * 32]) {
                    assert!((a - b).abs() <= tol * 5.5, "{t}: {a} vs {b}");
                }
                decode(t, lc.value(4, h), &mut back);
                assert_eq!(back[0], {
                    let mut one = vec![0.0f32; 32];
                    decode(t, lc.key(4, h), &mut one);
                    one[0]
                });
            }
            assert_eq!(lc.bytes(), 2 * 3 * shape.row_bytes() as u64);
        }
        assert!(KvType::Q8_0.check_head_dim(48).is_err());
        assert!(KvType::Q8_0.check_head_dim(64).is_ok());
        assert_eq!(KvType::parse("Q8_0"), Some(KvType::Q8_0));
        assert_eq!(KvType::parse("q4"), None);
    }
}
