//! Hugging Face `config.json`: the common hyper-parameters, typed, plus the raw JSON.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// An error reading `config.json`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The JSON is malformed or a field has the wrong type.
    #[error("{path}: invalid config.json: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A field the model needs is missing.
    #[error("config.json lacks '{0}'")]
    Missing(&'static str),
}

/// The fields of `config.json` that edgellm's architectures use. All optional: each model checks
/// what it needs with [`HfConfig::need`].
#[allow(missing_docs)]
#[derive(Clone, Debug, Default, Deserialize)]
pub struct HfConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    pub model_type: Option<String>,
    pub vocab_size: Option<usize>,
    pub hidden_size: Option<usize>,
    pub num_hidden_layers: Option<usize>,
    pub num_attention_heads: Option<usize>,
    pub num_key_value_heads: Option<usize>,
    pub intermediate_size: Option<usize>,
    pub max_position_embeddings: Option<usize>,
    pub type_vocab_size: Option<usize>,
    pub layer_norm_eps: Option<f64>,
    pub rms_norm_eps: Option<f64>,
    pub hidden_act: Option<String>,
    pub rope_theta: Option<f64>,
    pub pad_token_id: Option<i64>,
    pub torch_dtype: Option<String>,
    /// The whole JSON object.
    #[serde(skip)]
    pub raw: serde_json::Value,
}

impl HfConfig {
    /// Read and parse `config.json` at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<HfConfig, ConfigError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.into(), source })?;
        HfConfig::parse(&text).map_err(|source| ConfigError::Json { path: path.into(), source })
    }

    /// Parse the text of a `config.json`.
    pub fn parse(text: &str) -> Result<HfConfig, serde_json::Error> {
        let raw: serde_json::Value = serde_json::from_str(text)?;
        let mut cfg: HfConfig = serde_json::from_value(raw.clone())?;
        cfg.raw = raw;
        Ok(cfg)
    }

    /// `Some` field or [`ConfigError::Missing`] naming it.
    pub fn need<T: Copy>(v: Option<T>, name: &'static str) -> Result<T, ConfigError> {
        v.ok_or(ConfigError::Missing(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bert_config() {
        let c = HfConfig::parse(
            r#"{"architectures":["BertModel"],"hidden_size":384,"num_hidden_layers":6,"layer_norm_eps":1e-12,"x":1}"#,
        )
        .unwrap();
        assert_eq!(c.hidden_size, Some(384));
        assert_eq!(c.raw["x"], 1);
        assert!(HfConfig::need(c.vocab_size, "vocab_size").is_err());
        assert!(HfConfig::parse(r#"{"hidden_size":"big"}"#).is_err());
    }
}
