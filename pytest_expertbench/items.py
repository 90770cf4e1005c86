"""The benchmark's pytest nodes: a file per benchmark, an item per example.

An item asks the model in setup (an unreachable model errors the item) and scores in
call. Before it waits, it hands the engine the requests this process will need next
(the prefetch policy), so that many requests are in flight while items run one by one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

from pytest_expertbench.errors import ExpertBenchError
from pytest_expertbench.pipeline import Job
from pytest_expertbench.records import Completion, Example, ExampleResult, Request, TargetError
from pytest_expertbench.state import (
    RECORD_KEY,
    RUN_KEY,
    ProcessRun,
    result_to_json,
)

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr, TracebackStyle

    from pytest_expertbench.run import PlannedBenchmark

FAST_DIST_MODES = ("no", "loadfile", "loadscope")
CHUNKED_DIST_MODES = ("load", "worksteal")  # the plugin's scheduler (chunks.py)
T = TypeVar("T")


class BenchmarkFile(pytest.File):
    """One benchmark YAML file: collects one item per selected example."""

    planned: PlannedBenchmark

    def collect(self) -> Iterator[pytest.Item]:
        from pytest_expertbench.gate_items import make_gate

        bench = self.planned.benchmark
        self.example_items: list[BenchmarkItem] = []
        for example in self.planned.examples.examples:
            name = f"{bench.name}[{_safe_id(example.id)}]"
            # A string node id is parsed the way --lf and -k parse one (name + params).
            item: BenchmarkItem = BenchmarkItem.from_parent(
                self, name=name, nodeid=f"{self.nodeid}::{name}"
            )
            item.example = example
            for marker in bench.markers:
                item.add_marker(marker)
            self.example_items.append(item)
            yield item
        gate = make_gate(self, bench.name)
        for marker in bench.markers:
            gate.add_marker(marker)
        yield gate


def _safe_id(example_id: str) -> str:
    text = example_id.replace("::", ":").replace("\n", " ")
    return "".join(c if c.isprintable() else "?" for c in text)


class ExampleError(ExpertBenchError):
    """An item that could not be asked or scored: reported as one line, no traceback."""


class BenchmarkItem(pytest.Item):
    """One example: asked in setup (so an unreachable model errors the item), scored in call."""

    parent: BenchmarkFile
    example: Example

    @property
    def planned(self) -> PlannedBenchmark:
        return self.parent.planned

    @property
    def problem(self) -> str | None:
        """Why this example cannot be asked (its row lacks a field a template needs, or
        holds null there), or None."""
        return self.planned.examples.problems.get(self.example.id)

    @functools.cached_property
    def requests(self) -> tuple[Request, ...]:
        """The requests for this example, one per repeat, rendered once (at prefetch,
        reused in setup)."""
        from pytest_expertbench.run import make_requests

        return make_requests(self.planned.benchmark, self.example)

    @property
    def request(self) -> Request:
        """The (first repeat's) request for this example."""
        return self.requests[0]

    @functools.cached_property
    def job(self) -> Job:
        """The example as the pipeline runs it: its requests, then their scores."""
        return Job(
            self.planned.benchmark.name,
            self.example.id,
            self.requests,
            functools.partial(_score, self.config.stash[RUN_KEY], self.planned, self.example),
        )

    def setup(self) -> None:
        from pytest_expertbench.run import failed_example

        run = self.config.stash[RUN_KEY]
        _prefetch(self, run)
        if self.problem is not None:  # bad data: an error, never a guess sent to the model
            self._record(
                failed_example(
                    self.planned.benchmark, self.example, run.plan.target.name, self.problem
                )
            )
            raise ExampleError(self.problem)
        try:
            # Every repeat is asked, and the item errors when any of them cannot be had:
            # a mean over the answers that came would not be the example's score.
            _waiting(self, run, lambda timeout: run.pipeline.answers(self.job, timeout))
        except TargetError as exc:
            self._record(
                failed_example(
                    self.planned.benchmark, self.example, run.plan.target.name, exc.message
                )
            )
            raise ExampleError(f"model request failed: {exc.message}") from None

    def runtest(self) -> None:
        from pytest_expertbench.run import ScoreError, failed_example, item_verdict

        run = self.config.stash[RUN_KEY]
        bench = self.planned.benchmark
        try:
            result = _waiting(self, run, lambda timeout: run.pipeline.result(self.job, timeout))
        except ScoreError as exc:
            self._record(failed_example(bench, self.example, run.plan.target.name, str(exc)))
            raise ExampleError(str(exc)) from None
        self._record(result)
        why = item_verdict(bench, result)
        if why is not None:
            raise ExampleError(f"item_pass: {why}")

    def _record(self, result: ExampleResult) -> None:
        self.stash[RECORD_KEY] = result_to_json(result)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.name

    # pytest formats a traceback for every failure (call: repr_failure; setup and teardown:
    # _repr_failure_py): ~80 ms of CPU for each errored item, 150 times the cost of a passing
    # one, which a run against a dead server pays on every item. An ExampleError is reported
    # as its one line, built without a traceback; pytest keeps a str longrepr as it is.
    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: TracebackStyle | None = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, ExampleError):
            return self._one_line(excinfo.value)
        return super().repr_failure(excinfo, style)

    def _repr_failure_py(  # type: ignore[override]  # a str longrepr, as repr_failure's
        self, excinfo: pytest.ExceptionInfo[BaseException], style: TracebackStyle | None = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, ExampleError):
            return self._one_line(excinfo.value)
        return super()._repr_failure_py(excinfo, style)

    def _one_line(self, error: ExampleError) -> str:
        return f"{self.nodeid}: {error}"


def _score(
    run: ProcessRun, planned: PlannedBenchmark, example: Example, answers: tuple[Completion, ...]
) -> ExampleResult:
    """Score one example's answers (on a scoring thread of the pipeline)."""
    from pytest_expertbench.run import score_example

    bench, target = planned.benchmark, run.plan.target
    with run.pool.scoring(bench.name):  # a judge's tokens, counted for the benchmark
        return score_example(bench, example, answers, target.name, target.price)


def _waiting(item: BenchmarkItem, run: ProcessRun, wait: Callable[[float | None], T]) -> T:
    """What ``wait`` waits for; while it keeps the item waiting, a progress line now and
    then.

    Only a run without xdist workers shows them (workers cannot write to the
    terminal), and not under ``-q``.
    """
    every, reporter = run.plan.settings.progress_s, run.progress_to
    if reporter is None:
        return wait(None)
    waited = 0.0
    while True:
        try:
            return wait(every)
        except TimeoutError:
            waited += every
        from pytest_expertbench.summary import waiting_line

        name = item.planned.benchmark.name
        counts = run.request_stats().get(name, {})
        reporter.write_line(waiting_line(name, counts, item.example.id, waited))


def _prefetch(item: BenchmarkItem, run: ProcessRun) -> None:
    """Hand the pipeline the examples this process will run next, ahead of the item loop.

    Under no xdist, --dist loadfile and loadscope a benchmark file runs whole in one
    process, so its first item queues them all. Under --dist load and worksteal the
    plugin's scheduler hands each worker whole chunks of a file's examples
    (chunks.py), so an item queues its chunk. Under other modes an item asks only for
    itself, which keeps every example asked once.
    """
    if id(item) in run.prefetched:
        return
    if run.dist in FAST_DIST_MODES:
        upcoming: list[pytest.Item] = [i for i in item.session.items if i.parent is item.parent]
    elif run.dist in CHUNKED_DIST_MODES:
        upcoming = list(_chunk(item, run))
    else:
        upcoming = [item]
    fresh = [i for i in upcoming if isinstance(i, BenchmarkItem) and id(i) not in run.prefetched]
    run.prefetched.update(id(i) for i in fresh)
    if fresh:
        run.pipeline.submit([i.job for i in fresh if i.problem is None])


def _chunk(item: BenchmarkItem, run: ProcessRun) -> list[BenchmarkItem]:
    """The examples of ``item``'s chunk: the scheduler sends them all to this worker."""
    from pytest_expertbench.chunks import chunk_size

    siblings = [i for i in item.session.items if i.parent is item.parent]
    examples = [i for i in siblings if isinstance(i, BenchmarkItem)]
    size = chunk_size(run.plan.settings.concurrency)
    start = examples.index(item) // size * size
    return examples[start : start + size]
