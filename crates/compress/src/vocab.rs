//! Vocabulary trimming of WordPiece (`bert`) GGUF models: keep only the tokens a deployment
//! needs, so that the word-embedding table — most of a small encoder's bytes (MiniLM-L6:
//! 30 522 × 384 of its 22.7 M weights) — shrinks to those rows.
//!
//! Kept: the tokens the caller found in its texts (tokenized by the model's own tokenizer),
//! every control token and every token a `tokenizer.ggml.*_token_id` key names, and every
//! single-character token (word-initial and `##` continuation), so that any word can still be
//! spelled and WordPiece falls back to `[UNK]` no more often than before. WordPiece matches the
//! longest vocabulary prefix first; removing tokens never makes a longer match, so **every text
//! whose tokens were all kept tokenizes to the same pieces** and embeds exactly as before. A
//! word outside those texts may split into more, shorter pieces than with the full vocabulary
//! (its embedding changes; measure the accuracy on held-out text).
//!
//! The output keeps the kept tokens in their original order (ids renumbered), the rows of
//! `token_embd.weight` that belong to them (any tensor type: rows are whole blocks), and every
//! other tensor and key unchanged.

use std::collections::BTreeSet;

use edgellm_formats::{GgufFile, GgufWriter, Value};

use crate::CompressError;

/// GGUF token type of control tokens.
const TOKEN_CONTROL: i64 = 3;
/// GGUF token type of normal tokens.
const TOKEN_NORMAL: i64 = 1;

/// What trimming did.
#[derive(Clone, Debug, PartialEq)]
pub struct VocabTrim {
    /// Tokens before.
    pub before: usize,
    /// Tokens kept.
    pub kept: usize,
    /// Of those, kept because the caller's texts use them.
    pub used: usize,
    /// Bytes of `token_embd.weight` before and after.
    pub embd_bytes: (u64, u64),
}

/// Trims `f`'s vocabulary to `used` (token ids the deployment's texts produce) plus control,
/// special and single-character tokens, plus the first `keep_first` other tokens in vocabulary
/// order (WordPiece vocabularies made by BERT's tool list their pieces most frequent first —
/// MiniLM's from id 1996: "the", "of", "and", … — so these are the commonest words, for text
/// the deployment's own did not cover). Returns the writer of the trimmed model.
pub fn trim_vocab<'a>(
    f: &'a GgufFile,
    used: &BTreeSet<u32>,
    keep_first: usize,
) -> Result<(GgufWriter<'a>, VocabTrim), CompressError> {
    let bad = |why: String| CompressError::BadTensor { tensor: "tokenizer.ggml.tokens".into(), why };
    let model = f.get_str("tokenizer.ggml.model")?;
    if model != "bert" {
        return Err(bad(format!(
            "vocabulary trimming needs a WordPiece ('bert') tokenizer, this one is '{model}'"
        )));
    }
    let tokens = f.get_str_array("tokenizer.ggml.tokens")?;
    let n = tokens.len();
    if let Some(&id) = used.iter().find(|&&id| id as usize >= n) {
        return Err(bad(format!("token id {id} is outside the vocabulary of {n}")));
    }
    let types: Option<Vec<i64>> = match f.get("tokenizer.ggml.token_type") {
        Some(_) => {
            Some(f.get_array("tokenizer.ggml.token_type")?.iter().map(|v| v.as_i64().unwrap_or(1)).collect())
        }
        None => None,
    };
    let special_keys: Vec<(String, u64)> = f
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer.ggml.") && k.ends_with("_token_id"))
        .filter_map(|(k, v)| v.as_u64().map(|id| (k.clone(), id)))
        .collect();
    let mut keep = vec![false; n];
    for &id in used {
        keep[id as usize] = true;
    }
    for (i, t) in tokens.iter().enumerate() {
        let control = types.as_ref().is_some_and(|ty| ty.get(i) == Some(&TOKEN_CONTROL));
        let text = t.strip_prefix('\u{2581}').unwrap_or(t);
        if control || text.chars().count() == 1 {
            keep[i] = true;
        }
    }
    for (_, id) in &special_keys {
        if let Some(k) = keep.get_mut(*id as usize) {
            *k = true;
        }
    }
    // The commonest other tokens: normal ones only, and not placeholders such as `[unused0]`
    // (stored as `▁[unused0]`, typed normal in MiniLM's GGUF).
    let mut extra = keep_first;
    for (i, t) in tokens.iter().enumerate() {
        if extra == 0 {
            break;
        }
        let normal = types.as_ref().is_none_or(|ty| ty.get(i) == Some(&TOKEN_NORMAL));
        let text = t.strip_prefix('\u{2581}').unwrap_or(t);
        let bracketed = text.starts_with('[') && text.ends_with(']');
        if !keep[i] && normal && !bracketed {
            keep[i] = true;
            extra -= 1;
        }
    }
    let mut new_id = vec![u32::MAX; n];
    let mut kept = 0usize;
    for i in 0..n {
        if keep[i] {
            new_id[i] = kept as u32;
            kept += 1;
        }
    }

    let embd = f.need_tensor("token_embd.weight")?;
    if embd.dims.len() != 2 || embd.dims[1] as usize != n {
        return Err(CompressError::BadTensor {
            tensor: embd.name.clone(),
            why: format!("shape {:?} does not have the vocabulary's {n} rows", embd.dims),
        });
    }
    let data = f.tensor_data(embd);
    if n == 0 || !data.len().is_multiple_of(n) {
        return Err(CompressError::BadTensor {
            tensor: embd.name.clone(),
            why: format!("{} bytes are not {n} whole rows", data.len()),
        });
    }
    let row = data.len() / n;
    let mut rows = Vec::with_capacity(kept * row);
    for i in (0..n).filter(|&i| keep[i]) {
        rows.extend_from_slice(&data[i * row..(i + 1) * row]);
    }

    let mut w = f.to_writer();
    let filter = |key: &str, w: &mut GgufWriter<'_>| -> Result<(), CompressError> {
        if let Some(Value::Array(ty, vals)) = f.get(key) {
            if vals.len() != n {
                return Err(bad(format!("{key} has {} entries for {n} tokens", vals.len())));
            }
            let v: Vec<Value> = vals.iter().zip(&keep).filter(|(_, &k)| k).map(|(v, _)| v.clone()).collect();
            w.set(key, Value::Array(*ty, v));
        }
        Ok(())
    };
    filter("tokenizer.ggml.tokens", &mut w)?;
    filter("tokenizer.ggml.token_type", &mut w)?;
    filter("tokenizer.ggml.scores", &mut w)?;
    for (k, id) in &special_keys {
        if let Some(&nid) = new_id.get(*id as usize) {
            w.set(k, Value::U32(nid));
        }
    }
    let t = w.tensors.iter_mut().find(|t| t.name == "token_embd.weight").expect("the source has it");
    t.dims[1] = kept as u64;
    t.data = rows.into();
    let after = (kept * row) as u64;
    Ok((w, VocabTrim { before: n, kept, used: used.len(), embd_bytes: (data.len() as u64, after) }))
}
