//! Draft-model speculation: before a pass, a small model with the main model's
//! tokenizer proposes the tokens that decoding sequences then verify.

use super::step::Entry;
use super::{Sequence, Worker};
use crate::model::transformer::{LogitsWanted, StepInput, argmax_rows};

impl Worker {
    /// Fills the drafts of `plan` entries listed in `wanted` (entry, length) with
    /// the draft model's greedy continuation of each sequence's context (its draft
    /// cache catches up on the context in fixed-size chunks first). A failing draft
    /// step leaves the drafts short (plain decoding for that step).
    pub(super) fn draft_with_model(&mut self, plan: &mut [Entry], wanted: &[(usize, usize)]) {
        let Some(draft_model) = self.draft.clone() else {
            return;
        };
        let t = draft_model.transformer();
        let chunk = self.config.prefill_chunk.max(1);
        let contexts: Vec<Vec<u32>> = wanted
            .iter()
            .map(|&(entry, _)| {
                let seq = &self.active[plan[entry].seq];
                let mut c = seq.job.request.prompt.clone();
                c.extend_from_slice(&seq.generated);
                c
            })
            .collect();
        for (&(entry, _), context) in wanted.iter().zip(&contexts) {
            let seq = &mut self.active[plan[entry].seq];
            let Some(dc) = seq.draft_cache.as_mut() else {
                continue;
            };
            // At least the last context token is fed: its logits start the draft.
            dc.truncate(context.len().saturating_sub(1));
        }
        // Each round feeds every sequence either its next chunk of context (until the
        // chunk that reaches the end gives the first drafted token) or its latest
        // drafted token (until its draft is long enough), all in one batched step.
        let max_rounds = contexts
            .iter()
            .map(|c| c.len() / chunk + 1)
            .max()
            .unwrap_or(0)
            + wanted.iter().map(|&(_, k)| k).max().unwrap_or(0);
        for _ in 0..max_rounds {
            let lasts: Vec<Option<u32>> = wanted
                .iter()
                .map(|&(entry, k)| {
                    let d = &plan[entry].draft;
                    (d.len() < k).then(|| d.last().copied()).flatten()
                })
                .collect();
            let mut slots: Vec<Option<&mut Sequence>> = self.active.iter_mut().map(Some).collect();
            let mut inputs = Vec::new();
            let mut owners = Vec::new();
            for (w, (&(entry, k), context)) in wanted.iter().zip(&contexts).enumerate() {
                let draft_len = plan[entry].draft.len();
                let Some(dc) = slots[plan[entry].seq]
                    .take()
                    .and_then(|seq| seq.draft_cache.as_mut())
                else {
                    continue;
                };
                let (tokens, logits) = if draft_len == 0 {
                    let start = dc.len();
                    let end = (start + chunk).min(context.len());
                    if start >= end {
                        continue;
                    }
                    let logits = if end == context.len() {
                        LogitsWanted::Last
                    } else {
                        LogitsWanted::None
                    };
                    (&context[start..end], logits)
                } else if draft_len < k {
                    let Some(last) = lasts[w].as_ref() else {
                        continue;
                    };
                    (std::slice::from_ref(last), LogitsWanted::Last)
                } else {
                    continue;
                };
                inputs.push(StepInput {
                    cache: dc,
                    tokens,
                    logits,
                });
                owners.push(w);
            }
            if inputs.is_empty() {
                break;
            }
            let Ok(outputs) = t.forward(&mut inputs) else {
                return;
            };
            drop(inputs);
            for (w, logits) in owners.into_iter().zip(outputs) {
                if let Some(token) = logits.and_then(|l| argmax_rows(&l).ok()?.first().copied()) {
                    plan[wanted[w].0].draft.push(token);
                }
            }
        }
    }
}
