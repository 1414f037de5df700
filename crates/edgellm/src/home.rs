//! Smart-home commands from free text: a decoder (e.g. SmolLM2-135M-Instruct) writes
//! `{"device", "action", "value"}` under a JSON schema, for the commands an intent classifier
//! was not trained on.
//!
//! The schema ([`command_schema`]) names the devices ([`DEVICES`]) and actions ([`ACTIONS`]) as
//! enums and `value` as a short string or `null`, so every completed answer parses (constrained
//! decoding, [`OutputFormat::JsonSchema`]). The prompt is a system message and a few worked
//! examples written for this module ([`EXAMPLES`], none taken from a test set); a
//! [`CommandParser`] keeps them in one [`Session`], so each command evaluates only its own
//! tokens after the first (the cached prefix is reused).
//!
//! ```no_run
//! use edgellm::{home::CommandParser, Engine, EngineOptions};
//!
//! # fn main() -> Result<(), edgellm::Error> {
//! let engine = Engine::load("models/SmolLM2-135M-Instruct.Q4_1.gguf", EngineOptions::default())?;
//! let mut parser = CommandParser::new(&engine)?;
//! let parsed = parser.parse("dim the bedroom lights")?;
//! if let Some(c) = &parsed.command {
//!     println!("{} {} {:?}", c.device, c.action, c.value);
//! }
//! # Ok(())
//! # }
//! ```

use serde_json::{json, Value};

use crate::{Completion, Engine, Error, GenerateParams, Message, OutputFormat, Result, Session};

/// Devices a command may address (`other` for anything else).
pub const DEVICES: &[&str] = &[
    "light",
    "plug",
    "vacuum",
    "coffee_maker",
    "thermostat",
    "speaker",
    "tv",
    "blinds",
    "door_lock",
    "fan",
    "other",
];

/// Actions a command may ask for.
pub const ACTIONS: &[&str] = &[
    "turn_on",
    "turn_off",
    "dim",
    "brighten",
    "set_color",
    "set",
    "start",
    "stop",
    "open",
    "close",
    "lock",
    "unlock",
];

/// Longest `value` the schema allows, in characters.
pub const MAX_VALUE_CHARS: usize = 40;

/// The system message of the prompt.
pub const SYSTEM: &str = "You control a smart home. Turn the user's command into JSON with the device, \
the action, and the value asked for (a colour, a level, a temperature, a time) or null.";

/// The worked examples of the prompt: (command, answer), written for this module.
pub const EXAMPLES: &[(&str, &str)] = &[
    ("switch off the hallway lights", r#"{"device": "light", "action": "turn_off", "value": null}"#),
    ("lights on in the kitchen please", r#"{"device": "light", "action": "turn_on", "value": null}"#),
    (
        "lower the bedroom lights to 20 percent",
        r#"{"device": "light", "action": "dim", "value": "20 percent"}"#,
    ),
    ("the study lamp needs to be brighter", r#"{"device": "light", "action": "brighten", "value": null}"#),
    ("make the lights green", r#"{"device": "light", "action": "set_color", "value": "green"}"#),
    ("power up the smart plug by the desk", r#"{"device": "plug", "action": "turn_on", "value": null}"#),
    ("cut the power to the heater plug", r#"{"device": "plug", "action": "turn_off", "value": null}"#),
    ("send the robot cleaner round the hall", r#"{"device": "vacuum", "action": "start", "value": null}"#),
    ("brew me an espresso at seven", r#"{"device": "coffee_maker", "action": "start", "value": "seven"}"#),
    ("set the heating to 21 degrees", r#"{"device": "thermostat", "action": "set", "value": "21 degrees"}"#),
    ("open the living room blinds", r#"{"device": "blinds", "action": "open", "value": null}"#),
];

/// A command as the decoder wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HomeCommand {
    /// One of [`DEVICES`].
    pub device: String,
    /// One of [`ACTIONS`].
    pub action: String,
    /// The setting asked for, if any (at most [`MAX_VALUE_CHARS`] characters).
    pub value: Option<String>,
}

impl HomeCommand {
    /// Parse the decoder's JSON: `None` unless it is an object with a known `device` and
    /// `action` and a string or `null` `value` (what the schema allows).
    pub fn from_json(text: &str) -> Option<HomeCommand> {
        let v: Value = serde_json::from_str(text).ok()?;
        let device = v.get("device")?.as_str()?;
        let action = v.get("action")?.as_str()?;
        if !DEVICES.contains(&device) || !ACTIONS.contains(&action) {
            return None;
        }
        let value = match v.get("value")? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            _ => return None,
        };
        Some(HomeCommand { device: device.into(), action: action.into(), value })
    }
}

/// The JSON schema of a [`HomeCommand`]: `device` and `action` as enums, `value` a string of
/// at most [`MAX_VALUE_CHARS`] characters or `null`, all three required, nothing else.
pub fn command_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "device": { "enum": DEVICES },
            "action": { "enum": ACTIONS },
            "value": { "anyOf": [
                { "type": "string", "maxLength": MAX_VALUE_CHARS },
                { "type": "null" }
            ] }
        },
        "required": ["device", "action", "value"],
        "additionalProperties": false
    })
}

/// The conversation before the command: [`SYSTEM`] and [`EXAMPLES`] as user/assistant turns.
pub fn prompt_messages() -> Vec<Message> {
    let mut m = vec![Message::new("system", SYSTEM)];
    for (q, a) in EXAMPLES {
        m.push(Message::new("user", *q));
        m.push(Message::new("assistant", *a));
    }
    m
}

/// One parsed command.
#[derive(Clone, Debug)]
pub struct ParsedCommand {
    /// The command, or `None` when the output did not complete (token or context limit).
    pub command: Option<HomeCommand>,
    /// The generation: its text (the JSON), token counts, cached prompt tokens and timings.
    pub completion: Completion,
}

/// Turns commands into [`HomeCommand`]s with a decoder, one at a time, keeping the prompt's
/// system message and examples cached between commands.
pub struct CommandParser<'e> {
    engine: &'e Engine,
    session: Session<'e>,
    messages: Vec<Message>,
    params: GenerateParams,
}

impl std::fmt::Debug for CommandParser<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandParser").field("session", &self.session).finish_non_exhaustive()
    }
}

impl<'e> CommandParser<'e> {
    /// A parser over a decoder ([`Error::NotADecoder`] for an encoder), greedy, at most 96
    /// generated tokens per command.
    pub fn new(engine: &'e Engine) -> Result<CommandParser<'e>> {
        let session = engine.session()?;
        let params = GenerateParams::greedy(96).with_format(OutputFormat::JsonSchema(command_schema()));
        Ok(CommandParser { engine, session, messages: prompt_messages(), params })
    }

    /// The engine this parser runs on.
    pub fn engine(&self) -> &'e Engine {
        self.engine
    }

    /// Parse one command. Errors: an empty command ([`Error::InvalidParams`]), and the
    /// engine's (a command longer than the context:
    /// [`RuntimeError::PromptTooLong`](crate::RuntimeError::PromptTooLong)).
    pub fn parse(&mut self, text: &str) -> Result<ParsedCommand> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Error::InvalidParams("an empty command".into()));
        }
        self.messages.push(Message::new("user", text));
        let out = self.session.chat(&self.messages, &self.params, |_| std::ops::ControlFlow::Continue(()));
        self.messages.pop();
        let completion = out?;
        let command = HomeCommand::from_json(&completion.text);
        Ok(ParsedCommand { command, completion })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_compiles_and_examples_follow_it() {
        OutputFormat::JsonSchema(command_schema()).validate().unwrap();
        for (q, a) in EXAMPLES {
            let c = HomeCommand::from_json(a).unwrap_or_else(|| panic!("example {q:?}: {a}"));
            assert!(c.value.as_ref().is_none_or(|v| v.chars().count() <= MAX_VALUE_CHARS));
        }
    }

    #[test]
    fn from_json_refuses_what_the_schema_refuses() {
        assert!(
            HomeCommand::from_json(r#"{"device": "light", "action": "turn_on", "value": null}"#).is_some()
        );
        assert!(
            HomeCommand::from_json(r#"{"device": "toaster", "action": "turn_on", "value": null}"#).is_none()
        );
        assert!(
            HomeCommand::from_json(r#"{"device": "light", "action": "explode", "value": null}"#).is_none()
        );
        assert!(HomeCommand::from_json(r#"{"device": "light", "action": "dim", "value": 3}"#).is_none());
        assert!(HomeCommand::from_json(r#"{"device": "light", "action": "dim""#).is_none());
        assert!(HomeCommand::from_json(r#"{"device": "light", "action": "dim"}"#).is_none());
    }
}
