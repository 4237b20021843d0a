#!/usr/bin/env python3
"""Scores `POST /v1/review` on the cases of make_cases.py.

Starts `souffleur serve --local --port 0` with the model given by --model (default:
the built-in model of $SOUFFLEUR_HOME), or uses a running server (--server URL
--token T), posts every case's diff, and reports:

  * recall per defect type: a defect is caught when a finding's lines intersect the
    lines the defect changed (all findings, model findings, static findings);
  * precision: findings on defect lines / all findings (defect and clean cases), and the
    share of clean refactoring diffs without any finding;
  * time per 100 changed lines (added + removed lines of the diffs), wall clock.

Model findings are split by signal: `review` (the model asked in words, rule `model`)
and `judge` (the code model's likelihood of the replaced vs the new lines, rule
`model.unlikely-change`). `--threshold T` sets the judge's margin (nats per token, sent
as the rules file's `unlikely_change_threshold`); `--judge-only` sends no chunk to the
model in words (`max_chunks: 0`); `--sweep` runs once with every judged change reported
and prints recall and precision of the judge for a range of thresholds.

    python3 benches/review_eval/score.py --cases /tmp/review_cases.jsonl [--model PATH]
        [--static-only] [--judge-only] [--threshold T | --sweep] [--concurrency N]
        [--out results.json] [--binary target/release/souffleur]

Standard library only (urllib, subprocess).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request


def start_server(binary, model, home):
    args = [binary, "serve", "--local", "--port", "0", "--exit-on-stdin-close"]
    if model:
        args += ["--model", model]
    env = dict(os.environ)
    if home:
        env["SOUFFLEUR_HOME"] = home
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
    line = proc.stdout.readline()
    url = next((w for w in line.split() if w.startswith("http://")), None)
    if not url:
        proc.kill()
        sys.exit("the server did not start: %r" % line)
    return proc, url


def post(url, token, body, timeout=1800):
    req = urllib.request.Request(url + "/v1/review", data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


SIGNALS = ("review", "judge", "static")
LOGIC = ("off_by_one", "inverted_condition", "swapped_arguments", "ignored_error", "removed_bounds_check")


def margin(f):
    """The judge's margin, from its finding's message (`(0.83 nats per token)`)."""
    m = re.search(r"\((-?[0-9.]+) nats per token\)", f["message"])
    return float(m.group(1)) if m else None


def sweep(results, signal):
    """Recall on the logic defects and precision of the judge alone, per threshold."""
    judged = []
    for r in results:
        lines = set(r["case"]["lines"])
        for f in r["findings"]:
            if signal(f) == "judge" and margin(f) is not None:
                on_defect = r["case"]["defect"] is not None and bool(lines & set(range(f["line"], f["end_line"] + 1)))
                judged.append((r["case"]["id"], r["case"]["defect"], margin(f), on_defect))
    logic_cases = {r["case"]["id"] for r in results if r["case"]["defect"] in LOGIC}
    all_defects = {r["case"]["id"] for r in results if r["case"]["defect"] is not None}
    print()
    print("judged changes: %d (margins of defect lines: %s)" % (
        len(judged), " ".join("%.2f" % m for _, d, m, on in sorted(judged, key=lambda j: -j[2]) if on)))
    print()
    print("| threshold (nats/token) | logic-defect recall | all-defect recall | precision | findings | on clean cases |")
    print("|---:|---:|---:|---:|---:|---:|")
    for t in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0):
        kept = [j for j in judged if j[2] >= t]
        caught = {cid for cid, d, m, on in kept if on}
        tp = sum(1 for j in kept if j[3])
        clean = sum(1 for j in kept if j[1] is None)
        print("| %.2f | %d/%d | %d/%d | %s | %d | %d |" % (
            t, len(caught & logic_cases), len(logic_cases), len(caught & all_defects), len(all_defects),
            "%.2f" % (tp / len(kept)) if kept else "n/a", len(kept), clean))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", required=True)
    ap.add_argument("--model", help="model path or name for the local server")
    ap.add_argument("--server", help="use this running server instead")
    ap.add_argument("--token", default=os.environ.get("SOUFFLEUR_TOKEN"))
    ap.add_argument("--home", default=os.environ.get("SOUFFLEUR_HOME"))
    ap.add_argument("--binary", default=None)
    ap.add_argument("--static-only", action="store_true")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="only the first N cases")
    ap.add_argument("--threshold", type=float, help="the judge's margin in nats per token")
    ap.add_argument("--judge-only", action="store_true", help="no model review in words (max_chunks 0)")
    ap.add_argument("--sweep", action="store_true", help="report every judged change; print a threshold table")
    ap.add_argument("--out")
    args = ap.parse_args()

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    binary = args.binary or next(
        (p for p in (os.path.join(root, "target/release/souffleur"), os.path.join(root, "target/debug/souffleur")) if os.path.exists(p)),
        None,
    )
    cases = [json.loads(l) for l in open(args.cases)]
    if args.limit:
        cases = cases[: args.limit]
    proc = None
    url = args.server
    if not url:
        if not binary:
            sys.exit("no souffleur binary: build it (cargo build --release -p cli) or pass --binary")
        proc, url = start_server(binary, args.model, args.home)
    try:
        results = []
        model_name = None
        for c in cases:
            body = {"diff": c["diff"], "model_review": not args.static_only, "concurrency": args.concurrency}
            threshold = -20.0 if args.sweep else args.threshold
            if threshold is not None:
                body["rules"] = "unlikely_change_threshold = %r\n" % threshold
            if args.judge_only:
                body["max_chunks"] = 0
            t0 = time.monotonic()
            status, rep = post(url, args.token, body)
            dt = time.monotonic() - t0
            if status != 200:
                print("case %s: HTTP %s %s" % (c["id"], status, rep), file=sys.stderr)
                results.append({"case": c, "error": rep, "seconds": dt, "findings": []})
                continue
            model_name = rep["summary"].get("model") or model_name
            results.append({"case": c, "seconds": dt, "findings": rep["findings"], "summary": rep["summary"]})
            print("%-28s %5.1fs %d findings" % (c["id"], dt, len(rep["findings"])), file=sys.stderr)
    finally:
        if proc:
            proc.stdin.close()
            proc.wait(timeout=30)

    def signal(f):
        if f["source"] == "static":
            return "static"
        return "judge" if f["rule"] == "model.unlikely-change" else "review"

    if args.sweep:
        sweep(results, signal)
        # The tables below are for the findings a default review would give: the judge's
        # are all kept in `judged` of the output file.
        for r in results:
            r["judged"] = [f for f in r["findings"] if signal(f) == "judge"]
            r["findings"] = [f for f in r["findings"] if signal(f) != "judge"]

    def hits(r, source=None):
        lines = set(r["case"]["lines"])
        return [
            f for f in r["findings"]
            if (source is None or signal(f) == source)
            and lines & set(range(f["line"], f["end_line"] + 1))
        ]

    table = {}
    for r in results:
        d = r["case"]["defect"]
        if d is None:
            continue
        t = table.setdefault(d, {"cases": 0, "any": 0, "review": 0, "judge": 0, "static": 0})
        t["cases"] += 1
        t["any"] += bool(hits(r))
        for src in SIGNALS:
            t[src] += bool(hits(r, src))
    tp = {"any": 0, "review": 0, "judge": 0, "static": 0}
    allf = {"any": 0, "review": 0, "judge": 0, "static": 0}
    for r in results:
        for src in ("any",) + SIGNALS:
            fs = [f for f in r["findings"] if src == "any" or signal(f) == src]
            allf[src] += len(fs)
            if r["case"]["defect"] is not None:
                tp[src] += len(hits(r, None if src == "any" else src))
    clean = [r for r in results if r["case"]["defect"] is None]
    clean_ok = sum(1 for r in clean if not r["findings"])
    clean_fp = {src: sum(1 for r in clean for f in r["findings"] if signal(f) == src) for src in SIGNALS}
    clean_errors = sum(1 for r in clean for f in r["findings"] if f["severity"] == "error")
    seconds = sum(r["seconds"] for r in results)
    changed = sum(r["case"]["changed_lines"] for r in results)
    defects = [r for r in results if r["case"]["defect"] is not None]
    summary = {
        "model": None if args.static_only else model_name,
        "cases": len(results),
        "errors": sum(1 for r in results if "error" in r),
        "recall": {d: t for d, t in sorted(table.items())},
        "recall_total": {k: sum(t[k] for t in table.values()) / max(1, len(defects)) for k in ("any",) + SIGNALS},
        "precision": {k: (tp[k] / allf[k] if allf[k] else None) for k in tp},
        "findings": allf,
        "clean_cases": len(clean),
        "clean_without_findings": clean_ok,
        "clean_false_positives": clean_fp,
        "clean_error_findings": clean_errors,
        "model_findings_dropped": sum(r.get("summary", {}).get("dropped_findings", 0) for r in results),
        "model_findings_refuted": sum(r.get("summary", {}).get("refuted_findings", 0) for r in results),
        "seconds": seconds,
        "changed_lines": changed,
        "seconds_per_100_changed_lines": 100 * seconds / max(1, changed),
    }
    print()
    print("model: %s" % (summary["model"] or "none (static checks only)"))
    print()
    print("| defect | cases | caught (any) | by model review | by model judge | by static checks |")
    print("|---|---:|---:|---:|---:|---:|")
    for d, t in sorted(table.items()):
        print("| %s | %d | %d (%.0f%%) | %d | %d | %d |" % (
            d, t["cases"], t["any"], 100 * t["any"] / t["cases"], t["review"], t["judge"], t["static"]))
    print("| **all** | %d | %d (%.0f%%) | %d | %d | %d |" % (
        len(defects), sum(t["any"] for t in table.values()), 100 * summary["recall_total"]["any"],
        sum(t["review"] for t in table.values()), sum(t["judge"] for t in table.values()),
        sum(t["static"] for t in table.values())))
    print()
    fmt = lambda p: "n/a" if p is None else "%.2f" % p
    print("precision (findings on defect lines / all findings): any %s, review %s, judge %s, static %s (findings: %s)" % (
        fmt(summary["precision"]["any"]), fmt(summary["precision"]["review"]), fmt(summary["precision"]["judge"]),
        fmt(summary["precision"]["static"]), json.dumps(allf)))
    print("clean refactorings without any finding: %d / %d (false positives: %s; error-level findings: %d)" % (
        clean_ok, len(clean), json.dumps(clean_fp), clean_errors))
    print("model findings in words dropped by grounding or the self-check: %d (of which refuted by the self-check: %d)" % (
        summary["model_findings_dropped"], summary["model_findings_refuted"]))
    print("time: %.1f s for %d changed lines = %.2f s per 100 changed lines" % (
        seconds, changed, summary["seconds_per_100_changed_lines"]))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"summary": summary, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
