// Matrix products of the 32-value quantized types against Q8_0 / Q8_1 activations, of the
// k-quants Q4_K and Q6_K against Q8_K activations and of the float types against f32
// activations (edgellm_gpu::Gpu::matmul).
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
//       Q4_K: per 256-value super-block 36 words: the eight 32-value groups' 6-bit scales and
//       minimums as bytes (decoded from the file's 12 bytes), then the file's 128 bytes of
//       nibbles (`wd` = d, `wm` = dmin). Q6_K: 52 words: the file's ql (128 bytes), qh (64) and
//       16 signed scales (`wd` = d);
//   ad, as_, aq: the activation blocks the same way (Q8_1's `s = d·Σq` in `as_`; Q8_K's 16
//       sums of 16 codes as i32 bits in `as_`), or the f32 values in `aq`.

struct Dims {
    // Blocks (or super-blocks) per row (quantized) or values per row (floats).
    blocks: u32,
    // Rows of this part of the weight (a matrix larger than one binding is uploaded in parts).
    m: u32,
    n: u32,
    // Output row length (all the weight's rows) and where this part's rows start in it.
    out_stride: u32,
    out_offset: u32,
    _p0: u32,
    _p1: u32,
    _p2: u32,
}

// The weight type: 0 Q8_0, 1 Q4_0, 2 Q4_1, 3 Q5_0, 4 Q5_1, 5 F32, 6 F16, 7 Q4_K, 8 Q6_K.
override KIND: u32 = 0u;

@group(0) @binding(0) var<storage, read> wd: array<f32>;
@group(0) @binding(1) var<storage, read> wm: array<f32>;
@group(0) @binding(2) var<storage, read> wq: array<u32>;
@group(0) @binding(3) var<storage, read> ad: array<f32>;
@group(0) @binding(4) var<storage, read> as_: array<f32>;
@group(0) @binding(5) var<storage, read> aq: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
@group(0) @binding(7) var<uniform> dims: Dims;

// Dot product of four signed bytes with four signed bytes: WGSL's packed 4×8-bit integer dot
// product, which naga emits as SPIR-V's `OpSDot` where the device has the integer dot
// product capability (one instruction on GPUs with int8 dot hardware) and as four
// sign-extended byte products elsewhere. Exact either way.
fn dot4(a: u32, b: u32) -> i32 {
    return dot4I8Packed(a, b);
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
    out[t * dims.out_stride + dims.out_offset + r] = acc;
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
    out[t * dims.out_stride + dims.out_offset + r] = acc;
}

// Byte `i` of the words at `base` (little-endian).
fn byte_at(base: u32, i: u32) -> u32 {
    return (wq[base + i / 4u] >> (8u * (i % 4u))) & 0xffu;
}

// Q4_K and Q6_K super-blocks: per 16- or 32-value group the exact integer sum of the codes
// (unsigned, 0..63) times the activation codes, times the group's integer scale, summed over
// the super-block (`s`); the groups' offsets times the activation's 16-value sums (`m`); then
// Q4_K `acc += (d * da) * s - (dmin * da) * m`, Q6_K `acc += (d * da) * (s - m)` — the oracle's
// canonical form (`edgellm_core::kernels`, `kblock`/`kdot`).
@compute @workgroup_size(64, 1, 1)
fn kquant(@builtin(global_invocation_id) id: vec3<u32>) {
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
        var m = 0;
        if (KIND == 7u) {
            let base = 36u * wb;
            for (var g = 0u; g < 8u; g++) {
                // Group g: nibbles (low for even g, high for odd) of qs bytes 32(g/2)..+32.
                var gs = 0;
                for (var i = 0u; i < 8u; i++) {
                    let w = wq[base + 4u + 8u * (g / 2u) + i];
                    gs += dot4((w >> (4u * (g % 2u))) & 0x0f0f0f0fu, aq[64u * ab + 8u * g + i]);
                }
                s += i32(byte_at(base, g)) * gs;
                let bs = bitcast<i32>(as_[16u * ab + 2u * g]) + bitcast<i32>(as_[16u * ab + 2u * g + 1u]);
                m += i32(byte_at(base, 8u + g)) * bs;
            }
            acc += (wd[wb] * ad[ab]) * f32(s) - (wm[wb] * ad[ab]) * f32(m);
        } else {
            let base = 52u * wb;
            for (var h = 0u; h < 2u; h++) {
                for (var q = 0u; q < 4u; q++) {
                    // Values 128h + 32q + l: ql byte 64h + 32(q % 2) + l (nibble q / 2), two
                    // bits 2q of qh byte 32h + l.
                    for (var half = 0u; half < 2u; half++) {
                        var gs = 0;
                        for (var i = 4u * half; i < 4u * half + 4u; i++) {
                            let ql = wq[base + 16u * h + 8u * (q % 2u) + i];
                            let qh = wq[base + 32u + 8u * h + i];
                            let u = ((ql >> (4u * (q / 2u))) & 0x0f0f0f0fu) | (((qh >> (2u * q)) & 0x03030303u) << 4u);
                            gs += dot4(u, aq[64u * ab + 32u * h + 8u * q + i]);
                        }
                        let g = 8u * h + 2u * q + half;
                        let sc = extractBits(bitcast<i32>(wq[base + 48u + g / 4u]), 8u * (g % 4u), 8u);
                        s += sc * gs;
                        m += 32 * sc * bitcast<i32>(as_[16u * ab + g]);
                    }
                }
            }
            acc += (wd[wb] * ad[ab]) * f32(s - m);
        }
    }
    out[t * dims.out_stride + dims.out_offset + r] = acc;
}
