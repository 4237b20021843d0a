//! The Souffleur home directory (`SOUFFLEUR_HOME`, default `~/.souffleur`) and what lives in it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Makes every file and directory this process creates private to its user (mode
/// 0600 / 0700): the home holds tokens, the audit log and the code index.
pub fn restrict_new_files() {
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

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
        if !root.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&root)
                .with_context(|| format!("cannot create {}", root.display()))?;
        }
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
