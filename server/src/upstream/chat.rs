//! Chat through a remote backend: the client's OpenAI chat request written for the
//! backend's kind, and the streamed answer put back together for clients that did not
//! ask for a stream.
//!
//! - `openai-chat`: the request goes through as the client sent it (the upstream
//!   implements the same API: tools, `response_format`, logprobs), with the upstream's
//!   model name, `stream` on and usage asked for, so Souffleur can count tokens.
//! - `ollama`: the request is translated to `/api/chat` (messages, tool calls with
//!   arguments as objects, `options`, `format` for JSON answers). What Ollama cannot
//!   do (log-probabilities, forcing a tool) is refused by name.
//!
//! Answers stream back as OpenAI `choices[0]` pieces ([`super::kind::Delta::Chunk`]).

use serde_json::{Map, Value, json};

use super::kind::{Kind, Wire};

/// A request field the backend cannot honour: the route answers 422 naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The request's field.
    pub param: String,
    /// Why.
    pub message: String,
}

impl Refused {
    fn new(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: param.to_string(),
            message: message.into(),
        }
    }
}

impl Wire {
    /// The path and body of a streamed chat for the OpenAI chat `request` (already
    /// checked by the route), generating at most `max_tokens`.
    pub fn chat(
        &self,
        request: &Map<String, Value>,
        max_tokens: usize,
    ) -> Result<(&'static str, Value), Refused> {
        match self.kind {
            Kind::OpenAiChat => Ok((
                "/v1/chat/completions",
                self.openai_chat(request, max_tokens),
            )),
            Kind::Ollama => Ok(("/api/chat", self.ollama_chat(request, max_tokens)?)),
            Kind::LlamaCppInfill | Kind::OpenAiCompletions => Err(Refused::new(
                "model",
                format!(
                    "the model runs on a `{}` backend, which serves code completions only",
                    self.kind.name()
                ),
            )),
        }
    }

    fn openai_chat(&self, request: &Map<String, Value>, max_tokens: usize) -> Value {
        let mut body = request.clone();
        body.remove("max_completion_tokens");
        body.insert("max_tokens".into(), json!(max_tokens));
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
        match &self.model {
            Some(m) => body.insert("model".into(), json!(m)),
            None => body.remove("model"),
        };
        Value::Object(body)
    }

    fn ollama_chat(
        &self,
        request: &Map<String, Value>,
        max_tokens: usize,
    ) -> Result<Value, Refused> {
        let field = |name: &str| request.get(name).filter(|v| !v.is_null());
        if field("logprobs").is_some_and(|v| v != &json!(false)) || field("top_logprobs").is_some()
        {
            return Err(Refused::new(
                "logprobs",
                "an `ollama` backend does not report log-probabilities",
            ));
        }
        if let Some(choice) = field("tool_choice").filter(|c| c.as_str() != Some("auto")) {
            return Err(Refused::new(
                "tool_choice",
                format!(
                    "an `ollama` backend lets the model choose (`auto`); `tool_choice` {choice} cannot be enforced"
                ),
            ));
        }
        if field("parallel_tool_calls") == Some(&json!(false)) {
            return Err(Refused::new(
                "parallel_tool_calls",
                "an `ollama` backend cannot limit the model to one tool call",
            ));
        }
        let mut options = Map::new();
        options.insert("num_predict".into(), json!(max_tokens));
        for (from, to) in [
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("top_k", "top_k"),
            ("seed", "seed"),
            ("presence_penalty", "presence_penalty"),
            ("frequency_penalty", "frequency_penalty"),
            ("repetition_penalty", "repeat_penalty"),
        ] {
            if let Some(v) = field(from) {
                options.insert(to.into(), v.clone());
            }
        }
        if let Some(stop) = field("stop") {
            let stop = match stop {
                Value::String(s) => json!([s]),
                other => other.clone(),
            };
            options.insert("stop".into(), stop);
        }
        let messages: Vec<Value> = field("messages")
            .and_then(Value::as_array)
            .map(|m| m.iter().map(ollama_message).collect())
            .unwrap_or_default();
        let mut body = json!({
            "model": self.model.clone().unwrap_or_default(),
            "messages": messages,
            "stream": true,
            "options": options,
        });
        if let Some(tools) = field("tools") {
            body["tools"] = tools.clone();
        }
        if let Some(format) = field("response_format") {
            match format["type"].as_str() {
                Some("json_object") => body["format"] = json!("json"),
                Some("json_schema") => body["format"] = format["json_schema"]["schema"].clone(),
                _ => {}
            }
        }
        Ok(body)
    }
}

/// One OpenAI message as Ollama's: text parts joined, `developer` as `system`, tool
/// calls with their arguments as objects.
fn ollama_message(m: &Value) -> Value {
    let content = match &m["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    };
    let role = match m["role"].as_str() {
        Some("developer") => "system",
        Some(r) => r,
        None => "user",
    };
    let mut out = json!({"role": role, "content": content});
    if let Some(calls) = m["tool_calls"].as_array() {
        out["tool_calls"] = calls
            .iter()
            .map(|c| {
                let arguments = c["function"]["arguments"]
                    .as_str()
                    .and_then(|a| serde_json::from_str::<Value>(a).ok())
                    .unwrap_or_else(|| json!({}));
                json!({"function": {"name": c["function"]["name"], "arguments": arguments}})
            })
            .collect();
    }
    out
}

/// A streamed chat answer put together: the message, the finish reason and the
/// log-probabilities, as a non-streamed OpenAI answer has them.
#[derive(Debug, Clone, PartialEq)]
pub struct Assembled {
    /// `{"role": "assistant", "content": …, "tool_calls": […]}`.
    pub message: Value,
    /// The finish reason.
    pub finish_reason: Option<String>,
    /// `{"content": [...]}` when the pieces carried log-probabilities.
    pub logprobs: Value,
}

/// Puts streamed `choices[0]` pieces together: texts joined, tool calls merged by
/// `index` (id, type and name from the first piece, argument texts joined).
pub fn assemble(pieces: &[Value]) -> Assembled {
    let mut content = String::new();
    let mut refusal: Option<String> = None;
    let mut calls: Vec<Value> = Vec::new();
    let mut finish = None;
    let mut logprobs: Vec<Value> = Vec::new();
    for piece in pieces {
        let delta = &piece["delta"];
        if let Some(t) = delta["content"].as_str() {
            content.push_str(t);
        }
        if let Some(t) = delta["refusal"].as_str() {
            refusal.get_or_insert_with(String::new).push_str(t);
        }
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = call["index"].as_u64().unwrap_or(calls.len() as u64) as usize;
            while calls.len() <= index {
                calls.push(json!({"id": "", "type": "function",
                                  "function": {"name": "", "arguments": ""}}));
            }
            let slot = &mut calls[index];
            if let Some(id) = call["id"].as_str() {
                slot["id"] = json!(id);
            }
            if let Some(name) = call["function"]["name"].as_str() {
                let joined = format!("{}{name}", slot["function"]["name"].as_str().unwrap_or(""));
                slot["function"]["name"] = json!(joined);
            }
            if let Some(a) = call["function"]["arguments"].as_str() {
                let joined = format!(
                    "{}{a}",
                    slot["function"]["arguments"].as_str().unwrap_or("")
                );
                slot["function"]["arguments"] = json!(joined);
            }
        }
        if let Some(f) = piece["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
        if let Some(lp) = piece["logprobs"]["content"].as_array() {
            logprobs.extend(lp.iter().cloned());
        }
    }
    let mut message = json!({"role": "assistant", "content": content});
    if !calls.is_empty() {
        if content.trim().is_empty() {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = json!(calls);
    }
    if let Some(r) = refusal {
        message["refusal"] = json!(r);
    }
    Assembled {
        message,
        finish_reason: finish,
        logprobs: if logprobs.is_empty() {
            Value::Null
        } else {
            json!({"content": logprobs})
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::kind::{Delta, StreamReader};
    use super::*;

    fn read_all(kind: Kind, body: &str, chunk: usize) -> Vec<Delta> {
        let mut r = StreamReader::for_chat(kind);
        let mut out = Vec::new();
        for piece in body.as_bytes().chunks(chunk) {
            out.extend(r.push(piece).expect("readable"));
        }
        out.extend(r.finish().expect("readable"));
        out
    }

    fn pieces(deltas: &[Delta]) -> Vec<Value> {
        deltas
            .iter()
            .filter_map(|d| match d {
                Delta::Chunk(v) => Some(v.clone()),
                _ => None,
            })
            .collect()
    }

    /// vLLM's `/v1/chat/completions` stream with a tool call split over chunks (the
    /// OpenAI streaming shape vLLM documents for tool calling), then the usage chunk.
    const VLLM_CHAT: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1733212345,\"model\":\"Qwen/Qwen2.5-Coder-7B-Instruct\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1733212345,\"model\":\"Qwen/Qwen2.5-Coder-7B-Instruct\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"chatcmpl-tool-9d\",\"type\":\"function\",\"index\":0,\"function\":{\"name\":\"read_file\"}}]},\"logprobs\":null,\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1733212345,\"model\":\"Qwen/Qwen2.5-Coder-7B-Instruct\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"path\\\": \"}}]},\"logprobs\":null,\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1733212345,\"model\":\"Qwen/Qwen2.5-Coder-7B-Instruct\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"a.py\\\"}\"}}]},\"logprobs\":null,\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1733212345,\"model\":\"Qwen/Qwen2.5-Coder-7B-Instruct\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"logprobs\":null,\"finish_reason\":\"tool_calls\",\"stop_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1733212345,\"model\":\"Qwen/Qwen2.5-Coder-7B-Instruct\",\"choices\":[],\"usage\":{\"prompt_tokens\":210,\"total_tokens\":232,\"completion_tokens\":22}}\n\n\
data: [DONE]\n\n";

    /// Ollama's `/api/chat` stream (docs/api.md, "Generate a chat completion",
    /// streaming response), then a tool call answer ("Chat request (with tools)").
    const OLLAMA_CHAT: &str = "{\"model\":\"qwen2.5-coder:7b\",\"created_at\":\"2023-08-04T08:52:19.385406455-07:00\",\"message\":{\"role\":\"assistant\",\"content\":\"The\"},\"done\":false}\n\
{\"model\":\"qwen2.5-coder:7b\",\"created_at\":\"2023-08-04T08:52:19.4Z\",\"message\":{\"role\":\"assistant\",\"content\":\" sky\"},\"done\":false}\n\
{\"model\":\"qwen2.5-coder:7b\",\"created_at\":\"2023-08-04T19:22:45.499127Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"total_duration\":4883583458,\"load_duration\":1334875,\"prompt_eval_count\":26,\"prompt_eval_duration\":342546000,\"eval_count\":282,\"eval_duration\":4535599000}\n";

    const OLLAMA_TOOL: &str = "{\"model\":\"llama3.2\",\"created_at\":\"2024-07-22T20:33:28.123648Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"get_current_weather\",\"arguments\":{\"format\":\"celsius\",\"location\":\"Paris, FR\"}}}]},\"done_reason\":\"stop\",\"done\":true,\"total_duration\":885095291,\"load_duration\":3753500,\"prompt_eval_count\":122,\"prompt_eval_duration\":328493000,\"eval_count\":33,\"eval_duration\":552222000}\n";

    #[test]
    fn recorded_chat_streams_read_as_openai_pieces_at_any_split() {
        for chunk in [1, 5, 64, 4096] {
            let v = read_all(Kind::OpenAiChat, VLLM_CHAT, chunk);
            let a = assemble(&pieces(&v));
            assert_eq!(a.message["content"], Value::Null, "{chunk}");
            assert_eq!(a.message["tool_calls"][0]["id"], "chatcmpl-tool-9d");
            assert_eq!(a.message["tool_calls"][0]["function"]["name"], "read_file");
            assert_eq!(
                a.message["tool_calls"][0]["function"]["arguments"],
                "{\"path\": \"a.py\"}"
            );
            assert_eq!(a.finish_reason.as_deref(), Some("tool_calls"));
            let Some(Delta::Done(end)) = v.last() else {
                panic!("no end: {v:?}");
            };
            assert_eq!(
                (end.prompt_tokens, end.completion_tokens),
                (Some(210), Some(22))
            );

            let o = read_all(Kind::Ollama, OLLAMA_CHAT, chunk);
            let a = assemble(&pieces(&o));
            assert_eq!(a.message["content"], "The sky");
            assert_eq!(a.finish_reason.as_deref(), Some("stop"));
            let Some(Delta::Done(end)) = o.last() else {
                panic!("no end: {o:?}");
            };
            assert_eq!(
                (end.prompt_tokens, end.completion_tokens),
                (Some(26), Some(282))
            );

            let t = read_all(Kind::Ollama, OLLAMA_TOOL, chunk);
            let a = assemble(&pieces(&t));
            assert_eq!(a.finish_reason.as_deref(), Some("tool_calls"));
            let call = &a.message["tool_calls"][0];
            assert_eq!(call["function"]["name"], "get_current_weather");
            let args: Value =
                serde_json::from_str(call["function"]["arguments"].as_str().expect("a string"))
                    .expect("JSON arguments");
            assert_eq!(args["location"], "Paris, FR");
            assert!(call["id"].as_str().is_some_and(|id| !id.is_empty()));
        }
    }

    fn request(v: Value) -> Map<String, Value> {
        v.as_object().expect("object").clone()
    }

    #[test]
    fn chat_requests_are_written_for_each_kind_and_what_ollama_cannot_do_is_named() {
        let sent = request(json!({
            "model": "chat",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Read a.py"}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "read_file", "arguments": "{\"path\": \"a.py\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "x = 1"}
            ],
            "max_completion_tokens": 99,
            "temperature": 0,
            "stop": "\n\n",
            "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}},
            "tools": [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}]
        }));
        let openai = Wire {
            kind: Kind::OpenAiChat,
            model: Some("Qwen/Qwen2.5-Coder-7B-Instruct".into()),
            fim: None,
        };
        let (path, body) = openai.chat(&sent, 64).expect("openai");
        assert_eq!(path, "/v1/chat/completions");
        assert_eq!(body["model"], "Qwen/Qwen2.5-Coder-7B-Instruct");
        assert_eq!(body["max_tokens"], 64);
        assert!(body.get("max_completion_tokens").is_none());
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["tools"], sent["tools"]);
        assert_eq!(body["messages"], sent["messages"]);

        let ollama = Wire {
            kind: Kind::Ollama,
            model: Some("qwen2.5-coder:7b".into()),
            fim: None,
        };
        let (path, body) = ollama.chat(&sent, 64).expect("ollama");
        assert_eq!(path, "/api/chat");
        assert_eq!(body["model"], "qwen2.5-coder:7b");
        assert_eq!(
            body["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(body["messages"][1]["content"], "Read a.py");
        assert_eq!(
            body["messages"][2]["tool_calls"][0]["function"]["arguments"],
            json!({"path": "a.py"})
        );
        assert_eq!(body["options"]["num_predict"], 64);
        assert_eq!(body["options"]["stop"], json!(["\n\n"]));
        assert_eq!(body["format"], json!({"type": "object"}));
        assert_eq!(body["tools"], sent["tools"]);

        for (field, value) in [
            ("logprobs", json!(true)),
            ("tool_choice", json!("required")),
            ("parallel_tool_calls", json!(false)),
        ] {
            let mut asked = sent.clone();
            asked.insert(field.into(), value);
            let refused = ollama.chat(&asked, 64).expect_err(field);
            assert_eq!(refused.param, field);
        }
        let infill = Wire {
            kind: Kind::LlamaCppInfill,
            model: None,
            fim: None,
        };
        assert_eq!(infill.chat(&sent, 64).expect_err("infill").param, "model");
    }
}
