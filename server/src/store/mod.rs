//! `souffleur.db` (SQLite): the schema and its migrations ([`db`]), API tokens
//! ([`tokens`]), the audit log ([`audit`]) and per-minute usage ([`usage`]).

pub mod audit;
pub mod db;
pub mod tokens;
pub mod usage;

pub use db::{Result, StoreError};
