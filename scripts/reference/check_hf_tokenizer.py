#!/usr/bin/env python3
"""Cross-check: build a Hugging Face `tokenizers` BPE tokenizer from the GGUF
metadata of the default model (tokens + merges, pre-tokenizer as in the
original SmolLM2 tokenizer.json: Digits(individual) then ByteLevel) and compare
its ids with the llama.cpp ids recorded in smollm2_tokens.json.

This is a check only (it writes nothing): it tells whether a Rust engine that
builds an HF BPE tokenizer from GGUF metadata can reproduce llama.cpp exactly.

Usage: python check_hf_tokenizer.py [--model PATH]
"""
import argparse
import json
import os
import sys

from gguf import GGUFReader
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from smollm2_reference import CORPUS, FIX, default_model_path  # noqa: E402


def field_strings(reader, key):
    f = reader.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def field_ints(reader, key):
    f = reader.fields[key]
    return [int(f.parts[i][0]) for i in f.data]


def build(model_path):
    r = GGUFReader(model_path)
    tokens = field_strings(r, "tokenizer.ggml.tokens")
    merges = field_strings(r, "tokenizer.ggml.merges")
    types = field_ints(r, "tokenizer.ggml.token_type")
    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges],
                     ignore_merges=False)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    # token_type 3 = CONTROL (special) in llama.cpp
    specials = [AddedToken(tokens[i], special=True, normalized=False)
                for i, t in enumerate(types) if t == 3]
    tok.add_special_tokens(specials)
    return tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=default_model_path())
    args = ap.parse_args()
    tok = build(args.model)
    with open(os.path.join(FIX, "smollm2_tokens.json"), encoding="utf-8") as f:
        ref = json.load(f)
    bad = 0
    # llama.cpp special=False treats "<|im_start|>" etc. in the text as plain
    # text; the HF equivalent is encode_special_tokens=True.
    tok.encode_special_tokens = True
    for item in ref["files"]:
        with open(os.path.join(CORPUS, item["file"]), "rb") as f:
            text = f.read().decode("utf-8")
        bad += compare(item["file"], tok.encode(text, add_special_tokens=False).ids, item["ids"], tok)
    for item in ref["strings"]:
        bad += compare(repr(item["text"]), tok.encode(item["text"], add_special_tokens=False).ids,
                       item["ids"], tok)
    tok.encode_special_tokens = False
    for item in ref["strings_special"]:
        bad += compare("special " + repr(item["text"]),
                       tok.encode(item["text"], add_special_tokens=False).ids, item["ids"], tok)
    print("mismatches: %d" % bad)
    sys.exit(1 if bad else 0)


def compare(name, hf, ref, tok):
    if hf == ref:
        print("OK   %s (%d tokens)" % (name, len(ref)))
        return 0
    i = next((k for k in range(min(len(hf), len(ref))) if hf[k] != ref[k]), min(len(hf), len(ref)))
    print("FAIL %s at token %d: hf=%s llama.cpp=%s" % (name, i, [tok.id_to_token(t) for t in hf[i:i + 6]],
                                                      [tok.id_to_token(t) for t in ref[i:i + 6]]))
    return 1


if __name__ == "__main__":
    main()
