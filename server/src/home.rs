//! The Souffleur home directory (`SOUFFLEUR_HOME`, default `~/.souffleur`) and what lives in it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Paths under the home directory.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// Resolves the home from an explicit path or `~/.souffleur`.
    pub fn resolve(explicit: Option<PathBuf>) -> Result<Self> {
        let root = match explicit {
            Some(p) => p,
            None => {
                let home =
                    std::env::var_os("HOME").context("neither SOUFFLEUR_HOME nor HOME is set")?;
                PathBuf::from(home).join(".souffleur")
            }
        };
        Ok(Self { root })
    }

    /// The home directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of model files.
    pub fn models(&self) -> PathBuf {
        self.root.join("models")
    }
}
