"""Benchmark and target YAML files → validated, frozen objects.

Everything a run needs is checked here, before any model is asked: a wrong file
raises :class:`ConfigError`, whose message names the file, the key and what was
expected, so the user never reads a traceback to find a typo.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from pytest_expertbench.records import Direction, Threshold, repeat_aggregation
from pytest_expertbench.scorers import (
    Asker,
    OptionError,
    ScoreFunction,
    ScorerContext,
    filled_fields,
    get_scorer,
    scorer_names,
)
from pytest_expertbench.template import TemplateError, fields_of

AGGREGATIONS = ("mean", "rate", "count", "min", "max", "p50", "p90", "p95", "p99", "sum")
# Made of each example's repeats (any k from 1 up to the benchmark's repeats).
REPEAT_AGGREGATIONS = ("pass@k", "pass^k", "flaky")
BUILTIN_SCORES = ("latency_ms", "tokens_per_s")
ALL = None  # a suite size of "all"


class ConfigError(Exception):
    """A benchmark or targets file that cannot be used; the message says where and why."""

    def __init__(self, path: Path | str, key: str, message: str) -> None:
        self.path = Path(path)
        self.key = key
        self.message = message
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + message)


@dataclass(frozen=True)
class HubSource:
    path: str
    name: str | None = None
    split: str = "test"
    revision: str | None = None

    def describe(self) -> str:
        return ":".join(["hf", self.path, self.name or "default", self.split])


@dataclass(frozen=True)
class DatasetSpec:
    """Where the rows come from; exactly one of ``file`` and ``hub`` is set."""

    file: Path | None = None
    hub: HubSource | None = None
    id_field: str | None = None
    renames: Mapping[str, str] = field(default_factory=dict)  # new name -> column

    def describe(self) -> str:
        if self.hub is not None:
            return self.hub.describe()
        return f"file:{self.file.name if self.file else ''}"


@dataclass(frozen=True)
class ScorerSpec:
    """One scorer use; ``name`` is the score's key (its ``as:``, else the kind)."""

    kind: str
    name: str
    options: Mapping[str, Any]
    function: ScoreFunction = field(compare=False, repr=False)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    of: str
    agg: str
    direction: Direction
    unit: str = ""
    threshold: Threshold | None = None
    gate: Literal["threshold", "significant", "both"] | None = None  # None: the session's
    alpha: float | None = None
    across_setups: bool = False  # a timing metric compared across concurrency and machines

    @property
    def key(self) -> str:
        """The per-example value this metric aggregates: the score ``of`` names, or for an
        aggregation of repeats (pass@k, pass^k, flaky) the example's own value of it,
        kept with the example's scores as ``<of>:<agg>`` (so the gate pairs it)."""
        return self.of if repeat_aggregation(self.agg) is None else f"{self.of}:{self.agg}"


@dataclass(frozen=True)
class ItemPass:
    """Turns a score into a per-item assertion: the item fails below ``min``."""

    score: str
    min: float


@dataclass(frozen=True)
class Benchmark:
    name: str
    path: Path
    description: str
    dataset: DatasetSpec
    suites: Mapping[str, int | None]  # suite -> sample size (None: every example)
    prompt: str
    system: str | None
    generation: Mapping[str, Any]
    scorers: tuple[ScorerSpec, ...]
    metrics: tuple[MetricSpec, ...]
    markers: tuple[str, ...] = ()
    tools: tuple[Mapping[str, Any], ...] = ()
    item_pass: ItemPass | None = None
    # How many times each example is asked: the file's ``repeats``, or None when it does
    # not say (the run's --expert-bench-repeats then decides; see with_repeats).
    repeats: int | None = None

    @property
    def times(self) -> int:
        """How many times each example is asked (1 unless ``repeats`` says more)."""
        return self.repeats or 1

    def field_user(self, field_name: str) -> str:
        """The key whose template uses ``field_name``, for error messages."""
        for key, template in (("prompt", self.prompt), ("system", self.system or "")):
            if field_name in fields_of(template):
                return key
        for i, spec in enumerate(self.scorers):
            for option, value in spec.options.items():
                if isinstance(value, str) and field_name in fields_of(value):
                    return f"scorers[{i}].{spec.kind}.{option}"
        return "prompt"

    def template_fields(self) -> set[str]:
        """Dataset fields the prompt and the scorer templates need."""
        needed = fields_of(self.prompt) | (fields_of(self.system) if self.system else set())
        for spec in self.scorers:
            for value in spec.options.values():
                if isinstance(value, str):
                    needed |= fields_of(value) - filled_fields(spec.kind)
        return needed


@dataclass(frozen=True)
class ServerSpec:
    """A model server the plugin starts for the session and stops at its end."""

    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    health_url: str | None = None
    startup_timeout_s: float = 60.0


@dataclass(frozen=True)
class TargetSpec:
    """A named model under test; ``options`` holds the kind's own keys."""

    name: str
    kind: str
    options: Mapping[str, Any]
    source: Path
    concurrency: int | None = None
    timeout_s: float = 120.0
    max_retries: int = 4
    requests_per_minute: float | None = None
    server: ServerSpec | None = None
    # An immutable identity the user pins (a checkpoint hash): it joins the cache key,
    # and answers stored for it are served across runs (see cache.py).
    revision: str | None = None
    # ``options`` as the targets file wrote them, when run-local values (a managed
    # server's ``{port}``) were filled in: the cache key is made from these.
    written_options: Mapping[str, Any] | None = None
    max_retry_after_s: float = 60.0  # a longer Retry-After fails the request at once


@dataclass(frozen=True)
class TargetsFile:
    path: Path
    default: str | None
    targets: Mapping[str, TargetSpec]

    def get(self, name: str | None) -> TargetSpec:
        chosen = name or self.default
        if chosen is None:
            raise ConfigError(self.path, "default", "no target chosen and no default: set one")
        if chosen not in self.targets:
            known = ", ".join(sorted(self.targets)) or "none"
            raise ConfigError(self.path, "targets", f"unknown target {chosen!r} (known: {known})")
        return self.targets[chosen]


# --------------------------------------------------------------------------- loading


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read the file: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, "", f"not valid YAML: {where}{problem}") from None


def load_benchmarks(directory: Path, asker: Asker | None = None) -> list[Benchmark]:
    """Every benchmark file in ``directory``, sorted by file name."""
    if not directory.is_dir():
        raise ConfigError(directory, "", "the benchmark directory does not exist")
    benchmarks = []
    names: dict[str, Path] = {}
    for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
        if path.stem == "targets":
            continue
        bench = load_benchmark(path, asker)
        if bench.name in names:
            raise ConfigError(
                path, "name", f"{bench.name!r} is already used by {names[bench.name]}"
            )
        names[bench.name] = path
        benchmarks.append(bench)
    return benchmarks


def load_benchmark(path: Path, asker: Asker | None = None) -> Benchmark:
    doc = read_yaml(path)
    reader = _Reader(path, doc, "")
    name = reader.text("name", default=path.stem)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise ConfigError(path, "name", f"{name!r} must be letters, digits, '_', '-' or '.'")
    tools = tuple(reader.mapping_list("tools", default=[]))
    scorers = _scorers(reader, ScorerContext(benchmark_path=path, tools=tools, asker=asker))
    generation = reader.mapping("generation", default={})
    repeats = reader.whole("repeats", default=None)
    if repeats is not None and repeats < 1:
        raise ConfigError(path, "repeats", f"expected a whole number of 1 or more, got {repeats}")
    bench = Benchmark(
        name=name,
        path=path,
        description=reader.text("description", default=""),
        dataset=_dataset(reader.child("dataset")),
        suites=_suites(reader),
        prompt=reader.text("prompt"),
        system=reader.text("system", default=None),
        generation=dict(generation),
        scorers=scorers,
        metrics=_metrics(reader, scorers),
        markers=tuple(reader.text_list("markers", default=[])),
        tools=tools,
        item_pass=_item_pass(reader, scorers),
        repeats=repeats,
    )
    reader.reject_unknown(
        "name description dataset suites prompt system generation scorers metrics markers "
        "tools item_pass repeats"
    )
    if repeats is not None:
        check_repeats(bench)
    try:
        bench.template_fields()
    except TemplateError as exc:
        raise ConfigError(path, "prompt", str(exc)) from None
    return bench


def _dataset(reader: _Reader) -> DatasetSpec:
    has_file, has_hub = reader.has("file"), reader.has("hf")
    if has_file == has_hub:
        raise ConfigError(reader.path, reader.key(""), "expected exactly one of 'file' and 'hf'")
    hub = None
    file = None
    if has_hub:
        hf = reader.child("hf")
        hub = HubSource(
            path=hf.text("path"),
            name=hf.text("name", default=None),
            split=hf.text("split", default="test"),
            revision=hf.text("revision", default=None),
        )
        hf.reject_unknown("path name split revision")
    else:
        file = (reader.path.parent / reader.text("file")).resolve()
    renames = reader.mapping("fields", default={})
    for new, old in renames.items():
        if not isinstance(old, str):
            raise ConfigError(reader.path, reader.key(f"fields.{new}"), "expected a column name")
    reader.reject_unknown("file hf id fields")
    return DatasetSpec(
        file=file, hub=hub, id_field=reader.text("id", default=None), renames=dict(renames)
    )


def _suites(reader: _Reader) -> dict[str, int | None]:
    raw = reader.mapping("suites")
    suites: dict[str, int | None] = {}
    for suite, size in raw.items():
        if size == "all" or size is None:
            suites[str(suite)] = ALL
        elif isinstance(size, int) and not isinstance(size, bool) and size > 0:
            suites[str(suite)] = size
        else:
            raise ConfigError(
                reader.path,
                f"suites.{suite}",
                f"expected a positive whole number or 'all', got {size!r}",
            )
    if not suites:
        raise ConfigError(reader.path, "suites", "expected at least one suite")
    return suites


def _scorers(reader: _Reader, context: ScorerContext) -> tuple[ScorerSpec, ...]:
    entries = reader.sequence("scorers")
    specs: list[ScorerSpec] = []
    for i, entry in enumerate(entries):
        key = f"scorers[{i}]"
        if isinstance(entry, str):
            entry = {entry: {}}
        if not isinstance(entry, Mapping) or len(entry) != 1:
            raise ConfigError(reader.path, key, "expected one scorer name with its options")
        kind, options = next(iter(entry.items()))
        options = dict(options or {})
        factory = get_scorer(str(kind))
        if factory is None:
            known = ", ".join(scorer_names())
            raise ConfigError(reader.path, key, f"unknown scorer {kind!r} (known: {known})")
        name = str(options.pop("as", kind))
        try:
            function = factory(options, context)
        except OptionError as exc:
            raise ConfigError(reader.path, f"{key}.{kind}.{exc.key}", exc.message) from None
        specs.append(ScorerSpec(kind=str(kind), name=name, options=options, function=function))
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        if spec.name in seen or spec.name in BUILTIN_SCORES:
            raise ConfigError(
                reader.path, f"scorers[{i}]", f"the score name {spec.name!r} is taken: add 'as:'"
            )
        seen.add(spec.name)
    return tuple(specs)


def _metrics(reader: _Reader, scorers: tuple[ScorerSpec, ...]) -> tuple[MetricSpec, ...]:
    raw = reader.mapping("metrics")
    known_scores = {s.name for s in scorers} | set(BUILTIN_SCORES)
    metrics = []
    for name in raw:
        sub = reader.child("metrics", str(name))
        of = sub.text("of")
        if of not in known_scores:
            raise ConfigError(
                reader.path,
                sub.key("of"),
                f"unknown score {of!r} (scores here: {', '.join(sorted(known_scores))})",
            )
        agg = sub.text("agg", default="mean")
        if agg not in AGGREGATIONS and repeat_aggregation(agg) is None:
            raise ConfigError(
                reader.path,
                sub.key("agg"),
                f"expected one of {', '.join(AGGREGATIONS + REPEAT_AGGREGATIONS)} "
                f"(k a whole number of 1 or more), got {agg!r}",
            )
        direction = sub.text("direction", default=None)
        if direction not in ("higher", "lower"):
            raise ConfigError(
                reader.path,
                sub.key("direction"),
                "expected 'higher' or 'lower' (which way is better must be said)",
            )
        threshold = (
            parse_threshold(sub.get("threshold"), reader.path, sub.key("threshold"))
            if sub.has("threshold")
            else None
        )
        gate = sub.text("gate", default=None)
        if gate not in (None, "threshold", "significant", "both"):
            raise ConfigError(
                reader.path,
                sub.key("gate"),
                f"expected threshold, significant or both, got {gate!r}",
            )
        alpha = (
            parse_alpha(sub.get("alpha"), reader.path, sub.key("alpha"))
            if sub.has("alpha")
            else None
        )
        across = sub.get("across_setups", False)
        if not isinstance(across, bool):
            raise ConfigError(reader.path, sub.key("across_setups"), "expected true or false")
        sub.reject_unknown("of agg direction unit threshold gate alpha across_setups")
        metrics.append(
            MetricSpec(
                name=str(name),
                of=of,
                agg=agg,
                direction=cast(Direction, direction),
                unit=sub.text("unit", default=""),
                threshold=threshold,
                gate=gate,
                alpha=alpha,
                across_setups=across,
            )
        )
    return tuple(metrics)


def check_repeats(bench: Benchmark, said: str = "repeats") -> None:
    """Refuse what ``bench.times`` repeats cannot give: a pass@k or pass^k with k above
    them, and a generation ``seed`` that is not a whole number when seeds are counted up."""
    for spec in bench.metrics:
        found = repeat_aggregation(spec.agg)
        if found is not None and found[1] > bench.times:
            raise ConfigError(
                bench.path,
                f"metrics.{spec.name}.agg",
                f"{spec.agg} needs {found[1]} answers per example, but each example is asked "
                f"{bench.times} time(s) ({said}): set repeats: {found[1]} or more",
            )
    seed = bench.generation.get("seed")
    if bench.times > 1 and seed is not None and (not isinstance(seed, int) or seed is True):
        raise ConfigError(
            bench.path,
            "generation.seed",
            f"expected a whole number (repeat r is asked with seed + r), got {seed!r}",
        )


def with_repeats(bench: Benchmark, default: int) -> Benchmark:
    """``bench`` with its repeats decided: its own ``repeats`` (the file's wins), else the
    run's ``default``; raises ConfigError when a metric needs more than that."""
    if bench.repeats is not None:
        return bench
    decided = replace(bench, repeats=default)
    check_repeats(decided, "--expert-bench-repeats")
    return decided


def _item_pass(reader: _Reader, scorers: tuple[ScorerSpec, ...]) -> ItemPass | None:
    if not reader.has("item_pass"):
        return None
    sub = reader.child("item_pass")
    score = sub.text("score")
    if score not in {s.name for s in scorers}:
        raise ConfigError(reader.path, sub.key("score"), f"unknown score {score!r}")
    minimum = sub.number("min", default=1.0)
    sub.reject_unknown("score min")
    return ItemPass(score=score, min=minimum)


def parse_threshold(raw: Any, path: Path | str, key: str) -> Threshold:
    """``0.05``, ``"5%"``, ``{rel: 0.05}`` or ``{abs: 0.02}``.

    A relative threshold above 1 is refused: ``50`` meant as 50 % would silently be
    5000 %, and no metric may move by more than all of itself and still pass.
    """
    expected = "expected a fraction (0.05), a percentage ('5%'), {rel: 0.05} or {abs: 0.02}"
    if isinstance(raw, Mapping) and len(raw) == 1:
        ((kind, value),) = raw.items()
        if kind in ("rel", "abs") and _is_number(value) and value >= 0 and math.isfinite(value):
            if kind == "abs":
                return Threshold(abs=float(value))
            return Threshold(rel=_fraction(float(value), path, key, f"{value!r}"))
        raise ConfigError(path, key, expected)
    if isinstance(raw, str) and raw.strip().endswith("%"):
        try:
            value = float(raw.strip()[:-1]) / 100
        except ValueError:
            raise ConfigError(path, key, expected) from None
        if value >= 0 and math.isfinite(value):
            return Threshold(rel=_fraction(value, path, key, repr(raw), hint=False))
    if _is_number(raw) and raw >= 0 and math.isfinite(raw):
        return Threshold(rel=_fraction(float(raw), path, key, f"{raw!r}"))
    raise ConfigError(path, key, expected)


def _fraction(value: float, path: Path | str, key: str, shown: str, *, hint: bool = True) -> float:
    if value > 1:
        hint_text = f" (write '{value:g}%' for {value:g} %)" if hint and value <= 100 else ""
        raise ConfigError(
            path, key, f"a relative threshold is at most 1 (100 %), got {shown}{hint_text}"
        )
    return value


def parse_alpha(raw: Any, path: Path | str, key: str) -> float:
    """The gate's significance level: a number strictly between 0 and 1."""
    if _is_number(raw) and math.isfinite(raw) and 0 < raw < 1:
        return float(raw)
    raise ConfigError(path, key, f"expected a number between 0 and 1 (0.05), got {raw!r}")


def load_targets(path: Path) -> TargetsFile:
    if not path.is_file():
        raise ConfigError(path, "", "the targets file does not exist")
    doc = read_yaml(path)
    reader = _Reader(path, doc, "")
    targets: dict[str, TargetSpec] = {}
    for name in reader.mapping("targets"):
        targets[str(name)] = _target(reader.child("targets", str(name)), str(name))
    default = reader.text("default", default=None)
    reader.reject_unknown("default targets")
    if default is not None and default not in targets:
        raise ConfigError(path, "default", f"{default!r} is not one of the targets")
    return TargetsFile(path=path, default=default, targets=targets)


def _target(reader: _Reader, name: str) -> TargetSpec:
    kind = reader.text("kind")
    common = "kind concurrency timeout_s max_retries max_retry_after_s requests_per_minute server"
    common += " revision"
    options = {k: v for k, v in reader.doc.items() if k not in common.split()}
    for key in ("path",):
        if isinstance(options.get(key), str):
            options[key] = str((reader.path.parent / options[key]).resolve())
    concurrency = reader.whole("concurrency", default=None)
    return TargetSpec(
        name=name,
        kind=kind,
        options=options,
        source=reader.path,
        concurrency=concurrency,
        timeout_s=reader.number("timeout_s", default=120.0),
        max_retries=reader.whole("max_retries", default=4) or 0,
        requests_per_minute=reader.number("requests_per_minute", default=None),
        server=_server(reader.child("server")) if reader.has("server") else None,
        revision=reader.text("revision", default=None),
        max_retry_after_s=reader.number("max_retry_after_s", default=60.0),
    )


def _server(reader: _Reader) -> ServerSpec:
    command = reader.text_list("command")
    if not command:
        raise ConfigError(reader.path, reader.key("command"), "expected a non-empty list")
    env = reader.mapping("env", default={})
    reader.reject_unknown("command env health_url startup_timeout_s")
    return ServerSpec(
        command=tuple(command),
        env={str(k): str(v) for k, v in env.items()},
        health_url=reader.text("health_url", default=None),
        startup_timeout_s=reader.number("startup_timeout_s", default=60.0),
    )


# --------------------------------------------------------------------------- reading


_MISSING = object()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class _Reader:
    """Typed access to one mapping of a YAML document, with errors that say where."""

    def __init__(self, path: Path, doc: Any, prefix: str) -> None:
        self.path = path
        self.prefix = prefix
        if not isinstance(doc, Mapping):
            what = prefix or "the file"
            raise ConfigError(path, prefix, f"expected a mapping for {what}, got {_kind(doc)}")
        self.doc: Mapping[str, Any] = doc

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix and name else (self.prefix or name)

    def has(self, name: str) -> bool:
        return name in self.doc

    def get(self, name: str, default: Any = _MISSING) -> Any:
        if name in self.doc:
            return self.doc[name]
        if default is _MISSING:
            raise ConfigError(self.path, self.key(name), "this key is required")
        return default

    def child(self, *path: str) -> _Reader:
        """The mapping at ``path`` (each part one key: a name may hold dots, qwen2.5-7b)."""
        doc: Any = self.doc
        for part in path:
            doc = doc.get(part, _MISSING) if isinstance(doc, Mapping) else _MISSING
        name = ".".join(path)
        if doc is _MISSING:
            raise ConfigError(self.path, self.key(name), "this key is required")
        return _Reader(self.path, doc, self.key(name))

    def _typed(self, name: str, default: Any, ok: Any, expected: str) -> Any:
        value = self.get(name, default)
        if value is default and name not in self.doc:
            return value
        if not ok(value):
            raise ConfigError(
                self.path, self.key(name), f"expected {expected}, got {_kind(value)} {value!r}"
            )
        return value

    def text(self, name: str, default: Any = _MISSING) -> Any:
        return self._typed(name, default, lambda v: isinstance(v, str), "text")

    def whole(self, name: str, default: Any = _MISSING) -> Any:
        return self._typed(
            name,
            default,
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
            "a whole number of 0 or more",
        )

    def number(self, name: str, default: Any = _MISSING) -> Any:
        value = self._typed(
            name, default, lambda v: _is_number(v) and v >= 0, "a number of 0 or more"
        )
        return float(value) if value is not None else None

    def mapping(self, name: str, default: Any = _MISSING) -> Any:
        return self._typed(name, default, lambda v: isinstance(v, Mapping), "a mapping")

    def sequence(self, name: str, default: Any = _MISSING) -> Any:
        return self._typed(name, default, lambda v: isinstance(v, list), "a list")

    def text_list(self, name: str, default: Any = _MISSING) -> Any:
        return self._typed(
            name,
            default,
            lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
            "a list of text",
        )

    def mapping_list(self, name: str, default: Any = _MISSING) -> Any:
        return self._typed(
            name,
            default,
            lambda v: isinstance(v, list) and all(isinstance(x, Mapping) for x in v),
            "a list of mappings",
        )

    def reject_unknown(self, allowed: str) -> None:
        unknown = sorted(set(map(str, self.doc)) - set(allowed.split()))
        if unknown:
            raise ConfigError(
                self.path,
                self.key(unknown[0]),
                f"unknown key (expected one of: {', '.join(allowed.split())})",
            )


def _kind(value: Any) -> str:
    return {
        type(None): "nothing",
        bool: "true/false",
        int: "a number",
        float: "a number",
        str: "text",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)
