"""Typed reading of one scorer's options, shared by the scorer families.

Every option is checked when the benchmark file is loaded, so a typo or a wrong
type stops the run before any model is asked; :meth:`OptionReader.finish` rejects
keys nobody read, which is how a misspelt option is caught instead of ignored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from pytest_expertbench.records import Example
from pytest_expertbench.scorers import OptionError, ScoringError
from pytest_expertbench.template import TemplateError, fields_of

_MISSING: Any = object()


class OptionReader:
    """Reads options by key and type; raises :class:`OptionError` naming the key."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self._options = options
        self._read: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self._options

    def _get(self, key: str, default: Any) -> Any:
        self._read.add(key)
        if key in self._options:
            return self._options[key]
        if default is _MISSING:
            raise OptionError(key, "this option is required")
        return default

    def value(self, key: str, default: Any = _MISSING) -> Any:
        """An option of any type, for the caller to check."""
        return self._get(key, default)

    def text(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if key in self._options and not isinstance(value, str):
            raise OptionError(key, f"expected text, got {value!r}")
        return value

    def template(self, key: str, default: Any = _MISSING) -> Any:
        """A text option filled per example; its braces are checked now."""
        value = self.text(key, default)
        if isinstance(value, str):
            try:
                fields_of(value)
            except TemplateError as exc:
                raise OptionError(key, str(exc)) from None
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, default)
        if not isinstance(value, bool):
            raise OptionError(key, f"expected true or false, got {value!r}")
        return value

    def number(self, key: str, default: Any = _MISSING, *, positive: bool = False) -> Any:
        value = self._get(key, default)
        if value is None and default is None:
            return None
        if not _is_number(value) or value < 0 or (positive and value == 0):
            wanted = "a number above 0" if positive else "a number of 0 or more"
            raise OptionError(key, f"expected {wanted}, got {value!r}")
        return float(value)

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self._get(key, default)
        if value not in choices:
            raise OptionError(key, f"expected one of {', '.join(choices)}, got {value!r}")
        return str(value)

    def text_list(self, key: str, default: Any = _MISSING, *, non_empty: bool = False) -> Any:
        value = self._get(key, default)
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise OptionError(key, f"expected a list of non-empty texts, got {value!r}")
        if non_empty and not value:
            raise OptionError(key, "expected at least one entry")
        return list(value)

    def template_list(self, key: str, *, non_empty: bool = False) -> list[str]:
        """A list of templates, each filled per example; their braces are checked now."""
        values: list[str] = self.text_list(key, non_empty=non_empty)
        for value in values:
            try:
                fields_of(value)
            except TemplateError as exc:
                raise OptionError(key, str(exc)) from None
        return values

    def finish(self) -> None:
        unknown = sorted(set(map(str, self._options)) - self._read)
        if unknown:
            known = ", ".join(sorted(self._read)) or "none"
            raise OptionError(unknown[0], f"unknown option (this scorer takes: {known})")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class FieldError(ScoringError, ValueError):
    """An example's structured field is missing or malformed: a dataset bug, not a score."""


def json_field(example: Example, name: str) -> Any:
    """The value of a structured field, given as JSON text or already parsed."""
    if name not in example.fields:
        raise FieldError(f"example {example.id}: no field {name!r}")
    value = example.fields[name]
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise FieldError(f"example {example.id}: field {name!r} is not JSON: {exc}") from None
    return value
