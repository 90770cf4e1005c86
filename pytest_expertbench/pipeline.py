"""Whole examples in the background: the model's answers, then their scores.

pytest runs items one after another. The engine already asks the model ahead of
them; but an item used to score in its own call, on pytest's thread, so a judge
(or any scorer that asks a model) was asked only when its item ran: one judgement
at a time, 200 ms each, however many the judge could take at once. The pipeline
runs each example whole: as soon as the engine has every answer of an example, a
scoring thread scores it, and a judge it asks is asked then, through the judge's
own engine, bounds, retries and cache. Items become views: setup waits for the
answers (an unreachable model still errors the item in setup) and the call waits
for the scores.

Scoring threads, not coroutines: scorers are plain functions (third-party ones
too), and a scorer that asks a model waits on that model's engine, which runs on a
thread of its own. CPU-heavy work leaves the process altogether (``math_equiv``'s
sympy runs in helper processes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_expertbench.records import Completion, ExampleResult, Request, TargetError

if TYPE_CHECKING:  # the engine (and the HTTP stack) loads with the first benchmark run
    from pytest_expertbench.engine import Engine, Outcome

JobKey = tuple[str, str]  # benchmark, example id
Scoring = Callable[[tuple[Completion, ...]], ExampleResult]


@dataclass(frozen=True)
class Job:
    """One example: its requests (one per repeat) and how to score their answers."""

    benchmark: str
    example_id: str
    requests: tuple[Request, ...]
    score: Scoring = field(compare=False, repr=False)

    @property
    def key(self) -> JobKey:
        return (self.benchmark, self.example_id)


@dataclass
class _Progress:
    """Where one example stands; guarded by the pipeline's lock."""

    job: Job
    answers: dict[int, Outcome] = field(default_factory=dict)  # by repeat
    scored: ExampleResult | BaseException | None = None

    @property
    def answered(self) -> bool:
        return len(self.answers) == len(self.job.requests)

    def failure(self) -> TargetError | None:
        """The first repeat's error, in repeat order: the item errors with it."""
        for repeat in sorted(self.answers):
            outcome = self.answers[repeat]
            if isinstance(outcome, TargetError):
                return outcome
        return None


class ExamplePipeline:
    """Asks, then scores, the examples submitted to it; hands each result out once.

    ``threads`` bounds the examples scored at once. It should be at least the
    concurrency of any judge the benchmarks ask, or the judge waits on scoring
    threads instead of the other way round.
    """

    def __init__(self, engine: Engine, threads: int) -> None:
        self._engine = engine
        self._lock = threading.Condition()
        self._jobs: dict[JobKey, _Progress] = {}
        self._by_request: dict[tuple[str, str, int], _Progress] = {}
        self._scorers = ThreadPoolExecutor(max(1, threads), thread_name_prefix="expertbench-score")
        self._closed = False

    def submit(self, jobs: Iterable[Job]) -> None:
        """Queue these examples, in this order; ones already submitted are skipped."""
        fresh: list[Job] = []
        with self._lock:
            for job in jobs:
                if job.key in self._jobs or self._closed:
                    continue
                progress = self._jobs[job.key] = _Progress(job)
                for request in job.requests:
                    self._by_request[request.key] = progress
                fresh.append(job)
        if fresh:
            self._engine.submit((r for job in fresh for r in job.requests), self._heard)

    def answers(self, job: Job, timeout: float | None = None) -> tuple[Completion, ...]:
        """The model's answers to ``job``, one per repeat, waiting for them (and asking
        them next, ahead of the queue); raises the first repeat's TargetError, and
        TimeoutError after ``timeout`` seconds (the job goes on)."""
        self.submit([job])
        with self._lock:
            progress = self._jobs[job.key]
            waiting = [r for r in job.requests if r.repeat not in progress.answers]
        for request in waiting:
            self._engine.hurry(request)
        with self._lock:
            _wait(self._lock, lambda: progress.answered or self._closed, timeout)
            if not progress.answered:
                raise TargetError("the run was closed before the answer came")
            error = progress.failure()
            if error is not None:
                self._forget(progress)
                raise error
            return tuple(progress.answers[r.repeat] for r in job.requests)  # type: ignore[misc]

    def result(self, job: Job, timeout: float | None = None) -> ExampleResult:
        """The scored example, waiting for it, once its :meth:`answers` came; raises what
        scoring raised (a ScoreError: the item fails with it), and TimeoutError after
        ``timeout`` seconds."""
        with self._lock:
            progress = self._jobs[job.key]
            _wait(self._lock, lambda: progress.scored is not None or self._closed, timeout)
            scored = progress.scored
            if scored is None:
                raise TargetError("the run was closed before the example was scored")
            self._forget(progress)
        if isinstance(scored, BaseException):
            raise scored
        return scored

    def close(self) -> None:
        """Wake every waiter and drop what is queued; scoring under way finishes alone."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._scorers.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ engine's thread

    def _heard(self, request: Request, outcome: Outcome) -> None:
        with self._lock:
            progress = self._by_request.pop(request.key, None)
            if progress is None:
                return
            progress.answers[request.repeat] = outcome
            if not progress.answered:
                return
            self._lock.notify_all()
            ready = progress.failure() is None and not self._closed
        if ready:
            self._scorers.submit(self._score, progress)

    # ------------------------------------------------------------------ scoring threads

    def _score(self, progress: _Progress) -> None:
        answers = tuple(progress.answers[r.repeat] for r in progress.job.requests)
        scored: ExampleResult | BaseException
        try:
            scored = progress.job.score(answers)  # type: ignore[arg-type]  # all Completions
        except BaseException as exc:  # handed to the item, which reports it
            scored = exc
        with self._lock:
            progress.scored = scored
            self._lock.notify_all()

    def _forget(self, progress: _Progress) -> None:
        """Drop a job whose outcome was handed out: an item asks for it once."""
        self._jobs.pop(progress.job.key, None)


def _wait(lock: threading.Condition, done: Callable[[], bool], timeout: float | None) -> None:
    """Wait on ``lock`` (held) until ``done()``; TimeoutError after ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while not done():
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise TimeoutError("no answer yet")
        lock.wait(left)
