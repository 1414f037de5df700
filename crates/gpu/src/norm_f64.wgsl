// RMSNorm (and BERT's LayerNorm) with the sums, the mean and the reciprocal square root in
// f64, exactly as the CPU computes them (`edgellm_models::nn::rms_norm`, as ggml, and
// `edgellm_models::bert`'s LayerNorm): compiled only where the
// adapter has 64-bit floats in shaders (wgpu's SHADER_F64: desktop GPUs, lavapipe), else
// `ops.wgsl`'s f32 version runs. An 8-bit activation quantizer downstream turns a scale a few
// ulps off into codes flipped at rounding ties, which a model with large outliers (Gemma 3)
// amplifies into logits tenths apart. Bindings: ops_bindings.wgsl (prepended).

@compute @workgroup_size(64, 1, 1)
fn rms_norm(@builtin(global_invocation_id) id: vec3<u32>) {
    let r = id.x;
    if (r >= dims.rows) {
        return;
    }
    let n = dims.len;
    var ss = f64(0.0);
    for (var i = 0u; i < n; i++) {
        let v = f64(a[r * n + i]);
        ss += v * v;
    }
    let scale = f32(f64(1.0) / sqrt(ss / f64(n) + f64(dims.eps)));
    for (var i = 0u; i < n; i++) {
        out[r * n + i] = a[r * n + i] * scale * b[i];
    }
}

// (a[r] - mean) / sqrt(var + eps) * gamma + beta, b = [gamma; beta], as the CPU's LayerNorm:
// the mean and the centred squares summed in f64, each value normalized in f64, then
// rounded to f32 before gamma and beta.
@compute @workgroup_size(64, 1, 1)
fn layer_norm(@builtin(global_invocation_id) id: vec3<u32>) {
    let r = id.x;
    if (r >= dims.rows) {
        return;
    }
    let n = dims.len;
    var sum = f64(0.0);
    for (var i = 0u; i < n; i++) {
        sum += f64(a[r * n + i]);
    }
    let mean = sum / f64(n);
    var ss = f64(0.0);
    for (var i = 0u; i < n; i++) {
        let c = f64(a[r * n + i]) - mean;
        ss += c * c;
    }
    let inv = f64(1.0) / sqrt(ss / f64(n) + f64(dims.eps));
    for (var i = 0u; i < n; i++) {
        out[r * n + i] = f32((f64(a[r * n + i]) - mean) * inv) * b[i] + b[n + i];
    }
}
