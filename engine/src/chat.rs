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

use minijinja::{Environment, ErrorKind, context};

use crate::error::{EngineError, Result};
use crate::model::Model;

/// One message of a chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn<'a> {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: &'a str,
    /// The message's text.
    pub content: &'a str,
}

impl Model {
    /// The prompt for `turns` followed by the opening of the assistant's answer, which
    /// starts with `answer_prefix` (empty: the model writes the whole answer).
    pub fn chat_prompt(&self, turns: &[Turn<'_>], answer_prefix: &str) -> Result<Vec<u32>> {
        match self.tokenizer().chat_template() {
            Some(template) => self.templated_prompt(template, turns, answer_prefix),
            None => self.builtin_prompt(turns, answer_prefix),
        }
    }

    /// Renders the model's template with a marker per message, then encodes the
    /// template's text (control tokens allowed) and the messages (as text) in order.
    fn templated_prompt(
        &self,
        template: &str,
        turns: &[Turn<'_>],
        answer_prefix: &str,
    ) -> Result<Vec<u32>> {
        let tok = self.tokenizer();
        let marker = Marker::new();
        let messages: Vec<_> = turns
            .iter()
            .enumerate()
            .map(|(i, t)| context! { role => t.role, content => marker.of(i) })
            .collect();
        let token_text = |id: Option<u32>| {
            id.map(|id| String::from_utf8_lossy(tok.token_bytes(id)).into_owned())
                .unwrap_or_default()
        };
        let rendered = render(
            template,
            context! {
                messages => messages,
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
fn render(template: &str, ctx: minijinja::Value) -> Result<String> {
    let mut env = Environment::new();
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
    fn a_template_that_raises_is_the_requests_fault() {
        let err = render("{{ raise_exception('roles must alternate') }}", context! {})
            .expect_err("raises");
        assert!(
            matches!(err, EngineError::InvalidRequest(ref m) if m.contains("roles must alternate")),
            "{err}"
        );
        let err = render("{% if %}", context! {}).expect_err("does not compile");
        assert!(matches!(err, EngineError::Tokenizer(_)), "{err}");
    }
}
