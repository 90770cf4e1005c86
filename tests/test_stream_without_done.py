"""A stream that ends after its finish_reason without ``data: [DONE]`` (transformers serve
5.24 streams so) is a whole answer, not a stream cut short."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import QUESTIONS, Project
from tests.support.fake_openai import FakeOpenAI

OUT = "--expert-bench-report-dir=reports/out"
ANSWERS = {
    text: f"Step by step, the answer is {answer.split()[-1]}." for _, text, answer in QUESTIONS
}


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(answers=ANSWERS) as fake:
        yield fake


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_a_finished_stream_without_done_is_answered_once(
    project: Project, server: FakeOpenAI, endpoint: str
) -> None:
    target = {"kind": "openai", "base_url": server.base_url, "model": "m", "endpoint": endpoint}
    project.targets({"live": {**target, "stream": True, "max_retries": 0}}, default="live")
    server.script(match="2 + 3", faults=["no-done"])
    result = project.run("--expert-bench=quick", "--expert-bench-cache=off", OUT)
    result.assert_outcomes(passed=6, skipped=1)  # the gate: no baseline
    assert server.counts["What is 2 + 3?"] == 1  # not asked again
    rows = {r["id"]: r for r in project.results() if r["type"] == "example"}
    assert rows["q0"]["error"] is None
    assert rows["q0"]["response"] == ANSWERS["What is 2 + 3?"]
    assert rows["q0"]["scores"]["completion_tokens"] > 0  # the usage chunk came before the end
    assert rows["q0"]["scores"]["ttft_ms"] > 0
