//! Structured pruning: remove whole feed-forward channels, attention heads or blocks, giving a
//! smaller *dense* model that every engine runs faster without sparse kernels.
//!
//! Importance comes from one layer-wise calibration pass ([`structure_stats`]):
//!
//! - **FFN channel** `c` of block `l`: `‖x_c‖₂ · ‖W_down[:, c]‖₂` — the norm of the channel's
//!   activation (the input of `ffn_down`) over the calibration tokens times the norm of the
//!   column it writes to the residual stream with (activation norm × weight norm).
//! - **Query head** `h`: the same for its slice of `attn_output`'s input,
//!   `sqrt(Σ_{c∈h} ‖x_c‖²) · ‖W_o[:, h]‖_F`.
//! - **Block**: its influence `1 − cos(x_in, x_out)` averaged over tokens (Men et al., 2024,
//!   "ShortGPT"): a block that barely turns the residual stream goes first.
//!
//! Counts are uniform over blocks: llama.cpp's `llama` and `gemma3` loaders read
//! `feed_forward_length` and `attention.head_count` per layer into arrays but create every
//! block's tensors with layer 0's value (`LLAMA_LOAD_LOCALS` in `llama-model.h`), so a file
//! with per-layer counts would not load there. FFN widths are kept at multiples of 32 (the
//! quantization block of the 32-value types); heads are removed evenly from every key/value
//! group so grouped-query attention keeps its shape (a BERT head, which has its own keys and
//! values, is removed with them; its file then carries `bert.attention.key_length`). Blocks cannot be removed from Gemma 3,
//! whose local/global attention pattern is fixed by block index.

use std::borrow::Cow;
use std::sync::Arc;

use edgellm_core::DType;
use edgellm_formats::Value;
use edgellm_models::linear::set_input_observer;
use edgellm_models::LanguageModel;

use crate::calib::{Calibration, Collector};
use crate::source::{ModelSource, SourceTensor};
use crate::CompressError;

/// What structured pruning removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structure {
    /// Query heads (with their slices of `attn_q` and `attn_output`; a BERT's with their keys
    /// and values too).
    Heads,
    /// Feed-forward channels (rows of `ffn_gate`/`ffn_up`, columns of `ffn_down`).
    Ffn,
    /// Whole blocks.
    Layers,
}

impl Structure {
    /// Parses `heads`, `ffn` or `layers`.
    pub fn parse(s: &str) -> Result<Structure, CompressError> {
        match s.to_ascii_lowercase().as_str() {
            "heads" => Ok(Structure::Heads),
            "ffn" => Ok(Structure::Ffn),
            "layers" => Ok(Structure::Layers),
            _ => Err(CompressError::BadPrune(format!("--structured {s:?}: use heads, ffn or layers"))),
        }
    }

    /// The name.
    pub fn name(self) -> &'static str {
        match self {
            Structure::Heads => "heads",
            Structure::Ffn => "ffn",
            Structure::Layers => "layers",
        }
    }
}

/// Calibration statistics for structured pruning.
#[derive(Debug)]
pub struct StructureStats {
    /// Input sums of squares of every block weight.
    pub calibration: Calibration,
    /// Per block, the mean of `1 − cos(x_in, x_out)` over the calibration tokens.
    pub influence: Vec<f64>,
}

/// One layer-wise pass of `model` over `chunks` collecting [`StructureStats`].
pub fn structure_stats(
    model: &dyn LanguageModel,
    chunks: &[Vec<u32>],
) -> Result<StructureStats, CompressError> {
    if chunks.is_empty() || chunks.iter().any(|c| c.is_empty()) {
        return Err(CompressError::NeedsCalibration {
            method: "structured pruning",
            what: "calibration text: pass --calib TEXT (e.g. data/wikitext-2/wiki.valid.tokens)",
        });
    }
    let fwd = |e: edgellm_models::ModelError| CompressError::BadTensor {
        tensor: "(calibration forward)".into(),
        why: e.to_string(),
    };
    let n_layer = model.info().n_layer;
    let d = model.info().n_embd;
    let ctx = chunks.iter().map(|c| c.len()).max().unwrap_or(1);
    let collector = Arc::new(Collector::new("blk.", false, 0));
    set_input_observer(Some(collector.clone()));
    let mut influence = vec![0.0f64; n_layer];
    let mut tokens = 0usize;
    let res = (|| -> Result<(), CompressError> {
        let mut cache = model.new_cache(ctx);
        for c in chunks {
            let mut x = model.embed(c).map_err(fwd)?;
            let mut prev = x.clone();
            for (l, inf) in influence.iter_mut().enumerate() {
                model.forward_block(l, &mut x, &mut cache).map_err(fwd)?;
                for (a, b) in prev.chunks_exact(d).zip(x.chunks_exact(d)) {
                    *inf += 1.0 - cosine(a, b);
                }
                prev.copy_from_slice(&x);
            }
            tokens += c.len();
        }
        Ok(())
    })();
    set_input_observer(None);
    res?;
    influence.iter_mut().for_each(|v| *v /= tokens.max(1) as f64);
    Ok(StructureStats { calibration: collector.take(chunks.len(), ctx), influence })
}

/// [`structure_stats`] for a BERT encoder in the `bert` GGUF layout, over token sequences
/// (`[CLS] … [SEP]`); block influence is not measured (zeros).
pub fn structure_stats_encoder(
    src: &ModelSource,
    seqs: &[Vec<u32>],
) -> Result<StructureStats, CompressError> {
    if seqs.is_empty() || seqs.iter().any(|s| s.is_empty()) {
        return Err(CompressError::NeedsCalibration {
            method: "structured pruning",
            what: "calibration sentences: pass --calib TEXT (e.g. data/wikitext-2/wiki.valid.tokens)",
        });
    }
    let file = src.to_file()?;
    let bert = edgellm_models::bert::Bert::from_gguf(&file)
        .map_err(|e| CompressError::BadPrune(format!("loading the encoder for calibration: {e}")))?;
    let collector = Arc::new(Collector::new("blk.", false, 0));
    set_input_observer(Some(collector.clone()));
    let res = seqs.chunks(32).try_for_each(|batch| {
        let refs: Vec<&[u32]> = batch.iter().map(|s| s.as_slice()).collect();
        bert.forward_sequences(&refs).map(|_| ())
    });
    set_input_observer(None);
    res.map_err(|e| CompressError::BadPrune(format!("calibration forward: {e}")))?;
    let ctx = seqs.iter().map(|s| s.len()).max().unwrap_or(1);
    Ok(StructureStats {
        calibration: collector.take(seqs.len(), ctx),
        influence: vec![0.0; bert.config.num_hidden_layers],
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    if aa == 0.0 || bb == 0.0 {
        return 1.0;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

/// What to keep: per block the FFN channels and query heads kept (ascending), and the blocks
/// kept (ascending).
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// Per block, the kept FFN channels.
    pub ffn: Vec<Vec<usize>>,
    /// Per block, the kept query heads.
    pub heads: Vec<Vec<usize>>,
    /// Kept blocks.
    pub layers: Vec<usize>,
}

/// The shape facts structured pruning needs, from metadata.
#[derive(Clone, Debug)]
pub struct Shape {
    /// `general.architecture`.
    pub arch: String,
    /// Blocks.
    pub n_layer: usize,
    /// Residual width.
    pub n_embd: usize,
    /// Feed-forward width.
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Per-head width.
    pub head_dim: usize,
}

impl Shape {
    /// Reads the shape of a llama or gemma3 model.
    pub fn of(src: &ModelSource) -> Result<Shape, CompressError> {
        let arch = src.get("general.architecture").and_then(|v| v.as_str()).unwrap_or("").to_string();
        if !matches!(arch.as_str(), "llama" | "gemma3" | "bert") {
            return Err(CompressError::BadPrune(format!(
                "structured pruning supports llama, gemma3 and bert models, not {arch:?}"
            )));
        }
        let num = |k: &str| -> Result<usize, CompressError> {
            src.get(&format!("{arch}.{k}")).and_then(|v| v.as_u64()).map(|v| v as usize).ok_or_else(|| {
                CompressError::BadPrune(format!("{arch}.{k} is missing or not a single number"))
            })
        };
        let n_embd = num("embedding_length")?;
        let n_head = num("attention.head_count")?;
        let n_head_kv = num("attention.head_count_kv").unwrap_or(n_head);
        let head_dim = num("attention.key_length").unwrap_or(n_embd / n_head.max(1));
        if n_head == 0 || n_head_kv == 0 || n_head % n_head_kv != 0 {
            return Err(CompressError::BadPrune(format!("{n_head} heads over {n_head_kv} KV heads")));
        }
        Ok(Shape {
            n_layer: num("block_count")?,
            n_embd,
            n_ff: num("feed_forward_length")?,
            n_head,
            n_head_kv,
            head_dim,
            arch,
        })
    }

    /// Everything kept.
    pub fn full(&self) -> Selection {
        Selection {
            ffn: vec![(0..self.n_ff).collect(); self.n_layer],
            heads: vec![(0..self.n_head).collect(); self.n_layer],
            layers: (0..self.n_layer).collect(),
        }
    }
}

/// Indices of the `keep` highest `scores`, ascending (ties: the lower index).
fn top(scores: &[f64], keep: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx.truncate(keep);
    idx.sort_unstable();
    idx
}

fn tensor<'s>(src: &'s ModelSource, name: &str) -> Result<&'s SourceTensor<'s>, CompressError> {
    src.tensors
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| CompressError::BadPrune(format!("tensor {name} is missing")))
}

/// Norms of the columns of a `[rows × k]` matrix.
fn column_norms(w: &[f32], k: usize) -> Vec<f64> {
    let mut n = vec![0.0f64; k];
    for row in w.chunks_exact(k) {
        for (s, &v) in n.iter_mut().zip(row) {
            *s += v as f64 * v as f64;
        }
    }
    n
}

/// Chooses what to remove: `ratio` of the FFN channels, query heads or blocks, the least
/// important first (see the module doc).
pub fn select(
    src: &ModelSource,
    stats: &StructureStats,
    what: Structure,
    ratio: f64,
) -> Result<Selection, CompressError> {
    let s = Shape::of(src)?;
    if !(0.0..1.0).contains(&ratio) || ratio == 0.0 {
        return Err(CompressError::BadPrune(format!("--ratio {ratio} is outside (0, 1)")));
    }
    let mut sel = s.full();
    let sums = |name: &str| -> Result<Vec<f64>, CompressError> {
        let e = stats.calibration.imatrix.entries.get(name).ok_or_else(|| {
            CompressError::BadPrune(format!("no calibration inputs were recorded for {name}"))
        })?;
        Ok(e.sums.iter().map(|&v| v as f64).collect())
    };
    match what {
        Structure::Ffn => {
            let keep = ((s.n_ff as f64 * (1.0 - ratio) / 32.0).round() as usize * 32).min(s.n_ff);
            if keep == 0 {
                return Err(CompressError::BadPrune(format!(
                    "--ratio {ratio} removes every FFN channel of {} (at least 32 stay)",
                    s.n_ff
                )));
            }
            for (l, kept) in sel.ffn.iter_mut().enumerate() {
                let name = format!("blk.{l}.ffn_down.weight");
                let x = sums(&name)?;
                let w = column_norms(&tensor(src, &name)?.to_f32()?, s.n_ff);
                let score: Vec<f64> = x.iter().zip(&w).map(|(a, b)| (a * b).sqrt()).collect();
                *kept = top(&score, keep);
            }
        }
        Structure::Layers if s.arch == "bert" => {
            return Err(CompressError::BadPrune(
                "--structured layers is not implemented for bert encoders (ffn and heads are)".into(),
            ));
        }
        Structure::Heads => {
            // A BERT head has its own keys and values (removed with it): one group of every
            // head. Grouped-query models lose the same number of query heads from every group.
            let (groups, per_group) =
                if s.arch == "bert" { (1, s.n_head) } else { (s.n_head_kv, s.n_head / s.n_head_kv) };
            let keep = per_group - (per_group as f64 * ratio).round() as usize;
            if keep == 0 {
                return Err(CompressError::BadPrune(format!(
                    "--ratio {ratio} removes every query head ({per_group} per key/value group)"
                )));
            }
            for (l, kept) in sel.heads.iter_mut().enumerate() {
                let name = format!("blk.{l}.attn_output.weight");
                let x = sums(&name)?;
                let w = column_norms(&tensor(src, &name)?.to_f32()?, s.n_head * s.head_dim);
                let hd = s.head_dim;
                let score: Vec<f64> = (0..s.n_head)
                    .map(|h| {
                        let xs: f64 = x[h * hd..(h + 1) * hd].iter().sum();
                        let ws: f64 = w[h * hd..(h + 1) * hd].iter().sum();
                        (xs * ws).sqrt()
                    })
                    .collect();
                // Query head h belongs to group h / per_group.
                let mut k = Vec::new();
                for g in 0..groups {
                    let heads = g * per_group..(g + 1) * per_group;
                    k.extend(top(&score[heads.clone()], keep).into_iter().map(|i| i + heads.start));
                }
                *kept = k;
            }
        }
        Structure::Layers => {
            if s.arch == "gemma3" {
                return Err(CompressError::BadPrune(
                    "gemma3 blocks cannot be removed: its local/global attention pattern is fixed by block index".into(),
                ));
            }
            let keep = s.n_layer - (s.n_layer as f64 * ratio).round() as usize;
            if keep == 0 {
                return Err(CompressError::BadPrune(format!("--ratio {ratio} removes every block")));
            }
            sel.layers = top(&stats.influence, keep);
        }
    }
    Ok(sel)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Rows `rows` of a `[_ × k]` matrix.
fn take_rows(w: &[f32], k: usize, rows: impl Iterator<Item = usize>) -> Vec<f32> {
    rows.flat_map(|r| w[r * k..(r + 1) * k].iter().copied()).collect()
}

/// Columns `cols` of a `[_ × k]` matrix.
fn take_cols(w: &[f32], k: usize, cols: &[usize]) -> Vec<f32> {
    w.chunks_exact(k).flat_map(|row| cols.iter().map(move |&c| row[c])).collect()
}

/// Rows of query heads `heads`, `head_dim` rows each.
fn head_rows(heads: &[usize], hd: usize) -> Vec<usize> {
    heads.iter().flat_map(|&h| h * hd..(h + 1) * hd).collect()
}

/// The model with `sel` applied: a smaller dense model (tensors F32 where they changed), or
/// with `masked` the same shapes with the removed parts zeroed (the reference the smaller
/// model must compute like: removed heads' `attn_output` columns, removed channels' rows and
/// columns, removed blocks' `attn_output` and `ffn_down` all zero).
pub fn apply<'a>(
    src: &'a ModelSource<'a>,
    sel: &Selection,
    masked: bool,
) -> Result<ModelSource<'a>, CompressError> {
    let s = Shape::of(src)?;
    let (hd, nh) = (s.head_dim, s.n_head);
    let bert = s.arch == "bert";
    let n_ff_new = sel.ffn.first().map_or(s.n_ff, |v| v.len());
    let n_head_new = sel.heads.first().map_or(nh, |v| v.len());
    if sel.ffn.iter().any(|v| v.len() != n_ff_new) || sel.heads.iter().any(|v| v.len() != n_head_new) {
        return Err(CompressError::BadPrune("per-block counts differ (llama.cpp needs them uniform)".into()));
    }
    let mut out = ModelSource { metadata: src.metadata.clone(), tensors: Vec::new() };
    let set = |m: &mut Vec<(String, Value)>, k: String, v: Value| {
        if let Some(slot) = m.iter_mut().find(|(key, _)| *key == k) {
            slot.1 = v;
        } else {
            m.push((k, v));
        }
    };
    if !masked {
        let a = &s.arch;
        set(&mut out.metadata, format!("{a}.feed_forward_length"), Value::U32(n_ff_new as u32));
        set(&mut out.metadata, format!("{a}.attention.head_count"), Value::U32(n_head_new as u32));
        if src.get(&format!("{a}.attention.head_count_kv")).is_some() {
            set(&mut out.metadata, format!("{a}.attention.head_count_kv"), Value::U32(s.n_head_kv as u32));
        }
        if n_head_new != nh {
            // The per-head width no longer follows from the residual width.
            set(&mut out.metadata, format!("{a}.attention.key_length"), Value::U32(hd as u32));
            set(&mut out.metadata, format!("{a}.attention.value_length"), Value::U32(hd as u32));
        }
        set(&mut out.metadata, format!("{a}.block_count"), Value::U32(sel.layers.len() as u32));
    }
    for t in &src.tensors {
        let Some((l, role)) = block_any(&t.name) else {
            out.tensors.push(t.clone());
            continue;
        };
        let new_l = match sel.layers.iter().position(|&k| k == l) {
            Some(p) => p,
            None if masked => l,
            None => continue,
        };
        let name = if masked {
            t.name.clone()
        } else {
            t.name.replacen(&format!("blk.{l}."), &format!("blk.{new_l}."), 1)
        };
        let dropped_block = !sel.layers.contains(&l);
        let (Some(ffn), Some(heads)) = (sel.ffn.get(l), sel.heads.get(l)) else {
            return Err(CompressError::BadPrune(format!(
                "tensor {} names block {l}, but the model has {} blocks",
                t.name, s.n_layer
            )));
        };
        let full_ffn = ffn.len() == s.n_ff;
        let full_heads = heads.len() == nh;
        let changed = |w: Vec<f32>, dims: Vec<u64>| SourceTensor {
            name: name.clone(),
            dims,
            dtype: DType::F32,
            data: Cow::Owned(f32_bytes(&w)),
        };
        let role = role.strip_suffix(".weight").unwrap_or(role);
        let k = t.row_len();
        let new = match role {
            "ffn_gate" | "ffn_up" if !full_ffn => {
                let w = t.to_f32()?;
                if masked {
                    let mut w = w;
                    for r in (0..s.n_ff).filter(|r| !ffn.contains(r)) {
                        w[r * k..(r + 1) * k].fill(0.0);
                    }
                    changed(w, t.dims.clone())
                } else {
                    changed(take_rows(&w, k, ffn.iter().copied()), vec![k as u64, ffn.len() as u64])
                }
            }
            "ffn_up.bias" if !full_ffn => {
                let w = t.to_f32()?;
                if masked {
                    let w: Vec<f32> =
                        w.iter().enumerate().map(|(c, &v)| if ffn.contains(&c) { v } else { 0.0 }).collect();
                    changed(w, t.dims.clone())
                } else {
                    let w: Vec<f32> = ffn.iter().map(|&c| w[c]).collect();
                    changed(w, vec![ffn.len() as u64])
                }
            }
            "ffn_down" if !full_ffn || (masked && dropped_block) => {
                let mut w = t.to_f32()?;
                if masked {
                    for row in w.chunks_exact_mut(k) {
                        for (c, v) in row.iter_mut().enumerate() {
                            if dropped_block || !ffn.contains(&c) {
                                *v = 0.0;
                            }
                        }
                    }
                    changed(w, t.dims.clone())
                } else {
                    changed(take_cols(&w, k, ffn), vec![ffn.len() as u64, t.dims[1]])
                }
            }
            "attn_q" if !full_heads && !masked => {
                let w = t.to_f32()?;
                let rows = head_rows(heads, hd);
                changed(take_rows(&w, k, rows.iter().copied()), vec![k as u64, rows.len() as u64])
            }
            // A BERT head's keys and values go with it (grouped-query models keep theirs).
            "attn_k" | "attn_v" if bert && !full_heads && !masked => {
                let w = t.to_f32()?;
                let rows = head_rows(heads, hd);
                changed(take_rows(&w, k, rows.iter().copied()), vec![k as u64, rows.len() as u64])
            }
            "attn_q.bias" | "attn_k.bias" | "attn_v.bias"
                if !full_heads && !masked && (bert || role == "attn_q.bias") =>
            {
                let w = t.to_f32()?;
                let rows = head_rows(heads, hd);
                changed(rows.iter().map(|&r| w[r]).collect(), vec![rows.len() as u64])
            }
            "attn_output" if !full_heads || (masked && dropped_block) => {
                let mut w = t.to_f32()?;
                let cols = head_rows(heads, hd);
                if masked {
                    for row in w.chunks_exact_mut(k) {
                        for (c, v) in row.iter_mut().enumerate() {
                            if dropped_block || !cols.contains(&c) {
                                *v = 0.0;
                            }
                        }
                    }
                    changed(w, t.dims.clone())
                } else {
                    changed(take_cols(&w, k, &cols), vec![cols.len() as u64, t.dims[1]])
                }
            }
            _ => SourceTensor { name: name.clone(), ..t.clone() },
        };
        out.tensors.push(new);
    }
    out.validate()?;
    Ok(out)
}

/// `blk.{l}.{rest}` → `(l, rest)` for any block tensor (norms included).
fn block_any(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let (l, role) = rest.split_once('.')?;
    Some((l.parse().ok()?, role))
}
