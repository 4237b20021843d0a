"""Repository-level line completion through Souffleur's HTTP endpoint: cursor positions in
real repositories nobody here wrote, each with one line removed, completed with the
repository's index on and off.

A task: a file of the repository (indexed by `souffleur index add`), a line of it with at
least 12 characters that is not a comment; the cursor sits after the line's indentation
(where an editor puts it), the target is the rest of the line, the suffix the rest of the
file. With `--cursor mid` the line is half typed instead: the cursor sits 30–70 % into the
line's text (a single-line completion while typing), the target is what is left of it. Scores over the first line of each answer: exact match (stripped) and edit
similarity (1 − Levenshtein distance / longer length). Prints one JSON object.
"""
import argparse
import json
import os
import random
import sys
import time
import urllib.request

LANGUAGES = {".py": ("python", "#"), ".rs": ("rust", "//"), ".go": ("go", "//"),
             ".js": ("javascript", "//"), ".ts": ("typescript", "//"), ".java": ("java", "//"),
             ".c": ("c", "//"), ".h": ("c", "//")}


def make_tasks(repo, n, seed, cursor="line"):
    files = []
    for root, dirs, names in os.walk(repo):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in ("tests", "test", "benches", "examples"))
        for name in sorted(names):
            ext = os.path.splitext(name)[1]
            if ext in LANGUAGES:
                path = os.path.join(root, name)
                try:
                    text = open(path, encoding="utf-8").read()
                except (UnicodeDecodeError, OSError):
                    continue
                if text.count("\n") >= 40:
                    files.append((path, text))
    rng = random.Random(seed)
    tasks = []
    tries = 0
    while len(tasks) < n and tries < 100 * n and files:
        tries += 1
        path, text = rng.choice(files)
        lines = text.split("\n")
        i = rng.randrange(10, len(lines) - 1)
        line = lines[i]
        body = line.strip()
        comment = LANGUAGES[os.path.splitext(path)[1]][1]
        if len(body) < 12 or body.startswith((comment, "*", "/*", '"""', "'''")):
            continue
        indent = line[:len(line) - len(line.lstrip())]
        typed = ""
        if cursor == "mid":
            typed = body[:rng.randint(len(body) * 3 // 10, len(body) * 7 // 10)]
            body = body[len(typed):].strip()
        prefix = "\n".join(lines[:i]) + "\n" + indent + typed
        suffix = "\n" + "\n".join(lines[i + 1:])
        key = (path, i)
        if any((t["path"], t["line"]) == key for t in tasks):
            continue
        tasks.append({"path": path, "line": i, "language": LANGUAGES[os.path.splitext(path)[1]][0],
                      "prefix": prefix, "suffix": suffix, "target": body})
    return tasks


def levenshtein(a, b):
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def similarity(a, b):
    if not a and not b:
        return 1.0
    return 1.0 - levenshtein(a, b) / max(len(a), len(b))


def ask(url, task, retrieval):
    body = {"language": task["language"],
            "segments": {"prefix": task["prefix"], "suffix": task["suffix"], "filepath": task["path"]},
            "temperature": 0}
    if not retrieval:
        body["debug_options"] = {"disable_retrieval_augmented_code_completion": True}
    body["debug_options"] = dict(body.get("debug_options", {}), return_snippets=True)
    req = urllib.request.Request(url + "/v1/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        out = json.loads(r.read())
    choices = out.get("choices") or []
    snippets = len((out.get("debug_data") or {}).get("snippets") or [])
    return (choices[0]["text"] if choices else ""), snippets


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", required=True)
    ap.add_argument("--repo", action="append", required=True, help="repository directory (indexed)")
    ap.add_argument("--per-repo", type=int, default=50)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--modes", default="on,off", help="retrieval modes to run: on, off")
    ap.add_argument("--cursor", choices=["line", "mid"], default="line",
                    help="cursor after the indentation (line) or inside the line's text (mid)")
    ap.add_argument("--label", default="souffleur")
    ap.add_argument("--log")
    args = ap.parse_args()
    log = open(args.log, "a", encoding="utf-8") if args.log else None
    result = {"benchmark": "repository-line-completion", "label": args.label, "repos": {}}
    for repo in args.repo:
        tasks = make_tasks(repo, args.per_repo, args.seed, args.cursor)
        name = os.path.basename(repo.rstrip("/"))
        result["repos"][name] = {}
        for mode in args.modes.split(","):
            em = sim = snips = 0.0
            times = []
            for t in tasks:
                start = time.perf_counter()
                text, n_snip = ask(args.server, t, mode == "on")
                times.append(time.perf_counter() - start)
                got = text.split("\n")[0].strip()
                em += got == t["target"]
                sim += similarity(got, t["target"])
                snips += n_snip
                if log:
                    log.write(json.dumps({"label": args.label, "repo": name, "retrieval": mode,
                                          "path": os.path.relpath(t["path"], repo), "line": t["line"],
                                          "want": t["target"], "got": got}) + "\n")
            times.sort()
            n = len(tasks)
            result["repos"][name]["retrieval_" + mode] = {
                "tasks": n, "exact_match": em / n, "edit_similarity": sim / n,
                "snippets_per_request": snips / n,
                "latency_ms_p50": times[n // 2] * 1e3}
            print(f"{args.label} {name} retrieval {mode}: exact {em / n:.3f} "
                  f"edit-sim {sim / n:.3f}", file=sys.stderr)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
