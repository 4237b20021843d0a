//! The tantivy index on disk: opening, queries shared by sync and
//! retrieval, and reading stored fields.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tantivy::collector::DocSetCollector;
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Value};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::code_tokenizer::{CODE_TOKENIZER, CodeTokenizer};
use crate::error::{IndexError, Result};
use crate::manifest::FORMAT_VERSION;
use crate::schema::{DOC_FILE, Fields};

/// Name of the tantivy directory inside the index directory.
pub const TANTIVY_DIR: &str = "tantivy";

/// The tantivy index, its fields and a reader.
pub(crate) struct Store {
    pub(crate) index: Index,
    pub(crate) fields: Fields,
    pub(crate) reader: IndexReader,
}

/// What the index records about one file, for incremental sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileState {
    pub blob: String,
    pub status: String,
    pub lang: String,
    pub bytes: u64,
    pub n_chunks: u64,
    pub n_symbols: u64,
}

impl Store {
    /// Opens the index in `dir`, creating it when `create` is set.
    pub(crate) fn open(dir: &Path, create: bool) -> Result<Store> {
        let tdir: PathBuf = dir.join(TANTIVY_DIR);
        let exists = tdir.join("meta.json").exists();
        if !exists && !create {
            return Err(IndexError::NoIndex(dir.to_path_buf()));
        }
        std::fs::create_dir_all(&tdir).map_err(|e| IndexError::io(&tdir, e))?;
        let mmap = MmapDirectory::open(&tdir).map_err(|e| IndexError::Io {
            path: tdir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let (schema, fields) = Fields::build();
        let index = if exists {
            let index = Index::open(mmap)?;
            let fields = Fields::from_schema(&index.schema());
            if fields.is_none() {
                return Err(IndexError::IncompatibleFormat {
                    path: dir.to_path_buf(),
                    found: 0,
                    expected: FORMAT_VERSION,
                });
            }
            index
        } else {
            Index::create(mmap, schema, tantivy::IndexSettings::default())?
        };
        let fields = Fields::from_schema(&index.schema()).unwrap_or(fields);
        index
            .tokenizers()
            .register(CODE_TOKENIZER, TextAnalyzer::from(CodeTokenizer::default()));
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::OnCommitWithDelay)
            .try_into()?;
        Ok(Store {
            index,
            fields,
            reader,
        })
    }

    /// A writer with `threads` indexing threads sharing `memory` bytes.
    pub(crate) fn writer(&self, threads: usize, memory: usize) -> Result<IndexWriter> {
        let threads = threads.max(1);
        let memory = memory.max(threads * 16_000_000);
        Ok(self.index.writer_with_num_threads(threads, memory)?)
    }

    /// The recorded state of every file of `repo`, by path.
    pub(crate) fn load_file_states(&self, repo: &str) -> Result<HashMap<String, FileState>> {
        let f = &self.fields;
        let searcher = self.reader.searcher();
        let query = BooleanQuery::new(vec![
            (Occur::Must, term_query(f.doc_type, DOC_FILE)),
            (Occur::Must, term_query(f.repo, repo)),
        ]);
        let mut addresses: Vec<_> = searcher
            .search(&query, &DocSetCollector)?
            .into_iter()
            .collect();
        addresses.sort();
        let mut out = HashMap::with_capacity(addresses.len());
        for address in addresses {
            let doc: TantivyDocument = searcher.doc(address)?;
            let Some(path) = get_str(&doc, f.path) else {
                continue;
            };
            out.insert(
                path.to_string(),
                FileState {
                    blob: get_str(&doc, f.blob).unwrap_or("").to_string(),
                    status: get_str(&doc, f.status).unwrap_or("").to_string(),
                    lang: get_str(&doc, f.lang).unwrap_or("").to_string(),
                    bytes: get_u64(&doc, f.bytes),
                    n_chunks: get_u64(&doc, f.n_chunks),
                    n_symbols: get_u64(&doc, f.n_symbols),
                },
            );
        }
        Ok(out)
    }

    /// A filter matching documents of any of `repos` (scores nothing).
    pub(crate) fn repo_filter(&self, repos: &[String]) -> Box<dyn Query> {
        let should: Vec<(Occur, Box<dyn Query>)> = repos
            .iter()
            .map(|r| (Occur::Should, term_query(self.fields.repo, r)))
            .collect();
        Box::new(ConstScoreQuery::new(
            Box::new(BooleanQuery::new(should)),
            0.0,
        ))
    }

    /// A filter on `doc_type` (scores nothing).
    pub(crate) fn type_filter(&self, doc_type: &str) -> Box<dyn Query> {
        Box::new(ConstScoreQuery::new(
            term_query(self.fields.doc_type, doc_type),
            0.0,
        ))
    }
}

/// An exact-term query on a raw field.
pub(crate) fn term_query(field: Field, text: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_text(field, text),
        IndexRecordOption::Basic,
    ))
}

/// The first text value of `field`.
pub(crate) fn get_str(doc: &TantivyDocument, field: Field) -> Option<&str> {
    doc.get_first(field).and_then(|v| v.as_str())
}

/// The first u64 value of `field`, or 0.
pub(crate) fn get_u64(doc: &TantivyDocument, field: Field) -> u64 {
    doc.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0)
}

/// Total size in bytes of the files under `dir`.
pub(crate) fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(t) if t.is_file() => total += entry.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}
