"""Baseline snapshots: the JSON schema, atomic load/save, and the gate's comparison.

A snapshot is what one run of one benchmark measured, kept with enough context
(dataset fingerprint, per-example scores) that a later run can tell a real
regression from a changed dataset, and can name the examples that flipped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pytest_expertbench.files import atomic_write_text
from pytest_expertbench.records import Direction, MetricResult, Threshold

SCHEMA = 1

MetricStatus = Literal["regression", "improvement", "ok", "new", "missing"]


class BaselineError(Exception):
    """A snapshot that cannot be read or written; the message says which file and field."""

    def __init__(self, path: Path | str, field: str, message: str) -> None:
        self.path = Path(path)
        self.field = field
        self.message = message
        where = f"{self.path}: {field}: " if field else f"{self.path}: "
        super().__init__(where + message)


@dataclass(frozen=True)
class DatasetInfo:
    """Which rows were measured: two runs are comparable only when the fingerprints match."""

    source: str
    fingerprint: str
    n: int

    def short(self) -> str:
        """The fingerprint's first 8 hex digits, for one-line messages."""
        return self.fingerprint.split(":", 1)[-1][:8]


@dataclass(frozen=True)
class MetricComparison:
    """One metric held against its baseline; ``current`` is None for a ``missing`` metric."""

    name: str
    direction: Direction
    unit: str
    current: MetricResult | None
    baseline: float | None
    delta_rel: float | None
    delta_abs: float | None
    threshold: Threshold
    status: MetricStatus
    # Two-sided exact sign test over the examples whose score moved (paired by id);
    # None where there is nothing to pair (no baseline scores, not a mean or rate).
    p_value: float | None = None


@dataclass(frozen=True)
class Flip:
    """An example whose score went down since the baseline (right → wrong, fast → slow)."""

    example_id: str
    score: str
    old: float
    new: float


@dataclass(frozen=True)
class Verdict:
    """The gate's answer for one benchmark."""

    benchmark: str
    comparable: bool
    note: str | None
    metrics: tuple[MetricComparison, ...]
    flipped: tuple[Flip, ...]

    @property
    def regressions(self) -> tuple[MetricComparison, ...]:
        return tuple(m for m in self.metrics if m.status == "regression")

    @property
    def improvements(self) -> tuple[MetricComparison, ...]:
        return tuple(m for m in self.metrics if m.status == "improvement")

    @property
    def failed(self) -> bool:
        return bool(self.regressions)


@dataclass(frozen=True)
class Snapshot:
    """One benchmark's measured state; ``metrics`` and ``thresholds`` are keyed by metric name."""

    benchmark: str
    suite: str
    target: str
    captured_at: str
    git_sha: str | None
    plugin_version: str
    dataset: DatasetInfo
    environment: Mapping[str, Any]
    metrics: Mapping[str, MetricResult]
    examples: Mapping[str, Mapping[str, float]]
    thresholds: Mapping[str, Threshold] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The file's document. Non-finite CIs and example scores are left out, not faked."""
        return {
            "schema": SCHEMA,
            "benchmark": self.benchmark,
            "suite": self.suite,
            "target": self.target,
            "captured_at": self.captured_at,
            "git_sha": self.git_sha,
            "plugin_version": self.plugin_version,
            "dataset": {
                "source": self.dataset.source,
                "fingerprint": self.dataset.fingerprint,
                "n": self.dataset.n,
            },
            "environment": dict(self.environment),
            "metrics": {name: self._metric_json(name, m) for name, m in self.metrics.items()},
            "examples": {
                example_id: {k: v for k, v in scores.items() if math.isfinite(v)}
                for example_id, scores in self.examples.items()
            },
        }

    def _metric_json(self, name: str, metric: MetricResult) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "value": metric.value,
            "direction": metric.direction,
            "unit": metric.unit,
            "ci": list(metric.ci) if metric.ci and all(map(math.isfinite, metric.ci)) else None,
            "samples_used": metric.samples_used,
        }
        if name in self.thresholds:
            doc["threshold"] = self.thresholds[name].to_json()
        if metric.meta:
            doc["meta"] = dict(metric.meta)
        return doc

    @classmethod
    def from_json(cls, doc: Any, path: Path) -> Snapshot:
        """Validate a parsed document; every problem is a :class:`BaselineError`."""
        return FieldReader(path).snapshot(doc)

    def compare(self, current: Snapshot, default_threshold: Threshold) -> Verdict:
        """Hold ``current`` against this snapshot (the baseline)."""
        return compare(self, current, default_threshold)


# --------------------------------------------------------------------------- reading


class FieldReader:
    """Checks parsed JSON field by field, so an error names the exact field.

    Baseline files and results.jsonl rows share it; ``where`` ("line 12") is put
    before every field name of a row's errors.
    """

    def __init__(self, path: Path, where: str = "") -> None:
        self.path = path
        self.where = where

    def fail(self, key: str, message: str) -> BaselineError:
        field = f"{self.where}: {key}" if self.where and key else self.where or key
        return BaselineError(self.path, field, message)

    def snapshot(self, doc: Any) -> Snapshot:
        doc = self.mapping(doc, "")
        schema = self.required(doc, "schema", "")
        if not isinstance(schema, int) or isinstance(schema, bool):
            raise self.fail("schema", f"expected the integer {SCHEMA}, got {schema!r}")
        if schema != SCHEMA:
            hint = ": written by a newer pytest-expertbench?" if schema > SCHEMA else ""
            raise self.fail("schema", f"unknown schema version {schema}{hint}")
        benchmark = self.text(doc, "benchmark", "")
        metrics_doc = self.mapping(self.required(doc, "metrics", ""), "metrics")
        metrics: dict[str, MetricResult] = {}
        thresholds: dict[str, Threshold] = {}
        for name, metric_doc in metrics_doc.items():
            metrics[name], threshold = self.metric(benchmark, name, metric_doc, f"metrics.{name}")
            if threshold is not None:
                thresholds[name] = threshold
        return Snapshot(
            benchmark=benchmark,
            suite=self.text(doc, "suite", ""),
            target=self.text(doc, "target", ""),
            captured_at=self.text(doc, "captured_at", ""),
            git_sha=self.optional_text(doc, "git_sha", ""),
            plugin_version=self.text(doc, "plugin_version", ""),
            dataset=self.dataset(self.required(doc, "dataset", "")),
            environment=self.mapping(self.required(doc, "environment", ""), "environment"),
            metrics=metrics,
            examples=self.examples(self.required(doc, "examples", "")),
            thresholds=thresholds,
        )

    def dataset(self, raw: Any) -> DatasetInfo:
        doc = self.mapping(raw, "dataset")
        return DatasetInfo(
            source=self.text(doc, "source", "dataset."),
            fingerprint=self.text(doc, "fingerprint", "dataset."),
            n=self.count(doc, "n", "dataset."),
        )

    def metric(
        self, benchmark: str, name: str, raw: Any, key: str, *, value_may_be_null: bool = False
    ) -> tuple[MetricResult, Threshold | None]:
        """A metric and its own threshold; a null value reads as NaN only when allowed."""
        doc = self.mapping(raw, key)
        prefix = f"{key}." if key else ""
        raw_value = self.required(doc, "value", prefix)
        null_ok = raw_value is None and value_may_be_null
        value = math.nan if null_ok else self.number(raw_value, prefix + "value")
        direction = self.text(doc, "direction", prefix)
        if direction not in ("higher", "lower"):
            raise self.fail(
                prefix + "direction", f"expected 'higher' or 'lower', got {direction!r}"
            )
        metric = MetricResult(
            metric_id=f"{benchmark}.{name}",
            value=value,
            ci=self.ci(doc.get("ci"), prefix + "ci"),
            samples_used=self.count(doc, "samples_used", prefix),
            direction="higher" if direction == "higher" else "lower",
            unit=self.text(doc, "unit", prefix),
            meta=self.mapping(doc.get("meta", {}), prefix + "meta"),
        )
        threshold = (
            self.threshold(doc["threshold"], prefix + "threshold") if "threshold" in doc else None
        )
        return metric, threshold

    def ci(self, raw: Any, key: str) -> tuple[float, float] | None:
        if raw is None:
            return None
        if not isinstance(raw, list) or len(raw) != 2:
            raise self.fail(key, f"expected null or [low, high], got {raw!r}")
        return (self.number(raw[0], key + "[0]"), self.number(raw[1], key + "[1]"))

    def threshold(self, raw: Any, key: str) -> Threshold:
        if isinstance(raw, Mapping) and len(raw) == 1:
            ((kind, value),) = raw.items()
            if kind in ("rel", "abs"):
                number = self.number(value, f"{key}.{kind}")
                if number >= 0:
                    return Threshold(rel=number) if kind == "rel" else Threshold(abs=number)
        raise self.fail(key, f'expected {{"rel": 0.05}} or {{"abs": 0.02}}, got {raw!r}')

    def examples(self, raw: Any) -> dict[str, dict[str, float]]:
        doc = self.mapping(raw, "examples")
        examples: dict[str, dict[str, float]] = {}
        for example_id, scores_raw in doc.items():
            key = f"examples.{example_id}"
            scores = self.mapping(scores_raw, key)
            examples[example_id] = {
                name: self.number(value, f"{key}.{name}") for name, value in scores.items()
            }
        return examples

    # ---- primitives

    def required(self, doc: Mapping[str, Any], name: str, prefix: str) -> Any:
        if name not in doc:
            raise self.fail(prefix + name, "missing")
        return doc[name]

    def mapping(self, raw: Any, key: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.fail(key, f"expected a JSON object, got {_kind(raw)}")
        return raw

    def text(self, doc: Mapping[str, Any], name: str, prefix: str) -> str:
        value = self.required(doc, name, prefix)
        if not isinstance(value, str):
            raise self.fail(prefix + name, f"expected a string, got {_kind(value)}")
        return value

    def optional_text(self, doc: Mapping[str, Any], name: str, prefix: str) -> str | None:
        if doc.get(name) is None:
            return None
        return self.text(doc, name, prefix)

    def count(self, doc: Mapping[str, Any], name: str, prefix: str) -> int:
        value = self.required(doc, name, prefix)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.fail(prefix + name, f"expected a whole number >= 0, got {value!r}")
        return value

    def number(self, value: Any, key: str) -> float:
        if value is None:
            raise self.fail(key, "missing value (null)")
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self.fail(key, f"expected a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise self.fail(key, f"expected a finite number, got {value!r}")
        return float(value)


def _kind(value: Any) -> str:
    """How a JSON value reads in an error message."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), repr(value))


# --------------------------------------------------------------------------- files


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _safe_name(name: str) -> str:
    """A path component that cannot escape its folder or hide itself (``..``, ``/``, ``.x``)."""
    safe = _UNSAFE.sub("_", name)
    if not safe or safe.startswith("."):
        safe = "_" + safe
    return safe


def baseline_path(root: Path, target: str, suite: str, benchmark: str) -> Path:
    """``root/<target>/<suite>/<benchmark>.json``, each name made safe for any filesystem."""
    return root / _safe_name(target) / _safe_name(suite) / f"{_safe_name(benchmark)}.json"


def load(path: Path) -> Snapshot | None:
    """The snapshot at ``path``, or None when there is none yet."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BaselineError(path, "", f"cannot read the file: {exc.strerror or exc}") from None
    return Snapshot.from_json(parse_json(data, path), path)


def parse_json(data: bytes, path: Path, field: str = "") -> Any:
    """Parse JSON text; NaN and Infinity parse, so that the field check can name them."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise BaselineError(path, field, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise BaselineError(path, field, f"not valid JSON ({where}): {exc.msg}") from None


def save(path: Path, snapshot: Snapshot) -> None:
    """Write ``snapshot`` atomically: the old file stays whole until the new one is complete.

    The document is checked by reading it back first, so a snapshot that could not
    be loaded later (a NaN metric, say) is refused and the old baseline kept.
    """
    doc = snapshot.to_json()
    Snapshot.from_json(doc, path)
    try:
        text = json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n"
        atomic_write_text(path, text)
    except OSError as exc:
        raise BaselineError(path, "", f"cannot write the file: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------- the gate


def compare(baseline: Snapshot | None, current: Snapshot, default_threshold: Threshold) -> Verdict:
    """Hold ``current`` against ``baseline`` metric by metric.

    A metric's threshold is its own (``current.thresholds``), else ``default_threshold``.
    A move exactly at the threshold is not a regression. With a relative threshold and
    an old value of 0 there is no scale to take a fraction of, so any move against the
    metric's direction is a regression (use an absolute threshold for such metrics).
    A current value that is not a finite number cannot be held to anything and counts
    as a regression. A changed dataset (another fingerprint) is never compared.
    """

    def threshold(name: str) -> Threshold:
        return current.thresholds.get(name, default_threshold)

    if baseline is None:
        return _uncompared(current, threshold, "no baseline yet", comparable=True)
    if baseline.dataset.fingerprint != current.dataset.fingerprint:
        old, new = baseline.dataset, current.dataset
        note = (
            f"dataset changed: baseline {old.short()} (n={old.n}) ≠ "
            f"current {new.short()} (n={new.n}); not compared"
        )
        return _uncompared(current, threshold, note, comparable=False)
    rows = [
        _compare_metric(name, baseline.metrics.get(name), metric, threshold(name))
        for name, metric in current.metrics.items()
    ]
    rows = [replace(row, p_value=_paired_p(baseline, current, row)) for row in rows]
    rows += [
        _missing(name, metric, threshold(name))
        for name, metric in baseline.metrics.items()
        if name not in current.metrics
    ]
    return Verdict(
        benchmark=current.benchmark,
        comparable=True,
        note=None,
        metrics=tuple(rows),
        flipped=_flips(baseline, current),
    )


def _paired_p(baseline: Snapshot, current: Snapshot, row: MetricComparison) -> float | None:
    """How likely so lopsided a split of ups and downs is if nothing changed (sign test).

    A 5 % drop on 50 examples may be noise; the per-example scores both snapshots keep
    say whether it is: each example is its own control.
    """
    meta = row.current.meta if row.current else {}
    score = meta.get("of")
    if meta.get("agg") not in ("mean", "rate") or not isinstance(score, str):
        return None
    up = down = 0
    for example_id, new_scores in current.examples.items():
        old, new = baseline.examples.get(example_id, {}).get(score), new_scores.get(score)
        if old is None or new is None or old == new:
            continue
        up, down = (up + 1, down) if new > old else (up, down + 1)
    return sign_test(up, down) if up + down else None


def sign_test(up: int, down: int) -> float:
    """Two-sided exact binomial test of ``up`` against ``down`` at p = 1/2."""
    n, k = up + down, min(up, down)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return float(min(1.0, 2 * tail / 2**n))


def _uncompared(
    current: Snapshot, threshold: Callable[[str], Threshold], note: str, *, comparable: bool
) -> Verdict:
    rows = tuple(_new(name, metric, threshold(name)) for name, metric in current.metrics.items())
    return Verdict(current.benchmark, comparable, note, rows, ())


def _new(name: str, metric: MetricResult, threshold: Threshold) -> MetricComparison:
    return MetricComparison(
        name, metric.direction, metric.unit, metric, None, None, None, threshold, "new"
    )


def _missing(name: str, metric: MetricResult, threshold: Threshold) -> MetricComparison:
    return MetricComparison(
        name, metric.direction, metric.unit, None, metric.value, None, None, threshold, "missing"
    )


def _compare_metric(
    name: str, old_metric: MetricResult | None, metric: MetricResult, threshold: Threshold
) -> MetricComparison:
    if old_metric is None:
        return _new(name, metric, threshold)
    old, new = old_metric.value, metric.value
    finite = math.isfinite(new)
    return MetricComparison(
        name=name,
        direction=metric.direction,
        unit=metric.unit,
        current=metric,
        baseline=old,
        delta_rel=(new - old) / abs(old) if old != 0 and finite else None,
        delta_abs=new - old if finite else None,
        threshold=threshold,
        status=gate_status(old, new, metric.direction, threshold),
    )


def gate_status(old: float, new: float, direction: Direction, threshold: Threshold) -> MetricStatus:
    """``regression``, ``improvement`` or ``ok`` for one move from ``old`` to ``new``."""
    if not math.isfinite(new):
        return "regression"
    low, high = _band(old, threshold)
    worse, better = (new < low, new > high) if direction == "higher" else (new > high, new < low)
    if worse:
        return "regression"
    return "improvement" if better else "ok"


def _band(old: float, threshold: Threshold) -> tuple[float, float]:
    """The values ``new`` may take and still be ``ok``; the ends themselves are inside."""
    if threshold.abs is not None:
        return old - threshold.abs, old + threshold.abs
    t = threshold.rel if threshold.rel is not None else 0.0
    if old >= 0:
        return old * (1 - t), old * (1 + t)
    return old * (1 + t), old * (1 - t)


def _flips(baseline: Snapshot, current: Snapshot) -> tuple[Flip, ...]:
    scores = _scores_to_watch(current)
    flips = []
    for example_id, new_scores in current.examples.items():
        old_scores = baseline.examples.get(example_id)
        if old_scores is None:
            continue
        for score in sorted(set(new_scores) & set(old_scores)):
            if (scores is None or score in scores) and old_scores[score] > new_scores[score]:
                flips.append(Flip(example_id, score, old_scores[score], new_scores[score]))
    flips.sort(key=lambda flip: (natural_key(flip.example_id), flip.score))
    return tuple(flips)


def _scores_to_watch(current: Snapshot) -> set[str] | None:
    """The scores behind ``higher`` metrics; None (every score) when a metric does not say."""
    watched: set[str] = set()
    for metric in current.metrics.values():
        if metric.direction != "higher":
            continue
        of = metric.meta.get("of")
        if not isinstance(of, str):
            return None
        watched.add(of)
    return watched


def natural_key(text: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key putting "2" before "10" and "q2" before "q10"."""
    parts = re.split(r"(\d+)", text)
    key = [(1, int(part), part) if index % 2 else (0, 0, part) for index, part in enumerate(parts)]
    return (*key, (2, 0, text))
