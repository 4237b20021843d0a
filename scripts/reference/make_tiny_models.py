#!/usr/bin/env python3
"""Tiny random-weight Hugging Face models + reference logits.

For each architecture (llama, qwen2, starcoder2) this writes, under
engine/tests/fixtures/tiny/<arch>/:
  config.json, model.safetensors (float32), tokenizer.json, tokenizer_config.json
  reference.json  - token ids, full logits at every position, 16-token greedy ids

Everything is deterministic (fixed seeds; the BPE tokenizer is trained on
engine/tests/fixtures/corpus/ with the `tokenizers` package).

Usage: python make_tiny_models.py [--arch llama qwen2 starcoder2]
"""
import argparse
import json
import os
import shutil

import torch
import tokenizers
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config,
                          Qwen2ForCausalLM, Starcoder2Config, Starcoder2ForCausalLM)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
FIX = os.path.join(ROOT, "engine", "tests", "fixtures")
CORPUS = os.path.join(FIX, "corpus")
TINY = os.path.join(FIX, "tiny")

# Number of BPE entries (256 byte symbols + merges) the trainer produces,
# before special tokens.
BPE_VOCAB = 400
N_GEN = 16
LOGIT_DECIMALS = 5

# Qwen2's pre-tokenizer split pattern (same as in Qwen2/Qwen2.5 tokenizer.json).
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256)

ARCHS = {
    # LlamaForCausalLM, untied embeddings, no biases, plain GPT-2 style ByteLevel
    # pre-tokenizer; special token at id 0 (trainer special).
    "llama": dict(
        seed=1001,
        config_cls=LlamaConfig, model_cls=LlamaForCausalLM,
        config=dict(rope_theta=10000.0, rms_norm_eps=1e-5, hidden_act="silu",
                    tie_word_embeddings=False, attention_bias=False, mlp_bias=False),
        pre="gpt2", specials_first=["<|endoftext|>"], specials_last=[],
        bos="<|endoftext|>", eos="<|endoftext|>", pad_vocab_to=None,
    ),
    # Qwen2ForCausalLM, tied embeddings, q/k/v biases; Qwen2 split regex + NFC;
    # special tokens appended after the BPE vocab (like real Qwen2), and the
    # embedding matrix padded past the tokenizer size (like real Qwen2.5).
    "qwen2": dict(
        seed=1002,
        config_cls=Qwen2Config, model_cls=Qwen2ForCausalLM,
        config=dict(rope_theta=1000000.0, rms_norm_eps=1e-6, hidden_act="silu",
                    tie_word_embeddings=True, use_sliding_window=False),
        pre="qwen2", specials_first=[],
        specials_last=["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"],
        bos=None, eos="<|endoftext|>", pad_vocab_to=64,
    ),
    # Starcoder2ForCausalLM: LayerNorm with bias, GELU(tanh) MLP c_fc/c_proj,
    # biases everywhere, untied lm_head; digits split individually then
    # ByteLevel (like real StarCoder2); specials at the start of the vocab.
    "starcoder2": dict(
        seed=1003,
        config_cls=Starcoder2Config, model_cls=Starcoder2ForCausalLM,
        config=dict(rope_theta=100000.0, norm_epsilon=1e-5, hidden_act="gelu_pytorch_tanh",
                    use_bias=True, tie_word_embeddings=False, sliding_window=None,
                    residual_dropout=0.0, embedding_dropout=0.0, attention_dropout=0.0),
        pre="digits", specials_first=["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>"],
        specials_last=[], bos="<|endoftext|>", eos="<|endoftext|>", pad_vocab_to=None,
    ),
}

PROMPTS = {
    "llama": [
        "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
        "fn main() {\n    let v = vec![1, 2];\n    println!(v",
        "// 数字 42 \U0001f600\r\nint x = 12345;<|endoftext|>const y =",
    ],
    "qwen2": [
        "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
        "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n    return c<|fim_middle|>",
        "for (let i = 0; i < 10; i++) {\n\tconsole.log(i",
    ],
    "starcoder2": [
        "impl Point {\n    fn norm(&self) -> f64 {\n        self.x",
        "<fim_prefix>def add(a, b):\n    <fim_suffix>\n    return c<fim_middle>",
        "x = 3.14159 * r ** 2  # area\nprint(f\"{x:.2f}\")",
    ],
}


def corpus_texts():
    names = sorted(n for n in os.listdir(CORPUS) if n != "SOURCES.md")
    out = []
    for n in names:
        with open(os.path.join(CORPUS, n), "rb") as f:
            out.append(f.read().decode("utf-8"))
    return out


def build_tokenizer(spec):
    tok = Tokenizer(models.BPE())
    if spec["pre"] == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif spec["pre"] == "digits":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    elif spec["pre"] == "qwen2":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        raise ValueError(spec["pre"])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = None
    n_first = len(spec["specials_first"])
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB + n_first,
        min_frequency=2,
        special_tokens=spec["specials_first"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_texts(), trainer=trainer)
    if spec["specials_last"]:
        tok.add_special_tokens(spec["specials_last"])
    return tok


def randomize_(model, seed):
    """Non-trivial random init: every parameter gets a distinct random value
    (norm weights around 1, biases around 0), so a bug in any op shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if "norm" in name and name.endswith("weight"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)              # U(0.5, 1.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif "embed_tokens" in name or "lm_head" in name:
                # larger output scale -> peakier distributions, clearer argmax
                p.copy_(torch.randn(p.shape, generator=g) * 0.4)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)


def compat_fixups(out_dir):
    """transformers 5 writes rope_theta only inside "rope_parameters", "dtype"
    instead of "torch_dtype", and tokenizer_class "TokenizersBackend".  Most
    checkpoints in the wild were written by transformers 4.x, so also write the
    4.x spellings (transformers 5 still loads these files; checked by the
    reload below)."""
    path = os.path.join(out_dir, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    rp = cfg.get("rope_parameters") or {}
    if "rope_theta" in rp and "rope_theta" not in cfg:
        cfg["rope_theta"] = rp["rope_theta"]
    if "dtype" in cfg and "torch_dtype" not in cfg:
        cfg["torch_dtype"] = cfg["dtype"]
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    path = os.path.join(out_dir, "tokenizer_config.json")
    with open(path) as f:
        tc = json.load(f)
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    with open(path, "w") as f:
        json.dump(tc, f, indent=2, sort_keys=True)
        f.write("\n")


@torch.no_grad()
def greedy(model, ids, n):
    seq = list(ids)
    out, margins = [], []
    for _ in range(n):
        logits = model(torch.tensor([seq])).logits[0, -1]
        top2 = torch.topk(logits, 2)
        tok = int(top2.indices[0])
        margins.append(round(float(top2.values[0] - top2.values[1]), LOGIT_DECIMALS))
        out.append(tok)
        seq.append(tok)
    return out, margins


def make(arch):
    spec = ARCHS[arch]
    out_dir = os.path.join(TINY, arch)
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)

    tok = build_tokenizer(spec)
    n_tok = tok.get_vocab_size(with_added_tokens=True)
    vocab_size = n_tok
    if spec["pad_vocab_to"]:
        m = spec["pad_vocab_to"]
        vocab_size = (n_tok + m - 1) // m * m
    special_ids = {t: tok.token_to_id(t) for t in spec["specials_first"] + spec["specials_last"]}
    eos_id = special_ids[spec["eos"]]
    bos_id = special_ids[spec["bos"]] if spec["bos"] else None

    torch.manual_seed(spec["seed"])
    cfg = spec["config_cls"](vocab_size=vocab_size, bos_token_id=bos_id, eos_token_id=eos_id,
                             **COMMON, **spec["config"])
    model = spec["model_cls"]._from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    randomize_(model, spec["seed"])
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    gen_cfg = os.path.join(out_dir, "generation_config.json")
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)

    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=spec["bos"], eos_token=spec["eos"],
        additional_special_tokens=[t for t in special_ids if t not in (spec["bos"], spec["eos"])],
        model_max_length=COMMON["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )
    hf_tok.save_pretrained(out_dir)
    compat_fixups(out_dir)
    for extra in ("special_tokens_map.json", "chat_template.jinja"):
        p = os.path.join(out_dir, extra)
        if os.path.exists(p):
            os.remove(p)

    # Reload everything from disk, exactly as a user would, and compute the reference.
    model = spec["model_cls"].from_pretrained(out_dir, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out_dir)
    prompts = []
    for text in PROMPTS[arch]:
        ids = hf_tok(text, add_special_tokens=False)["input_ids"]
        assert ids == tok.encode(text, add_special_tokens=False).ids
        assert 10 <= len(ids) <= 40, (arch, len(ids), text)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        gen, margins = greedy(model, ids, N_GEN)
        prompts.append({
            "prompt": text,
            "ids": ids,
            "tokens": hf_tok.convert_ids_to_tokens(ids),
            "logits": [[round(float(v), LOGIT_DECIMALS) for v in row] for row in logits],
            "greedy_ids": gen,
            "greedy_top2_margins": margins,
            "greedy_text": hf_tok.decode(gen),
        })
        print("%-10s %2d prompt tokens, greedy %s" % (arch, len(ids), gen))

    ref = {
        "description": "HF transformers float32 eager reference. 'ids' = tokenizer(prompt, "
                       "add_special_tokens=False) (special tokens inside the text are matched); "
                       "'logits'[pos][token] = full logits (vocab_size columns, rounded to %d decimals) "
                       "for the whole prompt in one forward pass; 'greedy_ids' = %d tokens of argmax "
                       "decoding (full recompute each step), 'greedy_top2_margins' = top1-top2 logit gap "
                       "at each greedy step." % (LOGIT_DECIMALS, N_GEN),
        "generator": "scripts/reference/make_tiny_models.py",
        "arch": arch,
        "model_class": spec["model_cls"].__name__,
        "vocab_size": vocab_size,
        "tokenizer_size": n_tok,
        "special_tokens": special_ids,
        "seed": spec["seed"],
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__},
        "prompts": prompts,
    }
    with open(os.path.join(out_dir, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    for n in sorted(os.listdir(out_dir)):
        print("   %-24s %8d" % (n, os.path.getsize(os.path.join(out_dir, n))))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", nargs="*", default=list(ARCHS))
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    for arch in args.arch:
        make(arch)


if __name__ == "__main__":
    main()
