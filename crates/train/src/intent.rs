//! Intent classifiers trained on the device: a linear head over a sentence encoder's
//! embeddings, alone (the encoder frozen: seconds) or with the whole encoder fine-tuned
//! (minutes), written as one GGUF file (the encoder, the head and its labels; see
//! docs/intent-gguf.md).
//!
//! Both modes start the same way: the training utterances are embedded once by the fast
//! runtime and a linear head is fitted to them (softmax cross-entropy, AdamW, seeded
//! shuffles), keeping the epoch that is best on the validation set. [`IntentMode::Full`] then
//! trains encoder and head together from there (linear probing, then fine-tuning: the head
//! starts trained, so the encoder's first steps are not spent undoing a random head), with a
//! learning rate for the encoder and another for the head, and again keeps the best epoch on
//! the validation set. The encoder's pruning masks hold throughout. With [`IntentOptions::qat`]
//! the fine-tuning is quantization-aware: it sees the weights as the chosen type will store them.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::ParamsAdamW;
use edgellm_eval::intent::IntentExample;
use edgellm_formats::GgufWriter;
use edgellm_models::intent::IntentHead;

use crate::data::{epoch_batches, SplitMix64};
use crate::distill::truncate;
use crate::encoder::{l2_normalize, BertFile, ParamKind, TrainableBert};
use crate::optim::{LrSchedule, MaskedAdamW};
use crate::TrainError;

/// What is trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntentMode {
    /// A linear head on the frozen encoder's embeddings.
    Head,
    /// The head, then encoder and head together.
    Full,
}

impl IntentMode {
    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            IntentMode::Head => "head",
            IntentMode::Full => "full",
        }
    }
}

/// Options of an intent training run.
#[derive(Clone, Debug, PartialEq)]
pub struct IntentOptions {
    /// Head only, or encoder and head.
    pub mode: IntentMode,
    /// Passes of the head over the frozen embeddings.
    pub head_epochs: usize,
    /// Peak learning rate of the head on frozen embeddings.
    pub head_lr: f64,
    /// Utterances per batch when fitting the head alone.
    pub head_batch: usize,
    /// Passes of encoder and head together ([`IntentMode::Full`]).
    pub epochs: usize,
    /// Peak learning rate of the encoder ([`IntentMode::Full`]).
    pub lr: f64,
    /// Peak learning rate of the head while the encoder trains ([`IntentMode::Full`]).
    pub joint_head_lr: f64,
    /// Utterances per batch while the encoder trains.
    pub batch: usize,
    /// Fraction of each phase's steps spent warming the rate up from 0 (then linear decay to
    /// 0).
    pub warmup: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Leave the embedding tables (words, positions, segments) as they are while the encoder
    /// trains: a third of MiniLM's steps' cost, and the word table a deployment trims stays
    /// the original's.
    pub freeze_embeddings: bool,
    /// Tokens per utterance at most, `[CLS]` and `[SEP]` included.
    pub max_len: usize,
    /// Seed of the shuffles.
    pub seed: u64,
    /// Quantization-aware fine-tuning ([`IntentMode::Full`]): the encoder's linear weights are
    /// seen rounded to this type in every forward pass, validation included (straight-through
    /// gradients; see [`TrainableBert::set_fake_quant`]). Quantize the output to the same type.
    pub qat: Option<edgellm_core::DType>,
    /// With [`Self::qat`]: the (frozen) word embeddings rounded to this type first.
    pub qat_embeddings: Option<edgellm_core::DType>,
}

impl Default for IntentOptions {
    fn default() -> Self {
        IntentOptions {
            mode: IntentMode::Head,
            head_epochs: 40,
            head_lr: 1e-2,
            head_batch: 64,
            epochs: 4,
            lr: 1e-4,
            joint_head_lr: 2e-3,
            batch: 16,
            warmup: 0.06,
            weight_decay: 0.01,
            freeze_embeddings: true,
            max_len: 64,
            seed: 0,
            qat: None,
            qat_embeddings: None,
        }
    }
}

impl IntentOptions {
    /// Check the options are usable.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: &str| Err(TrainError::BadOptions(m.into()));
        if self.head_epochs == 0 {
            return bad("--head-epochs must be at least 1");
        }
        if self.mode == IntentMode::Full && self.epochs == 0 {
            return bad("--epochs must be at least 1 to fine-tune the encoder");
        }
        if self.batch == 0 || self.head_batch == 0 {
            return bad("batch sizes must be at least 1");
        }
        for (name, v) in
            [("--lr", self.lr), ("--head-lr", self.head_lr), ("--joint-head-lr", self.joint_head_lr)]
        {
            if !(v.is_finite() && v > 0.0) {
                return Err(TrainError::BadOptions(format!("{name} must be a positive number")));
            }
        }
        if !(0.0..1.0).contains(&self.warmup) {
            return bad("--warmup is a fraction of the steps in [0, 1)");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("--weight-decay must be >= 0");
        }
        if self.qat.is_some() && self.mode != IntentMode::Full {
            return bad("quantization-aware training (--qat) fine-tunes the encoder: use --mode full");
        }
        if self.qat_embeddings.is_some() && (self.qat.is_none() || !self.freeze_embeddings) {
            return bad("--qat-embeddings rounds the frozen word table during --qat fine-tuning");
        }
        if self.max_len < 3 {
            return bad("--max-len must leave room for [CLS], one token and [SEP] (at least 3)");
        }
        Ok(())
    }
}

/// Labelled utterances as label indices.
struct Encoded {
    ids: Vec<Vec<u32>>,
    /// Index into the label list; `None` for a label the training set lacks (always wrong).
    labels: Vec<Option<usize>>,
}

/// One epoch's report.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochReport {
    /// `head` or `full`.
    pub phase: IntentMode,
    /// Epoch, from 1.
    pub epoch: usize,
    /// Of how many in this phase.
    pub epochs: usize,
    /// Mean training loss over the epoch.
    pub loss: f64,
    /// Accuracy on the validation set (on the training set when there is none).
    pub val_accuracy: f64,
    /// Seconds since the run began.
    pub seconds: f64,
}

/// What a run did.
#[derive(Clone, Debug, PartialEq)]
pub struct IntentReport {
    /// The labels, in the head's order (sorted).
    pub labels: Vec<String>,
    /// Utterances trained on.
    pub n_train: usize,
    /// Validation utterances (0: the training set chose the epoch).
    pub n_val: usize,
    /// Validation utterances whose label the training set lacks (counted wrong).
    pub n_val_unknown: usize,
    /// Every epoch, in order.
    pub epochs: Vec<EpochReport>,
    /// The epoch kept: (phase, epoch).
    pub best: (IntentMode, usize),
    /// Its validation accuracy.
    pub best_val_accuracy: f64,
    /// Seconds embedding the utterances for the head.
    pub embed_seconds: f64,
    /// Seconds in all.
    pub seconds: f64,
}

/// A trained classifier, ready to write.
pub struct TrainedIntents {
    /// The head.
    pub head: IntentHead,
    /// The fine-tuned encoder ([`IntentMode::Full`]); `None`: the source's, unchanged.
    pub encoder: Option<TrainableBert>,
    /// What the run did.
    pub report: IntentReport,
}

impl TrainedIntents {
    /// Write the classifier as one GGUF: the encoder (the source file's tensors unchanged,
    /// quantized types kept, for a head-only run; F32 after fine-tuning) and the head.
    pub fn write(&self, source: &BertFile, path: &Path) -> Result<(), TrainError> {
        let mut w: GgufWriter<'_> = match &self.encoder {
            Some(enc) => source.trained_writer(enc)?,
            None => source.source_writer()?,
        };
        self.head.write_into(&mut w)?;
        w.write_file(path)?;
        Ok(())
    }
}

/// A linear head as candle variables: `w` `[n × d]`, `b` `[n]`.
struct HeadVars {
    w: Var,
    b: Var,
}

impl HeadVars {
    fn zeros(n: usize, d: usize) -> Result<HeadVars, TrainError> {
        Ok(HeadVars {
            w: Var::zeros((n, d), DType::F32, &Device::Cpu)?,
            b: Var::zeros(n, DType::F32, &Device::Cpu)?,
        })
    }

    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.w.as_tensor().t()?)?.broadcast_add(self.b.as_tensor())
    }

    fn snapshot(&self) -> Result<(Vec<f32>, Vec<f32>), TrainError> {
        Ok((self.w.as_tensor().flatten_all()?.to_vec1()?, self.b.as_tensor().to_vec1()?))
    }

    fn restore(&self, (w, b): &(Vec<f32>, Vec<f32>)) -> Result<(), TrainError> {
        self.w.set(&Tensor::from_slice(w, self.w.dims(), &Device::Cpu)?)?;
        self.b.set(&Tensor::from_slice(b, self.b.dims(), &Device::Cpu)?)?;
        Ok(())
    }
}

/// Mean softmax cross-entropy of `logits` `[b × n]` against one-hot `targets` `[b × n]`, in
/// ops that have a backward pass.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let z = logits.broadcast_sub(&logits.max_keepdim(D::Minus1)?.detach())?;
    let lse = z.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let logp = z.broadcast_sub(&lse)?;
    (logp * targets)?.sum(D::Minus1)?.neg()?.mean_all()
}

fn one_hot(labels: &[usize], n: usize) -> Result<Tensor, TrainError> {
    let mut v = vec![0f32; labels.len() * n];
    for (i, &l) in labels.iter().enumerate() {
        v[i * n + l] = 1.0;
    }
    Ok(Tensor::from_vec(v, (labels.len(), n), &Device::Cpu)?)
}

fn argmax_rows(logits: &Tensor) -> Result<Vec<usize>, TrainError> {
    Ok(logits.argmax(D::Minus1)?.to_vec1::<u32>()?.into_iter().map(|i| i as usize).collect())
}

fn accuracy(pred: &[usize], gold: &[Option<usize>]) -> f64 {
    let right = pred.iter().zip(gold).filter(|(p, g)| Some(**p) == **g).count();
    right as f64 / gold.len().max(1) as f64
}

/// Train an intent classifier on `train` (choosing epochs on `val`, or on `train` when `val`
/// is empty) over the encoder `source`. `on_epoch` sees every epoch; `on_step` sees (step,
/// total) of the phase that fine-tunes the encoder.
pub fn train_intents(
    source: &BertFile,
    train: &[IntentExample],
    val: &[IntentExample],
    opts: &IntentOptions,
    on_epoch: &mut dyn FnMut(&EpochReport),
    on_step: &mut dyn FnMut(usize, usize),
) -> Result<TrainedIntents, TrainError> {
    opts.validate()?;
    let start = Instant::now();
    let labels = edgellm_eval::intent::label_set(train);
    if labels.len() < 2 {
        return Err(TrainError::BadOptions(format!(
            "the training data has {} label(s); a classifier needs at least 2",
            labels.len()
        )));
    }
    let n = labels.len();
    let index = |l: &str| labels.binary_search_by(|x| x.as_str().cmp(l)).ok();
    let embedder = &source.embedder;
    let encode = |ex: &[IntentExample]| -> Result<Encoded, TrainError> {
        let mut ids = Vec::with_capacity(ex.len());
        for e in ex {
            ids.push(truncate(embedder.tokenize(&e.text)?, opts.max_len));
        }
        Ok(Encoded { ids, labels: ex.iter().map(|e| index(&e.label)).collect() })
    };
    let tr = encode(train)?;
    let train_labels: Vec<usize> =
        tr.labels.iter().map(|l| l.expect("train labels are in the set")).collect();
    let va = if val.is_empty() { None } else { Some(encode(val)?) };
    let n_val_unknown = va.as_ref().map_or(0, |v| v.labels.iter().filter(|l| l.is_none()).count());

    // Embeddings by the fast runtime, as `intent predict` computes them.
    let t_embed = Instant::now();
    let embed_all = |ids: &[Vec<u32>]| -> Result<Tensor, TrainError> {
        let d = embedder.dim();
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![0f32; ids.len() * d];
        for chunk in order.chunks(64) {
            let seqs: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            for (&i, e) in chunk.iter().zip(embedder.embed_ids(&seqs)?) {
                out[i * d..(i + 1) * d].copy_from_slice(&e);
            }
        }
        Ok(Tensor::from_vec(out, (ids.len(), d), &Device::Cpu)?)
    };
    let x_train = embed_all(&tr.ids)?;
    let x_val = match &va {
        Some(v) => Some(embed_all(&v.ids)?),
        None => None,
    };
    let embed_seconds = t_embed.elapsed().as_secs_f64();

    let head = HeadVars::zeros(n, embedder.dim())?;
    let mut epochs = Vec::new();
    let mut rng = SplitMix64::new(opts.seed);
    let (vx, vy) = match (&x_val, &va) {
        (Some(x), Some(v)) => (x, v.labels.clone()),
        _ => (&x_train, tr.labels.clone()),
    };

    // Phase 1: the head on frozen embeddings.
    let phase = Phase { mode: IntentMode::Head, epochs: opts.head_epochs, batch: opts.head_batch, start };
    let total = phase.steps(train.len());
    let schedule = LrSchedule {
        peak: opts.head_lr,
        warmup: (opts.warmup * total as f64).round() as usize,
        total,
        final_fraction: 0.0,
    };
    let params =
        ParamsAdamW { lr: schedule.at(0), weight_decay: opts.weight_decay, ..ParamsAdamW::default() };
    let mut opt = MaskedAdamW::new(vec![head.w.clone(), head.b.clone()], std::iter::empty(), params)?;
    let lengths = vec![1usize; train.len()];
    let mut best = (IntentMode::Head, 0usize, f64::NEG_INFINITY, head.snapshot()?);
    phase.run(
        &lengths,
        &mut rng,
        &mut epochs,
        on_epoch,
        &mut |step, idx| {
            opt.set_learning_rate(schedule.at(step));
            let rows =
                Tensor::from_vec(idx.iter().map(|&i| i as u32).collect::<Vec<_>>(), idx.len(), &Device::Cpu)?;
            let x = x_train.index_select(&rows, 0)?;
            let y = one_hot(&idx.iter().map(|&i| train_labels[i]).collect::<Vec<_>>(), n)?;
            let loss = cross_entropy(&head.logits(&x)?, &y)?;
            opt.backward_step(&loss)?;
            Ok(loss)
        },
        &mut |epoch| {
            let acc = accuracy(&argmax_rows(&head.logits(vx)?)?, &vy);
            if acc > best.2 {
                best = (IntentMode::Head, epoch, acc, head.snapshot()?);
            }
            Ok(acc)
        },
    )?;
    head.restore(&best.3)?;

    // Phase 2: encoder and head together.
    let mut encoder = None;
    if opts.mode == IntentMode::Full {
        let mut model = source.trainable(DType::F32)?;
        if opts.freeze_embeddings {
            model.set_trainable(ParamKind::Embedding, false);
        }
        model.set_fake_quant(opts.qat, opts.qat_embeddings)?;
        let normalize = source.normalizes();
        let forward = |model: &TrainableBert, seqs: &[&[u32]]| -> Result<Tensor, TrainError> {
            let b = model.batch(seqs)?;
            let pooled = model.pooled(&b)?;
            Ok(head.logits(&if normalize { l2_normalize(&pooled)? } else { pooled })?)
        };
        let predict = |model: &TrainableBert, e: &Encoded| -> Result<Vec<usize>, TrainError> {
            let mut order: Vec<usize> = (0..e.ids.len()).collect();
            order.sort_by_key(|&i| e.ids[i].len());
            let mut out = vec![0usize; e.ids.len()];
            for chunk in order.chunks(64) {
                let seqs: Vec<&[u32]> = chunk.iter().map(|&i| e.ids[i].as_slice()).collect();
                for (&i, p) in chunk.iter().zip(argmax_rows(&forward(model, &seqs)?.detach())?) {
                    out[i] = p;
                }
            }
            Ok(out)
        };
        let phase = Phase { mode: IntentMode::Full, epochs: opts.epochs, batch: opts.batch, start };
        let total = phase.steps(train.len());
        let warmup = (opts.warmup * total as f64).round() as usize;
        let enc_schedule = LrSchedule { peak: opts.lr, warmup, total, final_fraction: 0.0 };
        let head_schedule = LrSchedule { peak: opts.joint_head_lr, warmup, total, final_fraction: 0.0 };
        let p = |lr| ParamsAdamW { lr, weight_decay: opts.weight_decay, ..ParamsAdamW::default() };
        let mut enc_opt = MaskedAdamW::new(model.trainable_vars(), model.params(), p(enc_schedule.at(0)))?;
        let mut head_opt = MaskedAdamW::new(
            vec![head.w.clone(), head.b.clone()],
            std::iter::empty(),
            p(head_schedule.at(0)),
        )?;
        let lengths: Vec<usize> = tr.ids.iter().map(Vec::len).collect();
        let mut best_encoder: Option<Vec<Vec<f32>>> = None;
        phase.run(
            &lengths,
            &mut rng,
            &mut epochs,
            on_epoch,
            &mut |step, idx| {
                enc_opt.set_learning_rate(enc_schedule.at(step));
                head_opt.set_learning_rate(head_schedule.at(step));
                let seqs: Vec<&[u32]> = idx.iter().map(|&i| tr.ids[i].as_slice()).collect();
                let y = one_hot(&idx.iter().map(|&i| train_labels[i]).collect::<Vec<_>>(), n)?;
                let loss = cross_entropy(&forward(&model, &seqs)?, &y)?;
                let mut grads = loss.backward()?;
                enc_opt.step_shared(&mut grads)?;
                head_opt.step_shared(&mut grads)?;
                on_step(step + 1, total);
                Ok(loss)
            },
            &mut |epoch| {
                let acc = match &va {
                    Some(v) => accuracy(&predict(&model, v)?, &v.labels),
                    None => accuracy(&predict(&model, &tr)?, &tr.labels),
                };
                // Fine-tuning is kept when it is at least as good as the head alone. Under
                // quantization-aware training the head alone was scored on unrounded weights,
                // so the best rounded epoch is kept whatever it scores.
                let qat_first = opts.qat.is_some() && best.0 == IntentMode::Head;
                if acc >= best.2 || qat_first {
                    best = (IntentMode::Full, epoch, acc, head.snapshot()?);
                    best_encoder =
                        Some(model.params().iter().map(|p| p.to_f32_vec()).collect::<Result<_, _>>()?);
                }
                Ok(acc)
            },
        )?;
        head.restore(&best.3)?;
        if let Some(values) = best_encoder {
            for (p, v) in model.params().iter().zip(&values) {
                p.var.set(&Tensor::from_slice(v, p.var.dims(), &Device::Cpu)?)?;
            }
            encoder = Some(model);
        }
    }

    let (w, b) = head.snapshot()?;
    let head = IntentHead::new(labels.clone(), embedder.dim(), w, b)?;
    Ok(TrainedIntents {
        head,
        encoder,
        report: IntentReport {
            labels,
            n_train: train.len(),
            n_val: val.len(),
            n_val_unknown,
            epochs,
            best: (best.0, best.1),
            best_val_accuracy: best.2,
            embed_seconds,
            seconds: start.elapsed().as_secs_f64(),
        },
    })
}

/// One optimizer step of a phase: `(step number from 0, batch indices) → the batch's loss`.
type BatchStep<'a> = dyn FnMut(usize, &[usize]) -> Result<Tensor, TrainError> + 'a;

/// One training phase: its epochs, batch size and the run's start (for the reports' times).
struct Phase {
    mode: IntentMode,
    epochs: usize,
    batch: usize,
    start: Instant,
}

impl Phase {
    /// Optimizer steps of the whole phase over `n` examples.
    fn steps(&self, n: usize) -> usize {
        self.epochs * n.div_ceil(self.batch)
    }

    /// Every epoch: the examples (of token lengths `lengths`) shuffled into batches, `step` on
    /// each batch (the phase's step number from 0 and the batch's indices; it returns the
    /// batch's loss, already stepped), then `score` of the epoch (its validation accuracy; it
    /// keeps the best epoch), reported to `on_epoch` and appended to `log`.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        lengths: &[usize],
        rng: &mut SplitMix64,
        log: &mut Vec<EpochReport>,
        on_epoch: &mut dyn FnMut(&EpochReport),
        step: &mut BatchStep<'_>,
        score: &mut dyn FnMut(usize) -> Result<f64, TrainError>,
    ) -> Result<(), TrainError> {
        let mut n = 0;
        for epoch in 1..=self.epochs {
            let mut loss_sum = 0.0;
            let batches = epoch_batches(lengths, self.batch, rng);
            for idx in &batches {
                loss_sum += check_loss(&step(n, idx)?, epoch)?;
                n += 1;
            }
            let rep = EpochReport {
                phase: self.mode,
                epoch,
                epochs: self.epochs,
                loss: loss_sum / batches.len() as f64,
                val_accuracy: score(epoch)?,
                seconds: self.start.elapsed().as_secs_f64(),
            };
            on_epoch(&rep);
            log.push(rep);
        }
        Ok(())
    }
}

fn check_loss(loss: &Tensor, epoch: usize) -> Result<f64, TrainError> {
    let v = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if !v.is_finite() {
        return Err(TrainError::BadOptions(format!(
            "the loss became {v} in epoch {epoch}; lower the learning rate"
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_matches_its_definition() {
        let logits = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 0.0, 0.0, 0.0], (2, 3), &Device::Cpu).unwrap();
        let y = one_hot(&[2, 0], 3).unwrap();
        let got = cross_entropy(&logits, &y).unwrap().to_scalar::<f32>().unwrap() as f64;
        let lse1 = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        let want = ((lse1 - 3.0) + 3f64.ln()) / 2.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
}
