//! Constrained decoding: output that follows a JSON schema, through
//! [llguidance](https://github.com/guidance-ai/llguidance) (an Earley parser over the
//! schema's grammar, whose lexer walks a trie of the vocabulary's token bytes).
//!
//! Three pieces:
//!
//! - [`OutputFormat`], public, in [`GenerateParams::format`](crate::GenerateParams): free
//!   text, any JSON object, or JSON following a schema. [`OutputFormat::validate`] compiles
//!   the schema to a grammar without a tokenizer, so a bad schema is
//!   [`Error::InvalidSchema`] before any work.
//! - [`Grammars`], one per decoder: the token trie (every token's bytes; control and
//!   end-of-generation tokens as llguidance's special tokens, so no grammar but one that names
//!   them lets them through; the end-of-generation tokens as its EOS set) and the parser
//!   factory over it, both built on the first constrained request and kept.
//! - [`Constrained`], one per request: the matcher. Each token: the allowed-token mask from
//!   the matcher, the banned tokens' logits set to −∞ in a copy of the row, the sampler's
//!   draw, the token committed to the matcher. When the grammar is complete (nothing may
//!   follow) the generation ends.
//!
//! The batch scheduler reaches a decoder's [`Grammars`] from the tokenizer it passes to
//! `Decoding::step` (in `generate.rs`): every decoder registers its tokenizer's address in a
//! process-wide list of weak references ([`Grammars::matcher_for`]), so no signature of the
//! per-token step had to change.

use std::sync::{Arc, Mutex, OnceLock, Weak};

use edgellm_runtime::Sampler;
use edgellm_text::{TokenType, Tokenizer};
use llguidance::api::{GrammarInit, ParserLimits, TopLevelGrammar, ValidationResult};
use llguidance::{Matcher, ParserFactory};
use toktrie::{ApproximateTokEnv, SimpleVob, TokRxInfo, TokTrie};

use crate::error::{Error, Result};

/// What the generated text must be.
///
/// With [`OutputFormat::JsonObject`] or [`OutputFormat::JsonSchema`], every token is drawn
/// from those the grammar allows next, and generation ends as soon as the JSON value is
/// complete ([`FinishReason::Stop`](crate::FinishReason::Stop); or
/// [`FinishReason::Eos`](crate::FinishReason::Eos) when the model ends it with an
/// end-of-generation token where the grammar allows one).
/// [`GenerateParams::max_tokens`](crate::GenerateParams::max_tokens) still applies: a
/// generation cut by it ([`FinishReason::Length`](crate::FinishReason)) can hold incomplete
/// JSON; so can one cut by a stop string, which still applies too.
///
/// Between two JSON tokens the output may hold a space or a tab, or a line break and up to 20
/// spaces or tabs of indentation (bounded, so that a model cannot fill its token limit with
/// blank lines; a schema's own llguidance `x-guidance` options replace this). An
/// end-of-generation token is allowed only once the value is complete, and
/// [`GenerateParams::ignore_eos`](crate::GenerateParams::ignore_eos) does not outlast a
/// complete value.
///
/// ```
/// use edgellm::{GenerateParams, OutputFormat};
///
/// let schema = serde_json::json!({
///     "type": "object",
///     "properties": { "city": { "type": "string" }, "population": { "type": "integer" } },
///     "required": ["city", "population"]
/// });
/// let params = GenerateParams::greedy(64).with_format(OutputFormat::JsonSchema(schema));
/// assert!(params.validate().is_ok());
/// let bad = OutputFormat::JsonSchema(serde_json::json!({ "type": "no such type" }));
/// assert!(matches!(bad.validate(), Err(edgellm::Error::InvalidSchema(_))));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub enum OutputFormat {
    /// Free text (no constraint): the default.
    #[default]
    Text,
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`): the schema
    /// `{"type": "object"}`.
    JsonObject,
    /// JSON that validates against this JSON schema (OpenAI's
    /// `response_format: {"type": "json_schema", "json_schema": {"schema": ...}}`).
    ///
    /// What llguidance supports: types, `properties`, `required`, `additionalProperties`,
    /// `items`, `prefixItems`, `minItems`/`maxItems`, `enum`, `const`, `anyOf`/`oneOf`/`allOf`,
    /// string `pattern`, `minLength`/`maxLength` and common `format`s, numeric bounds, local
    /// `$ref`s (`#/$defs/...`; references to other documents are not resolved). Object
    /// properties come in the schema's order.
    JsonSchema(serde_json::Value),
}

impl OutputFormat {
    /// Whether this format constrains the output (anything but [`OutputFormat::Text`]).
    pub fn is_constrained(&self) -> bool {
        !matches!(self, OutputFormat::Text)
    }

    /// Check that the schema compiles to a grammar (no tokenizer needed):
    /// [`Error::InvalidSchema`] naming the fault otherwise. [`OutputFormat::Text`] and
    /// [`OutputFormat::JsonObject`] are always valid.
    pub fn validate(&self) -> Result<()> {
        let Some(grammar) = self.grammar() else { return Ok(()) };
        match GrammarInit::Serialized(grammar).validate(None, ParserLimits::default()) {
            ValidationResult::Error(e) => Err(Error::InvalidSchema(e)),
            ValidationResult::Valid | ValidationResult::Warnings(_) => Ok(()),
        }
    }

    /// The grammar, for a constrained format: the schema with [`WHITESPACE`] as its JSON
    /// whitespace (unless the schema sets llguidance's own `x-guidance` options).
    fn grammar(&self) -> Option<TopLevelGrammar> {
        let mut schema = match self {
            OutputFormat::Text => return None,
            OutputFormat::JsonObject => serde_json::json!({ "type": "object" }),
            OutputFormat::JsonSchema(schema) => schema.clone(),
        };
        if let Some(obj) = schema.as_object_mut() {
            obj.entry("x-guidance")
                .or_insert_with(|| serde_json::json!({ "whitespace_pattern": WHITESPACE }));
        }
        Some(TopLevelGrammar::from_json_schema(schema))
    }
}

/// The whitespace allowed between two JSON tokens (llama.cpp's JSON grammar allows the same): a
/// space or a tab, or a line break and up to 20 spaces or tabs of indentation. Unbounded
/// whitespace lets a model that wants to end where the schema does not allow it (a required
/// property still missing) emit blank lines until its token limit.
const WHITESPACE: &str = r"[\x20\x09]|\x0D?\x0A[\x20\x09]{0,20}";

/// A decoder's constrained-decoding state: the token trie and parser factory of its
/// vocabulary, built on first use ([`Grammars::factory`]) and shared by every request.
pub(crate) struct Grammars {
    /// Address of the tokenizer this serves (see [`Grammars::matcher_for`]).
    tokenizer: usize,
    factory: OnceLock<std::result::Result<ParserFactory, String>>,
}

/// Every decoder's [`Grammars`], by its tokenizer's address. A decoder holds the only strong
/// reference, so an entry upgrades only while its decoder, and so its tokenizer at that address
/// (inside the decoder's box), is alive.
static LIVE: Mutex<Vec<Weak<Grammars>>> = Mutex::new(Vec::new());

fn tokenizer_addr(tok: &Tokenizer) -> usize {
    tok as *const Tokenizer as usize
}

impl Grammars {
    /// The state of a decoder whose tokenizer is `tok`, which must stay where it is (inside the
    /// decoder's box) for as long as the returned value lives; registered for
    /// [`Grammars::matcher_for`]. Nothing is built yet.
    pub(crate) fn register(tok: &Tokenizer) -> Arc<Grammars> {
        let g = Arc::new(Grammars { tokenizer: tokenizer_addr(tok), factory: OnceLock::new() });
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&g));
        g
    }

    /// State that serves no tokenizer, to stand in until the decoder is in its box and
    /// [`Grammars::register`] can take its tokenizer's address.
    pub(crate) fn detached() -> Arc<Grammars> {
        Arc::new(Grammars { tokenizer: 0, factory: OnceLock::new() })
    }

    /// [`Grammars::matcher`] of the decoder whose tokenizer is `tok` (found by its address in
    /// the list [`Grammars::register`] fills): the batch scheduler's way in, which holds only
    /// the tokenizer. The state is used while `tok` is borrowed, so its decoder is alive, and
    /// no strong reference leaves this function.
    pub(crate) fn matcher_for(tok: &Tokenizer, format: &OutputFormat) -> Result<Option<Constrained>> {
        if !format.is_constrained() {
            return Ok(None);
        }
        let addr = tokenizer_addr(tok);
        let found = {
            let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
            live.iter().filter_map(Weak::upgrade).find(|g| g.tokenizer == addr)
        };
        match found {
            Some(g) => g.matcher(tok, format),
            // A tokenizer no decoder registered (not one of this crate's): state of its own.
            None => Grammars { tokenizer: addr, factory: OnceLock::new() }.matcher(tok, format),
        }
    }

    /// The parser factory of `tok`'s vocabulary, built on the first call (the token trie, and
    /// llguidance's slicing of the vocabulary by common lexemes). [`Error::Constraint`] when the
    /// vocabulary cannot serve constrained decoding (it has no end-of-generation token).
    pub(crate) fn factory(&self, tok: &Tokenizer) -> Result<&ParserFactory> {
        debug_assert_eq!(self.tokenizer, tokenizer_addr(tok), "the decoder's own tokenizer");
        self.factory.get_or_init(|| build_factory(tok)).as_ref().map_err(|e| Error::Constraint(e.clone()))
    }

    /// A matcher for `format` ([`OutputFormat::Text`]: none). [`Error::InvalidSchema`] when the
    /// grammar cannot be built for this vocabulary.
    pub(crate) fn matcher(&self, tok: &Tokenizer, format: &OutputFormat) -> Result<Option<Constrained>> {
        let Some(grammar) = format.grammar() else { return Ok(None) };
        let factory = self.factory(tok)?;
        let parser = factory.create_parser(grammar).map_err(|e| Error::InvalidSchema(e.to_string()))?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(Error::InvalidSchema(e));
        }
        let n_vocab = factory.tok_env().tok_trie().vocab_size();
        Ok(Some(Constrained { matcher, n_vocab, mask: SimpleVob::new(), masked: Vec::new() }))
    }
}

/// The bytes llguidance sees for token `id`: its text, or for control, unknown and
/// end-of-generation tokens llguidance's special-token form (a 0xFF byte, never part of UTF-8
/// text, then the token's name). Unused slots have none (never allowed).
fn token_word(tok: &Tokenizer, id: u32) -> Vec<u8> {
    let ty = tok.token_type(id);
    if ty == Some(TokenType::Unused) {
        return Vec::new();
    }
    if tok.is_eog(id) || matches!(ty, Some(TokenType::Control | TokenType::Unknown)) {
        let name = tok.token_str(id).unwrap_or_default();
        let mut w = Vec::with_capacity(1 + name.len());
        w.push(TokTrie::SPECIAL_TOKEN_MARKER);
        w.extend_from_slice(name.as_bytes());
        return w;
    }
    tok.piece(id).to_vec()
}

fn build_factory(tok: &Tokenizer) -> std::result::Result<ParserFactory, String> {
    let eog = tok.eog_ids();
    let Some(&first) = eog.first() else {
        return Err("the vocabulary has no end-of-generation token (EOS, end-of-turn) to end constrained \
                    output with: constrained decoding needs a model whose tokenizer declares one"
            .to_string());
    };
    let n = tok.vocab_size();
    let words: Vec<Vec<u8>> = (0..n as u32).map(|id| token_word(tok, id)).collect();
    let info = TokRxInfo {
        vocab_size: n as u32,
        tok_eos: tok.eos_id().filter(|&e| tok.is_eog(e)).unwrap_or(first),
        tok_bos: tok.bos_id(),
        tok_pad: tok.pad_id(),
        tok_unk: tok.unk_id(),
        tok_end_of_turn: tok.eot_id(),
    };
    let trie = TokTrie::from(&info, &words).with_eos_tokens(eog);
    // Greedy (approximate) tokenization: llguidance then forces no tokens of its own, it only
    // masks; every token still comes from the model's logits.
    let env: toktrie::TokEnv = Arc::new(ApproximateTokEnv::new(trie));
    debug_assert!(!env.tokenize_is_canonical());
    let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
    // A library does not write llguidance's warnings to stderr.
    factory.quiet();
    Ok(factory)
}

/// One request's constraint: its matcher, and the logits row with the banned tokens at −∞.
pub(crate) struct Constrained {
    matcher: Matcher,
    /// Tokens the trie knows; logits past it (a padded output layer) are always banned.
    n_vocab: usize,
    /// The allowed tokens at the current step (llguidance computes a new bitset each step; it
    /// is kept here until the next).
    mask: SimpleVob,
    /// The row being sampled: a copy of the model's logits, banned tokens at −∞ (one per
    /// request, sized on the first token, reused after).
    masked: Vec<f32>,
}

impl Constrained {
    /// Draw the next token from `logits` among those the grammar allows, and commit it to the
    /// matcher. An error (the message) when the matcher fails: no token allowed, or a grammar
    /// too complex for its limits.
    pub(crate) fn sample(
        &mut self,
        sampler: &mut Sampler,
        logits: &[f32],
    ) -> std::result::Result<u32, String> {
        self.mask_logits(logits)?;
        let mut id = sampler.sample(&self.masked);
        if !self.mask.is_allowed(id) || id as usize >= self.n_vocab {
            // Only when every allowed logit is −∞ or NaN, or a draw's rounding fell on a banned
            // token: take the allowed token with the highest logit.
            id = best_allowed(logits, &self.mask, self.n_vocab)
                .ok_or_else(|| "the grammar allows no token of this vocabulary".to_string())?;
        }
        self.commit(id)?;
        Ok(id)
    }

    /// The mask of the grammar's state, and `logits` with the tokens it bans at −∞ (in
    /// `self.masked`).
    fn mask_logits(&mut self, logits: &[f32]) -> std::result::Result<(), String> {
        self.mask = self.matcher.compute_mask().map_err(|e| e.to_string())?;
        self.masked.clear();
        self.masked.extend_from_slice(logits);
        ban(&mut self.masked, &self.mask, self.n_vocab);
        Ok(())
    }

    /// Advance the grammar by token `id`.
    fn commit(&mut self, id: u32) -> std::result::Result<(), String> {
        self.matcher.consume_token(id).map_err(|e| e.to_string())
    }

    /// Whether the grammar is complete: nothing may follow (generation ends).
    pub(crate) fn is_done(&self) -> bool {
        self.matcher.is_stopped()
    }
}

/// Set the logits of the tokens `mask` bans to −∞ (and every logit from `n_vocab` on),
/// skipping whole words of 32 allowed tokens.
fn ban(logits: &mut [f32], mask: &SimpleVob, n_vocab: usize) {
    let n = logits.len().min(n_vocab);
    for (w, &bits) in mask.as_slice().iter().enumerate() {
        let base = w * 32;
        if base >= n {
            break;
        }
        let mut banned = !bits;
        while banned != 0 {
            let i = base + banned.trailing_zeros() as usize;
            if i >= n {
                break;
            }
            logits[i] = f32::NEG_INFINITY;
            banned &= banned - 1;
        }
    }
    // Words past the mask's end, and ids past the trie's vocabulary.
    let covered = (mask.as_slice().len() * 32).min(n);
    logits[covered..].fill(f32::NEG_INFINITY);
}

/// The allowed token with the highest logit (the lowest id among equals), if any.
fn best_allowed(logits: &[f32], mask: &SimpleVob, n_vocab: usize) -> Option<u32> {
    let mut best: Option<(u32, f32)> = None;
    for (i, &l) in logits.iter().enumerate().take(n_vocab) {
        if mask.is_allowed(i as u32) && best.is_none_or(|(_, b)| l > b) {
            best = Some((i as u32, l));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_exactly_the_disallowed_tokens() {
        let n = 70;
        let mut mask = SimpleVob::alloc(n);
        for t in [0u32, 5, 31, 32, 33, 64, 69] {
            mask.allow_token(t);
        }
        // 72 logits: two past the vocabulary of the mask.
        let mut logits: Vec<f32> = (0..72).map(|i| i as f32).collect();
        ban(&mut logits, &mask, n);
        for (i, &l) in logits.iter().enumerate() {
            let allowed = i < n && mask.is_allowed(i as u32);
            assert_eq!(l.is_finite(), allowed, "token {i}");
            if allowed {
                assert_eq!(l, i as f32);
            }
        }
        assert_eq!(best_allowed(&logits, &mask, n), Some(69));
        assert_eq!(best_allowed(&logits, &SimpleVob::alloc(n), n), None);
    }

    /// A matcher for `format` over llguidance's test vocabulary of the 256 bytes (and a few
    /// special tokens, the last one its EOS).
    fn byte_matcher(format: &OutputFormat) -> Matcher {
        let env = ApproximateTokEnv::single_byte_env();
        let mut factory = ParserFactory::new_simple(&env).unwrap();
        factory.quiet();
        Matcher::new(factory.create_parser(format.grammar().unwrap()))
    }

    /// Feed `text` a byte at a time: how many bytes the grammar took before refusing one.
    fn accepted(m: &mut Matcher, text: &str) -> usize {
        text.bytes()
            .take_while(|&b| {
                m.compute_mask().unwrap().is_allowed(b as u32) && m.consume_token(b as u32).is_ok()
            })
            .count()
    }

    #[test]
    fn the_grammar_takes_valid_json_and_ends_with_it() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": { "n": { "type": "integer", "minimum": 1, "maximum": 9 }, "s": { "enum": ["a", "b"] } },
            "required": ["n", "s"],
            "additionalProperties": false
        });
        let f = OutputFormat::JsonSchema(schema);
        let text = "{\"n\": 7,\n  \"s\": \"b\"}";
        let mut m = byte_matcher(&f);
        assert_eq!(accepted(&mut m, text), text.len());
        assert!(m.is_stopped(), "nothing may follow a complete object");
        // Out of range, not in the enum, a property missing.
        for (bad, at) in [("{\"n\": 12", 7), ("{\"n\": 3, \"s\": \"c", 15), ("{\"n\": 3}", 7)] {
            assert_eq!(accepted(&mut byte_matcher(&f), bad), at, "{bad}");
        }
        // Whitespace between tokens is bounded: a line break and 20 spaces, not 21.
        let indent = |k: usize| format!("{{\n{}\"", " ".repeat(k));
        assert_eq!(accepted(&mut byte_matcher(&OutputFormat::JsonObject), &indent(20)), 23);
        assert_eq!(accepted(&mut byte_matcher(&OutputFormat::JsonObject), &indent(21)), 22);
        assert_eq!(accepted(&mut byte_matcher(&OutputFormat::JsonObject), "[1]"), 0, "an object only");
    }

    /// The constraint's own cost per token on SmolLM2's vocabulary (49152 tokens): a greedy
    /// JSON-schema generation is replayed through fresh matchers, timing the mask, the banned
    /// logits and the commit of each token (the model and the sampler, paid with or without a
    /// format, left out).
    #[test]
    #[ignore = "timing: cargo test --release -p edgellm --lib -- --ignored --nocapture mask_cost"]
    fn mask_cost() {
        use std::ops::ControlFlow;
        use std::time::Instant;

        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf");
        if !path.exists() {
            eprintln!("skipping: {} is absent (run scripts/fetch-models)", path.display());
            return;
        }
        let engine = crate::Engine::load(&path, crate::EngineOptions::default()).unwrap();
        let dec = engine.decoder("generate text").unwrap();
        let tok = &dec.lm.tokenizer;
        let t = Instant::now();
        dec.grammars.factory(tok).unwrap();
        eprintln!(
            "token trie and parser factory: {:.0} ms (once per engine)",
            t.elapsed().as_secs_f64() * 1e3
        );
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "name": { "type": "string", "maxLength": 40 },
                "age": { "type": "integer", "minimum": 0, "maximum": 130 },
                "role": { "enum": ["admin", "user", "guest"] },
                "address": {
                    "type": "object",
                    "properties": { "city": { "type": "string" }, "zip": { "type": "string", "pattern": "^[0-9]{5}$" } },
                    "required": ["city", "zip"]
                },
                "tags": { "type": "array", "items": { "type": "string", "maxLength": 16 }, "maxItems": 4 }
            },
            "required": ["name", "age", "role", "address", "tags"]
        });
        let format = OutputFormat::JsonSchema(schema);
        let messages = [crate::Message::new("user", "Describe a fictional user of a web site as JSON.")];
        let params = crate::GenerateParams::greedy(256).with_format(format.clone());
        let c = engine.chat(&messages, &params, |_| ControlFlow::Continue(())).unwrap();
        eprintln!("{} tokens ({}): {}", c.ids.len(), c.finish.as_str(), c.text);
        let logits = vec![0.5f32; tok.vocab_size()];
        let (mut best, mut compile) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..5 {
            let t = Instant::now();
            let mut m = dec.grammars.matcher(tok, &format).unwrap().unwrap();
            compile = compile.min(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            for &id in &c.ids {
                m.mask_logits(&logits).unwrap();
                assert!(m.mask.is_allowed(id), "the generated token {id} is allowed");
                m.commit(id).unwrap();
            }
            best = best.min(t.elapsed().as_secs_f64() * 1e3 / c.ids.len() as f64);
        }
        eprintln!(
            "schema to matcher: {compile:.2} ms per request; mask + ban + commit: {:.1} us per token (best of 5)",
            best * 1e3
        );
    }

    #[test]
    fn formats_are_checked_without_a_tokenizer() {
        assert!(OutputFormat::Text.validate().is_ok());
        assert!(OutputFormat::JsonObject.validate().is_ok());
        let ok = serde_json::json!({
            "type": "object",
            "properties": { "n": { "type": "integer", "minimum": 1, "maximum": 9 } },
            "required": ["n"]
        });
        assert!(OutputFormat::JsonSchema(ok).validate().is_ok());
        for bad in [
            serde_json::json!({ "type": "no such type" }),
            serde_json::json!({ "type": "integer", "minimum": 5, "maximum": 1 }),
            serde_json::json!({ "$ref": "#/$defs/missing" }),
        ] {
            let e = OutputFormat::JsonSchema(bad.clone()).validate();
            assert!(matches!(e, Err(Error::InvalidSchema(_))), "{bad}: {e:?}");
        }
    }
}
