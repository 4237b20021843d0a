"""The OpenAI Agents SDK (`openai-agents`) against a running Souffleur server.

Usage: python agents_sdk.py BASE_URL MODEL REPOSITORY
An agent with one function tool, `read_file`, is asked for a fact written only in
REPOSITORY/NOTES.md. Its first turn must call the tool (`tool_choice="required"`,
which the server enforces with a grammar); its final answer is structured
(`output_type`, sent as a JSON schema) and must carry the file's fact. Prints the
calls and the answer; exits non-zero if a check fails.
"""

import pathlib
import sys

import pydantic
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI


class Answer(pydantic.BaseModel):
    codename: str


def main() -> None:
    base_url, model, repo = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]).resolve()
    set_tracing_disabled(True)  # no traces are sent anywhere
    calls: list[str] = []

    @function_tool
    def read_file(path: str) -> str:
        """Read a text file of the repository and return its content."""
        calls.append(path)
        target = (repo / path).resolve()
        if not target.is_relative_to(repo) or not target.is_file():
            return f"no such file: {path}"
        return target.read_text()

    client = AsyncOpenAI(base_url=f"{base_url}/v1", api_key="local", max_retries=0)
    agent = Agent(
        name="repository",
        instructions="You answer questions about the repository. Use read_file to read files.",
        tools=[read_file],
        output_type=Answer,
        model=OpenAIChatCompletionsModel(model=model, openai_client=client),
        model_settings=ModelSettings(temperature=0, max_tokens=80, tool_choice="required"),
    )
    result = Runner.run_sync(agent, "Read NOTES.md and tell me the release codename.", max_turns=4)
    print("calls:", calls)
    print("answer:", result.final_output)
    assert "NOTES.md" in calls, calls
    assert isinstance(result.final_output, Answer), result.final_output
    assert "BLUEHERON" in result.final_output.codename.upper(), result.final_output


if __name__ == "__main__":
    main()
