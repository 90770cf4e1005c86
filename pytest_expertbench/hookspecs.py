"""Hooks through which other plugins add scorers and target kinds.

Implement them in a ``conftest.py`` (the rootdir's, the benchmark directory's or one
above it) or an installed plugin. Scorers can also come from the
``pytest_expertbench.scorers`` entry-point group (name → scorer factory) and target
kinds from ``pytest_expertbench.targets`` (kind → ``factory(spec) -> Target``), so
``pip install some-scorers`` is enough to use them in benchmark YAML or a targets file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from pytest_expertbench.config import TargetSpec
    from pytest_expertbench.scorers import ScorerFactory
    from pytest_expertbench.targets import Target

hookspec = pluggy.HookspecMarker("pytest")


@hookspec
def pytest_expertbench_register_scorers(register: Callable[[str, ScorerFactory], None]) -> None:
    """Register scorers by name before benchmark files are read.

    ``register(name, factory)``; the factory takes ``(options, context)`` and returns
    a function ``(completion, example) -> Score``.
    """


@hookspec(firstresult=True)
def pytest_expertbench_make_target(spec: TargetSpec) -> Target | None:
    """Build a target for ``spec`` (any ``kind``), or return None to leave it to others."""
