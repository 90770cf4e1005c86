"""Typed access to a YAML file's mappings, with errors that say where.

The benchmark and targets files are both read through :class:`YamlReader`: every key
is asked for with the type it must have, so a wrong value or a typo in a key becomes a
:class:`~pytest_expertbench.config.ConfigError` that names the file, the key and what
was expected, never a KeyError deep in a run.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pytest_expertbench.config import ConfigError
from pytest_expertbench.reader import MISSING, Reader, is_number, kind_of

__all__ = ["MISSING", "YamlReader", "is_number", "kind_of", "read_yaml"]


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


class YamlReader(Reader):
    """The one typed :class:`~pytest_expertbench.reader.Reader` over a mapping of a YAML
    document, with ConfigErrors that name the file and the key's place in it."""

    def __init__(self, path: Path, doc: Any, prefix: str) -> None:
        if not isinstance(doc, Mapping):
            what = prefix or "the file"
            raise ConfigError(path, prefix, f"expected a mapping for {what}, got {kind_of(doc)}")
        super().__init__(doc, functools.partial(ConfigError, path), prefix)
        self.path = path

    def child(self, *path: str) -> YamlReader:
        """The mapping at ``path`` (each part one key: a name may hold dots, qwen2.5-7b)."""
        doc: Any = self.doc
        for part in path:
            doc = doc.get(part, MISSING) if isinstance(doc, Mapping) else MISSING
        name = ".".join(path)
        if doc is MISSING:
            raise ConfigError(self.path, self.key(name), "this key is required")
        return YamlReader(self.path, doc, self.key(name))
