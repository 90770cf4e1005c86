"""The request engine in a helper process, against a real HTTP server on 127.0.0.1.

Every wait on the helper is bounded (:func:`bounded`), so that a hang fails the test
instead of blocking the suite.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pytest_expertbench import engine_process
from pytest_expertbench.cache import ResponseCache
from pytest_expertbench.engine import Engine, EngineSettings
from pytest_expertbench.engine_process import EngineProcess
from pytest_expertbench.records import Completion, Request, TargetError
from pytest_expertbench.targets.openai import OpenAITarget
from tests.helpers import QUESTIONS, REPO, Project
from tests.support.fake_openai import FakeOpenAI

FAST = EngineSettings(concurrency=4, timeout_s=5.0, max_retries=3, backoff_base_s=0.01)
KILLED = f"exit code {-signal.SIGKILL}"
T = TypeVar("T")
reads_proc = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="reads the process table in /proc"
)


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


def answer_all(engine: Engine | EngineProcess, requests: list[Request]) -> list[Completion]:
    engine.prefetch(requests)
    return [engine.result(request) for request in requests]


def bounded(call: Callable[[], T], timeout_s: float = 10.0) -> T:
    """``call()``'s result (or exception), failing the test if it takes over ``timeout_s``."""
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # handed to the test's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"no return within {timeout_s} s: the caller would hang"
    succeeded, value = outcome[0]
    if not succeeded:
        raise value
    result: T = value
    return result


def in_background(call: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    """``call()`` in a started thread, as another item would wait; what it raises is listed."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # the test reads it
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, raised


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll ``condition`` (a server's counter, a process table): nothing to be notified by."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.01)


def is_gone(pid: int) -> bool:
    """Whether ``pid`` has exited and been reaped (an orphan's zombie is init's to reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    state, parent = stat.rsplit(")", 1)[1].split()[:2]
    return state == "Z" and int(parent) != os.getpid()


def children() -> set[int]:
    """This process's child processes, zombies included."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except FileNotFoundError:  # it has just exited
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
            found.add(int(entry.name))
    return found


# ---------------------------------------------------------------------- answers


def test_every_prefetched_request_is_answered_exactly_once(server: FakeOpenAI) -> None:
    requests = requests_for(40)
    with EngineProcess(target_of(server), FAST) as engine:
        engine.prefetch(requests)
        completions = bounded(lambda: answer_all(engine, requests))  # prefetched twice
        stats = engine.stats()["b"]
    assert [c.text for c in completions] == [f"ANSWER: question {i}" for i in range(40)]
    assert all(c.latency_ms > 0 and c.attempts == 1 and not c.cached for c in completions)
    assert server.counts == {f"question {i}": 1 for i in range(40)}
    assert (stats.asked, stats.done, stats.errors, stats.retries, stats.cached) == (40, 40, 0, 0, 0)
    assert stats.elapsed_s > 0


def test_answers_are_those_of_the_thread_engine(server: FakeOpenAI) -> None:
    server.answers["question 2"] = {"text": "", "tool_calls": [{"name": "add", "arguments": {}}]}
    requests = [*requests_for(6), replace(requests_for(1)[0], example_id="x", system="be brief")]
    with Engine(target_of(server), FAST) as engine:
        in_thread = bounded(lambda: answer_all(engine, requests))
    with EngineProcess(target_of(server), FAST) as helper:
        in_helper = bounded(lambda: answer_all(helper, requests))
    assert in_helper[2].tool_calls[0].name == "add"
    untimed = [[replace(c, latency_ms=0.0) for c in run] for run in (in_thread, in_helper)]
    assert untimed[0] == untimed[1]


def test_prefetch_order_is_kept(server: FakeOpenAI) -> None:
    requests = requests_for(12)
    random.Random(7).shuffle(requests)
    settings = replace(FAST, concurrency=1)
    with EngineProcess(target_of(server), settings) as engine:
        engine.prefetch(requests)
        wait_until(lambda: engine.stats()["b"].done == len(requests))
        completions = bounded(lambda: [engine.result(r) for r in requests])
    asked = [body["messages"][-1]["content"] for body in (r.body for r in server.received)]
    assert asked == [r.prompt for r in requests]
    assert [c.text for c in completions] == [f"ANSWER: {r.prompt}" for r in requests]
    assert server.total == len(requests)  # handing out an answer received early asks nothing


def test_a_request_never_prefetched_jumps_the_queue() -> None:
    with FakeOpenAI(latency_s=0.05) as server:
        settings = replace(FAST, concurrency=1)
        urgent = Request("b", "urgent", "the urgent one")
        with EngineProcess(target_of(server), settings) as engine:
            engine.prefetch(requests_for(50))
            assert bounded(lambda: engine.result(urgent)).text == "ANSWER: the urgent one"
            order = [json.dumps(r.body) for r in server.received]
            asked = engine.stats()["b"].asked
    position = next(i for i, body in enumerate(order) if "the urgent one" in body)
    assert position <= 2  # behind at most what was in flight when the helper heard of it
    assert len(order) < 10  # the rest of the queue was not waited for
    assert asked == 51


def test_asking_for_a_result_twice_asks_the_model_twice(server: FakeOpenAI) -> None:
    request = requests_for(1)[0]
    with EngineProcess(target_of(server), FAST) as engine:
        engine.prefetch([request])
        first = bounded(lambda: engine.result(request))
        second = bounded(lambda: engine.result(request))
        engine.prefetch([request])  # already asked: not queued again
        stats = engine.stats()["b"]
    assert first.text == second.text == "ANSWER: question 0"
    assert server.counts["question 0"] == 2
    assert (stats.asked, stats.done) == (2, 2)


def test_stats_are_counted_per_benchmark(server: FakeOpenAI) -> None:
    server.script(match="question 1", faults=["500"])
    server.script(match="question 4", faults=["400"])
    first, second = requests_for(3, benchmark="first"), requests_for(5, benchmark="second")
    with EngineProcess(target_of(server), FAST) as engine:
        engine.prefetch(first + second)
        for request in first + second:
            if request.prompt != "question 4":
                bounded(partial(engine.result, request))
        with pytest.raises(TargetError):
            bounded(lambda: engine.result(second[4]))
        stats = engine.stats()
    counts = {name: (s.asked, s.done, s.errors, s.retries, s.cached) for name, s in stats.items()}
    # "question 1" is in both benchmarks: its one scripted fault hits the first to ask it
    assert sum(counts[name][3] for name in counts) == 1
    assert {name: c[:3] for name, c in counts.items()} == {
        "first": (3, 3, 0),
        "second": (5, 5, 1),
    }


def test_peak_in_flight_never_exceeds_the_concurrency(server: FakeOpenAI) -> None:
    settings = replace(FAST, concurrency=3)
    with EngineProcess(target_of(server), settings) as engine:
        bounded(lambda: answer_all(engine, requests_for(30)))
        peak = engine.peak_in_flight
    assert 1 < server.max_concurrent <= 3
    assert 1 < peak <= 3


# ---------------------------------------------------------------------- faults


def test_scripted_faults_are_retried_in_the_helper(server: FakeOpenAI) -> None:
    server.script(match="question 1", faults=["500"])
    server.script(match="question 2", faults=["429:0.2"])
    server.script(match="question 3", faults=["drop"])
    with EngineProcess(target_of(server), FAST) as engine:
        started = time.perf_counter()
        completions = bounded(lambda: answer_all(engine, requests_for(5)))
        waited = time.perf_counter() - started
        stats = engine.stats()["b"]
    assert [c.text for c in completions] == [f"ANSWER: question {i}" for i in range(5)]
    assert [c.attempts for c in completions] == [1, 2, 2, 2, 1]
    assert waited >= 0.2  # the Retry-After was honoured
    assert (stats.retries, stats.errors) == (3, 0)
    assert server.counts == {f"question {i}": 2 if i in (1, 2, 3) else 1 for i in range(5)}


def test_a_request_failing_after_the_last_retry_raises_its_error_in_the_caller(
    server: FakeOpenAI,
) -> None:
    server.script(match="question 1", faults=["500"] * 3)
    server.script(match="question 2", faults=["429:0.01"] * 3)
    settings = replace(FAST, max_retries=2)
    requests = requests_for(4)
    with EngineProcess(target_of(server), settings) as engine:
        engine.prefetch(requests)
        errors = []
        for request in requests[1:3]:
            with pytest.raises(TargetError) as raised:
                bounded(partial(engine.result, request))
            errors.append(raised.value)
        others = bounded(lambda: [engine.result(requests[0]), engine.result(requests[3])])
        stats = engine.stats()["b"]
    url = f"{server.base_url}/chat/completions"
    assert str(errors[0]) == f"HTTP 500 from {url}: injected 500 (after 3 attempts)"
    assert (errors[0].status, errors[0].retryable, errors[0].retry_after) == (500, True, None)
    assert str(errors[1]) == f"HTTP 429 from {url}: injected 429 (after 3 attempts)"
    assert (errors[1].status, errors[1].retryable, errors[1].retry_after) == (429, True, 0.01)
    assert [c.text for c in others] == ["ANSWER: question 0", "ANSWER: question 3"]
    assert (stats.errors, stats.retries, stats.done) == (2, 4, 4)


def test_a_target_error_survives_pickling() -> None:
    error = TargetError("HTTP 429 from x: slow down", retryable=True, retry_after=2.5, status=429)
    copy = pickle.loads(pickle.dumps(error, protocol=pickle.HIGHEST_PROTOCOL))
    assert (str(copy), copy.message, copy.retryable, copy.retry_after, copy.status) == (
        "HTTP 429 from x: slow down",
        "HTTP 429 from x: slow down",
        True,
        2.5,
        429,
    )


# ---------------------------------------------------------------------- cache


def test_a_second_helper_on_the_same_cache_asks_nothing(server: FakeOpenAI, tmp_path: Path) -> None:
    requests = requests_for(10, temperature=0)
    runs, stats = [], []
    for _ in range(2):
        cache = ResponseCache(tmp_path)
        with EngineProcess(target_of(server), FAST, cache) as engine:
            runs.append(bounded(partial(answer_all, engine, requests)))
            stats.append(engine.stats()["b"])
        cache.close()
    assert server.total == 10
    assert not any(c.cached for c in runs[0]) and all(c.cached for c in runs[1])
    assert (stats[0].cached, stats[1].cached) == (0, 10)
    assert [c.text for c in runs[1]] == [c.text for c in runs[0]]
    assert [c.latency_ms for c in runs[1]] == [c.latency_ms for c in runs[0]]


def test_cache_off_never_writes(server: FakeOpenAI, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    with EngineProcess(target_of(server), FAST, ResponseCache(cache_dir, "off")) as engine:
        bounded(partial(answer_all, engine, requests_for(3)))
    assert server.total == 3
    assert not cache_dir.exists()


# ---------------------------------------------------------------------- the helper's end


@reads_proc
def test_a_dead_helper_fails_every_waiting_and_later_result(server: FakeOpenAI) -> None:
    server.script(match="question 0", faults=["timeout"])
    requests = requests_for(3)
    engine = EngineProcess(target_of(server), replace(FAST, timeout_s=30.0))
    try:
        bounded(lambda: engine.result(requests[1]))
        waiter, waiting = in_background(partial(engine.result, requests[0]))
        wait_until(lambda: server.counts["question 0"] == 1)  # the helper is asking it
        last_counts = engine.stats()
        engine._process.kill()
        waiter.join(10)
        assert not waiter.is_alive(), "a result() waiting when the helper died never returned"
        with pytest.raises(TargetError) as later:
            bounded(lambda: engine.result(requests[2]))
        engine.prefetch(requests)  # no error: the news comes with the results
        assert bounded(engine.stats) == last_counts  # the last counts it sent
    finally:
        bounded(engine.close, timeout_s=5)
    for error in (waiting[0], later.value):
        assert isinstance(error, TargetError)
        assert "helper process stopped" in str(error) and KILLED in str(error)
    assert is_gone(engine._process.pid)


def test_a_request_that_cannot_be_sent_fails_instead_of_hanging(server: FakeOpenAI) -> None:
    unpicklable = Request("b", "0", "question 0", fields={"lock": threading.Lock()})
    with EngineProcess(target_of(server), FAST) as engine:
        with pytest.raises(TargetError) as raised:
            bounded(lambda: engine.result(unpicklable))
        with pytest.raises(TargetError):
            bounded(lambda: engine.result(requests_for(2)[1]))
    assert str(raised.value).startswith("cannot hand the request engine its work: ")
    assert "lock" in str(raised.value)
    assert server.total == 0


def test_a_helper_that_cannot_start_says_why(server: FakeOpenAI, tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text("raise SystemExit('no GPU on this node')\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(tmp_path))
        engine = EngineProcess(target_of(server), FAST)
    with engine, pytest.raises(TargetError) as raised:
        bounded(lambda: engine.result(requests_for(1)[0]))
    assert "helper process stopped (exit code 1)" in str(raised.value)
    assert "no GPU on this node" in str(raised.value)


@reads_proc
def test_close_is_idempotent_reaps_the_helper_and_fails_a_waiting_result(
    server: FakeOpenAI,
) -> None:
    server.script(match="question 0", faults=["timeout"])
    request = requests_for(1)[0]
    engine = EngineProcess(target_of(server), replace(FAST, timeout_s=30.0))
    waiter, waiting = in_background(partial(engine.result, request))
    wait_until(lambda: server.counts["question 0"] == 1)
    bounded(engine.close, timeout_s=5)  # the request in flight is cancelled, not waited for
    bounded(engine.close, timeout_s=1)
    waiter.join(5)
    assert not waiter.is_alive()
    assert isinstance(waiting[0], TargetError)
    assert str(waiting[0]) == "the request engine was closed before the answer came"
    assert engine._process.returncode == 0
    assert is_gone(engine._process.pid)
    with pytest.raises(RuntimeError, match="closed"):
        engine.result(request)
    with pytest.raises(RuntimeError, match="closed"):
        engine.prefetch([request])
    assert engine.stats()["b"].asked == 1  # the last counts, kept


@reads_proc
def test_the_helper_exits_when_pytest_disappears(server: FakeOpenAI) -> None:
    """pytest killed outright: the helper's stdin closes and it leaves by itself."""
    server.script(match="question 0", faults=["timeout"])
    script = (
        "import sys, threading\n"
        "from pytest_expertbench.engine import EngineSettings\n"
        "from pytest_expertbench.engine_process import EngineProcess\n"
        "from pytest_expertbench.records import Request\n"
        "from pytest_expertbench.targets.openai import OpenAITarget\n"
        "target = OpenAITarget(name='fake', base_url=sys.argv[1], model='m')\n"
        "engine = EngineProcess(target, EngineSettings(timeout_s=60))\n"
        "engine.prefetch([Request('b', '0', 'question 0')])\n"
        "print(engine._process.pid, flush=True)\n"
        "threading.Event().wait()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, server.base_url], stdout=subprocess.PIPE, cwd=REPO
    )
    try:
        assert parent.stdout is not None
        helper = int(bounded(parent.stdout.readline))
        wait_until(lambda: server.counts["question 0"] == 1)
        assert not is_gone(helper)
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
    wait_until(lambda: is_gone(helper))


# ---------------------------------------------------------------------- the plugin

ANSWERS = {text: f"The answer is {answer.split()[-1]}." for _, text, answer in QUESTIONS}
TIMING = ("latency_ms", "tokens_per_s")


def example_rows(project: Project, name: str) -> list[dict[str, Any]]:
    """The example rows without what a live server's timing changes from run to run."""
    rows = [r for r in project.results(name) if r["type"] == "example"]
    for row in rows:
        row.pop("captured_at", None)
        for score in TIMING:
            row["scores"].pop(score, None)
    return rows


@reads_proc
def test_a_plugin_run_leaves_no_helper_behind_and_scores_as_in_process(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[subprocess.Popen[bytes]] = []

    class Recorded(EngineProcess):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            started.append(self._process)

    monkeypatch.setattr(engine_process, "EngineProcess", Recorded)
    with FakeOpenAI(answers=ANSWERS, latency_s=0.01) as server:
        target = {"kind": "openai", "base_url": server.base_url, "model": "fake"}
        project.targets({"live": target}, default="live")
        args = ("--expert-bench=quick", "--expert-bench-cache=off")
        before = children()
        project.run(*args, "--expert-bench-report-dir=reports/helper").assert_outcomes(passed=6)
        assert len(started) == 1 and started[0].returncode == 0
        assert children() - before == set()  # neither running nor a zombie
        monkeypatch.setattr(OpenAITarget, "helper_process", False)
        project.run(*args, "--expert-bench-report-dir=reports/thread").assert_outcomes(passed=6)
        assert len(started) == 1
        assert dict(server.counts) == {text: 2 for _, text, _ in QUESTIONS}
    in_helper = example_rows(project, "helper")
    assert [r["scores"]["numeric_match"] for r in in_helper] == [1.0] * len(QUESTIONS)
    assert in_helper == example_rows(project, "thread")


def test_a_module_in_the_working_directory_does_not_shadow_the_helpers_imports(
    server: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A project may have a ``random.py`` at its root: pytest (a script) never imports it."""
    (tmp_path / "random.py").write_text("raise ImportError('the project random.py')\n")
    monkeypatch.chdir(tmp_path)
    with EngineProcess(target_of(server), FAST) as engine:
        completion = bounded(lambda: engine.result(requests_for(1)[0]))
    assert completion.text == "ANSWER: question 0"


def test_output_on_the_helpers_stdout_before_it_starts_is_not_an_answer(
    server: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A site hook that prints a banner, unbuffered (PYTHONUNBUFFERED is common in CI)."""
    banner = "import sys; sys.stdout.write('Welcome to node 7\\n'); sys.stdout.flush()\n"
    (tmp_path / "sitecustomize.py").write_text(banner)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")
    with EngineProcess(target_of(server), FAST) as engine:
        completions = bounded(lambda: answer_all(engine, requests_for(3)))
    assert [c.text for c in completions] == [f"ANSWER: question {i}" for i in range(3)]


@reads_proc
def test_an_unreadable_message_fails_the_waiting_results_instead_of_hanging(
    server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(stream: Any) -> tuple[Any, ...] | None:
        raise pickle.UnpicklingError("invalid load key, 'W'.")

    server.script(match="question 0", faults=["timeout"])
    monkeypatch.setattr(engine_process, "_read", unreadable)  # the caller's reader only
    engine = EngineProcess(target_of(server), replace(FAST, timeout_s=30.0))
    with pytest.raises(TargetError) as raised:
        bounded(lambda: engine.result(requests_for(1)[0]))
    bounded(engine.close, timeout_s=5)
    assert str(raised.value) == (
        "the request engine's helper process sent an unreadable message "
        "(UnpicklingError: invalid load key, 'W'.)"
    )
    assert is_gone(engine._process.pid)
