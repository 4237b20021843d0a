//! A tantivy tokenizer for source code.
//!
//! Identifier-like runs (letters, digits and `_`, not starting with a digit)
//! become tokens, lowercased. An identifier made of several words
//! (`parseHttpRequest`, `parse_http_request`, `HTTPServer`) is emitted whole
//! and then as its words (`parse`, `http`, `request`), so a query for either
//! the exact identifier or one of its parts matches. Numbers, punctuation and
//! runs longer than [`MAX_TOKEN_BYTES`] are dropped.

use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

/// The name under which the tokenizer is registered in the tantivy index.
pub const CODE_TOKENIZER: &str = "code";

/// Identifier runs longer than this many bytes are not indexed.
pub const MAX_TOKEN_BYTES: usize = 64;

/// The code-aware tokenizer (stateless; cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct CodeTokenizer {
    token: Token,
}

impl Tokenizer for CodeTokenizer {
    type TokenStream<'a> = CodeTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> CodeTokenStream<'a> {
        self.token.reset();
        CodeTokenStream {
            text,
            pos: 0,
            parts: Vec::new(),
            next_part: 0,
            position: 0,
            token: &mut self.token,
        }
    }
}

/// The token stream produced by [`CodeTokenizer`].
#[derive(Debug)]
pub struct CodeTokenStream<'a> {
    text: &'a str,
    pos: usize,
    parts: Vec<(usize, usize)>,
    next_part: usize,
    position: usize,
    token: &'a mut Token,
}

impl CodeTokenStream<'_> {
    fn emit(&mut self, start: usize, end: usize) {
        let piece = &self.text[start..end];
        self.token.text.clear();
        if piece.is_ascii() {
            self.token.text.push_str(piece);
            self.token.text.make_ascii_lowercase();
        } else {
            for c in piece.chars() {
                self.token.text.extend(c.to_lowercase());
            }
        }
        self.token.offset_from = start;
        self.token.offset_to = end;
        self.token.position = self.position;
        self.token.position_length = 1;
        self.position += 1;
    }
}

impl TokenStream for CodeTokenStream<'_> {
    fn advance(&mut self) -> bool {
        if self.next_part < self.parts.len() {
            let (start, end) = self.parts[self.next_part];
            self.next_part += 1;
            self.emit(start, end);
            return true;
        }
        while let Some((start, end)) = next_identifier(self.text, &mut self.pos) {
            if end - start > MAX_TOKEN_BYTES {
                continue;
            }
            self.parts.clear();
            self.next_part = 0;
            split_words(&self.text[start..end], start, &mut self.parts);
            if self.parts.len() < 2 {
                self.parts.clear();
            }
            self.emit(start, end);
            return true;
        }
        false
    }

    fn token(&self) -> &Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Finds the next identifier run at or after `*pos`, advancing `*pos` past
/// it. Runs that start with a digit (numbers) are skipped.
pub(crate) fn next_identifier(text: &str, pos: &mut usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    while *pos < bytes.len() {
        let b = bytes[*pos];
        if b.is_ascii() {
            if b == b'_' || b.is_ascii_alphanumeric() {
                let start = *pos;
                let end = run_end(text, start);
                *pos = end;
                if !b.is_ascii_digit() {
                    return Some((start, end));
                }
            } else {
                *pos += 1;
            }
        } else {
            let c = text[*pos..].chars().next()?;
            if is_ident_char(c) {
                let start = *pos;
                let end = run_end(text, start);
                *pos = end;
                if !c.is_numeric() {
                    return Some((start, end));
                }
            } else {
                *pos += c.len_utf8();
            }
        }
    }
    None
}

fn run_end(text: &str, start: usize) -> usize {
    let bytes = text.as_bytes();
    let mut i = start;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii() {
            if b == b'_' || b.is_ascii_alphanumeric() {
                i += 1;
            } else {
                break;
            }
        } else {
            match text[i..].chars().next() {
                Some(c) if is_ident_char(c) => i += c.len_utf8(),
                _ => break,
            }
        }
    }
    i
}

/// Splits an identifier into its words (byte ranges offset by `base`):
/// on `_`, on lower-to-upper case changes and before the last capital of an
/// acronym (`HTTPServer` -> `HTTP`, `Server`). Words of one character are
/// dropped.
pub(crate) fn split_words(ident: &str, base: usize, out: &mut Vec<(usize, usize)>) {
    let chars: Vec<(usize, char)> = ident.char_indices().collect();
    let mut word_start: Option<usize> = None;
    let push = |out: &mut Vec<(usize, usize)>, s: usize, e: usize| {
        let len = ident[s..e].chars().count();
        if len >= 2 {
            out.push((base + s, base + e));
        }
    };
    for (i, &(byte, c)) in chars.iter().enumerate() {
        if c == '_' {
            if let Some(s) = word_start.take() {
                push(out, s, byte);
            }
            continue;
        }
        let Some(s) = word_start else {
            word_start = Some(byte);
            continue;
        };
        let prev = chars[i - 1].1;
        let next = chars.get(i + 1).map(|&(_, n)| n);
        let boundary = c.is_uppercase()
            && (prev.is_lowercase()
                || prev.is_numeric()
                || (prev.is_uppercase() && next.is_some_and(|n| n.is_lowercase())));
        if boundary {
            push(out, s, byte);
            word_start = Some(byte);
        }
    }
    if let Some(s) = word_start {
        push(out, s, ident.len());
    }
}

/// Runs `f` on every token the code tokenizer produces for `text`.
pub fn for_each_token(text: &str, mut f: impl FnMut(&str)) {
    let mut tokenizer = CodeTokenizer::default();
    let mut stream = tokenizer.token_stream(text);
    while stream.advance() {
        f(&stream.token().text);
    }
}

/// The identifier runs of `text`, in order, as written (not lowercased).
pub fn identifiers(text: &str) -> impl Iterator<Item = &str> {
    let mut pos = 0;
    std::iter::from_fn(move || next_identifier(text, &mut pos).map(|(s, e)| &text[s..e]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for_each_token(text, |t| out.push(t.to_string()));
        out
    }

    #[test]
    fn splits_camel_and_snake_and_keeps_whole() {
        assert_eq!(
            tokens("parseHttpRequest(x)"),
            vec!["parsehttprequest", "parse", "http", "request", "x"]
        );
        assert_eq!(
            tokens("read_to_string"),
            vec!["read_to_string", "read", "to", "string"]
        );
        assert_eq!(tokens("HTTPServer"), vec!["httpserver", "http", "server"]);
        assert_eq!(tokens("foo"), vec!["foo"]);
        assert_eq!(tokens("__init__"), vec!["__init__"]);
    }

    #[test]
    fn drops_numbers_and_punctuation() {
        assert_eq!(tokens("x = 42 + 0x1F; y2"), vec!["x", "y2"]);
        assert_eq!(tokens("a.b->c::d"), vec!["a", "b", "c", "d"]);
    }

    #[test]
    fn handles_unicode() {
        assert_eq!(
            tokens("größeBerechnen éte"),
            vec!["größeberechnen", "größe", "berechnen", "éte"]
        );
        assert_eq!(tokens("日本語 x"), vec!["日本語", "x"]);
    }

    #[test]
    fn drops_overlong_runs() {
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(tokens(&format!("{long} ok")), vec!["ok"]);
    }

    #[test]
    fn identifiers_keep_case() {
        let ids: Vec<&str> = identifiers("let fooBar = baz_qux(1);").collect();
        assert_eq!(ids, vec!["let", "fooBar", "baz_qux"]);
    }
}
