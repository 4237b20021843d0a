//! Souffleur's HTTP API as a library: [`app::app`] is the router, [`app::serve`] runs it.
//!
//! * [`routes`] — thin handlers: extract the caller ([`state::Caller`]) and the body,
//!   call a service, respond; every failure is an [`error::ApiError`].
//! * [`completion`] — the completion service: prompt building within token budgets,
//!   generation through the engine, post-processing, the previous keystroke's hint.
//! * [`http`] — the accept loop ([`http::listen`]), the gate before a body is read
//!   (token, sizes, deadline: [`http::gate`]) and the observation around every request
//!   (request id, log span, metrics, audit row: [`http::observe`]).
//! * [`store`] — `souffleur.db`: the schema and its migrations, tokens, the audit log.
//! * [`models`] — the models served side by side, by name and role; reloads and idle
//!   unloading.
//! * [`console`] — the admins' web console at `/admin`; [`usage`] — per-minute usage
//!   counts for its plots; [`directory`] — sign-in with the company directory (LDAP).
//! * [`config`], [`metrics`], [`state`] (what every handler shares).
//!
//! The crate loads no model and parses no command line: the `souffleur` binary (`cli/`)
//! does both and hands a [`models::ModelLoader`] over in [`app::Resources`].

pub mod app;
pub mod completion;
pub mod config;
pub mod console;
pub mod directory;
pub mod error;
pub mod http;
pub mod metrics;
pub mod models;
pub mod routes;
pub mod state;
pub mod store;
pub mod upstream;
pub mod usage;

pub use app::{Resources, ServeError, app, serve};
pub use config::Config;
pub use models::{LoadError, LoadedModel, ModelIdentity, ModelLoader};
pub use state::AppState;
