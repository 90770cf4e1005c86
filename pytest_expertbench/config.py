"""The validated, frozen objects a run is made of, and :class:`ConfigError`.

The benchmark and targets files are read into these by ``benchmark_file.py`` and
``targets_file.py``; everything a run needs is checked there, before any model is
asked. A wrong file raises :class:`ConfigError`, whose message names the file, the key
and what was expected, so the user never reads a traceback to find a typo.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pytest_expertbench.errors import ExpertBenchError
from pytest_expertbench.records import Direction, Threshold, repeat_aggregation
from pytest_expertbench.scorers import ScoreFunction, filled_fields
from pytest_expertbench.template import fields_of

# The most requests concurrency auto keeps in flight, unless a target's max_concurrency says.
DEFAULT_MAX_CONCURRENCY = 256


class ConfigError(ExpertBenchError):
    """A benchmark or targets file that cannot be used; the message says where and why."""

    path: Path

    def __init__(self, path: Path | str, key: str, message: str) -> None:
        super().__init__(message, path=Path(path), key=key)


@dataclass(frozen=True)
class HubSource:
    path: str
    name: str | None = None
    split: str = "test"
    revision: str | None = None
    # One file of the hub repo (``hf: {path, file}``), read like a local file, instead
    # of a configuration's split.
    file: str | None = None

    def describe(self) -> str:
        if self.file is not None:
            return f"hf:{self.path}:{self.file}"
        return ":".join(["hf", self.path, self.name or "default", self.split])


@dataclass(frozen=True)
class JoinSpec:
    """``dataset.join``: fields of a second source's rows added to each row whose ``by``
    value they share (BFCL's questions and their possible_answer file, by ``id``).
    Exactly one of ``file`` and ``hub``; ``fields``: new name -> the second's column."""

    by: str
    fields: Mapping[str, str]
    file: Path | None = None
    hub: HubSource | None = None

    def describe(self) -> str:
        return self.hub.describe() if self.hub else f"file:{self.file.name if self.file else ''}"


@dataclass(frozen=True)
class DatasetSpec:
    """Where the rows come from; exactly one of ``file`` and ``hub`` is set."""

    file: Path | None = None
    hub: HubSource | None = None
    id_field: str | None = None
    renames: Mapping[str, str] = field(default_factory=dict)  # new name -> column
    # ``where:``: field -> the values a row may hold there; other rows are dropped
    # before sampling (a field written as a list keeps a row holding any of them).
    where: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    join: JoinSpec | None = None

    def describe(self) -> str:
        source = self.hub.describe() if self.hub else f"file:{self.file.name if self.file else ''}"
        if self.join is not None:
            source += f" join {self.join.describe()} by {self.join.by}"
        if self.where:  # two benchmarks of one file's halves show which half each is
            kept = " ".join(f"{k}={','.join(map(str, v))}" for k, v in self.where.items())
            source += f" where {kept}"
        return source


@dataclass(frozen=True)
class ToolsFromField:
    """``tools: {field: …}``: each example is sent the tools its row holds in ``field``
    (OpenAI tools, or BFCL functions converted as BFCL does; see row_tools.py)."""

    field: str


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
    # Per-question tools from a dataset field (``tools: {field: …}``); ``tools`` is then ().
    tools_from: ToolsFromField | None = None

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
        if self.tools_from is not None and field_name == self.tools_from.field:
            return "tools.field"
        return "prompt"

    def template_fields(self) -> set[str]:
        """Dataset fields the prompt and the scorer templates need."""
        needed = fields_of(self.prompt) | (fields_of(self.system) if self.system else set())
        for spec in self.scorers:
            for value in spec.options.values():
                if isinstance(value, str):
                    needed |= fields_of(value) - filled_fields(spec.kind)
        if self.tools_from is not None:
            needed.add(self.tools_from.field)
        return needed


@dataclass(frozen=True)
class ServerSpec:
    """A model server the plugin starts for the session and stops at its end."""

    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    health_url: str | None = None
    startup_timeout_s: float = 60.0


@dataclass(frozen=True)
class Price:
    """What a target's tokens cost, in US dollars per million tokens (``price:``)."""

    input_per_mtok: float
    output_per_mtok: float

    def cost_usd(self, prompt_tokens: float, completion_tokens: float) -> float:
        paid = prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
        return paid / 1e6


@dataclass(frozen=True)
class TargetSpec:
    """A named model under test; ``options`` holds the kind's own keys."""

    name: str
    kind: str
    options: Mapping[str, Any]
    source: Path
    concurrency: int | Literal["auto"] | None = None  # "auto": adaptive.py finds it
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
    price: Price | None = None  # gives the cost_usd score and the summary's cost
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY  # the ceiling of concurrency auto


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
