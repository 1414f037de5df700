// The bindings of the row and element-wise operations, shared by ops.wgsl and norm_f64.wgsl
// (each compiled with this file prepended): two operands read, the output, the sizes.

struct Dims {
    // Values per row (rows ops) or in all (element-wise ops).
    len: u32,
    rows: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> dims: Dims;
