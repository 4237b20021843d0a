#!/usr/bin/env python3
"""Builds the review evaluation set: real functions with injected defects, as diffs.

Sources (read locally, nothing is downloaded):
  * the Python standard library of the running interpreter (sysconfig's `stdlib`),
  * Rust crates in the local cargo registry (~/.cargo/registry/src/*/).

For each defect type a transformation is applied to a real function; the diff of the
file before/after is a case, with the new-side lines the defect touched. Clean cases
are behaviour-preserving refactorings of real functions (a local variable renamed, an
explanatory comment added). Secrets are generated at run time with a seeded RNG.

    python3 benches/review_eval/make_cases.py --out /tmp/review_cases.jsonl [--per-type 10] [--seed 7]

Output: one JSON object per line: id, kind (defect|clean), defect, language, path,
diff, lines (new-side line numbers the defect touched), changed_lines (added+removed).
"""

import argparse
import ast
import difflib
import glob
import json
import os
import random
import re
import string
import sysconfig

DEFECTS = [
    "off_by_one",
    "inverted_condition",
    "swapped_arguments",
    "ignored_error",
    "sql_concat",
    "hardcoded_secret",
    "removed_bounds_check",
]

# Defect kinds added later; drawn after the clean cases with their own random stream,
# so the cases above stay the same for a given seed.
EXTRA_DEFECTS = [
    "wrong_variable",
    "missing_await",
    "resource_leak",
]


def python_functions(limit_files=400, rng=None):
    """(path, text, lines, func_start, func_end) of stdlib functions, 6..60 lines."""
    root = sysconfig.get_paths()["stdlib"]
    files = sorted(
        p
        for p in glob.glob(os.path.join(root, "**", "*.py"), recursive=True)
        if "site-packages" not in p and "/test" not in p and "idlelib" not in p and "lib2to3" not in p
    )
    rng.shuffle(files)
    for path in files[:limit_files]:
        try:
            text = open(path, encoding="utf-8").read()
            tree = ast.parse(text)
        except (UnicodeDecodeError, SyntaxError, ValueError):
            continue
        lines = text.split("\n")
        rel = "pystdlib/" + os.path.relpath(path, root)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start, end = node.lineno, node.end_lineno or node.lineno
                if 6 <= end - start + 1 <= 60:
                    yield rel, text, lines, start, end, node


def rust_functions(limit_files=600, rng=None):
    """(path, text, lines, start, end) of crate functions found by brace matching."""
    roots = glob.glob(os.path.expanduser("~/.cargo/registry/src/*/"))
    files = []
    for r in roots:
        files.extend(glob.glob(os.path.join(r, "*", "src", "**", "*.rs"), recursive=True))
    files = sorted(f for f in files if "/tests/" not in f and "/benches/" not in f)
    rng.shuffle(files)
    fn_re = re.compile(r"^(\s*)(pub(\(crate\))? )?(const )?(async )?(unsafe )?fn \w+")
    for path in files[:limit_files]:
        try:
            text = open(path, encoding="utf-8").read()
        except (UnicodeDecodeError, OSError):
            continue
        if len(text) > 300_000:
            continue
        lines = text.split("\n")
        root = next(r for r in roots if path.startswith(r))
        rel = "crates/" + os.path.relpath(path, root)
        i = 0
        while i < len(lines):
            m = fn_re.match(lines[i])
            if m and lines[i].rstrip().endswith("{"):
                indent = m.group(1)
                j = i + 1
                while j < len(lines) and not (lines[j].startswith(indent + "}") and len(lines[j].strip()) == 1):
                    j += 1
                if j < len(lines) and 6 <= j - i + 1 <= 60:
                    yield rel, text, lines, i + 1, j + 1, None
                i = j + 1
            else:
                i += 1


def make_diff(path, before, after):
    diff = list(
        difflib.unified_diff(
            before.split("\n"), after.split("\n"), "a/" + path, "b/" + path, n=3, lineterm=""
        )
    )
    if not diff:
        return None
    return "diff --git a/{0} b/{0}\n".format(path) + "\n".join(diff) + "\n"


def changed_new_lines(before, after):
    """New-side line numbers that differ, and the count of added+removed lines."""
    sm = difflib.SequenceMatcher(a=before.split("\n"), b=after.split("\n"), autojunk=False)
    lines, changed = [], 0
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag != "equal":
            lines.extend(range(j1 + 1, j2 + 1))
            changed += (i2 - i1) + (j2 - j1)
    return lines, changed


def secret(rng):
    alnum = string.ascii_letters + string.digits
    kind = rng.choice(["aws", "github", "stripe", "password", "generic"])
    if kind == "aws":
        return "aws_access_key_id", "AKIA" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16))
    if kind == "github":
        return "github_token", "ghp_" + "".join(rng.choice(alnum) for _ in range(36))
    if kind == "stripe":
        return "stripe_key", "sk_live_" + "".join(rng.choice(alnum) for _ in range(24))
    if kind == "password":
        return "db_password", "".join(rng.choice(alnum) for _ in range(10)) + "!"
    return "api_secret", "".join(rng.choice(alnum) for _ in range(28))


def body_indent(lines, start, end):
    for k in range(start, end):
        s = lines[k]
        if s.strip() and not s.strip().startswith(("#", "//", '"""', "'''", "@")):
            return s[: len(s) - len(s.lstrip())]
    return "    "


def first_body_line(lines, start, end, lang):
    """0-based index of the first statement line after the signature (and docstring)."""
    k = start  # line after the header (start is 1-based header line)
    if lang == "python":
        while k < end and not lines[k - 1].rstrip().endswith(":"):
            k += 1
        if k < end and lines[k].strip().startswith(('"""', "'''", 'r"""')):
            q = lines[k].strip()[:3] if not lines[k].strip().startswith("r") else '"""'
            if lines[k].strip().count(q) >= 2 and len(lines[k].strip()) > 3:
                k += 1
            else:
                k += 1
                while k < end and q not in lines[k]:
                    k += 1
                k += 1
    return k


CALL2 = re.compile(r"(\b[\w.]+)\(\s*([A-Za-z_]\w*)\s*,\s*([A-Za-z_]\w*)\s*\)")


def inject(defect, lang, lines, start, end, rng):
    """Returns the new lines of the file with the defect injected in lines start..end, or None."""
    body = list(range(start, end))  # 0-based indexes of lines start+1..end (after header)
    cand = []
    new = list(lines)
    if defect == "off_by_one":
        for k in body:
            s = lines[k]
            if lang == "python":
                for pat, rep in [
                    (r"range\(len\(([\w.]+)\)\)", r"range(len(\1) + 1)"),
                    (r" < len\(", " <= len("),
                    (r"\[:-1\]", "[:-2]"),
                    (r"range\((\w+)\)", r"range(\1 - 1)"),
                    (r"\[1:\]", "[2:]"),
                ]:
                    if re.search(pat, s):
                        cand.append((k, re.sub(pat, rep, s, count=1)))
                        break
            else:
                for pat, rep in [
                    (r"\.\.([\w.]+\.len\(\))", r"..=\1"),
                    (r" < ([\w.]+)\.len\(\)", r" <= \1.len()"),
                    (r"0\.\.(\w+)\b(?!\()", r"0..\1 + 1"),
                    (r"\[1\.\.\]", "[2..]"),
                ]:
                    if re.search(pat, s) and "..=" not in s:
                        cand.append((k, re.sub(pat, rep, s, count=1)))
                        break
    elif defect == "inverted_condition":
        for k in body:
            s = lines[k]
            st = s.strip()
            if lang == "python" and re.match(r"(el)?if |while ", st):
                for pat, rep in [(" == ", " != "), (" != ", " == "), (" is not ", " is "), (" is None", " is not None"), (" not in ", " in "), (" >= ", " < "), (" <= ", " > ")]:
                    if pat in s:
                        cand.append((k, s.replace(pat, rep, 1)))
                        break
                else:
                    m = re.match(r"(\s*(?:el)?if )not (.*):$", s)
                    if m:
                        cand.append((k, m.group(1) + m.group(2) + ":"))
            elif lang == "rust" and re.match(r"(\} else )?if |while ", st):
                for pat, rep in [(" == ", " != "), (" != ", " == "), (".is_some()", ".is_none()"), (".is_none()", ".is_some()"), (" >= ", " < "), (" <= ", " > "), (".is_empty()", ".is_empty() == false")]:
                    if pat in s:
                        cand.append((k, s.replace(pat, rep, 1)))
                        break
    elif defect == "swapped_arguments":
        for k in body:
            s = lines[k]
            if s.strip().startswith(("#", "//", "def ", "fn ")):
                continue
            m = CALL2.search(s)
            if m and m.group(2) != m.group(3) and m.group(1) not in ("max", "min", "isinstance", "print", "range", "getattr", "hasattr", "assert_eq", "assert_ne", "write", "Some", "Ok", "Err"):
                cand.append((k, s[: m.start(2)] + m.group(3) + ", " + m.group(2) + s[m.end(3):]))
    elif defect == "ignored_error":
        for k in body:
            s = lines[k]
            if lang == "rust":
                m = re.match(r"(\s*)(let \w+ = )?(.*)\?;\s*$", s)
                if m and not m.group(2):
                    cand.append((k, m.group(1) + "let _ = " + m.group(3) + ";"))
            else:
                m = re.match(r"(\s*)except ([\w.]+(?: as \w+)?):\s*$", s)
                if m and k + 1 < end:
                    nxt = lines[k + 1]
                    ind = nxt[: len(nxt) - len(nxt.lstrip())]
                    if nxt.strip().startswith("raise"):
                        cand.append((k + 1, ind + "pass"))
    elif defect == "sql_concat":
        ind = body_indent(lines, start, end)
        k = first_body_line(lines, start, end, lang)
        params = re.findall(r"\b([a-z_]\w*)\b", lines[start - 1].split("(", 1)[-1])
        params = [p for p in params if p not in ("self", "cls", "mut", "str", "int", "usize", "u8", "bool", "string", "option", "result", "none", "true", "false", "ref", "impl", "dyn")]
        var = params[0] if params else "name"
        if lang == "python":
            new_lines = [
                ind + 'query = "SELECT * FROM records WHERE key = \'" + str(%s) + "\'"' % var,
                ind + "cursor.execute(query)",
            ]
        else:
            new_lines = [
                ind + 'let query = format!("SELECT * FROM records WHERE key = \'{}\'", %s);' % var,
                ind + "conn.execute(&query, [])?;",
            ]
        return new[:k] + new_lines + new[k:], list(range(k + 1, k + 1 + len(new_lines)))
    elif defect == "hardcoded_secret":
        ind = body_indent(lines, start, end)
        k = first_body_line(lines, start, end, lang)
        name, value = secret(rng)
        if lang == "python":
            line = ind + '%s = "%s"' % (name, value)
        else:
            line = ind + 'let %s = "%s";' % (name, value)
        return new[:k] + [line] + new[k:], [k + 1]
    elif defect == "removed_bounds_check":
        if lang != "python":
            for k in body:
                s = lines[k]
                if ".get(" in s and re.search(r"\.get\(([\w.]+)\)", s):
                    cand.append((k, re.sub(r"\.get\(([\w.]+)\)(\?|\.unwrap\(\)|\.copied\(\)\?)?", r"[\1]", s, count=1)))
        else:
            for k in body[:-1]:
                s = lines[k]
                m = re.match(r"(\s*)if (.*(?:len\(|<|>).*):\s*$", s)
                if m and k + 1 < end:
                    nxt = lines[k + 1]
                    after = lines[k + 2] if k + 2 < len(lines) else ""
                    ind = m.group(1)
                    nind = nxt[: len(nxt) - len(nxt.lstrip())]
                    aind = after[: len(after) - len(after.lstrip())]
                    if len(nind) > len(ind) and len(aind) <= len(ind) and not nxt.strip().startswith(("raise", "return", "continue", "break", "pass", "#")) and not after.strip().startswith(("else", "elif")):
                        out = new[:k] + [ind + nxt.strip()] + new[k + 2:]
                        return out, [k + 1]
    elif defect == "wrong_variable":
        # A local used where another local was meant: one use (not the assignment) of
        # a name assigned in the function becomes another such name.
        assign = re.compile(r"\s*(?:let (?:mut )?)?([a-z_][a-z0-9_]{2,})\s*(?::[^=]*)?=[^=]")
        names = sorted({m.group(1) for k in body for m in [assign.match(lines[k])] if m and m.group(1) not in ("self", "mut")})
        if len(names) >= 2:
            for k in body:
                s = lines[k]
                if s.strip().startswith(("#", "//")) or assign.match(s):
                    continue
                for a in names:
                    m = re.search(r"\b%s\b" % re.escape(a), s)
                    if m:
                        b = rng.choice([n for n in names if n != a])
                        cand.append((k, s[: m.start()] + b + s[m.end():]))
                        break
    elif defect == "missing_await":
        for k in body:
            s = lines[k]
            if lang == "python" and re.search(r"\bawait ", s):
                cand.append((k, re.sub(r"\bawait ", "", s, count=1)))
            elif lang == "rust" and ".await" in s:
                cand.append((k, s.replace(".await", "", 1)))
    elif defect == "resource_leak" and lang == "python":
        # A context manager removed: `with open(...) as f:` becomes `f = open(...)` and
        # `with self._lock:` becomes `self._lock.acquire()`, the block dedented, so the
        # file is never closed and the lock never released. Only the acquiring line is
        # the defect's line.
        opened = re.compile(r"(\s*)with (open\([^()]*(?:\([^()]*\)[^()]*)*\)) as (\w+):\s*$")
        locked = re.compile(r"(\s*)with ((?:self\.)?_?\w*lock\w*):\s*$", re.IGNORECASE)
        for k in body:
            s = lines[k]
            m = opened.match(s) or locked.match(s)
            if not m:
                continue
            ind = m.group(1)
            head = ind + ("%s = %s" % (m.group(3), m.group(2)) if m.re is opened else m.group(2) + ".acquire()")
            block = []
            j = k + 1
            while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > len(ind)):
                block.append(j)
                j += 1
            while block and not lines[block[-1]].strip():
                block.pop()
            if not block:
                continue
            first = lines[block[0]]
            step = len(first) - len(first.lstrip()) - len(ind)
            if step <= 0:
                continue
            body_lines = [l[step:] if l.strip() else l for l in (lines[b] for b in block)]
            out = new[:k] + [head] + body_lines + new[block[-1] + 1:]
            cand.append((k, out))
        if not cand:
            return None
        k, out = rng.choice(cand)
        return out, [k + 1]
    if not cand:
        return None
    k, line = rng.choice(cand)
    if line == lines[k]:
        return None
    new[k] = line
    return new, [k + 1]


def refactor(lang, lines, start, end, rng, node):
    """A behaviour-preserving change: rename a local variable, or add a comment."""
    new = list(lines)
    if rng.random() < 0.6:
        names = set()
        for k in range(start, end):
            m = re.match(r"\s*(?:let (?:mut )?)?([a-z_][a-z0-9_]{2,})\s*=[^=]", lines[k])
            if m and m.group(1) not in ("self", "mut"):
                names.add(m.group(1))
        if names:
            old = rng.choice(sorted(names))
            newname = old + "_value"
            pat = re.compile(r"\b%s\b" % re.escape(old))
            for k in range(start, end):
                if not lines[k].strip().startswith(("#", "//")):
                    new[k] = pat.sub(newname, lines[k])
            return new
    k = first_body_line(lines, start, end, lang)
    ind = body_indent(lines, start, end)
    marker = "#" if lang == "python" else "//"
    new.insert(k, ind + marker + " Keep this in sync with the documentation of the caller.")
    return new


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--per-type", type=int, default=10, help="defect cases per defect type")
    ap.add_argument("--clean", type=int, default=20, help="clean refactoring cases")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    pools = {
        "python": list(python_functions(rng=rng)),
        "rust": list(rust_functions(rng=rng)),
    }
    for lang in pools:
        rng.shuffle(pools[lang])
    cases = []
    used = set()
    for defect in DEFECTS:
        got = 0
        langs = ["python"] if defect == "removed_bounds_check" and not pools["rust"] else ["python", "rust"]
        turn = 0
        for attempt in range(20000):
            if got >= args.per_type:
                break
            lang = langs[turn % len(langs)]
            pool = pools[lang]
            if not pool:
                turn += 1
                continue
            rel, text, lines, start, end, node = pool[rng.randrange(len(pool))]
            key = (rel, start)
            if key in used:
                continue
            res = inject(defect, lang, lines, start, end, rng)
            if not res:
                continue
            new_lines, _ = res
            before, after = text, "\n".join(new_lines)
            diff = make_diff(rel, before, after)
            if not diff:
                continue
            touched, changed = changed_new_lines(before, after)
            if not touched:
                continue
            used.add(key)
            turn += 1
            got += 1
            cases.append({
                "id": "%s-%02d" % (defect, got), "kind": "defect", "defect": defect,
                "language": lang, "path": rel, "diff": diff, "lines": touched, "changed_lines": changed,
            })
    got = 0
    for attempt in range(20000):
        if got >= args.clean:
            break
        lang = "python" if got % 2 == 0 else "rust"
        pool = pools[lang]
        rel, text, lines, start, end, node = pool[rng.randrange(len(pool))]
        if (rel, start) in used:
            continue
        after = "\n".join(refactor(lang, lines, start, end, rng, node))
        diff = make_diff(rel, text, after)
        if not diff:
            continue
        touched, changed = changed_new_lines(text, after)
        used.add((rel, start))
        got += 1
        cases.append({
            "id": "clean-%02d" % got, "kind": "clean", "defect": None, "language": lang,
            "path": rel, "diff": diff, "lines": touched, "changed_lines": changed,
        })
    extra_rng = random.Random(args.seed + 1000)
    # The same function can sit in several versions of a crate: one case per change.
    seen = set()
    for defect in EXTRA_DEFECTS:
        got = 0
        for attempt in range(20000):
            if got >= args.per_type:
                break
            lang = ("python", "rust")[attempt % 2]
            pool = pools[lang]
            rel, text, lines, start, end, node = pool[extra_rng.randrange(len(pool))]
            if (rel, start) in used:
                continue
            res = inject(defect, lang, lines, start, end, extra_rng)
            if not res:
                continue
            after = "\n".join(res[0])
            diff = make_diff(rel, text, after)
            touched, changed = changed_new_lines(text, after)
            if defect == "resource_leak":
                touched = res[1]  # the acquiring line; the dedented block is not the defect
            change = tuple(l for l in diff.split("\n") if l[:1] in "+-" and l[:3] not in ("+++", "---"))
            if not diff or not touched or change in seen:
                continue
            seen.add(change)
            used.add((rel, start))
            got += 1
            cases.append({
                "id": "%s-%02d" % (defect, got), "kind": "defect", "defect": defect,
                "language": lang, "path": rel, "diff": diff, "lines": touched, "changed_lines": changed,
            })
    with open(args.out, "w") as f:
        for c in cases:
            f.write(json.dumps(c) + "\n")
    by = {}
    for c in cases:
        by[c["defect"] or "clean"] = by.get(c["defect"] or "clean", 0) + 1
    print("wrote %d cases to %s: %s" % (len(cases), args.out, json.dumps(by)))


if __name__ == "__main__":
    main()
