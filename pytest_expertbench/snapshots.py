"""A benchmark's run → the :class:`~pytest_expertbench.baseline.Snapshot` it is kept as.

The snapshot is what the gate compares and what a saved baseline holds, so it is made
in one place: the metrics aggregated from the examples that scored, each example's
scores, and where and from what the run came (environment, git commit, run context).
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_expertbench import __version__
from pytest_expertbench.baseline import DatasetInfo, MetricGate, Snapshot
from pytest_expertbench.comparability import run_context
from pytest_expertbench.config import TargetSpec
from pytest_expertbench.datasets import fingerprint
from pytest_expertbench.metrics import aggregate
from pytest_expertbench.records import ExampleResult, MetricResult
from pytest_expertbench.streaming import STREAM_SCORES

if TYPE_CHECKING:
    from pytest_expertbench.run import Plan, PlannedBenchmark

# Only where the server reports usage (cost_usd: and the target has a price), and the
# streamed timing only where the target streams.
OPTIONAL_SCORES = frozenset(
    {"tokens_per_s", "prompt_tokens", "completion_tokens", "cost_usd", *STREAM_SCORES}
)


def make_snapshot(
    plan: Plan,
    planned: PlannedBenchmark,
    ran: Sequence[ExampleResult],
    environment: Mapping[str, Any],
    git_sha: str | None,
) -> Snapshot:
    """What one benchmark's run measured, in the form a baseline is kept: its metrics,
    every scored example's scores (the gate pairs them), its thresholds and gates, and
    the context (target, concurrency) that says which runs it may be compared with."""
    bench = planned.benchmark
    scored = [r for r in ran if r.error is None]
    metrics: dict[str, MetricResult] = {}
    for spec in bench.metrics:
        values = [r.scores[spec.key] for r in scored if spec.key in r.scores]
        metric = aggregate(spec, bench.name, values, seed=plan.settings.seed)
        if metric is None and spec.of not in OPTIONAL_SCORES:
            # Nothing scored (every example errored): not a metric to drop in silence,
            # but one the gate calls incomplete.
            metric = MetricResult(
                f"{bench.name}.{spec.name}", math.nan, None, 0, spec.direction, spec.unit,
                {"agg": spec.agg, "of": spec.key},
            )  # fmt: skip
        if metric is not None:
            metrics[spec.name] = replace(
                metric, meta={**metric.meta, "errors": len(ran) - len(scored)}
            )
    examples_fp = fingerprint((r.id, r.digest) for r in ran)
    return Snapshot(
        benchmark=bench.name,
        suite=planned.suite,
        target=plan.target.name,
        captured_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        git_sha=git_sha,
        plugin_version=__version__,
        dataset=DatasetInfo(source=planned.examples.source, fingerprint=examples_fp, n=len(ran)),
        environment=environment,
        metrics=metrics,
        examples={r.id: dict(r.scores) for r in scored},
        thresholds={m.name: m.threshold for m in bench.metrics if m.threshold is not None},
        gates={
            m.name: MetricGate(m.gate, m.alpha, m.across_setups)
            for m in bench.metrics
            if m.gate is not None or m.alpha is not None or m.across_setups
        },
        context=run_context(
            bench, plan.target, "auto" if plan.settings.adaptive else plan.settings.concurrency
        ),
    )


def environment_info(target: TargetSpec) -> dict[str, Any]:
    """Where the run ran, kept with the snapshot to explain a difference, never to gate."""
    return {
        "python": platform.python_version(),
        "platform": f"{sys.platform}-{platform.machine()}",
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES") or None,
        "target_kind": target.kind,
    }


def current_git_sha(where: Path) -> str | None:
    """The benchmarks' commit, or None outside a git checkout (or without git)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where if where.is_dir() else None,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = done.stdout.strip()
    return sha if done.returncode == 0 and sha else None
