//! A BERT encoder (MiniLM) on the device: the CPU model's forward (`edgellm_models::bert`)
//! over a batch of unpadded sequences recorded into one command buffer — the embeddings
//! (word + position + token type, looked up and summed on the host), LayerNorm, and per layer
//! Q/K/V with biases, attention within each sequence, the output projection, residual +
//! LayerNorm, the feed-forward with exact GELU, residual + LayerNorm — and the last hidden
//! states read back once (pooling is the caller's).

use std::sync::Arc;

use edgellm_models::bert::{Activation, BertConfig, BertEncoder, BertError, BertWeights};
use edgellm_models::{Linear, ModelError};

use crate::{AttnDims, Gpu, GpuError, GpuTensor, GpuWeight};

struct Dense {
    w: GpuWeight,
    bias: GpuTensor,
}

struct Layer {
    query: Dense,
    key: Dense,
    value: Dense,
    attn_out: Dense,
    /// γ then β.
    attn_norm: GpuTensor,
    inter: Dense,
    out: Dense,
    out_norm: GpuTensor,
}

/// A BERT encoder whose forward runs on a [`Gpu`].
pub struct GpuBert {
    gpu: Arc<Gpu>,
    config: BertConfig,
    word: Linear,
    position: Linear,
    token_type: Linear,
    emb_norm: GpuTensor,
    layers: Vec<Layer>,
}

fn dev(e: GpuError) -> BertError {
    BertError::Model(ModelError::Device(e.to_string()))
}

impl GpuBert {
    /// Loads the encoder described by `config` from `w` (a safetensors directory's or a `bert`
    /// GGUF file's weights) onto `gpu`, with the CPU model's checks.
    pub fn load(gpu: Arc<Gpu>, config: BertConfig, w: &dyn BertWeights) -> Result<GpuBert, BertError> {
        config.validate()?;
        if config.hidden_act != Activation::Gelu {
            return Err(BertError::Model(ModelError::Device(format!(
                "the GPU encoder runs exact GELU; this model's activation is {:?}",
                config.hidden_act
            ))));
        }
        let (d, ff, aw) = (config.hidden_size, config.intermediate_size, config.attention_width());
        crate::decoder::check_head_dim(config.head_dim()).map_err(BertError::Model)?;
        let dense = |name: &str, n_in: usize, n_out: usize| -> Result<Dense, BertError> {
            let lin = w.matrix(&format!("{name}.weight"), n_out, n_in)?;
            if !Gpu::supports(lin.dtype) {
                return Err(dev(GpuError::Unsupported(lin.dtype)));
            }
            let weight = gpu.upload(lin.dtype, n_in, n_out, lin.bytes()).map_err(dev)?;
            let bias = gpu.tensor_from("bias", &w.vector(&format!("{name}.bias"), n_out)?).map_err(dev)?;
            Ok(Dense { w: weight, bias })
        };
        let norm = |name: &str| -> Result<GpuTensor, BertError> {
            let mut gb = w.vector(&format!("{name}.weight"), d)?;
            gb.extend(w.vector(&format!("{name}.bias"), d)?);
            gpu.tensor_from(name, &gb).map_err(dev)
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for il in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{il}");
            layers.push(Layer {
                query: dense(&format!("{p}.attention.self.query"), d, aw)?,
                key: dense(&format!("{p}.attention.self.key"), d, aw)?,
                value: dense(&format!("{p}.attention.self.value"), d, aw)?,
                attn_out: dense(&format!("{p}.attention.output.dense"), aw, d)?,
                attn_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                inter: dense(&format!("{p}.intermediate.dense"), d, ff)?,
                out: dense(&format!("{p}.output.dense"), ff, d)?,
                out_norm: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        Ok(GpuBert {
            word: w.matrix("embeddings.word_embeddings.weight", config.vocab_size, d)?,
            position: w.matrix("embeddings.position_embeddings.weight", config.max_position_embeddings, d)?,
            token_type: w.matrix("embeddings.token_type_embeddings.weight", config.type_vocab_size, d)?,
            emb_norm: norm("embeddings.LayerNorm")?,
            gpu,
            config,
            layers,
        })
    }

    /// The device it runs on.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    fn forward(&self, seqs: &[&[u32]]) -> Result<Vec<f32>, BertError> {
        let c = &self.config;
        let (d, ff, aw) = (c.hidden_size, c.intermediate_size, c.attention_width());
        let n: usize = seqs.iter().map(|s| s.len()).sum();
        if n == 0 {
            return Ok(Vec::new());
        }
        // Embeddings on the host (three table rows per token), and each token's sequence.
        let mut x = vec![0.0f32; n * d];
        let mut bounds = Vec::with_capacity(2 * n);
        let mut tmp = vec![0.0f32; d];
        let mut t = 0;
        for (s, ids) in seqs.iter().enumerate() {
            if ids.len() > c.max_position_embeddings {
                return Err(BertError::TooLong {
                    seq: s,
                    position: ids.len() - 1,
                    max: c.max_position_embeddings,
                });
            }
            let (start, end) = (t as u32, (t + ids.len()) as u32);
            for (pos, &id) in ids.iter().enumerate() {
                if id as usize >= c.vocab_size {
                    return Err(ModelError::BadToken { id, n_vocab: c.vocab_size }.into());
                }
                let xt = &mut x[t * d..(t + 1) * d];
                self.word.row_f32(id as usize, xt)?;
                self.position.row_f32(pos, &mut tmp)?;
                xt.iter_mut().zip(&tmp).for_each(|(a, b)| *a += b);
                self.token_type.row_f32(0, &mut tmp)?;
                xt.iter_mut().zip(&tmp).for_each(|(a, b)| *a += b);
                bounds.push(f32::from_bits(start));
                bounds.push(f32::from_bits(end));
                t += 1;
            }
        }
        let g = &self.gpu;
        let run = || -> Result<Vec<f32>, GpuError> {
            let t = |label: &str, len: usize| g.tensor(label, len);
            let (xe, xt) = (g.tensor_from("embeddings", &x)?, t("x", n * d)?);
            let bt = g.tensor_from("sequences", &bounds)?;
            let (q, k, v, ctx) = (t("q", n * aw)?, t("k", n * aw)?, t("v", n * aw)?, t("ctx", n * aw)?);
            let (o, h, hg, y) = (t("o", n * d)?, t("h", n * ff)?, t("gelu", n * ff)?, t("y", n * d)?);
            let mut acts = g.act_buffers(n * d.max(aw).max(ff))?;
            let a = AttnDims {
                n_head: c.num_attention_heads,
                n_head_kv: c.num_attention_heads,
                head_dim: c.head_dim(),
                scale: 1.0 / (c.head_dim() as f32).sqrt(),
            };
            let eps = c.layer_norm_eps;
            let mut r = g.step();
            r.layer_norm(&xe, &self.emb_norm, eps, n, &xt)?;
            for l in &self.layers {
                r.linear(&[&l.query.w, &l.key.w, &l.value.w], &xt, n, &mut acts, &[&q, &k, &v])?;
                for (dense, y) in [(&l.query, &q), (&l.key, &k), (&l.value, &v)] {
                    r.add_bias(y, &dense.bias, n)?;
                }
                r.encoder_attention(&q, &k, &v, &bt, &a, n, &ctx)?;
                r.linear(&[&l.attn_out.w], &ctx, n, &mut acts, &[&o])?;
                r.add_bias(&o, &l.attn_out.bias, n)?;
                r.add_to(&o, &xt, n * d)?;
                r.layer_norm(&o, &l.attn_norm, eps, n, &xt)?;
                r.linear(&[&l.inter.w], &xt, n, &mut acts, &[&h])?;
                r.add_bias(&h, &l.inter.bias, n)?;
                r.gelu_erf(&h, n * ff, &hg)?;
                r.linear(&[&l.out.w], &hg, n, &mut acts, &[&y])?;
                r.add_bias(&y, &l.out.bias, n)?;
                r.add_to(&y, &xt, n * d)?;
                r.layer_norm(&y, &l.out_norm, eps, n, &xt)?;
            }
            r.read(&xt, 0, n * d)
        };
        run().map_err(dev)
    }
}

impl BertEncoder for GpuBert {
    fn config(&self) -> &BertConfig {
        &self.config
    }

    fn forward_sequences(&self, seqs: &[&[u32]]) -> Result<Vec<f32>, BertError> {
        self.forward(seqs)
    }

    fn device(&self) -> String {
        self.gpu.adapter().to_string()
    }
}

/// The BERT encoder at `path` (a `bert` GGUF file or a sentence-transformers directory) on
/// `gpu`, read as the CPU loaders read it.
pub fn load_bert(gpu: Arc<Gpu>, path: &std::path::Path) -> Result<GpuBert, BertError> {
    use edgellm_models::bert::{GgufBert, SafetensorsBert};
    if path.is_file() {
        let f = edgellm_formats::GgufFile::open(path)?;
        return GpuBert::load(gpu, BertConfig::from_gguf(&f)?, &GgufBert::new(&f));
    }
    let config = BertConfig::from_hf(&edgellm_formats::HfConfig::open(path.join("config.json"))?)?;
    GpuBert::load(gpu, config, &SafetensorsBert::open(path.join("model.safetensors"))?)
}
