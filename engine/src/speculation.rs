//! Speculative decoding: a cheap source proposes a draft of next tokens and the model
//! verifies the whole draft in one forward pass. Verification keeps exactly the tokens
//! plain decoding would have produced (greedy), or the same distribution (sampling).
//!
//! Two sources: prompt lookup (the tokens that followed the longest earlier match of
//! the end of the context: prompt, retrieved snippets, generated text) and a draft model (a smaller model with the same
//! tokenizer, loaded next to the main one, proposing its greedy continuation).

/// How a request drafts tokens.
///
/// The engine's default is plain decoding; the server and command line default to
/// [`Speculation::NGRAM`], which measured fastest (BENCHMARKS.md): its draft lengths
/// adapt to acceptance and cost, so it never does much worse than plain decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Speculation {
    /// Plain decoding: one token per forward pass.
    #[default]
    Off,
    /// Prompt-lookup drafting of up to `max_draft` tokens per step.
    Ngram {
        /// Most tokens proposed in one step.
        max_draft: usize,
    },
    /// Prompt-lookup drafting of exactly `draft` tokens whenever the context has a
    /// match, whatever it costs (exactness tests, measurements at a fixed length).
    NgramFixed {
        /// Tokens proposed in each step.
        draft: usize,
    },
    /// Draft-model drafting of up to `max_draft` tokens per step (the engine must
    /// have been started with a draft model).
    Draft {
        /// Most tokens proposed in one step.
        max_draft: usize,
    },
    /// Draft-model drafting of exactly `draft` tokens per step.
    DraftFixed {
        /// Tokens proposed in each step.
        draft: usize,
    },
}

impl Speculation {
    /// Prompt lookup with the default draft length.
    pub const NGRAM: Speculation = Speculation::Ngram { max_draft: 8 };

    /// Draft-model drafting with the default draft length.
    pub const DRAFT: Speculation = Speculation::Draft { max_draft: 8 };

    /// Parses `off`, `ngram`, `ngram:K`, `ngram-fixed:K`, `draft` or `draft-fixed:K`
    /// (the request and config spelling; which draft model is loaded is the
    /// server's or command line's business).
    pub fn parse(s: &str) -> Option<Self> {
        let length = |k: &str| k.parse::<usize>().ok().filter(|k| (1..=32).contains(k));
        match s {
            "off" => Some(Speculation::Off),
            "ngram" => Some(Speculation::NGRAM),
            "draft" => Some(Speculation::DRAFT),
            _ => {
                if let Some(k) = s.strip_prefix("ngram:") {
                    Some(Speculation::Ngram {
                        max_draft: length(k)?,
                    })
                } else if let Some(k) = s.strip_prefix("ngram-fixed:") {
                    Some(Speculation::NgramFixed { draft: length(k)? })
                } else {
                    let k = s.strip_prefix("draft-fixed:")?;
                    Some(Speculation::DraftFixed { draft: length(k)? })
                }
            }
        }
    }

    /// Whether this mode needs a draft model.
    pub fn uses_draft_model(self) -> bool {
        matches!(
            self,
            Speculation::Draft { .. } | Speculation::DraftFixed { .. }
        )
    }
}

/// Longest suffix of the context matched against it.
const MAX_NGRAM: usize = 32;
/// Shortest suffix matched (shorter matches are mostly noise).
const MIN_NGRAM: usize = 2;
/// Acceptance assumed before a sequence has drafted anything, per kind of draft: a
/// prompt-lookup match of 2–3 tokens, of 4–7, of 8 or more, a draft model, and the
/// caller's hint.
const PRIOR_ACCEPTANCE: [f64; KINDS] = [0.5, 0.7, 0.9, 0.7, 0.9];
/// Kinds of draft whose acceptance is tracked apart.
const KINDS: usize = 5;
/// The kind of a draft-model draft.
const MODEL_KIND: usize = 3;
/// The kind of a draft taken from the request's hint.
const HINT_KIND: usize = 4;
/// Weight of the newest draft in the running acceptance estimate.
const ACCEPTANCE_WEIGHT: f64 = 0.35;
/// A sequence that stopped drafting because it did not pay tries one token again
/// after this many plain steps, so that its acceptance estimate can recover.
const PROBE_EVERY: usize = 12;

/// What drafting costs in the step being planned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepCost {
    /// Cost of one drafted token relative to a one-row pass: its verification row,
    /// plus the draft model's step when a draft model proposes it.
    pub per_draft_token: f64,
    /// Sequences decoding in the step.
    pub batch: usize,
}

/// Per-sequence drafting state: chooses each draft's length from the observed
/// acceptance and the cost of verifying more tokens in one pass.
#[derive(Debug, Clone)]
pub(crate) struct Drafter {
    max_draft: usize,
    fixed: bool,
    from_model: bool,
    /// Estimated probability that a drafted token is accepted (given the ones
    /// before it were), per kind of draft.
    acceptance: [f64; KINDS],
    /// The kind of the latest draft.
    kind: usize,
    since_draft: usize,
    drafted: usize,
    accepted: usize,
}

impl Drafter {
    /// A drafter for `mode`, or `None` when speculation is off.
    pub fn new(mode: Speculation) -> Option<Self> {
        let (max_draft, fixed) = match mode {
            Speculation::Off => return None,
            Speculation::Ngram { max_draft } | Speculation::Draft { max_draft } => {
                (max_draft, false)
            }
            Speculation::NgramFixed { draft } | Speculation::DraftFixed { draft } => (draft, true),
        };
        (max_draft > 0).then_some(Self {
            max_draft,
            fixed,
            from_model: mode.uses_draft_model(),
            acceptance: PRIOR_ACCEPTANCE,
            kind: MODEL_KIND,
            since_draft: 0,
            drafted: 0,
            accepted: 0,
        })
    }

    /// Whether drafts come from a draft model (else from prompt lookup).
    pub fn uses_model(&self) -> bool {
        self.from_model
    }

    /// Proposes tokens to follow `context` by prompt lookup (prompt, then generated
    /// tokens; its last token is the one about to be fed): at most `room`, and only
    /// as many as are expected to pay for themselves when one more row in a pass
    /// costs `row_cost` of a one-token pass.
    pub fn propose(
        &mut self,
        prompt: &[u32],
        generated: &[u32],
        room: usize,
        cost: StepCost,
    ) -> Vec<u32> {
        let want = self.max_draft.min(room);
        if want == 0 {
            return Vec::new();
        }
        let (mut draft, matched) = lookup(prompt, generated, want);
        self.kind = match matched {
            0..=3 => 0,
            4..=7 => 1,
            _ => 2,
        };
        let len = self.length(draft.len(), cost);
        draft.truncate(len);
        draft
    }

    /// The rest of `hint` (the request's expected start of the output) when the
    /// tokens generated so far (the last one about to be fed) are its beginning:
    /// at most `room` tokens, as many as are expected to pay for themselves.
    /// `None` once the output has left the hint (or has used all of it).
    pub fn propose_hint(
        &mut self,
        hint: &[u32],
        generated: &[u32],
        room: usize,
        cost: StepCost,
    ) -> Option<Vec<u32>> {
        if generated.len() >= hint.len() || !hint.starts_with(generated) {
            return None;
        }
        self.kind = HINT_KIND;
        let rest = &hint[generated.len()..];
        let len = self.length(rest.len().min(self.max_draft).min(room), cost);
        Some(rest[..len].to_vec())
    }

    /// How many tokens a draft model should propose (at most `room`).
    pub fn model_draft_length(&mut self, room: usize, cost: StepCost) -> usize {
        self.kind = MODEL_KIND;
        self.length(self.max_draft.min(room), cost)
    }

    fn length(&mut self, available: usize, cost: StepCost) -> usize {
        let mut len = if self.fixed {
            available
        } else {
            let a = self.acceptance[self.kind];
            best_length(a, cost.per_draft_token, available, cost.batch)
        };
        // Probe now and then, unless a drafted token costs a whole pass (then no
        // acceptance can make drafting pay, and a draft model's probe would also
        // have to catch up on the context first).
        if len == 0
            && available > 0
            && self.since_draft >= PROBE_EVERY
            && cost.per_draft_token < 1.0
        {
            len = 1;
        }
        if len == 0 {
            self.since_draft += 1;
        } else {
            self.since_draft = 0;
        }
        len
    }

    /// Records how many of the latest draft's `drafted` tokens were accepted.
    pub fn record(&mut self, drafted: usize, accepted: usize) {
        if drafted == 0 {
            return;
        }
        self.drafted += drafted;
        self.accepted += accepted;
        // Tokens are verified in order up to the first rejection: the ones tried are
        // the accepted ones plus the rejected one, if any.
        let tried = accepted + usize::from(accepted < drafted);
        let rate = accepted as f64 / tried as f64;
        let a = &mut self.acceptance[self.kind];
        *a = (1.0 - ACCEPTANCE_WEIGHT) * *a + ACCEPTANCE_WEIGHT * rate;
    }

    /// Tokens drafted and accepted so far.
    pub fn totals(&self) -> (usize, usize) {
        (self.drafted, self.accepted)
    }
}

/// The draft length (at most `available`) that gives a step the most tokens per
/// unit of time, when each drafted token is accepted with probability
/// `acceptance` (given the ones before it were), each extra row costs `row_cost`
/// of a one-row pass, and `batch` sequences (this one included) decode in the same
/// step. Zero when no draft beats plain decoding.
///
/// With pass time `1 - row_cost + row_cost · rows`, the step yields
/// `batch - 1 + E(k)` tokens, `E(k) = 1 + a + … + a^k`, for `batch + k` rows: on
/// memory-bound hardware (small `row_cost`) drafts pay even in full batches; on a
/// compute-bound CPU only confident drafts of a lone sequence do.
pub(crate) fn best_length(acceptance: f64, row_cost: f64, available: usize, batch: usize) -> usize {
    let a = acceptance.clamp(0.0, 1.0);
    let beta = row_cost.max(0.0);
    let others = batch.max(1) as f64 - 1.0;
    let time = |rows: f64| (1.0 - beta).max(0.0) + beta * rows;
    let mut best = 0;
    let mut best_rate = (others + 1.0) / time(others + 1.0);
    let (mut expected, mut p) = (1.0, 1.0);
    for k in 1..=available {
        p *= a;
        expected += p;
        let rate = (others + expected) / time(others + 1.0 + k as f64);
        if rate > best_rate * 1.02 {
            best = k;
            best_rate = rate;
        }
    }
    best
}

/// What a pass over more rows costs: an exponentially weighted least-squares fit of
/// step time against rows fed, from the scheduler's decode and verification steps.
#[derive(Debug, Clone)]
pub(crate) struct PassCost {
    w: f64,
    x: f64,
    y: f64,
    xx: f64,
    xy: f64,
}

/// Marginal row cost assumed until steps of different sizes have been timed.
const PRIOR_ROW_COST: f64 = 0.5;
/// Weight kept by older observations at each new one.
const COST_DECAY: f64 = 0.995;

impl PassCost {
    /// No observations yet.
    pub fn new() -> Self {
        Self {
            w: 0.0,
            x: 0.0,
            y: 0.0,
            xx: 0.0,
            xy: 0.0,
        }
    }

    /// Records that a step over `rows` rows took `seconds`.
    pub fn observe(&mut self, rows: usize, seconds: f64) {
        let (x, y) = (rows as f64, seconds);
        self.w = self.w * COST_DECAY + 1.0;
        self.x = self.x * COST_DECAY + x;
        self.y = self.y * COST_DECAY + y;
        self.xx = self.xx * COST_DECAY + x * x;
        self.xy = self.xy * COST_DECAY + x * y;
    }

    /// The cost of one more row relative to a one-row pass.
    pub fn row_cost(&self) -> f64 {
        let var = self.w * self.xx - self.x * self.x;
        // Too few distinct sizes seen (e.g. only single-token decodes) to fit a slope.
        if self.w < 8.0 || var <= 0.5 * self.w * self.w {
            return PRIOR_ROW_COST;
        }
        let slope = (self.w * self.xy - self.x * self.y) / var;
        let intercept = (self.y - slope * self.x) / self.w;
        let one = intercept + slope;
        if one <= 0.0 || !slope.is_finite() {
            return PRIOR_ROW_COST;
        }
        (slope / one).clamp(0.005, 2.0)
    }
}

/// The tokens after the earlier occurrence of the longest suffix of the context
/// (at least `MIN_NGRAM`, at most `MAX_NGRAM` tokens; the latest of equally long
/// ones), and the length of that suffix.
fn lookup(prompt: &[u32], generated: &[u32], want: usize) -> (Vec<u32>, usize) {
    let len = prompt.len() + generated.len();
    if len < 2 {
        return (Vec::new(), 0);
    }
    let at = |i: usize| {
        if i < prompt.len() {
            prompt[i]
        } else {
            generated[i - prompt.len()]
        }
    };
    let last = len - 1;
    let (mut best_len, mut best_end) = (0, 0);
    // `end` is where an earlier occurrence of the suffix would end.
    for end in (0..last).rev() {
        if at(end) != at(last) {
            continue;
        }
        let mut m = 1;
        while m < MAX_NGRAM && m <= end && at(end - m) == at(last - m) {
            m += 1;
        }
        if m > best_len {
            (best_len, best_end) = (m, end);
            if m == MAX_NGRAM {
                break;
            }
        }
    }
    if best_len < MIN_NGRAM {
        return (Vec::new(), 0);
    }
    let from = best_end + 1;
    let to = (from + want).min(len);
    ((from..to).map(at).collect(), best_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposes_what_followed_the_last_ngram() {
        let prompt = [1, 2, 3, 4, 5, 6, 9, 9, 2, 3];
        assert_eq!(lookup(&prompt, &[], 3).0, vec![4, 5, 6]);
        // The generated tokens are part of the context.
        assert_eq!(lookup(&[7, 8, 1, 2, 3], &[7, 8], 2).0, vec![1, 2]);
        assert!(lookup(&[1, 2, 3], &[4], 3).0.is_empty());
    }

    #[test]
    fn the_latest_and_longest_match_wins() {
        let prompt = [5, 6, 1, 6, 7, 8, 6, 2, 5, 6];
        // "5 6" occurs at 0 → 1; the 2-gram match is used (no 3-gram match).
        assert_eq!(lookup(&prompt, &[], 1).0, vec![1]);
        let prompt = [1, 2, 3, 9, 2, 3, 8, 1, 2, 3];
        assert_eq!(
            lookup(&prompt, &[], 1).0,
            vec![9],
            "3-gram match beats the later 2-gram"
        );
        // A long match far back beats a short recent one.
        let prompt = [4, 5, 6, 7, 1, 0, 9, 6, 7, 2, 3, 4, 5, 6, 7];
        assert_eq!(lookup(&prompt, &[], 2).0, vec![1, 0]);
        // Equally long matches: the latest wins.
        let prompt = [6, 7, 1, 6, 7, 2, 6, 7];
        assert_eq!(lookup(&prompt, &[], 1).0, vec![2]);
    }

    #[test]
    fn drafts_are_as_long_as_they_pay() {
        // Cheap extra rows (memory-bound hardware): draft even at modest acceptance,
        // and long drafts at high acceptance.
        assert_eq!(best_length(0.6, 0.05, 8, 1), 3);
        assert_eq!(best_length(0.97, 0.05, 8, 1), 8);
        assert!(
            best_length(0.9, 0.02, 8, 8) >= 4,
            "pays even in a full batch"
        );
        // Costly rows (compute-bound CPU): only confident drafts, and short ones.
        assert_eq!(best_length(0.5, 0.6, 8, 1), 0);
        let k = best_length(0.95, 0.55, 8, 1);
        assert!((2..=6).contains(&k), "{k}");
        assert_eq!(best_length(1.0, 0.5, 3, 1), 3);
        assert_eq!(best_length(0.9, 0.1, 0, 1), 0);
        // … and none in a batch, where the rows are better spent on other sequences.
        assert_eq!(best_length(0.8, 0.55, 8, 4), 0);
    }

    #[test]
    fn drafting_stops_where_it_fails_and_probes_again() {
        let mut d = Drafter::new(Speculation::Ngram { max_draft: 8 }).expect("on");
        let prompt = [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3];
        let cost = StepCost {
            per_draft_token: 0.3,
            batch: 1,
        };
        assert!(!d.propose(&prompt, &[], 8, cost).is_empty());
        for _ in 0..6 {
            d.record(4, 0);
        }
        let mut drafts = Vec::new();
        for _ in 0..=PROBE_EVERY {
            drafts.push(d.propose(&prompt, &[], 8, cost).len());
        }
        assert!(drafts[..PROBE_EVERY].iter().all(|&n| n == 0), "{drafts:?}");
        assert_eq!(drafts[PROBE_EVERY], 1, "one probe token");
        // A draft that costs as much as a pass is never proposed by the adaptive mode.
        let mut d = Drafter::new(Speculation::DRAFT).expect("on");
        let dear = StepCost {
            per_draft_token: 1.4,
            batch: 1,
        };
        assert!((0..3 * PROBE_EVERY).all(|_| d.model_draft_length(8, dear) == 0));
        assert!(Drafter::new(Speculation::Off).is_none());
    }

    #[test]
    fn acceptance_counts_only_the_tokens_verified() {
        let mut d = Drafter::new(Speculation::NGRAM).expect("on");
        d.kind = 1;
        for _ in 0..40 {
            // 3 accepted, the 4th rejected, the last 4 never looked at: a = 3/4.
            d.record(8, 3);
        }
        assert!((d.acceptance[1] - 0.75).abs() < 1e-3, "{:?}", d.acceptance);
        assert_eq!(
            d.acceptance[2], PRIOR_ACCEPTANCE[2],
            "other kinds untouched"
        );
    }

    #[test]
    fn pass_cost_fits_the_marginal_row() {
        let mut c = PassCost::new();
        assert_eq!(c.row_cost(), PRIOR_ROW_COST);
        for i in 0..200 {
            let rows = 1 + i % 9;
            // 4 ms per pass plus 2 ms per row: one more row costs 2 / 6 of a one-row pass.
            c.observe(rows, 0.004 + 0.002 * rows as f64);
        }
        assert!((c.row_cost() - 1.0 / 3.0).abs() < 1e-6, "{}", c.row_cost());
        let mut only_decodes = PassCost::new();
        for _ in 0..100 {
            only_decodes.observe(1, 0.005);
        }
        assert_eq!(only_decodes.row_cost(), PRIOR_ROW_COST);
    }

    #[test]
    fn parses_the_cli_spelling() {
        assert_eq!(Speculation::parse("off"), Some(Speculation::Off));
        assert_eq!(
            Speculation::parse("ngram:5"),
            Some(Speculation::Ngram { max_draft: 5 })
        );
        assert_eq!(Speculation::parse("ngram:0"), None);
        assert_eq!(
            Speculation::parse("ngram-fixed:3"),
            Some(Speculation::NgramFixed { draft: 3 })
        );
        assert_eq!(Speculation::parse("draft"), Some(Speculation::DRAFT));
        assert_eq!(
            Speculation::parse("draft-fixed:4"),
            Some(Speculation::DraftFixed { draft: 4 })
        );
        assert!(Speculation::DRAFT.uses_draft_model());
        assert!(!Speculation::NGRAM.uses_draft_model());
    }
}
