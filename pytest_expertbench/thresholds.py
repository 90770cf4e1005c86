"""The gate's numbers as a user writes them: a threshold and a significance level.

Read the same way from a benchmark file's metrics and from the command line, so that
``5%``, ``0.05`` and ``{rel: 0.05}`` mean one thing everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_expertbench.config import ConfigError
from pytest_expertbench.records import Threshold
from pytest_expertbench.yaml_reader import is_number


def parse_threshold(raw: Any, path: Path | str, key: str) -> Threshold:
    """``0.05``, ``"5%"``, ``{rel: 0.05}`` or ``{abs: 0.02}``.

    A relative threshold above 1 is refused: ``50`` meant as 50 % would silently be
    5000 %, and no metric may move by more than all of itself and still pass.
    """
    expected = "expected a fraction (0.05), a percentage ('5%'), {rel: 0.05} or {abs: 0.02}"
    if isinstance(raw, Mapping) and len(raw) == 1:
        ((kind, value),) = raw.items()
        if kind in ("rel", "abs") and is_number(value) and value >= 0 and math.isfinite(value):
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
    if is_number(raw) and raw >= 0 and math.isfinite(raw):
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
    if is_number(raw) and math.isfinite(raw) and 0 < raw < 1:
        return float(raw)
    raise ConfigError(path, key, f"expected a number between 0 and 1 (0.05), got {raw!r}")
