//! Text ↔ token ids for a model, built from GGUF metadata or a `tokenizer.json`.
//!
//! Text given by users is never parsed for special tokens: a file that contains
//! `<|endoftext|>` is tokenized as those characters, so prompts cannot smuggle
//! control tokens in. Templates insert special tokens by id instead.

use std::collections::HashMap;
use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::error::{EngineError, Result};

/// GPT-2 style split used by llama-3 and Qwen2 tokenizers; `DIGITS` stands for the digit-run length.
const LLAMA3_STYLE_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}DIGITS| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// What the tokenizer knows about a token beyond its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Ordinary text.
    Normal,
    /// A control token (end of text, chat markers, FIM markers): ends a completion when generated.
    Control,
}

/// The raw tokenizer description found in a GGUF file.
#[derive(Debug, Clone)]
pub struct GgufTokenizerSpec {
    /// `tokenizer.ggml.model`, e.g. `gpt2`.
    pub model: String,
    /// `tokenizer.ggml.pre`, e.g. `smollm`.
    pub pre: Option<String>,
    /// Token strings, by id.
    pub tokens: Vec<String>,
    /// BPE merges as `"a b"` strings.
    pub merges: Vec<String>,
    /// llama.cpp token types (1 normal, 3 control, 4 user-defined, 6 byte).
    pub token_types: Vec<i32>,
    /// Beginning-of-sequence id.
    pub bos: Option<u32>,
    /// End-of-sequence id.
    pub eos: Option<u32>,
    /// Whether prompts start with BOS.
    pub add_bos: bool,
    /// `tokenizer.chat_template`: the model's chat format (Jinja), when the file has one.
    pub chat_template: Option<String>,
}

/// A model's tokenizer: encoding without special-token parsing, byte-exact decoding.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    token_bytes: Vec<Vec<u8>>,
    kinds: Vec<TokenKind>,
    vocab: HashMap<String, u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    chat_template: Option<String>,
    /// Control tokens' texts (`<|im_start|>`, …), longest first: what a chat template's
    /// own text may contain.
    controls: Vec<(String, u32)>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.token_bytes.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish()
    }
}

fn tok_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Tokenizer(e.to_string())
}

/// GPT-2's reversible byte → printable-character table, inverted.
fn byte_level_inverse() -> HashMap<char, u8> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    printable
        .into_iter()
        .zip(chars)
        .filter_map(|(b, c)| Some((char::from_u32(c)?, b as u8)))
        .collect()
}

/// Bytes of a byte-level token string; characters outside the table are kept as UTF-8.
fn byte_level_bytes(token: &str, inverse: &HashMap<char, u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(token.len());
    for c in token.chars() {
        match inverse.get(&c) {
            Some(b) => out.push(*b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

/// Bytes of a SentencePiece token (`▁` is a space, `<0xNN>` a raw byte).
fn sentencepiece_bytes(token: &str) -> Vec<u8> {
    if token.len() == 6
        && token.starts_with("<0x")
        && token.ends_with('>')
        && let Ok(b) = u8::from_str_radix(&token[3..5], 16)
    {
        return vec![b];
    }
    token.replace('\u{2581}', " ").into_bytes()
}

fn pre_tokenizer_for(pre: &str) -> Result<PreTokenizerWrapper> {
    let byte_level_regex = ByteLevel::new(false, false, true);
    let byte_level_plain = ByteLevel::new(false, false, false);
    let split = |digits: &str| -> Result<PreTokenizerWrapper> {
        let pattern = LLAMA3_STYLE_SPLIT.replace("DIGITS", digits);
        Ok(Split::new(
            SplitPattern::Regex(pattern),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(tok_err)?
        .into())
    };
    Ok(match pre {
        "smollm" | "starcoder" | "refact" | "codeshell" | "command-r" => {
            Sequence::new(vec![Digits::new(true).into(), byte_level_regex.into()]).into()
        }
        "default" | "gpt2" | "gpt-2" | "phi-2" => byte_level_regex.into(),
        "qwen2" | "deepseek-r1-qwen" => {
            Sequence::new(vec![split("")?, byte_level_plain.into()]).into()
        }
        "llama3" | "llama-bpe" | "smaug-bpe" => {
            Sequence::new(vec![split("{1,3}")?, byte_level_plain.into()]).into()
        }
        other => {
            return Err(EngineError::Tokenizer(format!(
                "unsupported pre-tokenizer `{other}` (supported: smollm, starcoder, gpt2, qwen2, llama3)"
            )));
        }
    })
}

impl Tokenizer {
    /// Builds the tokenizer described by GGUF metadata.
    pub fn from_gguf(spec: &GgufTokenizerSpec) -> Result<Self> {
        if spec.model != "gpt2" {
            return Err(EngineError::Tokenizer(format!(
                "unsupported GGUF tokenizer model `{}` (supported: gpt2 byte-level BPE)",
                spec.model
            )));
        }
        let vocab: Vocab = spec
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merges = spec
            .merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| EngineError::Tokenizer(format!("malformed merge `{m}`")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(tok_err)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tokenizer_for(
            spec.pre.as_deref().unwrap_or("default"),
        )?));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        // User-defined tokens (`<tool_call>`, `<tool_response>` in Qwen2.5) are matched in
        // text as one token each, as llama.cpp and transformers do; control tokens never.
        let user_defined: Vec<tokenizers::AddedToken> = spec
            .tokens
            .iter()
            .zip(&spec.token_types)
            .filter(|(_, kind)| **kind == 4)
            .map(|(text, _)| tokenizers::AddedToken::from(text.clone(), false))
            .collect();
        inner.add_tokens(user_defined).map_err(tok_err)?;
        let inverse = byte_level_inverse();
        let token_bytes: Vec<Vec<u8>> = spec
            .tokens
            .iter()
            .map(|t| byte_level_bytes(t, &inverse))
            .collect();
        let kinds: Vec<TokenKind> = (0..spec.tokens.len())
            .map(|i| match spec.token_types.get(i) {
                Some(3) => TokenKind::Control,
                _ => TokenKind::Normal,
            })
            .collect();
        let vocab = spec
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let controls = controls(&kinds, &token_bytes);
        Ok(Self {
            inner,
            token_bytes,
            kinds,
            vocab,
            bos: spec.bos,
            eos: spec.eos,
            add_bos: spec.add_bos,
            chat_template: spec.chat_template.clone(),
            controls,
        })
    }

    /// Loads the tokenizer of a GGUF model file (from its metadata; the weights are not
    /// read) or of a Hugging Face `tokenizer.json`: what counts a remote model's tokens.
    pub fn load(path: &Path) -> Result<Self> {
        let gguf = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
        if gguf {
            let file = crate::model::gguf::GgufFile::open(path, &candle_core::Device::Cpu)?;
            Self::from_gguf(&file.tokenizer_spec()?)
        } else {
            Self::from_file(path)
        }
    }

    /// Loads a Hugging Face `tokenizer.json` (with `tokenizer_config.json` beside it when present).
    pub fn from_file(path: &Path) -> Result<Self> {
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| EngineError::Tokenizer(format!("{}: {e}", path.display())))?;
        inner.set_encode_special_tokens(true);
        let vocab = inner.get_vocab(true);
        let size = vocab.values().map(|&i| i as usize + 1).max().unwrap_or(0);
        let raw: serde_json::Value = std::fs::read(path)
            .map_err(|e| EngineError::io(path, e))
            .and_then(|b| serde_json::from_slice(&b).map_err(tok_err))?;
        let decoder_type = raw
            .pointer("/decoder/type")
            .and_then(|v| v.as_str())
            .unwrap_or("ByteLevel");
        let byte_level = decoder_type == "ByteLevel"
            || raw.pointer("/pre_tokenizer/type").and_then(|v| v.as_str()) == Some("ByteLevel");
        let inverse = byte_level_inverse();
        let mut token_bytes = vec![Vec::new(); size];
        let mut kinds = vec![TokenKind::Normal; size];
        for (text, &id) in &vocab {
            token_bytes[id as usize] = if byte_level {
                byte_level_bytes(text, &inverse)
            } else {
                sentencepiece_bytes(text)
            };
        }
        for (id, added) in inner.get_added_tokens_decoder() {
            if let Some(slot) = token_bytes.get_mut(id as usize) {
                *slot = added.content.as_bytes().to_vec();
            }
            if added.special
                && let Some(k) = kinds.get_mut(id as usize)
            {
                *k = TokenKind::Control;
            }
        }
        let config_path = path.with_file_name("tokenizer_config.json");
        let config: serde_json::Value = std::fs::read(&config_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        let token_named = |key: &str| -> Option<u32> {
            let v = config.get(key)?;
            let s = v.as_str().or_else(|| v.get("content")?.as_str())?;
            vocab.get(s).copied()
        };
        let eos = token_named("eos_token").or_else(|| vocab.get("<|endoftext|>").copied());
        let bos = token_named("bos_token");
        let add_bos = config
            .get("add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        // A string, or a list of named templates of which `default` is the chat one.
        let chat_template = match config.get("chat_template") {
            Some(serde_json::Value::String(t)) => Some(t.clone()),
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template")?.as_str())
                .map(str::to_string),
            _ => None,
        };
        let controls = controls(&kinds, &token_bytes);
        Ok(Self {
            inner,
            token_bytes,
            kinds,
            vocab,
            bos,
            eos,
            add_bos,
            chat_template,
            controls,
        })
    }

    /// Number of token ids.
    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// Token ids of `text`, with no special tokens parsed and no BOS added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let enc = self.inner.encode_fast(text, false).map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// How many tokens `text` takes in a prompt. Text the tokenizer cannot encode counts
    /// as one token per byte: an upper bound, so budgets computed with it are never
    /// exceeded.
    pub fn count(&self, text: &str) -> usize {
        self.encode(text).map(|t| t.len()).unwrap_or(text.len())
    }

    /// The raw bytes a token stands for.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Decodes ids to text (invalid UTF-8 sequences become U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&i| self.token_bytes(i).iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The id of a token given by its exact text in the vocabulary.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.get(text).copied()
    }

    /// The control tokens' texts, longest first.
    pub fn clone_controls(&self) -> Vec<String> {
        self.controls.iter().map(|(text, _)| text.clone()).collect()
    }

    /// Whether `id` is a control token.
    pub fn is_control(&self, id: u32) -> bool {
        matches!(self.kinds.get(id as usize), Some(TokenKind::Control))
    }

    /// Beginning-of-sequence token, if the model has one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence token, if the model has one.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Whether prompts should start with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// The model's chat template (Jinja), when its files carry one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The first control token written out in `text` (`<|im_start|>` in a chat
    /// template's text): its byte offset, length and id. Only for text the model's own
    /// files wrote, never for a client's.
    pub fn find_control(&self, text: &str) -> Option<(usize, usize, u32)> {
        text.char_indices().find_map(|(i, _)| {
            self.controls
                .iter()
                .find(|(s, _)| text[i..].starts_with(s.as_str()))
                .map(|(s, id)| (i, s.len(), *id))
        })
    }
}

/// The control tokens' texts with their ids, longest first (so that the longest
/// matches when one is a prefix of another).
fn controls(kinds: &[TokenKind], token_bytes: &[Vec<u8>]) -> Vec<(String, u32)> {
    let mut list: Vec<(String, u32)> = kinds
        .iter()
        .enumerate()
        .filter(|(_, k)| matches!(k, TokenKind::Control))
        .filter_map(|(id, _)| {
            let text = std::str::from_utf8(token_bytes.get(id)?).ok()?;
            (!text.is_empty()).then(|| (text.to_string(), id as u32))
        })
        .collect();
    list.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
    list
}

/// Turns a stream of token ids into text, holding back incomplete UTF-8 sequences.
#[derive(Debug, Default, Clone)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// Adds a token's bytes and returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        match std::str::from_utf8(&self.pending) {
            Ok(s) => {
                let out = s.to_string();
                self.pending.clear();
                out
            }
            Err(e) => {
                let valid = e.valid_up_to();
                let invalid_here = e.error_len().is_some();
                let cut = if invalid_here {
                    // A byte sequence that can never become valid: replace it now.
                    self.pending.len()
                } else {
                    valid
                };
                let out = String::from_utf8_lossy(&self.pending[..cut]).into_owned();
                self.pending.drain(..cut);
                out
            }
        }
    }

    /// Flushes whatever is left (replacing incomplete sequences).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection() {
        let inv = byte_level_inverse();
        assert_eq!(inv.len(), 256);
        let mut seen: Vec<u8> = inv.values().copied().collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 256);
        assert_eq!(inv.get(&'Ġ'), Some(&b' '));
        assert_eq!(inv.get(&'Ċ'), Some(&b'\n'));
    }

    #[test]
    fn stream_decoder_holds_back_partial_utf8() {
        let mut d = StreamDecoder::default();
        let euro = "€".as_bytes();
        assert_eq!(d.push(&euro[..1]), "");
        assert_eq!(d.push(&euro[1..]), "€");
        assert_eq!(d.push(b"ab"), "ab");
        assert_eq!(d.push(&[0xff, b'x']), "\u{fffd}x");
        assert_eq!(d.push(&euro[..2]), "");
        assert_eq!(d.finish(), "\u{fffd}");
    }

    #[test]
    fn sentencepiece_pieces() {
        assert_eq!(sentencepiece_bytes("<0x0A>"), b"\n");
        assert_eq!(sentencepiece_bytes("\u{2581}fn"), b" fn");
    }
}
