"""The engine against a real HTTP server on 127.0.0.1 (tests.support.fake_openai)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_expertbench.cache import ResponseCache
from pytest_expertbench.engine import Engine, EngineSettings
from pytest_expertbench.records import Completion, Request, TargetError
from pytest_expertbench.targets.openai import OpenAITarget
from pytest_expertbench.targets.python import PythonTarget
from pytest_expertbench.targets.replay import ReplayTarget
from tests.support import workers
from tests.support.fake_openai import FakeOpenAI

FAST = EngineSettings(concurrency=4, timeout_s=5.0, max_retries=3, backoff_base_s=0.01)


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(latency_s=0.01, capacity=64) as fake:
        yield fake


def target_of(server: FakeOpenAI) -> OpenAITarget:
    return OpenAITarget(name="fake", base_url=server.base_url, model="m")


def requests_for(n: int, benchmark: str = "b", **generation: object) -> list[Request]:
    return [
        Request(benchmark, str(i), f"question {i}", generation=dict(generation)) for i in range(n)
    ]


def answer_all(engine: Engine, requests: list[Request]) -> list[Completion]:
    engine.prefetch(requests)
    return [engine.result(request) for request in requests]


def test_every_request_is_answered_exactly_once(server: FakeOpenAI) -> None:
    requests = requests_for(40)
    with Engine(target_of(server), FAST) as engine:
        engine.prefetch(requests)  # a second prefetch of the same requests is a no-op
        completions = answer_all(engine, requests)
        stats = engine.stats()["b"]
    assert [c.text for c in completions] == [f"ANSWER: question {i}" for i in range(40)]
    assert all(c.latency_ms > 0 and c.attempts == 1 and not c.cached for c in completions)
    assert completions[0].prompt_tokens == 2
    assert server.counts == {f"question {i}": 1 for i in range(40)}
    assert (stats.asked, stats.done, stats.errors, stats.retries) == (40, 40, 0, 0)
    assert stats.elapsed_s > 0


def test_a_result_not_ready_in_time_raises_timeout_and_the_request_goes_on() -> None:
    with FakeOpenAI(latency_s=0.3) as slow, Engine(target_of(slow), FAST) as engine:
        request = requests_for(1)[0]
        with pytest.raises(TimeoutError):
            engine.result(request, timeout=0.05)
        completion = engine.result(request, timeout=5.0)
        asked = dict(slow.counts)
    assert completion.text == "ANSWER: question 0"
    assert asked == {"question 0": 1}  # the wait did not ask again


def test_concurrency_bound_is_respected(server: FakeOpenAI) -> None:
    settings = EngineSettings(concurrency=3, timeout_s=5.0)
    with Engine(target_of(server), settings) as engine:
        answer_all(engine, requests_for(30))
        peak = engine.peak_in_flight
    assert 1 < server.max_concurrent <= 3
    assert peak <= 3


def test_a_server_error_is_retried(server: FakeOpenAI) -> None:
    server.script(match="question 3", faults=["500"])
    with Engine(target_of(server), FAST) as engine:
        completions = answer_all(engine, requests_for(5))
        stats = engine.stats()["b"]
    assert completions[3].text == "ANSWER: question 3"
    assert completions[3].attempts == 2
    assert server.counts["question 3"] == 2
    assert stats.retries == 1 and stats.errors == 0


def test_retry_after_is_honoured(server: FakeOpenAI) -> None:
    server.script(match="question 0", faults=["429:0.3"])
    request = requests_for(1)[0]
    with Engine(target_of(server), FAST) as engine:
        started = time.perf_counter()
        completion = engine.result(request)
        waited = time.perf_counter() - started
    assert completion.attempts == 2
    assert waited >= 0.3


def test_a_dropped_connection_is_retried(server: FakeOpenAI) -> None:
    server.script(match="question 1", faults=["drop"])
    with Engine(target_of(server), FAST) as engine:
        completions = answer_all(engine, requests_for(3))
    assert completions[1].text == "ANSWER: question 1"
    assert completions[1].attempts == 2


def test_only_the_faulty_request_fails_after_the_last_retry(server: FakeOpenAI) -> None:
    server.script(match="question 2", faults=["timeout"] * 3)
    settings = EngineSettings(concurrency=4, timeout_s=0.2, max_retries=2, backoff_base_s=0.01)
    requests = requests_for(5)
    with Engine(target_of(server), settings) as engine:
        engine.prefetch(requests)
        with pytest.raises(TargetError) as raised:
            engine.result(requests[2])
        others = [engine.result(r) for i, r in enumerate(requests) if i != 2]
        stats = engine.stats()["b"]
    message = str(raised.value)
    assert "timed out" in message and "after 3 attempts" in message
    assert "\n" not in message
    assert server.counts["question 2"] == 3
    assert [c.text for c in others] == [f"ANSWER: question {i}" for i in (0, 1, 3, 4)]
    assert (stats.errors, stats.retries, stats.done) == (1, 2, 5)


def test_a_client_error_is_not_retried() -> None:
    with FakeOpenAI(models={"m"}) as server:
        target = OpenAITarget(name="fake", base_url=server.base_url, model="missing")
        with Engine(target, FAST) as engine, pytest.raises(TargetError) as raised:
            engine.result(requests_for(1)[0])
    assert str(raised.value) == (
        f"HTTP 404 from {server.base_url}/chat/completions: model 'missing' not found"
    )
    assert raised.value.status == 404


def test_an_unstarted_request_jumps_the_queue() -> None:
    with FakeOpenAI(latency_s=0.02) as server:
        settings = EngineSettings(concurrency=1, timeout_s=5.0)
        urgent = Request("b", "urgent", "the urgent one")
        with Engine(target_of(server), settings) as engine:
            engine.prefetch(requests_for(50))
            assert engine.result(urgent).text == "ANSWER: the urgent one"
            order = [json.dumps(r.body) for r in server.received]
    position = next(i for i, body in enumerate(order) if "the urgent one" in body)
    assert position <= 1  # at most the request already in flight went first
    assert len(order) < 10  # the rest of the queue was not waited for


def test_twenty_thousand_queued_requests_make_at_most_concurrency_tasks() -> None:
    most_tasks = 0

    async def answer(prompt: str) -> str:
        nonlocal most_tasks
        most_tasks = max(most_tasks, len(asyncio.all_tasks()))
        return prompt.upper()

    target = PythonTarget(name="py", function_name="answer", function=answer)
    requests = requests_for(20_000)
    with Engine(target, EngineSettings(concurrency=8)) as engine:
        completions = answer_all(engine, requests)
        peak = engine.peak_in_flight
    assert completions[-1].text == "QUESTION 19999"
    assert most_tasks <= 8
    assert peak <= 8


def test_an_exception_in_a_target_fails_its_request_once() -> None:
    calls = 0

    def broken(prompt: str) -> str:
        nonlocal calls
        calls += 1
        raise ValueError(f"cannot answer {prompt}")

    target = PythonTarget(name="py", function_name="broken", function=broken)
    with Engine(target, FAST) as engine, pytest.raises(TargetError) as raised:
        engine.result(requests_for(1)[0])
    assert str(raised.value) == "ValueError: cannot answer question 0"
    assert calls == 1


def test_the_cache_answers_a_second_run_without_a_request(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    requests = requests_for(10, temperature=0)
    with Engine(target_of(server), FAST, ResponseCache(tmp_path)) as engine:
        first = answer_all(engine, requests)
    asked = server.total
    with Engine(target_of(server), FAST, ResponseCache(tmp_path)) as engine:
        second = answer_all(engine, requests)
        stats = engine.stats()["b"]
    assert server.total == asked == 10
    assert all(c.cached for c in second) and stats.cached == 10
    assert [c.text for c in second] == [c.text for c in first]
    assert [c.latency_ms for c in second] == [c.latency_ms for c in first]


def test_refresh_asks_again_and_stores_the_new_answer(server: FakeOpenAI, tmp_path: Path) -> None:
    requests = requests_for(3)
    for mode in ("on", "refresh", "on"):
        cache = ResponseCache(tmp_path, mode=mode)
        with Engine(target_of(server), FAST, cache) as engine:
            answer_all(engine, requests)
        cache.close()
    assert server.counts == {f"question {i}": 2 for i in range(3)}


def test_cache_off_never_writes(server: FakeOpenAI, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    with Engine(target_of(server), FAST, ResponseCache(cache_dir, mode="off")) as engine:
        answer_all(engine, requests_for(3))
    assert not cache_dir.exists()


def test_a_sampled_request_is_not_cached(server: FakeOpenAI, tmp_path: Path) -> None:
    sampled = requests_for(2, temperature=0.7)
    seeded = requests_for(2, benchmark="seeded", temperature=0.7, seed=1)
    for _ in range(2):
        with Engine(target_of(server), FAST, ResponseCache(tmp_path)) as engine:
            answer_all(engine, sampled + seeded)
    assert server.counts == {"question 0": 3, "question 1": 3}


def test_fields_count_in_the_cache_key_only_for_a_target_that_reads_them(
    tmp_path: Path,
) -> None:
    def answer(prompt: str, fields: dict[str, str]) -> str:
        return f"{prompt}/{fields['x']}"

    def ask(target: PythonTarget | OpenAITarget, fields: dict[str, str]) -> Completion:
        with Engine(target, FAST, ResponseCache(tmp_path)) as engine:
            return engine.result(Request("b", "0", "p", fields=fields))

    reader = PythonTarget(
        name="py", function_name="answer", function=answer, keywords=frozenset({"fields"})
    )
    assert ask(reader, {"x": "1"}).text == "p/1"
    assert ask(reader, {"x": "2"}).text == "p/2"
    with FakeOpenAI() as server:
        ask(target_of(server), {"x": "1"})
        second = ask(target_of(server), {"x": "2"})
    assert second.cached and server.total == 1


def test_a_closed_engine_has_stored_its_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache stores from a thread of its own; closing the engine waits for it, so
    another process (here: another connection) finds every answer at once."""
    target = PythonTarget(name="py", function_name="echo", function=lambda prompt: prompt)
    cache = ResponseCache(tmp_path)
    store = cache.put_many

    def slow_disk(answers: list[tuple[str, Completion]]) -> None:
        time.sleep(0.2)
        store(answers)

    monkeypatch.setattr(cache, "put_many", slow_disk)
    with Engine(target, FAST, cache) as engine:
        engine.prefetch([Request("b", str(i), f"question {i}") for i in range(200)])
        for i in range(200):
            engine.result(Request("b", str(i), f"question {i}"))
    with sqlite3.connect(tmp_path / "responses.sqlite3") as other:
        assert other.execute("select count(*) from responses").fetchone()[0] == 200
    cache.close()


def test_two_processes_share_one_cache(server: FakeOpenAI, tmp_path: Path) -> None:
    prompts = [f"question {i}" for i in range(20)]
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        runs = [
            pool.apply_async(workers.answer_all, (server.base_url, str(tmp_path), prompts))
            for _ in range(2)
        ]
        answers = [run.get(timeout=60) for run in runs]
    expected = [f"ANSWER: {prompt}" for prompt in prompts]
    assert answers == [expected, expected]
    cache = ResponseCache(tmp_path)
    target = target_of(server)
    for i, prompt in enumerate(prompts):
        key = cache.key(target.identity(), Request("other", str(i), prompt))
        assert cache.get(key) is not None


def test_a_replay_keeps_its_recorded_latency(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text(json.dumps({"benchmark": "b", "id": "0", "response": "7", "latency_ms": 12.5}))
    cache = ResponseCache(tmp_path)
    with Engine(ReplayTarget(name="replay", path=path), FAST, cache) as engine:
        completion = engine.result(requests_for(1)[0])
    assert (completion.text, completion.latency_ms, completion.cached) == ("7", 12.5, False)


def test_requests_per_minute_spaces_the_requests(server: FakeOpenAI) -> None:
    settings = EngineSettings(concurrency=4, requests_per_minute=600)  # one per 0.1 s
    with Engine(target_of(server), settings) as engine:
        started = time.perf_counter()
        answer_all(engine, requests_for(4))
        elapsed = time.perf_counter() - started
    assert elapsed >= 0.3


def test_close_is_idempotent_and_final(server: FakeOpenAI) -> None:
    engine = Engine(target_of(server), FAST)
    engine.prefetch(requests_for(3))
    engine.close()
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.result(requests_for(1)[0])
