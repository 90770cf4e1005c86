"""Typed reading of a mapping of options, with one error that names the key.

A benchmark file, a targets file, each scorer's options and each target kind's
options are all read through :class:`Reader`: every key is asked for with the type
it must have, and keys nobody asked for are refused, so a typo or a wrong type stops
the run when the file is read, with ``<file>: <key>: expected …, got …``, never as a
KeyError deep in a run. Third-party scorers and targets use it too (a scorer gets
one through :class:`pytest_expertbench.scorers.OptionReader`). The JSON objects of
baseline files and results.jsonl rows are read through it as well
(:class:`pytest_expertbench.baseline.FieldReader`), minus the refusing of unknown
keys: a later version may add fields.

What a reader raises is up to whoever makes it (``fail``): a ConfigError naming the
file for files, an OptionError naming the option for a scorer, whose loader then
adds the file and the scorer's place in it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from pytest_expertbench.errors import ExpertBenchError
from pytest_expertbench.template import TemplateError, fields_of

__all__ = ["MISSING", "Fail", "Reader", "is_number", "kind_of"]

MISSING: Any = object()  # no default given: the key is required
Fail = Callable[[str, str], ExpertBenchError]  # (the key, with its prefix; message) → error


def is_number(value: Any) -> bool:
    """A finite int or float; not a bool, which YAML's ``true`` would otherwise pass as 1."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def kind_of(value: Any) -> str:
    """What a value is, in the words of a YAML file's author."""
    return {
        type(None): "nothing",
        bool: "true/false",
        int: "a number",
        float: "a number",
        str: "text",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


class Reader:
    """Typed access to one mapping; ``prefix`` is its place in the file (``targets.x``).

    Every getter takes a ``default``; without one the key is required. A key present
    with the wrong type is an error even where a default exists.
    """

    noun = "key"  # what its errors call an entry ("this key is required")

    def __init__(self, doc: Mapping[str, Any], fail: Fail, prefix: str = "") -> None:
        self.doc = doc
        self.prefix = prefix
        self._fail = fail
        self._read: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix and name else (self.prefix or name)

    def error(self, name: str, message: str) -> ExpertBenchError:
        return self._fail(self.key(name), message)

    def has(self, name: str) -> bool:
        return name in self.doc

    def get(self, name: str, default: Any = MISSING) -> Any:
        """The value of any type, for the caller to check."""
        self._read.add(name)
        if name in self.doc:
            return self.doc[name]
        if default is MISSING:
            raise self.error(name, f"this {self.noun} is required")
        return default

    value = get

    def text(self, name: str, default: Any = MISSING) -> Any:
        return self._typed(name, default, lambda v: isinstance(v, str), "text")

    def template(self, name: str, default: Any = MISSING) -> Any:
        """Text filled per example (``{field}``); its braces are checked now."""
        value = self.text(name, default)
        if isinstance(value, str):
            self._check_template(name, value)
        return value

    def boolean(self, name: str, default: Any = MISSING) -> Any:
        return self._typed(name, default, lambda v: isinstance(v, bool), "true or false")

    def whole(self, name: str, default: Any = MISSING) -> Any:
        return self._typed(
            name,
            default,
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
            "a whole number of 0 or more",
        )

    def number(
        self, name: str, default: Any = MISSING, *, positive: bool = False, signed: bool = False
    ) -> Any:
        """A number of 0 or more (above 0 with ``positive``, of any sign with ``signed``), as a
        float; never NaN or infinite. None stays None where None is the default."""
        if default is None and self.doc.get(name) is None:
            self._read.add(name)
            return None
        if signed:  # a float refused can only be NaN or infinite
            wanted = "a finite number" if isinstance(self.doc.get(name), float) else "a number"
        else:
            wanted = "a number above 0" if positive else "a number of 0 or more"
        value = self._typed(
            name,
            default,
            lambda v: is_number(v) and (signed or (v > 0 if positive else v >= 0)),
            wanted,
        )
        return float(value) if value is not None else None

    def choice(self, name: str, choices: tuple[str, ...], default: Any = MISSING) -> Any:
        value = self.get(name, default)
        if value not in choices:
            raise self.error(name, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def mapping(self, name: str, default: Any = MISSING) -> Any:
        return self._typed(name, default, lambda v: isinstance(v, Mapping), "a mapping")

    def sequence(self, name: str, default: Any = MISSING) -> Any:
        return self._typed(name, default, lambda v: isinstance(v, list), "a list")

    def text_list(self, name: str, default: Any = MISSING, *, non_empty: bool = False) -> Any:
        """A list of non-empty texts; ``non_empty``: with at least one."""
        value = self._typed(
            name,
            default,
            lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v),
            "a list of non-empty texts",
        )
        if non_empty and isinstance(value, list) and not value:
            raise self.error(name, "expected at least one entry")
        return value if not isinstance(value, list) else list(value)

    def template_list(self, name: str, *, non_empty: bool = False) -> list[str]:
        """A list of templates, each filled per example; their braces are checked now."""
        values: list[str] = self.text_list(name, non_empty=non_empty)
        for value in values:
            self._check_template(name, value)
        return values

    def mapping_list(self, name: str, default: Any = MISSING) -> Any:
        return self._typed(
            name,
            default,
            lambda v: isinstance(v, list) and all(isinstance(x, Mapping) for x in v),
            "a list of mappings",
        )

    def reject_unknown(self, allowed: str, noun: str = "") -> None:
        """Refuse any key not in ``allowed`` (space-separated)."""
        unknown = sorted(set(map(str, self.doc)) - set(allowed.split()))
        self._refuse(unknown, allowed.split(), noun or self.noun)

    def finish(self) -> None:
        """Refuse any key no getter asked for: a misspelt one is caught, not ignored."""
        self._refuse(sorted(set(map(str, self.doc)) - self._read), sorted(self._read), self.noun)

    def _refuse(self, unknown: list[str], known: list[str], noun: str) -> None:
        if unknown:
            listed = ", ".join(known) or "none"
            raise self.error(unknown[0], f"unknown {noun} (expected one of: {listed})")

    def describe(self, value: Any) -> str:
        """A wrong value as its error shows it (``text 'abc'``); a JSON reader says ``null``."""
        return f"{kind_of(value)} {value!r}"

    def _typed(self, name: str, default: Any, ok: Callable[[Any], bool], expected: str) -> Any:
        value = self.get(name, default)
        if name not in self.doc:
            return value
        if not ok(value):
            raise self.error(name, f"expected {expected}, got {self.describe(value)}")
        return value

    def _check_template(self, name: str, value: str) -> None:
        try:
            fields_of(value)
        except TemplateError as exc:
            raise self.error(name, str(exc)) from None
