#!/usr/bin/env python3
"""Reference fixtures for the default model (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF),
computed with llama.cpp through llama-cpp-python on the CPU (benches/setup_peer.sh builds
it into .venv-peer; .venv-ref works too).

Writes engine/tests/fixtures/qwen2_reference.json:
  * llama.cpp token ids of every corpus file and of short strings;
  * for plain code prompts and fill-in-the-middle prompts (<|fim_prefix|>P<|fim_suffix|>S
    <|fim_middle|>, built from the model's own marker ids) cut from the corpus: the top-5
    logits at every prompt position and a 24-token pure-argmax continuation.

Usage: .venv-peer/bin/python scripts/reference/qwen2_reference.py [--model PATH]
"""
import argparse
import json
import os
import sys

import numpy as np
from llama_cpp import Llama

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smollm2_reference import (CORPUS, EXTRA_STRINGS, FIX, build_info, read_corpus,  # noqa: E402
                               sha256_file, topk, write_json)

MODEL_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
N_CTX = 2048
N_THREADS = 2
N_GEN = 24
TOP_K = 5

# (corpus file, first line (1-based), lines, keep-chars-of-last-line or None)
CODE_PROMPTS = [
    ("python_textwrap.py", 1, 16, None),
    ("rust_hex.rs", 1, 11, 30),
    ("c_ggml_quants.c", 1, 13, 20),
    ("js_semver_comparator.js", 1, 14, None),
    ("go_proxy.go", 27, 9, 12),
]
# (corpus file, first line, prefix lines, lines removed (the middle), suffix lines)
FIM_PROMPTS = [
    ("python_heapq.py", 1, 14, 1, 6),
    ("rust_either.rs", 1, 6, 2, 6),
    ("ts_compute_line_diff.ts", 26, 8, 1, 5),
    ("sh_pyenv_which.sh", 1, 7, 1, 4),
]


def lines_of(name):
    return read_corpus(name).decode("utf-8").splitlines(keepends=True)


def code_prompt(name, first, n, keep):
    sel = lines_of(name)[first - 1:first - 1 + n]
    if keep is not None:
        sel[-1] = sel[-1][:keep]
    return "".join(sel)


def fim_parts(name, first, n_pre, n_mid, n_suf):
    lines = lines_of(name)[first - 1:]
    prefix = "".join(lines[:n_pre])
    suffix = "".join(lines[n_pre + n_mid:n_pre + n_mid + n_suf])
    return prefix, suffix


def run(llm, name, ids, extra):
    llm.reset()
    llm.eval(ids)
    scores = np.array(llm.scores[:len(ids)], dtype=np.float32)
    positions = []
    for p in range(len(ids)):
        tid, tl = topk(scores[p], TOP_K)
        positions.append({"top_ids": tid, "top_logits": tl})
    gen, steps = [], []
    row = scores[-1]
    for _ in range(N_GEN):
        tok = int(np.argmax(row))
        tid, tl = topk(row, TOP_K)
        steps.append({"top_ids": tid, "top_logits": tl})
        gen.append(tok)
        llm.eval([tok])
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    text = llm.detokenize(gen).decode("utf-8", "replace")
    print("%-34s %4d prompt tokens -> %r" % (name, len(ids), text[:50]))
    out = {"name": name, "prompt_ids": ids, "positions": positions, "greedy_ids": gen,
           "greedy_text": text, "greedy_steps": steps}
    out.update(extra)
    return out


def main():
    ap = argparse.ArgumentParser()
    home = os.environ.get("SOUFFLEUR_HOME", os.path.expanduser("~/.souffleur"))
    ap.add_argument("--model", default=os.path.join(home, "models", MODEL_NAME))
    args = ap.parse_args()
    llm = Llama(model_path=args.model, n_ctx=N_CTX, n_batch=512, n_ubatch=512,
                n_threads=N_THREADS, n_threads_batch=N_THREADS, logits_all=True, seed=0,
                flash_attn=False, verbose=False)
    enc = lambda s: llm.tokenize(s.encode("utf-8"), add_bos=False, special=False)
    files = [{"file": n, "ids": enc(read_corpus(n).decode("utf-8"))}
             for n in sorted(os.listdir(CORPUS)) if n != "SOURCES.md"]
    strings = [{"text": s, "ids": enc(s)} for s in EXTRA_STRINGS]
    marker = lambda m: llm.tokenize(m.encode(), add_bos=False, special=True)
    pre, suf, mid = (marker(m)[0] for m in ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"))
    prompts = []
    for name, first, n, keep in CODE_PROMPTS:
        prompts.append(run(llm, "%s:%d+%d" % (name, first, n), enc(code_prompt(name, first, n, keep)),
                           {"kind": "code"}))
    for name, first, n_pre, n_mid, n_suf in FIM_PROMPTS:
        prefix, suffix = fim_parts(name, first, n_pre, n_mid, n_suf)
        ids = [pre] + enc(prefix) + [suf] + enc(suffix) + [mid]
        prompts.append(run(llm, "fim %s:%d+%d" % (name, first, n_pre), ids,
                           {"kind": "fim", "prefix": prefix, "suffix": suffix}))
    write_json(os.path.join(FIX, "qwen2_reference.json"), {
        "description": "llama.cpp CPU reference for Qwen2.5-Coder-0.5B-Instruct Q4_K_M: token ids "
                       "(add_bos=False, special=False) of corpus files and strings; for code and FIM "
                       "prompts the top-5 raw logits (4 decimals) at every position and a 24-token "
                       "pure-argmax continuation, one token per eval ('greedy_steps[i]' holds the "
                       "top-5 that chose greedy_ids[i]).",
        "generator": "scripts/reference/qwen2_reference.py",
        "settings": {"n_ctx": N_CTX, "n_threads": N_THREADS, "n_batch": 512, "logits_all": True,
                     "flash_attn": False, "n_gen": N_GEN, "top_k_recorded": TOP_K},
        "build": build_info(),
        "model": {"file": os.path.basename(args.model), "sha256": sha256_file(args.model)},
        "fim_ids": [pre, suf, mid],
        "files": files,
        "strings": strings,
        "prompts": prompts,
    })


if __name__ == "__main__":
    main()
