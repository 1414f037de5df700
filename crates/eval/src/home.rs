//! Scores of the LLM command path (`edgellm intent command --data`): how often a decoder's
//! `{"device", "action", "value"}` names the device and the action a labelled utterance asks
//! for.
//!
//! HWU64's `iot_*` intents map to an expected device and the actions that count as right
//! ([`hwu64_expected`]); utterances of other labels are not scored. `value` is not scored
//! (HWU64 has no slot annotations in the files used here).

/// What an utterance of one label asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The device.
    pub device: &'static str,
    /// The actions that count as right (the first is the canonical one).
    pub actions: &'static [&'static str],
}

/// HWU64's `iot_*` labels: those [`hwu64_expected`] maps.
pub const HWU64_IOT_LABELS: [&str; 9] = [
    "iot_cleaning",
    "iot_coffee",
    "iot_hue_lightchange",
    "iot_hue_lightdim",
    "iot_hue_lightoff",
    "iot_hue_lighton",
    "iot_hue_lightup",
    "iot_wemo_off",
    "iot_wemo_on",
];

/// The expected device and actions of an HWU64 `iot_*` label; `None` for a label outside the
/// mapping (not scored).
///
/// | label | device | actions |
/// |---|---|---|
/// | `iot_hue_lighton` | light | turn_on |
/// | `iot_hue_lightoff` | light | turn_off |
/// | `iot_hue_lightdim` | light | dim |
/// | `iot_hue_lightup` | light | brighten |
/// | `iot_hue_lightchange` | light | set_color |
/// | `iot_wemo_on` | plug | turn_on |
/// | `iot_wemo_off` | plug | turn_off |
/// | `iot_cleaning` | vacuum | start, turn_on |
/// | `iot_coffee` | coffee_maker | start, turn_on |
pub fn hwu64_expected(label: &str) -> Option<Expected> {
    let (device, actions): (&str, &[&str]) = match label {
        "iot_hue_lighton" => ("light", &["turn_on"]),
        "iot_hue_lightoff" => ("light", &["turn_off"]),
        "iot_hue_lightdim" => ("light", &["dim"]),
        "iot_hue_lightup" => ("light", &["brighten"]),
        "iot_hue_lightchange" => ("light", &["set_color"]),
        "iot_wemo_on" => ("plug", &["turn_on"]),
        "iot_wemo_off" => ("plug", &["turn_off"]),
        "iot_cleaning" => ("vacuum", &["start", "turn_on"]),
        "iot_coffee" => ("coffee_maker", &["start", "turn_on"]),
        _ => return None,
    };
    Some(Expected { device, actions })
}

/// Counts over the scored utterances, overall or of one label.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandCounts {
    /// Utterances scored.
    pub n: usize,
    /// Outputs that were a complete command (the rest ran out of tokens or context).
    pub valid: usize,
    /// The device right.
    pub device: usize,
    /// The action right.
    pub action: usize,
    /// Both right.
    pub both: usize,
}

impl CommandCounts {
    /// Add one utterance: `got` is the (device, action) written, `None` when the output was
    /// not a complete command (counted wrong on every score).
    pub fn add(&mut self, expected: &Expected, got: Option<(&str, &str)>) {
        self.n += 1;
        let Some((device, action)) = got else { return };
        self.valid += 1;
        let d = device == expected.device;
        let a = expected.actions.contains(&action);
        self.device += usize::from(d);
        self.action += usize::from(a);
        self.both += usize::from(d && a);
    }

    /// `count / n` (0 for an empty set).
    pub fn rate(&self, count: usize) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            count as f64 / self.n as f64
        }
    }
}

/// Scores overall and per label (labels in the order first seen).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CommandScore {
    /// Over every scored utterance.
    pub all: CommandCounts,
    /// Per label.
    pub per_label: Vec<(String, CommandCounts)>,
}

impl CommandScore {
    /// Add one utterance of `label` (see [`CommandCounts::add`]); `false`, and nothing counted,
    /// when the label has no expected command.
    pub fn add(&mut self, label: &str, got: Option<(&str, &str)>) -> bool {
        let Some(e) = hwu64_expected(label) else { return false };
        self.all.add(&e, got);
        let i = match self.per_label.iter().position(|(l, _)| l == label) {
            Some(i) => i,
            None => {
                self.per_label.push((label.to_string(), CommandCounts::default()));
                self.per_label.len() - 1
            }
        };
        self.per_label[i].1.add(&e, got);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked_scores() {
        let mut s = CommandScore::default();
        assert!(s.add("iot_hue_lightoff", Some(("light", "turn_off")))); // both
        assert!(s.add("iot_hue_lightoff", Some(("plug", "turn_off")))); // action only
        assert!(s.add("iot_coffee", Some(("coffee_maker", "turn_on")))); // both (alternative)
        assert!(s.add("iot_cleaning", Some(("vacuum", "stop")))); // device only
        assert!(s.add("iot_wemo_on", None)); // incomplete
        assert!(!s.add("alarm_set", Some(("other", "set")))); // not scored
        assert_eq!(s.all, CommandCounts { n: 5, valid: 4, device: 3, action: 3, both: 2 });
        assert_eq!(s.per_label.len(), 4);
        assert_eq!(
            s.per_label[0],
            ("iot_hue_lightoff".into(), CommandCounts { n: 2, valid: 2, device: 1, action: 2, both: 1 })
        );
        assert!((s.all.rate(s.all.both) - 0.4).abs() < 1e-12);
        assert_eq!(CommandCounts::default().rate(0), 0.0);
    }

    #[test]
    fn every_iot_label_of_hwu64_is_mapped() {
        for l in HWU64_IOT_LABELS {
            assert!(hwu64_expected(l).is_some(), "{l}");
        }
        assert!(hwu64_expected("iot_unknown").is_none());
    }
}
