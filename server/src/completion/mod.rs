//! The completion service: [`prompt`] (prefix, suffix and snippets within token
//! budgets), [`generate`] (the engine from async code, cancelled on drop),
//! [`postprocess`] (single line, block end, overlap with the suffix) and
//! [`keystrokes`] (the previous completion as the next keystroke's hint).

pub mod generate;
pub mod keystrokes;
pub mod postprocess;
pub mod prompt;
pub mod remote;
pub mod service;
