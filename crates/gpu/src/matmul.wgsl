// Quantized matrix products against Q8_0 activations (edgellm_gpu::Gpu::matmul).
//
// One invocation per (row, token): for every 32-value block, in block order, the exact
// integer sum of the weight codes times the activation codes, then
// `acc += (d_w * d_a) * sum` — the scalar oracle's arithmetic (`edgellm_core::kernels`), so the
// result differs from it only where the driver fuses the multiply-add.
//
// Buffers, re-laid out once at upload (weights) or per call (activations):
//   wd: the weight blocks' scales (f32), row-major [m][k/32];
//   wq: their codes, four to a u32 little-endian: Q8_0 eight words per block (the file's 32
//       signed bytes), Q4_0 four words per block (the file's 16 bytes of nibbles: value j is
//       the low nibble of byte j for j < 16, the high nibble of byte j - 16, stored + 8);
//   ad, aq: the activation blocks (Q8_0) the same way, [n][k/32].

struct Dims {
    blocks: u32,
    m: u32,
    n: u32,
    out_stride: u32,
}

@group(0) @binding(0) var<storage, read> wd: array<f32>;
@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read> ad: array<f32>;
@group(0) @binding(3) var<storage, read> aq: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> dims: Dims;

// Dot product of four signed bytes with four signed bytes.
fn dot4(a: u32, b: u32) -> i32 {
    let x = bitcast<i32>(a);
    let y = bitcast<i32>(b);
    return extractBits(x, 0u, 8u) * extractBits(y, 0u, 8u)
        + extractBits(x, 8u, 8u) * extractBits(y, 8u, 8u)
        + extractBits(x, 16u, 8u) * extractBits(y, 16u, 8u)
        + extractBits(x, 24u, 8u) * extractBits(y, 24u, 8u);
}

// Four unsigned nibbles (at bit `shift` of each byte of `w`), less 8, as signed bytes.
fn nibbles(w: u32, shift: u32) -> u32 {
    let n = (w >> shift) & 0x0f0f0f0fu;
    // n - 8 per byte as a two's complement byte: n + 0xf8 modulo 256, byte by byte (a whole-word
    // add would carry into the next byte).
    var r = 0u;
    for (var i = 0u; i < 4u; i++) {
        let v = (((n >> (8u * i)) & 0xffu) + 0xf8u) & 0xffu;
        r |= v << (8u * i);
    }
    return r;
}

@compute @workgroup_size(64, 1, 1)
fn q8_0(@builtin(global_invocation_id) id: vec3<u32>) {
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
        for (var j = 0u; j < 8u; j++) {
            s += dot4(wq[8u * wb + j], aq[8u * ab + j]);
        }
        acc += (wd[wb] * ad[ab]) * f32(s);
    }
    out[t * dims.out_stride + r] = acc;
}

@compute @workgroup_size(64, 1, 1)
fn q4_0(@builtin(global_invocation_id) id: vec3<u32>) {
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
            let w = wq[4u * wb + j];
            // Bytes 4j..4j+4: values 4j..4j+4 (low nibbles) and 16+4j.. (high nibbles).
            s += dot4(nibbles(w, 0u), aq[8u * ab + j]);
            s += dot4(nibbles(w, 4u), aq[8u * ab + 4u + j]);
        }
        acc += (wd[wb] * ad[ab]) * f32(s);
    }
    out[t * dims.out_stride + r] = acc;
}
