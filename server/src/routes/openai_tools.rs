//! Tool calling and structured output for chat completions: OpenAI's `tools`,
//! `tool_choice`, `parallel_tool_calls` and `response_format` turned into what the
//! engine does — tools rendered by the model's chat template, grammars that force a
//! call (`required`, a named function) or a JSON answer, and the model's
//! `<tool_call>{"name": …, "arguments": …}</tool_call>` blocks read back into
//! OpenAI's `tool_calls`, whole or as a stream.

use engine::GrammarSpec;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;

/// Where a tool call starts and ends in the output of models with Hermes-style tool
/// templates (Qwen2.5, Qwen2.5-Coder).
const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// One entry of `tools`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolSpec {
    #[serde(rename = "type")]
    kind: String,
    function: Option<FunctionSpec>,
}

/// A function a tool entry describes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FunctionSpec {
    name: String,
    description: Option<String>,
    parameters: Option<Value>,
    /// OpenAI's strict mode: arguments always match the schema. Forced calls are
    /// always constrained; with `auto`, a strict function makes the answer either
    /// text or constrained calls ([`Tools::grammar`]).
    strict: Option<bool>,
}

/// `response_format`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ResponseFormat {
    /// Plain text (the default).
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// The schema and its name.
        json_schema: JsonSchemaFormat,
    },
}

/// `response_format.json_schema`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSchemaFormat {
    name: String,
    /// What the format is for: shown to the model (OpenAI: "used by the model to
    /// determine how to respond in the format").
    description: Option<String>,
    schema: Option<Value>,
    /// OpenAI's strict mode. The schema is always enforced by the grammar, so `false`
    /// (best effort) gets the stricter behaviour; nothing is lost by it.
    #[allow(dead_code)]
    strict: Option<bool>,
}

/// What `response_format` asks of the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The JSON Schema the answer must match (`{"type": "object"}` for `json_object`).
    pub schema: Value,
    /// `json_schema.description`, phrased for the system turn.
    pub instruction: Option<String>,
}

/// How the model may use the tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Text or calls, as the model decides.
    Auto,
    /// At least one call.
    Required,
    /// A call of this function.
    Named(String),
}

/// The tools of a request, checked: what the template shows, how the model must use
/// them, and whether several calls may come at once.
#[derive(Debug)]
pub struct Tools {
    /// The tools as the chat template receives them (OpenAI's objects, checked).
    pub specs: Vec<Value>,
    names: Vec<String>,
    /// How the model may use them.
    pub choice: Choice,
    parallel: bool,
    /// Whether a function asks for strict arguments.
    strict: bool,
}

/// Checks `tools`, `tool_choice` and `parallel_tool_calls`; `None` when the model is
/// to answer in text (no tools, or `tool_choice: "none"`).
pub fn plan(
    tools: Option<Vec<Value>>,
    tool_choice: Option<&Value>,
    parallel: Option<bool>,
) -> Result<Option<Tools>, ApiError> {
    let tools = tools.unwrap_or_default();
    let bad_choice = |m: String| ApiError::unprocessable(m).with_param("tool_choice");
    let choice = match tool_choice {
        None => Choice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Choice::Auto,
            "none" => return Ok(None),
            "required" => Choice::Required,
            other => {
                return Err(bad_choice(format!(
                    "`tool_choice` is `auto`, `none`, `required` or a named function, not `{other}`"
                )));
            }
        },
        Some(v) => match (
            v.get("type").and_then(Value::as_str),
            v.pointer("/function/name").and_then(Value::as_str),
        ) {
            (Some("function"), Some(name)) => Choice::Named(name.to_string()),
            _ => {
                return Err(bad_choice(
                    "a named `tool_choice` is `{\"type\": \"function\", \"function\": {\"name\": …}}`"
                        .into(),
                ));
            }
        },
    };
    if tools.is_empty() {
        return match choice {
            Choice::Auto => Ok(None),
            _ => Err(bad_choice("`tool_choice` needs `tools`".into())),
        };
    }
    let mut strict = false;
    let mut specs = Vec::with_capacity(tools.len());
    let mut names: Vec<String> = Vec::with_capacity(tools.len());
    for tool in tools {
        let bad = |m: String| ApiError::unprocessable(m).with_param("tools");
        let kind = tool.get("type").and_then(Value::as_str).unwrap_or("");
        if kind != "function" {
            return Err(bad(format!(
                "tool type `{kind}` is not supported (only `function`)"
            )));
        }
        let tool: ToolSpec =
            serde_json::from_value(tool).map_err(|e| bad(format!("invalid tool: {e}")))?;
        if tool.kind != "function" {
            return Err(bad(format!(
                "tool type `{}` is not supported (only `function`)",
                tool.kind
            )));
        }
        let Some(f) = tool.function else {
            return Err(bad("a function tool needs `function`".into()));
        };
        let valid = !f.name.is_empty()
            && f.name.len() <= 64
            && f.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(bad(format!(
                "function name `{}` must be 1 to 64 letters, digits, `_` or `-`",
                f.name
            )));
        }
        if names.contains(&f.name) {
            return Err(bad(format!("function `{}` is listed twice", f.name)));
        }
        let parameters = f
            .parameters
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        if !parameters.is_object() {
            return Err(bad(format!(
                "the parameters of `{}` must be a JSON Schema object",
                f.name
            )));
        }
        let mut function = json!({"name": f.name});
        if let Some(d) = f.description {
            function["description"] = json!(d);
        }
        function["parameters"] = parameters;
        if let Some(s) = f.strict {
            strict |= s;
            function["strict"] = json!(s);
        }
        specs.push(json!({"type": "function", "function": function}));
        names.push(f.name);
    }
    if let Choice::Named(name) = &choice
        && !names.contains(name)
    {
        return Err(bad_choice(format!(
            "`tool_choice` names `{name}`, which is not among `tools`"
        )));
    }
    Ok(Some(Tools {
        specs,
        names,
        choice,
        parallel: parallel.unwrap_or(true),
        strict,
    }))
}

impl Tools {
    /// The grammar that forces a call (`required`, a named function): one call, or
    /// several when `parallel_tool_calls` allows, each `{"name": …, "arguments": …}`
    /// with the arguments valid against that function's parameter schema. For `auto`
    /// with a strict function: text that does not begin like a call, or such calls.
    /// `None` for `auto` otherwise (the model may answer in text; calls are read back
    /// afterwards).
    pub fn grammar(&self) -> Option<GrammarSpec> {
        let names: Vec<&String> = match &self.choice {
            Choice::Auto if self.strict => {
                let names: Vec<&String> = self.names.iter().collect();
                // Text may not start with `<`, `{`, `[` or a backtick: those would
                // begin a call outside the grammar (`<tool_call>`, bare or fenced JSON).
                return Some(GrammarSpec::Lark(format!(
                    "start: calls | text\ntext: /[^<{{\\[`\\s][\\s\\S]*/ | \"\"\n{}",
                    self.calls_grammar(&names, "calls")
                )));
            }
            Choice::Auto => return None,
            Choice::Required => self.names.iter().collect(),
            Choice::Named(n) => vec![n],
        };
        Some(GrammarSpec::Lark(self.calls_grammar(&names, "start")))
    }

    /// Lark rules named `rule` for one or more calls of the functions `names`.
    fn calls_grammar(&self, names: &[&String], rule: &str) -> String {
        let alternatives: Vec<String> = names
            .iter()
            .map(|name| {
                let parameters = self
                    .specs
                    .iter()
                    .find(|s| s["function"]["name"] == name.as_str())
                    .map(|s| s["function"]["parameters"].clone())
                    .unwrap_or_else(|| json!({"type": "object"}));
                // Written by hand so that `name` comes before `arguments`.
                format!(
                    r#"{{"type": "object", "properties": {{"name": {{"const": {}}}, "arguments": {}}}, "required": ["name", "arguments"], "additionalProperties": false}}"#,
                    Value::from(name.as_str()),
                    parameters
                )
            })
            .collect();
        let body = format!(
            r#"{{"anyOf": [{}], "x-guidance": {}}}"#,
            alternatives.join(", "),
            engine::json_layout()
        );
        let repeat = if self.parallel {
            format!(r#" ("\n" {rule}_call)*"#)
        } else {
            String::new()
        };
        format!(
            "{rule}: {rule}_call{repeat}\n{rule}_call: \"{OPEN}\\n\" {rule}_body \"\\n{CLOSE}\"\n{rule}_body: %json {body}\n"
        )
    }

    /// The grammar for `auto` with a JSON `response_format`: either calls, or the
    /// JSON answer.
    pub fn calls_or(&self, answer: &Value) -> GrammarSpec {
        let names: Vec<&String> = self.names.iter().collect();
        let mut answer = answer.clone();
        if let Some(map) = answer.as_object_mut() {
            map.entry("x-guidance").or_insert_with(engine::json_layout);
        }
        GrammarSpec::Lark(format!(
            "start: calls | answer\nanswer: %json {answer}\n{}",
            self.calls_grammar(&names, "calls")
        ))
    }
}

/// The JSON Schema a `response_format` asks for (`None` for text).
pub fn answer_schema(format: Option<Value>) -> Result<Option<Answer>, ApiError> {
    let format = format
        .map(serde_json::from_value::<ResponseFormat>)
        .transpose()
        .map_err(|e| {
            ApiError::unprocessable(format!(
                "`response_format` is `{{\"type\": \"text\"}}`, `{{\"type\": \"json_object\"}}` or `{{\"type\": \"json_schema\", \"json_schema\": {{\"name\": …, \"schema\": …}}}}`: {e}"
            ))
            .with_param("response_format")
        })?;
    match format {
        None | Some(ResponseFormat::Text) => Ok(None),
        Some(ResponseFormat::JsonObject) => Ok(Some(Answer {
            schema: json!({"type": "object"}),
            instruction: None,
        })),
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            if json_schema.name.is_empty() {
                return Err(
                    ApiError::unprocessable("`json_schema.name` must not be empty")
                        .with_param("response_format"),
                );
            }
            let schema = match json_schema.schema {
                Some(s) if s.is_object() || s.is_boolean() => s,
                Some(_) => {
                    return Err(ApiError::unprocessable(
                        "`json_schema.schema` must be a JSON Schema object",
                    )
                    .with_param("response_format"));
                }
                None => json!({}),
            };
            let instruction = json_schema
                .description
                .filter(|d| !d.trim().is_empty())
                .map(|d| format!("Answer with JSON ({}): {}", json_schema.name, d.trim()));
            Ok(Some(Answer {
                schema,
                instruction,
            }))
        }
    }
}

/// One tool call read from the model's output.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedCall {
    /// The function's name.
    pub name: String,
    /// Its arguments, as OpenAI sends them: a JSON object in a string.
    pub arguments: String,
}

/// A piece of the answer: text for the user or a tool call.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Text.
    Content(String),
    /// A complete tool call.
    Call(ParsedCall),
}

/// Reads tool calls out of text as it streams: text outside `<tool_call>` blocks
/// goes on at once (save a tail that may be the start of a block); a block becomes
/// a call when it closes. A block that is not a call of a known function stays text.
///
/// Qwen2.5-Coder often writes a call without the markers: the whole answer one
/// `{"name": …, "arguments": …}` object (or a list of them), bare or in a ```` ```json ````
/// fence. An answer that starts like that is held back to its end and read as calls
/// when it is one (llama.cpp's Hermes parser accepts the same forms).
#[derive(Debug)]
pub struct CallReader {
    names: Vec<String>,
    pending: String,
    inside: bool,
    calls: usize,
    /// Whether any text has gone out.
    said: bool,
    /// One call only (`parallel_tool_calls: false`): later calls are dropped.
    single: bool,
}

impl CallReader {
    /// A reader for calls of the functions of `tools`.
    pub fn new(tools: &Tools) -> Self {
        Self {
            names: tools.names.clone(),
            pending: String::new(),
            inside: false,
            calls: 0,
            said: false,
            single: !tools.parallel,
        }
    }

    /// How many calls were read so far.
    pub fn calls(&self) -> usize {
        self.calls
    }

    /// Reads `text`; returns the pieces it completes.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        self.pending.push_str(text);
        let mut out = Vec::new();
        if self.may_be_bare() {
            return out;
        }
        loop {
            if self.inside {
                let Some(end) = self.pending.find(CLOSE) else {
                    break;
                };
                let block = self.pending[..end].to_string();
                self.pending.drain(..end + CLOSE.len());
                self.inside = false;
                match self.call(&block) {
                    Some(_) if self.single && self.calls > 0 => {}
                    Some(call) => {
                        self.calls += 1;
                        out.push(Piece::Call(call));
                    }
                    None => self.text(format!("{OPEN}{block}{CLOSE}"), &mut out),
                }
            } else if let Some(start) = self.pending.find(OPEN) {
                let before = self.pending[..start].to_string();
                self.pending.drain(..start + OPEN.len());
                self.text(before, &mut out);
                self.inside = true;
            } else {
                let keep = partial_tail(&self.pending, OPEN);
                let ready = self.pending.len() - keep;
                let text: String = self.pending.drain(..ready).collect();
                self.text(text, &mut out);
                break;
            }
        }
        out
    }

    /// The end of the output: what is still held back, as text.
    pub fn finish(&mut self) -> Vec<Piece> {
        let mut out = Vec::new();
        if self.may_be_bare()
            && let Some(mut calls) = self.bare_calls(&self.pending)
        {
            self.pending.clear();
            if self.single {
                calls.truncate(1);
            }
            self.calls += calls.len();
            out.extend(calls.into_iter().map(Piece::Call));
            return out;
        }
        let rest = std::mem::take(&mut self.pending);
        let rest = if self.inside {
            format!("{OPEN}{rest}")
        } else {
            rest
        };
        self.inside = false;
        self.text(rest, &mut out);
        out
    }

    /// Adds `text` to `out`, except blank text around calls.
    fn text(&mut self, text: String, out: &mut Vec<Piece>) {
        let blank = text.trim().is_empty();
        if text.is_empty() || (blank && self.calls > 0) {
            return;
        }
        self.said = true;
        out.push(Piece::Content(text));
    }

    /// Whether the answer so far may still be a bare call (nothing said, no block, and
    /// it starts with `{`, `[` or a JSON fence).
    fn may_be_bare(&self) -> bool {
        if self.said || self.calls > 0 || self.inside || self.pending.contains(OPEN) {
            return false;
        }
        let t = self.pending.trim_start();
        let t = match t.strip_prefix("```") {
            Some(rest) if "json".starts_with(rest) => return true,
            Some(rest) => rest.strip_prefix("json").unwrap_or(rest).trim_start(),
            None if "```".starts_with(t) => return true,
            None => t,
        };
        t.is_empty() || t.starts_with('{') || t.starts_with('[')
    }

    /// The calls a whole answer is, if it is one call or a list of calls (bare or
    /// fenced) of known functions.
    fn bare_calls(&self, text: &str) -> Option<Vec<ParsedCall>> {
        let t = text.trim();
        let t = match t.strip_prefix("```") {
            Some(rest) => rest
                .strip_prefix("json")
                .unwrap_or(rest)
                .trim()
                .strip_suffix("```")?
                .trim(),
            None => t,
        };
        let v: Value = serde_json::from_str(t).ok()?;
        let items = match v {
            Value::Array(items) if !items.is_empty() => items,
            object @ Value::Object(_) => vec![object],
            _ => return None,
        };
        items
            .iter()
            .map(|item| self.call(&item.to_string()))
            .collect()
    }

    /// The call a block holds, if it names a known function with object arguments.
    fn call(&self, block: &str) -> Option<ParsedCall> {
        let v: Value = serde_json::from_str(block.trim()).ok()?;
        let name = v.get("name")?.as_str()?;
        if !self.names.iter().any(|n| n == name) {
            return None;
        }
        let arguments = match v.get("arguments") {
            None => json!({}),
            Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok()?,
            Some(a) => a.clone(),
        };
        arguments.is_object().then(|| ParsedCall {
            name: name.to_string(),
            arguments: arguments.to_string(),
        })
    }
}

/// The length of the longest tail of `text` that begins `marker` (held back: the rest
/// of the marker may follow).
fn partial_tail(text: &str, marker: &str) -> usize {
    (1..marker.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && marker.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_formats_give_a_schema_and_the_description_for_the_model() {
        assert_eq!(answer_schema(None).expect("none"), None);
        assert_eq!(
            answer_schema(Some(json!({"type": "text"}))).expect("text"),
            None
        );
        let object = answer_schema(Some(json!({"type": "json_object"})))
            .expect("object")
            .expect("a schema");
        assert_eq!(object.schema, json!({"type": "object"}));
        let described = answer_schema(Some(json!({"type": "json_schema", "json_schema": {
            "name": "person", "description": " Who made it. ", "schema": {"type": "object"}, "strict": false}})))
        .expect("schema")
        .expect("a schema");
        assert_eq!(
            described.instruction.as_deref(),
            Some("Answer with JSON (person): Who made it.")
        );
        for bad in [
            json!({"type": "json_schema", "json_schema": {"name": "", "schema": {}}}),
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}),
            json!({"type": "json_schema", "json_schema": {"name": "x", "format": "y"}}),
            json!({"type": "grammar"}),
        ] {
            let e = answer_schema(Some(bad.clone())).expect_err("refused");
            assert_eq!(e.param.as_deref(), Some("response_format"), "{bad}");
        }
    }

    fn tools(choice: Option<Value>) -> Tools {
        let specs: Vec<Value> = serde_json::from_value(json!([
            {"type": "function", "function": {"name": "read_file", "description": "Reads a file",
             "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}},
            {"type": "function", "function": {"name": "now"}}
        ]))
        .expect("tools");
        plan(Some(specs), choice.as_ref(), None)
            .expect("plan")
            .expect("tools")
    }

    #[test]
    fn calls_are_read_whole_and_in_pieces() {
        let t = tools(None);
        let text = "Let me look.\n<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"a.rs\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>";
        let want = vec![
            Piece::Content("Let me look.\n".into()),
            Piece::Call(ParsedCall {
                name: "read_file".into(),
                arguments: r#"{"path":"a.rs"}"#.into(),
            }),
            Piece::Call(ParsedCall {
                name: "now".into(),
                arguments: "{}".into(),
            }),
        ];
        let mut whole = CallReader::new(&t);
        let mut got = whole.push(text);
        got.extend(whole.finish());
        assert_eq!(got, want);
        // Three characters at a time: the same pieces (text may come split).
        let mut reader = CallReader::new(&t);
        let mut pieces = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        for c in chars.chunks(3) {
            pieces.extend(reader.push(&c.iter().collect::<String>()));
        }
        pieces.extend(reader.finish());
        let text_of = |p: &[Piece]| {
            p.iter()
                .filter_map(|p| match p {
                    Piece::Content(t) => Some(t.clone()),
                    _ => None,
                })
                .collect::<String>()
        };
        assert_eq!(text_of(&pieces), "Let me look.\n");
        let calls: Vec<_> = pieces
            .iter()
            .filter(|p| matches!(p, Piece::Call(_)))
            .collect();
        assert_eq!(calls, want.iter().skip(1).collect::<Vec<_>>());
        assert_eq!(reader.calls(), 2);
    }

    #[test]
    fn bare_and_fenced_calls_are_calls() {
        let t = tools(None);
        for text in [
            "{\"name\": \"now\", \"arguments\": {}}",
            "```json\n{\n  \"name\": \"now\",\n  \"arguments\": {}\n}\n```",
            "[{\"name\": \"now\", \"arguments\": {}}]",
        ] {
            let mut r = CallReader::new(&t);
            let mut got = Vec::new();
            for c in text.chars() {
                got.extend(r.push(&c.to_string()));
            }
            got.extend(r.finish());
            let want = vec![Piece::Call(ParsedCall {
                name: "now".into(),
                arguments: "{}".into(),
            })];
            assert_eq!(got, want, "{text}");
        }
        // JSON that is not a call, and code in another fence, stay text.
        for text in [
            "{\"a\": 1}",
            "```python\nprint(1)\n```",
            "```json\n{\"name\": \"rm\"}\n```",
        ] {
            let mut r = CallReader::new(&t);
            let mut got = r.push(text);
            got.extend(r.finish());
            assert_eq!(got, vec![Piece::Content(text.into())], "{text}");
        }
    }

    #[test]
    fn one_call_only_when_parallel_calls_are_off() {
        let specs: Vec<Value> =
            serde_json::from_value(json!([{"type": "function", "function": {"name": "now"}}]))
                .expect("tools");
        let t = plan(Some(specs), None, Some(false))
            .expect("plan")
            .expect("tools");
        let call = "<tool_call>\n{\"name\": \"now\", \"arguments\": {}}\n</tool_call>\n";
        let mut r = CallReader::new(&t);
        let mut got = r.push(&call.repeat(3));
        got.extend(r.finish());
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(r.calls(), 1);
        let mut r = CallReader::new(&t);
        let mut got = r.push("[{\"name\": \"now\"}, {\"name\": \"now\"}]");
        got.extend(r.finish());
        assert_eq!(got.len(), 1, "{got:?}");
        let Some(GrammarSpec::Lark(g)) = plan(
            Some(
                serde_json::from_value(json!([{"type": "function", "function": {"name": "now"}}]))
                    .expect("tools"),
            ),
            Some(&json!("required")),
            Some(false),
        )
        .expect("plan")
        .expect("tools")
        .grammar() else {
            panic!("no grammar")
        };
        assert!(!g.contains(")*"), "{g}");
    }

    #[test]
    fn strict_functions_constrain_auto_calls() {
        let strict = json!([{"type": "function", "function": {"name": "now", "strict": true,
            "parameters": {"type": "object", "properties": {}, "additionalProperties": false}}}]);
        let t = plan(
            Some(serde_json::from_value(strict).expect("tools")),
            None,
            None,
        )
        .expect("plan")
        .expect("tools");
        let Some(GrammarSpec::Lark(g)) = t.grammar() else {
            panic!("strict auto calls need a grammar");
        };
        assert!(g.starts_with("start: calls | text\n"), "{g}");
    }

    #[test]
    fn what_is_not_a_call_stays_text() {
        let t = tools(None);
        for text in [
            "<tool_call>\n{\"name\": \"rm_rf\", \"arguments\": {}}\n</tool_call>",
            "<tool_call>\nnot json\n</tool_call>",
            "<tool_call>\n{\"name\": \"now\", \"arguments\": [1]}\n</tool_call>",
            "an unfinished <tool_call>\n{\"name\": \"now\"",
            "a < b and <tool_ca",
        ] {
            let mut r = CallReader::new(&t);
            let mut got = r.push(text);
            got.extend(r.finish());
            let joined: String = got
                .iter()
                .map(|p| match p {
                    Piece::Content(t) => t.clone(),
                    Piece::Call(c) => panic!("{text}: read as a call {c:?}"),
                })
                .collect();
            assert_eq!(joined, text);
        }
    }

    #[test]
    fn choices_are_checked() {
        assert_eq!(tools(None).choice, Choice::Auto);
        assert_eq!(tools(Some(json!("required"))).choice, Choice::Required);
        let named = json!({"type": "function", "function": {"name": "now"}});
        assert_eq!(tools(Some(named)).choice, Choice::Named("now".into()));
        assert!(
            plan(None, Some(&json!("none")), None)
                .expect("ok")
                .is_none()
        );
        let refused = [
            (Some(json!([{"type": "web_search"}])), None, "tools"),
            (
                Some(json!([{"type": "function", "function": {"name": "f", "colour": 1}}])),
                None,
                "tools",
            ),
            (
                Some(json!([{"type": "function", "function": {"name": "a b"}}])),
                None,
                "tools",
            ),
            (None, Some(json!("required")), "tool_choice"),
            (
                Some(json!([{"type": "function", "function": {"name": "f"}}])),
                Some(json!({"type": "function", "function": {"name": "g"}})),
                "tool_choice",
            ),
            (
                Some(json!([{"type": "function", "function": {"name": "f"}}])),
                Some(json!("sometimes")),
                "tool_choice",
            ),
        ];
        for (tools, choice, param) in refused {
            let specs = tools.map(|t| serde_json::from_value::<Vec<Value>>(t).expect("specs"));
            let err = plan(specs, choice.as_ref(), None).expect_err(param);
            assert_eq!(err.param.as_deref(), Some(param), "{}", err.message);
        }
    }

    #[test]
    fn forced_calls_have_a_grammar_and_auto_has_none() {
        assert!(tools(None).grammar().is_none());
        let Some(GrammarSpec::Lark(g)) = tools(Some(json!("required"))).grammar() else {
            panic!("no grammar");
        };
        assert!(g.contains("read_file") && g.contains("\"now\""), "{g}");
        let named = json!({"type": "function", "function": {"name": "now"}});
        let Some(GrammarSpec::Lark(g)) = tools(Some(named)).grammar() else {
            panic!("no grammar");
        };
        assert!(!g.contains("read_file"), "{g}");
    }
}
