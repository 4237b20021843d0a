//! The reading side: status and search. Opening a [`CodeIndex`] takes no
//! lock, so a server can query while another process syncs; the reader
//! picks up each commit shortly after it lands (or at once after
//! [`CodeIndex::reload`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{TantivyDocument, Term};

use crate::code_tokenizer::for_each_token;
use crate::error::Result;
use crate::lock::IndexLock;
use crate::manifest::{Manifest, RepoRecord};
use crate::schema::DOC_CHUNK;
use crate::store::{Store, TANTIVY_DIR, dir_size, get_str, get_u64};

/// A code index opened for reading.
pub struct CodeIndex {
    dir: PathBuf,
    store: Store,
}

impl std::fmt::Debug for CodeIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeIndex")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The state of one repository, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RepoState {
    /// Added, never synced.
    NeverSynced,
    /// The last sync completed.
    Synced,
    /// A sync is running in the process holding the lock.
    Syncing {
        /// Its pid.
        pid: u32,
    },
    /// A sync started and did not finish (the process died); the index
    /// holds what it committed, and the next sync completes it.
    Interrupted {
        /// The pid that ran it.
        pid: u32,
    },
}

/// Status of one repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoStatus {
    /// Its manifest record (path, ref, last sync and statistics).
    #[serde(flatten)]
    pub record: RepoRecord,
    /// Whether it is synced.
    #[serde(flatten)]
    pub state: RepoState,
}

/// Status of the whole index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexStatus {
    /// The index directory.
    pub dir: PathBuf,
    /// Pid of the process holding the writer lock, if any.
    pub locked_by: Option<u32>,
    /// Size of the index on disk, in bytes.
    pub size_bytes: u64,
    /// Number of documents (files, chunks and symbols).
    pub documents: u64,
    /// The repositories.
    pub repos: Vec<RepoStatus>,
}

/// A full-text search over chunks.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SearchRequest {
    /// Free text; identifiers are split like the indexed code.
    pub query: String,
    /// Repositories to search; empty means every registered repository.
    pub repos: Vec<String>,
    /// Only chunks of this language (see `Language::name`).
    pub language: Option<String>,
    /// Most hits to return.
    pub limit: usize,
}

/// One search hit: a chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    /// Repository name.
    pub repo: String,
    /// Repository-relative path.
    pub path: String,
    /// Language name.
    pub language: String,
    /// First line (1-based).
    pub start_line: u32,
    /// Last line (inclusive).
    pub end_line: u32,
    /// BM25 score.
    pub score: f32,
    /// Enclosing definition, if any.
    pub scope: String,
    /// The chunk's text.
    pub text: String,
}

pub(crate) fn line(doc: &TantivyDocument, field: tantivy::schema::Field) -> u32 {
    u32::try_from(get_u64(doc, field)).unwrap_or(u32::MAX)
}

impl CodeIndex {
    /// Opens the index in `dir` for reading; fails with `NoIndex` if there is none.
    pub fn open(dir: &Path) -> Result<CodeIndex> {
        Manifest::load(dir)?;
        let store = Store::open(dir, false)?;
        Ok(CodeIndex::from_store(dir, store))
    }

    pub(crate) fn from_store(dir: &Path, store: Store) -> CodeIndex {
        CodeIndex {
            dir: dir.to_path_buf(),
            store,
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The index directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes the latest commit visible now (otherwise it appears within a
    /// short delay).
    pub fn reload(&self) -> Result<()> {
        Ok(self.store.reader.reload()?)
    }

    /// Names of the registered repositories.
    pub fn repo_names(&self) -> Result<Vec<String>> {
        Ok(Manifest::load(&self.dir)?
            .repos
            .into_iter()
            .map(|r| r.name)
            .collect())
    }

    /// Status of the index and of each repository.
    pub fn status(&self) -> Result<IndexStatus> {
        let manifest = Manifest::load(&self.dir)?;
        let locked_by = IndexLock::holder(&self.dir);
        let repos = manifest
            .repos
            .into_iter()
            .map(|record| {
                let state = match (&record.sync_in_progress, &record.last_sync) {
                    (Some(p), _) if locked_by == Some(p.pid) => RepoState::Syncing { pid: p.pid },
                    (Some(p), _) => RepoState::Interrupted { pid: p.pid },
                    (None, Some(_)) => RepoState::Synced,
                    (None, None) => RepoState::NeverSynced,
                };
                RepoStatus { record, state }
            })
            .collect();
        Ok(IndexStatus {
            dir: self.dir.clone(),
            locked_by,
            size_bytes: dir_size(&self.dir.join(TANTIVY_DIR)),
            documents: self.store.reader.searcher().num_docs(),
            repos,
        })
    }

    /// Full-text search over chunks (identifiers match whole or by their parts).
    pub fn search(&self, request: &SearchRequest) -> Result<Vec<SearchHit>> {
        let repos = if request.repos.is_empty() {
            self.repo_names()?
        } else {
            request.repos.clone()
        };
        let f = &self.store.fields;
        let mut terms: Vec<String> = Vec::new();
        for_each_token(&request.query, |t| {
            if !terms.iter().any(|x| x == t) {
                terms.push(t.to_string());
            }
        });
        if repos.is_empty() || terms.is_empty() || request.limit == 0 {
            return Ok(Vec::new());
        }
        let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for t in &terms {
            for (field, boost) in [(f.idents, 1.0), (f.names, 3.0)] {
                let q = TermQuery::new(
                    Term::from_field_text(field, t),
                    IndexRecordOption::WithFreqs,
                );
                should.push((Occur::Should, Box::new(BoostQuery::new(Box::new(q), boost))));
            }
        }
        let mut must: Vec<(Occur, Box<dyn Query>)> = vec![
            (Occur::Must, self.store.type_filter(DOC_CHUNK)),
            (Occur::Must, self.store.repo_filter(&repos)),
            (Occur::Must, Box::new(BooleanQuery::new(should))),
        ];
        if let Some(lang) = &request.language {
            must.push((
                Occur::Must,
                Box::new(tantivy::query::ConstScoreQuery::new(
                    crate::store::term_query(f.lang, lang),
                    0.0,
                )),
            ));
        }
        let query = BooleanQuery::new(must);
        let searcher = self.store.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(request.limit).order_by_score())?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            hits.push(SearchHit {
                repo: get_str(&doc, f.repo).unwrap_or("").to_string(),
                path: get_str(&doc, f.path).unwrap_or("").to_string(),
                language: get_str(&doc, f.lang).unwrap_or("").to_string(),
                start_line: line(&doc, f.start_line),
                end_line: line(&doc, f.end_line),
                score,
                scope: get_str(&doc, f.scope).unwrap_or("").to_string(),
                text: get_str(&doc, f.code).unwrap_or("").to_string(),
            });
        }
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_index_can_be_shared_between_request_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CodeIndex>();
        assert_send_sync::<crate::Indexer>();
    }
}
