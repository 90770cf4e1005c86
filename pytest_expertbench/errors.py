"""The base of every error the plugin raises on purpose.

``except ExpertBenchError`` catches them all: a bad benchmark or targets file
(``ConfigError``), a baseline (``BaselineError``), the cache (``CacheError``), a
request (``TargetError``), a scorer (``ScoringError``, ``OptionError``, ``ScoreError``),
a managed server (``ServerError``), an example's row (``ExampleDataError``,
``TemplateError``), … Each keeps its own constructor; all carry ``path``, ``key`` and
``message`` and print as ``<path>: <key>: <message>``, the parts that are empty left out.
"""

from __future__ import annotations

from pathlib import Path


class ExpertBenchError(Exception):
    """An error with where it is (``path``, ``key``, either may be empty) and what it is."""

    path: Path | str | None
    key: str
    message: str

    def __init__(self, message: str = "", *, path: Path | str | None = None, key: str = "") -> None:
        self.path = path
        self.key = key
        self.message = message
        super().__init__(self._where() + message)

    def _where(self) -> str:
        parts = [str(self.path) if self.path not in (None, "") else "", self.key]
        return "".join(f"{part}: " for part in parts if part)

    def __str__(self) -> str:
        return self._where() + str(self.message)
