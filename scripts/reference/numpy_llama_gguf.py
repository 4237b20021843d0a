#!/usr/bin/env python3
"""Independent float32/float64 NumPy forward pass of a llama-architecture GGUF
(weights dequantized with the `gguf` package), used to cross-check the
llama.cpp logits in smollm2_logits.json.

It implements the plain math: token embedding, RMSNorm, rotary embedding in
llama.cpp's "normal" mode (adjacent pairs, GGUF q/k weights are already
permuted for it), grouped-query causal attention, SwiGLU MLP, final norm,
tied or untied output.  No activation quantization, so it is what a
"dequantize everything to f32" engine would compute.

With --emulate, it additionally mimics the roundings of llama.cpp's CPU
backend: activations quantized per 32-block to Q8_1 (for Q4_1 weights) or
Q8_0 (for Q8_0 weights) with fp16 scales, K/V cache in fp16, Q and the
softmax probabilities rounded to fp16 before the attention matmuls.  This
should land very close to llama.cpp's own logits.

Usage: python numpy_llama_gguf.py [--model PATH] [--prompts N] [--emulate]
       python numpy_llama_gguf.py --write   # -> engine/tests/fixtures/smollm2_logits_dequant.json
Prints, per prompt, the max |logit| difference against the fixture's top-5
entries and whether the greedy continuation is reproduced.
"""
import argparse
import json
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from smollm2_reference import FIX, default_model_path  # noqa: E402


class Model:
    def __init__(self, path, dtype=np.float32, emulate=False):
        r = GGUFReader(path)
        self.dtype = dtype
        f = r.fields

        def val(key):
            fld = f[key]
            return fld.parts[fld.data[0]][0]

        arch = bytes(f["general.architecture"].parts[f["general.architecture"].data[0]]).decode()
        self.n_layer = int(val(arch + ".block_count"))
        self.n_head = int(val(arch + ".attention.head_count"))
        self.n_kv = int(val(arch + ".attention.head_count_kv"))
        self.d = int(val(arch + ".embedding_length"))
        self.eps = float(val(arch + ".attention.layer_norm_rms_epsilon"))
        self.theta = float(val(arch + ".rope.freq_base"))
        self.hd = self.d // self.n_head
        self.emulate = emulate
        self.w = {}
        self.q = {}
        for t in r.tensors:
            a = dequantize(t.data, t.tensor_type)
            self.w[t.name] = np.asarray(a, dtype=dtype).reshape([int(x) for x in reversed(t.shape)] if a.ndim > 1 else -1)
            if emulate and t.tensor_type.name in ("Q4_1", "Q8_0"):
                self.q[t.name] = split_blocks(t.tensor_type.name, np.asarray(t.data))
        self.out_name = "output.weight" if "output.weight" in self.w else "token_embd.weight"

    def mm(self, x, name):
        """x (T, in) @ W(name).T, optionally with llama.cpp's activation quantization."""
        if not self.emulate or name not in self.q:
            return x @ self.w[name].T
        kind, qw, dw, mw = self.q[name]
        qa, da16, sa16 = quant_q8(x.astype(np.float32))
        out = np.empty((x.shape[0], qw.shape[0]), dtype=np.float64)
        step = 4096
        for r0 in range(0, qw.shape[0], step):
            qi = np.einsum("tbj,rbj->trb", qa, qw[r0:r0 + step], dtype=np.int32, optimize=True).astype(np.float64)
            acc = (qi * dw[None, r0:r0 + step, :] * da16[:, None, :]).sum(-1)
            if kind == "Q4_1":
                acc += (mw[None, r0:r0 + step, :] * sa16[:, None, :]).sum(-1)
            out[:, r0:r0 + step] = acc
        return out.astype(self.dtype)

    def f16(self, x):
        return x.astype(np.float16).astype(self.dtype) if self.emulate else x

    def rms(self, x, w):
        x64 = x.astype(np.float64)
        s = np.sqrt((x64 * x64).mean(-1, keepdims=True) + self.eps)
        return (x64 / s).astype(self.dtype) * w

    def rope(self, x, pos):
        # x: (T, H, hd); adjacent pairs (x[2i], x[2i+1])
        hd = x.shape[-1]
        inv = self.theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
        ang = pos[:, None].astype(np.float64) * inv[None, :]
        c = np.cos(ang)[:, None, :].astype(self.dtype)
        s = np.sin(ang)[:, None, :].astype(self.dtype)
        x0, x1 = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * c - x1 * s
        out[..., 1::2] = x0 * s + x1 * c
        return out

    def forward(self, ids, cache=None):
        """Logits for `ids`.  With `cache` (a list, initially empty) keys and
        values of earlier calls are reused, so tokens can be fed incrementally."""
        T = len(ids)
        past = cache[0][0].shape[0] if cache else 0
        pos = np.arange(past, past + T)
        x = self.w["token_embd.weight"][ids].astype(self.dtype)
        mask = np.triu(np.full((T, past + T), -np.inf, dtype=self.dtype), past + 1)
        g = self.n_head // self.n_kv
        for i in range(self.n_layer):
            p = "blk.%d." % i
            h = self.rms(x, self.w[p + "attn_norm.weight"])
            q = self.mm(h, p + "attn_q.weight").reshape(T, self.n_head, self.hd)
            k = self.mm(h, p + "attn_k.weight").reshape(T, self.n_kv, self.hd)
            v = self.f16(self.mm(h, p + "attn_v.weight").reshape(T, self.n_kv, self.hd))
            q, k = self.f16(self.rope(q, pos)), self.f16(self.rope(k, pos))
            if cache is not None:
                if len(cache) <= i:
                    cache.append((k, v))
                else:
                    k = np.concatenate([cache[i][0], k])
                    v = np.concatenate([cache[i][1], v])
                    cache[i] = (k, v)
            att = np.empty((T, self.n_head, self.hd), dtype=self.dtype)
            for hh in range(self.n_head):
                kv = hh // g
                s = (q[:, hh, :] @ k[:, kv, :].T) / np.sqrt(self.hd) + mask
                s = np.exp(s - s.max(-1, keepdims=True))
                s /= s.sum(-1, keepdims=True)
                att[:, hh, :] = self.f16(s) @ v[:, kv, :]
            x = x + self.mm(att.reshape(T, self.d), p + "attn_output.weight")
            h = self.rms(x, self.w[p + "ffn_norm.weight"])
            gate = self.mm(h, p + "ffn_gate.weight")
            up = self.mm(h, p + "ffn_up.weight")
            x = x + self.mm((gate / (1 + np.exp(-gate))) * up, p + "ffn_down.weight")
        x = self.rms(x, self.w["output_norm.weight"])
        return self.mm(x, self.out_name)


def split_blocks(kind, raw):
    """Raw GGUF rows (rows, bytes) -> (kind, int8 quants (rows, nb, 32), d, m) as float64."""
    rows = raw.shape[0]
    if kind == "Q4_1":
        b = raw.reshape(rows, -1, 20)
        d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float64)
        m = b[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float64)
        qs = b[..., 4:20]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.int8)
        return kind, q, d, m
    b = raw.reshape(rows, -1, 34)
    d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float64)
    q = b[..., 2:34].copy().view(np.int8)
    return kind, q, d, None


def quant_q8(x):
    """ggml quantize_row_q8_1 (q8_0 is the same without the sum): per 32-block
    d = amax/127 (stored fp16), q = round(x/d), s = fp16(d * sum(q))."""
    T, n = x.shape
    xb = x.reshape(T, n // 32, 32)
    amax = np.abs(xb).max(-1)
    d = amax / np.float32(127)
    idv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
    q = np.round(xb * idv[..., None]).astype(np.int8)
    d16 = d.astype(np.float16).astype(np.float64)
    s16 = (d.astype(np.float64) * q.sum(-1)).astype(np.float16).astype(np.float64)
    return q, d16, s16


def topk(row, k=5):
    idx = np.argsort(-row, kind="stable")[:k]
    return [int(i) for i in idx], [round(float(row[i]), 4) for i in idx]


def logsumexp(row):
    m = float(np.max(row))
    return m + float(np.log(np.sum(np.exp(row.astype(np.float64) - m))))


def write_fixture(m, ref, path, n_gen):
    """Same prompts as smollm2_logits.json, computed with the plain
    dequantized-weights math in float64 (no llama.cpp roundings)."""
    prompts, summary = [], []
    for p in ref["prompts"]:
        ids = p["prompt_ids"]
        cache = []
        logits = m.forward(ids, cache)
        positions = []
        for row in logits:
            t, l = topk(row)
            positions.append({"top_ids": t, "top_logits": l, "logsumexp": round(logsumexp(row), 4)})
        gen, steps = [], []
        row = logits[-1]
        for _ in range(n_gen):
            tok = int(np.argmax(row))
            t, l = topk(row)
            steps.append({"top_ids": t, "top_logits": l})
            gen.append(tok)
            row = m.forward([tok], cache)[0]
        top1 = sum(a["top_ids"][0] == b["top_ids"][0] for a, b in zip(positions, p["positions"]))
        dmax = max(abs(float(logits[i][t]) - l) for i, pos in enumerate(p["positions"])
                   for t, l in zip(pos["top_ids"], pos["top_logits"]))
        same = next((k for k in range(n_gen) if gen[k] != p["greedy_ids"][k]), n_gen)
        summary.append({"name": p["name"], "top1_agree": top1, "n_positions": len(ids),
                        "max_abs_diff_on_llama_cpp_top5": round(dmax, 4),
                        "greedy_common_prefix": same})
        print(summary[-1])
        prompts.append({"name": p["name"], "source_file": p["source_file"], "prompt": p["prompt"],
                        "prompt_ids": ids, "positions": positions, "greedy_ids": gen,
                        "greedy_steps": steps})
    out = {
        "description": "Plain-math reference for the default model: every GGUF tensor dequantized "
                       "(gguf.quants.dequantize) and the llama forward pass computed in float64 NumPy "
                       "(no activation quantization, no fp16 KV cache). Same prompts and layout as "
                       "smollm2_logits.json (top-5 raw logits + logsumexp per prompt position, 32 greedy "
                       "tokens decoded incrementally with a KV cache). An engine that dequantizes the "
                       "weights to f32 should match this to ~1e-3; llama.cpp (Q8_1-quantized "
                       "activations, fp16 KV) does not, see 'comparison_with_llama_cpp'.",
        "generator": "scripts/reference/numpy_llama_gguf.py --write",
        "dtype": "float64",
        "model": ref["model"],
        "comparison_with_llama_cpp": summary,
        "prompts": prompts,
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print("wrote %s (%d bytes)" % (path, os.path.getsize(path)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=default_model_path())
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--f64", action="store_true")
    ap.add_argument("--emulate", action="store_true")
    ap.add_argument("--write", action="store_true",
                    help="write engine/tests/fixtures/smollm2_logits_dequant.json (float64, no emulation)")
    args = ap.parse_args()
    with open(os.path.join(FIX, "smollm2_logits.json"), encoding="utf-8") as f:
        ref = json.load(f)
    if args.write:
        m = Model(args.model, np.float64)
        write_fixture(m, ref, os.path.join(FIX, "smollm2_logits_dequant.json"), len(ref["prompts"][0]["greedy_ids"]))
        return
    m = Model(args.model, np.float64 if args.f64 else np.float32, emulate=args.emulate)
    for p in ref["prompts"][:args.prompts]:
        ids = p["prompt_ids"] + p["greedy_ids"]
        n = len(p["prompt_ids"])
        logits = m.forward(ids)
        dp = max(abs(float(logits[i][t]) - l) for i, pos in enumerate(p["positions"])
                 for t, l in zip(pos["top_ids"], pos["top_logits"]))
        dg = max(abs(float(logits[n - 1 + i][t]) - l) for i, st in enumerate(p["greedy_steps"])
                 for t, l in zip(st["top_ids"], st["top_logits"]))
        top1 = sum(int(np.argmax(logits[i])) == pos["top_ids"][0] for i, pos in enumerate(p["positions"]))
        greedy = [int(np.argmax(logits[n - 1 + i])) for i in range(len(p["greedy_ids"]))]
        print("%-26s prompt maxdiff %.3f (top1 agree %d/%d)  greedy-steps maxdiff %.3f  greedy same: %s"
              % (p["source_file"], dp, top1, n, dg, greedy == p["greedy_ids"]))


if __name__ == "__main__":
    main()
