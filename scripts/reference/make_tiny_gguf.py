#!/usr/bin/env python3
"""Write the tiny random qwen2 model (engine/tests/fixtures/tiny/qwen2/, made by
make_tiny_models.py) as an F32 GGUF file with llama.cpp's qwen2 tensor names
and metadata, load it with llama.cpp, and record llama.cpp's logits.

Output: engine/tests/fixtures/tiny/qwen2-gguf/{model.gguf, reference.json}

Tokenizer: tokenizer.ggml.model "gpt2", pre "qwen2", tokens = the byte-level
BPE vocab of tokenizer.json (special tokens are CONTROL), padded with
"[PAD<id>]" (UNUSED) up to the embedding rows, merges as "a b" strings.
Tied embeddings: no output.weight tensor (llama.cpp reuses token_embd).

Usage: python make_tiny_gguf.py
"""
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGUFWriter, Keys, TokenType
from safetensors.numpy import load_file
from tokenizers import Tokenizer

import llama_cpp
from llama_cpp import Llama

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
TINY = os.path.join(ROOT, "engine", "tests", "fixtures", "tiny")
SRC = os.path.join(TINY, "qwen2")
DST = os.path.join(TINY, "qwen2-gguf")
CORPUS = os.path.join(ROOT, "engine", "tests", "fixtures", "corpus")
N_GEN = 16
DECIMALS = 5


def hf_to_gguf_name(name):
    if name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if name == "model.norm.weight":
        return "output_norm.weight"
    if name == "lm_head.weight":
        return "output.weight"
    parts = name.split(".")
    assert parts[0] == "model" and parts[1] == "layers", name
    i, rest = parts[2], ".".join(parts[3:])
    table = {
        "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.o_proj.weight": "attn_output.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    return "blk.%s.%s" % (i, table[rest])


def write_gguf(path):
    with open(os.path.join(SRC, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(SRC, "tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    n_vocab = cfg["vocab_size"]
    rope_theta = cfg.get("rope_theta") or cfg["rope_parameters"]["rope_theta"]

    # Vocabulary in id order, padded to the embedding size.
    id_to_tok = {i: t for t, i in tj["model"]["vocab"].items()}
    types = {i: TokenType.NORMAL for i in id_to_tok}
    for at in tj["added_tokens"]:
        id_to_tok[at["id"]] = at["content"]
        types[at["id"]] = TokenType.CONTROL if at["special"] else TokenType.USER_DEFINED
    tokens, toktypes = [], []
    for i in range(n_vocab):
        if i in id_to_tok:
            tokens.append(id_to_tok[i])
            toktypes.append(types[i])
        else:
            tokens.append("[PAD%d]" % i)
            toktypes.append(TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    special = {at["content"]: at["id"] for at in tj["added_tokens"]}

    w = GGUFWriter(path, arch="qwen2")
    w.add_name("souffleur-tiny-qwen2-random")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base(float(rope_theta))
    w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(toktypes)
    w.add_token_merges(merges)
    w.add_bos_token_id(special["<|endoftext|>"])
    w.add_eos_token_id(special["<|endoftext|>"])
    w.add_pad_token_id(special["<|endoftext|>"])
    w.add_add_bos_token(False)
    w.add_uint32(Keys.Tokenizer.FIM_PRE_ID, special["<|fim_prefix|>"])
    w.add_uint32(Keys.Tokenizer.FIM_SUF_ID, special["<|fim_suffix|>"])
    w.add_uint32(Keys.Tokenizer.FIM_MID_ID, special["<|fim_middle|>"])

    tensors = load_file(os.path.join(SRC, "model.safetensors"))
    for name in sorted(tensors):
        # qwen2 uses NEOX rope in llama.cpp: no q/k permutation needed.
        w.add_tensor(hf_to_gguf_name(name), np.ascontiguousarray(tensors[name], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote %s (%d bytes)" % (path, os.path.getsize(path)))


def main():
    os.makedirs(DST, exist_ok=True)
    path = os.path.join(DST, "model.gguf")
    write_gguf(path)
    with open(os.path.join(SRC, "reference.json"), encoding="utf-8") as f:
        hf_ref = json.load(f)

    # F32 KV cache so that llama.cpp computes (nearly) the same math as HF.
    llm = Llama(model_path=path, n_ctx=256, n_batch=256, n_ubatch=256, n_threads=2,
                n_threads_batch=2, logits_all=True, seed=1234, verbose=False,
                type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32)
    prompts = []
    for hp in hf_ref["prompts"]:
        text = hp["prompt"]
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        ids_plain = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        if ids != hp["ids"]:
            print("WARNING: llama.cpp ids differ from HF ids for %r:\n  %s\n  %s" % (text, ids, hp["ids"]))
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[:len(ids)], dtype=np.float32)
        hf_logits = np.array(hp["logits"], dtype=np.float32)
        diff = float(np.abs(logits - hf_logits).max()) if ids == hp["ids"] else None
        gen = []
        row = logits[-1]
        for _ in range(N_GEN):
            tok = int(np.argmax(row))
            gen.append(tok)
            llm.eval([tok])
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        prompts.append({
            "prompt": text,
            "ids": ids,
            "ids_special_false": ids_plain,
            "ids_match_hf": ids == hp["ids"],
            "max_abs_diff_vs_hf_logits": None if diff is None else round(diff, 6),
            "logits": [[round(float(v), DECIMALS) for v in r] for r in logits],
            "greedy_ids": gen,
            "greedy_match_hf": gen == hp["greedy_ids"],
        })
        print("%r: %d ids (match hf: %s), max|llama.cpp-hf| = %s, greedy match: %s"
              % (text[:30], len(ids), ids == hp["ids"], diff, gen == hp["greedy_ids"]))

    # Whole-corpus tokenization by llama.cpp (pre-tokenizer "qwen2", special=False),
    # compared with the HF tokenizer.json (special tokens not parsed either).
    hf_tok = Tokenizer.from_file(os.path.join(SRC, "tokenizer.json"))
    hf_tok.encode_special_tokens = True
    corpus = []
    for name in sorted(os.listdir(CORPUS)):
        if name == "SOURCES.md":
            continue
        with open(os.path.join(CORPUS, name), "rb") as f:
            data = f.read()
        ids = llm.tokenize(data, add_bos=False, special=False)
        hf_ids = hf_tok.encode(data.decode("utf-8"), add_special_tokens=False).ids
        entry = {"file": name, "ids": ids, "matches_hf": ids == hf_ids}
        if ids != hf_ids:
            k = next((j for j in range(min(len(ids), len(hf_ids))) if ids[j] != hf_ids[j]),
                     min(len(ids), len(hf_ids)))
            entry["first_difference_at"] = k
            entry["hf_ids"] = hf_ids
        corpus.append(entry)
        print("corpus %-26s %5d ids, matches HF: %s" % (name, len(ids), ids == hf_ids))

    ref = {
        "description": "llama.cpp reference for model.gguf (the tiny random qwen2 of ../qwen2 written as "
                       "F32 GGUF). 'ids' = Llama.tokenize(prompt, add_bos=False, special=True) (special "
                       "tokens in the text are parsed, like the HF ids); 'ids_special_false' = same with "
                       "special=False. 'logits'[pos][token] = full logits (rounded to %d decimals) of one "
                       "batched eval; 'greedy_ids' = %d argmax tokens, one eval per token. KV cache F32. "
                       "'corpus_tokens' = llama.cpp ids (special=False) of every corpus file; "
                       "'matches_hf' compares with tokenizer.json (HF applies NFC first, llama.cpp does "
                       "not normalize, so NFD text differs; 'hf_ids' given where they differ)."
                       % (DECIMALS, N_GEN),
        "generator": "scripts/reference/make_tiny_gguf.py",
        "source_model": "../qwen2",
        "settings": {"n_ctx": 256, "n_threads": 2, "type_k": "f32", "type_v": "f32", "add_bos": False},
        "versions": {"llama_cpp_python": llama_cpp.__version__, "gguf": _gguf_version()},
        "system_info": llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip(),
        "vocab_size": int(llm.n_vocab()),
        "prompts": prompts,
        "corpus_tokens": corpus,
    }
    with open(os.path.join(DST, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    for n in sorted(os.listdir(DST)):
        print("   %-16s %8d" % (n, os.path.getsize(os.path.join(DST, n))))
    bad = [p for p in prompts if not p["ids_match_hf"] or not p["greedy_match_hf"]
           or p["max_abs_diff_vs_hf_logits"] > 1e-3]
    if bad:
        print("WARNING: %d prompt(s) disagree with the HF reference" % len(bad), file=sys.stderr)


def _gguf_version():
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:  # pragma: no cover
        return "unknown"


if __name__ == "__main__":
    main()
