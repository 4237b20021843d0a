//! A unified-diff parser for what CI pipelines send: `git diff` output (renames,
//! copies, mode changes, binary patches, quoted paths), plain `diff -u` output,
//! `git format-patch` mails (the preamble is skipped), CRLF line ends,
//! `\ No newline at end of file` markers and hunks of any size.
//!
//! The parser is linear in the input, never recurses and never panics; input that
//! is not a diff, or a hunk whose lines disagree with its header, is an error that
//! names the line.

mod parser;
mod paths;

use serde::Serialize;

use super::ReviewError;

/// What happened to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// The file is new.
    Added,
    /// The file was deleted.
    Deleted,
    /// The file's content (or only its mode) changed.
    Modified,
    /// The file was renamed (maybe with changes).
    Renamed,
    /// The file was copied (maybe with changes).
    Copied,
}

/// The kind of a line in a hunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// Unchanged line shown for context.
    Context,
    /// A line of the new side only.
    Added,
    /// A line of the old side only.
    Removed,
}

/// One line of a hunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLine {
    /// Context, added or removed.
    pub kind: LineKind,
    /// The text without the leading marker and without the line end (`\r` removed too).
    pub text: String,
    /// Line number on the old side (context and removed lines).
    pub old_line: Option<u32>,
    /// Line number on the new side (context and added lines).
    pub new_line: Option<u32>,
}

/// A hunk: a run of changed lines with context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hunk {
    /// First old-side line.
    pub old_start: u32,
    /// Old-side line count.
    pub old_count: u32,
    /// First new-side line.
    pub new_start: u32,
    /// New-side line count.
    pub new_count: u32,
    /// The text after the second `@@` (often the enclosing function), trimmed.
    pub section: String,
    /// The lines, in order.
    pub lines: Vec<DiffLine>,
}

/// The added lines among `lines`: (new-side line number, text).
pub fn added_lines(lines: &[DiffLine]) -> impl Iterator<Item = (u32, &str)> {
    lines.iter().filter_map(|l| match (l.kind, l.new_line) {
        (LineKind::Added, Some(n)) => Some((n, l.text.as_str())),
        _ => None,
    })
}

impl Hunk {
    /// The added lines: (new-side line number, text).
    pub fn added(&self) -> impl Iterator<Item = (u32, &str)> {
        added_lines(&self.lines)
    }

    /// Whether any line is added.
    pub fn has_additions(&self) -> bool {
        self.lines.iter().any(|l| l.kind == LineKind::Added)
    }
}

/// The changes to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDiff {
    /// Path before the change (`None` for a new file).
    pub old_path: Option<String>,
    /// Path after the change (`None` for a deleted file).
    pub new_path: Option<String>,
    /// What happened to the file.
    pub status: FileStatus,
    /// Old file mode (`100644`), when the diff says.
    pub old_mode: Option<String>,
    /// New file mode, when the diff says.
    pub new_mode: Option<String>,
    /// The change is to binary content (`Binary files … differ`, `GIT binary patch`).
    pub binary: bool,
    /// Text hunks.
    pub hunks: Vec<Hunk>,
}

impl FileDiff {
    /// The path findings refer to: the new path, else the old one.
    pub fn path(&self) -> &str {
        self.new_path
            .as_deref()
            .or(self.old_path.as_deref())
            .unwrap_or("")
    }

    /// Number of added lines.
    pub fn added_lines(&self) -> usize {
        self.hunks.iter().map(|h| h.added().count()).sum()
    }

    /// Number of removed lines.
    pub fn removed_lines(&self) -> usize {
        self.hunks
            .iter()
            .flat_map(|h| &h.lines)
            .filter(|l| l.kind == LineKind::Removed)
            .count()
    }

    /// The text of added line `line` (new side), if the diff added it.
    #[cfg(test)]
    pub fn added_line(&self, line: u32) -> Option<&str> {
        self.hunks
            .iter()
            .filter(|h| line >= h.new_start && line < h.new_start.saturating_add(h.new_count))
            .flat_map(|h| h.added())
            .find(|(n, _)| *n == line)
            .map(|(_, t)| t)
    }
}

/// A parsed diff.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Files in the order of the diff.
    pub files: Vec<FileDiff>,
}

impl Diff {
    /// Finds a file by its new (or old) path.
    #[cfg(test)]
    pub fn file(&self, path: &str) -> Option<&FileDiff> {
        self.files.iter().find(|f| f.path() == path)
    }
}

/// Parses a unified diff. Errors: the text has no file header at all (not a diff),
/// or a header or hunk is malformed (the error names the 1-based line).
pub fn parse(text: &str) -> Result<Diff, ReviewError> {
    let files = parser::Parser::new(text).run()?;
    for path in files
        .iter()
        .flat_map(|f| [&f.old_path, &f.new_path])
        .flatten()
    {
        check_relative_path(path)?;
    }
    if files.is_empty() {
        return Err(if text.trim().is_empty() {
            ReviewError::EmptyDiff
        } else {
            ReviewError::MalformedDiff {
                line: 1,
                reason: "no `diff --git` or `---`/`+++` file header: this is not a unified diff"
                    .into(),
            }
        });
    }
    Ok(Diff { files })
}

/// Refuses a path that could name a file outside the repository under review: an
/// absolute path (`/etc/passwd`, `C:\x`, `\\host\share`), a `..` component, or a NUL.
/// A diff of a repository only ever names repository-relative paths.
pub fn check_relative_path(path: &str) -> Result<(), ReviewError> {
    let unsafe_path = |reason: &str| ReviewError::UnsafePath {
        path: path.to_string(),
        reason: reason.to_string(),
    };
    if path.contains('\0') {
        return Err(unsafe_path("it contains a NUL byte"));
    }
    let bytes = path.as_bytes();
    let drive = bytes.len() >= 2
        && bytes[0].is_ascii_alphabetic()
        && bytes[1] == b':'
        && matches!(bytes.get(2), None | Some(b'/' | b'\\'));
    if path.starts_with('/') || path.starts_with('\\') || drive {
        return Err(unsafe_path("it is absolute"));
    }
    if path.split(['/', '\\']).any(|c| c == "..") {
        return Err(unsafe_path("it leaves the repository (`..`)"));
    }
    Ok(())
}

/// At most `n` characters of `s`.
pub fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> FileDiff {
        let d = parse(text).expect("parses");
        assert_eq!(d.files.len(), 1, "{d:?}");
        d.files.into_iter().next().expect("one file")
    }

    #[test]
    fn modified_file_with_line_numbers() {
        let f = one(
            "diff --git a/src/x.py b/src/x.py\nindex 1..2 100644\n--- a/src/x.py\n+++ b/src/x.py\n@@ -10,3 +10,4 @@ def f():\n     a = 1\n-    b = 2\n+    b = 3\n+    c = 4\n     return a\n",
        );
        assert_eq!(f.path(), "src/x.py");
        assert_eq!(f.status, FileStatus::Modified);
        let h = &f.hunks[0];
        assert_eq!(h.section, "def f():");
        let added: Vec<_> = h.added().collect();
        assert_eq!(added, vec![(11, "    b = 3"), (12, "    c = 4")]);
        assert_eq!(f.added_line(12), Some("    c = 4"));
        assert_eq!(f.added_line(10), None);
        assert_eq!(f.removed_lines(), 1);
        assert_eq!(h.lines[4].new_line, Some(13));
        assert_eq!(h.lines[4].old_line, Some(12));
    }

    #[test]
    fn renames_copies_modes_new_deleted_and_binary() {
        let text = "\
diff --git a/old name.rs b/new name.rs
similarity index 90%
rename from old name.rs
rename to new name.rs
index 1..2 100644
--- a/old name.rs
+++ b/new name.rs
@@ -1 +1 @@
-fn a() {}
+fn b() {}
diff --git a/run.sh b/run.sh
old mode 100644
new mode 100755
diff --git a/img.png b/img.png
new file mode 100644
index 0000000..1234567
Binary files /dev/null and b/img.png differ
diff --git a/gone.txt b/gone.txt
deleted file mode 100644
index 1..0
--- a/gone.txt
+++ /dev/null
@@ -1,2 +0,0 @@
-x
-y
diff --git a/blob.bin b/blob.bin
index 1..2 100644
GIT binary patch
literal 12
TcmZ?wbhEHbG-qI7U|<9Q1ONa4

literal 0
HcmV?d00001

diff --git a/a.txt b/c.txt
similarity index 100%
copy from a.txt
copy to c.txt
diff --git a/new.py b/new.py
new file mode 100644
--- /dev/null
+++ b/new.py
@@ -0,0 +1,2 @@
+import os
+print(os.getcwd())
";
        let d = parse(text).expect("parses");
        let names: Vec<_> = d.files.iter().map(|f| (f.path(), f.status)).collect();
        assert_eq!(
            names,
            vec![
                ("new name.rs", FileStatus::Renamed),
                ("run.sh", FileStatus::Modified),
                ("img.png", FileStatus::Added),
                ("gone.txt", FileStatus::Deleted),
                ("blob.bin", FileStatus::Modified),
                ("c.txt", FileStatus::Copied),
                ("new.py", FileStatus::Added),
            ]
        );
        assert_eq!(d.files[0].old_path.as_deref(), Some("old name.rs"));
        assert_eq!(d.files[1].new_mode.as_deref(), Some("100755"));
        assert!(d.files[2].binary && d.files[4].binary);
        assert!(d.files[3].new_path.is_none());
        assert_eq!(d.files[6].added_lines(), 2);
        assert_eq!(d.files[6].added_line(2), Some("print(os.getcwd())"));
    }

    #[test]
    fn crlf_no_newline_and_quoted_paths() {
        let text = "diff --git \"a/dir/t\\303\\251st\\tx.c\" \"b/dir/t\\303\\251st\\tx.c\"\r\n--- \"a/dir/t\\303\\251st\\tx.c\"\r\n+++ \"b/dir/t\\303\\251st\\tx.c\"\r\n@@ -1,2 +1,2 @@\r\n int a;\r\n-int b;\r\n\\ No newline at end of file\r\n+int c;\r\n\\ No newline at end of file\r\n";
        let f = one(text);
        assert_eq!(f.path(), "dir/tést\tx.c");
        assert_eq!(f.added_line(2), Some("int c;"));
        assert_eq!(f.hunks[0].lines.len(), 3);
    }

    #[test]
    fn plain_unified_diff_with_timestamps_and_mail_preamble() {
        let text = "From 123 Mon Sep 17 00:00:00 2001\nSubject: [PATCH] fix\n\n---\n a.c | 2 +-\n\n--- a.c\t2024-01-01 00:00:00\n+++ a.c\t2024-01-02 00:00:00\n@@ -1 +1 @@\n-x\n+y\n-- \n2.40.0\n";
        let f = one(text);
        assert_eq!(f.path(), "a.c");
        assert_eq!(f.added_line(1), Some("y"));
    }

    #[test]
    fn empty_context_line_without_space_is_accepted() {
        let f = one("--- a/x\n+++ b/x\n@@ -1,3 +1,3 @@\n a\n\n-b\n+c\n");
        assert_eq!(f.path(), "x");
        assert_eq!(f.added_line(3), Some("c"));
    }

    #[test]
    fn bad_input_is_an_error_with_a_line() {
        assert!(matches!(parse(""), Err(ReviewError::EmptyDiff)));
        assert!(matches!(parse("  \n\n"), Err(ReviewError::EmptyDiff)));
        assert!(matches!(
            parse("hello, this is not a diff\n"),
            Err(ReviewError::MalformedDiff { line: 1, .. })
        ));
        // Hunk longer than its header says.
        match parse("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n+c\n") {
            Err(ReviewError::MalformedDiff { line, .. }) => assert_eq!(line, 6),
            other => panic!("{other:?}"),
        }
        // Truncated hunk.
        assert!(matches!(
            parse("--- a/x\n+++ b/x\n@@ -1,3 +1,3 @@\n a\n"),
            Err(ReviewError::MalformedDiff { .. })
        ));
        // Garbage inside a hunk.
        assert!(matches!(
            parse("--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n a\n*b\n"),
            Err(ReviewError::MalformedDiff { line: 5, .. })
        ));
        assert!(matches!(
            parse("@@ -1 +1 @@\n-a\n+b\n"),
            Err(ReviewError::MalformedDiff { line: 1, .. })
        ));
        assert!(matches!(
            parse("--- a/x\n+++ b/x\n@@ -1,zz +1 @@\n"),
            Err(ReviewError::MalformedDiff { line: 3, .. })
        ));
    }

    #[test]
    fn huge_hunk_is_linear_and_numbered() {
        let n = 200_000u32;
        let mut text = format!("--- a/big.txt\n+++ b/big.txt\n@@ -0,0 +1,{n} @@\n");
        for k in 0..n {
            text.push_str(&format!("+line {k}\n"));
        }
        let f = one(&text);
        assert_eq!(f.added_lines(), n as usize);
        assert_eq!(f.added_line(n), Some(format!("line {}", n - 1).as_str()));
    }

    #[test]
    fn never_panics_on_odd_bytes() {
        for text in [
            "diff --git \n",
            "diff --git \"a/\\",
            "--- \"\n+++ \"\n",
            "--- a\n+++ b\n@@ -1 +1 @@",
            "--- a\n+++ b\n@@ -4294967295,1 +4294967295,1 @@\n-x\n+y\n",
            "diff --git a/é b/é\n--- a/é\n+++ b/é\n@@ -1 +1 @@\n-\u{0}\n+\u{feff}\n",
        ] {
            let _ = parse(text);
        }
    }

    #[test]
    fn paths_outside_the_repository_are_refused_with_their_name() {
        for path in [
            "../b/x.py",
            "../../../../etc/passwd",
            "/etc/passwd",
            "src/../../x.py",
            "C:/Windows/win.ini",
            "..\\evil.py",
        ] {
            let text = format!(
                "diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1 +1,2 @@\n x\n+y\n"
            );
            match parse(&text) {
                Err(e @ ReviewError::UnsafePath { .. }) => {
                    assert!(e.to_string().contains(&format!("{path:?}")), "{e}")
                }
                other => panic!("{path}: {other:?}"),
            }
        }
        // Names that merely contain dots stay valid.
        for path in ["a..b/x.py", ".github/ci.yml", "dir/..hidden", "a:b.txt"] {
            let text = format!(
                "diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1 +1,2 @@\n x\n+y\n"
            );
            assert!(parse(&text).is_ok(), "{path}");
        }
    }
}
