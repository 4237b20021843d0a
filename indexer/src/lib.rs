//! Souffleur's code index: completions that know the team's own code.
//!
//! Local git repositories are indexed at a ref (or their working tree):
//! files are parsed with tree-sitter into symbol definitions and
//! syntax-aware chunks, stored in a tantivy index with a code-aware
//! tokenizer, and kept up to date incrementally by blob id.
//!
//! - [`Indexer`] is the writing side (add, sync, remove); it holds the
//!   index's writer lock.
//! - [`CodeIndex`] is the reading side (status, search, and
//!   [`CodeIndex::retrieve`] for the completion path); it takes no lock.
//!
//! ```no_run
//! use indexer::{CodeIndex, Indexer, IndexerConfig, NoProgress, RepoSpec, RetrievalRequest};
//! # fn main() -> Result<(), indexer::IndexError> {
//! let dir = std::path::Path::new("/tmp/souffleur/index");
//! let mut writer = Indexer::open(dir, IndexerConfig::default())?;
//! writer.add_repo(RepoSpec { path: "/src/app".into(), ..RepoSpec::default() })?;
//! writer.sync(&[], &NoProgress)?;
//! drop(writer);
//!
//! let index = CodeIndex::open(dir)?;
//! let repos = vec!["app".to_string()];
//! let request = RetrievalRequest::new(&repos, "src/main.rs", "let s = Server::", "", 512);
//! let snippets = index.retrieve(&request, &|text: &str| text.len() / 4)?;
//! # let _ = snippets;
//! # Ok(())
//! # }
//! ```

pub mod chunk;
pub mod code_tokenizer;
mod docs;
pub mod error;
mod index;
pub mod languages;
pub mod lock;
pub mod manifest;
pub mod parse;
pub mod progress;
mod report;
mod retrieve;
pub mod schema;
mod store;
mod sync;
pub mod walk;

pub use error::{IndexError, Result};
pub use index::{CodeIndex, IndexStatus, RepoState, RepoStatus, SearchHit, SearchRequest};
pub use languages::{Language, SymbolKind};
pub use manifest::{RepoRecord, RepoStats, SyncRecord};
pub use parse::{Analysis, Chunk, ParseConfig, Symbol, analyze};
pub use progress::{NoProgress, ProgressEvent, ProgressSink, ProgressSnapshot};
pub use report::SyncReport;
pub use retrieve::{RetrievalRequest, Snippet, SnippetKind};
pub use store::TANTIVY_DIR;
pub use sync::{Indexer, IndexerConfig, RepoSpec};
