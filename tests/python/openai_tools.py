"""Tool calling and structured output through the official `openai` Python package.

Usage: python openai_tools.py BASE_URL TOOL_MODEL PLAIN_MODEL
TOOL_MODEL has a chat template with tools (Qwen2.5-Coder-Instruct); PLAIN_MODEL has
none. The server runs in local mode (any API key). Exits non-zero (with the reason)
if any check fails.
"""

import json
import sys

import openai
import pydantic

READ_FILE = {
    "type": "function",
    "function": {
        "name": "read_file",
        "description": "Read a text file of the repository and return its content.",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string", "description": "The file's path"}},
            "required": ["path"],
            "additionalProperties": False,
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What does the file src/main.rs contain? Use the tools."}]


class Person(pydantic.BaseModel):
    name: str
    year: int


def check_call(call, name: str, required: list[str]) -> dict:
    assert call.type == "function", call
    assert call.id, call
    assert call.function.name == name, call
    args = json.loads(call.function.arguments)
    assert isinstance(args, dict), args
    for key in required:
        assert key in args, (key, args)
    return args


def refused(param: str, **kwargs) -> None:
    try:
        kwargs["client"].chat.completions.create(
            **{k: v for k, v in kwargs.items() if k != "client"}
        )
    except openai.UnprocessableEntityError as e:
        assert e.body and e.body.get("param") == param, e.body
        return
    raise AssertionError(f"{param}: not refused")


def main() -> None:
    base_url, model, plain = sys.argv[1], sys.argv[2], sys.argv[3]
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="local", max_retries=0)
    both = [READ_FILE, ADD]

    # `required`: a call is forced, its arguments match the schema.
    done = client.chat.completions.create(
        model=model, messages=ASK, tools=both, tool_choice="required", temperature=0, max_tokens=80
    )
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    calls = choice.message.tool_calls
    assert calls, choice
    check_call(calls[0], calls[0].function.name, [])
    assert calls[0].function.name in ("read_file", "add"), calls

    # A named function, streamed: the SDK's accumulation gives the same call.
    named = {"type": "function", "function": {"name": "add"}}
    ask_sum = [{"role": "user", "content": "What is 17 plus 25?"}]
    whole = client.chat.completions.create(
        model=model, messages=ask_sum, tools=both, tool_choice=named, temperature=0, max_tokens=60
    )
    args = check_call(whole.choices[0].message.tool_calls[0], "add", ["a", "b"])
    assert all(isinstance(v, int) for v in args.values()), args
    pieces, finish, names, arguments = [], None, [], {}
    for chunk in client.chat.completions.create(
        model=model, messages=ask_sum, tools=both, tool_choice=named, temperature=0,
        max_tokens=60, stream=True,
    ):
        for c in chunk.choices:
            finish = c.finish_reason or finish
            for d in c.delta.tool_calls or []:
                if d.function and d.function.name:
                    names.append(d.function.name)
                arguments[d.index] = arguments.get(d.index, "") + (
                    (d.function.arguments if d.function else "") or ""
                )
            pieces.append(c.delta.content or "")
    assert finish == "tool_calls", finish
    assert names == ["add"], names
    assert json.loads(arguments[0]) == args, (arguments, args)
    assert "".join(pieces) == "", pieces

    # The call's result goes back in a `tool` message; the answer is text or a call.
    back = client.chat.completions.create(
        model=model,
        messages=ask_sum
        + [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call-1", "type": "function",
                 "function": {"name": "add", "arguments": json.dumps({"a": 17, "b": 25})}}]},
            {"role": "tool", "tool_call_id": "call-1", "content": "42"},
        ],
        tools=both,
        temperature=0,
        max_tokens=40,
    )
    assert back.choices[0].finish_reason in ("stop", "length", "tool_calls"), back
    message = back.choices[0].message
    assert message.content or message.tool_calls, back

    # `auto` with a strict function (as the Agents SDK sends them): text, or calls whose
    # arguments the grammar keeps to the schema.
    strict_add = {"type": "function", "function": dict(ADD["function"], strict=True)}
    auto = client.chat.completions.create(
        model=model, messages=ask_sum, tools=[strict_add], temperature=0, max_tokens=60
    )
    message = auto.choices[0].message
    if message.tool_calls:
        args = check_call(message.tool_calls[0], "add", ["a", "b"])
        assert all(isinstance(v, int) for v in args.values()), args
    else:
        assert message.content and not message.content.lstrip().startswith(("{", "<", "[", "`")), auto

    # `tool_choice: "none"`: text only, even with tools listed.
    text = client.chat.completions.create(
        model=model, messages=ask_sum, tools=both, tool_choice="none", temperature=0, max_tokens=20
    )
    assert text.choices[0].message.tool_calls is None, text
    assert text.choices[0].message.content, text

    # Structured output: any JSON object, a JSON schema, and the SDK's parse().
    obj = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Describe a cat as JSON."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=60,
    )
    if obj.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(obj.choices[0].message.content), dict), obj
    else:
        assert obj.choices[0].message.content.startswith("{"), obj
    parsed = client.chat.completions.parse(
        model=model,
        messages=[{"role": "user", "content": "Who created Python, and in which year was he born?"}],
        response_format=Person,
        temperature=0,
        max_tokens=60,
    )
    person = parsed.choices[0].message.parsed
    assert isinstance(person, Person), parsed
    assert person.name, person
    # Streamed structured output: the text is the same JSON.
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "Who created Python, and in which year was he born?"}],
            response_format={"type": "json_schema", "json_schema": {
                "name": "person", "schema": Person.model_json_schema(), "strict": True}},
            temperature=0,
            max_tokens=60,
            stream=True,
        )
        if c.choices
    )
    assert Person.model_validate_json(streamed) == person, (streamed, person)
    # `json_schema.description` reaches the model: it is added to the system turn.
    def person_prompt_tokens(**described) -> int:
        return client.chat.completions.create(
            model=model,
            messages=[{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Who created Python?"}],
            response_format={"type": "json_schema", "json_schema": {
                "name": "person", "schema": Person.model_json_schema(), **described}},
            temperature=0,
            max_tokens=40,
        ).usage.prompt_tokens
    plain_tokens = person_prompt_tokens()
    described_tokens = person_prompt_tokens(description="The person who created the language.")
    assert described_tokens > plain_tokens + 5, (plain_tokens, described_tokens)

    # What cannot be honoured is refused by name.
    unique = {"type": "json_schema", "json_schema": {"name": "ids", "schema": {
        "type": "array", "items": {"type": "integer"}, "uniqueItems": True}}}
    refused("response_format", client=client, model=model, messages=ask_sum,
            response_format=unique, max_tokens=8)
    refused("tools", client=client, model=plain, messages=ask_sum, tools=both, max_tokens=8)
    refused("tool_choice", client=client, model=model, messages=ask_sum, tools=both,
            tool_choice={"type": "function", "function": {"name": "delete_repo"}}, max_tokens=8)
    refused("tools", client=client, model=model, messages=ask_sum,
            tools=[{"type": "custom", "custom": {"name": "x"}}], max_tokens=8)
    print("openai tools: all checks passed")


if __name__ == "__main__":
    main()
