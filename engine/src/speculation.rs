//! Speculative decoding by prompt lookup: the tokens that followed the latest earlier
//! occurrence of the sequence's last n-gram are proposed as a draft, and the model
//! verifies the whole draft in one forward pass. Verification keeps exactly the tokens
//! plain decoding would have produced (greedy), or the same distribution (sampling).

/// How a request drafts tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speculation {
    /// Plain decoding: one token per forward pass.
    Off,
    /// Prompt-lookup drafting of up to `max_draft` tokens per step.
    Ngram {
        /// Most tokens proposed in one step.
        max_draft: usize,
    },
}

/// Off by default: on this CPU a verification pass over a draft costs more than the
/// decode steps it saves (see BENCHMARKS.md); on memory-bound hardware it pays.
impl Default for Speculation {
    fn default() -> Self {
        Speculation::Off
    }
}

impl Speculation {
    /// Prompt lookup with the default draft length.
    pub const NGRAM: Speculation = Speculation::Ngram { max_draft: 8 };

    /// Parses `off` or `ngram` / `ngram:K` (the command line and config spelling).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(Speculation::Off),
            "ngram" => Some(Speculation::NGRAM),
            _ => {
                let k: usize = s.strip_prefix("ngram:")?.parse().ok()?;
                (1..=32)
                    .contains(&k)
                    .then_some(Speculation::Ngram { max_draft: k })
            }
        }
    }
}

/// Longest n-gram matched against the context.
const MAX_NGRAM: usize = 4;
/// Shortest n-gram matched (shorter matches are mostly noise).
const MIN_NGRAM: usize = 2;
/// Drafting stops for a sequence whose acceptance stays below this after `PROBATION` drafts.
const MIN_ACCEPTANCE: f64 = 0.15;
const PROBATION: usize = 12;

/// Per-sequence drafting state: adapts the draft length to the observed acceptance.
#[derive(Debug, Clone)]
pub(crate) struct Drafter {
    max_draft: usize,
    draft_len: usize,
    drafted: usize,
    accepted: usize,
    drafts: usize,
}

impl Drafter {
    /// A drafter for `mode`, or `None` when speculation is off.
    pub fn new(mode: Speculation) -> Option<Self> {
        match mode {
            Speculation::Off => None,
            Speculation::Ngram { max_draft } if max_draft > 0 => Some(Self {
                max_draft,
                draft_len: max_draft.min(4),
                drafted: 0,
                accepted: 0,
                drafts: 0,
            }),
            Speculation::Ngram { .. } => None,
        }
    }

    /// Whether drafting has paid off so far.
    fn worthwhile(&self) -> bool {
        self.drafts < PROBATION || self.accepted as f64 >= MIN_ACCEPTANCE * self.drafted as f64
    }

    /// Proposes up to the current draft length (and at most `room`) tokens to follow
    /// `context` (prompt, then generated tokens; its last token is the one about to be fed).
    pub fn propose(&self, prompt: &[u32], generated: &[u32], room: usize) -> Vec<u32> {
        let want = self.draft_len.min(room);
        if want == 0 || !self.worthwhile() {
            return Vec::new();
        }
        lookup(prompt, generated, want)
    }

    /// Records how many of `drafted` tokens were accepted, adapting the draft length.
    pub fn record(&mut self, drafted: usize, accepted: usize) {
        if drafted == 0 {
            return;
        }
        self.drafts += 1;
        self.drafted += drafted;
        self.accepted += accepted;
        if accepted == drafted {
            self.draft_len = (self.draft_len + 2).min(self.max_draft);
        } else if accepted == 0 {
            self.draft_len = (self.draft_len / 2).max(1);
        }
    }

    /// Tokens drafted and accepted so far.
    pub fn totals(&self) -> (usize, usize) {
        (self.drafted, self.accepted)
    }
}

/// The tokens after the latest earlier occurrence of the context's last n-gram.
fn lookup(prompt: &[u32], generated: &[u32], want: usize) -> Vec<u32> {
    let len = prompt.len() + generated.len();
    let at = |i: usize| {
        if i < prompt.len() {
            prompt[i]
        } else {
            generated[i - prompt.len()]
        }
    };
    for n in (MIN_NGRAM..=MAX_NGRAM).rev() {
        if len <= n {
            continue;
        }
        let tail = len - n;
        // Latest start s < tail whose n tokens equal the last n tokens.
        for s in (0..tail).rev() {
            if (0..n).all(|j| at(s + j) == at(tail + j)) {
                let from = s + n;
                let to = (from + want).min(len);
                if from < to {
                    return (from..to).map(at).collect();
                }
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposes_what_followed_the_last_ngram() {
        let prompt = [1, 2, 3, 4, 5, 6, 9, 9, 2, 3];
        assert_eq!(lookup(&prompt, &[], 3), vec![4, 5, 6]);
        // The generated tokens are part of the context.
        assert_eq!(lookup(&[7, 8, 1, 2, 3], &[7, 8], 2), vec![1, 2]);
        assert!(lookup(&[1, 2, 3], &[4], 3).is_empty());
    }

    #[test]
    fn the_latest_and_longest_match_wins() {
        let prompt = [5, 6, 1, 6, 7, 8, 6, 2, 5, 6];
        // "5 6" occurs at 0 → 1; the 2-gram match is used (no 3-gram match).
        assert_eq!(lookup(&prompt, &[], 1), vec![1]);
        let prompt = [1, 2, 3, 9, 2, 3, 8, 1, 2, 3];
        assert_eq!(
            lookup(&prompt, &[], 1),
            vec![9],
            "3-gram match beats the later 2-gram"
        );
    }

    #[test]
    fn draft_length_adapts_and_drafting_switches_off() {
        let mut d = Drafter::new(Speculation::Ngram { max_draft: 8 }).expect("on");
        d.record(4, 4);
        assert_eq!(d.draft_len, 6);
        d.record(6, 0);
        assert_eq!(d.draft_len, 3);
        for _ in 0..PROBATION {
            d.record(3, 0);
        }
        assert!(
            d.propose(&[1, 2, 1, 2], &[], 8).is_empty(),
            "off after poor acceptance"
        );
        assert!(Drafter::new(Speculation::Off).is_none());
    }

    #[test]
    fn parses_the_cli_spelling() {
        assert_eq!(Speculation::parse("off"), Some(Speculation::Off));
        assert_eq!(
            Speculation::parse("ngram:5"),
            Some(Speculation::Ngram { max_draft: 5 })
        );
        assert_eq!(Speculation::parse("ngram:0"), None);
        assert_eq!(Speculation::parse("draft"), None);
    }
}
