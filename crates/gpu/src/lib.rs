//! edgellm's GPU backend (issue #16, first step): WGSL compute kernels run through wgpu on
//! Vulkan, Metal or DX12, behind the CPU kernels' interface — a weight matrix in a GGUF block
//! type times activation rows quantized as the CPU kernels quantize them
//! (`edgellm_core::kernels::quantize_activations`), out into f32 rows.
//!
//! What exists: adapter selection with a typed error when there is none ([`Gpu::new`]), the
//! adapter's description ([`AdapterSummary`]), weights uploaded once ([`Gpu::upload`]), and
//! the matrix products ([`Gpu::matmul`], `matmul.wgsl`, dequantizing in registers) of the
//! 32-value quantized types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) against their Q8_0 / Q8_1
//! activations, of Q4_K / Q6_K against Q8_K activations and of F32 / F16 weights against f32
//! activations; [`Gpu::matmul_f32`] quantizes f32 activation rows on the device first
//! (`quant.wgsl`, Q8_0 / Q8_1, in the same submission). Every product is tested against the
//! CPU's scalar oracle within
//! `Tolerance::sum_reorder` (`tests/matmul.rs`), on Mesa's software Vulkan driver (lavapipe)
//! in CI. RMSNorm, SwiGLU, softmax and add (`ops.wgsl`) against the CPU functions within
//! `tolerance::gpu::ROW_OPS`. Not yet: the remaining types, Q8_K on the device, LayerNorm,
//! RoPE, GELU, attention, device-resident tensors and a whole forward, `--device`
//! (docs/gpu.md).

use std::sync::mpsc;

use edgellm_core::kernels;
use edgellm_core::quant::{scale_min_k4, QK_K};
use edgellm_core::DType;
use wgpu::util::DeviceExt;

mod bert;
mod decoder;
mod gemma3;
mod llama;
mod record;

pub use bert::{load_bert, GpuBert};
pub use decoder::MAX_STEP_TOKENS;
pub use gemma3::GpuGemma3;
pub use llama::GpuLlama;

/// The process's GPU, opened on first use (adapter selection and kernel compilation happen
/// once; every model on the GPU shares the device). An error is not remembered: a later call
/// tries again.
pub fn shared() -> Result<std::sync::Arc<Gpu>, GpuError> {
    static GPU: std::sync::Mutex<Option<std::sync::Arc<Gpu>>> = std::sync::Mutex::new(None);
    let mut g = GPU.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(gpu) = g.as_ref() {
        return Ok(gpu.clone());
    }
    let gpu = std::sync::Arc::new(Gpu::new()?);
    *g = Some(gpu.clone());
    Ok(gpu)
}

/// The language model in `f` on `gpu`: the architectures the GPU path runs (Llama: SmolLM2;
/// Gemma 3); any other is [`edgellm_models::ModelError::Device`] naming it.
pub fn load_gguf(
    gpu: std::sync::Arc<Gpu>,
    f: &edgellm_formats::GgufFile,
    opts: &edgellm_models::LoadOptions,
) -> Result<Box<dyn edgellm_models::LanguageModel>, edgellm_models::ModelError> {
    match f.architecture()? {
        "llama" => Ok(Box::new(GpuLlama::from_gguf(gpu, f, opts)?)),
        "gemma3" => Ok(Box::new(GpuGemma3::from_gguf(gpu, f, opts)?)),
        other => Err(edgellm_models::ModelError::Device(format!(
            "the GPU path does not run the {other} architecture yet (it runs llama and gemma3)"
        ))),
    }
}
pub use record::{rope_table, ActBuffers, AttnDims, GpuLayerKv, GpuTensor, RopeMode, Step, MAX_HEAD_DIM};

/// An error of the GPU backend.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No adapter of the requested back ends (no GPU, or no driver for it).
    #[error(
        "no GPU adapter found (back ends tried: {backends}); on Linux without a GPU, Mesa's \
         software Vulkan driver works: apt-get install mesa-vulkan-drivers"
    )]
    NoAdapter {
        /// The back ends searched.
        backends: String,
    },
    /// The adapter refused a device.
    #[error("GPU {adapter}: could not open a device: {why}")]
    Device {
        /// The adapter's name.
        adapter: String,
        /// The driver's reason.
        why: String,
    },
    /// The weight type has no GPU kernel yet.
    #[error("the GPU backend has no kernel for {0} weights yet (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q6_K, F32 and F16 have one)")]
    Unsupported(DType),
    /// Arguments that do not fit together (sizes, widths).
    #[error("GPU matmul: {0}")]
    Shape(String),
    /// The device reported an error while running (validation, out of memory, lost device).
    #[error("GPU: {0}")]
    Execution(String),
    /// The device could not allocate what a model or a step needs.
    #[error("GPU out of memory: {0}")]
    OutOfMemory(String),
}

/// What a [`Gpu`] runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterSummary {
    /// Adapter name (`llvmpipe (LLVM 15.0.6, 256 bits)`, `NVIDIA GeForce …`).
    pub name: String,
    /// Driver and its version.
    pub driver: String,
    /// `Vulkan`, `Metal`, `Dx12`.
    pub backend: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `Cpu` (a software driver), …
    pub device_type: String,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {}, {})", self.name, self.backend, self.driver, self.device_type)
    }
}

/// A GPU device with the compiled kernels.
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    summary: AdapterSummary,
    layout: wgpu::BindGroupLayout,
    /// One pipeline per weight type, in [`KINDS`] order.
    pipelines: Vec<wgpu::ComputePipeline>,
    quant_layout: wgpu::BindGroupLayout,
    /// Activation quantization to Q8_0, Q8_1 and Q8_K (`quant.wgsl`), in [`ActKind`] order.
    quant: [wgpu::ComputePipeline; 3],
    ops_layout: wgpu::BindGroupLayout,
    /// The row and element-wise operations (`ops.wgsl`), in [`Op`] order.
    ops: Vec<wgpu::ComputePipeline>,
    attn_layout: wgpu::BindGroupLayout,
    /// `attn.wgsl`: rope, kv_store, attention.
    attn: Vec<wgpu::ComputePipeline>,
    /// Two one-word storage buffers for the bindings an entry point does not use.
    dummy: [wgpu::Buffer; 2],
    /// RMSNorm sums in f64 (the adapter has 64-bit floats in shaders).
    f64_sums: bool,
    /// The first error the device reported outside an error scope (instead of wgpu's default
    /// handler, which panics); the next read-back returns it.
    uncaptured: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

/// A row or element-wise operation of `ops.wgsl`.
#[derive(Clone, Copy)]
enum Op {
    RmsNorm,
    Swiglu,
    Add,
    Softmax,
    AddTo,
    GeluGate,
    LayerNorm,
    AddBias,
    GeluErf,
}

impl Op {
    const ALL: [Op; 9] = [
        Op::RmsNorm,
        Op::Swiglu,
        Op::Add,
        Op::Softmax,
        Op::AddTo,
        Op::GeluGate,
        Op::LayerNorm,
        Op::AddBias,
        Op::GeluErf,
    ];

    fn entry(self) -> &'static str {
        match self {
            Op::RmsNorm => "rms_norm",
            Op::Swiglu => "swiglu",
            Op::Add => "add",
            Op::Softmax => "softmax",
            Op::AddTo => "add_to",
            Op::GeluGate => "gelu_gate",
            Op::LayerNorm => "layer_norm",
            Op::AddBias => "add_bias",
            Op::GeluErf => "gelu_erf",
        }
    }
}

/// The activation type a quantized weight type's product takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub(crate) enum ActKind {
    Q8_0,
    Q8_1,
    Q8_K,
}

impl ActKind {
    fn of(weight: DType) -> Option<ActKind> {
        match weight {
            DType::Q8_0 | DType::Q4_0 | DType::Q5_0 => Some(ActKind::Q8_0),
            DType::Q4_1 | DType::Q5_1 => Some(ActKind::Q8_1),
            DType::Q4_K | DType::Q6_K => Some(ActKind::Q8_K),
            _ => None,
        }
    }

    /// Values per block.
    fn block(self) -> usize {
        match self {
            ActKind::Q8_K => QK_K,
            _ => QK,
        }
    }
}

/// The weight types with a kernel, in the order of `KIND` in `matmul.wgsl`.
const KINDS: [DType; 9] = [
    DType::Q8_0,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::F32,
    DType::F16,
    DType::Q4_K,
    DType::Q6_K,
];

/// A weight matrix on the device: `m` rows of `k` values of `dtype`, in parts of consecutive
/// rows each within the device's largest binding (one part unless the matrix is larger, as
/// Gemma 3's 262 144-row embedding on a device binding 128 MiB).
pub struct GpuWeight {
    dtype: DType,
    k: usize,
    m: usize,
    parts: Vec<WeightPart>,
}

/// Rows `start..start + rows` of a [`GpuWeight`].
struct WeightPart {
    start: usize,
    rows: usize,
    scales: wgpu::Buffer,
    mins: wgpu::Buffer,
    codes: wgpu::Buffer,
}

impl GpuWeight {
    /// The weight type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Values per row.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Rows.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Parts it is stored in (each bound on its own).
    pub fn parts(&self) -> usize {
        self.parts.len()
    }
}

/// Values per block of the quantized types.
const QK: usize = 32;
/// Invocations per workgroup along the rows (`@workgroup_size` in `matmul.wgsl`).
const WORKGROUP: u32 = 64;

/// The back ends searched: Vulkan (Linux, Android, Windows), Metal (Apple), DX12 (Windows).
fn backends() -> wgpu::Backends {
    wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12
}

impl Gpu {
    /// Opens the best adapter of the primary back ends (a discrete GPU before an integrated
    /// one before a software driver) and compiles the kernels.
    pub fn new() -> Result<Gpu, GpuError> {
        pollster::block_on(Gpu::open(true))
    }

    /// [`Gpu::new`] with RMSNorm's sums in f32 even where the adapter has 64-bit floats (as on
    /// most mobile GPUs): for testing that path.
    pub fn new_f32_sums() -> Result<Gpu, GpuError> {
        pollster::block_on(Gpu::open(false))
    }

    async fn open(allow_f64: bool) -> Result<Gpu, GpuError> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends();
        let instance = wgpu::Instance::new(desc);
        let rank = |t: wgpu::DeviceType| match t {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            wgpu::DeviceType::Other => 3,
            wgpu::DeviceType::Cpu => 4,
        };
        let adapter = instance
            .enumerate_adapters(backends())
            .await
            .into_iter()
            .min_by_key(|a| rank(a.get_info().device_type))
            .ok_or_else(|| GpuError::NoAdapter { backends: format!("{:?}", backends()) })?;
        let info = adapter.get_info();
        let summary = AdapterSummary {
            name: info.name.clone(),
            driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
        };
        // Everything the adapter offers (the largest weight is one storage buffer).
        let limits = adapter.limits();
        // 64-bit floats where the adapter has them: RMSNorm then sums as the CPU does.
        let f64_sums = allow_f64 && adapter.features().contains(wgpu::Features::SHADER_F64);
        let features = if f64_sums { wgpu::Features::SHADER_F64 } else { wgpu::Features::empty() };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("edgellm"),
                required_features: features,
                required_limits: limits,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::Device { adapter: summary.name.clone(), why: e.to_string() })?;
        // Errors outside a scope are kept for the next read-back, never a panic.
        let uncaptured = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(std::sync::Arc::new(move |e: wgpu::Error| {
            let mut first = sink.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| e.to_string());
        }));
        // matmul.wgsl: weight scales, minimums, codes, activation scales, sums, codes (read),
        // the output, then the uniform; one pipeline per weight type (`KIND`).
        let kinds: Vec<(&str, &str, f64)> = KINDS
            .iter()
            .enumerate()
            .map(|(kind, t)| {
                let entry = match t {
                    DType::Q4_K | DType::Q6_K => "kquant",
                    t if t.is_quantized() => "quantized",
                    _ => "float",
                };
                (t.name(), entry, kind as f64)
            })
            .collect();
        let (layout, pipelines) = kernel_set(
            &device,
            "matmul.wgsl",
            include_str!("matmul.wgsl"),
            &[true, true, true, true, true, true, false],
            &kinds,
            "KIND",
        );
        // quant.wgsl: the f32 rows (read), the activation scales, sums and codes it writes.
        let (quant_layout, quant) = kernel_set(
            &device,
            "quant.wgsl",
            include_str!("quant.wgsl"),
            &[true, false, false, false],
            &[("quantize Q8_0", "q8", 0.0), ("quantize Q8_1", "q8", 1.0), ("quantize Q8_K", "q8k", 0.0)],
            "AFFINE",
        );
        let quant: [wgpu::ComputePipeline; 3] = quant.try_into().expect("three quantization pipelines");
        // ops.wgsl: two operands (read), the output.
        let op_entries: Vec<(&str, &str, f64)> =
            Op::ALL.iter().map(|op| (op.entry(), op.entry(), 0.0)).collect();
        let (ops_layout, mut ops) = kernel_set(
            &device,
            "ops.wgsl",
            concat!(include_str!("ops_bindings.wgsl"), include_str!("ops.wgsl")),
            &[true, true, false],
            &op_entries,
            "",
        );
        if f64_sums {
            let (_, f64_ops) = kernel_set_with(
                &device,
                "norm_f64.wgsl",
                concat!(include_str!("ops_bindings.wgsl"), include_str!("norm_f64.wgsl")),
                &ops_layout,
                &[("rms_norm f64", "rms_norm", 0.0), ("layer_norm f64", "layer_norm", 0.0)],
                "",
            );
            let [rms, ln]: [wgpu::ComputePipeline; 2] = f64_ops.try_into().expect("two pipelines");
            ops[Op::RmsNorm as usize] = rms;
            ops[Op::LayerNorm as usize] = ln;
        }
        // attn.wgsl: two operands (read), the key and value caches, the output.
        let (attn_layout, attn) = kernel_set(
            &device,
            "attn.wgsl",
            include_str!("attn.wgsl"),
            &[true, true, false, false, false],
            &[
                ("rope", "rope", 0.0),
                ("kv_store", "kv_store", 0.0),
                ("attention", "attention", 0.0),
                ("encoder_attention", "encoder_attention", 0.0),
            ],
            "",
        );
        let unused = |label| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 4,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        let dummy = [unused("unused 0"), unused("unused 1")];
        Ok(Gpu {
            device,
            queue,
            summary,
            layout,
            pipelines,
            quant_layout,
            quant,
            ops_layout,
            ops,
            attn_layout,
            attn,
            dummy,
            f64_sums,
            uncaptured,
        })
    }

    /// The adapter in use.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.summary
    }

    /// Whether RMSNorm sums its squares in f64 as the CPU does (the adapter has 64-bit floats
    /// in shaders; else in f32, within `tolerance::gpu::ROW_OPS` of the CPU but not its bits).
    pub fn f64_sums(&self) -> bool {
        self.f64_sums
    }

    /// Whether [`Gpu::upload`] takes `dtype`.
    pub fn supports(dtype: DType) -> bool {
        KINDS.contains(&dtype)
    }

    /// Uploads `m` rows of `k` values of `dtype` in their GGUF layout (`data`), re-laid out for
    /// the kernels (scales as f32, codes as 32-bit words).
    pub fn upload(&self, dtype: DType, k: usize, m: usize, data: &[u8]) -> Result<GpuWeight, GpuError> {
        self.upload_in_parts(dtype, k, m, data, usize::MAX)
    }

    /// [`Gpu::upload`] in parts of at most `part_rows` rows (fewer when a part would not fit
    /// one binding); the products give the same values whatever the parts.
    pub fn upload_in_parts(
        &self,
        dtype: DType,
        k: usize,
        m: usize,
        data: &[u8],
        part_rows: usize,
    ) -> Result<GpuWeight, GpuError> {
        if !Gpu::supports(dtype) {
            return Err(GpuError::Unsupported(dtype));
        }
        let block = block_values(dtype);
        if k == 0 || !k.is_multiple_of(block) || m == 0 {
            return Err(GpuError::Shape(format!(
                "{m} rows of {k} {dtype} values: k must be a positive multiple of {block}"
            )));
        }
        let bytes = m * k / block * dtype.type_size();
        if data.len() != bytes {
            return Err(GpuError::Shape(format!(
                "{m} × {k} {dtype} weights are {bytes} bytes, got {}",
                data.len()
            )));
        }
        let (scales, mins, codes) = relayout(dtype, data);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let weight = self.upload_parts(dtype, k, m, part_rows, (&scales, &mins, &codes));
        if let Some(e) = pollster::block_on(oom.pop()) {
            return Err(GpuError::OutOfMemory(format!("{m} × {k} {dtype} weights: {e}")));
        }
        weight
    }

    fn upload_parts(
        &self,
        dtype: DType,
        k: usize,
        m: usize,
        part_rows: usize,
        (scales, mins, codes): (&[f32], &[f32], &[u8]),
    ) -> Result<GpuWeight, GpuError> {
        let (row_codes, row_scales, row_mins) = (codes.len() / m, scales.len() / m, mins.len() / m);
        self.fits("one row of the weight's codes", row_codes)?;
        let fit = (self.max_binding() as usize / row_codes.max(1)).max(1);
        let per_part = part_rows.clamp(1, fit);
        let parts = (0..m)
            .step_by(per_part)
            .map(|start| {
                let rows = per_part.min(m - start);
                let r = start..start + rows;
                WeightPart {
                    start,
                    rows,
                    scales: self.storage(
                        "weight scales",
                        &f32_bytes(&scales[r.start * row_scales..r.end * row_scales]),
                    ),
                    mins: self
                        .storage("weight minimums", &f32_bytes(&mins[r.start * row_mins..r.end * row_mins])),
                    codes: self.storage("weight codes", &codes[r.start * row_codes..r.end * row_codes]),
                }
            })
            .collect();
        Ok(GpuWeight { dtype, k, m, parts })
    }

    /// The largest storage buffer this device binds, in bytes.
    pub(crate) fn max_binding(&self) -> u64 {
        let limits = self.device.limits();
        limits.max_storage_buffer_binding_size.min(limits.max_buffer_size)
    }

    /// Whether a storage buffer of `bytes` can be bound on this device (a typed error naming
    /// the limit, instead of the device's validation error).
    fn fits(&self, what: &str, bytes: usize) -> Result<(), GpuError> {
        let limits = self.device.limits();
        let max = limits.max_storage_buffer_binding_size.min(limits.max_buffer_size);
        if bytes as u64 > max {
            return Err(GpuError::Shape(format!(
                "{what} take {bytes} bytes, more than this adapter binds in one buffer ({max} bytes)"
            )));
        }
        Ok(())
    }

    /// A storage buffer holding `bytes` (at least one word: bindings cannot be empty).
    fn storage(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        let pad = [0u8; 4];
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: if bytes.is_empty() { &pad } else { bytes },
            usage: wgpu::BufferUsages::STORAGE,
        })
    }

    /// The product of every row `r` of `w` with each of the `n` activation rows in `act`, into
    /// `out[t·m + r]`: `Σ_b (d_w·d_a)·Σ q_w·q_a` (+ `m_w·s_a` for the affine types) for the
    /// quantized types, `Σ w·x` for the float ones. `act` holds the rows as
    /// `edgellm_core::kernels::quantize_activations` writes them for `w`'s type (Q8_0, Q8_1,
    /// Q8_K or f32). One submission, one read back.
    pub fn matmul(&self, w: &GpuWeight, act: &[u8], n: usize) -> Result<Vec<f32>, GpuError> {
        let row = kernels::activation_row_bytes(w.dtype, w.k);
        if n == 0 || act.len() != n * row {
            return Err(GpuError::Shape(format!(
                "{n} activation rows of {} values are {} bytes, got {}",
                w.k,
                n * row,
                act.len()
            )));
        }
        self.check_dispatch(w, n)?;
        let (ad, as_, aq) = relayout_activations(w.dtype, act);
        self.fits("the activations", aq.len())?;
        let acts = [
            self.storage("activation scales", &f32_bytes(&ad)),
            self.storage("activation sums", &f32_bytes(&as_)),
            self.storage("activation codes", &aq),
        ];
        self.product(w, &acts, n, None)
    }

    /// [`Gpu::matmul`] of f32 activation rows `x` (`n × k`), quantized on the device for the
    /// quantized types (`quant.wgsl`, as `quantize_activations` does; one submission for both
    /// passes), passed as they are to the float types.
    pub fn matmul_f32(&self, w: &GpuWeight, x: &[f32], n: usize) -> Result<Vec<f32>, GpuError> {
        if n == 0 || x.len() != n * w.k {
            return Err(GpuError::Shape(format!(
                "{n} rows of {} values are {} floats, got {}",
                w.k,
                n * w.k,
                x.len()
            )));
        }
        if !w.dtype.is_quantized() {
            return self.matmul(w, &f32_bytes(x), n);
        }
        self.check_dispatch(w, n)?;
        let (acts, quant) = self.quantize_pass(w.dtype, x)?;
        self.product(w, &[acts.d, acts.s, acts.q], n, Some(quant))
    }

    /// The activation rows `x` (whole blocks) quantized on the device for `weight`'s
    /// activation type (Q8_0, Q8_1 for the affine types, Q8_K for the k-quants), read back in
    /// the CPU's block layout: what [`Gpu::matmul_f32`] feeds its product.
    pub fn quantize_activations(&self, weight: DType, x: &[f32]) -> Result<Vec<u8>, GpuError> {
        let kind = ActKind::of(weight).ok_or(GpuError::Unsupported(weight))?;
        let (acts, quant) = self.quantize_pass(weight, x)?;
        let mut enc =
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("quantize") });
        quant.record(&mut enc);
        let [d, s, q] = self.read_back(enc, [&acts.d, &acts.s, &acts.q])?;
        let word = |v: &[u8], i: usize| [v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]];
        let blocks = x.len() / kind.block();
        let mut out = Vec::with_capacity(blocks * kernels::activation_row_bytes(weight, kind.block()));
        for b in 0..blocks {
            match kind {
                ActKind::Q8_K => {
                    out.extend_from_slice(&word(&d, b));
                    out.extend_from_slice(&q[256 * b..256 * (b + 1)]);
                    for g in 0..16 {
                        out.extend_from_slice(
                            &(i32::from_le_bytes(word(&s, 16 * b + g)) as i16).to_le_bytes(),
                        );
                    }
                }
                _ => {
                    let f16 = |v: &[u8]| half::f16::from_f32(f32::from_le_bytes(word(v, b)));
                    out.extend_from_slice(&f16(&d).to_le_bytes());
                    if kind == ActKind::Q8_1 {
                        out.extend_from_slice(&f16(&s).to_le_bytes());
                    }
                    out.extend_from_slice(&q[32 * b..32 * (b + 1)]);
                }
            }
        }
        Ok(out)
    }

    /// RMSNorm of each row of `x` (rows of `w.len()` values): `x · (1/√(mean(x²) + eps)) · w`.
    pub fn rms_norm(&self, x: &[f32], w: &[f32], eps: f32) -> Result<Vec<f32>, GpuError> {
        if w.is_empty() || x.is_empty() || !x.len().is_multiple_of(w.len()) {
            return Err(GpuError::Shape(format!("rms_norm: {} values are not rows of {}", x.len(), w.len())));
        }
        self.row_op(Op::RmsNorm, x, w, w.len(), x.len() / w.len(), eps)
    }

    /// `silu(g) · u`, element by element, as `edgellm_core::kernels::swiglu`.
    pub fn swiglu(&self, g: &[f32], u: &[f32]) -> Result<Vec<f32>, GpuError> {
        self.same_len("swiglu", g, u)?;
        self.row_op(Op::Swiglu, g, u, g.len(), 1, 0.0)
    }

    /// `gelu(g) · u`, element by element, GELU through half precision as the CPU's fast path
    /// (`edgellm_models::nn::gelu_tanh_table`).
    pub fn gelu_gate(&self, g: &[f32], u: &[f32]) -> Result<Vec<f32>, GpuError> {
        self.same_len("gelu_gate", g, u)?;
        self.row_op(Op::GeluGate, g, u, g.len(), 1, 0.0)
    }

    /// `a + b`, element by element.
    pub fn add(&self, a: &[f32], b: &[f32]) -> Result<Vec<f32>, GpuError> {
        self.same_len("add", a, b)?;
        self.row_op(Op::Add, a, b, a.len(), 1, 0.0)
    }

    /// The softmax of each row of `row` values of `x`.
    pub fn softmax(&self, x: &[f32], row: usize) -> Result<Vec<f32>, GpuError> {
        if row == 0 || x.is_empty() || !x.len().is_multiple_of(row) {
            return Err(GpuError::Shape(format!("softmax: {} values are not rows of {row}", x.len())));
        }
        self.row_op(Op::Softmax, x, &[0.0], row, x.len() / row, 0.0)
    }

    fn same_len(&self, what: &str, a: &[f32], b: &[f32]) -> Result<(), GpuError> {
        if a.is_empty() || a.len() != b.len() {
            return Err(GpuError::Shape(format!("{what}: lengths {} and {}", a.len(), b.len())));
        }
        Ok(())
    }

    /// Runs `op` (`ops.wgsl`) on `a` and `b`: rows of `len` values (`rows` of them; 1 for the
    /// element-wise ops, whose `len` is everything), reading the result back.
    fn row_op(
        &self,
        op: Op,
        a: &[f32],
        b: &[f32],
        len: usize,
        rows: usize,
        eps: f32,
    ) -> Result<Vec<f32>, GpuError> {
        self.fits("the operands", 4 * a.len().max(b.len()))?;
        let (ab, bb) = (self.storage("a", &f32_bytes(a)), self.storage("b", &f32_bytes(b)));
        let out = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("out"),
            size: (4 * a.len()) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let dims = self.uniform(&[len as u32, rows as u32, eps.to_bits(), 0]);
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(op.entry()),
            layout: &self.ops_layout,
            entries: &[entry(0, &ab), entry(1, &bb), entry(2, &out), entry(3, &dims)],
        });
        let threads = if matches!(op, Op::RmsNorm | Op::Softmax) { rows } else { len };
        if threads.div_ceil(WORKGROUP as usize) > u16::MAX as usize {
            return Err(GpuError::Shape(format!("{threads} invocations exceed one dispatch")));
        }
        let pass = Pass {
            pipeline: self.ops[op as usize].clone(),
            bind,
            groups: (threads as u32).div_ceil(WORKGROUP),
            tokens: 1,
        };
        let mut enc =
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(op.entry()) });
        pass.record(&mut enc);
        let [v] = self.read_back(enc, [&out])?;
        Ok(v.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }

    /// A product's dispatch fits one grid dimension.
    fn check_dispatch(&self, w: &GpuWeight, n: usize) -> Result<(), GpuError> {
        if n > u16::MAX as usize || w.m.div_ceil(WORKGROUP as usize) > u16::MAX as usize {
            return Err(GpuError::Shape(format!("{n} tokens × {} rows exceeds one dispatch", w.m)));
        }
        self.fits("the output", w.m * n * 4)
    }

    /// Uploads `x` and prepares the quantization pass writing the activation buffers of
    /// `weight`'s activation type.
    fn quantize_pass(&self, weight: DType, x: &[f32]) -> Result<(ActBuffers, Pass), GpuError> {
        let kind = ActKind::of(weight).ok_or(GpuError::Unsupported(weight))?;
        self.fits("the activations", x.len() * 4)?;
        let acts = self.act_buffers(x.len())?;
        let input = self.storage("activations", &f32_bytes(x));
        let pass = self.quant_pass(&input, x.len(), kind, &acts)?;
        Ok((acts, pass))
    }

    /// The pass quantizing `values` f32 values of `input` (whole blocks of `kind`) into `acts`.
    pub(crate) fn quant_pass(
        &self,
        input: &wgpu::Buffer,
        values: usize,
        kind: ActKind,
        acts: &ActBuffers,
    ) -> Result<Pass, GpuError> {
        if values == 0 || !values.is_multiple_of(kind.block()) {
            return Err(GpuError::Shape(format!(
                "{values} values are not whole {}-value blocks",
                kind.block()
            )));
        }
        let blocks = values / kind.block();
        let dims = self.uniform(&[blocks as u32, 0, 0, 0]);
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("quantize"),
            layout: &self.quant_layout,
            entries: &[
                entry(0, input),
                entry(1, &acts.d),
                entry(2, &acts.s),
                entry(3, &acts.q),
                entry(4, &dims),
            ],
        });
        let pipeline = self.quant[kind as usize].clone();
        Ok(Pass { pipeline, bind, groups: (blocks as u32).div_ceil(WORKGROUP), tokens: 1 })
    }

    fn uniform(&self, v: &[u32; 4]) -> wgpu::Buffer {
        let bytes: Vec<u8> = v.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.uniform_bytes(&bytes)
    }

    fn uniform_bytes(&self, bytes: &[u8]) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("dims"),
            contents: bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        })
    }

    /// The product of `w` with the activation buffers `[scales, sums, codes]`, after `before`
    /// (the activations' quantization) in the same submission; reads the output back.
    fn product(
        &self,
        w: &GpuWeight,
        acts: &[wgpu::Buffer; 3],
        n: usize,
        before: Option<Pass>,
    ) -> Result<Vec<f32>, GpuError> {
        let out_bytes = (w.m * n * 4) as u64;
        let out = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("out"),
            size: out_bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let passes = self.product_passes(w, [&acts[0], &acts[1], &acts[2]], n, &out);
        let mut enc =
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("matmul") });
        if let Some(q) = before {
            q.record(&mut enc);
        }
        for pass in &passes {
            pass.record(&mut enc);
        }
        let [v] = self.read_back(enc, [&out])?;
        Ok(v.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }

    /// The product passes of `w` (one per part) with the activation buffers `[scales, sums,
    /// codes]` (`n` rows) into `out` (`[n × m]`).
    fn product_passes(
        &self,
        w: &GpuWeight,
        acts: [&wgpu::Buffer; 3],
        n: usize,
        out: &wgpu::Buffer,
    ) -> Vec<Pass> {
        let per_row = w.k / block_values(w.dtype);
        let kind = KINDS.iter().position(|&t| t == w.dtype).expect("an uploaded weight has a kernel");
        w.parts
            .iter()
            .map(|part| {
                let d = [per_row, part.rows, n, w.m, part.start, 0, 0, 0].map(|v| v as u32);
                let bytes: Vec<u8> = d.iter().flat_map(|v| v.to_le_bytes()).collect();
                let dims = self.uniform_bytes(&bytes);
                let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some("matmul"),
                    layout: &self.layout,
                    entries: &[
                        entry(0, &part.scales),
                        entry(1, &part.mins),
                        entry(2, &part.codes),
                        entry(3, acts[0]),
                        entry(4, acts[1]),
                        entry(5, acts[2]),
                        entry(6, out),
                        entry(7, &dims),
                    ],
                });
                Pass {
                    pipeline: self.pipelines[kind].clone(),
                    bind,
                    groups: (part.rows as u32).div_ceil(WORKGROUP),
                    tokens: n as u32,
                }
            })
            .collect()
    }

    /// Finishes `enc` with copies of `bufs` into mappable buffers, submits it (validation
    /// errors become [`GpuError::Execution`]) and returns the buffers' bytes.
    fn read_back<const N: usize>(
        &self,
        mut enc: wgpu::CommandEncoder,
        bufs: [&wgpu::Buffer; N],
    ) -> Result<[Vec<u8>; N], GpuError> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let errors = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let reads: Vec<wgpu::Buffer> = bufs
            .iter()
            .map(|b| {
                let r = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("read back"),
                    size: b.size(),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                enc.copy_buffer_to_buffer(b, 0, &r, 0, b.size());
                r
            })
            .collect();
        self.queue.submit([enc.finish()]);
        let invalid = pollster::block_on(errors.pop());
        if let Some(e) = pollster::block_on(oom.pop()) {
            return Err(GpuError::OutOfMemory(e.to_string()));
        }
        if let Some(e) = invalid {
            return Err(GpuError::Execution(e.to_string()));
        }
        if let Some(e) = self.uncaptured.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(GpuError::Execution(e));
        }
        let (tx, rx) = mpsc::channel();
        for r in &reads {
            let tx = tx.clone();
            r.slice(..).map_async(wgpu::MapMode::Read, move |res| {
                let _ = tx.send(res);
            });
        }
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Execution(e.to_string()))?;
        for _ in &reads {
            rx.recv()
                .map_err(|e| GpuError::Execution(e.to_string()))?
                .map_err(|e| GpuError::Execution(e.to_string()))?;
        }
        let mut out: [Vec<u8>; N] = std::array::from_fn(|_| Vec::new());
        for (o, r) in out.iter_mut().zip(&reads) {
            *o = r.slice(..).get_mapped_range().map_err(|e| GpuError::Execution(e.to_string()))?.to_vec();
        }
        Ok(out)
    }
}

/// One compute pass: a pipeline, its bindings and its grid (`groups` × `tokens`).
struct Pass {
    pipeline: wgpu::ComputePipeline,
    bind: wgpu::BindGroup,
    groups: u32,
    tokens: u32,
}

impl Pass {
    fn record(&self, enc: &mut wgpu::CommandEncoder) {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind, &[]);
        pass.dispatch_workgroups(self.groups, self.tokens, 1);
    }
}

/// Compiles one WGSL file into a bind group layout — storage buffers at bindings `0..`
/// (`read_only` each), then one uniform — and a pipeline per `(label, entry point, value)`,
/// the value given to the `override` constant `constant` (none when it is empty).
fn kernel_set(
    device: &wgpu::Device,
    file: &str,
    source: &str,
    read_only: &[bool],
    pipelines: &[(&str, &str, f64)],
    constant: &str,
) -> (wgpu::BindGroupLayout, Vec<wgpu::ComputePipeline>) {
    let buffer = |binding: usize, ty: wgpu::BufferBindingType| wgpu::BindGroupLayoutEntry {
        binding: binding as u32,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer { ty, has_dynamic_offset: false, min_binding_size: None },
        count: None,
    };
    let mut entries: Vec<wgpu::BindGroupLayoutEntry> = read_only
        .iter()
        .enumerate()
        .map(|(i, &read_only)| buffer(i, wgpu::BufferBindingType::Storage { read_only }))
        .collect();
    entries.push(buffer(read_only.len(), wgpu::BufferBindingType::Uniform));
    let layout = device
        .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(file), entries: &entries });
    kernel_set_with(device, file, source, &layout, pipelines, constant)
}

/// [`kernel_set`]'s pipelines for an existing bind group layout.
fn kernel_set_with(
    device: &wgpu::Device,
    file: &str,
    source: &str,
    layout: &wgpu::BindGroupLayout,
    pipelines: &[(&str, &str, f64)],
    constant: &str,
) -> (wgpu::BindGroupLayout, Vec<wgpu::ComputePipeline>) {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(file),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(file),
        bind_group_layouts: &[Some(layout)],
        immediate_size: 0,
    });
    let pipelines = pipelines
        .iter()
        .map(|&(label, entry, value)| {
            let constants = [(constant, value)];
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: if constant.is_empty() { &[] } else { &constants },
                    ..Default::default()
                },
                cache: None,
            })
        })
        .collect();
    (layout.clone(), pipelines)
}

fn entry(binding: u32, b: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry { binding, resource: b.as_entire_binding() }
}

/// A weight matrix in the kernels' layout (`matmul.wgsl`): the blocks' scales and minimums
/// (f32; minimums of the affine types only) and their codes in 32-bit words — the Q8_0 and
/// nibble bytes as they are, the Q5 types' fifth-bit word first; the float types' values as
/// they are (padded to a whole word).
fn relayout(dtype: DType, data: &[u8]) -> (Vec<f32>, Vec<f32>, Vec<u8>) {
    let (mut d, mut m, mut q) = (Vec::new(), Vec::new(), Vec::with_capacity(data.len()));
    if !dtype.is_quantized() {
        q.extend_from_slice(data);
        q.resize(data.len().div_ceil(4) * 4, 0);
        return (d, m, q);
    }
    for b in data.chunks_exact(dtype.type_size()) {
        match dtype {
            DType::Q4_K => {
                d.push(f16_at(b, 0));
                m.push(f16_at(b, 2));
                let scales: &[u8; 12] = b[4..16].try_into().expect("a Q4_K block has 12 scale bytes");
                let (sc, mn): (Vec<u8>, Vec<u8>) = (0..8).map(|j| scale_min_k4(j, scales)).unzip();
                q.extend_from_slice(&sc);
                q.extend_from_slice(&mn);
                q.extend_from_slice(&b[16..144]);
                continue;
            }
            DType::Q6_K => {
                d.push(f16_at(b, 208));
                q.extend_from_slice(&b[..208]);
                continue;
            }
            _ => d.push(f16_at(b, 0)),
        }
        let codes = match dtype {
            DType::Q4_1 | DType::Q5_1 => {
                m.push(f16_at(b, 2));
                &b[4..]
            }
            _ => &b[2..],
        };
        q.extend_from_slice(codes);
    }
    (d, m, q)
}

/// Activation rows (Q8_0 or Q8_1 blocks, or f32 values) in the kernels' layout: scales,
/// Q8_1's `s` (f32) and the codes (or values).
fn relayout_activations(weight: DType, act: &[u8]) -> (Vec<f32>, Vec<f32>, Vec<u8>) {
    let (mut d, mut s, mut q) = (Vec::new(), Vec::new(), Vec::with_capacity(act.len()));
    match weight {
        DType::Q4_1 | DType::Q5_1 => {
            for b in act.chunks_exact(36) {
                d.push(f16_at(b, 0));
                s.push(f16_at(b, 2));
                q.extend_from_slice(&b[4..]);
            }
        }
        DType::Q4_K | DType::Q6_K => {
            for b in act.chunks_exact(292) {
                d.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                q.extend_from_slice(&b[4..260]);
                // The 16 sums as i32 bits (the shader bitcasts them back).
                s.extend(
                    b[260..292]
                        .chunks_exact(2)
                        .map(|x| f32::from_bits(i16::from_le_bytes([x[0], x[1]]) as i32 as u32)),
                );
            }
        }
        t if t.is_quantized() => {
            for b in act.chunks_exact(34) {
                d.push(f16_at(b, 0));
                q.extend_from_slice(&b[2..]);
            }
        }
        _ => q.extend_from_slice(act),
    }
    (d, s, q)
}

/// Values per block of `dtype` as the kernels count them (1 for the float types).
fn block_values(dtype: DType) -> usize {
    match dtype {
        DType::Q4_K | DType::Q6_K => QK_K,
        t if t.is_quantized() => QK,
        _ => 1,
    }
}

/// The little-endian half at `b[o..]`, widened.
fn f16_at(b: &[u8], o: usize) -> f32 {
    half::f16::from_le_bytes([b[o], b[o + 1]]).to_f32()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
