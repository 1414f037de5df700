// Matrix products of the 32-value quantized types against Q8_0 / Q8_1 activations and of the
// float types against f32 activations (edgellm_gpu::Gpu::matmul).
//
// One invocation per (row, token). Quantized: for every 32-value block, in block order, the
// exact integer sum of the weight codes times the activation codes, then
// `acc += (d_w * d_a) * sum`, and for the affine types `acc += m_w * s_a` — the scalar
// oracle's arithmetic (`edgellm_core::kernels`), so the result differs from it only where the
// driver fuses a multiply-add. Floats: `acc += w * x` value by value, as the oracle.
//
// Buffers, re-laid out once at upload (weights) or per call (activations), row-major:
//   wd, wm: the weight blocks' scales and minimums (f32; minimums of the affine types only);
//   wq: the codes, four to a little-endian u32, per block: Q8_0 eight words (the file's 32
//       signed bytes); Q4_0 / Q4_1 four words (the file's nibbles: value j is the low nibble of
//       byte j for j < 16, the high nibble of byte j - 16); Q5_0 / Q5_1 five words (the fifth
//       bits, bit j for value j, then the nibbles). Floats: the values (F32 one per word, F16
//       two per word);
//   ad, as_, aq: the activation blocks the same way (Q8_1's `s = d·Σq` in `as_`), or the f32
//       values in `aq`.

struct Dims {
    // Blocks per row (quantized) or values per row (floats).
    blocks: u32,
    m: u32,
    n: u32,
    out_stride: u32,
}

// The weight type: 0 Q8_0, 1 Q4_0, 2 Q4_1, 3 Q5_0, 4 Q5_1, 5 F32, 6 F16.
override KIND: u32 = 0u;

@group(0) @binding(0) var<storage, read> wd: array<f32>;
@group(0) @binding(1) var<storage, read> wm: array<f32>;
@group(0) @binding(2) var<storage, read> wq: array<u32>;
@group(0) @binding(3) var<storage, read> ad: array<f32>;
@group(0) @binding(4) var<storage, read> as_: array<f32>;
@group(0) @binding(5) var<storage, read> aq: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<uniform> dims: Dims;

// Dot product of four signed bytes with four signed bytes.
fn dot4(a: u32, b: u32) -> i32 {
    let x = bitcast<i32>(a);
    let y = bitcast<i32>(b);
    return extractBits(x, 0u, 8u) * extractBits(y, 0u, 8u)
        + extractBits(x, 8u, 8u) * extractBits(y, 8u, 8u)
        + extractBits(x, 16u, 8u) * extractBits(y, 16u, 8u)
        + extractBits(x, 24u, 8u) * extractBits(y, 24u, 8u);
}

// Four codes as signed bytes: the nibbles at bit `shift` of each byte of `w`, with fifth bits
// `h` (bit i for byte i), less `bias`.
fn codes4(w: u32, shift: u32, h: u32, bias: u32) -> u32 {
    var r = 0u;
    for (var i = 0u; i < 4u; i++) {
        let v = ((w >> (8u * i + shift)) & 0x0fu) | (((h >> i) & 1u) << 4u);
        r |= ((v + 256u - bias) & 0xffu) << (8u * i);
    }
    return r;
}

// The signed codes of values 4j..4j+4 (x) and 16+4j..16+4j+4 (y) of weight block `b`.
fn codes(b: u32, j: u32) -> vec2<u32> {
    switch KIND {
        case 0u: {
            return vec2<u32>(wq[8u * b + j], wq[8u * b + 4u + j]);
        }
        case 1u, 2u: {
            let w = wq[4u * b + j];
            let bias = select(0u, 8u, KIND == 1u);
            return vec2<u32>(codes4(w, 0u, 0u, bias), codes4(w, 4u, 0u, bias));
        }
        default: {
            let h = wq[5u * b];
            let w = wq[5u * b + 1u + j];
            let bias = select(0u, 16u, KIND == 3u);
            return vec2<u32>(codes4(w, 0u, h >> (4u * j), bias), codes4(w, 4u, h >> (16u + 4u * j), bias));
        }
    }
}

@compute @workgroup_size(64, 1, 1)
fn quantized(@builtin(global_invocation_id) id: vec3<u32>) {
    let r = id.x;
    let t = id.y;
    if (r >= dims.m || t >= dims.n) {
        return;
    }
    var acc = 0.0;
    for (var b = 0u; b < dims.blocks; b++) {
        let wb = r * dims.blocks + b;
        let ab = t * dims.blocks + b;
        var s = 0;
        for (var j = 0u; j < 4u; j++) {
            let c = codes(wb, j);
            s += dot4(c.x, aq[8u * ab + j]) + dot4(c.y, aq[8u * ab + 4u + j]);
        }
        acc += (wd[wb] * ad[ab]) * f32(s);
        if (KIND == 2u || KIND == 4u) {
            acc += wm[wb] * as_[ab];
        }
    }
    out[t * dims.out_stride + r] = acc;
}

@compute @workgroup_size(64, 1, 1)
fn float(@builtin(global_invocation_id) id: vec3<u32>) {
    let r = id.x;
    let t = id.y;
    if (r >= dims.m || t >= dims.n) {
        return;
    }
    let k = dims.blocks;
    var acc = 0.0;
    for (var i = 0u; i < k; i++) {
        var w: f32;
        if (KIND == 6u) {
            let e = r * k + i;
            let pair = unpack2x16float(wq[e / 2u]);
            w = select(pair.x, pair.y, (e & 1u) == 1u);
        } else {
            w = bitcast<f32>(wq[r * k + i]);
        }
        acc += w * bitcast<f32>(aq[t * k + i]);
    }
    out[t * dims.out_stride + r] = acc;
}
