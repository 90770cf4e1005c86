"""The example pipeline: each example asked and scored whole, ahead of its item."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from pytest_expertbench.engine import Engine, EngineSettings
from pytest_expertbench.pipeline import ExamplePipeline, Job
from pytest_expertbench.records import Completion, ExampleResult, Request, TargetError
from tests.helpers import ANSWERS, Project
from tests.support.fake_openai import FakeOpenAI

OUT = "--expert-bench-report-dir=reports/out"
JUDGED = """\
name: mini
dataset: {file: data/mini.jsonl, id: id}
suites: {quick: all}
prompt: "{question}"
scorers:
  - judge: {target: grader, rubric: "Grade {question}: {response}", parse: verdict}
metrics:
  judged: {of: judge, agg: rate, direction: higher}
"""


XDIST = ("-n", "2", "--dist", "loadfile")


@pytest.mark.parametrize("workers", [(), XDIST], ids=["serial", "xdist"])
def test_judges_are_asked_together_ahead_of_their_items(
    project: Project, workers: tuple[str, ...]
) -> None:
    """Six judgements of 0.3 s each: asked one per item they would take 1.8 s and never
    overlap; the pipeline asks each as soon as its answer is in."""
    verdicts = {f"Grade {text}: {answer}": "PASS" for text, answer in ANSWERS.items()}
    with (
        FakeOpenAI(answers=ANSWERS) as model,
        FakeOpenAI(answers=verdicts, latency_s=0.3) as grader,
    ):
        project.targets(
            {
                "live": {"kind": "openai", "base_url": model.base_url, "model": "m"},
                "grader": {"kind": "openai", "base_url": grader.base_url, "model": "j"},
            },
            default="live",
        )
        project.write("mini.yaml", JUDGED)
        result = project.run("--expert-bench=quick", *workers, OUT)
        judged = grader.stats()
    result.assert_outcomes(passed=6, skipped=1)
    assert judged["total"] == 6  # each example judged once
    assert judged["max_concurrent"] >= 3
    assert project.metric(project.results(), "mini.judged")["value"] == 1.0


class _Answers:
    """A Python target: answers after ``gate`` opens, or fails for one prompt."""

    name = "answers"
    live = True

    def __init__(self) -> None:
        self.gate = threading.Event()

    def identity(self) -> dict[str, str]:
        return {"kind": "test"}

    async def complete(self, request: Request, client: object) -> Completion:
        if request.prompt == "fail":
            raise TargetError("the server said no")
        return Completion(text=f"answer to {request.prompt}")


@pytest.fixture
def engine() -> Iterator[Engine]:
    with Engine(_Answers(), EngineSettings(concurrency=4, max_retries=0)) as engine:  # type: ignore[arg-type]
        yield engine


def _job(prompt: str, scored: list[str], repeats: int = 1) -> Job:
    def score(answers: tuple[Completion, ...]) -> ExampleResult:
        scored.append(prompt)
        if prompt == "broken":
            raise ValueError("a scorer bug")
        text = " | ".join(a.text for a in answers)
        return ExampleResult("b", prompt, 0, "", "t", {"n": float(len(answers))}, text, None)

    requests = tuple(Request("b", prompt, prompt, repeat=r) for r in range(repeats))
    return Job("b", prompt, requests, score)


def test_an_example_is_scored_once_its_every_repeat_is_answered(engine: Engine) -> None:
    scored: list[str] = []
    pipeline = ExamplePipeline(engine, threads=2)
    jobs = [_job(f"q{i}", scored, repeats=3) for i in range(5)]
    pipeline.submit(jobs)
    for job in jobs:
        answers = pipeline.answers(job, timeout=10)
        assert [a.text for a in answers] == [f"answer to {job.example_id}"] * 3
        result = pipeline.result(job, timeout=10)
        assert result.scores == {"n": 3.0}
    assert sorted(scored) == sorted(job.example_id for job in jobs)  # scored once each
    pipeline.close()


def test_a_failed_answer_is_raised_and_never_scored(engine: Engine) -> None:
    scored: list[str] = []
    pipeline = ExamplePipeline(engine, threads=2)
    job = _job("fail", scored)
    with pytest.raises(TargetError, match="the server said no"):
        pipeline.answers(job, timeout=10)
    assert scored == []
    pipeline.close()


def test_what_scoring_raised_is_raised_to_the_item(engine: Engine) -> None:
    pipeline = ExamplePipeline(engine, threads=2)
    job = _job("broken", [])
    pipeline.answers(job, timeout=10)
    with pytest.raises(ValueError, match="a scorer bug"):
        pipeline.result(job, timeout=10)
    pipeline.close()


def test_a_waiter_times_out_and_the_job_goes_on() -> None:
    slow = _Answers()

    async def gated(request: Request, client: object) -> Completion:
        import asyncio

        while not slow.gate.is_set():
            await asyncio.sleep(0.01)
        return Completion(text="late")

    slow.complete = gated  # type: ignore[method-assign]
    with Engine(slow, EngineSettings(concurrency=1)) as engine:  # type: ignore[arg-type]
        pipeline = ExamplePipeline(engine, threads=1)
        job = _job("q", [])
        with pytest.raises(TimeoutError):
            pipeline.answers(job, timeout=0.05)
        slow.gate.set()
        assert pipeline.answers(job, timeout=10)[0].text == "late"
        pipeline.close()


def test_closing_the_engine_wakes_a_waiting_item() -> None:
    slow = _Answers()

    async def never(request: Request, client: object) -> Completion:
        import asyncio

        await asyncio.sleep(60)
        raise AssertionError("not reached")

    slow.complete = never  # type: ignore[method-assign]
    engine = Engine(slow, EngineSettings(concurrency=1))  # type: ignore[arg-type]
    pipeline = ExamplePipeline(engine, threads=1)
    jobs = [_job("q1", []), _job("q2", [])]  # one running, one queued
    pipeline.submit(jobs)
    threading.Timer(0.2, engine.close).start()
    for job in jobs:
        with pytest.raises(TargetError, match="closed"):
            pipeline.answers(job, timeout=10)
    pipeline.close()
