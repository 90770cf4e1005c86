"""Endpoint capabilities: completions never sends tools, an ``http`` body places tools and
generation where it asks, and a benchmark with tools is refused at load for a target
that cannot send them (naming the benchmark file, the key and the target)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from pytest_expertbench.config import TargetSpec
from pytest_expertbench.records import Request, ToolCall
from pytest_expertbench.targets import build_target
from tests.helpers import ANSWERS, Project
from tests.support.fake_openai import FakeOpenAI

TOOL = {
    "type": "function",
    "function": {"name": "f", "parameters": {"type": "object", "properties": {}}},
}
REQUEST = Request(
    benchmark="b",
    example_id="1",
    prompt="hi",
    generation={"temperature": 0, "max_tokens": 8},
    tools=(TOOL,),
)


def _spec(kind: str, **options: Any) -> TargetSpec:
    return TargetSpec(name="t", kind=kind, options=options, source=Path("targets.yaml"))


def test_the_completions_endpoint_never_sends_tools() -> None:
    completions = build_target(
        _spec("openai", base_url="http://x/v1", model="m", endpoint="completions")
    )
    chat = build_target(_spec("openai", base_url="http://x/v1", model="m"))
    assert "tools" not in completions.payload(REQUEST)  # type: ignore[attr-defined]
    assert chat.payload(REQUEST)["tools"] == [TOOL]  # type: ignore[attr-defined]
    assert (completions.sends_tools, chat.sends_tools) == (False, True)  # type: ignore[attr-defined]


def test_ollama_generate_cannot_send_tools() -> None:
    generate = build_target(_spec("ollama", base_url="http://x", model="m", endpoint="generate"))
    assert "tools" not in generate.payload(REQUEST)  # type: ignore[attr-defined]
    assert generate.sends_tools is False  # type: ignore[attr-defined]


def test_an_http_body_places_tools_and_generation_as_json_values() -> None:
    body = {
        "input": "{prompt}",
        "tools": "{tools}",
        "settings": "{generation}",
        "note": "tools: {tools}",
        "nested": [{"gen": "{generation}"}],
    }
    target = build_target(_spec("http", url="http://x", response_path="out", body=body))
    payload = target.payload(REQUEST)  # type: ignore[attr-defined]
    assert payload["input"] == "hi"
    assert payload["tools"] == [TOOL]
    assert payload["settings"] == {"temperature": 0, "max_tokens": 8}
    assert payload["note"].startswith('tools: [{"type": "function"')
    assert payload["nested"] == [{"gen": {"temperature": 0, "max_tokens": 8}}]
    assert target.sends_tools is True  # type: ignore[attr-defined]
    assert target.reads_fields is False  # type: ignore[attr-defined]  # tools are no dataset field


def test_an_http_body_without_tools_cannot_send_them() -> None:
    target = build_target(_spec("http", url="http://x", response_path="out"))
    assert target.sends_tools is False  # type: ignore[attr-defined]


TOOL_BENCH = """\
name: tooled
dataset: {file: data/mini.jsonl, id: id}
suites: {quick: all}
prompt: "{question}"
tools:
  - type: function
    function: {name: add, parameters: {type: object, properties: {}}}
scorers: [{fallback: {}}]
metrics:
  abstention: {of: fallback, direction: higher}
"""


@pytest.mark.parametrize(
    ("target", "words"),
    [
        (
            {
                "kind": "openai",
                "base_url": "http://127.0.0.1:9/v1",
                "model": "m",
                "endpoint": "completions",
            },
            "kind openai, endpoint completions",
        ),
        (
            {"kind": "http", "url": "http://127.0.0.1:9/", "response_path": "text"},
            "place {tools} in its body",
        ),
    ],
)
def test_a_benchmark_with_tools_is_refused_for_a_target_without(
    pytester: pytest.Pytester, target: dict[str, Any], words: str
) -> None:
    project = Project(pytester)
    project.write("tooled.yaml", TOOL_BENCH)
    project.targets({"plain": target}, default="plain")
    result = project.run("--expert-bench=quick")
    assert result.ret != 0
    output = result.stdout.str() + result.stderr.str()
    assert "tooled.yaml: tools: the benchmark declares tools, but target 'plain'" in output
    assert words in output


def test_the_same_benchmark_runs_against_a_target_that_sends_tools(
    pytester: pytest.Pytester,
) -> None:
    project = Project(pytester)
    project.write("tooled.yaml", TOOL_BENCH)
    pytester.makepyfile(expert="def answer(prompt, request):\n    return str(len(request.tools))\n")
    pytester.makeini("[pytest]\npythonpath = .\n")
    project.targets({"local": {"kind": "python", "function": "expert:answer"}}, default="local")
    result = project.run("--expert-bench=quick", "-k", "tooled")
    result.assert_outcomes(passed=6, deselected=7, skipped=1)


def _ask(target: Any, request: Request = REQUEST) -> Any:
    from pytest_expertbench.transport import HttpModelClient

    async def run() -> Any:
        async with HttpModelClient(2) as client:
            return await asyncio.wait_for(target.complete(request, client), 5.0)

    return asyncio.run(run())


def test_completions_sends_no_tools_to_a_real_server() -> None:
    with FakeOpenAI() as server:
        target = build_target(
            _spec("openai", base_url=server.base_url, model="m", endpoint="completions")
        )
        _ask(target)
        (received,) = server.received
    assert received.path.endswith("/completions") and "tools" not in received.body
    assert received.body["temperature"] == 0


def test_an_http_target_sends_tools_and_reads_the_calls_back() -> None:
    call = {"text": "", "tool_calls": [{"name": "f", "arguments": {"a": 1}}]}
    with FakeOpenAI(answers={"hi": call}) as server:
        body = {
            "model": "m",
            "messages": [{"role": "user", "content": "{prompt}"}],
            "tools": "{tools}",
            "max_tokens": "{generation}",
        }
        target = build_target(
            _spec(
                "http",
                url=f"{server.base_url}/chat/completions",
                body=body,
                response_path="choices.0.message.content",
                tool_calls_path="choices.0.message.tool_calls",
            )
        )
        completion = _ask(target)
        plain = _ask(target, Request(benchmark="b", example_id="2", prompt="other"))
        received = server.received[0]
    assert received.body["tools"] == [TOOL]
    assert received.body["max_tokens"] == {"temperature": 0, "max_tokens": 8}
    assert completion.tool_calls == (ToolCall("f", '{"a": 1}'),)
    assert plain.tool_calls == () and plain.text == "ANSWER: other"


@pytest.mark.parametrize("body", [None, {"prompt": "{prompt}", "options": "{generation}"}])
def test_generation_an_http_body_cannot_send_is_warned_of(
    pytester: pytest.Pytester, body: dict[str, Any] | None
) -> None:
    """The mini benchmark asks temperature 0; a body without {generation} drops it."""
    project = Project(pytester)
    with FakeOpenAI(answers=ANSWERS) as server:
        target = {"kind": "http", "url": server.root_url + "/v1/completions"}
        target |= {"response_path": "choices.0.text"} | ({"body": body} if body else {})
        project.targets({"plain": target}, default="plain")
        result = project.run("--expert-bench=quick", "--expert-bench-report-dir=reports/out")
    assert result.ret == 0, result.stdout.str()
    warned = "mini.yaml: generation: {'temperature': 0} is not sent: target 'plain'"
    assert (warned in result.stdout.str()) == (body is None)
