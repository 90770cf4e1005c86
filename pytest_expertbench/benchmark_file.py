"""A benchmark file (YAML) → a validated :class:`~pytest_expertbench.config.Benchmark`.

Its dataset, suites, scorers (built through the scorer registry, so a wrong option
fails here), metrics and ``item_pass`` are all checked before any model is asked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from pytest_expertbench.config import (
    Benchmark,
    ConfigError,
    DatasetSpec,
    HubSource,
    ItemPass,
    JoinSpec,
    MetricSpec,
    ScorerSpec,
    ToolsFromField,
    check_repeats,
)
from pytest_expertbench.records import Completion, Direction, Example, Score, repeat_aggregation
from pytest_expertbench.row_tools import named_back
from pytest_expertbench.scorers import (
    Asker,
    OptionError,
    ScorerContext,
    get_scorer,
    scorer_names,
)
from pytest_expertbench.streaming import STREAM_SCORES
from pytest_expertbench.template import TemplateError
from pytest_expertbench.thresholds import parse_alpha, parse_threshold
from pytest_expertbench.yaml_reader import MISSING, YamlReader, read_yaml

AGGREGATIONS = ("mean", "rate", "count", "min", "max", "p50", "p90", "p95", "p99", "sum")
# Made of each example's repeats (any k from 1 up to the benchmark's repeats).
REPEAT_AGGREGATIONS = ("pass@k", "pass^k", "flaky")
# Recorded for every example; all but latency_ms only where the target reports usage
# (cost_usd: and the target has a price); the streaming.py ones for a streamed answer.
BUILTIN_SCORES = (
    "latency_ms",
    "tokens_per_s",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    *STREAM_SCORES,
)
ALL = None  # a suite size of "all"


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
    reader = YamlReader(path, doc, "")
    name = reader.text("name", default=path.stem)
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise ConfigError(path, "name", f"{name!r} must be letters, digits, '_', '-' or '.'")
    tools, tools_from = _tools(reader)
    context = ScorerContext(
        benchmark_path=path,
        tools=tools,
        asker=asker,
        tools_field=tools_from.field if tools_from else None,
    )
    scorers = _scorers(reader, context)
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
        tools_from=tools_from,
    )
    reader.reject_unknown(
        "name description dataset suites prompt system generation scorers metrics markers "
        "tools item_pass repeats"
    )
    if repeats is not None:
        check_repeats(bench)
    if tools_from is not None:  # the scorers see the names the dataset gives the tools
        bench = replace(bench, scorers=tuple(_named_back(spec, bench) for spec in scorers))
    try:
        bench.template_fields()
    except TemplateError as exc:
        raise ConfigError(path, "prompt", str(exc)) from None
    return bench


def _tools(reader: YamlReader) -> tuple[tuple[Mapping[str, Any], ...], ToolsFromField | None]:
    """``tools:`` as a list (the same tools for every example) or ``{field: …}`` (each
    example's own, from a dataset field)."""
    if not isinstance(reader.get("tools", None), Mapping):
        return tuple(reader.mapping_list("tools", default=[])), None
    sub = reader.child("tools")
    spec = ToolsFromField(field=sub.text("field"))
    sub.reject_unknown("field")
    return (), spec


def _named_back(spec: ScorerSpec, bench: Benchmark) -> ScorerSpec:
    function = spec.function

    def score(completion: Completion, example: Example) -> Score:
        return function(named_back(completion, bench, example), example)

    return replace(spec, function=score)


def _dataset(reader: YamlReader) -> DatasetSpec:
    file, hub = _source(reader)
    renames = reader.mapping("fields", default={})
    for new, old in renames.items():
        if not isinstance(old, str):
            raise ConfigError(reader.path, reader.key(f"fields.{new}"), "expected a column name")
    reader.reject_unknown("file hf id fields where join")
    return DatasetSpec(
        file=file,
        hub=hub,
        id_field=reader.text("id", default=None),
        renames=dict(renames),
        where=_where(reader),
        join=_join(reader.child("join"), hub) if reader.has("join") else None,
    )


def _source(
    reader: YamlReader, same_repo: HubSource | None = None
) -> tuple[Path | None, HubSource | None]:
    """``file:`` (relative to the YAML file) or ``hf: {path, name, split, revision, file}``;
    a join's ``hf`` defaults its path and revision to the dataset's hub repo."""
    has_file, has_hub = reader.has("file"), reader.has("hf")
    if has_file == has_hub:
        raise ConfigError(reader.path, reader.key(""), "expected exactly one of 'file' and 'hf'")
    if not has_hub:
        return (reader.path.parent / reader.text("file")).resolve(), None
    hf = reader.child("hf")
    default_path = same_repo.path if same_repo else MISSING
    hub = HubSource(
        path=hf.text("path", default=default_path),
        name=hf.text("name", default=None),
        split=hf.text("split", default="test"),
        revision=hf.text("revision", default=same_repo.revision if same_repo else None),
        file=hf.text("file", default=None),
    )
    hf.reject_unknown("path name split revision file")
    return None, hub


def _join(reader: YamlReader, same_repo: HubSource | None) -> JoinSpec:
    """``join: {file | hf, by, fields}``: ``fields`` (new name -> column) defaults to every
    column of the joined rows but ``by``. The key is not ``on``: YAML 1.1 reads it as true."""
    if any(not isinstance(key, str) for key in reader.doc):  # `on:` read as True
        raise ConfigError(
            reader.path,
            reader.key("by"),
            "write 'by:' for the shared column (YAML reads 'on' as true)",
        )
    file, hub = _source(reader, same_repo)
    fields = reader.mapping("fields", default={})
    for new, old in fields.items():
        if not isinstance(old, str):
            raise ConfigError(reader.path, reader.key(f"fields.{new}"), "expected a column name")
    spec = JoinSpec(by=reader.text("by"), fields=dict(fields), file=file, hub=hub)
    reader.reject_unknown("file hf by fields")
    return spec


def _where(reader: YamlReader) -> dict[str, tuple[Any, ...]]:
    """``where: {label: safe}`` or ``{type: [a, b]}``: the values each field may hold."""
    where: dict[str, tuple[Any, ...]] = {}
    for name, wanted in reader.mapping("where", default={}).items():
        values = tuple(wanted) if isinstance(wanted, list) else (wanted,)
        if not values or any(isinstance(v, Mapping | list) for v in values):
            raise ConfigError(
                reader.path,
                reader.key(f"where.{name}"),
                f"expected a value or a list of values, got {wanted!r}",
            )
        where[str(name)] = values
    return where


def _suites(reader: YamlReader) -> dict[str, int | None]:
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


def _scorers(reader: YamlReader, context: ScorerContext) -> tuple[ScorerSpec, ...]:
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


def _metrics(reader: YamlReader, scorers: tuple[ScorerSpec, ...]) -> tuple[MetricSpec, ...]:
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


def _item_pass(reader: YamlReader, scorers: tuple[ScorerSpec, ...]) -> ItemPass | None:
    if not reader.has("item_pass"):
        return None
    sub = reader.child("item_pass")
    score = sub.text("score")
    if score not in {s.name for s in scorers}:
        raise ConfigError(reader.path, sub.key("score"), f"unknown score {score!r}")
    minimum = sub.number("min", default=1.0)
    sub.reject_unknown("score min")
    return ItemPass(score=score, min=minimum)
