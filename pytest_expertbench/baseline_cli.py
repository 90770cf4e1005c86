"""``expertbench baseline merge OUT RUN1 RUN2 …``: one baseline from several runs.

A sampled model (temperature > 0) answers differently on every run, so one lucky
run makes a poor reference. The merged baseline averages each example's scores over
the runs that scored it and recomputes every metric from those averages with the
metric's own aggregation (:func:`metrics.aggregate`), so it is a baseline file like
any other, whose per-example scores the gate's paired tests read the same way.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from pytest_expertbench.baseline import Snapshot, restore, save
from pytest_expertbench.config import MetricSpec
from pytest_expertbench.errors import ExpertBenchError
from pytest_expertbench.metrics import aggregate
from pytest_expertbench.records import MetricResult, repeat_aggregation

EXIT_OK, EXIT_BAD_INPUT = 0, 2


class MergeError(ExpertBenchError):
    """Runs that cannot be merged; the message says which and why."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    baseline = commands.add_parser(
        "baseline", help="build a baseline from several runs, or undo a save"
    )
    actions = baseline.add_subparsers(dest="baseline_command", required=True, metavar="ACTION")
    merge = actions.add_parser(
        "merge",
        help="average each example's scores over RUNs and recompute the metrics into OUT",
        description="Each RUN is a baseline JSON file or a results.jsonl of the same "
        "benchmark over the same examples (dataset fingerprint).",
    )
    merge.add_argument("out", type=Path, metavar="OUT", help="the baseline JSON file to write")
    merge.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="two or more runs")
    merge.add_argument(
        "--benchmark", metavar="NAME", help="the benchmark to take from results.jsonl files"
    )
    merge.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seed of the intervals' bootstraps"
    )
    undo = actions.add_parser(
        "restore",
        help="put back the baseline that the last save of FILE replaced (again: undo)",
        description="A save keeps the baseline it replaces in .prev/ beside it.",
    )
    undo.add_argument("file", type=Path, metavar="FILE", help="the baseline JSON file")


def run(args: argparse.Namespace) -> int:
    """0 written; 2 when the runs cannot be read or merged, or nothing can be restored."""
    from pytest_expertbench.cli import read_snapshots

    if args.baseline_command == "restore":
        source = restore(args.file)  # a BaselineError is the CLI's exit 2
        print(f"restored {args.file} from {source} (restore again to undo)")
        return EXIT_OK
    try:
        snapshots = [_pick(path, read_snapshots(path), args.benchmark) for path in args.runs]
        merged = merge(snapshots, [str(p) for p in args.runs], seed=args.seed)
    except MergeError as exc:
        print(f"expertbench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    save(args.out, merged)
    print(
        f"merged {len(snapshots)} runs of {merged.benchmark} ({len(merged.examples)} examples, "
        f"{len(merged.metrics)} metrics) into {args.out}"
    )
    return EXIT_OK


def _pick(path: Path, snapshots: Sequence[Snapshot], benchmark: str | None) -> Snapshot:
    if benchmark is not None:
        found = [s for s in snapshots if s.benchmark == benchmark]
        if not found:
            names = ", ".join(s.benchmark for s in snapshots)
            raise MergeError(f"{path}: no benchmark {benchmark!r} (it holds {names})")
        return found[0]
    if len(snapshots) > 1:
        names = ", ".join(s.benchmark for s in snapshots)
        raise MergeError(f"{path} holds several benchmarks ({names}): choose one with --benchmark")
    return snapshots[0]


def merge(snapshots: Sequence[Snapshot], names: Sequence[str], *, seed: int = 0) -> Snapshot:
    """The runs' snapshots as one: each example's scores averaged over the runs that
    scored it, each metric recomputed from the averages. Raises MergeError for fewer
    than two runs, runs of other benchmarks or other examples, and a metric that does
    not say how it was aggregated."""
    if len(snapshots) < 2:
        raise MergeError("merge needs two runs or more")
    first = snapshots[0]
    for snapshot, name in zip(snapshots[1:], names[1:], strict=True):
        if snapshot.benchmark != first.benchmark:
            raise MergeError(
                f"{name} is a run of {snapshot.benchmark!r}, {names[0]} of {first.benchmark!r}: "
                "merge runs of one benchmark"
            )
        if snapshot.dataset.fingerprint != first.dataset.fingerprint:
            raise MergeError(
                f"{name} ran other examples than {names[0]} (dataset fingerprint "
                f"{snapshot.dataset.fingerprint[:12]} ≠ {first.dataset.fingerprint[:12]}, "
                f"n = {snapshot.dataset.n} and {first.dataset.n}): merge runs of the same examples"
            )
    examples = _mean_scores(snapshots)
    metrics = {
        name: _recomputed(first, metric, examples, len(snapshots), seed)
        for name, metric in first.metrics.items()
    }
    return replace(
        first,
        captured_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        metrics=metrics,
        examples=examples,
    )


def _mean_scores(snapshots: Sequence[Snapshot]) -> dict[str, dict[str, float]]:
    gathered: dict[str, dict[str, list[float]]] = {}
    for snapshot in snapshots:
        for example_id, scores in snapshot.examples.items():
            into = gathered.setdefault(example_id, {})
            for score, value in scores.items():
                into.setdefault(score, []).append(value)
    return {
        example_id: {score: math.fsum(v) / len(v) for score, v in scores.items()}
        for example_id, scores in gathered.items()
    }


def _recomputed(
    first: Snapshot,
    metric: MetricResult,
    examples: dict[str, dict[str, float]],
    runs: int,
    seed: int,
) -> MetricResult:
    of, agg = metric.meta.get("of"), metric.meta.get("agg")
    if not isinstance(of, str) or not isinstance(agg, str):
        raise MergeError(
            f"{metric.metric_id}: the baseline does not say which score and aggregation made "
            "it (meta.of, meta.agg), so it cannot be recomputed"
        )
    # A repeat aggregation's per-example values are stored as "<score>:<agg>" (MetricSpec.key).
    suffix = f":{agg}"
    score = of[: -len(suffix)] if repeat_aggregation(agg) and of.endswith(suffix) else of
    spec = MetricSpec(
        name=metric.name, of=score, agg=agg, direction=metric.direction,
        unit=metric.unit,
    )  # fmt: skip
    values = [scores[of] for scores in examples.values() if of in scores]
    try:
        merged = aggregate(spec, first.benchmark, values, seed=seed)
    except ValueError as exc:
        raise MergeError(str(exc)) from None
    if merged is None:
        raise MergeError(f"{metric.metric_id}: no example of any run has the score {of!r}")
    return replace(merged, meta={**metric.meta, **merged.meta, "runs": runs})
