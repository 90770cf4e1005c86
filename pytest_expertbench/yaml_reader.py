"""Typed access to a YAML file's mappings, with errors that say where.

The benchmark and targets files are both read through :class:`YamlReader`: every key
is asked for with the type it must have, so a wrong value or a typo in a key becomes a
:class:`~pytest_expertbench.config.ConfigError` that names the file, the key and what
was expected, never a KeyError deep in a run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pytest_expertbench.config import ConfigError


def read_yaml(path: Path) -> Any:
    """The parsed document; an unreadable file or bad YAML is a ConfigError with the line
    and column, not a parser's traceback."""
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


MISSING = object()  # no default given: the key is required


def is_number(value: Any) -> bool:
    """A finite int or float; not a bool, which YAML's ``true`` would otherwise pass as 1."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class YamlReader:
    """Typed access to one mapping of a YAML document, with errors that say where."""

    def __init__(self, path: Path, doc: Any, prefix: str) -> None:
        self.path = path
        self.prefix = prefix
        if not isinstance(doc, Mapping):
            what = prefix or "the file"
            raise ConfigError(path, prefix, f"expected a mapping for {what}, got {kind_of(doc)}")
        self.doc: Mapping[str, Any] = doc

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix and name else (self.prefix or name)

    def has(self, name: str) -> bool:
        return name in self.doc

    def get(self, name: str, default: Any = MISSING) -> Any:
        if name in self.doc:
            return self.doc[name]
        if default is MISSING:
            raise ConfigError(self.path, self.key(name), "this key is required")
        return default

    def child(self, *path: str) -> YamlReader:
        """The mapping at ``path`` (each part one key: a name may hold dots, qwen2.5-7b)."""
        doc: Any = self.doc
        for part in path:
            doc = doc.get(part, MISSING) if isinstance(doc, Mapping) else MISSING
        name = ".".join(path)
        if doc is MISSING:
            raise ConfigError(self.path, self.key(name), "this key is required")
        return YamlReader(self.path, doc, self.key(name))

    def _typed(self, name: str, default: Any, ok: Any, expected: str) -> Any:
        value = self.get(name, default)
        if value is default and name not in self.doc:
            return value
        if not ok(value):
            raise ConfigError(
                self.path, self.key(name), f"expected {expected}, got {kind_of(value)} {value!r}"
            )
        return value

    def text(self, name: str, default: Any = MISSING) -> Any:
        return self._typed(name, default, lambda v: isinstance(v, str), "text")

    def whole(self, name: str, default: Any = MISSING) -> Any:
        return self._typed(
            name,
            default,
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
            "a whole number of 0 or more",
        )

    def number(self, name: str, default: Any = MISSING) -> Any:
        value = self._typed(
            name, default, lambda v: is_number(v) and v >= 0, "a number of 0 or more"
        )
        return float(value) if value is not None else None

    def mapping(self, name: str, default: Any = MISSING) -> Any:
        return self._typed(name, default, lambda v: isinstance(v, Mapping), "a mapping")

    def sequence(self, name: str, default: Any = MISSING) -> Any:
        return self._typed(name, default, lambda v: isinstance(v, list), "a list")

    def text_list(self, name: str, default: Any = MISSING) -> Any:
        return self._typed(
            name,
            default,
            lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
            "a list of text",
        )

    def mapping_list(self, name: str, default: Any = MISSING) -> Any:
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


def kind_of(value: Any) -> str:
    return {
        type(None): "nothing",
        bool: "true/false",
        int: "a number",
        float: "a number",
        str: "text",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)
