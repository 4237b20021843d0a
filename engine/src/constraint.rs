//! Constrained decoding: at each step only the tokens that keep the output inside a
//! grammar (a JSON Schema, any JSON object, or a Lark grammar) may be chosen.
//!
//! Built on `llguidance`, the grammar engine llama.cpp and vLLM use: its token masks are
//! computed lazily per step from a trie of the vocabulary, so a step costs tens of
//! microseconds and compiling a schema costs no index over the whole vocabulary. The
//! trie is built once per model, on the first constrained request.
//!
//! Control tokens (chat markers, end of text) are entered in the trie with llguidance's
//! special-token marker, so no text the grammar allows can spell them; the model's
//! end-of-turn token is allowed exactly where the grammar may end.

use std::sync::{Arc, OnceLock};

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use serde_json::{Value, json};

use crate::error::{EngineError, Result};
use crate::tokenizer::Tokenizer;

/// What a generation must match.
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// Any JSON object (OpenAI's `response_format: {"type": "json_object"}`).
    JsonObject,
    /// A JSON value valid against this JSON Schema.
    JsonSchema(Value),
    /// A grammar in llguidance's Lark dialect (may embed `%json{…}` schemas and name
    /// special tokens as `<[id]>`).
    Lark(String),
}

/// How JSON is written when the schema does not say: one line, Python's separators
/// (`", "`, `": "`), as models see JSON in their training data. Flexible whitespace
/// lets small models wander into endless blank lines. The value of a schema's
/// `x-guidance` key; [`GrammarSpec::JsonSchema`] adds it, a `%json` inside a Lark
/// grammar needs it written in.
pub fn json_layout() -> Value {
    json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
}

impl GrammarSpec {
    /// llguidance's form of the grammar.
    fn to_grammar(&self) -> TopLevelGrammar {
        match self {
            GrammarSpec::JsonObject => TopLevelGrammar::from_json_schema(
                json!({"type": "object", "x-guidance": json_layout()}),
            ),
            GrammarSpec::JsonSchema(schema) => {
                let mut schema = schema.clone();
                if let Some(map) = schema.as_object_mut() {
                    map.entry("x-guidance").or_insert_with(json_layout);
                }
                TopLevelGrammar::from_json_schema(schema)
            }
            GrammarSpec::Lark(text) => TopLevelGrammar::from_lark(text.clone()),
        }
    }
}

/// A model's vocabulary as llguidance sees it, built once.
pub(crate) struct Grammars {
    factory: Result<Arc<ParserFactory>, String>,
}

impl Grammars {
    /// Builds the token trie of `tok` (a few hundred milliseconds for 150k tokens).
    fn build(tok: &Tokenizer) -> Self {
        let vocab = tok.vocab_size();
        let words: Vec<Vec<u8>> = (0..vocab as u32)
            .map(|id| {
                let bytes = tok.token_bytes(id);
                if tok.is_control(id) || bytes.is_empty() {
                    // Only a grammar naming it can produce it; an empty token gets a
                    // name so that it never matches text.
                    let name = if bytes.is_empty() {
                        format!("<[empty {id}]>").into_bytes()
                    } else {
                        bytes.to_vec()
                    };
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend_from_slice(&name);
                    w
                } else {
                    bytes.to_vec()
                }
            })
            .collect();
        let end = tok
            .token_id("<|im_end|>")
            .filter(|&id| tok.is_control(id))
            .or(tok.eos());
        let factory = match end {
            None => Err("the model's vocabulary has no end-of-text token".to_string()),
            Some(end) => {
                let mut info = TokRxInfo::new(vocab as u32, end);
                info.tok_bos = tok.bos();
                info.tok_end_of_turn = Some(end);
                let trie = TokTrie::from(&info, &words);
                let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
                ParserFactory::new_simple(&env)
                    .map(|mut f| {
                        f.quiet();
                        Arc::new(f)
                    })
                    .map_err(|e| e.to_string())
            }
        };
        Self { factory }
    }
}

/// A lazily built [`Grammars`] (kept by each model).
#[derive(Default)]
pub(crate) struct GrammarCell(OnceLock<Grammars>);

impl GrammarCell {
    fn get(&self, tok: &Tokenizer) -> Result<Arc<ParserFactory>> {
        self.0
            .get_or_init(|| Grammars::build(tok))
            .factory
            .clone()
            .map_err(|e| EngineError::InvalidRequest(format!("constrained decoding: {e}")))
    }
}

/// A compiled grammar with its position in the output: which tokens may come next.
/// Each generation takes its own (cloning one starts it afresh at the same point).
pub struct Constraint {
    matcher: Matcher,
    vocab: usize,
}

impl Clone for Constraint {
    fn clone(&self) -> Self {
        Self {
            matcher: self.matcher.deep_clone(),
            vocab: self.vocab,
        }
    }
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("stopped", &self.matcher.is_stopped())
            .finish()
    }
}

impl Constraint {
    /// Compiles `spec` for the vocabulary of `tok` (whose trie `cell` keeps). A schema
    /// or grammar the engine cannot enforce is refused, naming what it cannot do.
    pub(crate) fn compile(cell: &GrammarCell, tok: &Tokenizer, spec: &GrammarSpec) -> Result<Self> {
        let factory = cell.get(tok)?;
        let parser = factory
            .create_parser(spec.to_grammar())
            .map_err(|e| EngineError::InvalidRequest(format!("cannot enforce the grammar: {e}")))?;
        let mut matcher = Matcher::new(Ok(parser));
        // The first mask shows a grammar that allows nothing at all.
        let first = matcher
            .compute_mask()
            .map_err(|e| EngineError::InvalidRequest(format!("cannot enforce the grammar: {e}")))?;
        if first.is_zero() {
            return Err(EngineError::InvalidRequest(
                "cannot enforce the grammar: it allows no output".into(),
            ));
        }
        Ok(Self {
            matcher,
            vocab: tok.vocab_size(),
        })
    }

    /// Sets every logit the grammar forbids at this point to minus infinity (logits
    /// past the tokenizer's vocabulary too). Fails when nothing is allowed.
    pub fn restrict(&mut self, logits: &mut [f32]) -> Result<()> {
        let mask = self
            .matcher
            .compute_mask_or_eos()
            .map_err(|e| EngineError::InvalidRequest(format!("constrained decoding: {e}")))?;
        if mask.is_zero() {
            return Err(EngineError::InvalidRequest(
                "constrained decoding: the grammar allows no next token".into(),
            ));
        }
        for (id, logit) in logits.iter_mut().enumerate() {
            if id >= self.vocab || !mask.is_allowed(id as u32) {
                *logit = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    /// Moves past `token` (one the last [`Constraint::restrict`] allowed).
    pub fn advance(&mut self, token: u32) -> Result<()> {
        self.matcher
            .consume_token(token)
            .map_err(|e| EngineError::InvalidRequest(format!("constrained decoding: {e}")))
    }

    /// Whether the output is complete: the grammar allows nothing more.
    pub fn is_complete(&self) -> bool {
        self.matcher.is_stopped()
    }
}
