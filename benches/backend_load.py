#!/usr/bin/env python3
"""Souffleur in front of llama.cpp servers (issue 16): the latency Souffleur's path adds,
and the throughput of two replicas behind Souffleur against one replica asked directly.

Starts two `llama-server` replicas (scripts/setup_llama_server.sh builds it) serving
Qwen2.5-Coder-0.5B with one thread each, and `souffleur serve --local` (release build)
with two remote models: `one` (replica A only) and `two` (replicas A and B), kind
`llama.cpp-infill`. Requests are Tabby-shape single-line completions at cursors drawn
(seeded) from the Python standard library's own source files, which nobody here wrote;
each direct request sends the same text to llama.cpp's `/infill` with the same limits
(32 tokens, stop at the line's end), short enough that Souffleur cuts nothing.

  1. Added latency: one client; each cursor is first sent directly to replica A once
     (unmeasured: it fills llama.cpp's prompt cache), then asked directly and through
     Souffleur's `one` model (order alternating), both with the prompt cached, so both
     do the same work upstream; p50/p99 of both and of the per-cursor difference.
  2. Throughput: 16 clients for the same requests, directly against replica A, then
     through Souffleur's `two` model: completions per second and p50/p99 latency.

    python3 benches/backend_load.py [--requests 40] [--clients 16] [--per-client 6]
        [--binary target/release/souffleur] [--out results.json]

Standard library only.
"""

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def post(url: str, body: dict, timeout: float = 300) -> tuple[float, dict]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=timeout) as r:
        payload = json.loads(r.read())
    return time.perf_counter() - start, payload


def wait_http(url: str, secs: float = 120) -> None:
    deadline = time.time() + secs
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def cursors(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(path, prefix, suffix) at random places inside lines of stdlib files."""
    rng = random.Random(seed)
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    out = []
    while len(out) < n:
        path = rng.choice(files)
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        lines = text.split("\n")
        if len(lines) < 40:
            continue
        i = rng.randrange(20, len(lines) - 5)
        line = lines[i]
        if len(line.strip()) < 12:
            continue
        cut = rng.randrange(len(line) - len(line.lstrip()) + 4, len(line))
        prefix = "\n".join(lines[:i]) + "\n" + line[:cut]
        suffix = line[cut:] + "\n" + "\n".join(lines[i + 1 :])
        out.append((path.name, prefix[-1800:], suffix[:120]))
    return out


def direct(base: str, prefix: str, suffix: str) -> float:
    secs, _ = post(
        f"{base}/infill",
        {"input_prefix": prefix, "input_suffix": suffix, "input_extra": [], "n_predict": 32,
         "temperature": 0, "seed": 0, "stop": ["\n"], "cache_prompt": True},
    )
    return secs


def souffleur(base: str, model: str, client: int, path: str, prefix: str, suffix: str) -> float:
    secs, payload = post(
        f"{base}/v1/completions",
        {"language": "python", "model": model, "temperature": 0,
         "segments": {"prefix": prefix, "suffix": suffix, "filepath": f"c{client}/{path}"}},
    )
    if "choices" not in payload:
        raise SystemExit(f"bad answer: {payload}")
    return secs


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def run_clients(n_clients: int, work: list, call) -> tuple[float, list[float]]:
    """Runs `work` (lists of cursors, one per client) concurrently; wall time, latencies."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for path, prefix, suffix in work[c]:
            secs = call(c, path, prefix, suffix)
            with lock:
                latencies.append(secs)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, latencies


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--per-client", type=int, default=6)
    ap.add_argument("--binary", default=str(ROOT / "target/release/souffleur"))
    ap.add_argument("--out")
    ap.add_argument("--latency-only", action="store_true", help="skip the throughput part")
    args = ap.parse_args()
    home = Path(os.environ.get("SOUFFLEUR_HOME", Path.home() / ".souffleur"))
    model = home / "models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    server = ROOT / ".llama-server/bin/llama-server"
    for p, how in [(model, "souffleur model fetch-default"), (server, "bash scripts/setup_llama_server.sh"),
                   (Path(args.binary), "cargo build --release -p cli")]:
        if not p.exists():
            raise SystemExit(f"{p} missing: {how}")
    procs = []
    try:
        ports = [free_port(), free_port()]
        for port in ports:
            procs.append(subprocess.Popen(
                [str(server), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
                 "-c", "16384", "-np", "8", "-t", "1", "-tb", "1"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        replicas = [f"http://127.0.0.1:{p}" for p in ports]
        for r in replicas:
            wait_http(f"{r}/health")
        tmp = tempfile.mkdtemp()
        shome = Path(tmp) / "home"
        (shome / "models").mkdir(parents=True)
        (shome / "config.toml").write_text(
            '[[models]]\nname = "one"\nengine = "llama.cpp-infill"\nroles = ["completion"]\n'
            f'[models.backend]\nreplicas = ["{replicas[0]}"]\nmax_in_flight = 32\n\n'
            '[[models]]\nname = "two"\nengine = "llama.cpp-infill"\nroles = ["completion"]\n'
            f'[models.backend]\nreplicas = ["{replicas[0]}", "{replicas[1]}"]\nmax_in_flight = 32\n\n'
            f'[limits]\nmax_concurrent_per_token = {args.clients * 2}\n')
        env = dict(os.environ, SOUFFLEUR_HOME=str(shome))
        sproc = subprocess.Popen([args.binary, "serve", "--local", "--port", "0"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(sproc)
        banner = sproc.stdout.readline()
        base = next(w for w in banner.split() if w.startswith("http://127.0.0.1:"))
        threading.Thread(target=lambda: sproc.stdout.read(), daemon=True).start()

        # Warm-up: both replicas, both paths.
        for c in cursors(4, 1):
            for r in replicas:
                direct(r, c[1], c[2])
            souffleur(base, "one", 0, *c)

        # 1. Added latency, one client.
        pairs = []
        for i, (path, prefix, suffix) in enumerate(cursors(args.requests, 7)):
            direct(replicas[0], prefix, suffix)
            if i % 2 == 0:
                d = direct(replicas[0], prefix, suffix)
                s = souffleur(base, "one", 0, path, prefix, suffix)
            else:
                s = souffleur(base, "one", 0, path, prefix, suffix)
                d = direct(replicas[0], prefix, suffix)
            pairs.append((d, s))
        d_lat = [p[0] for p in pairs]
        s_lat = [p[1] for p in pairs]
        diff = [p[1] - p[0] for p in pairs]
        added = {
            "requests": len(pairs),
            "direct_p50_ms": pct(d_lat, 50) * 1e3, "direct_p99_ms": pct(d_lat, 99) * 1e3,
            "souffleur_p50_ms": pct(s_lat, 50) * 1e3, "souffleur_p99_ms": pct(s_lat, 99) * 1e3,
            "added_p50_ms": statistics.median(diff) * 1e3, "added_p99_ms": pct(diff, 99) * 1e3,
        }

        result = {"added_latency": added}
        if args.latency_only:
            print(json.dumps(result, indent=2))
            if args.out:
                Path(args.out).write_text(json.dumps(result, indent=2))
            return

        # 2. Throughput, many clients: fresh cursors for each configuration.
        n = args.clients * args.per_client
        def split(cs):
            return [cs[c * args.per_client:(c + 1) * args.per_client] for c in range(args.clients)]
        wall_d, lat_d = run_clients(args.clients, split(cursors(n, 11)),
                                    lambda c, p, pre, suf: direct(replicas[0], pre, suf))
        wall_s, lat_s = run_clients(args.clients, split(cursors(n, 13)),
                                    lambda c, p, pre, suf: souffleur(base, "two", c, p, pre, suf))
        throughput = {
            "clients": args.clients, "requests": n,
            "direct_one_replica_per_s": n / wall_d,
            "direct_p50_ms": pct(lat_d, 50) * 1e3, "direct_p99_ms": pct(lat_d, 99) * 1e3,
            "souffleur_two_replicas_per_s": n / wall_s,
            "souffleur_p50_ms": pct(lat_s, 50) * 1e3, "souffleur_p99_ms": pct(lat_s, 99) * 1e3,
        }
        throughput["ratio"] = throughput["souffleur_two_replicas_per_s"] / throughput["direct_one_replica_per_s"]
        metrics = urllib.request.urlopen(f"{base}/metrics").read().decode()
        per_replica = [l for l in metrics.splitlines()
                       if l.startswith("souffleur_backend_requests_total{model=\"two\"")]
        result = {"added_latency": added, "throughput": throughput, "two_replicas_requests": per_replica}
        print(json.dumps(result, indent=2))
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2))
    finally:
        for p in procs:
            p.kill()
            p.wait()


if __name__ == "__main__":
    sys.exit(main())
