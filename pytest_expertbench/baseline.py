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
from pytest_expertbench.reader import MISSING, Reader, kind_of
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


MODES = ("threshold", "significant", "both")
_JSON_KINDS: dict[type, str] = {dict: "an object", list: "an array"}


def json_kind(value: Any) -> str:
    """A wrong JSON value as an error shows it: ``null``, ``an array [1, 2]``, ``text 'x'``."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"{_JSON_KINDS.get(type(value)) or kind_of(value)} {shown}"


class JsonObject(Reader):
    """The typed :class:`~pytest_expertbench.reader.Reader` over one JSON object; its
    entries are fields, and unknown ones are left alone (a later version may add some)."""

    noun = "field"

    def describe(self, value: Any) -> str:
        return json_kind(value)

    def object(self, name: str, default: Any = MISSING) -> Any:
        return self._typed(name, default, lambda v: isinstance(v, dict), "a JSON object")

    def maybe_text(self, name: str) -> str | None:
        """Text, or None where the field is null or absent (``git_sha`` outside git)."""
        return None if self.get(name, None) is None else str(self.text(name))


class FieldReader:
    """Reads parsed JSON through :class:`JsonObject`, so an error names the exact field.

    Baseline files and results.jsonl rows share it; ``where`` ("line 12") is put
    before every field name of a row's errors.
    """

    def __init__(self, path: Path, where: str = "") -> None:
        self.path = path
        self.where = where

    def fail(self, key: str, message: str) -> BaselineError:
        field = f"{self.where}: {key}" if self.where and key else self.where or key
        return BaselineError(self.path, field, message)

    def read(self, doc: Any, prefix: str = "") -> JsonObject:
        """A reader over ``doc``, which must be a JSON object; ``prefix`` is its place."""
        if not isinstance(doc, dict):
            raise self.fail(prefix, f"expected a JSON object, got {json_kind(doc)}")
        return JsonObject(doc, self.fail, prefix)

    def child(self, parent: JsonObject, name: str) -> JsonObject:
        return self.read(parent.object(name), parent.key(name))

    def snapshot(self, doc: Any) -> Snapshot:
        r = self.read(doc)
        schema = r.get("schema")
        if not isinstance(schema, int) or isinstance(schema, bool):
            raise r.error("schema", f"expected the integer {SCHEMA}, got {json_kind(schema)}")
        if schema != SCHEMA:
            hint = ": written by a newer pytest-expertbench?" if schema > SCHEMA else ""
            raise r.error("schema", f"unknown schema version {schema}{hint}")
        benchmark = r.text("benchmark")
        metrics_doc = self.child(r, "metrics")
        metrics: dict[str, MetricResult] = {}
        thresholds: dict[str, Threshold] = {}
        gates: dict[str, MetricGate] = {}
        for name in metrics_doc.doc:
            metric_doc = self.child(metrics_doc, name)
            metrics[name], threshold = self.metric(benchmark, name, metric_doc)
            if threshold is not None:
                thresholds[name] = threshold
            if (gate := self.gate(metric_doc)) != MetricGate():
                gates[name] = gate
        examples = self.child(r, "examples")
        return Snapshot(
            benchmark=benchmark,
            suite=r.text("suite"),
            target=r.text("target"),
            captured_at=r.text("captured_at"),
            git_sha=r.maybe_text("git_sha"),
            plugin_version=r.text("plugin_version"),
            dataset=self.dataset(self.child(r, "dataset")),
            environment=r.object("environment"),
            metrics=metrics,
            examples={i: self.scores(self.child(examples, i)) for i in examples.doc},
            thresholds=thresholds,
            gates=gates,
            context=r.object("context", {}),
        )

    def gate(self, r: JsonObject) -> MetricGate:
        """A metric's own ``gate`` and ``alpha``, where its file set them."""
        mode = None if r.get("gate", None) is None else r.choice("gate", MODES)
        alpha = r.number("alpha", None, signed=True)
        if alpha is not None and not 0 < alpha < 1:
            raise r.error("alpha", f"expected a number between 0 and 1, got {alpha!r}")
        return MetricGate(mode, alpha, r.boolean("across_setups", False))

    def dataset(self, r: JsonObject) -> DatasetInfo:
        return DatasetInfo(
            source=r.text("source"), fingerprint=r.text("fingerprint"), n=r.whole("n")
        )

    def metric(
        self, benchmark: str, name: str, r: JsonObject, *, value_may_be_null: bool = False
    ) -> tuple[MetricResult, Threshold | None]:
        """A metric and its own threshold; a null value reads as NaN only when allowed."""
        null_ok = r.get("value") is None and value_may_be_null
        metric = MetricResult(
            metric_id=f"{benchmark}.{name}",
            value=math.nan if null_ok else r.number("value", signed=True),
            ci=self.ci(r),
            samples_used=r.whole("samples_used"),
            direction=r.choice("direction", ("higher", "lower")),
            unit=r.text("unit"),
            meta=r.object("meta", {}),
        )
        return metric, self.threshold(r) if r.has("threshold") else None

    def ci(self, r: JsonObject) -> tuple[float, float] | None:
        raw = r.get("ci", None)
        if raw is None:
            return None
        if not isinstance(raw, list) or len(raw) != 2:
            raise r.error("ci", f"expected null or [low, high], got {json_kind(raw)}")
        ends = JsonObject({"ci[0]": raw[0], "ci[1]": raw[1]}, self.fail, r.prefix)
        return (ends.number("ci[0]", signed=True), ends.number("ci[1]", signed=True))

    def threshold(self, r: JsonObject) -> Threshold:
        """``{"rel": 0.05}`` or ``{"abs": 0.02}``, of 0 or more."""
        raw = r.get("threshold")
        kind = next(iter(raw)) if isinstance(raw, dict) and len(raw) == 1 else None
        if kind not in ("rel", "abs"):
            wanted = '{"rel": 0.05} or {"abs": 0.02}'
            raise r.error("threshold", f"expected {wanted}, got {json_kind(raw)}")
        number = self.read(raw, r.key("threshold")).number(kind)
        return Threshold(rel=number) if kind == "rel" else Threshold(abs=number)

    def scores(self, r: JsonObject, *, skip_null: bool = False) -> dict[str, float]:
        """An example's scores by name; null ones left out with ``skip_null`` (NaN in a row)."""
        names = [name for name, value in r.doc.items() if value is not None or not skip_null]
        return {name: r.number(name, signed=True) for name in names}


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
