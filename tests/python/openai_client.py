"""Drives a running Souffleur server with the official `openai` Python package.

Usage: python openai_client.py BASE_URL TOKEN
Exits non-zero (with the reason) if any check fails.
"""

import sys

import openai


def main() -> None:
    base_url, token = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=token, max_retries=0)

    models = client.models.list().data
    assert len(models) == 1, models
    model = models[0].id

    done = client.completions.create(
        model=model, prompt="def fibonacci(n):\n", max_tokens=16, temperature=0
    )
    assert done.object == "text_completion", done
    assert done.choices[0].text, done
    assert done.usage.completion_tokens == 16, done.usage

    streamed = "".join(
        chunk.choices[0].text
        for chunk in client.completions.create(
            model=model, prompt="def fibonacci(n):\n", max_tokens=16, temperature=0, stream=True
        )
        if chunk.choices
    )
    assert streamed == done.choices[0].text, (streamed, done.choices[0].text)

    chat = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Name a sorting algorithm."}],
        max_tokens=12,
        temperature=0,
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content, chat

    pieces = []
    finish = None
    for chunk in client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Name a sorting algorithm."}],
        max_tokens=12,
        temperature=0,
        stream=True,
    ):
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == chat.choices[0].message.content, (pieces, chat)
    assert finish in ("stop", "length"), finish

    try:
        client.completions.create(model="gpt-4o", prompt="x", max_tokens=1)
        raise AssertionError("an unknown model must be refused")
    except openai.NotFoundError as e:
        assert "not found" in str(e)

    # Parameters the server does not implement are refused by name, never ignored;
    # set to their "off" value (as some clients always send them) they are accepted.
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    messages = [{"role": "user", "content": "Name a sorting algorithm."}]
    refused = [
        ("tools", {"tools": [weather]}),
        ("tool_choice", {"tool_choice": "required"}),
        ("response_format", {"response_format": {"type": "json_schema", "json_schema": {
            "name": "ids", "schema": {"type": "array", "uniqueItems": True}}}}),
        ("logprobs", {"logprobs": True, "top_logprobs": 2, "tools": [weather]}),
        ("top_logprobs", {"logprobs": True, "top_logprobs": 21}),
        ("presence_penalty", {"presence_penalty": 2.5}),
        ("logit_bias", {"logit_bias": {"42": 10}}),
    ]
    for param, extra in refused:
        try:
            client.chat.completions.create(model=model, messages=messages, max_tokens=4, **extra)
            raise AssertionError(f"chat with {param} must be refused")
        except openai.UnprocessableEntityError as e:
            assert e.body["param"] == param, (param, e.body)
            assert f"`{param}`" in e.body["message"], e.body
    for param, extra in [("best_of", {"best_of": 2}), ("logprobs", {"logprobs": 6})]:
        try:
            client.completions.create(model=model, prompt="x", max_tokens=1, **extra)
            raise AssertionError(f"completions with {param} must be refused")
        except openai.UnprocessableEntityError as e:
            assert e.body["param"] == param, (param, e.body)
    off = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=12,
        temperature=0,
        logprobs=False,
        tool_choice="none",
        response_format={"type": "text"},
        user="dev-42",
    )
    assert off.choices[0].message.content == chat.choices[0].message.content, off

    # Log-probabilities come from the sampler: greedy picks the most likely token.
    lp = client.chat.completions.create(
        model=model, messages=messages, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3
    )
    content = lp.choices[0].logprobs.content
    assert "".join(t.token for t in content) == lp.choices[0].message.content, lp
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3, t
        assert t.top_logprobs[0].token == t.token, t
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob, t
        assert bytes(t.bytes).decode("utf-8", "replace") == t.token, t
    legacy = client.completions.create(model=model, prompt="def add(a, b):", max_tokens=6, temperature=0, logprobs=2)
    lps = legacy.choices[0].logprobs
    assert "".join(lps.tokens) == legacy.choices[0].text, legacy
    assert len(lps.token_logprobs) == len(lps.tokens) == len(lps.top_logprobs) == len(lps.text_offset)
    assert lps.text_offset[0] == 0 and all(len(top) <= 2 for top in lps.top_logprobs), lps
    streamed_lps = [
        c.choices[0].logprobs.token_logprobs
        for c in client.completions.create(
            model=model, prompt="def add(a, b):", max_tokens=6, temperature=0, logprobs=2, stream=True
        )
        if c.choices and c.choices[0].logprobs
    ]
    assert sum(streamed_lps, []) == lps.token_logprobs, (streamed_lps, lps.token_logprobs)

    # Penalties are implemented: they change a repetitive greedy answer, and the
    # model, its fingerprint and a separate usage chunk are as OpenAI sends them.
    repeat = [{"role": "user", "content": "Say 'go' twenty times: go go go go go go"}]
    plain = client.chat.completions.create(model=model, messages=repeat, max_tokens=16, temperature=0)
    penalised = client.chat.completions.create(
        model=model, messages=repeat, max_tokens=16, temperature=0, frequency_penalty=2, presence_penalty=1
    )
    assert penalised.choices[0].message.content != plain.choices[0].message.content, (plain, penalised)
    assert plain.system_fingerprint and plain.system_fingerprint.startswith("fp_"), plain
    assert client.models.retrieve(model).id == model
    try:
        client.models.retrieve("no-such-model")
        raise AssertionError("an unknown model id must be 404")
    except openai.NotFoundError:
        pass
    chunks = list(
        client.chat.completions.create(
            model=model, messages=messages, max_tokens=8, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens >= 1, chunks[-1]
    assert all(c.usage is None for c in chunks[:-1]), chunks[:-1]

    bad = openai.OpenAI(base_url=f"{base_url}/v1", api_key="sfl_invalid", max_retries=0)
    try:
        bad.models.list()
        raise AssertionError("an invalid token must be refused")
    except openai.AuthenticationError:
        pass

    print(f"openai {openai.__version__}: models, completions, chat, streaming, penalties, usage chunk and refusals OK")


if __name__ == "__main__":
    main()
