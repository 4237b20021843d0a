//! The Souffleur home directory (`SOUFFLEUR_HOME`, default `~/.souffleur`) and what lives
//! in it: `models/`, `index/`, `config.toml` and `souffleur.db`. Every path under the home
//! comes from [`Home`].

use std::path::PathBuf;

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

    /// Directory of model files (`souffleur model fetch` writes here).
    pub fn models(&self) -> PathBuf {
        self.root.join("models")
    }

    /// The code index (`souffleur index add` writes it; serve and review read it).
    pub fn index(&self) -> PathBuf {
        self.root.join("index")
    }

    /// The server's configuration file, read by `souffleur serve` when it exists.
    pub fn config_file(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    /// The database of tokens and the audit log.
    pub fn db(&self) -> PathBuf {
        self.root.join("souffleur.db")
    }
}
