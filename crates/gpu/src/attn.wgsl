// Rotary embedding, the F16 KV cache and attention on the device (edgellm_gpu::Step::rope,
// kv_store, attention), following the CPU path (`edgellm_models::nn::Rope`,
// `edgellm_models::attention`):
//
// - rope: each pair of a head's rotated dimensions (adjacent pairs `(2i, 2i+1)` or halves
//   `(i, i + rope_dim/2)`) turned by the angle of its position, from the host's f64
//   `(cos, sin)` table (rounded to f32), in place.
// - kv_store: keys and values of the step's tokens rounded to f16 into the cache, head-major
//   `[n_head_kv × capacity × head_dim]` (two halves to a word), position p in slot
//   `p % capacity`, as `LayerCache::store`.
// - attention: one workgroup per (query head, token): the query rounded to f16, its scores
//   against the visible keys times `scale`, softmax (maximum and sum combined over the
//   workgroup, one reciprocal), probabilities rounded to f16 (as llama.cpp's and the CPU's
//   F16 cache path), then the probability-weighted values in key order.

struct P {
    // Tokens of the step.
    n: u32,
    // Position of the first token.
    pos0: u32,
    n_head: u32,
    n_head_kv: u32,
    head_dim: u32,
    rope_dim: u32,
    // Positions the cache holds (ring).
    capacity: u32,
    // Sliding window (0: none).
    window: u32,
    scale: f32,
    // Rope: 0 adjacent pairs, 1 halves. Heads per row for rope.
    mode: u32,
    heads: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> kc: array<u32>;
@group(0) @binding(3) var<storage, read_write> vc: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> p: P;

// Rotates `out` (`[n × heads × head_dim]`) in place; `a` is the table, `(cos, sin)` of
// position `q` and pair `i` at `2·(q·rope_dim/2 + i)`. One invocation per (row head, pair).
@compute @workgroup_size(64, 1, 1)
fn rope(@builtin(global_invocation_id) id: vec3<u32>) {
    let half = p.rope_dim / 2u;
    let i = id.x % half;
    let r = id.x / half;
    if (r >= p.n * p.heads) {
        return;
    }
    let pos = p.pos0 + r / p.heads;
    let c = a[2u * (pos * half + i)];
    let s = a[2u * (pos * half + i) + 1u];
    var i0 = r * p.head_dim + 2u * i;
    var i1 = i0 + 1u;
    if (p.mode == 1u) {
        i0 = r * p.head_dim + i;
        i1 = i0 + half;
    }
    let x0 = out[i0];
    let x1 = out[i1];
    out[i0] = x0 * c - x1 * s;
    out[i1] = x0 * s + x1 * c;
}

// Keys `a` and values `b` (`[n × n_head_kv·head_dim]`) into the cache as f16, one invocation
// per pair of values.
@compute @workgroup_size(64, 1, 1)
fn kv_store(@builtin(global_invocation_id) id: vec3<u32>) {
    let words = p.head_dim / 2u;
    let kvd = p.n_head_kv * p.head_dim;
    let w = id.x % words;
    let th = id.x / words;
    if (th >= p.n * p.n_head_kv) {
        return;
    }
    let t = th / p.n_head_kv;
    let h = th % p.n_head_kv;
    let slot = (p.pos0 + t) % p.capacity;
    let src = t * kvd + h * p.head_dim + 2u * w;
    let dst = (h * p.capacity + slot) * words + w;
    kc[dst] = pack2x16float(vec2<f32>(a[src], a[src + 1u]));
    vc[dst] = pack2x16float(vec2<f32>(b[src], b[src + 1u]));
}

const WG: u32 = 64u;
const MAX_HEAD: u32 = 256u;

var<workgroup> qs: array<f32, MAX_HEAD>;
var<workgroup> red_m: array<f32, WG>;
var<workgroup> red_s: array<f32, WG>;
var<workgroup> pb: array<f32, WG>;

fn f16_round(v: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(v, 0.0))).x;
}

// The scaled score of the workgroup's query against the key at position `j` of KV head `kvh`.
fn score(j: u32, kvh: u32) -> f32 {
    let words = p.head_dim / 2u;
    let base = (kvh * p.capacity + j % p.capacity) * words;
    var s = 0.0;
    for (var w = 0u; w < words; w++) {
        let k = unpack2x16float(kc[base + w]);
        s += qs[2u * w] * k.x + qs[2u * w + 1u] * k.y;
    }
    return s * p.scale;
}

// (m1, s1) and (m2, s2), partial maxima and sums of exp(x − m), combined.
fn combine(m1: f32, s1: f32, m2: f32, s2: f32) -> vec2<f32> {
    if (s2 == 0.0) {
        return vec2<f32>(m1, s1);
    }
    if (s1 == 0.0) {
        return vec2<f32>(m2, s2);
    }
    let m = max(m1, m2);
    return vec2<f32>(m, s1 * exp(m1 - m) + s2 * exp(m2 - m));
}

// The workgroup's maximum and sum of exponentials from each invocation's partial (m, s): a
// tree over shared memory (called by every invocation, in uniform control flow).
fn workgroup_max_sum(m: f32, s: f32, tid: u32) -> vec2<f32> {
    red_m[tid] = m;
    red_s[tid] = s;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (tid < stride) {
            let c = combine(red_m[tid], red_s[tid], red_m[tid + stride], red_s[tid + stride]);
            red_m[tid] = c.x;
            red_s[tid] = c.y;
        }
        workgroupBarrier();
    }
    return vec2<f32>(red_m[0], red_s[0]);
}

// `a` holds the queries `[n × n_head·head_dim]`; the output the same shape.
@compute @workgroup_size(64, 1, 1)
fn attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let h = wg.x;
    let t = wg.y;
    let hd = p.head_dim;
    let qd = p.n_head * hd;
    let kvh = h / (p.n_head / p.n_head_kv);
    let pos = p.pos0 + t;
    var lo = 0u;
    if (p.window != 0u && pos + 1u > p.window) {
        lo = pos + 1u - p.window;
    }
    for (var d = tid; d < hd; d += WG) {
        qs[d] = f16_round(a[t * qd + h * hd + d]);
    }
    workgroupBarrier();

    // The maximum and the sum of exponentials, per invocation over its keys, then combined.
    var m = 0.0;
    var s = 0.0;
    for (var j = lo + tid; j <= pos; j += WG) {
        let x = score(j, kvh);
        let c = combine(m, s, x, 1.0);
        m = c.x;
        s = c.y;
    }
    let stats = workgroup_max_sum(m, s, tid);
    let mx = stats.x;
    let inv = 1.0 / stats.y;

    // The values weighted by the probabilities, WG keys at a time: each invocation computes one
    // key's probability, then adds every key of the chunk to its dimensions.
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var c0 = lo; c0 <= pos; c0 += WG) {
        let j = c0 + tid;
        var pj = 0.0;
        if (j <= pos) {
            pj = f16_round(exp(score(j, kvh) - mx) * inv);
        }
        pb[tid] = pj;
        workgroupBarrier();
        let cnt = min(WG, pos + 1u - c0);
        for (var i = 0u; i < cnt; i++) {
            let base = (kvh * p.capacity + (c0 + i) % p.capacity) * (hd / 2u);
            for (var k = 0u; k < 4u; k++) {
                let d = tid + k * WG;
                if (d < hd) {
                    let v = unpack2x16float(vc[base + d / 2u]);
                    acc[k] += pb[i] * select(v.x, v.y, (d & 1u) == 1u);
                }
            }
        }
        workgroupBarrier();
    }
    for (var k = 0u; k < 4u; k++) {
        let d = tid + k * WG;
        if (d < hd) {
            out[t * qd + h * hd + d] = acc[k];
        }
    }
}

// A BERT layer's attention (`edgellm_models::bert`): every query attends to every token of
// its own sequence, in f32 (no cache, no rounding to half). `a` holds the queries, `kc` and
// `vc` the keys and values (f32 bits, `[n × n_head·head_dim]` like the queries), `b` each
// token's sequence as `[start, end)` (u32 bits). One workgroup per (head, token): scores
// times `scale`, softmax (maximum and sum combined over the workgroup, one reciprocal), then
// the probability-weighted values in key order.
var<workgroup> seq_bounds: vec2<u32>;

fn enc_score(j: u32, h: u32) -> f32 {
    let hd = p.head_dim;
    let base = j * p.n_head * hd + h * hd;
    var s = 0.0;
    for (var d = 0u; d < hd; d++) {
        s += qs[d] * bitcast<f32>(kc[base + d]);
    }
    return s * p.scale;
}

@compute @workgroup_size(64, 1, 1)
fn encoder_attention(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let h = wg.x;
    let t = wg.y;
    let hd = p.head_dim;
    let qd = p.n_head * hd;
    if (tid == 0u) {
        seq_bounds = vec2<u32>(bitcast<u32>(b[2u * t]), bitcast<u32>(b[2u * t + 1u]));
    }
    let bounds = workgroupUniformLoad(&seq_bounds);
    let lo = bounds.x;
    let hi = bounds.y;
    for (var d = tid; d < hd; d += WG) {
        qs[d] = a[t * qd + h * hd + d];
    }
    workgroupBarrier();
    var m = 0.0;
    var s = 0.0;
    for (var j = lo + tid; j < hi; j += WG) {
        let c = combine(m, s, enc_score(j, h), 1.0);
        m = c.x;
        s = c.y;
    }
    let stats = workgroup_max_sum(m, s, tid);
    let mx = stats.x;
    let inv = 1.0 / stats.y;
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var c0 = lo; c0 < hi; c0 += WG) {
        let j = c0 + tid;
        var pj = 0.0;
        if (j < hi) {
            pj = exp(enc_score(j, h) - mx) * inv;
        }
        pb[tid] = pj;
        workgroupBarrier();
        let cnt = min(WG, hi - c0);
        for (var i = 0u; i < cnt; i++) {
            let base = (c0 + i) * qd + h * hd;
            for (var k = 0u; k < 4u; k++) {
                let d = tid + k * WG;
                if (d < hd) {
                    acc[k] += pb[i] * bitcast<f32>(vc[base + d]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var k = 0u; k < 4u; k++) {
        let d = tid + k * WG;
        if (d < hd) {
            out[t * qd + h * hd + d] = acc[k];
        }
    }
}
