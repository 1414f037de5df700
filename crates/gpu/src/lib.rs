//! edgellm's GPU backend (issue #16, first step): WGSL compute kernels run through wgpu on
//! Vulkan, Metal or DX12, behind the CPU kernels' interface — a weight matrix in a GGUF block
//! type times activation rows quantized as the CPU kernels quantize them
//! (`edgellm_core::kernels::quantize_activations`), out into f32 rows.
//!
//! What exists: adapter selection with a typed error when there is none ([`Gpu::new`]), the
//! adapter's description ([`AdapterSummary`]), weights uploaded once ([`Gpu::upload`]), and
//! the matrix product of Q8_0 and Q4_0 weights against Q8_0 activations ([`Gpu::matmul`]),
//! dequantizing in registers (`matmul.wgsl`). Every product is tested against the CPU's
//! scalar oracle within `Tolerance::sum_reorder` (`tests/matmul.rs`), on Mesa's software
//! Vulkan driver (lavapipe) in CI. Not yet: the other types, norms, RoPE, attention, a whole
//! forward on the GPU, `--device` (docs/gpu.md).

use std::sync::mpsc;

use edgellm_core::kernels;
use edgellm_core::DType;
use wgpu::util::DeviceExt;

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
    #[error("the GPU backend has no kernel for {0} weights yet (Q8_0 and Q4_0 have one)")]
    Unsupported(DType),
    /// Arguments that do not fit together (sizes, widths).
    #[error("GPU matmul: {0}")]
    Shape(String),
    /// The device reported an error while running (validation, out of memory, lost device).
    #[error("GPU: {0}")]
    Execution(String),
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
    q8_0: wgpu::ComputePipeline,
    q4_0: wgpu::ComputePipeline,
}

/// A weight matrix on the device: `m` rows of `k` values of `dtype`.
pub struct GpuWeight {
    dtype: DType,
    k: usize,
    m: usize,
    scales: wgpu::Buffer,
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
}

/// Values per block of the supported types.
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
        pollster::block_on(Gpu::open())
    }

    async fn open() -> Result<Gpu, GpuError> {
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
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("edgellm"),
                required_limits: limits,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::Device { adapter: summary.name.clone(), why: e.to_string() })?;
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("matmul.wgsl"),
            source: wgpu::ShaderSource::Wgsl(include_str!("matmul.wgsl").into()),
        });
        let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("matmul"),
            entries: &[
                storage(0, true),
                storage(1, true),
                storage(2, true),
                storage(3, true),
                storage(4, false),
                wgpu::BindGroupLayoutEntry {
                    binding: 5,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("matmul"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = |entry: &str| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let (q8_0, q4_0) = (pipeline("q8_0"), pipeline("q4_0"));
        Ok(Gpu { device, queue, summary, layout, q8_0, q4_0 })
    }

    /// The adapter in use.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.summary
    }

    /// Whether [`Gpu::upload`] takes `dtype`.
    pub fn supports(dtype: DType) -> bool {
        matches!(dtype, DType::Q8_0 | DType::Q4_0)
    }

    /// Uploads `m` rows of `k` values of `dtype` in their GGUF layout (`data`), re-laid out for
    /// the kernels (scales as f32, codes as 32-bit words).
    pub fn upload(&self, dtype: DType, k: usize, m: usize, data: &[u8]) -> Result<GpuWeight, GpuError> {
        if !Gpu::supports(dtype) {
            return Err(GpuError::Unsupported(dtype));
        }
        if k == 0 || !k.is_multiple_of(QK) || m == 0 {
            return Err(GpuError::Shape(format!(
                "{m} rows of {k} values: k must be a positive multiple of {QK}"
            )));
        }
        let bs = dtype.type_size();
        let blocks = m * k / QK;
        if data.len() != blocks * bs {
            return Err(GpuError::Shape(format!(
                "{m} × {k} {dtype} weights are {} bytes, got {}",
                blocks * bs,
                data.len()
            )));
        }
        let (scales, codes) = split_blocks(data, bs);
        Ok(GpuWeight {
            dtype,
            k,
            m,
            scales: self.storage("weight scales", &f32_bytes(&scales)),
            codes: self.storage("weight codes", &codes),
        })
    }

    fn storage(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytes,
            usage: wgpu::BufferUsages::STORAGE,
        })
    }

    /// `out[t·m + r] = Σ_b (d_w·d_a)·Σ q_w·q_a` for every row `r` of `w` and each of the `n`
    /// activation rows in `act`, which are Q8_0 blocks as
    /// `edgellm_core::kernels::quantize_activations` writes them for `w`'s type (34 bytes per
    /// 32 values). One submission, one read back.
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
        if n > u16::MAX as usize || w.m.div_ceil(WORKGROUP as usize) > u16::MAX as usize {
            return Err(GpuError::Shape(format!("{n} tokens × {} rows exceeds one dispatch", w.m)));
        }
        let (ad, aq) = split_blocks(act, 34);
        let ad = self.storage("activation scales", &f32_bytes(&ad));
        let aq = self.storage("activation codes", &aq);
        let out_bytes = (w.m * n * 4) as u64;
        let out = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("out"),
            size: out_bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let read = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read back"),
            size: out_bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let dims: Vec<u8> = [(w.k / QK) as u32, w.m as u32, n as u32, w.m as u32]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let dims = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("dims"),
            contents: &dims,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("matmul"),
            layout: &self.layout,
            entries: &[
                entry(0, &w.scales),
                entry(1, &w.codes),
                entry(2, &ad),
                entry(3, &aq),
                entry(4, &out),
                entry(5, &dims),
            ],
        });
        let pipeline = match w.dtype {
            DType::Q8_0 => &self.q8_0,
            _ => &self.q4_0,
        };
        let errors = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut enc =
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("matmul") });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups((w.m as u32).div_ceil(WORKGROUP), n as u32, 1);
        }
        enc.copy_buffer_to_buffer(&out, 0, &read, 0, out_bytes);
        self.queue.submit([enc.finish()]);
        if let Some(e) = pollster::block_on(errors.pop()) {
            return Err(GpuError::Execution(e.to_string()));
        }
        let (tx, rx) = mpsc::channel();
        read.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Execution(e.to_string()))?;
        rx.recv()
            .map_err(|e| GpuError::Execution(e.to_string()))?
            .map_err(|e| GpuError::Execution(e.to_string()))?;
        let view = read.slice(..).get_mapped_range().map_err(|e| GpuError::Execution(e.to_string()))?;
        let v = view.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        Ok(v)
    }
}

fn entry(binding: u32, b: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry { binding, resource: b.as_entire_binding() }
}

/// Splits blocks of `bs` bytes that start with an f16 scale into the scales (as f32) and the
/// rest of each block, padded to whole 32-bit words.
fn split_blocks(data: &[u8], bs: usize) -> (Vec<f32>, Vec<u8>) {
    let words = (bs - 2).div_ceil(4) * 4;
    let mut scales = Vec::with_capacity(data.len() / bs);
    let mut codes = Vec::with_capacity(data.len() / bs * words);
    for b in data.chunks_exact(bs) {
        scales.push(half::f16::from_le_bytes([b[0], b[1]]).to_f32());
        codes.extend_from_slice(&b[2..]);
        codes.resize(codes.len() + words - (bs - 2), 0);
    }
    (scales, codes)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
