// Activation quantization on the device (edgellm_gpu::Gpu::matmul_f32), as
// `edgellm_core::kernels::quantize_activations` does it for Q8_0 (and Q8_1, `AFFINE`):
// per 32 values, `amax = max |x|`, `d = amax / 127`, codes `round_ties_even(x * 127 / amax)`
// (0 for an all-zero block), the scale kept as its f16 value; Q8_1 also `s = d * Σq` as f16.
// Written straight into the buffers the products read (`matmul.wgsl`: ad, as_, aq).
//
// WGSL lets a division be off by 2.5 ulp and leaves the f16 rounding of `pack2x16float` to
// the implementation, so on some devices a code can differ from the CPU's by one at a
// rounding tie and a scale by one f16 ulp; tests/quant.rs bounds that.

struct Dims {
    // 32-value blocks in all (tokens × blocks per row).
    blocks: u32,
}

override AFFINE: bool = false;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> ad: array<f32>;
@group(0) @binding(2) var<storage, read_write> as_: array<f32>;
@group(0) @binding(3) var<storage, read_write> aq: array<u32>;
@group(0) @binding(4) var<uniform> dims: Dims;

fn f16_round(v: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(v, 0.0))).x;
}

@compute @workgroup_size(64, 1, 1)
fn q8(@builtin(global_invocation_id) id: vec3<u32>) {
    let b = id.x;
    if (b >= dims.blocks) {
        return;
    }
    var amax = 0.0;
    for (var i = 0u; i < 32u; i++) {
        amax = max(amax, abs(x[32u * b + i]));
    }
    let d = amax / 127.0;
    let inv = select(0.0, 127.0 / amax, amax != 0.0);
    var sum = 0;
    for (var w = 0u; w < 8u; w++) {
        var word = 0u;
        for (var i = 0u; i < 4u; i++) {
            let q = i32(round(x[32u * b + 4u * w + i] * inv));
            sum += q;
            word |= (bitcast<u32>(q) & 0xffu) << (8u * i);
        }
        aq[8u * b + w] = word;
    }
    ad[b] = f16_round(d);
    if (AFFINE) {
        as_[b] = f16_round(d * f32(sum));
    }
}

// Q8_K (the k-quants' activations), as `BlockQ8_K::quantize_block`: per 256 values the value
// of largest magnitude `max` (the first one on ties), `iscale = -127 / max`, codes
// `min(round_ties_even(iscale * x), 127)`, the scale `1 / iscale` kept in f32, and the 16
// sums of 16 codes (as i32 bits, what `matmul.wgsl` reads); an all-zero block is all zeros.
// `dims.blocks` counts 256-value super-blocks here.
@compute @workgroup_size(64, 1, 1)
fn q8k(@builtin(global_invocation_id) id: vec3<u32>) {
    let b = id.x;
    if (b >= dims.blocks) {
        return;
    }
    var amax = 0.0;
    var mx = 0.0;
    for (var i = 0u; i < 256u; i++) {
        let v = x[256u * b + i];
        if (abs(v) > amax) {
            amax = abs(v);
            mx = v;
        }
    }
    if (amax == 0.0) {
        ad[b] = 0.0;
        for (var g = 0u; g < 16u; g++) {
            as_[16u * b + g] = 0.0;
        }
        for (var w = 0u; w < 64u; w++) {
            aq[64u * b + w] = 0u;
        }
        return;
    }
    let iscale = -127.0 / mx;
    for (var g = 0u; g < 16u; g++) {
        var sum = 0;
        for (var w = 0u; w < 4u; w++) {
            var word = 0u;
            for (var i = 0u; i < 4u; i++) {
                let q = min(i32(round(iscale * x[256u * b + 16u * g + 4u * w + i])), 127);
                sum += q;
                word |= (bitcast<u32>(q) & 0xffu) << (8u * i);
            }
            aq[64u * b + 4u * g + w] = word;
        }
        as_[16u * b + g] = bitcast<f32>(sum);
    }
    ad[b] = 1.0 / iscale;
}
