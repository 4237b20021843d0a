//! A review's model on a remote chat backend: the same prompt as the built-in engine
//! gets (system turn, worked example, the fenced chunk), greedy and seeded, with the
//! findings answer held to its JSON Schema by the backend's own structured output
//! (`response_format` for OpenAI-compatible servers, `format` for Ollama). The
//! self-check's Yes/No is read from a short free answer.
//!
//! Reviews run on a blocking thread; each call waits for its answer on the server's
//! runtime, and the review's cancel token closes the upstream request.

use std::sync::Arc;
use std::time::Duration;

use engine::CancelToken;
use review::ReviewError;
use review::model::{AnswerShape, Completion, ReviewModel, example_turn, finding_schema};
use serde_json::{Map, Value, json};

use super::Upstream;
use super::kind::Delta;
use crate::completion::remote::TokenCount;

/// How often a waiting call looks whether the review was cancelled.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// A remote backend as a [`ReviewModel`].
pub struct RemoteReviewModel {
    upstream: Arc<Upstream>,
    name: String,
    runtime: tokio::runtime::Handle,
    cancel: CancelToken,
    count: TokenCount,
}

impl RemoteReviewModel {
    /// Reviews with `upstream` under the model id `name`; `runtime` runs the requests
    /// (the caller blocks on it from a blocking thread); `cancel` ends them.
    pub fn new(
        upstream: Arc<Upstream>,
        name: impl Into<String>,
        runtime: tokio::runtime::Handle,
        cancel: CancelToken,
    ) -> Self {
        let count = TokenCount::of(&upstream);
        Self {
            upstream,
            name: name.into(),
            runtime,
            cancel,
            count,
        }
    }

    /// The chat request of one review question.
    fn request(system: &str, user: &str, shape: AnswerShape) -> Map<String, Value> {
        let (example_user, example_answer) = example_turn();
        let mut request = json!({
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": example_user},
                {"role": "assistant", "content": example_answer},
                {"role": "user", "content": user},
            ],
            "temperature": 0,
            "seed": 0,
        });
        if shape == AnswerShape::Findings {
            let mut finding = finding_schema();
            if let Some(o) = finding.as_object_mut() {
                // llguidance's layout hint means nothing to other engines.
                o.remove("x-guidance");
            }
            request["response_format"] = json!({
                "type": "json_schema",
                "json_schema": {
                    "name": "review_findings",
                    "strict": true,
                    "schema": {
                        "type": "object",
                        "properties": {"findings": {"type": "array", "items": finding}},
                        "required": ["findings"],
                        "additionalProperties": false,
                    },
                },
            });
        }
        match request {
            Value::Object(o) => o,
            _ => Map::new(),
        }
    }

    async fn ask(
        &self,
        request: Map<String, Value>,
        max_tokens: usize,
    ) -> Result<(String, Option<usize>, Option<usize>), ReviewError> {
        let (path, body) = self
            .upstream
            .wire
            .chat(&request, max_tokens)
            .map_err(|r| ReviewError::Model(r.message))?;
        let mut stream = self
            .upstream
            .chat(path, body, None)
            .await
            .map_err(|e| ReviewError::Model(e.to_string()))?;
        let mut text = String::new();
        let mut counts = (None, None);
        while let Some(d) = stream.next().await {
            match d.map_err(|e| ReviewError::Model(e.to_string()))? {
                Delta::Chunk(c) => text.push_str(c["delta"]["content"].as_str().unwrap_or("")),
                Delta::Text(t) => text.push_str(&t),
                Delta::Done(end) => counts = (end.prompt_tokens, end.completion_tokens),
            }
        }
        Ok((text, counts.0, counts.1))
    }
}

impl ReviewModel for RemoteReviewModel {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn count_tokens(&self, text: &str) -> usize {
        self.count.count(text)
    }

    fn complete(
        &self,
        system: &str,
        user: &str,
        shape: AnswerShape,
        max_new_tokens: usize,
    ) -> Result<Completion, ReviewError> {
        if self.cancel.is_cancelled() {
            return Err(ReviewError::Cancelled);
        }
        let request = Self::request(system, user, shape);
        let max_tokens = match shape {
            AnswerShape::Findings => max_new_tokens,
            AnswerShape::YesNo => max_new_tokens.min(4),
        };
        let cancel = self.cancel.clone();
        let answered = self.runtime.block_on(async {
            tokio::select! {
                a = self.ask(request, max_tokens) => Some(a),
                _ = async { while !cancel.is_cancelled() { tokio::time::sleep(CANCEL_POLL).await } } => None,
            }
        });
        let (text, prompt, generated) = answered.ok_or(ReviewError::Cancelled)??;
        let prompt_tokens =
            prompt.unwrap_or_else(|| self.count.count(system) + self.count.count(user));
        let completion_tokens = generated.unwrap_or_else(|| self.count.count(&text));
        Ok(Completion {
            text: text.trim().to_string(),
            prompt_tokens,
            completion_tokens,
        })
    }
}
