//! Intent classification: a sentence encoder's embedding through a linear head
//! ([`edgellm_models::intent::IntentHead`]), both from one GGUF file.

use std::path::Path;

use edgellm_formats::GgufFile;
use edgellm_models::intent::IntentHead;

use crate::embed::{EmbedError, Embedder, DEFAULT_BATCH};

/// A loaded intent classifier: tokenizer, encoder, pooling and head.
pub struct IntentClassifier {
    embedder: Embedder,
    head: IntentHead,
}

/// One label's score.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelScore {
    /// Index of the label in [`IntentClassifier::labels`].
    pub index: usize,
    /// Its probability (softmax of the head's logits).
    pub score: f32,
}

/// The probabilities of every label for one text.
#[derive(Clone, Debug, PartialEq)]
pub struct IntentScores {
    /// One probability per label, in the head's label order.
    pub probs: Vec<f32>,
}

impl IntentScores {
    /// The `k` most probable labels, most probable first (ties: the lower index first).
    pub fn top(&self, k: usize) -> Vec<LabelScore> {
        let mut v: Vec<LabelScore> =
            self.probs.iter().enumerate().map(|(index, &score)| LabelScore { index, score }).collect();
        v.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
        v.truncate(k);
        v
    }

    /// The most probable label.
    pub fn best(&self) -> LabelScore {
        self.top(1).remove(0)
    }
}

impl IntentClassifier {
    /// Load an intent GGUF: a `bert` encoder with an intent head and its labels. A plain
    /// encoder (no head) or a corrupt head is an error saying so.
    pub fn load(path: impl AsRef<Path>) -> Result<IntentClassifier, EmbedError> {
        let path = path.as_ref();
        let f = GgufFile::open(path)?;
        let embedder = Embedder::from_gguf_file(&f, path)?;
        IntentClassifier::from_file_parts(&f, embedder)
    }

    /// The classifier of an opened GGUF file `f`, whose encoder pipeline is `embedder`.
    pub fn from_file_parts(f: &GgufFile, embedder: Embedder) -> Result<IntentClassifier, EmbedError> {
        let head = IntentHead::from_gguf(f, embedder.dim())?;
        Ok(IntentClassifier { embedder, head })
    }

    /// A classifier from an encoder pipeline and a head for its embeddings.
    pub fn new(embedder: Embedder, head: IntentHead) -> Result<IntentClassifier, EmbedError> {
        if head.dim != embedder.dim() {
            return Err(EmbedError::Unsupported(format!(
                "the intent head takes {} inputs but the encoder's embeddings have {}",
                head.dim,
                embedder.dim()
            )));
        }
        Ok(IntentClassifier { embedder, head })
    }

    /// The encoder pipeline.
    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    /// The head.
    pub fn head(&self) -> &IntentHead {
        &self.head
    }

    /// The label names, in the order of [`IntentScores::probs`].
    pub fn labels(&self) -> &[String] {
        &self.head.labels
    }

    /// The scores of one text.
    pub fn classify(&self, text: &str) -> Result<IntentScores, EmbedError> {
        Ok(IntentScores { probs: self.head.probabilities(&self.embedder.embed(text)?) })
    }

    /// The scores of `texts`, in their order, embedded in batches of `batch_size` (0: the
    /// default) as [`Embedder::embed_batch`] does.
    pub fn classify_batch<S: AsRef<str>>(
        &self,
        texts: &[S],
        batch_size: usize,
    ) -> Result<Vec<IntentScores>, EmbedError> {
        let batch_size = if batch_size == 0 { DEFAULT_BATCH } else { batch_size };
        Ok(self
            .embedder
            .embed_batch(texts, batch_size)?
            .iter()
            .map(|e| IntentScores { probs: self.head.probabilities(e) })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_orders_by_score_then_index() {
        let s = IntentScores { probs: vec![0.2, 0.5, 0.2, 0.1] };
        let t = s.top(3);
        assert_eq!(t.iter().map(|l| l.index).collect::<Vec<_>>(), vec![1, 0, 2]);
        assert_eq!(s.best().index, 1);
        assert_eq!(s.top(10).len(), 4);
    }
}
