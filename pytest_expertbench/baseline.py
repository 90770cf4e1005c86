"""Baseline snapshots: the JSON schema, atomic load/save, and the gate's comparison.

A snapshot is what one run of one benchmark measured, kept with enough context
(dataset fingerprint, per-example scores) that a later run can tell a real
regression from a changed dataset, and can name the examples that flipped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pytest_expertbench.errors import ExpertBenchError
from pytest_expertbench.files import atomic_write_text
from pytest_expertbench.records import MetricResult, Threshold

SCHEMA = 1


class BaselineError(ExpertBenchError):
    """A snapshot that cannot be read or written; the message says which file and field."""

    path: Path

    def __init__(self, path: Path | str, field: str, message: str) -> None:
        super().__init__(message, path=Path(path), key=field)
        self.field = field


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
class MetricGate:
    """A metric's own gate settings from its benchmark file; None means the session's."""

    mode: Literal["threshold", "significant", "both"] | None = None
    alpha: float | None = None
    across_setups: bool = False  # a timing metric compared across concurrency and machines

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        if self.mode is not None:
            doc["gate"] = self.mode
        if self.alpha is not None:
            doc["alpha"] = self.alpha
        if self.across_setups:
            doc["across_setups"] = True
        return doc


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
    gates: Mapping[str, MetricGate] = field(default_factory=dict)
    # What gives the metrics their meaning (generation, scorers, concurrency, hardware…):
    # see comparability.py. Empty for snapshots written before it was recorded.
    context: Mapping[str, Any] = field(default_factory=dict)

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
            **({"context": dict(self.context)} if self.context else {}),
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
        if name in self.gates:
            doc.update(self.gates[name].to_json())
        if metric.meta:
            doc["meta"] = dict(metric.meta)
        return doc

    @classmethod
    def from_json(cls, doc: Any, path: Path) -> Snapshot:
        """Validate a parsed document; every problem is a :class:`BaselineError`."""
        return FieldReader(path).snapshot(doc)


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
        gates: dict[str, MetricGate] = {}
        for name, metric_doc in metrics_doc.items():
            metrics[name], threshold = self.metric(benchmark, name, metric_doc, f"metrics.{name}")
            if threshold is not None:
                thresholds[name] = threshold
            gate = self.gate(metric_doc, f"metrics.{name}.")
            if gate != MetricGate():
                gates[name] = gate
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
            gates=gates,
            context=self.mapping(doc.get("context", {}), "context"),
        )

    def gate(self, doc: Mapping[str, Any], prefix: str) -> MetricGate:
        """A metric's own ``gate`` and ``alpha``, where its file set them."""
        mode = doc.get("gate")
        if mode is not None and mode not in ("threshold", "significant", "both"):
            raise self.fail(
                prefix + "gate", f"expected threshold, significant or both, got {mode!r}"
            )
        alpha = None if doc.get("alpha") is None else self.number(doc["alpha"], prefix + "alpha")
        if alpha is not None and not 0 < alpha < 1:
            raise self.fail(prefix + "alpha", f"expected a number between 0 and 1, got {alpha!r}")
        across = doc.get("across_setups", False)
        if not isinstance(across, bool):
            raise self.fail(prefix + "across_setups", f"expected true or false, got {across!r}")
        return MetricGate(mode, alpha, across)

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


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]|^\.")
PREVIOUS_DIR = ".prev"  # beside each baseline: the one it replaced (names never start with .)


def safe_name(name: str) -> str:
    """A path component that cannot escape its folder or hide itself (``..``, ``/``, ``.x``).

    Percent-encoding, so that it is reversible and two names never share a file: ``a/b``
    is ``a%2Fb`` and ``a_b`` stays ``a_b``. Names of letters, digits, ``._-`` (every
    shipped one) are unchanged.
    """
    if not name:
        return "%"  # the empty name; no other name encodes to a lone %
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), name)


def baseline_path(root: Path, target: str, suite: str, benchmark: str) -> Path:
    """``root/<target>/<suite>/<benchmark>.json``, each name made safe for any filesystem."""
    return root / safe_name(target) / safe_name(suite) / f"{safe_name(benchmark)}.json"


def previous_path(path: Path) -> Path:
    """Where the baseline that ``path`` replaced is kept: ``<folder>/.prev/<name>.json``."""
    return path.parent / PREVIOUS_DIR / path.name


def restore(path: Path) -> Path:
    """Put the previous baseline back; the replaced one becomes the previous (so a second
    restore undoes the first). Returns the file restored from."""
    previous = previous_path(path)
    try:
        old = previous.read_bytes()
    except FileNotFoundError:
        raise BaselineError(path, "", f"no previous baseline to restore ({previous})") from None
    Snapshot.from_json(parse_json(old, previous), previous)  # restore only what loads
    current = path.read_bytes() if path.exists() else None
    atomic_write_text(path, old.decode("utf-8"))
    if current is None:
        previous.unlink()
    else:
        atomic_write_text(previous, current.decode("utf-8"))
    return previous


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
