//! Device-resident tensors and a recorder: a whole forward step's operations appended to one
//! command encoder over buffers that stay on the device, submitted once, with one read-back
//! at the end ([`Step::read`]). The host round-trip entry points of [`Gpu`] (`matmul`,
//! `rms_norm`, …) are the tests' view of the same kernels.

use crate::{entry, f32_bytes, ActKind, Gpu, GpuError, GpuWeight, Op, Pass, QK, WORKGROUP};

/// f32 values in a device buffer.
pub struct GpuTensor {
    pub(crate) buf: wgpu::Buffer,
    len: usize,
}

impl GpuTensor {
    /// Values it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Quantized activation rows on the device (`quant.wgsl`'s output, `matmul.wgsl`'s input):
/// scales, Q8_1 sums and codes of up to `blocks` 32-value blocks; grown on demand.
pub struct ActBuffers {
    pub(crate) d: wgpu::Buffer,
    /// Q8_1's sums (one per 32 values) or Q8_K's (16 per 256): 8 bytes per 32 values.
    pub(crate) s: wgpu::Buffer,
    pub(crate) q: wgpu::Buffer,
    blocks: usize,
}

/// The F16 key and value cache of one layer on the device: `[n_head_kv × capacity ×
/// head_dim]` halves each (`attn.wgsl`).
pub struct GpuLayerKv {
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    /// Positions it holds (a ring: position `p` in slot `p % capacity`).
    pub capacity: usize,
    /// Sliding window (`None`: the whole context).
    pub window: Option<usize>,
}

impl GpuLayerKv {
    /// Bytes of its keys and values.
    pub fn bytes(&self) -> u64 {
        self.k.size() + self.v.size()
    }
}

/// The shape of an attention layer on the device.
#[derive(Clone, Copy, Debug)]
pub struct AttnDims {
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Width of a head (even, at most 256).
    pub head_dim: usize,
    /// Score multiplier.
    pub scale: f32,
}

/// How rotary embedding pairs a head's dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeMode {
    /// `(x[2i], x[2i+1])`: GGUF's Llama convention.
    Adjacent,
    /// `(x[i], x[i + dim/2])`: the NeoX convention (Gemma).
    Halves,
}

/// Widest head the attention kernel takes (`MAX_HEAD` in `attn.wgsl`).
pub const MAX_HEAD_DIM: usize = 256;

/// The `(cos, sin)` table of rotary embedding for positions `0..n_pos`, `dim` rotated
/// dimensions and frequency base `base`, computed as the CPU computes its angles (f64,
/// successive products of the frequency step), rounded to f32.
pub fn rope_table(dim: usize, base: f64, n_pos: usize) -> Vec<f32> {
    let half = dim / 2;
    let step = base.powf(-2.0 / dim as f64);
    let mut t = Vec::with_capacity(n_pos * half * 2);
    for pos in 0..n_pos {
        let mut freq = 1.0f64;
        for _ in 0..half {
            let (s, c) = (pos as f64 * freq).sin_cos();
            t.push(c as f32);
            t.push(s as f32);
            freq *= step;
        }
    }
    t
}

impl Gpu {
    /// A zeroed device tensor of `len` values.
    pub fn tensor(&self, label: &str, len: usize) -> Result<GpuTensor, GpuError> {
        self.fits(label, 4 * len)?;
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (4 * len.max(1)) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(GpuTensor { buf, len })
    }

    /// A device tensor holding `data`.
    pub fn tensor_from(&self, label: &str, data: &[f32]) -> Result<GpuTensor, GpuError> {
        let t = self.tensor(label, data.len())?;
        self.write(&t, 0, data)?;
        Ok(t)
    }

    /// Writes `data` into `t` from value `at` on (ordered before the next submission).
    pub fn write(&self, t: &GpuTensor, at: usize, data: &[f32]) -> Result<(), GpuError> {
        if at + data.len() > t.len {
            return Err(GpuError::Shape(format!("{} values at {at} into a tensor of {}", data.len(), t.len)));
        }
        if !data.is_empty() {
            self.queue.write_buffer(&t.buf, (4 * at) as u64, &f32_bytes(data));
        }
        Ok(())
    }

    /// Activation buffers for up to `values` activation values of the 32-value types.
    pub fn act_buffers(&self, values: usize) -> Result<ActBuffers, GpuError> {
        let blocks = values.div_ceil(QK).max(1);
        self.fits("the activation codes", 32 * blocks)?;
        let buffer = |label: &str, bytes: usize| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        };
        Ok(ActBuffers {
            d: buffer("activation scales", 4 * blocks),
            s: buffer("activation sums", 8 * blocks),
            q: buffer("activation codes", 32 * blocks),
            blocks,
        })
    }

    /// A layer's F16 key/value cache of `capacity` positions for `n_head_kv` heads of
    /// `head_dim`.
    pub fn layer_kv(
        &self,
        n_head_kv: usize,
        head_dim: usize,
        capacity: usize,
        window: Option<usize>,
    ) -> Result<GpuLayerKv, GpuError> {
        if head_dim == 0 || !head_dim.is_multiple_of(2) || head_dim > MAX_HEAD_DIM {
            return Err(GpuError::Shape(format!(
                "heads of {head_dim} values: the GPU attention takes even widths up to {MAX_HEAD_DIM}"
            )));
        }
        let bytes = 2 * n_head_kv * head_dim * capacity.max(1);
        self.fits("a layer's key cache", bytes)?;
        let buffer = |label: &str| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes as u64,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        Ok(GpuLayerKv { k: buffer("key cache"), v: buffer("value cache"), capacity: capacity.max(1), window })
    }

    /// A new recording.
    pub fn step(&self) -> Step<'_> {
        let enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") });
        Step { gpu: self, enc }
    }
}

/// Operations recorded into one command encoder, run by [`Step::read`].
pub struct Step<'g> {
    gpu: &'g Gpu,
    enc: wgpu::CommandEncoder,
}

/// Workgroups for `threads` invocations in one grid dimension.
fn groups(what: &str, threads: usize) -> Result<u32, GpuError> {
    let g = threads.div_ceil(WORKGROUP as usize);
    if g > u16::MAX as usize {
        return Err(GpuError::Shape(format!("{what}: {threads} invocations exceed one dispatch")));
    }
    Ok(g.max(1) as u32)
}

fn check_len(what: &str, t: &GpuTensor, need: usize) -> Result<(), GpuError> {
    if t.len < need {
        return Err(GpuError::Shape(format!("{what}: a tensor of {} values where {need} are needed", t.len)));
    }
    Ok(())
}

impl Step<'_> {
    fn op(
        &mut self,
        op: Op,
        a: &GpuTensor,
        b: &GpuTensor,
        out: &GpuTensor,
        dims: [u32; 4],
        threads: usize,
    ) -> Result<(), GpuError> {
        let g = self.gpu;
        let uniform = g.uniform(&dims);
        let bind = g.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(op.entry()),
            layout: &g.ops_layout,
            entries: &[entry(0, &a.buf), entry(1, &b.buf), entry(2, &out.buf), entry(3, &uniform)],
        });
        let pass = Pass {
            pipeline: g.ops[op as usize].clone(),
            bind,
            groups: groups(op.entry(), threads)?,
            tokens: 1,
        };
        pass.record(&mut self.enc);
        Ok(())
    }

    /// `out = rms_norm(x) · w` over `rows` rows of `w.len()` values.
    pub fn rms_norm(
        &mut self,
        x: &GpuTensor,
        w: &GpuTensor,
        eps: f32,
        rows: usize,
        out: &GpuTensor,
    ) -> Result<(), GpuError> {
        let len = w.len;
        check_len("rms_norm", x, rows * len)?;
        check_len("rms_norm", out, rows * len)?;
        self.op(Op::RmsNorm, x, w, out, [len as u32, rows as u32, eps.to_bits(), 0], rows)
    }

    /// `out = silu(g) · u` over the first `len` values.
    pub fn swiglu(
        &mut self,
        g: &GpuTensor,
        u: &GpuTensor,
        len: usize,
        out: &GpuTensor,
    ) -> Result<(), GpuError> {
        for t in [g, u, out] {
            check_len("swiglu", t, len)?;
        }
        self.op(Op::Swiglu, g, u, out, [len as u32, 1, 0, 0], len)
    }

    /// `out = gelu(g) · u` over the first `len` values (GELU through half precision, as the
    /// CPU's fast path).
    pub fn gelu_gate(
        &mut self,
        g: &GpuTensor,
        u: &GpuTensor,
        len: usize,
        out: &GpuTensor,
    ) -> Result<(), GpuError> {
        for t in [g, u, out] {
            check_len("gelu_gate", t, len)?;
        }
        self.op(Op::GeluGate, g, u, out, [len as u32, 1, 0, 0], len)
    }

    /// LayerNorm of `rows` rows of `x` into `out`, `gb` holding γ then β (two rows of the
    /// width).
    pub fn layer_norm(
        &mut self,
        x: &GpuTensor,
        gb: &GpuTensor,
        eps: f32,
        rows: usize,
        out: &GpuTensor,
    ) -> Result<(), GpuError> {
        let len = gb.len / 2;
        check_len("layer_norm", x, rows * len)?;
        check_len("layer_norm", out, rows * len)?;
        self.op(Op::LayerNorm, x, gb, out, [len as u32, rows as u32, eps.to_bits(), 0], rows)
    }

    /// `y[r] += bias` for the `rows` rows of `bias.len()` values of `y`.
    pub fn add_bias(&mut self, y: &GpuTensor, bias: &GpuTensor, rows: usize) -> Result<(), GpuError> {
        check_len("add_bias", y, rows * bias.len)?;
        self.op(Op::AddBias, bias, bias, y, [bias.len as u32, rows as u32, 0, 0], rows * bias.len)
    }

    /// `out = gelu(x)` (exact, erf) over the first `len` values.
    pub fn gelu_erf(&mut self, x: &GpuTensor, len: usize, out: &GpuTensor) -> Result<(), GpuError> {
        check_len("gelu_erf", x, len)?;
        check_len("gelu_erf", out, len)?;
        self.op(Op::GeluErf, x, x, out, [len as u32, 1, 0, 0], len)
    }

    /// BERT attention: each of the `n` queries `q` (`[n × n_head·head_dim]`) over the keys
    /// `k` and values `v` (the same shape) of its own sequence, `bounds[t]` = `[start, end)`
    /// of token `t`'s sequence (a tensor of `2n` values holding u32 bits), into `out`.
    #[allow(clippy::too_many_arguments)]
    pub fn encoder_attention(
        &mut self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        bounds: &GpuTensor,
        a: &AttnDims,
        n: usize,
        out: &GpuTensor,
    ) -> Result<(), GpuError> {
        let qd = a.n_head * a.head_dim;
        for t in [q, k, v, out] {
            check_len("encoder_attention", t, n * qd)?;
        }
        check_len("encoder_attention bounds", bounds, 2 * n)?;
        if a.head_dim > MAX_HEAD_DIM || n > u16::MAX as usize || a.n_head > u16::MAX as usize {
            return Err(GpuError::Shape(format!(
                "encoder_attention: {n} tokens × {} heads of {}",
                a.n_head, a.head_dim
            )));
        }
        let p = [
            n as u32,
            0,
            a.n_head as u32,
            a.n_head as u32,
            a.head_dim as u32,
            0,
            0,
            0,
            a.scale.to_bits(),
            0,
            0,
            0,
        ];
        self.attn_pass(3, [&q.buf, &bounds.buf, &k.buf, &v.buf, &out.buf], p, (a.n_head as u32, n as u32));
        Ok(())
    }

    /// `y += x` over the first `len` values.
    pub fn add_to(&mut self, y: &GpuTensor, x: &GpuTensor, len: usize) -> Result<(), GpuError> {
        check_len("add", y, len)?;
        check_len("add", x, len)?;
        self.op(Op::AddTo, x, x, y, [len as u32, 1, 0, 0], len)
    }

    /// Copies `len` values of `src` from `from` into `dst` at `to`.
    pub fn copy(
        &mut self,
        src: &GpuTensor,
        from: usize,
        dst: &GpuTensor,
        to: usize,
        len: usize,
    ) -> Result<(), GpuError> {
        check_len("copy", src, from + len)?;
        check_len("copy", dst, to + len)?;
        self.enc.copy_buffer_to_buffer(
            &src.buf,
            (4 * from) as u64,
            &dst.buf,
            (4 * to) as u64,
            (4 * len) as u64,
        );
        Ok(())
    }

    /// The products of the weights `ws` (the same input width) with `n` rows of `x`, into
    /// `outs` (`[n × m]` each); the rows are quantized once per activation type the weights
    /// take (in `acts`, grown as needed), as `Linear::forward_shared` does on the CPU.
    pub fn linear(
        &mut self,
        ws: &[&GpuWeight],
        x: &GpuTensor,
        n: usize,
        acts: &mut ActBuffers,
        outs: &[&GpuTensor],
    ) -> Result<(), GpuError> {
        let Some(k) = ws.first().map(|w| w.k) else { return Ok(()) };
        check_len("linear input", x, n * k)?;
        if acts.blocks * QK < n * k {
            *acts = self.gpu.act_buffers(n * k)?;
        }
        let mut quantized: Option<ActKind> = None;
        for (w, out) in ws.iter().zip(outs) {
            if w.k != k {
                return Err(GpuError::Shape(format!("linear: input widths {k} and {}", w.k)));
            }
            check_len("linear output", out, n * w.m)?;
            self.gpu.check_dispatch(w, n)?;
            match ActKind::of(w.dtype) {
                Some(kind) => {
                    if quantized != Some(kind) {
                        let pass = self.gpu.quant_pass(&x.buf, n * k, kind, acts)?;
                        pass.record(&mut self.enc);
                        quantized = Some(kind);
                    }
                    self.product(w, [&acts.d, &acts.s, &acts.q], n, out);
                }
                None => self.product(w, [&acts.d, &acts.s, &x.buf], n, out),
            }
        }
        Ok(())
    }

    fn product(&mut self, w: &GpuWeight, acts: [&wgpu::Buffer; 3], n: usize, out: &GpuTensor) {
        for pass in self.gpu.product_passes(w, acts, n, &out.buf) {
            pass.record(&mut self.enc);
        }
    }

    fn attn_pass(&mut self, entry_point: usize, bufs: [&wgpu::Buffer; 5], p: [u32; 12], grid: (u32, u32)) {
        let g = self.gpu;
        let bytes: Vec<u8> = p.iter().flat_map(|v| v.to_le_bytes()).collect();
        let uniform = g.uniform_bytes(&bytes);
        let bind = g.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("attention"),
            layout: &g.attn_layout,
            entries: &[
                entry(0, bufs[0]),
                entry(1, bufs[1]),
                entry(2, bufs[2]),
                entry(3, bufs[3]),
                entry(4, bufs[4]),
                entry(5, &uniform),
            ],
        });
        Pass { pipeline: g.attn[entry_point].clone(), bind, groups: grid.0, tokens: grid.1 }
            .record(&mut self.enc);
    }

    /// Rotates `n` rows of `heads` heads of `head_dim` values of `x` in place, the rows at
    /// positions `pos0..`, with `table` from [`rope_table`] (`dim` rotated dimensions).
    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        &mut self,
        x: &GpuTensor,
        table: &GpuTensor,
        mode: RopeMode,
        dim: usize,
        heads: usize,
        head_dim: usize,
        pos0: usize,
        n: usize,
    ) -> Result<(), GpuError> {
        check_len("rope", x, n * heads * head_dim)?;
        check_len("rope table", table, (pos0 + n) * dim)?;
        if dim == 0 || dim > head_dim || !dim.is_multiple_of(2) {
            return Err(GpuError::Shape(format!("rope: {dim} rotated dimensions of heads of {head_dim}")));
        }
        let threads = n * heads * dim / 2;
        let mode = u32::from(mode == RopeMode::Halves);
        let p = [n as u32, pos0 as u32, 0, 0, head_dim as u32, dim as u32, 0, 0, 0, mode, heads as u32, 0];
        let [d0, d1] = &self.gpu.dummy;
        self.attn_pass(0, [&table.buf, &table.buf, d0, d1, &x.buf], p, (groups("rope", threads)?, 1));
        Ok(())
    }

    /// Stores `n` rows of keys `k` and values `v` (`[n × n_head_kv·head_dim]`) at positions
    /// `pos0..` of `kv`.
    pub fn kv_store(
        &mut self,
        kv: &GpuLayerKv,
        k: &GpuTensor,
        v: &GpuTensor,
        a: &AttnDims,
        pos0: usize,
        n: usize,
    ) -> Result<(), GpuError> {
        let kvd = a.n_head_kv * a.head_dim;
        check_len("kv_store keys", k, n * kvd)?;
        check_len("kv_store values", v, n * kvd)?;
        let threads = n * kvd / 2;
        let p = self.attn_params(a, kv, pos0, n);
        let dummy = &self.gpu.dummy[0];
        self.attn_pass(1, [&k.buf, &v.buf, &kv.k, &kv.v, dummy], p, (groups("kv_store", threads)?, 1));
        Ok(())
    }

    fn attn_params(&self, a: &AttnDims, kv: &GpuLayerKv, pos0: usize, n: usize) -> [u32; 12] {
        [
            n as u32,
            pos0 as u32,
            a.n_head as u32,
            a.n_head_kv as u32,
            a.head_dim as u32,
            0,
            kv.capacity as u32,
            kv.window.unwrap_or(0) as u32,
            a.scale.to_bits(),
            0,
            0,
            0,
        ]
    }

    /// Attention of `n` queries `q` (`[n × n_head·head_dim]`) at positions `pos0..` against
    /// `kv` (which holds their keys and values already), into `out`.
    pub fn attention(
        &mut self,
        kv: &GpuLayerKv,
        q: &GpuTensor,
        a: &AttnDims,
        pos0: usize,
        n: usize,
        out: &GpuTensor,
    ) -> Result<(), GpuError> {
        let qd = a.n_head * a.head_dim;
        check_len("attention queries", q, n * qd)?;
        check_len("attention output", out, n * qd)?;
        if a.n_head_kv == 0 || !a.n_head.is_multiple_of(a.n_head_kv) || a.head_dim > MAX_HEAD_DIM {
            return Err(GpuError::Shape(format!(
                "attention: {} heads over {} KV heads of {}",
                a.n_head, a.n_head_kv, a.head_dim
            )));
        }
        if n > kv.capacity || (kv.window.is_none() && pos0 + n > kv.capacity) {
            return Err(GpuError::Shape(format!(
                "attention: positions {pos0}..{} in a cache of {}",
                pos0 + n,
                kv.capacity
            )));
        }
        if n > u16::MAX as usize || a.n_head > u16::MAX as usize {
            return Err(GpuError::Shape(format!(
                "attention: {n} tokens × {} heads exceed one dispatch",
                a.n_head
            )));
        }
        let p = self.attn_params(a, kv, pos0, n);
        self.attn_pass(2, [&q.buf, &q.buf, &kv.k, &kv.v, &out.buf], p, (a.n_head as u32, n as u32));
        Ok(())
    }

    /// Runs everything recorded and reads `len` values of `t` from value `from` on.
    pub fn read(mut self, t: &GpuTensor, from: usize, len: usize) -> Result<Vec<f32>, GpuError> {
        check_len("read", t, from + len)?;
        let staging = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("result"),
            size: (4 * len.max(1)) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.enc.copy_buffer_to_buffer(&t.buf, (4 * from) as u64, &staging, 0, (4 * len) as u64);
        let [v] = self.gpu.read_back(self.enc, [&staging])?;
        Ok(v[..4 * len].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }
}
