"""What a run tells people and machines: results.jsonl rows, a Markdown summary, terminal lines.

The JSONL rows are also a snapshot format of their own: :func:`read_results`
rebuilds the snapshots from them, so ``expertbench compare`` can hold any run's
results against a baseline or against another run.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from pytest_expertbench.baseline import (
    BaselineError,
    FieldReader,
    JsonObject,
    MetricGate,
    Snapshot,
    parse_json,
)
from pytest_expertbench.files import atomic_write_text
from pytest_expertbench.gate import MetricComparison, Verdict, counts
from pytest_expertbench.records import ExampleResult, MetricResult, Threshold

FLIPS_SHOWN = 20


@dataclass(frozen=True)
class BenchmarkResult:
    """Everything the reports say about one benchmark of one run."""

    snapshot: Snapshot
    verdict: Verdict
    examples: tuple[ExampleResult, ...]
    baseline_path: Path | None = None
    baseline_note: str | None = None  # "saved", "not saved: …"


# --------------------------------------------------------------------------- JSONL


def plain(value: Any) -> Any:
    """``value`` as JSON can hold it: mappings, lists, and null where a float is not finite."""
    if value is None or isinstance(value, str | bool | int):  # most values: answer at once
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool | int):
        return int(value)  # numpy integers
    if isinstance(value, numbers.Real) and not isinstance(value, int | float):
        return plain(float(value))
    return value


def plain_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {str(key): plain(value) for key, value in row.items()}


class JsonlWriter:
    """Appends rows to a JSONL file and flushes each, so a crash loses nothing already written.

    The file is opened for appending: whatever is already in it stays.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: TextIO = path.open("a", encoding="utf-8")

    def write(self, row: Mapping[str, Any]) -> None:
        line = json.dumps(plain_row(row), ensure_ascii=False, allow_nan=False)
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def example_row(result: ExampleResult) -> dict[str, Any]:
    """One example's row, as soon as it is scored."""
    row: dict[str, Any] = {
        "type": "example",
        "benchmark": result.benchmark,
        "id": result.id,
        "index": result.index,
        "digest": result.digest,
        "target": result.target,
        "scores": dict(result.scores),
        "response": result.response,
        "error": result.error,
    }
    if result.tool_calls:
        row["tool_calls"] = [{"name": c.name, "arguments": c.arguments} for c in result.tool_calls]
    if result.details:
        row["details"] = dict(result.details)
    if result.repeat_scores:
        row["repeat_scores"] = {name: list(v) for name, v in result.repeat_scores.items()}
    return plain_row(row)


def metric_rows(result: BenchmarkResult, default_threshold: Threshold) -> list[dict[str, Any]]:
    """One row per compared metric, ``missing`` ones included (with a null value).

    ``threshold_source`` says whether the threshold is the metric's own or the
    run's default, so that a later ``expertbench compare --threshold`` can replace
    only the default.
    """
    snapshot = result.snapshot
    return [_metric_row(snapshot, row, default_threshold) for row in result.verdict.metrics]


def _metric_row(
    snapshot: Snapshot, comparison: MetricComparison, default_threshold: Threshold
) -> dict[str, Any]:
    current = comparison.current
    own = snapshot.thresholds.get(comparison.name)
    row: dict[str, Any] = {
        "type": "metric",
        "metric_id": f"{snapshot.benchmark}.{comparison.name}",
        "value": current.value if current else None,
        "ci": _finite_ci(current),
        "samples_used": current.samples_used if current else None,
        "direction": comparison.direction,
        "unit": comparison.unit,
        "baseline": comparison.baseline,
        "delta_rel": comparison.delta_rel,
        "delta_abs": comparison.delta_abs,
        "p_value": comparison.p_value,
        "test": comparison.test.method if comparison.test else None,
        "pairs": comparison.test.pairs if comparison.test else None,
        "detectable_abs": comparison.detectable,
        "detectable_rel": comparison.detectable_rel,
        "threshold": _threshold_json(own or default_threshold),
        "threshold_source": "metric" if own else "default",
        "gate": comparison.mode,
        "alpha": comparison.alpha,
        "gate_source": "metric" if comparison.name in snapshot.gates else "default",
        "band": comparison.band,
        "status": comparison.status,
        "reason": comparison.reason,
        "benchmark": snapshot.benchmark,
        "suite": snapshot.suite,
        "fingerprint": snapshot.dataset.fingerprint,
        "n": snapshot.dataset.n,
    }
    if current and current.meta:
        row["meta"] = dict(current.meta)
    return plain_row(row)


def _finite_ci(metric: MetricResult | None) -> list[float] | None:
    """The CI, or null when it is unknown or either end is not a number."""
    if metric is None or metric.ci is None or not all(map(math.isfinite, metric.ci)):
        return None
    return list(metric.ci)


def _threshold_json(threshold: Threshold) -> float | dict[str, float]:
    """A relative threshold as the plain fraction of the design's row; an absolute one tagged."""
    return threshold.rel if threshold.rel is not None else threshold.to_json()


def run_row(result: BenchmarkResult) -> dict[str, Any]:
    """The benchmark's own row: what ran, on which data, and whether it was compared."""
    snapshot = result.snapshot
    row = {
        "type": "benchmark",
        "benchmark": snapshot.benchmark,
        "suite": snapshot.suite,
        "target": snapshot.target,
        "dataset": {
            "source": snapshot.dataset.source,
            "fingerprint": snapshot.dataset.fingerprint,
            "n": snapshot.dataset.n,
        },
        "examples": len(result.examples),
        "errors": sum(1 for example in result.examples if example.error is not None),
        "comparable": result.verdict.comparable,
        "note": result.verdict.note,
        "regressions": len(result.verdict.regressions),
        "gate_failed": result.verdict.failed,
        "statuses": dict(counts([result.verdict])),
        "captured_at": snapshot.captured_at,
        "git_sha": snapshot.git_sha,
        "plugin_version": snapshot.plugin_version,
        "environment": dict(snapshot.environment),
        "context": dict(snapshot.context),
        "baseline": result.baseline_path,
        "baseline_note": result.baseline_note,
    }
    return plain_row(row)


@dataclass
class _Rows:
    """What the rows of one benchmark said, gathered in any order."""

    header: Snapshot | None = None
    examples: dict[str, dict[str, float]] = field(default_factory=dict)
    metrics: dict[str, MetricResult] = field(default_factory=dict)
    thresholds: dict[str, Threshold] = field(default_factory=dict)
    gates: dict[str, MetricGate] = field(default_factory=dict)

    def snapshot(self) -> Snapshot | None:
        if self.header is None:
            return None
        return replace(
            self.header,
            metrics=self.metrics,
            examples=self.examples,
            thresholds=self.thresholds,
            gates=self.gates,
        )


def read_results(path: Path) -> list[Snapshot]:
    """The snapshots in a results.jsonl, one per benchmark, in the order of the file.

    Rows may come in any order; a benchmark with no ``benchmark`` row (a run cut
    off before it finished) is left out, as is a torn last line. A later row wins
    over an earlier one about the same metric or example.
    """
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise BaselineError(path, "", f"cannot read the file: {exc.strerror or exc}") from None
    benchmarks: dict[str, _Rows] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        torn = number == len(lines)  # the last line had no newline: the writer was cut off
        row = _parse_row(line, path, number, torn)
        if row is not None:
            _read_row(row, FieldReader(path, f"line {number}"), benchmarks)
    snapshots = [s for rows in benchmarks.values() if (s := rows.snapshot()) is not None]
    if not snapshots:
        raise BaselineError(
            path, "", "no benchmark rows: not a finished results.jsonl of pytest-expertbench"
        )
    return snapshots


def _parse_row(line: bytes, path: Path, number: int, torn: bool) -> dict[str, Any] | None:
    try:
        row = parse_json(line, path, f"line {number}")
    except BaselineError:
        if torn:
            return None
        raise
    if not isinstance(row, dict):
        raise BaselineError(path, f"line {number}", "expected a JSON object")
    return row


def _read_row(row: dict[str, Any], reader: FieldReader, benchmarks: dict[str, _Rows]) -> None:
    kind = row.get("type")
    if kind not in ("example", "metric", "benchmark"):
        return  # rows of kinds a later version may add
    fields = reader.read(row)
    benchmark = fields.text("benchmark")
    rows = benchmarks.setdefault(benchmark, _Rows())
    if kind == "example":
        example_id = fields.text("id")
        rows.examples[example_id] = reader.scores(reader.child(fields, "scores"), skip_null=True)
    elif kind == "metric":
        _read_metric(row, reader, benchmark, rows)
    else:
        rows.header = _header(fields, reader)


def _read_metric(row: dict[str, Any], reader: FieldReader, benchmark: str, rows: _Rows) -> None:
    if row.get("status") == "missing":
        return  # the baseline had it, this run did not measure it
    doc = dict(row)
    threshold = doc.pop("threshold", None)
    if isinstance(threshold, int | float) and not isinstance(threshold, bool):
        threshold = {"rel": threshold}
    if row.get("threshold_source") == "metric":
        doc["threshold"] = threshold
    if row.get("gate_source") != "metric":
        doc.pop("gate", None)
        doc.pop("alpha", None)
    fields = reader.read(doc)
    name = fields.text("metric_id").removeprefix(f"{benchmark}.")
    metric, own = reader.metric(benchmark, name, fields, value_may_be_null=True)
    rows.metrics[name] = metric
    if own is not None:
        rows.thresholds[name] = own
    gate = reader.gate(fields)
    if gate.mode is not None or gate.alpha is not None:
        rows.gates[name] = gate


def _header(fields: JsonObject, reader: FieldReader) -> Snapshot:
    """A ``benchmark`` row; what older versions wrote as null or left out reads as empty."""
    return Snapshot(
        benchmark=fields.text("benchmark"),
        suite=fields.text("suite"),
        target=fields.text("target"),
        captured_at=fields.maybe_text("captured_at") or "",
        git_sha=fields.maybe_text("git_sha"),
        plugin_version=fields.maybe_text("plugin_version") or "",
        dataset=reader.dataset(reader.child(fields, "dataset")),
        environment=fields.object("environment") if fields.get("environment", None) else {},
        context=fields.object("context") if fields.get("context", None) else {},
        metrics={},
        examples={},
    )


def write_run(
    directory: Path,
    results: Sequence[BenchmarkResult],
    default_threshold: Threshold,
    summary: str,
) -> None:
    """``results.jsonl`` and ``summary.md``, each written whole or not at all, and the
    summary appended to ``$GITHUB_STEP_SUMMARY`` when a GitHub job set it."""
    directory.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for result in results:
        rows.append(run_row(result))
        rows += [example_row(e) for e in result.examples]
        rows += metric_rows(result, default_threshold)
    atomic_write_text(directory / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_text(directory / "summary.md", summary)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as handle:
            handle.write(summary + "\n")
