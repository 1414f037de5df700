//! Rotary embedding, the F16 KV cache and attention on the GPU (`Step::rope`, `kv_store`,
//! `attention`, `attn.wgsl`) against the CPU functions the models use
//! (`edgellm_models::nn::Rope`, `LayerCache::store` + `attention::attention` with an F16
//! cache), within the named GPU tolerances; the in-place residual add bit for bit.

use edgellm_core::tolerance::{assert_close, gpu as gtol};
use edgellm_gpu::{rope_table, AttnDims, Gpu, GpuError, RopeMode};
use edgellm_models::attention::{attention, AttnShape};
use edgellm_models::kv_cache::{KvShape, LayerCache};
use edgellm_models::nn::Rope;
use edgellm_models::KvType;

mod common;
use common::{gpu, uniform};

fn run_rope(
    gpu: &Gpu,
    x: &[f32],
    mode: RopeMode,
    dim: usize,
    heads: usize,
    hd: usize,
    pos0: usize,
) -> Vec<f32> {
    let n = x.len() / (heads * hd);
    let t = gpu.tensor_from("x", x).unwrap();
    let table = gpu.tensor_from("table", &rope_table(dim, 10000.0, pos0 + n)).unwrap();
    let mut s = gpu.step();
    s.rope(&t, &table, mode, dim, heads, hd, pos0, n).unwrap();
    s.read(&t, 0, x.len()).unwrap()
}

#[test]
fn rope_equals_the_cpu_rotation() {
    let Some(gpu) = gpu() else { return };
    // SmolLM2's queries (adjacent pairs), Gemma 3's (halves), a partial rotation.
    for (i, &(mode, heads, hd, dim, pos0, n)) in [
        (RopeMode::Adjacent, 9, 64, 64, 0, 5),
        (RopeMode::Adjacent, 3, 64, 64, 4000, 2),
        (RopeMode::Halves, 4, 256, 256, 17, 3),
        (RopeMode::Halves, 2, 64, 32, 9, 2),
        (RopeMode::Adjacent, 2, 64, 16, 100, 1),
    ]
    .iter()
    .enumerate()
    {
        let x = uniform(n * heads * hd, 60 + i as u64, 2.0);
        let got = run_rope(&gpu, &x, mode, dim, heads, hd, pos0);
        let rope = Rope { dim, base: 10000.0 };
        let mut want = x.clone();
        for (t, row) in want.chunks_exact_mut(heads * hd).enumerate() {
            match mode {
                RopeMode::Adjacent => rope.apply_adjacent(row, hd, pos0 + t),
                RopeMode::Halves => rope.apply_halves(row, hd, pos0 + t),
            }
        }
        assert_close(&format!("rope {mode:?} {heads}×{hd} dim {dim} at {pos0}"), &got, &want, gtol::ROPE);
    }
}

/// Attention of `n` queries at `pos0..` after positions `0..pos0` were stored, on both sides.
fn check_attention(
    gpu: &Gpu,
    a: AttnDims,
    capacity: usize,
    window: Option<usize>,
    pos0: usize,
    n: usize,
    seed: u64,
) {
    let (qd, kvd) = (a.n_head * a.head_dim, a.n_head_kv * a.head_dim);
    let total = pos0 + n;
    let k = uniform(total * kvd, seed, 1.0);
    let v = uniform(total * kvd, seed + 1, 1.0);
    let q = uniform(n * qd, seed + 2, 3.0);
    // CPU: the layer cache and the attention function of the models.
    let shape = KvShape { kv_type: KvType::F16, head_dim: a.head_dim, n_head_kv: a.n_head_kv };
    let mut lc = LayerCache::new(shape, capacity, window);
    // GPU: the same positions stored through kv_store, in steps no longer than the ring.
    let kv = gpu.layer_kv(a.n_head_kv, a.head_dim, capacity, window).unwrap();
    let (kt, vt) = (gpu.tensor("k", capacity * kvd).unwrap(), gpu.tensor("v", capacity * kvd).unwrap());
    let mut p = 0;
    while p < total {
        let m = (total - p).min(if p < pos0 { (pos0 - p).min(capacity) } else { n });
        let (ks, vs) = (&k[p * kvd..(p + m) * kvd], &v[p * kvd..(p + m) * kvd]);
        lc.store(p, ks, vs);
        gpu.write(&kt, 0, ks).unwrap();
        gpu.write(&vt, 0, vs).unwrap();
        let mut s = gpu.step();
        s.kv_store(&kv, &kt, &vt, &a, p, m).unwrap();
        if p >= pos0 {
            let (qt, out) = (gpu.tensor_from("q", &q).unwrap(), gpu.tensor("out", n * qd).unwrap());
            s.attention(&kv, &qt, &a, pos0, n, &out).unwrap();
            let got = s.read(&out, 0, n * qd).unwrap();
            let shape =
                AttnShape { n_head: a.n_head, n_head_kv: a.n_head_kv, head_dim: a.head_dim, scale: a.scale };
            let mut want = vec![0.0f32; n * qd];
            attention(&shape, &q, &lc, pos0, n, &mut want);
            let name = format!(
                "attention {}/{} heads of {}, positions {pos0}..{total}, ring {capacity}, window {window:?}",
                a.n_head, a.n_head_kv, a.head_dim
            );
            assert_close(&name, &got, &want, gtol::ATTENTION);
            return;
        }
        s.read(&kt, 0, 1).unwrap();
        p += m;
    }
}

#[test]
fn attention_over_the_device_cache_equals_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let dims = |n_head, n_head_kv, head_dim: usize| AttnDims {
        n_head,
        n_head_kv,
        head_dim,
        scale: 1.0 / (head_dim as f32).sqrt(),
    };
    // SmolLM2: a prompt, then decoding far into the context (spans over one workgroup's 64 keys).
    check_attention(&gpu, dims(9, 3, 64), 512, None, 0, 7, 1);
    check_attention(&gpu, dims(9, 3, 64), 512, None, 300, 1, 2);
    check_attention(&gpu, dims(9, 3, 64), 512, None, 130, 4, 3);
    // Gemma 3 270M: one KV head of 256; a sliding-window layer's ring (window 16 + a batch of 4).
    check_attention(&gpu, dims(4, 1, 256), 128, None, 70, 3, 4);
    check_attention(&gpu, dims(4, 1, 256), 20, Some(16), 57, 4, 5);
    check_attention(&gpu, dims(2, 2, 32), 20, Some(16), 3, 1, 6);
}

#[test]
fn residual_add_in_place_is_exact_and_shapes_are_checked() {
    let Some(gpu) = gpu() else { return };
    let (y, x) = (uniform(1000, 70, 50.0), uniform(1000, 71, 1e-2));
    let (yt, xt) = (gpu.tensor_from("y", &y).unwrap(), gpu.tensor_from("x", &x).unwrap());
    let mut s = gpu.step();
    s.add_to(&yt, &xt, 1000).unwrap();
    let got = s.read(&yt, 0, 1000).unwrap();
    for ((g, a), b) in got.iter().zip(&y).zip(&x) {
        assert_eq!(g.to_bits(), (a + b).to_bits());
    }
    let mut s = gpu.step();
    assert!(matches!(s.add_to(&yt, &xt, 1001), Err(GpuError::Shape(_))));
    let table = gpu.tensor_from("table", &rope_table(64, 10000.0, 4)).unwrap();
    // The table covers positions 0..4: a row at position 4 is refused.
    assert!(matches!(s.rope(&yt, &table, RopeMode::Adjacent, 64, 1, 64, 4, 1), Err(GpuError::Shape(_))));
    assert!(matches!(gpu.layer_kv(1, 512, 8, None), Err(GpuError::Shape(_))));
    assert!(matches!(gpu.layer_kv(1, 63, 8, None), Err(GpuError::Shape(_))));
    let kv = gpu.layer_kv(1, 64, 8, None).unwrap();
    let a = AttnDims { n_head: 2, n_head_kv: 1, head_dim: 64, scale: 0.125 };
    let q = gpu.tensor("q", 2 * 128).unwrap();
    // Positions beyond a full-context cache.
    assert!(matches!(s.attention(&kv, &q, &a, 7, 2, &q), Err(GpuError::Shape(_))));
}
