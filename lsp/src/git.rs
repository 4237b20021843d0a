//! The `origin` remote of the repository a file lives in, read from `.git/config`.
//!
//! The server uses it (`git_url`) to pick the indexed repository whose code it retrieves.
//! Credentials in the URL (`https://user:secret@host/...`) are removed before it is sent.

use std::path::{Path, PathBuf};

/// Config files larger than this are not read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The `origin` URL of the repository containing `file`, if there is one.
pub fn origin_url(file: &Path) -> Option<String> {
    let git_dir = file.ancestors().skip(1).find_map(git_dir_of)?;
    let common = std::fs::read_to_string(git_dir.join("commondir"))
        .ok()
        .map(|c| git_dir.join(c.trim()))
        .unwrap_or(git_dir);
    let config = common.join("config");
    if std::fs::metadata(&config).ok()?.len() > MAX_CONFIG_BYTES {
        return None;
    }
    let text = std::fs::read_to_string(config).ok()?;
    remote_url(&text, "origin").map(|u| without_credentials(&u))
}

/// The git directory of a work tree rooted at `dir`: `.git/`, or where a `.git` file
/// (`gitdir: ...`, used by worktrees and submodules) points.
fn git_dir_of(dir: &Path) -> Option<PathBuf> {
    let dot_git = dir.join(".git");
    let meta = std::fs::metadata(&dot_git).ok()?;
    if meta.is_dir() {
        return Some(dot_git);
    }
    if meta.len() > 4096 {
        return None;
    }
    let text = std::fs::read_to_string(&dot_git).ok()?;
    let target = text.trim().strip_prefix("gitdir:")?.trim();
    Some(dir.join(target))
}

/// The `url` of `[remote "NAME"]` in a git config text.
pub fn remote_url(config: &str, name: &str) -> Option<String> {
    let header = format!("[remote \"{name}\"]");
    let mut inside = false;
    for line in config.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == header;
            continue;
        }
        if !inside {
            continue;
        }
        if let Some((key, value)) = line.split_once('=')
            && key.trim().eq_ignore_ascii_case("url")
        {
            let value = value.trim().trim_matches('"');
            if !value.is_empty() {
                return Some(value.to_string());
            }
        }
    }
    None
}

/// Removes `user[:password]@` from a URL with a scheme.
fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_origin_of_a_repository() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join(".git")).expect("dirs");
        std::fs::create_dir_all(repo.join("src/pkg")).expect("dirs");
        std::fs::write(
            repo.join(".git/config"),
            "[core]\n\tbare = false\n[remote \"upstream\"]\n\turl = git@x:up.git\n\
             [remote \"origin\"]\n\turl = https://bob:s3cret@example.com/team/app.git\n\
             \tfetch = +refs/heads/*:refs/remotes/origin/*\n",
        )
        .expect("config");
        let file = repo.join("src/pkg/mod.py");
        assert_eq!(
            origin_url(&file).as_deref(),
            Some("https://example.com/team/app.git")
        );
        assert_eq!(origin_url(&dir.path().join("elsewhere.py")), None);
    }

    #[test]
    fn worktree_files_point_to_the_git_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real.git");
        std::fs::create_dir_all(&real).expect("dirs");
        std::fs::write(
            real.join("config"),
            "[remote \"origin\"]\nurl = git@host:a/b.git\n",
        )
        .expect("config");
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(&tree).expect("dirs");
        std::fs::write(tree.join(".git"), format!("gitdir: {}\n", real.display())).expect("file");
        assert_eq!(
            origin_url(&tree.join("x.rs")).as_deref(),
            Some("git@host:a/b.git")
        );
    }

    #[test]
    fn config_without_origin() {
        assert_eq!(remote_url("[remote \"other\"]\nurl = x\n", "origin"), None);
        assert_eq!(remote_url("", "origin"), None);
    }
}
