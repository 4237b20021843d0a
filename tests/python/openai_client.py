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

    bad = openai.OpenAI(base_url=f"{base_url}/v1", api_key="sfl_invalid", max_retries=0)
    try:
        bad.models.list()
        raise AssertionError("an invalid token must be refused")
    except openai.AuthenticationError:
        pass

    print(f"openai {openai.__version__}: models, completions, chat and streaming OK")


if __name__ == "__main__":
    main()
