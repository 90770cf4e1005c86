"""An unreachable or hostile server: the engine stops asking, caps Retry-After, caches nothing
broken."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from pytest_expertbench.breaker import Breaker, NotAsked, threshold_for
from pytest_expertbench.cache import ResponseCache
from pytest_expertbench.cached_answers import is_storable
from pytest_expertbench.engine import Engine, EngineSettings
from pytest_expertbench.records import Completion, Request, TargetError, ToolCall
from pytest_expertbench.targets.openai import OpenAITarget
from tests.support.fake_openai import FakeOpenAI

SETTINGS = EngineSettings(concurrency=4, timeout_s=5.0, max_retries=3, backoff_base_s=0.05)
REFUSED = TargetError("cannot reach x: refused", retryable=True, connection_failed=True)


def closed_port() -> int:
    """A 127.0.0.1 port that nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def requests_for(n: int) -> list[Request]:
    return [Request("b", str(i), f"question {i}", generation={"temperature": 0}) for i in range(n)]


def errors_of(engine: Engine, requests: list[Request]) -> list[str]:
    engine.prefetch(requests)
    messages = []
    for request in requests:
        with pytest.raises(TargetError) as caught:
            engine.result(request, timeout=60)
        messages.append(caught.value.message)
    return messages


def test_the_breaker_opens_after_a_round_of_connection_failures_in_a_row() -> None:
    breaker = Breaker("t", threshold=3)
    for outcome in (REFUSED, REFUSED, Completion("ok"), REFUSED, REFUSED):
        breaker.record(outcome)
    assert not breaker.is_open and breaker.refusal() is None  # the answer reset the count
    breaker.record(Completion("from the cache", cached=True))  # says nothing of the server
    breaker.record(REFUSED)
    assert breaker.is_open
    refusal = breaker.refusal()
    assert isinstance(refusal, NotAsked)
    assert refusal.message == (
        "not asked: t is unreachable (3 requests failed to connect: cannot reach x: refused)"
    )
    assert [threshold_for(n) for n in (1, 2, 4, 16)] == [1, 2, 4, 4]


def test_an_http_error_is_an_answer_from_the_server_and_resets_the_count() -> None:
    breaker = Breaker("t", threshold=2)
    for outcome in (REFUSED, TargetError("HTTP 500", status=500), REFUSED):
        breaker.record(outcome)
    assert not breaker.is_open


def test_waiting_to_retry_ends_when_the_breaker_opens() -> None:
    async def scenario() -> tuple[bool, float]:
        breaker = Breaker("t", threshold=1)
        started = time.monotonic()
        asyncio.get_running_loop().call_later(0.05, breaker.record, REFUSED)
        opened = await breaker.sleep(30)
        return opened, time.monotonic() - started

    opened, waited = asyncio.run(scenario())
    assert opened and waited < 5


def test_a_closed_port_stops_the_engine_asking_within_seconds() -> None:
    port = closed_port()
    target = OpenAITarget(name="dead", base_url=f"http://127.0.0.1:{port}/v1", model="m")
    started = time.monotonic()
    with Engine(target, SETTINGS) as engine:
        messages = errors_of(engine, requests_for(200))
        stats = engine.stats()["b"]
    elapsed = time.monotonic() - started
    assert elapsed < 30  # generous: each of the first 4 requests makes 4 attempts
    not_asked = [m for m in messages if m.startswith("not asked: dead is unreachable (4 req")]
    assert len(not_asked) >= 200 - 2 * SETTINGS.concurrency  # a freed slot starts the next
    assert all(str(port) in m and "\n" not in m for m in messages)
    assert stats.not_asked == len(not_asked) and stats.errors == 200
    assert stats.stopped is not None and stats.stopped.startswith("dead is unreachable")
    assert stats.retries <= 2 * SETTINGS.concurrency * SETTINGS.max_retries


def test_a_server_that_answers_errors_is_not_cut_off() -> None:
    with FakeOpenAI() as server:
        server.script(match="question", faults=["500"] * 20)
        target = OpenAITarget(name="flaky", base_url=server.base_url, model="m")
        settings = EngineSettings(concurrency=2, max_retries=0)
        with Engine(target, settings) as engine:
            messages = errors_of(engine, requests_for(20))
            assert engine.stats()["b"].stopped is None
    assert all(m.startswith("HTTP 500") for m in messages)
    assert server.total == 20


def test_a_retry_after_above_the_cap_fails_at_once() -> None:
    with FakeOpenAI() as server:
        server.script(match="question 0", faults=["429:100000"])
        target = OpenAITarget(name="busy", base_url=server.base_url, model="m")
        started = time.monotonic()
        with Engine(target, SETTINGS) as engine:
            [message] = errors_of(engine, requests_for(1))
            stats = engine.stats()["b"]
        assert time.monotonic() - started < 10
        assert server.total == 1  # not retried
    assert message.startswith("HTTP 429 from ")
    assert message.endswith(
        "the server asked to wait 100000 s, above the 60 s cap (max_retry_after_s)"
    )
    assert stats.retries == 0


def test_a_retry_after_within_the_cap_is_honoured() -> None:
    with FakeOpenAI() as server:
        server.script(match="question 0", faults=["429:0.2"])
        target = OpenAITarget(name="busy", base_url=server.base_url, model="m")
        with Engine(target, SETTINGS) as engine:
            engine.prefetch(requests_for(1))
            completion = engine.result(requests_for(1)[0], timeout=30)
    assert completion.attempts == 2 and completion.text == "ANSWER: question 0"


@pytest.mark.parametrize(
    ("completion", "storable"),
    [
        (Completion(""), False),
        (Completion("  \n"), False),
        (Completion("", tool_calls=(ToolCall("f", "{}"),)), True),
        (Completion("0"), True),
    ],
)
def test_only_an_answer_with_text_or_tool_calls_is_storable(
    completion: Completion, storable: bool
) -> None:
    assert is_storable(completion) is storable


def test_a_null_answer_is_not_cached_and_the_fixed_one_is(tmp_path: Path) -> None:
    with FakeOpenAI() as server:
        server.script(match="question 0", faults=["null"])
        target = OpenAITarget(name="live", base_url=server.base_url, model="m")
        [request] = requests_for(1)
        answers = []
        for _ in range(3):
            cache = ResponseCache(tmp_path / "cache", mode="reuse")
            try:
                with Engine(target, SETTINGS, cache) as engine:
                    engine.prefetch([request])
                    answers.append(engine.result(request, timeout=30))
            finally:
                cache.close()
    assert [a.text for a in answers] == ["", "ANSWER: question 0", "ANSWER: question 0"]
    assert [a.cached for a in answers] == [False, False, True]
    assert server.total == 2
