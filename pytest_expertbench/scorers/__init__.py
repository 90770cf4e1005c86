"""The scorer registry.

A scorer family is a module that registers factories with :func:`scorer`. A factory
takes the options written under the scorer's name in the benchmark YAML (and a
:class:`ScorerContext` with what the benchmark says beyond them) and returns the
scoring function; it raises :class:`OptionError` for a bad option, so that a
wrong benchmark file fails when it is loaded, before any model is asked.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pytest_expertbench.errors import ExpertBenchError
from pytest_expertbench.reader import Reader
from pytest_expertbench.records import Completion, Example, Request, Score

ScoreFunction = Callable[[Completion, Example], Score]


class Asker(Protocol):
    """Asks a named target of the targets file (for scorers such as ``judge``).

    Bound to the run's targets before benchmarks are read; the requests go through
    the same engine (retries, cache) as the model under test.
    """

    def names(self) -> set[str]: ...

    def reserve(self, target: str) -> None:
        """Say, while a scorer is built, that it will ask ``target``: the run then starts
        the target's managed server with the model under test's."""

    def ask(self, target: str, request: Request) -> Completion: ...


@dataclass(frozen=True)
class ScorerContext:
    """What a scorer may need from its benchmark besides its own options."""

    benchmark_path: Path
    tools: tuple[Mapping[str, Any], ...] = ()
    asker: Asker | None = None  # None outside a plugin run (plain config loading)
    # The dataset field of per-question tools (``tools: {field: …}``): the default of
    # the tool scorers' ``tools_field``.
    tools_field: str | None = None


ScorerFactory = Callable[[Mapping[str, Any], ScorerContext], ScoreFunction]

_BUILTIN_FAMILIES = (
    "match",
    "text",
    "math",
    "structured",
    "tools",
    "safety",
    "refusal",
    "judge",
    "refusal_judge",
    "custom",
)
_REGISTRY: dict[str, ScorerFactory] = {}  # the built-ins, filled by @scorer on import
_FILLS: dict[str, frozenset[str]] = {}
# This run's third-party scorers (hooks, entry points): looked up before the built-ins,
# whenever those are imported, and forgotten at the run's end (startup.py), so that a
# second run in the same process (pytester's) starts without them.
_ADDED: dict[str, ScorerFactory] = {}


class ScoringError(ExpertBenchError):
    """An example could not be scored (a malformed field, an unreachable judge).

    The item fails with this one-line message instead of a traceback: the cause is
    in the data or the judge, not in the scorer's code.
    """


class OptionError(ExpertBenchError, ValueError):
    """A scorer option is missing or of the wrong kind; ``key`` names it.

    It prints its message alone: the ConfigError that reports it names the file and
    the whole key (``scorers[0].judge.rubric``).
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key

    def __str__(self) -> str:
        return self.message


class OptionReader(Reader):
    """The typed :class:`~pytest_expertbench.reader.Reader` over a scorer's options, for
    built-in and third-party factories alike: its errors are :class:`OptionError` naming
    the option, to which the benchmark's loader adds the file and the scorer's place
    (``scorers[0].judge.rubric``)."""

    noun = "option"

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__(options, OptionError)


def scorer(name: str, *, fills: tuple[str, ...] = ()) -> Callable[[ScorerFactory], ScorerFactory]:
    """Register a scorer factory under the name used in benchmark YAML.

    ``fills`` names template fields the scorer provides itself (the judge's rubric
    sees ``{response}``), so they are not looked for among the dataset's columns.
    """

    def register(factory: ScorerFactory) -> ScorerFactory:
        _REGISTRY[name] = factory
        _FILLS[name] = frozenset(fills)
        return factory

    return register


def filled_fields(name: str) -> frozenset[str]:
    """The template fields scorer ``name`` fills itself."""
    if name in _ADDED:
        return frozenset()
    return _FILLS.get(name, frozenset())


def register_scorer(name: str, factory: ScorerFactory) -> None:
    """Add a scorer from outside the package (plugin hooks, entry points).

    It wins over a built-in of the same name, whichever is imported first, until
    :func:`forget_registered_scorers` (called at the end of the pytest run).
    """
    _ADDED[name] = factory


def forget_registered_scorers() -> None:
    """Drop the scorers :func:`register_scorer` added; the built-ins stay."""
    _ADDED.clear()


def get_scorer(name: str) -> ScorerFactory | None:
    if name in _ADDED:
        return _ADDED[name]
    _load_builtins()
    return _REGISTRY.get(name)


def scorer_names() -> list[str]:
    _load_builtins()
    return sorted({*_REGISTRY, *_ADDED})


def _load_builtins() -> None:
    for family in _BUILTIN_FAMILIES:
        importlib.import_module(f"{__name__}.{family}")
