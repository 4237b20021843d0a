//! Enumerating a repository's files and deciding which ones to index.
//!
//! Two sources: the tree of a commit (tracked files, read through git2,
//! with `.gitignore`, `.ignore` and `.souffleurignore` files of that tree
//! applied), or the working tree (walked with the `ignore` crate, which
//! applies the same files plus `.git/info/exclude`). Symlinks are never
//! followed and submodules are not entered; both are counted as skipped.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use git2::{ObjectType, Oid, Repository};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::languages::Language;

/// Lock files (lowercase names): written by package managers, never indexed and
/// never reviewed line by line.
pub const LOCK_FILES: &[&str] = &[
    "cargo.lock",
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "poetry.lock",
    "pipfile.lock",
    "gemfile.lock",
    "composer.lock",
    "go.sum",
    "uv.lock",
    "flake.lock",
    "mix.lock",
    "pubspec.lock",
    "packages.lock.json",
    "podfile.lock",
];

/// The names of the files whose patterns exclude paths from the index.
pub const IGNORE_FILE_NAMES: [&str; 3] = [".gitignore", ".ignore", ".souffleurignore"];

/// Directory names whose content is third-party code and never indexed.
pub const VENDORED_DIRS: [&str; 12] = [
    "vendor",
    "vendors",
    "_vendor",
    "third_party",
    "third-party",
    "thirdparty",
    "node_modules",
    "bower_components",
    "site-packages",
    "dist-packages",
    "__pycache__",
    ".git",
];

/// Why a path was not indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Matched an ignore file (a pruned directory counts once).
    Ignored,
    /// Inside a vendored directory (the directory counts once).
    Vendored,
    /// A symbolic link (never followed).
    Symlink,
    /// A git submodule (not entered).
    Submodule,
    /// Binary content (a NUL byte, or a known binary extension).
    Binary,
    /// Larger than the size limit.
    TooLarge,
    /// A generated file (lock files, protobuf output, `@generated` / `DO NOT EDIT` markers).
    Generated,
    /// Minified code (`.min.js`, or very long lines).
    Minified,
    /// A path that is not valid UTF-8.
    BadPath,
    /// The content could not be read.
    Unreadable,
}

impl SkipReason {
    /// The stable snake_case name used in statistics.
    pub fn name(self) -> &'static str {
        match self {
            SkipReason::Ignored => "ignored",
            SkipReason::Vendored => "vendored",
            SkipReason::Symlink => "symlink",
            SkipReason::Submodule => "submodule",
            SkipReason::Binary => "binary",
            SkipReason::TooLarge => "too_large",
            SkipReason::Generated => "generated",
            SkipReason::Minified => "minified",
            SkipReason::BadPath => "bad_path",
            SkipReason::Unreadable => "unreadable",
        }
    }

    /// Parses a name produced by [`SkipReason::name`].
    pub fn from_name(name: &str) -> Option<SkipReason> {
        Some(match name {
            "ignored" => SkipReason::Ignored,
            "vendored" => SkipReason::Vendored,
            "symlink" => SkipReason::Symlink,
            "submodule" => SkipReason::Submodule,
            "binary" => SkipReason::Binary,
            "too_large" => SkipReason::TooLarge,
            "generated" => SkipReason::Generated,
            "minified" => SkipReason::Minified,
            "bad_path" => SkipReason::BadPath,
            "unreadable" => SkipReason::Unreadable,
            _ => return None,
        })
    }
}

/// A file to consider for indexing: its repository-relative path (with
/// `/` separators) and the git blob id of its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Repository-relative path.
    pub path: String,
    /// Blob id (for the working tree: the id git would give the content).
    pub oid: Oid,
}

/// The files found by a walk, and what was skipped on the way.
#[derive(Debug, Default)]
pub struct WalkOutput {
    /// Candidate files, in path order.
    pub files: Vec<FileEntry>,
    /// Paths skipped without reading content, by reason.
    pub skipped: BTreeMap<SkipReason, u64>,
    /// Messages worth showing (submodules, bad patterns, unreadable entries).
    pub warnings: Vec<String>,
}

impl WalkOutput {
    fn skip(&mut self, reason: SkipReason) {
        *self.skipped.entry(reason).or_insert(0) += 1;
    }
}

/// Skips decided by the path alone.
pub fn path_skip(path: &str) -> Option<SkipReason> {
    let file_name = path.rsplit('/').next().unwrap_or(path);
    let lower = file_name.to_ascii_lowercase();
    const BINARY_EXT: &[&str] = &[
        "png", "jpg", "jpeg", "gif", "bmp", "ico", "icns", "webp", "tif", "tiff", "psd", "pdf",
        "zip", "gz", "tgz", "bz2", "xz", "zst", "7z", "rar", "jar", "war", "class", "so", "dylib",
        "dll", "exe", "o", "a", "lib", "obj", "pyc", "pyo", "pyd", "whl", "egg", "woff", "woff2",
        "ttf", "otf", "eot", "mp3", "mp4", "wav", "ogg", "flac", "avi", "mov", "mkv", "webm",
        "wasm", "sqlite", "db", "rlib", "rmeta", "bin", "crate",
    ];
    const GENERATED_SUFFIXES: &[&str] = &[
        "_pb2.py",
        "_pb2_grpc.py",
        "_pb2.pyi",
        ".pb.go",
        ".pb.cc",
        ".pb.h",
        ".g.dart",
        ".designer.cs",
    ];
    if let Some((_, ext)) = lower.rsplit_once('.')
        && BINARY_EXT.contains(&ext)
    {
        return Some(SkipReason::Binary);
    }
    if LOCK_FILES.contains(&lower.as_str())
        || GENERATED_SUFFIXES.iter().any(|s| lower.ends_with(s))
        || lower.contains(".generated.")
    {
        return Some(SkipReason::Generated);
    }
    if lower.ends_with(".min.js") || lower.ends_with(".min.css") || lower.ends_with(".min.mjs") {
        return Some(SkipReason::Minified);
    }
    None
}

/// The result of looking at a file's content.
#[derive(Debug)]
pub enum Classified {
    /// A text file to index.
    Text {
        /// Its language (`Text` when no grammar applies).
        language: Language,
        /// The content; invalid UTF-8 sequences are replaced by U+FFFD.
        text: String,
        /// The content was not valid UTF-8.
        lossy: bool,
    },
    /// Not indexed.
    Skip(SkipReason),
}

/// Decides from its content whether and how a file is indexed.
pub fn classify(path: &str, bytes: &[u8]) -> Classified {
    let head = &bytes[..bytes.len().min(8000)];
    if head.contains(&0) {
        return Classified::Skip(SkipReason::Binary);
    }
    let marker_zone = &bytes[..bytes.len().min(1024)];
    const MARKERS: &[&[u8]] = &[
        b"@generated",
        b"DO NOT EDIT",
        b"Do not edit",
        b"do not edit",
        b"Code generated",
        b"AUTOGENERATED",
        b"Autogenerated",
        b"autogenerated",
        b"auto-generated",
        b"Auto-generated",
        b"automatically generated",
        b"Automatically generated",
        b"AUTOMATICALLY GENERATED",
    ];
    if MARKERS
        .iter()
        .any(|m| marker_zone.windows(m.len()).any(|w| w == *m))
    {
        return Classified::Skip(SkipReason::Generated);
    }
    if bytes.len() > 2048 {
        let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
        if bytes.len() / (newlines + 1) > 300 {
            return Classified::Skip(SkipReason::Minified);
        }
    }
    let (text, lossy) = match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), false),
        Err(_) => (String::from_utf8_lossy(bytes).into_owned(), true),
    };
    let language = Language::from_path(path)
        .or_else(|| Language::from_shebang(&text))
        .unwrap_or(Language::Text);
    Classified::Text {
        language,
        text,
        lossy,
    }
}

fn load_ignore_file(builder: &mut GitignoreBuilder, content: &[u8], warnings: &mut Vec<String>) {
    let content = String::from_utf8_lossy(content);
    for line in content.lines() {
        if let Err(err) = builder.add_line(None, line) {
            warnings.push(format!("ignoring bad ignore pattern {line:?}: {err}"));
        }
    }
}

/// Ignore matchers applying to a directory: (directory prefix ending in `/`
/// or empty, matcher), outermost first.
type Matchers = Vec<(Arc<str>, Arc<Gitignore>)>;

fn is_ignored(matchers: &Matchers, path: &str, is_dir: bool) -> bool {
    for (prefix, gi) in matchers.iter().rev() {
        let Some(rel) = path.strip_prefix(&**prefix) else {
            continue;
        };
        let m = gi.matched(rel, is_dir);
        if m.is_ignore() {
            return true;
        }
        if m.is_whitelist() {
            return false;
        }
    }
    false
}

const MODE_TREE: i32 = 0o040000;
const MODE_LINK: i32 = 0o120000;
const MODE_COMMIT: i32 = 0o160000;

/// Walks the tree of a commit.
pub fn walk_tree(repo: &Repository, tree_id: Oid) -> Result<WalkOutput> {
    let mut out = WalkOutput::default();
    let mut stack: Vec<(Oid, String, Matchers)> = vec![(tree_id, String::new(), Vec::new())];
    while let Some((oid, prefix, parent_matchers)) = stack.pop() {
        let tree = repo.find_tree(oid)?;
        let mut matchers = parent_matchers;
        let mut builder: Option<GitignoreBuilder> = None;
        for name in IGNORE_FILE_NAMES {
            let Some(entry) = tree.get_name(name) else {
                continue;
            };
            if entry.kind() != Some(ObjectType::Blob) {
                continue;
            }
            match repo.find_blob(entry.id()) {
                Ok(blob) => {
                    let b = builder.get_or_insert_with(|| GitignoreBuilder::new("."));
                    load_ignore_file(b, blob.content(), &mut out.warnings);
                }
                Err(err) => out
                    .warnings
                    .push(format!("cannot read {prefix}{name}: {}", err.message())),
            }
        }
        if let Some(b) = builder {
            match b.build() {
                Ok(gi) => matchers.push((Arc::from(prefix.as_str()), Arc::new(gi))),
                Err(err) => out
                    .warnings
                    .push(format!("bad ignore file in {prefix:?}: {err}")),
            }
        }
        for entry in tree.iter() {
            let Ok(name) = entry.name() else {
                out.skip(SkipReason::BadPath);
                out.warnings.push(format!(
                    "skipping a path in {prefix:?} that is not valid UTF-8"
                ));
                continue;
            };
            let path = format!("{prefix}{name}");
            let mode = entry.filemode();
            let is_dir = mode == MODE_TREE;
            if is_ignored(&matchers, &path, is_dir) {
                out.skip(SkipReason::Ignored);
                continue;
            }
            match mode {
                MODE_TREE => {
                    if VENDORED_DIRS.contains(&name) {
                        out.skip(SkipReason::Vendored);
                    } else {
                        stack.push((entry.id(), format!("{path}/"), matchers.clone()));
                    }
                }
                MODE_LINK => out.skip(SkipReason::Symlink),
                MODE_COMMIT => {
                    out.skip(SkipReason::Submodule);
                    out.warnings.push(format!(
                        "{path}: submodule not indexed (add it as its own repository)"
                    ));
                }
                _ => match path_skip(&path) {
                    Some(reason) => out.skip(reason),
                    None => out.files.push(FileEntry {
                        path,
                        oid: entry.id(),
                    }),
                },
            }
        }
    }
    out.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Walks the working tree at `root` (untracked files included, ignored ones not).
pub fn walk_worktree(root: &Path) -> WalkOutput {
    let mut out = WalkOutput::default();
    let vendored = Arc::new(AtomicU64::new(0));
    let submodules = Arc::new(AtomicU64::new(0));
    let (v, s) = (Arc::clone(&vendored), Arc::clone(&submodules));
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(false)
        .ignore(true)
        .parents(false)
        .require_git(false)
        .follow_links(false)
        .add_custom_ignore_filename(".souffleurignore")
        .filter_entry(move |e| {
            if e.depth() == 0 {
                return true;
            }
            let is_dir = e.file_type().is_some_and(|t| t.is_dir());
            if !is_dir {
                return true;
            }
            let name = e.file_name().to_str().unwrap_or("");
            if name == ".git" {
                return false;
            }
            if VENDORED_DIRS.contains(&name) {
                v.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            if e.path().join(".git").exists() {
                s.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            true
        })
        .build();
    for result in walker {
        let entry = match result {
            Ok(entry) => entry,
            Err(err) => {
                out.warnings.push(format!("walk: {err}"));
                continue;
            }
        };
        if entry.depth() == 0 {
            continue;
        }
        let Some(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_symlink() {
            out.skip(SkipReason::Symlink);
            continue;
        }
        if !file_type.is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let Some(rel) = rel.to_str() else {
            out.skip(SkipReason::BadPath);
            out.warnings
                .push(format!("{}: path is not valid UTF-8", rel.display()));
            continue;
        };
        let path = rel.replace(std::path::MAIN_SEPARATOR, "/");
        if let Some(reason) = path_skip(&path) {
            out.skip(reason);
            continue;
        }
        match Oid::hash_file(ObjectType::Blob, entry.path()) {
            Ok(oid) => out.files.push(FileEntry { path, oid }),
            Err(err) => {
                out.skip(SkipReason::Unreadable);
                out.warnings.push(format!("{path}: {}", err.message()));
            }
        }
    }
    let vendored = vendored.load(Ordering::Relaxed);
    if vendored > 0 {
        *out.skipped.entry(SkipReason::Vendored).or_insert(0) += vendored;
    }
    let submodules = submodules.load(Ordering::Relaxed);
    if submodules > 0 {
        *out.skipped.entry(SkipReason::Submodule).or_insert(0) += submodules;
        out.warnings.push(format!(
            "{submodules} nested repositories or submodules not indexed"
        ));
    }
    out.files.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_skips() {
        assert_eq!(path_skip("img/logo.PNG"), Some(SkipReason::Binary));
        assert_eq!(path_skip("Cargo.lock"), Some(SkipReason::Generated));
        assert_eq!(path_skip("api/x_pb2.py"), Some(SkipReason::Generated));
        assert_eq!(path_skip("static/app.min.js"), Some(SkipReason::Minified));
        assert_eq!(path_skip("src/lib.rs"), None);
    }

    #[test]
    fn content_classification() {
        assert!(matches!(
            classify("a.rs", b"fn main() {}\n"),
            Classified::Text {
                language: Language::Rust,
                lossy: false,
                ..
            }
        ));
        assert!(matches!(
            classify("a.bin2", b"abc\0def"),
            Classified::Skip(SkipReason::Binary)
        ));
        assert!(matches!(
            classify(
                "gen.go",
                b"// Code generated by protoc. DO NOT EDIT.\npackage x\n"
            ),
            Classified::Skip(SkipReason::Generated)
        ));
        let minified = format!("var a={};\n", "x".repeat(5000));
        assert!(matches!(
            classify("a.js", minified.as_bytes()),
            Classified::Skip(SkipReason::Minified)
        ));
        match classify("script", b"#!/usr/bin/env python3\nprint('\xff')\n") {
            Classified::Text {
                language,
                lossy,
                text,
            } => {
                assert_eq!(language, Language::Python);
                assert!(lossy);
                assert!(text.contains('\u{fffd}'));
            }
            Classified::Skip(r) => panic!("skipped: {r:?}"),
        }
    }

    #[test]
    fn skip_reason_names_round_trip() {
        for r in [
            SkipReason::Ignored,
            SkipReason::Vendored,
            SkipReason::Symlink,
            SkipReason::Submodule,
            SkipReason::Binary,
            SkipReason::TooLarge,
            SkipReason::Generated,
            SkipReason::Minified,
            SkipReason::BadPath,
            SkipReason::Unreadable,
        ] {
            assert_eq!(SkipReason::from_name(r.name()), Some(r));
        }
    }
}
