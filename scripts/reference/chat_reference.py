#!/usr/bin/env python3
"""Reference chat prompts: each model's own chat template (GGUF `tokenizer.chat_template`)
rendered the way transformers and llama-cpp-python render it (Jinja2's sandbox with
trim_blocks and lstrip_blocks, add_generation_prompt=True), then tokenized by llama.cpp
with special tokens parsed (the template's markers become control tokens).

Writes engine/tests/fixtures/chat_reference.json: for the default model
(Qwen2.5-Coder-0.5B-Instruct) and SmolLM2-135M-Instruct, a few chats with the rendered
text and its ids. The messages hold no special-token text, so parsing specials
everywhere (as llama.cpp does here) and only in the template's text (as Souffleur does)
must agree.

Usage: .venv-peer/bin/python scripts/reference/chat_reference.py
"""
import json
import os

from jinja2.sandbox import ImmutableSandboxedEnvironment
from llama_cpp import Llama

HOME = os.environ.get("SOUFFLEUR_HOME", os.path.expanduser("~/.souffleur"))
MODELS = {
    "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf": "qwen2",
    "SmolLM2-135M-Instruct.Q4_1.gguf": "smollm2",
}
CHATS = {
    "user_only": [
        {"role": "user", "content": "Write a Python function that adds two numbers."},
    ],
    "system_and_turns": [
        {"role": "system", "content": "You review code. Answer briefly."},
        {"role": "user", "content": "Is `x = x + 1` fine?"},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": "And `def f(a, b):\n    return a - b` for addition?"},
    ],
}
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                   "../../engine/tests/fixtures/chat_reference.json")


def main():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    result = {}
    for file, key in MODELS.items():
        llm = Llama(os.path.join(HOME, "models", file), vocab_only=True, verbose=False)
        template = env.from_string(llm.metadata["tokenizer.chat_template"])
        bos = llm.detokenize([llm.token_bos()]).decode() if llm.token_bos() >= 0 else ""
        eos = llm.detokenize([llm.token_eos()]).decode() if llm.token_eos() >= 0 else ""
        cases = {}
        for name, messages in CHATS.items():
            text = template.render(messages=messages, add_generation_prompt=True,
                                   bos_token=bos, eos_token=eos)
            ids = llm.tokenize(text.encode(), add_bos=False, special=True)
            cases[name] = {"messages": messages, "text": text, "ids": ids}
        result[key] = {"model": file, "chats": cases}
    with open(OUT, "w") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print("wrote", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
