//! One scheduler step, in three stages: `plan` decides which rows each active
//! sequence contributes to the forward pass (a prompt chunk, or a pending token
//! and a draft to verify), `forward` runs the model once over that ragged batch,
//! and `apply` turns the logits into accepted tokens, events and finished
//! sequences.

use std::sync::atomic::Ordering;
use std::time::Instant;

use candle_core::Tensor;

use super::{Sequence, Worker};
use crate::error::{EngineError, Result};
use crate::generation::{FinishReason, GenerationEvent};
use crate::model::Model;
use crate::model::transformer::{EXACT_ROWS, LogitsWanted, StepInput};
use crate::speculation::StepCost;

/// What one active sequence contributes to a forward pass.
pub(super) struct Entry {
    /// Index of the sequence in `Worker::active`.
    pub(super) seq: usize,
    /// Prompt tokens to feed (a prefill chunk); 0 for a decoding sequence.
    pub(super) prefill: usize,
    /// Draft tokens to verify after the pending token (decoding sequences only).
    pub(super) draft: Vec<u32>,
}

/// The rows of one forward pass, as `Worker::plan` decided them.
struct Plan {
    /// Decoding sequences first, then prompt chunks, each in `Worker::active` order.
    entries: Vec<Entry>,
}

/// The logits of one forward pass, one per planned entry that got rows in the
/// batch (`None` where the entry asked for none).
type Logits = Vec<Option<Tensor>>;

/// What a decoding sequence verifies after its pending token in this pass.
enum Draft {
    /// Tokens proposed already: the request's hint or the n-gram drafter's guess
    /// (empty for plain decoding).
    Tokens(Vec<u32>),
    /// This many tokens (at least one), which the draft model proposes once the
    /// plan is complete.
    Model(usize),
}

impl Worker {
    /// Runs one forward pass over every sequence that has work and applies its
    /// results.
    pub(super) fn step(&mut self) {
        let Some(plan) = self.plan() else {
            return;
        };
        match self.forward(&plan) {
            Ok(logits) => self.apply(&plan, logits),
            Err(e) => self.fail_pass(&plan, &e),
        }
    }

    /// Stage 1: decides which rows each sequence feeds in this pass, within
    /// `SchedulerConfig::max_batch_tokens`: decoding sequences their pending
    /// token and a draft, then prefilling sequences their next prompt chunk.
    /// Drafts from the draft model are filled in last. `None` if nothing fits.
    fn plan(&mut self) -> Option<Plan> {
        let mut budget = self.config.max_batch_tokens;
        let (mut entries, model_drafts) = self.plan_decode(&mut budget);
        self.plan_prefill(&mut entries, budget);
        if entries.is_empty() {
            return None;
        }
        if !model_drafts.is_empty() {
            self.draft_with_model(&mut entries, &model_drafts);
        }
        Some(Plan { entries })
    }

    /// Plans an entry for each decoding sequence while `budget` lasts: its pending
    /// token plus the draft it verifies, all taken from `budget`. Returns the
    /// entries, and (plan entry, tokens a draft model should propose) for each
    /// draft left to the draft model.
    fn plan_decode(&mut self, budget: &mut usize) -> (Vec<Entry>, Vec<(usize, usize)>) {
        let decoding = self.active.iter().filter(|s| s.pending.is_some()).count();
        let mut entries = Vec::new();
        let mut model_drafts = Vec::new();
        let row_cost = self.pass_cost.row_cost();
        let draft_cost = self.draft_cost;
        for (i, seq) in self.active.iter_mut().enumerate() {
            if seq.pending.is_none() || *budget == 0 {
                continue;
            }
            *budget -= 1;
            let room = seq.draft_room(*budget, decoding);
            let cost = StepCost {
                per_draft_token: row_cost,
                batch: decoding,
            };
            let draft = match seq.choose_draft(room, cost, draft_cost) {
                Draft::Tokens(draft) => draft,
                Draft::Model(k) => {
                    model_drafts.push((entries.len(), k));
                    *budget -= k;
                    Vec::new()
                }
            };
            *budget -= draft.len();
            entries.push(Entry {
                seq: i,
                prefill: 0,
                draft,
            });
        }
        (entries, model_drafts)
    }

    /// Plans the next prompt chunk of each sequence still prefilling, while the
    /// chunks fit in `budget`.
    fn plan_prefill(&self, entries: &mut Vec<Entry>, mut budget: usize) {
        // Prompts are cut into chunks of a fixed size, whatever else is in the batch, so
        // a sequence's numbers never depend on its neighbours (batch invariance: the same
        // greedy output alone or under load, with or without speculation).
        let chunk = self
            .config
            .prefill_chunk
            .min(self.config.max_batch_tokens)
            .max(1);
        for (i, seq) in self.active.iter().enumerate() {
            let n = seq.prompt_left().min(chunk);
            if seq.pending.is_none() && n > 0 && n <= budget {
                entries.push(Entry {
                    seq: i,
                    prefill: n,
                    draft: Vec::new(),
                });
                budget -= n;
            }
        }
    }

    /// Stage 2: runs the model's forward pass over the ragged batch of `plan`,
    /// extending each planned sequence's cache. Passes that only decode or verify
    /// teach `PassCost` what one more row costs.
    fn forward(&mut self, plan: &Plan) -> Result<Logits> {
        let fed_tokens = plan.decode_tokens(&self.active);
        let mut inputs = step_inputs(&mut self.active, &plan.entries, &fed_tokens);
        let rows: usize = inputs.iter().map(|input| input.tokens.len()).sum();
        let started = Instant::now();
        let result = self.model.transformer().forward(&mut inputs);
        if plan.decode_only() {
            // Decode and verification steps only: what one more row costs.
            self.pass_cost
                .observe(rows, started.elapsed().as_secs_f64());
        }
        drop(inputs);
        self.counters.forward_passes.fetch_add(1, Ordering::Relaxed);
        result
    }

    /// Stage 3: advances each planned sequence past the rows it fed, samples or
    /// verifies tokens from its `logits`, emits their text, marks sequences that
    /// finished, rolls back rejected drafts and updates the counters.
    fn apply(&mut self, plan: &Plan, logits: Logits) {
        let model = self.model.clone();
        for (entry, logits) in plan.entries.iter().zip(logits) {
            let seq = &mut self.active[entry.seq];
            if entry.prefill > 0 {
                seq.fed += entry.prefill;
                self.counters
                    .prompt_tokens
                    .fetch_add(entry.prefill as u64, Ordering::Relaxed);
            } else {
                seq.decode_steps += 1;
            }
            let Some(logits) = logits else { continue };
            let rows = match logits.to_vec2::<f32>() {
                Ok(r) => r,
                Err(e) => {
                    seq.fail(EngineError::Compute(e));
                    continue;
                }
            };
            let before = seq.generated.len();
            let accepted = seq.accept_rows(entry, &rows, &model);
            if !entry.draft.is_empty() {
                seq.settle_draft(&entry.draft, before, accepted);
                self.counters
                    .drafted_tokens
                    .fetch_add(entry.draft.len() as u64, Ordering::Relaxed);
                self.counters
                    .accepted_tokens
                    .fetch_add(accepted as u64, Ordering::Relaxed);
            }
            self.counters
                .generated_tokens
                .fetch_add((seq.generated.len() - before) as u64, Ordering::Relaxed);
        }
    }

    /// Fails every sequence of `plan` after its forward pass failed with `error`.
    fn fail_pass(&mut self, plan: &Plan, error: &EngineError) {
        let msg = error.to_string();
        for entry in &plan.entries {
            self.active[entry.seq].fail(EngineError::Compute(candle_core::Error::Msg(msg.clone())));
        }
    }
}

impl Plan {
    /// Whether every entry decodes or verifies (no prompt chunk in the pass).
    fn decode_only(&self) -> bool {
        self.entries.iter().all(|e| e.prefill == 0)
    }

    /// The tokens each entry feeds if it decodes: its pending token followed by its
    /// draft (empty for a prompt chunk, which `step_inputs` takes from the prompt).
    fn decode_tokens(&self, active: &[Sequence]) -> Vec<Vec<u32>> {
        self.entries
            .iter()
            .map(|entry| {
                if entry.prefill == 0 {
                    let mut t = vec![active[entry.seq].pending.unwrap_or(0)];
                    t.extend_from_slice(&entry.draft);
                    t
                } else {
                    Vec::new()
                }
            })
            .collect()
    }
}

/// The inputs of a forward pass over `entries`: each planned sequence lends its
/// cache and feeds `fed_tokens` (decoding, with logits for the last row, or every
/// row when it verifies a draft) or its next prompt chunk (with logits for the
/// last row only if the chunk ends the prompt).
fn step_inputs<'a>(
    active: &'a mut [Sequence],
    entries: &'a [Entry],
    fed_tokens: &'a [Vec<u32>],
) -> Vec<StepInput<'a>> {
    // Split borrows: each planned sequence lends its cache and tokens to the step.
    let mut slots: Vec<Option<&mut Sequence>> = active.iter_mut().map(Some).collect();
    let mut inputs = Vec::with_capacity(entries.len());
    for (k, entry) in entries.iter().enumerate() {
        let Some(seq) = slots[entry.seq].take() else {
            continue;
        };
        let (tokens, logits): (&[u32], LogitsWanted) = if entry.prefill == 0 {
            let wanted = if entry.draft.is_empty() {
                LogitsWanted::Last
            } else {
                LogitsWanted::All
            };
            (&fed_tokens[k][..], wanted)
        } else {
            let (start, n) = (seq.fed, entry.prefill);
            let last = start + n == seq.job.request.prompt.len();
            (
                &seq.job.request.prompt[start..start + n],
                if last {
                    LogitsWanted::Last
                } else {
                    LogitsWanted::None
                },
            )
        };
        inputs.push(StepInput {
            cache: &mut seq.cache,
            tokens,
            logits,
        });
    }
    inputs
}

impl Sequence {
    /// How many tokens this decoding sequence may draft, with `budget` rows of
    /// the pass left to share among `decoding` sequences.
    fn draft_room(&self, budget: usize, decoding: usize) -> usize {
        // Each sequence may draft from what is left of the budget's fair share.
        let share = (budget / decoding.max(1)).min(budget);
        // A verification pass stays within the rows whose attention is
        // computed exactly as in a one-token step.
        share.min(EXACT_ROWS - 1).min(
            self.job
                .request
                .max_new_tokens
                .saturating_sub(self.generated.len()),
        )
    }

    /// Chooses what this decoding sequence verifies after its pending token: the
    /// request's hint where it applies, else a draft model's or the n-gram
    /// drafter's proposal, of at most `room` tokens at `cost` (a draft-model token
    /// costs `draft_cost` more).
    fn choose_draft(&mut self, room: usize, cost: StepCost, draft_cost: f64) -> Draft {
        let hinted = self
            .drafter
            .as_mut()
            .and_then(|d| d.propose_hint(&self.job.request.hint, &self.generated, room, cost));
        match (hinted, self.drafter.as_mut()) {
            (Some(hint), _) => Draft::Tokens(hint),
            (None, Some(d)) if d.uses_model() => {
                if self.draft_cache.is_some() {
                    let cost = StepCost {
                        per_draft_token: cost.per_draft_token + draft_cost,
                        ..cost
                    };
                    let k = d.model_draft_length(room, cost);
                    if k > 0 {
                        return Draft::Model(k);
                    }
                }
                Draft::Tokens(Vec::new())
            }
            (None, Some(d)) => {
                Draft::Tokens(d.propose(&self.job.request.prompt, &self.generated, room, cost))
            }
            (None, None) => Draft::Tokens(Vec::new()),
        }
    }

    /// Takes the tokens that `rows` of logits give after `entry` was fed: a sampled
    /// token per row, for as long as the rows confirm `entry`'s draft and the
    /// sequence goes on. Returns how many draft tokens were accepted.
    fn accept_rows(&mut self, entry: &Entry, rows: &[Vec<f32>], model: &Model) -> usize {
        if entry.prefill == 0 {
            // The pending token's state is now in the cache.
            self.fed_generated += 1;
        }
        self.pending = None;
        let mut accepted = 0;
        let mut masked = Vec::new();
        for (r, model_row) in rows.iter().enumerate() {
            let row: &[f32] = match self.constraint.as_mut() {
                Some(c) => {
                    masked.clone_from(model_row);
                    if let Err(e) = c.restrict(&mut masked) {
                        self.fail(e);
                        return accepted;
                    }
                    &masked
                }
                None => model_row,
            };
            let (token, is_draft) = match entry.draft.get(r) {
                Some(&d) => self.sampler.verify(row, d),
                None => (self.sampler.sample(row), false),
            };
            if let Some(Err(e)) = self.constraint.as_mut().map(|c| c.advance(token)) {
                self.fail(e);
                return accepted;
            }
            if let Some(top) = self.job.request.logprobs {
                self.unreported_logprobs
                    .push(crate::sampling::logprobs_of(model_row, token, top));
            }
            self.accept(token, model);
            if self.finished.is_none() && self.constraint.as_ref().is_some_and(|c| c.is_complete())
            {
                // The grammar allows nothing more: the output ends here.
                self.finished = Some(FinishReason::Stop);
                self.pending = None;
            }
            if !is_draft || self.finished.is_some() {
                accepted += usize::from(is_draft);
                break;
            }
            accepted += 1;
            // The accepted draft token was fed in this step: its state is cached.
            self.fed_generated += 1;
            self.pending = None;
        }
        accepted
    }

    /// After a pass verified `draft` (`before` tokens had been generated before
    /// it, `accepted` of `draft` were confirmed), drops the state of rejected
    /// draft tokens from both caches and tells the drafter how it did.
    fn settle_draft(&mut self, draft: &[u32], before: usize, accepted: usize) {
        // Roll back the state of rejected draft tokens (a length change only).
        let keep = self.fed + self.fed_generated;
        self.cache.truncate(keep);
        if let Some(dc) = self.draft_cache.as_mut() {
            // It holds the context before this step and all drafts but the last.
            let context = self.job.request.prompt.len() + before;
            dc.truncate(context + accepted.min(draft.len() - 1));
        }
        if let Some(d) = self.drafter.as_mut() {
            d.record(draft.len(), accepted);
        }
    }

    /// Reports `error` and ends the sequence's output: its sink hears nothing
    /// more and its cache is not kept for reuse.
    fn fail(&mut self, error: EngineError) {
        self.emit(GenerationEvent::Failed(error));
        self.sink_gone = true;
        self.failed = true;
    }
}
