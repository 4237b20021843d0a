//! Reading one file from its source and turning it into index documents.

use std::path::{Path, PathBuf};

use git2::Repository;
use tantivy::TantivyDocument;

use crate::languages::Language;
use crate::parse::{Analysis, ParseConfig, analyze};
use crate::schema::{DOC_CHUNK, DOC_FILE, DOC_SYMBOL, Fields, file_key};
use crate::store::FileState;
use crate::walk::{Classified, FileEntry, SkipReason, classify};

/// File status of an indexed file.
pub(crate) const STATUS_INDEXED: &str = "indexed";
/// File status of a file indexed with line windows after a parse timeout.
pub(crate) const STATUS_PARSE_TIMEOUT: &str = "parse_timeout";
/// File status of a file that was not valid UTF-8 (indexed lossily).
pub(crate) const STATUS_NON_UTF8: &str = "non_utf8";

/// Whether a file status means the file's content is in the index.
pub(crate) fn is_indexed_status(status: &str) -> bool {
    matches!(
        status,
        STATUS_INDEXED | STATUS_PARSE_TIMEOUT | STATUS_NON_UTF8
    )
}

/// Where file contents come from, opened once per worker thread.
pub(crate) enum Source {
    /// Blobs of a git repository.
    Git(Repository),
    /// Files of a working tree.
    Fs(PathBuf),
    /// The repository could not be opened in this thread.
    Broken(String),
}

impl Source {
    pub(crate) fn open(repo_path: &Path, working_tree: Option<&Path>) -> Source {
        match working_tree {
            Some(root) => Source::Fs(root.to_path_buf()),
            None => match Repository::open(repo_path) {
                Ok(repo) => Source::Git(repo),
                Err(e) => Source::Broken(e.message().to_string()),
            },
        }
    }

    /// Runs `f` on the content of `entry`, or says why it cannot be read.
    fn with_content<T>(
        &self,
        entry: &FileEntry,
        max_bytes: u64,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, (SkipReason, u64, Option<String>)> {
        match self {
            Source::Git(repo) => {
                let odb = repo
                    .odb()
                    .map_err(|e| (SkipReason::Unreadable, 0, Some(e.message().to_string())))?;
                let (size, _) = odb
                    .read_header(entry.oid)
                    .map_err(|e| (SkipReason::Unreadable, 0, Some(e.message().to_string())))?;
                let size = size as u64;
                if size > max_bytes {
                    return Err((SkipReason::TooLarge, size, None));
                }
                let blob = repo
                    .find_blob(entry.oid)
                    .map_err(|e| (SkipReason::Unreadable, 0, Some(e.message().to_string())))?;
                Ok(f(blob.content()))
            }
            Source::Fs(root) => {
                let full = root.join(&entry.path);
                let meta = std::fs::symlink_metadata(&full)
                    .map_err(|e| (SkipReason::Unreadable, 0, Some(e.to_string())))?;
                if !meta.is_file() {
                    return Err((SkipReason::Symlink, 0, None));
                }
                if meta.len() > max_bytes {
                    return Err((SkipReason::TooLarge, meta.len(), None));
                }
                let bytes = std::fs::read(&full)
                    .map_err(|e| (SkipReason::Unreadable, 0, Some(e.to_string())))?;
                Ok(f(&bytes))
            }
            Source::Broken(message) => Err((SkipReason::Unreadable, 0, Some(message.clone()))),
        }
    }
}

/// What processing one file produced.
pub(crate) struct Processed {
    pub path: String,
    pub state: FileState,
    pub warning: Option<String>,
    pub docs: Vec<TantivyDocument>,
}

/// Reads, classifies, analyses and converts one file.
pub(crate) fn process_file(
    source: &Source,
    entry: &FileEntry,
    repo: &str,
    fields: &Fields,
    parse: &ParseConfig,
    max_bytes: u64,
) -> Processed {
    let blob = entry.oid.to_string();
    let result = source.with_content(entry, max_bytes, |bytes| {
        let len = bytes.len() as u64;
        match classify(&entry.path, bytes) {
            Classified::Skip(reason) => (len, Err(reason)),
            Classified::Text {
                language,
                text,
                lossy,
            } => {
                let analysis = analyze(&text, language, parse);
                (len, Ok((language, analysis, lossy)))
            }
        }
    });
    let (state, warning, analysis) = match result {
        Err((reason, size, message)) => {
            let warning = match (reason, message) {
                (_, Some(m)) => Some(format!("{}: cannot read: {m}", entry.path)),
                (SkipReason::TooLarge, None) => Some(format!(
                    "{}: {size} bytes, over the {max_bytes}-byte limit; skipped",
                    entry.path
                )),
                _ => None,
            };
            let state = skipped_state(&blob, reason, size);
            (state, warning, None)
        }
        Ok((len, Err(reason))) => (skipped_state(&blob, reason, len), None, None),
        Ok((len, Ok((language, analysis, lossy)))) => {
            let (status, warning) = if analysis.timed_out {
                (
                    STATUS_PARSE_TIMEOUT,
                    Some(format!(
                        "{}: parsing took longer than {} ms; indexed as plain text",
                        entry.path,
                        parse.timeout.as_millis()
                    )),
                )
            } else if lossy {
                (
                    STATUS_NON_UTF8,
                    Some(format!(
                        "{}: not valid UTF-8; invalid bytes replaced",
                        entry.path
                    )),
                )
            } else {
                (STATUS_INDEXED, None)
            };
            let state = FileState {
                blob: blob.clone(),
                status: status.to_string(),
                lang: language.name().to_string(),
                bytes: len,
                n_chunks: analysis.chunks.len() as u64,
                n_symbols: analysis.symbols.len() as u64,
            };
            (state, warning, Some((language, analysis)))
        }
    };
    let mut docs = Vec::with_capacity(
        1 + analysis
            .as_ref()
            .map_or(0, |(_, a)| a.chunks.len() + a.symbols.len()),
    );
    docs.push(file_doc(fields, repo, &entry.path, &state));
    if let Some((language, analysis)) = &analysis {
        content_docs(fields, repo, &entry.path, *language, analysis, &mut docs);
    }
    Processed {
        path: entry.path.clone(),
        state,
        warning,
        docs,
    }
}

fn skipped_state(blob: &str, reason: SkipReason, bytes: u64) -> FileState {
    FileState {
        blob: blob.to_string(),
        status: reason.name().to_string(),
        lang: String::new(),
        bytes,
        n_chunks: 0,
        n_symbols: 0,
    }
}

fn base_doc(fields: &Fields, doc_type: &str, repo: &str, path: &str, key: &str) -> TantivyDocument {
    let mut doc = TantivyDocument::new();
    doc.add_text(fields.doc_type, doc_type);
    doc.add_text(fields.repo, repo);
    doc.add_text(fields.path, path);
    doc.add_text(fields.file_key, key);
    doc
}

fn file_doc(fields: &Fields, repo: &str, path: &str, state: &FileState) -> TantivyDocument {
    let key = file_key(repo, path);
    let mut doc = base_doc(fields, DOC_FILE, repo, path, &key);
    doc.add_text(fields.lang, &state.lang);
    doc.add_text(fields.blob, &state.blob);
    doc.add_text(fields.status, &state.status);
    doc.add_u64(fields.bytes, state.bytes);
    doc.add_u64(fields.n_chunks, state.n_chunks);
    doc.add_u64(fields.n_symbols, state.n_symbols);
    doc
}

fn content_docs(
    fields: &Fields,
    repo: &str,
    path: &str,
    language: Language,
    analysis: &Analysis,
    out: &mut Vec<TantivyDocument>,
) {
    let key = file_key(repo, path);
    let lang = language.name();
    for chunk in &analysis.chunks {
        let mut doc = base_doc(fields, DOC_CHUNK, repo, path, &key);
        doc.add_text(fields.lang, lang);
        doc.add_u64(fields.start_line, u64::from(chunk.start_line));
        doc.add_u64(fields.end_line, u64::from(chunk.end_line));
        doc.add_text(fields.code, &chunk.text);
        doc.add_text(fields.idents, chunk.identifiers.join(" "));
        if !chunk.defines.is_empty() {
            doc.add_text(fields.names, chunk.defines.join(" "));
        }
        if !chunk.scope.is_empty() {
            doc.add_text(fields.scope, &chunk.scope);
        }
        out.push(doc);
    }
    for sym in &analysis.symbols {
        let mut doc = base_doc(fields, DOC_SYMBOL, repo, path, &key);
        doc.add_text(fields.lang, lang);
        doc.add_u64(fields.start_line, u64::from(sym.start_line));
        doc.add_u64(fields.end_line, u64::from(sym.snippet_end_line));
        doc.add_u64(fields.def_end_line, u64::from(sym.end_line));
        doc.add_text(fields.name, &sym.name);
        doc.add_text(fields.sym_kind, sym.kind.name());
        doc.add_text(fields.signature, &sym.signature);
        doc.add_text(fields.scope, &sym.scope);
        doc.add_text(fields.code, &sym.snippet);
        out.push(doc);
    }
}
