//! The wire formats of the remote engines Souffleur can front: how a fill-in-the-middle
//! request is written for each, and how each one's streamed answer is read back.
//!
//! - `llama.cpp-infill`: llama.cpp server's `POST /infill` (`input_prefix`,
//!   `input_suffix`, `input_extra`, `cache_prompt`); the server renders the model's FIM
//!   template itself. Streams server-sent events `data: {"content": …, "stop": …}`.
//! - `openai-completions`: any OpenAI-compatible `POST /v1/completions` (vLLM, llama.cpp
//!   server, SGLang, TGI). vLLM rejects `suffix`, so the FIM prompt is rendered here into
//!   `prompt`, and the template's end tokens are sent as `stop`. Streams
//!   `data: {"choices": [{"text": …, "finish_reason": …}]}` and `data: [DONE]`.
//! - `ollama`: `POST /api/generate` with `raw: true` and the rendered FIM prompt.
//!   Streams JSON lines `{"response": …, "done": …}`. Chat goes to `/api/chat`
//!   ([`super::chat`]).
//! - `openai-chat`: an OpenAI-compatible `POST /v1/chat/completions` for the chat and
//!   review roles ([`super::chat`]).

use serde::Deserialize;
use serde_json::{Value, json};

/// How Souffleur talks to a remote engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Kind {
    /// llama.cpp server's `/infill`.
    #[serde(rename = "llama.cpp-infill")]
    LlamaCppInfill,
    /// An OpenAI-compatible `/v1/completions`.
    #[serde(rename = "openai-completions")]
    OpenAiCompletions,
    /// Ollama's `/api/generate` (completions) and `/api/chat` (chat, review).
    #[serde(rename = "ollama")]
    Ollama,
    /// An OpenAI-compatible `/v1/chat/completions` (chat, review).
    #[serde(rename = "openai-chat")]
    OpenAiChat,
}

impl Kind {
    /// The name in configuration files.
    pub fn name(self) -> &'static str {
        match self {
            Kind::LlamaCppInfill => "llama.cpp-infill",
            Kind::OpenAiCompletions => "openai-completions",
            Kind::Ollama => "ollama",
            Kind::OpenAiChat => "openai-chat",
        }
    }

    /// Whether the kind serves code completions (fill-in-the-middle).
    pub fn serves_completions(self) -> bool {
        !matches!(self, Kind::OpenAiChat)
    }

    /// Whether the kind serves chat (and with it, reviews).
    pub fn serves_chat(self) -> bool {
        matches!(self, Kind::Ollama | Kind::OpenAiChat)
    }

    /// The roles a model of this kind can be given, as configuration names them.
    pub fn role_names(self) -> &'static str {
        match self {
            Kind::LlamaCppInfill | Kind::OpenAiCompletions => "`completion`",
            Kind::Ollama => "`completion`, `chat` and `review`",
            Kind::OpenAiChat => "`chat` and `review`",
        }
    }

    /// The path the active health check asks (200 means healthy): llama.cpp's
    /// `/health` answers 503 while the model loads.
    pub fn health_path(self) -> &'static str {
        match self {
            Kind::LlamaCppInfill => "/health",
            Kind::OpenAiCompletions | Kind::OpenAiChat => "/v1/models",
            Kind::Ollama => "/api/tags",
        }
    }

    /// Whether the kind needs the FIM prompt rendered by Souffleur.
    pub fn renders_fim(self) -> bool {
        !matches!(self, Kind::LlamaCppInfill)
    }
}

/// A model family's fill-in-the-middle template, for kinds that take a rendered prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FimFormat {
    /// Qwen2.5-Coder: `<|fim_prefix|>…<|fim_suffix|>…<|fim_middle|>`, other files as
    /// `<|file_sep|>path` sections.
    Qwen,
    /// StarCoder / StarCoder2: `<fim_prefix>…<fim_suffix>…<fim_middle>`.
    Starcoder,
    /// Code Llama: `<PRE> … <SUF>… <MID>`.
    CodeLlama,
    /// DeepSeek-Coder: `<｜fim▁begin｜>…<｜fim▁hole｜>…<｜fim▁end｜>`.
    Deepseek,
}

impl FimFormat {
    /// The prompt for `prefix` and `suffix`, other files' snippets before it.
    pub fn render(self, prefix: &str, suffix: &str, extra: &[ExtraFile]) -> String {
        let mut out = String::new();
        match self {
            FimFormat::Qwen => {
                for f in extra {
                    out.push_str(&format!("<|file_sep|>{}\n{}\n", f.filename, f.text));
                }
                out.push_str(&format!(
                    "<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>"
                ));
            }
            FimFormat::Starcoder => {
                for f in extra {
                    out.push_str(&format!("<file_sep>{}\n{}\n", f.filename, f.text));
                }
                out.push_str(&format!(
                    "<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>"
                ));
            }
            FimFormat::CodeLlama => {
                out.push_str("<PRE> ");
                out.push_str(&snippets_as_comments(extra));
                out.push_str(&format!("{prefix} <SUF>{suffix} <MID>"));
            }
            FimFormat::Deepseek => {
                out.push_str("<｜fim▁begin｜>");
                out.push_str(&snippets_as_comments(extra));
                out.push_str(&format!("{prefix}<｜fim▁hole｜>{suffix}<｜fim▁end｜>"));
            }
        }
        out
    }

    /// Texts that end a completion in this family (sent as `stop`: engines that do not
    /// treat them as end-of-generation would otherwise write past the middle).
    pub fn stops(self) -> &'static [&'static str] {
        match self {
            FimFormat::Qwen => &["<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|im_end|>"],
            FimFormat::Starcoder => &["<|endoftext|>", "<file_sep>"],
            FimFormat::CodeLlama => &[" <EOT>", "<EOT>"],
            FimFormat::Deepseek => &["<｜end▁of▁sentence｜>"],
        }
    }
}

/// Other files' snippets as `#`-free plain comments of the file names (families
/// without a file separator token see them as text before the prefix).
fn snippets_as_comments(extra: &[ExtraFile]) -> String {
    extra
        .iter()
        .map(|f| format!("// {}\n{}\n", f.filename, f.text))
        .collect()
}

/// Another file's snippet sent with a request (llama.cpp's `input_extra`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraFile {
    /// The file's path.
    pub filename: String,
    /// The snippet.
    pub text: String,
}

/// A fill-in-the-middle request, whatever the kind.
#[derive(Debug, Clone, PartialEq)]
pub struct InfillRequest {
    /// Text before the cursor.
    pub prefix: String,
    /// Text after the cursor.
    pub suffix: String,
    /// Other files' snippets (retrieved, client-sent).
    pub extra: Vec<ExtraFile>,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Sampling temperature (0: greedy).
    pub temperature: f32,
    /// Sampling seed.
    pub seed: u64,
    /// Texts that end the completion.
    pub stop: Vec<String>,
    /// Nucleus sampling, top-k and penalties (written only when not the defaults).
    pub sampling: Extras,
    /// A plain continuation of `prefix` (OpenAI's `/v1/completions` without `suffix`):
    /// no FIM template; llama.cpp's `/completion` instead of `/infill`.
    pub plain: bool,
}

/// Sampling settings beyond temperature and seed, each sent only when it is not the
/// default (so kinds that do not know a field never see it unless a client set it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Extras {
    /// Nucleus sampling (1: off).
    pub top_p: f32,
    /// Top-k (0: off).
    pub top_k: usize,
    /// OpenAI's presence penalty (0: off).
    pub presence_penalty: f32,
    /// OpenAI's frequency penalty (0: off).
    pub frequency_penalty: f32,
    /// Multiplicative repetition penalty (1: off).
    pub repetition_penalty: f32,
}

impl Default for Extras {
    fn default() -> Self {
        Self {
            top_p: 1.0,
            top_k: 0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
        }
    }
}

impl Extras {
    /// The fields that are set, under the names of `kind` (llama.cpp and Ollama call
    /// the repetition penalty `repeat_penalty`).
    fn write(&self, kind: Kind, into: &mut serde_json::Map<String, Value>) {
        let repetition = match kind {
            Kind::OpenAiCompletions | Kind::OpenAiChat => "repetition_penalty",
            Kind::LlamaCppInfill | Kind::Ollama => "repeat_penalty",
        };
        if self.top_p != 1.0 {
            into.insert("top_p".into(), json!(self.top_p));
        }
        if self.top_k != 0 {
            into.insert("top_k".into(), json!(self.top_k));
        }
        if self.presence_penalty != 0.0 {
            into.insert("presence_penalty".into(), json!(self.presence_penalty));
        }
        if self.frequency_penalty != 0.0 {
            into.insert("frequency_penalty".into(), json!(self.frequency_penalty));
        }
        if self.repetition_penalty != 1.0 {
            into.insert(repetition.into(), json!(self.repetition_penalty));
        }
    }
}

/// Everything needed to write a request for one backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Wire {
    /// The kind.
    pub kind: Kind,
    /// The model name the upstream expects (`model` of OpenAI and Ollama requests).
    pub model: Option<String>,
    /// The FIM template (kinds that take a rendered prompt).
    pub fim: Option<FimFormat>,
}

impl Wire {
    /// The path and JSON body of a streamed `request`; `None` for a kind that serves
    /// no completions.
    pub fn infill(&self, request: &InfillRequest) -> Option<(&'static str, Value)> {
        let prompt = || {
            if request.plain {
                return request.prefix.clone();
            }
            self.fim.unwrap_or(FimFormat::Qwen).render(
                &request.prefix,
                &request.suffix,
                &request.extra,
            )
        };
        let mut stop = request.stop.clone();
        if let (Some(fim), false) = (self.fim, request.plain) {
            stop.extend(fim.stops().iter().map(|s| s.to_string()));
        }
        let (path, mut body, options) = match self.kind {
            Kind::OpenAiChat => return None,
            Kind::LlamaCppInfill if request.plain => (
                "/completion",
                json!({
                    "prompt": request.prefix,
                    "n_predict": request.max_tokens,
                    "temperature": request.temperature,
                    "seed": request.seed,
                    "stop": stop,
                    "cache_prompt": true,
                    "stream": true,
                }),
                None,
            ),
            Kind::LlamaCppInfill => (
                "/infill",
                json!({
                    "input_prefix": request.prefix,
                    "input_suffix": request.suffix,
                    "input_extra": request.extra.iter()
                        .map(|f| json!({"filename": f.filename, "text": f.text}))
                        .collect::<Vec<_>>(),
                    "n_predict": request.max_tokens,
                    "temperature": request.temperature,
                    "seed": request.seed,
                    "stop": stop,
                    "cache_prompt": true,
                    "stream": true,
                }),
                None,
            ),
            Kind::OpenAiCompletions => {
                let mut body = json!({
                    "prompt": prompt(),
                    "max_tokens": request.max_tokens,
                    "temperature": request.temperature,
                    "seed": request.seed,
                    "stop": stop,
                    "stream": true,
                    "stream_options": {"include_usage": true},
                });
                if let Some(m) = &self.model {
                    body["model"] = json!(m);
                }
                ("/v1/completions", body, None)
            }
            Kind::Ollama => (
                "/api/generate",
                json!({
                    "model": self.model.clone().unwrap_or_default(),
                    "prompt": prompt(),
                    "raw": true,
                    "stream": true,
                    "options": {
                        "num_predict": request.max_tokens,
                        "temperature": request.temperature,
                        "seed": request.seed,
                        "stop": stop,
                    },
                }),
                Some("options"),
            ),
        };
        let target = match options {
            Some(key) => body.get_mut(key),
            None => Some(&mut body),
        };
        if let Some(Value::Object(fields)) = target {
            request.sampling.write(self.kind, fields);
        }
        Some((path, body))
    }
}

/// A piece of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// Generated text (completions).
    Text(String),
    /// A piece of a chat answer in the shape of OpenAI's streamed `choices[0]`
    /// (`delta` with `content` or `tool_calls`, `finish_reason`, `logprobs`), whatever
    /// the kind.
    Chunk(Value),
    /// The end.
    Done(End),
}

/// How a streamed answer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    /// The upstream's reason (`stop`, `length`, …).
    pub reason: String,
    /// Prompt tokens, when the upstream said.
    pub prompt_tokens: Option<usize>,
    /// Generated tokens, when the upstream said.
    pub completion_tokens: Option<usize>,
}

impl End {
    fn new(reason: &str, prompt: &Value, completion: &Value) -> Self {
        Self {
            reason: reason.to_string(),
            prompt_tokens: prompt.as_u64().map(|n| n as usize),
            completion_tokens: completion.as_u64().map(|n| n as usize),
        }
    }
}

/// Why an upstream's answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// A line that is not the kind's format.
    #[error("unreadable answer from the upstream: {0}")]
    Malformed(String),
    /// The upstream reported an error inside its stream.
    #[error("the upstream reported: {0}")]
    Reported(String),
}

/// Reads one kind's streamed answer from bytes as they arrive (lines may be split
/// anywhere between chunks).
#[derive(Debug)]
pub struct StreamReader {
    kind: Kind,
    /// A chat answer ([`super::chat`]) rather than a completion's.
    chat: bool,
    pending: Vec<u8>,
    done: bool,
    /// OpenAI streams: the finish reason and usage seen before `[DONE]`.
    reason: Option<String>,
    usage: Value,
    /// Ollama chat: tool calls seen so far (the finish reason is then `tool_calls`).
    calls: usize,
}

impl StreamReader {
    /// A reader of `kind`'s completion stream.
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            chat: false,
            pending: Vec::new(),
            done: false,
            reason: None,
            usage: Value::Null,
            calls: 0,
        }
    }

    /// A reader of `kind`'s chat stream.
    pub fn for_chat(kind: Kind) -> Self {
        Self {
            chat: true,
            ..Self::new(kind)
        }
    }

    /// A reader of the same kind and mode that has read nothing (for a retry).
    pub fn fresh(&self) -> Self {
        Self {
            chat: self.chat,
            ..Self::new(self.kind)
        }
    }

    /// Whether the end of the answer was read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The deltas in `chunk` (and in what earlier chunks left unfinished).
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Delta>, StreamError> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim();
            if line.is_empty() || self.done {
                continue;
            }
            out.extend(self.line(line)?);
        }
        Ok(out)
    }

    /// What remains at the end of the body (an answer without a final newline).
    pub fn finish(&mut self) -> Result<Vec<Delta>, StreamError> {
        let rest = std::mem::take(&mut self.pending);
        let rest = String::from_utf8_lossy(&rest);
        let rest = rest.trim();
        if rest.is_empty() || self.done {
            return Ok(Vec::new());
        }
        self.line(rest)
    }

    fn line(&mut self, line: &str) -> Result<Vec<Delta>, StreamError> {
        let json_text = match self.kind {
            Kind::Ollama => line,
            Kind::LlamaCppInfill | Kind::OpenAiCompletions | Kind::OpenAiChat => {
                if line.starts_with(':') || line.starts_with("event:") || line.starts_with("id:") {
                    return Ok(Vec::new());
                }
                if let Some(err) = line.strip_prefix("error:") {
                    return Err(StreamError::Reported(error_message(err.trim())));
                }
                let Some(data) = line.strip_prefix("data:") else {
                    return Err(StreamError::Malformed(clip(line)));
                };
                let data = data.trim();
                if data == "[DONE]" {
                    self.done = true;
                    let reason = self.reason.clone().unwrap_or_else(|| "stop".into());
                    return Ok(vec![Delta::Done(End::new(
                        &reason,
                        &self.usage["prompt_tokens"],
                        &self.usage["completion_tokens"],
                    ))]);
                }
                data
            }
        };
        let v: Value =
            serde_json::from_str(json_text).map_err(|_| StreamError::Malformed(clip(line)))?;
        if v.get("error").is_some_and(|e| !e.is_null()) {
            return Err(StreamError::Reported(error_message(json_text)));
        }
        Ok(match (self.kind, self.chat) {
            (Kind::LlamaCppInfill, _) => self.infill_event(&v),
            (Kind::OpenAiCompletions | Kind::OpenAiChat, _) => self.openai_event(&v),
            (Kind::Ollama, false) => self.ollama_generate_line(&v),
            (Kind::Ollama, true) => self.ollama_chat_line(&v),
        })
    }

    /// llama.cpp's `/infill` event.
    fn infill_event(&mut self, v: &Value) -> Vec<Delta> {
        let mut out = Vec::new();
        let text = v["content"].as_str().unwrap_or("");
        if !text.is_empty() {
            out.push(Delta::Text(text.to_string()));
        }
        if v["stop"].as_bool() == Some(true) {
            self.done = true;
            let reason = match v["stop_type"].as_str() {
                Some("limit") => "length",
                _ => "stop",
            };
            out.push(Delta::Done(End::new(
                reason,
                &v["tokens_evaluated"],
                &v["tokens_predicted"],
            )));
        }
        out
    }

    /// An OpenAI completions or chat chunk: the end comes with `[DONE]`, after the
    /// usage chunk when one is sent.
    fn openai_event(&mut self, v: &Value) -> Vec<Delta> {
        let mut out = Vec::new();
        if v["usage"].is_object() {
            self.usage = v["usage"].clone();
        }
        let choice = &v["choices"][0];
        if !choice.is_object() {
            return out;
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.reason = Some(reason.to_string());
        }
        if self.chat {
            out.push(Delta::Chunk(choice.clone()));
        } else {
            let text = choice["text"].as_str().unwrap_or("");
            if !text.is_empty() {
                out.push(Delta::Text(text.to_string()));
            }
        }
        out
    }

    /// A line of Ollama's `/api/generate` stream.
    fn ollama_generate_line(&mut self, v: &Value) -> Vec<Delta> {
        let mut out = Vec::new();
        let text = v["response"].as_str().unwrap_or("");
        if !text.is_empty() {
            out.push(Delta::Text(text.to_string()));
        }
        if v["done"].as_bool() == Some(true) {
            self.done = true;
            let reason = v["done_reason"].as_str().unwrap_or("stop");
            out.push(Delta::Done(End::new(
                reason,
                &v["prompt_eval_count"],
                &v["eval_count"],
            )));
        }
        out
    }

    /// A line of Ollama's `/api/chat` stream as OpenAI chunks: text as `content`, tool
    /// calls (Ollama sends whole calls, arguments as an object) as `tool_calls` with
    /// ids and arguments in a string, and the end with its finish reason.
    fn ollama_chat_line(&mut self, v: &Value) -> Vec<Delta> {
        let mut out = Vec::new();
        let message = &v["message"];
        let text = message["content"].as_str().unwrap_or("");
        if !text.is_empty() {
            out.push(Delta::Chunk(json!({
                "index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": null
            })));
        }
        if let Some(calls) = message["tool_calls"].as_array() {
            let calls: Vec<Value> = calls
                .iter()
                .map(|c| {
                    let index = self.calls;
                    self.calls += 1;
                    let arguments = match &c["function"]["arguments"] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    json!({
                        "index": index,
                        "id": format!("call_{index}"),
                        "type": "function",
                        "function": {"name": c["function"]["name"], "arguments": arguments},
                    })
                })
                .collect();
            if !calls.is_empty() {
                out.push(Delta::Chunk(json!({
                    "index": 0, "delta": {"role": "assistant", "tool_calls": calls}, "finish_reason": null
                })));
            }
        }
        if v["done"].as_bool() == Some(true) {
            self.done = true;
            let reason = if self.calls > 0 {
                "tool_calls"
            } else {
                v["done_reason"].as_str().unwrap_or("stop")
            };
            out.push(Delta::Chunk(
                json!({"index": 0, "delta": {}, "finish_reason": reason}),
            ));
            out.push(Delta::Done(End::new(
                reason,
                &v["prompt_eval_count"],
                &v["eval_count"],
            )));
        }
        out
    }
}

/// An upstream's error as one line: its `message` when it has one.
pub fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v["error"]["message"]
            .as_str()
            .or_else(|| v["message"].as_str())
            .or_else(|| v["error"].as_str())
            .or_else(|| v["detail"].as_str())
            .map(str::to_string)
    });
    clip(&message.unwrap_or_else(|| body.to_string()))
}

/// `text` cut to 300 characters for error messages.
fn clip(text: &str) -> String {
    let mut out: String = text.chars().take(300).collect();
    if text.chars().count() > 300 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(kind: Kind, body: &str, chunk: usize) -> Result<Vec<Delta>, StreamError> {
        let mut r = StreamReader::new(kind);
        let mut out = Vec::new();
        // Split anywhere, as the network does.
        for piece in body.as_bytes().chunks(chunk) {
            out.extend(r.push(piece)?);
        }
        out.extend(r.finish()?);
        Ok(out)
    }

    fn text_and_end(deltas: &[Delta]) -> (String, Option<String>) {
        let mut text = String::new();
        let mut end = None;
        for d in deltas {
            match d {
                Delta::Text(t) => text.push_str(t),
                Delta::Done(e) => end = Some(e.reason.clone()),
                Delta::Chunk(c) => panic!("a completion stream gave a chat piece: {c}"),
            }
        }
        (text, end)
    }

    /// vLLM's OpenAI server streaming `/v1/completions` (the shape of OpenAI's legacy
    /// completions stream, with vLLM's `stop_reason`), from vLLM's documentation of its
    /// OpenAI-compatible server.
    const VLLM_STREAM: &str = "data: {\"id\":\"cmpl-8f1c\",\"object\":\"text_completion\",\"created\":1733212345,\"model\":\"Qwen/Qwen2.5-Coder-7B\",\"choices\":[{\"index\":0,\"text\":\"a\",\"logprobs\":null,\"finish_reason\":null,\"stop_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"cmpl-8f1c\",\"object\":\"text_completion\",\"created\":1733212345,\"model\":\"Qwen/Qwen2.5-Coder-7B\",\"choices\":[{\"index\":0,\"text\":\" + b\",\"logprobs\":null,\"finish_reason\":null,\"stop_reason\":null}],\"usage\":null}\n\n\
data: {\"id\":\"cmpl-8f1c\",\"object\":\"text_completion\",\"created\":1733212345,\"model\":\"Qwen/Qwen2.5-Coder-7B\",\"choices\":[{\"index\":0,\"text\":\"\",\"logprobs\":null,\"finish_reason\":\"stop\",\"stop_reason\":\"<|endoftext|>\"}],\"usage\":null}\n\n\
data: {\"id\":\"cmpl-8f1c\",\"object\":\"text_completion\",\"created\":1733212345,\"model\":\"Qwen/Qwen2.5-Coder-7B\",\"choices\":[],\"usage\":{\"prompt_tokens\":17,\"total_tokens\":20,\"completion_tokens\":3}}\n\n\
data: [DONE]\n\n";

    /// Ollama's `/api/generate` stream (docs/api.md, "Generate a completion",
    /// streaming response): one JSON object per line, the last with `done: true`.
    const OLLAMA_STREAM: &str = "{\"model\":\"qwen2.5-coder:7b\",\"created_at\":\"2024-11-09T21:07:55.186497Z\",\"response\":\"a\",\"done\":false}\n\
{\"model\":\"qwen2.5-coder:7b\",\"created_at\":\"2024-11-09T21:07:55.201Z\",\"response\":\" + b\",\"done\":false}\n\
{\"model\":\"qwen2.5-coder:7b\",\"created_at\":\"2024-11-09T21:07:55.222Z\",\"response\":\"\",\"done\":true,\"done_reason\":\"stop\",\"context\":[1,2,3],\"total_duration\":10706818083,\"load_duration\":6338219291,\"prompt_eval_count\":26,\"prompt_eval_duration\":130079000,\"eval_count\":259,\"eval_duration\":4232710000}\n";

    #[test]
    fn recorded_vllm_and_ollama_streams_read_the_same_at_any_split() {
        for chunk in [1, 3, 7, 64, 4096] {
            let v = read_all(Kind::OpenAiCompletions, VLLM_STREAM, chunk).expect("vllm");
            assert_eq!(
                text_and_end(&v),
                ("a + b".into(), Some("stop".into())),
                "{chunk}"
            );
            let o = read_all(Kind::Ollama, OLLAMA_STREAM, chunk).expect("ollama");
            assert_eq!(
                text_and_end(&o),
                ("a + b".into(), Some("stop".into())),
                "{chunk}"
            );
            for (deltas, usage) in [(v, (17, 3)), (o, (26, 259))] {
                let Some(Delta::Done(end)) = deltas.last() else {
                    panic!("no end: {deltas:?}");
                };
                assert_eq!(
                    (end.prompt_tokens, end.completion_tokens),
                    (Some(usage.0), Some(usage.1))
                );
            }
        }
    }

    #[test]
    fn errors_in_streams_are_reported_and_garbage_is_refused() {
        let e = read_all(
            Kind::LlamaCppInfill,
            "data: {\"error\":{\"code\":400,\"message\":\"the request exceeds the available context size\",\"type\":\"exceed_context_size_error\"}}\n\n",
            5,
        );
        assert_eq!(
            e,
            Err(StreamError::Reported(
                "the request exceeds the available context size".into()
            ))
        );
        let e = read_all(Kind::Ollama, "{\"error\":\"model 'x' not found\"}\n", 4);
        assert_eq!(e, Err(StreamError::Reported("model 'x' not found".into())));
        assert!(matches!(
            read_all(Kind::OpenAiCompletions, "<html>502 Bad Gateway</html>\n", 9),
            Err(StreamError::Malformed(_))
        ));
    }

    #[test]
    fn requests_are_written_in_each_kinds_shape() {
        let request = InfillRequest {
            prefix: "def add(a, b):\n    return ".into(),
            suffix: "\n".into(),
            extra: vec![ExtraFile {
                filename: "util.py".into(),
                text: "def sub(a, b):\n    return a - b".into(),
            }],
            max_tokens: 32,
            temperature: 0.0,
            seed: 7,
            stop: vec!["\n".into()],
            sampling: Extras::default(),
            plain: false,
        };
        let infill = Wire {
            kind: Kind::LlamaCppInfill,
            model: None,
            fim: None,
        };
        let (path, body) = infill.infill(&request).expect("a completion kind");
        assert_eq!(path, "/infill");
        assert_eq!(body["input_prefix"], "def add(a, b):\n    return ");
        assert_eq!(body["input_extra"][0]["filename"], "util.py");
        assert_eq!(body["cache_prompt"], true);
        assert_eq!(body["n_predict"], 32);
        let openai = Wire {
            kind: Kind::OpenAiCompletions,
            model: Some("Qwen/Qwen2.5-Coder-7B".into()),
            fim: Some(FimFormat::Qwen),
        };
        let (path, body) = openai.infill(&request).expect("a completion kind");
        assert_eq!(path, "/v1/completions");
        assert_eq!(
            body["prompt"],
            "<|file_sep|>util.py\ndef sub(a, b):\n    return a - b\n<|fim_prefix|>def add(a, b):\n    return <|fim_suffix|>\n<|fim_middle|>"
        );
        assert!(body.get("suffix").is_none(), "vLLM rejects `suffix`");
        assert_eq!(body["model"], "Qwen/Qwen2.5-Coder-7B");
        let stops: Vec<&str> = body["stop"]
            .as_array()
            .expect("stop")
            .iter()
            .filter_map(|s| s.as_str())
            .collect();
        assert!(
            stops.contains(&"\n") && stops.contains(&"<|endoftext|>"),
            "{stops:?}"
        );
        let ollama = Wire {
            kind: Kind::Ollama,
            model: Some("qwen2.5-coder:7b".into()),
            fim: Some(FimFormat::CodeLlama),
        };
        let (path, body) = ollama.infill(&request).expect("a completion kind");
        assert_eq!(path, "/api/generate");
        assert_eq!(body["raw"], true);
        assert!(
            body["prompt"].as_str().is_some_and(
                |p| p.starts_with("<PRE> // util.py\n") && p.ends_with(" <SUF>\n <MID>")
            ),
            "{}",
            body["prompt"]
        );
        assert_eq!(body["options"]["num_predict"], 32);
        assert!(
            body["options"].get("top_p").is_none(),
            "defaults are not sent"
        );

        // A plain continuation with sampling settings: no template, llama.cpp's
        // `/completion`, each setting under the kind's name.
        let plain = InfillRequest {
            plain: true,
            sampling: Extras {
                top_p: 0.9,
                repetition_penalty: 1.1,
                ..Extras::default()
            },
            ..request
        };
        let (path, body) = infill.infill(&plain).expect("completion kind");
        assert_eq!(path, "/completion");
        assert_eq!(body["prompt"], "def add(a, b):\n    return ");
        assert_eq!(body["repeat_penalty"], json!(1.1f32));
        let (_, body) = openai.infill(&plain).expect("completion kind");
        assert_eq!(body["prompt"], "def add(a, b):\n    return ");
        assert_eq!(body["stop"], json!(["\n"]), "no FIM end tokens");
        assert_eq!(body["top_p"], json!(0.9f32));
        assert_eq!(body["repetition_penalty"], json!(1.1f32));
        let (_, body) = ollama.infill(&plain).expect("completion kind");
        assert_eq!(body["prompt"], "def add(a, b):\n    return ");
        assert_eq!(body["options"]["repeat_penalty"], json!(1.1f32));
        assert_eq!(body["options"]["top_p"], json!(0.9f32));
    }
}
