//! A unified-diff parser for what CI pipelines send: `git diff` output (renames,
//! copies, mode changes, binary patches, quoted paths), plain `diff -u` output,
//! `git format-patch` mails (the preamble is skipped), CRLF line ends,
//! `\ No newline at end of file` markers and hunks of any size.
//!
//! The parser is linear in the input, never recurses and never panics; input that
//! is not a diff, or a hunk whose lines disagree with its header, is an error that
//! names the line.

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

/// A file being assembled.
struct Building {
    file: FileDiff,
    /// Paths from `diff --git a/X b/Y`, used when no `---`/`+++` or rename lines say better.
    git_paths: Option<(String, String)>,
    saw_minus: bool,
    saw_plus: bool,
    /// A `---`/`+++` pair was read for this file.
    saw_pair: bool,
}

impl Building {
    fn new() -> Self {
        Self {
            file: FileDiff {
                old_path: None,
                new_path: None,
                status: FileStatus::Modified,
                old_mode: None,
                new_mode: None,
                binary: false,
                hunks: Vec::new(),
            },
            git_paths: None,
            saw_minus: false,
            saw_plus: false,
            saw_pair: false,
        }
    }

    fn finish(mut self) -> FileDiff {
        if let Some((a, b)) = self.git_paths.take() {
            if self.file.old_path.is_none()
                && !self.saw_minus
                && self.file.status != FileStatus::Added
            {
                self.file.old_path = Some(a);
            }
            if self.file.new_path.is_none()
                && !self.saw_plus
                && self.file.status != FileStatus::Deleted
            {
                self.file.new_path = Some(b);
            }
        }
        if self.file.status == FileStatus::Modified {
            if self.file.old_path.is_none() && self.file.new_path.is_some() {
                self.file.status = FileStatus::Added;
            } else if self.file.new_path.is_none() && self.file.old_path.is_some() {
                self.file.status = FileStatus::Deleted;
            }
        }
        self.file
    }
}

/// Removes one trailing `\r`.
fn strip_cr(line: &str) -> &str {
    line.strip_suffix('\r').unwrap_or(line)
}

/// Decodes a path from a header: C-quoted (`"a/x\tb"`) or plain; a tab and what follows
/// (a timestamp) are dropped from plain paths; `/dev/null` is `None`.
fn header_path(raw: &str, strip_prefix: bool) -> Result<Option<String>, String> {
    let raw = raw.trim_end();
    let path = if let Some(rest) = raw.strip_prefix('"') {
        let (p, _) = unquote(rest)?;
        p
    } else {
        let p = raw.split('\t').next().unwrap_or(raw);
        p.trim_end().to_string()
    };
    if path == "/dev/null" {
        return Ok(None);
    }
    if path.is_empty() {
        return Err("empty path".into());
    }
    let path = if strip_prefix {
        strip_ab(&path).to_string()
    } else {
        path
    };
    Ok(Some(path))
}

/// `a/x` → `x`, `b/x` → `x`; other paths unchanged.
fn strip_ab(path: &str) -> &str {
    path.strip_prefix("a/")
        .or_else(|| path.strip_prefix("b/"))
        .unwrap_or(path)
}

/// Reads a C-quoted string after its opening quote; returns it and the rest after the
/// closing quote.
fn unquote(s: &str) -> Result<(String, &str), String> {
    let mut bytes = Vec::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                return Ok((text, &s[i + 1..]));
            }
            '\\' => {
                let Some((_, e)) = chars.next() else {
                    return Err("unterminated escape in quoted path".into());
                };
                match e {
                    'n' => bytes.push(b'\n'),
                    't' => bytes.push(b'\t'),
                    'r' => bytes.push(b'\r'),
                    'a' => bytes.push(7),
                    'b' => bytes.push(8),
                    'f' => bytes.push(12),
                    'v' => bytes.push(11),
                    '\\' => bytes.push(b'\\'),
                    '"' => bytes.push(b'"'),
                    '0'..='7' => {
                        let mut value = u32::from(e as u8 - b'0');
                        for _ in 0..2 {
                            match chars.clone().next() {
                                Some((_, d @ '0'..='7')) => {
                                    value = value * 8 + u32::from(d as u8 - b'0');
                                    chars.next();
                                }
                                _ => break,
                            }
                        }
                        bytes.push(u8::try_from(value).unwrap_or(b'?'));
                    }
                    other => {
                        let mut buf = [0u8; 4];
                        bytes.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
            other => {
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    Err("unterminated quoted path".into())
}

/// Splits `a/X b/Y` of a `diff --git` line. With unquoted paths containing spaces
/// the split is ambiguous; the halves are taken as equal when they can be.
fn git_header_paths(rest: &str) -> Option<(String, String)> {
    let rest = rest.trim_end();
    if let Some(q) = rest.strip_prefix('"') {
        let (a, tail) = unquote(q).ok()?;
        let tail = tail.trim_start();
        let b = if let Some(q2) = tail.strip_prefix('"') {
            unquote(q2).ok()?.0
        } else {
            tail.to_string()
        };
        return Some((strip_ab(&a).to_string(), strip_ab(&b).to_string()));
    }
    if let Some(pos) = rest.rfind(" \"") {
        let a = &rest[..pos];
        let (b, _) = unquote(&rest[pos + 2..]).ok()?;
        return Some((strip_ab(a).to_string(), strip_ab(&b).to_string()));
    }
    // Same path on both sides: "a/P b/P" has length 2 * (len(P) + 2) + 1.
    if rest.len() % 2 == 1 {
        let half = rest.len() / 2;
        if rest.is_char_boundary(half) && rest.is_char_boundary(half + 1) {
            let (a, b) = (&rest[..half], &rest[half + 1..]);
            if strip_ab(a) == strip_ab(b) && rest.as_bytes().get(half) == Some(&b' ') {
                return Some((strip_ab(a).to_string(), strip_ab(b).to_string()));
            }
        }
    }
    let pos = rest.find(" b/").or_else(|| rest.rfind(' '))?;
    Some((
        strip_ab(&rest[..pos]).to_string(),
        strip_ab(&rest[pos + 1..]).to_string(),
    ))
}

/// Parses `@@ -a,b +c,d @@ section`.
fn hunk_header(line: &str) -> Option<(u32, u32, u32, u32, String)> {
    let rest = line.strip_prefix("@@ ")?;
    let end = rest.find(" @@")?;
    let ranges = &rest[..end];
    let section = rest[end + 3..].trim().to_string();
    let mut parts = ranges.split_whitespace();
    let old = parts.next()?.strip_prefix('-')?;
    let new = parts.next()?.strip_prefix('+')?;
    if parts.next().is_some() {
        return None;
    }
    let range = |r: &str| -> Option<(u32, u32)> {
        match r.split_once(',') {
            Some((s, c)) => Some((s.parse().ok()?, c.parse().ok()?)),
            None => Some((r.parse().ok()?, 1)),
        }
    };
    let (os, oc) = range(old)?;
    let (ns, nc) = range(new)?;
    Some((os, oc, ns, nc, section))
}

/// Parses a unified diff. Errors: the text has no file header at all (not a diff),
/// or a header or hunk is malformed (the error names the 1-based line).
pub fn parse(text: &str) -> Result<Diff, ReviewError> {
    let malformed = |line: usize, reason: String| ReviewError::MalformedDiff { line, reason };
    let lines: Vec<&str> = text.split('\n').collect();
    // A final empty element after the last '\n' is not a line.
    let count = if text.ends_with('\n') {
        lines.len().saturating_sub(1)
    } else {
        lines.len()
    };
    let mut files: Vec<FileDiff> = Vec::new();
    let mut current: Option<Building> = None;
    let mut i = 0usize;
    while i < count {
        let raw = lines[i];
        let line = strip_cr(raw);
        let lineno = i + 1;
        if let Some(rest) = line.strip_prefix("diff --git ") {
            if let Some(b) = current.take() {
                files.push(b.finish());
            }
            let mut b = Building::new();
            b.git_paths = git_header_paths(rest);
            if b.git_paths.is_none() {
                return Err(malformed(
                    lineno,
                    format!("cannot read the paths of {line:?}"),
                ));
            }
            current = Some(b);
            i += 1;
            continue;
        }
        if line.starts_with("--- ") && i + 1 < count && strip_cr(lines[i + 1]).starts_with("+++ ") {
            // `---`/`+++` pair: inside a git file header, or a plain unified diff's file.
            let in_git_header = current
                .as_ref()
                .is_some_and(|b| b.git_paths.is_some() && b.file.hunks.is_empty() && !b.saw_pair);
            if !in_git_header {
                if let Some(b) = current.take() {
                    files.push(b.finish());
                }
                current = Some(Building::new());
            }
            let strip = in_git_header || looks_prefixed(&line[4..], strip_cr(&lines[i + 1][4..]));
            let old = header_path(&line[4..], strip).map_err(|r| malformed(lineno, r))?;
            let new = header_path(&strip_cr(lines[i + 1])[4..], strip)
                .map_err(|r| malformed(lineno + 1, r))?;
            if let Some(b) = current.as_mut() {
                b.saw_minus = true;
                b.saw_plus = true;
                b.saw_pair = true;
                match (&old, &new) {
                    (None, Some(_)) => b.file.status = FileStatus::Added,
                    (Some(_), None) => b.file.status = FileStatus::Deleted,
                    _ => {}
                }
                if old.is_some() || b.file.status == FileStatus::Added {
                    b.file.old_path = old;
                }
                if new.is_some() || b.file.status == FileStatus::Deleted {
                    b.file.new_path = new;
                }
            }
            i += 2;
            continue;
        }
        if line.starts_with("@@ ") {
            let Some(b) = current.as_mut() else {
                return Err(malformed(lineno, "a hunk before any file header".into()));
            };
            let (os, oc, ns, nc, section) = hunk_header(line)
                .ok_or_else(|| malformed(lineno, format!("bad hunk header {line:?}")))?;
            let mut hunk = Hunk {
                old_start: os,
                old_count: oc,
                new_start: ns,
                new_count: nc,
                section,
                lines: Vec::new(),
            };
            let (mut old_left, mut new_left) = (oc, nc);
            let (mut old_no, mut new_no) = (os, ns);
            i += 1;
            while i < count && (old_left > 0 || new_left > 0) {
                let body = strip_cr(lines[i]);
                let (kind, text) = match body.as_bytes().first() {
                    Some(b' ') => (LineKind::Context, &body[1..]),
                    Some(b'+') => (LineKind::Added, &body[1..]),
                    Some(b'-') => (LineKind::Removed, &body[1..]),
                    Some(b'\\') => {
                        i += 1;
                        continue;
                    }
                    // Some tools strip the space of empty context lines.
                    None => (LineKind::Context, ""),
                    Some(_) => {
                        return Err(malformed(
                            i + 1,
                            format!(
                                "hunk at line {lineno} expects {old_left} more old and {new_left} more new lines, found {:?}",
                                truncate(body, 60)
                            ),
                        ));
                    }
                };
                let (old_line, new_line) = match kind {
                    LineKind::Context => {
                        if old_left == 0 || new_left == 0 {
                            return Err(malformed(
                                i + 1,
                                format!(
                                    "hunk at line {lineno} has more lines than its header says"
                                ),
                            ));
                        }
                        old_left -= 1;
                        new_left -= 1;
                        let r = (Some(old_no), Some(new_no));
                        old_no = old_no.saturating_add(1);
                        new_no = new_no.saturating_add(1);
                        r
                    }
                    LineKind::Added => {
                        if new_left == 0 {
                            return Err(malformed(
                                i + 1,
                                format!(
                                    "hunk at line {lineno} has more added lines than its header says"
                                ),
                            ));
                        }
                        new_left -= 1;
                        let r = (None, Some(new_no));
                        new_no = new_no.saturating_add(1);
                        r
                    }
                    LineKind::Removed => {
                        if old_left == 0 {
                            return Err(malformed(
                                i + 1,
                                format!(
                                    "hunk at line {lineno} has more removed lines than its header says"
                                ),
                            ));
                        }
                        old_left -= 1;
                        let r = (Some(old_no), None);
                        old_no = old_no.saturating_add(1);
                        r
                    }
                };
                hunk.lines.push(DiffLine {
                    kind,
                    text: text.to_string(),
                    old_line,
                    new_line,
                });
                i += 1;
            }
            if old_left > 0 || new_left > 0 {
                return Err(malformed(
                    count.max(1),
                    format!(
                        "the diff ends inside the hunk at line {lineno} ({old_left} old and {new_left} new lines missing)"
                    ),
                ));
            }
            // A "\ No newline at end of file" right after the hunk.
            while i < count && strip_cr(lines[i]).starts_with('\\') {
                i += 1;
            }
            // An added or removed line right after a complete hunk: the header undercounts.
            if i < count {
                let next = strip_cr(lines[i]);
                let header = next.starts_with("--- ") || next.starts_with("+++ ");
                if (next.starts_with('+') || next.starts_with('-')) && !header && next != "-- " {
                    return Err(malformed(
                        i + 1,
                        format!("hunk at line {lineno} has more lines than its header says"),
                    ));
                }
            }
            b.file.hunks.push(hunk);
            continue;
        }
        if let Some(b) = current.as_mut()
            && b.git_paths.is_some()
            && b.file.hunks.is_empty()
        {
            // Extended git headers.
            if let Some(m) = line.strip_prefix("old mode ") {
                b.file.old_mode = Some(m.trim().to_string());
            } else if let Some(m) = line.strip_prefix("new mode ") {
                b.file.new_mode = Some(m.trim().to_string());
            } else if let Some(m) = line.strip_prefix("new file mode ") {
                b.file.status = FileStatus::Added;
                b.file.new_mode = Some(m.trim().to_string());
                b.file.old_path = None;
                b.saw_minus = true;
            } else if let Some(m) = line.strip_prefix("deleted file mode ") {
                b.file.status = FileStatus::Deleted;
                b.file.old_mode = Some(m.trim().to_string());
                b.file.new_path = None;
                b.saw_plus = true;
            } else if let Some(p) = line.strip_prefix("rename from ") {
                b.file.status = FileStatus::Renamed;
                b.file.old_path = header_path(p, false).map_err(|r| malformed(lineno, r))?;
            } else if let Some(p) = line.strip_prefix("rename to ") {
                b.file.status = FileStatus::Renamed;
                b.file.new_path = header_path(p, false).map_err(|r| malformed(lineno, r))?;
            } else if let Some(p) = line.strip_prefix("copy from ") {
                b.file.status = FileStatus::Copied;
                b.file.old_path = header_path(p, false).map_err(|r| malformed(lineno, r))?;
            } else if let Some(p) = line.strip_prefix("copy to ") {
                b.file.status = FileStatus::Copied;
                b.file.new_path = header_path(p, false).map_err(|r| malformed(lineno, r))?;
            } else if line.starts_with("Binary files ") && line.ends_with(" differ") {
                b.file.binary = true;
            } else if line == "GIT binary patch" {
                b.file.binary = true;
                // Skip the base85 blocks: everything up to the next file header.
                i += 1;
                while i < count && !strip_cr(lines[i]).starts_with("diff --git ") {
                    i += 1;
                }
                continue;
            }
            // `index …`, `similarity index …` and the like need nothing.
        }
        // Anything else (a mail preamble, `index` lines, trailing signatures) is skipped.
        i += 1;
    }
    if let Some(b) = current.take() {
        files.push(b.finish());
    }
    for file in &files {
        for path in [&file.old_path, &file.new_path].into_iter().flatten() {
            check_relative_path(path)?;
        }
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

/// Whether a plain diff's `---`/`+++` paths carry git's `a/` `b/` prefixes.
fn looks_prefixed(old: &str, new: &str) -> bool {
    let o = old.trim_start_matches('"');
    let n = new.trim_start_matches('"');
    (o.starts_with("a/") || o.starts_with("/dev/null"))
        && (n.starts_with("b/") || n.starts_with("/dev/null"))
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
