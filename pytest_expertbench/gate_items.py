"""Each benchmark's gate as a pytest item of its own: ``…/gsm8k.yaml::gsm8k::gate``.

A regression that only changed the exit status was invisible where people look:
the JUnit XML said ``failures="0"``, pytest's last line was green, ``--lf`` and IDE
runners knew nothing. A gate item fails with the benchmark's verdict table as its
report, so all of them see it.

The gate needs every example's result, so gate items run after every example of the
session (they are moved to the end of the collection) and the first one to run
concludes the session. Under xdist the results live on the controller, not on the
worker that would run the item: workers drop their gate items from the run and tell
the controller which ones were selected, and the controller reports them itself,
with the same hooks a worker's report goes through, before the reports are written.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_expertbench.errors import ExpertBenchError

if TYPE_CHECKING:
    from pytest_expertbench.report import BenchmarkResult

GATES_KEY = "expertbench_gates"  # a worker's selected gate items, in its workeroutput
Conclude = Callable[[pytest.Session], "Sequence[BenchmarkResult]"]
CONCLUDE_KEY = pytest.StashKey[Conclude]()


class GateFailure(ExpertBenchError):
    """A benchmark's gate failed: the message is its verdict table."""


class GateItem(pytest.Item):
    """A benchmark's gate; passes, fails with the verdict, or skips when nothing was compared."""

    benchmark: str

    def runtest(self) -> None:
        conclude = self.config.stash[CONCLUDE_KEY]
        outcome, text = gate_outcome(self.benchmark, conclude(self.session))
        if outcome == "failed":
            raise GateFailure(text)
        if outcome == "skipped":
            pytest.skip(text)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, GateFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"{self.benchmark}::gate"


def make_gate(parent: pytest.File, benchmark: str) -> GateItem:
    item: GateItem = GateItem.from_parent(
        parent, name=f"{benchmark}::gate", nodeid=f"{parent.nodeid}::{benchmark}::gate"
    )
    item.benchmark = benchmark
    return item


def gate_outcome(benchmark: str, outcomes: Sequence[BenchmarkResult]) -> tuple[str, str]:
    """``passed``, ``failed`` or ``skipped``, with the report's text."""
    from pytest_expertbench.summary import benchmark_lines

    result = next((o for o in outcomes if o.snapshot.benchmark == benchmark), None)
    if result is None:
        return "skipped", f"no example of {benchmark} ran: nothing to judge"
    verdict = result.verdict
    text = "\n".join(benchmark_lines(result))
    if verdict.failed:
        return "failed", text
    if verdict.metrics and all(m.status in ("new", "not_compared") for m in verdict.metrics):
        return "skipped", f"{benchmark}: nothing compared ({verdict.note or 'no baseline'})"
    return "passed", text


class GateOrder:
    """Puts the gates last once every other plugin has chosen the items.

    ``--lf`` keeps only the failed gate in a ``pytest_collection_modifyitems`` wrapper of
    its own (tryfirst), which runs outside any plain hook, trylast or not: examples brought
    back there were deselected again. This wrapper is registered after the cache provider's
    (in pytest_configure), so it wraps that one and orders the items last of all.
    """

    def __init__(self, controller: bool) -> None:
        self.controller = controller

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> Generator[None, None, None]:
        result = yield
        brought_back = order_items(items)
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        deselected = getattr(reporter, "stats", {}).get("deselected")
        if brought_back and deselected:  # they run: not "deselected" in pytest's last line
            back = {id(item) for item in brought_back}
            deselected[:] = [item for item in deselected if id(item) not in back]
        if not self.controller:
            drop_from_worker(config, items)
        return result


def order_items(items: list[pytest.Item]) -> list[pytest.Item]:
    """Gates last, each with its benchmark's examples: a gate selected alone (``--lf``
    after a regression, ``-k gate``) brings back the examples it judges, which it returns."""
    gates = [item for item in items if isinstance(item, GateItem)]
    if not gates:
        return []
    chosen = {id(item) for item in items}
    kept: list[pytest.Item] = [item for item in items if not isinstance(item, GateItem)]
    brought_back: list[pytest.Item] = []
    for gate in gates:
        examples = [i for i in _examples_of(gate) if id(i) in chosen]
        if not examples:
            brought_back += [i for i in _examples_of(gate) if id(i) not in chosen]
    items[:] = [*kept, *brought_back, *gates]
    return brought_back


def _examples_of(gate: GateItem) -> list[pytest.Item]:
    collected: list[pytest.Item] = getattr(gate.parent, "example_items", [])
    return collected


def drop_from_worker(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker, take the gate items out of the run and note them for the
    controller (every worker drops the same ones, so their collections still agree)."""
    selected = [
        (item.nodeid, item.benchmark, item.location[0])
        for item in items
        if isinstance(item, GateItem)
    ]
    items[:] = [item for item in items if not isinstance(item, GateItem)]
    config.workeroutput[GATES_KEY] = selected  # type: ignore[attr-defined]


def report_on_controller(
    config: pytest.Config,
    gates: Sequence[tuple[str, str, str]],
    outcomes: Sequence[BenchmarkResult],
) -> None:
    """Report the gates that the workers dropped, through the same hooks as any item."""
    for nodeid, benchmark, path in gates:
        outcome, text = gate_outcome(benchmark, outcomes)
        location = (path, None, f"{benchmark}::gate")
        config.hook.pytest_runtest_logstart(nodeid=nodeid, location=location)
        for when in ("setup", "call", "teardown"):
            phase = outcome if when == "call" else "passed"
            longrepr: Any = None
            if phase == "failed":
                longrepr = text
            elif phase == "skipped":
                longrepr = (path, 0, f"Skipped: {text}")
            report = pytest.TestReport(
                nodeid=nodeid,
                location=location,
                keywords={benchmark: 1, "gate": 1},
                outcome=phase,  # type: ignore[arg-type]
                longrepr=longrepr,
                when=when,
            )
            config.hook.pytest_runtest_logreport(report=report)
        config.hook.pytest_runtest_logfinish(nodeid=nodeid, location=location)
