//! Header paths: C-quoted or plain, with or without git's `a/` `b/` prefixes.

/// Decodes a path from a header: C-quoted (`"a/x\tb"`) or plain; a tab and what follows
/// (a timestamp) are dropped from plain paths; `/dev/null` is `None`.
pub(super) fn header_path(raw: &str, strip_prefix: bool) -> Result<Option<String>, String> {
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
pub(super) fn git_header_paths(rest: &str) -> Option<(String, String)> {
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

/// Whether a plain diff's `---`/`+++` paths carry git's `a/` `b/` prefixes.
pub(super) fn looks_prefixed(old: &str, new: &str) -> bool {
    let o = old.trim_start_matches('"');
    let n = new.trim_start_matches('"');
    (o.starts_with("a/") || o.starts_with("/dev/null"))
        && (n.starts_with("b/") || n.starts_with("/dev/null"))
}
