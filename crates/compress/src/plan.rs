//! The quantization plan: which element type every tensor of a model gets.
//!
//! A [`Scheme`] names the target (`Q4_0`, `Q4_K_M`, ...). Each scheme has a base type and, like
//! llama.cpp's `llama-quantize` (whose published per-tensor rules these follow, so that files
//! and sizes are comparable), rules that keep some tensors at higher precision:
//!
//! - Only tensors of two or more dimensions whose name ends in `weight` (and not `_norm.weight`)
//!   are quantized; norms, biases and other vectors keep their type (F32).
//! - The output projection — or, when there is no `output.weight`, the token embedding that
//!   doubles as it — gets Q6_K (Q8_0 for the Q8_0 scheme, and Q8_0 when its row length is not a
//!   multiple of the base type's block).
//! - `Q4_K_M` / `Q5_K_M`: `attn_v` and `ffn_down` get Q6_K in the first eighth of the layers,
//!   the last eighth, and every third layer between (llama.cpp's "use more bits" layers).
//! - `Q4_K_S`: `attn_v` of the first 4 layers and `ffn_down` of the first eighth get Q5_K.
//! - `Q3_K_M`: `attn_v` gets Q5_K in the first 2 layers and Q4_K after; `ffn_down` gets Q5_K in
//!   the first sixteenth and Q4_K after; `attn_output` gets Q4_K.
//! - `Q2_K`: `attn_v` gets Q3_K (Q4_K with 4+ query heads per KV head); `ffn_down` and
//!   `attn_output` get Q3_K.
//! - `Q4_0` / `Q5_0` with an importance matrix: `ffn_down` of the first eighth of the layers
//!   gets Q4_1 / Q5_1.
//! - `Q3_K`, `Q4_K`, `Q5_K`, `Q6_K` (no suffix): every quantized tensor gets the base type
//!   except the output rule above (llama.cpp has no such uniform file type; `general.file_type`
//!   records the `_S` variant).
//!
//! Then per tensor: `--keep PATTERN=TYPE` overrides replace the scheme's choice, and a row
//! length that is not a multiple of the chosen type's block falls back as llama.cpp does:
//! Q2_K/Q3_K → Q4_0, Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, and a 32-element type whose block
//! still does not divide the row → F16. (SmolLM2-135M has width 576, not a multiple of 256,
//! so most of its k-quant tensors fall back this way, in llama.cpp and here alike.)

use std::fmt;

use edgellm_core::DType;

use crate::CompressError;

/// A quantization target: a single type or a named mix.
#[allow(non_camel_case_types, missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    F32,
    F16,
    BF16,
    Q8_0,
    Q5_0,
    Q5_1,
    Q4_0,
    Q4_1,
    Q6_K,
    Q5_K,
    Q4_K,
    Q3_K,
    Q2_K,
    Q5_K_M,
    Q4_K_M,
    Q4_K_S,
    Q3_K_M,
}

impl Scheme {
    /// Every scheme, in order of decreasing size.
    pub const ALL: [Scheme; 17] = [
        Scheme::F32,
        Scheme::F16,
        Scheme::BF16,
        Scheme::Q8_0,
        Scheme::Q6_K,
        Scheme::Q5_K_M,
        Scheme::Q5_1,
        Scheme::Q5_K,
        Scheme::Q5_0,
        Scheme::Q4_1,
        Scheme::Q4_K_M,
        Scheme::Q4_K_S,
        Scheme::Q4_K,
        Scheme::Q4_0,
        Scheme::Q3_K_M,
        Scheme::Q3_K,
        Scheme::Q2_K,
    ];

    /// The name, as llama.cpp spells it.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::F32 => "F32",
            Scheme::F16 => "F16",
            Scheme::BF16 => "BF16",
            Scheme::Q8_0 => "Q8_0",
            Scheme::Q5_0 => "Q5_0",
            Scheme::Q5_1 => "Q5_1",
            Scheme::Q4_0 => "Q4_0",
            Scheme::Q4_1 => "Q4_1",
            Scheme::Q6_K => "Q6_K",
            Scheme::Q5_K => "Q5_K",
            Scheme::Q4_K => "Q4_K",
            Scheme::Q3_K => "Q3_K",
            Scheme::Q2_K => "Q2_K",
            Scheme::Q5_K_M => "Q5_K_M",
            Scheme::Q4_K_M => "Q4_K_M",
            Scheme::Q4_K_S => "Q4_K_S",
            Scheme::Q3_K_M => "Q3_K_M",
        }
    }

    /// The scheme with this name (case-insensitive).
    pub fn parse(s: &str) -> Result<Scheme, CompressError> {
        Scheme::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| CompressError::UnknownScheme(s.to_string()))
    }

    /// The type most tensors get.
    pub fn base_type(self) -> DType {
        match self {
            Scheme::F32 => DType::F32,
            Scheme::F16 => DType::F16,
            Scheme::BF16 => DType::BF16,
            Scheme::Q8_0 => DType::Q8_0,
            Scheme::Q5_0 => DType::Q5_0,
            Scheme::Q5_1 => DType::Q5_1,
            Scheme::Q4_0 => DType::Q4_0,
            Scheme::Q4_1 => DType::Q4_1,
            Scheme::Q6_K => DType::Q6_K,
            Scheme::Q5_K | Scheme::Q5_K_M => DType::Q5_K,
            Scheme::Q4_K | Scheme::Q4_K_M | Scheme::Q4_K_S => DType::Q4_K,
            Scheme::Q3_K | Scheme::Q3_K_M => DType::Q3_K,
            Scheme::Q2_K => DType::Q2_K,
        }
    }

    /// The `general.file_type` value (llama.cpp's `llama_ftype`).
    pub fn file_type(self) -> u32 {
        match self {
            Scheme::F32 => 0,
            Scheme::F16 => 1,
            Scheme::Q4_0 => 2,
            Scheme::Q4_1 => 3,
            Scheme::Q8_0 => 7,
            Scheme::Q5_0 => 8,
            Scheme::Q5_1 => 9,
            Scheme::Q2_K => 10,
            Scheme::Q3_K => 11,
            Scheme::Q3_K_M => 12,
            Scheme::Q4_K | Scheme::Q4_K_S => 14,
            Scheme::Q4_K_M => 15,
            Scheme::Q5_K => 16,
            Scheme::Q5_K_M => 17,
            Scheme::Q6_K => 18,
            Scheme::BF16 => 32,
        }
    }

    /// One line saying what the scheme keeps at higher precision (for `--help` and reports).
    pub fn rules(self) -> &'static str {
        match self {
            Scheme::F32 | Scheme::F16 | Scheme::BF16 => "every matrix in the base type; vectors stay F32",
            Scheme::Q8_0 => "every matrix Q8_0",
            Scheme::Q4_0 | Scheme::Q5_0 => {
                "output/tied embedding Q6_K (Q8_0 if its rows do not fit); with an imatrix, ffn_down of the \
                 first 1/8 layers gets the _1 type"
            }
            Scheme::Q5_1 | Scheme::Q4_1 | Scheme::Q6_K | Scheme::Q5_K | Scheme::Q4_K | Scheme::Q3_K => {
                "output/tied embedding Q6_K (Q8_0 if its rows do not fit); the rest the base type"
            }
            Scheme::Q2_K => "output Q6_K; attn_v Q3_K (Q4_K if GQA >= 4); ffn_down, attn_output Q3_K",
            Scheme::Q5_K_M => {
                "output Q6_K; attn_v and ffn_down Q6_K on the first/last 1/8 layers and every 3rd"
            }
            Scheme::Q4_K_M => {
                "output Q6_K; attn_v and ffn_down Q6_K on the first/last 1/8 layers and every 3rd"
            }
            Scheme::Q4_K_S => "output Q6_K; attn_v Q5_K on layers 0-3; ffn_down Q5_K on the first 1/8 layers",
            Scheme::Q3_K_M => {
                "output Q6_K; attn_v Q5_K (layers 0-1) else Q4_K; ffn_down Q5_K (first 1/16) else Q4_K; \
                 attn_output Q4_K"
            }
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--keep PATTERN=TYPE` override: tensors whose whole name matches the glob `PATTERN`
/// (`*` any run of characters, `?` one character) get `TYPE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeepRule {
    /// The glob.
    pub pattern: String,
    /// The type those tensors get.
    pub dtype: DType,
}

impl KeepRule {
    /// Parses `PATTERN=TYPE`, e.g. `blk.*.attn_v.weight=Q8_0` or `token_embd.weight=F16`.
    pub fn parse(s: &str) -> Result<KeepRule, CompressError> {
        let bad = |why: &str| CompressError::BadKeep { rule: s.to_string(), why: why.to_string() };
        let (pattern, ty) = s.rsplit_once('=').ok_or_else(|| bad("expected PATTERN=TYPE"))?;
        let pattern = pattern.trim();
        if pattern.is_empty() {
            return Err(bad("the pattern is empty"));
        }
        let dtype =
            DType::from_name(ty.trim()).ok_or_else(|| bad(&format!("unknown type {:?}", ty.trim())))?;
        if !dtype.is_supported() || dtype == DType::Q8_K {
            return Err(bad(&format!(
                "{dtype} cannot be written as a weight type (use F32, F16, BF16, Q8_0, Q6_K, Q5_K, Q5_1, \
                 Q5_0, Q4_K, Q4_1, Q4_0, Q3_K or Q2_K)"
            )));
        }
        Ok(KeepRule { pattern: pattern.to_string(), dtype })
    }

    /// Whether the rule applies to tensor `name`.
    pub fn matches(&self, name: &str) -> bool {
        glob(self.pattern.as_bytes(), name.as_bytes())
    }
}

/// Whether `pattern` (a glob with `*` and `?`) matches the whole of `name`.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    glob(pattern.as_bytes(), name.as_bytes())
}

/// Whole-string glob match with `*` and `?`.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// What a tensor is, from its name (llama.cpp's categories).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `token_embd.weight`.
    TokenEmbd,
    /// `output.weight`.
    Output,
    /// `attn_q`.
    AttnQ,
    /// `attn_k`.
    AttnK,
    /// `attn_v` (and the fused `attn_qkv` / `attn_kv_b`, counted with it).
    AttnV,
    /// Fused `attn_qkv`.
    AttnQkv,
    /// `attn_output`.
    AttnOutput,
    /// `ffn_up*`.
    FfnUp,
    /// `ffn_gate*`.
    FfnGate,
    /// `ffn_down*`.
    FfnDown,
    /// Anything else.
    Other,
}

impl Role {
    /// The role of tensor `name`.
    pub fn of(name: &str) -> Role {
        match name {
            "output.weight" => return Role::Output,
            "token_embd.weight" | "per_layer_token_embd.weight" => return Role::TokenEmbd,
            _ => {}
        }
        let has = |s: &str| name.contains(s);
        if has("attn_qkv.weight") {
            Role::AttnQkv
        } else if has("attn_kv_b.weight") || has("attn_v.weight") {
            Role::AttnV
        } else if has("attn_k.weight") {
            Role::AttnK
        } else if has("attn_q.weight") {
            Role::AttnQ
        } else if has("attn_output.weight") {
            Role::AttnOutput
        } else if has("ffn_up") {
            Role::FfnUp
        } else if has("ffn_gate") {
            Role::FfnGate
        } else if has("ffn_down") {
            Role::FfnDown
        } else {
            Role::Other
        }
    }
}

/// Facts about the model the mix rules need.
#[derive(Clone, Copy, Debug, Default)]
pub struct ModelFacts {
    /// Transformer blocks (`{arch}.block_count`; else the number of `ffn_down` tensors).
    pub n_layer: usize,
    /// Query heads per KV head (1 when unknown).
    pub n_gqa: usize,
}

/// What the plan decided for one tensor, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorPlan {
    /// The type written.
    pub dtype: DType,
    /// Why.
    pub reason: Reason,
}

/// Why a tensor got its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not a quantizable weight (a vector, a norm, not named `*weight`): kept as it is.
    Kept,
    /// The scheme's base type.
    Base,
    /// A mix rule (named).
    Rule(&'static str),
    /// A `--keep` override (its pattern).
    Keep(String),
    /// The wanted type does not fit the row length; this is its fallback.
    Fallback {
        /// The type the rules wanted.
        wanted: DType,
    },
}

/// A tensor as the planner sees it.
#[derive(Clone, Copy, Debug)]
pub struct TensorShape<'a> {
    /// Name.
    pub name: &'a str,
    /// GGUF dims (`ne[0]`, the row length, first).
    pub dims: &'a [u64],
    /// Its type in the source.
    pub dtype: DType,
}

/// Whether llama.cpp would quantize this tensor at all; an intent model's classification head
/// (`intent.*`, a few hundred KB that decide every prediction) stays as it is too.
pub fn is_quantizable(t: &TensorShape) -> bool {
    // ggml's dimension count: up to the last dimension above one.
    let n_dims = t.dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1);
    n_dims >= 2
        && t.name.ends_with("weight")
        && !t.name.ends_with("_norm.weight")
        && !t.name.contains("ffn_gate_inp.weight")
        && !t.name.contains("position_embd")
        && !t.name.contains("token_types")
        && !t.name.starts_with("intent.")
}

/// llama.cpp's "use more bits" layers: the first and last eighth, and every third in between.
fn more_bits(i: usize, n: usize) -> bool {
    let (i, n) = (i as i64, n as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The block number of a `blk.N.*` tensor.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// The fallback of `want` for row length `ncols` (llama.cpp's rule), or `want` when it fits.
pub fn fallback(want: DType, ncols: u64) -> DType {
    let bs = want.block_size() as u64;
    if ncols.is_multiple_of(bs) {
        return want;
    }
    let fb = match want {
        DType::Q2_K | DType::Q3_K => DType::Q4_0,
        DType::Q4_K => DType::Q5_0,
        DType::Q5_K => DType::Q5_1,
        DType::Q6_K => DType::Q8_0,
        other => other,
    };
    if ncols.is_multiple_of(fb.block_size() as u64) {
        fb
    } else {
        DType::F16
    }
}

/// Plans every tensor of a model (in file order, which the layer counters rely on).
///
/// Fails if a keep rule matches no tensor (a likely typo; `edgellm inspect` lists the names).
pub fn plan(
    scheme: Scheme,
    tensors: &[TensorShape],
    facts: ModelFacts,
    keeps: &[KeepRule],
    has_imatrix: bool,
) -> Result<Vec<TensorPlan>, CompressError> {
    let base = scheme.base_type();
    let tied = !tensors.iter().any(|t| t.name == "output.weight");
    let n_attn_v = tensors.iter().filter(|t| Role::of(t.name) == Role::AttnV).count();
    let n_layer = if facts.n_layer > 0 {
        facts.n_layer
    } else {
        tensors.iter().filter(|t| Role::of(t.name) == Role::FfnDown).count()
    };
    let (mut n_seen_v, mut n_seen_down) = (0usize, 0usize);
    let mut used = vec![false; keeps.len()];
    let mut out = Vec::with_capacity(tensors.len());
    for t in tensors {
        if !is_quantizable(t) {
            out.push(TensorPlan { dtype: t.dtype, reason: Reason::Kept });
            continue;
        }
        let role = Role::of(t.name);
        let ncols = t.dims[0];
        // llama.cpp counts attn_v / ffn_down tensors in layer order (it sorts by layer); files
        // may list blocks in another order (blk.0, blk.1, blk.10, ...), so use the block number.
        let layer = layer_of(t.name);
        let (i_v, i_down) = (layer.unwrap_or(n_seen_v), layer.unwrap_or(n_seen_down));
        let mut dtype = base;
        let mut reason = Reason::Base;
        if let Some(k) = keeps.iter().position(|k| k.matches(t.name)) {
            used[k] = true;
            dtype = keeps[k].dtype;
            reason = Reason::Keep(keeps[k].pattern.clone());
        } else if base.is_quantized() {
            let rule = mix_rule(
                scheme,
                role,
                tied,
                ncols,
                (i_v, n_attn_v),
                (i_down, n_layer),
                facts.n_gqa,
                has_imatrix,
            );
            if let Some((d, why)) = rule {
                if d != dtype {
                    dtype = d;
                    reason = Reason::Rule(why);
                }
            }
        }
        match role {
            Role::AttnV => n_seen_v += 1,
            Role::FfnDown => n_seen_down += 1,
            _ => {}
        }
        let fb = fallback(dtype, ncols);
        if fb != dtype {
            reason = Reason::Fallback { wanted: dtype };
            dtype = fb;
        }
        out.push(TensorPlan { dtype, reason });
    }
    if let Some(k) = used.iter().position(|u| !u) {
        return Err(CompressError::KeepMatchedNothing(keeps[k].pattern.clone()));
    }
    Ok(out)
}

/// The mix rule for one tensor, if any: `(type, rule name)`.
#[allow(clippy::too_many_arguments)]
fn mix_rule(
    scheme: Scheme,
    role: Role,
    tied: bool,
    ncols: u64,
    (i_v, n_v): (usize, usize),
    (i_down, n_layer): (usize, usize),
    n_gqa: usize,
    has_imatrix: bool,
) -> Option<(DType, &'static str)> {
    use DType::*;
    let base = scheme.base_type();
    if role == Role::Output || (tied && role == Role::TokenEmbd) {
        let t = if !ncols.is_multiple_of(base.block_size() as u64) || base == Q8_0 { Q8_0 } else { Q6_K };
        return Some((t, "output"));
    }
    match (scheme, role) {
        (Scheme::Q2_K, Role::AttnV) => Some((if n_gqa >= 4 { Q4_K } else { Q3_K }, "attn_v")),
        (Scheme::Q2_K, Role::FfnDown) => Some((Q3_K, "ffn_down")),
        (Scheme::Q2_K, Role::AttnOutput) => Some((Q3_K, "attn_output")),
        (Scheme::Q3_K_M, Role::AttnV) => Some((if i_v < 2 { Q5_K } else { Q4_K }, "attn_v")),
        (Scheme::Q3_K_M, Role::FfnDown) => {
            Some((if i_down < n_layer / 16 { Q5_K } else { Q4_K }, "ffn_down"))
        }
        (Scheme::Q3_K_M, Role::AttnOutput) => Some((Q4_K, "attn_output")),
        (Scheme::Q3_K_M, Role::AttnQkv) => Some((Q4_K, "attn_qkv")),
        (Scheme::Q4_K_M | Scheme::Q5_K_M, Role::AttnV) if more_bits(i_v, n_v) => {
            Some((Q6_K, "attn_v more bits"))
        }
        (Scheme::Q4_K_M | Scheme::Q5_K_M, Role::FfnDown) if more_bits(i_down, n_layer) => {
            Some((Q6_K, "ffn_down more bits"))
        }
        (Scheme::Q4_K_M, Role::AttnQkv) => Some((Q5_K, "attn_qkv")),
        (Scheme::Q5_K_M, Role::AttnQkv) => Some((Q6_K, "attn_qkv")),
        (Scheme::Q4_K_S, Role::AttnV) if i_v < 4 => Some((Q5_K, "attn_v first 4")),
        (Scheme::Q4_K_S, Role::FfnDown) if i_down < n_layer / 8 => Some((Q5_K, "ffn_down first 1/8")),
        (Scheme::Q4_0, Role::FfnDown) if has_imatrix && i_down < n_layer / 8 => {
            Some((Q4_1, "ffn_down first 1/8"))
        }
        (Scheme::Q5_0, Role::FfnDown) if has_imatrix && i_down < n_layer / 8 => {
            Some((Q5_1, "ffn_down first 1/8"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_whole_names() {
        let k = KeepRule::parse("blk.*.attn_v.weight=Q8_0").unwrap();
        assert!(k.matches("blk.0.attn_v.weight"));
        assert!(k.matches("blk.29.attn_v.weight"));
        assert!(!k.matches("blk.0.attn_v.weight.x"));
        assert!(!k.matches("xblk.0.attn_v.weight"));
        assert!(KeepRule::parse("blk.?.ffn_*=F16").unwrap().matches("blk.3.ffn_down.weight"));
        assert!(!KeepRule::parse("blk.?.ffn_*=F16").unwrap().matches("blk.13.ffn_down.weight"));
    }

    #[test]
    fn keep_syntax_errors_are_typed() {
        for bad in ["blk.0", "=Q4_0", "x=Q9_9", "x=Q8_K", "x=IQ2_XS"] {
            assert!(matches!(KeepRule::parse(bad), Err(CompressError::BadKeep { .. })), "{bad}");
        }
        assert!(matches!(Scheme::parse("Q4_K_X"), Err(CompressError::UnknownScheme(_))));
        assert_eq!(Scheme::parse("q4_k_m").unwrap(), Scheme::Q4_K_M);
    }

    #[test]
    fn norms_and_intent_heads_are_not_quantized() {
        let t = |name, dims: &'static [u64]| TensorShape { name, dims, dtype: DType::F32 };
        assert!(is_quantizable(&t("blk.0.ffn_up.weight", &[384, 1536])));
        assert!(!is_quantizable(&t("intent.head.weight", &[384, 64])));
        assert!(!is_quantizable(&t("blk.0.attn_norm.weight", &[384])));
        assert!(!is_quantizable(&t("blk.0.ffn_up.weight", &[384, 1])));
    }

    #[test]
    fn fallbacks_follow_llama_cpp() {
        assert_eq!(fallback(DType::Q4_K, 576), DType::Q5_0);
        assert_eq!(fallback(DType::Q6_K, 576), DType::Q8_0);
        assert_eq!(fallback(DType::Q5_K, 576), DType::Q5_1);
        assert_eq!(fallback(DType::Q3_K, 576), DType::Q4_0);
        assert_eq!(fallback(DType::Q2_K, 576), DType::Q4_0);
        assert_eq!(fallback(DType::Q4_K, 1536), DType::Q4_K);
        assert_eq!(fallback(DType::Q4_0, 100), DType::F16);
        assert_eq!(fallback(DType::Q4_K, 100), DType::F16);
    }

    #[test]
    fn layer_rules_follow_block_numbers_not_file_order() {
        // Files may list blocks as strings sort (blk.0, blk.1, blk.10, ...), as SmolLM2's does.
        let mut layers: Vec<usize> = (0..30).collect();
        layers.sort_by_key(|i| i.to_string());
        let names: Vec<String> = layers.iter().map(|i| format!("blk.{i}.ffn_down.weight")).collect();
        let dims = [1536u64, 576];
        let shapes: Vec<_> =
            names.iter().map(|n| TensorShape { name: n, dims: &dims, dtype: DType::F32 }).collect();
        let p = plan(Scheme::Q4_K_M, &shapes, ModelFacts { n_layer: 30, n_gqa: 3 }, &[], false).unwrap();
        let mut six: Vec<usize> =
            layers.iter().zip(&p).filter(|(_, p)| p.dtype == DType::Q6_K).map(|(l, _)| *l).collect();
        six.sort();
        assert_eq!(six, vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    }

    #[test]
    fn more_bits_layers_for_30() {
        let l: Vec<usize> = (0..30).filter(|&i| more_bits(i, 30)).collect();
        assert_eq!(l, vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    }
}
