"""Each target kind: its request shape, its parsing, its errors, its secrets."""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_expertbench.cache import ResponseCache
from pytest_expertbench.config import ConfigError, TargetSpec
from pytest_expertbench.records import Completion, ExampleResult, Request, TargetError, ToolCall
from pytest_expertbench.targets import Target, build_target
from pytest_expertbench.targets.replay import write_replay
from pytest_expertbench.transport import HttpModelClient, parse_retry_after
from tests.support.fake_openai import FakeOpenAI

SECRET = "sk-very-secret-value"
REQUEST = Request(
    "gsm8k",
    "42",
    "What is 6 x 7?",
    system="Be brief.",
    generation={"max_tokens": 16, "temperature": 0},
    fields={"question": "6 x 7", "answer": "42"},
)


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def spec(kind: str, **options: Any) -> TargetSpec:
    return TargetSpec(name="t", kind=kind, options=options, source=Path("/nowhere/targets.yaml"))


def ask(target: Target, request: Request = REQUEST) -> Completion:
    async def run() -> Completion:
        async with HttpModelClient(4) as client:
            return await asyncio.wait_for(target.complete(request, client), 5.0)

    return asyncio.run(run())


def error_of(target: Target, request: Request = REQUEST) -> TargetError:
    with pytest.raises(TargetError) as raised:
        ask(target, request)
    assert "\n" not in raised.value.message
    return raised.value


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------ openai


def test_openai_chat_request_shape(server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_KEY", SECRET)
    tool = {"type": "function", "function": {"name": "add", "parameters": {}}}
    target = build_target(
        spec(
            "openai",
            base_url=server.base_url + "/",
            model="m",
            api_key_env="FAKE_KEY",
            headers={"X-Team": "evals"},
            extra_body={"top_k": 5},
        )
    )
    request = Request("b", "1", "hello", system="sys", generation={"seed": 3}, tools=(tool,))
    completion = ask(target, request)
    received = server.received[-1]
    assert received.path == "/v1/chat/completions"
    assert received.body == {
        "model": "m",
        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hello"}],
        "tools": [tool],
        "seed": 3,
        "top_k": 5,
    }
    assert received.headers["Authorization"] == f"Bearer {SECRET}"
    assert received.headers["X-Team"] == "evals"
    assert completion.text == "ANSWER: hello"
    assert (completion.prompt_tokens, completion.completion_tokens) == (1, 2)


def test_openai_completions_endpoint_sends_a_prompt(server: FakeOpenAI) -> None:
    target = build_target(
        spec("openai", base_url=server.base_url, model="m", endpoint="completions")
    )
    completion = ask(target)
    body = server.received[-1].body
    assert server.received[-1].path == "/v1/completions"
    assert body["prompt"] == "Be brief.\n\nWhat is 6 x 7?"
    assert body["max_tokens"] == 16
    assert completion.text == "ANSWER: What is 6 x 7?"  # the echo answers the last line
    assert "messages" not in body


def test_openai_tool_calls_are_read() -> None:
    answer = {"text": "", "tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]}
    with FakeOpenAI(answers={REQUEST.prompt: answer}) as server:
        completion = ask(build_target(spec("openai", base_url=server.base_url, model="m")))
    assert completion.tool_calls == (ToolCall("add", '{"a": 1, "b": 2}'),)


def test_secrets_never_reach_identity_or_cache_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = set()
    for secret in (SECRET, "another-secret"):
        monkeypatch.setenv("FAKE_KEY", secret)
        kinds: list[tuple[str, dict[str, Any]]] = [
            ("openai", {"base_url": "http://127.0.0.1:1/v1", "model": "m"}),
            ("http", {"url": "http://127.0.0.1:1/ask", "response_path": "text"}),
        ]
        for kind, options in kinds:
            extra = {"api_key_env": "FAKE_KEY", "headers": {"X-Key": secret}}
            target = build_target(spec(kind, **options, **extra))
            identity = json.dumps(target.identity())
            assert secret not in identity
            keys.add(ResponseCache(tmp_path, mode="off").key(target.identity(), REQUEST))
    assert len(keys) == 2  # one per kind: the secret changed nothing


def test_a_missing_api_key_variable_fails_at_build_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    options = {"base_url": "http://x/v1", "model": "m", "api_key_env": "NO_SUCH_KEY"}
    with pytest.raises(ConfigError) as raised:
        build_target(spec("openai", **options))
    assert raised.value.key == "targets.t.api_key_env"
    assert "NO_SUCH_KEY is not set" in str(raised.value)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"model": "m"}, "base_url"),
        ({"base_url": "http://x/v1"}, "model"),
        ({"base_url": "http://x/v1", "model": "m", "endpoint": "embed"}, "endpoint"),
        ({"base_url": "http://x/v1", "model": "m", "extra_body": [1]}, "extra_body"),
        ({"base_url": "http://x/v1", "model": "m", "modle": "typo"}, "modle"),
    ],
)
def test_openai_bad_options(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        build_target(spec("openai", **options))
    assert raised.value.key == f"targets.t.{key}"


def test_connection_refused_is_retryable() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    error = error_of(build_target(spec("openai", base_url=url, model="m")))
    assert error.retryable
    assert error.message.startswith(f"cannot reach {url}/chat/completions: ")


def test_not_found_and_unauthorized_are_not_retryable() -> None:
    with FakeOpenAI(models={"m"}, api_key=SECRET) as server:
        url = f"{server.base_url}/chat/completions"
        missing = error_of(build_target(spec("openai", base_url=server.base_url, model="m")))
        assert (missing.status, missing.retryable) == (401, False)
        assert missing.message == f"HTTP 401 from {url}: invalid api key"


def test_a_missing_model_is_a_one_line_404() -> None:
    with FakeOpenAI(models={"m"}) as server:
        error = error_of(build_target(spec("openai", base_url=server.base_url, model="x")))
    assert error.message == f"HTTP 404 from {server.base_url}/chat/completions: model 'x' not found"
    assert not error.retryable


@pytest.mark.parametrize(
    ("fault", "retryable", "status", "retry_after", "text"),
    [
        ("500", True, 500, None, "HTTP 500"),
        ("429:2", True, 429, 2.0, "HTTP 429"),
        ("400", False, 400, None, "HTTP 400"),
        ("malformed", False, 200, None, "malformed JSON"),
        ("empty", False, None, None, "no choices"),
        ("drop", True, None, None, "was dropped"),
    ],
)
def test_server_faults(
    server: FakeOpenAI,
    fault: str,
    retryable: bool,
    status: int | None,
    retry_after: float | None,
    text: str,
) -> None:
    server.script(match="6 x 7", faults=[fault])
    error = error_of(build_target(spec("openai", base_url=server.base_url, model="m")))
    assert (error.retryable, error.status, error.retry_after) == (retryable, status, retry_after)
    assert text in error.message


def test_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    seconds = parse_retry_after(later)
    assert seconds is not None and 25 <= seconds <= 31
    assert parse_retry_after(email.utils.formatdate(0, usegmt=True)) == 0.0


# ------------------------------------------------------------------ ollama


def test_ollama_chat_shape_and_usage() -> None:
    answer = {"text": "", "tool_calls": [{"name": "add", "arguments": {"a": 1}}]}
    with FakeOpenAI(answers={"use a tool": answer}) as server:
        target = build_target(spec("ollama", base_url=server.root_url, model="llama"))
        completion = ask(target)
        body = server.received[-1].body
        with_tool = ask(target, Request("b", "2", "use a tool"))
    assert body["stream"] is False
    assert body["options"] == {"num_predict": 16, "temperature": 0}
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert completion.text == "ANSWER: What is 6 x 7?"
    assert (completion.prompt_tokens, completion.completion_tokens) == (5, 6)
    assert with_tool.tool_calls == (ToolCall("add", '{"a": 1}'),)


def test_ollama_generate(server: FakeOpenAI) -> None:
    target = build_target(
        spec("ollama", base_url=server.root_url, model="llama", endpoint="generate")
    )
    completion = ask(target)
    body = server.received[-1].body
    assert (body["prompt"], body["system"]) == ("What is 6 x 7?", "Be brief.")
    assert completion.text == "ANSWER: What is 6 x 7?"


# ------------------------------------------------------------------ http


def test_http_body_template_and_response_path(
    server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_KEY", SECRET)
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "{question} ({prompt})"}],
        "max_tokens": 8,
    }
    target = build_target(
        spec(
            "http",
            url=f"{server.base_url}/chat/completions",
            body=body,
            response_path="choices.0.message.content",
            api_key_env="FAKE_KEY",
            api_key_header="X-Api-Key",
        )
    )
    completion = ask(target)
    received = server.received[-1]
    assert received.body["messages"][0]["content"] == "6 x 7 (What is 6 x 7?)"
    assert received.body["max_tokens"] == 8
    assert received.headers["X-Api-Key"] == SECRET
    assert completion.text == "ANSWER: 6 x 7 (What is 6 x 7?)"


def test_http_missing_response_path(server: FakeOpenAI) -> None:
    target = build_target(
        spec(
            "http",
            url=f"{server.base_url}/completions",
            body={"prompt": "{prompt}"},
            response_path="choices.3.text",
        )
    )
    assert "no 'choices.3.text'" in error_of(target).message


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"response_path": "a"}, "url"),
        ({"url": "http://x"}, "response_path"),
        ({"url": "http://x", "response_path": "a", "body": {"p": "{oops"}}, "body"),
        ({"url": "http://x", "response_path": "a", "method": "BREW"}, "method"),
    ],
)
def test_http_bad_options(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        build_target(spec("http", **options))
    assert raised.value.key == f"targets.t.{key}"


# ------------------------------------------------------------------ python


MODULE = """
import asyncio

def plain(prompt):
    return prompt.upper()

def with_context(prompt, *, fields, system, generation):
    return {"text": f"{fields['answer']}|{system}|{generation['max_tokens']}",
            "tool_calls": [{"name": "add", "arguments": {"a": 1}}]}

async def coroutine(prompt, request):
    await asyncio.sleep(0)
    return request.example_id

def broken(prompt):
    raise ValueError("no idea\\nat all")

def wrong(prompt):
    return 42
"""


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "expert_answers.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "expert_answers"


def test_python_functions(module: str) -> None:
    def call(name: str) -> Completion:
        return ask(build_target(spec("python", function=f"{module}:{name}")))

    assert call("plain").text == "WHAT IS 6 X 7?"
    context = call("with_context")
    assert context.text == "42|Be brief.|16"
    assert context.tool_calls == (ToolCall("add", '{"a": 1}'),)
    assert call("coroutine").text == "42"


def test_python_identity_follows_the_source(
    module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = build_target(spec("python", function=f"{module}:plain"))
    assert not before.reads_fields  # type: ignore[attr-defined]
    assert build_target(spec("python", function=f"{module}:with_context")).reads_fields  # type: ignore[attr-defined]
    (tmp_path / "edited_answers.py").write_text(MODULE.replace("prompt.upper()", "prompt"))
    after = build_target(spec("python", function="edited_answers:plain"))
    assert before.identity()["source"] != after.identity()["source"]


def test_http_reads_fields_only_when_its_body_names_them() -> None:
    def reads(body: Any) -> bool:
        target = build_target(spec("http", url="http://x", response_path="a", body=body))
        return bool(target.reads_fields)  # type: ignore[attr-defined]

    assert not reads({"q": "{prompt}", "s": ["{system}"]})
    assert reads({"q": "{question}"})


def test_python_errors(module: str) -> None:
    broken = error_of(build_target(spec("python", function=f"{module}:broken")))
    assert broken.message == "ValueError: no idea at all"
    assert not broken.retryable
    wrong = error_of(build_target(spec("python", function=f"{module}:wrong")))
    assert "returned int" in wrong.message


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("no_such_module_here:f", "cannot import module 'no_such_module_here'"),
        ("expert_answers:missing", "has no 'missing'"),
        ("expert_answers", "expected 'module:function'"),
    ],
)
def test_python_import_errors(module: str, function: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        build_target(spec("python", function=function))
    assert raised.value.key == "targets.t.function"


# ------------------------------------------------------------------ replay


def result(example_id: str, response: str, error: str | None = None) -> ExampleResult:
    return ExampleResult(
        benchmark="gsm8k",
        id=example_id,
        index=int(example_id),
        digest="d",
        target="t",
        scores={"latency_ms": 12.5},
        response=response,
        error=error,
        tool_calls=(ToolCall("add", "{}"),),
    )


def test_a_recorded_run_replays(tmp_path: Path) -> None:
    path = tmp_path / "recorded" / "answers.jsonl"
    write_replay(path, [result("42", "forty-two"), result("7", "", error="HTTP 500")])
    assert [p.name for p in path.parent.iterdir()] == ["answers.jsonl"]  # no temp file left
    target = build_target(spec("replay", path=str(path)))
    completion = ask(target)
    assert (completion.text, completion.latency_ms) == ("forty-two", 12.5)
    assert completion.tool_calls == (ToolCall("add", "{}"),)
    assert not target.live
    missing = error_of(target, Request("gsm8k", "7", "?"))
    assert missing.message == f"no recorded answer for gsm8k[7] in {path}"


def test_a_bad_replay_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    good = json.dumps({"benchmark": "b", "id": "1", "response": "x"})
    path.write_text(f"{good}\n{{not json\n")
    with pytest.raises(ConfigError) as raised:
        build_target(spec("replay", path=str(path)))  # read at once: one error, before any item
    assert raised.value.path == path and raised.value.key == "line 2"


def test_a_folder_of_replay_files_is_read_whole(tmp_path: Path) -> None:
    write_replay(tmp_path / "gsm8k.jsonl", [result("42", "forty-two")])
    (tmp_path / "other.jsonl").write_text(
        json.dumps({"benchmark": "other", "id": "1", "response": "one"}) + "\n"
    )
    target = build_target(spec("replay", path=str(tmp_path)))
    assert ask(target).text == "forty-two"
    assert ask(target, Request("other", "1", "?")).text == "one"
    write_replay(tmp_path / "again.jsonl", [result("42", "twice")])
    with pytest.raises(ConfigError, match=r"a second answer for gsm8k\[42\]"):
        build_target(spec("replay", path=str(tmp_path))).load()  # type: ignore[attr-defined]


def test_a_missing_replay_file_fails_at_build_time(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        build_target(spec("replay", path=str(tmp_path / "nope.jsonl")))


def test_identity_is_plain_json(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text("")
    kinds: list[tuple[str, Mapping[str, Any]]] = [
        ("openai", {"base_url": "http://x/v1", "model": "m"}),
        ("ollama", {"model": "m"}),
        ("http", {"url": "http://x", "response_path": "a"}),
        ("replay", {"path": str(tmp_path / "r.jsonl")}),
    ]
    for kind, options in kinds:
        identity = build_target(spec(kind, **options)).identity()
        assert identity["kind"] == kind
        json.dumps(identity)
