"""Tool-call validity: how often a model's call is parsable and valid against the
function's parameter schema, with and without constrained decoding.

Usage: python run.py BASE_URL MODEL [MODEL ...] [--n 50] [--out FILE.json]

50 tool-use requests are generated from fixed templates (five functions with typed,
required, enumerated and array parameters; a seeded choice of values). Each model
answers each request twice, at temperature 0:
- free: `tools` with `tool_choice: "auto"` (the model writes what it likes; the
  server reads `<tool_call>` blocks or a bare JSON call),
- constrained: `tool_choice: "required"` (the server's grammar allows only calls
  whose arguments match the schema).
A request is valid when the answer holds a call of the intended function whose
arguments are a JSON object valid against its schema (checked here by a small
validator of the keywords used: type, required, properties, enum, items,
additionalProperties, minimum/maximum).

A model whose chat template has no tool calling (the server answers 422 for
`tools`) is measured the generic way instead: the functions are listed in the
system message with the answer format `{"name": …, "arguments": …}`; free is that
prompt alone, constrained adds `response_format` with the calls' JSON schema.
"""

import argparse
import json
import random
import sys
import time

import openai

TOOLS = [
    {"name": "get_weather", "description": "Current weather for a city.",
     "parameters": {"type": "object", "properties": {
         "city": {"type": "string"},
         "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
         "required": ["city", "unit"], "additionalProperties": False}},
    {"name": "add", "description": "Add two integers.",
     "parameters": {"type": "object", "properties": {
         "a": {"type": "integer"}, "b": {"type": "integer"}},
         "required": ["a", "b"], "additionalProperties": False}},
    {"name": "read_file", "description": "Read a text file of the repository.",
     "parameters": {"type": "object", "properties": {
         "path": {"type": "string"}, "max_lines": {"type": "integer", "minimum": 1, "maximum": 1000}},
         "required": ["path"], "additionalProperties": False}},
    {"name": "search_code", "description": "Search the repository's code.",
     "parameters": {"type": "object", "properties": {
         "query": {"type": "string"}, "language": {"type": "string", "enum": ["rust", "python", "go"]},
         "max_results": {"type": "integer", "minimum": 1, "maximum": 50}},
         "required": ["query", "language"], "additionalProperties": False}},
    {"name": "create_issue", "description": "Open an issue in the tracker.",
     "parameters": {"type": "object", "properties": {
         "title": {"type": "string"}, "labels": {"type": "array", "items": {"type": "string"}},
         "urgent": {"type": "boolean"}},
         "required": ["title", "labels", "urgent"], "additionalProperties": False}},
]

CITIES = ["Berlin", "Hamburg", "Munich", "Cologne", "Leipzig", "Dresden", "Bremen", "Kiel"]
FILES = ["README.md", "src/main.rs", "Cargo.toml", "docs/review.md", "server/src/app.rs"]
QUERIES = [("parse_config", "rust"), ("def tokenize", "python"), ("http.HandleFunc", "go"),
           ("unsafe impl Send", "rust"), ("async def fetch", "python")]
TITLES = ["Crash when the index is empty", "Slow completions on large files",
          "Typo in the README", "Review output lacks line numbers"]


def requests(n: int, seed: int = 7) -> list[tuple[str, str]]:
    """(function name, user message) pairs."""
    rng = random.Random(seed)
    makers = [
        lambda: ("get_weather", f"What is the weather in {rng.choice(CITIES)} in "
                 f"{rng.choice(['celsius', 'fahrenheit'])}?"),
        lambda: ("add", f"Add {rng.randint(1, 999)} and {rng.randint(1, 999)}."),
        lambda: ("read_file", f"Show me the first {rng.randint(5, 200)} lines of {rng.choice(FILES)}."),
        lambda: ("search_code", "Find at most {} places where `{}` appears in the {} code.".format(
            rng.randint(2, 20), *rng.choice(QUERIES))),
        lambda: ("create_issue", f"Open an issue titled \"{rng.choice(TITLES)}\" with the labels "
                 f"bug and {rng.choice(['ui', 'index', 'docs'])}; it is "
                 f"{rng.choice(['urgent', 'not urgent'])}."),
    ]
    return [makers[i % len(makers)]() for i in range(n)]


def valid(value, schema) -> bool:
    kind = schema.get("type")
    if "enum" in schema and value not in schema["enum"]:
        return False
    if kind == "object":
        if not isinstance(value, dict):
            return False
        props = schema.get("properties", {})
        if any(k not in value for k in schema.get("required", [])):
            return False
        if schema.get("additionalProperties") is False and any(k not in props for k in value):
            return False
        return all(valid(v, props[k]) for k, v in value.items() if k in props)
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        ok = isinstance(value, int) and not isinstance(value, bool)
        return ok and schema.get("minimum", value) <= value <= schema.get("maximum", value)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list) and all(valid(v, schema.get("items", {})) for v in value)
    return True


def call_schema() -> dict:
    return {"anyOf": [
        {"type": "object", "properties": {"name": {"const": t["name"]}, "arguments": t["parameters"]},
         "required": ["name", "arguments"], "additionalProperties": False} for t in TOOLS]}


def generic_system() -> str:
    lines = ["You can call these functions. To call one, answer with only a JSON object "
             "{\"name\": <function name>, \"arguments\": <arguments object>}."]
    lines += [json.dumps(t) for t in TOOLS]
    return "\n".join(lines)


def ask(client, model: str, target: str, message: str, constrained: bool, generic: bool):
    """The (name, arguments) the model called, or None."""
    messages = [{"role": "user", "content": message}]
    kwargs = dict(model=model, temperature=0, max_tokens=96)
    if generic:
        messages.insert(0, {"role": "system", "content": generic_system()})
        if constrained:
            kwargs["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "call", "schema": call_schema()}}
        text = client.chat.completions.create(messages=messages, **kwargs).choices[0].message.content or ""
        text = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
        try:
            v = json.loads(text)
            return v.get("name"), v.get("arguments")
        except (ValueError, AttributeError):
            return None
    tools = [{"type": "function", "function": t} for t in TOOLS]
    choice = "required" if constrained else "auto"
    msg = client.chat.completions.create(messages=messages, tools=tools, tool_choice=choice,
                                         **kwargs).choices[0].message
    if not msg.tool_calls:
        return None
    call = msg.tool_calls[0].function
    try:
        return call.name, json.loads(call.arguments)
    except ValueError:
        return call.name, None


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("base_url")
    p.add_argument("models", nargs="+")
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--out")
    a = p.parse_args()
    client = openai.OpenAI(base_url=f"{a.base_url}/v1", api_key="local", max_retries=0, timeout=600)
    schemas = {t["name"]: t["parameters"] for t in TOOLS}
    results = {}
    for model in a.models:
        try:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                           tools=[{"type": "function", "function": TOOLS[1]}], max_tokens=1)
            generic = False
        except openai.UnprocessableEntityError:
            generic = True
        for constrained in (False, True):
            ok = right_name = answered = 0
            start = time.time()
            for target, message in requests(a.n):
                got = ask(client, model, target, message, constrained, generic)
                if got is None:
                    continue
                answered += 1
                name, args = got
                right_name += name == target
                ok += name == target and valid(args, schemas[target])
            mode = "constrained" if constrained else "free"
            row = {"model": model, "mode": mode, "generic_prompt": generic, "n": a.n,
                   "calls": answered, "right_function": right_name, "valid": ok,
                   "seconds": round(time.time() - start, 1)}
            results[f"{model}/{mode}"] = row
            print(json.dumps(row), flush=True)
    if a.out:
        json.dump(results, open(a.out, "w"), indent=2)


if __name__ == "__main__":
    sys.exit(main())
