//! The line-by-line parser behind [`super::parse`]: one method per kind of line
//! (file header, `---`/`+++` pair, extended git header, hunk header, hunk content).

use super::paths::{git_header_paths, header_path, looks_prefixed};
use super::{DiffLine, FileDiff, FileStatus, Hunk, LineKind, truncate};
use crate::ReviewError;

/// A malformed-diff error at 1-based line `line`.
fn malformed(line: usize, reason: String) -> ReviewError {
    ReviewError::MalformedDiff { line, reason }
}

/// A file being assembled.
struct Building {
    /// The file so far.
    file: FileDiff,
    /// Paths from `diff --git a/X b/Y`, used when no `---`/`+++` or rename lines say better.
    git_paths: Option<(String, String)>,
    /// The old side is settled (a `---` line or `new file mode`).
    saw_minus: bool,
    /// The new side is settled (a `+++` line or `deleted file mode`).
    saw_plus: bool,
    /// A `---`/`+++` pair was read for this file.
    saw_pair: bool,
}

impl Building {
    /// An empty file, `Modified` until its lines say otherwise.
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

    /// The file: paths from the `diff --git` line where nothing said better, and
    /// `Added`/`Deleted` when only one side has a path.
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

    /// Reads an `old mode`, `new mode`, `new file mode` or `deleted file mode` line;
    /// whether it was one.
    fn mode_line(&mut self, line: &str) -> bool {
        if let Some(m) = line.strip_prefix("old mode ") {
            self.file.old_mode = Some(m.trim().to_string());
        } else if let Some(m) = line.strip_prefix("new mode ") {
            self.file.new_mode = Some(m.trim().to_string());
        } else if let Some(m) = line.strip_prefix("new file mode ") {
            self.file.status = FileStatus::Added;
            self.file.new_mode = Some(m.trim().to_string());
            self.file.old_path = None;
            self.saw_minus = true;
        } else if let Some(m) = line.strip_prefix("deleted file mode ") {
            self.file.status = FileStatus::Deleted;
            self.file.old_mode = Some(m.trim().to_string());
            self.file.new_path = None;
            self.saw_plus = true;
        } else {
            return false;
        }
        true
    }

    /// Reads a `rename from/to` or `copy from/to` line; whether it was one. The error
    /// says why its path cannot be read.
    fn rename_or_copy_line(&mut self, line: &str) -> Result<bool, String> {
        let (status, old, path) = if let Some(p) = line.strip_prefix("rename from ") {
            (FileStatus::Renamed, true, p)
        } else if let Some(p) = line.strip_prefix("rename to ") {
            (FileStatus::Renamed, false, p)
        } else if let Some(p) = line.strip_prefix("copy from ") {
            (FileStatus::Copied, true, p)
        } else if let Some(p) = line.strip_prefix("copy to ") {
            (FileStatus::Copied, false, p)
        } else {
            return Ok(false);
        };
        self.file.status = status;
        let path = header_path(path, false)?;
        if old {
            self.file.old_path = path;
        } else {
            self.file.new_path = path;
        }
        Ok(true)
    }

    /// Applies a `---`/`+++` pair's paths (`None`: `/dev/null`).
    fn set_pair(&mut self, old: Option<String>, new: Option<String>) {
        self.saw_minus = true;
        self.saw_plus = true;
        self.saw_pair = true;
        match (&old, &new) {
            (None, Some(_)) => self.file.status = FileStatus::Added,
            (Some(_), None) => self.file.status = FileStatus::Deleted,
            _ => {}
        }
        if old.is_some() || self.file.status == FileStatus::Added {
            self.file.old_path = old;
        }
        if new.is_some() || self.file.status == FileStatus::Deleted {
            self.file.new_path = new;
        }
    }
}

/// Removes one trailing `\r`.
fn strip_cr(line: &str) -> &str {
    line.strip_suffix('\r').unwrap_or(line)
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

/// What a line inside a hunk is.
enum Content<'a> {
    /// A context, added or removed line and its text.
    Line(LineKind, &'a str),
    /// `\ No newline at end of file`.
    NoNewline,
    /// Anything else: the hunk is broken.
    Invalid,
}

/// Classifies a line inside a hunk (without its line end).
fn content(body: &str) -> Content<'_> {
    match body.as_bytes().first() {
        Some(b' ') => Content::Line(LineKind::Context, &body[1..]),
        Some(b'+') => Content::Line(LineKind::Added, &body[1..]),
        Some(b'-') => Content::Line(LineKind::Removed, &body[1..]),
        Some(b'\\') => Content::NoNewline,
        // Some tools strip the space of empty context lines.
        None => Content::Line(LineKind::Context, ""),
        Some(_) => Content::Invalid,
    }
}

/// The line numbers of a hunk being read: what its header still promises and the
/// next number on each side.
struct Numbering {
    /// Old-side lines still to come.
    old_left: u32,
    /// New-side lines still to come.
    new_left: u32,
    /// Number of the next old-side line.
    old_no: u32,
    /// Number of the next new-side line.
    new_no: u32,
}

impl Numbering {
    /// The numbering promised by `hunk`'s header.
    fn of(hunk: &Hunk) -> Self {
        Self {
            old_left: hunk.old_count,
            new_left: hunk.new_count,
            old_no: hunk.old_start,
            new_no: hunk.new_start,
        }
    }

    /// Whether the header promises more lines.
    fn open(&self) -> bool {
        self.old_left > 0 || self.new_left > 0
    }

    /// Numbers a line of `kind`: (old line, new line). The error names what the
    /// header has no room for (`lines`, `added lines`, `removed lines`).
    fn take(&mut self, kind: LineKind) -> Result<(Option<u32>, Option<u32>), &'static str> {
        let (old, new) = match kind {
            LineKind::Context if self.old_left == 0 || self.new_left == 0 => return Err("lines"),
            LineKind::Added if self.new_left == 0 => return Err("added lines"),
            LineKind::Removed if self.old_left == 0 => return Err("removed lines"),
            LineKind::Context => (true, true),
            LineKind::Added => (false, true),
            LineKind::Removed => (true, false),
        };
        let old_line = old.then(|| {
            self.old_left -= 1;
            let n = self.old_no;
            self.old_no = n.saturating_add(1);
            n
        });
        let new_line = new.then(|| {
            self.new_left -= 1;
            let n = self.new_no;
            self.new_no = n.saturating_add(1);
            n
        });
        Ok((old_line, new_line))
    }
}

/// Reads a diff line by line into files.
pub(super) struct Parser<'t> {
    /// The lines, split at `\n` (a `\r` before it is still there).
    lines: Vec<&'t str>,
    /// How many of `lines` count: a final empty element after the last `\n` does not.
    count: usize,
    /// Index of the next line to read.
    i: usize,
    /// The files read so far.
    files: Vec<FileDiff>,
    /// The file being read.
    current: Option<Building>,
}

impl<'t> Parser<'t> {
    /// A parser at the start of `text`.
    pub(super) fn new(text: &'t str) -> Self {
        let lines: Vec<&str> = text.split('\n').collect();
        let count = if text.ends_with('\n') {
            lines.len().saturating_sub(1)
        } else {
            lines.len()
        };
        Self {
            lines,
            count,
            i: 0,
            files: Vec::new(),
            current: None,
        }
    }

    /// Reads every line; the files in the order of the diff.
    pub(super) fn run(mut self) -> Result<Vec<FileDiff>, ReviewError> {
        while self.i < self.count {
            self.step()?;
        }
        self.finish_file();
        Ok(self.files)
    }

    /// Line `i` without its `\r`.
    fn line(&self, i: usize) -> &'t str {
        strip_cr(self.lines[i])
    }

    /// Ends the file being read, if any.
    fn finish_file(&mut self) {
        if let Some(b) = self.current.take() {
            self.files.push(b.finish());
        }
    }

    /// Reads what starts at the current line.
    fn step(&mut self) -> Result<(), ReviewError> {
        let line = self.line(self.i);
        if let Some(rest) = line.strip_prefix("diff --git ") {
            return self.git_header(line, rest);
        }
        if line.starts_with("--- ")
            && self.i + 1 < self.count
            && self.line(self.i + 1).starts_with("+++ ")
        {
            return self.file_pair();
        }
        if line.starts_with("@@ ") {
            return self.hunk();
        }
        if self
            .current
            .as_ref()
            .is_some_and(|b| b.git_paths.is_some() && b.file.hunks.is_empty())
        {
            return self.extended_header(line);
        }
        // Anything else (a mail preamble, `index` lines, trailing signatures) is skipped.
        self.i += 1;
        Ok(())
    }

    /// `diff --git a/X b/Y`: a new file starts.
    fn git_header(&mut self, line: &str, rest: &str) -> Result<(), ReviewError> {
        self.finish_file();
        let mut b = Building::new();
        b.git_paths = git_header_paths(rest);
        if b.git_paths.is_none() {
            return Err(malformed(
                self.i + 1,
                format!("cannot read the paths of {line:?}"),
            ));
        }
        self.current = Some(b);
        self.i += 1;
        Ok(())
    }

    /// A `---`/`+++` pair: inside a git file header, or a plain unified diff's file.
    fn file_pair(&mut self) -> Result<(), ReviewError> {
        let lineno = self.i + 1;
        let line = self.line(self.i);
        let in_git_header = self
            .current
            .as_ref()
            .is_some_and(|b| b.git_paths.is_some() && b.file.hunks.is_empty() && !b.saw_pair);
        if !in_git_header {
            self.finish_file();
            self.current = Some(Building::new());
        }
        let plus = self.lines[self.i + 1];
        let strip = in_git_header || looks_prefixed(&line[4..], strip_cr(&plus[4..]));
        let old = header_path(&line[4..], strip).map_err(|r| malformed(lineno, r))?;
        let new = header_path(&strip_cr(plus)[4..], strip).map_err(|r| malformed(lineno + 1, r))?;
        if let Some(b) = self.current.as_mut() {
            b.set_pair(old, new);
        }
        self.i += 2;
        Ok(())
    }

    /// A line of a git file's extended header (modes, renames, copies, binary).
    fn extended_header(&mut self, line: &str) -> Result<(), ReviewError> {
        let lineno = self.i + 1;
        if line == "GIT binary patch" {
            self.mark_binary();
            // Skip the base85 blocks: everything up to the next file header.
            self.i += 1;
            while self.i < self.count && !self.line(self.i).starts_with("diff --git ") {
                self.i += 1;
            }
            return Ok(());
        }
        if let Some(b) = self.current.as_mut()
            && !b.mode_line(line)
            && !b
                .rename_or_copy_line(line)
                .map_err(|r| malformed(lineno, r))?
            && line.starts_with("Binary files ")
            && line.ends_with(" differ")
        {
            b.file.binary = true;
        }
        // `index …`, `similarity index …` and the like need nothing.
        self.i += 1;
        Ok(())
    }

    /// The file being read changes binary content.
    fn mark_binary(&mut self) {
        if let Some(b) = self.current.as_mut() {
            b.file.binary = true;
        }
    }

    /// A hunk: its `@@` header, its lines, and what may follow it.
    fn hunk(&mut self) -> Result<(), ReviewError> {
        let lineno = self.i + 1;
        let line = self.line(self.i);
        if self.current.is_none() {
            return Err(malformed(lineno, "a hunk before any file header".into()));
        }
        let (old_start, old_count, new_start, new_count, section) = hunk_header(line)
            .ok_or_else(|| malformed(lineno, format!("bad hunk header {line:?}")))?;
        let mut hunk = Hunk {
            old_start,
            old_count,
            new_start,
            new_count,
            section,
            lines: Vec::new(),
        };
        self.i += 1;
        self.hunk_lines(&mut hunk, lineno)?;
        self.after_hunk(lineno)?;
        if let Some(b) = self.current.as_mut() {
            b.file.hunks.push(hunk);
        }
        Ok(())
    }

    /// The lines of the hunk whose header is at line `lineno`, as many as it promises.
    fn hunk_lines(&mut self, hunk: &mut Hunk, lineno: usize) -> Result<(), ReviewError> {
        let mut numbering = Numbering::of(hunk);
        while self.i < self.count && numbering.open() {
            let body = self.line(self.i);
            let (kind, text) = match content(body) {
                Content::Line(kind, text) => (kind, text),
                Content::NoNewline => {
                    self.i += 1;
                    continue;
                }
                Content::Invalid => {
                    return Err(malformed(
                        self.i + 1,
                        format!(
                            "hunk at line {lineno} expects {} more old and {} more new lines, found {:?}",
                            numbering.old_left,
                            numbering.new_left,
                            truncate(body, 60)
                        ),
                    ));
                }
            };
            let (old_line, new_line) = numbering.take(kind).map_err(|what| {
                malformed(
                    self.i + 1,
                    format!("hunk at line {lineno} has more {what} than its header says"),
                )
            })?;
            hunk.lines.push(DiffLine {
                kind,
                text: text.to_string(),
                old_line,
                new_line,
            });
            self.i += 1;
        }
        if numbering.open() {
            return Err(malformed(
                self.count.max(1),
                format!(
                    "the diff ends inside the hunk at line {lineno} ({} old and {} new lines missing)",
                    numbering.old_left, numbering.new_left
                ),
            ));
        }
        Ok(())
    }

    /// After a complete hunk: skips `\ No newline at end of file` and refuses an added
    /// or removed line (the header undercounts).
    fn after_hunk(&mut self, lineno: usize) -> Result<(), ReviewError> {
        while self.i < self.count && self.line(self.i).starts_with('\\') {
            self.i += 1;
        }
        if self.i < self.count {
            let next = self.line(self.i);
            let header = next.starts_with("--- ") || next.starts_with("+++ ");
            if (next.starts_with('+') || next.starts_with('-')) && !header && next != "-- " {
                return Err(malformed(
                    self.i + 1,
                    format!("hunk at line {lineno} has more lines than its header says"),
                ));
            }
        }
        Ok(())
    }
}
