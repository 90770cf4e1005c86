"""Per-process run state, kept in ``config.stash`` under typed keys.

:class:`ProcessRun` is what every process (controller or xdist worker) needs to run
items; :class:`Collected` is the controller's alone: the results as they arrive, and
what the end of the session made of them. Results cross xdist as plain dicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_expertbench.records import ExampleResult, ToolCall
from pytest_expertbench.replicas import ReplicaSet
from pytest_expertbench.request_stats import JUDGE_TOKENS

if TYPE_CHECKING:
    from pytest_expertbench import report
    from pytest_expertbench.cache import ResponseCache
    from pytest_expertbench.engine import Engine
    from pytest_expertbench.judging import TargetPool
    from pytest_expertbench.pipeline import ExamplePipeline
    from pytest_expertbench.request_stats import BenchmarkStats
    from pytest_expertbench.run import Plan
    from pytest_expertbench.servers import ManagedServer


@dataclass
class ProcessRun:
    """What one process (controller or xdist worker) needs to run items."""

    plan: Plan
    pool: TargetPool  # every target's engine: the model under test's and the judges'
    cache: ResponseCache | None = None  # opened when the first engine is built
    ports: dict[str, int] = field(default_factory=dict)  # picked for targets that say {port}
    servers: list[ManagedServer] = field(default_factory=list)  # started on the controller
    dist: str = "no"  # the session's --dist mode (a worker's own option says "no")
    prefetched: set[int] = field(default_factory=set)  # id() of items and files queued
    progress_to: Any = None  # the terminal reporter, when waiting items print progress
    _pipeline: ExamplePipeline | None = None

    @property
    def engine(self) -> Engine:
        return self.pool.engine(self.plan.target.name)

    @property
    def pipeline(self) -> ExamplePipeline:
        """Asks and scores whole examples ahead of the items (built on first use)."""
        from pytest_expertbench.pipeline import ExamplePipeline

        if self._pipeline is None:
            self._pipeline = ExamplePipeline(self.engine, self.pool.scoring_threads())
        return self._pipeline

    def request_stats(self) -> dict[str, dict[str, float]]:
        """Each benchmark's request counts (the numbers of its engine stats)."""
        stats = {
            name: {k: float(v) for k, v in asdict(s).items() if k != "stopped"}
            for name, s in self._engine_stats().items()
        }
        engine = self.pool.built(self.plan.target.name)
        for name, cached in (engine.cache_stats() if engine is not None else {}).items():
            stats.get(name, {}).update(cached.counts())  # cached_from:<run id>, … (engine.py)
        replicas = getattr(engine.target, "replicas", None) if engine is not None else None
        if isinstance(replicas, ReplicaSet) and len(replicas.urls) > 1:
            for name, counts in replicas.counts().items():
                stats.get(name, {}).update(counts)  # replica:<url>, … (replicas.py)
        for name, judges in self.pool.usage().items():
            for judge, (prompt, completion, answers) in judges.items():
                stats.get(name, {}).update(
                    {
                        f"{JUDGE_TOKENS[0]}{judge}": float(prompt),
                        f"{JUDGE_TOKENS[1]}{judge}": float(completion),
                        f"{JUDGE_TOKENS[2]}{judge}": float(answers),
                    }
                )
        return stats

    def stopped_reasons(self) -> dict[str, str]:
        """Why the engine stopped asking, for each benchmark it refused requests of."""
        return {name: s.stopped for name, s in self._engine_stats().items() if s.stopped}

    def _engine_stats(self) -> Mapping[str, BenchmarkStats]:
        engine = self.pool.built(self.plan.target.name)
        return engine.stats() if engine is not None else {}

    def open_cache(self) -> ResponseCache | None:
        from pytest_expertbench.cache import ResponseCache

        settings = self.plan.settings
        if self.cache is None and settings.cache != "off":
            self.cache = ResponseCache(
                settings.cache_dir, mode=settings.cache, run_id=settings.run_id
            )
        return self.cache

    def flush_cache(self) -> str | None:
        """Wait until every answer given to the cache is stored (an xdist worker does, so
        that its answers are in before the controller finishes the run); the error of a
        failed write, for the controller to report."""
        from pytest_expertbench.cache import CacheError

        try:
            if self.cache is not None:
                self.cache.flush()
        except CacheError as exc:
            return str(exc)
        return None

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()
        self.pool.close()
        if self.cache is not None:
            self.cache.close()
            self.cache = None
        while self.servers:
            self.servers.pop().stop()


@dataclass
class Collected:
    """The controller's results, streamed to a partial file as they arrive."""

    partial: Path
    results: dict[str, ExampleResult] = field(default_factory=dict)
    writer: report.JsonlWriter | None = None
    outcomes: list[report.BenchmarkResult] | None = None
    problems: list[str] = field(default_factory=list)
    requests: dict[str, dict[str, float]] = field(default_factory=dict)  # per benchmark
    gates: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # dropped by workers
    stopped: dict[str, str] = field(default_factory=dict)  # why a benchmark's engine stopped

    def add_request_stats(self, stats: dict[str, dict[str, float]]) -> None:
        """Add one process's request counts (xdist workers each send theirs)."""
        for benchmark, counts in stats.items():
            total = self.requests.setdefault(benchmark, dict.fromkeys(counts, 0.0))
            for name, value in counts.items():
                total[name] = (
                    max(total.get(name, 0.0), value)
                    if name == "elapsed_s"
                    else total.get(name, 0.0) + value
                )

    def add_stopped(self, reasons: Mapping[str, str]) -> None:
        """Keep the first reason each benchmark's requests stopped (a worker's or ours)."""
        for benchmark, reason in reasons.items():
            self.stopped.setdefault(benchmark, reason)


DIST_KEY = "expertbench_dist"  # the controller's --dist mode, in each worker's workerinput
PORT_KEY = "expertbench_ports"  # the managed servers' ports by target, likewise
RUN_ID_KEY = "expertbench_run_id"  # the run's id (its cache answers' owner), likewise
STATS_KEY = "expertbench_requests"  # a worker's request counts, in its workeroutput


STOPPED_KEY = "expertbench_stopped"  # why a worker's engine stopped asking, per benchmark
CACHE_FAILED_KEY = "expertbench_cache_failed"  # a worker's failed cache write, if any


RUN_KEY = pytest.StashKey[ProcessRun]()


COLLECTED_KEY = pytest.StashKey[Collected]()


RECORD_KEY = pytest.StashKey[dict[str, Any]]()


def is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")


def result_to_json(result: ExampleResult) -> dict[str, Any]:
    """Plain dicts, lists and scalars, which execnet carries (``asdict``'s deep copy costs
    more than the rest of an item's own work)."""
    doc = dict(vars(result))
    doc["scores"] = dict(result.scores)
    doc["details"] = dict(result.details)
    doc["tool_calls"] = [{"name": c.name, "arguments": c.arguments} for c in result.tool_calls]
    doc["repeat_scores"] = {name: list(values) for name, values in result.repeat_scores.items()}
    doc["repeat_answers"] = [dict(answer) for answer in result.repeat_answers]
    return doc


def result_from_json(doc: dict[str, Any]) -> ExampleResult:
    calls = tuple(ToolCall(**c) for c in doc.get("tool_calls", ()))
    answers = tuple(doc.get("repeat_answers", ()))
    return ExampleResult(**{**doc, "tool_calls": calls, "repeat_answers": answers})
