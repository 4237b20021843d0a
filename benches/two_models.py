"""Driver of benches/two_models.sh and benches/draft_speculation.sh (standard-library
Python only). Talks to a running `souffleur serve --local` at --url.

* `mixed`: for --duration seconds, 2 clients send Tabby completions (real prefixes and
  suffixes cut from this repository's Python files at random cursors), 1 client sends
  chat requests (a coding question, max_tokens 48) and 1 client sends reviews of a
  small real diff, all at once, each client back to back. At --reload-at seconds it
  replaces the config file with --reload-config and runs `souffleur admin reload`.
  Every request keeps its `x-request-id`; afterwards the audit table of the home's
  souffleur.db says which model (name and SHA-256) answered it. Prints a table per kind
  and writes a JSON report; exits 1 if any request failed or went to the wrong model.

* `speculation`: the same chat prompts (temperature 0, max_tokens 128), streamed, with
  `speculation` off, ngram and draft, one request at a time, interleaved by prompt;
  records time to first token and decode tokens/s, the drafted/accepted counters of
  /metrics (per request, as deltas), and whether the three answers are identical.
"""
import argparse
import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

CHAT_QUESTIONS = [
    "Write a Python function that returns the n-th Fibonacci number iteratively.",
    "In Rust, how do I read a file line by line? Show a short example.",
    "Explain the difference between a list and a tuple in Python in three sentences.",
    "Write a SQL query that returns the ten customers with the highest total order amount.",
    "Write a bash one-liner that counts the lines of all .rs files under the current directory.",
    "What does the `?` operator do in Rust? Give a short example.",
    "Write a Python function that checks whether a string is a palindrome, ignoring case.",
    "Write a JavaScript function that debounces another function by a given delay in milliseconds.",
]


def post(url, body, timeout=900, headers=None):
    """POST JSON; returns (status, parsed body or text, x-request-id, seconds)."""
    data = json.dumps(body).encode()
    h = {"content-type": "application/json"}
    h.update(headers or {})
    req = urllib.request.Request(url, data, h)
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            rid = r.headers.get("x-request-id")
            status = r.status
    except urllib.error.HTTPError as e:
        raw = e.read()
        rid = e.headers.get("x-request-id")
        status = e.code
    except Exception as e:  # connection reset, timeout, ...
        return 0, f"{type(e).__name__}: {e}", None, time.monotonic() - t0
    dt = time.monotonic() - t0
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw.decode(errors="replace")
    return status, parsed, rid, dt


def get_text(url, timeout=60):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = (len(v) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


# ---------------------------------------------------------------- completion tasks

def completion_tasks(root, files, seed, n=400):
    """Random cursors in real Python files: prefix = up to 60 lines before (and the
    cursor line up to a random column), suffix = up to 30 lines after."""
    rng = random.Random(seed)
    texts = []
    for f in files:
        with open(os.path.join(root, f), encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        if len(lines) > 20:
            texts.append(lines)
    tasks = []
    while len(tasks) < n:
        lines = rng.choice(texts)
        i = rng.randrange(5, len(lines) - 1)
        line = lines[i]
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        col = rng.randrange(indent, len(line) + 1)
        prefix = "\n".join(lines[max(0, i - 60):i]) + "\n" + line[:col]
        suffix = line[col:] + "\n" + "\n".join(lines[i + 1:i + 31])
        tasks.append({"prefix": prefix, "suffix": suffix, "file": f})
    return tasks


# ---------------------------------------------------------------- mixed load

class Log:
    def __init__(self):
        self.lock = threading.Lock()
        self.rows = []

    def add(self, row):
        with self.lock:
            self.rows.append(row)


def client(kind, url, stop_at, log, make_body, path):
    i = 0
    while time.monotonic() < stop_at:
        body = make_body(i)
        start = time.monotonic()
        status, resp, rid, dt = post(url + path, body)
        row = {"kind": kind, "start": start, "end": start + dt, "latency": dt,
               "status": status, "request_id": rid, "model": None, "error": None}
        if status != 200:
            row["error"] = resp if isinstance(resp, str) else json.dumps(resp)[:500]
        elif kind == "chat":
            row["model"] = resp.get("model")
            row["completion_tokens"] = resp.get("usage", {}).get("completion_tokens")
        elif kind == "completion":
            row["text"] = (resp.get("choices") or [{}])[0].get("text", "")
        elif kind == "review":
            if isinstance(resp, dict):
                row["findings"] = len(resp.get("findings", []))
        log.add(row)
        i += 1


def vm(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return None


def mixed(args):
    root = args.root
    files = [f for f in subprocess.run(["git", "-C", root, "ls-files", "*.py"],
                                       capture_output=True, text=True, check=True).stdout.split()]
    tasks = completion_tasks(root, files, args.seed)
    diff = open(args.diff, encoding="utf-8").read()
    url = args.url.rstrip("/")
    log = Log()
    t0 = time.monotonic()
    stop_at = t0 + args.duration
    rss_idle = vm(args.pid, "VmRSS")

    # Each client its own `filepath`: the server cancels a caller's in-flight completion
    # when a newer one arrives for the same file (a newer keystroke), and in local mode
    # every client is the same caller.
    def completion_body(offset):
        def body(i):
            t = tasks[(offset + 2 * i) % len(tasks)]
            return {"language": "python", "temperature": 0,
                    "segments": {"prefix": t["prefix"], "suffix": t["suffix"],
                                 "filepath": f"client{offset}/{t['file']}"}}
        return body

    def chat_body(i):
        q = CHAT_QUESTIONS[i % len(CHAT_QUESTIONS)]
        return {"messages": [{"role": "user", "content": q}], "max_tokens": args.chat_tokens,
                "temperature": 0}

    def review_body(i):
        return {"diff": diff, "format": "json"}

    threads = [
        threading.Thread(target=client, args=("completion", url, stop_at, log, completion_body(0), "/v1/completions")),
        threading.Thread(target=client, args=("completion", url, stop_at, log, completion_body(1), "/v1/completions")),
        threading.Thread(target=client, args=("chat", url, stop_at, log, chat_body, "/v1/chat/completions")),
        threading.Thread(target=client, args=("review", url, stop_at, log, review_body, "/v1/review")),
    ]
    # Per-model progress every 5 s (prompt and generated tokens, from /metrics).
    timeline = []
    def sample():
        while time.monotonic() < stop_at + 30 and not done.is_set():
            try:
                timeline.append((time.monotonic() - t0, counters(url)))
            except Exception:
                pass
            done.wait(5)
    done = threading.Event()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for t in threads:
        t.start()
    reload_info = None
    if args.reload_config and args.reload_at < args.duration:
        time.sleep(max(0, t0 + args.reload_at - time.monotonic()))
        shutil.copyfile(args.reload_config, args.config)
        r0 = time.monotonic()
        p = subprocess.run([args.souffleur, "admin", "reload", "--server", url],
                           capture_output=True, text=True)
        r1 = time.monotonic()
        reload_info = {"start": r0 - t0, "end": r1 - t0, "seconds": r1 - r0, "rc": p.returncode,
                       "stdout": p.stdout.strip(), "stderr": p.stderr.strip()}
        print(f"reload at {r0 - t0:.1f}s took {r1 - r0:.1f}s, rc {p.returncode}", file=sys.stderr)
        if p.stdout.strip():
            print(p.stdout.strip(), file=sys.stderr)
        if p.stderr.strip():
            print(p.stderr.strip(), file=sys.stderr)
    for t in threads:
        t.join()
    done.set()
    sampler.join()
    timeline.append((time.monotonic() - t0, counters(url)))
    wall = time.monotonic() - t0
    peak = vm(args.pid, "VmHWM")
    rss_end = vm(args.pid, "VmRSS")
    models = json.loads(get_text(url + "/v1/models"))

    # Which model answered, from the audit log (by request id).
    # (The row is written when the response ends, a moment after the client has it.)
    wanted = {r["request_id"] for r in log.rows if r["request_id"]}
    for _ in range(40):
        db = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True)
        audit = {rid: (m, sha) for rid, m, sha in
                 db.execute("SELECT request_id, model, model_sha256 FROM audit WHERE request_id IS NOT NULL")}
        db.close()
        if wanted <= set(audit):
            break
        time.sleep(0.25)
    sha_names = {}
    for m in models.get("data", []):
        sha_names[m.get("sha256")] = m.get("id")
    for row in log.rows:
        a = audit.get(row["request_id"])
        row["audit_model"], row["audit_sha256"] = (a if a else (None, None))
        row["start"] -= t0
        row["end"] -= t0

    expected = {"completion": args.expect_completion, "review": args.expect_review}
    wrong = []
    summary = {}
    for kind in ("completion", "chat", "review"):
        rows = [r for r in log.rows if r["kind"] == kind]
        ok = [r for r in rows if r["status"] == 200]
        lat = [r["latency"] for r in ok]
        by_model = {}
        for r in ok:
            key = f"{r['audit_model']} ({(r['audit_sha256'] or '?')[:12]})"
            by_model[key] = by_model.get(key, 0) + 1
        summary[kind] = {"count": len(rows), "failures": len(rows) - len(ok),
                         "empty": sum(1 for r in ok if r.get("text") == ""),
                         "p50_s": pct(lat, 50), "p95_s": pct(lat, 95), "max_s": max(lat) if lat else None,
                         "audit_models": by_model}
        if kind in expected:
            wrong += [r for r in ok if r["audit_model"] != expected[kind]]
    # Chat before / after the reload.
    chat = [r for r in log.rows if r["kind"] == "chat" and r["status"] == 200]
    phases = {}
    if reload_info:
        def phase(r):
            if r["end"] <= reload_info["start"]:
                return "before reload"
            if r["start"] >= reload_info["end"]:
                return "after reload"
            return "overlapping reload"
        for r in chat:
            ph = phases.setdefault(phase(r), {})
            key = f"model={r['model']} audit={r['audit_model']}"
            ph[key] = ph.get(key, 0) + 1
        for r in chat:
            if phase(r) == "before reload" and r["audit_model"] != args.expect_chat:
                wrong.append(r)
            if phase(r) == "after reload" and r["audit_model"] != args.expect_chat_after:
                wrong.append(r)
        during = [r for r in log.rows if r["start"] < reload_info["end"] and r["end"] > reload_info["start"]]
        reload_info["requests_in_flight_or_started"] = len(during)
        reload_info["failures_among_them"] = sum(1 for r in during if r["status"] != 200)
    else:
        wrong += [r for r in chat if r["audit_model"] != args.expect_chat]

    plan = {}
    for spec in args.plan:
        name, path = spec.split("=", 1)
        if path:
            p = json.load(open(path))
            plan[name] = {"total_bytes": p["total_bytes"],
                          "models": {m["name"]: {k: m[k] for k in m if k.endswith("_bytes")} for m in p["models"]}}

    report = {"duration_s": args.duration, "wall_s": wall, "summary": summary, "reload": reload_info,
              "chat_by_phase": phases, "rss_idle_bytes": rss_idle, "rss_end_bytes": rss_end,
              "peak_rss_bytes": peak, "plan": plan, "models": models,
              "timeline": timeline,
              "failed": [r for r in log.rows if r["status"] != 200],
              "wrong_model": wrong, "requests": log.rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)

    mib = lambda b: f"{b / 1048576:.0f} MiB" if b is not None else "?"
    print()
    print(f"{'kind':<11} {'count':>5} {'failed':>6} {'empty':>5} {'p50 s':>7} {'p95 s':>7} {'max s':>7}  answered by (audit model, sha256)")
    for kind, s in summary.items():
        mx = f"{s['max_s']:.2f}" if s["max_s"] is not None else "-"
        print(f"{kind:<11} {s['count']:>5} {s['failures']:>6} {s['empty'] if kind == 'completion' else '-':>5} {s['p50_s']:>7.2f} {s['p95_s']:>7.2f} {mx:>7}  "
              + ", ".join(f"{k}: {v}" for k, v in s["audit_models"].items()))
    if reload_info:
        print(f"\nreload at {reload_info['start']:.1f}s, {reload_info['seconds']:.1f}s, rc {reload_info['rc']}; "
              f"{reload_info['requests_in_flight_or_started']} requests overlapped it, "
              f"{reload_info['failures_among_them']} failed")
        for ph in ("before reload", "overlapping reload", "after reload"):
            if ph in phases:
                print(f"  chat {ph}: " + ", ".join(f"{k} x{v}" for k, v in phases[ph].items()))
    print(f"\nserver RSS after load (idle) {mib(rss_idle)}, at end {mib(rss_end)}, peak (VmHWM) {mib(peak)}")
    for name, p in plan.items():
        ratio = p["total_bytes"] / peak if peak else float("nan")
        print(f"plan estimate ({name}): {mib(p['total_bytes'])} (estimate / peak {ratio:.2f}); "
              + "; ".join(f"{m}: " + ", ".join(f"{k[:-6]} {mib(v)}" for k, v in f.items()) for m, f in p["models"].items()))
    print("\nper-model tokens per 5 s window (prompt+generated, from /metrics):")
    names = sorted({m for _, c in timeline for m in c})
    print("  t(s)  " + "  ".join(f"{n:>22}" for n in names))
    for (ta, a), (tb, b) in zip(timeline, timeline[1:]):
        cells = []
        for n in names:
            pa, ga = a.get(n, (0, 0))
            pb, gb = b.get(n, (0, 0))
            cells.append(f"{'p%d g%d' % (pb - pa, gb - ga):>22}")
        print(f"  {tb:5.0f} " + "  ".join(cells))
    bad = sum(s["failures"] for s in summary.values())
    if bad:
        print(f"\nFAILED: {bad} requests failed", file=sys.stderr)
        for r in report["failed"][:10]:
            print(f"  {r['kind']} at {r['start']:.1f}s status {r['status']}: {r['error']}", file=sys.stderr)
    if wrong:
        print(f"\nFAILED: {len(wrong)} requests answered by an unexpected model", file=sys.stderr)
        for r in wrong[:10]:
            print(f"  {r['kind']} at {r['start']:.1f}s: model={r.get('model')} audit={r['audit_model']}", file=sys.stderr)
    if reload_info and reload_info["rc"] != 0:
        print("FAILED: the reload was refused", file=sys.stderr)
    return 1 if bad or wrong or (reload_info and reload_info["rc"] != 0) else 0


# ---------------------------------------------------------------- speculation

def metrics(url):
    """{(metric, model): value} for the draft counters."""
    out = {}
    for line in get_text(url + "/metrics").splitlines():
        m = re.match(r'^(souffleur_(?:drafted|accepted_draft)_tokens_total)\{([^}]*)\}\s+(\S+)', line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
            out[(m.group(1), labels.get("model", ""))] = float(m.group(3))
    return out


def counters(url):
    """{model: (prompt tokens computed, generated tokens)} from /metrics."""
    out = {}
    for line in get_text(url + "/metrics").splitlines():
        m = re.match(r'^souffleur_(prompt|generated)_tokens_total\{model="([^"]*)"\}\s+(\S+)', line)
        if m:
            p, g = out.get(m.group(2), (0, 0))
            v = int(float(m.group(3)))
            out[m.group(2)] = (v, g) if m.group(1) == "prompt" else (p, v)
    return out


def stream_chat(url, body, timeout=900):
    """Streams a chat request; returns (status, text, ttft, total seconds, completion tokens, error)."""
    body = dict(body, stream=True, stream_options={"include_usage": True})
    req = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"content-type": "application/json"})
    t0 = time.monotonic()
    ttft = None
    text = []
    usage = None
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            for raw in r:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                ev = json.loads(data)
                if "error" in ev:
                    return 200, "".join(text), ttft, time.monotonic() - t0, None, json.dumps(ev["error"])
                if ev.get("usage"):
                    usage = ev["usage"]
                for ch in ev.get("choices", []):
                    piece = ch.get("delta", {}).get("content")
                    if piece:
                        if ttft is None:
                            ttft = time.monotonic() - t0
                        text.append(piece)
    except urllib.error.HTTPError as e:
        return e.code, "", None, time.monotonic() - t0, None, e.read().decode(errors="replace")
    except Exception as e:
        return 0, "", None, time.monotonic() - t0, None, f"{type(e).__name__}: {e}"
    total = time.monotonic() - t0
    return 200, "".join(text), ttft, total, (usage or {}).get("completion_tokens"), None


def speculation(args):
    url = args.url.rstrip("/")
    modes = args.modes.split(",")
    prompts = CHAT_QUESTIONS[:args.prompts]
    rows = []
    # Warm-up: one short request per mode (loads pages, first-use allocations).
    for mode in modes:
        stream_chat(url, {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4,
                          "temperature": 0, "speculation": mode})
    for rep in range(args.repeats):
        for pi, q in enumerate(prompts):
            order = modes if (pi + rep) % 2 == 0 else list(reversed(modes))
            for mode in order:
                before = metrics(url)
                body = {"messages": [{"role": "user", "content": q}], "max_tokens": args.max_tokens,
                        "temperature": 0, "speculation": mode}
                if args.model:
                    body["model"] = args.model
                status, text, ttft, total, ntok, err = stream_chat(url, body)
                after = metrics(url)
                delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
                drafted = sum(v for (m, _), v in delta.items() if m == "souffleur_drafted_tokens_total")
                accepted = sum(v for (m, _), v in delta.items() if m == "souffleur_accepted_draft_tokens_total")
                per_model = {f"{m.split('_')[1]}[{model}]": v for (m, model), v in delta.items() if v}
                decode = (ntok - 1) / (total - ttft) if ntok and ttft is not None and total > ttft and ntok > 1 else None
                rows.append({"rep": rep, "prompt": pi, "mode": mode, "status": status, "error": err,
                             "text": text, "ttft_s": ttft, "total_s": total, "completion_tokens": ntok,
                             "decode_tok_s": decode, "overall_tok_s": ntok / total if ntok else None,
                             "drafted": drafted, "accepted": accepted, "counters": per_model})
                d = f"{decode:.1f}" if decode else "-"
                print(f"  rep {rep} prompt {pi} {mode:<6} status {status} tokens {ntok} ttft "
                      f"{(ttft or 0):.2f}s total {total:.2f}s decode {d} tok/s drafted {drafted:.0f} "
                      f"accepted {accepted:.0f}" + (f" ERROR {err}" if err else ""), file=sys.stderr, flush=True)
    # Identical answers?
    mismatches = []
    for rep in range(args.repeats):
        for pi in range(len(prompts)):
            texts = {r["mode"]: r["text"] for r in rows if r["rep"] == rep and r["prompt"] == pi and not r["error"]}
            ref = texts.get("off")
            for mode, t in texts.items():
                if ref is not None and t != ref:
                    common = os.path.commonprefix([ref, t])
                    mismatches.append({"rep": rep, "prompt": pi, "question": prompts[pi], "mode": mode,
                                       "first_difference_at_char": len(common),
                                       "off": ref, mode: t})
    print()
    print(f"{'mode':<8} {'ok':>3} {'err':>3} {'tokens':>6} {'ttft p50 s':>10} {'decode tok/s':>12} "
          f"{'overall tok/s':>13} {'drafted':>7} {'accepted':>8} {'accept %':>8} {'same as off':>11}")
    summary = {}
    for mode in modes:
        rs = [r for r in rows if r["mode"] == mode]
        ok = [r for r in rs if not r["error"] and r["status"] == 200]
        tok = sum(r["completion_tokens"] or 0 for r in ok)
        # decode tokens/s over all requests together: tokens after the first / time after the first
        dec_time = sum(r["total_s"] - r["ttft_s"] for r in ok if r["ttft_s"] is not None)
        dec_tok = sum((r["completion_tokens"] or 1) - 1 for r in ok if r["ttft_s"] is not None)
        drafted = sum(r["drafted"] for r in ok)
        accepted = sum(r["accepted"] for r in ok)
        same = sum(1 for r in ok if not any(m["rep"] == r["rep"] and m["prompt"] == r["prompt"] and m["mode"] == mode
                                            for m in mismatches))
        s = {"ok": len(ok), "errors": len(rs) - len(ok), "tokens": tok,
             "ttft_p50_s": pct([r["ttft_s"] for r in ok if r["ttft_s"] is not None], 50),
             "decode_tok_s": dec_tok / dec_time if dec_time else None,
             "overall_tok_s": tok / sum(r["total_s"] for r in ok) if ok else None,
             "drafted": drafted, "accepted": accepted,
             "acceptance": accepted / drafted if drafted else None, "same_as_off": same}
        summary[mode] = s
        f = lambda v, fmt: (fmt % v) if v is not None else "-"
        print(f"{mode:<8} {s['ok']:>3} {s['errors']:>3} {tok:>6} {f(s['ttft_p50_s'], '%.2f'):>10} "
              f"{f(s['decode_tok_s'], '%.2f'):>12} {f(s['overall_tok_s'], '%.2f'):>13} {drafted:>7.0f} "
              f"{accepted:>8.0f} {f(100 * s['acceptance'] if s['acceptance'] is not None else None, '%.1f'):>8} "
              f"{same:>5}/{len(ok):<5}")
    errors = [r for r in rows if r["error"] or r["status"] != 200]
    for r in errors[:5]:
        print(f"ERROR mode {r['mode']} prompt {r['prompt']}: status {r['status']}: {r['error']}", file=sys.stderr)
    for m in mismatches:
        print(f"DIFFERENT ANSWER: mode {m['mode']} vs off, prompt {m['prompt']} ({m['question']!r}), "
              f"first difference at char {m['first_difference_at_char']}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"summary": summary, "mismatches": mismatches, "rows": rows,
                       "metrics_end": {f"{k[0]}[{k[1]}]": v for k, v in metrics(url).items()}}, fh, indent=1)
    return 1 if errors or mismatches else 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("mixed")
    m.add_argument("--url", required=True)
    m.add_argument("--pid", type=int, required=True)
    m.add_argument("--db", required=True)
    m.add_argument("--root", required=True)
    m.add_argument("--diff", required=True)
    m.add_argument("--souffleur", required=True)
    m.add_argument("--config", required=True)
    m.add_argument("--reload-config")
    m.add_argument("--reload-at", type=float, default=30)
    m.add_argument("--duration", type=float, default=60)
    m.add_argument("--chat-tokens", type=int, default=48)
    m.add_argument("--seed", type=int, default=42)
    m.add_argument("--expect-completion", default="coder-0.5b")
    m.add_argument("--expect-chat", default="coder-1.5b")
    m.add_argument("--expect-chat-after", default="coder-0.5b-chat")
    m.add_argument("--expect-review", default="coder-1.5b")
    m.add_argument("--plan", action="append", default=[], help="NAME=plan.json (repeatable)")
    m.add_argument("--json")
    s = sub.add_parser("speculation")
    s.add_argument("--url", required=True)
    s.add_argument("--model")
    s.add_argument("--modes", default="off,ngram,draft")
    s.add_argument("--prompts", type=int, default=8)
    s.add_argument("--repeats", type=int, default=1)
    s.add_argument("--max-tokens", type=int, default=128)
    s.add_argument("--json")
    a = ap.parse_args()
    sys.exit(mixed(a) if a.cmd == "mixed" else speculation(a))


if __name__ == "__main__":
    main()
