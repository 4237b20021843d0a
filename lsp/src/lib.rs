//! `souffleur-lsp`: the language server that editors start over stdio to show Souffleur
//! completions as ghost text (`textDocument/inlineCompletion`, LSP 3.18) or, for clients
//! without it, as one completion item (`textDocument/completion`).
//!
//! The adapter is thin: it keeps the open documents in sync (incremental, UTF-16
//! positions), gathers context the server cannot see (lines of other open documents that
//! mention the identifiers near the cursor, recently edited ranges, the git remote), and
//! forwards one Tabby-shaped request per pause in typing to `POST /v1/completions`.
//!
//! Modules, in the order a request meets them:
//! * [`framing`] — drops malformed messages before they reach tower-lsp-server, and
//!   removes the `params` some clients send with `shutdown` and `exit`.
//! * [`config`] — server URL, token, debounce; from `initializationOptions`,
//!   `workspace/didChangeConfiguration` or the environment.
//! * [`documents`] — the open documents and the LSP edits applied to them.
//! * [`reuse`] — answers a keystroke that types through the last ghost text without a
//!   round trip.
//! * [`debounce`] — waits for a pause in typing; newer requests supersede older ones.
//! * [`context`] — snippets from other open documents and recent edits.
//! * [`git`] — the `origin` URL of the repository a file lives in.
//! * [`client`] — the HTTP client of the Souffleur server (Tabby's API).
//! * [`telemetry`] — acceptance events (`souffleur/accepted`, `souffleur/dismissed`).
//! * [`server`] — the `LanguageServer` implementation that ties them together.
//!
//! Nothing of the user's code is stored: documents live in memory while open, and
//! events carry only completion ids.

pub mod client;
pub mod config;
pub mod context;
pub mod debounce;
pub mod documents;
pub mod framing;
pub mod git;
pub mod reuse;
pub mod server;
pub mod telemetry;

pub use server::{Backend, run_stdio};
