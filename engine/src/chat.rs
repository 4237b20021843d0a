//! Chat prompts in the model's own format. When the model's files carry a chat template
//! (`tokenizer.chat_template` in GGUF, `chat_template` in `tokenizer_config.json`) it is
//! rendered as llama.cpp and transformers render it (Jinja, `add_generation_prompt`);
//! otherwise ChatML (`<|im_start|>role\n…<|im_end|>`) where the vocabulary has its
//! markers, else a plain transcript (`role: text`).
//!
//! Messages never become control tokens: the template is rendered with a random marker
//! in place of each message, and only the template's own text is searched for control
//! tokens; each message is encoded as text, so a message can never open or close a turn.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::Kwargs;
use minijinja::{Environment, ErrorKind, context};

use crate::error::{EngineError, Result};
use crate::model::Model;

/// One message of a chat.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Turn<'a> {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: &'a str,
    /// The message's text.
    pub content: &'a str,
    /// The tools an assistant's turn called (empty otherwise).
    pub tool_calls: &'a [ToolCall],
}

impl<'a> Turn<'a> {
    /// A message of text only.
    pub fn text(role: &'a str, content: &'a str) -> Self {
        Self {
            role,
            content,
            tool_calls: &[],
        }
    }
}

/// A call of a tool (a function) by the assistant, as chat templates render it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The call's id, which the tool's answer names.
    pub id: String,
    /// The function's name.
    pub name: String,
    /// The arguments, a JSON object.
    pub arguments: serde_json::Value,
}

impl Model {
    /// The prompt for `turns` followed by the opening of the assistant's answer, which
    /// starts with `answer_prefix` (empty: the model writes the whole answer).
    pub fn chat_prompt(&self, turns: &[Turn<'_>], answer_prefix: &str) -> Result<Vec<u32>> {
        self.chat_prompt_with_tools(turns, &[], answer_prefix)
    }

    /// Whether the model's chat template can show it tools (it reads `tools`).
    pub fn supports_tools(&self) -> bool {
        self.tokenizer()
            .chat_template()
            .is_some_and(|t| t.contains("tools") && t.contains("tool_call"))
    }

    /// [`Model::chat_prompt`] with `tools` (OpenAI's `{"type": "function", "function":
    /// {…}}` objects) offered to the model by its template. Tools need a template that
    /// reads them ([`Model::supports_tools`]); otherwise they are refused.
    pub fn chat_prompt_with_tools(
        &self,
        turns: &[Turn<'_>],
        tools: &[serde_json::Value],
        answer_prefix: &str,
    ) -> Result<Vec<u32>> {
        let calls = turns.iter().any(|t| !t.tool_calls.is_empty());
        if (!tools.is_empty() || calls) && !self.supports_tools() {
            return Err(EngineError::InvalidRequest(
                "this model's chat template has no tool calling".into(),
            ));
        }
        match self.tokenizer().chat_template() {
            Some(template) => self.templated_prompt(template, turns, tools, answer_prefix),
            None => self.builtin_prompt(turns, answer_prefix),
        }
    }

    /// Renders the model's template with a marker per message, then encodes the
    /// template's text (control tokens allowed) and the messages (as text) in order.
    fn templated_prompt(
        &self,
        template: &str,
        turns: &[Turn<'_>],
        tools: &[serde_json::Value],
        answer_prefix: &str,
    ) -> Result<Vec<u32>> {
        let tok = self.tokenizer();
        let marker = Marker::new();
        let messages: Vec<_> = turns
            .iter()
            .enumerate()
            .map(|(i, t)| {
                // Empty text stays empty: templates test `message.content`.
                let content = if t.content.is_empty() {
                    String::new()
                } else {
                    marker.of(i)
                };
                if t.tool_calls.is_empty() {
                    return context! { role => t.role, content => content };
                }
                let calls: Vec<_> = t
                    .tool_calls
                    .iter()
                    .map(|c| {
                        let arguments = minijinja::Value::from_serialize(&c.arguments);
                        context! {
                            id => c.id, type => "function",
                            function => context! { name => c.name, arguments => arguments },
                        }
                    })
                    .collect();
                context! { role => t.role, content => content, tool_calls => calls }
            })
            .collect();
        let tools = (!tools.is_empty()).then(|| minijinja::Value::from_serialize(tools));
        let token_text = |id: Option<u32>| {
            id.map(|id| String::from_utf8_lossy(tok.token_bytes(id)).into_owned())
                .unwrap_or_default()
        };
        let rendered = render(
            tok.clone_controls(),
            template,
            context! {
                messages => messages,
                tools => tools,
                add_generation_prompt => true,
                bos_token => token_text(tok.bos()),
                eos_token => token_text(tok.eos()),
            },
        )?;
        // Text between control tokens (the template's and the messages') is encoded in
        // one run, as the reference does; only the template's text is searched for
        // control tokens.
        let mut ids = Vec::new();
        let mut run = String::new();
        for piece in marker.split(&rendered) {
            match piece {
                Piece::Template(mut text) => {
                    while let Some((at, len, id)) = tok.find_control(text) {
                        run.push_str(&text[..at]);
                        ids.extend(tok.encode(&run)?);
                        run.clear();
                        ids.push(id);
                        text = &text[at + len..];
                    }
                    run.push_str(text);
                }
                Piece::Message(n) => {
                    let turn = turns.get(n).ok_or_else(|| {
                        EngineError::InvalidRequest(
                            "the chat template produced an unknown message".into(),
                        )
                    })?;
                    run.push_str(turn.content);
                }
            }
        }
        run.push_str(answer_prefix);
        ids.extend(tok.encode(&run)?);
        if let Some(bos) = tok.bos().filter(|_| tok.add_bos())
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// ChatML where the vocabulary has its markers, else a transcript.
    fn builtin_prompt(&self, turns: &[Turn<'_>], answer_prefix: &str) -> Result<Vec<u32>> {
        let tok = self.tokenizer();
        let mut ids = Vec::new();
        if let (Some(start), Some(end)) = (tok.token_id("<|im_start|>"), tok.token_id("<|im_end|>"))
        {
            for turn in turns {
                ids.push(start);
                ids.extend(tok.encode(&format!("{}\n{}", turn.role, turn.content))?);
                ids.push(end);
                ids.extend(tok.encode("\n")?);
            }
            ids.push(start);
            ids.extend(tok.encode(&format!("assistant\n{answer_prefix}"))?);
        } else {
            ids.extend(tok.bos().filter(|_| tok.add_bos()));
            let mut text = String::new();
            for turn in turns {
                text.push_str(&format!("{}: {}\n\n", turn.role, turn.content));
            }
            text.push_str("assistant:");
            if !answer_prefix.is_empty() {
                text.push(' ');
                text.push_str(answer_prefix);
            }
            ids.extend(tok.encode(&text)?);
        }
        Ok(ids)
    }
}

/// Renders `template` with `ctx`. A template that refuses the conversation
/// (`raise_exception`, e.g. roles that do not alternate) is the request's fault; a
/// template that cannot be compiled or run is the model's.
fn render(controls: Vec<String>, template: &str, ctx: minijinja::Value) -> Result<String> {
    let mut env = Environment::new();
    env.add_filter("tojson", move |value: minijinja::Value, kwargs: Kwargs| {
        to_json(&value, &kwargs, &controls)
    });
    // As transformers and llama-cpp-python configure Jinja2.
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        },
    );
    env.add_function("strftime_now", |format: String| {
        // Templates ask for today's date (Llama 3.1); only the date formats are used.
        let days = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() / 86_400)
            .unwrap_or(0) as i64;
        let (y, m, d) = civil_from_days(days);
        const MONTHS: [&str; 12] = [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ];
        format
            .replace("%Y", &y.to_string())
            .replace("%m", &format!("{m:02}"))
            .replace("%d", &format!("{d:02}"))
            .replace("%B", MONTHS[(m - 1) as usize])
            .replace("%b", &MONTHS[(m - 1) as usize][..3])
    });
    let compiled = env.template_from_str(template).map_err(|e| {
        EngineError::Tokenizer(format!("the model's chat template does not compile: {e}"))
    })?;
    compiled.render(ctx).map_err(|e| match e.kind() {
        ErrorKind::InvalidOperation => EngineError::InvalidRequest(format!(
            "the model's chat template refuses this chat: {}",
            e.detail().unwrap_or("no reason given")
        )),
        _ => EngineError::Tokenizer(format!("the model's chat template failed: {e}")),
    })
}

/// Jinja's `tojson` as transformers defines it for chat templates (Python's
/// `json.dumps`: `", "` and `": "` separators, non-ASCII kept, `indent=N` honoured),
/// with one safety addition: a control token's text inside a string (`<|im_end|>`)
/// is written with its `<` escaped (`\u003c`, the same JSON value), so that tool
/// definitions and arguments, which the client sends, can never open or close a turn.
fn to_json(
    value: &minijinja::Value,
    kwargs: &Kwargs,
    controls: &[String],
) -> std::result::Result<String, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    // Python's other options (`ensure_ascii`, `sort_keys`, …) are accepted and ignored
    // only where they cannot matter to a template's output.
    let _: Option<minijinja::Value> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(value)
        .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    write_python_json(&json, indent, 0, &mut out);
    for control in controls {
        if out.contains(control.as_str()) {
            let escaped = format!("\\u003c{}", &control[1..]);
            out = out.replace(control.as_str(), &escaped);
        }
    }
    Ok(out)
}

/// Writes `v` as Python's `json.dumps(v, ensure_ascii=False, indent=indent)` does.
fn write_python_json(v: &serde_json::Value, indent: Option<usize>, depth: usize, out: &mut String) {
    use serde_json::Value as J;
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v {
        J::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_python_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        J::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                out.push_str(&J::String(k.clone()).to_string());
                out.push_str(": ");
                write_python_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Stand-ins for messages while the template renders: private-use characters around a
/// random number no message can guess.
struct Marker {
    open: String,
}

/// A piece of the rendered template.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    /// Text the template wrote.
    Template(&'a str),
    /// The message with this index.
    Message(usize),
}

impl Marker {
    const CLOSE: char = '\u{E001}';

    fn new() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut bytes = [0u8; 8];
        let random = getrandom::fill(&mut bytes)
            .map(|()| u64::from_le_bytes(bytes))
            .unwrap_or(0);
        let salt = random ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(32);
        Self {
            open: format!("\u{E000}{salt:016x}:"),
        }
    }

    /// The stand-in for message `i`.
    fn of(&self, i: usize) -> String {
        format!("{}{i}{}", self.open, Self::CLOSE)
    }

    /// The rendered text cut into the template's text and messages.
    fn split<'a>(&self, rendered: &'a str) -> Vec<Piece<'a>> {
        let mut pieces = Vec::new();
        let mut rest = rendered;
        while let Some(at) = rest.find(&self.open) {
            let after = &rest[at + self.open.len()..];
            let Some(end) = after.find(Self::CLOSE) else {
                break;
            };
            let Ok(n) = after[..end].parse::<usize>() else {
                break;
            };
            if at > 0 {
                pieces.push(Piece::Template(&rest[..at]));
            }
            pieces.push(Piece::Message(n));
            rest = &after[end + Self::CLOSE.len_utf8()..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Template(rest));
        }
        pieces
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_cut_the_rendered_text_into_template_text_and_messages() {
        let m = Marker::new();
        let text = format!("<s>{}|{}</s>", m.of(0), m.of(12));
        assert_eq!(
            m.split(&text),
            vec![
                Piece::Template("<s>"),
                Piece::Message(0),
                Piece::Template("|"),
                Piece::Message(12),
                Piece::Template("</s>"),
            ]
        );
        // Another chat's markers are text here.
        let other = Marker::new().of(0);
        assert_eq!(m.split(&other), vec![Piece::Template(other.as_str())]);
    }

    #[test]
    fn dates_from_day_counts() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_793), (2026, 12, 6));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn tojson_writes_as_python_and_never_spells_a_control_token() {
        let tools = serde_json::json!([{"name": "f", "description": "ends <|im_end|> here ü",
                                        "parameters": {"b": [1, 2], "a": {}}}]);
        let controls = vec!["<|im_end|>".to_string()];
        let ctx = context! { tools => minijinja::Value::from_serialize(&tools) };
        let flat = render(controls.clone(), "{{ tools | tojson }}", ctx.clone()).expect("render");
        assert_eq!(
            flat,
            r#"[{"name": "f", "description": "ends \u003c|im_end|> here ü", "parameters": {"b": [1, 2], "a": {}}}]"#
        );
        let back: serde_json::Value = serde_json::from_str(&flat).expect("JSON");
        assert_eq!(back, tools);
        let indented = render(
            controls,
            "{{ tools[0].parameters | tojson(indent=2) }}",
            ctx,
        )
        .expect("render");
        assert_eq!(
            indented,
            "{\n  \"b\": [\n    1,\n    2\n  ],\n  \"a\": {}\n}"
        );
    }

    #[test]
    fn a_template_that_raises_is_the_requests_fault() {
        let err = render(
            Vec::new(),
            "{{ raise_exception('roles must alternate') }}",
            context! {},
        )
        .expect_err("raises");
        assert!(
            matches!(err, EngineError::InvalidRequest(ref m) if m.contains("roles must alternate")),
            "{err}"
        );
        let err = render(Vec::new(), "{% if %}", context! {}).expect_err("does not compile");
        assert!(matches!(err, EngineError::Tokenizer(_)), "{err}");
    }
}
