//! `souffleur.db` (SQLite): the schema and its migrations ([`db`]), API tokens
//! ([`tokens`]) and the audit log ([`audit`]).

pub mod audit;
pub mod db;
pub mod tokens;

pub use db::{Result, StoreError};
