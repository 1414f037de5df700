//! Recovery training of a pruned sentence encoder by distillation from its dense original.
//!
//! The teacher's sentence vectors are computed once, by the fast runtime
//! ([`edgellm_models::bert::Bert`]); the student ([`TrainableBert`], its pruning masks held) is
//! trained with AdamW to reproduce them on unlabeled sentences. The loss of a batch is
//!
//! `mean(1 − cos(ŝ, t̂)) + λ · mean((s − t)²)`
//!
//! with `s`, `t` the student's and teacher's mean-pooled vectors and `ŝ`, `t̂` the same
//! L2-normalized (the sentence embeddings of a normalizing model). The squared error is taken
//! before normalization: on unit vectors it would be `(1 − cos)·2/d`, the first term again,
//! while before it also keeps the student's token states on the teacher's scale.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::ParamsAdamW;
use edgellm_models::bert::Bert;

use crate::data::{epoch_batches, read_sentences, SplitMix64};
use crate::encoder::{l2_normalize, mean_pool, BertFile, ParamKind, TrainableBert};
use crate::optim::{LrSchedule, MaskedAdamW};
use crate::TrainError;

/// The teacher's vectors for a list of sentences.
#[derive(Clone, Debug, PartialEq)]
pub struct Targets {
    /// Width of a vector.
    pub dim: usize,
    /// Mean-pooled vectors, `[n × dim]`.
    pub pooled: Vec<f32>,
    /// The same, L2-normalized, `[n × dim]`.
    pub embedding: Vec<f32>,
    /// The last hidden state of every token, sentences concatenated (`[Σ len × dim]`), when
    /// kept for a token-level loss; empty otherwise.
    pub tokens: Vec<f32>,
    /// Where each sentence's rows of `tokens` start (`n + 1` offsets), when kept.
    pub token_offsets: Vec<usize>,
}

impl Targets {
    /// Number of sentences.
    pub fn len(&self) -> usize {
        self.pooled.len() / self.dim.max(1)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The token states of sentences `idx` padded to `seq_len` (zeros past each sentence),
    /// `[idx.len() × seq_len × dim]` in `dtype`; `None` when not kept.
    fn token_rows(&self, idx: &[usize], seq_len: usize, dtype: DType) -> Result<Option<Tensor>, TrainError> {
        if self.token_offsets.is_empty() {
            return Ok(None);
        }
        let d = self.dim;
        let mut flat = vec![0.0f32; idx.len() * seq_len * d]; // [b × seq_len × d]
        for (k, &i) in idx.iter().enumerate() {
            let (a, b) = (self.token_offsets[i], self.token_offsets[i + 1]);
            let n = (b - a).min(seq_len);
            flat[k * seq_len * d..(k * seq_len + n) * d].copy_from_slice(&self.tokens[a * d..(a + n) * d]);
        }
        Ok(Some(Tensor::from_vec(flat, (idx.len(), seq_len, d), &Device::Cpu)?.to_dtype(dtype)?))
    }

    /// The rows `idx`, as `[idx.len() × dim]` tensors (pooled, embedding) in `dtype`.
    fn rows(&self, idx: &[usize], dtype: DType) -> Result<(Tensor, Tensor), TrainError> {
        let d = self.dim;
        let take = |v: &[f32]| -> Result<Tensor, TrainError> {
            let flat: Vec<f32> = idx.iter().flat_map(|&i| v[i * d..(i + 1) * d].iter().copied()).collect();
            Ok(Tensor::from_vec(flat, (idx.len(), d), &Device::Cpu)?.to_dtype(dtype)?)
        };
        Ok((take(&self.pooled)?, take(&self.embedding)?))
    }
}

/// The teacher's vectors of `seqs`, run `batch` sequences at a time through the fast runtime;
/// with `keep_tokens`, every token's last hidden state too.
pub fn teacher_targets(
    teacher: &Bert,
    seqs: &[Vec<u32>],
    batch: usize,
    keep_tokens: bool,
) -> Result<Targets, TrainError> {
    let d = teacher.config.hidden_size;
    let mut pooled = Vec::with_capacity(seqs.len() * d);
    let (mut tokens, mut token_offsets) = (Vec::new(), Vec::new());
    if keep_tokens {
        token_offsets.push(0);
    }
    for chunk in seqs.chunks(batch.max(1)) {
        let refs: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
        let h = teacher.forward_sequences(&refs)?; // [Σ len × d]
        if keep_tokens {
            tokens.extend_from_slice(&h);
            for s in chunk {
                token_offsets.push(token_offsets[token_offsets.len() - 1] + s.len());
            }
        }
        let mut at = 0;
        for s in chunk {
            let mut sum = vec![0.0f64; d];
            for row in h[at * d..(at + s.len()) * d].chunks_exact(d) {
                sum.iter_mut().zip(row).for_each(|(a, &b)| *a += b as f64);
            }
            pooled.extend(sum.iter().map(|&v| (v / s.len() as f64) as f32));
            at += s.len();
        }
    }
    let mut embedding = pooled.clone();
    for row in embedding.chunks_exact_mut(d) {
        edgellm_runtime::embed::l2_normalize(row);
    }
    Ok(Targets { dim: d, pooled, embedding, tokens, token_offsets })
}

/// The token-level term: the mean over real tokens (`mask`, `[b × len]`) and dimensions of
/// the squared difference of the student's and teacher's last hidden states (`[b × len × d]`).
pub fn token_loss(student: &Tensor, teacher: &Tensor, mask: &Tensor) -> Result<Tensor, TrainError> {
    let d = student.dim(2)? as f64;
    let sq = (student - teacher)?.sqr()?.broadcast_mul(&mask.unsqueeze(2)?)?.sum_all()?;
    Ok((sq / (mask.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()? * d))?)
}

/// The distillation loss of a batch (a scalar; see the module docs): the student's pooled
/// vectors `[b × d]` against the teacher's pooled vectors and embeddings.
pub fn distill_loss(
    student_pooled: &Tensor,
    teacher_pooled: &Tensor,
    teacher_embedding: &Tensor,
    mse_weight: f64,
) -> Result<Tensor, TrainError> {
    let cos = (l2_normalize(student_pooled)? * teacher_embedding)?.sum(1)?; // [b]
    let cos_term = (1.0 - cos)?.mean_all()?;
    if mse_weight == 0.0 {
        return Ok(cos_term);
    }
    let mse = (student_pooled - teacher_pooled)?.sqr()?.mean_all()?;
    Ok((cos_term + (mse * mse_weight)?)?)
}

/// Options of a distillation run.
#[derive(Clone, Debug, PartialEq)]
pub struct DistillOptions {
    /// Optimizer steps; `None`: [`Self::epochs`] passes over the sentences.
    pub steps: Option<usize>,
    /// Passes over the training sentences when `steps` is `None`.
    pub epochs: usize,
    /// Sentences per batch.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Fraction of the steps spent warming the rate up linearly from 0.
    pub warmup: f64,
    /// The rate at the last step, as a fraction of the peak (linear decay).
    pub final_lr_fraction: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// λ: weight of the squared error of the pooled vectors against the cosine term.
    pub mse_weight: f64,
    /// μ: weight of a token-level term, the squared error of every real token's last hidden
    /// state (0: sentence embeddings alone).
    pub token_weight: f64,
    /// Seed of the shuffles.
    pub seed: u64,
    /// Tokens per sentence at most, `[CLS]` and `[SEP]` included (longer ones are cut, keeping
    /// the final `[SEP]`).
    pub max_len: usize,
    /// Sentences read from the data file at most (held-out ones included).
    pub max_sentences: usize,
    /// Shortest sentence kept, in words.
    pub min_words: usize,
    /// Sentences set aside (not trained on) to measure the student against the teacher.
    pub held_out: usize,
    /// Leave the embedding tables as they are.
    pub freeze_embeddings: bool,
    /// Leave the LayerNorm gains and biases as they are.
    pub freeze_norms: bool,
}

impl Default for DistillOptions {
    fn default() -> Self {
        DistillOptions {
            steps: None,
            epochs: 1,
            batch: 32,
            lr: 3e-4,
            warmup: 0.1,
            final_lr_fraction: 0.0,
            weight_decay: 0.01,
            mse_weight: 1.0,
            token_weight: 0.0,
            seed: 0,
            max_len: 64,
            max_sentences: 4096,
            min_words: 6,
            held_out: 64,
            freeze_embeddings: false,
            freeze_norms: false,
        }
    }
}

impl DistillOptions {
    /// Check the options are usable.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: &str| Err(TrainError::BadOptions(m.into()));
        if self.batch == 0 {
            return bad("--batch must be at least 1");
        }
        if self.steps == Some(0) || (self.steps.is_none() && self.epochs == 0) {
            return bad("give at least one step (--steps N) or one epoch (--epochs N)");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("--lr must be a positive number");
        }
        if !(0.0..1.0).contains(&self.warmup) {
            return bad("--warmup is a fraction of the steps in [0, 1)");
        }
        if !(0.0..=1.0).contains(&self.final_lr_fraction) {
            return bad("the final learning-rate fraction must be in [0, 1]");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("--weight-decay must be >= 0");
        }
        if !(self.mse_weight.is_finite() && self.mse_weight >= 0.0) {
            return bad("--mse-weight must be >= 0");
        }
        if !(self.token_weight.is_finite() && self.token_weight >= 0.0) {
            return bad("--token-weight must be >= 0");
        }
        if self.max_len < 3 {
            return bad("--max-len must leave room for [CLS], one token and [SEP] (at least 3)");
        }
        if self.max_sentences == 0 {
            return bad("--max-sentences must be at least 1");
        }
        Ok(())
    }

    /// Steps of a run over `n` training sentences.
    pub fn total_steps(&self, n: usize) -> usize {
        self.steps.unwrap_or_else(|| self.epochs * n.div_ceil(self.batch.max(1)))
    }
}

/// One step's report.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepProgress {
    /// Steps done (1-based).
    pub step: usize,
    /// Steps in all.
    pub total: usize,
    /// The batch's loss before the step.
    pub loss: f64,
    /// The learning rate of the step.
    pub lr: f64,
}

/// How close a student is to its teacher on a list of sentences.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalStats {
    /// The mean distillation loss.
    pub loss: f64,
    /// The mean cosine of the student's embedding to the teacher's.
    pub mean_cosine: f64,
    /// The lowest such cosine.
    pub min_cosine: f64,
}

/// The student against the teacher's `targets` on `seqs` (the loss as [`distill_loss`] with
/// `mse_weight`, and the cosines), `batch` sentences at a time.
pub fn evaluate(
    student: &TrainableBert,
    seqs: &[Vec<u32>],
    targets: &Targets,
    batch: usize,
    mse_weight: f64,
) -> Result<EvalStats, TrainError> {
    let (mut loss, mut cos_sum, mut cos_min) = (0.0f64, 0.0f64, f64::INFINITY);
    let idx: Vec<usize> = (0..seqs.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let refs: Vec<&[u32]> = chunk.iter().map(|&i| seqs[i].as_slice()).collect();
        let b = student.batch(&refs)?;
        let pooled = student.pooled(&b)?.detach();
        let (tp, te) = targets.rows(chunk, student.dtype())?;
        let l = distill_loss(&pooled, &tp, &te, mse_weight)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        loss += l * chunk.len() as f64;
        let cos = (l2_normalize(&pooled)? * &te)?.sum(1)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        cos_sum += cos.iter().sum::<f64>();
        cos_min = cos.iter().copied().fold(cos_min, f64::min);
    }
    let n = seqs.len().max(1) as f64;
    Ok(EvalStats { loss: loss / n, mean_cosine: cos_sum / n, min_cosine: cos_min })
}

/// What a training loop did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainStats {
    /// Steps taken.
    pub steps: usize,
    /// Mean batch loss over the first tenth of the steps (at least one).
    pub first_loss: f64,
    /// Mean batch loss over the last tenth.
    pub last_loss: f64,
    /// Seconds spent.
    pub seconds: f64,
}

/// Distill `student` towards `targets` on `seqs` (see the module docs): seeded shuffles,
/// AdamW with a warmup/decay schedule, masks held. `on_step` sees every step.
pub fn train(
    student: &TrainableBert,
    seqs: &[Vec<u32>],
    targets: &Targets,
    opts: &DistillOptions,
    on_step: &mut dyn FnMut(&StepProgress),
) -> Result<TrainStats, TrainError> {
    opts.validate()?;
    if seqs.is_empty() || targets.len() != seqs.len() {
        return Err(TrainError::BadOptions(format!(
            "{} sentences and {} teacher targets; both must be equal and non-zero",
            seqs.len(),
            targets.len()
        )));
    }
    let start = Instant::now();
    let total = opts.total_steps(seqs.len());
    let schedule = LrSchedule {
        peak: opts.lr,
        warmup: (opts.warmup * total as f64).round() as usize,
        total,
        final_fraction: opts.final_lr_fraction,
    };
    let params =
        ParamsAdamW { lr: schedule.at(0), weight_decay: opts.weight_decay, ..ParamsAdamW::default() };
    let mut opt = MaskedAdamW::new(student.trainable_vars(), student.params(), params)?;
    let lengths: Vec<usize> = seqs.iter().map(Vec::len).collect();
    let mut rng = SplitMix64::new(opts.seed);
    let mut batches = Vec::new().into_iter();
    let mut losses = Vec::with_capacity(total);
    for step in 0..total {
        let idx = match batches.next() {
            Some(b) => b,
            None => {
                batches = epoch_batches(&lengths, opts.batch, &mut rng).into_iter();
                batches.next().expect("a non-empty epoch")
            }
        };
        let lr = schedule.at(step);
        opt.set_learning_rate(lr);
        let refs: Vec<&[u32]> = idx.iter().map(|&i| seqs[i].as_slice()).collect();
        let b = student.batch(&refs)?;
        let (tp, te) = targets.rows(&idx, student.dtype())?;
        let h = student.forward(&b)?;
        let mut loss = distill_loss(&mean_pool(&h, &b.mask)?, &tp, &te, opts.mse_weight)?;
        if opts.token_weight > 0.0 {
            if let Some(th) = targets.token_rows(&idx, b.seq_len, student.dtype())? {
                loss = (loss + (token_loss(&h, &th, &b.mask)? * opts.token_weight)?)?;
            }
        }
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            return Err(TrainError::BadOptions(format!(
                "the loss became {value} at step {}; lower --lr",
                step + 1
            )));
        }
        opt.backward_step(&loss)?;
        losses.push(value);
        on_step(&StepProgress { step: step + 1, total, loss: value, lr });
    }
    let k = (total / 10).max(1);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    Ok(TrainStats {
        steps: total,
        first_loss: mean(&losses[..k]),
        last_loss: mean(&losses[total - k..]),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Cut `ids` to `max_len` tokens, keeping its last one (`[SEP]`).
pub fn truncate(mut ids: Vec<u32>, max_len: usize) -> Vec<u32> {
    if ids.len() > max_len && max_len > 0 {
        let last = ids[ids.len() - 1];
        ids.truncate(max_len - 1);
        ids.push(last);
    }
    ids
}

/// Held-out and trained-on sentences of a job, tokenized.
#[derive(Clone, Debug)]
pub struct Split {
    /// Sentences trained on.
    pub train: Vec<Vec<u32>>,
    /// Sentences set aside.
    pub held_out: Vec<Vec<u32>>,
}

/// Sentences of the training set the before/after loss is measured on.
pub const PROBE: usize = 256;

/// A distillation job from files: the two models, the data, the teacher's targets.
pub struct DistillJob {
    /// The dense teacher.
    pub teacher: BertFile,
    /// The pruned student as loaded.
    pub student_file: BertFile,
    /// The student being trained.
    pub student: TrainableBert,
    /// The tokenized sentences.
    pub data: Split,
    /// The teacher's targets of `data.train`.
    pub train_targets: Targets,
    /// The teacher's targets of `data.held_out`.
    pub held_targets: Targets,
    /// The options.
    pub opts: DistillOptions,
    /// Seconds spent computing the teacher's targets.
    pub teacher_seconds: f64,
}

/// The result of [`DistillJob::run`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DistillReport {
    /// On the first [`PROBE`] training sentences, before training.
    pub train_before: EvalStats,
    /// The same after.
    pub train_after: EvalStats,
    /// On the held-out sentences, before training (`None` without held-out sentences).
    pub held_before: Option<EvalStats>,
    /// The same after.
    pub held_after: Option<EvalStats>,
    /// The training loop's statistics.
    pub stats: TrainStats,
    /// Masked (zero) entries of the linear weights, and their number.
    pub masked: (usize, usize),
}

fn compare<T: std::fmt::Debug + PartialEq>(what: &str, t: T, s: T) -> Result<(), TrainError> {
    if t != s {
        return Err(TrainError::Mismatch {
            what: what.into(),
            teacher: format!("{t:?}"),
            student: format!("{s:?}"),
        });
    }
    Ok(())
}

/// Check that `student` can be distilled from `teacher`: the same vocabulary, tokenization,
/// hidden size (the sentence vectors the loss compares), positions, activation and
/// normalization. Depth, heads and FFN width may differ: a structured-pruned student (fewer FFN
/// channels or heads) trains with its own shapes.
pub fn check_compatible(teacher: &BertFile, student: &BertFile) -> Result<(), TrainError> {
    let (t, s) = (teacher.config(), student.config());
    compare("vocab_size", t.vocab_size, s.vocab_size)?;
    compare("hidden_size", t.hidden_size, s.hidden_size)?;
    compare("max_position_embeddings", t.max_position_embeddings, s.max_position_embeddings)?;
    compare("type_vocab_size", t.type_vocab_size, s.type_vocab_size)?;
    compare("hidden_act", t.hidden_act, s.hidden_act)?;
    compare("layer_norm_eps", t.layer_norm_eps, s.layer_norm_eps)?;
    compare("L2 normalization", teacher.normalizes(), student.normalizes())?;
    let probe = "The quick brown fox jumps over the lazy dog, 1,000 times: naïve café Zürich!";
    compare(
        &format!("the tokenization of {probe:?}"),
        teacher.embedder.tokenize(probe)?,
        student.embedder.tokenize(probe)?,
    )
}

impl DistillJob {
    /// Open the teacher and student, check they match, read and tokenize the data (sentences
    /// of at least `opts.min_words` words; the first `opts.held_out` of a seeded shuffle set
    /// aside, and of the rest at most `steps × batch` kept when `opts.steps` is given), and
    /// compute the teacher's targets.
    pub fn prepare(
        teacher: &Path,
        student: &Path,
        data: &Path,
        opts: DistillOptions,
    ) -> Result<DistillJob, TrainError> {
        opts.validate()?;
        let teacher = BertFile::open(teacher, "teacher")?;
        let student_file = BertFile::open(student, "student")?;
        check_compatible(&teacher, &student_file)?;
        let mut texts = read_sentences(data, opts.max_sentences, opts.min_words)?;
        let need = opts.held_out + 1;
        if texts.len() < need {
            return Err(TrainError::NotEnoughData {
                path: data.into(),
                found: texts.len(),
                need,
                min_words: opts.min_words,
            });
        }
        SplitMix64::new(opts.seed ^ 0x5eed).shuffle(&mut texts);
        let mut seqs = Vec::with_capacity(texts.len());
        for t in &texts {
            seqs.push(truncate(student_file.embedder.tokenize(t)?, opts.max_len));
        }
        let mut train = seqs.split_off(opts.held_out);
        // A run of fewer steps than an epoch sees only steps × batch sentences: the teacher
        // need not embed the others.
        if let Some(steps) = opts.steps {
            train.truncate(steps.saturating_mul(opts.batch).max(1));
        }
        let data = Split { train, held_out: seqs };
        let start = Instant::now();
        let tm = teacher.embedder.model();
        let train_targets = teacher_targets(tm, &data.train, 64, opts.token_weight > 0.0)?;
        let held_targets = teacher_targets(tm, &data.held_out, 64, false)?;
        let teacher_seconds = start.elapsed().as_secs_f64();
        let mut model = student_file.trainable(DType::F32)?;
        model.set_trainable(ParamKind::Embedding, !opts.freeze_embeddings);
        model.set_trainable(ParamKind::Norm, !opts.freeze_norms);
        Ok(DistillJob {
            teacher,
            student_file,
            student: model,
            data,
            train_targets,
            held_targets,
            opts,
            teacher_seconds,
        })
    }

    fn probe(&self) -> Result<EvalStats, TrainError> {
        let n = self.data.train.len().min(PROBE);
        let t = &self.train_targets;
        let d = t.dim;
        let sub = Targets {
            dim: d,
            pooled: t.pooled[..n * d].to_vec(),
            embedding: t.embedding[..n * d].to_vec(),
            tokens: Vec::new(),
            token_offsets: Vec::new(),
        };
        evaluate(&self.student, &self.data.train[..n], &sub, self.opts.batch, self.opts.mse_weight)
    }

    fn held(&self) -> Result<Option<EvalStats>, TrainError> {
        if self.data.held_out.is_empty() {
            return Ok(None);
        }
        Ok(Some(evaluate(
            &self.student,
            &self.data.held_out,
            &self.held_targets,
            self.opts.batch,
            self.opts.mse_weight,
        )?))
    }

    /// Measure, train, measure again.
    pub fn run(&mut self, on_step: &mut dyn FnMut(&StepProgress)) -> Result<DistillReport, TrainError> {
        let train_before = self.probe()?;
        let held_before = self.held()?;
        let stats = train(&self.student, &self.data.train, &self.train_targets, &self.opts, on_step)?;
        Ok(DistillReport {
            train_before,
            train_after: self.probe()?,
            held_before,
            held_after: self.held()?,
            stats,
            masked: self.student.masked_fraction()?,
        })
    }

    /// Write the trained student as an F32 `bert` GGUF (see [`BertFile::write_trained`]).
    pub fn write(&self, path: &Path) -> Result<(), TrainError> {
        self.student_file.write_trained(&self.student, path)
    }
}
