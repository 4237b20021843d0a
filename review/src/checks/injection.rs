//! Text addressed to an automated reviewer (`prompt-injection`).

use super::{Hit, Kind};
use crate::{Category, Severity};

/// `prompt-injection`.
const PROMPT_INJECTION: Kind = Kind::new(
    "prompt-injection",
    Severity::Warning,
    Category::Security,
    0.8,
);

/// Lines that tell a reviewer (or a model) to ignore its instructions, approve the
/// change or report nothing.
pub(super) fn reviewer_addressed_text(added: &[(u32, &str)]) -> Vec<Hit> {
    let steering = regex!(
        r"(?i)\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+)?(?:the\s+|your\s+)?(?:previous|prior|above|earlier|preceding|system)\s+(?:instructions?|prompts?|rules|directions)|\b(?:approve|lgtm)\s+(?:this|the)\s+(?:pr|pull request|change|merge request|diff)\b|\byou are (?:now )?(?:an? )?(?:ai|assistant|language model|code reviewer)\b|\b(?:do not|don't|never) (?:report|flag|mention)\b.*\b(?:findings?|issues?|bugs?|vulnerabilit|problems?)|\b(?:report|output|return|respond with) (?:no|zero|an empty list of) (?:findings|issues)\b|\bsystem prompt\b"
    );
    added
        .iter()
        .filter(|(_, t)| steering.is_match(t))
        .map(|&(n, t)| {
            let message = "Text addressed to an automated reviewer: the change may be trying to steer the review; review it by hand.";
            Hit::new(PROMPT_INJECTION, n, t, message)
        })
        .collect()
}
