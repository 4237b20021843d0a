//! The tantivy schema: one document per indexed file (its state for
//! incremental sync), per chunk and per symbol definition.

use tantivy::Term;
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions,
};

use crate::code_tokenizer::CODE_TOKENIZER;

/// `doc_type` of a file document.
pub const DOC_FILE: &str = "file";
/// `doc_type` of a chunk document.
pub const DOC_CHUNK: &str = "chunk";
/// `doc_type` of a symbol document.
pub const DOC_SYMBOL: &str = "symbol";

/// Handles to the schema's fields.
#[derive(Debug, Clone)]
pub(crate) struct Fields {
    /// `file`, `chunk` or `symbol` (raw, indexed, stored).
    pub doc_type: Field,
    /// Repository name (raw, indexed, stored).
    pub repo: Field,
    /// Repository-relative path (stored; `file_key` is the indexed form).
    pub path: Field,
    /// `repo` + U+001F + `path`: deletes everything of one file (raw, indexed).
    pub file_key: Field,
    /// Language name (raw, indexed, stored).
    pub lang: Field,
    /// Git blob id of the file content, hex (stored).
    pub blob: Field,
    /// File documents: `indexed`, `parse_timeout`, `non_utf8` or a skip reason (stored).
    pub status: Field,
    /// First line, 1-based (stored).
    pub start_line: Field,
    /// Last line, inclusive (stored); for symbols, the last line of their snippet.
    pub end_line: Field,
    /// Symbols: the last line of the whole definition (stored).
    pub def_end_line: Field,
    /// Chunk text or definition snippet (stored, not indexed).
    pub code: Field,
    /// Distinct identifiers and words of a chunk (code tokenizer): what
    /// search and similarity retrieval match against.
    pub idents: Field,
    /// Names defined in a chunk (code tokenizer).
    pub names: Field,
    /// A symbol's exact name (raw, indexed, stored).
    pub name: Field,
    /// A symbol's kind (stored).
    pub sym_kind: Field,
    /// A symbol's signature line (stored).
    pub signature: Field,
    /// A symbol's enclosing scope or a chunk's enclosing definition (stored).
    pub scope: Field,
    /// File documents: content size in bytes (stored).
    pub bytes: Field,
    /// File documents: number of chunks (stored).
    pub n_chunks: Field,
    /// File documents: number of symbols (stored).
    pub n_symbols: Field,
}

impl Fields {
    /// Builds the schema and its field handles.
    pub(crate) fn build() -> (Schema, Fields) {
        let mut b = Schema::builder();
        let code_indexed = TextFieldIndexing::default()
            .set_tokenizer(CODE_TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqs);
        let code_only = TextOptions::default().set_indexing_options(code_indexed);
        let num = NumericOptions::default().set_stored();
        let fields = Fields {
            doc_type: b.add_text_field("doc_type", STRING | STORED),
            repo: b.add_text_field("repo", STRING | STORED),
            path: b.add_text_field("path", STORED),
            file_key: b.add_text_field("file_key", STRING),
            lang: b.add_text_field("lang", STRING | STORED),
            blob: b.add_text_field("blob", STORED),
            status: b.add_text_field("status", STORED),
            start_line: b.add_u64_field("start_line", num.clone()),
            end_line: b.add_u64_field("end_line", num.clone()),
            def_end_line: b.add_u64_field("def_end_line", num.clone()),
            code: b.add_text_field("code", STORED),
            idents: b.add_text_field("idents", code_only.clone()),
            names: b.add_text_field("names", code_only),
            name: b.add_text_field("name", STRING | STORED),
            sym_kind: b.add_text_field("sym_kind", STORED),
            signature: b.add_text_field("signature", STORED),
            scope: b.add_text_field("scope", STORED),
            bytes: b.add_u64_field("bytes", num.clone()),
            n_chunks: b.add_u64_field("n_chunks", num.clone()),
            n_symbols: b.add_u64_field("n_symbols", num),
        };
        (b.build(), fields)
    }

    /// Looks the field handles up in an existing schema.
    pub(crate) fn from_schema(schema: &Schema) -> Option<Fields> {
        let f = |name: &str| schema.get_field(name).ok();
        Some(Fields {
            doc_type: f("doc_type")?,
            repo: f("repo")?,
            path: f("path")?,
            file_key: f("file_key")?,
            lang: f("lang")?,
            blob: f("blob")?,
            status: f("status")?,
            start_line: f("start_line")?,
            end_line: f("end_line")?,
            def_end_line: f("def_end_line")?,
            code: f("code")?,
            idents: f("idents")?,
            names: f("names")?,
            name: f("name")?,
            sym_kind: f("sym_kind")?,
            signature: f("signature")?,
            scope: f("scope")?,
            bytes: f("bytes")?,
            n_chunks: f("n_chunks")?,
            n_symbols: f("n_symbols")?,
        })
    }

    /// The term deleting every document of one file.
    pub(crate) fn file_key_term(&self, repo: &str, path: &str) -> Term {
        Term::from_field_text(self.file_key, &file_key(repo, path))
    }
}

/// The value of the `file_key` field.
pub(crate) fn file_key(repo: &str, path: &str) -> String {
    let mut key = String::with_capacity(repo.len() + path.len() + 1);
    key.push_str(repo);
    key.push('\u{1f}');
    key.push_str(path);
    key
}
