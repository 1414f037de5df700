//! Chat templates: the Jinja template a model ships in `tokenizer.chat_template`, rendered with
//! minijinja the way Hugging Face's `apply_chat_template` renders it (`trim_blocks`,
//! `lstrip_blocks`, Python string methods such as `.strip()` and `.startswith()`).

use edgellm_formats::GgufFile;
use minijinja::{Environment, ErrorKind};
use serde::Serialize;

use crate::Tokenizer;

/// Metadata key of the chat template.
pub const CHAT_TEMPLATE_KEY: &str = "tokenizer.chat_template";

/// ChatML (`<|im_start|>role\ncontent<|im_end|>\n`), the fallback for models without a template.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Gemma's turn format (`<start_of_turn>user\n...<end_of_turn>\n`, the assistant called `model`,
/// a system message folded into the first user turn), for Gemma files that carry no template.
pub const GEMMA_TEMPLATE: &str = "{{ bos_token }}\
{% if messages and messages[0]['role'] == 'system' %}\
{% set prefix = messages[0]['content'] | trim + '\\n\\n' %}{% set turns = messages[1:] %}\
{% else %}{% set prefix = '' %}{% set turns = messages %}{% endif %}\
{% for message in turns %}\
{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}\
{{ '<start_of_turn>' + role + '\\n' + (prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}";

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (templates may accept others, e.g. `tool`).
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// An error reading or rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum ChatTemplateError {
    /// `tokenizer.chat_template` is not a string.
    #[error("metadata key '{CHAT_TEMPLATE_KEY}' is not a string (found {0})")]
    NotAString(String),
    /// The template does not parse.
    #[error("chat template does not parse: {0:#}")]
    Syntax(#[source] minijinja::Error),
    /// Rendering took more than [`RENDER_FUEL`] template instructions: a hostile or broken
    /// template (e.g. nested loops over huge ranges) that would otherwise hang the caller.
    #[error("chat template needs more than {RENDER_FUEL} steps to render this conversation: the template is broken or hostile (e.g. loops over huge ranges); fix tokenizer.chat_template or use a built-in template")]
    TooExpensive,
    /// Rendering failed: the template raised an exception (e.g. roles that do not alternate) or
    /// used something this renderer lacks.
    #[error("chat template failed to render: {0:#}")]
    Render(#[source] minijinja::Error),
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

/// Template instructions one render may run. Real templates take a few dozen per message; a
/// conversation of 10 000 messages stays well under it, a hostile template stops in well under
/// a second.
pub const RENDER_FUEL: u64 = 2_000_000;

/// Name of the template inside the environment.
const NAME: &str = "chat";

impl ChatTemplate {
    /// The template of a GGUF file (`tokenizer.chat_template`), or `None` if it has none.
    /// `bos_token` and `eos_token` are the strings of the tokenizer's BOS and EOS tokens.
    pub fn from_gguf(f: &GgufFile, tokenizer: &Tokenizer) -> Result<Option<ChatTemplate>, ChatTemplateError> {
        let Some(v) = f.get(CHAT_TEMPLATE_KEY) else { return Ok(None) };
        let src = v.as_str().ok_or_else(|| ChatTemplateError::NotAString(format!("{:?}", v.value_type())))?;
        ChatTemplate::with_tokenizer(src, tokenizer).map(Some)
    }

    /// The file's template, or else a built-in one chosen from the vocabulary: Gemma's turn
    /// format when the vocabulary has `<start_of_turn>`, ChatML otherwise.
    pub fn from_gguf_or_builtin(
        f: &GgufFile,
        tokenizer: &Tokenizer,
    ) -> Result<ChatTemplate, ChatTemplateError> {
        match ChatTemplate::from_gguf(f, tokenizer)? {
            Some(t) => Ok(t),
            None => ChatTemplate::builtin_for(tokenizer),
        }
    }

    /// The built-in template that fits a vocabulary (see
    /// [`from_gguf_or_builtin`](Self::from_gguf_or_builtin)).
    pub fn builtin_for(tokenizer: &Tokenizer) -> Result<ChatTemplate, ChatTemplateError> {
        let src =
            if tokenizer.token_id("<start_of_turn>").is_some() { GEMMA_TEMPLATE } else { CHATML_TEMPLATE };
        ChatTemplate::with_tokenizer(src, tokenizer)
    }

    /// The ChatML fallback.
    pub fn chatml() -> ChatTemplate {
        // A constant template of this module; covered by the tests.
        ChatTemplate::new(CHATML_TEMPLATE, "", "").expect("the built-in ChatML template parses")
    }

    fn with_tokenizer(src: &str, tokenizer: &Tokenizer) -> Result<ChatTemplate, ChatTemplateError> {
        let text = |id: Option<u32>| id.and_then(|i| tokenizer.token_str(i)).unwrap_or("").to_string();
        ChatTemplate::new(src, &text(tokenizer.bos_id()), &text(tokenizer.eos_id()))
    }

    /// Compile a template.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<ChatTemplate, ChatTemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_fuel(Some(RENDER_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned(NAME, source.to_string()).map_err(ChatTemplateError::Syntax)?;
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Render a conversation to the prompt text; with `add_generation_prompt` it ends with the
    /// opening of the assistant's turn. The text holds special tokens as text: encode it with
    /// `parse_special = true`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatTemplateError> {
        let tmpl = self.env.get_template(NAME).map_err(ChatTemplateError::Syntax)?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| match e.kind() {
            ErrorKind::OutOfFuel => ChatTemplateError::TooExpensive,
            _ => ChatTemplateError::Render(e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "Be brief. "),
            ChatMessage::new("user", "Hi"),
            ChatMessage::new("assistant", "Hello!"),
            ChatMessage::new("user", "Lights on?"),
        ]
    }

    /// Found by fuzzing a hostile template (tests/corpus/chat_template/nested-huge-ranges):
    /// 10^10 loop steps stop with an error instead of hanging.
    #[test]
    fn hostile_templates_stop() {
        let t = ChatTemplate::new(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "",
            "",
        )
        .unwrap();
        let t0 = std::time::Instant::now();
        assert!(matches!(t.render(&conv(), true), Err(ChatTemplateError::TooExpensive)));
        assert!(t0.elapsed().as_secs_f64() < 10.0);
        // A long conversation through a real template is not refused.
        let long: Vec<ChatMessage> = (0..10_000)
            .map(|i| ChatMessage::new(if i % 2 == 0 { "user" } else { "assistant" }, "hi"))
            .collect();
        assert!(ChatTemplate::chatml().render(&long, true).is_ok());
        let gemma = ChatTemplate::new(GEMMA_TEMPLATE, "<bos>", "<eos>").unwrap();
        assert!(gemma.render(&long, true).is_ok());
    }

    #[test]
    fn chatml_fallback() {
        let t = ChatTemplate::chatml();
        assert_eq!(
            t.render(&conv()[1..3], true).unwrap(),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(t.render(&[], false).unwrap(), "");
    }

    #[test]
    fn gemma_builtin() {
        let t = ChatTemplate::new(GEMMA_TEMPLATE, "<bos>", "<eos>").unwrap();
        assert_eq!(
            t.render(&conv(), true).unwrap(),
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n\
             <start_of_turn>model\nHello!<end_of_turn>\n\
             <start_of_turn>user\nLights on?<end_of_turn>\n\
             <start_of_turn>model\n"
        );
    }

    #[test]
    fn python_methods_and_raise_exception() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{% if not m.role.startswith('u') %}{{ raise_exception('only users: ' + m.role) }}{% endif %}[{{ m.content.strip() }}]{% endfor %}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(t.render(&[ChatMessage::new("user", "  x ")], false).unwrap(), "[x]");
        let err = t.render(&[ChatMessage::new("bot", "y")], false).unwrap_err();
        assert!(matches!(err, ChatTemplateError::Render(_)));
        assert!(err.to_string().contains("only users: bot"), "{err}");
    }

    #[test]
    fn syntax_error_is_an_error() {
        assert!(matches!(ChatTemplate::new("{% for %}", "", ""), Err(ChatTemplateError::Syntax(_))));
    }
}
