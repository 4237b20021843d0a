//! Continuous batching: one worker thread owns the model and runs every active
//! sequence's next tokens in the same forward pass, admitting new requests
//! between steps, so a short request never waits for a long one to finish.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::constraint::Constraint;
use crate::error::{EngineError, Result};
use crate::generation::{
    EventSink, FinishReason, Generation, GenerationCollector, GenerationEvent, GenerationRequest,
    GenerationStats,
};
use crate::kv_cache::KvCache;
use crate::model::Model;
use crate::prefix_cache::PrefixCache;
use crate::sampling::{Sampler, TokenLogprob};
use crate::speculation::{Drafter, PassCost};
use crate::stop::StopMatcher;
use crate::tokenizer::StreamDecoder;

mod draft;
mod step;

/// Limits of the batching scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Most new tokens (prefill plus decode) in one forward pass.
    pub max_batch_tokens: usize,
    /// Most prompt tokens one sequence prefills per step while others decode.
    pub prefill_chunk: usize,
    /// Most sequences decoding at once; more wait in the queue.
    pub max_active: usize,
    /// Bytes of key/value state kept from finished requests for reuse by later
    /// requests with the same token prefix (0 turns prefix reuse off).
    pub prefix_cache_bytes: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_batch_tokens: 512,
            prefill_chunk: 128,
            max_active: 16,
            prefix_cache_bytes: 256 << 20,
        }
    }
}

/// Live counters of the engine, for metrics.
#[derive(Debug, Default)]
pub struct EngineCounters {
    /// Requests waiting for a slot.
    pub waiting: AtomicU64,
    /// Requests being processed.
    pub active: AtomicU64,
    /// Tokens generated since start.
    pub generated_tokens: AtomicU64,
    /// Prompt tokens processed since start.
    pub prompt_tokens: AtomicU64,
    /// Forward passes since start.
    pub forward_passes: AtomicU64,
    /// Requests that looked for reusable key/value state.
    pub prefix_lookups: AtomicU64,
    /// Requests that found reusable key/value state.
    pub prefix_hits: AtomicU64,
    /// Prompt tokens whose state was reused instead of computed.
    pub reused_prompt_tokens: AtomicU64,
    /// Bytes held by the prefix cache now.
    pub prefix_cache_bytes: AtomicU64,
    /// Bytes of key/value state held by running sequences now (their caches'
    /// allocated capacity, draft-model caches included); 0 when none runs.
    pub kv_cache_bytes: AtomicU64,
    /// Tokens proposed by speculative drafting.
    pub drafted_tokens: AtomicU64,
    /// Drafted tokens the model confirmed.
    pub accepted_tokens: AtomicU64,
}

struct Job {
    request: GenerationRequest,
    sink: EventSink,
    submitted: Instant,
}

/// Handle to the inference engine; cheap to clone and share between threads.
#[derive(Clone)]
pub struct Engine {
    model: Arc<Model>,
    draft: Option<Arc<Model>>,
    jobs: Sender<Job>,
    counters: Arc<EngineCounters>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model", &self.model.info().name)
            .finish()
    }
}

impl Engine {
    /// Starts the worker thread for `model`.
    pub fn start(model: Arc<Model>, config: SchedulerConfig) -> Result<Self> {
        Self::start_inner(model, None, config)
    }

    /// Starts the worker thread for `model` with `draft`, a smaller model with the
    /// same tokenizer that proposes tokens for requests speculating with a draft
    /// model ([`Speculation::Draft`](crate::Speculation::Draft)).
    pub fn start_with_draft(
        model: Arc<Model>,
        draft: Arc<Model>,
        config: SchedulerConfig,
    ) -> Result<Self> {
        check_draft_compatible(&model, &draft)?;
        Self::start_inner(model, Some(draft), config)
    }

    fn start_inner(
        model: Arc<Model>,
        draft: Option<Arc<Model>>,
        config: SchedulerConfig,
    ) -> Result<Self> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let counters = Arc::new(EngineCounters::default());
        let draft_cost = draft.as_ref().map_or(0.0, |d| {
            d.info().parameters as f64 / model.info().parameters.max(1) as f64
        });
        let worker = Worker {
            model: model.clone(),
            draft: draft.clone(),
            draft_cost,
            jobs: rx,
            prefix_cache: PrefixCache::new(config.prefix_cache_bytes),
            pass_cost: PassCost::new(),
            config,
            counters: counters.clone(),
            active: Vec::new(),
            waiting: VecDeque::new(),
        };
        std::thread::Builder::new()
            .name("souffleur-engine".into())
            .spawn(move || worker.run())
            .map_err(|e| EngineError::io("<engine thread>", e))?;
        Ok(Self {
            model,
            draft,
            jobs: tx,
            counters,
        })
    }

    /// The draft model loaded next to the main one, if any.
    pub fn draft_model(&self) -> Option<&Arc<Model>> {
        self.draft.as_ref()
    }

    /// The model this engine serves.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Live counters.
    pub fn counters(&self) -> &EngineCounters {
        &self.counters
    }

    /// Checks a request against the model's limits.
    pub fn validate(&self, request: &GenerationRequest) -> Result<()> {
        let cfg = self.model.info().config.clone();
        request.sampling.validate()?;
        if request.speculation.uses_draft_model() && self.draft.is_none() {
            return Err(EngineError::InvalidRequest(
                "speculation with a draft model was requested, but no draft model is loaded".into(),
            ));
        }
        if request.prompt.is_empty() {
            return Err(EngineError::InvalidRequest("empty prompt".into()));
        }
        if let Some(&bad) = request
            .prompt
            .iter()
            .find(|&&t| t as usize >= cfg.vocab_size)
        {
            return Err(EngineError::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                cfg.vocab_size
            )));
        }
        if request.prompt.len() + request.max_new_tokens > cfg.context_length {
            return Err(EngineError::PromptTooLong {
                prompt_tokens: request.prompt.len(),
                max_new_tokens: request.max_new_tokens,
                context_length: cfg.context_length,
            });
        }
        Ok(())
    }

    /// Queues a job; events arrive at `sink` on the engine thread (keep it cheap).
    pub fn submit(&self, request: GenerationRequest, sink: EventSink) -> Result<()> {
        self.validate(&request)?;
        self.counters.waiting.fetch_add(1, Ordering::Relaxed);
        self.jobs
            .send(Job {
                request,
                sink,
                submitted: Instant::now(),
            })
            .map_err(|_| EngineError::SchedulerStopped)
    }

    /// Runs a job to completion and returns all of its output.
    pub fn generate(&self, request: GenerationRequest) -> Result<Generation> {
        let (tx, rx) = crossbeam_channel::unbounded();
        self.submit(request, Box::new(move |event| tx.send(event).is_ok()))?;
        let mut collector = GenerationCollector::default();
        for event in rx {
            if let Some(result) = collector.push(event) {
                return result;
            }
        }
        Err(EngineError::SchedulerStopped)
    }
}

struct Sequence {
    job: Job,
    cache: KvCache,
    /// The draft model's cache (draft-model speculation only).
    draft_cache: Option<KvCache>,
    fed: usize,
    reused: usize,
    failed: bool,
    pending: Option<u32>,
    generated: Vec<u32>,
    unreported: Vec<u32>,
    /// The log-probabilities of `unreported` (when the request asked for them).
    unreported_logprobs: Vec<TokenLogprob>,
    sampler: Sampler,
    decoder: StreamDecoder,
    stop: StopMatcher,
    /// All text generated so far, kept only for a request's stop rule.
    text: String,
    first_token: Option<Duration>,
    decode_steps: usize,
    /// Generated tokens whose key/value state is in the cache.
    fed_generated: usize,
    drafter: Option<Drafter>,
    /// The grammar the output must match, at the output's current end.
    constraint: Option<Constraint>,
    finished: Option<FinishReason>,
    sink_gone: bool,
}

impl Sequence {
    fn new(mut job: Job, cache: KvCache, reused: usize, draft: Option<&Model>) -> Self {
        let constraint = job.request.constraint.take();
        let sampler = Sampler::new(job.request.sampling.clone(), &job.request.prompt);
        let stop = StopMatcher::new(&job.request.stop);
        let drafter = Drafter::new(job.request.speculation);
        let draft_cache = match (&drafter, draft) {
            (Some(d), Some(m)) if d.uses_model() => Some(m.transformer().new_cache()),
            _ => None,
        };
        Self {
            job,
            cache,
            draft_cache,
            fed: reused,
            reused,
            failed: false,
            pending: None,
            generated: Vec::new(),
            unreported: Vec::new(),
            unreported_logprobs: Vec::new(),
            sampler,
            decoder: StreamDecoder::default(),
            stop,
            text: String::new(),
            first_token: None,
            decode_steps: 0,
            fed_generated: 0,
            drafter,
            constraint,
            finished: None,
            sink_gone: false,
        }
    }

    fn prompt_left(&self) -> usize {
        self.job.request.prompt.len() - self.fed
    }

    fn emit(&mut self, event: GenerationEvent) {
        if !self.sink_gone && !(self.job.sink)(event) {
            self.sink_gone = true;
        }
    }

    fn emit_text(&mut self, text: String) {
        if !text.is_empty() || !self.unreported.is_empty() {
            let tokens = std::mem::take(&mut self.unreported);
            let logprobs = std::mem::take(&mut self.unreported_logprobs);
            self.emit(GenerationEvent::Text {
                text,
                tokens,
                logprobs,
            });
        }
    }

    /// Consumes one sampled token; returns whether the sequence goes on.
    fn accept(&mut self, token: u32, model: &Model) {
        if self.first_token.is_none() {
            self.first_token = Some(self.job.submitted.elapsed());
        }
        self.generated.push(token);
        self.unreported.push(token);
        let tok = model.tokenizer();
        if tok.is_control(token) || Some(token) == tok.eos() {
            self.finished = Some(FinishReason::EndOfText);
            return;
        }
        let text = self.decoder.push(tok.token_bytes(token));
        let ruled = match &self.job.request.stop_rule {
            Some(rule) => {
                self.text.push_str(&text);
                (rule.0)(&self.text)
            }
            None => false,
        };
        let outcome = self.stop.push(&text);
        self.emit_text(outcome.emit);
        if outcome.stopped || ruled {
            self.finished = Some(FinishReason::Stop);
        } else if self.generated.len() >= self.job.request.max_new_tokens {
            self.finished = Some(FinishReason::Length);
        } else {
            self.pending = Some(token);
        }
    }

    /// The tokens whose state the cache holds, if it is consistent and worth keeping.
    fn cached_tokens(&self) -> Option<Vec<u32>> {
        if self.failed {
            return None;
        }
        let mut tokens = self.job.request.prompt[..self.fed].to_vec();
        if self.fed == self.job.request.prompt.len() {
            let n = self.fed_generated.min(self.generated.len());
            tokens.extend_from_slice(&self.generated[..n]);
        }
        (tokens.len() == self.cache.len()).then_some(tokens)
    }

    /// Reports the end of the sequence and hands back its cache.
    fn finish(mut self, reason: FinishReason) -> (KvCache, Option<Vec<u32>>) {
        if reason != FinishReason::Stop {
            let tail = self.decoder.finish();
            let mut rest = self.stop.push(&tail).emit;
            rest.push_str(&self.stop.finish());
            self.emit_text(rest);
        } else {
            self.emit_text(String::new());
        }
        let stats = GenerationStats {
            finish_reason: reason,
            prompt_tokens: self.job.request.prompt.len(),
            cached_prompt_tokens: self.reused,
            generated_tokens: self.generated.len(),
            decode_steps: self.decode_steps,
            drafted_tokens: self.drafter.as_ref().map_or(0, |d| d.totals().0),
            accepted_tokens: self.drafter.as_ref().map_or(0, |d| d.totals().1),
            time_to_first_token: self.first_token.unwrap_or_default(),
            total_time: self.job.submitted.elapsed(),
        };
        self.emit(GenerationEvent::Finished(stats));
        let tokens = self.cached_tokens();
        (self.cache, tokens)
    }
}

struct Worker {
    model: Arc<Model>,
    draft: Option<Arc<Model>>,
    /// Cost of one draft-model step relative to one main-model step.
    draft_cost: f64,
    jobs: Receiver<Job>,
    config: SchedulerConfig,
    counters: Arc<EngineCounters>,
    active: Vec<Sequence>,
    waiting: VecDeque<Job>,
    prefix_cache: PrefixCache,
    pass_cost: PassCost,
}

impl Worker {
    fn run(mut self) {
        loop {
            if self.active.is_empty() && self.waiting.is_empty() {
                match self.jobs.recv() {
                    Ok(job) => self.waiting.push_back(job),
                    Err(_) => return,
                }
            }
            while let Ok(job) = self.jobs.try_recv() {
                self.waiting.push_back(job);
            }
            self.admit();
            self.retire();
            if !self.active.is_empty() {
                self.step();
                self.retire();
            }
        }
    }

    fn admit(&mut self) {
        while self.active.len() < self.config.max_active {
            let Some(mut job) = self.waiting.pop_front() else {
                break;
            };
            self.counters.waiting.fetch_sub(1, Ordering::Relaxed);
            if job.request.max_new_tokens == 0 {
                let stats = GenerationStats {
                    finish_reason: FinishReason::Length,
                    prompt_tokens: job.request.prompt.len(),
                    cached_prompt_tokens: 0,
                    generated_tokens: 0,
                    decode_steps: 0,
                    drafted_tokens: 0,
                    accepted_tokens: 0,
                    time_to_first_token: Duration::ZERO,
                    total_time: job.submitted.elapsed(),
                };
                (job.sink)(GenerationEvent::Finished(stats));
                continue;
            }
            self.counters.active.fetch_add(1, Ordering::Relaxed);
            self.counters.prefix_lookups.fetch_add(1, Ordering::Relaxed);
            let (cache, reused) = match self
                .prefix_cache
                .lookup(&job.request.prompt, job.request.max_new_tokens)
            {
                Some(hit) => {
                    self.counters.prefix_hits.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .reused_prompt_tokens
                        .fetch_add(hit.tokens as u64, Ordering::Relaxed);
                    (hit.cache, hit.tokens)
                }
                None => (self.model.transformer().new_cache(), 0),
            };
            let draft = self.draft.as_deref();
            self.active.push(Sequence::new(job, cache, reused, draft));
        }
    }

    /// Ends sequences that finished, were cancelled, or lost their receiver.
    fn retire(&mut self) {
        let mut i = 0;
        while i < self.active.len() {
            let seq = &self.active[i];
            let reason = if seq.finished.is_some() {
                seq.finished
            } else if seq.sink_gone || seq.job.request.cancel.is_cancelled() {
                Some(FinishReason::Cancelled)
            } else {
                None
            };
            match reason {
                Some(r) => {
                    let seq = self.active.swap_remove(i);
                    self.counters.active.fetch_sub(1, Ordering::Relaxed);
                    // Before the caller hears that it finished: a caller that sees
                    // its generation end sees its state gone from the count.
                    self.publish_kv_bytes();
                    if let (cache, Some(tokens)) = seq.finish(r) {
                        self.prefix_cache.insert(tokens, cache);
                        self.counters
                            .prefix_cache_bytes
                            .store(self.prefix_cache.bytes() as u64, Ordering::Relaxed);
                    }
                }
                None => i += 1,
            }
        }
        self.publish_kv_bytes();
    }

    /// Stores the key/value bytes the running sequences hold (after each pass,
    /// from the worker: a sum over at most `max_active` caches, no lock).
    fn publish_kv_bytes(&self) {
        let bytes: usize = self
            .active
            .iter()
            .map(|s| {
                s.cache.allocated_bytes()
                    + s.draft_cache.as_ref().map_or(0, KvCache::allocated_bytes)
            })
            .sum();
        self.counters
            .kv_cache_bytes
            .store(bytes as u64, Ordering::Relaxed);
    }
}

/// Checks that `draft` can propose tokens for `model`: the same vocabulary, token
/// for token.
fn check_draft_compatible(model: &Model, draft: &Model) -> Result<()> {
    let (a, b) = (model.tokenizer(), draft.tokenizer());
    let same = a.vocab_size() == b.vocab_size()
        && model.info().config.vocab_size == draft.info().config.vocab_size
        && (0..a.vocab_size() as u32).all(|id| a.token_bytes(id) == b.token_bytes(id));
    if same {
        Ok(())
    } else {
        Err(EngineError::InvalidRequest(format!(
            "draft model {} does not share the tokenizer of {}",
            draft.info().name,
            model.info().name
        )))
    }
}
