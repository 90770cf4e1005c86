"""Streamed answers (``stream: true``) against the fake server: the same answers, timed."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_expertbench.config import TargetSpec
from pytest_expertbench.engine import Engine, EngineSettings
from pytest_expertbench.records import Completion, Request, TargetError
from pytest_expertbench.streaming import TokenClock, stream_scores
from pytest_expertbench.targets import build_target
from tests.helpers import QUESTIONS, Project, short_benchmark
from tests.support.fake_openai import FakeOpenAI

OUT = "--expert-bench-report-dir=reports/out"
CALL = {"name": "convert", "arguments": {"value": 12, "units": ["km", "mi"], "note": "x" * 30}}
# Several words a text (several chunks); q2 answers with a tool call and no text.
ANSWERS: dict[str, Any] = {
    text: f"Working it out step by step, the answer is {answer.split()[-1]}."
    for _, text, answer in QUESTIONS
}
ANSWERS["What is 3 x 4?"] = {"text": "", "tool_calls": [CALL, {**CALL, "name": "check"}]}
KINDS = [
    ("openai", "chat"),
    ("openai", "completions"),
    ("ollama", "chat"),
    ("ollama", "generate"),
]
STREAMED = ("ttft_ms", "tpot_ms", "itl_p50_ms", "itl_p90_ms", "itl_p99_ms")
TIMED = short_benchmark(
    "mini",
    "  first_token: {of: ttft_ms, agg: p50, direction: lower}\n"
    "  per_token: {of: tpot_ms, agg: mean, direction: lower}\n",
)


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(answers=ANSWERS, first_token_s=0.05, token_s=0.003) as fake:
        yield fake


def use(project: Project, server: FakeOpenAI, kind: str, endpoint: str, **extra: Any) -> None:
    base_url = server.base_url if kind == "openai" else server.root_url
    target = {"kind": kind, "base_url": base_url, "model": "m", "endpoint": endpoint, **extra}
    project.targets({"live": target}, default="live")


def examples(project: Project) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in project.results() if r["type"] == "example"}


@pytest.mark.parametrize(("kind", "endpoint"), KINDS, ids=[f"{k}-{e}" for k, e in KINDS])
def test_streamed_answers_equal_the_whole_ones_and_are_timed(
    project: Project, server: FakeOpenAI, kind: str, endpoint: str
) -> None:
    project.write("mini.yaml", TIMED)
    runs = []
    for stream in (False, True):
        use(project, server, kind, endpoint, stream=stream)
        result = project.run("--expert-bench=quick", "--expert-bench-cache=off", OUT)
        if not stream:  # the timing metrics are left out, not incomplete
            result.assert_outcomes(passed=6, skipped=1)
        metrics = {r["metric_id"] for r in project.results() if r.get("type") == "metric"}
        assert ("mini.first_token" in metrics) is stream
        runs.append(examples(project))
    whole, streamed = runs
    assert sorted(streamed) == [q for q, _, _ in QUESTIONS]
    bodies = [r.body for r in server.received]
    whole_flags = [False] * 6 if kind == "ollama" else []  # openai: no stream key at all
    assert [b["stream"] for b in bodies if "stream" in b] == whole_flags + [True] * 6
    for qid, row in streamed.items():
        before = whole[qid]
        assert row["response"] == before["response"]
        assert row.get("tool_calls") == before.get("tool_calls")
        for usage in ("prompt_tokens", "completion_tokens"):
            assert row["scores"].get(usage) == before["scores"].get(usage), (qid, usage)
        assert not set(STREAMED) & set(before["scores"])  # a whole answer has no stream timing
    chat = endpoint == "chat"
    tool_row = streamed["q2"]
    assert [c["name"] for c in tool_row.get("tool_calls", [])] == (
        ["convert", "check"] if chat else []
    )
    if chat:
        assert tool_row["tool_calls"][0]["arguments"].replace(" ", "") == (
            '{"value":12,"units":["km","mi"],"note":"' + "x" * 30 + '"}'
        )
    text_row = streamed["q0"]["scores"]
    assert set(STREAMED) <= set(text_row)
    assert 50 <= text_row["ttft_ms"] < text_row["latency_ms"]
    # The server waits 3 ms between chunks; on a loaded machine two may arrive in one read
    # (a gap near 0), so only the mean and the largest gaps are bound to reach it.
    assert text_row["tpot_ms"] >= 2
    assert text_row["itl_p99_ms"] >= 3
    assert text_row["itl_p50_ms"] <= text_row["itl_p90_ms"] <= text_row["itl_p99_ms"]
    assert project.metric(project.results(), "mini.first_token")["value"] >= 50


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_a_stream_cut_short_is_retried_and_a_bad_event_is_not(
    project: Project, server: FakeOpenAI, kind: str
) -> None:
    use(project, server, kind, "chat", stream=True, max_retries=1)
    server.script(match="2 + 3", faults=["cut"])
    server.script(match="10 - 4", faults=["bad-event"])
    result = project.run("--expert-bench=quick", "--expert-bench-cache=off", OUT)
    result.assert_outcomes(passed=5, errors=1, failed=1)
    assert server.counts["What is 2 + 3?"] == 2  # cut mid-answer, asked again, answered
    assert server.counts["What is 10 - 4?"] == 1  # not retried
    result.stdout.fnmatch_lines(
        ["*mini[[]q1[]]: model request failed: malformed event in the stream from *: '{not json'"]
    )
    assert "Traceback" not in result.stdout.str()
    rows = examples(project)
    assert rows["q0"]["response"] == ANSWERS["What is 2 + 3?"]
    assert "\n" not in rows["q1"]["error"]


def test_a_cut_stream_fails_with_one_retryable_line(project: Project, server: FakeOpenAI) -> None:
    use(project, server, "openai", "chat", stream=True, max_retries=0)
    server.script(match="2 + 3", faults=["cut"])
    result = project.run("--expert-bench=quick", "--expert-bench-cache=off", OUT)
    result.assert_outcomes(passed=5, errors=1, failed=1)
    result.stdout.fnmatch_lines(
        ["*mini[[]q0[]]: model request failed: the connection to * was dropped: *"]
    )
    assert "\n" not in examples(project)["q0"]["error"]


def test_the_scores_follow_vllms_definitions() -> None:
    """Sent at 0 s, chunks at 0.1, 0.12, 0.13, 0.16 s; the server counts 7 output tokens."""
    clock = TokenClock()
    clock.started, clock.chunks = 0.0, [0.1, 0.12, 0.13, 0.16]
    scores = stream_scores(clock.timed(Completion(text="abcd", completion_tokens=7)))
    assert scores["ttft_ms"] == pytest.approx(100.0)
    assert scores["tpot_ms"] == pytest.approx(60.0 / 6)  # (last - first) / (tokens - 1)
    assert scores["itl_p50_ms"] == pytest.approx(20.0)  # gaps 20, 10, 30
    assert scores["itl_p99_ms"] == pytest.approx(29.8)
    counted = TokenClock()  # no usage: the chunks are counted
    counted.started, counted.chunks = 0.5, [1.0, 1.5]
    assert stream_scores(counted.timed(Completion(text="ab")))["tpot_ms"] == pytest.approx(500.0)
    one = TokenClock()
    one.started, one.chunks = 0.0, [0.2]
    assert stream_scores(one.timed(Completion(text="a"))) == {"ttft_ms": pytest.approx(200.0)}
    assert stream_scores(Completion(text="whole")) == {}


def test_a_cached_streamed_answer_keeps_its_timing(project: Project, server: FakeOpenAI) -> None:
    use(project, server, "openai", "chat", stream=True)
    project.run("--expert-bench=quick", OUT)
    first = {qid: row["scores"]["ttft_ms"] for qid, row in examples(project).items()}
    project.run("--expert-bench=quick", "--expert-bench-cache=reuse", OUT)
    assert server.total == 6  # the second run was served from the cache
    assert {qid: row["scores"]["ttft_ms"] for qid, row in examples(project).items()} == first


def test_stream_must_be_true_or_false(project: Project) -> None:
    project.targets(
        {"live": {"kind": "openai", "base_url": "http://x/v1", "model": "m"} | {"stream": "yes"}},
        default="live",
    )
    result = project.run("--expert-bench=quick")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*targets.yaml: targets.live.stream: expected true or false*"])


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_a_stream_that_fails_gives_its_connection_back_at_once(
    server: FakeOpenAI, kind: str
) -> None:
    """A malformed event ends the reading early. The stream must be closed then, not when
    the garbage collector finds it (here: never, gc off): else its connection stayed
    checked out of its client, and the next request on that client waited until its
    timeout (a run in CI waited 120 s)."""
    server.script(match="10 - 4", faults=["bad-event"])
    base_url = server.base_url if kind == "openai" else server.root_url
    options = {"base_url": base_url, "model": "m", "stream": True}
    target = build_target(TargetSpec("live", kind, options, Path()))
    bad = Request("mini", "q0", "What is 10 - 4?")
    good = Request("mini", "q1", "What is 2 + 3?")
    gc.disable()
    try:
        with Engine(target, EngineSettings(concurrency=1, timeout_s=5.0, max_retries=0)) as engine:
            engine.prefetch([bad, good])
            with pytest.raises(TargetError, match="malformed"):
                engine.result(bad)
            started = time.monotonic()
            assert engine.result(good).text == ANSWERS["What is 2 + 3?"]
            assert time.monotonic() - started < 2.0
    finally:
        gc.enable()
