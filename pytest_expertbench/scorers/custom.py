"""Scorers written by the user as a Python function: ``python: {function: module:attr}``.

For a rule too specific to deserve a registered scorer. The function is imported when
the benchmark file is read, so a typo in its name stops the run before any model is
asked. It is called with the model's :class:`Completion` and the :class:`Example`
(plus the ``kwargs`` mapping as keyword arguments) and returns a number, a bool or a
:class:`Score`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from pytest_expertbench.records import Completion, Example, Score, one_line
from pytest_expertbench.scorers import (
    OptionError,
    ScoreFunction,
    ScorerContext,
    ScoringError,
    scorer,
)


@scorer("python")
def python_function(options: Mapping[str, Any], context: ScorerContext) -> ScoreFunction:
    unknown = sorted(set(options) - {"function", "kwargs"})
    if unknown:
        raise OptionError(unknown[0], "unknown option (expected: function, kwargs)")
    function = _import(options.get("function"))
    kwargs = options.get("kwargs", {})
    if not isinstance(kwargs, Mapping):
        raise OptionError("kwargs", "expected a mapping of keyword arguments")

    def score(completion: Completion, example: Example) -> Score:
        return as_score(function(completion, example, **kwargs))

    return score


def _import(reference: Any) -> Callable[..., Any]:
    if not isinstance(reference, str) or reference.count(":") != 1:
        raise OptionError("function", "expected 'module:function', e.g. my_pkg.scoring:polite")
    module_name, attribute = reference.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise OptionError(
            "function", f"cannot import {module_name!r}: {exc} (is it on the pythonpath?)"
        ) from None
    function: Callable[..., Any] | None = getattr(module, attribute, None)
    if not callable(function):
        raise OptionError("function", f"{module_name!r} has no function {attribute!r}")
    return function


def as_score(value: Any) -> Score:
    """A user function's answer as a Score; the item fails on anything that is not one, with
    what the function returned (a NaN score is reported by the plugin, with its detail)."""
    if isinstance(value, Score):
        return value
    if isinstance(value, bool | int | float):
        return Score(float(value))
    shown = one_line(repr(value), 80)
    raise ScoringError(f"returned {type(value).__name__} {shown}, not a number or a Score")
