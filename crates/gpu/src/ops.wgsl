// Row and element-wise operations of the forward passes (edgellm_gpu::Gpu::rms_norm, swiglu,
// softmax, add; add_to for the residual stream in place), each the CPU function's formula in
// f32 (the CPU's norms sum in f64: norm_f64.wgsl where the adapter has it), compared against it within
// `tolerance::gpu::ROW_OPS`.

// Bindings and `Dims`: ops_bindings.wgsl (prepended at compile time).

// out[r] = a[r] * (1 / sqrt(mean(a[r]^2) + eps)) * b (the weight), one invocation per row.
@compute @workgroup_size(64, 1, 1)
fn rms_norm(@builtin(global_invocation_id) id: vec3<u32>) {
    let r = id.x;
    if (r >= dims.rows) {
        return;
    }
    let n = dims.len;
    var ss = 0.0;
    for (var i = 0u; i < n; i++) {
        let v = a[r * n + i];
        ss += v * v;
    }
    let scale = 1.0 / sqrt(ss / f32(n) + dims.eps);
    for (var i = 0u; i < n; i++) {
        out[r * n + i] = a[r * n + i] * scale * b[i];
    }
}

// out[r] = (a[r] - mean) / sqrt(var + eps) * gamma + beta, with b = [gamma; beta] (two rows
// of `len`), one invocation per row: two passes (mean, then the centred squares), in f32
// (`norm_f64.wgsl` has the CPU's f64 version).
@compute @workgroup_size(64, 1, 1)
fn layer_norm(@builtin(global_invocation_id) id: vec3<u32>) {
    let r = id.x;
    if (r >= dims.rows) {
        return;
    }
    let n = dims.len;
    var sum = 0.0;
    for (var i = 0u; i < n; i++) {
        sum += a[r * n + i];
    }
    let mean = sum / f32(n);
    var ss = 0.0;
    for (var i = 0u; i < n; i++) {
        let c = a[r * n + i] - mean;
        ss += c * c;
    }
    let inv = 1.0 / sqrt(ss / f32(n) + dims.eps);
    for (var i = 0u; i < n; i++) {
        out[r * n + i] = (a[r * n + i] - mean) * inv * b[i] + b[n + i];
    }
}

// out[r·len + i] += a[i]: a bias added to each of `rows` rows of `len`.
@compute @workgroup_size(64, 1, 1)
fn add_bias(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= dims.len * dims.rows) {
        return;
    }
    out[i] = out[i] + a[i % dims.len];
}

// Exact GELU, x·Φ(x) = ½x(1 + erf(x/√2)), erf from the CPU's rational fit
// (`edgellm_core::kernels::gelu_erf`: z = x/√2 clamped to ±3.9, odd numerator of degree 13
// over an even denominator of degree 10, fused multiply-adds), out = gelu(a).
@compute @workgroup_size(64, 1, 1)
fn gelu_erf(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= dims.len) {
        return;
    }
    let u = a[i];
    let z = clamp(u * 0.70710677, -3.9, 3.9);
    let z2 = z * z;
    var p = -9.288417e-9;
    p = fma(p, z2, 3.9829615e-6);
    p = fma(p, z2, 3.527003e-4);
    p = fma(p, z2, 3.7024417e-3);
    p = fma(p, z2, 5.3494453e-2);
    p = fma(p, z2, 1.8338302e-1);
    p = fma(p, z2, 1.1283791);
    var q = 5.6570898e-5;
    q = fma(q, z2, 1.2420642e-3);
    q = fma(q, z2, 1.5070359e-2);
    q = fma(q, z2, 1.1269196e-1);
    q = fma(q, z2, 4.9585238e-1);
    q = fma(q, z2, 1.0);
    let erf = clamp(z * p / q, -1.0, 1.0);
    out[i] = 0.5 * u * (1.0 + erf);
}

// out = silu(a) * b, silu(x) = x / (1 + e^-x) through e^-|x| (never overflows), as the CPU.
@compute @workgroup_size(64, 1, 1)
fn swiglu(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= dims.len) {
        return;
    }
    let x = a[i];
    let e = exp(-abs(x));
    let num = select(x * e, x, x >= 0.0);
    out[i] = num / (1.0 + e) * b[i];
}

// GELU (tanh form) through half precision, as the CPU's fast path (`gelu_tanh_table`): the
// input rounded to f16, GELU in f32, the result rounded to f16; 0 at or below -10, the
// identity at or above 10. The gate `out = gelu(a) * b`. `½v(1 + tanh z)` is evaluated as
// `v / (1 + e^(-2z))` (the same function): a device's `tanh` may round to -1 where the
// difference from -1 is all that matters (|z| ≤ 45 here, so `e^(-2z)` stays finite).
fn f16_round(v: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(v, 0.0))).x;
}

@compute @workgroup_size(64, 1, 1)
fn gelu_gate(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= dims.len) {
        return;
    }
    let x = a[i];
    var g = x;
    if (x <= -10.0) {
        g = 0.0;
    } else if (x < 10.0) {
        let v = f16_round(x);
        let z = 0.7978846 * (v + 0.044715 * v * v * v);
        g = f16_round(v / (1.0 + exp(-2.0 * z)));
    }
    out[i] = g * b[i];
}

// out = a + b.
@compute @workgroup_size(64, 1, 1)
fn add(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= dims.len) {
        return;
    }
    out[i] = a[i] + b[i];
}

// out += a (the residual stream, in place).
@compute @workgroup_size(64, 1, 1)
fn add_to(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= dims.len) {
        return;
    }
    out[i] = out[i] + a[i];
}

// Each row's softmax: exp(x - max) / Σ exp(x - max), one invocation per row.
@compute @workgroup_size(64, 1, 1)
fn softmax(@builtin(global_invocation_id) id: vec3<u32>) {
    let r = id.x;
    if (r >= dims.rows) {
        return;
    }
    let n = dims.len;
    var m = a[r * n];
    for (var i = 1u; i < n; i++) {
        m = max(m, a[r * n + i]);
    }
    var s = 0.0;
    for (var i = 0u; i < n; i++) {
        let e = exp(a[r * n + i] - m);
        out[r * n + i] = e;
        s += e;
    }
    let inv = 1.0 / s;
    for (var i = 0u; i < n; i++) {
        out[r * n + i] = out[r * n + i] * inv;
    }
}
