//! Diffs from git: what a pull request shows (`merge-base(base, head)..head`, renames
//! detected), and the new side's files read from the head commit.

use std::path::Path;

use git2::{DiffFindOptions, DiffFormat, DiffOptions, ObjectType, Oid, Repository};

use super::ReviewError;
use super::context::FileSource;

fn git_err(e: git2::Error) -> ReviewError {
    ReviewError::Git(e.message().to_string())
}

/// A diff between two refs of a repository, with access to the head's files.
pub struct RefDiff {
    /// The unified diff text.
    pub text: String,
    /// The head's files.
    pub files: GitFiles,
}

/// New-side files read from a commit's tree.
pub struct GitFiles {
    repo: Repository,
    tree: Oid,
}

impl FileSource for GitFiles {
    fn new_text(&self, path: &str) -> Option<String> {
        let tree = self.repo.find_tree(self.tree).ok()?;
        let entry = tree.get_path(Path::new(path)).ok()?;
        if entry.kind() != Some(ObjectType::Blob) {
            return None;
        }
        let blob = self.repo.find_blob(entry.id()).ok()?;
        if blob.is_binary() || blob.size() > 4 << 20 {
            return None;
        }
        String::from_utf8(blob.content().to_vec()).ok()
    }
}

/// Opens the repository at (or above) `dir`.
pub fn open(dir: &Path) -> Result<Repository, ReviewError> {
    Repository::discover(dir).map_err(|e| {
        ReviewError::Git(format!(
            "{} is not inside a git repository ({})",
            dir.display(),
            e.message()
        ))
    })
}

fn commit<'r>(repo: &'r Repository, spec: &str) -> Result<git2::Commit<'r>, ReviewError> {
    if spec.trim().is_empty() || spec.starts_with('-') {
        return Err(ReviewError::UnknownRef(spec.to_string()));
    }
    repo.revparse_single(spec)
        .and_then(|o| o.peel_to_commit())
        .map_err(|_| ReviewError::UnknownRef(spec.to_string()))
}

/// The diff a pull request from `head` into `base` shows: from their merge base to
/// `head`, with renames detected and 3 lines of context. Fails with
/// [`ReviewError::UnknownRef`] for a ref that does not resolve to a commit and with
/// [`ReviewError::TooLarge`] past `max_bytes`.
pub fn diff_refs(
    repo: Repository,
    base: &str,
    head: &str,
    max_bytes: usize,
) -> Result<RefDiff, ReviewError> {
    let (text, tree) = {
        let base_commit = commit(&repo, base)?;
        let head_commit = commit(&repo, head)?;
        let start = repo
            .merge_base(base_commit.id(), head_commit.id())
            .unwrap_or(base_commit.id());
        let old_tree = repo
            .find_commit(start)
            .and_then(|c| c.tree())
            .map_err(git_err)?;
        let new_tree = head_commit.tree().map_err(git_err)?;
        let mut opts = DiffOptions::new();
        opts.context_lines(3).ignore_submodules(true);
        let mut diff = repo
            .diff_tree_to_tree(Some(&old_tree), Some(&new_tree), Some(&mut opts))
            .map_err(git_err)?;
        let mut find = DiffFindOptions::new();
        find.renames(true);
        diff.find_similar(Some(&mut find)).map_err(git_err)?;
        let mut out: Vec<u8> = Vec::new();
        let mut over = false;
        let printed = diff.print(DiffFormat::Patch, |_, _, line| {
            if matches!(line.origin(), '+' | '-' | ' ') {
                out.push(line.origin() as u8);
            }
            out.extend_from_slice(line.content());
            if out.len() > max_bytes {
                over = true;
                return false;
            }
            true
        });
        if over {
            return Err(ReviewError::TooLarge {
                size: out.len(),
                limit: max_bytes,
            });
        }
        printed.map_err(git_err)?;
        let text = String::from_utf8_lossy(&out).into_owned();
        (text, new_tree.id())
    };
    Ok(RefDiff {
        text,
        files: GitFiles { repo, tree },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) {
        let ok = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "git {args:?}");
    }

    #[test]
    fn pull_request_diff_from_the_merge_base_with_renames_and_binary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        git(d, &["init", "-q", "-b", "main"]);
        std::fs::write(d.join("a.py"), "def f(x):\n    return x\n").expect("write");
        std::fs::write(d.join("old.py"), "VALUE = 1\nOTHER = 2\nTHIRD = 3\n").expect("write");
        git(d, &["add", "-A"]);
        git(d, &["commit", "-q", "-m", "one"]);
        git(d, &["checkout", "-q", "-b", "feature"]);
        std::fs::write(d.join("a.py"), "def f(x):\n    print(x)\n    return x\n").expect("write");
        git(d, &["mv", "old.py", "new.py"]);
        std::fs::write(d.join("logo.png"), [0u8, 1, 2, 255, 0]).expect("write");
        git(d, &["add", "-A"]);
        git(d, &["commit", "-q", "-m", "two"]);
        // main moves on: its change must not show in the pull request's diff.
        git(d, &["checkout", "-q", "main"]);
        std::fs::write(d.join("b.py"), "MAIN_ONLY = True\n").expect("write");
        git(d, &["add", "-A"]);
        git(d, &["commit", "-q", "-m", "three"]);

        let repo = open(d).expect("repo");
        let rd = diff_refs(repo, "main", "feature", 1 << 20).expect("diff");
        assert!(!rd.text.contains("MAIN_ONLY"), "{}", rd.text);
        let parsed = crate::diff::parse(&rd.text).expect("parses");
        let a = parsed.file("a.py").expect("a.py");
        assert_eq!(a.added_line(2), Some("    print(x)"));
        let renamed = parsed.file("new.py").expect("new.py");
        assert_eq!(renamed.status, crate::diff::FileStatus::Renamed);
        assert!(
            parsed.file("logo.png").is_some_and(|f| f.binary),
            "{}",
            rd.text
        );
        assert_eq!(
            rd.files.new_text("a.py").as_deref(),
            Some("def f(x):\n    print(x)\n    return x\n")
        );

        let repo = open(d).expect("repo");
        assert!(matches!(
            diff_refs(repo, "nope", "feature", 1 << 20),
            Err(ReviewError::UnknownRef(r)) if r == "nope"
        ));
        let repo = open(d).expect("repo");
        assert!(matches!(
            diff_refs(repo, "main", "feature", 10),
            Err(ReviewError::TooLarge { .. })
        ));
        assert!(matches!(
            open(&std::env::temp_dir().join("definitely/not/a/repo")),
            Err(ReviewError::Git(_))
        ));
    }
}
